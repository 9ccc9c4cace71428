//! The lanlink CNI plugin library: netconf parsing, the agent API types and client.
pub mod api;
