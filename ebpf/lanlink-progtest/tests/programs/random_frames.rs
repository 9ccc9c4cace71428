//! Random and mutated frames through `from_pod`, `from_lan` and `to_pod`
//! (issue 15): valid frames of every kind the programs parse (DHCP, ARP,
//! IPv4 UDP/TCP/ICMP, IPv6 ND/MLD/RA/DHCPv6 with extension headers,
//! VLAN-tagged, 802.1 control groups), mutated (bits flipped, bytes and
//! EtherTypes overwritten, truncated, extended, tagged) or replaced by
//! random bytes, from a seeded generator, with three pods registered as the
//! agent registers them (an agent-held lease; the DHCP-server and RA
//! switches on; a pod with its own DHCP client), with and without the flow
//! fix. After every run:
//!
//! - the return code is `TC_ACT_OK`, `TC_ACT_SHOT` or `TC_ACT_REDIRECT`, a
//!   `STATS` slot counted the frame, a drop slot exactly when it was shot
//!   and a verdict slot when it went on, and `TC_ACT_REDIRECT` exactly when
//!   a redirect (not a clone) succeeded;
//! - every redirect and clone targets an endpoint's host veth or the uplink;
//! - a frame from a pod that goes anywhere (passed, redirected or cloned)
//!   carries the pod's MAC as source, and its IPv4 address (or 0.0.0.0 for
//!   DHCP to a server, UDP port 67), ARP sender (or a probe's 0.0.0.0), or an IPv6
//!   source it owns (its EUI-64 link-local, a claimed address, or `::`);
//!   the exceptions are the ARP reply and the neighbour advertisement (for
//!   the node's IPv6 address in `HOST_ADDRS6`) the program makes itself and
//!   sends back into the asking pod.
//!
//! The seed is printed; `LANLINK_RANDOM_FRAMES_SEED=<seed>` replays a run. A
//! failure prints the seed, the program, the frame's number and its bytes
//! in hex (and what the program left).

use std::collections::BTreeMap;

use lanlink_progtest::frames::{
    ALL_NODES, ALL_NODES_MAC, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMPV6, NEXTHDR_DEST, NEXTHDR_FRAGMENT,
    NEXTHDR_HOP, ext_header, icmpv6, ipv6, ipv6_frame, link_local, nd_target,
};
use lanlink_progtest::{Harness, Run, VethPair, error_chain};

use super::*;

/// Frames per program, split over the two configurations.
const FRAMES_PER_PROGRAM: usize = 20_000;
/// Replays a run with this seed.
const SEED_ENV: &str = "LANLINK_RANDOM_FRAMES_SEED";
/// The pod with its own DHCP client, and the address the agent learnt.
const OWN_DHCP_POD: u8 = 3;
/// The pod with the DHCP-server and RA switches on.
const OPEN_POD: u8 = 2;
/// A prefix of the node's host routes (answered ARP).
const HOST_ROUTE: [u8; 4] = [198, 18, 100, 0];
/// The node's IPv6 address in `HOST_ADDRS6` (answered neighbour
/// solicitations): one of the [`v6_addr`] picks.
const HOST_ADDR6_LAST: u8 = 20;
/// Longest frame generated (an Ethernet MTU frame).
const MAX_FRAME: usize = 1514;

/// SplitMix64: a few lines for a seeded, reproducible stream (the crate
/// takes no RNG dependency for one test).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1 / n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// The seed from [`SEED_ENV`], else from the clock.
fn seed() -> u64 {
    if let Ok(s) = std::env::var(SEED_ENV) {
        return s
            .parse()
            .unwrap_or_else(|e| panic!("{SEED_ENV}={s:?} is not a u64: {e}"));
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A global IPv6 address in the lab's range.
fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0, 2]);
    a[15] = last;
    a
}

/// The endpoints of the lab: as [`register`] does for pods 1 and 2 (pod 2
/// with the DHCP-server and RA switches on), pod 3 with its own DHCP
/// client and a learnt address; a host route and a node IPv6 address.
fn setup(lab: &mut Lab) -> Vec<Endpoint> {
    let eps = vec![
        endpoint(lab, 1, endpoint_flags::AGENT_DHCP),
        endpoint(
            lab,
            OPEN_POD,
            endpoint_flags::AGENT_DHCP
                | endpoint_flags::DHCP_SERVER
                | endpoint_flags::ROUTER_ADVERT,
        ),
        endpoint(lab, OWN_DHCP_POD, endpoint_flags::OWN_DHCP),
    ];
    for ep in &eps {
        lab.harness.add_endpoint(ep).unwrap();
    }
    lab.harness.add_host_route(HOST_ROUTE, 24).unwrap();
    lab.harness.add_host_addr6(v6(HOST_ADDR6_LAST)).unwrap();
    eps
}

/// A source MAC: the pod's own mostly, sometimes another's or random.
fn src_mac(rng: &mut Rng, n: u8) -> [u8; 6] {
    match rng.below(10) {
        0 => pod_mac(rng.pick(&[1, 2, 3])),
        1 => LAN_HOST_MAC,
        _ => pod_mac(n),
    }
}

/// A source IPv4: the pod's own mostly, sometimes another's, 0.0.0.0 or random.
fn src_ip(rng: &mut Rng, n: u8) -> [u8; 4] {
    match rng.below(12) {
        0 => pod_ip(rng.pick(&[1, 2, 3])),
        1 => [0; 4],
        2 => [rng.byte(), rng.byte(), rng.byte(), rng.byte()],
        _ => pod_ip(n),
    }
}

/// A destination MAC of any kind.
fn dst_mac(rng: &mut Rng, n: u8) -> [u8; 6] {
    rng.pick(&[
        BROADCAST,
        LAN_HOST_MAC,
        host_mac(n),
        pod_mac(1),
        pod_mac(2),
        pod_mac(3),
        ALL_NODES_MAC,
        [0x33, 0x33, 0, 0, 0, 0x16],
        [0x01, 0x00, 0x5e, 0, 0, 0xfb],
        [0x01, 0x80, 0xc2, 0, 0, 0x0e],
        [0x02, 0, 0, 0, 0xbb, 0x01],
    ])
}

fn dst_ip(rng: &mut Rng) -> [u8; 4] {
    rng.pick(&[
        LAN_HOST_IP,
        GATEWAY,
        pod_ip(1),
        pod_ip(2),
        pod_ip(3),
        [255; 4],
        [198, 18, 100, 7],
        [224, 0, 0, 251],
        CLIENT_IP,
    ])
}

fn v6_addr(rng: &mut Rng, n: u8) -> [u8; 16] {
    match rng.below(6) {
        0 => [0; 16],
        1 => link_local(pod_mac(rng.pick(&[1, 2, 3]))),
        2 => v6(rng.byte() % 24),
        3 => ALL_NODES,
        _ => link_local(pod_mac(n)),
    }
}

/// An IPv4 transport payload of any kind (with DHCP on its ports).
fn l4(rng: &mut Rng, mac: [u8; 6]) -> (u8, Vec<u8>) {
    match rng.below(7) {
        0 => (
            IPPROTO_UDP,
            frames::udp(
                68,
                67,
                &frames::dhcp(1, mac, [0; 4], rng.pick(&[1, 3, 4, 7, 8])),
            ),
        ),
        1 => (
            IPPROTO_UDP,
            frames::udp(
                67,
                68,
                &frames::dhcp(2, mac, pod_ip(3), rng.pick(&[2, 5, 6])),
            ),
        ),
        2 => (
            IPPROTO_UDP,
            frames::udp(
                68,
                67,
                &frames::dhcp_with(1, mac, 3, &[50, 4, 198, 18, 0, 13]),
            ),
        ),
        3 => (
            IPPROTO_TCP,
            frames::tcp(40000, 80, rng.pick(&[0x02, 0x12, 0x10, 0x11])),
        ),
        4 => (
            frames::IPPROTO_ICMP,
            frames::icmp_echo(rng.pick(&[0, 8]), 77),
        ),
        5 => (IPPROTO_UDP, frames::udp(5000, 53, &rng.bytes(12))),
        _ => {
            let len = rng.below(40);
            (rng.byte(), rng.bytes(len))
        }
    }
}

/// An ICMPv6 message or DHCPv6 datagram, possibly behind extension headers.
fn ipv6_payload(rng: &mut Rng, n: u8) -> (u8, Vec<u8>) {
    let (nh, payload) = match rng.below(8) {
        // NS (DAD or resolution; often for the node's address, which the
        // program answers), NA.
        0 => {
            let target = if rng.one_in(3) {
                v6(HOST_ADDR6_LAST)
            } else {
                v6_addr(rng, n)
            };
            (IPPROTO_ICMPV6, icmpv6(135, &nd_target(target)))
        }
        1 => (IPPROTO_ICMPV6, icmpv6(136, &nd_target(v6_addr(rng, n)))),
        // RS, RA, redirect.
        2 => (IPPROTO_ICMPV6, icmpv6(rng.pick(&[133, 134, 137]), &[0; 12])),
        // MLD query, report, done, MLDv2 report.
        3 => (
            IPPROTO_ICMPV6,
            icmpv6(rng.pick(&[130, 131, 132, 143]), &[0; 20]),
        ),
        // Echo.
        4 => (IPPROTO_ICMPV6, icmpv6(rng.pick(&[128, 129]), &[0, 1, 0, 1])),
        // DHCPv6 client and server.
        5 => (IPPROTO_UDP, frames::udp(546, 547, &[1, 0, 0, 1])),
        6 => (IPPROTO_UDP, frames::udp(547, 546, &[7, 0, 0, 1])),
        _ => {
            let len = rng.below(40);
            (rng.byte(), rng.bytes(len))
        }
    };
    // Extension headers in front, sometimes a chain of them.
    let mut nh = nh;
    let mut payload = payload;
    for _ in 0..rng.below(4).saturating_sub(1) {
        let kind = rng.pick(&[NEXTHDR_HOP, NEXTHDR_DEST, NEXTHDR_FRAGMENT]);
        let mut ext = ext_header(nh);
        if kind == NEXTHDR_FRAGMENT {
            ext[2..4].copy_from_slice(&rng.pick(&[[0u8, 0], [0, 1], [0, 8]]));
        }
        ext.extend_from_slice(&payload);
        payload = ext;
        nh = kind;
    }
    (nh, payload)
}

/// A well-formed frame of a random kind from pod `n` (source addresses
/// mostly its own).
fn pod_frame(rng: &mut Rng, n: u8) -> Vec<u8> {
    let mac = src_mac(rng, n);
    match rng.below(9) {
        0 | 1 => {
            let (proto, l4) = l4(rng, mac);
            frames::ipv4_frame(
                dst_mac(rng, n),
                mac,
                src_ip(rng, n),
                dst_ip(rng),
                proto,
                &l4,
            )
        }
        2 => {
            // A DHCP client message from 0.0.0.0, broadcast.
            let (proto, l4) = l4(rng, mac);
            let ip = frames::ipv4([0; 4], [255; 4], proto, &l4);
            frames::eth(BROADCAST, mac, ETH_P_IP, &ip)
        }
        3 | 4 => {
            let op = rng.pick(&[1, 2]);
            let tpa = rng.pick(&[
                GATEWAY,
                LAN_HOST_IP,
                [198, 18, 100, 7],
                pod_ip(1),
                pod_ip(2),
            ]);
            let arp = frames::arp(op, src_mac(rng, n), src_ip(rng, n), [0; 6], tpa);
            frames::eth(dst_mac(rng, n), mac, frames::ETH_P_ARP, &arp)
        }
        5 | 6 => {
            let (nh, payload) = ipv6_payload(rng, n);
            let ip = ipv6(v6_addr(rng, n), v6_addr(rng, n), nh, &payload);
            ipv6_frame(dst_mac(rng, n), mac, &ip)
        }
        7 => {
            let ethertype = rng.pick(&[0x88b5, 0x88cc, 0x8863, 0x0842, 0x0060, 0x05dc]);
            let len = 46 + rng.below(64);
            frames::eth(dst_mac(rng, n), mac, ethertype, &rng.bytes(len))
        }
        _ => {
            let len = rng.below(200);
            rng.bytes(len)
        }
    }
}

/// A well-formed frame of a random kind from the LAN.
fn lan_frame(rng: &mut Rng) -> Vec<u8> {
    let n = rng.pick(&[1, 2, 3]);
    match rng.below(7) {
        0 => {
            // A server's DHCP reply to a pod.
            let bootp = frames::dhcp(2, pod_mac(n), pod_ip(n), rng.pick(&[2, 5, 6]));
            let dst = rng.pick(&[pod_mac(n), BROADCAST]);
            frames::ipv4_frame(
                dst,
                LAN_HOST_MAC,
                [198, 18, 0, 1],
                rng.pick(&[pod_ip(n), [255; 4]]),
                IPPROTO_UDP,
                &frames::udp(67, 68, &bootp),
            )
        }
        1 => frames::arp_request(LAN_HOST_MAC, LAN_HOST_IP, pod_ip(n)),
        2 => {
            let (proto, l4) = l4(rng, LAN_HOST_MAC);
            frames::ipv4_frame(
                dst_mac(rng, n),
                LAN_HOST_MAC,
                LAN_HOST_IP,
                dst_ip(rng),
                proto,
                &l4,
            )
        }
        3 | 4 => {
            let (nh, payload) = ipv6_payload(rng, n);
            let ip = ipv6(v6_addr(rng, n), v6_addr(rng, n), nh, &payload);
            ipv6_frame(dst_mac(rng, n), LAN_HOST_MAC, &ip)
        }
        5 => {
            let len = 46 + rng.below(64);
            frames::eth(
                dst_mac(rng, n),
                LAN_HOST_MAC,
                rng.pick(&[0x88b5, 0x88cc]),
                &rng.bytes(len),
            )
        }
        _ => {
            let len = rng.below(200);
            rng.bytes(len)
        }
    }
}

/// A well-formed frame the node's stack hands to pod `n`.
fn to_pod_frame(rng: &mut Rng, n: u8) -> Vec<u8> {
    match rng.below(5) {
        0 | 1 => {
            let (proto, l4) = l4(rng, host_mac(n));
            frames::ipv4_frame(pod_mac(n), host_mac(n), dst_ip(rng), pod_ip(n), proto, &l4)
        }
        2 => frames::arp_request(LAN_HOST_MAC, LAN_HOST_IP, pod_ip(n)),
        3 => {
            let (nh, payload) = ipv6_payload(rng, n);
            let ip = ipv6(v6_addr(rng, n), link_local(pod_mac(n)), nh, &payload);
            ipv6_frame(pod_mac(n), host_mac(n), &ip)
        }
        _ => {
            let len = rng.below(200);
            rng.bytes(len)
        }
    }
}

/// Zero to three mutations of `frame`.
fn mutate(rng: &mut Rng, mut frame: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.below(4) {
        match rng.below(8) {
            // Flip bits, mostly in the headers.
            0 | 1 if !frame.is_empty() => {
                for _ in 0..=rng.below(4) {
                    let span = frame.len().min(if rng.one_in(4) { usize::MAX } else { 64 });
                    let i = rng.below(span);
                    frame[i] ^= 1 << rng.below(8);
                }
            }
            // Overwrite a byte with a boundary value or a random one.
            2 if !frame.is_empty() => {
                let i = rng.below(frame.len().min(80));
                let random = rng.byte();
                frame[i] = rng.pick(&[0, 1, 0x7f, 0x80, 0xff, random]);
            }
            // Another EtherType.
            3 if frame.len() >= 14 => {
                let t: u16 = rng.pick(&[0x0800, 0x0806, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x0600]);
                frame[12..14].copy_from_slice(&t.to_be_bytes());
            }
            // Cut.
            4 => {
                let len = rng.below(frame.len() + 1);
                frame.truncate(len);
            }
            // Extend.
            5 => {
                let more = rng.below(64);
                frame.extend(rng.bytes(more));
            }
            // A VLAN tag (or two) in front of the EtherType.
            6 if frame.len() >= 14 => {
                let tpid: u16 = rng.pick(&[0x8100, 0x88a8]);
                let mut tag = tpid.to_be_bytes().to_vec();
                tag.extend_from_slice(&[0x00, rng.byte()]);
                frame.splice(12..12, tag);
            }
            // The IPv4 header's length fields and fragment bits.
            7 if frame.len() >= 34 && frame[12..14] == ETH_P_IP.to_be_bytes() => {
                match rng.below(3) {
                    0 => frame[14] = 0x40 | (rng.byte() & 0x0f),
                    1 => frame[16..18].copy_from_slice(&[rng.byte(), rng.byte()]),
                    _ => frame[20] = rng.pick(&[0x20, 0x3f, 0x00, 0x40]),
                }
            }
            _ => {}
        }
    }
    frame.truncate(MAX_FRAME);
    frame
}

/// Whether the kernel refuses a test run of `frame` (EINVAL): shorter than
/// an Ethernet header, or an IPv4/IPv6 EtherType without room for that
/// header (see the crate docs).
fn kernel_refuses(frame: &[u8]) -> bool {
    if frame.len() < 14 {
        return true;
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_IP => frame.len() < 14 + 20,
        ETH_P_IPV6 => frame.len() < 14 + 40,
        _ => false,
    }
}

/// Whether `data`, leaving pod `ep`, carries only the pod's own source
/// addresses (see the module docs); `Err` says which is not.
fn source_is_the_pods(data: &[u8], ep: &Endpoint, harness: &Harness) -> Result<(), String> {
    let field = |r: std::ops::Range<usize>| data.get(r).unwrap_or(&[]).to_vec();
    if field(6..12) != ep.mac {
        return Err(format!("source MAC {}", hex(&field(6..12))));
    }
    let ethertype = data.get(12..14).map(|t| u16::from_be_bytes([t[0], t[1]]));
    match ethertype {
        Some(ETH_P_IP) if data.len() >= 34 => {
            let saddr = field(26..30);
            let ihl = usize::from(data[14] & 0x0f) * 4;
            // A client's DHCP (UDP to port 67) may come from 0.0.0.0: a
            // DISCOVER has no address yet, and the unspecified address is
            // nobody's (the programs' `is_dhcp_from_client`; a source port
            // other than 68 impersonates nobody either).
            let dport = field(14 + ihl + 2..14 + ihl + 4);
            let dhcp_client = data[23] == IPPROTO_UDP && dport == [0, 67];
            if saddr != ep.ipv4 && !(saddr == [0; 4] && dhcp_client) {
                return Err(format!("source IPv4 {saddr:?}"));
            }
        }
        Some(frames::ETH_P_ARP) if data.len() >= 42 => {
            if field(22..28) != ep.mac {
                return Err(format!("ARP sender MAC {}", hex(&field(22..28))));
            }
            let spa = field(28..32);
            if spa != ep.ipv4 && spa != [0; 4] {
                return Err(format!("ARP sender IPv4 {spa:?}"));
            }
        }
        Some(ETH_P_IPV6) if data.len() >= 54 => {
            let mut src = [0u8; 16];
            src.copy_from_slice(&data[22..38]);
            let owned = harness.v6_owner(src) == Some(ep.ifindex);
            if src != [0; 16] && src != link_local(ep.mac) && !owned {
                return Err(format!("source IPv6 {}", hex(&src)));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The checks of the module docs on one run; `Err` says what broke.
fn check(
    run: &Run<'_>,
    frame: &[u8],
    sender: Option<&Endpoint>,
    allowed_targets: &[u32],
    harness: &Harness,
) -> Result<(), String> {
    if ![tc::OK, tc::SHOT, tc::REDIRECT].contains(&run.code) {
        return Err(format!("return code {} outside the known set", run.code));
    }
    if run.counted.is_empty() {
        return Err("no STATS slot counted the frame".into());
    }
    let dropped = run.counted.iter().any(|(s, _)| s.is_drop());
    let went_on = run.counted.iter().any(|(s, _)| !s.is_drop());
    if run.code == tc::SHOT && !dropped {
        return Err(format!("shot without a drop slot: {:?}", run.counted));
    }
    if run.code != tc::SHOT && !went_on {
        return Err(format!(
            "code {} with only drop slots: {:?}",
            run.code, run.counted
        ));
    }
    for r in &run.redirects {
        if !allowed_targets.contains(&r.ifindex) {
            return Err(format!(
                "redirect (kind {}) to ifindex {}: neither an endpoint's nor the uplink's",
                r.kind, r.ifindex
            ));
        }
    }
    let ok = |r: &&lanlink_common::RedirectRecord| r.ret >= 0;
    let redirected = run.redirects.iter().filter(ok).any(|r| r.kind != CLONE);
    if (run.code == tc::REDIRECT) != redirected {
        return Err(format!(
            "code {} with redirects {:?}",
            run.code,
            run.redirects
                .iter()
                .map(|r| (r.kind, r.ifindex, r.ret))
                .collect::<Vec<_>>()
        ));
    }
    let Some(ep) = sender else {
        return Ok(());
    };
    let cloned = run.redirects.iter().filter(ok).any(|r| r.kind == CLONE);
    if run.code == tc::SHOT && !cloned {
        return Ok(());
    }
    // The ARP reply or neighbour advertisement the program writes goes
    // back into the asking pod.
    let answered = run
        .counted
        .iter()
        .any(|(s, _)| *s == Verdict::ArpReply.slot() || *s == Verdict::NdReply.slot())
        && run
            .redirects
            .iter()
            .filter(ok)
            .all(|r| r.ifindex == ep.ifindex);
    if answered {
        return Ok(());
    }
    if run.code != tc::SHOT {
        source_is_the_pods(&run.data, ep, harness).map_err(|e| {
            format!(
                "left the pod with a {e} that is not the pod's ({:?})",
                run.counted
            )
        })?;
    }
    if cloned {
        source_is_the_pods(frame, ep, harness)
            .map_err(|e| format!("cloned out of the pod with a {e} that is not the pod's"))?;
    }
    Ok(())
}

/// What the runs of one program did, for the summary.
#[derive(Default)]
struct Tally {
    runs: usize,
    refused: usize,
    codes: BTreeMap<u32, usize>,
    slots: BTreeMap<&'static str, usize>,
}

/// `per_program` frames through each program in `lab`, from `seed`.
fn fuzz_lab(lab: &mut Lab, seed: u64, per_program: usize) {
    let eps = setup(lab);
    let mut allowed: Vec<u32> = eps.iter().map(|e| e.ifindex).collect();
    allowed.push(lab.uplink().host_ifindex);
    let mut rng = Rng(seed);
    for program in [Program::FromPod, Program::FromLan, Program::ToPod] {
        let mut tally = Tally::default();
        for i in 0..per_program {
            let n = rng.pick(&[1u8, 2, 3]);
            let (base, link, sender): (Vec<u8>, &VethPair, Option<&Endpoint>) = match program {
                Program::FromPod => (
                    pod_frame(&mut rng, n),
                    lab.pod(usize::from(n)),
                    Some(&eps[usize::from(n) - 1]),
                ),
                Program::FromLan => (lan_frame(&mut rng), lab.uplink(), None),
                Program::ToPod => (to_pod_frame(&mut rng, n), lab.pod(usize::from(n)), None),
            };
            let mut frame = if rng.one_in(10) {
                base
            } else {
                mutate(&mut rng, base)
            };
            // Half the pod's frames get its own source MAC back after the
            // mutations, so that they get past the MAC check to the rest.
            if program == Program::FromPod && frame.len() >= 12 && rng.one_in(2) {
                frame[6..12].copy_from_slice(&pod_mac(n));
            }
            let context = || {
                format!(
                    "seed {seed} ({SEED_ENV}), {program:?} frame #{i} via {}",
                    link.host
                )
            };
            let run = match lab.harness.run(program, &frame, link.ctx()) {
                Ok(run) => run,
                Err(_) if kernel_refuses(&frame) => {
                    tally.refused += 1;
                    continue;
                }
                Err(e) => panic!(
                    "{}: the test run failed: {}\nframe: {}",
                    context(),
                    error_chain(&e),
                    hex(&frame)
                ),
            };
            if let Err(what) = check(&run, &frame, sender, &allowed, &lab.harness) {
                panic!(
                    "{}: {what}\nframe: {}\nleft:  {}",
                    context(),
                    hex(&frame),
                    hex(&run.data)
                );
            }
            tally.runs += 1;
            *tally.codes.entry(run.code).or_default() += 1;
            for (slot, _) in &run.counted {
                *tally.slots.entry(slot.label()).or_default() += 1;
            }
        }
        eprintln!(
            "{program:?}: {} runs (+{} the kernel refused), codes {:?}, slots {:?}",
            tally.runs, tally.refused, tally.codes, tally.slots
        );
        assert!(
            tally.runs > per_program / 2,
            "most frames must reach the program: {} of {per_program}",
            tally.runs
        );
    }
}

#[test]
fn random_frames_never_leave_a_pod_spoofed_nor_go_astray() {
    let seed = seed();
    eprintln!("random frames: seed {seed} (replay with {SEED_ENV}={seed})");
    for (i, flags) in [0, config::FLOW_FIX].into_iter().enumerate() {
        eprintln!("config flags {flags}:");
        let seed = seed.wrapping_add(i as u64);
        in_lab(PODS, flags, |lab| {
            fuzz_lab(lab, seed, FRAMES_PER_PROGRAM / 2)
        });
    }
}

/// A positive control: the source check catches a frame that left a pod
/// with another's addresses, so its silence above means something.
#[test]
fn the_source_check_sees_a_spoofed_frame() {
    in_lab(PODS, 0, |lab| {
        let eps = setup(lab);
        let own = udp_from_pod(1, LAN_HOST_MAC, LAN_HOST_IP);
        assert_eq!(source_is_the_pods(&own, &eps[0], &lab.harness), Ok(()));
        let mut mac = own.clone();
        mac[6..12].copy_from_slice(&pod_mac(2));
        let ip = udp_from_pod(2, LAN_HOST_MAC, LAN_HOST_IP);
        let mut ip = ip;
        ip[6..12].copy_from_slice(&pod_mac(1));
        let arp = frames::arp_request(pod_mac(1), pod_ip(2), LAN_HOST_IP);
        let ip6 = ipv6_frame(
            ALL_NODES_MAC,
            pod_mac(1),
            &ipv6(v6(9), ALL_NODES, IPPROTO_ICMPV6, &icmpv6(128, &[0; 4])),
        );
        for spoofed in [mac, ip, arp, ip6] {
            assert!(
                source_is_the_pods(&spoofed, &eps[0], &lab.harness).is_err(),
                "not caught: {}",
                hex(&spoofed)
            );
        }
        // And a run the program drops passes the check; one it forwards
        // with a foreign source would not.
        let run = lab.run_on(Program::FromPod, &own, lab.pod(1));
        let mut allowed: Vec<u32> = eps.iter().map(|e| e.ifindex).collect();
        allowed.push(lab.uplink().host_ifindex);
        assert_eq!(
            check(&run, &own, Some(&eps[0]), &allowed, &lab.harness),
            Ok(())
        );
        assert!(
            check(&run, &own, Some(&eps[1]), &allowed, &lab.harness).is_err(),
            "pod 1's frame checked as pod 2's must fail"
        );
        assert!(
            check(&run, &own, Some(&eps[0]), &allowed[..1], &lab.harness).is_err(),
            "a redirect to the uplink outside the allowed set must fail"
        );
    });
}
