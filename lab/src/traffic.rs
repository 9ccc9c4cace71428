//! Traffic for dataplane tests: the `lab-net` tool (UDP, multicast and
//! broadcast receivers and senders, TCP client and server, raw frames)
//! run in a namespace, and builders for the frames a test forges.
//!
//! `lab-net` is a binary of this package; scenarios find it with
//! [`crate::tool`] and pass its path, the functions here do not guess it.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cleanup::LabDir;
use crate::cmd::{self, BgProcess};
use crate::firsthop::checksum;
use crate::netns::NetNs;
use crate::wait::wait_until;

/// A `lab-net` receiver or server running in the background in a namespace,
/// its output in a log file. Dropping it stops it.
#[derive(Debug)]
pub struct Tool {
    proc: Option<BgProcess>,
    log: PathBuf,
    what: String,
    _dir: LabDir,
}

/// One `got …` line of a receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    /// `from=` (UDP and TCP: the peer address), empty for raw frames.
    pub from: String,
    /// The datagram, frame or TCP text.
    pub data: Vec<u8>,
}

impl Tool {
    /// Starts `lab-net <args>` in `ns` and waits (≤ 5 s) until it prints
    /// `ready`.
    pub fn spawn(ns: &NetNs, bin: &Path, args: &[&str]) -> Result<Self> {
        let dir = LabDir::new("lab-net")?;
        let log = dir.path().join("out.log");
        let bin = bin.to_string_lossy().into_owned();
        let mut argv = vec![bin.as_str()];
        argv.extend_from_slice(args);
        let proc = ns.spawn_logged(&argv, &log)?;
        let mut tool = Self {
            proc: Some(proc),
            log,
            what: format!("lab-net {} in {}", args.join(" "), ns.name()),
            _dir: dir,
        };
        tool.wait_for_line("ready", Duration::from_secs(5))?;
        Ok(tool)
    }

    /// Its output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_line(&mut self, line: &str, timeout: Duration) -> Result<()> {
        let what = format!("{} to print {line:?}", self.what);
        let log = self.log.clone();
        let output = move || std::fs::read_to_string(&log).unwrap_or_default();
        let mut proc = self.proc.as_mut();
        wait_until(timeout, &what, || {
            if output().lines().any(|l| l == line) {
                return Ok(Some(()));
            }
            if let Some(p) = proc.as_deref_mut()
                && let Some(status) = p.try_wait()?
            {
                bail!("{} exited ({status})", self.what);
            }
            Ok(None)
        })
        .with_context(|| format!("its output: {}", self.output()))
    }

    /// Waits (≤ `timeout`) for it to exit by itself (count reached or its
    /// own timeout), and returns what it received. Fails if it failed.
    pub fn finish(mut self, timeout: Duration) -> Result<Vec<Got>> {
        let mut proc = self.proc.take().context("already finished")?;
        let status = match proc.wait_timeout(timeout)? {
            Some(s) => s,
            None => proc.stop()?,
        };
        let out = self.output();
        if !status.success() {
            bail!("{} failed ({status}): {out}", self.what);
        }
        Ok(parse_got(&out))
    }
}

/// Parses the `got …` lines of a `lab-net` receiver.
pub fn parse_got(out: &str) -> Vec<Got> {
    out.lines()
        .filter_map(|l| l.strip_prefix("got "))
        .map(|l| {
            let field = |k: &str| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap_or_default()
                    .to_owned()
            };
            let data = match l.find(" text=") {
                Some(i) => l.as_bytes()[i + 6..].to_vec(),
                None => unhex(&field("hex=")).unwrap_or_default(),
            };
            Got {
                from: field("from="),
                data,
            }
        })
        .collect()
}

/// Runs `lab-net <args>` in `ns` to completion (≤ `timeout`); fails unless
/// it exits 0. Returns stdout.
pub fn run(ns: &NetNs, bin: &Path, args: &[&str], timeout: Duration) -> Result<String> {
    let bin = bin.to_string_lossy().into_owned();
    let mut argv = vec![bin.as_str()];
    argv.extend_from_slice(args);
    cmd::run_ok(&mut ns.command(&argv), timeout)
        .with_context(|| format!("lab-net {} in {}", args.join(" "), ns.name()))
}

/// Timeouts of one [`tcp_session`]: the server's and the client's own (ms),
/// and the wall limit for each.
struct Timeouts {
    serve_ms: &'static str,
    connect_ms: &'static str,
    limit: Duration,
}

/// `lab-net tcp-serve` in `server` on `port`, then one `tcp-connect` from
/// `client` to `to` with `payload` (`--text t` or `--bytes n`): the
/// client's output, and what the server got.
fn tcp_session(
    bin: &Path,
    (server, client): (&NetNs, &NetNs),
    to: SocketAddrV4,
    payload: [&str; 2],
    t: Timeouts,
) -> Result<(Result<String>, Vec<Got>)> {
    let port = to.port().to_string();
    let serve = ["tcp-serve", "--port", &port, "--timeout-ms", t.serve_ms];
    let srv = Tool::spawn(server, bin, &serve)?;
    let to = to.to_string();
    let [flag, value] = payload;
    let connect = [
        "tcp-connect",
        "--to",
        &to,
        flag,
        value,
        "--timeout-ms",
        t.connect_ms,
    ];
    let reply = run(client, bin, &connect, t.limit);
    let got = srv.finish(t.limit)?;
    Ok((reply, got))
}

/// A TCP exchange: `lab-net tcp-serve` in `server` on `port`, then
/// `tcp-connect` from `client` to `ip:port` with `text`; succeeds when the
/// client got the server's `ack:<text>` and the server saw the text.
pub fn tcp_exchange(
    bin: &Path,
    server: &NetNs,
    client: &NetNs,
    ip: Ipv4Addr,
    port: u16,
    text: &str,
) -> Result<()> {
    let to = SocketAddrV4::new(ip, port);
    let t = Timeouts {
        serve_ms: "8000",
        connect_ms: "5000",
        limit: Duration::from_secs(10),
    };
    let (reply, got) = tcp_session(bin, (server, client), to, ["--text", text], t)?;
    let reply = reply.with_context(|| format!("TCP {} → {to}", client.name()))?;
    if !got.iter().any(|g| g.data == text.as_bytes()) {
        bail!(
            "the server in {} did not get {text:?}: {got:?}",
            server.name()
        );
    }
    if !reply.contains(&format!("reply ack:{text}")) {
        bail!("TCP {} → {to}: {reply}", client.name());
    }
    Ok(())
}

/// A bulk TCP transfer of `bytes` from `client` to `lab-net tcp-serve` in
/// `server` on `port`; succeeds when the server got every byte intact (it
/// answers with the length and a checksum, which the client verifies).
/// Large writes exercise segmentation offload (GSO/GRO) on the path.
pub fn tcp_bulk(
    bin: &Path,
    server: &NetNs,
    client: &NetNs,
    ip: Ipv4Addr,
    port: u16,
    bytes: usize,
) -> Result<()> {
    let to = SocketAddrV4::new(ip, port);
    let t = Timeouts {
        serve_ms: "10000",
        connect_ms: "8000",
        limit: Duration::from_secs(12),
    };
    let payload = ["--bytes", &bytes.to_string()];
    let (reply, got) = tcp_session(bin, (server, client), to, payload, t)?;
    reply.with_context(|| format!("bulk TCP {} → {to}; server: {got:?}", client.name()))?;
    Ok(())
}

/// busybox's DHCP client on `eth0` in `ns`, in the foreground: `tries`
/// DISCOVERs one second apart, then it exits (`-n -q`); `script` handles
/// the lease (`/bin/true` to only take it); `extra` are more udhcpc
/// arguments (e.g. `-x hostname:web`). Returns its output whatever the exit
/// status; killed after `timeout`.
pub fn udhcpc(
    ns: &NetNs,
    tries: u32,
    script: &Path,
    extra: &[&str],
    timeout: Duration,
) -> Result<std::process::Output> {
    let tries = tries.to_string();
    let script = script.to_string_lossy();
    let mut argv = vec![
        "/bin/busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-t",
        &tries,
        "-T",
        "1",
        "-s",
        &script,
    ];
    argv.extend_from_slice(extra);
    ns.run_timeout(&argv, timeout)
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes hex; `None` if it is not.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{s:?} is not a MAC"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("{s:?} is not a MAC"))
}

/// The Wake-on-LAN magic packet for `mac`: 6 × 0xff, then the MAC 16 times.
pub fn wol_payload(mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![0xff; 6];
    for _ in 0..16 {
        p.extend_from_slice(&mac);
    }
    p
}

/// An Ethernet + IPv4 + UDP frame (checksums filled in).
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip.extend_from_slice(&src_ip.octets());
    ip.extend_from_slice(&dst_ip.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src_ip.octets());
    pseudo.extend_from_slice(&dst_ip.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&udp);
    let c = match checksum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 20 + udp_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

/// ARP operation codes.
pub mod arp_op {
    /// Request.
    pub const REQUEST: u16 = 1;
    /// Reply.
    pub const REPLY: u16 = 2;
}

/// An Ethernet + ARP (IPv4 over Ethernet) frame.
pub fn arp_frame(
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    op: u16,
    (sha, spa): ([u8; 6], Ipv4Addr),
    (tha, tpa): ([u8; 6], Ipv4Addr),
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_frame_checksums_verify() {
        let f = udp_frame(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(198, 18, 0, 5),
            Ipv4Addr::new(198, 18, 0, 6),
            1000,
            2000,
            b"hello",
        );
        assert_eq!(f.len(), 14 + 20 + 8 + 5);
        assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum");
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, 17, 0, 13]);
        pseudo.extend_from_slice(&f[34..]);
        assert_eq!(checksum(&pseudo), 0, "UDP checksum");
    }

    #[test]
    fn arp_frame_layout() {
        let f = arp_frame(
            [2, 0, 0, 0, 0, 1],
            [0xff; 6],
            arp_op::REPLY,
            ([2, 0, 0, 0, 0, 1], Ipv4Addr::new(198, 18, 0, 5)),
            ([0; 6], Ipv4Addr::new(198, 18, 0, 6)),
        );
        assert_eq!(f.len(), 42);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 2]);
        assert_eq!(&f[28..32], &[198, 18, 0, 5]);
    }

    #[test]
    fn wol_and_hex_round_trip() {
        let p = wol_payload([1, 2, 3, 4, 5, 6]);
        assert_eq!(p.len(), 102);
        assert_eq!(&p[..6], &[0xff; 6]);
        assert_eq!(&p[96..], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(unhex(&hex(&p)), Some(p));
        assert_eq!(
            parse_mac("02:0a:ff:00:01:02").unwrap(),
            [2, 10, 255, 0, 1, 2]
        );
    }

    #[test]
    fn parses_receiver_output() {
        let out = "ready\ngot from=198.18.0.5:5353 len=2 hex=6869\n\
                   got from=198.18.0.6:40000 text=a b\nreceived 2\n";
        let got = parse_got(out);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].from, "198.18.0.5:5353");
        assert_eq!(got[0].data, b"hi");
        assert_eq!(got[1].data, b"a b");
    }
}
