//! Tests of the client against a scripted server on a socket pair.

use super::*;
use crate::dhcp::wire::tests::{SERVER_MAC, encode_msg, full_ack};
use dhcproto::v4::{DhcpOption, Message, Opcode};
use dhcproto::{Decodable, Decoder};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::task::JoinHandle;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// One frame the fake server saw.
#[derive(Clone, Debug)]
struct Seen {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    msg: Message,
}

#[derive(Default)]
struct Behaviour {
    /// NAK this many REQUESTs first.
    naks: AtomicUsize,
    /// Answer nothing at all.
    silent: bool,
    /// Unicast replies to chaddr instead of broadcasting.
    unicast: bool,
    /// DHCPDECLINEs seen: each moves the offered addresses up by 50.
    declines: AtomicUsize,
}

fn offered_address(mac: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 100 + mac[5] % 50)
}

fn reply_frame(to: &Message, msg_type: MessageType, unicast: bool, shift: usize) -> Vec<u8> {
    let mut m = full_ack(to.xid());
    m.set_chaddr(to.chaddr());
    let yiaddr = if msg_type == MessageType::Nak {
        Ipv4Addr::UNSPECIFIED
    } else if !to.ciaddr().is_unspecified() {
        to.ciaddr()
    } else {
        let base = offered_address(to.chaddr());
        Ipv4Addr::from(u32::from(base) + 50 * shift as u32)
    };
    m.set_yiaddr(yiaddr);
    m.opts_mut().insert(DhcpOption::MessageType(msg_type));
    let payload = encode_msg(&m);
    let (dst_mac, dst_ip) = if unicast {
        (to.chaddr()[..6].try_into().unwrap(), yiaddr)
    } else {
        (BROADCAST_MAC, Ipv4Addr::BROADCAST)
    };
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(SERVER_MAC, dst_mac)
        .ipv4(SERVER_IP.octets(), dst_ip.octets(), 64)
        .udp(67, 68)
        .write(&mut f, &payload)
        .unwrap();
    f
}

/// A DHCP server on the far end of the socketpair; records what it sees.
fn spawn_server(
    peer: std::os::unix::net::UnixDatagram,
    behaviour: Arc<Behaviour>,
) -> (JoinHandle<()>, SeenLog) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    peer.set_nonblocking(true).unwrap();
    let peer = tokio::net::UnixDatagram::from_std(peer).unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let n = peer.recv(&mut buf).await.unwrap();
            let p = etherparse::SlicedPacket::from_ethernet(&buf[..n]).unwrap();
            let Some(etherparse::LinkSlice::Ethernet2(eth)) = &p.link else {
                panic!()
            };
            let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
                panic!()
            };
            let Some(etherparse::TransportSlice::Udp(udp)) = &p.transport else {
                panic!()
            };
            let msg = Message::decode(&mut Decoder::new(udp.payload())).unwrap();
            log.lock().unwrap().push(Seen {
                dst_mac: eth.destination(),
                src_mac: eth.source(),
                src_ip: ip.header().source_addr(),
                dst_ip: ip.header().destination_addr(),
                msg: msg.clone(),
            });
            if behaviour.silent {
                continue;
            }
            let shift = behaviour.declines.load(Ordering::SeqCst);
            let answer = match msg.opts().msg_type() {
                Some(MessageType::Discover) => {
                    // Noise first: garbage, someone else's offer, an
                    // offer with our xid but another chaddr.
                    peer.send(&[0xde, 0xad]).await.unwrap();
                    let mut other = msg.clone();
                    other.set_xid(msg.xid().wrapping_add(1));
                    peer.send(&reply_frame(&other, MessageType::Offer, false, shift))
                        .await
                        .unwrap();
                    let mut other = msg.clone();
                    other.set_chaddr(&[2, 0, 0, 0, 0, 0xee]);
                    peer.send(&reply_frame(&other, MessageType::Offer, false, shift))
                        .await
                        .unwrap();
                    MessageType::Offer
                }
                Some(MessageType::Request) => {
                    let naks = behaviour.naks.load(Ordering::SeqCst);
                    if naks > 0 {
                        behaviour.naks.store(naks - 1, Ordering::SeqCst);
                        MessageType::Nak
                    } else {
                        MessageType::Ack
                    }
                }
                Some(MessageType::Decline) => {
                    behaviour.declines.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                _ => continue,
            };
            peer.send(&reply_frame(&msg, answer, behaviour.unicast, shift))
                .await
                .unwrap();
        }
    });
    (task, seen)
}

/// A client, its fake server's task, and what that server saw.
type TestClient = (DhcpClient, JoinHandle<()>, SeenLog);
/// What the fake server saw, in order.
type SeenLog = Arc<Mutex<Vec<Seen>>>;

fn test_client(behaviour: Behaviour) -> TestClient {
    test_client_with(Arc::new(behaviour), Vec::new())
}

/// A client of pod 5 whose ARP probe finds the first address offered
/// taken, and that address.
fn first_offer_taken() -> (Ipv4Addr, DhcpClient, JoinHandle<()>, SeenLog) {
    let first = offered_address(&[0, 0, 0, 0, 0, 5]);
    let (client, server, seen) = test_client_with(Arc::default(), vec![first]);
    (first, client, server, seen)
}

/// The types of the messages the server saw, in order.
fn message_types(seen: &Mutex<Vec<Seen>>) -> Vec<MessageType> {
    let seen = seen.lock().unwrap();
    seen.iter()
        .map(|s| s.msg.opts().msg_type().expect("a DHCP message type"))
        .collect()
}

/// A client whose ARP probes find `in_use` taken.
fn test_client_with(behaviour: Arc<Behaviour>, in_use: Vec<Ipv4Addr>) -> TestClient {
    let (socket, peer) = PacketSocket::pair().unwrap();
    let config = DhcpConfig {
        initial_retransmit: Duration::from_millis(50),
        max_retransmit: Duration::from_millis(200),
        ..DhcpConfig::default()
    };
    let client = DhcpClient::from_socket(
        &tokio::runtime::Handle::current(),
        socket,
        "test0",
        config,
        Prober::InUse(in_use),
    );
    let (task, seen) = spawn_server(peer, behaviour);
    (client, task, seen)
}

fn request(last: u8) -> LeaseRequest {
    LeaseRequest {
        mac: [2, 0, 0, 0, 0, last],
        client_id: vec![0xff, 0, 0, 0, last],
        hostname: Some(format!("pod-{last}")),
        timeout: Duration::from_secs(5),
        send_options: vec![(60, b"lanlink".to_vec())],
        on_request: Default::default(),
        arp_probe: Some(ArpProbe::default()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acquires_each_get_their_lease() {
    for unicast in [false, true] {
        let (client, server, seen) = test_client(Behaviour {
            unicast,
            ..Behaviour::default()
        });
        let reqs: Vec<_> = (1..=3).map(request).collect();
        let (a, b, c) = tokio::join!(
            client.acquire(&reqs[0]),
            client.acquire(&reqs[1]),
            client.acquire(&reqs[2])
        );
        for (req, lease) in reqs.iter().zip([a, b, c]) {
            let lease = lease.unwrap();
            assert_eq!(lease.mac, req.mac);
            assert_eq!(lease.address, offered_address(&req.mac));
            assert_eq!(lease.server_id, SERVER_IP);
            assert_eq!(lease.server_mac, SERVER_MAC);
            assert_eq!(lease.hostname, req.hostname);
            assert_eq!(lease.client_id, req.client_id);
        }
        let stats = client.stats();
        assert_eq!(
            (stats.sent_discover, stats.sent_request, stats.received_ack),
            (3, 3, 3),
            "{stats:?}"
        );
        assert_eq!(stats.malformed, 3, "{stats:?}");
        assert_eq!(stats.unmatched, 6, "{stats:?}");
        // Every frame left with the pod's MAC, from 0.0.0.0 to broadcast.
        let seen = seen.lock().unwrap().clone();
        let xids: std::collections::HashSet<_> = seen.iter().map(|s| s.msg.xid()).collect();
        assert_eq!(xids.len(), 3, "one xid per transaction");
        for s in &seen {
            assert_eq!(s.src_mac, s.msg.chaddr()[..6]);
            assert_eq!(
                (s.src_ip, s.dst_ip, s.dst_mac),
                (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, BROADCAST_MAC)
            );
            assert!(s.msg.flags().broadcast());
            assert_eq!(s.msg.opcode(), Opcode::BootRequest);
        }
        assert!(
            client.handle.shared.waiters().is_empty(),
            "transactions must deregister"
        );
        server.abort();
    }
}

#[tokio::test]
async fn a_nak_restarts_with_a_new_discover() {
    let (client, server, seen) = test_client(Behaviour {
        naks: AtomicUsize::new(1),
        ..Behaviour::default()
    });
    let lease = client.acquire(&request(7)).await.unwrap();
    assert_eq!(lease.address, offered_address(&[0, 0, 0, 0, 0, 7]));
    let stats = client.stats();
    assert_eq!(
        (stats.received_nak, stats.sent_discover, stats.sent_request),
        (1, 2, 2),
        "{stats:?}"
    );
    let seen = seen.lock().unwrap();
    assert_ne!(
        seen[0].msg.xid(),
        seen[2].msg.xid(),
        "a restart takes a new xid"
    );
    server.abort();
}

#[tokio::test]
async fn silence_times_out_with_context_and_backoff() {
    let (client, server, seen) = test_client(Behaviour {
        silent: true,
        ..Behaviour::default()
    });
    let mut req = request(9);
    req.timeout = Duration::from_millis(600);
    let err = client.acquire(&req).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, DhcpError::Timeout { server: None, .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("test0")
            && msg.contains("02:00:00:00:00:09")
            && msg.contains("no dhcp server answered"),
        "{msg}"
    );
    // 50, 100, 200, 200 ms: about 4 to 5 discovers in 600 ms, not a flood.
    let discovers = seen.lock().unwrap().len();
    assert!((3..=6).contains(&discovers), "{discovers} discovers");
    assert!(
        msg.contains(&format!("{discovers} dhcpdiscover")),
        "the error counts what was sent: {msg}"
    );
    assert_eq!(client.stats().timeouts, 1);
    assert_eq!(client.stats().events.acquire_failures, 1);
    assert!(client.handle.shared.waiters().is_empty());
    server.abort();
}

#[tokio::test]
async fn renew_rebind_and_release_frames() {
    let behaviour = Arc::new(Behaviour::default());
    let (client, server, seen) = test_client_with(Arc::clone(&behaviour), Vec::new());
    let lease = client.acquire(&request(3)).await.unwrap();
    seen.lock().unwrap().clear();

    let renewed = client
        .renew(&lease, false, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(renewed.address, lease.address);
    let rebound = client
        .renew(&lease, true, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(rebound.address, lease.address);
    client.release(&lease).await.unwrap();
    // The release gets no answer: wait for the server to have read it.
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let (renew, rebind, release) = (&seen[0], &seen[1], &seen[2]);
    assert_eq!(
        (renew.dst_mac, renew.dst_ip, renew.src_ip),
        (SERVER_MAC, SERVER_IP, lease.address)
    );
    assert_eq!(renew.msg.ciaddr(), lease.address);
    assert!(!renew.msg.flags().broadcast());
    assert!(
        renew
            .msg
            .opts()
            .get(dhcproto::v4::OptionCode::ServerIdentifier)
            .is_none()
    );
    assert_eq!(
        (rebind.dst_mac, rebind.dst_ip, rebind.src_ip),
        (BROADCAST_MAC, Ipv4Addr::BROADCAST, lease.address)
    );
    assert_eq!(release.msg.opts().msg_type(), Some(MessageType::Release));
    assert_eq!(
        (release.dst_mac, release.dst_ip, release.src_ip),
        (SERVER_MAC, SERVER_IP, lease.address)
    );
    assert_eq!(client.stats().sent_release, 1);

    behaviour.naks.store(1, Ordering::SeqCst);
    let err = client
        .renew(&lease, false, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DhcpError::Nak {
                server: SERVER_IP,
                ..
            }
        ),
        "{err:?}"
    );
    let events = client.stats().events;
    assert_eq!(
        (
            events.renewed,
            events.rebound,
            events.released,
            events.nak,
            events.acquired
        ),
        (1, 1, 1, 1, 1),
        "{events:?}"
    );
    server.abort();
}

#[tokio::test]
async fn an_address_in_use_is_declined_and_another_acquired() {
    let (first, client, server, seen) = first_offer_taken();
    let lease = client.acquire(&request(5)).await.unwrap();
    let second = Ipv4Addr::from(u32::from(first) + 50);
    assert_eq!(
        lease.address, second,
        "the declined address must not be used"
    );
    use MessageType::{Decline, Discover, Request};
    assert_eq!(
        message_types(&seen),
        [Discover, Request, Decline, Discover, Request]
    );
    let seen = seen.lock().unwrap().clone();
    let decline = &seen[2];
    assert_eq!(
        decline
            .msg
            .opts()
            .get(dhcproto::v4::OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(first))
    );
    assert_eq!(
        (decline.src_ip, decline.dst_ip, decline.dst_mac),
        (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, BROADCAST_MAC)
    );
    let stats = client.stats();
    assert_eq!(stats.sent_decline, 1);
    assert_eq!(
        (stats.events.declined, stats.events.acquired),
        (1, 1),
        "{stats:?}"
    );
    server.abort();
}

#[tokio::test]
async fn without_a_probe_the_acknowledged_address_is_used_as_is() {
    let (first, client, server, seen) = first_offer_taken();
    let req = LeaseRequest {
        on_request: Default::default(),
        arp_probe: None,
        ..request(5)
    };
    let lease = client.acquire(&req).await.unwrap();
    assert_eq!(lease.address, first, "no probe, so nothing to decline");
    assert_eq!(
        message_types(&seen),
        [MessageType::Discover, MessageType::Request]
    );
    assert_eq!(client.stats().sent_decline, 0);
    server.abort();
}

#[tokio::test]
async fn a_server_that_only_offers_used_addresses_is_given_up() {
    // Every address the server can offer is taken: three declines, then
    // a clear error instead of looping until the deadline.
    let taken: Vec<Ipv4Addr> = (0..3)
        .map(|i| Ipv4Addr::new(198, 18, 0, 106 + 50 * i))
        .collect();
    let (client, server, _seen) = test_client_with(Arc::default(), taken);
    let err = client.acquire(&request(6)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, DhcpError::Timeout { declined, .. } if declined.len() == 3),
        "{err:?}"
    );
    assert!(
        msg.contains("198.18.0.106") && msg.contains("in use"),
        "{msg}"
    );
    let events = client.stats().events;
    assert_eq!((events.declined, events.acquire_failures), (3, 1));
    server.abort();
}

#[tokio::test]
async fn invalid_requests_fail_before_sending() {
    let (client, server, seen) = test_client(Behaviour::default());
    let mut req = request(1);
    req.send_options.push((53, vec![1]));
    assert!(matches!(
        client.acquire(&req).await,
        Err(DhcpError::ReservedOption { code: 53, .. })
    ));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(seen.lock().unwrap().is_empty());
    server.abort();
}

#[test]
fn client_is_send_sync_and_new_needs_a_runtime() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<DhcpClient>();
    assert!(matches!(
        DhcpClient::new("lo"),
        Err(DhcpError::NoRuntime { .. })
    ));
}

/// The hook hears of the offered address before the REQUEST leaves (what
/// the ADD records, so a crash before the ACK is handled still releases
/// it), once per REQUEST of a new offer: the NAK makes a second one.
#[tokio::test]
async fn the_request_hook_runs_before_each_request_with_the_offer() {
    let (client, server, seen) = test_client(Behaviour {
        naks: AtomicUsize::new(1),
        ..Behaviour::default()
    });
    let heard = Arc::new(Mutex::new(Vec::<(Ipv4Addr, usize)>::new()));
    let mut req = request(8);
    let (h, s) = (Arc::clone(&heard), Arc::clone(&seen));
    req.on_request = super::OnRequest(Some(Arc::new(move |lease: Lease| {
        // How many messages the server had seen when the hook ran.
        h.lock()
            .unwrap()
            .push((lease.address, s.lock().unwrap().len()));
        Box::pin(async {})
    })));
    let lease = client.acquire(&req).await.unwrap();
    let heard = heard.lock().unwrap().clone();
    let types = message_types(&seen);
    assert_eq!(heard.len(), 2, "once per offer: {heard:?}");
    for (address, seen_before) in &heard {
        assert_eq!(*address, lease.address);
        // DISCOVER seen, its REQUEST not yet.
        assert_eq!(types[*seen_before - 1], MessageType::Discover, "{types:?}");
        assert_eq!(types[*seen_before], MessageType::Request, "{types:?}");
    }
    server.abort();
}
