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
//!   (namespaces and the processes in them, processes naming their dirs,
//!   pin dirs, temp dirs, cgroups, runc state, libcni cache entries).
//!
//! [`leaks_since`] (with a [`LeakBaseline`] taken before the tests) is the
//! check that every exit path cleaned up; its unit tests plant one leftover
//! of each kind it reads the absence of, as positive controls.

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

/// Removes what earlier lab runs that died without cleaning up left behind,
/// for every `<pid>` of a name `ll-<pid>-…` that is no longer a running
/// process: processes whose command line names such a dir or namespace,
/// runc containers whose bundle is in one (`runc delete --force`), the
/// namespaces (and the processes in them), pin dirs under
/// [`crate::PIN_ROOT`], temp dirs `/tmp/ll-<pid>-…`, cgroups, and stale
/// libcni result cache entries of the [`LAB_NETWORKS`]. Live runs, this one
/// included, are never touched. Returns what it removed.
///
/// Runs automatically once per process before the first lab namespace is
/// created.
pub fn sweep_leftovers() -> Vec<String> {
    let dead = |name: &str| owner_dead(name);
    // containerd's dirs first: they hold mounts, shims and pod cgroups that
    // the generic steps below cannot remove.
    let mut removed = crate::cri::sweep();
    // Processes first: a leftover containerd shim or agent holds the rest.
    for (pid, _, args) in processes() {
        if args.iter().any(|a| names_dead_run(a)) {
            cmd::terminate_pid(pid, Duration::from_secs(2));
            removed.push(format!("process {pid}"));
        }
    }
    for (dir, bundle) in runc_states().unwrap_or_default() {
        if !names_dead_run(&bundle) {
            continue;
        }
        let (Some(root), Some(id)) = (dir.parent(), dir.file_name()) else {
            continue;
        };
        let _ = cmd::run(
            Command::new("runc")
                .arg("--root")
                .arg(root)
                .args(["delete", "--force"])
                .arg(id),
            cmd::SHORT,
        );
        remove_dir(&dir);
        removed.push(dir.display().to_string());
    }
    for name in read_names(Path::new(CNI_RESULTS)).unwrap_or_default() {
        let path = Path::new(CNI_RESULTS).join(&name);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if stale_lab_result(&name, &text) {
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path.display().to_string()),
                Err(e) => lab_log!("cannot remove {}: {e}", path.display()),
            }
        }
    }
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
    for dir in cgroup_leftovers() {
        // Leaves first: rmdir only removes empty cgroups.
        let mut dirs = walk_dirs(&dir);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            if let Err(e) = std::fs::remove_dir(&d) {
                lab_log!("cannot remove cgroup {}: {e}", d.display());
            }
        }
        removed.push(dir.display().to_string());
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

/// The fixed CNI network names the lab's netconfs use ([`crate::PodNet`]'s
/// `lanlink-lab`, the podman scenario's `lanlink-lan`); libcni caches each
/// attachment's result as `<network>-<container id>-<ifname>` under
/// [`CNI_RESULTS`]. A network named like the lab's namespaces (`ll-<pid>-…`,
/// the containerd scenario's) is the lab's too.
pub const LAB_NETWORKS: &[&str] = &["lanlink-lab", "lanlink-lan"];

/// libcni's result cache (podman, containerd, cri-o: `cacheDir` default).
pub const CNI_RESULTS: &str = "/var/lib/cni/results";

/// State roots of runc: podman's (runc's default for root) and containerd's
/// shim's (`<root>/<namespace>/<id>`). A container's `state.json` names its
/// bundle, which for the lab's runtimes is inside a lab temp dir.
pub const RUNC_ROOTS: &[&str] = &["/run/runc", "/run/containerd/runc"];

/// Programs the lab starts: found running in a network namespace that no
/// longer has a name (its bind mount deleted), they are a lab run's
/// leftovers. `lab-*` tools are matched by prefix.
pub const LAB_PROGRAMS: &[&str] = &[
    "ping",
    "tcpdump",
    "dnsmasq",
    "lanlinkd",
    "iperf3",
    "kea-dhcp4",
    "udhcpc",
    "conmon",
    "containerd",
    "containerd-shim-runc-v2",
];

/// Whether `name` (`ll-<pid>-…`, anything after a `.` ignored) is a lab
/// name whose run is no longer alive.
fn owner_dead(name: &str) -> bool {
    names::owner_pid(name.split('.').next().unwrap_or(name))
        .and_then(|pid| i32::try_from(pid).ok())
        .is_some_and(|p| !cmd::pid_alive(p))
}

/// Whether `text` (a path, an argument like `--net=/run/netns/ll-…`, a
/// JSON document) names a lab namespace or dir whose run is gone.
fn names_dead_run(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'))
        .any(|part| part.starts_with(names::PREFIX) && owner_dead(part))
}

/// What was already there before a run of the tests (`cargo xtask test`
/// takes it before the tests start): podman's and CNI's namespaces, the CNI
/// result cache, runc state and the agent's default pin dir can hold things
/// that are not the lab's, and carry no name the lab chose, so only what
/// appeared after the snapshot counts as leaked.
#[derive(Clone, Debug, Default)]
pub struct LeakBaseline {
    netns: std::collections::BTreeSet<String>,
    results: std::collections::BTreeSet<String>,
    runc: std::collections::BTreeSet<String>,
    default_pins: Option<std::collections::BTreeSet<String>>,
}

impl LeakBaseline {
    /// Snapshots the namespaces, CNI results, runc states and the agent's
    /// default pin dir that exist now.
    pub fn take() -> Self {
        Self {
            netns: netns_list().into_iter().collect(),
            results: read_names(Path::new(CNI_RESULTS))
                .unwrap_or_default()
                .into_iter()
                .collect(),
            runc: runc_states()
                .unwrap_or_default()
                .into_iter()
                .map(|(dir, _)| dir.display().to_string())
                .collect(),
            default_pins: read_names(Path::new(crate::AGENT_DEFAULT_PIN_DIR))
                .ok()
                .map(|v| v.into_iter().collect()),
        }
    }
}

/// Names in `dir`; an absent dir is empty, any other error is an error (an
/// unreadable dir must not read as an empty one).
fn read_names(dir: &Path) -> std::io::Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut names = Vec::new();
            for e in entries {
                if let Ok(name) = e?.file_name().into_string() {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Every runc container state under [`RUNC_ROOTS`]: its dir and the bundle
/// its `state.json` names.
fn runc_states() -> std::io::Result<Vec<(PathBuf, String)>> {
    fn visit(dir: &Path, depth: u32, out: &mut Vec<(PathBuf, String)>) -> std::io::Result<()> {
        for name in read_names(dir)? {
            let sub = dir.join(&name);
            let state = sub.join("state.json");
            if state.is_file() {
                let text = std::fs::read_to_string(&state).unwrap_or_default();
                let bundle = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["bundle"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                out.push((sub, bundle));
            } else if depth > 0 && sub.is_dir() {
                visit(&sub, depth - 1, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for root in RUNC_ROOTS {
        visit(Path::new(root), 1, &mut out)?;
    }
    Ok(out)
}

/// A libcni cache entry of one of the [`LAB_NETWORKS`] that is stale: the
/// sandbox its result names is gone, or it names a lab dir or namespace
/// whose run is gone. (libcni removes the entry at DEL, before the runtime
/// deletes the namespace, so a live attachment's sandbox always exists.)
fn stale_lab_result(name: &str, text: &str) -> bool {
    if !lab_result(name) {
        return false;
    }
    if owner_dead(name) || names_dead_run(text) {
        return true;
    }
    let sandboxes: Vec<String> = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| {
            v["result"]["interfaces"].as_array().map(|ifs| {
                ifs.iter()
                    .filter_map(|i| i["sandbox"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default();
    sandboxes
        .iter()
        .any(|s| !s.is_empty() && !Path::new(s).exists())
}

/// Whether a libcni cache entry's file name is of a lab network.
fn lab_result(name: &str) -> bool {
    names::owner_pid(name).is_some()
        || LAB_NETWORKS
            .iter()
            .any(|n| name.strip_prefix(n).is_some_and(|r| r.starts_with('-')))
}

/// The inodes of the network namespaces that can still be entered by name:
/// the root's and every nsfs bind mount (`/run/netns/*`, podman's, a
/// containerd root's). A process in a namespace outside this set runs in
/// one whose name was deleted under it.
fn named_netns_inodes() -> std::collections::BTreeSet<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut set = std::collections::BTreeSet::new();
    if let Ok(m) = std::fs::metadata("/proc/1/ns/net") {
        set.insert(m.ino());
    }
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            if right.split_whitespace().next() != Some("nsfs") {
                continue;
            }
            if let Some(mount) = left.split_whitespace().nth(4)
                && let Ok(m) = std::fs::metadata(mount)
            {
                set.insert(m.ino());
            }
        }
    }
    set
}

/// Running processes other than this one: pid, program name (`comm`) and
/// arguments.
fn processes() -> Vec<(i32, String, Vec<String>)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let me = std::process::id() as i32;
    for p in procs.filter_map(|e| e.ok()) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || !cmd::pid_alive(pid) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let comm = std::fs::read_to_string(p.path().join("comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        out.push((pid, comm, args));
    }
    out
}

/// Whether a process is one of the [`LAB_PROGRAMS`] (by `comm` or by
/// `argv[0]`'s file name; `comm` is cut at 15 bytes).
fn is_lab_program(comm: &str, args: &[String]) -> bool {
    let argv0 = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("");
    [comm, argv0].iter().any(|n| {
        !n.is_empty()
            && (n.starts_with("lab-")
                || LAB_PROGRAMS
                    .iter()
                    .any(|p| p == n || (n.len() == 15 && p.starts_with(n))))
    })
}

/// What lab runs left behind (see [`leaks_since`]), without a snapshot:
/// only what a lab name or a lab network name marks as a lab run's.
pub fn leaks() -> Vec<String> {
    leaks_with(None)
}

/// What lab runs left behind, with what appeared since `base` also counted:
///
/// - namespaces, pin dirs (under [`crate::PIN_ROOT`]), temp dirs and cgroups
///   named like the lab's (`ll-<pid>-…`) whose run is no longer alive;
/// - namespaces that appeared since `base` with a name the lab did not
///   choose (podman's `netns-*`, CNI's `cni-*`);
/// - libcni result cache entries of the [`LAB_NETWORKS`] that are stale, or
///   that appeared since `base`;
/// - runc container states (under [`RUNC_ROOTS`]) whose bundle is in a lab
///   dir of a dead run;
/// - processes whose command line names a lab dir or namespace of a dead
///   run (the agent, dnsmasq, containerd and its shims, …), and lab
///   programs ([`LAB_PROGRAMS`], `lab-*`) running in a network namespace
///   whose name was deleted;
/// - anything in the agent's default pin dir that was not there at `base`
///   (the lab pins under its own root only).
///
/// Empty when every run cleaned up. `cargo xtask test` calls it after the
/// tests, when every test process has exited, so anything it finds leaked
/// on some exit path. A directory it cannot read is reported too (never
/// read as empty).
pub fn leaks_since(base: &LeakBaseline) -> Vec<String> {
    leaks_with(Some(base))
}

fn leaks_with(base: Option<&LeakBaseline>) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for n in netns_list() {
        if owner_dead(&n) {
            found.push(format!("network namespace {n}"));
        } else if let Some(base) = base
            && names::owner_pid(&n).is_none()
            && !base.netns.contains(&n)
        {
            found.push(format!(
                "network namespace {n} (not the lab's name: podman, CNI)"
            ));
        }
    }
    for root in [Path::new(crate::PIN_ROOT), Path::new(TMP_ROOT)] {
        match read_names(root) {
            Ok(names) => found.extend(
                names
                    .into_iter()
                    .filter(|n| owner_dead(n))
                    .map(|n| root.join(n).display().to_string()),
            ),
            Err(e) => found.push(format!("cannot read {}: {e}", root.display())),
        }
    }
    for dir in cgroup_leftovers() {
        found.push(format!("cgroup {}", dir.display()));
    }
    match read_names(Path::new(CNI_RESULTS)) {
        Ok(names) => {
            for n in names {
                let path = Path::new(CNI_RESULTS).join(&n);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let new = base.is_some_and(|b| !b.results.contains(&n)) && lab_result(&n);
                if new || stale_lab_result(&n, &text) {
                    found.push(format!("CNI result cache {}", path.display()));
                }
            }
        }
        Err(e) => found.push(format!("cannot read {CNI_RESULTS}: {e}")),
    }
    match runc_states() {
        Ok(states) => {
            for (dir, bundle) in states {
                let new = base.is_some_and(|b| !b.runc.contains(&dir.display().to_string()))
                    && bundle.contains(&format!("/{}", names::PREFIX));
                if new || names_dead_run(&bundle) {
                    found.push(format!("runc state {} (bundle {bundle})", dir.display()));
                }
            }
        }
        Err(e) => found.push(format!("cannot read runc's state: {e}")),
    }
    let named = named_netns_inodes();
    for (pid, comm, args) in processes() {
        let line = args.join(" ");
        if args.iter().any(|a| names_dead_run(a)) {
            found.push(format!("process {pid} ({line}) of a dead lab run"));
        } else if is_lab_program(&comm, &args)
            && let Some(ino) = process_netns(pid)
            && !named.contains(&ino)
        {
            found.push(format!(
                "process {pid} ({line}) in a network namespace whose name was deleted"
            ));
        }
    }
    if let Some(base) = base {
        match (
            read_names(Path::new(crate::AGENT_DEFAULT_PIN_DIR)),
            &base.default_pins,
        ) {
            (Ok(now), Some(before)) => found.extend(
                now.into_iter()
                    .filter(|n| !before.contains(n))
                    .map(|n| format!("{}/{n}", crate::AGENT_DEFAULT_PIN_DIR)),
            ),
            (Ok(_), None) if Path::new(crate::AGENT_DEFAULT_PIN_DIR).exists() => found.push(
                format!("{} (absent before the tests)", crate::AGENT_DEFAULT_PIN_DIR),
            ),
            (Ok(_), None) => {}
            (Err(e), _) => found.push(format!("cannot read {}: {e}", crate::AGENT_DEFAULT_PIN_DIR)),
        }
    }
    found
}

/// The inode of `pid`'s network namespace.
fn process_netns(pid: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Cgroups named like the lab's (podman's `--cgroup-parent`) of dead runs,
/// in every hierarchy (cgroup v1 controllers, v2's unified one).
fn cgroup_leftovers() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs: Vec<PathBuf> = vec![root.to_owned()];
    dirs.extend(
        read_names(root)
            .unwrap_or_default()
            .into_iter()
            .map(|n| root.join(n))
            .filter(|p| p.is_dir()),
    );
    let mut out = Vec::new();
    for dir in dirs {
        for n in read_names(&dir).unwrap_or_default() {
            let p = dir.join(&n);
            if owner_dead(&n) && p.is_dir() {
                out.push(p);
            }
        }
    }
    out
}

/// `dir` and every directory below it.
pub(crate) fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk_dirs(&e.path()));
            }
        }
    }
    out
}

/// Positive controls of [`leaks`] and [`sweep_leftovers`]: each plants one
/// leftover of a kind the check reads the absence of, in a lab-owned way,
/// shows the check reports it (and the sweep removes it), then cleans up.
/// They need root, and fail (not skip) without it.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::{NetNs, in_netns};
    use std::process::Stdio;

    /// One control at a time: each one's sweep would remove another's
    /// planted leftover before that one's check reads it.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        // This process's one sweep (run by the first namespace any test
        // creates) done before anything is planted, so it cannot take a
        // control's leftover away mid-check.
        sweep_once();
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pid that is certainly dead: a child already reaped.
    fn dead_pid() -> u32 {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait true");
        assert!(!cmd::pid_alive(pid as i32));
        pid
    }

    /// Creates `dir` and whichever of its parents are missing; returns those
    /// created, deepest first, for [`remove_created`].
    fn create_dirs(dir: &Path) -> Vec<PathBuf> {
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .filter(|a| !a.exists())
            .map(Path::to_owned)
            .collect();
        std::fs::create_dir_all(dir).expect("create dir");
        missing.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        missing
    }

    fn remove_created(dirs: &[PathBuf]) {
        for d in dirs {
            // Only if empty: another user may have put something there.
            let _ = std::fs::remove_dir(d);
        }
    }

    fn reported(leaks: &[String], what: &str) -> bool {
        leaks.iter().any(|l| l.contains(what))
    }

    #[test]
    fn a_stale_cni_result_of_a_lab_network_is_a_leak() {
        crate::require_root();
        let _serial = serial();
        let dead = dead_pid();
        let created = create_dirs(Path::new(CNI_RESULTS));
        let id = names::unique("ctl").replace('-', "");
        // The sandbox is a namespace of a run that is gone.
        let stale = Path::new(CNI_RESULTS).join(format!("lanlink-lab-{id}a-eth0"));
        let sandbox = format!("/run/netns/ll-{dead}-0-gone");
        let entry = |sandbox: &str| {
            serde_json::json!({
                "kind": "cniCacheV1",
                "containerId": id,
                "ifName": "eth0",
                "networkName": "lanlink-lab",
                "result": {"cniVersion": "1.0.0",
                           "interfaces": [{"name": "eth0", "sandbox": sandbox}]},
            })
            .to_string()
        };
        std::fs::write(&stale, entry(&sandbox)).expect("write the stale entry");
        // A live one (its sandbox exists) of a lab network: not stale, but
        // new since a snapshot.
        let base = LeakBaseline::take();
        let live = Path::new(CNI_RESULTS).join(format!("lanlink-lab-{id}b-eth0"));
        std::fs::write(&live, entry("/proc/self/ns/net")).expect("write the live entry");
        // Another network's entry is never the lab's.
        let other = Path::new(CNI_RESULTS).join(format!("podman-{id}c-eth0"));
        std::fs::write(&other, entry(&sandbox)).expect("write the other entry");

        // A network named like the lab's (the containerd scenario's) of a
        // dead run: stale whatever its sandbox.
        let named = Path::new(CNI_RESULTS).join(format!("ll-{dead}-0-cri-{id}d-eth0"));
        std::fs::write(&named, entry("/proc/self/ns/net")).expect("write the named entry");

        let plain = leaks();
        let since = leaks_since(&base);
        let swept = sweep_leftovers();
        let stale_left = stale.exists();
        let live_left = live.exists();
        let other_left = other.exists();
        let named_left = named.exists();
        for f in [&stale, &live, &other, &named] {
            let _ = std::fs::remove_file(f);
        }
        remove_created(&created);

        let s = stale.display().to_string();
        let l = live.display().to_string();
        let o = other.display().to_string();
        assert!(reported(&plain, &s), "stale entry not reported: {plain:?}");
        assert!(!reported(&plain, &l), "live entry reported: {plain:?}");
        assert!(!reported(&plain, &o), "another network's entry: {plain:?}");
        assert!(reported(&since, &l), "new entry not reported: {since:?}");
        let n = named.display().to_string();
        assert!(reported(&plain, &n), "dead run's network: {plain:?}");
        assert!(!stale_left && !named_left, "not swept: {swept:?}");
        assert!(live_left && other_left, "the sweep removed a live entry");
    }

    #[test]
    fn runc_state_with_a_bundle_of_a_dead_run_is_a_leak() {
        crate::require_root();
        let _serial = serial();
        let dead = dead_pid();
        let dir = Path::new(RUNC_ROOTS[0]).join(names::unique("ctl"));
        let created = create_dirs(&dir);
        let bundle = format!("/tmp/ll-{dead}-0-podman.x/root/vfs-containers/c/userdata");
        std::fs::write(
            dir.join("state.json"),
            serde_json::json!({"id": "c", "bundle": bundle}).to_string(),
        )
        .expect("write state.json");
        let found = leaks();
        let swept = sweep_leftovers();
        let left = dir.exists();
        remove_dir(&dir);
        remove_created(&created);
        assert!(
            reported(&found, &dir.display().to_string()),
            "runc state not reported: {found:?}"
        );
        assert!(!left, "runc state not swept: {swept:?}");
    }

    #[test]
    fn a_process_naming_a_dead_run_is_a_leak() {
        crate::require_root();
        let _serial = serial();
        let dead = dead_pid();
        // `; :` keeps sh as the process (no exec of sleep).
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30; :"])
            .arg(format!("ll-{dead}-0-ctl"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        let found = leaks();
        let swept = sweep_leftovers();
        let status = child.try_wait().expect("try_wait");
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            reported(&found, &format!("process {pid} ")),
            "the process is not reported: {found:?}"
        );
        assert!(status.is_some(), "the sweep did not stop it: {swept:?}");
    }

    #[test]
    fn a_lab_program_in_a_deleted_namespace_is_a_leak() {
        crate::require_root();
        let _serial = serial();
        let ns = NetNs::new("ctl").expect("netns");
        // nsenter execs ping: the child is ping itself, bounded by -w.
        let mut child = in_netns(ns.path())
            .args(["ping", "-q", "-c", "30", "-i", "1", "-w", "30", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn ping");
        let pid = child.id();
        let in_ns = crate::wait_until(Duration::from_secs(5), "ping in the netns", || {
            Ok(netns_pids(ns.name()).contains(&(pid as i32)).then_some(()))
        });
        let before = leaks();
        // Delete the name only (what a crash between the two steps of
        // `remove_netns` leaves): ping keeps the namespace alive.
        let del = cmd::run(
            Command::new("ip").args(["netns", "del", ns.name()]),
            cmd::SHORT,
        );
        let after = leaks();
        let _ = child.kill();
        let _ = child.wait();
        in_ns.expect("ping never ran in the netns");
        assert!(del.is_ok_and(|o| o.status.success()), "ip netns del failed");
        let what = format!("process {pid} ");
        assert!(
            !reported(&before, &what),
            "reported while named: {before:?}"
        );
        assert!(reported(&after, &what), "not reported: {after:?}");
    }

    #[test]
    fn a_foreign_namespace_new_since_the_snapshot_is_a_leak() {
        crate::require_root();
        let _serial = serial();
        let base = LeakBaseline::take();
        let name = format!("cni-{}", names::unique("ctl").replace('-', ""));
        let out = cmd::run(Command::new("ip").args(["netns", "add", &name]), cmd::SHORT)
            .expect("ip netns add");
        let _reg = Registration::new(Resource::Netns { name: name.clone() });
        let since = leaks_since(&base);
        let plain = leaks();
        remove_netns(&name);
        let after = leaks_since(&base);
        assert!(out.status.success(), "ip netns add {name} failed");
        let what = format!("network namespace {name} ");
        assert!(reported(&since, &what), "not reported: {since:?}");
        assert!(!reported(&plain, &what), "no snapshot, yet reported");
        assert!(!reported(&after, &what), "reported once removed");
    }

    #[test]
    fn a_pin_dir_and_a_cgroup_of_a_dead_run_are_leaks() {
        crate::require_root();
        let _serial = serial();
        let dead = dead_pid();
        let name = format!("ll-{dead}-0-ctl");
        let pin = Path::new(crate::PIN_ROOT).join(&name);
        let created = create_dirs(&pin);
        // A cgroup v1 hierarchy if there is one, else the v2 root.
        let cg_root = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").exists())
            .expect("no cgroup hierarchy");
        let cgroup = cg_root.join(&name);
        let made_cgroup = std::fs::create_dir(&cgroup);
        let found = leaks();
        let swept = sweep_leftovers();
        let (pin_left, cgroup_left) = (pin.exists(), cgroup.exists());
        remove_dir(&pin);
        let _ = std::fs::remove_dir(&cgroup);
        remove_created(&created);
        made_cgroup.expect("mkdir cgroup");
        assert!(
            reported(&found, &pin.display().to_string()),
            "pin dir not reported: {found:?}"
        );
        assert!(
            reported(&found, &format!("cgroup {}", cgroup.display())),
            "cgroup not reported: {found:?}"
        );
        assert!(!pin_left && !cgroup_left, "not swept: {swept:?}");
    }

    /// Runs only as the child of
    /// `a_pin_in_the_agents_default_dir_is_a_leak`, in a mount namespace of
    /// its own whose `/sys/fs/bpf` is a tmpfs: takes a snapshot, creates
    /// what an agent pinning at the default would, and prints the check's
    /// verdict.
    #[test]
    fn default_pin_helper() {
        if std::env::var_os("LL_DEFAULT_PIN_HELPER").is_none() {
            return;
        }
        let mounted = cmd::run(
            Command::new("mount").args(["-t", "tmpfs", "ll-ctl", "/sys/fs/bpf"]),
            cmd::SHORT,
        )
        .expect("mount");
        assert!(mounted.status.success(), "mount tmpfs on /sys/fs/bpf");
        let base = LeakBaseline::take();
        let before = leaks_since(&base);
        let pin = Path::new(crate::AGENT_DEFAULT_PIN_DIR).join("EP_BY_MAC");
        std::fs::create_dir_all(&pin).expect("create the pin");
        let after = leaks_since(&base);
        let pin = pin.display().to_string();
        println!(
            "VERDICT before={} after={}",
            reported(&before, &pin),
            reported(&after, &pin)
        );
    }

    #[test]
    fn a_pin_in_the_agents_default_dir_is_a_leak() {
        crate::require_root();
        // The host's /sys/fs/bpf is never written: the helper runs in a
        // private mount namespace (unshare's default propagation) with a
        // tmpfs there, gone with it.
        let out = cmd::run(
            Command::new("unshare")
                .args(["--mount", "--"])
                .arg(std::env::current_exe().expect("current exe"))
                .args([
                    "--exact",
                    "cleanup::tests::default_pin_helper",
                    "--nocapture",
                ])
                .env("LL_DEFAULT_PIN_HELPER", "1"),
            cmd::DEFAULT,
        )
        .expect("run the helper");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("VERDICT before=false after=true"),
            "the helper: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
