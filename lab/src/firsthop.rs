//! First-hop security (issue 12): the frames a compromised pod forges
//! against the LAN, built byte for byte with their checksums, for the
//! `lab-craft` tool; and what the scenarios watch them with: the node's
//! port on the LAN bridge, an exact frame counter on it, and the drop
//! counters the agent keeps for each endpoint.
//!
//! The attacks: a rogue DHCP server (OFFER), DHCP starvation (DISCOVER and
//! REQUEST with made-up client hardware addresses), a RELEASE of another
//! client's lease, a rogue IPv6 router advertisement, IPv6 from a forged
//! source, a neighbour advertisement for an address the pod does not own,
//! hoarding IPv6 addresses through duplicate address detection, an STP
//! BPDU, and a broadcast storm.
//!
//! Every address is the lab's: IPv4 in 198.18.0.0/15, IPv6 in 2001:2::/48
//! (RFC 5180's benchmarking range), link-local fe80::/64, or link-scoped
//! multicast ff02::/16, which never leaves the link ([`check_lab_addr6`]).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::agent::Agent;
use crate::cmd;
use crate::lan::Lan;
use crate::names;
use crate::netns::NetNs;
use crate::node::Node;
use crate::traffic::udp_frame;
use crate::wait::wait_until;

/// The Ethernet broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// Where STP BPDUs go: the first of the IEEE 802.1D reserved group
/// addresses (01:80:c2:00:00:00–0f), which a bridge never forwards as data.
pub const STP_MAC: [u8; 6] = [0x01, 0x80, 0xc2, 0, 0, 0];

/// All nodes on the link.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The UDP port of DHCP servers; clients use [`DHCP_CLIENT_PORT`].
pub const DHCP_SERVER_PORT: u16 = 67;
/// The UDP port of DHCP clients.
pub const DHCP_CLIENT_PORT: u16 = 68;
/// The UDP port of DHCPv6 servers and relays (RFC 8415).
pub const DHCP6_SERVER_PORT: u16 = 547;
/// The UDP port of DHCPv6 clients.
pub const DHCP6_CLIENT_PORT: u16 = 546;

/// The destination port of [`storm_frame`]s (discard, RFC 863): nothing
/// answers, on the LAN or in a pod.
pub const STORM_PORT: u16 = 9;

/// What every [`storm_frame`] carries first, so captures can tell them from
/// anything else sent to the broadcast address.
pub const STORM_MARKER: &[u8] = b"lanlink-lab storm ";

/// DHCP message types (option 53, RFC 2132 section 9.6).
pub mod dhcp_type {
    /// DHCPDISCOVER.
    pub const DISCOVER: u8 = 1;
    /// DHCPOFFER.
    pub const OFFER: u8 = 2;
    /// DHCPREQUEST.
    pub const REQUEST: u8 = 3;
    /// DHCPRELEASE.
    pub const RELEASE: u8 = 7;
}

/// ICMPv6 types (RFC 4443, RFC 4861).
pub mod icmp6_type {
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbour solicitation.
    pub const NEIGHBOUR_SOLICIT: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOUR_ADVERT: u8 = 136;
}

/// IPv6 next-header values.
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// Offsets in a BOOTP message (RFC 2131 figure 1).
const BOOTP_CHADDR: usize = 28;
const BOOTP_MAGIC: usize = 236;
/// BOOTP's smallest message (RFC 1542 section 2.1); dnsmasq accepts shorter
/// ones, real clients pad to this.
const BOOTP_MIN_LEN: usize = 300;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Refuses an IPv6 address the lab may not use: anything outside
/// 2001:2::/48, fe80::/64, link-scoped multicast ff02::/16 and `::` (the
/// source of duplicate address detection).
pub fn check_lab_addr6(ip: Ipv6Addr) -> Result<()> {
    let s = ip.segments();
    let ok = ip.is_unspecified()
        || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0)
        || (s[0] == 0xfe80 && s[1..4] == [0, 0, 0])
        || s[0] == 0xff02;
    if ok {
        Ok(())
    } else {
        bail!(
            "{ip} is outside 2001:2::/48, fe80::/64 and ff02::/16, the only IPv6 ranges the lab may use"
        )
    }
}

/// The EUI-64 link-local address the kernel derives from `mac` (RFC 4291
/// appendix A; `addr_gen_mode` 0, the default): fe80:: with the MAC split by
/// ff:fe and its universal/local bit flipped.
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[0] = 0xfe;
    b[1] = 0x80;
    b[8..11].copy_from_slice(&[mac[0] ^ 0x02, mac[1], mac[2]]);
    b[11..13].copy_from_slice(&[0xff, 0xfe]);
    b[13..16].copy_from_slice(&mac[3..6]);
    Ipv6Addr::from(b)
}

/// The solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    let mut b = [0u8; 16];
    b[..2].copy_from_slice(&[0xff, 0x02]);
    b[11..13].copy_from_slice(&[0x01, 0xff]);
    b[13..].copy_from_slice(&o[13..]);
    Ipv6Addr::from(b)
}

/// The Ethernet address of an IPv6 multicast group (33:33 and its last four
/// bytes, RFC 2464 section 7).
pub fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The Internet checksum (RFC 1071) of `data`, an odd last byte padded
/// with zero.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A DHCP message (BOOTP with the magic cookie and options).
#[derive(Clone, Debug)]
pub struct Bootp {
    /// 1: BOOTREQUEST (client), 2: BOOTREPLY (server).
    pub op: u8,
    /// Transaction id.
    pub xid: u32,
    /// Flags; 0x8000 asks the server to broadcast its answer.
    pub flags: u16,
    /// The client's address, when it has one (RELEASE, renewals).
    pub ciaddr: Ipv4Addr,
    /// The address offered or acknowledged (server messages).
    pub yiaddr: Ipv4Addr,
    /// The client hardware address.
    pub chaddr: [u8; 6],
    /// Options as (code, value), option 53 first by convention; END is
    /// appended.
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Bootp {
    /// The message bytes (UDP payload), padded to 300 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = vec![0u8; BOOTP_MAGIC];
        m[..4].copy_from_slice(&[self.op, 1, 6, 0]);
        m[4..8].copy_from_slice(&self.xid.to_be_bytes());
        m[10..12].copy_from_slice(&self.flags.to_be_bytes());
        m[12..16].copy_from_slice(&self.ciaddr.octets());
        m[16..20].copy_from_slice(&self.yiaddr.octets());
        m[BOOTP_CHADDR..BOOTP_CHADDR + 6].copy_from_slice(&self.chaddr);
        m.extend_from_slice(&MAGIC_COOKIE);
        for (code, value) in &self.options {
            m.push(*code);
            m.push(value.len() as u8);
            m.extend_from_slice(value);
        }
        m.push(255);
        if m.len() < BOOTP_MIN_LEN {
            m.resize(BOOTP_MIN_LEN, 0);
        }
        m
    }
}

/// Option 61 for a hardware client identifier (type 1, Ethernet).
fn client_id_option(mac: [u8; 6]) -> (u8, Vec<u8>) {
    (61, [&[1u8][..], &mac].concat())
}

/// A rogue server's DHCPOFFER: from `src_ip` (the pod's own address) port
/// 67 to 255.255.255.255 port 68, offering `yiaddr` to `chaddr` with itself
/// as server, router and DNS server.
pub fn dhcp_offer(
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    chaddr: [u8; 6],
    yiaddr: Ipv4Addr,
    xid: u32,
) -> Vec<u8> {
    let m = Bootp {
        op: 2,
        xid,
        flags: 0x8000,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr,
        chaddr,
        options: vec![
            (53, vec![dhcp_type::OFFER]),
            (54, src_ip.octets().to_vec()),
            (51, 3600u32.to_be_bytes().to_vec()),
            (1, vec![255, 255, 255, 0]),
            (3, src_ip.octets().to_vec()),
            (6, src_ip.octets().to_vec()),
        ],
    };
    udp_frame(
        src_mac,
        BROADCAST,
        src_ip,
        Ipv4Addr::BROADCAST,
        DHCP_SERVER_PORT,
        DHCP_CLIENT_PORT,
        &m.encode(),
    )
}

/// A DHCPDISCOVER from 0.0.0.0 to broadcast for `chaddr` (with a hardware
/// client identifier when `client_id` is given).
pub fn dhcp_discover(
    src_mac: [u8; 6],
    chaddr: [u8; 6],
    client_id: Option<[u8; 6]>,
    xid: u32,
) -> Vec<u8> {
    let mut options = vec![(53, vec![dhcp_type::DISCOVER]), (55, vec![1, 3, 6, 51])];
    options.extend(client_id.map(client_id_option));
    client_broadcast(src_mac, chaddr, options, xid)
}

/// A DHCPREQUEST from 0.0.0.0 to broadcast for `chaddr`, asking for
/// `requested` (option 50): SELECTING when `server` is given (option 54),
/// INIT-REBOOT otherwise, which an authoritative server such as the lab's
/// dnsmasq acknowledges for any free address without an OFFER first.
pub fn dhcp_request(
    src_mac: [u8; 6],
    chaddr: [u8; 6],
    requested: Ipv4Addr,
    server: Option<Ipv4Addr>,
    client_id: Option<[u8; 6]>,
    xid: u32,
) -> Vec<u8> {
    let mut options = vec![
        (53, vec![dhcp_type::REQUEST]),
        (50, requested.octets().to_vec()),
    ];
    options.extend(server.map(|s| (54, s.octets().to_vec())));
    options.extend(client_id.map(client_id_option));
    options.push((55, vec![1, 3, 6, 51]));
    client_broadcast(src_mac, chaddr, options, xid)
}

fn client_broadcast(
    src_mac: [u8; 6],
    chaddr: [u8; 6],
    options: Vec<(u8, Vec<u8>)>,
    xid: u32,
) -> Vec<u8> {
    let m = Bootp {
        op: 1,
        xid,
        flags: 0x8000,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        chaddr,
        options,
    };
    udp_frame(
        src_mac,
        BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        DHCP_CLIENT_PORT,
        DHCP_SERVER_PORT,
        &m.encode(),
    )
}

/// A DHCPRELEASE of `ciaddr` for `chaddr`, unicast from `ciaddr` to
/// `server` (to `dst_mac`, the server's MAC), naming the server in option
/// 54 as RFC 2131 requires (dnsmasq ignores a RELEASE without it).
pub fn dhcp_release(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    ciaddr: Ipv4Addr,
    server: Ipv4Addr,
    chaddr: [u8; 6],
    client_id: Option<[u8; 6]>,
    xid: u32,
) -> Vec<u8> {
    let mut options = vec![
        (53, vec![dhcp_type::RELEASE]),
        (54, server.octets().to_vec()),
    ];
    options.extend(client_id.map(client_id_option));
    let m = Bootp {
        op: 1,
        xid,
        flags: 0,
        ciaddr,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        chaddr,
        options,
    };
    udp_frame(
        src_mac,
        dst_mac,
        ciaddr,
        server,
        DHCP_CLIENT_PORT,
        DHCP_SERVER_PORT,
        &m.encode(),
    )
}

/// An Ethernet + IPv6 frame carrying `l4` (ICMPv6 or UDP, whose checksum
/// over the pseudo-header is filled in here; RFC 8200 section 8.1).
pub fn ipv6_frame(
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    (src, dst): (Ipv6Addr, Ipv6Addr),
    next_header: u8,
    hop_limit: u8,
    mut l4: Vec<u8>,
) -> Vec<u8> {
    let len = l4.len() as u16;
    if next_header == IPPROTO_UDP {
        l4[4..6].copy_from_slice(&len.to_be_bytes());
    }
    let at = match next_header {
        IPPROTO_ICMPV6 => Some(2),
        IPPROTO_UDP => Some(6),
        _ => None,
    };
    if let Some(at) = at {
        l4[at..at + 2].copy_from_slice(&[0, 0]);
        let mut pseudo = Vec::with_capacity(40 + l4.len());
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, next_header]);
        pseudo.extend_from_slice(&l4);
        let c = match checksum(&pseudo) {
            // UDP over IPv6 may not carry a zero checksum (RFC 8200).
            0 if next_header == IPPROTO_UDP => 0xffff,
            c => c,
        };
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let mut f = Vec::with_capacity(54 + l4.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[next_header, hop_limit]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&l4);
    f
}

/// An ICMPv6 echo request from `src` to `dst`.
pub fn icmp6_echo(
    macs: ([u8; 6], [u8; 6]),
    addrs: (Ipv6Addr, Ipv6Addr),
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = vec![icmp6_type::ECHO_REQUEST, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(payload);
    ipv6_frame(macs, addrs, IPPROTO_ICMPV6, 64, l4)
}

/// A UDP datagram over IPv6 (e.g. from port 547: a DHCPv6 server's).
pub fn udp6(
    macs: ([u8; 6], [u8; 6]),
    addrs: (Ipv6Addr, Ipv6Addr),
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    ipv6_frame(macs, addrs, IPPROTO_UDP, 64, l4)
}

/// A router advertisement from `src` (a link-local address) to all nodes:
/// default router for `router_lifetime` seconds, with a source link-layer
/// address option and an on-link, autonomous prefix information option
/// for `prefix/prefix_len` (RFC 4861 section 4.2), as a rogue router sends
/// to become everyone's default gateway.
pub fn router_advert(
    src_mac: [u8; 6],
    src: Ipv6Addr,
    (prefix, prefix_len): (Ipv6Addr, u8),
    router_lifetime: u16,
) -> Vec<u8> {
    let mut l4 = vec![icmp6_type::ROUTER_ADVERT, 0, 0, 0, 64, 0];
    l4.extend_from_slice(&router_lifetime.to_be_bytes());
    l4.extend_from_slice(&[0; 8]);
    // Source link-layer address.
    l4.extend_from_slice(&[1, 1]);
    l4.extend_from_slice(&src_mac);
    // Prefix information: L and A set, valid 600 s, preferred 300 s.
    l4.extend_from_slice(&[3, 4, prefix_len, 0xc0]);
    l4.extend_from_slice(&600u32.to_be_bytes());
    l4.extend_from_slice(&300u32.to_be_bytes());
    l4.extend_from_slice(&[0; 4]);
    l4.extend_from_slice(&prefix.octets());
    // Neighbour discovery is only valid with hop limit 255 (RFC 4861 6.1.2).
    ipv6_frame(
        (src_mac, multicast_mac(ALL_NODES)),
        (src, ALL_NODES),
        IPPROTO_ICMPV6,
        255,
        l4,
    )
}

/// The neighbour solicitation of duplicate address detection for `target`
/// (RFC 4862 section 5.4.2): from `::` to its solicited-node group, no
/// options. How a host claims an address.
pub fn dad_solicit(src_mac: [u8; 6], target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(target);
    let mut l4 = vec![icmp6_type::NEIGHBOUR_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(&target.octets());
    ipv6_frame(
        (src_mac, multicast_mac(group)),
        (Ipv6Addr::UNSPECIFIED, group),
        IPPROTO_ICMPV6,
        255,
        l4,
    )
}

/// An unsolicited neighbour advertisement with the override flag: "`target`
/// is at `src_mac`" (its target link-layer address option), from `src` to
/// `dst`; for a target the sender does not own, the ND spoof that
/// redirects the target's traffic.
pub fn neighbour_advert(
    src_mac: [u8; 6],
    (src, dst): (Ipv6Addr, Ipv6Addr),
    target: Ipv6Addr,
    dst_mac: [u8; 6],
) -> Vec<u8> {
    let mut l4 = vec![icmp6_type::NEIGHBOUR_ADVERT, 0, 0, 0, 0x20, 0, 0, 0];
    l4.extend_from_slice(&target.octets());
    l4.extend_from_slice(&[2, 1]);
    l4.extend_from_slice(&src_mac);
    ipv6_frame((src_mac, dst_mac), (src, dst), IPPROTO_ICMPV6, 255, l4)
}

/// An 802.1D configuration BPDU to `dst_mac` (normally [`STP_MAC`]) in an
/// 802.3 frame with an LLC header (DSAP/SSAP 0x42), claiming to be the root
/// bridge with the best priority (0): what would take over the LAN's
/// spanning tree. Padded to Ethernet's 60-byte minimum.
pub fn bpdu(src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let mut bridge_id = vec![0, 0];
    bridge_id.extend_from_slice(&src_mac);
    let mut b = vec![0x42, 0x42, 0x03, 0, 0, 0, 0, 0];
    b.extend_from_slice(&bridge_id); // root
    b.extend_from_slice(&0u32.to_be_bytes()); // root path cost
    b.extend_from_slice(&bridge_id); // sender
    b.extend_from_slice(&[0x80, 0x01]); // port id
    b.extend_from_slice(&[0, 0]); // message age
    b.extend_from_slice(&(20u16 * 256).to_be_bytes()); // max age 20 s
    b.extend_from_slice(&(2u16 * 256).to_be_bytes()); // hello 2 s
    b.extend_from_slice(&(15u16 * 256).to_be_bytes()); // forward delay 15 s
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    // An 802.3 length, not an EtherType (< 0x600).
    f.extend_from_slice(&(b.len() as u16).to_be_bytes());
    f.extend_from_slice(&b);
    f.resize(f.len().max(60), 0);
    f
}

/// One frame of a broadcast storm: UDP from `src_ip` to
/// 255.255.255.255:[`STORM_PORT`], carrying [`STORM_MARKER`] and `seq`.
pub fn storm_frame(src_mac: [u8; 6], src_ip: Ipv4Addr, seq: u32) -> Vec<u8> {
    let payload = [STORM_MARKER, &seq.to_be_bytes()].concat();
    udp_frame(
        src_mac,
        BROADCAST,
        src_ip,
        Ipv4Addr::BROADCAST,
        40_009,
        STORM_PORT,
        &payload,
    )
}

/// The name of the port of `lan`'s bridge that `node`'s `eth0` plugs into
/// (where everything the node sends enters the LAN): the peer of a veth
/// shows as `eth0@if<index>`, the port's index in the LAN's namespace.
pub fn node_port(lan: &Lan, node: &Node) -> Result<String> {
    let link = node.ns().ip(&["-o", "link", "show", "dev", "eth0"])?;
    let index = link
        .split_once("@if")
        .and_then(|(_, rest)| rest.split(':').next())
        .with_context(|| format!("no peer index in {link:?}"))?;
    let ports = lan.ns().ip(&["-o", "link", "show", "master", "br0"])?;
    ports
        .lines()
        .find_map(|l| {
            let (i, rest) = l.split_once(": ")?;
            (i.trim() == index).then(|| rest.split(['@', ':']).next().unwrap_or_default())
        })
        .map(str::to_owned)
        .with_context(|| format!("no port of br0 with index {index}: {ports}"))
}

/// An exact count of the frames with source `src_mac` and destination
/// `dst_mac` that enter the bridge of a LAN namespace through port `iif`:
/// an nftables counter in the bridge family's prerouting hook, which sees
/// every frame a port receives, where tcpdump would drop some at tens of
/// thousands per second. The table lives in the LAN's namespace and goes
/// with it; dropping the counter deletes it sooner.
#[derive(Debug)]
pub struct FrameCounter<'a> {
    ns: &'a NetNs,
    table: String,
}

impl<'a> FrameCounter<'a> {
    /// Starts counting (at 0).
    pub fn start(ns: &'a NetNs, iif: &str, src_mac: &str, dst_mac: &str) -> Result<Self> {
        let table = format!("lanlink_lab_count_{}", names::next_id());
        let script = format!(
            "table bridge {table} {{\n  chain pre {{\n    type filter hook prerouting priority -300; policy accept;\n    \
             iifname \"{iif}\" ether saddr {src_mac} ether daddr {dst_mac} counter\n  }}\n}}\n"
        );
        let out = cmd::run_with_stdin(
            &mut ns.command(&["nft", "-f", "-"]),
            Some(script.as_bytes()),
            cmd::SHORT,
        )?;
        cmd::check("nft -f (frame counter)", &out)?;
        Ok(Self { ns, table })
    }

    /// The frames counted so far.
    pub fn packets(&self) -> Result<u64> {
        let out = self
            .ns
            .run_ok(&["nft", "-j", "list", "table", "bridge", &self.table])?;
        let v: Value = serde_json::from_str(&out).context("nft -j output")?;
        find_counter(&v).with_context(|| format!("no counter in {out}"))
    }
}

impl Drop for FrameCounter<'_> {
    fn drop(&mut self) {
        // Best effort: the namespace may be gone already, and the table
        // goes with it anyway.
        let _ = self.ns.run_timeout(
            &["nft", "delete", "table", "bridge", &self.table],
            cmd::SHORT,
        );
    }
}

/// The `packets` of the first `counter` object anywhere in `v`.
fn find_counter(v: &Value) -> Option<u64> {
    match v {
        Value::Object(o) => o
            .get("counter")
            .and_then(|c| c["packets"].as_u64())
            .or_else(|| o.values().find_map(find_counter)),
        Value::Array(a) => a.iter().find_map(find_counter),
        _ => None,
    }
}

/// The drops the agent counted for one endpoint: the `drops` object (drop
/// reason label → packets) of its row in `GET /v1/endpoints`. Empty when
/// the row has none (an agent without per-endpoint drops); fails when the
/// agent does not list `container_id`.
pub fn endpoint_drops(agent: &Agent, container_id: &str) -> Result<BTreeMap<String, u64>> {
    let body = agent.http_get(lanlink_api::routes::ENDPOINTS)?;
    let all: Value = serde_json::from_str(&body).context("the endpoints JSON")?;
    let row = all
        .as_array()
        .context("the endpoints JSON is not a list")?
        .iter()
        .find(|e| e["containerId"] == container_id)
        .with_context(|| format!("no endpoint {container_id} in {body}"))?;
    Ok(row["drops"]
        .as_object()
        .map(|d| {
            d.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default())
}

/// Waits (≤ 3 s: frames are counted in softirq context, possibly after the
/// sender returned) until the endpoint's `label` drops reach `at_least`.
pub fn wait_endpoint_drops(
    agent: &Agent,
    container_id: &str,
    label: &str,
    at_least: u64,
) -> Result<()> {
    let what = format!("{container_id}'s {label} drops to reach {at_least}");
    let reached = wait_until(Duration::from_secs(3), &what, || {
        let d = endpoint_drops(agent, container_id)?;
        Ok((d.get(label).copied().unwrap_or(0) >= at_least).then_some(()))
    });
    if reached.is_ok() {
        return Ok(());
    }
    let now = endpoint_drops(agent, container_id)?;
    ensure!(
        now.get(label).copied().unwrap_or(0) >= at_least,
        "{container_id}: {label} = {}, expected at least {at_least}; its drops: {now:?}",
        now.get(label).copied().unwrap_or(0)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// The L4 checksum of an IPv6 frame verifies (sums to zero with it).
    fn l4_verifies(f: &[u8]) -> bool {
        let l4 = &f[54..];
        let mut pseudo = f[22..54].to_vec();
        pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, f[20]]);
        pseudo.extend_from_slice(l4);
        checksum(&pseudo) == 0
    }

    fn ipv4_udp_verifies(f: &[u8]) -> bool {
        let udp = &f[34..];
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(udp);
        checksum(&f[14..34]) == 0 && checksum(&pseudo) == 0
    }

    #[test]
    fn link_local_and_multicast_addresses() {
        assert_eq!(link_local(MAC), ip6("fe80::11:22ff:fe33:4455"));
        assert_eq!(
            solicited_node(ip6("2001:2::abcd:1234")),
            ip6("ff02::1:ffcd:1234")
        );
        assert_eq!(
            multicast_mac(ip6("ff02::1:ffcd:1234")),
            [0x33, 0x33, 0xff, 0xcd, 0x12, 0x34]
        );
    }

    #[test]
    fn only_lab_ipv6_addresses_pass() {
        for ok in ["2001:2::bad", "2001:2:0:99::1", "fe80::1", "ff02::1", "::"] {
            assert!(check_lab_addr6(ip6(ok)).is_ok(), "{ok}");
        }
        for bad in ["2001:db8::1", "2001:2:1::1", "fe80:1::1", "ff05::2", "::1"] {
            assert!(check_lab_addr6(ip6(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn dhcp_messages_are_well_formed() {
        let server = Ipv4Addr::new(198, 18, 0, 1);
        let me = Ipv4Addr::new(198, 18, 0, 120);
        let offer = dhcp_offer(MAC, me, [2, 0, 0, 0, 0, 0x99], server, 7);
        assert!(ipv4_udp_verifies(&offer));
        assert_eq!(&offer[0..6], &BROADCAST);
        assert_eq!(&offer[34..38], &[0, 67, 0, 68]);
        let bootp = &offer[42..];
        assert_eq!(bootp[0], 2, "BOOTREPLY");
        assert_eq!(&bootp[16..20], &server.octets(), "yiaddr");
        assert_eq!(&bootp[236..243], &[99, 130, 83, 99, 53, 1, 2]);
        assert!(bootp.len() >= 300);

        let fake = [2, 0, 0, 0xfa, 0xce, 1];
        let disc = dhcp_discover(MAC, fake, Some(fake), 8);
        assert!(ipv4_udp_verifies(&disc));
        assert_eq!(&disc[26..30], &[0, 0, 0, 0], "from 0.0.0.0");
        assert_eq!(&disc[6..12], &MAC, "the pod's own source MAC");
        assert_eq!(&disc[42 + 28..42 + 34], &fake, "chaddr");
        assert_eq!(&disc[42 + 240..42 + 243], &[53, 1, 1]);

        let req = dhcp_request(MAC, fake, Ipv4Addr::new(198, 18, 0, 180), None, None, 9);
        assert!(ipv4_udp_verifies(&req));
        assert_eq!(
            &req[42 + 240..42 + 249],
            &[53, 1, 3, 50, 4, 198, 18, 0, 180]
        );

        let rel = dhcp_release(MAC, [2; 6], me, server, MAC, None, 10);
        assert!(ipv4_udp_verifies(&rel));
        assert_eq!(&rel[0..6], &[2; 6]);
        assert_eq!(&rel[26..34], &[198, 18, 0, 120, 198, 18, 0, 1]);
        assert_eq!(&rel[42 + 12..42 + 16], &me.octets(), "ciaddr");
        assert_eq!(&rel[42 + 240..42 + 249], &[53, 1, 7, 54, 4, 198, 18, 0, 1]);
    }

    #[test]
    fn ipv6_frames_carry_valid_checksums() {
        let ll = link_local(MAC);
        let ra = router_advert(MAC, ll, (ip6("2001:2:0:99::"), 64), 1800);
        assert!(l4_verifies(&ra));
        assert_eq!(&ra[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&ra[12..14], &[0x86, 0xdd]);
        assert_eq!((ra[20], ra[21], ra[54]), (58, 255, 134));
        assert_eq!(ra.len(), 54 + 16 + 8 + 32);
        assert_eq!(&ra[54 + 24 + 2..54 + 24 + 4], &[64, 0xc0]);

        let echo = icmp6_echo(
            (MAC, [2; 6]),
            (ip6("2001:2::bad"), ip6("2001:2::50")),
            1,
            2,
            b"x",
        );
        assert!(l4_verifies(&echo));
        assert_eq!(echo[54], 128);

        let udp = udp6(
            (MAC, multicast_mac(ALL_NODES)),
            (ll, ALL_NODES),
            547,
            546,
            b"abc",
        );
        assert!(l4_verifies(&udp));
        assert_eq!(&udp[54..60], &[0x02, 0x23, 0x02, 0x22, 0, 11]);

        let target = ip6("2001:2::a1");
        let dad = dad_solicit(MAC, target);
        assert!(l4_verifies(&dad));
        assert_eq!(&dad[22..38], &[0; 16], "from ::");
        assert_eq!(&dad[0..6], &[0x33, 0x33, 0xff, 0, 0, 0xa1]);
        assert_eq!(&dad[62..78], &target.octets());

        let na = neighbour_advert(MAC, (ll, ALL_NODES), target, multicast_mac(ALL_NODES));
        assert!(l4_verifies(&na));
        assert_eq!((na[54], na[58]), (136, 0x20));
        assert_eq!(&na[80..86], &MAC);
    }

    #[test]
    fn bpdu_and_storm_frames() {
        let b = bpdu(MAC, STP_MAC);
        assert_eq!(b.len(), 60);
        assert_eq!(&b[0..6], &STP_MAC);
        assert_eq!(&b[12..14], &[0, 38], "802.3 length: LLC + 35-byte BPDU");
        assert_eq!(&b[14..17], &[0x42, 0x42, 0x03]);
        assert_eq!(&b[22..30], &[0, 0, 2, 0x11, 0x22, 0x33, 0x44, 0x55]);

        let s = storm_frame(MAC, Ipv4Addr::new(198, 18, 0, 120), 5);
        assert!(ipv4_udp_verifies(&s));
        assert_eq!(&s[0..6], &BROADCAST);
        assert_eq!(&s[36..38], &STORM_PORT.to_be_bytes());
        assert!(s[42..].starts_with(STORM_MARKER));
    }

    #[test]
    fn finds_the_nft_counter() {
        let v: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{}},{"table":{"name":"t"}},
               {"rule":{"expr":[{"match":{}},{"counter":{"packets":42,"bytes":4200}}]}}]}"#,
        )
        .unwrap();
        assert_eq!(find_counter(&v), Some(42));
    }
}
