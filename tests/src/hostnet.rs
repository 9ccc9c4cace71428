//! Building blocks of the host-integration tests (issue 4): hostile nodes,
//! pods attached on any interface name and mode, and the agent's view of
//! the dataplane (verdict counters, pinned maps) read from outside.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::agent::Agent;
use crate::bin_dir;
use crate::cmd;
use crate::cni::cni;
use crate::netns::NetNs;
use crate::node::Node;
use crate::pods::{add_call, result_ip, result_mac};

/// The service CIDR of the host-integration tests (inside the lab range,
/// outside the LAN).
pub const SERVICE_CIDR: &str = "198.19.0.0/16";

/// Makes `node` as hostile as a stock Ubuntu/Docker node: FORWARD policy
/// DROP, strict reverse-path filtering.
pub fn hostile(node: &Node) -> Result<()> {
    node.ns()
        .run_ok(&["iptables", "-w", "5", "-P", "FORWARD", "DROP"])?;
    node.ns().sysctl("net.ipv4.conf.all.rp_filter", "1")?;
    node.ns().sysctl("net.ipv4.conf.default.rp_filter", "1")?;
    Ok(())
}

/// Packets the FORWARD policy of `node` dropped.
pub fn forward_policy_drops(node: &Node) -> Result<u64> {
    let out = node
        .ns()
        .run_ok(&["iptables", "-w", "5", "-L", "FORWARD", "-v", "-n", "-x"])?;
    out.lines()
        .next()
        .and_then(|l| l.split("policy DROP ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no FORWARD policy DROP counters in {out:.200}"))
}

/// A lanlink netconf for `agent`: `mode` `primary` or `secondary`, with
/// `hostRoutes`.
pub fn netconf(agent: &Agent, mode: &str, host_routes: &[&str]) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "lanlink-lab",
        "type": "lanlink",
        "uplink": "eth0",
        "mode": mode,
        "hostRoutes": host_routes,
        "socketPath": agent.socket(),
    })
}

/// An interface lanlink attached in a pod.
#[derive(Debug)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The interface's MAC (lower case).
    pub mac: String,
    /// The leased address.
    pub ip: Ipv4Addr,
    /// The netconf it was added with.
    pub netconf: Value,
}

/// ADD of interface `ifname` in `pod` (a namespace the test made) through
/// the CNI plugin, run in `node`'s namespace as its runtime would.
pub fn attach(
    node: &Node,
    agent: &Agent,
    pod: &NetNs,
    name: &str,
    ifname: &str,
    netconf: Value,
) -> Result<Attachment> {
    let container_id = format!("{}-{name}", pod.name());
    let call = add_call(node, pod, &container_id, name, &netconf).with_ifname(ifname);
    let result = cni(&bin_dir(), &call)?
        .ok()
        .with_context(|| format!("ADD {name}/{ifname}; agent log:\n{}", agent.log()))?;
    let ip = result_ip(&result)?.with_context(|| format!("no address in the result {result}"))?;
    let mac = result_mac(&result)?.to_ascii_lowercase();
    Ok(Attachment {
        container_id,
        ifname: ifname.to_owned(),
        mac,
        ip,
        netconf,
    })
}

/// A primary-mode pod: its namespace and its `eth0`.
#[derive(Debug)]
pub struct Pod {
    /// The pod's namespace.
    pub ns: NetNs,
    /// Its lanlink interface.
    pub eth0: Attachment,
}

impl Pod {
    /// A new pod `name` on `node` with a primary lanlink `eth0` whose
    /// netconf routes `host_routes` through the node.
    pub fn primary(node: &Node, agent: &Agent, name: &str, host_routes: &[&str]) -> Result<Self> {
        let ns = node.pod_netns(name)?;
        let eth0 = attach(
            node,
            agent,
            &ns,
            name,
            "eth0",
            netconf(agent, "primary", host_routes),
        )?;
        Ok(Self { ns, eth0 })
    }

    /// Its address.
    pub fn ip(&self) -> Ipv4Addr {
        self.eth0.ip
    }
}

/// The agent's verdict counters (`lanlinkd stats --json`, read from the
/// pinned map when the agent is down): label → packets.
pub use crate::pods::stats;

/// A verdict counter (0 when absent).
pub fn counter(stats: &BTreeMap<String, u64>, verdict: &str) -> u64 {
    stats.get(verdict).copied().unwrap_or(0)
}

/// `bpftool -j map dump pinned <pin_dir>/<map>`: the entries.
pub fn map_dump(pin_dir: &Path, map: &str) -> Result<Vec<Value>> {
    Ok(crate::pods::map_dump(pin_dir, map)?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// `bpftool -j map show pinned <pin_dir>/<map>`: type, max_entries, …
pub fn map_info(pin_dir: &Path, map: &str) -> Result<Value> {
    let mut c = Command::new("bpftool");
    c.args(["-j", "map", "show", "pinned"])
        .arg(pin_dir.join(map));
    let out = cmd::run_ok(&mut c, cmd::SHORT).with_context(|| format!("bpftool show {map}"))?;
    serde_json::from_str(&out).with_context(|| format!("bpftool output for {map}"))
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
