//! Cases for the neighbour responder of `from_pod` (issue 16, the ARP
//! responder's IPv6 twin): a pod's neighbour solicitation for a node IPv6
//! address in `HOST_ADDRS6` comes back as the advertisement of the host
//! veth's MAC, byte for byte; everything else about IPv6 goes on as before.

use lanlink_progtest::frames::{
    ALL_NODES, ALL_NODES_MAC, ETH_P_IPV6, IPPROTO_ICMPV6, NEXTHDR_DEST, ext_header,
    icmpv6_checksum, ipv6, ipv6_frame, link_local, with_icmpv6_checksum,
};

use super::*;

/// A node address (what the agent puts in `HOST_ADDRS6`).
const NODE_ADDR: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x01];
/// Another node address, and one that is not the node's.
const NODE_ADDR_2: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x02];
const LAN_ADDR: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x01];
/// A global address pod 1 claims with its duplicate address detection.
const POD1_ADDR: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x11];

/// The solicited-node group of `addr` and its MAC.
fn solicited(addr: [u8; 16]) -> ([u8; 16], [u8; 6]) {
    let mut g = [0u8; 16];
    g[..2].copy_from_slice(&[0xff, 0x02]);
    g[11] = 1;
    g[12] = 0xff;
    g[13..].copy_from_slice(&addr[13..]);
    (g, [0x33, 0x33, 0xff, addr[13], addr[14], addr[15]])
}

/// A neighbour solicitation from pod `n` at `saddr` for `target`, with
/// `options` after the target, to `target`'s solicited-node group (or, with
/// `unicast`, to `target` at the host veth's MAC: a reachability probe);
/// checksum filled in.
fn ns(n: u8, saddr: [u8; 16], target: [u8; 16], options: &[u8], unicast: bool) -> Vec<u8> {
    let (group, group_mac) = solicited(target);
    let (daddr, dmac) = if unicast {
        (target, host_mac(n))
    } else {
        (group, group_mac)
    };
    let mut msg = vec![135, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&target);
    msg.extend_from_slice(options);
    let msg = with_icmpv6_checksum(saddr, daddr, msg);
    ipv6_frame(dmac, pod_mac(n), &ipv6(saddr, daddr, IPPROTO_ICMPV6, &msg))
}

/// The source link-layer address option of pod `n` (RFC 4861 4.6.1).
fn sllao(n: u8) -> Vec<u8> {
    let mut o = vec![1, 1];
    o.extend_from_slice(&pod_mac(n));
    o
}

/// The advertisement the responder must write for pod `n` asking from
/// `saddr` about `target`, built here field by field from RFC 4861 4.4.
fn expected_na(n: u8, saddr: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let mut msg = vec![136, 0, 0, 0];
    // Solicited and Override; not Router.
    msg.extend_from_slice(&[0x60, 0, 0, 0]);
    msg.extend_from_slice(&target);
    // Target link-layer address option: type 2, 1 × 8 bytes.
    msg.extend_from_slice(&[2, 1]);
    msg.extend_from_slice(&host_mac(n));
    let msg = with_icmpv6_checksum(target, saddr, msg);
    ipv6_frame(
        pod_mac(n),
        host_mac(n),
        &ipv6(target, saddr, IPPROTO_ICMPV6, &msg),
    )
}

/// Checks every field of the advertisement in `data` on its own, as a
/// pod's stack would read it (a second reading of the bytes besides the
/// comparison with [`expected_na`]).
#[track_caller]
fn assert_is_na(data: &[u8], n: u8, saddr: [u8; 16], target: [u8; 16]) {
    assert_eq!(data.len(), 14 + 40 + 32, "frame length");
    assert_eq!(&data[0..6], &pod_mac(n), "eth dst: the asking pod");
    assert_eq!(&data[6..12], &host_mac(n), "eth src: the host veth");
    assert_eq!(&data[12..14], &ETH_P_IPV6.to_be_bytes(), "EtherType");
    assert_eq!(data[14] >> 4, 6, "IP version");
    assert_eq!(&data[18..20], &32u16.to_be_bytes(), "payload length");
    assert_eq!(data[20], IPPROTO_ICMPV6, "next header");
    assert_eq!(data[21], 255, "hop limit");
    assert_eq!(&data[22..38], &target, "IPv6 source: the target");
    assert_eq!(&data[38..54], &saddr, "IPv6 destination: the asker");
    let icmp = &data[54..];
    assert_eq!((icmp[0], icmp[1]), (136, 0), "type, code");
    assert_eq!(icmp[4], 0x60, "flags: S and O, not R");
    assert_eq!(&icmp[5..8], &[0, 0, 0], "reserved");
    assert_eq!(&icmp[8..24], &target, "target");
    assert_eq!((icmp[24], icmp[25]), (2, 1), "target link-layer option");
    assert_eq!(&icmp[26..32], &host_mac(n), "the host veth's MAC");
    assert_eq!(
        icmpv6_checksum(target, saddr, icmp),
        0,
        "ICMPv6 checksum (written {:02x}{:02x})",
        icmp[2],
        icmp[3]
    );
}

/// Registers pods 1 and 2 and the node's two IPv6 addresses.
fn setup(lab: &mut Lab) {
    register(lab);
    lab.harness.add_host_addr6(NODE_ADDR).unwrap();
    lab.harness.add_host_addr6(NODE_ADDR_2).unwrap();
}

pub(super) fn ns_for_a_node_address_is_answered_with_host_veth_mac(lab: &mut Lab) {
    setup(lab);
    let pod1 = lab.pod(1).host_ifindex;
    let ll = link_local(pod_mac(1));
    // Address resolution from the link-local address, with the source
    // link-layer option (86 bytes: rewritten in place, same length).
    let frame = ns(1, ll, NODE_ADDR, &sllao(1), false);
    assert_eq!(frame.len(), 86);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::NdReply.slot()])
        .assert_redirects(&[(REDIRECT, pod1)]);
    assert_is_na(&run.data, 1, ll, NODE_ADDR);
    assert_eq!(run.data, expected_na(1, ll, NODE_ADDR));

    // From a global address the pod claimed, without the option (78 bytes:
    // grown), as a unicast reachability probe to the host veth's MAC.
    lab.run_on(Program::FromPod, &dad_ns(1, POD1_ADDR), lab.pod(1))
        .assert_counted(Verdict::Ip6Claimed);
    let frame = ns(1, POD1_ADDR, NODE_ADDR_2, &[], true);
    assert_eq!(frame.len(), 78);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_code(tc::REDIRECT)
        .assert_only_counted(&[Verdict::NdReply.slot()])
        .assert_redirects(&[(REDIRECT, pod1)]);
    assert_is_na(&run.data, 1, POD1_ADDR, NODE_ADDR_2);
    assert_eq!(run.data, expected_na(1, POD1_ADDR, NODE_ADDR_2));

    // With more options than the answer has room for (the source option
    // and a nonce, RFC 3971 5.3.2: 94 bytes): cut to the 86 of the answer.
    let mut options = sllao(1);
    options.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
    let frame = ns(1, ll, NODE_ADDR, &options, false);
    assert_eq!(frame.len(), 94);
    let run = lab.run_on(Program::FromPod, &frame, lab.pod(1));
    run.assert_only_counted(&[Verdict::NdReply.slot()])
        .assert_redirects(&[(REDIRECT, pod1)]);
    assert_eq!(run.data, expected_na(1, ll, NODE_ADDR));

    // Pod 2 gets its own host veth's MAC, back into pod 2.
    let ll2 = link_local(pod_mac(2));
    let run = lab.run_on(
        Program::FromPod,
        &ns(2, ll2, NODE_ADDR, &sllao(2), false),
        lab.pod(2),
    );
    run.assert_only_counted(&[Verdict::NdReply.slot()])
        .assert_redirects(&[(REDIRECT, lab.pod(2).host_ifindex)]);
    assert_eq!(run.data, expected_na(2, ll2, NODE_ADDR));
}

/// Pod `n`'s duplicate address detection for `target` (source `::`).
fn dad_ns(n: u8, target: [u8; 16]) -> Vec<u8> {
    ns(n, [0; 16], target, &[], false)
}

/// Asserts that `frame` from pod 1 went on unanswered and untouched: flooded
/// to pod 2 and the uplink (a group frame) with `also` counted besides.
#[track_caller]
fn assert_flooded(lab: &Lab, frame: &[u8], also: &[StatSlot]) {
    let run = lab.run_on(Program::FromPod, frame, lab.pod(1));
    let mut slots = vec![Verdict::Flood.slot()];
    slots.extend_from_slice(also);
    run.assert_code(tc::REDIRECT)
        .assert_only_counted(&slots)
        .assert_redirects(&[
            (CLONE, lab.pod(2).host_ifindex),
            (REDIRECT, lab.uplink().host_ifindex),
        ]);
    assert_eq!(run.data, frame, "an unanswered solicitation is untouched");
}

pub(super) fn ns_the_responder_must_not_answer_goes_on_as_before(lab: &mut Lab) {
    setup(lab);
    let ll = link_local(pod_mac(1));
    // Positive control: this lab answers a listed address.
    lab.run_on(
        Program::FromPod,
        &ns(1, ll, NODE_ADDR, &sllao(1), false),
        lab.pod(1),
    )
    .assert_only_counted(&[Verdict::NdReply.slot()]);

    // An address that is not the node's: the LAN host answers it.
    assert_flooded(lab, &ns(1, ll, LAN_ADDR, &sllao(1), false), &[]);
    // Duplicate address detection of a node address: not answered, and
    // refused by the source guard (a node address is never a pod's claim).
    lab.run_on(Program::FromPod, &dad_ns(1, NODE_ADDR), lab.pod(1))
        .assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::SpoofIp6.slot()])
        .assert_redirects(&[]);
    // A hop limit below 255: forwarded, so invalid (RFC 4861 7.1.1).
    let mut forwarded = ns(1, ll, NODE_ADDR_2, &sllao(1), false);
    forwarded[14 + 7] = 254;
    assert_flooded(lab, &forwarded, &[]);
    // A code other than 0.
    let (group, _) = solicited(NODE_ADDR_2);
    let mut coded = ns(1, ll, NODE_ADDR_2, &sllao(1), false);
    coded[54 + 1] = 1;
    let sum = {
        coded[54 + 2..54 + 4].copy_from_slice(&[0, 0]);
        icmpv6_checksum(ll, group, &coded[54..])
    };
    coded[54 + 2..54 + 4].copy_from_slice(&sum.to_be_bytes());
    assert_flooded(lab, &coded, &[]);
    // Behind an extension header: left to the usual path.
    let plain = ns(1, ll, NODE_ADDR_2, &sllao(1), false);
    let mut payload = ext_header(IPPROTO_ICMPV6);
    payload.extend_from_slice(&plain[54..]);
    let ext = ipv6_frame(
        plain[0..6].try_into().unwrap(),
        pod_mac(1),
        &ipv6(ll, group, NEXTHDR_DEST, &payload),
    );
    assert_flooded(lab, &ext, &[]);
    // From an address the pod does not own: the source guard drops it.
    let spoofed = ns(1, LAN_ADDR, NODE_ADDR_2, &sllao(1), false);
    lab.run_on(Program::FromPod, &spoofed, lab.pod(1))
        .assert_code(tc::SHOT)
        .assert_only_counted(&[DropReason::SpoofIp6.slot()])
        .assert_redirects(&[]);
    // Another pod's link-local, too.
    let spoofed = ns(1, link_local(pod_mac(2)), NODE_ADDR_2, &sllao(1), false);
    lab.run_on(Program::FromPod, &spoofed, lab.pod(1))
        .assert_only_counted(&[DropReason::SpoofIp6.slot()]);
    // An advertisement for a node address from a pod is spoofing, not a
    // question (the guard, unchanged).
    let na = ipv6(
        ll,
        ALL_NODES,
        IPPROTO_ICMPV6,
        &frames::icmpv6(136, &frames::nd_target(NODE_ADDR_2)),
    );
    lab.run_on(
        Program::FromPod,
        &ipv6_frame(ALL_NODES_MAC, pod_mac(1), &na),
        lab.pod(1),
    )
    .assert_only_counted(&[DropReason::NdSpoof.slot()]);
    // The map decides: once the agent removes the address, it goes on.
    lab.harness.remove_host_addr6(NODE_ADDR).unwrap();
    assert_flooded(lab, &ns(1, ll, NODE_ADDR, &sllao(1), false), &[]);
}
