//! Helpers shared by the CNI scenarios (`cni_verbs.rs`, `cni_errors.rs`,
//! `chaining.rs`, `metrics.rs`, `cli.rs`): a lab with one node and its
//! agent, the plugin run exactly as a runtime runs it (`CNI_*` environment,
//! cleared otherwise, netconf on stdin, result or error object on stdout,
//! exit code), and checks that an attachment left nothing behind.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use lanlink_lab::netns::in_netns;
use lanlink_lab::pods::{self, host_veths, leased_ip};
use lanlink_lab::{
    Agent, AgentOptions, CniOutput, LanOptions, NetNs, Node, OneNode, PodNet, bin_dir, cmd,
};
use serde_json::Value;

pub const ROUTER: Ipv4Addr = lanlink_lab::ROUTER;
pub const NODE_IP: Ipv4Addr = OneNode::NODE_IP;
pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const TUNING: &str = "/usr/lib/cni/tuning";

// ---------------------------------------------------------------------------
// The lab and a runtime's way of calling plugins.

/// A LAN with dnsmasq, one node, and the agent on it.
pub type Lab = OneNode;

/// The lab, the agent started with `opts`.
pub fn lab_with(opts: AgentOptions) -> Result<Lab> {
    lanlink_lab::require_root();
    OneNode::start_with(LanOptions::default(), opts)
}

/// The lab with the agent's default options.
pub fn lab() -> Result<Lab> {
    lab_with(AgentOptions::default())
}

/// What a plugin did.
pub type Out = CniOutput;

/// The checks on a plugin's output that only conformance needs.
pub trait OutExt {
    /// Success with nothing on stdout (DEL, CHECK, STATUS, GC).
    fn ok_silent(&self) -> Result<()>;
    /// A CNI error object with `code`, whose `msg` contains `msg_part`.
    fn error(&self, code: u64, msg_part: &str) -> Result<Value>;
}

impl OutExt for Out {
    fn ok_silent(&self) -> Result<()> {
        let v = self.ok()?;
        ensure!(v.is_null(), "expected no output, got {v}");
        Ok(())
    }

    fn error(&self, code: u64, msg_part: &str) -> Result<Value> {
        ensure!(
            self.code != 0,
            "expected failure with code {code}, the plugin succeeded: {}",
            self.stdout
        );
        let v: Value = serde_json::from_str(&self.stdout)
            .with_context(|| format!("error output is not JSON: {:?}", self.stdout))?;
        ensure!(
            v["code"] == code,
            "expected code {code}, got {v} (stderr: {})",
            self.stderr
        );
        let msg = v["msg"].as_str().context("error without msg")?;
        ensure!(
            msg.contains(msg_part),
            "msg {msg:?} does not mention {msg_part:?}"
        );
        ensure!(v["cniVersion"].is_string(), "error without cniVersion: {v}");
        Ok(v)
    }
}

/// The environment a runtime gives a plugin for `command`.
pub fn runtime_env(
    command: &str,
    container_id: &str,
    netns: Option<&Path>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("CNI_COMMAND".into(), command.into()),
        ("CNI_CONTAINERID".into(), container_id.into()),
        ("CNI_IFNAME".into(), "eth0".into()),
        (
            "CNI_PATH".into(),
            format!("{}:/usr/lib/cni", bin_dir().display()),
        ),
        (
            "CNI_ARGS".into(),
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container_id}"),
        ),
    ];
    if let Some(ns) = netns {
        env.push(("CNI_NETNS".into(), ns.display().to_string()));
    }
    env
}

/// Runs `plugin` in the node's namespace (as the node's runtime does) with
/// only `env` (and `PATH`), `stdin` as its input.
pub fn exec_plugin(
    node: &Node,
    plugin: &Path,
    env: &[(String, String)],
    stdin: &[u8],
) -> Result<Out> {
    let mut c = in_netns(node.path());
    c.arg(plugin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        c.env(k, v);
    }
    Ok(cmd::run_with_stdin(&mut c, Some(stdin), Duration::from_secs(60))?.into())
}

pub fn lanlink(node: &Node, env: &[(String, String)], stdin: &[u8]) -> Result<Out> {
    exec_plugin(node, &bin_dir().join(lanlink_lab::CNI_BIN), env, stdin)
}

/// Runs lanlink with `command` for `container_id` and `conf`.
pub fn verb(
    lab: &Lab,
    command: &str,
    container_id: &str,
    netns: Option<&Path>,
    conf: &Value,
) -> Result<Out> {
    lanlink(
        &lab.node,
        &runtime_env(command, container_id, netns),
        conf.to_string().as_bytes(),
    )
}

/// Runs lanlink's GC for `conf` with `valid` as `cni.dev/valid-attachments`.
pub fn gc(lab: &Lab, conf: &Value, valid: Value) -> Result<Out> {
    verb(
        lab,
        "GC",
        "x",
        None,
        &with(conf.clone(), "cni.dev/valid-attachments", valid),
    )
}

/// The lab netconf in CNI `version`.
pub fn netconf(lab: &Lab, version: &str) -> Value {
    PodNet::primary().version(version).netconf(&lab.agent)
}

/// `conf` with `key` set.
pub fn with(mut conf: Value, key: &str, value: Value) -> Value {
    conf[key] = value;
    conf
}

/// A pod attached by ADD.
pub struct Pod {
    pub ns: NetNs,
    pub id: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub host_veth: String,
    pub result: Value,
}

pub fn add(lab: &Lab, name: &str, conf: &Value) -> Result<Pod> {
    let ns = lab.node.pod_netns(name)?;
    let id = format!("{}-{name}", ns.name());
    let result = verb(lab, "ADD", &id, Some(ns.path()), conf)?
        .ok()
        .with_context(|| format!("ADD {name}; agent log:\n{}", lab.agent.log()))?;
    let ip = leased_ip(&result)?;
    let pod_if = |sandbox: bool| {
        result["interfaces"]
            .as_array()
            .and_then(|ifs| ifs.iter().find(|i| i["sandbox"].is_string() == sandbox))
            .cloned()
            .with_context(|| format!("no interface with sandbox={sandbox} in {result}"))
    };
    let mac = pod_if(true)?["mac"].as_str().unwrap_or_default().to_owned();
    let host_veth = pod_if(false)?["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(Pod {
        ns,
        id,
        mac,
        ip,
        host_veth,
        result,
    })
}

/// Entries of a pinned map, through bpftool.
pub fn map_entries(agent: &Agent, map: &str) -> Result<usize> {
    pods::map_len(agent.pin_dir(), map)
}

/// Asserts an attachment left nothing behind: veth, map entries, pinned
/// links, the lease in dnsmasq's lease file.
pub fn assert_gone(lab: &Lab, pod: &Pod) -> Result<()> {
    assert_released(lab, &pod.host_veth, &pod.mac)
}

/// [`assert_gone`] by host veth name and pod MAC.
pub fn assert_released(lab: &Lab, host_veth: &str, mac: &str) -> Result<()> {
    ensure!(
        !host_veths(&lab.node)?.iter().any(|v| v == host_veth),
        "host veth {host_veth} is still there"
    );
    let macs = Value::Array(pods::map_dump(lab.agent.pin_dir(), "EP_BY_MAC")?).to_string();
    let mac_bytes: Vec<String> = mac.split(':').map(|b| format!("\"0x{b}\"")).collect();
    ensure!(
        !macs.replace(' ', "").contains(&mac_bytes.join(",")),
        "{mac} is still in EP_BY_MAC: {macs}"
    );
    ensure!(
        !pods::pinned_links(lab.agent.pin_dir())?
            .iter()
            .any(|l| l.ends_with(host_veth)),
        "links of {host_veth} still pinned"
    );
    lab.lan
        .wait_for_no_lease(mac, Duration::from_secs(5))
        .with_context(|| format!("the lease of {mac} was not released"))?;
    Ok(())
}

/// `lanlinkd <args> --socket … --pin-dir …` in the node's namespace; stdout
/// on success.
pub fn cli(lab: &Lab, args: &[&str]) -> Result<String> {
    let out = cli_raw(lab, args)?;
    ensure!(
        out.status.success(),
        "lanlinkd {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn cli_raw(lab: &Lab, args: &[&str]) -> Result<std::process::Output> {
    let mut c = lab.node.ns().command(&[]);
    c.arg(bin_dir().join(lanlink_lab::AGENT_BIN))
        .args(args)
        .arg("--socket")
        .arg(lab.agent.socket())
        .arg("--pin-dir")
        .arg(lab.agent.pin_dir());
    cmd::run(&mut c, Duration::from_secs(20))
}
