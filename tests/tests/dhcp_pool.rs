//! DHCP and the LAN's pool (issue 5): an exhausted pool fails an ADD within
//! its deadline with a clear error and leaves nothing behind; 50 concurrent
//! ADDs get 50 distinct leases, served concurrently; a re-created pod gets
//! its MAC, client id and address back; an address that already answers ARP
//! is declined. All against dnsmasq in the lab LAN.

mod dhcp_common;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use dhcp_common::*;
use lanlink_lab::pods::try_add;
use lanlink_lab::{Agent, AgentOptions, Lan, LanOptions, Node, OneNode, ROUTER, ping, wait_until};

/// Non-multicast `self permanent` entries of the node's `eth0` (the pod
/// MACs in the uplink's unicast filter).
fn uc_filter(node: &Node) -> Result<HashSet<String>> {
    Ok(lanlink_lab::pods::uc_filter(node)?.into_iter().collect())
}

fn host_veths(node: &Node) -> Result<usize> {
    let links = node.ns().ip(&["-o", "link", "show", "type", "veth"])?;
    Ok(links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .filter(|n| n.trim().starts_with("ll"))
        .count())
}

fn map_len(agent: &Agent, map: &str) -> Result<usize> {
    lanlink_lab::pods::map_len(agent.pin_dir(), map)
}

#[test]
fn an_exhausted_pool_fails_the_add_in_time_and_leaves_nothing() -> Result<()> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions {
        pool: (
            Ipv4Addr::new(198, 18, 0, 100),
            Ipv4Addr::new(198, 18, 0, 104),
        ),
        ..LanOptions::default()
    })?;
    let node = Node::new(&lan, "node1", Ipv4Addr::new(198, 18, 0, 10))?;
    let agent = Agent::start(&node, AgentOptions::default())?;
    let nc = netconf(&agent, 3000);
    let mut pods = (0..5)
        .map(|i| add(&node, &agent, &format!("pool-{i}"), &nc))
        .collect::<Result<Vec<_>>>()?;
    let ips: HashSet<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    ensure!(ips.len() == 5, "{ips:?}");

    // The sixth: no address left, dnsmasq stays silent.
    let ns6 = node.pod_netns("pool-5")?;
    let cid6 = format!("{}-pool-5", ns6.name());
    let start = Instant::now();
    let out = try_add(&node, &ns6, &cid6, "pool-5", &nc)?;
    let took = start.elapsed();
    ensure!(!out.success(), "the sixth ADD succeeded: {}", out.stdout);
    ensure!(
        took >= Duration::from_millis(2500) && took <= Duration::from_millis(4500),
        "the sixth ADD failed after {took:?}, its deadline was 3 s"
    );
    let err = out.json()?;
    let text = format!("{} {}", err["msg"], err["details"]);
    ensure!(err["code"] == 100, "{err}");
    for needle in [
        "eth0",
        "no dhcp server answered",
        "dhcpdiscover",
        "pool is exhausted",
    ] {
        ensure!(text.contains(needle), "the error lacks {needle:?}: {text}");
    }
    eprintln!("sixth ADD failed after {took:?}: {text}");
    ensure!(
        lan.dhcp_log().contains("no address available"),
        "{}",
        lan.dhcp_log()
    );

    // Nothing left behind by the failed ADD.
    ensure!(
        host_veths(&node)? == 5,
        "host veths: {}",
        host_veths(&node)?
    );
    ensure!(map_len(&agent, "EP_BY_MAC")? == 5 && map_len(&agent, "EP_BY_IF")? == 5);
    let endpoints = api_get(&agent, "/v1/endpoints")?;
    ensure!(endpoints.as_array().map_or(0, Vec::len) == 5, "{endpoints}");
    let macs: HashSet<String> = pods.iter().map(|p| p.mac.clone()).collect();
    ensure!(
        uc_filter(&node)? == macs,
        "unicast filter: {:?}",
        uc_filter(&node)?
    );
    ensure!(
        ns6.ip(&["link", "show", "eth0"]).is_err(),
        "eth0 left in the sixth pod"
    );
    ensure!(num(&events(&agent)?, "acquire_failures") == 1);

    // The first five keep working.
    for p in &pods {
        let r = ping(&p.ns, ROUTER, 2, Duration::from_secs(5))?;
        ensure!(r.all_received(), "{} → router: {}", p.name, r.summary);
    }

    // One leaves: the sixth gets its address.
    let gone = pods.remove(0);
    del(&node, &agent, &gone)?;
    lan.wait_for_no_lease(&gone.mac, Duration::from_secs(5))?;
    let sixth = add_in(&node, &agent, ns6, "pool-5", &nc)?;
    ensure!(
        sixth.ip == gone.ip,
        "the sixth got {}, {} was free",
        sixth.ip,
        gone.ip
    );
    Ok(())
}

#[test]
fn fifty_concurrent_adds_get_distinct_leases() -> Result<()> {
    lanlink_lab::require_root();
    const PODS: usize = 50;
    let lab = OneNode::start()?;
    let (lan, node, agent) = (&lab.lan, &lab.node, &lab.agent);
    let nc = netconf(agent, 20_000);
    let names: Vec<String> = (0..PODS).map(|i| format!("burst-{i}")).collect();
    let netns = names
        .iter()
        .map(|n| node.pod_netns(n))
        .collect::<Result<Vec<_>>>()?;

    // One thread per pod, each running the CNI binary, all at once.
    let start = Instant::now();
    let results: Vec<Result<Pod>> = std::thread::scope(|s| {
        let handles: Vec<_> = netns
            .into_iter()
            .zip(&names)
            .map(|(ns, name)| {
                let (node, agent, nc) = (&node, &agent, &nc);
                s.spawn(move || add_in(node, agent, ns, name, nc))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect()
    });
    let took = start.elapsed();
    let pods = results.into_iter().collect::<Result<Vec<_>>>()?;
    eprintln!("{PODS} concurrent ADDs took {took:?}");

    // Distinct leases, each in dnsmasq's lease file once, for the pod's MAC.
    let ips: HashSet<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    let macs: HashSet<&str> = pods.iter().map(|p| p.mac.as_str()).collect();
    ensure!(
        ips.len() == PODS && macs.len() == PODS,
        "{} ips, {} macs",
        ips.len(),
        macs.len()
    );
    let leases = wait_until(
        Duration::from_secs(5),
        "50 leases in dnsmasq's lease file",
        || {
            let l = lan.leases();
            Ok((l.len() >= PODS).then_some(l))
        },
    )?;
    ensure!(
        leases.len() == PODS,
        "{} leases in dnsmasq: {leases:?}",
        leases.len()
    );
    let by_mac: HashMap<&str, Ipv4Addr> = leases.iter().map(|l| (l.mac.as_str(), l.ip)).collect();
    ensure!(by_mac.len() == PODS, "a MAC holds two leases: {leases:?}");
    for p in &pods {
        ensure!(
            by_mac.get(p.mac.as_str()) == Some(&p.ip),
            "{} has {}, dnsmasq says {:?}",
            p.name,
            p.ip,
            by_mac.get(p.mac.as_str())
        );
    }
    ensure!(num(&events(agent)?, "acquired") == PODS as u64);

    // Served concurrently: in dnsmasq's log, many pods were between their
    // DISCOVER and their ACK at the same time.
    let log = lan.dhcp_log();
    let (mut open, mut most) = (HashSet::new(), 0);
    for line in log.lines() {
        if let Some(mac) = macs.iter().find(|m| line.contains(*m)) {
            if line.contains("DHCPDISCOVER(") {
                open.insert(*mac);
            } else if line.contains("DHCPACK(") {
                open.remove(mac);
            }
            most = most.max(open.len());
        }
    }
    eprintln!("at most {most} pods were between DISCOVER and ACK at once");
    ensure!(
        most >= 4,
        "ADDs look serialised: at most {most} DHCP exchanges overlapped"
    );

    // And all go away concurrently, releasing every lease.
    let start = Instant::now();
    std::thread::scope(|s| {
        for p in &pods {
            let (node, agent) = (&node, &agent);
            s.spawn(move || del(node, agent, p));
        }
    });
    eprintln!("{PODS} concurrent DELs took {:?}", start.elapsed());
    wait_until(Duration::from_secs(10), "an empty lease file", || {
        Ok(lan.leases().is_empty().then_some(()))
    })
    .with_context(|| format!("leases left: {:?}", lan.leases()))?;
    ensure!(num(&events(agent)?, "released") == PODS as u64);
    ensure!(host_veths(node)? == 0);
    Ok(())
}

#[test]
fn a_recreated_pod_gets_its_mac_client_id_and_address_back() -> Result<()> {
    lanlink_lab::require_root();
    let lab = OneNode::start()?;
    let (lan, node, agent) = (&lab.lan, &lab.node, &lab.agent);
    let nc = netconf(agent, 5000);
    let first = add(node, agent, "db-0", &nc)?;
    let lease1 = lan.wait_for_lease(&first.mac, Duration::from_secs(5))?;
    let neighbour = add(node, agent, "db-1", &nc)?;
    ensure!(neighbour.mac != first.mac && neighbour.ip != first.ip);

    del(node, agent, &first)?;
    lan.wait_for_no_lease(&first.mac, Duration::from_secs(5))?;
    // Same namespace/name, new sandbox and container id.
    let again = add(node, agent, "db-0", &nc)?;
    ensure!(again.container_id != first.container_id);
    let lease2 = lan.wait_for_lease(&again.mac, Duration::from_secs(5))?;
    ensure!(
        again.mac == first.mac,
        "MAC {} then {}",
        first.mac,
        again.mac
    );
    ensure!(again.ns.mac("eth0")? == first.mac);
    ensure!(
        lease2.client_id == lease1.client_id && lease2.client_id.is_some(),
        "client id {:?} then {:?}",
        lease1.client_id,
        lease2.client_id
    );
    ensure!(
        again.ip == first.ip && lease2.ip == lease1.ip,
        "{lease1:?} then {lease2:?}"
    );
    ensure!(lease2.hostname.as_deref() == Some("db-0"), "{lease2:?}");
    Ok(())
}

/// A lab where dnsmasq (no ping check) has `taken`, an address a LAN host
/// already uses, reserved for the stable MAC of pod `squatted`.
/// Fields drop in order: the agent before its node, the LAN last.
struct Squatted {
    agent: Agent,
    node: Node,
    squatter: lanlink_lab::LanHost,
    lan: Lan,
    taken: Ipv4Addr,
    /// The pod's MAC, learnt from a first ADD and DEL.
    mac: String,
    _dir: lanlink_lab::cleanup::LabDir,
}

fn squatted() -> Result<Squatted> {
    let taken = Ipv4Addr::new(198, 18, 0, 150);
    // A reservation file dnsmasq re-reads on SIGHUP.
    let dir = lanlink_lab::cleanup::LabDir::new("hosts")?;
    let hosts = dir.path().join("dhcp-hosts");
    std::fs::write(&hosts, "")?;
    let lan = Lan::new(LanOptions {
        extra_args: vec![format!("--dhcp-hostsfile={}", hosts.display())],
        ..LanOptions::default()
    })?;
    let squatter = lan.add_host("squatter", taken)?;
    let node = Node::new(&lan, "node1", Ipv4Addr::new(198, 18, 0, 10))?;
    let agent = Agent::start(&node, AgentOptions::default())?;

    // The pod's stable MAC gets .150 reserved, which the squatter already
    // uses; dnsmasq (no ping check) offers it anyway.
    let probe = add(&node, &agent, "squatted", &netconf(&agent, 8000))?;
    del(&node, &agent, &probe)?;
    lan.wait_for_no_lease(&probe.mac, Duration::from_secs(5))?;
    std::fs::write(&hosts, format!("{},{taken}\n", probe.mac))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lan.dnsmasq_pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )?;
    let path = hosts.display().to_string();
    wait_until(
        Duration::from_secs(5),
        &format!("dnsmasq to re-read {path}"),
        || Ok((count_lines(&lan.dhcp_log(), &["read", &path]) >= 2).then_some(())),
    )
    .with_context(|| format!("dnsmasq's log:\n{}", lan.dhcp_log()))?;
    Ok(Squatted {
        lan,
        squatter,
        node,
        agent,
        taken,
        mac: probe.mac,
        _dir: dir,
    })
}

#[test]
fn an_address_that_already_answers_arp_is_declined() -> Result<()> {
    lanlink_lab::require_root();
    let Squatted {
        lan,
        squatter,
        node,
        agent,
        taken,
        mac,
        _dir,
    } = squatted()?;
    let nc = netconf(&agent, 8000);
    let pod = add(&node, &agent, "squatted", &nc)?;
    ensure!(pod.mac == mac);
    ensure!(
        pod.ip != taken,
        "the pod took {taken}, which {} uses",
        squatter.mac()
    );
    let log = lan.dhcp_log();
    let t = taken.to_string();
    ensure!(
        count_lines(&log, &["DHCPACK(br0)", &t, &pod.mac]) == 1,
        "{log}"
    );
    ensure!(
        count_lines(&log, &["DHCPDECLINE(br0)", &t, &pod.mac]) == 1,
        "{log}"
    );
    let lease = lan.wait_for_lease(&pod.mac, Duration::from_secs(5))?;
    ensure!(lease.ip == pod.ip, "{lease:?}");
    let stats = api_get(&agent, "/v1/dhcp")?;
    ensure!(num(&stats, "sent_decline") == 1, "{stats}");
    ensure!(
        num(&stats["events"], "declined") == 1 && num(&stats["events"], "acquired") == 2,
        "{stats}"
    );
    ensure!(agent.log().contains("declining it"), "{}", agent.log());
    // Both work: the squatter kept its address, the pod has another.
    let r = ping(squatter.ns(), ROUTER, 2, Duration::from_secs(5))?;
    ensure!(r.all_received(), "squatter → router: {}", r.summary);
    let r = ping(&pod.ns, ROUTER, 2, Duration::from_secs(5))?;
    ensure!(r.all_received(), "pod → router: {}", r.summary);
    ensure!(!pod_addresses(&pod.ns)?.contains(&t));
    Ok(())
}

/// `ipam.arpProbeMs: 0` turns the conflict check off: the same squatted
/// address is then handed to the pod (what the probe prevents above).
#[test]
fn without_the_arp_probe_a_squatted_address_is_used() -> Result<()> {
    lanlink_lab::require_root();
    let s = squatted()?;
    let mut nc = netconf(&s.agent, 8000);
    nc["ipam"]["arpProbeMs"] = serde_json::json!(0);
    let pod = add(&s.node, &s.agent, "squatted", &nc)?;
    ensure!(pod.mac == s.mac);
    ensure!(
        pod.ip == s.taken,
        "with no probe the pod should take the reserved {}, got {}",
        s.taken,
        pod.ip
    );
    let log = s.lan.dhcp_log();
    ensure!(count_lines(&log, &["DHCPDECLINE(br0)"]) == 0, "{log}");
    let stats = api_get(&s.agent, "/v1/dhcp")?;
    ensure!(num(&stats, "sent_decline") == 0, "{stats}");
    ensure!(s.squatter.mac() != pod.mac);
    Ok(())
}
