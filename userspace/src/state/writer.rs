//! The one writer of the state file: a dedicated thread that owns the file.
//!
//! Callers take a snapshot of the state under their lock and queue it here
//! without waiting (the queue order is the snapshot order when they queue
//! under that lock); the fsyncs then run on this thread, never on an async
//! worker and never under the caller's lock. When snapshots queue up while a
//! write is in progress, only the newest is written: it contains every
//! change of the older ones, so each of their waiters learns the outcome of a
//! write that includes its change.

use std::{
    fs::OpenOptions,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
};

use tokio::sync::oneshot;

use super::{State, v1};
use crate::dhcp::persist;

/// Why a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Serialising the snapshot failed.
    #[error("cannot encode the state")]
    Encode(#[source] serde_json::Error),
    /// A file system step failed.
    #[error("{op} {path}")]
    Io {
        /// The step (`creating`, `writing`, `syncing`, `renaming into`,
        /// `syncing directory`).
        op: &'static str,
        /// The file or directory it was done on.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The writer thread is gone (it panicked, or could not be started).
    #[error("the state writer thread is not running")]
    Gone,
}

/// The outcome every waiter of one write shares.
pub type WriteResult = Result<(), Arc<WriteError>>;

/// One queued snapshot and who waits for it.
struct Job {
    state: State,
    done: oneshot::Sender<WriteResult>,
}

/// The handle to the writer thread; the thread ends when the last clone is
/// dropped (after writing what is queued).
#[derive(Clone, Debug)]
pub(super) struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the thread that writes `path`.
    pub(super) fn spawn(path: PathBuf) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("lanlink-state".into())
            .spawn(move || run(&path, &rx))?;
        Ok(Self { tx })
    }

    /// Queues `state`; the receiver resolves once a write including it is
    /// done (or failed).
    pub(super) fn submit(&self, state: State) -> oneshot::Receiver<WriteResult> {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::SendError(job)) = self.tx.send(Job { state, done }) {
            let _ = job.done.send(Err(Arc::new(WriteError::Gone)));
        }
        rx
    }
}

/// The thread: waits for a snapshot, takes every other one queued meanwhile,
/// writes the newest, tells all their waiters.
fn run(path: &Path, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let Some(newest) = batch.pop() else { continue };
        let result = write(path, &newest.state).map_err(Arc::new);
        if let Err(e) = &result {
            tracing::warn!(error = %e, path = %path.display(), "cannot write the state file");
        }
        for job in batch.into_iter().chain([newest]) {
            // A waiter that gave up (its task was cancelled) is fine.
            let _ = job.done.send(result.clone());
        }
    }
}

/// `<dir>/.<name>.tmp-writer` (with the [`persist::TEMP_MARKER`] of
/// temporary files): one fixed name, as this thread is the file's
/// only writer; a leftover of a crash is truncated by the next write.
pub(super) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{}writer", persist::TEMP_MARKER))
}

/// Replaces `path` with `state`, atomically and durably
/// ([`persist::replace_file`]).
fn write(path: &Path, state: &State) -> Result<(), WriteError> {
    let mut json = serde_json::to_vec_pretty(&v1::File::from(state)).map_err(WriteError::Encode)?;
    json.push(b'\n');
    let mut open = OpenOptions::new();
    open.write(true).create(true).truncate(true).mode(0o600);
    persist::replace_file(path, &temp_path(path), &json, &open).map_err(|e| WriteError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    })
}
