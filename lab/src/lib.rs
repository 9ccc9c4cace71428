//! `lanlink_lab`: the lab that lanlink's integration tests, the demo and the
//! benchmarks run in.
//!
//! A lab is made only of network namespaces this process creates itself:
//!
//! ```text
//!   LAN netns (ll-<pid>-<n>-lan)                 node netns (ll-<pid>-<n>-node1)
//!   ┌──────────────────────────────┐             ┌──────────────────────────┐
//!   │ br0 198.18.0.1/24 (router)   │── veth ───► │ eth0 198.18.0.10/24      │
//!   │ dnsmasq: DHCP .100–.199      │             │ lanlinkd --uplink eth0   │
//!   │                              │── veth ───► LAN hosts (traffic peers)  │
//!   └──────────────────────────────┘             └──────────────────────────┘
//!                                                pod netns: empty, the CNI
//!                                                plugin creates interfaces
//! ```
//!
//! Rules every part of the lab keeps (they are what make it safe to run on a
//! developer's machine and in parallel):
//!
//! - Nothing is created in, or changed in, the root namespace: veths are
//!   created inside lab namespaces (`ip -n <lan> link add … peer … netns
//!   <node>`), and commands run in a namespace through `nsenter --net=…`
//!   (never `ip netns exec`, which remounts `/sys` and hides bpffs).
//! - Addresses come only from 198.18.0.0/15 (RFC 2544), see [`check_lab_addr`].
//! - Names are unique per run (`ll-<pid>-<counter>-<role>`, see [`names`]), so
//!   tests run in parallel, in one process or many.
//! - Everything is removed on every exit path: each resource is an RAII guard
//!   whose `Drop` cleans up (and never panics), a process-wide registry lets a
//!   SIGINT/SIGTERM/SIGHUP handler clean what is still alive, and
//!   [`sweep_leftovers`] removes what runs that crashed (SIGKILL, abort) left.
//! - Every command and every traffic loop is bounded in count and time.

#![warn(missing_docs)]

/// Writes a line to stderr, ignoring failure: `eprintln!` panics when stderr
/// is a closed pipe (`… | head`), and cleanup code must never panic.
macro_rules! lab_log {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "lanlink-lab: {}", format_args!($($arg)*));
    }};
}

pub mod agent;
pub mod capture;
pub mod cleanup;
pub mod cmd;
pub mod cni;
pub mod cri;
pub mod daemonset;
pub mod firsthop;
pub mod kea;
pub mod lan;
pub mod lan6;
pub mod names;
pub mod netfilter;
pub mod netns;
pub mod node;
pub mod nssock;
pub mod packet;
pub mod ping;
pub mod podman;
pub mod pods;
pub mod readme;
pub mod toolargs;
pub mod traffic;
pub mod wait;

use std::net::Ipv4Addr;
use std::path::PathBuf;

pub use agent::{Agent, AgentOptions};
pub use cleanup::{install_signal_handler, leaks, sweep_leftovers};
pub use cni::{CniCall, CniOutput, PodNet, cni, cni_exec, lab_netconf};
pub use kea::{Kea, KeaLease, KeaOptions};
pub use lan::{DnsmasqLease, Lan, LanHost, LanOptions};
pub use netns::NetNs;
pub use node::{Node, OneNode};
pub use ping::{PingStats, ping};
pub use wait::wait_until;

/// The LAN router (and DHCP server) address, on the LAN namespace's `br0`.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// Prefix length of the lab LAN (198.18.0.0/24).
pub const LAN_PREFIX_LEN: u8 = 24;

/// Name of the agent binary in [`bin_dir`].
pub const AGENT_BIN: &str = "lanlinkd";

/// Name of the CNI plugin binary in [`bin_dir`].
pub const CNI_BIN: &str = "lanlink";

/// The directory under which each agent of the lab pins its maps, in its own
/// subdirectory named like the lab's namespaces. The lab's own root, not the
/// agent's default pin dir ([`AGENT_DEFAULT_PIN_DIR`]): a node's real agent
/// pins there, and the lab never writes into it.
pub const PIN_ROOT: &str = "/sys/fs/bpf/lanlink-lab";

/// The agent's default `--pin-dir` (`lanlink_agent::paths::DEFAULT_PIN_DIR`);
/// only tests of that default use it, each in a mount namespace of its own.
pub const AGENT_DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lanlink";

/// Where lanlink's binaries are: `$LANLINK_BIN_DIR`, else
/// `<workspace>/target/debug` (what `cargo xtask build` produces).
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("LANLINK_BIN_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("target").join("debug"),
    }
}

/// The root of the Cargo workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// The path of one of this package's tools (`lab-net`, `lab-rr`,
/// `lab-udpflood`, `lab-craft`, `lab-fake-agent`), built and up to date.
///
/// A test of another package (the scenarios in `tests/`) cannot name these
/// binaries with `env!("CARGO_BIN_EXE_…")`, and `cargo test -p
/// lanlink-tests` does not build them: so the first call runs `cargo build
/// -p lanlink-lab --bins` with the profile and target dir of the running
/// executable (`target/<profile>/deps/<test>` → `target/<profile>/`),
/// which is a no-op when they are fresh. `$LANLINK_LAB_BIN_DIR`, when set,
/// names a directory holding them instead (nothing is built).
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    if let Some(dir) = std::env::var_os("LANLINK_LAB_BIN_DIR").filter(|d| !d.is_empty()) {
        let path = PathBuf::from(dir).join(name);
        anyhow::ensure!(path.is_file(), "{} does not exist", path.display());
        return Ok(path);
    }
    let dir = BUILT
        .get_or_init(|| build_tools().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = dir.join(name);
    anyhow::ensure!(path.is_file(), "{} does not exist", path.display());
    std::fs::canonicalize(&path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// `cargo build -p lanlink-lab --bins` into the running executable's
/// profile dir; returns that dir.
fn build_tools() -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    // target/<profile>/deps/<test>, or target/<profile>/<bin>.
    let mut dir = exe.parent().context("executable without a directory")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().context("deps without a parent")?;
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("no profile directory")?;
    let target = dir.parent().context("profile dir without a target dir")?;
    let mut c =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.arg("build")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .args(["-p", "lanlink-lab", "--bins", "--profile"])
        .arg(if profile == "debug" { "dev" } else { profile })
        .arg("--target-dir")
        .arg(target);
    cmd::run_ok(&mut c, std::time::Duration::from_secs(600))
        .context("cannot build the lab's tools")?;
    Ok(dir.to_owned())
}

/// Fails (panics) with a clear message unless the process runs as root.
///
/// Lab tests must not skip silently when they cannot run: a skipped test looks
/// like a passing one in CI.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this test needs root: it creates network namespaces, veths and bpffs pins; \
             run it as root (e.g. `sudo -E cargo xtask test`)"
        );
    }
}

/// Refuses any address outside 198.18.0.0/15, the only range the lab may use.
pub fn check_lab_addr(ip: Ipv4Addr) -> anyhow::Result<()> {
    let [a, b, ..] = ip.octets();
    if a == 198 && (b == 18 || b == 19) {
        Ok(())
    } else {
        anyhow::bail!("{ip} is outside 198.18.0.0/15, the only range the lab may use")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_range_is_enforced() {
        assert!(check_lab_addr(Ipv4Addr::new(198, 18, 0, 1)).is_ok());
        assert!(check_lab_addr(Ipv4Addr::new(198, 19, 255, 254)).is_ok());
        assert!(check_lab_addr(Ipv4Addr::new(198, 20, 0, 1)).is_err());
        assert!(check_lab_addr(Ipv4Addr::new(192, 168, 1, 1)).is_err());
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("lab").is_dir());
    }
}
