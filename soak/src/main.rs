//! `lanlink-soak`: runs the soak (see the library's documentation);
//! `cargo xtask soak` builds the binaries and calls this.

use anyhow::Result;
use clap::Parser as _;

fn main() -> Result<()> {
    // First, while the process has one thread: the mount namespace.
    lanlink_soak::private_mount_ns()?;
    // Before the lab installs its own handler: a signal must unmount the
    // agent's state tmpfs before the lab removes the agent's temp dir.
    ctrlc::set_handler(|| {
        lanlink_soak::lab::unmount_state();
        lanlink_lab::cleanup::cleanup_all();
        std::process::exit(130);
    })?;
    lanlink_soak::run(&lanlink_soak::Options::parse())
}
