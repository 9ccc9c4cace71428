//! Sockets opened inside a lab namespace, from the test process itself.
//!
//! A socket belongs to the network namespace of the thread that creates it,
//! so each helper runs on a fresh thread that first `setns`es into the
//! namespace (only that thread moves; the rest of the test stays put). Real
//! kernel sockets, real traffic, no external tool: a TCP server that records
//! who connected (to tell DNAT from DNAT plus SNAT), a TCP client that tells
//! "connected" from "timed out", and a UDP sender for broadcast and
//! multicast. Everything is bounded in time.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::netns::NetNs;

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: a valid namespace fd; only this thread's namespace changes.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns into {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Runs `f` on a new thread inside `ns` and waits for its result.
pub fn in_ns<T: Send + 'static>(
    ns: &NetNs,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = ns.path().to_owned();
    std::thread::spawn(move || {
        enter(&path)?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("the thread in {} panicked", ns.name()))?
}

/// A TCP server in a namespace: every connection gets `banner` and is
/// closed; the peers are recorded. Stops when dropped or after its lifetime.
#[derive(Debug)]
pub struct TcpServer {
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddrV4>>>,
    thread: Option<JoinHandle<()>>,
    port: u16,
}

impl TcpServer {
    /// Listens on `0.0.0.0:port` in `ns` for at most `lifetime`.
    pub fn start(ns: &NetNs, port: u16, banner: &str, lifetime: Duration) -> Result<Self> {
        let path: PathBuf = ns.path().to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (stop2, peers2, banner) = (stop.clone(), peers.clone(), banner.to_owned());
        let thread = std::thread::spawn(move || {
            let listener = enter(&path).and_then(|()| {
                let l = TcpListener::bind(("0.0.0.0", port)).context("bind")?;
                l.set_nonblocking(true).context("nonblocking")?;
                Ok(l)
            });
            let listener = match listener {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let deadline = Instant::now() + lifetime;
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut s, SocketAddr::V4(peer))) => {
                        peers2.lock().unwrap_or_else(|p| p.into_inner()).push(peer);
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                        let _ = s.write_all(banner.as_bytes());
                        let _ = s.shutdown(Shutdown::Both);
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.context(format!("tcp server on :{port} in {}", ns.name()))),
            Err(_) => bail!("tcp server on :{port} in {} did not start", ns.name()),
        }
        Ok(Self {
            stop,
            peers,
            thread: Some(thread),
            port,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Who connected so far, in order.
    pub fn peers(&self) -> Vec<SocketAddrV4> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP connection attempt that completed: what the server sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connected {
    /// The client's own address and port.
    pub local: SocketAddrV4,
    /// Everything the server sent before closing.
    pub received: String,
}

/// Connects from `ns` to `to` (one attempt, the kernel's SYN retries within
/// `timeout`) and reads until the server closes. The outer error is a setup
/// failure; the inner one is the connection's outcome (refused, timed out).
pub fn tcp_connect(
    ns: &NetNs,
    to: SocketAddrV4,
    timeout: Duration,
) -> Result<std::io::Result<Connected>> {
    in_ns(ns, move || {
        Ok((|| {
            let mut s = TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)?;
            let local = match s.local_addr()? {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(a) => {
                    return Err(std::io::Error::other(format!("{a} is not IPv4")));
                }
            };
            s.set_read_timeout(Some(timeout))?;
            let mut received = String::new();
            s.read_to_string(&mut received)?;
            Ok(Connected { local, received })
        })())
    })
}

/// Sends `payload` once from `ns` to `to` (a broadcast or multicast address
/// is fine: `SO_BROADCAST` is set); the source is whatever the pod's routes
/// choose. Returns the local address the kernel picked.
pub fn udp_send(ns: &NetNs, to: SocketAddrV4, payload: &[u8]) -> Result<SocketAddr> {
    let payload = payload.to_vec();
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").context("bind")?;
        s.set_broadcast(true).context("SO_BROADCAST")?;
        s.send_to(&payload, to)
            .with_context(|| format!("send to {to}"))?;
        s.local_addr().context("local address")
    })
}

/// A minimal mDNS query (RFC 6762): one PTR question for
/// `_services._dns-sd._udp.local`, as service browsers send to
/// 224.0.0.251:5353.
pub fn mdns_query() -> Vec<u8> {
    let mut q = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["_services", "_dns-sd", "_udp", "local"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 12, 0, 1]);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mdns_query_is_one_ptr_question() {
        let q = mdns_query();
        assert_eq!(&q[4..6], &[0, 1], "one question");
        assert_eq!(&q[q.len() - 4..], &[0, 12, 0, 1], "PTR, class IN");
        assert_eq!(q[12], 9);
        assert_eq!(&q[13..22], b"_services");
    }
}
