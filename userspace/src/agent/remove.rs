//! CNI DEL: idempotent, and never touching what another attachment owns.
//!
//! Order: the renewal stopped, the programs detached, then the endpoint
//! entries and flows removed (a veth is never unregistered while its
//! programs run), the MAC out of the uplink filter, the veth deleted, the
//! lease released, the state committed, all-multicast mode given up (off
//! after the last attachment, if the agent turned it on). The MAC-keyed things (`EP_BY_MAC`,
//! the uplink filter entry, the lease) are removed only by the attachment
//! that holds the MAC ([`Agent::owns_mac`]): a pod re-created under the same
//! name derives the same identity.

use std::sync::Arc;

use lanlink_api::AttachmentRequest;
use tracing::{info, warn};

use super::{Agent, AgentError, Kernel, Leases as _, Links as _, Maps as _, host_veth_name};
use crate::{
    netlink::fmt_mac,
    state::{self, Endpoint},
};

impl<K: Kernel> Agent<K> {
    /// CNI DEL: idempotent; succeeds when the attachment is already gone.
    pub async fn del(self: &Arc<Self>, req: AttachmentRequest) -> Result<(), AgentError> {
        let key = state::key(&req.container_id, &req.ifname);
        let _guard = self.lock_key(&key).await;
        let ep = self.state().endpoints.get(&key).cloned();
        match ep {
            Some(ep) => self.remove(&ep).await,
            None => self.remove_unknown(&key, &req).await,
        }
    }

    /// DEL of an attachment unknown to the state (e.g. a crash mid-ADD):
    /// removes what its name says could exist.
    async fn remove_unknown(&self, key: &str, req: &AttachmentRequest) -> Result<(), AgentError> {
        let veth = host_veth_name(&req.container_id, &req.ifname);
        let link = self.links.find_link(&veth).await?;
        // The pinned program links outlive a veth that vanished: removed
        // whatever is left of the rest.
        self.maps.detach(&veth)?;
        let Some(link) = link else {
            // Nothing else was made, or a previous DEL removed it all.
            return Ok(());
        };
        let mac = self.maps.endpoint(link.index).map(|e| e.mac);
        let owned_mac = mac.filter(|m| self.owns_mac(*m, key));
        self.maps.unregister(link.index, owned_mac)?;
        self.maps.purge_flows(link.index)?;
        if let Some(mac) = owned_mac {
            self.links.del_uc_filter(self.uplink.index, mac).await?;
        }
        self.links.delete_link(&veth).await?;
        if let Some(mac) = owned_mac {
            self.release_mac(mac, key);
        }
        self.leave_allmulti(key).await;
        Ok(())
    }

    /// Gives up `key`'s hold on all-multicast mode. A failure does not fail
    /// DEL: the mode stays on, and the next DEL (or start) turns it off.
    async fn leave_allmulti(&self, key: &str) {
        if let Err(e) = self.release_allmulti(key).await {
            warn!(attachment = %key, error = %e, "cannot turn all-multicast mode off");
        }
    }

    /// Removes an attachment entirely (see the module header).
    pub(super) async fn remove(&self, ep: &Endpoint) -> Result<(), AgentError> {
        let key = ep.key();
        if let Some(h) = self
            .renewals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
        {
            h.abort();
        }
        self.stop_renewal6(&key);
        let owns_mac = self.owns_mac(ep.mac, &key);
        if !owns_mac {
            warn!(attachment = %key, mac = %fmt_mac(&ep.mac), "another attachment holds this MAC; leaving its map entry, filter entry and lease alone");
        }
        self.maps.detach(&ep.host_veth)?;
        super::crash_point("del-detached");
        self.maps
            .unregister(ep.host_ifindex, owns_mac.then_some(ep.mac))?;
        self.maps.purge_flows(ep.host_ifindex)?;
        if owns_mac && !self.cfg.promiscuous {
            self.links.del_uc_filter(self.uplink.index, ep.mac).await?;
        }
        self.links.delete_link(&ep.host_veth).await?;
        super::crash_point("del-veth-deleted");
        if let Some(lease) = &ep.lease
            && !ep.expired
            && owns_mac
        {
            // A failed RELEASE must not block DEL: the lease then expires
            // on the server by itself. It is logged and counted.
            if let Err(e) = self.leases.release(lease).await {
                warn!(attachment = %key, error = %e, "release failed");
            }
            super::crash_point("del-released");
        }
        if let Some(a) = &ep.ipv6
            && owns_mac
        {
            // As for DHCPv4: a failed Release does not block DEL.
            self.release6(&key, ep.host_ifindex, super::v6::id6(ep).as_ref(), a, false)
                .await;
        }
        // `unregister` already took the veth out of the flood list.
        self.commit(&key, None).await?;
        self.release_mac(ep.mac, &key);
        self.leave_allmulti(&key).await;
        if let Err(e) = self.sync_host_routes().await {
            warn!(attachment = %key, error = %e, "cannot rewrite the host-routes map");
        }
        info!(attachment = %key, "removed");
        Ok(())
    }
}
