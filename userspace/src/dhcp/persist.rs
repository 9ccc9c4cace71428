//! Crash-safe JSON files for the agent's state (leases survive restarts).
//!
//! [`save_atomic`] writes a temporary file next to the target, fsyncs it,
//! renames it over the target and fsyncs the directory, so after a crash or
//! power loss the target holds either the old or the new content, never a
//! mix ([`replace_file`], which the agent's state writer uses too). These
//! functions block: call them from `spawn_blocking` in async code.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::DhcpError;

/// Suffix of temporary files; [`load`] never reads them, the agent may sweep
/// leftovers of a crash by this marker.
pub const TEMP_MARKER: &str = ".tmp-";

/// Atomically replaces `path` with `value` as pretty JSON (mode 0600).
pub fn save_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), DhcpError> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|source| DhcpError::PersistFormat {
        op: "encoding",
        path: path.to_owned(),
        source,
    })?;
    json.push(b'\n');
    let mut open = OpenOptions::new();
    open.write(true).create_new(true).mode(0o600);
    replace_file(path, &temp_path(path), &json, &open).map_err(|e| DhcpError::PersistIo {
        op: e.op,
        path: e.path,
        source: e.source,
    })
}

/// The step of [`replace_file`] that failed.
#[derive(Debug)]
pub(crate) struct IoStep {
    /// `"creating"`, `"writing"`, `"syncing"`, `"renaming into"` or
    /// `"syncing directory"`.
    pub op: &'static str,
    /// The file or directory it was done on.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

/// Replaces `path` with `bytes` so that after a crash or power loss it holds
/// either the old or the new content: writes `tmp` (a file in the same
/// directory, opened with `open`), fsyncs it, renames it over `path` and
/// fsyncs the directory. Removes `tmp` when a step fails.
pub(crate) fn replace_file(
    path: &Path,
    tmp: &Path,
    bytes: &[u8],
    open: &OpenOptions,
) -> Result<(), IoStep> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io = |op: &'static str, p: &Path| {
        let path = p.to_owned();
        move |source| IoStep { op, path, source }
    };
    let result = (|| {
        let mut f = open.open(tmp).map_err(io("creating", tmp))?;
        f.write_all(bytes).map_err(io("writing", tmp))?;
        f.sync_all().map_err(io("syncing", tmp))?;
        fs::rename(tmp, path).map_err(io("renaming into", path))?;
        // The rename is only durable once the directory entry is.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// Reads `path` as JSON; `Ok(None)` when it does not exist.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, DhcpError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DhcpError::PersistIo {
                op: "reading",
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| DhcpError::PersistFormat {
            op: "decoding",
            path: path.to_owned(),
            source,
        })
}

/// `<dir>/.<name>.tmp-<pid>-<n>`: hidden, unique per process and call, and
/// never equal to the target.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{TEMP_MARKER}{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::super::Lease;
    use super::*;
    use std::net::Ipv4Addr;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "lanlink-persist-test-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn sample() -> Lease {
        Lease {
            mac: [2, 1, 2, 3, 4, 5],
            client_id: vec![0xff, 0, 0, 0, 1, 0, 4, 7],
            hostname: Some("web-0".into()),
            address: Ipv4Addr::new(198, 18, 0, 150),
            prefix_len: 24,
            server_id: Ipv4Addr::new(198, 18, 0, 1),
            server_mac: [2, 9, 9, 9, 9, 9],
            router: Some(Ipv4Addr::new(198, 18, 0, 1)),
            classless_routes: vec![(Ipv4Addr::new(10, 0, 0, 0), 8, Ipv4Addr::new(198, 18, 0, 2))],
            dns: vec![Ipv4Addr::new(198, 18, 0, 53)],
            domain: Some("lan".into()),
            search: vec!["lan".into()],
            mtu: Some(1500),
            lease_secs: 120,
            t1_secs: 60,
            t2_secs: 105,
            obtained_at_unix: 1_700_000_000,
        }
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = TempDir::new();
        let path = dir.0.join("leases.json");
        assert_eq!(load::<Vec<Lease>>(&path).unwrap(), None);
        let leases = vec![sample(), sample()];
        save_atomic(&path, &leases).unwrap();
        assert_eq!(load::<Vec<Lease>>(&path).unwrap(), Some(leases));
        // Overwrite.
        save_atomic(&path, &vec![sample()]).unwrap();
        assert_eq!(load::<Vec<Lease>>(&path).unwrap().unwrap().len(), 1);
        // Nothing but the target is left in the directory.
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("leases.json")]);
    }

    #[test]
    fn a_failed_write_leaves_the_target_whole_and_no_temp_file() {
        let dir = TempDir::new();
        // The target is a non-empty directory: everything up to the rename
        // succeeds, the rename fails, as a crash before it would leave it.
        let path = dir.0.join("lease.json");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), b"x").unwrap();
        let err = save_atomic(&path, &sample()).unwrap_err();
        assert!(
            matches!(
                err,
                DhcpError::PersistIo {
                    op: "renaming into",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(fs::read(path.join("keep")).unwrap(), b"x");
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("lease.json")],
            "the temp file is removed"
        );
        // Temp files are per call and beside the target (rename in place).
        let tmp = temp_path(&path);
        assert_ne!(tmp, path);
        assert_eq!(tmp.parent(), path.parent());
        assert_ne!(
            temp_path(&path),
            tmp,
            "concurrent writers need distinct temp files"
        );
    }

    #[test]
    fn errors_name_the_file() {
        let dir = TempDir::new();
        let path = dir.0.join("bad.json");
        fs::write(&path, b"{ half").unwrap();
        let err = load::<Lease>(&path).unwrap_err();
        assert!(matches!(err, DhcpError::PersistFormat { .. }));
        assert!(err.to_string().contains("bad.json"), "{err}");
        let err = save_atomic(&dir.0.join("missing-dir").join("x.json"), &1u8).unwrap_err();
        assert!(
            matches!(err, DhcpError::PersistIo { op: "creating", .. }),
            "{err}"
        );
    }
}
