//! Tests of the lab itself: the LAN, nodes, DHCP, the guards, and that every
//! exit path (drop, panic, signal, crash + sweep) leaves nothing behind.
//! They need root and fail (not skip) without it.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lanlink_lab::cleanup::netns_list;
use lanlink_lab::cmd::pid_alive;
use lanlink_lab::netns::in_netns;
use lanlink_lab::traffic::udhcpc;
use lanlink_lab::{
    Agent, AgentOptions, CniCall, Lan, LanOptions, NetNs, Node, ROUTER, cni, ping, require_root,
    sweep_leftovers,
};
use nix::sys::signal::Signal;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);

fn assert_gone(names: &[String]) {
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// A default LAN with one node on it, `node` at [`NODE_IP`].
fn lan_and_node() -> (Lan, Node) {
    let lan = Lan::new(LanOptions::default()).unwrap();
    let node = Node::new(&lan, "node", NODE_IP).unwrap();
    (lan, node)
}

#[test]
fn node_reaches_the_router() {
    require_root();
    let (_lan, node) = lan_and_node();
    let stats = ping(node.ns(), ROUTER, 3, Duration::from_secs(5)).unwrap();
    assert!(stats.all_received(), "{stats:?}");
    assert!(stats.rtt_avg_ms.is_some());
}

#[test]
fn lan_host_pings_a_node() {
    require_root();
    let (lan, node) = lan_and_node();
    let host = lan.add_host("host", HOST_IP).unwrap();
    let stats = ping(host.ns(), node.ip(), 3, Duration::from_secs(5)).unwrap();
    assert!(stats.all_received(), "{stats:?}");
    // The node's uplink really is on the LAN: the host learnt its MAC.
    let neigh = host
        .ns()
        .ip(&["neigh", "show", &NODE_IP.to_string()])
        .unwrap();
    assert!(neigh.contains(node.mac()), "{neigh}");
}

#[test]
fn dnsmasq_leases_to_a_dhcp_client() {
    require_root();
    let lan = Lan::new(LanOptions {
        lease_secs: 300,
        ..LanOptions::default()
    })
    .unwrap();
    let client = NetNs::new("dhcp-client").unwrap();
    lan.connect(&client, "eth0").unwrap();
    let mac = client.mac("eth0").unwrap();
    let out = udhcpc(
        &client,
        3,
        Path::new("/bin/true"),
        &["-x", "hostname:lab-client"],
        Duration::from_secs(15),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "udhcpc failed: {}\ndnsmasq log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        lan.dhcp_log()
    );
    let lease = lan.wait_for_lease(&mac, Duration::from_secs(5)).unwrap();
    let [a, b, c, d] = lease.ip.octets();
    assert_eq!((a, b, c), (198, 18, 0));
    assert!((100..=199).contains(&d), "{lease:?} outside the pool");
    assert_eq!(lease.hostname.as_deref(), Some("lab-client"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(lease.expiry > now && lease.expiry <= now + 300, "{lease:?}");
    assert!(lan.dhcp_log().contains("DHCPACK(br0)"));
}

#[test]
fn dropping_the_lab_removes_everything() {
    require_root();
    let (lan, node) = lan_and_node();
    let host = lan.add_host("host", HOST_IP).unwrap();
    let pod = node.pod_netns("pod").unwrap();
    let names: Vec<String> = [lan.ns().name(), node.name(), host.ns().name(), pod.name()]
        .map(String::from)
        .to_vec();
    let listed = netns_list();
    for n in &names {
        assert!(listed.contains(n), "{n} missing from {listed:?}");
        assert!(n.starts_with(&format!("ll-{}-", std::process::id())), "{n}");
    }
    let dnsmasq = lan.dnsmasq_pid() as i32;
    let dir = lan.dir().to_owned();
    assert!(pid_alive(dnsmasq) && dir.is_dir());
    // A long-running process inside a namespace must not outlive it either.
    // (Started without a guard, as a daemon the code under test forked would be.)
    let mut sleeper = node
        .ns()
        .command(&["sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    drop((pod, host, node, lan));

    assert_gone(&names);
    assert!(!pid_alive(dnsmasq), "dnsmasq survived");
    let waited = Instant::now();
    let status = sleeper.wait().unwrap();
    assert!(
        !status.success() && waited.elapsed() < Duration::from_secs(5),
        "a process in the node survived"
    );
    assert!(!dir.exists(), "{} survived", dir.display());
}

#[test]
fn a_panic_still_removes_the_lab() {
    require_root();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let (lan, node) = lan_and_node();
        tx.send((
            vec![lan.ns().name().to_owned(), node.name().to_owned()],
            lan.dir().to_owned(),
        ))
        .unwrap();
        panic!("deliberate panic with a lab alive");
    })
    .join();
    assert!(result.is_err(), "the thread should have panicked");
    let (names, dir) = rx.recv().unwrap();
    assert_gone(&names);
    assert!(!dir.exists());
}

#[test]
fn sweep_removes_leftovers_of_dead_runs() {
    require_root();
    // A pid that is certainly dead: a child we already reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    assert!(!pid_alive(dead_pid as i32));

    let name = format!("ll-{dead_pid}-0-crashed");
    let status = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(status.success());
    // A process of the dead run still inside its namespace.
    let mut orphan = in_netns(&PathBuf::from(format!("/run/netns/{name}")))
        .args(["sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let tmp = PathBuf::from(format!("/tmp/ll-{dead_pid}-1-crashed.xyz"));
    std::fs::create_dir_all(tmp.join("state")).unwrap();
    // A name of this (live) run must survive the sweep.
    let ours = NetNs::new("live").unwrap();

    // (A concurrent lab run may sweep it first: check the outcome, not who
    // did it.)
    sweep_leftovers();

    let orphan_status = orphan.wait().unwrap();
    assert!(!netns_list().contains(&name));
    assert!(
        !orphan_status.success(),
        "the orphan should have been killed"
    );
    assert!(!tmp.exists());
    assert!(netns_list().contains(&ours.name().to_owned()));
}

/// Runs only as the child of `a_signal_removes_the_lab`: builds a lab, prints
/// its names, and waits to be signalled.
#[test]
fn signal_helper() {
    if std::env::var_os("LL_SIGNAL_HELPER").is_none() {
        return;
    }
    let (lan, node) = lan_and_node();
    println!(
        "NAMES {} {} {}",
        lan.ns().name(),
        node.name(),
        lan.dir().display()
    );
    std::thread::sleep(Duration::from_secs(30));
    panic!("not signalled within 30 s");
}

#[test]
fn a_signal_removes_the_lab() {
    require_root();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "signal_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LL_SIGNAL_HELPER", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let names: Vec<String> = loop {
        let line = lines.next().expect("helper exited early").unwrap();
        // libtest prints `test signal_helper ... ` before it on the same line.
        if let Some((_, rest)) = line.split_once("NAMES ") {
            break rest.split(' ').map(String::from).collect();
        }
    };
    let (ns_names, dir) = (&names[..2], PathBuf::from(&names[2]));
    assert!(netns_list().contains(&ns_names[0]) && dir.is_dir());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the helper did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    assert_gone(ns_names);
    assert!(!dir.exists());
}

#[test]
fn agent_guard_starts_restarts_and_cleans_up() {
    require_root();
    let (_lan, node) = lan_and_node();
    let opts = AgentOptions {
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_lab-fake-agent"))),
        ..AgentOptions::default()
    };
    let mut agent = Agent::start(&node, opts).unwrap();
    let pin_dir = agent.pin_dir().to_owned();
    let socket = agent.socket();
    assert!(pin_dir.starts_with(lanlink_lab::PIN_ROOT) && pin_dir.is_dir());
    assert!(socket.exists());
    let first = agent.pid().unwrap() as i32;
    // It runs in the node's namespace.
    assert!(node.ns().pids().contains(&first), "{:?}", node.ns().pids());

    let status = agent.kill(Signal::SIGKILL).unwrap();
    assert!(!status.success());
    assert!(!agent.is_running());
    assert!(pin_dir.is_dir(), "pins must survive an agent crash");

    agent.restart().unwrap();
    assert!(agent.is_running());
    assert_ne!(agent.pid().unwrap() as i32, first);
    assert!(agent.log().contains("fake agent serving"));

    let second = agent.pid().unwrap() as i32;
    drop(agent);
    assert!(!pid_alive(second));
    assert!(!pin_dir.exists(), "pin dir left behind");
    assert!(!socket.exists());
}

#[test]
fn agent_start_reports_a_missing_binary() {
    require_root();
    let (_lan, node) = lan_and_node();
    let opts = AgentOptions {
        bin_dir: PathBuf::from("/nonexistent"),
        ..AgentOptions::default()
    };
    let err = Agent::start(&node, opts).unwrap_err();
    assert!(err.to_string().contains("cargo xtask build"), "{err}");
}

#[test]
fn cni_runs_in_the_runtime_namespace() {
    require_root();
    use std::os::unix::fs::PermissionsExt;
    let (_lan, node) = lan_and_node();
    let pod = node.pod_netns("pod").unwrap();
    // A stand-in plugin that reports the runtime's addresses and its env.
    let dir = tempfile::Builder::new()
        .prefix("lanlink-fake-cni.")
        .tempdir()
        .unwrap();
    let plugin = dir.path().join("lanlink");
    std::fs::write(
        &plugin,
        "#!/bin/sh\ncat >/dev/null\nprintf '{\"netns\":\"%s\",\"addrs\":\"%s\"}' \"$CNI_NETNS\" \"$(ip -br -4 addr show dev eth0)\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();

    let call =
        CniCall::new("ADD", "c1", Some(pod.path()), serde_json::json!({})).in_netns(node.path());
    let result = cni(dir.path(), &call).unwrap().ok().unwrap();
    assert_eq!(result["netns"], pod.path().display().to_string());
    assert!(
        result["addrs"].as_str().unwrap().contains("198.18.0.10/24"),
        "{result}"
    );
}

#[test]
fn lab_addresses_outside_the_benchmark_range_are_refused() {
    require_root();
    let lan = Lan::new(LanOptions::default()).unwrap();
    assert!(Node::new(&lan, "node", Ipv4Addr::new(192, 168, 1, 10)).is_err());
    assert!(lan.add_host("host", Ipv4Addr::new(10, 0, 0, 1)).is_err());
}
