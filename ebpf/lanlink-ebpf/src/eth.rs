//! Ethernet: bounds-checked packet access and the L2 forwarding decisions of
//! `from_pod` and `from_lan`.

use aya_ebpf::{
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use lanlink_common::{EndpointByIf, MacKey, Verdict, endpoint_flags};

use crate::{Action, arp, dhcp, flood, ipv4, maps};

/// Ethernet header length.
pub(crate) const ETH_LEN: usize = 14;
/// EtherType IPv4.
pub(crate) const ETH_P_IP: u16 = 0x0800;
/// EtherType ARP.
pub(crate) const ETH_P_ARP: u16 = 0x0806;
/// EtherTypes of VLAN tags: 802.1Q, 802.1ad (QinQ) and the old QinQ 0x9100.
const ETH_P_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// `skb->pkt_type` value for frames addressed to this host.
pub(crate) const PACKET_HOST: u32 = 0;

/// An Ethernet header as on the wire.
#[repr(C)]
pub(crate) struct EthHdr {
    pub(crate) dst: [u8; 6],
    pub(crate) src: [u8; 6],
    pub(crate) proto: [u8; 2],
}

/// Bytes of headers the programs may read: Ethernet, IPv4 with the longest
/// options, and the first bytes of L4.
const HEADERS_MAX: u32 = 14 + 60 + 8;

/// Makes sure the headers are in the skb's linear area. Headers of a
/// non-linear skb (e.g. GRO-merged) may sit in fragments; pulling them once
/// at entry keeps every later pointer valid (a pull invalidates pointers).
#[inline(always)]
pub(crate) fn pull_headers(ctx: &TcContext) {
    let want = if ctx.len() < HEADERS_MAX {
        ctx.len()
    } else {
        HEADERS_MAX
    };
    if ctx.data() + want as usize > ctx.data_end() {
        // On failure the bounds checks below drop the frame as malformed.
        let _ = ctx.pull_data(want);
    }
}

/// Returns a pointer to a `T` at `offset` in the packet, or `DropMalformed`
/// if the frame is shorter: the one bounds check every header access goes
/// through.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Result<*mut T, Verdict> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(Verdict::DropMalformed);
    }
    Ok((start + offset) as *mut T)
}

/// Whether `mac` is a group (broadcast or multicast) address.
#[inline(always)]
pub(crate) fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 1
}

/// Frames a pod sends, at the ingress of its host veth.
#[inline(always)]
pub(crate) fn from_pod(ctx: &TcContext) -> Result<Action, Verdict> {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: hash values are only read; the agent replaces whole entries.
    let Some(ep) = (unsafe { maps::EP_BY_IF.get(ifindex) }) else {
        // A veth the agent has not registered (yet): leave it to the stack.
        return Ok(Action::pass(Verdict::UnknownIf));
    };
    let ep: EndpointByIf = *ep;

    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    let (dst, src, proto) = unsafe { ((*eth).dst, (*eth).src, u16::from_be_bytes((*eth).proto)) };
    if src != ep.mac {
        return Err(Verdict::DropSpoofMac);
    }
    // A pod is an untagged access port: a VLAN tag would carry its frames
    // onto another VLAN past every check below (the kernel has already
    // moved an outer tag into the skb's metadata; an inner one is in-line).
    // SAFETY: reading the context's own metadata.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 || ETH_P_VLAN.contains(&proto) {
        return Err(Verdict::DropVlan);
    }

    // Anti-spoofing and the host-bound cases (ARP responder, flows that must
    // return through the host stack) come before any forwarding decision, and
    // ARP and DHCP are matched before anything else looks at addresses.
    match proto {
        ETH_P_ARP => {
            if let Some(action) = arp::from_pod(ctx, &ep)? {
                return Ok(action);
            }
        }
        ETH_P_IP => {
            if let Some(action) = ipv4::from_pod(ctx, &ep)? {
                return Ok(action);
            }
        }
        _ => {
            if ep.flags & endpoint_flags::EXPIRED != 0 {
                return Err(Verdict::DropExpired);
            }
        }
    }

    if is_group(&dst) {
        flood::to_pods(ctx, ifindex);
        return redirect_uplink(Verdict::Flood);
    }
    if dst == ep.host_mac {
        // Gateway 169.254.1.1, node IPs, service CIDRs: the node's stack.
        return Ok(Action::pass(Verdict::PassToStack));
    }
    // SAFETY: read-only use of the value.
    if let Some(peer) = unsafe { maps::EP_BY_MAC.get(MacKey::new(dst)) } {
        return redirect_peer(ctx, peer.ifindex);
    }
    redirect_uplink(Verdict::RedirectUplink)
}

/// Frames from the LAN, at the ingress of the uplink.
#[inline(always)]
pub(crate) fn from_lan(ctx: &TcContext) -> Result<Action, Verdict> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    let (dst, proto) = unsafe { ((*eth).dst, u16::from_be_bytes((*eth).proto)) };
    if proto == ETH_P_IP {
        // Before delivery, so the pod's first frame from its new address
        // already passes the source check.
        dhcp::learn_from_ack(ctx);
    }
    if is_group(&dst) {
        // Every local pod gets a copy; the node's stack sees it too.
        flood::to_pods(ctx, 0);
        return Ok(Action::pass(Verdict::Flood));
    }
    // SAFETY: read-only use of the value.
    if let Some(ep) = unsafe { maps::EP_BY_MAC.get(MacKey::new(dst)) } {
        return redirect_peer(ctx, ep.ifindex);
    }
    Ok(Action::pass(Verdict::PassToStack))
}

/// Sends the frame out of the uplink.
#[inline(always)]
fn redirect_uplink(verdict: Verdict) -> Result<Action, Verdict> {
    let uplink = maps::UPLINK_IFINDEX.load();
    // SAFETY: plain helper call.
    let ret = unsafe { bpf_redirect(uplink, 0) };
    if ret as u32 != crate::TC_ACT_REDIRECT_U32 {
        return Err(Verdict::DropRedirectFailed);
    }
    Ok(Action::redirect(verdict))
}

/// Delivers the frame straight into the pod behind host veth `ifindex`
/// (ingress of its peer, skipping the host veth's egress and the backlog).
#[inline(always)]
fn redirect_peer(ctx: &TcContext, ifindex: u32) -> Result<Action, Verdict> {
    // The frame carries another host's MAC, so it arrived as PACKET_OTHERHOST;
    // before 6.15 redirect_peer keeps that type and the pod's IP stack drops
    // it. Unicast to the pod's own MAC is PACKET_HOST from the pod's view.
    if ctx.change_type(PACKET_HOST).is_err() {
        return Err(Verdict::DropRedirectFailed);
    }
    // SAFETY: plain helper call.
    let ret = unsafe { bpf_redirect_peer(ifindex, 0) };
    if ret as u32 != crate::TC_ACT_REDIRECT_U32 {
        return Err(Verdict::DropRedirectFailed);
    }
    Ok(Action::redirect(Verdict::RedirectPeer))
}
