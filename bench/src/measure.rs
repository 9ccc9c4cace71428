//! One measurement each: TCP throughput (iperf3), the 64-byte UDP packet
//! rate (`lab-udpflood`), 1-byte TCP request/response latency (`lab-rr`),
//! and an agent's resident memory. Every tool runs inside a lab namespace
//! with a hard timeout.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lanlink_lab::NetNs;
use lanlink_lab::cmd::BgProcess;
use serde_json::Value;

/// TCP port of every iperf3 server.
pub const IPERF_PORT: u16 = 5201;
/// TCP port of the `lab-rr` server.
pub const RR_PORT: u16 = 7000;
/// UDP port of the `lab-udpflood` receiver.
pub const UDP_PORT: u16 = 9000;
/// UDP payload of the packet-rate test: with UDP (8), IPv4 (20), Ethernet
/// (14) headers and the FCS (4) a 64-byte frame, the smallest Ethernet has.
pub const UDP_PAYLOAD: usize = 18;

/// Where the lab's traffic tools (`lab-rr`, `lab-udpflood`) are.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The directory holding both binaries.
    pub dir: PathBuf,
}

impl Tools {
    fn path(&self, name: &str) -> Result<String> {
        let p = self.dir.join(name);
        if !p.is_file() {
            bail!(
                "{} not found: build it with `cargo build -p lanlink-lab --bins`",
                p.display()
            );
        }
        Ok(p.display().to_string())
    }
}

/// The CPU every sender (iperf3 client, UDP sender) is pinned to: the
/// first. Receivers run on [`receiver_cpu`]. Unpinned, the scheduler puts
/// both ends on one CPU in some runs and on two in others, and the rates
/// of one case then fall into two clusters ~20% apart; pinned, every
/// variant runs the same two-CPU pipeline (on a one-CPU machine, both
/// share CPU 0).
fn sender_cpu() -> String {
    "0".to_owned()
}

/// The CPU receivers are pinned to: the last (see [`sender_cpu`]).
fn receiver_cpu() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus - 1).to_string()
}

/// Starts an iperf3 server on `ip` (IPv4 or IPv6) in `ns`, pinned to
/// [`receiver_cpu`], killed after `budget` at the latest (and when the
/// guard drops).
pub fn iperf_server(ns: &NetNs, ip: impl Into<IpAddr>, budget: Duration) -> Result<BgProcess> {
    let ip: IpAddr = ip.into();
    let secs = budget.as_secs().max(1).to_string();
    ns.spawn(&[
        "taskset",
        "-c",
        &receiver_cpu(),
        "timeout",
        &secs,
        "iperf3",
        "--server",
        "--bind",
        &ip.to_string(),
        "--port",
        &IPERF_PORT.to_string(),
    ])
}

/// The CPU the request/response client and server share, as text for
/// `taskset -c`: the last one. On one CPU a round trip is the path's cost
/// plus two context switches; across CPUs it would also carry two
/// cross-CPU wake-ups, which on a virtual machine (an IPI each, tens of µs)
/// swamp the difference between the paths.
fn rr_cpu() -> String {
    receiver_cpu()
}

/// Starts the `lab-rr` server on `ip` in `ns`, pinned to [`rr_cpu`],
/// bounded by `budget`.
pub fn rr_server(tools: &Tools, ns: &NetNs, ip: Ipv4Addr, budget: Duration) -> Result<BgProcess> {
    let bin = tools.path("lab-rr")?;
    ns.spawn(&[
        "taskset",
        "-c",
        &rr_cpu(),
        &bin,
        "server",
        &format!("{ip}:{RR_PORT}"),
        "--max-secs",
        &budget.as_secs().max(1).to_string(),
    ])
}

/// TCP throughput from `client` (pinned to [`sender_cpu`]) to the iperf3
/// server at `server`, in Gbit/s as received by the server, over a
/// `secs`-second run (one stream); over IPv6 (`-6`) for an IPv6 `server`.
pub fn tcp_throughput(client: &NetNs, server: impl Into<IpAddr>, secs: u32) -> Result<f64> {
    let server: IpAddr = server.into();
    let cpu = sender_cpu();
    let server_text = server.to_string();
    let secs_text = secs.to_string();
    let port = IPERF_PORT.to_string();
    let mut args = vec![
        "taskset",
        "-c",
        &cpu,
        "iperf3",
        "--client",
        &server_text,
        "--port",
        &port,
        "--time",
        &secs_text,
        "--json",
        "--connect-timeout",
        "3000",
    ];
    if server.is_ipv6() {
        args.push("-6");
    }
    let timeout = Duration::from_secs(u64::from(secs) + 20);
    // A server that just started may not listen yet, and one still closing
    // the previous test answers "busy": one retry after a pause covers both.
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        let out = client.run_timeout(&args, timeout)?;
        let text = String::from_utf8_lossy(&out.stdout);
        match parse_iperf(&text) {
            Ok(bps) => return Ok(bps / 1e9),
            Err(e) => last = format!("{e:#}"),
        }
    }
    bail!("iperf3 {} → {server}: {last}", client.name())
}

/// `end.sum_received.bits_per_second` of iperf3's JSON output.
pub fn parse_iperf(text: &str) -> Result<f64> {
    let v: Value = serde_json::from_str(text).context("iperf3 output is not JSON")?;
    if let Some(err) = v["error"].as_str() {
        bail!("iperf3: {err}");
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .filter(|b| *b > 0.0)
        .context("iperf3 reported no end.sum_received.bits_per_second")
}

/// Packets per second of 64-byte frames delivered from `sender` (pinned
/// to [`sender_cpu`]) to a receiver at `dst` in `receiver` (pinned to
/// [`receiver_cpu`]), over a `secs`-second blast.
pub fn udp_rate(
    tools: &Tools,
    sender: &NetNs,
    receiver: &NetNs,
    dst: Ipv4Addr,
    secs: f64,
) -> Result<f64> {
    let bin = tools.path("lab-udpflood")?;
    let target = format!("{dst}:{UDP_PORT}");
    let max_secs = (secs.ceil() as u64 + 10).to_string();
    let (send_cpu, recv_cpu) = (sender_cpu(), receiver_cpu());
    let recv_args = [
        "taskset",
        "-c",
        &recv_cpu,
        bin.as_str(),
        "recv",
        &target,
        "--max-secs",
        &max_secs,
        "--idle-ms",
        "500",
    ];
    let limit = Duration::from_secs_f64(secs + 20.0);
    let (recv, send) = std::thread::scope(|s| {
        let recv = s.spawn(|| receiver.run_timeout(&recv_args, limit));
        // Let the receiver bind first; it times its rate from its first
        // datagram, so an early or late start does not bias the result.
        std::thread::sleep(Duration::from_millis(300));
        let send = sender.run_timeout(
            &[
                "taskset",
                "-c",
                &send_cpu,
                &bin,
                "send",
                &target,
                "--secs",
                &format!("{secs}"),
                "--payload",
                &UDP_PAYLOAD.to_string(),
            ],
            limit,
        );
        (recv.join(), send)
    });
    let send = send?;
    lanlink_lab::cmd::check("lab-udpflood send", &send)?;
    let recv = recv.map_err(|_| anyhow::anyhow!("the receiver thread panicked"))??;
    lanlink_lab::cmd::check("lab-udpflood recv", &recv)?;
    let v: Value = serde_json::from_slice(&recv.stdout).context("lab-udpflood recv output")?;
    let pps = v["pps"].as_f64().unwrap_or(0.0);
    if pps <= 0.0 {
        bail!(
            "no UDP packet reached {dst}: receiver {}, sender {}",
            String::from_utf8_lossy(&recv.stdout).trim(),
            String::from_utf8_lossy(&send.stdout).trim()
        );
    }
    Ok(pps)
}

/// Round-trip latency of 1-byte TCP ping-pongs from `client` (pinned to
/// the server's CPU) to the `lab-rr` server at `server`: (p50, p99) in
/// microseconds.
pub fn request_response(
    tools: &Tools,
    client: &NetNs,
    server: Ipv4Addr,
    count: usize,
    secs: u64,
) -> Result<(f64, f64)> {
    let bin = tools.path("lab-rr")?;
    let out = client.run_timeout(
        &[
            "taskset",
            "-c",
            &rr_cpu(),
            &bin,
            "client",
            &format!("{server}:{RR_PORT}"),
            "--count",
            &count.to_string(),
            "--max-secs",
            &secs.to_string(),
        ],
        Duration::from_secs(secs + 15),
    )?;
    lanlink_lab::cmd::check("lab-rr client", &out)?;
    let v: Value = serde_json::from_slice(&out.stdout).context("lab-rr output")?;
    match (v["p50_us"].as_f64(), v["p99_us"].as_f64()) {
        (Some(p50), Some(p99)) => Ok((p50, p99)),
        _ => bail!(
            "lab-rr printed no percentiles: {}",
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}

/// `VmRSS` of process `pid` in kB, from `/proc/<pid>/status`.
pub fn rss_kb(pid: u32) -> Result<u64> {
    let path = Path::new("/proc").join(pid.to_string()).join("status");
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS in {}", path.display()))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iperf_json() {
        let ok = r#"{"start":{},"end":{"sum_received":{"bits_per_second":9.5e9}}}"#;
        assert_eq!(parse_iperf(ok).unwrap(), 9.5e9);
        let err =
            r#"{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}"#;
        assert!(format!("{:#}", parse_iperf(err).unwrap_err()).contains("Connection refused"));
        assert!(parse_iperf("garbage").is_err());
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tlanlinkd\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }
}
