//! rtnetlink work, all of it: the veth pair of a pod, host routes, the
//! uplink's unicast filter, all-multicast switch and address/state
//! notifications, and the
//! pod-side address and routes.
//!
//! `setns` only affects the calling thread, so work inside a pod's namespace
//! runs on a dedicated thread that entered it, with its own current-thread
//! runtime and its own netlink connection ([`in_netns`]). Node-side work uses
//! a [`rtnetlink::Handle`] opened in the agent's own namespace.

use std::{
    fs::File,
    future::Future,
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressMessage},
        link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage, State as OperState},
        neighbour::NeighbourFlags,
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope},
    },
};

/// Errors of netlink work.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// Could not open a netlink socket.
    #[error("cannot open a netlink connection")]
    Connect(#[source] std::io::Error),
    /// A netlink request failed.
    #[error("netlink: {what}")]
    Request {
        /// What was being done, e.g. `add address 198.18.0.100/24 to eth0`.
        what: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// An interface does not exist.
    #[error("no interface named {name}")]
    NoSuchLink {
        /// Its name.
        name: String,
    },
    /// The pod's network namespace could not be opened or entered.
    #[error("cannot enter network namespace {path}")]
    Netns {
        /// The namespace path (`CNI_NETNS`).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The thread doing namespace work died.
    #[error("namespace worker thread for {path} panicked")]
    Worker {
        /// The namespace path.
        path: PathBuf,
    },
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

/// Whether a netlink error is the kernel's "no such device/entry" (ENODEV,
/// ENOENT, ESRCH), which idempotent deletes treat as success.
pub fn is_not_found(e: &NetlinkError) -> bool {
    match e {
        NetlinkError::NoSuchLink { .. } => true,
        NetlinkError::Request {
            source: rtnetlink::Error::NetlinkError(m),
            ..
        } => m
            .code
            .map(|c| matches!(-c.get(), libc::ENODEV | libc::ENOENT | libc::ESRCH))
            .unwrap_or(false),
        _ => false,
    }
}

/// Opens a netlink connection in the calling thread's namespace and spawns
/// its driver on the current runtime.
pub fn connect() -> Result<Handle, NetlinkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Runs `f` with a netlink handle inside the network namespace at `netns`,
/// on a dedicated thread, and returns its result.
pub async fn in_netns<F, Fut, T>(netns: &Path, f: F) -> Result<T, NetlinkError>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetlinkError>>,
    T: Send + 'static,
{
    let path = netns.to_path_buf();
    let file = File::open(&path).map_err(|source| NetlinkError::Netns {
        path: path.clone(),
        source,
    })?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name("lanlink-netns".into())
        .spawn(move || {
            let res = (|| {
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                    |e| NetlinkError::Netns {
                        path: thread_path.clone(),
                        source: std::io::Error::from(e),
                    },
                )?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(NetlinkError::Connect)?;
                rt.block_on(async move { f(connect()?).await })
            })();
            let _ = tx.send(res);
        })
        .map_err(NetlinkError::Connect)?;
    rx.await.map_err(|_| NetlinkError::Worker { path })?
}

/// A link's index and MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
}

/// The index, MAC and MTU a link message carries (a dump's or a
/// notification's).
pub fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        mac: [0; 6],
        mtu: 1500,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Address(a) if a.len() == 6 => info.mac.copy_from_slice(a),
            LinkAttribute::Mtu(m) => info.mtu = *m,
            _ => {}
        }
    }
    info
}

/// Looks up a link by name; `Ok(None)` if it does not exist.
pub async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(link_info(&msg))),
        Ok(None) => Ok(None),
        Err(e) => {
            let e = req(format!("get link {name}"))(e);
            if is_not_found(&e) { Ok(None) } else { Err(e) }
        }
    }
}

/// Looks up a link by name; an error if it does not exist.
pub async fn link(handle: &Handle, name: &str) -> Result<LinkInfo, NetlinkError> {
    find_link(handle, name)
        .await?
        .ok_or_else(|| NetlinkError::NoSuchLink {
            name: name.to_string(),
        })
}

/// What [`create_veth`] makes.
#[derive(Clone, Debug)]
pub struct VethSpec<'a> {
    /// Host-side name (in the agent's namespace).
    pub host_name: &'a str,
    /// Pod-side name (`CNI_IFNAME`).
    pub pod_name: &'a str,
    /// Pod-side MAC.
    pub pod_mac: [u8; 6],
    /// Host-side MAC, set explicitly so that the kernel reports it as set
    /// (`addr_assign_type` 3) and udev's `MACAddressPolicy=persistent`
    /// leaves it alone.
    pub host_mac: [u8; 6],
    /// The pod's namespace.
    pub netns: &'a Path,
    /// MTU of both ends.
    pub mtu: u32,
}

/// Creates a veth pair whose peer is born inside the pod's namespace with its
/// final name and MAC (no rename, no move), gives the host side its MAC,
/// and brings the host side up. Returns the host side.
pub async fn create_veth(handle: &Handle, spec: &VethSpec<'_>) -> Result<LinkInfo, NetlinkError> {
    let netns = File::open(spec.netns).map_err(|source| NetlinkError::Netns {
        path: spec.netns.to_path_buf(),
        source,
    })?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(spec.pod_name.to_string())
        .address(spec.pod_mac.to_vec())
        .mtu(spec.mtu)
        .setns_by_fd(netns.as_raw_fd())
        .build();
    let msg = LinkVeth::new(spec.host_name, spec.pod_name)
        .address(spec.host_mac.to_vec())
        .mtu(spec.mtu)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    handle.link().add(msg).execute().await.map_err(req(format!(
        "create veth {} with peer {} in {}",
        spec.host_name,
        spec.pod_name,
        spec.netns.display()
    )))?;
    drop(netns);
    link(handle, spec.host_name).await
}

/// Deletes a link by name; succeeds if it is already gone.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<(), NetlinkError> {
    let Some(l) = find_link(handle, name).await? else {
        return Ok(());
    };
    match handle.link().del(l.index).execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = req(format!("delete link {name}"))(e);
            if is_not_found(&e) { Ok(()) } else { Err(e) }
        }
    }
}

fn host_route(ip: Ipv4Addr, ifindex: u32) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .output_interface(ifindex)
        .scope(RouteScope::Link)
        .build()
}

/// `ip route replace <ip>/32 dev <ifindex> scope link`: how the node reaches a pod (F4).
pub async fn add_host_route(
    handle: &Handle,
    ip: Ipv4Addr,
    ifindex: u32,
) -> Result<(), NetlinkError> {
    handle
        .route()
        .add(host_route(ip, ifindex))
        .replace()
        .execute()
        .await
        .map_err(req(format!("add route {ip}/32 dev index {ifindex}")))
}

/// Adds `mac` to the unicast filter of `ifindex` (`bridge fdb add <mac> dev
/// <uplink> self permanent`), so the NIC accepts frames for a pod without
/// promiscuous mode (F9). Replaces an existing entry.
pub async fn add_uc_filter(
    handle: &Handle,
    ifindex: u32,
    mac: [u8; 6],
) -> Result<(), NetlinkError> {
    handle
        .neighbours()
        .add_bridge(ifindex, &mac)
        .flags(NeighbourFlags::Own)
        .replace()
        .execute()
        .await
        .map_err(req(format!(
            "add {} to the unicast filter of index {ifindex}",
            fmt_mac(&mac)
        )))
}

/// Removes `mac` from the unicast filter of `ifindex`; succeeds if absent.
pub async fn del_uc_filter(
    handle: &Handle,
    ifindex: u32,
    mac: [u8; 6],
) -> Result<(), NetlinkError> {
    let mut add = handle
        .neighbours()
        .add_bridge(ifindex, &mac)
        .flags(NeighbourFlags::Own);
    let msg = add.message_mut().clone();
    match handle.neighbours().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = req(format!(
                "remove {} from the unicast filter of index {ifindex}",
                fmt_mac(&mac)
            ))(e);
            if is_not_found(&e) { Ok(()) } else { Err(e) }
        }
    }
}

/// A route to write in the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRoute {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Destination prefix length.
    pub prefix: u8,
    /// Next hop; `None` for on-link routes.
    pub gw: Option<Ipv4Addr>,
    /// Preferred source address.
    pub src: Option<Ipv4Addr>,
}

/// The pod side of an attachment.
#[derive(Clone, Debug)]
pub struct PodConfig {
    /// Interface name in the pod.
    pub ifname: String,
    /// Address.
    pub address: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Routes, in order (on-link routes before the routes that use them).
    pub routes: Vec<PodRoute>,
}

fn pod_route(r: &PodRoute, ifindex: u32) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst, r.prefix)
        .output_interface(ifindex);
    b = match r.gw {
        Some(gw) => b.gateway(gw),
        None => b.scope(RouteScope::Link),
    };
    if let Some(src) = r.src {
        b = b.pref_source(src);
    }
    b.build()
}

/// Writes the address and routes in the pod's namespace and brings the
/// interface (and `lo`) up. Idempotent: existing entries are replaced.
pub async fn configure_pod(netns: &Path, cfg: PodConfig) -> Result<(), NetlinkError> {
    in_netns(netns, move |h| async move {
        if let Some(lo) = find_link(&h, "lo").await? {
            h.link()
                .set(LinkUnspec::new_with_index(lo.index).up().build())
                .execute()
                .await
                .map_err(req("set lo up"))?;
        }
        let l = link(&h, &cfg.ifname).await?;
        h.address()
            .add(l.index, cfg.address.into(), cfg.prefix)
            .replace()
            .execute()
            .await
            .map_err(req(format!(
                "add {}/{} to {}",
                cfg.address, cfg.prefix, cfg.ifname
            )))?;
        h.link()
            .set(LinkUnspec::new_with_index(l.index).up().build())
            .execute()
            .await
            .map_err(req(format!("set {} up", cfg.ifname)))?;
        for r in &cfg.routes {
            h.route()
                .add(pod_route(r, l.index))
                .replace()
                .execute()
                .await
                .map_err(req(format!(
                    "add route {}/{} via {:?} dev {}",
                    r.dst, r.prefix, r.gw, cfg.ifname
                )))?;
        }
        Ok(())
    })
    .await
}

/// What the pod's interface looks like now (for CHECK).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodState {
    /// The interface's MAC, if the interface exists.
    pub mac: Option<[u8; 6]>,
    /// IPv4 addresses with prefix.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// IPv4 routes through the interface (main table).
    pub routes: Vec<PodRoute>,
}

/// Reads the pod interface's MAC, addresses and routes.
pub async fn read_pod(netns: &Path, ifname: &str) -> Result<PodState, NetlinkError> {
    let ifname = ifname.to_string();
    in_netns(netns, move |h| async move {
        let Some(l) = find_link(&h, &ifname).await? else {
            return Ok(PodState::default());
        };
        let mut st = PodState {
            mac: Some(l.mac),
            ..PodState::default()
        };
        st.addresses = ipv4_addresses(&h, l.index).await?;
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut routes = h.route().get(filter).execute();
        while let Some(r) = routes.try_next().await.map_err(req("list routes"))? {
            if r.header.table != 254 {
                continue;
            }
            let mut pr = PodRoute {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: r.header.destination_prefix_length,
                gw: None,
                src: None,
            };
            let mut oif = None;
            for attr in &r.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => pr.dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => pr.gw = Some(*g),
                    RouteAttribute::PrefSource(RouteAddress::Inet(s)) => pr.src = Some(*s),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if oif == Some(l.index) {
                st.routes.push(pr);
            }
        }
        Ok(st)
    })
    .await
}

/// The IPv4 address (with its prefix length) an address message carries.
pub fn ipv4_of(msg: &AddressMessage) -> Option<(Ipv4Addr, u8)> {
    msg.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Address(std::net::IpAddr::V4(ip)) => Some((*ip, msg.header.prefix_len)),
        _ => None,
    })
}

/// Whether a link's operational state lets it carry traffic: `up`, or
/// `unknown` (drivers without carrier reporting, e.g. dummy links, which
/// `ip link` shows as UNKNOWN and which forward all the same).
pub fn oper_up(msg: &LinkMessage) -> bool {
    msg.attributes.iter().any(|attr| {
        matches!(
            attr,
            LinkAttribute::OperState(OperState::Up | OperState::Unknown)
        )
    })
}

/// The IPv4 addresses (with prefix lengths) of interface `index`.
pub async fn ipv4_addresses(
    handle: &Handle,
    index: u32,
) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
    let mut out = Vec::new();
    let mut addrs = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(a) = addrs
        .try_next()
        .await
        .map_err(req(format!("list the addresses of index {index}")))?
    {
        // The kernel may ignore the filter on old versions: check the index.
        if a.header.index == index
            && let Some(a) = ipv4_of(&a)
        {
            out.push(a);
        }
    }
    out.dedup();
    Ok(out)
}

/// Removes `addr/prefix` from interface `index`; succeeds if absent.
pub async fn del_ipv4_address(
    handle: &Handle,
    index: u32,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetlinkError> {
    let mut addrs = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(a) = addrs.try_next().await.map_err(req("list addresses"))? {
        if a.header.index == index && ipv4_of(&a) == Some((addr, prefix)) {
            handle
                .address()
                .del(a)
                .execute()
                .await
                .map_err(req(format!("remove {addr}/{prefix}")))?;
        }
    }
    Ok(())
}

/// The operational state of link `index` ([`oper_up`]).
pub async fn link_oper_up(handle: &Handle, index: u32) -> Result<bool, NetlinkError> {
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(oper_up(&msg)),
        Ok(None) => Ok(false),
        Err(e) => Err(req(format!("get link index {index}"))(e)),
    }
}

/// Sets link `index` up.
pub async fn set_up(handle: &Handle, index: u32) -> Result<(), NetlinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(req(format!("set index {index} up")))
}

/// Puts link `index` in promiscuous mode.
pub async fn set_promiscuous(handle: &Handle, index: u32) -> Result<(), NetlinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).promiscuous(true).build())
        .execute()
        .await
        .map_err(req(format!("set index {index} promiscuous")))
}

/// Whether link `index` has `IFF_ALLMULTI` as userspace sees it. The kernel
/// reports the bit userspace set (`dev->gflags`), not its internal
/// all-multicast counter, which bridges and multicast routing raise.
pub async fn allmulti(handle: &Handle, index: u32) -> Result<bool, NetlinkError> {
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.flags.contains(LinkFlags::Allmulti)),
        Ok(None) => Err(NetlinkError::NoSuchLink {
            name: format!("index {index}"),
        }),
        Err(e) => Err(req(format!("get link index {index}"))(e)),
    }
}

/// `ip link set dev <index> allmulticast on|off`. From userspace this is a
/// switch, not a counter: the kernel adds one to the device's all-multicast
/// count when the bit goes on and takes that one back when it goes off,
/// whoever set it (so turning it off undoes an administrator's `on` too).
pub async fn set_allmulti(handle: &Handle, index: u32, on: bool) -> Result<(), NetlinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).allmulticast(on).build())
        .execute()
        .await
        .map_err(req(format!(
            "set index {index} allmulticast {}",
            if on { "on" } else { "off" }
        )))
}

/// `ip link set dev <index> address <mac>`.
pub async fn set_mac(handle: &Handle, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
        )
        .execute()
        .await
        .map_err(req(format!("set index {index} address {}", fmt_mac(&mac))))
}

/// `ip route del <ip>/32 dev <ifindex> scope link`; succeeds if absent.
pub async fn del_host_route(
    handle: &Handle,
    ip: Ipv4Addr,
    ifindex: u32,
) -> Result<(), NetlinkError> {
    match handle.route().del(host_route(ip, ifindex)).execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = req(format!("remove route {ip}/32 dev index {ifindex}"))(e);
            if is_not_found(&e) { Ok(()) } else { Err(e) }
        }
    }
}

/// Brings `ifname` up inside the pod's namespace (`ipam: none`: the pod
/// configures it itself).
pub async fn pod_link_up(netns: &Path, ifname: &str) -> Result<(), NetlinkError> {
    let ifname = ifname.to_string();
    in_netns(netns, move |h| async move {
        let l = link(&h, &ifname).await?;
        set_up(&h, l.index).await
    })
    .await
}

/// Removes `addr/prefix` from `ifname` inside the pod's namespace.
pub async fn remove_pod_address(
    netns: &Path,
    ifname: &str,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetlinkError> {
    let ifname = ifname.to_string();
    in_netns(netns, move |h| async move {
        let l = link(&h, &ifname).await?;
        del_ipv4_address(&h, l.index, addr, prefix).await
    })
    .await
}

/// The notifications of a [`subscribe_uplink`] connection.
pub type Notifications = futures::channel::mpsc::UnboundedReceiver<(
    rtnetlink::packet_core::NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

/// Opens a connection subscribed to IPv4 address and link changes
/// (`RTNLGRP_IPV4_IFADDR`, `RTNLGRP_LINK`) and spawns its driver; the
/// handle serves the dumps that seed what the notifications then update.
pub fn subscribe_uplink() -> Result<(Handle, Notifications), NetlinkError> {
    let (conn, handle, messages) = rtnetlink::new_multicast_connection(&[
        rtnetlink::MulticastGroup::Ipv4Ifaddr,
        // The node's IPv6 addresses: the neighbour responder answers for them.
        rtnetlink::MulticastGroup::Ipv6Ifaddr,
        rtnetlink::MulticastGroup::Link,
    ])
    .map_err(NetlinkError::Connect)?;
    tokio::spawn(conn);
    Ok((handle, messages))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    crate::dhcp::Mac(*mac).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_format() {
        let mac = [0x02, 0xab, 0, 1, 0xfe, 0xff];
        assert_eq!(fmt_mac(&mac), "02:ab:00:01:fe:ff");
    }
}
