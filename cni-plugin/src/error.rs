//! The plugin's error, and the one place it is mapped to CNI error codes.

use std::io;

use serde_json::{Value, json};

use crate::netconf::{CniVersion, Command, EnvError, NetConfError};
use lanlink_api::client::ClientError;
use lanlink_api::codes;
use lanlink_api::del_queue::DelQueueError;

/// Why a verb failed. [`CniError::code`] is the only mapping to spec codes.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The `CNI_*` environment is incomplete or malformed.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The netconf is not JSON, of an unsupported version, or invalid.
    #[error(transparent)]
    NetConf(#[from] NetConfError),
    /// The netconf's version predates the verb (CHECK needs 0.4.0, STATUS and
    /// GC need 1.1.0).
    #[error("config version {version} does not allow {command} (needs {minimum} or later)")]
    VersionNotAllowed {
        /// The verb.
        command: Command,
        /// The netconf's version.
        version: CniVersion,
        /// The first version with the verb.
        minimum: CniVersion,
    },
    /// stdin could not be read.
    #[error("cannot read the netconf from stdin: {source}")]
    Stdin {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The agent could not be asked, or answered an error.
    #[error("{source}")]
    Agent {
        /// The verb being served (STATUS maps differently).
        command: Command,
        /// What went wrong.
        #[source]
        source: ClientError,
    },
    /// DEL: the agent's socket is unreachable and the DEL could not be
    /// queued either (`delQueueDir` not writable): the runtime retries.
    #[error("{agent}; and cannot queue the DEL: {source}")]
    DelQueue {
        /// Why the agent could not be asked (boxed: the variant would
        /// otherwise double the size of every `Result` of the plugin).
        agent: Box<ClientError>,
        /// Why the queue could not be written.
        #[source]
        source: DelQueueError,
    },
    /// STATUS: the agent is up but cannot serve ADD.
    #[error("agent not ready: {reason}")]
    NotReady {
        /// The agent's reason.
        reason: String,
    },
    /// CHECK: the agent's view differs from the `prevResult`.
    #[error("check failed: {what}")]
    CheckMismatch {
        /// What differs.
        what: String,
    },
}

impl CniError {
    /// The CNI error code to report.
    pub fn code(&self) -> u32 {
        match self {
            CniError::Env(_) => codes::INVALID_ENV,
            CniError::NetConf(NetConfError::IncompatibleVersion { .. })
            | CniError::VersionNotAllowed { .. } => codes::INCOMPATIBLE_VERSION,
            CniError::NetConf(NetConfError::Decode { .. } | NetConfError::NotAnObject { .. }) => {
                codes::DECODE
            }
            CniError::NetConf(NetConfError::Invalid { .. }) => codes::INVALID_CONFIG,
            CniError::Stdin { .. } => codes::IO,
            // STATUS only has "plugin not available" and "limited connectivity".
            CniError::Agent {
                command: Command::Status,
                source,
            } => match source {
                ClientError::Api { error, .. } if error.code == codes::LIMITED_CONNECTIVITY => {
                    codes::LIMITED_CONNECTIVITY
                }
                _ => codes::PLUGIN_NOT_AVAILABLE,
            },
            CniError::Agent { source, .. } => match source {
                // 0 would read as success; an agent bug, not a pass.
                ClientError::Api { error, .. } if error.code != 0 => error.code,
                // Down, restarting or hung: the runtime retries.
                e if e.is_unavailable() => codes::TRY_AGAIN_LATER,
                _ => codes::INTERNAL,
            },
            CniError::DelQueue { .. } => codes::TRY_AGAIN_LATER,
            CniError::NotReady { .. } => codes::LIMITED_CONNECTIVITY,
            CniError::CheckMismatch { .. } => codes::CHECK_FAILED,
        }
    }

    /// The `details` of the error output: the agent's own details, or a hint.
    pub fn details(&self) -> String {
        match self {
            CniError::Agent {
                source: ClientError::Api { error, .. },
                ..
            } => error.details.clone(),
            CniError::Agent { source, .. } if source.is_unavailable() => {
                "is lanlinkd running on this node, and does the netconf's socketPath name its socket?"
                    .into()
            }
            CniError::DelQueue { .. } => {
                "lanlinkd is down and the netconf's delQueueDir cannot be written; the runtime retries"
                    .into()
            }
            _ => String::new(),
        }
    }

    /// The CNI error output: `{"cniVersion", "code", "msg", "details"}`.
    pub fn to_json(&self, version: CniVersion) -> Value {
        json!({
            "cniVersion": version.as_str(),
            "code": self.code(),
            "msg": self.to_string(),
            "details": self.details(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanlink_api::ApiError;
    use lanlink_api::client::StatusCode;
    use std::path::PathBuf;

    fn unreachable() -> ClientError {
        ClientError::Unreachable {
            path: PathBuf::from("/run/lanlink/lanlink.sock"),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        }
    }

    fn api(code: u32) -> ClientError {
        ClientError::Api {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: ApiError {
                code,
                msg: "no lease".into(),
                details: "no DHCPOFFER within 5s".into(),
            },
        }
    }

    #[test]
    fn agent_codes_depend_on_the_verb() {
        for command in [Command::Add, Command::Del, Command::Check, Command::Gc] {
            let e = CniError::Agent {
                command,
                source: unreachable(),
            };
            assert_eq!(e.code(), codes::TRY_AGAIN_LATER, "{command}");
            assert!(
                e.to_string()
                    .starts_with("agent not reachable at /run/lanlink/lanlink.sock: ")
            );
        }
        let e = CniError::Agent {
            command: Command::Status,
            source: unreachable(),
        };
        assert_eq!(e.code(), codes::PLUGIN_NOT_AVAILABLE);
        let e = CniError::Agent {
            command: Command::Status,
            source: api(codes::LIMITED_CONNECTIVITY),
        };
        assert_eq!(e.code(), codes::LIMITED_CONNECTIVITY);
        let e = CniError::Agent {
            command: Command::Status,
            source: api(codes::INTERNAL),
        };
        assert_eq!(e.code(), codes::PLUGIN_NOT_AVAILABLE);
        let e = CniError::Agent {
            command: Command::Add,
            source: api(codes::DHCP_FAILED),
        };
        assert_eq!(e.code(), codes::DHCP_FAILED);
        assert_eq!(
            e.to_json(CniVersion::V1_0_0),
            json!({"cniVersion": "1.0.0", "code": codes::DHCP_FAILED, "msg": "no lease", "details": "no DHCPOFFER within 5s"})
        );
        let e = CniError::Agent {
            command: Command::Add,
            source: api(0),
        };
        assert_eq!(e.code(), codes::INTERNAL);
    }
}
