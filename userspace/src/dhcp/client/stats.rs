//! The client's counters: [`DhcpStats`] as `/metrics` and logs show them,
//! and the atomics the exchanges bump.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

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

/// The live counters behind [`DhcpStats`].
#[derive(Default)]
pub(super) struct Counters {
    pub(super) sent_discover: AtomicU64,
    pub(super) sent_request: AtomicU64,
    pub(super) sent_release: AtomicU64,
    pub(super) sent_decline: AtomicU64,
    pub(super) received_offer: AtomicU64,
    pub(super) received_ack: AtomicU64,
    pub(super) received_nak: AtomicU64,
    pub(super) received_other: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) unmatched: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) send_errors: AtomicU64,
    pub(super) recv_errors: AtomicU64,
    pub(super) acquired: AtomicU64,
    pub(super) renewed: AtomicU64,
    pub(super) rebound: AtomicU64,
    pub(super) released: AtomicU64,
    pub(super) expired: AtomicU64,
    pub(super) nak: AtomicU64,
    pub(super) declined: AtomicU64,
    pub(super) acquire_failures: AtomicU64,
    pub(super) renew_failures: AtomicU64,
    pub(super) probe_errors: AtomicU64,
}

/// Adds one; returns the count before.
pub(super) fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed)
}

impl Counters {
    /// The counters now.
    pub(super) fn snapshot(&self) -> DhcpStats {
        let c = self;
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
