//! The operator's side of the agent, the CLI: `lanlinkd status`,
//! `endpoints`, `leases`, `flows` and `stats`, as tables and JSON, and the
//! pinned-map fallback with the agent down.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use cni_common::*;
use lanlink_lab::{AgentOptions, ping};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

mod cni_common;

#[test]
fn cli_tables_json_and_pinned_maps_with_the_agent_down() -> Result<()> {
    let mut lab = lab_with(AgentOptions {
        extra_args: vec!["--log".into(), "warn".into()],
        ..AgentOptions::default()
    })?;
    let conf = netconf(&lab, "1.1.0");
    let pod = add(&lab, "listed", &conf)?;
    // A flow through the host stack (node → pod), which to-pod learns.
    let p = ping(lab.node.ns(), pod.ip, 3, Duration::from_secs(5))?;
    ensure!(p.all_received(), "node → pod: {}", p.summary);

    // Every command: a table with a header, and JSON.
    let status = cli(&lab, &["status"])?;
    eprintln!("{status}");
    ensure!(
        status.starts_with("FIELD") && status.contains("ready"),
        "{status}"
    );
    let status: Value = serde_json::from_str(&cli(&lab, &["status", "--json"])?)?;
    ensure!(
        status["ready"] == true && status["endpoints"] == 1,
        "{status}"
    );

    let table = cli(&lab, &["endpoints"])?;

    eprintln!("{table}");
    ensure!(
        table.starts_with("CONTAINER")
            && table.contains(&pod.mac)
            && table.contains(&pod.host_veth),
        "{table}"
    );
    let eps: Value = serde_json::from_str(&cli(&lab, &["endpoints", "--json"])?)?;
    ensure!(
        eps[0]["mac"] == pod.mac && eps[0]["containerId"] == pod.id,
        "{eps}"
    );

    let table = cli(&lab, &["leases"])?;

    eprintln!("{table}");
    ensure!(
        table.starts_with("ADDRESS") && table.contains(&pod.ip.to_string()),
        "{table}"
    );
    let leases: Value = serde_json::from_str(&cli(&lab, &["leases", "--json"])?)?;
    ensure!(
        leases[0]["state"] == "bound" && leases[0]["mac"] == pod.mac,
        "{leases}"
    );

    let table = cli(&lab, &["flows"])?;

    eprintln!("{table}");
    ensure!(table.starts_with("PROTO"), "{table}");
    let flows: Value = serde_json::from_str(&cli(&lab, &["flows", "--json"])?)?;
    let flow = flows
        .as_array()
        .and_then(|f| f.iter().find(|f| f["pod"] == pod.ip.to_string()))
        .with_context(|| format!("no flow of the pod in {flows}"))?;
    ensure!(
        flow["proto"] == "icmp"
            && flow["peer"] == NODE_IP.to_string()
            && flow["hostVeth"] == pod.host_veth,
        "{flow}"
    );
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with("icmp") && l.contains(&pod.ip.to_string())),
        "{table}"
    );

    let table = cli(&lab, &["stats"])?;

    eprintln!("{table}");
    ensure!(
        table.starts_with("VERDICT") && table.contains("redirect_uplink"),
        "{table}"
    );
    let stats: Value = serde_json::from_str(&cli(&lab, &["stats", "--json"])?)?;
    let packets = |stats: &Value, verdict: &str| {
        stats
            .as_array()
            .and_then(|s| s.iter().find(|r| r["verdict"] == verdict))
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or(0)
    };
    ensure!(packets(&stats, "flow_learnt") >= 1, "{stats}");

    // `--log warn`: the agent logged nothing at info.
    ensure!(
        !lab.agent.log().contains(" INFO "),
        "--log warn still logs info:\n{}",
        lab.agent.log()
    );

    // The agent stops; the pinned maps still answer.
    lab.agent.kill(Signal::SIGTERM)?;
    let p = ping(&pod.ns, ROUTER, 3, Duration::from_secs(5))?;
    ensure!(p.all_received(), "{}", p.summary);
    let eps: Value = serde_json::from_str(&cli(&lab, &["endpoints", "--json"])?)?;
    ensure!(
        eps[0]["mac"] == pod.mac
            && eps[0]["address"] == pod.ip.to_string()
            && eps[0]["hostVeth"] == pod.host_veth
            && eps[0]["flags"] == json!(["agent-dhcp"]),
        "{eps}"
    );
    let table = cli(&lab, &["endpoints"])?;
    eprintln!("{table}");
    ensure!(
        table.starts_with("IFINDEX") && table.contains(&pod.mac),
        "{table}"
    );
    let flows: Value = serde_json::from_str(&cli(&lab, &["flows", "--json"])?)?;
    ensure!(
        flows
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["pod"] == pod.ip.to_string())),
        "{flows}"
    );
    let down_stats: Value = serde_json::from_str(&cli(&lab, &["stats", "--json"])?)?;
    ensure!(
        packets(&down_stats, "redirect_uplink") >= packets(&stats, "redirect_uplink") + 3,
        "the pinned counters did not count the pings made while the agent was down"
    );
    let status = cli_raw(&lab, &["status", "--json"])?;
    ensure!(
        !status.status.success(),
        "status must fail with the agent down"
    );
    let status: Value = serde_json::from_slice(&status.stdout)?;
    ensure!(
        status["agentReachable"] == false && status["pinnedEndpoints"] == 1,
        "{status}"
    );
    ensure!(!cli_raw(&lab, &["leases"])?.status.success());

    lab.agent.restart()?;
    verb(&lab, "DEL", &pod.id, Some(pod.ns.path()), &conf)?.ok_silent()?;
    assert_gone(&lab, &pod)?;
    Ok(())
}
