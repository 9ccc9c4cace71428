//! `cargo xtask bench`: builds lanlink (unless `--bin-dir` names other
//! binaries), then the `lanlink-bench` crate (`bench/`) and the lab's
//! traffic tools with the same profile, and runs `lanlink-bench` with them.
//! What is measured and how is that crate's business.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::{self, exec};
use crate::{build, setup};

/// `cargo xtask bench` flags (those of `lanlink-bench`, plus `--dev`).
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// One repetition, short runs, few pods (results in
    /// target/bench-quick/); fails unless every variant produced numbers.
    #[arg(long)]
    pub quick: bool,
    /// Build lanlinkd, the CNI plugin and the benchmark with the dev profile.
    #[arg(long)]
    pub dev: bool,
    /// Directory for results.md, results.json and the PNG charts.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Measure nothing: render results.md and the charts again from the
    /// directory's results.json.
    #[arg(long)]
    pub render: bool,
    /// Run only these phases: datapath, cni, attach, scale, flows65k, ipv6
    /// (repeat the flag or separate with commas; results in
    /// target/bench-only/).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Measure the lanlinkd and lanlink binaries in DIR (e.g. an older
    /// checkout's target/release) instead of building this tree's.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// `cargo xtask bench …`.
pub fn run(opts: &Options) -> Result<()> {
    let release = !opts.dev;
    let mut args: Vec<OsString> = Vec::new();
    if opts.quick {
        args.push("--quick".into());
    }
    if let Some(out) = &opts.out {
        args.extend(["--out".into(), out.into()]);
    }
    for phase in &opts.only {
        args.extend(["--only".into(), phase.into()]);
    }
    if opts.render {
        args.push("--render".into());
        return run_bench(release, None, &args);
    }
    setup::run_all()?;
    let bin_dir = match &opts.bin_dir {
        Some(dir) => dir.clone(),
        None => build::run(release)?.bin_dir,
    };
    run_bench(release, Some(&bin_dir), &args)
}

/// `cargo xtask bench --quick` with lanlink already built into `bin_dir`
/// with the dev profile (`cargo xtask test` ends with this).
pub fn run_quick(bin_dir: &Path) -> Result<()> {
    run_bench(false, Some(bin_dir), &["--quick".into()])
}

/// Builds `lanlink-bench` and the lab's tools (`lab-rr`, `lab-udpflood`),
/// then runs `lanlink-bench <args> [--bin-dir DIR --profile P]`.
fn run_bench(release: bool, bin_dir: Option<&Path>, args: &[OsString]) -> Result<()> {
    let profile_dir = util::cargo_build(
        &["-p", "lanlink-bench", "-p", "lanlink-lab", "--bins"],
        release,
        &[],
    )
    .context("building lanlink-bench and the lab's tools failed")?;
    let mut bench = Command::new(profile_dir.join("lanlink-bench"));
    bench.args(args);
    if let Some(dir) = bin_dir {
        bench
            .arg("--bin-dir")
            .arg(dir)
            .args(["--profile", if release { "release" } else { "dev" }]);
    }
    exec(&mut bench).context("the benchmark failed")
}
