//! The conntrack-bypass fix (F6): flows the node's stack delivers to a pod
//! (DNAT by kube-proxy or a load balancer) are learnt on to-pod, and the
//! pod's replies of those flows are steered back up the stack so conntrack
//! can reverse the NAT, instead of leaving on L2 with the pod's address.

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use lanlink_common::{FlowKey, FlowValue, Verdict, config};

use crate::{ipv4::Ipv4, maps};

/// Whether the fix is on (`CONFIG_FLAGS`).
#[inline(always)]
pub(crate) fn enabled() -> bool {
    maps::CONFIG_FLAGS.load() & config::FLOW_FIX != 0
}

/// Whether a packet a pod sends is the reply of a learnt flow.
#[inline(always)]
pub(crate) fn is_reply_of_learnt(ip: &Ipv4) -> bool {
    let key = FlowKey {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport: ip.sport,
        dport: ip.dport,
        proto: ip.proto,
        _pad: [0; 3],
    };
    // SAFETY: read-only use of the value.
    unsafe { maps::FLOWS.get(key) }.is_some()
}

/// Learns (or refreshes) the flow of a packet the stack sends into the pod
/// behind host veth `ifindex`, keyed as the pod's reply will look. Returns
/// the verdict to count; the frame is delivered either way.
#[inline(always)]
pub(crate) fn learn(ip: &Ipv4, ifindex: u32) -> Verdict {
    let key = FlowKey {
        saddr: ip.daddr,
        daddr: ip.saddr,
        sport: ip.dport,
        dport: ip.sport,
        proto: ip.proto,
        _pad: [0; 3],
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // A known flow is refreshed in place: an LRU update would take a fresh
    // node and swap it in under the bucket lock for every frame.
    if let Some(v) = maps::FLOWS.get_ptr_mut(key) {
        // SAFETY: a valid map value; racing writers store the same values.
        unsafe {
            if (*v).ifindex == ifindex {
                (*v).last_seen_ns = now;
                return Verdict::FlowLearnt;
            }
        }
    }
    let value = FlowValue {
        last_seen_ns: now,
        ifindex,
        _pad: 0,
    };
    // An LRU map evicts the oldest flow when full, so a failure is rare; the
    // frame itself is still delivered, the failure is counted.
    if maps::FLOWS.insert(key, value, 0).is_err() {
        return Verdict::FlowLearnFailed;
    }
    Verdict::FlowLearnt
}
