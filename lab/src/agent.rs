//! [`Agent`]: `lanlinkd` running inside a node namespace, with its own
//! socket, state dir and bpffs pin dir, all removed when it drops.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::cleanup::{self, LabDir, Registration, Resource};
use crate::cmd::BgProcess;
use crate::netns::in_netns;
use crate::node::Node;
use crate::wait::wait_until;
use crate::{AGENT_BIN, PIN_ROOT, bin_dir, names};

/// How to start the agent.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Where `lanlinkd` is (default: [`crate::bin_dir`]).
    pub bin_dir: PathBuf,
    /// Run this program instead of `<bin_dir>/lanlinkd` (a stand-in for tests
    /// of the lab itself); it gets the same arguments.
    pub program: Option<PathBuf>,
    /// Arguments after the lab's own (`--uplink eth0 --socket … --state-dir …
    /// --pin-dir …`).
    pub extra_args: Vec<String>,
    /// Extra environment (`RUST_LOG` defaults to `info,lanlink=debug` unless
    /// the caller's environment or this sets it).
    pub env: Vec<(String, String)>,
    /// How long to wait for the socket to accept a connection.
    pub ready_timeout: Duration,
    /// How long a stop waits between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Start the agent as `ip netns exec` leaves it: in a mount namespace of
    /// its own (`unshare --mount --propagation slave`, so the pods' netns
    /// mounts still reach it and nothing of its reaches the host) whose
    /// `/sys/fs/bpf` is an empty tmpfs, not bpffs, with `--pin-dir
    /// /sys/fs/bpf/lanlink` there: the agent must mount bpffs itself.
    /// Nothing is pinned in the host's bpffs; the mount namespace, and the
    /// pins in it, go with the process, so a restart adopts nothing.
    pub own_mount_ns: bool,
}

impl AgentOptions {
    /// The default options, with `lanlinkd` taken from `bin_dir`.
    pub fn from_bin_dir(bin_dir: &Path) -> Self {
        Self {
            bin_dir: bin_dir.to_owned(),
            ..Self::default()
        }
    }
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            bin_dir: bin_dir(),
            program: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            // Software-emulated guests (`cargo xtask vmtest`) load and
            // verify the programs far slower: they set a longer wait.
            ready_timeout: std::env::var("LANLINK_LAB_AGENT_READY_S")
                .ok()
                .and_then(|s| s.parse().ok())
                .map_or(Duration::from_secs(20), Duration::from_secs),
            stop_grace: Duration::from_secs(5),
            own_mount_ns: false,
        }
    }
}

/// `lanlinkd --uplink eth0 --socket <tmp>/lanlink.sock --state-dir
/// <tmp>/state --pin-dir /sys/fs/bpf/lanlink/ll-<pid>-<n>-agent` running in a
/// node's namespace (through nsenter, so bpffs is the host's), its stdout and
/// stderr appended to `<tmp>/agent.log`.
///
/// Dropping it stops the agent (SIGTERM, ≤ 5 s, SIGKILL), then removes its
/// pin dir (unpinning every map and program) and its temp dir.
#[derive(Debug)]
pub struct Agent {
    // Field order is drop order: the process, then the pins, then the files.
    proc: Option<BgProcess>,
    pin_dir: PathBuf,
    /// The host's pin dir (None when the agent pins in a mount namespace of
    /// its own, see [`AgentOptions::own_mount_ns`]).
    pin_reg: Option<Registration>,
    dir: LabDir,
    netns_path: PathBuf,
    opts: AgentOptions,
}

impl Agent {
    /// [`Agent::start`] with the default options plus `args` on the agent's
    /// command line.
    pub fn start_with_args(node: &Node, args: &[&str]) -> Result<Self> {
        Self::start(
            node,
            AgentOptions {
                extra_args: args.iter().map(|a| a.to_string()).collect(),
                ..AgentOptions::default()
            },
        )
    }

    /// Starts the agent in `node` and waits until its socket accepts a
    /// connection (failing with the agent's log if it exits or times out).
    pub fn start(node: &Node, opts: AgentOptions) -> Result<Self> {
        let program = opts
            .program
            .clone()
            .unwrap_or_else(|| opts.bin_dir.join(AGENT_BIN));
        if !program.is_file() {
            bail!(
                "{} not found; build it with `cargo xtask build` or set LANLINK_BIN_DIR",
                program.display()
            );
        }
        let dir = LabDir::new("agent")?;
        let (pin_dir, pin_reg) = if opts.own_mount_ns {
            // A path of the agent's own mount namespace, never the host's.
            (PathBuf::from(crate::AGENT_DEFAULT_PIN_DIR), None)
        } else {
            let pin_root = Path::new(PIN_ROOT);
            if !is_bpffs(pin_root.parent().unwrap_or(pin_root)) {
                bail!("bpffs is not mounted at /sys/fs/bpf; run `cargo xtask setup`");
            }
            std::fs::create_dir_all(pin_root)
                .with_context(|| format!("cannot create {PIN_ROOT}"))?;
            let pin_dir = pin_root.join(names::unique("agent"));
            let pin_reg = Registration::new(Resource::Dir {
                path: pin_dir.clone(),
            });
            (pin_dir, Some(pin_reg))
        };
        std::fs::create_dir_all(dir.path().join("state")).context("cannot create the state dir")?;
        let mut agent = Self {
            proc: None,
            pin_dir,
            pin_reg,
            dir,
            netns_path: node.path().to_owned(),
            opts,
        };
        agent.spawn()?;
        Ok(agent)
    }

    /// The binary it runs (`lanlinkd` of its bin dir, unless replaced).
    pub fn program(&self) -> PathBuf {
        self.opts
            .program
            .clone()
            .unwrap_or_else(|| self.opts.bin_dir.join(AGENT_BIN))
    }

    fn spawn(&mut self) -> Result<()> {
        let program = self.program();
        let mut cmd = if self.opts.own_mount_ns {
            // unshare, sh and nsenter each exec the next: the agent's pid is
            // the one spawned, and the mount namespace dies with it.
            let mut c = Command::new("unshare");
            c.args([
                "--mount",
                "--propagation",
                "slave",
                "sh",
                "-c",
                r#"mount -t tmpfs -o mode=0700 lanlink-lab /sys/fs/bpf && exec nsenter --net="$0" -- "$@""#,
            ])
            .arg(&self.netns_path);
            c
        } else {
            in_netns(&self.netns_path)
        };
        cmd.arg(&program)
            .args(["--uplink", "eth0", "--socket"])
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .args(&self.opts.extra_args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,lanlink=debug");
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        // A socket left by a killed agent would look ready before the new one binds.
        let _ = std::fs::remove_file(self.socket());
        let proc = BgProcess::spawn_logged(&mut cmd, "lanlinkd", &self.log_path())?
            .with_grace(self.opts.stop_grace);
        self.proc = Some(proc);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let socket = self.socket();
        let what = format!("lanlinkd to accept connections on {}", socket.display());
        let mut proc = self.proc.as_mut();
        wait_until(self.opts.ready_timeout, &what, || {
            if UnixStream::connect(&socket).is_ok() {
                return Ok(Some(()));
            }
            if let Some(proc) = proc.as_deref_mut()
                && let Some(status) = proc.try_wait()?
            {
                bail!(
                    "lanlinkd exited ({status}) before serving {}",
                    socket.display()
                );
            }
            Ok(None)
        })
        .with_context(|| format!("the agent's log:\n{}", self.log()))
    }

    /// Sends `signal` to the agent, waits up to the stop grace period for it
    /// to exit and SIGKILLs it if it did not. Pins and state stay, so
    /// [`Agent::restart`] can show re-adoption. For a signal that should not
    /// end the agent, use [`Agent::signal`].
    pub fn kill(&mut self, signal: Signal) -> Result<ExitStatus> {
        let proc = self.proc.as_mut().context("the agent is not running")?;
        let status = proc.kill_with(signal)?;
        self.proc = None;
        Ok(status)
    }

    /// Stops the agent if it runs (SIGTERM) and starts it again with the same
    /// socket, state dir and pin dir; waits until it serves.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            proc.stop()?;
        }
        self.spawn()
    }

    /// Replaces the arguments after the lab's own, for the next
    /// [`Agent::restart`] (e.g. to turn a dataplane option on or off while
    /// the pods stay).
    pub fn set_extra_args(&mut self, args: Vec<String>) {
        self.opts.extra_args = args;
    }

    /// Whether the agent process is running.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(BgProcess::is_running)
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(BgProcess::pid)
    }

    /// The agent's Unix socket (`netconf.socketPath`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("lanlink.sock")
    }

    /// The agent's state dir.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Where the agent pins its maps and programs (a path of the agent's
    /// own mount namespace with [`AgentOptions::own_mount_ns`]).
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Path of its log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// `GET <path>` on the agent's socket (HTTP/1.1, `Connection: close`),
    /// as `curl --unix-socket` would; fails unless the answer is a 200 in
    /// one piece (not chunked). Returns the body. Bounded by 30 s.
    pub fn http_get(&self, path: &str) -> Result<String> {
        use std::io::{Read as _, Write as _};
        let socket = self.socket();
        let mut s = UnixStream::connect(&socket)
            .with_context(|| format!("cannot connect to {}", socket.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: lanlink\r\nConnection: close\r\n\r\n"
        )
        .with_context(|| format!("cannot send GET {path}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .with_context(|| format!("cannot read the answer to GET {path}"))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("GET {path}: no end of the HTTP header in {text:.200}"))?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {head}");
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            bail!("GET {path}: a chunked answer");
        }
        Ok(body.to_owned())
    }

    /// Everything the agent has logged so far (all runs, restarts included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut proc) = self.proc.take()
            && let Err(e) = proc.stop()
        {
            lab_log!("cannot stop lanlinkd: {e:#}");
        }
        if self.pin_reg.is_some() {
            cleanup::remove_dir(&self.pin_dir);
        }
    }
}

/// Whether `path` is a bpffs mount.
pub fn is_bpffs(path: &Path) -> bool {
    // BPF_FS_MAGIC from linux/magic.h.
    const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
    match nix::sys::statfs::statfs(path) {
        Ok(st) =>
        // The field's C type (`__fsword_t`) differs between architectures.
        {
            st.filesystem_type().0 as u64 == BPF_FS_MAGIC
        }
        Err(_) => false,
    }
}
