//! The results of a run: the JSON document (`results.json`) and the
//! Markdown report (`results.md`) with the headline ratios against the
//! issue's targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::Phase;
use crate::cni;
use crate::flows65k::Flows65kResult;
use crate::ipv6::{self, Ipv6Result, Lan6};
use crate::ms;
use crate::stats::Summary;

/// A datapath metric: key in JSON, label, unit, whether more is better.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// Key in `metrics` maps.
    pub key: &'static str,
    /// Human label.
    pub label: &'static str,
    /// Unit of its numbers.
    pub unit: &'static str,
}

/// TCP pod → LAN host.
pub const TCP_POD_LAN: Metric = Metric {
    key: "tcp_pod_lan",
    label: "TCP pod → LAN host",
    unit: "Gbit/s",
};
/// TCP pod → pod on the same node.
pub const TCP_POD_POD: Metric = Metric {
    key: "tcp_pod_pod",
    label: "TCP pod → pod",
    unit: "Gbit/s",
};
/// 64-byte UDP packets delivered pod → LAN host.
pub const UDP_PPS: Metric = Metric {
    key: "udp_pps",
    label: "UDP 64 B pod → LAN host",
    unit: "pps",
};
/// 1-byte TCP request/response, median round trip.
pub const RR_P50: Metric = Metric {
    key: "rr_p50",
    label: "TCP 1 B RR p50",
    unit: "us",
};
/// 1-byte TCP request/response, 99th percentile round trip.
pub const RR_P99: Metric = Metric {
    key: "rr_p99",
    label: "TCP 1 B RR p99",
    unit: "us",
};

/// Every datapath metric, in table order.
pub const DATAPATH_METRICS: [Metric; 5] = [TCP_POD_LAN, TCP_POD_POD, UDP_PPS, RR_P50, RR_P99];
/// The metrics of the scale phase.
pub const SCALE_METRICS: [Metric; 3] = [TCP_POD_LAN, RR_P50, RR_P99];

/// What was run, where, and how loaded the machine was.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    /// Start of the run, UTC, RFC 3339.
    pub date: String,
    /// `uname -r`.
    pub kernel: String,
    /// How lanlinkd attached its programs (`tcx` or `tc`; `LANLINK_ATTACH`
    /// chooses), from its status; empty in runs before it was recorded.
    #[serde(default)]
    pub attach: String,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// `git rev-parse --short HEAD` of the tree measured.
    pub git_commit: String,
    /// `--quick` run.
    pub quick: bool,
    /// Cargo profile of lanlinkd and the CNI plugin.
    pub profile: String,
    /// Repetitions of every datapath case.
    pub repetitions: usize,
    /// Repetitions at every scale level.
    pub scale_repetitions: usize,
    /// iperf3 `--time` of one TCP run, seconds.
    pub tcp_secs: u32,
    /// Duration of one UDP blast, seconds.
    pub udp_secs: f64,
    /// Ethernet frame size of the UDP test, FCS included.
    pub udp_frame_bytes: usize,
    /// Round trips per request/response run.
    pub rr_round_trips: usize,
    /// One of the FORWARD rules (`i` from 0 to N-1).
    pub iptables_rule: String,
    /// Versions of the tools and the reference plugins.
    pub versions: BTreeMap<String, String>,
    /// /proc/loadavg at the start and end of each phase (`<phase> start`).
    pub loadavg: Vec<(String, String)>,
    /// Wall time of the whole run, seconds.
    pub duration_secs: f64,
}

/// One datapath case (variant and rule count) over all repetitions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseResult {
    /// `limit`, `lanlink/1k`, `bridge/10k`, …
    pub case: String,
    /// `limit`, `lanlink` or `bridge`.
    pub variant: String,
    /// FORWARD rules in the node (0 for limit, which has no node).
    pub rules: usize,
    /// Metric key → summary over the repetitions.
    pub metrics: BTreeMap<String, Summary>,
}

/// CNI ADD latency of one plugin, pods added one after another.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CniResult {
    /// `lanlink` or `reference bridge+dhcp`.
    pub plugin: String,
    /// Wall time of each successful ADD, ms, in order.
    pub samples_ms: Vec<f64>,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 99th percentile (nearest rank: the maximum under 100 samples).
    pub p99_ms: Option<f64>,
    /// Failed ADDs, with the plugin's error.
    pub failures: Vec<String>,
}

/// A batch of concurrent lanlink ADDs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConcurrentResult {
    /// ADDs started at once.
    pub pods: usize,
    /// Pods already attached to the node before the batch.
    pub attached_before: usize,
    /// From the first start to the last result, ms.
    pub wall_ms: f64,
    /// ADDs that failed (retried in a later batch).
    pub failures: usize,
    /// The first failure's error.
    pub first_error: Option<String>,
}

/// The agent's resident memory with some pods attached.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RssResult {
    /// Pods attached.
    pub pods: usize,
    /// `VmRSS` from /proc/<pid>/status, kB.
    pub vm_rss_kb: u64,
}

/// One variant at one scale level.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleResult {
    /// `limit`, `lanlink` or `bridge` (0 rules).
    pub variant: String,
    /// Pods attached to the node (for limit: to the LAN bridge).
    pub pods: usize,
    /// Metric key → summary over the repetitions.
    pub metrics: BTreeMap<String, Summary>,
}

/// Everything a run produced.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    /// Run information.
    pub meta: Meta,
    /// Datapath cases in interleaving order.
    pub datapath: Vec<CaseResult>,
    /// CNI ADD latency, lanlink then the reference.
    pub cni_add: Vec<CniResult>,
    /// Concurrent ADD batches.
    pub concurrent_add: Vec<ConcurrentResult>,
    /// CNI ADD with each attach backend (absent from runs before it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attach: Vec<crate::attach::AttachResult>,
    /// Agent memory by pod count.
    pub agent_rss: Vec<RssResult>,
    /// Scale phase.
    pub scale: Vec<ScaleResult>,
    /// DEL and a metrics scrape with a full and an empty `FLOWS` map (absent
    /// from runs before the phase existed, and from runs without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows65k: Option<Flows65kResult>,
    /// CNI ADD with IPv6 on and TCP over IPv6 (absent from runs before the
    /// phase existed, and from runs without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Result>,
    /// Measurements that failed (the run still reports the rest).
    pub errors: Vec<String>,
}

impl Results {
    /// The median of `metric` for datapath case `case`.
    pub fn median(&self, case: &str, metric: Metric) -> Option<f64> {
        self.datapath
            .iter()
            .find(|c| c.case == case)?
            .metrics
            .get(metric.key)
            .map(|s| s.median)
    }

    /// `case`'s median over limit's, for `metric`.
    pub fn ratio(&self, case: &str, metric: Metric) -> Option<f64> {
        Some(self.median(case, metric)? / self.median("limit", metric)?)
    }

    /// The concurrent batch that is the headline: the first of the largest.
    pub fn headline_concurrent(&self) -> Option<&ConcurrentResult> {
        self.concurrent_add.iter().rev().max_by_key(|c| c.pods)
    }

    /// What is missing for the run to count (`--quick` checks only this):
    /// every variant must have produced numbers in every section.
    pub fn missing(&self, phases: &[Phase]) -> Vec<String> {
        let mut missing = Vec::new();
        if phases.contains(&Phase::Datapath) {
            self.missing_datapath(&mut missing);
        }
        if phases.contains(&Phase::Cni) {
            self.missing_cni(&mut missing);
        }
        if phases.contains(&Phase::Attach) {
            for backend in crate::attach::BACKENDS {
                match self.attach.iter().find(|a| a.backend == backend) {
                    Some(a) if a.add_samples_ms.is_empty() => {
                        missing.push(format!("attach {backend}: no successful ADD"));
                    }
                    Some(_) => {}
                    None => missing.push(format!("attach {backend}: not measured")),
                }
            }
        }
        if phases.contains(&Phase::Scale) {
            self.missing_scale(&mut missing);
        }
        if phases.contains(&Phase::Flows65k) {
            match &self.flows65k {
                Some(f) => missing.extend(f.missing()),
                None => missing.push("no flows65k numbers".to_owned()),
            }
        }
        if phases.contains(&Phase::Ipv6) {
            match &self.ipv6 {
                Some(r) => missing.extend(r.missing()),
                None => missing.push("no ipv6 numbers".to_owned()),
            }
        }
        missing
    }

    fn missing_datapath(&self, missing: &mut Vec<String>) {
        for c in &self.datapath {
            for m in DATAPATH_METRICS {
                if !c.metrics.contains_key(m.key) {
                    missing.push(format!("datapath {}: no {}", c.case, m.label));
                }
            }
        }
        if self.datapath.is_empty() {
            missing.push("no datapath case ran".to_owned());
        }
    }

    fn missing_cni(&self, missing: &mut Vec<String>) {
        for c in &self.cni_add {
            if c.samples_ms.is_empty() {
                missing.push(format!("CNI ADD {}: no successful ADD", c.plugin));
            }
        }
        for series in [cni::LANLINK, cni::LANLINK_NO_PROBE, cni::REFERENCE] {
            if !self.cni_add.iter().any(|c| c.plugin == series) {
                missing.push(format!("CNI ADD latency of {series}"));
            }
        }
    }

    fn missing_scale(&self, missing: &mut Vec<String>) {
        if self.concurrent_add.is_empty() {
            missing.push("no concurrent ADD batch".to_owned());
        }
        if self.agent_rss.len() < 2 {
            missing.push("agent RSS at the smallest and largest pod count".to_owned());
        }
        for s in &self.scale {
            for m in SCALE_METRICS {
                if !s.metrics.contains_key(m.key) {
                    missing.push(format!(
                        "scale {} at {} pods: no {}",
                        s.variant, s.pods, m.label
                    ));
                }
            }
        }
        if self.scale.is_empty() {
            missing.push("no scale level ran".to_owned());
        }
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The Markdown report.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.meta;
        let _ = writeln!(md, "# lanlink benchmark results\n");
        let _ = writeln!(
            md,
            "Produced by `cargo xtask bench{}`; the same numbers are in \
             [`results.json`](results.json).\n",
            if m.quick { " --quick" } else { "" }
        );
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| date (UTC) | {} |", m.date);
        let _ = writeln!(md, "| kernel | {} |", m.kernel);
        if !m.attach.is_empty() {
            let _ = writeln!(md, "| lanlinkd attach | {} |", m.attach);
        }
        let _ = writeln!(md, "| CPU | {} × {} |", m.cpus, m.cpu_model);
        let _ = writeln!(md, "| commit | {} |", m.git_commit);
        let _ = writeln!(md, "| lanlink build | {} |", m.profile);
        let _ = writeln!(
            md,
            "| repetitions | {} per datapath case, {} per scale level (median, min–max) |",
            m.repetitions, m.scale_repetitions
        );
        let _ = writeln!(
            md,
            "| runs | iperf3 {} s, one stream; UDP {} s of {}-byte frames; {} 1-byte round trips |",
            m.tcp_secs, m.udp_secs, m.udp_frame_bytes, m.rr_round_trips
        );
        for (k, v) in &m.versions {
            let _ = writeln!(md, "| {k} | {v} |");
        }
        let _ = writeln!(md, "| duration | {:.0} s |", m.duration_secs);
        let _ = writeln!(md, "\nMachine load (`/proc/loadavg`) during the run:\n");
        let _ = writeln!(
            md,
            "| when | 1 min / 5 min / 15 min load, runnable/total |\n|---|---|"
        );
        for (when, load) in &m.loadavg {
            let _ = writeln!(md, "| {when} | {load} |");
        }

        self.headline_markdown(&mut md);
        self.datapath_markdown(&mut md);
        self.cni_markdown(&mut md);
        self.attach_markdown(&mut md);
        self.scale_markdown(&mut md);
        if let Some(f) = &self.flows65k {
            f.markdown(&mut md);
        }
        if let Some(r) = &self.ipv6 {
            r.markdown(&mut md);
        }
        method_markdown(&mut md, m);
        if !self.errors.is_empty() {
            let _ = writeln!(md, "\n## Errors\n");
            for e in &self.errors {
                let _ = writeln!(md, "- {}", one_line(e));
            }
        }
        md
    }

    /// The targets against what was measured.
    pub fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        for metric in [TCP_POD_LAN, TCP_POD_POD, UDP_PPS] {
            t.push(Target::at_least(
                format!("lanlink {} ≥ 0.9 × limit", metric.label),
                self.ratio("lanlink/0", metric),
                0.9,
                "×",
            ));
        }
        for metric in [TCP_POD_LAN, TCP_POD_POD, UDP_PPS] {
            let base = self.median("lanlink/0", metric);
            let worst = ["lanlink/1k", "lanlink/10k"]
                .iter()
                .filter_map(|c| Some((self.median(c, metric)? / base?) - 1.0))
                .map(f64::abs)
                .fold(None, |acc: Option<f64>, d| {
                    Some(acc.map_or(d, |a| a.max(d)))
                });
            t.push(Target::at_most(
                format!(
                    "lanlink {} flat from 0 to 10k rules (largest change)",
                    metric.label
                ),
                worst.map(|w| w * 100.0),
                5.0,
                "%",
            ));
        }
        for metric in [TCP_POD_LAN, UDP_PPS] {
            t.push(Target::info(
                format!(
                    "bridge with 10k rules, {} (issue: about 0.1 × limit)",
                    metric.label
                ),
                self.ratio("bridge/10k", metric),
                "×",
            ));
        }
        t.push(Target::at_most(
            "lanlink request/response p50 ≤ 1.2 × limit".into(),
            self.ratio("lanlink/0", RR_P50),
            1.2,
            "×",
        ));
        for (series, label) in [
            (cni::LANLINK, "lanlink"),
            (
                cni::LANLINK_NO_PROBE,
                "lanlink without ARP probe (`arpProbeMs: 0`)",
            ),
        ] {
            let c = self.cni_add.iter().find(|c| c.plugin == series);
            t.push(Target::at_most(
                format!("{label} CNI ADD p50 < 50 ms"),
                c.and_then(|c| c.p50_ms),
                50.0,
                "ms",
            ));
            t.push(Target::at_most(
                format!("{label} CNI ADD p99 < 150 ms"),
                c.and_then(|c| c.p99_ms),
                150.0,
                "ms",
            ));
        }
        let conc = self.headline_concurrent();
        let mut concurrent = Target::at_most(
            format!(
                "{} concurrent ADDs < 3 s, none failing",
                conc.map_or("100".to_owned(), |c| c.pods.to_string())
            ),
            conc.map(|c| c.wall_ms / 1000.0),
            3.0,
            "s",
        );
        if let Some(c) = conc.filter(|c| c.failures > 0) {
            concurrent.met = Some(false);
            concurrent
                .what
                .push_str(&format!(" ({} of {} failed)", c.failures, c.pods));
        }
        t.push(concurrent);
        let rss = self.agent_rss.iter().max_by_key(|r| r.pods);
        t.push(Target::at_most(
            format!("agent RSS < 30 MB at {} pods", rss.map_or(250, |r| r.pods)),
            rss.map(|r| r.vm_rss_kb as f64 / 1024.0),
            30.0,
            "MB",
        ));
        // IPv6 (issue 16): the same goals as for IPv4, in runs that measured it.
        if let Some(r) = &self.ipv6 {
            for f in &r.first_reply {
                let mut reach = Target::at_most(
                    format!(
                        "lanlink pod's first IPv6 echo reply after ADD, {} (optimistic \
                         address: at once; < 100 ms)",
                        f.lan
                    ),
                    f.first_reply_ms,
                    100.0,
                    "ms",
                );
                if f.first_reply_ms.is_none() {
                    reach.met = Some(false);
                    reach.what.push_str(": no reply within 3 s");
                }
                t.push(reach);
            }
            t.push(Target::at_least(
                "lanlink TCP pod → LAN host over IPv6 ≥ 0.9 × limit".into(),
                r.tcp_ratio(),
                0.9,
                "×",
            ));
            for lan in Lan6::ALL {
                for (what, series) in [
                    ("", ipv6::AUTO),
                    (" without ARP probe (`arpProbeMs: 0`)", ipv6::AUTO_NO_PROBE),
                ] {
                    t.push(Target::at_most(
                        format!(
                            "lanlink{what} CNI ADD with IPv6 on, {}, p50 < 50 ms",
                            lan.name()
                        ),
                        r.series(lan, series).and_then(|a| a.p50_ms),
                        50.0,
                        "ms",
                    ));
                }
            }
        }
        t
    }

    fn headline_markdown(&self, md: &mut String) {
        let _ = writeln!(md, "\n## Targets\n");
        let _ = writeln!(
            md,
            "Medians; ratios are against `limit` measured in the same run. \
             The targets are the issue's goals, not assertions.\n"
        );
        let _ = writeln!(md, "| target | measured | |\n|---|---|---|");
        for t in self.targets() {
            let _ = writeln!(md, "| {} | {} | {} |", t.what, t.value_text(), t.verdict());
        }
    }

    fn datapath_markdown(&self, md: &mut String) {
        let _ = writeln!(md, "\n## Datapath\n");
        let _ = writeln!(
            md,
            "Median (min–max) over the repetitions; `×` is the median over limit's.\n\n\
             ![throughput](throughput.png) ![packet rate](packet-rate.png) ![latency](latency.png)\n"
        );
        let _ = write!(md, "| case |");
        for metric in DATAPATH_METRICS {
            let _ = write!(md, " {} ({}) |", metric.label, display_unit(metric));
        }
        let _ = write!(md, "\n|---|");
        for _ in DATAPATH_METRICS {
            let _ = write!(md, "---|");
        }
        let _ = writeln!(md);
        for c in &self.datapath {
            let _ = write!(md, "| {} |", c.case);
            for metric in DATAPATH_METRICS {
                match c.metrics.get(metric.key) {
                    Some(s) => {
                        let ratio = self
                            .ratio(&c.case, metric)
                            .filter(|_| c.case != "limit")
                            .map_or(String::new(), |r| format!(" **{r:.2}×**"));
                        let _ = write!(
                            md,
                            " {} ({}–{}){ratio} |",
                            fmt(metric, s.median),
                            fmt(metric, s.min),
                            fmt(metric, s.max)
                        );
                    }
                    None => {
                        let _ = write!(md, " – |");
                    }
                }
            }
            let _ = writeln!(md);
        }
    }

    fn attach_markdown(&self, md: &mut String) {
        if self.attach.is_empty() {
            return;
        }
        let _ = writeln!(md, "\n## Attach backends\n");
        let _ = writeln!(
            md,
            "The lanlink agent restarted with `--attach tcx` (BPF links) and with \
             `--attach tc` (clsact + cls_bpf) in turn; sequential ADDs with \
             `ipam.arpProbeMs: 0` (the two program attaches are most of an ADD \
             then), and one batch of ADDs started at once.\n"
        );
        let _ = writeln!(
            md,
            "| backend | ADDs | p50 | p99 | concurrent ADDs | wall time | failures |\n\
             |---|---|---|---|---|---|---|"
        );
        for a in &self.attach {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.0} ms | {} |",
                a.backend,
                a.add_samples_ms.len(),
                ms(a.add_p50_ms),
                ms(a.add_p99_ms),
                a.concurrent,
                a.concurrent_wall_ms,
                a.failures.len()
            );
        }
    }

    fn cni_markdown(&self, md: &mut String) {
        let _ = writeln!(md, "\n## CNI ADD\n");
        let _ = writeln!(
            md,
            "Sequential ADDs, lanlink (default netconf: the leased address is \
             ARP-probed for 300 ms before use), lanlink with `ipam.arpProbeMs: 0` \
             and the reference (which does not probe) alternating, each including \
             the DHCP lease from dnsmasq (`--no-ping`); wall time of the plugin \
             invocation (nsenter into the node, binary, `CNI_*` environment, netconf \
             on stdin), the same for both.\n\n\
             ![CNI ADD latency](cni-add.png)\n"
        );
        let _ = writeln!(
            md,
            "| plugin | ADDs | p50 | p99 | min | max | failures |\n|---|---|---|---|---|---|---|"
        );
        for c in &self.cni_add {
            let min = c.samples_ms.iter().copied().reduce(f64::min);
            let max = c.samples_ms.iter().copied().reduce(f64::max);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                c.plugin,
                c.samples_ms.len(),
                ms(c.p50_ms),
                ms(c.p99_ms),
                ms(min),
                ms(max),
                c.failures.len()
            );
        }
        let _ = writeln!(md, "\nConcurrent lanlink ADDs (all started at once):\n");
        let _ = writeln!(
            md,
            "| ADDs | pods already attached | wall time | failures |\n|---|---|---|---|"
        );
        for c in &self.concurrent_add {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} ms | {} |",
                c.pods, c.attached_before, c.wall_ms, c.failures
            );
        }
        // One line per distinct error (pod names stripped): the batches
        // usually fail the same way.
        let mut errors: Vec<(String, usize)> = Vec::new();
        for e in self
            .concurrent_add
            .iter()
            .filter_map(|c| c.first_error.as_deref())
        {
            let e = one_line(e.split_once(": ").map_or(e, |(_, rest)| rest));
            match errors.iter_mut().find(|(m, _)| *m == e) {
                Some((_, n)) => *n += 1,
                None => errors.push((e, 1)),
            }
        }
        if !errors.is_empty() {
            let _ = writeln!(
                md,
                "\nFailed ADDs were deleted and retried in the next batch. The first \
                 error of each batch with failures:\n"
            );
            for (e, n) in errors {
                let _ = writeln!(md, "- {n} batch(es): `{e}`");
            }
        }
        let _ = writeln!(md, "\nAgent resident memory (`VmRSS`):\n");
        let _ = writeln!(md, "| pods attached | VmRSS |\n|---|---|");
        for r in &self.agent_rss {
            let _ = writeln!(md, "| {} | {:.1} MB |", r.pods, r.vm_rss_kb as f64 / 1024.0);
        }
    }

    fn scale_markdown(&self, md: &mut String) {
        let _ = writeln!(md, "\n## Scale\n");
        let _ = writeln!(
            md,
            "Pod A → LAN host with more pods attached (rules: 0). lanlink: pods \
             added by CNI ADD, each with its lease; limit and bridge: idle veth \
             ports on their bridge.\n\n\
             ![scale](scale.png)\n"
        );
        let _ = write!(md, "| variant | pods |");
        for metric in SCALE_METRICS {
            let _ = write!(md, " {} ({}) |", metric.label, display_unit(metric));
        }
        let _ = writeln!(md, "\n|---|---|---|---|---|");
        for s in &self.scale {
            let _ = write!(md, "| {} | {} |", s.variant, s.pods);
            for metric in SCALE_METRICS {
                match s.metrics.get(metric.key) {
                    Some(v) => {
                        let _ = write!(
                            md,
                            " {} ({}–{}) |",
                            fmt(metric, v.median),
                            fmt(metric, v.min),
                            fmt(metric, v.max)
                        );
                    }
                    None => {
                        let _ = write!(md, " – |");
                    }
                }
            }
            let _ = writeln!(md);
        }
    }
}

fn method_markdown(md: &mut String, m: &Meta) {
    let _ = writeln!(md, "\n## Method\n");
    let _ = writeln!(
        md,
        "All in network namespaces (198.18.0.0/22), built by the lab library and \
         removed at the end: a LAN namespace (bridge, router 198.18.0.1, dnsmasq \
         with `--no-ping`), a LAN host 198.18.0.2 running the servers (iperf3, \
         `lab-rr`, `lab-udpflood`), and side by side:\n\n\
         - `limit`: the pod's veth peered directly into the LAN bridge, static \
         address: no forwarding hop at all.\n\
         - `lanlink`: a node namespace whose `eth0` is a veth into the LAN, \
         `lanlinkd --uplink eth0` in it, pods attached by the `lanlink` CNI \
         plugin with leases from dnsmasq.\n\
         - `bridge`: a node namespace with `br0`, `eth0` enslaved and its address \
         moved to `br0`, `bridge-nf-call-iptables=1`, pods attached by the \
         reference `bridge` plugin with the `dhcp` IPAM (its daemon in the node).\n\n\
         `/1k`, `/10k`: that many rules in a chain the node's `filter FORWARD` \
         jumps to first (the rest of the table, lanlinkd's rules included, \
         untouched), loaded with one `iptables-restore --noflush`, each `{}`, \
         none matching the \
         benchmark's traffic (policy ACCEPT, no conntrack shortcut), so every \
         forwarded packet is compared against all of them. The lanlink \
         variant carries the same rule sets: its packets are redirected in TC \
         and never reach FORWARD.\n\n\
         Cases run interleaved within each repetition (limit, lanlink/0, \
         bridge/0, lanlink/1k, bridge/1k, lanlink/10k, bridge/10k), so slow \
         drifts of the machine's load hit every variant alike. pod → pod is \
         pod A → pod B of the same variant (for limit: both on the LAN bridge). \
         Senders (iperf3 client, UDP sender) are pinned to the first CPU and \
         receivers to the last (`taskset`): unpinned, one case's rates fell \
         into two clusters about 20% apart depending on where the scheduler \
         put the two ends. The UDP rate is what the receiver got, counted from \
         its first datagram to its last (`sendmmsg`/`recvmmsg` batches of 64). The request/response \
         test is one TCP connection with `TCP_NODELAY`, client and server \
         pinned to the same CPU (`taskset`; across CPUs each round trip also \
         pays two cross-CPU wake-ups, tens of µs on a VM, which drown the \
         paths' difference), 100 untimed warm-up round trips, then \
         nearest-rank percentiles.",
        m.iptables_rule
    );
}

/// One of the targets and what the run measured.
#[derive(Clone, Debug)]
pub struct Target {
    /// What is compared.
    pub what: String,
    /// What was measured.
    pub value: Option<f64>,
    /// Unit of `value`.
    pub unit: &'static str,
    /// `Some(true)`: met; `Some(false)`: missed; `None`: informational.
    pub met: Option<bool>,
}

impl Target {
    fn at_least(what: String, value: Option<f64>, goal: f64, unit: &'static str) -> Self {
        Self {
            met: value.map(|v| v >= goal),
            what,
            value,
            unit,
        }
    }

    fn at_most(what: String, value: Option<f64>, goal: f64, unit: &'static str) -> Self {
        Self {
            met: value.map(|v| v <= goal),
            what,
            value,
            unit,
        }
    }

    fn info(what: String, value: Option<f64>, unit: &'static str) -> Self {
        Self {
            what,
            value,
            unit,
            met: None,
        }
    }

    /// The measured value with its unit.
    pub fn value_text(&self) -> String {
        match self.value {
            None => "not measured".to_owned(),
            Some(v) if self.unit == "×" => format!("{v:.2}×"),
            Some(v) => format!("{v:.1} {}", self.unit),
        }
    }

    /// `met`, `**missed**`, or nothing.
    pub fn verdict(&self) -> &'static str {
        match (self.value, self.met) {
            (_, Some(true)) => "met",
            (_, Some(false)) => "**missed**",
            (None, None) => "",
            (Some(_), None) => "(reference)",
        }
    }
}

/// `text` on one line, runs of whitespace (pretty-printed JSON errors)
/// squeezed.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The unit a metric is shown in.
pub fn display_unit(metric: Metric) -> &'static str {
    match metric.unit {
        "pps" => "Mpps",
        "us" => "µs",
        u => u,
    }
}

/// A metric's value in its display unit.
pub fn fmt(metric: Metric, v: f64) -> String {
    match metric.unit {
        "pps" => format!("{:.3}", v / 1e6),
        "us" => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, tcp: f64, rr: f64) -> CaseResult {
        let mut metrics = BTreeMap::new();
        for m in DATAPATH_METRICS {
            let v = if m.unit == "us" { rr } else { tcp };
            metrics.insert(m.key.to_owned(), Summary::of(m.unit, &[v]).unwrap());
        }
        CaseResult {
            case: name.to_owned(),
            variant: name.split('/').next().unwrap().to_owned(),
            rules: 0,
            metrics,
        }
    }

    #[test]
    fn ratios_and_targets() {
        let r = Results {
            datapath: vec![
                case("limit", 10.0, 20.0),
                case("lanlink/0", 9.5, 22.0),
                case("lanlink/1k", 9.4, 22.0),
                case("lanlink/10k", 9.0, 22.0),
                case("bridge/10k", 1.0, 50.0),
            ],
            ..Results::default()
        };
        assert_eq!(r.ratio("lanlink/0", TCP_POD_LAN), Some(0.95));
        let t = r.targets();
        let tput = t
            .iter()
            .find(|t| t.what.starts_with("lanlink TCP pod → LAN host ≥"))
            .unwrap();
        assert_eq!(tput.met, Some(true));
        let flat = t
            .iter()
            .find(|t| t.what.contains("TCP pod → LAN host flat"))
            .unwrap();
        assert!((flat.value.unwrap() - 100.0 * (1.0 - 9.0 / 9.5)).abs() < 1e-9);
        assert_eq!(flat.met, Some(false), "a 5.3% drop misses the 5% target");
        let rr = t.iter().find(|t| t.what.contains("p50 ≤ 1.2")).unwrap();
        assert_eq!(rr.met, Some(true));
        let cni = t.iter().find(|t| t.what.contains("ADD p50")).unwrap();
        assert_eq!((cni.met, cni.value_text().as_str()), (None, "not measured"));
    }

    #[test]
    fn missing_numbers_are_reported() {
        let mut r = Results {
            datapath: vec![case("limit", 1.0, 1.0)],
            ..Results::default()
        };
        r.datapath[0].metrics.remove("udp_pps");
        let missing = r.missing(&Phase::ALL);
        assert!(
            missing.iter().any(|m| m.contains("limit: no UDP")),
            "{missing:?}"
        );
        assert!(missing.iter().any(|m| m.contains("CNI ADD")), "{missing:?}");
        assert!(r.to_markdown().contains("| limit |"));
    }
}
