//! Pods for the scenarios: attach and detach them (and extra interfaces)
//! through the CNI plugin, and read what the dataplane shows about them
//! (verdict counters, pinned maps through bpftool, the uplink's unicast
//! filter, host veths); and nodes made as hostile as stock distributions
//! (FORWARD policy DROP, thousands of rules, strict rp_filter).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::agent::Agent;
use crate::cmd;
use crate::cni::{CniCall, CniOutput, PodNet, cni, lab_netconf};
use crate::netns::NetNs;
use crate::node::Node;
use crate::wait::wait_until;
use crate::{AGENT_BIN, bin_dir};

/// The service CIDR of the host-integration scenarios (inside the lab
/// range, outside the LAN).
pub const SERVICE_CIDR: &str = "198.19.0.0/16";

/// An interface lanlink attached in a pod (ADD through the CNI plugin).
#[derive(Debug)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The interface's MAC (lower case), from the CNI result.
    pub mac: String,
    /// The leased address; `None` with `ipam: none`.
    pub ip: Option<Ipv4Addr>,
    /// The CNI result.
    pub result: Value,
    /// The netconf it was added with (DEL uses the same).
    pub netconf: Value,
}

/// A pod attached through the CNI plugin: its namespace and its `eth0`.
#[derive(Debug)]
pub struct Pod {
    /// Its namespace.
    pub ns: NetNs,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// Its interface's MAC (lower case), from the CNI result.
    pub mac: String,
    /// Its leased address; `None` with `ipam: none`.
    pub ip: Option<Ipv4Addr>,
    /// The CNI result.
    pub result: Value,
    /// The netconf it was added with (DEL uses the same).
    pub netconf: Value,
}

impl Pod {
    /// A new pod `name` on `node` with a primary lanlink `eth0` whose
    /// netconf routes `host_routes` through the node; it must get a lease.
    pub fn primary(node: &Node, agent: &Agent, name: &str, host_routes: &[&str]) -> Result<Self> {
        let netconf = PodNet::primary().host_routes(host_routes).netconf(agent);
        let pod = add_pod_with(node, agent, name, netconf)?;
        pod.ip()?;
        Ok(pod)
    }

    /// Its leased address (fails for a pod without one).
    pub fn ip(&self) -> Result<Ipv4Addr> {
        self.ip
            .with_context(|| format!("pod {} has no lease", self.container_id))
    }
}

/// Adds pod `name` on `node` with the lab netconf.
pub fn add_pod(node: &Node, agent: &Agent, name: &str) -> Result<Pod> {
    add_pod_with(node, agent, name, lab_netconf(agent))
}

/// Adds pod `name` on `node` with `netconf` (ADD, run in the node's
/// namespace as its runtime would).
pub fn add_pod_with(node: &Node, agent: &Agent, name: &str, netconf: Value) -> Result<Pod> {
    let ns = node.pod_netns(name)?;
    add_pod_in(node, agent, ns, name, netconf)
}

/// Adds pod `name` on `node` in `ns`, a namespace the test made, with
/// `netconf`; the ADD must succeed.
pub fn add_pod_in(
    node: &Node,
    agent: &Agent,
    ns: NetNs,
    name: &str,
    netconf: Value,
) -> Result<Pod> {
    let a = attach(node, agent, &ns, name, "eth0", netconf)?;
    Ok(Pod {
        ns,
        container_id: a.container_id,
        mac: a.mac,
        ip: a.ip,
        result: a.result,
        netconf: a.netconf,
    })
}

/// ADD of interface `ifname` in `ns` (a namespace the test made, which may
/// have interfaces already) for pod `default/<name>`, through the CNI
/// plugin run in `node`'s namespace as its runtime would; must succeed.
pub fn attach(
    node: &Node,
    agent: &Agent,
    ns: &NetNs,
    name: &str,
    ifname: &str,
    netconf: Value,
) -> Result<Attachment> {
    let container_id = format!("{}-{name}", ns.name());
    let call = add_call(node, ns, &container_id, name, &netconf).with_ifname(ifname);
    let result = cni(&bin_dir(), &call)?
        .ok()
        .with_context(|| format!("ADD {name}/{ifname}; agent log:\n{}", agent.log()))?;
    let ip = result_ip(&result)?;
    let mac = result_mac(&result)?.to_ascii_lowercase();
    Ok(Attachment {
        container_id,
        ifname: ifname.to_owned(),
        mac,
        ip,
        result,
        netconf,
    })
}

/// The ADD call of pod `default/<name>` in `ns`, run in the node's namespace
/// as its runtime would.
pub fn add_call(
    node: &Node,
    ns: &NetNs,
    container_id: &str,
    name: &str,
    netconf: &Value,
) -> CniCall {
    CniCall::new("ADD", container_id, Some(ns.path()), netconf.clone())
        .with_args(&format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"))
        .in_netns(node.path())
}

/// ADD of pod `default/<name>` in `ns`, whatever its outcome.
pub fn try_add(
    node: &Node,
    ns: &NetNs,
    container_id: &str,
    name: &str,
    netconf: &Value,
) -> Result<CniOutput> {
    cni(&bin_dir(), &add_call(node, ns, container_id, name, netconf))
}

/// The address of `ips[0]` in a CNI result, without its prefix length;
/// `None` when the result has no address (`ipam: none`). The contract
/// crate's reading, the same the plugin and the agent use.
pub use lanlink_api::result_ip;

/// The address of a CNI result that must have one.
pub fn leased_ip(result: &Value) -> Result<Ipv4Addr> {
    result_ip(result)?.with_context(|| format!("no ips[0].address in the CNI result {result}"))
}

/// The MAC of the pod-side interface (the one with a `sandbox`) in a CNI
/// result, as the result spells it.
pub fn result_mac(result: &Value) -> Result<&str> {
    result["interfaces"]
        .as_array()
        .and_then(|ifs| ifs.iter().find(|i| i["sandbox"].is_string()))
        .and_then(|i| i["mac"].as_str())
        .with_context(|| format!("no pod interface in the result {result}"))
}

/// DEL of `pod` (idempotent on the agent's side).
pub fn del_pod(node: &Node, agent: &Agent, pod: &Pod) -> Result<()> {
    del(node, agent, &pod.container_id, &pod.ns, &pod.netconf)
}

/// DEL of `container_id` in `ns` with `netconf`, which must succeed.
pub fn del(
    node: &Node,
    agent: &Agent,
    container_id: &str,
    ns: &NetNs,
    netconf: &Value,
) -> Result<()> {
    let call =
        CniCall::new("DEL", container_id, Some(ns.path()), netconf.clone()).in_netns(node.path());
    cni(&bin_dir(), &call)?
        .ok()
        .map(drop)
        .with_context(|| format!("DEL {container_id}; agent log:\n{}", agent.log()))
}

/// The agent's verdict counters (`lanlinkd stats --json`): label → packets.
/// Read from the pinned `STATS` map when the agent is down.
pub fn stats(agent: &Agent) -> Result<BTreeMap<String, u64>> {
    let mut c = Command::new(bin_dir().join(AGENT_BIN));
    c.args(["stats", "--json", "--socket"])
        .arg(agent.socket())
        .arg("--pin-dir")
        .arg(agent.pin_dir());
    let out = cmd::run_ok(&mut c, cmd::SHORT).context("lanlinkd stats --json")?;
    let rows: Value = serde_json::from_str(&out).context("stats JSON")?;
    rows.as_array()
        .context("stats JSON is not an array")?
        .iter()
        .map(|r| {
            Ok((
                r["verdict"]
                    .as_str()
                    .context("row without verdict")?
                    .to_owned(),
                r["packets"].as_u64().context("row without packets")?,
            ))
        })
        .collect()
}

/// A verdict counter of a [`stats`] read (0 when absent).
pub fn counter(stats: &BTreeMap<String, u64>, verdict: &str) -> u64 {
    stats.get(verdict).copied().unwrap_or(0)
}

/// `bpftool -j <object> <verb> pinned <path>`, parsed: the lab's one way of
/// reading pinned maps, programs and links from outside the agent.
pub fn bpftool_json(object: &str, verb: &str, path: &Path) -> Result<Value> {
    let mut c = Command::new("bpftool");
    c.args(["-j", object, verb, "pinned"]).arg(path);
    let what = format!("bpftool {object} {verb} pinned {}", path.display());
    let out = cmd::run_ok(&mut c, cmd::SHORT).with_context(|| what.clone())?;
    serde_json::from_str(&out).with_context(|| format!("the output of {what}"))
}

/// `lanlinkd status --json` of `agent`.
pub fn agent_status(agent: &Agent) -> Result<Value> {
    let out = cmd::run_ok(
        Command::new(agent.program())
            .args(["status", "--json", "--socket"])
            .arg(agent.socket()),
        cmd::SHORT,
    )?;
    serde_json::from_str(&out).context("the status JSON")
}

/// The id of the program an attachment pin runs: a TCX link's program
/// (`bpftool link show pinned`), or the program itself that `--attach tc`
/// pins (`bpftool prog show pinned`).
pub fn pinned_prog_id(pin: &Path) -> Result<u64> {
    let (v, key) = match bpftool_json("link", "show", pin) {
        Ok(v) => (v, "prog_id"),
        Err(_) => (bpftool_json("prog", "show", pin)?, "id"),
    };
    v[key].as_u64().with_context(|| format!("no {key} in {v}"))
}

/// The entries of the pinned map `<pin_dir>/<map>` (`bpftool -j map dump`;
/// with BTF each has its fields by name under `formatted`).
pub fn map_dump(pin_dir: &Path, map: &str) -> Result<Vec<Value>> {
    match bpftool_json("map", "dump", &pin_dir.join(map))? {
        Value::Array(entries) => Ok(entries),
        other => anyhow::bail!("bpftool dump of {map} is not a list: {other}"),
    }
}

/// `bpftool -j map show` of the pinned map: type, max_entries, …
pub fn map_info(pin_dir: &Path, map: &str) -> Result<Value> {
    bpftool_json("map", "show", &pin_dir.join(map))
}

/// Number of entries `bpftool` shows in a pinned hash or LRU map.
pub fn map_len(pin_dir: &Path, map: &str) -> Result<usize> {
    Ok(map_dump(pin_dir, map)?.len())
}

/// The values of a pinned `u32` array map (e.g. `FLOOD`), in index order.
pub fn array_u32(pin_dir: &Path, map: &str) -> Result<Vec<u32>> {
    map_dump(pin_dir, map)?
        .iter()
        .map(|e| {
            // With BTF: {"key": 0, "value": 7}; without: byte arrays.
            match &e["value"] {
                Value::Number(n) => n.as_u64().map(|n| n as u32),
                Value::Array(b) => {
                    let b: Vec<u8> = b
                        .iter()
                        .filter_map(|x| {
                            x.as_str().and_then(|s| {
                                u8::from_str_radix(s.trim_start_matches("0x"), 16).ok()
                            })
                        })
                        .collect();
                    b.try_into().ok().map(u32::from_ne_bytes)
                }
                _ => None,
            }
            .with_context(|| format!("{map}: cannot read {e}"))
        })
        .collect()
}

/// MACs in the unicast filter of the node's `eth0` (`bridge fdb show dev
/// eth0`: the `self permanent` entries that are not multicast).
pub fn uc_filter(node: &Node) -> Result<Vec<String>> {
    let out = node
        .ns()
        .run_ok(&["bridge", "fdb", "show", "dev", "eth0"])?;
    Ok(out
        .lines()
        .filter(|l| l.contains("self") && l.contains("permanent"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|m| u8::from_str_radix(m.get(..2).unwrap_or("01"), 16).is_ok_and(|b| b & 1 == 0))
        .map(str::to_ascii_lowercase)
        .collect())
}

/// Names of the host-side veths the agent made on `node` (`ll…`).
pub fn host_veths(node: &Node) -> Result<Vec<String>> {
    let links = node.ns().ip(&["-o", "link", "show", "type", "veth"])?;
    Ok(links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .filter(|n| n.starts_with("ll"))
        .collect())
}

/// Files under `<pin_dir>/links`.
pub fn pinned_links(pin_dir: &Path) -> Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(pin_dir.join("links"))
        .with_context(|| format!("read {}/links", pin_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

/// Asserts that `counter` grew by at least `by` between two [`stats`] reads.
pub fn ensure_grew(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    counter: &str,
    by: u64,
) -> Result<()> {
    let b = before.get(counter).copied().unwrap_or(0);
    let a = after.get(counter).copied().unwrap_or(0);
    ensure!(
        a >= b + by,
        "{counter} went from {b} to {a}, expected at least +{by}; counters now: {after:?}"
    );
    Ok(())
}

/// Makes the node's FORWARD chain hostile (F2): policy DROP, `rules`
/// unrelated rules loaded with one `iptables-restore`, and bridge netfilter
/// on. Nothing of it may matter to pod traffic.
pub fn hostile_forward(node: &Node, rules: u32) -> Result<()> {
    let mut s =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for i in 0..rules {
        // Sources in 198.19.0.0/16 (lab range, never used by pods), so no
        // rule ever matches lab traffic.
        s.push_str(&format!(
            "-A FORWARD -s 198.19.{}.{}/32 -p udp -m udp --dport {} -j ACCEPT\n",
            (i / 256) % 256,
            i % 256,
            1000 + i % 50_000
        ));
    }
    s.push_str("COMMIT\n");
    let out = cmd::run_with_stdin(
        &mut node.ns().command(&["iptables-restore", "-w", "5"]),
        Some(s.as_bytes()),
        Duration::from_secs(60),
    )?;
    ensure!(
        out.status.success(),
        "iptables-restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.ns()
        .sysctl("net.bridge.bridge-nf-call-iptables", "1")?;
    let n = node
        .ns()
        .run_ok(&["iptables", "-S", "FORWARD"])?
        .lines()
        .filter(|l| l.starts_with("-A FORWARD"))
        .count();
    ensure!(
        n == rules as usize,
        "FORWARD has {n} rules, expected {rules}"
    );
    Ok(())
}

/// Packets the FORWARD chain's policy dropped, and packets any FORWARD rule
/// matched, in the node's namespace.
pub fn forward_counters(node: &Node) -> Result<(u64, u64)> {
    let out = node
        .ns()
        .run_ok(&["iptables", "-w", "5", "-L", "FORWARD", "-v", "-n", "-x"])?;
    let policy = out
        .lines()
        .next()
        .and_then(|l| l.split("policy DROP ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no FORWARD policy counters in {out:.200}"))?;
    let matched = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Ok((policy, matched))
}

/// Waits (≤ 3 s) until `counter` has grown by at least `by` since `before`:
/// frames a test sends are counted in softirq context, possibly after the
/// sender returned.
pub fn wait_grew(
    agent: &Agent,
    before: &BTreeMap<String, u64>,
    counter: &str,
    by: u64,
) -> Result<()> {
    let b = before.get(counter).copied().unwrap_or(0);
    let what = format!("{counter} to grow by {by}");
    // On a timeout, the check below says by how much it did grow.
    let _ = wait_until(Duration::from_secs(3), &what, || {
        Ok((stats(agent)?.get(counter).copied().unwrap_or(0) >= b + by).then_some(()))
    });
    ensure_grew(before, &stats(agent)?, counter, by)
}

/// Packets the FORWARD policy of `node` dropped.
pub fn forward_policy_drops(node: &Node) -> Result<u64> {
    Ok(forward_counters(node)?.0)
}

/// Makes `node` as hostile as a stock Ubuntu/Docker node: FORWARD policy
/// DROP, strict reverse-path filtering.
pub fn hostile(node: &Node) -> Result<()> {
    node.ns()
        .run_ok(&["iptables", "-w", "5", "-P", "FORWARD", "DROP"])?;
    node.ns().sysctl("net.ipv4.conf.all.rp_filter", "1")?;
    node.ns().sysctl("net.ipv4.conf.default.rp_filter", "1")?;
    Ok(())
}

/// The prefixes in the pinned `HOST_ROUTES` LPM trie, as `a.b.c.d/len`.
pub fn host_routes(pin_dir: &Path) -> Result<Vec<String>> {
    map_dump(pin_dir, "HOST_ROUTES")?
        .iter()
        .map(|e| {
            // bpftool with BTF: {"formatted": {"key": {"data": […], "prefix_len": 32}}}.
            let k = &e["formatted"]["key"];
            let len = k["prefix_len"]
                .as_u64()
                .with_context(|| format!("no prefixlen in {e}"))?;
            let data: Vec<u8> = k["data"]
                .as_array()
                .with_context(|| format!("no data in {e}"))?
                .iter()
                .filter_map(|b| b.as_u64().map(|b| b as u8))
                .collect();
            ensure!(data.len() == 4, "bad key {e}");
            Ok(format!(
                "{}/{len}",
                Ipv4Addr::new(data[0], data[1], data[2], data[3])
            ))
        })
        .collect()
}
