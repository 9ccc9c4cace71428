//! The fault schedule: which fault, at which cycle, with which delay — all
//! drawn from one seeded generator before the run starts, so `--seed S`
//! replays the same choices. What the faults then do depends on timing
//! (whether a SIGKILL 120 ms into an ADD lands before or after the lease),
//! so a replay repeats the sequence, not necessarily every outcome.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{RngExt as _, SeedableRng as _};
use serde::Serialize;

/// Every fault the soak injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL the agent while an ADD is in flight, then restart it (same
    /// state dir and pin dir, as a DaemonSet would).
    KillAgentMidAdd,
    /// SIGKILL the agent while a DEL is in flight, then restart it.
    KillAgentMidDel,
    /// SIGKILL the agent when a resident pod's lease is due for renewal (at
    /// T1 + the delay), then restart it.
    KillAgentMidRenewal,
    /// Delete the pod's network namespace while its ADD runs.
    NetnsDeletedDuringAdd,
    /// DEL of a pod whose network namespace is already gone.
    DelNetnsGone,
    /// Stop dnsmasq for the delay while an ADD runs, then start it again.
    DhcpServerStopped,
    /// Restart dnsmasq so that it NAKs a resident pod's renewal (a static
    /// `--dhcp-host` address for its MAC), then restore it.
    DhcpNak,
    /// ADD pods until the DHCP pool is exhausted: the last ADD must fail
    /// with a spec error (100), not hang.
    DhcpPoolExhausted,
    /// The node's uplink down for the delay while an ADD runs, then up.
    UplinkDownUp,
    /// The agent's state dir (a tmpfs) remounted read-only for the delay.
    StateDirReadOnly,
    /// The agent's state dir (a size-limited tmpfs) filled for the delay.
    StateDirFull,
    /// The same container ADDed twice.
    AddTwice,
    /// The same container DELed twice.
    DelTwice,
    /// ADD and DEL of one container racing (DEL after the delay).
    AddDelRace,
    /// CNI GC with a stale valid-attachments list (ids of pods long gone,
    /// every live attachment) that leaves out one orphaned attachment.
    GcStaleList,
    /// DEL while the agent is stopped (queued by the plugin, run by the
    /// agent at its restart).
    DelAgentDown,
}

impl FaultKind {
    /// Every kind, in schedule order.
    pub const ALL: [FaultKind; 16] = [
        FaultKind::KillAgentMidAdd,
        FaultKind::KillAgentMidDel,
        FaultKind::KillAgentMidRenewal,
        FaultKind::NetnsDeletedDuringAdd,
        FaultKind::DelNetnsGone,
        FaultKind::DhcpServerStopped,
        FaultKind::DhcpNak,
        FaultKind::DhcpPoolExhausted,
        FaultKind::UplinkDownUp,
        FaultKind::StateDirReadOnly,
        FaultKind::StateDirFull,
        FaultKind::AddTwice,
        FaultKind::DelTwice,
        FaultKind::AddDelRace,
        FaultKind::GcStaleList,
        FaultKind::DelAgentDown,
    ];

    /// The kind's name in the results (`kill_agent_mid_add`, …).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{self:?}"))
    }

    /// Faults timed by a resident pod's lease renewal: the injector thread
    /// runs them, not the cycle's worker.
    pub fn renewal_timed(self) -> bool {
        matches!(self, FaultKind::KillAgentMidRenewal | FaultKind::DhcpNak)
    }

    /// The range of the fault's delay in milliseconds (what "at a random
    /// point" means for this kind).
    fn delay_range(self) -> (u32, u32) {
        match self {
            // An ADD takes 8 ms (arpProbeMs 0) to 330 ms (the default 300 ms
            // probe); the cycle picks the probe.
            FaultKind::KillAgentMidAdd | FaultKind::NetnsDeletedDuringAdd => (0, 350),
            // A DEL takes a few milliseconds.
            FaultKind::KillAgentMidDel => (0, 25),
            // After T1: the renewal exchange and its state write.
            FaultKind::KillAgentMidRenewal => (0, 50),
            FaultKind::AddDelRace => (0, 300),
            // Outages and windows.
            FaultKind::DhcpServerStopped => (300, 3000),
            FaultKind::UplinkDownUp => (200, 2000),
            FaultKind::StateDirReadOnly | FaultKind::StateDirFull => (100, 1500),
            _ => (0, 1),
        }
    }
}

/// One planned fault.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Planned {
    /// The cycle it belongs to (renewal-timed faults: the cycle after which
    /// the injector waits for the next renewal).
    pub cycle: u32,
    /// What.
    pub kind: FaultKind,
    /// Its delay, in milliseconds (see [`FaultKind`]).
    pub delay_ms: u32,
}

/// The whole schedule of a run.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Faults the workers run, by cycle (at most one per cycle).
    pub by_cycle: BTreeMap<u32, Planned>,
    /// Renewal-timed faults, in cycle order.
    pub renewal: Vec<Planned>,
}

/// How many times each kind is planned in a run of `cycles`: 25 per 1,000
/// cycles (so ≥ 20 are injected even if a few cannot be), at least 1.
pub fn per_kind(cycles: u32) -> u32 {
    (cycles * 25).div_ceil(1000).max(1)
}

/// The schedule of a run of `cycles` with `seed`, with the faults of
/// `kinds` (empty: every kind). The same seed, cycles and kinds give the
/// same schedule.
pub fn plan(seed: u64, cycles: u32, kinds: &[FaultKind]) -> Plan {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = per_kind(cycles);
    let mut worker_faults: Vec<FaultKind> = Vec::new();
    let mut renewal = Vec::new();
    for kind in FaultKind::ALL {
        if !kinds.is_empty() && !kinds.contains(&kind) {
            continue;
        }
        for _ in 0..n {
            if kind.renewal_timed() {
                let (lo, hi) = kind.delay_range();
                renewal.push(Planned {
                    cycle: rng.random_range(0..cycles.max(1)),
                    kind,
                    delay_ms: rng.random_range(lo..hi),
                });
            } else {
                worker_faults.push(kind);
            }
        }
    }
    renewal.sort_by_key(|p| p.cycle);
    let mut cycles_list: Vec<u32> = (0..cycles).collect();
    cycles_list.shuffle(&mut rng);
    worker_faults.shuffle(&mut rng);
    let mut by_cycle = BTreeMap::new();
    for (cycle, kind) in cycles_list.into_iter().zip(worker_faults) {
        let (lo, hi) = kind.delay_range();
        by_cycle.insert(
            cycle,
            Planned {
                cycle,
                kind,
                delay_ms: rng.random_range(lo..hi),
            },
        );
    }
    Plan { by_cycle, renewal }
}

/// The generator of one cycle's own choices (its ARP probe time, stale ids
/// for GC), independent of the order in which workers reach cycles.
pub fn cycle_rng(seed: u64, cycle: u32) -> StdRng {
    StdRng::seed_from_u64(seed ^ (u64::from(cycle) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_plan() {
        let a = plan(7, 1000, &[]);
        let b = plan(7, 1000, &[]);
        let key = |p: &Plan| {
            p.by_cycle
                .values()
                .chain(&p.renewal)
                .map(|f| (f.cycle, f.kind, f.delay_ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&plan(8, 1000, &[])));
    }

    #[test]
    fn every_kind_at_least_25_times_in_1000_cycles() {
        let p = plan(1, 1000, &[]);
        for kind in FaultKind::ALL {
            let n = p
                .by_cycle
                .values()
                .chain(&p.renewal)
                .filter(|f| f.kind == kind)
                .count();
            assert_eq!(n, 25, "{kind:?}");
        }
    }

    #[test]
    fn kind_names_are_snake_case() {
        assert_eq!(FaultKind::KillAgentMidAdd.name(), "kill_agent_mid_add");
        assert_eq!(FaultKind::GcStaleList.name(), "gc_stale_list");
    }
}
