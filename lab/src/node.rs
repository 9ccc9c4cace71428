//! [`Node`]: a Kubernetes node of the lab — a namespace whose `eth0` (the
//! uplink lanlink attaches to) is a veth into the LAN's bridge.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Result;

use crate::agent::{Agent, AgentOptions};
use crate::lan::{Lan, LanHost, LanOptions};
use crate::netns::NetNs;

/// A node namespace: `lo` up, `eth0` plugged into the LAN with `ip`/24 and a
/// default route via 198.18.0.1, and otherwise as a distribution leaves it
/// (IPv4 forwarding off: whatever lanlink needs, the agent must set up).
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
        // On the wire a node starts as any host on the LAN; lanlinkd makes
        // the difference.
        let (ns, ip, mac) = lan.add_host(role, ip)?.into_parts();
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

/// The lab most scenarios start from: the default LAN (dnsmasq), one LAN
/// host at [`OneNode::HOST_IP`] (a traffic peer), and one node at
/// [`OneNode::NODE_IP`] running the agent.
///
/// Field order is drop order: the agent stops before its node goes, and the
/// LAN goes last.
#[derive(Debug)]
pub struct OneNode {
    /// `lanlinkd` on the node.
    pub agent: Agent,
    /// The node.
    pub node: Node,
    /// A plain host on the LAN.
    pub host: LanHost,
    /// The LAN.
    pub lan: Lan,
}

impl OneNode {
    /// The node's address.
    pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    /// The LAN host's address.
    pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);

    /// The lab with the agent's default options.
    pub fn start() -> Result<Self> {
        Self::start_with(LanOptions::default(), AgentOptions::default())
    }

    /// The lab with `lan` options and `agent` options.
    pub fn start_with(lan: LanOptions, agent: AgentOptions) -> Result<Self> {
        Self::start_prepared(lan, agent, |_| Ok(()))
    }

    /// [`OneNode::start_with`], running `prepare` on the node before the
    /// agent starts (e.g. a hostile FORWARD chain).
    pub fn start_prepared(
        lan: LanOptions,
        agent: AgentOptions,
        prepare: impl FnOnce(&Node) -> Result<()>,
    ) -> Result<Self> {
        let lan = Lan::new(lan)?;
        let host = lan.add_host("host", Self::HOST_IP)?;
        let node = Node::new(&lan, "node", Self::NODE_IP)?;
        prepare(&node)?;
        let agent = Agent::start(&node, agent)?;
        Ok(Self {
            agent,
            node,
            host,
            lan,
        })
    }
}
