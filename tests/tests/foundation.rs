//! The foundation slice end to end: pods get leases from a real dnsmasq on
//! the lab LAN through the CNI plugin and the agent, and reach the LAN router
//! and each other through the eBPF dataplane, with the node's FORWARD policy
//! DROP and br_netfilter on (F2). DEL leaves nothing behind.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use lanlink_lab::{
    Agent, AgentOptions, CniCall, Lan, LanOptions, NetNs, Node, cni, lab_netconf, ping,
};
use serde_json::Value;

const ROUTER: Ipv4Addr = lanlink_lab::ROUTER;

/// A pod attached through the CNI plugin.
struct Pod {
    ns: NetNs,
    container_id: String,
    mac: String,
    ip: Ipv4Addr,
    result: Value,
}

fn add_pod(node: &Node, agent: &Agent, name: &str) -> Result<Pod> {
    let ns = node.pod_netns(name)?;
    let container_id = format!("{}-{name}", ns.name());
    let call = CniCall::new("ADD", &container_id, Some(ns.path()), lab_netconf(agent))
        .with_args(&format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"))
        .in_netns(node.path());
    let out = cni(&lanlink_lab::bin_dir(), &call)?;
    let result = out
        .ok()
        .with_context(|| format!("ADD {name}; agent log:\n{}", agent.log()))?;
    let address = result["ips"][0]["address"]
        .as_str()
        .context("result has no ips[0].address")?;
    let ip: Ipv4Addr = address
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .context("bad address")?;
    let mac = result["interfaces"]
        .as_array()
        .and_then(|ifs| ifs.iter().find(|i| i["sandbox"].is_string()))
        .and_then(|i| i["mac"].as_str())
        .context("result has no pod interface")?
        .to_string();
    Ok(Pod {
        ns,
        container_id,
        mac,
        ip,
        result,
    })
}

fn del_pod(node: &Node, agent: &Agent, pod: &Pod) -> Result<()> {
    let call = CniCall::new(
        "DEL",
        &pod.container_id,
        Some(pod.ns.path()),
        lab_netconf(agent),
    )
    .in_netns(node.path());
    cni(&lanlink_lab::bin_dir(), &call)?
        .ok()
        .map(drop)
        .context("DEL")
}

/// Lines of `bpftool map dump pinned <pin>/<map>` that name a key.
fn map_entries(pin_dir: &Path, map: &str) -> Result<usize> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pin_dir.join(map))
        .output()
        .context("run bpftool")?;
    ensure!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).context("bpftool -j output")?;
    Ok(v.as_array().map(Vec::len).unwrap_or(0))
}

fn host_veths(node: &Node) -> Result<Vec<String>> {
    let links = node.ns().ip(&["-o", "link", "show", "type", "veth"])?;
    Ok(links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .filter(|n| n.starts_with("ll"))
        .collect())
}

#[test]
fn pods_lease_and_reach_the_lan_with_forward_drop() -> Result<()> {
    lanlink_lab::require_root();
    lanlink_lab::sweep_leftovers();
    let lan = Lan::new(LanOptions::default())?;
    let node = Node::new(&lan, "node1", Ipv4Addr::new(198, 18, 0, 10))?;
    // F2: a hostile FORWARD chain and bridge netfilter on the node.
    node.ns().run_ok(&["iptables", "-P", "FORWARD", "DROP"])?;
    node.ns()
        .sysctl("net.bridge.bridge-nf-call-iptables", "1")?;
    let agent = Agent::start(&node, AgentOptions::default())?;
    let pin_dir = agent.pin_dir().to_path_buf();

    let pod1 = add_pod(&node, &agent, "web-0")?;
    let pod2 = add_pod(&node, &agent, "web-1")?;
    ensure!(
        pod1.ip != pod2.ip,
        "two pods got the same address {}",
        pod1.ip
    );
    assert_eq!(pod1.result["cniVersion"], "1.1.0");
    assert_eq!(pod1.result["ips"][0]["gateway"], ROUTER.to_string());

    // The leases are dnsmasq's, for the pods' MACs.
    for pod in [&pod1, &pod2] {
        let lease = lan.wait_for_lease(&pod.mac, Duration::from_secs(5))?;
        ensure!(
            lease.ip == pod.ip,
            "dnsmasq leased {} to {}, the plugin reported {}",
            lease.ip,
            pod.mac,
            pod.ip
        );
    }
    // The pod's interface has the leased address and the MAC from the result.
    let addr = pod1.ns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?;
    ensure!(
        addr.contains(&format!("{}/24", pod1.ip)),
        "pod1 eth0: {addr}"
    );
    ensure!(pod1.ns.mac("eth0")? == pod1.mac);

    // Pod → LAN router, pod → pod on the same node, through the dataplane.
    let p = ping(&pod1.ns, ROUTER, 5, Duration::from_secs(10))?;
    ensure!(p.all_received(), "pod1 → router: {}", p.summary);
    let p = ping(&pod2.ns, pod1.ip, 5, Duration::from_secs(10))?;
    ensure!(p.all_received(), "pod2 → pod1: {}", p.summary);
    // The FORWARD chain never saw them: its DROP policy counted nothing.
    let fwd = node
        .ns()
        .run_ok(&["iptables", "-L", "FORWARD", "-v", "-n", "-x"])?;
    let dropped: u64 = fwd
        .lines()
        .next()
        .and_then(|l| l.split("policy DROP ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("FORWARD policy counters")?;
    ensure!(dropped == 0, "FORWARD dropped {dropped} packets:\n{fwd}");

    // The endpoints are in the pinned maps, readable by bpftool.
    ensure!(map_entries(&pin_dir, "EP_BY_MAC")? == 2);
    ensure!(map_entries(&pin_dir, "EP_BY_IF")? == 2);
    ensure!(host_veths(&node)?.len() == 2);

    // DEL removes everything: veths, map entries, the leases.
    del_pod(&node, &agent, &pod1)?;
    del_pod(&node, &agent, &pod2)?;
    del_pod(&node, &agent, &pod2).context("a second DEL must succeed too")?;
    ensure!(
        host_veths(&node)?.is_empty(),
        "veths left: {:?}",
        host_veths(&node)?
    );
    ensure!(map_entries(&pin_dir, "EP_BY_MAC")? == 0);
    ensure!(map_entries(&pin_dir, "EP_BY_IF")? == 0);
    for pod in [&pod1, &pod2] {
        lan.wait_for_no_lease(&pod.mac, Duration::from_secs(5))
            .with_context(|| format!("lease of {} not released", pod.mac))?;
    }
    let links = std::fs::read_dir(pin_dir.join("links"))?.count();
    ensure!(
        links == 1,
        "only the uplink's link should stay pinned, found {links}"
    );

    // Tear down, then check the run left nothing.
    let names: Vec<String> = [
        lan.ns().name(),
        node.ns().name(),
        pod1.ns.name(),
        pod2.ns.name(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let agent_pid = agent.pid();
    drop((pod1, pod2, agent, node, lan));
    let left = lanlink_lab::cleanup::netns_list();
    for n in &names {
        if left.contains(n) {
            bail!("namespace {n} is still there");
        }
    }
    ensure!(!pin_dir.exists(), "{} is still pinned", pin_dir.display());
    if let Some(pid) = agent_pid {
        ensure!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "agent {pid} still runs"
        );
    }
    Ok(())
}
