//! The agent's DHCPv4 client, speaking for every pod on the node's LAN.
//!
//! Pods get their addresses from the LAN's own DHCP server. The agent asks on
//! each pod's behalf *from the node*: frames leave the uplink through a
//! packet socket with the pod's MAC as Ethernet source and chaddr, so DHCP
//! works before the pod has an address, whatever runs in the pod, and a
//! RELEASE can still be sent after the pod's veth is gone (DESIGN.md, "DHCP").
//!
//! - [`DhcpClient`]: acquire, renew, rebind and release over the uplink.
//! - [`Lease`], [`LeaseMachine`]: what a pod holds and when to renew it.
//! - [`stable_identity`], [`random_identity`], [`sanitize_hostname`]: who
//!   the client says the pod is.
//! - [`persist`]: crash-safe JSON files (the `dhcp_probe` example's leases).
//! - [`ArpProbe`]: the conflict check of every acquired address (DECLINE).

mod arp;
mod client;
mod error;
mod identity;
mod lease;
#[cfg(test)]
mod lease_props;
pub mod persist;
pub(crate) mod socket;
mod wire;

pub use arp::ArpProbe;
pub use client::{
    DhcpClient, DhcpConfig, DhcpEvents, DhcpStats, LeaseRequest, OnRequest, RequestHook,
};
pub use error::{DhcpError, Mac};
pub use identity::{random_identity, sanitize_hostname, stable_identity};
pub use lease::{Lease, LeaseAction, LeaseMachine, LeasePhase, RenewPolicy};
#[doc(hidden)]
pub use wire::{FuzzReply, fuzz_reply};
pub use wire::{decode_classless_routes, encode_classless_routes};
