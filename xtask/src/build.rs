//! `cargo xtask build`: the eBPF object, then the agent (`lanlinkd`, which
//! embeds the object from `LANLINK_EBPF_OBJ`) and the CNI plugin (`lanlink`).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::ebpf;
use crate::util;

/// What a build produced.
pub struct Built {
    /// The eBPF object the agent embeds.
    pub ebpf_obj: PathBuf,
    /// Directory holding `lanlinkd` and `lanlink`.
    pub bin_dir: PathBuf,
}

/// Builds everything; `release` selects the profile of the agent and plugin.
pub fn build(release: bool) -> Result<Built> {
    let ebpf_obj = ebpf::build()?;
    let bin_dir = util::cargo_build(
        &["-p", "lanlink-agent", "-p", "lanlink-cni"],
        release,
        &[("LANLINK_EBPF_OBJ", &ebpf_obj)],
    )
    .context("building the agent and the CNI plugin failed")?;
    Ok(Built { ebpf_obj, bin_dir })
}

/// `cargo xtask build [--release]`.
pub fn run(release: bool) -> Result<Built> {
    let built = build(release)?;
    println!("eBPF object: {}", built.ebpf_obj.display());
    println!(
        "agent:       {}",
        built.bin_dir.join(lanlink_lab::AGENT_BIN).display()
    );
    println!(
        "CNI plugin:  {}",
        built.bin_dir.join(lanlink_lab::CNI_BIN).display()
    );
    Ok(built)
}
