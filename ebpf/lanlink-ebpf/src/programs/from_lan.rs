//! `from_lan`: what the LAN sends, at the TC ingress of the uplink.
//!
//! In order: a DHCPACK for a pod with its own DHCP client teaches the
//! dataplane its address, a neighbour advertisement from a LAN host
//! withdraws a pod's claim of that address; broadcast is flooded to every local pod and also
//! handed to the stack; unicast for a local pod goes straight into it;
//! everything else is the node's own traffic.
//!
//! Nothing here fails open for an unknown interface: the program is only
//! attached to the uplink, and a destination MAC with no endpoint is the
//! node's (or no one's) business, which the stack decides.

use aya_ebpf::programs::TcContext;
use lanlink_common::{DropReason, MacKey, Verdict};

use crate::{
    dhcp,
    eth::{self, ETH_P_IP, ETH_P_IPV6},
    flood, ipv6, maps,
    programs::Action,
    redirect,
};

/// Decides the fate of a frame from the LAN.
#[inline(always)]
pub(crate) fn try_from_lan(ctx: &TcContext) -> Result<Action, DropReason> {
    eth::pull_headers(ctx);
    let eth = eth::read_header(ctx)?;
    if eth.proto == ETH_P_IP {
        // Before delivery, so the pod's first frame from its new address
        // already passes the source check.
        dhcp::learn_from_ack(ctx);
    } else if eth.proto == ETH_P_IPV6 {
        // A LAN host defending an address a pod claimed takes it back.
        ipv6::forget_defended(ctx);
    }
    if eth::is_group(&eth.dst) {
        // Every local pod gets a copy; the node's stack sees it too.
        flood::to_pods(ctx, 0);
        return Ok(Action::pass(Verdict::Flood));
    }
    // SAFETY: read-only use of the value.
    if let Some(ep) = unsafe { maps::EP_BY_MAC.get(MacKey::new(eth.dst)) } {
        return redirect::to_pod(ctx, ep.ifindex);
    }
    Ok(Action::pass(Verdict::PassToStack))
}
