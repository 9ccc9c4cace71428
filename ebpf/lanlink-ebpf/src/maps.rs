//! The maps and read-only globals. Map names are the statics' names; they
//! must equal `lanlink_common::map_names` (the agent pins them by those names).

use aya_ebpf::{
    Global,
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    macros::btf_map,
};
use lanlink_common::{
    Counter, DropEvent, EndpointByIf, EndpointByMac, EndpointDrops, EndpointGuard, FlowKey,
    FlowValue, Ipv6Key, MAX_ENDPOINTS, MAX_FLOWS, MAX_HOST_ADDRS6, MAX_HOST_ROUTES, MAX_V6_OWNERS,
    MacKey, RedirectLog, STATS_SLOTS,
};

const EPS: usize = MAX_ENDPOINTS as usize;

/// Pod MAC → where it lives.
#[btf_map]
pub(crate) static EP_BY_MAC: HashMap<MacKey, EndpointByMac, EPS> = HashMap::new();

/// Host-veth ifindex → the pod behind it.
#[btf_map]
pub(crate) static EP_BY_IF: HashMap<u32, EndpointByIf, EPS> = HashMap::new();

/// Broadcast fan-out: host-veth ifindexes from slot 0; 0 ends the list and
/// `FLOOD_EMPTY` (`0xffffffff`) is a free slot inside it. Members never move,
/// so a walk racing the agent's writes never misses one that stays.
#[btf_map]
pub(crate) static FLOOD: Array<u32, EPS> = Array::new();

/// Prefixes whose traffic goes to the node's stack (service CIDRs, node IPs).
#[btf_map]
pub(crate) static HOST_ROUTES: LpmTrie<[u8; 4], u32, { MAX_HOST_ROUTES as usize }> = LpmTrie::new();

/// Flows that reached a pod through the node's stack (conntrack-bypass fix).
#[btf_map]
pub(crate) static FLOWS: LruHashMap<FlowKey, FlowValue, { MAX_FLOWS as usize }> = LruHashMap::new();

/// Packets and bytes per `StatSlot` (verdict or drop reason), per CPU.
#[btf_map]
pub(crate) static STATS: PerCpuArray<Counter, { STATS_SLOTS as usize }> = PerCpuArray::new();

/// Host-veth ifindex → the endpoint's first-hop limits and their state.
#[btf_map]
pub(crate) static EP_GUARD: HashMap<u32, EndpointGuard, EPS> = HashMap::new();

/// Host-veth ifindex → that endpoint's drops per reason, per CPU. The agent
/// creates the entry when it registers the endpoint; the programs only add.
#[btf_map]
pub(crate) static EP_DROPS: PerCpuHashMap<u32, EndpointDrops, EPS> = PerCpuHashMap::new();

/// IPv6 address → the host-veth ifindex of the endpoint that claimed it
/// first. A plain hash, not an LRU: a claim must never be evicted to make
/// room for another endpoint's (each endpoint's claims are bounded instead).
#[btf_map]
pub(crate) static V6_OWNERS: HashMap<Ipv6Key, u32, { MAX_V6_OWNERS as usize }> = HashMap::new();

/// The node's IPv6 addresses whose neighbour solicitations from a pod
/// `from_pod` answers itself (`crate::nd`); the value is unused (1). Written
/// only by the agent, as a whole set.
#[btf_map]
pub(crate) static HOST_ADDRS6: HashMap<Ipv6Key, u8, { MAX_HOST_ADDRS6 as usize }> = HashMap::new();

/// Drop events for `lanlinkd monitor` (64 KiB: 1,024 events).
#[btf_map]
pub(crate) static DROP_EVENTS: RingBuf<DropEvent, { 64 * 1024 }> = RingBuf::new();

/// `[0]`: the number of monitor clients; events are written only while it
/// is non-zero.
#[btf_map]
pub(crate) static MONITOR: Array<u32, 1> = Array::new();

/// Ifindex of the uplink, set by the agent at load time.
#[unsafe(no_mangle)]
pub(crate) static UPLINK_IFINDEX: Global<u32> = Global::new(0);

/// `lanlink_common::config` bits, set by the agent at load time.
#[unsafe(no_mangle)]
pub(crate) static CONFIG_FLAGS: Global<u32> = Global::new(0);

/// Non-zero only under the `BPF_PROG_TEST_RUN` harness: record redirects in
/// `REDIRECT_LOG` (see `crate::redirect`).
#[unsafe(no_mangle)]
pub(crate) static RECORD_REDIRECTS: Global<u32> = Global::new(0);

/// Test-only: the redirects asked for since the harness cleared it. Never
/// written in production (`RECORD_REDIRECTS` is 0 there).
#[btf_map]
pub(crate) static REDIRECT_LOG: PerCpuArray<RedirectLog, 1> = PerCpuArray::new();
