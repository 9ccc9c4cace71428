//! `cargo xtask`: the project's developer tasks, one module per command.
//!
//! - `setup`: install what a bare Debian 12 machine needs (idempotent).
//! - `build-ebpf`: build the eBPF object (nightly, bpf-linker, BTF).
//! - `build`: the eBPF object, then the agent and the CNI plugin embedding it.
//! - `test`: setup, build, format check, then the whole workspace's tests.
//! - `demo`: setup, build, then a lab with three pods on a LAN.
//! - `bench`: setup, build, then lanlink against the physical limit and
//!   bridge + iptables, side by side (results in `bench/results/`).

mod bench;
mod build;
mod demo;
mod ebpf;
mod setup;
mod test;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// lanlink developer tasks.
#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks: Debian packages, nightly rust-src,
    /// bpf-linker (LLVM 22), the bpffs mount, br_netfilter. Idempotent.
    Setup,
    /// Build the eBPF object (target/ebpf/bpfel-unknown-none/release/lanlink).
    BuildEbpf,
    /// Build the eBPF object, then `lanlinkd` and the `lanlink` CNI plugin.
    Build {
        /// Build the agent and plugin with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Setup, build, `cargo fmt --check`, then `cargo test --workspace`.
    Test {
        /// Arguments passed on to `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Setup, build, then run the demo lab: a LAN, a node, three pods.
    Demo,
    /// Setup, build (release), then benchmark lanlink against the physical
    /// limit and bridge + iptables; results in bench/results/.
    Bench {
        /// One repetition, short runs, few pods (results in
        /// target/bench-quick/); fails unless every variant produced numbers.
        #[arg(long)]
        quick: bool,
        /// Build lanlinkd and the CNI plugin with the dev profile.
        #[arg(long)]
        dev: bool,
        /// Directory for results.md, results.json and the PNG charts.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Measure nothing: render results.md and the charts again from the
        /// directory's results.json.
        #[arg(long)]
        render: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::run(),
        Cmd::BuildEbpf => ebpf::run().map(|_| ()),
        Cmd::Build { release } => build::run(release).map(|_| ()),
        Cmd::Test { args } => test::run(&args),
        Cmd::Demo => demo::run(),
        Cmd::Bench {
            quick,
            dev,
            out,
            render,
        } => bench::run(&bench::Options {
            quick,
            dev,
            out,
            render,
        }),
    }
}
