//! Loads the eBPF object, pins its maps and links, and is the one owner of
//! the map handles the agent writes.
//!
//! Restart without loss: maps are pinned by name under the pin directory and
//! reused by the next load (`EbpfLoader::map_pin_path`), and every TC link is
//! pinned. A new agent loads fresh programs and swaps them into the pinned
//! links atomically (TCX `BPF_LINK_UPDATE`), so forwarding never stops: while
//! no agent runs, the pinned links keep the old programs attached.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, lpm_trie::Key,
    },
    programs::{SchedClassifier, TcAttachType},
};
use lanlink_common::{
    Counter, EndpointByIf, EndpointByMac, EndpointDrops, EndpointGuard, FLOOD_EMPTY, Ipv6Key,
    MAX_ENDPOINTS, MAX_HOST_ADDRS6, MacKey, StatSlot, endpoint_flags, globals, map_names,
};

use crate::paths;

mod attach;
pub use attach::{AttachMode, KernelTooOld, check_kernel};

/// The eBPF object, embedded at build time (see build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lanlink.bpf.o"));

/// Errors of the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The agent was built without the eBPF object.
    #[error("this lanlinkd was built without its eBPF object; build it with `cargo xtask build`")]
    NoObject,
    /// bpffs is not mounted where the pin directory is, and mounting it
    /// there failed (`source`) or did not take.
    #[error("{path} is not on a bpf filesystem (mount -t bpf bpf {path})")]
    NotBpffs {
        /// Where bpffs should be: the pin directory's parent.
        path: PathBuf,
        /// Why mounting it failed, when it was tried.
        #[source]
        source: Option<nix::Error>,
    },
    /// bpffs is not mounted where the pin directory is, and the agent will
    /// not mount it there (see [`plan_bpffs`]).
    #[error(
        "{pin_dir} is not on a bpf filesystem and lanlinkd will not mount one on {dir}: {why}; \
         run `mkdir -p {dir} && mount -t bpf bpf {dir}` first, or pass a --pin-dir under a bpffs"
    )]
    WontMountBpffs {
        /// The pin directory.
        pin_dir: PathBuf,
        /// Its parent, where bpffs would go.
        dir: PathBuf,
        /// Why not.
        why: &'static str,
    },
    /// Loading the object failed (verifier, BTF, map creation).
    #[error("cannot load the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program failed to load or attach.
    #[error("cannot {what}")]
    Program {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed.
    #[error("map {map}: cannot {what}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// Pin files could not be created or removed.
    #[error("cannot {what}")]
    Pin {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An IPv6 address given to one endpoint is claimed by another.
    #[error("{addr} is claimed by the endpoint of index {owner}, not by index {ifindex}")]
    V6Claimed {
        /// The address.
        addr: std::net::Ipv6Addr,
        /// The endpoint holding it.
        owner: u32,
        /// The endpoint it was given to.
        ifindex: u32,
    },
    /// More node IPv6 addresses than the neighbour responder's map holds.
    #[error(
        "the node has {count} IPv6 addresses for the neighbour responder, more than the {max} it holds"
    )]
    TooManyHostAddrs6 {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The node already has as many endpoints as the maps hold.
    #[error("the node already has the maximum of {max} endpoints")]
    TooManyEndpoints {
        /// The limit.
        max: usize,
    },
    /// The object lacks an expected program or map.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// The blocking task of [`Attachments`] panicked or was cancelled.
    #[error("attaching the programs to {ifname} did not finish")]
    AttachTask {
        /// The interface.
        ifname: String,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
}

pub(crate) fn map_err(
    map: &'static str,
    what: impl Into<String>,
) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Map {
        map,
        what,
        source: Box::new(source),
    }
}

fn prog_err(what: impl Into<String>) -> impl FnOnce(aya::programs::ProgramError) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Program {
        what,
        source: Box::new(source),
    }
}

/// A map removal that found nothing to remove is fine.
///
/// aya 0.14's `HashMap::remove` reports a missing key as the syscall's
/// ENOENT, not as `KeyNotFound`: both mean "already gone".
fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The TC programs of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Ingress of a pod's host veth.
    FromPod,
    /// Egress of a pod's host veth.
    ToPod,
    /// Ingress of the uplink.
    FromLan,
}

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Hook::FromPod => "from_pod",
            Hook::ToPod => "to_pod",
            Hook::FromLan => "from_lan",
        }
    }
    fn attach_type(self) -> TcAttachType {
        match self {
            Hook::FromPod | Hook::FromLan => TcAttachType::Ingress,
            Hook::ToPod => TcAttachType::Egress,
        }
    }
}

/// Load-time settings.
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    /// Uplink name in the agent's namespace.
    pub uplink: String,
    /// Uplink ifindex.
    pub uplink_ifindex: u32,
    /// Pin directory (maps, `links/`).
    pub pin_dir: PathBuf,
    /// `lanlink_common::config` bits.
    pub flags: u32,
    /// How the programs are attached.
    pub attach: AttachMode,
}

/// The loaded dataplane: programs, pinned maps, typed map handles.
pub struct Dataplane {
    ebpf: Ebpf,
    cfg: DataplaneConfig,
    ep_by_mac: HashMap<MapData, MacKey, EndpointByMac>,
    ep_by_if: HashMap<MapData, u32, EndpointByIf>,
    flood: Array<MapData, u32>,
    host_routes: LpmTrie<MapData, [u8; 4], u32>,
    stats: PerCpuArray<MapData, Counter>,
    ep_guard: HashMap<MapData, u32, EndpointGuard>,
    ep_drops: PerCpuHashMap<MapData, u32, EndpointDrops>,
    v6_owners: HashMap<MapData, Ipv6Key, u32>,
    host_addrs6: HashMap<MapData, Ipv6Key, u8>,
    /// Whether the maps already existed (a previous agent's state was adopted).
    pub adopted: bool,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("cfg", &self.cfg)
            .field("adopted", &self.adopted)
            .finish()
    }
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// bpffs's usual mount point: the agent mounts bpffs there even when the
/// directory is not empty (a fresh sysfs has it empty; anything in it is
/// hidden only in the agent's own mount namespace, as `ip netns exec` does).
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// What is known of the filesystem a pin directory is on (see
/// [`bpffs_facts`]); the input of [`plan_bpffs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpffsFacts {
    /// The pin directory, or its nearest existing ancestor, is on bpffs.
    pub on_bpffs: bool,
    /// The pin directory's parent exists and is a directory.
    pub parent_exists: bool,
    /// The pin directory's parent has no entries.
    pub parent_empty: bool,
}

/// What [`Dataplane::load`] does about bpffs before pinning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BpffsPlan {
    /// The pin directory is (or will be created) on bpffs.
    Ready,
    /// Mount bpffs on this directory (the pin directory's parent).
    Mount(PathBuf),
    /// Do not mount: say why and let the operator do it.
    Refuse {
        /// The pin directory's parent.
        dir: PathBuf,
        /// Why not.
        why: &'static str,
    },
}

/// Reads what [`plan_bpffs`] decides on for `pin_dir`.
pub fn bpffs_facts(pin_dir: &Path) -> BpffsFacts {
    let nearest = pin_dir.ancestors().find(|a| a.exists());
    let parent = pin_dir.parent().filter(|p| !p.as_os_str().is_empty());
    let parent_empty = parent
        .and_then(|p| std::fs::read_dir(p).ok())
        .is_some_and(|mut entries| entries.next().is_none());
    BpffsFacts {
        on_bpffs: nearest.is_some_and(is_bpffs),
        parent_exists: parent.is_some_and(Path::is_dir),
        parent_empty,
    }
}

/// Whether and where to mount bpffs for `pin_dir`, as Cilium's agent does
/// when `ip netns exec` (which mounts a fresh sysfs) or a container left it
/// out: on the pin directory's parent, only if that directory exists, and,
/// unless it is [`BPFFS_ROOT`], only if it is empty (mounting hides what a
/// directory holds; a custom `--pin-dir`'s parent may be anything).
pub fn plan_bpffs(pin_dir: &Path, facts: &BpffsFacts) -> BpffsPlan {
    if facts.on_bpffs {
        return BpffsPlan::Ready;
    }
    let Some(dir) = pin_dir.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return BpffsPlan::Refuse {
            dir: pin_dir.to_path_buf(),
            why: "the pin directory has no parent to mount bpffs on",
        };
    };
    if !facts.parent_exists {
        return BpffsPlan::Refuse {
            dir: dir.to_path_buf(),
            why: "that directory does not exist",
        };
    }
    if dir != Path::new(BPFFS_ROOT) && !facts.parent_empty {
        return BpffsPlan::Refuse {
            dir: dir.to_path_buf(),
            why: "that directory is not empty and mounting would hide its files",
        };
    }
    BpffsPlan::Mount(dir.to_path_buf())
}

/// `mount -t bpf -o mode=0700 bpf <dir>`.
fn mount_bpffs(dir: &Path) -> nix::Result<()> {
    nix::mount::mount(
        Some("bpf"),
        dir,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        Some("mode=0700"),
    )
}

/// Makes sure `pin_dir` can be created on bpffs: mounts bpffs on its parent
/// when [`plan_bpffs`] says so, fails when it refuses.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), DataplaneError> {
    match plan_bpffs(pin_dir, &bpffs_facts(pin_dir)) {
        BpffsPlan::Ready => Ok(()),
        BpffsPlan::Mount(dir) => {
            mount_bpffs(&dir).map_err(|e| DataplaneError::NotBpffs {
                path: dir.clone(),
                source: Some(e),
            })?;
            tracing::info!(
                dir = %dir.display(),
                "{} was not on a bpf filesystem; mounted bpffs on {}",
                pin_dir.display(),
                dir.display()
            );
            Ok(())
        }
        BpffsPlan::Refuse { dir, why } => Err(DataplaneError::WontMountBpffs {
            pin_dir: pin_dir.to_path_buf(),
            dir,
            why,
        }),
    }
}

impl Dataplane {
    /// Loads the object (reusing pinned maps), attaches from-LAN to the
    /// uplink, and returns the handle.
    pub fn load(cfg: DataplaneConfig) -> Result<Self, DataplaneError> {
        if OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let parent = cfg.pin_dir.parent().unwrap_or(Path::new("/"));
        // Before creating the pin directory: created on the wrong
        // filesystem, it would make its parent look used.
        ensure_bpffs(&cfg.pin_dir)?;
        std::fs::create_dir_all(&cfg.pin_dir).map_err(|source| DataplaneError::Pin {
            what: format!("create {}", cfg.pin_dir.display()),
            source,
        })?;
        if !is_bpffs(&cfg.pin_dir) {
            return Err(DataplaneError::NotBpffs {
                path: parent.to_path_buf(),
                source: None,
            });
        }
        let links = cfg.pin_dir.join(paths::LINKS_DIR);
        std::fs::create_dir_all(&links).map_err(|source| DataplaneError::Pin {
            what: format!("create {}", links.display()),
            source,
        })?;
        let adopted = cfg.pin_dir.join(map_names::EP_BY_MAC).exists();

        let mut loader = EbpfLoader::new();
        for name in paths::PINNED_MAPS {
            loader.map_pin_path(name, cfg.pin_dir.join(name));
        }
        let mut ebpf = loader
            .override_global(globals::UPLINK_IFINDEX, &cfg.uplink_ifindex, true)
            .override_global(globals::CONFIG_FLAGS, &cfg.flags, true)
            .load(OBJECT)
            .map_err(|e| DataplaneError::Load(Box::new(e)))?;
        for hook in [Hook::FromPod, Hook::ToPod, Hook::FromLan] {
            load_retrying(classifier(&mut ebpf, hook)?)
                .map_err(prog_err(format!("load {}", hook.program())))?;
        }

        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DataplaneError::Missing(name));
        let ep_by_mac = HashMap::try_from(take(map_names::EP_BY_MAC)?)
            .map_err(map_err(map_names::EP_BY_MAC, "open"))?;
        let ep_by_if = HashMap::try_from(take(map_names::EP_BY_IF)?)
            .map_err(map_err(map_names::EP_BY_IF, "open"))?;
        let flood =
            Array::try_from(take(map_names::FLOOD)?).map_err(map_err(map_names::FLOOD, "open"))?;
        let host_routes = LpmTrie::try_from(take(map_names::HOST_ROUTES)?)
            .map_err(map_err(map_names::HOST_ROUTES, "open"))?;
        let stats = PerCpuArray::try_from(take(map_names::STATS)?)
            .map_err(map_err(map_names::STATS, "open"))?;
        let ep_guard = HashMap::try_from(take(map_names::EP_GUARD)?)
            .map_err(map_err(map_names::EP_GUARD, "open"))?;
        let ep_drops = PerCpuHashMap::try_from(take(map_names::EP_DROPS)?)
            .map_err(map_err(map_names::EP_DROPS, "open"))?;
        let v6_owners = HashMap::try_from(take(map_names::V6_OWNERS)?)
            .map_err(map_err(map_names::V6_OWNERS, "open"))?;
        let host_addrs6 = HashMap::try_from(take(map_names::HOST_ADDRS6)?)
            .map_err(map_err(map_names::HOST_ADDRS6, "open"))?;
        // No monitor client survives the agent that served it: events are
        // written only once a client of this agent subscribes.
        let mut monitor: Array<MapData, u32> = Array::try_from(take(map_names::MONITOR)?)
            .map_err(map_err(map_names::MONITOR, "open"))?;
        monitor
            .set(0, 0, 0)
            .map_err(map_err(map_names::MONITOR, "reset"))?;

        let mut dp = Self {
            ebpf,
            cfg,
            ep_by_mac,
            ep_by_if,
            flood,
            host_routes,
            stats,
            ep_guard,
            ep_drops,
            v6_owners,
            host_addrs6,
            adopted,
        };
        let uplink = dp.cfg.uplink.clone();
        dp.attach(&uplink, Hook::FromLan)?;
        Ok(dp)
    }

    /// The settings it was loaded with.
    pub fn config(&self) -> &DataplaneConfig {
        &self.cfg
    }

    fn link_pin(&self, ifname: &str, hook: Hook) -> PathBuf {
        self.cfg
            .pin_dir
            .join(paths::LINKS_DIR)
            .join(pin_name(ifname, hook))
    }

    /// Attaches `hook`'s program to `ifname` and pins the link. If a pinned
    /// link exists (a previous agent's), the new program replaces the old one
    /// in it atomically.
    pub fn attach(&mut self, ifname: &str, hook: Hook) -> Result<(), DataplaneError> {
        self.attachments(ifname, &[hook])?.run()
    }

    /// Handles that attach `hooks`' programs to `ifname` without this
    /// `Dataplane`: [`Attachments::run`] blocks for a kernel RCU grace
    /// period per program (a TCX attach waits for one, ~10 ms on a small
    /// VM), which must not hold the lock every ADD, DEL and renewal needs.
    pub fn attachments(
        &mut self,
        ifname: &str,
        hooks: &[Hook],
    ) -> Result<Attachments, DataplaneError> {
        let mut progs = Vec::with_capacity(hooks.len());
        for &hook in hooks {
            let info = classifier(&mut self.ebpf, hook)?
                .info()
                .map_err(prog_err(format!("query {}", hook.program())))?;
            let prog = SchedClassifier::from_program_info(info, hook.program().into())
                .map_err(prog_err(format!("open a handle of {}", hook.program())))?;
            progs.push((prog, hook, self.link_pin(ifname, hook)));
        }
        Ok(Attachments {
            ifname: ifname.to_owned(),
            mode: self.cfg.attach,
            progs,
        })
    }

    /// Detaches `hook` from `ifname`: removes its pinned link, or its TC
    /// filter and pinned program. Succeeds if there is none.
    pub fn detach(&mut self, ifname: &str, hook: Hook) -> Result<(), DataplaneError> {
        attach::detach(ifname, hook, &self.link_pin(ifname, hook))
    }

    /// Whether `hook` has a pinned link on `ifname`.
    pub fn is_attached(&self, ifname: &str, hook: Hook) -> bool {
        self.link_pin(ifname, hook).exists()
    }

    /// Writes both endpoint entries for a pod interface.
    ///
    /// For a pod that runs its own DHCP client the agent knows no address,
    /// but the dataplane may have learnt one from the server's ACK: an entry
    /// without an address keeps the learnt one, so a restart or an update
    /// of the flags does not reopen the source check.
    ///
    /// The guard's limits are replaced, its running state (rate-limit
    /// times, IPv6 claims) kept; the endpoint's drop counters are created
    /// once and kept.
    pub fn upsert_endpoint(
        &mut self,
        host_ifindex: u32,
        mut ep: EndpointByIf,
        mut guard: EndpointGuard,
    ) -> Result<(), DataplaneError> {
        if let Ok(old) = self.ep_guard.get(&host_ifindex, 0) {
            guard.bcast_tat = old.bcast_tat;
            guard.dhcp_tat = old.dhcp_tat;
            guard.v6_claims = old.v6_claims;
        }
        // Before the endpoint entries: the programs see the limits first.
        self.ep_guard
            .insert(host_ifindex, guard, 0)
            .map_err(map_err(
                map_names::EP_GUARD,
                format!("insert index {host_ifindex}"),
            ))?;
        if self.ep_drops.get(&host_ifindex, 0).is_err() {
            let cpus = aya::util::nr_cpus().map_err(|(what, source)| DataplaneError::Pin {
                what: what.to_string(),
                source,
            })?;
            let zero =
                PerCpuValues::try_from(vec![EndpointDrops::default(); cpus]).map_err(|source| {
                    DataplaneError::Pin {
                        what: "per-CPU drop counters".into(),
                        source,
                    }
                })?;
            self.ep_drops
                .insert(host_ifindex, zero, 0)
                .map_err(map_err(
                    map_names::EP_DROPS,
                    format!("insert index {host_ifindex}"),
                ))?;
        }
        if ep.flags & endpoint_flags::OWN_DHCP != 0
            && ep.ipv4 == [0; 4]
            && let Some(old) = self.endpoint(host_ifindex)
            && old.mac == ep.mac
            && old.flags & endpoint_flags::OWN_DHCP != 0
        {
            ep.ipv4 = old.ipv4;
        }
        let by_mac = EndpointByMac {
            ifindex: host_ifindex,
            ipv4: ep.ipv4,
            flags: ep.flags,
        };
        self.ep_by_if.insert(host_ifindex, ep, 0).map_err(map_err(
            map_names::EP_BY_IF,
            format!("insert index {host_ifindex}"),
        ))?;
        self.ep_by_mac
            .insert(MacKey::new(ep.mac), by_mac, 0)
            .map_err(map_err(map_names::EP_BY_MAC, "insert"))?;
        Ok(())
    }

    /// Removes the endpoint entries of a host veth and takes the veth out of
    /// the fan-out list (before the veth can go away: a clone to a deleted
    /// interface fails); absent entries are fine.
    ///
    /// The `EP_BY_MAC` entry of `mac` is removed only while it still points
    /// at `host_ifindex`: a MAC is an identity, and another attachment may
    /// hold it by now (a pod re-created under the same name), whose entry
    /// this must never remove. `None` leaves `EP_BY_MAC` alone.
    pub fn remove_endpoint(
        &mut self,
        host_ifindex: u32,
        mac: Option<[u8; 6]>,
    ) -> Result<(), DataplaneError> {
        if let Some(mac) = mac
            && self
                .endpoint_by_mac(mac)
                .is_some_and(|e| e.ifindex == host_ifindex)
        {
            ignore_missing(self.ep_by_mac.remove(&MacKey::new(mac)))
                .map_err(map_err(map_names::EP_BY_MAC, "remove"))?;
        }
        ignore_missing(self.ep_by_if.remove(&host_ifindex)).map_err(map_err(
            map_names::EP_BY_IF,
            format!("remove index {host_ifindex}"),
        ))?;
        ignore_missing(self.ep_guard.remove(&host_ifindex)).map_err(map_err(
            map_names::EP_GUARD,
            format!("remove index {host_ifindex}"),
        ))?;
        ignore_missing(self.ep_drops.remove(&host_ifindex)).map_err(map_err(
            map_names::EP_DROPS,
            format!("remove index {host_ifindex}"),
        ))?;
        // Its IPv6 claims: the addresses are free for the next endpoint.
        let claims: Vec<Ipv6Key> = self
            .v6_owners
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, owner)| *owner == host_ifindex)
            .map(|(k, _)| k)
            .collect();
        for k in claims {
            ignore_missing(self.v6_owners.remove(&k))
                .map_err(map_err(map_names::V6_OWNERS, "remove a claim"))?;
        }
        let members: Vec<u32> = self
            .flood_members()
            .into_iter()
            .filter(|m| *m != host_ifindex)
            .collect();
        self.set_flood(&members)
    }

    /// The endpoint entry of a host veth, if any.
    pub fn endpoint(&self, host_ifindex: u32) -> Option<EndpointByIf> {
        self.ep_by_if.get(&host_ifindex, 0).ok()
    }

    /// The endpoint entry of a MAC, if any.
    pub fn endpoint_by_mac(&self, mac: [u8; 6]) -> Option<EndpointByMac> {
        self.ep_by_mac.get(&MacKey::new(mac), 0).ok()
    }

    /// Makes the broadcast fan-out list hold exactly `members`, changing as
    /// few slots as possible, in an order safe for the programs walking the
    /// list meanwhile (see [`flood_plan`]): a pod that stays a member never
    /// misses a frame, whatever else is added or removed. Re-writing the
    /// same set (agent restart) writes nothing.
    pub fn set_flood(&mut self, members: &[u32]) -> Result<(), DataplaneError> {
        let mut unique: Vec<u32> = Vec::with_capacity(members.len());
        for m in members {
            if *m != 0 && *m != FLOOD_EMPTY && !unique.contains(m) {
                unique.push(*m);
            }
        }
        if unique.len() >= MAX_ENDPOINTS as usize {
            return Err(DataplaneError::TooManyEndpoints {
                max: MAX_ENDPOINTS as usize - 1,
            });
        }
        for (slot, value) in flood_plan(&self.flood_slots(), &unique) {
            self.flood
                .set(slot, value, 0)
                .map_err(map_err(map_names::FLOOD, format!("set slot {slot}")))?;
        }
        Ok(())
    }

    /// The raw `FLOOD` slots before the terminating 0 (free slots included).
    fn flood_slots(&self) -> Vec<u32> {
        (0..MAX_ENDPOINTS)
            .map_while(|i| self.flood.get(&i, 0).ok().filter(|v| *v != 0))
            .collect()
    }

    /// The current broadcast fan-out list.
    pub fn flood_members(&self) -> Vec<u32> {
        self.flood_slots()
            .into_iter()
            .filter(|v| *v != FLOOD_EMPTY)
            .collect()
    }

    /// Replaces the host-routes trie with `prefixes`.
    pub fn set_host_routes(&mut self, prefixes: &[(Ipv4Addr, u8)]) -> Result<(), DataplaneError> {
        let old: Vec<Key<[u8; 4]>> = self.host_routes.keys().filter_map(Result::ok).collect();
        for (ip, len) in prefixes {
            let key = Key::new(u32::from(*len), ip.octets());
            self.host_routes.insert(&key, 1, 0).map_err(map_err(
                map_names::HOST_ROUTES,
                format!("insert {ip}/{len}"),
            ))?;
        }
        for k in old {
            let (len, data) = (k.prefix_len(), k.data());
            if !prefixes
                .iter()
                .any(|(ip, l)| u32::from(*l) == len && ip.octets() == data)
            {
                let _ = self.host_routes.remove(&k);
            }
        }
        Ok(())
    }

    /// Makes `HOST_ADDRS6`, the node IPv6 addresses whose neighbour
    /// solicitations from pods the programs answer with the host veth's
    /// MAC, hold exactly `addrs`: the new ones are inserted before the
    /// ones no longer there are removed, so an address in both sets is
    /// answered throughout. Re-writing the same set (agent restart, with
    /// the pinned map adopted) changes nothing. More addresses than the map
    /// holds are refused before anything is written.
    pub fn set_host_addrs6(&mut self, addrs: &[Ipv6Addr]) -> Result<(), DataplaneError> {
        let (insert, remove) = host_addrs6_plan(&self.host_addrs6(), addrs)?;
        for a in insert {
            self.host_addrs6
                .insert(Ipv6Key { addr: a.octets() }, 1, 0)
                .map_err(map_err(map_names::HOST_ADDRS6, format!("insert {a}")))?;
        }
        for a in remove {
            ignore_missing(self.host_addrs6.remove(&Ipv6Key { addr: a.octets() }))
                .map_err(map_err(map_names::HOST_ADDRS6, format!("remove {a}")))?;
        }
        Ok(())
    }

    /// The node IPv6 addresses in `HOST_ADDRS6`.
    pub fn host_addrs6(&self) -> Vec<Ipv6Addr> {
        self.host_addrs6
            .keys()
            .filter_map(Result::ok)
            .map(|k| Ipv6Addr::from(k.addr))
            .collect()
    }

    /// The drops counted against a host veth, summed over CPUs, by slot
    /// (slots with none left out).
    pub fn endpoint_drops(&self, host_ifindex: u32) -> Vec<(StatSlot, u64)> {
        let Ok(per_cpu) = self.ep_drops.get(&host_ifindex, 0) else {
            return Vec::new();
        };
        StatSlot::ALL
            .iter()
            .filter(|s| s.is_drop())
            .filter_map(|s| {
                let n: u64 = per_cpu.iter().map(|d| d.packets[s.index() as usize]).sum();
                (n > 0).then_some((*s, n))
            })
            .collect()
    }

    /// Records in `V6_OWNERS` that the endpoint of `host_ifindex` owns
    /// `addr`, the address the agent gave it (SLAAC or DHCPv6): its packets
    /// from it pass the source guard before (and whatever) its duplicate
    /// address detection says. Refused when another endpoint holds it.
    pub fn assign_v6(
        &mut self,
        addr: std::net::Ipv6Addr,
        host_ifindex: u32,
    ) -> Result<(), DataplaneError> {
        let key = Ipv6Key {
            addr: addr.octets(),
        };
        match self.v6_owner(addr) {
            Some(owner) if owner != host_ifindex => {
                return Err(DataplaneError::V6Claimed {
                    addr,
                    owner,
                    ifindex: host_ifindex,
                });
            }
            _ => {}
        }
        self.v6_owners
            .insert(key, host_ifindex, 0)
            .map_err(map_err(map_names::V6_OWNERS, format!("assign {addr}")))
    }

    /// The host veth ifindex whose endpoint holds `addr` in `V6_OWNERS`.
    pub fn v6_owner(&self, addr: Ipv6Addr) -> Option<u32> {
        self.v6_owners
            .get(
                &Ipv6Key {
                    addr: addr.octets(),
                },
                0,
            )
            .ok()
    }

    /// Sums the per-CPU counters of every `STATS` slot (verdicts and drop
    /// reasons).
    pub fn stats(&self) -> Result<Vec<(StatSlot, Counter)>, DataplaneError> {
        read_stats(&self.stats)
    }
}

/// The name of `hook`'s attachment pin on `ifname`: `<program>-<ifname>`,
/// with '.' as ':' (bpffs refuses names with '.', which interface names may
/// contain, VLANs: eth0.100; ':' never appears in one, `dev_valid_name`).
fn pin_name(ifname: &str, hook: Hook) -> String {
    format!("{}-{}", hook.program(), ifname.replace('.', ":"))
}

/// The hook and interface of an attachment pin's name ([`pin_name`]).
fn parse_pin_name(name: &str) -> Option<(Hook, String)> {
    [Hook::FromPod, Hook::ToPod, Hook::FromLan]
        .into_iter()
        .find_map(|h| Some((h, name.strip_prefix(h.program())?.strip_prefix('-')?)))
        .map(|(h, ifname)| (h, ifname.replace(':', ".")))
}

/// Detaches every program pinned under `pin_dir`'s `links/` (a TC filter
/// too, which a pin alone does not hold) and removes the pins; returns the
/// pins it removed. For `lanlinkd uninstall`, with no agent running.
pub fn detach_all(pin_dir: &Path) -> Result<Vec<String>, DataplaneError> {
    let dir = pin_dir.join(paths::LINKS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(DataplaneError::Pin {
                what: format!("read {}", dir.display()),
                source,
            });
        }
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((hook, ifname)) = parse_pin_name(&name) else {
            continue;
        };
        attach::detach(&ifname, hook, &entry.path())?;
        removed.push(name);
    }
    Ok(removed)
}

/// `hook`'s program in `ebpf`.
fn classifier(ebpf: &mut Ebpf, hook: Hook) -> Result<&mut SchedClassifier, DataplaneError> {
    ebpf.program_mut(hook.program())
        .ok_or(DataplaneError::Missing("program"))?
        .try_into()
        .map_err(prog_err(format!("use {} as a TC program", hook.program())))
}

/// Loads `prog`, trying again (up to 5 times in all, as libbpf does) while
/// the kernel answers `EAGAIN`: the verifier gives up so when a signal is
/// pending for the loading thread, which says nothing about the program.
fn load_retrying(prog: &mut SchedClassifier) -> Result<(), aya::programs::ProgramError> {
    for attempt in 1.. {
        match prog.load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < 5 =>
            {
                tracing::debug!(attempt, "program load interrupted (EAGAIN), again");
            }
            r => return r,
        }
    }
    unreachable!("the loop returns by its fifth attempt")
}

/// Held while attaching. The kernel attaches TCX programs under the RTNL
/// lock and waits there for an RCU grace period (`tcx_entry_sync`), so
/// attaches never run in parallel anyway; letting a hundred concurrent ADDs
/// queue all their attaches on RTNL at once starves every other netlink step
/// of those ADDs (veth, addresses, routes) and measured ~25% slower in
/// `cargo xtask bench` than taking them one at a time here.
static ATTACHING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Programs to attach to one interface, detached from the [`Dataplane`]
/// (see [`Dataplane::attachments`]).
pub struct Attachments {
    ifname: String,
    mode: AttachMode,
    /// Each program with its hook and its link's pin.
    progs: Vec<(SchedClassifier, Hook, PathBuf)>,
}

impl Attachments {
    /// Attaches each program and pins its link, in order, holding
    /// [`ATTACHING`]; blocks (see [`run_blocking`](Self::run_blocking)).
    pub fn run(self) -> Result<(), DataplaneError> {
        let _one = ATTACHING.lock().unwrap_or_else(|p| p.into_inner());
        for (mut prog, hook, pin) in self.progs {
            attach::attach(self.mode, &mut prog, &self.ifname, hook, &pin)?;
        }
        Ok(())
    }

    /// [`run`](Self::run) on tokio's blocking pool.
    pub async fn run_blocking(self) -> Result<(), DataplaneError> {
        let ifname = self.ifname.clone();
        tokio::task::spawn_blocking(move || self.run())
            .await
            .unwrap_or_else(|source| Err(DataplaneError::AttachTask { ifname, source }))
    }
}

/// The slot writes `(slot, value)` that turn the `FLOOD` list `slots` (the
/// values before its terminating 0) into one holding exactly `members`
/// (distinct, valid ifindexes), in order.
///
/// The programs read the list front to back while the agent writes it, one
/// slot at a time. So members that stay never move, a removed member's
/// slot becomes [`FLOOD_EMPTY`] (skipped), an added member takes the first
/// free slot or is appended after a terminator already in place, and a 0 is
/// only written over trailing free slots. A concurrent reader therefore sees
/// every member that is in both the old and the new list exactly once.
/// (Rewriting a packed list instead shifts members, and a reader can pass a
/// slot just before it is overwritten with the member it has not reached.)
pub fn flood_plan(slots: &[u32], members: &[u32]) -> Vec<(u32, u32)> {
    let mut cur = slots.to_vec();
    let mut writes = Vec::new();
    for i in 0..cur.len() {
        let v = cur[i];
        let keep = v != FLOOD_EMPTY && members.contains(&v) && !cur[..i].contains(&v);
        if v != FLOOD_EMPTY && !keep {
            writes.push((i as u32, FLOOD_EMPTY));
            cur[i] = FLOOD_EMPTY;
        }
    }
    for m in members {
        if cur.contains(m) {
            continue;
        }
        match cur.iter().position(|v| *v == FLOOD_EMPTY) {
            Some(i) => {
                writes.push((i as u32, *m));
                cur[i] = *m;
            }
            None => {
                let n = cur.len() as u32;
                // The slot after must already end the list: make sure of it
                // before extending the list into it.
                if n + 1 < MAX_ENDPOINTS {
                    writes.push((n + 1, 0));
                }
                writes.push((n, *m));
                cur.push(*m);
            }
        }
    }
    while cur.last() == Some(&FLOOD_EMPTY) {
        cur.pop();
        writes.push((cur.len() as u32, 0));
    }
    writes
}

/// What turns `HOST_ADDRS6` holding `old` into one holding exactly `want`
/// (duplicates counted once): `(insert, remove)`, each in the order given.
/// `TooManyHostAddrs6` when `want` holds more distinct addresses than the
/// map ([`MAX_HOST_ADDRS6`]).
pub fn host_addrs6_plan(
    old: &[Ipv6Addr],
    want: &[Ipv6Addr],
) -> Result<(Vec<Ipv6Addr>, Vec<Ipv6Addr>), DataplaneError> {
    let mut unique: Vec<Ipv6Addr> = Vec::with_capacity(want.len());
    for a in want {
        if !unique.contains(a) {
            unique.push(*a);
        }
    }
    if unique.len() > MAX_HOST_ADDRS6 as usize {
        return Err(DataplaneError::TooManyHostAddrs6 {
            count: unique.len(),
            max: MAX_HOST_ADDRS6 as usize,
        });
    }
    let insert = unique
        .iter()
        .filter(|a| !old.contains(a))
        .copied()
        .collect();
    let remove = old
        .iter()
        .filter(|a| !unique.contains(a))
        .copied()
        .collect();
    Ok((insert, remove))
}

/// Sums a `STATS` map's per-CPU counters.
pub fn read_stats(
    stats: &PerCpuArray<MapData, Counter>,
) -> Result<Vec<(StatSlot, Counter)>, DataplaneError> {
    let mut out = Vec::with_capacity(StatSlot::ALL.len());
    for v in StatSlot::ALL {
        let per_cpu = stats
            .get(&v.index(), 0)
            .map_err(map_err(map_names::STATS, "read"))?;
        let sum = per_cpu.iter().fold(Counter::default(), |a, c| Counter {
            packets: a.packets + c.packets,
            bytes: a.bytes + c.bytes,
        });
        out.push((*v, sum));
    }
    Ok(out)
}

/// Opens the pinned `STATS` map of an agent that may not be running.
pub fn open_pinned_stats(pin_dir: &Path) -> Result<PerCpuArray<MapData, Counter>, DataplaneError> {
    let data = MapData::from_pin(pin_dir.join(map_names::STATS))
        .map_err(map_err(map_names::STATS, "open pinned"))?;
    PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))
        .map_err(map_err(map_names::STATS, "open pinned"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(on_bpffs: bool, parent_exists: bool, parent_empty: bool) -> BpffsFacts {
        BpffsFacts {
            on_bpffs,
            parent_exists,
            parent_empty,
        }
    }

    #[test]
    fn bpffs_is_mounted_only_where_it_hides_nothing() {
        let default = Path::new("/sys/fs/bpf/lanlink");
        // Already on bpffs (the pin dir, or the ancestor it will be made in).
        assert_eq!(
            plan_bpffs(default, &facts(true, true, false)),
            BpffsPlan::Ready
        );
        assert_eq!(
            plan_bpffs(default, &facts(true, false, false)),
            BpffsPlan::Ready
        );
        // `ip netns exec`'s fresh sysfs: /sys/fs/bpf is there and empty.
        let root = BpffsPlan::Mount(PathBuf::from(BPFFS_ROOT));
        assert_eq!(plan_bpffs(default, &facts(false, true, true)), root);
        // /sys/fs/bpf is bpffs's own place: mounted on even when not empty.
        assert_eq!(plan_bpffs(default, &facts(false, true, false)), root);
        // A custom pin dir: its parent only when it exists and is empty.
        let custom = Path::new("/var/lib/lanlink/bpf");
        assert_eq!(
            plan_bpffs(custom, &facts(false, true, true)),
            BpffsPlan::Mount(PathBuf::from("/var/lib/lanlink"))
        );
        for f in [facts(false, true, false), facts(false, false, false)] {
            let BpffsPlan::Refuse { dir, .. } = plan_bpffs(custom, &f) else {
                panic!("{f:?}");
            };
            assert_eq!(dir, Path::new("/var/lib/lanlink"));
        }
        // Nested under a /sys/fs/bpf that is not bpffs: the parent is missing.
        assert!(matches!(
            plan_bpffs(
                Path::new("/sys/fs/bpf/lanlink/node1"),
                &facts(false, false, false)
            ),
            BpffsPlan::Refuse { .. }
        ));
        // No parent at all.
        assert!(matches!(
            plan_bpffs(Path::new("/"), &facts(false, false, false)),
            BpffsPlan::Refuse { .. }
        ));
        assert!(matches!(
            plan_bpffs(Path::new("pins"), &facts(false, true, true)),
            BpffsPlan::Refuse { .. }
        ));
    }

    #[test]
    fn bpffs_facts_read_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("a").join("pins");
        // tmpfs or ext4, never bpffs; the parent is missing.
        assert_eq!(bpffs_facts(&pin), facts(false, false, false));
        std::fs::create_dir(dir.path().join("a")).unwrap();
        assert_eq!(bpffs_facts(&pin), facts(false, true, true));
        std::fs::write(dir.path().join("a").join("x"), b"").unwrap();
        assert_eq!(bpffs_facts(&pin), facts(false, true, false));
    }

    #[test]
    fn a_refusal_names_the_path_and_the_command() {
        let e = DataplaneError::WontMountBpffs {
            pin_dir: PathBuf::from("/srv/x/pins"),
            dir: PathBuf::from("/srv/x"),
            why: "that directory is not empty and mounting would hide its files",
        };
        let msg = e.to_string();
        assert!(msg.contains("/srv/x/pins"), "{msg}");
        assert!(msg.contains("mount -t bpf bpf /srv/x"), "{msg}");
    }

    #[test]
    fn pin_names_round_trip() {
        for hook in [Hook::FromPod, Hook::ToPod, Hook::FromLan] {
            for ifname in ["eth0", "eth0.100", "ll1234abcd"] {
                let name = pin_name(ifname, hook);
                assert!(!name.contains('.'), "{name}");
                assert_eq!(parse_pin_name(&name), Some((hook, ifname.to_owned())));
            }
        }
        assert_eq!(parse_pin_name("from_podx-eth0"), None);
    }

    /// Applies `writes` one at a time to `array` and checks, after each
    /// one, that a reader walking the list sees every member of `stay`
    /// exactly once.
    fn apply_checked(array: &mut [u32], writes: &[(u32, u32)], stay: &[u32]) {
        let read = |a: &[u32]| -> Vec<u32> {
            a.iter()
                .take_while(|v| **v != 0)
                .copied()
                .filter(|v| *v != FLOOD_EMPTY)
                .collect()
        };
        for (slot, value) in writes {
            let before: Vec<usize> = stay
                .iter()
                .map(|m| array.iter().position(|v| v == m).unwrap())
                .collect();
            array[*slot as usize] = *value;
            let after: Vec<usize> = stay
                .iter()
                .map(|m| array.iter().position(|v| v == m).unwrap())
                .collect();
            assert_eq!(before, after, "a staying member moved");
            let seen = read(array);
            for m in stay {
                assert_eq!(
                    seen.iter().filter(|v| *v == m).count(),
                    1,
                    "{m} in {seen:?}"
                );
            }
        }
    }

    fn list(array: &[u32]) -> Vec<u32> {
        array.iter().take_while(|v| **v != 0).copied().collect()
    }

    #[test]
    fn flood_changes_never_hide_a_staying_member() {
        let mut array = [0u32; 16];
        // Add three, in the agent's (sorted, not insertion) order.
        let plan = flood_plan(&list(&array), &[5, 7, 9]);
        apply_checked(&mut array, &plan, &[]);
        assert_eq!(list(&array), [5, 7, 9]);
        // A new pod that sorts first: nobody moves.
        let plan = flood_plan(&list(&array), &[3, 5, 7, 9]);
        apply_checked(&mut array, &plan, &[5, 7, 9]);
        assert_eq!(list(&array), [5, 7, 9, 3]);
        // Remove one in the middle: a free slot, nobody moves.
        let plan = flood_plan(&list(&array), &[3, 5, 9]);
        apply_checked(&mut array, &plan, &[3, 5, 9]);
        assert_eq!(list(&array), [5, FLOOD_EMPTY, 9, 3]);
        // The free slot is reused.
        let plan = flood_plan(&list(&array), &[3, 5, 9, 11]);
        apply_checked(&mut array, &plan, &[3, 5, 9]);
        assert_eq!(list(&array), [5, 11, 9, 3]);
        // Removing the tail trims it; removing everything empties the list.
        let plan = flood_plan(&list(&array), &[5, 11]);
        apply_checked(&mut array, &plan, &[5, 11]);
        assert_eq!(list(&array), [5, 11]);
        let plan = flood_plan(&list(&array), &[]);
        apply_checked(&mut array, &plan, &[]);
        assert!(array.iter().all(|v| *v == 0), "{array:?}");
    }

    #[test]
    fn same_flood_set_writes_nothing() {
        assert!(flood_plan(&[5, FLOOD_EMPTY, 9], &[9, 5]).is_empty());
    }

    #[test]
    fn flood_duplicates_are_freed() {
        let mut array = [5, 5, 7, 0, 0, 0];
        let plan = flood_plan(&list(&array), &[5, 7]);
        apply_checked(&mut array, &plan, &[5, 7]);
        assert_eq!(list(&array), [5, FLOOD_EMPTY, 7]);
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn host_addrs6_plan_inserts_the_new_and_removes_the_gone() {
        let old = [v6("2001:2::1"), v6("2001:2::2")];
        let want = [v6("2001:2::2"), v6("2001:2::3"), v6("2001:2::3")];
        let (insert, remove) = host_addrs6_plan(&old, &want).unwrap();
        assert_eq!(insert, [v6("2001:2::3")]);
        assert_eq!(remove, [v6("2001:2::1")]);
        // The same set again (an agent restart on the adopted map): nothing.
        let (insert, remove) = host_addrs6_plan(&want[..2], &want).unwrap();
        assert!(insert.is_empty() && remove.is_empty());
        // Nothing wanted: everything goes.
        let (insert, remove) = host_addrs6_plan(&old, &[]).unwrap();
        assert!(insert.is_empty());
        assert_eq!(remove, old);
    }

    #[test]
    fn host_addrs6_plan_refuses_more_than_the_map_holds() {
        let max = MAX_HOST_ADDRS6 as usize;
        let many: Vec<Ipv6Addr> = (0..=max as u16)
            .map(|i| Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, i))
            .collect();
        // Exactly the limit fits, duplicates do not count.
        let mut full = many[..max].to_vec();
        full.push(many[0]);
        assert_eq!(host_addrs6_plan(&[], &full).unwrap().0.len(), max);
        let err = host_addrs6_plan(&[], &many).unwrap_err();
        assert!(
            matches!(err, DataplaneError::TooManyHostAddrs6 { count, max: m } if count == max + 1 && m == max),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "the node has {} IPv6 addresses for the neighbour responder, more than the {max} it holds",
                max + 1
            )
        );
    }
}
