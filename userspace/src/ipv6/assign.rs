//! What IPv6 a pod gets: the choice between SLAAC, DHCPv6 and nothing
//! from the netconf's `ipv6` and the LAN's router advertisements
//! ([`plan`]), the SLAAC address ([`slaac_address`]), and what the agent
//! assigned ([`Assignment`], persisted with the endpoint).
//!
//! Pure: the view and the time are passed in.

use std::{net::Ipv6Addr, time::Instant};

use lanlink_api::{Ipv6Iid, Ipv6Mode};
use sha2::{Digest as _, Sha256};

use super::{dhcp6::Lease6, ra::RaView};

/// Where an assigned address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Made by the agent in an autonomous prefix.
    Slaac,
    /// Leased with DHCPv6 (IA_NA).
    Dhcpv6,
}

impl Source {
    /// `slaac` / `dhcpv6`, as logs and the API show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slaac => "slaac",
            Self::Dhcpv6 => "dhcpv6",
        }
    }
}

/// The IPv6 configuration the agent gave a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The pod's address.
    pub address: Ipv6Addr,
    /// Its prefix length: the prefix's (64) for SLAAC, 128 for DHCPv6
    /// (IA_NA addresses carry no prefix; the RA's on-link prefixes do).
    pub prefix_len: u8,
    /// SLAAC or DHCPv6.
    pub source: Source,
    /// The default router's link-local address, if a router advertised
    /// itself as one (primary mode's default route).
    pub router: Option<Ipv6Addr>,
    /// The RA's on-link prefixes (L flag), routed on the pod's link.
    pub on_link: Vec<(Ipv6Addr, u8)>,
    /// DNS servers: DHCPv6 option 23, or the RA's RDNSS.
    pub dns: Vec<Ipv6Addr>,
    /// The DHCPv6 lease, for `Source::Dhcpv6`.
    pub lease: Option<Lease6>,
}

/// What to do for a pod, decided at ADD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// No IPv6 from the agent (`off`, or `auto` on a LAN without a router
    /// that asks for an address method).
    None,
    /// This SLAAC address, in this prefix.
    Slaac {
        /// The address.
        address: Ipv6Addr,
        /// The prefix length (64).
        prefix_len: u8,
    },
    /// A DHCPv6 lease.
    Dhcpv6,
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `ipv6: slaac` on a LAN with no live autonomous /64.
    #[error(
        "ipv6 is \"slaac\" but no router advertisement with an autonomous /64 prefix was heard on the uplink; use \"auto\" to fall back to IPv4 only"
    )]
    NoAutonomousPrefix,
}

/// The plan for a pod with the netconf's `mode` and `iid`, the LAN's
/// `view` at `now`, and the pod's MAC and identity (its DHCPv4 client
/// identifier: the RFC 7217 key).
///
/// `auto` follows the routers: DHCPv6 when one sets M, else SLAAC in the
/// first autonomous /64, else nothing (a LAN without IPv6 routers is not
/// an error). `dhcpv6` asks a server even without RAs (the address is
/// then reachable on-link only if a prefix says so).
pub fn plan(
    mode: Ipv6Mode,
    iid: Ipv6Iid,
    view: &RaView,
    now: Instant,
    mac: [u8; 6],
    identity: &[u8],
) -> Result<Plan, PlanError> {
    let slaac = |p: &super::ra::Prefix| Plan::Slaac {
        address: slaac_address(p.prefix, iid, mac, identity, 0),
        prefix_len: p.len,
    };
    Ok(match mode {
        Ipv6Mode::Off => Plan::None,
        Ipv6Mode::Dhcpv6 => Plan::Dhcpv6,
        Ipv6Mode::Slaac => slaac(
            view.slaac_prefix(now)
                .ok_or(PlanError::NoAutonomousPrefix)?,
        ),
        Ipv6Mode::Auto => {
            if view.managed() {
                Plan::Dhcpv6
            } else if let Some(p) = view.slaac_prefix(now) {
                slaac(p)
            } else {
                Plan::None
            }
        }
    })
}

/// The first live default router (primary mode's default route).
pub fn default_router(view: &RaView) -> Option<Ipv6Addr> {
    view.routers().next().map(|r| r.address)
}

/// The live on-link prefixes.
pub fn on_link_prefixes(view: &RaView) -> Vec<(Ipv6Addr, u8)> {
    view.prefixes()
        .filter(|p| p.on_link)
        .map(|p| (p.prefix, p.len))
        .collect()
}

/// The SLAAC address in the /64 `prefix` for a pod: the modified EUI-64
/// interface identifier of `mac` (RFC 4291 appendix A), or the RFC 7217
/// stable-private one, `F(prefix, identity, dad_counter)` with SHA-256.
///
/// RFC 7217's `Net_Iface` and `secret_key` are both the pod's identity
/// (its DHCPv4 client identifier, derived from namespace/pod/interface for
/// a stable identity): the address is stable per pod and prefix on any
/// node, and unrelated to the MAC. `dad_counter` picks another address
/// after a conflict.
pub fn slaac_address(
    prefix: Ipv6Addr,
    iid: Ipv6Iid,
    mac: [u8; 6],
    identity: &[u8],
    dad_counter: u8,
) -> Ipv6Addr {
    let mut b = prefix.octets();
    match iid {
        Ipv6Iid::Eui64 => {
            b[8..].copy_from_slice(&super::link_local_from_mac(mac).octets()[8..]);
        }
        Ipv6Iid::StablePrivacy => {
            let mut h = Sha256::new();
            h.update(b"lanlink rfc7217 v1");
            h.update(&b[..8]);
            h.update((identity.len() as u64).to_be_bytes());
            h.update(identity);
            h.update([dad_counter]);
            let d: [u8; 32] = h.finalize().into();
            b[8..].copy_from_slice(&d[..8]);
            // RFC 7136: the u/g bits mean nothing here; but the all-zero
            // (subnet-router anycast) and reserved (RFC 5453) identifiers
            // must not come out.
            if b[8..] == [0; 8] {
                b[15] = 1;
            }
            if b[8..15] == [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff] && b[15] >= 0x80 {
                b[8] = 0xfc;
            }
        }
    }
    Ipv6Addr::from(b)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ipv6::ra::{PrefixInfo, RouterAdvert};

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    const PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0);

    fn ra(managed: bool, autonomous: bool) -> RouterAdvert {
        RouterAdvert {
            source: "fe80::1".parse().unwrap(),
            cur_hop_limit: 64,
            managed,
            other: managed,
            router_lifetime: 1800,
            reachable_time_ms: 0,
            retrans_timer_ms: 0,
            source_mac: None,
            mtu: None,
            prefixes: vec![PrefixInfo {
                prefix: PREFIX,
                len: 64,
                on_link: true,
                autonomous,
                valid_lifetime: 3600,
                preferred_lifetime: 1800,
            }],
            rdnss: Vec::new(),
        }
    }

    fn view(ra: &RouterAdvert, now: Instant) -> RaView {
        let mut v = RaView::new();
        v.apply(ra, now);
        v
    }

    #[test]
    fn auto_follows_the_routers() {
        let now = Instant::now();
        let id = b"client-id";
        let p = |mode, v: &RaView| plan(mode, Ipv6Iid::Eui64, v, now, MAC, id).unwrap();
        let slaac = view(&ra(false, true), now);
        assert_eq!(
            p(Ipv6Mode::Auto, &slaac),
            Plan::Slaac {
                address: "2001:2:0:1:11:22ff:fe33:4455".parse().unwrap(),
                prefix_len: 64
            }
        );
        assert_eq!(p(Ipv6Mode::Auto, &view(&ra(true, true), now)), Plan::Dhcpv6);
        // An on-link prefix that is not autonomous, no M: nothing to do.
        assert_eq!(p(Ipv6Mode::Auto, &view(&ra(false, false), now)), Plan::None);
        assert_eq!(p(Ipv6Mode::Auto, &RaView::new()), Plan::None);
        assert_eq!(p(Ipv6Mode::Off, &slaac), Plan::None);
        assert_eq!(p(Ipv6Mode::Dhcpv6, &RaView::new()), Plan::Dhcpv6);
        assert_eq!(
            plan(
                Ipv6Mode::Slaac,
                Ipv6Iid::Eui64,
                &RaView::new(),
                now,
                MAC,
                id
            ),
            Err(PlanError::NoAutonomousPrefix)
        );
        // A prefix whose preferred lifetime ran out is not used for new addresses.
        assert_eq!(
            plan(
                Ipv6Mode::Auto,
                Ipv6Iid::Eui64,
                &slaac,
                now + Duration::from_secs(1801),
                MAC,
                id
            ),
            Ok(Plan::None)
        );
        assert_eq!(default_router(&slaac), Some("fe80::1".parse().unwrap()));
        assert_eq!(on_link_prefixes(&slaac), vec![(PREFIX, 64)]);
    }

    #[test]
    fn stable_privacy_depends_on_prefix_identity_and_counter_not_mac() {
        let a = slaac_address(PREFIX, Ipv6Iid::StablePrivacy, MAC, b"pod-a", 0);
        assert_eq!(a.segments()[..4], PREFIX.segments()[..4]);
        assert_eq!(
            a,
            slaac_address(
                PREFIX,
                Ipv6Iid::StablePrivacy,
                [2, 0, 0, 0, 0, 9],
                b"pod-a",
                0
            )
        );
        assert_ne!(
            a,
            slaac_address(PREFIX, Ipv6Iid::StablePrivacy, MAC, b"pod-b", 0)
        );
        assert_ne!(
            a,
            slaac_address(PREFIX, Ipv6Iid::StablePrivacy, MAC, b"pod-a", 1)
        );
        let other: Ipv6Addr = "2001:2:0:2::".parse().unwrap();
        let b = slaac_address(other, Ipv6Iid::StablePrivacy, MAC, b"pod-a", 0);
        assert_ne!(a.segments()[4..], b.segments()[4..]);
        // EUI-64 is the link-local's identifier.
        assert_eq!(
            slaac_address(PREFIX, Ipv6Iid::Eui64, MAC, b"pod-a", 0).segments()[4..],
            crate::ipv6::link_local_from_mac(MAC).segments()[4..]
        );
    }
}
