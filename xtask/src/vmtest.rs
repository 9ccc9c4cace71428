//! `cargo xtask vmtest`: the smoke scenario (`tests/tests/smoke.rs`) inside
//! VMs booting the kernels users run, with this machine's userspace.
//!
//! - Installs what it needs: QEMU and kmod (Debian), virtme-ng (PyPI), and
//!   the kernels as Debian packages, unpacked (not installed) under
//!   `~/.cache/lanlink-vm/<release>/` with their `modules.dep`, and linked
//!   from `/lib/modules/<release>` where the guest's `modprobe` looks.
//! - The matrix: Debian 12's own 6.1 (no TCX: the agent attaches with
//!   clsact) and `bookworm-backports`' 6.12 (TCX); the host's kernel runs
//!   the whole suite already.
//! - Each guest runs the smoke test binary built here with `LANLINK_ATTACH=auto`
//!   (so each kernel gets its best backend), under software
//!   emulation (nested KVM hangs on this machine kind), bounded by
//!   [`GUEST_LIMIT`], and writes its output to a directory shared with the
//!   host. Prints the guest's `uname -r`, the test's output, and a closing
//!   `N passed, N failed` line; fails when a scenario fails. When no VM can
//!   start it says so loudly and counts the kernel as skipped, never passed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::util::{self, exec, stdout_of};
use crate::{build, setup};

/// One kernel of the matrix.
struct Kernel {
    /// What it stands for.
    name: &'static str,
    /// The Debian suite its `linux-image-amd64` comes from (named even for
    /// the release's own: with backports added, apt's candidate is theirs).
    suite: &'static str,
}

const MATRIX: [Kernel; 2] = [
    Kernel {
        name: "Debian 12 (6.1, clsact)",
        suite: "bookworm",
    },
    Kernel {
        name: "bookworm-backports (6.12, TCX)",
        suite: "bookworm-backports",
    },
];

/// How long one guest may run, boot included (about 50 s here).
const GUEST_LIMIT: Duration = Duration::from_secs(360);

/// The virtme-ng release known to boot Debian's kernels here.
const VIRTME_NG: &str = "virtme-ng==1.42";

/// What one guest ended with.
enum Outcome {
    /// The test binary ran: its counts.
    Ran { passed: u32, failed: u32 },
    /// No VM started (or it said nothing): why.
    Skipped(String),
}

/// `cargo xtask vmtest`.
pub fn run() -> Result<()> {
    setup::run_all()?;
    let built = build::run(false)?;
    run_built(&built.bin_dir)
}

/// The VM matrix with the binaries in `bin_dir` (already built).
pub fn run_built(bin_dir: &Path) -> Result<()> {
    setup::apt_install(&["qemu-system-x86", "kmod"])?;
    let vng = virtme_ng()?;
    let smoke = smoke_binary()?;
    // The lab's tools, which the guest cannot build (its root is read-only).
    util::cargo_build(&["-p", "lanlink-lab", "--bins"], false, &[])?;
    let (mut passed, mut failed, mut skipped) = (0, 0, Vec::new());
    for kernel in &MATRIX {
        let image = match kernel_image(kernel) {
            Ok(image) => image,
            Err(e) => {
                skipped.push(format!("{}: cannot get the kernel: {e:#}", kernel.name));
                continue;
            }
        };
        println!("== vmtest: {} ({})", kernel.name, image.display());
        match guest(&vng, &image, &smoke, bin_dir)? {
            Outcome::Ran {
                passed: p,
                failed: f,
            } => {
                println!("{}: {p} passed, {f} failed", kernel.name);
                passed += p;
                failed += f;
            }
            Outcome::Skipped(why) => skipped.push(format!("{}: {why}", kernel.name)),
        }
    }
    for s in &skipped {
        println!("!! vmtest SKIPPED (not passed): {s}");
    }
    println!(
        "vmtest: {passed} passed, {failed} failed, {} skipped",
        skipped.len()
    );
    if failed > 0 {
        bail!("vmtest: {failed} scenario(s) failed in a guest kernel");
    }
    Ok(())
}

/// `vng`, installed from PyPI if missing.
fn virtme_ng() -> Result<PathBuf> {
    let scripts = stdout_of(Command::new("python3").args([
        "-c",
        "import sysconfig; print(sysconfig.get_path('scripts'))",
    ]));
    let vng = PathBuf::from(scripts.trim()).join("vng");
    if !vng.is_file() {
        exec(Command::new("python3").args(["-m", "pip", "install", "-q", VIRTME_NG]))
            .context("pip install virtme-ng failed")?;
    }
    anyhow::ensure!(vng.is_file(), "virtme-ng installed no {}", vng.display());
    Ok(vng)
}

/// The smoke test's executable (built now if needed).
fn smoke_binary() -> Result<PathBuf> {
    let out = util::cargo()
        .current_dir(util::root())
        .args([
            "test",
            "-p",
            "lanlink-tests",
            "--test",
            "smoke",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    anyhow::ensure!(out.status.success(), "building the smoke test failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "smoke")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo named no smoke test executable")
}

/// Where kernels are unpacked: outside the checkout (CI clones anew) and
/// outside `/var/cache`, which the guest does not see.
fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/lanlink-vm")
}

/// `kernel`'s image, downloaded and unpacked with its modules if missing.
fn kernel_image(kernel: &Kernel) -> Result<PathBuf> {
    add_suite(kernel.suite)?;
    let meta = format!("linux-image-amd64/{}", kernel.suite);
    // `Depends: linux-image-<release> (= <version>)`.
    let show = stdout_of(Command::new("apt-cache").args(["show", &meta]));
    let package = show
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .and_then(|d| d.split([' ', ',']).find(|w| w.starts_with("linux-image-")))
        .with_context(|| format!("apt-cache show {meta} names no kernel package"))?
        .to_owned();
    let release = package.trim_start_matches("linux-image-").to_owned();
    let dir = cache_dir().join(&release);
    let image = dir.join("boot").join(format!("vmlinuz-{release}"));
    let modules = dir.join("lib/modules").join(&release);
    if !modules.join("modules.dep").is_file() {
        let download = cache_dir().join("download");
        std::fs::create_dir_all(&download)?;
        let target = format!("{package}/{}", kernel.suite);
        exec(
            Command::new("apt-get")
                .current_dir(&download)
                .args(["download", "-q", &target]),
        )?;
        let deb = std::fs::read_dir(&download)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
            })
            .with_context(|| format!("apt-get download left no {package} package"))?;
        exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
        std::fs::remove_file(&deb)?;
        exec(Command::new("depmod").arg("-b").arg(&dir).arg(&release))?;
    }
    // The guest's root is this machine's: its modprobe looks here.
    let link = Path::new("/lib/modules").join(&release);
    if std::fs::read_link(&link).ok().as_deref() != Some(modules.as_path()) {
        std::fs::create_dir_all("/lib/modules")?;
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&modules, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    anyhow::ensure!(image.is_file(), "no {}", image.display());
    Ok(image)
}

/// Adds Debian suite `suite` beside the release's own (same mirror and
/// key, read from the release's sources), unless apt has it.
fn add_suite(suite: &str) -> Result<()> {
    let file = PathBuf::from(format!("/etc/apt/sources.list.d/lanlink-{suite}.sources"));
    let sources = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .context("no /etc/apt/sources.list.d/debian.sources to take the mirror from")?;
    let listed = |text: &str| {
        text.lines().any(|l| {
            l.strip_prefix("Suites:")
                .is_some_and(|v| v.split_whitespace().any(|w| w == suite))
        })
    };
    if file.is_file() || listed(&sources) {
        return Ok(());
    }
    let release = suite.split('-').next().unwrap_or(suite);
    let stanza = sources
        .split("\n\n")
        .find(|s| {
            s.lines().any(|l| {
                l.strip_prefix("Suites:")
                    .is_some_and(|v| v.split_whitespace().any(|w| w == release))
            })
        })
        .with_context(|| format!("no stanza for {release} in debian.sources"))?;
    let mut out = String::new();
    for line in stanza.lines().filter(|l| !l.starts_with('#')) {
        if line.starts_with("Suites:") {
            out.push_str(&format!("Suites: {suite}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(&file, out).with_context(|| format!("cannot write {}", file.display()))?;
    setup::apt_update()
}

/// The directory a guest shares with the host, removed on drop. (Not a
/// lab directory: the lab in the guest would sweep it as a dead run's.)
struct SharedDir(PathBuf);

impl SharedDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("lanlink-vmtest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Boots `image` and runs the smoke binary in it.
fn guest(vng: &Path, image: &Path, smoke: &Path, bin_dir: &Path) -> Result<Outcome> {
    let shared = SharedDir::new()?;
    let script = shared.path().join("run.sh");
    // The guest sees the shared directory at /run/vmout (tmpfs there).
    let modules = "veth bridge br_netfilter sch_ingress cls_bpf nf_conntrack iptable_filter \
                   iptable_nat xt_conntrack";
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\n\
             exec >/run/vmout/result.txt 2>&1\n\
             echo \"guest kernel $(uname -r)\"\n\
             for m in {modules}; do modprobe $m || echo \"modprobe $m failed\"; done\n\
             mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf\n\
             cd {root}\n\
             LANLINK_ATTACH=auto LANLINK_BIN_DIR={bin} LANLINK_LAB_BIN_DIR={bin} LANLINK_LAB_AGENT_READY_S=120 \
             timeout {limit} {smoke} \
             --test-threads 1 --nocapture\n\
             echo \"exit $?\"\n",
            root = util::root().display(),
            bin = bin_dir.display(),
            limit = GUEST_LIMIT.as_secs() - 60,
            smoke = smoke.display(),
        ),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut cmd = Command::new("timeout");
    cmd.arg(GUEST_LIMIT.as_secs().to_string())
        .arg(vng)
        .args([
            "--disable-kvm",
            "--disable-microvm",
            "--memory",
            "2G",
            "--cpus",
            "2",
        ])
        .arg("--run")
        .arg(image)
        .arg("--rwdir")
        .arg(format!("/run/vmout={}", shared.path().display()))
        .args(["--exec", "/run/vmout/run.sh"])
        .stdin(std::process::Stdio::null());
    println!("$ {}", util::describe(&cmd));
    // vng's own exit status says nothing of the script's (the console
    // fallback loses it): the shared file does.
    let console = cmd.output().context("cannot run vng")?;
    let result = std::fs::read_to_string(shared.path().join("result.txt")).unwrap_or_default();
    if result.is_empty() {
        let tail: Vec<&str> = std::str::from_utf8(&console.stderr)
            .unwrap_or("")
            .lines()
            .rev()
            .take(15)
            .collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Ok(Outcome::Skipped(format!(
            "the VM ran nothing ({}); its last words:\n{}",
            console.status,
            tail.join("\n")
        )));
    }
    print!("{result}");
    let counts = result
        .lines()
        .find_map(|l| l.strip_prefix("test result: "))
        .and_then(|l| {
            let n = |word: &str| {
                l.split(';').find_map(|part| {
                    part.trim()
                        .strip_suffix(word)?
                        .trim()
                        .rsplit(' ')
                        .next()?
                        .parse()
                        .ok()
                })
            };
            Some((n("passed")?, n("failed")?))
        });
    Ok(match counts {
        Some((passed, failed)) => Outcome::Ran { passed, failed },
        // The binary ran but never finished (timeout, crash): a failure.
        None => Outcome::Ran {
            passed: 0,
            failed: 1,
        },
    })
}
