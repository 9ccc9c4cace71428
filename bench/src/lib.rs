//! `lanlink-bench`: lanlink against the physical limit and against the
//! Linux bridge + iptables path, side by side in one lab, interleaved; and
//! the agent's DEL and metrics scrape with a full flow table.
//!
//! `cargo xtask bench` builds the binaries and runs this crate's
//! `lanlink-bench` binary ([`Options`] are its flags). Phases ([`Phase`]):
//!
//! 1. `datapath`: per repetition, `limit`, then `lanlink` and `bridge` with
//!    0, 1,000 and 10,000 FORWARD rules ([`rules`]), alternating: TCP
//!    throughput pod → LAN host and pod → pod, the 64-byte UDP packet rate,
//!    1-byte TCP request/response p50/p99 ([`measure`]), on the lab of
//!    [`topo`].
//! 2. `cni`: ADD latency of lanlink and the reference `bridge` + `dhcp`
//!    plugins ([`cni`]).
//! 3. `attach`: CNI ADD latency and a batch of concurrent ADDs with each
//!    attach backend of the agent (`--attach tcx`, `--attach tc`)
//!    ([`attach`]).
//! 4. `scale`: 1, 50 and 250 pods attached (lanlink's by concurrent ADDs,
//!    timed), the agent's memory, throughput and latency at each level.
//! 5. `flows65k`: a scrape of `GET /metrics` and a CNI DEL with the pinned
//!    `FLOWS` map full (65,536 entries) and empty, in a lab of its own
//!    ([`flows65k`]).
//! 6. `ipv6`: CNI ADD latency on LANs with router advertisements (SLAAC
//!    from radvd, DHCPv6 from dnsmasq), every result checked to carry an
//!    IPv6 address, and TCP pod → LAN host over IPv6 against the limit, in
//!    labs of their own ([`ipv6`]).
//!
//! Results ([`report`], [`charts`]): `results.md`, `results.json` and PNG
//! charts in `bench/results/` (`--quick`: `target/bench-quick/`; `--only`:
//! `target/bench-only/`). A run fails (exit non-zero) when any variant
//! produced no numbers; the targets are reported, never asserted.

pub mod attach;
pub mod charts;
pub mod cni;
pub mod flows65k;
pub mod ipv6;
pub mod measure;
pub mod report;
pub mod rules;
pub mod stats;
pub mod topo;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use measure::Tools;
use report::{CaseResult, Metric, Results, RssResult, ScaleResult};
use stats::Summary;
use topo::{LAN_HOST_IP, Topology, Variant};

/// A part of the benchmark that `--only` can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Phase {
    /// Throughput, packet rate and latency of every variant and rule count.
    Datapath,
    /// CNI ADD latency, lanlink against the reference plugins.
    Cni,
    /// CNI ADD and concurrent ADDs with each attach backend (TCX, clsact).
    Attach,
    /// 1 to 250 pods per node: concurrent ADDs, memory, throughput, latency.
    Scale,
    /// `GET /metrics` and CNI DEL with a full and an empty `FLOWS` map.
    Flows65k,
    /// CNI ADD with IPv6 on (SLAAC, DHCPv6), TCP pod → LAN host over IPv6.
    Ipv6,
}

impl Phase {
    /// Every phase, in the order a run does them.
    pub const ALL: [Phase; 6] = [
        Phase::Datapath,
        Phase::Cni,
        Phase::Attach,
        Phase::Scale,
        Phase::Flows65k,
        Phase::Ipv6,
    ];

    /// Whether the phase needs the three-variant lab of [`topo`].
    fn needs_topology(self) -> bool {
        !matches!(self, Phase::Flows65k | Phase::Ipv6)
    }

    /// Whether the report's targets are about the phase's numbers.
    fn has_targets(self) -> bool {
        self != Phase::Flows65k
    }
}

/// What one run does: `lanlink-bench`'s flags.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "lanlink-bench",
    version,
    about = "Benchmark lanlink against the physical limit and bridge + iptables \
             (normally run by `cargo xtask bench`, which builds the binaries first)"
)]
pub struct Options {
    /// One repetition, short runs, few pods (results in
    /// target/bench-quick/); fails unless every variant produced numbers.
    #[arg(long)]
    pub quick: bool,
    /// Directory for results.md, results.json and the PNG charts (default
    /// bench/results/, target/bench-quick/ with --quick, target/bench-only/
    /// with --only).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Measure nothing: render results.md and the charts again from the
    /// directory's results.json.
    #[arg(long)]
    pub render: bool,
    /// Run only these phases (repeat the flag or separate with commas).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Phase>,
    /// Where `lanlinkd` and the `lanlink` plugin are (e.g. another
    /// checkout's target/release, to measure an older agent).
    #[arg(long, default_value_os_t = lanlink_lab::bin_dir())]
    pub bin_dir: PathBuf,
    /// Where the lab's traffic tools (`lab-rr`, `lab-udpflood`) are
    /// (default: the directory of this binary).
    #[arg(long)]
    pub tools_dir: Option<PathBuf>,
    /// The Cargo profile the binaries were built with, for the report.
    #[arg(long, default_value = "release")]
    pub profile: String,
}

impl Options {
    /// The phases this run does, in run order.
    pub fn phases(&self) -> Vec<Phase> {
        Phase::ALL
            .into_iter()
            .filter(|p| self.only.is_empty() || self.only.contains(p))
            .collect()
    }

    /// Where results go: `--out`, else the default for the run's kind.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let root = lanlink_lab::workspace_root();
            if !self.only.is_empty() {
                // A partial run must not overwrite the full results.
                root.join("target").join("bench-only")
            } else if self.quick {
                root.join("target").join("bench-quick")
            } else {
                root.join("bench").join("results")
            }
        })
    }
}

/// How much a run measures.
#[derive(Clone, Debug)]
struct Plan {
    quick: bool,
    reps: usize,
    scale_reps: usize,
    tcp_secs: u32,
    udp_secs: f64,
    rr_count: usize,
    rr_secs: u64,
    cni_pods: usize,
    concurrent: usize,
    scale_levels: Vec<usize>,
    /// ADDs per series on each IPv6 LAN.
    ipv6_pods: usize,
    /// Upper bound on the life of every server the lab starts.
    budget: Duration,
}

impl Plan {
    fn full() -> Self {
        Self {
            quick: false,
            reps: 5,
            scale_reps: 5,
            tcp_secs: 5,
            udp_secs: 3.0,
            rr_count: 20_000,
            rr_secs: 5,
            cni_pods: 20,
            concurrent: 100,
            scale_levels: vec![1, 50, 250],
            ipv6_pods: 20,
            budget: Duration::from_secs(3 * 3600),
        }
    }

    fn quick() -> Self {
        Self {
            quick: true,
            reps: 1,
            scale_reps: 1,
            tcp_secs: 1,
            udp_secs: 1.0,
            rr_count: 2_000,
            rr_secs: 2,
            cni_pods: 5,
            concurrent: 10,
            scale_levels: vec![1, 20],
            ipv6_pods: 2,
            budget: Duration::from_secs(20 * 60),
        }
    }
}

/// Runs the benchmark as `opts` says: renders, or measures with the
/// binaries in `opts.bin_dir` and writes the results; fails if any phase
/// run produced no numbers.
pub fn run(opts: &Options) -> Result<()> {
    let out = opts.out_dir();
    if opts.render {
        return render(&out);
    }
    let tools = Tools {
        dir: match &opts.tools_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_exe()
                .context("cannot find this binary's directory")?
                .parent()
                .map(Path::to_path_buf)
                .context("this binary has no directory")?,
        },
    };
    let plan = if opts.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let phases = opts.phases();
    lanlink_lab::install_signal_handler();
    lanlink_lab::sweep_leftovers();

    let started = Instant::now();
    let mut results = Results {
        meta: meta(&plan, opts),
        ..Results::default()
    };
    println!(
        "== bench{}: {} repetition(s), phases {phases:?}, binaries in {}, results in {}",
        if opts.quick { " --quick" } else { "" },
        plan.reps,
        opts.bin_dir.display(),
        out.display()
    );
    loadavg(&mut results, "start");
    let mut outcome = Ok(());
    if phases.iter().any(|p| p.needs_topology()) {
        outcome = measure_all(&plan, &phases, &opts.bin_dir, &tools, &mut results);
    }
    // The lab is gone here, whatever happened.
    if outcome.is_ok() && phases.contains(&Phase::Flows65k) {
        println!("\n== flows65k: GET /metrics and CNI DEL, FLOWS full and empty");
        outcome = flows65k::run(&flows65k_plan(&plan), &opts.bin_dir, &mut results);
        loadavg(&mut results, "flows65k end");
    }
    if outcome.is_ok() && phases.contains(&Phase::Ipv6) {
        println!(
            "\n== ipv6: CNI ADD on SLAAC and DHCPv6 LANs ({} per series), TCP pod → LAN host over IPv6",
            plan.ipv6_pods
        );
        loadavg(&mut results, "ipv6 start");
        outcome = ipv6::run(&ipv6_plan(&plan), &opts.bin_dir, &logs_dir(), &mut results);
        loadavg(&mut results, "ipv6 end");
    }
    if let Err(e) = &outcome {
        println!("bench aborted: {e:#}");
        results.errors.push(format!("run aborted: {e:#}"));
    }
    loadavg(&mut results, "end");
    results.meta.duration_secs = started.elapsed().as_secs_f64();

    // The targets are about the three-variant lab's phases and IPv6.
    if phases.iter().any(|p| p.has_targets()) {
        println!("\n== targets (goals, not assertions)");
        for t in results.targets() {
            println!("{:<70} {:>14}  {}", t.what, t.value_text(), t.verdict());
        }
        println!();
    }
    let written = write_outputs(&results, &out);
    println!("took {:.0} s", results.meta.duration_secs);

    outcome?;
    written?;
    let missing = results.missing(&phases);
    if !missing.is_empty() {
        bail!(
            "the benchmark is incomplete:\n  {}\nerrors:\n  {}",
            missing.join("\n  "),
            results.errors.join("\n  ")
        );
    }
    // The quick run is CI's: issue 7 gives it 5 minutes (the measuring,
    // not the build before it).
    if opts.quick && results.meta.duration_secs > QUICK_LIMIT_SECS {
        bail!(
            "bench --quick took {:.0} s, over its {QUICK_LIMIT_SECS:.0} s budget",
            results.meta.duration_secs
        );
    }
    Ok(())
}

/// How many samples the flows65k phase takes in this run.
fn flows65k_plan(plan: &Plan) -> flows65k::Plan {
    if plan.quick {
        flows65k::Plan::quick()
    } else {
        flows65k::Plan::full()
    }
}

/// What the ipv6 phase measures in this run.
fn ipv6_plan(plan: &Plan) -> ipv6::Plan {
    ipv6::Plan {
        pods: plan.ipv6_pods,
        reps: plan.reps,
        tcp_secs: plan.tcp_secs,
        warm_up: !plan.quick,
        ipv4_control: !plan.quick,
        budget: plan.budget,
    }
}

/// Where the labs' logs are kept after a run.
fn logs_dir() -> PathBuf {
    lanlink_lab::workspace_root()
        .join("target")
        .join("bench-logs")
}

/// Writes `results.md` and the charts of `out/results.json` again.
fn render(out: &Path) -> Result<()> {
    let json = out.join("results.json");
    let text = std::fs::read_to_string(&json)
        .with_context(|| format!("cannot read {}", json.display()))?;
    let results: Results = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a run's results", json.display()))?;
    // The JSON stays as the run wrote it (a float's last digit may not
    // survive a parse and print).
    write_report(&results, out)
}

/// Writes `results.json`, `results.md` and the charts into `out`.
fn write_outputs(results: &Results, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let json = out.join("results.json");
    std::fs::write(&json, results.to_json())
        .with_context(|| format!("cannot write {}", json.display()))?;
    println!("wrote {}", json.display());
    write_report(results, out)
}

/// Writes `results.md` and the charts into `out`.
fn write_report(results: &Results, out: &Path) -> Result<()> {
    let md = out.join("results.md");
    std::fs::write(&md, results.to_markdown())
        .with_context(|| format!("cannot write {}", md.display()))?;
    println!("wrote {}", md.display());
    // The charts show the three-variant lab's phases; a run of flows65k
    // alone has none of their numbers.
    if !(results.datapath.is_empty() && results.cni_add.is_empty() && results.scale.is_empty()) {
        for f in charts::write_all(results, out)? {
            println!("wrote {}", f.display());
        }
    } else if let Some(r) = &results.ipv6 {
        let f = charts::write_ipv6(r, out)?;
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// The longest `bench --quick` may take.
const QUICK_LIMIT_SECS: f64 = 300.0;

/// Builds the three-variant lab and runs the phases of `phases` that need
/// it; measurement failures are recorded in `results.errors`, setup
/// failures end the run.
fn measure_all(
    plan: &Plan,
    phases: &[Phase],
    bin_dir: &Path,
    tools: &Tools,
    results: &mut Results,
) -> Result<()> {
    println!("\n== lab: LAN, LAN host, limit pods, lanlink node and pods, bridge node and pods");
    let mut topo = Topology::new(bin_dir, tools.clone(), plan.budget)?;
    results.meta.attach = lanlink_lab::pods::agent_status(&topo.lanlink.agent)?["attach"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for v in Variant::ALL {
        let pods = topo.pods(v);
        println!(
            "{:<8} pod A {} → LAN host {LAN_HOST_IP}, pod B {}",
            v.name(),
            pods[0].ip,
            pods[1].ip
        );
    }

    let outcome = run_phases(plan, phases, &mut topo, results);
    let logs = logs_dir();
    match topo.save_logs(&logs) {
        Ok(()) => println!(
            "lab logs (agent, dnsmasq, reference dhcp daemon) in {}",
            logs.display()
        ),
        Err(e) => println!("cannot save the lab's logs: {e:#}"),
    }
    outcome
}

/// The phases of `phases` that run on the three-variant lab, in order.
fn run_phases(
    plan: &Plan,
    phases: &[Phase],
    topo: &mut Topology,
    results: &mut Results,
) -> Result<()> {
    if phases.contains(&Phase::Datapath) {
        println!("\n== warm-up (not recorded)");
        for v in Variant::ALL {
            let got = measure_case(plan, topo, v, false);
            println!("{:<12} {}", v.name(), report_line(&got));
        }

        println!("\n== datapath");
        loadavg(results, "datapath start");
        datapath(plan, topo, results)?;
        loadavg(results, "datapath end");
    }

    if phases.contains(&Phase::Cni) {
        println!("\n== CNI ADD latency ({} pods per plugin)", plan.cni_pods);
        match cni::add_latency(topo, plan.cni_pods) {
            Ok(series) => {
                for r in &series {
                    println!(
                        "{:<24} p50 {} p99 {} ({} ADDs, {} failures)",
                        r.plugin,
                        ms(r.p50_ms),
                        ms(r.p99_ms),
                        r.samples_ms.len(),
                        r.failures.len()
                    );
                    for f in &r.failures {
                        results.errors.push(format!("CNI ADD {}: {f}", r.plugin));
                    }
                }
                results.cni_add = series;
            }
            Err(e) => results.errors.push(format!("CNI ADD latency: {e:#}")),
        }
        loadavg(results, "CNI end");
    }

    if phases.contains(&Phase::Attach) {
        attach::phase(topo, plan.cni_pods, plan.concurrent, results);
        loadavg(results, "attach end");
    }

    if phases.contains(&Phase::Scale) {
        println!("\n== scale");
        scale(plan, topo, results)?;
        loadavg(results, "scale end");
    }
    Ok(())
}

/// The cases in interleaving order: limit, then lanlink and bridge at each
/// rule count.
fn cases() -> Vec<(Variant, usize)> {
    let mut cases = vec![(Variant::Limit, 0)];
    for rules in rules::COUNTS {
        cases.push((Variant::Lanlink, rules));
        cases.push((Variant::Bridge, rules));
    }
    cases
}

fn case_label(v: Variant, rules: usize) -> String {
    match v {
        Variant::Limit => "limit".to_owned(),
        _ => format!("{}/{}", v.name(), rules::label(rules)),
    }
}

fn datapath(plan: &Plan, topo: &Topology, results: &mut Results) -> Result<()> {
    let cases = cases();
    let mut samples: BTreeMap<String, BTreeMap<&'static str, Vec<f64>>> = BTreeMap::new();
    for rep in 1..=plan.reps {
        for &(v, rules) in &cases {
            let case = case_label(v, rules);
            let node = match v {
                Variant::Limit => None,
                Variant::Lanlink => Some(topo.lanlink.node.ns()),
                Variant::Bridge => Some(topo.bridge.node.ns()),
            };
            if let Some(ns) = node
                && let Err(e) = rules::load(ns, rules)
            {
                results
                    .errors
                    .push(format!("{case}: loading the rules: {e:#}"));
                continue;
            }
            let got = measure_case(plan, topo, v, true);
            let line = report_line(&got);
            println!("[{rep}/{}] {case:<12} {line}", plan.reps);
            let entry = samples.entry(case.clone()).or_default();
            for (metric, value) in got {
                match value {
                    Ok(x) => entry.entry(metric.key).or_default().push(x),
                    Err(e) => results
                        .errors
                        .push(format!("{case} rep {rep} {}: {e:#}", metric.label)),
                }
            }
        }
    }
    for ns in [topo.lanlink.node.ns(), topo.bridge.node.ns()] {
        rules::load(ns, 0)?;
    }
    for &(v, rules) in &cases {
        let case = case_label(v, rules);
        let metrics = summarise(samples.remove(&case).unwrap_or_default());
        results.datapath.push(CaseResult {
            case,
            variant: v.name().to_owned(),
            rules,
            metrics,
        });
    }
    Ok(())
}

/// One round of measurements of variant `v` from its pod A; pod → pod and
/// the packet rate only when `full`.
fn measure_case(
    plan: &Plan,
    topo: &Topology,
    v: Variant,
    full: bool,
) -> Vec<(Metric, Result<f64>)> {
    let pods = topo.pods(v);
    let a = &pods[0].ns;
    let host = topo.host.ns();
    let mut got = vec![(
        report::TCP_POD_LAN,
        measure::tcp_throughput(a, LAN_HOST_IP, plan.tcp_secs),
    )];
    if full {
        let pod_pod = match pods.get(1) {
            Some(b) => measure::tcp_throughput(a, b.ip, plan.tcp_secs),
            None => Err(anyhow::anyhow!("no pod B")),
        };
        got.push((report::TCP_POD_POD, pod_pod));
        got.push((
            report::UDP_PPS,
            measure::udp_rate(&topo.tools, a, host, LAN_HOST_IP, plan.udp_secs),
        ));
    }
    match measure::request_response(&topo.tools, a, LAN_HOST_IP, plan.rr_count, plan.rr_secs) {
        Ok((p50, p99)) => {
            got.push((report::RR_P50, Ok(p50)));
            got.push((report::RR_P99, Ok(p99)));
        }
        Err(e) => {
            got.push((report::RR_P50, Err(anyhow::anyhow!("{e:#}"))));
            got.push((report::RR_P99, Err(e)));
        }
    }
    got
}

fn report_line(got: &[(Metric, Result<f64>)]) -> String {
    got.iter()
        .map(|(m, v)| match v {
            Ok(x) => format!(
                "{} {} {}",
                m.key,
                report::fmt(*m, *x),
                report::display_unit(*m)
            ),
            Err(_) => format!("{} FAILED", m.key),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn summarise(samples: BTreeMap<&'static str, Vec<f64>>) -> BTreeMap<String, Summary> {
    report::DATAPATH_METRICS
        .iter()
        .filter_map(|m| {
            let s = Summary::of(m.unit, samples.get(m.key)?)?;
            Some((m.key.to_owned(), s))
        })
        .collect()
}

fn scale(plan: &Plan, topo: &mut Topology, results: &mut Results) -> Result<()> {
    topo.remove_pod_b()?;
    for &level in &plan.scale_levels {
        topo.grow_idle(Variant::Limit, level)?;
        topo.grow_idle(Variant::Bridge, level)?;
        let before = results.concurrent_add.len();
        let grown = cni::grow_lanlink(topo, level, plan.concurrent, &mut results.concurrent_add);
        // Failures are kept with their batch (results.md groups them).
        for b in &results.concurrent_add[before..] {
            println!(
                "{} concurrent lanlink ADDs with {} pods attached: {:.0} ms, {} failed",
                b.pods, b.attached_before, b.wall_ms, b.failures
            );
            if let Some(e) = &b.first_error {
                println!("  first error: {e}");
            }
        }
        grown?;
        let pid = topo
            .lanlink
            .agent
            .pid()
            .context("the agent is not running")?;
        let rss = measure::rss_kb(pid)?;
        println!(
            "{level} pods attached per variant; lanlinkd VmRSS {:.1} MB",
            rss as f64 / 1024.0
        );
        results.agent_rss.push(RssResult {
            pods: level,
            vm_rss_kb: rss,
        });
        let mut samples: BTreeMap<Variant, BTreeMap<&'static str, Vec<f64>>> = BTreeMap::new();
        for rep in 1..=plan.scale_reps {
            for v in Variant::ALL {
                let got = measure_case(plan, topo, v, false);
                println!(
                    "[{rep}/{}] {:<8} {level:>3} pods  {}",
                    plan.scale_reps,
                    v.name(),
                    report_line(&got)
                );
                for (metric, value) in got {
                    match value {
                        Ok(x) => samples
                            .entry(v)
                            .or_default()
                            .entry(metric.key)
                            .or_default()
                            .push(x),
                        Err(e) => results.errors.push(format!(
                            "scale {} {level} pods rep {rep} {}: {e:#}",
                            v.name(),
                            metric.label
                        )),
                    }
                }
            }
        }
        for v in Variant::ALL {
            results.scale.push(ScaleResult {
                variant: v.name().to_owned(),
                pods: level,
                metrics: summarise(samples.remove(&v).unwrap_or_default()),
            });
        }
    }
    Ok(())
}

/// `v` ms with one decimal, or a dash.
fn ms(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.1} ms"))
}

/// Appends `/proc/loadavg` now, labelled `when`.
fn loadavg(results: &mut Results, when: &str) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ");
    results.meta.loadavg.push((when.to_owned(), load));
}

/// The commit the binaries in `bin_dir` were built from: `git rev-parse
/// --short HEAD` of the checkout holding `bin_dir` (the workspace's own
/// for the default `target/`, another worktree's for `--bin-dir`), with
/// `-dirty` when that tree has uncommitted changes (the binaries were built
/// from the tree, not HEAD); the results of an earlier run in
/// `bench/results/` do not count.
fn git_commit(bin_dir: &Path) -> String {
    let top = stdout_of(
        Command::new("git")
            .arg("-C")
            .arg(bin_dir)
            .args(["rev-parse", "--show-toplevel"]),
    );
    let top = match top.trim() {
        "" => lanlink_lab::workspace_root(),
        t => PathBuf::from(t),
    };
    let git = || {
        let mut c = Command::new("git");
        c.arg("-C").arg(&top);
        c
    };
    let head = stdout_of(git().args(["rev-parse", "--short", "HEAD"]));
    let dirty = !stdout_of(git().args([
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":(exclude)bench/results",
    ]))
    .trim()
    .is_empty();
    format!("{}{}", head.trim(), if dirty { "-dirty" } else { "" })
}

/// Runs `cmd` quietly and returns its stdout (empty if it fails to start).
fn stdout_of(cmd: &mut Command) -> String {
    cmd.stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The run's description: machine, versions, settings.
fn meta(plan: &Plan, opts: &Options) -> report::Meta {
    let first_line = |cmd: &mut Command| {
        stdout_of(cmd)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let mut versions = BTreeMap::new();
    versions.insert(
        "iperf3".to_owned(),
        first_line(Command::new("iperf3").arg("--version")),
    );
    versions.insert(
        "dnsmasq".to_owned(),
        first_line(Command::new("dnsmasq").arg("--version")),
    );
    versions.insert(
        "radvd".to_owned(),
        first_line(Command::new("radvd").arg("--version")),
    );
    versions.insert(
        "iptables".to_owned(),
        first_line(Command::new("iptables").arg("-V")),
    );
    versions.insert(
        "containernetworking-plugins".to_owned(),
        first_line(Command::new("dpkg-query").args([
            "-W",
            "-f=${Version}",
            "containernetworking-plugins",
        ])),
    );
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default();
    report::Meta {
        date: first_line(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        // Read from the agent once it runs.
        attach: String::new(),
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        git_commit: git_commit(&opts.bin_dir),
        quick: plan.quick,
        profile: opts.profile.clone(),
        repetitions: plan.reps,
        scale_repetitions: plan.scale_reps,
        tcp_secs: plan.tcp_secs,
        udp_secs: plan.udp_secs,
        udp_frame_bytes: measure::UDP_PAYLOAD + 8 + 20 + 14 + 4,
        rr_round_trips: plan.rr_count,
        iptables_rule: rules::RULE_TEMPLATE.to_owned(),
        versions,
        loadavg: Vec::new(),
        duration_secs: 0.0,
    }
}
