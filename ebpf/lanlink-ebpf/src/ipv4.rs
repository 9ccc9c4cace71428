//! IPv4: reading the header and the ports (or ICMP echo identifier), and
//! checking a pod's source address.

use aya_ebpf::programs::TcContext;
use lanlink_common::{DropReason, EndpointByIf, endpoint_flags};

use crate::eth::{ETH_LEN, ptr_at};

pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
const DHCP_SERVER_PORT: u16 = 67;

/// The fixed part of an IPv4 header.
#[repr(C)]
struct Ipv4Hdr {
    ver_ihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    proto: u8,
    check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}

/// The first four bytes of TCP and UDP: the ports.
#[repr(C)]
struct Ports {
    src: [u8; 2],
    dst: [u8; 2],
}

/// The ICMP echo header up to the identifier.
#[repr(C)]
struct IcmpEcho {
    ty: u8,
    code: u8,
    check: [u8; 2],
    id: [u8; 2],
}

/// The parts of an IPv4 packet the paths decide on.
pub(crate) struct Ipv4 {
    pub(crate) saddr: [u8; 4],
    pub(crate) daddr: [u8; 4],
    pub(crate) proto: u8,
    /// Source and destination port, network order (ICMP echo: the
    /// identifier in both; 0 for other protocols and non-first fragments).
    pub(crate) sport: [u8; 2],
    pub(crate) dport: [u8; 2],
    /// Offset of the L4 header in the frame.
    pub(crate) l4: usize,
}

/// Reads the IPv4 header after the Ethernet header and the first bytes of
/// L4; `Malformed` if truncated or not IPv4.
#[inline(always)]
pub(crate) fn read(ctx: &TcContext) -> Result<Ipv4, DropReason> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
    // SAFETY: bounds checked by ptr_at.
    let (ver_ihl, frag_off, proto, saddr, daddr) = unsafe {
        (
            (*ip).ver_ihl,
            u16::from_be_bytes((*ip).frag_off),
            (*ip).proto,
            (*ip).saddr,
            (*ip).daddr,
        )
    };
    if ver_ihl >> 4 != 4 || ver_ihl & 0xf < 5 {
        return Err(DropReason::Malformed);
    }
    let l4 = ETH_LEN + usize::from(ver_ihl & 0xf) * 4;
    let mut p = Ipv4 {
        saddr,
        daddr,
        proto,
        sport: [0; 2],
        dport: [0; 2],
        l4,
    };
    // Non-first fragments carry no L4 header.
    if frag_off & 0x1fff != 0 {
        return Ok(p);
    }
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let ports = ptr_at::<Ports>(ctx, l4)?;
            // SAFETY: bounds checked by ptr_at.
            unsafe {
                p.sport = (*ports).src;
                p.dport = (*ports).dst;
            }
        }
        IPPROTO_ICMP => {
            let icmp = ptr_at::<IcmpEcho>(ctx, l4)?;
            // SAFETY: bounds checked by ptr_at.
            let (ty, id) = unsafe { ((*icmp).ty, (*icmp).id) };
            // Echo request (8) and reply (0): the identifier ties them.
            if ty == 0 || ty == 8 {
                p.sport = id;
                p.dport = id;
            }
        }
        _ => {}
    }
    Ok(p)
}

/// Whether this is the endpoint's own DHCP to a server: from 0.0.0.0
/// (DISCOVER, REQUEST while selecting) or from its address. Always allowed,
/// before any address check: the pod may have no address yet, or an expired
/// one it is renewing.
#[inline(always)]
pub(crate) fn is_dhcp_from_client(ip: &Ipv4, ep: &EndpointByIf) -> bool {
    ip.proto == IPPROTO_UDP
        && u16::from_be_bytes(ip.dport) == DHCP_SERVER_PORT
        && (ip.saddr == [0; 4] || ip.saddr == ep.ipv4)
}

/// Checks the source address against the endpoint's: `Expired` once its
/// lease ran out, `SpoofIp` for any other address (a pod with its own DHCP
/// client whose address is not learnt yet may use any).
#[inline(always)]
pub(crate) fn check_source(ip: &Ipv4, ep: &EndpointByIf) -> Result<(), DropReason> {
    if ep.flags & endpoint_flags::EXPIRED != 0 {
        return Err(DropReason::Expired);
    }
    let unknown = ep.ipv4 == [0; 4] && ep.flags & endpoint_flags::OWN_DHCP != 0;
    if ip.saddr != ep.ipv4 && !unknown {
        return Err(DropReason::SpoofIp);
    }
    Ok(())
}
