//! Lease renewal and expiry: one task per lease keeps it alive with
//! [`dhcp::LeaseMachine`], and ends it when it runs out or a server refuses
//! it.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracing::{info, warn};

use super::{Agent, Kernel, Leases as _, Links as _, Maps as _, now_unix};
use crate::{dhcp, netlink::fmt_mac};

impl<K: Kernel> Agent<K> {
    /// Starts (or restarts) the renewal task of attachment `key`.
    pub(super) fn spawn_renewal(self: &Arc<Self>, key: String) {
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
                        r = self.leases.renew(&current, rebinding, timeout) => r,
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
                            if let Err(e) = self.commit(&key, Some(ep)).await {
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
                            if let Err(e) = self.leases.release(&new).await {
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
        self.leases.count_expired();
        let address = ep.lease.as_ref().map(|l| l.address);
        warn!(
            attachment = %key, mac = %fmt_mac(&ep.mac), address = ?address,
            "lease expired: address removed from the pod, endpoint marked expired"
        );
        // The maps first: the dataplane stops accepting the address at once.
        let entry = self.endpoint_entry(&ep);
        if let Err(e) = self
            .maps
            .register(ep.host_ifindex, entry, self.endpoint_guard(&ep))
        {
            warn!(attachment = %key, error = %e, "cannot mark endpoint expired");
        }
        if let Some(l) = &ep.lease {
            // The server may lease the address to another LAN host next:
            // the node must stop routing it to this pod.
            if let Err(e) = self.links.del_host_route(l.address, ep.host_ifindex).await {
                warn!(attachment = %key, error = %e, "cannot remove the host route of the expired address");
            }
            if let Err(e) = self
                .links
                .remove_pod_address(Path::new(&ep.netns), &ep.ifname, l.address, l.prefix_len)
                .await
            {
                warn!(attachment = %key, error = %e, "cannot remove the expired address");
            }
        }
        // Last: once the API says expired, the pod and the node have let
        // the address go.
        if let Err(e) = self.commit(key, Some(ep)).await {
            warn!(attachment = %key, error = %e, "cannot persist expiry");
        }
    }
}
