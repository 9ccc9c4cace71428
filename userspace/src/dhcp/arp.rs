//! Address conflict detection before a pod uses a lease (RFC 2131 4.4.1,
//! RFC 5227 2.1): ARP probes for the acknowledged address, sent from the
//! node's uplink with the pod's MAC, and a bounded wait for anyone answering.
//!
//! A probe is an ARP request with sender IP 0.0.0.0, so it does not pollute
//! the ARP caches of the LAN. The address is in use if, while probing, any
//! ARP packet arrives whose sender IP is the address (a reply, a request or
//! an announcement of its holder), or another host's probe for the same
//! address (two clients after the same address at once).
//!
//! The socket is `ETH_P_ALL` for the same reason as the DHCP socket: replies
//! are unicast to the pod's MAC, which the dataplane redirects into the pod
//! at TC ingress, and only a tap sees them before that. Its classic BPF filter
//! keeps only ARP packets that name the probed address, so a probe is woken
//! by nothing else on the LAN. RFC 5227's timings (three probes one to two
//! seconds apart) would add seconds to every pod start; the agent waits 300 ms
//! by default, which a LAN host answers well within, and the netconf's
//! `ipam.arpProbeMs` changes it (0: no probe).

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::time::Instant;

use super::error::{DhcpError, Mac};
use super::socket::{PacketSocket, jump, stmt};
use super::wire::BROADCAST_MAC;

/// EtherType of ARP.
const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethernet header plus an IPv4-over-Ethernet ARP packet.
const ARP_FRAME_LEN: usize = 14 + 28;
/// The shortest Ethernet frame without FCS; probes are padded to it.
const MIN_FRAME_LEN: usize = 60;
/// Offset of the sender protocol address in the frame.
const SPA: usize = 28;
/// Offset of the target protocol address in the frame.
const TPA: usize = 38;

/// How many probes to send and how long to listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpProbe {
    /// Probes sent (at least one).
    pub probes: u32,
    /// Wait between two probes.
    pub interval: Duration,
    /// Wait after the last probe before the address is declared free.
    pub wait: Duration,
}

impl Default for ArpProbe {
    /// 300 ms: two probes 100 ms apart (in case one is lost), then 200 ms
    /// listening.
    fn default() -> Self {
        Self::within(Duration::from_millis(300))
    }
}

impl ArpProbe {
    /// A probe that takes `total` at most: two probes a third of it apart,
    /// then two thirds of it listening (the default is `within(300 ms)`).
    /// One probe when `total` is under 30 ms, where a second would be sent
    /// too soon after the first to survive a loss the first did not.
    pub fn within(total: Duration) -> Self {
        if total < Duration::from_millis(30) {
            return ArpProbe {
                probes: 1,
                interval: Duration::ZERO,
                wait: total,
            };
        }
        let interval = total / 3;
        ArpProbe {
            probes: 2,
            interval,
            wait: total - interval,
        }
    }

    /// The probe of netconf `ipam.arpProbeMs`: [`within`](Self::within)
    /// that many milliseconds, or none for 0.
    pub fn from_millis(ms: u64) -> Option<Self> {
        (ms > 0).then(|| Self::within(Duration::from_millis(ms)))
    }

    /// The longest a probe can take.
    pub fn duration(&self) -> Duration {
        self.interval
            .saturating_mul(self.probes.max(1) - 1)
            .saturating_add(self.wait)
    }
}

/// The probe frame: broadcast ARP request "who has `ip`" from `mac` with
/// sender IP 0.0.0.0 (RFC 5227 2.1.1), padded to 60 bytes.
pub(crate) fn probe_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(MIN_FRAME_LEN);
    f.extend_from_slice(&BROADCAST_MAC);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0; 4]); // sender IP: none yet
    f.extend_from_slice(&[0; 6]); // target MAC: unknown
    f.extend_from_slice(&ip.octets());
    f.resize(MIN_FRAME_LEN, 0);
    f
}

/// `ld vlan_avail; jne #0 drop; ldh [12]; jne #0x806 drop; ld [28]; jeq #ip
/// keep; ld [38]; jne #ip drop; keep: ret #-1; drop: ret #0`: ARP packets
/// whose sender or target address is `ip`, untagged.
pub(crate) fn filter(ip: Ipv4Addr) -> [libc::sock_filter; 10] {
    let ip = u32::from(ip);
    [
        stmt(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_AD_OFF + libc::SKF_AD_VLAN_TAG_PRESENT) as u32,
        ),
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 0, 7),
        stmt(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 12),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            ETHERTYPE_ARP.into(),
            0,
            5,
        ),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, SPA as u32),
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, ip, 2, 0),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, TPA as u32),
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, ip, 0, 1),
        stmt(libc::BPF_RET | libc::BPF_K, u32::MAX),
        stmt(libc::BPF_RET | libc::BPF_K, 0),
    ]
}

/// The MAC of whoever `frame` shows holding (or probing for) `ip`, if it is
/// a conflict for a probe sent by `mac`. Never panics on short or odd frames.
pub(crate) fn conflict(frame: &[u8], mac: [u8; 6], ip: Ipv4Addr) -> Option<[u8; 6]> {
    if frame.len() < ARP_FRAME_LEN
        || frame[12..14] != ETHERTYPE_ARP.to_be_bytes()
        || frame[14..20] != [0, 1, 0x08, 0x00, 6, 4]
    {
        return None;
    }
    let op = u16::from_be_bytes([frame[20], frame[21]]);
    let mut sha = [0u8; 6];
    sha.copy_from_slice(&frame[22..28]);
    let spa = Ipv4Addr::new(frame[SPA], frame[SPA + 1], frame[SPA + 2], frame[SPA + 3]);
    let tpa = Ipv4Addr::new(frame[TPA], frame[TPA + 1], frame[TPA + 2], frame[TPA + 3]);
    if sha == mac || frame[6..12] == mac {
        // Our own probe, looped back by a hairpinning switch.
        return None;
    }
    let holder = spa == ip;
    let rival_probe = op == 1 && spa.is_unspecified() && tpa == ip;
    (holder || rival_probe).then_some(sha)
}

/// Probes `ip` for `mac` on the uplink: `Ok(Some(holder_mac))` if the address
/// is in use, `Ok(None)` if nobody answered within [`ArpProbe::duration`].
pub(crate) async fn probe(
    uplink: &str,
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    cfg: &ArpProbe,
) -> Result<Option<[u8; 6]>, DhcpError> {
    let socket = PacketSocket::open_filtered(uplink, ifindex, &filter(ip), ETHERTYPE_ARP)?;
    let frame = probe_frame(mac, ip);
    let mut buf = [0u8; 256];
    let probes = cfg.probes.max(1);
    for sent in 1..=probes {
        socket
            .send(&frame, BROADCAST_MAC)
            .await
            .map_err(|source| DhcpError::Send {
                uplink: uplink.to_owned(),
                mac: Mac(mac),
                msg_type: "arp probe",
                source,
            })?;
        let until = Instant::now()
            + if sent == probes {
                cfg.wait
            } else {
                cfg.interval
            };
        loop {
            match tokio::time::timeout_at(until, socket.recv(&mut buf)).await {
                Err(_elapsed) => break,
                Ok(Ok(len)) => {
                    if let Some(holder) = conflict(&buf[..len.min(buf.len())], mac, ip) {
                        return Ok(Some(holder));
                    }
                }
                Ok(Err(source)) => {
                    return Err(DhcpError::Socket {
                        uplink: uplink.to_owned(),
                        op: "receiving arp replies",
                        source,
                    });
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::socket::tests::run_cbpf;

    const POD: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const HOLDER: [u8; 6] = [0x52, 0x54, 0, 0, 0, 9];
    const IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 150);

    /// An ARP frame from `sha`/`spa` asking for or answering about `tpa`.
    fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let mut f = probe_frame(sha, tpa);
        f[20..22].copy_from_slice(&op.to_be_bytes());
        f[SPA..SPA + 4].copy_from_slice(&spa.octets());
        f
    }

    #[test]
    fn the_probe_is_an_rfc5227_request_from_the_pod() {
        let f = probe_frame(POD, IP);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &POD);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(u16::from_be_bytes([f[20], f[21]]), 1, "a request");
        assert_eq!(&f[22..28], &POD, "sender hardware address");
        assert_eq!(&f[28..32], &[0; 4], "sender ip 0.0.0.0");
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &IP.octets());
        // Parsed back by etherparse as ARP.
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        assert!(matches!(p.net, Some(etherparse::NetSlice::Arp(_))));
    }

    #[test]
    fn replies_announcements_and_rival_probes_are_conflicts() {
        let other = Ipv4Addr::new(198, 18, 0, 151);
        // The holder answers the probe.
        assert_eq!(conflict(&arp(2, HOLDER, IP, IP), POD, IP), Some(HOLDER));
        // The holder asks for someone else, or announces itself.
        assert_eq!(conflict(&arp(1, HOLDER, IP, other), POD, IP), Some(HOLDER));
        // Someone else probes for the same address.
        assert_eq!(
            conflict(&arp(1, HOLDER, Ipv4Addr::UNSPECIFIED, IP), POD, IP),
            Some(HOLDER)
        );
        // Not conflicts: a router asking for the address (it has another
        // one), our own probe looped back, another address, garbage.
        assert_eq!(conflict(&arp(1, HOLDER, other, IP), POD, IP), None);
        assert_eq!(conflict(&probe_frame(POD, IP), POD, IP), None);
        assert_eq!(conflict(&arp(2, HOLDER, other, other), POD, IP), None);
        assert_eq!(conflict(&[], POD, IP), None);
        let full = arp(2, HOLDER, IP, IP);
        for len in 0..ARP_FRAME_LEN {
            assert_eq!(conflict(&full[..len], POD, IP), None, "cut at {len}");
        }
        let mut ipv6 = full.clone();
        ipv6[16..18].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(conflict(&ipv6, POD, IP), None);
    }

    #[test]
    fn the_filter_keeps_only_arp_about_the_address() {
        let f = filter(IP);
        let other = Ipv4Addr::new(198, 18, 0, 151);
        assert_eq!(run_cbpf(&f, &arp(2, HOLDER, IP, IP), false), u32::MAX);
        assert_eq!(run_cbpf(&f, &arp(1, HOLDER, other, IP), false), u32::MAX);
        assert_eq!(run_cbpf(&f, &arp(1, HOLDER, IP, other), false), u32::MAX);
        assert_eq!(run_cbpf(&f, &arp(1, HOLDER, other, other), false), 0);
        assert_eq!(run_cbpf(&f, &arp(2, HOLDER, IP, IP), true), 0, "vlan");
        let mut ip = arp(2, HOLDER, IP, IP);
        ip[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(run_cbpf(&f, &ip, false), 0);
        assert_eq!(run_cbpf(&f, &[0u8; 10], false), 0);
    }

    #[test]
    fn default_probe_is_bounded() {
        let p = ArpProbe::default();
        assert_eq!(p.duration(), Duration::from_millis(300));
        let one = ArpProbe {
            probes: 0,
            ..ArpProbe::default()
        };
        assert_eq!(one.duration(), Duration::from_millis(200));
    }

    #[test]
    fn within_spends_exactly_the_budget() {
        assert_eq!(
            ArpProbe::default(),
            ArpProbe {
                probes: 2,
                interval: Duration::from_millis(100),
                wait: Duration::from_millis(200),
            }
        );
        assert_eq!(ArpProbe::from_millis(0), None);
        assert_eq!(ArpProbe::from_millis(300), Some(ArpProbe::default()));
        for ms in [1, 29, 30, 31, 100, 1000, 2999] {
            let p = ArpProbe::within(Duration::from_millis(ms));
            assert_eq!(p.duration(), Duration::from_millis(ms), "{p:?}");
            assert_eq!(p.probes, if ms < 30 { 1 } else { 2 }, "{p:?}");
        }
    }
}
