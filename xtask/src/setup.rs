//! `cargo xtask setup`: installs what a bare Debian 12 machine of this kind
//! needs to build lanlink and run its lab, skipping what is there. Prints one
//! line per item: `ok` or `installing`.

use std::path::{Path, PathBuf};
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
    // kubelet's runtime: the CRI scenario drives containerd 1.6 (its
    // client, the k8s-cri crate, compiles the CRI protos with protoc).
    "containerd",
    "protobuf-compiler",
    // DHCP clients and other DHCP servers for interop tests.
    "busybox-static",
    "isc-dhcp-server",
    "kea-dhcp4-server",
    "kea-dhcp6-server",
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

/// Installs the missing [`PACKAGES`].
fn packages() -> Result<()> {
    apt_install(PACKAGES)
}

/// Installs the missing ones of `pkgs` in one `apt-get install`, after an
/// `apt-get update` (only when something is missing).
pub fn apt_install(pkgs: &[&str]) -> Result<()> {
    let mut missing = Vec::new();
    for pkg in pkgs {
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
    apt_update()?;
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

/// `apt-get update`.
pub fn apt_update() -> Result<()> {
    exec(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get update failed")
}

/// The eBPF crate's pinned nightly (see [`ebpf_toolchain`]) and stable
/// rustfmt (the format check of `cargo xtask test`).
fn rust_components() -> Result<()> {
    ebpf_toolchain()?;
    if succeeds(util::cargo().args(["fmt", "--version"])) {
        ok("rustfmt");
    } else {
        installing("rustfmt");
        exec(Command::new("rustup").args(["component", "add", "rustfmt"]))?;
    }
    Ok(())
}

/// Components the eBPF build and its clippy need from the pinned nightly.
const EBPF_COMPONENTS: &[&str] = &["rust-src", "clippy"];

/// Makes the toolchain named in `ebpf/lanlink-ebpf/rust-toolchain.toml`
/// (`lanlink-nightly-<date>`) resolvable, without a download when possible.
///
/// The name is a rustup *linked* toolchain because rustup refuses to link
/// official-looking names (`nightly-<date>`), and a machine that cannot
/// reach static.rust-lang.org must still get it. In order:
/// 1. it is already listed by `rustup toolchain list`: nothing to do;
/// 2. the official `nightly-<date>` is installed: link the name to it;
/// 3. the floating `nightly` is installed and its channel manifest is dated
///    `<date>` (the same build): link the name to its sysroot;
/// 4. otherwise install `nightly-<date>` with the components and link to it.
///
/// In every case the components are then checked; a linked toolchain cannot
/// have components added, so a missing one is a clear error.
fn ebpf_toolchain() -> Result<()> {
    let name = crate::ebpf::pinned_toolchain()?;
    let Some(date) = name.strip_prefix("lanlink-nightly-") else {
        bail!(
            "ebpf/lanlink-ebpf/rust-toolchain.toml names `{name}`; \
             expected `lanlink-nightly-<YYYY-MM-DD>`"
        );
    };
    let official = format!("nightly-{date}");
    let listed = |want: &str| {
        stdout_of(Command::new("rustup").args(["toolchain", "list"]))
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .any(|t| t == want || t.strip_suffix(&format!("-{}", host_triple())) == Some(want))
    };
    if listed(&name) {
        ok(&format!("rust toolchain {name}"));
    } else {
        let source = if listed(&official) {
            official.clone()
        } else if listed("nightly") && manifest_date("nightly").as_deref() == Some(date) {
            "nightly".to_owned()
        } else {
            installing(&format!("rust toolchain {official} (rustup download)"));
            exec(
                Command::new("rustup")
                    .args(["toolchain", "install", &official, "--profile", "minimal"])
                    .args(["--component", &EBPF_COMPONENTS.join(",")]),
            )
            .with_context(|| {
                format!(
                    "cannot install {official} for the eBPF build, and no installed \
                     `nightly` is dated {date}: install it (`rustup toolchain install \
                     {official} --component {}`) or bump the date in \
                     ebpf/lanlink-ebpf/rust-toolchain.toml to an installed nightly's",
                    EBPF_COMPONENTS.join(",")
                )
            })?;
            official.clone()
        };
        let Some(sysroot) = sysroot(&source) else {
            bail!("`rustc +{source} --print sysroot` failed");
        };
        installing(&format!("rust toolchain {name} (rustup link to {source})"));
        exec(
            Command::new("rustup")
                .args(["toolchain", "link", &name])
                .arg(&sysroot),
        )?;
    }
    let Some(sysroot) = sysroot(&name) else {
        bail!("`rustc +{name} --print sysroot` failed after linking it");
    };
    // A linked toolchain cannot have components added, but the rustup
    // toolchain it links to can (a fresh machine's `nightly` comes without
    // rust-src): add what is missing there.
    let has_src = |root: &Path| root.join("lib/rustlib/src/rust/library/core").is_dir();
    let has_clippy = || {
        succeeds(
            Command::new("cargo")
                .arg(format!("+{name}"))
                .args(["clippy", "--version"]),
        )
    };
    let missing: Vec<&str> = [("rust-src", has_src(&sysroot)), ("clippy", has_clippy())]
        .into_iter()
        .filter_map(|(c, present)| (!present).then_some(c))
        .collect();
    if !missing.is_empty()
        && let Some(target) = linked_source(&sysroot)
    {
        installing(&format!(
            "{} (on {target}, which {name} links to)",
            missing.join(", ")
        ));
        exec(
            Command::new("rustup")
                .args(["component", "add", "--toolchain", &target])
                .args(&missing),
        )
        .with_context(|| format!("cannot add {} to {target}", missing.join(", ")))?;
    }
    // rust-src is a directory in the sysroot; clippy is a driver binary.
    if has_src(&sysroot) {
        ok(&format!("rust-src ({name})"));
    } else {
        bail!(
            "{name} has no rust-src (build-std needs it): `rustup component add \
             rust-src --toolchain {official}`, or for a linked nightly on the \
             toolchain it links to"
        );
    }
    if has_clippy() {
        ok(&format!("clippy ({name})"));
    } else {
        bail!(
            "{name} has no clippy (`cargo xtask test` runs it over the eBPF crate): \
             `rustup component add clippy --toolchain {official}`, or on the \
             toolchain it links to"
        );
    }
    Ok(())
}

/// The rustup toolchain whose directory `sysroot` is (what a linked
/// toolchain points at), if it is one rustup installed from a channel.
fn linked_source(sysroot: &Path) -> Option<String> {
    let dir = sysroot.file_name()?.to_str()?.to_owned();
    let installed = sysroot
        .join("lib/rustlib/multirust-channel-manifest.toml")
        .is_file();
    installed.then_some(dir)
}

/// The date of `toolchain`'s channel manifest (`date = "YYYY-MM-DD"`, the
/// nightly's name date), if rustup installed it from a channel.
fn manifest_date(toolchain: &str) -> Option<String> {
    let manifest = sysroot(toolchain)?.join("lib/rustlib/multirust-channel-manifest.toml");
    let text = std::fs::read_to_string(manifest).ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("date"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
}

/// `toolchain`'s sysroot, if rustup can run its rustc.
fn sysroot(toolchain: &str) -> Option<PathBuf> {
    let out = stdout_of(
        Command::new("rustc")
            .arg(format!("+{toolchain}"))
            .args(["--print", "sysroot"]),
    );
    let path = out.trim();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// The host's target triple (`rustup toolchain list` suffixes names with it).
fn host_triple() -> String {
    stdout_of(Command::new("rustc").arg("-vV"))
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .unwrap_or_default()
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

/// cargo-fuzz, which `cargo xtask fuzz` drives on the pinned nightly.
/// Installed by that command on first use, not by every setup: the tests
/// and CI do not fuzz (the fuzzers' regression inputs are unit tests).
pub fn cargo_fuzz() -> Result<()> {
    if succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        ok("cargo-fuzz");
        return Ok(());
    }
    installing("cargo-fuzz (cargo install; takes a few minutes)");
    let mut cmd = Command::new("cargo");
    util::clean_cargo_env(&mut cmd);
    exec(cmd.args(["install", "cargo-fuzz", "--locked"])).context("cannot install cargo-fuzz")?;
    if !succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        bail!(
            "cargo-fuzz was installed but `cargo fuzz --version` fails: is ~/.cargo/bin on PATH?"
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
