//! The client's counters: [`DhcpStats`] (the API's wire type, as
//! `GET /v1/dhcp`, `/metrics` and logs show them) and the atomics the
//! exchanges bump.

use std::sync::atomic::{AtomicU64, Ordering};

pub use lanlink_api::{DhcpEvents, DhcpStats};

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
