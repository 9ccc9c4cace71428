//! Restart without loss (issue 3): forwarding for existing pods goes on
//! while the agent is SIGKILLed and started again; the new agent re-adopts
//! the pinned maps and swaps its programs into the TC filters (the default)
//! or, with `LANLINK_ATTACH=tcx` as `cargo xtask test` runs it again, the
//! pinned TCX links.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use lanlink_lab::OneNode;
use lanlink_lab::cleanup::LabDir;
use lanlink_lab::ping::BgPing;
use lanlink_lab::pods::{self, add_pod};
use nix::sys::signal::Signal;

/// The lab's traffic tool (a binary of `lanlink-lab`).
static LAB_NET: std::sync::LazyLock<std::path::PathBuf> =
    std::sync::LazyLock::new(|| lanlink_lab::tool("lab-net").expect("the lab-net tool"));

/// Acceptance 6: a continuous ping (20/s for 10 s) pod → LAN host, and one
/// pod → pod on the node, lose nothing while the agent is SIGKILLed, stays
/// down for a second and starts again. The restarted agent re-adopts the
/// pinned maps (counters carry on), really swaps new programs into the
/// pinned links (their program ids change), and serves ADD again.
#[test]
fn forwarding_survives_an_agent_sigkill_and_restart() -> Result<()> {
    lanlink_lab::require_root();
    let mut lab = OneNode::start()?;
    let (host, node, agent) = (&lab.host, &lab.node, &mut lab.agent);
    let p1 = add_pod(node, agent, "p1")?;
    let p2 = add_pod(node, agent, "p2")?;
    let links = pods::pinned_links(agent.pin_dir())?;
    ensure!(
        links.len() == 5,
        "expected from_lan + 2 × (from_pod, to_pod): {links:?}"
    );
    let ids_before: Vec<u64> = links
        .iter()
        .map(|l| pods::pinned_prog_id(&agent.pin_dir().join("links").join(l)))
        .collect::<Result<_>>()?;

    let dir = LabDir::new("pings")?;
    let (log1, log2) = (dir.path().join("p1.log"), dir.path().join("p2.log"));
    let ping1 = BgPing::start(&p1.ns, host.ip(), &log1)?;
    let ping2 = BgPing::start(&p2.ns, p1.ip()?, &log2)?;
    // And a broadcast stream from the LAN (fan-out through FLOOD), 20/s.
    let bcast = lanlink_lab::traffic::Tool::spawn(
        &p2.ns,
        &LAB_NET,
        &[
            "udp-recv",
            "--bind",
            "0.0.0.0:9999",
            "--count",
            "200",
            "--timeout-ms",
            "16000",
        ],
    )?;
    let mut sender = host.ns().spawn(&[
        LAB_NET.to_str().expect("a UTF-8 path"),
        "udp-send",
        "--to",
        "198.18.0.255:9999",
        "--text",
        "restart-broadcast",
        "--count",
        "200",
        "--interval-ms",
        "50",
    ])?;
    std::thread::sleep(Duration::from_secs(2));
    agent.kill(Signal::SIGKILL)?;
    ensure!(!agent.is_running());
    let at_kill = pods::stats(agent)?;
    std::thread::sleep(Duration::from_secs(1));
    let counted_while_down = pods::stats(agent)?;
    // 1 s of p1's 20/s pings, forwarded with no agent running.
    pods::ensure_grew(&at_kill, &counted_while_down, "redirect_uplink", 15)?;
    agent.restart()?;
    let s1 = ping1.finish("p1 → LAN host")?;
    let s2 = ping2.finish("p2 → p1")?;
    eprintln!("across SIGKILL + restart:\n{}\n{}", s1.summary, s2.summary);
    sender.wait_timeout(Duration::from_secs(10))?;
    let got = bcast.finish(Duration::from_secs(10))?;
    ensure!(
        got.len() == 200 && got.iter().all(|g| g.data == b"restart-broadcast"),
        "p2 got {} of 200 LAN broadcasts across the restart",
        got.len()
    );
    ensure!(
        s1.transmitted == 200 && s1.all_received(),
        "p1 → LAN host across the restart: {}",
        s1.summary
    );
    ensure!(
        s2.transmitted == 200 && s2.all_received(),
        "p2 → p1 across the restart: {}",
        s2.summary
    );

    // Re-adopted, not rebuilt: the same pins, the counters carried on, and
    // new programs run in the old links.
    let status = pods::agent_status(agent)?;
    ensure!(status["adopted"] == true, "status after restart: {status}");
    ensure!(status["endpoints"] == 2, "status after restart: {status}");
    ensure!(pods::pinned_links(agent.pin_dir())? == links);
    let ids_after: Vec<u64> = links
        .iter()
        .map(|l| pods::pinned_prog_id(&agent.pin_dir().join("links").join(l)))
        .collect::<Result<_>>()?;
    for (i, l) in links.iter().enumerate() {
        ensure!(
            ids_after[i] != ids_before[i],
            "{l} still runs program {} after the restart",
            ids_before[i]
        );
    }
    let after = pods::stats(agent)?;
    pods::ensure_grew(&counted_while_down, &after, "redirect_uplink", 1)?;
    ensure!(
        after
            .iter()
            .all(|(k, v)| !k.starts_with("drop_") || *v == 0),
        "drops: {after:?}"
    );

    // The restarted agent works: a new pod and the old ones talk.
    let p3 = add_pod(node, agent, "p3")?;
    let p = lanlink_lab::ping(&p3.ns, p1.ip()?, 3, Duration::from_secs(5))?;
    ensure!(p.all_received(), "p3 → p1 after the restart: {}", p.summary);

    // A graceful restart (SIGTERM, as a rolling update does) is hitless too.
    let log3 = dir.path().join("p3.log");
    let ping3 = BgPing::start(&p3.ns, host.ip(), &log3)?;
    std::thread::sleep(Duration::from_secs(2));
    agent.restart()?;
    let s3 = ping3.finish("p3 → LAN host")?;
    ensure!(
        s3.transmitted == 200 && s3.all_received(),
        "p3 → LAN host across a SIGTERM restart: {}",
        s3.summary
    );
    Ok(())
}

/// The direct-action cls_bpf filters on `dev` (`tc filter show …
/// ingress|egress`): lanlink's, the only ones in the lab.
fn tc_filters(node: &lanlink_lab::Node, dev: &str, dir: &str) -> Result<Vec<String>> {
    let out = node
        .ns()
        .run_ok(&["tc", "filter", "show", "dev", dev, dir])?;
    Ok(out
        .lines()
        .filter(|l| l.contains(" bpf ") && l.contains("direct-action"))
        .map(str::to_owned)
        .collect())
}

/// Issue 13: with `--attach tc` the programs run as clsact filters (kernels
/// without TCX), forwarding works, and an agent restarted with the other
/// backend takes over without losing a ping, tc → tcx → tc, leaving none
/// of the old attachments behind. DEL removes the pod's filters.
#[test]
fn legacy_tc_attach_forwards_and_switching_backend_loses_nothing() -> Result<()> {
    lanlink_lab::require_root();
    let tc = |mode: &str| vec!["--attach".to_owned(), mode.to_owned()];
    let opts = lanlink_lab::AgentOptions {
        extra_args: tc("tc"),
        ..lanlink_lab::AgentOptions::default()
    };
    let mut lab = OneNode::start_with(lanlink_lab::LanOptions::default(), opts)?;
    let (host, node, agent) = (&lab.host, &lab.node, &mut lab.agent);
    let p1 = add_pod(node, agent, "p1")?;
    let p2 = add_pod(node, agent, "p2")?;
    let veth = p1.result["interfaces"][0]["name"]
        .as_str()
        .context("host veth in the result")?
        .to_owned();
    let attached = |node: &lanlink_lab::Node| -> Result<[usize; 3]> {
        Ok([
            tc_filters(node, "eth0", "ingress")?.len(),
            tc_filters(node, &veth, "ingress")?.len(),
            tc_filters(node, &veth, "egress")?.len(),
        ])
    };
    ensure!(
        pods::agent_status(agent)?["attach"] == "tc",
        "{}",
        pods::agent_status(agent)?
    );
    ensure!(
        attached(node)? == [1, 1, 1],
        "filters: {:?}",
        attached(node)?
    );
    for (ns, to) in [(&p1.ns, host.ip()), (&p2.ns, p1.ip()?)] {
        let p = lanlink_lab::ping(ns, to, 3, Duration::from_secs(5))?;
        ensure!(
            p.all_received(),
            "{} → {to} with tc: {}",
            ns.name(),
            p.summary
        );
    }

    let dir = LabDir::new("pings-tc")?;
    for (i, mode) in ["tcx", "tc"].into_iter().enumerate() {
        let (log1, log2) = (
            dir.path().join(format!("p1-{i}")),
            dir.path().join(format!("p2-{i}")),
        );
        let ping1 = BgPing::start(&p1.ns, host.ip(), &log1)?;
        let ping2 = BgPing::start(&p2.ns, p1.ip()?, &log2)?;
        std::thread::sleep(Duration::from_secs(2));
        agent.set_extra_args(tc(mode));
        agent.restart()?;
        let s1 = ping1.finish("p1 → LAN host")?;
        let s2 = ping2.finish("p2 → p1")?;
        for (s, what) in [(&s1, "p1 → LAN host"), (&s2, "p2 → p1")] {
            ensure!(
                s.transmitted == 200 && s.all_received(),
                "{what} across the switch to {mode}: {}",
                s.summary
            );
        }
        ensure!(
            pods::agent_status(agent)?["attach"] == mode,
            "{}",
            pods::agent_status(agent)?
        );
        let want = if mode == "tc" { [1, 1, 1] } else { [0, 0, 0] };
        ensure!(
            attached(node)? == want,
            "filters after the switch to {mode}: {:?}",
            attached(node)?
        );
        // Every pin is of the running backend: links under TCX.
        for l in pods::pinned_links(agent.pin_dir())? {
            let pin = agent.pin_dir().join("links").join(&l);
            let is_link = pods::bpftool_json("link", "show", &pin).is_ok();
            ensure!(is_link == (mode == "tcx"), "{l} after the switch to {mode}");
        }
    }

    pods::del_pod(node, agent, &p1)?;
    ensure!(
        tc_filters(node, "eth0", "ingress")?.len() == 1,
        "the uplink keeps its filter"
    );
    ensure!(
        !pods::pinned_links(agent.pin_dir())?
            .iter()
            .any(|l| l.ends_with(&veth)),
        "pins of the deleted pod remain"
    );
    Ok(())
}
