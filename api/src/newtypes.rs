//! Validated values that cross the socket: [`Ipv4Cidr`], [`Mac`] and
//! [`DhcpOption`]. Each is checked once, when it is parsed or deserialized,
//! so the plugin (reading the netconf) and the agent (reading a request)
//! accept and refuse exactly the same inputs. On the wire each keeps the JSON
//! form it always had: a string, or for [`DhcpOption`] `{"code", "value"}`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// DHCP option codes the agent's DHCP client writes itself, so a netconf may
/// not send them (`ipam.sendOptions`): pad, host name, requested address,
/// overload, message type, server identifier, parameter request list,
/// maximum message size, client identifier, end.
pub const RESERVED_OPTION_CODES: [u8; 10] = [0, 12, 50, 52, 53, 54, 55, 57, 61, 255];

/// Longest value a DHCP option can hold (its length is one byte).
pub const MAX_OPTION_LEN: usize = 255;

// ------------------------------------------------------------------ Ipv4Cidr

/// An IPv4 network prefix, `a.b.c.d/n` with `n <= 32` and no host bits set
/// (the kernel refuses routes with host bits, so they are refused here too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

/// Why a string is not an [`Ipv4Cidr`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/` separates address and prefix length.
    #[error("{text:?} is not an IPv4 CIDR: missing \"/prefix-length\"")]
    MissingPrefix {
        /// The input.
        text: String,
    },
    /// The part before `/` is not a dotted-quad IPv4 address.
    #[error("{text:?} is not an IPv4 CIDR: {addr:?} is not an IPv4 address")]
    BadAddress {
        /// The input.
        text: String,
        /// The address part.
        addr: String,
    },
    /// The prefix length is not a plain decimal number.
    #[error("{text:?} is not an IPv4 CIDR: prefix length {len:?} is not a decimal number")]
    BadPrefix {
        /// The input.
        text: String,
        /// The prefix-length part.
        len: String,
    },
    /// The prefix length exceeds 32.
    #[error("{text:?} is not an IPv4 CIDR: prefix length {len} is greater than 32")]
    PrefixTooLong {
        /// The input.
        text: String,
        /// The prefix length.
        len: u32,
    },
    /// The address has bits set beyond the prefix.
    #[error("{text:?} has host bits set (did you mean \"{network}\"?)")]
    HostBits {
        /// The input.
        text: String,
        /// The network the input lies in.
        network: Ipv4Cidr,
    },
}

impl Ipv4Cidr {
    /// The prefix `addr/prefix_len`; refuses `prefix_len > 32` and host bits.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, CidrError> {
        let text = || format!("{addr}/{prefix_len}");
        if prefix_len > 32 {
            return Err(CidrError::PrefixTooLong {
                text: text(),
                len: prefix_len.into(),
            });
        }
        let network = Ipv4Cidr::containing(addr, prefix_len);
        if network.addr != addr {
            return Err(CidrError::HostBits {
                text: text(),
                network,
            });
        }
        Ok(network)
    }

    /// The network of `prefix_len` bits that `addr` lies in (host bits
    /// cleared); `prefix_len` is capped at 32.
    pub fn containing(addr: Ipv4Addr, prefix_len: u8) -> Self {
        let prefix_len = prefix_len.min(32);
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix_len,
        }
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length, 0..=32.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        Ipv4Cidr::containing(ip, self.prefix_len) == *self
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| CidrError::MissingPrefix { text: text.into() })?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::BadAddress {
            text: text.into(),
            addr: addr.into(),
        })?;
        // `u32::from_str` accepts a leading '+'; a CIDR does not.
        let bad_prefix = || CidrError::BadPrefix {
            text: text.into(),
            len: len.into(),
        };
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_prefix());
        }
        let len: u32 = len.parse().map_err(|_| bad_prefix())?;
        let prefix_len = u8::try_from(len).ok().filter(|l| *l <= 32).ok_or_else(|| {
            CidrError::PrefixTooLong {
                text: text.into(),
                len,
            }
        })?;
        Ipv4Cidr::new(addr, prefix_len).map_err(|e| match e {
            CidrError::HostBits { network, .. } => CidrError::HostBits {
                text: text.into(),
                network,
            },
            other => other,
        })
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// ----------------------------------------------------------------------- Mac

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff` (parsed in either
/// case, written in lower case).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac([u8; 6]);

/// Why a string is not a [`Mac`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not six `:`-separated groups.
    #[error("{text:?} is not a MAC address: expected 6 groups separated by ':', got {groups}")]
    Groups {
        /// The input.
        text: String,
        /// How many groups it has.
        groups: usize,
    },
    /// A group is not two hex digits.
    #[error("{text:?} is not a MAC address: {group:?} is not 2 hex digits")]
    BadGroup {
        /// The input.
        text: String,
        /// The offending group.
        group: String,
    },
}

impl Mac {
    /// The address from its six bytes.
    pub const fn new(octets: [u8; 6]) -> Self {
        Mac(octets)
    }

    /// The six bytes.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl From<[u8; 6]> for Mac {
    fn from(octets: [u8; 6]) -> Self {
        Mac(octets)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(mac: Mac) -> Self {
        mac.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = MacError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let groups: Vec<&str> = text.split(':').collect();
        if groups.len() != 6 {
            return Err(MacError::Groups {
                text: text.into(),
                groups: groups.len(),
            });
        }
        let mut octets = [0u8; 6];
        for (octet, group) in octets.iter_mut().zip(groups) {
            // Checked byte by byte: `from_str_radix` alone would take "+f".
            *octet = match group.as_bytes() {
                &[hi, lo] => hex_byte(hi, lo),
                _ => None,
            }
            .ok_or_else(|| MacError::BadGroup {
                text: text.into(),
                group: group.into(),
            })?;
        }
        Ok(Mac(octets))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------- DhcpOption

/// One extra DHCP option the agent sends in DISCOVER and REQUEST for a pod
/// (netconf `ipam.sendOptions`).
///
/// Wire form: `{"code": N, "value": "text"}` (the text's UTF-8 bytes) or
/// `{"code": N, "value": "0x0a0b"}` (hex bytes). `N` is 1..=254 and not one of
/// [`RESERVED_OPTION_CODES`]; the value holds at most [`MAX_OPTION_LEN`]
/// bytes. The form it was written in is kept, so it is written back the same.
#[derive(Clone, Debug)]
pub struct DhcpOption {
    code: u8,
    value: Vec<u8>,
    hex: bool,
}

/// Why a code or value is not a valid [`DhcpOption`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DhcpOptionError {
    /// The code is not in 1..=254 (0 is pad, 255 is end).
    #[error("option code {code} is out of range 1..=254")]
    CodeOutOfRange {
        /// The code asked for.
        code: u64,
    },
    /// The agent's DHCP client writes this option itself.
    #[error(
        "option code {code} ({}) is written by the agent's DHCP client itself",
        reserved_name(*.code)
    )]
    ReservedCode {
        /// The code asked for.
        code: u8,
    },
    /// A `0x` value with an odd number of digits.
    #[error("{value:?} has an odd number of hex digits after 0x")]
    OddHex {
        /// The value as written.
        value: String,
    },
    /// A `0x` value with something other than hex digits after it.
    #[error("{value:?} has characters other than hex digits after 0x")]
    NotHex {
        /// The value as written.
        value: String,
    },
    /// The value does not fit an option.
    #[error("value is {len} bytes long, a DHCP option holds at most 255")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
}

impl DhcpOptionError {
    /// Which key of the wire form is wrong: `"code"` or `"value"` (for error
    /// paths like `ipam.sendOptions[0].code`).
    pub fn key(&self) -> &'static str {
        match self {
            DhcpOptionError::CodeOutOfRange { .. } | DhcpOptionError::ReservedCode { .. } => "code",
            DhcpOptionError::OddHex { .. }
            | DhcpOptionError::NotHex { .. }
            | DhcpOptionError::TooLong { .. } => "value",
        }
    }
}

/// What a reserved code is, for messages.
fn reserved_name(code: u8) -> &'static str {
    match code {
        0 => "pad",
        12 => "host name",
        50 => "requested address",
        52 => "option overload",
        53 => "message type",
        54 => "server identifier",
        55 => "parameter request list",
        57 => "maximum message size",
        61 => "client identifier",
        255 => "end",
        _ => "reserved",
    }
}

impl DhcpOption {
    /// The option `code` with raw `value` bytes.
    pub fn new(code: u8, value: Vec<u8>) -> Result<Self, DhcpOptionError> {
        check_code(code.into())?;
        check_len(value.len())?;
        // Written back as text only when that reads back as the same bytes.
        let hex = match std::str::from_utf8(&value) {
            Ok(text) => text.starts_with("0x") || text.chars().any(char::is_control),
            Err(_) => true,
        };
        Ok(DhcpOption { code, value, hex })
    }

    /// The option from its wire form: `code` and `value` as text or `0x` hex.
    pub fn parse(code: u64, value: &str) -> Result<Self, DhcpOptionError> {
        let code = check_code(code)?;
        let (bytes, hex) = match value.strip_prefix("0x") {
            Some(digits) => (decode_hex(value, digits)?, true),
            None => (value.as_bytes().to_vec(), false),
        };
        check_len(bytes.len())?;
        Ok(DhcpOption {
            code,
            value: bytes,
            hex,
        })
    }

    /// The option code.
    pub fn code(&self) -> u8 {
        self.code
    }

    /// The value's bytes, as sent.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The value as written on the wire (text, or `0x` and lower-case hex).
    pub fn wire_value(&self) -> String {
        if self.hex {
            let digits: String = self.value.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{digits}")
        } else {
            // `hex` is false only for values that are UTF-8 text.
            String::from_utf8_lossy(&self.value).into_owned()
        }
    }
}

/// Two options are equal when they send the same bytes, whatever the form.
impl PartialEq for DhcpOption {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.value == other.value
    }
}

impl Eq for DhcpOption {}

fn check_code(code: u64) -> Result<u8, DhcpOptionError> {
    let code = u8::try_from(code)
        .ok()
        .filter(|c| (1..=254).contains(c))
        .ok_or(DhcpOptionError::CodeOutOfRange { code })?;
    if RESERVED_OPTION_CODES.contains(&code) {
        return Err(DhcpOptionError::ReservedCode { code });
    }
    Ok(code)
}

fn check_len(len: usize) -> Result<(), DhcpOptionError> {
    if len > MAX_OPTION_LEN {
        return Err(DhcpOptionError::TooLong { len });
    }
    Ok(())
}

/// Decodes the hex `digits` of `value` (which is `0x` + `digits`). Works on
/// bytes, never on `str` slices, so non-ASCII input is an error, not a panic.
fn decode_hex(value: &str, digits: &str) -> Result<Vec<u8>, DhcpOptionError> {
    let digits = digits.as_bytes();
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(DhcpOptionError::NotHex {
            value: value.into(),
        });
    }
    if !digits.len().is_multiple_of(2) {
        return Err(DhcpOptionError::OddHex {
            value: value.into(),
        });
    }
    digits
        .chunks_exact(2)
        .map(|pair| hex_byte(pair[0], pair[1]))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| DhcpOptionError::NotHex {
            value: value.into(),
        })
}

/// The byte two ASCII hex digits spell, if they are hex digits.
fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    let nibble = |d: u8| char::from(d).to_digit(16);
    u8::try_from((nibble(hi)? << 4) | nibble(lo)?).ok()
}

/// The wire form, as written and read.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireOption {
    code: u64,
    value: String,
}

impl Serialize for DhcpOption {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireOption {
            code: self.code.into(),
            value: self.wire_value(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DhcpOption {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireOption::deserialize(deserializer)?;
        DhcpOption::parse(wire.code, &wire.value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cidr(s: &str) -> Result<Ipv4Cidr, CidrError> {
        s.parse()
    }

    #[test]
    fn cidr_valid() {
        let c = cidr("10.96.0.0/12").unwrap();
        assert_eq!(c.addr(), Ipv4Addr::new(10, 96, 0, 0));
        assert_eq!(c.prefix_len(), 12);
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert!(c.contains(Ipv4Addr::new(10, 111, 255, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 112, 0, 0)));
        assert_eq!(cidr("0.0.0.0/0").unwrap().prefix_len(), 0);
        assert_eq!(cidr("198.18.0.7/32").unwrap().prefix_len(), 32);
        assert_eq!(
            Ipv4Cidr::new(Ipv4Addr::new(198, 18, 0, 0), 15).unwrap(),
            cidr("198.18.0.0/15").unwrap()
        );
    }

    #[test]
    fn cidr_invalid_classes() {
        assert_eq!(
            cidr("10.0.0.0").unwrap_err().to_string(),
            r#""10.0.0.0" is not an IPv4 CIDR: missing "/prefix-length""#
        );
        for bad in ["x/8", "fd00::/8", "10.0.0/8", "/8", "10.0.0.0.0/8"] {
            assert!(
                matches!(cidr(bad), Err(CidrError::BadAddress { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            cidr("x/8").unwrap_err().to_string(),
            r#""x/8" is not an IPv4 CIDR: "x" is not an IPv4 address"#
        );
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8a",
            "1.0.0.0/é",
        ] {
            assert!(
                matches!(cidr(bad), Err(CidrError::BadPrefix { .. })),
                "{bad}"
            );
        }
        for bad in ["198.19.0.0/33", "0.0.0.0/255", "0.0.0.0/256"] {
            assert!(
                matches!(cidr(bad), Err(CidrError::PrefixTooLong { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            cidr("198.19.0.0/33").unwrap_err().to_string(),
            r#""198.19.0.0/33" is not an IPv4 CIDR: prefix length 33 is greater than 32"#
        );
        // Longer than any prefix: no overflow, still a precise error.
        assert!(matches!(
            cidr("0.0.0.0/99999999999999999999"),
            Err(CidrError::BadPrefix { .. })
        ));
        assert_eq!(
            cidr("10.96.0.1/12").unwrap_err().to_string(),
            r#""10.96.0.1/12" has host bits set (did you mean "10.96.0.0/12"?)"#
        );
        assert!(matches!(
            Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 33),
            Err(CidrError::PrefixTooLong { len: 33, .. })
        ));
        assert!(matches!(
            Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 1), 8),
            Err(CidrError::HostBits { .. })
        ));
    }

    #[test]
    fn cidr_json_round_trip() {
        let c: Ipv4Cidr = serde_json::from_value(json!("10.96.0.0/12")).unwrap();
        assert_eq!(serde_json::to_value(c).unwrap(), json!("10.96.0.0/12"));
        let e = serde_json::from_value::<Ipv4Cidr>(json!("10.96.0.0/40")).unwrap_err();
        assert!(e.to_string().contains("prefix length 40"), "{e}");
        assert!(serde_json::from_value::<Ipv4Cidr>(json!(12)).is_err());
    }

    #[test]
    fn mac_valid() {
        let m: Mac = "02:AB:cd:00:ff:10".parse().unwrap();
        assert_eq!(m.octets(), [0x02, 0xab, 0xcd, 0x00, 0xff, 0x10]);
        assert_eq!(m.to_string(), "02:ab:cd:00:ff:10");
        assert_eq!(
            Mac::from([2, 0, 0, 0, 0, 1]).to_string(),
            "02:00:00:00:00:01"
        );
    }

    #[test]
    fn mac_invalid_classes() {
        assert_eq!(
            "02:11:22".parse::<Mac>().unwrap_err().to_string(),
            r#""02:11:22" is not a MAC address: expected 6 groups separated by ':', got 3"#
        );
        assert!(matches!(
            "02:11:22:33:44:55:66".parse::<Mac>(),
            Err(MacError::Groups { groups: 7, .. })
        ));
        for (bad, group) in [
            ("02:11:22:33:44:zz", "zz"),
            ("02:11:22:33:44:5", "5"),
            ("02:11:22:33:44:555", "555"),
            ("02:11:22:33:44:+5", "+5"),
            ("02:11:22:33:44:é", "é"),
            ("02-11:22:33:44:55:66", "02-11"),
        ] {
            match bad.parse::<Mac>() {
                Err(MacError::BadGroup { group: got, .. }) => assert_eq!(got, group, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn mac_json_round_trip() {
        let m: Mac = serde_json::from_value(json!("02:11:22:33:44:55")).unwrap();
        assert_eq!(serde_json::to_value(m).unwrap(), json!("02:11:22:33:44:55"));
        assert!(serde_json::from_value::<Mac>(json!("02:11:22:33:44")).is_err());
    }

    #[test]
    fn option_valid() {
        let o = DhcpOption::parse(60, "lanlink").unwrap();
        assert_eq!((o.code(), o.value()), (60, &b"lanlink"[..]));
        let o = DhcpOption::parse(77, "0x0a0B").unwrap();
        assert_eq!(o.value(), [0x0a, 0x0b]);
        assert_eq!(DhcpOption::parse(77, "0x").unwrap().value(), b"");
        assert_eq!(DhcpOption::parse(1, "").unwrap().value(), b"");
        assert_eq!(
            DhcpOption::parse(254, &"x".repeat(255))
                .unwrap()
                .value()
                .len(),
            255
        );
        let hex255 = format!("0x{}", "ab".repeat(255));
        assert_eq!(DhcpOption::parse(254, &hex255).unwrap().value().len(), 255);
        // Text and hex of the same bytes are the same option.
        assert_eq!(
            DhcpOption::parse(60, "ab").unwrap(),
            DhcpOption::parse(60, "0x6162").unwrap()
        );
        assert_eq!(
            DhcpOption::new(60, b"ab".to_vec()).unwrap(),
            DhcpOption::parse(60, "ab").unwrap()
        );
    }

    #[test]
    fn option_refuses_every_reserved_code() {
        for code in RESERVED_OPTION_CODES {
            let e = DhcpOption::parse(code.into(), "x").unwrap_err();
            assert_eq!(e.key(), "code", "{code}");
            assert!(DhcpOption::new(code, vec![1]).is_err(), "{code}");
        }
        assert_eq!(
            DhcpOption::parse(12, "x").unwrap_err().to_string(),
            "option code 12 (host name) is written by the agent's DHCP client itself"
        );
        assert_eq!(
            DhcpOption::parse(61, "x").unwrap_err(),
            DhcpOptionError::ReservedCode { code: 61 }
        );
        assert_eq!(
            DhcpOption::parse(0, "x").unwrap_err().to_string(),
            "option code 0 is out of range 1..=254"
        );
        assert_eq!(
            DhcpOption::parse(300, "x").unwrap_err(),
            DhcpOptionError::CodeOutOfRange { code: 300 }
        );
        assert_eq!(
            DhcpOption::parse(255, "x").unwrap_err(),
            DhcpOptionError::CodeOutOfRange { code: 255 }
        );
    }

    #[test]
    fn option_refuses_bad_values() {
        let e = DhcpOption::parse(60, "0xabc").unwrap_err();
        assert_eq!(e.key(), "value");
        assert_eq!(
            e.to_string(),
            r#""0xabc" has an odd number of hex digits after 0x"#
        );
        assert_eq!(
            DhcpOption::parse(60, "0xzz").unwrap_err().to_string(),
            r#""0xzz" has characters other than hex digits after 0x"#
        );
        assert!(matches!(
            DhcpOption::parse(60, "0x+1"),
            Err(DhcpOptionError::NotHex { .. })
        ));
        assert_eq!(
            DhcpOption::parse(60, &"x".repeat(256))
                .unwrap_err()
                .to_string(),
            "value is 256 bytes long, a DHCP option holds at most 255"
        );
        let hex256 = format!("0x{}", "00".repeat(256));
        assert_eq!(
            DhcpOption::parse(60, &hex256).unwrap_err(),
            DhcpOptionError::TooLong { len: 256 }
        );
        assert_eq!(
            DhcpOption::new(60, vec![0; 256]).unwrap_err(),
            DhcpOptionError::TooLong { len: 256 }
        );
    }

    /// The agent decoded with `&hex[i..i + 2]`, which panics when a pair
    /// boundary falls inside a multi-byte character ("€0", "1éé1"); decoding
    /// works on bytes and refuses every non-ASCII digit.
    #[test]
    fn option_non_ascii_hex_is_an_error_not_a_panic() {
        for value in ["0x€0", "0x1éé1", "0x0€", "0xé1", "0x1é", "0xéé"] {
            let e = DhcpOption::parse(60, value).unwrap_err();
            assert_eq!(
                e,
                DhcpOptionError::NotHex {
                    value: value.into()
                },
                "{value}"
            );
        }
        let e =
            serde_json::from_value::<DhcpOption>(json!({"code": 60, "value": "0xé1"})).unwrap_err();
        assert!(e.to_string().contains("other than hex digits"), "{e}");
    }

    #[test]
    fn option_json_round_trip() {
        for wire in [
            json!({"code": 60, "value": "lanlink"}),
            json!({"code": 77, "value": "0x0a0b"}),
            json!({"code": 77, "value": "0x"}),
            json!({"code": 43, "value": ""}),
        ] {
            let o: DhcpOption = serde_json::from_value(wire.clone()).unwrap();
            assert_eq!(serde_json::to_value(&o).unwrap(), wire);
        }
        // Hex is written back in lower case, as hex.
        let o: DhcpOption = serde_json::from_value(json!({"code": 77, "value": "0x0A0B"})).unwrap();
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            json!({"code": 77, "value": "0x0a0b"})
        );
        // Bytes that would not read back as the same text are written as hex.
        for (bytes, wire) in [
            (vec![0xff, 0x00], "0xff00"),
            (b"0x12".to_vec(), "0x30783132"),
            (b"a\nb".to_vec(), "0x610a62"),
            (b"plain".to_vec(), "plain"),
        ] {
            let o = DhcpOption::new(60, bytes.clone()).unwrap();
            let json = serde_json::to_value(&o).unwrap();
            assert_eq!(json, json!({"code": 60, "value": wire}));
            let back: DhcpOption = serde_json::from_value(json).unwrap();
            assert_eq!(back.value(), bytes);
        }
        for bad in [
            json!({"code": 53, "value": "x"}),
            json!({"code": 60}),
            json!({"code": "60", "value": "x"}),
            json!({"code": 60, "value": "x", "extra": 1}),
            json!({"code": -1, "value": "x"}),
        ] {
            assert!(
                serde_json::from_value::<DhcpOption>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
