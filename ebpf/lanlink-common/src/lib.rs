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
    /// Per-CPU counters indexed by [`crate::StatSlot`] ([`crate::STATS_SLOTS`]
    /// slots): `u32` → [`crate::Counter`].
    pub const STATS: &str = "STATS";
    /// Test-only, never pinned: per-CPU [`crate::RedirectLog`] at index 0,
    /// written only when the `RECORD_REDIRECTS` global is non-zero.
    pub const REDIRECT_LOG: &str = "REDIRECT_LOG";
}

/// Names of the read-only globals the agent sets at load time.
pub mod globals {
    /// `u32`: ifindex of the uplink in the node's namespace.
    pub const UPLINK_IFINDEX: &str = "UPLINK_IFINDEX";
    /// `u32`: bit set of [`crate::config`] flags.
    pub const CONFIG_FLAGS: &str = "CONFIG_FLAGS";
    /// `u32`: non-zero makes the programs record every redirect and clone in
    /// `REDIRECT_LOG`. Only the `BPF_PROG_TEST_RUN` harness sets it: a redirect
    /// target is kept in per-CPU kernel state a test run cannot read. The
    /// agent leaves it 0, and the verifier then removes the recording code
    /// (the global is a frozen read-only constant).
    pub const RECORD_REDIRECTS: &str = "RECORD_REDIRECTS";
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

/// Kinds of [`RedirectRecord`].
pub mod redirect_kind {
    /// `bpf_redirect` (egress of `ifindex`).
    pub const REDIRECT: u32 = 1;
    /// `bpf_redirect_peer` (ingress of `ifindex`'s peer).
    pub const REDIRECT_PEER: u32 = 2;
    /// `bpf_clone_redirect` (a copy to `ifindex`; the frame goes on).
    pub const CLONE: u32 = 3;
}

/// One redirect or clone a program asked for (test-only recording).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RedirectRecord {
    /// A [`redirect_kind`] constant.
    pub kind: u32,
    /// Target ifindex (host byte order).
    pub ifindex: u32,
    /// The helper's `flags` argument (host byte order).
    pub flags: u32,
    /// The helper's return value, as `i32` (0 or `TC_ACT_REDIRECT` on success).
    pub ret: i32,
}
const _: () = assert!(size_of::<RedirectRecord>() == 16);

/// Records kept per run in [`RedirectLog`]; further ones are only counted.
pub const REDIRECT_LOG_LEN: usize = 16;

/// The value of `REDIRECT_LOG`: the redirects of the runs since the harness
/// last cleared it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RedirectLog {
    /// Redirects and clones asked for (may exceed [`REDIRECT_LOG_LEN`]).
    pub len: u32,
    /// Always zero.
    pub _pad: u32,
    /// The first [`REDIRECT_LOG_LEN`] of them.
    pub records: [RedirectRecord; REDIRECT_LOG_LEN],
}
const _: () = assert!(size_of::<RedirectLog>() == 8 + 16 * REDIRECT_LOG_LEN);

/// Generates the one table of `STATS` slots: [`Verdict`] (the frame goes
/// on), [`DropReason`] (the frame is dropped) and [`StatSlot`] (either, as
/// userspace decodes the counters). Each entry's number is its `STATS` index
/// and its label is the metrics/CLI label; both are stable (pinned counters
/// outlive an upgrade), so entries are only ever added, and a retired index is
/// never reused.
macro_rules! stat_slots {
    (
        verdicts {
            $( $(#[$vdoc:meta])* $v:ident = $vi:literal, $vl:literal; )*
        }
        drops {
            $( $(#[$ddoc:meta])* $d:ident => $ds:ident = $di:literal, $dl:literal; )*
        }
    ) => {
        /// What happened to a frame that goes on (or an event counted besides
        /// a frame's fate). The discriminant is the `STATS` index.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Verdict {
            $( $(#[$vdoc])* $v = $vi, )*
        }

        /// Why a frame was dropped (`TC_ACT_SHOT`). The discriminant is the
        /// `STATS` index.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum DropReason {
            $( $(#[$ddoc])* $d = $di, )*
        }

        /// One slot of `STATS`: a [`Verdict`] or a [`DropReason`], as
        /// userspace decodes the counters. The discriminant is the index.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum StatSlot {
            $( $(#[$vdoc])* $v = $vi, )*
            $( $(#[$ddoc])* $ds = $di, )*
        }

        impl Verdict {
            /// Every verdict, in declaration order.
            pub const ALL: &'static [Verdict] = &[ $( Verdict::$v, )* ];

            /// Its `STATS` slot.
            pub const fn slot(self) -> StatSlot {
                match self { $( Verdict::$v => StatSlot::$v, )* }
            }
        }

        impl DropReason {
            /// Every drop reason, in declaration order.
            pub const ALL: &'static [DropReason] = &[ $( DropReason::$d, )* ];

            /// Its `STATS` slot.
            pub const fn slot(self) -> StatSlot {
                match self { $( DropReason::$d => StatSlot::$ds, )* }
            }
        }

        impl StatSlot {
            /// Number of slots in use.
            const COUNT: usize = [ $( $vi, )* $( $di, )* ].len();

            /// A stable snake_case label (metrics, CLI); drop reasons start
            /// with `drop_`.
            pub const fn label(self) -> &'static str {
                match self {
                    $( StatSlot::$v => $vl, )*
                    $( StatSlot::$ds => $dl, )*
                }
            }

            /// Whether the slot counts dropped frames.
            pub const fn is_drop(self) -> bool {
                match self {
                    $( StatSlot::$v => false, )*
                    $( StatSlot::$ds => true, )*
                }
            }

            /// The slot at `STATS` index `index`, `None` for an unused one.
            // Two entries with one index would make an arm unreachable:
            // refuse to compile instead.
            #[deny(unreachable_patterns)]
            pub const fn from_index(index: u32) -> Option<StatSlot> {
                match index {
                    $( $vi => Some(StatSlot::$v), )*
                    $( $di => Some(StatSlot::$ds), )*
                    _ => None,
                }
            }
        }
    };
}

stat_slots! {
    verdicts {
        /// Handed to the node's stack (`TC_ACT_OK`): gateway, node and service
        /// traffic, LAN frames for no local pod, and to-pod frames.
        PassToStack = 0, "pass_to_stack";
        /// Unicast from a pod redirected to the uplink.
        RedirectUplink = 1, "redirect_uplink";
        /// Unicast delivered into a local pod with `bpf_redirect_peer`.
        RedirectPeer = 2, "redirect_peer";
        /// Broadcast or multicast fanned out (counted once per original frame).
        Flood = 3, "flood";
        /// ARP request answered in eBPF with the host veth's MAC.
        ArpReply = 4, "arp_reply";
        /// Reply of a flow that entered through the host stack, steered back to it (F6).
        FlowToHost = 5, "flow_to_host";
        /// A flow learnt on to-pod (frame routed to the pod by the node's stack).
        FlowLearnt = 6, "flow_learnt";
        // 7 was `unknown_if` (a frame from an unregistered veth, passed to the
        // stack); such frames are now dropped as `drop_unknown_if` (17).
        /// A flow could not be recorded in the flow map; the frame was delivered.
        FlowLearnFailed = 14, "flow_learn_failed";
        /// A DHCPACK from the LAN taught the dataplane the address of a pod that
        /// runs its own DHCP client (counted besides the frame's own verdict).
        DhcpLearnt = 15, "dhcp_learnt";
    }
    drops {
        /// Dropped: source MAC is not the endpoint's.
        SpoofMac => DropSpoofMac = 8, "drop_spoof_mac";
        /// Dropped: source IPv4 is not the endpoint's.
        SpoofIp => DropSpoofIp = 9, "drop_spoof_ip";
        /// Dropped: ARP with a sender address that is not the endpoint's.
        SpoofArp => DropSpoofArp = 10, "drop_spoof_arp";
        /// Dropped: truncated or malformed header.
        Malformed => DropMalformed = 11, "drop_malformed";
        /// Dropped: a redirect or clone helper failed (a failed flood clone is
        /// counted here besides the frame's own verdict).
        RedirectFailed => DropRedirectFailed = 12, "drop_redirect_failed";
        /// Dropped: the endpoint's lease expired and it sent something other than DHCP.
        Expired => DropExpired = 13, "drop_expired";
        /// Dropped: a pod sent a VLAN-tagged frame.
        Vlan => DropVlan = 16, "drop_vlan";
        /// Dropped: a frame from a host veth the agent has not registered
        /// (not yet, or not any more): without an endpoint nothing can be
        /// checked, so nothing may pass.
        UnknownIf => DropUnknownIf = 17, "drop_unknown_if";
    }
}

impl StatSlot {
    /// Every slot in use, in index order (userspace decodes `STATS` with it).
    pub const ALL: &'static [StatSlot] = &{
        let mut all = [StatSlot::PassToStack; StatSlot::COUNT];
        let mut n = 0;
        let mut i = 0;
        while i < STATS_SLOTS {
            if let Some(slot) = StatSlot::from_index(i) {
                all[n] = slot;
                n += 1;
            }
            i += 1;
        }
        // Every entry has an index below STATS_SLOTS (and no two share one).
        assert!(n == StatSlot::COUNT);
        all
    };

    /// Its index in `STATS`.
    pub const fn index(self) -> u32 {
        self as u32
    }
}

impl From<Verdict> for StatSlot {
    fn from(v: Verdict) -> Self {
        v.slot()
    }
}

impl From<DropReason> for StatSlot {
    fn from(d: DropReason) -> Self {
        d.slot()
    }
}

/// Size of the `STATS` array. Larger than the slots in use so that adding
/// entries does not change the pinned map's definition: an upgraded agent
/// re-adopts the old map instead of failing to load next to it.
pub const STATS_SLOTS: u32 = 64;

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
    unsafe impl aya::Pod for RedirectLog {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_in_index_order() {
        let mut last = None;
        for s in StatSlot::ALL {
            assert_eq!(StatSlot::from_index(s.index()), Some(*s));
            assert!(last < Some(s.index()), "{s:?} is out of order");
            last = Some(s.index());
        }
        for i in 0..STATS_SLOTS {
            if let Some(s) = StatSlot::from_index(i) {
                assert!(StatSlot::ALL.contains(&s));
            }
        }
        assert_eq!(StatSlot::from_index(STATS_SLOTS), None);
        assert_eq!(
            StatSlot::ALL.len(),
            Verdict::ALL.len() + DropReason::ALL.len()
        );
    }

    #[test]
    fn verdicts_and_drop_reasons_keep_their_slots() {
        for v in Verdict::ALL {
            assert_eq!(v.slot().index(), *v as u32);
            assert!(!v.slot().is_drop(), "{v:?}");
        }
        for d in DropReason::ALL {
            assert_eq!(d.slot().index(), *d as u32);
            assert!(d.slot().is_drop(), "{d:?}");
        }
    }

    #[test]
    fn pinned_indices_and_labels_are_stable() {
        // Pinned counters and dashboards outlive an upgrade: these never change.
        let fixed = [
            (0, "pass_to_stack"),
            (1, "redirect_uplink"),
            (2, "redirect_peer"),
            (3, "flood"),
            (4, "arp_reply"),
            (5, "flow_to_host"),
            (6, "flow_learnt"),
            (8, "drop_spoof_mac"),
            (9, "drop_spoof_ip"),
            (10, "drop_spoof_arp"),
            (11, "drop_malformed"),
            (12, "drop_redirect_failed"),
            (13, "drop_expired"),
            (14, "flow_learn_failed"),
            (15, "dhcp_learnt"),
            (16, "drop_vlan"),
            (17, "drop_unknown_if"),
        ];
        for (i, label) in fixed {
            assert_eq!(StatSlot::from_index(i).map(StatSlot::label), Some(label));
        }
        // Retired: `unknown_if` (passed to the stack) became drop_unknown_if.
        assert_eq!(StatSlot::from_index(7), None);
    }

    #[test]
    fn labels_are_unique_snake_case() {
        for (i, a) in StatSlot::ALL.iter().enumerate() {
            assert!(
                a.label()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            for b in &StatSlot::ALL[i + 1..] {
                assert_ne!(a.label(), b.label());
            }
        }
    }

    #[test]
    fn drop_slots_are_named_drop() {
        for s in StatSlot::ALL {
            assert_eq!(s.is_drop(), s.label().starts_with("drop_"), "{s:?}");
        }
    }

    #[test]
    fn map_names_fit_the_kernel_limit() {
        use map_names::*;
        for name in [
            EP_BY_MAC,
            EP_BY_IF,
            FLOOD,
            HOST_ROUTES,
            FLOWS,
            STATS,
            REDIRECT_LOG,
        ] {
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
