//! The network configuration (netconf, on stdin) and the `CNI_*` environment.
//!
//! Parsing goes key by key: the netconf is read as a JSON object, and each known
//! key is decoded with serde on its own, so an error always names the field
//! (`invalid netconf: field hostRoutes[1]: "198.19.0.0/33" is not an IPv4
//! CIDR: prefix length 33 is greater than 32`). `hostRoutes` and
//! `sendOptions` are checked by `lanlink-api`'s newtypes ([`Ipv4Cidr`],
//! [`DhcpOption`]), the very checks the agent applies when it decodes the
//! request, so nothing the plugin accepts is refused later. Unknown keys are accepted and ignored, as the CNI convention asks.
//!
//! # Keys
//!
//! ```json
//! {
//!   "cniVersion": "1.1.0",              // 0.3.0, 0.3.1, 0.4.0, 1.0.0 or 1.1.0
//!   "name": "lan",                      // network name
//!   "type": "lanlink",                  // must be "lanlink"
//!   "socketPath": "/run/lanlink/lanlink.sock", // agent socket (default shown)
//!   "delQueueDir": "/var/lib/lanlink/del-queue", // where DEL is queued while the
//!                                   // agent is down (default shown; the agent's
//!                                   // --del-queue-dir, absolute)
//!   "uplink": "eth0",                   // optional; the agent refuses a mismatch
//!   "mode": "primary",                  // "primary" (default) or "secondary" (Multus)
//!   "hostRoutes": ["10.96.0.0/12"],     // IPv4 CIDRs routed via the host stack
//!   "mtu": 1500,                        // optional, 68..=65535; default: the uplink's
//!   "ipam": {                           // optional; absent = lanlink-dhcp with defaults
//!     "type": "lanlink-dhcp",           // "lanlink-dhcp" (default) or "none"
//!     "timeoutMs": 5000,                // 1..=300000
//!     "arpProbeMs": 300,                // conflict probe before use; 0 = none
//!     "identity": "stable",             // "stable" (default) or "random"
//!     "sendOptions": [{"code": 60, "value": "lanlink"}]  // code 1..=254, not one the
//!                                   // agent writes (RESERVED_OPTION_CODES); text or 0x hex
//!   },
//!   "portSecurity": {                   // optional; first-hop security (README "Security model")
//!     "dhcpServer": false,              // may answer DHCP/DHCPv6 (a Pi-hole pod)
//!     "routerAdvertisements": false,    // may send IPv6 RAs and redirects
//!     "broadcastPps": 1000,             // broadcast+multicast frames/s; 0 = unlimited
//!     "broadcastBurst": 2000            // 1..=1000000 when broadcastPps is set
//!   },
//!   "ipv6": "auto",                     // "off", "slaac", "dhcpv6" or "auto" (default)
//!   "ipv6Iid": "eui64",                 // SLAAC interface identifiers: "eui64" (default)
//!                                   // or "stable-privacy" (RFC 7217)
//!   "disableCheck": false               // CHECK succeeds without asking the agent
//! }
//! ```
//!
//! `ipv6` says how the agent gives the pod IPv6 addresses from the LAN, which
//! the result then carries next to the IPv4 lease: `slaac` an address in the
//! router advertisements' autonomous prefix, `dhcpv6` a lease (IA_NA) taken on
//! the pod's behalf, `auto` whichever the advertisements' flags ask for
//! (nothing on a LAN without them), `off` none (an IPv4-only result).
//!
//! `{"ipam": {"type": "none"}}` means the pod runs its own DHCP client (a VM in
//! a pod): the agent leases nothing and the result has no address. Its own
//! clients do IPv6 too, so `ipv6` is then `off` (`auto`, the default, means
//! `off`), and `slaac` or `dhcpv6`, which ask the agent to address the pod, are
//! refused rather than silently ignored. The runtime
//! adds `prevResult` (chaining, see [`crate::result`]), `runtimeConfig`, `args`
//! and, for GC, `cni.dev/valid-attachments`; `capabilities` is ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::result::PrevResult;
use lanlink_api::{
    AttachmentConfig, AttachmentId, AttachmentRequest, DhcpConfig, DhcpOption, Identity, Ipv4Cidr,
    Ipv6Iid, Ipv6Mode, Mode, PodIdentity, PortSecurity,
};

/// The `type` every lanlink netconf carries.
pub const PLUGIN_TYPE: &str = "lanlink";

/// Longest Unix socket path (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Longest DHCP timeout accepted, in milliseconds.
const MAX_DHCP_TIMEOUT_MS: u64 = 300_000;
/// The longest ARP probe of a leased address (`ipam.arpProbeMs`); RFC
/// 5227's own timings take about 7 s.
const MAX_ARP_PROBE_MS: u64 = 10_000;

/// A CNI specification version lanlink speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.3.0 (result format as 0.3.1).
    V0_3_0,
    /// 0.3.1.
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: drops `ips[].version`.
    V1_0_0,
    /// 1.1.0: adds STATUS and GC.
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first.
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest supported version (what VERSION reports).
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The version as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Whether results carry `ips[].version` (the 0.x formats).
    pub fn has_ip_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// The supported versions as a comma-separated list (for messages).
    pub fn supported_list() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = NetConfError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| NetConfError::IncompatibleVersion {
                version: s.to_owned(),
            })
    }
}

/// Why a netconf was refused.
#[derive(Debug, thiserror::Error)]
pub enum NetConfError {
    /// stdin is not JSON (CNI code 6).
    #[error("invalid netconf JSON: {source}")]
    Decode {
        /// The JSON error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// stdin is JSON but not an object (CNI code 6).
    #[error("invalid netconf JSON: expected an object, got {got}")]
    NotAnObject {
        /// What it was instead.
        got: &'static str,
    },
    /// `cniVersion` is not one lanlink speaks (CNI code 1).
    #[error(
        "incompatible CNI version {version:?}; supported: {}",
        CniVersion::supported_list()
    )]
    IncompatibleVersion {
        /// The version asked for.
        version: String,
    },
    /// A known key is missing or has a wrong type or value (CNI code 7).
    #[error("invalid netconf: field {field}: {reason}")]
    Invalid {
        /// JSON path of the key (`hostRoutes[1]`, `ipam.timeoutMs`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl NetConfError {
    /// An [`NetConfError::Invalid`] for `field`.
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        NetConfError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Where the pod's address comes from (netconf `ipam`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipam {
    /// The agent leases an address on the pod's behalf (`"type": "lanlink-dhcp"`,
    /// or `ipam` absent).
    Dhcp(DhcpConfig),
    /// The pod runs its own DHCP client (`"type": "none"`).
    None,
}

impl Default for Ipam {
    fn default() -> Self {
        Ipam::Dhcp(DhcpConfig::default())
    }
}

/// A parsed, validated lanlink netconf.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    /// `cniVersion`; results and errors are written in this version.
    pub cni_version: CniVersion,
    /// `name`: the network's name.
    pub name: String,
    /// `socketPath`: the agent's socket.
    pub socket_path: PathBuf,
    /// `delQueueDir`: where DEL is recorded while the agent's socket is
    /// unreachable ([`lanlink_api::del_queue`]).
    pub del_queue_dir: PathBuf,
    /// `uplink`: the LAN interface the agent must be using.
    pub uplink: Option<String>,
    /// `mode`.
    pub mode: Mode,
    /// `hostRoutes`: IPv4 prefixes.
    pub host_routes: Vec<Ipv4Cidr>,
    /// `ipam`.
    pub ipam: Ipam,
    /// `mtu`.
    pub mtu: Option<u32>,
    /// `portSecurity`.
    pub port_security: PortSecurity,
    /// `ipv6`, as the agent is to apply it: with `ipam.type` none, `off`
    /// whatever was written (`auto` or `off`, the only values accepted then).
    pub ipv6: Ipv6Mode,
    /// `ipv6Iid`.
    pub ipv6_iid: Ipv6Iid,
    /// `disableCheck`.
    pub disable_check: bool,
    /// `prevResult`, when lanlink is not first in a chain (or on CHECK).
    pub prev_result: Option<PrevResult>,
    /// `cni.dev/valid-attachments` (GC only).
    pub valid_attachments: Option<Vec<AttachmentId>>,
    /// `runtimeConfig`, kept as is (lanlink uses no capability yet).
    pub runtime_config: Option<Value>,
    /// `args`, kept as is.
    pub args: Option<Value>,
}

impl NetConf {
    /// Parses and validates a netconf from its JSON bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, NetConfError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|source| NetConfError::Decode { source })?;
        let Value::Object(obj) = value else {
            return Err(NetConfError::NotAnObject {
                got: json_kind(&value),
            });
        };
        Self::from_object(&obj)
    }

    /// Reads just the `cniVersion` of a netconf, if it is a supported one (for
    /// writing an error in the caller's version when the rest is broken).
    pub fn sniff_version(bytes: &[u8]) -> Option<CniVersion> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        value.get("cniVersion")?.as_str()?.parse().ok()
    }

    fn from_object(obj: &Map<String, Value>) -> Result<Self, NetConfError> {
        // The version first: with an unknown version nothing else can be trusted
        // to mean what we think it means.
        let version: String = required(obj, "", "cniVersion")?;
        let cni_version: CniVersion = version.parse()?;

        let name: String = required(obj, "", "name")?;
        validate_network_name(&name)?;
        let plugin_type: String = required(obj, "", "type")?;
        if plugin_type != PLUGIN_TYPE {
            return Err(NetConfError::invalid(
                "type",
                format!("expected {PLUGIN_TYPE:?}, got {plugin_type:?}"),
            ));
        }

        let socket_path = match optional::<String>(obj, "", "socketPath")? {
            Some(path) => {
                validate_socket_path(&path)?;
                PathBuf::from(path)
            }
            None => PathBuf::from(lanlink_api::DEFAULT_SOCKET),
        };

        let del_queue_dir = match optional::<String>(obj, "", "delQueueDir")? {
            Some(dir) if dir.starts_with('/') => PathBuf::from(dir),
            Some(dir) => {
                return Err(NetConfError::invalid(
                    "delQueueDir",
                    format!("{dir:?} is not an absolute path"),
                ));
            }
            None => PathBuf::from(lanlink_api::del_queue::DEFAULT_DIR),
        };

        let uplink: Option<String> = optional(obj, "", "uplink")?;
        if let Some(uplink) = &uplink {
            validate_ifname(uplink).map_err(|reason| NetConfError::invalid("uplink", reason))?;
        }

        let mode = match optional::<String>(obj, "", "mode")?.as_deref() {
            None | Some("primary") => Mode::Primary,
            Some("secondary") => Mode::Secondary,
            Some(other) => {
                return Err(NetConfError::invalid(
                    "mode",
                    format!("expected \"primary\" or \"secondary\", got {other:?}"),
                ));
            }
        };

        let host_routes = parse_host_routes(obj)?;

        let mtu: Option<u32> = optional(obj, "", "mtu")?;
        if let Some(mtu) = mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(NetConfError::invalid(
                "mtu",
                format!("{mtu} is out of range 68..=65535"),
            ));
        }

        let ipam = match obj.get("ipam") {
            None | Some(Value::Null) => Ipam::default(),
            Some(Value::Object(ipam)) => parse_ipam(ipam)?,
            Some(other) => {
                return Err(NetConfError::invalid(
                    "ipam",
                    format!("expected an object, got {}", json_kind(other)),
                ));
            }
        };

        let port_security = optional::<PortSecurity>(obj, "", "portSecurity")?.unwrap_or_default();

        let ipv6 = parse_ipv6(obj, &ipam)?;
        let ipv6_iid = match optional::<String>(obj, "", "ipv6Iid")?.as_deref() {
            None | Some("eui64") => Ipv6Iid::Eui64,
            Some("stable-privacy") => Ipv6Iid::StablePrivacy,
            Some(other) => {
                return Err(NetConfError::invalid(
                    "ipv6Iid",
                    format!("expected \"eui64\" or \"stable-privacy\", got {other:?}"),
                ));
            }
        };

        let disable_check = optional::<bool>(obj, "", "disableCheck")?.unwrap_or(false);

        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(value) => Some(PrevResult::from_value(value)?),
        };

        let valid_attachments = parse_valid_attachments(obj)?;

        Ok(NetConf {
            cni_version,
            name,
            socket_path,
            del_queue_dir,
            uplink,
            mode,
            host_routes,
            ipam,
            mtu,
            port_security,
            ipv6,
            ipv6_iid,
            disable_check,
            prev_result,
            valid_attachments,
            runtime_config: obj.get("runtimeConfig").cloned(),
            args: obj.get("args").cloned(),
        })
    }

    /// The part of the netconf the agent acts on.
    pub fn attachment_config(&self) -> AttachmentConfig {
        AttachmentConfig {
            network: self.name.clone(),
            uplink: self.uplink.clone(),
            mode: self.mode,
            host_routes: self.host_routes.clone(),
            dhcp: match &self.ipam {
                Ipam::Dhcp(dhcp) => Some(dhcp.clone()),
                Ipam::None => None,
            },
            mtu: self.mtu,
            port_security: self.port_security,
            ipv6: self.ipv6,
            ipv6_iid: self.ipv6_iid,
        }
    }

    /// The request for ADD, DEL or CHECK of the attachment `env` names.
    pub fn attachment_request(&self, env: &CniEnv) -> AttachmentRequest {
        AttachmentRequest {
            container_id: env.container_id.clone().unwrap_or_default(),
            netns: env.netns.clone(),
            ifname: env.ifname.clone().unwrap_or_default(),
            pod: env.pod.clone(),
            config: self.attachment_config(),
        }
    }
}

/// Decodes `obj[key]` with serde; `Ok(None)` when absent or `null`.
fn optional<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    prefix: &str,
    key: &str,
) -> Result<Option<T>, NetConfError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => T::deserialize(value)
            .map(Some)
            .map_err(|e| NetConfError::invalid(format!("{prefix}{key}"), e.to_string())),
    }
}

/// Decodes `obj[key]` with serde; an error when absent.
fn required<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    prefix: &str,
    key: &str,
) -> Result<T, NetConfError> {
    optional(obj, prefix, key)?
        .ok_or_else(|| NetConfError::invalid(format!("{prefix}{key}"), "required but missing"))
}

/// The JSON type of a value, for messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Network names: an alphanumeric, then alphanumerics, `_`, `.` or `-` (spec).
fn validate_network_name(name: &str) -> Result<(), NetConfError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NetConfError::invalid(
            "name",
            format!("{name:?} is not a valid network name (alphanumerics, '_', '.', '-')"),
        ))
    }
}

fn validate_socket_path(path: &str) -> Result<(), NetConfError> {
    if !path.starts_with('/') {
        return Err(NetConfError::invalid(
            "socketPath",
            format!("{path:?} is not an absolute path"),
        ));
    }
    if path.len() > MAX_SOCKET_PATH {
        return Err(NetConfError::invalid(
            "socketPath",
            format!(
                "is {} bytes long, Unix sockets allow {MAX_SOCKET_PATH}",
                path.len()
            ),
        ));
    }
    Ok(())
}

/// Linux interface names: 1..=15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub(crate) fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > 15 {
        return Err(format!("interface name {name:?} is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is not allowed"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "interface name {name:?} contains '/', ':' or whitespace"
        ));
    }
    Ok(())
}

fn parse_host_routes(obj: &Map<String, Value>) -> Result<Vec<Ipv4Cidr>, NetConfError> {
    let Some(entries) = optional::<Vec<Value>>(obj, "", "hostRoutes")? else {
        return Ok(Vec::new());
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let field = format!("hostRoutes[{i}]");
            let Value::String(cidr) = entry else {
                return Err(NetConfError::invalid(
                    field,
                    format!("expected a string, got {}", json_kind(entry)),
                ));
            };
            cidr.parse::<Ipv4Cidr>()
                .map_err(|e| NetConfError::invalid(field, e.to_string()))
        })
        .collect()
}

fn parse_ipam(ipam: &Map<String, Value>) -> Result<Ipam, NetConfError> {
    match optional::<String>(ipam, "ipam.", "type")?.as_deref() {
        None | Some("lanlink-dhcp") => {}
        Some("none") => return Ok(Ipam::None),
        Some(other) => {
            return Err(NetConfError::invalid(
                "ipam.type",
                format!(
                    "{other:?} is not supported: lanlink leases addresses itself; \
                     use \"lanlink-dhcp\" or \"none\""
                ),
            ));
        }
    }

    let mut dhcp = DhcpConfig::default();
    if let Some(timeout_ms) = optional::<u64>(ipam, "ipam.", "timeoutMs")? {
        if !(1..=MAX_DHCP_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(NetConfError::invalid(
                "ipam.timeoutMs",
                format!("{timeout_ms} is out of range 1..={MAX_DHCP_TIMEOUT_MS}"),
            ));
        }
        dhcp.timeout_ms = timeout_ms;
    }
    if let Some(probe_ms) = optional::<u64>(ipam, "ipam.", "arpProbeMs")? {
        dhcp.arp_probe_ms = probe_ms;
    }
    // The probe runs inside the lease deadline; the default one too.
    let limit = MAX_ARP_PROBE_MS.min(dhcp.timeout_ms - 1);
    if dhcp.arp_probe_ms > limit {
        return Err(NetConfError::invalid(
            "ipam.arpProbeMs",
            format!(
                "{} is out of range 0..={limit} (at most {MAX_ARP_PROBE_MS}, and below \
                 ipam.timeoutMs; the default is {})",
                dhcp.arp_probe_ms,
                DhcpConfig::default().arp_probe_ms
            ),
        ));
    }
    if let Some(identity) = optional::<String>(ipam, "ipam.", "identity")? {
        dhcp.identity = match identity.as_str() {
            "stable" => Identity::Stable,
            "random" => Identity::Random,
            other => {
                return Err(NetConfError::invalid(
                    "ipam.identity",
                    format!("expected \"stable\" or \"random\", got {other:?}"),
                ));
            }
        };
    }
    if let Some(options) = optional::<Vec<Value>>(ipam, "ipam.", "sendOptions")? {
        dhcp.send_options = options
            .iter()
            .enumerate()
            .map(|(i, option)| parse_send_option(i, option))
            .collect::<Result<_, _>>()?;
    }
    Ok(Ipam::Dhcp(dhcp))
}

/// `ipv6`, checked against `ipam`: with `ipam.type` none the pod runs its
/// own clients, so the agent addresses nothing (`auto` becomes `off`), and a
/// mode that asks it to is refused, not dropped without a word.
fn parse_ipv6(obj: &Map<String, Value>, ipam: &Ipam) -> Result<Ipv6Mode, NetConfError> {
    let written = optional::<String>(obj, "", "ipv6")?;
    let mode = match written.as_deref() {
        None | Some("auto") => Ipv6Mode::Auto,
        Some("off") => Ipv6Mode::Off,
        Some("slaac") => Ipv6Mode::Slaac,
        Some("dhcpv6") => Ipv6Mode::Dhcpv6,
        Some(other) => {
            return Err(NetConfError::invalid(
                "ipv6",
                format!("expected \"off\", \"slaac\", \"dhcpv6\" or \"auto\", got {other:?}"),
            ));
        }
    };
    match (ipam, mode) {
        (Ipam::Dhcp(_), mode) => Ok(mode),
        (Ipam::None, Ipv6Mode::Off | Ipv6Mode::Auto) => Ok(Ipv6Mode::Off),
        (Ipam::None, Ipv6Mode::Slaac | Ipv6Mode::Dhcpv6) => Err(NetConfError::invalid(
            "ipv6",
            format!(
                "{:?} has the agent address the pod, but with ipam.type \"none\" the pod \
                 runs its own clients; use \"off\" or \"auto\" (or leave it out)",
                written.unwrap_or_default()
            ),
        )),
    }
}

/// One `ipam.sendOptions[i]`: `{"code", "value"}`, checked by [`DhcpOption`];
/// an error names the key that is wrong.
fn parse_send_option(i: usize, option: &Value) -> Result<DhcpOption, NetConfError> {
    let prefix = format!("ipam.sendOptions[{i}].");
    let Value::Object(option) = option else {
        return Err(NetConfError::invalid(
            format!("ipam.sendOptions[{i}]"),
            format!("expected an object, got {}", json_kind(option)),
        ));
    };
    let code: u64 = required(option, &prefix, "code")?;
    let value: String = required(option, &prefix, "value")?;
    DhcpOption::parse(code, &value)
        .map_err(|e| NetConfError::invalid(format!("{prefix}{}", e.key()), e.to_string()))
}

fn parse_valid_attachments(
    obj: &Map<String, Value>,
) -> Result<Option<Vec<AttachmentId>>, NetConfError> {
    const KEY: &str = "cni.dev/valid-attachments";
    let Some(entries) = optional::<Vec<Value>>(obj, "", KEY)? else {
        return Ok(None);
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let field = format!("{KEY}[{i}]");
            let Value::Object(entry) = entry else {
                return Err(NetConfError::invalid(
                    field,
                    format!("expected an object, got {}", json_kind(entry)),
                ));
            };
            Ok(AttachmentId {
                container_id: required(entry, &format!("{field}."), "containerID")?,
                ifname: required(entry, &format!("{field}."), "ifname")?,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A CNI verb (`CNI_COMMAND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// ADD.
    Add,
    /// DEL.
    Del,
    /// CHECK.
    Check,
    /// STATUS.
    Status,
    /// GC.
    Gc,
    /// VERSION.
    Version,
}

impl Command {
    /// The verb as the runtime spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// The environment variables this verb cannot do without.
    fn required_vars(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Status | Command::Gc | Command::Version => &[],
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the `CNI_*` environment was refused (CNI code 4).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// Required variables are unset or empty.
    #[error("required environment variables missing: {}", .names.join(", "))]
    Missing {
        /// The missing variables, in the order the spec lists them.
        names: Vec<&'static str>,
    },
    /// `CNI_COMMAND` is not a verb lanlink knows.
    #[error("CNI_COMMAND: unknown command {command:?}")]
    UnknownCommand {
        /// What it was.
        command: String,
    },
    /// A variable is set but malformed.
    #[error("{name}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The `CNI_*` environment of one invocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
    /// `CNI_ARGS` as key/value pairs (all of them, `IgnoreUnknown` included).
    pub args: BTreeMap<String, String>,
    /// The pod, from `K8S_POD_NAMESPACE`, `K8S_POD_NAME` and `K8S_POD_UID` in `CNI_ARGS`.
    pub pod: PodIdentity,
}

/// Reads `CNI_COMMAND` through `lookup` (e.g. `|k| std::env::var(k).ok()`).
pub fn command_from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Command, EnvError> {
    let command = lookup("CNI_COMMAND")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| EnvError::Missing {
            names: vec!["CNI_COMMAND"],
        })?;
    match command.as_str() {
        "ADD" => Ok(Command::Add),
        "DEL" => Ok(Command::Del),
        "CHECK" => Ok(Command::Check),
        "STATUS" => Ok(Command::Status),
        "GC" => Ok(Command::Gc),
        "VERSION" => Ok(Command::Version),
        _ => Err(EnvError::UnknownCommand { command }),
    }
}

impl CniEnv {
    /// Reads and checks the environment `command` needs through `lookup`.
    ///
    /// Unknown `CNI_ARGS` keys are accepted whether or not `IgnoreUnknown` is
    /// set: runtimes pass keys for other plugins, and refusing them helps nobody.
    pub fn from_lookup(
        command: Command,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, EnvError> {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let missing: Vec<&'static str> = command
            .required_vars()
            .iter()
            .copied()
            .filter(|name| get(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(EnvError::Missing { names: missing });
        }

        let container_id = get("CNI_CONTAINERID");
        if let Some(id) = &container_id {
            validate_container_id(id)?;
        }
        let ifname = get("CNI_IFNAME");
        if let Some(ifname) = &ifname {
            validate_ifname(ifname).map_err(|reason| EnvError::Invalid {
                name: "CNI_IFNAME",
                reason,
            })?;
        }
        let path = get("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        let args = parse_cni_args(get("CNI_ARGS").as_deref().unwrap_or(""))?;
        let pod = PodIdentity {
            namespace: args.get("K8S_POD_NAMESPACE").cloned(),
            name: args.get("K8S_POD_NAME").cloned(),
            uid: args.get("K8S_POD_UID").cloned(),
        };
        Ok(CniEnv {
            container_id,
            netns: get("CNI_NETNS"),
            ifname,
            path,
            args,
            pod,
        })
    }
}

/// Container IDs: an alphanumeric, then alphanumerics, `_`, `.` or `-` (as the
/// reference plugins check).
fn validate_container_id(id: &str) -> Result<(), EnvError> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(EnvError::Invalid {
            name: "CNI_CONTAINERID",
            reason: format!("{id:?} has invalid characters"),
        })
    }
}

/// Splits `K=V;K=V` (empty pairs are skipped).
fn parse_cni_args(raw: &str) -> Result<BTreeMap<String, String>, EnvError> {
    raw.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(EnvError::Invalid {
                name: "CNI_ARGS",
                reason: format!("{pair:?} is not KEY=VALUE"),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetConf, NetConfError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    fn minimal() -> Value {
        json!({"cniVersion": "1.1.0", "name": "lan", "type": "lanlink"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = minimal();
        v[key] = value;
        v
    }

    fn invalid_field(result: Result<NetConf, NetConfError>) -> (String, String) {
        match result {
            Err(NetConfError::Invalid { field, reason }) => (field, reason),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn minimal_gets_defaults() {
        let conf = parse(minimal()).unwrap();
        assert_eq!(conf.cni_version, CniVersion::V1_1_0);
        assert_eq!(conf.name, "lan");
        assert_eq!(conf.socket_path, PathBuf::from(lanlink_api::DEFAULT_SOCKET));
        assert_eq!(
            conf.del_queue_dir,
            PathBuf::from("/var/lib/lanlink/del-queue")
        );
        assert_eq!(conf.mode, Mode::Primary);
        assert_eq!(conf.ipam, Ipam::Dhcp(DhcpConfig::default()));
        assert!(conf.host_routes.is_empty());
        assert!(!conf.disable_check);
        assert_eq!(
            conf.attachment_config(),
            AttachmentConfig {
                network: "lan".into(),
                uplink: None,
                mode: Mode::Primary,
                host_routes: vec![],
                dhcp: Some(DhcpConfig::default()),
                mtu: None,
                port_security: PortSecurity {
                    dhcp_server: false,
                    router_advertisements: false,
                    broadcast_pps: 1000,
                    broadcast_burst: 2000,
                },
                ipv6: Ipv6Mode::Auto,
                ipv6_iid: Ipv6Iid::Eui64,
            }
        );
    }

    #[test]
    fn full_netconf() {
        let conf = parse(json!({
            "cniVersion": "0.4.0",
            "name": "lan-1.x_y",
            "type": "lanlink",
            "socketPath": "/tmp/a.sock",
            "uplink": "eth0",
            "mode": "secondary",
            "hostRoutes": ["10.96.0.0/12", "198.18.0.2/32"],
            "mtu": 1400,
            "ipam": {"type": "lanlink-dhcp", "timeoutMs": 2500, "arpProbeMs": 0, "identity": "random",
                     "sendOptions": [{"code": 60, "value": "lanlink"}, {"code": 77, "value": "0x0a0B"}]},
            "portSecurity": {"dhcpServer": true, "routerAdvertisements": true, "broadcastPps": 0},
            "ipv6": "dhcpv6",
            "ipv6Iid": "stable-privacy",
            "disableCheck": true,
            "capabilities": {"mac": true},
            "runtimeConfig": {"mac": "aa:bb:cc:dd:ee:ff"},
            "args": {"cni": {"x": 1}},
            "someFutureKey": [1, 2, 3],
        }))
        .unwrap();
        assert_eq!(conf.cni_version, CniVersion::V0_4_0);
        assert!(conf.disable_check);
        assert_eq!(
            conf.runtime_config,
            Some(json!({"mac": "aa:bb:cc:dd:ee:ff"}))
        );
        assert_eq!(
            conf.attachment_config(),
            AttachmentConfig {
                network: "lan-1.x_y".into(),
                uplink: Some("eth0".into()),
                mode: Mode::Secondary,
                host_routes: vec![
                    "10.96.0.0/12".parse().unwrap(),
                    "198.18.0.2/32".parse().unwrap()
                ],
                dhcp: Some(DhcpConfig {
                    timeout_ms: 2500,
                    arp_probe_ms: 0,
                    identity: Identity::Random,
                    send_options: vec![
                        DhcpOption::new(60, b"lanlink".to_vec()).unwrap(),
                        DhcpOption::new(77, vec![0x0a, 0x0b]).unwrap(),
                    ],
                }),
                mtu: Some(1400),
                port_security: PortSecurity {
                    dhcp_server: true,
                    router_advertisements: true,
                    broadcast_pps: 0,
                    broadcast_burst: 2000,
                },
                ipv6: Ipv6Mode::Dhcpv6,
                ipv6_iid: Ipv6Iid::StablePrivacy,
            }
        );
    }

    #[test]
    fn every_mode() {
        assert_eq!(
            parse(with("mode", json!("primary"))).unwrap().mode,
            Mode::Primary
        );
        assert_eq!(
            parse(with("mode", json!("secondary"))).unwrap().mode,
            Mode::Secondary
        );
        let (field, reason) = invalid_field(parse(with("mode", json!("bridge"))));
        assert_eq!(field, "mode");
        assert!(reason.contains("\"bridge\""), "{reason}");
        let (field, _) = invalid_field(parse(with("mode", json!(1))));
        assert_eq!(field, "mode");
    }

    #[test]
    fn every_ipv6_mode() {
        for (written, mode) in [
            ("off", Ipv6Mode::Off),
            ("slaac", Ipv6Mode::Slaac),
            ("dhcpv6", Ipv6Mode::Dhcpv6),
            ("auto", Ipv6Mode::Auto),
        ] {
            let conf = parse(with("ipv6", json!(written))).unwrap();
            assert_eq!(conf.ipv6, mode, "{written}");
            assert_eq!(conf.attachment_config().ipv6, mode, "{written}");
            // The netconf spells each mode as the agent's API does.
            assert_eq!(serde_json::to_value(mode).unwrap(), json!(written));
        }
        assert_eq!(parse(minimal()).unwrap().ipv6, Ipv6Mode::Auto);
        assert_eq!(
            parse(with("ipv6", Value::Null)).unwrap().ipv6,
            Ipv6Mode::Auto
        );
        // Secondary attachments get IPv6 too (the prefix on-link).
        let secondary = json!({"cniVersion": "1.1.0", "name": "lan", "type": "lanlink",
                               "mode": "secondary", "ipv6": "slaac"});
        assert_eq!(parse(secondary).unwrap().ipv6, Ipv6Mode::Slaac);
    }

    #[test]
    fn bad_ipv6_modes_name_the_field_and_the_values() {
        for bad in ["on", "SLAAC", "dhcp", "stateless", ""] {
            let err = parse(with("ipv6", json!(bad))).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid netconf: field ipv6: expected \"off\", \"slaac\", \"dhcpv6\" \
                     or \"auto\", got {bad:?}"
                )
            );
        }
        for bad in [
            json!(true),
            json!(6),
            json!(["slaac"]),
            json!({"mode": "slaac"}),
        ] {
            let (field, reason) = invalid_field(parse(with("ipv6", bad.clone())));
            assert_eq!(field, "ipv6", "{bad}");
            assert!(reason.contains("expected a string"), "{bad}: {reason}");
        }
    }

    #[test]
    fn ipv6_with_ipam_none() {
        let none = |ipv6: Option<&str>| {
            let mut v = with("ipam", json!({"type": "none"}));
            if let Some(ipv6) = ipv6 {
                v["ipv6"] = json!(ipv6);
            }
            parse(v)
        };
        // The pod's own clients do IPv6: the agent addresses nothing.
        for ipv6 in [None, Some("auto"), Some("off")] {
            let conf = none(ipv6).unwrap();
            assert_eq!(conf.ipv6, Ipv6Mode::Off, "{ipv6:?}");
            assert_eq!(conf.attachment_config().ipv6, Ipv6Mode::Off, "{ipv6:?}");
            assert_eq!(conf.attachment_config().dhcp, None);
        }
        for ipv6 in ["slaac", "dhcpv6"] {
            let err = none(Some(ipv6)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid netconf: field ipv6: {ipv6:?} has the agent address the pod, but \
                     with ipam.type \"none\" the pod runs its own clients; use \"off\" or \
                     \"auto\" (or leave it out)"
                )
            );
        }
        // A mode that is no mode at all is named as such, ipam none or not.
        let (field, reason) = invalid_field(none(Some("on")));
        assert_eq!(field, "ipv6");
        assert!(reason.starts_with("expected"), "{reason}");
        // The explicit lanlink-dhcp keeps every mode.
        let v = json!({"cniVersion": "1.1.0", "name": "lan", "type": "lanlink",
                       "ipam": {"type": "lanlink-dhcp"}, "ipv6": "dhcpv6"});
        assert_eq!(parse(v).unwrap().ipv6, Ipv6Mode::Dhcpv6);
    }

    #[test]
    fn every_ipv6_iid() {
        for (written, iid) in [
            ("eui64", Ipv6Iid::Eui64),
            ("stable-privacy", Ipv6Iid::StablePrivacy),
        ] {
            let conf = parse(with("ipv6Iid", json!(written))).unwrap();
            assert_eq!(conf.ipv6_iid, iid, "{written}");
            assert_eq!(conf.attachment_config().ipv6_iid, iid, "{written}");
            assert_eq!(serde_json::to_value(iid).unwrap(), json!(written));
        }
        assert_eq!(parse(minimal()).unwrap().ipv6_iid, Ipv6Iid::Eui64);
        for bad in [
            "EUI64",
            "eui-64",
            "stable_privacy",
            "stablePrivacy",
            "random",
            "",
        ] {
            let err = parse(with("ipv6Iid", json!(bad))).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid netconf: field ipv6Iid: expected \"eui64\" or \"stable-privacy\", \
                     got {bad:?}"
                )
            );
        }
        let (field, _) = invalid_field(parse(with("ipv6Iid", json!(64))));
        assert_eq!(field, "ipv6Iid");
    }

    #[test]
    fn every_supported_version() {
        for v in CniVersion::ALL {
            let conf = parse(with("cniVersion", json!(v.as_str()))).unwrap();
            assert_eq!(conf.cni_version, v);
        }
    }

    #[test]
    fn ipam_shapes() {
        assert_eq!(
            parse(with("ipam", json!({"type": "none"}))).unwrap().ipam,
            Ipam::None
        );
        assert_eq!(
            parse(with("ipam", json!({"type": "none"})))
                .unwrap()
                .attachment_config()
                .dhcp,
            None
        );
        assert_eq!(
            parse(with("ipam", json!({}))).unwrap().ipam,
            Ipam::Dhcp(DhcpConfig::default())
        );
        let (field, reason) = invalid_field(parse(with("ipam", json!({"type": "host-local"}))));
        assert_eq!(field, "ipam.type");
        assert!(reason.contains("host-local"));
        let (field, _) = invalid_field(parse(with("ipam", json!({"timeoutMs": "5s"}))));
        assert_eq!(field, "ipam.timeoutMs");
        let (field, _) = invalid_field(parse(with("ipam", json!({"timeoutMs": 0}))));
        assert_eq!(field, "ipam.timeoutMs");
        for bad in [json!({"arpProbeMs": -1}), json!({"arpProbeMs": 10_001})] {
            let (field, _) = invalid_field(parse(with("ipam", bad)));
            assert_eq!(field, "ipam.arpProbeMs");
        }
        let (field, reason) = invalid_field(parse(with(
            "ipam",
            json!({"timeoutMs": 1000, "arpProbeMs": 1000}),
        )));
        assert_eq!(field, "ipam.arpProbeMs");
        assert!(reason.contains("0..=999"), "{reason}");
        // The default probe (300 ms) does not fit a 200 ms deadline either.
        let (field, _) = invalid_field(parse(with("ipam", json!({"timeoutMs": 200}))));
        assert_eq!(field, "ipam.arpProbeMs");
        assert!(parse(with("ipam", json!({"timeoutMs": 200, "arpProbeMs": 0}))).is_ok());
        let (field, _) = invalid_field(parse(with("ipam", json!({"identity": "sticky"}))));
        assert_eq!(field, "ipam.identity");
        let (field, _) = invalid_field(parse(with(
            "ipam",
            json!({"sendOptions": [{"code": 60, "value": "x"}, {"code": 300, "value": "y"}]}),
        )));
        assert_eq!(field, "ipam.sendOptions[1].code");
        let (field, _) = invalid_field(parse(with(
            "ipam",
            json!({"sendOptions": [{"code": 53, "value": "x"}]}),
        )));
        assert_eq!(field, "ipam.sendOptions[0].code");
        for reserved in [12, 50, 61] {
            let (field, reason) = invalid_field(parse(with(
                "ipam",
                json!({"sendOptions": [{"code": reserved, "value": "x"}]}),
            )));
            assert_eq!(field, "ipam.sendOptions[0].code");
            assert!(reason.contains("written by the agent"), "{reason}");
        }
        let (field, reason) = invalid_field(parse(with(
            "ipam",
            json!({"sendOptions": [{"code": 60, "value": "0xé1"}]}),
        )));
        assert_eq!(field, "ipam.sendOptions[0].value");
        assert!(reason.contains("other than hex digits"), "{reason}");
        let (field, _) = invalid_field(parse(with(
            "ipam",
            json!({"sendOptions": [{"code": 77, "value": "0xabc"}]}),
        )));
        assert_eq!(field, "ipam.sendOptions[0].value");
        let (field, _) = invalid_field(parse(with("ipam", json!({"sendOptions": [{"code": 77}]}))));
        assert_eq!(field, "ipam.sendOptions[0].value");
        let (field, _) = invalid_field(parse(with("ipam", json!("dhcp"))));
        assert_eq!(field, "ipam");
    }

    #[test]
    fn bad_host_routes_name_the_entry() {
        let err = parse(with("hostRoutes", json!(["10.96.0.0/12", "198.19.0.0/33"]))).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid netconf: field hostRoutes[1]: "198.19.0.0/33" is not an IPv4 CIDR: prefix length 33 is greater than 32"#
        );
        for bad in [
            "10.0.0.0",
            "fd00::/8",
            "10.0.0/8",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "x/8",
        ] {
            let (field, _) = invalid_field(parse(with("hostRoutes", json!([bad]))));
            assert_eq!(field, "hostRoutes[0]", "{bad}");
        }
        let (field, reason) = invalid_field(parse(with("hostRoutes", json!(["10.96.0.1/12"]))));
        assert_eq!(field, "hostRoutes[0]");
        assert!(reason.contains("10.96.0.0/12"), "{reason}");
        let (field, _) = invalid_field(parse(with("hostRoutes", json!(["0.0.0.0/0", 7]))));
        assert_eq!(field, "hostRoutes[1]");
        let (field, _) = invalid_field(parse(with("hostRoutes", json!("10.0.0.0/8"))));
        assert_eq!(field, "hostRoutes");
        assert!(parse(with("hostRoutes", json!(["0.0.0.0/0", "198.18.0.7/32"]))).is_ok());
    }

    #[test]
    fn bad_versions() {
        for bad in ["2.0.0", "0.2.0", "0.1.0", "1.1", ""] {
            let err = parse(with("cniVersion", json!(bad))).unwrap_err();
            assert!(
                matches!(err, NetConfError::IncompatibleVersion { .. }),
                "{bad}: {err:?}"
            );
            assert!(
                err.to_string()
                    .contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0")
            );
        }
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("cniVersion");
        assert_eq!(invalid_field(parse(v)).0, "cniVersion");
        assert_eq!(
            invalid_field(parse(with("cniVersion", json!(1.0)))).0,
            "cniVersion"
        );
    }

    #[test]
    fn wrong_type_and_name() {
        let err = parse(with("type", json!("bridge"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid netconf: field type: expected "lanlink", got "bridge""#
        );
        let mut v = minimal();
        v.as_object_mut().unwrap().remove("type");
        assert_eq!(invalid_field(parse(v)).0, "type");
        assert_eq!(invalid_field(parse(with("name", json!("a b")))).0, "name");
        assert_eq!(invalid_field(parse(with("name", json!(3)))).0, "name");
    }

    #[test]
    fn wrong_types_of_known_keys_name_the_field() {
        for (key, value) in [
            ("socketPath", json!(5)),
            ("socketPath", json!("relative.sock")),
            ("socketPath", json!(format!("/{}", "x".repeat(120)))),
            ("delQueueDir", json!("var/lib/lanlink/del-queue")),
            ("delQueueDir", json!(7)),
            ("uplink", json!(["eth0"])),
            ("uplink", json!("a-very-long-interface-name")),
            ("mtu", json!("1500")),
            ("mtu", json!(40)),
            ("disableCheck", json!("yes")),
            ("portSecurity", json!(true)),
            ("portSecurity", json!({"dhcpServer": "yes"})),
            ("portSecurity", json!({"broadcastPps": 2_000_000})),
            (
                "portSecurity",
                json!({"broadcastPps": 10, "broadcastBurst": 0}),
            ),
            ("portSecurity", json!({"raGuard": false})),
            ("ipv6", json!(false)),
            ("ipv6Iid", json!(["eui64"])),
        ] {
            let (field, _) = invalid_field(parse(with(key, value.clone())));
            assert_eq!(field, key, "{value}");
        }
    }

    #[test]
    fn malformed_json() {
        assert!(matches!(
            NetConf::parse(b"{\"cniVersion\":"),
            Err(NetConfError::Decode { .. })
        ));
        assert!(matches!(
            NetConf::parse(b"[1]"),
            Err(NetConfError::NotAnObject { got: "an array" })
        ));
        assert!(matches!(
            NetConf::parse(b""),
            Err(NetConfError::Decode { .. })
        ));
    }

    #[test]
    fn valid_attachments() {
        let conf = parse(with(
            "cni.dev/valid-attachments",
            json!([{"containerID": "c1", "ifname": "eth0"}]),
        ))
        .unwrap();
        assert_eq!(
            conf.valid_attachments,
            Some(vec![AttachmentId {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }])
        );
        let (field, _) = invalid_field(parse(with(
            "cni.dev/valid-attachments",
            json!([{"containerID": "c1", "ifname": "eth0"}, {"ifname": "eth0"}]),
        )));
        assert_eq!(field, "cni.dev/valid-attachments[1].containerID");
    }

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    const FULL_ENV: [(&str, &str); 6] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/p1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u-1",
        ),
    ];

    #[test]
    fn env_full() {
        let env = CniEnv::from_lookup(Command::Add, lookup(&FULL_ENV)).unwrap();
        assert_eq!(env.container_id.as_deref(), Some("abc123"));
        assert_eq!(env.netns.as_deref(), Some("/run/netns/p1"));
        assert_eq!(env.ifname.as_deref(), Some("eth0"));
        assert_eq!(
            env.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(
            env.pod,
            PodIdentity {
                namespace: Some("default".into()),
                name: Some("web-0".into()),
                uid: Some("u-1".into()),
            }
        );
        assert_eq!(env.args.get("IgnoreUnknown").map(String::as_str), Some("1"));
    }

    #[test]
    fn env_missing_per_verb() {
        let without = |name: &str| -> Vec<(&str, &str)> {
            FULL_ENV
                .iter()
                .copied()
                .filter(|(k, _)| *k != name)
                .collect()
        };
        for (command, var, required) in [
            (Command::Add, "CNI_CONTAINERID", true),
            (Command::Add, "CNI_NETNS", true),
            (Command::Add, "CNI_IFNAME", true),
            (Command::Add, "CNI_PATH", true),
            (Command::Check, "CNI_NETNS", true),
            (Command::Check, "CNI_PATH", true),
            (Command::Del, "CNI_CONTAINERID", true),
            (Command::Del, "CNI_IFNAME", true),
            (Command::Del, "CNI_PATH", true),
            (Command::Del, "CNI_NETNS", false),
            (Command::Status, "CNI_CONTAINERID", false),
            (Command::Status, "CNI_PATH", false),
            (Command::Gc, "CNI_IFNAME", false),
            (Command::Version, "CNI_NETNS", false),
        ] {
            let result = CniEnv::from_lookup(command, lookup(&without(var)));
            match (required, result) {
                (true, Err(EnvError::Missing { names })) => assert_eq!(names, vec![var]),
                (false, Ok(_)) => {}
                (_, other) => panic!("{command} without {var}: {other:?}"),
            }
        }
        // Empty counts as missing.
        let mut vars: Vec<(&str, &str)> = without("CNI_NETNS");
        vars.push(("CNI_NETNS", ""));
        assert!(matches!(
            CniEnv::from_lookup(Command::Add, lookup(&vars)),
            Err(EnvError::Missing { .. })
        ));
        let err = CniEnv::from_lookup(Command::Add, lookup(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "required environment variables missing: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH"
        );
    }

    #[test]
    fn env_bad_values() {
        let with_var = |name: &'static str, value: &'static str| -> Vec<(&str, &str)> {
            let mut vars: Vec<(&str, &str)> = FULL_ENV
                .iter()
                .copied()
                .filter(|(k, _)| *k != name)
                .collect();
            vars.push((name, value));
            vars
        };
        for (name, value) in [
            ("CNI_IFNAME", "eth0/x"),
            ("CNI_IFNAME", "averyveryverylongname"),
            ("CNI_CONTAINERID", "a b"),
            ("CNI_ARGS", "K8S_POD_NAME"),
        ] {
            match CniEnv::from_lookup(Command::Add, lookup(&with_var(name, value))) {
                Err(EnvError::Invalid { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
        assert!(matches!(
            command_from_env(lookup(&[("CNI_COMMAND", "FOO")])),
            Err(EnvError::UnknownCommand { .. })
        ));
        assert!(matches!(
            command_from_env(lookup(&[])),
            Err(EnvError::Missing { .. })
        ));
    }
}
