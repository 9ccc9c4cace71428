//! CNI conformance of the `lanlink` binary, run exactly as a runtime runs a
//! plugin — `CNI_*` environment (cleared otherwise), netconf on stdin, result
//! or error object on stdout, exit code — against a real agent and a real
//! dnsmasq in the lab, for every verb and every supported version; chaining
//! with the reference `tuning` plugin as libcni runs a conflist; and the
//! operator's side of the agent: Prometheus metrics, the CLI (including its
//! pinned-map fallback with the agent down) and structured logs.
//!
//! Every check looks at the real thing: the lease in dnsmasq's lease file,
//! the pod's interface and routes, the host veths, the pinned maps.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use lanlink_lab::pods::{self, host_veths, result_ip};
use lanlink_lab::{
    Agent, AgentOptions, CniOutput, Lan, LanOptions, NetNs, Node, bin_dir, cmd, ping,
};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const ROUTER: Ipv4Addr = lanlink_lab::ROUTER;
const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const TUNING: &str = "/usr/lib/cni/tuning";

// ---------------------------------------------------------------------------
// The lab and a runtime's way of calling plugins.

/// A LAN with dnsmasq, one node, and the agent on it. Field order is drop
/// order: the agent stops before its node and the LAN go.
struct Lab {
    agent: Agent,
    node: Node,
    lan: Lan,
}

fn lab_with(opts: AgentOptions) -> Result<Lab> {
    lanlink_lab::require_root();
    let lan = Lan::new(LanOptions::default())?;
    let node = Node::new(&lan, "node1", NODE_IP)?;
    let agent = Agent::start(&node, opts)?;
    Ok(Lab { agent, node, lan })
}

fn lab() -> Result<Lab> {
    lab_with(AgentOptions::default())
}

/// What a plugin did.
type Out = CniOutput;

/// The checks on a plugin's output that only conformance needs.
trait OutExt {
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
fn runtime_env(command: &str, container_id: &str, netns: Option<&Path>) -> Vec<(String, String)> {
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
fn exec_plugin(node: &Node, plugin: &Path, env: &[(String, String)], stdin: &[u8]) -> Result<Out> {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", node.path().display()))
        .arg("--")
        .arg(plugin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        c.env(k, v);
    }
    Ok(cmd::run_with_stdin(&mut c, Some(stdin), Duration::from_secs(60))?.into())
}

fn lanlink(node: &Node, env: &[(String, String)], stdin: &[u8]) -> Result<Out> {
    exec_plugin(node, &bin_dir().join(lanlink_lab::CNI_BIN), env, stdin)
}

/// Runs lanlink with `command` for `container_id` and `conf`.
fn verb(
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

fn netconf(lab: &Lab, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "lanlink-lab",
        "type": "lanlink",
        "uplink": "eth0",
        "mode": "primary",
        "socketPath": lab.agent.socket(),
    })
}

/// `conf` with `key` set.
fn with(mut conf: Value, key: &str, value: Value) -> Value {
    conf[key] = value;
    conf
}

/// A pod attached by ADD.
struct Pod {
    ns: NetNs,
    id: String,
    mac: String,
    ip: Ipv4Addr,
    host_veth: String,
    result: Value,
}

fn add(lab: &Lab, name: &str, conf: &Value) -> Result<Pod> {
    let ns = lab.node.pod_netns(name)?;
    let id = format!("{}-{name}", ns.name());
    let result = verb(lab, "ADD", &id, Some(ns.path()), conf)?
        .ok()
        .with_context(|| format!("ADD {name}; agent log:\n{}", lab.agent.log()))?;
    let ip = result_ip(&result)?.with_context(|| format!("no ips[0].address in {result}"))?;
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
fn map_entries(agent: &Agent, map: &str) -> Result<usize> {
    pods::map_len(agent.pin_dir(), map)
}

/// Asserts an attachment left nothing behind: veth, map entries, pinned
/// links, the lease in dnsmasq's lease file.
fn assert_gone(lab: &Lab, pod: &Pod) -> Result<()> {
    assert_released(lab, &pod.host_veth, &pod.mac)
}

/// [`assert_gone`] by host veth name and pod MAC.
fn assert_released(lab: &Lab, host_veth: &str, mac: &str) -> Result<()> {
    ensure!(
        !host_veths(&lab.node)?.iter().any(|v| v == host_veth),
        "host veth {host_veth} is still there"
    );
    let macs = cmd::run_ok(
        Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(lab.agent.pin_dir().join("EP_BY_MAC")),
        cmd::SHORT,
    )?;
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

// ---------------------------------------------------------------------------
// Verbs and versions.

/// Checks an ADD result's shape for `version` against the pod and dnsmasq.
fn check_add_result(lab: &Lab, pod: &Pod, version: &str) -> Result<()> {
    let r = &pod.result;
    let keys: Vec<&str> = r
        .as_object()
        .context("result is not an object")?
        .keys()
        .map(String::as_str)
        .collect();
    ensure!(
        keys == ["cniVersion", "dns", "interfaces", "ips", "routes"],
        "{version}: result keys {keys:?}"
    );
    ensure!(r["cniVersion"] == version, "{version}: {r}");
    let ifs = r["interfaces"].as_array().context("interfaces")?;
    ensure!(ifs.len() == 2, "{version}: interfaces {ifs:?}");
    ensure!(
        ifs[0]["name"].as_str().is_some_and(|n| n.starts_with("ll"))
            && ifs[0].get("sandbox").is_none(),
        "{version}: host veth entry {}",
        ifs[0]
    );
    ensure!(
        ifs[1]["name"] == "eth0" && ifs[1]["sandbox"] == pod.ns.path().display().to_string(),
        "{version}: pod interface entry {}",
        ifs[1]
    );
    ensure!(pod.ns.mac("eth0")? == pod.mac, "{version}: MAC differs");
    let ips = r["ips"].as_array().context("ips")?;
    ensure!(ips.len() == 1, "{version}: ips {ips:?}");
    let ip = &ips[0];
    ensure!(
        ip["address"] == format!("{}/24", pod.ip) && ip["gateway"] == ROUTER.to_string(),
        "{version}: ip {ip}"
    );
    ensure!(ip["interface"] == 1, "{version}: ips[0].interface {ip}");
    let wants_version = version.starts_with("0.");
    ensure!(
        (ip.get("version") == Some(&json!("4"))) == wants_version,
        "{version}: ips[0].version must be {} ({ip})",
        if wants_version { "\"4\"" } else { "absent" }
    );
    let routes = r["routes"].as_array().context("routes")?;
    for want in [
        json!({"dst": "0.0.0.0/0", "gw": ROUTER.to_string()}),
        json!({"dst": "169.254.1.1/32"}),
    ] {
        ensure!(
            routes.contains(&want),
            "{version}: routes {routes:?} lack {want}"
        );
    }
    ensure!(r["dns"].is_object(), "{version}: dns {}", r["dns"]);
    // What the result says is what the pod has and what dnsmasq leased.
    let addr = pod.ns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?;
    ensure!(
        addr.contains(&format!("{}/24", pod.ip)),
        "{version}: pod eth0 {addr}"
    );
    let lease = lab.lan.wait_for_lease(&pod.mac, Duration::from_secs(5))?;
    ensure!(
        lease.ip == pod.ip,
        "{version}: dnsmasq leased {} to {}, the result says {}",
        lease.ip,
        pod.mac,
        pod.ip
    );
    Ok(())
}

#[test]
fn every_verb_in_every_version() -> Result<()> {
    let lab = lab()?;
    // VERSION needs neither stdin nor the agent.
    let v = lanlink(&lab.node, &[("CNI_COMMAND".into(), "VERSION".into())], b"")?.ok()?;
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(v["supportedVersions"], json!(VERSIONS));

    for version in VERSIONS {
        let conf = netconf(&lab, version);
        let pod = add(&lab, &format!("v{}", version.replace('.', "")), &conf)?;
        check_add_result(&lab, &pod, version)?;
        let ns = Some(pod.ns.path());

        // CHECK (0.4.0+), with the ADD result as prevResult.
        let chk = verb(
            &lab,
            "CHECK",
            &pod.id,
            ns,
            &with(conf.clone(), "prevResult", pod.result.clone()),
        )?;
        if version < "0.4.0" {
            chk.error(1, "does not allow CHECK")?;
        } else {
            chk.ok_silent()
                .with_context(|| format!("{version} CHECK; agent log:\n{}", lab.agent.log()))?;
        }

        // STATUS and GC (1.1.0).
        let status = verb(&lab, "STATUS", &pod.id, None, &conf)?;
        let valid = json!([{"containerID": pod.id, "ifname": "eth0"}]);
        let gc = verb(
            &lab,
            "GC",
            &pod.id,
            None,
            &with(conf.clone(), "cni.dev/valid-attachments", valid),
        )?;
        if version == "1.1.0" {
            status.ok_silent()?;
            gc.ok_silent()?;
            ensure!(
                host_veths(&lab.node)?.contains(&pod.host_veth),
                "GC removed a valid attachment"
            );
        } else {
            status.error(1, "does not allow STATUS")?;
            gc.error(1, "does not allow GC")?;
        }

        // DEL removes everything; a second DEL succeeds too.
        verb(&lab, "DEL", &pod.id, ns, &conf)?.ok_silent()?;
        assert_gone(&lab, &pod)?;
        verb(&lab, "DEL", &pod.id, ns, &conf)?
            .ok_silent()
            .context("a second DEL must succeed")?;
    }
    ensure!(map_entries(&lab.agent, "EP_BY_IF")? == 0);
    ensure!(host_veths(&lab.node)?.is_empty());
    Ok(())
}

#[test]
fn input_errors_have_spec_codes_and_unknown_keys_are_accepted() -> Result<()> {
    let lab = lab()?;
    let pod_ns = lab.node.pod_netns("inputs")?;
    let ns = Some(pod_ns.path());
    let conf = netconf(&lab, "1.0.0");
    let id = format!("{}-x", pod_ns.name());

    // Malformed JSON: 6, for every verb that reads stdin.
    for command in ["ADD", "DEL", "CHECK", "STATUS", "GC"] {
        let env = runtime_env(command, &id, ns);
        lanlink(&lab.node, &env, b"{\"cniVersion\": \"1.0.0\", \"name\": ")?
            .error(6, "invalid netconf JSON")
            .with_context(|| format!("{command} with truncated JSON"))?;
        lanlink(&lab.node, &env, b"[1, 2]")?
            .error(6, "expected an object")
            .with_context(|| format!("{command} with an array"))?;
    }

    // Missing or bad environment: 4, naming the variable.
    for (command, var) in [
        ("ADD", "CNI_NETNS"),
        ("ADD", "CNI_CONTAINERID"),
        ("ADD", "CNI_IFNAME"),
        ("ADD", "CNI_PATH"),
        ("CHECK", "CNI_NETNS"),
        ("DEL", "CNI_CONTAINERID"),
        ("DEL", "CNI_IFNAME"),
        ("ADD", "CNI_COMMAND"),
    ] {
        let mut env = runtime_env(command, &id, ns);
        env.retain(|(k, _)| k != var);
        lanlink(&lab.node, &env, conf.to_string().as_bytes())?
            .error(4, var)
            .with_context(|| format!("{command} without {var}"))?;
    }
    let mut env = runtime_env("ADD", &id, ns);
    env[0].1 = "ATTACH".into();
    lanlink(&lab.node, &env, conf.to_string().as_bytes())?.error(4, "ATTACH")?;
    let mut env = runtime_env("ADD", "bad/id", ns);
    env.retain(|(k, _)| k != "CNI_ARGS");
    lanlink(&lab.node, &env, conf.to_string().as_bytes())?.error(4, "CNI_CONTAINERID")?;

    // Unsupported or missing cniVersion: 1 (7 when absent: a missing field).
    for bad in ["0.2.0", "0.1.0", "1.2.0", "2.0.0"] {
        verb(
            &lab,
            "ADD",
            &id,
            ns,
            &with(conf.clone(), "cniVersion", json!(bad)),
        )?
        .error(1, bad)
        .with_context(|| format!("cniVersion {bad}"))?;
    }
    let mut no_version = conf.clone();
    no_version.as_object_mut().unwrap().remove("cniVersion");
    verb(&lab, "ADD", &id, ns, &no_version)?.error(7, "cniVersion")?;

    // Invalid known keys: 7, naming the field.
    for (key, value, field) in [
        ("type", json!("bridge"), "type"),
        ("mode", json!("l2"), "mode"),
        (
            "hostRoutes",
            json!(["10.96.0.0/12", "10.0.0.1/33"]),
            "hostRoutes[1]",
        ),
        ("mtu", json!(20), "mtu"),
        ("ipam", json!({"type": "host-local"}), "ipam.type"),
        ("socketPath", json!("relative.sock"), "socketPath"),
    ] {
        let err = verb(&lab, "ADD", &id, ns, &with(conf.clone(), key, value))?
            .error(7, field)
            .with_context(|| format!("bad {key}"))?;
        // Errors are written in the netconf's version.
        ensure!(err["cniVersion"] == "1.0.0", "{err}");
    }
    // None of that reached the agent or the LAN.
    ensure!(
        host_veths(&lab.node)?.is_empty(),
        "a failed ADD left a veth"
    );
    ensure!(
        lab.lan.leases().is_empty(),
        "a failed ADD leased: {:?}",
        lab.lan.leases()
    );

    // Unknown keys (top level, in ipam, runtimeConfig, args, capabilities)
    // and unknown CNI_ARGS are accepted.
    let mut generous = conf.clone();
    generous["someVendorKey"] = json!({"nested": [1, 2, 3]});
    generous["capabilities"] = json!({"portMappings": true});
    generous["runtimeConfig"] = json!({"portMappings": [], "mac": "aa:bb:cc:dd:ee:ff"});
    generous["args"] = json!({"cni": {"labels": [{"key": "app", "value": "web"}]}});
    generous["ipam"] = json!({"type": "lanlink-dhcp", "timeoutMs": 5000, "futureKnob": true});
    let mut env = runtime_env("ADD", &id, ns);
    env.iter_mut()
        .find(|(k, _)| k == "CNI_ARGS")
        .unwrap()
        .1
        .push_str(";K8S_POD_INFRA_CONTAINER_ID=abc;SOMETHING_ELSE=1");
    let result = lanlink(&lab.node, &env, generous.to_string().as_bytes())?
        .ok()
        .with_context(|| format!("ADD with unknown keys; agent log:\n{}", lab.agent.log()))?;
    ensure!(result["ips"][0]["address"].is_string(), "{result}");
    verb(&lab, "DEL", &id, ns, &generous)?.ok_silent()?;
    ensure!(host_veths(&lab.node)?.is_empty());
    Ok(())
}

#[test]
fn del_succeeds_and_cleans_up_when_the_netns_vanished() -> Result<()> {
    let lab = lab()?;
    let conf = netconf(&lab, "1.1.0");
    for (name, pass_netns) in [("gone1", true), ("gone2", false)] {
        let pod = add(&lab, name, &conf)?;
        let netns_path: PathBuf = pod.ns.path().to_owned();
        ensure!(host_veths(&lab.node)?.contains(&pod.host_veth));
        // The runtime deleted the pod's namespace first (and with it the
        // veth pair), then runs DEL: with the dead path, or with none.
        let Pod {
            ns,
            id,
            mac,
            host_veth,
            ..
        } = pod;
        drop(ns);
        ensure!(!netns_path.exists());
        let env = runtime_env("DEL", &id, pass_netns.then_some(netns_path.as_path()));
        lanlink(&lab.node, &env, conf.to_string().as_bytes())?
            .ok_silent()
            .with_context(|| {
                format!(
                    "DEL after the netns vanished; agent log:\n{}",
                    lab.agent.log()
                )
            })?;
        assert_released(&lab, &host_veth, &mac)?;
        lanlink(&lab.node, &env, conf.to_string().as_bytes())?.ok_silent()?;
    }
    ensure!(map_entries(&lab.agent, "EP_BY_IF")? == 0);
    ensure!(map_entries(&lab.agent, "EP_BY_MAC")? == 0);
    let endpoints: Value = serde_json::from_str(&cli(&lab, &["endpoints", "--json"])?)?;
    ensure!(endpoints == json!([]), "agent still lists {endpoints}");
    Ok(())
}

#[test]
fn check_fails_after_the_pods_routes_change() -> Result<()> {
    let lab = lab()?;
    let conf = netconf(&lab, "1.0.0");
    let pod = add(&lab, "checked", &conf)?;
    let ns = Some(pod.ns.path());
    let check_conf = with(conf.clone(), "prevResult", pod.result.clone());
    let check = || verb(&lab, "CHECK", &pod.id, ns, &check_conf);
    check()?.ok_silent()?;

    // Someone removes the default route in the pod: CHECK fails, naming it.
    pod.ns.ip(&["route", "del", "default"])?;
    check()?.error(103, "route 0.0.0.0/0")?;
    // Put back as the agent wrote it: CHECK passes again.
    pod.ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        &ROUTER.to_string(),
        "dev",
        "eth0",
        "src",
        &pod.ip.to_string(),
    ])?;
    check()?.ok_silent()?;

    // The gateway route to 169.254.1.1 too.
    pod.ns
        .ip(&["route", "del", "169.254.1.1/32", "dev", "eth0"])?;
    check()?.error(103, "169.254.1.1")?;
    pod.ns.ip(&[
        "route",
        "add",
        "169.254.1.1/32",
        "dev",
        "eth0",
        "scope",
        "link",
        "src",
        &pod.ip.to_string(),
    ])?;
    check()?.ok_silent()?;

    // A prevResult that does not match what the agent made fails too.
    let mut wrong = pod.result.clone();
    wrong["ips"][0]["address"] = json!("198.18.0.250/24");
    verb(
        &lab,
        "CHECK",
        &pod.id,
        ns,
        &with(conf.clone(), "prevResult", wrong),
    )?
    .error(103, "198.18.0.")?;
    // CHECK needs a prevResult.
    verb(&lab, "CHECK", &pod.id, ns, &conf)?.error(7, "prevResult")?;
    // An unknown attachment fails CHECK.
    verb(&lab, "CHECK", "no-such-container", ns, &check_conf)?.error(103, "no attachment")?;

    // The address removed: CHECK fails.
    pod.ns
        .ip(&["addr", "del", &format!("{}/24", pod.ip), "dev", "eth0"])?;
    check()?.error(103, "lacks")?;

    verb(&lab, "DEL", &pod.id, ns, &conf)?.ok_silent()?;
    assert_gone(&lab, &pod)?;
    Ok(())
}

#[test]
fn verbs_with_the_agent_stopped() -> Result<()> {
    let mut lab = lab()?;
    let conf = netconf(&lab, "1.1.0");
    verb(&lab, "STATUS", "x", None, &conf)?.ok_silent()?;
    let pod = add(&lab, "survivor", &conf)?;
    let ns = Some(pod.ns.path());

    lab.agent.kill(Signal::SIGTERM)?;
    // STATUS: 50, with a hint.
    let err = verb(&lab, "STATUS", "x", None, &conf)?.error(50, "agent not reachable")?;
    ensure!(
        err["details"]
            .as_str()
            .is_some_and(|d| d.contains("lanlinkd")),
        "{err}"
    );
    // The other verbs: 11, so the runtime retries.
    let other = lab.node.pod_netns("later")?;
    verb(&lab, "ADD", "later", Some(other.path()), &conf)?.error(11, "agent not reachable")?;
    verb(&lab, "DEL", &pod.id, ns, &conf)?.error(11, "agent not reachable")?;
    verb(
        &lab,
        "CHECK",
        &pod.id,
        ns,
        &with(conf.clone(), "prevResult", pod.result.clone()),
    )?
    .error(11, "agent not reachable")?;
    verb(
        &lab,
        "GC",
        "x",
        None,
        &with(conf.clone(), "cni.dev/valid-attachments", json!([])),
    )?
    .error(11, "agent not reachable")?;
    // Forwarding goes on without the agent.
    let p = ping(&pod.ns, ROUTER, 3, Duration::from_secs(5))?;
    ensure!(
        p.all_received(),
        "pod → router with the agent down: {}",
        p.summary
    );

    lab.agent.restart()?;
    verb(&lab, "STATUS", "x", None, &conf)?.ok_silent()?;
    verb(&lab, "DEL", &pod.id, ns, &conf)?.ok_silent()?;
    assert_gone(&lab, &pod)?;
    Ok(())
}

#[test]
fn gc_removes_every_attachment_not_listed() -> Result<()> {
    let lab = lab()?;
    let conf = netconf(&lab, "1.1.0");
    let other_conf = with(conf.clone(), "name", json!("other-net"));
    let keep = add(&lab, "keep", &conf)?;
    let stale1 = add(&lab, "stale1", &conf)?;
    let stale2 = add(&lab, "stale2", &conf)?;
    let elsewhere = add(&lab, "elsewhere", &other_conf)?;
    for pod in [&keep, &stale1, &stale2, &elsewhere] {
        lab.lan.wait_for_lease(&pod.mac, Duration::from_secs(5))?;
    }
    ensure!(map_entries(&lab.agent, "EP_BY_IF")? == 4);

    // GC needs the list.
    verb(&lab, "GC", "x", None, &conf)?.error(7, "cni.dev/valid-attachments")?;

    let valid = json!([
        {"containerID": keep.id, "ifname": "eth0"},
        // Listed but on another interface: not valid.
        {"containerID": stale2.id, "ifname": "net1"},
    ]);
    verb(
        &lab,
        "GC",
        "x",
        None,
        &with(conf.clone(), "cni.dev/valid-attachments", valid),
    )?
    .ok_silent()
    .with_context(|| format!("GC; agent log:\n{}", lab.agent.log()))?;
    assert_gone(&lab, &stale1)?;
    assert_gone(&lab, &stale2)?;
    // The valid one and the other network's are untouched, and still work.
    let veths = host_veths(&lab.node)?;
    ensure!(
        veths.contains(&keep.host_veth) && veths.contains(&elsewhere.host_veth) && veths.len() == 2,
        "veths after GC: {veths:?}"
    );
    ensure!(map_entries(&lab.agent, "EP_BY_IF")? == 2);
    ensure!(map_entries(&lab.agent, "EP_BY_MAC")? == 2);
    let leased: Vec<String> = lab.lan.leases().into_iter().map(|l| l.mac).collect();
    ensure!(
        leased.contains(&keep.mac) && leased.contains(&elsewhere.mac),
        "leases after GC: {leased:?}"
    );
    let p = ping(&keep.ns, ROUTER, 3, Duration::from_secs(5))?;
    ensure!(p.all_received(), "kept pod → router: {}", p.summary);

    // DEL after GC succeeds (nothing left to do).
    verb(&lab, "DEL", &stale1.id, Some(stale1.ns.path()), &conf)?.ok_silent()?;
    // An empty list removes the rest of this network, not the other one's.
    verb(
        &lab,
        "GC",
        "x",
        None,
        &with(conf.clone(), "cni.dev/valid-attachments", json!([])),
    )?
    .ok_silent()?;
    assert_gone(&lab, &keep)?;
    ensure!(host_veths(&lab.node)? == std::slice::from_ref(&elsewhere.host_veth));
    verb(
        &lab,
        "DEL",
        &elsewhere.id,
        Some(elsewhere.ns.path()),
        &other_conf,
    )?
    .ok_silent()?;
    assert_gone(&lab, &elsewhere)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Chaining, as libcni runs a conflist.

/// The netconf libcni gives plugin `i` of a conflist: the plugin's own
/// object plus the list's `name` and `cniVersion`, and `prevResult` when
/// there is one.
fn plugin_conf(list: &Value, i: usize, prev: Option<&Value>) -> Value {
    let mut conf = list["plugins"][i].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    conf
}

fn plugin_path(list: &Value, i: usize) -> PathBuf {
    match list["plugins"][i]["type"].as_str() {
        Some("lanlink") => bin_dir().join(lanlink_lab::CNI_BIN),
        Some(other) => Path::new("/usr/lib/cni").join(other),
        None => PathBuf::from("/nonexistent"),
    }
}

/// ADD through every plugin in order, each getting the previous result.
fn list_add(lab: &Lab, list: &Value, id: &str, ns: &Path) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for i in 0..list["plugins"].as_array().map_or(0, Vec::len) {
        let conf = plugin_conf(list, i, prev.as_ref());
        let out = exec_plugin(
            &lab.node,
            &plugin_path(list, i),
            &runtime_env("ADD", id, Some(ns)),
            conf.to_string().as_bytes(),
        )?;
        prev = Some(
            out.ok()
                .with_context(|| format!("ADD plugin {i}; agent log:\n{}", lab.agent.log()))?,
        );
    }
    prev.context("empty conflist")
}

/// CHECK (or DEL, in reverse) through every plugin with the cached result.
fn list_run(
    lab: &Lab,
    list: &Value,
    command: &str,
    id: &str,
    ns: &Path,
    cached: &Value,
) -> Result<()> {
    let n = list["plugins"].as_array().map_or(0, Vec::len);
    let order: Vec<usize> = if command == "DEL" {
        (0..n).rev().collect()
    } else {
        (0..n).collect()
    };
    for i in order {
        let conf = plugin_conf(list, i, Some(cached));
        exec_plugin(
            &lab.node,
            &plugin_path(list, i),
            &runtime_env(command, id, Some(ns)),
            conf.to_string().as_bytes(),
        )?
        .ok_silent()
        .with_context(|| format!("{command} plugin {i} ({})", list["plugins"][i]["type"]))?;
    }
    Ok(())
}

#[test]
fn chained_with_the_tuning_plugin() -> Result<()> {
    let lab = lab()?;
    ensure!(
        Path::new(TUNING).is_file(),
        "{TUNING} is missing (containernetworking-plugins)"
    );
    let data_dir = lanlink_lab::cleanup::LabDir::new("tuning")?;
    const SYSCTL: &str = "net.ipv4.conf.eth0.arp_notify";
    // tuning (1.1.1) speaks up to 1.0.0, so the list is 1.0.0.
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "lanlink-lab",
        "plugins": [
            {
                "type": "lanlink",
                "uplink": "eth0",
                "socketPath": lab.agent.socket(),
            },
            {
                "type": "tuning",
                "sysctl": {SYSCTL: "1"},
                "dataDir": data_dir.path(),
            }
        ]
    });
    let ns = lab.node.pod_netns("tuned")?;
    let id = format!("{}-tuned", ns.name());
    let result = list_add(&lab, &list, &id, ns.path())?;
    // The sysctl is set in the pod, on lanlink's interface.
    ensure!(ns.sysctl_get(SYSCTL)? == "1", "tuning did not set {SYSCTL}");
    // The final result is lanlink's, passed through tuning.
    ensure!(result["cniVersion"] == "1.0.0", "{result}");
    let mac = result["interfaces"][1]["mac"]
        .as_str()
        .context("no pod interface in the final result")?
        .to_owned();
    ensure!(ns.mac("eth0")? == mac);
    let address = result["ips"][0]["address"].as_str().context("no address")?;
    let lease = lab.lan.wait_for_lease(&mac, Duration::from_secs(5))?;
    ensure!(
        address == format!("{}/24", lease.ip),
        "{address} vs {lease:?}"
    );

    // CHECK through the list passes, and fails when the sysctl drifts.
    list_run(&lab, &list, "CHECK", &id, ns.path(), &result)?;
    ns.sysctl(SYSCTL, "0")?;
    ensure!(
        list_run(&lab, &list, "CHECK", &id, ns.path(), &result).is_err(),
        "CHECK passed with {SYSCTL} changed behind tuning's back"
    );
    ns.sysctl(SYSCTL, "1")?;
    list_run(&lab, &list, "CHECK", &id, ns.path(), &result)?;

    // DEL in reverse order: tuning, then lanlink.
    list_run(&lab, &list, "DEL", &id, ns.path(), &result)?;
    ensure!(host_veths(&lab.node)?.is_empty(), "veth left after DEL");
    ensure!(map_entries(&lab.agent, "EP_BY_IF")? == 0);
    lab.lan.wait_for_no_lease(&mac, Duration::from_secs(5))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The operator's side: metrics, CLI, logs.

/// One sample of a scrape.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape: family types and samples.
#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the sample `name` whose labels include `labels`; the sum
    /// over every match.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }
}

fn valid_name(name: &str, colons: bool) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

/// Parses `name{k="v",...} value` (the exposition format's sample line).
fn parse_sample(line: &str) -> Result<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => bail!("no value"),
    };
    ensure!(valid_name(name, true), "bad metric name {name:?}");
    let mut labels = BTreeMap::new();
    let mut rest = rest;
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            // key
            let start = chars
                .peek()
                .map(|(i, _)| *i)
                .context("unterminated labels")?;
            if body[start..].starts_with('}') {
                end = start + 1;
                break;
            }
            let eq = body[start..].find('=').context("label without =")? + start;
            let key = &body[start..eq];
            ensure!(valid_name(key, false), "bad label name {key:?}");
            ensure!(body[eq + 1..].starts_with('"'), "unquoted label value");
            while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next().context("unterminated label value")? {
                    (_, '\\') => match chars.next().context("dangling escape")?.1 {
                        'n' => value.push('\n'),
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        c => bail!("bad escape \\{c}"),
                    },
                    (_, '"') => break,
                    (_, '\n') => bail!("newline in a label value"),
                    (_, c) => value.push(c),
                }
            }
            ensure!(
                labels.insert(key.to_owned(), value).is_none(),
                "label {key} twice"
            );
            match chars.next().context("unterminated labels")? {
                (_, ',') => {}
                (i, '}') => {
                    end = i + 1;
                    break;
                }
                (_, c) => bail!("unexpected {c:?} after a label"),
            }
        }
        rest = &body[end..];
    }
    let mut fields = rest
        .strip_prefix(' ')
        .context("no space before the value")?
        .split(' ');
    let value = match fields.next().context("no value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().with_context(|| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<f64>()
            .with_context(|| format!("bad timestamp {ts:?}"))?;
    }
    ensure!(fields.next().is_none(), "trailing fields (exemplars?)");
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses an OpenMetrics text exposition strictly: `# TYPE` before a
/// family's samples, samples named after their family with the suffixes its
/// type allows, families not interleaved, no duplicate series, counters
/// non-negative, histogram buckets cumulative up to `+Inf` = `_count`, and
/// `# EOF` last.
fn parse_openmetrics(text: &str) -> Result<Scrape> {
    let mut scrape = Scrape::default();
    let mut current: Option<String> = None;
    let mut done: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut lines = text.lines().enumerate().peekable();
    ensure!(
        text.ends_with("# EOF\n"),
        "the exposition does not end with # EOF"
    );
    while let Some((n, line)) = lines.next() {
        let at = || format!("line {}: {line:?}", n + 1);
        if line == "# EOF" {
            ensure!(lines.peek().is_none(), "{}: text after # EOF", at());
            break;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            let family = parts.next().with_context(at)?.to_owned();
            let arg = parts.next().unwrap_or_default();
            ensure!(valid_name(&family, true), "{}: bad family name", at());
            if current.as_deref() != Some(family.as_str()) {
                ensure!(
                    !done.contains(&family),
                    "{}: family {family} interleaved",
                    at()
                );
                if let Some(prev) = current.replace(family.clone()) {
                    done.push(prev);
                }
            }
            match kind {
                "TYPE" => {
                    ensure!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "unknown",
                            "stateset",
                            "summary",
                            "gaugehistogram"
                        ]
                        .contains(&arg),
                        "{}: unknown type",
                        at()
                    );
                    ensure!(
                        scrape.types.insert(family, arg.to_owned()).is_none(),
                        "{}: second TYPE",
                        at()
                    );
                }
                "HELP" | "UNIT" => {}
                _ => bail!("{}: unknown descriptor", at()),
            }
            continue;
        }
        ensure!(!line.starts_with('#'), "{}: stray comment", at());
        let sample = parse_sample(line).with_context(at)?;
        let family = current
            .clone()
            .with_context(|| format!("{}: sample before TYPE", at()))?;
        let kind = scrape
            .types
            .get(&family)
            .with_context(|| format!("{}: no TYPE for {family}", at()))?;
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        ensure!(
            suffixes
                .iter()
                .any(|s| sample.name == format!("{family}{s}")),
            "{}: {} does not belong to {kind} family {family}",
            at(),
            sample.name
        );
        if kind == "counter" && sample.name.ends_with("_total") {
            ensure!(sample.value >= 0.0, "{}: negative counter", at());
        }
        let key = format!("{}{:?}", sample.name, sample.labels);
        ensure!(seen.insert(key), "{}: duplicate series", at());
        scrape.samples.push(sample);
    }
    // Histograms: cumulative buckets ending in +Inf == _count.
    for (family, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in scrape
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").context("bucket without le")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            series
                .entry(format!("{labels:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (labels, buckets) in series {
            ensure!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family}{labels}: buckets not cumulative: {buckets:?}"
            );
            let last = buckets.last().context("no buckets")?;
            ensure!(last.0.is_infinite(), "{family}{labels}: no +Inf bucket");
            let count = scrape
                .samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count") && format!("{:?}", s.labels) == labels
                })
                .with_context(|| format!("{family}{labels}: no _count"))?;
            ensure!(
                count.value == last.1,
                "{family}{labels}: +Inf bucket != _count"
            );
        }
    }
    Ok(scrape)
}

/// `curl --unix-socket <socket> http://localhost/metrics`, checked for its
/// status and content type, then parsed.
fn scrape(agent: &Agent) -> Result<Scrape> {
    let out = cmd::run_ok(
        Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10", "--unix-socket"])
            .arg(agent.socket())
            .arg("http://localhost/metrics"),
        Duration::from_secs(15),
    )?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .context("no HTTP header in curl's output")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    ensure!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    parse_openmetrics(body).with_context(|| format!("invalid exposition:\n{body}"))
}

/// `lanlinkd <args> --socket … --pin-dir …` in the node's namespace; stdout
/// on success.
fn cli(lab: &Lab, args: &[&str]) -> Result<String> {
    let out = cli_raw(lab, args)?;
    ensure!(
        out.status.success(),
        "lanlinkd {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cli_raw(lab: &Lab, args: &[&str]) -> Result<std::process::Output> {
    let mut c = lab.node.ns().command(&[]);
    c.arg(bin_dir().join(lanlink_lab::AGENT_BIN))
        .args(args)
        .arg("--socket")
        .arg(lab.agent.socket())
        .arg("--pin-dir")
        .arg(lab.agent.pin_dir());
    cmd::run(&mut c, Duration::from_secs(20))
}

#[test]
fn openmetrics_parser_is_strict() {
    let good = "# HELP a_total x\n# TYPE a counter\na_total{k=\"v\\\"q\"} 3\n\
        # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n# EOF\n";
    let s = parse_openmetrics(good).unwrap();
    assert_eq!(s.sum("a_total", &[("k", "v\"q")]), 3.0);
    for bad in [
        "a_total 1\n# EOF\n",                                                // no TYPE
        "# TYPE a counter\na 1\n# EOF\n", // counter without _total
        "# TYPE a counter\na_total 1\n",  // no EOF
        "# TYPE a gauge\na{k=v} 1\n# EOF\n", // unquoted
        "# TYPE a gauge\na 1\na 2\n# EOF\n", // duplicate
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n# EOF\n", // count
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\n# EOF\n", // interleaved
    ] {
        assert!(parse_openmetrics(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn metrics_are_valid_and_change_as_traffic_flows() -> Result<()> {
    let lab = lab_with(AgentOptions {
        extra_args: vec![
            "--metrics-addr".into(),
            "127.0.0.1:9658".into(),
            "--log-format".into(),
            "json".into(),
        ],
        env: vec![("LANLINK_LOG".into(), "debug".into())],
        ..AgentOptions::default()
    })?;
    let conf = netconf(&lab, "1.1.0");
    let pod = add(&lab, "metered", &conf)?;

    let before = scrape(&lab.agent)?;
    for (family, kind) in [
        ("lanlink_dataplane_packets", "counter"),
        ("lanlink_dataplane_bytes", "counter"),
        ("lanlink_dhcp_messages", "counter"),
        ("lanlink_dhcp_lease_events", "counter"),
        ("lanlink_dhcp_errors", "counter"),
        ("lanlink_endpoints", "gauge"),
        ("lanlink_endpoint_info", "gauge"),
        ("lanlink_endpoint_sent_packets", "counter"),
        ("lanlink_lease_info", "gauge"),
        ("lanlink_lease_expiry_timestamp_seconds", "gauge"),
        ("lanlink_api_request_duration_seconds", "histogram"),
    ] {
        ensure!(
            before.types.get(family).map(String::as_str) == Some(kind),
            "{family} is not a {kind}: {:?}",
            before.types.get(family)
        );
    }
    ensure!(before.sum("lanlink_endpoints", &[]) == 1.0);
    let who = [("container_id", pod.id.as_str()), ("ifname", "eth0")];
    ensure!(before.has(
        "lanlink_endpoint_info",
        &[("mac", &pod.mac), ("pod", &pod.id)]
    ));
    ensure!(before.has("lanlink_lease_info", &[("state", "bound"), who[0], who[1]]));
    // The ADD's DHCP exchange, and the ADD itself in the latency histogram.
    let dhcp = |s: &Scrape, direction: &str, kind: &str| {
        s.sum(
            "lanlink_dhcp_messages_total",
            &[("direction", direction), ("type", kind)],
        )
    };
    ensure!(dhcp(&before, "sent", "discover") >= 1.0);
    ensure!(dhcp(&before, "received", "ack") >= 1.0);
    ensure!(before.sum("lanlink_dhcp_lease_events_total", &[("event", "acquired")]) == 1.0);
    ensure!(
        before.sum(
            "lanlink_api_request_duration_seconds_count",
            &[
                ("route", "/v1/cni/add"),
                ("method", "POST"),
                ("status", "200")
            ]
        ) == 1.0
    );
    // Every verdict and drop reason is there, drops labelled as such.
    ensure!(before.has(
        "lanlink_dataplane_packets_total",
        &[("verdict", "drop_spoof_ip"), ("drop", "true")]
    ));

    // Traffic: 10 pings to the router and their replies.
    let p = ping(&pod.ns, ROUTER, 10, Duration::from_secs(10))?;
    ensure!(p.all_received(), "{}", p.summary);
    let after = scrape(&lab.agent)?;
    let grew =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    let uplink = grew(
        "lanlink_dataplane_packets_total",
        &[("verdict", "redirect_uplink")],
    );
    let peer = grew(
        "lanlink_dataplane_packets_total",
        &[("verdict", "redirect_peer")],
    );
    ensure!(uplink >= 10.0, "redirect_uplink grew by {uplink}");
    ensure!(peer >= 10.0, "redirect_peer grew by {peer}");
    ensure!(
        grew(
            "lanlink_dataplane_bytes_total",
            &[("verdict", "redirect_uplink")]
        ) >= 10.0 * 98.0,
        "redirect_uplink bytes"
    );
    let sent = grew("lanlink_endpoint_sent_packets_total", &who);
    ensure!(sent >= 10.0, "the pod's sent packets grew by {sent}");
    ensure!(
        grew(
            "lanlink_api_request_duration_seconds_count",
            &[("route", "/metrics")]
        ) >= 1.0
    );

    // The TCP listener serves the same, and only /metrics.
    let tcp = lab.node.ns().run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "http://127.0.0.1:9658/metrics",
    ])?;
    let tcp = parse_openmetrics(&tcp)?;
    ensure!(tcp.has("lanlink_endpoint_info", &[("mac", &pod.mac)]));
    let status = lab.node.ns().run_ok(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        "http://127.0.0.1:9658/v1/status",
    ])?;
    ensure!(
        status == "404",
        "the CNI API must not be served over TCP: {status}"
    );

    // Structured logs: JSON lines, debug level from LANLINK_LOG.
    let log = lab.agent.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON log line: {l}")))
        .collect::<Result<_>>()?;
    ensure!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["fields"].is_object())
    );
    ensure!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "LANLINK_LOG=debug logged nothing at debug"
    );

    verb(&lab, "DEL", &pod.id, Some(pod.ns.path()), &conf)?.ok_silent()?;
    let gone = scrape(&lab.agent)?;
    ensure!(gone.sum("lanlink_endpoints", &[]) == 0.0);
    ensure!(!gone.has("lanlink_lease_info", &[]));
    ensure!(dhcp(&gone, "sent", "release") == 1.0);
    ensure!(gone.sum("lanlink_dhcp_lease_events_total", &[("event", "released")]) == 1.0);
    Ok(())
}

#[test]
fn cli_tables_json_and_pinned_maps_with_the_agent_down() -> Result<()> {
    let mut lab = lab_with(AgentOptions {
        extra_args: vec!["--log".into(), "warn".into()],
        ..AgentOptions::default()
    })?;
    let conf = netconf(&lab, "1.1.0");
    let pod = add(&lab, "listed", &conf)?;
    // A flow through the host stack (node → pod), which to-pod learns.
    let p = ping(lab.node.ns(), pod.ip, 3, Duration::from_secs(5))?;
    ensure!(p.all_received(), "node → pod: {}", p.summary);

    // Every command: a table with a header, and JSON.
    let status = cli(&lab, &["status"])?;
    eprintln!("{status}");
    ensure!(
        status.starts_with("FIELD") && status.contains("ready"),
        "{status}"
    );
    let status: Value = serde_json::from_str(&cli(&lab, &["status", "--json"])?)?;
    ensure!(
        status["ready"] == true && status["endpoints"] == 1,
        "{status}"
    );

    let table = cli(&lab, &["endpoints"])?;

    eprintln!("{table}");
    ensure!(
        table.starts_with("CONTAINER")
            && table.contains(&pod.mac)
            && table.contains(&pod.host_veth),
        "{table}"
    );
    let eps: Value = serde_json::from_str(&cli(&lab, &["endpoints", "--json"])?)?;
    ensure!(
        eps[0]["mac"] == pod.mac && eps[0]["containerId"] == pod.id,
        "{eps}"
    );

    let table = cli(&lab, &["leases"])?;

    eprintln!("{table}");
    ensure!(
        table.starts_with("ADDRESS") && table.contains(&pod.ip.to_string()),
        "{table}"
    );
    let leases: Value = serde_json::from_str(&cli(&lab, &["leases", "--json"])?)?;
    ensure!(
        leases[0]["state"] == "bound" && leases[0]["mac"] == pod.mac,
        "{leases}"
    );

    let table = cli(&lab, &["flows"])?;

    eprintln!("{table}");
    ensure!(table.starts_with("PROTO"), "{table}");
    let flows: Value = serde_json::from_str(&cli(&lab, &["flows", "--json"])?)?;
    let flow = flows
        .as_array()
        .and_then(|f| f.iter().find(|f| f["pod"] == pod.ip.to_string()))
        .with_context(|| format!("no flow of the pod in {flows}"))?;
    ensure!(
        flow["proto"] == "icmp"
            && flow["peer"] == NODE_IP.to_string()
            && flow["hostVeth"] == pod.host_veth,
        "{flow}"
    );
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with("icmp") && l.contains(&pod.ip.to_string())),
        "{table}"
    );

    let table = cli(&lab, &["stats"])?;

    eprintln!("{table}");
    ensure!(
        table.starts_with("VERDICT") && table.contains("redirect_uplink"),
        "{table}"
    );
    let stats: Value = serde_json::from_str(&cli(&lab, &["stats", "--json"])?)?;
    let packets = |stats: &Value, verdict: &str| {
        stats
            .as_array()
            .and_then(|s| s.iter().find(|r| r["verdict"] == verdict))
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or(0)
    };
    ensure!(packets(&stats, "flow_learnt") >= 1, "{stats}");

    // `--log warn`: the agent logged nothing at info.
    ensure!(
        !lab.agent.log().contains(" INFO "),
        "--log warn still logs info:\n{}",
        lab.agent.log()
    );

    // The agent stops; the pinned maps still answer.
    lab.agent.kill(Signal::SIGTERM)?;
    let p = ping(&pod.ns, ROUTER, 3, Duration::from_secs(5))?;
    ensure!(p.all_received(), "{}", p.summary);
    let eps: Value = serde_json::from_str(&cli(&lab, &["endpoints", "--json"])?)?;
    ensure!(
        eps[0]["mac"] == pod.mac
            && eps[0]["address"] == pod.ip.to_string()
            && eps[0]["hostVeth"] == pod.host_veth
            && eps[0]["flags"] == json!(["agent-dhcp"]),
        "{eps}"
    );
    let table = cli(&lab, &["endpoints"])?;
    eprintln!("{table}");
    ensure!(
        table.starts_with("IFINDEX") && table.contains(&pod.mac),
        "{table}"
    );
    let flows: Value = serde_json::from_str(&cli(&lab, &["flows", "--json"])?)?;
    ensure!(
        flows
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["pod"] == pod.ip.to_string())),
        "{flows}"
    );
    let down_stats: Value = serde_json::from_str(&cli(&lab, &["stats", "--json"])?)?;
    ensure!(
        packets(&down_stats, "redirect_uplink") >= packets(&stats, "redirect_uplink") + 3,
        "the pinned counters did not count the pings made while the agent was down"
    );
    let status = cli_raw(&lab, &["status", "--json"])?;
    ensure!(
        !status.status.success(),
        "status must fail with the agent down"
    );
    let status: Value = serde_json::from_slice(&status.stdout)?;
    ensure!(
        status["agentReachable"] == false && status["pinnedEndpoints"] == 1,
        "{status}"
    );
    ensure!(!cli_raw(&lab, &["leases"])?.status.success());

    lab.agent.restart()?;
    verb(&lab, "DEL", &pod.id, Some(pod.ns.path()), &conf)?.ok_silent()?;
    assert_gone(&lab, &pod)?;
    Ok(())
}
