//! A pod's IPv6 (issue 16), beside its IPv4 lease: the plan from the
//! netconf's `ipv6` and the routers' advertisements, the SLAAC address or
//! the DHCPv6 lease, the pod's address (optimistic, RFC 4429) and routes,
//! the node's route to it and its entry in the source guard, duplicate
//! address detection, the DHCPv6 renewals, and the release at DEL.
//!
//! Duplicate address detection is the pod kernel's own: its solicitation
//! goes out as soon as the address is on the interface, which happens as
//! soon as the programs are attached and the address is known, beside the
//! DHCPv4 exchange. A LAN host that answers withdraws the address from the
//! guard (`V6_OWNERS`, in `from_lan`): the agent reads that entry, not the
//! pod's kernel, whose copy of the answer arrives only once the pod is in
//! the flood list. Withdrawn within `arpProbeMs` of the address being
//! written, the ADD fails and a DHCPv6 lease is declined; withdrawn in the
//! [`DAD_WATCH`] after the ADD, the address leaves the pod, the node and
//! the guard, a DHCPv6 lease is declined, and the attachment stays
//! IPv4-only, logged as an error.

use std::{net::Ipv6Addr, path::Path, sync::Arc, time::Duration};

use lanlink_api::{AttachmentRequest, Ipv6Mode, Mode};
use tracing::{error, info, warn};

use super::{Agent, AgentError, Kernel, Lan6 as _, Maps as _};
use crate::{
    ipv6::{
        assign::{self, Assignment, Plan, Source},
        dhcp6::{Dhcp6Error, Dhcp6Identity},
        ra::RaView,
    },
    netlink6::{Pod6Config, Pod6Route},
    state::Endpoint,
};

/// How long after an ADD the pod's duplicate address detection is watched
/// (RFC 4862: `DupAddrDetectTransmits` 1 × `RetransTimer` 1 s, plus margin).
const DAD_WATCH: Duration = Duration::from_secs(3);
const DAD_POLL: Duration = Duration::from_millis(100);
/// How long a DHCPv6 Release or Decline may wait for the server's Reply.
const END_WAIT: Duration = Duration::from_secs(3);

/// The IPv6 part of an ADD, decided before anything is made.
pub(super) struct Plan6 {
    pub(super) plan: Plan,
    pub(super) view: RaView,
    /// The pod's DHCPv6 identity (the DUID inside its DHCPv4 client id).
    pub(super) id: Option<Dhcp6Identity>,
}

/// The routes an assignment gives the pod: the on-link prefixes (with the
/// pod's address as source), and in primary mode the default route via
/// the router's link-local address. Secondary mode has no default route.
pub(super) fn routes6(mode: Mode, a: &Assignment) -> Vec<Pod6Route> {
    let mut routes: Vec<Pod6Route> = a
        .on_link
        .iter()
        .map(|(p, len)| Pod6Route {
            dst: *p,
            prefix: *len,
            gw: None,
            src: Some(a.address),
        })
        .collect();
    if mode == Mode::Primary
        && let Some(r) = a.router
    {
        routes.push(Pod6Route {
            dst: Ipv6Addr::UNSPECIFIED,
            prefix: 0,
            gw: Some(r),
            src: Some(a.address),
        });
    }
    routes
}

/// The DHCPv6 identity of an attachment: the DUID and IAID inside its
/// DHCPv4 client identifier, the name in option 39.
pub(super) fn id6(ep: &Endpoint) -> Option<Dhcp6Identity> {
    let client_id = &ep.lease.as_ref()?.client_id;
    let fqdn = ep
        .pod
        .name
        .as_deref()
        .and_then(crate::dhcp::sanitize_hostname);
    Dhcp6Identity::from_v4_client_id(ep.mac, client_id, fqdn).ok()
}

impl<K: Kernel> Agent<K> {
    /// What IPv6 this ADD gives the pod. `ipam: none` (the pod's own
    /// clients) and `ipv6: off` get none; otherwise the routers' view
    /// decides (`ipv6::assign::plan`).
    pub(super) async fn plan6(
        &self,
        req: &AttachmentRequest,
        mac: [u8; 6],
        client_id: &[u8],
    ) -> Result<Plan6, AgentError> {
        let none = || Plan6 {
            plan: Plan::None,
            view: RaView::new(),
            id: None,
        };
        if req.config.ipv6 == Ipv6Mode::Off || req.config.dhcp.is_none() {
            return Ok(none());
        }
        let view = self.lan6.view().await;
        let plan = assign::plan(
            req.config.ipv6,
            req.config.ipv6_iid,
            &view,
            std::time::Instant::now(),
            mac,
            client_id,
        )
        .map_err(|e| AgentError::InvalidConfig {
            field: "ipv6",
            reason: e.to_string(),
        })?;
        let fqdn = req
            .pod
            .name
            .as_deref()
            .and_then(crate::dhcp::sanitize_hostname);
        let id = Dhcp6Identity::from_v4_client_id(mac, client_id, fqdn).map_err(|source| {
            AgentError::Dhcp6 {
                uplink: self.cfg.uplink.clone(),
                source,
            }
        })?;
        Ok(Plan6 {
            plan,
            view,
            id: Some(id),
        })
    }

    /// The address of `plan`: made at once (SLAAC) or leased (DHCPv6,
    /// soliciting for at most `timeout`).
    pub(super) async fn acquire6(
        &self,
        p: &Plan6,
        timeout: Duration,
    ) -> Result<Option<Assignment>, AgentError> {
        let router = assign::default_router(&p.view);
        let on_link = assign::on_link_prefixes(&p.view);
        let ra_dns: Vec<Ipv6Addr> = p.view.dns_servers().collect();
        Ok(match (&p.plan, &p.id) {
            (Plan::None, _) | (_, None) => None,
            (
                Plan::Slaac {
                    address,
                    prefix_len,
                },
                Some(_),
            ) => Some(Assignment {
                address: *address,
                prefix_len: *prefix_len,
                source: Source::Slaac,
                router,
                on_link,
                dns: ra_dns,
                lease: None,
            }),
            (Plan::Dhcpv6, Some(id)) => {
                let lease =
                    self.lan6
                        .obtain(id, timeout)
                        .await
                        .map_err(|source| AgentError::Dhcp6 {
                            uplink: self.cfg.uplink.clone(),
                            source,
                        })?;
                Some(Assignment {
                    address: lease.address,
                    prefix_len: 128,
                    source: Source::Dhcpv6,
                    router,
                    on_link,
                    dns: if lease.dns.is_empty() {
                        ra_dns
                    } else {
                        lease.dns.clone()
                    },
                    lease: Some(lease),
                })
            }
        })
    }

    /// The assignment in the source guard, the node's route to it, and the
    /// address (optimistic) and routes in the pod.
    pub(super) async fn configure6(&self, ep: &Endpoint, a: &Assignment) -> Result<(), AgentError> {
        self.maps.assign_v6(a.address, ep.host_ifindex)?;
        self.lan6.prepare_host_veth6(&ep.host_veth).await?;
        self.lan6
            .add_host_route6(a.address, ep.host_ifindex)
            .await?;
        self.lan6
            .configure_pod6(
                Path::new(&ep.netns),
                Pod6Config {
                    ifname: ep.ifname.clone(),
                    address: a.address,
                    prefix: a.prefix_len,
                    routes: routes6(ep.config.mode, a),
                },
            )
            .await?;
        Ok(())
    }

    /// Waits until `until` (the netconf's `arpProbeMs` after the address
    /// was written: the time a LAN host has to answer for an IPv4 address
    /// too) for a LAN host to answer the pod's duplicate address detection;
    /// fails if one did. The pod is in the flood list only once committed,
    /// so the answer does not reach its kernel during the ADD; the
    /// dataplane saw it and withdrew the address from the guard
    /// (`forget_defended`), which a map lookup tells.
    pub(super) async fn check_dad(
        &self,
        ep: &Endpoint,
        a: &Assignment,
        until: tokio::time::Instant,
    ) -> Result<(), AgentError> {
        loop {
            if self.maps.v6_owner(a.address) != Some(ep.host_ifindex) {
                return Err(AgentError::Ipv6Conflict {
                    address: a.address,
                    how: a.source.as_str(),
                });
            }
            if tokio::time::Instant::now() >= until {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Gives up an assignment the pod no longer has: the node's route
    /// removed, a DHCPv6 lease released (`decline`: declined, the address
    /// being in use on the LAN). The pod's address and the guard's entry go
    /// with the veth and the endpoint, or are removed by the caller.
    pub(super) async fn release6(
        &self,
        key: &str,
        host_ifindex: u32,
        id: Option<&Dhcp6Identity>,
        a: &Assignment,
        decline: bool,
    ) {
        if let Err(e) = self.lan6.del_host_route6(a.address, host_ifindex).await {
            warn!(attachment = %key, error = %e, "cannot remove the node's IPv6 route to the pod");
        }
        let Some(lease) = &a.lease else { return };
        let Some(id) = id else {
            warn!(attachment = %key, "no DHCPv6 identity: the lease is left to expire");
            return;
        };
        // Bounded like the DHCPv4 release: a server that stays silent must
        // not hold a DEL for the RFC's 15 s of retransmissions.
        let (res, what) = if decline {
            (
                tokio::time::timeout(END_WAIT, self.lan6.decline(id, lease)).await,
                "declined",
            )
        } else {
            (
                tokio::time::timeout(END_WAIT, self.lan6.release(id, lease)).await,
                "released",
            )
        };
        let res = res.unwrap_or(Err(Dhcp6Error::Timeout {
            exchange: if decline { "decline" } else { "release" },
            attempts: 0,
            elapsed: END_WAIT,
        }));
        match res {
            Ok(()) => info!(attachment = %key, address = %lease.address, "DHCPv6 lease {what}"),
            Err(e) => warn!(
                attachment = %key, address = %lease.address, error = %e,
                "DHCPv6 lease not {what}; it expires on the server"
            ),
        }
    }

    /// After a committed ADD: watches the pod's duplicate address
    /// detection to its end, and a DHCPv6 lease's renewals.
    pub(super) fn after_add6(self: &Arc<Self>, key: &str, ep: &Endpoint) {
        let Some(a) = &ep.ipv6 else { return };
        let agent = Arc::clone(self);
        let (k, addr) = (key.to_string(), a.address);
        tokio::spawn(async move { agent.watch_dad(k, addr).await });
        if a.lease.is_some() {
            self.spawn_renewal6(key.to_string());
        }
    }

    /// Watches the guard's entry for `addr` for [`DAD_WATCH`]: a LAN host
    /// defending the address (the pod's kernel then fails its detection
    /// too) withdraws it there. A map lookup a tick, no namespace work.
    async fn watch_dad(self: Arc<Self>, key: String, addr: Ipv6Addr) {
        let deadline = tokio::time::Instant::now() + DAD_WATCH;
        while tokio::time::Instant::now() < deadline {
            tokio::select! {
                () = tokio::time::sleep(DAD_POLL) => {}
                () = self.shutdown.cancelled() => return,
            }
            let Some(ifindex) = self
                .state()
                .endpoints
                .get(&key)
                .filter(|ep| ep.ipv6.as_ref().is_some_and(|a| a.address == addr))
                .map(|ep| ep.host_ifindex)
            else {
                return;
            };
            if self.maps.v6_owner(addr) != Some(ifindex) {
                self.drop_conflicting6(&key, addr).await;
                return;
            }
        }
    }

    /// The pod's detection found `addr` in use on the LAN: the address
    /// leaves the pod, the node's route and the guard; a DHCPv6 lease is
    /// declined; the attachment goes on IPv4-only.
    async fn drop_conflicting6(&self, key: &str, addr: Ipv6Addr) {
        let _guard = self.lock_key(key).await;
        let Some(mut ep) = self.state().endpoints.get(key).cloned() else {
            return;
        };
        let Some(a) = ep.ipv6.take().filter(|a| a.address == addr) else {
            return;
        };
        error!(
            attachment = %key, address = %addr, source = a.source.as_str(),
            "IPv6 duplicate address detected on the LAN: address removed from the pod; the attachment is IPv4-only now"
        );
        self.stop_renewal6(key);
        if let Err(e) = self
            .lan6
            .remove_pod_address6(Path::new(&ep.netns), &ep.ifname, a.address, a.prefix_len)
            .await
        {
            warn!(attachment = %key, error = %e, "cannot remove the duplicate address from the pod");
        }
        self.release6(key, ep.host_ifindex, id6(&ep).as_ref(), &a, true)
            .await;
        if let Err(e) = self.commit(key, Some(ep)).await {
            warn!(attachment = %key, error = %e, "cannot persist the removal of the duplicate address");
        }
    }

    fn renewal6_key(key: &str) -> String {
        format!("{key}#ipv6")
    }

    /// Starts (or restarts) the DHCPv6 renewals of `key`'s lease.
    pub(super) fn spawn_renewal6(self: &Arc<Self>, key: String) {
        let agent = Arc::clone(self);
        let k = key.clone();
        let handle = tokio::spawn(async move { agent.renew6_loop(k).await });
        if let Some(old) = self
            .renewals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Self::renewal6_key(&key), handle)
        {
            old.abort();
        }
    }

    /// Stops them.
    pub(super) fn stop_renewal6(&self, key: &str) {
        if let Some(h) = self
            .renewals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Self::renewal6_key(key))
        {
            h.abort();
        }
    }

    /// Renew at T1, Rebind at T2, each new lease persisted; from the state
    /// file's lease after a restart (no new Solicit). A lease that runs out
    /// or is refused takes the address away from the pod (IPv4 goes on).
    async fn renew6_loop(self: Arc<Self>, key: String) {
        let Some((ep, lease)) = self.state().endpoints.get(&key).and_then(|ep| {
            let l = ep.ipv6.as_ref()?.lease.clone()?;
            Some((ep.clone(), l))
        }) else {
            return;
        };
        let Some(id) = id6(&ep) else {
            warn!(attachment = %key, "no DHCPv6 identity: the lease is not renewed");
            return;
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let agent = Arc::clone(&self);
        let k = key.clone();
        // Persists each renewed lease while the exchange goes on.
        let persist = tokio::spawn(async move {
            while let Some(l) = rx.recv().await {
                agent.store_lease6(&k, l).await;
            }
        });
        let res = self
            .lan6
            .maintain(&id, lease, self.shutdown.child_token(), move |l| {
                let _ = tx.send(l.clone());
            })
            .await;
        let _ = persist.await;
        match res {
            Ok(_) => {}
            Err(e @ (Dhcp6Error::Timeout { .. } | Dhcp6Error::Status { .. })) => {
                warn!(attachment = %key, error = %e, "DHCPv6 lease lost: address removed from the pod");
                let addr = self
                    .state()
                    .endpoints
                    .get(&key)
                    .and_then(|ep| ep.ipv6.as_ref().map(|a| a.address));
                if let Some(addr) = addr {
                    self.drop_lost6(&key, addr).await;
                }
            }
            Err(e) => warn!(attachment = %key, error = %e, "DHCPv6 renewals stopped"),
        }
    }

    async fn store_lease6(&self, key: &str, l: crate::ipv6::dhcp6::Lease6) {
        let _guard = self.lock_key(key).await;
        let Some(mut ep) = self.state().endpoints.get(key).cloned() else {
            return;
        };
        let Some(a) = ep.ipv6.as_mut().filter(|a| a.address == l.address) else {
            return;
        };
        info!(attachment = %key, address = %l.address, valid_secs = l.valid, renew_in_secs = l.t1, "DHCPv6 lease renewed");
        a.lease = Some(l);
        if let Err(e) = self.commit(key, Some(ep)).await {
            warn!(attachment = %key, error = %e, "cannot persist the renewed DHCPv6 lease");
        }
    }

    async fn drop_lost6(&self, key: &str, addr: Ipv6Addr) {
        let _guard = self.lock_key(key).await;
        let Some(mut ep) = self.state().endpoints.get(key).cloned() else {
            return;
        };
        let Some(a) = ep.ipv6.take().filter(|a| a.address == addr) else {
            return;
        };
        if let Err(e) = self
            .lan6
            .remove_pod_address6(Path::new(&ep.netns), &ep.ifname, a.address, a.prefix_len)
            .await
        {
            warn!(attachment = %key, error = %e, "cannot remove the lost IPv6 address from the pod");
        }
        if let Err(e) = self.lan6.del_host_route6(a.address, ep.host_ifindex).await {
            warn!(attachment = %key, error = %e, "cannot remove the node's IPv6 route to the pod");
        }
        if let Err(e) = self.commit(key, Some(ep)).await {
            warn!(attachment = %key, error = %e, "cannot persist the loss of the DHCPv6 lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(source: Source, prefix_len: u8, address: &str) -> Assignment {
        Assignment {
            address: address.parse().unwrap(),
            prefix_len,
            source,
            router: Some("fe80::1".parse().unwrap()),
            on_link: vec![("2001:2:0:1::".parse().unwrap(), 64)],
            dns: Vec::new(),
            lease: None,
        }
    }

    #[test]
    fn primary_has_the_default_route_secondary_only_on_link() {
        let d = a(Source::Dhcpv6, 128, "2001:2:0:1::1a0");
        let p = routes6(Mode::Primary, &d);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].dst, p[0].prefix, p[0].gw),
            ("2001:2:0:1::".parse().unwrap(), 64, None)
        );
        assert_eq!(p[0].src, Some(d.address));
        assert_eq!(
            (p[1].prefix, p[1].gw),
            (0, Some("fe80::1".parse().unwrap()))
        );
        let s = routes6(Mode::Secondary, &d);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].prefix, s[0].src), (64, Some(d.address)));
        // SLAAC too: the address comes without its prefix route, which is
        // written with the address as source.
        let sl = a(Source::Slaac, 64, "2001:2:0:1::5");
        assert_eq!(routes6(Mode::Secondary, &sl).len(), 1);
        assert_eq!(routes6(Mode::Primary, &sl).len(), 2);
    }
}
