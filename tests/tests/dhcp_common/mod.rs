//! Helpers shared by the DHCP lifecycle tests (`dhcp.rs`, `dhcp_pool.rs`):
//! pods through the CNI plugin, the agent's API over its Unix socket, the
//! endpoint flags in the pinned maps, and bounded polling.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use lanlink_lab::{Agent, NetNs, Node, PodNet, pods};
use serde_json::Value;

/// `endpoint_flags::EXPIRED` of `lanlink-common`.
pub const FLAG_EXPIRED: u64 = 1 << 3;

/// A pod attached through the CNI plugin.
pub struct Pod {
    pub ns: NetNs,
    pub name: String,
    pub container_id: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub netconf: Value,
}

/// The lab netconf with `ipam.timeoutMs`.
pub fn netconf(agent: &Agent, timeout_ms: u64) -> Value {
    PodNet::primary().dhcp_timeout_ms(timeout_ms).netconf(agent)
}

/// ADD that must succeed, in `ns`.
pub fn add_in(node: &Node, agent: &Agent, ns: NetNs, name: &str, netconf: &Value) -> Result<Pod> {
    let pod = pods::add_pod_in(node, agent, ns, name, netconf.clone())?;
    let ip = pod.ip().context("result has no ips[0].address")?;
    Ok(Pod {
        ns: pod.ns,
        name: name.to_owned(),
        container_id: pod.container_id,
        mac: pod.mac,
        ip,
        netconf: pod.netconf,
    })
}

/// ADD of pod `default/<name>` in a new pod namespace.
pub fn add(node: &Node, agent: &Agent, name: &str, netconf: &Value) -> Result<Pod> {
    let ns = node.pod_netns(name)?;
    add_in(node, agent, ns, name, netconf)
}

/// DEL of `pod`, which must succeed.
pub fn del(node: &Node, agent: &Agent, pod: &Pod) -> Result<()> {
    pods::del(node, agent, &pod.container_id, &pod.ns, &pod.netconf)
}

/// `GET <path>` on the agent's socket (as `curl --unix-socket` would), JSON body.
pub fn api_get(agent: &Agent, path: &str) -> Result<Value> {
    let body = agent.http_get(path)?;
    serde_json::from_str(&body).with_context(|| format!("GET {path}: body {body:?}"))
}

/// The lease of `container_id` as `GET /v1/leases` shows it.
pub fn lease_of(agent: &Agent, container_id: &str) -> Result<Value> {
    let all = api_get(agent, "/v1/leases")?;
    all.as_array()
        .context("/v1/leases is not an array")?
        .iter()
        .find(|l| l["containerId"] == container_id)
        .cloned()
        .with_context(|| format!("no lease for {container_id} in {all}"))
}

/// The DHCP lease events (`GET /v1/dhcp`, `events`).
pub fn events(agent: &Agent) -> Result<Value> {
    Ok(api_get(agent, "/v1/dhcp")?["events"].clone())
}

/// A field of `v` as u64 (0 when absent, so a missing counter fails the
/// comparisons that use it).
pub fn num(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or(0)
}

/// The `flags` of the pinned `EP_BY_IF` entry for `ifindex` (bpftool).
pub fn endpoint_flags(pin_dir: &Path, ifindex: u64) -> Result<u64> {
    let v = pods::map_dump(pin_dir, "EP_BY_IF")?;
    for e in &v {
        // With BTF the entry is readable as is (or under "formatted").
        let e = if e["formatted"].is_object() {
            &e["formatted"]
        } else {
            e
        };
        if e["key"].as_u64() == Some(ifindex) {
            return e["value"]["flags"]
                .as_u64()
                .with_context(|| format!("no flags in {e}"));
        }
    }
    bail!("no EP_BY_IF entry for ifindex {ifindex} in {v:?}")
}

/// The host veth ifindex of `container_id` (`GET /v1/endpoints`).
pub fn host_ifindex(agent: &Agent, container_id: &str) -> Result<u64> {
    let all = api_get(agent, "/v1/endpoints")?;
    all.as_array()
        .context("/v1/endpoints is not an array")?
        .iter()
        .find(|e| e["containerId"] == container_id)
        .and_then(|e| e["hostIfindex"].as_u64())
        .with_context(|| format!("no endpoint {container_id} in {all}"))
}

/// Now, in (fractional) unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Lines of `log` that contain every one of `words`.
pub fn count_lines(log: &str, words: &[&str]) -> usize {
    log.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

/// The IPv4 addresses on `eth0` in `ns` (`ip -4 -o addr`).
pub fn pod_addresses(ns: &NetNs) -> Result<String> {
    ns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
}
