//! The one error type of the DHCP client, [`DhcpError`], and the [`Mac`]
//! wrapper that prints MAC addresses in error messages and logs.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// A MAC address that displays as `02:00:5e:10:00:01`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Everything that can go wrong in the DHCP client, with enough context to
/// end up verbatim in a CNI error: which uplink, which MAC, which server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhcpError {
    /// [`DhcpClient::new`](super::DhcpClient::new) was called outside a tokio runtime.
    #[error("the dhcp client must be created inside a tokio runtime")]
    NoRuntime {
        /// Why tokio found no runtime.
        #[source]
        source: tokio::runtime::TryCurrentError,
    },

    /// The uplink interface does not exist in the calling thread's netns.
    #[error("uplink {uplink:?} not found in this network namespace")]
    UplinkNotFound {
        /// The interface name that was looked up.
        uplink: String,
        /// The error from `if_nametoindex`.
        #[source]
        source: nix::Error,
    },

    /// Creating or configuring the packet socket failed.
    #[error("packet socket on uplink {uplink}: {op} failed")]
    Socket {
        /// The uplink the socket is for.
        uplink: String,
        /// The failing step (`"socket"`, `"SO_ATTACH_FILTER"`, `"bind"`, ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The caller asked for something the client cannot put on the wire.
    #[error("invalid dhcp request for {mac}: {reason}")]
    InvalidRequest {
        /// The pod MAC of the request.
        mac: Mac,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An extra option code collides with one the client manages itself.
    #[error(
        "invalid dhcp request for {mac}: option {code} is set by the client and cannot be overridden"
    )]
    ReservedOption {
        /// The pod MAC of the request.
        mac: Mac,
        /// The offending option code.
        code: u8,
    },

    /// dhcproto refused to encode a message.
    #[error("encoding dhcp {msg_type} for {mac}")]
    Encode {
        /// The pod MAC.
        mac: Mac,
        /// The message being built (`"discover"`, `"request"`, ...).
        msg_type: &'static str,
        /// The encoder's error.
        #[source]
        source: dhcproto::error::EncodeError,
    },

    /// etherparse refused to build the Ethernet/IPv4/UDP frame.
    #[error("building the frame for dhcp {msg_type} of {mac}")]
    Frame {
        /// The pod MAC.
        mac: Mac,
        /// The message being built.
        msg_type: &'static str,
        /// etherparse's error.
        #[source]
        source: etherparse::err::packet::BuildWriteError,
    },

    /// Writing a frame to the packet socket failed.
    #[error("sending dhcp {msg_type} for {mac} on uplink {uplink}")]
    Send {
        /// The uplink.
        uplink: String,
        /// The pod MAC.
        mac: Mac,
        /// The message that was being sent.
        msg_type: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A received frame is not a well-formed DHCP reply. The client counts
    /// and ignores these; the variant is public so tests and tools can
    /// assert on the parser.
    #[error("malformed dhcp packet: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
        /// dhcproto's decode error, when dhcproto found the problem.
        #[source]
        source: Option<dhcproto::error::DecodeError>,
    },

    /// No usable answer before the deadline, or only addresses already in
    /// use. The message says what the client sent and who answered.
    #[error(
        "dhcp {op} for {mac} on uplink {uplink} failed after {:.1}s: {}",
        .elapsed.as_secs_f64(),
        describe_progress(op, .server, .offered, *.naks, *.sent, .declined)
    )]
    Timeout {
        /// `"acquire"`, `"renew"` or `"rebind"`.
        op: &'static str,
        /// The uplink.
        uplink: String,
        /// The pod MAC.
        mac: Mac,
        /// How long the client tried.
        elapsed: Duration,
        /// The last server that answered at all, if any.
        server: Option<Ipv4Addr>,
        /// The last address offered, if any.
        offered: Option<Ipv4Addr>,
        /// How many DHCPNAKs were received.
        naks: u32,
        /// DHCPDISCOVERs (acquire) or DHCPREQUESTs (renew, rebind) sent.
        sent: u32,
        /// Acknowledged addresses declined because they answer ARP (boxed:
        /// errors travel by value through every `Result`).
        declined: Box<[Ipv4Addr]>,
    },

    /// The server refused a renewal or rebinding: the lease is gone.
    #[error(
        "dhcp server {server} refused to extend the lease of {address} for {mac} on uplink {uplink}: {}",
        message.as_deref().unwrap_or("no reason given")
    )]
    Nak {
        /// The uplink.
        uplink: String,
        /// The pod MAC.
        mac: Mac,
        /// The address whose lease was refused.
        address: Ipv4Addr,
        /// The server that sent the DHCPNAK.
        server: Ipv4Addr,
        /// The server's option 56 message, if any.
        message: Option<String>,
    },

    /// A file-system step of persisting or loading state failed.
    #[error("{op} {path}")]
    PersistIo {
        /// What was being done (`"writing"`, `"renaming into"`, ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// State could not be serialised or deserialised.
    #[error("{op} {path} as json")]
    PersistFormat {
        /// `"encoding"` or `"decoding"`.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

impl DhcpError {
    /// Whether the server refused the lease (a DHCPNAK on renew or rebind).
    pub fn is_nak(&self) -> bool {
        matches!(self, DhcpError::Nak { .. })
    }

    /// A [`DhcpError::Malformed`] without an underlying decode error.
    pub(crate) fn malformed(reason: &'static str) -> Self {
        DhcpError::Malformed {
            reason,
            source: None,
        }
    }
}

fn describe_progress(
    op: &str,
    server: &Option<Ipv4Addr>,
    offered: &Option<Ipv4Addr>,
    naks: u32,
    sent: u32,
    declined: &[Ipv4Addr],
) -> String {
    let mut s = match (server, offered) {
        (None, _) if op == "acquire" => format!(
            "no dhcp server answered {sent} dhcpdiscover(s) \
             (no server reachable on the uplink, or its pool is exhausted)"
        ),
        (None, _) => format!("no dhcp server answered {sent} dhcprequest(s)"),
        (Some(server), Some(addr)) => {
            format!("server {server} offered {addr} but did not acknowledge it")
        }
        (Some(server), None) => format!("server {server} answered but no lease was granted"),
    };
    if naks > 0 {
        s.push_str(&format!(" ({naks} nak(s) received)"));
    }
    if !declined.is_empty() {
        let list: Vec<String> = declined.iter().map(ToString::to_string).collect();
        s.push_str(&format!(
            "; declined {}: already in use on the lan",
            list.join(", ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(
        op: &'static str,
        server: Option<Ipv4Addr>,
        offered: Option<Ipv4Addr>,
        declined: Vec<Ipv4Addr>,
    ) -> String {
        DhcpError::Timeout {
            op,
            uplink: "eth0".into(),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            elapsed: Duration::from_millis(3_040),
            server,
            offered,
            naks: 0,
            sent: 4,
            declined: declined.into(),
        }
        .to_string()
    }

    #[test]
    fn timeouts_say_where_what_and_who() {
        let server = Some(Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(
            timeout("acquire", None, None, vec![]),
            "dhcp acquire for 02:00:00:00:00:01 on uplink eth0 failed after 3.0s: \
             no dhcp server answered 4 dhcpdiscover(s) \
             (no server reachable on the uplink, or its pool is exhausted)"
        );
        assert!(
            timeout("renew", None, None, vec![])
                .ends_with("no dhcp server answered 4 dhcprequest(s)")
        );
        assert!(
            timeout(
                "acquire",
                server,
                Some(Ipv4Addr::new(198, 18, 0, 7)),
                vec![]
            )
            .ends_with("server 198.18.0.1 offered 198.18.0.7 but did not acknowledge it")
        );
        assert!(
            timeout("acquire", server, None, vec![Ipv4Addr::new(198, 18, 0, 9)]).ends_with(
                "server 198.18.0.1 answered but no lease was granted; \
                 declined 198.18.0.9: already in use on the lan"
            )
        );
    }
}
