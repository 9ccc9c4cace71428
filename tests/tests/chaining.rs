//! lanlink chained with the reference `tuning` plugin, run as libcni runs a
//! conflist: ADD through every plugin in order with `prevResult`, CHECK and
//! DEL (in reverse) with the cached result.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use cni_common::*;
use lanlink_lab::pods::host_veths;
use lanlink_lab::{PodNet, bin_dir};
use serde_json::{Value, json};

mod cni_common;

// ---------------------------------------------------------------------------
// Chaining, as libcni runs a conflist.

/// The netconf libcni gives plugin `i` of a conflist: the plugin's own
/// object plus the list's `name` and `cniVersion`, and `prevResult` when
/// there is one.
fn plugin_conf(list: &Value, i: usize, prev: Option<&Value>) -> Value {
    let mut conf = list["plugins"][i].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    conf
}

fn plugin_path(list: &Value, i: usize) -> PathBuf {
    match list["plugins"][i]["type"].as_str() {
        Some("lanlink") => bin_dir().join(lanlink_lab::CNI_BIN),
        Some(other) => Path::new("/usr/lib/cni").join(other),
        None => PathBuf::from("/nonexistent"),
    }
}

/// ADD through every plugin in order, each getting the previous result.
fn list_add(lab: &Lab, list: &Value, id: &str, ns: &Path) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for i in 0..list["plugins"].as_array().map_or(0, Vec::len) {
        let conf = plugin_conf(list, i, prev.as_ref());
        let out = exec_plugin(
            &lab.node,
            &plugin_path(list, i),
            &runtime_env("ADD", id, Some(ns)),
            conf.to_string().as_bytes(),
        )?;
        prev = Some(
            out.ok()
                .with_context(|| format!("ADD plugin {i}; agent log:\n{}", lab.agent.log()))?,
        );
    }
    prev.context("empty conflist")
}

/// CHECK (or DEL, in reverse) through every plugin with the cached result.
fn list_run(
    lab: &Lab,
    list: &Value,
    command: &str,
    id: &str,
    ns: &Path,
    cached: &Value,
) -> Result<()> {
    let n = list["plugins"].as_array().map_or(0, Vec::len);
    let order: Vec<usize> = if command == "DEL" {
        (0..n).rev().collect()
    } else {
        (0..n).collect()
    };
    for i in order {
        let conf = plugin_conf(list, i, Some(cached));
        exec_plugin(
            &lab.node,
            &plugin_path(list, i),
            &runtime_env(command, id, Some(ns)),
            conf.to_string().as_bytes(),
        )?
        .ok_silent()
        .with_context(|| format!("{command} plugin {i} ({})", list["plugins"][i]["type"]))?;
    }
    Ok(())
}

#[test]
fn chained_with_the_tuning_plugin() -> Result<()> {
    let lab = lab()?;
    ensure!(
        Path::new(TUNING).is_file(),
        "{TUNING} is missing (containernetworking-plugins)"
    );
    let data_dir = lanlink_lab::cleanup::LabDir::new("tuning")?;
    const SYSCTL: &str = "net.ipv4.conf.eth0.arp_notify";
    // tuning (1.1.1) speaks up to 1.0.0, so the list is 1.0.0.
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "lanlink-lab",
        "plugins": [
            PodNet::primary().plugin(&lab.agent),
            {
                "type": "tuning",
                "sysctl": {SYSCTL: "1"},
                "dataDir": data_dir.path(),
            }
        ]
    });
    let ns = lab.node.pod_netns("tuned")?;
    let id = format!("{}-tuned", ns.name());
    let result = list_add(&lab, &list, &id, ns.path())?;
    // The sysctl is set in the pod, on lanlink's interface.
    ensure!(ns.sysctl_get(SYSCTL)? == "1", "tuning did not set {SYSCTL}");
    // The final result is lanlink's, passed through tuning.
    ensure!(result["cniVersion"] == "1.0.0", "{result}");
    let mac = result["interfaces"][1]["mac"]
        .as_str()
        .context("no pod interface in the final result")?
        .to_owned();
    ensure!(ns.mac("eth0")? == mac);
    let address = result["ips"][0]["address"].as_str().context("no address")?;
    let lease = lab.lan.wait_for_lease(&mac, Duration::from_secs(5))?;
    ensure!(
        address == format!("{}/24", lease.ip),
        "{address} vs {lease:?}"
    );

    // CHECK through the list passes, and fails when the sysctl drifts.
    list_run(&lab, &list, "CHECK", &id, ns.path(), &result)?;
    ns.sysctl(SYSCTL, "0")?;
    ensure!(
        list_run(&lab, &list, "CHECK", &id, ns.path(), &result).is_err(),
        "CHECK passed with {SYSCTL} changed behind tuning's back"
    );
    ns.sysctl(SYSCTL, "1")?;
    list_run(&lab, &list, "CHECK", &id, ns.path(), &result)?;

    // DEL in reverse order: tuning, then lanlink.
    list_run(&lab, &list, "DEL", &id, ns.path(), &result)?;
    ensure!(host_veths(&lab.node)?.is_empty(), "veth left after DEL");
    ensure!(map_entries(&lab.agent, "EP_BY_IF")? == 0);
    lab.lan.wait_for_no_lease(&mac, Duration::from_secs(5))?;
    Ok(())
}

/// lanlink chained with the reference `portmap` plugin (the README's
/// "followed by reference plugins (`tuning`, `portmap`)"): a hostPort
/// mapping in `runtimeConfig`, as libcni passes it to a plugin with the
/// `portMappings` capability, reaches the pod from a LAN host through the
/// node's address (DNAT; portmap's masquerade of its own subnet, the LAN,
/// makes the pod see the node as the client), and
/// portmap's DEL removes its rules, after which the hostPort answers
/// nothing. Before the ADD the same connection fails: the control that the
/// mapping, not something else, carries it.
#[test]
fn chained_with_the_portmap_plugin() -> Result<()> {
    use lanlink_lab::nssock::{TcpServer, tcp_connect};
    use std::net::SocketAddrV4;
    const PORTMAP: &str = "/usr/lib/cni/portmap";
    const HOST_PORT: u16 = 18080;
    let lab = lab()?;
    ensure!(
        Path::new(PORTMAP).is_file(),
        "{PORTMAP} is missing (containernetworking-plugins)"
    );
    let mapping = json!([{"hostPort": HOST_PORT, "containerPort": 8080, "protocol": "tcp"}]);
    // portmap (1.1.1) speaks up to 1.0.0, so the list is 1.0.0.
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "lanlink-lab",
        "plugins": [
            PodNet::primary().plugin(&lab.agent),
            {
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "runtimeConfig": {"portMappings": mapping},
            }
        ]
    });
    let target = SocketAddrV4::new(NODE_IP, HOST_PORT);
    let ns = lab.node.pod_netns("mapped")?;
    let server = TcpServer::start(&ns, 8080, "mapped\n", Duration::from_secs(60))?;
    let unmapped = tcp_connect(lab.host.ns(), target, Duration::from_secs(2))?;
    ensure!(
        unmapped.is_err(),
        "{target} answered before the mapping: {unmapped:?}"
    );

    let id = format!("{}-mapped", ns.name());
    let result = list_add(&lab, &list, &id, ns.path())?;
    let nat = lab.node.ns().run_ok(&["iptables", "-t", "nat", "-S"])?;
    ensure!(
        nat.contains("CNI-HOSTPORT-DNAT"),
        "portmap wrote no DNAT chain:\n{nat}"
    );
    let c = tcp_connect(lab.host.ns(), target, Duration::from_secs(5))?
        .with_context(|| format!("LAN host → {target}; agent log:\n{}", lab.agent.log()))?;
    ensure!(c.received == "mapped\n", "got {:?}", c.received);
    // portmap masquerades connections from the pod's own subnet (its
    // hairpin rule, `-s <subnet of the result's address>`), which for a
    // lanlink pod is the whole LAN: the pod sees the node's address, on the
    // client's port (`"snat": false` would keep the client's address).
    ensure!(
        server.peers() == [SocketAddrV4::new(NODE_IP, c.local.port())],
        "the pod saw {:?}, the LAN host connected from {}",
        server.peers(),
        c.local
    );

    list_run(&lab, &list, "DEL", &id, ns.path(), &result)?;
    let nat = lab.node.ns().run_ok(&["iptables", "-t", "nat", "-S"])?;
    ensure!(
        !nat.lines()
            .any(|l| l.contains(&format!("--dport {HOST_PORT}"))),
        "portmap's rules left after DEL:\n{nat}"
    );
    ensure!(host_veths(&lab.node)?.is_empty(), "veth left after DEL");
    let after = tcp_connect(lab.host.ns(), target, Duration::from_secs(2))?;
    ensure!(after.is_err(), "{target} answered after DEL: {after:?}");
    Ok(())
}
