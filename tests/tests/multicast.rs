//! Broadcast and multicast in L2 (issue 3, F8): mDNS and SSDP between the
//! LAN and pods and between pods, Wake-on-LAN from a pod to the LAN, and
//! IPv6 neighbour discovery and router advertisements (SLAAC) through the
//! dataplane.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use lanlink_lab::cleanup::LabDir;
use lanlink_lab::pods::{self, add_pod};
use lanlink_lab::traffic::{self, Got, Tool, parse_mac, wol_payload};
use lanlink_lab::{Agent, AgentOptions, Lan, LanOptions, NetNs, Node, OneNode, wait_until};

/// The lab's traffic tool (a binary of `lanlink-lab`).
static LAB_NET: std::sync::LazyLock<std::path::PathBuf> =
    std::sync::LazyLock::new(|| lanlink_lab::tool("lab-net").expect("the lab-net tool"));

fn lab_net() -> &'static Path {
    &LAB_NET
}

/// A receiver of one datagram on `port`, joined to `group` if any.
fn receiver(ns: &NetNs, port: u16, group: Option<Ipv4Addr>, count: u32) -> Result<Tool> {
    let bind = format!("0.0.0.0:{port}");
    let count = count.to_string();
    let mut args = vec![
        "udp-recv",
        "--bind",
        &bind,
        "--count",
        &count,
        "--timeout-ms",
        "4000",
    ];
    let group = group.map(|g| g.to_string());
    if let Some(g) = &group {
        args.extend(["--group", g]);
    }
    Tool::spawn(ns, lab_net(), &args)
}

fn send(ns: &NetNs, to: Ipv4Addr, port: u16, payload: &[u8]) -> Result<()> {
    traffic::run(
        ns,
        lab_net(),
        &[
            "udp-send",
            "--to",
            &format!("{to}:{port}"),
            "--hex",
            &traffic::hex(payload),
        ],
        Duration::from_secs(5),
    )
    .map(drop)
}

/// Exactly one datagram `payload` from `from_ip` among `got`.
fn ensure_got(got: &[Got], from_ip: Ipv4Addr, payload: &[u8], what: &str) -> Result<()> {
    let n = got
        .iter()
        .filter(|g| g.data == payload && g.from.split(':').next() == Some(&from_ip.to_string()))
        .count();
    ensure!(
        n == 1,
        "{what}: expected the datagram once from {from_ip}, got {n} times; all: {got:?}"
    );
    Ok(())
}

/// Acceptance 2: a datagram to 224.0.0.251:5353 (mDNS) or
/// 239.255.255.250:1900 (SSDP) from a LAN host reaches both pods of the
/// node; one from a pod reaches the LAN host and the other pod.
#[test]
fn mdns_and_ssdp_reach_the_lan_and_every_pod() -> Result<()> {
    lanlink_lab::require_root();
    let lab = OneNode::start()?;
    let (host, node, agent) = (&lab.host, &lab.node, &lab.agent);
    // A pod that comes and goes first leaves a free slot at the head of the
    // fan-out list, which every flood below must skip.
    let gone = add_pod(node, agent, "gone")?;
    let p1 = add_pod(node, agent, "p1")?;
    let p2 = add_pod(node, agent, "p2")?;
    pods::del_pod(node, agent, &gone)?;
    let flood = pods::array_u32(agent.pin_dir(), "FLOOD")?;
    ensure!(
        flood[0] == u32::MAX && flood[1..3].iter().all(|i| *i != 0 && *i != u32::MAX),
        "FLOOD: {:?}",
        &flood[..4]
    );
    let before = pods::stats(agent)?;

    for (proto, group, port) in [
        ("mdns", Ipv4Addr::new(224, 0, 0, 251), 5353),
        ("ssdp", Ipv4Addr::new(239, 255, 255, 250), 1900),
    ] {
        // LAN host → both pods.
        let r1 = receiver(&p1.ns, port, Some(group), 1)?;
        let r2 = receiver(&p2.ns, port, Some(group), 1)?;
        let msg = format!("{proto}-from-lan-host").into_bytes();
        send(host.ns(), group, port, &msg)?;
        ensure_got(
            &r1.finish(Duration::from_secs(8))?,
            host.ip(),
            &msg,
            &format!("{proto}: LAN host → p1"),
        )?;
        ensure_got(
            &r2.finish(Duration::from_secs(8))?,
            host.ip(),
            &msg,
            &format!("{proto}: LAN host → p2"),
        )?;

        // Pod → LAN host and the other pod.
        let rh = receiver(host.ns(), port, Some(group), 1)?;
        let r2 = receiver(&p2.ns, port, Some(group), 1)?;
        let msg = format!("{proto}-from-p1").into_bytes();
        send(&p1.ns, group, port, &msg)?;
        ensure_got(
            &rh.finish(Duration::from_secs(8))?,
            p1.ip()?,
            &msg,
            &format!("{proto}: p1 → LAN host"),
        )?;
        ensure_got(
            &r2.finish(Duration::from_secs(8))?,
            p1.ip()?,
            &msg,
            &format!("{proto}: p1 → p2"),
        )?;
    }
    // Fanned out by the dataplane: 2 from the LAN and 2 from a pod, at least.
    let after = pods::stats(agent)?;
    pods::ensure_grew(&before, &after, "flood", 4)?;
    ensure!(
        after["drop_redirect_failed"] == 0,
        "clones failed: {after:?}"
    );
    Ok(())
}

/// Acceptance 3: Wake-on-LAN magic packets a pod sends to 255.255.255.255:9
/// and to the subnet broadcast 198.18.0.255:9 arrive at a LAN host intact
/// (6 × 0xff, then the target MAC 16 times).
#[test]
fn wake_on_lan_from_a_pod_reaches_the_lan() -> Result<()> {
    lanlink_lab::require_root();
    let lab = OneNode::start()?;
    let (host, node, agent) = (&lab.host, &lab.node, &lab.agent);
    let pod = add_pod(node, agent, "waker")?;
    let sleeper = parse_mac(host.mac())?;
    let magic = wol_payload(sleeper);

    for dst in [Ipv4Addr::BROADCAST, Ipv4Addr::new(198, 18, 0, 255)] {
        let rx = receiver(host.ns(), 9, None, 1)?;
        send(&pod.ns, dst, 9, &magic)?;
        let got = rx.finish(Duration::from_secs(8))?;
        ensure_got(&got, pod.ip()?, &magic, &format!("WoL to {dst}"))?;
        let p = &got[0].data;
        ensure!(
            p.len() == 102 && p[..6] == [0xff; 6],
            "not a magic packet: {p:?}"
        );
        ensure!(
            p[6..].chunks(6).all(|c| c == sleeper),
            "wrong target MAC in {p:?}"
        );
    }
    Ok(())
}

/// Acceptance 8: with a router advertising 2001:2:0:1::/64 on the LAN
/// (radvd; IPv6 only from the benchmarking range 2001:2::/48, RFC 5180), a
/// pod autoconfigures an address in it, and neighbour discovery works both
/// ways (the pod pings the router's and a LAN host's addresses, the LAN
/// host pings the pod's).
#[test]
fn ipv6_router_advertisements_give_pods_a_slaac_address() -> Result<()> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions::default())?;
    let host = lan.add_host("host", Ipv4Addr::new(198, 18, 0, 50))?;
    lan.ns().sysctl("net.ipv6.conf.all.forwarding", "1")?;
    lan.ns().ip(&[
        "-6",
        "addr",
        "add",
        "2001:2:0:1::1/64",
        "dev",
        "br0",
        "nodad",
    ])?;
    host.ns().ip(&[
        "-6",
        "addr",
        "add",
        "2001:2:0:1::50/64",
        "dev",
        "eth0",
        "nodad",
    ])?;
    let dir = LabDir::new("radvd")?;
    let conf = dir.path().join("radvd.conf");
    std::fs::write(
        &conf,
        "interface br0 {\n  AdvSendAdvert on;\n  MinRtrAdvInterval 3;\n  MaxRtrAdvInterval 4;\n  \
         prefix 2001:2:0:1::/64 { AdvOnLink on; AdvAutonomous on; };\n};\n",
    )?;
    let log = dir.path().join("radvd.log");
    let radvd_args = [
        "radvd",
        "--nodaemon",
        "--config",
        &conf.to_string_lossy(),
        "--pidfile",
        &dir.path().join("radvd.pid").to_string_lossy(),
        "--logmethod",
        "stderr",
    ]
    .map(|s| s.to_string());
    let argv: Vec<&str> = radvd_args.iter().map(String::as_str).collect();
    let _radvd = lan.ns().spawn_logged(&argv, &log)?;

    let node = Node::new(&lan, "node", Ipv4Addr::new(198, 18, 0, 10))?;
    let agent = Agent::start(&node, AgentOptions::default())?;
    let pod = add_pod(&node, &agent, "v6")?;
    let slaac = || -> Result<Option<String>> {
        let out = pod
            .ns
            .ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"])?;
        Ok(out
            .split_whitespace()
            .find(|w| w.starts_with("2001:2:0:1:"))
            .filter(|_| !out.contains("tentative"))
            .map(|w| w.split('/').next().unwrap_or_default().to_string()))
    };
    let addr = wait_until(Duration::from_secs(15), "a SLAAC address on the pod", slaac)
        .with_context(|| {
            format!(
                "addresses: {}; radvd log:\n{}",
                pod.ns
                    .ip(&["-6", "addr", "show", "dev", "eth0"])
                    .unwrap_or_default(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?;

    for (from, to, what) in [
        (&pod.ns, "2001:2:0:1::1", "pod → router"),
        (&pod.ns, "2001:2:0:1::50", "pod → LAN host"),
        (host.ns(), addr.as_str(), "LAN host → pod"),
    ] {
        let out = from.run_timeout(
            &[
                "ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-w", "5", to,
            ],
            Duration::from_secs(10),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let stats = lanlink_lab::ping::parse_ping(&text).context("ping -6 statistics")?;
        ensure!(stats.all_received(), "{what} ({to}): {}", stats.summary);
    }
    Ok(())
}
