//! Per-CPU counters, one `STATS` slot per verdict and drop reason.

use lanlink_common::StatSlot;

use crate::maps::STATS;

/// Adds one packet of `len` bytes to `slot`'s counter.
#[inline(always)]
pub(crate) fn count(slot: StatSlot, len: u32) {
    if let Some(c) = STATS.get_ptr_mut(slot.index()) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(len);
        }
    }
}
