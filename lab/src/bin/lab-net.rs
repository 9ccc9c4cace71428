//! `lab-net`: the lab's traffic tool, run inside a namespace by the tests
//! (through `nsenter`). Every mode is bounded in count and time.
//!
//! ```text
//! lab-net udp-recv --bind IP:PORT [--group G] --count N --timeout-ms T
//! lab-net udp-send --to IP:PORT (--text S | --hex H) [--count N] [--interval-ms I] [--ifname IF]
//! lab-net tcp-serve --port P --timeout-ms T [--count N]
//! lab-net tcp-connect --to IP:PORT (--text S | --bytes N) --timeout-ms T
//! lab-net raw-send --iface IF --hex FRAME [--count N] [--interval-ms I]
//! lab-net raw-recv --iface IF --match-hex H --count N --timeout-ms T
//! ```
//!
//! Receivers print `ready` once they listen (the tests wait for it before
//! sending), one `got …` line per datagram, frame or connection, and a final
//! `received <n>`. They exit 0 when the count is reached or the time is up;
//! the tests judge the counts. Set-up failures exit 2.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("udp-recv") => udp_recv(&Args(&args[1..])),
        Some("udp-send") => udp_send(&Args(&args[1..])),
        Some("tcp-serve") => tcp_serve(&Args(&args[1..])),
        Some("tcp-connect") => tcp_connect(&Args(&args[1..])),
        Some("raw-send") => raw_send(&Args(&args[1..])),
        Some("raw-recv") => raw_recv(&Args(&args[1..])),
        _ => {
            Err("usage: lab-net udp-recv|udp-send|tcp-serve|tcp-connect|raw-send|raw-recv …".into())
        }
    };
    match res {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("lab-net: {e}");
            std::process::exit(2);
        }
    }
}

/// `--flag value` pairs.
struct Args<'a>(&'a [String]);

impl Args<'_> {
    fn get(&self, flag: &str) -> Option<&str> {
        lanlink_lab::toolargs::value(self.0, flag)
    }

    fn req(&self, flag: &str) -> Result<&str> {
        self.get(flag).ok_or_else(|| format!("missing {flag}"))
    }

    fn num(&self, flag: &str, default: u64) -> Result<u64> {
        match self.get(flag) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("{flag}: {v:?} is not a number")),
            None => Ok(default),
        }
    }

    /// `IPv4:port` or `[IPv6]:port`; an IPv6 link-local or multicast
    /// address takes its scope from `--ifname`.
    fn any_addr(&self, flag: &str) -> Result<SocketAddr> {
        let v = self.req(flag)?;
        let mut a: SocketAddr = v
            .parse()
            .map_err(|_| format!("{flag}: {v:?} is not IP:port"))?;
        if let (SocketAddr::V6(a6), Some(ifname)) = (&mut a, self.get("--ifname")) {
            let name = std::ffi::CString::new(ifname).map_err(|_| "--ifname".to_string())?;
            // SAFETY: a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if index == 0 {
                return Err(format!("--ifname {ifname}: no such interface"));
            }
            a6.set_scope_id(index);
        }
        Ok(a)
    }

    fn addr(&self, flag: &str) -> Result<SocketAddrV4> {
        let v = self.req(flag)?;
        v.parse()
            .map_err(|_| format!("{flag}: {v:?} is not IPv4:port"))
    }

    fn timeout(&self) -> Result<Duration> {
        Ok(Duration::from_millis(
            self.num("--timeout-ms", 5000)?.clamp(1, 120_000),
        ))
    }

    /// The payload: `--text` as bytes or `--hex` decoded.
    fn payload(&self) -> Result<Vec<u8>> {
        match (self.get("--text"), self.get("--hex")) {
            (Some(t), None) => Ok(t.as_bytes().to_vec()),
            (None, Some(h)) => unhex(h),
            _ => Err("give exactly one of --text and --hex".into()),
        }
    }
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("{s:?}: odd number of hex digits"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("{s:?} is not hex")))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// What is left until `deadline`; `None` once it passed.
fn time_left(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn udp_recv(a: &Args) -> Result<bool> {
    let bind = a.any_addr("--bind")?;
    let count = a.num("--count", 1)?;
    let deadline = Instant::now() + a.timeout()?;
    let sock = UdpSocket::bind(bind).map_err(io("bind"))?;
    // Broadcasts (WoL) are delivered to a socket bound to 0.0.0.0 anyway;
    // SO_BROADCAST makes the intent explicit.
    if bind.is_ipv4() {
        sock.set_broadcast(true).map_err(io("SO_BROADCAST"))?;
    }
    if let Some(g) = a.get("--group") {
        match g.parse().map_err(|_| format!("--group {g:?}"))? {
            std::net::IpAddr::V4(group) => sock
                .join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)
                .map_err(io("join the group"))?,
            // On the interface the kernel routes the group to (the only one).
            std::net::IpAddr::V6(group) => sock
                .join_multicast_v6(&group, 0)
                .map_err(io("join the group"))?,
        }
    }
    say("ready");
    let mut got = 0;
    let mut buf = [0u8; 2048];
    while got < count {
        let Some(left) = time_left(deadline) else {
            break;
        };
        sock.set_read_timeout(Some(left)).map_err(io("timeout"))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                got += 1;
                say(&format!("got from={from} len={n} hex={}", hex(&buf[..n])));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    say(&format!("received {got}"));
    Ok(true)
}

fn udp_send(a: &Args) -> Result<bool> {
    let to = a.any_addr("--to")?;
    let payload = a.payload()?;
    let count = a.num("--count", 1)?.min(10_000);
    let interval = Duration::from_millis(a.num("--interval-ms", 50)?);
    let sock = if to.is_ipv4() {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(io("bind"))?;
        s.set_broadcast(true).map_err(io("SO_BROADCAST"))?;
        s
    } else {
        UdpSocket::bind("[::]:0").map_err(io("bind"))?
    };
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(interval);
        }
        sock.send_to(&payload, to).map_err(io("send"))?;
    }
    say(&format!("sent {count}"));
    Ok(true)
}

fn tcp_serve(a: &Args) -> Result<bool> {
    let port = a.num("--port", 0)?;
    let count = a.num("--count", 1)?;
    let deadline = Instant::now() + a.timeout()?;
    let listener = TcpListener::bind(("0.0.0.0", port as u16)).map_err(io("bind"))?;
    listener.set_nonblocking(true).map_err(io("nonblocking"))?;
    say("ready");
    let mut got = 0;
    while got < count && Instant::now() < deadline {
        match listener.accept() {
            Ok((mut s, peer)) => {
                s.set_nonblocking(false).map_err(io("blocking"))?;
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                s.set_read_timeout(Some(left)).map_err(io("timeout"))?;
                let mut data = Vec::new();
                if let Err(e) = s.read_to_end(&mut data) {
                    say(&format!("error from={peer} {e}"));
                    continue;
                }
                // Bulk transfers (`--bytes`) are answered with their length
                // and checksum instead of an echo.
                let text = if data.len() > 256 {
                    format!("len={} sum={}", data.len(), sum(&data))
                } else {
                    String::from_utf8_lossy(&data).into_owned()
                };
                let _ = s.write_all(format!("ack:{text}").as_bytes());
                let _ = s.shutdown(Shutdown::Both);
                got += 1;
                say(&format!("got from={peer} text={text}"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    say(&format!("received {got}"));
    Ok(true)
}

/// A position-dependent checksum of a bulk transfer.
fn sum(data: &[u8]) -> u64 {
    data.iter().enumerate().fold(0u64, |a, (i, b)| {
        a.wrapping_mul(31).wrapping_add(u64::from(*b) ^ (i as u64))
    })
}

/// `n` bytes of a pattern that is not periodic in any small window.
fn bulk(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn tcp_connect(a: &Args) -> Result<bool> {
    let to = SocketAddr::V4(a.addr("--to")?);
    let (data, expect) = match (a.get("--text"), a.get("--bytes")) {
        (Some(t), None) => (t.as_bytes().to_vec(), format!("ack:{t}")),
        (None, Some(_)) => {
            let n = a.num("--bytes", 0)?.clamp(257, 64 << 20) as usize;
            let data = bulk(n);
            let expect = format!("ack:len={n} sum={}", sum(&data));
            (data, expect)
        }
        _ => return Err("give exactly one of --text and --bytes".into()),
    };
    let deadline = Instant::now() + a.timeout()?;
    // The server may still be starting: retry refused connections.
    let mut s = loop {
        let Some(left) = time_left(deadline) else {
            say(&format!("no connection to {to}"));
            return Ok(false);
        };
        match TcpStream::connect_timeout(&to, left) {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                say(&format!("connect {to}: {e}"));
                return Ok(false);
            }
        }
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(left)).map_err(io("timeout"))?;
    s.write_all(&data).map_err(io("write"))?;
    s.shutdown(Shutdown::Write).map_err(io("shutdown"))?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).map_err(io("read"))?;
    let reply = String::from_utf8_lossy(&reply);
    say(&format!("reply {reply}"));
    Ok(reply == expect)
}

/// An `AF_PACKET` raw socket bound to `ifname` for every EtherType.
fn packet_socket(ifname: &str) -> Result<(OwnedFd, libc::sockaddr_ll)> {
    let name = std::ffi::CString::new(ifname).map_err(|_| "bad interface name".to_string())?;
    // SAFETY: plain libc calls with valid arguments; the fd is owned at once.
    let (fd, index) = unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        if index == 0 {
            return Err(format!("no interface {ifname}"));
        }
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        );
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        (OwnedFd::from_raw_fd(fd), index)
    };
    let sll = lanlink_lab::packet::sockaddr_ll(index, libc::ETH_P_ALL as u16);
    lanlink_lab::packet::bind(std::os::fd::AsFd::as_fd(&fd), &sll)
        .map_err(|e| format!("bind {ifname}: {e}"))?;
    Ok((fd, sll))
}

fn raw_send(a: &Args) -> Result<bool> {
    let frame = unhex(a.req("--hex")?)?;
    if frame.len() < 14 {
        return Err("a frame needs at least an Ethernet header".into());
    }
    let count = a.num("--count", 1)?.min(1000);
    let interval = Duration::from_millis(a.num("--interval-ms", 20)?);
    let (fd, sll) = packet_socket(a.req("--iface")?)?;
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(interval);
        }
        // SAFETY: frame and sll are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(format!("sendto: {}", std::io::Error::last_os_error()));
        }
    }
    say(&format!("sent {count}"));
    Ok(true)
}

fn raw_recv(a: &Args) -> Result<bool> {
    let pattern = unhex(a.req("--match-hex")?)?;
    let count = a.num("--count", 1)?;
    let deadline = Instant::now() + a.timeout()?;
    let (fd, _) = packet_socket(a.req("--iface")?)?;
    say("ready");
    let mut got = 0;
    let mut buf = [0u8; 2048];
    while got < count {
        let Some(left) = time_left(deadline) else {
            break;
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&raw mut pfd, 1, ms) } <= 0 {
            continue;
        }
        // SAFETY: sockaddr_ll is plain old data.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: buf and from are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &raw mut len,
            )
        };
        if n < 0 {
            return Err(format!("recvfrom: {}", std::io::Error::last_os_error()));
        }
        // Only what arrives counts, not what this namespace sends.
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        let frame = &buf[..n as usize];
        if !pattern.is_empty() && !frame.windows(pattern.len()).any(|w| w == pattern) {
            continue;
        }
        got += 1;
        say(&format!("got len={n} hex={}", hex(frame)));
    }
    say(&format!("received {got}"));
    Ok(true)
}
