//! Cases for `from_pod`, `from_lan` and `to_pod` under `BPF_PROG_TEST_RUN`
//! (see the `lanlink_progtest` crate docs for how to add one). Every case is
//! its own `#[test]`; `every_verdict_and_drop_reason_has_a_case` runs them
//! all again and checks that together they assert every `STATS` slot.
//!
//! Needs root and `LANLINK_EBPF_OBJ` (set by `cargo xtask test`).

use std::collections::BTreeSet;
use std::time::Duration;

use lanlink_common::{
    DropReason, EndpointByIf, FLOOD_EMPTY, FlowKey, MacKey, StatSlot, Verdict, config,
    endpoint_flags,
    redirect_kind::{CLONE, REDIRECT, REDIRECT_PEER},
};
use lanlink_progtest::{
    Endpoint, Lab, LoadOptions, Program, frames,
    frames::{BROADCAST, IPPROTO_TCP, IPPROTO_UDP},
    in_lab,
    netns::Capture,
    tc,
};

#[path = "programs/first_hop.rs"]
mod first_hop;
use first_hop::*;
#[path = "programs/nd.rs"]
mod nd;
#[path = "programs/random_frames.rs"]
mod random_frames;
use nd::*;

/// Pod veths in every lab: pods 1 and 2 are registered by [`register`],
/// pod 3 only where a case says so.
const PODS: usize = 3;

const GATEWAY: [u8; 4] = [169, 254, 1, 1];
/// A host on the LAN, and the LAN router's MAC.
const LAN_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 0x01];
const LAN_HOST_IP: [u8; 4] = [198, 18, 1, 1];
const CLIENT_IP: [u8; 4] = [198, 18, 5, 5];

/// Pod `n`'s MAC, host-veth MAC and address.
fn pod_mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x01, n]
}
fn host_mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x0f, n]
}
fn pod_ip(n: u8) -> [u8; 4] {
    [198, 18, 0, 10 + n]
}

/// Pod `n` as the agent registers it, with `flags`.
fn endpoint(lab: &Lab, n: u8, flags: u32) -> Endpoint {
    Endpoint {
        ifindex: lab.pod(usize::from(n)).host_ifindex,
        mac: pod_mac(n),
        host_mac: host_mac(n),
        ipv4: pod_ip(n),
        flags,
    }
}

/// A client's TCP SYN to pod `n`'s port 80, as the host stack delivers it
/// (after DNAT) through pod `n`'s host veth.
fn syn_to_pod(n: u8) -> Vec<u8> {
    frames::ipv4_frame(
        pod_mac(n),
        host_mac(n),
        CLIENT_IP,
        pod_ip(n),
        IPPROTO_TCP,
        &frames::tcp(40000, 80, 0x02),
    )
}

/// Registers pods 1 and 2 (agent-held DHCP leases).
fn register(lab: &mut Lab) {
    for n in [1, 2] {
        let ep = endpoint(lab, n, endpoint_flags::AGENT_DHCP);
        lab.harness.add_endpoint(&ep).unwrap();
    }
}

/// A UDP datagram from pod `n` to `dst_mac`/`daddr`.
fn udp_from_pod(n: u8, dst_mac: [u8; 6], daddr: [u8; 4]) -> Vec<u8> {
    frames::ipv4_frame(
        dst_mac,
        pod_mac(n),
        pod_ip(n),
        daddr,
        IPPROTO_UDP,
        &frames::udp(40000, 5000, b"hello"),
    )
}

// --- from_pod ---------------------------------------------------------------

fn pod_unicast_to_lan_leaves_through_uplink(lab: &mut Lab) {
    register(lab);
    let frame = udp_from_pod(1, LAN_HOST_MAC, LAN_HOST_IP);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::RedirectUplink.slot()])
        .assert_redirects(&[(REDIRECT, lab.uplink().host_ifindex)]);
    assert_eq!(run.data, frame, "forwarding must not touch the frame");
}

fn pod_unicast_to_local_pod_goes_straight_in(lab: &mut Lab) {
    register(lab);
    let frame = udp_from_pod(1, pod_mac(2), pod_ip(2));
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::RedirectPeer.slot()])
        .assert_redirects(&[(REDIRECT_PEER, lab.pod(2).host_ifindex)]);
    assert_eq!(run.data, frame);
}

fn pod_broadcast_floods_other_pods_and_uplink(lab: &mut Lab) {
    register(lab);
    let ep3 = endpoint(lab, 3, endpoint_flags::AGENT_DHCP);
    lab.harness.add_endpoint(&ep3).unwrap();
    // A freed slot inside the list is skipped; members after it still count.
    lab.harness.push_flood(FLOOD_EMPTY).unwrap();
    let captures: Vec<Capture> = (1..=3)
        .map(|n| Capture::open(lab.pod(n).peer_ifindex).unwrap())
        .collect();
    // ARP for a LAN address: not answered, so flooded.
    let frame = frames::arp_request(pod_mac(1), pod_ip(1), LAN_HOST_IP);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::Flood.slot()])
        .assert_redirects(&[
            (CLONE, lab.pod(2).host_ifindex),
            (CLONE, lab.pod(3).host_ifindex),
            (REDIRECT, lab.uplink().host_ifindex),
        ]);
    let wait = Duration::from_secs(1);
    assert_eq!(
        captures[0].count_equal(&frame, 0, Duration::ZERO),
        0,
        "sender got its own frame"
    );
    assert_eq!(
        captures[1].count_equal(&frame, 1, wait),
        1,
        "pod 2 missed the flood"
    );
    assert_eq!(
        captures[2].count_equal(&frame, 1, wait),
        1,
        "pod 3 missed the flood"
    );
}

fn failed_flood_clone_is_counted_and_the_rest_still_go(lab: &mut Lab) {
    register(lab);
    // An ifindex that does not exist (a veth gone before the agent freed its slot).
    lab.harness.push_flood(9999).unwrap();
    let frame = frames::arp_request(pod_mac(1), pod_ip(1), LAN_HOST_IP);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::Flood.slot(), DropReason::RedirectFailed.slot()]);
    let kinds: Vec<_> = run
        .redirects
        .iter()
        .map(|r| (r.kind, r.ifindex, r.ret < 0))
        .collect();
    assert_eq!(
        kinds,
        [
            (CLONE, lab.pod(2).host_ifindex, false),
            (CLONE, 9999, true),
            (REDIRECT, lab.uplink().host_ifindex, false),
        ]
    );
}

fn arp_for_gateway_is_answered_with_host_veth_mac(lab: &mut Lab) {
    register(lab);
    let frame = frames::arp_request(pod_mac(1), pod_ip(1), GATEWAY);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::ArpReply.slot()])
        .assert_redirects(&[(REDIRECT, lab.pod(1).host_ifindex)]);
    let want = frames::eth(
        pod_mac(1),
        host_mac(1),
        frames::ETH_P_ARP,
        &frames::arp(2, host_mac(1), GATEWAY, pod_mac(1), pod_ip(1)),
    );
    assert_eq!(run.data, want, "ARP reply bytes");
}

fn arp_for_host_route_is_answered_and_others_are_not(lab: &mut Lab) {
    register(lab);
    lab.harness.add_host_route([198, 18, 100, 0], 24).unwrap();
    let frame = frames::arp_request(pod_mac(1), pod_ip(1), [198, 18, 100, 7]);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::ArpReply.slot()]);
    assert_eq!(
        run.data,
        frames::eth(
            pod_mac(1),
            host_mac(1),
            frames::ETH_P_ARP,
            &frames::arp(2, host_mac(1), [198, 18, 100, 7], pod_mac(1), pod_ip(1)),
        )
    );
    // Outside the route: left to the LAN (flooded), not answered.
    let frame = frames::arp_request(pod_mac(1), pod_ip(1), [198, 18, 101, 7]);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_only_counted(&[Verdict::Flood.slot()]);
    assert_eq!(run.data, frame);
}

fn frame_to_host_veth_mac_goes_to_stack(lab: &mut Lab) {
    register(lab);
    let frame = udp_from_pod(1, host_mac(1), [198, 18, 100, 1]);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::OK)
        .assert_only_counted(&[Verdict::PassToStack.slot()])
        .assert_redirects(&[]);
    assert_eq!(run.data, frame);
}

fn learnt_flow_reply_is_steered_back_to_stack(lab: &mut Lab) {
    register(lab);
    // The stack delivers a DNATed SYN to pod 1: to_pod learns the flow.
    let syn = syn_to_pod(1);
    let run = lab.run_on(Program::ToPod, &syn, lab.pod(1));
    run.assert_code(tc::OK)
        .assert_only_counted(&[Verdict::FlowLearnt.slot()]);
    let key = FlowKey {
        saddr: pod_ip(1),
        daddr: CLIENT_IP,
        sport: 80u16.to_be_bytes(),
        dport: 40000u16.to_be_bytes(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    let flow = lab.harness.flows.get(&key, 0).expect("flow learnt");
    assert_eq!(flow.ifindex, lab.pod(1).host_ifindex);
    // Seen again: refreshed in place, still counted as learnt.
    let run = lab.run_on(Program::ToPod, &syn, lab.pod(1));
    run.assert_only_counted(&[Verdict::FlowLearnt.slot()]);

    // The pod's SYN-ACK, addressed to the LAN router's MAC (its default
    // route): steered to the host veth's MAC, into the stack.
    let reply = frames::ipv4_frame(
        LAN_HOST_MAC,
        pod_mac(1),
        pod_ip(1),
        CLIENT_IP,
        IPPROTO_TCP,
        &frames::tcp(80, 40000, 0x12),
    );
    let run = lab.run_on(Program::FromPod, &reply, lab.pod(1));
    run.assert_code(tc::OK)
        .assert_only_counted(&[Verdict::FlowToHost.slot()])
        .assert_redirects(&[]);
    let mut want = reply.clone();
    want[..6].copy_from_slice(&host_mac(1));
    assert_eq!(run.data, want, "only the destination MAC is rewritten");

    // Another flow of the pod's still leaves on L2.
    let other = frames::ipv4_frame(
        LAN_HOST_MAC,
        pod_mac(1),
        pod_ip(1),
        CLIENT_IP,
        IPPROTO_TCP,
        &frames::tcp(81, 40000, 0x12),
    );
    let run = lab.run_on(Program::FromPod, &other, lab.pod(1));
    run.assert_only_counted(&[Verdict::RedirectUplink.slot()]);
}

/// The flow map refuses the entry (here a full plain hash map stands in
/// for it): counted, and the frame is still delivered.
fn failed_flow_learning_is_counted_and_the_frame_still_goes(lab: &mut Lab) {
    let full = LoadOptions {
        full_flows: true,
        ..LoadOptions::default()
    };
    lab.reload(config::FLOW_FIX, full);
    register(lab);
    let syn = syn_to_pod(1);
    let run = lab.run_on(Program::ToPod, &syn, lab.pod(1));
    run.assert_code(tc::OK)
        .assert_only_counted(&[Verdict::FlowLearnFailed.slot()]);
    assert_eq!(run.data, syn, "the frame goes on untouched");
    assert_eq!(lab.harness.flows.keys().count(), 1, "only the filler");
}

fn spoofed_source_mac_is_dropped(lab: &mut Lab) {
    register(lab);
    let mut frame = udp_from_pod(1, LAN_HOST_MAC, LAN_HOST_IP);
    frame[6..12].copy_from_slice(&pod_mac(2));
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::SpoofMac.slot()])
        .assert_redirects(&[]);
}

fn spoofed_source_ip_is_dropped(lab: &mut Lab) {
    register(lab);
    let frame = frames::ipv4_frame(
        LAN_HOST_MAC,
        pod_mac(1),
        pod_ip(2),
        LAN_HOST_IP,
        IPPROTO_UDP,
        &frames::udp(1, 2, b"x"),
    );
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::SpoofIp.slot()]);
}

fn spoofed_arp_sender_is_dropped(lab: &mut Lab) {
    register(lab);
    // Sender IP of another pod (ARP cache poisoning).
    let frame = frames::arp_request(pod_mac(1), pod_ip(2), LAN_HOST_IP);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::SpoofArp.slot()]);
    // Sender MAC inside the ARP that is not the frame's.
    let arp = frames::arp(1, pod_mac(2), pod_ip(1), [0; 6], LAN_HOST_IP);
    let frame = frames::eth(BROADCAST, pod_mac(1), frames::ETH_P_ARP, &arp);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::SpoofArp.slot()]);
    // A probe (sender 0.0.0.0) is fine.
    let frame = frames::arp_request(pod_mac(1), [0; 4], pod_ip(1));
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_only_counted(&[Verdict::Flood.slot()]);
}

fn malformed_headers_are_dropped(lab: &mut Lab) {
    register(lab);
    // ARP cut after 10 bytes. (A test run refuses IPv4 and IPv6 frames
    // shorter than their fixed header with EINVAL, 6.x `bpf_prog_test_run_skb`,
    // so truncation is tested with ARP.)
    let mut frame = frames::arp_request(pod_mac(1), pod_ip(1), GATEWAY);
    frame.truncate(14 + 10);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::Malformed.slot()]);
    // IPv4 header with IHL 4 (shorter than the fixed header).
    let mut frame = udp_from_pod(1, LAN_HOST_MAC, LAN_HOST_IP);
    frame[14] = 0x44;
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::Malformed.slot()]);
    // ARP for another hardware type.
    let mut arp = frames::arp(1, pod_mac(1), pod_ip(1), [0; 6], GATEWAY);
    arp[1] = 6;
    let frame = frames::eth(BROADCAST, pod_mac(1), frames::ETH_P_ARP, &arp);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::Malformed.slot()]);
    // TCP without its ports (header length says 20, nothing follows).
    let mut ip = frames::ipv4(pod_ip(1), LAN_HOST_IP, IPPROTO_TCP, &[]);
    ip[3] = 20;
    let frame = frames::eth(LAN_HOST_MAC, pod_mac(1), frames::ETH_P_IP, &ip);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::Malformed.slot()]);
}

fn vlan_tagged_frame_from_pod_is_dropped(lab: &mut Lab) {
    register(lab);
    let inner = udp_from_pod(1, LAN_HOST_MAC, LAN_HOST_IP);
    let mut payload = vec![0x00, 0x64]; // VID 100
    payload.extend_from_slice(&inner[12..]);
    let frame = frames::eth(LAN_HOST_MAC, pod_mac(1), frames::ETH_P_8021Q, &payload);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::Vlan.slot()])
        .assert_redirects(&[]);
}

fn expired_endpoint_sends_nothing(lab: &mut Lab) {
    register(lab);
    let ep = endpoint(lab, 1, endpoint_flags::AGENT_DHCP | endpoint_flags::EXPIRED);
    lab.harness.add_endpoint(&ep).unwrap();
    let frame = udp_from_pod(1, LAN_HOST_MAC, LAN_HOST_IP);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::Expired.slot()]);
    // Neither ARP (but a probe) nor other EtherTypes.
    let frame = frames::arp_request(pod_mac(1), pod_ip(1), LAN_HOST_IP);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_only_counted(&[DropReason::Expired.slot()]);
    // Neither ARP nor IPv4 (a local experimental EtherType), nor IPv6.
    let frame = frames::eth(LAN_HOST_MAC, pod_mac(1), 0x88b5, &[0; 8]);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_only_counted(&[DropReason::Expired.slot()]);
    let ip = frames::ipv6(
        frames::link_local(pod_mac(1)),
        frames::ALL_NODES,
        frames::IPPROTO_ICMPV6,
        &frames::icmpv6(133, &[0; 4]),
    );
    let frame = frames::ipv6_frame(frames::ALL_NODES_MAC, pod_mac(1), &ip);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_only_counted(&[DropReason::Expired.slot()]);
    // Nor DHCP: the agent, which holds the lease, re-acquires it on the
    // uplink; the pod's own DISCOVER is dropped like any pod's whose lease
    // the agent holds.
    let bootp = frames::dhcp(1, pod_mac(1), [0; 4], frames::DHCPDISCOVER);
    let ip = frames::ipv4([0; 4], [255; 4], IPPROTO_UDP, &frames::udp(68, 67, &bootp));
    let frame = frames::eth(BROADCAST, pod_mac(1), frames::ETH_P_IP, &ip);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::DhcpAgentHeld.slot()]);
}

fn frame_from_unregistered_veth_is_dropped(lab: &mut Lab) {
    register(lab);
    // Pod 3's veth exists but the agent has no endpoint for it (not yet, or
    // no longer): nothing to check its frames against.
    let mut frame = udp_from_pod(3, host_mac(3), [198, 18, 100, 1]);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(3));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::UnknownIf.slot()])
        .assert_redirects(&[]);
    // Whatever it sends, even with a registered pod's addresses.
    frame[6..12].copy_from_slice(&pod_mac(1));
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(3));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::UnknownIf.slot()]);
}

// --- from_lan ---------------------------------------------------------------

fn lan_unicast_to_pod_goes_straight_in(lab: &mut Lab) {
    register(lab);
    let frame = frames::ipv4_frame(
        pod_mac(2),
        LAN_HOST_MAC,
        LAN_HOST_IP,
        pod_ip(2),
        IPPROTO_UDP,
        &frames::udp(5000, 40000, b"hi"),
    );
    let run = lab.run_on(Program::FromLan, &frame, lab.uplink());
    run.assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::RedirectPeer.slot()])
        .assert_redirects(&[(REDIRECT_PEER, lab.pod(2).host_ifindex)]);
    assert_eq!(run.data, frame);
}

fn lan_broadcast_floods_every_pod_and_the_stack(lab: &mut Lab) {
    register(lab);
    let captures: Vec<Capture> = (1..=2)
        .map(|n| Capture::open(lab.pod(n).peer_ifindex).unwrap())
        .collect();
    let frame = frames::arp_request(LAN_HOST_MAC, LAN_HOST_IP, pod_ip(1));
    let run = lab.run_on(Program::FromLan, &frame, lab.uplink());
    run.assert_code(tc::OK)
        .assert_only_counted(&[Verdict::Flood.slot()])
        .assert_redirects(&[
            (CLONE, lab.pod(1).host_ifindex),
            (CLONE, lab.pod(2).host_ifindex),
        ]);
    for (i, c) in captures.iter().enumerate() {
        assert_eq!(
            c.count_equal(&frame, 1, Duration::from_secs(1)),
            1,
            "pod {}",
            i + 1
        );
    }
}

fn lan_unicast_for_no_pod_goes_to_stack(lab: &mut Lab) {
    register(lab);
    let frame = frames::ipv4_frame(
        [0x02, 0, 0, 0, 0xbb, 1],
        LAN_HOST_MAC,
        LAN_HOST_IP,
        [198, 18, 1, 2],
        IPPROTO_UDP,
        &frames::udp(1, 2, b"x"),
    );
    let run = lab.run_on(Program::FromLan, &frame, lab.uplink());
    run.assert_code(tc::OK)
        .assert_only_counted(&[Verdict::PassToStack.slot()])
        .assert_redirects(&[]);
}

fn dhcpack_teaches_own_dhcp_pod_its_address(lab: &mut Lab) {
    register(lab);
    let mut ep = endpoint(lab, 3, endpoint_flags::OWN_DHCP);
    ep.ipv4 = [0; 4];
    lab.harness.add_endpoint(&ep).unwrap();
    // Before: any source address passes.
    let leased = [198, 18, 0, 77];
    let before = frames::ipv4_frame(
        LAN_HOST_MAC,
        pod_mac(3),
        [198, 18, 0, 99],
        LAN_HOST_IP,
        IPPROTO_UDP,
        &frames::udp(1, 2, b"x"),
    );
    let run = lab.run_on(Program::FromPod, &before, lab.pod(3));
    run.assert_only_counted(&[Verdict::RedirectUplink.slot()]);

    let bootp = frames::dhcp(2, pod_mac(3), leased, frames::DHCPACK);
    let ack = frames::ipv4_frame(
        pod_mac(3),
        LAN_HOST_MAC,
        [198, 18, 0, 1],
        leased,
        IPPROTO_UDP,
        &frames::udp(67, 68, &bootp),
    );
    let run = lab.run_on(Program::FromLan, &ack, lab.uplink());
    run.assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::DhcpLearnt.slot(), Verdict::RedirectPeer.slot()])
        .assert_redirects(&[(REDIRECT_PEER, lab.pod(3).host_ifindex)]);
    let by_if: EndpointByIf = lab.harness.ep_by_if.get(&ep.ifindex, 0).unwrap();
    assert_eq!(by_if.ipv4, leased);
    let by_mac = lab
        .harness
        .ep_by_mac
        .get(&MacKey::new(pod_mac(3)), 0)
        .unwrap();
    assert_eq!(by_mac.ipv4, leased);

    // After: only the leased address.
    let run = lab.run_on(Program::FromPod, &before, lab.pod(3));
    run.assert_only_counted(&[DropReason::SpoofIp.slot()]);

    // An ACK for an agent-held endpoint teaches nothing.
    let bootp = frames::dhcp(2, pod_mac(1), [198, 18, 0, 88], frames::DHCPACK);
    let ack = frames::ipv4_frame(
        pod_mac(1),
        LAN_HOST_MAC,
        [198, 18, 0, 1],
        pod_ip(1),
        IPPROTO_UDP,
        &frames::udp(67, 68, &bootp),
    );
    let run = lab.run_on(Program::FromLan, &ack, lab.uplink());
    run.assert_only_counted(&[Verdict::RedirectPeer.slot()]);
}

// --- to_pod -----------------------------------------------------------------

fn to_pod_without_flow_fix_passes(lab: &mut Lab) {
    register(lab);
    let frame = syn_to_pod(1);
    let run = lab.run_on(Program::ToPod, &frame, lab.pod(1));
    run.assert_code(tc::OK)
        .assert_only_counted(&[Verdict::PassToStack.slot()]);
    assert_eq!(run.data, frame);
}

fn to_pod_broadcast_and_malformed_with_flow_fix(lab: &mut Lab) {
    register(lab);
    // Flood clones pass through to_pod too: not flows.
    let frame = frames::arp_request(LAN_HOST_MAC, LAN_HOST_IP, pod_ip(1));
    let run = lab.run_on(Program::ToPod, &frame, lab.pod(1));
    run.assert_code(tc::OK)
        .assert_only_counted(&[Verdict::PassToStack.slot()]);
    // ICMP echo request: learnt with its identifier as both ports.
    let frame = frames::ipv4_frame(
        pod_mac(1),
        host_mac(1),
        CLIENT_IP,
        pod_ip(1),
        frames::IPPROTO_ICMP,
        &frames::icmp_echo(8, 77),
    );
    let run = lab.run_on(Program::ToPod, &frame, lab.pod(1));
    run.assert_only_counted(&[Verdict::FlowLearnt.slot()]);
    let key = FlowKey {
        saddr: pod_ip(1),
        daddr: CLIENT_IP,
        sport: 77u16.to_be_bytes(),
        dport: 77u16.to_be_bytes(),
        proto: frames::IPPROTO_ICMP,
        _pad: [0; 3],
    };
    assert!(lab.harness.flows.get(&key, 0).is_ok(), "ICMP flow learnt");
    // IPv4 with a bad version nibble.
    let frame = frames::eth(pod_mac(1), host_mac(1), frames::ETH_P_IP, &[0x65; 20]);
    let run = lab.run_on(Program::ToPod, &frame, lab.pod(1));
    run.assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::Malformed.slot()]);
}

/// Loaded as the agent loads it (`RECORD_REDIRECTS` = 0), the programs
/// redirect the same and never write the log.
#[test]
fn redirects_are_not_recorded_as_the_agent_loads_it() {
    in_lab(PODS, 0, |lab| {
        let recording_size =
            |lab: &Lab, program| lab.harness.translated_size(program).expect("xlated size");
        let on = [Program::FromPod, Program::FromLan].map(|p| recording_size(lab, p));
        let as_agent = LoadOptions {
            record_redirects: false,
            ..LoadOptions::default()
        };
        lab.reload(0, as_agent);
        register(lab);
        let frame = udp_from_pod(1, pod_mac(2), pod_ip(2));
        let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
        run.assert_code(tc::REDIRECT)
            .assert_only_counted(&[Verdict::RedirectPeer.slot()])
            .assert_redirects(&[]);
        // And the recording costs nothing: the verifier removed it.
        let off = [Program::FromPod, Program::FromLan].map(|p| recording_size(lab, p));
        assert!(
            off.iter().zip(&on).all(|(off, on)| off < on),
            "from_pod, from_lan: {off:?} bytes without recording, {on:?} with"
        );
    });
}

// --- the list ---------------------------------------------------------------

/// A case with the lab's `CONFIG_FLAGS`.
type Case = (&'static str, u32, fn(&mut Lab));

macro_rules! cases {
    ($( $name:ident $(, $flags:expr)? ; )*) => {
        $(
            #[test]
            fn $name() {
                run_case(0 $(| $flags)?, super::$name);
            }
        )*
        const CASES: &[Case] = &[ $( (stringify!($name), 0 $(| $flags)?, super::$name), )* ];
    };
}

/// Runs one case in a fresh lab and returns the slots it asserted.
fn run_case(flags: u32, case: fn(&mut Lab)) -> BTreeSet<StatSlot> {
    in_lab(PODS, flags, |lab| {
        case(lab);
        lab.harness.covered()
    })
}

mod case {
    use super::*;
    cases! {
        pod_unicast_to_lan_leaves_through_uplink;
        pod_unicast_to_local_pod_goes_straight_in;
        pod_broadcast_floods_other_pods_and_uplink;
        failed_flood_clone_is_counted_and_the_rest_still_go;
        arp_for_gateway_is_answered_with_host_veth_mac;
        arp_for_host_route_is_answered_and_others_are_not;
        frame_to_host_veth_mac_goes_to_stack;
        learnt_flow_reply_is_steered_back_to_stack, config::FLOW_FIX;
        failed_flow_learning_is_counted_and_the_frame_still_goes, config::FLOW_FIX;
        spoofed_source_mac_is_dropped;
        spoofed_source_ip_is_dropped;
        spoofed_arp_sender_is_dropped;
        malformed_headers_are_dropped;
        vlan_tagged_frame_from_pod_is_dropped;
        expired_endpoint_sends_nothing;
        frame_from_unregistered_veth_is_dropped;
        lan_unicast_to_pod_goes_straight_in;
        lan_broadcast_floods_every_pod_and_the_stack;
        lan_unicast_for_no_pod_goes_to_stack;
        dhcpack_teaches_own_dhcp_pod_its_address;
        to_pod_without_flow_fix_passes;
        to_pod_broadcast_and_malformed_with_flow_fix, config::FLOW_FIX;
        dhcp_server_messages_need_the_switch;
        pod_whose_lease_the_agent_holds_sends_no_dhcp;
        own_dhcp_pod_asks_only_for_itself;
        dhcp_client_messages_are_rate_limited;
        frames_to_bridge_control_groups_are_dropped;
        storm_control_limits_group_frames_before_the_fanout;
        ipv6_source_is_the_link_local_or_a_claimed_address;
        ipv6_claims_are_bounded_per_pod;
        router_advertisements_need_the_switch;
        dhcpv6_server_messages_need_the_switch;
        drops_are_counted_per_pod_and_streamed_to_monitor;
        ns_for_a_node_address_is_answered_with_host_veth_mac;
        ns_the_responder_must_not_answer_goes_on_as_before;
    }

    /// Slots no test run can reach, with why. Keep this list short.
    const UNREACHABLE: &[(StatSlot, &str)] = &[];

    #[test]
    fn every_verdict_and_drop_reason_has_a_case() {
        let mut covered = BTreeSet::new();
        for (name, flags, case) in CASES {
            eprintln!("case {name}");
            covered.extend(run_case(*flags, *case));
        }
        let missing: Vec<&str> = StatSlot::ALL
            .iter()
            .filter(|s| !covered.contains(s))
            .filter(|s| !UNREACHABLE.iter().any(|(u, _)| u == *s))
            .map(|s| s.label())
            .collect();
        assert!(missing.is_empty(), "no case asserts: {missing:?}");
        for (s, why) in UNREACHABLE {
            assert!(
                !covered.contains(s),
                "{} is reached now ({why}): drop it from UNREACHABLE",
                s.label()
            );
        }
    }
}
