//! The operator's CLI: `lanlinkd status|endpoints|leases|stats`.
//!
//! Talks to the agent over its socket; `stats` reads the pinned map directly
//! when the agent is down, since forwarding (and counting) goes on without it.

use std::path::Path;

use lanlink_common::{Counter, Verdict};
use serde::{Deserialize, Serialize};

/// One row of `stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRow {
    /// Verdict label, e.g. `redirect_peer` or `drop_spoof_ip`.
    pub verdict: String,
    /// Whether it is a drop reason.
    pub drop: bool,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Rows for every verdict.
pub fn stats_rows(stats: &[(Verdict, Counter)]) -> Vec<StatsRow> {
    stats
        .iter()
        .map(|(v, c)| StatsRow {
            verdict: v.label().to_string(),
            drop: v.is_drop(),
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect()
}

/// Reads the verdict counters from the pinned map under `pin_dir`.
pub fn pinned_stats(pin_dir: &Path) -> anyhow::Result<Vec<StatsRow>> {
    let map = crate::dataplane::open_pinned_stats(pin_dir)?;
    Ok(stats_rows(&crate::dataplane::read_stats(&map)?))
}

/// Formats rows as an aligned table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&mut header.iter().copied());
    out.push('\n');
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["a", "long"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    long\nxyz  1\n");
    }

    #[test]
    fn stats_rows_cover_every_verdict() {
        let stats: Vec<_> = Verdict::ALL
            .iter()
            .map(|v| {
                (
                    *v,
                    Counter {
                        packets: *v as u64,
                        bytes: 0,
                    },
                )
            })
            .collect();
        let rows = stats_rows(&stats);
        assert_eq!(rows.len(), Verdict::ALL.len());
        assert!(rows.iter().any(|r| r.verdict == "drop_spoof_ip" && r.drop));
    }
}

/// A CLI subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// `status`.
    Status,
    /// `endpoints`.
    Endpoints,
    /// `leases`.
    Leases,
    /// `stats`.
    Stats,
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs a CLI subcommand against the agent at `socket` (or the pinned maps
/// under `pin_dir` for `stats` when the agent is down).
pub async fn run(cmd: Cmd, json: bool, socket: &Path, pin_dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use lanlink_cni::{
        api::{EndpointInfo, LeaseInfo, StatusResponse},
        client::AgentClient,
    };
    let client = AgentClient::new(socket);
    let agent = || format!("ask the agent at {}", socket.display());
    match cmd {
        Cmd::Status => {
            let s: StatusResponse = client
                .get_json_async("/v1/status")
                .await
                .with_context(agent)?;
            if json {
                return print_json(&s);
            }
            println!(
                "ready: {}\nversion: {}\nuplink: {} (index {})\npin dir: {}\nendpoints: {}\nadopted previous dataplane: {}",
                s.ready, s.version, s.uplink, s.uplink_ifindex, s.pin_dir, s.endpoints, s.adopted
            );
        }
        Cmd::Endpoints => {
            let eps: Vec<EndpointInfo> = client
                .get_json_async("/v1/endpoints")
                .await
                .with_context(agent)?;
            if json {
                return print_json(&eps);
            }
            let rows: Vec<Vec<String>> = eps
                .iter()
                .map(|e| {
                    vec![
                        e.container_id.chars().take(12).collect(),
                        e.ifname.clone(),
                        format!(
                            "{}/{}",
                            e.pod.namespace.as_deref().unwrap_or("-"),
                            e.pod.name.as_deref().unwrap_or("-")
                        ),
                        e.mac.clone(),
                        e.address.clone().unwrap_or_else(|| "-".into()),
                        e.host_veth.clone(),
                        format!("{:?}", e.mode).to_lowercase(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "CONTAINER",
                        "IF",
                        "POD",
                        "MAC",
                        "ADDRESS",
                        "HOST VETH",
                        "MODE"
                    ],
                    &rows
                )
            );
        }
        Cmd::Leases => {
            let leases: Vec<LeaseInfo> = client
                .get_json_async("/v1/leases")
                .await
                .with_context(agent)?;
            if json {
                return print_json(&leases);
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let rows: Vec<Vec<String>> = leases
                .iter()
                .map(|l| {
                    vec![
                        l.address.clone(),
                        l.mac.clone(),
                        l.server.clone(),
                        l.state.clone(),
                        format!("{}s", l.lease_secs),
                        format!("{}s", l.renew_at.saturating_sub(now)),
                        format!("{}s", l.expires_at.saturating_sub(now)),
                        l.container_id.chars().take(12).collect(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "ADDRESS",
                        "MAC",
                        "SERVER",
                        "STATE",
                        "LEASE",
                        "RENEW IN",
                        "EXPIRES IN",
                        "CONTAINER"
                    ],
                    &rows
                )
            );
        }
        Cmd::Stats => {
            let rows: Vec<StatsRow> = match client.get_json_async("/v1/stats").await {
                Ok(rows) => rows,
                Err(e) if e.is_unavailable() => {
                    eprintln!("agent not reachable ({e}); reading {}", pin_dir.display());
                    pinned_stats(pin_dir)?
                }
                Err(e) => return Err(e).with_context(agent),
            };
            if json {
                return print_json(&rows);
            }
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.verdict.clone(),
                        r.packets.to_string(),
                        r.bytes.to_string(),
                    ]
                })
                .collect();
            print!("{}", table(&["VERDICT", "PACKETS", "BYTES"], &rows));
        }
    }
    Ok(())
}
