//! The IPv6 side of the rtnetlink work (issue 16): a pod's IPv6 address and
//! routes, the node's route to it, and the node's own IPv6 addresses (for
//! the neighbour-advertisement responder).
//!
//! The pod's kernel is told to leave addressing to the agent (`accept_ra`
//! and `autoconf` off on the pod's interface) before its link comes up, so
//! it neither adds SLAAC addresses of its own nor routes from RAs the agent
//! did not put in the CNI result; and to use the address at once while its
//! duplicate address detection runs (`optimistic_dad`, `use_optimistic`;
//! RFC 4429).

use std::{
    net::{IpAddr, Ipv6Addr},
    path::Path,
};

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkUnspec, RouteMessageBuilder,
    packet_route::{
        address::{AddressAttribute, AddressFlags},
        route::{RouteMessage, RouteScope},
    },
};

use crate::netlink::{NetlinkError, in_netns, is_not_found, link};

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

/// An IPv6 route to write in the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod6Route {
    /// Destination network.
    pub dst: Ipv6Addr,
    /// Destination prefix length.
    pub prefix: u8,
    /// Next hop (the router's link-local address); `None` for on-link routes.
    pub gw: Option<Ipv6Addr>,
    /// Preferred source address.
    pub src: Option<Ipv6Addr>,
}

/// The IPv6 side of a pod's interface.
#[derive(Clone, Debug)]
pub struct Pod6Config {
    /// Interface name in the pod.
    pub ifname: String,
    /// Address.
    pub address: Ipv6Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Routes, on-link ones first.
    pub routes: Vec<Pod6Route>,
}

/// What the pod's kernel says of an address's duplicate address detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dad {
    /// Still running (tentative, usable if optimistic).
    Running,
    /// Done: the address is the pod's.
    Done,
    /// Another node answered for it.
    Failed,
    /// The address is not on the interface.
    Absent,
}

/// Sysctls of the pod's interface, written before the link comes up.
/// `addr_gen_mode` 1: the kernel makes no link-local address; the agent
/// writes the EUI-64 one itself (below).
const POD_SYSCTLS: [(&str, &str); 5] = [
    ("accept_ra", "0"),
    ("autoconf", "0"),
    ("optimistic_dad", "1"),
    ("use_optimistic", "1"),
    ("addr_gen_mode", "1"),
];

fn pod_route(r: &Pod6Route, ifindex: u32) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(r.dst, r.prefix)
        .output_interface(ifindex);
    b = match r.gw {
        Some(gw) => b.gateway(gw),
        None => b.scope(RouteScope::Universe),
    };
    if let Some(src) = r.src {
        b = b.pref_source(src);
    }
    b.build()
}

/// Writes the interface's IPv6 sysctls, its address (optimistic) and
/// routes in the pod's namespace and brings it up. Idempotent.
pub async fn configure_pod6(netns: &Path, cfg: Pod6Config) -> Result<(), NetlinkError> {
    let ns = netns.to_path_buf();
    in_netns(netns, move |h| async move {
        // This thread is in the pod's namespace: /proc/sys/net is its.
        for (name, value) in POD_SYSCTLS {
            let path = format!("/proc/sys/net/ipv6/conf/{}/{name}", cfg.ifname);
            std::fs::write(&path, value).map_err(|source| NetlinkError::Netns {
                path: ns.join(format!("(writing {path})")),
                source,
            })?;
        }
        let l = link(&h, &cfg.ifname).await?;
        // The EUI-64 link-local address without duplicate address
        // detection: Linux sends no neighbour solicitation while its only
        // link-local address is tentative or optimistic, so a pod would
        // wait a second before it could reach its router. It is the MAC's
        // (RFC 4291), and the agent gives each MAC to one attachment: a
        // duplicate would be a duplicate MAC, broken on the LAN anyway.
        let ll = crate::ipv6::link_local_from_mac(l.mac);
        let mut add_ll = h.address().add(l.index, IpAddr::V6(ll), 64).replace();
        add_ll
            .message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        add_ll
            .execute()
            .await
            .map_err(req(format!("add {ll}/64 to {}", cfg.ifname)))?;
        let mut add = h
            .address()
            .add(l.index, IpAddr::V6(cfg.address), cfg.prefix)
            .replace();
        add.message_mut()
            .attributes
            // Without its prefix route: the on-link routes are written
            // below with the pod's address as their source.
            .push(AddressAttribute::Flags(
                AddressFlags::Optimistic | AddressFlags::Noprefixroute,
            ));
        add.execute().await.map_err(req(format!(
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

/// Turns duplicate address detection off on the host veth (in the agent's
/// namespace), before the pod's end comes up and the kernel starts it: the
/// host veth's link-local address is the source of the node's solicitations
/// for the pod, and its MAC is the agent's, unique on the node, never seen
/// on the LAN.
pub fn host_veth_nodad(host_veth: &str) -> Result<(), NetlinkError> {
    let path = format!("/proc/sys/net/ipv6/conf/{host_veth}/accept_dad");
    std::fs::write(&path, "0").map_err(|source| NetlinkError::Netns {
        path: format!("(writing {path})").into(),
        source,
    })
}

/// The state of `addr`'s duplicate address detection on `ifname` in the pod.
pub async fn pod_dad(netns: &Path, ifname: &str, addr: Ipv6Addr) -> Result<Dad, NetlinkError> {
    let ifname = ifname.to_string();
    in_netns(netns, move |h| async move {
        let Some(l) = crate::netlink::find_link(&h, &ifname).await? else {
            return Ok(Dad::Absent);
        };
        for (a, flags) in ipv6_addresses(&h, l.index).await? {
            if a == addr {
                return Ok(if flags.contains(AddressFlags::Dadfailed) {
                    Dad::Failed
                } else if flags.contains(AddressFlags::Tentative) {
                    Dad::Running
                } else {
                    Dad::Done
                });
            }
        }
        Ok(Dad::Absent)
    })
    .await
}

/// Removes `addr/prefix` from `ifname` in the pod; succeeds if absent.
pub async fn remove_pod_address6(
    netns: &Path,
    ifname: &str,
    addr: Ipv6Addr,
    prefix: u8,
) -> Result<(), NetlinkError> {
    let ifname = ifname.to_string();
    in_netns(netns, move |h| async move {
        let l = link(&h, &ifname).await?;
        let mut msgs = h.address().get().set_link_index_filter(l.index).execute();
        while let Some(m) = msgs
            .try_next()
            .await
            .map_err(req(format!("list the addresses of {ifname}")))?
        {
            let matches = m.header.index == l.index
                && m.header.prefix_len == prefix
                && m.attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(IpAddr::V6(x)) if *x == addr));
            if matches {
                match h.address().del(m).execute().await {
                    Ok(()) => {}
                    Err(e) => {
                        let e = req(format!("remove {addr}/{prefix} from {ifname}"))(e);
                        if !is_not_found(&e) {
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(())
    })
    .await
}

/// The IPv6 addresses of interface `index` with their flags (the 32-bit
/// `IFA_FLAGS` attribute when present, else the header's 8 bits).
pub async fn ipv6_addresses(
    handle: &Handle,
    index: u32,
) -> Result<Vec<(Ipv6Addr, AddressFlags)>, NetlinkError> {
    let mut out = Vec::new();
    let mut msgs = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(m) = msgs
        .try_next()
        .await
        .map_err(req(format!("list the addresses of index {index}")))?
    {
        if m.header.index != index {
            continue;
        }
        let Some(addr) = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V6(x)) => Some(*x),
            _ => None,
        }) else {
            continue;
        };
        let flags = m
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Flags(f) => Some(*f),
                _ => None,
            })
            .unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(m.header.flags.bits())));
        out.push((addr, flags));
    }
    Ok(out)
}

/// The node's global IPv6 addresses on interface `index` that are usable
/// (not tentative, not failed): what the responder answers for.
pub async fn node_addresses6(handle: &Handle, index: u32) -> Result<Vec<Ipv6Addr>, NetlinkError> {
    Ok(ipv6_addresses(handle, index)
        .await?
        .into_iter()
        .filter(|(a, f)| {
            !crate::ipv6::is_link_local(*a)
                && !a.is_loopback()
                && !f.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed)
        })
        .map(|(a, _)| a)
        .collect())
}

/// `ip -6 route replace <ip>/128 dev <ifindex>`: how the node reaches a pod.
pub async fn add_host_route6(
    handle: &Handle,
    ip: Ipv6Addr,
    ifindex: u32,
) -> Result<(), NetlinkError> {
    handle
        .route()
        .add(host_route6(ip, ifindex))
        .replace()
        .execute()
        .await
        .map_err(req(format!("add route {ip}/128 dev index {ifindex}")))
}

/// Removes the node's route to a pod; succeeds if absent.
pub async fn del_host_route6(
    handle: &Handle,
    ip: Ipv6Addr,
    ifindex: u32,
) -> Result<(), NetlinkError> {
    match handle.route().del(host_route6(ip, ifindex)).execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = req(format!("remove route {ip}/128 dev index {ifindex}"))(e);
            if is_not_found(&e) { Ok(()) } else { Err(e) }
        }
    }
}

fn host_route6(ip: Ipv6Addr, ifindex: u32) -> RouteMessage {
    RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(ip, 128)
        .output_interface(ifindex)
        .scope(RouteScope::Universe)
        .build()
}
