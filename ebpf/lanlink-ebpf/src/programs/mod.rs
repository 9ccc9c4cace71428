//! The three packet paths, and what every path ends with: an [`Action`] to
//! take (counted under its [`Verdict`]) or a [`DropReason`] (counted, then
//! `TC_ACT_SHOT`). `Err` only ever carries a drop.

pub(crate) mod from_lan;
pub(crate) mod from_pod;
pub(crate) mod to_pod;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    programs::TcContext,
};
use lanlink_common::{DropReason, Verdict};

use crate::{monitor, stats};

/// What a path decided for a frame that goes on: a TC return code and the
/// verdict to count.
pub(crate) struct Action {
    code: i32,
    verdict: Verdict,
}

impl Action {
    /// Hand the frame to the stack (or, on egress, let it leave).
    pub(crate) const fn pass(verdict: Verdict) -> Self {
        Self {
            code: TC_ACT_OK,
            verdict,
        }
    }

    /// The frame was redirected by a helper (see `crate::redirect`).
    pub(crate) const fn redirect(verdict: Verdict) -> Self {
        Self {
            code: TC_ACT_REDIRECT,
            verdict,
        }
    }
}

/// Counts `action` and returns its TC code.
#[inline(always)]
pub(crate) fn accept(ctx: &TcContext, action: Action) -> i32 {
    stats::count(action.verdict.slot(), ctx.len());
    action.code
}

/// Counts `reason` (also against the sending endpoint, and for monitor
/// clients) and drops the frame.
#[inline(always)]
pub(crate) fn drop(ctx: &TcContext, reason: DropReason) -> i32 {
    stats::count(reason.slot(), ctx.len());
    monitor::record_drop(ctx, reason);
    TC_ACT_SHOT
}
