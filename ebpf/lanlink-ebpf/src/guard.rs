//! First-hop security limits of a pod's switch port: storm control and the
//! DHCP client rate (per-endpoint GCRA state in `EP_GUARD`), and the
//! link-local control groups no pod may send to.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use lanlink_common::{DHCP_INTERVAL_NS, DHCP_WINDOW_NS, DropReason};

use crate::maps::EP_GUARD;

/// Whether `dst` is one of the IEEE 802.1 link-local control groups
/// 01:80:c2:00:00:00–0f (STP BPDUs, pause, LACP, 802.1X, LLDP): frames a
/// bridge consumes and a switch port must never accept from an end host.
#[inline(always)]
pub(crate) fn is_l2_control(dst: &[u8; 6]) -> bool {
    dst[0] == 0x01
        && dst[1] == 0x80
        && dst[2] == 0xc2
        && dst[3] == 0
        && dst[4] == 0
        && dst[5] & 0xf0 == 0
}

/// Storm control: takes one broadcast/multicast frame of the endpoint's
/// budget, or `Storm` when it is spent. An endpoint without a guard entry
/// (registered by an agent before guards existed) is not limited.
#[inline(always)]
pub(crate) fn take_group_frame(ifindex: u32) -> Result<(), DropReason> {
    let Some(g) = EP_GUARD.get_ptr_mut(ifindex) else {
        return Ok(());
    };
    // SAFETY: a valid map value pointer; racing CPUs may both pass (see
    // `EndpointGuard`), never corrupt it.
    unsafe {
        let interval = (*g).bcast_interval_ns;
        if interval == 0 {
            return Ok(());
        }
        let window = (*g).bcast_window_ns;
        if gcra(&mut (*g).bcast_tat, interval, window) {
            Ok(())
        } else {
            Err(DropReason::Storm)
        }
    }
}

/// The DHCP client rate (10/s, bursts of 20): takes one message of the
/// endpoint's budget, or `DhcpRate`.
#[inline(always)]
pub(crate) fn take_dhcp_message(ifindex: u32) -> Result<(), DropReason> {
    let Some(g) = EP_GUARD.get_ptr_mut(ifindex) else {
        return Ok(());
    };
    // SAFETY: as in `take_group_frame`.
    if unsafe { gcra(&mut (*g).dhcp_tat, DHCP_INTERVAL_NS, DHCP_WINDOW_NS) } {
        Ok(())
    } else {
        Err(DropReason::DhcpRate)
    }
}

/// GCRA: allows the event when the theoretical arrival time, moved on by
/// `interval`, stays within `window` of now, and then moves it on.
#[inline(always)]
fn gcra(tat: &mut u64, interval: u64, window: u64) -> bool {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let start = if *tat > now { *tat } else { now };
    let next = start + interval;
    if next - now > window {
        return false;
    }
    *tat = next;
    true
}
