//! The redirect helpers every path sends frames with, and their test-only
//! recording: `bpf_redirect` and `bpf_redirect_peer` only store the target in
//! per-CPU kernel state (acted on after the program returns), which a
//! `BPF_PROG_TEST_RUN` cannot read. With the `RECORD_REDIRECTS` global set,
//! each call is also written to `REDIRECT_LOG`; the agent leaves it 0, a
//! frozen read-only constant, so the verifier drops that code.

use aya_ebpf::{
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use lanlink_common::{DropReason, REDIRECT_LOG_LEN, RedirectRecord, Verdict, redirect_kind};

use crate::{
    eth::PACKET_HOST,
    maps::{RECORD_REDIRECTS, REDIRECT_LOG, UPLINK_IFINDEX},
    programs::Action,
};

/// `TC_ACT_REDIRECT` as the redirect helpers return it.
const TC_ACT_REDIRECT: i64 = aya_ebpf::bindings::TC_ACT_REDIRECT as i64;

/// Sends the frame out of the uplink, counted as `verdict`.
#[inline(always)]
pub(crate) fn to_uplink(verdict: Verdict) -> Result<Action, DropReason> {
    to_egress(UPLINK_IFINDEX.load(), verdict)
}

/// Sends the frame out of (the egress of) `ifindex`, counted as `verdict`.
/// The egress of a host veth is its pod's ingress.
#[inline(always)]
pub(crate) fn to_egress(ifindex: u32, verdict: Verdict) -> Result<Action, DropReason> {
    // SAFETY: plain helper call.
    let ret = unsafe { bpf_redirect(ifindex, 0) };
    record(redirect_kind::REDIRECT, ifindex, 0, ret);
    if ret != TC_ACT_REDIRECT {
        return Err(DropReason::RedirectFailed);
    }
    Ok(Action::redirect(verdict))
}

/// Delivers the frame straight into the pod behind host veth `ifindex`
/// (ingress of its peer, skipping the host veth's egress and the backlog).
#[inline(always)]
pub(crate) fn to_pod(ctx: &TcContext, ifindex: u32) -> Result<Action, DropReason> {
    // The frame carries another host's MAC, so it arrived as PACKET_OTHERHOST;
    // before 6.15 redirect_peer keeps that type and the pod's IP stack drops
    // it. Unicast to the pod's own MAC is PACKET_HOST from the pod's view.
    if ctx.change_type(PACKET_HOST).is_err() {
        return Err(DropReason::RedirectFailed);
    }
    // SAFETY: plain helper call.
    let ret = unsafe { bpf_redirect_peer(ifindex, 0) };
    record(redirect_kind::REDIRECT_PEER, ifindex, 0, ret);
    if ret != TC_ACT_REDIRECT {
        return Err(DropReason::RedirectFailed);
    }
    Ok(Action::redirect(Verdict::RedirectPeer))
}

/// Sends a copy of the frame out of `ifindex`; the frame itself goes on.
#[inline(always)]
pub(crate) fn clone_to(ctx: &TcContext, ifindex: u32) -> Result<(), DropReason> {
    let res = ctx.clone_redirect(ifindex, 0);
    record(
        redirect_kind::CLONE,
        ifindex,
        0,
        match res {
            Ok(()) => 0,
            Err(e) => e,
        },
    );
    res.map_err(|_| DropReason::RedirectFailed)
}

/// Appends a record to `REDIRECT_LOG` when the harness asked for it.
#[inline(always)]
fn record(kind: u32, ifindex: u32, flags: u32, ret: i64) {
    if RECORD_REDIRECTS.load() == 0 {
        return;
    }
    let Some(log) = REDIRECT_LOG.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU map value; only this CPU writes it while we run.
    unsafe {
        let n = (*log).len as usize;
        if n < REDIRECT_LOG_LEN {
            (*log).records[n] = RedirectRecord {
                kind,
                ifindex,
                flags,
                ret: ret as i32,
            };
        }
        (*log).len += 1;
    }
}
