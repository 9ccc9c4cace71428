//! Broadcast and multicast fan-out to local pods.

use aya_ebpf::programs::TcContext;
use lanlink_common::{DropReason, FLOOD_EMPTY, MAX_ENDPOINTS};

use crate::{maps::FLOOD, redirect, stats::count};

/// Clones the frame to the egress of every registered host veth except
/// `except` (the sender's; 0 for frames from the LAN). The egress of a host
/// veth is the pod's ingress.
#[inline(always)]
pub(crate) fn to_pods(ctx: &TcContext, except: u32) {
    // Bounded loop (verifier, kernel >= 5.3); FLOOD is filled from slot 0,
    // with free slots (FLOOD_EMPTY) where members were removed.
    let mut i = 0;
    while i < MAX_ENDPOINTS {
        let Some(&ifindex) = FLOOD.get(i) else { break };
        if ifindex == 0 {
            break;
        }
        if ifindex != except && ifindex != FLOOD_EMPTY {
            // A failed clone (e.g. a veth going away) must not stop the
            // others, but it is counted.
            if redirect::clone_to(ctx, ifindex).is_err() {
                count(DropReason::RedirectFailed.slot(), ctx.len());
            }
        }
        i += 1;
    }
}
