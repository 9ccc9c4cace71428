//! Netfilter in a node namespace: kube-proxy simulated as it writes its
//! rules (iptables mode), and readers for `iptables-save` and rule counters.
//!
//! [`KubeProxy`] renders the nat and filter rules kube-proxy's iptables
//! proxier writes for ClusterIP, LoadBalancer and NodePort services
//! (kubernetes `pkg/proxy/iptables/proxier.go`, 1.28 and later): the
//! `KUBE-SERVICES` chain jumped to from nat `PREROUTING` and `OUTPUT`, one
//! `KUBE-SVC-*` chain per service that masquerades traffic from outside the
//! cluster CIDR, `KUBE-EXT-*` chains for external traffic (Cluster policy:
//! mark for masquerade; Local policy: only local endpoints, no masquerade),
//! `KUBE-SEP-*` chains that DNAT to an endpoint, the `0x4000` masquerade
//! mark applied in `KUBE-POSTROUTING`, and `KUBE-FORWARD` (INVALID drop,
//! accept of marked and established traffic). Chain names carry a hash of
//! the service name, as kube-proxy's do.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::cmd;
use crate::netns::NetNs;

/// kube-proxy's masquerade mark (`--iptables-masquerade-bit` 14).
pub const MASQ_MARK: &str = "0x4000";

/// A service's `externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficPolicy {
    /// Any endpoint, client source NATed to the node.
    Cluster,
    /// Only endpoints on this node, client source kept.
    Local,
}

/// An endpoint (a pod's address and target port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Pod address.
    pub ip: Ipv4Addr,
    /// Target port.
    pub port: u16,
    /// Whether the pod runs on the node these rules are for.
    pub local: bool,
}

/// A TCP service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// `namespace/name:port-name`, used in comments and chain hashes.
    pub name: String,
    /// The ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The service port (ClusterIP and LoadBalancer).
    pub port: u16,
    /// A LoadBalancer ingress IP, if any.
    pub load_balancer_ip: Option<Ipv4Addr>,
    /// A NodePort, if any.
    pub node_port: Option<u16>,
    /// `externalTrafficPolicy`.
    pub external_policy: TrafficPolicy,
    /// The endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// The rules kube-proxy would write on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeProxy {
    /// `--cluster-cidr`: pod traffic from inside it is not masqueraded.
    pub cluster_cidr: String,
    /// The services.
    pub services: Vec<Service>,
}

/// FNV-1a, for kube-proxy-like chain hashes.
fn hash(s: &str) -> String {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016X}")
}

/// The `-m statistic` match of endpoint `i` of `n` (as kube-proxy writes
/// it): each takes an equal share of what the ones before left, and the last
/// takes the rest, so it needs none.
fn probability(i: usize, n: usize) -> String {
    if i + 1 < n {
        format!(
            " -m statistic --mode random --probability {:.11}",
            1.0 / (n - i) as f64
        )
    } else {
        String::new()
    }
}

impl KubeProxy {
    /// The `iptables-restore --noflush` input.
    pub fn rules(&self) -> String {
        let cidr = &self.cluster_cidr;
        let mut chains = vec![
            "KUBE-SERVICES".to_owned(),
            "KUBE-NODEPORTS".to_owned(),
            "KUBE-POSTROUTING".to_owned(),
            "KUBE-MARK-MASQ".to_owned(),
        ];
        let mut r: Vec<String> = vec![
            r#"-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#.into(),
            r#"-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#.into(),
            r#"-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING"#.into(),
            format!("-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}"),
            format!("-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
            format!("-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}"),
            r#"-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully"#.into(),
        ];
        for svc in &self.services {
            let h = hash(&svc.name);
            let (svc_chain, ext_chain, svl_chain) = (
                format!("KUBE-SVC-{h}"),
                format!("KUBE-EXT-{h}"),
                format!("KUBE-SVL-{h}"),
            );
            let name = &svc.name;
            let (cip, port) = (svc.cluster_ip, svc.port);
            chains.push(svc_chain.clone());
            r.push(format!(
                r#"-A KUBE-SERVICES -d {cip}/32 -p tcp -m comment --comment "{name} cluster IP" -m tcp --dport {port} -j {svc_chain}"#
            ));
            r.push(format!(
                r#"-A {svc_chain} ! -s {cidr} -d {cip}/32 -p tcp -m comment --comment "{name} cluster IP" -m tcp --dport {port} -j KUBE-MARK-MASQ"#
            ));
            let mut local_seps = Vec::new();
            let n = svc.endpoints.len();
            for (i, ep) in svc.endpoints.iter().enumerate() {
                let sep = format!(
                    "KUBE-SEP-{}",
                    hash(&format!("{name}/{}:{}", ep.ip, ep.port))
                );
                chains.push(sep.clone());
                let to = format!("{}:{}", ep.ip, ep.port);
                let prob = probability(i, n);
                r.push(format!(
                    r#"-A {svc_chain} -m comment --comment "{name} -> {to}"{prob} -j {sep}"#
                ));
                r.push(format!(
                    r#"-A {sep} -s {}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ"#,
                    ep.ip
                ));
                r.push(format!(
                    r#"-A {sep} -p tcp -m comment --comment "{name}" -m tcp -j DNAT --to-destination {to}"#
                ));
                if ep.local {
                    local_seps.push((sep, to));
                }
            }
            if svc.load_balancer_ip.is_none() && svc.node_port.is_none() {
                continue;
            }
            chains.push(ext_chain.clone());
            if let Some(lb) = svc.load_balancer_ip {
                r.push(format!(
                    r#"-A KUBE-SERVICES -d {lb}/32 -p tcp -m comment --comment "{name} loadbalancer IP" -m tcp --dport {port} -j {ext_chain}"#
                ));
            }
            if let Some(np) = svc.node_port {
                r.push(format!(
                    r#"-A KUBE-NODEPORTS -p tcp -m comment --comment "{name}" -m tcp --dport {np} -j {ext_chain}"#
                ));
            }
            match svc.external_policy {
                TrafficPolicy::Cluster => {
                    r.push(format!(
                        r#"-A {ext_chain} -m comment --comment "masquerade traffic for {name} external destinations" -j KUBE-MARK-MASQ"#
                    ));
                    r.push(format!("-A {ext_chain} -j {svc_chain}"));
                }
                TrafficPolicy::Local => {
                    chains.push(svl_chain.clone());
                    r.push(format!(
                        r#"-A {ext_chain} -s {cidr} -m comment --comment "pod traffic for {name} external destinations" -j {svc_chain}"#
                    ));
                    r.push(format!(
                        r#"-A {ext_chain} -m comment --comment "masquerade LOCAL traffic for {name} external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"#
                    ));
                    r.push(format!(
                        r#"-A {ext_chain} -m comment --comment "route LOCAL traffic for {name} external destinations" -m addrtype --src-type LOCAL -j {svc_chain}"#
                    ));
                    r.push(format!("-A {ext_chain} -j {svl_chain}"));
                    let n = local_seps.len();
                    for (i, (sep, to)) in local_seps.iter().enumerate() {
                        let prob = probability(i, n);
                        r.push(format!(
                            r#"-A {svl_chain} -m comment --comment "{name} -> {to}"{prob} -j {sep}"#
                        ));
                    }
                }
            }
        }
        r.push(
            r#"-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"#
                .into(),
        );

        let mut s = String::from("*nat\n");
        for c in &chains {
            s.push_str(&format!(":{c} - [0:0]\n"));
        }
        for line in &r {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str("COMMIT\n*filter\n:KUBE-FORWARD - [0:0]\n");
        s.push_str(
            r#"-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
"#,
        );
        s
    }

    /// Loads the rules into `ns` (`iptables-restore --noflush`, as
    /// kube-proxy does: other rules stay).
    pub fn apply(&self, ns: &NetNs) -> Result<()> {
        let rules = self.rules();
        let out = cmd::run_with_stdin(
            &mut ns.command(&["iptables-restore", "-w", "5", "--noflush"]),
            Some(rules.as_bytes()),
            Duration::from_secs(30),
        )?;
        ensure!(
            out.status.success(),
            "iptables-restore of the kube-proxy rules in {}: {}\n{rules}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// `iptables-save` of `ns` with what changes by itself removed: comment lines
/// (timestamps) and packet/byte counters.
pub fn save(ns: &NetNs) -> Result<String> {
    let out = ns.run_ok(&["iptables-save"]).context("iptables-save")?;
    Ok(out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => l[..i].to_owned(),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The rules of `table`/`chain` in `ns` with their packet counters
/// (`iptables -L -v -n -x`): `(packets, rule text)` per rule.
pub fn chain_counters(ns: &NetNs, table: &str, chain: &str) -> Result<Vec<(u64, String)>> {
    let out = ns.run_ok(&[
        "iptables", "-w", "5", "-t", table, "-L", chain, "-v", "-n", "-x",
    ])?;
    Ok(out
        .lines()
        .skip(2)
        .filter_map(|l| {
            let packets = l.split_whitespace().next()?.parse().ok()?;
            Some((packets, l.trim().to_owned()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(policy: TrafficPolicy) -> Service {
        Service {
            name: "default/web:http".into(),
            cluster_ip: Ipv4Addr::new(198, 19, 0, 10),
            port: 80,
            load_balancer_ip: Some(Ipv4Addr::new(198, 18, 0, 200)),
            node_port: Some(30080),
            external_policy: policy,
            endpoints: vec![Endpoint {
                ip: Ipv4Addr::new(198, 18, 0, 120),
                port: 8080,
                local: true,
            }],
        }
    }

    /// The rules of kube-proxy for the cluster 198.18.0.0/24 with one
    /// service of `policy`.
    fn rules_for(policy: TrafficPolicy) -> String {
        let kp = KubeProxy {
            cluster_cidr: "198.18.0.0/24".into(),
            services: vec![svc(policy)],
        };
        kp.rules()
    }

    #[test]
    fn local_policy_dnats_without_masquerade() {
        let rules = rules_for(TrafficPolicy::Local);
        let ext: Vec<&str> = rules
            .lines()
            .filter(|l| l.starts_with("-A KUBE-EXT-"))
            .collect();
        // External traffic goes to the local-endpoints chain unmarked; only
        // node-local sources are masqueraded.
        assert!(ext.iter().any(|l| l.contains("-j KUBE-SVL-")));
        assert!(
            ext.iter()
                .filter(|l| l.ends_with("KUBE-MARK-MASQ"))
                .all(|l| l.contains("--src-type LOCAL"))
        );
        assert!(rules.contains("-j DNAT --to-destination 198.18.0.120:8080"));
        assert!(rules.contains("-d 198.18.0.200/32 -p tcp"));
        assert!(rules.contains("--dport 30080"));
        assert!(rules.lines().filter(|l| l.contains("last rule")).count() == 1);
    }

    #[test]
    fn cluster_policy_marks_for_masquerade() {
        let rules = rules_for(TrafficPolicy::Cluster);
        assert!(rules.lines().any(|l| l.starts_with("-A KUBE-EXT-")
            && l.ends_with("-j KUBE-MARK-MASQ")
            && !l.contains("src-type")));
        assert!(!rules.contains("KUBE-SVL-"));
    }

    #[test]
    fn chain_names_fit_iptables() {
        for l in rules_for(TrafficPolicy::Local)
            .lines()
            .filter(|l| l.starts_with(':'))
        {
            let name = l[1..].split_whitespace().next().unwrap();
            assert!(name.len() <= 28, "{name}");
        }
    }
}
