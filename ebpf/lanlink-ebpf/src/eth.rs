//! Ethernet and packet access: the one bounds-checked `ptr_at`, the header
//! pull, and what the paths read off an Ethernet frame and its skb.

use aya_ebpf::programs::TcContext;
use lanlink_common::DropReason;

/// Ethernet header length.
pub(crate) const ETH_LEN: usize = 14;
/// EtherType IPv4.
pub(crate) const ETH_P_IP: u16 = 0x0800;
/// EtherType ARP.
pub(crate) const ETH_P_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
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

/// The Ethernet header fields the paths decide on (copied out of the frame).
pub(crate) struct Eth {
    pub(crate) dst: [u8; 6],
    pub(crate) src: [u8; 6],
    /// EtherType, host byte order.
    pub(crate) proto: u16,
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
        // On failure the bounds checks of `ptr_at` drop the frame as malformed.
        let _ = ctx.pull_data(want);
    }
}

/// Returns a pointer to a `T` at `offset` in the packet, or `Malformed` if
/// the frame is shorter: the one bounds check every header access goes
/// through.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Result<*mut T, DropReason> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(DropReason::Malformed);
    }
    Ok((start + offset) as *mut T)
}

/// Reads the Ethernet header.
#[inline(always)]
pub(crate) fn read_header(ctx: &TcContext) -> Result<Eth, DropReason> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        Ok(Eth {
            dst: (*eth).dst,
            src: (*eth).src,
            proto: u16::from_be_bytes((*eth).proto),
        })
    }
}

/// Rewrites the destination MAC.
#[inline(always)]
pub(crate) fn set_dst(ctx: &TcContext, mac: [u8; 6]) -> Result<(), DropReason> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { (*eth).dst = mac };
    Ok(())
}

/// Whether `mac` is a group (broadcast or multicast) address.
#[inline(always)]
pub(crate) fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 1
}

/// Whether the frame carries a VLAN tag: in the skb's metadata (the kernel
/// moves an outer tag there before TC) or in-line (an inner one, or an
/// EtherType the kernel does not accelerate).
#[inline(always)]
pub(crate) fn is_vlan_tagged(ctx: &TcContext, proto: u16) -> bool {
    // SAFETY: reading the context's own metadata.
    let in_metadata = unsafe { (*ctx.skb.skb).vlan_present } != 0;
    in_metadata || ETH_P_VLAN.contains(&proto)
}

/// Ifindex of the device the hook runs on (ingress: received on; egress:
/// sent from).
#[inline(always)]
pub(crate) fn skb_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading the context's own metadata.
    unsafe { (*ctx.skb.skb).ifindex }
}
