//! [`Node`]: a Kubernetes node of the lab — a namespace whose `eth0` (the
//! uplink lanlink attaches to) is a veth into the LAN's bridge.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Result;

use crate::lan::Lan;
use crate::netns::NetNs;
use crate::{ROUTER, check_lab_addr};

/// A node namespace: `lo` up, `eth0` plugged into the LAN with `ip`/24 and a
/// default route via 198.18.0.1, IPv4 forwarding on (as on a real node).
///
/// The agent runs inside it ([`crate::Agent::start`]); pods are separate
/// namespaces ([`Node::pod_netns`]). Dropping the node deletes its namespace
/// and every process in it.
#[derive(Debug)]
pub struct Node {
    ns: NetNs,
    ip: Ipv4Addr,
    mac: String,
}

impl Node {
    /// Creates the node on `lan` with address `ip` (on the LAN's prefix,
    /// outside the DHCP pool).
    pub fn new(lan: &Lan, role: &str, ip: Ipv4Addr) -> Result<Self> {
        check_lab_addr(ip)?;
        let ns = NetNs::new(role)?;
        lan.connect(&ns, "eth0")?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{ip}/{}", lan.options().prefix_len),
            "dev",
            "eth0",
        ])?;
        ns.ip(&["route", "add", "default", "via", &ROUTER.to_string()])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        let mac = ns.mac("eth0")?;
        Ok(Self { ns, ip, mac })
    }

    /// The node's namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// The namespace's path (`/run/netns/<name>`).
    pub fn path(&self) -> &Path {
        self.ns.path()
    }

    /// The node's address on `eth0`.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The MAC of the node's `eth0`.
    pub fn mac(&self) -> &str {
        &self.mac
    }

    /// A new, empty pod namespace (only `lo`, up): the CNI plugin creates
    /// the pod's interface in it. Its lifetime is independent of the node's.
    pub fn pod_netns(&self, role: &str) -> Result<NetNs> {
        NetNs::new(role)
    }
}
