//! `cargo xtask test`: what CI runs (`.ci/run`). Setup, build (dev profile),
//! the format check, clippy (`-D warnings`) over the workspace and the eBPF
//! crate, then every test of the workspace with the built
//! binaries; extra arguments go to `cargo test`. Without extra arguments,
//! the attach scenarios run again with the TCX backend, the soak runs 100
//! cycles under injected faults, the VM smoke test boots older kernels
//! (`cargo xtask vmtest`), and `cargo xtask bench --quick` follows (every
//! benchmark variant must still produce numbers).

use anyhow::{Context, Result};

use crate::util::{self, exec};
use crate::{bench, build, ebpf, image, setup, soak, vmtest};

/// The scenario files run a second time with `--attach tcx` (through
/// `LANLINK_ATTACH`): those that attach, restart, switch and detach.
const TC_PASS: [&str; 7] = [
    "smoke",
    "restart",
    "dataplane",
    "cni_verbs",
    "chaining",
    "crash",
    "ipv6",
];

/// `cargo xtask test [-- <cargo test args>]`.
pub fn run(args: &[String]) -> Result<()> {
    setup::run_all()?;
    let built = build::run(false)?;
    let root = util::root();
    exec(
        util::cargo()
            .current_dir(&root)
            .args(["fmt", "--all", "--check"]),
    )
    .context("formatting differs: run `cargo fmt --all`")?;
    // Clippy, warnings denied: the workspace (with the object the build
    // embedded, so nothing is rebuilt differently), then the eBPF crate.
    exec(
        util::cargo()
            .current_dir(&root)
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .env("LANLINK_EBPF_OBJ", &built.ebpf_obj),
    )
    .context("clippy found warnings in the workspace")?;
    ebpf::clippy()?;
    // The DaemonSet's image: the `daemonset` scenario runs it and fails
    // (never skips) without it.
    image::run(&image::Options {
        rebuild_base: false,
        no_check: false,
    })
    .context("`cargo xtask image` failed")?;
    // Leftovers of an earlier run that crashed are not this run's leaks;
    // what is there now that the lab cannot tell by name (podman's and
    // CNI's namespaces, libcni's cache, runc state, the agent's default pin
    // dir) is the baseline the leak check compares with.
    lanlink_lab::sweep_leftovers();
    let leak_baseline = lanlink_lab::cleanup::LeakBaseline::take();
    let tests = exec(
        util::cargo()
            .current_dir(&root)
            // Every test binary runs even after a failure, so one run shows all.
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(args)
            // The same value as the build, so the agent is not rebuilt.
            .env("LANLINK_EBPF_OBJ", &built.ebpf_obj)
            .env("LANLINK_BIN_DIR", &built.bin_dir),
    )
    .context("tests failed");
    // The scenarios that attach, restart and detach, again with the TCX
    // backend (the default is clsact), on this kernel.
    let tc_pass = if args.is_empty() {
        exec(
            util::cargo()
                .current_dir(&root)
                .args(["test", "-p", "lanlink-tests", "--no-fail-fast"])
                .args(TC_PASS.iter().flat_map(|t| ["--test", t]))
                .env("LANLINK_ATTACH", "tcx")
                .env("LANLINK_EBPF_OBJ", &built.ebpf_obj)
                .env("LANLINK_BIN_DIR", &built.bin_dir),
        )
        .context("tests with LANLINK_ATTACH=tcx failed")
    } else {
        Ok(())
    };
    // 100 ADD/DEL cycles under injected faults, then the soak's own leak
    // invariants (`cargo xtask soak`; the README quotes a 1,000-cycle run).
    let soak = if args.is_empty() {
        soak::run_ci(&built.bin_dir).context("the soak (100 cycles) failed")
    } else {
        Ok(())
    };
    // Every test process has exited: whatever of theirs remains leaked.
    let leaks = lanlink_lab::cleanup::leaks_since(&leak_baseline);
    if !leaks.is_empty() {
        lanlink_lab::sweep_leftovers();
        anyhow::bail!(
            "the tests left behind (what is a dead run's now swept): {}",
            leaks.join(", ")
        );
    }
    println!(
        "leak check: no namespace, pin dir, temp dir, cgroup, CNI result, runc state \
         or process of the tests remains"
    );
    tests?;
    tc_pass?;
    soak?;
    if args.is_empty() {
        vmtest::run_built(&built.bin_dir).context("`cargo xtask vmtest` failed")?;
    }
    // The whole suite (CI) also checks that the benchmark still runs; a
    // filtered run (`-- <name>`) is someone iterating on one test.
    if args.is_empty() {
        bench::run_quick(&built.bin_dir).context("`cargo xtask bench --quick` failed")?;
    }
    Ok(())
}
