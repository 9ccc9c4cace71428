//! `cargo xtask image`: the DaemonSet's image (deploy/Containerfile), built
//! on this machine without pulling from any registry.
//!
//! 1. installs mmdebstrap, podman and runc (Debian packages) when missing;
//! 2. builds the agent and the plugin (release), as `cargo xtask build`;
//! 3. makes the base: a Debian bookworm root file system with `mmdebstrap`
//!    (variant `essential` plus iptables), cached as a tarball under
//!    `~/.cache/lanlink-image/` and keyed by a hash of everything that shapes
//!    it, so it is rebuilt only when that list changes; the tarball is
//!    `podman import`ed as `localhost/lanlink-base:<hash>`;
//! 4. `podman build --pull=never --build-arg BASE=<that base>` of
//!    deploy/Containerfile, in a context holding only the files it COPYs
//!    (the workspace's `target/` is many gigabytes), with the binaries'
//!    debug info stripped (the release profile keeps line tables: 77 MB of
//!    the agent's 90; symbols stay, so backtraces still name functions);
//! 5. saves `localhost/lanlink:<version>` as an OCI archive,
//!    `target/image/lanlink.oci.tar`, prints its size;
//! 6. a smoke check: the binaries and both iptables backends run in it.
//!
//! podman uses the default storage; only images named `localhost/lanlink*`
//! are created or replaced, nothing else is removed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::{self, exec, stdout_of, succeeds};
use crate::{build, setup};

/// What `cargo xtask image` accepts.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Rebuild the base tarball even when a cached one matches.
    #[arg(long)]
    pub rebuild_base: bool,
    /// Skip the smoke check (`lanlinkd --version`, `iptables-legacy
    /// --version`, … in the image).
    #[arg(long)]
    pub no_check: bool,
}

/// Debian packages this command runs (binutils: `strip`).
const TOOLS: &[&str] = &["mmdebstrap", "podman", "runc", "binutils"];

/// The base's Debian release: the glibc the host-built binaries link against.
const SUITE: &str = "bookworm";

/// `essential`: only Debian's Essential: yes packages (a shell, coreutils,
/// dpkg; no apt) plus [`BASE_PACKAGES`] and their dependencies.
const VARIANT: &str = "essential";

/// What the agent and the manifest need beyond the essential set: both
/// iptables backends (the agent's `--iptables` picks one). The manifest's
/// commands (install-cni.sh, the preStop hook) need only `sh` and coreutils,
/// which are essential; the agent talks netlink itself, so no iproute2.
const BASE_PACKAGES: &[&str] = &["iptables"];

/// Where the base's packages come from: the release with its point-release
/// and security updates. Given explicitly: without a mirror argument
/// mmdebstrap reads sources from stdin when stdin is not a terminal.
const MIRRORS: &[&str] = &[
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];

/// dpkg options for the base: no manuals, translations or docs (copyright
/// files kept, for the licenses).
const DPKG_OPTS: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
];

/// Merged /usr through the `usr-is-merged` package instead of `usrmerge`,
/// which depends on perl (about 50 MB of the first base built here).
const HOOK_DIR: &str = "/usr/share/mmdebstrap/hooks/merged-usr";

/// The image's repository (podman prefixes unqualified local names with
/// `localhost/`; naming it so keeps podman from looking elsewhere).
const IMAGE: &str = "localhost/lanlink";

/// The base image's PATH, as in Debian's published images.
const BASE_PATH: &str = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The base image's repository; its tag is the base's hash.
const BASE_IMAGE: &str = "localhost/lanlink-base";

/// `cargo xtask image`.
pub fn run(opts: &Options) -> Result<()> {
    let started = Instant::now();
    setup::apt_install(TOOLS)?;
    let built = build::build(true)?;

    let out_dir = util::root().join("target/image");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let conf = lanlink_lab::podman::write_plain_containers_conf(&out_dir)?;
    let podman = || {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", &conf);
        cmd
    };

    let t = Instant::now();
    let key = base_key();
    let tarball = base_tarball(&key, opts.rebuild_base)?;
    let base = format!("{BASE_IMAGE}:{key}");
    if opts.rebuild_base || !succeeds(podman().args(["image", "exists", &base])) {
        let old = image_id(&podman, &base);
        // A tarball has no image config: give it the PATH Debian's images
        // set (the DaemonSet's commands and install-cni rely on it).
        exec(
            podman()
                .arg("import")
                .args(["--change", BASE_PATH])
                .arg(&tarball)
                .arg(&base),
        )
        .context("cannot import the base tarball")?;
        drop_replaced(&podman, old, &base);
    } else {
        println!("base image {base}: present");
    }
    let base_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let context = stage_context(&out_dir, &built.bin_dir)?;
    let image = format!("{IMAGE}:{}", env!("CARGO_PKG_VERSION"));
    let revision = git_revision();
    let old = image_id(&podman, &image);
    exec(
        podman()
            .args(["build", "--pull=never", "--network=none"])
            .arg("--file")
            .arg(util::root().join("deploy/Containerfile"))
            .args(["--build-arg", &format!("BASE={base}")])
            .args(["--build-arg", "PROFILE=release"])
            .args([
                "--label",
                &format!("org.opencontainers.image.revision={revision}"),
            ])
            .args([
                "--label",
                &format!(
                    "org.opencontainers.image.version={}",
                    env!("CARGO_PKG_VERSION")
                ),
            ])
            .args(["--tag", &image])
            .arg(&context),
    )
    .context("podman build failed")?;
    drop_replaced(&podman, old, &image);
    let archive = out_dir.join("lanlink.oci.tar");
    remove_if_present(&archive)?;
    exec(
        podman()
            .args(["save", "--format", "oci-archive", "--output"])
            .arg(&archive)
            .arg(&image),
    )
    .context("podman save failed")?;
    let image_secs = t.elapsed().as_secs_f64();

    if !opts.no_check {
        check(&podman, &image)?;
    }

    let size = stdout_of(podman().args(["image", "inspect", "--format", "{{.Size}}", &image]));
    let size: u64 = size
        .trim()
        .parse()
        .with_context(|| format!("`podman image inspect` of {image} printed {size:?}"))?;
    let archive_size = std::fs::metadata(&archive)
        .with_context(|| format!("cannot stat {}", archive.display()))?
        .len();
    println!();
    println!("image:    {image} (revision {revision}, base {base})");
    println!("size:     {} ({size} bytes)", mib(size));
    println!("archive:  {} ({})", archive.display(), mib(archive_size));
    println!(
        "times:    base {base_secs:.1}s, image {image_secs:.1}s, all {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "load it:  podman load -i {0}  |  ctr -n k8s.io images import {0}",
        archive.display()
    );
    Ok(())
}

/// A hash of everything that shapes the base tarball and its import: the
/// tarball's name in the cache and the base image's tag.
fn base_key() -> String {
    let mut text = format!("{SUITE}\n{VARIANT}\n{HOOK_DIR}\n{BASE_PATH}\n");
    for part in [BASE_PACKAGES, MIRRORS, DPKG_OPTS] {
        text.push_str(&part.join("\n"));
        text.push_str("\n--\n");
    }
    format!("{:016x}", fnv1a(text.as_bytes()))
}

/// FNV-1a, 64 bits: stable across Rust releases, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Where base tarballs are cached (`$XDG_CACHE_HOME` or `~/.cache`).
fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| util::root().join("target"));
    base.join("lanlink-image")
}

/// The cached base tarball for `key`, made with mmdebstrap when missing (or
/// when `rebuild`).
fn base_tarball(key: &str, rebuild: bool) -> Result<PathBuf> {
    let dir = cache_dir();
    let tarball = dir.join(format!("base-{key}.tar"));
    if tarball.is_file() && !rebuild {
        println!("base tarball {}: cached", tarball.display());
        return Ok(tarball);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // mmdebstrap picks the output format from the extension: keep `.tar`.
    let partial = dir.join(format!("base-{key}.partial.tar"));
    remove_if_present(&partial)?;
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(format!("--variant={VARIANT}"))
        .arg(format!("--include={}", BASE_PACKAGES.join(",")))
        .arg(format!("--hook-dir={HOOK_DIR}"));
    for opt in DPKG_OPTS {
        cmd.arg(format!("--dpkgopt={opt}"));
    }
    cmd.arg(SUITE).arg(&partial).args(MIRRORS);
    exec(&mut cmd).context("mmdebstrap failed to make the base")?;
    std::fs::rename(&partial, &tarball)
        .with_context(|| format!("cannot rename {} into place", partial.display()))?;
    Ok(tarball)
}

/// A build context holding only what deploy/Containerfile COPYs, at the
/// paths it names (`target/release/…`, `deploy/install-cni.sh`); the
/// binaries without their debug info.
fn stage_context(out_dir: &Path, bin_dir: &Path) -> Result<PathBuf> {
    let context = out_dir.join("context");
    if context.exists() {
        std::fs::remove_dir_all(&context)
            .with_context(|| format!("cannot remove {}", context.display()))?;
    }
    let files = [
        (
            bin_dir.join(lanlink_lab::AGENT_BIN),
            format!("target/release/{}", lanlink_lab::AGENT_BIN),
            true,
        ),
        (
            bin_dir.join(lanlink_lab::CNI_BIN),
            format!("target/release/{}", lanlink_lab::CNI_BIN),
            true,
        ),
        (
            util::root().join("deploy/install-cni.sh"),
            "deploy/install-cni.sh".to_owned(),
            false,
        ),
    ];
    for (from, to, strip) in files {
        let to = context.join(to);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        if strip {
            exec(Command::new("strip").arg("--strip-debug").arg(&to))?;
        }
    }
    Ok(context)
}

/// Runs each command in `image` (no network) and fails unless all exit 0.
fn check(podman: &dyn Fn() -> Command, image: &str) -> Result<()> {
    const CHECKS: &[&[&str]] = &[
        &["/usr/local/bin/lanlinkd", "--version"],
        &["/usr/local/bin/lanlink", "--version"],
        &["iptables", "--version"],
        &["iptables-nft", "--version"],
        &["iptables-legacy", "--version"],
        // The init container's script, with the shell and coreutils it
        // uses (the preStop hook is sh too), into directories of its own.
        &[
            "/bin/sh",
            "-c",
            "echo '{}' > /tmp/10-lanlink.conflist \\
             && LANLINK_CONFLIST=/tmp/10-lanlink.conflist CNI_BIN_DIR=/tmp/bin \\
             CNI_CONF_DIR=/tmp/net.d install-cni",
        ],
    ];
    for argv in CHECKS {
        let out = podman()
            .args(["run", "--rm", "--network", "none", "--entrypoint", argv[0]])
            .arg(image)
            .args(&argv[1..])
            .output()
            .context("cannot run podman")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let first = text.lines().next().unwrap_or("").trim();
        if !out.status.success() {
            bail!(
                "smoke check `{}` in {image} failed ({}): {}",
                argv.join(" "),
                out.status,
                text.trim()
            );
        }
        let name = if argv[0] == "/bin/sh" {
            "install-cni"
        } else {
            argv[0]
        };
        println!("check     {name}: {first}");
    }
    Ok(())
}

/// The ID of the local image `name`, if there is one.
fn image_id(podman: &dyn Fn() -> Command, name: &str) -> Option<String> {
    let id = stdout_of(podman().args(["image", "inspect", "--format", "{{.Id}}", name]));
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// Removes the image `name` pointed to before a rebuild (`old`), now
/// untagged, so rebuilds do not pile up; an image still in use by a
/// container (or by another tag) stays, quietly.
fn drop_replaced(podman: &dyn Fn() -> Command, old: Option<String>, name: &str) {
    let Some(old) = old else { return };
    if image_id(podman, name).as_deref() != Some(old.as_str())
        && succeeds(podman().args(["rmi", &old]))
    {
        println!(
            "removed the replaced {name} ({})",
            &old[..12.min(old.len())]
        );
    }
}

/// `git rev-parse --short HEAD`, with `-dirty` when the tree has changes.
fn git_revision() -> String {
    let root = util::root();
    let rev =
        stdout_of(
            Command::new("git")
                .current_dir(&root)
                .args(["rev-parse", "--short", "HEAD"]),
        );
    let rev = rev.trim();
    if rev.is_empty() {
        return "unknown".to_owned();
    }
    let dirty = !stdout_of(Command::new("git").current_dir(&root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .trim()
    .is_empty();
    if dirty {
        format!("{rev}-dirty")
    } else {
        rev.to_owned()
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// `bytes` in MiB, one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
