//! The DHCP lease lifecycle against real servers (issue 5): lease, renew at
//! T1 and release with dnsmasq and with ISC Kea; with the server gone, a
//! rebinding at T2 and expiry on schedule; a DHCPNAK on renewal expires at
//! once; an agent SIGKILLed between two renewals resumes them with no new
//! DISCOVER. Short T1/T2 (dnsmasq options 58/59) and 10 s Kea leases keep
//! every test well under a minute.

mod dhcp_common;

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use dhcp_common::*;
use lanlink_lab::{
    Agent, AgentOptions, Kea, KeaOptions, Lan, LanOptions, Node, ROUTER, wait_until,
};
use nix::sys::signal::Signal;
use serde_json::Value;

fn lease_field(l: &Value, f: &str) -> Result<u64> {
    l[f].as_u64()
        .with_context(|| format!("lease has no {f}: {l}"))
}

/// Waits (≤ `timeout`) until the agent's lease of `container_id` was
/// obtained after `after` (unix seconds), i.e. renewed.
fn wait_renewed(agent: &Agent, container_id: &str, after: u64, timeout: Duration) -> Result<Value> {
    wait_until(timeout, &format!("a renewal of {container_id}"), || {
        let l = lease_of(agent, container_id)?;
        Ok((lease_field(&l, "obtainedAt")? > after).then_some(l))
    })
    .with_context(|| format!("agent log:\n{}", agent.log()))
}

/// The renewal came at T1 of the previous lease: not before (RFC 2131), and
/// at most a second after (the timers have one-second resolution).
fn ensure_at_t1(before: &Value, after: &Value) -> Result<()> {
    let (t1, got) = (
        lease_field(before, "renewAt")?,
        lease_field(after, "obtainedAt")?,
    );
    ensure!(
        (t1..=t1 + 1).contains(&got),
        "renewed at {got}, T1 was {t1}: {before} → {after}"
    );
    eprintln!("renewed {}s after T1 ({t1})", got - t1);
    ensure!(
        after["address"] == before["address"],
        "the address changed on renewal: {before} → {after}"
    );
    Ok(())
}

/// Waits (≤ `timeout`) for the renewal of the lease `prev` of
/// `container_id`, which must come at `prev`'s T1; returns the new lease.
fn renewed_at_t1(
    agent: &Agent,
    container_id: &str,
    prev: &Value,
    timeout: Duration,
) -> Result<Value> {
    let next = wait_renewed(
        agent,
        container_id,
        lease_field(prev, "obtainedAt")?,
        timeout,
    )?;
    ensure_at_t1(prev, &next)?;
    Ok(next)
}

/// A dnsmasq LAN with 120 s leases (its shortest) and T1 `t1` seconds, so
/// that leases renew early, plus `extra_args` for dnsmasq; and a node on it.
fn dnsmasq_lan(t1: u32, mut extra_args: Vec<String>) -> Result<(Lan, Node)> {
    extra_args.insert(0, format!("--dhcp-option=option:T1,{t1}"));
    let lan = Lan::new(LanOptions {
        lease_secs: 120,
        extra_args,
        ..LanOptions::default()
    })?;
    let node = Node::new(&lan, "node1", Ipv4Addr::new(198, 18, 0, 10))?;
    Ok((lan, node))
}

/// Waits (≤ `timeout`) until the agent shows the lease of `container_id`
/// expired; returns when it saw it (unix seconds).
fn wait_expired(agent: &Agent, container_id: &str, timeout: Duration) -> Result<f64> {
    wait_until(
        timeout,
        &format!("the lease of {container_id} to expire"),
        || {
            let l = lease_of(agent, container_id)?;
            Ok((l["state"] == "expired").then(unix_now))
        },
    )
}

/// Asserts the pinned `EP_BY_IF` entry of `container_id` is marked EXPIRED.
fn ensure_expired_in_map(agent: &Agent, container_id: &str) -> Result<()> {
    let ifindex = host_ifindex(agent, container_id)?;
    let flags = endpoint_flags(agent.pin_dir(), ifindex)?;
    ensure!(flags & FLAG_EXPIRED != 0, "EP_BY_IF flags {flags:#x}");
    Ok(())
}

#[test]
fn dnsmasq_leases_renews_at_t1_and_releases() -> Result<()> {
    lanlink_lab::require_root();
    let (lan, node) = dnsmasq_lan(3, vec![])?;
    let agent = Agent::start(&node, AgentOptions::default())?;
    let pod = add(&node, &agent, "web-0", &netconf(&agent, 5000))?;

    // Leased: in dnsmasq's lease file with the pod's hostname and client id.
    let first = lan.wait_for_lease(&pod.mac, Duration::from_secs(5))?;
    ensure!(
        first.ip == pod.ip,
        "dnsmasq has {first:?}, the pod {}",
        pod.ip
    );
    ensure!(first.hostname.as_deref() == Some("web-0"), "{first:?}");
    ensure!(
        first
            .client_id
            .as_deref()
            .is_some_and(|c| c.starts_with("ff:")),
        "{first:?}"
    );
    let l1 = lease_of(&agent, &pod.container_id)?;
    ensure!(
        l1["server"] == ROUTER.to_string() && l1["state"] == "bound",
        "{l1}"
    );
    ensure!(
        lease_field(&l1, "renewAt")? == lease_field(&l1, "obtainedAt")? + 3,
        "{l1}"
    );

    // Renewed at T1, same address, and dnsmasq extended it.
    renewed_at_t1(&agent, &pod.container_id, &l1, Duration::from_secs(6))?;
    let extended = wait_until(
        Duration::from_secs(3),
        "dnsmasq's lease to be extended",
        || {
            Ok(lan
                .leases()
                .into_iter()
                .find(|l| l.mac == pod.mac && l.expiry > first.expiry))
        },
    )?;
    ensure!(extended.ip == pod.ip, "{extended:?}");
    let log = lan.dhcp_log();
    let ip = pod.ip.to_string();
    ensure!(
        count_lines(&log, &["DHCPDISCOVER(br0)", &pod.mac]) == 1,
        "{log}"
    );
    ensure!(
        count_lines(&log, &["DHCPACK(br0)", &ip, &pod.mac]) >= 2,
        "{log}"
    );
    let ev = events(&agent)?;
    ensure!(
        num(&ev, "acquired") == 1 && num(&ev, "renewed") >= 1,
        "{ev}"
    );
    ensure!(pod_addresses(&pod.ns)?.contains(&format!("{ip}/24")));

    // Released on DEL: gone from the lease file, logged by dnsmasq.
    del(&node, &agent, &pod)?;
    lan.wait_for_no_lease(&pod.mac, Duration::from_secs(5))?;
    ensure!(
        count_lines(&lan.dhcp_log(), &["DHCPRELEASE(br0)", &ip, &pod.mac]) == 1,
        "{}",
        lan.dhcp_log()
    );
    ensure!(num(&events(&agent)?, "released") == 1);
    Ok(())
}

/// A LAN whose only DHCP server is Kea (dnsmasq silenced).
fn kea_lan(opts: KeaOptions) -> Result<(Lan, Kea, Node, Agent)> {
    let lan = Lan::new(LanOptions {
        extra_args: vec![Kea::SILENCE_DNSMASQ.into()],
        ..LanOptions::default()
    })?;
    let kea = Kea::start(&lan, opts)?;
    let node = Node::new(&lan, "node1", Ipv4Addr::new(198, 18, 0, 10))?;
    let agent = Agent::start(&node, AgentOptions::default())?;
    Ok((lan, kea, node, agent))
}

#[test]
fn kea_leases_renews_releases_then_rebinds_and_expires_when_stopped() -> Result<()> {
    lanlink_lab::require_root();
    let (lan, mut kea, node, agent) = kea_lan(KeaOptions {
        valid_lifetime: 10,
        renew_timer: Some(4),
        rebind_timer: Some(7),
        ..KeaOptions::default()
    })?;
    let nc = netconf(&agent, 5000);
    let pod = add(&node, &agent, "web-0", &nc)?;
    let ip = pod.ip.to_string();

    // Leased by Kea: its lease file and log, its server id.
    let rows = kea.leases_of(&pod.mac);
    ensure!(
        rows.len() == 1 && rows[0].ip == pod.ip && rows[0].valid_lifetime == 10,
        "{rows:?}"
    );
    ensure!(rows[0].hostname.starts_with("web-0"), "{rows:?}");
    ensure!(
        count_lines(&kea.log(), &["DHCP4_LEASE_ALLOC", &ip]) == 1,
        "{}",
        kea.log()
    );
    let l1 = lease_of(&agent, &pod.container_id)?;
    ensure!(
        l1["server"] == kea.ip().to_string() && l1["leaseSecs"] == 10,
        "{l1}"
    );

    // A second pod, deleted: Kea logs the release and ends the lease.
    let other = add(&node, &agent, "web-1", &nc)?;
    del(&node, &agent, &other)?;
    let other_ip = other.ip.to_string();
    wait_until(
        Duration::from_secs(3),
        "a DHCP4_RELEASE in Kea's log",
        || Ok((count_lines(&kea.log(), &["DHCP4_RELEASE", &other_ip]) == 1).then_some(())),
    )
    .with_context(|| format!("Kea's log:\n{}", kea.log()))?;
    let rows = kea.leases_of(&other.mac);
    ensure!(
        rows.last().is_some_and(|r| r.valid_lifetime == 0),
        "{rows:?}"
    );

    // Renewed at T1 (4 s): a new row with a later expiry, same address.
    let l2 = renewed_at_t1(&agent, &pod.container_id, &l1, Duration::from_secs(6))?;
    let rows = wait_until(
        Duration::from_secs(2),
        "a renewal in Kea's lease file",
        || {
            let rows = kea.leases_of(&pod.mac);
            Ok((rows.len() >= 2).then_some(rows))
        },
    )?;
    ensure!(
        rows.iter().all(|r| r.ip == pod.ip) && rows[1].expire > rows[0].expire,
        "{rows:?}"
    );

    // Kea stops: at T1 the agent renews by unicast to Kea, at T2 it
    // rebinds by broadcast, at the end of the lease it expires it.
    kea.stop()?;
    let capture = kea.ns().spawn_logged(
        &[
            "timeout",
            "12",
            "tcpdump",
            "-i",
            "eth0",
            "-n",
            "-e",
            "-l",
            &format!("udp dst port 67 and src host {ip}"),
        ],
        &lan.dir().join("capture.txt"),
    )?;
    let expires_at = lease_field(&l2, "expiresAt")?;
    let expired = wait_expired(&agent, &pod.container_id, Duration::from_secs(14))
        .with_context(|| format!("no expiry; agent log:\n{}", agent.log()))?;
    // On schedule: not before the lease ends, and soon after.
    eprintln!(
        "expired {:+.2}s from the lease's end",
        expired - expires_at as f64
    );
    ensure!(
        expired >= expires_at as f64 - 0.5 && expired <= expires_at as f64 + 2.5,
        "expired at {expired:.1}, the lease ended at {expires_at}"
    );
    drop(capture);
    let captured = std::fs::read_to_string(lan.dir().join("capture.txt")).unwrap_or_default();
    let to_kea = format!("{ip}.68 > {}.67", kea.ip());
    let broadcast = format!("{ip}.68 > 255.255.255.255.67");
    ensure!(
        captured.contains(&to_kea) && captured.contains(&broadcast),
        "expected a unicast renewal and a broadcast rebinding from {ip}:\n{captured}"
    );

    // Expired: EXPIRED in the map, the address gone from the pod and from
    // the node's routes, the event counted and logged.
    ensure_expired_in_map(&agent, &pod.container_id)?;
    ensure!(
        !pod_addresses(&pod.ns)?.contains(&ip),
        "{}",
        pod_addresses(&pod.ns)?
    );
    let routes = node.ns().ip(&["-4", "route", "show"])?;
    ensure!(
        !routes.contains(&ip),
        "the node still routes {ip}:\n{routes}"
    );
    let ev = events(&agent)?;
    ensure!(
        num(&ev, "expired") == 1 && num(&ev, "renew_failures") >= 2 && num(&ev, "renewed") >= 1,
        "{ev}"
    );
    ensure!(agent.log().contains("lease expired"), "{}", agent.log());

    // DEL of an expired pod still cleans up, and sends no release.
    del(&node, &agent, &pod)?;
    ensure!(num(&events(&agent)?, "released") == 1);
    Ok(())
}

#[test]
fn a_nak_on_renewal_expires_the_lease_at_once() -> Result<()> {
    lanlink_lab::require_root();
    // A reservation file dnsmasq re-reads on SIGHUP.
    let dir = lanlink_lab::cleanup::LabDir::new("hosts")?;
    let hosts = dir.path().join("dhcp-hosts");
    std::fs::write(&hosts, "")?;
    let (lan, node) = dnsmasq_lan(4, vec![format!("--dhcp-hostsfile={}", hosts.display())])?;
    let agent = Agent::start(&node, AgentOptions::default())?;
    let pod = add(&node, &agent, "web-0", &netconf(&agent, 5000))?;
    let l1 = lease_of(&agent, &pod.container_id)?;

    // The LAN's admin reserves another address for the pod's MAC: dnsmasq
    // refuses the renewal of the current one at T1 ("static lease
    // available").
    let reserved = if pod.ip == Ipv4Addr::new(198, 18, 0, 180) {
        Ipv4Addr::new(198, 18, 0, 181)
    } else {
        Ipv4Addr::new(198, 18, 0, 180)
    };
    std::fs::write(&hosts, format!("{},{reserved}\n", pod.mac))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lan.dnsmasq_pid() as i32),
        Signal::SIGHUP,
    )?;
    let path = hosts.display().to_string();
    wait_until(
        Duration::from_secs(3),
        &format!("dnsmasq to re-read {path}"),
        || Ok((count_lines(&lan.dhcp_log(), &["read", &path]) >= 2).then_some(())),
    )?;

    let renew_at = lease_field(&l1, "renewAt")?;
    let expired = wait_expired(&agent, &pod.container_id, Duration::from_secs(8))
        .with_context(|| format!("no expiry after the nak; agent log:\n{}", agent.log()))?;
    // At once: at T1, not at the end of the 120 s lease.
    eprintln!(
        "expired {:.2}s after T1, on the nak",
        expired - renew_at as f64
    );
    ensure!(
        expired <= renew_at as f64 + 2.5,
        "expired at {expired:.1}, T1 was {renew_at}"
    );
    let ip = pod.ip.to_string();
    ensure!(
        count_lines(&lan.dhcp_log(), &["DHCPNAK(br0)", &ip, &pod.mac]) == 1,
        "dnsmasq sent no nak:\n{}",
        lan.dhcp_log()
    );
    let ev = events(&agent)?;
    ensure!(num(&ev, "nak") == 1 && num(&ev, "expired") == 1, "{ev}");
    ensure_expired_in_map(&agent, &pod.container_id)?;
    ensure!(!pod_addresses(&pod.ns)?.contains(&ip));
    ensure!(agent.log().contains("lease refused"), "{}", agent.log());
    del(&node, &agent, &pod)?;
    Ok(())
}

#[test]
fn sigkill_between_renewals_resumes_them_without_discover() -> Result<()> {
    lanlink_lab::require_root();
    let (lan, node) = dnsmasq_lan(5, vec![])?;
    let mut agent = Agent::start(&node, AgentOptions::default())?;
    let pod = add(&node, &agent, "web-0", &netconf(&agent, 5000))?;
    let l1 = lease_of(&agent, &pod.container_id)?;
    let l2 = renewed_at_t1(&agent, &pod.container_id, &l1, Duration::from_secs(8))?;

    // The renewed lease reaches the disk through the agent's one state
    // writer, a few milliseconds after the API shows it: wait for that
    // (bounded), then SIGKILL, so the restart has no chance to save anything.
    let state_dir = agent.state_dir();
    let saved_lease = || -> Result<Value> {
        let state: Value =
            serde_json::from_slice(&std::fs::read(state_dir.join("endpoints.json"))?)?;
        state["endpoints"]
            .as_object()
            .and_then(|e| e.values().next())
            .map(|e| e["lease"].clone())
            .context("no endpoint in the state file")
    };
    let on_disk = lanlink_lab::wait_until(
        Duration::from_secs(2),
        "the renewed lease in the state file",
        || Ok((saved_lease()?["obtained_at_unix"] == l2["obtainedAt"]).then_some(())),
    );
    ensure!(
        on_disk.is_ok(),
        "the state file holds {}, the agent had {l2}",
        saved_lease()?
    );
    agent.kill(Signal::SIGKILL)?;
    let log_mark = lan.dhcp_log().len();
    // Written atomically: no temp file left.
    let leftovers: Vec<_> = std::fs::read_dir(&state_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    ensure!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    agent.restart()?;
    // The next renewal comes on the old schedule, same address.
    renewed_at_t1(&agent, &pod.container_id, &l2, Duration::from_secs(8))?;
    let log = lan.dhcp_log();
    let after = &log[log_mark.min(log.len())..];
    let ip = pod.ip.to_string();
    ensure!(
        count_lines(after, &["DHCPREQUEST(br0)", &ip, &pod.mac]) >= 1
            && count_lines(after, &["DHCPACK(br0)", &ip, &pod.mac]) >= 1,
        "no renewal in dnsmasq's log after the restart:\n{after}"
    );
    ensure!(
        count_lines(after, &["DHCPDISCOVER", &pod.mac]) == 0,
        "a DISCOVER was sent after the restart:\n{after}"
    );
    ensure!(
        num(&events(&agent)?, "acquired") == 0,
        "the restarted agent acquired anew"
    );
    ensure!(pod_addresses(&pod.ns)?.contains(&format!("{ip}/24")));
    del(&node, &agent, &pod)?;
    lan.wait_for_no_lease(&pod.mac, Duration::from_secs(5))?;
    Ok(())
}
