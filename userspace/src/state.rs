//! The agent's persisted state: one record per attachment (container +
//! interface), with its lease. Written atomically after every change, read
//! at start to re-adopt the dataplane and resume renewals.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use lanlink_cni::api::{AttachmentConfig, EndpointInfo, Mode, PodIdentity};
use serde::{Deserialize, Serialize};

use crate::{
    dhcp::{Lease, persist},
    netlink::fmt_mac,
};

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or parsed.
    #[error("cannot load state from {path}")]
    Load {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file could not be written.
    #[error("cannot save state to {path}")]
    Save {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// One attachment the agent made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// Who the pod is.
    #[serde(default)]
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
    #[serde(default)]
    pub lease: Option<Lease>,
    /// Whether the lease expired without renewal.
    #[serde(default)]
    pub expired: bool,
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
            mac: fmt_mac(&self.mac),
            address: self
                .lease
                .as_ref()
                .map(|l| format!("{}/{}", l.address, l.prefix_len)),
            mode: self.config.mode,
        }
    }

    /// Primary or secondary.
    pub fn mode(&self) -> Mode {
        self.config.mode
    }
}

/// The key of an attachment.
pub fn key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// All attachments, by key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version of the file.
    pub version: u32,
    /// Attachments by `<container id>/<ifname>`.
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// Where the state lives, and its save/load.
#[derive(Clone, Debug)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store in `state_dir` (created if missing).
    pub fn new(state_dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(state_dir).map_err(|e| StateError::Save {
            path: state_dir.to_path_buf(),
            source: Box::new(e),
        })?;
        Ok(Self {
            path: state_dir.join(crate::paths::STATE_FILE),
        })
    }

    /// Reads the state; empty if there is no file yet.
    pub fn load(&self) -> Result<State, StateError> {
        persist::load::<State>(&self.path)
            .map(|s| {
                s.unwrap_or(State {
                    version: 1,
                    ..State::default()
                })
            })
            .map_err(|e| StateError::Load {
                path: self.path.clone(),
                source: Box::new(e),
            })
    }

    /// Writes the state atomically (temp file, fsync, rename).
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        persist::save_atomic(&self.path, state).map_err(|e| StateError::Save {
            path: self.path.clone(),
            source: Box::new(e),
        })
    }
}
