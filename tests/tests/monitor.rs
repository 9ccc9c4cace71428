//! `lanlinkd monitor` (issue 12): a pod that sends from an address it does
//! not own shows up live, with the drop reason, the pod and the forged
//! address, in every client listening (JSON and human lines); the programs
//! report drops only while clients listen (`MONITOR[0]` counts them, back to
//! 0 once they are gone).

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use lanlink_lab::pods::{self, add_pod};
use lanlink_lab::{AGENT_BIN, Agent, OneNode, ROUTER, bin_dir, cmd, ping, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

/// An address in the lab's range the pod was never given.
const FORGED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);

/// `lanlinkd monitor <args>` against `agent`'s socket, run in the node's
/// namespace as an operator would.
fn monitor(lab: &OneNode, args: &[&str]) -> Command {
    let mut c = lab.node.ns().command(&[]);
    c.arg(bin_dir().join(AGENT_BIN))
        .arg("monitor")
        .args(args)
        .arg("--socket")
        .arg(lab.agent.socket());
    c
}

/// `MONITOR[0]`: the clients the agent counts.
fn clients(agent: &Agent) -> Result<u32> {
    pods::array_u32(agent.pin_dir(), "MONITOR")?
        .first()
        .copied()
        .context("MONITOR has no entry")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_forged_source_shows_up_live_in_every_monitor_client() -> Result<()> {
    lanlink_lab::require_root();
    let mut lab = OneNode::start()?;
    let (node, agent) = (&lab.node, &lab.agent);
    let pod = add_pod(node, agent, "spoofer")?;
    // The router's MAC is resolved from the pod's own address first, so
    // the forged pings below need no ARP (whose sender address would be
    // the forged one: a drop_spoof_arp instead).
    let p = ping(&pod.ns, ROUTER, 1, Duration::from_secs(5))?;
    ensure!(p.all_received(), "pod → router: {}", p.summary);
    pod.ns
        .ip(&["addr", "add", &format!("{FORGED}/32"), "dev", "eth0"])?;
    ensure!(clients(agent)? == 0, "nobody listens yet");

    let (json, human) = std::thread::scope(|s| -> Result<(Output, Output)> {
        let json = s.spawn(|| {
            cmd::run(
                &mut monitor(&lab, &["--json", "--count", "1", "--timeout", "10"]),
                Duration::from_secs(20),
            )
        });
        let human = s.spawn(|| {
            cmd::run(
                &mut monitor(&lab, &["--count", "1", "--timeout", "10"]),
                Duration::from_secs(20),
            )
        });
        wait_until(Duration::from_secs(5), "both monitors to subscribe", || {
            Ok((clients(agent)? == 2).then_some(()))
        })
        .with_context(|| format!("agent log:\n{}", agent.log()))?;
        let out = pod.ns.run_timeout(
            &[
                "ping",
                "-n",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "1",
                "-I",
                &FORGED.to_string(),
                &ROUTER.to_string(),
            ],
            Duration::from_secs(10),
        )?;
        eprintln!("forged ping: {}", stdout(&out));
        let json = json.join().expect("the JSON monitor thread")?;
        let human = human.join().expect("the human monitor thread")?;
        Ok((json, human))
    })?;
    let logs = |out: &Output| {
        format!(
            "exit {}; stdout:\n{}stderr:\n{}agent log:\n{}",
            out.status,
            stdout(out),
            String::from_utf8_lossy(&out.stderr),
            agent.log()
        )
    };
    ensure!(json.status.success(), "monitor --json: {}", logs(&json));
    ensure!(human.status.success(), "monitor: {}", logs(&human));

    let lines: Vec<&str> = std::str::from_utf8(&json.stdout)?.lines().collect();
    eprintln!("monitor --json: {lines:?}");
    ensure!(lines.len() == 1, "one line: {}", logs(&json));
    let event: Value = serde_json::from_str(lines[0])?;
    ensure!(
        event["reason"] == "drop_spoof_ip"
            && event["namespace"] == "default"
            && event["pod"] == "spoofer"
            && event["containerId"] == pod.container_id
            && event["ifname"] == "eth0"
            && event["srcMac"] == pod.mac
            && event["ethertype"] == "0x0800"
            && event["src"] == FORGED.to_string()
            && event["dst"] == ROUTER.to_string()
            && event["proto"] == 1
            && event["icmpType"] == 8,
        "{event}"
    );
    let host_veth = event["hostVeth"].as_str().context("hostVeth")?;
    ensure!(host_veth.starts_with("ll"), "{event}");

    let text = stdout(&human);
    eprintln!("monitor: {text}");
    let expected = format!(
        "drop_spoof_ip default/spoofer (eth0, {host_veth}) {} → ",
        pod.mac
    );
    ensure!(
        text.contains(&expected) && text.contains(&format!("{FORGED} → {ROUTER} proto 1 type 8")),
        "expected `{expected}…{FORGED} → {ROUTER} proto 1 type 8`: {}",
        logs(&human)
    );

    // Both clients left: the agent noticed and switched the reports off.
    wait_until(Duration::from_secs(5), "MONITOR[0] back to 0", || {
        Ok((clients(agent)? == 0).then_some(()))
    })?;

    // A client still listening when the agent stops: its stream ends, the
    // agent exits within its grace period (not killed), and the reports are
    // off (the maps stay pinned for the next agent).
    let mut listening = lanlink_lab::cmd::BgProcess::spawn(
        monitor(&lab, &["--json", "--timeout", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "lanlinkd monitor",
    )?;
    wait_until(Duration::from_secs(5), "the monitor to subscribe", || {
        Ok((clients(&lab.agent)? == 1).then_some(()))
    })?;
    let status = lab.agent.kill(Signal::SIGTERM)?;
    ensure!(
        status.success(),
        "the agent did not stop cleanly with a monitor client ({status}):\n{}",
        lab.agent.log()
    );
    ensure!(clients(&lab.agent)? == 0, "MONITOR[0] left on");
    let status = listening
        .wait_timeout(Duration::from_secs(5))?
        .context("the monitor did not end with the agent")?;
    ensure!(
        !status.success(),
        "the stream's end is an error for the CLI"
    );
    Ok(())
}
