//! `cargo xtask soak`: builds lanlink (dev profile), then the `lanlink-soak`
//! crate (`soak/`), and runs it: concurrent ADD/DEL cycles through the real
//! plugin, agent and dnsmasq under seeded fault injection, with leak and
//! resource invariants. Results in `bench/results/soak.json` and
//! `soak.png`; what is checked and how is that crate's business.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::util::{self, exec};
use crate::{build, setup};

/// `cargo xtask soak` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// ADD/DEL cycles (one pod each); the README's run is `--cycles 1000`.
    #[arg(long, default_value_t = 100)]
    pub cycles: u32,
    /// Seed of the fault schedule (default: from the clock; printed).
    /// The same seed replays the same fault sequence.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The results JSON (the chart goes next to it, `.png`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Soak the lanlinkd and lanlink binaries in DIR instead of building
    /// this tree's.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// `cargo xtask soak …`.
pub fn run(opts: &Options) -> Result<()> {
    setup::run_all()?;
    let bin_dir = match &opts.bin_dir {
        Some(dir) => dir.clone(),
        None => build::run(false)?.bin_dir,
    };
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| util::root().join("bench/results/soak.json"));
    run_soak(&bin_dir, opts.cycles, opts.seed, &out)
}

/// The 100 cycles `cargo xtask test` (CI) runs, with lanlink already built
/// into `bin_dir`: a seed from the clock (printed, so a failure replays
/// with `cargo xtask soak --cycles 100 --seed S`), results in
/// `target/soak/soak-ci.json`, never over the committed ones.
pub fn run_ci(bin_dir: &Path) -> Result<()> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1);
    println!("soak (CI): 100 cycles, seed {seed}");
    let out = util::root().join("target/soak/soak-ci.json");
    run_soak(bin_dir, 100, Some(seed), &out).with_context(|| {
        format!("the soak failed; replay: cargo xtask soak --cycles 100 --seed {seed}")
    })
}

/// Builds `lanlink-soak` (dev profile) and runs it.
fn run_soak(bin_dir: &Path, cycles: u32, seed: Option<u64>, out: &Path) -> Result<()> {
    let profile_dir = util::cargo_build(&["-p", "lanlink-soak"], false, &[])
        .context("building lanlink-soak failed")?;
    let mut soak = Command::new(profile_dir.join("lanlink-soak"));
    soak.arg("--cycles")
        .arg(cycles.to_string())
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out);
    if let Some(seed) = seed {
        soak.arg("--seed").arg(seed.to_string());
    }
    exec(&mut soak).context("the soak failed")
}
