//! IPv4 from pods (anti-spoofing, DHCP, the conntrack-bypass fix) and the
//! to-pod flow learning.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, programs::TcContext};
use lanlink_common::{EndpointByIf, FlowKey, FlowValue, Verdict, config, endpoint_flags};

use crate::{
    Action,
    eth::{ETH_LEN, ETH_P_IP, EthHdr, PACKET_HOST, is_group, ptr_at},
    maps,
};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
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

/// The first four bytes of TCP and UDP: the ports. For ICMP echo: type,
/// code, checksum.
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

/// The parts of an IPv4 packet the programs decide on.
struct Parsed {
    saddr: [u8; 4],
    daddr: [u8; 4],
    proto: u8,
    /// Source and destination port (ICMP echo: the identifier in both).
    sport: [u8; 2],
    dport: [u8; 2],
}

#[inline(always)]
fn parse(ctx: &TcContext) -> Result<Parsed, Verdict> {
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
        return Err(Verdict::DropMalformed);
    }
    let l4 = ETH_LEN + usize::from(ver_ihl & 0xf) * 4;
    let mut p = Parsed {
        saddr,
        daddr,
        proto,
        sport: [0; 2],
        dport: [0; 2],
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

/// Checks an IPv4 packet from a pod. Returns `Some` when the packet must go
/// to the node's stack (reply of a flow that came through it).
#[inline(always)]
pub(crate) fn from_pod(ctx: &TcContext, ep: &EndpointByIf) -> Result<Option<Action>, Verdict> {
    let p = parse(ctx)?;
    // DHCP from 0.0.0.0 (DISCOVER, REQUEST while selecting) is matched before
    // any address check: the pod has no address yet.
    let dhcp = p.proto == IPPROTO_UDP && u16::from_be_bytes(p.dport) == DHCP_SERVER_PORT;
    if dhcp && (p.saddr == [0; 4] || p.saddr == ep.ipv4) {
        return Ok(None);
    }
    if ep.flags & endpoint_flags::EXPIRED != 0 {
        return Err(Verdict::DropExpired);
    }
    let unknown = ep.ipv4 == [0; 4] && ep.flags & endpoint_flags::OWN_DHCP != 0;
    if p.saddr != ep.ipv4 && !unknown {
        return Err(Verdict::DropSpoofIp);
    }
    if maps::CONFIG_FLAGS.load() & config::FLOW_FIX == 0 {
        return Ok(None);
    }
    let key = FlowKey {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        _pad: [0; 3],
    };
    // SAFETY: read-only use of the value.
    if unsafe { maps::FLOWS.get(&key) }.is_none() {
        return Ok(None);
    }
    // The flow entered the pod through the node's stack (DNAT by kube-proxy
    // or a load balancer): its reply goes back up the stack so conntrack can
    // reverse the NAT, instead of leaving on L2 with the pod's address.
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { (*eth).dst = ep.host_mac };
    // The stack classified the frame by its old destination (another host's
    // MAC: PACKET_OTHERHOST) before TC ran, and ip_rcv drops those.
    if ctx.change_type(PACKET_HOST).is_err() {
        return Err(Verdict::DropRedirectFailed);
    }
    Ok(Some(Action::pass(Verdict::FlowToHost)))
}

/// Frames the node's stack sends to a pod (egress of its host veth): learns
/// the flow so the pod's replies return the same way.
#[inline(always)]
pub(crate) fn to_pod(ctx: &TcContext) -> Result<Action, Verdict> {
    if maps::CONFIG_FLAGS.load() & config::FLOW_FIX == 0 {
        return Ok(Action::pass(Verdict::PassToStack));
    }
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    let (dst, proto) = unsafe { ((*eth).dst, u16::from_be_bytes((*eth).proto)) };
    // Broadcast clones from the dataplane also pass here; they are not flows.
    if is_group(&dst) || proto != ETH_P_IP {
        return Ok(Action::pass(Verdict::PassToStack));
    }
    let p = parse(ctx)?;
    let key = FlowKey {
        saddr: p.daddr,
        daddr: p.saddr,
        sport: p.dport,
        dport: p.sport,
        proto: p.proto,
        _pad: [0; 3],
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: reading the context's own metadata.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // A known flow is refreshed in place: an LRU update would take a fresh
    // node and swap it in under the bucket lock for every frame.
    if let Some(v) = maps::FLOWS.get_ptr_mut(&key) {
        // SAFETY: a valid map value; racing writers store the same values.
        unsafe {
            if (*v).ifindex == ifindex {
                (*v).last_seen_ns = now;
                return Ok(Action::pass(Verdict::FlowLearnt));
            }
        }
    }
    let value = FlowValue {
        last_seen_ns: now,
        ifindex,
        _pad: 0,
    };
    // An LRU map evicts the oldest flow when full, so a failure is rare; the
    // frame itself is still delivered, the failure is counted.
    if maps::FLOWS.insert(&key, &value, 0).is_err() {
        return Ok(Action::pass(Verdict::FlowLearnFailed));
    }
    Ok(Action::pass(Verdict::FlowLearnt))
}
