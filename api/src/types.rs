//! The request and response bodies exchanged over the agent's Unix socket
//! (see [`crate::routes`] for which route carries which). The plugin, the
//! agent and its CLI all use these, so they can never disagree on a field.
//!
//! Every error answers a non-2xx status with an [`ApiError`] body that carries
//! the CNI error code (one of [`crate::codes`]) the plugin reports.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::newtypes::{DhcpOption, Ipv4Cidr, Mac};

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

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Whether and how a pod gets IPv6 addresses from the LAN (netconf `ipv6`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ipv6Mode {
    /// Nothing: the pod's own kernel does what it likes with the LAN's
    /// router advertisements, and the result is IPv4-only.
    Off,
    /// An address in the LAN's autonomous prefix, chosen by the agent.
    Slaac,
    /// An address leased with DHCPv6 (IA_NA) on the pod's behalf.
    Dhcpv6,
    /// Follow the router advertisements: DHCPv6 when their M flag is set,
    /// SLAAC when a prefix is autonomous, nothing on a LAN without RAs.
    #[default]
    Auto,
}

/// How the interface identifier of a SLAAC address is made (netconf `ipv6Iid`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ipv6Iid {
    /// Modified EUI-64 of the pod's (stable) MAC (RFC 4291).
    #[default]
    Eui64,
    /// RFC 7217 stable-private from the prefix and the pod's identity.
    StablePrivacy,
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
    /// Extra options to send in DISCOVER and REQUEST, each checked (code,
    /// reserved codes, value form and length) when it is deserialized.
    #[serde(default)]
    pub send_options: Vec<DhcpOption>,
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

/// The first-hop security switches of an attachment (netconf `portSecurity`):
/// what a pod may do on the LAN beyond sending from its own addresses. The
/// defaults are those of a switch port facing an untrusted host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    try_from = "PortSecurityFields"
)]
pub struct PortSecurity {
    /// The pod may answer DHCP and DHCPv6 (a Pi-hole or AdGuard pod serving
    /// the LAN). Default: no.
    pub dhcp_server: bool,
    /// The pod may send IPv6 router advertisements and redirects. Default: no.
    pub router_advertisements: bool,
    /// Broadcast and multicast frames per second the pod may send (storm
    /// control); 0 = unlimited. Default 1,000.
    pub broadcast_pps: u32,
    /// Of which this many at once. Default 2,000.
    pub broadcast_burst: u32,
}

impl PortSecurity {
    /// Most frames per second (and burst) a limit may name.
    pub const MAX_RATE: u32 = 1_000_000;
    /// Default `broadcastPps`.
    pub const DEFAULT_PPS: u32 = 1_000;
    /// Default `broadcastBurst`.
    pub const DEFAULT_BURST: u32 = 2_000;

    /// The switches, with the limits checked: `broadcast_pps` at most
    /// [`Self::MAX_RATE`], and `broadcast_burst` in 1..=`MAX_RATE` when
    /// `broadcast_pps` is set.
    pub fn new(
        dhcp_server: bool,
        router_advertisements: bool,
        broadcast_pps: u32,
        broadcast_burst: u32,
    ) -> Result<Self, String> {
        if broadcast_pps > Self::MAX_RATE {
            return Err(format!(
                "broadcastPps {broadcast_pps} is over {}",
                Self::MAX_RATE
            ));
        }
        if broadcast_pps > 0 && !(1..=Self::MAX_RATE).contains(&broadcast_burst) {
            return Err(format!(
                "broadcastBurst {broadcast_burst} is out of range 1..={}",
                Self::MAX_RATE
            ));
        }
        Ok(Self {
            dhcp_server,
            router_advertisements,
            broadcast_pps,
            broadcast_burst,
        })
    }

    /// Whether every switch is at its default (left out when serialized).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for PortSecurity {
    fn default() -> Self {
        Self {
            dhcp_server: false,
            router_advertisements: false,
            broadcast_pps: Self::DEFAULT_PPS,
            broadcast_burst: Self::DEFAULT_BURST,
        }
    }
}

/// `portSecurity` as written, before its limits are checked.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PortSecurityFields {
    #[serde(default)]
    dhcp_server: bool,
    #[serde(default)]
    router_advertisements: bool,
    #[serde(default = "default_pps")]
    broadcast_pps: u32,
    #[serde(default = "default_burst")]
    broadcast_burst: u32,
}

fn default_pps() -> u32 {
    PortSecurity::DEFAULT_PPS
}

fn default_burst() -> u32 {
    PortSecurity::DEFAULT_BURST
}

impl TryFrom<PortSecurityFields> for PortSecurity {
    type Error = String;

    fn try_from(f: PortSecurityFields) -> Result<Self, String> {
        Self::new(
            f.dhcp_server,
            f.router_advertisements,
            f.broadcast_pps,
            f.broadcast_burst,
        )
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
    /// Prefixes routed via the host stack (service CIDRs, node addresses),
    /// each checked when it is deserialized.
    #[serde(default)]
    pub host_routes: Vec<Ipv4Cidr>,
    /// DHCP settings; `None` when the pod runs its own client (`ipam: none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpConfig>,
    /// Interface MTU; `None` keeps the uplink's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// First-hop security switches.
    #[serde(default, skip_serializing_if = "PortSecurity::is_default")]
    pub port_security: PortSecurity,
    /// IPv6 addressing (netconf `ipv6`); left out when `auto`, so an
    /// IPv4-era request (and del-queue entry) reads the same.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ipv6: Ipv6Mode,
    /// SLAAC interface identifiers (netconf `ipv6Iid`); left out when `eui64`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ipv6_iid: Ipv6Iid,
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
    /// MAC address.
    pub mac: Mac,
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
    pub mac: Mac,
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
    pub mac: Mac,
    /// Pod IPv4 with prefix, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The IPv6 address the agent gave the pod (`2001:…/128`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// How: `slaac` or `dhcpv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_source: Option<String>,
    /// Primary or secondary.
    pub mode: Mode,
    /// Its first-hop security switches.
    #[serde(default)]
    pub port_security: PortSecurity,
    /// Frames the dataplane dropped from this endpoint, by reason label
    /// (`drop_spoof_ip`, …); reasons with none are left out.
    #[serde(default)]
    pub drops: std::collections::BTreeMap<String, u64>,
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
    /// How the programs are attached: `tcx` or `tc` (clsact; absent from
    /// agents before the choice existed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attach: String,
}

/// Error body of every non-2xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// CNI error code, one of [`crate::codes`].
    pub code: u32,
    /// Short lower-case message.
    pub msg: String,
    /// What happened in detail.
    #[serde(default)]
    pub details: String,
}

/// Why an `ips[].address` is not `a.b.c.d/n`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{address:?} is not an IPv4 address with a prefix length (a.b.c.d/n)")]
pub struct AddressError {
    /// The address as written.
    pub address: String,
}

/// The IPv4 address of an `ips[].address` (`198.18.0.50/24` → `198.18.0.50`).
fn address_ip(address: &str) -> Result<Ipv4Addr, AddressError> {
    let bad = || AddressError {
        address: address.to_owned(),
    };
    let (ip, len) = address.split_once('/').ok_or_else(bad)?;
    let len_ok = !len.is_empty()
        && len.len() <= 2
        && len.bytes().all(|b| b.is_ascii_digit())
        && len.parse::<u8>().is_ok_and(|l| l <= 32);
    if !len_ok {
        return Err(bad());
    }
    ip.parse().map_err(|_| bad())
}

impl IpConfig {
    /// The address without its prefix length.
    pub fn ip(&self) -> Result<Ipv4Addr, AddressError> {
        address_ip(&self.address)
    }
}

impl AttachmentResult {
    /// The pod's address: `ips[0]` without its prefix length; `None` when
    /// the agent leased nothing (`ipam: none`).
    pub fn pod_ip(&self) -> Result<Option<Ipv4Addr>, AddressError> {
        self.ips.first().map(IpConfig::ip).transpose()
    }
}

/// The pod's address in a CNI result as the plugin prints it (any version):
/// `ips[0].address` without its prefix length; `None` when the result has
/// no address (`ipam: none`).
pub fn result_ip(result: &Value) -> Result<Option<Ipv4Addr>, AddressError> {
    match &result["ips"][0]["address"] {
        Value::Null => Ok(None),
        Value::String(address) => address_ip(address).map(Some),
        other => Err(AddressError {
            address: other.to_string(),
        }),
    }
}

/// One row of `GET /v1/stats`: a verdict's counters.
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

/// One flow of the conntrack-bypass map (`GET /v1/flows`): a flow that
/// entered the pod through the node's stack, whose replies the dataplane
/// steers back through it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowRow {
    /// `tcp`, `udp`, `icmp` or the protocol number.
    pub proto: String,
    /// The pod's address (source of the replies).
    pub pod: Ipv4Addr,
    /// The pod's port (ICMP: the echo identifier).
    pub pod_port: u16,
    /// The peer as the pod sees it (after the node's DNAT).
    pub peer: Ipv4Addr,
    /// The peer's port (ICMP: the echo identifier).
    pub peer_port: u16,
    /// The host veth the flow entered the pod through.
    pub host_ifindex: u32,
    /// Its name, when it resolves in the caller's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_veth: Option<String>,
    /// Milliseconds since the flow was last seen from the host stack.
    pub idle_ms: u64,
}

/// Answer of `GET /v1/dhcp`: the agent's DHCP client counters since it
/// started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpStats {
    /// DHCPDISCOVERs sent.
    pub sent_discover: u64,
    /// DHCPREQUESTs sent (selecting, renewing and rebinding).
    pub sent_request: u64,
    /// DHCPRELEASEs sent.
    pub sent_release: u64,
    /// DHCPDECLINEs sent.
    pub sent_decline: u64,
    /// Well-formed DHCPOFFERs received (for any client).
    pub received_offer: u64,
    /// Well-formed DHCPACKs received (for any client).
    pub received_ack: u64,
    /// Well-formed DHCPNAKs received (for any client).
    pub received_nak: u64,
    /// Well-formed replies of other types.
    pub received_other: u64,
    /// Frames ignored because they were truncated or not a valid reply.
    pub malformed: u64,
    /// Valid replies for no transaction of ours (unknown xid, other chaddr):
    /// other DHCP clients on the LAN, or late answers.
    pub unmatched: u64,
    /// Replies dropped because their transaction's queue was full.
    pub dropped: u64,
    /// Acquisitions and renewals that ran out of time.
    pub timeouts: u64,
    /// Frames that could not be sent.
    pub send_errors: u64,
    /// Errors reading the socket.
    pub recv_errors: u64,
    /// What happened to leases, one counter per event.
    pub events: DhcpEvents,
}

/// Lease lifecycle events since the agent's DHCP client started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpEvents {
    /// Leases acquired (DISCOVER to ACK, address probed free).
    pub acquired: u64,
    /// Leases extended by their server at T1 (unicast).
    pub renewed: u64,
    /// Leases extended by any server after T2 (broadcast).
    pub rebound: u64,
    /// Leases released (DHCPRELEASE sent).
    pub released: u64,
    /// Leases that ran out unrenewed or were refused.
    pub expired: u64,
    /// Renewals or rebindings refused with a DHCPNAK (the lease is gone).
    pub nak: u64,
    /// Acknowledged addresses declined because another host answers ARP
    /// for them.
    pub declined: u64,
    /// Acquisitions that failed (no server, pool exhausted, send error).
    pub acquire_failures: u64,
    /// Renewal and rebinding attempts that got no usable answer.
    pub renew_failures: u64,
    /// ARP probes that could not run (the address was used unchecked).
    pub probe_errors: u64,
}

/// One dropped frame, as `GET /v1/monitor` streams it (one JSON object per
/// line). Which pod sent it is resolved by the agent from the interface the
/// frame arrived on; the fields without a value are left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DropEventInfo {
    /// When the agent read the event: Unix time in milliseconds.
    pub time_ms: u64,
    /// Why the frame was dropped: the drop counter's label
    /// (`drop_spoof_ip`), or `unknown_<index>` for a reason this agent does
    /// not know (programs newer than the agent).
    pub reason: String,
    /// Ifindex of the interface the frame arrived on (a host veth, or the
    /// uplink), in the agent's namespace.
    pub ifindex: u32,
    /// That interface's name, when it still exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_veth: Option<String>,
    /// The pod's namespace, when the interface is a pod's and it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's name, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The attachment's `CNI_CONTAINERID`, when the interface is a pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The pod-side interface name (`eth0`, `net1`), likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Source MAC.
    pub src_mac: Mac,
    /// Destination MAC.
    pub dst_mac: Mac,
    /// EtherType in hex, `0x0800`.
    pub ethertype: String,
    /// Source IP address, for IPv4 and IPv6 frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<std::net::IpAddr>,
    /// Destination IP address, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<std::net::IpAddr>,
    /// IP protocol number (IPv6: the next header after the fixed header),
    /// for IPv4 and IPv6 frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<u8>,
    /// Source port, for TCP, UDP and SCTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    /// Destination port, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// ICMP or ICMPv6 type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP or ICMPv6 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// Frame length in bytes.
    pub len: u32,
}

/// How many drop events a `GET /v1/monitor` client missed because it did
/// not read fast enough: the agent never waits for a slow client, it skips
/// that client past the oldest events it still holds and says so with this
/// line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LostEvents {
    /// Events this client will not see.
    pub lost: u64,
}

/// One line of `GET /v1/monitor`: a drop, or a note that some were lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MonitorLine {
    /// A dropped frame.
    Drop(Box<DropEventInfo>),
    /// Events this client missed.
    Lost(LostEvents),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A request as the plugin sends it today decodes into the newtypes and
    /// encodes back to the same JSON: the wire format did not change.
    #[test]
    fn attachment_request_wire_format() {
        let wire = json!({
            "containerId": "c1",
            "netns": "/run/netns/p1",
            "ifname": "eth0",
            "pod": {"namespace": "default", "name": "web-0"},
            "config": {
                "network": "lan",
                "uplink": "eth0",
                "mode": "secondary",
                "hostRoutes": ["10.96.0.0/12", "198.18.0.2/32"],
                "dhcp": {
                    "timeoutMs": 2500,
                    "identity": "random",
                    "sendOptions": [{"code": 60, "value": "lanlink"}, {"code": 77, "value": "0x0a0b"}],
                    "arpProbeMs": 0
                },
                "mtu": 1400
            }
        });
        let req: AttachmentRequest = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(
            req.config.host_routes[0],
            "10.96.0.0/12".parse::<Ipv4Cidr>().unwrap()
        );
        let dhcp = req.config.dhcp.as_ref().unwrap();
        assert_eq!(dhcp.send_options[1].value(), [0x0a, 0x0b]);
        assert_eq!(serde_json::to_value(&req).unwrap(), wire);
    }

    /// The agent refuses what the plugin refuses, at decoding.
    #[test]
    fn attachment_request_refuses_bad_routes_and_options() {
        let with = |config: Value| {
            serde_json::from_value::<AttachmentRequest>(json!({
                "containerId": "c1", "ifname": "eth0", "config": config
            }))
        };
        assert!(with(json!({"network": "lan"})).is_ok());
        let e = with(json!({"network": "lan", "hostRoutes": ["10.96.0.1/12"]})).unwrap_err();
        assert!(e.to_string().contains("has host bits set"), "{e}");
        for code in [12, 50, 61] {
            let e = with(json!({"network": "lan",
                "dhcp": {"sendOptions": [{"code": code, "value": "x"}]}}))
            .unwrap_err();
            assert!(
                e.to_string().contains("written by the agent"),
                "{code}: {e}"
            );
        }
        let e = with(json!({"network": "lan",
            "dhcp": {"sendOptions": [{"code": 60, "value": "0xé1"}]}}))
        .unwrap_err();
        assert!(e.to_string().contains("other than hex digits"), "{e}");
    }

    #[test]
    fn result_addresses() {
        let result = json!({"ips": [{"address": "198.18.0.50/24", "version": "4"}]});
        assert_eq!(
            result_ip(&result).unwrap(),
            Some(Ipv4Addr::new(198, 18, 0, 50))
        );
        assert_eq!(result_ip(&json!({"ips": []})).unwrap(), None);
        assert_eq!(result_ip(&json!({})).unwrap(), None);
        for bad in [
            json!("198.18.0.50"),
            json!("x/24"),
            json!("198.18.0.50/33"),
            json!(7),
        ] {
            assert!(
                result_ip(&json!({"ips": [{"address": bad}]})).is_err(),
                "{bad}"
            );
        }
        let ip = IpConfig {
            address: "198.18.0.50/24".into(),
            gateway: None,
            interface: Some(1),
        };
        assert_eq!(ip.ip().unwrap(), Ipv4Addr::new(198, 18, 0, 50));
        let result = AttachmentResult {
            interfaces: vec![],
            ips: vec![ip],
            routes: vec![],
            dns: Dns::default(),
            lease: None,
        };
        assert_eq!(
            result.pod_ip().unwrap(),
            Some(Ipv4Addr::new(198, 18, 0, 50))
        );
    }

    #[test]
    fn dhcp_stats_wire_names() {
        let v = serde_json::to_value(DhcpStats::default()).unwrap();
        assert_eq!(v["events"]["acquire_failures"], json!(0));
        assert_eq!(v["sent_discover"], json!(0));
        let back: DhcpStats = serde_json::from_value(v).unwrap();
        assert_eq!(back, DhcpStats::default());
    }

    #[test]
    fn monitor_lines_wire_format() {
        let drop = DropEventInfo {
            time_ms: 1_700_000_000_123,
            reason: "drop_spoof_ip".into(),
            ifindex: 7,
            host_veth: Some("ll0123456789ab".into()),
            namespace: Some("default".into()),
            pod: Some("web".into()),
            container_id: Some("c1".into()),
            ifname: Some("eth0".into()),
            src_mac: Mac::from([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac::from([0xff; 6]),
            ethertype: "0x0800".into(),
            src: Some("198.18.0.250".parse().unwrap()),
            dst: Some("198.18.0.1".parse().unwrap()),
            proto: Some(1),
            sport: None,
            dport: None,
            icmp_type: Some(8),
            icmp_code: Some(0),
            len: 98,
        };
        let wire = json!({
            "timeMs": 1_700_000_000_123_u64, "reason": "drop_spoof_ip", "ifindex": 7,
            "hostVeth": "ll0123456789ab", "namespace": "default", "pod": "web",
            "containerId": "c1", "ifname": "eth0", "srcMac": "02:00:00:00:00:01",
            "dstMac": "ff:ff:ff:ff:ff:ff", "ethertype": "0x0800", "src": "198.18.0.250",
            "dst": "198.18.0.1", "proto": 1, "icmpType": 8, "icmpCode": 0, "len": 98
        });
        let line = MonitorLine::Drop(Box::new(drop));
        assert_eq!(serde_json::to_value(&line).unwrap(), wire);
        assert_eq!(serde_json::from_value::<MonitorLine>(wire).unwrap(), line);
        let lost = json!({"lost": 12});
        assert_eq!(
            serde_json::from_value::<MonitorLine>(lost.clone()).unwrap(),
            MonitorLine::Lost(LostEvents { lost: 12 })
        );
        assert_eq!(
            serde_json::to_value(MonitorLine::Lost(LostEvents { lost: 12 })).unwrap(),
            lost
        );
        assert!(serde_json::from_value::<MonitorLine>(json!({"other": 1})).is_err());
    }
}
