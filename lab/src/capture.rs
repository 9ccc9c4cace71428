//! [`Capture`]: tcpdump on an interface of a lab namespace, bounded in
//! packets and time, parsed into [`Packet`]s, so tests can assert what
//! really went over the wire (addresses and MACs of each frame).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cleanup::LabDir;
use crate::cmd::BgProcess;
use crate::netns::NetNs;
use crate::wait::wait_until;

/// One captured frame (`tcpdump -n -e` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Source MAC, lower case.
    pub src_mac: String,
    /// Destination MAC, lower case.
    pub dst_mac: String,
    /// Source IPv4 address, if the frame is IPv4.
    pub src_ip: Option<String>,
    /// Source port (TCP/UDP), if any.
    pub src_port: Option<u16>,
    /// Destination IPv4 address, if the frame is IPv4.
    pub dst_ip: Option<String>,
    /// Destination port (TCP/UDP), if any.
    pub dst_port: Option<u16>,
    /// The whole line, for messages.
    pub line: String,
}

impl Packet {
    /// Whether tcpdump shows a TCP SYN/ACK (`Flags [S.]`).
    pub fn is_syn_ack(&self) -> bool {
        self.line.contains("Flags [S.]")
    }
}

/// Splits `198.18.0.1.80` into `("198.18.0.1", Some(80))` and
/// `198.18.0.1` into `("198.18.0.1", None)`.
fn split_endpoint(s: &str) -> (String, Option<u16>) {
    let s = s.trim_end_matches(':');
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() == 5 {
        (parts[..4].join("."), parts[4].parse().ok())
    } else {
        (s.to_owned(), None)
    }
}

/// Parses one line of `tcpdump -n -e` output; `None` for lines that are not
/// frames (tcpdump's own messages).
pub fn parse_line(line: &str) -> Option<Packet> {
    let f: Vec<&str> = line.split_whitespace().collect();
    // <time> <src mac> > <dst mac>, ethertype …
    if f.len() < 4 || f[2] != ">" || !f[1].contains(':') {
        return None;
    }
    let mut p = Packet {
        src_mac: f[1].to_ascii_lowercase(),
        dst_mac: f[3].trim_end_matches(',').to_ascii_lowercase(),
        src_ip: None,
        src_port: None,
        dst_ip: None,
        dst_port: None,
        line: line.to_owned(),
    };
    // … ethertype IPv4 (0x0800), length 74: <src> > <dst>: …
    if let Some((_, after)) = line.split_once("ethertype IPv4")
        && let Some((_, rest)) = after.split_once(": ")
    {
        let w: Vec<&str> = rest.split_whitespace().collect();
        if w.len() >= 3 && w[1] == ">" {
            let (sip, sport) = split_endpoint(w[0]);
            let (dip, dport) = split_endpoint(w[2]);
            p.src_ip = Some(sip);
            p.src_port = sport;
            p.dst_ip = Some(dip);
            p.dst_port = dport;
        }
    }
    Some(p)
}

/// tcpdump running in the background on one interface of a namespace.
/// Dropping it stops it.
#[derive(Debug)]
pub struct Capture {
    proc: Option<BgProcess>,
    out: PathBuf,
    err: PathBuf,
    what: String,
    _dir: LabDir,
}

impl Capture {
    /// Starts `tcpdump -n -e -l -Q <direction> -i <ifname> -c <max_packets>
    /// <filter>` in `ns` (killed after `max_time` by `timeout`), and waits
    /// (≤ 5 s) until it listens. `direction`: `in`, `out` or `inout`.
    pub fn start(
        ns: &NetNs,
        ifname: &str,
        direction: &str,
        filter: &str,
        max_packets: u32,
        max_time: Duration,
    ) -> Result<Self> {
        let dir = LabDir::new("capture")?;
        let out = dir.path().join("tcpdump.out");
        let err = dir.path().join("tcpdump.err");
        let secs = max_time.as_secs().max(1).to_string();
        let count = max_packets.to_string();
        let mut argv = vec![
            "timeout", &secs, "tcpdump", "-n", "-e", "-l", "-Q", direction, "-i", ifname, "-c",
            &count,
        ];
        argv.extend(filter.split_whitespace());
        let mut cmd = ns.command(&argv);
        cmd.stdout(Stdio::from(
            std::fs::File::create(&out).context("create the capture file")?,
        ))
        .stderr(Stdio::from(
            std::fs::File::create(&err).context("create the capture log")?,
        ));
        let what = format!("tcpdump on {ifname} in {}", ns.name());
        let mut proc = BgProcess::spawn(&mut cmd, &what)?;
        let log = || std::fs::read_to_string(&err).unwrap_or_default();
        wait_until(Duration::from_secs(5), &format!("{what} to listen"), || {
            if log().contains("listening on") {
                return Ok(Some(()));
            }
            if let Some(status) = proc.try_wait()? {
                bail!("{what} exited ({status})");
            }
            Ok(None)
        })
        .with_context(|| format!("its log: {}", log()))?;
        Ok(Self {
            proc: Some(proc),
            out,
            err,
            what,
            _dir: dir,
        })
    }

    /// The frames captured so far.
    pub fn packets(&self) -> Vec<Packet> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(parse_line)
            .collect()
    }

    /// Waits up to `timeout` until at least `n` frames matching `pred` were
    /// captured; returns whether they were.
    pub fn wait_for(&self, n: usize, timeout: Duration, pred: impl Fn(&Packet) -> bool) -> bool {
        let what = format!("{n} matching frames from {}", self.what);
        wait_until(timeout, &what, || {
            Ok((self.packets().iter().filter(|p| pred(p)).count() >= n).then_some(()))
        })
        .is_ok()
    }

    /// Stops tcpdump and returns every frame it captured.
    pub fn stop(mut self) -> Result<Vec<Packet>> {
        if let Some(mut p) = self.proc.take() {
            p.stop().with_context(|| format!("stop {}", self.what))?;
        }
        Ok(self.packets())
    }

    /// tcpdump's stderr (its start message and counts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_udp_and_arp_lines() {
        let tcp = "12:00:00.000001 02:aa:bb:cc:dd:ee > 02:11:22:33:44:55, ethertype IPv4 (0x0800), length 74: 198.18.0.200.80 > 198.18.0.50.41234: Flags [S.], seq 1, ack 2, win 64240, length 0";
        let p = parse_line(tcp).unwrap();
        assert_eq!(p.src_mac, "02:aa:bb:cc:dd:ee");
        assert_eq!(p.dst_mac, "02:11:22:33:44:55");
        assert_eq!(p.src_ip.as_deref(), Some("198.18.0.200"));
        assert_eq!(p.src_port, Some(80));
        assert_eq!(p.dst_ip.as_deref(), Some("198.18.0.50"));
        assert_eq!(p.dst_port, Some(41234));
        assert!(p.is_syn_ack());

        let udp = "12:00:00.000002 02:aa:bb:cc:dd:ee > ff:ff:ff:ff:ff:ff, ethertype IPv4 (0x0800), length 48: 198.18.0.120.5353 > 224.0.0.251.5353: 0 PTR (QM)? _services._dns-sd._udp.local. (34)";
        let p = parse_line(udp).unwrap();
        assert_eq!(p.dst_ip.as_deref(), Some("224.0.0.251"));
        assert_eq!(p.dst_port, Some(5353));
        assert!(!p.is_syn_ack());

        let icmp = "12:00:00.000003 02:aa:bb:cc:dd:ee > 02:11:22:33:44:55, ethertype IPv4 (0x0800), length 98: 198.18.0.10 > 198.18.0.120: ICMP echo request, id 1, seq 1, length 64";
        let p = parse_line(icmp).unwrap();
        assert_eq!(p.src_ip.as_deref(), Some("198.18.0.10"));
        assert_eq!(p.src_port, None);

        let arp = "12:00:00.000004 02:aa:bb:cc:dd:ee > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 198.18.0.1 tell 198.18.0.120, length 28";
        let p = parse_line(arp).unwrap();
        assert_eq!(p.src_ip, None);

        assert!(parse_line("listening on eth0, link-type EN10MB (Ethernet)").is_none());
        assert!(parse_line("3 packets captured").is_none());
    }
}
