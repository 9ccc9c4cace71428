//! DHCP seen from the LAN: learns the address a server gives a pod that runs
//! its own DHCP client (`ipam: none`), so that pod's source addresses are
//! checked like any other's from then on.
//!
//! Only server replies arriving on the uplink are trusted (the LAN is where
//! the DHCP server is, as with DHCP snooping's trusted port); a pod cannot
//! teach the dataplane an address, since its frames never reach `from_lan`.
//! Reads go through `bpf_skb_load_bytes`, so option walking needs no packet
//! pointer arithmetic the verifier would have to follow.

use aya_ebpf::programs::TcContext;
use lanlink_common::{MacKey, Verdict, endpoint_flags};

use crate::{eth::ETH_LEN, ipv4::IPPROTO_UDP, maps, stats::count};

pub(crate) const SERVER_PORT: u16 = 67;
pub(crate) const CLIENT_PORT: u16 = 68;
pub(crate) const BOOTREPLY: u8 = 2;
/// Offsets in the BOOTP message (RFC 2131 figure 1).
const YIADDR: usize = 16;
pub(crate) const CHADDR: usize = 28;
pub(crate) const MAGIC: usize = 236;
pub(crate) const OPTIONS: usize = 240;
pub(crate) const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
pub(crate) const OPT_PAD: u8 = 0;
const OPT_MESSAGE_TYPE: u8 = 53;
pub(crate) const OPT_END: u8 = 255;
const DHCPACK: u8 = 5;
/// Options looked at before giving up on finding the one wanted (servers
/// put the message type first or nearly so, clients their identifier).
pub(crate) const MAX_OPTIONS: u32 = 24;

/// If the frame is a DHCPACK for an endpoint with its own DHCP client,
/// records the acknowledged address in both endpoint maps. Never changes
/// the frame's fate: a frame that is not such an ACK, or cannot be read, is
/// left alone.
#[inline(always)]
pub(crate) fn learn_from_ack(ctx: &TcContext) {
    let _ = try_learn(ctx);
}

#[inline(always)]
fn try_learn(ctx: &TcContext) -> Option<()> {
    let ver_ihl: u8 = ctx.load(ETH_LEN).ok()?;
    let proto: u8 = ctx.load(ETH_LEN + 9).ok()?;
    let frag: [u8; 2] = ctx.load(ETH_LEN + 6).ok()?;
    // IPv4, UDP, not a fragment (MF clear, offset 0).
    if ver_ihl >> 4 != 4 || proto != IPPROTO_UDP || u16::from_be_bytes(frag) & 0x3fff != 0 {
        return None;
    }
    let l4 = ETH_LEN + usize::from(ver_ihl & 0xf) * 4;
    let ports: [u8; 4] = ctx.load(l4).ok()?;
    if u16::from_be_bytes([ports[0], ports[1]]) != SERVER_PORT
        || u16::from_be_bytes([ports[2], ports[3]]) != CLIENT_PORT
    {
        return None;
    }
    let bootp = l4 + 8;
    let head: [u8; 3] = ctx.load(bootp).ok()?;
    // A reply, for an Ethernet hardware address.
    if head != [BOOTREPLY, 1, 6] {
        return None;
    }
    let chaddr: [u8; 6] = ctx.load(bootp + CHADDR).ok()?;
    let by_mac = maps::EP_BY_MAC.get_ptr_mut(MacKey::new(chaddr))?;
    // SAFETY: a valid map value pointer; the agent replaces whole entries.
    let (flags, ifindex) = unsafe { ((*by_mac).flags, (*by_mac).ifindex) };
    if flags & endpoint_flags::OWN_DHCP == 0 {
        return None;
    }
    let yiaddr: [u8; 4] = ctx.load(bootp + YIADDR).ok()?;
    let magic: [u8; 4] = ctx.load(bootp + MAGIC).ok()?;
    if yiaddr == [0; 4] || magic != MAGIC_COOKIE || message_type(ctx, bootp + OPTIONS)? != DHCPACK {
        return None;
    }
    // SAFETY: valid map value pointers; a 4-byte store is not torn.
    unsafe {
        (*by_mac).ipv4 = yiaddr;
        if let Some(by_if) = maps::EP_BY_IF.get_ptr_mut(ifindex) {
            (*by_if).ipv4 = yiaddr;
        }
    }
    count(Verdict::DhcpLearnt.slot(), ctx.len());
    Some(())
}

/// The DHCP message type (option 53) of the options starting at `off`.
#[inline(always)]
fn message_type(ctx: &TcContext, mut off: usize) -> Option<u8> {
    // Bounded loop (verifier, kernel >= 5.3); the offset is only ever handed
    // to bpf_skb_load_bytes, which checks it at run time.
    let mut i = 0;
    while i < MAX_OPTIONS {
        let code: u8 = ctx.load(off).ok()?;
        match code {
            OPT_PAD => off += 1,
            OPT_END => return None,
            OPT_MESSAGE_TYPE => return ctx.load(off + 2).ok(),
            _ => {
                let len: u8 = ctx.load(off + 1).ok()?;
                off += 2 + usize::from(len);
            }
        }
        i += 1;
    }
    None
}
