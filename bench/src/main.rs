//! `lanlink-bench`: runs the benchmark (see the library's documentation);
//! `cargo xtask bench` builds the binaries and calls this.

use anyhow::Result;
use clap::Parser as _;

fn main() -> Result<()> {
    lanlink_bench::run(&lanlink_bench::Options::parse())
}
