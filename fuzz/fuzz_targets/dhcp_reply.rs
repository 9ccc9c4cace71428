//! A server's reply as the agent's DHCP client receives it (input: an
//! Ethernet frame, or a bare DHCP message), through the client's receive
//! path and exchanges (`lanlink_agent::dhcp::fuzz_reply`: frame and message
//! parsing, the OFFER test, the lease an ACK grants), then the lease through
//! its persisted form and the renew/rebind/expire schedule.
//!
//! Checks: nothing panics or hangs; a lease has a usable address, a prefix
//! of at most 32 and `T1 <= T2 <= lease time`; it survives the state file's
//! form unchanged; the lease machine's invariants (`lanlink_fuzz::drive_lease`)
//! hold whatever the server answers to the renewals.
#![no_main]

use lanlink_agent::dhcp::fuzz_reply;
use lanlink_agent::state::v1;
use libfuzzer_sys::fuzz_target;

/// When the request was sent: an ordinary time, the epoch, and the end of
/// time (the timers must saturate, not wrap).
const REQUESTED_AT: [u64; 3] = [1_780_000_000, 0, u64::MAX - 100];

fuzz_target!(|data: &[u8]| {
    for requested_at in REQUESTED_AT {
        let Some(reply) = fuzz_reply(data, requested_at) else {
            return;
        };
        if let Some(offer) = reply.offer {
            assert!(
                !(offer.is_unspecified() || offer.is_broadcast() || offer.is_multicast()),
                "an unusable offer {offer} taken"
            );
        }
        let Some(lease) = reply.lease else {
            continue;
        };
        assert!(!reply.nak, "a NAK made a lease");
        assert!(lease.prefix_len <= 32, "prefix /{}", lease.prefix_len);
        assert!(
            lease.t1_secs <= lease.t2_secs && lease.t2_secs <= lease.lease_secs,
            "timers out of order: {lease:?}"
        );
        let a = lease.address;
        assert!(!(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback()));
        // The state file's form of the lease, through JSON.
        let stored = serde_json::to_vec(&v1::Lease::from(&lease)).expect("a lease serializes");
        let back: v1::Lease = serde_json::from_slice(&stored).expect("a stored lease loads");
        assert_eq!(lanlink_agent::dhcp::Lease::from(back), lease);
        lanlink_fuzz::drive_lease(&lease, data.get(..16).unwrap_or(data));
    }
});
