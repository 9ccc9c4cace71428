//! The conntrack-bypass flow map (F6): reading it and expiring its entries.
//!
//! `to_pod` learns the reversed 5-tuple of every frame the node's stack
//! routes to a pod, stamped with `bpf_ktime_get_ns()`; `from_pod` steers a
//! pod's packet matching one back into the node's stack, so conntrack
//! reverses the NAT of LoadBalancer, NodePort and ClusterIP flows. The map
//! is an LRU hash of `lanlink_common::MAX_FLOWS` entries, so memory is
//! bounded, but an LRU only evicts under pressure: on a quiet node a flow
//! long gone would keep steering a later flow with the same 5-tuple (a LAN
//! client reusing a port to talk to the pod directly) through the node. The
//! agent therefore removes entries idle longer than a timeout.
//!
//! The timeout counts from the last frame the node sent to the pod in that
//! flow. A host-routed connection idle in that direction for longer than the
//! timeout loses its entry; the next frame the node sends relearns it, but a
//! pod that speaks first after such a pause replies on L2. Set the timeout
//! above the longest such idle period (default 5 minutes).
//!
//! The map is opened from its pin (`MapData::from_pin`), independently of the
//! dataplane's handles (listing it is the CLI's `flows`).

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData, MapError};
use lanlink_common::{FlowKey, FlowValue, map_names};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a flow may stay idle before the agent removes it, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Errors of flow map work.
#[derive(Debug, thiserror::Error)]
pub enum FlowsError {
    /// The pinned map could not be opened.
    #[error("cannot open the pinned flow map {path}")]
    Open {
        /// The pin.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<MapError>,
    },
    /// A map operation failed.
    #[error("flow map: cannot {what}")]
    Map {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<MapError>,
    },
}

/// The pinned `FLOWS` map.
pub struct FlowTable {
    map: HashMap<MapData, FlowKey, FlowValue>,
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn map_err(what: &'static str) -> impl FnOnce(MapError) -> FlowsError {
    move |source| FlowsError::Map {
        what,
        source: Box::new(source),
    }
}

impl FlowTable {
    /// Opens `<pin_dir>/FLOWS`.
    pub fn open(pin_dir: &Path) -> Result<Self, FlowsError> {
        let path = pin_dir.join(map_names::FLOWS);
        let open_err = |source| FlowsError::Open {
            path: path.clone(),
            source: Box::new(source),
        };
        let data = MapData::from_pin(&path).map_err(open_err)?;
        let map =
            HashMap::try_from(Map::from_map_data(data).map_err(open_err)?).map_err(open_err)?;
        Ok(Self { map })
    }

    /// Every entry. The programs keep writing while this reads, so it is a
    /// snapshot of a moving map.
    pub fn entries(&self) -> Result<Vec<(FlowKey, FlowValue)>, FlowsError> {
        self.map
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("read the entries"))
    }

    /// Removes the entries not refreshed for `idle` at monotonic time
    /// `now_ns`; returns how many it removed.
    pub fn expire(&mut self, now_ns: u64, idle: Duration) -> Result<usize, FlowsError> {
        let idle_ns = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
        let is_stale = |v: &FlowValue| now_ns.saturating_sub(v.last_seen_ns) > idle_ns;
        let stale: Vec<FlowKey> = self
            .entries()?
            .into_iter()
            .filter(|(_, v)| is_stale(v))
            .map(|(k, _)| k)
            .collect();
        let mut removed = 0;
        for key in stale {
            // Read again just before deleting: a frame may have refreshed
            // the flow since the snapshot (a narrower race, not none).
            match self.map.get(&key, 0) {
                Ok(v) if is_stale(&v) => {}
                Ok(_) | Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err("read an entry")(e)),
            }
            match self.map.remove(&key) {
                Ok(()) => removed += 1,
                // The LRU evicted it meanwhile.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("remove an entry")(e)),
            }
        }
        Ok(removed)
    }
}

/// Counters of the agent's flow expiry.
#[derive(Debug, Default)]
pub struct GcStats {
    /// Expiry passes run.
    pub runs: AtomicU64,
    /// Entries removed, in total.
    pub expired: AtomicU64,
    /// Entries left after the last pass.
    pub live: AtomicU64,
}

/// How often expiry runs for a given idle timeout: a quarter of it, between
/// 1 s and 60 s, so an entry lives at most about 1.25 timeouts.
pub fn gc_interval(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Removes idle flows every [`gc_interval`] until `shutdown`.
pub async fn run_gc(
    pin_dir: PathBuf,
    idle: Duration,
    stats: Arc<GcStats>,
    shutdown: CancellationToken,
) {
    let interval = gc_interval(idle);
    let mut table = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        if table.is_none() {
            match FlowTable::open(&pin_dir) {
                Ok(t) => table = Some(t),
                Err(e) => {
                    warn!(error = %e, "flow expiry: cannot open the flow map");
                    continue;
                }
            }
        }
        let Some(t) = table.as_mut() else { continue };
        match t.expire(monotonic_ns(), idle) {
            Ok(n) => {
                let live = t.entries().map(|e| e.len() as u64).unwrap_or(0);
                stats.runs.fetch_add(1, Ordering::Relaxed);
                stats.expired.fetch_add(n as u64, Ordering::Relaxed);
                stats.live.store(live, Ordering::Relaxed);
                if n > 0 {
                    debug!(expired = n, live, "flow expiry");
                }
            }
            Err(e) => warn!(error = %e, "flow expiry failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_a_quarter_of_the_timeout_within_bounds() {
        assert_eq!(
            gc_interval(Duration::from_secs(300)),
            Duration::from_secs(60)
        );
        assert_eq!(
            gc_interval(Duration::from_secs(120)),
            Duration::from_secs(30)
        );
        assert_eq!(gc_interval(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(
            gc_interval(Duration::from_secs(86_400)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
