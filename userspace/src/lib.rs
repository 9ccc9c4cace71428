//! lanlinkd, the lanlink node agent: loads and attaches the eBPF dataplane,
//! creates pod veths, leases addresses from the LAN's DHCP server on each
//! pod's behalf, writes pod addresses and routes, persists its state, and
//! serves the CNI plugin over HTTP on a Unix socket.

pub mod agent;
pub mod api;
pub mod cli;
pub mod dataplane;
pub mod dhcp;
pub mod doctor;
pub mod firewall;
pub mod flows;
pub mod ipv6;
pub mod metrics;
pub mod monitor;
pub mod netlink;
pub mod netlink6;
pub mod paths;
pub mod state;
mod sys;
