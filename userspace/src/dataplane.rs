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
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, lpm_trie::Key},
    programs::{
        SchedClassifier, TcAttachType,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
    },
};
use lanlink_common::{
    Counter, EndpointByIf, EndpointByMac, MAX_ENDPOINTS, MacKey, Verdict, globals, map_names,
};

use crate::paths;

/// The eBPF object, embedded at build time (see build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lanlink.bpf.o"));

/// Errors of the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The agent was built without the eBPF object.
    #[error("this lanlinkd was built without its eBPF object; build it with `cargo xtask build`")]
    NoObject,
    /// bpffs is not mounted where the pin directory is.
    #[error("{path} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)")]
    NotBpffs {
        /// The pin directory.
        path: PathBuf,
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
    /// The node already has as many endpoints as the maps hold.
    #[error("the node already has the maximum of {max} endpoints")]
    TooManyEndpoints {
        /// The limit.
        max: usize,
    },
    /// The object lacks an expected program or map.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
}

fn map_err(
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

impl Dataplane {
    /// Loads the object (reusing pinned maps), attaches from-LAN to the
    /// uplink, and returns the handle.
    pub fn load(cfg: DataplaneConfig) -> Result<Self, DataplaneError> {
        if OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let parent = cfg.pin_dir.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(&cfg.pin_dir).map_err(|source| DataplaneError::Pin {
            what: format!("create {}", cfg.pin_dir.display()),
            source,
        })?;
        if !is_bpffs(&cfg.pin_dir) {
            return Err(DataplaneError::NotBpffs {
                path: parent.to_path_buf(),
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
            let prog: &mut SchedClassifier = ebpf
                .program_mut(hook.program())
                .ok_or(DataplaneError::Missing("program"))?
                .try_into()
                .map_err(prog_err(format!("use {} as a TC program", hook.program())))?;
            prog.load()
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

        let mut dp = Self {
            ebpf,
            cfg,
            ep_by_mac,
            ep_by_if,
            flood,
            host_routes,
            stats,
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
        // bpffs refuses names with '.', which interface names may contain
        // (VLANs: eth0.100); ':' never appears in one (dev_valid_name).
        let ifname = ifname.replace('.', ":");
        self.cfg
            .pin_dir
            .join(paths::LINKS_DIR)
            .join(format!("{}-{ifname}", hook.program()))
    }

    /// Attaches `hook`'s program to `ifname` and pins the link. If a pinned
    /// link exists (a previous agent's), the new program replaces the old one
    /// in it atomically.
    pub fn attach(&mut self, ifname: &str, hook: Hook) -> Result<(), DataplaneError> {
        let pin = self.link_pin(ifname, hook);
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(hook.program())
            .ok_or(DataplaneError::Missing("program"))?
            .try_into()
            .map_err(prog_err(format!("use {} as a TC program", hook.program())))?;
        if pin.exists() {
            let replaced = PinnedLink::from_pin(&pin)
                .ok()
                .and_then(|old| SchedClassifierLink::try_from(FdLink::from(old)).ok())
                .is_some_and(|link| {
                    prog.attach_to_link(link)
                        .and_then(|id| prog.take_link(id))
                        .is_ok()
                });
            if replaced {
                // The pin still refers to the same kernel link, which now
                // runs the new program; dropping our fd changes nothing.
                return Ok(());
            }
            // A link whose interface is gone cannot be updated: start over.
            std::fs::remove_file(&pin).map_err(|source| DataplaneError::Pin {
                what: format!("remove stale link {}", pin.display()),
                source,
            })?;
        }
        let id = prog
            .attach(ifname, hook.attach_type())
            .map_err(prog_err(format!("attach {} to {ifname}", hook.program())))?;
        let link = prog.take_link(id).map_err(prog_err("take the link"))?;
        let fd: FdLink = link
            .try_into()
            .map_err(|e: LinkError| DataplaneError::Pin {
                what: format!("pin link: {e}"),
                source: io::Error::other(e.to_string()),
            })?;
        fd.pin(&pin).map_err(|e| DataplaneError::Pin {
            what: format!("pin link {}", pin.display()),
            source: io::Error::other(e.to_string()),
        })?;
        Ok(())
    }

    /// Detaches `hook` from `ifname` by removing its pinned link. Succeeds if
    /// there is none.
    pub fn detach(&mut self, ifname: &str, hook: Hook) -> Result<(), DataplaneError> {
        let pin = self.link_pin(ifname, hook);
        match std::fs::remove_file(&pin) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DataplaneError::Pin {
                what: format!("remove {}", pin.display()),
                source,
            }),
        }
    }

    /// Whether `hook` has a pinned link on `ifname`.
    pub fn is_attached(&self, ifname: &str, hook: Hook) -> bool {
        self.link_pin(ifname, hook).exists()
    }

    /// Writes both endpoint entries for a pod interface.
    pub fn upsert_endpoint(
        &mut self,
        host_ifindex: u32,
        ep: EndpointByIf,
    ) -> Result<(), DataplaneError> {
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

    /// Removes both endpoint entries; absent entries are fine.
    pub fn remove_endpoint(
        &mut self,
        host_ifindex: u32,
        mac: [u8; 6],
    ) -> Result<(), DataplaneError> {
        let ignore_missing = |r: Result<(), aya::maps::MapError>| match r {
            Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        };
        ignore_missing(self.ep_by_mac.remove(&MacKey::new(mac)))
            .map_err(map_err(map_names::EP_BY_MAC, "remove"))?;
        ignore_missing(self.ep_by_if.remove(&host_ifindex)).map_err(map_err(
            map_names::EP_BY_IF,
            format!("remove index {host_ifindex}"),
        ))?;
        Ok(())
    }

    /// The endpoint entry of a host veth, if any.
    pub fn endpoint(&self, host_ifindex: u32) -> Option<EndpointByIf> {
        self.ep_by_if.get(&host_ifindex, 0).ok()
    }

    /// The endpoint entry of a MAC, if any.
    pub fn endpoint_by_mac(&self, mac: [u8; 6]) -> Option<EndpointByMac> {
        self.ep_by_mac.get(&MacKey::new(mac), 0).ok()
    }

    /// Rewrites the broadcast fan-out list: `members` packed from slot 0,
    /// then a 0 terminator, then the old tail cleared. A frame flooded while
    /// this runs may miss or double one pod; the list is never unterminated.
    pub fn set_flood(&mut self, members: &[u32]) -> Result<(), DataplaneError> {
        if members.len() >= MAX_ENDPOINTS as usize {
            return Err(DataplaneError::TooManyEndpoints {
                max: MAX_ENDPOINTS as usize - 1,
            });
        }
        let old_len = self.flood_members().len();
        let n = members.len() as u32;
        for (i, m) in members.iter().enumerate() {
            self.flood
                .set(i as u32, m, 0)
                .map_err(map_err(map_names::FLOOD, "set"))?;
        }
        for i in n..=(old_len as u32).max(n).min(MAX_ENDPOINTS - 1) {
            self.flood
                .set(i, 0, 0)
                .map_err(map_err(map_names::FLOOD, "clear"))?;
        }
        Ok(())
    }

    /// The current broadcast fan-out list.
    pub fn flood_members(&self) -> Vec<u32> {
        (0..MAX_ENDPOINTS)
            .map_while(|i| self.flood.get(&i, 0).ok().filter(|v| *v != 0))
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

    /// Sums the per-CPU counters of every verdict.
    pub fn stats(&self) -> Result<Vec<(Verdict, Counter)>, DataplaneError> {
        read_stats(&self.stats)
    }
}

/// Sums a `STATS` map's per-CPU counters.
pub fn read_stats(
    stats: &PerCpuArray<MapData, Counter>,
) -> Result<Vec<(Verdict, Counter)>, DataplaneError> {
    let mut out = Vec::with_capacity(Verdict::ALL.len());
    for v in Verdict::ALL {
        let per_cpu = stats
            .get(&(*v as u32), 0)
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
