//! [`DsNode`]: a lab node running lanlink's DaemonSet image as a kubelet
//! would — podman with host networking (the node's namespace), the node's
//! hostPath directories stood for by a lab temp dir, and a pin dir of its
//! own on the host's bpffs.
//!
//! Podman uses the default storage (where `cargo xtask image` put
//! `localhost/lanlink:<version>`) with a containers.conf of the lab's temp
//! dir: runc, cgroupfs, no default ulimits (podman's default `nofile`
//! exceeds the hard limit here and runc fails with "error setting rlimit
//! type 7"). It runs through `nsenter --net=<node>` (never `ip netns exec`,
//! which remounts `/sys` and hides bpffs), so `--network host` is the node's
//! namespace.
//!
//! Cleanup: dropping the guard removes every container it started
//! (`podman rm -f`), the pin dir and the temp dir. Detached containers are
//! not our children, so the lab's signal handler cannot stop them as it
//! stops processes: a sentinel child (`sh`, registered like every lab
//! process) removes every container labelled with this node's name when it
//! is terminated — by the handler on SIGINT/SIGTERM/SIGHUP, or by `Drop`.
//! After a SIGKILL of the test process nothing runs: deleting the node's
//! namespace (the next run's sweep) kills the agent, and only podman's
//! record of the container remains.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cleanup::{self, LabDir, Registration, Resource};
use crate::cmd::BgProcess;
use crate::netns::in_netns;
use crate::node::Node;
use crate::{PIN_ROOT, agent::is_bpffs, cmd, names};

/// podman's global options on this machine (see the module docs).
const PODMAN_OPTS: [&str; 4] = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"];

/// The sentinel: on SIGTERM/SIGINT/SIGHUP (or after an hour, the bound),
/// removes every container labelled `$0`, then exits.
const SENTINEL: &str = r#"
rm_all() {
    kill "$s" 2>/dev/null
    ids=$(podman --runtime runc --cgroup-manager cgroupfs ps -aq --filter "label=$0")
    [ -z "$ids" ] || podman --runtime runc --cgroup-manager cgroupfs rm --force --time 0 $ids >/dev/null 2>&1
    exit 0
}
trap rm_all TERM INT HUP
sleep 3600 & s=$!
wait "$s"
rm_all
"#;

/// The label marking this lab's containers (value: the node's unique name).
const LABEL: &str = "lanlink-lab";

/// One container to run: what a DaemonSet's container spec says, with its
/// hostPath volumes already resolved to paths of this machine.
#[derive(Clone, Debug, Default)]
pub struct ContainerRun {
    /// The image (`image:`).
    pub image: String,
    /// The entrypoint (`command:`), empty for the image's.
    pub command: Vec<String>,
    /// Its arguments (`args:`).
    pub args: Vec<String>,
    /// `env:` with values resolved.
    pub env: Vec<(String, String)>,
    /// `securityContext.privileged`.
    pub privileged: bool,
    /// `hostNetwork`.
    pub host_network: bool,
    /// Bind mounts: host path, container path, podman options (`ro`,
    /// `rshared`, `rslave`, …).
    pub mounts: Vec<(PathBuf, String, Vec<String>)>,
}

/// A node of the lab as the DaemonSet sees it (see the module docs).
#[derive(Debug)]
pub struct DsNode {
    node_netns: PathBuf,
    containers: Mutex<Vec<String>>,
    label: String,
    pin_dir: PathBuf,
    _pin_reg: Registration,
    _sentinel: BgProcess,
    // Last: the files go after the containers.
    dir: LabDir,
}

impl DsNode {
    /// Prepares `node`: a temp dir standing for its root file system, a
    /// containers.conf, and a lab-unique pin dir path under
    /// `/sys/fs/bpf/lanlink` (created by the agent).
    pub fn new(node: &Node) -> Result<Self> {
        let pin_root = Path::new(PIN_ROOT);
        if !is_bpffs(pin_root.parent().unwrap_or(pin_root)) {
            bail!("bpffs is not mounted at /sys/fs/bpf; run `cargo xtask setup`");
        }
        let dir = LabDir::new("ds")?;
        crate::podman::write_plain_containers_conf(dir.path())?;
        let label = names::unique("ds");
        let pin_dir = pin_root.join(&label);
        let pin_reg = Registration::new(Resource::Dir {
            path: pin_dir.clone(),
        });
        let sentinel = BgProcess::spawn(
            Command::new("sh")
                .args(["-c", SENTINEL, &format!("{LABEL}={label}")])
                .env("CONTAINERS_CONF", dir.path().join("containers.conf")),
            "the containers' sentinel",
        )?
        .with_grace(Duration::from_secs(10));
        Ok(Self {
            node_netns: node.path().to_owned(),
            containers: Mutex::new(Vec::new()),
            label,
            pin_dir,
            _pin_reg: pin_reg,
            _sentinel: sentinel,
            dir,
        })
    }

    /// The node's path `node_path` (absolute) in the lab: `<tmp>/root<path>`,
    /// created when missing (`DirectoryOrCreate`).
    pub fn host_path(&self, node_path: &str) -> Result<PathBuf> {
        let rel = node_path.trim_start_matches('/');
        let path = self.dir.path().join("root").join(rel);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(path)
    }

    /// A scratch directory `<tmp>/<name>` (e.g. for a ConfigMap volume).
    pub fn scratch(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(path)
    }

    /// The lab-unique pin dir on the host's bpffs.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// `podman` with the lab's containers.conf (for `exec`, `logs`, …; `run`
    /// happens in the node's namespace).
    pub fn podman(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.args(PODMAN_OPTS)
            .args(args)
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"));
        c
    }

    /// Whether podman has `image` locally.
    pub fn image_exists(&self, image: &str) -> bool {
        cmd::run(&mut self.podman(&["image", "exists", image]), cmd::SHORT)
            .is_ok_and(|o| o.status.success())
    }

    /// Runs `spec` as container `ll-<pid>-<n>-<role>` to completion (at most
    /// `timeout`); fails with its output unless it exits 0. Removed after.
    pub fn run_to_completion(
        &self,
        role: &str,
        spec: &ContainerRun,
        timeout: Duration,
    ) -> Result<String> {
        let name = self.track(role);
        let mut c = self.run_command(&name, spec, false);
        let out = cmd::run(&mut c, timeout);
        let logs = out.as_ref().map(both).unwrap_or_default();
        self.remove(&name);
        let out = out?;
        if !out.status.success() {
            bail!("container {name} exited with {}: {logs}", out.status);
        }
        Ok(logs)
    }

    /// Starts `spec` detached as container `ll-<pid>-<n>-<role>`; returns its
    /// name.
    pub fn start(&self, role: &str, spec: &ContainerRun) -> Result<String> {
        let name = self.track(role);
        cmd::run_ok(&mut self.run_command(&name, spec, true), cmd::DEFAULT)
            .with_context(|| format!("cannot start container {name}"))?;
        Ok(name)
    }

    /// `podman stop --time <grace>` (SIGTERM, then SIGKILL after `grace`
    /// seconds), then removes the container; returns its logs.
    pub fn stop(&self, name: &str, grace_secs: u32) -> Result<String> {
        let grace = grace_secs.to_string();
        let out = cmd::run(
            &mut self.podman(&["stop", "--time", &grace, name]),
            Duration::from_secs(u64::from(grace_secs) + 30),
        )?;
        cmd::check(&format!("podman stop {name}"), &out)?;
        let logs = self.logs(name);
        self.remove(name);
        Ok(logs)
    }

    /// Whether container `name` is running.
    pub fn is_running(&self, name: &str) -> bool {
        cmd::run(
            &mut self.podman(&["inspect", "--format", "{{.State.Running}}", name]),
            cmd::SHORT,
        )
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
    }

    /// Container `name`'s stdout and stderr so far.
    pub fn logs(&self, name: &str) -> String {
        match cmd::run(&mut self.podman(&["logs", name]), cmd::SHORT) {
            Ok(out) => both(&out),
            Err(e) => format!("(no logs: {e:#})"),
        }
    }

    fn track(&self, role: &str) -> String {
        let name = names::unique(role);
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        name
    }

    fn run_command(&self, name: &str, spec: &ContainerRun, detach: bool) -> Command {
        // In the node's namespace: `--network host` is the node's.
        let mut c = in_netns(&self.node_netns);
        c.arg("podman")
            .args(PODMAN_OPTS)
            .args(["run", "--name", name, "--pull=never", "--label"])
            .arg(format!("{LABEL}={}", self.label))
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"));
        if detach {
            c.arg("--detach");
        }
        if spec.host_network {
            c.args(["--network", "host"]);
        } else {
            c.args(["--network", "none"]);
        }
        if spec.privileged {
            c.arg("--privileged");
        }
        for (k, v) in &spec.env {
            c.arg("--env").arg(format!("{k}={v}"));
        }
        for (host, path, opts) in &spec.mounts {
            let mut v = format!("{}:{path}", host.display());
            if !opts.is_empty() {
                v.push(':');
                v.push_str(&opts.join(","));
            }
            c.arg("--volume").arg(v);
        }
        // Kubernetes' `command` replaces the entrypoint: podman takes it as
        // a JSON array, the whole of it.
        if !spec.command.is_empty() {
            let entrypoint = serde_json::to_string(&spec.command).unwrap_or_default();
            c.arg("--entrypoint").arg(entrypoint);
        }
        c.arg(&spec.image).args(&spec.args);
        c
    }

    fn remove(&self, name: &str) {
        match cmd::run(
            &mut self.podman(&["rm", "--force", "--time", "0", "--ignore", name]),
            cmd::DEFAULT,
        ) {
            Ok(out) if out.status.success() => self
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|n| n != name),
            Ok(out) => lab_log!("podman rm {name} failed: {}", both(&out).trim()),
            Err(e) => lab_log!("podman rm {name}: {e:#}"),
        }
    }
}

impl Drop for DsNode {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.containers.lock().unwrap_or_else(|e| e.into_inner()));
        for name in names {
            self.remove(&name);
        }
        cleanup::remove_dir(&self.pin_dir);
    }
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
