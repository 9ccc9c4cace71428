//! `lab-craft`: forges the frames a compromised pod sends against the LAN
//! (issue 12, first-hop security) and sends them raw on one interface
//! through an `AF_PACKET` socket, bypassing the pod's own stack. Run inside
//! a pod's namespace by the first-hop scenarios (through `nsenter`); the
//! frames are built by [`lanlink_lab::firsthop`].
//!
//! ```text
//! lab-craft dhcp-offer    --iface IF [--src-ip IP] [--yiaddr IP] [--chaddr MAC]
//! lab-craft dhcp-discover --iface IF [--chaddr MAC] [--client-id MAC]
//! lab-craft dhcp-request  --iface IF --requested IP [--chaddr MAC] [--server IP] [--client-id MAC]
//! lab-craft dhcp-release  --iface IF --chaddr MAC --ciaddr IP --server IP [--dst-mac MAC] [--client-id MAC]
//! lab-craft ra            --iface IF [--src IP6] [--prefix IP6/LEN] [--lifetime S]
//! lab-craft ip6           --iface IF [--src IP6] [--dst IP6] [--dst-mac MAC] [--udp SPORT:DPORT]
//! lab-craft dad           --iface IF --target IP6 [--claims N]
//! lab-craft na            --iface IF --target IP6 [--src IP6] [--dst IP6]
//! lab-craft bpdu          --iface IF [--dst-mac MAC]
//! lab-craft storm         --iface IF --count N --seconds S [--src-ip IP] [--unpaced]
//! ```
//!
//! Every subcommand also takes `--count N` (default 1, at most 1000; storm:
//! required, at most 1,000,000), `--interval-ms I` between frames (default
//! 20) and `--seconds S`, a deadline for the whole run (default 10, at most
//! 60; storm: required), and `--src-mac MAC` (default the interface's).
//! Defaults: the interface's IPv4 address (`--src-ip`), its EUI-64
//! link-local address (`--src` of IPv6), a made-up client 02:00:00:00:00:99
//! and address 198.18.0.222 for an OFFER, prefix 2001:2:0:99::/64 and
//! lifetime 1800 s for an RA, ff02::1 for `ip6` and `na`, an echo request
//! for `ip6` unless `--udp` is given, [`firsthop::STP_MAC`] for `bpdu`.
//! `dad --claims N` solicits N consecutive addresses from `--target` on
//! (each one sent `--count` times).
//!
//! `storm` sends broadcast UDP (to 255.255.255.255:9) spread evenly over
//! `--seconds` (60,000 in 3 s: about 20,000 a second), so that a rate limit is
//! measured over the whole time rather than one burst; `--unpaced` sends
//! as fast as the socket takes them instead. It stops at whichever of
//! `--count` and `--seconds` comes first.
//!
//! Output: one line, `sent <n> <what> …` (`failed <m>` when the socket
//! refused some: a full queue). Exit 0 when every frame went out, 1 when
//! some did not, 2 on a usage or set-up error. Only lab addresses are
//! accepted (198.18.0.0/15; 2001:2::/48, fe80::/64, ff02::/16).

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lanlink_lab::firsthop::{self, STP_MAC};
use lanlink_lab::traffic::{hex, parse_mac};
use lanlink_lab::{ROUTER, check_lab_addr};

/// Most frames of one subcommand other than `storm`.
const MAX_COUNT: u64 = 1000;
/// Most frames of a storm.
const MAX_STORM: u64 = 1_000_000;
/// Longest run.
const MAX_SECONDS: f64 = 60.0;
/// Most addresses one `dad` claims.
const MAX_CLAIMS: u64 = 256;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(sub) = args.first() else {
        eprintln!("usage: lab-craft <subcommand> --iface IF [options] (see the source's header)");
        return ExitCode::from(2);
    };
    let a = Args(&args[1..]);
    match run(sub, &a) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", report.line);
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("lab-craft {sub}: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `--flag value` pairs and bare `--flag`s.
struct Args<'a>(&'a [String]);

impl Args<'_> {
    fn get(&self, flag: &str) -> Option<&str> {
        lanlink_lab::toolargs::value(self.0, flag)
    }

    fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }

    fn req(&self, flag: &str) -> Result<&str> {
        self.get(flag).with_context(|| format!("missing {flag}"))
    }

    fn parse<T: std::str::FromStr>(&self, flag: &str) -> Result<Option<T>> {
        self.get(flag)
            .map(|v| {
                v.parse()
                    .map_err(|_| anyhow::anyhow!("{flag}: {v:?} is not valid"))
            })
            .transpose()
    }

    fn mac(&self, flag: &str) -> Result<Option<[u8; 6]>> {
        self.get(flag).map(parse_mac).transpose()
    }

    /// An IPv4 address of the lab.
    fn ip4(&self, flag: &str) -> Result<Option<Ipv4Addr>> {
        let ip = self.parse::<Ipv4Addr>(flag)?;
        if let Some(ip) = ip {
            check_lab_addr(ip)?;
        }
        Ok(ip)
    }

    /// An IPv6 address of the lab.
    fn ip6(&self, flag: &str) -> Result<Option<Ipv6Addr>> {
        let ip = self.parse::<Ipv6Addr>(flag)?;
        if let Some(ip) = ip {
            firsthop::check_lab_addr6(ip)?;
        }
        Ok(ip)
    }
}

/// What a run did.
struct Report {
    line: String,
    failed: u64,
}

/// The interface frames go out of, and what the pod knows about itself.
struct Iface {
    name: String,
    index: u32,
    mac: [u8; 6],
    ipv4: Option<Ipv4Addr>,
}

impl Iface {
    /// Looks `name` up in the calling process's namespace (getifaddrs goes
    /// through netlink; `/sys/class/net` would show the namespace of
    /// whoever mounted `/sys`, which `nsenter --net` keeps).
    fn lookup(name: &str) -> Result<Self> {
        let index =
            nix::net::if_::if_nametoindex(name).with_context(|| format!("no interface {name}"))?;
        let mut mac = None;
        let mut ipv4 = None;
        for ifa in nix::ifaddrs::getifaddrs().context("getifaddrs")? {
            if ifa.interface_name != name {
                continue;
            }
            let Some(addr) = ifa.address else { continue };
            if let Some(l) = addr.as_link_addr().and_then(|l| l.addr()) {
                mac = Some(l);
            }
            if let Some(sin) = addr.as_sockaddr_in() {
                ipv4.get_or_insert(sin.ip());
            }
        }
        Ok(Self {
            name: name.to_owned(),
            index,
            mac: mac.with_context(|| format!("{name} has no MAC"))?,
            ipv4,
        })
    }
}

/// The common bounds and the source MAC.
struct Common {
    count: u64,
    interval: Duration,
    deadline: Instant,
    src_mac: [u8; 6],
}

fn common(a: &Args, iface: &Iface, max_count: u64) -> Result<Common> {
    let count = a.parse::<u64>("--count")?.unwrap_or(1);
    ensure!(
        (1..=max_count).contains(&count),
        "--count must be 1..={max_count}"
    );
    let seconds = a.parse::<f64>("--seconds")?.unwrap_or(10.0);
    ensure!(
        seconds > 0.0 && seconds <= MAX_SECONDS,
        "--seconds must be in (0, {MAX_SECONDS}]"
    );
    Ok(Common {
        count,
        interval: Duration::from_millis(a.parse::<u64>("--interval-ms")?.unwrap_or(20)),
        deadline: Instant::now() + Duration::from_secs_f64(seconds),
        src_mac: a.mac("--src-mac")?.unwrap_or(iface.mac),
    })
}

/// A made-up transaction id (DHCP), different in each run.
fn xid() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

fn run(sub: &str, a: &Args) -> Result<Report> {
    let iface = Iface::lookup(a.req("--iface")?)?;
    let sock = PacketSocket::bind(&iface)?;
    let max = if sub == "storm" { MAX_STORM } else { MAX_COUNT };
    let c = common(a, &iface, max)?;
    let src4 = || -> Result<Ipv4Addr> {
        a.ip4("--src-ip")?
            .or(iface.ipv4)
            .with_context(|| format!("{} has no IPv4 address: give --src-ip", iface.name))
    };
    let ll = firsthop::link_local(c.src_mac);
    let n = c.count as usize;
    let (what, frames): (String, Vec<Vec<u8>>) = match sub {
        "dhcp-offer" => {
            let src = src4()?;
            let chaddr = a.mac("--chaddr")?.unwrap_or([2, 0, 0, 0, 0, 0x99]);
            let yiaddr = a.ip4("--yiaddr")?.unwrap_or(Ipv4Addr::new(198, 18, 0, 222));
            let f = firsthop::dhcp_offer(c.src_mac, src, chaddr, yiaddr, xid());
            let what = format!(
                "dhcp-offer from {src} offering {yiaddr} to {}",
                hex(&chaddr)
            );
            (what, vec![f; n])
        }
        "dhcp-discover" => {
            let chaddr = a.mac("--chaddr")?.unwrap_or(c.src_mac);
            let cid = a.mac("--client-id")?;
            let f = firsthop::dhcp_discover(c.src_mac, chaddr, cid, xid());
            (format!("dhcp-discover chaddr {}", hex(&chaddr)), vec![f; n])
        }
        "dhcp-request" => {
            let chaddr = a.mac("--chaddr")?.unwrap_or(c.src_mac);
            let requested = a.ip4("--requested")?.context("missing --requested")?;
            let server = a.ip4("--server")?;
            let cid = a.mac("--client-id")?;
            let f = firsthop::dhcp_request(c.src_mac, chaddr, requested, server, cid, xid());
            let what = format!("dhcp-request chaddr {} for {requested}", hex(&chaddr));
            (what, vec![f; n])
        }
        "dhcp-release" => {
            let chaddr = a.mac("--chaddr")?.context("missing --chaddr")?;
            let ciaddr = a.ip4("--ciaddr")?.context("missing --ciaddr")?;
            let server = a.ip4("--server")?.unwrap_or(ROUTER);
            let dst_mac = a.mac("--dst-mac")?.unwrap_or(firsthop::BROADCAST);
            let cid = a.mac("--client-id")?;
            let f = firsthop::dhcp_release(c.src_mac, dst_mac, ciaddr, server, chaddr, cid, xid());
            let what = format!(
                "dhcp-release of {ciaddr} chaddr {} to {server}",
                hex(&chaddr)
            );
            (what, vec![f; n])
        }
        "ra" => {
            let src = a.ip6("--src")?.unwrap_or(ll);
            let prefix = a.get("--prefix").unwrap_or("2001:2:0:99::/64");
            let (p, len) = prefix
                .split_once('/')
                .and_then(|(p, l)| Some((p.parse::<Ipv6Addr>().ok()?, l.parse::<u8>().ok()?)))
                .with_context(|| format!("--prefix {prefix:?} is not IP6/LEN"))?;
            ensure!(
                p.segments()[..3] == [0x2001, 2, 0] && (48..=128).contains(&len),
                "--prefix {prefix} is not inside 2001:2::/48"
            );
            let lifetime = a.parse::<u16>("--lifetime")?.unwrap_or(1800);
            let f = firsthop::router_advert(c.src_mac, src, (p, len), lifetime);
            (format!("ra from {src} prefix {prefix}"), vec![f; n])
        }
        "ip6" => {
            let src = a.ip6("--src")?.unwrap_or(ll);
            let dst = a.ip6("--dst")?.unwrap_or(firsthop::ALL_NODES);
            let dst_mac = match a.mac("--dst-mac")? {
                Some(m) => m,
                None if dst.is_multicast() => firsthop::multicast_mac(dst),
                None => bail!("--dst-mac is needed for the unicast {dst}"),
            };
            let macs = (c.src_mac, dst_mac);
            let payload = b"lanlink-lab ip6";
            match a.get("--udp") {
                Some(ports) => {
                    let (sp, dp) = ports
                        .split_once(':')
                        .and_then(|(s, d)| Some((s.parse().ok()?, d.parse().ok()?)))
                        .context("--udp must be SPORT:DPORT")?;
                    let f = firsthop::udp6(macs, (src, dst), sp, dp, payload);
                    (format!("ip6 udp {src}.{sp} > {dst}.{dp}"), vec![f; n])
                }
                // One echo per sequence number, as ping would.
                None => (
                    format!("ip6 echo {src} > {dst}"),
                    (0..n)
                        .map(|i| firsthop::icmp6_echo(macs, (src, dst), 0x4c4c, i as u16, payload))
                        .collect(),
                ),
            }
        }
        "dad" => {
            let target = a.ip6("--target")?.context("missing --target")?;
            let claims = a.parse::<u64>("--claims")?.unwrap_or(1);
            ensure!(
                (1..=MAX_CLAIMS).contains(&claims),
                "--claims must be 1..={MAX_CLAIMS}"
            );
            let mut round = Vec::new();
            for i in 0..u128::from(claims) {
                let t = Ipv6Addr::from(u128::from(target) + i);
                firsthop::check_lab_addr6(t)?;
                round.push(firsthop::dad_solicit(c.src_mac, t));
            }
            let what = format!("dad for {claims} address(es) from {target} up");
            (what, (0..n).flat_map(|_| round.iter().cloned()).collect())
        }
        "na" => {
            let target = a.ip6("--target")?.context("missing --target")?;
            let src = a.ip6("--src")?.unwrap_or(ll);
            let dst = a.ip6("--dst")?.unwrap_or(firsthop::ALL_NODES);
            ensure!(dst.is_multicast(), "--dst must be a multicast group");
            let dst_mac = firsthop::multicast_mac(dst);
            let f = firsthop::neighbour_advert(c.src_mac, (src, dst), target, dst_mac);
            (format!("na {target} is-at {}", hex(&c.src_mac)), vec![f; n])
        }
        "bpdu" => {
            let dst = a.mac("--dst-mac")?.unwrap_or(STP_MAC);
            let f = firsthop::bpdu(c.src_mac, dst);
            (format!("bpdu to {}", hex(&dst)), vec![f; n])
        }
        "storm" => {
            ensure!(
                a.get("--count").is_some() && a.get("--seconds").is_some(),
                "storm needs --count and --seconds"
            );
            return storm(&sock, &c, src4()?, !a.has("--unpaced"));
        }
        other => bail!("unknown subcommand {other:?}"),
    };
    send_all(&sock, &c, &what, &frames)
}

/// Sends `frames` in order, `--interval-ms` apart, until the deadline.
fn send_all(sock: &PacketSocket, c: &Common, what: &str, frames: &[Vec<u8>]) -> Result<Report> {
    let (mut sent, mut failed) = (0u64, 0u64);
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(c.interval);
        }
        if Instant::now() >= c.deadline {
            break;
        }
        match sock.send(f) {
            Ok(()) => sent += 1,
            Err(_) => failed += 1,
        }
    }
    let len = frames.first().map_or(0, Vec::len);
    let mut line = format!(
        "sent {sent} {what} on {} from {} (len {len})",
        sock.ifname,
        hex(&c.src_mac)
    );
    if failed > 0 {
        line.push_str(&format!(" failed {failed}"));
    }
    Ok(Report { line, failed })
}

/// Broadcast frames, `--count` of them spread over `--seconds` (or as fast
/// as the socket takes them), stopping at whichever bound comes first.
fn storm(sock: &PacketSocket, c: &Common, src_ip: Ipv4Addr, paced: bool) -> Result<Report> {
    let start = Instant::now();
    // The schedule ends 1% before the deadline, so that the last frames are
    // not due at the very moment the run stops.
    let span = c.deadline.saturating_duration_since(start).mul_f64(0.99);
    let (mut sent, mut failed, mut seq) = (0u64, 0u64, 0u64);
    while seq < c.count {
        let now = Instant::now();
        if now >= c.deadline {
            break;
        }
        if paced {
            // Frames due by now on an even schedule (frame i at i × span /
            // count); send those, then nap a millisecond (sleeping per
            // frame would not keep the rate).
            let due =
                (c.count as f64 * (now - start).as_secs_f64() / span.as_secs_f64()) as u64 + 1;
            if seq >= due.min(c.count) {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        let f = firsthop::storm_frame(c.src_mac, src_ip, seq as u32);
        match sock.send(&f) {
            Ok(()) => sent += 1,
            Err(_) => failed += 1,
        }
        seq += 1;
    }
    let ms = start.elapsed().as_millis();
    let mut line = format!(
        "sent {sent} storm frames in {ms} ms on {} from {} {src_ip} to 255.255.255.255:{}",
        sock.ifname,
        hex(&c.src_mac),
        firsthop::STORM_PORT
    );
    if failed > 0 {
        line.push_str(&format!(" failed {failed}"));
    }
    Ok(Report { line, failed })
}

/// An `AF_PACKET` socket that only sends (protocol 0: the kernel queues
/// nothing received on it), bound to one interface.
struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
}

impl PacketSocket {
    fn bind(iface: &Iface) -> Result<Self> {
        // SAFETY: a plain socket call; the fd is owned at once.
        let fd = unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
            }
            OwnedFd::from_raw_fd(fd)
        };
        lanlink_lab::packet::bind(std::os::fd::AsFd::as_fd(&fd), &Self::addr(iface.index, 0))
            .with_context(|| format!("bind to {}", iface.name))?;
        Ok(Self {
            fd,
            ifname: iface.name.clone(),
            ifindex: iface.index,
        })
    }

    fn addr(ifindex: u32, protocol: u16) -> libc::sockaddr_ll {
        lanlink_lab::packet::sockaddr_ll(ifindex, protocol)
    }

    /// Sends one whole frame, with the frame's own EtherType as the
    /// packet's protocol (802.2 for an 802.3 frame with a length).
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let protocol = if ethertype >= 0x600 {
            ethertype
        } else {
            libc::ETH_P_802_2 as u16
        };
        let mut sll = Self::addr(self.ifindex, protocol);
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and sll are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
