//! The CNI result: an [`AttachmentResult`] from the agent written in the
//! request's `cniVersion`, merged with the `prevResult` when lanlink is chained.
//!
//! Formats:
//! - 1.0.0 / 1.1.0: `interfaces`, `ips` (`address`, `gateway`, `interface`),
//!   `routes`, `dns`.
//! - 0.4.0 / 0.3.1 / 0.3.0: the same, plus `version` on every IP: `"4"` or
//!   `"6"`, the family of its address (the 0.4.0 spec: "corresponds to the IP
//!   version of the addresses in the entry"), as the reference library derives
//!   it when it writes a 1.x result in a 0.x version (`convertIPConfigTo040`).
//!
//! A pod with IPv6 on (netconf `ipv6`) has two addresses: the IPv4 lease and
//! an IPv6 one (SLAAC or DHCPv6), each with its gateway of the same family
//! (the IPv6 one is the router's link-local address), routes of both families
//! and name servers of both. lanlink's IPv4 addresses come first, whatever
//! order the agent answers in: the first address is the pod's primary one for
//! runtimes (containerd's `podIPs[0]`) and for [`lanlink_api::result_ip`].
//!
//! `cniVersion` is the request's. The agent's `lease` is not part of a CNI
//! result and is dropped.
//!
//! # Chaining
//!
//! When the netconf has a `prevResult` (lanlink is not the first plugin of the
//! conflist, or a secondary attachment behind another plugin), the output is
//! the previous result with lanlink's parts appended:
//! - `interfaces`: previous ones, then lanlink's (host veth, pod interface);
//! - `ips`: previous ones unchanged, then lanlink's with their `interface`
//!   index shifted by the number of previous interfaces (IPv4 first);
//! - `routes`: previous ones, then lanlink's;
//! - `dns`: the previous one's nameservers and search domains first, lanlink's
//!   appended when not already there; the previous `domain` wins;
//! - every other key of the previous result is kept as it was.
//!
//! Previous entries are kept as raw JSON, so fields lanlink does not know
//! (e.g. `mtu`, `socketPath` of 1.1 interfaces) survive.

use std::net::IpAddr;

use serde_json::{Map, Value, json};

use crate::netconf::{CniVersion, NetConfError, json_kind};
use lanlink_api::{AttachmentResult, Dns, Interface, IpConfig, Mac, Route};

/// A `prevResult`, checked just enough to be merged into safely.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PrevResult {
    /// `interfaces`, as written.
    pub interfaces: Vec<Value>,
    /// `ips`, as written.
    pub ips: Vec<Value>,
    /// `routes`, as written.
    pub routes: Vec<Value>,
    /// `dns`, decoded.
    pub dns: Dns,
    /// Every other key (including `cniVersion`, which is replaced on output).
    pub other: Map<String, Value>,
}

impl PrevResult {
    /// Checks and splits a `prevResult` value; errors name the bad field.
    pub fn from_value(value: &Value) -> Result<Self, NetConfError> {
        let Value::Object(obj) = value else {
            return Err(NetConfError::invalid(
                "prevResult",
                format!("expected an object, got {}", json_kind(value)),
            ));
        };
        let mut other = obj.clone();
        let mut list = |key: &str| -> Result<Vec<Value>, NetConfError> {
            match other.remove(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => {
                    if let Some((i, item)) = items.iter().enumerate().find(|(_, v)| !v.is_object())
                    {
                        return Err(NetConfError::invalid(
                            format!("prevResult.{key}[{i}]"),
                            format!("expected an object, got {}", json_kind(item)),
                        ));
                    }
                    Ok(items)
                }
                Some(v) => Err(NetConfError::invalid(
                    format!("prevResult.{key}"),
                    format!("expected an array, got {}", json_kind(&v)),
                )),
            }
        };
        let interfaces = list("interfaces")?;
        let ips = list("ips")?;
        let routes = list("routes")?;
        let dns = match other.remove("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(v) => serde_json::from_value(v)
                .map_err(|e| NetConfError::invalid("prevResult.dns", e.to_string()))?,
        };
        Ok(PrevResult {
            interfaces,
            ips,
            routes,
            dns,
            other,
        })
    }

    /// Whether an IP entry with this `address` is in the result. Addresses
    /// are compared as addresses with a prefix length, not as text: a runtime
    /// that re-wrote the result may spell an IPv6 address another way
    /// (`2001:2:0:1:0:0:0:1a0/128`, upper-case digits).
    pub fn has_address(&self, address: &str) -> bool {
        let wanted = parse_cidr(address);
        self.ips.iter().any(|ip| {
            let Some(written) = ip.get("address").and_then(Value::as_str) else {
                return false;
            };
            match (wanted, parse_cidr(written)) {
                (Some(wanted), Some(written)) => wanted == written,
                _ => written == address,
            }
        })
    }

    /// Whether an interface with this name and MAC (any case) is in the
    /// result. The sandbox is not compared: runtimes may spell the netns path
    /// differently from the agent.
    pub fn has_interface(&self, interface: &Interface) -> bool {
        self.interfaces.iter().any(|i| {
            i.get("name").and_then(Value::as_str) == Some(interface.name.as_str())
                && i.get("mac")
                    .and_then(Value::as_str)
                    .and_then(|mac| mac.parse::<Mac>().ok())
                    == Some(interface.mac)
        })
    }
}

/// Writes `result` as a CNI result of `version`, appended to `prev` if given.
pub fn to_cni_result(
    result: &AttachmentResult,
    version: CniVersion,
    prev: Option<&PrevResult>,
) -> Value {
    let empty = PrevResult::default();
    let prev = prev.unwrap_or(&empty);
    let offset = prev.interfaces.len();

    let mut out = prev.other.clone();
    out.insert("cniVersion".into(), json!(version.as_str()));

    let interfaces: Vec<Value> = prev
        .interfaces
        .iter()
        .cloned()
        .chain(result.interfaces.iter().map(interface_json))
        .collect();
    // A stable sort: IPv4 first, each family in the agent's order.
    let mut ours: Vec<&IpConfig> = result.ips.iter().collect();
    ours.sort_by_key(|ip| ip_family(&ip.address) != Family::V4);
    let ips: Vec<Value> = prev
        .ips
        .iter()
        .cloned()
        .chain(ours.into_iter().map(|ip| ip_json(ip, version, offset)))
        .collect();
    let routes: Vec<Value> = prev
        .routes
        .iter()
        .cloned()
        .chain(result.routes.iter().map(route_json))
        .collect();

    out.insert("interfaces".into(), Value::Array(interfaces));
    out.insert("ips".into(), Value::Array(ips));
    out.insert("routes".into(), Value::Array(routes));
    out.insert("dns".into(), dns_json(&merge_dns(&prev.dns, &result.dns)));
    Value::Object(out)
}

fn interface_json(interface: &Interface) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(interface.name));
    out.insert("mac".into(), json!(interface.mac));
    if let Some(sandbox) = &interface.sandbox {
        out.insert("sandbox".into(), json!(sandbox));
    }
    Value::Object(out)
}

fn ip_json(ip: &IpConfig, version: CniVersion, offset: usize) -> Value {
    let mut out = Map::new();
    if version.has_ip_version() {
        let family = match ip_family(&ip.address) {
            Family::V4 => "4",
            Family::V6 => "6",
        };
        out.insert("version".into(), json!(family));
    }
    out.insert("address".into(), json!(ip.address));
    if let Some(gateway) = &ip.gateway {
        out.insert("gateway".into(), json!(gateway));
    }
    if let Some(index) = ip.interface {
        out.insert("interface".into(), json!(index + offset));
    }
    Value::Object(out)
}

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// The family of a result's `address` (`198.18.0.50/24`,
/// `2001:2:0:1::1a0/128`). The agent writes these, so they parse; should one
/// not, its text still tells the family (only IPv6 has colons) rather than
/// failing an ADD whose work is done.
fn ip_family(address: &str) -> Family {
    match parse_cidr(address) {
        Some((IpAddr::V4(_), _)) => Family::V4,
        Some((IpAddr::V6(_), _)) => Family::V6,
        None if address.contains(':') => Family::V6,
        None => Family::V4,
    }
}

/// `address/prefix` parsed; `None` when it is not one, or the prefix is too
/// long for the family.
fn parse_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = cidr.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    // Digits only: `u8::from_str` would take `+24`.
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

fn route_json(route: &Route) -> Value {
    let mut out = Map::new();
    out.insert("dst".into(), json!(route.dst));
    if let Some(gw) = &route.gw {
        out.insert("gw".into(), json!(gw));
    }
    Value::Object(out)
}

fn merge_dns(prev: &Dns, ours: &Dns) -> Dns {
    let mut merged = prev.clone();
    for ns in &ours.nameservers {
        if !merged.nameservers.contains(ns) {
            merged.nameservers.push(ns.clone());
        }
    }
    for domain in &ours.search {
        if !merged.search.contains(domain) {
            merged.search.push(domain.clone());
        }
    }
    if merged.domain.is_none() {
        merged.domain.clone_from(&ours.domain);
    }
    merged
}

fn dns_json(dns: &Dns) -> Value {
    // `Dns` skips empty fields, so an empty one is `{}` (as the reference
    // plugins print it).
    serde_json::to_value(dns).unwrap_or_else(|_| json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanlink_api::LeaseInfo;

    fn agent_result() -> AttachmentResult {
        AttachmentResult {
            interfaces: vec![
                Interface {
                    name: "llk1a2b3c4d".into(),
                    mac: "ee:ee:ee:00:00:01".parse().unwrap(),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:11:22:33:44:55".parse().unwrap(),
                    sandbox: Some("/run/netns/pod1".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "198.18.0.50/24".into(),
                gateway: Some("198.18.0.1".into()),
                interface: Some(1),
            }],
            routes: vec![
                Route {
                    dst: "0.0.0.0/0".into(),
                    gw: Some("198.18.0.1".into()),
                },
                Route {
                    dst: "169.254.1.1/32".into(),
                    gw: None,
                },
            ],
            dns: Dns {
                nameservers: vec!["198.18.0.1".into()],
                domain: Some("lab.test".into()),
                search: vec!["lab.test".into()],
            },
            lease: Some(LeaseInfo {
                container_id: "c1".into(),
                ifname: "eth0".into(),
                mac: "02:11:22:33:44:55".parse().unwrap(),
                address: "198.18.0.50/24".into(),
                server: "198.18.0.1".into(),
                lease_secs: 3600,
                obtained_at: 1,
                renew_at: 1801,
                expires_at: 3601,
                state: "bound".into(),
            }),
        }
    }

    fn golden(version: &str, ip_version: bool) -> Value {
        let mut ip = json!({"address": "198.18.0.50/24", "gateway": "198.18.0.1", "interface": 1});
        if ip_version {
            ip["version"] = json!("4");
        }
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "llk1a2b3c4d", "mac": "ee:ee:ee:00:00:01"},
                {"name": "eth0", "mac": "02:11:22:33:44:55", "sandbox": "/run/netns/pod1"}
            ],
            "ips": [ip],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "198.18.0.1"},
                {"dst": "169.254.1.1/32"}
            ],
            "dns": {"nameservers": ["198.18.0.1"], "domain": "lab.test", "search": ["lab.test"]}
        })
    }

    #[test]
    fn every_version_golden() {
        for (version, ip_version) in [
            (CniVersion::V1_1_0, false),
            (CniVersion::V1_0_0, false),
            (CniVersion::V0_4_0, true),
            (CniVersion::V0_3_1, true),
            (CniVersion::V0_3_0, true),
        ] {
            let out = to_cni_result(&agent_result(), version, None);
            assert_eq!(out, golden(version.as_str(), ip_version), "{version}");
            assert!(out.get("lease").is_none());
        }
    }

    /// What the agent answers for a pod with IPv6 on: the IPv4 lease, a
    /// DHCPv6 address, routes and name servers of both families.
    fn dual_stack_result() -> AttachmentResult {
        let mut result = agent_result();
        result.ips.push(IpConfig {
            address: "2001:2:0:1::1a0/128".into(),
            gateway: Some("fe80::1".into()),
            interface: Some(1),
        });
        result.routes.extend([
            Route {
                dst: "::/0".into(),
                gw: Some("fe80::1".into()),
            },
            Route {
                dst: "2001:2:0:1::/64".into(),
                gw: None,
            },
        ]);
        result.dns.nameservers.push("2001:2:0:1::1".into());
        result
    }

    /// The dual-stack goldens, one per version, written out in full.
    fn dual_stack_goldens() -> [(CniVersion, Value); 5] {
        let interfaces = json!([
            {"name": "llk1a2b3c4d", "mac": "ee:ee:ee:00:00:01"},
            {"name": "eth0", "mac": "02:11:22:33:44:55", "sandbox": "/run/netns/pod1"}
        ]);
        let routes = json!([
            {"dst": "0.0.0.0/0", "gw": "198.18.0.1"},
            {"dst": "169.254.1.1/32"},
            {"dst": "::/0", "gw": "fe80::1"},
            {"dst": "2001:2:0:1::/64"}
        ]);
        let dns = json!({
            "nameservers": ["198.18.0.1", "2001:2:0:1::1"],
            "domain": "lab.test",
            "search": ["lab.test"]
        });
        [
            (
                CniVersion::V0_3_0,
                json!({
                    "cniVersion": "0.3.0",
                    "interfaces": interfaces,
                    "ips": [
                        {"version": "4", "address": "198.18.0.50/24", "gateway": "198.18.0.1", "interface": 1},
                        {"version": "6", "address": "2001:2:0:1::1a0/128", "gateway": "fe80::1", "interface": 1}
                    ],
                    "routes": routes,
                    "dns": dns
                }),
            ),
            (
                CniVersion::V0_3_1,
                json!({
                    "cniVersion": "0.3.1",
                    "interfaces": interfaces,
                    "ips": [
                        {"version": "4", "address": "198.18.0.50/24", "gateway": "198.18.0.1", "interface": 1},
                        {"version": "6", "address": "2001:2:0:1::1a0/128", "gateway": "fe80::1", "interface": 1}
                    ],
                    "routes": routes,
                    "dns": dns
                }),
            ),
            (
                CniVersion::V0_4_0,
                json!({
                    "cniVersion": "0.4.0",
                    "interfaces": interfaces,
                    "ips": [
                        {"version": "4", "address": "198.18.0.50/24", "gateway": "198.18.0.1", "interface": 1},
                        {"version": "6", "address": "2001:2:0:1::1a0/128", "gateway": "fe80::1", "interface": 1}
                    ],
                    "routes": routes,
                    "dns": dns
                }),
            ),
            (
                CniVersion::V1_0_0,
                json!({
                    "cniVersion": "1.0.0",
                    "interfaces": interfaces,
                    "ips": [
                        {"address": "198.18.0.50/24", "gateway": "198.18.0.1", "interface": 1},
                        {"address": "2001:2:0:1::1a0/128", "gateway": "fe80::1", "interface": 1}
                    ],
                    "routes": routes,
                    "dns": dns
                }),
            ),
            (
                CniVersion::V1_1_0,
                json!({
                    "cniVersion": "1.1.0",
                    "interfaces": interfaces,
                    "ips": [
                        {"address": "198.18.0.50/24", "gateway": "198.18.0.1", "interface": 1},
                        {"address": "2001:2:0:1::1a0/128", "gateway": "fe80::1", "interface": 1}
                    ],
                    "routes": routes,
                    "dns": dns
                }),
            ),
        ]
    }

    #[test]
    fn dual_stack_golden_for_every_version() {
        let goldens = dual_stack_goldens();
        assert_eq!(
            goldens.each_ref().map(|(v, _)| *v),
            CniVersion::ALL,
            "one per version"
        );
        for (version, golden) in goldens {
            let out = to_cni_result(&dual_stack_result(), version, None);
            assert_eq!(out, golden, "{version}");
            // Every address in it is one (Go's net.ParseCIDR / ParseIP would
            // refuse the result otherwise).
            for ip in golden["ips"].as_array().unwrap() {
                assert!(
                    parse_cidr(ip["address"].as_str().unwrap()).is_some(),
                    "{ip}"
                );
                assert!(
                    ip["gateway"].as_str().unwrap().parse::<IpAddr>().is_ok(),
                    "{ip}"
                );
            }
            for route in golden["routes"].as_array().unwrap() {
                assert!(
                    parse_cidr(route["dst"].as_str().unwrap()).is_some(),
                    "{route}"
                );
                if let Some(gw) = route.get("gw") {
                    assert!(gw.as_str().unwrap().parse::<IpAddr>().is_ok(), "{route}");
                }
            }
        }
    }

    #[test]
    fn slaac_address_and_ipv4_first() {
        // The agent answers IPv6 first: the result still starts with IPv4,
        // and each family keeps the agent's order.
        let mut result = agent_result();
        result.ips = vec![
            IpConfig {
                address: "2001:2:0:1:11:22ff:fe33:4455/64".into(),
                gateway: Some("fe80::1".into()),
                interface: Some(1),
            },
            IpConfig {
                address: "2001:2:0:1::1a0/128".into(),
                gateway: Some("fe80::1".into()),
                interface: Some(1),
            },
            IpConfig {
                address: "198.18.0.50/24".into(),
                gateway: Some("198.18.0.1".into()),
                interface: Some(1),
            },
        ];
        let out = to_cni_result(&result, CniVersion::V0_4_0, None);
        assert_eq!(
            out["ips"],
            json!([
                {"version": "4", "address": "198.18.0.50/24", "gateway": "198.18.0.1", "interface": 1},
                {"version": "6", "address": "2001:2:0:1:11:22ff:fe33:4455/64", "gateway": "fe80::1", "interface": 1},
                {"version": "6", "address": "2001:2:0:1::1a0/128", "gateway": "fe80::1", "interface": 1}
            ])
        );
        assert_eq!(
            lanlink_api::result_ip(&out).unwrap(),
            Some("198.18.0.50".parse().unwrap())
        );
        let out = to_cni_result(&result, CniVersion::V1_1_0, None);
        assert_eq!(
            out["ips"],
            json!([
                {"address": "198.18.0.50/24", "gateway": "198.18.0.1", "interface": 1},
                {"address": "2001:2:0:1:11:22ff:fe33:4455/64", "gateway": "fe80::1", "interface": 1},
                {"address": "2001:2:0:1::1a0/128", "gateway": "fe80::1", "interface": 1}
            ])
        );
    }

    #[test]
    fn ipv6_only_result() {
        // No IPv4 lease (not something the agent does today, but nothing
        // here assumes one): the IPv6 address alone, version "6".
        let mut result = dual_stack_result();
        result.ips.remove(0);
        let out = to_cni_result(&result, CniVersion::V0_3_1, None);
        assert_eq!(
            out["ips"],
            json!([{"version": "6", "address": "2001:2:0:1::1a0/128", "gateway": "fe80::1", "interface": 1}])
        );
    }

    #[test]
    fn families_and_cidrs() {
        for (address, family) in [
            ("198.18.0.50/24", Family::V4),
            ("198.18.0.50/32", Family::V4),
            ("2001:2:0:1::1a0/128", Family::V6),
            ("2001:2:0:1:11:22ff:fe33:4455/64", Family::V6),
            ("fe80::1/64", Family::V6),
            // IPv4-mapped is written as IPv6, so it is IPv6.
            ("::ffff:198.18.0.50/128", Family::V6),
            // Not CIDRs (never from the agent): the text decides.
            ("2001:2::1", Family::V6),
            ("2001:2::1/129", Family::V6),
            ("198.18.0.50", Family::V4),
            ("", Family::V4),
        ] {
            assert_eq!(ip_family(address), family, "{address:?}");
        }
        assert_eq!(
            parse_cidr("2001:2:0:1:0:0:0:1A0/128"),
            Some(("2001:2:0:1::1a0".parse().unwrap(), 128))
        );
        assert_eq!(
            parse_cidr("198.18.0.50/24"),
            Some(("198.18.0.50".parse().unwrap(), 24))
        );
        for bad in [
            "198.18.0.50",
            "198.18.0.50/33",
            "198.18.0.50/+24",
            "198.18.0.50/",
            "2001:2::1/129",
            "2001:2::1%eth0/64",
            "x/24",
        ] {
            assert_eq!(parse_cidr(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dual_stack_prev_result_of_every_version() {
        // What lanlink printed on ADD comes back as prevResult on CHECK and
        // DEL (and to portmap after it): parsed in every version, both
        // addresses found, however a runtime re-spelled the IPv6 one.
        let nothing = AttachmentResult {
            interfaces: vec![],
            ips: vec![],
            routes: vec![],
            dns: Dns::default(),
            lease: None,
        };
        for (version, golden) in dual_stack_goldens() {
            let prev = PrevResult::from_value(&golden).unwrap();
            assert_eq!(prev.ips.len(), 2, "{version}");
            assert_eq!(prev.routes.len(), 4, "{version}");
            assert_eq!(
                prev.dns.nameservers,
                ["198.18.0.1", "2001:2:0:1::1"],
                "{version}"
            );
            for address in [
                "198.18.0.50/24",
                "2001:2:0:1::1a0/128",
                "2001:2:0:1:0:0:0:1A0/128",
                "2001:0002:0000:0001:0000:0000:0000:01a0/128",
            ] {
                assert!(prev.has_address(address), "{version}: {address}");
            }
            for address in [
                "2001:2:0:1::1a0/64",
                "2001:2:0:1::1a1/128",
                "198.18.0.50/25",
                "::ffff:198.18.0.50/128",
            ] {
                assert!(!prev.has_address(address), "{version}: {address}");
            }
            for interface in &dual_stack_result().interfaces {
                assert!(prev.has_interface(interface), "{version}");
            }
            // Written again (DEL echoes nothing, but a chain re-prints it):
            // unchanged.
            assert_eq!(
                to_cni_result(&nothing, version, Some(&prev)),
                golden,
                "{version}"
            );
        }
    }

    #[test]
    fn dual_stack_chained_after_a_dual_stack_plugin() {
        let prev = PrevResult::from_value(&json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/pod1"}
            ],
            "ips": [
                {"version": "4", "address": "198.19.0.5/16", "gateway": "198.19.0.1", "interface": 1},
                {"version": "6", "address": "2001:2:0:ff::5/64", "gateway": "2001:2:0:ff::1", "interface": 1}
            ],
            "routes": [{"dst": "::/0", "gw": "2001:2:0:ff::1"}],
            "dns": {"nameservers": ["2001:2:0:1::1"]}
        }))
        .unwrap();
        let out = to_cni_result(&dual_stack_result(), CniVersion::V0_4_0, Some(&prev));
        assert_eq!(
            out["ips"],
            json!([
                {"version": "4", "address": "198.19.0.5/16", "gateway": "198.19.0.1", "interface": 1},
                {"version": "6", "address": "2001:2:0:ff::5/64", "gateway": "2001:2:0:ff::1", "interface": 1},
                {"version": "4", "address": "198.18.0.50/24", "gateway": "198.18.0.1", "interface": 3},
                {"version": "6", "address": "2001:2:0:1::1a0/128", "gateway": "fe80::1", "interface": 3}
            ])
        );
        assert_eq!(
            out["routes"],
            json!([
                {"dst": "::/0", "gw": "2001:2:0:ff::1"},
                {"dst": "0.0.0.0/0", "gw": "198.18.0.1"},
                {"dst": "169.254.1.1/32"},
                {"dst": "::/0", "gw": "fe80::1"},
                {"dst": "2001:2:0:1::/64"}
            ])
        );
        // The name server both have is listed once, the previous one first.
        assert_eq!(
            out["dns"]["nameservers"],
            json!(["2001:2:0:1::1", "198.18.0.1"])
        );
    }

    #[test]
    fn no_address_with_ipam_none() {
        let mut result = agent_result();
        result.ips.clear();
        result.routes.clear();
        result.dns = Dns::default();
        let out = to_cni_result(&result, CniVersion::V0_4_0, None);
        assert_eq!(out["ips"], json!([]));
        assert_eq!(out["routes"], json!([]));
        assert_eq!(out["dns"], json!({}));
    }

    #[test]
    fn chained_after_another_plugin() {
        let prev = PrevResult::from_value(&json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth0", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/pod1"}
            ],
            "ips": [{"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["10.96.0.10", "198.18.0.1"], "search": ["svc.cluster.local"]},
            "somethingElse": {"kept": true}
        }))
        .unwrap();
        let out = to_cni_result(&agent_result(), CniVersion::V0_4_0, Some(&prev));
        assert_eq!(
            out,
            json!({
                "cniVersion": "0.4.0",
                "interfaces": [
                    {"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
                    {"name": "veth0", "mac": "bb:bb:bb:bb:bb:bb"},
                    {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/pod1"},
                    {"name": "llk1a2b3c4d", "mac": "ee:ee:ee:00:00:01"},
                    {"name": "eth0", "mac": "02:11:22:33:44:55", "sandbox": "/run/netns/pod1"}
                ],
                "ips": [
                    {"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2},
                    {"version": "4", "address": "198.18.0.50/24", "gateway": "198.18.0.1", "interface": 4}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
                    {"dst": "0.0.0.0/0", "gw": "198.18.0.1"},
                    {"dst": "169.254.1.1/32"}
                ],
                "dns": {
                    "nameservers": ["10.96.0.10", "198.18.0.1"],
                    "domain": "lab.test",
                    "search": ["svc.cluster.local", "lab.test"]
                },
                "somethingElse": {"kept": true}
            })
        );
        assert!(prev.has_address("10.1.0.5/16"));
        assert!(!prev.has_address("198.18.0.50/24"));
    }

    #[test]
    fn bad_prev_results_name_the_field() {
        for (value, field) in [
            (json!([]), "prevResult"),
            (json!({"ips": {}}), "prevResult.ips"),
            (json!({"interfaces": [{}, 3]}), "prevResult.interfaces[1]"),
            (json!({"dns": {"nameservers": "x"}}), "prevResult.dns"),
        ] {
            match PrevResult::from_value(&value) {
                Err(NetConfError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{value}: {other:?}"),
            }
        }
    }
}
