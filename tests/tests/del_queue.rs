//! DEL never waits on a stopped agent (issue 15 item 5): with the agent
//! SIGKILLed, the real plugin records the DEL in the agent's deletion queue
//! and exits 0 at once, instead of code 11 for as long as the agent is away
//! (kubelet would keep the pod Terminating). The restarted agent runs the
//! queue before it serves: the endpoint, the lease on the DHCP server and
//! the host veth are gone, and the queue is empty.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use lanlink_api::client::AgentClient;
use lanlink_api::del_queue::{DIR_NAME, entry_file_name};
use lanlink_lab::pods::{add_pod_with, del_pod, host_veths};
use lanlink_lab::{OneNode, lab_netconf};
use nix::sys::signal::Signal;
use serde_json::json;

/// The queue's entries (`*.json`), by file name.
fn entries(queue: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(queue).with_context(|| format!("list {}", queue.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[test]
fn del_with_the_agent_killed_is_queued_and_run_at_its_restart() -> Result<()> {
    lanlink_lab::require_root();
    let mut lab = OneNode::start()?;
    // The agent's default queue, `<state-dir>/del-queue`, named in the
    // netconf as a deployment with a non-default state dir does.
    let queue = lab.agent.state_dir().join(DIR_NAME);
    let mut netconf = lab_netconf(&lab.agent);
    netconf["delQueueDir"] = json!(queue);
    let pod = add_pod_with(&lab.node, &lab.agent, "p1", netconf)?;
    lab.lan.wait_for_lease(&pod.mac, Duration::from_secs(5))?;
    ensure!(queue.is_dir(), "the agent makes its queue at start");
    ensure!(host_veths(&lab.node)?.len() == 1);

    lab.agent.kill(Signal::SIGKILL)?;
    let started = Instant::now();
    del_pod(&lab.node, &lab.agent, &pod).context("DEL with the agent killed")?;
    let took = started.elapsed();
    eprintln!("DEL with the agent SIGKILLed: exit 0 in {took:?}");
    ensure!(
        took < Duration::from_secs(2),
        "DEL took {took:?} with the agent down"
    );
    let want = entry_file_name(&pod.container_id, "eth0")?;
    ensure!(
        entries(&queue)? == [want.clone()],
        "queue {:?}, want [{want}]",
        entries(&queue)?
    );
    // Nothing was released yet: only the agent talks DHCP.
    ensure!(lab.lan.leases().iter().any(|l| l.mac == pod.mac));

    lab.agent.restart()?;
    ensure!(
        entries(&queue)?.is_empty(),
        "queue after the restart: {:?}; agent log:\n{}",
        entries(&queue)?,
        lab.agent.log()
    );
    let eps = AgentClient::new(lab.agent.socket()).endpoints()?;
    ensure!(eps.is_empty(), "endpoints after the restart: {eps:?}");
    lab.lan
        .wait_for_no_lease(&pod.mac, Duration::from_secs(5))?;
    let veths = host_veths(&lab.node)?;
    ensure!(veths.is_empty(), "host veths left: {veths:?}");
    ensure!(
        lab.agent.log().contains("queued DEL done"),
        "agent log:\n{}",
        lab.agent.log()
    );
    // And DEL again (the runtime retrying) is a plain, idempotent DEL.
    del_pod(&lab.node, &lab.agent, &pod)?;
    ensure!(entries(&queue)?.is_empty());
    Ok(())
}
