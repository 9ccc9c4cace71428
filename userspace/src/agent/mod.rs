//! The agent's core: what ADD, DEL, CHECK and GC do, start-up re-adoption,
//! lease renewal, and the routes of pods and of the node.
//!
//! One file per verb: [`add`](Agent::add) with its undo (`add.rs`),
//! [`del`](Agent::del) (`remove.rs`), [`check`](Agent::check) (`check.rs`),
//! [`gc`](Agent::gc) (`gc.rs`), renewal and expiry (`renew.rs`), pod and host
//! routes (`routes.rs`), start-up and re-adoption (`start.rs`), the uplink's
//! address and state cache (`uplink.rs`). The kernel-facing work goes through
//! the seams of `seams.rs`, so all of it is unit-tested with fakes.
//!
//! The uplink's all-multicast mode follows the attachments: on while at
//! least one exists (or is being added), off after the last goes, and only
//! if the agent turned it on ([`Agent::hold_allmulti`]).
//!
//! Locking: the maps and the state are each behind a mutex held only for
//! short, non-blocking sections; DHCP and netlink work run without any global
//! lock, so many ADDs proceed concurrently. Operations on the same attachment
//! (ADD, DEL, CHECK, GC, renewal, expiry) are serialised by a per-attachment
//! lock ([`Agent::lock_key`]).

mod add;
mod check;
mod del_queue;
mod gc;
mod lan6;
mod remove;
mod renew;
mod routes;
mod seams;
mod start;
mod uplink;
mod v6;

#[cfg(test)]
pub(crate) mod fakes;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    fmt,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lanlink_api::{
    ApiError, AttachmentConfig, AttachmentResult, Dns, Interface, IpConfig, LeaseInfo, Mode, Route,
    StatusResponse, codes,
};
use lanlink_common::{EndpointByIf, EndpointGuard, endpoint_flags};
use tokio_util::sync::CancellationToken;

pub use self::{
    lan6::{Lan6, NodeLan6, RA_SETTLE},
    routes::{GATEWAY, pod_routes},
    seams::{Kernel, Leases, Links, Maps, Node, NodeLinks, NodeMaps},
    uplink::{Changed, UplinkView},
};
use crate::{
    dataplane::{Dataplane, DataplaneError},
    dhcp::{self, DhcpClient, DhcpError, Lease},
    netlink::{LinkInfo, NetlinkError, PodRoute, fmt_mac},
    state::{self, Endpoint, State, StateError, Store},
};

/// Errors of agent operations, each with its CNI error code.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The netconf asks for something invalid.
    #[error("invalid config: {field}: {reason}")]
    InvalidConfig {
        /// The offending key.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Another live attachment holds the MAC (and DHCP client id) this ADD
    /// would use: a pod re-created under the same namespace/name/interface
    /// before the old sandbox's DEL. Transient: it clears with that DEL.
    #[error(
        "pod identity {mac} is still held by attachment {holder} (container {holder_container}); \
         retry once it is deleted"
    )]
    IdentityInUse {
        /// The stable MAC.
        mac: String,
        /// The key of the attachment holding it.
        holder: String,
        /// Its container id.
        holder_container: String,
    },
    /// No lease could be obtained or released.
    #[error("dhcp on uplink {uplink}")]
    Dhcp {
        /// The uplink.
        uplink: String,
        /// What happened.
        #[source]
        source: DhcpError,
    },
    /// No DHCPv6 lease could be obtained.
    #[error("dhcpv6 on uplink {uplink}")]
    Dhcp6 {
        /// The uplink.
        uplink: String,
        /// What happened.
        #[source]
        source: crate::ipv6::dhcp6::Dhcp6Error,
    },
    /// The pod's duplicate address detection found its IPv6 address in
    /// use on the LAN (the address was declined or given up).
    #[error(
        "IPv6 address {address} ({how}) is already in use on the LAN (duplicate address detection failed)"
    )]
    Ipv6Conflict {
        /// The address.
        address: std::net::Ipv6Addr,
        /// `slaac` or `dhcpv6`.
        how: &'static str,
    },
    /// Interface, address or route work failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// Map or program work failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// The state could not be persisted.
    #[error(transparent)]
    State(#[from] StateError),
    /// CHECK found a difference.
    #[error("check failed: {0}")]
    CheckFailed(String),
    /// The attachment is unknown.
    #[error("no attachment {0}")]
    NotFound(String),
    /// The marker saying the agent turned the uplink's all-multicast mode
    /// on could not be written or removed.
    #[error("cannot update the all-multicast marker {path}")]
    AllmultiMarker {
        /// The marker file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    /// The CNI error code reported for it.
    pub fn code(&self) -> u32 {
        match self {
            AgentError::InvalidConfig { .. } => codes::INVALID_CONFIG,
            AgentError::IdentityInUse { .. } => codes::TRY_AGAIN_LATER,
            AgentError::Dhcp { .. }
            | AgentError::Dhcp6 { .. }
            | AgentError::Ipv6Conflict { .. } => codes::DHCP_FAILED,
            AgentError::Netlink(_) => codes::NETLINK,
            AgentError::Dataplane(_) => codes::DATAPLANE,
            AgentError::State(_) | AgentError::AllmultiMarker { .. } => codes::INTERNAL,
            AgentError::CheckFailed(_) | AgentError::NotFound(_) => codes::CHECK_FAILED,
        }
    }

    /// The API error body: the message and its whole cause chain.
    pub fn to_api(&self) -> ApiError {
        let mut details = Vec::new();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            details.push(s.to_string());
            src = s.source();
        }
        ApiError {
            code: self.code(),
            msg: self.to_string(),
            details: details.join(": "),
        }
    }
}

/// The agent's settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Uplink name.
    pub uplink: String,
    /// Where maps and links are pinned.
    pub pin_dir: std::path::PathBuf,
    /// Where state is persisted.
    pub state_dir: std::path::PathBuf,
    /// `lanlink_common::config` bits for the programs.
    pub dataplane_flags: u32,
    /// Use promiscuous mode on the uplink instead of its unicast filter.
    pub promiscuous: bool,
    /// More prefixes pods reach through the node (`--host-route`): the ARP
    /// responder answers for them, besides the uplink's own addresses and
    /// every netconf's `hostRoutes`.
    pub host_routes: Vec<lanlink_api::Ipv4Cidr>,
    /// The `iptables` binary for the agent's FORWARD and NAT rules
    /// (`crate::firewall`); `None` leaves netfilter alone.
    pub iptables: Option<String>,
    /// Idle time after which a conntrack-bypass flow is forgotten.
    pub flow_timeout: Duration,
    /// How the programs are attached (`--attach`).
    pub attach: crate::dataplane::AttachMode,
}

/// The running agent, over the real node ([`Node`]) or fakes (tests).
pub struct Agent<K: Kernel = Node> {
    cfg: AgentConfig,
    uplink: LinkInfo,
    links: K::Links,
    maps: K::Maps,
    leases: K::Leases,
    lan6: K::Lan6,
    store: Store,
    state: Mutex<State>,
    /// Per-attachment locks, by key.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Which attachment (key) holds each pod MAC, committed or in flight:
    /// the MAC-keyed things (`EP_BY_MAC`, the uplink filter, the lease) are
    /// its, and only its DEL removes them.
    macs: Mutex<HashMap<[u8; 6], String>>,
    renewals: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    shutdown: CancellationToken,
    flow_gc: Arc<crate::flows::GcStats>,
    host_routes: Mutex<routes::HostRoutes>,
    /// Serialises flood-list rewrites (read the members, write the list).
    flood: Mutex<()>,
    /// The uplink's addresses and state, kept by the uplink task.
    uplink_view: Mutex<UplinkView>,
    /// Start-up re-adoption is done.
    readopted: AtomicBool,
    /// Whether the pinned maps of a previous agent were adopted.
    adopted_maps: bool,
    firewall: Mutex<Option<crate::firewall::Firewall>>,
    /// Who needs the uplink in all-multicast mode; held across its netlink
    /// calls, so an async mutex.
    allmulti: tokio::sync::Mutex<AllMulti>,
}

/// The attachments that need the uplink in all-multicast mode, and whether
/// the agent is the one that turned it on.
#[derive(Debug, Default)]
struct AllMulti {
    /// Keys of committed attachments and of ADDs in flight.
    holders: HashSet<String>,
    /// The agent found `IFF_ALLMULTI` off and turned it on, so it turns it
    /// off after the last holder; kept across restarts by a marker file
    /// ([`ALLMULTI_MARKER`]).
    owned: bool,
}

/// The marker file, in the state directory, saying that the agent turned
/// the uplink's `IFF_ALLMULTI` on. It needs no fsync: the flag does not
/// survive a reboot either, and a marker without the flag is harmless (the
/// next start turns off what is already off).
const ALLMULTI_MARKER: &str = "uplink-allmulti";

/// The kernel-facing parts an [`Agent`] is built from.
pub struct Parts<K: Kernel> {
    /// Netlink.
    pub links: K::Links,
    /// Programs and maps.
    pub maps: K::Maps,
    /// DHCP.
    pub leases: K::Leases,
    /// IPv6: router advertisements, DHCPv6, the pods' IPv6.
    pub lan6: K::Lan6,
    /// The uplink link.
    pub uplink: LinkInfo,
    /// Its addresses and state at start.
    pub uplink_view: UplinkView,
    /// Whether the pinned maps of a previous agent were adopted.
    pub adopted_maps: bool,
}

/// The environment variable naming the fault-injection file of debug
/// builds ([`crash_point`]).
pub const CRASH_AT_ENV: &str = "LANLINK_TEST_CRASH_AT";

/// Fault injection for the crash-consistency scenario, in debug builds only
/// (release builds compile it out): when `LANLINK_TEST_CRASH_AT` names a
/// file holding `point`, the agent removes the file (so its restart goes
/// on) and SIGKILLs itself, as a crash at that point of ADD or DEL would.
/// Points: `add-veth`, `add-leased`, `add-registered`, `add-committed`,
/// `del-detached`, `del-veth-deleted`, `del-released`.
#[cfg(debug_assertions)]
pub(crate) fn crash_point(point: &str) {
    let Some(file) = std::env::var_os(CRASH_AT_ENV) else {
        return;
    };
    match std::fs::read_to_string(&file) {
        Ok(p) if p.trim() == point => {}
        _ => return,
    }
    let _ = std::fs::remove_file(&file);
    tracing::error!(point, "crash injected ({CRASH_AT_ENV}): killing the agent");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
}

/// Compiled out of release builds.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn crash_point(_point: &str) {}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// FNV-1a: a stable, dependency-free hash for interface names.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The host-side veth's MAC, set at creation: locally administered,
/// unicast, derived from the veth's name (so the same on every retry of an
/// ADD) and never equal to the pod's MAC.
pub fn host_veth_mac(host_veth: &str, pod_mac: [u8; 6]) -> [u8; 6] {
    let h = fnv1a(format!("lanlink host veth {host_veth}").as_bytes()).to_be_bytes();
    let mut mac = [h[0], h[1], h[2], h[3], h[4], h[5]];
    // Locally administered (bit 1), unicast (bit 0 clear).
    mac[0] = (mac[0] & 0xfc) | 0x02;
    if mac == pod_mac {
        mac[5] ^= 0x01;
    }
    mac
}

/// The host-side veth name of an attachment: `ll` + 12 hex digits (14 bytes,
/// under the kernel's 15).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!(
        "ll{:012x}",
        fnv1a(state::key(container_id, ifname).as_bytes()) & 0xffff_ffff_ffff
    )
}

fn lease_info(ep: &Endpoint, lease: &Lease) -> LeaseInfo {
    let state = if ep.expired {
        dhcp::LeasePhase::Expired
    } else {
        lease.phase_at(now_unix())
    };
    LeaseInfo {
        container_id: ep.container_id.clone(),
        ifname: ep.ifname.clone(),
        mac: ep.mac.into(),
        address: format!("{}/{}", lease.address, lease.prefix_len),
        server: lease.server_id.to_string(),
        lease_secs: lease.lease_secs,
        obtained_at: lease.obtained_at_unix,
        renew_at: lease.t1_at_unix(),
        expires_at: lease.expires_at_unix(),
        state: state.as_str().to_string(),
    }
}

fn result_for(ep: &Endpoint, routes: &[PodRoute]) -> AttachmentResult {
    let mut r = AttachmentResult {
        interfaces: vec![
            Interface {
                name: ep.host_veth.clone(),
                mac: ep.host_mac.into(),
                sandbox: None,
            },
            Interface {
                name: ep.ifname.clone(),
                mac: ep.mac.into(),
                sandbox: Some(ep.netns.clone()),
            },
        ],
        ips: Vec::new(),
        routes: routes
            .iter()
            .map(|r| Route {
                dst: format!("{}/{}", r.dst, r.prefix),
                gw: r.gw.map(|g| g.to_string()),
            })
            .collect(),
        dns: Dns::default(),
        lease: None,
    };
    if let Some(l) = &ep.lease {
        r.ips.push(IpConfig {
            address: format!("{}/{}", l.address, l.prefix_len),
            gateway: l.router.map(|g| g.to_string()),
            interface: Some(1),
        });
        r.dns = Dns {
            nameservers: l.dns.iter().map(ToString::to_string).collect(),
            domain: l.domain.clone(),
            search: l.search.clone(),
        };
        r.lease = Some(lease_info(ep, l));
    }
    if let Some(a) = &ep.ipv6 {
        r.ips.push(IpConfig {
            address: format!("{}/{}", a.address, a.prefix_len),
            gateway: a
                .router
                .filter(|_| ep.config.mode == Mode::Primary)
                .map(|g| g.to_string()),
            interface: Some(1),
        });
        r.routes
            .extend(v6::routes6(ep.config.mode, a).iter().map(|r| Route {
                dst: format!("{}/{}", r.dst, r.prefix),
                gw: r.gw.map(|g| g.to_string()),
            }));
        r.dns
            .nameservers
            .extend(a.dns.iter().map(ToString::to_string));
    }
    r
}

impl<K: Kernel> Agent<K> {
    /// An agent over `parts`, with the state of `store`; not ready until
    /// [`readopt`](Self::readopt) ran.
    pub fn new(
        cfg: AgentConfig,
        parts: Parts<K>,
        store: Store,
        shutdown: CancellationToken,
    ) -> Result<Self, AgentError> {
        let state = store.load()?;
        let macs = state
            .endpoints
            .iter()
            .map(|(key, ep)| (ep.mac, key.clone()))
            .collect();
        Ok(Agent {
            cfg,
            uplink: parts.uplink,
            links: parts.links,
            maps: parts.maps,
            leases: parts.leases,
            lan6: parts.lan6,
            store,
            state: Mutex::new(state),
            locks: Mutex::default(),
            macs: Mutex::new(macs),
            renewals: Mutex::default(),
            shutdown,
            flow_gc: Arc::default(),
            host_routes: Mutex::default(),
            flood: Mutex::default(),
            uplink_view: Mutex::new(parts.uplink_view),
            readopted: AtomicBool::new(false),
            adopted_maps: parts.adopted_maps,
            firewall: Mutex::default(),
            allmulti: tokio::sync::Mutex::default(),
        })
    }

    fn allmulti_marker(&self) -> PathBuf {
        self.cfg.state_dir.join(ALLMULTI_MARKER)
    }

    async fn write_allmulti_marker(&self, present: bool) -> Result<(), AgentError> {
        let path = self.allmulti_marker();
        let res = if present {
            tokio::fs::write(&path, b"lanlinkd turned IFF_ALLMULTI on\n").await
        } else {
            match tokio::fs::remove_file(&path).await {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        };
        res.map_err(|source| AgentError::AllmultiMarker { path, source })
    }

    /// Counts attachment `key` among those that need the uplink in
    /// all-multicast mode, and turns the mode on for the first one if it is
    /// off. A real NIC drops frames for groups the node itself has not
    /// joined; pods join any group (SSDP, mDNS, IPv6 solicited-node). With
    /// `--promiscuous` the uplink already receives every group: nothing to do.
    async fn hold_allmulti(&self, key: &str) -> Result<(), AgentError> {
        if self.cfg.promiscuous {
            return Ok(());
        }
        let mut am = self.allmulti.lock().await;
        if am.holders.is_empty() && !am.owned && !self.links.allmulti(self.uplink.index).await? {
            // The marker first: a crash in between leaves a marker without
            // the flag, which the next start clears.
            self.write_allmulti_marker(true).await?;
            if let Err(e) = self.links.set_allmulti(self.uplink.index, true).await {
                let _ = self.write_allmulti_marker(false).await;
                return Err(e.into());
            }
            am.owned = true;
            tracing::info!(uplink = %self.cfg.uplink, "all-multicast mode on (first attachment)");
        }
        am.holders.insert(key.to_string());
        Ok(())
    }

    /// Gives up `key`'s need of all-multicast mode; after the last holder,
    /// turns the mode off if the agent turned it on. An administrator's
    /// `allmulticast on` from before is never undone (from userspace the
    /// flag is one switch, not a count: turning it off would undo theirs).
    async fn release_allmulti(&self, key: &str) -> Result<(), AgentError> {
        let mut am = self.allmulti.lock().await;
        am.holders.remove(key);
        if am.holders.is_empty() && am.owned {
            self.links.set_allmulti(self.uplink.index, false).await?;
            am.owned = false;
            self.write_allmulti_marker(false).await?;
            tracing::info!(uplink = %self.cfg.uplink, "all-multicast mode off (no attachment left)");
        }
        Ok(())
    }

    /// At start, after re-adoption: `keys` (the adopted attachments) hold
    /// all-multicast mode; whether the agent owns it comes from the marker
    /// its previous run left.
    async fn adopt_allmulti(&self, keys: Vec<String>) -> Result<(), AgentError> {
        let owned = tokio::fs::try_exists(self.allmulti_marker())
            .await
            .unwrap_or(false);
        {
            let mut am = self.allmulti.lock().await;
            am.owned = owned;
            am.holders.clear();
        }
        if self.cfg.promiscuous || keys.is_empty() {
            // Nothing needs it: a mode the previous run left on goes.
            return self.release_allmulti("").await;
        }
        if owned {
            // The previous run turned it on; a crash between writing the
            // marker and setting the flag may have left it off.
            self.links.set_allmulti(self.uplink.index, true).await?;
        }
        for key in keys {
            self.hold_allmulti(&key).await?;
        }
        Ok(())
    }

    /// Counters of the conntrack-bypass flow expiry.
    pub fn flow_gc(&self) -> &crate::flows::GcStats {
        &self.flow_gc
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn uplink_view(&self) -> std::sync::MutexGuard<'_, UplinkView> {
        self.uplink_view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serialises operations on one attachment; the entry is dropped from
    /// `locks` when the last holder or waiter lets go.
    async fn lock_key(&self, key: &str) -> KeyLock<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(key.to_string()).or_default().clone()
        };
        KeyLock {
            locks: &self.locks,
            key: key.to_string(),
            guard: Some(lock.lock_owned().await),
        }
    }

    fn macs(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 6], String>> {
        self.macs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `mac` for attachment `key`; refused while another attachment
    /// holds it.
    fn claim_mac(&self, mac: [u8; 6], key: &str) -> Result<(), AgentError> {
        let mut macs = self.macs();
        match macs.get(&mac) {
            Some(holder) if holder != key => {
                let holder_container = holder.rsplit_once('/').map_or(holder.as_str(), |h| h.0);
                Err(AgentError::IdentityInUse {
                    mac: fmt_mac(&mac),
                    holder: holder.clone(),
                    holder_container: holder_container.to_string(),
                })
            }
            _ => {
                macs.insert(mac, key.to_string());
                Ok(())
            }
        }
    }

    /// Whether attachment `key` may remove what is keyed by `mac`: it holds
    /// it, or nobody does.
    fn owns_mac(&self, mac: [u8; 6], key: &str) -> bool {
        self.macs().get(&mac).is_none_or(|holder| holder == key)
    }

    /// Gives `mac` up, if `key` holds it.
    fn release_mac(&self, mac: [u8; 6], key: &str) {
        let mut macs = self.macs();
        if macs.get(&mac).is_some_and(|holder| holder == key) {
            macs.remove(&mac);
        }
    }

    /// Saves the state with `ep` inserted (or removed, for `None`). When the
    /// save fails, the state in memory is left as it was, so it never says
    /// more than the disk (a retried ADD must not find a half-undone pod).
    ///
    /// The snapshot is queued to the state's writer under the state lock
    /// (so the writer sees the changes in order) and written outside it,
    /// off the async workers. The revert touches only `key`, which the
    /// caller's per-attachment lock keeps to itself meanwhile.
    async fn commit(&self, key: &str, ep: Option<Endpoint>) -> Result<(), AgentError> {
        let (previous, pending) = {
            let mut st = self.state();
            let previous = match ep {
                Some(ep) => st.endpoints.insert(key.to_string(), ep),
                None => st.endpoints.remove(key),
            };
            (previous, self.store.submit(st.clone()))
        };
        if let Err(e) = pending.wait().await {
            let mut st = self.state();
            match previous {
                Some(prev) => st.endpoints.insert(key.to_string(), prev),
                None => st.endpoints.remove(key),
            };
            // Another attachment's snapshot, taken before this revert, may
            // still carry the change to disk: queue the reverted state so
            // the file follows memory once writes succeed again.
            let _ = self.store.submit(st.clone());
            return Err(e.into());
        }
        Ok(())
    }

    /// Rewrites the flood list from the state (every endpoint's host veth).
    fn sync_flood(&self) -> Result<(), AgentError> {
        // Read the members and write them under one lock, so two concurrent
        // syncs cannot write their lists in the opposite order of their reads.
        let _one = self.flood.lock().unwrap_or_else(|p| p.into_inner());
        let members: Vec<u32> = self
            .state()
            .endpoints
            .values()
            .map(|e| e.host_ifindex)
            .collect();
        self.maps.set_flood(&members)?;
        Ok(())
    }

    /// Why the agent cannot serve ADD now, if it cannot: re-adoption of the
    /// previous run's attachments not done yet, or the uplink down.
    pub fn not_ready(&self) -> Option<String> {
        if !self.readopted.load(Ordering::Acquire) {
            return Some("re-adopting the attachments of the previous run".into());
        }
        if !self.uplink_view().oper_up {
            return Some(format!("uplink {} is not up", self.cfg.uplink));
        }
        None
    }

    /// Status for `GET /v1/status`.
    pub fn status(&self) -> StatusResponse {
        let reason = self.not_ready();
        StatusResponse {
            ready: reason.is_none(),
            reason,
            version: env!("CARGO_PKG_VERSION").to_string(),
            uplink: self.cfg.uplink.clone(),
            uplink_ifindex: self.uplink.index,
            pin_dir: self.cfg.pin_dir.display().to_string(),
            endpoints: self.state().endpoints.len(),
            adopted: self.adopted_maps,
            attach: self.cfg.attach.to_string(),
        }
    }

    /// All endpoints.
    pub fn endpoints(&self) -> Vec<lanlink_api::EndpointInfo> {
        let infos: Vec<_> = self
            .state()
            .endpoints
            .values()
            .map(Endpoint::info)
            .collect();
        // The counters are read with the state lock released.
        infos
            .into_iter()
            .map(|mut info| {
                info.drops = self
                    .maps
                    .endpoint_drops(info.host_ifindex)
                    .into_iter()
                    .map(|(slot, n)| (slot.label().to_string(), n))
                    .collect();
                info
            })
            .collect()
    }

    /// All leases.
    pub fn leases(&self) -> Vec<LeaseInfo> {
        self.state()
            .endpoints
            .values()
            .filter_map(|e| e.lease.as_ref().map(|l| lease_info(e, l)))
            .collect()
    }

    fn endpoint_entry(&self, ep: &Endpoint) -> EndpointByIf {
        let mut flags = 0;
        // Still leasing counts as the agent's too: the dataplane learns an
        // OWN_DHCP endpoint's address from ACKs, and must not take the ACK
        // meant for the agent.
        if ep.lease.is_some() || ep.config.dhcp.is_some() {
            flags |= endpoint_flags::AGENT_DHCP;
        } else {
            flags |= endpoint_flags::OWN_DHCP;
        }
        if ep.config.mode == Mode::Secondary {
            flags |= endpoint_flags::SECONDARY;
        }
        if ep.expired {
            flags |= endpoint_flags::EXPIRED;
        }
        if ep.config.port_security.dhcp_server {
            flags |= endpoint_flags::DHCP_SERVER;
        }
        if ep.config.port_security.router_advertisements {
            flags |= endpoint_flags::ROUTER_ADVERT;
        }
        EndpointByIf {
            mac: ep.mac,
            host_mac: ep.host_mac,
            ipv4: ep
                .lease
                .as_ref()
                .map(|l| l.address.octets())
                .unwrap_or([0; 4]),
            flags,
        }
    }

    /// The endpoint's first-hop limits (its storm control).
    fn endpoint_guard(&self, ep: &Endpoint) -> EndpointGuard {
        let ps = ep.config.port_security;
        EndpointGuard::new(ps.broadcast_pps, ps.broadcast_burst)
    }

    fn check_uplink(&self, cfg: &AttachmentConfig) -> Result<(), AgentError> {
        match &cfg.uplink {
            Some(u) if *u != self.cfg.uplink => Err(AgentError::InvalidConfig {
                field: "uplink",
                reason: format!(
                    "the netconf names {u} but this node's agent serves {}",
                    self.cfg.uplink
                ),
            }),
            _ => Ok(()),
        }
    }
}

impl Agent<Node> {
    /// The DHCP client (for its counters).
    pub fn dhcp(&self) -> &DhcpClient {
        &self.leases
    }

    /// Runs `f` with the dataplane locked.
    pub fn with_dataplane<T>(&self, f: impl FnOnce(&mut Dataplane) -> T) -> T {
        self.maps.with(f)
    }
}

/// Wall time of each step of an ADD, for the `attached` log line: where a
/// slow pod start spent its time.
struct Phases {
    start: Instant,
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn start() -> Self {
        let now = Instant::now();
        Phases {
            start: now,
            last: now,
            done: Vec::new(),
        }
    }

    /// Ends the step `name`, begun at the previous mark.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done.push((name, now - self.last));
        self.last = now;
    }

    fn total_ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }
}

/// `veth=3.1ms dataplane=0.8ms ...`.
impl fmt::Display for Phases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, took)) in self.done.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{name}={:.1}ms", took.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

/// The lock of one attachment (see [`Agent::lock_key`]).
struct KeyLock<'a> {
    locks: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Anyone waiting for this attachment holds a clone: keep it then.
        if locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.key);
        }
    }
}
