//! `cargo xtask build-ebpf`: builds the TC programs for `bpfel-unknown-none`
//! with nightly (build-std=core) and bpf-linker `--btf`, as configured in
//! `ebpf/.cargo/config.toml`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{self, exec};

/// Builds the object and returns its absolute path.
pub fn build() -> Result<PathBuf> {
    let root = util::root();
    let target_dir = root.join("target").join("ebpf");
    let mut cmd = Command::new("cargo");
    // The outer `cargo run` pins the stable toolchain (RUSTUP_TOOLCHAIN would
    // override `+nightly`) and may set flags or a target dir meant for the
    // host build: none of that may leak into the BPF build.
    util::clean_cargo_env(&mut cmd);
    cmd.current_dir(root.join("ebpf").join("lanlink-ebpf"))
        .args(["+nightly", "build", "--release"])
        .env("CARGO_TARGET_DIR", &target_dir);
    exec(&mut cmd).context("building the eBPF object failed")?;
    let obj = target_dir
        .join("bpfel-unknown-none")
        .join("release")
        .join("lanlink");
    if !obj.is_file() {
        bail!("the eBPF build succeeded but {} is missing", obj.display());
    }
    Ok(obj)
}

/// `cargo xtask build-ebpf`.
pub fn run() -> Result<PathBuf> {
    let obj = build()?;
    println!("eBPF object: {}", obj.display());
    Ok(obj)
}
