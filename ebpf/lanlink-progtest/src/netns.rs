//! A private network namespace for one test, with veth pairs so the
//! ifindexes the programs redirect and clone to exist (`bpf_clone_redirect`
//! really transmits), and packet sockets to see the clones arrive; with
//! [`ip`] and [`write_sysctl`], real traffic tests set the namespace up
//! further.
//!
//! The namespace is entered with `unshare(CLONE_NEWNET)` by a dedicated
//! thread that runs the whole test and then exits: nothing is named, nothing
//! is mounted, and the namespace with its veths is gone with the thread.
//! `ip` runs as a child of that thread, so in its namespace.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::HarnessError;

/// One veth pair: `host` plays a host-side veth (or the uplink), `peer` the
/// pod's end (or the LAN), where clones sent out of `host` arrive.
#[derive(Clone, Debug)]
pub struct VethPair {
    /// Name of the host end.
    pub host: String,
    /// Ifindex of the host end.
    pub host_ifindex: u32,
    /// Name of the peer end.
    pub peer: String,
    /// Ifindex of the peer end.
    pub peer_ifindex: u32,
}

/// Runs `f` on a new thread inside a new network namespace with `pairs`
/// veth pairs (`h0`/`p0`, `h1`/`p1`, …, all up, IPv6 off so no stray
/// neighbour discovery reaches the packet sockets). A panic in `f` is
/// re-raised in the caller.
pub fn with_netns<T: Send>(
    pairs: usize,
    f: impl FnOnce(&[VethPair]) -> T + Send,
) -> Result<T, HarnessError> {
    std::thread::scope(|s| {
        let handle = s.spawn(|| -> Result<T, HarnessError> {
            // SAFETY: plain syscall; only this thread changes namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(HarnessError::Netns {
                    what: "unshare(CLONE_NEWNET) (needs root)".into(),
                    source: std::io::Error::last_os_error(),
                });
            }
            // Net sysctls are those of the opening thread's namespace.
            write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")?;
            ip(&["link", "set", "lo", "up"])?;
            let mut links = Vec::with_capacity(pairs);
            for i in 0..pairs {
                let host = format!("h{i}");
                let peer = format!("p{i}");
                ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
                ip(&["link", "set", &host, "up"])?;
                ip(&["link", "set", &peer, "up"])?;
                links.push(VethPair {
                    host_ifindex: ifindex(&host)?,
                    peer_ifindex: ifindex(&peer)?,
                    host,
                    peer,
                });
            }
            Ok(f(&links))
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Writes `value` to the sysctl file `path` (of this thread's namespace,
/// for `/proc/sys/net`).
pub fn write_sysctl(path: &str, value: &str) -> Result<(), HarnessError> {
    std::fs::write(path, value).map_err(|source| HarnessError::Netns {
        what: format!("write {path}"),
        source,
    })
}

/// Runs `ip` with `args` in this thread's namespace (a child inherits it).
pub fn ip(args: &[&str]) -> Result<(), HarnessError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| HarnessError::Netns {
            what: format!("run ip {}", args.join(" ")),
            source,
        })?;
    if !out.status.success() {
        return Err(HarnessError::Netns {
            what: format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            source: std::io::Error::other("ip failed"),
        });
    }
    Ok(())
}

fn ifindex(name: &str) -> Result<u32, HarnessError> {
    let c = std::ffi::CString::new(name).expect("interface names have no NUL");
    // SAFETY: a valid C string; the lookup uses this thread's namespace.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(HarnessError::Netns {
            what: format!("if_nametoindex {name}"),
            source: std::io::Error::last_os_error(),
        }),
        i => Ok(i),
    }
}

/// An `AF_PACKET` socket receiving every frame that arrives on one
/// interface (open it in the namespace's thread, before the run).
pub struct Capture {
    fd: OwnedFd,
}

impl Capture {
    /// Starts capturing on `ifindex`.
    pub fn open(ifindex: u32) -> Result<Self, HarnessError> {
        let err = |what: &str| HarnessError::Netns {
            what: format!("{what} packet socket on ifindex {ifindex}"),
            source: std::io::Error::last_os_error(),
        };
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain syscall.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(err("open"));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_ll is valid; the fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if ret != 0 {
            return Err(err("bind"));
        }
        Ok(Self { fd })
    }

    /// Frames received so far that equal `frame`, waiting up to `wait` for
    /// at least `want` of them (a clone crosses the veth in softirq context,
    /// normally before the test run returns).
    pub fn count_equal(&self, frame: &[u8], want: usize, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let mut seen = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                if &buf[..n as usize] == frame {
                    seen += 1;
                }
                continue;
            }
            if seen >= want || Instant::now() >= deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
