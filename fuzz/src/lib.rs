//! Helpers shared by the fuzz targets: the lease-machine driver (a lease
//! from a DHCP reply or from the state file goes through the same schedule)
//! and the input splitting of the netconf target.

use std::time::Duration;

use lanlink_agent::dhcp::{Lease, LeaseAction, LeaseMachine, LeasePhase, RenewPolicy};

/// The most polls one lease is driven through. With the RFC 2131 back-off
/// (half the time left, at least 60 s) a lease of any length needs far
/// fewer: reaching this bound is a hang.
const MAX_STEPS: usize = 4096;

/// Drives `lease` through its schedule from the moment it was obtained,
/// answering each renewal attempt as `choices` says (cycled: 0 no answer,
/// 1 ACK of the same lease re-based at that moment, 2 NAK, anything else no
/// answer), and checks at every step:
/// - a `Wait` moves the clock forward (no busy loop) and never past the
///   expiry;
/// - a `Renew` has a non-zero timeout and rebinds exactly past T2;
/// - `Expire` comes only after a NAK or at/after the expiry time: the lease
///   is never lost otherwise;
/// - the schedule ends (expiry or an infinite wait) within [`MAX_STEPS`].
pub fn drive_lease(lease: &Lease, choices: &[u8]) {
    let policy = RenewPolicy::default();
    let mut machine = LeaseMachine::new(lease.clone(), policy);
    let mut now = lease.obtained_at_unix;
    let mut nak = false;
    let mut acks = 0usize;
    for step in 0..MAX_STEPS {
        let current = machine.lease().clone();
        match machine.poll(now) {
            LeaseAction::Wait { until_unix } => {
                assert!(
                    until_unix > now,
                    "wait until {until_unix} at {now}: the clock would not move ({current:?})"
                );
                // Sleeping past the expiry keeps an address the server may
                // already have given to another host.
                assert!(
                    current.is_infinite() || until_unix <= current.expires_at_unix(),
                    "sleeps until {until_unix}, past the expiry at {} ({current:?})",
                    current.expires_at_unix()
                );
                if until_unix == u64::MAX {
                    return;
                }
                now = until_unix;
            }
            LeaseAction::Renew { rebinding, timeout } => {
                assert!(timeout > Duration::ZERO, "a zero renewal timeout at {now}");
                assert_eq!(
                    rebinding,
                    now >= current.t2_at_unix(),
                    "rebinding at {now} with T2 at {}",
                    current.t2_at_unix()
                );
                let choice = if choices.is_empty() {
                    0
                } else {
                    choices[step % choices.len()]
                };
                let answered_at = now.saturating_add(timeout.as_secs());
                match choice {
                    // Bounded: a server that ACKs forever keeps the lease
                    // forever, which is correct but would not end the run.
                    1 if acks < 8 => {
                        acks += 1;
                        let mut renewed = current.clone();
                        renewed.obtained_at_unix = now;
                        machine.on_ack(renewed);
                    }
                    2 => {
                        nak = true;
                        machine.on_nak();
                    }
                    _ => machine.on_no_reply(answered_at, rebinding),
                }
                now = now.max(answered_at.min(current.expires_at_unix()));
            }
            LeaseAction::Expire => {
                let lease = machine.lease();
                assert!(
                    nak || now >= lease.expires_at_unix(),
                    "lease lost at {now} before its expiry at {} without a NAK ({lease:?})",
                    lease.expires_at_unix()
                );
                assert_eq!(machine.phase(now), LeasePhase::Expired);
                return;
            }
        }
    }
    panic!("the lease schedule did not end within {MAX_STEPS} polls ({lease:?})");
}

/// Splits a netconf-target input at its first NUL: `KEY=VALUE` lines of the
/// environment before, the netconf (stdin) after. Without a NUL the whole
/// input is the netconf.
pub fn split_env(data: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let (env, stdin) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let vars = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (vars, stdin)
}
