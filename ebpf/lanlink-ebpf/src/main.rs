//! lanlink's TC programs.
//!
//! - `from_pod`: TC ingress of every pod's host-side veth.
//! - `from_lan`: TC ingress of the uplink.
//! - `to_pod`: TC egress of every pod's host-side veth (sees what the node's
//!   stack routes to a pod; the conntrack-bypass fix learns its flows there).
//!
//! Entry points are thin: each calls a `try_*` function whose `Err` is a drop
//! reason, counted and turned into `TC_ACT_SHOT` in one place.
#![no_std]
#![no_main]

mod arp;
mod dhcp;
mod eth;
mod flood;
mod ipv4;
mod maps;
mod stats;

/// `TC_ACT_REDIRECT` as the redirect helpers return it.
pub(crate) const TC_ACT_REDIRECT_U32: u32 = TC_ACT_REDIRECT as u32;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use lanlink_common::Verdict;

/// What a program decided: a TC return code and the verdict to count.
pub(crate) struct Action {
    pub(crate) code: i32,
    pub(crate) verdict: Verdict,
}

impl Action {
    pub(crate) const fn pass(verdict: Verdict) -> Self {
        Self {
            code: TC_ACT_OK as i32,
            verdict,
        }
    }
    pub(crate) const fn redirect(verdict: Verdict) -> Self {
        Self {
            code: TC_ACT_REDIRECT as i32,
            verdict,
        }
    }
}

/// Counts the action (or the drop reason) and returns the TC code.
#[inline(always)]
fn finish(ctx: &TcContext, res: Result<Action, Verdict>) -> i32 {
    match res {
        Ok(a) => {
            stats::count(a.verdict, ctx.len());
            a.code
        }
        Err(reason) => {
            stats::count(reason, ctx.len());
            TC_ACT_SHOT as i32
        }
    }
}

/// TC ingress of a pod's host-side veth: frames the pod sends.
#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    eth::pull_headers(&ctx);
    let res = eth::from_pod(&ctx);
    finish(&ctx, res)
}

/// TC ingress of the uplink: frames from the LAN.
#[classifier]
pub fn from_lan(ctx: TcContext) -> i32 {
    eth::pull_headers(&ctx);
    let res = eth::from_lan(&ctx);
    finish(&ctx, res)
}

/// TC egress of a pod's host-side veth: frames the node's stack sends to a pod.
#[classifier]
pub fn to_pod(ctx: TcContext) -> i32 {
    eth::pull_headers(&ctx);
    let res = ipv4::to_pod(&ctx);
    finish(&ctx, res)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects code that could
    // reach it (there is no unwinding in BPF).
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
