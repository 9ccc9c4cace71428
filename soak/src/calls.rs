//! CNI calls through the real plugin, each with a deadline, classified by
//! what the specification allows: a result, a spec error (code + msg), or a
//! failure of the plugin (a timeout, an output that is neither).

use std::path::Path;
use std::time::Duration;

use lanlink_lab::{CniCall, cni};
use serde_json::Value;

/// How long any CNI call may take. ADD's own DHCP deadline is 2 s
/// (`ipam.timeoutMs`), a DEL takes milliseconds: 30 s is a hang.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How a call ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Exit 0 with a result (ADD) or nothing (DEL, GC).
    Ok(Value),
    /// A spec error: exit non-zero, `{"code": n, "msg": "…"}` on stdout.
    Err {
        /// The error code.
        code: u64,
        /// Its message.
        msg: String,
    },
    /// The plugin outlived [`DEADLINE`] (it was killed).
    Timeout,
    /// Anything else: not a spec result or error.
    NonSpec(String),
}

impl Outcome {
    /// The label counted under `calls` (`add_ok`, `del_err_11`, …).
    pub fn label(&self, verb: &str) -> String {
        let verb = verb.to_ascii_lowercase();
        match self {
            Outcome::Ok(_) => format!("{verb}_ok"),
            Outcome::Err { code, .. } => format!("{verb}_err_{code}"),
            Outcome::Timeout => format!("{verb}_timeout"),
            Outcome::NonSpec(_) => format!("{verb}_non_spec"),
        }
    }

    /// Whether it succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// Whether the specification allows it (a result or a spec error).
    pub fn is_spec(&self) -> bool {
        matches!(self, Outcome::Ok(_) | Outcome::Err { .. })
    }

    /// The error code, if a spec error.
    pub fn code(&self) -> Option<u64> {
        match self {
            Outcome::Err { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok(_) => write!(f, "ok"),
            Outcome::Err { code, msg } => write!(f, "error {code}: {msg}"),
            Outcome::Timeout => write!(f, "no answer within {DEADLINE:?}"),
            Outcome::NonSpec(s) => write!(f, "not a spec output: {s}"),
        }
    }
}

/// Runs `lanlink` with `verb` for `id` in the node's namespace (as its
/// runtime would) and classifies the outcome.
pub fn call(
    bin_dir: &Path,
    node_ns: &Path,
    verb: &str,
    id: &str,
    netns: Option<&Path>,
    netconf: &Value,
) -> Outcome {
    let mut c = CniCall::new(verb, id, netns, netconf.clone()).in_netns(node_ns);
    c.args = format!("K8S_POD_NAMESPACE=soak;K8S_POD_NAME={id}");
    c.timeout = DEADLINE;
    let out = match cni(bin_dir, &c) {
        Ok(out) => out,
        Err(e) if format!("{e:#}").contains("did not finish within") => return Outcome::Timeout,
        Err(e) => return Outcome::NonSpec(format!("cannot run the plugin: {e:#}")),
    };
    classify(verb, out.code, &out.stdout, &out.stderr)
}

/// What the specification makes of an exit code and stdout.
pub fn classify(verb: &str, code: i32, stdout: &str, stderr: &str) -> Outcome {
    let text = stdout.trim();
    if code == 0 {
        if verb == "ADD" {
            return match serde_json::from_str::<Value>(text) {
                Ok(v) if v["cniVersion"].is_string() && v["interfaces"].is_array() => {
                    Outcome::Ok(v)
                }
                _ => Outcome::NonSpec(format!("ADD exit 0 without a result: {text:.300}")),
            };
        }
        return if text.is_empty() {
            Outcome::Ok(Value::Null)
        } else {
            match serde_json::from_str::<Value>(text) {
                Ok(v) => Outcome::Ok(v),
                Err(_) => Outcome::NonSpec(format!("{verb} exit 0 with {text:.300}")),
            }
        };
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => match (v["code"].as_u64(), v["msg"].as_str()) {
            (Some(c), Some(msg)) => Outcome::Err {
                code: c,
                msg: msg.to_owned(),
            },
            _ => Outcome::NonSpec(format!("exit {code} with {text:.300}")),
        },
        Err(_) => Outcome::NonSpec(format!(
            "exit {code}, stdout {text:.300}, stderr {:.300}",
            stderr.trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_results_and_errors() {
        let ok = classify(
            "ADD",
            0,
            r#"{"cniVersion":"1.1.0","interfaces":[],"ips":[]}"#,
            "",
        );
        assert!(ok.is_ok());
        assert_eq!(ok.label("ADD"), "add_ok");
        let err = classify(
            "ADD",
            1,
            r#"{"cniVersion":"1.1.0","code":100,"msg":"x"}"#,
            "",
        );
        assert_eq!(err.code(), Some(100));
        assert_eq!(err.label("ADD"), "add_err_100");
        assert!(classify("DEL", 0, "", "").is_ok());
        assert!(!classify("DEL", 2, "panicked", "").is_spec());
        assert!(!classify("ADD", 0, "", "").is_spec());
    }
}
