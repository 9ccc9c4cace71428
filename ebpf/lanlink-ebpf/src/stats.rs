//! Per-CPU verdict counters.

use lanlink_common::Verdict;

use crate::maps::STATS;

/// Adds one packet of `len` bytes to `verdict`'s counter.
#[inline(always)]
pub(crate) fn count(verdict: Verdict, len: u32) {
    if let Some(c) = STATS.get_ptr_mut(verdict as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(len);
        }
    }
}
