//! Per-frame cost of the programs, measured by the kernel: each case runs
//! one frame `--repeat` times in a single `BPF_PROG_TEST_RUN` and the
//! kernel reports the mean time per run. No traffic, no scheduler, no
//! iperf: what changes between two objects is the programs' own work, which
//! is what a change to the programs is to be judged by (the datapath
//! benchmark's rates move 5–10% between runs on a shared machine).
//!
//! ```sh
//! LANLINK_EBPF_OBJ=target/ebpf/bpfel-unknown-none/release/lanlink \
//!     cargo run --release -p lanlink-progtest --example prog_time -- --label after
//! ```
//!
//! Prints one line per case: `label case ns_per_run` (the median of
//! `--rounds` rounds). Needs root, like the tests. Works with objects from
//! before the first-hop guards too (they lack its maps, which the cases do
//! not need).

use std::time::Duration;

use lanlink_common::endpoint_flags;
use lanlink_progtest::{
    Endpoint, LoadOptions, Program,
    frames::{self, IPPROTO_TCP, IPPROTO_UDP},
    in_lab, tc,
};

const LAN_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 0x01];
const LAN_HOST_IP: [u8; 4] = [198, 18, 1, 1];

fn pod_mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x01, n]
}

fn pod_ip(n: u8) -> [u8; 4] {
    [198, 18, 0, 10 + n]
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let label = arg(&args, "--label").unwrap_or_else(|| "object".into());
    let repeat: u32 = arg(&args, "--repeat").map_or(200_000, |v| v.parse().expect("--repeat"));
    let rounds: usize = arg(&args, "--rounds").map_or(5, |v| v.parse().expect("--rounds"));
    assert!(repeat > 0 && rounds > 0 && repeat <= 10_000_000 && rounds <= 100);

    // 64-byte frames on the wire: 14 + 20 + 8 + 18 bytes of payload + FCS.
    let udp64 = frames::udp(40000, 5001, &[0; 18]);
    let tcp_ack = frames::tcp(40000, 5201, 0x10);
    let cases: Vec<(&str, Program, u8, Vec<u8>, u32)> = vec![
        (
            "from_pod udp64 pod->lan",
            Program::FromPod,
            1,
            frames::ipv4_frame(
                LAN_HOST_MAC,
                pod_mac(1),
                pod_ip(1),
                LAN_HOST_IP,
                IPPROTO_UDP,
                &udp64,
            ),
            tc::REDIRECT,
        ),
        (
            "from_pod tcp pod->lan",
            Program::FromPod,
            1,
            frames::ipv4_frame(
                LAN_HOST_MAC,
                pod_mac(1),
                pod_ip(1),
                LAN_HOST_IP,
                IPPROTO_TCP,
                &tcp_ack,
            ),
            tc::REDIRECT,
        ),
        (
            "from_pod tcp pod->pod",
            Program::FromPod,
            1,
            frames::ipv4_frame(
                pod_mac(2),
                pod_mac(1),
                pod_ip(1),
                pod_ip(2),
                IPPROTO_TCP,
                &tcp_ack,
            ),
            tc::REDIRECT,
        ),
        (
            "from_lan udp64 lan->pod",
            Program::FromLan,
            0,
            frames::ipv4_frame(
                pod_mac(1),
                LAN_HOST_MAC,
                LAN_HOST_IP,
                pod_ip(1),
                IPPROTO_UDP,
                &udp64,
            ),
            tc::REDIRECT,
        ),
    ];

    in_lab(2, 0, |lab| {
        lab.reload(
            0,
            LoadOptions {
                record_redirects: false,
                ..LoadOptions::default()
            },
        );
        for n in [1u8, 2] {
            let ep = Endpoint {
                ifindex: lab.pod(usize::from(n)).host_ifindex,
                mac: pod_mac(n),
                host_mac: [0x02, 0, 0, 0, 0x0f, n],
                ipv4: pod_ip(n),
                flags: endpoint_flags::AGENT_DHCP,
            };
            lab.harness.add_endpoint(&ep).expect("register");
        }
        for (name, program, on, frame, want) in &cases {
            let link = if *on == 0 {
                lab.uplink()
            } else {
                lab.pod(usize::from(*on))
            };
            let mut times: Vec<Duration> = (0..rounds)
                .map(|_| {
                    let (code, t) = lab
                        .harness
                        .time_run(*program, frame, link.ctx(), repeat)
                        .expect("test run");
                    assert_eq!(code, *want, "{name}: unexpected verdict");
                    t
                })
                .collect();
            times.sort();
            println!("{label}\t{name}\t{}", times[rounds / 2].as_nanos());
        }
    });
}
