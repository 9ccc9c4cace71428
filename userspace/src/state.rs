//! The agent's persisted state: one record per attachment (container +
//! interface), with its lease. Written atomically after every change, read
//! at start to re-adopt the dataplane and resume renewals.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use lanlink_cni::api::{AttachmentConfig, EndpointInfo, PodIdentity};
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A state dir removed on drop.
    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir() -> Dir {
        Dir(std::env::temp_dir().join(format!(
            "lanlink-state-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        )))
    }

    fn endpoint(lease: Option<Lease>) -> Endpoint {
        Endpoint {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/p".into(),
            pod: PodIdentity::default(),
            config: AttachmentConfig::default(),
            host_veth: "ll0123456789ab".into(),
            host_ifindex: 7,
            host_mac: [2, 0, 0, 0, 0, 7],
            mac: [2, 0, 0, 0, 0, 1],
            lease,
            expired: false,
        }
    }

    fn lease() -> Lease {
        Lease {
            mac: [2, 0, 0, 0, 0, 1],
            client_id: vec![0xff, 1, 2],
            hostname: Some("web-0".into()),
            address: Ipv4Addr::new(198, 18, 0, 150),
            prefix_len: 24,
            server_id: Ipv4Addr::new(198, 18, 0, 1),
            server_mac: [2, 0, 0, 0, 0, 2],
            router: Some(Ipv4Addr::new(198, 18, 0, 1)),
            classless_routes: vec![],
            dns: vec![],
            domain: None,
            search: vec![],
            mtu: None,
            lease_secs: 120,
            t1_secs: 60,
            t2_secs: 105,
            obtained_at_unix: 1_000,
        }
    }

    #[test]
    fn leases_survive_a_save_and_load() {
        let d = dir();
        let store = Store::new(&d.0).unwrap();
        assert_eq!(store.load().unwrap().version, 1, "no file yet: empty state");
        let mut st = State {
            version: 1,
            ..State::default()
        };
        let ep = endpoint(Some(lease()));
        st.endpoints.insert(ep.key(), ep.clone());
        store.save(&st).unwrap();
        let back = Store::new(&d.0).unwrap().load().unwrap();
        assert_eq!(back, st);
        assert_eq!(back.endpoints["c1/eth0"].lease, Some(lease()));
        // Only the state file: the temporary file was renamed over it.
        let names: Vec<_> = std::fs::read_dir(&d.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(crate::paths::STATE_FILE)]
        );
    }

    #[test]
    fn records_without_lease_or_expiry_load_with_defaults() {
        let d = dir();
        let store = Store::new(&d.0).unwrap();
        let mut json = serde_json::to_value(State {
            version: 1,
            endpoints: [("c1/eth0".to_string(), endpoint(None))].into(),
        })
        .unwrap();
        let rec = json["endpoints"]["c1/eth0"].as_object_mut().unwrap();
        rec.remove("lease");
        rec.remove("expired");
        rec.remove("pod");
        std::fs::write(d.0.join(crate::paths::STATE_FILE), json.to_string()).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.endpoints["c1/eth0"], endpoint(None));
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_naming_it() {
        let d = dir();
        let store = Store::new(&d.0).unwrap();
        std::fs::write(d.0.join(crate::paths::STATE_FILE), b"{ half").unwrap();
        let err = store.load().unwrap_err();
        assert!(err.to_string().contains(crate::paths::STATE_FILE), "{err}");
    }
}
