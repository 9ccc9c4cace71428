//! The packet socket the client speaks through: `AF_PACKET`/`SOCK_RAW` on the
//! uplink, whole Ethernet frames in both directions.
//!
//! Receiving uses protocol `ETH_P_ALL` on purpose: `ETH_P_ALL` sockets are
//! taps that see a frame before TC ingress, while protocol-specific ones
//! (`ETH_P_IP`) run after it and would miss the replies the eBPF dataplane
//! redirects straight into the pod. A classic BPF filter keeps only IPv4 UDP
//! to port 68 so the agent is not woken by every frame on the LAN, and
//! `PACKET_IGNORE_OUTGOING` (Linux 4.20) hides the agent's own transmissions
//! and the pods' frames the dataplane sends out of the uplink.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use super::error::DhcpError;
use crate::sys::{register, setsockopt};

/// The frame sizes the client reads: a standard MTU plus headers, with room
/// for jumbo frames; longer frames are reported as truncated.
pub(crate) const RECV_BUF_LEN: usize = 9216;

/// Socket receive buffer: room for a burst of replies to many concurrent ADDs.
const RCVBUF_BYTES: libc::c_int = 1 << 20;

pub(crate) const fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

pub(crate) const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// `ld vlan_avail; jne drop; ldh [12]; jne #0x800 drop; ldb [23]; jne #17 drop;
/// ldh [20]; jset #0x1fff drop; ldxb 4*([14]&0xf); ldh [x+16]; jne #68 drop;
/// ret #-1; drop: ret #0`. Jump offsets count from the next instruction.
///
/// Frames whose VLAN tag the NIC stripped (the tap sees them before the VLAN
/// device does) belong to another broadcast domain and are dropped; so are
/// non-first fragments, which have no UDP header at offset 14 + ihl.
pub(crate) const FILTER: [libc::sock_filter; 13] = [
    stmt(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        (libc::SKF_AD_OFF + libc::SKF_AD_VLAN_TAG_PRESENT) as u32,
    ),
    jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 0, 10),
    stmt(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 12),
    jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0x0800, 0, 8),
    stmt(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 23),
    jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 17, 0, 6),
    stmt(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 20),
    jump(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, 0x1fff, 4, 0),
    stmt(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, 14),
    stmt(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, 16),
    jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 68, 0, 1),
    stmt(libc::BPF_RET | libc::BPF_K, u32::MAX),
    stmt(libc::BPF_RET | libc::BPF_K, 0),
];

/// A non-blocking packet socket bound to one interface, registered with tokio.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
    /// 0 for the socketpair used by unit tests (frames are `send`, not `sendto`).
    ifindex: libc::c_int,
    /// EtherType of the frames sent (`sll_protocol` of `sendto`).
    send_protocol: u16,
}

fn os_err(uplink: &str, op: &'static str) -> DhcpError {
    DhcpError::Socket {
        uplink: uplink.to_owned(),
        op,
        source: io::Error::last_os_error(),
    }
}

impl PacketSocket {
    /// Opens the DHCP socket on `uplink` ([`FILTER`]), in the calling
    /// thread's netns. Must run inside a tokio runtime (for the `AsyncFd`
    /// registration).
    pub(crate) fn open(uplink: &str, ifindex: u32) -> Result<Self, DhcpError> {
        Self::open_filtered(uplink, ifindex, &FILTER, libc::ETH_P_IP as u16)
    }

    /// Opens an `ETH_P_ALL` socket on `uplink` that receives only the frames
    /// `filter` accepts and sends frames of EtherType `send_protocol`.
    pub(crate) fn open_filtered(
        uplink: &str,
        ifindex: u32,
        filter: &[libc::sock_filter],
        send_protocol: u16,
    ) -> Result<Self, DhcpError> {
        // Protocol 0 at creation: no frame is queued before the filter is
        // attached; bind() below starts reception with ETH_P_ALL.
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(os_err(uplink, "socket(AF_PACKET, SOCK_RAW)"));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        if setsockopt(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog).is_err() {
            return Err(os_err(uplink, "SO_ATTACH_FILTER"));
        }
        let one: libc::c_int = 1;
        if setsockopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one).is_err() {
            return Err(os_err(uplink, "PACKET_IGNORE_OUTGOING"));
        }
        // Best effort: the default buffer still works, only bursts may drop.
        let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &RCVBUF_BYTES);

        let ifindex = ifindex as libc::c_int;
        let mut addr: libc::sockaddr_ll = ll_addr(ifindex, libc::ETH_P_ALL as u16, [0; 6]);
        addr.sll_halen = 0;
        // SAFETY: `addr` is a valid sockaddr_ll for the duration of the call.
        let rc = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(os_err(uplink, "bind(ETH_P_ALL)"));
        }
        let fd = register(fd).map_err(|source| DhcpError::Socket {
            uplink: uplink.to_owned(),
            op: "registering with tokio",
            source,
        })?;
        Ok(PacketSocket {
            fd,
            ifindex,
            send_protocol,
        })
    }

    /// One end of a datagram socketpair standing in for the uplink in unit
    /// tests; the other end sees and injects whole frames.
    #[cfg(test)]
    pub(crate) fn pair() -> io::Result<(Self, std::os::unix::net::UnixDatagram)> {
        let (a, b) = std::os::unix::net::UnixDatagram::pair()?;
        a.set_nonblocking(true)?;
        let fd = register(OwnedFd::from(a))?;
        Ok((
            PacketSocket {
                fd,
                ifindex: 0,
                send_protocol: libc::ETH_P_IP as u16,
            },
            b,
        ))
    }

    /// Sends one whole Ethernet frame; `dst_mac` must be the frame's
    /// destination (the kernel wants it in the address too).
    pub(crate) async fn send(&self, frame: &[u8], dst_mac: [u8; 6]) -> io::Result<()> {
        let addr = ll_addr(self.ifindex, self.send_protocol, dst_mac);
        self.fd
            .async_io(tokio::io::Interest::WRITABLE, |fd| {
                // SAFETY: `frame` and `addr` outlive the call.
                let n = unsafe {
                    if self.ifindex == 0 {
                        libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0)
                    } else {
                        libc::sendto(
                            fd.as_raw_fd(),
                            frame.as_ptr().cast(),
                            frame.len(),
                            0,
                            (&addr as *const libc::sockaddr_ll).cast(),
                            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                        )
                    }
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else if n as usize != frame.len() {
                    Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "short write on packet socket",
                    ))
                } else {
                    Ok(())
                }
            })
            .await
    }

    /// Adds `mac` to the interface's unicast (`PACKET_MR_UNICAST`) or
    /// multicast (`PACKET_MR_MULTICAST`) filter for as long as the socket
    /// lives, so a real NIC delivers frames for it.
    pub(crate) fn add_membership(&self, ty: libc::c_int, mac: [u8; 6]) -> io::Result<()> {
        // SAFETY: packet_mreq is plain old data; all-zero is a valid value.
        let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
        mreq.mr_ifindex = self.ifindex;
        mreq.mr_type = ty as u16;
        mreq.mr_alen = 6;
        mreq.mr_address[..6].copy_from_slice(&mac);
        setsockopt(
            self.fd.get_ref().as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq,
        )
    }

    /// Receives one frame into `buf`; returns the frame's real length, which
    /// is larger than `buf.len()` when the frame was truncated (`MSG_TRUNC`).
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .async_io(tokio::io::Interest::READABLE, |fd| {
                // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
                let n = unsafe {
                    libc::recv(
                        fd.as_fd().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_TRUNC,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            })
            .await
    }
}

fn ll_addr(ifindex: libc::c_int, protocol: u16, mac: [u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol.to_be();
    addr.sll_ifindex = ifindex;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&mac);
    addr
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn run_filter(frame: &[u8], vlan: bool) -> u32 {
        run_cbpf(&FILTER, frame, vlan)
    }

    /// Just enough of a classic BPF interpreter to run [`FILTER`] and the ARP
    /// probe's filter, so the jump offsets are checked without root. `vlan`
    /// is the ancillary VLAN-tag-present value.
    pub(crate) fn run_cbpf(filter: &[libc::sock_filter], frame: &[u8], vlan: bool) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |off: usize, size: usize| -> Option<u32> {
            let b = frame.get(off..off + size)?;
            Some(b.iter().fold(0u32, |acc, &v| acc << 8 | u32::from(v)))
        };
        loop {
            let ins = filter[pc];
            let code = u32::from(ins.code);
            pc += 1;
            let size = match code & 0x18 {
                libc::BPF_W => 4,
                libc::BPF_H => 2,
                _ => 1,
            };
            match code & 0x07 {
                libc::BPF_LD
                    if code & 0xe0 == libc::BPF_ABS && ins.k >= libc::SKF_AD_OFF as u32 =>
                {
                    a = u32::from(vlan);
                }
                libc::BPF_LD if code & 0xe0 == libc::BPF_ABS => match load(ins.k as usize, size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                libc::BPF_LD => match load((x + ins.k) as usize, size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                libc::BPF_LDX => match load(ins.k as usize, 1) {
                    Some(v) => x = 4 * (v & 0xf),
                    None => return 0,
                },
                libc::BPF_JMP => {
                    let taken = match code & 0xf0 {
                        libc::BPF_JEQ => a == ins.k,
                        libc::BPF_JSET => a & ins.k != 0,
                        other => panic!("unexpected jump {other:#x}"),
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                libc::BPF_RET => return ins.k,
                other => panic!("unexpected class {other:#x}"),
            }
        }
    }

    fn udp_frame(dst_port: u16, ihl_options: bool) -> Vec<u8> {
        let mut ip = etherparse::Ipv4Header::new(
            8,
            64,
            etherparse::IpNumber::UDP,
            [198, 18, 0, 1],
            [255; 4],
        )
        .unwrap();
        if ihl_options {
            ip.options = [1, 1, 1, 0][..].try_into().unwrap();
        }
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2; 6], [0xff; 6])
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .udp(67, dst_port)
            .write(&mut f, &[0; 8])
            .unwrap();
        f
    }

    #[test]
    fn filter_keeps_only_ipv4_udp_to_port_68() {
        assert_eq!(run_filter(&udp_frame(68, false), false), u32::MAX);
        assert_eq!(
            run_filter(&udp_frame(68, true), false),
            u32::MAX,
            "ip options shift the udp header"
        );
        assert_eq!(run_filter(&udp_frame(67, false), false), 0);
        assert_eq!(run_filter(&udp_frame(68, false), true), 0, "vlan-tagged");
        let mut frag = udp_frame(68, false);
        frag[20] |= 0x01; // fragment offset != 0
        assert_eq!(run_filter(&frag, false), 0);
        let mut arp = udp_frame(68, false);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run_filter(&arp, false), 0);
        let mut tcp = udp_frame(68, false);
        tcp[23] = 6;
        assert_eq!(run_filter(&tcp, false), 0);
        assert_eq!(run_filter(&[0u8; 10], false), 0);
    }
}
