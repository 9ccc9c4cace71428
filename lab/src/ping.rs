//! [`ping`]: bounded ICMP reachability checks from inside a namespace.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::NetNs;

/// What `ping` reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PingStats {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Echo replies received.
    pub received: u32,
    /// Average round trip, if any reply came.
    pub rtt_avg_ms: Option<f64>,
    /// ping's summary lines (`--- … ---`, counts, rtt), for printing.
    pub summary: String,
}

impl PingStats {
    /// Whether at least one request was sent and every one was answered.
    pub fn all_received(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }
}

/// Pings `dst` from `ns`: `count` requests 0.2 s apart, giving up after
/// `timeout` (ping's own `-w` deadline, and a hard kill 5 s later). Returns
/// the statistics whether or not replies came; fails only if ping could not
/// run or printed no statistics.
pub fn ping(
    ns: &NetNs,
    dst: impl Into<std::net::IpAddr>,
    count: u32,
    timeout: Duration,
) -> Result<PingStats> {
    let dst: std::net::IpAddr = dst.into();
    let deadline = timeout.as_secs().max(1).to_string();
    let out = ns.run_timeout(
        &[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-w",
            &deadline,
            &dst.to_string(),
        ],
        timeout + Duration::from_secs(5),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ping(&text).with_context(|| {
        format!(
            "no statistics from ping {dst} in {}: {}{}",
            ns.name(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Parses iputils ping's summary.
pub fn parse_ping(text: &str) -> Option<PingStats> {
    let counts = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut fields = counts.split(',').map(str::trim);
    let transmitted = fields.next()?.split_whitespace().next()?.parse().ok()?;
    let received = fields.next()?.split_whitespace().next()?.parse().ok()?;
    let rtt_avg_ms = text
        .lines()
        .find(|l| l.starts_with("rtt ") || l.starts_with("round-trip"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|avg| avg.parse().ok());
    let summary = text
        .lines()
        .skip_while(|l| !l.starts_with("---"))
        .collect::<Vec<_>>()
        .join("\n");
    Some(PingStats {
        transmitted,
        received,
        rtt_avg_ms,
        summary,
    })
}

/// A ping at 20/s for 10 s (200 requests) running in the background, for
/// checking that something (an agent restart) loses nothing.
pub struct BgPing {
    proc: crate::cmd::BgProcess,
    log: std::path::PathBuf,
}

impl BgPing {
    /// Starts it from `ns` to `dst`, logging to `log`.
    pub fn start(ns: &NetNs, dst: Ipv4Addr, log: &std::path::Path) -> Result<Self> {
        let dst = dst.to_string();
        let args = [
            "ping", "-n", "-q", "-i", "0.05", "-c", "200", "-w", "20", &dst,
        ];
        Ok(Self {
            proc: ns.spawn_logged(&args, log)?,
            log: log.to_owned(),
        })
    }

    /// Waits for it to end (25 s at most) and returns its statistics.
    pub fn finish(mut self, what: &str) -> Result<PingStats> {
        self.proc
            .wait_timeout(Duration::from_secs(25))?
            .with_context(|| format!("{what}: ping did not end"))?;
        let text = std::fs::read_to_string(&self.log)?;
        parse_ping(&text).with_context(|| format!("{what}: no statistics in {text}"))
    }

    /// [`finish`](Self::finish), failing unless all 200 requests were
    /// answered.
    pub fn finish_lossless(self, what: &str) -> Result<PingStats> {
        let s = self.finish(what)?;
        anyhow::ensure!(
            s.transmitted == 200 && s.all_received(),
            "{what}: {}",
            s.summary
        );
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_success() {
        let text = "PING 198.18.0.1 (198.18.0.1) 56(84) bytes of data.\n\n\
--- 198.18.0.1 ping statistics ---\n\
3 packets transmitted, 3 received, 0% packet loss, time 405ms\n\
rtt min/avg/max/mdev = 0.031/0.047/0.070/0.016 ms\n";
        let s = parse_ping(text).unwrap();
        assert_eq!((s.transmitted, s.received), (3, 3));
        assert_eq!(s.rtt_avg_ms, Some(0.047));
        assert!(s.all_received());
        assert!(s.summary.starts_with("--- 198.18.0.1"));
    }

    #[test]
    fn parses_total_loss() {
        let text = "--- 198.18.0.9 ping statistics ---\n\
2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1010ms\n";
        let s = parse_ping(text).unwrap();
        assert_eq!((s.transmitted, s.received, s.rtt_avg_ms), (2, 0, None));
        assert!(!s.all_received());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_ping("ping: connect: Network is unreachable").is_none());
    }
}
