//! Who the client says it is on the pod's behalf: the pod's MAC address, its
//! DHCP client identifier (option 61) and its hostname (option 12).
//!
//! Stable identities are derived from `namespace/pod/ifname` with SHA-256, so
//! a pod that is deleted and re-created under the same name comes back with
//! the same MAC and client id, and a reservation on the LAN's DHCP server
//! keeps matching it. The derivation is versioned and must never change
//! silently: it is part of what users configure their servers against.

use sha2::{Digest, Sha256};

/// Domain separator of the stable derivation; bump the suffix only together
/// with a migration note, as it changes every pod's MAC.
const STABLE_ID_CONTEXT: &[u8] = b"lanlink stable pod identity v1";

/// Client identifier type 255: RFC 4361 (IAID + DUID), so DHCPv4 and a
/// future DHCPv6 client can share one identity.
const CLIENT_ID_TYPE_RFC4361: u8 = 0xff;

/// DUID-UUID (RFC 6355).
const DUID_TYPE_UUID: [u8; 2] = [0x00, 0x04];

/// The MAC and client identifier for `namespace/pod/ifname`: the same input
/// always gives the same result, on every node and every agent version.
///
/// The MAC is a locally administered unicast address. The client id is
/// `0xff`, a 4-byte IAID and a DUID-UUID (RFC 4361, RFC 6355), 23 bytes.
pub fn stable_identity(namespace: &str, pod: &str, ifname: &str) -> ([u8; 6], Vec<u8>) {
    let mut h = Sha256::new();
    h.update(STABLE_ID_CONTEXT);
    // Length-prefixed so that ("a", "bc") and ("ab", "c") differ.
    for part in [namespace, pod, ifname] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest: [u8; 32] = h.finalize().into();
    // RFC 9562 version 8 (custom) UUID.
    identity_from(&digest, 8)
}

/// A fresh random MAC (locally administered unicast) and client identifier
/// (same layout as [`stable_identity`], with a version 4 UUID).
pub fn random_identity() -> ([u8; 6], Vec<u8>) {
    let mut bytes = [0u8; 26];
    rand::fill(&mut bytes[..]);
    identity_from(&bytes, 4)
}

/// The MAC (bytes 0–5), and the client identifier with IAID bytes 6–9 and a
/// UUID of `version` from bytes 10–25, of `bytes`.
fn identity_from(bytes: &[u8], version: u8) -> ([u8; 6], Vec<u8>) {
    let mac: [u8; 6] = bytes[..6].try_into().unwrap_or_default();
    let mut uuid: [u8; 16] = bytes[10..26].try_into().unwrap_or_default();
    uuid[6] = (uuid[6] & 0x0f) | (version << 4);
    (
        local_unicast(mac),
        client_id(bytes[6..10].try_into().unwrap_or_default(), uuid),
    )
}

/// A pod name as a DNS label usable as DHCP option 12: lower-case `a-z`,
/// `0-9` and `-`, other characters (`.`, `_`, ...) replaced by `-`, at most
/// 63 characters, no leading or trailing `-`. `None` when nothing is left.
pub fn sanitize_hostname(pod_name: &str) -> Option<String> {
    let mapped: String = pod_name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let trimmed = mapped.trim_start_matches('-');
    // All characters are ASCII now, so byte slicing is char slicing.
    let label = trimmed[..trimmed.len().min(63)].trim_end_matches('-');
    (!label.is_empty()).then(|| label.to_owned())
}

/// Clears the multicast bit and sets the locally administered bit.
fn local_unicast(mut mac: [u8; 6]) -> [u8; 6] {
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

fn client_id(iaid: [u8; 4], uuid: [u8; 16]) -> Vec<u8> {
    // RFC 9562 variant bits.
    let mut uuid = uuid;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    let mut id = Vec::with_capacity(1 + 4 + 2 + 16);
    id.push(CLIENT_ID_TYPE_RFC4361);
    id.extend_from_slice(&iaid);
    id.extend_from_slice(&DUID_TYPE_UUID);
    id.extend_from_slice(&uuid);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_local_unicast(mac: [u8; 6]) {
        assert_eq!(mac[0] & 0x01, 0, "multicast bit set in {mac:02x?}");
        assert_eq!(mac[0] & 0x02, 0x02, "not locally administered: {mac:02x?}");
    }

    #[test]
    fn stable_identity_is_deterministic_and_local_unicast() {
        let (mac, id) = stable_identity("default", "web-0", "eth0");
        assert_eq!(
            stable_identity("default", "web-0", "eth0"),
            (mac, id.clone())
        );
        assert_local_unicast(mac);
        assert_eq!(id.len(), 23);
        assert_eq!(id[0], 0xff);
        assert_eq!(&id[5..7], &[0, 4]);
        // Pinned (computed independently): the derivation must never change
        // between versions, or every reservation on users' DHCP servers breaks.
        assert_eq!(mac, [0xaa, 0xb2, 0xb5, 0x5b, 0x82, 0x0e]);
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "ff130c8fed00049e68ea09b4d283c2b17c46396af6792e");
    }

    #[test]
    fn stable_identity_separates_fields() {
        let a = stable_identity("a", "bc", "eth0");
        let b = stable_identity("ab", "c", "eth0");
        let c = stable_identity("a", "bc", "net1");
        assert_ne!(a.0, b.0);
        assert_ne!(a.1, b.1);
        assert_ne!(a.0, c.0);
        for _ in 0..64 {
            assert_local_unicast(
                stable_identity(&rand::random::<u32>().to_string(), "p", "eth0").0,
            );
        }
    }

    #[test]
    fn random_identity_is_local_unicast_and_random() {
        let (m1, c1) = random_identity();
        let (m2, c2) = random_identity();
        assert_local_unicast(m1);
        assert_local_unicast(m2);
        assert_ne!((m1, &c1), (m2, &c2));
        assert_eq!(c1.len(), 23);
        assert_eq!(c1[0], 0xff);
    }

    #[test]
    fn hostnames_are_sanitised_to_a_label() {
        assert_eq!(sanitize_hostname("web-0").as_deref(), Some("web-0"));
        assert_eq!(
            sanitize_hostname("Web_Server.v2").as_deref(),
            Some("web-server-v2")
        );
        assert_eq!(sanitize_hostname("--a--").as_deref(), Some("a"));
        assert_eq!(sanitize_hostname("ünï").as_deref(), Some("n"));
        assert_eq!(sanitize_hostname(""), None);
        assert_eq!(sanitize_hostname("..."), None);
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        // Cut at 63 leaves a trailing '-', which must go.
        assert_eq!(sanitize_hostname(&long), Some("a".repeat(62)));
        let s = sanitize_hostname(&"x".repeat(300)).unwrap();
        assert_eq!(s.len(), 63);
    }
}
