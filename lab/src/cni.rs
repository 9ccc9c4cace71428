//! [`cni`]: runs the `lanlink` CNI plugin exactly as a container runtime
//! does — `CNI_*` environment, netconf on stdin, result on stdout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::CNI_BIN;
use crate::agent::Agent;
use crate::cmd;
use crate::netns::in_netns;

/// One plugin invocation.
#[derive(Clone, Debug)]
pub struct CniCall {
    /// `CNI_COMMAND`: `ADD`, `DEL`, `CHECK`, `STATUS`, `GC`, `VERSION`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: the pod namespace's path (unset when `None`).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, e.g. `K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0`.
    pub args: String,
    /// The network configuration, written to stdin.
    pub netconf: Value,
    /// `CNI_PATH`; `None` uses the plugin's own directory.
    pub path: Option<String>,
    /// The namespace the runtime runs in (a node's), entered with nsenter;
    /// `None` runs the plugin in the caller's namespace.
    pub runtime_netns: Option<PathBuf>,
    /// Kill the plugin after this long.
    pub timeout: Duration,
}

impl CniCall {
    /// A call of `command` for `container_id` with interface `eth0`, no
    /// `CNI_ARGS`, in the caller's namespace, timeout 60 s.
    pub fn new(command: &str, container_id: &str, netns: Option<&Path>, netconf: Value) -> Self {
        Self {
            command: command.to_owned(),
            container_id: container_id.to_owned(),
            netns: netns.map(Path::to_owned),
            ifname: "eth0".to_owned(),
            args: String::new(),
            netconf,
            path: None,
            runtime_netns: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// Sets `CNI_ARGS` (builder style).
    pub fn with_args(mut self, args: &str) -> Self {
        self.args = args.to_owned();
        self
    }

    /// Sets `CNI_IFNAME` (builder style).
    pub fn with_ifname(mut self, ifname: &str) -> Self {
        self.ifname = ifname.to_owned();
        self
    }

    /// Runs the plugin inside `netns` (a node's), as that node's runtime would.
    pub fn in_netns(mut self, netns: &Path) -> Self {
        self.runtime_netns = Some(netns.to_owned());
        self
    }
}

/// What the plugin did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniOutput {
    /// Exit code (-1 if a signal ended it).
    pub code: i32,
    /// Its stdout: the result, or the error object on failure.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl From<std::process::Output> for CniOutput {
    fn from(out: std::process::Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl CniOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Stdout parsed as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("plugin stdout is not JSON: {:?}", self.stdout))
    }

    /// The result if the plugin succeeded, else an error carrying its error
    /// object and stderr.
    pub fn ok(&self) -> Result<Value> {
        if !self.success() {
            bail!(
                "plugin exited {}: {} (stderr: {})",
                self.code,
                self.stdout.trim(),
                self.stderr.trim()
            );
        }
        if self.stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        self.json()
    }
}

/// Runs `<bin_dir>/lanlink` with `call`. The environment is cleared as a
/// runtime's plugin environment would be, keeping only `PATH` (and
/// `RUST_LOG`/`RUST_BACKTRACE` for debugging), plus the `CNI_*` variables.
pub fn cni(bin_dir: &Path, call: &CniCall) -> Result<CniOutput> {
    let plugin = bin_dir.join(CNI_BIN);
    if !plugin.is_file() {
        bail!(
            "{} not found; build it with `cargo xtask build` or set LANLINK_BIN_DIR",
            plugin.display()
        );
    }
    exec(&plugin, bin_dir, call)
        .with_context(|| format!("CNI {} of {}", call.command, call.container_id))
}

/// Runs any CNI plugin binary (`plugin`, e.g. `/usr/lib/cni/bridge`) with
/// `call`, exactly as [`cni`] runs lanlink's: the same cleared environment,
/// `CNI_*` variables, netconf on stdin and timeout. `CNI_PATH` defaults to
/// the plugin's own directory. For side-by-side comparisons (benchmarks)
/// that must invoke every plugin the same way.
pub fn cni_exec(plugin: &Path, call: &CniCall) -> Result<CniOutput> {
    if !plugin.is_file() {
        bail!("CNI plugin {} not found", plugin.display());
    }
    let plugin_dir = plugin.parent().unwrap_or(Path::new("/"));
    exec(plugin, plugin_dir, call).with_context(|| {
        format!(
            "CNI {} of {} with {}",
            call.command,
            call.container_id,
            plugin.display()
        )
    })
}

/// Runs `plugin` with `call` in a cleared environment; `CNI_PATH` defaults
/// to `default_path`.
fn exec(plugin: &Path, default_path: &Path, call: &CniCall) -> Result<CniOutput> {
    let mut c = match &call.runtime_netns {
        Some(ns) => {
            let mut c = in_netns(ns);
            c.arg(plugin);
            c
        }
        None => Command::new(plugin),
    };
    c.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .env("CNI_COMMAND", &call.command)
        .env("CNI_CONTAINERID", &call.container_id)
        .env("CNI_IFNAME", &call.ifname)
        .env("CNI_ARGS", &call.args)
        .env(
            "CNI_PATH",
            call.path
                .clone()
                .unwrap_or_else(|| default_path.display().to_string()),
        );
    if let Some(netns) = &call.netns {
        c.env("CNI_NETNS", netns);
    }
    for key in ["RUST_LOG", "RUST_BACKTRACE"] {
        if let Some(v) = std::env::var_os(key) {
            c.env(key, v);
        }
    }
    let stdin = serde_json::to_vec(&call.netconf).context("cannot serialise the netconf")?;
    Ok(cmd::run_with_stdin(&mut c, Some(&stdin), call.timeout)?.into())
}

/// What a pod's lanlink attachment asks for: the lab's one builder of
/// lanlink netconfs (network `lanlink-lab`, type `lanlink`, uplink `eth0`,
/// the agent's socket, and these settings).
#[derive(Clone, Debug)]
pub struct PodNet {
    /// `cniVersion` (default 1.1.0).
    pub cni_version: String,
    /// `mode`: `primary` (default) or `secondary`.
    pub mode: String,
    /// `hostRoutes`, when set.
    pub host_routes: Option<Vec<String>>,
    /// `ipam`, when set (e.g. `{"type": "lanlink-dhcp", "timeoutMs": 5000}`).
    pub ipam: Option<Value>,
}

impl Default for PodNet {
    fn default() -> Self {
        Self {
            cni_version: "1.1.0".to_owned(),
            mode: "primary".to_owned(),
            host_routes: None,
            ipam: None,
        }
    }
}

impl PodNet {
    /// A primary interface (the pod's `eth0`), CNI 1.1.0.
    pub fn primary() -> Self {
        Self::default()
    }

    /// A secondary interface (e.g. a Multus attachment), CNI 1.1.0.
    pub fn secondary() -> Self {
        Self {
            mode: "secondary".to_owned(),
            ..Self::default()
        }
    }

    /// Sets `cniVersion` (builder style).
    pub fn version(mut self, version: &str) -> Self {
        self.cni_version = version.to_owned();
        self
    }

    /// Sets `hostRoutes` (builder style).
    pub fn host_routes(mut self, routes: &[&str]) -> Self {
        self.host_routes = Some(routes.iter().map(|r| r.to_string()).collect());
        self
    }

    /// Sets `ipam` to lanlink's DHCP with `timeoutMs` (builder style).
    pub fn dhcp_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.ipam = Some(json!({"type": "lanlink-dhcp", "timeoutMs": timeout_ms}));
        self
    }

    /// The netconf for pods served by `agent`.
    pub fn netconf(&self, agent: &Agent) -> Value {
        let mut conf = json!({
            "cniVersion": self.cni_version,
            "name": "lanlink-lab",
            "type": "lanlink",
            "uplink": "eth0",
            "mode": self.mode,
            "socketPath": agent.socket(),
            // The agent's queue (`--del-queue-dir` defaults under its
            // state dir): a DEL made while it is down waits there.
            "delQueueDir": agent.state_dir().join("del-queue"),
        });
        if let Some(routes) = &self.host_routes {
            conf["hostRoutes"] = json!(routes);
        }
        if let Some(ipam) = &self.ipam {
            conf["ipam"] = ipam.clone();
        }
        conf
    }
}

impl PodNet {
    /// The same as a plugin object of a conflist: without `cniVersion` and
    /// `name`, which the runtime takes from the list.
    pub fn plugin(&self, agent: &Agent) -> Value {
        let mut conf = self.netconf(agent);
        if let Some(o) = conf.as_object_mut() {
            o.remove("cniVersion");
            o.remove("name");
        }
        conf
    }
}

/// The default lab netconf ([`PodNet::primary`]) for `agent`.
pub fn lab_netconf(agent: &Agent) -> Value {
    PodNet::primary().netconf(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in plugin that echoes its environment and stdin.
    fn fake_plugin() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("lanlink-cni-unit.")
            .tempdir()
            .unwrap();
        let script = dir.path().join(CNI_BIN);
        std::fs::write(
            &script,
            "#!/bin/sh\n\
             printf '{\"cmd\":\"%s\",\"id\":\"%s\",\"netns\":\"%s\",\"ifname\":\"%s\",\"args\":\"%s\",\"home\":\"%s\",\"conf\":' \
               \"$CNI_COMMAND\" \"$CNI_CONTAINERID\" \"$CNI_NETNS\" \"$CNI_IFNAME\" \"$CNI_ARGS\" \"$HOME\"\n\
             cat\n\
             printf '}'\n\
             [ \"$CNI_COMMAND\" = DEL ] && exit 7\n\
             exit 0\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn passes_env_and_stdin_like_a_runtime() {
        let dir = fake_plugin();
        let call = CniCall::new(
            "ADD",
            "c1",
            Some(Path::new("/run/netns/x")),
            json!({"name": "n"}),
        )
        .with_args("K8S_POD_NAME=p")
        .with_ifname("net1");
        let out = cni(dir.path(), &call).unwrap();
        let v = out.ok().unwrap();
        assert_eq!(v["cmd"], "ADD");
        assert_eq!(v["id"], "c1");
        assert_eq!(v["netns"], "/run/netns/x");
        assert_eq!(v["ifname"], "net1");
        assert_eq!(v["args"], "K8S_POD_NAME=p");
        assert_eq!(v["home"], "", "the environment must be cleared");
        assert_eq!(v["conf"]["name"], "n");
    }

    #[test]
    fn reports_failure_codes() {
        let dir = fake_plugin();
        let out = cni(dir.path(), &CniCall::new("DEL", "c1", None, json!({}))).unwrap();
        assert_eq!(out.code, 7);
        assert!(out.ok().is_err());
    }

    #[test]
    fn missing_plugin_is_a_clear_error() {
        let err = cni(
            Path::new("/nonexistent"),
            &CniCall::new("ADD", "c", None, json!({})),
        )
        .unwrap_err();
        assert!(err.to_string().contains("cargo xtask build"), "{err}");
    }
}
