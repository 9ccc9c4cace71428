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
//!
//! This module drives the exchanges (acquire, renew, release); `exchange`
//! holds the transactions, the receive loop and the sending of each message,
//! `stats` the counters.

mod exchange;
mod stats;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::MessageType;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::arp::ArpProbe;
use super::error::{DhcpError, Mac};
use super::lease::Lease;
use super::socket::PacketSocket;
use super::wire::{self, BROADCAST_MAC, ClientIdentity, FrameAddrs, LeaseOwner, Outgoing};
use exchange::{Handle, Prober, Shared, receive_loop};
use stats::{Counters, bump};
pub use stats::{DhcpEvents, DhcpStats};

/// How many times a DHCPRELEASE whose send fails is tried.
const RELEASE_TRIES: u32 = 5;

/// The pause between those tries.
const RELEASE_RETRY: Duration = Duration::from_millis(300);

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
    /// Told, and awaited, before the first REQUEST for an offered address.
    pub on_request: OnRequest,
}

/// The lease a REQUEST is about to ask for, as far as the OFFER tells it
/// (address, server, the server's MAC; no timers), handed to a hook before
/// the REQUEST leaves: from then on the server may bind the address, so a
/// caller that can die before the ACK is processed (SIGKILL during the ARP
/// probe) records it, and whoever cleans up after it releases it.
pub type RequestHook =
    dyn Fn(Lease) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// An optional [`RequestHook`].
#[derive(Clone, Default)]
pub struct OnRequest(pub Option<std::sync::Arc<RequestHook>>);

impl PartialEq for OnRequest {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl std::fmt::Debug for OnRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "OnRequest(hook)"
        } else {
            "OnRequest(none)"
        })
    }
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
                    .transmit_lossy(&id, &tx, start, Outgoing::Discover, &broadcast)
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

            // REQUESTING: the caller hears of the address first.
            if let Some(hook) = &req.on_request.0 {
                hook(Lease {
                    mac: req.mac,
                    client_id: req.client_id.clone(),
                    hostname: req.hostname.clone(),
                    address: requested,
                    prefix_len: 32,
                    server_id,
                    server_mac: offer.src_mac,
                    router: None,
                    classless_routes: Vec::new(),
                    dns: Vec::new(),
                    domain: None,
                    search: Vec::new(),
                    mtu: None,
                    lease_secs: 0,
                    t1_secs: 0,
                    t2_secs: 0,
                    obtained_at_unix: unix_now(),
                })
                .await;
            }
            let kind = Outgoing::RequestSelecting {
                requested,
                server_id,
            };
            for attempt in 0..shared.config.request_attempts {
                if Instant::now() >= deadline {
                    break 'restart;
                }
                let requested_at = unix_now();
                shared
                    .transmit_lossy(&id, &tx, start, kind, &broadcast)
                    .await?;
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
                                            .transmit_lossy(&id, &tx, start, decline, &broadcast)
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
            shared.transmit_lossy(&id, &tx, start, kind, &addrs).await?;
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
        // A RELEASE is sent once and never answered: a send refused right
        // after an uplink flap would lose it, so it is tried a few times.
        let mut tries = 0;
        loop {
            tries += 1;
            match shared
                .transmit(&id, &tx, Instant::now(), kind, &addrs)
                .await
            {
                Ok(()) => break,
                Err(e @ DhcpError::Send { .. }) if tries < RELEASE_TRIES => {
                    warn!(uplink = %shared.uplink, error = %format!("{e:#}"), "dhcp release send failed; trying again");
                    tokio::time::sleep(RELEASE_RETRY).await;
                }
                Err(e) => return Err(e),
            }
        }
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
        self.handle.shared.counters.snapshot()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
