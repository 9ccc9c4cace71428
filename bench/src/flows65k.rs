//! The flows65k phase (issue 11): how long a `GET /metrics` scrape and a
//! CNI DEL take when the pinned `FLOWS` map is full (65,536 entries), next
//! to the same with it empty.
//!
//! A lab of its own: a LAN, one node running the agent from `--bin-dir`,
//! and a few pods attached through the real plugin. The map is filled from
//! here, through aya on the agent's pin, with flows that point at the
//! attached pods' host veths (so a DEL has entries of its own to clear),
//! each stamped "seen now" so the agent's idle-flow GC leaves them alone.
//!
//! ```text
//!  LAN 198.18.0.0/24 ── node 198.18.0.10: lanlinkd, pods p0 … pN-1
//!  FLOWS: 65,536 × (198.18.0.x:port → 198.19.a.b:80/tcp, ifindex of pod i % N)
//! ```
//!
//! Samples: scrapes first (the map is not changed by them), then one DEL per
//! sample, the map refilled before each DEL of the full condition.

use std::fmt::Write as _;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use aya::maps::{HashMap, Map, MapData};
use lanlink_common::{FlowKey, FlowValue, MAX_FLOWS, map_names};
use lanlink_lab::pods::{add_call, leased_ip};
use lanlink_lab::{Agent, AgentOptions, CniCall, Lan, LanOptions, NetNs, Node, cni_exec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::stats::Summary;

/// The node's address on the LAN.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

/// How many samples the phase takes.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Scrapes per condition.
    pub scrapes: usize,
    /// DELs per condition (each of a different pod).
    pub dels: usize,
}

impl Plan {
    /// A full run's sampling.
    pub fn full() -> Self {
        Self {
            scrapes: 15,
            dels: 5,
        }
    }

    /// `--quick`: enough to prove the phase works.
    pub fn quick() -> Self {
        Self {
            scrapes: 3,
            dels: 2,
        }
    }

    /// Pods attached at the start: one per DEL, and one that stays so the
    /// last DEL still has a neighbour owning flows.
    fn pods(self) -> usize {
        2 * self.dels + 1
    }
}

/// The map's state while measuring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fill {
    Empty,
    Full,
}

/// The phase's results.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Flows65kResult {
    /// The directory of the binaries measured (`--bin-dir`).
    pub bin_dir: String,
    /// Pods attached before the first DEL.
    pub pods: usize,
    /// `MAX_FLOWS`: what a fill inserts.
    pub flows_inserted: usize,
    /// The fewest entries the full map held after a fill (an LRU map may
    /// evict a little below its size).
    pub flows_full_min: usize,
    /// `GET /metrics` on the agent's socket with `FLOWS` empty, ms.
    pub scrape_empty_ms: Option<Summary>,
    /// `GET /metrics` with `FLOWS` full, ms.
    pub scrape_full_ms: Option<Summary>,
    /// CNI DEL of one pod (the plugin binary, run as a runtime does) with
    /// `FLOWS` empty, ms.
    pub del_empty_ms: Option<Summary>,
    /// CNI DEL of one pod with `FLOWS` full, ms.
    pub del_full_ms: Option<Summary>,
}

impl Flows65kResult {
    /// What is missing for the phase to count.
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for (what, s) in self.series() {
            if s.is_none() {
                missing.push(format!("flows65k: no {what}"));
            }
        }
        if self.flows_full_min * 10 < self.flows_inserted * 9 {
            missing.push(format!(
                "flows65k: the full map held only {} of {} flows",
                self.flows_full_min, self.flows_inserted
            ));
        }
        missing
    }

    fn series(&self) -> [(&'static str, &Option<Summary>); 4] {
        [
            ("scrape, FLOWS empty", &self.scrape_empty_ms),
            ("scrape, FLOWS full", &self.scrape_full_ms),
            ("DEL, FLOWS empty", &self.del_empty_ms),
            ("DEL, FLOWS full", &self.del_full_ms),
        ]
    }

    /// The phase's section of `results.md`.
    pub fn markdown(&self, md: &mut String) {
        let _ = writeln!(md, "\n## DEL and metrics scrape with 65k flows\n");
        let _ = writeln!(
            md,
            "One node, {} pods attached by the plugin; the pinned `FLOWS` map filled \
             from outside the agent with {} flows spread over the pods' host veths \
             (at least {} present after every fill), or emptied. A scrape is \
             `GET /metrics` on the agent's socket (connect to last byte); a DEL is \
             the plugin binary run as a runtime does, one pod per sample. \
             Binaries: `{}`.\n",
            self.pods, self.flows_inserted, self.flows_full_min, self.bin_dir
        );
        let _ = writeln!(
            md,
            "| what | samples | median | min | max |\n|---|---|---|---|---|"
        );
        for (what, s) in self.series() {
            match s {
                Some(s) => {
                    let _ = writeln!(
                        md,
                        "| {what} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
                        s.samples.len(),
                        s.median,
                        s.min,
                        s.max
                    );
                }
                None => {
                    let _ = writeln!(md, "| {what} | 0 | – | – | – |");
                }
            }
        }
    }
}

/// A pod of the phase's lab.
struct Pod {
    ns: NetNs,
    id: String,
    /// Index of its host-side veth in the node.
    host_ifindex: u32,
    /// Its leased address.
    ip: Ipv4Addr,
}

/// Builds the lab, measures, and stores the result in `results.flows65k`
/// (also when a measurement failed: what was measured is kept, the failure
/// goes to `results.errors`).
pub fn run(plan: &Plan, bin_dir: &Path, results: &mut crate::report::Results) -> Result<()> {
    let mut out = Flows65kResult {
        bin_dir: bin_dir.display().to_string(),
        flows_inserted: MAX_FLOWS as usize,
        ..Flows65kResult::default()
    };
    let outcome = measure(plan, bin_dir, &mut out);
    if let Err(e) = &outcome {
        results.errors.push(format!("flows65k: {e:#}"));
    }
    results.flows65k = Some(out);
    outcome
}

fn measure(plan: &Plan, bin_dir: &Path, out: &mut Flows65kResult) -> Result<()> {
    let lan = Lan::new(LanOptions::default())?;
    let node = Node::new(&lan, "node-flows", NODE_IP)?;
    let agent = Agent::start(&node, AgentOptions::from_bin_dir(bin_dir))?;
    let plugin = bin_dir.join(lanlink_lab::CNI_BIN);
    let netconf = lanlink_lab::lab_netconf(&agent);
    let mut pods = Vec::new();
    for i in 0..plan.pods() {
        let ns = NetNs::new(&format!("flows-p{i}"))?;
        let id = ns.name().to_owned();
        let call = add_call(&node, &ns, &id, &format!("flows-p{i}"), &netconf);
        let result = cni_exec(&plugin, &call)?
            .ok()
            .with_context(|| format!("ADD {id}; agent log:\n{}", agent.log()))?;
        let ip = leased_ip(&result)?;
        let host_ifindex = host_ifindex(&node, &result)?;
        pods.push(Pod {
            ns,
            id,
            host_ifindex,
            ip,
        });
    }
    out.pods = pods.len();
    println!(
        "{} pods attached; agent {}",
        pods.len(),
        bin_dir.join(lanlink_lab::AGENT_BIN).display()
    );
    let mut flows = Flows::open(agent.pin_dir())?;
    out.flows_full_min = usize::MAX;

    for fill in [Fill::Empty, Fill::Full] {
        let filled = flows.set(fill, &pods)?;
        if fill == Fill::Full {
            out.flows_full_min = out.flows_full_min.min(filled);
        }
        let mut samples = Vec::new();
        for _ in 0..plan.scrapes {
            samples.push(ms(scrape(&agent)?));
        }
        let summary = Summary::of("ms", &samples);
        println!(
            "scrape, FLOWS {fill:?} ({filled} flows): {}",
            line(&summary)
        );
        match fill {
            Fill::Empty => out.scrape_empty_ms = summary,
            Fill::Full => out.scrape_full_ms = summary,
        }
    }

    for fill in [Fill::Empty, Fill::Full] {
        let mut samples = Vec::new();
        for _ in 0..plan.dels {
            let filled = flows.set(fill, &pods)?;
            if fill == Fill::Full {
                out.flows_full_min = out.flows_full_min.min(filled);
            }
            let pod = pods.remove(0);
            let call = CniCall::new("DEL", &pod.id, Some(pod.ns.path()), netconf.clone())
                .in_netns(node.path());
            let t0 = Instant::now();
            let del = cni_exec(&plugin, &call)?;
            let took = t0.elapsed();
            del.ok()
                .with_context(|| format!("DEL {}; agent log:\n{}", pod.id, agent.log()))?;
            samples.push(ms(took));
        }
        let summary = Summary::of("ms", &samples);
        println!("DEL, FLOWS {fill:?}: {}", line(&summary));
        match fill {
            Fill::Empty => out.del_empty_ms = summary,
            Fill::Full => out.del_full_ms = summary,
        }
    }
    if out.flows_full_min == usize::MAX {
        out.flows_full_min = 0;
    }
    // Leave nothing for the agent's shutdown to walk.
    flows.set(Fill::Empty, &pods)?;
    Ok(())
}

/// The pinned `FLOWS` map, opened a second time next to the agent's handle.
struct Flows {
    map: HashMap<MapData, FlowKey, FlowValue>,
}

impl Flows {
    fn open(pin_dir: &Path) -> Result<Self> {
        let path = pin_dir.join(map_names::FLOWS);
        let data =
            MapData::from_pin(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let map = Map::from_map_data(data)
            .with_context(|| format!("{} is not a map aya knows", path.display()))?;
        let map = HashMap::try_from(map)
            .with_context(|| format!("{} is not a hash of FlowKey", path.display()))?;
        Ok(Self { map })
    }

    /// Empties the map, then for [`Fill::Full`] inserts `MAX_FLOWS` flows
    /// spread over `pods`; returns the entries it then holds.
    fn set(&mut self, fill: Fill, pods: &[Pod]) -> Result<usize> {
        let keys: Vec<FlowKey> = self.map.keys().filter_map(Result::ok).collect();
        for k in keys {
            // The LRU may have evicted it meanwhile: a vanished key is fine.
            let _ = self.map.remove(&k);
        }
        if fill == Fill::Empty {
            return Ok(self.map.keys().count());
        }
        ensure!(!pods.is_empty(), "no pod to own the flows");
        let now = monotonic_ns()?;
        for i in 0..MAX_FLOWS {
            let pod = &pods[i as usize % pods.len()];
            let (key, value) = flow(i, pod.ip, pod.host_ifindex, now);
            self.map
                .insert(key, value, 0)
                .with_context(|| format!("cannot insert flow {i} into FLOWS"))?;
        }
        Ok(self.map.keys().count())
    }
}

/// Flow `i` of a fill: the pod at `pod_ip` answering client
/// 198.19.`i>>8`.`i&255` on port 80 from port 1024 + `i % 60000`; seen at
/// monotonic time `now_ns` through host veth `ifindex`.
fn flow(i: u32, pod_ip: Ipv4Addr, ifindex: u32, now_ns: u64) -> (FlowKey, FlowValue) {
    let [_, _, c, d] = i.to_be_bytes();
    let key = FlowKey {
        saddr: pod_ip.octets(),
        daddr: [198, 19, c, d],
        sport: 80u16.to_be_bytes(),
        dport: (1024 + (i % 60_000) as u16).to_be_bytes(),
        proto: 6,
        _pad: [0; 3],
    };
    let value = FlowValue {
        last_seen_ns: now_ns,
        ifindex,
        _pad: 0,
    };
    (key, value)
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns()`.
fn monotonic_ns() -> Result<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .context("clock_gettime(CLOCK_MONOTONIC)")?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// The ifindex, in `node`, of the host-side interface of a CNI result (the
/// interface without a `sandbox`).
fn host_ifindex(node: &Node, result: &Value) -> Result<u32> {
    let name = result["interfaces"]
        .as_array()
        .and_then(|ifs| ifs.iter().find(|i| i["sandbox"].is_null()))
        .and_then(|i| i["name"].as_str())
        .with_context(|| format!("no host interface in the result {result}"))?;
    let out = node.ns().ip(&["-o", "link", "show", "dev", name])?;
    out.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no ifindex in `{}`", out.trim()))
}

/// One `GET /metrics` over the agent's socket, connect to last byte; fails
/// unless the answer is a 200 with lanlink's metrics.
fn scrape(agent: &Agent) -> Result<Duration> {
    let t0 = Instant::now();
    let body = agent.http_get("/metrics")?;
    let took = t0.elapsed();
    ensure!(
        body.contains("lanlink_"),
        "GET /metrics has no lanlink metric: {body:.300}"
    );
    Ok(took)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn line(s: &Option<Summary>) -> String {
    s.as_ref().map_or("no samples".to_owned(), |s| {
        format!(
            "median {:.2} ms (min {:.2}, max {:.2}, {} samples)",
            s.median,
            s.min,
            s.max,
            s.samples.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_has_distinct_keys_owned_round_robin() {
        let ips = [
            Ipv4Addr::new(198, 18, 0, 100),
            Ipv4Addr::new(198, 18, 0, 101),
        ];
        let mut keys = std::collections::HashSet::new();
        for i in 0..MAX_FLOWS {
            let p = i as usize % 2;
            let (k, v) = flow(i, ips[p], 10 + p as u32, 7);
            assert_eq!(k.saddr, ips[p].octets());
            assert_eq!(v.ifindex, 10 + p as u32);
            assert_eq!(v.last_seen_ns, 7);
            assert!(keys.insert(k), "flow {i} repeats a key");
        }
        assert_eq!(keys.len(), MAX_FLOWS as usize);
    }

    #[test]
    fn a_thin_fill_or_a_missing_series_is_reported() {
        let s = Summary::of("ms", &[1.0]);
        let mut r = Flows65kResult {
            flows_inserted: 65_536,
            flows_full_min: 65_536,
            scrape_empty_ms: s.clone(),
            scrape_full_ms: s.clone(),
            del_empty_ms: s.clone(),
            del_full_ms: s,
            ..Flows65kResult::default()
        };
        assert!(r.missing().is_empty(), "{:?}", r.missing());
        r.flows_full_min = 1_000;
        r.del_full_ms = None;
        let missing = r.missing();
        assert_eq!(missing.len(), 2, "{missing:?}");
        let mut md = String::new();
        r.markdown(&mut md);
        assert!(md.contains("| DEL, FLOWS full | 0 |"), "{md}");
    }
}
