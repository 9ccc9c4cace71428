//! The exchanges of [`DhcpClient`](super::DhcpClient) on the wire: the
//! transactions waiting for replies by xid, the receive loop that routes
//! every reply to its transaction, and the building and sending of each
//! message.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dhcproto::v4::MessageType;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::stats::{Counters, bump};
use super::{DhcpConfig, LeaseRequest};
use crate::dhcp::arp;
use crate::dhcp::error::{DhcpError, Mac};
use crate::dhcp::socket::{PacketSocket, RECV_BUF_LEN};
use crate::dhcp::wire::{self, ClientIdentity, FrameAddrs, MessageParams, Outgoing, Reply};

/// A reply routed to a transaction.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) reply: Reply,
    /// Ethernet source: the server, or the relay in front of it.
    pub(super) src_mac: [u8; 6],
    /// IPv4 source, the server id of last resort.
    pub(super) src_ip: Ipv4Addr,
}

/// A transaction's registration: the pod MAC its replies carry.
pub(super) struct Waiter {
    mac: [u8; 6],
    tx: mpsc::Sender<Incoming>,
}

/// Replies a transaction can have queued; more are counted as dropped.
const QUEUE_DEPTH: usize = 8;

/// How acquired addresses are checked for conflicts.
#[derive(Debug)]
pub(super) enum Prober {
    /// ARP probes on the uplink with this ifindex.
    Uplink { ifindex: u32 },
    /// Unit tests: these addresses are in use (by a fixed MAC).
    #[cfg(test)]
    InUse(Vec<Ipv4Addr>),
}

/// What every clone of the client shares: the socket, the open
/// transactions, the counters.
pub(super) struct Shared {
    pub(super) socket: PacketSocket,
    pub(super) uplink: String,
    pub(super) config: DhcpConfig,
    pub(super) prober: Prober,
    pub(super) waiters: Mutex<HashMap<u32, Waiter>>,
    pub(super) counters: Counters,
}

/// Ends the receive task when the last [`DhcpClient`] clone goes away.
pub(super) struct Handle {
    pub(super) shared: Arc<Shared>,
    pub(super) rx_task: tokio::task::AbortHandle,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.rx_task.abort();
    }
}

/// One open exchange: its xid stays registered until this is dropped, also
/// when the caller's future is cancelled.
pub(super) struct Transaction<'a> {
    shared: &'a Shared,
    pub(super) xid: u32,
    rx: mpsc::Receiver<Incoming>,
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.shared.waiters().remove(&self.xid);
    }
}

impl Shared {
    pub(super) fn waiters(&self) -> MutexGuard<'_, HashMap<u32, Waiter>> {
        // A panic elsewhere cannot leave the map inconsistent: every
        // critical section is a single insert, remove or lookup.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a fresh random xid for `mac`.
    pub(super) fn begin(&self, mac: [u8; 6]) -> Transaction<'_> {
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
    pub(super) async fn in_use(&self, req: &LeaseRequest, ip: Ipv4Addr) -> Option<[u8; 6]> {
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
    pub(super) fn retransmit_interval(&self, attempt: usize) -> Duration {
        let base = self
            .config
            .initial_retransmit
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.config.max_retransmit);
        base.mul_f64(rand::random_range(0.875..1.125))
    }

    /// Builds and sends one message of `tx`'s transaction.
    /// [`Self::transmit`] for a message that is retransmitted anyway
    /// (DISCOVER, REQUEST, DECLINE): a failed send is logged and counted
    /// like a lost frame, and the exchange goes on to its next
    /// retransmission instead of failing the whole ADD or renewal. A link
    /// that just came back (carrier not yet up, a queue still stopped)
    /// refuses the first frames after a flap. Other errors (a message that
    /// cannot be built) still fail.
    pub(super) async fn transmit_lossy(
        &self,
        id: &ClientIdentity<'_>,
        tx: &Transaction<'_>,
        start: Instant,
        kind: Outgoing,
        addrs: &FrameAddrs,
    ) -> Result<(), DhcpError> {
        match self.transmit(id, tx, start, kind, addrs).await {
            Err(e @ DhcpError::Send { .. }) => {
                warn!(uplink = %self.uplink, error = %format!("{e:#}"), "dhcp send failed; retransmitting");
                Ok(())
            }
            other => other,
        }
    }

    pub(super) async fn transmit(
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
    pub(super) async fn next_until(&mut self, until: Instant) -> Option<Incoming> {
        tokio::time::timeout_at(until, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The first reply before `until` that `accept` takes; others are logged
    /// and skipped.
    pub(super) async fn wait_for(
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
pub(super) async fn receive_loop(shared: Arc<Shared>) {
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
