//! The agent's core: what ADD, DEL, CHECK and GC do, start-up re-adoption,
//! and lease renewal.
//!
//! Locking: the dataplane and the state are each behind a mutex held only for
//! short, non-blocking sections; DHCP and netlink work run without any global
//! lock, so many ADDs proceed concurrently. Operations on the same attachment
//! are serialised by a per-attachment lock.

use std::{
    collections::HashMap,
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lanlink_cni::api::{
    self, AttachmentConfig, AttachmentId, AttachmentRequest, AttachmentResult, Dns, GcRequest,
    GcResponse, Identity, Interface, IpConfig, LeaseInfo, Mode, Route, StatusResponse, codes,
};
use lanlink_common::{EndpointByIf, endpoint_flags};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    dataplane::{Dataplane, DataplaneError, Hook},
    dhcp::{self, DhcpClient, DhcpError, Lease, LeaseRequest},
    netlink::{self, NetlinkError, PodConfig, PodRoute, fmt_mac},
    state::{self, Endpoint, State, StateError, Store},
};

/// The link-local gateway every pod routes host-bound traffic through.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

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
    /// No lease could be obtained or released.
    #[error("dhcp on uplink {uplink}")]
    Dhcp {
        /// The uplink.
        uplink: String,
        /// What happened.
        #[source]
        source: DhcpError,
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
}

impl AgentError {
    /// The CNI error code reported for it.
    pub fn code(&self) -> u32 {
        match self {
            AgentError::InvalidConfig { .. } => codes::INVALID_CONFIG,
            AgentError::Dhcp { .. } => codes::DHCP_FAILED,
            AgentError::Netlink(_) => codes::NETLINK,
            AgentError::Dataplane(_) => codes::DATAPLANE,
            AgentError::State(_) => codes::INTERNAL,
            AgentError::CheckFailed(_) | AgentError::NotFound(_) => codes::CHECK_FAILED,
        }
    }

    /// The API error body: the message and its whole cause chain.
    pub fn to_api(&self) -> api::ApiError {
        let mut details = Vec::new();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            details.push(s.to_string());
            src = s.source();
        }
        api::ApiError {
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
    pub pin_dir: PathBuf,
    /// Where state is persisted.
    pub state_dir: PathBuf,
    /// `lanlink_common::config` bits for the programs.
    pub dataplane_flags: u32,
    /// Use promiscuous mode on the uplink instead of its unicast filter.
    pub promiscuous: bool,
    /// More prefixes pods reach through the node (`--host-route`): the ARP
    /// responder answers for them, besides the uplink's own addresses and
    /// every netconf's `hostRoutes`.
    pub host_routes: Vec<String>,
    /// The `iptables` binary for the agent's FORWARD and NAT rules
    /// (`crate::firewall`); `None` leaves netfilter alone.
    pub iptables: Option<String>,
    /// Idle time after which a conntrack-bypass flow is forgotten.
    pub flow_timeout: Duration,
}

/// The running agent.
pub struct Agent {
    cfg: AgentConfig,
    uplink: netlink::LinkInfo,
    dp: Mutex<Dataplane>,
    dhcp: DhcpClient,
    nl: rtnetlink::Handle,
    store: Store,
    state: Mutex<State>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    renewals: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    shutdown: CancellationToken,
    flow_gc: Arc<crate::flows::GcStats>,
    host_routes: Mutex<HostRoutes>,
    firewall: Mutex<Option<crate::firewall::Firewall>>,
}

/// What feeds the host-routes map besides the state: the `hostRoutes` of
/// ADDs in flight (not committed yet), so that concurrent ADDs and DELs,
/// each rewriting the whole map, never drop one another's prefixes.
#[derive(Debug, Default)]
struct HostRoutes {
    in_flight: Vec<String>,
}

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

/// The host-side veth name of an attachment: `ll` + 12 hex digits (14 bytes,
/// under the kernel's 15).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!(
        "ll{:012x}",
        fnv1a(state::key(container_id, ifname).as_bytes()) & 0xffff_ffff_ffff
    )
}

fn parse_cidr(field: &'static str, s: &str) -> Result<(Ipv4Addr, u8), AgentError> {
    let bad = || AgentError::InvalidConfig {
        field,
        reason: format!("{s:?} is not an IPv4 CIDR"),
    };
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok((ip, len))
}

/// The uplink subnet among `addresses` that `cidr` covers entirely, if any.
fn covered_subnet(cidr: (Ipv4Addr, u8), addresses: &[(Ipv4Addr, u8)]) -> Option<(Ipv4Addr, u8)> {
    use crate::firewall::network;
    addresses.iter().find_map(|&(ip, len)| {
        let subnet = network(ip, len);
        (cidr.1 <= len && network(subnet, cidr.1) == network(cidr.0, cidr.1))
            .then_some((subnet, len))
    })
}

/// The routes written in the pod for `mode` (DESIGN.md "Packet paths").
pub fn pod_routes(cfg: &AttachmentConfig, lease: &Lease) -> Result<Vec<PodRoute>, AgentError> {
    let src = Some(lease.address);
    let mut routes = Vec::new();
    match cfg.mode {
        Mode::Primary => {
            routes.push(PodRoute {
                dst: GATEWAY,
                prefix: 32,
                gw: None,
                src,
            });
            if lease.classless_routes.is_empty() {
                if let Some(r) = lease.router {
                    routes.push(PodRoute {
                        dst: Ipv4Addr::UNSPECIFIED,
                        prefix: 0,
                        gw: Some(r),
                        src,
                    });
                }
            } else {
                // RFC 3442: with option 121 present, option 3 is ignored.
                for (dst, prefix, gw) in &lease.classless_routes {
                    let gw = (!gw.is_unspecified()).then_some(*gw);
                    routes.push(PodRoute {
                        dst: *dst,
                        prefix: *prefix,
                        gw,
                        src,
                    });
                }
            }
            for cidr in &cfg.host_routes {
                let (dst, prefix) = parse_cidr("hostRoutes", cidr)?;
                routes.push(PodRoute {
                    dst,
                    prefix,
                    gw: Some(GATEWAY),
                    src,
                });
            }
        }
        Mode::Secondary => {
            routes.push(PodRoute {
                dst: Ipv4Addr::new(224, 0, 0, 0),
                prefix: 4,
                gw: None,
                src,
            });
            // Limited broadcast (Wake-on-LAN, discovery) would otherwise
            // follow the primary interface's default route, away from the LAN.
            routes.push(PodRoute {
                dst: Ipv4Addr::BROADCAST,
                prefix: 32,
                gw: None,
                src,
            });
        }
    }
    Ok(routes)
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
        mac: fmt_mac(&ep.mac),
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
                mac: fmt_mac(&ep.host_mac),
                sandbox: None,
            },
            Interface {
                name: ep.ifname.clone(),
                mac: fmt_mac(&ep.mac),
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
    r
}

fn parse_send_options(cfg: &api::DhcpConfig) -> Result<Vec<(u8, Vec<u8>)>, AgentError> {
    cfg.send_options
        .iter()
        .map(|o| {
            if o.code == 0 || o.code == 255 {
                return Err(AgentError::InvalidConfig {
                    field: "dhcp.sendOptions",
                    reason: format!("option code {} is reserved", o.code),
                });
            }
            let value = match o.value.strip_prefix("0x") {
                Some(hex) if hex.len() % 2 == 0 => (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| AgentError::InvalidConfig {
                        field: "dhcp.sendOptions",
                        reason: format!("{:?} is not hex", o.value),
                    })?,
                Some(_) => {
                    return Err(AgentError::InvalidConfig {
                        field: "dhcp.sendOptions",
                        reason: format!("{:?} has an odd number of hex digits", o.value),
                    });
                }
                None => o.value.as_bytes().to_vec(),
            };
            Ok((o.code, value))
        })
        .collect()
}

/// The IPv4 addresses (with prefix lengths) of interface `index`.
async fn uplink_addresses(
    nl: &rtnetlink::Handle,
    index: u32,
) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
    use futures::TryStreamExt as _;
    use rtnetlink::packet_route::address::AddressAttribute;
    let mut out = Vec::new();
    let mut addrs = nl.address().get().set_link_index_filter(index).execute();
    while let Some(a) = addrs
        .try_next()
        .await
        .map_err(|source| NetlinkError::Request {
            what: format!("list the addresses of index {index}"),
            source,
        })?
    {
        for attr in &a.attributes {
            if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = attr {
                out.push((*ip, a.header.prefix_len));
            }
        }
    }
    out.dedup();
    Ok(out)
}

/// Work already done by an ADD, undone in reverse if a later step fails.
#[derive(Default)]
struct Undo {
    veth: Option<String>,
    uc_filter: Option<[u8; 6]>,
    attached: bool,
    endpoint: Option<(u32, [u8; 6])>,
    lease: Option<Lease>,
}

impl Agent {
    /// Starts the agent: loads the dataplane, opens the DHCP socket, and
    /// re-adopts the attachments of a previous run.
    pub async fn start(cfg: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<Arc<Self>> {
        use anyhow::Context as _;
        let nl = netlink::connect()?;
        let uplink = netlink::link(&nl, &cfg.uplink)
            .await
            .with_context(|| format!("uplink {}", cfg.uplink))?;
        let dp = Dataplane::load(crate::dataplane::DataplaneConfig {
            uplink: cfg.uplink.clone(),
            uplink_ifindex: uplink.index,
            pin_dir: cfg.pin_dir.clone(),
            flags: cfg.dataplane_flags,
        })
        .context("load the dataplane")?;
        let dhcp = DhcpClient::new(&cfg.uplink).context("open the DHCP socket on the uplink")?;
        let store = Store::new(&cfg.state_dir)?;
        let state = store.load()?;
        if cfg.promiscuous {
            nl.link()
                .set(
                    rtnetlink::LinkUnspec::new_with_index(uplink.index)
                        .promiscuous(true)
                        .build(),
                )
                .execute()
                .await
                .context("set the uplink promiscuous")?;
        }
        for cidr in &cfg.host_routes {
            parse_cidr("--host-route", cidr)?;
        }
        let mut firewall = None;
        if let Some(iptables) = &cfg.iptables {
            // Before re-adoption: pods of a previous run forward through
            // these rules as soon as their programs are swapped.
            let addresses = uplink_addresses(&nl, uplink.index).await?;
            let fw = crate::firewall::Firewall::new(iptables, &cfg.uplink, &addresses);
            fw.install()
                .context("install the agent's netfilter rules")?;
            firewall = Some(fw);
        }
        let agent = Arc::new(Self {
            cfg,
            uplink,
            dp: Mutex::new(dp),
            dhcp,
            nl,
            store,
            state: Mutex::new(state),
            locks: Mutex::new(HashMap::new()),
            renewals: Mutex::new(HashMap::new()),
            shutdown,
            flow_gc: Arc::default(),
            host_routes: Mutex::default(),
            firewall: Mutex::new(firewall),
        });
        agent.readopt().await;
        agent
            .sync_host_routes()
            .await
            .context("write the host-routes map")?;
        tokio::spawn(crate::flows::run_gc(
            agent.cfg.pin_dir.clone(),
            agent.cfg.flow_timeout,
            Arc::clone(&agent.flow_gc),
            agent.shutdown.clone(),
        ));
        Ok(agent)
    }

    /// Counters of the conntrack-bypass flow expiry.
    pub fn flow_gc(&self) -> &crate::flows::GcStats {
        &self.flow_gc
    }

    /// Adds (`true`) or removes the `hostRoutes` of an ADD in flight.
    fn host_routes_in_flight(&self, cidrs: &[String], add: bool) {
        let mut hr = self.host_routes.lock().unwrap_or_else(|p| p.into_inner());
        for c in cidrs {
            if add {
                hr.in_flight.push(c.clone());
            } else if let Some(i) = hr.in_flight.iter().position(|x| x == c) {
                hr.in_flight.swap_remove(i);
            }
        }
    }

    /// Rewrites the host-routes map from the uplink's addresses (/32s),
    /// `--host-route`, and the `hostRoutes` of every attachment and of the
    /// ADDs in flight, host bits cleared. The ARP responder answers for
    /// these prefixes with the host veth's MAC, so a pod reaches its own
    /// node's addresses through the node's stack: on L2 they would hairpin
    /// out of the uplink, which no switch port sends back.
    ///
    /// Also re-installs the netfilter rules if the uplink's subnets changed
    /// since they were installed (the masquerade is per subnet).
    async fn sync_host_routes(&self) -> Result<(), AgentError> {
        // A connection of its own: the kernel runs one dump at a time per
        // netlink socket, and concurrent ADDs would get EBUSY on the shared one.
        let nl = netlink::connect()?;
        let addresses = uplink_addresses(&nl, self.uplink.index).await?;
        {
            // Held across computing and writing, so the last writer always
            // wrote a complete set.
            let hr = self.host_routes.lock().unwrap_or_else(|p| p.into_inner());
            let configured: Vec<String> = self
                .state()
                .endpoints
                .values()
                .flat_map(|e| e.config.host_routes.iter().cloned())
                .chain(self.cfg.host_routes.iter().cloned())
                .chain(hr.in_flight.iter().cloned())
                .collect();
            let mut prefixes: Vec<(Ipv4Addr, u8)> =
                addresses.iter().map(|(ip, _)| (*ip, 32)).collect();
            for cidr in &configured {
                let (ip, len) = parse_cidr("hostRoutes", cidr)?;
                // The responder would then answer for the LAN's own hosts,
                // router included, and pull every pod's LAN traffic into
                // the node: such a prefix is routed, never answered.
                if let Some((net, net_len)) = covered_subnet((ip, len), &addresses) {
                    warn!(host_route = %cidr, subnet = %format!("{net}/{net_len}"), "hostRoutes entry covers the uplink's subnet; not answering ARP for it");
                    continue;
                }
                prefixes.push((ip, len));
            }
            let mut prefixes: Vec<(Ipv4Addr, u8)> = prefixes
                .into_iter()
                .map(|(ip, len)| (crate::firewall::network(ip, len), len))
                .collect();
            prefixes.sort();
            prefixes.dedup();
            self.with_dataplane(|dp| dp.set_host_routes(&prefixes))?;
        }
        self.refresh_firewall(&addresses).await;
        Ok(())
    }

    /// Re-installs the netfilter rules when the uplink's addresses changed
    /// the rules (a node that got its address after the agent started).
    /// Failures are logged: the rules of before stay.
    async fn refresh_firewall(&self, addresses: &[(Ipv4Addr, u8)]) {
        let Some(iptables) = &self.cfg.iptables else {
            return;
        };
        let want = crate::firewall::Firewall::new(iptables, &self.cfg.uplink, addresses);
        let installed = || self.firewall.lock().unwrap_or_else(|p| p.into_inner());
        if installed().as_ref() == Some(&want) {
            return;
        }
        let fw = want.clone();
        match tokio::task::spawn_blocking(move || fw.install()).await {
            Ok(Ok(())) => {
                info!("uplink subnets changed; netfilter rules re-installed");
                *installed() = Some(want);
            }
            Ok(Err(e)) => warn!(error = %e, "cannot re-install the netfilter rules"),
            Err(e) => warn!(error = %e, "netfilter re-install task failed"),
        }
    }

    /// The DHCP client (for its counters).
    pub fn dhcp(&self) -> &DhcpClient {
        &self.dhcp
    }

    /// Runs `f` with the dataplane locked.
    pub fn with_dataplane<T>(&self, f: impl FnOnce(&mut Dataplane) -> T) -> T {
        f(&mut self.dp.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Saves the state with `ep` inserted (or removed, for `None`). When the
    /// save fails, the state in memory is left as it was, so it never says
    /// more than the disk (a retried ADD must not find a half-undone pod).
    fn commit(&self, key: &str, ep: Option<Endpoint>) -> Result<(), AgentError> {
        let mut st = self.state();
        let previous = match ep {
            Some(ep) => st.endpoints.insert(key.to_string(), ep),
            None => st.endpoints.remove(key),
        };
        if let Err(e) = self.store.save(&st) {
            match previous {
                Some(prev) => st.endpoints.insert(key.to_string(), prev),
                None => st.endpoints.remove(key),
            };
            return Err(e.into());
        }
        Ok(())
    }

    /// Rewrites the flood list from the state (every endpoint's host veth).
    fn sync_flood(&self) -> Result<(), AgentError> {
        // Read the members with the dataplane locked, so two concurrent
        // syncs cannot write their lists in the opposite order of their
        // reads (lock order everywhere: dataplane, then state).
        self.with_dataplane(|dp| {
            let members: Vec<u32> = self
                .state()
                .endpoints
                .values()
                .map(|e| e.host_ifindex)
                .collect();
            dp.set_flood(&members)
        })?;
        Ok(())
    }

    /// Status for `GET /v1/status`.
    pub fn status(&self) -> StatusResponse {
        let adopted = self.with_dataplane(|dp| dp.adopted);
        StatusResponse {
            ready: true,
            reason: None,
            version: env!("CARGO_PKG_VERSION").to_string(),
            uplink: self.cfg.uplink.clone(),
            uplink_ifindex: self.uplink.index,
            pin_dir: self.cfg.pin_dir.display().to_string(),
            endpoints: self.state().endpoints.len(),
            adopted,
        }
    }

    /// All endpoints.
    pub fn endpoints(&self) -> Vec<api::EndpointInfo> {
        self.state()
            .endpoints
            .values()
            .map(Endpoint::info)
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

    /// CNI ADD.
    pub async fn add(
        self: &Arc<Self>,
        req: AttachmentRequest,
    ) -> Result<AttachmentResult, AgentError> {
        self.check_uplink(&req.config)?;
        let netns = req.netns.clone().ok_or(AgentError::InvalidConfig {
            field: "CNI_NETNS",
            reason: "ADD needs the pod's network namespace".into(),
        })?;
        let key = state::key(&req.container_id, &req.ifname);
        let _guard = self.lock_key(&key).await;

        if let Some(existing) = self.state().endpoints.get(&key).cloned() {
            // The runtime retried an ADD that succeeded: answer the same result.
            if existing.netns == netns {
                let routes = match &existing.lease {
                    Some(l) => pod_routes(&existing.config, l)?,
                    None => Vec::new(),
                };
                return Ok(result_for(&existing, &routes));
            }
            return Err(AgentError::InvalidConfig {
                field: "CNI_CONTAINERID",
                reason: format!("{key} is already attached in {}", existing.netns),
            });
        }
        // Everything the netconf can get wrong, before anything is made.
        for cidr in &req.config.host_routes {
            parse_cidr("hostRoutes", cidr)?;
        }
        let send_options = match &req.config.dhcp {
            Some(d) => parse_send_options(d)?,
            None => Vec::new(),
        };

        let mut undo = Undo::default();
        self.host_routes_in_flight(&req.config.host_routes, true);
        let res = match self
            .add_steps(&req, &netns, &key, send_options, &mut undo)
            .await
        {
            Ok(r) => Ok(r),
            Err(e) => {
                warn!(attachment = %key, error = %e, "ADD failed, undoing");
                self.undo(undo).await;
                Err(e)
            }
        };
        self.host_routes_in_flight(&req.config.host_routes, false);
        if res.is_err()
            && !req.config.host_routes.is_empty()
            && let Err(e) = self.sync_host_routes().await
        {
            // The failed ADD's prefixes stay answered until the next sync.
            warn!(attachment = %key, error = %e, "cannot rewrite the host-routes map");
        }
        res
    }

    async fn add_steps(
        self: &Arc<Self>,
        req: &AttachmentRequest,
        netns: &str,
        key: &str,
        send_options: Vec<(u8, Vec<u8>)>,
        undo: &mut Undo,
    ) -> Result<AttachmentResult, AgentError> {
        let (mac, client_id) = match req
            .config
            .dhcp
            .as_ref()
            .map(|d| d.identity)
            .unwrap_or_default()
        {
            Identity::Stable => {
                let ns = req.pod.namespace.as_deref().unwrap_or("");
                // Without a pod name the container is the identity.
                let pod = req.pod.name.as_deref().unwrap_or(&req.container_id);
                dhcp::stable_identity(ns, pod, &req.ifname)
            }
            Identity::Random => dhcp::random_identity(),
        };
        let host_veth = host_veth_name(&req.container_id, &req.ifname);
        let mtu = req.config.mtu.unwrap_or(self.uplink.mtu);
        let mut phases = Phases::start();

        // 1. The veth pair, the pod end born in the pod's namespace.
        netlink::delete_link(&self.nl, &host_veth).await?; // leftover of a crashed ADD
        let host = netlink::create_veth(
            &self.nl,
            &netlink::VethSpec {
                host_name: &host_veth,
                pod_name: &req.ifname,
                pod_mac: mac,
                netns: Path::new(netns),
                mtu,
            },
        )
        .await?;
        undo.veth = Some(host_veth.clone());
        phases.mark("veth");

        let mut ep = Endpoint {
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: netns.to_string(),
            pod: req.pod.clone(),
            config: req.config.clone(),
            host_veth: host_veth.clone(),
            host_ifindex: host.index,
            host_mac: host.mac,
            mac,
            lease: None,
            expired: false,
        };

        // 2. The pod MAC in the uplink's unicast filter, before anything is
        //    sent for it: the server's unicast replies and the answers to the
        //    ARP probe are addressed to it.
        if !self.cfg.promiscuous {
            netlink::add_uc_filter(&self.nl, self.uplink.index, mac).await?;
            undo.uc_filter = Some(mac);
        }

        // 3. At once: the lease, on the pod's behalf, from the node (it needs
        //    only the uplink: the agent's socket sees the replies before TC),
        //    and the dataplane for the pod. Attaching waits in the kernel for
        //    RCU grace periods, ~10 ms each on a small VM, so running it
        //    beside the DHCP exchange and ARP probe hides it.
        let lease_req = req.config.dhcp.as_ref().map(|dcfg| LeaseRequest {
            mac,
            client_id,
            hostname: req.pod.name.as_deref().and_then(dhcp::sanitize_hostname),
            timeout: Duration::from_millis(dcfg.timeout_ms),
            send_options,
            arp_probe: dhcp::ArpProbe::from_millis(dcfg.arp_probe_ms),
        });
        let acquire = async {
            match &lease_req {
                Some(r) => Some(self.dhcp.acquire(r).await),
                None => None,
            }
        };
        let (prepared, acquired) =
            tokio::join!(self.prepare_dataplane(&ep, undo, &mut phases), acquire);
        if let Some(Ok(lease)) = &acquired {
            undo.lease = Some(lease.clone());
        }
        prepared?;
        let mut routes = Vec::new();
        if let Some(acquired) = acquired {
            let lease = acquired.map_err(|source| AgentError::Dhcp {
                uplink: self.cfg.uplink.clone(),
                source,
            })?;
            // The wait for the lease beyond the dataplane's preparation.
            phases.mark("lease");
            info!(attachment = %key, address = %lease.address, mac = %fmt_mac(&mac), server = %lease.server_id, "leased");

            // 4. Address and routes in the pod; the node's route to it.
            routes = pod_routes(&req.config, &lease)?;
            netlink::configure_pod(
                Path::new(netns),
                PodConfig {
                    ifname: req.ifname.clone(),
                    address: lease.address,
                    prefix: lease.prefix_len,
                    routes: routes.clone(),
                },
            )
            .await?;
            netlink::add_host_route(&self.nl, lease.address, host.index).await?;
            phases.mark("pod");
            ep.lease = Some(lease);
        } else {
            // `ipam: none`: the pod runs its own DHCP client; bring its link up.
            let ifname = req.ifname.clone();
            netlink::in_netns(Path::new(netns), move |h| async move {
                let l = netlink::link(&h, &ifname).await?;
                h.link()
                    .set(rtnetlink::LinkUnspec::new_with_index(l.index).up().build())
                    .execute()
                    .await
                    .map_err(|source| NetlinkError::Request {
                        what: format!("set {ifname} up"),
                        source,
                    })
            })
            .await?;
        }

        // 5. The endpoint with its address; persist; flood membership.
        let entry = self.endpoint_entry(&ep);
        self.with_dataplane(|dp| dp.upsert_endpoint(host.index, entry))?;
        self.commit(key, Some(ep.clone()))?;
        if let Err(e) = self.sync_flood() {
            self.commit(key, None)?;
            return Err(e);
        }
        if ep.lease.is_some() {
            self.spawn_renewal(key.to_string());
        }
        phases.mark("commit");
        info!(attachment = %key, elapsed_ms = phases.total_ms(), phases = %phases, "attached");
        Ok(result_for(&ep, &routes))
    }

    /// The pod's programs on its host veth and its endpoint in the maps (no
    /// address yet: only DHCP and ARP probes pass), and the node's
    /// addresses for the ARP responder.
    async fn prepare_dataplane(
        &self,
        ep: &Endpoint,
        undo: &mut Undo,
        phases: &mut Phases,
    ) -> Result<(), AgentError> {
        let attachments =
            self.with_dataplane(|dp| dp.attachments(&ep.host_veth, &[Hook::FromPod, Hook::ToPod]))?;
        undo.attached = true;
        attachments.run_blocking().await?;
        phases.mark("attach");
        let entry = self.endpoint_entry(ep);
        self.with_dataplane(|dp| dp.upsert_endpoint(ep.host_ifindex, entry))?;
        undo.endpoint = Some((ep.host_ifindex, ep.mac));
        // The ARP responder must know the node's addresses and this
        // netconf's hostRoutes before the pod has an address to use them
        // (`add` counts them in flight until the state holds them).
        self.sync_host_routes().await?;
        phases.mark("maps");
        Ok(())
    }

    async fn undo(&self, undo: Undo) {
        if let Some(lease) = &undo.lease
            && let Err(e) = self.dhcp.release(lease).await
        {
            warn!(error = %e, "undo: release failed");
        }
        if let Some((ifindex, mac)) = undo.endpoint
            && let Err(e) = self.with_dataplane(|dp| dp.remove_endpoint(ifindex, mac))
        {
            warn!(error = %e, "undo: remove endpoint failed");
        }
        if let Some(mac) = undo.uc_filter
            && let Err(e) = netlink::del_uc_filter(&self.nl, self.uplink.index, mac).await
        {
            warn!(error = %e, "undo: remove unicast filter entry failed");
        }
        if let Some(veth) = &undo.veth {
            if undo.attached {
                let _ = self.with_dataplane(|dp| {
                    dp.detach(veth, Hook::FromPod)?;
                    dp.detach(veth, Hook::ToPod)
                });
            }
            if let Err(e) = netlink::delete_link(&self.nl, veth).await {
                warn!(error = %e, "undo: delete veth failed");
            }
        }
    }

    /// CNI DEL: idempotent; succeeds when the attachment is already gone.
    pub async fn del(self: &Arc<Self>, req: AttachmentRequest) -> Result<(), AgentError> {
        let key = state::key(&req.container_id, &req.ifname);
        let _guard = self.lock_key(&key).await;
        let ep = self.state().endpoints.get(&key).cloned();
        match ep {
            Some(ep) => self.remove(&ep).await,
            None => {
                // Unknown to the state (e.g. a crash mid-ADD): remove what the
                // name says could exist.
                let veth = host_veth_name(&req.container_id, &req.ifname);
                if let Some(l) = netlink::find_link(&self.nl, &veth).await?
                    && let Some(e) = self.with_dataplane(|dp| dp.endpoint(l.index))
                {
                    self.with_dataplane(|dp| dp.remove_endpoint(l.index, e.mac))?;
                    netlink::del_uc_filter(&self.nl, self.uplink.index, e.mac).await?;
                }
                self.with_dataplane(|dp| {
                    dp.detach(&veth, Hook::FromPod)?;
                    dp.detach(&veth, Hook::ToPod)
                })?;
                netlink::delete_link(&self.nl, &veth).await?;
                Ok(())
            }
        }
    }

    /// Removes an attachment entirely: lease released, maps, filter, links, veth.
    async fn remove(&self, ep: &Endpoint) -> Result<(), AgentError> {
        let key = ep.key();
        if let Some(h) = self
            .renewals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
        {
            h.abort();
        }
        if let Some(lease) = &ep.lease
            && !ep.expired
        {
            // A failed RELEASE must not block DEL: the lease then expires
            // on the server by itself. It is logged and counted.
            if let Err(e) = self.dhcp.release(lease).await {
                warn!(attachment = %key, error = %e, "release failed");
            }
        }
        self.with_dataplane(|dp| dp.remove_endpoint(ep.host_ifindex, ep.mac))?;
        if !self.cfg.promiscuous {
            netlink::del_uc_filter(&self.nl, self.uplink.index, ep.mac).await?;
        }
        self.with_dataplane(|dp| {
            dp.detach(&ep.host_veth, Hook::FromPod)?;
            dp.detach(&ep.host_veth, Hook::ToPod)
        })?;
        netlink::delete_link(&self.nl, &ep.host_veth).await?;
        // `remove_endpoint` already took the veth out of the flood list.
        self.commit(&key, None)?;
        if let Err(e) = self.sync_host_routes().await {
            warn!(attachment = %key, error = %e, "cannot rewrite the host-routes map");
        }
        info!(attachment = %key, "removed");
        Ok(())
    }

    /// CNI CHECK: the attachment still looks as the agent made it.
    pub async fn check(
        self: &Arc<Self>,
        req: AttachmentRequest,
    ) -> Result<AttachmentResult, AgentError> {
        let key = state::key(&req.container_id, &req.ifname);
        let ep = self
            .state()
            .endpoints
            .get(&key)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(key.clone()))?;
        let fail = |what: String| Err(AgentError::CheckFailed(format!("{key}: {what}")));
        let Some(host) = netlink::find_link(&self.nl, &ep.host_veth).await? else {
            return fail(format!("host veth {} is gone", ep.host_veth));
        };
        if host.index != ep.host_ifindex {
            return fail(format!(
                "host veth {} has index {}, expected {}",
                ep.host_veth, host.index, ep.host_ifindex
            ));
        }
        let mut entry = self.endpoint_entry(&ep);
        let current = self.with_dataplane(|dp| dp.endpoint(host.index));
        // A pod with its own DHCP client: the dataplane learns its address
        // from the server's ACK, the agent does not know it.
        if let Some(c) = current
            && entry.flags & endpoint_flags::OWN_DHCP != 0
        {
            entry.ipv4 = c.ipv4;
        }
        if current != Some(entry) {
            return fail("endpoint map entry differs".into());
        }
        if self
            .with_dataplane(|dp| dp.endpoint_by_mac(ep.mac))
            .map(|e| e.ifindex)
            != Some(host.index)
        {
            return fail("MAC map entry differs".into());
        }
        for hook in [Hook::FromPod, Hook::ToPod] {
            if !self.with_dataplane(|dp| dp.is_attached(&ep.host_veth, hook)) {
                return fail(format!("{hook:?} is not attached to {}", ep.host_veth));
            }
        }
        let pod = netlink::read_pod(Path::new(&ep.netns), &ep.ifname).await?;
        if pod.mac != Some(ep.mac) {
            return fail(format!(
                "{} has MAC {:?}, expected {}",
                ep.ifname,
                pod.mac.map(|m| fmt_mac(&m)),
                fmt_mac(&ep.mac)
            ));
        }
        let mut routes = Vec::new();
        if let Some(l) = &ep.lease {
            if ep.expired {
                return fail(format!("the lease for {} expired", l.address));
            }
            if !pod.addresses.contains(&(l.address, l.prefix_len)) {
                return fail(format!(
                    "{} lacks {}/{}",
                    ep.ifname, l.address, l.prefix_len
                ));
            }
            routes = pod_routes(&ep.config, l)?;
            for r in &routes {
                if !pod
                    .routes
                    .iter()
                    .any(|p| p.dst == r.dst && p.prefix == r.prefix && p.gw == r.gw)
                {
                    return fail(format!(
                        "route {}/{} via {:?} is missing",
                        r.dst, r.prefix, r.gw
                    ));
                }
            }
        }
        Ok(result_for(&ep, &routes))
    }

    /// CNI GC: removes every attachment of `network` not in the valid list.
    pub async fn gc(self: &Arc<Self>, req: GcRequest) -> Result<GcResponse, AgentError> {
        let stale: Vec<Endpoint> = self
            .state()
            .endpoints
            .values()
            .filter(|e| e.config.network == req.network)
            .filter(|e| {
                !req.valid_attachments
                    .iter()
                    .any(|v| v.container_id == e.container_id && v.ifname == e.ifname)
            })
            .cloned()
            .collect();
        let mut removed = Vec::new();
        let mut first_err = None;
        for ep in stale {
            let key = ep.key();
            let _guard = self.lock_key(&key).await;
            // A DEL may have removed it (or an ADD replaced it) meanwhile.
            let Some(ep) = self.state().endpoints.get(&key).cloned() else {
                continue;
            };
            // One that cannot be removed does not keep the others.
            if let Err(e) = self.remove(&ep).await {
                warn!(attachment = %key, error = %e, "GC could not remove the attachment");
                first_err.get_or_insert(e);
                continue;
            }
            removed.push(AttachmentId {
                container_id: ep.container_id,
                ifname: ep.ifname,
            });
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(GcResponse { removed }),
        }
    }

    /// At start: re-attach the new programs to every known host veth (an
    /// atomic swap in the pinned links), rewrite map entries, resume
    /// renewals; forget attachments whose veth vanished while the agent was
    /// down, releasing their leases.
    async fn readopt(self: &Arc<Self>) {
        let endpoints: Vec<Endpoint> = self.state().endpoints.values().cloned().collect();
        for ep in endpoints {
            let key = ep.key();
            match netlink::find_link(&self.nl, &ep.host_veth).await {
                Ok(Some(l)) if l.index == ep.host_ifindex => {
                    let entry = self.endpoint_entry(&ep);
                    let res = self.with_dataplane(|dp| {
                        dp.attach(&ep.host_veth, Hook::FromPod)?;
                        dp.attach(&ep.host_veth, Hook::ToPod)?;
                        dp.upsert_endpoint(l.index, entry)
                    });
                    if let Err(e) = res {
                        warn!(attachment = %key, error = %e, "cannot re-adopt endpoint");
                        continue;
                    }
                    if let Some(lease) = &ep.lease
                        && let Err(e) =
                            netlink::add_host_route(&self.nl, lease.address, l.index).await
                    {
                        warn!(attachment = %key, error = %e, "cannot restore host route");
                    }
                    if !self.cfg.promiscuous
                        && let Err(e) =
                            netlink::add_uc_filter(&self.nl, self.uplink.index, ep.mac).await
                    {
                        warn!(attachment = %key, error = %e, "cannot restore unicast filter entry");
                    }
                    if ep.lease.is_some() && !ep.expired {
                        self.spawn_renewal(key.clone());
                    }
                    info!(attachment = %key, "re-adopted");
                }
                Ok(_) => {
                    info!(attachment = %key, "veth vanished while the agent was down; cleaning up");
                    if let Err(e) = self.remove(&ep).await {
                        warn!(attachment = %key, error = %e, "cleanup failed");
                    }
                }
                Err(e) => warn!(attachment = %key, error = %e, "cannot look up veth"),
            }
        }
        if let Err(e) = self.sync_flood() {
            warn!(error = %e, "cannot rewrite the flood list");
        }
    }

    fn spawn_renewal(self: &Arc<Self>, key: String) {
        let agent = Arc::clone(self);
        let k = key.clone();
        let handle = tokio::spawn(async move { agent.renew_loop(k).await });
        if let Some(old) = self
            .renewals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, handle)
        {
            old.abort();
        }
    }

    /// Keeps one lease alive with [`dhcp::LeaseMachine`]: renews at T1
    /// (unicast to its server), rebinds at T2 (broadcast to any server), and
    /// expires the endpoint when the lease runs out or a server refuses it
    /// (DHCPNAK). Each ACK is persisted before the next wait, so an agent
    /// restarted between two renewals resumes this schedule from the state
    /// file, with no new DISCOVER.
    async fn renew_loop(self: Arc<Self>, key: String) {
        let Some(lease) = self
            .state()
            .endpoints
            .get(&key)
            .filter(|ep| !ep.expired)
            .and_then(|ep| ep.lease.clone())
        else {
            return;
        };
        let mut machine = dhcp::LeaseMachine::new(lease, dhcp::RenewPolicy::default());
        loop {
            let action = machine.poll(now_unix());
            match action {
                dhcp::LeaseAction::Wait { until_unix } => {
                    // Timers count from the whole second at or before the
                    // acknowledged request, so waking at the exact instant is
                    // never late; re-poll at least hourly (clock changes).
                    let wait = UNIX_EPOCH
                        .checked_add(Duration::from_secs(until_unix))
                        .and_then(|at| at.duration_since(SystemTime::now()).ok())
                        .unwrap_or(Duration::from_secs(3600))
                        .min(Duration::from_secs(3600));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shutdown.cancelled() => return,
                    }
                }
                dhcp::LeaseAction::Renew { rebinding, timeout } => {
                    let current = machine.lease().clone();
                    let outcome = tokio::select! {
                        r = self.dhcp.renew(&current, rebinding, timeout) => r,
                        _ = self.shutdown.cancelled() => return,
                    };
                    match outcome {
                        Ok(new) if new.address == current.address => {
                            let _guard = self.lock_key(&key).await;
                            let Some(mut ep) = self.state().endpoints.get(&key).cloned() else {
                                return;
                            };
                            if ep.expired || ep.mac != new.mac {
                                return;
                            }
                            ep.lease = Some(new.clone());
                            if let Err(e) = self.commit(&key, Some(ep)) {
                                warn!(attachment = %key, error = %e, "cannot persist the renewed lease");
                            }
                            info!(
                                attachment = %key, address = %new.address, server = %new.server_id,
                                lease_secs = new.lease_secs, renew_in_secs = new.t1_secs, rebinding,
                                "{}", if rebinding { "lease rebound" } else { "lease renewed" }
                            );
                            machine.on_ack(new);
                        }
                        Ok(new) => {
                            // A rebinding server may grant another address;
                            // the pod's configuration cannot follow silently,
                            // so the old lease ends here and the new one goes
                            // back to the server.
                            warn!(attachment = %key, old = %current.address, new = %new.address, "server moved the lease to another address; expiring it");
                            if let Err(e) = self.dhcp.release(&new).await {
                                warn!(attachment = %key, error = %e, "cannot release the moved lease");
                            }
                            machine.on_nak();
                        }
                        Err(e) if e.is_nak() => {
                            warn!(attachment = %key, error = %e, rebinding, "lease refused; expiring it now");
                            machine.on_nak();
                        }
                        Err(e) => {
                            warn!(attachment = %key, error = %e, rebinding, "no answer to the {}", if rebinding { "rebinding" } else { "renewal" });
                            machine.on_no_reply(now_unix(), rebinding);
                        }
                    }
                }
                dhcp::LeaseAction::Expire => {
                    self.expire(&key).await;
                    return;
                }
            }
        }
    }

    /// Ends a lease: the endpoint is marked expired in the maps (the pod may
    /// then only send DHCP and ARP probes) and in the state file, the node's
    /// host route and the pod's address are removed, and the event is logged
    /// and counted. The attachment itself stays until DEL or GC.
    async fn expire(&self, key: &str) {
        let _guard = self.lock_key(key).await;
        let Some(mut ep) = self.state().endpoints.get(key).cloned() else {
            return;
        };
        if ep.expired {
            return;
        }
        ep.expired = true;
        self.dhcp.count_expired();
        let address = ep.lease.as_ref().map(|l| l.address);
        warn!(
            attachment = %key, mac = %fmt_mac(&ep.mac), address = ?address,
            "lease expired: address removed from the pod, endpoint marked expired"
        );
        // The maps first: the dataplane stops accepting the address at once.
        let entry = self.endpoint_entry(&ep);
        if let Err(e) = self.with_dataplane(|dp| dp.upsert_endpoint(ep.host_ifindex, entry)) {
            warn!(attachment = %key, error = %e, "cannot mark endpoint expired");
        }
        if let Err(e) = self.commit(key, Some(ep.clone())) {
            warn!(attachment = %key, error = %e, "cannot persist expiry");
        }
        let Some(l) = &ep.lease else {
            return;
        };
        // The server may lease the address to another LAN host next: the
        // node must stop routing it to this pod.
        let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(l.address, 32)
            .output_interface(ep.host_ifindex)
            .scope(rtnetlink::packet_route::route::RouteScope::Link)
            .build();
        if let Err(e) = self.nl.route().del(route).execute().await {
            warn!(attachment = %key, error = %e, "cannot remove the host route of the expired address");
        }
        let (ifname, addr, prefix) = (ep.ifname.clone(), l.address, l.prefix_len);
        let res = netlink::in_netns(Path::new(&ep.netns), move |h| async move {
            use futures::TryStreamExt as _;
            let link = netlink::link(&h, &ifname).await?;
            let mut addrs = h
                .address()
                .get()
                .set_link_index_filter(link.index)
                .execute();
            while let Some(a) = addrs
                .try_next()
                .await
                .map_err(|source| NetlinkError::Request {
                    what: "list addresses".into(),
                    source,
                })?
            {
                let ours = a.header.prefix_len == prefix
                    && a.attributes.iter().any(|x| {
                        matches!(x, rtnetlink::packet_route::address::AddressAttribute::Address(std::net::IpAddr::V4(ip)) if *ip == addr)
                    });
                if ours {
                    h.address()
                        .del(a)
                        .execute()
                        .await
                        .map_err(|source| NetlinkError::Request {
                            what: format!("remove {addr}/{prefix}"),
                            source,
                        })?;
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = res {
            warn!(attachment = %key, error = %e, "cannot remove the expired address");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_routes_that_cover_the_lan_are_found() {
        let uplink = [(Ipv4Addr::new(198, 18, 0, 10), 22)];
        let lan = Some((Ipv4Addr::new(198, 18, 0, 0), 22));
        let ip = |a, b, c, d| Ipv4Addr::new(a, b, c, d);
        assert_eq!(covered_subnet((ip(0, 0, 0, 0), 0), &uplink), lan);
        assert_eq!(covered_subnet((ip(198, 18, 0, 0), 16), &uplink), lan);
        assert_eq!(covered_subnet((ip(198, 18, 0, 0), 22), &uplink), lan);
        // Inside the LAN (a node address) or elsewhere: answered as before.
        assert_eq!(covered_subnet((ip(198, 18, 0, 2), 32), &uplink), None);
        assert_eq!(covered_subnet((ip(198, 18, 0, 0), 24), &uplink), None);
        assert_eq!(covered_subnet((ip(198, 19, 0, 0), 16), &uplink), None);
        assert_eq!(covered_subnet((ip(0, 0, 0, 0), 0), &[]), None);
    }
}
