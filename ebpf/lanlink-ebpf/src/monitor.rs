//! Who dropped what: each drop is added to its endpoint's counters
//! (`EP_DROPS`, created by the agent when it registers the endpoint), and,
//! while a `lanlinkd monitor` client listens (`MONITOR[0]` non-zero),
//! written to `DROP_EVENTS` with its addresses.

use aya_ebpf::programs::TcContext;
use lanlink_common::{DropEvent, DropReason, STATS_SLOTS};

use crate::{
    eth::{self, ETH_LEN, ETH_P_IP, ETH_P_IPV6},
    maps::{DROP_EVENTS, EP_DROPS, MONITOR},
};

/// Counts `reason` against the endpoint the frame came from (frames from
/// the LAN have none) and reports the drop to monitor clients.
#[inline(always)]
pub(crate) fn record_drop(ctx: &TcContext, reason: DropReason) {
    let ifindex = eth::skb_ifindex(ctx);
    let slot = reason.slot().index();
    if let Some(d) = EP_DROPS.get_ptr_mut(ifindex)
        && slot < STATS_SLOTS
    {
        // SAFETY: a per-CPU value, only this CPU writes it while we run;
        // the index is checked above.
        unsafe { (*d).packets[slot as usize] += 1 };
    }
    if matches!(MONITOR.get(0), Some(&0) | None) {
        return;
    }
    let mut ev = DropEvent {
        ifindex,
        reason: slot,
        len: ctx.len(),
        ..DropEvent::default()
    };
    let _ = fill(ctx, &mut ev);
    // A full ring (no reader keeping up) loses the event, never the verdict.
    let _ = DROP_EVENTS.output(ev, 0);
}

/// Copies the frame's addresses into `ev`, as far as it has them.
#[inline(always)]
fn fill(ctx: &TcContext, ev: &mut DropEvent) -> Result<(), i64> {
    ev.dst_mac = ctx.load(0)?;
    ev.src_mac = ctx.load(6)?;
    ev.ethertype = ctx.load(12)?;
    match u16::from_be_bytes(ev.ethertype) {
        ETH_P_IP => {
            let head: [u8; 20] = ctx.load(ETH_LEN)?;
            ev.ip_version = 4;
            ev.proto = head[9];
            ev.saddr[..4].copy_from_slice(&head[12..16]);
            ev.daddr[..4].copy_from_slice(&head[16..20]);
            let l4 = ETH_LEN + usize::from(head[0] & 0xf) * 4;
            let ports: [u8; 4] = ctx.load(l4)?;
            ev.sport = [ports[0], ports[1]];
            ev.dport = [ports[2], ports[3]];
        }
        ETH_P_IPV6 => {
            ev.ip_version = 6;
            ev.proto = ctx.load(ETH_LEN + 6)?;
            ev.saddr = ctx.load(ETH_LEN + 8)?;
            ev.daddr = ctx.load(ETH_LEN + 24)?;
            let ports: [u8; 4] = ctx.load(ETH_LEN + 40)?;
            ev.sport = [ports[0], ports[1]];
            ev.dport = [ports[2], ports[3]];
        }
        _ => {}
    }
    Ok(())
}
