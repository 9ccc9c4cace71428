//! A real container runtime on a lanlink network: podman (CNI backend) runs
//! containers whose interface lanlink makes; each gets a lease from the
//! lab's dnsmasq, reaches the LAN router and is reached from the LAN, and
//! `podman rm` — or the container exiting under `--rm` — releases the lease
//! and removes the veth, the map entries and podman's namespace.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use lanlink_lab::podman::Podman;
use lanlink_lab::pods::host_veths;
use lanlink_lab::{Agent, OneNode, PodNet, cmd, ping, wait_until};
use serde_json::{Value, json};

const ROUTER: Ipv4Addr = lanlink_lab::ROUTER;
const PODMAN_TIMEOUT: Duration = Duration::from_secs(90);

/// The agent's endpoints, as `curl --unix-socket` shows them.
fn endpoints(agent: &Agent) -> Result<Value> {
    let out = cmd::run_ok(
        std::process::Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "--unix-socket"])
            .arg(agent.socket())
            .arg("http://localhost/v1/endpoints"),
        Duration::from_secs(15),
    )?;
    serde_json::from_str(&out).context("endpoints JSON")
}

/// The MAC and IPv4 the container's shell printed (`cat address`, then
/// `ip -4 -o addr show dev eth0`).
fn parse_identity(text: &str) -> Result<(String, Ipv4Addr)> {
    let mac = text
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 17 && l.bytes().filter(|b| *b == b':').count() == 5)
        .with_context(|| format!("no MAC in {text:?}"))?
        .to_ascii_lowercase();
    let ip = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("no IPv4 in {text:?}"))?;
    Ok((mac, ip))
}

#[test]
fn podman_containers_lease_reach_the_lan_and_release_on_rm() -> Result<()> {
    lanlink_lab::require_root();
    for tool in [
        "/usr/bin/podman",
        "/usr/sbin/runc",
        "/usr/bin/conmon",
        "/bin/busybox",
    ] {
        ensure!(
            Path::new(tool).exists(),
            "{tool} is missing: run `cargo xtask setup` (podman, runc, busybox-static)"
        );
    }
    let lab = OneNode::start()?;
    let (lan, node, agent) = (&lab.lan, &lab.node, &lab.agent);
    let podman = Podman::new(node, "lanlink-lan", PodNet::primary().plugin(agent))?;
    // A run that crashed mid-DEL can leave a result of this network's name
    // behind; only this run's containers count. An unreadable cache dir is
    // an error here, never "no results".
    let stale = podman.cni_results()?;
    let ours = |podman: &Podman| -> Result<Vec<String>> {
        let mut v = podman.cni_results()?;
        v.retain(|r| !stale.contains(r));
        Ok(v)
    };
    // Before any container, no cgroup of its parent exists.
    let cgroup_parent = podman.cgroup_parent();
    let cgroup_name = cgroup_parent.trim_start_matches('/').to_owned();
    ensure!(
        podman.cgroups()?.is_empty(),
        "cgroups before any container: {:?}",
        podman.cgroups()?
    );

    // 1. A detached container: leased, on the LAN both ways; `podman rm`
    //    releases it.
    let mut args = podman.run_args();
    args.splice(1..1, ["-d".to_string(), "--name".into(), "web".into()]);
    args.extend(["sleep".into(), "60".into()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = podman.run(&argv, PODMAN_TIMEOUT)?;
    ensure!(
        started.status.success(),
        "podman run -d failed: {}\nagent log:\n{}",
        String::from_utf8_lossy(&started.stderr),
        agent.log()
    );
    let id = String::from_utf8_lossy(&started.stdout).trim().to_owned();
    let sandbox = podman.sandbox("web")?;
    // Positive controls of the checks that later read an absence: while
    // the container runs, its cgroup and libcni's cached result exist.
    let cgroups = podman.container_cgroups(&id)?;
    ensure!(
        !cgroups.is_empty(),
        "no cgroup of the running container {id} under {cgroup_parent}: {:?}",
        podman.cgroups()?
    );
    let result_name = format!("{}-{id}-eth0", podman.network());
    ensure!(
        ours(&podman)?.contains(&result_name),
        "no cached result {result_name} of the running container: {:?}",
        ours(&podman)?
    );
    let inside = podman.run_ok(
        &[
            "exec",
            "web",
            "sh",
            "-c",
            "cat /sys/class/net/eth0/address; ip -4 -o addr show dev eth0",
        ],
        PODMAN_TIMEOUT,
    )?;
    let (mac, ip) = parse_identity(&inside)?;
    let lease = lan.wait_for_lease(&mac, Duration::from_secs(5))?;
    ensure!(
        lease.ip == ip,
        "dnsmasq leased {} to {mac}, the container has {ip}",
        lease.ip
    );
    let eps = endpoints(agent)?;
    ensure!(
        eps.as_array().is_some_and(|e| e.len() == 1)
            && eps[0]["containerId"] == id
            && eps[0]["netns"] == sandbox.display().to_string()
            && eps[0]["mac"] == mac,
        "the agent's endpoints: {eps}"
    );
    let pinged = podman.run_ok(
        &[
            "exec",
            "web",
            "ping",
            "-c",
            "3",
            "-W",
            "2",
            &ROUTER.to_string(),
        ],
        PODMAN_TIMEOUT,
    )?;
    ensure!(
        pinged.contains("3 packets received"),
        "container → router: {pinged}"
    );
    let p = ping(lan.ns(), ip, 3, Duration::from_secs(5))?;
    ensure!(p.all_received(), "LAN router → container: {}", p.summary);

    podman.run_ok(&["rm", "--force", "--time", "0", "web"], PODMAN_TIMEOUT)?;
    lan.wait_for_no_lease(&mac, Duration::from_secs(5))
        .context("podman rm did not release the lease")?;
    ensure!(
        endpoints(agent)? == json!([]),
        "endpoints after rm: {}",
        endpoints(agent)?
    );
    ensure!(host_veths(node)?.is_empty(), "veth left after rm");
    ensure!(!sandbox.exists(), "{} left after rm", sandbox.display());
    ensure!(
        podman.container_cgroups(&id)?.is_empty(),
        "the container's cgroups after rm: {:?}",
        podman.container_cgroups(&id)?
    );
    ensure!(
        !ours(&podman)?.contains(&result_name),
        "libcni's result {result_name} left after rm"
    );
    ensure!(
        lan.dhcp_log()
            .contains(&format!("DHCPRELEASE(br0) {ip} {mac}")),
        "no DHCPRELEASE for {ip} in dnsmasq's log"
    );

    // 2. A container that runs and exits under `--rm`: its own output shows
    //    the lease and a LAN ping; its exit releases the lease.
    let mut args = podman.run_args();
    args.insert(1, "--rm".into());
    args.extend([
        "sh".into(),
        "-c".into(),
        format!(
            "cat /sys/class/net/eth0/address; ip -4 -o addr show dev eth0; \
             ping -c 3 -W 2 {ROUTER}"
        ),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = podman.run_ok(&argv, PODMAN_TIMEOUT)?;
    let (mac, ip) = parse_identity(&out)?;
    ensure!(
        out.contains("3 packets received"),
        "container → router: {out}"
    );
    ensure!(
        lan.dhcp_log().contains(&format!("DHCPACK(br0) {ip} {mac}")),
        "dnsmasq did not lease {ip} to {mac}"
    );
    lan.wait_for_no_lease(&mac, Duration::from_secs(5))
        .context("the container's exit did not release the lease")?;
    ensure!(endpoints(agent)? == json!([]));
    ensure!(host_veths(node)?.is_empty());

    // Nothing of podman's is left: containers, libcni's cached results, the
    // containers' cgroups.
    let ps = podman.run_ok(&["ps", "--all", "--quiet"], PODMAN_TIMEOUT)?;
    ensure!(ps.trim().is_empty(), "containers left: {ps}");
    // libcni drops its cached result after the DEL, in podman's cleanup
    // process, which may still be finishing when `run --rm` returns.
    wait_until(
        Duration::from_secs(5),
        "libcni's cached results removed",
        || Ok(ours(&podman)?.is_empty().then_some(())),
    )
    .with_context(|| format!("libcni results left: {:?}", ours(&podman)))?;
    // No container's cgroup is left below the parent, and no process in
    // the `conmon` cgroup all the parent's conmons share (podman keeps that
    // and the parent; the guard removes them).
    let mut below = Vec::new();
    for parent in podman.cgroups()? {
        for e in std::fs::read_dir(&parent).with_context(|| format!("{}", parent.display()))? {
            let path = e?.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "conmon") {
                let procs = std::fs::read_to_string(path.join("cgroup.procs"))
                    .with_context(|| format!("{}/cgroup.procs", path.display()))?;
                ensure!(procs.trim().is_empty(), "conmon left: {procs}");
            } else {
                below.push(path);
            }
        }
    }
    ensure!(below.is_empty(), "containers' cgroups left: {below:?}");
    drop(podman);
    let left = lanlink_lab::podman::cgroup_dirs(&cgroup_name)?;
    ensure!(left.is_empty(), "cgroups left after the guard: {left:?}");
    Ok(())
}
