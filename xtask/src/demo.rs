//! `cargo xtask demo`: a lab LAN with a real DHCP server, one node running
//! `lanlinkd`, and three pods added through the `lanlink` CNI plugin exactly
//! as a runtime would. Prints each pod's lease, the pods pinging the LAN
//! router and each other, and the endpoint map, then deletes the pods and
//! removes the lab (also on error or Ctrl-C).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use lanlink_common::map_names::EP_BY_MAC;
use lanlink_lab::{
    Agent, AgentOptions, CniCall, Lan, LanOptions, NetNs, Node, ROUTER, cni, lab_netconf, ping,
};
use serde_json::Value;

use crate::{build, setup};

/// The node's address on the LAN.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

/// Pods the demo adds.
const PODS: usize = 3;

/// DHCP lease time the LAN hands out.
const LEASE_SECS: u32 = 600;

/// A pod of the demo: its namespace and what ADD returned.
struct Pod {
    name: String,
    container_id: String,
    ns: NetNs,
    ip: Option<Ipv4Addr>,
}

/// `cargo xtask demo`.
pub fn run() -> Result<()> {
    setup::run_all()?;
    let built = build::run(false)?;
    lanlink_lab::install_signal_handler();
    lanlink_lab::sweep_leftovers();
    let result = demo(&built.bin_dir);
    // Every guard is dropped by now: the lab is gone whatever happened.
    println!("\n== lab removed");
    result
}

fn heading(text: &str) {
    println!("\n== {text}");
}

fn demo(bin_dir: &Path) -> Result<()> {
    heading("LAN: bridge br0, router 198.18.0.1, dnsmasq DHCP 198.18.0.100-199");
    let lan = Lan::new(LanOptions {
        lease_secs: LEASE_SECS,
        ..LanOptions::default()
    })?;
    println!("LAN namespace  {}", lan.ns().name());
    let node = Node::new(&lan, "node1", NODE_IP)?;
    println!(
        "node namespace {} (eth0 {NODE_IP}/24, {})",
        node.name(),
        node.mac()
    );

    heading("agent");
    let agent = Agent::start(&node, AgentOptions::from_bin_dir(bin_dir))?;
    println!(
        "lanlinkd running in {} (pid {:?})",
        node.name(),
        agent.pid()
    );
    println!("socket   {}", agent.socket().display());
    println!("pins     {}", agent.pin_dir().display());
    let netconf = lab_netconf(&agent);

    heading("CNI ADD of three pods");
    let mut pods = Vec::new();
    for i in 1..=PODS {
        let name = format!("pod{i}");
        let ns = node.pod_netns(&name)?;
        let container_id = format!("demo-{}-{name}", std::process::id());
        let call = CniCall::new("ADD", &container_id, Some(ns.path()), netconf.clone())
            .with_args(&format!("K8S_POD_NAMESPACE=demo;K8S_POD_NAME={name}"))
            .in_netns(node.path());
        let out = cni(bin_dir, &call)?;
        let result = out
            .ok()
            .with_context(|| format!("ADD of {name} failed; agent log:\n{}", agent.log()))?;
        let lease = describe_lease(&lan, &ns, &result);
        println!("{name}: {lease}");
        pods.push(Pod {
            name,
            container_id,
            ip: lanlink_lab::pods::result_ip(&result).ok().flatten(),
            ns,
        });
    }

    heading("pods ping the LAN router and each other");
    let mut failures = 0;
    for pod in &pods {
        let mut targets = vec![("router".to_owned(), ROUTER)];
        for other in &pods {
            if let (false, Some(ip)) = (other.name == pod.name, other.ip) {
                targets.push((other.name.clone(), ip));
            }
        }
        for (what, ip) in targets {
            let stats = ping(&pod.ns, ip, 3, Duration::from_secs(5))?;
            let mark = if stats.all_received() { "ok  " } else { "FAIL" };
            println!(
                "{mark} {} -> {what} ({ip}): {}/{} replies, avg {}",
                pod.name,
                stats.received,
                stats.transmitted,
                stats
                    .rtt_avg_ms
                    .map_or("-".to_owned(), |r| format!("{r:.3} ms"))
            );
            if !stats.all_received() {
                failures += 1;
            }
        }
    }

    heading(&format!(
        "endpoint map: bpftool map dump pinned {}/{EP_BY_MAC}",
        agent.pin_dir().display()
    ));
    let map = agent.pin_dir().join(EP_BY_MAC);
    match lanlink_lab::cmd::run(
        Command::new("bpftool")
            .args(["map", "dump", "pinned"])
            .arg(&map),
        lanlink_lab::cmd::SHORT,
    ) {
        Ok(out) => {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Err(e) => println!("cannot run bpftool: {e:#}"),
    }

    // The agent's own view, as an operator sees it.
    for sub in ["leases", "stats"] {
        heading(&format!("lanlinkd {sub}"));
        let out = lanlink_lab::cmd::run(
            Command::new(bin_dir.join(lanlink_lab::AGENT_BIN))
                .arg(sub)
                .arg("--socket")
                .arg(agent.socket()),
            lanlink_lab::cmd::SHORT,
        );
        match out {
            Ok(out) => {
                print!("{}", String::from_utf8_lossy(&out.stdout));
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
                if !out.status.success() {
                    failures += 1;
                }
            }
            Err(e) => {
                println!("cannot run lanlinkd {sub}: {e:#}");
                failures += 1;
            }
        }
    }

    heading("CNI DEL of the pods");
    for pod in &pods {
        let call = CniCall::new(
            "DEL",
            &pod.container_id,
            Some(pod.ns.path()),
            netconf.clone(),
        )
        .in_netns(node.path());
        let out = cni(bin_dir, &call)?;
        match out.ok() {
            Ok(_) => println!("{}: deleted", pod.name),
            Err(e) => {
                println!("{}: DEL failed: {e:#}", pod.name);
                failures += 1;
            }
        }
    }
    let left = lan.leases();
    println!("leases left in dnsmasq: {}", left.len());

    if failures > 0 {
        bail!("{failures} step(s) of the demo failed");
    }
    Ok(())
}

/// `IP, MAC, lease time` of a pod from its CNI result; the lease time comes
/// from the result's `lease` (the agent's extension) when present, else from
/// dnsmasq's lease file.
fn describe_lease(lan: &Lan, ns: &NetNs, result: &Value) -> String {
    let address = result["ips"][0]["address"].as_str().unwrap_or("?");
    let gateway = result["ips"][0]["gateway"].as_str().unwrap_or("-");
    let mac = result["interfaces"]
        .as_array()
        .and_then(|ifs| ifs.iter().find(|i| i.get("sandbox").is_some()))
        .and_then(|i| i["mac"].as_str())
        .map(str::to_owned)
        .or_else(|| ns.mac("eth0").ok())
        .unwrap_or_else(|| "?".to_owned());
    let lease_secs = result["lease"]["leaseSecs"].as_u64().or_else(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let lease = lan
            .leases()
            .into_iter()
            .find(|l| l.mac == mac.to_ascii_lowercase())?;
        Some(lease.expiry.saturating_sub(now))
    });
    let lease = lease_secs.map_or("?".to_owned(), |s| format!("{s} s"));
    format!("IP {address}  gateway {gateway}  MAC {mac}  lease {lease}")
}
