//! CNI CHECK: the attachment still looks as the agent made it — veth (its
//! MAC put back if something changed it), map entries, programs, and the
//! pod's MAC, address and routes, its IPv6 address (present, not found
//! duplicate) and the source guard's entry for it.

use std::{path::Path, sync::Arc};

use lanlink_api::{AttachmentRequest, AttachmentResult};
use lanlink_common::endpoint_flags;
use tracing::warn;

use super::{Agent, AgentError, Kernel, Lan6 as _, Links as _, Maps as _, pod_routes, result_for};
use crate::{
    dataplane::Hook,
    netlink::{LinkInfo, fmt_mac},
    netlink6::Dad,
    state,
};

impl<K: Kernel> Agent<K> {
    /// Sets the host veth `found` back to the MAC recorded for `ep` if
    /// something changed it; says whether it had to. The recorded MAC is
    /// the one the ARP responder answers with and the pod has cached for
    /// its gateway, so the link follows the record, not the other way.
    pub(super) async fn restore_host_mac(
        &self,
        ep: &state::Endpoint,
        found: &LinkInfo,
    ) -> Result<bool, AgentError> {
        if found.mac == ep.host_mac {
            return Ok(false);
        }
        warn!(
            attachment = %ep.key(),
            veth = %ep.host_veth,
            found = %fmt_mac(&found.mac),
            recorded = %fmt_mac(&ep.host_mac),
            "host veth MAC changed; restoring it"
        );
        self.links.set_link_mac(found.index, ep.host_mac).await?;
        Ok(true)
    }

    /// CNI CHECK, under the attachment's lock like ADD and DEL: it must not
    /// look at an attachment halfway through being made or removed.
    pub async fn check(
        self: &Arc<Self>,
        req: AttachmentRequest,
    ) -> Result<AttachmentResult, AgentError> {
        let key = state::key(&req.container_id, &req.ifname);
        let _guard = self.lock_key(&key).await;
        let ep = self
            .state()
            .endpoints
            .get(&key)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(key.clone()))?;
        let fail = |what: String| Err(AgentError::CheckFailed(format!("{key}: {what}")));
        let Some(host) = self.links.find_link(&ep.host_veth).await? else {
            return fail(format!("host veth {} is gone", ep.host_veth));
        };
        if host.index != ep.host_ifindex {
            return fail(format!(
                "host veth {} has index {}, expected {}",
                ep.host_veth, host.index, ep.host_ifindex
            ));
        }
        // udev (`MACAddressPolicy=persistent`) or an administrator may have
        // rewritten the MAC the pod caches for its gateway: put it back.
        self.restore_host_mac(&ep, &host).await?;
        let mut entry = self.endpoint_entry(&ep);
        let current = self.maps.endpoint(host.index);
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
        if self.maps.endpoint_by_mac(ep.mac).map(|e| e.ifindex) != Some(host.index) {
            return fail("MAC map entry differs".into());
        }
        for hook in [Hook::FromPod, Hook::ToPod] {
            if !self.maps.is_attached(&ep.host_veth, hook) {
                return fail(format!("{hook:?} is not attached to {}", ep.host_veth));
            }
        }
        let pod = self
            .links
            .read_pod(Path::new(&ep.netns), &ep.ifname)
            .await?;
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
            routes = pod_routes(&ep.config, l);
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
        if let Some(a) = &ep.ipv6 {
            match self
                .lan6
                .pod_dad(Path::new(&ep.netns), &ep.ifname, a.address)
                .await?
            {
                Dad::Absent => {
                    return fail(format!(
                        "{} lacks {}/{}",
                        ep.ifname, a.address, a.prefix_len
                    ));
                }
                Dad::Failed => {
                    return fail(format!(
                        "{} is in use on the LAN (duplicate address detection failed)",
                        a.address
                    ));
                }
                Dad::Running | Dad::Done => {}
            }
            if self.maps.v6_owner(a.address) != Some(host.index) {
                return fail(format!("the source guard does not hold {}", a.address));
            }
        }
        Ok(result_for(&ep, &routes))
    }
}
