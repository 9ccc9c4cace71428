//! `cargo xtask build-ebpf`: builds the TC programs for `bpfel-unknown-none`
//! with the eBPF crate's pinned nightly (`ebpf/lanlink-ebpf/rust-toolchain.toml`,
//! provided by `cargo xtask setup`), build-std=core and bpf-linker `--btf`,
//! as configured in `ebpf/.cargo/config.toml`. Also clippy over that crate,
//! with the same target and build-std (run by `cargo xtask test`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{self, exec};

/// The eBPF crate's directory (cargo must run there so its
/// `.cargo/config.toml` and `rust-toolchain.toml` apply).
fn crate_dir() -> PathBuf {
    util::root().join("ebpf").join("lanlink-ebpf")
}

/// The toolchain named by the eBPF crate's `rust-toolchain.toml`
/// (`channel = "…"`), e.g. `lanlink-nightly-2026-05-20`.
pub fn pinned_toolchain() -> Result<String> {
    let path = crate_dir().join("rust-toolchain.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .find(|v| !v.is_empty())
        .with_context(|| format!("no `channel = \"…\"` in {}", path.display()))
}

/// `cargo +<pinned> <args>` in the eBPF crate, its output under target/ebpf.
fn ebpf_cargo(args: &[&str]) -> Result<Command> {
    let toolchain = pinned_toolchain()?;
    let mut cmd = Command::new("cargo");
    // The outer `cargo run` pins the stable toolchain (RUSTUP_TOOLCHAIN would
    // override the pinned one) and may set flags or a target dir meant for
    // the host build: none of that may leak into the BPF build.
    util::clean_cargo_env(&mut cmd);
    cmd.current_dir(crate_dir())
        .arg(format!("+{toolchain}"))
        .args(args)
        .env("CARGO_TARGET_DIR", util::root().join("target").join("ebpf"));
    Ok(cmd)
}

/// Builds the object and returns its absolute path.
pub fn build() -> Result<PathBuf> {
    exec(&mut ebpf_cargo(&["build", "--release"])?).with_context(
        || "building the eBPF object failed (is the pinned nightly there? `cargo xtask setup`)",
    )?;
    let obj = util::root()
        .join("target")
        .join("ebpf")
        .join("bpfel-unknown-none")
        .join("release")
        .join("lanlink");
    if !obj.is_file() {
        bail!("the eBPF build succeeded but {} is missing", obj.display());
    }
    Ok(obj)
}

/// Clippy over the eBPF crate, warnings denied, for the BPF target with
/// build-std (from the crate's `.cargo/config.toml`), as the build sees it.
/// Only the program itself: a no_std BPF binary has no test harness, so
/// `--all-targets` cannot build.
pub fn clippy() -> Result<()> {
    exec(&mut ebpf_cargo(&[
        "clippy",
        "--release",
        "--",
        "-D",
        "warnings",
    ])?)
    .context("clippy over the eBPF crate failed")
}

/// `cargo xtask build-ebpf`.
pub fn run() -> Result<PathBuf> {
    let obj = build()?;
    println!("eBPF object: {}", obj.display());
    Ok(obj)
}
