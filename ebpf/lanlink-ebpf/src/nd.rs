//! IPv6 neighbour discovery answered in place for the node's own addresses:
//! the IPv6 twin of the ARP responder (`arp`).
//!
//! A pod's neighbour solicitation for one of the node's IPv6 addresses
//! never reaches the node's stack: it is a group frame (or unicast to a
//! MAC the pod resolved before), flooded to the other pods and out of the
//! uplink, and the node does not hear its own uplink's egress. So, for the
//! addresses in `HOST_ADDRS6`, `from_pod` turns the solicitation into the
//! advertisement the node would send, with the host veth's MAC, and sends it
//! back into the pod; the pod's traffic to that address then goes to the
//! host veth's MAC, which `from_pod` passes to the node's stack.
//!
//! Answered (RFC 4861 7.1.1 and 7.2.3): ICMPv6 type 135 code 0 right after
//! the IPv6 header (a solicitation behind extension headers is left to the
//! usual path), hop limit 255 (anything less was forwarded: invalid), from
//! a specified source that `ipv6::check` admitted. Duplicate address
//! detection (source `::`) is never answered here: it keeps its handling in
//! `ipv6::check` (the pod's claim), as an ARP probe is never answered.
//!
//! The advertisement is 86 bytes whatever the solicitation carried (78
//! bytes without its source link-layer address option, 86 with it, more
//! with other options): it is built on the stack and written over the frame
//! with one `bpf_skb_store_bytes`, after `bpf_skb_change_tail` gave the
//! frame that length.

use aya_ebpf::{
    bindings::BPF_F_RECOMPUTE_CSUM, helpers::generated::bpf_skb_change_tail, programs::TcContext,
};
use lanlink_common::{DropReason, EndpointByIf, Ipv6Key};

use crate::{
    eth::{ETH_LEN, ETH_P_IPV6},
    ipv6::{IPPROTO_ICMPV6, Ipv6},
    maps::HOST_ADDRS6,
};

const NEIGH_SOLICIT: u8 = 135;
const NEIGH_ADVERT: u8 = 136;
/// The hop limit of every neighbour discovery message (RFC 4861).
const ND_HOP_LIMIT: u8 = 255;
/// Advertisement flags: Solicited and Override (not Router), RFC 4861 4.4.
const NA_FLAGS: [u8; 4] = [0x60, 0, 0, 0];
/// Option type of the target link-layer address (RFC 4861 4.6.1).
const OPT_TARGET_LL_ADDR: u8 = 2;
/// ICMPv6 part of the advertisement: header, flags, target, one option.
const NA_ICMP_LEN: u16 = 32;
/// The whole advertisement frame: Ethernet, IPv6, ICMPv6.
const NA_FRAME_LEN: u32 = ETH_LEN as u32 + 40 + NA_ICMP_LEN as u32;

/// A neighbour advertisement with the target's link-layer address, as on
/// the wire (Ethernet header included).
#[repr(C)]
struct NeighAdvert {
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    eth_proto: [u8; 2],
    /// Version, traffic class, flow label.
    ip_head: [u8; 4],
    ip_payload_len: [u8; 2],
    ip_next: u8,
    ip_hop_limit: u8,
    ip_src: [u8; 16],
    ip_dst: [u8; 16],
    icmp_type: u8,
    icmp_code: u8,
    icmp_csum: [u8; 2],
    flags: [u8; 4],
    target: [u8; 16],
    opt_type: u8,
    /// In units of 8 bytes.
    opt_len: u8,
    opt_mac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<NeighAdvert>() == NA_FRAME_LEN as usize);

/// A solicitation the dataplane answers itself.
pub(crate) struct Solicitation {
    /// Who asks (a source `ipv6::check` admitted as the pod's).
    source: [u8; 16],
    /// The node address asked for.
    target: [u8; 16],
}

/// The solicitation in `ip` if it is one the dataplane answers: valid (see
/// the module docs), from a specified source, for an address in
/// `HOST_ADDRS6`.
#[inline(always)]
pub(crate) fn host_solicitation(ctx: &TcContext, ip: &Ipv6) -> Option<Solicitation> {
    if ip.proto != IPPROTO_ICMPV6 || ip.icmp_type != NEIGH_SOLICIT {
        return None;
    }
    // Straight after the IPv6 header, and never duplicate address detection.
    if ip.l4 != ETH_LEN + 40 || ip.saddr == [0; 16] {
        return None;
    }
    let hop_limit: u8 = ctx.load(ETH_LEN + 7).ok()?;
    let code: u8 = ctx.load(ip.l4 + 1).ok()?;
    if hop_limit != ND_HOP_LIMIT || code != 0 {
        return None;
    }
    let target: [u8; 16] = ctx.load(ip.l4 + 8).ok()?;
    // SAFETY: only the presence is read.
    unsafe { HOST_ADDRS6.get(Ipv6Key { addr: target }) }?;
    Some(Solicitation {
        source: ip.saddr,
        target,
    })
}

/// Turns the frame into the advertisement answering `sol`: the host veth's
/// MAC is `sol.target`'s, addressed back to the pod. `RedirectFailed` if
/// the frame cannot be resized or written (it is then dropped: half
/// rewritten, it is neither the question nor the answer).
#[inline(always)]
pub(crate) fn turn_into_advert(
    ctx: &TcContext,
    sol: &Solicitation,
    ep: &EndpointByIf,
) -> Result<(), DropReason> {
    let mut na = NeighAdvert {
        eth_dst: ep.mac,
        eth_src: ep.host_mac,
        eth_proto: ETH_P_IPV6.to_be_bytes(),
        ip_head: [0x60, 0, 0, 0],
        ip_payload_len: NA_ICMP_LEN.to_be_bytes(),
        ip_next: IPPROTO_ICMPV6,
        ip_hop_limit: ND_HOP_LIMIT,
        ip_src: sol.target,
        ip_dst: sol.source,
        icmp_type: NEIGH_ADVERT,
        icmp_code: 0,
        icmp_csum: [0; 2],
        flags: NA_FLAGS,
        target: sol.target,
        opt_type: OPT_TARGET_LL_ADDR,
        opt_len: 1,
        opt_mac: ep.host_mac,
    };
    na.icmp_csum = checksum(&na).to_be_bytes();
    if ctx.len() != NA_FRAME_LEN {
        // SAFETY: the helper works on the program's own skb.
        if unsafe { bpf_skb_change_tail(ctx.skb.skb, NA_FRAME_LEN, 0) } != 0 {
            return Err(DropReason::RedirectFailed);
        }
    }
    // RECOMPUTE_CSUM keeps a CHECKSUM_COMPLETE skb's csum true to the new
    // bytes (change_tail trims and grows it the same way).
    ctx.store(0, &na, u64::from(BPF_F_RECOMPUTE_CSUM))
        .map_err(|_| DropReason::RedirectFailed)
}

/// The ICMPv6 checksum of `na` (its checksum field zero): the pseudo-header
/// (source, destination, upper-layer length, next header) and the message.
#[inline(always)]
fn checksum(na: &NeighAdvert) -> u16 {
    let mut sum = sum_words(&na.ip_src)
        + sum_words(&na.ip_dst)
        + u32::from(NA_ICMP_LEN)
        + u32::from(IPPROTO_ICMPV6)
        + u32::from(u16::from_be_bytes([na.icmp_type, na.icmp_code]))
        + sum_words(&na.flags)
        + sum_words(&na.target)
        + u32::from(u16::from_be_bytes([na.opt_type, na.opt_len]))
        + sum_words(&na.opt_mac);
    // At most 27 words of 0xffff: two folds bring it into 16 bits.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The sum of the big-endian 16-bit words of `b` (`N` even; a constant
/// `N` lets the compiler unroll it).
#[inline(always)]
fn sum_words<const N: usize>(b: &[u8; N]) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
        i += 2;
    }
    sum
}
