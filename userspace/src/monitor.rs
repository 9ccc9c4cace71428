//! `lanlinkd monitor`: the frames the dataplane drops, live (issue 12; like
//! `cilium monitor --type drop`).
//!
//! The programs write a [`DropEvent`] to the `DROP_EVENTS` ring buffer for
//! each drop while `MONITOR[0]` is non-zero (`ebpf/lanlink-ebpf/src/monitor.rs`),
//! so a node nobody watches pays one array lookup per drop and nothing more.
//! [`Monitor`] is the agent's one owner of both pinned maps. Each
//! `GET /v1/monitor` client holds a [`Subscription`], and `MONITOR[0]` is the
//! number of subscriptions: written on every subscribe and unsubscribe, back
//! to 0 when the last one ends, and set to 0 for good when the agent stops
//! ([`Monitor::stop`]; its streams end then too, or the API's graceful
//! shutdown would wait for them forever).
//!
//! One reader task waits on the ring buffer with [`AsyncFd`] (epoll on the
//! map's fd), decodes each event into a [`DropEventInfo`] ([`decode`]; the pod
//! is resolved from the agent's endpoints by the host veth's ifindex),
//! encodes it once as a JSON line and fans it out through a `broadcast`
//! channel. A client that reads too slowly is skipped past the events the
//! channel no longer holds and told how many with a [`LostEvents`] line; it
//! never slows the reader or the other clients. The reader is started with
//! the first subscription and runs until the agent stops: between clients
//! the programs write nothing, so it sleeps in epoll, and a second reader
//! never competes with it for the ring's consumer position.
//!
//! A client that goes away is noticed without an event to write: hyper
//! reads EOF on the connection while the response is still streaming (the
//! server does not allow half-closed HTTP/1 connections), abandons the
//! response and drops its body, and with it the [`Subscription`].

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{Array, Map, MapData, MapError, RingBuf};
use bytes::Bytes;
use lanlink_api::{
    EndpointInfo, Mac,
    types::{DropEventInfo, LostEvents},
};
use lanlink_common::{DropEvent, StatSlot, map_names};
use serde::Serialize;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::broadcast::{self, error::RecvError},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

/// Lines the fan-out keeps for clients that have not read them yet; a
/// client further behind loses the oldest (and is told).
pub const BACKLOG: usize = 1024;

/// How long the reader trusts its copy of the agent's endpoints.
const ENDPOINTS_FRESH: Duration = Duration::from_secs(1);

/// How soon after a copy an event from an interface it lacks (a pod added
/// since, or the uplink) may make the reader copy the endpoints again.
const ENDPOINTS_RETRY: Duration = Duration::from_millis(100);

/// Errors of the monitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A pinned map could not be opened (the agent's dataplane pins both).
    #[error("cannot open the pinned map {path}")]
    Open {
        /// The pin.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<MapError>,
    },
    /// `MONITOR[0]` could not be written.
    #[error("cannot set the monitor client count (MONITOR[0]) to {clients}")]
    Switch {
        /// The count.
        clients: u32,
        /// Why.
        #[source]
        source: Box<MapError>,
    },
    /// The ring buffer's fd could not be registered with the runtime.
    #[error("cannot watch the ring buffer {path}")]
    Watch {
        /// The pin.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The agent is stopping.
    #[error("the agent is stopping")]
    Stopping,
}

/// The switch the programs read: `MONITOR[0]`, the number of clients. A
/// trait so the bookkeeping is tested without a kernel.
pub trait Switch: Send + 'static {
    /// Sets `MONITOR[0]` to `clients` (0: the programs stop reporting).
    fn set_clients(&mut self, clients: u32) -> Result<(), MonitorError>;
}

/// The pinned `MONITOR` array.
pub struct MonitorMap(Array<MapData, u32>);

impl Switch for MonitorMap {
    fn set_clients(&mut self, clients: u32) -> Result<(), MonitorError> {
        self.0.set(0, clients, 0).map_err(|e| MonitorError::Switch {
            clients,
            source: Box::new(e),
        })
    }
}

/// What a reader publishes to: the fan-out, and the signal to stop.
#[derive(Clone, Debug)]
pub struct Feed {
    lines: broadcast::Sender<Bytes>,
    stop: CancellationToken,
}

impl Feed {
    /// Whether any client listens (nothing to decode otherwise).
    fn wanted(&self) -> bool {
        self.lines.receiver_count() > 0
    }

    /// Sends `info` to every client.
    fn publish(&self, info: &DropEventInfo) {
        // Only fails when nobody listens any more: nothing lost.
        let _ = self.lines.send(json_line(info));
    }
}

struct State<S> {
    /// Subscriptions alive.
    clients: u32,
    /// Opened with the first subscription; gone once stopped.
    switch: Option<S>,
}

/// The agent's drop monitor: counts its clients in `MONITOR[0]` and fans
/// the decoded events out to them. One per agent ([`agent_monitor`]).
pub struct Monitor<S: Switch = MonitorMap> {
    state: Mutex<State<S>>,
    lines: broadcast::Sender<Bytes>,
    stop: CancellationToken,
}

impl<S: Switch> Default for Monitor<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Switch> Monitor<S> {
    /// A monitor without clients; its maps are opened with the first one.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                clients: 0,
                switch: None,
            }),
            lines: broadcast::channel(BACKLOG).0,
            stop: CancellationToken::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a client and sets `MONITOR[0]` to the new count. The first time
    /// (or after a failed first time), `open` opens the switch and starts
    /// whatever feeds the events into the [`Feed`] it gets.
    pub fn subscribe(
        self: &Arc<Self>,
        open: impl FnOnce(Feed) -> Result<S, MonitorError>,
    ) -> Result<Subscription<S>, MonitorError> {
        let mut state = self.state();
        if self.stop.is_cancelled() {
            return Err(MonitorError::Stopping);
        }
        let clients = state.clients + 1;
        let switch = match &mut state.switch {
            Some(switch) => switch,
            none => none.insert(open(Feed {
                lines: self.lines.clone(),
                stop: self.stop.clone(),
            })?),
        };
        // Listening before the programs report: no event is missed.
        let lines = self.lines.subscribe();
        switch.set_clients(clients)?;
        state.clients = clients;
        debug!(clients, "a monitor client subscribed");
        Ok(Subscription {
            monitor: Arc::clone(self),
            lines,
        })
    }

    /// Removes a client ([`Subscription`]'s drop).
    fn leave(&self) {
        let mut state = self.state();
        state.clients = state.clients.saturating_sub(1);
        let clients = state.clients;
        debug!(clients, "a monitor client left");
        if let Some(switch) = &mut state.switch
            && let Err(e) = switch.set_clients(clients)
        {
            warn!(error = %e, "the programs may go on reporting drops nobody reads");
        }
    }

    /// Stops for good (the agent is stopping): `MONITOR[0]` is set to 0,
    /// every client's stream ends, the reader stops, and no one may
    /// subscribe any more.
    pub fn stop(&self) {
        let mut state = self.state();
        self.stop.cancel();
        if let Some(mut switch) = state.switch.take()
            && let Err(e) = switch.set_clients(0)
        {
            warn!(error = %e, "the programs may go on reporting drops nobody reads");
        }
    }

    /// Calls [`Self::stop`] when `shutdown` fires.
    pub fn stop_at(self: &Arc<Self>, shutdown: CancellationToken) {
        let monitor = Arc::clone(self);
        tokio::spawn(async move {
            shutdown.cancelled().await;
            monitor.stop();
        });
    }

    /// Clients subscribed now.
    pub fn clients(&self) -> u32 {
        self.state().clients
    }
}

impl Monitor<MonitorMap> {
    /// [`Self::subscribe`] to the maps pinned under `pin_dir`, resolving
    /// pods with `endpoints` (the agent's endpoints).
    pub fn subscribe_pinned(
        self: &Arc<Self>,
        pin_dir: &Path,
        endpoints: impl Fn() -> Vec<EndpointInfo> + Send + Sync + 'static,
    ) -> Result<Subscription, MonitorError> {
        self.subscribe(|feed| {
            let switch = open_pinned(pin_dir, map_names::MONITOR, Array::try_from)?;
            let ring_path = pin_dir.join(map_names::DROP_EVENTS);
            let mut ring = open_pinned(pin_dir, map_names::DROP_EVENTS, RingBuf::try_from)?;
            // Events a previous agent's clients left unread are stale.
            let mut stale = 0_u32;
            while ring.next().is_some() {
                stale += 1;
            }
            if stale > 0 {
                debug!(stale, "skipped stale drop events");
            }
            // SAFETY: the ring buffer owns the map's fd (through its
            // MapData), which stays open and the same while the AsyncFd
            // owns the ring buffer.
            let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                .map_err(|e| MonitorError::Watch {
                    path: ring_path,
                    source: e.into(),
                })?;
            tokio::spawn(read_ring(ring, feed, Endpoints::new(endpoints)));
            Ok(MonitorMap(switch))
        })
    }
}

/// The map pinned as `name` under `pin_dir`, as `T`.
fn open_pinned<T>(
    pin_dir: &Path,
    name: &str,
    convert: impl FnOnce(Map) -> Result<T, MapError>,
) -> Result<T, MonitorError> {
    let path = pin_dir.join(name);
    MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .and_then(convert)
        .map_err(|e| MonitorError::Open {
            path,
            source: Box::new(e),
        })
}

/// The agent's monitor: one per process, as the pinned maps are one per
/// node. The API's handler subscribes to it; `main` stops it at shutdown.
pub fn agent_monitor() -> &'static Arc<Monitor> {
    static MONITOR: OnceLock<Arc<Monitor>> = OnceLock::new();
    MONITOR.get_or_init(|| Arc::new(Monitor::new()))
}

/// One client of a [`Monitor`]; dropping it unsubscribes.
pub struct Subscription<S: Switch = MonitorMap> {
    monitor: Arc<Monitor<S>>,
    lines: broadcast::Receiver<Bytes>,
}

impl<S: Switch> Subscription<S> {
    /// The next line for this client: a drop event, or a [`LostEvents`]
    /// note when it fell behind; `None` once the monitor stopped.
    pub async fn next(&mut self) -> Option<Bytes> {
        tokio::select! {
            biased;
            () = self.monitor.stop.cancelled() => None,
            line = self.lines.recv() => match line {
                Ok(line) => Some(line),
                Err(RecvError::Lagged(lost)) => Some(json_line(&LostEvents { lost })),
                Err(RecvError::Closed) => None,
            },
        }
    }

    /// The HTTP body of `GET /v1/monitor`: its lines until the monitor
    /// stops; dropping the body (the client went away) unsubscribes.
    pub fn into_body(self) -> axum::body::Body {
        let lines = futures::stream::unfold(self, |mut sub| async move {
            let line = sub.next().await?;
            Some((Ok::<_, Infallible>(line), sub))
        });
        axum::body::Body::from_stream(lines)
    }
}

impl<S: Switch> Drop for Subscription<S> {
    fn drop(&mut self) {
        self.monitor.leave();
    }
}

/// `v` as one line of JSON.
fn json_line<T: Serialize>(v: &T) -> Bytes {
    // These types always encode (no maps, no non-string keys); were one not
    // to, the client would get a blank line, which it skips.
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The wall clock in Unix milliseconds.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads the ring buffer until the monitor stops.
async fn read_ring(mut ring: AsyncFd<RingBuf<MapData>>, feed: Feed, mut endpoints: Endpoints) {
    loop {
        let mut ready = tokio::select! {
            () = feed.stop.cancelled() => return,
            ready = ring.readable_mut() => match ready {
                Ok(ready) => ready,
                Err(e) => {
                    error!(error = %e, "cannot wait on the drop event ring buffer; monitor clients get no more events");
                    return;
                }
            },
        };
        let time_ms = unix_ms();
        let ring = ready.get_inner_mut();
        while let Some(item) = ring.next() {
            let Some(event) = parse(&item) else {
                warn!(
                    len = item.len(),
                    "skipped a drop event of an unexpected size"
                );
                continue;
            };
            drop(item);
            if feed.wanted() {
                let endpoint = endpoints.get(event.ifindex);
                let mut info = decode(&event, time_ms, endpoint);
                if info.host_veth.is_none() {
                    info.host_veth = endpoints.name(event.ifindex);
                }
                feed.publish(&info);
            }
        }
        ready.clear_ready();
    }
}

/// A ring buffer record as the programs wrote it.
fn parse(record: &[u8]) -> Option<DropEvent> {
    if record.len() < size_of::<DropEvent>() {
        return None;
    }
    // SAFETY: the record holds at least one DropEvent; DropEvent is
    // repr(C) plain old data (integers and byte arrays, no padding), so any
    // bytes are a valid value, and the read is unaligned.
    Some(unsafe { record.as_ptr().cast::<DropEvent>().read_unaligned() })
}

/// `event` as the API shows it, read at `time_ms`, from `endpoint` (the
/// pod whose host veth has the event's ifindex), if any.
pub fn decode(event: &DropEvent, time_ms: u64, endpoint: Option<&EndpointInfo>) -> DropEventInfo {
    let reason = StatSlot::from_index(event.reason).map_or_else(
        || format!("unknown_{}", event.reason),
        |slot| slot.label().to_owned(),
    );
    let v4 = |a: &[u8; 16]| IpAddr::from(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
    let (src, dst) = match event.ip_version {
        4 => (Some(v4(&event.saddr)), Some(v4(&event.daddr))),
        6 => (
            Some(IpAddr::from(Ipv6Addr::from(event.saddr))),
            Some(IpAddr::from(Ipv6Addr::from(event.daddr))),
        ),
        _ => (None, None),
    };
    let proto = src.is_some().then_some(event.proto);
    let (mut sport, mut dport, mut icmp_type, mut icmp_code) = (None, None, None, None);
    match proto {
        // TCP, UDP, SCTP: the ports.
        Some(6 | 17 | 132) => {
            sport = Some(u16::from_be_bytes(event.sport));
            dport = Some(u16::from_be_bytes(event.dport));
        }
        // ICMP, ICMPv6: the header starts with type and code.
        Some(1 | 58) => {
            icmp_type = Some(event.sport[0]);
            icmp_code = Some(event.sport[1]);
        }
        _ => {}
    }
    DropEventInfo {
        time_ms,
        reason,
        ifindex: event.ifindex,
        host_veth: endpoint.map(|e| e.host_veth.clone()),
        namespace: endpoint.and_then(|e| e.pod.namespace.clone()),
        pod: endpoint.and_then(|e| e.pod.name.clone()),
        container_id: endpoint.map(|e| e.container_id.clone()),
        ifname: endpoint.map(|e| e.ifname.clone()),
        src_mac: Mac::from(event.src_mac),
        dst_mac: Mac::from(event.dst_mac),
        ethertype: format!("0x{:04x}", u16::from_be_bytes(event.ethertype)),
        src,
        dst,
        proto,
        sport,
        dport,
        icmp_type,
        icmp_code,
        len: event.len,
    }
}

/// The agent's endpoints by host-veth ifindex, as the reader sees them: a
/// copy taken at most every [`ENDPOINTS_FRESH`] (sooner for an unknown
/// interface, but not within [`ENDPOINTS_RETRY`]), so a burst of drops does
/// not copy the endpoint table per event.
struct Endpoints {
    source: Box<dyn Fn() -> Vec<EndpointInfo> + Send + Sync>,
    by_ifindex: HashMap<u32, EndpointInfo>,
    /// Names of other interfaces (the uplink), cleared with each copy.
    names: HashMap<u32, Option<String>>,
    taken: Option<Instant>,
}

impl Endpoints {
    fn new(source: impl Fn() -> Vec<EndpointInfo> + Send + Sync + 'static) -> Self {
        Self {
            source: Box::new(source),
            by_ifindex: HashMap::new(),
            names: HashMap::new(),
            taken: None,
        }
    }

    /// The endpoint whose host veth is `ifindex`.
    fn get(&mut self, ifindex: u32) -> Option<&EndpointInfo> {
        let age = self.taken.map(|t| t.elapsed());
        let stale = age.is_none_or(|age| {
            age >= ENDPOINTS_FRESH
                || (age >= ENDPOINTS_RETRY && !self.by_ifindex.contains_key(&ifindex))
        });
        if stale {
            self.by_ifindex = (self.source)()
                .into_iter()
                .map(|e| (e.host_ifindex, e))
                .collect();
            self.names.clear();
            self.taken = Some(Instant::now());
        }
        self.by_ifindex.get(&ifindex)
    }

    /// The name of interface `ifindex`, which is no endpoint's.
    fn name(&mut self, ifindex: u32) -> Option<String> {
        self.names
            .entry(ifindex)
            .or_insert_with(|| {
                nix::net::if_::if_indextoname(ifindex)
                    .ok()
                    .and_then(|n| n.into_string().ok())
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use lanlink_api::types::MonitorLine;
    use lanlink_common::DropReason;

    use super::*;

    /// A switch that records every count written (and can refuse).
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<u32>>>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Recorder {
        fn writes(&self) -> Vec<u32> {
            self.writes.lock().unwrap().clone()
        }

        fn last(&self) -> Option<u32> {
            self.writes().last().copied()
        }
    }

    impl Switch for Recorder {
        fn set_clients(&mut self, clients: u32) -> Result<(), MonitorError> {
            if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(MonitorError::Switch {
                    clients,
                    source: Box::new(MapError::OutOfBounds {
                        index: 0,
                        max_entries: 0,
                    }),
                });
            }
            self.writes.lock().unwrap().push(clients);
            Ok(())
        }
    }

    /// A monitor over `rec`; the feed it was opened with lands in `feed`.
    fn subscribe(
        m: &Arc<Monitor<Recorder>>,
        rec: &Recorder,
        feed: &Arc<Mutex<Option<Feed>>>,
    ) -> Result<Subscription<Recorder>, MonitorError> {
        m.subscribe(|f| {
            *feed.lock().unwrap() = Some(f);
            Ok(rec.clone())
        })
    }

    fn endpoint() -> EndpointInfo {
        serde_json::from_value(serde_json::json!({
            "containerId": "c0ffee", "network": "lan", "ifname": "eth0",
            "netns": "/run/netns/web", "pod": {"namespace": "default", "name": "web"},
            "hostVeth": "ll0123456789ab", "hostIfindex": 7, "mac": "02:00:00:00:00:01",
            "address": "198.18.0.100/24", "mode": "primary"
        }))
        .unwrap()
    }

    #[test]
    fn decodes_an_ipv4_drop_of_a_pod() {
        let mut ev = DropEvent {
            ifindex: 7,
            reason: DropReason::SpoofIp.slot().index(),
            dst_mac: [0xff; 6],
            src_mac: [2, 0, 0, 0, 0, 1],
            ethertype: [0x08, 0x00],
            ip_version: 4,
            proto: 17,
            sport: 40000_u16.to_be_bytes(),
            dport: 53_u16.to_be_bytes(),
            len: 74,
            ..DropEvent::default()
        };
        ev.saddr[..4].copy_from_slice(&[198, 18, 0, 250]);
        ev.daddr[..4].copy_from_slice(&[198, 18, 0, 1]);
        let ep = endpoint();
        let info = decode(&ev, 1234, Some(&ep));
        assert_eq!(
            info,
            DropEventInfo {
                time_ms: 1234,
                reason: "drop_spoof_ip".into(),
                ifindex: 7,
                host_veth: Some("ll0123456789ab".into()),
                namespace: Some("default".into()),
                pod: Some("web".into()),
                container_id: Some("c0ffee".into()),
                ifname: Some("eth0".into()),
                src_mac: Mac::from([2, 0, 0, 0, 0, 1]),
                dst_mac: Mac::from([0xff; 6]),
                ethertype: "0x0800".into(),
                src: Some("198.18.0.250".parse().unwrap()),
                dst: Some("198.18.0.1".parse().unwrap()),
                proto: Some(17),
                sport: Some(40000),
                dport: Some(53),
                icmp_type: None,
                icmp_code: None,
                len: 74,
            }
        );
        // The line clients get.
        let line = json_line(&info);
        assert!(line.ends_with(b"\n"));
        let back: MonitorLine = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, MonitorLine::Drop(Box::new(info)));
    }

    #[test]
    fn decodes_an_icmpv6_drop_and_an_unknown_reason_without_a_pod() {
        let src: Ipv6Addr = "2001:2::bd".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1".parse().unwrap();
        let ev = DropEvent {
            ifindex: 3,
            reason: DropReason::SpoofIp6.slot().index(),
            dst_mac: [0x33, 0x33, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 1],
            ethertype: [0x86, 0xdd],
            ip_version: 6,
            proto: 58,
            saddr: src.octets(),
            daddr: dst.octets(),
            sport: [128, 0],
            dport: [0x12, 0x34],
            len: 118,
        };
        let info = decode(&ev, 0, None);
        assert_eq!(info.reason, "drop_spoof_ip6");
        assert_eq!(info.ethertype, "0x86dd");
        assert_eq!(info.src, Some(IpAddr::from(src)));
        assert_eq!(info.dst, Some(IpAddr::from(dst)));
        assert_eq!(info.dst_mac.to_string(), "33:33:00:00:00:01");
        assert_eq!(
            (info.proto, info.icmp_type, info.icmp_code, info.sport),
            (Some(58), Some(128), Some(0), None)
        );
        assert_eq!(
            (info.pod, info.namespace, info.host_veth, info.container_id),
            (None, None, None, None)
        );

        // A reason this agent does not know (newer programs), on a frame
        // without IP (ARP): no addresses, no protocol.
        let arp = DropEvent {
            reason: 63,
            ethertype: [0x08, 0x06],
            ..DropEvent::default()
        };
        assert_eq!(StatSlot::from_index(63), None);
        let info = decode(&arp, 0, None);
        assert_eq!(info.reason, "unknown_63");
        assert_eq!(info.ethertype, "0x0806");
        assert_eq!((info.src, info.dst, info.proto), (None, None, None));
        let json = serde_json::to_value(&info).unwrap();
        for absent in ["src", "dst", "proto", "sport", "pod", "hostVeth"] {
            assert!(json.get(absent).is_none(), "{absent}: {json}");
        }
    }

    #[test]
    fn parses_ring_records_of_the_programs_layout() {
        let ev = DropEvent {
            ifindex: 9,
            reason: 9,
            len: 60,
            ..DropEvent::default()
        };
        // SAFETY: DropEvent is repr(C) plain old data without padding.
        let bytes: [u8; 64] = unsafe { std::mem::transmute(ev) };
        assert_eq!(parse(&bytes), Some(ev));
        assert_eq!(parse(&bytes[..63]), None);
    }

    #[tokio::test]
    async fn the_count_follows_subscriptions_and_returns_to_zero() {
        let m = Arc::new(Monitor::<Recorder>::new());
        let rec = Recorder::default();
        let feed = Arc::new(Mutex::new(None));
        let a = subscribe(&m, &rec, &feed).unwrap();
        let b = subscribe(&m, &rec, &feed).unwrap();
        assert_eq!(rec.writes(), [1, 2]);
        assert_eq!(m.clients(), 2);
        drop(a);
        assert_eq!(rec.last(), Some(1));
        drop(b);
        assert_eq!(rec.writes(), [1, 2, 1, 0]);
        // Opened once: the next client reuses the switch and the reader.
        let opened = Arc::new(Mutex::new(0));
        let c = m
            .subscribe(|_| {
                *opened.lock().unwrap() += 1;
                Ok(rec.clone())
            })
            .unwrap();
        assert_eq!(*opened.lock().unwrap(), 0);
        assert_eq!(rec.last(), Some(1));
        drop(c);
        assert_eq!(rec.last(), Some(0));
    }

    #[tokio::test]
    async fn a_failed_open_or_write_counts_no_client() {
        let m = Arc::new(Monitor::<Recorder>::new());
        let e = m.subscribe(|_| Err(MonitorError::Stopping)).err().unwrap();
        assert!(matches!(e, MonitorError::Stopping));
        assert_eq!(m.clients(), 0);
        // Opened on the next try.
        let rec = Recorder::default();
        let feed = Arc::new(Mutex::new(None));
        let a = subscribe(&m, &rec, &feed).unwrap();
        rec.fail.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(subscribe(&m, &rec, &feed).is_err());
        assert_eq!(m.clients(), 1);
        rec.fail.store(false, std::sync::atomic::Ordering::Relaxed);
        drop(a);
        assert_eq!(rec.writes(), [1, 0]);
    }

    #[tokio::test]
    async fn stop_switches_off_ends_every_stream_and_refuses_clients() {
        let m = Arc::new(Monitor::<Recorder>::new());
        let rec = Recorder::default();
        let feed = Arc::new(Mutex::new(None));
        let mut a = subscribe(&m, &rec, &feed).unwrap();
        let _b = subscribe(&m, &rec, &feed).unwrap();
        let shutdown = CancellationToken::new();
        m.stop_at(shutdown.clone());
        shutdown.cancel();
        let next = tokio::time::timeout(Duration::from_secs(5), a.next()).await;
        assert_eq!(next.unwrap(), None);
        assert_eq!(rec.last(), Some(0));
        assert!(matches!(
            subscribe(&m, &rec, &feed).err().unwrap(),
            MonitorError::Stopping
        ));
        // The streams' own ends write nothing after the final 0.
        drop(a);
        assert_eq!(rec.writes(), [1, 2, 0]);
        assert!(feed.lock().unwrap().as_ref().unwrap().stop.is_cancelled());
    }

    #[tokio::test]
    async fn every_client_gets_each_event_and_a_slow_one_is_told_what_it_lost() {
        let m = Arc::new(Monitor::<Recorder>::new());
        let rec = Recorder::default();
        let feed = Arc::new(Mutex::new(None));
        let mut fast = subscribe(&m, &rec, &feed).unwrap();
        let mut slow = subscribe(&m, &rec, &feed).unwrap();
        let feed = feed.lock().unwrap().clone().unwrap();
        assert!(feed.wanted());
        let info = |n: u32| {
            decode(
                &DropEvent {
                    len: n,
                    ..DropEvent::default()
                },
                0,
                None,
            )
        };
        let len = |line: Bytes| match serde_json::from_slice(&line).unwrap() {
            MonitorLine::Drop(d) => d.len,
            MonitorLine::Lost(l) => panic!("lost {}", l.lost),
        };
        for n in 0..(BACKLOG as u32 + 5) {
            feed.publish(&info(n));
            assert_eq!(len(fast.next().await.unwrap()), n);
        }
        let lost: MonitorLine = serde_json::from_slice(&slow.next().await.unwrap()).unwrap();
        assert_eq!(lost, MonitorLine::Lost(LostEvents { lost: 5 }));
        assert_eq!(len(slow.next().await.unwrap()), 5);
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_is_noticed_without_an_event() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let m = Arc::new(Monitor::<Recorder>::new());
        let rec = Recorder::default();
        let feed = Arc::new(Mutex::new(None));
        let app = {
            let (m, rec, feed) = (Arc::clone(&m), rec.clone(), Arc::clone(&feed));
            axum::Router::new().route(
                lanlink_api::routes::MONITOR,
                axum::routing::get(move || async move {
                    subscribe(&m, &rec, &feed).unwrap().into_body()
                }),
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
        client
            .write_all(b"GET /v1/monitor HTTP/1.1\r\nHost: lanlink\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        while !String::from_utf8_lossy(&got).contains("\"len\":42") {
            if got.windows(4).any(|w| w == b"\r\n\r\n") && m.clients() == 1 {
                let feed = feed.lock().unwrap().clone().unwrap();
                feed.publish(&decode(
                    &DropEvent {
                        len: 42,
                        ..DropEvent::default()
                    },
                    0,
                    None,
                ));
            }
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
                .await
                .expect("the event within 5 s")
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(rec.writes(), [1]);
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(5);
        while m.clients() > 0 {
            assert!(Instant::now() < deadline, "the hang-up went unnoticed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(rec.writes(), [1, 0]);
        server.abort();
    }
}
