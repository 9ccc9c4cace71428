//! Runs lanlink's real eBPF object under `BPF_PROG_TEST_RUN`, the practice of
//! Cilium's `bpf/tests`: each case fills the maps, hands one crafted frame to
//! `from_pod`, `from_lan` or `to_pod`, and checks what the program did: its
//! TC return code, the `STATS` slot it counted, where it redirected or
//! cloned the frame, and the bytes it left in the frame.
//!
//! # How it works
//!
//! - [`Harness::load`] loads the object named by `LANLINK_EBPF_OBJ` (set by
//!   `cargo xtask test`; build it with `cargo xtask build-ebpf`) with the
//!   agent's globals, and `RECORD_REDIRECTS` = 1. Nothing is pinned: every
//!   harness has its own maps.
//! - A redirect's target is kept in per-CPU kernel state a test run cannot
//!   read, so with `RECORD_REDIRECTS` set the programs append each
//!   redirect and clone to the per-CPU `REDIRECT_LOG` map, which
//!   [`Harness::run`] clears before and reads after the run
//!   ([`Run::redirects`]). The agent leaves the global 0; the verifier then
//!   drops the recording code.
//! - `bpf_clone_redirect` (flood) really transmits, and the kernel looks the
//!   context's `ifindex` up in the caller's network namespace. [`in_lab`]
//!   therefore runs each case on its own thread in a new, unnamed network
//!   namespace with veth pairs (gone when the thread ends); clones are seen
//!   with [`netns::Capture`] on the peer ends.
//!
//! # Adding a case
//!
//! In `tests/programs.rs`, write `fn my_case(lab: &mut Lab)`: register
//! endpoints (`register(lab)` there, or [`Harness::add_endpoint`],
//! [`Harness::push_flood`], [`Harness::add_host_route`],
//! [`Harness::add_host_addr6`]), build the frame
//! with [`frames`], run it with `lab.harness.run(Program::…, &frame,
//! lab.pod(n).ctx())` (or `lab.uplink().ctx()`), and check the [`Run`]:
//! `assert_code`, `assert_only_counted` / `assert_counted` (which mark the
//! slots as covered), `assert_redirects`, and `data` for the bytes. Then add
//! `my_case` to the `cases!` list there (with `config::FLOW_FIX` if it needs
//! the flow fix): it becomes a `#[test]` and joins
//! `every_verdict_and_drop_reason_has_a_case`. A new verdict or drop reason
//! in `lanlink-common` fails that check until a case asserts it.
//!
//! # Real traffic
//!
//! Where a test run cannot show it (a conversation of several frames
//! between two stacks), `tests/traffic.rs` attaches the programs to veths
//! in the test's namespace with [`Harness::attach`] and sends real packets
//! from a second namespace (a pod) with the system's tools.
//!
//! Kernel quirk: a test run refuses (EINVAL) an IPv4 or IPv6 EtherType
//! frame shorter than that header, so truncation is tested with other
//! EtherTypes.
//!
//! The tests need root (test runs, map creation, namespaces) and the kernel
//! the agent supports.

pub mod frames;
pub mod netns;
mod sys;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf,
        lpm_trie::Key,
    },
    programs::{SchedClassifier, TcAttachType},
};
use lanlink_common::{
    Counter, DropEvent, EndpointByIf, EndpointByMac, EndpointDrops, EndpointGuard, FlowKey,
    FlowValue, Ipv6Key, MacKey, REDIRECT_LOG_LEN, RedirectLog, RedirectRecord, StatSlot, globals,
    map_names,
};

/// The storm limits [`Harness::add_endpoint`] gives every endpoint: the
/// agent's defaults (1,000 frames/s, bursts of 2,000).
pub const DEFAULT_GUARD: EndpointGuard = EndpointGuard::new(1_000, 2_000);

pub use netns::VethPair;

/// Env var naming the eBPF object to test.
pub const OBJ_ENV: &str = "LANLINK_EBPF_OBJ";

/// TC return codes (`linux/pkt_cls.h`).
pub mod tc {
    /// `TC_ACT_OK`: the frame goes on.
    pub const OK: u32 = 0;
    /// `TC_ACT_SHOT`: dropped.
    pub const SHOT: u32 = 2;
    /// `TC_ACT_REDIRECT`: a redirect helper chose where it goes.
    pub const REDIRECT: u32 = 7;
}

/// What can go wrong setting a test up (a case's own checks panic).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// `LANLINK_EBPF_OBJ` is not set.
    #[error(
        "{OBJ_ENV} is not set: build the eBPF object with `cargo xtask build-ebpf` and set \
         {OBJ_ENV} to its path (target/ebpf/bpfel-unknown-none/release/lanlink); \
         `cargo xtask test` does both"
    )]
    NoObject,
    /// The object could not be read.
    #[error("cannot read the eBPF object {path} ({OBJ_ENV}; `cargo xtask build-ebpf`)")]
    ReadObject {
        /// The path from the environment.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// Loading the object or a program failed (verifier, permissions).
    #[error("cannot load {what}")]
    Load {
        /// What was being loaded.
        what: String,
        /// aya's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A map is missing from the object or cannot be used.
    #[error("map {name}: {what}")]
    Map {
        /// The map.
        name: &'static str,
        /// What failed.
        what: String,
    },
    /// The test run syscall failed.
    #[error("BPF_PROG_TEST_RUN of {program} failed")]
    TestRun {
        /// The program.
        program: &'static str,
        /// The syscall's error.
        #[source]
        source: std::io::Error,
    },
    /// Setting up the network namespace failed.
    #[error("test namespace: {what}")]
    Netns {
        /// The step that failed.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// One of the three TC programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// TC ingress of a host veth.
    FromPod,
    /// TC ingress of the uplink.
    FromLan,
    /// TC egress of a host veth.
    ToPod,
}

impl Program {
    /// The program's name in the object.
    pub const fn name(self) -> &'static str {
        match self {
            Program::FromPod => "from_pod",
            Program::FromLan => "from_lan",
            Program::ToPod => "to_pod",
        }
    }

    const ALL: [Program; 3] = [Program::FromPod, Program::FromLan, Program::ToPod];
}

/// The load-time globals the agent sets (`lanlink_common::globals`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Globals {
    /// `UPLINK_IFINDEX`.
    pub uplink_ifindex: u32,
    /// `CONFIG_FLAGS` (`lanlink_common::config` bits).
    pub config_flags: u32,
}

/// How [`Harness::load_with`] loads the object.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Sets `RECORD_REDIRECTS` (`false` loads exactly as the agent does).
    pub record_redirects: bool,
    /// Gives the programs, in place of the object's `FLOWS`, a plain hash
    /// map of one entry that is already full, so learning a new flow fails.
    /// (The object's LRU map evicts instead of failing: nothing else reaches
    /// `flow_learn_failed`.)
    pub full_flows: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            record_redirects: true,
            full_flows: false,
        }
    }
}

/// The `__sk_buff` fields a test run may set.
#[derive(Clone, Copy, Debug, Default)]
pub struct SkbCtx {
    /// The device the hook runs on (must exist in the test's namespace).
    pub ifindex: u32,
    /// The device the frame was received on.
    pub ingress_ifindex: u32,
}

/// An endpoint as the agent registers it (both endpoint maps and `FLOOD`).
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    /// Host-side veth ifindex.
    pub ifindex: u32,
    /// The pod interface's MAC.
    pub mac: [u8; 6],
    /// The host veth's MAC.
    pub host_mac: [u8; 6],
    /// The pod's IPv4 (zero while unknown).
    pub ipv4: [u8; 4],
    /// `lanlink_common::endpoint_flags` bits.
    pub flags: u32,
}

/// The loaded object, its maps, and the slots cases asserted.
pub struct Harness {
    /// Keeps the programs loaded.
    ebpf: Ebpf,
    /// `EP_BY_MAC`.
    pub ep_by_mac: HashMap<MapData, MacKey, EndpointByMac>,
    /// `EP_BY_IF`.
    pub ep_by_if: HashMap<MapData, u32, EndpointByIf>,
    /// `FLOOD`.
    pub flood: Array<MapData, u32>,
    /// `HOST_ROUTES`.
    pub host_routes: LpmTrie<MapData, [u8; 4], u32>,
    /// `FLOWS`.
    pub flows: HashMap<MapData, FlowKey, FlowValue>,
    /// `HOST_ADDRS6`; `None` for an object built before the neighbour
    /// responder.
    host_addrs6: Option<HashMap<MapData, Ipv6Key, u8>>,
    stats: PerCpuArray<MapData, Counter>,
    /// The first-hop guard maps; `None` for an object built before them
    /// (only [`Harness::time_run`] is of use with such an object).
    guards: Option<GuardMaps>,
    /// `REDIRECT_LOG` (cleared by every run, which only borrows the harness).
    redirect_log: RefCell<PerCpuArray<MapData, RedirectLog>>,
    /// Next free `FLOOD` slot.
    flood_len: u32,
    covered: RefCell<BTreeSet<u32>>,
}

/// The maps of the first-hop guards and the drop monitor.
struct GuardMaps {
    ep_guard: HashMap<MapData, u32, EndpointGuard>,
    ep_drops: PerCpuHashMap<MapData, u32, EndpointDrops>,
    v6_owners: HashMap<MapData, Ipv6Key, u32>,
    monitor: Array<MapData, u32>,
    drop_events: RefCell<RingBuf<MapData>>,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> HarnessError {
    move |e| HarnessError::Map {
        name,
        what: e.to_string(),
    }
}

/// A one-entry plain hash map shaped like `FLOWS`, pinned in bpffs only
/// while the object loads (the loaded object keeps it open).
struct FullFlows {
    path: PathBuf,
}

impl FullFlows {
    fn pin() -> Result<Self, HarnessError> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let err = |what: String| HarnessError::Map {
            name: map_names::FLOWS,
            what,
        };
        let fd = sys::create_hash_map(
            "flows_full",
            size_of::<FlowKey>() as u32,
            size_of::<FlowValue>() as u32,
            1,
        )
        .map_err(|e| err(format!("cannot create the full stand-in: {e}")))?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/lanlink-progtest-flows-{}-{n}",
            std::process::id()
        ));
        let map = MapData::from_fd(fd).map_err(|e| err(e.to_string()))?;
        map.pin(&path).map_err(|e| {
            err(format!(
                "cannot pin the stand-in at {}: {e}",
                path.display()
            ))
        })?;
        Ok(Self { path })
    }
}

impl Drop for FullFlows {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Harness {
    /// Loads the object named by `LANLINK_EBPF_OBJ` with `globals` (and
    /// redirect recording on) and its three programs.
    pub fn load(globals: Globals) -> Result<Self, HarnessError> {
        Self::load_with(globals, LoadOptions::default())
    }

    /// [`Harness::load`] with `options`.
    pub fn load_with(globals: Globals, options: LoadOptions) -> Result<Self, HarnessError> {
        let path = PathBuf::from(std::env::var_os(OBJ_ENV).ok_or(HarnessError::NoObject)?);
        let object = std::fs::read(&path).map_err(|source| HarnessError::ReadObject {
            path: path.clone(),
            source,
        })?;
        let record = u32::from(options.record_redirects);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(globals::UPLINK_IFINDEX, &globals.uplink_ifindex, true)
            .override_global(globals::CONFIG_FLAGS, &globals.config_flags, true)
            .override_global(globals::RECORD_REDIRECTS, &record, true);
        // aya takes a map from outside the object only by its pin.
        let full_flows = options.full_flows.then(FullFlows::pin).transpose()?;
        if let Some(full) = &full_flows {
            loader.map_pin_path(map_names::FLOWS, full.path.as_path());
        }
        let mut ebpf = loader.load(&object).map_err(|e| HarnessError::Load {
            what: path.display().to_string(),
            source: Box::new(e),
        })?;
        drop(full_flows);
        for program in Program::ALL {
            let load_err = |e: Box<dyn std::error::Error + Send + Sync>| HarnessError::Load {
                what: format!("program {}", program.name()),
                source: e,
            };
            let prog: &mut SchedClassifier = ebpf
                .program_mut(program.name())
                .ok_or_else(|| load_err("missing from the object".into()))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| load_err(Box::new(e)))?;
            // Up to 5 attempts while the verifier answers EAGAIN (a signal
            // pending for this thread), as libbpf and the agent do.
            let mut attempt = 1;
            while let Err(e) = prog.load() {
                match e {
                    aya::programs::ProgramError::LoadError { ref io_error, .. }
                        if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < 5 =>
                    {
                        attempt += 1;
                    }
                    e => return Err(load_err(Box::new(e))),
                }
            }
        }
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or(HarnessError::Map {
                name,
                what: "missing from the object".into(),
            })
        };
        let ep_by_mac = HashMap::try_from(take(map_names::EP_BY_MAC)?)
            .map_err(map_err(map_names::EP_BY_MAC))?;
        let ep_by_if =
            HashMap::try_from(take(map_names::EP_BY_IF)?).map_err(map_err(map_names::EP_BY_IF))?;
        let flood = Array::try_from(take(map_names::FLOOD)?).map_err(map_err(map_names::FLOOD))?;
        let host_routes = LpmTrie::try_from(take(map_names::HOST_ROUTES)?)
            .map_err(map_err(map_names::HOST_ROUTES))?;
        let flows =
            HashMap::try_from(take(map_names::FLOWS)?).map_err(map_err(map_names::FLOWS))?;
        let stats =
            PerCpuArray::try_from(take(map_names::STATS)?).map_err(map_err(map_names::STATS))?;
        let redirect_log = PerCpuArray::try_from(take(map_names::REDIRECT_LOG)?)
            .map_err(map_err(map_names::REDIRECT_LOG))?;
        let host_addrs6 = ebpf
            .take_map(map_names::HOST_ADDRS6)
            .map(HashMap::try_from)
            .transpose()
            .map_err(map_err(map_names::HOST_ADDRS6))?;
        let guards = if ebpf.map(map_names::EP_GUARD).is_some() {
            let mut take = |name: &'static str| {
                ebpf.take_map(name).ok_or(HarnessError::Map {
                    name,
                    what: "missing from the object".into(),
                })
            };
            Some(GuardMaps {
                ep_guard: HashMap::try_from(take(map_names::EP_GUARD)?)
                    .map_err(map_err(map_names::EP_GUARD))?,
                ep_drops: PerCpuHashMap::try_from(take(map_names::EP_DROPS)?)
                    .map_err(map_err(map_names::EP_DROPS))?,
                v6_owners: HashMap::try_from(take(map_names::V6_OWNERS)?)
                    .map_err(map_err(map_names::V6_OWNERS))?,
                monitor: Array::try_from(take(map_names::MONITOR)?)
                    .map_err(map_err(map_names::MONITOR))?,
                drop_events: RefCell::new(
                    RingBuf::try_from(take(map_names::DROP_EVENTS)?)
                        .map_err(map_err(map_names::DROP_EVENTS))?,
                ),
            })
        } else {
            None
        };
        let mut harness = Self {
            ebpf,
            ep_by_mac,
            ep_by_if,
            flood,
            host_routes,
            flows,
            host_addrs6,
            stats,
            guards,
            redirect_log: RefCell::new(redirect_log),
            flood_len: 0,
            covered: RefCell::default(),
        };
        if options.full_flows {
            // A flow no case sends: the one entry that makes the map full.
            let filler = FlowKey {
                proto: 255,
                ..FlowKey::default()
            };
            harness
                .flows
                .insert(filler, FlowValue::default(), 0)
                .map_err(map_err(map_names::FLOWS))?;
        }
        Ok(harness)
    }

    /// Registers `ep` as the agent does: both endpoint maps, its guard
    /// ([`DEFAULT_GUARD`]) and drop counters, and the next `FLOOD` slot.
    pub fn add_endpoint(&mut self, ep: &Endpoint) -> Result<(), HarnessError> {
        if self.guards.is_some() {
            self.set_guard(ep.ifindex, DEFAULT_GUARD)?;
            let cpus = aya::util::nr_cpus().map_err(|(what, e)| HarnessError::Map {
                name: map_names::EP_DROPS,
                what: format!("{what}: {e}"),
            })?;
            let zero =
                PerCpuValues::try_from(vec![EndpointDrops::default(); cpus]).map_err(|e| {
                    HarnessError::Map {
                        name: map_names::EP_DROPS,
                        what: e.to_string(),
                    }
                })?;
            self.guard_maps_mut()
                .ep_drops
                .insert(ep.ifindex, zero, 0)
                .map_err(map_err(map_names::EP_DROPS))?;
        }
        self.ep_by_if
            .insert(
                ep.ifindex,
                EndpointByIf {
                    mac: ep.mac,
                    host_mac: ep.host_mac,
                    ipv4: ep.ipv4,
                    flags: ep.flags,
                },
                0,
            )
            .map_err(map_err(map_names::EP_BY_IF))?;
        self.ep_by_mac
            .insert(
                MacKey::new(ep.mac),
                EndpointByMac {
                    ifindex: ep.ifindex,
                    ipv4: ep.ipv4,
                    flags: ep.flags,
                },
                0,
            )
            .map_err(map_err(map_names::EP_BY_MAC))?;
        self.push_flood(ep.ifindex)
    }

    /// Writes `value` into the next `FLOOD` slot (an ifindex, or
    /// `FLOOD_EMPTY` for a freed slot).
    pub fn push_flood(&mut self, value: u32) -> Result<(), HarnessError> {
        self.flood
            .set(self.flood_len, value, 0)
            .map_err(map_err(map_names::FLOOD))?;
        self.flood_len += 1;
        Ok(())
    }

    fn guard_maps(&self) -> &GuardMaps {
        self.guards
            .as_ref()
            .expect("the object has no first-hop guard maps (built before them)")
    }

    fn guard_maps_mut(&mut self) -> &mut GuardMaps {
        self.guards
            .as_mut()
            .expect("the object has no first-hop guard maps (built before them)")
    }

    /// Replaces the `EP_GUARD` entry of host veth `ifindex`.
    pub fn set_guard(&mut self, ifindex: u32, guard: EndpointGuard) -> Result<(), HarnessError> {
        self.guard_maps_mut()
            .ep_guard
            .insert(ifindex, guard, 0)
            .map_err(map_err(map_names::EP_GUARD))
    }

    /// The `EP_GUARD` entry of host veth `ifindex`.
    pub fn guard(&self, ifindex: u32) -> Option<EndpointGuard> {
        self.guard_maps().ep_guard.get(&ifindex, 0).ok()
    }

    /// The drops counted against host veth `ifindex` (summed over CPUs),
    /// by slot; empty without an `EP_DROPS` entry.
    pub fn endpoint_drops(&self, ifindex: u32) -> BTreeMap<StatSlot, u64> {
        let Ok(per_cpu) = self.guard_maps().ep_drops.get(&ifindex, 0) else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for slot in StatSlot::ALL {
            let n: u64 = per_cpu
                .iter()
                .map(|d| d.packets[slot.index() as usize])
                .sum();
            if n > 0 {
                out.insert(*slot, n);
            }
        }
        out
    }

    /// Which host veth claimed the IPv6 address `addr`, if any.
    pub fn v6_owner(&self, addr: [u8; 16]) -> Option<u32> {
        self.guard_maps().v6_owners.get(&Ipv6Key { addr }, 0).ok()
    }

    /// Sets `MONITOR[0]` (the number of monitor clients).
    pub fn set_monitor(&mut self, clients: u32) -> Result<(), HarnessError> {
        self.guard_maps_mut()
            .monitor
            .set(0, clients, 0)
            .map_err(map_err(map_names::MONITOR))
    }

    /// Takes every event in `DROP_EVENTS`.
    pub fn drop_events(&self) -> Vec<DropEvent> {
        let mut ring = self.guard_maps().drop_events.borrow_mut();
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            assert_eq!(item.len(), std::mem::size_of::<DropEvent>(), "event size");
            // SAFETY: DropEvent is plain old data of exactly this size.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DropEvent>()) });
        }
        out
    }

    /// Adds `prefix`/`len` to `HOST_ROUTES`.
    pub fn add_host_route(&mut self, prefix: [u8; 4], len: u32) -> Result<(), HarnessError> {
        self.host_routes
            .insert(&Key::new(len, prefix), 1, 0)
            .map_err(map_err(map_names::HOST_ROUTES))
    }

    /// Records `addr` in `V6_OWNERS` as owned by host veth `ifindex`, as the
    /// agent does for an address it gave the pod.
    pub fn set_v6_owner(&mut self, addr: [u8; 16], ifindex: u32) -> Result<(), HarnessError> {
        self.guard_maps_mut()
            .v6_owners
            .insert(Ipv6Key { addr }, ifindex, 0)
            .map_err(map_err(map_names::V6_OWNERS))
    }

    /// Attaches `program` to `ifname` in this thread's namespace for real
    /// traffic (TCX on the kernels the agent supports), where the agent
    /// attaches it: `from_pod` and `from_lan` at ingress, `to_pod` at
    /// egress. Detached when the harness (or the interface) goes.
    pub fn attach(&mut self, program: Program, ifname: &str) -> Result<(), HarnessError> {
        let attach_type = match program {
            Program::FromPod | Program::FromLan => TcAttachType::Ingress,
            Program::ToPod => TcAttachType::Egress,
        };
        let err = |e: aya::programs::ProgramError| HarnessError::Load {
            what: format!("attach {} to {ifname}", program.name()),
            source: Box::new(e),
        };
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(program.name())
            .ok_or_else(|| HarnessError::Load {
                what: format!("program {}", program.name()),
                source: "missing from the object".into(),
            })?
            .try_into()
            .map_err(err)?;
        prog.attach(ifname, attach_type).map_err(err)?;
        Ok(())
    }

    /// Adds `addr` to `HOST_ADDRS6` (a node address the neighbour
    /// responder answers for).
    pub fn add_host_addr6(&mut self, addr: [u8; 16]) -> Result<(), HarnessError> {
        self.host_addrs6_mut()
            .insert(Ipv6Key { addr }, 1, 0)
            .map_err(map_err(map_names::HOST_ADDRS6))
    }

    /// Removes `addr` from `HOST_ADDRS6`.
    pub fn remove_host_addr6(&mut self, addr: [u8; 16]) -> Result<(), HarnessError> {
        self.host_addrs6_mut()
            .remove(&Ipv6Key { addr })
            .map_err(map_err(map_names::HOST_ADDRS6))
    }

    fn host_addrs6_mut(&mut self) -> &mut HashMap<MapData, Ipv6Key, u8> {
        self.host_addrs6
            .as_mut()
            .expect("the object has no HOST_ADDRS6 (built before the neighbour responder)")
    }

    /// Runs `program` once on `frame` with context `ctx`.
    pub fn run(
        &self,
        program: Program,
        frame: &[u8],
        ctx: SkbCtx,
    ) -> Result<Run<'_>, HarnessError> {
        let fd = self.program_fd(program)?;
        self.clear_redirect_log()?;
        let before = self.counters()?;
        let skb = sys::SkBuff::on_device(ctx.ifindex, ctx.ingress_ifindex);
        let out = sys::test_run(fd.as_fd().as_raw_fd(), frame, &skb).map_err(|source| {
            HarnessError::TestRun {
                program: program.name(),
                source,
            }
        })?;
        let after = self.counters()?;
        let counted = StatSlot::ALL
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| a.packets != b.packets)
            .map(|(s, (b, a))| (*s, a.packets - b.packets))
            .collect();
        Ok(Run {
            harness: self,
            program,
            code: out.retval,
            data: out.data,
            counted,
            redirects: self.read_redirect_log()?,
        })
    }

    /// The loaded `program`'s descriptor.
    fn program_fd(&self, program: Program) -> Result<&aya::programs::ProgramFd, HarnessError> {
        self.ebpf
            .program(program.name())
            .and_then(|p| <&SchedClassifier>::try_from(p).ok())
            .and_then(|p| p.fd().ok())
            .ok_or_else(|| HarnessError::Load {
                what: format!("program {}", program.name()),
                source: "not loaded".into(),
            })
    }

    /// Runs `program` `repeat` times on `frame` in one `BPF_PROG_TEST_RUN`
    /// and returns its return code and the kernel's mean time per run.
    /// Nothing is cleared or counted around it: for timing, with redirect
    /// recording off ([`LoadOptions::record_redirects`] false) and a frame
    /// that is not flooded (a flood clones for real, every run).
    pub fn time_run(
        &self,
        program: Program,
        frame: &[u8],
        ctx: SkbCtx,
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), HarnessError> {
        let fd = self.program_fd(program)?;
        let skb = sys::SkBuff::on_device(ctx.ifindex, ctx.ingress_ifindex);
        let out = sys::test_run_repeat(fd.as_fd().as_raw_fd(), frame, &skb, repeat).map_err(
            |source| HarnessError::TestRun {
                program: program.name(),
                source,
            },
        )?;
        Ok((
            out.retval,
            std::time::Duration::from_nanos(u64::from(out.duration_ns)),
        ))
    }

    /// Size in bytes of `program` as the verifier left it (after removing
    /// dead code), if the kernel reports it.
    pub fn translated_size(&self, program: Program) -> Option<u32> {
        self.ebpf
            .program(program.name())
            .and_then(|p| p.info().ok())
            .and_then(|info| info.size_translated())
    }

    /// Every slot's counter, summed over CPUs, in `StatSlot::ALL` order.
    pub fn counters(&self) -> Result<Vec<Counter>, HarnessError> {
        StatSlot::ALL
            .iter()
            .map(|s| {
                let per_cpu = self
                    .stats
                    .get(&s.index(), 0)
                    .map_err(map_err(map_names::STATS))?;
                Ok(per_cpu.iter().fold(Counter::default(), |a, c| Counter {
                    packets: a.packets + c.packets,
                    bytes: a.bytes + c.bytes,
                }))
            })
            .collect()
    }

    /// The slots the cases run on this harness asserted with
    /// [`Run::assert_counted`].
    pub fn covered(&self) -> BTreeSet<StatSlot> {
        self.covered
            .borrow()
            .iter()
            .filter_map(|i| StatSlot::from_index(*i))
            .collect()
    }

    fn clear_redirect_log(&self) -> Result<(), HarnessError> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| HarnessError::Map {
            name: map_names::REDIRECT_LOG,
            what: format!("{what}: {e}"),
        })?;
        let zero = PerCpuValues::try_from(vec![RedirectLog::default(); cpus]).map_err(|e| {
            HarnessError::Map {
                name: map_names::REDIRECT_LOG,
                what: e.to_string(),
            }
        })?;
        self.redirect_log
            .borrow_mut()
            .set(0, zero, 0)
            .map_err(map_err(map_names::REDIRECT_LOG))
    }

    fn read_redirect_log(&self) -> Result<Vec<RedirectRecord>, HarnessError> {
        let per_cpu = self
            .redirect_log
            .borrow()
            .get(&0, 0)
            .map_err(map_err(map_names::REDIRECT_LOG))?;
        // The run happened on one CPU; the log was cleared on all of them.
        let mut out = Vec::new();
        for log in per_cpu.iter() {
            let n = (log.len as usize).min(REDIRECT_LOG_LEN);
            out.extend_from_slice(&log.records[..n]);
            assert!(
                log.len as usize <= REDIRECT_LOG_LEN,
                "more than {REDIRECT_LOG_LEN} redirects in one run: the log lost some"
            );
        }
        Ok(out)
    }
}

/// What one run did.
pub struct Run<'h> {
    harness: &'h Harness,
    program: Program,
    /// The TC return code ([`tc`]).
    pub code: u32,
    /// The frame as the program left it.
    pub data: Vec<u8>,
    /// Slots whose packet counter moved, and by how much.
    pub counted: Vec<(StatSlot, u64)>,
    /// Redirects and clones asked for, in order.
    pub redirects: Vec<RedirectRecord>,
}

impl Run<'_> {
    /// Asserts the TC return code.
    #[track_caller]
    pub fn assert_code(&self, code: u32) -> &Self {
        assert_eq!(
            self.code,
            code,
            "{}: return code (counted {:?}, redirects {:?})",
            self.program.name(),
            self.counted,
            self.redirects
        );
        self
    }

    /// Asserts that `slot` counted exactly this one frame, and marks it
    /// covered.
    #[track_caller]
    pub fn assert_counted(&self, slot: impl Into<StatSlot>) -> &Self {
        let slot = slot.into();
        let n = self
            .counted
            .iter()
            .find(|(s, _)| *s == slot)
            .map_or(0, |(_, n)| *n);
        assert_eq!(
            n,
            1,
            "{}: {} counted {n} times (all counted: {:?})",
            self.program.name(),
            slot.label(),
            self.counted
        );
        self.harness.covered.borrow_mut().insert(slot.index());
        self
    }

    /// Asserts that exactly `slots` moved (each by one).
    #[track_caller]
    pub fn assert_only_counted(&self, slots: &[StatSlot]) -> &Self {
        for s in slots {
            self.assert_counted(*s);
        }
        assert_eq!(
            self.counted.len(),
            slots.len(),
            "{}: unexpected counters moved: {:?}",
            self.program.name(),
            self.counted
        );
        self
    }

    /// Asserts the redirects and clones, as `(kind, ifindex)` in order, all
    /// with flags 0 and successful.
    #[track_caller]
    pub fn assert_redirects(&self, want: &[(u32, u32)]) -> &Self {
        let got: Vec<(u32, u32)> = self.redirects.iter().map(|r| (r.kind, r.ifindex)).collect();
        assert_eq!(
            got,
            want,
            "{}: redirects {:?}",
            self.program.name(),
            self.redirects
        );
        for r in &self.redirects {
            assert_eq!(r.flags, 0, "{r:?}");
            assert!(r.ret == 0 || r.ret == tc::REDIRECT as i32, "failed: {r:?}");
        }
        self
    }
}

/// A harness in a private network namespace with an uplink and pods.
pub struct Lab {
    /// The loaded object.
    pub harness: Harness,
    /// `links[0]` is the uplink, `links[1..]` the pods' host veths.
    pub links: Vec<VethPair>,
}

impl Lab {
    /// Runs `program` on `frame` as if it came through `link` (its ingress
    /// and ifindex), panicking on a harness failure: the shorthand every
    /// case uses.
    pub fn run_on(&self, program: Program, frame: &[u8], link: &VethPair) -> Run<'_> {
        self.harness
            .run(program, frame, link.ctx())
            .unwrap_or_else(|e| panic!("{program:?} on {}: {}", link.host, error_chain(&e)))
    }

    /// Loads the object again into this lab, with `config_flags` and
    /// `options`: fresh maps, nothing registered, no slot covered yet.
    pub fn reload(&mut self, config_flags: u32, options: LoadOptions) {
        let globals = Globals {
            uplink_ifindex: self.uplink().host_ifindex,
            config_flags,
        };
        self.harness =
            Harness::load_with(globals, options).unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    }

    /// The uplink's veth pair (`host` is the uplink, `peer` the LAN).
    pub fn uplink(&self) -> &VethPair {
        &self.links[0]
    }

    /// Pod `n`'s (1-based) veth pair (`host` is its host-side veth).
    pub fn pod(&self, n: usize) -> &VethPair {
        &self.links[n]
    }
}

impl VethPair {
    /// Context of a run on `host`'s hook.
    pub fn ctx(&self) -> SkbCtx {
        SkbCtx {
            ifindex: self.host_ifindex,
            ingress_ifindex: self.host_ifindex,
        }
    }
}

/// Runs `f` with a fresh [`Lab`]: a new network namespace with an uplink
/// and `pods` pod veths, and the object loaded with the uplink's ifindex
/// and `config_flags`. Panics (failing the test) if setup fails, e.g.
/// without `LANLINK_EBPF_OBJ` or without root.
pub fn in_lab<T: Send>(pods: usize, config_flags: u32, f: impl FnOnce(&mut Lab) -> T + Send) -> T {
    netns::with_netns(pods + 1, |links| {
        let harness = Harness::load(Globals {
            uplink_ifindex: links[0].host_ifindex,
            config_flags,
        })
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        let mut lab = Lab {
            harness,
            links: links.to_vec(),
        };
        f(&mut lab)
    })
    .unwrap_or_else(|e| panic!("{}", error_chain(&e)))
}

/// `e` with its sources, for a panic message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
