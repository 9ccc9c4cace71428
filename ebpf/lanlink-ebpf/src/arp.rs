//! ARP from pods: anti-spoofing and the responder for the gateway and node
//! addresses.

use aya_ebpf::{helpers::generated::bpf_redirect, programs::TcContext};
use lanlink_common::{EndpointByIf, Verdict, endpoint_flags};

use crate::{
    Action,
    eth::{ETH_LEN, EthHdr, ptr_at},
    maps,
};

/// The link-local gateway every pod routes host-bound traffic through.
pub(crate) const GATEWAY: [u8; 4] = [169, 254, 1, 1];

const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// An ARP packet for IPv4 over Ethernet.
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

/// Checks an ARP frame from a pod; answers it if it asks for the gateway or
/// a host-routed address (returns `Some`), else lets forwarding continue.
#[inline(always)]
pub(crate) fn from_pod(ctx: &TcContext, ep: &EndpointByIf) -> Result<Option<Action>, Verdict> {
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
    if htype != 1 || ptype != crate::eth::ETH_P_IP || hlen != 6 || plen != 4 {
        return Err(Verdict::DropMalformed);
    }
    // The sender fields are what neighbours learn from: they must be the
    // pod's own. A probe (sender 0.0.0.0, RFC 5227) is always allowed; a pod
    // running its own DHCP client has no known address yet.
    if sha != ep.mac {
        return Err(Verdict::DropSpoofArp);
    }
    let probe = spa == [0; 4];
    let unknown = ep.ipv4 == [0; 4] && ep.flags & endpoint_flags::OWN_DHCP != 0;
    if !(probe || unknown || spa == ep.ipv4) {
        return Err(Verdict::DropSpoofArp);
    }
    if ep.flags & endpoint_flags::EXPIRED != 0 && !probe {
        return Err(Verdict::DropExpired);
    }
    if op != ARP_REQUEST || probe || !answers_for(&tpa) {
        return Ok(None);
    }

    // Turn the request into the reply in place and send it back to the pod.
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: both bounds checked (eth here, arp above).
    unsafe {
        (*eth).dst = sha;
        (*eth).src = ep.host_mac;
        (*arp).op = ARP_REPLY.to_be_bytes();
        (*arp).tha = sha;
        (*arp).tpa = spa;
        (*arp).sha = ep.host_mac;
        (*arp).spa = tpa;
    }
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Egress of the host veth is the pod's ingress.
    // SAFETY: plain helper call.
    let ret = unsafe { bpf_redirect(ifindex, 0) };
    if ret as u32 != crate::TC_ACT_REDIRECT_U32 {
        return Err(Verdict::DropRedirectFailed);
    }
    Ok(Some(Action::redirect(Verdict::ArpReply)))
}

/// Whether the ARP responder answers for `ip`: the gateway, or an address in
/// the host-routes trie (node addresses, service CIDRs).
#[inline(always)]
fn answers_for(ip: &[u8; 4]) -> bool {
    if *ip == GATEWAY {
        return true;
    }
    let key = aya_ebpf::btf_maps::lpm_trie::Key::new(32, *ip);
    maps::HOST_ROUTES.get(&key).is_some()
}
