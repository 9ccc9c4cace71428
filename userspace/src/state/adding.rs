//! Records of ADDs in flight: one small file per attachment under
//! `<state dir>/adding/`, written before an ADD creates anything and again
//! once it holds a lease, removed once the attachment is in the state file
//! (or the ADD was undone). A record left behind names an ADD the agent died
//! in: the next start removes what it made (the veth, its programs and map
//! entries, the uplink filter entry) and releases its lease.
//!
//! The records are written by rename (never torn) but not fsynced: they
//! exist for an agent that is killed, whose writes the kernel keeps. A
//! power loss also takes the veths, which do not survive a reboot; only a
//! lease of an ADD in flight then stays on the server until it expires.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

use super::{StateError, v1};
use crate::dhcp::{Lease, persist};

/// The directory of the records, inside the state directory.
pub const DIR: &str = "adding";

/// An ADD in flight.
#[derive(Clone, Debug, PartialEq)]
pub struct Adding {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// The host-side veth name (the record's file name).
    pub host_veth: String,
    /// The pod MAC claimed for it (in the uplink's filter).
    pub mac: [u8; 6],
    /// The pod's DHCP client identifier (RFC 4361: its DHCPv6 DUID and
    /// IAID too); empty in records of agents before IPv6.
    pub client_id: Vec<u8>,
    /// The lease it obtained, once it has one.
    pub lease: Option<Lease>,
    /// The IPv6 address it was given (with its DHCPv6 lease), once known.
    pub ipv6: Option<crate::ipv6::assign::Assignment>,
}

impl Adding {
    /// The key of the attachment.
    pub fn key(&self) -> String {
        super::key(&self.container_id, &self.ifname)
    }
}

/// The file's layout (the lease as in the state file).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    container_id: String,
    ifname: String,
    netns: String,
    host_veth: String,
    mac: [u8; 6],
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    client_id: Vec<u8>,
    #[serde(default)]
    lease: Option<v1::Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipv6: Option<v1::Ipv6>,
}

/// The record's path: `<dir>/<host veth>.json` (a veth name is a valid,
/// slash-free file name).
pub(super) fn path(dir: &Path, host_veth: &str) -> PathBuf {
    dir.join(format!("{host_veth}.json"))
}

/// Writes `rec` (temporary file, then rename).
pub(super) async fn write(dir: &Path, rec: &Adding) -> Result<(), StateError> {
    let path = path(dir, &rec.host_veth);
    let failed = |source| StateError::Adding {
        path: path.clone(),
        source,
    };
    let record = Record {
        container_id: rec.container_id.clone(),
        ifname: rec.ifname.clone(),
        netns: rec.netns.clone(),
        host_veth: rec.host_veth.clone(),
        mac: rec.mac,
        client_id: rec.client_id.clone(),
        lease: rec.lease.as_ref().map(v1::Lease::from),
        ipv6: rec.ipv6.as_ref().map(v1::Ipv6::from),
    };
    let json = serde_json::to_vec(&record).map_err(|e| failed(std::io::Error::other(e)))?;
    let tmp = dir.join(format!(".{}{}adding", rec.host_veth, persist::TEMP_MARKER));
    tokio::fs::create_dir_all(dir).await.map_err(failed)?;
    // 0600 like the state file: a lease, a MAC and a pod's name.
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .await
        .map_err(failed)?;
    f.write_all(&json).await.map_err(failed)?;
    // tokio's file finishes a write in the background: done before the rename.
    f.flush().await.map_err(failed)?;
    drop(f);
    if let Err(e) = tokio::fs::rename(&tmp, &path).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(failed(e));
    }
    Ok(())
}

/// Removes the record of `host_veth`; fine if there is none.
pub(super) async fn remove(dir: &Path, host_veth: &str) -> Result<(), StateError> {
    let path = path(dir, host_veth);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Adding { path, source }),
    }
}

/// Reads every record in `dir` (none if it does not exist). A temporary
/// file of an interrupted write is removed; a record that does not decode
/// is renamed `*.bad`; both are logged and never stop the start.
pub(super) fn read_all(dir: &Path) -> Result<Vec<Adding>, StateError> {
    let failed = |source| StateError::Adding {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(failed(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(failed)?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::warn!(
                    file = %path.display(),
                    "removed the temporary file of an interrupted ADD record write"
                ),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove a temporary ADD record")
                }
            }
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let decoded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()));
        let decoded = decoded.and_then(|mut r| {
            let ipv6 = match r.ipv6.take() {
                None => None,
                Some(v6) => Some(
                    v6.into_assignment(&r.host_veth)
                        .map_err(|e| e.to_string())?,
                ),
            };
            Ok((r, ipv6))
        });
        match decoded {
            Ok((r, ipv6)) => out.push(Adding {
                container_id: r.container_id,
                ifname: r.ifname,
                netns: r.netns,
                host_veth: r.host_veth,
                mac: r.mac,
                client_id: r.client_id,
                lease: r.lease.map(Lease::from),
                ipv6,
            }),
            Err(why) => {
                let bad = path.with_extension("json.bad");
                let moved = std::fs::rename(&path, &bad);
                tracing::warn!(
                    file = %path.display(),
                    reason = %why,
                    moved_to = %bad.display(),
                    ok = moved.is_ok(),
                    "malformed in-flight ADD record set aside"
                );
            }
        }
    }
    out.sort_by(|a, b| a.host_veth.cmp(&b.host_veth));
    Ok(out)
}
