//! `cargo xtask setup`: installs what a bare Debian 12 machine of this kind
//! needs to build lanlink and run its lab, skipping what is there. Prints one
//! line per item: `ok` or `installing`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{self, exec, stdout_of, succeeds};

/// Debian packages the build, the lab, the tests and the demo use.
const PACKAGES: &[&str] = &[
    // bpf-linker is built against LLVM 22; aya's bindgen needs libclang.
    "llvm-22-dev",
    "libclang-22-dev",
    // The lab: DHCP server, namespaces and veths, traffic and captures.
    "dnsmasq-base",
    "iproute2",
    "iptables",
    "iperf3",
    "iputils-ping",
    "tcpdump",
    "bpftool",
    // Conformance with a real runtime.
    "podman",
    "runc",
    "containernetworking-plugins",
    // DHCP clients and other DHCP servers for interop tests.
    "busybox-static",
    "isc-dhcp-server",
    "kea-dhcp4-server",
    "radvd",
    "curl",
    "jq",
];

/// The bpf-linker release known to build with the `llvm-22` feature.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where `cargo install` builds bpf-linker from: LLVM 22 from Debian.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Runs every step, in dependency order.
pub fn run_all() -> Result<()> {
    packages()?;
    rust_components()?;
    bpf_linker()?;
    bpffs()?;
    br_netfilter();
    Ok(())
}

/// `cargo xtask setup`.
pub fn run() -> Result<()> {
    run_all()?;
    println!("setup complete");
    Ok(())
}

fn ok(item: &str) {
    println!("ok          {item}");
}

fn installing(item: &str) {
    println!("installing  {item}");
}

fn installed(pkg: &str) -> bool {
    let status = stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]));
    status.trim() == "install ok installed"
}

/// Installs the missing Debian packages in one `apt-get install`, after an
/// `apt-get update` (only when something is missing).
fn packages() -> Result<()> {
    let mut missing = Vec::new();
    for pkg in PACKAGES {
        if installed(pkg) {
            ok(pkg);
        } else {
            installing(pkg);
            missing.push(*pkg);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    exec(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get update failed")?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            // Never ask about config files: CI has no stdin.
            .args([
                "-o",
                "Dpkg::Options::=--force-confdef",
                "-o",
                "Dpkg::Options::=--force-confold",
            ])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get install failed")?;
    let still: Vec<&str> = missing.into_iter().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!("still not installed after apt-get: {}", still.join(" "));
    }
    Ok(())
}

/// Nightly rust-src (build-std for the BPF target) and stable rustfmt (the
/// format check of `cargo xtask test`).
fn rust_components() -> Result<()> {
    let toolchains = stdout_of(Command::new("rustup").args(["toolchain", "list"]));
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        installing("rust toolchain nightly");
        exec(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .context("cannot install the nightly toolchain (the eBPF build needs it)")?;
    }
    let nightly = stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]));
    if nightly.lines().any(|l| l.trim() == "rust-src") {
        ok("rust-src (nightly)");
    } else {
        installing("rust-src (nightly)");
        exec(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if succeeds(util::cargo().args(["fmt", "--version"])) {
        ok("rustfmt");
    } else {
        installing("rustfmt");
        exec(Command::new("rustup").args(["component", "add", "rustfmt"]))?;
    }
    Ok(())
}

/// bpf-linker built against Debian's LLVM 22 (about 3 minutes on 2 cores).
fn bpf_linker() -> Result<()> {
    if succeeds(Command::new("bpf-linker").arg("--version")) {
        ok("bpf-linker");
        return Ok(());
    }
    installing("bpf-linker (cargo install, LLVM 22; takes a few minutes)");
    let mut cmd = Command::new("cargo");
    util::clean_cargo_env(&mut cmd);
    exec(
        cmd.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
    .context("cannot install bpf-linker")?;
    if !succeeds(Command::new("bpf-linker").arg("--version")) {
        bail!(
            "bpf-linker was installed but `bpf-linker --version` fails: is ~/.cargo/bin on PATH?"
        );
    }
    Ok(())
}

/// Mounts bpffs at /sys/fs/bpf (the agents pin their maps there).
fn bpffs() -> Result<()> {
    let fstype = stdout_of(Command::new("stat").args(["-f", "-c", "%T", "/sys/fs/bpf"]));
    if fstype.trim() == "bpf_fs" {
        ok("bpffs at /sys/fs/bpf");
        return Ok(());
    }
    installing("bpffs at /sys/fs/bpf (mount)");
    if !Path::new("/sys/fs/bpf").is_dir() {
        bail!("/sys/fs/bpf does not exist: is sysfs mounted?");
    }
    exec(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

/// Loads br_netfilter, so tests can set `net.bridge.bridge-nf-call-iptables`
/// (field failure F2). A failure is not fatal: it may be built in.
fn br_netfilter() {
    if Path::new("/proc/sys/net/bridge").is_dir() {
        ok("br_netfilter");
        return;
    }
    installing("br_netfilter (modprobe)");
    if !succeeds(Command::new("modprobe").arg("br_netfilter")) {
        println!("            modprobe br_netfilter failed; continuing (it may be built in)");
    }
}
