//! [`NetNs`]: a network namespace this run created, removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cleanup::{self, Registration, Resource};
use crate::cmd::{self, BgProcess};
use crate::names;

/// The one way the lab runs a program in a network namespace: `nsenter
/// --net=<netns> --`, to which the caller adds the program and its
/// arguments.
///
/// Only the network namespace changes: the mount namespace stays, so bpffs
/// and `/sys` are the host's (`ip netns exec` would remount `/sys`).
/// `netns` is a namespace's bind mount, e.g. `/run/netns/<name>`.
pub fn in_netns(netns: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns.display())).arg("--");
    c
}

/// A network namespace named `ll-<pid>-<n>-<role>`, with `lo` up.
///
/// Dropping it kills every process inside (SIGKILL) and deletes it; the veths
/// it holds go with it, and so do their peers in other namespaces.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    _reg: Registration,
}

impl NetNs {
    /// Creates the namespace (`ip netns add`) and brings `lo` up.
    pub fn new(role: &str) -> Result<Self> {
        cleanup::sweep_once();
        let name = names::unique(role);
        cmd::run_ok(Command::new("ip").args(["netns", "add", &name]), cmd::SHORT)
            .with_context(|| format!("cannot create netns {name}"))?;
        // The guard exists from here on, so any later failure removes it.
        let ns = Self {
            path: Path::new("/run/netns").join(&name),
            _reg: Registration::new(Resource::Netns { name: name.clone() }),
            name,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (`ll-<pid>-<n>-<role>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, `/run/netns/<name>` (what `CNI_NETNS` takes).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command that runs `args` inside the namespace, through
    /// `nsenter --net=<path> --` (mount namespace untouched, so bpffs and
    /// `/sys` stay the host's). Stdin is closed when run by the lab's helpers.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = in_netns(&self.path);
        c.args(args);
        c
    }

    /// Runs `args` in the namespace (timeout 30 s) and returns the output
    /// whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        self.run_timeout(args, cmd::DEFAULT)
    }

    /// Runs `args` in the namespace with a timeout.
    pub fn run_timeout(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        cmd::run(&mut self.command(args), timeout)
            .with_context(|| format!("in netns {}", self.name))
    }

    /// Runs `args` in the namespace (timeout 30 s); fails unless it exits 0.
    /// Returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> Result<String> {
        cmd::run_ok(&mut self.command(args), cmd::DEFAULT)
            .with_context(|| format!("in netns {}", self.name))
    }

    /// `ip -n <ns> <args>`; fails unless it exits 0. Returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args);
        cmd::run_ok(&mut c, cmd::SHORT)
    }

    /// Starts `args` in the namespace in the background, output discarded.
    pub fn spawn(&self, args: &[&str]) -> Result<BgProcess> {
        let mut c = self.command(args);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        BgProcess::spawn(&mut c, args.first().copied().unwrap_or("process"))
    }

    /// Starts `args` in the namespace in the background, stdout and stderr
    /// appended to `log`.
    pub fn spawn_logged(&self, args: &[&str], log: &Path) -> Result<BgProcess> {
        BgProcess::spawn_logged(
            &mut self.command(args),
            args.first().copied().unwrap_or("process"),
            log,
        )
    }

    /// Sets a sysctl inside the namespace, e.g. `sysctl("net.ipv4.ip_forward", "1")`.
    ///
    /// Written through `/proc/sys` by a shell in the namespace: `/proc/sys/net`
    /// shows the namespace of the process that opens it.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run_ok(&[
            "sh",
            "-c",
            r#"printf '%s\n' "$1" > "$2""#,
            "sh",
            value,
            &path,
        ])
        .with_context(|| format!("cannot set {key}={value}"))?;
        Ok(())
    }

    /// Reads a sysctl inside the namespace.
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        Ok(self.run_ok(&["cat", &path])?.trim().to_owned())
    }

    /// The MAC address of `ifname` in the namespace (lower case).
    pub fn mac(&self, ifname: &str) -> Result<String> {
        // Not /sys/class/net: it shows the namespace of whoever mounted /sys,
        // and nsenter keeps the host's mount.
        let out = self.ip(&["-br", "link", "show", "dev", ifname])?;
        out.split_whitespace()
            .nth(2)
            .map(|m| m.to_ascii_lowercase())
            .with_context(|| format!("no MAC for {ifname} in `{}`", out.trim()))
    }

    /// Pids of the processes in the namespace.
    pub fn pids(&self) -> Vec<i32> {
        cleanup::netns_pids(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        cleanup::remove_netns(&self.name);
    }
}
