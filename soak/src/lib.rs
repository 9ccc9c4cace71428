//! `lanlink-soak`: concurrent CNI ADD/DEL cycles through the real plugin,
//! the real agent and a real dnsmasq, under seeded fault injection, with
//! leak and resource invariants (issue 15 item 1). `cargo xtask soak`
//! builds the binaries and runs this crate's `lanlink-soak` binary.
//!
//! - The lab ([`lab`]): a LAN (dnsmasq, 16-address pool, 120 s leases), one
//!   node, the agent with its state dir on a 512 KiB tmpfs of the soak's
//!   private mount namespace; three resident pods that live through the
//!   run, so leases renew (every 60 s) while faults happen.
//! - Workers (`--workers`, 4) run the cycles: cycle `c` belongs to worker
//!   `c % workers`; a cycle ADDs one pod in a namespace of its own, pings the
//!   router from it and it from the node (which records a `FLOWS` entry),
//!   and DELs it, retrying a failed DEL as kubelet does.
//! - Faults ([`plan`]): 16 kinds, each planned 25 times per 1,000 cycles at
//!   seeded cycles with seeded delays; the renewal-timed ones (SIGKILL at a
//!   renewal, a NAK) are run by an injector thread at a resident's T1.
//!   Every fault is logged (cycle, worker, kind, delay, what happened).
//! - Every CNI call ends within 30 s with a spec result or error
//!   ([`calls`]). A spec error is tolerated while a fault (or the 3 s after
//!   one) overlaps the call, or when the cycle's own fault provokes it;
//!   anything else is a failure.
//! - Checkpoints every `--checkpoint-every` cycles quiesce the workers and
//!   run the invariants ([`checks`]); the same after the run, with the
//!   residents (positive control: each check must see them), and again
//!   after their DEL with nothing attached.
//! - Results ([`report`]): JSON (`cycles`, `seed`, `faults`, `calls`,
//!   `leaks`, `resources`, …) and a PNG chart. Any leak, failure or
//!   resource bound exceeded fails the run (exit 1) after writing them,
//!   printing the seed and the fault sequence.

pub mod calls;
pub mod checks;
pub mod lab;
pub mod plan;
pub mod report;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use lanlink_lab::{NetNs, ROUTER, ping};
use nix::mount::MsFlags;
use rand::RngExt as _;
use serde_json::{Value, json};

use calls::Outcome;
use checks::Live;
use lab::SoakLab;
use plan::{FaultKind, Plan, Planned};
use report::{Bound, FaultEvent, Results, Sample};

/// `lanlink-soak` flags.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "lanlink-soak", about = "lanlink's soak under injected faults")]
pub struct Options {
    /// ADD/DEL cycles to run (one pod each).
    #[arg(long, default_value_t = 100)]
    pub cycles: u32,
    /// Seed of the fault schedule; default: from the clock. Printed, and
    /// `--seed` replays the same fault sequence.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Concurrent workers.
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// Cycles between two checkpoints (workers quiesced, invariants run).
    #[arg(long, default_value_t = 25)]
    pub checkpoint_every: u32,
    /// Where `lanlinkd` and `lanlink` are (default: the lab's bin dir).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Inject only these fault kinds (repeat or separate with commas; a
    /// debugging aid: the schedule differs from a run with every kind).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<FaultKind>,
    /// The results JSON; the chart goes next to it (`.png`).
    #[arg(long, default_value = "bench/results/soak.json")]
    pub out: PathBuf,
}

/// How many pods live through the whole run (their leases renew, every
/// 60 s each: five give the renewal-timed faults a renewal every 12 s).
const RESIDENTS: usize = 5;

/// Time between two residents' ADDs, so their renewals are spread.
const RESIDENT_STAGGER: Duration = Duration::from_secs(12);

/// How long after a fault ends its effects are still tolerated (an agent
/// that restarted re-adopts, dnsmasq reloads its leases).
const GRACE: Duration = Duration::from_secs(3);

/// How long a DEL is retried (kubelet retries for as long as it takes).
const DEL_PATIENCE: Duration = Duration::from_secs(30);

/// Puts the process into a mount namespace of its own with every mount
/// private, so the tmpfs of the agent's state dir and the pods' netns
/// mounts never reach the host. Must run before any thread exists
/// (`unshare(CLONE_NEWNS)` implies `CLONE_FS`, refused in a threaded
/// process).
pub fn private_mount_ns() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("unshare(CLONE_NEWNS): the soak needs root")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("mount --make-rprivate /")
}

/// Whether a fault is active, and since when none is.
#[derive(Debug, Default)]
struct FaultClock {
    active: AtomicU32,
    generation: AtomicU64,
    last_end: Mutex<Option<Instant>>,
}

/// A call's view of the fault clock, taken before it starts.
#[derive(Clone, Copy, Debug)]
struct Token {
    generation: u64,
    at: Instant,
}

/// A global fault in progress (ends on drop).
struct Window<'a>(&'a FaultClock);

impl FaultClock {
    fn token(&self) -> Token {
        Token {
            generation: self.generation.load(Ordering::SeqCst),
            at: Instant::now(),
        }
    }

    /// Whether a global fault overlapped the span since `t` (or ended less
    /// than [`GRACE`] before it).
    fn overlapped(&self, t: Token) -> bool {
        self.active.load(Ordering::SeqCst) > 0
            || self.generation.load(Ordering::SeqCst) != t.generation
            || lock(&self.last_end).is_some_and(|end| end + GRACE > t.at)
    }

    fn begin(&self) -> Window<'_> {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        Window(self)
    }
}

impl Drop for Window<'_> {
    fn drop(&mut self) {
        *lock(&self.0.last_end) = Some(Instant::now());
        self.0.generation.fetch_add(1, Ordering::SeqCst);
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A raised flag, lowered on drop.
struct Gate<'a>(&'a AtomicBool);

impl<'a> Gate<'a> {
    fn raise(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::SeqCst);
        Self(flag)
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Locks, ignoring poisoning (a panicking worker must not stop the run's
/// report).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One pod of the soak.
#[derive(Debug)]
struct Pod {
    id: String,
    ns: Option<NetNs>,
    path: PathBuf,
    netconf: Value,
    mac: Option<String>,
    ip: Option<Ipv4Addr>,
}

/// Everything the threads share.
struct Ctx {
    lab: SoakLab,
    seed: u64,
    cycles: u32,
    workers: u32,
    checkpoint_every: u32,
    plan: Plan,
    started: Instant,
    fault_lock: Mutex<()>,
    clock: FaultClock,
    /// Attachments the runtime knows (GC's valid list): registered before
    /// ADD, removed after DEL succeeded.
    registry: Mutex<BTreeSet<String>>,
    residents: Mutex<Vec<Pod>>,
    resident_seq: AtomicU32,
    next_resident: Mutex<Instant>,
    /// Raised by the injector shortly before a renewal it waits for: new
    /// global faults and checkpoints wait, so the renewal is not missed.
    injector_wants: AtomicBool,
    deleted: Mutex<VecDeque<String>>,
    /// MACs whose renewal the NAK fault refused: dnsmasq keeps a refused
    /// lease in its file until it expires (a NAK deletes nothing there),
    /// so the checks do not count those as lost.
    /// MACs whose lease may stay on the server without a leak: refused
    /// by a NAK (`nak`), or released during a DHCP outage
    /// (`released_in_outage`).
    tolerated_macs: Mutex<BTreeMap<String, &'static str>>,
    /// Server leases tolerated that way: reason → most seen at once.
    tolerated: Mutex<BTreeMap<String, u64>>,
    calls: Mutex<BTreeMap<String, u64>>,
    faults: Mutex<BTreeMap<String, u64>>,
    fault_log: Mutex<Vec<FaultEvent>>,
    failures: Mutex<Vec<String>>,
    leaks: Mutex<BTreeMap<String, u64>>,
    samples: Mutex<Vec<Sample>>,
    checkpoints: AtomicU32,
    completed: AtomicU32,
    workers_done: AtomicBool,
    sampler_stop: AtomicBool,
    barrier: Barrier,
}

/// Who runs a step, for the log.
#[derive(Clone, Copy, Debug)]
struct At<'a> {
    who: &'a str,
    cycle: u32,
}

impl Ctx {
    fn secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn fail(&self, at: At<'_>, msg: impl std::fmt::Display) {
        let line = format!("cycle {} {}: {msg}", at.cycle, at.who);
        eprintln!("soak: FAILURE {line}");
        lock(&self.failures).push(line);
    }

    fn note(&self, at: At<'_>, msg: impl std::fmt::Display) {
        eprintln!(
            "soak: [{:7.1}s] cycle {} {}: {msg}",
            self.secs(),
            at.cycle,
            at.who
        );
    }

    fn log_fault(&self, at: At<'_>, p: &Planned, detail: impl std::fmt::Display) {
        let detail = detail.to_string();
        *lock(&self.faults).entry(p.kind.name()).or_default() += 1;
        self.note(
            at,
            format!(
                "fault {} (delay {} ms): {detail}",
                p.kind.name(),
                p.delay_ms
            ),
        );
        lock(&self.fault_log).push(FaultEvent {
            cycle: at.cycle,
            worker: at.who.to_owned(),
            kind: p.kind.name(),
            delay_ms: p.delay_ms,
            t_s: self.secs(),
            detail,
        });
    }

    /// The global fault lock for the workers and checkpoints: they let the
    /// injector go first when it waits for a renewal (bounded: 90 s).
    fn global_lock(&self) -> MutexGuard<'_, ()> {
        let start = Instant::now();
        while self.injector_wants.load(Ordering::SeqCst)
            && start.elapsed() < Duration::from_secs(90)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        lock(&self.fault_lock)
    }

    fn aborted(&self) -> bool {
        // A lab that cannot go on (an agent that does not come back):
        // the rest of the cycles would only pile up noise.
        lock(&self.failures).iter().any(|f| f.contains("FATAL"))
    }

    // --- pods and calls -------------------------------------------------

    fn new_pod(&self, id: String, probe_ms: u32) -> Result<Pod> {
        let ns = NetNs::new("sk")?;
        let path = ns.path().to_owned();
        lock(&self.registry).insert(id.clone());
        Ok(Pod {
            id,
            ns: Some(ns),
            path,
            netconf: self.lab.netconf_with_probe(probe_ms),
            mac: None,
            ip: None,
        })
    }

    /// The pod's namespace deleted (as a runtime that tore the sandbox down).
    fn delete_netns(&self, pod: &mut Pod) {
        drop(pod.ns.take());
    }

    fn finish(&self, pod: Pod) {
        lock(&self.registry).remove(&pod.id);
        let mut d = lock(&self.deleted);
        d.push_back(pod.id.clone());
        if d.len() > 64 {
            d.pop_front();
        }
    }

    fn call(&self, at: At<'_>, verb: &str, pod: &Pod) -> Outcome {
        let mark = self.lab.dhcp.outage.mark();
        let out = calls::call(
            &self.lab.bin_dir,
            self.lab.node.path(),
            verb,
            &pod.id,
            Some(&pod.path),
            &pod.netconf,
        );
        self.count(verb, &out);
        if !out.is_spec() {
            self.fail(at, format!("{verb} {}: {out}", pod.id));
        }
        // A DEL whose DHCPRELEASE may have gone out while the server could
        // not hear it: its lease stays on the server until it expires.
        if verb == "DEL"
            && self.lab.dhcp.outage.since(mark)
            && let Some(mac) = &pod.mac
        {
            lock(&self.tolerated_macs).insert(mac.clone(), "released_in_outage");
        }
        out
    }

    fn count(&self, verb: &str, out: &Outcome) {
        *lock(&self.calls).entry(out.label(verb)).or_default() += 1;
    }

    /// ADD; on success records the pod's MAC and address.
    fn add(&self, at: At<'_>, pod: &mut Pod) -> Outcome {
        let out = self.call(at, "ADD", pod);
        if let Outcome::Ok(result) = &out {
            pod.mac = lanlink_lab::pods::result_mac(result)
                .ok()
                .map(str::to_ascii_lowercase);
            pod.ip = checks::result_ip(result);
        }
        out
    }

    /// ADD that must succeed unless a global fault overlaps it.
    fn add_strict(&self, at: At<'_>, pod: &mut Pod) -> Outcome {
        let t = self.clock.token();
        let out = self.add(at, pod);
        if !out.is_ok() && !self.clock.overlapped(t) {
            self.fail(
                at,
                format!(
                    "ADD {} failed outside any fault: {out}\nagent log tail:\n{}",
                    pod.id,
                    self.lab.agent_log_tail(3000)
                ),
            );
        }
        out
    }

    /// The pod reaches the router, and the node reaches the pod (through
    /// `to_pod`, which records a flow). A failure counts unless a global
    /// fault overlapped the check or `tolerant`.
    fn verify(&self, at: At<'_>, pod: &Pod, tolerant: bool) -> bool {
        let (Some(ns), Some(ip)) = (pod.ns.as_ref(), pod.ip) else {
            return false;
        };
        let t = self.clock.token();
        let out = ping(ns, ROUTER, 2, Duration::from_secs(3));
        let ok = matches!(&out, Ok(p) if p.received > 0);
        if ok {
            // The flow is best effort: the check above is the invariant.
            let _ = ping(self.lab.node.ns(), ip, 1, Duration::from_secs(1));
        } else if !tolerant && !self.clock.overlapped(t) {
            let what = match out {
                Ok(p) => p.summary,
                Err(e) => format!("{e:#}"),
            };
            self.fail(at, format!("{} ({ip}) does not forward: {what}", pod.id));
        }
        ok
    }

    /// DEL, retried every 0.5 s until it succeeds (as kubelet does). The
    /// first attempt must succeed unless a fault overlaps it or `tolerant`;
    /// a retry made when no fault overlaps must succeed too.
    fn del_until_ok(&self, at: At<'_>, pod: &Pod, tolerant: bool) -> bool {
        let start = Instant::now();
        let mut first = true;
        let mut reported = false;
        loop {
            let t = self.clock.token();
            let out = self.call(at, "DEL", pod);
            if out.is_ok() {
                return true;
            }
            if (!first || !tolerant) && !reported && !self.clock.overlapped(t) {
                reported = true;
                self.fail(
                    at,
                    format!(
                        "DEL {} failed {} outside any fault: {out}",
                        pod.id,
                        if first { "at once" } else { "on a retry" }
                    ),
                );
            }
            first = false;
            if start.elapsed() > DEL_PATIENCE {
                self.fail(
                    at,
                    format!(
                        "DEL {} never succeeded within {DEL_PATIENCE:?}: {out}\nagent log tail:\n{}",
                        pod.id,
                        self.lab.agent_log_tail(3000)
                    ),
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The end of every cycle: DEL until it succeeds, then forget the pod.
    fn teardown(&self, at: At<'_>, pod: Pod, tolerant: bool) {
        if self.del_until_ok(at, &pod, tolerant) {
            self.finish(pod);
        } else {
            // Keep it registered: GC must not be told it is gone.
            drop(pod);
        }
    }

    fn kill_and_restart(&self, at: At<'_>) -> Result<()> {
        self.lab.kill_agent()?;
        self.restart(at)
    }

    fn restart(&self, at: At<'_>) -> Result<()> {
        if let Err(e) = self.lab.restart_agent() {
            self.fail(
                at,
                format!(
                    "FATAL: the agent does not come back after a restart: {e:#}\nagent log tail:\n{}",
                    self.lab.agent_log_tail(6000)
                ),
            );
            return Err(e);
        }
        Ok(())
    }

    // --- the workers ----------------------------------------------------

    fn worker(&self, w: u32) {
        let who = format!("w{w}");
        let k = self.checkpoint_every.max(1);
        let last_epoch = self.cycles.saturating_sub(1) / k;
        let mut crossed = 0;
        let mut c = w;
        while c < self.cycles {
            while crossed < c / k {
                crossed += 1;
                self.cross(crossed);
            }
            if !self.aborted() {
                let at = At {
                    who: &who,
                    cycle: c,
                };
                let fault = self.plan.by_cycle.get(&c).copied();
                if let Err(e) = self.cycle(at, fault) {
                    self.fail(at, format!("{e:#}"));
                }
            }
            self.completed.fetch_add(1, Ordering::SeqCst);
            c += self.workers;
        }
        while crossed < last_epoch {
            crossed += 1;
            self.cross(crossed);
        }
    }

    /// A checkpoint: every worker arrives, one runs the checks, all go on.
    fn cross(&self, epoch: u32) {
        if self.barrier.wait().is_leader() {
            let _g = self.global_lock();
            if !self.aborted() {
                self.checkpoint(&format!("checkpoint {epoch}"), true);
            }
        }
        self.barrier.wait();
    }

    /// Runs the invariants against the residents; records leaks (the most
    /// of each kind seen at any checkpoint) and problems.
    fn checkpoint(&self, name: &str, with_residents: bool) {
        let residents = lock(&self.residents);
        let live: Vec<Live<'_>> = if with_residents {
            residents
                .iter()
                .filter_map(|p| {
                    Some(Live {
                        id: &p.id,
                        mac: p.mac.as_deref()?,
                        ns: p.ns.as_ref()?,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let tolerated = lock(&self.tolerated_macs).clone();
        let found = checks::check(&self.lab, &live, &tolerated, Duration::from_secs(8));
        {
            let mut t = lock(&self.tolerated);
            for (kind, n) in &found.seen {
                if let Some(reason) = kind.strip_prefix("server_lease_") {
                    let e = t.entry(format!("server_lease_{reason}")).or_default();
                    *e = (*e).max(*n);
                }
            }
        }
        self.checkpoints.fetch_add(1, Ordering::SeqCst);
        let at = At {
            who: "checker",
            cycle: self.completed.load(Ordering::SeqCst),
        };
        {
            let mut leaks = lock(&self.leaks);
            for (kind, n) in &found.leaks {
                let e = leaks.entry(kind.clone()).or_default();
                *e = (*e).max(*n);
            }
        }
        for d in &found.details {
            self.fail(at, format!("{name}: leaked {d}"));
        }
        for p in &found.problems {
            self.fail(at, format!("{name}: {p}"));
        }
        self.note(
            at,
            format!(
                "{name}: {} live, leaks {:?}, seen {:?}",
                live.len(),
                found.leaks,
                found.seen
            ),
        );
        if !live.is_empty() {
            // The positive control: each check must see the live ones.
            for kind in [
                "agent_endpoint",
                "agent_lease",
                "state_file_endpoint",
                "veth",
                "route",
                "fdb",
                "map_ep_by_mac",
                "map_ep_by_if",
                "map_ep_guard",
                "map_flood",
                "tc_pin",
                "server_lease",
                "forwarding",
            ] {
                let seen = found.seen.get(kind).copied().unwrap_or(0);
                if seen < live.len() as u64 {
                    self.fail(
                        at,
                        format!(
                            "{name}: the {kind} check saw {seen} of {} live attachments",
                            live.len()
                        ),
                    );
                }
            }
        }
    }

    /// One cycle: a pod's ADD and DEL, with the cycle's fault if any.
    fn cycle(&self, at: At<'_>, fault: Option<Planned>) -> Result<()> {
        let mut rng = plan::cycle_rng(self.seed, at.cycle);
        // Half the pods ARP-probe for the default 300 ms (an ADD long
        // enough to be interrupted), half skip it (8 ms ADDs).
        let probe_ms = if rng.random_bool(0.5) { 0 } else { 300 };
        let mut pod = self.new_pod(format!("soak-{}", at.cycle), probe_ms)?;
        let Some(p) = fault else {
            if self.add_strict(at, &mut pod).is_ok() {
                self.verify(at, &pod, false);
            }
            self.teardown(at, pod, false);
            return Ok(());
        };
        let delay = Duration::from_millis(u64::from(p.delay_ms));
        match p.kind {
            FaultKind::KillAgentMidAdd => {
                let _g = self.global_lock();
                let w = self.clock.begin();
                let out = std::thread::scope(|s| {
                    let h = s.spawn(|| {
                        let mut pod = pod;
                        let out = self.add(at, &mut pod);
                        (pod, out)
                    });
                    std::thread::sleep(delay);
                    let r = self.kill_and_restart(at);
                    (h.join(), r)
                });
                drop(w);
                drop(_g);
                let (joined, restarted) = out;
                let (pod, out) = joined.map_err(|_| anyhow::anyhow!("ADD thread panicked"))?;
                self.log_fault(at, &p, format!("ADD {}: {out}", pod.id));
                restarted?;
                // A successful ADD is a promise: the pod forwards.
                if out.is_ok() {
                    self.verify(at, &pod, false);
                }
                self.teardown(at, pod, true);
            }
            FaultKind::KillAgentMidDel => {
                if self.add_strict(at, &mut pod).is_ok() {
                    self.verify(at, &pod, false);
                }
                let _g = self.global_lock();
                let w = self.clock.begin();
                let (out, r) = std::thread::scope(|s| {
                    let h = s.spawn(|| self.call(at, "DEL", &pod));
                    std::thread::sleep(delay);
                    let r = self.kill_and_restart(at);
                    (h.join(), r)
                });
                drop(w);
                drop(_g);
                let out = out.map_err(|_| anyhow::anyhow!("DEL thread panicked"))?;
                self.log_fault(at, &p, format!("DEL {}: {out}", pod.id));
                r?;
                self.teardown(at, pod, true);
            }
            FaultKind::NetnsDeletedDuringAdd => {
                let ns = pod.ns.take();
                let (mut pod, out) = std::thread::scope(|s| {
                    let h = s.spawn(|| {
                        let mut pod = pod;
                        let out = self.add(at, &mut pod);
                        (pod, out)
                    });
                    std::thread::sleep(delay);
                    drop(ns);
                    h.join()
                })
                .map_err(|_| anyhow::anyhow!("ADD thread panicked"))?;
                pod.ns = None;
                self.log_fault(
                    at,
                    &p,
                    format!("ADD {} with its netns deleted: {out}", pod.id),
                );
                // DEL of a pod whose namespace is gone must succeed.
                self.teardown(at, pod, false);
            }
            FaultKind::DelNetnsGone => {
                if self.add_strict(at, &mut pod).is_ok() {
                    self.verify(at, &pod, false);
                }
                self.delete_netns(&mut pod);
                let t = self.clock.token();
                let out = self.call(at, "DEL", &pod);
                self.log_fault(at, &p, format!("DEL {} with its netns gone: {out}", pod.id));
                if !out.is_ok() && !self.clock.overlapped(t) {
                    self.fail(at, format!("DEL with the netns gone: {out}"));
                }
                self.teardown(at, pod, true);
            }
            FaultKind::DhcpServerStopped => {
                let _g = self.global_lock();
                let w = self.clock.begin();
                self.lab.dhcp.stop()?;
                let (joined, started) = std::thread::scope(|s| {
                    let h = s.spawn(|| {
                        let mut pod = pod;
                        let out = self.add(at, &mut pod);
                        (pod, out)
                    });
                    std::thread::sleep(delay);
                    let r = self.lab.dhcp.start(&[]);
                    (h.join(), r)
                });
                drop(w);
                drop(_g);
                let (pod, out) = joined.map_err(|_| anyhow::anyhow!("ADD thread panicked"))?;
                started.context("dnsmasq does not start again")?;
                // Expected: error 100 when the outage outlasts the ADD's
                // 2 s DHCP deadline, a lease when the server came back in
                // time.
                self.log_fault(
                    at,
                    &p,
                    format!("ADD {} during a DHCP outage: {out}", pod.id),
                );
                if !out.is_ok() && out.code() != Some(100) {
                    self.note(at, format!("ADD during a DHCP outage answered {out}"));
                }
                if out.is_ok() {
                    self.verify(at, &pod, false);
                }
                self.teardown(at, pod, true);
            }
            FaultKind::DhcpPoolExhausted => {
                let _g = self.global_lock();
                let w = self.clock.begin();
                let size = u32::from(lab::POOL.1) - u32::from(lab::POOL.0) + 1;
                let mut fillers = Vec::new();
                let mut refused = None;
                for i in 0..size + 4 {
                    let mut f = self.new_pod(format!("soak-{}-fill{i}", at.cycle), 0)?;
                    let out = self.add(at, &mut f);
                    let done = !out.is_ok();
                    fillers.push(f);
                    if done {
                        refused = Some(out);
                        break;
                    }
                }
                let n = fillers.len();
                for f in fillers {
                    self.teardown(at, f, true);
                }
                drop(w);
                drop(_g);
                match refused {
                    Some(out) if out.code() == Some(100) => self.log_fault(
                        at,
                        &p,
                        format!("pool exhausted after {} ADDs: {out}", n - 1),
                    ),
                    Some(out) => {
                        self.log_fault(at, &p, format!("ADD {n} refused: {out}"));
                        self.fail(at, format!("an exhausted pool answered {out}, not 100"));
                    }
                    None => self.fail(
                        at,
                        format!("{n} ADDs on a {size}-address pool all succeeded"),
                    ),
                }
                if self.add_strict(at, &mut pod).is_ok() {
                    self.verify(at, &pod, false);
                }
                self.teardown(at, pod, false);
            }
            FaultKind::UplinkDownUp => {
                let _g = self.global_lock();
                let w = self.clock.begin();
                self.lab.uplink_down()?;
                let (joined, up) = std::thread::scope(|s| {
                    let h = s.spawn(|| {
                        let mut pod = pod;
                        let out = self.add(at, &mut pod);
                        (pod, out)
                    });
                    std::thread::sleep(delay);
                    let r = self.lab.uplink_up();
                    (h.join(), r)
                });
                up.context("cannot bring the uplink up")?;
                let (pod, out) = joined.map_err(|_| anyhow::anyhow!("ADD thread panicked"))?;
                self.log_fault(
                    at,
                    &p,
                    format!("ADD {} with the uplink down: {out}", pod.id),
                );
                drop(w);
                drop(_g);
                if out.is_ok() {
                    self.verify(at, &pod, false);
                }
                self.teardown(at, pod, true);
            }
            FaultKind::StateDirReadOnly | FaultKind::StateDirFull => {
                if self.add_strict(at, &mut pod).is_ok() {
                    self.verify(at, &pod, false);
                }
                let mut second = self.new_pod(format!("soak-{}-b", at.cycle), 0)?;
                let _g = self.global_lock();
                let w = self.clock.begin();
                let ro = p.kind == FaultKind::StateDirReadOnly;
                if ro {
                    self.lab.state_read_only(true)?;
                } else {
                    self.lab.fill_state()?;
                }
                // Expected: a spec error for both (nothing can be persisted),
                // or success where the agent needs no write.
                let add = self.add(at, &mut second);
                let del = self.call(at, "DEL", &pod);
                std::thread::sleep(delay);
                if ro {
                    self.lab.state_read_only(false)?;
                } else {
                    self.lab.unfill_state()?;
                }
                self.log_fault(
                    at,
                    &p,
                    format!("ADD {}: {add}; DEL {}: {del}", second.id, pod.id),
                );
                drop(w);
                drop(_g);
                if add.is_ok() {
                    self.verify(at, &second, false);
                }
                self.teardown(at, second, true);
                self.teardown(at, pod, true);
            }
            FaultKind::AddTwice => {
                // The fault needs a first ADD that succeeded: while another
                // fault refuses ADDs, clean up and try again (≤ 3 times).
                let mut first = self.add_strict(at, &mut pod);
                for _ in 0..3 {
                    if first.is_ok() {
                        break;
                    }
                    self.del_until_ok(at, &pod, true);
                    std::thread::sleep(Duration::from_secs(1));
                    first = self.add(at, &mut pod);
                }
                if first.is_ok() {
                    self.verify(at, &pod, false);
                    let t = self.clock.token();
                    let again = self.add(at, &mut pod);
                    self.log_fault(at, &p, format!("second ADD {}: {again}", pod.id));
                    // A second ADD that succeeded returned a working pod.
                    if again.is_ok() {
                        self.verify(at, &pod, false);
                    } else if !self.clock.overlapped(t) && !self.verify(at, &pod, true) {
                        self.note(at, "the refused second ADD broke the first attachment");
                    }
                }
                self.teardown(at, pod, false);
            }
            FaultKind::DelTwice => {
                if self.add_strict(at, &mut pod).is_ok() {
                    self.verify(at, &pod, false);
                }
                let t = self.clock.token();
                let first = self.call(at, "DEL", &pod);
                let second = self.call(at, "DEL", &pod);
                self.log_fault(at, &p, format!("DEL {}: {first}, then {second}", pod.id));
                let both = first.is_ok() && second.is_ok();
                if !both && !self.clock.overlapped(t) {
                    self.fail(at, format!("DEL twice: {first}, then {second}"));
                }
                self.teardown(at, pod, true);
            }
            FaultKind::AddDelRace => {
                // The DEL needs the pod's identity only: a copy without
                // the namespace guard.
                let shadow = Pod {
                    id: pod.id.clone(),
                    ns: None,
                    path: pod.path.clone(),
                    netconf: pod.netconf.clone(),
                    mac: None,
                    ip: None,
                };
                let (joined, del) = std::thread::scope(|s| {
                    let h = s.spawn(|| {
                        let mut pod = pod;
                        let out = self.add(at, &mut pod);
                        (pod, out)
                    });
                    std::thread::sleep(delay);
                    let del = self.call(at, "DEL", &shadow);
                    (h.join(), del)
                });
                let (pod, add) = joined.map_err(|_| anyhow::anyhow!("ADD thread panicked"))?;
                self.log_fault(at, &p, format!("ADD {}: {add}; racing DEL: {del}", pod.id));
                // Whatever the race left, a DEL (the runtime's next step)
                // must succeed and leave nothing.
                self.teardown(at, pod, false);
            }
            FaultKind::GcStaleList => {
                // An attachment the runtime lost track of: GC must remove it.
                if self.add_strict(at, &mut pod).is_ok() {
                    self.verify(at, &pod, false);
                }
                lock(&self.registry).remove(&pod.id);
                let t = self.clock.token();
                let (out, listed) = {
                    let registry = lock(&self.registry);
                    let stale: Vec<String> = {
                        let d = lock(&self.deleted);
                        let n = d.len();
                        (0..3.min(n))
                            .map(|_| d[rng.random_range(0..n)].clone())
                            .collect()
                    };
                    let mut valid: Vec<Value> = registry
                        .iter()
                        .chain(&stale)
                        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
                        .collect();
                    valid.push(json!({"containerID": format!("soak-never-{}", at.cycle), "ifname": "eth0"}));
                    let mut conf = self.lab.netconf.clone();
                    conf["cni.dev/valid-attachments"] = json!(valid);
                    let out = calls::call(
                        &self.lab.bin_dir,
                        self.lab.node.path(),
                        "GC",
                        "gc",
                        None,
                        &conf,
                    );
                    (out, valid.len())
                };
                self.count("GC", &out);
                self.log_fault(
                    at,
                    &p,
                    format!(
                        "GC with {listed} listed (3 stale), {} left out: {out}",
                        pod.id
                    ),
                );
                if !out.is_ok() {
                    // A global fault (the agent killed) may refuse it: 11.
                    if !self.clock.overlapped(t) {
                        self.fail(at, format!("GC: {out}"));
                    }
                } else if let Ok(eps) = checks::client(&self.lab).endpoints()
                    && eps.iter().any(|e| e.container_id == pod.id)
                {
                    self.fail(at, format!("GC left {} attached", pod.id));
                }
                lock(&self.registry).insert(pod.id.clone());
                // DEL after GC succeeds (nothing left to do).
                self.teardown(at, pod, false);
            }
            FaultKind::DelAgentDown => {
                if self.add_strict(at, &mut pod).is_ok() {
                    self.verify(at, &pod, false);
                }
                let _g = self.global_lock();
                let w = self.clock.begin();
                self.lab.kill_agent()?;
                let started = Instant::now();
                let out = self.call(at, "DEL", &pod);
                let took = started.elapsed();
                let queued = std::fs::read_dir(self.lab.state_dir.join("del-queue"))
                    .map(|d| {
                        d.flatten()
                            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                            .count()
                    })
                    .unwrap_or(0);
                self.log_fault(
                    at,
                    &p,
                    format!(
                        "DEL {} with the agent down: {out} in {took:?}, {queued} queued",
                        pod.id
                    ),
                );
                if !out.is_ok() {
                    self.fail(at, format!("DEL with the agent down: {out}"));
                }
                self.restart(at)?;
                drop(w);
                drop(_g);
                // The queued DEL ran at the start: the lease is released.
                if let Some(mac) = &pod.mac
                    && pod.ip.is_some()
                    && let Err(e) = self.lab.lan.wait_for_no_lease(mac, Duration::from_secs(5))
                {
                    self.fail(
                        at,
                        format!("the queued DEL of {} kept its lease: {e:#}", pod.id),
                    );
                }
                self.teardown(at, pod, true);
            }
            FaultKind::KillAgentMidRenewal | FaultKind::DhcpNak => {
                unreachable!("run by the injector")
            }
        }
        Ok(())
    }

    // --- residents and the injector ---------------------------------------

    fn add_resident(&self) -> Result<()> {
        let n = self.resident_seq.fetch_add(1, Ordering::SeqCst);
        let at = At {
            who: "injector",
            cycle: self.completed.load(Ordering::SeqCst),
        };
        let mut pod = self.new_pod(format!("soak-resident-{n}"), 0)?;
        for attempt in 0..5 {
            let out = self.add(at, &mut pod);
            if out.is_ok() {
                break;
            }
            if attempt == 4 {
                self.fail(at, format!("resident {}: ADD {out}", pod.id));
                self.teardown(at, pod, true);
                bail!("no resident");
            }
            self.del_until_ok(at, &pod, true);
            std::thread::sleep(Duration::from_secs(1));
        }
        self.verify(at, &pod, false);
        self.note(at, format!("resident {} at {:?}", pod.id, pod.ip));
        lock(&self.residents).push(pod);
        Ok(())
    }

    /// Adds a resident when fewer than [`RESIDENTS`] live and the last was
    /// added [`RESIDENT_STAGGER`] ago or more: their leases renew apart.
    fn maybe_add_resident(&self) {
        let mut next = lock(&self.next_resident);
        if lock(&self.residents).len() < RESIDENTS && Instant::now() >= *next {
            let _g = lock(&self.fault_lock);
            if let Err(e) = self.add_resident() {
                eprintln!("soak: {e:#}");
            }
            *next = Instant::now() + RESIDENT_STAGGER;
        }
    }

    fn injector(&self) {
        let mut pending: VecDeque<Planned> = self.plan.renewal.iter().copied().collect();
        loop {
            if self.aborted() {
                return;
            }
            let done = self.workers_done.load(Ordering::SeqCst);
            self.maybe_add_resident();
            if let Some(p) = pending.front().copied() {
                if done || self.completed.load(Ordering::SeqCst) >= p.cycle {
                    self.renewal_fault(p);
                    pending.pop_front();
                }
            } else if done {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for a resident's next renewal (T1) and injects `p` there.
    fn renewal_fault(&self, p: Planned) {
        let at = At {
            who: "injector",
            cycle: p.cycle,
        };
        for attempt in 0..6 {
            if self.aborted() {
                return;
            }
            let Some((id, mac, renew_at)) = self.next_renewal() else {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            };
            let due = UNIX_EPOCH + Duration::from_secs(renew_at);
            // Until 6 s before T1, without holding anything; then the
            // workers hold off new global faults (and checkpoints) until
            // the injector has the lock (a global fault lasts ≤ ~5 s).
            while SystemTime::now() < due - Duration::from_millis(6000) {
                self.maybe_add_resident();
                std::thread::sleep(Duration::from_millis(100));
            }
            let gate = Gate::raise(&self.injector_wants);
            let _g = lock(&self.fault_lock);
            sleep_until(due - Duration::from_millis(1000));
            if SystemTime::now() > due - Duration::from_millis(300) {
                self.note(
                    at,
                    format!("missed the renewal of {id} (attempt {attempt})"),
                );
                continue;
            }
            let w = self.clock.begin();
            let _gate = gate;
            match p.kind {
                FaultKind::KillAgentMidRenewal => {
                    sleep_until(due + Duration::from_millis(u64::from(p.delay_ms)));
                    if let Err(e) = self.kill_and_restart(at) {
                        self.fail(at, format!("{e:#}"));
                        return;
                    }
                    self.log_fault(
                        at,
                        &p,
                        format!("SIGKILL at T1 of {id} ({mac}) + {} ms", p.delay_ms),
                    );
                    drop(w);
                    // The workers may go on while the renewal is awaited.
                    drop(_gate);
                    drop(_g);
                    // The restarted agent renews it: a later T1 within 20 s.
                    let renewed = lanlink_lab::wait_until(
                        Duration::from_secs(20),
                        "the lease renewed after the restart",
                        || {
                            Ok(checks::client(&self.lab)
                                .leases()
                                .ok()
                                .and_then(|l| l.into_iter().find(|l| l.container_id == id))
                                .filter(|l| l.renew_at > renew_at && l.state != "expired")
                                .map(drop))
                        },
                    );
                    if let Err(e) = renewed {
                        self.fail(
                            at,
                            format!(
                                "{id}: {e:#}\nagent log tail:\n{}",
                                self.lab.agent_log_tail(4000)
                            ),
                        );
                    }
                }
                FaultKind::DhcpNak => {
                    let extra = vec![format!("--dhcp-host={mac},{}", lab::NAK_ADDR)];
                    if let Err(e) = self.lab.dhcp.start(&extra) {
                        self.fail(at, format!("dnsmasq with a static lease: {e:#}"));
                        return;
                    }
                    let expired = lanlink_lab::wait_until(
                        Duration::from_secs(15),
                        "the resident's lease refused",
                        || {
                            let leases = checks::client(&self.lab).leases().ok();
                            Ok(leases.and_then(|l| {
                                match l.into_iter().find(|l| l.container_id == id) {
                                    None => Some("gone".to_owned()),
                                    Some(l) if l.state == "expired" => Some("expired".to_owned()),
                                    Some(l) if l.renew_at > renew_at => {
                                        Some(format!("renewed ({})", l.address))
                                    }
                                    _ => None,
                                }
                            }))
                        },
                    );
                    if let Err(e) = self.lab.dhcp.start(&[]) {
                        self.fail(at, format!("FATAL: dnsmasq does not come back: {e:#}"));
                        return;
                    }
                    drop(w);
                    let naks = self.lab.dhcp.log().matches("DHCPNAK").count();
                    match expired {
                        Ok(what) if what != "expired" && what != "gone" => {
                            self.note(at, format!("{id} was not NAKed: {what}; retrying"));
                            continue;
                        }
                        Ok(what) => {
                            lock(&self.tolerated_macs).insert(mac.to_ascii_lowercase(), "nak");
                            self.log_fault(
                            at,
                            &p,
                            format!(
                                "renewal of {id} ({mac}) NAKed: lease {what} ({naks} NAKs logged)"
                            ),
                            );
                        }
                        Err(e) => {
                            // No answer to that renewal (dnsmasq was
                            // restarting): the agent retries later, as it
                            // should; the NAK is tried at another renewal.
                            self.note(at, format!("{id} was not NAKed ({e:#}); retrying"));
                            continue;
                        }
                    }
                    // The pod has no address now: replace it, as a failing
                    // readiness probe would have it replaced.
                    let pod = {
                        let mut r = lock(&self.residents);
                        r.iter().position(|x| x.id == id).map(|i| r.remove(i))
                    };
                    if let Some(pod) = pod {
                        self.teardown(at, pod, false);
                    }
                    if let Err(e) = self.add_resident() {
                        self.fail(at, format!("no replacement resident: {e:#}"));
                    }
                }
                _ => unreachable!("only renewal-timed faults"),
            }
            return;
        }
        self.fail(
            at,
            format!("{} could not be placed at a renewal", p.kind.name()),
        );
    }

    /// The resident whose renewal (T1) comes next, at least 2 s from now.
    fn next_renewal(&self) -> Option<(String, String, u64)> {
        let residents: BTreeMap<String, String> = lock(&self.residents)
            .iter()
            .filter_map(|p| Some((p.id.clone(), p.mac.clone()?)))
            .collect();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        checks::client(&self.lab)
            .leases()
            .ok()?
            .into_iter()
            .filter(|l| l.renew_at >= now + 2 && l.renew_at != u64::MAX)
            .filter_map(|l| {
                Some((
                    l.container_id.clone(),
                    residents.get(&l.container_id)?.clone(),
                    l.renew_at,
                ))
            })
            .min_by_key(|(_, _, at)| *at)
    }

    fn sampler(&self) {
        while !self.sampler_stop.load(Ordering::SeqCst) {
            let pid = self.lab.agent_pid.load(Ordering::SeqCst);
            if let Some((rss_kib, fds, tasks)) = checks::resources(pid) {
                lock(&self.samples).push(Sample {
                    cycle: self.completed.load(Ordering::SeqCst),
                    t_s: (self.secs() * 10.0).round() / 10.0,
                    pid,
                    rss_kib,
                    fds,
                    tasks,
                });
            }
            std::thread::sleep(Duration::from_millis(1000));
        }
    }
}

fn sleep_until(t: SystemTime) {
    if let Ok(d) = t.duration_since(SystemTime::now()) {
        std::thread::sleep(d.min(Duration::from_secs(120)));
    }
}

/// The bound of the agent's resources, from the warm-up samples; a
/// failure for each sample after warm-up beyond it.
fn bound(samples: &[Sample], warmup_cycles: u32) -> (Bound, Vec<String>) {
    let warm: Vec<&Sample> = samples.iter().filter(|s| s.cycle < warmup_cycles).collect();
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.cycle >= warmup_cycles)
        .collect();
    let max = |v: &[&Sample], f: fn(&Sample) -> u64| v.iter().map(|s| f(s)).max().unwrap_or(0);
    let mut b = Bound {
        warmup_cycles,
        warm_rss_kib: max(&warm, |s| s.rss_kib),
        warm_fds: max(&warm, |s| s.fds),
        warm_tasks: max(&warm, |s| s.tasks),
        ..Bound::default()
    };
    b.max_rss_kib = b.warm_rss_kib * 3 / 2 + 16 * 1024;
    b.max_fds = b.warm_fds * 3 / 2 + 16;
    b.max_tasks = b.warm_tasks * 3 / 2 + 8;
    b.peak_rss_kib = max(&after, |s| s.rss_kib);
    b.peak_fds = max(&after, |s| s.fds);
    b.peak_tasks = max(&after, |s| s.tasks);
    let mut failures = Vec::new();
    if warm.is_empty() {
        failures.push("no resource sample during warm-up".to_owned());
    }
    for (what, peak, limit) in [
        ("RSS (KiB)", b.peak_rss_kib, b.max_rss_kib),
        ("fds", b.peak_fds, b.max_fds),
        ("tasks", b.peak_tasks, b.max_tasks),
    ] {
        if !warm.is_empty() && peak > limit {
            failures.push(format!(
                "the agent's {what} reached {peak} after warm-up, above the bound {limit}"
            ));
        }
    }
    (b, failures)
}

/// Runs the soak; writes the results and fails on any leak or failure.
/// The caller must have called [`private_mount_ns`] first.
pub fn run(opts: &Options) -> Result<()> {
    lanlink_lab::require_root();
    let seed = opts.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let workers = opts.workers.max(1);
    let plan = plan::plan(seed, opts.cycles, &opts.kinds);
    println!(
        "soak: {} cycles, {workers} workers, seed {seed} (replay: --cycles {} --seed {seed}); {} faults planned ({} per kind)",
        opts.cycles,
        opts.cycles,
        plan.by_cycle.len() + plan.renewal.len(),
        plan::per_kind(opts.cycles)
    );
    let bin_dir = opts.bin_dir.clone().unwrap_or_else(lanlink_lab::bin_dir);
    let mut lab = SoakLab::start(&bin_dir)?;
    lab.take_baseline()?;
    let ctx = Ctx {
        lab,
        seed,
        cycles: opts.cycles,
        workers,
        checkpoint_every: opts.checkpoint_every.max(workers),
        plan,
        started: Instant::now(),
        fault_lock: Mutex::new(()),
        clock: FaultClock::default(),
        registry: Mutex::new(BTreeSet::new()),
        residents: Mutex::new(Vec::new()),
        resident_seq: AtomicU32::new(0),
        next_resident: Mutex::new(Instant::now() + RESIDENT_STAGGER),
        injector_wants: AtomicBool::new(false),
        deleted: Mutex::new(VecDeque::new()),
        tolerated_macs: Mutex::new(BTreeMap::new()),
        tolerated: Mutex::new(BTreeMap::new()),
        calls: Mutex::new(BTreeMap::new()),
        faults: Mutex::new(BTreeMap::new()),
        fault_log: Mutex::new(Vec::new()),
        failures: Mutex::new(Vec::new()),
        leaks: Mutex::new(BTreeMap::new()),
        samples: Mutex::new(Vec::new()),
        checkpoints: AtomicU32::new(0),
        completed: AtomicU32::new(0),
        workers_done: AtomicBool::new(false),
        sampler_stop: AtomicBool::new(false),
        barrier: Barrier::new(workers as usize),
    };
    ctx.add_resident().context("the first resident pod")?;
    std::thread::scope(|s| {
        s.spawn(|| ctx.sampler());
        let injector = s.spawn(|| ctx.injector());
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let ctx = &ctx;
                s.spawn(move || ctx.worker(w))
            })
            .collect();
        for h in handles {
            if h.join().is_err() {
                lock(&ctx.failures).push("a worker panicked".into());
            }
        }
        ctx.workers_done.store(true, Ordering::SeqCst);
        if injector.join().is_err() {
            lock(&ctx.failures).push("the injector panicked".into());
        }
        // The last samples: the agent at rest after the run.
        std::thread::sleep(Duration::from_secs(2));
        ctx.sampler_stop.store(true, Ordering::SeqCst);
    });
    println!("soak: cycles done in {:.0} s; final checks", ctx.secs());
    {
        let _g = lock(&ctx.fault_lock);
        if !ctx.aborted() {
            ctx.checkpoint("final (residents attached)", true);
        }
        let residents: Vec<Pod> = std::mem::take(&mut *lock(&ctx.residents));
        let at = At {
            who: "final",
            cycle: ctx.cycles,
        };
        for pod in residents {
            ctx.teardown(at, pod, false);
        }
        if !ctx.aborted() {
            ctx.checkpoint("final (nothing attached)", false);
        }
    }

    let samples = lock(&ctx.samples).clone();
    let warmup = (ctx.cycles / 10)
        .max(workers * 2)
        .min(ctx.cycles.saturating_sub(1));
    let (resource_bound, resource_failures) = bound(&samples, warmup);
    lock(&ctx.failures).extend(resource_failures);
    let mut faults = lock(&ctx.faults).clone();
    // Each planned kind injected at least 80 % of its planned times (20 of
    // 25 in 1,000 cycles): a fault whose precondition never held would
    // otherwise pass unnoticed.
    let want = plan::per_kind(ctx.cycles) * 4 / 5;
    for kind in FaultKind::ALL {
        let n = *faults.entry(kind.name()).or_insert(0);
        let planned = opts.kinds.is_empty() || opts.kinds.contains(&kind);
        if planned && n < u64::from(want) {
            lock(&ctx.failures).push(format!(
                "{} injected {n} times, fewer than {want}",
                kind.name()
            ));
        }
    }
    let mut plan_list: Vec<Planned> = ctx.plan.by_cycle.values().copied().collect();
    plan_list.extend(ctx.plan.renewal.iter().copied());
    plan_list.sort_by_key(|p| p.cycle);
    let results = Results {
        cycles: ctx.cycles,
        seed,
        workers,
        duration_s: (ctx.secs() * 10.0).round() / 10.0,
        faults,
        calls: lock(&ctx.calls).clone(),
        leaks: lock(&ctx.leaks).clone(),
        tolerated: lock(&ctx.tolerated).clone(),
        resources: samples,
        resource_bound,
        checkpoints: ctx.checkpoints.load(Ordering::SeqCst),
        failures: lock(&ctx.failures).clone(),
        plan: plan_list,
        fault_log: lock(&ctx.fault_log).clone(),
    };
    // The logs, for a failure's investigation (never committed).
    let logs = lanlink_lab::workspace_root().join("target").join("soak");
    std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
    let agent_log = logs.join(format!("soak-{seed}-agent.log"));
    let dhcp_log = logs.join(format!("soak-{seed}-dnsmasq.log"));
    std::fs::copy(&ctx.lab.agent_log, &agent_log).context("copy the agent's log")?;
    std::fs::write(&dhcp_log, ctx.lab.dhcp.log()).context("write dnsmasq's log")?;
    report::write_json(&results, &opts.out)?;
    let chart = opts.out.with_extension("png");
    report::write_chart(&results, &chart)?;
    println!(
        "soak: {} cycles in {:.0} s, seed {seed}\n  faults {:?}\n  calls {:?}\n  leaks {:?}\n  agent RSS peak {} KiB (bound {}), fds {} ({}), tasks {} ({})\n  results: {}, {}",
        results.cycles,
        results.duration_s,
        results.faults,
        results.calls,
        results.leaks,
        results.resource_bound.peak_rss_kib,
        results.resource_bound.max_rss_kib,
        results.resource_bound.peak_fds,
        results.resource_bound.max_fds,
        results.resource_bound.peak_tasks,
        results.resource_bound.max_tasks,
        opts.out.display(),
        chart.display()
    );
    let leaked: u64 = results.leaks.values().sum();
    if !results.failures.is_empty() || leaked > 0 {
        eprintln!("soak: FAILED with seed {seed}; the fault sequence:");
        for e in &results.fault_log {
            eprintln!(
                "  [{:7.1}s] cycle {} {} {} (delay {} ms): {}",
                e.t_s, e.cycle, e.worker, e.kind, e.delay_ms, e.detail
            );
        }
        eprintln!(
            "soak: logs: {} and {}",
            agent_log.display(),
            dhcp_log.display()
        );
        eprintln!("soak: failures:");
        for f in &results.failures {
            eprintln!("  - {}", f.lines().next().unwrap_or(f));
        }
        bail!(
            "the soak failed: {} failures, {leaked} leaked objects (seed {seed}; replay with --cycles {} --seed {seed})",
            results.failures.len(),
            results.cycles
        );
    }
    Ok(())
}
