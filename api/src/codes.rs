//! Every CNI error code lanlink reports, by name: the specification's
//! (1–11 for any verb, 50–51 for STATUS) and lanlink's own (100 and above,
//! the range the specification leaves to plugins).
//!
//! The agent puts one of these in [`crate::ApiError::code`]; the plugin
//! passes it on in its error output, or picks one itself. Neither side writes
//! a bare number.

/// Incompatible CNI version (spec): the netconf's `cniVersion`, or a verb the
/// version predates.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in the network configuration (spec).
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist (spec).
pub const UNKNOWN_CONTAINER: u32 = 3;
/// A `CNI_*` environment variable is missing or malformed (spec).
pub const INVALID_ENV: u32 = 4;
/// I/O failure, e.g. reading stdin (spec).
pub const IO: u32 = 5;
/// Failed to decode content: the netconf or a request is not the JSON
/// expected (spec).
pub const DECODE: u32 = 6;
/// Invalid network config: a known key has a wrong value (spec).
pub const INVALID_CONFIG: u32 = 7;
/// Transient; the runtime should retry later (spec).
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin cannot serve ADD, e.g. the agent is unreachable (spec).
pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
/// STATUS: the agent is up but cannot serve ADD yet (spec).
pub const LIMITED_CONNECTIVITY: u32 = 51;
/// No DHCP lease could be obtained (no server, NAK, pool exhausted).
pub const DHCP_FAILED: u32 = 100;
/// Netlink work (veth, address, route) failed.
pub const NETLINK: u32 = 101;
/// eBPF map or program work failed.
pub const DATAPLANE: u32 = 102;
/// CHECK found the attachment missing or different from what the agent made.
pub const CHECK_FAILED: u32 = 103;
/// The agent or plugin failed in a way not listed above.
pub const INTERNAL: u32 = 999;
