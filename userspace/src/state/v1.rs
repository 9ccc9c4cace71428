//! Version 1 of the state file: its own types, so the file format never
//! changes because an API type did.
//!
//! The layout is exactly what the first released agent wrote (it already
//! carried `"version": 1`, with the attachment's netconf part in camelCase and
//! the lease in snake_case), so those files load unchanged. A new layout gets
//! a `v2` module beside this one and a migration in [`super::Store::load`].

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant, SystemTime},
};

use lanlink_api::{self as wire, CidrError, DhcpOption, DhcpOptionError, Ipv4Cidr, PodIdentity};
use serde::{Deserialize, Serialize};

use crate::{dhcp, ipv6};

/// The format version these types read and write.
pub const VERSION: u32 = 1;

/// The whole file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct File {
    /// Always [`VERSION`].
    pub version: u32,
    /// Attachments by `<container id>/<ifname>`.
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// One attachment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// Who the pod is (absent in records of early development builds).
    #[serde(default)]
    pub pod: Pod,
    /// The netconf part the agent acted on.
    pub config: Attachment,
    /// Host-side veth name.
    pub host_veth: String,
    /// Host-side veth ifindex.
    pub host_ifindex: u32,
    /// Host-side veth MAC.
    pub host_mac: [u8; 6],
    /// Pod MAC.
    pub mac: [u8; 6],
    /// The lease the agent holds (`null` for `ipam: none`).
    #[serde(default)]
    pub lease: Option<Lease>,
    /// Whether the lease expired without renewal.
    #[serde(default)]
    pub expired: bool,
    /// The IPv6 address the agent gave the pod, if any (absent in records
    /// written before IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6>,
}

/// The IPv6 side of an attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ipv6 {
    /// The pod's address.
    pub address: Ipv6Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// `slaac` or `dhcpv6`.
    pub source: Ipv6Source,
    /// The default router's link-local address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Ipv6Addr>,
    /// On-link prefixes as `(prefix, length)`.
    #[serde(default)]
    pub on_link: Vec<(Ipv6Addr, u8)>,
    /// DNS servers.
    #[serde(default)]
    pub dns: Vec<Ipv6Addr>,
    /// The DHCPv6 lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease6>,
}

/// Where an IPv6 address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ipv6Source {
    /// SLAAC by the agent.
    Slaac,
    /// DHCPv6.
    Dhcpv6,
}

/// A DHCPv6 lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease6 {
    /// The IA_NA address.
    pub address: Ipv6Addr,
    /// Preferred lifetime, seconds.
    pub preferred_secs: u32,
    /// Valid lifetime, seconds.
    pub valid_secs: u32,
    /// T1, seconds after `obtained_at_unix_ms`.
    pub t1_secs: u32,
    /// T2, seconds after `obtained_at_unix_ms`.
    pub t2_secs: u32,
    /// The server's DUID, hex.
    pub server_id: String,
    /// Option 23.
    #[serde(default)]
    pub dns: Vec<Ipv6Addr>,
    /// Unix time of the reply, in milliseconds.
    pub obtained_at_unix_ms: u64,
}

/// Who the pod is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
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

/// The netconf part of an attachment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The network's name.
    pub network: String,
    /// The uplink the netconf named, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// Primary or secondary.
    #[serde(default)]
    pub mode: Mode,
    /// CIDRs routed via the host stack.
    #[serde(default)]
    pub host_routes: Vec<String>,
    /// DHCP settings; absent for `ipam: none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<Dhcp>,
    /// Interface MTU; absent keeps the uplink's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// First-hop security switches; absent: the defaults (records written
    /// before the switches existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_security: Option<PortSecurity>,
    /// IPv6 addressing; absent in records written before it existed:
    /// `auto`, the netconf's default.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ipv6: Ipv6Mode,
    /// How SLAAC interface identifiers are made.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ipv6_iid: Ipv6Iid,
}

/// Whether `v` is its type's default (left out of the file, so records
/// without the field are written back unchanged).
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// IPv6 addressing of an attachment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ipv6Mode {
    /// None.
    Off,
    /// SLAAC.
    Slaac,
    /// DHCPv6.
    Dhcpv6,
    /// As the router advertisements say.
    #[default]
    Auto,
}

/// How SLAAC interface identifiers are made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ipv6Iid {
    /// Modified EUI-64 of the MAC.
    #[default]
    Eui64,
    /// RFC 7217.
    StablePrivacy,
}

/// The first-hop security switches of an attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSecurity {
    /// May answer DHCP and DHCPv6.
    pub dhcp_server: bool,
    /// May send IPv6 router advertisements and redirects.
    pub router_advertisements: bool,
    /// Broadcast and multicast frames per second; 0 = unlimited.
    pub broadcast_pps: u32,
    /// Burst of those.
    pub broadcast_burst: u32,
}

/// Primary or secondary attachment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The pod's only interface.
    #[default]
    Primary,
    /// An extra interface beside another CNI's.
    Secondary,
}

/// The DHCP settings of an attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dhcp {
    /// Deadline for obtaining a lease, in milliseconds.
    #[serde(default = "Dhcp::default_timeout_ms")]
    pub timeout_ms: u64,
    /// How the client identifier and MAC were chosen.
    #[serde(default)]
    pub identity: Identity,
    /// Extra options sent in DISCOVER and REQUEST.
    #[serde(default)]
    pub send_options: Vec<SendOption>,
    /// ARP probe duration in milliseconds.
    #[serde(default = "Dhcp::default_arp_probe_ms")]
    pub arp_probe_ms: u64,
}

impl Dhcp {
    // The defaults the released agent applied when the netconf left them out.
    fn default_timeout_ms() -> u64 {
        5_000
    }

    fn default_arp_probe_ms() -> u64 {
        300
    }
}

/// How the client identifier and MAC are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Identity {
    /// Derived from namespace/pod/interface.
    #[default]
    Stable,
    /// Fresh for every attachment.
    Random,
}

/// One extra DHCP option.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendOption {
    /// The option code.
    pub code: u8,
    /// The value as the netconf gave it (text, or hex with `0x`).
    pub value: String,
}

/// A DHCP lease (field names in snake_case, as the released agent wrote them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// chaddr.
    pub mac: [u8; 6],
    /// Option 61 as sent.
    pub client_id: Vec<u8>,
    /// Option 12 as sent.
    pub hostname: Option<String>,
    /// yiaddr.
    pub address: Ipv4Addr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Option 54.
    pub server_id: Ipv4Addr,
    /// Ethernet source of the ACK.
    pub server_mac: [u8; 6],
    /// First router of option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 121 as (destination, prefix length, gateway).
    pub classless_routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 119.
    pub search: Vec<String>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 51.
    pub lease_secs: u32,
    /// T1, seconds after `obtained_at_unix`.
    pub t1_secs: u32,
    /// T2, seconds after `obtained_at_unix`.
    pub t2_secs: u32,
    /// Unix time the acknowledged request was sent.
    pub obtained_at_unix: u64,
}

impl From<&super::State> for File {
    fn from(st: &super::State) -> Self {
        Self {
            version: VERSION,
            endpoints: st
                .endpoints
                .iter()
                .map(|(k, ep)| (k.clone(), Endpoint::from(ep)))
                .collect(),
        }
    }
}

impl TryFrom<File> for super::State {
    type Error = InvalidRecord;

    fn try_from(file: File) -> Result<Self, InvalidRecord> {
        let endpoints = file
            .endpoints
            .into_iter()
            .map(|(k, ep)| {
                let ep = ep.into_endpoint(&k)?;
                Ok((k, ep))
            })
            .collect::<Result<_, InvalidRecord>>()?;
        Ok(Self { endpoints })
    }
}

impl From<&super::Endpoint> for Endpoint {
    fn from(ep: &super::Endpoint) -> Self {
        Self {
            container_id: ep.container_id.clone(),
            ifname: ep.ifname.clone(),
            netns: ep.netns.clone(),
            pod: Pod {
                namespace: ep.pod.namespace.clone(),
                name: ep.pod.name.clone(),
                uid: ep.pod.uid.clone(),
            },
            config: Attachment::from(&ep.config),
            host_veth: ep.host_veth.clone(),
            host_ifindex: ep.host_ifindex,
            host_mac: ep.host_mac,
            mac: ep.mac,
            lease: ep.lease.as_ref().map(Lease::from),
            expired: ep.expired,
            ipv6: ep.ipv6.as_ref().map(Ipv6::from),
        }
    }
}

impl Endpoint {
    /// The in-memory form of the record stored under `key`.
    pub fn into_endpoint(self, key: &str) -> Result<super::Endpoint, InvalidRecord> {
        let ep = self;
        Ok(super::Endpoint {
            container_id: ep.container_id,
            ifname: ep.ifname,
            netns: ep.netns,
            pod: PodIdentity {
                namespace: ep.pod.namespace,
                name: ep.pod.name,
                uid: ep.pod.uid,
            },
            config: ep.config.into_config(key)?,
            host_veth: ep.host_veth,
            host_ifindex: ep.host_ifindex,
            host_mac: ep.host_mac,
            mac: ep.mac,
            lease: ep.lease.map(dhcp::Lease::from),
            expired: ep.expired,
            ipv6: match ep.ipv6 {
                None => None,
                Some(v6) => Some(v6.into_assignment(key)?),
            },
        })
    }
}

impl From<&wire::AttachmentConfig> for Attachment {
    fn from(c: &wire::AttachmentConfig) -> Self {
        Self {
            network: c.network.clone(),
            uplink: c.uplink.clone(),
            mode: match c.mode {
                wire::Mode::Primary => Mode::Primary,
                wire::Mode::Secondary => Mode::Secondary,
            },
            host_routes: c.host_routes.iter().map(ToString::to_string).collect(),
            dhcp: c.dhcp.as_ref().map(|d| Dhcp {
                timeout_ms: d.timeout_ms,
                identity: match d.identity {
                    wire::Identity::Stable => Identity::Stable,
                    wire::Identity::Random => Identity::Random,
                },
                send_options: d
                    .send_options
                    .iter()
                    .map(|o| SendOption {
                        code: o.code(),
                        value: o.wire_value(),
                    })
                    .collect(),
                arp_probe_ms: d.arp_probe_ms,
            }),
            mtu: c.mtu,
            port_security: (!c.port_security.is_default()).then_some(PortSecurity {
                dhcp_server: c.port_security.dhcp_server,
                router_advertisements: c.port_security.router_advertisements,
                broadcast_pps: c.port_security.broadcast_pps,
                broadcast_burst: c.port_security.broadcast_burst,
            }),
            ipv6: match c.ipv6 {
                wire::Ipv6Mode::Off => Ipv6Mode::Off,
                wire::Ipv6Mode::Slaac => Ipv6Mode::Slaac,
                wire::Ipv6Mode::Dhcpv6 => Ipv6Mode::Dhcpv6,
                wire::Ipv6Mode::Auto => Ipv6Mode::Auto,
            },
            ipv6_iid: match c.ipv6_iid {
                wire::Ipv6Iid::Eui64 => Ipv6Iid::Eui64,
                wire::Ipv6Iid::StablePrivacy => Ipv6Iid::StablePrivacy,
            },
        }
    }
}

/// A stored value the API types no longer accept.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRecord {
    /// A `hostRoutes` entry is not an IPv4 CIDR.
    #[error("attachment {key}: host route")]
    HostRoute {
        /// The attachment.
        key: String,
        /// Why.
        #[source]
        source: CidrError,
    },
    /// The `portSecurity` limits are out of range.
    #[error("attachment {key}: portSecurity: {reason}")]
    PortSecurity {
        /// The attachment.
        key: String,
        /// Why.
        reason: String,
    },
    /// A `sendOptions` entry is not a valid option.
    #[error("attachment {key}: DHCP option {code}")]
    SendOption {
        /// The attachment.
        key: String,
        /// Its code.
        code: u8,
        /// Why.
        #[source]
        source: DhcpOptionError,
    },
    /// The DHCPv6 lease record is malformed.
    #[error("attachment {key}: DHCPv6 lease: {reason}")]
    Ipv6Lease {
        /// The attachment.
        key: String,
        /// Why.
        reason: String,
    },
}

/// A stored host route. Agents before `lanlink-api` accepted host bits
/// (`198.18.0.5/24`) and routed the network they lie in; keep doing that.
fn host_route(text: &str) -> Result<Ipv4Cidr, CidrError> {
    match text.parse() {
        Err(CidrError::HostBits { network, .. }) => Ok(network),
        other => other,
    }
}

impl Attachment {
    /// The API's form of the netconf part of attachment `key`.
    pub fn into_config(self, key: &str) -> Result<wire::AttachmentConfig, InvalidRecord> {
        let host_routes = self
            .host_routes
            .iter()
            .map(|r| host_route(r))
            .collect::<Result<_, _>>()
            .map_err(|source| InvalidRecord::HostRoute {
                key: key.into(),
                source,
            })?;
        let dhcp = match self.dhcp {
            None => None,
            Some(d) => Some(wire::DhcpConfig {
                timeout_ms: d.timeout_ms,
                identity: match d.identity {
                    Identity::Stable => wire::Identity::Stable,
                    Identity::Random => wire::Identity::Random,
                },
                send_options: d
                    .send_options
                    .into_iter()
                    .map(|o| {
                        DhcpOption::parse(o.code.into(), &o.value).map_err(|source| {
                            InvalidRecord::SendOption {
                                key: key.into(),
                                code: o.code,
                                source,
                            }
                        })
                    })
                    .collect::<Result<_, _>>()?,
                arp_probe_ms: d.arp_probe_ms,
            }),
        };
        Ok(wire::AttachmentConfig {
            network: self.network,
            uplink: self.uplink,
            mode: match self.mode {
                Mode::Primary => wire::Mode::Primary,
                Mode::Secondary => wire::Mode::Secondary,
            },
            host_routes,
            dhcp,
            mtu: self.mtu,
            port_security: match self.port_security {
                None => wire::PortSecurity::default(),
                Some(p) => wire::PortSecurity::new(
                    p.dhcp_server,
                    p.router_advertisements,
                    p.broadcast_pps,
                    p.broadcast_burst,
                )
                .map_err(|reason| InvalidRecord::PortSecurity {
                    key: key.into(),
                    reason,
                })?,
            },
            ipv6: match self.ipv6 {
                Ipv6Mode::Off => wire::Ipv6Mode::Off,
                Ipv6Mode::Slaac => wire::Ipv6Mode::Slaac,
                Ipv6Mode::Dhcpv6 => wire::Ipv6Mode::Dhcpv6,
                Ipv6Mode::Auto => wire::Ipv6Mode::Auto,
            },
            ipv6_iid: match self.ipv6_iid {
                Ipv6Iid::Eui64 => wire::Ipv6Iid::Eui64,
                Ipv6Iid::StablePrivacy => wire::Ipv6Iid::StablePrivacy,
            },
        })
    }
}

impl From<&dhcp::Lease> for Lease {
    fn from(l: &dhcp::Lease) -> Self {
        Self {
            mac: l.mac,
            client_id: l.client_id.clone(),
            hostname: l.hostname.clone(),
            address: l.address,
            prefix_len: l.prefix_len,
            server_id: l.server_id,
            server_mac: l.server_mac,
            router: l.router,
            classless_routes: l.classless_routes.clone(),
            dns: l.dns.clone(),
            domain: l.domain.clone(),
            search: l.search.clone(),
            mtu: l.mtu,
            lease_secs: l.lease_secs,
            t1_secs: l.t1_secs,
            t2_secs: l.t2_secs,
            obtained_at_unix: l.obtained_at_unix,
        }
    }
}

impl From<Lease> for dhcp::Lease {
    fn from(l: Lease) -> Self {
        Self {
            mac: l.mac,
            client_id: l.client_id,
            hostname: l.hostname,
            address: l.address,
            prefix_len: l.prefix_len,
            server_id: l.server_id,
            server_mac: l.server_mac,
            router: l.router,
            classless_routes: l.classless_routes,
            dns: l.dns,
            domain: l.domain,
            search: l.search,
            mtu: l.mtu,
            lease_secs: l.lease_secs,
            t1_secs: l.t1_secs,
            t2_secs: l.t2_secs,
            obtained_at_unix: l.obtained_at_unix,
        }
    }
}

impl From<&ipv6::assign::Assignment> for Ipv6 {
    fn from(a: &ipv6::assign::Assignment) -> Self {
        Self {
            address: a.address,
            prefix_len: a.prefix_len,
            source: match a.source {
                ipv6::assign::Source::Slaac => Ipv6Source::Slaac,
                ipv6::assign::Source::Dhcpv6 => Ipv6Source::Dhcpv6,
            },
            router: a.router,
            on_link: a.on_link.clone(),
            dns: a.dns.clone(),
            lease: a.lease.as_ref().map(|l| Lease6 {
                address: l.address,
                preferred_secs: l.preferred,
                valid_secs: l.valid,
                t1_secs: l.t1,
                t2_secs: l.t2,
                server_id: l.server_id.iter().map(|b| format!("{b:02x}")).collect(),
                dns: l.dns.clone(),
                obtained_at_unix_ms: l
                    .obtained_wall
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            }),
        }
    }
}

impl Ipv6 {
    /// The assignment this record describes; the lease's monotonic time is
    /// set back by the wall-clock time since it was obtained.
    pub fn into_assignment(self, key: &str) -> Result<ipv6::assign::Assignment, InvalidRecord> {
        let lease = match self.lease {
            None => None,
            Some(l) => {
                let server_id = (0..l.server_id.len())
                    .step_by(2)
                    .map(|i| {
                        l.server_id
                            .get(i..i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                    })
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| InvalidRecord::Ipv6Lease {
                        key: key.into(),
                        reason: format!("server id {:?} is not hex", l.server_id),
                    })?;
                let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(l.obtained_at_unix_ms);
                let age = SystemTime::now().duration_since(wall).unwrap_or_default();
                let now = Instant::now();
                Some(ipv6::dhcp6::Lease6 {
                    address: l.address,
                    preferred: l.preferred_secs,
                    valid: l.valid_secs,
                    t1: l.t1_secs,
                    t2: l.t2_secs,
                    server_id,
                    dns: l.dns,
                    obtained: now.checked_sub(age).unwrap_or(now),
                    obtained_wall: wall,
                })
            }
        };
        Ok(ipv6::assign::Assignment {
            address: self.address,
            prefix_len: self.prefix_len,
            source: match self.source {
                Ipv6Source::Slaac => ipv6::assign::Source::Slaac,
                Ipv6Source::Dhcpv6 => ipv6::assign::Source::Dhcpv6,
            },
            router: self.router,
            on_link: self.on_link,
            dns: self.dns,
            lease,
        })
    }
}
