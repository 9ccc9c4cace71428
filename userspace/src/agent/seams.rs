//! The agent's kernel-facing work behind small traits, so that ADD's undo,
//! DEL's idempotency and the per-attachment locking are unit-tested with
//! fakes, without root (STYLE.md item 17):
//!
//! - [`Links`]: netlink work — veths, the uplink's unicast filter and
//!   all-multicast switch, host routes, the pod's address and routes;
//! - [`Maps`]: the eBPF side — attaching and detaching the programs of a host
//!   veth, the endpoint entries, the flood list, the host-routes trie, flows;
//! - [`Leases`]: the DHCP client — acquire, renew, release.
//!
//! [`Kernel`] bundles one of each; [`Node`] is the real one (rtnetlink,
//! [`Dataplane`], [`DhcpClient`]).

use std::{future::Future, net::Ipv4Addr, path::Path, sync::Mutex, time::Duration};

use lanlink_common::{EndpointByIf, EndpointByMac, EndpointGuard, StatSlot};

use crate::{
    dataplane::{Dataplane, DataplaneError, Hook},
    dhcp::{DhcpClient, DhcpError, Lease, LeaseRequest},
    netlink::{self, LinkInfo, NetlinkError, PodConfig, PodState, VethSpec},
};

/// Netlink work in the agent's namespace and in pods' namespaces.
pub trait Links: Send + Sync + 'static {
    /// A link of the agent's namespace by name; `None` if absent.
    fn find_link(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<LinkInfo>, NetlinkError>> + Send;
    /// Creates the veth pair (the pod end in the pod's namespace); returns the host end.
    fn create_veth(
        &self,
        spec: &VethSpec<'_>,
    ) -> impl Future<Output = Result<LinkInfo, NetlinkError>> + Send;
    /// Deletes a link by name; succeeds if absent.
    fn delete_link(&self, name: &str) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Adds `mac` to the unicast filter of link `uplink`.
    fn add_uc_filter(
        &self,
        uplink: u32,
        mac: [u8; 6],
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Removes `mac` from the unicast filter of link `uplink`; succeeds if absent.
    fn del_uc_filter(
        &self,
        uplink: u32,
        mac: [u8; 6],
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Whether link `uplink` has `IFF_ALLMULTI` set from userspace.
    fn allmulti(&self, uplink: u32) -> impl Future<Output = Result<bool, NetlinkError>> + Send;
    /// Turns `IFF_ALLMULTI` of link `uplink` on or off (a switch, not a count).
    fn set_allmulti(
        &self,
        uplink: u32,
        on: bool,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Sets the MAC of link `index` of the agent's namespace.
    fn set_link_mac(
        &self,
        index: u32,
        mac: [u8; 6],
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// The node's route to a pod address.
    fn add_host_route(
        &self,
        ip: Ipv4Addr,
        ifindex: u32,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Removes the node's route to a pod address; succeeds if absent.
    fn del_host_route(
        &self,
        ip: Ipv4Addr,
        ifindex: u32,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Writes the pod's address and routes, interface up.
    fn configure_pod(
        &self,
        netns: &Path,
        cfg: PodConfig,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Brings the pod's interface up, nothing else (`ipam: none`).
    fn pod_link_up(
        &self,
        netns: &Path,
        ifname: &str,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Removes an address from the pod's interface.
    fn remove_pod_address(
        &self,
        netns: &Path,
        ifname: &str,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// What the pod's interface looks like (CHECK).
    fn read_pod(
        &self,
        netns: &Path,
        ifname: &str,
    ) -> impl Future<Output = Result<PodState, NetlinkError>> + Send;
}

/// The programs and maps of the dataplane.
pub trait Maps: Send + Sync + 'static {
    /// Attaches `from_pod` and `to_pod` to a host veth (blocking kernel work
    /// runs off the async workers).
    fn attach(&self, veth: &str) -> impl Future<Output = Result<(), DataplaneError>> + Send;
    /// Detaches both programs from a host veth; succeeds if not attached.
    fn detach(&self, veth: &str) -> Result<(), DataplaneError>;
    /// Whether `hook` is attached to `veth`.
    fn is_attached(&self, veth: &str, hook: Hook) -> bool;
    /// Writes both endpoint entries of a host veth and its first-hop guard
    /// (limits replaced, running state kept).
    fn register(
        &self,
        host_ifindex: u32,
        entry: EndpointByIf,
        guard: EndpointGuard,
    ) -> Result<(), DataplaneError>;
    /// Removes the endpoint entries of a host veth and its flood slot; the
    /// `EP_BY_MAC` entry of `mac` only while it points at `host_ifindex`.
    fn unregister(&self, host_ifindex: u32, mac: Option<[u8; 6]>) -> Result<(), DataplaneError>;
    /// Forgets the flows learnt through a host veth.
    fn purge_flows(&self, host_ifindex: u32) -> Result<(), DataplaneError>;
    /// The `EP_BY_IF` entry of a host veth.
    fn endpoint(&self, host_ifindex: u32) -> Option<EndpointByIf>;
    /// The `EP_BY_MAC` entry of a MAC.
    fn endpoint_by_mac(&self, mac: [u8; 6]) -> Option<EndpointByMac>;
    /// The drops counted against a host veth's endpoint, by slot.
    fn endpoint_drops(&self, host_ifindex: u32) -> Vec<(StatSlot, u64)>;
    /// Makes the flood list hold exactly `members`.
    fn set_flood(&self, members: &[u32]) -> Result<(), DataplaneError>;
    /// Replaces the host-routes trie.
    fn set_host_routes(&self, prefixes: &[(Ipv4Addr, u8)]) -> Result<(), DataplaneError>;
    /// Records that the endpoint of a host veth owns an IPv6 address the
    /// agent gave it.
    fn assign_v6(&self, addr: std::net::Ipv6Addr, host_ifindex: u32) -> Result<(), DataplaneError>;
    /// The host veth whose endpoint holds `addr` in the guard
    /// (`V6_OWNERS`): the dataplane drops the entry when a LAN host defends
    /// the address.
    fn v6_owner(&self, addr: std::net::Ipv6Addr) -> Option<u32>;
    /// Replaces the node's IPv6 addresses the neighbour responder answers for.
    fn set_host_addrs6(&self, addrs: &[std::net::Ipv6Addr]) -> Result<(), DataplaneError>;
}

/// The DHCP client speaking for the pods.
pub trait Leases: Send + Sync + 'static {
    /// DISCOVER … ACK (and the ARP probe) for one pod.
    fn acquire(&self, req: &LeaseRequest) -> impl Future<Output = Result<Lease, DhcpError>> + Send;
    /// REQUEST to renew (or, `rebinding`, rebind) a lease.
    fn renew(
        &self,
        lease: &Lease,
        rebinding: bool,
        timeout: Duration,
    ) -> impl Future<Output = Result<Lease, DhcpError>> + Send;
    /// DHCPRELEASE.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), DhcpError>> + Send;
    /// Counts a lease that ran out.
    fn count_expired(&self);
}

/// One implementation of each seam.
pub trait Kernel: Send + Sync + 'static {
    /// Netlink work.
    type Links: Links;
    /// Programs and maps.
    type Maps: Maps;
    /// DHCP.
    type Leases: Leases;
    /// IPv6.
    type Lan6: super::Lan6;
}

/// The real node: rtnetlink, the loaded [`Dataplane`], the [`DhcpClient`].
#[derive(Debug)]
pub struct Node;

impl Kernel for Node {
    type Links = NodeLinks;
    type Maps = NodeMaps;
    type Leases = DhcpClient;
    type Lan6 = super::NodeLan6;
}

/// [`Links`] over an rtnetlink handle of the agent's namespace.
#[derive(Debug)]
pub struct NodeLinks {
    nl: rtnetlink::Handle,
}

impl NodeLinks {
    /// Over `nl`.
    pub fn new(nl: rtnetlink::Handle) -> Self {
        NodeLinks { nl }
    }

    /// The handle (start-up work outside the seams).
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.nl
    }
}

impl Links for NodeLinks {
    async fn find_link(&self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        netlink::find_link(&self.nl, name).await
    }
    async fn create_veth(&self, spec: &VethSpec<'_>) -> Result<LinkInfo, NetlinkError> {
        netlink::create_veth(&self.nl, spec).await
    }
    async fn delete_link(&self, name: &str) -> Result<(), NetlinkError> {
        netlink::delete_link(&self.nl, name).await
    }
    async fn add_uc_filter(&self, uplink: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        netlink::add_uc_filter(&self.nl, uplink, mac).await
    }
    async fn del_uc_filter(&self, uplink: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        netlink::del_uc_filter(&self.nl, uplink, mac).await
    }
    async fn allmulti(&self, uplink: u32) -> Result<bool, NetlinkError> {
        netlink::allmulti(&self.nl, uplink).await
    }
    async fn set_allmulti(&self, uplink: u32, on: bool) -> Result<(), NetlinkError> {
        netlink::set_allmulti(&self.nl, uplink, on).await
    }
    async fn set_link_mac(&self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        netlink::set_mac(&self.nl, index, mac).await
    }
    async fn add_host_route(&self, ip: Ipv4Addr, ifindex: u32) -> Result<(), NetlinkError> {
        netlink::add_host_route(&self.nl, ip, ifindex).await
    }
    async fn del_host_route(&self, ip: Ipv4Addr, ifindex: u32) -> Result<(), NetlinkError> {
        netlink::del_host_route(&self.nl, ip, ifindex).await
    }
    async fn configure_pod(&self, netns: &Path, cfg: PodConfig) -> Result<(), NetlinkError> {
        netlink::configure_pod(netns, cfg).await
    }
    async fn pod_link_up(&self, netns: &Path, ifname: &str) -> Result<(), NetlinkError> {
        netlink::pod_link_up(netns, ifname).await
    }
    async fn remove_pod_address(
        &self,
        netns: &Path,
        ifname: &str,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        netlink::remove_pod_address(netns, ifname, addr, prefix).await
    }
    async fn read_pod(&self, netns: &Path, ifname: &str) -> Result<PodState, NetlinkError> {
        netlink::read_pod(netns, ifname).await
    }
}

/// [`Maps`] over the loaded [`Dataplane`], behind a mutex held only for
/// short, non-blocking sections.
#[derive(Debug)]
pub struct NodeMaps {
    dp: Mutex<Dataplane>,
    /// The `FLOWS` map's owner: purges go there, never through `dp`.
    flows: crate::flows::Flows,
}

impl NodeMaps {
    /// Over `dp`, with the handle to the flow map's owner.
    pub fn new(dp: Dataplane, flows: crate::flows::Flows) -> Self {
        NodeMaps {
            dp: Mutex::new(dp),
            flows,
        }
    }

    /// Runs `f` with the dataplane locked.
    pub fn with<T>(&self, f: impl FnOnce(&mut Dataplane) -> T) -> T {
        f(&mut self.dp.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

const POD_HOOKS: [Hook; 2] = [Hook::FromPod, Hook::ToPod];

impl Maps for NodeMaps {
    async fn attach(&self, veth: &str) -> Result<(), DataplaneError> {
        // Prepared under the lock, run outside it: each attach waits in the
        // kernel for an RCU grace period.
        let attachments = self.with(|dp| dp.attachments(veth, &POD_HOOKS))?;
        attachments.run_blocking().await
    }
    fn detach(&self, veth: &str) -> Result<(), DataplaneError> {
        self.with(|dp| POD_HOOKS.iter().try_for_each(|h| dp.detach(veth, *h)))
    }
    fn is_attached(&self, veth: &str, hook: Hook) -> bool {
        self.with(|dp| dp.is_attached(veth, hook))
    }
    fn register(
        &self,
        host_ifindex: u32,
        entry: EndpointByIf,
        guard: EndpointGuard,
    ) -> Result<(), DataplaneError> {
        self.with(|dp| dp.upsert_endpoint(host_ifindex, entry, guard))
    }
    fn unregister(&self, host_ifindex: u32, mac: Option<[u8; 6]>) -> Result<(), DataplaneError> {
        self.with(|dp| dp.remove_endpoint(host_ifindex, mac))
    }
    fn purge_flows(&self, host_ifindex: u32) -> Result<(), DataplaneError> {
        // Queued to the owner, which purges in its next pass: no walk of
        // the 65,536-entry map on the DEL path, no dataplane lock.
        self.flows.forget(host_ifindex);
        Ok(())
    }
    fn endpoint(&self, host_ifindex: u32) -> Option<EndpointByIf> {
        self.with(|dp| dp.endpoint(host_ifindex))
    }
    fn endpoint_by_mac(&self, mac: [u8; 6]) -> Option<EndpointByMac> {
        self.with(|dp| dp.endpoint_by_mac(mac))
    }
    fn endpoint_drops(&self, host_ifindex: u32) -> Vec<(StatSlot, u64)> {
        self.with(|dp| dp.endpoint_drops(host_ifindex))
    }
    fn set_flood(&self, members: &[u32]) -> Result<(), DataplaneError> {
        self.with(|dp| dp.set_flood(members))
    }
    fn set_host_routes(&self, prefixes: &[(Ipv4Addr, u8)]) -> Result<(), DataplaneError> {
        self.with(|dp| dp.set_host_routes(prefixes))
    }
    fn assign_v6(&self, addr: std::net::Ipv6Addr, host_ifindex: u32) -> Result<(), DataplaneError> {
        self.with(|dp| dp.assign_v6(addr, host_ifindex))
    }
    fn set_host_addrs6(&self, addrs: &[std::net::Ipv6Addr]) -> Result<(), DataplaneError> {
        self.with(|dp| dp.set_host_addrs6(addrs))
    }
    fn v6_owner(&self, addr: std::net::Ipv6Addr) -> Option<u32> {
        self.with(|dp| dp.v6_owner(addr))
    }
}

impl Leases for DhcpClient {
    async fn acquire(&self, req: &LeaseRequest) -> Result<Lease, DhcpError> {
        DhcpClient::acquire(self, req).await
    }
    async fn renew(
        &self,
        lease: &Lease,
        rebinding: bool,
        timeout: Duration,
    ) -> Result<Lease, DhcpError> {
        DhcpClient::renew(self, lease, rebinding, timeout).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), DhcpError> {
        DhcpClient::release(self, lease).await
    }
    fn count_expired(&self) {
        DhcpClient::count_expired(self);
    }
}
