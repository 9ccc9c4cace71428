//! The agent's persisted state: one record per attachment (container +
//! interface), with its lease. Written after every change by one writer
//! thread ([`Store::submit`]), read at start to re-adopt the dataplane and
//! resume renewals.
//!
//! The file has its own versioned types ([`v1`]), so changing an API type
//! never changes the file; a file of another version is refused at start.
//!
//! Crash consistency: the file is replaced by a temporary file, fsynced,
//! renamed over it, and the directory fsynced, so a kill (or power loss) at
//! any point leaves the old or the new state, never a torn one; the
//! temporary file of an interrupted write is removed at start. A file that
//! does not decode was not written by this agent's writer (a disk fault, a
//! hand edit): the agent refuses to start, naming it, and leaves it alone.
//! Starting empty would make every live attachment an orphan (removed at
//! start) and lose every lease it holds; moving the file aside would do the
//! same. Meanwhile the pinned programs keep forwarding for the pods. ADDs in
//! flight have their own small records ([`adding`]), so a restart can undo
//! one the agent died in.

pub mod adding;
pub mod v1;
mod writer;

use std::{
    collections::BTreeMap,
    io::ErrorKind,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use lanlink_api::{AttachmentConfig, EndpointInfo, PodIdentity};
use tokio::sync::oneshot;

pub use adding::Adding;
pub use writer::WriteError;

use crate::dhcp::Lease;

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory could not be created.
    #[error("cannot create the state directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The mode of the state directory or file could not be read or
    /// narrowed.
    #[error("cannot restrict the mode of {path}")]
    Mode {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the writer of {path}")]
    Spawn {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be read.
    #[error("cannot read the state file {path}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON of the layout its version says. The agent does
    /// not start over it (see the module header).
    #[error(
        "the state file {path} is corrupt; lanlinkd will not start without its attachments \
         (that would remove them all and lose their leases): restore the file, or move it \
         away to start with none"
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by an agent of another format version.
    #[error(
        "the state file {path} has version {found}; this lanlinkd reads version {}",
        v1::VERSION
    )]
    Version {
        /// The state file.
        path: PathBuf,
        /// The `version` it holds, as written.
        found: String,
    },
    /// The file has no `version` and is not the layout of version 1 either.
    #[error(
        "the state file {path} has no version and is not a version {} layout",
        v1::VERSION
    )]
    Unversioned {
        /// The state file.
        path: PathBuf,
        /// Why it is not version 1.
        #[source]
        source: serde_json::Error,
    },
    /// A record holds a value the agent no longer accepts.
    #[error("the state file {path} holds an invalid record")]
    Invalid {
        /// The state file.
        path: PathBuf,
        /// Which record, and why.
        #[source]
        source: v1::InvalidRecord,
    },
    /// The temporary file of an interrupted write could not be removed.
    #[error("cannot remove {path}, the temporary file of an interrupted state write")]
    Leftover {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The record of an ADD in flight could not be written, removed or read.
    #[error("cannot update the in-flight ADD record {path}")]
    Adding {
        /// The record (or its directory).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A write including the change failed; the file holds what it held.
    #[error("cannot save state to {path}")]
    Save {
        /// The state file.
        path: PathBuf,
        /// Why (shared by every change the failed write carried).
        #[source]
        source: Arc<WriteError>,
    },
}

/// One attachment the agent made.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// Who the pod is.
    pub pod: PodIdentity,
    /// The netconf part the agent acted on.
    pub config: AttachmentConfig,
    /// Host-side veth name.
    pub host_veth: String,
    /// Host-side veth ifindex.
    pub host_ifindex: u32,
    /// Host-side veth MAC.
    pub host_mac: [u8; 6],
    /// Pod MAC.
    pub mac: [u8; 6],
    /// The lease the agent holds for it (`None` for `ipam: none`).
    pub lease: Option<Lease>,
    /// Whether the lease expired without renewal.
    pub expired: bool,
    /// The IPv6 address the agent gave the pod, if any.
    pub ipv6: Option<crate::ipv6::assign::Assignment>,
}

impl Endpoint {
    /// The key of the attachment: `<container id>/<ifname>`.
    pub fn key(&self) -> String {
        key(&self.container_id, &self.ifname)
    }

    /// How the API shows it.
    pub fn info(&self) -> EndpointInfo {
        EndpointInfo {
            container_id: self.container_id.clone(),
            network: self.config.network.clone(),
            ifname: self.ifname.clone(),
            netns: self.netns.clone(),
            pod: self.pod.clone(),
            host_veth: self.host_veth.clone(),
            host_ifindex: self.host_ifindex,
            mac: self.mac.into(),
            address: self
                .lease
                .as_ref()
                .map(|l| format!("{}/{}", l.address, l.prefix_len)),
            ipv6: self
                .ipv6
                .as_ref()
                .map(|a| format!("{}/{}", a.address, a.prefix_len)),
            ipv6_source: self.ipv6.as_ref().map(|a| a.source.as_str().to_string()),
            mode: self.config.mode,
            port_security: self.config.port_security,
            drops: Default::default(),
        }
    }
}

/// The key of an attachment.
pub fn key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// All attachments, by key (the state in memory; the file's layout is
/// [`v1::File`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// Attachments by `<container id>/<ifname>`.
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// Where the state lives: its loading, and the handle to its one writer.
/// One `Store` per directory (clones share the writer).
#[derive(Clone, Debug)]
pub struct Store {
    path: PathBuf,
    writer: writer::Writer,
}

/// A snapshot queued by [`Store::submit`]: [`wait`](Self::wait) for the
/// write that includes it.
#[derive(Debug)]
#[must_use = "a save may fail: wait for it"]
pub struct PendingSave {
    path: PathBuf,
    rx: oneshot::Receiver<writer::WriteResult>,
}

impl PendingSave {
    /// Waits for a write that includes the snapshot.
    pub async fn wait(self) -> Result<(), StateError> {
        let Self { path, rx } = self;
        outcome(path, rx.await)
    }

    /// Like [`wait`](Self::wait), blocking the calling thread: for callers
    /// that are not async (it parks an async worker if called on one).
    pub fn wait_blocking(self) -> Result<(), StateError> {
        let Self { path, rx } = self;
        outcome(path, futures::executor::block_on(rx))
    }
}

fn outcome(
    path: PathBuf,
    result: Result<writer::WriteResult, oneshot::error::RecvError>,
) -> Result<(), StateError> {
    // A dropped sender means the writer thread died with the job.
    let result = result.unwrap_or_else(|_| Err(Arc::new(WriteError::Gone)));
    result.map_err(|source| StateError::Save { path, source })
}

impl Store {
    /// The store in `state_dir`, with its writer thread. Leases, MACs and
    /// pod names are root's alone: the directory is created 0700, and an
    /// existing directory, state file or leftover temporary file that is
    /// open to group or others is narrowed (to 0700 and 0600) and logged.
    pub fn new(state_dir: &Path) -> Result<Self, StateError> {
        create_private_dir(state_dir)?;
        let path = state_dir.join(crate::paths::STATE_FILE);
        restrict(&path, 0o600)?;
        remove_leftover(&writer::temp_path(&path))?;
        let writer = writer::Writer::spawn(path.clone()).map_err(|source| StateError::Spawn {
            path: path.clone(),
            source,
        })?;
        Ok(Self { path, writer })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory of the in-flight ADD records ([`adding`]).
    fn adding_dir(&self) -> PathBuf {
        self.path.with_file_name(adding::DIR)
    }

    /// Records (or updates) an ADD in flight, before it makes anything and
    /// once it holds a lease.
    pub async fn record_adding(&self, rec: &Adding) -> Result<(), StateError> {
        adding::write(&self.adding_dir(), rec).await
    }

    /// Forgets the ADD in flight of `host_veth` (committed or undone).
    pub async fn clear_adding(&self, host_veth: &str) -> Result<(), StateError> {
        adding::remove(&self.adding_dir(), host_veth).await
    }

    /// The ADDs that were in flight when the previous agent stopped (at
    /// start; it blocks, briefly).
    pub fn adding(&self) -> Result<Vec<Adding>, StateError> {
        adding::read_all(&self.adding_dir())
    }

    /// Where the writer puts its temporary file (tests make it unusable to
    /// fail writes, even as root).
    #[cfg(test)]
    pub(crate) fn temp_path(&self) -> PathBuf {
        writer::temp_path(&self.path)
    }

    /// Reads the state; empty if there is no file yet. A file of another
    /// version is refused ([`StateError::Version`]).
    pub fn load(&self) -> Result<State, StateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        decode(&self.path, &bytes)
    }

    /// Queues a snapshot for the writer and returns at once. Call it with
    /// the lock that orders the changes held (so the queue order is the
    /// order of the changes), then release the lock and
    /// [`wait`](PendingSave::wait) outside it.
    pub fn submit(&self, snapshot: State) -> PendingSave {
        PendingSave {
            path: self.path.clone(),
            rx: self.writer.submit(snapshot),
        }
    }
}

/// Creates `dir` with mode 0700 (its missing parents with the default mode),
/// or narrows an existing one to at most 0700.
fn create_private_dir(dir: &Path) -> Result<(), StateError> {
    let failed = |source| StateError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(failed(e)),
    }
    restrict(dir, 0o700)
}

/// Removes the temporary file of a state write the previous agent was
/// killed in (its content is a partial snapshot, never read), logging it.
fn remove_leftover(tmp: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(tmp) {
        Ok(()) => {
            tracing::warn!(
                file = %tmp.display(),
                "removed the temporary file of an interrupted state write (the state file holds the last complete state)"
            );
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Leftover {
            path: tmp.to_path_buf(),
            source,
        }),
    }
}

/// Takes the permission bits outside `allowed` off `path` (never adds any),
/// logging it; nothing to do if it does not exist.
fn restrict(path: &Path, allowed: u32) -> Result<(), StateError> {
    let failed = |source| StateError::Mode {
        path: path.to_path_buf(),
        source,
    };
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(e)),
    };
    if mode & !allowed == 0 {
        return Ok(());
    }
    let narrowed = mode & allowed;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(narrowed)).map_err(failed)?;
    tracing::info!(
        path = %path.display(),
        was = %format_args!("{mode:04o}"),
        now = %format_args!("{narrowed:04o}"),
        "narrowed the mode of the agent's state"
    );
    Ok(())
}

/// Parses the file's bytes: version 1, or a file without a version that has
/// the version 1 layout. Public for fuzzing the loader (`fuzz/`).
#[doc(hidden)]
pub fn decode(path: &Path, bytes: &[u8]) -> Result<State, StateError> {
    let corrupt = |source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(corrupt)?;
    let file: v1::File = match value.get("version") {
        Some(v) if v.as_u64() == Some(u64::from(v1::VERSION)) => {
            serde_json::from_value(value).map_err(corrupt)?
        }
        Some(v) => {
            return Err(StateError::Version {
                path: path.to_path_buf(),
                found: v.to_string(),
            });
        }
        None => {
            if let Some(obj) = value.as_object_mut() {
                obj.insert("version".into(), v1::VERSION.into());
            }
            serde_json::from_value(value).map_err(|source| StateError::Unversioned {
                path: path.to_path_buf(),
                source,
            })?
        }
    };
    State::try_from(file).map_err(|source| StateError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
