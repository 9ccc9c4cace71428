//! [`DhcpClient`]: one per agent, speaking DHCP for every pod through one
//! packet socket on the uplink.
//!
//! A receive task reads every DHCP reply the socket filter lets through,
//! parses it and hands it to the transaction waiting for its xid (and the
//! pod's chaddr) through a small channel. Transactions register their xid in
//! a map under a short-lived mutex, never held across an await, so any
//! number of pods acquire, renew and release concurrently.
//!
//! Before an acquired address is handed out it is ARP-probed on the uplink
//! ([`super::arp`]); an address that already answers is declined
//! (DHCPDECLINE) and the client starts over. Every lease event (acquired,
//! renewed, rebound, released, expired, refused, declined, failed) is
//! counted in [`DhcpEvents`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::MessageType;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::arp::{self, ArpProbe};
use super::error::{DhcpError, Mac};
use super::lease::Lease;
use super::socket::{PacketSocket, RECV_BUF_LEN};
use super::wire::{
    self, BROADCAST_MAC, ClientIdentity, FrameAddrs, LeaseOwner, MessageParams, Outgoing, Reply,
};

/// What to ask the LAN's DHCP server for, for one pod interface.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRequest {
    /// The pod MAC: Ethernet source and chaddr (see [`stable_identity`](super::stable_identity)).
    pub mac: [u8; 6],
    /// Option 61, 2 to 255 bytes.
    pub client_id: Vec<u8>,
    /// Option 12, already sanitised (see [`sanitize_hostname`](super::sanitize_hostname)).
    pub hostname: Option<String>,
    /// Give up (with [`DhcpError::Timeout`]) after this long.
    pub timeout: Duration,
    /// Extra options from the netconf, sent in DISCOVER and REQUEST. Codes
    /// the client sets itself (12, 50, 53, 54, 55, 57, 61, ...) are refused.
    pub send_options: Vec<(u8, Vec<u8>)>,
    /// ARP-probe the acknowledged address before using it and decline it
    /// when another host answers (RFC 2131 4.4.1); `None` skips the probe.
    pub arp_probe: Option<ArpProbe>,
}

/// Tunables of the client; [`Default`] suits a LAN.
#[derive(Clone, Debug, PartialEq)]
pub struct DhcpConfig {
    /// Set the BROADCAST flag in DISCOVER and selecting REQUEST, so servers
    /// answer to ff:ff:ff:ff:ff:ff. Unicast answers are accepted either way.
    pub broadcast_flag: bool,
    /// First retransmission interval; doubles per attempt (RFC 2131 4.1
    /// uses 4 s; a pod waiting to start wants faster).
    pub initial_retransmit: Duration,
    /// Cap of the retransmission interval.
    pub max_retransmit: Duration,
    /// DHCPREQUESTs sent for one offer before starting over with DISCOVER.
    pub request_attempts: u32,
    /// Option 57.
    pub max_message_size: u16,
    /// DHCPDECLINEs in one acquisition before giving up on the server.
    pub max_declines: u32,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        DhcpConfig {
            broadcast_flag: true,
            initial_retransmit: Duration::from_secs(1),
            max_retransmit: Duration::from_secs(8),
            request_attempts: 4,
            max_message_size: 1500,
            max_declines: 3,
        }
    }
}

/// Counters of the client since it started, for logs and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DhcpStats {
    /// DHCPDISCOVERs sent.
    pub sent_discover: u64,
    /// DHCPREQUESTs sent (selecting, renewing and rebinding).
    pub sent_request: u64,
    /// DHCPRELEASEs sent.
    pub sent_release: u64,
    /// DHCPDECLINEs sent.
    pub sent_decline: u64,
    /// Well-formed DHCPOFFERs received (for any client).
    pub received_offer: u64,
    /// Well-formed DHCPACKs received (for any client).
    pub received_ack: u64,
    /// Well-formed DHCPNAKs received (for any client).
    pub received_nak: u64,
    /// Well-formed replies of other types.
    pub received_other: u64,
    /// Frames ignored because they were truncated or not a valid reply.
    pub malformed: u64,
    /// Valid replies for no transaction of ours (unknown xid, other chaddr):
    /// other DHCP clients on the LAN, or late answers.
    pub unmatched: u64,
    /// Replies dropped because their transaction's queue was full.
    pub dropped: u64,
    /// Acquisitions and renewals that ran out of time.
    pub timeouts: u64,
    /// Frames that could not be sent.
    pub send_errors: u64,
    /// Errors reading the socket.
    pub recv_errors: u64,
    /// What happened to leases, one counter per event.
    pub events: DhcpEvents,
}

/// Lease lifecycle events since the client started (for `/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DhcpEvents {
    /// Leases acquired (DISCOVER to ACK, address probed free).
    pub acquired: u64,
    /// Leases extended by their server at T1 (unicast).
    pub renewed: u64,
    /// Leases extended by any server after T2 (broadcast).
    pub rebound: u64,
    /// Leases released (DHCPRELEASE sent).
    pub released: u64,
    /// Leases that ran out unrenewed or were refused, as reported by the
    /// agent ([`DhcpClient::count_expired`]).
    pub expired: u64,
    /// Renewals or rebindings refused with a DHCPNAK (the lease is gone).
    pub nak: u64,
    /// Acknowledged addresses declined because another host answers ARP
    /// for them.
    pub declined: u64,
    /// Acquisitions that failed (no server, pool exhausted, send error).
    pub acquire_failures: u64,
    /// Renewal and rebinding attempts that got no usable answer.
    pub renew_failures: u64,
    /// ARP probes that could not run (the address was used unchecked).
    pub probe_errors: u64,
}

#[derive(Default)]
struct Counters {
    sent_discover: AtomicU64,
    sent_request: AtomicU64,
    sent_release: AtomicU64,
    sent_decline: AtomicU64,
    received_offer: AtomicU64,
    received_ack: AtomicU64,
    received_nak: AtomicU64,
    received_other: AtomicU64,
    malformed: AtomicU64,
    unmatched: AtomicU64,
    dropped: AtomicU64,
    timeouts: AtomicU64,
    send_errors: AtomicU64,
    recv_errors: AtomicU64,
    acquired: AtomicU64,
    renewed: AtomicU64,
    rebound: AtomicU64,
    released: AtomicU64,
    expired: AtomicU64,
    nak: AtomicU64,
    declined: AtomicU64,
    acquire_failures: AtomicU64,
    renew_failures: AtomicU64,
    probe_errors: AtomicU64,
}

fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed)
}

/// A reply routed to a transaction.
#[derive(Debug)]
struct Incoming {
    reply: Reply,
    /// Ethernet source: the server, or the relay in front of it.
    src_mac: [u8; 6],
    /// IPv4 source, the server id of last resort.
    src_ip: Ipv4Addr,
}

struct Waiter {
    mac: [u8; 6],
    tx: mpsc::Sender<Incoming>,
}

/// Replies a transaction can have queued; more are counted as dropped.
const QUEUE_DEPTH: usize = 8;

/// How acquired addresses are checked for conflicts.
#[derive(Debug)]
enum Prober {
    /// ARP probes on the uplink with this ifindex.
    Uplink { ifindex: u32 },
    /// Unit tests: these addresses are in use (by a fixed MAC).
    #[cfg(test)]
    InUse(Vec<Ipv4Addr>),
}

struct Shared {
    socket: PacketSocket,
    uplink: String,
    config: DhcpConfig,
    prober: Prober,
    waiters: Mutex<HashMap<u32, Waiter>>,
    counters: Counters,
}

/// Ends the receive task when the last [`DhcpClient`] clone goes away.
struct Handle {
    shared: Arc<Shared>,
    rx_task: tokio::task::AbortHandle,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.rx_task.abort();
    }
}

/// The agent's DHCPv4 client, acting for every pod on one uplink. Cheap to
/// clone; all clones share one socket and one receive task.
#[derive(Clone)]
pub struct DhcpClient {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for DhcpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhcpClient")
            .field("uplink", &self.handle.shared.uplink)
            .finish_non_exhaustive()
    }
}

/// One open exchange: its xid stays registered until this is dropped, also
/// when the caller's future is cancelled.
struct Transaction<'a> {
    shared: &'a Shared,
    xid: u32,
    rx: mpsc::Receiver<Incoming>,
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.shared.waiters().remove(&self.xid);
    }
}

/// Where an acquisition got to, for the timeout error.
#[derive(Default)]
struct Progress {
    server: Option<Ipv4Addr>,
    offered: Option<Ipv4Addr>,
    naks: u32,
    discovers: u32,
    declined: Vec<Ipv4Addr>,
}

impl DhcpClient {
    /// Opens the packet socket on the uplink (must be called from a thread
    /// or process already in the node's netns — the agent process runs inside
    /// it) and spawns the receive task on the current tokio runtime.
    pub fn new(uplink_ifname: &str) -> Result<Self, DhcpError> {
        Self::with_config(uplink_ifname, DhcpConfig::default())
    }

    /// [`DhcpClient::new`] with explicit tunables.
    pub fn with_config(uplink_ifname: &str, config: DhcpConfig) -> Result<Self, DhcpError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|source| DhcpError::NoRuntime { source })?;
        let ifindex = nix::net::if_::if_nametoindex(uplink_ifname).map_err(|source| {
            DhcpError::UplinkNotFound {
                uplink: uplink_ifname.to_owned(),
                source,
            }
        })?;
        // AsyncFd registers with the reactor of the current runtime.
        let _guard = runtime.enter();
        let socket = PacketSocket::open(uplink_ifname, ifindex)?;
        info!(uplink = uplink_ifname, ifindex, "dhcp client listening");
        Ok(Self::from_socket(
            &runtime,
            socket,
            uplink_ifname,
            config,
            Prober::Uplink { ifindex },
        ))
    }

    fn from_socket(
        runtime: &tokio::runtime::Handle,
        socket: PacketSocket,
        uplink: &str,
        config: DhcpConfig,
        prober: Prober,
    ) -> Self {
        let shared = Arc::new(Shared {
            socket,
            uplink: uplink.to_owned(),
            config,
            prober,
            waiters: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        });
        let rx_task = runtime
            .spawn(receive_loop(Arc::clone(&shared)))
            .abort_handle();
        DhcpClient {
            handle: Arc::new(Handle { shared, rx_task }),
        }
    }

    /// DISCOVER → OFFER → REQUEST → ACK (NAK → restart), then an ARP probe
    /// of the address (in use → DECLINE → restart), retrying with backoff
    /// until `req.timeout` passes. Concurrent calls for different MACs run
    /// concurrently (own xid each, no global lock held across awaits). Run
    /// at most one transaction per MAC at a time.
    pub async fn acquire(&self, req: &LeaseRequest) -> Result<Lease, DhcpError> {
        let shared = &*self.handle.shared;
        let result = self.try_acquire(req).await;
        match &result {
            Ok(_) => bump(&shared.counters.acquired),
            Err(_) => bump(&shared.counters.acquire_failures),
        };
        result
    }

    async fn try_acquire(&self, req: &LeaseRequest) -> Result<Lease, DhcpError> {
        let shared = &*self.handle.shared;
        let id = ClientIdentity {
            mac: req.mac,
            client_id: &req.client_id,
            hostname: req.hostname.as_deref(),
            extra: &req.send_options,
        };
        wire::validate_identity(&id)?;
        let start = Instant::now();
        let deadline = start + req.timeout;
        let mut progress = Progress::default();
        let broadcast = FrameAddrs {
            src_mac: req.mac,
            dst_mac: BROADCAST_MAC,
            src_ip: Ipv4Addr::UNSPECIFIED,
            dst_ip: Ipv4Addr::BROADCAST,
        };
        'restart: while Instant::now() < deadline {
            let mut tx = shared.begin(req.mac);
            // SELECTING: the first valid offer wins.
            let mut attempt = 0;
            let offer = loop {
                if Instant::now() >= deadline {
                    break 'restart;
                }
                shared
                    .transmit(&id, &tx, start, Outgoing::Discover, &broadcast)
                    .await?;
                progress.discovers += 1;
                let until = deadline.min(Instant::now() + shared.retransmit_interval(attempt));
                attempt += 1;
                let found = tx
                    .wait_for(until, |msg| {
                        progress.server = Some(msg.reply.opts.server_id.unwrap_or(msg.src_ip));
                        msg.reply.msg_type == MessageType::Offer
                            && wire::usable(msg.reply.yiaddr)
                            && !progress.declined.contains(&msg.reply.yiaddr)
                    })
                    .await;
                if let Some(offer) = found {
                    break offer;
                }
            };
            let requested = offer.reply.yiaddr;
            let server_id = offer.reply.opts.server_id.unwrap_or(offer.src_ip);
            progress.offered = Some(requested);
            progress.server = Some(server_id);
            debug!(mac = %Mac(req.mac), %requested, %server_id, "offer received");

            // REQUESTING.
            let kind = Outgoing::RequestSelecting {
                requested,
                server_id,
            };
            for attempt in 0..shared.config.request_attempts {
                if Instant::now() >= deadline {
                    break 'restart;
                }
                let requested_at = unix_now();
                shared.transmit(&id, &tx, start, kind, &broadcast).await?;
                let until =
                    deadline.min(Instant::now() + shared.retransmit_interval(attempt as usize));
                while let Some(msg) = tx.next_until(until).await {
                    let from = msg.reply.opts.server_id.unwrap_or(msg.src_ip);
                    match msg.reply.msg_type {
                        MessageType::Ack if from == server_id => {
                            let owner = LeaseOwner {
                                mac: req.mac,
                                client_id: &req.client_id,
                                hostname: req.hostname.as_deref(),
                            };
                            match wire::lease_from_ack(
                                &owner,
                                &msg.reply,
                                msg.src_mac,
                                Some(server_id),
                                requested_at,
                            ) {
                                Ok(lease) => {
                                    if let Some(holder) = shared.in_use(req, lease.address).await {
                                        warn!(
                                            uplink = %shared.uplink, mac = %Mac(req.mac), address = %lease.address,
                                            holder = %Mac(holder), server = %server_id,
                                            "acknowledged address already answers arp; declining it"
                                        );
                                        let decline = Outgoing::Decline {
                                            requested: lease.address,
                                            server_id,
                                        };
                                        shared
                                            .transmit(&id, &tx, start, decline, &broadcast)
                                            .await?;
                                        bump(&shared.counters.declined);
                                        progress.declined.push(lease.address);
                                        progress.offered = None;
                                        if progress.declined.len()
                                            >= shared.config.max_declines as usize
                                        {
                                            break 'restart;
                                        }
                                        // RFC 2131 3.1.5 waits 10 s before starting over; a pod
                                        // waiting for its network cannot, but a looping server
                                        // must not be hammered either.
                                        let pause = deadline
                                            .min(Instant::now() + shared.config.initial_retransmit);
                                        tokio::time::sleep_until(pause).await;
                                        continue 'restart;
                                    }
                                    info!(
                                        uplink = %shared.uplink, mac = %Mac(req.mac), address = %lease.address,
                                        prefix = lease.prefix_len, server = %lease.server_id, lease_secs = lease.lease_secs,
                                        elapsed_ms = start.elapsed().as_millis() as u64, "dhcp lease acquired"
                                    );
                                    return Ok(lease);
                                }
                                Err(e) => {
                                    bump(&shared.counters.malformed);
                                    warn!(mac = %Mac(req.mac), server = %from, error = %e, "ignoring unusable dhcpack");
                                }
                            }
                        }
                        MessageType::Nak if from == server_id => {
                            progress.naks += 1;
                            warn!(
                                mac = %Mac(req.mac), server = %from, message = msg.reply.opts.message.as_deref().unwrap_or(""),
                                "dhcpnak while requesting; starting over"
                            );
                            // Do not hammer a server that keeps refusing.
                            let pause =
                                deadline.min(Instant::now() + shared.config.initial_retransmit);
                            tokio::time::sleep_until(pause).await;
                            continue 'restart;
                        }
                        other => {
                            debug!(mac = %Mac(req.mac), msg_type = ?other, %from, "ignoring reply while requesting")
                        }
                    }
                }
            }
            debug!(mac = %Mac(req.mac), %requested, "no answer to request; starting over");
        }
        bump(&shared.counters.timeouts);
        Err(DhcpError::Timeout {
            op: "acquire",
            uplink: shared.uplink.clone(),
            mac: Mac(req.mac),
            elapsed: start.elapsed(),
            server: progress.server,
            offered: progress.offered,
            naks: progress.naks,
            sent: progress.discovers,
            declined: progress.declined.into(),
        })
    }

    /// Unicast REQUEST to the server (renewing); returns the updated lease.
    /// Broadcast to any server when `rebinding`. A DHCPNAK is
    /// [`DhcpError::Nak`]: the lease is gone.
    pub async fn renew(
        &self,
        lease: &Lease,
        rebinding: bool,
        timeout: Duration,
    ) -> Result<Lease, DhcpError> {
        let shared = &*self.handle.shared;
        let result = self.try_renew(lease, rebinding, timeout).await;
        bump(match (&result, rebinding) {
            (Ok(_), false) => &shared.counters.renewed,
            (Ok(_), true) => &shared.counters.rebound,
            (Err(DhcpError::Nak { .. }), _) => &shared.counters.nak,
            (Err(_), _) => &shared.counters.renew_failures,
        });
        result
    }

    async fn try_renew(
        &self,
        lease: &Lease,
        rebinding: bool,
        timeout: Duration,
    ) -> Result<Lease, DhcpError> {
        let shared = &*self.handle.shared;
        let id = ClientIdentity {
            mac: lease.mac,
            client_id: &lease.client_id,
            hostname: lease.hostname.as_deref(),
            extra: &[],
        };
        wire::validate_identity(&id)?;
        let addrs = if rebinding || lease.server_mac == [0; 6] {
            FrameAddrs {
                src_mac: lease.mac,
                dst_mac: BROADCAST_MAC,
                src_ip: lease.address,
                dst_ip: if rebinding {
                    Ipv4Addr::BROADCAST
                } else {
                    lease.server_id
                },
            }
        } else {
            FrameAddrs {
                src_mac: lease.mac,
                dst_mac: lease.server_mac,
                src_ip: lease.address,
                dst_ip: lease.server_id,
            }
        };
        let op = if rebinding { "rebind" } else { "renew" };
        let start = Instant::now();
        let deadline = start + timeout;
        let mut tx = shared.begin(lease.mac);
        let mut answered = None;
        let mut attempt = 0;
        let mut sent = 0;
        let kind = Outgoing::RequestExtend {
            ciaddr: lease.address,
        };
        while Instant::now() < deadline {
            let requested_at = unix_now();
            shared.transmit(&id, &tx, start, kind, &addrs).await?;
            sent += 1;
            let until = deadline.min(Instant::now() + shared.retransmit_interval(attempt));
            attempt += 1;
            while let Some(msg) = tx.next_until(until).await {
                let from = msg.reply.opts.server_id.unwrap_or(msg.src_ip);
                answered = Some(from);
                if !rebinding && from != lease.server_id {
                    debug!(mac = %Mac(lease.mac), %from, "ignoring reply from another server while renewing");
                    continue;
                }
                match msg.reply.msg_type {
                    MessageType::Ack => {
                        let owner = LeaseOwner {
                            mac: lease.mac,
                            client_id: &lease.client_id,
                            hostname: lease.hostname.as_deref(),
                        };
                        match wire::lease_from_ack(
                            &owner,
                            &msg.reply,
                            msg.src_mac,
                            Some(lease.server_id),
                            requested_at,
                        ) {
                            Ok(new) => {
                                if new.address != lease.address {
                                    warn!(mac = %Mac(lease.mac), old = %lease.address, new = %new.address, "server changed the address on {op}");
                                }
                                info!(
                                    uplink = %shared.uplink, mac = %Mac(lease.mac), address = %new.address,
                                    lease_secs = new.lease_secs, "dhcp lease {op}ed"
                                );
                                return Ok(new);
                            }
                            Err(e) => {
                                bump(&shared.counters.malformed);
                                warn!(mac = %Mac(lease.mac), server = %from, error = %e, "ignoring unusable dhcpack");
                            }
                        }
                    }
                    MessageType::Nak => {
                        return Err(DhcpError::Nak {
                            uplink: shared.uplink.clone(),
                            mac: Mac(lease.mac),
                            address: lease.address,
                            server: from,
                            message: msg.reply.opts.message.clone(),
                        });
                    }
                    other => {
                        debug!(mac = %Mac(lease.mac), msg_type = ?other, "ignoring reply while {op}ing")
                    }
                }
            }
        }
        bump(&shared.counters.timeouts);
        Err(DhcpError::Timeout {
            op,
            uplink: shared.uplink.clone(),
            mac: Mac(lease.mac),
            elapsed: start.elapsed(),
            server: answered,
            offered: None,
            naks: 0,
            sent,
            declined: Box::default(),
        })
    }

    /// DHCPRELEASE to the server (unicast to the server's MAC/IP learnt from
    /// the ACK). Fire-and-forget: no answer is expected, but a failure to
    /// send is reported.
    pub async fn release(&self, lease: &Lease) -> Result<(), DhcpError> {
        let shared = &*self.handle.shared;
        let id = ClientIdentity {
            mac: lease.mac,
            client_id: &lease.client_id,
            hostname: None,
            extra: &[],
        };
        wire::validate_identity(&id)?;
        let addrs = FrameAddrs {
            src_mac: lease.mac,
            dst_mac: if lease.server_mac == [0; 6] {
                BROADCAST_MAC
            } else {
                lease.server_mac
            },
            src_ip: lease.address,
            dst_ip: lease.server_id,
        };
        let kind = Outgoing::Release {
            ciaddr: lease.address,
            server_id: lease.server_id,
        };
        // No reply comes, but a registered xid keeps it unique.
        let tx = shared.begin(lease.mac);
        shared
            .transmit(&id, &tx, Instant::now(), kind, &addrs)
            .await?;
        bump(&shared.counters.released);
        info!(uplink = %shared.uplink, mac = %Mac(lease.mac), address = %lease.address, server = %lease.server_id, "dhcp lease released");
        Ok(())
    }

    /// Counts a lease the agent let expire (its timers ran out, or a
    /// DHCPNAK refused it): the client cannot see that by itself.
    pub fn count_expired(&self) {
        bump(&self.handle.shared.counters.expired);
    }

    /// Counters: sent/received by message type, malformed packets ignored, timeouts.
    pub fn stats(&self) -> DhcpStats {
        let c = &self.handle.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DhcpStats {
            sent_discover: get(&c.sent_discover),
            sent_request: get(&c.sent_request),
            sent_release: get(&c.sent_release),
            sent_decline: get(&c.sent_decline),
            received_offer: get(&c.received_offer),
            received_ack: get(&c.received_ack),
            received_nak: get(&c.received_nak),
            received_other: get(&c.received_other),
            malformed: get(&c.malformed),
            unmatched: get(&c.unmatched),
            dropped: get(&c.dropped),
            timeouts: get(&c.timeouts),
            send_errors: get(&c.send_errors),
            recv_errors: get(&c.recv_errors),
            events: DhcpEvents {
                acquired: get(&c.acquired),
                renewed: get(&c.renewed),
                rebound: get(&c.rebound),
                released: get(&c.released),
                expired: get(&c.expired),
                nak: get(&c.nak),
                declined: get(&c.declined),
                acquire_failures: get(&c.acquire_failures),
                renew_failures: get(&c.renew_failures),
                probe_errors: get(&c.probe_errors),
            },
        }
    }
}

impl Shared {
    fn waiters(&self) -> MutexGuard<'_, HashMap<u32, Waiter>> {
        // A panic elsewhere cannot leave the map inconsistent: every
        // critical section is a single insert, remove or lookup.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a fresh random xid for `mac`.
    fn begin(&self, mac: [u8; 6]) -> Transaction<'_> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let mut waiters = self.waiters();
        loop {
            let xid: u32 = rand::random();
            if let Entry::Vacant(slot) = waiters.entry(xid) {
                slot.insert(Waiter { mac, tx });
                return Transaction {
                    shared: self,
                    xid,
                    rx,
                };
            }
        }
    }

    /// The MAC of a host that already uses `ip` (ARP probe from `mac`), or
    /// `None` when the address is free, probing is off, or the probe could
    /// not run (counted and logged: the address is then used unchecked, as
    /// every client without conflict detection would).
    async fn in_use(&self, req: &LeaseRequest, ip: Ipv4Addr) -> Option<[u8; 6]> {
        let cfg = req.arp_probe.as_ref()?;
        let mac = req.mac;
        let result = match &self.prober {
            Prober::Uplink { ifindex } => arp::probe(&self.uplink, *ifindex, mac, ip, cfg).await,
            #[cfg(test)]
            Prober::InUse(addrs) => Ok(addrs.contains(&ip).then_some([0x52, 0x54, 0, 0, 0, 0x99])),
        };
        match result {
            Ok(holder) => holder,
            Err(e) => {
                bump(&self.counters.probe_errors);
                warn!(uplink = %self.uplink, mac = %Mac(mac), address = %ip, error = %e, "cannot arp-probe the address; using it unchecked");
                None
            }
        }
    }

    /// Retransmission interval before attempt `attempt` + 1: doubling from
    /// `initial_retransmit` up to `max_retransmit`, randomised by ±12.5% so
    /// that many pods started together do not retransmit in lockstep.
    fn retransmit_interval(&self, attempt: usize) -> Duration {
        let base = self
            .config
            .initial_retransmit
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.config.max_retransmit);
        base.mul_f64(rand::random_range(0.875..1.125))
    }

    /// Builds and sends one message of `tx`'s transaction.
    async fn transmit(
        &self,
        id: &ClientIdentity<'_>,
        tx: &Transaction<'_>,
        start: Instant,
        kind: Outgoing,
        addrs: &FrameAddrs,
    ) -> Result<(), DhcpError> {
        let params = MessageParams {
            xid: tx.xid,
            secs: u16::try_from(start.elapsed().as_secs()).unwrap_or(u16::MAX),
            broadcast: self.config.broadcast_flag,
            max_message_size: self.config.max_message_size,
        };
        let payload = wire::build_message(id, &params, kind)?;
        let frame = wire::build_frame(addrs, &payload, kind.name())?;
        if let Err(source) = self.socket.send(&frame, addrs.dst_mac).await {
            bump(&self.counters.send_errors);
            return Err(DhcpError::Send {
                uplink: self.uplink.clone(),
                mac: Mac(id.mac),
                msg_type: kind.name(),
                source,
            });
        }
        bump(match kind {
            Outgoing::Discover => &self.counters.sent_discover,
            Outgoing::RequestSelecting { .. } | Outgoing::RequestExtend { .. } => {
                &self.counters.sent_request
            }
            Outgoing::Release { .. } => &self.counters.sent_release,
            Outgoing::Decline { .. } => &self.counters.sent_decline,
        });
        debug!(uplink = %self.uplink, mac = %Mac(id.mac), xid = format_args!("{:#010x}", tx.xid), msg = kind.name(), dst = %addrs.dst_ip, "dhcp sent");
        Ok(())
    }

    /// Routes one received frame to its transaction; never panics.
    fn dispatch(&self, frame: &[u8]) {
        let parsed =
            wire::parse_frame(frame).and_then(|rx| Ok((rx, wire::parse_reply(rx.payload)?)));
        let (rx, reply) = match parsed {
            Ok(p) => p,
            Err(e) => {
                bump(&self.counters.malformed);
                debug!(uplink = %self.uplink, error = %e, "ignoring malformed frame");
                return;
            }
        };
        bump(match reply.msg_type {
            MessageType::Offer => &self.counters.received_offer,
            MessageType::Ack => &self.counters.received_ack,
            MessageType::Nak => &self.counters.received_nak,
            _ => &self.counters.received_other,
        });
        let sender = self
            .waiters()
            .get(&reply.xid)
            .filter(|w| w.mac == reply.chaddr)
            .map(|w| w.tx.clone());
        let Some(sender) = sender else {
            bump(&self.counters.unmatched);
            return;
        };
        let incoming = Incoming {
            reply,
            src_mac: rx.src_mac,
            src_ip: rx.src_ip,
        };
        match sender.try_send(incoming) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                bump(&self.counters.dropped);
            }
            // The transaction ended between lookup and send.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                bump(&self.counters.unmatched);
            }
        }
    }
}

impl Transaction<'_> {
    /// The next reply for this transaction, or `None` at `until`.
    async fn next_until(&mut self, until: Instant) -> Option<Incoming> {
        tokio::time::timeout_at(until, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The first reply before `until` that `accept` takes; others are logged
    /// and skipped.
    async fn wait_for(
        &mut self,
        until: Instant,
        mut accept: impl FnMut(&Incoming) -> bool,
    ) -> Option<Incoming> {
        while let Some(msg) = self.next_until(until).await {
            if accept(&msg) {
                return Some(msg);
            }
            debug!(xid = format_args!("{:#010x}", self.xid), msg_type = ?msg.reply.msg_type, "ignoring reply");
        }
        None
    }
}

/// Reads the socket until the client is dropped (the task is aborted).
async fn receive_loop(shared: Arc<Shared>) {
    let mut buf = vec![0u8; RECV_BUF_LEN];
    loop {
        match shared.socket.recv(&mut buf).await {
            Ok(len) if len > buf.len() => {
                bump(&shared.counters.malformed);
                debug!(uplink = %shared.uplink, len, "ignoring truncated frame");
            }
            Ok(len) => shared.dispatch(&buf[..len]),
            Err(e) => {
                let n = bump(&shared.counters.recv_errors);
                // Log the first errors and then every hundredth: an uplink
                // that went down must not flood the log.
                if n < 10 || n.is_multiple_of(100) {
                    warn!(uplink = %shared.uplink, error = %e, count = n + 1, "dhcp socket receive error");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::wire::tests::{SERVER_MAC, encode_msg, full_ack};
    use dhcproto::v4::{DhcpOption, Message, Opcode};
    use dhcproto::{Decodable, Decoder};
    use std::sync::atomic::AtomicUsize;

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
    ) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<Seen>>>) {
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

    fn test_client(
        behaviour: Behaviour,
    ) -> (
        DhcpClient,
        tokio::task::JoinHandle<()>,
        Arc<Mutex<Vec<Seen>>>,
    ) {
        test_client_with(behaviour, Vec::new())
    }

    /// A client whose ARP probes find `in_use` taken.
    fn test_client_with(
        behaviour: Behaviour,
        in_use: Vec<Ipv4Addr>,
    ) -> (
        DhcpClient,
        tokio::task::JoinHandle<()>,
        Arc<Mutex<Vec<Seen>>>,
    ) {
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
        let (task, seen) = spawn_server(peer, Arc::new(behaviour));
        (client, task, seen)
    }

    fn request(last: u8) -> LeaseRequest {
        LeaseRequest {
            mac: [2, 0, 0, 0, 0, last],
            client_id: vec![0xff, 0, 0, 0, last],
            hostname: Some(format!("pod-{last}")),
            timeout: Duration::from_secs(5),
            send_options: vec![(60, b"lanlink".to_vec())],
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
        let (socket, peer) = PacketSocket::pair().unwrap();
        let config = DhcpConfig {
            initial_retransmit: Duration::from_millis(50),
            ..DhcpConfig::default()
        };
        let client = DhcpClient::from_socket(
            &tokio::runtime::Handle::current(),
            socket,
            "test0",
            config,
            Prober::InUse(Vec::new()),
        );
        let (server, seen) = spawn_server(peer, Arc::clone(&behaviour));
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
        let first = offered_address(&[0, 0, 0, 0, 0, 5]);
        let (client, server, seen) = test_client_with(Behaviour::default(), vec![first]);
        let lease = client.acquire(&request(5)).await.unwrap();
        let second = Ipv4Addr::from(u32::from(first) + 50);
        assert_eq!(
            lease.address, second,
            "the declined address must not be used"
        );
        let seen = seen.lock().unwrap().clone();
        let types: Vec<_> = seen.iter().map(|s| s.msg.opts().msg_type()).collect();
        assert_eq!(
            types,
            [
                MessageType::Discover,
                MessageType::Request,
                MessageType::Decline,
                MessageType::Discover,
                MessageType::Request
            ]
            .map(Some),
        );
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
        let first = offered_address(&[0, 0, 0, 0, 0, 5]);
        let (client, server, seen) = test_client_with(Behaviour::default(), vec![first]);
        let req = LeaseRequest {
            arp_probe: None,
            ..request(5)
        };
        let lease = client.acquire(&req).await.unwrap();
        assert_eq!(lease.address, first, "no probe, so nothing to decline");
        let types: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.msg.opts().msg_type())
            .collect();
        assert_eq!(
            types,
            [MessageType::Discover, MessageType::Request].map(Some)
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
        let (client, server, _seen) = test_client_with(Behaviour::default(), taken);
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
}
