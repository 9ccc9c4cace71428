//! Routes: those written in a pod for its mode, and the node's host routes
//! (the prefixes the eBPF ARP responder answers for, so pods reach the node's
//! stack), with the netfilter rules that follow the uplink's subnets.

use std::net::Ipv4Addr;

use lanlink_api::{AttachmentConfig, Ipv4Cidr, Mode};
use tracing::{info, warn};

use super::{Agent, AgentError, Kernel, Maps as _};
use crate::{dhcp::Lease, netlink::PodRoute};

/// The link-local gateway every pod routes host-bound traffic through.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// What feeds the host-routes map besides the state: the `hostRoutes` of
/// ADDs in flight (not committed yet), so that concurrent ADDs and DELs,
/// each rewriting the whole map, never drop one another's prefixes.
#[derive(Debug, Default)]
pub(super) struct HostRoutes {
    in_flight: Vec<Ipv4Cidr>,
}

/// The routes written in the pod for `mode` (DESIGN.md "Packet paths").
pub fn pod_routes(cfg: &AttachmentConfig, lease: &Lease) -> Vec<PodRoute> {
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
                routes.push(PodRoute {
                    dst: cidr.addr(),
                    prefix: cidr.prefix_len(),
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
    routes
}

/// The uplink subnet among `addresses` that `cidr` covers entirely, if any.
pub(super) fn covered_subnet(cidr: Ipv4Cidr, addresses: &[(Ipv4Addr, u8)]) -> Option<Ipv4Cidr> {
    addresses.iter().find_map(|&(ip, len)| {
        let subnet = Ipv4Cidr::containing(ip, len);
        (cidr.prefix_len() <= len && Ipv4Cidr::containing(ip, cidr.prefix_len()) == cidr)
            .then_some(subnet)
    })
}

/// The host-routes map's content: the uplink's addresses as /32s and the
/// `configured` prefixes, except those that cover an uplink subnet (the
/// responder would then answer for the LAN's own hosts, router included, and
/// pull every pod's LAN traffic into the node: such a prefix is routed, never
/// answered). Sorted, without duplicates.
pub(super) fn host_route_prefixes(
    addresses: &[(Ipv4Addr, u8)],
    configured: &[Ipv4Cidr],
) -> Vec<(Ipv4Addr, u8)> {
    let mut prefixes: Vec<(Ipv4Addr, u8)> = addresses.iter().map(|(ip, _)| (*ip, 32)).collect();
    for cidr in configured {
        if let Some(subnet) = covered_subnet(*cidr, addresses) {
            warn!(host_route = %cidr, subnet = %subnet, "hostRoutes entry covers the uplink's subnet; not answering ARP for it");
            continue;
        }
        prefixes.push((cidr.addr(), cidr.prefix_len()));
    }
    prefixes.sort();
    prefixes.dedup();
    prefixes
}

impl<K: Kernel> Agent<K> {
    /// Adds (`true`) or removes the `hostRoutes` of an ADD in flight.
    pub(super) fn host_routes_in_flight(&self, cidrs: &[Ipv4Cidr], add: bool) {
        let mut hr = self.host_routes.lock().unwrap_or_else(|p| p.into_inner());
        for c in cidrs {
            if add {
                hr.in_flight.push(*c);
            } else if let Some(i) = hr.in_flight.iter().position(|x| x == c) {
                hr.in_flight.swap_remove(i);
            }
        }
    }

    /// Rewrites the host-routes map from the uplink's addresses (/32s, from
    /// the uplink cache), `--host-route`, and the `hostRoutes` of every
    /// attachment and of the ADDs in flight. The ARP responder answers for
    /// these prefixes with the host veth's MAC, so a pod reaches its own
    /// node's addresses through the node's stack: on L2 they would hairpin
    /// out of the uplink, which no switch port sends back.
    ///
    /// Also re-installs the netfilter rules if the uplink's subnets changed
    /// since they were installed (the masquerade is per subnet).
    pub(super) async fn sync_host_routes(&self) -> Result<(), AgentError> {
        let addresses = self.uplink_view().addresses.clone();
        {
            // Held across computing and writing, so the last writer always
            // wrote a complete set.
            let hr = self.host_routes.lock().unwrap_or_else(|p| p.into_inner());
            let configured: Vec<Ipv4Cidr> = self
                .state()
                .endpoints
                .values()
                .flat_map(|e| e.config.host_routes.iter().copied())
                .chain(self.cfg.host_routes.iter().copied())
                .chain(hr.in_flight.iter().copied())
                .collect();
            self.maps
                .set_host_routes(&host_route_prefixes(&addresses, &configured))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn host_routes_that_cover_the_lan_are_found() {
        let uplink = [(Ipv4Addr::new(198, 18, 0, 10), 22)];
        let lan = Some(cidr("198.18.0.0/22"));
        assert_eq!(covered_subnet(cidr("0.0.0.0/0"), &uplink), lan);
        assert_eq!(covered_subnet(cidr("198.18.0.0/16"), &uplink), lan);
        assert_eq!(covered_subnet(cidr("198.18.0.0/22"), &uplink), lan);
        // Inside the LAN (a node address) or elsewhere: answered as before.
        assert_eq!(covered_subnet(cidr("198.18.0.2/32"), &uplink), None);
        assert_eq!(covered_subnet(cidr("198.18.0.0/24"), &uplink), None);
        assert_eq!(covered_subnet(cidr("198.19.0.0/16"), &uplink), None);
        assert_eq!(covered_subnet(cidr("0.0.0.0/0"), &[]), None);
    }

    #[test]
    fn host_routes_hold_the_uplink_addresses_and_the_configured_prefixes() {
        let uplink = [
            (Ipv4Addr::new(198, 18, 0, 10), 22),
            (Ipv4Addr::new(198, 19, 7, 1), 24),
        ];
        let configured = [
            cidr("10.96.0.0/12"),
            cidr("10.96.0.0/12"),
            cidr("198.18.0.0/16"),
        ];
        assert_eq!(
            host_route_prefixes(&uplink, &configured),
            vec![
                (Ipv4Addr::new(10, 96, 0, 0), 12),
                (Ipv4Addr::new(198, 18, 0, 10), 32),
                (Ipv4Addr::new(198, 19, 7, 1), 32),
            ]
        );
    }
}
