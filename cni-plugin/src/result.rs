//! The CNI result: an [`AttachmentResult`] from the agent written in the
//! request's `cniVersion`, merged with the `prevResult` when lanlink is chained.
//!
//! Formats:
//! - 1.0.0 / 1.1.0: `interfaces`, `ips` (`address`, `gateway`, `interface`),
//!   `routes`, `dns`.
//! - 0.4.0 / 0.3.1 / 0.3.0: the same, plus `"version": "4"` on every IP.
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
//!   index shifted by the number of previous interfaces;
//! - `routes`: previous ones, then lanlink's;
//! - `dns`: the previous one's nameservers and search domains first, lanlink's
//!   appended when not already there; the previous `domain` wins;
//! - every other key of the previous result is kept as it was.
//!
//! Previous entries are kept as raw JSON, so fields lanlink does not know
//! (e.g. `mtu`, `socketPath` of 1.1 interfaces) survive.

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

    /// Whether an IP entry with this `address` is in the result.
    pub fn has_address(&self, address: &str) -> bool {
        self.ips
            .iter()
            .any(|ip| ip.get("address").and_then(Value::as_str) == Some(address))
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
    let ips: Vec<Value> = prev
        .ips
        .iter()
        .cloned()
        .chain(result.ips.iter().map(|ip| ip_json(ip, version, offset)))
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
        // lanlink leases IPv4 only.
        out.insert("version".into(), json!("4"));
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
