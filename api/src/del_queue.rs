//! The deletion queue: DELs the CNI plugin could not hand to the agent
//! because nothing listened on its socket (the agent stopped, crashed or is
//! being rolled). The plugin records each one here and succeeds, so kubelet
//! never waits on a stopped agent; the agent runs every queued DEL at start,
//! before it serves requests (as Cilium's deletion queue does).
//!
//! Layout of the directory (the agent's, `--del-queue-dir`, default
//! `<state-dir>/del-queue`; the netconf's `delQueueDir` must name the same):
//!
//! - one entry per attachment, `<container id>@<ifname>.json`, each part
//!   percent-encoded ([`entry_file_name`]), holding the DEL's
//!   [`AttachmentRequest`] as JSON; a repeated DEL overwrites its entry;
//! - `.lock`, the advisory lock (`flock`) every writer and reader holds, so
//!   the agent never reads an entry while a plugin writes it;
//! - `.<entry>.tmp` while an entry is written (temp file, fsync, rename,
//!   fsync of the directory), so an entry is whole or absent;
//! - `<entry>.bad`: an entry the agent could not decode, set aside.
//!
//! Both sides use this module, so the format lives in one place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::types::AttachmentRequest;

/// The plugin's default queue directory: the agent's default state
/// directory (`/var/lib/lanlink`) joined with [`DIR_NAME`].
pub const DEFAULT_DIR: &str = "/var/lib/lanlink/del-queue";

/// The queue's name under the agent's state directory (the agent's default).
pub const DIR_NAME: &str = "del-queue";

/// The lock file in the queue directory.
pub const LOCK_FILE: &str = ".lock";

/// The suffix of an entry.
pub const ENTRY_SUFFIX: &str = ".json";

/// The suffix added to an entry the agent set aside.
pub const BAD_SUFFIX: &str = ".bad";

/// Entries larger than this are not read (a request is well under 4 KiB).
const MAX_ENTRY_BYTES: u64 = 64 * 1024;

/// The longest file name Linux file systems take.
const MAX_NAME: usize = 255;

/// Why the queue could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum DelQueueError {
    /// A file system operation failed.
    #[error("cannot {action} {}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The request does not encode.
    #[error("cannot encode the DEL request: {source}")]
    Encode {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The attachment's names make a file name longer than 255 bytes.
    #[error("attachment {container_id}/{ifname} makes a queue entry name over {MAX_NAME} bytes")]
    NameTooLong {
        /// `CNI_CONTAINERID`.
        container_id: String,
        /// `CNI_IFNAME`.
        ifname: String,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DelQueueError {
    let path = path.to_path_buf();
    move |source| DelQueueError::Io {
        action,
        path,
        source,
    }
}

/// Percent-encodes every byte outside `[A-Za-z0-9_.-]` (so `@`, `/` and `%`
/// too): the encoding is injective and the result a safe file name part.
fn encode_part(part: &str, out: &mut String) {
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The entry's file name for attachment `container_id`/`ifname`:
/// `<container id>@<ifname>.json`, each part percent-encoded.
pub fn entry_file_name(container_id: &str, ifname: &str) -> Result<String, DelQueueError> {
    let mut name = String::with_capacity(container_id.len() + ifname.len() + 8);
    encode_part(container_id, &mut name);
    name.push('@');
    encode_part(ifname, &mut name);
    name.push_str(ENTRY_SUFFIX);
    // The temp file adds a dot before and `.tmp` after; `.bad` fits with it.
    if name.len() + 5 > MAX_NAME {
        return Err(DelQueueError::NameTooLong {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        });
    }
    Ok(name)
}

/// An entry read back: its file and its DEL.
#[derive(Debug)]
pub struct Entry {
    /// The entry's file.
    pub path: PathBuf,
    /// The DEL to run.
    pub request: AttachmentRequest,
}

/// What [`DelQueue::read`] found.
#[derive(Debug, Default)]
pub struct Contents {
    /// The entries to run, in file name order.
    pub entries: Vec<Entry>,
    /// Entries that did not decode, already renamed `*.bad`: the new path
    /// and why.
    pub set_aside: Vec<(PathBuf, String)>,
}

/// The queue in one directory.
#[derive(Clone, Debug)]
pub struct DelQueue {
    dir: PathBuf,
}

/// The held advisory lock; released when dropped (the file closes).
struct Locked(#[expect(dead_code, reason = "held for its lock, released on drop")] File);

impl DelQueue {
    /// The queue in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DelQueue { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the directory's lock (blocking), creating the lock file.
    fn lock(&self) -> Result<Locked, DelQueueError> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error("open the lock", &path))?;
        file.lock().map_err(io_error("lock", &path))?;
        Ok(Locked(file))
    }

    fn sync_dir(&self) -> Result<(), DelQueueError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("fsync", &self.dir))
    }

    /// Creates the directory (0700) if missing, inside its parent, which
    /// must exist (the agent's state directory).
    pub fn create(&self) -> Result<(), DelQueueError> {
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(DelQueueError::Io {
                action: "create",
                path: self.dir.clone(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Records `req` durably (the plugin's side): creates the directory
    /// (0700) if missing, then writes the entry atomically under the lock.
    /// Returns the entry's path.
    ///
    /// The directory is created only inside an existing parent (the agent's
    /// state directory): where no agent was ever set up, no agent would run
    /// the queue, and the DEL must not be acknowledged.
    pub fn push(&self, req: &AttachmentRequest) -> Result<PathBuf, DelQueueError> {
        let name = entry_file_name(&req.container_id, &req.ifname)?;
        let body =
            serde_json::to_vec_pretty(req).map_err(|source| DelQueueError::Encode { source })?;
        self.create()?;
        let _lock = self.lock()?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(&name);
        let written = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&body)?;
                f.sync_all()
            });
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(DelQueueError::Io {
                action: "write",
                path: tmp,
                source,
            });
        }
        fs::rename(&tmp, &path).map_err(io_error("rename into place", &path))?;
        self.sync_dir()?;
        Ok(path)
    }

    /// Reads every entry under the lock (the agent's side): entries that do
    /// not decode, or whose request is not the attachment their name says,
    /// are renamed `*.bad`; temp files a killed plugin left are removed.
    /// A missing directory is an empty queue.
    pub fn read(&self) -> Result<Contents, DelQueueError> {
        let mut contents = Contents::default();
        if !self.dir.is_dir() {
            return Ok(contents);
        }
        let _lock = self.lock()?;
        let mut names = Vec::new();
        for dirent in fs::read_dir(&self.dir).map_err(io_error("list", &self.dir))? {
            let dirent = dirent.map_err(io_error("list", &self.dir))?;
            let Ok(name) = dirent.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                if name.ends_with(".tmp") {
                    // Never renamed into place: the DEL was not acknowledged.
                    let _ = fs::remove_file(dirent.path());
                }
                continue;
            }
            if name.ends_with(ENTRY_SUFFIX) {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let path = self.dir.join(&name);
            match read_entry(&path, &name) {
                Ok(request) => contents.entries.push(Entry { path, request }),
                Err(why) => {
                    let bad = self.dir.join(format!("{name}{BAD_SUFFIX}"));
                    fs::rename(&path, &bad).map_err(io_error("set aside", &path))?;
                    contents.set_aside.push((bad, why));
                }
            }
        }
        if !contents.set_aside.is_empty() {
            self.sync_dir()?;
        }
        Ok(contents)
    }

    /// Removes an entry whose DEL is done (under the lock); a missing one
    /// is fine.
    pub fn remove(&self, entry: &Path) -> Result<(), DelQueueError> {
        let _lock = self.lock()?;
        match fs::remove_file(entry) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(DelQueueError::Io {
                    action: "remove",
                    path: entry.to_path_buf(),
                    source: e,
                });
            }
            _ => {}
        }
        // Without it a crash could bring the entry back: harmless (DEL is
        // idempotent) but noisy.
        self.sync_dir()
    }
}

/// One entry's request, or why it is malformed.
fn read_entry(path: &Path, name: &str) -> Result<AttachmentRequest, String> {
    let mut body = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_ENTRY_BYTES + 1).read_to_end(&mut body))
        .map_err(|e| format!("cannot read: {e}"))?;
    if body.len() as u64 > MAX_ENTRY_BYTES {
        return Err(format!("larger than {MAX_ENTRY_BYTES} bytes"));
    }
    let req: AttachmentRequest =
        serde_json::from_slice(&body).map_err(|e| format!("not a DEL request: {e}"))?;
    match entry_file_name(&req.container_id, &req.ifname) {
        Ok(expected) if expected == name => Ok(req),
        _ => Err(format!(
            "holds attachment {}/{}, not the one its name says",
            req.container_id, req.ifname
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{AttachmentConfig, Mode, PodIdentity};

    fn request(container_id: &str, ifname: &str) -> AttachmentRequest {
        AttachmentRequest {
            container_id: container_id.into(),
            netns: None,
            ifname: ifname.into(),
            pod: PodIdentity::default(),
            config: AttachmentConfig {
                network: "lan".into(),
                uplink: None,
                mode: Mode::Primary,
                host_routes: Vec::new(),
                dhcp: None,
                mtu: None,
                port_security: Default::default(),
                ipv6: Default::default(),
                ipv6_iid: Default::default(),
            },
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "lanlink-api-del-queue-{}-{tag}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn names_are_injective_and_safe() {
        assert_eq!(
            entry_file_name("abc123", "eth0").unwrap(),
            "abc123@eth0.json"
        );
        assert_eq!(entry_file_name("a/b", "e@1").unwrap(), "a%2Fb@e%401.json");
        assert_ne!(
            entry_file_name("a@b", "c").unwrap(),
            entry_file_name("a", "b@c").unwrap()
        );
        assert_ne!(
            entry_file_name("a%40b", "c").unwrap(),
            entry_file_name("a@b", "c").unwrap()
        );
        assert!(entry_file_name(&"x".repeat(300), "eth0").is_err());
    }

    #[test]
    fn push_read_remove_and_set_aside() {
        let dir = temp_dir("roundtrip");
        let q = DelQueue::new(dir.join("state").join("del-queue"));
        assert!(
            q.read().unwrap().entries.is_empty(),
            "a missing dir is empty"
        );
        // No state dir: no agent would ever run the queue.
        assert!(q.push(&request("c1", "eth0")).is_err());
        fs::create_dir_all(dir.join("state")).unwrap();
        let path = q.push(&request("c1", "eth0")).unwrap();
        // Twice: one entry.
        q.push(&request("c1", "eth0")).unwrap();
        let mode = fs::metadata(q.dir()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        fs::write(q.dir().join("junk@eth0.json"), b"{not json").unwrap();
        fs::write(q.dir().join(".half@eth0.json.tmp"), b"{").unwrap();
        let got = q.read().unwrap();
        assert_eq!(got.entries.len(), 1);
        assert_eq!(got.entries[0].path, path);
        assert_eq!(got.entries[0].request, request("c1", "eth0"));
        assert_eq!(got.set_aside.len(), 1);
        assert!(q.dir().join("junk@eth0.json.bad").exists());
        assert!(!q.dir().join(".half@eth0.json.tmp").exists());
        q.remove(&path).unwrap();
        q.remove(&path).unwrap();
        let got = q.read().unwrap();
        assert!(got.entries.is_empty() && got.set_aside.is_empty());
        fs::remove_dir_all(dir).unwrap();
    }
}
