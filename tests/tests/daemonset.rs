//! The DaemonSet as it runs (issue 14, item 4): the image `cargo xtask
//! image` builds, run on a lab node the way deploy/lanlink.yaml says — the
//! containers' command, args, env, `privileged`, `hostNetwork` and hostPath
//! volumes are read from the manifest itself, so the two cannot drift. The
//! init container installs the plugin and conflist into the node's CNI
//! dirs, the agent container serves pods added through the installed
//! plugin, and a rolling update (SIGTERM through `podman stop`, a new
//! container) loses no packet and no lease.
//!
//! The node's file system is a lab temp dir (`DsNode::host_path`), except
//! two host paths the lab shares on purpose: `/run/netns`, where the lab's
//! pod namespaces are, and `/sys/fs/bpf`, the host's bpffs, with a
//! lab-unique pin dir (`LANLINK_PIN_DIR`) so `/sys/fs/bpf/lanlink` of the
//! host is never touched. A bpffs of the container's own (the agent mounts
//! one when it finds none) would die with the container, and the next agent
//! could not re-adopt the pins: that is what the rolling update checks.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use lanlink_lab::cleanup::LabDir;
use lanlink_lab::cni::{CniCall, cni};
use lanlink_lab::daemonset::{ContainerRun, DsNode};
use lanlink_lab::lan::{Lan, LanOptions};
use lanlink_lab::netns::NetNs;
use lanlink_lab::node::{Node, OneNode};
use lanlink_lab::ping::BgPing;
use lanlink_lab::pods::{self, SERVICE_CIDR};
use lanlink_lab::wait::wait_until;
use lanlink_lab::{ROUTER, cmd, workspace_root};
use serde::Deserialize as _;
use serde_json::Value;

/// The manifest the scenario follows.
const MANIFEST: &str = "deploy/lanlink.yaml";

/// The agent's grace period in `podman stop` when the manifest gives none.
const DEFAULT_GRACE_SECS: u32 = 30;

/// The manifest's ConfigMap and the DaemonSet's pod spec, as JSON.
struct Manifest {
    config_map: Value,
    pod_spec: Value,
}

impl Manifest {
    fn load() -> Result<Self> {
        let path = workspace_root().join(MANIFEST);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let mut docs = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).with_context(|| format!("parse {}", path.display()))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
        let find = |kind: &str| {
            docs.iter()
                .find(|d| d["kind"] == kind)
                .cloned()
                .with_context(|| format!("{MANIFEST}: no {kind}"))
        };
        let config_map = find("ConfigMap")?;
        let pod_spec = find("DaemonSet")?["spec"]["template"]["spec"].clone();
        ensure!(
            pod_spec.is_object(),
            "{MANIFEST}: DaemonSet without a pod spec"
        );
        Ok(Self {
            config_map,
            pod_spec,
        })
    }

    /// The one container of `list` (`initContainers`, `containers`) named
    /// `name`.
    fn container(&self, list: &str, name: &str) -> Result<&Value> {
        self.pod_spec[list]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["name"] == name))
            .with_context(|| format!("{MANIFEST}: no {list} entry named {name}"))
    }

    fn volume(&self, name: &str) -> Result<&Value> {
        self.pod_spec["volumes"]
            .as_array()
            .and_then(|l| l.iter().find(|v| v["name"] == name))
            .with_context(|| format!("{MANIFEST}: no volume named {name}"))
    }
}

/// The lab's stand-in for the node: its root file system and its pin dir,
/// and the ConfigMap as the node's kubelet would project it.
struct Kubelet<'a> {
    manifest: &'a Manifest,
    ds: &'a DsNode,
    /// The ConfigMap's data after the per-node overrides.
    config: BTreeMap<String, String>,
}

impl Kubelet<'_> {
    /// What `container` of the manifest runs, resolved on this node.
    fn resolve(&self, container: &Value) -> Result<ContainerRun> {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut env = Vec::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().context("env entry without a name")?;
            let value = if let Some(v) = e["value"].as_str() {
                v.to_owned()
            } else if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
                ensure!(
                    r.get("name") == Some(&self.manifest.config_map["metadata"]["name"]),
                    "{name} refers to another ConfigMap: {e}"
                );
                let key = r.get("key").and_then(Value::as_str).context("key")?;
                self.config
                    .get(key)
                    .with_context(|| format!("the ConfigMap has no {key}"))?
                    .clone()
            } else {
                bail!("env {name}: neither value nor configMapKeyRef: {e}");
            };
            env.push((name.to_owned(), value));
        }
        let mut mounts = Vec::new();
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().context("volumeMount without name")?;
            let path = m["mountPath"].as_str().context("mountPath")?;
            let volume = self.manifest.volume(name)?;
            let host = if let Some(p) = volume["hostPath"]["path"].as_str() {
                match p {
                    // The host's: see the module docs.
                    "/sys/fs/bpf" | "/run/netns" => PathBuf::from(p),
                    _ => self.ds.host_path(p)?,
                }
            } else if let Some(cm) = volume["configMap"].as_object() {
                ensure!(
                    cm.get("name") == Some(&self.manifest.config_map["metadata"]["name"]),
                    "volume {name} projects another ConfigMap"
                );
                let dir = self.ds.scratch(&format!("configmap-{name}"))?;
                for item in cm
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let key = item["key"].as_str().context("item key")?;
                    let file = item["path"].as_str().context("item path")?;
                    let text = self.config.get(key).with_context(|| format!("no {key}"))?;
                    std::fs::write(dir.join(file), text)?;
                }
                dir
            } else {
                bail!("volume {name}: neither hostPath nor configMap: {volume}");
            };
            let mut opts = Vec::new();
            if m["readOnly"] == true {
                opts.push("ro".to_owned());
            }
            match m["mountPropagation"].as_str() {
                Some("Bidirectional") => opts.push("rshared".to_owned()),
                Some("HostToContainer") => opts.push("rslave".to_owned()),
                Some(other) => bail!("mountPropagation {other} of {name}"),
                None => {}
            }
            mounts.push((host, path.to_owned(), opts));
        }
        Ok(ContainerRun {
            image: container["image"].as_str().context("image")?.to_owned(),
            command: strings(&container["command"]),
            args: strings(&container["args"]),
            env,
            privileged: container["securityContext"]["privileged"] == true,
            host_network: self.manifest.pod_spec["hostNetwork"] == true,
            mounts,
        })
    }

    /// The node path of the host side of container path `path` (the
    /// volume mounted at its longest matching mountPath).
    fn node_path_of(run: &ContainerRun, path: &str) -> Result<PathBuf> {
        let (host, at, _) = run
            .mounts
            .iter()
            .filter(|(_, at, _)| Path::new(path).starts_with(at))
            .max_by_key(|(_, at, _)| at.len())
            .with_context(|| format!("{path} is on no volume of the container"))?;
        let rel = Path::new(path).strip_prefix(at)?;
        Ok(host.join(rel))
    }
}

/// The lanlink entry of a conflist as the runtime hands it to the plugin
/// (the entry plus the list's `name` and `cniVersion`).
fn lanlink_netconf(conflist: &Value) -> Result<Value> {
    let mut plugin = conflist["plugins"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["type"] == "lanlink"))
        .cloned()
        .context("no lanlink plugin in the conflist")?;
    plugin["name"] = conflist["name"].clone();
    plugin["cniVersion"] = conflist["cniVersion"].clone();
    Ok(plugin)
}

/// A pod added through the installed plugin and conflist.
struct DsPod {
    ns: NetNs,
    mac: String,
    ip: std::net::Ipv4Addr,
}

fn add_pod(node: &Node, bin_dir: &Path, netconf: &Value, name: &str) -> Result<DsPod> {
    let ns = node.pod_netns(name)?;
    let id = format!("{}-{name}", ns.name());
    let call = CniCall::new("ADD", &id, Some(ns.path()), netconf.clone())
        .with_args(&format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"))
        .in_netns(node.path());
    let result = cni(bin_dir, &call)?
        .ok()
        .with_context(|| format!("ADD {name} through the installed plugin"))?;
    Ok(DsPod {
        mac: pods::result_mac(&result)?.to_ascii_lowercase(),
        ip: pods::leased_ip(&result)?,
        ns,
    })
}

/// dnsmasq's DHCPDISCOVER lines for `mac`.
fn discovers(lan: &Lan, mac: &str) -> usize {
    lan.dhcp_log()
        .lines()
        .filter(|l| l.contains("DHCPDISCOVER") && l.to_ascii_lowercase().contains(mac))
        .count()
}

/// Waits (≤ 30 s) until the agent's socket accepts a connection, failing
/// early with the container's log if it stops.
fn wait_for_socket(ds: &DsNode, container: &str, socket: &Path) -> Result<()> {
    wait_until(
        Duration::from_secs(30),
        &format!("the agent to serve {}", socket.display()),
        || {
            if UnixStream::connect(socket).is_ok() {
                return Ok(Some(()));
            }
            if !ds.is_running(container) {
                bail!("the agent container stopped: {}", ds.logs(container));
            }
            Ok(None)
        },
    )
    .with_context(|| format!("the agent container's log:\n{}", ds.logs(container)))
}

/// The manifest's readiness probe (`exec`), run in the container.
fn ready(ds: &DsNode, container: &str, agent: &Value) -> Result<String> {
    let probe: Vec<String> =
        serde_json::from_value(agent["readinessProbe"]["exec"]["command"].clone())
            .context("the agent's readinessProbe.exec.command")?;
    let mut args = vec!["exec", container];
    args.extend(probe.iter().map(String::as_str));
    cmd::run_ok(&mut ds.podman(&args), cmd::DEFAULT)
        .with_context(|| format!("readiness probe; log:\n{}", ds.logs(container)))
}

#[test]
fn daemonset_image_installs_serves_and_rolls_without_loss() -> Result<()> {
    lanlink_lab::require_root();
    let manifest = Manifest::load()?;
    let lan = Lan::new(LanOptions::default())?;
    let node = Node::new(&lan, "node", OneNode::NODE_IP)?;
    let ds = DsNode::new(&node)?;

    // The ConfigMap with the values the manifest says to set per cluster
    // or node — and only those: `uplink` is the lab node's eth0, and the
    // conflist's `hostRoutes` the lab's service CIDR (the manifest's
    // 10.96.0.0/12 is outside the lab's 198.18.0.0/15).
    let mut config: BTreeMap<String, String> =
        serde_json::from_value(manifest.config_map["data"].clone())
            .context("the ConfigMap's data")?;
    config.insert("uplink".into(), "eth0".into());
    let conflist_key = config
        .keys()
        .find(|k| k.ends_with(".conflist"))
        .cloned()
        .context("no conflist in the ConfigMap")?;
    let mut conflist: Value = serde_json::from_str(&config[&conflist_key])?;
    for p in conflist["plugins"].as_array_mut().into_iter().flatten() {
        if p["type"] == "lanlink" {
            p["hostRoutes"] = serde_json::json!([SERVICE_CIDR]);
        }
    }
    config.insert(
        conflist_key.clone(),
        serde_json::to_string_pretty(&conflist)?,
    );
    let kubelet = Kubelet {
        manifest: &manifest,
        ds: &ds,
        config,
    };

    let init = kubelet.resolve(manifest.container("initContainers", "install-cni")?)?;
    let agent_spec = manifest.container("containers", "agent")?;
    let mut agent = kubelet.resolve(agent_spec)?;
    // The image as a user gets it: the archive `cargo xtask image` wrote,
    // loaded with the README's own command.
    let archive_dir = workspace_root().join("target/image");
    ensure!(
        archive_dir.join("lanlink.oci.tar").is_file(),
        "{}/lanlink.oci.tar is missing: build it with `cargo xtask image` \
         (`cargo xtask test` builds it before the scenarios)",
        archive_dir.display()
    );
    let load = lanlink_lab::readme::install_command("podman load")?;
    let loaded = lanlink_lab::readme::run_in(&load, &archive_dir, &[], Duration::from_secs(120))?;
    eprintln!("README `{load}`: {}", loaded.trim());
    ensure!(
        loaded.contains(&agent.image),
        "`{load}` loaded {loaded:?}, not the manifest's image {}",
        agent.image
    );
    ensure!(
        ds.image_exists(&agent.image),
        "the image {} is not in podman's storage after `{load}`",
        agent.image
    );
    // Never the host's /sys/fs/bpf/lanlink: a pin dir of this run's own on
    // the same bpffs (the manifest's pin dir must be on the bpffs volume).
    let pin_env = agent
        .env
        .iter_mut()
        .find(|(k, _)| k == "LANLINK_PIN_DIR")
        .context("the agent's env has no LANLINK_PIN_DIR")?;
    ensure!(
        pin_env.1.starts_with("/sys/fs/bpf/"),
        "the manifest's pin dir {} is not on the bpffs volume",
        pin_env.1
    );
    pin_env.1 = ds.pin_dir().display().to_string();

    // 1. install-cni: the plugin and the conflist, complete, in the node's
    // CNI dirs, and nothing else (no temp file left).
    let t = std::time::Instant::now();
    let out = ds.run_to_completion("install-cni", &init, Duration::from_secs(60))?;
    eprintln!(
        "install-cni ({:.1}s): {}",
        t.elapsed().as_secs_f64(),
        out.trim()
    );
    let env_of = |run: &ContainerRun, key: &str| -> Result<String> {
        run.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .with_context(|| format!("install-cni has no {key}"))
    };
    let bin_dir = Kubelet::node_path_of(&init, &env_of(&init, "CNI_BIN_DIR")?)?;
    let conf_dir = Kubelet::node_path_of(&init, &env_of(&init, "CNI_CONF_DIR")?)?;
    let listing = |dir: &Path| -> Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(dir)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        v.sort();
        Ok(v)
    };
    ensure!(
        listing(&bin_dir)? == [lanlink_lab::CNI_BIN],
        "{}: {:?}",
        bin_dir.display(),
        listing(&bin_dir)?
    );
    ensure!(
        listing(&conf_dir)? == [conflist_key.as_str()],
        "{}: {:?}",
        conf_dir.display(),
        listing(&conf_dir)?
    );
    let plugin = bin_dir.join(lanlink_lab::CNI_BIN);
    ensure!(
        std::fs::metadata(&plugin)?.permissions().mode() & 0o777 == 0o755,
        "the installed plugin's mode"
    );
    let image_sum = ds.run_to_completion(
        "sum",
        &ContainerRun {
            image: agent.image.clone(),
            command: vec!["sha256sum".into(), "/usr/local/bin/lanlink".into()],
            ..ContainerRun::default()
        },
        Duration::from_secs(60),
    )?;
    let node_sum = cmd::run_ok(
        std::process::Command::new("sha256sum").arg(&plugin),
        cmd::SHORT,
    )?;
    ensure!(
        image_sum.split_whitespace().next() == node_sum.split_whitespace().next(),
        "the installed plugin differs from the image's: {node_sum} vs {image_sum}"
    );
    let installed: Value = serde_json::from_slice(&std::fs::read(conf_dir.join(&conflist_key))?)
        .context("the installed conflist")?;
    ensure!(
        installed == conflist,
        "installed conflist {installed} is not the ConfigMap's {conflist}"
    );

    // 2. The agent, detached; ready when its socket (in the node's
    // /run/lanlink) answers and the manifest's readiness probe passes.
    let mut netconf = lanlink_netconf(&installed)?;
    let socket_in_container = netconf["socketPath"]
        .as_str()
        .context("the conflist's socketPath")?
        .to_owned();
    // The plugin runs on the node, where the socket is the host side of the
    // agent's volume.
    let socket = Kubelet::node_path_of(&agent, &socket_in_container)?;
    netconf["socketPath"] = socket.display().to_string().into();
    let grace = manifest.pod_spec["terminationGracePeriodSeconds"]
        .as_u64()
        .map_or(DEFAULT_GRACE_SECS, |g| g as u32);

    let t = std::time::Instant::now();
    let first = ds.start("agent", &agent)?;
    wait_for_socket(&ds, &first, &socket)?;
    ready(&ds, &first, agent_spec)?;
    eprintln!("agent container ready in {:.1}s", t.elapsed().as_secs_f64());

    // 3. Pods through the installed plugin: leases from dnsmasq, the router
    // answers.
    let p1 = add_pod(&node, &bin_dir, &netconf, "p1")?;
    let p2 = add_pod(&node, &bin_dir, &netconf, "p2")?;
    for p in [&p1, &p2] {
        let lease = lan.wait_for_lease(&p.mac, Duration::from_secs(5))?;
        ensure!(lease.ip == p.ip, "lease {lease:?} for pod address {}", p.ip);
        let s = lanlink_lab::ping(&p.ns, ROUTER, 3, Duration::from_secs(5))?;
        ensure!(s.all_received(), "{} → router: {}", p.ip, s.summary);
    }

    // 4. Rolling update: SIGTERM (podman stop, the manifest's grace period),
    // a new container from the same image with the same mounts.
    let lease_before = lan.wait_for_lease(&p1.mac, Duration::from_secs(1))?;
    let discovers_before = discovers(&lan, &p1.mac);
    let pings = LabDir::new("ds-ping")?;
    let ping = BgPing::start(&p1.ns, ROUTER, &pings.path().join("p1.log"))?;
    std::thread::sleep(Duration::from_secs(2));
    let t = std::time::Instant::now();
    // As kubelet does: the preStop hook runs in the container, then SIGTERM.
    let pre_stop = pre_stop_command(agent_spec)?;
    let hook = cmd::run_ok(
        &mut ds.podman(
            &[
                &["exec", first.as_str()][..],
                &pre_stop.iter().map(String::as_str).collect::<Vec<_>>(),
            ]
            .concat(),
        ),
        Duration::from_secs(30),
    )
    .context("the manifest's preStop hook")?;
    let old_log = ds.stop(&first, grace)?;
    ensure!(
        old_log.contains("agent stopping; pinned eBPF programs and maps keep forwarding"),
        "the preStop hook's message is not in the agent container's log (hook said {hook:?}):\n{old_log}"
    );
    let second = ds.start("agent", &agent)?;
    wait_for_socket(&ds, &second, &socket)?;
    let status = ready(&ds, &second, agent_spec)?;
    eprintln!(
        "rolling update: stop + start + ready in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let s = ping.finish("p1 → router across the rolling update")?;
    eprintln!("{}", s.summary);
    ensure!(
        s.transmitted == 200 && s.all_received(),
        "p1 → router across the rolling update: {}\nold agent's log:\n{old_log}",
        s.summary
    );
    ensure!(
        lan.wait_for_lease(&p1.mac, Duration::from_secs(1))? == lease_before,
        "p1's lease changed: {:?} → {:?}",
        lease_before,
        lan.leases()
    );
    ensure!(
        discovers(&lan, &p1.mac) == discovers_before,
        "a new DHCPDISCOVER from p1 ({}) after the update:\n{}",
        p1.mac,
        lan.dhcp_log()
    );
    eprintln!("status after the update: {}", status.trim());
    // Re-adopted from the pins on the shared bpffs, not rebuilt.
    ensure!(
        status
            .lines()
            .any(|l| l.starts_with("adopted") && l.trim_end().ends_with("true")),
        "the new agent did not adopt the pinned dataplane: {status}"
    );

    // The new agent serves: a new pod, and the old ones still reach the router.
    let p3 = add_pod(&node, &bin_dir, &netconf, "p3")?;
    for p in [&p1, &p2, &p3] {
        let s = lanlink_lab::ping(&p.ns, ROUTER, 3, Duration::from_secs(5))?;
        ensure!(
            s.all_received(),
            "{} → router after the update: {}",
            p.ip,
            s.summary
        );
    }
    Ok(())
}

/// The agent container's `lifecycle.preStop.exec.command`.
fn pre_stop_command(spec: &Value) -> Result<Vec<String>> {
    spec["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .context("the agent container has no preStop exec hook")?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .context("a non-string preStop argument")
        })
        .collect()
}
