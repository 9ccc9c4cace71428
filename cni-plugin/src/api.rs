//! The agent's HTTP/JSON API: the request and response bodies exchanged over
//! its Unix socket. Shared by the CNI plugin, the agent and its CLI, so the
//! three can never disagree on a field.
//!
//! Routes (all JSON):
//! - `POST /v1/cni/add`, `/v1/cni/del`, `/v1/cni/check` with an [`AttachmentRequest`];
//!   add and check answer an [`AttachmentResult`], del answers `{}`.
//! - `POST /v1/cni/gc` with a [`GcRequest`], answers a [`GcResponse`].
//! - `GET /v1/status` → [`StatusResponse`]; `GET /v1/endpoints` → `Vec<EndpointInfo>`;
//!   `GET /v1/leases` → `Vec<LeaseInfo>`; `GET /v1/stats` and `GET /v1/flows` →
//!   the verdict counters and the conntrack-bypass flows (the agent's CLI
//!   types); `GET /metrics` → Prometheus metrics (OpenMetrics text).
//!
//! Every error answers a non-2xx status with an [`ApiError`] body that carries
//! the CNI error code the plugin reports.

use serde::{Deserialize, Serialize};

/// Default path of the agent's socket.
pub const DEFAULT_SOCKET: &str = "/run/lanlink/lanlink.sock";

/// How a pod interface is attached (netconf key `mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The pod's only interface: default route via the LAN router.
    #[default]
    Primary,
    /// An extra interface beside another CNI's (Multus `net1`): no default route.
    Secondary,
}

/// How the client identifier and MAC of a pod are chosen (netconf `ipam.identity`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Identity {
    /// Derived from namespace/pod/interface, so a DHCP reservation survives
    /// pod re-creation.
    #[default]
    Stable,
    /// Fresh for every attachment.
    Random,
}

/// Who the pod is, from `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIdentity {
    /// `K8S_POD_NAMESPACE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `K8S_POD_NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `K8S_POD_UID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// One extra DHCP option to send (netconf `ipam.sendOptions`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpSendOption {
    /// The option code (1..=254).
    pub code: u8,
    /// The value as text (sent as its bytes), or hex with a `0x` prefix.
    pub value: String,
}

/// The DHCP part of the netconf (`ipam` key, type `lanlink-dhcp`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DhcpConfig {
    /// Deadline for obtaining a lease, in milliseconds.
    #[serde(default = "DhcpConfig::default_timeout_ms")]
    pub timeout_ms: u64,
    /// How the client identifier and MAC are chosen.
    #[serde(default)]
    pub identity: Identity,
    /// Extra options to send in DISCOVER and REQUEST.
    #[serde(default)]
    pub send_options: Vec<DhcpSendOption>,
    /// How long to ARP-probe the leased address before using it (declining
    /// it when another host answers), in milliseconds; 0 skips the probe.
    #[serde(default = "DhcpConfig::default_arp_probe_ms")]
    pub arp_probe_ms: u64,
}

impl DhcpConfig {
    fn default_timeout_ms() -> u64 {
        5_000
    }

    fn default_arp_probe_ms() -> u64 {
        300
    }
}

impl Default for DhcpConfig {
    fn default() -> Self {
        Self {
            timeout_ms: Self::default_timeout_ms(),
            identity: Identity::default(),
            send_options: Vec::new(),
            arp_probe_ms: Self::default_arp_probe_ms(),
        }
    }
}

/// The part of the network configuration the agent acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentConfig {
    /// The network's name (netconf `name`).
    pub network: String,
    /// Uplink the netconf names; the agent refuses a mismatch with its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// Primary or secondary attachment.
    #[serde(default)]
    pub mode: Mode,
    /// CIDRs routed via the host stack (service CIDRs, node addresses).
    #[serde(default)]
    pub host_routes: Vec<String>,
    /// DHCP settings; `None` when the pod runs its own client (`ipam: none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpConfig>,
    /// Interface MTU; `None` keeps the uplink's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Body of `POST /v1/cni/{add,del,check}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRequest {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`; may be absent on DEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// From `CNI_ARGS`.
    #[serde(default)]
    pub pod: PodIdentity,
    /// From the netconf.
    pub config: AttachmentConfig,
}

/// An interface in a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The netns path for the pod's interface; absent for the host side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address in a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `198.18.0.50/24`.
    pub address: String,
    /// The LAN router, if DHCP gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route in a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination CIDR.
    pub dst: String,
    /// Next hop, if not on-link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// DNS settings in a result (from DHCP options 6, 15 and 119).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

/// The lease behind an attachment (not part of the CNI result; the plugin
/// drops it, the CLI shows it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseInfo {
    /// `CNI_CONTAINERID` of the attachment.
    pub container_id: String,
    /// Pod interface name.
    pub ifname: String,
    /// Pod MAC.
    pub mac: String,
    /// Leased address with prefix.
    pub address: String,
    /// The DHCP server that granted it.
    pub server: String,
    /// Lease time in seconds.
    pub lease_secs: u32,
    /// Unix time (seconds) the lease was obtained or last renewed.
    pub obtained_at: u64,
    /// Unix time (seconds) of the next renewal (T1); `u64::MAX` for an
    /// infinite lease.
    pub renew_at: u64,
    /// Unix time (seconds) the lease expires; `u64::MAX` for an infinite
    /// lease.
    pub expires_at: u64,
    /// Client state (`bound`, `renewing`, `rebinding`, `expired`).
    pub state: String,
}

/// Body of a successful ADD or CHECK: a CNI 1.1 result plus the lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentResult {
    /// Host veth first, then the pod interface.
    pub interfaces: Vec<Interface>,
    /// The leased address.
    pub ips: Vec<IpConfig>,
    /// Routes written in the pod.
    pub routes: Vec<Route>,
    /// From DHCP.
    #[serde(default)]
    pub dns: Dns,
    /// The lease, if the agent holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseInfo>,
}

/// One attachment the runtime still considers valid (`cni.dev/valid-attachments`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentId {
    /// `containerID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `ifname`.
    pub ifname: String,
}

/// Body of `POST /v1/cni/gc`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcRequest {
    /// The network's name; only its attachments are considered.
    pub network: String,
    /// Everything not in this list is removed.
    pub valid_attachments: Vec<AttachmentId>,
}

/// Answer of `POST /v1/cni/gc`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcResponse {
    /// Attachments removed.
    pub removed: Vec<AttachmentId>,
}

/// One endpoint (pod interface) as the agent knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointInfo {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// The network's name.
    pub network: String,
    /// Pod interface name.
    pub ifname: String,
    /// Pod netns path.
    pub netns: String,
    /// Pod namespace/name, if known.
    #[serde(default)]
    pub pod: PodIdentity,
    /// Host-side veth name.
    pub host_veth: String,
    /// Host-side veth ifindex.
    pub host_ifindex: u32,
    /// Pod MAC.
    pub mac: String,
    /// Pod IPv4 with prefix, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Primary or secondary.
    pub mode: Mode,
}

/// Answer of `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    /// The agent can serve ADD.
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Agent version.
    pub version: String,
    /// Uplink name.
    pub uplink: String,
    /// Uplink ifindex.
    pub uplink_ifindex: u32,
    /// Where the maps and programs are pinned.
    pub pin_dir: String,
    /// Number of endpoints.
    pub endpoints: usize,
    /// Whether the programs were adopted from a previous run rather than loaded.
    pub adopted: bool,
}

/// Error body of every non-2xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// CNI error code (spec codes: 4 env, 6 decode, 7 invalid config, 11 try
    /// again later, 50/51 status; 100+ lanlink-specific).
    pub code: u32,
    /// Short lower-case message.
    pub msg: String,
    /// What happened in detail.
    #[serde(default)]
    pub details: String,
}

/// lanlink-specific CNI error codes (100 and above, as the spec reserves).
pub mod codes {
    /// `CNI_*` environment variable missing or bad.
    pub const INVALID_ENV: u32 = 4;
    /// Could not decode the netconf or a request.
    pub const DECODE: u32 = 6;
    /// Netconf is invalid.
    pub const INVALID_CONFIG: u32 = 7;
    /// Transient; retry.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot reach the agent.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// STATUS: the agent is up but cannot serve ADD.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// No DHCP lease could be obtained (no server, NAK, pool exhausted).
    pub const DHCP_FAILED: u32 = 100;
    /// Netlink work (veth, address, route) failed.
    pub const NETLINK: u32 = 101;
    /// eBPF map or program work failed.
    pub const DATAPLANE: u32 = 102;
    /// CHECK found the attachment differs from what the agent made.
    pub const CHECK_FAILED: u32 = 103;
    /// The agent failed in a way not listed above.
    pub const INTERNAL: u32 = 999;
}
