//! Types shared by lanlink's eBPF programs and its userspace agent.
//!
//! Everything here is plain old data: `#[repr(C)]`, fixed-width integers and
//! byte arrays, explicit padding, and a compile-time size check, so the kernel
//! side and the agent agree on the layout byte for byte. Addresses are stored
//! as byte arrays in network order (as they appear on the wire), so neither
//! side ever has to think about host byte order.
//!
//! With the `user` feature, every map type implements `aya::Pod`.
#![no_std]

use core::mem::size_of;

/// Most endpoints (pod interfaces) one node can hold. Sizes the endpoint maps
/// and bounds the broadcast fan-out loop in the from-pod and from-LAN programs.
pub const MAX_ENDPOINTS: u32 = 512;

/// A free slot inside the `FLOOD` list, skipped by the fan-out loop. The
/// agent frees a removed member's slot instead of compacting the list, so a
/// program walking the list while the agent writes it never misses a member
/// that stays (members never move; 0 is only written after the last one).
pub const FLOOD_EMPTY: u32 = u32::MAX;

/// Entries of the LRU flow map of the conntrack-bypass fix.
pub const MAX_FLOWS: u32 = 65_536;

/// Entries of the host-routes LPM trie (service CIDRs, node addresses).
pub const MAX_HOST_ROUTES: u32 = 256;

/// Names of the maps in the eBPF object. The kernel cuts map names at 15
/// bytes, so each stays shorter; the agent pins them under these names.
pub mod map_names {
    /// Endpoints by pod MAC: [`crate::MacKey`] → [`crate::EndpointByMac`].
    pub const EP_BY_MAC: &str = "EP_BY_MAC";
    /// Endpoints by host-veth ifindex: `u32` → [`crate::EndpointByIf`].
    pub const EP_BY_IF: &str = "EP_BY_IF";
    /// Broadcast fan-out members: `u32` slot → host-veth ifindex (0 ends the
    /// list, [`crate::FLOOD_EMPTY`] is a free slot inside it).
    pub const FLOOD: &str = "FLOOD";
    /// Prefixes that go to the node's stack: LPM `[u8; 4]` → `u32` flags.
    pub const HOST_ROUTES: &str = "HOST_ROUTES";
    /// Conntrack-bypass flows: [`crate::FlowKey`] → [`crate::FlowValue`].
    pub const FLOWS: &str = "FLOWS";
    /// Per-CPU counters indexed by [`crate::Verdict`] ([`crate::STATS_SLOTS`]
    /// slots): `u32` → [`crate::Counter`].
    pub const STATS: &str = "STATS";
}

/// Names of the read-only globals the agent sets at load time.
pub mod globals {
    /// `u32`: ifindex of the uplink in the node's namespace.
    pub const UPLINK_IFINDEX: &str = "UPLINK_IFINDEX";
    /// `u32`: bit set of [`crate::config`] flags.
    pub const CONFIG_FLAGS: &str = "CONFIG_FLAGS";
}

/// Bits of the `CONFIG_FLAGS` global.
pub mod config {
    /// The conntrack-bypass fix (F6) is on: flows learnt on to-pod are steered
    /// back through the host stack.
    pub const FLOW_FIX: u32 = 1 << 0;
}

/// Key of `EP_BY_MAC`: a pod's MAC address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MacKey {
    /// The MAC address, as on the wire.
    pub mac: [u8; 6],
    /// Always zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<MacKey>() == 8);

impl MacKey {
    /// The key for `mac`.
    pub const fn new(mac: [u8; 6]) -> Self {
        Self { mac, _pad: [0; 2] }
    }
}

/// Value of `EP_BY_MAC`: where a pod MAC lives on this node.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EndpointByMac {
    /// Ifindex of the pod's host-side veth (host byte order).
    pub ifindex: u32,
    /// The pod's IPv4 address, network order; all zero while it has none.
    pub ipv4: [u8; 4],
    /// [`endpoint_flags`] bits (host byte order).
    pub flags: u32,
}
const _: () = assert!(size_of::<EndpointByMac>() == 12);

/// Value of `EP_BY_IF`: what a host-side veth is allowed to send, and the
/// MAC the ARP responder answers with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EndpointByIf {
    /// The pod interface's MAC address (the only source MAC it may use).
    pub mac: [u8; 6],
    /// The host-side veth's own MAC (answers ARP for the gateway and node IPs).
    pub host_mac: [u8; 6],
    /// The pod's IPv4 address, network order; all zero while it has none.
    pub ipv4: [u8; 4],
    /// [`endpoint_flags`] bits (host byte order).
    pub flags: u32,
}
const _: () = assert!(size_of::<EndpointByIf>() == 20);

/// Bits of an endpoint's `flags`.
pub mod endpoint_flags {
    /// The agent holds the DHCP lease for this endpoint (server replies to it
    /// are for the agent, which reads them on the uplink).
    pub const AGENT_DHCP: u32 = 1 << 0;
    /// The pod runs its own DHCP client (`ipam: none`); its IPv4 source is
    /// not checked against `ipv4` until the agent learns it.
    pub const OWN_DHCP: u32 = 1 << 1;
    /// Secondary attachment (Multus `net1`).
    pub const SECONDARY: u32 = 1 << 2;
    /// The lease expired: the endpoint may only send DHCP.
    pub const EXPIRED: u32 = 1 << 3;
}

/// Key of the conntrack-bypass flow map: the 5-tuple of the *reply* as the
/// pod sends it (source = pod). Addresses and ports in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source IPv4 (the pod), network order.
    pub saddr: [u8; 4],
    /// Destination IPv4 (the client as the pod sees it), network order.
    pub daddr: [u8; 4],
    /// Source port, network order (0 for ICMP).
    pub sport: [u8; 2],
    /// Destination port, network order (ICMP: the echo identifier).
    pub dport: [u8; 2],
    /// IP protocol number.
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FlowKey>() == 16);

/// Value of the flow map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    /// `bpf_ktime_get_ns()` when the flow was last seen from the host stack.
    pub last_seen_ns: u64,
    /// Host-veth ifindex the flow entered the pod through.
    pub ifindex: u32,
    /// Always zero.
    pub _pad: u32,
}
const _: () = assert!(size_of::<FlowValue>() == 16);

/// One counter slot of the `STATS` per-CPU array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (skb length at the hook).
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

macro_rules! verdicts {
    ($( $(#[$doc:meta])* $name:ident = $value:literal, $label:literal, $drop:literal; )*) => {
        /// Every verdict and drop reason of the dataplane, the index into
        /// `STATS`. One table: the eBPF programs count with it, the agent
        /// decodes the counters with it.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Verdict {
            $( $(#[$doc])* $name = $value, )*
        }

        impl Verdict {
            /// All verdicts, in index order.
            pub const ALL: &'static [Verdict] = &[ $( Verdict::$name, )* ];

            /// A stable snake_case label (metrics, CLI).
            pub const fn label(self) -> &'static str {
                match self { $( Verdict::$name => $label, )* }
            }

            /// Whether this verdict drops the frame.
            pub const fn is_drop(self) -> bool {
                match self { $( Verdict::$name => $drop, )* }
            }

            /// The verdict for a `STATS` index.
            pub const fn from_index(index: u32) -> Option<Verdict> {
                match index { $( $value => Some(Verdict::$name), )* _ => None }
            }
        }
    };
}

verdicts! {
    /// Handed to the node's stack (`TC_ACT_OK`): gateway, node and service traffic.
    PassToStack = 0, "pass_to_stack", false;
    /// Unicast from a pod redirected to the uplink.
    RedirectUplink = 1, "redirect_uplink", false;
    /// Unicast delivered into a local pod with `bpf_redirect_peer`.
    RedirectPeer = 2, "redirect_peer", false;
    /// Broadcast or multicast fanned out (counted once per original frame).
    Flood = 3, "flood", false;
    /// ARP request answered in eBPF with the host veth's MAC.
    ArpReply = 4, "arp_reply", false;
    /// Reply of a flow that entered through the host stack, steered back to it (F6).
    FlowToHost = 5, "flow_to_host", false;
    /// A flow learnt on to-pod (frame routed to the pod by the node's stack).
    FlowLearnt = 6, "flow_learnt", false;
    /// Frame on an interface the dataplane does not know; passed to the stack.
    UnknownIf = 7, "unknown_if", false;
    /// Dropped: source MAC is not the endpoint's.
    DropSpoofMac = 8, "drop_spoof_mac", true;
    /// Dropped: source IPv4 is not the endpoint's.
    DropSpoofIp = 9, "drop_spoof_ip", true;
    /// Dropped: ARP with a sender address that is not the endpoint's.
    DropSpoofArp = 10, "drop_spoof_arp", true;
    /// Dropped: truncated or malformed header.
    DropMalformed = 11, "drop_malformed", true;
    /// Dropped: a redirect or clone helper failed.
    DropRedirectFailed = 12, "drop_redirect_failed", true;
    /// Dropped: the endpoint's lease expired and it sent something other than DHCP.
    DropExpired = 13, "drop_expired", true;
    /// A flow could not be recorded in the flow map; the frame was delivered.
    FlowLearnFailed = 14, "flow_learn_failed", false;
    /// A DHCPACK from the LAN taught the dataplane the address of a pod that
    /// runs its own DHCP client (counted besides the frame's own verdict).
    DhcpLearnt = 15, "dhcp_learnt", false;
    /// Dropped: a pod sent a VLAN-tagged frame.
    DropVlan = 16, "drop_vlan", true;
}

/// Number of verdicts (the `STATS` slots in use).
pub const VERDICT_COUNT: u32 = Verdict::ALL.len() as u32;

/// Size of the `STATS` array. Larger than [`VERDICT_COUNT`] so that adding
/// verdicts does not change the pinned map's definition: an upgraded agent
/// re-adopts the old map instead of failing to load next to it.
pub const STATS_SLOTS: u32 = 64;
const _: () = assert!(VERDICT_COUNT <= STATS_SLOTS);

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: all of these are #[repr(C)], contain only integers and byte
    // arrays, and have no implicit padding (checked by the size asserts).
    unsafe impl aya::Pod for MacKey {}
    unsafe impl aya::Pod for EndpointByMac {}
    unsafe impl aya::Pod for EndpointByIf {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for Counter {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_indices_are_dense_and_round_trip() {
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(*v as u32, i as u32, "{v:?} is out of order");
            assert_eq!(Verdict::from_index(i as u32), Some(*v));
        }
        assert_eq!(Verdict::from_index(VERDICT_COUNT), None);
    }

    #[test]
    fn labels_are_unique_snake_case() {
        for (i, a) in Verdict::ALL.iter().enumerate() {
            assert!(
                a.label()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            for b in &Verdict::ALL[i + 1..] {
                assert_ne!(a.label(), b.label());
            }
        }
    }

    #[test]
    fn drop_verdicts_are_named_drop() {
        for v in Verdict::ALL {
            assert_eq!(v.is_drop(), v.label().starts_with("drop_"), "{v:?}");
        }
    }

    #[test]
    fn map_names_fit_the_kernel_limit() {
        use map_names::*;
        for name in [EP_BY_MAC, EP_BY_IF, FLOOD, HOST_ROUTES, FLOWS, STATS] {
            assert!(name.len() < 16, "{name} is longer than 15 bytes");
        }
    }

    #[test]
    fn layouts_match_the_kernel_side() {
        let ep = EndpointByIf {
            mac: [2, 0, 0, 0, 0, 1],
            host_mac: [2, 0, 0, 0, 0, 2],
            ipv4: [198, 18, 0, 10],
            flags: endpoint_flags::AGENT_DHCP,
        };
        // SAFETY: EndpointByIf is repr(C) with no padding.
        let bytes: [u8; 20] = unsafe { core::mem::transmute(ep) };
        assert_eq!(&bytes[0..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&bytes[6..12], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(&bytes[12..16], &[198, 18, 0, 10]);
        assert_eq!(u32::from_ne_bytes(bytes[16..20].try_into().unwrap()), 1);
        assert_eq!(core::mem::offset_of!(FlowKey, proto), 12);
        assert_eq!(MacKey::new([1, 2, 3, 4, 5, 6]).mac, [1, 2, 3, 4, 5, 6]);
    }
}
