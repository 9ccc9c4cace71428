//! The invariants checked at each checkpoint and after the run, with the
//! workers quiesced: nothing of a pod outlives its attachment, every live
//! attachment forwards and keeps its lease.
//!
//! Each object kind is read from where it lives (the node's links, routes,
//! addresses and unicast filter; every pinned map; the TC link pins; the
//! agent's API and state file; dnsmasq's lease file; the deletion queue)
//! and compared with the live attachments. Every kind also counts what it
//! sees of the live attachments (`seen`): with live attachments present,
//! a check that sees none of them is blind (the positive control).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use lanlink_api::client::AgentClient;
use lanlink_lab::pods::{host_routes, host_veths, map_dump, pinned_links, uc_filter};
use lanlink_lab::{NetNs, ROUTER, ping};
use serde_json::Value;

use crate::lab::{FLOW_TIMEOUT_SECS, SoakLab};

/// An attachment that must be there, whole and forwarding.
#[derive(Debug)]
pub struct Live<'a> {
    /// `CNI_CONTAINERID`.
    pub id: &'a str,
    /// Its MAC (lower case).
    pub mac: &'a str,
    /// Its namespace (pinged from).
    pub ns: &'a NetNs,
}

/// What one check found.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// Leftovers by kind.
    pub leaks: BTreeMap<String, u64>,
    /// What each kind saw of the live attachments.
    pub seen: BTreeMap<String, u64>,
    /// Live attachments broken: missing parts, no lease, no forwarding,
    /// or a check that could not read.
    pub problems: Vec<String>,
    /// Details of each leak, for the log.
    pub details: Vec<String>,
    /// What is on its way out (a flow of a deleted pod not yet expired):
    /// the settle loop waits for it, it is no failure.
    pub pending: Vec<String>,
}

impl Found {
    fn leak(&mut self, kind: &str, what: impl std::fmt::Display) {
        *self.leaks.entry(kind.to_owned()).or_default() += 1;
        self.details.push(format!("{kind}: {what}"));
    }

    fn seen(&mut self, kind: &str) {
        *self.seen.entry(kind.to_owned()).or_default() += 1;
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The agent's client, with a short deadline.
pub fn client(lab: &SoakLab) -> AgentClient {
    AgentClient::new(&lab.socket).with_timeout(Duration::from_secs(10))
}

/// Checks until nothing is left over or `settle` has passed (a DEL's flow
/// purge runs 100 ms later, a release reaches dnsmasq's file a moment
/// after the DEL), then pings from every live attachment.
///
/// Server leases of `tolerated` MACs (refused by a NAK, or released while
/// the server could not hear it: kept in dnsmasq's file until they expire)
/// are counted under `seen` as `server_lease_<reason>`, not as leaks.
pub fn check(
    lab: &SoakLab,
    live: &[Live<'_>],
    tolerated: &BTreeMap<String, &'static str>,
    settle: Duration,
) -> Found {
    let deadline = Instant::now() + settle;
    let mut found = loop {
        let f = match check_once(lab, live, tolerated) {
            Ok(f) => f,
            Err(e) => Found {
                problems: vec![format!("the checks could not read: {e:#}")],
                ..Found::default()
            },
        };
        let settled = f.leaks.is_empty() && f.problems.is_empty() && f.pending.is_empty();
        if settled || Instant::now() >= deadline {
            break f;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    for l in live {
        match ping(l.ns, ROUTER, 3, Duration::from_secs(3)) {
            Ok(p) if p.received > 0 => found.seen("forwarding"),
            Ok(p) => found
                .problems
                .push(format!("{} does not forward: {}", l.id, p.summary)),
            Err(e) => found.problems.push(format!("{}: ping: {e:#}", l.id)),
        }
    }
    found
}

/// The numbers in a bpftool JSON value, depth first (BTF-formatted keys
/// and values: `42`, `{"addr": [2, 0, …]}`).
fn numbers(v: &Value, out: &mut Vec<u64>) {
    match v {
        Value::Number(n) => out.extend(n.as_u64()),
        Value::Array(a) => a.iter().for_each(|x| numbers(x, out)),
        Value::Object(o) => o.values().for_each(|x| numbers(x, out)),
        _ => {}
    }
}

/// Raw bpftool bytes (`["0x02", …]`) of a key or value.
fn raw_bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .filter_map(|s| u8::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The addresses in the pinned `HOST_ADDRS6` (keys `Ipv6Key { addr }`).
fn host_addrs6(pin_dir: &Path) -> Result<Vec<String>> {
    map_dump(pin_dir, "HOST_ADDRS6")?
        .iter()
        .map(|e| {
            let mut n = Vec::new();
            numbers(&e["formatted"]["key"], &mut n);
            let bytes: Vec<u8> = if n.is_empty() {
                raw_bytes(&e["key"])
            } else {
                n.iter().map(|b| *b as u8).collect()
            };
            let addr: [u8; 16] = bytes.try_into().map_err(|b: Vec<u8>| {
                anyhow::anyhow!("HOST_ADDRS6 key of {} bytes: {e}", b.len())
            })?;
            Ok(std::net::Ipv6Addr::from(addr).to_string())
        })
        .collect()
}

/// A map entry's key as an ifindex (a `u32` key).
fn key_u32(e: &Value) -> Option<u32> {
    let mut n = Vec::new();
    numbers(&e["formatted"]["key"], &mut n);
    if let [k] = n[..] {
        return u32::try_from(k).ok();
    }
    let b = raw_bytes(&e["key"]);
    b.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
}

/// The first array of six numbers in a BTF-formatted value (a MAC field,
/// whatever the struct's field order and padding).
fn six(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Array(a) if a.len() == 6 && a.iter().all(Value::is_u64) => Some(
            a.iter()
                .filter_map(Value::as_u64)
                .map(|b| b as u8)
                .collect(),
        ),
        Value::Array(a) => a.iter().find_map(six),
        Value::Object(o) => o.values().find_map(six),
        _ => None,
    }
}

/// A map entry's key as a MAC (`MacKey`'s six-byte field, or the first six
/// raw bytes without BTF).
fn key_mac(e: &Value) -> Option<String> {
    let bytes: Vec<u8> = six(&e["formatted"]["key"])
        .unwrap_or_else(|| raw_bytes(&e["key"]).into_iter().take(6).collect());
    (bytes.len() == 6).then(|| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    })
}

/// The first `u32` of a map entry's value (an ifindex).
fn value_u32(e: &Value) -> Option<u32> {
    let mut n = Vec::new();
    numbers(&e["formatted"]["value"], &mut n);
    if let Some(first) = n.first() {
        return u32::try_from(*first).ok();
    }
    let b = raw_bytes(&e["value"]);
    b.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
}

fn check_once(
    lab: &SoakLab,
    live: &[Live<'_>],
    tolerated: &BTreeMap<String, &'static str>,
) -> Result<Found> {
    let mut f = Found::default();
    let live_ids: BTreeSet<&str> = live.iter().map(|l| l.id).collect();
    let live_macs: BTreeSet<String> = live.iter().map(|l| l.mac.to_ascii_lowercase()).collect();
    let client = client(lab);

    // The agent's view: endpoints, leases.
    let eps = client.endpoints().context("GET /v1/endpoints")?;
    let mut live_veths = BTreeSet::new();
    let mut live_ifindex = BTreeSet::new();
    for ep in &eps {
        if live_ids.contains(ep.container_id.as_str()) {
            f.seen("agent_endpoint");
            live_veths.insert(ep.host_veth.clone());
            live_ifindex.insert(ep.host_ifindex);
        } else {
            f.leak(
                "agent_endpoint",
                format!("{} ({})", ep.container_id, ep.host_veth),
            );
        }
    }
    for l in live {
        if !eps.iter().any(|e| e.container_id == l.id) {
            f.problems
                .push(format!("{} is missing from the agent's endpoints", l.id));
        }
    }
    let now = now_unix();
    for lease in client.leases().context("GET /v1/leases")? {
        if live_ids.contains(lease.container_id.as_str()) {
            f.seen("agent_lease");
            if lease.expires_at <= now || lease.state == "expired" {
                f.problems.push(format!(
                    "{}: lease {} {} (expires at {}, now {now})",
                    lease.container_id, lease.address, lease.state, lease.expires_at
                ));
            }
        } else {
            f.leak(
                "agent_lease",
                format!("{} {}", lease.container_id, lease.address),
            );
        }
    }

    // The state file.
    let state_path = lab.state_dir.join("endpoints.json");
    let state: Value = match std::fs::read_to_string(&state_path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", state_path.display()))?,
        // No file yet: no endpoint was ever written.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
        Err(e) => return Err(e).context(format!("read {}", state_path.display())),
    };
    if let Some(eps) = state["endpoints"].as_object() {
        for (key, ep) in eps {
            let id = ep["containerId"].as_str().unwrap_or(key);
            if live_ids.contains(id) {
                f.seen("state_file_endpoint");
            } else {
                f.leak("state_file_endpoint", key);
            }
        }
    }

    // The deletion queue: empty while the agent runs.
    let queue = lab.state_dir.join("del-queue");
    if let Ok(dir) = std::fs::read_dir(&queue) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                f.leak("del_queue_entry", name);
            }
        }
    }

    // The node: host veths, routes, addresses, the uplink's unicast filter.
    for veth in host_veths(&lab.node)? {
        if live_veths.contains(&veth) {
            f.seen("veth");
        } else {
            f.leak("veth", veth);
        }
    }
    let on_live_veth = |line: &str| {
        line.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0] == "dev" && live_veths.contains(w[1]))
            || live_veths
                .iter()
                .any(|v| line.split_whitespace().nth(1) == Some(v.as_str()))
    };
    for r in lab.node_routes()? {
        if lab.baseline.routes.contains(&r) {
            continue;
        }
        if on_live_veth(&r) {
            f.seen("route");
        } else {
            f.leak("route", r);
        }
    }
    for a in lab.node_addrs()? {
        // The uplink's own IPv6 link-local address comes back (new) after
        // the uplink-down fault: the kernel's, not a pod's.
        let uplink_ll = a.contains(" eth0 ") && a.contains("inet6 fe80:");
        if lab.baseline.addrs.contains(&a) || uplink_ll {
            continue;
        }
        if on_live_veth(&a) {
            f.seen("address");
        } else {
            f.leak("address", a);
        }
    }
    for mac in uc_filter(&lab.node)? {
        if live_macs.contains(&mac) {
            f.seen("fdb");
        } else {
            f.leak("fdb", mac);
        }
    }

    // Every pinned map with per-endpoint entries.
    let pin = &lab.pin_dir;
    for e in map_dump(pin, "EP_BY_MAC")? {
        match key_mac(&e) {
            Some(m) if live_macs.contains(&m) => f.seen("map_ep_by_mac"),
            other => f.leak("map_ep_by_mac", format!("{other:?}")),
        }
    }
    for map in ["EP_BY_IF", "EP_GUARD", "EP_DROPS"] {
        let kind = format!("map_{}", map.to_ascii_lowercase());
        for e in map_dump(pin, map)? {
            match key_u32(&e) {
                Some(i) if live_ifindex.contains(&i) => f.seen(&kind),
                other => f.leak(&kind, format!("ifindex {other:?}")),
            }
        }
    }
    for e in map_dump(pin, "V6_OWNERS")? {
        match value_u32(&e) {
            Some(i) if live_ifindex.contains(&i) => f.seen("map_v6_owners"),
            other => f.leak("map_v6_owners", format!("ifindex {other:?}")),
        }
    }
    for slot in lanlink_lab::pods::array_u32(pin, "FLOOD")? {
        if slot == 0 || slot == u32::MAX {
            continue;
        }
        if live_ifindex.contains(&slot) {
            f.seen("map_flood");
        } else {
            f.leak("map_flood", format!("ifindex {slot}"));
        }
    }
    for r in host_routes(pin)? {
        if !lab.baseline.host_routes.contains(&r) {
            f.leak("map_host_routes", r);
        }
    }
    // The neighbour responder answers only for addresses the node has now:
    // one it lost (or a pod's) would keep pods talking to a host veth for an
    // address that is gone. Compared with the node's addresses rather than
    // the baseline, which SLAAC temporary addresses outdate.
    let node_addrs = lab.node_addrs()?;
    for a in host_addrs6(pin)? {
        let on = format!(" inet6 {a}/");
        if node_addrs.iter().any(|l| l.contains(&on)) {
            f.seen("map_host_addrs6");
        } else {
            f.leak("map_host_addrs6", a);
        }
    }
    // FLOWS: a DEL purges its pod's flows; what a lost DEL leaves must
    // expire: older than the flow timeout plus one pass (timeout/4) and
    // 2 s of slack is a leak.
    let stale_ms = (FLOW_TIMEOUT_SECS + FLOW_TIMEOUT_SECS / 4 + 2) * 1000;
    for flow in client.flows().context("GET /v1/flows")? {
        if live_ifindex.contains(&flow.host_ifindex) {
            f.seen("map_flows");
        } else if flow.idle_ms > stale_ms {
            f.leak(
                "map_flows",
                format!(
                    "{} ↔ {} on ifindex {} idle {} ms",
                    flow.pod, flow.peer, flow.host_ifindex, flow.idle_ms
                ),
            );
        } else {
            // Not yet expired: the settle loop waits for it.
            f.pending.push(format!(
                "flow of gone ifindex {} idle {} ms (expires)",
                flow.host_ifindex, flow.idle_ms
            ));
        }
    }

    // TC attachments: a link pin per program and interface; one for an
    // interface that is not the uplink or a live host veth is left over.
    for name in pinned_links(pin)? {
        let iface = name.rsplit_once('-').map(|(_, i)| i).unwrap_or(&name);
        if iface == "eth0" {
            continue;
        }
        if live_veths.contains(iface) {
            f.seen("tc_pin");
        } else {
            f.leak("tc_pin", name);
        }
    }

    // The server's lease file: a lease without a live attachment is lost
    // to the LAN until it expires; a live attachment must hold one.
    let leases = lab.lan.leases();
    for l in &leases {
        if l.expiry != 0 && l.expiry <= now {
            continue;
        }
        if live_macs.contains(&l.mac) {
            f.seen("server_lease");
        } else if let Some(reason) = tolerated.get(&l.mac) {
            f.seen(&format!("server_lease_{reason}"));
        } else {
            f.leak("server_lease", format!("{} {}", l.mac, l.ip));
        }
    }
    for l in live {
        if !leases
            .iter()
            .any(|s| s.mac == l.mac && (s.expiry == 0 || s.expiry > now))
        {
            f.problems
                .push(format!("{}: no lease for {} on the server", l.id, l.mac));
        }
    }
    Ok(f)
}

/// The agent's resident set (KiB), open fds and tasks.
pub fn resources(pid: u32) -> Option<(u64, u64, u64)> {
    if pid == 0 {
        return None;
    }
    let proc = Path::new("/proc").join(pid.to_string());
    let status = std::fs::read_to_string(proc.join("status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(proc.join("fd")).ok()?.count() as u64;
    let tasks = std::fs::read_dir(proc.join("task")).ok()?.count() as u64;
    Some((rss, fds, tasks))
}

/// The address of a CNI result.
pub fn result_ip(result: &Value) -> Option<Ipv4Addr> {
    lanlink_lab::pods::leased_ip(result).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_bpftool_keys() {
        let e =
            json!({"key": ["0x05","0","0","0"], "formatted": {"key": 5, "value": {"ifindex": 9}}});
        assert_eq!(key_u32(&e), Some(5));
        assert_eq!(value_u32(&e), Some(9));
        let raw = json!({"key": ["0x07","0x00","0x00","0x00"], "value": ["0x0a","0","0","0"]});
        assert_eq!(key_u32(&raw), Some(7));
        assert_eq!(value_u32(&raw), Some(10));
        let mac = json!({"formatted": {"key": {"_pad": [0, 0], "addr": [2, 0, 0, 0, 0, 0xab]}}});
        assert_eq!(key_mac(&mac).as_deref(), Some("02:00:00:00:00:ab"));
    }
}
