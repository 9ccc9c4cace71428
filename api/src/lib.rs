//! The contract between the lanlink agent (`lanlinkd`) and its clients (the
//! CNI plugin, the agent's CLI, tests): every type that crosses the agent's
//! Unix socket ([`types`]), one constant per route ([`routes`]), every CNI
//! error code by name ([`codes`]), and the validated values inside requests
//! ([`newtypes`]). With the `client` feature, also the socket's HTTP client
//! ([`client`]).
//!
//! Neither binary imports the other: both depend on this crate. The agent's
//! state file has its own versioned types and does not reuse these.

pub mod codes;
pub mod del_queue;
pub mod newtypes;
pub mod routes;
pub mod types;

#[cfg(feature = "client")]
pub mod client;

pub use newtypes::{
    CidrError, DhcpOption, DhcpOptionError, Ipv4Cidr, MAX_OPTION_LEN, Mac, MacError,
    RESERVED_OPTION_CODES,
};
pub use types::{
    AddressError, ApiError, AttachmentConfig, AttachmentId, AttachmentRequest, AttachmentResult,
    DhcpConfig, DhcpEvents, DhcpStats, Dns, EndpointInfo, FlowRow, GcRequest, GcResponse, Identity,
    Interface, IpConfig, Ipv6Iid, Ipv6Mode, LeaseInfo, Mode, PodIdentity, PortSecurity, Route,
    StatsRow, StatusResponse, result_ip,
};

/// Default path of the agent's socket.
pub const DEFAULT_SOCKET: &str = "/run/lanlink/lanlink.sock";
