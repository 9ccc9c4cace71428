//! ARP for IPv4 over Ethernet: reading a request, checking its sender against
//! the endpoint, and answering it in place for the gateway and host-routed
//! addresses.

use aya_ebpf::programs::TcContext;
use lanlink_common::{DropReason, EndpointByIf, endpoint_flags};

use crate::{
    eth::{ETH_LEN, ETH_P_IP, EthHdr, ptr_at},
    maps,
};

/// The link-local gateway every pod routes host-bound traffic through.
pub(crate) const GATEWAY: [u8; 4] = [169, 254, 1, 1];

const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// An ARP packet for IPv4 over Ethernet, as on the wire.
#[repr(C)]
struct ArpHdr {
    htype: [u8; 2],
    ptype: [u8; 2],
    hlen: u8,
    plen: u8,
    op: [u8; 2],
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
}

/// The fields of an ARP packet the paths decide on.
pub(crate) struct Arp {
    /// Operation, host byte order.
    op: u16,
    /// Sender hardware and protocol address.
    sha: [u8; 6],
    spa: [u8; 4],
    /// Target protocol address.
    tpa: [u8; 4],
}

impl Arp {
    /// A probe (sender 0.0.0.0, RFC 5227).
    #[inline(always)]
    fn is_probe(&self) -> bool {
        self.spa == [0; 4]
    }
}

/// Reads the ARP packet after the Ethernet header; `Malformed` unless it is
/// IPv4 over Ethernet.
#[inline(always)]
pub(crate) fn read(ctx: &TcContext) -> Result<Arp, DropReason> {
    let arp = ptr_at::<ArpHdr>(ctx, ETH_LEN)?;
    // SAFETY: bounds checked by ptr_at.
    let (htype, ptype, hlen, plen, op, sha, spa, tpa) = unsafe {
        (
            u16::from_be_bytes((*arp).htype),
            u16::from_be_bytes((*arp).ptype),
            (*arp).hlen,
            (*arp).plen,
            u16::from_be_bytes((*arp).op),
            (*arp).sha,
            (*arp).spa,
            (*arp).tpa,
        )
    };
    if htype != 1 || ptype != ETH_P_IP || hlen != 6 || plen != 4 {
        return Err(DropReason::Malformed);
    }
    Ok(Arp { op, sha, spa, tpa })
}

/// Checks the sender fields (what neighbours learn from) against the pod's
/// own, and refuses everything but probes from an endpoint whose lease
/// expired.
#[inline(always)]
pub(crate) fn check_sender(arp: &Arp, ep: &EndpointByIf) -> Result<(), DropReason> {
    if arp.sha != ep.mac {
        return Err(DropReason::SpoofArp);
    }
    // A probe is always allowed; a pod running its own DHCP client has no
    // known address yet.
    let unknown = ep.ipv4 == [0; 4] && ep.flags & endpoint_flags::OWN_DHCP != 0;
    if !(arp.is_probe() || unknown || arp.spa == ep.ipv4) {
        return Err(DropReason::SpoofArp);
    }
    if ep.flags & endpoint_flags::EXPIRED != 0 && !arp.is_probe() {
        return Err(DropReason::Expired);
    }
    Ok(())
}

/// Whether the dataplane answers this request itself: a request (not a
/// probe) for the gateway or an address in the host-routes trie (node
/// addresses, service CIDRs).
#[inline(always)]
pub(crate) fn is_for_host(arp: &Arp) -> bool {
    if arp.op != ARP_REQUEST || arp.is_probe() {
        return false;
    }
    if arp.tpa == GATEWAY {
        return true;
    }
    let key = aya_ebpf::btf_maps::lpm_trie::Key::new(32, arp.tpa);
    maps::HOST_ROUTES.get(&key).is_some()
}

/// Turns the request into the reply in place: the host veth's MAC answers
/// for `arp.tpa`, addressed back to the sender.
#[inline(always)]
pub(crate) fn turn_into_reply(
    ctx: &TcContext,
    arp: &Arp,
    ep: &EndpointByIf,
) -> Result<(), DropReason> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    let hdr = ptr_at::<ArpHdr>(ctx, ETH_LEN)?;
    // SAFETY: both bounds checked by ptr_at.
    unsafe {
        (*eth).dst = arp.sha;
        (*eth).src = ep.host_mac;
        (*hdr).op = ARP_REPLY.to_be_bytes();
        (*hdr).tha = arp.sha;
        (*hdr).tpa = arp.spa;
        (*hdr).sha = ep.host_mac;
        (*hdr).spa = arp.tpa;
    }
    Ok(())
}
