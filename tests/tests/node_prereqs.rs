//! Node prerequisites (issue 14, item 1): the agent started the way
//! `ip netns exec` leaves it, with no bpffs at `/sys/fs/bpf`, mounts bpffs
//! itself (in its own mount namespace, never the host's) and serves pods;
//! `lanlinkd doctor` names what is wrong on a node as a distribution leaves
//! it (IPv4 forwarding off) with the command that fixes it, and changes
//! nothing.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use lanlink_lab::agent::is_bpffs;
use lanlink_lab::pods::{add_pod, del_pod};
use lanlink_lab::{AGENT_BIN, AgentOptions, Lan, LanOptions, Node, OneNode, ROUTER, ping};
use serde_json::Value;

/// The host's bpffs mounts, from the test's own mount namespace.
fn host_bpffs_mounts() -> Result<Vec<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    Ok(info
        .lines()
        .filter(|l| l.contains(" /sys/fs/bpf"))
        .map(|l| l.split(" - ").nth(1).unwrap_or(l).to_owned())
        .collect())
}

/// What an agent pinning straight into the agent's default pin dir or the
/// lab's pin root would leave in the host's bpffs (the lab's other agents
/// pin one level deeper, in a dir of their own).
fn host_pins() -> Vec<String> {
    [lanlink_lab::AGENT_DEFAULT_PIN_DIR, lanlink_lab::PIN_ROOT]
        .into_iter()
        .flat_map(|root| {
            ["EP_BY_MAC", "STATS", "links"]
                .into_iter()
                .map(move |name| Path::new(root).join(name))
        })
        .filter(|pin| pin.exists())
        .map(|pin| pin.display().to_string())
        .collect()
}

/// The agent in a mount namespace whose `/sys/fs/bpf` is a tmpfs (as `ip
/// netns exec` leaves it) with its pin dir under it: it mounts bpffs there,
/// says so, and a pod leases and pings the router; the host's `/sys/fs/bpf`,
/// the agent's default pin dir and the lab's pin root are untouched
/// throughout.
#[test]
fn the_agent_mounts_bpffs_where_ip_netns_exec_left_none() -> Result<()> {
    lanlink_lab::require_root();
    let mounts_before = host_bpffs_mounts()?;
    let pins_before = host_pins();
    let opts = AgentOptions {
        own_mount_ns: true,
        ..AgentOptions::default()
    };
    let lab = OneNode::start_with(LanOptions::default(), opts)?;
    let (node, agent) = (&lab.node, &lab.agent);
    let log = agent.log();
    ensure!(
        log.contains("mounted bpffs on /sys/fs/bpf"),
        "the agent did not say it mounted bpffs:\n{log}"
    );
    // In the agent's mount namespace /sys/fs/bpf is bpffs, with its pins.
    let pid = agent.pid().context("the agent's pid")?.to_string();
    let seen = lanlink_lab::cmd::run_ok(
        std::process::Command::new("nsenter")
            .args(["--target", &pid, "--mount", "--"])
            .args(["sh", "-c", "stat -f -c %T /sys/fs/bpf && ls \"$0\""])
            .arg(agent.pin_dir()),
        lanlink_lab::cmd::SHORT,
    )?;
    ensure!(
        seen.starts_with("bpf_fs"),
        "the agent's /sys/fs/bpf: {seen}"
    );
    ensure!(seen.contains("EP_BY_MAC"), "the agent's pins: {seen}");

    let pod = add_pod(node, agent, "p1")?;
    let stats = ping(&pod.ns, ROUTER, 3, Duration::from_secs(10))?;
    ensure!(
        stats.all_received(),
        "the pod's ping to the router: {stats:?}"
    );

    ensure!(is_bpffs(Path::new("/sys/fs/bpf")), "the host's /sys/fs/bpf");
    ensure!(
        host_bpffs_mounts()? == mounts_before,
        "the host's bpffs mounts changed"
    );
    ensure!(
        host_pins() == pins_before,
        "the agent pinned in the host's bpffs: {:?}",
        host_pins()
    );
    del_pod(node, agent, &pod)?;
    drop(lab);
    ensure!(
        host_bpffs_mounts()? == mounts_before,
        "the host's bpffs mounts changed"
    );
    ensure!(host_pins() == pins_before, "pins left in the host's bpffs");
    Ok(())
}

/// Runs `lanlinkd doctor --uplink eth0 [--json]` in `node`; exit code and stdout.
fn doctor(node: &Node, json: bool) -> Result<(i32, String)> {
    let bin = lanlink_lab::bin_dir().join(AGENT_BIN);
    let bin = bin.to_str().context("the agent's path")?;
    let mut args = vec![bin, "doctor", "--uplink", "eth0"];
    if json {
        args.push("--json");
    }
    let out = node.ns().run(&args)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "doctor (json: {json}) exited {:?}:\n{stdout}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().context("doctor was killed")?, stdout))
}

/// In a fresh node namespace, whose `net.ipv4.ip_forward` is 0: doctor
/// exits 1 naming `ip_forward` and the sysctl that fixes it, without
/// changing it; once set, that line is ok.
#[test]
fn doctor_names_forwarding_off_and_the_fix() -> Result<()> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions::default())?;
    let node = Node::new(&lan, "node", OneNode::NODE_IP)?;
    // A fresh namespace starts with 0; said explicitly, as it is the point.
    node.ns().sysctl("net.ipv4.ip_forward", "0")?;

    let (code, out) = doctor(&node, false)?;
    ensure!(code == 1, "doctor exited {code} with forwarding off");
    let line = out
        .lines()
        .find(|l| l.contains("ip_forward"))
        .context("no ip_forward line")?;
    ensure!(line.starts_with("wrong"), "{line}");
    ensure!(line.contains("sysctl -w net.ipv4.ip_forward=1"), "{line}");
    ensure!(
        node.ns().sysctl_get("net.ipv4.ip_forward")? == "0",
        "doctor changed ip_forward"
    );

    node.ns().sysctl("net.ipv4.ip_forward", "1")?;
    let (code, out) = doctor(&node, true)?;
    let checks: Vec<Value> = serde_json::from_str(&out).context("doctor --json")?;
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap_or("").to_owned())
    };
    ensure!(status("ip_forward").as_deref() == Some("ok"), "{out}");
    ensure!(status("uplink").as_deref() == Some("ok"), "{out}");
    ensure!(status("bpffs").as_deref() == Some("ok"), "{out}");
    ensure!(status("mtu").as_deref() == Some("info"), "{out}");
    let wrong: Vec<_> = checks.iter().filter(|c| c["status"] == "wrong").collect();
    ensure!(
        (code == 0) == wrong.is_empty(),
        "exit {code} with {wrong:?}"
    );
    ensure!(code == 0, "a lab node with forwarding on: {wrong:?}");
    // IPv6 on the uplink (a fresh namespace has it): ok; off: said, not wrong.
    ensure!(status("ipv6").as_deref() == Some("ok"), "{out}");
    node.ns().sysctl("net.ipv6.conf.eth0.disable_ipv6", "1")?;
    let (code, out) = doctor(&node, false)?;
    let line = out
        .lines()
        .find(|l| l.contains("ipv6"))
        .context("no ipv6 line")?;
    ensure!(
        code == 0 && line.starts_with("info") && line.contains("IPv4 only"),
        "exit {code}: {line}"
    );
    Ok(())
}
