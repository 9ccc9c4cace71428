//! IPv6 on a pod's port (`from_pod`): source guard, RA guard, DHCPv6-Shield
//! and neighbour-advertisement checks; and, from the LAN (`from_lan`), the
//! defence of an address that withdraws a pod's claim.
//!
//! Which addresses a pod owns: its EUI-64 link-local address (from its MAC,
//! always), and every address it claimed first with the neighbour
//! solicitation of its duplicate address detection (source `::`), as in
//! FCFS SAVI (RFC 6620), and the address the agent gave it (SLAAC or
//! DHCPv6, written into `V6_OWNERS` at ADD). A claim of an address another
//! endpoint on the node holds, or of one of the node's own addresses
//! (`HOST_ADDRS6`), is refused; claims live in `V6_OWNERS` until the agent removes the
//! endpoint, at most `MAX_V6_CLAIMS` per endpoint.
//!
//! The header chain is followed through hop-by-hop, routing, destination
//! options, AH and fragment headers, so an RA cannot hide behind one (RFC
//! 7113); a first fragment without its upper-layer header is dropped. Reads
//! go through `bpf_skb_load_bytes`: offsets are only checked at run time.

use aya_ebpf::{bindings::BPF_NOEXIST, programs::TcContext};
use lanlink_common::{DropReason, EndpointByIf, Ipv6Key, MAX_V6_CLAIMS, Verdict, endpoint_flags};

use crate::{
    eth::ETH_LEN,
    ipv4::IPPROTO_UDP,
    maps::{EP_GUARD, HOST_ADDRS6, V6_OWNERS},
    stats::count,
};

pub(crate) const IPPROTO_ICMPV6: u8 = 58;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;
/// Upper layer of a non-first fragment: not known from this packet.
const UPPER_UNKNOWN: u8 = 255;
/// Extension headers followed before giving up (`Ip6Chain`).
const MAX_EXT_HEADERS: u32 = 6;

const MLD_QUERY: u8 = 130;
const MLD_REPORT: u8 = 131;
const MLD_DONE: u8 = 132;
const ROUTER_ADVERT: u8 = 134;
const NEIGH_SOLICIT: u8 = 135;
const NEIGH_ADVERT: u8 = 136;
const REDIRECT: u8 = 137;
const MLD2_REPORT: u8 = 143;
const DHCP6_SERVER_PORT: u16 = 547;

/// The parts of an IPv6 packet the checks decide on.
pub(crate) struct Ipv6 {
    pub(crate) saddr: [u8; 16],
    /// The upper-layer protocol, `UPPER_UNKNOWN` for a non-first fragment.
    pub(crate) proto: u8,
    /// Offset of the upper-layer header.
    pub(crate) l4: usize,
    /// ICMPv6 type, or 0.
    pub(crate) icmp_type: u8,
    /// UDP source port, or 0.
    pub(crate) sport: u16,
}

/// Reads the IPv6 header and follows its extension headers to the upper
/// layer: `Malformed` if truncated or not IPv6, `Ip6Chain` if the chain is
/// too long or a first fragment lacks its upper-layer header.
#[inline(always)]
pub(crate) fn read(ctx: &TcContext) -> Result<Ipv6, DropReason> {
    let head: [u8; 8] = ctx.load(ETH_LEN).map_err(|_| DropReason::Malformed)?;
    let saddr: [u8; 16] = ctx.load(ETH_LEN + 8).map_err(|_| DropReason::Malformed)?;
    if head[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let mut ip = Ipv6 {
        saddr,
        proto: head[6],
        l4: ETH_LEN + 40,
        icmp_type: 0,
        sport: 0,
    };
    let mut i = 0;
    while i <= MAX_EXT_HEADERS {
        match ip.proto {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                // Length in 8-byte units, not counting the first 8.
                let ext: [u8; 2] = ctx.load(ip.l4).map_err(|_| DropReason::Ip6Chain)?;
                ip.proto = ext[0];
                ip.l4 += (usize::from(ext[1]) + 1) * 8;
            }
            NEXTHDR_AH => {
                // Length in 4-byte units, minus 2.
                let ext: [u8; 2] = ctx.load(ip.l4).map_err(|_| DropReason::Ip6Chain)?;
                ip.proto = ext[0];
                ip.l4 += (usize::from(ext[1]) + 2) * 4;
            }
            NEXTHDR_FRAGMENT => {
                let frag: [u8; 4] = ctx.load(ip.l4).map_err(|_| DropReason::Ip6Chain)?;
                if u16::from_be_bytes([frag[2], frag[3]]) & 0xfff8 != 0 {
                    // A non-first fragment: its upper layer was checked in
                    // the first one (which reassembly needs).
                    ip.proto = UPPER_UNKNOWN;
                    return Ok(ip);
                }
                ip.proto = frag[0];
                ip.l4 += 8;
            }
            _ => break,
        }
        i += 1;
    }
    match ip.proto {
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AH | NEXTHDR_FRAGMENT => {
            return Err(DropReason::Ip6Chain);
        }
        IPPROTO_ICMPV6 => {
            ip.icmp_type = ctx.load(ip.l4).map_err(|_| DropReason::Ip6Chain)?;
        }
        IPPROTO_UDP => {
            let port: [u8; 2] = ctx.load(ip.l4).map_err(|_| DropReason::Ip6Chain)?;
            ip.sport = u16::from_be_bytes(port);
        }
        _ => {}
    }
    Ok(ip)
}

/// Checks an IPv6 packet from the endpoint `ep` (host veth `ifindex`).
#[inline(always)]
pub(crate) fn check(
    ctx: &TcContext,
    ip: &Ipv6,
    ep: &EndpointByIf,
    ifindex: u32,
) -> Result<(), DropReason> {
    if ip.proto == IPPROTO_ICMPV6 {
        match ip.icmp_type {
            ROUTER_ADVERT | REDIRECT if ep.flags & endpoint_flags::ROUTER_ADVERT == 0 => {
                return Err(DropReason::RouterAdvert);
            }
            NEIGH_ADVERT => {
                let target = target(ctx, ip)?;
                if !owns(&target, ep, ifindex) {
                    return Err(DropReason::NdSpoof);
                }
            }
            _ => {}
        }
    }
    if ip.proto == IPPROTO_UDP
        && ip.sport == DHCP6_SERVER_PORT
        && ep.flags & endpoint_flags::DHCP_SERVER == 0
    {
        return Err(DropReason::Dhcp6Server);
    }
    if ip.saddr == [0; 16] {
        // The unspecified source: only duplicate address detection and MLD
        // before the pod has an address.
        if ip.proto != IPPROTO_ICMPV6 {
            return Err(DropReason::SpoofIp6);
        }
        return match ip.icmp_type {
            NEIGH_SOLICIT => claim(&target(ctx, ip)?, ep, ifindex, ctx.len()),
            MLD_QUERY | MLD_REPORT | MLD_DONE | MLD2_REPORT => Ok(()),
            _ => Err(DropReason::SpoofIp6),
        };
    }
    if !owns(&ip.saddr, ep, ifindex) {
        return Err(DropReason::SpoofIp6);
    }
    Ok(())
}

/// The target address of a neighbour solicitation or advertisement.
#[inline(always)]
fn target(ctx: &TcContext, ip: &Ipv6) -> Result<[u8; 16], DropReason> {
    ctx.load(ip.l4 + 8).map_err(|_| DropReason::Malformed)
}

/// The EUI-64 link-local address of `mac` (RFC 4291 appendix A).
#[inline(always)]
fn link_local(mac: &[u8; 6]) -> [u8; 16] {
    [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 2,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]
}

/// Whether the endpoint owns `addr`.
#[inline(always)]
fn owns(addr: &[u8; 16], ep: &EndpointByIf, ifindex: u32) -> bool {
    if *addr == link_local(&ep.mac) {
        return true;
    }
    // SAFETY: read-only use of the value.
    matches!(unsafe { V6_OWNERS.get(Ipv6Key { addr: *addr }) }, Some(&o) if o == ifindex)
}

/// Records the endpoint's claim of `addr` (its DAD solicitation): refused
/// when another endpoint holds it, or when the endpoint holds its maximum.
#[inline(always)]
fn claim(addr: &[u8; 16], ep: &EndpointByIf, ifindex: u32, len: u32) -> Result<(), DropReason> {
    if *addr == link_local(&ep.mac) {
        return Ok(());
    }
    let key = Ipv6Key { addr: *addr };
    // The node's own addresses are never a pod's: the neighbour responder
    // answers for them, and a claim would let the pod send from them.
    // SAFETY: only the presence is read.
    if unsafe { HOST_ADDRS6.get(key) }.is_some() {
        return Err(DropReason::SpoofIp6);
    }
    // SAFETY: read-only use of the value.
    match unsafe { V6_OWNERS.get(key) } {
        Some(&o) if o == ifindex => return Ok(()),
        Some(_) => return Err(DropReason::SpoofIp6),
        None => {}
    }
    let guard = EP_GUARD.get_ptr_mut(ifindex);
    if let Some(g) = guard {
        // SAFETY: a valid map value pointer.
        if unsafe { (*g).v6_claims } >= MAX_V6_CLAIMS {
            return Err(DropReason::Ip6Claims);
        }
    }
    // NOEXIST: of two endpoints claiming at once, one wins.
    if V6_OWNERS
        .insert(key, ifindex, u64::from(BPF_NOEXIST))
        .is_err()
    {
        return Err(DropReason::SpoofIp6);
    }
    if let Some(g) = guard {
        // SAFETY: as above.
        unsafe { (*g).v6_claims += 1 };
    }
    count(Verdict::Ip6Claimed.slot(), len);
    Ok(())
}

/// From the LAN: a neighbour advertisement for an address a pod claimed
/// means a LAN host defends it (the pod's duplicate address detection
/// fails), so the claim is withdrawn and the pod cannot go on to use the
/// LAN host's address. Never changes the frame's fate.
#[inline(always)]
pub(crate) fn forget_defended(ctx: &TcContext) {
    // Every IPv6 frame from the LAN passes here: one byte decides for all
    // but ICMPv6 without extension headers (which is how hosts send
    // neighbour advertisements), before any header walk.
    if !matches!(ctx.load::<u8>(ETH_LEN + 6), Ok(IPPROTO_ICMPV6)) {
        return;
    }
    let Ok(ip) = read(ctx) else { return };
    if ip.proto != IPPROTO_ICMPV6 || ip.icmp_type != NEIGH_ADVERT {
        return;
    }
    let Ok(addr) = target(ctx, &ip) else { return };
    let key = Ipv6Key { addr };
    // SAFETY: read-only use of the value.
    let Some(&owner) = (unsafe { V6_OWNERS.get(key) }) else {
        return;
    };
    if V6_OWNERS.remove(key).is_ok()
        && let Some(g) = EP_GUARD.get_ptr_mut(owner)
    {
        // SAFETY: a valid map value pointer.
        unsafe { (*g).v6_claims = (*g).v6_claims.saturating_sub(1) };
    }
}
