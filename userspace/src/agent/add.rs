//! CNI ADD, and its undo when a step fails.
//!
//! Steps, in order: the in-flight record (`state::adding`, updated with the
//! lease once held, removed after the commit or the undo: what a restart
//! undoes if the agent dies in between); the veth pair; the pod MAC in the
//! uplink's unicast filter and the uplink in all-multicast mode; at once the
//! lease and the dataplane (programs attached, endpoint registered, host
//! routes); the pod's address and routes and the node's
//! route to it; the endpoint with its address, the state, the flood list.
//! A failure undoes what was done in reverse, except that the programs are
//! always detached before the endpoint entries go: a veth whose programs
//! still run must never be unregistered (the dataplane drops frames of an
//! unknown veth, but only while its program runs to say so).

use std::{path::Path, sync::Arc, time::Duration};

use lanlink_api::{AttachmentRequest, AttachmentResult, Identity};
use tracing::{info, warn};

use super::{
    Agent, AgentError, Kernel, Leases as _, Links as _, Maps as _, Phases, host_veth_mac,
    host_veth_name, pod_routes, result_for,
};
use crate::{
    dhcp::{self, Lease, LeaseRequest},
    netlink::{PodConfig, VethSpec, fmt_mac},
    state::{self, Endpoint},
};

/// The in-flight record of an ADD (`state::adding`), shared by the steps
/// that add to it.
type Record = Arc<tokio::sync::Mutex<state::Adding>>;

/// Work already done by an ADD, undone in reverse if a later step fails.
#[derive(Default)]
pub(super) struct Undo {
    /// The MAC claimed for this attachment.
    mac: Option<[u8; 6]>,
    veth: Option<String>,
    uc_filter: Option<[u8; 6]>,
    /// This attachment counts among the holders of all-multicast mode.
    allmulti: bool,
    attached: bool,
    endpoint: Option<(u32, [u8; 6])>,
    lease: Option<Lease>,
    host_route: Option<(std::net::Ipv4Addr, u32)>,
    /// The IPv6 assignment made or leased (its node route, its DHCPv6
    /// lease), with the host veth's index; declined rather than released
    /// when `v6_conflict`.
    v6: Option<(crate::ipv6::assign::Assignment, u32)>,
    v6_conflict: bool,
    /// The pod's DHCPv6 identity.
    id6: Option<crate::ipv6::dhcp6::Dhcp6Identity>,
    /// The in-flight record (`state::adding`), by host veth.
    record: Option<String>,
}

impl<K: Kernel> Agent<K> {
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
                    Some(l) => pod_routes(&existing.config, l),
                    None => Vec::new(),
                };
                return Ok(result_for(&existing, &routes));
            }
            return Err(AgentError::InvalidConfig {
                field: "CNI_CONTAINERID",
                reason: format!("{key} is already attached in {}", existing.netns),
            });
        }
        // Everything the request can get wrong, before anything is made:
        // `hostRoutes` and `sendOptions` are validated types
        // (`lanlink_api::Ipv4Cidr`, `lanlink_api::DhcpOption`), refused
        // when the request is decoded; what is left is the identity.
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
        // The IPv6 plan, before anything is made: `ipv6: slaac` on a LAN
        // without an autonomous prefix is refused here.
        let plan6 = self.plan6(&req, mac, &client_id).await?;
        self.claim_mac(mac, &key)?;

        let mut undo = Undo {
            mac: Some(mac),
            id6: plan6.id.clone(),
            ..Undo::default()
        };
        self.host_routes_in_flight(&req.config.host_routes, true);
        let res = match self
            .add_steps(&req, &netns, &key, (mac, client_id), &plan6, &mut undo)
            .await
        {
            Ok(r) => Ok(r),
            Err(e) => {
                warn!(attachment = %key, error = %e, "ADD failed, undoing");
                self.undo(&key, undo).await;
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

    /// The DHCP client's hook before a REQUEST: the offered address goes
    /// into the in-flight record first, so an agent killed before the ACK
    /// is handled (during the ARP probe, say) has its successor release it.
    /// A release of an address the server never bound is ignored by it.
    fn record_requested(self: &Arc<Self>, record: &Record) -> dhcp::OnRequest {
        let (agent, record) = (Arc::clone(self), Arc::clone(record));
        dhcp::OnRequest(Some(Arc::new(move |lease: dhcp::Lease| {
            let (agent, record) = (Arc::clone(&agent), Arc::clone(&record));
            Box::pin(async move {
                if let Err(e) = agent
                    .update_record(&record, |r| r.lease = Some(lease))
                    .await
                {
                    warn!(error = %e, "cannot record the requested address");
                }
            })
        })))
    }

    /// Updates the in-flight record with `f` and writes it. The DHCPv4 and
    /// DHCPv6 exchanges run at once, each adding what it got: one record,
    /// written under its lock, so neither write loses the other's lease.
    async fn update_record(
        &self,
        record: &Record,
        f: impl FnOnce(&mut state::Adding),
    ) -> Result<(), state::StateError> {
        let mut rec = record.lock().await;
        f(&mut rec);
        self.store.record_adding(&rec).await
    }

    async fn add_steps(
        self: &Arc<Self>,
        req: &AttachmentRequest,
        netns: &str,
        key: &str,
        (mac, client_id): ([u8; 6], Vec<u8>),
        plan6: &super::v6::Plan6,
        undo: &mut Undo,
    ) -> Result<AttachmentResult, AgentError> {
        let host_veth = host_veth_name(&req.container_id, &req.ifname);
        let mtu = req.config.mtu.unwrap_or(self.uplink.mtu);
        let mut phases = Phases::start();

        // 0. The in-flight record, before anything is made: a start after a
        //    crash in this ADD undoes what it made (`start.rs`).
        let adding = state::Adding {
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: netns.to_string(),
            host_veth: host_veth.clone(),
            mac,
            client_id: client_id.clone(),
            lease: None,
            ipv6: None,
        };
        self.store.record_adding(&adding).await?;
        let record: Record = Arc::new(tokio::sync::Mutex::new(adding.clone()));
        undo.record = Some(host_veth.clone());

        // 1. The veth pair, the pod end born in the pod's namespace.
        self.links.delete_link(&host_veth).await?; // leftover of a crashed ADD
        let host = self
            .links
            .create_veth(&VethSpec {
                host_name: &host_veth,
                pod_name: &req.ifname,
                pod_mac: mac,
                host_mac: host_veth_mac(&host_veth, mac),
                netns: Path::new(netns),
                mtu,
            })
            .await?;
        undo.veth = Some(host_veth.clone());
        super::crash_point("add-veth");
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
            ipv6: None,
        };

        // 2. The pod MAC in the uplink's unicast filter, before anything is
        //    sent for it: the server's unicast replies and the answers to the
        //    ARP probe are addressed to it.
        if !self.cfg.promiscuous {
            self.links.add_uc_filter(self.uplink.index, mac).await?;
            undo.uc_filter = Some(mac);
        }
        // The groups the pod joins reach it through a real NIC's filter
        // only in all-multicast mode (the first attachment turns it on).
        self.hold_allmulti(key).await?;
        undo.allmulti = true;

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
            send_options: dcfg
                .send_options
                .iter()
                .map(|o| (o.code(), o.value().to_vec()))
                .collect(),
            arp_probe: dhcp::ArpProbe::from_millis(dcfg.arp_probe_ms),
            on_request: self.record_requested(&record),
        });
        let acquire = async {
            match &lease_req {
                Some(r) => {
                    let res = self.leases.acquire(r).await;
                    // The lease in the record as soon as it is held (not
                    // after the dataplane's preparation): a crash from here
                    // on releases it at the next start.
                    let recorded = match &res {
                        Ok(lease) => {
                            self.update_record(&record, |r| r.lease = Some(lease.clone()))
                                .await
                        }
                        Err(_) => Ok(()),
                    };
                    Some((res, recorded))
                }
                None => None,
            }
        };
        // IPv6 at once too: the SLAAC address is made, or the DHCPv6 lease
        // solicited, beside the dataplane's preparation and the DHCPv4
        // exchange; it goes into the pod as soon as the programs run, so
        // its duplicate address detection runs beside the DHCPv4 exchange
        // and ARP probe.
        let v6_timeout =
            Duration::from_millis(req.config.dhcp.as_ref().map_or(5_000, |d| d.timeout_ms));
        // How long a LAN host has to answer for the pod's IPv6 address
        // before the ADD ends: `arpProbeMs`, as for IPv4.
        let dad_window =
            Duration::from_millis(req.config.dhcp.as_ref().map_or(0, |d| d.arp_probe_ms));
        let prepare = async {
            let (prepared, got6) = tokio::join!(
                self.prepare_dataplane(&ep, undo, &mut phases),
                self.acquire6(plan6, v6_timeout)
            );
            let got6 = match got6 {
                Ok(Some(a)) => a,
                Ok(None) => {
                    prepared?;
                    return Ok((None, tokio::time::Instant::now()));
                }
                Err(e) => {
                    prepared?;
                    return Err(e);
                }
            };
            // Undone (released) whatever happens next.
            undo.v6 = Some((got6.clone(), ep.host_ifindex));
            if got6.lease.is_some() {
                // A start after a crash from here on releases it.
                self.update_record(&record, |r| r.ipv6 = Some(got6.clone()))
                    .await?;
            }
            prepared?;
            self.configure6(&ep, &got6).await?;
            Ok::<_, AgentError>((Some(got6), tokio::time::Instant::now() + dad_window))
        };
        let (prepared, acquired) = tokio::join!(prepare, acquire);
        let (acquired, recorded) = match acquired {
            Some((res, recorded)) => (Some(res), recorded),
            None => (None, Ok(())),
        };
        if let Some(Ok(lease)) = &acquired {
            undo.lease = Some(lease.clone());
        }
        recorded?;
        let (v6, dad_until) = prepared?;
        if v6.is_some() {
            phases.mark("ipv6");
        }
        let mut routes = Vec::new();
        if let Some(acquired) = acquired {
            let lease = acquired.map_err(|source| AgentError::Dhcp {
                uplink: self.cfg.uplink.clone(),
                source,
            })?;
            // The wait for the lease beyond the dataplane's preparation.
            phases.mark("lease");
            info!(attachment = %key, address = %lease.address, mac = %fmt_mac(&mac), server = %lease.server_id, "leased");
            super::crash_point("add-leased");

            // 4. Address and routes in the pod; the node's route to it.
            routes = pod_routes(&req.config, &lease);
            self.links
                .configure_pod(
                    Path::new(netns),
                    PodConfig {
                        ifname: req.ifname.clone(),
                        address: lease.address,
                        prefix: lease.prefix_len,
                        routes: routes.clone(),
                    },
                )
                .await?;
            self.links.add_host_route(lease.address, host.index).await?;
            undo.host_route = Some((lease.address, host.index));
            phases.mark("pod");
            ep.lease = Some(lease);
        } else {
            // `ipam: none`: the pod runs its own DHCP client; bring its link up.
            self.links
                .pod_link_up(Path::new(netns), &req.ifname)
                .await?;
        }

        // A LAN host holding the pod's IPv6 address has answered its
        // duplicate address detection by now (detection that ends later is
        // watched after the ADD: `v6.rs`).
        if let Some(a) = &v6 {
            if let Err(e) = self.check_dad(&ep, a, dad_until).await {
                undo.v6_conflict = true;
                return Err(e);
            }
            info!(attachment = %key, address = %a.address, how = a.source.as_str(), "IPv6 address given");
        }
        ep.ipv6 = v6;

        // 5. The endpoint with its address; persist; flood membership.
        let entry = self.endpoint_entry(&ep);
        self.maps
            .register(host.index, entry, self.endpoint_guard(&ep))?;
        super::crash_point("add-registered");
        self.commit(key, Some(ep.clone())).await?;
        super::crash_point("add-committed");
        if let Err(e) = self.sync_flood() {
            self.commit(key, None).await?;
            return Err(e);
        }
        // Committed: a record left by a failure here is dropped at start.
        if let Err(e) = self.store.clear_adding(&host_veth).await {
            warn!(attachment = %key, error = %e, "cannot remove the in-flight ADD record");
        }
        if ep.lease.is_some() {
            self.spawn_renewal(key.to_string());
        }
        self.after_add6(key, &ep);
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
        // Counted as done before it runs: a half-done attach (one program
        // of two) must be detached too.
        undo.attached = true;
        self.maps.attach(&ep.host_veth).await?;
        phases.mark("attach");
        let entry = self.endpoint_entry(ep);
        self.maps
            .register(ep.host_ifindex, entry, self.endpoint_guard(ep))?;
        undo.endpoint = Some((ep.host_ifindex, ep.mac));
        // The ARP responder must know the node's addresses and this
        // netconf's hostRoutes before the pod has an address to use them
        // (`add` counts them in flight until the state holds them).
        self.sync_host_routes().await?;
        phases.mark("maps");
        Ok(())
    }

    /// Undoes a failed ADD of `key`: the lease released, the node's route
    /// removed, the programs detached, then the endpoint entries removed,
    /// the MAC out of the uplink filter, all-multicast mode given up (off
    /// if no attachment is left), the veth deleted, the MAC given up.
    /// Each step is tried whatever the others did.
    async fn undo(&self, key: &str, undo: Undo) {
        if let Some(lease) = &undo.lease
            && let Err(e) = self.leases.release(lease).await
        {
            warn!(attachment = %key, error = %e, "undo: release failed");
        }
        if let Some((ip, ifindex)) = undo.host_route
            && let Err(e) = self.links.del_host_route(ip, ifindex).await
        {
            warn!(attachment = %key, error = %e, "undo: remove host route failed");
        }
        if let Some((a, ifindex)) = &undo.v6 {
            self.release6(key, *ifindex, undo.id6.as_ref(), a, undo.v6_conflict)
                .await;
        }
        if let Some(veth) = &undo.veth
            && undo.attached
            && let Err(e) = self.maps.detach(veth)
        {
            warn!(attachment = %key, error = %e, "undo: detach failed");
        }
        if let Some((ifindex, mac)) = undo.endpoint
            && let Err(e) = self.maps.unregister(ifindex, Some(mac))
        {
            warn!(attachment = %key, error = %e, "undo: remove endpoint failed");
        }
        if let Some(mac) = undo.uc_filter
            && let Err(e) = self.links.del_uc_filter(self.uplink.index, mac).await
        {
            warn!(attachment = %key, error = %e, "undo: remove unicast filter entry failed");
        }
        if undo.allmulti
            && let Err(e) = self.release_allmulti(key).await
        {
            warn!(attachment = %key, error = %e, "undo: leave all-multicast mode failed");
        }
        if let Some(veth) = &undo.veth
            && let Err(e) = self.links.delete_link(veth).await
        {
            warn!(attachment = %key, error = %e, "undo: delete veth failed");
        }
        if let Some(mac) = undo.mac {
            self.release_mac(mac, key);
        }
        if let Some(veth) = &undo.record
            && let Err(e) = self.store.clear_adding(veth).await
        {
            warn!(attachment = %key, error = %e, "undo: remove the in-flight ADD record failed");
        }
    }
}
