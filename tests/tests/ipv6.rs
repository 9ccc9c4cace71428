//! IPv6 like any LAN device (issue 16), through the agent and the CNI
//! plugin: on LANs whose IPv6 comes from (a) dnsmasq's RAs with DHCPv6, (b)
//! radvd SLAAC only and (c) Kea DHCPv6 behind radvd's M flag, a pod's ADD
//! result carries both families; the pod reaches the LAN's router over
//! IPv6 and the node reaches it (and back); DHCPv6 leases show in the
//! server's lease file under the pod's stable DUID, go at DEL and come back
//! the same for the re-created pod; an agent SIGKILLed and restarted goes
//! on with the lease it persisted (no new Solicit; with Kea's short timers,
//! a Renew from the restarted agent). A LAN without IPv6 routers gives an
//! IPv4-only result; an address in use on the LAN fails the ADD.
//!
//! Addresses: 198.18.0.0/15 and 2001:2::/48 only (every IPv6 address a
//! result carries is checked with `check_lab_addr6`).

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use lanlink_agent::ipv6::dhcp6::Dhcp6Identity;
use lanlink_lab::lan6::{
    Dnsmasq6, Dnsmasq6Mode, Kea6, Kea6Options, POOL6, PREFIX6, ROUTER6, ROUTER6_LL, Radvd,
    RadvdOptions, check_lab_addr6,
};
use lanlink_lab::netns::NetNs;
use lanlink_lab::pods::{self, Pod, add_pod, del_pod};
use lanlink_lab::{Agent, AgentOptions, Lan, LanOptions, Node, ping, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

const NODE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 10);

/// Pings `dst` over IPv6 from `ns`: `count` requests 0.2 s apart within
/// `timeout`; the number of replies, or an error naming the summary when a
/// request went unanswered or a reply came twice.
fn ping6(ns: &NetNs, dst: Ipv6Addr, count: u32, timeout: Duration) -> Result<u32> {
    let stats = lanlink_lab::ping(ns, dst, count, timeout)?;
    ensure!(
        stats.all_received() && stats.received == count,
        "ping {dst} from {}: {}",
        ns.name(),
        stats.summary
    );
    Ok(stats.received)
}

/// Waits (≤ 5 s) for the end of the pod's duplicate address detection.
fn wait_dad(pod: &Pod) -> Result<()> {
    wait_until(
        Duration::from_secs(5),
        "the pod's duplicate address detection to end",
        || {
            let tentative =
                pod.ns
                    .run_ok(&["ip", "-6", "addr", "show", "dev", "eth0", "tentative"])?;
            Ok(tentative.trim().is_empty().then_some(()))
        },
    )
}

/// An IPv6 address with its prefix length.
type Cidr6 = (Ipv6Addr, u8);

/// The result's addresses by family: (IPv4 CIDRs, IPv6 CIDRs).
fn ips(result: &Value) -> Result<(Vec<String>, Vec<Cidr6>)> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ip in result["ips"].as_array().context("result without ips")? {
        let cidr = ip["address"].as_str().context("ip without address")?;
        let (a, len) = cidr.split_once('/').context("address without prefix")?;
        match a.parse::<IpAddr>()? {
            IpAddr::V4(_) => v4.push(cidr.to_string()),
            IpAddr::V6(a) => {
                check_lab_addr6(a)?;
                if let Some(gw) = ip["gateway"].as_str() {
                    check_lab_addr6(gw.parse()?)?;
                }
                v6.push((a, len.parse()?));
            }
        }
    }
    Ok((v4, v6))
}

/// The pod's one IPv6 address from its ADD result.
fn v6_of(pod: &Pod) -> Result<(Ipv6Addr, u8)> {
    let (v4, v6) = ips(&pod.result)?;
    ensure!(v4.len() == 1, "IPv4 addresses in the result: {v4:?}");
    ensure!(v6.len() == 1, "IPv6 addresses in the result: {v6:?}");
    Ok(v6[0])
}

/// What the pod's kernel has: its global IPv6 addresses and IPv6 routes.
fn pod_v6(pod: &Pod) -> Result<(String, String)> {
    Ok((
        pod.ns
            .run_ok(&["ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"])?,
        pod.ns
            .run_ok(&["ip", "-6", "route", "show", "dev", "eth0"])?,
    ))
}

/// The checks every IPv6 pod passes: the result and the pod agree, the
/// default route goes via the router's link-local address; the pod sends
/// from its address at once (optimistic, RFC 4429: a LAN host's answer
/// waits until the pod's duplicate address detection ends, since until
/// then the pod does not answer solicitations for it), its detection ends
/// within 5 s, and then the router answers every ping.
fn check_pod(pod: &Pod, want_len: u8) -> Result<Ipv6Addr> {
    let t0 = Instant::now();
    let out = pod.ns.run_timeout(
        &[
            "ping",
            "-6",
            "-n",
            "-c",
            "1",
            "-w",
            "5",
            &ROUTER6.to_string(),
        ],
        Duration::from_secs(10),
    )?;
    ensure!(
        out.status.success(),
        "the pod's first ping, sent while its address is optimistic, got no answer: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!("first ping answered {:?} after the ADD", t0.elapsed());
    wait_dad(pod)?;
    let (addr, len) = v6_of(pod)?;
    ensure!(len == want_len, "prefix length {len}, want {want_len}");
    let (addrs, routes) = pod_v6(pod)?;
    ensure!(
        addrs.contains(&format!("{addr}/{len}")),
        "the pod lacks {addr}/{len}: {addrs}"
    );
    ensure!(
        routes.contains(&format!("default via {ROUTER6_LL}")),
        "no default route via the router's link-local address: {routes}"
    );
    ensure!(
        routes.contains(&format!("{PREFIX6}/64")) && routes.contains(&format!("src {addr}")),
        "no on-link route for the LAN prefix with the pod's source: {routes}"
    );
    let got = ping6(&pod.ns, ROUTER6, 3, Duration::from_secs(10))?;
    ensure!(got == 3, "pod → LAN router over IPv6: {got}/3 replies");
    Ok(addr)
}

/// The node reaches the pod over IPv6 and the pod the node's own address
/// on the uplink (through the dataplane's neighbour responder).
fn check_host(pod: &Pod, node: &Node, agent: &Agent) -> Result<()> {
    let (addr, _) = v6_of(pod)?;
    let got = ping6(node.ns(), addr, 3, Duration::from_secs(10))?;
    ensure!(got == 3, "node → pod over IPv6: {got}/3 replies");
    let node6 = node_addr6(node)?;
    // The agent answers for the node's address once the node may use it
    // (out of its duplicate address detection, a netlink event later).
    wait_until(
        Duration::from_secs(5),
        "the node's IPv6 address in HOST_ADDRS6",
        || Ok((pods::map_len(agent.pin_dir(), "HOST_ADDRS6")? >= 1).then_some(())),
    )?;
    let got = ping6(&pod.ns, node6, 3, Duration::from_secs(10))?;
    ensure!(got == 3, "pod → node {node6} over IPv6: {got}/3 replies");
    Ok(())
}

/// The node's global IPv6 address on its uplink (its kernel's SLAAC, or
/// none on a LAN without autonomous prefix: then one is added, as an admin
/// would configure a static address), once out of duplicate address
/// detection (≤ 5 s).
fn node_addr6(node: &Node) -> Result<Ipv6Addr> {
    let find = |extra: &[&str]| -> Result<Option<Ipv6Addr>> {
        let mut args = vec![
            "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global",
        ];
        args.extend_from_slice(extra);
        let out = node.ns().run_ok(&args)?;
        Ok(out
            .split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|c| c.split('/').next())
            .and_then(|a| a.parse().ok()))
    };
    if find(&[])?.is_none() {
        node.ns().run_ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:2:0:1::10/64",
            "dev",
            "eth0",
            "nodad",
        ])?;
    }
    let mut usable = None;
    wait_until(
        Duration::from_secs(5),
        "the node's IPv6 address to leave duplicate address detection",
        || {
            usable = find(&["-tentative"])?;
            Ok(usable.map(|_| ()))
        },
    )?;
    let a = usable.context("no usable address")?;
    check_lab_addr6(a)?;
    Ok(a)
}

/// Waits (≤ 10 s) for `pred` on the server's leases.
fn wait_leases(what: &str, pred: impl Fn() -> bool) -> Result<()> {
    wait_until(Duration::from_secs(10), what, || Ok(pred().then_some(())))
}

fn duid(name: &str) -> String {
    Dhcp6Identity::stable("default", name, "eth0").duid_hex()
}

/// (a) dnsmasq: RAs (M flag) and DHCPv6 from the LAN's router; at the end
/// a LAN host holding the pod's address makes the ADD decline the lease.
#[test]
fn dnsmasq_dhcpv6_lease_reported_released_and_resumed() -> Result<()> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions::default())?;
    let d6 = Dnsmasq6::start(&lan, Dnsmasq6Mode::Stateful, 600)?;
    let node = Node::new(&lan, "node", NODE_IP)?;
    let mut agent = Agent::start(&node, AgentOptions::default())?;

    let pod = add_pod(&node, &agent, "web-0")?;
    let addr = check_pod(&pod, 128)?;
    ensure!(
        (POOL6.0..=POOL6.1).contains(&addr),
        "{addr} is outside dnsmasq's pool"
    );
    let want_duid = duid("web-0");
    wait_leases("the DHCPv6 lease in dnsmasq's lease file", || {
        d6.leases()
            .iter()
            .any(|l| l.ip == addr && l.duid.eq_ignore_ascii_case(&want_duid))
    })
    .with_context(|| format!("leases: {:?}", d6.leases()))?;
    // Option 39 carried the pod's name.
    ensure!(
        d6.leases().iter().any(|l| l.ip == addr
            && l.hostname
                .as_deref()
                .is_some_and(|h| h.starts_with("web-0"))),
        "no hostname web-0 for {addr}: {:?}",
        d6.leases()
    );

    // SIGKILL and restart: the persisted lease goes on, no new Solicit.
    let solicits = |log: &str| log.matches("DHCPSOLICIT").count();
    let before = solicits(&d6.log());
    ensure!(before >= 1, "the Solicit of the ADD is not in the log");
    agent.kill(Signal::SIGKILL)?;
    agent.restart()?;
    std::thread::sleep(Duration::from_secs(3));
    let got = ping6(&pod.ns, ROUTER6, 3, Duration::from_secs(10))?;
    ensure!(got == 3, "pod → router after the restart: {got}/3");
    ensure!(
        solicits(&d6.log()) == before,
        "the restarted agent solicited again: {}",
        d6.log()
    );
    let status = agent.http_get(lanlink_api::routes::ENDPOINTS)?;
    ensure!(
        status.contains(&format!("\"ipv6\":\"{addr}/128\"")),
        "the restarted agent does not show {addr}: {status}"
    );

    check_host(&pod, &node, &agent)?;
    // DEL releases; the re-created pod gets the same address.
    del_pod(&node, &agent, &pod)?;
    wait_leases("the lease gone after DEL", || {
        !d6.leases().iter().any(|l| l.ip == addr)
    })?;
    ensure!(
        d6.log().contains("DHCPRELEASE"),
        "no DHCPRELEASE in dnsmasq's log"
    );
    let again = add_pod(&node, &agent, "web-0")?;
    let (addr2, _) = v6_of(&again)?;
    ensure!(addr2 == addr, "re-created pod got {addr2}, not {addr}");
    del_pod(&node, &agent, &again)?;

    // A LAN host takes the address dnsmasq gives this pod: the pod's
    // duplicate address detection fails the ADD, and the lease is declined.
    ensure!(
        !d6.log().contains("DHCPDECLINE"),
        "a decline before the conflict"
    );
    let host = lan.add_host("host", std::net::Ipv4Addr::new(198, 18, 0, 50))?;
    host.ns().run_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{addr}/64"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    let ns = node.pod_netns("web-0-dup")?;
    let netconf = lanlink_lab::cni::lab_netconf(&agent);
    let out = pods::try_add(&node, &ns, "web-0-dup", "web-0", &netconf)?;
    ensure!(
        out.code != 0 && out.stdout.contains("already in use on the LAN"),
        "ADD with {addr} held by a LAN host: {} {}",
        out.stdout,
        out.stderr
    );
    wait_until(
        Duration::from_secs(10),
        "dnsmasq to log the decline",
        || Ok(d6.log().contains("DHCPDECLINE").then_some(())),
    )
    .with_context(|| format!("dnsmasq's log: {}", d6.log()))?;
    ensure!(
        agent.log().contains("DHCPv6 lease declined"),
        "the agent did not say so"
    );
    Ok(())
}

/// The agent killed in an ADD after the DHCPv6 Reply (debug builds'
/// `LANLINK_TEST_CRASH_AT`, at `add-leased`): the restarted agent releases
/// the lease from the ADD's in-flight record; dnsmasq forgets it.
#[test]
fn a_dhcpv6_lease_of_an_add_killed_midway_is_released_at_restart() -> Result<()> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions::default())?;
    let d6 = Dnsmasq6::start(&lan, Dnsmasq6Mode::Stateful, 600)?;
    let node = Node::new(&lan, "node", NODE_IP)?;
    let dir = lanlink_lab::cleanup::LabDir::new("crash6")?;
    let trigger = dir.path().join("crash-at");
    let mut agent = Agent::start(
        &node,
        AgentOptions {
            env: vec![(
                "LANLINK_TEST_CRASH_AT".into(),
                trigger.display().to_string(),
            )],
            ..AgentOptions::default()
        },
    )?;
    std::fs::write(&trigger, "add-leased")?;
    let netconf = lanlink_lab::cni::lab_netconf(&agent);
    let ns = node.pod_netns("crash-0")?;
    let out = pods::try_add(&node, &ns, "crash-0", "crash-0", &netconf)?;
    ensure!(out.code != 0, "the ADD survived its agent: {}", out.stdout);
    wait_until(Duration::from_secs(15), "the agent to die", || {
        Ok((!agent.is_running()).then_some(()))
    })?;
    ensure!(agent.log().contains("crash injected"), "{}", agent.log());
    // Positive control: the server holds the lease of the dead ADD.
    let want_duid = duid("crash-0");
    let held: Vec<Ipv6Addr> = d6
        .leases()
        .iter()
        .filter(|l| l.duid.eq_ignore_ascii_case(&want_duid))
        .map(|l| l.ip)
        .collect();
    ensure!(
        held.len() == 1,
        "dnsmasq's leases of the pod: {:?}",
        d6.leases()
    );
    agent.kill(Signal::SIGKILL)?;
    agent.restart()?;
    wait_leases("the lease of the dead ADD released", || {
        !d6.leases().iter().any(|l| l.ip == held[0])
    })
    .with_context(|| format!("agent log:\n{}", agent.log()))?;
    ensure!(
        agent.log().contains("DHCPv6 lease released"),
        "the restart did not say so: {}",
        agent.log()
    );
    ensure!(pods::host_veths(&node)?.is_empty(), "a veth was left");
    Ok(())
}

/// (b) radvd, SLAAC only: the pod's address is the prefix + the EUI-64 of
/// its stable MAC; the same after re-creation; no default route in
/// secondary mode.
#[test]
fn radvd_slaac_address_reported() -> Result<()> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions::default())?;
    let _radvd = Radvd::start(&lan, RadvdOptions::default())?;
    let node = Node::new(&lan, "node", NODE_IP)?;
    let agent = Agent::start(&node, AgentOptions::default())?;

    let pod = add_pod(&node, &agent, "slaac-0")?;
    let addr = check_pod(&pod, 64)?;
    let mac: Vec<u8> = pod
        .mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()?;
    let mac: [u8; 6] = mac.try_into().map_err(|_| anyhow::anyhow!("bad MAC"))?;
    let ll = lanlink_agent::ipv6::link_local_from_mac(mac);
    let mut want = PREFIX6.octets();
    want[8..].copy_from_slice(&ll.octets()[8..]);
    ensure!(
        addr == Ipv6Addr::from(want),
        "{addr} is not the EUI-64 address"
    );
    // The pod's kernel made no address of its own (accept_ra/autoconf off).
    let (addrs, _) = pod_v6(&pod)?;
    ensure!(
        addrs.matches("inet6").count() == 1,
        "more than the agent's address: {addrs}"
    );
    check_host(&pod, &node, &agent)?;
    // CHECK with the ADD result passes; without the pod's IPv6 address it
    // fails naming it.
    let check = || {
        let mut conf = pod.netconf.clone();
        conf["prevResult"] = pod.result.clone();
        let call =
            lanlink_lab::cni::CniCall::new("CHECK", &pod.container_id, Some(pod.ns.path()), conf)
                .in_netns(node.path());
        lanlink_lab::cni::cni(&lanlink_lab::bin_dir(), &call)
    };
    let ok = check()?;
    ensure!(ok.code == 0, "CHECK failed: {} {}", ok.stdout, ok.stderr);
    pod.ns.run_ok(&[
        "ip",
        "-6",
        "addr",
        "del",
        &format!("{addr}/64"),
        "dev",
        "eth0",
    ])?;
    let bad = check()?;
    ensure!(
        bad.code != 0 && bad.stdout.contains(&addr.to_string()),
        "CHECK without the IPv6 address: {} {}",
        bad.stdout,
        bad.stderr
    );
    del_pod(&node, &agent, &pod)?;
    let again = add_pod(&node, &agent, "slaac-0")?;
    ensure!(v6_of(&again)?.0 == addr, "re-created pod's address differs");
    del_pod(&node, &agent, &again)?;
    Ok(())
}

/// mDNS over IPv6 (ff02::fb) both ways between a pod and a LAN host: the
/// pod is a LAN device for link-local multicast too.
#[test]
fn mdns_over_ipv6_both_ways() -> Result<()> {
    lanlink_lab::require_root();
    let lab_net = lanlink_lab::tool("lab-net")?;
    let bin = lab_net.to_str().context("a UTF-8 path")?;
    let lan = Lan::new(LanOptions::default())?;
    let _radvd = Radvd::start(&lan, RadvdOptions::default())?;
    let host = lan.add_host("host", std::net::Ipv4Addr::new(198, 18, 0, 50))?;
    let node = Node::new(&lan, "node", NODE_IP)?;
    let agent = Agent::start(&node, AgentOptions::default())?;
    let pod = add_pod(&node, &agent, "mdns-0")?;
    v6_of(&pod)?;
    // The LAN host's kernel sends nothing from a tentative link-local address.
    lanlink_lab::lan6::wait_link_local(host.ns(), "eth0")?;
    for (from, to, what) in [
        (host.ns(), &pod.ns, "LAN host → pod"),
        (&pod.ns, host.ns(), "pod → LAN host"),
    ] {
        let recv = lanlink_lab::traffic::Tool::spawn(
            to,
            &lab_net,
            &[
                "udp-recv",
                "--bind",
                "[::]:5353",
                "--group",
                "ff02::fb",
                "--count",
                "3",
                "--timeout-ms",
                "10000",
            ],
        )?;
        let sent = from.run(&[
            bin,
            "udp-send",
            "--to",
            "[ff02::fb]:5353",
            "--ifname",
            "eth0",
            "--text",
            "mdns6",
            "--count",
            "3",
            "--interval-ms",
            "100",
        ])?;
        ensure!(
            sent.status.success(),
            "{what}: udp-send: {}{}",
            String::from_utf8_lossy(&sent.stdout),
            String::from_utf8_lossy(&sent.stderr)
        );
        let got = recv.finish(Duration::from_secs(15))?;
        ensure!(
            got.len() == 3 && got.iter().all(|g| g.data == b"mdns6"),
            "{what}: {} of 3 mDNS datagrams",
            got.len()
        );
    }
    del_pod(&node, &agent, &pod)?;
    Ok(())
}

/// SLAAC beside another CNI (secondary mode, `ipv6Iid: stable-privacy`):
/// the LAN prefix on-link with the pod's address as source, no default
/// route; the RFC 7217 address is not the EUI-64 one and comes back the
/// same for the re-created pod.
#[test]
fn secondary_mode_on_link_only_and_stable_privacy() -> Result<()> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions::default())?;
    let _radvd = Radvd::start(&lan, RadvdOptions::default())?;
    let node = Node::new(&lan, "node", NODE_IP)?;
    let agent = Agent::start(&node, AgentOptions::default())?;
    let mut netconf = lanlink_lab::cni::PodNet::secondary().netconf(&agent);
    netconf["ipv6Iid"] = "stable-privacy".into();
    let pod = pods::add_pod_with(&node, &agent, "side-0", netconf.clone())?;
    let (addr, len) = v6_of(&pod)?;
    ensure!(len == 64, "prefix length {len}");
    let (addrs, routes) = pod_v6(&pod)?;
    ensure!(addrs.contains(&format!("{addr}/64")), "{addrs}");
    ensure!(
        routes.contains(&format!("{PREFIX6}/64")) && routes.contains(&format!("src {addr}")),
        "no on-link route with the pod's source: {routes}"
    );
    ensure!(
        !routes.contains("default"),
        "a default route in secondary mode: {routes}"
    );
    let gateways: Vec<&Value> = pod.result["ips"]
        .as_array()
        .context("ips")?
        .iter()
        .filter(|i| {
            i["gateway"].is_string() && i["address"].as_str().is_some_and(|a| a.contains(':'))
        })
        .collect();
    ensure!(
        gateways.is_empty(),
        "an IPv6 gateway in a secondary result: {gateways:?}"
    );
    let (mac, _) = lanlink_agent::dhcp::stable_identity("default", "side-0", "eth0");
    let eui = lanlink_agent::ipv6::link_local_from_mac(mac);
    ensure!(
        addr.segments()[4..] != eui.segments()[4..],
        "stable-privacy gave the EUI-64 identifier"
    );
    wait_dad(&pod)?;
    let got = ping6(&pod.ns, ROUTER6, 3, Duration::from_secs(10))?;
    ensure!(got == 3, "pod → router on-link: {got}/3");
    pods::del(&node, &agent, &pod.container_id, &pod.ns, &pod.netconf)?;
    let again = pods::add_pod_with(&node, &agent, "side-0", netconf)?;
    ensure!(v6_of(&again)?.0 == addr, "re-created pod's address differs");
    del_pod(&node, &agent, &again)?;
    Ok(())
}

/// A LAN host already holds the address the pod would get (the EUI-64
/// address of its stable MAC): the pod's duplicate address detection
/// fails, the ADD fails with the address named, and nothing is left: no
/// veth, no guard entry for it, no DHCPv4 lease. A LAN host announcing it
/// just after an ADD takes it away from the pod, which keeps IPv4.
#[test]
fn an_address_in_use_on_the_lan_fails_the_add() -> Result<()> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions::default())?;
    let _radvd = Radvd::start(&lan, RadvdOptions::default())?;
    let host = lan.add_host("host", std::net::Ipv4Addr::new(198, 18, 0, 50))?;
    let node = Node::new(&lan, "node", NODE_IP)?;
    let agent = Agent::start(&node, AgentOptions::default())?;
    let (mac, _) = lanlink_agent::dhcp::stable_identity("default", "dup-0", "eth0");
    let mut taken = PREFIX6.octets();
    taken[8..].copy_from_slice(&lanlink_agent::ipv6::link_local_from_mac(mac).octets()[8..]);
    let taken = Ipv6Addr::from(taken);
    check_lab_addr6(taken)?;
    host.ns().run_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{taken}/64"),
        "dev",
        "eth0",
        "nodad",
    ])?;

    let netconf = lanlink_lab::cni::lab_netconf(&agent);
    let ns = node.pod_netns("dup-0")?;

    let out = pods::try_add(&node, &ns, "dup-0", "dup-0", &netconf)?;
    if out.code == 0 {
        let pod_addrs = ns.run_ok(&["ip", "-6", "addr", "show", "dev", "eth0"]);
        bail!(
            "ADD succeeded with {taken} in use: {}\n{}\npod: {pod_addrs:?}\nagent log:\n{}",
            out.stdout,
            out.stderr,
            agent.log()
        );
    }
    ensure!(
        out.stdout.contains(&taken.to_string()) && out.stdout.contains("already in use on the LAN"),
        "the error does not name the conflict: {}",
        out.stdout
    );
    ensure!(pods::host_veths(&node)?.is_empty(), "a veth was left");
    ensure!(
        pods::map_len(agent.pin_dir(), "V6_OWNERS")? == 0,
        "a guard entry was left"
    );
    ensure!(
        agent.log().contains("DHCPv6 lease") || agent.log().contains("ADD failed, undoing"),
        "no undo in the agent log"
    );
    lan.wait_for_no_lease(
        &lanlink_agent::dhcp::Mac(mac).to_string(),
        Duration::from_secs(10),
    )?;

    // Positive control: once the LAN host lets the address go, the same
    // pod gets it.
    host.ns().run_ok(&[
        "ip",
        "-6",
        "addr",
        "del",
        &format!("{taken}/64"),
        "dev",
        "eth0",
    ])?;
    let pod = add_pod(&node, &agent, "dup-0")?;
    ensure!(v6_of(&pod)?.0 == taken, "the freed address was not given");
    ensure!(
        pods::map_len(agent.pin_dir(), "V6_OWNERS")? >= 1,
        "no guard entry"
    );

    // A conflict after the ADD (within the agent's watch): the LAN host
    // takes the address and announces it (an unsolicited advertisement:
    // `ndisc_notify` sends one for every address when the MAC changes).
    // The address leaves the pod and the guard; the attachment goes on
    // IPv4-only.
    host.ns().sysctl("net.ipv6.conf.eth0.ndisc_notify", "1")?;
    host.ns().run_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{taken}/64"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    host.ns()
        .ip(&["link", "set", "eth0", "address", "02:00:00:00:00:51"])?;
    wait_until(
        Duration::from_secs(5),
        "the agent to drop the address",
        || {
            let addrs = pod
                .ns
                .run_ok(&["ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"])?;
            Ok((!addrs.contains(&taken.to_string())).then_some(()))
        },
    )
    .with_context(|| format!("agent log:\n{}", agent.log()))?;
    ensure!(
        agent.log().contains("IPv6 duplicate address detected"),
        "not logged"
    );
    ensure!(
        pods::map_len(agent.pin_dir(), "V6_OWNERS")? == 0,
        "the guard still holds it"
    );
    let eps = agent.http_get(lanlink_api::routes::ENDPOINTS)?;
    ensure!(
        !eps.contains("\"ipv6\""),
        "the endpoint still shows IPv6: {eps}"
    );
    ensure!(
        ping(
            &pod.ns,
            std::net::Ipv4Addr::new(198, 18, 0, 1),
            3,
            Duration::from_secs(10)
        )?
        .all_received(),
        "IPv4 went with it"
    );
    del_pod(&node, &agent, &pod)?;
    Ok(())
}

/// (c) Kea DHCPv6 behind radvd's M flag, with short timers: a reservation
/// on the stable DUID gives the same address after re-creation; after a
/// SIGKILL the restarted agent renews the persisted lease (Kea logs a
/// Renew) and never solicits again.
#[test]
fn kea_dhcpv6_renewed_after_restart() -> Result<()> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions::default())?;
    let reserved: Ipv6Addr = "2001:2:0:1::1b0".parse()?;
    let kea = Kea6::start(
        &lan,
        Kea6Options {
            valid_lifetime: 120,
            preferred_lifetime: 90,
            renew_timer: 8,
            rebind_timer: 60,
            reservations: vec![(duid("db-0"), reserved)],
        },
    )?;
    let node = Node::new(&lan, "node", NODE_IP)?;
    let mut agent = Agent::start(&node, AgentOptions::default())?;
    let pod = add_pod(&node, &agent, "db-0")?;
    let addr = check_pod(&pod, 128)?;
    ensure!(
        addr == reserved,
        "got {addr}, not the reservation {reserved}"
    );
    let want_duid = duid("db-0");
    wait_leases("the lease in Kea's lease file", || {
        kea.leases()
            .iter()
            .any(|l| l.ip == addr && l.duid.eq_ignore_ascii_case(&want_duid))
    })
    .with_context(|| format!("leases: {:?}", kea.leases()))?;

    let count = |log: &str, what: &str| log.matches(what).count();
    let solicits = count(&kea.log(), "SOLICIT");
    agent.kill(Signal::SIGKILL)?;
    agent.restart()?;
    let renews = count(&kea.log(), "RENEW");
    // T1 is 8 s from the ADD: the restarted agent renews within 15 s.
    let t0 = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "a Renew from the restarted agent",
        || Ok((count(&kea.log(), "RENEW") > renews).then_some(())),
    )
    .with_context(|| format!("Kea's log: {}", kea.log()))?;
    eprintln!("renewed {:?} after the restart", t0.elapsed());
    ensure!(
        count(&kea.log(), "SOLICIT") == solicits,
        "the restarted agent solicited again"
    );
    ensure!(
        agent.log().contains("DHCPv6 lease renewed"),
        "the agent did not log the renewal"
    );

    check_host(&pod, &node, &agent)?;
    del_pod(&node, &agent, &pod)?;
    // Kea's memfile appends: the address's last row says released.
    wait_leases("Kea's lease released", || {
        kea.leases()
            .iter()
            .rev()
            .find(|l| l.ip == addr)
            .is_some_and(|l| l.valid_lifetime == 0)
    })
    .with_context(|| format!("leases: {:?}", kea.leases()))?;
    let again = add_pod(&node, &agent, "db-0")?;
    ensure!(v6_of(&again)?.0 == addr, "re-created pod's address differs");
    del_pod(&node, &agent, &again)?;
    Ok(())
}

/// A LAN without IPv6 routers: IPv4 only, no error; `ipv6: "slaac"`
/// asked explicitly is refused with the reason.
#[test]
fn no_router_gives_ipv4_only_and_slaac_is_refused() -> Result<()> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions::default())?;
    let node = Node::new(&lan, "node", NODE_IP)?;
    let agent = Agent::start(&node, AgentOptions::default())?;
    let pod = add_pod(&node, &agent, "v4-0")?;
    let (v4, v6) = ips(&pod.result)?;
    ensure!(v4.len() == 1 && v6.is_empty(), "v4 {v4:?} v6 {v6:?}");
    del_pod(&node, &agent, &pod)?;

    let mut netconf = lanlink_lab::cni::lab_netconf(&agent);
    netconf["ipv6"] = "slaac".into();
    let ns = node.pod_netns("want-slaac")?;
    let out = pods::try_add(&node, &ns, "want-slaac", "want-slaac", &netconf)?;
    if out.code == 0 {
        bail!("ADD succeeded without a router: {}", out.stdout);
    }
    let err = out.stdout;
    ensure!(
        err.contains("no router advertisement with an autonomous /64"),
        "unexpected error: {err}"
    );
    ensure!(pods::host_veths(&node)?.is_empty(), "a veth was left");
    Ok(())
}
