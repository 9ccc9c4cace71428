//! The IPv6 seam ([`Lan6`]): what the agent asks of the LAN and the kernel
//! for a pod's IPv6 (issue 16) — the routers' advertisements as last heard,
//! DHCPv6 exchanges on the pod's behalf, the pod's IPv6 address and
//! routes, the node's route to it and the node's own addresses.
//!
//! [`NodeLan6`] is the real one: an [`RaReceiver`] task on the uplink
//! keeps a [`RaView`] current, DHCPv6 speaks through a
//! [`PacketTransport`] per exchange (frames from the pod's MAC and
//! link-local address), netlink does the rest. The unit tests' fake hears
//! no router: every attachment is IPv4-only there.

use std::{
    future::Future,
    net::Ipv6Addr,
    path::Path,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    ipv6::{
        dhcp6::{Dhcp6Client, Dhcp6Error, Dhcp6Identity, Lease6, PacketTransport},
        ra::{RaReceiver, RaView},
    },
    netlink::NetlinkError,
    netlink6::{self, Dad, Pod6Config},
};

/// How long an ADD right after the agent's start waits for a first router
/// advertisement (the answer to the start's solicitation): routers answer
/// a solicitation within 0.5 s (RFC 4861 `MAX_RA_DELAY_TIME`); a LAN with
/// no router costs this once.
pub const RA_SETTLE: Duration = Duration::from_secs(2);

/// The IPv6 side of the LAN and of the pods' kernels.
pub trait Lan6: Send + Sync + 'static {
    /// The routers' advertisements as last heard. Right after the agent's
    /// start, waits until the first one came or [`RA_SETTLE`] passed.
    fn view(&self) -> impl Future<Output = RaView> + Send;
    /// Solicit … Reply for a pod, soliciting for at most `timeout`.
    fn obtain(
        &self,
        id: &Dhcp6Identity,
        timeout: Duration,
    ) -> impl Future<Output = Result<Lease6, Dhcp6Error>> + Send;
    /// Release.
    fn release(
        &self,
        id: &Dhcp6Identity,
        lease: &Lease6,
    ) -> impl Future<Output = Result<(), Dhcp6Error>> + Send;
    /// Decline (the address is in use on the LAN).
    fn decline(
        &self,
        id: &Dhcp6Identity,
        lease: &Lease6,
    ) -> impl Future<Output = Result<(), Dhcp6Error>> + Send;
    /// Keeps `lease` alive (Renew at T1, Rebind at T2) until `cancel`;
    /// each new lease goes to `on_lease`.
    fn maintain(
        &self,
        id: &Dhcp6Identity,
        lease: Lease6,
        cancel: CancellationToken,
        on_lease: impl FnMut(&Lease6) + Send,
    ) -> impl Future<Output = Result<Lease6, Dhcp6Error>> + Send;
    /// The host veth's IPv6 side before the pod's link comes up: its
    /// link-local address without duplicate address detection, so the node
    /// can solicit the pod's address at once.
    fn prepare_host_veth6(
        &self,
        host_veth: &str,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Sysctls, address (optimistic) and routes in the pod.
    fn configure_pod6(
        &self,
        netns: &Path,
        cfg: Pod6Config,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Where the pod's duplicate address detection of `addr` stands.
    fn pod_dad(
        &self,
        netns: &Path,
        ifname: &str,
        addr: Ipv6Addr,
    ) -> impl Future<Output = Result<Dad, NetlinkError>> + Send;
    /// Removes `addr/prefix` from the pod's interface.
    fn remove_pod_address6(
        &self,
        netns: &Path,
        ifname: &str,
        addr: Ipv6Addr,
        prefix: u8,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// The node's /128 route to a pod.
    fn add_host_route6(
        &self,
        ip: Ipv6Addr,
        ifindex: u32,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Removes it; succeeds if absent.
    fn del_host_route6(
        &self,
        ip: Ipv6Addr,
        ifindex: u32,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// The node's usable global IPv6 addresses on the uplink.
    fn node_addresses6(&self) -> impl Future<Output = Result<Vec<Ipv6Addr>, NetlinkError>> + Send;
}

/// [`Lan6`] of the real node.
#[derive(Debug)]
pub struct NodeLan6 {
    uplink: String,
    uplink_index: u32,
    nl: rtnetlink::Handle,
    view: watch::Receiver<RaView>,
    started: Instant,
}

impl NodeLan6 {
    /// Starts the router-advertisement task on `uplink` (until `cancel`).
    /// A node without IPv6 on the uplink gets an empty view (IPv4-only
    /// pods) and a warning, not a failed start.
    pub fn start(
        uplink: &str,
        uplink_index: u32,
        nl: rtnetlink::Handle,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, view) = watch::channel(RaView::new());
        match RaReceiver::open(uplink) {
            Ok(rx) => {
                info!(uplink, "listening for router advertisements");
                let name = uplink.to_string();
                tokio::spawn(async move {
                    if let Err(e) = rx.run(tx, cancel).await {
                        warn!(uplink = %name, error = %e, "router advertisements no longer heard; pods get IPv4 only from now");
                    }
                });
            }
            Err(e) => {
                warn!(uplink, error = %e, "cannot listen for router advertisements; pods get IPv4 only");
            }
        }
        NodeLan6 {
            uplink: uplink.to_string(),
            uplink_index,
            nl,
            view,
            started: Instant::now(),
        }
    }

    fn client(&self, id: &Dhcp6Identity) -> Result<Dhcp6Client<PacketTransport>, Dhcp6Error> {
        let t = PacketTransport::open(&self.uplink, id.mac, id.link_local)?;
        Ok(Dhcp6Client::new(id.clone(), t))
    }
}

impl Lan6 for NodeLan6 {
    async fn view(&self) -> RaView {
        let deadline = self.started + RA_SETTLE;
        let mut rx = self.view.clone();
        if rx.borrow().last_ra().is_none() && Instant::now() < deadline {
            let wait = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(wait, rx.wait_for(|v| v.last_ra().is_some())).await;
        }
        let mut v = rx.borrow().clone();
        v.expire(Instant::now());
        v
    }
    async fn obtain(&self, id: &Dhcp6Identity, timeout: Duration) -> Result<Lease6, Dhcp6Error> {
        self.client(id)?.obtain(timeout).await
    }
    async fn release(&self, id: &Dhcp6Identity, lease: &Lease6) -> Result<(), Dhcp6Error> {
        self.client(id)?.release(lease).await
    }
    async fn decline(&self, id: &Dhcp6Identity, lease: &Lease6) -> Result<(), Dhcp6Error> {
        self.client(id)?.decline(lease).await
    }
    async fn maintain(
        &self,
        id: &Dhcp6Identity,
        lease: Lease6,
        cancel: CancellationToken,
        on_lease: impl FnMut(&Lease6) + Send,
    ) -> Result<Lease6, Dhcp6Error> {
        self.client(id)?.maintain(lease, cancel, on_lease).await
    }
    async fn prepare_host_veth6(&self, host_veth: &str) -> Result<(), NetlinkError> {
        netlink6::host_veth_nodad(host_veth)
    }
    async fn configure_pod6(&self, netns: &Path, cfg: Pod6Config) -> Result<(), NetlinkError> {
        netlink6::configure_pod6(netns, cfg).await
    }
    async fn pod_dad(
        &self,
        netns: &Path,
        ifname: &str,
        addr: Ipv6Addr,
    ) -> Result<Dad, NetlinkError> {
        netlink6::pod_dad(netns, ifname, addr).await
    }
    async fn remove_pod_address6(
        &self,
        netns: &Path,
        ifname: &str,
        addr: Ipv6Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        netlink6::remove_pod_address6(netns, ifname, addr, prefix).await
    }
    async fn add_host_route6(&self, ip: Ipv6Addr, ifindex: u32) -> Result<(), NetlinkError> {
        netlink6::add_host_route6(&self.nl, ip, ifindex).await
    }
    async fn del_host_route6(&self, ip: Ipv6Addr, ifindex: u32) -> Result<(), NetlinkError> {
        netlink6::del_host_route6(&self.nl, ip, ifindex).await
    }
    async fn node_addresses6(&self) -> Result<Vec<Ipv6Addr>, NetlinkError> {
        netlink6::node_addresses6(&self.nl, self.uplink_index).await
    }
}
