//! Running commands with a deadline, and background processes as guards.
//!
//! Nothing in the lab waits without a bound: [`run`] kills a command that
//! outlives its timeout, and a [`BgProcess`] is stopped (SIGTERM, then
//! SIGKILL) when it drops.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cleanup::{Registration, Resource};

/// Timeout of the short administrative commands (`ip`, `sysctl`, ...).
pub const SHORT: Duration = Duration::from_secs(10);

/// Default timeout of a command run in a namespace.
pub const DEFAULT: Duration = Duration::from_secs(30);

/// How long a stopped process gets between SIGTERM and SIGKILL by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// A command line as text, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) and returns its
/// output whatever its exit status; fails if it cannot start or outlives
/// `timeout` (it is then killed).
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    run_with_stdin(cmd, None, timeout)
}

/// Like [`run`], writing `stdin` to the command's standard input first.
pub fn run_with_stdin(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    let what = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{what}`"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("stdin pipe missing")?;
        let input = input.to_vec();
        // A writer thread: a command that does not read its stdin must not
        // block us past the deadline.
        thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&input);
        });
    }
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    if let Some(mut out) = child.stdout.take() {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            let _ = tx.send((true, buf));
        });
    }
    if let Some(mut err) = child.stderr.take() {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            let _ = tx.send((false, buf));
        });
    }
    drop(tx);

    let deadline = Instant::now() + timeout;
    let status = match wait_child(&mut child, deadline)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{what}` did not finish within {timeout:?} and was killed");
        }
    };
    // The pipes close when the command exits, unless it left a background
    // process holding them: never wait for that longer than a second.
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let pipes_deadline = Instant::now() + Duration::from_secs(1);
    for _ in 0..2 {
        let left = pipes_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, buf)) => stdout = buf,
            Ok((false, buf)) => stderr = buf,
            Err(_) => break,
        }
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Like [`run`], but fails unless the command exits 0; returns its stdout.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let what = describe(cmd);
    let out = run(cmd, timeout)?;
    check(&what, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with the command's stderr unless `out` is a success.
pub fn check(what: &str, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "`{what}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

/// Waits for `child` to exit until `deadline` passes (`None`). Blocks in
/// `poll(2)` on a pidfd, so the exit is seen when it happens (timings taken
/// around a command, like the benchmark's CNI ADD latency, are exact); falls
/// back to polling every millisecond where pidfds are unavailable.
pub fn wait_child(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    let pidfd = pidfd_open(child.id());
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            return Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match &pidfd {
            Some(fd) => {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // Rounded up, so a wake-up is never before the deadline.
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, ms) };
            }
            None => thread::sleep(left.min(Duration::from_millis(1))),
        }
    }
}

/// A pidfd for `pid` (readable once the process exits), if the kernel has them.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a fresh fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether `pid` is a running process (zombies count as gone).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself
        // contain spaces and parentheses: look after the last ')'.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// The parent pid of `pid`, if it exists.
pub fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Sends SIGTERM to `pid`, waits up to `grace` for it to go, then SIGKILLs
/// it. For processes that are not our children (we cannot reap them).
pub fn terminate_pid(pid: i32, grace: Duration) {
    if !pid_alive(pid) {
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !pid_alive(pid) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// A process running in the background, stopped when the guard drops
/// (SIGTERM, up to its grace period, then SIGKILL) and always reaped.
#[derive(Debug)]
pub struct BgProcess {
    child: Child,
    what: String,
    grace: Duration,
    _reg: Registration,
}

impl BgProcess {
    /// Starts `cmd` in the background (stdin closed; stdout and stderr as the
    /// command sets them, else inherited). `what` names it in messages.
    pub fn spawn(cmd: &mut Command, what: &str) -> Result<Self> {
        cmd.stdin(Stdio::null());
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {what}: `{}`", describe(cmd)))?;
        let pid = child.id() as i32;
        Ok(Self {
            child,
            what: what.to_owned(),
            grace: DEFAULT_GRACE,
            _reg: Registration::new(Resource::Process { pid }),
        })
    }

    /// Starts `cmd` in the background with stdout and stderr appended to `log`.
    pub fn spawn_logged(cmd: &mut Command, what: &str, log: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log {}", log.display()))?;
        let err = file.try_clone().context("cannot duplicate the log file")?;
        cmd.stdout(file).stderr(err);
        Self::spawn(cmd, what)
    }

    /// Sets how long [`BgProcess::stop`] and `Drop` wait after SIGTERM.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("waiting for {}", self.what))
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` without waiting.
    pub fn signal(&mut self, signal: Signal) -> Result<()> {
        if self.try_wait()?.is_some() {
            bail!("{} has already exited", self.what);
        }
        kill(Pid::from_raw(self.pid() as i32), signal)
            .with_context(|| format!("cannot send {signal} to {}", self.what))
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        wait_child(&mut self.child, Instant::now() + timeout)
    }

    /// Sends `signal`, waits up to the grace period for the process to exit,
    /// then SIGKILLs it; returns how it exited.
    pub fn kill_with(&mut self, signal: Signal) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let _ = kill(Pid::from_raw(self.pid() as i32), signal);
        if let Some(status) = self.wait_timeout(self.grace)? {
            return Ok(status);
        }
        lab_log!(
            "{} (pid {}) ignored {signal} for {:?}; sending SIGKILL",
            self.what,
            self.pid(),
            self.grace
        );
        let _ = self.child.kill();
        self.child
            .wait()
            .with_context(|| format!("reaping {}", self.what))
    }

    /// SIGTERM, grace period, SIGKILL.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.kill_with(Signal::SIGTERM)
    }
}

impl Drop for BgProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            lab_log!("cannot stop {}: {e:#}", self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_captures_output_and_status() {
        let out = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            SHORT,
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    }

    #[test]
    fn run_kills_on_timeout() {
        let started = Instant::now();
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn run_feeds_stdin() {
        let out = run_with_stdin(&mut Command::new("cat"), Some(b"hello"), SHORT).unwrap();
        assert_eq!(out.stdout, b"hello");
    }

    #[test]
    fn run_does_not_wait_for_background_children_holding_pipes() {
        let started = Instant::now();
        let out = run(
            Command::new("sh").args(["-c", "sleep 2 & echo done"]),
            SHORT,
        )
        .unwrap();
        assert!(out.status.success());
        assert!(started.elapsed() < Duration::from_millis(1800));
    }

    #[test]
    fn run_ok_reports_stderr() {
        let err = run_ok(
            Command::new("sh").args(["-c", "echo boom >&2; exit 1"]),
            SHORT,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("boom"), "{err:#}");
    }

    #[test]
    fn parent_pid_of_a_child_is_us() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        assert_eq!(
            parent_pid(child.id() as i32),
            Some(std::process::id() as i32)
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(parent_pid(child.id() as i32), None);
    }

    #[test]
    fn bg_process_is_stopped_on_drop() {
        let proc = BgProcess::spawn(Command::new("sleep").arg("30"), "sleep").unwrap();
        let pid = proc.pid() as i32;
        assert!(pid_alive(pid));
        drop(proc);
        assert!(!pid_alive(pid));
    }

    #[test]
    fn bg_process_escalates_to_sigkill() {
        let mut proc = BgProcess::spawn(
            // Short sleeps, so no orphan outlives the test by more than 50 ms.
            Command::new("sh").args(["-c", "trap '' TERM; while :; do sleep 0.05; done"]),
            "stubborn",
        )
        .unwrap()
        .with_grace(Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(100));
        let status = proc.stop().unwrap();
        assert!(!status.success());
    }
}
