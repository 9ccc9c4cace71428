//! The smoke scenario (issue 13): one node, end to end, cheap enough to run
//! inside a VM under software emulation (`cargo xtask vmtest` runs this
//! binary in the guest kernels; it also runs here, on the host's kernel,
//! with either attach backend).

use std::time::Duration;

use anyhow::{Result, ensure};
use lanlink_lab::cleanup::LabDir;
use lanlink_lab::ping::BgPing;
use lanlink_lab::pods::{self, add_pod, del_pod};
use lanlink_lab::{Agent, AgentOptions, LanOptions, OneNode, ROUTER, ping};
use nix::sys::signal::Signal;

/// The lab's traffic tool (a binary of `lanlink-lab`).
static LAB_NET: std::sync::LazyLock<std::path::PathBuf> =
    std::sync::LazyLock::new(|| lanlink_lab::tool("lab-net").expect("the lab-net tool"));

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> Result<bool> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let mut parts = release.trim().split(['.', '-']).map(str::parse::<u32>);
    let (Some(Ok(a)), Some(Ok(b))) = (parts.next(), parts.next()) else {
        anyhow::bail!("cannot read the kernel release {release:?}");
    };
    Ok((a, b) >= (major, minor))
}

/// On a node whose FORWARD policy is DROP: two pods lease from dnsmasq and
/// reach the router, each other and a LAN host; a LAN broadcast reaches
/// both; the agent is SIGKILLed and restarted under a 20/s ping from each
/// pod with no loss; DEL of both leaves nothing.
#[test]
fn a_node_end_to_end() -> Result<()> {
    lanlink_lab::require_root();
    let mut lab =
        OneNode::start_prepared(LanOptions::default(), AgentOptions::default(), |node| {
            pods::hostile_forward(node, 100)
        })?;
    let (lan, host, node, agent) = (&lab.lan, &lab.host, &lab.node, &mut lab.agent);
    let attach = pods::agent_status(agent)?["attach"].clone();
    eprintln!(
        "kernel {}, attach {attach}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    // `auto` (as `cargo xtask vmtest` runs it): TCX exactly where the kernel
    // has it.
    if std::env::var("LANLINK_ATTACH").as_deref() == Ok("auto") {
        let want = if kernel_at_least(6, 6)? { "tcx" } else { "tc" };
        ensure!(attach == want, "--attach auto chose {attach}, not {want}");
    }
    // Where the kernel has no TCX, `--attach tcx` is refused with one line
    // that names it.
    if !kernel_at_least(6, 6)? {
        let refused = Agent::start_with_args(node, &["--attach", "tcx"])
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        ensure!(
            refused.contains("has no TCX, which lanlink needs: it came in Linux 6.6"),
            "--attach tcx on this kernel: {refused}"
        );
    }
    let p1 = add_pod(node, agent, "p1")?;
    let p2 = add_pod(node, agent, "p2")?;

    for (from, to, what) in [
        (&p1.ns, ROUTER, "p1 → router"),
        (&p2.ns, p1.ip()?, "p2 → p1"),
        (&p1.ns, host.ip(), "p1 → LAN host"),
        (host.ns(), p2.ip()?, "LAN host → p2"),
    ] {
        let p = ping(from, to, 3, Duration::from_secs(10))?;
        ensure!(p.all_received(), "{what}: {}", p.summary);
    }

    // A LAN broadcast reaches both pods, once each.
    let recv = |ns| {
        lanlink_lab::traffic::Tool::spawn(
            ns,
            &LAB_NET,
            &[
                "udp-recv",
                "--bind",
                "0.0.0.0:9999",
                "--count",
                "5",
                "--timeout-ms",
                "15000",
            ],
        )
    };
    let (r1, r2) = (recv(&p1.ns)?, recv(&p2.ns)?);
    let bin = LAB_NET.to_str().expect("a UTF-8 path");
    host.ns().run_ok(&[
        bin,
        "udp-send",
        "--to",
        "198.18.0.255:9999",
        "--text",
        "smoke",
        "--count",
        "5",
        "--interval-ms",
        "100",
    ])?;
    for (r, pod) in [(r1, "p1"), (r2, "p2")] {
        let got = r.finish(Duration::from_secs(20))?;
        ensure!(
            got.len() == 5 && got.iter().all(|g| g.data == b"smoke"),
            "{pod} got {} of 5 broadcasts",
            got.len()
        );
    }

    // SIGKILL and restart under a 20/s ping: nothing lost.
    let dir = LabDir::new("smoke")?;
    let ping1 = BgPing::start(&p1.ns, host.ip(), &dir.path().join("p1"))?;
    let ping2 = BgPing::start(&p2.ns, p1.ip()?, &dir.path().join("p2"))?;
    std::thread::sleep(Duration::from_secs(2));
    agent.kill(Signal::SIGKILL)?;
    std::thread::sleep(Duration::from_secs(1));
    agent.restart()?;
    ping1.finish_lossless("p1 → LAN host across SIGKILL + restart")?;
    ping2.finish_lossless("p2 → p1 across SIGKILL + restart")?;

    // DEL leaves nothing.
    for p in [&p1, &p2] {
        del_pod(node, agent, p)?;
    }
    let pin = agent.pin_dir();
    ensure!(pods::host_veths(node)?.is_empty(), "veths left");
    for map in ["EP_BY_MAC", "EP_BY_IF"] {
        ensure!(pods::map_len(pin, map)? == 0, "{map} left");
    }
    ensure!(
        pods::pinned_links(pin)? == ["from_lan-eth0"],
        "attachments left: {:?}",
        pods::pinned_links(pin)?
    );
    for p in [&p1, &p2] {
        lan.wait_for_no_lease(&p.mac, Duration::from_secs(10))?;
    }
    let (policy, matched) = pods::forward_counters(node)?;
    ensure!(
        policy == 0 && matched == 0,
        "FORWARD dropped {policy} and matched {matched} packets"
    );
    Ok(())
}
