//! CNI GC: removes every attachment of a network that the runtime no longer
//! lists as valid.

use std::sync::Arc;

use lanlink_api::{AttachmentId, GcRequest, GcResponse};
use tracing::warn;

use super::{Agent, AgentError, Kernel};
use crate::state::Endpoint;

impl<K: Kernel> Agent<K> {
    /// CNI GC: removes every attachment of `network` not in the valid list.
    /// One that cannot be removed does not keep the others; the first error
    /// is returned after all were tried.
    pub async fn gc(self: &Arc<Self>, req: GcRequest) -> Result<GcResponse, AgentError> {
        let stale: Vec<Endpoint> = self
            .state()
            .endpoints
            .values()
            .filter(|e| e.config.network == req.network)
            .filter(|e| {
                !req.valid_attachments
                    .iter()
                    .any(|v| v.container_id == e.container_id && v.ifname == e.ifname)
            })
            .cloned()
            .collect();
        let mut removed = Vec::new();
        let mut first_err = None;
        for ep in stale {
            let key = ep.key();
            let _guard = self.lock_key(&key).await;
            // A DEL may have removed it (or an ADD replaced it) meanwhile.
            let Some(ep) = self.state().endpoints.get(&key).cloned() else {
                continue;
            };
            if let Err(e) = self.remove(&ep).await {
                warn!(attachment = %key, error = %e, "GC could not remove the attachment");
                first_err.get_or_insert(e);
                continue;
            }
            removed.push(AttachmentId {
                container_id: ep.container_id,
                ifname: ep.ifname,
            });
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(GcResponse { removed }),
        }
    }
}
