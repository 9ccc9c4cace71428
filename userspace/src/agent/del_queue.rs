//! The deletion queue at start: the DELs the CNI plugin recorded while the
//! agent was stopped ([`lanlink_api::del_queue`]) run through the normal DEL
//! path ([`Agent::del`]: renewal stopped, programs detached, map entries and
//! uplink filter entry removed, veth deleted, lease released, state
//! committed) before the agent serves anything, so kubelet never waited on
//! it and nothing it freed is leaked.
//!
//! An entry is removed only once its DEL succeeded; a failed one stays for
//! the next start (DEL is idempotent). An entry that does not decode is
//! renamed `*.bad` and logged: it never blocks start.

use std::{path::Path, sync::Arc};

use lanlink_api::del_queue::{Contents, DelQueue, DelQueueError};
use tracing::{info, warn};

use super::{Agent, Kernel};

/// What one run of the queue did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Drained {
    /// DELs done (their entries removed).
    pub done: usize,
    /// DELs that failed (their entries kept).
    pub failed: usize,
    /// Entries set aside as `*.bad`.
    pub set_aside: usize,
}

/// Reads the queue off the async workers (flock, reads, renames block).
async fn read(queue: &DelQueue) -> Result<Contents, DelQueueError> {
    let q = queue.clone();
    match tokio::task::spawn_blocking(move || q.read()).await {
        Ok(r) => r,
        Err(join) => Err(DelQueueError::Io {
            action: "read",
            path: queue.dir().to_path_buf(),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

impl<K: Kernel> Agent<K> {
    /// Runs every DEL queued in `dir` while the agent was stopped. Called at
    /// start, before re-adoption (what is deleted is not re-adopted) and
    /// before the API serves. Never fails start: problems are logged.
    pub(crate) async fn drain_del_queue(self: &Arc<Self>, dir: &Path) -> Drained {
        let queue = DelQueue::new(dir);
        // Made here so the plugin finds it (it creates it only inside an
        // existing state directory).
        let q = queue.clone();
        match tokio::task::spawn_blocking(move || q.create()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot create the deletion queue"),
            Err(e) => warn!(error = %e, "cannot create the deletion queue"),
        }
        self.run_del_queue(&queue).await
    }

    /// Runs the entries of `queue` once (the directory exists, or there is
    /// nothing to run).
    async fn run_del_queue(self: &Arc<Self>, queue: &DelQueue) -> Drained {
        let dir = queue.dir();
        let mut drained = Drained::default();
        let contents = match read(queue).await {
            Ok(c) => c,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot read the deletion queue");
                return drained;
            }
        };
        for (bad, why) in contents.set_aside {
            warn!(entry = %bad.display(), reason = %why, "malformed deletion queue entry set aside");
            drained.set_aside += 1;
        }
        for entry in contents.entries {
            let key = crate::state::key(&entry.request.container_id, &entry.request.ifname);
            match self.del(entry.request).await {
                Ok(()) => {
                    let (q, path) = (queue.clone(), entry.path.clone());
                    let removed = tokio::task::spawn_blocking(move || q.remove(&path)).await;
                    match removed {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            warn!(attachment = %key, error = %e, "cannot remove the queue entry")
                        }
                        Err(e) => {
                            warn!(attachment = %key, error = %e, "cannot remove the queue entry")
                        }
                    }
                    info!(attachment = %key, "queued DEL done (made while the agent was stopped)");
                    drained.done += 1;
                }
                Err(e) => {
                    warn!(attachment = %key, error = %e, "queued DEL failed; kept, retried while the agent runs and at the next start");
                    drained.failed += 1;
                }
            }
        }
        drained
    }

    /// While the agent runs, every [`REDRAIN_EVERY`]: DELs the plugin
    /// queued after the drain at start and before the API listened (it found
    /// no socket then), and queued DELs that failed, so none waits for the
    /// next start. Ends at shutdown.
    pub(crate) async fn redrain_del_queue(self: Arc<Self>, dir: std::path::PathBuf) {
        let queue = DelQueue::new(&dir);
        let mut tick = tokio::time::interval(REDRAIN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the drain at start just ran.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            let drained = self.run_del_queue(&queue).await;
            if drained != Drained::default() {
                info!(
                    dir = %dir.display(),
                    done = drained.done,
                    failed = drained.failed,
                    set_aside = drained.set_aside,
                    "ran queued DELs"
                );
            }
        }
    }
}

/// How often a running agent looks at its deletion queue.
pub(crate) const REDRAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fakes::{TestAgent, request};
    use crate::agent::host_veth_name;

    fn queue_dir(t: &TestAgent) -> std::path::PathBuf {
        t.agent.cfg.state_dir.join(lanlink_api::del_queue::DIR_NAME)
    }

    /// The agent's default queue (`<state-dir>/del-queue`) is the plugin's.
    #[test]
    fn the_defaults_agree() {
        assert_eq!(
            Path::new(crate::paths::DEFAULT_STATE_DIR).join(lanlink_api::del_queue::DIR_NAME),
            Path::new(lanlink_api::del_queue::DEFAULT_DIR)
        );
    }

    #[tokio::test]
    async fn a_queued_del_of_a_live_attachment_removes_it_at_start() {
        let t = TestAgent::start().await;
        t.agent.add(request("c1", "web")).await.unwrap();
        t.agent.add(request("c2", "db")).await.unwrap();
        let veth = host_veth_name("c1", "eth0");
        assert!(t.world().links.contains_key(&veth));
        // The agent stops; the plugin queues c1's DEL.
        let dir = queue_dir(&t);
        DelQueue::new(&dir).push(&request("c1", "web")).unwrap();
        let t2 = t.restart_with_queue(&dir).await;
        assert_eq!(
            t2.1,
            Drained {
                done: 1,
                ..Drained::default()
            }
        );
        let t2 = t2.0;
        assert!(!t2.world().links.contains_key(&veth), "host veth deleted");
        assert_eq!(t2.world().calls_of(&["release"]).len(), 1, "lease released");
        assert_eq!(t2.world().leases.len(), 1, "c2's lease kept");
        let eps: Vec<_> = t2
            .agent
            .endpoints()
            .into_iter()
            .map(|e| e.container_id)
            .collect();
        assert_eq!(eps, ["c2"], "c2 re-adopted, c1 gone");
        assert!(DelQueue::new(&dir).read().unwrap().entries.is_empty());
    }

    /// A DEL queued while the agent runs (the plugin found no socket
    /// between the agent's drain at start and its bind) is done by the
    /// running agent within a redrain period, not at the next start.
    #[tokio::test]
    async fn a_del_queued_while_the_agent_runs_is_done_without_a_restart() {
        let t = TestAgent::start().await;
        t.agent.add(request("c1", "web")).await.unwrap();
        let dir = queue_dir(&t);
        DelQueue::new(&dir).create().unwrap();
        let task = tokio::spawn(Arc::clone(&t.agent).redrain_del_queue(dir.clone()));
        DelQueue::new(&dir).push(&request("c1", "web")).unwrap();
        // Positive control: queued, and the attachment still there.
        assert_eq!(DelQueue::new(&dir).read().unwrap().entries.len(), 1);
        assert_eq!(t.agent.endpoints().len(), 1);
        let deadline = tokio::time::Instant::now() + REDRAIN_EVERY * 3;
        // The entry leaves the queue just after the DEL it ran: wait for both.
        let done = || {
            t.agent.endpoints().is_empty() && DelQueue::new(&dir).read().unwrap().entries.is_empty()
        };
        while !done() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(t.agent.endpoints().is_empty(), "the queued DEL was not run");
        assert_eq!(t.world().calls_of(&["release"]).len(), 1, "lease released");
        assert!(DelQueue::new(&dir).read().unwrap().entries.is_empty());
        task.abort();
    }

    #[tokio::test]
    async fn a_queued_del_of_an_unknown_attachment_is_a_noop_that_empties_the_queue() {
        let t = TestAgent::start().await;
        t.agent.add(request("c2", "db")).await.unwrap();
        let dir = queue_dir(&t);
        DelQueue::new(&dir).push(&request("never", "x")).unwrap();
        let (t2, drained) = t.restart_with_queue(&dir).await;
        assert_eq!(drained.done, 1);
        assert!(t2.world().calls_of(&["release"]).is_empty());
        assert_eq!(t2.agent.endpoints().len(), 1);
        assert!(DelQueue::new(&dir).read().unwrap().entries.is_empty());
        assert!(
            std::fs::read_dir(&dir)
                .unwrap()
                .all(|e| { e.unwrap().file_name().to_string_lossy().starts_with('.') })
        );
    }

    #[tokio::test]
    async fn a_malformed_entry_is_set_aside_and_start_goes_on() {
        let t = TestAgent::start().await;
        t.agent.add(request("c1", "web")).await.unwrap();
        let dir = queue_dir(&t);
        let q = DelQueue::new(&dir);
        q.push(&request("c1", "web")).unwrap();
        std::fs::write(dir.join("garbage@eth0.json"), b"{\"containerId\": 5").unwrap();
        let (t2, drained) = t.restart_with_queue(&dir).await;
        assert_eq!(
            drained,
            Drained {
                done: 1,
                failed: 0,
                set_aside: 1
            }
        );
        assert!(dir.join("garbage@eth0.json.bad").is_file());
        assert!(t2.agent.endpoints().is_empty());
        assert!(t2.agent.not_ready().is_none(), "ready after start");
    }
}
