//! lanlink's TC programs, one per packet path:
//!
//! - `from_pod`: TC ingress of every pod's host-side veth (what a pod sends).
//! - `from_lan`: TC ingress of the uplink (what the LAN sends).
//! - `to_pod`: TC egress of every pod's host-side veth (what the node's stack
//!   routes to a pod; the conntrack-bypass fix learns its flows there).
//!
//! Each entry point only dispatches: `programs/<path>.rs` reads top to bottom
//! as that path's decisions and returns the [`programs::Action`] to take or
//! the `DropReason` to drop for; both are counted in `STATS` in one place.
//! The protocol helpers (`eth`, `arp`, `ipv4`, `ipv6`, `nd`, `dhcp`,
//! `dhcp_guard`, `guard`, `flows`, `flood`, `redirect`, `monitor`) sit below
//! the programs and know nothing of paths.
#![no_std]
#![no_main]

mod arp;
mod dhcp;
mod dhcp_guard;
mod eth;
mod flood;
mod flows;
mod guard;
mod ipv4;
mod ipv6;
mod maps;
mod monitor;
mod nd;
mod programs;
mod redirect;
mod stats;

use aya_ebpf::{macros::classifier, programs::TcContext};

use programs::{accept, drop};

/// TC ingress of a pod's host-side veth: frames the pod sends.
#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    match programs::from_pod::try_from_pod(&ctx) {
        Ok(action) => accept(&ctx, action),
        Err(reason) => drop(&ctx, reason),
    }
}

/// TC ingress of the uplink: frames from the LAN.
#[classifier]
pub fn from_lan(ctx: TcContext) -> i32 {
    match programs::from_lan::try_from_lan(&ctx) {
        Ok(action) => accept(&ctx, action),
        Err(reason) => drop(&ctx, reason),
    }
}

/// TC egress of a pod's host-side veth: frames the node's stack sends to a pod.
#[classifier]
pub fn to_pod(ctx: TcContext) -> i32 {
    match programs::to_pod::try_to_pod(&ctx) {
        Ok(action) => accept(&ctx, action),
        Err(reason) => drop(&ctx, reason),
    }
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
