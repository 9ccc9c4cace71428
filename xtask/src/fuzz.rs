//! `cargo xtask fuzz [--time S] [--target T]`: runs the cargo-fuzz targets
//! of `fuzz/` (libFuzzer, on the eBPF crate's pinned nightly) one after the
//! other, each for `S` seconds, on its committed corpus `fuzz/corpus/<T>/`
//! (new finds are added there; crashes land in `fuzz/artifacts/<T>/`).
//!
//! Prints the executions of each target (libFuzzer's final
//! `stat::number_of_executed_units`) and adds them to
//! `bench/results/fuzz.json`, which keeps, per target, the total seconds,
//! executions and crashes of every recorded run and the last run. Fails if
//! a target crashed, hung or ran out of memory. `--ci` ([`run_ci`]) runs
//! every target for 20 s and records nothing.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::util::{self, exec};

/// Every target of `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 4] = ["netconf", "dhcp_reply", "api_request", "state_file"];

/// Seconds per target of [`run_ci`].
const CI_SECONDS: u64 = 20;

/// The slowest single input libFuzzer accepts before it reports a hang.
const INPUT_TIMEOUT_SECS: u64 = 10;

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Seconds each target runs (libFuzzer's `-max_total_time`).
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Run only this target (netconf, dhcp_reply, api_request, state_file).
    #[arg(long)]
    target: Option<String>,
    /// What CI runs ([`run_ci`]): every target briefly, nothing recorded.
    #[arg(long, conflicts_with_all = ["time", "target"])]
    ci: bool,
}

/// What one run of one target did.
#[derive(Debug)]
struct Outcome {
    target: String,
    seconds: u64,
    executions: u64,
    /// Crash, timeout, OOM or leak artifacts the run wrote.
    crashes: Vec<PathBuf>,
}

/// `cargo xtask fuzz`.
pub fn run(opts: &Options) -> Result<()> {
    if opts.ci {
        return run_ci();
    }
    let targets: Vec<&str> = match &opts.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!(
            "unknown fuzz target {t:?}; the targets are {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    let outcomes = fuzz(&targets, opts.time, true)?;
    record(&outcomes)?;
    verdict(&outcomes)
}

/// Every target for [`CI_SECONDS`] seconds; fails on a crash. Records
/// nothing in `bench/results/` and leaves the committed corpus as it is.
pub fn run_ci() -> Result<()> {
    let outcomes = fuzz(&TARGETS, CI_SECONDS, false)?;
    verdict(&outcomes)
}

fn fuzz_dir() -> PathBuf {
    util::root().join("fuzz")
}

/// `cargo +<pinned nightly> fuzz <args>` in `fuzz/`.
fn cargo_fuzz(args: &[&str]) -> Result<Command> {
    let toolchain = crate::ebpf::pinned_toolchain()?;
    let mut cmd = Command::new("cargo");
    // The outer `cargo run` pins stable and may set flags or a target dir.
    util::clean_cargo_env(&mut cmd);
    cmd.current_dir(fuzz_dir())
        .arg(format!("+{toolchain}"))
        .arg("fuzz")
        .args(args);
    Ok(cmd)
}

/// Builds, then runs each target for `seconds`; new finds go into the
/// committed corpus when `grow`, else into a scratch directory.
fn fuzz(targets: &[&str], seconds: u64, grow: bool) -> Result<Vec<Outcome>> {
    crate::setup::run_all()?;
    crate::setup::cargo_fuzz()?;
    exec(&mut cargo_fuzz(&["build"])?)
        .context("building the fuzz targets failed (the pinned nightly? `cargo xtask setup`)")?;
    targets.iter().map(|t| fuzz_one(t, seconds, grow)).collect()
}

/// Artifacts (crash-*, timeout-*, oom-*, leak-*) in `dir`.
fn artifacts(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                ["crash-", "timeout-", "oom-", "leak-"]
                    .iter()
                    .any(|k| n.starts_with(k))
            })
        })
        .collect();
    found.sort();
    found
}

/// Runs one target for `seconds`, echoing libFuzzer's status lines.
fn fuzz_one(target: &str, seconds: u64, grow: bool) -> Result<Outcome> {
    let corpus = fuzz_dir().join("corpus").join(target);
    // libFuzzer adds its finds to the first corpus directory it is given.
    let scratch = fuzz_dir()
        .join("target")
        .join("scratch-corpus")
        .join(target);
    if !grow {
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("cannot create {}", scratch.display()))?;
    }
    let artifact_dir = fuzz_dir().join("artifacts").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    std::fs::create_dir_all(&artifact_dir)
        .with_context(|| format!("cannot create {}", artifact_dir.display()))?;
    let before = artifacts(&artifact_dir);
    let corpus_arg = corpus.to_string_lossy().into_owned();
    let scratch_arg = scratch.to_string_lossy().into_owned();
    let max_time = format!("-max_total_time={seconds}");
    let input_timeout = format!("-timeout={INPUT_TIMEOUT_SECS}");
    let mut args = vec!["run", target];
    if !grow {
        args.push(&scratch_arg);
    }
    args.extend([
        corpus_arg.as_str(),
        "--",
        &max_time,
        &input_timeout,
        "-print_final_stats=1",
    ]);
    let mut cmd = cargo_fuzz(&args)?;
    println!("$ {}", util::describe(&cmd));
    // Its own process group: the watchdog kills cargo and the fuzzer it runs.
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start cargo fuzz run {target}"))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    // libFuzzer stops itself after -max_total_time; this bounds a run whose
    // stop never comes (a hang inside the harness outside any input).
    let deadline = Instant::now() + Duration::from_secs(seconds + 300);
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            // Ends with the process: its /proc entry goes once it is reaped.
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return false;
            }
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
        true
    });
    let started = Instant::now();
    let mut executions = None;
    let mut seconds_run = None;
    // The lines after "panicked at": the panic message.
    let mut panic_lines = 0;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading libFuzzer's output")?;
        if line.contains("panicked at") {
            panic_lines = 3;
        } else if panic_lines > 0 {
            panic_lines -= 1;
            eprintln!("[{target}] {line}");
        }
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            executions = n.trim().parse().ok();
        }
        // "Done 123456 runs in 60 second(s)"
        if let Some(rest) = line.strip_prefix("Done ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [runs, "runs", "in", secs, ..] = words.as_slice() {
                executions = executions.or(runs.parse().ok());
                seconds_run = secs.parse().ok();
            }
        }
        // The periodic status lines and the last words of a failure.
        if line.contains(" pulse ")
            || line.contains(" DONE ")
            || line.starts_with("Done ")
            || line.starts_with("stat::")
            || line.contains("ERROR")
            || line.contains("panicked")
            || line.contains("artifact_prefix")
            || line.contains("Test unit written")
            || line.starts_with("Base64")
        {
            eprintln!("[{target}] {line}");
        }
    }
    let status = child.wait().context("waiting for cargo fuzz run")?;
    let killed = watchdog.join().unwrap_or(false);
    let crashes: Vec<PathBuf> = artifacts(&artifact_dir)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if killed {
        bail!("fuzz target {target} did not stop after {seconds} s + 300 s: killed");
    }
    if !status.success() && crashes.is_empty() {
        bail!("cargo fuzz run {target} failed ({status}) without an artifact");
    }
    let outcome = Outcome {
        target: target.to_owned(),
        // A run that stopped at a crash has no "Done" line.
        seconds: seconds_run.unwrap_or_else(|| started.elapsed().as_secs()),
        executions: executions.unwrap_or(0),
        crashes,
    };
    println!(
        "fuzz {target}: {} executions in {} s, {} crash(es)",
        outcome.executions,
        outcome.seconds,
        outcome.crashes.len()
    );
    Ok(outcome)
}

/// Adds the runs to `bench/results/fuzz.json`.
fn record(outcomes: &[Outcome]) -> Result<()> {
    let path = util::root().join("bench").join("results").join("fuzz.json");
    let mut doc: Value = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not JSON", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    doc["description"] = json!(
        "cargo xtask fuzz: per target, the totals of every recorded run \
         (seconds, libFuzzer executions, crashes) and the last run"
    );
    for o in outcomes {
        let entry = &mut doc["targets"][&o.target];
        let add = |v: &Value, n: u64| v.as_u64().unwrap_or(0) + n;
        let total = json!({
            "seconds": add(&entry["total"]["seconds"], o.seconds),
            "executions": add(&entry["total"]["executions"], o.executions),
            "crashes": add(&entry["total"]["crashes"], o.crashes.len() as u64),
            "runs": add(&entry["total"]["runs"], 1),
        });
        entry["total"] = total;
        entry["last"] = json!({
            "seconds": o.seconds,
            "executions": o.executions,
            "crashes": o.crashes.len(),
            "at_unix": now,
        });
    }
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("recorded in {}", path.display());
    Ok(())
}

/// Fails when any run left an artifact.
fn verdict(outcomes: &[Outcome]) -> Result<()> {
    let crashed: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.crashes
                .iter()
                .map(move |c| format!("{}: {}", o.target, c.display()))
        })
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzzing found {} crash(es); reproduce with `cargo +<nightly> fuzz run <target> <file>` in fuzz/:\n{}",
            crashed.len(),
            crashed.join("\n")
        );
    }
    Ok(())
}
