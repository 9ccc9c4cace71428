//! The foundation slice end to end: pods get leases from a real dnsmasq on
//! the lab LAN through the CNI plugin and the agent, and reach the LAN router
//! and each other through the eBPF dataplane, with the node's FORWARD policy
//! DROP and br_netfilter on (F2). DEL leaves nothing behind.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use lanlink_lab::pods::{add_pod, del_pod, forward_counters, host_veths, map_len, result_mac};
use lanlink_lab::{Agent, AgentOptions, Lan, LanOptions, Node, ping};

const ROUTER: Ipv4Addr = lanlink_lab::ROUTER;

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
    // The node is as a distribution leaves it (forwarding off): whatever
    // lanlink needs, the agent sets up itself.
    ensure!(node.ns().sysctl_get("net.ipv4.ip_forward")? == "0");
    let agent = Agent::start(&node, AgentOptions::default())?;
    ensure!(
        node.ns().sysctl_get("net.ipv4.ip_forward")? == "1",
        "the agent did not turn IPv4 forwarding on; its log:\n{}",
        agent.log()
    );
    let pin_dir = agent.pin_dir().to_path_buf();

    let pod1 = add_pod(&node, &agent, "web-0")?;
    let pod2 = add_pod(&node, &agent, "web-1")?;
    let (ip1, ip2) = (pod1.ip()?, pod2.ip()?);
    ensure!(ip1 != ip2, "two pods got the same address {ip1}");
    assert_eq!(pod1.result["cniVersion"], "1.1.0");
    assert_eq!(pod1.result["ips"][0]["gateway"], ROUTER.to_string());

    // The leases are dnsmasq's, for the pods' MACs.
    for pod in [&pod1, &pod2] {
        let lease = lan.wait_for_lease(&pod.mac, Duration::from_secs(5))?;
        ensure!(
            lease.ip == pod.ip()?,
            "dnsmasq leased {} to {}, the plugin reported {}",
            lease.ip,
            pod.mac,
            pod.ip()?
        );
    }
    // The pod's interface has the leased address and the MAC from the result.
    let addr = pod1.ns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?;
    ensure!(addr.contains(&format!("{ip1}/24")), "pod1 eth0: {addr}");
    ensure!(pod1.ns.mac("eth0")? == result_mac(&pod1.result)?);

    // Pod → LAN router, pod → pod on the same node, through the dataplane.
    let p = ping(&pod1.ns, ROUTER, 5, Duration::from_secs(10))?;
    ensure!(p.all_received(), "pod1 → router: {}", p.summary);
    let p = ping(&pod2.ns, ip1, 5, Duration::from_secs(10))?;
    ensure!(p.all_received(), "pod2 → pod1: {}", p.summary);
    // The FORWARD chain never saw them: its DROP policy counted nothing.
    let (dropped, _) = forward_counters(&node)?;
    ensure!(dropped == 0, "FORWARD dropped {dropped} packets");

    // The endpoints are in the pinned maps, readable by bpftool.
    ensure!(map_len(&pin_dir, "EP_BY_MAC")? == 2);
    ensure!(map_len(&pin_dir, "EP_BY_IF")? == 2);
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
    ensure!(map_len(&pin_dir, "EP_BY_MAC")? == 0);
    ensure!(map_len(&pin_dir, "EP_BY_IF")? == 0);
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
