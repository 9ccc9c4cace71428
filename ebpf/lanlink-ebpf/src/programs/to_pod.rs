//! `to_pod`: what the node's stack sends to a pod, at the TC egress of its
//! host-side veth. With the conntrack-bypass fix on, learns each IPv4 flow
//! so the pod's replies return the same way (see `crate::flows`); the frame
//! is always delivered.
//!
//! No fail-closed check on the endpoint here: these frames come from the
//! node's own stack (routed, or the dataplane's flood clones), not from a
//! pod, so there is no sender to check; a flow learnt for a veth that is
//! going away only names an ifindex that is never matched again.

use aya_ebpf::programs::TcContext;
use lanlink_common::{DropReason, Verdict};

use crate::{
    eth::{self, ETH_P_IP},
    flows, ipv4,
    programs::Action,
};

/// Decides the fate of (and learns from) a frame the stack sends to a pod.
#[inline(always)]
pub(crate) fn try_to_pod(ctx: &TcContext) -> Result<Action, DropReason> {
    eth::pull_headers(ctx);
    if !flows::enabled() {
        return Ok(Action::pass(Verdict::PassToStack));
    }
    let eth = eth::read_header(ctx)?;
    // Broadcast clones from the dataplane also pass here; they are not flows.
    if eth::is_group(&eth.dst) || eth.proto != ETH_P_IP {
        return Ok(Action::pass(Verdict::PassToStack));
    }
    let ip = ipv4::read(ctx)?;
    let verdict = flows::learn(&ip, eth::skb_ifindex(ctx));
    Ok(Action::pass(verdict))
}
