//! Every path the agent uses, in one place.

use lanlink_common::map_names;

/// Default pin directory for maps and links (one per node).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lanlink";
/// Default state directory (endpoints and leases).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lanlink";
/// Default API socket.
pub const DEFAULT_SOCKET: &str = lanlink_api::DEFAULT_SOCKET;
/// Subdirectory of the pin directory holding pinned TC links.
pub const LINKS_DIR: &str = "links";
/// State file inside the state directory.
pub const STATE_FILE: &str = "endpoints.json";
/// The maps pinned by name under the pin directory.
pub const PINNED_MAPS: [&str; 12] = [
    map_names::EP_BY_MAC,
    map_names::EP_BY_IF,
    map_names::FLOOD,
    map_names::HOST_ROUTES,
    map_names::FLOWS,
    map_names::STATS,
    map_names::EP_GUARD,
    map_names::EP_DROPS,
    map_names::V6_OWNERS,
    map_names::HOST_ADDRS6,
    map_names::MONITOR,
    map_names::DROP_EVENTS,
];
