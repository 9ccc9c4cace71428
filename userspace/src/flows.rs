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
//! This module is the map's one owner. [`FlowOwner::run`] walks it: every
//! [`gc_interval`] it removes idle entries and the entries of deleted
//! endpoints, and keeps the number of live entries ([`GcStats`]), so a
//! metrics scrape reads a counter and never the 65,536-entry map. A DEL only
//! queues the host veth's ifindex through the [`Flows`] handle
//! ([`Flows::forget`]); the owner purges its flows in a pass started
//! [`PURGE_DEBOUNCE`] later. The CLI, when the agent is down, lists the map
//! through [`read_pinned`].
//!
//! The map is opened from its pin (`MapData::from_pin`), independently of the
//! dataplane's handles.

use std::{
    collections::HashMap as StdHashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData, MapError};
use lanlink_common::{FlowKey, FlowValue, map_names};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a flow may stay idle before the agent removes it, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long the owner waits after a purge request before its pass, so the
/// DELs of a burst (a node drained, a GC) share one walk of the map.
pub const PURGE_DEBOUNCE: Duration = Duration::from_millis(100);

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

/// The pinned `FLOWS` map, opened only here.
struct FlowTable {
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
    fn open(pin_dir: &Path) -> Result<Self, FlowsError> {
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
    fn entries(&self) -> Result<Vec<(FlowKey, FlowValue)>, FlowsError> {
        self.map
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("read the entries"))
    }
}

/// The map operations of a pass: the pinned map, or a fake in tests.
pub trait FlowMap: Send + 'static {
    /// Every entry (a snapshot of a moving map).
    fn entries(&self) -> Result<Vec<(FlowKey, FlowValue)>, FlowsError>;
    /// One entry, if present.
    fn get(&self, key: &FlowKey) -> Result<Option<FlowValue>, FlowsError>;
    /// Removes one entry; `false` if it was gone already.
    fn remove(&mut self, key: &FlowKey) -> Result<bool, FlowsError>;
}

impl FlowMap for FlowTable {
    fn entries(&self) -> Result<Vec<(FlowKey, FlowValue)>, FlowsError> {
        FlowTable::entries(self)
    }

    fn get(&self, key: &FlowKey) -> Result<Option<FlowValue>, FlowsError> {
        match self.map.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err("read an entry")(e)),
        }
    }

    fn remove(&mut self, key: &FlowKey) -> Result<bool, FlowsError> {
        match self.map.remove(key) {
            Ok(()) => Ok(true),
            // The LRU evicted it meanwhile.
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_err("remove an entry")(e)),
        }
    }
}

/// One pass over `map` at monotonic time `now_ns`: removes the entries idle
/// for longer than `idle` and those [`fate`] picks for `purges`, and counts
/// what is left. One walk, whatever the map holds.
pub fn pass(
    map: &mut impl FlowMap,
    now_ns: u64,
    idle: Duration,
    purges: &PurgeSet,
) -> Result<PassCounts, FlowsError> {
    let idle_ns = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
    let entries = map.entries()?;
    let mut counts = PassCounts {
        live: entries.len() as u64,
        ..PassCounts::default()
    };
    for (key, value) in entries {
        if fate(&value, now_ns, idle_ns, purges) == Fate::Keep {
            continue;
        }
        // Read again just before deleting: a frame may have refreshed the
        // flow since the snapshot (a narrower race, not none).
        let why = match map.get(&key)? {
            Some(fresh) => fate(&fresh, now_ns, idle_ns, purges),
            None => {
                counts.live = counts.live.saturating_sub(1);
                continue;
            }
        };
        if why == Fate::Keep {
            continue;
        }
        if map.remove(&key)? {
            match why {
                Fate::Expire => counts.expired += 1,
                Fate::Purge | Fate::Keep => counts.purged += 1,
            }
        }
        counts.live = counts.live.saturating_sub(1);
    }
    Ok(counts)
}

/// Reads every entry of the pinned map under `pin_dir`: the CLI's listing
/// (`lanlinkd flows`, `GET /v1/flows`), the one reader besides the owner.
pub fn read_pinned(pin_dir: &Path) -> Result<Vec<(FlowKey, FlowValue)>, FlowsError> {
    FlowTable::open(pin_dir)?.entries()
}

/// The endpoints whose flows are to be purged: host veth ifindex → the
/// monotonic time of the DEL. Only flows last seen at or before that time
/// are purged, so a new endpoint that got the same ifindex keeps its own.
pub type PurgeSet = StdHashMap<u32, u64>;

/// What a pass does with one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Still in use.
    Keep,
    /// Idle for longer than the timeout.
    Expire,
    /// Learnt through a deleted endpoint before its DEL.
    Purge,
}

/// The fate of a flow `value` at monotonic time `now_ns`.
pub fn fate(value: &FlowValue, now_ns: u64, idle_ns: u64, purges: &PurgeSet) -> Fate {
    match purges.get(&value.ifindex) {
        Some(&deleted_at) if value.last_seen_ns <= deleted_at => Fate::Purge,
        _ if now_ns.saturating_sub(value.last_seen_ns) > idle_ns => Fate::Expire,
        _ => Fate::Keep,
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassCounts {
    /// Idle entries removed.
    pub expired: u64,
    /// Entries of deleted endpoints removed.
    pub purged: u64,
    /// Entries left (as the pass saw them; the programs keep adding).
    pub live: u64,
}

/// Counters of the owner's passes, read by metrics.
#[derive(Debug, Default)]
pub struct GcStats {
    /// Passes run.
    pub runs: AtomicU64,
    /// Idle entries removed, in total.
    pub expired: AtomicU64,
    /// Entries of deleted endpoints removed, in total.
    pub purged: AtomicU64,
    /// Entries left after the last pass (meaningful once `runs` > 0).
    pub live: AtomicU64,
}

impl GcStats {
    /// Passes run.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Idle entries removed, in total.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Entries of deleted endpoints removed, in total.
    pub fn purged(&self) -> u64 {
        self.purged.load(Ordering::Relaxed)
    }

    /// Entries of the map after the last pass; `None` before the first.
    pub fn live(&self) -> Option<u64> {
        (self.runs.load(Ordering::Acquire) > 0).then(|| self.live.load(Ordering::Relaxed))
    }

    fn record(&self, c: PassCounts) {
        self.expired.fetch_add(c.expired, Ordering::Relaxed);
        self.purged.fetch_add(c.purged, Ordering::Relaxed);
        self.live.store(c.live, Ordering::Relaxed);
        // Last, so `live()` never shows a count before its pass is stored.
        self.runs.fetch_add(1, Ordering::Release);
    }
}

/// How often expiry runs for a given idle timeout: a quarter of it, between
/// 1 s and 60 s, so an entry lives at most about 1.25 timeouts.
pub fn gc_interval(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The handle to the flow map's owner (cheap to clone): where DELs queue
/// their purges.
#[derive(Clone, Debug)]
pub struct Flows {
    purges: mpsc::UnboundedSender<(u32, u64)>,
}

/// The owner of the flow map, before it runs: see [`FlowOwner::run`].
#[derive(Debug)]
pub struct FlowOwner {
    requests: mpsc::UnboundedReceiver<(u32, u64)>,
}

/// A handle and the owner it talks to. The handle can be given out before
/// the owner is started; requests queue until it runs.
pub fn owner() -> (Flows, FlowOwner) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Flows { purges: tx }, FlowOwner { requests: rx })
}

impl Flows {
    /// Has the owner remove the flows learnt through host veth `ifindex`
    /// until now. Call it once the programs are detached from the veth
    /// (nothing learns through it any more). Returns at once: the purge runs
    /// in the owner's pass [`PURGE_DEBOUNCE`] from now, or right after the
    /// pass in progress, whichever is later.
    pub fn forget(&self, ifindex: u32) {
        // The owner is gone only at shutdown; nothing left to purge then.
        let _ = self.purges.send((ifindex, monotonic_ns()));
    }
}

impl FlowOwner {
    /// Owns `<pin_dir>/FLOWS` until `shutdown`: a first pass at once, then
    /// one every [`gc_interval`]`(idle)`, and one [`PURGE_DEBOUNCE`] after a
    /// [`Flows::forget`]; each pass's counts go to `stats`.
    pub async fn run(
        self,
        pin_dir: PathBuf,
        idle: Duration,
        stats: Arc<GcStats>,
        shutdown: CancellationToken,
    ) {
        self.run_with(move || FlowTable::open(&pin_dir), idle, stats, shutdown)
            .await;
    }

    /// [`run`](Self::run) over the map `open` gives (tests use a fake).
    pub async fn run_with<M: FlowMap>(
        self,
        open: impl Fn() -> Result<M, FlowsError> + Clone + Send + 'static,
        idle: Duration,
        stats: Arc<GcStats>,
        shutdown: CancellationToken,
    ) {
        own(open, idle, stats, self.requests, shutdown).await;
    }
}

/// The owner task.
async fn own<M: FlowMap>(
    open: impl Fn() -> Result<M, FlowsError> + Clone + Send + 'static,
    idle: Duration,
    stats: Arc<GcStats>,
    mut requests: mpsc::UnboundedReceiver<(u32, u64)>,
    shutdown: CancellationToken,
) {
    let interval = gc_interval(idle);
    let mut table: Option<M> = None;
    let mut purges = PurgeSet::new();
    let mut next_pass = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            Some((ifindex, at)) = requests.recv() => {
                add_purge(&mut purges, ifindex, at);
                next_pass = next_pass.min(Instant::now() + PURGE_DEBOUNCE);
                continue;
            }
            _ = tokio::time::sleep_until(next_pass) => {}
        }
        while let Ok((ifindex, at)) = requests.try_recv() {
            add_purge(&mut purges, ifindex, at);
        }
        next_pass = Instant::now() + interval;
        // The walk makes 65,536 map syscalls on a full map: off the async
        // workers.
        let open = open.clone();
        let batch = purges.clone();
        let held = table.take();
        let joined = tokio::task::spawn_blocking({
            let batch = batch.clone();
            move || {
                let mut t = match held {
                    Some(t) => t,
                    None => open()?,
                };
                let counts = pass(&mut t, monotonic_ns(), idle, &batch);
                Ok::<_, FlowsError>((t, counts))
            }
        })
        .await;
        match joined {
            Ok(Ok((t, Ok(counts)))) => {
                table = Some(t);
                // Done: a request queued meanwhile has a later time and
                // stays (add_purge kept the latest per ifindex).
                purges.retain(|ifindex, at| batch.get(ifindex) != Some(at));
                stats.record(counts);
                if counts.expired + counts.purged > 0 {
                    debug!(
                        expired = counts.expired,
                        purged = counts.purged,
                        live = counts.live,
                        "flow map pass"
                    );
                }
            }
            Ok(Ok((t, Err(e)))) => {
                table = Some(t);
                warn!(error = %e, "flow map pass failed");
            }
            Ok(Err(e)) => warn!(error = %e, "flow map pass: cannot open the flow map"),
            Err(e) => warn!(error = %e, "flow map pass did not finish"),
        }
    }
}

/// Records a purge request, keeping the latest DEL time per ifindex.
fn add_purge(purges: &mut PurgeSet, ifindex: u32, at: u64) {
    let slot = purges.entry(ifindex).or_insert(at);
    *slot = (*slot).max(at);
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

    fn value(ifindex: u32, last_seen_ns: u64) -> FlowValue {
        FlowValue {
            last_seen_ns,
            ifindex,
            _pad: 0,
        }
    }

    fn key(n: u8) -> FlowKey {
        FlowKey {
            saddr: [198, 18, 0, n],
            daddr: [198, 18, 1, 1],
            sport: [0, 80],
            dport: [0x30, 0x39],
            proto: 6,
            _pad: [0; 3],
        }
    }

    #[test]
    fn purges_apply_to_flows_seen_up_to_the_del_only() {
        let purges: PurgeSet = [(7, 1_000)].into();
        let idle = 10_000;
        // Learnt through the deleted veth before (or at) its DEL.
        assert_eq!(fate(&value(7, 900), 2_000, idle, &purges), Fate::Purge);
        assert_eq!(fate(&value(7, 1_000), 2_000, idle, &purges), Fate::Purge);
        // A new endpoint that got ifindex 7 after the DEL keeps its flows.
        assert_eq!(fate(&value(7, 1_001), 2_000, idle, &purges), Fate::Keep);
        // Other endpoints are not touched.
        assert_eq!(fate(&value(8, 900), 2_000, idle, &purges), Fate::Keep);
        // Idle flows expire, purged or not.
        assert_eq!(fate(&value(8, 900), 20_000, idle, &purges), Fate::Expire);
        assert_eq!(fate(&value(7, 5_000), 20_000, idle, &purges), Fate::Expire);
        // Exactly the timeout is not idle yet.
        assert_eq!(fate(&value(8, 0), idle, idle, &PurgeSet::new()), Fate::Keep);
    }

    #[test]
    fn a_purge_keeps_the_latest_del_time_per_ifindex() {
        let mut purges = PurgeSet::new();
        add_purge(&mut purges, 7, 500);
        add_purge(&mut purges, 7, 300);
        add_purge(&mut purges, 9, 100);
        assert_eq!(purges, [(7, 500), (9, 100)].into());
    }

    /// A flow map in memory.
    #[derive(Clone, Default)]
    struct FakeMap(Arc<std::sync::Mutex<StdHashMap<FlowKey, FlowValue>>>);

    impl FakeMap {
        fn with(entries: &[(FlowKey, FlowValue)]) -> Self {
            let m = Self::default();
            m.0.lock().unwrap().extend(entries.iter().copied());
            m
        }

        fn keys(&self) -> Vec<FlowKey> {
            let mut k: Vec<_> = self.0.lock().unwrap().keys().copied().collect();
            k.sort_by_key(|k| k.saddr);
            k
        }
    }

    impl FlowMap for FakeMap {
        fn entries(&self) -> Result<Vec<(FlowKey, FlowValue)>, FlowsError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect())
        }

        fn get(&self, key: &FlowKey) -> Result<Option<FlowValue>, FlowsError> {
            Ok(self.0.lock().unwrap().get(key).copied())
        }

        fn remove(&mut self, key: &FlowKey) -> Result<bool, FlowsError> {
            Ok(self.0.lock().unwrap().remove(key).is_some())
        }
    }

    #[test]
    fn a_pass_removes_purged_and_idle_flows_and_counts_the_rest() {
        let mut map = FakeMap::with(&[
            (key(1), value(7, 900)),   // purged
            (key(2), value(7, 1_500)), // ifindex reused after the DEL
            (key(3), value(8, 1_900)), // live
            (key(4), value(8, 10)),    // idle
        ]);
        let counts = pass(
            &mut map,
            2_000,
            Duration::from_nanos(1_000),
            &[(7, 1_000)].into(),
        )
        .unwrap();
        assert_eq!(
            counts,
            PassCounts {
                expired: 1,
                purged: 1,
                live: 2
            }
        );
        assert_eq!(map.keys(), vec![key(2), key(3)]);
    }

    #[test]
    fn the_live_count_is_unknown_until_the_first_pass() {
        let stats = GcStats::default();
        assert_eq!(stats.live(), None);
        stats.record(PassCounts {
            expired: 2,
            purged: 1,
            live: 0,
        });
        stats.record(PassCounts {
            expired: 1,
            purged: 0,
            live: 5,
        });
        assert_eq!(
            (stats.live(), stats.runs(), stats.expired(), stats.purged()),
            (Some(5), 2, 3, 1)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_owner_purges_a_deleted_endpoint_within_a_second() {
        let now = monotonic_ns();
        let map = FakeMap::with(&[(key(1), value(7, now)), (key(2), value(8, now))]);
        let shutdown = CancellationToken::new();
        let opened = map.clone();
        let stats = Arc::new(GcStats::default());
        let (flows, owner) = owner();
        // A long timeout: only the purge can remove anything.
        tokio::spawn(owner.run_with(
            move || Ok(opened.clone()),
            Duration::from_secs(3_600),
            Arc::clone(&stats),
            shutdown.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        while stats.live().is_none() {
            assert!(Instant::now() < deadline, "no first pass");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(stats.live(), Some(2));

        let start = Instant::now();
        flows.forget(7);
        // A new endpoint reusing ifindex 7 learns a flow after the DEL.
        map.0
            .lock()
            .unwrap()
            .insert(key(3), value(7, monotonic_ns() + 1));
        while stats.purged() == 0 {
            assert!(start.elapsed() < Duration::from_secs(1), "no purge in 1 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(start.elapsed() >= PURGE_DEBOUNCE);
        assert_eq!(map.keys(), vec![key(2), key(3)]);
        assert_eq!(stats.live(), Some(2));
        assert_eq!(stats.runs(), 2);
        shutdown.cancel();
    }
}
