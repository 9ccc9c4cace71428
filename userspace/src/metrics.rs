//! Prometheus metrics: `GET /metrics` on the API socket and, with
//! `--metrics-addr`, on a TCP listener in the node's namespace.
//!
//! Everything but the API latency histogram is read at scrape time from its
//! source of truth: the dataplane's pinned `STATS` map (packets and bytes by
//! verdict and drop reason), the DHCP client's counters, the agent's
//! endpoints and leases, and the host veths' netlink counters, so a scrape
//! shows what is now, and an agent restart does not reset the dataplane
//! counters (the maps stay pinned). The one exception is the size of the
//! `FLOWS` map: its owner ([`crate::flows`]) counts it on each pass (every
//! `gc_interval`, at most 60 s), as walking 65,536 entries per scrape would
//! block.
//!
//! The output is the OpenMetrics text format (what `prometheus-client`
//! writes, `# EOF` included), which Prometheus scrapes natively.
//!
//! Per-endpoint traffic comes from the host veth's own counters: its receive
//! side is everything the pod sent (before any verdict). What the pod
//! receives is not counted per endpoint: frames delivered with
//! `bpf_redirect_peer` bypass the host veth, and counting them would need a
//! per-endpoint map in the dataplane.

use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    sync::{Arc, LazyLock},
    time::Instant,
};

use anyhow::Context as _;
use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header::CONTENT_TYPE},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use futures::TryStreamExt as _;
use lanlink_api::{EndpointInfo, LeaseInfo, StatusResponse};
use lanlink_common::{Counter as VerdictCounter, StatSlot};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType, counter::ConstCounter, family::Family, gauge::ConstGauge, histogram::Histogram,
    },
    registry::{Registry, Unit},
};
use rtnetlink::packet_route::link::LinkAttribute;
use tokio_util::sync::CancellationToken;

use crate::{agent::Agent, dhcp::DhcpStats};

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the API latency buckets: status and listing
/// calls take about a millisecond, ADD includes a DHCP exchange (seconds).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
];

/// Labels of the API latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// The route template (`/v1/cni/add`), or `unmatched`: never the raw
    /// path, which would let a caller create series at will.
    pub route: String,
    /// HTTP status code.
    pub status: u16,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type LatencyFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// API request latency, shared by every listener of the process (the socket
/// and the TCP listener) for as long as the agent runs.
static REQUEST_LATENCY: LazyLock<LatencyFamily> =
    LazyLock::new(|| Family::new_with_constructor(latency_histogram));

/// Records one API request's latency.
pub fn observe_request(method: &str, route: &str, status: u16, seconds: f64) {
    REQUEST_LATENCY
        .get_or_create(&RequestLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        })
        .observe(seconds);
}

/// axum middleware timing every request of the router it wraps (added with
/// `Router::layer`, so the matched route template is known).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let start = Instant::now();
    let response = next.run(req).await;
    observe_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// Traffic counters of one host veth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Frames the pod sent (the host veth's receive side).
    pub sent_packets: u64,
    /// Bytes the pod sent.
    pub sent_bytes: u64,
}

/// The flow expiry's counters at scrape time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowGcCounters {
    /// Expiry passes run.
    pub runs: u64,
    /// Entries removed.
    pub expired: u64,
}

/// Everything a scrape shows, gathered at once.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The agent's status.
    pub status: Option<StatusResponse>,
    /// Verdict counters, summed over CPUs; `None` when the map could not be read.
    pub verdicts: Option<Vec<(StatSlot, VerdictCounter)>>,
    /// Entries of the flow map after its owner's last pass; `None` before
    /// the first pass (or when the map could not be read).
    pub flows: Option<usize>,
    /// The DHCP client's counters.
    pub dhcp: DhcpStats,
    /// The flow expiry's counters.
    pub flow_gc: Option<FlowGcCounters>,
    /// Endpoints.
    pub endpoints: Vec<EndpointInfo>,
    /// Leases.
    pub leases: Vec<LeaseInfo>,
    /// Host veth counters by ifindex.
    pub links: HashMap<u32, LinkCounters>,
}

impl Snapshot {
    /// Reads everything from the running agent. Sources that fail are left
    /// out of the scrape (and logged) rather than failing it.
    pub async fn gather(agent: &Agent) -> Self {
        let status = agent.status();
        let verdicts = agent
            .with_dataplane(|dp| dp.stats())
            .inspect_err(|e| tracing::warn!(error = %e, "metrics: cannot read the STATS map"))
            .ok();
        // The flow map's owner counts it on each pass: a scrape never walks
        // the 65,536-entry map.
        let flows = agent.flow_gc().live().and_then(|n| usize::try_from(n).ok());
        let endpoints = agent.endpoints();
        let links = match host_link_counters().await {
            Ok(links) => links,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the host veths' counters");
                HashMap::new()
            }
        };
        Snapshot {
            status: Some(status),
            verdicts,
            flows,
            dhcp: agent.dhcp().stats(),
            flow_gc: Some(FlowGcCounters {
                runs: agent.flow_gc().runs(),
                expired: agent.flow_gc().expired(),
            }),
            endpoints,
            leases: agent.leases(),
            links,
        }
    }
}

/// The counters of every link of the agent's namespace, by ifindex (one
/// netlink dump; only the endpoints' host veths are used).
async fn host_link_counters() -> anyhow::Result<HashMap<u32, LinkCounters>> {
    let (conn, handle, _) = rtnetlink::new_connection().context("open a netlink socket")?;
    let conn = tokio::spawn(conn);
    let mut out = HashMap::new();
    let mut links = handle.link().get().execute();
    let result = async {
        while let Some(msg) = links.try_next().await.context("dump links")? {
            for attr in &msg.attributes {
                if let LinkAttribute::Stats64(s) = attr {
                    out.insert(
                        msg.header.index,
                        LinkCounters {
                            sent_packets: s.rx_packets,
                            sent_bytes: s.rx_bytes,
                        },
                    );
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    conn.abort();
    result.map(|()| out)
}

/// A Unix time as a gauge value; never (an infinite lease) is `i64::MAX`.
fn unix_gauge(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// Per-endpoint labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    container_id: String,
    ifname: String,
    namespace: String,
    pod: String,
}

impl EndpointLabels {
    fn of(e: &EndpointInfo) -> Self {
        EndpointLabels {
            container_id: e.container_id.clone(),
            ifname: e.ifname.clone(),
            namespace: e.pod.namespace.clone().unwrap_or_default(),
            pod: e.pod.name.clone().unwrap_or_default(),
        }
    }
}

/// Per-endpoint labels with a drop reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointDropLabels {
    container_id: String,
    ifname: String,
    namespace: String,
    pod: String,
    reason: String,
}

/// One metric family written by hand: name, help, type, unit and samples.
fn family<S: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (S, M)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        // A family without samples says nothing; leave it out.
        return Ok(());
    };
    let metric_type: MetricType = first.metric_type();
    let mut metric = encoder.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One metric without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeMetric,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, value.metric_type())?;
    value.encode(metric)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        if let Some(s) = &self.status {
            family(
                &mut enc,
                "lanlink_agent_info",
                "The agent: version, uplink, how the programs are attached (tcx or tc), and whether it adopted a previous run's dataplane.",
                None,
                [(
                    vec![
                        ("version", s.version.clone()),
                        ("uplink", s.uplink.clone()),
                        ("attach", s.attach.clone()),
                        ("adopted", s.adopted.to_string()),
                    ],
                    ConstGauge::new(1_i64),
                )],
            )?;
            single(
                &mut enc,
                "lanlink_agent_ready",
                "1 when the agent can serve ADD.",
                ConstGauge::new(i64::from(s.ready)),
            )?;
        }
        if let Some(verdicts) = &self.verdicts {
            let labels = |v: &StatSlot| {
                vec![
                    ("verdict", v.label().to_owned()),
                    ("drop", v.is_drop().to_string()),
                ]
            };
            family(
                &mut enc,
                "lanlink_dataplane_packets",
                "Frames handled by the eBPF dataplane, by verdict (drop=\"true\": the verdict is a drop reason).",
                None,
                verdicts
                    .iter()
                    .map(|(v, c)| (labels(v), ConstCounter::new(c.packets))),
            )?;
            family(
                &mut enc,
                "lanlink_dataplane_bytes",
                "Bytes handled by the eBPF dataplane, by verdict (drop=\"true\": the verdict is a drop reason).",
                None,
                verdicts
                    .iter()
                    .map(|(v, c)| (labels(v), ConstCounter::new(c.bytes))),
            )?;
        }
        if let Some(flows) = self.flows {
            single(
                &mut enc,
                "lanlink_flows",
                "Entries of the conntrack-bypass flow map (F6).",
                ConstGauge::new(flows as i64),
            )?;
        }
        if let Some(gc) = self.flow_gc {
            single(
                &mut enc,
                "lanlink_flows_expired",
                "Flows the agent removed from the flow map after their idle timeout.",
                ConstCounter::new(gc.expired),
            )?;
            single(
                &mut enc,
                "lanlink_flow_gc_runs",
                "Passes of the agent's flow expiry.",
                ConstCounter::new(gc.runs),
            )?;
        }
        let d = &self.dhcp;
        family(
            &mut enc,
            "lanlink_dhcp_messages",
            "DHCP messages the agent's client sent and received (received: well-formed replies, for any client), by type.",
            None,
            [
                ("sent", "discover", d.sent_discover),
                ("sent", "request", d.sent_request),
                ("sent", "release", d.sent_release),
                ("sent", "decline", d.sent_decline),
                ("received", "offer", d.received_offer),
                ("received", "ack", d.received_ack),
                ("received", "nak", d.received_nak),
                ("received", "other", d.received_other),
            ]
            .map(|(direction, kind, n)| {
                (
                    vec![("direction", direction), ("type", kind)],
                    ConstCounter::new(n),
                )
            }),
        )?;
        let e = &d.events;
        family(
            &mut enc,
            "lanlink_dhcp_lease_events",
            "What happened to the leases the agent holds for pods, by event.",
            None,
            [
                ("acquired", e.acquired),
                ("renewed", e.renewed),
                ("rebound", e.rebound),
                ("released", e.released),
                ("expired", e.expired),
                ("nak", e.nak),
                ("declined", e.declined),
                ("acquire_failure", e.acquire_failures),
                ("renew_failure", e.renew_failures),
                ("probe_error", e.probe_errors),
            ]
            .map(|(event, n)| (vec![("event", event)], ConstCounter::new(n))),
        )?;
        family(
            &mut enc,
            "lanlink_dhcp_errors",
            "Problems of the agent's DHCP client, by kind (malformed and unmatched frames, full queues, timeouts, socket errors).",
            None,
            [
                ("malformed", d.malformed),
                ("unmatched", d.unmatched),
                ("dropped", d.dropped),
                ("timeout", d.timeouts),
                ("send_error", d.send_errors),
                ("recv_error", d.recv_errors),
            ]
            .map(|(kind, n)| (vec![("kind", kind)], ConstCounter::new(n))),
        )?;
        single(
            &mut enc,
            "lanlink_endpoints",
            "Pod interfaces the agent manages.",
            ConstGauge::new(self.endpoints.len() as i64),
        )?;
        family(
            &mut enc,
            "lanlink_endpoint_info",
            "One series per pod interface, with its identity.",
            None,
            self.endpoints.iter().map(|e| {
                (
                    vec![
                        ("container_id", e.container_id.clone()),
                        ("ifname", e.ifname.clone()),
                        ("namespace", e.pod.namespace.clone().unwrap_or_default()),
                        ("pod", e.pod.name.clone().unwrap_or_default()),
                        ("network", e.network.clone()),
                        ("mode", format!("{:?}", e.mode).to_lowercase()),
                        ("mac", e.mac.to_string()),
                        ("address", e.address.clone().unwrap_or_default()),
                        ("host_veth", e.host_veth.clone()),
                    ],
                    ConstGauge::new(1_i64),
                )
            }),
        )?;
        let sent: Vec<(EndpointLabels, LinkCounters)> = self
            .endpoints
            .iter()
            .filter_map(|e| {
                self.links
                    .get(&e.host_ifindex)
                    .map(|c| (EndpointLabels::of(e), *c))
            })
            .collect();
        family(
            &mut enc,
            "lanlink_endpoint_sent_packets",
            "Frames the pod sent on this interface (its host veth's receive counter, before any verdict).",
            None,
            sent.iter()
                .map(|(l, c)| (l.clone(), ConstCounter::new(c.sent_packets))),
        )?;
        family(
            &mut enc,
            "lanlink_endpoint_sent_bytes",
            "Bytes the pod sent on this interface (its host veth's receive counter, before any verdict).",
            None,
            sent.iter()
                .map(|(l, c)| (l.clone(), ConstCounter::new(c.sent_bytes))),
        )?;
        family(
            &mut enc,
            "lanlink_endpoint_dropped_packets",
            "Frames from this pod the dataplane dropped, by reason (see README \"Security model\").",
            None,
            self.endpoints.iter().flat_map(|e| {
                let l = EndpointLabels::of(e);
                e.drops.iter().map(move |(reason, n)| {
                    (
                        EndpointDropLabels {
                            container_id: l.container_id.clone(),
                            ifname: l.ifname.clone(),
                            namespace: l.namespace.clone(),
                            pod: l.pod.clone(),
                            reason: reason.clone(),
                        },
                        ConstCounter::new(*n),
                    )
                })
            }),
        )?;
        let lease_labels = |l: &LeaseInfo| {
            let ep = self
                .endpoints
                .iter()
                .find(|e| e.container_id == l.container_id && e.ifname == l.ifname);
            vec![
                ("container_id", l.container_id.clone()),
                ("ifname", l.ifname.clone()),
                (
                    "namespace",
                    ep.and_then(|e| e.pod.namespace.clone()).unwrap_or_default(),
                ),
                (
                    "pod",
                    ep.and_then(|e| e.pod.name.clone()).unwrap_or_default(),
                ),
            ]
        };
        family(
            &mut enc,
            "lanlink_lease_info",
            "One series per DHCP lease held for a pod, with its address, server and state (bound, renewing, rebinding, expired).",
            None,
            self.leases.iter().map(|l| {
                let mut labels = lease_labels(l);
                labels.extend([
                    ("address", l.address.clone()),
                    ("mac", l.mac.to_string()),
                    ("server", l.server.clone()),
                    ("state", l.state.clone()),
                ]);
                (labels, ConstGauge::new(1_i64))
            }),
        )?;
        family(
            &mut enc,
            "lanlink_lease_expiry_timestamp",
            "When each pod's lease expires (Unix time).",
            Some(&Unit::Seconds),
            self.leases
                .iter()
                .map(|l| (lease_labels(l), ConstGauge::new(unix_gauge(l.expires_at)))),
        )?;
        family(
            &mut enc,
            "lanlink_lease_renewal_timestamp",
            "When each pod's lease is next renewed (T1, Unix time).",
            Some(&Unit::Seconds),
            self.leases
                .iter()
                .map(|l| (lease_labels(l), ConstGauge::new(unix_gauge(l.renew_at)))),
        )?;
        Ok(())
    }
}

/// Writes `snapshot` and the API latency histogram in the OpenMetrics text
/// format.
pub fn encode(snapshot: Snapshot) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    registry.register_with_unit(
        "lanlink_api_request_duration",
        // The registry appends the final period.
        "Latency of the agent's API requests (CNI verbs, status, listings, metrics)",
        Unit::Seconds,
        REQUEST_LATENCY.clone(),
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// `GET /metrics`.
pub async fn handler(State(agent): State<Arc<Agent>>) -> Response {
    let snapshot = Snapshot::gather(&agent).await;
    match encode(snapshot) {
        Ok(text) => ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], text).into_response(),
        Err(fmt::Error) => {
            tracing::error!("metrics: encoding failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response()
        }
    }
}

/// Binds the TCP metrics listener (before the agent starts, so a taken
/// port fails the start rather than silently the metrics).
pub async fn bind_tcp(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind the metrics listener on {addr}"))
}

/// Serves `GET /metrics` (and nothing else: the CNI API never leaves the
/// Unix socket) on `listener` until `shutdown` fires.
pub async fn serve_tcp(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics over TCP");
    }
    let app = Router::new()
        .route("/metrics", get(handler))
        .layer(axum::middleware::from_fn(track))
        .with_state(agent);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serve /metrics over TCP")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanlink_api::{Mode, PodIdentity};

    fn snapshot() -> Snapshot {
        Snapshot {
            status: Some(StatusResponse {
                ready: true,
                reason: None,
                version: "0.1.0".into(),
                uplink: "eth0".into(),
                uplink_ifindex: 2,
                pin_dir: "/sys/fs/bpf/lanlink".into(),
                endpoints: 1,
                adopted: false,
                attach: "tcx".into(),
            }),
            verdicts: Some(
                StatSlot::ALL
                    .iter()
                    .map(|v| {
                        (
                            *v,
                            VerdictCounter {
                                packets: *v as u64 * 10,
                                bytes: *v as u64 * 1000,
                            },
                        )
                    })
                    .collect(),
            ),
            flows: Some(3),
            dhcp: DhcpStats {
                sent_discover: 4,
                received_ack: 2,
                events: crate::dhcp::DhcpEvents {
                    acquired: 2,
                    ..Default::default()
                },
                ..DhcpStats::default()
            },
            flow_gc: Some(FlowGcCounters {
                runs: 7,
                expired: 1,
            }),
            endpoints: vec![EndpointInfo {
                container_id: "c1".into(),
                network: "lan".into(),
                ifname: "eth0".into(),
                netns: "/run/netns/p".into(),
                pod: PodIdentity {
                    namespace: Some("default".into()),
                    name: Some("web-0".into()),
                    uid: None,
                },
                host_veth: "ll0123456789ab".into(),
                host_ifindex: 7,
                mac: [2, 0, 0, 0, 0, 1].into(),
                address: Some("198.18.0.100/24".into()),
                ipv6: None,
                ipv6_source: None,
                mode: Mode::Primary,
                port_security: Default::default(),
                drops: [("drop_storm".to_string(), 9)].into_iter().collect(),
            }],
            leases: vec![LeaseInfo {
                container_id: "c1".into(),
                ifname: "eth0".into(),
                mac: [2, 0, 0, 0, 0, 1].into(),
                address: "198.18.0.100/24".into(),
                server: "198.18.0.1".into(),
                lease_secs: 3600,
                obtained_at: 100,
                renew_at: 1900,
                expires_at: 3700,
                state: "bound".into(),
            }],
            links: HashMap::from([(
                7,
                LinkCounters {
                    sent_packets: 5,
                    sent_bytes: 500,
                },
            )]),
        }
    }

    #[test]
    fn encodes_every_family_in_openmetrics_text() {
        observe_request("POST", "/v1/cni/add", 200, 0.3);
        let text = encode(snapshot()).unwrap();
        for line in [
            "# TYPE lanlink_dataplane_packets counter",
            "lanlink_dataplane_packets_total{verdict=\"redirect_peer\",drop=\"false\"} 20",
            "lanlink_dataplane_bytes_total{verdict=\"drop_spoof_ip\",drop=\"true\"} 9000",
            "lanlink_flows 3",
            "lanlink_dhcp_messages_total{direction=\"sent\",type=\"discover\"} 4",
            "lanlink_dhcp_messages_total{direction=\"received\",type=\"ack\"} 2",
            "lanlink_dhcp_lease_events_total{event=\"acquired\"} 2",
            "lanlink_dhcp_errors_total{kind=\"timeout\"} 0",
            "lanlink_flows_expired_total 1",
            "lanlink_endpoints 1",
            "lanlink_endpoint_sent_packets_total{container_id=\"c1\",ifname=\"eth0\",namespace=\"default\",pod=\"web-0\"} 5",
            "lanlink_endpoint_dropped_packets_total{container_id=\"c1\",ifname=\"eth0\",namespace=\"default\",pod=\"web-0\",reason=\"drop_storm\"} 9",
            "lanlink_lease_expiry_timestamp_seconds{container_id=\"c1\",ifname=\"eth0\",namespace=\"default\",pod=\"web-0\"} 3700",
            "# TYPE lanlink_api_request_duration_seconds histogram",
            "lanlink_api_request_duration_seconds_bucket{le=\"0.5\",method=\"POST\",route=\"/v1/cni/add\",status=\"200\"} 1",
            "lanlink_agent_ready 1",
            "lanlink_agent_info{version=\"0.1.0\",uplink=\"eth0\",attach=\"tcx\",adopted=\"false\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn sources_that_failed_are_left_out() {
        let mut s = snapshot();
        s.verdicts = None;
        s.flows = None;
        s.links.clear();
        let text = encode(s).unwrap();
        assert!(!text.contains("lanlink_dataplane_packets"));
        assert!(!text.contains("lanlink_flows "));
        assert!(!text.contains("lanlink_endpoint_sent_packets"));
        assert!(text.contains("lanlink_endpoints 1"));
    }
}
