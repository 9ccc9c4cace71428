//! Builders for the frames the cases send: Ethernet, ARP, IPv4 with UDP,
//! TCP or ICMP echo, and a DHCPACK. Checksums are filled in (the programs
//! do not check them, but the frames stay valid if captured).

/// The broadcast MAC.
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// EtherType IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType 802.1Q.
pub const ETH_P_8021Q: u16 = 0x8100;
/// IP protocol numbers.
pub const IPPROTO_ICMP: u8 = 1;
/// TCP.
pub const IPPROTO_TCP: u8 = 6;
/// UDP.
pub const IPPROTO_UDP: u8 = 17;

/// An Ethernet frame.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP packet for IPv4 over Ethernet (`op` 1 request, 2 reply).
pub fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa);
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa);
    p
}

/// A broadcast ARP request from `sha`/`spa` for `tpa`.
pub fn arp_request(sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    eth(BROADCAST, sha, ETH_P_ARP, &arp(1, sha, spa, [0; 6], tpa))
}

/// An IPv4 packet (20-byte header, TTL 64, DF) carrying `l4`.
pub fn ipv4(saddr: [u8; 4], daddr: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&saddr);
    h.extend_from_slice(&daddr);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

/// An Ethernet frame `src_mac` → `dst_mac` carrying an IPv4 packet
/// `saddr` → `daddr`.
pub fn ipv4_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    saddr: [u8; 4],
    daddr: [u8; 4],
    proto: u8,
    l4: &[u8],
) -> Vec<u8> {
    eth(dst_mac, src_mac, ETH_P_IP, &ipv4(saddr, daddr, proto, l4))
}

/// A UDP header and payload (checksum 0: none, allowed over IPv4).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A TCP header with `flags` (no options, no payload, checksum left 0).
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

/// An ICMP echo (`ty` 8 request, 0 reply) with identifier `id`.
pub fn icmp_echo(ty: u8, id: u16) -> Vec<u8> {
    let mut i = vec![ty, 0, 0, 0];
    i.extend_from_slice(&id.to_be_bytes());
    i.extend_from_slice(&[0, 1]);
    let sum = checksum(&i);
    i[2..4].copy_from_slice(&sum.to_be_bytes());
    i
}

/// A BOOTP message (RFC 2131) of `op` (1 request, 2 reply) for `chaddr`,
/// offering `yiaddr`, with DHCP message type `msg_type` (option 53).
pub fn dhcp(op: u8, chaddr: [u8; 6], yiaddr: [u8; 4], msg_type: u8) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = op;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    b[16..20].copy_from_slice(&yiaddr);
    b[28..34].copy_from_slice(&chaddr);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    // A server identifier first, so the walk has to skip an option.
    b.extend_from_slice(&[54, 4, 198, 18, 0, 1]);
    b.extend_from_slice(&[53, 1, msg_type]);
    b.push(255);
    b
}

/// DHCP message type DHCPACK.
pub const DHCPACK: u8 = 5;
/// DHCP message type DHCPDISCOVER.
pub const DHCPDISCOVER: u8 = 1;

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// EtherType IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// IP protocol ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 extension header: destination options.
pub const NEXTHDR_DEST: u8 = 60;
/// IPv6 extension header: hop-by-hop options.
pub const NEXTHDR_HOP: u8 = 0;
/// IPv6 extension header: fragment.
pub const NEXTHDR_FRAGMENT: u8 = 44;

/// A BOOTP message like [`dhcp`], with `options` (raw TLVs) before the end.
pub fn dhcp_with(op: u8, chaddr: [u8; 6], msg_type: u8, options: &[u8]) -> Vec<u8> {
    let mut b = dhcp(op, chaddr, [0; 4], msg_type);
    b.pop();
    b.extend_from_slice(options);
    b.push(255);
    b
}

/// An IPv6 header (hop limit 255) with next header `nh` and `payload`.
pub fn ipv6(saddr: [u8; 16], daddr: [u8; 16], nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[nh, 255]);
    h.extend_from_slice(&saddr);
    h.extend_from_slice(&daddr);
    h.extend_from_slice(payload);
    h
}

/// An ICMPv6 message of type `ty` with `body` after the 4-byte header
/// (checksum left 0: the programs do not check it).
pub fn icmpv6(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(body);
    m
}

/// A neighbour solicitation or advertisement body for `target`.
pub fn nd_target(target: [u8; 16]) -> Vec<u8> {
    let mut b = vec![0; 4];
    b.extend_from_slice(&target);
    b
}

/// An 8-byte extension header (hop-by-hop or destination options, padded
/// with PadN) whose next header is `nh`.
pub fn ext_header(nh: u8) -> Vec<u8> {
    vec![nh, 0, 1, 4, 0, 0, 0, 0]
}

/// An IPv6 frame from `src` to `dst`.
pub fn ipv6_frame(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    eth(dst, src, ETH_P_IPV6, ip)
}

/// The EUI-64 link-local address of `mac`.
pub fn link_local(mac: [u8; 6]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8] = mac[0] ^ 2;
    a[9] = mac[1];
    a[10] = mac[2];
    a[11] = 0xff;
    a[12] = 0xfe;
    a[13] = mac[3];
    a[14] = mac[4];
    a[15] = mac[5];
    a
}

/// The all-nodes group ff02::1 and its MAC.
pub const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The MAC of ff02::1.
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// The ICMPv6 checksum of `msg` (its checksum field as it is) from `saddr`
/// to `daddr` (RFC 4443 2.3: over the pseudo-header of RFC 8200 8.1 and the
/// message): 0 when `msg` carries the right one, else the value to write
/// into a zeroed field.
pub fn icmpv6_checksum(saddr: [u8; 16], daddr: [u8; 16], msg: &[u8]) -> u16 {
    let mut data = Vec::with_capacity(40 + msg.len());
    data.extend_from_slice(&saddr);
    data.extend_from_slice(&daddr);
    data.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
    data.extend_from_slice(msg);
    checksum(&data)
}

/// `msg` (an ICMPv6 message with a zero checksum) with its checksum filled
/// in for `saddr` → `daddr`.
pub fn with_icmpv6_checksum(saddr: [u8; 16], daddr: [u8; 16], mut msg: Vec<u8>) -> Vec<u8> {
    let sum = icmpv6_checksum(saddr, daddr, &msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}
