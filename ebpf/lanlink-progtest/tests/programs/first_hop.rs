//! Cases for the first-hop guards of `from_pod` (issue 12): DHCP snooping,
//! the IPv6 source guard, RA guard and DHCPv6-Shield, the 802.1 control
//! groups, storm control, and the per-endpoint drop counters and monitor
//! events every drop leaves.

use lanlink_common::{DropEvent, EndpointGuard};
use lanlink_progtest::frames::{
    ALL_NODES, ALL_NODES_MAC, ETH_P_IP, IPPROTO_ICMPV6, NEXTHDR_DEST, NEXTHDR_FRAGMENT,
    NEXTHDR_HOP, icmpv6, ipv6, ipv6_frame, link_local, nd_target,
};

use super::*;

/// DHCP server and client ports.
const BOOTPS: u16 = 67;
const BOOTPC: u16 = 68;
const DHCPOFFER: u8 = 2;
const DHCPRELEASE: u8 = 7;

/// A global address in the lab's IPv6 range.
fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0, 2]);
    a[15] = last;
    a
}

/// The solicited-node group of `addr` and its MAC.
fn solicited_node(addr: [u8; 16]) -> ([u8; 16], [u8; 6]) {
    let mut g = [0u8; 16];
    g[..2].copy_from_slice(&[0xff, 0x02]);
    g[11] = 1;
    g[12] = 0xff;
    g[13..].copy_from_slice(&addr[13..]);
    (g, [0x33, 0x33, 0xff, addr[13], addr[14], addr[15]])
}

/// A BOOTP datagram from pod `n` at `saddr` to `daddr`, between `sport`
/// and `dport`, as a broadcast frame.
fn bootp_from_pod(n: u8, saddr: [u8; 4], sport: u16, dport: u16, bootp: &[u8]) -> Vec<u8> {
    let ip = frames::ipv4(
        saddr,
        [255; 4],
        IPPROTO_UDP,
        &frames::udp(sport, dport, bootp),
    );
    frames::eth(BROADCAST, pod_mac(n), ETH_P_IP, &ip)
}

/// Pod `n`'s duplicate address detection for `target`.
fn dad(n: u8, target: [u8; 16]) -> Vec<u8> {
    let (group, group_mac) = solicited_node(target);
    let ip = ipv6(
        [0; 16],
        group,
        IPPROTO_ICMPV6,
        &icmpv6(135, &nd_target(target)),
    );
    ipv6_frame(group_mac, pod_mac(n), &ip)
}

/// A neighbour advertisement from `src_mac`/`saddr` for `target`, to all nodes.
fn na(src_mac: [u8; 6], saddr: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let ip = ipv6(
        saddr,
        ALL_NODES,
        IPPROTO_ICMPV6,
        &icmpv6(136, &nd_target(target)),
    );
    ipv6_frame(ALL_NODES_MAC, src_mac, &ip)
}

/// An ICMPv6 echo request from pod `n` at `saddr` to all nodes.
fn ping6_from_pod(n: u8, saddr: [u8; 16]) -> Vec<u8> {
    let ip = ipv6(
        saddr,
        ALL_NODES,
        IPPROTO_ICMPV6,
        &icmpv6(128, &[0, 1, 0, 1]),
    );
    ipv6_frame(ALL_NODES_MAC, pod_mac(n), &ip)
}

/// A router advertisement from pod `n`'s link-local address, optionally
/// behind `ext` extension headers.
fn ra_from_pod(n: u8, ext: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    let mut nh = IPPROTO_ICMPV6;
    for &h in ext.iter().rev() {
        let mut hdr = frames::ext_header(nh);
        hdr.extend_from_slice(&payload);
        payload = hdr;
        nh = h;
    }
    payload.extend_from_slice(&icmpv6(134, &[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]));
    let ip = ipv6(link_local(pod_mac(n)), ALL_NODES, nh, &payload);
    ipv6_frame(ALL_NODES_MAC, pod_mac(n), &ip)
}

/// Re-registers pod `n` with `flags`.
fn reregister(lab: &mut Lab, n: u8, flags: u32) {
    let ep = endpoint(lab, n, flags);
    lab.harness.add_endpoint(&ep).unwrap();
}

pub(super) fn dhcp_server_messages_need_the_switch(lab: &mut Lab) {
    register(lab);
    let offer = frames::dhcp(2, [0x02, 9, 9, 9, 9, 9], [198, 18, 0, 99], DHCPOFFER);
    let frame = bootp_from_pod(1, pod_ip(1), BOOTPS, BOOTPC, &offer);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::DhcpServer.slot()])
        .assert_redirects(&[]);
    // A BOOTREPLY from another port is a server message too.
    let frame = bootp_from_pod(1, pod_ip(1), 4000, BOOTPC, &offer);
    lab.run_on(Program::FromPod, &frame, lab.pod(1))
        .assert_only_counted(&[DropReason::DhcpServer.slot()]);
    // With portSecurity.dhcpServer the OFFER goes out like any broadcast.
    reregister(
        lab,
        1,
        endpoint_flags::AGENT_DHCP | endpoint_flags::DHCP_SERVER,
    );
    let frame = bootp_from_pod(1, pod_ip(1), BOOTPS, BOOTPC, &offer);
    lab.run_on(Program::FromPod, &frame, lab.pod(1))
        .assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::Flood.slot()]);
    // ... but only from its own address.
    let frame = bootp_from_pod(1, [198, 18, 0, 1], BOOTPS, BOOTPC, &offer);
    lab.run_on(Program::FromPod, &frame, lab.pod(1))
        .assert_only_counted(&[DropReason::SpoofIp.slot()]);
}

pub(super) fn pod_whose_lease_the_agent_holds_sends_no_dhcp(lab: &mut Lab) {
    register(lab);
    let discover = frames::dhcp(1, pod_mac(1), [0; 4], frames::DHCPDISCOVER);
    let frame = bootp_from_pod(1, [0; 4], BOOTPC, BOOTPS, &discover);
    lab.run_on(Program::FromPod, &frame, lab.pod(1))
        .assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::DhcpAgentHeld.slot()])
        .assert_redirects(&[]);
    // A RELEASE of its own lease, unicast to the server, from its address.
    let mut release = frames::dhcp(1, pod_mac(1), [0; 4], DHCPRELEASE);
    release[12..16].copy_from_slice(&pod_ip(1));
    let ip = frames::ipv4(
        pod_ip(1),
        LAN_HOST_IP,
        IPPROTO_UDP,
        &frames::udp(BOOTPC, BOOTPS, &release),
    );
    let frame = frames::eth(LAN_HOST_MAC, pod_mac(1), ETH_P_IP, &ip);
    lab.run_on(Program::FromPod, &frame, lab.pod(1))
        .assert_only_counted(&[DropReason::DhcpAgentHeld.slot()]);
    let drops = lab.harness.endpoint_drops(lab.pod(1).host_ifindex);
    assert_eq!(drops.get(&DropReason::DhcpAgentHeld.slot()), Some(&2));
}

pub(super) fn own_dhcp_pod_asks_only_for_itself(lab: &mut Lab) {
    register(lab);
    let mut ep3 = endpoint(lab, 3, endpoint_flags::OWN_DHCP);
    ep3.ipv4 = [0; 4];
    lab.harness.add_endpoint(&ep3).unwrap();
    // Starvation: a made-up chaddr from the pod's own MAC.
    let discover = frames::dhcp(1, [0x02, 0xde, 0xad, 0, 0, 1], [0; 4], frames::DHCPDISCOVER);
    let frame = bootp_from_pod(3, [0; 4], BOOTPC, BOOTPS, &discover);
    lab.run_on(Program::FromPod, &frame, lab.pod(3))
        .assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::DhcpChaddr.slot()]);
    // Its own chaddr but someone else's hardware client identifier.
    let other_id = [61, 7, 1, 0x02, 0xde, 0xad, 0, 0, 2];
    let discover = frames::dhcp_with(1, pod_mac(3), frames::DHCPDISCOVER, &other_id);
    let frame = bootp_from_pod(3, [0; 4], BOOTPC, BOOTPS, &discover);
    lab.run_on(Program::FromPod, &frame, lab.pod(3))
        .assert_only_counted(&[DropReason::DhcpChaddr.slot()]);
    // Its own chaddr and identifier: out it goes.
    let mut own_id = vec![61, 7, 1];
    own_id.extend_from_slice(&pod_mac(3));
    let discover = frames::dhcp_with(1, pod_mac(3), frames::DHCPDISCOVER, &own_id);
    let frame = bootp_from_pod(3, [0; 4], BOOTPC, BOOTPS, &discover);
    lab.run_on(Program::FromPod, &frame, lab.pod(3))
        .assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::Flood.slot()]);
    // A DUID identifier says nothing about the MAC: allowed (rate-limited).
    let duid = [61, 5, 255, 0, 0, 0, 1];
    let discover = frames::dhcp_with(1, pod_mac(3), frames::DHCPDISCOVER, &duid);
    let frame = bootp_from_pod(3, [0; 4], BOOTPC, BOOTPS, &discover);
    lab.run_on(Program::FromPod, &frame, lab.pod(3))
        .assert_only_counted(&[Verdict::Flood.slot()]);
}

pub(super) fn dhcp_client_messages_are_rate_limited(lab: &mut Lab) {
    register(lab);
    let mut ep3 = endpoint(lab, 3, endpoint_flags::OWN_DHCP);
    ep3.ipv4 = [0; 4];
    lab.harness.add_endpoint(&ep3).unwrap();
    let discover = frames::dhcp(1, pod_mac(3), [0; 4], frames::DHCPDISCOVER);
    let frame = bootp_from_pod(3, [0; 4], BOOTPC, BOOTPS, &discover);
    let (mut sent, mut limited) = (0, 0);
    for _ in 0..40 {
        let run = lab.run_on(Program::FromPod, &frame, lab.pod(3));
        if run.code == tc::SHOT {
            run.assert_only_counted(&[DropReason::DhcpRate.slot()]);
            limited += 1;
        } else {
            sent += 1;
        }
    }
    // A burst of 20 (one more may refill while the runs go on).
    assert!((20..=21).contains(&sent), "{sent} sent, {limited} limited");
    // The other pods' budgets are their own.
    let mut ep2 = endpoint(lab, 2, endpoint_flags::OWN_DHCP);
    ep2.ipv4 = [0; 4];
    lab.harness.add_endpoint(&ep2).unwrap();
    let discover = frames::dhcp(1, pod_mac(2), [0; 4], frames::DHCPDISCOVER);
    let frame = bootp_from_pod(2, [0; 4], BOOTPC, BOOTPS, &discover);
    lab.run_on(Program::FromPod, &frame, lab.pod(2))
        .assert_only_counted(&[Verdict::Flood.slot()]);
}

pub(super) fn frames_to_bridge_control_groups_are_dropped(lab: &mut Lab) {
    register(lab);
    // An STP BPDU (802.3 length + LLC), a pause frame, LLDP.
    for (last, ethertype) in [(0x00, 0x0026), (0x01, 0x8808), (0x0e, 0x88cc)] {
        let frame = frames::eth(
            [0x01, 0x80, 0xc2, 0, 0, last],
            pod_mac(1),
            ethertype,
            &[0x42, 0x42, 0x03, 0, 0, 0, 0, 0],
        );
        lab.run_on(Program::FromPod, &frame, lab.pod(1))
            .assert_code(tc::SHOT)
            .assert_only_counted(&[DropReason::L2Control.slot()])
            .assert_redirects(&[]);
    }
    // 01:80:c2:00:00:10 is an ordinary multicast group.
    let frame = frames::eth([0x01, 0x80, 0xc2, 0, 0, 0x10], pod_mac(1), 0x88b5, &[0; 8]);
    lab.run_on(Program::FromPod, &frame, lab.pod(1))
        .assert_only_counted(&[Verdict::Flood.slot()]);
}

pub(super) fn storm_control_limits_group_frames_before_the_fanout(lab: &mut Lab) {
    register(lab);
    let pod1 = lab.pod(1).host_ifindex;
    // 10 frames/s with bursts of 5: the first 5 of a quick run go.
    lab.harness
        .set_guard(pod1, EndpointGuard::new(10, 5))
        .unwrap();
    let frame = frames::arp_request(pod_mac(1), pod_ip(1), LAN_HOST_IP);
    for i in 0..8 {
        let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
        if i < 5 {
            run.assert_code(tc::REDIRECT)
                .assert_only_counted(&[Verdict::Flood.slot()]);
        } else {
            // Dropped before the fan-out: no clone to any pod.
            run.assert_code(tc::SHOT)
                .assert_only_counted(&[DropReason::Storm.slot()])
                .assert_redirects(&[]);
        }
    }
    // Unicast is not limited, nor is another pod's broadcast.
    let unicast = udp_from_pod(1, LAN_HOST_MAC, LAN_HOST_IP);
    lab.run_on(Program::FromPod, &unicast, lab.pod(1))
        .assert_only_counted(&[Verdict::RedirectUplink.slot()]);
    let frame2 = frames::arp_request(pod_mac(2), pod_ip(2), LAN_HOST_IP);
    lab.run_on(Program::FromPod, &frame2, lab.pod(2))
        .assert_only_counted(&[Verdict::Flood.slot()]);
    // 0 frames/s: unlimited.
    lab.harness
        .set_guard(pod1, EndpointGuard::new(0, 0))
        .unwrap();
    for _ in 0..20 {
        lab.run_on(Program::FromPod, &frame, lab.pod(1))
            .assert_only_counted(&[Verdict::Flood.slot()]);
    }
    assert_eq!(
        lab.harness
            .endpoint_drops(pod1)
            .get(&DropReason::Storm.slot()),
        Some(&3)
    );
}

pub(super) fn ipv6_source_is_the_link_local_or_a_claimed_address(lab: &mut Lab) {
    register(lab);
    let (pod1, pod2) = (lab.pod(1).host_ifindex, lab.pod(2).host_ifindex);
    // The EUI-64 link-local address is always the pod's own.
    lab.run_on(
        Program::FromPod,
        &ping6_from_pod(1, link_local(pod_mac(1))),
        lab.pod(1),
    )
    .assert_code(tc::REDIRECT)
    .assert_only_counted(&[Verdict::Flood.slot()]);
    // Forged: an unclaimed global address, another pod's link-local.
    for forged in [v6(0xbd), link_local(pod_mac(2))] {
        lab.run_on(Program::FromPod, &ping6_from_pod(1, forged), lab.pod(1))
            .assert_code(tc::SHOT)
            .assert_only_counted(&[DropReason::SpoofIp6.slot()])
            .assert_redirects(&[]);
    }
    // Pod 1 claims 2001:2::1 with its DAD solicitation, and then owns it.
    lab.run_on(Program::FromPod, &dad(1, v6(1)), lab.pod(1))
        .assert_code(tc::REDIRECT)
        .assert_counted(Verdict::Ip6Claimed)
        .assert_counted(Verdict::Flood);
    assert_eq!(lab.harness.v6_owner(v6(1)), Some(pod1));
    assert_eq!(lab.harness.guard(pod1).map(|g| g.v6_claims), Some(1));
    lab.run_on(Program::FromPod, &ping6_from_pod(1, v6(1)), lab.pod(1))
        .assert_only_counted(&[Verdict::Flood.slot()]);
    // First come, first served: pod 2 can neither claim it nor use it.
    lab.run_on(Program::FromPod, &dad(2, v6(1)), lab.pod(2))
        .assert_only_counted(&[DropReason::SpoofIp6.slot()]);
    lab.run_on(Program::FromPod, &ping6_from_pod(2, v6(1)), lab.pod(2))
        .assert_only_counted(&[DropReason::SpoofIp6.slot()]);
    assert_eq!(lab.harness.v6_owner(v6(1)), Some(pod1));
    // Neighbour advertisements only for what the pod owns.
    let spoofed = na(pod_mac(2), link_local(pod_mac(2)), v6(1));
    lab.run_on(Program::FromPod, &spoofed, lab.pod(2))
        .assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::NdSpoof.slot()]);
    let own = na(pod_mac(1), v6(1), v6(1));
    lab.run_on(Program::FromPod, &own, lab.pod(1))
        .assert_only_counted(&[Verdict::Flood.slot()]);
    // The unspecified source: DAD and MLD only.
    let mld = ipv6(
        [0; 16],
        [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16],
        IPPROTO_ICMPV6,
        &icmpv6(143, &[0, 0, 0, 0]),
    );
    let frame = ipv6_frame([0x33, 0x33, 0, 0, 0, 0x16], pod_mac(2), &mld);
    lab.run_on(Program::FromPod, &frame, lab.pod(2))
        .assert_only_counted(&[Verdict::Flood.slot()]);
    lab.run_on(Program::FromPod, &ping6_from_pod(2, [0; 16]), lab.pod(2))
        .assert_only_counted(&[DropReason::SpoofIp6.slot()]);
    // A LAN host defends 2001:2::1: pod 1's claim is withdrawn.
    let defence = na(LAN_HOST_MAC, v6(1), v6(1));
    lab.run_on(Program::FromLan, &defence, lab.uplink())
        .assert_only_counted(&[Verdict::Flood.slot()]);
    assert_eq!(lab.harness.v6_owner(v6(1)), None);
    assert_eq!(lab.harness.guard(pod1).map(|g| g.v6_claims), Some(0));
    lab.run_on(Program::FromPod, &ping6_from_pod(1, v6(1)), lab.pod(1))
        .assert_only_counted(&[DropReason::SpoofIp6.slot()]);
    let drops = lab.harness.endpoint_drops(pod2);
    assert_eq!(
        drops.get(&DropReason::NdSpoof.slot()),
        Some(&1),
        "{drops:?}"
    );
}

pub(super) fn ipv6_claims_are_bounded_per_pod(lab: &mut Lab) {
    register(lab);
    for i in 0..lanlink_common::MAX_V6_CLAIMS as u8 {
        lab.run_on(Program::FromPod, &dad(1, v6(0x40 + i)), lab.pod(1))
            .assert_counted(Verdict::Ip6Claimed);
    }
    lab.run_on(Program::FromPod, &dad(1, v6(0x80)), lab.pod(1))
        .assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::Ip6Claims.slot()]);
    assert_eq!(lab.harness.v6_owner(v6(0x80)), None);
    // Its link-local needs no claim.
    lab.run_on(
        Program::FromPod,
        &dad(1, link_local(pod_mac(1))),
        lab.pod(1),
    )
    .assert_only_counted(&[Verdict::Flood.slot()]);
}

pub(super) fn router_advertisements_need_the_switch(lab: &mut Lab) {
    register(lab);
    // Plain, and hidden behind hop-by-hop and destination options (RFC 7113).
    for ext in [&[][..], &[NEXTHDR_HOP, NEXTHDR_DEST][..]] {
        lab.run_on(Program::FromPod, &ra_from_pod(1, ext), lab.pod(1))
            .assert_code(tc::SHOT)
            .assert_only_counted(&[DropReason::RouterAdvert.slot()])
            .assert_redirects(&[]);
    }
    // A redirect.
    let ip = ipv6(
        link_local(pod_mac(1)),
        ALL_NODES,
        IPPROTO_ICMPV6,
        &icmpv6(137, &[0; 36]),
    );
    lab.run_on(
        Program::FromPod,
        &ipv6_frame(ALL_NODES_MAC, pod_mac(1), &ip),
        lab.pod(1),
    )
    .assert_only_counted(&[DropReason::RouterAdvert.slot()]);
    // Too many extension headers to follow: dropped, not passed.
    let ext = [NEXTHDR_DEST; 8];
    lab.run_on(Program::FromPod, &ra_from_pod(1, &ext), lab.pod(1))
        .assert_only_counted(&[DropReason::Ip6Chain.slot()]);
    // A first fragment that ends before the upper-layer header.
    let ip = ipv6(
        link_local(pod_mac(1)),
        ALL_NODES,
        NEXTHDR_FRAGMENT,
        &[IPPROTO_ICMPV6, 0, 0, 1, 0, 0, 0, 7],
    );
    lab.run_on(
        Program::FromPod,
        &ipv6_frame(ALL_NODES_MAC, pod_mac(1), &ip),
        lab.pod(1),
    )
    .assert_only_counted(&[DropReason::Ip6Chain.slot()]);
    // With portSecurity.routerAdvertisements the RA goes out.
    reregister(
        lab,
        1,
        endpoint_flags::AGENT_DHCP | endpoint_flags::ROUTER_ADVERT,
    );
    lab.run_on(Program::FromPod, &ra_from_pod(1, &[]), lab.pod(1))
        .assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::Flood.slot()]);
}

pub(super) fn dhcpv6_server_messages_need_the_switch(lab: &mut Lab) {
    register(lab);
    let advertise = |n: u8, sport: u16, dport: u16| {
        let ip = ipv6(
            link_local(pod_mac(n)),
            ALL_NODES,
            IPPROTO_UDP,
            &frames::udp(sport, dport, &[2, 0, 0, 1]),
        );
        ipv6_frame(ALL_NODES_MAC, pod_mac(n), &ip)
    };
    lab.run_on(Program::FromPod, &advertise(1, 547, 546), lab.pod(1))
        .assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::Dhcp6Server.slot()]);
    // A client's Solicit is fine.
    lab.run_on(Program::FromPod, &advertise(1, 546, 547), lab.pod(1))
        .assert_only_counted(&[Verdict::Flood.slot()]);
    reregister(
        lab,
        2,
        endpoint_flags::AGENT_DHCP | endpoint_flags::DHCP_SERVER,
    );
    lab.run_on(Program::FromPod, &advertise(2, 547, 546), lab.pod(2))
        .assert_only_counted(&[Verdict::Flood.slot()]);
}

pub(super) fn drops_are_counted_per_pod_and_streamed_to_monitor(lab: &mut Lab) {
    register(lab);
    let (pod1, pod2) = (lab.pod(1).host_ifindex, lab.pod(2).host_ifindex);
    let mut spoofed = udp_from_pod(1, LAN_HOST_MAC, LAN_HOST_IP);
    spoofed[6..12].copy_from_slice(&pod_mac(2));
    // No monitor client: counted, but no event.
    lab.run_on(Program::FromPod, &spoofed, lab.pod(1))
        .assert_only_counted(&[DropReason::SpoofMac.slot()]);
    assert!(lab.harness.drop_events().is_empty());
    lab.harness.set_monitor(1).unwrap();
    let forged = udp_from_pod(1, LAN_HOST_MAC, [198, 18, 9, 9]);
    let mut forged_src = forged.clone();
    forged_src[26..30].copy_from_slice(&[198, 18, 7, 7]);
    lab.run_on(Program::FromPod, &forged_src, lab.pod(1))
        .assert_only_counted(&[DropReason::SpoofIp.slot()]);
    lab.run_on(Program::FromPod, &ping6_from_pod(1, v6(0xbd)), lab.pod(1))
        .assert_only_counted(&[DropReason::SpoofIp6.slot()]);
    let events = lab.harness.drop_events();
    assert_eq!(events.len(), 2, "{events:?}");
    let mut saddr = [0u8; 16];
    saddr[..4].copy_from_slice(&[198, 18, 7, 7]);
    let mut daddr = [0u8; 16];
    daddr[..4].copy_from_slice(&[198, 18, 9, 9]);
    assert_eq!(
        events[0],
        DropEvent {
            ifindex: pod1,
            reason: DropReason::SpoofIp.slot().index(),
            dst_mac: LAN_HOST_MAC,
            src_mac: pod_mac(1),
            ethertype: ETH_P_IP.to_be_bytes(),
            ip_version: 4,
            proto: IPPROTO_UDP,
            saddr,
            daddr,
            sport: 40000u16.to_be_bytes(),
            dport: 5000u16.to_be_bytes(),
            len: forged_src.len() as u32,
        }
    );
    assert_eq!(events[1].reason, DropReason::SpoofIp6.slot().index());
    assert_eq!((events[1].ip_version, events[1].saddr), (6, v6(0xbd)));
    // Per pod: pod 1 has its three, pod 2 none.
    let drops = lab.harness.endpoint_drops(pod1);
    assert_eq!(
        drops,
        [
            (DropReason::SpoofMac.slot(), 1),
            (DropReason::SpoofIp.slot(), 1),
            (DropReason::SpoofIp6.slot(), 1)
        ]
        .into_iter()
        .collect()
    );
    assert!(lab.harness.endpoint_drops(pod2).is_empty());
}
