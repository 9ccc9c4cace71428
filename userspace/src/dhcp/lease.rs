//! The [`Lease`] a pod holds and the sans-IO schedule that keeps it alive:
//! [`LeaseMachine`] says when to renew (T1, unicast), when to rebind (T2,
//! broadcast) and when the lease has expired (RFC 2131 4.4.5). It reads no
//! clock and sends nothing: the agent feeds it the time and the outcome of
//! each [`DhcpClient::renew`](super::DhcpClient::renew), which keeps it
//! testable with a fake clock.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A lease granted by the LAN's DHCP server for one pod interface. The
/// state file keeps it in its own versioned form ([`crate::state::v1::Lease`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Lease {
    /// The pod MAC the lease is bound to (chaddr).
    pub mac: [u8; 6],
    /// The client identifier sent in option 61.
    pub client_id: Vec<u8>,
    /// The hostname sent in option 12.
    pub hostname: Option<String>,
    /// The leased address (yiaddr).
    pub address: Ipv4Addr,
    /// From option 1; classful default when the server sent no mask.
    pub prefix_len: u8,
    /// Option 54 of the ACK: where renewals and the release go.
    pub server_id: Ipv4Addr,
    /// Ethernet source of the ACK: the server's MAC, or the relay's for an
    /// off-link server; the destination MAC of unicast renewals and release.
    pub server_mac: [u8; 6],
    /// The first router of option 3, kept even when option 121 is present.
    pub router: Option<Ipv4Addr>,
    /// Option 121 as (destination, prefix length, gateway). When present,
    /// RFC 3442 says option 3 must not be used for routes.
    pub classless_routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15, without a trailing dot.
    pub domain: Option<String>,
    /// Option 119, without trailing dots.
    pub search: Vec<String>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 51; `u32::MAX` is an infinite lease.
    pub lease_secs: u32,
    /// Seconds after `obtained_at_unix` to start renewing (T1).
    pub t1_secs: u32,
    /// Seconds after `obtained_at_unix` to start rebinding (T2).
    pub t2_secs: u32,
    /// Unix time (seconds) the acknowledged request was sent; all timers
    /// count from here.
    pub obtained_at_unix: u64,
}

impl Lease {
    /// Whether the server granted the address forever (option 51 = 0xffffffff).
    pub fn is_infinite(&self) -> bool {
        self.lease_secs == u32::MAX
    }

    /// When renewing starts (T1), unix seconds; `u64::MAX` for an infinite lease.
    pub fn t1_at_unix(&self) -> u64 {
        self.at(self.timers().0)
    }

    /// When rebinding starts (T2), unix seconds; `u64::MAX` for an infinite lease.
    pub fn t2_at_unix(&self) -> u64 {
        self.at(self.timers().1)
    }

    /// T1 and T2 in order (`T1 <= T2 <= lease`), by the rule applied to an
    /// ACK's options: a lease read back from the state file may carry
    /// timers out of order, and a T1 past the expiry would sleep through
    /// it without renewing, keeping an address the server may have given
    /// away (found by fuzzing the state loader).
    fn timers(&self) -> (u32, u32) {
        super::wire::timers(self.lease_secs, Some(self.t1_secs), Some(self.t2_secs))
    }

    /// When the lease expires, unix seconds; `u64::MAX` for an infinite lease.
    pub fn expires_at_unix(&self) -> u64 {
        self.at(self.lease_secs)
    }

    fn at(&self, secs: u32) -> u64 {
        if self.is_infinite() {
            u64::MAX
        } else {
            self.obtained_at_unix.saturating_add(u64::from(secs))
        }
    }

    /// The phase of the lease at `now_unix`, from its timers alone.
    pub fn phase_at(&self, now_unix: u64) -> LeasePhase {
        if now_unix >= self.expires_at_unix() {
            LeasePhase::Expired
        } else if now_unix >= self.t2_at_unix() {
            LeasePhase::Rebinding
        } else if now_unix >= self.t1_at_unix() {
            LeasePhase::Renewing
        } else {
            LeasePhase::Bound
        }
    }
}

/// Where a lease is in its life (RFC 2131 figure 5, client side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeasePhase {
    /// Valid and before T1.
    Bound,
    /// Past T1: renew with the granting server by unicast.
    Renewing,
    /// Past T2: rebind with any server by broadcast.
    Rebinding,
    /// Past the lease time, or refused by a DHCPNAK: the address must go.
    Expired,
}

impl LeasePhase {
    /// `bound`, `renewing`, `rebinding` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            LeasePhase::Bound => "bound",
            LeasePhase::Renewing => "renewing",
            LeasePhase::Rebinding => "rebinding",
            LeasePhase::Expired => "expired",
        }
    }
}

/// What the agent should do next for one lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// Nothing until this unix time (`u64::MAX`: never, an infinite lease).
    Wait {
        /// When to poll again.
        until_unix: u64,
    },
    /// Call [`DhcpClient::renew`](super::DhcpClient::renew) now with these
    /// arguments, then report the outcome with [`LeaseMachine::on_ack`],
    /// [`LeaseMachine::on_no_reply`] or [`LeaseMachine::on_nak`] before
    /// polling again.
    Renew {
        /// Broadcast to any server (past T2) instead of unicast to ours.
        rebinding: bool,
        /// How long this attempt may wait for an answer.
        timeout: Duration,
    },
    /// The lease is gone: remove the pod's address, mark the endpoint, log.
    Expire,
}

/// Retransmission policy while renewing and rebinding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenewPolicy {
    /// Shortest wait between two attempts; RFC 2131 4.4.5 says 60 s.
    pub min_retry: Duration,
    /// Longest time one attempt waits for an answer.
    pub attempt_timeout: Duration,
}

impl Default for RenewPolicy {
    fn default() -> Self {
        RenewPolicy {
            min_retry: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// The renew/rebind/expire schedule of one lease, driven by a clock the
/// caller owns. After a restart, build it from the persisted lease: it picks
/// up in whatever phase the clock says, with no new DISCOVER.
#[derive(Clone, Debug)]
pub struct LeaseMachine {
    lease: Lease,
    policy: RenewPolicy,
    /// Earliest time of the next renew or rebind attempt.
    next_attempt_unix: u64,
    /// Set by a DHCPNAK: expired whatever the timers say.
    refused: bool,
}

impl LeaseMachine {
    /// Starts tracking `lease`.
    pub fn new(lease: Lease, policy: RenewPolicy) -> Self {
        let next_attempt_unix = lease.t1_at_unix();
        LeaseMachine {
            lease,
            policy,
            next_attempt_unix,
            refused: false,
        }
    }

    /// The lease as last acknowledged.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The phase at `now_unix`.
    pub fn phase(&self, now_unix: u64) -> LeasePhase {
        if self.refused {
            LeasePhase::Expired
        } else {
            self.lease.phase_at(now_unix)
        }
    }

    /// What to do at `now_unix`.
    pub fn poll(&self, now_unix: u64) -> LeaseAction {
        let phase = self.phase(now_unix);
        let boundary = match phase {
            LeasePhase::Expired => return LeaseAction::Expire,
            LeasePhase::Bound => {
                return LeaseAction::Wait {
                    until_unix: self.lease.t1_at_unix(),
                };
            }
            LeasePhase::Renewing => self.lease.t2_at_unix(),
            LeasePhase::Rebinding => self.lease.expires_at_unix(),
        };
        if now_unix < self.next_attempt_unix {
            return LeaseAction::Wait {
                until_unix: self.next_attempt_unix.min(boundary),
            };
        }
        // Never wait past the next boundary: at T2 the client must switch to
        // broadcast, at expiry it must give the address up.
        let left = Duration::from_secs(boundary.saturating_sub(now_unix).max(1));
        LeaseAction::Renew {
            rebinding: phase == LeasePhase::Rebinding,
            timeout: self.policy.attempt_timeout.min(left),
        }
    }

    /// A renewal or rebinding was acknowledged: track the new lease.
    pub fn on_ack(&mut self, lease: Lease) {
        *self = LeaseMachine::new(lease, self.policy);
    }

    /// An attempt got no answer by `now_unix`: wait half the time left until
    /// the next boundary (T2, or expiry while rebinding), but at least
    /// `min_retry`, and never past the boundary (RFC 2131 4.4.5).
    /// `rebinding` is the failed attempt's: a renewal that ran into T2 is
    /// followed by a rebinding at once, as the boundary changed the question
    /// (any server, not ours).
    pub fn on_no_reply(&mut self, now_unix: u64, rebinding: bool) {
        let boundary = match self.phase(now_unix) {
            LeasePhase::Renewing => self.lease.t2_at_unix(),
            LeasePhase::Rebinding if !rebinding => {
                self.next_attempt_unix = now_unix;
                return;
            }
            LeasePhase::Rebinding => self.lease.expires_at_unix(),
            LeasePhase::Bound | LeasePhase::Expired => return,
        };
        let half = boundary.saturating_sub(now_unix) / 2;
        let wait = half.max(self.policy.min_retry.as_secs().max(1));
        self.next_attempt_unix = now_unix.saturating_add(wait).min(boundary);
    }

    /// The server refused the lease (DHCPNAK): it is expired now.
    pub fn on_nak(&mut self) {
        self.refused = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(obtained: u64, secs: u32) -> Lease {
        Lease {
            mac: [2, 0, 0, 0, 0, 1],
            client_id: vec![0xff, 1],
            hostname: None,
            address: Ipv4Addr::new(198, 18, 0, 150),
            prefix_len: 24,
            server_id: Ipv4Addr::new(198, 18, 0, 1),
            server_mac: [2, 0, 0, 0, 0, 2],
            router: None,
            classless_routes: vec![],
            dns: vec![],
            domain: None,
            search: vec![],
            mtu: None,
            lease_secs: secs,
            t1_secs: secs / 2,
            t2_secs: secs / 8 * 7,
            obtained_at_unix: obtained,
        }
    }

    fn policy() -> RenewPolicy {
        RenewPolicy {
            min_retry: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(4),
        }
    }

    #[test]
    fn renews_at_t1_rebinds_at_t2_expires_on_time() {
        // 120 s lease from t=1000: T1 1060, T2 1105, expiry 1120.
        let mut m = LeaseMachine::new(lease(1000, 120), policy());
        assert_eq!(m.poll(1000), LeaseAction::Wait { until_unix: 1060 });
        assert_eq!(m.phase(1059), LeasePhase::Bound);
        let renew = LeaseAction::Renew {
            rebinding: false,
            timeout: Duration::from_secs(4),
        };
        assert_eq!(m.poll(1060), renew);
        m.on_no_reply(1064, false); // 41 s to T2: retry after 20 s
        assert_eq!(m.poll(1070), LeaseAction::Wait { until_unix: 1084 });
        assert_eq!(m.poll(1084), renew);
        m.on_no_reply(1088, false); // 17 s to T2, half is 8: min_retry 10 wins
        assert_eq!(m.poll(1090), LeaseAction::Wait { until_unix: 1098 });
        assert_eq!(m.poll(1098), renew);
        m.on_no_reply(1102, false); // 3 s to T2: clamped to T2
        assert_eq!(m.poll(1103), LeaseAction::Wait { until_unix: 1105 });
        assert_eq!(m.phase(1105), LeasePhase::Rebinding);
        assert_eq!(
            m.poll(1105),
            LeaseAction::Renew {
                rebinding: true,
                timeout: Duration::from_secs(4),
            }
        );
        m.on_no_reply(1109, true); // 11 s to expiry
        assert_eq!(m.poll(1110), LeaseAction::Wait { until_unix: 1119 });
        assert_eq!(
            m.poll(1119),
            LeaseAction::Renew {
                rebinding: true,
                timeout: Duration::from_secs(1),
            }
        );
        m.on_no_reply(1120, true);
        assert_eq!(m.poll(1120), LeaseAction::Expire);
        assert_eq!(m.phase(1120), LeasePhase::Expired);
    }

    #[test]
    fn a_renewal_that_runs_into_t2_is_followed_by_a_rebinding() {
        // 10 s lease from t=1000: T1 1005, T2 1007, expiry 1010 (short leases
        // as a lab server hands out); the 60 s minimum retry cannot apply.
        let mut m = LeaseMachine::new(lease(1000, 10), RenewPolicy::default());
        assert_eq!(m.poll(1004), LeaseAction::Wait { until_unix: 1005 });
        assert_eq!(
            m.poll(1005),
            LeaseAction::Renew {
                rebinding: false,
                timeout: Duration::from_secs(2),
            }
        );
        m.on_no_reply(1007, false); // the attempt waited until T2
        assert_eq!(
            m.poll(1007),
            LeaseAction::Renew {
                rebinding: true,
                timeout: Duration::from_secs(3),
            }
        );
        m.on_no_reply(1010, true);
        assert_eq!(m.poll(1010), LeaseAction::Expire);
        // Nothing but expiry once expired, whatever is reported.
        m.on_no_reply(1011, true);
        assert_eq!(m.poll(1011), LeaseAction::Expire);
    }

    #[test]
    fn a_rebinding_without_answer_waits_until_expiry_at_most() {
        let mut m = LeaseMachine::new(lease(1000, 10), RenewPolicy::default());
        assert!(matches!(
            m.poll(1008),
            LeaseAction::Renew {
                rebinding: true,
                ..
            }
        ));
        m.on_no_reply(1009, true);
        assert_eq!(m.poll(1009), LeaseAction::Wait { until_unix: 1010 });
        assert_eq!(m.poll(1010), LeaseAction::Expire);
    }

    #[test]
    fn a_nak_while_rebinding_expires_too() {
        let mut m = LeaseMachine::new(lease(1000, 120), policy());
        assert!(matches!(
            m.poll(1106),
            LeaseAction::Renew {
                rebinding: true,
                ..
            }
        ));
        m.on_nak();
        assert_eq!(m.phase(1106), LeasePhase::Expired);
        assert_eq!(
            m.poll(1000),
            LeaseAction::Expire,
            "even with a clock gone back"
        );
        // A late ACK revives nothing but a fresh lease.
        m.on_ack(lease(1107, 120));
        assert_eq!(m.phase(1107), LeasePhase::Bound);
    }

    #[test]
    fn a_clock_that_jumps_backwards_only_delays() {
        let m = LeaseMachine::new(lease(1000, 120), policy());
        assert_eq!(m.poll(10), LeaseAction::Wait { until_unix: 1060 });
    }

    #[test]
    fn zero_length_leases_expire_at_once() {
        let mut l = lease(1000, 0);
        l.t1_secs = 0;
        l.t2_secs = 0;
        let m = LeaseMachine::new(l, policy());
        assert_eq!(m.poll(1000), LeaseAction::Expire);
    }

    #[test]
    fn an_ack_rebases_the_schedule() {
        let mut m = LeaseMachine::new(lease(1000, 120), policy());
        assert!(matches!(m.poll(1061), LeaseAction::Renew { .. }));
        m.on_ack(lease(1061, 120));
        assert_eq!(m.poll(1062), LeaseAction::Wait { until_unix: 1121 });
        assert_eq!(m.phase(1120), LeasePhase::Bound);
    }

    #[test]
    fn a_nak_expires_at_once() {
        let mut m = LeaseMachine::new(lease(1000, 120), policy());
        m.on_nak();
        assert_eq!(m.poll(1001), LeaseAction::Expire);
    }

    #[test]
    fn restart_resumes_in_the_right_phase() {
        // An agent restarted at t=1110 with a lease persisted at 1000.
        let m = LeaseMachine::new(lease(1000, 120), policy());
        assert_eq!(
            m.poll(1110),
            LeaseAction::Renew {
                rebinding: true,
                timeout: Duration::from_secs(4),
            }
        );
        assert_eq!(m.poll(5000), LeaseAction::Expire);
    }

    /// Regression (fuzz/regressions/state_file/t1-past-expiry.json): a
    /// stored lease with T1 and T2 past its expiry made the machine wait
    /// until T1, after the lease had run out, without ever renewing. Out of
    /// order timers now get the defaults, as those of an ACK do.
    #[test]
    fn timers_out_of_order_get_the_defaults() {
        let mut l = lease(1_780_000_000, 1466);
        (l.t1_secs, l.t2_secs) = (1800, 3150);
        let m = LeaseMachine::new(l.clone(), policy());
        let base = l.obtained_at_unix;
        let at = |secs: u64| base + secs;
        // 1466 / 2 and 1466 * 7 / 8.
        assert_eq!((l.t1_at_unix(), l.t2_at_unix()), (at(733), at(1282)));
        assert_eq!(
            m.poll(at(0)),
            LeaseAction::Wait {
                until_unix: at(733)
            }
        );
        assert!(matches!(
            m.poll(at(733)),
            LeaseAction::Renew {
                rebinding: false,
                ..
            }
        ));
        // T1 after T2 (both before the expiry): T2 stays, T1 falls back.
        (l.t1_secs, l.t2_secs) = (1000, 600);
        assert_eq!((l.t1_at_unix(), l.t2_at_unix()), (at(600), at(600)));
        // In order: as the server said.
        (l.t1_secs, l.t2_secs) = (100, 200);
        assert_eq!((l.t1_at_unix(), l.t2_at_unix()), (at(100), at(200)));
    }

    #[test]
    fn infinite_leases_never_renew() {
        let mut l = lease(1000, 120);
        l.lease_secs = u32::MAX;
        l.t1_secs = u32::MAX;
        l.t2_secs = u32::MAX;
        let m = LeaseMachine::new(l, policy());
        assert_eq!(
            m.poll(u64::MAX - 1),
            LeaseAction::Wait {
                until_unix: u64::MAX
            }
        );
    }
}
