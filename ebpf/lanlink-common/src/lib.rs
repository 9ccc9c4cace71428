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

/// Entries of `HOST_ADDRS6`: the node's IPv6 addresses the neighbour
/// responder answers for.
pub const MAX_HOST_ADDRS6: u32 = 64;

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
    /// First-hop guard of each endpoint, by host-veth ifindex: `u32` →
    /// [`crate::EndpointGuard`] (storm and DHCP rate state, IPv6 claims).
    pub const EP_GUARD: &str = "EP_GUARD";
    /// Drops per endpoint, per CPU: host-veth ifindex `u32` →
    /// [`crate::EndpointDrops`] (packets per `STATS` slot).
    pub const EP_DROPS: &str = "EP_DROPS";
    /// IPv6 addresses claimed by endpoints (first come, first served):
    /// [`crate::Ipv6Key`] → host-veth ifindex `u32`.
    pub const V6_OWNERS: &str = "V6_OWNERS";
    /// The node's IPv6 addresses the neighbour responder of `from_pod`
    /// answers a pod's solicitation for (the IPv6 twin of the ARP
    /// responder's `HOST_ROUTES`): [`crate::Ipv6Key`] → `u8` (always 1).
    pub const HOST_ADDRS6: &str = "HOST_ADDRS6";
    /// Drop events for `lanlinkd monitor`: a ring buffer of
    /// [`crate::DropEvent`], written only while `MONITOR[0]` is non-zero.
    pub const DROP_EVENTS: &str = "DROP_EVENTS";
    /// `u32` array of one entry: the number of `lanlinkd monitor` clients
    /// (the programs write `DROP_EVENTS` only while it is non-zero).
    pub const MONITOR: &str = "MONITOR";
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
    /// The pod may answer DHCP and DHCPv6 (`portSecurity.dhcpServer`: a
    /// Pi-hole or AdGuard pod serving the LAN).
    pub const DHCP_SERVER: u32 = 1 << 4;
    /// The pod may send IPv6 router advertisements and redirects
    /// (`portSecurity.routerAdvertisements`).
    pub const ROUTER_ADVERT: u32 = 1 << 5;
}

/// Most IPv6 addresses one endpoint may claim (besides its EUI-64
/// link-local, which is always its own).
pub const MAX_V6_CLAIMS: u32 = 16;

/// Entries of `V6_OWNERS`: every endpoint's claims.
pub const MAX_V6_OWNERS: u32 = MAX_ENDPOINTS * MAX_V6_CLAIMS;

/// DHCP client messages a pod with its own client may send: one per
/// `DHCP_INTERVAL_NS` on average (10/s) ...
pub const DHCP_INTERVAL_NS: u64 = 100_000_000;
/// ... with bursts of up to 20 (a GCRA window of 20 intervals).
pub const DHCP_WINDOW_NS: u64 = 20 * DHCP_INTERVAL_NS;

/// Value of `EP_GUARD`: an endpoint's first-hop limits (written by the agent)
/// and their running state (written by the programs).
///
/// Both rate limits are GCRA (the "virtual scheduling" form of a token
/// bucket): a frame is allowed when the theoretical arrival time `tat`,
/// moved on by one interval, stays within `window` of now. One `u64` of
/// state per limit; updates from two CPUs may race, which can let a frame or
/// two more through, never fewer (as with Cilium's rate limiter).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EndpointGuard {
    /// Nanoseconds per broadcast/multicast frame (1e9 / pps); 0 = unlimited.
    pub bcast_interval_ns: u64,
    /// Burst window in nanoseconds (burst × interval).
    pub bcast_window_ns: u64,
    /// Program state: theoretical arrival time of the next group frame.
    pub bcast_tat: u64,
    /// Program state: theoretical arrival time of the next DHCP client message.
    pub dhcp_tat: u64,
    /// Program state: IPv6 addresses this endpoint claimed in `V6_OWNERS`.
    pub v6_claims: u32,
    /// Always zero.
    pub _pad: u32,
}
const _: () = assert!(size_of::<EndpointGuard>() == 40);

impl EndpointGuard {
    /// The limits for `pps` frames per second with bursts of `burst`
    /// (`pps` 0: unlimited), with fresh state.
    pub const fn new(pps: u32, burst: u32) -> Self {
        let interval = if pps == 0 {
            0
        } else {
            1_000_000_000 / pps as u64
        };
        let burst = if burst == 0 { 1 } else { burst as u64 };
        Self {
            bcast_interval_ns: interval,
            bcast_window_ns: interval * burst,
            bcast_tat: 0,
            dhcp_tat: 0,
            v6_claims: 0,
            _pad: 0,
        }
    }
}

/// Value of `EP_DROPS`: one CPU's dropped packets of one endpoint, indexed
/// by `STATS` slot (only drop slots are ever non-zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointDrops {
    /// Packets per `STATS` index.
    pub packets: [u64; STATS_SLOTS as usize],
}
const _: () = assert!(size_of::<EndpointDrops>() == 8 * STATS_SLOTS as usize);

impl Default for EndpointDrops {
    fn default() -> Self {
        Self {
            packets: [0; STATS_SLOTS as usize],
        }
    }
}

/// Key of `V6_OWNERS` and `HOST_ADDRS6`: an IPv6 address, as on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Ipv6Key {
    /// The address.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<Ipv6Key>() == 16);

/// One dropped frame, as `lanlinkd monitor` shows it. Addresses as on the
/// wire; IPv4 addresses fill the first 4 bytes of `saddr`/`daddr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DropEvent {
    /// Ifindex the frame arrived on (a host veth, or the uplink).
    pub ifindex: u32,
    /// The [`DropReason`]'s `STATS` index.
    pub reason: u32,
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// EtherType, as on the wire.
    pub ethertype: [u8; 2],
    /// 4 or 6 when the addresses below were read, else 0.
    pub ip_version: u8,
    /// IP protocol (IPv6: the upper-layer header found), 0 if unknown.
    pub proto: u8,
    /// Source address.
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
    /// Source port (TCP/UDP) or ICMP type/code, as on the wire.
    pub sport: [u8; 2],
    /// Destination port, as on the wire.
    pub dport: [u8; 2],
    /// Frame length.
    pub len: u32,
}
const _: () = assert!(size_of::<DropEvent>() == 64);

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
        /// A pod claimed an IPv6 address with a duplicate-address-detection
        /// solicitation (counted besides the frame's own verdict).
        Ip6Claimed = 18, "ip6_claimed";
        /// A pod's neighbour solicitation for a node IPv6 address answered in
        /// eBPF with the host veth's MAC (the ARP responder's IPv6 twin).
        NdReply = 31, "nd_reply";
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
        /// counted here besides the frame's own verdict), or resizing or
        /// rewriting a frame into the neighbour responder's advertisement did.
        RedirectFailed => DropRedirectFailed = 12, "drop_redirect_failed";
        /// Dropped: the endpoint's lease expired and it sent something other than DHCP.
        Expired => DropExpired = 13, "drop_expired";
        /// Dropped: a pod sent a VLAN-tagged frame.
        Vlan => DropVlan = 16, "drop_vlan";
        /// Dropped: a frame from a host veth the agent has not registered
        /// (not yet, or not any more): without an endpoint nothing can be
        /// checked, so nothing may pass.
        UnknownIf => DropUnknownIf = 17, "drop_unknown_if";
        /// Dropped: a DHCP or BOOTP server message (UDP source port 67, or a
        /// BOOTREPLY) from a pod without `portSecurity.dhcpServer`.
        DhcpServer => DropDhcpServer = 19, "drop_dhcp_server";
        /// Dropped: DHCP from a pod whose lease the agent holds (the agent
        /// speaks for it; a RELEASE or DISCOVER of its own would undo that).
        DhcpAgentHeld => DropDhcpAgentHeld = 20, "drop_dhcp_agent_held";
        /// Dropped: a DHCP client message whose `chaddr` (or hardware client
        /// identifier) is not the pod's MAC (starvation).
        DhcpChaddr => DropDhcpChaddr = 21, "drop_dhcp_chaddr";
        /// Dropped: DHCP client messages over 10/s (burst 20) from one pod.
        DhcpRate => DropDhcpRate = 22, "drop_dhcp_rate";
        /// Dropped: an IPv6 source the pod does not own (not its link-local,
        /// not claimed first by its duplicate address detection), or a DAD
        /// claim of an address another endpoint holds.
        SpoofIp6 => DropSpoofIp6 = 23, "drop_spoof_ip6";
        /// Dropped: an ICMPv6 router advertisement or redirect from a pod
        /// without `portSecurity.routerAdvertisements`.
        RouterAdvert => DropRouterAdvert = 24, "drop_router_advert";
        /// Dropped: a DHCPv6 server message (UDP source port 547) from a pod
        /// without `portSecurity.dhcpServer`.
        Dhcp6Server => DropDhcp6Server = 25, "drop_dhcp6_server";
        /// Dropped: a neighbour advertisement for an address the pod does not own.
        NdSpoof => DropNdSpoof = 26, "drop_nd_spoof";
        /// Dropped: a frame to a link-local control group 01:80:c2:00:00:0X
        /// (STP, pause, LACP, 802.1X, LLDP).
        L2Control => DropL2Control = 27, "drop_l2_control";
        /// Dropped: broadcast or multicast over the pod's storm limit.
        Storm => DropStorm = 28, "drop_storm";
        /// Dropped: a claim of more IPv6 addresses than one pod may hold.
        Ip6Claims => DropIp6Claims = 29, "drop_ip6_claims";
        /// Dropped: an IPv6 header chain the programs cannot follow to its
        /// upper layer (too many extension headers, or a first fragment
        /// without the upper-layer header: RA guard evasion, RFC 7113).
        Ip6Chain => DropIp6Chain = 30, "drop_ip6_chain";
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
    unsafe impl aya::Pod for EndpointGuard {}
    unsafe impl aya::Pod for EndpointDrops {}
    unsafe impl aya::Pod for Ipv6Key {}
    unsafe impl aya::Pod for DropEvent {}
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
            (18, "ip6_claimed"),
            (19, "drop_dhcp_server"),
            (20, "drop_dhcp_agent_held"),
            (21, "drop_dhcp_chaddr"),
            (22, "drop_dhcp_rate"),
            (23, "drop_spoof_ip6"),
            (24, "drop_router_advert"),
            (25, "drop_dhcp6_server"),
            (26, "drop_nd_spoof"),
            (27, "drop_l2_control"),
            (28, "drop_storm"),
            (29, "drop_ip6_claims"),
            (30, "drop_ip6_chain"),
            (31, "nd_reply"),
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
            let label = a.label();
            assert!(
                label.starts_with(|c: char| c.is_ascii_lowercase())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{label}"
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
            EP_GUARD,
            EP_DROPS,
            V6_OWNERS,
            HOST_ADDRS6,
            DROP_EVENTS,
            MONITOR,
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
