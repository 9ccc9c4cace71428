//! Real traffic through the attached programs (not `BPF_PROG_TEST_RUN`): a
//! pod's network namespace pings the node's IPv6 address, which only the
//! neighbour responder of `from_pod` (issue 16) makes reachable: the
//! pod's neighbour solicitation for it is otherwise flooded out of the
//! uplink, where the node's own stack never hears it.
//!
//! The node is the test's private namespace (`with_netns`), with its
//! address 2001:2::1/64 on the uplink `h0`; the pod is a second namespace
//! held by a thread of its own, behind the host veth `h1` (`from_pod` at its
//! ingress, `to_pod` at its egress, as the agent attaches them), registered
//! as the agent registers it, its address 2001:2::10 in `V6_OWNERS` and the
//! /128 route to it via `h1` in the node. First without the node address in
//! `HOST_ADDRS6` (the ping must fail: the control that shows the responder
//! is what makes it work), then with it (every echo answered, the pod's
//! neighbour entry is the host veth's MAC, `nd_reply` counted).
//!
//! Needs root and `LANLINK_EBPF_OBJ` (set by `cargo xtask test`).

use std::process::Command;
use std::sync::mpsc;

use lanlink_common::{StatSlot, Verdict, endpoint_flags};
use lanlink_progtest::{
    Endpoint, Globals, Harness, LoadOptions, Program, error_chain,
    netns::{ip, with_netns, write_sysctl},
};

const NODE_ADDR: &str = "2001:2::1";
const POD_ADDR: &str = "2001:2::10";
const POD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0f, 0x01];
/// Echo requests of the ping that must all be answered.
const PINGS: u32 = 3;

fn mac_str(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

fn octets(addr: &str) -> [u8; 16] {
    addr.parse::<std::net::Ipv6Addr>()
        .expect("a literal address")
        .octets()
}

/// Panics with the error chain: a setup step of the test failed.
fn must<T>(r: Result<T, lanlink_progtest::HarnessError>) -> T {
    r.unwrap_or_else(|e| panic!("{}", error_chain(&e)))
}

/// Turns IPv6 on for `dev` (the test namespace creates links with it off)
/// without duplicate address detection, which would hold the addresses
/// tentative for a second.
fn ipv6_on(dev: &str) {
    must(write_sysctl(
        &format!("/proc/sys/net/ipv6/conf/{dev}/accept_dad"),
        "0",
    ));
    must(write_sysctl(
        &format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"),
        "0",
    ));
}

/// `ping -6` of `addr` from this thread's namespace, `count` echoes 200 ms
/// apart, bounded by `timeout`: the number of replies and the output.
fn ping6(addr: &str, count: u32) -> (u32, String) {
    let out = Command::new("timeout")
        .args(["10", "ping", "-6", "-n", "-i", "0.2", "-W", "2", "-c"])
        .arg(count.to_string())
        .arg(addr)
        .output()
        .expect("run ping (iputils) under timeout");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "3 packets transmitted, 3 received, …"
    let received = text
        .split(", ")
        .find_map(|part| part.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no summary in the ping output:\n{text}"));
    (received, text)
}

/// The pod's neighbour entry for `addr` (`ip -6 neigh show`).
fn neighbour(addr: &str) -> String {
    let out = Command::new("ip")
        .args(["-6", "neigh", "show", addr, "dev", "p1"])
        .output()
        .expect("run ip neigh");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn nd_replies(harness: &Harness) -> u64 {
    let at = StatSlot::ALL
        .iter()
        .position(|s| *s == Verdict::NdReply.slot())
        .expect("nd_reply is a slot");
    must(harness.counters())[at].packets
}

/// What the pod thread is told to do next.
enum Step {
    Ping,
    Done,
}

#[test]
fn pod_pings_the_node_ipv6_address_through_the_neighbour_responder() {
    must(with_netns(2, |links| {
        let (uplink, host) = (&links[0], &links[1]);
        // The node: IPv6 on the uplink with its address, and on the host
        // veth (its link-local address resolves the pod).
        ip(&["link", "set", &host.host, "address", &mac_str(HOST_MAC)])?;
        ip(&["link", "set", &host.peer, "address", &mac_str(POD_MAC)])?;
        ipv6_on(&uplink.host);
        ipv6_on(&host.host);
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{NODE_ADDR}/64"),
            "dev",
            &uplink.host,
            "nodad",
        ])?;

        let mut harness = Harness::load_with(
            Globals {
                uplink_ifindex: uplink.host_ifindex,
                config_flags: 0,
            },
            LoadOptions {
                record_redirects: false,
                ..LoadOptions::default()
            },
        )?;
        harness.add_endpoint(&Endpoint {
            ifindex: host.host_ifindex,
            mac: POD_MAC,
            host_mac: HOST_MAC,
            ipv4: [198, 18, 0, 11],
            flags: endpoint_flags::AGENT_DHCP,
        })?;
        harness.set_v6_owner(octets(POD_ADDR), host.host_ifindex)?;
        harness.attach(Program::FromPod, &host.host)?;
        harness.attach(Program::ToPod, &host.host)?;
        ip(&[
            "-6",
            "route",
            "add",
            &format!("{POD_ADDR}/128"),
            "dev",
            &host.host,
        ])?;

        // The pod: a namespace of its own, held by its thread.
        let (tid_tx, tid_rx) = mpsc::channel::<i32>();
        let (step_tx, step_rx) = mpsc::channel::<Step>();
        let (result_tx, result_rx) = mpsc::channel::<(u32, String, String)>();
        let peer = host.peer.clone();
        std::thread::scope(|s| {
            let pod = s.spawn(move || {
                // SAFETY: plain syscalls; only this thread changes namespace.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    panic!("unshare: {}", std::io::Error::last_os_error());
                }
                // SAFETY: plain syscall.
                tid_tx.send(unsafe { libc::gettid() }).unwrap();
                // Wait for the veth to arrive.
                let Ok(Step::Ping) = step_rx.recv() else {
                    return;
                };
                must(ip(&["link", "set", "lo", "up"]));
                ipv6_on(&peer);
                must(ip(&["link", "set", &peer, "up"]));
                must(ip(&[
                    "-6",
                    "addr",
                    "add",
                    &format!("{POD_ADDR}/64"),
                    "dev",
                    &peer,
                    "nodad",
                ]));
                while let Ok(Step::Ping) = step_rx.recv() {
                    // Each attempt resolves afresh.
                    must(ip(&["-6", "neigh", "flush", "dev", &peer]));
                    let (received, text) = ping6(NODE_ADDR, PINGS);
                    result_tx
                        .send((received, text, neighbour(NODE_ADDR)))
                        .unwrap();
                }
            });
            let tid = tid_rx.recv().expect("the pod thread's id");
            let pod_ns = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
            must(ip(&["link", "set", &host.peer, "netns", &pod_ns]));
            must(ip(&["link", "set", &host.host, "up"]));
            step_tx.send(Step::Ping).unwrap();

            // Without the node address in HOST_ADDRS6 nothing answers.
            step_tx.send(Step::Ping).unwrap();
            let (received, text, neigh) = result_rx.recv().expect("the pod's first ping");
            assert_eq!(
                received, 0,
                "reached the node without the responder (neighbour {neigh:?}):\n{text}"
            );
            assert_eq!(nd_replies(&harness), 0);

            // With it, every echo is answered through the host veth's MAC.
            must(harness.add_host_addr6(octets(NODE_ADDR)));
            step_tx.send(Step::Ping).unwrap();
            let (received, text, neigh) = result_rx.recv().expect("the pod's second ping");
            step_tx.send(Step::Done).unwrap();
            pod.join().expect("the pod thread");
            assert_eq!(received, PINGS, "pod → node over IPv6:\n{text}");
            assert!(
                neigh.contains(&format!("lladdr {}", mac_str(HOST_MAC))),
                "the pod's neighbour entry for {NODE_ADDR}: {neigh:?}"
            );
            let replies = nd_replies(&harness);
            assert!(replies >= 1, "nd_reply counted {replies}");
            eprintln!("{text}\nneighbour: {neigh}; nd_reply {replies}");
        });
        Ok::<(), lanlink_progtest::HarnessError>(())
    }))
    .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
}
