//! The `ipv6` phase (issue 16): CNI ADD latency with IPv6 on, and TCP pod →
//! LAN host over IPv6 against the limit.
//!
//! Labs of their own, one per kind of IPv6 LAN, one after the other (a
//! second kind on the same LAN would leave the first one's prefix in the
//! agent's view of the RAs). Each is the main lab's LAN (198.18.0.0/22,
//! dnsmasq for DHCPv4 with `--no-ping`) with IPv6 on its router (`br0`:
//! fe80::1, 2001:2:0:1::1/64) and one IPv6 service:
//!
//! ```text
//!  LAN netns: br0 198.18.0.1/22 + 2001:2:0:1::1/64, fe80::1
//!   │  slaac:  radvd, 2001:2:0:1::/64 autonomous (SLAAC)
//!   │  dhcpv6: a second dnsmasq, RAs with the M flag, IA_NA from ::100–::1ff
//!   ├── LAN host 198.18.0.2, 2001:2:0:1::2 (static): iperf3 servers
//!   ├── limit:   a veth straight into br0, 2001:2:0:1::20, 198.18.0.20 (static)
//!   └── lanlink: node 198.18.0.10 (lanlinkd on eth0), pods by the plugin
//! ```
//!
//! In each lab, after the agent has learned the RAs (a warm-up ADD until
//! its result carries IPv6, not recorded): sequential ADDs of three series
//! alternating — the default netconf (`ipv6` auto, 300 ms ARP probe of the
//! IPv4 lease), `ipv6` auto with `ipam.arpProbeMs: 0` (the IPv6 work is
//! then visible, not hidden behind the probe) and `ipv6: "off"` with
//! `arpProbeMs: 0` (the IPv4-only ADD on the same LAN, the control). Every
//! result is checked: with `ipv6` auto one IPv6 address of the LAN's kind
//! (a /64 in the prefix for SLAAC, a /128 from dnsmasq's pool for DHCPv6)
//! next to the IPv4 lease, with `off` none; a result that fails the check
//! is not a sample but a failure, and fails the run. The DHCPv6 addresses
//! are then looked up in dnsmasq's lease file. Then one more pod with the
//! default netconf, and at once `ping -6` from it to the LAN host: how long
//! after its ADD the pod hears the LAN ([`FirstReply`]; its address is
//! optimistic, so it should at once).
//!
//! On the SLAAC LAN, the TCP runs: iperf3 `-6` from a lanlink pod and from
//! the limit veth to the LAN host's IPv6 address, interleaved (limit,
//! lanlink) in each repetition, pinned as in the datapath phase; in a full
//! run the same two over IPv4 follow in each repetition (the control: what
//! IPv6 itself costs on the machine, apart from lanlink).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lanlink_lab::cmd::BgProcess;
use lanlink_lab::lan6::{
    Dnsmasq6, Dnsmasq6Mode, POOL6, PREFIX6, PREFIX6_LEN, ROUTER6, ROUTER6_LL, Radvd, RadvdOptions,
    check_lab_addr6,
};
use lanlink_lab::pods::leased_ip;
use lanlink_lab::{Agent, AgentOptions, CniCall, CniOutput, Lan, LanHost, LanOptions, NetNs, Node};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::measure;
use crate::ms;
use crate::report::{self, Results};
use crate::stats::{Summary, percentile};
use crate::topo::{self, LAN_HOST_IP, LANLINK_NODE_IP, LanlinkSide, timed};

/// The LAN host's static IPv6 address, where the iperf3 server listens.
pub const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 2);
/// The limit veth's static IPv6 address.
pub const LIMIT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x20);

/// How long the agent may take to learn the LAN's RAs after it started.
const RA_WAIT: Duration = Duration::from_secs(15);

/// The kinds of IPv6 LAN, in the order measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lan6 {
    /// radvd: the prefix autonomous, no DHCPv6.
    Slaac,
    /// dnsmasq: RAs with the M flag, DHCPv6 IA_NA.
    Dhcpv6,
}

impl Lan6 {
    /// Every kind, in run order.
    pub const ALL: [Lan6; 2] = [Lan6::Slaac, Lan6::Dhcpv6];

    /// Its name in results.
    pub fn name(self) -> &'static str {
        match self {
            Lan6::Slaac => "SLAAC (radvd)",
            Lan6::Dhcpv6 => "DHCPv6 (dnsmasq, M flag)",
        }
    }

    /// Short, for namespace and log names.
    fn key(self) -> &'static str {
        match self {
            Lan6::Slaac => "slaac",
            Lan6::Dhcpv6 => "dhcpv6",
        }
    }

    /// Whether `addr`/`len` is what a pod gets on this LAN.
    fn check(self, addr: Ipv6Addr, len: u8) -> Result<()> {
        check_lab_addr6(addr)?;
        match self {
            Lan6::Slaac => {
                ensure!(
                    len == PREFIX6_LEN && addr.segments()[..4] == PREFIX6.segments()[..4],
                    "{addr}/{len} is not a SLAAC address in {PREFIX6}/{PREFIX6_LEN}"
                );
            }
            Lan6::Dhcpv6 => {
                ensure!(
                    len == 128 && (POOL6.0..=POOL6.1).contains(&addr),
                    "{addr}/{len} is not a /128 from dnsmasq's pool {}–{}",
                    POOL6.0,
                    POOL6.1
                );
            }
        }
        Ok(())
    }
}

/// One series of ADDs: how the netconf differs from the lab's default.
#[derive(Clone, Copy, Debug)]
pub struct Series {
    /// Its name in results.
    pub name: &'static str,
    /// `ipv6` left at its default (auto); `false`: `"ipv6": "off"`.
    pub ipv6: bool,
    /// `ipam.arpProbeMs` (`None`: the default, 300 ms).
    pub probe_ms: Option<u64>,
}

/// The default netconf: `ipv6` auto, the IPv4 lease ARP-probed for 300 ms.
pub const AUTO: Series = Series {
    name: "ipv6 auto",
    ipv6: true,
    probe_ms: None,
};
/// `ipv6` auto without the ARP probe: the IPv6 part is no longer hidden
/// behind the probe's 300 ms.
pub const AUTO_NO_PROBE: Series = Series {
    name: "ipv6 auto, arpProbeMs 0",
    ipv6: true,
    probe_ms: Some(0),
};
/// IPv4 only on the same LAN: the control.
pub const OFF_NO_PROBE: Series = Series {
    name: "ipv6 off, arpProbeMs 0",
    ipv6: false,
    probe_ms: Some(0),
};
/// The series, in the order each round runs them.
pub const SERIES: [Series; 3] = [AUTO, AUTO_NO_PROBE, OFF_NO_PROBE];

/// How much the phase measures.
#[derive(Clone, Debug)]
pub struct Plan {
    /// ADDs per series on each LAN.
    pub pods: usize,
    /// TCP repetitions (each: limit, then lanlink).
    pub reps: usize,
    /// iperf3 `--time` of one run, seconds.
    pub tcp_secs: u32,
    /// One unrecorded TCP round first.
    pub warm_up: bool,
    /// The same pods over IPv4 too, interleaved with the IPv6 runs (the
    /// control: what IPv6 itself costs on this machine).
    pub ipv4_control: bool,
    /// Upper bound on the life of the iperf3 server.
    pub budget: Duration,
}

/// One series of ADDs on one LAN.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Add6Result {
    /// The LAN ([`Lan6::name`]).
    pub lan: String,
    /// The series ([`Series::name`]).
    pub series: String,
    /// Whether every result had to carry an IPv6 address (else: none).
    pub ipv6: bool,
    /// Wall time of each ADD whose result passed the check, ms, in order.
    pub samples_ms: Vec<f64>,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 90th percentile (nearest rank).
    pub p90_ms: Option<f64>,
    /// 99th percentile (nearest rank: the maximum under 100 samples).
    pub p99_ms: Option<f64>,
    /// Slowest.
    pub max_ms: Option<f64>,
    /// ADDs that succeeded with the wrong address family: without IPv6
    /// where `ipv6` is on, with it where off, or an IPv6 address not of the
    /// LAN's kind. Any fails the run.
    pub wrong_family: usize,
    /// Every failed ADD (wrong family included), with the error.
    pub failures: Vec<String>,
}

/// TCP pod → LAN host of one variant over one IP version.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tcp6Result {
    /// `limit`, `lanlink` (over IPv6), `limit, IPv4`, `lanlink, IPv4`.
    pub case: String,
    /// `limit` or `lanlink`.
    pub variant: String,
    /// 6, or 4 for the control over IPv4 (same pods, same run).
    pub family: u8,
    /// The sender's address.
    pub address: String,
    /// Gbit/s over the repetitions.
    pub gbps: Option<Summary>,
}

/// How soon after its ADD returned a lanlink pod hears the LAN host over
/// IPv6 (the address is optimistic: usable at once, RFC 4429).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FirstReply {
    /// The LAN ([`Lan6::name`]).
    pub lan: String,
    /// The pod's IPv6 address.
    pub address: String,
    /// From the ADD's return to the pod's first echo reply from the LAN
    /// host (`ping -6 -c 1 -i 0.05 -w 3`, started at once), ms; `None`: no
    /// reply within 3 s.
    pub first_reply_ms: Option<f64>,
    /// Echo requests sent until then (1: the first one was answered).
    pub requests: u32,
}

/// The phase's results.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ipv6Result {
    /// ADD series, per LAN kind in run order, [`SERIES`] order within.
    pub add: Vec<Add6Result>,
    /// The LAN the TCP numbers come from ([`Lan6::name`]).
    pub tcp_lan: String,
    /// The LAN host's address (the iperf3 server).
    pub tcp_server: String,
    /// TCP pod → LAN host over IPv6: limit, then lanlink.
    pub tcp_pod_lan: Vec<Tcp6Result>,
    /// A fresh pod's first IPv6 echo reply, per LAN.
    #[serde(default)]
    pub first_reply: Vec<FirstReply>,
}

impl Ipv6Result {
    /// What is missing for the phase to count.
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for lan in Lan6::ALL {
            for s in SERIES {
                match self
                    .add
                    .iter()
                    .find(|a| a.lan == lan.name() && a.series == s.name)
                {
                    None => missing.push(format!("ipv6 {} {}: not measured", lan.name(), s.name)),
                    Some(a) if a.samples_ms.is_empty() => {
                        missing.push(format!("ipv6 {} {}: no successful ADD", a.lan, a.series))
                    }
                    Some(_) => {}
                }
            }
        }
        for a in self.add.iter().filter(|a| a.wrong_family > 0) {
            missing.push(format!(
                "ipv6 {} {}: {} ADD result(s) with the wrong address family, e.g. {}",
                a.lan,
                a.series,
                a.wrong_family,
                a.failures
                    .iter()
                    .find(|f| f.contains("wrong family"))
                    .map_or("", String::as_str)
            ));
        }
        for lan in Lan6::ALL {
            if !self.first_reply.iter().any(|f| f.lan == lan.name()) {
                missing.push(format!("ipv6 {}: no first-reply measurement", lan.name()));
            }
        }
        for variant in ["limit", "lanlink"] {
            if !self
                .tcp_pod_lan
                .iter()
                .any(|t| t.variant == variant && t.family == 6 && t.gbps.is_some())
            {
                missing.push(format!(
                    "ipv6: no TCP pod → LAN host over IPv6 of {variant}"
                ));
            }
        }
        missing
    }

    /// The median over limit's of TCP pod → LAN host over IPv6.
    pub fn tcp_ratio(&self) -> Option<f64> {
        self.tcp_ratio_of(6)
    }

    /// lanlink's median over limit's of TCP pod → LAN host over IP
    /// version `family`.
    pub fn tcp_ratio_of(&self, family: u8) -> Option<f64> {
        let median = |v: &str| {
            self.tcp_pod_lan
                .iter()
                .find(|t| t.variant == v && t.family == family)?
                .gbps
                .as_ref()
                .map(|s| s.median)
        };
        Some(median("lanlink")? / median("limit")?)
    }

    /// The series `s` on `lan`.
    pub fn series(&self, lan: Lan6, s: Series) -> Option<&Add6Result> {
        self.add
            .iter()
            .find(|a| a.lan == lan.name() && a.series == s.name)
    }

    /// The report's section.
    pub fn markdown(&self, md: &mut String) {
        let _ = writeln!(md, "\n## IPv6\n");
        let _ = writeln!(
            md,
            "Labs of their own, one per LAN: the same LAN (dnsmasq for DHCPv4) with \
             the router's IPv6 on `br0` ({ROUTER6_LL}, {ROUTER6}/{PREFIX6_LEN}) and radvd \
             advertising the prefix for SLAAC, or a second dnsmasq sending RAs with \
             the M flag and leasing IA_NA addresses from {}–{}. After a warm-up ADD \
             (until the agent has learned the RAs), sequential ADDs of three \
             series alternating: the default netconf (`ipv6` auto, the IPv4 lease \
             ARP-probed for 300 ms, which the IPv6 work runs beside), `ipv6` auto \
             with `ipam.arpProbeMs: 0`, and `\"ipv6\": \"off\"` with \
             `arpProbeMs: 0` (IPv4 only, on the same LAN). Every result is \
             checked: with `ipv6` auto an address of the LAN's kind (SLAAC: a /64 \
             in the prefix; DHCPv6: a /128 from the pool, then found in dnsmasq's \
             lease file) next to the IPv4 lease, with `off` none; one that fails \
             is a failure, not a sample. Wall time of the plugin invocation, as in \
             CNI ADD.\n\n![IPv6](ipv6.png)\n",
            POOL6.0, POOL6.1
        );
        let _ = writeln!(
            md,
            "| LAN | series | ADDs | p50 | p90 | p99 | max | failures |\n\
             |---|---|---|---|---|---|---|---|"
        );
        for a in &self.add {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                a.lan,
                a.series,
                a.samples_ms.len(),
                ms(a.p50_ms),
                ms(a.p90_ms),
                ms(a.p99_ms),
                ms(a.max_ms),
                a.failures.len()
            );
        }
        let _ = writeln!(
            md,
            "\nA pod's first IPv6 packets: right after a pod's ADD (default netconf) \
             returned, `ping -6 -c 1 -i 0.05 -w 3` to the LAN host {HOST6}: the time \
             to its first echo reply and the requests it took. The pod's address is \
             optimistic (RFC 4429), so the first request should be answered.\n"
        );
        let _ = writeln!(
            md,
            "| LAN | pod | first reply after ADD | echo requests |\n|---|---|---|---|"
        );
        for f in &self.first_reply {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                f.lan,
                f.address,
                f.first_reply_ms
                    .map_or("none within 3 s".to_owned(), |v| format!("{v:.0} ms")),
                f.requests
            );
        }
        let _ = writeln!(
            md,
            "\nTCP pod → LAN host over IPv6 on the {} LAN: iperf3 `-6`, one stream, \
             to {}, limit (a veth straight into the LAN bridge, static address) and \
             lanlink (a pod by the plugin, its SLAAC address) interleaved in each \
             repetition, pinned as in Datapath; in full runs the same two over IPv4 \
             to the host's 198.18.0.2 too, interleaved with them (the control: what \
             IPv6 itself costs here). Median (min–max); `×` is lanlink's median \
             over limit's of the same IP version.\n",
            self.tcp_lan, self.tcp_server
        );
        let _ = writeln!(
            md,
            "| case | sender | TCP pod → LAN host (Gbit/s) |\n|---|---|---|"
        );
        for t in &self.tcp_pod_lan {
            let value = match &t.gbps {
                Some(s) => {
                    let r = self
                        .tcp_ratio_of(t.family)
                        .filter(|_| t.variant != "limit")
                        .map_or(String::new(), |r| format!(" **{r:.2}×**"));
                    format!(
                        "{} ({}–{}){r}",
                        report::fmt(report::TCP_POD_LAN, s.median),
                        report::fmt(report::TCP_POD_LAN, s.min),
                        report::fmt(report::TCP_POD_LAN, s.max)
                    )
                }
                None => "–".to_owned(),
            };
            let _ = writeln!(md, "| {} | {} | {value} |", t.case, t.address);
        }
    }
}

/// The phase: each LAN kind in turn, printed; measurement failures kept in
/// `results.errors` (and the result's failures), setup failures end it.
/// The agents' and IPv6 servers' logs go to `logs`.
pub fn run(plan: &Plan, bin_dir: &Path, logs: &Path, results: &mut Results) -> Result<()> {
    let mut out = Ipv6Result {
        tcp_lan: Lan6::Slaac.name().to_owned(),
        tcp_server: HOST6.to_string(),
        ..Ipv6Result::default()
    };
    let mut outcome = Ok(());
    for kind in Lan6::ALL {
        println!("-- {} LAN", kind.name());
        outcome = one_lan(kind, plan, bin_dir, logs, &mut out, &mut results.errors);
        if outcome.is_err() {
            break;
        }
    }
    results.ipv6 = Some(out);
    outcome
}

fn one_lan(
    kind: Lan6,
    plan: &Plan,
    bin_dir: &Path,
    logs: &Path,
    out: &mut Ipv6Result,
    errors: &mut Vec<String>,
) -> Result<()> {
    let t0 = Instant::now();
    let lab = Lab6::new(kind, bin_dir, plan.budget)?;
    let built = t0.elapsed();
    let measured = lab.measure(plan, out, errors);
    if let Err(e) = lab.save_logs(logs) {
        println!("cannot save the {} lab's logs: {e:#}", kind.key());
    }
    println!(
        "   ({} lab: built in {:.1} s, {:.1} s in all)",
        kind.key(),
        built.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    measured
}

/// The IPv6 service on the LAN's router.
#[derive(Debug)]
enum Service6 {
    Radvd(Radvd),
    Dnsmasq(Dnsmasq6),
}

impl Service6 {
    fn log(&self) -> String {
        match self {
            Service6::Radvd(r) => r.log(),
            Service6::Dnsmasq(d) => d.log(),
        }
    }
}

/// One IPv6 LAN with a lanlink node, a limit veth and the LAN host.
#[derive(Debug)]
struct Lab6 {
    // Field order is drop order: the node and its agent, the limit veth,
    // the servers, the host, the IPv6 service, then the LAN.
    kind: Lan6,
    side: LanlinkSide,
    limit: NetNs,
    _servers: Vec<BgProcess>,
    _host: LanHost,
    service: Service6,
    lan: Lan,
    bin_dir: PathBuf,
}

impl Lab6 {
    fn new(kind: Lan6, bin_dir: &Path, budget: Duration) -> Result<Self> {
        let lan = Lan::new(LanOptions {
            lease_secs: topo::LEASE_SECS,
            pool: topo::POOL,
            ping_check: false,
            prefix_len: topo::PREFIX_LEN,
            ..LanOptions::default()
        })?;
        let service = match kind {
            Lan6::Slaac => Service6::Radvd(Radvd::start(&lan, RadvdOptions::default())?),
            Lan6::Dhcpv6 => Service6::Dnsmasq(Dnsmasq6::start(
                &lan,
                Dnsmasq6Mode::Stateful,
                topo::LEASE_SECS,
            )?),
        };
        let host = lan.add_host("lan-host6", LAN_HOST_IP)?;
        add_addr6(host.ns(), HOST6)?;
        let servers = vec![
            measure::iperf_server(host.ns(), HOST6, budget)?,
            // For the IPv4 control.
            measure::iperf_server(host.ns(), LAN_HOST_IP, budget)?,
        ];
        let limit = NetNs::new("limit6")?;
        lan.connect(&limit, "eth0")?;
        add_addr6(&limit, LIMIT6)?;
        limit.ip(&[
            "addr",
            "add",
            &format!("{}/{}", topo::LIMIT_IPS[0], topo::PREFIX_LEN),
            "dev",
            "eth0",
        ])?;
        let node = Node::new(&lan, &format!("node6-{}", kind.key()), LANLINK_NODE_IP)?;
        topo::br_netfilter_on(node.ns())?;
        let agent = Agent::start(&node, AgentOptions::from_bin_dir(bin_dir))?;
        Ok(Self {
            kind,
            side: LanlinkSide {
                pods: Vec::new(),
                extra: Vec::new(),
                agent,
                node,
            },
            limit,
            _servers: servers,
            _host: host,
            service,
            lan,
            bin_dir: bin_dir.to_owned(),
        })
    }

    /// The call a runtime makes for `ns` with series `s`'s netconf.
    fn call(&self, command: &str, ns: &NetNs, s: Series) -> CniCall {
        let mut call = self.side.call(command, ns);
        if let Some(ms) = s.probe_ms {
            call.netconf["ipam"] = json!({ "arpProbeMs": ms });
        }
        if !s.ipv6 {
            call.netconf["ipv6"] = json!("off");
        }
        call
    }

    fn plugin(&self) -> PathBuf {
        self.bin_dir.join(lanlink_lab::CNI_BIN)
    }

    /// CNI ADD of `ns` with `s`'s netconf: output and wall time.
    fn add(&self, ns: &NetNs, s: Series) -> Result<(CniOutput, Duration)> {
        let call = self.call("ADD", ns, s);
        timed(|| lanlink_lab::cni_exec(&self.plugin(), &call))
    }

    /// CNI DEL of `ns` with the netconf of its ADD.
    fn del(&self, ns: &NetNs, s: Series) -> Result<()> {
        lanlink_lab::cni_exec(&self.plugin(), &self.call("DEL", ns, s))?
            .ok()
            .map(drop)
            .with_context(|| format!("lanlink DEL of {}", ns.name()))
    }

    /// The agent's log, last lines, for errors.
    fn agent_log_tail(&self) -> String {
        let log = self.side.agent.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Checks an ADD result of series `s`: the IPv4 lease, and one IPv6
    /// address of this LAN's kind if `s.ipv6`, none otherwise. Returns the
    /// IPv6 address.
    fn check(&self, result: &Value, s: Series) -> Result<Option<Ipv6Addr>> {
        leased_ip(result)?;
        let v6 = ipv6_addresses(result)?;
        if !s.ipv6 {
            ensure!(
                v6.is_empty(),
                "\"ipv6\": \"off\", yet the result has {v6:?}"
            );
            return Ok(None);
        }
        match v6.as_slice() {
            [] => bail!("the ADD result carries no IPv6 address: {result}"),
            [(addr, len)] => {
                self.kind.check(*addr, *len)?;
                Ok(Some(*addr))
            }
            more => bail!("more than one IPv6 address in the result: {more:?}"),
        }
    }

    fn measure(&self, plan: &Plan, out: &mut Ipv6Result, errors: &mut Vec<String>) -> Result<()> {
        let learned = self.wait_for_ra()?;
        println!(
            "   first ADD with IPv6 {:.1} s after the agent started",
            learned.as_secs_f64()
        );
        let series = self.add_latency(plan.pods)?;
        for a in &series {
            println!(
                "   {:<26} p50 {} p90 {} max {} ({} ADDs, {} failures)",
                a.series,
                ms(a.p50_ms),
                ms(a.p90_ms),
                ms(a.max_ms),
                a.samples_ms.len(),
                a.failures.len()
            );
            errors.extend(
                a.failures
                    .iter()
                    .map(|f| format!("IPv6 CNI ADD {} {}: {f}", a.lan, a.series)),
            );
        }
        out.add.extend(series);
        if self.kind == Lan6::Slaac {
            out.tcp_pod_lan = self.tcp(plan, out, errors)?;
        } else {
            let pod = NetNs::new("v6-reach")?;
            let (_, first) = self.reach(&pod)?;
            self.del(&pod, AUTO)?;
            out.first_reply.push(first);
        }
        Ok(())
    }

    /// Adds and deletes a warm-up pod until its result carries IPv6 (the
    /// agent solicits the RAs at start); how long after the agent's start
    /// that was.
    fn wait_for_ra(&self) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            let ns = NetNs::new("v6-warm")?;
            let (out, _) = self.add(&ns, AUTO_NO_PROBE)?;
            let result = out.ok().with_context(|| {
                format!(
                    "the warm-up ADD failed; agent log:\n{}",
                    self.agent_log_tail()
                )
            })?;
            let checked = self.check(&result, AUTO_NO_PROBE);
            self.del(&ns, AUTO_NO_PROBE)?;
            let last = match checked {
                Ok(_) => return Ok(t0.elapsed()),
                Err(e) => format!("{e:#}"),
            };
            if t0.elapsed() >= RA_WAIT {
                bail!(
                    "no ADD result with an IPv6 address within {RA_WAIT:?} on the {} LAN \
                     (last: {last}); {}'s log:\n{}\nagent log:\n{}",
                    self.kind.name(),
                    match self.service {
                        Service6::Radvd(_) => "radvd",
                        Service6::Dnsmasq(_) => "dnsmasq (IPv6)",
                    },
                    self.service.log(),
                    self.agent_log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `n` rounds of [`SERIES`], one ADD at a time; every pod deleted again.
    fn add_latency(&self, n: usize) -> Result<Vec<Add6Result>> {
        let mut results: Vec<Add6Result> = SERIES
            .iter()
            .map(|s| Add6Result {
                lan: self.kind.name().to_owned(),
                series: s.name.to_owned(),
                ipv6: s.ipv6,
                ..Add6Result::default()
            })
            .collect();
        // Every pod the plugin attached, with the series (for its DEL) and
        // its IPv6 address.
        let mut attached: Vec<(NetNs, usize, Option<Ipv6Addr>)> = Vec::new();
        for i in 0..n {
            for (k, s) in SERIES.into_iter().enumerate() {
                // The namespace is made before the clock starts: a runtime
                // has the sandbox before it calls the plugin.
                let ns = NetNs::new(&format!("v6{}-{k}-{i}", &self.kind.key()[..1]))?;
                let (out, took) = self.add(&ns, s)?;
                let r = &mut results[k];
                match out.ok() {
                    Ok(result) => match self.check(&result, s) {
                        Ok(v6) => {
                            r.samples_ms.push(took.as_secs_f64() * 1000.0);
                            attached.push((ns, k, v6));
                        }
                        Err(e) => {
                            r.wrong_family += 1;
                            r.failures
                                .push(format!("{}: wrong family: {e:#}", ns.name()));
                            attached.push((ns, k, None));
                        }
                    },
                    Err(e) => r.failures.push(format!("{}: {e:#}", ns.name())),
                }
            }
        }
        if let Service6::Dnsmasq(d) = &self.service {
            // On the wire: every DHCPv6 address reported is a lease of
            // dnsmasq's (its lease file is written after the Reply).
            let want: Vec<(&str, usize, Ipv6Addr)> = attached
                .iter()
                .filter_map(|(ns, k, v6)| Some((ns.name(), *k, (*v6)?)))
                .collect();
            let all_there = || {
                let leases = d.leases();
                want.iter()
                    .all(|(_, _, ip)| leases.iter().any(|l| l.ip == *ip))
            };
            if lanlink_lab::wait_until(Duration::from_secs(5), "the DHCPv6 leases", || {
                Ok(all_there().then_some(()))
            })
            .is_err()
            {
                let leases = d.leases();
                for (name, k, ip) in &want {
                    if !leases.iter().any(|l| l.ip == *ip) {
                        results[*k]
                            .failures
                            .push(format!("{name}: {ip} is not in dnsmasq's lease file"));
                    }
                }
            }
        }
        for (ns, k, _) in &attached {
            self.del(ns, SERIES[*k])?;
        }
        for r in &mut results {
            r.p50_ms = percentile(&r.samples_ms, 50.0);
            r.p90_ms = percentile(&r.samples_ms, 90.0);
            r.p99_ms = percentile(&r.samples_ms, 99.0);
            r.max_ms = r.samples_ms.iter().copied().reduce(f64::max);
        }
        Ok(results)
    }

    /// TCP pod → LAN host over IPv6: limit and a lanlink pod, interleaved.
    fn tcp(
        &self,
        plan: &Plan,
        out: &mut Ipv6Result,
        errors: &mut Vec<String>,
    ) -> Result<Vec<Tcp6Result>> {
        let pod = NetNs::new("v6-pod-a")?;
        let (result, first) = self.reach(&pod)?;
        out.first_reply.push(first);
        let addr = self
            .check(&result, AUTO)?
            .context("the TCP pod has no IPv6 address")?;
        let lease = leased_ip(&result)?;
        let measured = self.tcp_runs(plan, &pod, addr, lease, errors);
        self.del(&pod, AUTO)?;
        measured
    }

    /// ADD of a pod in `ns` with the default netconf, then at once its
    /// first echo reply from the LAN host over IPv6 ([`FirstReply`]).
    /// Returns the ADD's result.
    fn reach(&self, ns: &NetNs) -> Result<(Value, FirstReply)> {
        let (out, _) = self.add(ns, AUTO)?;
        let returned = Instant::now();
        let result = out.ok().with_context(|| {
            format!("lanlink ADD failed; agent log:\n{}", self.agent_log_tail())
        })?;
        let addr = self
            .check(&result, AUTO)?
            .context("the pod has no IPv6 address")?;
        let ping = ns.run_timeout(
            &[
                "ping",
                "-6",
                "-n",
                "-q",
                "-c",
                "1",
                "-i",
                "0.05",
                "-w",
                "3",
                &HOST6.to_string(),
            ],
            Duration::from_secs(8),
        )?;
        let took = returned.elapsed();
        let text = String::from_utf8_lossy(&ping.stdout);
        let stats = lanlink_lab::ping::parse_ping(&text).with_context(|| {
            format!(
                "no statistics from ping -6 {HOST6} in {}: {} {}",
                ns.name(),
                text.trim(),
                String::from_utf8_lossy(&ping.stderr).trim()
            )
        })?;
        let first = FirstReply {
            lan: self.kind.name().to_owned(),
            address: addr.to_string(),
            first_reply_ms: (stats.received > 0).then_some(took.as_secs_f64() * 1000.0),
            requests: stats.transmitted,
        };
        println!(
            "   pod {addr}: first IPv6 echo reply {} after its ADD, {} request(s)",
            first
                .first_reply_ms
                .map_or("none within 3 s".to_owned(), |v| format!("{v:.0} ms")),
            first.requests
        );
        Ok((result, first))
    }

    fn tcp_runs(
        &self,
        plan: &Plan,
        pod: &NetNs,
        addr: Ipv6Addr,
        lease: Ipv4Addr,
        errors: &mut Vec<String>,
    ) -> Result<Vec<Tcp6Result>> {
        // Pinging fails fast with a clear message where iperf3 would only
        // time out.
        ping6(&self.limit, HOST6).context("limit → LAN host over IPv6")?;
        ping6(pod, HOST6).with_context(|| {
            format!(
                "lanlink pod {addr} → LAN host over IPv6; agent log:\n{}",
                self.agent_log_tail()
            )
        })?;
        let mut cases: Vec<(&str, &NetNs, IpAddr, IpAddr)> = vec![
            ("limit", &self.limit, LIMIT6.into(), HOST6.into()),
            ("lanlink", pod, addr.into(), HOST6.into()),
        ];
        if plan.ipv4_control {
            cases.push((
                "limit",
                &self.limit,
                topo::LIMIT_IPS[0].into(),
                LAN_HOST_IP.into(),
            ));
            cases.push(("lanlink", pod, lease.into(), LAN_HOST_IP.into()));
        }
        let label = |variant: &str, to: IpAddr| match to {
            IpAddr::V6(_) => variant.to_owned(),
            IpAddr::V4(_) => format!("{variant}, IPv4"),
        };
        if plan.warm_up {
            for &(variant, ns, _, to) in &cases {
                let got = measure::tcp_throughput(ns, to, plan.tcp_secs);
                println!("   warm-up {:<14} {}", label(variant, to), gbps(&got));
            }
        }
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
        for rep in 1..=plan.reps {
            for (k, &(variant, ns, _, to)) in cases.iter().enumerate() {
                let got = measure::tcp_throughput(ns, to, plan.tcp_secs);
                let case = label(variant, to);
                println!(
                    "   [{rep}/{}] {case:<14} TCP → {to} {}",
                    plan.reps,
                    gbps(&got)
                );
                match got {
                    Ok(x) => samples[k].push(x),
                    Err(e) => errors.push(format!(
                        "IPv6 phase TCP pod → LAN host {case} rep {rep}: {e:#}"
                    )),
                }
            }
        }
        Ok(cases
            .iter()
            .zip(samples)
            .map(|(&(variant, _, from, to), s)| Tcp6Result {
                case: label(variant, to),
                variant: variant.to_owned(),
                family: if to.is_ipv6() { 6 } else { 4 },
                address: from.to_string(),
                gbps: Summary::of(report::TCP_POD_LAN.unit, &s),
            })
            .collect())
    }

    /// Copies the agent's and the IPv6 service's logs into `dir`.
    fn save_logs(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let service = match self.service {
            Service6::Radvd(_) => "radvd",
            Service6::Dnsmasq(_) => "dnsmasq6",
        };
        for (name, text) in [
            (
                format!("lanlinkd-ipv6-{}.log", self.kind.key()),
                self.side.agent.log(),
            ),
            (
                format!("{service}-ipv6-{}.log", self.kind.key()),
                self.service.log(),
            ),
            (
                format!("dnsmasq-ipv6-{}.log", self.kind.key()),
                self.lan.dhcp_log(),
            ),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// A throughput or its failure, for the console.
fn gbps(got: &Result<f64>) -> String {
    match got {
        Ok(x) => format!("{x:.2} Gbit/s"),
        Err(e) => format!("FAILED: {e:#}"),
    }
}

/// Adds `ip`/64 to `eth0` in `ns`, without duplicate address detection
/// (usable at once; the lab hands out no address twice).
fn add_addr6(ns: &NetNs, ip: Ipv6Addr) -> Result<()> {
    check_lab_addr6(ip)?;
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{ip}/{PREFIX6_LEN}"),
        "dev",
        "eth0",
        "nodad",
    ])
    .map(drop)
}

/// The IPv6 addresses of a CNI result's `ips`, with their prefix lengths.
pub fn ipv6_addresses(result: &Value) -> Result<Vec<(Ipv6Addr, u8)>> {
    let mut v6 = Vec::new();
    for ip in result["ips"].as_array().context("result without ips")? {
        let cidr = ip["address"].as_str().context("ip without address")?;
        let (a, len) = cidr
            .split_once('/')
            .with_context(|| format!("{cidr}: address without prefix length"))?;
        let what = || format!("{cidr} is not an address/prefix length");
        if let IpAddr::V6(a) = a.parse::<IpAddr>().with_context(what)? {
            v6.push((a, len.parse().with_context(what)?));
        }
    }
    Ok(v6)
}

/// Two pings over IPv6 from `ns` to `dst`, 0.2 s apart, within 5 s; both
/// must come back.
fn ping6(ns: &NetNs, dst: Ipv6Addr) -> Result<()> {
    let out = ns.run_timeout(
        &[
            "ping",
            "-6",
            "-n",
            "-q",
            "-c",
            "2",
            "-i",
            "0.2",
            "-w",
            "5",
            &dst.to_string(),
        ],
        Duration::from_secs(10),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let stats = lanlink_lab::ping::parse_ping(&text).with_context(|| {
        format!(
            "no statistics from ping -6 {dst} in {}: {} {}",
            ns.name(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    ensure!(
        stats.all_received(),
        "ping -6 {dst} from {}: {}",
        ns.name(),
        stats.summary
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_families_of_a_result() {
        let result = json!({"ips": [
            {"address": "198.18.1.7/22", "gateway": "198.18.0.1"},
            {"address": "2001:2:0:1::1a3/128", "gateway": "fe80::1"},
        ]});
        let v6 = ipv6_addresses(&result).unwrap();
        assert_eq!(v6, vec![("2001:2:0:1::1a3".parse().unwrap(), 128)]);
        assert!(Lan6::Dhcpv6.check(v6[0].0, v6[0].1).is_ok());
        assert!(
            Lan6::Slaac.check(v6[0].0, v6[0].1).is_err(),
            "a /128 is not SLAAC"
        );
        let v4_only = json!({"ips": [{"address": "198.18.1.7/22"}]});
        assert!(ipv6_addresses(&v4_only).unwrap().is_empty());
        let slaac: Ipv6Addr = "2001:2:0:1:200:ff:fe00:1".parse().unwrap();
        assert!(Lan6::Slaac.check(slaac, 64).is_ok());
        assert!(
            Lan6::Slaac
                .check("2001:2:0:2::1".parse().unwrap(), 64)
                .is_err()
        );
        assert!(
            Lan6::Dhcpv6
                .check("2001:2:0:1::2".parse().unwrap(), 128)
                .is_err()
        );
    }

    #[test]
    fn missing_names_what_is_wrong() {
        let mut r = Ipv6Result::default();
        for lan in Lan6::ALL {
            for s in SERIES {
                r.add.push(Add6Result {
                    lan: lan.name().to_owned(),
                    series: s.name.to_owned(),
                    ipv6: s.ipv6,
                    samples_ms: vec![10.0],
                    ..Add6Result::default()
                });
            }
        }
        for v in ["limit", "lanlink"] {
            r.tcp_pod_lan.push(Tcp6Result {
                case: v.to_owned(),
                variant: v.to_owned(),
                family: 6,
                address: String::new(),
                gbps: Summary::of("Gbit/s", &[if v == "limit" { 10.0 } else { 9.0 }]),
            });
        }
        for lan in Lan6::ALL {
            r.first_reply.push(FirstReply {
                lan: lan.name().to_owned(),
                address: "2001:2:0:1::1a3".into(),
                first_reply_ms: Some(3.0),
                requests: 1,
            });
        }
        assert!(r.missing().is_empty(), "{:?}", r.missing());
        assert_eq!(r.tcp_ratio(), Some(0.9));
        r.add[1].wrong_family = 1;
        r.add[1]
            .failures
            .push("p: wrong family: the ADD result carries no IPv6 address".into());
        let missing = r.missing();
        assert!(
            missing.len() == 1 && missing[0].contains("wrong address family"),
            "{missing:?}"
        );
        r.add[1].wrong_family = 0;
        r.tcp_pod_lan[1].gbps = None;
        assert!(r.missing()[0].contains("lanlink"), "{:?}", r.missing());
        let mut md = String::new();
        r.markdown(&mut md);
        assert!(
            md.contains("| DHCPv6 (dnsmasq, M flag) | ipv6 off, arpProbeMs 0 | 1 |"),
            "{md}"
        );
    }
}
