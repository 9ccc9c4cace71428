//! [`Podman`]: a real container runtime for conformance tests — podman with
//! its CNI backend, running containers on a lanlink network from a node's
//! namespace, with every piece of its state in a lab temp dir.
//!
//! Isolation: podman's storage (`--root`, `--runroot`), its temp dir, its
//! config (`CONTAINERS_CONF`, `CONTAINERS_STORAGE_CONF`, `XDG_CONFIG_HOME`,
//! `HOME`), the CNI config dir and plugin dir all live in the temp dir; the
//! image is a directory (`--rootfs`) holding a static busybox, so nothing is
//! pulled. Containers get their cgroups under a parent named like the lab's
//! namespaces. What podman creates outside the temp dir — a network
//! namespace per container under `/run/netns` and those cgroups — is removed
//! by `podman rm` and, whatever happened, when the guard drops; namespaces
//! seen through [`Podman::track_netns`] are also removed by the lab's signal
//! handler.
//!
//! Podman runs through `nsenter --net=<node>` (never `ip netns exec`, which
//! remounts `/sys` and hides bpffs), so its CNI plugins run in the node's
//! namespace as a node's runtime would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::cleanup::{self, LabDir, Registration, Resource};
use crate::netns::in_netns;
use crate::node::Node;
use crate::{CNI_BIN, bin_dir, cmd, names};

/// Where the reference CNI plugins are (Debian's containernetworking-plugins).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// The static busybox the container image is made of (busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// Busybox applets linked into the image's `/bin`.
const APPLETS: &[&str] = &[
    "sh", "ip", "ping", "cat", "sleep", "echo", "ls", "mkdir", "ifconfig", "route", "hostname",
    "true",
];

/// Where the cgroup hierarchies are (v1: one per controller below it).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Directories outside the temp dir that podman's libraries create on first
/// use and leave empty (libcni's result cache, runc's state root); removed on
/// drop if this guard saw them appear and they are empty.
const CREATED_ON_FIRST_USE: &[&str] = &["/var/lib/cni/results", "/var/lib/cni", "/run/runc"];

/// Podman with its CNI backend and one lanlink network, isolated in a temp
/// dir (see the module docs). Dropping it removes every container, the
/// namespaces and cgroups they left, and the temp dir.
#[derive(Debug)]
pub struct Podman {
    node_netns: PathBuf,
    network: String,
    cgroup_parent: String,
    netns: Mutex<Vec<(String, Registration)>>,
    absent_before: Vec<PathBuf>,
    // Last: the files go after the containers.
    dir: LabDir,
}

impl Podman {
    /// Sets podman up in `node` with a CNI network `network` whose only
    /// plugin is `plugin` (a lanlink plugin object: `type`, `socketPath`, …),
    /// in a `cniVersion` 1.0.0 conflist (podman 4's libcni speaks up to 1.0.0).
    pub fn new(node: &Node, network: &str, plugin: Value) -> Result<Self> {
        let dir = LabDir::new("podman")?;
        let root = dir.path();
        for sub in ["root", "runroot", "tmp", "config", "cni/net.d", "cni/bin"] {
            std::fs::create_dir_all(root.join(sub))
                .with_context(|| format!("cannot create {sub} in {}", root.display()))?;
        }
        build_rootfs(&root.join("rootfs"))?;
        std::os::unix::fs::symlink(bin_dir().join(CNI_BIN), root.join("cni/bin").join(CNI_BIN))
            .context("cannot link the lanlink plugin into the CNI plugin dir")?;
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [plugin],
        });
        std::fs::write(
            root.join("cni/net.d").join(format!("{network}.conflist")),
            serde_json::to_vec_pretty(&conflist)?,
        )
        .context("cannot write the conflist")?;
        let quote = |p: &Path| format!("{:?}", p.display().to_string());
        std::fs::write(
            root.join("containers.conf"),
            format!(
                "[containers]\n\
                 default_ulimits = []\n\
                 [network]\n\
                 network_backend = \"cni\"\n\
                 network_config_dir = {}\n\
                 cni_plugin_dirs = [{}, {:?}]\n\
                 default_network = {network:?}\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"none\"\n\
                 runtime = \"runc\"\n\
                 tmp_dir = {}\n",
                quote(&root.join("cni/net.d")),
                quote(&root.join("cni/bin")),
                REFERENCE_PLUGINS,
                quote(&root.join("tmp")),
            ),
        )
        .context("cannot write containers.conf")?;
        std::fs::write(
            root.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = {}\nrunroot = {}\n",
                quote(&root.join("root")),
                quote(&root.join("runroot")),
            ),
        )
        .context("cannot write storage.conf")?;
        let absent_before = CREATED_ON_FIRST_USE
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        Ok(Self {
            absent_before,
            node_netns: node.path().to_owned(),
            network: network.to_owned(),
            cgroup_parent: names::unique("podman"),
            netns: Mutex::new(Vec::new()),
            dir,
        })
    }

    /// The network's name (`--network`).
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The image directory (`--rootfs`).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// The cgroup parent of its containers (`--cgroup-parent`).
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.cgroup_parent)
    }

    /// `podman <global flags> <args>` in the node's namespace, with only the
    /// isolated configuration in its environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let root = self.dir.path();
        let mut c = in_netns(&self.node_netns);
        c.arg("podman")
            .arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("runroot"))
            .arg("--tmpdir")
            .arg(root.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", root)
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("CONTAINERS_CONF", root.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", root.join("storage.conf"));
        c
    }

    /// Runs `podman <args>`, killed after `timeout`; the output whatever the
    /// exit status.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        cmd::run(&mut self.command(args), timeout)
    }

    /// Runs `podman <args>`; fails unless it exits 0. Returns stdout.
    pub fn run_ok(&self, args: &[&str], timeout: Duration) -> Result<String> {
        cmd::run_ok(&mut self.command(args), timeout)
    }

    /// The arguments of `podman run` for a container on the lanlink network
    /// made from the busybox image, before the command: `--network`,
    /// `--rootfs`, `--cgroup-parent`, and `NET_RAW` for ping.
    pub fn run_args(&self) -> Vec<String> {
        vec![
            "run".into(),
            "--network".into(),
            self.network.clone(),
            "--cgroup-parent".into(),
            self.cgroup_parent(),
            "--cap-add".into(),
            "NET_RAW".into(),
            "--rootfs".into(),
            self.rootfs().display().to_string(),
        ]
    }

    /// The network namespace path of a running container.
    pub fn sandbox(&self, container: &str) -> Result<PathBuf> {
        let out = self.run_ok(
            &[
                "inspect",
                "--format",
                "{{.NetworkSettings.SandboxKey}}",
                container,
            ],
            cmd::DEFAULT,
        )?;
        let path = PathBuf::from(out.trim());
        ensure!(path.is_absolute(), "no sandbox for {container}: {out:?}");
        self.track_netns(&path);
        Ok(path)
    }

    /// Registers a namespace podman made (under `/run/netns`) so it is
    /// removed on drop and by the lab's signal handler if podman did not.
    pub fn track_netns(&self, path: &Path) {
        let Some(name) = path
            .strip_prefix("/run/netns")
            .ok()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && !n.contains('/'))
        else {
            return;
        };
        let mut tracked = self.netns.lock().unwrap_or_else(|e| e.into_inner());
        if !tracked.iter().any(|(n, _)| n == name) {
            let reg = Registration::new(Resource::Netns {
                name: name.to_owned(),
            });
            tracked.push((name.to_owned(), reg));
        }
    }

    /// Its containers' cgroup parent in every hierarchy where it exists
    /// (see [`cgroup_dirs`]).
    pub fn cgroups(&self) -> Result<Vec<PathBuf>> {
        cgroup_dirs(&self.cgroup_parent)
    }

    /// The cgroups of the container `id` (full or short id): directories
    /// below the cgroup parent whose name holds it (`libpod-<id>`, and
    /// podman's `libpod-conmon-<id>` when it makes one), in every hierarchy.
    pub fn container_cgroups(&self, id: &str) -> Result<Vec<PathBuf>> {
        ensure!(!id.is_empty(), "an empty container id");
        let mut found = Vec::new();
        for parent in self.cgroups()? {
            for dir in cleanup::walk_dirs(&parent) {
                if dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains(id))
                {
                    found.push(dir);
                }
            }
        }
        Ok(found)
    }

    /// libcni's cached results of its network (`<network>-<id>-<ifname>`
    /// under [`cleanup::CNI_RESULTS`]). No cache dir is none; a dir that
    /// cannot be read is an error, never an empty list.
    pub fn cni_results(&self) -> Result<Vec<String>> {
        let dir = Path::new(cleanup::CNI_RESULTS);
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        let prefix = format!("{}-", self.network);
        let mut found = Vec::new();
        for e in entries {
            let e = e.with_context(|| format!("cannot read {}", dir.display()))?;
            if let Ok(name) = e.file_name().into_string()
                && name.starts_with(&prefix)
            {
                found.push(name);
            }
        }
        found.sort();
        Ok(found)
    }
}

/// The directories named `name` directly under each cgroup hierarchy
/// (`/sys/fs/cgroup/<controller>/<name>` with cgroup v1, or
/// `/sys/fs/cgroup/<name>` with v2) that exist. A hierarchy that cannot be
/// read, or a path whose existence cannot be told, is an error, never
/// "absent".
pub fn cgroup_dirs(name: &str) -> Result<Vec<PathBuf>> {
    let root = Path::new(CGROUP_ROOT);
    let mut roots = vec![root.to_owned()];
    for c in std::fs::read_dir(root).with_context(|| format!("cannot read {CGROUP_ROOT}"))? {
        let c = c.with_context(|| format!("cannot read {CGROUP_ROOT}"))?;
        if c.file_type().is_ok_and(|t| t.is_dir()) {
            roots.push(c.path());
        }
    }
    let mut found = Vec::new();
    for r in roots {
        let dir = r.join(name);
        if dir
            .try_exists()
            .with_context(|| format!("cannot tell whether {} exists", dir.display()))?
        {
            found.push(dir);
        }
    }
    Ok(found)
}

/// A directory image: `/bin/busybox` (static) and links to its applets,
/// plus the directories runc mounts onto. The podman containers' rootfs and
/// the CRI scenario's image layer (`cri.rs`).
pub(crate) fn build_rootfs(rootfs: &Path) -> Result<()> {
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "run", "root"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
        .with_context(|| format!("cannot copy {BUSYBOX} (busybox-static)"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers first: their DEL releases leases and their netns.
        match self.run(&["rm", "--all", "--force", "--time", "0"], cmd::DEFAULT) {
            Ok(out) if out.status.success() => {}
            Ok(out) => lab_log!(
                "podman rm --all failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => lab_log!("podman rm --all: {e:#}"),
        }
        for (name, _reg) in self
            .netns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            cleanup::remove_netns(&name);
        }
        let cgroups = self.cgroups().unwrap_or_else(|e| {
            lab_log!("cannot list podman's cgroups: {e:#}");
            Vec::new()
        });
        for dir in cgroups {
            // Leaves first: rmdir only removes empty cgroups.
            let mut dirs: Vec<PathBuf> = cleanup::walk_dirs(&dir);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                if let Err(e) = std::fs::remove_dir(&d) {
                    lab_log!("cannot remove cgroup {}: {e}", d.display());
                }
            }
        }
        // Podman mounts per-container tmpfs (shm) under its runroot; a
        // container that failed half-way may leave one, which would keep
        // the temp dir from being removed.
        let root = self.dir.path().to_owned();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut ours: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| Path::new(m).starts_with(&root))
                .collect();
            ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in ours {
                let _ = cmd::run(Command::new("umount").args(["-l", m]), cmd::SHORT);
            }
        }
        // In order, children first; `remove_dir` refuses a non-empty one.
        for dir in &self.absent_before {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Writes `dir/containers.conf` for running podman on this kind of machine
/// outside a lab network: runc with cgroupfs, no events log, and no default
/// ulimits (podman's default `nofile` exceeds the hard limit here and runc
/// fails with "error setting rlimit type 7"). [`Podman`] writes its own,
/// with its CNI network on top of these settings. Returns its path.
pub fn write_plain_containers_conf(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("containers.conf");
    std::fs::write(
        &path,
        "[containers]\n\
         default_ulimits = []\n\
         [engine]\n\
         cgroup_manager = \"cgroupfs\"\n\
         events_logger = \"none\"\n\
         runtime = \"runc\"\n",
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
