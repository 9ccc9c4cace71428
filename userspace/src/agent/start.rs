//! Start-up: the node prerequisites, the dataplane, the DHCP socket, the
//! uplink cache and its task, the netfilter rules, the DELs queued while
//! the agent was stopped, and the re-adoption of the attachments of a
//! previous run.
//!
//! Crash consistency: the previous agent may have died anywhere in an ADD
//! or a DEL. At start, before the API serves:
//!
//! - an ADD that left its in-flight record (`state::adding`) and is not in
//!   the state is undone: its lease released (the record holds it once
//!   leased), its programs detached, its map entries and uplink filter
//!   entry removed, its host veth deleted (with the pod end and the node's
//!   route to the pod); one that reached the state only drops its record;
//! - every attachment in the state whose host veth exists is adopted, and
//!   repaired where a DEL or a crash left it half-made (programs
//!   re-attached, map entries re-registered, host route, filter entry and
//!   MAC put back); one whose veth is gone is removed (lease released);
//! - orphans are removed ([`Agent::sweep_orphans`]): host veths that are
//!   lanlink's (named `ll` + 12 hex digits, with the MAC lanlink derives
//!   from that name) but in no state entry, pinned program links of no
//!   attachment, and map entries (`EP_BY_IF`, `EP_BY_MAC`, `EP_GUARD`,
//!   with `EP_DROPS`, `V6_OWNERS` and flood slots, and `FLOWS`) of no
//!   attachment.
//!
//! Each action is logged with the attachment or object and what was done.
//! One agent per node namespace is assumed: another lanlinkd's veths there
//! would look like orphans.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::Arc,
    sync::atomic::Ordering,
};

use anyhow::Context as _;
use futures::StreamExt as _;
use rtnetlink::packet_core::NetlinkPayload;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    Agent, AgentConfig, Kernel, Lan6 as _, Leases as _, Links as _, Maps as _, Node, NodeLinks,
    NodeMaps, Parts, UplinkView, host_veth_mac,
};
use crate::{
    dataplane::{Dataplane, DataplaneConfig, Hook},
    dhcp::DhcpClient,
    netlink::{self, fmt_mac},
    state::{Adding, Endpoint, Store},
};

/// The node's IPv4 forwarding switch.
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns IPv4 forwarding on at `path` if it is off; says whether it was.
/// Pods reach Services and the node's other pods through the node's stack
/// (host routes), which forwards only with it on; the reference bridge and
/// ptp plugins set it the same way.
fn enable_ip_forward(path: &Path) -> std::io::Result<bool> {
    if std::fs::read_to_string(path)?.trim() != "0" {
        return Ok(false);
    }
    std::fs::write(path, "1")?;
    Ok(true)
}

impl Agent<Node> {
    /// Starts the agent: enables forwarding, loads the dataplane, opens the
    /// DHCP socket, subscribes to the uplink's changes, installs the
    /// netfilter rules, runs the DELs the plugin queued in `del_queue_dir`
    /// while the agent was stopped (`del_queue.rs`), and re-adopts the
    /// attachments of a previous run. The API serves only after this.
    pub async fn start(
        cfg: AgentConfig,
        del_queue_dir: &Path,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let nl = netlink::connect()?;
        let uplink = netlink::link(&nl, &cfg.uplink)
            .await
            .with_context(|| format!("uplink {}", cfg.uplink))?;
        if enable_ip_forward(Path::new(IP_FORWARD)).context("enable IPv4 forwarding")? {
            info!("IPv4 forwarding was off; enabled it (net.ipv4.ip_forward=1)");
        }
        let t_load = std::time::Instant::now();
        info!(uplink = %cfg.uplink, pin_dir = %cfg.pin_dir.display(), "loading the dataplane");
        let dp = Dataplane::load(DataplaneConfig {
            uplink: cfg.uplink.clone(),
            uplink_ifindex: uplink.index,
            pin_dir: cfg.pin_dir.clone(),
            flags: cfg.dataplane_flags,
            attach: cfg.attach,
        })
        .context("load the dataplane")?;
        let adopted_maps = dp.adopted;
        info!(
            elapsed_ms = t_load.elapsed().as_millis() as u64,
            adopted = adopted_maps,
            "dataplane loaded"
        );
        let dhcp = DhcpClient::new(&cfg.uplink).context("open the DHCP socket on the uplink")?;
        let store = Store::new(&cfg.state_dir)?;
        if cfg.promiscuous {
            netlink::set_promiscuous(&nl, uplink.index)
                .await
                .context("set the uplink promiscuous")?;
        }
        // Subscribed before the first dump, so no change in between is lost
        // (a notification repeating the dump changes nothing).
        let (watch, events) = netlink::subscribe_uplink()?;
        let uplink_view = UplinkView {
            addresses: netlink::ipv4_addresses(&watch, uplink.index).await?,
            oper_up: netlink::link_oper_up(&watch, uplink.index).await?,
        };
        let mut firewall = None;
        if let Some(iptables) = &cfg.iptables {
            // Before re-adoption: pods of a previous run forward through
            // these rules as soon as their programs are swapped.
            let fw = crate::firewall::Firewall::new(iptables, &cfg.uplink, &uplink_view.addresses);
            fw.install()
                .context("install the agent's netfilter rules")?;
            firewall = Some(fw);
        }
        // The flow map's owner starts once the agent exists; DELs can queue
        // purges to it before that.
        let (flows, flow_owner) = crate::flows::owner();
        let lan6 = super::NodeLan6::start(&cfg.uplink, uplink.index, nl.clone(), shutdown.clone());
        let parts = Parts {
            lan6,
            links: NodeLinks::new(nl),
            maps: NodeMaps::new(dp, flows),
            leases: dhcp,
            uplink,
            uplink_view,
            adopted_maps,
        };
        let agent = Arc::new(Agent::new(cfg, parts, store, shutdown)?);
        *agent.firewall.lock().unwrap_or_else(|p| p.into_inner()) = firewall;
        // Before re-adoption: what the queue deletes is not re-adopted
        // first (no renewal restarted, no programs swapped in).
        let drained = agent.drain_del_queue(del_queue_dir).await;
        if drained != Default::default() {
            info!(
                dir = %del_queue_dir.display(),
                done = drained.done,
                failed = drained.failed,
                set_aside = drained.set_aside,
                "ran the DELs queued while the agent was stopped"
            );
        }
        agent.readopt().await;
        agent.sweep_orphans().await;
        agent
            .sync_host_routes()
            .await
            .context("write the host-routes map")?;
        agent.sync_host_addrs6().await;
        let events = events.filter_map(|(msg, _)| async move {
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => Some(m),
                _ => None,
            }
        });
        tokio::spawn(Arc::clone(&agent).watch_uplink(Box::pin(events)));
        tokio::spawn(Arc::clone(&agent).redrain_del_queue(del_queue_dir.to_owned()));
        tokio::spawn(flow_owner.run(
            agent.cfg.pin_dir.clone(),
            agent.cfg.flow_timeout,
            Arc::clone(&agent.flow_gc),
            agent.shutdown.clone(),
        ));
        Ok(agent)
    }
}

impl<K: Kernel> Agent<K> {
    /// At start: undo the ADDs the previous agent died in
    /// ([`Self::undo_interrupted_adds`]); re-attach the new programs to
    /// every known host veth (an atomic swap in the pinned links), rewrite
    /// map entries (saying so when a crash had taken them away), resume
    /// renewals, put back a host veth MAC that something else changed, keep
    /// the uplink in all-multicast mode while attachments remain; forget
    /// attachments whose veth vanished while the agent was down, releasing
    /// their leases. The agent is ready once this is done (and the uplink
    /// is up).
    pub(crate) async fn readopt(self: &Arc<Self>) {
        self.undo_interrupted_adds().await;
        let endpoints: Vec<Endpoint> = self.state().endpoints.values().cloned().collect();
        let mut adopted = Vec::new();
        for ep in endpoints {
            let key = ep.key();
            match self.links.find_link(&ep.host_veth).await {
                Ok(Some(l)) if l.index == ep.host_ifindex => {
                    if let Err(e) = self.restore_host_mac(&ep, &l).await {
                        warn!(attachment = %key, error = %e, "cannot restore the host veth's MAC");
                    }
                    let entry = self.endpoint_entry(&ep);
                    // What a crash (mid-DEL) may have taken away: said in the log.
                    let mut repaired = Vec::new();
                    if !POD_HOOKS
                        .iter()
                        .all(|h| self.maps.is_attached(&ep.host_veth, *h))
                    {
                        repaired.push("TC re-attached");
                    }
                    if self
                        .maps
                        .endpoint(l.index)
                        .is_none_or(|e| e.mac != entry.mac || e.flags != entry.flags)
                        || self
                            .maps
                            .endpoint_by_mac(ep.mac)
                            .is_none_or(|e| e.ifindex != l.index)
                    {
                        repaired.push("map entries re-registered");
                    }
                    let res = match self.maps.attach(&ep.host_veth).await {
                        Ok(()) => self.maps.register(l.index, entry, self.endpoint_guard(&ep)),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = res {
                        warn!(attachment = %key, error = %e, "cannot re-adopt endpoint");
                        continue;
                    }
                    if let Some(lease) = &ep.lease
                        && let Err(e) = self.links.add_host_route(lease.address, l.index).await
                    {
                        warn!(attachment = %key, error = %e, "cannot restore host route");
                    }
                    if !self.cfg.promiscuous
                        && let Err(e) = self.links.add_uc_filter(self.uplink.index, ep.mac).await
                    {
                        warn!(attachment = %key, error = %e, "cannot restore unicast filter entry");
                    }
                    if ep.lease.is_some() && !ep.expired {
                        self.spawn_renewal(key.clone());
                    }
                    if let Some(a) = &ep.ipv6 {
                        // The guard's entry (a crash may have lost it), the
                        // node's route, the DHCPv6 schedule from the state
                        // file's lease: no new Solicit.
                        if let Err(e) = self.maps.assign_v6(a.address, l.index) {
                            warn!(attachment = %key, error = %e, "cannot restore the IPv6 guard entry");
                        }
                        if let Err(e) = self.lan6.add_host_route6(a.address, l.index).await {
                            warn!(attachment = %key, error = %e, "cannot restore the IPv6 host route");
                        }
                        if a.lease.is_some() {
                            self.spawn_renewal6(key.clone());
                        }
                    }
                    adopted.push(key.clone());
                    if repaired.is_empty() {
                        info!(attachment = %key, "re-adopted");
                    } else {
                        warn!(
                            attachment = %key,
                            veth = %ep.host_veth,
                            done = %repaired.join(", "),
                            "half-made attachment repaired and re-adopted"
                        );
                    }
                }
                Ok(_) => {
                    warn!(
                        attachment = %key,
                        veth = %ep.host_veth,
                        "veth vanished while the agent was down (a DEL it died in, or the pod's \
                         namespace deleted): removing the attachment, releasing its lease"
                    );
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
        if let Err(e) = self.adopt_allmulti(adopted).await {
            warn!(error = %e, "cannot set the uplink's all-multicast mode");
        }
        self.readopted.store(true, Ordering::Release);
    }
}

/// The programs of a pod's host veth.
const POD_HOOKS: [Hook; 2] = [Hook::FromPod, Hook::ToPod];

impl<K: Kernel> Agent<K> {
    /// The ADDs the previous agent died in (their in-flight records): one
    /// that reached the state drops its record; any other is undone
    /// ([`Self::remove_half_made`]) and logged with what was removed.
    async fn undo_interrupted_adds(&self) {
        let store = self.store.clone();
        let records = match tokio::task::spawn_blocking(move || store.adding()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the in-flight ADD records");
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot read the in-flight ADD records");
                return;
            }
        };
        for rec in records {
            let key = rec.key();
            let committed = self
                .state()
                .endpoints
                .get(&key)
                .is_some_and(|ep| ep.host_veth == rec.host_veth);
            if committed {
                info!(attachment = %key, "an ADD committed before the agent stopped: its in-flight record dropped");
            } else {
                let done = self.remove_half_made(&key, &rec).await;
                warn!(
                    attachment = %key,
                    veth = %rec.host_veth,
                    mac = %fmt_mac(&rec.mac),
                    done = %if done.is_empty() { "nothing was left".to_string() } else { done.join(", ") },
                    "half-made ADD removed (the agent stopped during it)"
                );
            }
            if let Err(e) = self.store.clear_adding(&rec.host_veth).await {
                warn!(attachment = %key, error = %e, "cannot remove the in-flight ADD record");
            }
        }
    }

    /// Removes what an interrupted ADD made, each step tried whatever the
    /// others did; returns what was done. The MAC-keyed things (lease,
    /// `EP_BY_MAC`, uplink filter entry) only if no attachment of the state
    /// holds the MAC.
    async fn remove_half_made(&self, key: &str, rec: &Adding) -> Vec<&'static str> {
        let mut done = Vec::new();
        let owns_mac = self.owns_mac(rec.mac, key);
        if let Some(l6) = rec.ipv6.as_ref().and_then(|a| a.lease.as_ref())
            && owns_mac
        {
            let client_id = match &rec.lease {
                _ if !rec.client_id.is_empty() => Some(&rec.client_id),
                Some(l) => Some(&l.client_id),
                None => None,
            };
            let id = client_id.and_then(|c| {
                crate::ipv6::dhcp6::Dhcp6Identity::from_v4_client_id(rec.mac, c, None).ok()
            });
            match id {
                Some(id) => {
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(3),
                        self.lan6.release(&id, l6),
                    )
                    .await
                    {
                        Ok(Ok(())) => done.push("DHCPv6 lease released"),
                        Ok(Err(e)) => {
                            warn!(attachment = %key, error = %e, "half-made ADD: DHCPv6 release failed");
                        }
                        Err(_) => {
                            warn!(attachment = %key, "half-made ADD: no reply to the DHCPv6 release");
                        }
                    }
                }
                None => {
                    warn!(attachment = %key, "half-made ADD: no DHCPv6 identity; its lease expires on the server")
                }
            }
        }
        if let Some(lease) = &rec.lease
            && owns_mac
        {
            match self.leases.release(lease).await {
                Ok(()) => done.push("lease released"),
                Err(e) => warn!(attachment = %key, error = %e, "half-made ADD: release failed"),
            }
        }
        if POD_HOOKS
            .iter()
            .any(|h| self.maps.is_attached(&rec.host_veth, *h))
        {
            match self.maps.detach(&rec.host_veth) {
                Ok(()) => done.push("TC detached"),
                Err(e) => warn!(attachment = %key, error = %e, "half-made ADD: detach failed"),
            }
        }
        let link = match self.links.find_link(&rec.host_veth).await {
            Ok(l) => l,
            Err(e) => {
                warn!(attachment = %key, error = %e, "half-made ADD: cannot look up the veth");
                None
            }
        };
        // The entries of the veth, or (the veth gone) of the MAC.
        let ifindex = link.map(|l| l.index).or_else(|| {
            self.maps
                .endpoint_by_mac(rec.mac)
                .map(|e| e.ifindex)
                .filter(|i| {
                    !self
                        .state()
                        .endpoints
                        .values()
                        .any(|ep| ep.host_ifindex == *i)
                })
        });
        if let Some(ifindex) = ifindex
            && (self.maps.endpoint(ifindex).is_some()
                || self
                    .maps
                    .endpoint_by_mac(rec.mac)
                    .is_some_and(|e| e.ifindex == ifindex))
        {
            match self.maps.unregister(ifindex, owns_mac.then_some(rec.mac)) {
                Ok(()) => done.push("map entries removed"),
                Err(e) => warn!(attachment = %key, error = %e, "half-made ADD: unregister failed"),
            }
            let _ = self.maps.purge_flows(ifindex);
        }
        if owns_mac && !self.cfg.promiscuous {
            match self.links.del_uc_filter(self.uplink.index, rec.mac).await {
                Ok(()) => done.push("uplink filter entry removed"),
                Err(e) => {
                    warn!(attachment = %key, error = %e, "half-made ADD: filter entry removal failed")
                }
            }
        }
        if link.is_some() {
            match self.links.delete_link(&rec.host_veth).await {
                Ok(()) => done.push("host veth deleted"),
                Err(e) => {
                    warn!(attachment = %key, error = %e, "half-made ADD: veth deletion failed")
                }
            }
        }
        done
    }
}

/// Whether `name` and `mac` are those of a host veth lanlink made:
/// [`super::host_veth_name`]'s `ll` + 12 lowercase hex digits, and the MAC
/// [`host_veth_mac`] derives from that name (the pod MAC changes it only in
/// its last bit, and only when they would be equal).
fn is_lanlink_host_veth(name: &str, mac: [u8; 6]) -> bool {
    let Some(hex) = name.strip_prefix("ll") else {
        return false;
    };
    if hex.len() != 12 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return false;
    }
    let derived = host_veth_mac(name, [0; 6]);
    derived[..5] == mac[..5] && (derived[5] == mac[5] || derived[5] ^ 1 == mac[5])
}

/// The programs pinned under `<pin dir>/links/`: interface → its pins'
/// names (`<program>-<ifname>`, '.' written as ':').
fn pinned_links(pin_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(pin_dir.join(crate::paths::LINKS_DIR)) else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        for prefix in ["from_pod-", "to_pod-"] {
            if let Some(ifname) = name.strip_prefix(prefix) {
                out.entry(ifname.replace(':', "."))
                    .or_default()
                    .push(name.clone());
            }
        }
    }
    out
}

/// The host-veth ifindexes the pinned endpoint maps hold entries for, with
/// the MAC of each (from `EP_BY_IF`, else `EP_BY_MAC`).
fn mapped_ifindexes(pin_dir: &Path) -> anyhow::Result<BTreeMap<u32, Option<[u8; 6]>>> {
    use aya::maps::{HashMap, Map, MapData};
    use lanlink_common::{EndpointByIf, EndpointByMac, EndpointGuard, MacKey, map_names};
    let open = |name: &str| {
        MapData::from_pin(pin_dir.join(name))
            .map(Map::HashMap)
            .with_context(|| format!("open the pinned map {name}"))
    };
    let mut out: BTreeMap<u32, Option<[u8; 6]>> = BTreeMap::new();
    let by_if: HashMap<MapData, u32, EndpointByIf> =
        HashMap::try_from(open(map_names::EP_BY_IF)?).context("EP_BY_IF")?;
    for (ifindex, e) in by_if.iter().filter_map(Result::ok) {
        out.insert(ifindex, Some(e.mac));
    }
    let by_mac: HashMap<MapData, MacKey, EndpointByMac> =
        HashMap::try_from(open(map_names::EP_BY_MAC)?).context("EP_BY_MAC")?;
    for (k, e) in by_mac.iter().filter_map(Result::ok) {
        out.entry(e.ifindex).or_insert(Some(k.mac));
    }
    let guard: HashMap<MapData, u32, EndpointGuard> =
        HashMap::try_from(open(map_names::EP_GUARD)?).context("EP_GUARD")?;
    for (ifindex, _) in guard.iter().filter_map(Result::ok) {
        out.entry(ifindex).or_insert(None);
    }
    Ok(out)
}

impl Agent<Node> {
    /// Removes what is lanlink's but belongs to no attachment of the state
    /// (see the module header), after re-adoption and before the API
    /// serves, so no ADD is in flight. Each removal is logged.
    pub(crate) async fn sweep_orphans(&self) {
        let live: BTreeMap<String, u32> = self
            .state()
            .endpoints
            .values()
            .map(|ep| (ep.host_veth.clone(), ep.host_ifindex))
            .collect();
        let live_ifindexes: BTreeSet<u32> = live.values().copied().collect();

        // Host veths.
        let links = match list_links(self.links.handle()).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "orphan sweep: cannot list the links");
                Vec::new()
            }
        };
        for (name, info) in links {
            if live.contains_key(&name) || !is_lanlink_host_veth(&name, info.mac) {
                continue;
            }
            let mac = self.maps.endpoint(info.index).map(|e| e.mac);
            let owned = mac.filter(|m| self.owns_mac(*m, ""));
            let mut done = Vec::new();
            if POD_HOOKS.iter().any(|h| self.maps.is_attached(&name, *h)) {
                match self.maps.detach(&name) {
                    Ok(()) => done.push("TC detached"),
                    Err(e) => warn!(veth = %name, error = %e, "orphan sweep: detach failed"),
                }
            }
            match self.maps.unregister(info.index, owned) {
                Ok(()) if mac.is_some() => done.push("map entries removed"),
                Ok(()) => {}
                Err(e) => warn!(veth = %name, error = %e, "orphan sweep: unregister failed"),
            }
            let _ = self.maps.purge_flows(info.index);
            if let Some(m) = owned
                && !self.cfg.promiscuous
            {
                match self.links.del_uc_filter(self.uplink.index, m).await {
                    Ok(()) => done.push("uplink filter entry removed"),
                    Err(e) => {
                        warn!(veth = %name, error = %e, "orphan sweep: filter entry removal failed")
                    }
                }
            }
            match self.links.delete_link(&name).await {
                Ok(()) => done.push("host veth deleted"),
                Err(e) => warn!(veth = %name, error = %e, "orphan sweep: veth deletion failed"),
            }
            warn!(
                veth = %name,
                ifindex = info.index,
                mac = %mac.map(|m| fmt_mac(&m)).unwrap_or_else(|| "unknown".into()),
                done = %done.join(", "),
                "orphan host veth removed (no attachment in the state)"
            );
        }

        // Pinned program links and map entries (a walk of the pin dir and
        // the maps: off the async workers).
        let pin_dir = self.cfg.pin_dir.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            (pinned_links(&pin_dir), mapped_ifindexes(&pin_dir))
        })
        .await;
        let Ok((pins, mapped)) = scanned else {
            warn!("orphan sweep: the scan of the pins and maps failed");
            return;
        };
        for (ifname, names) in pins {
            if live.contains_key(&ifname) || ifname == self.cfg.uplink {
                continue;
            }
            match self.maps.detach(&ifname) {
                Ok(()) => warn!(
                    interface = %ifname,
                    pins = %names.join(", "),
                    "orphan TC attachment removed (pinned link of no attachment)"
                ),
                Err(e) => warn!(interface = %ifname, error = %e, "orphan sweep: detach failed"),
            }
        }
        let mapped = match mapped {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "orphan sweep: cannot read the endpoint maps");
                return;
            }
        };
        for (ifindex, mac) in mapped {
            if live_ifindexes.contains(&ifindex) {
                continue;
            }
            let owned = mac.filter(|m| self.owns_mac(*m, ""));
            let mut done = Vec::new();
            match self.maps.unregister(ifindex, owned) {
                Ok(()) => done.push("map entries removed"),
                Err(e) => warn!(ifindex, error = %e, "orphan sweep: unregister failed"),
            }
            let _ = self.maps.purge_flows(ifindex);
            if let Some(m) = owned
                && !self.cfg.promiscuous
            {
                match self.links.del_uc_filter(self.uplink.index, m).await {
                    Ok(()) => done.push("uplink filter entry removed"),
                    Err(e) => {
                        warn!(ifindex, error = %e, "orphan sweep: filter entry removal failed")
                    }
                }
            }
            warn!(
                ifindex,
                mac = %mac.map(|m| fmt_mac(&m)).unwrap_or_else(|| "unknown".into()),
                done = %done.join(", "),
                "orphan map entries removed (endpoint of no attachment)"
            );
        }
        // Flows learnt through a veth of no attachment (the owner purges them).
        let pin_dir = self.cfg.pin_dir.clone();
        if let Ok(Ok(flows)) =
            tokio::task::spawn_blocking(move || crate::flows::read_pinned(&pin_dir)).await
        {
            let stale: BTreeSet<u32> = flows
                .iter()
                .map(|(_, v)| v.ifindex)
                .filter(|i| !live_ifindexes.contains(i))
                .collect();
            for ifindex in stale {
                let _ = self.maps.purge_flows(ifindex);
                info!(
                    ifindex,
                    "orphan flows queued for removal (learnt through a veth of no attachment)"
                );
            }
        }
    }
}

/// Every link of the agent's namespace: name and index/MAC.
async fn list_links(
    handle: &rtnetlink::Handle,
) -> anyhow::Result<Vec<(String, netlink::LinkInfo)>> {
    use futures::TryStreamExt as _;
    use rtnetlink::packet_route::link::LinkAttribute;
    let mut out = Vec::new();
    let mut dump = handle.link().get().execute();
    while let Some(msg) = dump.try_next().await.context("dump the links")? {
        let mut name = None;
        let mut info = netlink::LinkInfo {
            index: msg.header.index,
            mac: [0; 6],
            mtu: 0,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Address(a) if a.len() == 6 => info.mac.copy_from_slice(a),
                _ => {}
            }
        }
        if let Some(name) = name {
            out.push((name, info));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::agent::fakes::{TestAgent, request};

    /// The record an ADD of `ep` left when it died after leasing.
    fn record_of(ep: &Endpoint) -> Adding {
        Adding {
            container_id: ep.container_id.clone(),
            ifname: ep.ifname.clone(),
            netns: ep.netns.clone(),
            host_veth: ep.host_veth.clone(),
            mac: ep.mac,
            client_id: ep
                .lease
                .as_ref()
                .map(|l| l.client_id.clone())
                .unwrap_or_default(),
            lease: ep.lease.clone(),
            ipv6: ep.ipv6.clone(),
        }
    }

    /// A crash after the ADD made everything but before the state held it:
    /// the next start releases the lease and removes the rest.
    #[tokio::test]
    async fn an_add_interrupted_before_its_commit_is_undone_at_start() {
        let t = TestAgent::start().await;
        t.agent.add(request("c1", "web")).await.unwrap();
        t.agent.add(request("c2", "db")).await.unwrap();
        let ep = t.agent.state().endpoints["c1/eth0"].clone();
        // As the disk looks after the crash: c1's record, no c1 in the state.
        t.agent.store.record_adding(&record_of(&ep)).await.unwrap();
        let mut st = t.agent.state().clone();
        st.endpoints.remove("c1/eth0");
        t.agent.store.submit(st).wait().await.unwrap();
        // Positive control: c1's things exist before the restart.
        assert!(t.world().links.contains_key(&ep.host_veth));
        assert!(t.world().leases.contains_key(&ep.mac));

        let t2 = t.restart().await;
        let w = t2.world();
        assert!(!w.links.contains_key(&ep.host_veth), "veth deleted");
        assert!(!w.leases.contains_key(&ep.mac), "lease released");
        assert!(
            !w.ep_by_if.contains_key(&ep.host_ifindex),
            "map entry removed"
        );
        assert!(!w.uc_filter.contains(&ep.mac), "filter entry removed");
        assert!(!w.attached.contains(&ep.host_veth), "programs detached");
        assert_eq!(w.leases.len(), 1, "c2's lease kept");
        drop(w);
        assert_eq!(t2.agent.endpoints().len(), 1, "c2 re-adopted");
        assert!(t2.agent.store.adding().unwrap().is_empty(), "record gone");
    }

    /// A record of an ADD that reached the state is only dropped.
    #[tokio::test]
    async fn a_committed_adds_record_is_dropped_and_the_attachment_kept() {
        let t = TestAgent::start().await;
        t.agent.add(request("c1", "web")).await.unwrap();
        let ep = t.agent.state().endpoints["c1/eth0"].clone();
        t.agent.store.record_adding(&record_of(&ep)).await.unwrap();
        let t2 = t.restart().await;
        assert!(t2.world().links.contains_key(&ep.host_veth));
        assert!(t2.world().leases.contains_key(&ep.mac));
        assert!(t2.world().calls_of(&["release"]).is_empty());
        assert_eq!(t2.agent.endpoints().len(), 1);
        assert!(t2.agent.store.adding().unwrap().is_empty());
    }

    /// A complete ADD leaves no record; a failed one neither.
    #[tokio::test]
    async fn adds_leave_no_record() {
        let t = TestAgent::start().await;
        t.agent.add(request("c1", "web")).await.unwrap();
        t.world().fail_at = Some("configure_pod");
        assert!(t.agent.add(request("c2", "db")).await.is_err());
        assert!(t.agent.store.adding().unwrap().is_empty());
    }

    #[test]
    fn lanlink_host_veths_are_told_by_name_and_mac() {
        let name = super::super::host_veth_name("c1", "eth0");
        let mac = host_veth_mac(&name, [2, 0, 0, 0, 0, 1]);
        assert!(is_lanlink_host_veth(&name, mac));
        // The pod MAC equal to the derived one flips the last bit.
        let derived = host_veth_mac(&name, [0; 6]);
        assert!(is_lanlink_host_veth(&name, host_veth_mac(&name, derived)));
        // Positive control's negatives: another MAC, another name pattern.
        assert!(!is_lanlink_host_veth(&name, [2, 0, 0, 0, 0, 9]));
        assert!(!is_lanlink_host_veth("eth0", mac));
        assert!(!is_lanlink_host_veth("ll0123", mac));
        assert!(!is_lanlink_host_veth("llZZZZZZZZZZZZ", mac));
    }

    #[test]
    fn ip_forward_is_turned_on_only_when_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ip_forward");
        std::fs::write(&path, "0\n").unwrap();
        assert!(enable_ip_forward(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1");
        assert!(!enable_ip_forward(&path).unwrap());
        std::fs::write(&path, "1\n").unwrap();
        assert!(!enable_ip_forward(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        assert!(enable_ip_forward(&dir.path().join("missing")).is_err());
    }
}
