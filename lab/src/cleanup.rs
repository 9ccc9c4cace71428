//! Cleanup on every exit path.
//!
//! - Normal return and panics (unwinding): each resource's guard cleans up in
//!   `Drop`.
//! - SIGINT, SIGTERM, SIGHUP: `Drop` does not run when a signal ends the
//!   process, so every guard also registers its resource in a process-wide
//!   registry; the handler [`install_signal_handler`] sets up removes whatever
//!   is still registered, then exits with status 130.
//! - SIGKILL, abort, power loss: nothing runs; the next run's
//!   [`sweep_leftovers`] removes what runs whose pid is gone left behind
//!   (namespaces and the processes in them, pin dirs, temp dirs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use crate::cmd;
use crate::names;

/// Something the lab created that must not outlive the run.
#[derive(Clone, Debug)]
pub(crate) enum Resource {
    /// A process we started (stopped first: it may hold the others).
    Process { pid: i32 },
    /// A network namespace (its processes are killed, then it is deleted).
    Netns { name: String },
    /// A directory removed recursively (temp dirs, bpffs pin dirs).
    Dir { path: PathBuf },
}

static REGISTRY: Mutex<BTreeMap<u64, Resource>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
static HANDLER: Once = Once::new();

/// Keeps a resource in the registry while alive; part of a guard, declared
/// after the fields the guard cleans in its `Drop`.
#[derive(Debug)]
pub(crate) struct Registration(u64);

impl Registration {
    /// Registers `res` (and installs the signal handler on first use).
    pub(crate) fn new(res: Resource) -> Self {
        install_signal_handler();
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        registry().insert(id, res);
        Self(id)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry().remove(&self.0);
    }
}

fn registry() -> std::sync::MutexGuard<'static, BTreeMap<u64, Resource>> {
    // A panic while the lock was held must not stop cleanup.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs (once per process) a SIGINT/SIGTERM/SIGHUP handler that removes
/// every live lab resource, then exits with status 130.
///
/// Called automatically when the first resource is created; call it earlier
/// to cover a window before that. If the program already installed its own
/// `ctrlc` handler, a warning is printed and that handler stays: it should
/// then call [`cleanup_all`] itself.
pub fn install_signal_handler() {
    HANDLER.call_once(|| {
        let res = ctrlc::set_handler(|| {
            lab_log!("signal received, removing the lab before exiting");
            cleanup_all();
            std::process::exit(130);
        });
        if let Err(e) = res {
            lab_log!("cannot install the cleanup signal handler: {e}");
        }
    });
}

/// Removes every resource still registered by this process: processes first,
/// then namespaces, then directories. Safe to call more than once and from
/// any thread; never panics.
pub fn cleanup_all() {
    let mut all: Vec<Resource> = registry().values().cloned().collect();
    all.sort_by_key(|r| match r {
        Resource::Process { .. } => 0,
        Resource::Netns { .. } => 1,
        Resource::Dir { .. } => 2,
    });
    for res in all {
        match res {
            // Only if it is still our child: a pid that was reaped and
            // reused belongs to someone else.
            Resource::Process { pid }
                if cmd::parent_pid(pid) == Some(std::process::id() as i32) =>
            {
                cmd::terminate_pid(pid, Duration::from_secs(2))
            }
            Resource::Process { .. } => {}
            Resource::Netns { name } => remove_netns(&name),
            Resource::Dir { path } => remove_dir(&path),
        }
    }
}

/// Kills every process in the namespace `name`, waits (bounded) for them to
/// go, then deletes it. Logs failures; never panics.
pub(crate) fn remove_netns(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = netns_pids(name);
        if pids.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            lab_log!("processes {pids:?} in netns {name} survived SIGKILL");
            break;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !Path::new("/run/netns").join(name).exists() {
        return;
    }
    match cmd::run(Command::new("ip").args(["netns", "del", name]), cmd::SHORT) {
        Ok(out) if out.status.success() => {}
        Ok(out) => lab_log!(
            "`ip netns del {name}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => lab_log!("cannot delete netns {name}: {e:#}"),
    }
}

/// Pids of the processes in the namespace `name` (zombies excluded).
pub(crate) fn netns_pids(name: &str) -> Vec<i32> {
    match cmd::run(Command::new("ip").args(["netns", "pids", name]), cmd::SHORT) {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&p| cmd::pid_alive(p))
            .collect(),
        Err(e) => {
            lab_log!("cannot list processes of netns {name}: {e:#}");
            Vec::new()
        }
    }
}

/// `rm -rf path`, logging failures.
pub(crate) fn remove_dir(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => lab_log!("cannot remove {}: {e}", path.display()),
    }
}

/// Names of the network namespaces that exist now.
pub fn netns_list() -> Vec<String> {
    // /run/netns is what `ip netns` reads; listing it needs no subprocess.
    match std::fs::read_dir("/run/netns") {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Removes what earlier lab runs that died without cleaning up left behind:
/// namespaces named `ll-<pid>-…` (and the processes in them), pin dirs under
/// [`crate::PIN_ROOT`] and temp dirs `/tmp/ll-<pid>-…`, for every `<pid>`
/// that is no longer a running process. Live runs, this one included, are
/// never touched. Returns the names removed.
///
/// Runs automatically once per process before the first lab namespace is
/// created.
pub fn sweep_leftovers() -> Vec<String> {
    let dead = |name: &str| match names::owner_pid(name) {
        Some(pid) => i32::try_from(pid)
            .map(|p| !cmd::pid_alive(p))
            .unwrap_or(false),
        None => false,
    };
    let mut removed = Vec::new();
    for name in netns_list() {
        if dead(&name) {
            remove_netns(&name);
            removed.push(name);
        }
    }
    for root in [Path::new(crate::PIN_ROOT), Path::new(TMP_ROOT)] {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if dead(&name) && entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_dir(&entry.path());
                removed.push(name);
            }
        }
    }
    if !removed.is_empty() {
        lab_log!("removed leftovers of dead runs: {}", removed.join(" "));
    }
    removed
}

static SWEPT: Once = Once::new();

/// [`sweep_leftovers`], once per process.
pub(crate) fn sweep_once() {
    SWEPT.call_once(|| {
        sweep_leftovers();
    });
}

/// Where the lab's temp dirs go.
pub const TMP_ROOT: &str = "/tmp";

/// A temp dir `/tmp/ll-<pid>-<n>-<role>.XXXXXX`, removed when dropped (and by
/// the signal handler or a later sweep).
#[derive(Debug)]
pub struct LabDir {
    dir: Option<tempfile::TempDir>,
    _reg: Registration,
}

impl LabDir {
    /// Creates the directory, world-readable (0755) so that daemons which
    /// drop privileges can still reach files in it.
    pub fn new(role: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}.", names::unique(role)))
            .tempdir_in(TMP_ROOT)
            .context("cannot create a temp dir under /tmp")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot chmod {}", dir.path().display()))?;
        let reg = Registration::new(Resource::Dir {
            path: dir.path().to_owned(),
        });
        Ok(Self {
            dir: Some(dir),
            _reg: reg,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        match &self.dir {
            Some(d) => d.path(),
            None => Path::new(TMP_ROOT),
        }
    }
}

impl Drop for LabDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            if let Err(e) = dir.close() {
                lab_log!("cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// What lab runs left behind: namespaces, pin dirs and temp dirs named like
/// the lab's (`ll-<pid>-…`) whose owner is no longer running, and processes
/// still running inside such namespaces. Empty when every run cleaned up.
/// `cargo xtask test` calls it after the tests, when every test process has
/// exited, so anything it finds leaked on some exit path.
pub fn leaks() -> Vec<String> {
    let dead = |name: &str| {
        names::owner_pid(name)
            .and_then(|pid| i32::try_from(pid).ok())
            .is_some_and(|p| !cmd::pid_alive(p))
    };
    let mut found: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| dead(n))
        .map(|n| format!("network namespace {n}"))
        .collect();
    for root in [Path::new(crate::PIN_ROOT), Path::new(TMP_ROOT)] {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            if let Ok(name) = entry.file_name().into_string()
                && dead(&name)
            {
                found.push(entry.path().display().to_string());
            }
        }
    }
    // Processes (agent, dnsmasq, servers) started by a run that is gone:
    // their command line names the run's temp or pin dir.
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.filter_map(|e| e.ok()) {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let owner_dead = args.iter().any(|a| {
                a.split('/').any(|part| {
                    part.starts_with("ll-") && dead(part.split('.').next().unwrap_or(part))
                })
            });
            if owner_dead {
                found.push(format!("process {pid} ({})", args.join(" ")));
            }
        }
    }
    found
}
