//! Start-up: the node prerequisites, the dataplane, the DHCP socket, the
//! uplink cache and its task, the netfilter rules, the DELs queued while
//! the agent was stopped, and the re-adoption of the attachments of a
//! previous run.

use std::{path::Path, sync::Arc, sync::atomic::Ordering};

use anyhow::Context as _;
use futures::StreamExt as _;
use rtnetlink::packet_core::NetlinkPayload;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    Agent, AgentConfig, Kernel, Links as _, Maps as _, Node, NodeLinks, NodeMaps, Parts, UplinkView,
};
use crate::{
    dataplane::{Dataplane, DataplaneConfig},
    dhcp::DhcpClient,
    netlink,
    state::{Endpoint, Store},
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
        let dp = Dataplane::load(DataplaneConfig {
            uplink: cfg.uplink.clone(),
            uplink_ifindex: uplink.index,
            pin_dir: cfg.pin_dir.clone(),
            flags: cfg.dataplane_flags,
            attach: cfg.attach,
        })
        .context("load the dataplane")?;
        let adopted_maps = dp.adopted;
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
        let parts = Parts {
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
        agent
            .sync_host_routes()
            .await
            .context("write the host-routes map")?;
        let events = events.filter_map(|(msg, _)| async move {
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => Some(m),
                _ => None,
            }
        });
        tokio::spawn(Arc::clone(&agent).watch_uplink(Box::pin(events)));
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
    /// At start: re-attach the new programs to every known host veth (an
    /// atomic swap in the pinned links), rewrite map entries, resume
    /// renewals, put back a host veth MAC that something else changed, keep
    /// the uplink in all-multicast mode while attachments remain; forget
    /// attachments whose veth vanished while the agent was down, releasing
    /// their leases. The agent is ready once this is done
    /// (and the uplink is up).
    pub(crate) async fn readopt(self: &Arc<Self>) {
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
                    adopted.push(key.clone());
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
        if let Err(e) = self.adopt_allmulti(adopted).await {
            warn!(error = %e, "cannot set the uplink's all-multicast mode");
        }
        self.readopted.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
