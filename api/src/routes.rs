//! The agent's HTTP routes on its Unix socket, one constant each. The agent's
//! router, the client and every test name routes through these.
//!
//! Bodies are JSON except [`METRICS`] (OpenMetrics text) and [`MONITOR`]
//! (a stream of JSON lines). Every error answers a non-2xx status with an
//! [`ApiError`](crate::ApiError) body.

/// `POST` an [`AttachmentRequest`](crate::AttachmentRequest); answers an
/// [`AttachmentResult`](crate::AttachmentResult).
pub const CNI_ADD: &str = "/v1/cni/add";
/// `POST` an [`AttachmentRequest`](crate::AttachmentRequest); answers `{}`,
/// also when the attachment is already gone (DEL is idempotent).
pub const CNI_DEL: &str = "/v1/cni/del";
/// `POST` an [`AttachmentRequest`](crate::AttachmentRequest); answers an
/// [`AttachmentResult`](crate::AttachmentResult), or
/// [`codes::CHECK_FAILED`](crate::codes::CHECK_FAILED) (also for an unknown
/// attachment).
pub const CNI_CHECK: &str = "/v1/cni/check";
/// `POST` a [`GcRequest`](crate::GcRequest); answers a
/// [`GcResponse`](crate::GcResponse).
pub const CNI_GC: &str = "/v1/cni/gc";
/// `GET`: a [`StatusResponse`](crate::StatusResponse).
pub const STATUS: &str = "/v1/status";
/// `GET`: `Vec<`[`EndpointInfo`](crate::EndpointInfo)`>`.
pub const ENDPOINTS: &str = "/v1/endpoints";
/// `GET`: `Vec<`[`LeaseInfo`](crate::LeaseInfo)`>`.
pub const LEASES: &str = "/v1/leases";
/// `GET`: `Vec<`[`StatsRow`](crate::StatsRow)`>`, one per verdict.
pub const STATS: &str = "/v1/stats";
/// `GET`: `Vec<`[`FlowRow`](crate::FlowRow)`>`, the conntrack-bypass flows.
pub const FLOWS: &str = "/v1/flows";
/// `GET`: the DHCP client's counters, a [`DhcpStats`](crate::DhcpStats).
pub const DHCP: &str = "/v1/dhcp";
/// `GET`: Prometheus metrics (OpenMetrics text).
pub const METRICS: &str = "/metrics";
/// `GET`: the frames the dataplane drops, as it drops them, until the client
/// goes away: newline-delimited JSON (`application/x-ndjson`), one
/// [`MonitorLine`](crate::types::MonitorLine) per line (a
/// [`DropEventInfo`](crate::types::DropEventInfo), or a
/// [`LostEvents`](crate::types::LostEvents) when the client fell behind).
/// The programs report drops only while a client listens.
pub const MONITOR: &str = "/v1/monitor";
/// The content type of [`MONITOR`]'s answer.
pub const NDJSON: &str = "application/x-ndjson";

/// Every route, for tests and tables.
pub const ALL: [&str; 12] = [
    CNI_ADD, CNI_DEL, CNI_CHECK, CNI_GC, STATUS, ENDPOINTS, LEASES, STATS, FLOWS, DHCP, METRICS,
    MONITOR,
];
