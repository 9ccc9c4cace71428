//! Who may talk to the agent: the API's listener hands axum a connection
//! only if its peer is root or the agent's own user, by the credentials the
//! kernel recorded at `connect()` (`SO_PEERCRED`), before a byte of HTTP is
//! read.
//!
//! The socket file is already 0600 and root's, so the kernel refuses other
//! users at `connect()`; this is the second lock, for a socket whose mode or
//! owner was changed by hand or reached through a mount with other owners.

use std::{io, time::Duration};

use axum::serve::Listener;
use tokio::net::{UnixListener, UnixStream, unix::SocketAddr};

/// Whether a peer running as `peer_uid` may use the API of an agent running
/// with effective uid `own_euid`: root, or the agent's own user.
pub fn allowed(peer_uid: u32, own_euid: u32) -> bool {
    peer_uid == 0 || peer_uid == own_euid
}

/// A [`UnixListener`] that yields only connections whose peer is
/// [`allowed`]; any other is closed unread and logged with its pid and uid.
#[derive(Debug)]
pub struct PeerChecked {
    inner: UnixListener,
    own_euid: u32,
    policy: fn(u32, u32) -> bool,
}

impl PeerChecked {
    /// Checks the peers of `inner` against [`allowed`] and this process's
    /// effective uid.
    pub fn new(inner: UnixListener) -> Self {
        Self {
            inner,
            own_euid: nix::unistd::geteuid().as_raw(),
            policy: allowed,
        }
    }

    /// Like [`new`](Self::new) with another policy: tests refuse their own
    /// (root) uid with it.
    #[cfg(test)]
    fn with_policy(inner: UnixListener, policy: fn(u32, u32) -> bool) -> Self {
        Self {
            policy,
            ..Self::new(inner)
        }
    }

    /// Whether `stream`'s peer may go on; logs a refusal.
    fn admit(&self, stream: &UnixStream) -> bool {
        match stream.peer_cred() {
            Ok(cred) if (self.policy)(cred.uid(), self.own_euid) => true,
            Ok(cred) => {
                tracing::warn!(
                    pid = cred.pid(),
                    uid = cred.uid(),
                    gid = cred.gid(),
                    "refused an API connection: the peer is neither root nor the agent's user"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "refused an API connection: cannot read the peer's credentials");
                false
            }
        }
    }
}

impl Listener for PeerChecked {
    type Io = UnixStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) if self.admit(&stream) => return (stream, addr),
                // Dropped here: closed before hyper sees it.
                Ok(_) => {}
                Err(e) => accept_error(e).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// What axum's own listeners do on an accept error (private to axum 0.8's
/// `serve/listener.rs`): a connection gone before it was accepted is
/// skipped; anything else (`EMFILE`: out of descriptors) is logged and
/// retried after a second rather than in a busy loop.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept an API connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        os::unix::fs::PermissionsExt as _,
        path::{Path, PathBuf},
    };

    use axum::{Router, routing::get};

    use super::*;

    /// A uid no test process runs as.
    const NOBODY: u32 = 65534;

    #[test]
    fn root_and_the_agents_own_user_are_allowed_and_nobody_else() {
        assert!(allowed(0, 0));
        assert!(!allowed(NOBODY, 0));
        assert!(!allowed(1000, 0));
        assert!(allowed(0, 1000));
        assert!(allowed(1000, 1000));
        assert!(!allowed(1001, 1000));
        assert!(!allowed(NOBODY, 1000));
    }

    /// Serves `GET /` (answering `ok`) on `<dir>/api.sock`, world-writable
    /// so that only the peer check stands between a client and the answer.
    fn serve_in(dir: &Path, policy: fn(u32, u32) -> bool) -> PathBuf {
        let path = dir.join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let listener = PeerChecked::with_policy(listener, policy);
        tokio::spawn(async move { axum::serve(listener, app).await });
        path
    }

    /// `GET /` over `socket`, blocking: every byte answered (none when the
    /// server closes the connection unread), or the error.
    fn get_root(socket: &Path) -> io::Result<Vec<u8>> {
        let mut s = std::os::unix::net::UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET / HTTP/1.1\r\nhost: lanlink\r\nconnection: close\r\n\r\n")?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)?;
        Ok(answer)
    }

    async fn get_root_off_runtime(socket: &Path) -> io::Result<Vec<u8>> {
        let socket = socket.to_path_buf();
        tokio::task::spawn_blocking(move || get_root(&socket))
            .await
            .unwrap()
    }

    fn assert_answered(answer: &io::Result<Vec<u8>>) {
        let text = String::from_utf8_lossy(answer.as_ref().expect("an answer"));
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("ok"), "{text}");
    }

    /// Closed unread: end of file, or a reset or broken pipe if the request
    /// was still being written; never a byte of HTTP.
    fn assert_disconnected(answer: &io::Result<Vec<u8>>) {
        match answer {
            Ok(bytes) => assert!(bytes.is_empty(), "{}", String::from_utf8_lossy(bytes)),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                "{e}"
            ),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_allowed_peer_gets_an_answer() {
        let dir = tempfile::tempdir().unwrap();
        let socket = serve_in(dir.path(), allowed);
        assert_answered(&get_root_off_runtime(&socket).await);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_refused_peer_is_disconnected_and_the_listener_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        // Refuses the agent's own uid, which is the test client's.
        let socket = serve_in(dir.path(), |peer, own| peer != own);
        for _ in 0..3 {
            assert_disconnected(&get_root_off_runtime(&socket).await);
        }
    }

    /// A client of another uid, for real: the connecting thread switches to
    /// `nobody` with the raw `setresuid` system call, which (unlike libc's
    /// wrapper, which applies it to every thread) changes the calling
    /// thread's credentials only (credentials(7), "per-thread"), so the
    /// rest of the test process stays root. `SO_PEERCRED` records the
    /// connecting thread's credentials.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_peer_of_another_uid_is_disconnected_and_root_still_answered() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to switch a thread to another uid");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = serve_in(dir.path(), allowed);
        let path = socket.clone();
        let answer = tokio::task::spawn_blocking(move || {
            std::thread::spawn(move || {
                // SAFETY: a system call on plain integers; the thread is
                // ours and ends right after the request.
                let rc = unsafe { libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY) };
                assert_eq!(rc, 0, "setresuid: {}", io::Error::last_os_error());
                assert_eq!(nix::unistd::geteuid().as_raw(), NOBODY);
                get_root(&path)
            })
            .join()
            .unwrap()
        })
        .await
        .unwrap();
        assert_disconnected(&answer);
        assert!(nix::unistd::geteuid().is_root(), "the process stayed root");
        assert_answered(&get_root_off_runtime(&socket).await);
    }
}
