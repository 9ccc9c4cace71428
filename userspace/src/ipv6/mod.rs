//! IPv6 on the LAN (issue 16): learning the LAN's
//! configuration from router advertisements ([`ra`]) and a DHCPv6 (IA_NA)
//! client that speaks on a pod's behalf from the pod's MAC and link-local
//! address on the uplink ([`dhcp6`]).
//!
//! What a pod gets is decided and recorded in [`assign`]; the agent's
//! ADD, DEL, renewal and restart use it (`crate::agent::v6`).

pub mod assign;
pub mod dhcp6;
pub mod ra;

use std::net::Ipv6Addr;

/// The modified EUI-64 link-local address of `mac` (RFC 4291 appendix A):
/// `fe80::` + the MAC with `ff:fe` in the middle and the U/L bit flipped.
pub fn link_local_from_mac(mac: [u8; 6]) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[0] = 0xfe;
    b[1] = 0x80;
    b[8] = mac[0] ^ 0x02;
    b[9] = mac[1];
    b[10] = mac[2];
    b[11] = 0xff;
    b[12] = 0xfe;
    b[13] = mac[3];
    b[14] = mac[4];
    b[15] = mac[5];
    Ipv6Addr::from(b)
}

/// The solicited-node multicast address of `ip` (RFC 4291 2.7.1):
/// `ff02::1:ff` + its last 24 bits.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet multicast MAC of an IPv6 multicast address (RFC 2464 7):
/// `33:33` + its last 32 bits.
pub fn multicast_mac(ip: Ipv6Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// Whether `ip` is link-local unicast (fe80::/10).
pub fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eui64_link_local_flips_the_ul_bit() {
        // RFC 4291 appendix A's example shape, and a locally administered MAC.
        assert_eq!(
            link_local_from_mac([0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e]),
            "fe80::21b:21ff:fe3c:4d5e".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            link_local_from_mac([0x02, 0, 0, 0, 0, 1]),
            "fe80::ff:fe00:1".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn solicited_node_and_multicast_mac() {
        let ip: Ipv6Addr = "fe80::21b:21ff:fe3c:4d5e".parse().unwrap();
        let sn = solicited_node(ip);
        assert_eq!(sn, "ff02::1:ff3c:4d5e".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(sn), [0x33, 0x33, 0xff, 0x3c, 0x4d, 0x5e]);
        assert_eq!(
            multicast_mac("ff02::1:2".parse().unwrap()),
            [0x33, 0x33, 0, 1, 0, 2]
        );
        assert!(is_link_local(ip) && !is_link_local(sn));
    }
}
