//! `from_pod`: what a pod sends, at the TC ingress of its host-side veth.
//!
//! In order: the endpoint must be registered; its source MAC is checked,
//! VLAN tags and frames to the 802.1 control groups are refused; DHCP is
//! snooped (`dhcp_guard`); ARP, IPv4 and IPv6 senders are checked against
//! the endpoint (IPv6 with its RA guard, `ipv6`), and the host-bound cases
//! (the ARP responder and its IPv6 twin for the node's addresses, `nd`;
//! replies of flows that came through the node's stack) are answered before
//! any forwarding decision; then broadcast is limited (storm control) and
//! flooded, frames for the host veth go to the stack, frames for a local pod
//! go straight into it, and the rest leaves through the uplink.

use aya_ebpf::programs::TcContext;
use lanlink_common::{DropReason, EndpointByIf, MacKey, Verdict, endpoint_flags};

use crate::{
    arp, dhcp_guard,
    eth::{self, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, PACKET_HOST},
    flood, flows, guard, ipv4, ipv6, maps, nd,
    programs::Action,
    redirect,
};

/// Decides the fate of a frame a pod sent.
#[inline(always)]
pub(crate) fn try_from_pod(ctx: &TcContext) -> Result<Action, DropReason> {
    eth::pull_headers(ctx);
    let ifindex = eth::skb_ifindex(ctx);
    // SAFETY: hash values are only read; the agent replaces whole entries.
    let Some(ep) = (unsafe { maps::EP_BY_IF.get(ifindex) }) else {
        // A veth the agent has not registered (not yet, or not any more):
        // with no endpoint there is nothing to check the frame against, so
        // it must not reach the stack or the LAN (fail closed).
        return Err(DropReason::UnknownIf);
    };
    let ep: EndpointByIf = *ep;

    let eth = eth::read_header(ctx)?;
    if eth.src != ep.mac {
        return Err(DropReason::SpoofMac);
    }
    // A pod is an untagged access port: a VLAN tag would carry its frames
    // onto another VLAN past every check below.
    if eth::is_vlan_tagged(ctx, eth.proto) {
        return Err(DropReason::Vlan);
    }
    // STP, pause, LACP, 802.1X, LLDP: a bridge's business, never a pod's.
    if guard::is_l2_control(&eth.dst) {
        return Err(DropReason::L2Control);
    }

    // ARP and DHCP are matched before anything else looks at addresses.
    match eth.proto {
        ETH_P_ARP => {
            let arp = arp::read(ctx)?;
            arp::check_sender(&arp, &ep)?;
            if arp::is_for_host(&arp) {
                return answer_arp(ctx, &arp, &ep, ifindex);
            }
        }
        ETH_P_IP => {
            let ip = ipv4::read(ctx)?;
            if dhcp_guard::is_dhcp(&ip) {
                dhcp_guard::check(ctx, &ip, &ep, ifindex)?;
            }
            if !ipv4::is_dhcp_from_client(&ip, &ep) {
                ipv4::check_source(&ip, &ep)?;
                if flows::enabled() && flows::is_reply_of_learnt(&ip) {
                    return steer_reply_to_stack(ctx, &ep);
                }
            }
        }
        ETH_P_IPV6 => {
            if ep.flags & endpoint_flags::EXPIRED != 0 {
                return Err(DropReason::Expired);
            }
            let ip = ipv6::read(ctx)?;
            ipv6::check(ctx, &ip, &ep, ifindex)?;
            if let Some(sol) = nd::host_solicitation(ctx, &ip) {
                return answer_nd(ctx, &sol, &ep, ifindex);
            }
        }
        _ => {
            if ep.flags & endpoint_flags::EXPIRED != 0 {
                return Err(DropReason::Expired);
            }
        }
    }

    if eth::is_group(&eth.dst) {
        // Storm control, before the fan-out multiplies the frame.
        guard::take_group_frame(ifindex)?;
        flood::to_pods(ctx, ifindex);
        return redirect::to_uplink(Verdict::Flood);
    }
    if eth.dst == ep.host_mac {
        // Gateway 169.254.1.1, node IPs, service CIDRs: the node's stack.
        return Ok(Action::pass(Verdict::PassToStack));
    }
    // SAFETY: read-only use of the value.
    if let Some(peer) = unsafe { maps::EP_BY_MAC.get(MacKey::new(eth.dst)) } {
        return redirect::to_pod(ctx, peer.ifindex);
    }
    redirect::to_uplink(Verdict::RedirectUplink)
}

/// Answers an ARP request for the gateway or a host-routed address with the
/// host veth's MAC: the reply goes back out of the host veth `ifindex`
/// (its egress is the pod's ingress).
#[inline(always)]
fn answer_arp(
    ctx: &TcContext,
    arp: &arp::Arp,
    ep: &EndpointByIf,
    ifindex: u32,
) -> Result<Action, DropReason> {
    arp::turn_into_reply(ctx, arp, ep)?;
    redirect::to_egress(ifindex, Verdict::ArpReply)
}

/// Answers a neighbour solicitation for a node IPv6 address with the host
/// veth's MAC, as `answer_arp` answers ARP: back out of the host veth
/// `ifindex`, into the pod.
#[inline(always)]
fn answer_nd(
    ctx: &TcContext,
    sol: &nd::Solicitation,
    ep: &EndpointByIf,
    ifindex: u32,
) -> Result<Action, DropReason> {
    nd::turn_into_advert(ctx, sol, ep)?;
    redirect::to_egress(ifindex, Verdict::NdReply)
}

/// Sends the reply of a flow that entered the pod through the node's stack
/// back up that stack (F6), addressed to the host veth.
#[inline(always)]
fn steer_reply_to_stack(ctx: &TcContext, ep: &EndpointByIf) -> Result<Action, DropReason> {
    eth::set_dst(ctx, ep.host_mac)?;
    // The stack classified the frame by its old destination (another host's
    // MAC: PACKET_OTHERHOST) before TC ran, and ip_rcv drops those.
    if ctx.change_type(PACKET_HOST).is_err() {
        return Err(DropReason::RedirectFailed);
    }
    Ok(Action::pass(Verdict::FlowToHost))
}
