//! Fakes of the agent's seams for unit tests: one shared [`World`] that
//! records every call in order, holds what was made (links, filter entries,
//! routes, map entries, leases), fails a chosen step on demand, and can
//! hold a veth creation until the test lets it go.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use lanlink_api::{
    AttachmentConfig, AttachmentRequest, DhcpConfig, Identity, Ipv4Cidr, Mode, PodIdentity,
};
use lanlink_common::{EndpointByIf, EndpointByMac, EndpointGuard, StatSlot};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Agent, AgentConfig, Kernel, Leases, Links, Maps, Parts, UplinkView, host_veth_name};
use crate::{
    dataplane::{DataplaneError, Hook},
    dhcp::{DhcpError, Lease, LeaseRequest, Mac},
    netlink::{LinkInfo, NetlinkError, PodConfig, PodState, VethSpec},
    state::Store,
};

/// The uplink of the fake node.
pub(crate) const UPLINK_INDEX: u32 = 2;
/// The uplink's address.
pub(crate) const UPLINK_ADDR: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 10), 22);

/// Everything the fakes hold and did.
#[derive(Default)]
pub(crate) struct World {
    /// Every call, in order: `"<op> <detail>"`.
    pub calls: Vec<String>,
    /// The operation that fails (every time it is called), if any.
    pub fail_at: Option<&'static str>,
    /// Host veths by name, with their pod end `(netns, ifname)`.
    pub links: BTreeMap<String, (LinkInfo, (String, String))>,
    next_index: u32,
    /// Pod interfaces by `(netns, ifname)`.
    pub pods: BTreeMap<(String, String), PodState>,
    /// MACs in the uplink's unicast filter.
    pub uc_filter: BTreeSet<[u8; 6]>,
    /// The uplink's `IFF_ALLMULTI`, as userspace sees it.
    pub allmulti: bool,
    /// The node's routes to pods.
    pub host_routes_nl: BTreeSet<(Ipv4Addr, u32)>,
    /// Host veths with programs attached.
    pub attached: BTreeSet<String>,
    /// `EP_BY_IF`.
    pub ep_by_if: BTreeMap<u32, EndpointByIf>,
    /// `EP_BY_MAC`.
    pub ep_by_mac: BTreeMap<[u8; 6], EndpointByMac>,
    /// `EP_GUARD`.
    pub guards: BTreeMap<u32, EndpointGuard>,
    /// `EP_DROPS`, as tests set them.
    pub drops: BTreeMap<u32, Vec<(StatSlot, u64)>>,
    /// `FLOOD` members.
    pub flood: Vec<u32>,
    /// `HOST_ROUTES`.
    pub host_routes: Vec<(Ipv4Addr, u8)>,
    /// Leases held on the server, by MAC.
    pub leases: BTreeMap<[u8; 6], Lease>,
    next_address: u8,
    /// Veth creations held until the semaphore gives a permit, by host name;
    /// the `Notify` fires when one is waiting.
    gates: HashMap<String, (Arc<Semaphore>, Arc<Notify>)>,
}

impl World {
    /// Records `op` and fails it if it is the chosen one.
    fn op(&mut self, op: &'static str, detail: impl std::fmt::Display) -> Result<(), ()> {
        self.calls.push(format!("{op} {detail}"));
        if self.fail_at == Some(op) {
            Err(())
        } else {
            Ok(())
        }
    }

    /// The calls whose op is one of `ops`, in order.
    pub fn calls_of(&self, ops: &[&str]) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| ops.iter().any(|op| c.split(' ').next() == Some(op)))
            .cloned()
            .collect()
    }

    /// Whether nothing the agent makes is left in the fake kernel.
    pub fn assert_empty(&self) {
        assert!(self.links.is_empty(), "links left: {:?}", self.links.keys());
        assert!(self.pods.is_empty(), "pod interfaces left");
        assert!(self.uc_filter.is_empty(), "filter entries left");
        assert!(!self.allmulti, "uplink left in all-multicast mode");
        assert!(self.host_routes_nl.is_empty(), "host routes left");
        assert!(
            self.attached.is_empty(),
            "programs left: {:?}",
            self.attached
        );
        assert!(self.ep_by_if.is_empty(), "EP_BY_IF entries left");
        assert!(self.ep_by_mac.is_empty(), "EP_BY_MAC entries left");
        assert!(self.guards.is_empty(), "EP_GUARD entries left");
        assert!(self.flood.is_empty(), "flood members left");
        assert!(
            self.leases.is_empty(),
            "leases held: {:?}",
            self.leases.keys()
        );
    }
}

/// The shared world of one test.
pub(crate) type Shared = Arc<Mutex<World>>;

fn lock(w: &Shared) -> std::sync::MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

fn nl_err(op: &str) -> NetlinkError {
    NetlinkError::Connect(std::io::Error::other(format!("injected failure of {op}")))
}

fn dp_err(op: &str) -> DataplaneError {
    DataplaneError::Pin {
        what: format!("{op} (injected)"),
        source: std::io::Error::other("injected"),
    }
}

/// The fake kernel.
pub(crate) struct Fake;

impl Kernel for Fake {
    type Links = FakeLinks;
    type Maps = FakeMaps;
    type Leases = FakeLeases;
    type Lan6 = FakeLan6;
}

/// Fake [`Links`].
pub(crate) struct FakeLinks(Shared);
/// Fake [`Maps`].
pub(crate) struct FakeMaps(Shared);
/// Fake [`Leases`].
pub(crate) struct FakeLeases(Shared);

fn mac_str(mac: &[u8; 6]) -> String {
    Mac(*mac).to_string()
}

impl Links for FakeLinks {
    async fn find_link(&self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        let mut w = lock(&self.0);
        w.op("find_link", name).map_err(|()| nl_err("find_link"))?;
        Ok(w.links.get(name).map(|l| l.0))
    }
    async fn create_veth(&self, spec: &VethSpec<'_>) -> Result<LinkInfo, NetlinkError> {
        let gate = lock(&self.0).gates.get(spec.host_name).cloned();
        if let Some((permits, waiting)) = gate {
            waiting.notify_one();
            let _permit = permits.acquire().await;
        }
        let mut w = lock(&self.0);
        w.op("create_veth", spec.host_name)
            .map_err(|()| nl_err("create_veth"))?;
        w.next_index += 1;
        let index = 100 + w.next_index;
        let info = LinkInfo {
            index,
            mac: spec.host_mac,
            mtu: spec.mtu,
        };
        let pod = (spec.netns.display().to_string(), spec.pod_name.to_string());
        w.pods.insert(
            pod.clone(),
            PodState {
                mac: Some(spec.pod_mac),
                ..PodState::default()
            },
        );
        w.links.insert(spec.host_name.to_string(), (info, pod));
        Ok(info)
    }
    async fn delete_link(&self, name: &str) -> Result<(), NetlinkError> {
        let mut w = lock(&self.0);
        w.op("delete_link", name)
            .map_err(|()| nl_err("delete_link"))?;
        // As the kernel does: the peer and the routes through it go too.
        if let Some((info, pod)) = w.links.remove(name) {
            w.pods.remove(&pod);
            w.host_routes_nl.retain(|r| r.1 != info.index);
        }
        Ok(())
    }
    async fn add_uc_filter(&self, uplink: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        assert_eq!(uplink, UPLINK_INDEX);
        let mut w = lock(&self.0);
        w.op("add_uc_filter", mac_str(&mac))
            .map_err(|()| nl_err("add_uc_filter"))?;
        w.uc_filter.insert(mac);
        Ok(())
    }
    async fn del_uc_filter(&self, uplink: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        assert_eq!(uplink, UPLINK_INDEX);
        let mut w = lock(&self.0);
        w.op("del_uc_filter", mac_str(&mac))
            .map_err(|()| nl_err("del_uc_filter"))?;
        w.uc_filter.remove(&mac);
        Ok(())
    }
    async fn allmulti(&self, uplink: u32) -> Result<bool, NetlinkError> {
        assert_eq!(uplink, UPLINK_INDEX);
        let mut w = lock(&self.0);
        w.op("allmulti", "").map_err(|()| nl_err("allmulti"))?;
        Ok(w.allmulti)
    }
    async fn set_allmulti(&self, uplink: u32, on: bool) -> Result<(), NetlinkError> {
        assert_eq!(uplink, UPLINK_INDEX);
        let mut w = lock(&self.0);
        w.op("set_allmulti", if on { "on" } else { "off" })
            .map_err(|()| nl_err("set_allmulti"))?;
        w.allmulti = on;
        Ok(())
    }
    async fn set_link_mac(&self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let mut w = lock(&self.0);
        w.op("set_link_mac", mac_str(&mac))
            .map_err(|()| nl_err("set_link_mac"))?;
        let link = w
            .links
            .values_mut()
            .find(|l| l.0.index == index)
            .ok_or_else(|| nl_err("set_link_mac: no such link"))?;
        link.0.mac = mac;
        Ok(())
    }
    async fn add_host_route(&self, ip: Ipv4Addr, ifindex: u32) -> Result<(), NetlinkError> {
        let mut w = lock(&self.0);
        w.op("add_host_route", ip)
            .map_err(|()| nl_err("add_host_route"))?;
        w.host_routes_nl.insert((ip, ifindex));
        Ok(())
    }
    async fn del_host_route(&self, ip: Ipv4Addr, ifindex: u32) -> Result<(), NetlinkError> {
        let mut w = lock(&self.0);
        w.op("del_host_route", ip)
            .map_err(|()| nl_err("del_host_route"))?;
        w.host_routes_nl.remove(&(ip, ifindex));
        Ok(())
    }
    async fn configure_pod(&self, netns: &Path, cfg: PodConfig) -> Result<(), NetlinkError> {
        let mut w = lock(&self.0);
        w.op("configure_pod", cfg.address)
            .map_err(|()| nl_err("configure_pod"))?;
        let pod = w
            .pods
            .get_mut(&(netns.display().to_string(), cfg.ifname.clone()))
            .ok_or_else(|| nl_err("configure_pod: no such interface"))?;
        pod.addresses = vec![(cfg.address, cfg.prefix)];
        pod.routes = cfg.routes;
        Ok(())
    }
    async fn pod_link_up(&self, _netns: &Path, ifname: &str) -> Result<(), NetlinkError> {
        lock(&self.0)
            .op("pod_link_up", ifname)
            .map_err(|()| nl_err("pod_link_up"))
    }
    async fn remove_pod_address(
        &self,
        netns: &Path,
        ifname: &str,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let mut w = lock(&self.0);
        w.op("remove_pod_address", addr)
            .map_err(|()| nl_err("remove_pod_address"))?;
        if let Some(pod) = w
            .pods
            .get_mut(&(netns.display().to_string(), ifname.to_string()))
        {
            pod.addresses.retain(|a| *a != (addr, prefix));
        }
        Ok(())
    }
    async fn read_pod(&self, netns: &Path, ifname: &str) -> Result<PodState, NetlinkError> {
        let mut w = lock(&self.0);
        w.op("read_pod", ifname).map_err(|()| nl_err("read_pod"))?;
        Ok(w.pods
            .get(&(netns.display().to_string(), ifname.to_string()))
            .cloned()
            .unwrap_or_default())
    }
}

impl Maps for FakeMaps {
    async fn attach(&self, veth: &str) -> Result<(), DataplaneError> {
        let mut w = lock(&self.0);
        w.op("attach", veth).map_err(|()| dp_err("attach"))?;
        w.attached.insert(veth.to_string());
        Ok(())
    }
    fn detach(&self, veth: &str) -> Result<(), DataplaneError> {
        let mut w = lock(&self.0);
        w.op("detach", veth).map_err(|()| dp_err("detach"))?;
        w.attached.remove(veth);
        Ok(())
    }
    fn is_attached(&self, veth: &str, _hook: Hook) -> bool {
        lock(&self.0).attached.contains(veth)
    }
    fn register(
        &self,
        host_ifindex: u32,
        entry: EndpointByIf,
        guard: EndpointGuard,
    ) -> Result<(), DataplaneError> {
        let mut w = lock(&self.0);
        w.op("register", host_ifindex)
            .map_err(|()| dp_err("register"))?;
        w.ep_by_if.insert(host_ifindex, entry);
        w.guards.insert(host_ifindex, guard);
        w.ep_by_mac.insert(
            entry.mac,
            EndpointByMac {
                ifindex: host_ifindex,
                ipv4: entry.ipv4,
                flags: entry.flags,
            },
        );
        Ok(())
    }
    fn unregister(&self, host_ifindex: u32, mac: Option<[u8; 6]>) -> Result<(), DataplaneError> {
        let mut w = lock(&self.0);
        w.op("unregister", host_ifindex)
            .map_err(|()| dp_err("unregister"))?;
        // As `Dataplane::remove_endpoint`: the MAC entry only if it is this veth's.
        if let Some(mac) = mac
            && w.ep_by_mac
                .get(&mac)
                .is_some_and(|e| e.ifindex == host_ifindex)
        {
            w.ep_by_mac.remove(&mac);
        }
        w.ep_by_if.remove(&host_ifindex);
        w.guards.remove(&host_ifindex);
        w.flood.retain(|m| *m != host_ifindex);
        Ok(())
    }
    fn purge_flows(&self, host_ifindex: u32) -> Result<(), DataplaneError> {
        lock(&self.0)
            .op("purge_flows", host_ifindex)
            .map_err(|()| dp_err("purge_flows"))
    }
    fn endpoint(&self, host_ifindex: u32) -> Option<EndpointByIf> {
        lock(&self.0).ep_by_if.get(&host_ifindex).copied()
    }
    fn endpoint_by_mac(&self, mac: [u8; 6]) -> Option<EndpointByMac> {
        lock(&self.0).ep_by_mac.get(&mac).copied()
    }
    fn endpoint_drops(&self, host_ifindex: u32) -> Vec<(StatSlot, u64)> {
        lock(&self.0)
            .drops
            .get(&host_ifindex)
            .cloned()
            .unwrap_or_default()
    }
    fn set_flood(&self, members: &[u32]) -> Result<(), DataplaneError> {
        let mut w = lock(&self.0);
        w.op("set_flood", format!("{members:?}"))
            .map_err(|()| dp_err("set_flood"))?;
        w.flood = members.to_vec();
        Ok(())
    }
    fn set_host_routes(&self, prefixes: &[(Ipv4Addr, u8)]) -> Result<(), DataplaneError> {
        let mut w = lock(&self.0);
        w.op("set_host_routes", prefixes.len())
            .map_err(|()| dp_err("set_host_routes"))?;
        w.host_routes = prefixes.to_vec();
        Ok(())
    }
    fn assign_v6(&self, addr: std::net::Ipv6Addr, host_ifindex: u32) -> Result<(), DataplaneError> {
        let mut w = lock(&self.0);
        w.op("assign_v6", format!("{addr} {host_ifindex}"))
            .map_err(|()| dp_err("assign_v6"))
    }
    fn set_host_addrs6(&self, addrs: &[std::net::Ipv6Addr]) -> Result<(), DataplaneError> {
        let mut w = lock(&self.0);
        w.op("set_host_addrs6", addrs.len())
            .map_err(|()| dp_err("set_host_addrs6"))
    }
    fn v6_owner(&self, _addr: std::net::Ipv6Addr) -> Option<u32> {
        None
    }
}

/// Fake [`super::Lan6`]: a LAN where no router advertises, so every
/// attachment of the unit tests is IPv4-only; the IPv6 work itself runs
/// against the real kernel and servers in the scenarios (`tests/tests/ipv6.rs`).
pub(crate) struct FakeLan6;

fn no_ipv6() -> std::io::Error {
    std::io::Error::other("the fake LAN has no IPv6")
}

impl super::Lan6 for FakeLan6 {
    async fn view(&self) -> crate::ipv6::ra::RaView {
        crate::ipv6::ra::RaView::new()
    }
    async fn obtain(
        &self,
        _id: &crate::ipv6::dhcp6::Dhcp6Identity,
        _timeout: std::time::Duration,
    ) -> Result<crate::ipv6::dhcp6::Lease6, crate::ipv6::dhcp6::Dhcp6Error> {
        Err(no_ipv6().into())
    }
    async fn release(
        &self,
        _id: &crate::ipv6::dhcp6::Dhcp6Identity,
        _lease: &crate::ipv6::dhcp6::Lease6,
    ) -> Result<(), crate::ipv6::dhcp6::Dhcp6Error> {
        Err(no_ipv6().into())
    }
    async fn decline(
        &self,
        _id: &crate::ipv6::dhcp6::Dhcp6Identity,
        _lease: &crate::ipv6::dhcp6::Lease6,
    ) -> Result<(), crate::ipv6::dhcp6::Dhcp6Error> {
        Err(no_ipv6().into())
    }
    async fn maintain(
        &self,
        _id: &crate::ipv6::dhcp6::Dhcp6Identity,
        _lease: crate::ipv6::dhcp6::Lease6,
        _cancel: tokio_util::sync::CancellationToken,
        _on_lease: impl FnMut(&crate::ipv6::dhcp6::Lease6) + Send,
    ) -> Result<crate::ipv6::dhcp6::Lease6, crate::ipv6::dhcp6::Dhcp6Error> {
        Err(no_ipv6().into())
    }
    async fn prepare_host_veth6(&self, _host_veth: &str) -> Result<(), NetlinkError> {
        Err(NetlinkError::Connect(no_ipv6()))
    }
    async fn configure_pod6(
        &self,
        _netns: &Path,
        _cfg: crate::netlink6::Pod6Config,
    ) -> Result<(), NetlinkError> {
        Err(NetlinkError::Connect(no_ipv6()))
    }
    async fn pod_dad(
        &self,
        _netns: &Path,
        _ifname: &str,
        _addr: std::net::Ipv6Addr,
    ) -> Result<crate::netlink6::Dad, NetlinkError> {
        Err(NetlinkError::Connect(no_ipv6()))
    }
    async fn remove_pod_address6(
        &self,
        _netns: &Path,
        _ifname: &str,
        _addr: std::net::Ipv6Addr,
        _prefix: u8,
    ) -> Result<(), NetlinkError> {
        Err(NetlinkError::Connect(no_ipv6()))
    }
    async fn add_host_route6(
        &self,
        _ip: std::net::Ipv6Addr,
        _ifindex: u32,
    ) -> Result<(), NetlinkError> {
        Err(NetlinkError::Connect(no_ipv6()))
    }
    async fn del_host_route6(
        &self,
        _ip: std::net::Ipv6Addr,
        _ifindex: u32,
    ) -> Result<(), NetlinkError> {
        Err(NetlinkError::Connect(no_ipv6()))
    }
    async fn node_addresses6(&self) -> Result<Vec<std::net::Ipv6Addr>, NetlinkError> {
        Ok(Vec::new())
    }
}

fn dhcp_err(mac: [u8; 6]) -> DhcpError {
    DhcpError::InvalidRequest {
        mac: Mac(mac),
        reason: "injected failure",
    }
}

impl Leases for FakeLeases {
    async fn acquire(&self, req: &LeaseRequest) -> Result<Lease, DhcpError> {
        let mut w = lock(&self.0);
        w.op("acquire", mac_str(&req.mac))
            .map_err(|()| dhcp_err(req.mac))?;
        w.next_address += 1;
        let lease = Lease {
            mac: req.mac,
            client_id: req.client_id.clone(),
            hostname: req.hostname.clone(),
            address: Ipv4Addr::new(198, 18, 1, w.next_address),
            prefix_len: 22,
            server_id: Ipv4Addr::new(198, 18, 0, 1),
            server_mac: [0x0a, 0, 0, 0, 0, 1],
            router: Some(Ipv4Addr::new(198, 18, 0, 1)),
            classless_routes: Vec::new(),
            dns: Vec::new(),
            domain: None,
            search: Vec::new(),
            mtu: None,
            lease_secs: 3600,
            t1_secs: 1800,
            t2_secs: 3150,
            obtained_at_unix: super::now_unix(),
        };
        w.leases.insert(req.mac, lease.clone());
        Ok(lease)
    }
    async fn renew(
        &self,
        lease: &Lease,
        _rebinding: bool,
        _timeout: Duration,
    ) -> Result<Lease, DhcpError> {
        lock(&self.0)
            .op("renew", lease.address)
            .map_err(|()| dhcp_err(lease.mac))?;
        Ok(lease.clone())
    }
    async fn release(&self, lease: &Lease) -> Result<(), DhcpError> {
        let mut w = lock(&self.0);
        w.op("release", lease.address)
            .map_err(|()| dhcp_err(lease.mac))?;
        w.leases.remove(&lease.mac);
        Ok(())
    }
    fn count_expired(&self) {}
}

/// An agent over the fakes, with its world and its state directory.
pub(crate) struct TestAgent {
    /// The agent.
    pub agent: Arc<Agent<Fake>>,
    /// What it did to the fake kernel.
    pub world: Shared,
    state_dir: Arc<tempfile::TempDir>,
}

impl TestAgent {
    /// A started agent (re-adoption done, uplink up) with `configure`d settings.
    pub async fn start_with(configure: impl FnOnce(&mut AgentConfig)) -> Self {
        let t = Self::new_with(configure);
        t.agent.readopt().await;
        // Tests look at what their operations do, not at the start-up.
        t.world().calls.clear();
        t
    }

    /// A started agent with the default settings.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// An agent not started yet (no re-adoption).
    pub fn new_with(configure: impl FnOnce(&mut AgentConfig)) -> Self {
        let state_dir = tempfile::tempdir().expect("temporary state directory");
        Self::build(Shared::default(), Arc::new(state_dir), configure)
    }

    /// A restarted agent: this one stops, a new one starts over the same
    /// fake kernel and state directory, and re-adopts.
    pub async fn restart(&self) -> Self {
        self.agent.shutdown.cancel();
        let t = Self::build(Arc::clone(&self.world), Arc::clone(&self.state_dir), |_| {});
        t.agent.readopt().await;
        t
    }

    fn build(
        world: Shared,
        state_dir: Arc<tempfile::TempDir>,
        configure: impl FnOnce(&mut AgentConfig),
    ) -> Self {
        let mut cfg = AgentConfig {
            uplink: "uplink0".into(),
            pin_dir: "/nonexistent/lanlink".into(),
            state_dir: state_dir.path().to_path_buf(),
            dataplane_flags: 0,
            promiscuous: false,
            host_routes: Vec::new(),
            iptables: None,
            flow_timeout: Duration::from_secs(300),
            attach: crate::dataplane::AttachMode::Tcx,
        };
        configure(&mut cfg);
        let parts = Parts::<Fake> {
            links: FakeLinks(Arc::clone(&world)),
            maps: FakeMaps(Arc::clone(&world)),
            leases: FakeLeases(Arc::clone(&world)),
            lan6: FakeLan6,
            uplink: LinkInfo {
                index: UPLINK_INDEX,
                mac: [0x0a, 0, 0, 0, 0, 2],
                mtu: 1500,
            },
            uplink_view: UplinkView {
                addresses: vec![UPLINK_ADDR],
                oper_up: true,
            },
            adopted_maps: false,
        };
        let store = Store::new(&cfg.state_dir).expect("state store");
        let agent = Agent::new(cfg, parts, store, CancellationToken::new()).expect("agent");
        TestAgent {
            agent: Arc::new(agent),
            world,
            state_dir,
        }
    }

    /// The world, locked.
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Starts an ADD of `container` (pod `default/<pod>`) and returns once it
    /// waits at the creation of its veth; it goes on when the returned
    /// semaphore gets a permit.
    pub async fn add_held(&self, container: &str, pod: &str) -> (Arc<Semaphore>, Pending) {
        let (go, waiting) = (Arc::new(Semaphore::new(0)), Arc::new(Notify::new()));
        self.world().gates.insert(
            host_veth_name(container, "eth0"),
            (Arc::clone(&go), Arc::clone(&waiting)),
        );
        let add = self.spawn(Verb::Add, container, pod);
        waiting.notified().await;
        (go, add)
    }

    /// Runs `verb` for `container` (pod `default/<pod>`) as a task of its own.
    pub fn spawn(&self, verb: Verb, container: &str, pod: &str) -> Pending {
        let agent = Arc::clone(&self.agent);
        let req = request(container, pod);
        tokio::spawn(async move {
            match verb {
                Verb::Add => agent.add(req).await.map(drop),
                Verb::Check => agent.check(req).await.map(drop),
                Verb::Del => agent.del(req).await,
            }
        })
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        // Renewal tasks end with the agent.
        self.agent.shutdown.cancel();
    }
}

/// A verb of the agent, for [`TestAgent::spawn`].
#[derive(Clone, Copy)]
pub enum Verb {
    Add,
    Check,
    Del,
}

/// A verb running as a task; its answer is dropped, its error kept.
pub type Pending = tokio::task::JoinHandle<Result<(), super::AgentError>>;

/// An ADD/DEL/CHECK request for `container` of pod `default/<pod>`, DHCP with
/// the stable identity.
pub(crate) fn request(container: &str, pod: &str) -> AttachmentRequest {
    AttachmentRequest {
        container_id: container.into(),
        netns: Some(format!("/run/netns/{container}")),
        ifname: "eth0".into(),
        pod: PodIdentity {
            namespace: Some("default".into()),
            name: Some(pod.into()),
            uid: None,
        },
        config: AttachmentConfig {
            network: "lan".into(),
            uplink: None,
            mode: Mode::Primary,
            host_routes: vec!["10.96.0.0/12".parse::<Ipv4Cidr>().expect("CIDR")],
            dhcp: Some(DhcpConfig {
                identity: Identity::Stable,
                ..DhcpConfig::default()
            }),
            mtu: None,
            port_security: Default::default(),
            ipv6: Default::default(),
            ipv6_iid: Default::default(),
        },
    }
}

impl TestAgent {
    /// [`TestAgent::restart`] through the deletion queue: the new agent runs
    /// the DELs queued in `dir`, then re-adopts, as `Agent::start` does.
    pub async fn restart_with_queue(
        &self,
        dir: &std::path::Path,
    ) -> (Self, super::del_queue::Drained) {
        self.agent.shutdown.cancel();
        let t = Self::build(Arc::clone(&self.world), Arc::clone(&self.state_dir), |_| {});
        let drained = t.agent.drain_del_queue(dir).await;
        t.agent.readopt().await;
        (t, drained)
    }
}
