//! The operator's CLI: `lanlinkd status|endpoints|leases|flows|stats [--json]`.
//!
//! Each command asks the agent over its socket and prints a human table, or
//! JSON with `--json`. Forwarding (and counting) goes on while the agent is
//! down, so when its socket does not answer, `endpoints`, `flows` and `stats`
//! read the pinned maps under `--pin-dir` directly (a note on stderr says so;
//! the JSON of `endpoints` then has the maps' fields only), and `status`
//! reports what is pinned and exits non-zero. `leases` needs the agent.
//!
//! `lanlinkd monitor [--json] [--count N] [--timeout SECS]` streams the
//! drops the agent reports (`GET /v1/monitor`), one line each, and needs the
//! agent too.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::maps::{HashMap, Map, MapData};
use lanlink_api::types::{DropEventInfo, MonitorLine};
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
                match (&e.ipv6, &e.ipv6_source) {
                    (Some(a), Some(how)) => format!("{a} ({how})"),
                    (Some(a), None) => a.clone(),
                    _ => "-".into(),
                },
                e.host_veth.clone(),
                format!("{:?}", e.mode).to_lowercase(),
                e.network.clone(),
                drops_cell(&e.drops),
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
            "IPV6",
            "HOST VETH",
            "MODE",
            "NETWORK",
            "DROPS",
        ],
        &rows,
    )
}

/// An endpoint's drops, `reason=count` without the `drop_` prefix, most
/// first; `-` for none.
fn drops_cell(drops: &std::collections::BTreeMap<String, u64>) -> String {
    if drops.is_empty() {
        return "-".into();
    }
    let mut v: Vec<(&String, &u64)> = drops.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(r, n)| format!("{}={n}", r.strip_prefix("drop_").unwrap_or(r)))
        .collect::<Vec<_>>()
        .join(",")
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

/// What `lanlinkd monitor` prints, and when it stops (besides Ctrl-C).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorOptions {
    /// Print the agent's JSON lines as received instead of one human line
    /// per drop.
    pub json: bool,
    /// Stop after this many drops.
    pub count: Option<u64>,
    /// Stop after this long.
    pub timeout: Option<std::time::Duration>,
}

/// `lanlinkd monitor`: prints the drops the agent at `socket` streams as
/// they happen, until Ctrl-C, `count` drops or `timeout`. Fails when the
/// agent cannot be asked, when it ends the stream (it is stopping), and
/// when `timeout` passes before `count` drops.
pub async fn monitor(socket: &Path, opts: MonitorOptions) -> anyhow::Result<()> {
    let client = AgentClient::new(socket);
    let deadline = async {
        match opts.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut stream = tokio::select! {
        stream = client.monitor_async() => {
            stream.with_context(|| format!("ask the agent at {}", socket.display()))?
        }
        () = &mut deadline => return monitor_timed_out(opts, 0),
        _ = &mut ctrl_c => return Ok(()),
    };
    eprintln!(
        "listening for drops at {} (Ctrl-C to stop)",
        socket.display()
    );
    let mut drops = 0_u64;
    while opts.count.is_none_or(|n| drops < n) {
        let line = tokio::select! {
            line = stream.next_line() => line.context("read the agent's stream")?,
            () = &mut deadline => return monitor_timed_out(opts, drops),
            _ = &mut ctrl_c => return Ok(()),
        };
        let Some(line) = line else {
            anyhow::bail!("the agent ended the stream (it is stopping)");
        };
        let decoded = serde_json::from_str::<MonitorLine>(&line);
        if matches!(decoded, Ok(MonitorLine::Drop(_))) {
            drops += 1;
        }
        let text = match decoded {
            _ if opts.json => line,
            Ok(MonitorLine::Drop(d)) => drop_line(&d),
            Ok(MonitorLine::Lost(l)) => {
                eprintln!("{} drop events lost: this client did not keep up", l.lost);
                continue;
            }
            Err(e) => {
                eprintln!("skipped a line that is no drop event ({e}): {line}");
                continue;
            }
        };
        if !print_line(&text)? {
            // Whoever read our output is gone (`| head`): done.
            return Ok(());
        }
    }
    Ok(())
}

/// The end of `monitor` at its timeout, with `drops` seen.
fn monitor_timed_out(opts: MonitorOptions, drops: u64) -> anyhow::Result<()> {
    match (opts.count, opts.timeout) {
        (Some(n), Some(t)) if drops < n => {
            anyhow::bail!("saw {drops} of {n} drops within {}s", t.as_secs_f64())
        }
        _ => Ok(()),
    }
}

/// Writes `line` to stdout; `false` when stdout is a closed pipe.
fn print_line(line: &str) -> anyhow::Result<bool> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("write to stdout"),
    }
}

/// One drop as `lanlinkd monitor` prints it: `12:00:01.123 drop_spoof_ip6
/// default/web (eth0, ll0123456789ab) 02:00:00:00:00:01 → 33:33:00:00:00:01
/// 2001:2::bd → ff02::1 proto 58 type 128 code 0`.
pub fn drop_line(d: &DropEventInfo) -> String {
    let who = match (&d.pod, &d.host_veth) {
        (Some(pod), veth) => format!(
            "{}/{pod} ({}, {})",
            d.namespace.as_deref().unwrap_or("-"),
            d.ifname.as_deref().unwrap_or("-"),
            veth.as_deref().unwrap_or("-"),
        ),
        (None, Some(veth)) => veth.clone(),
        (None, None) => format!("ifindex {}", d.ifindex),
    };
    let mut line = format!(
        "{} {} {who} {} → {}",
        clock(d.time_ms),
        d.reason,
        d.src_mac,
        d.dst_mac
    );
    match (d.src, d.dst) {
        (Some(src), Some(dst)) => {
            let end = |ip: std::net::IpAddr, port: Option<u16>| match port {
                Some(port) => std::net::SocketAddr::new(ip, port).to_string(),
                None => ip.to_string(),
            };
            line.push_str(&format!(" {} → {}", end(src, d.sport), end(dst, d.dport)));
            if let Some(proto) = d.proto {
                line.push_str(&format!(" proto {proto}"));
            }
            if let (Some(t), Some(c)) = (d.icmp_type, d.icmp_code) {
                line.push_str(&format!(" type {t} code {c}"));
            }
        }
        _ => line.push_str(&format!(" ethertype {}", d.ethertype)),
    }
    line
}

/// `HH:MM:SS.mmm` of Unix time `ms` in local time (UTC if the local time
/// cannot be had).
fn clock(ms: u64) -> String {
    let secs = (ms / 1000) as libc::time_t;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: both pointers are valid for the call; localtime_r is the
    // thread-safe form and fills `tm` when it returns non-null.
    let filled = !unsafe { libc::localtime_r(&secs, tm.as_mut_ptr()) }.is_null();
    let (h, m, s) = if filled {
        // SAFETY: filled by localtime_r (and zeroed before: any value is valid).
        let tm = unsafe { tm.assume_init() };
        (tm.tm_hour as u64, tm.tm_min as u64, tm.tm_sec as u64)
    } else {
        let day = (ms / 1000) % 86_400;
        (day / 3600, day / 60 % 60, day % 60)
    };
    format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_cell_lists_reasons_most_first() {
        assert_eq!(drops_cell(&Default::default()), "-");
        let drops = [
            ("drop_storm", 3),
            ("drop_spoof_ip6", 40),
            ("drop_l2_control", 3),
        ]
        .map(|(r, n)| (r.to_string(), n))
        .into_iter()
        .collect();
        assert_eq!(drops_cell(&drops), "spoof_ip6=40,l2_control=3,storm=3");
    }

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

    fn drop_event(json: serde_json::Value) -> DropEventInfo {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn drop_lines_name_the_pod_and_the_addresses() {
        let d = drop_event(serde_json::json!({
            "timeMs": 1_700_000_001_123_u64, "reason": "drop_spoof_ip6", "ifindex": 7,
            "hostVeth": "ll0123456789ab", "namespace": "default", "pod": "web",
            "containerId": "c1", "ifname": "eth0", "srcMac": "02:00:00:00:00:01",
            "dstMac": "33:33:00:00:00:01", "ethertype": "0x86dd", "src": "2001:2::bd",
            "dst": "ff02::1", "proto": 58, "icmpType": 128, "icmpCode": 0, "len": 118
        }));
        let line = drop_line(&d);
        let (time, rest) = line.split_once(' ').unwrap();
        assert_eq!(time.len(), "12:00:01.123".len(), "{line}");
        assert!(time.ends_with(".123"), "{line}");
        assert_eq!(
            rest,
            "drop_spoof_ip6 default/web (eth0, ll0123456789ab) 02:00:00:00:00:01 → \
             33:33:00:00:00:01 2001:2::bd → ff02::1 proto 58 type 128 code 0"
        );

        let d = drop_event(serde_json::json!({
            "timeMs": 0, "reason": "drop_dhcp6_server", "ifindex": 9,
            "hostVeth": "eth0", "srcMac": "02:00:00:00:00:02",
            "dstMac": "33:33:00:01:00:02", "ethertype": "0x86dd", "src": "fe80::2",
            "dst": "ff02::1:2", "proto": 17, "sport": 547, "dport": 546, "len": 90
        }));
        let line = drop_line(&d);
        assert!(
            line.ends_with(
                " drop_dhcp6_server eth0 02:00:00:00:00:02 → 33:33:00:01:00:02 \
                 [fe80::2]:547 → [ff02::1:2]:546 proto 17"
            ),
            "{line}"
        );

        let d = drop_event(serde_json::json!({
            "timeMs": 0, "reason": "drop_spoof_arp", "ifindex": 4,
            "srcMac": "02:00:00:00:00:03", "dstMac": "ff:ff:ff:ff:ff:ff",
            "ethertype": "0x0806", "len": 42
        }));
        assert!(
            drop_line(&d).ends_with(
                " drop_spoof_arp ifindex 4 02:00:00:00:00:03 → ff:ff:ff:ff:ff:ff ethertype 0x0806"
            ),
            "{}",
            drop_line(&d)
        );
    }

    #[test]
    fn monitor_fails_at_its_timeout_only_short_of_its_count() {
        let t = Some(std::time::Duration::from_secs(2));
        let opts = |count| MonitorOptions {
            json: false,
            count,
            timeout: t,
        };
        assert!(monitor_timed_out(opts(None), 0).is_ok());
        assert!(monitor_timed_out(opts(Some(3)), 3).is_ok());
        let e = monitor_timed_out(opts(Some(3)), 1).unwrap_err().to_string();
        assert_eq!(e, "saw 1 of 3 drops within 2s");
    }
}
