//! `cargo xtask`: the project's developer tasks, one module per command.
//!
//! - `setup`: install what a bare Debian 12 machine needs (idempotent).
//! - `build-ebpf`: build the eBPF object (nightly, bpf-linker, BTF).
//! - `build`: the eBPF object, then the agent and the CNI plugin embedding it.
//! - `test`: setup, build, format check, then the whole workspace's tests.
//! - `vmtest`: the smoke scenario in VMs booting older kernels.
//! - `demo`: setup, build, then a lab with three pods on a LAN.
//! - `bench`: setup, build, then run the `lanlink-bench` crate (`bench/`):
//!   lanlink against the physical limit and bridge + iptables, side by
//!   side, and DEL/scrape with 65k flows (results in `bench/results/`).
//! - `image`: build (release), then the DaemonSet's image from a Debian base
//!   made here (no registry pull), saved as `target/image/lanlink.oci.tar`.
//! - `fuzz`: the cargo-fuzz targets of `fuzz/` for a bounded time each
//!   (installs cargo-fuzz on first use); totals in `bench/results/fuzz.json`.
//! - `soak`: ADD/DEL cycles through the real plugin and agent under injected
//!   faults, then the leak invariants; results in `bench/results/soak.json`.

mod bench;
mod build;
mod demo;
mod ebpf;
mod fuzz;
mod image;
mod setup;
mod soak;
mod test;
mod util;
mod vmtest;

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
    /// Setup, build, then the smoke scenario in VMs booting Debian's 6.1
    /// (clsact) and backports' 6.12 (TCX) kernels (QEMU, virtme-ng).
    Vmtest,
    /// Setup, build, then run the demo lab: a LAN, a node, three pods.
    Demo,
    /// Setup, build (release), then run the benchmark (`bench/`, crate
    /// lanlink-bench): lanlink against the physical limit and bridge +
    /// iptables, and DEL/scrape with 65k flows; results in bench/results/.
    Bench(bench::Options),
    /// Build (release), then the image of deploy/Containerfile on a bookworm
    /// base made with mmdebstrap (cached; no registry pull), podman; saves
    /// target/image/lanlink.oci.tar, prints the size, smoke-checks it.
    Image(image::Options),
    /// Run the cargo-fuzz targets of fuzz/ (pinned nightly, libFuzzer) for
    /// `--time` seconds each; totals in bench/results/fuzz.json.
    Fuzz(fuzz::Options),
    /// Setup, build, then `--cycles` (100) concurrent pod ADD/DEL cycles
    /// under seeded fault injection (`soak/`, crate lanlink-soak): nothing
    /// may leak; results in bench/results/soak.json and soak.png.
    Soak(soak::Options),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::run(),
        Cmd::BuildEbpf => ebpf::run().map(|_| ()),
        Cmd::Build { release } => build::run(release).map(|_| ()),
        Cmd::Test { args } => test::run(&args),
        Cmd::Vmtest => vmtest::run(),
        Cmd::Demo => demo::run(),
        Cmd::Bench(opts) => bench::run(&opts),
        Cmd::Image(opts) => image::run(&opts),
        Cmd::Fuzz(opts) => fuzz::run(&opts),
        Cmd::Soak(opts) => soak::run(&opts),
    }
}
