//! `lab-udpflood`: a small-packet UDP rate benchmark for the lab.
//!
//! ```text
//! lab-udpflood recv <ip:port> [--max-secs S] [--idle-ms M]
//! lab-udpflood send <ip:port> [--secs S] [--payload B] [--max-packets N]
//! ```
//!
//! The sender blasts UDP datagrams of `--payload` bytes (default 18: a
//! 64-byte Ethernet frame with its FCS, RFC 2544's smallest) at the receiver
//! for `--secs` (default 3, at most 60) or `--max-packets` (default 100
//! million), in `sendmmsg` batches so the system call is not what is
//! measured, and prints `{"sent":…,"secs":…,"pps":…}`.
//!
//! The receiver counts datagrams (`recvmmsg` batches) until `--idle-ms`
//! (default 500) pass without one after the first, or `--max-secs` (default
//! 60) in all, and prints `{"packets":…,"bytes":…,"secs":…,"pps":…}`, where
//! `secs` runs from its first datagram to its last: the rate delivered.

use lanlink_lab::toolargs::{addr, opt};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Datagrams per `sendmmsg`/`recvmmsg` call.
const BATCH: usize = 64;

/// Largest datagram the receiver accepts in full.
const MAX_DATAGRAM: usize = 2048;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("send") => send(&args[1..]),
        Some("recv") => recv(&args[1..]),
        _ => Err("usage: lab-udpflood send|recv <ip:port> [options]".to_owned()),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lab-udpflood: {e}");
            ExitCode::FAILURE
        }
    }
}

fn send(args: &[String]) -> Result<String, String> {
    let to = addr(args)?;
    let secs: f64 = opt(args, "--secs", 3.0)?;
    let payload: usize = opt(args, "--payload", 18)?;
    let max_packets: u64 = opt(args, "--max-packets", 100_000_000)?;
    if !(0.0..=60.0).contains(&secs) || payload > 1400 {
        return Err("--secs must be in 0..=60 and --payload at most 1400".to_owned());
    }
    let sock = UdpSocket::bind(("0.0.0.0", 0)).map_err(|e| format!("cannot bind: {e}"))?;
    sock.connect(to)
        .map_err(|e| format!("cannot connect to {to}: {e}"))?;
    let data = vec![0xa5u8; payload];
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        })
        .collect();
    let mut msgs = mmsg_headers(&mut iov);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut sent: u64 = 0;
    while sent < max_packets && Instant::now() < deadline {
        let n = (max_packets - sent).min(BATCH as u64) as libc::c_uint;
        // SAFETY: msgs points to BATCH valid headers whose iovecs point into
        // `data`, which outlives the call; n ≤ BATCH.
        let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), n, 0) };
        if r > 0 {
            sent += r as u64;
        }
        // r < 0: ENOBUFS (queue full) or ECONNREFUSED (an ICMP error from a
        // receiver not yet bound): the packets are not counted; keep going.
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(format!(
        "{{\"sent\":{sent},\"secs\":{elapsed:.6},\"pps\":{:.1}}}",
        sent as f64 / elapsed.max(1e-9)
    ))
}

fn recv(args: &[String]) -> Result<String, String> {
    let at = addr(args)?;
    let max = Duration::from_secs(opt(args, "--max-secs", 60)?);
    let idle = Duration::from_millis(opt(args, "--idle-ms", 500)?);
    let sock = UdpSocket::bind(at).map_err(|e| format!("cannot bind {at}: {e}"))?;
    // A large receive buffer, so short scheduling gaps of the receiver do not
    // turn into drops that would be blamed on the path. FORCE ignores
    // rmem_max (we are root in the lab).
    let size: libc::c_int = 16 << 20;
    // SAFETY: a valid fd and a pointer to a c_int of the size passed.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| format!("cannot set a read timeout: {e}"))?;
    let mut bufs = vec![[0u8; MAX_DATAGRAM]; BATCH];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: MAX_DATAGRAM,
        })
        .collect();
    let mut msgs = mmsg_headers(&mut iov);
    let started = Instant::now();
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut last = started;
    loop {
        let now = Instant::now();
        if now >= started + max || first.is_some() && now >= last + idle {
            break;
        }
        // SAFETY: msgs points to BATCH headers whose iovecs point into
        // `bufs`, alive for the call. MSG_WAITFORONE: block (bounded by the
        // socket's read timeout) only for the first datagram of a batch.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r > 0 {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            packets += r as u64;
            bytes += msgs[..r as usize]
                .iter()
                .map(|m| u64::from(m.msg_len))
                .sum::<u64>();
        }
    }
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let pps = if secs > 0.0 {
        packets as f64 / secs
    } else {
        0.0
    };
    Ok(format!(
        "{{\"packets\":{packets},\"bytes\":{bytes},\"secs\":{secs:.6},\"pps\":{pps:.1}}}"
    ))
}

/// One `sendmmsg`/`recvmmsg` header per buffer of `iov`, each pointing at
/// its buffer. The headers borrow `iov` by raw pointer: keep it alive and
/// unmoved while they are used.
fn mmsg_headers(iov: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iov.iter_mut()
        .map(|v| {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect()
}
