//! The L2 dataplane's unicast paths and guarantees (issue 3): every pod–LAN
//! path works with a hostile FORWARD chain on two nodes (F2), pods that run
//! their own DHCP client lease through the dataplane (F1), forged frames
//! are dropped and counted, pod MACs sit in the uplink's unicast filter
//! (F9), the maps carry BTF, and DEL leaves nothing behind.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use lanlink_lab::pods::{self, Pod, add_pod, add_pod_with, del_pod};
use lanlink_lab::traffic::{self, Tool, arp_op, hex, parse_mac};
use lanlink_lab::{
    Agent, AgentOptions, Lan, LanOptions, Node, OneNode, lab_netconf, ping, wait_until,
};

/// The lab's traffic tool (a binary of `lanlink-lab`).
static LAB_NET: std::sync::LazyLock<std::path::PathBuf> =
    std::sync::LazyLock::new(|| lanlink_lab::tool("lab-net").expect("the lab-net tool"));
const ROUTER: Ipv4Addr = lanlink_lab::ROUTER;

fn lab_net() -> &'static Path {
    &LAB_NET
}

fn ping_ok(from: &lanlink_lab::NetNs, to: Ipv4Addr, what: &str) -> Result<()> {
    let p = ping(from, to, 3, Duration::from_secs(5))?;
    ensure!(p.all_received(), "{what} ({to}): {}", p.summary);
    Ok(())
}

/// Acceptance 1 and 9: with FORWARD policy DROP, br_netfilter on and 10,000
/// unrelated FORWARD rules on both nodes, ICMP and TCP work pod → LAN host,
/// LAN host → pod, pod → pod on one node, and pod → pod across two nodes
/// (each with its own agent and pin dir), and FORWARD never sees them.
#[test]
fn every_path_works_with_a_hostile_forward_chain_on_two_nodes() -> Result<()> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions::default())?;
    let host = lan.add_host("host", Ipv4Addr::new(198, 18, 0, 50))?;
    let node_a = Node::new(&lan, "node-a", Ipv4Addr::new(198, 18, 0, 10))?;
    let node_b = Node::new(&lan, "node-b", Ipv4Addr::new(198, 18, 0, 11))?;
    for node in [&node_a, &node_b] {
        pods::hostile_forward(node, 10_000)?;
    }
    let agent_a = Agent::start(&node_a, AgentOptions::default())?;
    let agent_b = Agent::start(&node_b, AgentOptions::default())?;
    ensure!(agent_a.pin_dir() != agent_b.pin_dir());
    let a1 = add_pod(&node_a, &agent_a, "a1")?;
    let a2 = add_pod(&node_a, &agent_a, "a2")?;
    let b1 = add_pod(&node_b, &agent_b, "b1")?;
    let before_a = pods::stats(&agent_a)?;
    let before_b = pods::stats(&agent_b)?;

    // ICMP.
    ping_ok(&a1.ns, host.ip(), "a1 → LAN host")?;
    ping_ok(host.ns(), a1.ip()?, "LAN host → a1")?;
    ping_ok(&a2.ns, a1.ip()?, "a2 → a1 (same node)")?;
    ping_ok(&a1.ns, b1.ip()?, "a1 → b1 (other node)")?;
    ping_ok(&b1.ns, ROUTER, "b1 → router")?;

    // TCP, each way.
    let bin = lab_net();
    traffic::tcp_exchange(bin, host.ns(), &a1.ns, host.ip(), 7001, "a1-to-host")?;
    traffic::tcp_exchange(bin, &a1.ns, host.ns(), a1.ip()?, 7002, "host-to-a1")?;
    traffic::tcp_exchange(bin, &a1.ns, &a2.ns, a1.ip()?, 7003, "a2-to-a1")?;
    traffic::tcp_exchange(bin, &b1.ns, &a1.ns, b1.ip()?, 7004, "a1-to-b1")?;
    traffic::tcp_exchange(bin, &a2.ns, &b1.ns, a2.ip()?, 7005, "b1-to-a2")?;

    // Bulk TCP (4 MiB, segmentation offload on the way), each way and
    // across nodes.
    traffic::tcp_bulk(bin, host.ns(), &a1.ns, host.ip(), 7006, 4 << 20)?;
    traffic::tcp_bulk(bin, &a1.ns, host.ns(), a1.ip()?, 7007, 4 << 20)?;
    traffic::tcp_bulk(bin, &b1.ns, &a2.ns, b1.ip()?, 7008, 4 << 20)?;

    // Neither FORWARD chain saw a packet: not its policy, not one rule.
    for node in [&node_a, &node_b] {
        let (policy, matched) = pods::forward_counters(node)?;
        ensure!(
            policy == 0 && matched == 0,
            "FORWARD in {} dropped {policy} and matched {matched} packets",
            node.name()
        );
    }
    // The frames went the dataplane's ways, on both nodes.
    let after_a = pods::stats(&agent_a)?;
    let after_b = pods::stats(&agent_b)?;
    pods::ensure_grew(&before_a, &after_a, "redirect_uplink", 10)?;
    pods::ensure_grew(&before_a, &after_a, "redirect_peer", 10)?;
    pods::ensure_grew(&before_b, &after_b, "redirect_uplink", 5)?;
    pods::ensure_grew(&before_b, &after_b, "redirect_peer", 5)?;
    pods::ensure_grew(&before_a, &after_a, "flood", 1)?;
    // The agent leased for these pods: the dataplane learnt nothing itself.
    ensure!(after_a["dhcp_learnt"] == 0 && after_b["dhcp_learnt"] == 0);
    for (k, v) in after_a.iter().chain(after_b.iter()) {
        ensure!(
            !k.starts_with("drop_") || *v == 0,
            "{k} = {v}: nothing legitimate may be dropped"
        );
    }
    Ok(())
}

/// Sends `frame` from `pod`'s eth0 with `lab-net raw-send`.
fn raw_send(pod: &Pod, frame: &[u8], count: u32) -> Result<()> {
    traffic::run(
        &pod.ns,
        lab_net(),
        &[
            "raw-send",
            "--iface",
            "eth0",
            "--hex",
            &hex(frame),
            "--count",
            &count.to_string(),
        ],
        Duration::from_secs(10),
    )
    .map(drop)
}

/// A capture on the LAN host's eth0 of frames containing `pattern`.
/// It stops after `count` frames (or 8 s): the tests send what must be
/// dropped first and a known number of honest frames last, so a leaked
/// frame shows up among the first `count` without waiting for a timeout.
fn capture(ns: &lanlink_lab::NetNs, pattern: &[u8], count: u32) -> Result<Tool> {
    Tool::spawn(
        ns,
        lab_net(),
        &[
            "raw-recv",
            "--iface",
            "eth0",
            "--match-hex",
            &hex(pattern),
            "--count",
            &count.to_string(),
            "--timeout-ms",
            "8000",
        ],
    )
}

fn neigh_mac(ns: &lanlink_lab::NetNs, ip: Ipv4Addr) -> Result<Option<String>> {
    let out = ns.ip(&["neigh", "show", &ip.to_string(), "dev", "eth0"])?;
    Ok(out
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_ascii_lowercase))
}

/// Acceptance 5: a pod that forges its source IPv4 or source MAC, answers
/// ARP for another pod's address, or tags its frames with a VLAN, has those
/// frames dropped (none reaches the LAN), each counted under its drop
/// reason; its honest frames still pass, and the victim's traffic and
/// neighbour entries are intact.
#[test]
fn forged_frames_are_dropped_and_counted() -> Result<()> {
    lanlink_lab::require_root();
    let lab = OneNode::start()?;
    let (host, node, agent) = (&lab.host, &lab.node, &lab.agent);
    let attacker = add_pod(node, agent, "attacker")?;
    let victim = add_pod(node, agent, "victim")?;
    let (a_mac, v_mac, h_mac) = (
        parse_mac(&attacker.mac)?,
        parse_mac(&victim.mac)?,
        parse_mac(host.mac())?,
    );
    let (a_ip, v_ip) = (attacker.ip()?, victim.ip()?);
    // The LAN host knows the victim.
    ping_ok(host.ns(), v_ip, "LAN host → victim")?;
    ensure!(neigh_mac(host.ns(), v_ip)?.as_deref() == Some(victim.mac.as_str()));
    let before = pods::stats(agent)?;

    // UDP to the LAN host: forged source IPv4, forged source MAC, honest.
    let marker = b"lanlink-spoof-test:";
    let cap = capture(host.ns(), marker, 2)?;
    let udp = |src_mac, src_ip, tag: &str| {
        let payload = [marker.as_slice(), tag.as_bytes()].concat();
        traffic::udp_frame(src_mac, h_mac, src_ip, host.ip(), 4000, 4001, &payload)
    };
    raw_send(&attacker, &udp(a_mac, v_ip, "forged-ip"), 3)?;
    raw_send(&attacker, &udp(v_mac, v_ip, "forged-mac"), 3)?;
    raw_send(&attacker, &udp(v_mac, a_ip, "forged-mac-only"), 2)?;
    // Honest addresses but VLAN-tagged: one 802.1Q tag (the kernel moves
    // it into the skb before TC), and QinQ (the inner tag stays in-line).
    let tagged = |tags: &[[u8; 4]], name: &str| {
        let mut f = udp(a_mac, a_ip, name);
        let tags: Vec<u8> = tags.concat();
        f.splice(12..12, tags);
        f
    };
    raw_send(&attacker, &tagged(&[[0x81, 0x00, 0x00, 0x64]], "vlan"), 2)?;
    raw_send(
        &attacker,
        &tagged(
            &[[0x88, 0xa8, 0x00, 0x64], [0x81, 0x00, 0x00, 0x65]],
            "qinq",
        ),
        2,
    )?;
    raw_send(&attacker, &udp(a_mac, a_ip, "honest"), 2)?;
    let got = cap.finish(Duration::from_secs(12))?;
    let tags: Vec<String> = got
        .iter()
        .map(|g| {
            let i = g
                .data
                .windows(marker.len())
                .position(|w| w == marker)
                .unwrap_or(0);
            String::from_utf8_lossy(&g.data[i + marker.len()..]).into_owned()
        })
        .collect();
    ensure!(
        tags.iter().all(|t| t == "honest") && tags.len() == 2,
        "the LAN host must see exactly the 2 honest frames, saw {tags:?}"
    );

    // ARP replies claiming the victim's address: unicast to the LAN host
    // and gratuitous (broadcast); and a request with the victim as sender.
    let claim = [a_mac.as_slice(), &v_ip.octets()].concat();
    let cap = capture(host.ns(), &claim, 1)?;
    let reply = traffic::arp_frame(
        a_mac,
        h_mac,
        arp_op::REPLY,
        (a_mac, v_ip),
        (h_mac, host.ip()),
    );
    let garp = traffic::arp_frame(
        a_mac,
        [0xff; 6],
        arp_op::REPLY,
        (a_mac, v_ip),
        ([0xff; 6], v_ip),
    );
    let req = traffic::arp_frame(
        a_mac,
        [0xff; 6],
        arp_op::REQUEST,
        (a_mac, v_ip),
        ([0; 6], host.ip()),
    );
    raw_send(&attacker, &reply, 3)?;
    raw_send(&attacker, &garp, 3)?;
    raw_send(&attacker, &req, 2)?;
    // Then an honest frame that happens to carry the same bytes: the first
    // (and only) match the LAN host may see.
    let sentinel = traffic::udp_frame(a_mac, h_mac, a_ip, host.ip(), 4000, 4001, &claim);
    raw_send(&attacker, &sentinel, 1)?;
    let got = cap.finish(Duration::from_secs(12))?;
    ensure!(
        got.len() == 1 && got[0].data == sentinel,
        "ARP claiming {v_ip} for {} reached the LAN: {got:?}",
        attacker.mac
    );

    pods::wait_grew(agent, &before, "drop_spoof_ip", 3)?;
    pods::wait_grew(agent, &before, "drop_spoof_mac", 5)?;
    pods::wait_grew(agent, &before, "drop_spoof_arp", 8)?;
    pods::wait_grew(agent, &before, "drop_vlan", 4)?;

    // The victim is unaffected: the LAN still maps its address to its MAC,
    // and it talks both ways.
    ensure!(
        neigh_mac(host.ns(), v_ip)?.as_deref() == Some(victim.mac.as_str()),
        "the LAN host's neighbour entry for {v_ip} changed: {:?}",
        neigh_mac(host.ns(), v_ip)?
    );
    ping_ok(&victim.ns, host.ip(), "victim → LAN host")?;
    ping_ok(host.ns(), v_ip, "LAN host → victim")?;
    ping_ok(&attacker.ns, host.ip(), "attacker's honest traffic")?;
    Ok(())
}

/// Acceptance 4: a pod with `ipam: none` runs its own DHCP client (busybox
/// udhcpc); the DISCOVER/OFFER/REQUEST/ACK go through the dataplane and
/// dnsmasq leases the pod's MAC. The dataplane learns the address from the
/// server's ACK, so from then on the pod's traffic works and its source
/// address is checked like any other pod's.
#[test]
fn a_pod_with_its_own_dhcp_client_leases_through_the_dataplane() -> Result<()> {
    lanlink_lab::require_root();
    let mut lab = OneNode::start()?;
    let (lan, host, node, agent) = (&lab.lan, &lab.host, &lab.node, &mut lab.agent);
    let mut conf = lab_netconf(agent);
    conf["ipam"] = serde_json::json!({"type": "none"});
    let vm = add_pod_with(node, agent, "vm", conf)?;
    ensure!(vm.ip.is_none(), "ipam none must not lease: {}", vm.result);
    let other = add_pod(node, agent, "other")?;
    ensure!(
        !lan.leases().iter().any(|l| l.mac == vm.mac),
        "the agent leased for an ipam-none pod"
    );

    let dir = lanlink_lab::cleanup::LabDir::new("udhcpc")?;
    let script = dir.path().join("udhcpc.script");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         case \"$1\" in\n\
         bound|renew)\n\
           ip addr flush dev \"$interface\" scope global\n\
           ip addr add \"$ip/$mask\" dev \"$interface\"\n\
           [ -n \"$router\" ] && ip route replace default via \"${router%% *}\" dev \"$interface\"\n\
           ;;\n\
         deconfig) ip addr flush dev \"$interface\" scope global ;;\n\
         esac\n\
         exit 0\n",
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let before = pods::stats(agent)?;
    let out = traffic::udhcpc(&vm.ns, 5, &script, &[], Duration::from_secs(20))?;
    let log = format!(
        "{}{}\ndnsmasq:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        lan.dhcp_log()
    );
    ensure!(out.status.success(), "udhcpc failed: {log}");
    let lease = lan
        .wait_for_lease(&vm.mac, Duration::from_secs(5))
        .with_context(|| log.clone())?;
    let addr = vm.ns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?;
    ensure!(
        addr.contains(&format!("{}/24", lease.ip)),
        "vm eth0: {addr}"
    );

    // The dataplane learnt the address from the ACK.
    wait_until(Duration::from_secs(2), "EP_BY_IF to hold the lease", || {
        Ok(ep_ipv4s(&pods::map_dump(agent.pin_dir(), "EP_BY_IF")?)
            .contains(&lease.ip)
            .then_some(()))
    })
    .with_context(|| {
        format!(
            "EP_BY_IF does not hold {}: {:?}",
            lease.ip,
            pods::map_dump(agent.pin_dir(), "EP_BY_IF").unwrap_or_default()
        )
    })?;
    let learnt = pods::stats(agent)?["dhcp_learnt"] - before["dhcp_learnt"];
    ensure!(learnt == 1, "{learnt} addresses learnt from one ACK");

    // Traffic works with the address.
    ping_ok(&vm.ns, ROUTER, "vm → router")?;
    ping_ok(&vm.ns, host.ip(), "vm → LAN host")?;
    ping_ok(host.ns(), lease.ip, "LAN host → vm")?;
    ping_ok(&other.ns, lease.ip, "other pod → vm")?;
    traffic::tcp_exchange(lab_net(), host.ns(), &vm.ns, host.ip(), 7010, "vm-to-host")?;

    // And the source check applies to it now.
    let before = pods::stats(agent)?;
    let forged = traffic::udp_frame(
        parse_mac(&vm.mac)?,
        parse_mac(host.mac())?,
        other.ip()?,
        host.ip(),
        4000,
        4001,
        b"forged",
    );
    raw_send(&vm, &forged, 2)?;
    pods::wait_grew(agent, &before, "drop_spoof_ip", 2)?;
    // CHECK accepts the learnt address.
    let mut conf = vm.netconf.clone();
    conf["prevResult"] = vm.result.clone();
    let check = lanlink_lab::CniCall::new("CHECK", &vm.container_id, Some(vm.ns.path()), conf)
        .with_args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=vm")
        .in_netns(node.path());
    lanlink_lab::cni(&lanlink_lab::bin_dir(), &check)?
        .ok()
        .context("CHECK of the ipam-none pod")?;

    // The learnt address survives an agent restart (the agent does not
    // know it; re-adoption must not clear it).
    agent.kill(nix::sys::signal::Signal::SIGKILL)?;
    agent.restart()?;
    let eps = pods::map_dump(agent.pin_dir(), "EP_BY_IF")?;
    ensure!(
        ep_ipv4s(&eps).contains(&lease.ip),
        "the learnt {} is gone after a restart: {eps:?}",
        lease.ip
    );
    ping_ok(&vm.ns, host.ip(), "vm → LAN host after the restart")?;
    Ok(())
}

/// The IPv4 addresses in a BTF-formatted `bpftool -j` dump of `EP_BY_IF`.
fn ep_ipv4s(dump: &[serde_json::Value]) -> Vec<Ipv4Addr> {
    dump.iter()
        .filter_map(|e| {
            let ip = e["formatted"]["value"]["ipv4"].as_array()?;
            let b: Vec<u8> = ip
                .iter()
                .filter_map(|x| x.as_u64().map(|x| x as u8))
                .collect();
            let b: [u8; 4] = b.try_into().ok()?;
            Some(Ipv4Addr::from(b))
        })
        .collect()
}

/// Acceptance 7 and the unicast filter (F9): each pod's MAC is in the
/// uplink's unicast filter (no promiscuous mode), the maps are pinned with
/// BTF (bpftool shows field names), and after DEL of every pod no veth, map
/// entry (endpoints, flood list, learnt flows), unicast filter entry,
/// pinned link or lease is left.
#[test]
fn del_of_every_pod_leaves_nothing_behind() -> Result<()> {
    lanlink_lab::require_root();
    let lab = OneNode::start()?;
    let (lan, node, agent) = (&lab.lan, &lab.node, &lab.agent);
    let pin = agent.pin_dir().to_path_buf();
    let before_filter = pods::uc_filter(node)?;
    let mut conf = lab_netconf(agent);
    conf["ipam"] = serde_json::json!({"type": "none"});
    let all = [
        add_pod(node, agent, "c1")?,
        add_pod(node, agent, "c2")?,
        add_pod_with(node, agent, "c3", conf)?,
    ];

    // Unicast filter, not promiscuous mode: the agent never sets PROMISC.
    // (A veth has no hardware unicast filter, so the kernel itself counts
    // one promiscuity while the list is not empty; a NIC with
    // IFF_UNICAST_FLT does not. It must be back to 0 after DEL.)
    let filter = pods::uc_filter(node)?;
    for p in &all {
        ensure!(
            filter.contains(&p.mac),
            "{} is not in eth0's unicast filter: {filter:?}",
            p.mac
        );
    }
    let link = node.ns().ip(&["link", "show", "dev", "eth0"])?;
    ensure!(!link.contains("PROMISC"), "eth0: {link}");

    // BTF: bpftool shows the fields by name.
    let out = lanlink_lab::cmd::run_ok(
        std::process::Command::new("bpftool")
            .args(["map", "dump", "pinned"])
            .arg(pin.join("EP_BY_MAC")),
        lanlink_lab::cmd::SHORT,
    )?;
    for field in ["\"mac\"", "\"ifindex\"", "\"ipv4\"", "\"flags\""] {
        ensure!(
            out.contains(field),
            "no {field} in the EP_BY_MAC dump:\n{out}"
        );
    }
    ensure!(pods::map_len(&pin, "EP_BY_MAC")? == 3);
    ensure!(pods::map_len(&pin, "EP_BY_IF")? == 3);
    ensure!(
        pods::array_u32(&pin, "FLOOD")?
            .iter()
            .filter(|i| **i != 0)
            .count()
            == 3
    );
    // The node reaches a pod through its stack: to-pod learns the flow.
    ping_ok(node.ns(), all[0].ip()?, "node → c1")?;
    ensure!(pods::map_len(&pin, "FLOWS")? > 0, "no flow learnt");
    ensure!(pods::host_veths(node)?.len() == 3);
    ensure!(pods::pinned_links(&pin)?.len() == 1 + 2 * 3);

    for p in &all {
        del_pod(node, agent, p)?;
    }
    ensure!(
        pods::host_veths(node)?.is_empty(),
        "veths left: {:?}",
        pods::host_veths(node)?
    );
    for map in ["EP_BY_MAC", "EP_BY_IF"] {
        ensure!(
            pods::map_len(&pin, map)? == 0,
            "{map} left: {:?}",
            pods::map_dump(&pin, map)?
        );
    }
    // A DEL queues its flows' purge for the flows owner, which runs it
    // within about a second.
    wait_until(
        Duration::from_secs(3),
        "the flows of the deleted pods purged",
        || Ok((pods::map_len(&pin, "FLOWS")? == 0).then_some(())),
    )
    .with_context(|| format!("FLOWS left: {:?}", pods::map_dump(&pin, "FLOWS")))?;
    ensure!(
        pods::array_u32(&pin, "FLOOD")?.iter().all(|i| *i == 0),
        "FLOOD left: {:?}",
        pods::array_u32(&pin, "FLOOD")?
    );
    let link = node.ns().ip(&["-d", "link", "show", "dev", "eth0"])?;
    ensure!(link.contains("promiscuity 0"), "eth0 after DEL: {link}");
    ensure!(
        pods::uc_filter(node)? == before_filter,
        "filter left: {:?}",
        pods::uc_filter(node)?
    );
    ensure!(
        pods::pinned_links(&pin)? == ["from_lan-eth0"],
        "links left: {:?}",
        pods::pinned_links(&pin)?
    );
    for p in &all {
        lan.wait_for_no_lease(&p.mac, Duration::from_secs(5))?;
    }
    let routes = node.ns().ip(&["-4", "route", "show"])?;
    ensure!(
        !all.iter()
            .filter_map(|p| p.ip)
            .any(|ip| routes.contains(&ip.to_string())),
        "host routes left: {routes}"
    );
    Ok(())
}
