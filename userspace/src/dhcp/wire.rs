//! DHCPv4 on the wire: building the client's messages and the Ethernet
//! frames that carry them, and parsing the server's replies into [`Reply`]
//! and [`Lease`]. Pure functions, no I/O, so every byte is unit-tested.
//!
//! dhcproto encodes every message and decodes the BOOTP header and each
//! option the client uses. The options area itself is walked here first:
//! dhcproto silently stops at the first option it cannot decode (so a
//! truncated packet would look valid), does not check the magic cookie, and
//! has `debug_assert!`s on the lengths of options the client never reads
//! (rapid commit, client FQDN, ...) that would turn a hostile packet into a
//! panic in debug builds. The walker requires the end option, concatenates
//! split options (RFC 3396), follows option overload (option 52) and hands
//! dhcproto only the options the client consumes, after checking their
//! lengths. Option 121 is decoded here too because dhcproto stops silently at
//! a bad prefix length instead of rejecting the route list.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{
    self, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::error::{DhcpError, Mac};
use super::lease::Lease;

/// UDP port of DHCP clients.
pub(crate) const CLIENT_PORT: u16 = 68;
/// UDP port of DHCP servers.
pub(crate) const SERVER_PORT: u16 = 67;
/// The broadcast MAC address.
pub(crate) const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// Option 55: subnet mask, router, DNS, domain, MTU, broadcast address,
/// lease time, server id, T1, T2, search list, classless routes.
pub(crate) const PARAMETER_REQUEST_LIST: [u8; 12] = [1, 3, 6, 15, 26, 28, 51, 54, 58, 59, 119, 121];

/// Codes the client writes itself; `send_options` may not contain them.
pub(crate) const RESERVED_OPTION_CODES: [u8; 10] = [0, 12, 50, 52, 53, 54, 55, 57, 61, 255];

/// BOOTP header (236 bytes) plus the magic cookie.
const HEADER_LEN: usize = 240;
/// Some relays and old servers drop BOOTP messages shorter than this (RFC 1542).
const BOOTP_MIN_LEN: usize = 300;
const SNAME: std::ops::Range<usize> = 44..108;
const FILE: std::ops::Range<usize> = 108..236;

/// Which client message to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// DHCPDISCOVER.
    Discover,
    /// DHCPREQUEST in SELECTING state: broadcast, options 50 and 54 set.
    RequestSelecting {
        /// The offered address (option 50).
        requested: Ipv4Addr,
        /// The offering server (option 54).
        server_id: Ipv4Addr,
    },
    /// DHCPREQUEST in RENEWING or REBINDING state: `ciaddr` set, no 50/54.
    RequestExtend {
        /// The leased address.
        ciaddr: Ipv4Addr,
    },
    /// DHCPRELEASE.
    Release {
        /// The leased address.
        ciaddr: Ipv4Addr,
        /// The server that granted it.
        server_id: Ipv4Addr,
    },
    /// DHCPDECLINE: the acknowledged address already answers ARP.
    Decline {
        /// The address in use (option 50).
        requested: Ipv4Addr,
        /// The server that granted it (option 54).
        server_id: Ipv4Addr,
    },
}

impl Outgoing {
    /// Lower-case name for logs and errors.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Outgoing::Discover => "discover",
            Outgoing::RequestSelecting { .. } | Outgoing::RequestExtend { .. } => "request",
            Outgoing::Release { .. } => "release",
            Outgoing::Decline { .. } => "decline",
        }
    }
}

/// The identity and extra options of the pod the message is sent for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientIdentity<'a> {
    /// The pod MAC: chaddr and Ethernet source.
    pub mac: [u8; 6],
    /// Option 61.
    pub client_id: &'a [u8],
    /// Option 12.
    pub hostname: Option<&'a str>,
    /// Extra options from the netconf.
    pub extra: &'a [(u8, Vec<u8>)],
}

/// Settings of one outgoing message that are not part of the identity.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MessageParams {
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client began acquiring or renewing.
    pub secs: u16,
    /// Ask the server to broadcast its reply (only meaningful without ciaddr).
    pub broadcast: bool,
    /// Option 57.
    pub max_message_size: u16,
}

/// Checks what the caller controls before anything is sent.
pub(crate) fn validate_identity(id: &ClientIdentity<'_>) -> Result<(), DhcpError> {
    let mac = Mac(id.mac);
    if id.mac[0] & 0x01 != 0 || id.mac == [0; 6] {
        return Err(DhcpError::InvalidRequest {
            mac,
            reason: "the mac address must be a non-zero unicast address",
        });
    }
    if id.client_id.len() < 2 || id.client_id.len() > 255 {
        return Err(DhcpError::InvalidRequest {
            mac,
            reason: "the client id must be 2 to 255 bytes (rfc 2132 section 9.14)",
        });
    }
    if let Some(h) = id.hostname
        && (h.is_empty() || h.len() > 255)
    {
        return Err(DhcpError::InvalidRequest {
            mac,
            reason: "the hostname must be 1 to 255 bytes",
        });
    }
    for (code, value) in id.extra {
        if RESERVED_OPTION_CODES.contains(code) {
            return Err(DhcpError::ReservedOption { mac, code: *code });
        }
        if value.len() > 255 {
            return Err(DhcpError::InvalidRequest {
                mac,
                reason: "extra option values must be at most 255 bytes",
            });
        }
    }
    Ok(())
}

/// Encodes one client message (the UDP payload) with dhcproto.
pub(crate) fn build_message(
    id: &ClientIdentity<'_>,
    params: &MessageParams,
    kind: Outgoing,
) -> Result<Vec<u8>, DhcpError> {
    let ciaddr = match kind {
        Outgoing::RequestExtend { ciaddr } | Outgoing::Release { ciaddr, .. } => ciaddr,
        Outgoing::Discover | Outgoing::RequestSelecting { .. } | Outgoing::Decline { .. } => {
            Ipv4Addr::UNSPECIFIED
        }
    };
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(
        params.xid,
        ciaddr,
        unspecified,
        unspecified,
        unspecified,
        &id.mac,
    );
    msg.set_opcode(Opcode::BootRequest).set_secs(params.secs);
    // RFC 2131 4.1: a client that already has an address (ciaddr set) must
    // not ask for broadcast replies; a releasing or declining client gets no
    // reply.
    let answered = !matches!(kind, Outgoing::Decline { .. });
    if params.broadcast && ciaddr.is_unspecified() && answered {
        msg.set_flags(Flags::default().set_broadcast());
    }
    let opts = msg.opts_mut();
    let msg_type = match kind {
        Outgoing::Discover => MessageType::Discover,
        Outgoing::RequestSelecting { .. } | Outgoing::RequestExtend { .. } => MessageType::Request,
        Outgoing::Release { .. } => MessageType::Release,
        Outgoing::Decline { .. } => MessageType::Decline,
    };
    opts.insert(DhcpOption::MessageType(msg_type));
    opts.insert(DhcpOption::ClientIdentifier(id.client_id.to_vec()));
    match kind {
        Outgoing::Release { server_id, .. } => {
            // RFC 2131 table 5: a release carries only 53, 54, 61 (and 56).
            opts.insert(DhcpOption::ServerIdentifier(server_id));
        }
        Outgoing::Decline {
            requested,
            server_id,
        } => {
            // RFC 2131 table 5: 50 and 54 must be present, 55 and 57 must not.
            opts.insert(DhcpOption::RequestedIpAddress(requested));
            opts.insert(DhcpOption::ServerIdentifier(server_id));
        }
        _ => {
            if let Outgoing::RequestSelecting {
                requested,
                server_id,
            } = kind
            {
                opts.insert(DhcpOption::RequestedIpAddress(requested));
                opts.insert(DhcpOption::ServerIdentifier(server_id));
            }
            if let Some(h) = id.hostname {
                opts.insert(DhcpOption::Hostname(h.to_owned()));
            }
            opts.insert(DhcpOption::ParameterRequestList(
                PARAMETER_REQUEST_LIST
                    .iter()
                    .map(|c| OptionCode::from(*c))
                    .collect(),
            ));
            opts.insert(DhcpOption::MaxMessageSize(params.max_message_size));
            for (code, value) in id.extra {
                opts.insert(DhcpOption::Unknown(UnknownOption::new(
                    OptionCode::from(*code),
                    value.clone(),
                )));
            }
        }
    }
    let mut buf = Vec::with_capacity(BOOTP_MIN_LEN);
    msg.encode(&mut Encoder::new(&mut buf))
        .map_err(|source| DhcpError::Encode {
            mac: Mac(id.mac),
            msg_type: kind.name(),
            source,
        })?;
    // Zero bytes after the end option are pad options.
    if buf.len() < BOOTP_MIN_LEN {
        buf.resize(BOOTP_MIN_LEN, 0);
    }
    Ok(buf)
}

/// Addresses of one outgoing frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameAddrs {
    /// Ethernet source: always the pod MAC.
    pub src_mac: [u8; 6],
    /// Ethernet destination: broadcast, or the server's (or relay's) MAC.
    pub dst_mac: [u8; 6],
    /// IPv4 source: 0.0.0.0 until the pod has a lease.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination: 255.255.255.255 or the server.
    pub dst_ip: Ipv4Addr,
}

/// Wraps a DHCP payload into Ethernet + IPv4 + UDP (68 → 67) with checksums.
pub(crate) fn build_frame(
    addrs: &FrameAddrs,
    payload: &[u8],
    msg_type: &'static str,
) -> Result<Vec<u8>, DhcpError> {
    let builder = etherparse::PacketBuilder::ethernet2(addrs.src_mac, addrs.dst_mac)
        .ipv4(addrs.src_ip.octets(), addrs.dst_ip.octets(), 64)
        .udp(CLIENT_PORT, SERVER_PORT);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut frame, payload)
        .map_err(|source| DhcpError::Frame {
            mac: Mac(addrs.src_mac),
            msg_type,
            source,
        })?;
    Ok(frame)
}

/// The parts of a received frame the client needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RxFrame<'a> {
    /// Ethernet source: the server's or relay's MAC.
    pub src_mac: [u8; 6],
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// The DHCP message.
    pub payload: &'a [u8],
}

/// Parses an Ethernet frame that the socket filter let through; anything
/// but an unfragmented IPv4 UDP datagram from port 67 to port 68 is malformed.
pub(crate) fn parse_frame(frame: &[u8]) -> Result<RxFrame<'_>, DhcpError> {
    use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};
    let packet = SlicedPacket::from_ethernet(frame)
        .map_err(|_| DhcpError::malformed("not an ethernet/ipv4/udp frame"))?;
    let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
        return Err(DhcpError::malformed("not an ethernet ii frame"));
    };
    if !packet.link_exts.is_empty() {
        return Err(DhcpError::malformed("vlan-tagged frame"));
    }
    let Some(NetSlice::Ipv4(ip)) = &packet.net else {
        return Err(DhcpError::malformed("not ipv4"));
    };
    if ip.header().is_fragmenting_payload() {
        return Err(DhcpError::malformed("fragmented ipv4 datagram"));
    }
    let Some(TransportSlice::Udp(udp)) = &packet.transport else {
        return Err(DhcpError::malformed("not udp"));
    };
    if udp.destination_port() != CLIENT_PORT || udp.source_port() != SERVER_PORT {
        return Err(DhcpError::malformed("not from udp port 67 to port 68"));
    }
    Ok(RxFrame {
        src_mac: eth.source(),
        src_ip: ip.header().source_addr(),
        payload: udp.payload(),
    })
}

/// A server's reply, validated and with the options the client uses decoded.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reply {
    /// Transaction id.
    pub xid: u32,
    /// The client hardware address the reply is for.
    pub chaddr: [u8; 6],
    /// Option 53.
    pub msg_type: MessageType,
    /// The offered or acknowledged address.
    pub yiaddr: Ipv4Addr,
    /// Decoded options.
    pub opts: ReplyOptions,
}

/// The options of a reply that end up in a [`Lease`] or steer the client.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ReplyOptions {
    /// Option 1.
    pub subnet_mask: Option<Ipv4Addr>,
    /// Option 3.
    pub routers: Vec<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 119.
    pub search: Vec<String>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 51.
    pub lease_secs: Option<u32>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 56.
    pub message: Option<String>,
    /// Option 58.
    pub t1_secs: Option<u32>,
    /// Option 59.
    pub t2_secs: Option<u32>,
    /// Option 121.
    pub classless_routes: Option<Vec<(Ipv4Addr, u8, Ipv4Addr)>>,
}

/// Parses a DHCP message from a server. Never panics; anything that is not a
/// complete, well-formed BOOTREPLY with a message type is `Malformed`.
pub(crate) fn parse_reply(payload: &[u8]) -> Result<Reply, DhcpError> {
    if payload.len() < HEADER_LEN {
        return Err(DhcpError::malformed("shorter than a bootp header"));
    }
    if payload[236..HEADER_LEN] != v4::MAGIC {
        return Err(DhcpError::malformed("no dhcp magic cookie"));
    }
    // The fixed header only: the options are walked below.
    let header = Message::decode(&mut Decoder::new(&payload[..HEADER_LEN])).map_err(|source| {
        DhcpError::Malformed {
            reason: "bad bootp header",
            source: Some(source),
        }
    })?;
    if header.opcode() != Opcode::BootReply {
        return Err(DhcpError::malformed("not a bootreply"));
    }
    // Checked before `chaddr()`, which slices by hlen and panics past 16.
    if u8::from(header.htype()) != 1 || header.hlen() != 6 {
        return Err(DhcpError::malformed("hardware address is not ethernet"));
    }
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&header.chaddr()[..6]);

    let raw = collect_options(payload)?;
    let msg_type = match raw.get(&53) {
        Some(v) if v.len() == 1 => match decode_option(53, v)? {
            DhcpOption::MessageType(t) => t,
            _ => return Err(DhcpError::malformed("bad message type option")),
        },
        Some(_) => return Err(DhcpError::malformed("message type option is not 1 byte")),
        None => return Err(DhcpError::malformed("no message type: a bootp reply")),
    };
    Ok(Reply {
        xid: header.xid(),
        chaddr,
        msg_type,
        yiaddr: header.yiaddr(),
        opts: decode_reply_options(&raw)?,
    })
}

/// The options area as code → value, split options concatenated (RFC 3396)
/// in the order options, file, sname (option overload, RFC 2131 4.1).
fn collect_options(payload: &[u8]) -> Result<BTreeMap<u8, Vec<u8>>, DhcpError> {
    let mut raw = BTreeMap::new();
    walk_options(&payload[HEADER_LEN..], &mut raw, true)?;
    if let Some(overload) = raw.get(&52) {
        let &[overload] = overload.as_slice() else {
            return Err(DhcpError::malformed("option overload is not 1 byte"));
        };
        if overload & !3 != 0 || overload == 0 {
            return Err(DhcpError::malformed("bad option overload value"));
        }
        if overload & 1 != 0 {
            walk_options(&payload[FILE], &mut raw, false)?;
        }
        if overload & 2 != 0 {
            walk_options(&payload[SNAME], &mut raw, false)?;
        }
    }
    Ok(raw)
}

/// Walks code/length/value options until the end option. In the main area the
/// end option is required: without it the packet was cut.
fn walk_options(
    area: &[u8],
    raw: &mut BTreeMap<u8, Vec<u8>>,
    require_end: bool,
) -> Result<(), DhcpError> {
    let mut i = 0;
    while let Some(&code) = area.get(i) {
        match code {
            0 => i += 1,
            255 => return Ok(()),
            _ => {
                let len = *area
                    .get(i + 1)
                    .ok_or(DhcpError::malformed("option cut after its code"))?
                    as usize;
                let value = area
                    .get(i + 2..i + 2 + len)
                    .ok_or(DhcpError::malformed("option value runs past the packet"))?;
                raw.entry(code).or_default().extend_from_slice(value);
                i += 2 + len;
            }
        }
    }
    if require_end {
        Err(DhcpError::malformed(
            "options not terminated by the end option",
        ))
    } else {
        Ok(())
    }
}

/// Decodes one option value with dhcproto.
fn decode_option(code: u8, value: &[u8]) -> Result<DhcpOption, DhcpError> {
    if value.is_empty() {
        return Err(DhcpError::malformed("empty option value"));
    }
    let mut buf = Vec::with_capacity(value.len() + 2 * value.len().div_ceil(255));
    v4::encode_long_opt_bytes(OptionCode::from(code), value, &mut Encoder::new(&mut buf))
        .map_err(|_| DhcpError::malformed("option too long"))?;
    DhcpOption::decode(&mut Decoder::new(&buf)).map_err(|source| DhcpError::Malformed {
        reason: "option value does not decode",
        source: Some(source),
    })
}

fn decode_reply_options(raw: &BTreeMap<u8, Vec<u8>>) -> Result<ReplyOptions, DhcpError> {
    let mut o = ReplyOptions::default();
    for (&code, value) in raw {
        let expect_len = |ok: bool, reason: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(DhcpError::malformed(reason))
            }
        };
        match code {
            1 | 51 | 54 | 58 | 59 => {
                expect_len(value.len() == 4, "a 4-byte option has the wrong length")?
            }
            26 => expect_len(value.len() == 2, "mtu option is not 2 bytes")?,
            3 | 6 => expect_len(
                !value.is_empty() && value.len() % 4 == 0,
                "address list length is not a multiple of 4",
            )?,
            _ => {}
        }
        match code {
            121 => {
                o.classless_routes = Some(decode_classless_routes(value)?);
                continue;
            }
            1 | 3 | 6 | 15 | 26 | 51 | 54 | 56 | 58 | 59 | 119 => {}
            _ => continue,
        }
        match decode_option(code, value)? {
            DhcpOption::SubnetMask(m) => o.subnet_mask = Some(m),
            DhcpOption::Router(r) => o.routers = r,
            DhcpOption::DomainNameServer(d) => o.dns = d,
            DhcpOption::DomainName(d) => {
                // Some servers count a trailing NUL into the string.
                let d = d.trim_end_matches('\0').trim_end_matches('.');
                o.domain = (!d.is_empty()).then(|| d.to_owned());
            }
            DhcpOption::DomainSearch(names) => {
                o.search = names
                    .iter()
                    .map(|n| n.to_ascii().trim_end_matches('.').to_owned())
                    .filter(|n| !n.is_empty())
                    .collect();
            }
            DhcpOption::InterfaceMtu(m) => o.mtu = Some(m),
            DhcpOption::AddressLeaseTime(t) => o.lease_secs = Some(t),
            DhcpOption::ServerIdentifier(s) => o.server_id = Some(s),
            DhcpOption::Message(m) => o.message = Some(m),
            DhcpOption::Renewal(t) => o.t1_secs = Some(t),
            DhcpOption::Rebinding(t) => o.t2_secs = Some(t),
            _ => {
                return Err(DhcpError::malformed(
                    "option decoded to an unexpected variant",
                ));
            }
        }
    }
    Ok(o)
}

/// Decodes option 121 (RFC 3442): `prefix_len, significant octets of the
/// destination, gateway` repeated. Host bits beyond the prefix are cleared.
/// A prefix length over 32 or a cut entry rejects the whole option.
pub fn decode_classless_routes(data: &[u8]) -> Result<Vec<(Ipv4Addr, u8, Ipv4Addr)>, DhcpError> {
    let mut routes = Vec::new();
    let mut rest = data;
    while let Some((&prefix, tail)) = rest.split_first() {
        if prefix > 32 {
            return Err(DhcpError::malformed(
                "classless route prefix longer than 32",
            ));
        }
        let octets = usize::from(prefix).div_ceil(8);
        if tail.len() < octets + 4 {
            return Err(DhcpError::malformed("classless route entry cut short"));
        }
        let mut dst = [0u8; 4];
        dst[..octets].copy_from_slice(&tail[..octets]);
        let dst = u32::from_be_bytes(dst) & prefix_mask(prefix);
        let gw = Ipv4Addr::new(
            tail[octets],
            tail[octets + 1],
            tail[octets + 2],
            tail[octets + 3],
        );
        routes.push((Ipv4Addr::from(dst), prefix, gw));
        rest = &tail[octets + 4..];
    }
    if routes.is_empty() {
        return Err(DhcpError::malformed("empty classless route option"));
    }
    Ok(routes)
}

/// Encodes routes as option 121's value (RFC 3442); the inverse of
/// [`decode_classless_routes`]. Prefix lengths over 32 are clamped to 32.
pub fn encode_classless_routes(routes: &[(Ipv4Addr, u8, Ipv4Addr)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(dst, prefix, gw) in routes {
        let prefix = prefix.min(32);
        let octets = usize::from(prefix).div_ceil(8);
        out.push(prefix);
        out.extend_from_slice(&(u32::from(dst) & prefix_mask(prefix)).to_be_bytes()[..octets]);
        out.extend_from_slice(&gw.octets());
    }
    out
}

fn prefix_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The prefix length of a contiguous netmask, `None` for a mask like 255.0.255.0.
fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let prefix = m.leading_ones() as u8;
    (prefix_mask(prefix) == m).then_some(prefix)
}

/// The classful prefix (RFC 791) used when an ACK carries no subnet mask, as
/// the reference CNI dhcp plugin does.
fn classful_prefix(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// Who asked, for filling a [`Lease`] from an ACK.
#[derive(Clone, Debug)]
pub(crate) struct LeaseOwner<'a> {
    /// The pod MAC.
    pub mac: [u8; 6],
    /// The client id that was sent.
    pub client_id: &'a [u8],
    /// The hostname that was sent.
    pub hostname: Option<&'a str>,
}

/// An address a server may lease to a client.
pub(crate) fn usable(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback())
}

/// Builds the [`Lease`] an ACK grants.
///
/// `server_mac` is the ACK's Ethernet source (the server, or the relay for an
/// off-link server: in both cases the next hop for unicast renewals).
/// `fallback_server` is the offering server, for ACKs without option 54.
/// `requested_at_unix` is when the acknowledged request was sent: RFC 2131
/// 4.4.1 counts the lease from then, which errs on the safe side.
pub(crate) fn lease_from_ack(
    owner: &LeaseOwner<'_>,
    ack: &Reply,
    server_mac: [u8; 6],
    fallback_server: Option<Ipv4Addr>,
    requested_at_unix: u64,
) -> Result<Lease, DhcpError> {
    if ack.msg_type != MessageType::Ack {
        return Err(DhcpError::malformed("not a dhcpack"));
    }
    let address = ack.yiaddr;
    if !usable(address) {
        return Err(DhcpError::malformed("ack without a usable yiaddr"));
    }
    let o = &ack.opts;
    let server_id = o
        .server_id
        .or(fallback_server)
        .ok_or(DhcpError::malformed("ack without a server identifier"))?;
    let lease_secs = o
        .lease_secs
        .ok_or(DhcpError::malformed("ack without a lease time"))?;
    let prefix_len = match o.subnet_mask {
        Some(mask) => {
            mask_to_prefix(mask).ok_or(DhcpError::malformed("non-contiguous subnet mask"))?
        }
        None => classful_prefix(address),
    };
    let (t1_secs, t2_secs) = timers(lease_secs, o.t1_secs, o.t2_secs);
    Ok(Lease {
        mac: owner.mac,
        client_id: owner.client_id.to_vec(),
        hostname: owner.hostname.map(str::to_owned),
        address,
        prefix_len,
        server_id,
        server_mac,
        router: o.routers.first().copied(),
        classless_routes: o.classless_routes.clone().unwrap_or_default(),
        dns: o.dns.clone(),
        domain: o.domain.clone(),
        search: o.search.clone(),
        mtu: o.mtu,
        lease_secs,
        t1_secs,
        t2_secs,
        obtained_at_unix: requested_at_unix,
    })
}

/// T1 and T2 from options 58/59, defaulting to 0.5 and 0.875 of the lease
/// (RFC 2131 4.4.5); server values that break `T1 <= T2 <= lease` are
/// replaced by the defaults.
pub(crate) fn timers(lease: u32, t1: Option<u32>, t2: Option<u32>) -> (u32, u32) {
    if lease == u32::MAX {
        // Infinite lease: never renew.
        return (u32::MAX, u32::MAX);
    }
    let default_t1 = lease / 2;
    let default_t2 = (u64::from(lease) * 7 / 8) as u32;
    let t2 = t2.filter(|&t| t <= lease).unwrap_or(default_t2);
    let t1 = t1.filter(|&t| t <= t2).unwrap_or(default_t1.min(t2));
    (t1, t2)
}

/// What the client makes of one received frame: the fuzzing entry point
/// (`fuzz/`), not an API.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq)]
pub struct FuzzReply {
    /// The address, if the client would take the reply as an OFFER while
    /// selecting.
    pub offer: Option<Ipv4Addr>,
    /// Whether the reply is a DHCPNAK (the lease machine is told so).
    pub nak: bool,
    /// The lease, if the client would take the reply as the ACK of its request.
    pub lease: Option<Lease>,
}

/// Runs `frame` through what the client's receive path and exchanges do
/// with a server's reply ([`parse_frame`], [`parse_reply`], the OFFER test,
/// [`lease_from_ack`] with the request sent at `requested_at_unix`). `frame`
/// is tried as an Ethernet frame, and else as a bare DHCP message. For
/// fuzzing (`fuzz/`), not an API.
#[doc(hidden)]
pub fn fuzz_reply(frame: &[u8], requested_at_unix: u64) -> Option<FuzzReply> {
    let (src_mac, src_ip, reply) = match parse_frame(frame) {
        Ok(rx) => (rx.src_mac, rx.src_ip, parse_reply(rx.payload).ok()?),
        Err(_) => ([0; 6], Ipv4Addr::UNSPECIFIED, parse_reply(frame).ok()?),
    };
    let server_id = reply.opts.server_id.unwrap_or(src_ip);
    let offer =
        (reply.msg_type == MessageType::Offer && usable(reply.yiaddr)).then_some(reply.yiaddr);
    let owner = LeaseOwner {
        mac: reply.chaddr,
        client_id: &[1, 2, 3, 4, 5, 6, 7],
        hostname: Some("fuzz"),
    };
    let lease = lease_from_ack(&owner, &reply, src_mac, Some(server_id), requested_at_unix).ok();
    Some(FuzzReply {
        offer,
        nak: reply.msg_type == MessageType::Nak,
        lease,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const POD_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    pub(crate) const SERVER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
    const CLIENT_ID: &[u8] = &[0xff, 1, 2, 3, 4, 0, 4, 9, 9, 9];

    fn identity<'a>(extra: &'a [(u8, Vec<u8>)]) -> ClientIdentity<'a> {
        ClientIdentity {
            mac: POD_MAC,
            client_id: CLIENT_ID,
            hostname: Some("web-0"),
            extra,
        }
    }

    fn params() -> MessageParams {
        MessageParams {
            xid: 0xdead_beef,
            secs: 3,
            broadcast: true,
            max_message_size: 1500,
        }
    }

    fn decode(buf: &[u8]) -> Message {
        Message::decode(&mut Decoder::new(buf)).unwrap()
    }

    fn prl() -> DhcpOption {
        DhcpOption::ParameterRequestList(
            PARAMETER_REQUEST_LIST
                .iter()
                .map(|c| OptionCode::from(*c))
                .collect(),
        )
    }

    /// Asserts that `o` holds each of `want`, as it is.
    fn assert_holds(o: &dhcproto::v4::DhcpOptions, want: &[DhcpOption]) {
        for opt in want {
            let code = OptionCode::from(opt);
            assert_eq!(o.get(code), Some(opt), "option {code:?} in {o:?}");
        }
    }

    /// What every DISCOVER and REQUEST carries from [`identity`] and [`params`].
    fn identity_options() -> [DhcpOption; 4] {
        [
            DhcpOption::ClientIdentifier(CLIENT_ID.to_vec()),
            DhcpOption::Hostname("web-0".into()),
            prl(),
            DhcpOption::MaxMessageSize(1500),
        ]
    }

    const OFFERED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 150);
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    #[test]
    fn discover_carries_every_option() {
        let extra = vec![
            (60u8, b"lanlink".to_vec()),
            (77u8, vec![4, b'p', b'o', b'd', b's']),
        ];
        let buf = build_message(&identity(&extra), &params(), Outgoing::Discover).unwrap();
        assert!(buf.len() >= BOOTP_MIN_LEN);
        let msg = decode(&buf);
        assert_eq!(msg.opcode(), Opcode::BootRequest);
        assert_eq!(msg.xid(), 0xdead_beef);
        assert_eq!(msg.secs(), 3);
        assert!(msg.flags().broadcast());
        assert_eq!(msg.chaddr(), &POD_MAC);
        assert_eq!(msg.hlen(), 6);
        assert_eq!(msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
        let o = msg.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Discover));
        assert_holds(o, &identity_options());
        assert_holds(
            o,
            &[
                DhcpOption::ClassIdentifier(b"lanlink".to_vec()),
                DhcpOption::UserClass(vec![4, b'p', b'o', b'd', b's']),
            ],
        );
        assert!(!o.contains(OptionCode::RequestedIpAddress));
        assert!(!o.contains(OptionCode::ServerIdentifier));
        assert_eq!(o.len(), 7, "unexpected options: {o:?}");
    }

    #[test]
    fn selecting_request_carries_requested_address_and_server() {
        let kind = Outgoing::RequestSelecting {
            requested: OFFERED,
            server_id: SERVER,
        };
        let mut p = params();
        p.broadcast = false;
        let msg = decode(&build_message(&identity(&[]), &p, kind).unwrap());
        assert!(!msg.flags().broadcast());
        assert_eq!(msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
        let o = msg.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Request));
        assert_holds(
            o,
            &[
                DhcpOption::RequestedIpAddress(OFFERED),
                DhcpOption::ServerIdentifier(SERVER),
            ],
        );
        assert_holds(o, &identity_options());
        assert_eq!(o.len(), 7);
    }

    #[test]
    fn renewing_request_sets_ciaddr_without_server_or_requested_address() {
        let ciaddr = Ipv4Addr::new(198, 18, 0, 150);
        let msg = decode(
            &build_message(
                &identity(&[]),
                &params(),
                Outgoing::RequestExtend { ciaddr },
            )
            .unwrap(),
        );
        assert_eq!(msg.ciaddr(), ciaddr);
        assert!(
            !msg.flags().broadcast(),
            "a client with an address must not ask for broadcast"
        );
        let o = msg.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Request));
        assert!(!o.contains(OptionCode::RequestedIpAddress));
        assert!(!o.contains(OptionCode::ServerIdentifier));
        assert!(o.contains(OptionCode::ClientIdentifier));
    }

    #[test]
    fn release_carries_only_type_server_and_client_id() {
        let kind = Outgoing::Release {
            ciaddr: Ipv4Addr::new(198, 18, 0, 150),
            server_id: Ipv4Addr::new(198, 18, 0, 1),
        };
        let extra = vec![(60u8, b"x".to_vec())];
        let msg = decode(&build_message(&identity(&extra), &params(), kind).unwrap());
        assert_eq!(msg.ciaddr(), Ipv4Addr::new(198, 18, 0, 150));
        let o = msg.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Release));
        assert!(o.contains(OptionCode::ServerIdentifier));
        assert!(o.contains(OptionCode::ClientIdentifier));
        assert_eq!(o.len(), 3);
    }

    #[test]
    fn decline_carries_requested_address_server_and_client_id_only() {
        let kind = Outgoing::Decline {
            requested: OFFERED,
            server_id: SERVER,
        };
        let extra = vec![(60u8, b"x".to_vec())];
        let msg = decode(&build_message(&identity(&extra), &params(), kind).unwrap());
        assert_eq!(msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(!msg.flags().broadcast(), "no reply comes to a decline");
        let o = msg.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Decline));
        assert_holds(
            o,
            &[
                DhcpOption::RequestedIpAddress(OFFERED),
                DhcpOption::ServerIdentifier(SERVER),
            ],
        );
        assert!(o.contains(OptionCode::ClientIdentifier));
        assert_eq!(o.len(), 4, "unexpected options: {o:?}");
        assert_eq!(kind.name(), "decline");
    }

    #[test]
    fn reserved_and_invalid_requests_are_refused() {
        for code in RESERVED_OPTION_CODES {
            let extra = vec![(code, vec![1])];
            assert!(matches!(
                validate_identity(&identity(&extra)),
                Err(DhcpError::ReservedOption { code: c, .. }) if c == code
            ));
        }
        let mut id = identity(&[]);
        validate_identity(&id).unwrap();
        id.mac = [0x03, 0, 0, 0, 0, 1];
        assert!(matches!(
            validate_identity(&id),
            Err(DhcpError::InvalidRequest { .. })
        ));
        let mut id = identity(&[]);
        id.client_id = &[1];
        assert!(matches!(
            validate_identity(&id),
            Err(DhcpError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn frames_round_trip() {
        let payload = build_message(&identity(&[]), &params(), Outgoing::Discover).unwrap();
        let addrs = FrameAddrs {
            src_mac: POD_MAC,
            dst_mac: BROADCAST_MAC,
            src_ip: Ipv4Addr::UNSPECIFIED,
            dst_ip: Ipv4Addr::BROADCAST,
        };
        let frame = build_frame(&addrs, &payload, "discover").unwrap();
        let p = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!()
        };
        assert_eq!(ip.header().destination_addr(), Ipv4Addr::BROADCAST);
        let Some(etherparse::TransportSlice::Udp(udp)) = &p.transport else {
            panic!()
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (68, 67));
        assert_eq!(udp.payload(), &payload[..]);
        // Our own frame goes the wrong way for the reply parser.
        assert!(matches!(
            parse_frame(&frame),
            Err(DhcpError::Malformed { .. })
        ));
    }

    /// A server reply as dnsmasq would send it, with every option the client uses.
    pub(crate) fn full_ack(xid: u32) -> Message {
        let mut m = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(198, 18, 0, 150),
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::UNSPECIFIED,
            &POD_MAC,
        );
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Ack));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 18, 0, 1)));
        o.insert(DhcpOption::AddressLeaseTime(120));
        o.insert(DhcpOption::Renewal(50));
        o.insert(DhcpOption::Rebinding(100));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
        ]));
        o.insert(DhcpOption::DomainNameServer(vec![
            Ipv4Addr::new(198, 18, 0, 53),
            Ipv4Addr::new(198, 18, 0, 54),
        ]));
        o.insert(DhcpOption::DomainName("lan.example".into()));
        o.insert(DhcpOption::InterfaceMtu(1400));
        o.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::ClasslessStaticRoute,
            encode_classless_routes(&[
                (Ipv4Addr::new(10, 0, 0, 0), 8, Ipv4Addr::new(198, 18, 0, 2)),
                (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(198, 18, 0, 1)),
            ]),
        )));
        // RFC 3397 with compression: "lan.example", "svc.lan.example".
        let mut search = vec![3, b'l', b'a', b'n', 7];
        search.extend_from_slice(b"example");
        search.extend_from_slice(&[0, 3, b's', b'v', b'c', 0xc0, 0x00]);
        o.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::DomainSearch,
            search,
        )));
        m
    }

    pub(crate) fn encode_msg(m: &Message) -> Vec<u8> {
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    fn owner() -> LeaseOwner<'static> {
        LeaseOwner {
            mac: POD_MAC,
            client_id: CLIENT_ID,
            hostname: Some("web-0"),
        }
    }

    #[test]
    fn ack_with_every_option_becomes_a_lease() {
        let reply = parse_reply(&encode_msg(&full_ack(7))).unwrap();
        assert_eq!(reply.xid, 7);
        assert_eq!(reply.chaddr, POD_MAC);
        let lease = lease_from_ack(&owner(), &reply, SERVER_MAC, None, 1_000).unwrap();
        assert_eq!(
            lease,
            Lease {
                mac: POD_MAC,
                client_id: CLIENT_ID.to_vec(),
                hostname: Some("web-0".into()),
                address: Ipv4Addr::new(198, 18, 0, 150),
                prefix_len: 24,
                server_id: Ipv4Addr::new(198, 18, 0, 1),
                server_mac: SERVER_MAC,
                router: Some(Ipv4Addr::new(198, 18, 0, 1)),
                classless_routes: vec![
                    (Ipv4Addr::new(10, 0, 0, 0), 8, Ipv4Addr::new(198, 18, 0, 2)),
                    (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(198, 18, 0, 1)),
                ],
                dns: vec![Ipv4Addr::new(198, 18, 0, 53), Ipv4Addr::new(198, 18, 0, 54)],
                domain: Some("lan.example".into()),
                search: vec!["lan.example".into(), "svc.lan.example".into()],
                mtu: Some(1400),
                lease_secs: 120,
                t1_secs: 50,
                t2_secs: 100,
                obtained_at_unix: 1_000,
            }
        );
    }

    #[test]
    fn timers_default_and_are_sanitised() {
        assert_eq!(timers(120, None, None), (60, 105));
        assert_eq!(timers(120, Some(200), Some(300)), (60, 105));
        assert_eq!(timers(120, Some(110), Some(100)), (60, 100));
        assert_eq!(timers(120, None, Some(40)), (40, 40));
        assert_eq!(timers(u32::MAX, Some(1), Some(2)), (u32::MAX, u32::MAX));
        let mut m = full_ack(1);
        m.opts_mut().remove(OptionCode::Renewal);
        m.opts_mut().remove(OptionCode::Rebinding);
        m.opts_mut().remove(OptionCode::SubnetMask);
        let lease = lease_from_ack(
            &owner(),
            &parse_reply(&encode_msg(&m)).unwrap(),
            SERVER_MAC,
            None,
            0,
        )
        .unwrap();
        assert_eq!((lease.t1_secs, lease.t2_secs), (60, 105));
        // 198.x is class C.
        assert_eq!(lease.prefix_len, 24);
    }

    #[test]
    fn acks_missing_essentials_are_refused() {
        for code in [OptionCode::AddressLeaseTime, OptionCode::ServerIdentifier] {
            let mut m = full_ack(1);
            m.opts_mut().remove(code);
            let reply = parse_reply(&encode_msg(&m)).unwrap();
            assert!(matches!(
                lease_from_ack(&owner(), &reply, SERVER_MAC, None, 0),
                Err(DhcpError::Malformed { .. })
            ));
        }
        // ... but the offering server stands in for a missing option 54.
        let mut m = full_ack(1);
        m.opts_mut().remove(OptionCode::ServerIdentifier);
        let lease = lease_from_ack(
            &owner(),
            &parse_reply(&encode_msg(&m)).unwrap(),
            SERVER_MAC,
            Some(Ipv4Addr::new(198, 18, 0, 9)),
            0,
        )
        .unwrap();
        assert_eq!(lease.server_id, Ipv4Addr::new(198, 18, 0, 9));
        let mut m = full_ack(1);
        m.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
        assert!(
            lease_from_ack(
                &owner(),
                &parse_reply(&encode_msg(&m)).unwrap(),
                SERVER_MAC,
                None,
                0
            )
            .is_err()
        );
    }

    #[test]
    fn classless_routes_round_trip_and_match_dhcproto() {
        let routes = vec![
            (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(198, 18, 0, 1)),
            (Ipv4Addr::new(10, 0, 0, 0), 8, Ipv4Addr::new(198, 18, 0, 2)),
            (
                Ipv4Addr::new(172, 16, 0, 0),
                12,
                Ipv4Addr::new(198, 18, 0, 3),
            ),
            (
                Ipv4Addr::new(192, 168, 1, 128),
                25,
                Ipv4Addr::new(198, 18, 0, 4),
            ),
            (
                Ipv4Addr::new(203, 0, 113, 7),
                32,
                Ipv4Addr::new(198, 18, 0, 5),
            ),
        ];
        let enc = encode_classless_routes(&routes);
        // RFC 3442 examples: 0 → 1 octet + gw, /8 → 1 + 1, /12 → 1 + 2, /25 → 1 + 4.
        assert_eq!(&enc[..5], &[0, 198, 18, 0, 1]);
        assert_eq!(&enc[5..11], &[8, 10, 198, 18, 0, 2]);
        assert_eq!(&enc[11..18], &[12, 172, 16, 198, 18, 0, 3]);
        assert_eq!(decode_classless_routes(&enc).unwrap(), routes);
        // dhcproto reads the same routes back.
        let DhcpOption::ClasslessStaticRoute(theirs) = DhcpOption::decode(&mut Decoder::new(
            &[&[121, enc.len() as u8][..], &enc].concat(),
        ))
        .unwrap() else {
            panic!("not decoded as option 121")
        };
        let theirs: Vec<_> = theirs
            .iter()
            .map(|(n, g)| (n.addr(), n.prefix_len(), *g))
            .collect();
        assert_eq!(theirs, routes);
        // Host bits beyond the prefix are cleared.
        assert_eq!(
            decode_classless_routes(&[24, 10, 1, 2, 1, 1, 1, 1]).unwrap(),
            vec![(Ipv4Addr::new(10, 1, 2, 0), 24, Ipv4Addr::new(1, 1, 1, 1))]
        );
        assert_eq!(
            decode_classless_routes(&[9, 10, 255, 1, 1, 1, 1]).unwrap(),
            vec![(Ipv4Addr::new(10, 128, 0, 0), 9, Ipv4Addr::new(1, 1, 1, 1))]
        );
        for bad in [
            &[33u8, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[24, 10, 1, 2, 1, 1, 1],
            &[],
            &[8],
        ] {
            assert!(
                matches!(
                    decode_classless_routes(bad),
                    Err(DhcpError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
        for n in 0..enc.len() {
            // Every strict prefix of a valid encoding is either a shorter
            // valid list (cut at an entry boundary) or rejected.
            if let Ok(r) = decode_classless_routes(&enc[..n]) {
                assert_eq!(&routes[..r.len()], &r[..]);
            }
        }
    }

    #[test]
    fn every_truncation_is_malformed_and_never_panics() {
        let full = encode_msg(&full_ack(7));
        let end = 240 + {
            let mut raw = BTreeMap::new();
            let mut i = 0;
            let area = &full[240..];
            // Find the end option's offset with the walker's own rules.
            while area[i] != 255 {
                if area[i] == 0 {
                    i += 1;
                } else {
                    i += 2 + area[i + 1] as usize;
                }
            }
            walk_options(area, &mut raw, true).unwrap();
            i
        };
        for n in 0..full.len() {
            let r = parse_reply(&full[..n]);
            if n <= end {
                assert!(
                    matches!(r, Err(DhcpError::Malformed { .. })),
                    "prefix {n} of {} parsed: {r:?}",
                    full.len()
                );
            } else {
                assert_eq!(r.unwrap(), parse_reply(&full).unwrap());
            }
        }
    }

    #[test]
    fn garbage_and_wrong_op_are_malformed() {
        let mut request = encode_msg(&full_ack(7));
        request[0] = 1; // BOOTREQUEST
        assert!(matches!(
            parse_reply(&request),
            Err(DhcpError::Malformed {
                reason: "not a bootreply",
                ..
            })
        ));
        let mut no_magic = encode_msg(&full_ack(7));
        no_magic[236] = 0;
        assert!(matches!(
            parse_reply(&no_magic),
            Err(DhcpError::Malformed { .. })
        ));
        let mut bad_hlen = encode_msg(&full_ack(7));
        bad_hlen[2] = 255;
        assert!(matches!(
            parse_reply(&bad_hlen),
            Err(DhcpError::Malformed { .. })
        ));
        let mut no_type = full_ack(7);
        no_type.opts_mut().remove(OptionCode::MessageType);
        assert!(matches!(
            parse_reply(&encode_msg(&no_type)),
            Err(DhcpError::Malformed { .. })
        ));

        // Options that dhcproto would debug_assert on are skipped, not decoded.
        let mut hostile = encode_msg(&full_ack(7));
        hostile.truncate(240);
        hostile.extend_from_slice(&[53, 1, 5, 80, 3, 1, 2, 3, 81, 1, 0, 94, 0, 151, 0, 255]);
        assert_eq!(parse_reply(&hostile).unwrap().msg_type, MessageType::Ack);

        // Random bytes, with and without a valid header in front.
        let header = &encode_msg(&full_ack(7))[..240];
        for round in 0..20_000 {
            let len = rand::random_range(0..600usize);
            let mut buf: Vec<u8> = (0..len).map(|_| rand::random()).collect();
            if round % 2 == 0 && buf.len() > 240 {
                buf[..240].copy_from_slice(header);
            }
            let _ = parse_reply(&buf);
            let _ = parse_frame(&buf);
        }
        // Structured garbage: random TLVs after a valid header.
        for _ in 0..20_000 {
            let mut buf = header.to_vec();
            for _ in 0..rand::random_range(0..12) {
                let code: u8 = rand::random_range(1..255);
                let len: u8 = rand::random_range(0..8);
                buf.push(code);
                buf.push(len);
                buf.extend((0..len).map(|_| rand::random::<u8>()));
            }
            buf.push(255);
            if let Ok(reply) = parse_reply(&buf) {
                let _ = lease_from_ack(&owner(), &reply, SERVER_MAC, None, 0);
            }
        }
    }

    #[test]
    fn split_and_overloaded_options_are_joined() {
        let mut m = full_ack(7);
        m.opts_mut().remove(OptionCode::DomainNameServer);
        m.opts_mut().remove(OptionCode::DomainName);
        let mut buf = encode_msg(&m);
        assert_eq!(buf.pop(), Some(255));
        // Option 6 split in two (RFC 3396), option 52 puts option 15 into `file`.
        buf.extend_from_slice(&[6, 4, 9, 9, 9, 1, 52, 1, 1, 6, 4, 9, 9, 9, 2, 255]);
        let mut file = vec![15, 3, b'l', b'a', b'n', 255];
        file.resize(128, 0);
        buf[108..236].copy_from_slice(&file);
        let reply = parse_reply(&buf).unwrap();
        assert_eq!(
            reply.opts.dns,
            vec![Ipv4Addr::new(9, 9, 9, 1), Ipv4Addr::new(9, 9, 9, 2)]
        );
        assert_eq!(reply.opts.domain.as_deref(), Some("lan"));
    }

    #[test]
    fn reply_frames_parse() {
        let payload = encode_msg(&full_ack(7));
        let frame = {
            let b = etherparse::PacketBuilder::ethernet2(SERVER_MAC, BROADCAST_MAC)
                .ipv4([198, 18, 0, 1], [255; 4], 64)
                .udp(67, 68);
            let mut f = Vec::new();
            b.write(&mut f, &payload).unwrap();
            f
        };
        let rx = parse_frame(&frame).unwrap();
        assert_eq!(rx.src_mac, SERVER_MAC);
        assert_eq!(rx.src_ip, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(rx.payload, &payload[..]);
        for n in 0..frame.len() {
            if let Ok(rx) = parse_frame(&frame[..n]) {
                let _ = parse_reply(rx.payload);
            }
        }
    }
}
