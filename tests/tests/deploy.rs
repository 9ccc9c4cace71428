//! The deployment files under `deploy/`: the manifests parse and carry what
//! a node needs (DaemonSet mounts, privileges, probes, the hook that leaves
//! forwarding running), every netconf in them — the DaemonSet's conflist,
//! the Multus NetworkAttachmentDefinition, the examples — passes the
//! plugin's own parser, the agent flags they use exist, and the install
//! script installs the plugin and conflist atomically and idempotently.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use lanlink_api::Mode;
use lanlink_cni::netconf::NetConf;
use lanlink_lab::{bin_dir, cmd, workspace_root};
use serde::Deserialize as _;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

/// Every document of a YAML file, as JSON values.
fn yaml_docs(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).with_context(|| format!("parse {}", path.display()))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    for d in &docs {
        for field in ["apiVersion", "kind"] {
            ensure!(
                d[field].is_string(),
                "{}: a document lacks {field}",
                path.display()
            );
        }
        ensure!(
            d["metadata"]["name"].is_string(),
            "{}: {} without metadata.name",
            path.display(),
            d["kind"]
        );
    }
    Ok(docs)
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .with_context(|| format!("no {kind}"))
}

fn named<'a>(list: &'a Value, name: &str) -> Result<&'a Value> {
    list.as_array()
        .and_then(|l| l.iter().find(|x| x["name"] == name))
        .with_context(|| format!("nothing named {name} in {list}"))
}

/// Parses each lanlink plugin of a conflist as the runtime hands it over
/// (the plugin object plus the list's `name` and `cniVersion`).
fn lanlink_netconfs(conflist: &Value) -> Result<Vec<NetConf>> {
    ensure!(conflist["name"].is_string(), "conflist without name");
    ensure!(
        conflist["cniVersion"].is_string(),
        "conflist without cniVersion"
    );
    let plugins = conflist["plugins"]
        .as_array()
        .context("conflist without plugins")?;
    ensure!(
        plugins.first().is_some_and(|p| p["type"] == "lanlink"),
        "lanlink must come first (it makes the interface the others tune)"
    );
    let mut out = Vec::new();
    for p in plugins {
        let t = p["type"].as_str().context("plugin without type")?;
        if t != "lanlink" {
            ensure!(
                Path::new("/usr/lib/cni").join(t).is_file(),
                "reference plugin {t} does not exist"
            );
            continue;
        }
        let mut conf = p.clone();
        conf["name"] = conflist["name"].clone();
        conf["cniVersion"] = conflist["cniVersion"].clone();
        out.push(
            NetConf::parse(conf.to_string().as_bytes())
                .with_context(|| format!("lanlink's parser refuses {conf}"))?,
        );
    }
    Ok(out)
}

fn mounts(container: &Value) -> BTreeMap<String, Value> {
    container["volumeMounts"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| {
                    (
                        m["mountPath"].as_str().unwrap_or_default().to_owned(),
                        m.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// `lanlinkd --help`: what flags the manifests may use.
fn agent_help() -> Result<String> {
    let bin = bin_dir().join(lanlink_lab::AGENT_BIN);
    ensure!(
        bin.is_file(),
        "{} missing: cargo xtask build",
        bin.display()
    );
    cmd::run_ok(Command::new(bin).arg("--help"), cmd::SHORT)
}

#[test]
fn daemonset_has_what_a_node_needs() -> Result<()> {
    let docs = yaml_docs(&deploy_dir().join("lanlink.yaml"))?;
    let ds = find(&docs, "DaemonSet")?;
    let cm = find(&docs, "ConfigMap")?;
    ensure!(ds["apiVersion"] == "apps/v1", "{}", ds["apiVersion"]);
    ensure!(cm["apiVersion"] == "v1");
    ensure!(ds["metadata"]["namespace"] == cm["metadata"]["namespace"]);

    // The selector selects the template.
    let selector = ds["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("no selector")?;
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    ensure!(!selector.is_empty());
    for (k, v) in selector {
        ensure!(&labels[k] == v, "template lacks selector label {k}={v}");
    }
    let pod = &ds["spec"]["template"]["spec"];
    ensure!(
        pod["hostNetwork"] == true,
        "the agent needs the node's netns"
    );
    ensure!(
        pod["tolerations"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["operator"] == "Exists")),
        "must run on every node, not-ready ones included"
    );

    // hostPath volumes for everything the node shares with the agent.
    let volumes: BTreeMap<String, &Value> = pod["volumes"]
        .as_array()
        .context("no volumes")?
        .iter()
        .map(|v| (v["name"].as_str().unwrap_or_default().to_owned(), v))
        .collect();
    let host_paths: BTreeMap<String, String> = volumes
        .iter()
        .filter_map(|(n, v)| Some((v["hostPath"]["path"].as_str()?.to_owned(), n.clone())))
        .collect();
    for path in [
        "/sys/fs/bpf",
        "/run/netns",
        "/var/lib/lanlink",
        "/run/lanlink",
        "/opt/cni/bin",
        "/etc/cni/net.d",
    ] {
        ensure!(
            host_paths.contains_key(path),
            "no hostPath volume for {path}"
        );
    }

    // The agent: privileged, runs lanlinkd, mounts what it uses.
    let agent = named(&pod["containers"], "agent")?;
    ensure!(agent["securityContext"]["privileged"] == true);
    ensure!(agent["image"].as_str().is_some_and(|i| !i.is_empty()));
    ensure!(
        agent["command"][0]
            .as_str()
            .is_some_and(|c| c.ends_with("/lanlinkd")),
        "{}",
        agent["command"]
    );
    let m = mounts(agent);
    let volume_of = |path: &str| -> Result<&Value> {
        m.get(path)
            .with_context(|| format!("the agent does not mount {path}"))
    };
    ensure!(volume_of("/sys/fs/bpf")?["mountPropagation"] == "Bidirectional");
    ensure!(volume_of("/run/netns")?["mountPropagation"] == "HostToContainer");
    for (path, host) in [
        ("/sys/fs/bpf", "/sys/fs/bpf"),
        ("/run/netns", "/run/netns"),
        ("/var/lib/lanlink", "/var/lib/lanlink"),
        ("/run/lanlink", "/run/lanlink"),
    ] {
        ensure!(
            volume_of(path)?["name"] == host_paths[host].as_str(),
            "{path} is not the node's {host}"
        );
    }
    for c in pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten()
    {
        for mount in mounts(c).values() {
            let name = mount["name"].as_str().unwrap_or_default();
            ensure!(volumes.contains_key(name), "mount of unknown volume {name}");
        }
    }

    // Its flags and environment exist in this lanlinkd, and agree with the
    // mounts and the conflist.
    let help = agent_help()?;
    let mut metrics_port = None;
    for arg in agent["args"].as_array().context("no args")? {
        let arg = arg.as_str().context("non-string arg")?;
        let flag = arg.split('=').next().unwrap_or_default();
        ensure!(help.contains(flag), "lanlinkd has no {flag}");
        if let Some(addr) = arg.strip_prefix("--metrics-addr=") {
            metrics_port = addr.rsplit(':').next().and_then(|p| p.parse::<u64>().ok());
        }
    }
    let port = named(&agent["ports"], "metrics")?;
    ensure!(
        port["containerPort"].as_u64() == metrics_port,
        "the metrics port differs from --metrics-addr"
    );
    for var in [
        "LANLINK_UPLINK",
        "LANLINK_SOCKET",
        "LANLINK_STATE_DIR",
        "LANLINK_PIN_DIR",
        "LANLINK_LOG",
    ] {
        ensure!(env_value(agent, var).is_some(), "the agent has no {var}");
    }
    for var in agent["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default();
        ensure!(
            !name.starts_with("LANLINK_") || help.contains(&format!("env: {name}")),
            "lanlinkd reads no {name}"
        );
    }
    let uplink = &env_value(agent, "LANLINK_UPLINK").unwrap()["valueFrom"]["configMapKeyRef"];
    ensure!(uplink["name"] == cm["metadata"]["name"]);
    let key = uplink["key"].as_str().context("uplink key")?;
    ensure!(cm["data"][key].is_string(), "the ConfigMap has no {key}");
    let socket = env_value(agent, "LANLINK_SOCKET").unwrap()["value"]
        .as_str()
        .context("socket")?;
    ensure!(Path::new(socket).starts_with("/run/lanlink"));
    for (var, mount) in [
        ("LANLINK_PIN_DIR", "/sys/fs/bpf"),
        ("LANLINK_STATE_DIR", "/var/lib/lanlink"),
    ] {
        let v = env_value(agent, var).unwrap()["value"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            Path::new(v).starts_with(mount),
            "{var}={v} is not on {mount}"
        );
    }

    // Probes ask the agent through a real subcommand.
    for probe in ["readinessProbe", "livenessProbe"] {
        let command = &agent[probe]["exec"]["command"];
        ensure!(
            command[0]
                .as_str()
                .is_some_and(|c| c.ends_with("/lanlinkd"))
                && command[1] == "status",
            "{probe}: {command}"
        );
    }
    // preStop: present, and tears nothing down.
    let pre_stop = agent["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .context("no preStop hook")?
        .iter()
        .map(|a| {
            // A YAML plain scalar with ": " in it is a mapping, which the
            // API server refuses: every argument must be a string.
            a.as_str()
                .with_context(|| format!("preStop argument {a} is not a string"))
        })
        .collect::<Result<Vec<_>>>()?
        .join(" ");
    for destructive in [
        "rm ", "bpftool", "tc ", "ip link", "kill", "umount", "detach",
    ] {
        ensure!(
            !pre_stop.contains(destructive),
            "preStop must leave forwarding running: {pre_stop}"
        );
    }
    ensure!(
        pod["terminationGracePeriodSeconds"]
            .as_u64()
            .is_some_and(|s| s >= 10),
        "the agent needs time to stop cleanly"
    );

    // install-cni: installs the ConfigMap's conflist into the node's dirs.
    let init = named(&pod["initContainers"], "install-cni")?;
    ensure!(
        init["image"] == agent["image"],
        "one image for both containers"
    );
    ensure!(
        init["command"][0]
            .as_str()
            .is_some_and(|c| c.ends_with("/install-cni"))
    );
    let im = mounts(init);
    for (var, host) in [
        ("CNI_BIN_DIR", "/opt/cni/bin"),
        ("CNI_CONF_DIR", "/etc/cni/net.d"),
    ] {
        let dir = env_value(init, var).with_context(|| format!("no {var}"))?["value"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            im.get(dir)
                .is_some_and(|m| m["name"] == host_paths[host].as_str()),
            "{var}={dir} is not the node's {host}"
        );
    }
    let conflist_path =
        env_value(init, "LANLINK_CONFLIST").context("no LANLINK_CONFLIST")?["value"]
            .as_str()
            .unwrap_or_default();
    let (config_mount, config) = im
        .iter()
        .find(|(path, _)| Path::new(conflist_path).starts_with(path))
        .context("LANLINK_CONFLIST is on no mount")?;
    let config_volume = volumes[config["name"].as_str().unwrap_or_default()];
    ensure!(config_volume["configMap"]["name"] == cm["metadata"]["name"]);
    let item = Path::new(conflist_path)
        .strip_prefix(config_mount)?
        .to_str()
        .unwrap_or_default();
    let key = config_volume["configMap"]["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["path"] == item))
        .and_then(|i| i["key"].as_str())
        .with_context(|| format!("no ConfigMap item for {item}"))?;
    let conflist: Value = serde_json::from_str(cm["data"][key].as_str().context("conflist")?)
        .context("the ConfigMap's conflist is not JSON")?;
    ensure!(
        key.ends_with(".conflist"),
        "libcni only loads *.conflist lists"
    );
    let confs = lanlink_netconfs(&conflist)?;
    ensure!(confs.len() == 1);
    ensure!(
        confs[0].socket_path == Path::new(socket),
        "the plugin dials {}, the agent listens on {socket}",
        confs[0].socket_path.display()
    );
    ensure!(confs[0].mode == Mode::Primary);
    Ok(())
}

#[test]
fn multus_attachment_is_a_secondary_lanlink_netconf() -> Result<()> {
    let docs = yaml_docs(&deploy_dir().join("multus/network-attachment-definition.yaml"))?;
    let nad = find(&docs, "NetworkAttachmentDefinition")?;
    ensure!(nad["apiVersion"] == "k8s.cni.cncf.io/v1");
    let config = nad["spec"]["config"].as_str().context("spec.config")?;
    let conf = NetConf::parse(config.as_bytes()).context("spec.config")?;
    ensure!(
        conf.mode == Mode::Secondary,
        "Multus attachments are secondary"
    );
    ensure!(conf.name == nad["metadata"]["name"].as_str().unwrap_or_default());
    ensure!(conf.socket_path == Path::new("/run/lanlink/lanlink.sock"));
    // The example pod asks for it by name.
    let pod = find(&docs, "Pod")?;
    ensure!(
        pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] == nad["metadata"]["name"]
    );
    Ok(())
}

#[test]
fn example_conflists_pass_the_plugins_parser() -> Result<()> {
    let dir = deploy_dir().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("conflist") {
            continue;
        }
        let list: Value = serde_json::from_slice(&std::fs::read(&path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        lanlink_netconfs(&list).with_context(|| path.display().to_string())?;
        seen += 1;
    }
    ensure!(
        seen >= 3,
        "expected the example conflists in {}",
        dir.display()
    );
    Ok(())
}

#[test]
fn install_script_installs_atomically_and_idempotently() -> Result<()> {
    let script = deploy_dir().join("install-cni.sh");
    ensure!(
        std::fs::metadata(&script)?.permissions().mode() & 0o111 != 0,
        "install-cni.sh is not executable"
    );
    let plugin = bin_dir().join(lanlink_lab::CNI_BIN);
    ensure!(
        plugin.is_file(),
        "{} missing: cargo xtask build",
        plugin.display()
    );
    let tmp = tempfile::Builder::new()
        .prefix("lanlink-deploy.")
        .tempdir()?;
    let conflist = deploy_dir().join("examples/10-lanlink.conflist");
    let (bin_dir, conf_dir) = (
        tmp.path().join("opt/cni/bin"),
        tmp.path().join("etc/cni/net.d"),
    );
    let run = |conflist: Option<&Path>, plugin: &Path| -> Result<std::process::Output> {
        let mut c = Command::new(&script);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANLINK_PLUGIN", plugin)
            .env("CNI_BIN_DIR", &bin_dir)
            .env("CNI_CONF_DIR", &conf_dir)
            .env(
                "LANLINK_CONFLIST",
                conflist.map(Path::as_os_str).unwrap_or_default(),
            );
        cmd::run(&mut c, Duration::from_secs(30))
    };
    let check = |out: std::process::Output| -> Result<String> {
        ensure!(
            out.status.success(),
            "install-cni failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };

    // Plugin only (Multus secondary mode).
    check(run(None, &plugin)?)?;
    ensure!(bin_dir.join("lanlink").is_file());
    ensure!(
        std::fs::read_dir(&conf_dir)?.next().is_none(),
        "a conflist was installed"
    );

    // Plugin and conflist, twice.
    for _ in 0..2 {
        let said = check(run(Some(&conflist), &plugin)?)?;
        ensure!(said.contains("lanlink CNI plugin"), "{said}");
    }
    let installed = bin_dir.join("lanlink");
    ensure!(std::fs::read(&installed)? == std::fs::read(&plugin)?);
    ensure!(std::fs::metadata(&installed)?.permissions().mode() & 0o777 == 0o755);
    let conf = conf_dir.join("10-lanlink.conflist");
    ensure!(std::fs::read(&conf)? == std::fs::read(&conflist)?);
    ensure!(std::fs::metadata(&conf)?.permissions().mode() & 0o777 == 0o644);
    for dir in [&bin_dir, &conf_dir] {
        let names: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        ensure!(
            names.len() == 1,
            "temp files left in {}: {names:?}",
            dir.display()
        );
    }
    // The installed plugin is the real one and runs.
    let version = cmd::run_ok(
        Command::new(&installed).env("CNI_COMMAND", "VERSION"),
        cmd::SHORT,
    )?;
    ensure!(version.contains("1.1.0"), "{version}");

    // A missing plugin fails loudly.
    let out = run(Some(&conflist), Path::new("/nonexistent/lanlink"))?;
    ensure!(
        !out.status.success(),
        "install-cni accepted a missing plugin"
    );
    Ok(())
}

#[test]
fn containerfile_packages_the_built_binaries() -> Result<()> {
    let text = std::fs::read_to_string(deploy_dir().join("Containerfile"))?;
    let mut from = None;
    let mut profile = None;
    let mut base: Option<String> = None;
    let mut copied = Vec::new();
    let mut entrypoint = None;
    let mut runs = Vec::new();
    // Instructions, with `\`-continued lines joined.
    let mut instructions: Vec<String> = Vec::new();
    let mut pending = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                instructions.push(std::mem::take(&mut pending));
            }
        }
    }
    ensure!(
        pending.is_empty(),
        "the Containerfile ends in a continuation"
    );
    for line in &instructions {
        let (instr, rest) = line.split_once(' ').unwrap_or((line, ""));
        match instr {
            // `FROM ${BASE}`: the base a build without --build-arg uses
            // (`cargo xtask image` passes its own Debian base).
            "FROM" => from = Some(rest.replace("${BASE}", base.as_deref().unwrap_or(""))),
            "ARG" => {
                if let Some(p) = rest.strip_prefix("PROFILE=") {
                    profile = Some(p.to_owned());
                }
                if let Some(b) = rest.strip_prefix("BASE=") {
                    base = Some(b.to_owned());
                }
            }
            "COPY" => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                ensure!(parts.len() >= 2, "COPY without a destination: {line}");
                for src in &parts[..parts.len() - 1] {
                    copied.push((src.to_string(), parts[parts.len() - 1].to_owned()));
                }
            }
            "ENTRYPOINT" => entrypoint = Some(serde_json::from_str::<Vec<String>>(rest)?),
            "RUN" => runs.push(rest.to_owned()),
            "LABEL" | "ENV" | "WORKDIR" | "USER" => {}
            other => bail!("unexpected instruction {other:?}"),
        }
    }
    // The agent runs iptables for its netfilter chains.
    ensure!(
        runs.iter()
            .any(|r| r.contains("apt-get install") && r.contains("iptables")),
        "the image lacks iptables"
    );
    ensure!(
        from.is_some_and(|f| f.contains("debian")),
        "the base must carry glibc"
    );
    ensure!(profile.as_deref() == Some("release"));
    let dests: Vec<&str> = copied.iter().map(|(_, d)| d.as_str()).collect();
    for want in [
        "/usr/local/bin/lanlinkd",
        "/usr/local/bin/lanlink",
        "/usr/local/bin/install-cni",
    ] {
        ensure!(dests.contains(&want), "the image lacks {want}");
    }
    // Every source exists in a built tree (the debug profile here; CI builds it).
    for (src, _) in &copied {
        let path = workspace_root().join(src.replace("${PROFILE}", "debug"));
        ensure!(
            path.is_file(),
            "COPY source {src} does not exist ({})",
            path.display()
        );
    }
    ensure!(entrypoint == Some(vec!["/usr/local/bin/lanlinkd".to_owned()]));
    Ok(())
}
