//! The operator's CLI: `lanlinkd status|endpoints|leases|flows|stats [--json]`.
//!
//! Each command asks the agent over its socket and prints a human table, or
//! JSON with `--json`. Forwarding (and counting) goes on while the agent is
//! down, so when its socket does not answer, `endpoints`, `flows` and `stats`
//! read the pinned maps under `--pin-dir` directly (a note on stderr says so;
//! the JSON of `endpoints` then has the maps' fields only), and `status`
//! reports what is pinned and exits non-zero. `leases` needs the agent.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::maps::{HashMap, Map, MapData};
use lanlink_api::{
    EndpointInfo, FlowRow, LeaseInfo, StatsRow, StatusResponse,
    client::{AgentClient, ClientError},
};
use lanlink_common::{Counter, EndpointByIf, StatSlot, endpoint_flags, map_names};
use serde::{Deserialize, Serialize};

use crate::{
    dataplane::{DataplaneError, map_err},
    flows::FlowsError,
    paths,
};

/// Rows for every verdict.
pub fn stats_rows(stats: &[(StatSlot, Counter)]) -> Vec<StatsRow> {
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

/// One endpoint as the pinned maps know it (when the agent is down).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PinnedEndpoint {
    /// Host veth ifindex.
    pub host_ifindex: u32,
    /// Its name, when it resolves in the caller's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_veth: Option<String>,
    /// Pod MAC.
    pub mac: String,
    /// Host veth MAC.
    pub host_mac: String,
    /// Pod IPv4, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// Flag names (`agent-dhcp`, `own-dhcp`, `secondary`, `expired`).
    pub flags: Vec<String>,
}

fn open_pinned_hash<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, DataplaneError> {
    let data =
        MapData::from_pin(pin_dir.join(name)).map_err(map_err(name, "open the pinned map"))?;
    let map = Map::from_map_data(data).map_err(map_err(name, "open the pinned map"))?;
    HashMap::try_from(map).map_err(map_err(name, "open the pinned map"))
}

fn ifname_of(index: u32) -> Option<String> {
    nix::net::if_::if_indextoname(index)
        .ok()
        .and_then(|n| n.into_string().ok())
}

fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        n => n.to_string(),
    }
}

/// Reads the pinned `FLOWS` map under `pin_dir`, most recently seen first.
pub fn pinned_flows(pin_dir: &Path) -> Result<Vec<FlowRow>, FlowsError> {
    let now = crate::flows::monotonic_ns();
    let mut rows: Vec<FlowRow> = crate::flows::read_pinned(pin_dir)?
        .into_iter()
        .map(|(k, v)| FlowRow {
            proto: proto_name(k.proto),
            pod: Ipv4Addr::from(k.saddr),
            pod_port: u16::from_be_bytes(k.sport),
            peer: Ipv4Addr::from(k.daddr),
            peer_port: u16::from_be_bytes(k.dport),
            host_ifindex: v.ifindex,
            host_veth: ifname_of(v.ifindex),
            idle_ms: now.saturating_sub(v.last_seen_ns) / 1_000_000,
        })
        .collect();
    rows.sort_by_key(|r| r.idle_ms);
    Ok(rows)
}

fn flag_names(flags: u32) -> Vec<String> {
    [
        (endpoint_flags::AGENT_DHCP, "agent-dhcp"),
        (endpoint_flags::OWN_DHCP, "own-dhcp"),
        (endpoint_flags::SECONDARY, "secondary"),
        (endpoint_flags::EXPIRED, "expired"),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| (*name).to_owned())
    .collect()
}

/// Reads the endpoints from the pinned `EP_BY_IF` map under `pin_dir`.
pub fn pinned_endpoints(pin_dir: &Path) -> Result<Vec<PinnedEndpoint>, DataplaneError> {
    let map: HashMap<MapData, u32, EndpointByIf> = open_pinned_hash(pin_dir, map_names::EP_BY_IF)?;
    let mut rows: Vec<PinnedEndpoint> = map
        .iter()
        .filter_map(Result::ok)
        .map(|(ifindex, e)| PinnedEndpoint {
            host_ifindex: ifindex,
            host_veth: ifname_of(ifindex),
            mac: crate::netlink::fmt_mac(&e.mac),
            host_mac: crate::netlink::fmt_mac(&e.host_mac),
            address: (e.ipv4 != [0; 4]).then(|| Ipv4Addr::from(e.ipv4)),
            flags: flag_names(e.flags),
        })
        .collect();
    rows.sort_by_key(|r| r.host_ifindex);
    Ok(rows)
}

/// The TC links pinned under `pin_dir` (`<program>-<ifname>`).
pub fn pinned_links(pin_dir: &Path) -> Vec<String> {
    let mut links: Vec<String> = std::fs::read_dir(pin_dir.join(paths::LINKS_DIR))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    links.sort();
    links
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

/// A CLI subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// `status`.
    Status,
    /// `endpoints`.
    Endpoints,
    /// `leases`.
    Leases,
    /// `flows`.
    Flows,
    /// `stats`.
    Stats,
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn fallback_note(e: &ClientError, pin_dir: &Path) {
    eprintln!(
        "agent not reachable ({e}); reading the pinned maps under {}",
        pin_dir.display()
    );
}

fn status_table(s: &StatusResponse) -> String {
    let rows = vec![
        vec!["ready".into(), s.ready.to_string()],
        vec![
            "reason".into(),
            s.reason.clone().unwrap_or_else(|| "-".into()),
        ],
        vec!["version".into(), s.version.clone()],
        vec![
            "uplink".into(),
            format!("{} (index {})", s.uplink, s.uplink_ifindex),
        ],
        vec!["pin dir".into(), s.pin_dir.clone()],
        vec!["endpoints".into(), s.endpoints.to_string()],
        vec!["attach".into(), s.attach.clone()],
        vec!["adopted previous dataplane".into(), s.adopted.to_string()],
    ];
    table(&["FIELD", "VALUE"], &rows)
}

fn endpoints_table(eps: &[EndpointInfo]) -> String {
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
                e.mac.to_string(),
                e.address.clone().unwrap_or_else(|| "-".into()),
                e.host_veth.clone(),
                format!("{:?}", e.mode).to_lowercase(),
                e.network.clone(),
            ]
        })
        .collect();
    table(
        &[
            "CONTAINER",
            "IF",
            "POD",
            "MAC",
            "ADDRESS",
            "HOST VETH",
            "MODE",
            "NETWORK",
        ],
        &rows,
    )
}

fn pinned_endpoints_table(eps: &[PinnedEndpoint]) -> String {
    let rows: Vec<Vec<String>> = eps
        .iter()
        .map(|e| {
            vec![
                e.host_ifindex.to_string(),
                e.host_veth.clone().unwrap_or_else(|| "-".into()),
                e.mac.clone(),
                e.address.map_or_else(|| "-".into(), |a| a.to_string()),
                e.host_mac.clone(),
                if e.flags.is_empty() {
                    "-".into()
                } else {
                    e.flags.join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            "IFINDEX",
            "HOST VETH",
            "MAC",
            "ADDRESS",
            "HOST MAC",
            "FLAGS",
        ],
        &rows,
    )
}

fn leases_table(leases: &[LeaseInfo]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            vec![
                l.address.clone(),
                l.mac.to_string(),
                l.server.clone(),
                l.state.clone(),
                format!("{}s", l.lease_secs),
                format!("{}s", l.renew_at.saturating_sub(now)),
                format!("{}s", l.expires_at.saturating_sub(now)),
                l.container_id.chars().take(12).collect(),
                l.ifname.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ADDRESS",
            "MAC",
            "SERVER",
            "STATE",
            "LEASE",
            "RENEW IN",
            "EXPIRES IN",
            "CONTAINER",
            "IF",
        ],
        &rows,
    )
}

fn flows_table(flows: &[FlowRow]) -> String {
    let rows: Vec<Vec<String>> = flows
        .iter()
        .map(|f| {
            vec![
                f.proto.clone(),
                // ICMP has no ports; the key carries the echo identifier.
                if f.proto == "icmp" {
                    f.pod.to_string()
                } else {
                    format!("{}:{}", f.pod, f.pod_port)
                },
                if f.proto == "icmp" {
                    format!("{} (id {})", f.peer, f.peer_port)
                } else {
                    format!("{}:{}", f.peer, f.peer_port)
                },
                f.host_veth
                    .clone()
                    .unwrap_or_else(|| format!("#{}", f.host_ifindex)),
                format!("{:.1}s", f.idle_ms as f64 / 1000.0),
            ]
        })
        .collect();
    table(&["PROTO", "POD", "PEER", "HOST VETH", "IDLE"], &rows)
}

fn stats_table(rows: &[StatsRow]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.verdict.clone(),
                if r.drop { "drop" } else { "pass" }.into(),
                r.packets.to_string(),
                r.bytes.to_string(),
            ]
        })
        .collect();
    table(&["VERDICT", "KIND", "PACKETS", "BYTES"], &rows)
}

/// What `status` shows when the agent does not answer.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DownStatus {
    ready: bool,
    agent_reachable: bool,
    error: String,
    pin_dir: PathBuf,
    /// Endpoints in the pinned maps (`None`: the maps could not be read).
    pinned_endpoints: Option<usize>,
    pinned_links: Vec<String>,
}

/// Runs a CLI subcommand against the agent at `socket` (or the pinned maps
/// under `pin_dir` when the agent is down).
pub async fn run(cmd: Cmd, json: bool, socket: &Path, pin_dir: &Path) -> anyhow::Result<()> {
    let client = AgentClient::new(socket);
    let agent = || format!("ask the agent at {}", socket.display());
    match cmd {
        Cmd::Status => match client.get_json_async::<StatusResponse>("/v1/status").await {
            Ok(s) if json => print_json(&s)?,
            Ok(s) => print!("{}", status_table(&s)),
            Err(e) if e.is_unavailable() => {
                let down = DownStatus {
                    ready: false,
                    agent_reachable: false,
                    error: e.to_string(),
                    pin_dir: pin_dir.to_owned(),
                    pinned_endpoints: pinned_endpoints(pin_dir).ok().map(|e| e.len()),
                    pinned_links: pinned_links(pin_dir),
                };
                if json {
                    print_json(&down)?;
                } else {
                    let rows = vec![
                        vec!["ready".into(), "false".into()],
                        vec!["agent".into(), format!("not reachable: {e}")],
                        vec!["pin dir".into(), pin_dir.display().to_string()],
                        vec![
                            "pinned endpoints".into(),
                            down.pinned_endpoints
                                .map_or_else(|| "unreadable".into(), |n| n.to_string()),
                        ],
                        vec!["pinned links".into(), down.pinned_links.len().to_string()],
                    ];
                    print!("{}", table(&["FIELD", "VALUE"], &rows));
                }
                anyhow::bail!(
                    "the agent is not running (pinned programs keep forwarding for existing pods)"
                );
            }
            Err(e) => return Err(e).with_context(agent),
        },
        Cmd::Endpoints => match client
            .get_json_async::<Vec<EndpointInfo>>("/v1/endpoints")
            .await
        {
            Ok(eps) if json => print_json(&eps)?,
            Ok(eps) => print!("{}", endpoints_table(&eps)),
            Err(e) if e.is_unavailable() => {
                fallback_note(&e, pin_dir);
                let eps = pinned_endpoints(pin_dir)?;
                if json {
                    print_json(&eps)?;
                } else {
                    print!("{}", pinned_endpoints_table(&eps));
                }
            }
            Err(e) => return Err(e).with_context(agent),
        },
        Cmd::Leases => {
            let leases: Vec<LeaseInfo> = client
                .get_json_async("/v1/leases")
                .await
                .with_context(agent)?;
            if json {
                print_json(&leases)?;
            } else {
                print!("{}", leases_table(&leases));
            }
        }
        Cmd::Flows => {
            let flows: Vec<FlowRow> = match client.get_json_async("/v1/flows").await {
                Ok(flows) => flows,
                Err(e) if e.is_unavailable() => {
                    fallback_note(&e, pin_dir);
                    pinned_flows(pin_dir)?
                }
                Err(e) => return Err(e).with_context(agent),
            };
            if json {
                print_json(&flows)?;
            } else {
                print!("{}", flows_table(&flows));
            }
        }
        Cmd::Stats => {
            let rows: Vec<StatsRow> = match client.get_json_async("/v1/stats").await {
                Ok(rows) => rows,
                Err(e) if e.is_unavailable() => {
                    fallback_note(&e, pin_dir);
                    pinned_stats(pin_dir)?
                }
                Err(e) => return Err(e).with_context(agent),
            };
            if json {
                print_json(&rows)?;
            } else {
                print!("{}", stats_table(&rows));
            }
        }
    }
    Ok(())
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
        let stats: Vec<_> = StatSlot::ALL
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
        assert_eq!(rows.len(), StatSlot::ALL.len());
        assert!(rows.iter().any(|r| r.verdict == "drop_spoof_ip" && r.drop));
        let t = stats_table(&rows);
        assert!(t.starts_with("VERDICT"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.starts_with("drop_spoof_ip") && l.contains("drop"))
        );
    }

    #[test]
    fn flag_names_decode_every_bit() {
        assert_eq!(
            flag_names(endpoint_flags::AGENT_DHCP | endpoint_flags::EXPIRED),
            ["agent-dhcp", "expired"]
        );
        assert_eq!(flag_names(0), Vec::<String>::new());
    }

    #[test]
    fn flows_table_shows_ports_and_idle_time() {
        let t = flows_table(&[FlowRow {
            proto: proto_name(6),
            pod: Ipv4Addr::new(198, 18, 0, 100),
            pod_port: 80,
            peer: Ipv4Addr::new(198, 18, 0, 10),
            peer_port: 40000,
            host_ifindex: 9,
            host_veth: None,
            idle_ms: 1500,
        }]);
        assert_eq!(
            t,
            "PROTO  POD              PEER               HOST VETH  IDLE\n\
             tcp    198.18.0.100:80  198.18.0.10:40000  #9         1.5s\n"
        );
    }

    #[test]
    fn missing_pins_are_an_error_naming_the_map() {
        let dir = Path::new("/nonexistent-lanlink-pins");
        let e = pinned_flows(dir).unwrap_err().to_string();
        assert!(e.contains("FLOWS"), "{e}");
        let e = pinned_endpoints(dir).unwrap_err().to_string();
        assert!(e.contains("EP_BY_IF"), "{e}");
        assert!(pinned_links(dir).is_empty());
    }
}
