//! Real NICs and real hosts (issue 14, item 2): the uplink is in
//! all-multicast mode while pods are attached (a real NIC's filter drops
//! groups the node has not joined, SSDP's 239.255.255.250 and the pods' own
//! groups among them), and only the agent's own `allmulticast on` is undone;
//! each host veth's MAC is set explicitly (`addr_assign_type` 3, which
//! udev's `MACAddressPolicy=persistent` leaves alone), and it is the MAC the
//! agent reports and its ARP responder answers with.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use lanlink_lab::pods::{self, Pod, add_pod, del_pod};
use lanlink_lab::{Agent, CniCall, Node, OneNode, bin_dir, cni, ping, wait_until};
use serde_json::Value;

/// The `ip -j link show dev <dev>` object of `dev` in the node.
fn link(node: &Node, dev: &str) -> Result<Value> {
    let out = node.ns().ip(&["-j", "link", "show", "dev", dev])?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("ip -j link: {out}"))?;
    Ok(v[0].clone())
}

/// Whether the node's `eth0` has `ALLMULTI` among its flags.
fn allmulti(node: &Node) -> Result<bool> {
    let l = link(node, "eth0")?;
    let flags = l["flags"]
        .as_array()
        .with_context(|| format!("no flags in {l}"))?;
    Ok(flags.iter().any(|f| f == "ALLMULTI"))
}

/// `/sys/class/net/<dev>/addr_assign_type` as the node sees it: sysfs shows
/// the network namespace of whoever mounts it, so it is mounted in a mount
/// namespace of its own, inside the node's network namespace (nothing of
/// the caller's mounts changes).
fn addr_assign_type(node: &Node, dev: &str) -> Result<u8> {
    let script = format!("mount -t sysfs sysfs /sys && cat /sys/class/net/{dev}/addr_assign_type");
    let out = node.ns().run_ok(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ])?;
    out.trim()
        .parse()
        .with_context(|| format!("addr_assign_type of {dev}: {out:?}"))
}

/// The host-side interface (the one without a `sandbox`) of a CNI result.
fn host_interface(pod: &Pod) -> Result<(String, String)> {
    let i = pod.result["interfaces"]
        .as_array()
        .and_then(|ifs| ifs.iter().find(|i| i["sandbox"].is_null()))
        .with_context(|| format!("no host interface in {}", pod.result))?;
    let name = i["name"].as_str().context("host interface name")?;
    let mac = i["mac"].as_str().context("host interface MAC")?;
    Ok((name.to_owned(), mac.to_ascii_lowercase()))
}

/// The host veth of `pod`: set explicitly, the MAC the agent reported, and
/// the one the pod learnt for its gateway from the ARP responder.
fn ensure_host_veth(node: &Node, pod: &Pod) -> Result<()> {
    let (veth, reported) = host_interface(pod)?;
    let l = link(node, &veth)?;
    ensure!(
        l["address"] == reported.as_str(),
        "{veth}: {} on the link, {reported} in the CNI result",
        l["address"]
    );
    ensure!(reported != pod.mac, "{veth} has the pod's MAC {reported}");
    let first = u8::from_str_radix(&reported[..2], 16)?;
    ensure!(
        first & 0x03 == 0x02,
        "{reported}: not locally administered unicast"
    );
    let t = addr_assign_type(node, &veth)?;
    ensure!(t == 3, "{veth}: addr_assign_type {t}, want 3 (set)");
    // The ARP responder answers for the node's addresses with the host
    // veth's MAC: host-bound traffic goes to the node through it.
    let p = ping(&pod.ns, OneNode::NODE_IP, 2, Duration::from_secs(5))?;
    ensure!(p.all_received(), "pod → node: {}", p.summary);
    let node_ip = OneNode::NODE_IP.to_string();
    let neigh = pod.ns.ip(&["-j", "neigh", "show", &node_ip])?;
    let neigh: Value = serde_json::from_str(&neigh)?;
    ensure!(
        neigh[0]["lladdr"] == reported.as_str(),
        "the pod's neighbour {node_ip} is {neigh}, not {reported}"
    );
    Ok(())
}

/// CNI CHECK of `pod`, which must succeed.
fn check(node: &Node, agent: &Agent, pod: &Pod) -> Result<()> {
    let mut conf = pod.netconf.clone();
    conf["prevResult"] = pod.result.clone();
    let call =
        CniCall::new("CHECK", &pod.container_id, Some(pod.ns.path()), conf).in_netns(node.path());
    cni(&bin_dir(), &call)?
        .ok()
        .map(drop)
        .with_context(|| format!("CHECK {}; agent log:\n{}", pod.container_id, agent.log()))
}

/// Acceptance: the first pod puts the uplink in all-multicast mode, a
/// restart of the agent keeps it, the last DEL takes it off; an
/// administrator's `allmulticast on` from before survives the agent; every
/// host veth's MAC is set explicitly, and CHECK puts back one that changed.
#[test]
fn allmulti_follows_the_pods_and_host_veth_macs_are_set() -> Result<()> {
    lanlink_lab::require_root();
    let mut lab = OneNode::start()?;
    let node = &lab.node;
    ensure!(!allmulti(node)?, "eth0 is all-multicast before any pod");

    let a = add_pod(node, &lab.agent, "a")?;
    ensure!(allmulti(node)?, "no ALLMULTI on eth0 after the first ADD");
    let b = add_pod(node, &lab.agent, "b")?;
    for pod in [&a, &b] {
        ensure_host_veth(node, pod)?;
    }
    // What udev's MACAddressPolicy=persistent would do to a random MAC: the
    // agent sees the link notification and puts back the MAC the pod has
    // cached for the node, with no CNI call; CHECK then finds it right.
    let (veth, reported) = host_interface(&a)?;
    let restored_before = lab.agent.log().matches("host veth MAC changed").count();
    node.ns()
        .ip(&["link", "set", "dev", &veth, "address", "02:00:00:00:14:02"])?;
    // The log line (it names the MAC found) shows the change happened and
    // was undone by the agent, not that the `ip link set` failed.
    wait_until(
        Duration::from_secs(5),
        "the agent to restore the host veth's MAC",
        || {
            let log = lab.agent.log();
            let logged = log.matches("host veth MAC changed").count() > restored_before
                && log.contains("02:00:00:00:14:02");
            Ok((logged && link(node, &veth)?["address"] == reported.as_str()).then_some(()))
        },
    )?;
    check(node, &lab.agent, &a)?;
    let now = link(node, &veth)?;
    ensure!(
        now["address"] == reported.as_str(),
        "CHECK left {veth} at {}",
        now["address"]
    );
    del_pod(node, &lab.agent, &a)?;
    ensure!(allmulti(node)?, "ALLMULTI gone while pod b is attached");

    // A new agent adopts the pod and the mode its predecessor set.
    lab.agent.restart()?;
    ensure!(allmulti(&lab.node)?, "ALLMULTI gone after a restart");
    del_pod(&lab.node, &lab.agent, &b)?;
    ensure!(!allmulti(&lab.node)?, "ALLMULTI left after the last DEL");

    // Set by the administrator: the agent never takes it off.
    lab.node
        .ns()
        .ip(&["link", "set", "dev", "eth0", "allmulticast", "on"])?;
    let c = add_pod(&lab.node, &lab.agent, "c")?;
    del_pod(&lab.node, &lab.agent, &c)?;
    ensure!(
        allmulti(&lab.node)?,
        "the agent took off an administrator's allmulticast"
    );
    ensure!(
        pods::host_veths(&lab.node)?.is_empty(),
        "host veths left after DEL"
    );
    Ok(())
}
