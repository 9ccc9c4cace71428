//! The uplink's addresses and operational state, kept up to date by one task
//! from rtnetlink notifications (`RTNLGRP_IPV4_IFADDR`, `RTNLGRP_LINK`)
//! instead of a dump on every ADD and DEL. When the addresses change, the
//! host-routes map (the uplink's own /32s) and the netfilter rules (per
//! subnet) follow; the state decides whether the agent reports ready.

use std::{net::Ipv4Addr, sync::Arc};

use futures::{Stream, StreamExt as _};
use rtnetlink::packet_route::RouteNetlinkMessage;
use tracing::{info, warn};

use super::{Agent, Kernel, Links as _};
use crate::netlink;

/// What the agent knows of its uplink.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UplinkView {
    /// Its IPv4 addresses with their prefix lengths, in the kernel's order.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// Whether its operational state lets it carry traffic.
    pub oper_up: bool,
}

/// What one notification changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// The address list.
    pub addresses: bool,
    /// The operational state.
    pub oper: bool,
}

impl UplinkView {
    /// Applies one rtnetlink notification about link `index` (others are
    /// ignored) and says what changed.
    pub fn apply(&mut self, index: u32, msg: &RouteNetlinkMessage) -> Changed {
        let mut changed = Changed::default();
        match msg {
            RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                if let Some(addr) = netlink::ipv4_of(a)
                    && !self.addresses.contains(&addr)
                {
                    self.addresses.push(addr);
                    changed.addresses = true;
                }
            }
            RouteNetlinkMessage::DelAddress(a) if a.header.index == index => {
                if let Some(addr) = netlink::ipv4_of(a) {
                    let before = self.addresses.len();
                    self.addresses.retain(|x| *x != addr);
                    changed.addresses = self.addresses.len() != before;
                }
            }
            RouteNetlinkMessage::NewLink(l) if l.header.index == index => {
                let up = netlink::oper_up(l);
                changed.oper = up != self.oper_up;
                self.oper_up = up;
            }
            RouteNetlinkMessage::DelLink(l) if l.header.index == index => {
                changed.oper = self.oper_up;
                self.oper_up = false;
            }
            _ => {}
        }
        changed
    }
}

impl<K: Kernel> Agent<K> {
    /// Owns the uplink cache: applies each notification and, when the
    /// addresses changed, rewrites the host-routes map and the netfilter
    /// rules. Ends with `events` or at shutdown.
    pub(super) async fn watch_uplink(
        self: Arc<Self>,
        mut events: impl Stream<Item = RouteNetlinkMessage> + Unpin,
    ) {
        loop {
            let msg = tokio::select! {
                m = events.next() => m,
                _ = self.shutdown.cancelled() => return,
            };
            let Some(msg) = msg else {
                warn!("uplink notifications ended; the uplink cache is no longer updated");
                return;
            };
            if let RouteNetlinkMessage::NewLink(l) = &msg
                && l.header.index != self.uplink.index
            {
                self.host_link_changed(netlink::link_info(l));
            }
            if let RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) = &msg
                && a.header.index == self.uplink.index
                && a.header.family == rtnetlink::packet_route::AddressFamily::Inet6
            {
                // Added, gone, or out of duplicate address detection.
                self.sync_host_addrs6().await;
            }
            let (changed, view) = {
                let mut view = self.uplink_view();
                (view.apply(self.uplink.index, &msg), view.clone())
            };
            if changed.oper {
                info!(uplink = %self.cfg.uplink, up = view.oper_up, "uplink state changed");
            }
            if changed.addresses {
                info!(uplink = %self.cfg.uplink, addresses = ?view.addresses, "uplink addresses changed");
                if let Err(e) = self.sync_host_routes().await {
                    warn!(error = %e, "cannot rewrite the host-routes map");
                }
            }
        }
    }
}

impl<K: Kernel> Agent<K> {
    /// Writes the node's usable global IPv6 addresses on the uplink into
    /// the neighbour responder's map (`HOST_ADDRS6`): pods reach the node
    /// at them through their host veth. Failures are logged; the map keeps
    /// what it had.
    pub(super) async fn sync_host_addrs6(&self) {
        use super::{Lan6 as _, Maps as _};
        match self.lan6.node_addresses6().await {
            Ok(addrs) => match self.maps.set_host_addrs6(&addrs) {
                Ok(()) => tracing::debug!(addresses = ?addrs, "node IPv6 addresses written"),
                Err(e) => warn!(error = %e, "cannot write the node's IPv6 addresses"),
            },
            Err(e) => warn!(error = %e, "cannot read the node's IPv6 addresses"),
        }
    }

    /// A link changed: when it is a host veth whose MAC is no longer the one
    /// the agent set (udev's `MACAddressPolicy=persistent` on hosts whose
    /// rules match veths, an administrator), put the recorded MAC back at
    /// once, since the pod's neighbour cache holds it for its gateway. In a
    /// task, under the attachment's lock: a slow ADD may hold it, and the
    /// watch must not wait.
    fn host_link_changed(self: &Arc<Self>, found: netlink::LinkInfo) {
        let ep = self
            .state()
            .endpoints
            .values()
            .find(|e| e.host_ifindex == found.index)
            .cloned();
        let Some(ep) = ep else { return };
        if found.mac == ep.host_mac || found.mac == [0; 6] {
            return;
        }
        let agent = Arc::clone(self);
        tokio::spawn(async move {
            let key = ep.key();
            let _guard = agent.lock_key(&key).await;
            // Read again under the lock: DEL may have removed it, CHECK may
            // have restored it.
            let Some(ep) = agent.state().endpoints.get(&key).cloned() else {
                return;
            };
            match agent.links.find_link(&ep.host_veth).await {
                Ok(Some(l)) if l.index == ep.host_ifindex => {
                    if let Err(e) = agent.restore_host_mac(&ep, &l).await {
                        warn!(attachment = %key, error = %e, "cannot restore the host veth's MAC");
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(attachment = %key, error = %e, "cannot look up the host veth"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::{
        address::{AddressAttribute, AddressMessage},
        link::{LinkAttribute, LinkMessage, State},
    };

    use super::*;

    fn address(index: u32, ip: [u8; 4], len: u8) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.index = index;
        m.header.prefix_len = len;
        m.attributes
            .push(AddressAttribute::Address(Ipv4Addr::from(ip).into()));
        m
    }

    fn link(index: u32, state: State) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::OperState(state));
        m
    }

    #[test]
    fn addresses_of_the_uplink_are_tracked() {
        let mut v = UplinkView::default();
        let add = |ip, len| RouteNetlinkMessage::NewAddress(address(3, ip, len));
        assert!(v.apply(3, &add([198, 18, 0, 10], 22)).addresses);
        // A repeated notification (address flags changed) changes nothing.
        assert!(!v.apply(3, &add([198, 18, 0, 10], 22)).addresses);
        assert!(v.apply(3, &add([198, 19, 0, 1], 24)).addresses);
        // Another interface's addresses are not the uplink's.
        let other = RouteNetlinkMessage::NewAddress(address(4, [198, 18, 9, 9], 24));
        assert_eq!(v.apply(3, &other), Changed::default());
        assert_eq!(
            v.addresses,
            vec![
                (Ipv4Addr::new(198, 18, 0, 10), 22),
                (Ipv4Addr::new(198, 19, 0, 1), 24)
            ]
        );
        let del = RouteNetlinkMessage::DelAddress(address(3, [198, 18, 0, 10], 22));
        assert!(v.apply(3, &del).addresses);
        assert!(!v.apply(3, &del).addresses);
        assert_eq!(v.addresses, vec![(Ipv4Addr::new(198, 19, 0, 1), 24)]);
    }

    #[test]
    fn operational_state_of_the_uplink_is_tracked() {
        let mut v = UplinkView::default();
        assert!(
            v.apply(3, &RouteNetlinkMessage::NewLink(link(3, State::Up)))
                .oper
        );
        assert!(v.oper_up);
        assert!(
            !v.apply(3, &RouteNetlinkMessage::NewLink(link(4, State::Down)))
                .oper
        );
        assert!(v.oper_up);
        assert!(
            v.apply(
                3,
                &RouteNetlinkMessage::NewLink(link(3, State::LowerLayerDown))
            )
            .oper
        );
        assert!(!v.oper_up);
        // Drivers without carrier reporting say "unknown": usable.
        v.apply(3, &RouteNetlinkMessage::NewLink(link(3, State::Unknown)));
        assert!(v.oper_up);
        v.apply(3, &RouteNetlinkMessage::DelLink(link(3, State::Up)));
        assert!(!v.oper_up);
    }
}
