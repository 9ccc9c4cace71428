//! Property tests of [`LeaseMachine`]'s transitions (proptest): the agent's
//! renewal loop (`agent/renew.rs`) is modelled over random leases and random
//! event sequences — the clock running (with early wake-ups, as the agent
//! re-polls at least hourly), renewals answered by an ACK, a NAK or nothing,
//! agent restarts (a new machine from the persisted lease) and a RELEASE —
//! and after every step:
//!
//! - the lease is lost (`Expire`) only after a NAK or at/after its expiry:
//!   no reachable state drops a lease without a RELEASE or an expiry;
//! - a `Wait` never sleeps past the lease's next boundary (T1 while bound,
//!   T2 while renewing, the expiry while rebinding), and always moves on;
//! - a renewal is unicast before T2 and broadcast (rebinding) from T2 on,
//!   with a timeout that ends by the next boundary;
//! - a restart resumes in the same phase (nothing held in memory only,
//!   except a NAK, which the agent acts on at once).
//!
//! And with no server at all, the machine tries in `[T1, T2)` and again in
//! `[T2, expiry)` before it gives the lease up.

use std::net::Ipv4Addr;
use std::time::Duration;

use proptest::prelude::*;

use super::lease::{Lease, LeaseAction, LeaseMachine, LeasePhase, RenewPolicy};

/// A lease with these timers (the rest as a real one).
fn lease(obtained_at_unix: u64, lease_secs: u32, t1_secs: u32, t2_secs: u32) -> Lease {
    Lease {
        mac: [2, 0, 0, 0, 0, 1],
        client_id: vec![0xff, 1, 2, 3, 4],
        hostname: Some("pod".into()),
        address: Ipv4Addr::new(198, 18, 0, 150),
        prefix_len: 24,
        server_id: Ipv4Addr::new(198, 18, 0, 1),
        server_mac: [2, 0, 0, 0, 0, 2],
        router: Some(Ipv4Addr::new(198, 18, 0, 1)),
        classless_routes: vec![],
        dns: vec![],
        domain: None,
        search: vec![],
        mtu: None,
        lease_secs,
        t1_secs,
        t2_secs,
        obtained_at_unix,
    }
}

/// Leases as servers grant them (`T1 <= T2 <= lease`, what
/// `wire::lease_from_ack` makes), infinite ones, and, from old or
/// hand-edited state files, timers in any order.
fn any_lease() -> impl Strategy<Value = Lease> {
    let obtained = prop_oneof![
        4 => 1_000_000_000u64..2_000_000_000,
        1 => Just(0u64),
        1 => (u64::MAX - 10_000)..=u64::MAX,
    ];
    let secs = prop_oneof![
        4 => 0u32..100_000,
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ];
    (obtained, secs, any::<u32>(), any::<u32>(), any::<bool>()).prop_map(
        |(obtained, secs, a, b, ordered)| {
            if ordered && secs != u32::MAX {
                let (x, y) = (
                    a % (secs.saturating_add(1).max(1)),
                    b % (secs.saturating_add(1).max(1)),
                );
                lease(obtained, secs, x.min(y), x.max(y))
            } else if secs == u32::MAX {
                lease(obtained, secs, u32::MAX, u32::MAX)
            } else {
                lease(obtained, secs, a, b)
            }
        },
    )
}

/// What happens next in the agent's loop.
#[derive(Clone, Debug)]
enum Event {
    /// The agent wakes: at the machine's time, or after `after` seconds
    /// when that is sooner (the agent re-polls at least hourly).
    Wake { after: u64 },
    /// The server answers the renewal with an ACK granting `lease_secs`
    /// (timers as the server sets them), after `rtt` seconds.
    Ack { lease_secs: u32, rtt: u64 },
    /// The server refuses the renewal.
    Nak,
    /// No answer within the attempt's timeout.
    NoAnswer,
    /// The agent is killed and restarted: a new machine from the
    /// persisted lease.
    Restart,
    /// DEL: the lease is released; the run ends.
    Release,
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => prop_oneof![Just(u64::MAX), 1u64..=3600].prop_map(|after| Event::Wake { after }),
        2 => (0u32..200_000, 0u64..10).prop_map(|(lease_secs, rtt)| Event::Ack { lease_secs, rtt }),
        1 => Just(Event::Nak),
        6 => Just(Event::NoAnswer),
        1 => Just(Event::Restart),
        1 => Just(Event::Release),
    ]
}

/// The boundary a wait must not sleep past in `phase`.
fn boundary(lease: &Lease, phase: LeasePhase) -> u64 {
    match phase {
        LeasePhase::Bound => lease.t1_at_unix(),
        LeasePhase::Renewing => lease.t2_at_unix(),
        LeasePhase::Rebinding | LeasePhase::Expired => lease.expires_at_unix(),
    }
}

/// Runs the model; `Err` names the broken property.
fn run_model(first: Lease, events: &[Event]) -> Result<(), TestCaseError> {
    let policy = RenewPolicy::default();
    // What the state file holds: the last acknowledged lease.
    let mut persisted = first.clone();
    let mut machine = LeaseMachine::new(first.clone(), policy);
    let mut now = first.obtained_at_unix;
    let mut refused = false;
    for event in events {
        let current = machine.lease().clone();
        prop_assert_eq!(
            &current,
            &persisted,
            "the machine tracks another lease than the file"
        );
        let phase = machine.phase(now);
        if !refused {
            prop_assert_eq!(phase, current.phase_at(now), "the phase is not the timers'");
        }
        match machine.poll(now) {
            LeaseAction::Expire => {
                prop_assert!(
                    refused || now >= current.expires_at_unix(),
                    "lease lost at {} before its expiry at {} without a NAK",
                    now,
                    current.expires_at_unix()
                );
                return Ok(());
            }
            LeaseAction::Wait { until_unix } => {
                prop_assert!(until_unix > now, "a wait until {} at {}", until_unix, now);
                prop_assert!(
                    current.is_infinite() || until_unix <= current.expires_at_unix(),
                    "sleeps until {}, past the expiry at {}",
                    until_unix,
                    current.expires_at_unix()
                );
                prop_assert!(
                    until_unix <= boundary(&current, phase),
                    "sleeps until {} past the {:?} boundary {}",
                    until_unix,
                    phase,
                    boundary(&current, phase)
                );
                match event {
                    Event::Release => return Ok(()),
                    Event::Restart => machine = LeaseMachine::new(persisted.clone(), policy),
                    Event::Wake { after } if until_unix != u64::MAX => {
                        now = until_unix.min(now.saturating_add(*after));
                    }
                    Event::Wake { .. } => return Ok(()),
                    // An answer to nothing: ignored, as the client drops
                    // replies without a transaction.
                    _ => {}
                }
            }
            LeaseAction::Renew { rebinding, timeout } => {
                prop_assert!(
                    phase == LeasePhase::Renewing || phase == LeasePhase::Rebinding,
                    "renews in phase {:?}",
                    phase
                );
                prop_assert_eq!(rebinding, phase == LeasePhase::Rebinding);
                prop_assert!(timeout > Duration::ZERO && timeout <= policy.attempt_timeout);
                let deadline = boundary(&current, phase).max(now + 1);
                prop_assert!(
                    now + timeout.as_secs() <= deadline,
                    "an attempt at {} of {:?} runs past {}",
                    now,
                    timeout,
                    deadline
                );
                match event {
                    Event::Ack { lease_secs, rtt } => {
                        let rtt = (*rtt).min(timeout.as_secs());
                        // The lease counts from the request (RFC 2131 4.4.1).
                        let mut renewed = current.clone();
                        renewed.obtained_at_unix = now;
                        renewed.lease_secs = *lease_secs;
                        renewed.t1_secs = lease_secs / 2;
                        renewed.t2_secs = (u64::from(*lease_secs) * 7 / 8) as u32;
                        now += rtt;
                        persisted = renewed.clone();
                        machine.on_ack(renewed);
                        refused = false;
                    }
                    Event::Nak => {
                        machine.on_nak();
                        refused = true;
                    }
                    Event::Release => return Ok(()),
                    Event::Restart => machine = LeaseMachine::new(persisted.clone(), policy),
                    Event::NoAnswer | Event::Wake { .. } => {
                        now += timeout.as_secs();
                        machine.on_no_reply(now, rebinding);
                    }
                }
            }
        }
        // A restart resumes where the clock says (a NAK is acted on at once,
        // so it is the one thing not carried over).
        if !refused {
            let resumed = LeaseMachine::new(persisted.clone(), policy);
            prop_assert_eq!(
                resumed.phase(now),
                machine.phase(now),
                "a restart changes the phase"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_lease_is_lost_only_by_a_nak_or_its_expiry(
        first in any_lease(),
        events in prop::collection::vec(any_event(), 1..200),
    ) {
        run_model(first, &events)?;
    }

    #[test]
    fn without_a_server_it_renews_then_rebinds_before_giving_up(
        obtained in 1_000_000_000u64..2_000_000_000,
        secs in 1u32..10_000_000,
        after in prop::collection::vec(prop_oneof![Just(u64::MAX), 600u64..=3600], 64),
    ) {
        let l = lease(obtained, secs, secs / 2, (u64::from(secs) * 7 / 8) as u32);
        let mut machine = LeaseMachine::new(l.clone(), RenewPolicy::default());
        let mut now = obtained;
        let (mut renewed, mut rebound) = (false, false);
        for step in 0..100_000 {
            match machine.poll(now) {
                LeaseAction::Wait { until_unix } => {
                    now = until_unix.min(now.saturating_add(after[step % after.len()]));
                }
                LeaseAction::Renew { rebinding, timeout } => {
                    prop_assert!(now >= l.t1_at_unix() && now < l.expires_at_unix());
                    renewed |= !rebinding;
                    rebound |= rebinding;
                    now += timeout.as_secs();
                    machine.on_no_reply(now, rebinding);
                }
                LeaseAction::Expire => {
                    prop_assert!(now >= l.expires_at_unix(), "expired early at {}", now);
                    prop_assert!(
                        renewed || l.t1_secs == l.t2_secs,
                        "never renewed between T1 and T2"
                    );
                    prop_assert!(rebound || l.t2_secs == l.lease_secs, "never rebound before expiry");
                    return Ok(());
                }
            }
        }
        prop_assert!(false, "the schedule did not end in 100,000 polls");
    }
}

/// Regression: the state file the `state_file` fuzz target crashed on
/// (`fuzz/regressions/state_file/t1-past-expiry.json`, also in its corpus: a lease whose T1 and
/// T2 lie past its expiry). Loaded as the agent loads it, its lease is
/// renewed before it expires and never waited on past its expiry.
#[test]
fn the_fuzzed_state_file_with_timers_past_the_expiry() {
    let bytes = include_bytes!("../../../fuzz/regressions/state_file/t1-past-expiry.json");
    let state = crate::state::decode(std::path::Path::new("endpoints.json"), bytes)
        .expect("the file loads");
    let lease = state
        .endpoints
        .values()
        .find_map(|ep| ep.lease.clone())
        .expect("it holds a lease");
    assert!(
        lease.t1_secs > lease.lease_secs,
        "the input still has T1 past the expiry"
    );
    let machine = LeaseMachine::new(lease.clone(), RenewPolicy::default());
    let LeaseAction::Wait { until_unix } = machine.poll(lease.obtained_at_unix) else {
        panic!("a fresh lease waits");
    };
    assert!(
        until_unix < lease.expires_at_unix(),
        "waits until {until_unix}, the expiry"
    );
    assert!(matches!(
        machine.poll(until_unix),
        LeaseAction::Renew {
            rebinding: false,
            ..
        }
    ));
}
