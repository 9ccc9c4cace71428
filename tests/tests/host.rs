//! Host integration (issue 4), the node's side: the node reaches its pods
//! (kubelet probes, F4) and the pods their node; conntrack-bypass flows are
//! bounded, counted and expire; a secondary interface (Multus `net1`) puts
//! broadcast and mDNS on the LAN with its own address; and the netfilter
//! rules the agent adds are idempotent and gone after `lanlinkd uninstall`.
//! Every node has the FORWARD policy DROP and strict reverse-path filtering.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use lanlink_lab::capture::Capture;
use lanlink_lab::netfilter::{self, Endpoint, KubeProxy, Service, TrafficPolicy};
use lanlink_lab::nssock::{self, TcpServer, tcp_connect};
use lanlink_lab::pods::{
    self, Pod, SERVICE_CIDR, attach, counter, forward_policy_drops, hostile, stats,
};
use lanlink_lab::{Agent, Lan, LanOptions, Node, PodNet, ping};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);

/// A LAN with node `node1` at [`NODE_IP`], its FORWARD chain hostile.
fn hostile_lan() -> Result<(Lan, Node)> {
    let lan = Lan::new(LanOptions::default())?;
    let node = Node::new(&lan, "node1", NODE_IP)?;
    hostile(&node)?;
    Ok((lan, node))
}

/// Kubelet-probe path: the node pings and opens TCP to each pod (host →
/// `<pod>/32 dev <veth>`); each pod reaches its node's address (answered by
/// the ARP responder from the host-routes map, replies through the node). The
/// flows this learns are counted, in a bounded LRU map, and expire.
#[test]
fn node_reaches_its_pods_and_flows_expire() -> Result<()> {
    lanlink_lab::require_root();
    let (_lan, node) = hostile_lan()?;
    let agent = Agent::start_with_args(&node, &["--flow-timeout", "2"])?;
    // An address the node gets after the agent started: the next ADD puts
    // it in the host-routes map and its subnet in the masquerade.
    let late = Ipv4Addr::new(198, 18, 4, 10);
    node.ns()
        .ip(&["addr", "add", &format!("{late}/24"), "dev", "eth0"])?;
    let pods = [
        Pod::primary(&node, &agent, "probe-a", &[SERVICE_CIDR])?,
        Pod::primary(&node, &agent, "probe-b", &[SERVICE_CIDR])?,
    ];
    let servers = pods
        .iter()
        .map(|p| TcpServer::start(&p.ns, 8080, "healthy\n", Duration::from_secs(60)))
        .collect::<Result<Vec<_>>>()?;

    // The map the ARP responder reads: the node's address and the netconf's
    // service CIDR.
    let routes = pods::host_routes(agent.pin_dir())?;
    for want in [
        format!("{NODE_IP}/32"),
        format!("{late}/32"),
        SERVICE_CIDR.into(),
    ] {
        ensure!(
            routes.contains(&want),
            "HOST_ROUTES holds {routes:?}, not {want}"
        );
    }
    let nat = node
        .ns()
        .run_ok(&["iptables", "-t", "nat", "-S", "LANLINK-POSTROUTING"])?;
    ensure!(
        nat.contains("-s 198.18.0.0/24 -o eth0") && nat.contains("-s 198.18.4.0/24 -o eth0"),
        "the masquerade does not follow the uplink's subnets:\n{nat}"
    );

    let before = stats(&agent)?;
    for (pod, server) in pods.iter().zip(&servers) {
        // First the pod reaches its own node's address: it ARPs for it (on
        // link), the ARP responder answers from HOST_ROUTES, and the echo
        // goes up the node's stack (on L2 it would hairpin out of eth0).
        let ip = pod.ip()?;
        let p = ping(&pod.ns, NODE_IP, 3, Duration::from_secs(5))?;
        ensure!(p.all_received(), "{ip} → node: {}", p.summary);
        let p = ping(node.ns(), ip, 3, Duration::from_secs(5))?;
        ensure!(p.all_received(), "node → {ip}: {}", p.summary);
        let c = tcp_connect(
            node.ns(),
            SocketAddrV4::new(ip, 8080),
            Duration::from_secs(5),
        )?
        .with_context(|| format!("node → {ip}:8080"))?;
        ensure!(c.received == "healthy\n", "probe got {:?}", c.received);
        ensure!(
            server.peers() == [SocketAddrV4::new(NODE_IP, c.local.port())],
            "the pod saw {:?}, the node connected from {}",
            server.peers(),
            c.local
        );
    }
    let after = stats(&agent)?;
    for verdict in ["flow_learnt", "flow_to_host", "arp_reply"] {
        ensure!(
            counter(&after, verdict) > counter(&before, verdict),
            "{verdict} did not grow: {before:?} → {after:?}"
        );
    }
    ensure!(forward_policy_drops(&node)? == 0, "FORWARD dropped packets");

    // Bounded: an LRU hash map of `lanlink_common::MAX_FLOWS` entries.
    let info = pods::map_info(agent.pin_dir(), "FLOWS")?;
    ensure!(info["type"] == "lru_hash", "FLOWS is {}", info["type"]);
    ensure!(
        info["max_entries"] == 65_536,
        "FLOWS holds {}",
        info["max_entries"]
    );
    // Expire: with --flow-timeout 2, idle flows are gone within a few
    // seconds (the pass runs every second).
    let learnt = pods::map_dump(agent.pin_dir(), "FLOWS")?.len();
    ensure!(learnt >= 2, "only {learnt} flows learnt");
    let t0 = Instant::now();
    loop {
        let left = pods::map_dump(agent.pin_dir(), "FLOWS")?.len();
        if left == 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(8) {
            bail!("{left} of {learnt} flows still there after 8 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{learnt} flows expired after {:?} (timeout 2 s)",
        t0.elapsed()
    );
    // An expired flow is relearnt by the next frame from the node.
    let p = ping(node.ns(), pods[0].ip()?, 1, Duration::from_secs(3))?;
    ensure!(p.all_received(), "node → pod after expiry: {}", p.summary);
    ensure!(!pods::map_dump(agent.pin_dir(), "FLOWS")?.is_empty());
    Ok(())
}

/// Multus `net1`: a pod whose primary interface is someone else's (a plain
/// veth to the node here) gets lanlink as `net1` in secondary mode; limited
/// and subnet broadcast and mDNS leave through `net1` onto the LAN, with
/// `net1`'s address and MAC, and nothing of it leaves through `eth0`.
#[test]
fn secondary_interface_broadcasts_on_the_lan() -> Result<()> {
    lanlink_lab::require_root();
    let (lan, node) = hostile_lan()?;
    let agent = Agent::start_with_args(&node, &[])?;
    let host = lan.add_host("lanhost", CLIENT_IP)?;

    // The primary network: a veth to the node, default route through it.
    let pod = node.pod_netns("multus")?;
    let primary = "prim0".to_string();
    node.ns().ip(&[
        "link",
        "add",
        &primary,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name(),
    ])?;
    node.ns()
        .ip(&["addr", "add", "198.19.255.1/30", "dev", &primary])?;
    node.ns().ip(&["link", "set", &primary, "up"])?;
    pod.ip(&["addr", "add", "198.19.255.2/30", "dev", "eth0"])?;
    pod.ip(&["link", "set", "eth0", "up"])?;
    pod.ip(&["route", "add", "default", "via", "198.19.255.1"])?;

    let net1 = attach(
        &node,
        &agent,
        &pod,
        "multus",
        "net1",
        PodNet::secondary().host_routes(&[]).netconf(&agent),
    )?;
    let net1_ip = net1.ip.context("net1 got no address")?;
    ensure!(pod.mac("net1")? == net1.mac);
    let routes = pod.ip(&["-4", "route", "show"])?;
    ensure!(
        routes.lines().filter(|l| l.starts_with("default")).count() == 1
            && routes.contains("default via 198.19.255.1 dev eth0"),
        "the primary default route must stay the only one:\n{routes}"
    );
    for dst in ["224.0.0.0/4 ", "255.255.255.255 "] {
        ensure!(
            routes.lines().any(|l| l.starts_with(dst)
                && l.contains(" dev net1 ")
                && l.ends_with(&format!("src {} ", net1_ip))),
            "no route to {dst}via net1 with src {} in:\n{routes}",
            net1_ip
        );
    }

    let filter = "udp and (dst port 9 or dst port 5353)";
    let on_lan = Capture::start(host.ns(), "eth0", "in", filter, 20, Duration::from_secs(30))?;
    let on_primary = Capture::start(
        node.ns(),
        &primary,
        "in",
        filter,
        20,
        Duration::from_secs(30),
    )?;
    let before = stats(&agent)?;
    let wol = {
        let mut p = vec![0xff; 6];
        for _ in 0..16 {
            p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x42]);
        }
        p
    };
    let sends = [
        (SocketAddrV4::new(Ipv4Addr::BROADCAST, 9), wol.clone()),
        (SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 255), 9), wol),
        (
            SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 251), 5353),
            nssock::mdns_query(),
        ),
    ];
    for (to, payload) in &sends {
        nssock::udp_send(&pod, *to, payload)?;
    }
    ensure!(
        on_lan.wait_for(sends.len(), Duration::from_secs(5), |_| true),
        "the LAN host saw {:?}",
        on_lan.packets()
    );
    std::thread::sleep(Duration::from_millis(300));
    let got = on_lan.stop()?;
    for (to, _) in &sends {
        let p = got
            .iter()
            .find(|p| p.dst_ip.as_deref() == Some(&to.ip().to_string()))
            .with_context(|| format!("nothing to {to} reached the LAN: {got:#?}"))?;
        ensure!(
            p.src_ip.as_deref() == Some(&net1_ip.to_string()) && p.src_mac == net1.mac,
            "{to} left with {:?}/{}, expected net1's {}/{}: {}",
            p.src_ip,
            p.src_mac,
            net1_ip,
            net1.mac,
            p.line
        );
    }
    let leaked = on_primary.stop()?;
    ensure!(leaked.is_empty(), "sent through eth0 too: {leaked:#?}");
    let after = stats(&agent)?;
    ensure!(
        counter(&after, "flood") >= counter(&before, "flood") + sends.len() as u64,
        "flood: {before:?} → {after:?}"
    );
    Ok(())
}

/// The rules the agent adds: present once after start, unchanged by a
/// restart (idempotent), kept while the agent is stopped (pods keep
/// working), and all gone after `lanlinkd uninstall`, which leaves the rules
/// of others (kube-proxy, the FORWARD policy) as they were.
#[test]
fn uninstall_removes_every_rule_the_agent_added() -> Result<()> {
    lanlink_lab::require_root();
    let (_lan, node) = hostile_lan()?;
    KubeProxy {
        cluster_cidr: "198.18.0.0/24".into(),
        services: vec![Service {
            name: "default/web:http".into(),
            cluster_ip: Ipv4Addr::new(198, 19, 0, 10),
            port: 80,
            load_balancer_ip: None,
            node_port: Some(30080),
            external_policy: TrafficPolicy::Cluster,
            endpoints: vec![Endpoint {
                ip: Ipv4Addr::new(198, 18, 0, 150),
                port: 8080,
                local: true,
            }],
        }],
    }
    .apply(node.ns())?;
    let pristine = netfilter::save(node.ns())?;

    let mut agent = Agent::start_with_args(&node, &[])?;
    let installed = netfilter::save(node.ns())?;
    for want in [
        "-A FORWARD -m comment --comment \"lanlink: host-routed pod traffic\" -j LANLINK-FORWARD",
        "-A POSTROUTING -m comment --comment \"lanlink: host-routed pod traffic\" -j LANLINK-POSTROUTING",
        "-A LANLINK-FORWARD -i ll+ -o eth0",
        "-A LANLINK-FORWARD -i eth0 -o ll+",
        "-A LANLINK-FORWARD -i ll+ -o ll+",
        "-A LANLINK-POSTROUTING -s 198.18.0.0/24 -o eth0",
    ] {
        ensure!(
            installed.lines().filter(|l| l.starts_with(want)).count() == 1,
            "expected one `{want}` in:\n{installed}"
        );
    }
    // The jumps come first, so a DROP later in FORWARD cannot shadow them.
    let forward = node.ns().run_ok(&["iptables", "-S", "FORWARD"])?;
    ensure!(
        forward
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("LANLINK-FORWARD")),
        "{forward}"
    );

    agent.restart()?;
    ensure!(
        netfilter::save(node.ns())? == installed,
        "a restart changed the rules"
    );
    let uninstall_argv = [
        lanlink_lab::bin_dir()
            .join("lanlinkd")
            .display()
            .to_string(),
        "uninstall".into(),
        "--socket".into(),
        agent.socket().display().to_string(),
        "--pin-dir".into(),
        agent.pin_dir().display().to_string(),
    ];
    let uninstall_argv: Vec<&str> = uninstall_argv.iter().map(String::as_str).collect();
    let refused = node.ns().run(&uninstall_argv)?;
    ensure!(
        !refused.status.success() && netfilter::save(node.ns())? == installed,
        "uninstall must refuse while the agent runs: {refused:?}"
    );
    agent.kill(nix::sys::signal::Signal::SIGTERM)?;
    ensure!(
        netfilter::save(node.ns())? == installed,
        "stopping the agent changed the rules (pods must keep forwarding)"
    );

    let uninstall = |expect_removed: bool| -> Result<String> {
        let out = node.ns().run_ok(&uninstall_argv)?;
        ensure!(
            out.contains("removed") == expect_removed,
            "uninstall printed: {out}"
        );
        Ok(out)
    };
    let out = uninstall(true)?;
    eprintln!("uninstall:\n{out}");
    let left = netfilter::save(node.ns())?;
    if left != pristine {
        bail!("after uninstall:\n{left}\n\nbefore the agent:\n{pristine}");
    }
    ensure!(
        !Path::new(agent.pin_dir()).exists(),
        "{} is still pinned",
        agent.pin_dir().display()
    );
    let tc = node
        .ns()
        .run_ok(&["bpftool", "net", "show", "dev", "eth0"])?;
    ensure!(!tc.contains("from_lan"), "still attached to eth0: {tc}");
    // Idempotent: a second run finds nothing and succeeds.
    uninstall(false)?;
    ensure!(netfilter::save(node.ns())? == pristine);
    Ok(())
}
