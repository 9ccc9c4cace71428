//! Kubernetes' runtime path (issue 14, item 5): containerd's CRI plugin
//! runs pods on a lanlink network, driven through the CRI the way kubelet
//! drives it — `RunPodSandbox` with pod metadata, hostname, labels,
//! annotations and kubelet's Linux security context, containers created and
//! started in the sandbox, `StopPodSandbox` then `RemovePodSandbox`.
//!
//! containerd (Debian's 1.6) is started by the test in the node's network
//! namespace with its own root, state, sockets, CNI config and plugin dirs
//! (`lanlink_lab::cri::Containerd`); the sandbox image is a static busybox
//! written here as an OCI archive and imported, nothing is pulled. The tests
//! check what the DHCP server, the agent and the node see: the sandbox's IP
//! is the lease, dnsmasq got the pod's hostname, the agent knows the pod by
//! the CNI args containerd passed, and after removal nothing is left
//! (lease, veth, endpoint, netns, libcni's cache, shims, mounts).
//!
//! The tests of this file run one at a time: they compare the host's
//! `/var/run/netns/cni-*` before and after, which another containerd of this
//! binary would change.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use lanlink_api::EndpointInfo;
use lanlink_lab::cri::{self, Containerd, v1};
use lanlink_lab::pods::host_veths;
use lanlink_lab::{Agent, OneNode, PodNet, wait_until};
use nix::sys::signal::Signal;

const ROUTER: Ipv4Addr = lanlink_lab::ROUTER;

/// One test at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

/// A pod as the tests follow it: the sandbox and what the agent and the
/// DHCP server know of it.
#[derive(Debug)]
struct Pod {
    name: String,
    id: String,
    config: v1::PodSandboxConfig,
    ip: Ipv4Addr,
    mac: String,
    netns: PathBuf,
    host_veth: String,
}

/// The agent's endpoints.
fn endpoints(agent: &Agent) -> Result<Vec<EndpointInfo>> {
    serde_json::from_str(&agent.http_get("/v1/endpoints")?).context("endpoints JSON")
}

/// The network namespaces containerd-style (`cni-*`) under /var/run/netns.
fn cni_netns() -> BTreeSet<String> {
    std::fs::read_dir(cri::NETNS_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("cni-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The links of the root network namespace (this process's), by name:
/// containerd and its CNI calls run in the node's namespace and must not
/// add or remove any here.
fn root_links() -> Result<BTreeSet<String>> {
    let out = lanlink_lab::cmd::run_ok(
        std::process::Command::new("ip").args(["-o", "link", "show"]),
        lanlink_lab::cmd::SHORT,
    )?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
        .collect())
}

/// A pod uid shaped like Kubernetes' (a UUID), unique per call.
fn pod_uid() -> String {
    format!(
        "{:08x}-11aa-4bbb-8ccc-{:012x}",
        std::process::id(),
        lanlink_lab::names::next_id()
    )
}

/// The lab and containerd on its node, with the lanlink network; fails
/// (never skips) without root or without containerd, runc or busybox.
fn start() -> Result<(OneNode, Containerd)> {
    lanlink_lab::require_root();
    cri::require_tools()?;
    let lab = OneNode::start()?;
    let ctd = Containerd::start(&lab.node, PodNet::primary().plugin(&lab.agent))?;
    let cri = ctd.cri()?;
    let version = cri.version(Duration::from_secs(5))?;
    eprintln!(
        "CRI {} of {} {}",
        version.runtime_api_version, version.runtime_name, version.runtime_version
    );
    // kubelet waits for NetworkReady before it starts pods: the CNI config
    // is loaded.
    wait_until(Duration::from_secs(10), "the CRI's NetworkReady", || {
        Ok(cri.network_ready()?.then_some(()))
    })?;
    // kubelet's IfNotPresent: the image is there, so nothing is pulled.
    ensure!(
        cri.image_status(cri::IMAGE)?.is_some(),
        "{} not in containerd",
        cri::IMAGE
    );
    Ok((lab, ctd))
}

/// `RunPodSandbox` for pod `lanlink-e2e/<name>`, then what the sandbox's
/// status, the agent and dnsmasq say about it, each checked against the
/// others.
fn run_pod(lab: &OneNode, ctd: &Containerd, name: &str) -> Result<Pod> {
    let config = ctd.sandbox_config("lanlink-e2e", name, &pod_uid());
    let id = ctd
        .run_pod_sandbox(&config)
        .with_context(|| format!("RunPodSandbox {name}"))?;
    let status = ctd.cri()?.pod_sandbox_status(&id, false)?;
    let st = status.status.as_ref().context("no sandbox status")?;
    ensure!(
        st.state == v1::PodSandboxState::SandboxReady as i32,
        "sandbox {name} not ready: {st:?}"
    );
    ensure!(
        st.metadata.as_ref() == config.metadata.as_ref(),
        "metadata {:?}",
        st.metadata
    );
    ensure!(st.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some(name));
    ensure!(
        st.annotations
            .get("kubernetes.io/config.source")
            .map(String::as_str)
            == Some("api")
    );
    ensure!(
        st.linux
            .as_ref()
            .and_then(|l| l.namespaces.as_ref())
            .and_then(|n| n.options.as_ref())
            .is_some_and(|o| o.network == v1::NamespaceMode::Pod as i32),
        "the sandbox's network namespace mode is not POD: {:?}",
        st.linux
    );
    let ip = cri::sandbox_ip(&status)?;
    let netns = ctd.sandbox_netns(&id)?;
    let meta = config.metadata.clone().unwrap_or_default();
    // The CNI args containerd passed: the agent knows the pod by them.
    let eps = endpoints(&lab.agent)?;
    let ep = eps.iter().find(|e| e.container_id == id).with_context(|| {
        format!("no endpoint of sandbox {id} (K8S_POD_INFRA_CONTAINER_ID): {eps:?}")
    })?;
    ensure!(
        ep.pod.namespace.as_deref() == Some(meta.namespace.as_str())
            && ep.pod.name.as_deref() == Some(name)
            && ep.pod.uid.as_deref() == Some(meta.uid.as_str()),
        "the agent's pod identity (K8S_POD_NAMESPACE/NAME/UID) {:?}, expected {meta:?}",
        ep.pod
    );
    ensure!(
        ep.network == ctd.network() && ep.ifname == "eth0",
        "endpoint {ep:?}"
    );
    ensure!(
        Path::new(&ep.netns) == netns,
        "the agent's netns {} is not the sandbox's {}",
        ep.netns,
        netns.display()
    );
    let mac = ep.mac.to_string().to_ascii_lowercase();
    let lease = lab.lan.wait_for_lease(&mac, Duration::from_secs(10))?;
    ensure!(
        lease.ip == ip,
        "dnsmasq leased {} to {mac}, the sandbox's status says {ip}",
        lease.ip
    );
    ensure!(
        ep.address
            .as_deref()
            .is_some_and(|a| a.starts_with(&format!("{ip}/"))),
        "the endpoint's address {:?} is not {ip}",
        ep.address
    );
    // The hostname option (12): dnsmasq's lease carries the pod's name.
    ensure!(
        lease.hostname.as_deref() == Some(name),
        "dnsmasq's lease of {ip} has hostname {:?}, expected {name}",
        lease.hostname
    );
    Ok(Pod {
        name: name.to_owned(),
        id,
        config,
        ip,
        mac,
        netns,
        host_veth: ep.host_veth.clone(),
    })
}

/// Creates and starts container `name` running `command` in `pod`.
fn start_container(ctd: &Containerd, pod: &Pod, name: &str, command: &[&str]) -> Result<String> {
    let cri = ctd.cri()?;
    let config = ctd.container_config(&pod.config, name, command);
    let id = cri.create_container(&pod.id, &config, &pod.config)?;
    cri.start_container(&id)
        .with_context(|| format!("containerd's log:\n{}", ctd.log_tail(30)))?;
    Ok(id)
}

/// `ping -c 3 -W 2 <router>` through `ExecSync` in a running container;
/// fails unless all three replies came.
fn exec_ping(ctd: &Containerd, container: &str) -> Result<String> {
    let router = ROUTER.to_string();
    let out = ctd.cri()?.exec_sync(
        container,
        &["ping", "-c", "3", "-W", "2", &router],
        Duration::from_secs(20),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.exit_code == 0 && stdout.contains("3 packets received"),
        "ping in {container} exited {}: {stdout}{}",
        out.exit_code,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// Stops and removes `pods` as kubelet does when they are deleted, then
/// checks that nothing of them is left: leases, host veths, agent
/// endpoints, sandboxes, namespaces, libcni's cache entries, shims, mounts.
fn remove_pods(lab: &OneNode, ctd: &Containerd, pods: &[Pod]) -> Result<()> {
    let cri = ctd.cri()?;
    for pod in pods {
        cri.stop_pod_sandbox(&pod.id)
            .with_context(|| format!("StopPodSandbox {}", pod.name))?;
    }
    for pod in pods {
        lab.lan
            .wait_for_no_lease(&pod.mac, Duration::from_secs(10))
            .with_context(|| format!("StopPodSandbox did not release {}'s lease", pod.name))?;
        ensure!(
            lab.lan
                .dhcp_log()
                .contains(&format!("DHCPRELEASE(br0) {} {}", pod.ip, pod.mac)),
            "no DHCPRELEASE of {} in dnsmasq's log",
            pod.ip
        );
        let st = cri.pod_sandbox_status(&pod.id, false)?;
        ensure!(
            st.status.as_ref().map(|s| s.state)
                == Some(v1::PodSandboxState::SandboxNotready as i32),
            "sandbox {} after StopPodSandbox: {:?}",
            pod.name,
            st.status
        );
    }
    let veths = host_veths(&lab.node)?;
    for pod in pods {
        ensure!(
            !veths.contains(&pod.host_veth),
            "{}'s host veth {} left after StopPodSandbox: {veths:?}",
            pod.name,
            pod.host_veth
        );
    }
    for pod in pods {
        cri.remove_pod_sandbox(&pod.id)
            .with_context(|| format!("RemovePodSandbox {}", pod.name))?;
    }
    ensure!(
        cri.list_pod_sandbox()?.is_empty() && cri.list_containers()?.is_empty(),
        "sandboxes or containers left: {:?}",
        cri.list_pod_sandbox()?
    );
    ensure!(host_veths(&lab.node)?.is_empty(), "host veths left");
    let eps = endpoints(&lab.agent)?;
    ensure!(eps.is_empty(), "agent endpoints left: {eps:?}");
    for pod in pods {
        ensure!(!pod.netns.exists(), "{} left", pod.netns.display());
    }
    ensure!(
        ctd.netns_left().is_empty(),
        "netns left: {:?}",
        ctd.netns_left()
    );
    ensure!(
        ctd.cni_results().is_empty(),
        "libcni's cached results left: {:?}",
        ctd.cni_results()
    );
    // The shims exit once their sandbox's task is deleted.
    wait_until(Duration::from_secs(10), "the shims to exit", || {
        Ok(ctd.processes().is_empty().then_some(()))
    })
    .with_context(|| format!("processes left: {:?}", ctd.processes()))?;
    ensure!(
        ctd.shim_sockets().is_empty(),
        "shim sockets left: {:?}",
        ctd.shim_sockets()
    );
    ensure!(ctd.mounts().is_empty(), "mounts left: {:?}", ctd.mounts());
    Ok(())
}

/// While pods run: the things [`remove_pods`] and the final checks expect
/// gone are there (positive controls of those checks).
fn controls(lab: &OneNode, ctd: &Containerd, pods: &[Pod]) -> Result<()> {
    let veths = host_veths(&lab.node)?;
    let results = ctd.cni_results();
    for pod in pods {
        ensure!(pod.netns.exists(), "{} missing", pod.netns.display());
        ensure!(
            veths.contains(&pod.host_veth),
            "{} not in {veths:?}",
            pod.host_veth
        );
        ensure!(
            results
                .iter()
                .any(|r| r.display().to_string().contains(&pod.id)),
            "no libcni cached result of {} in {results:?}",
            pod.id
        );
    }
    ensure!(
        ctd.shim_sockets().len() == pods.len(),
        "shim sockets {:?} for {} sandboxes",
        ctd.shim_sockets(),
        pods.len()
    );
    ensure!(!ctd.processes().is_empty(), "no shim or container seen");
    ensure!(
        !ctd.mounts().is_empty(),
        "no mount seen under containerd's dir"
    );
    ensure!(!ctd.cgroups().is_empty(), "no pod cgroup seen");
    Ok(())
}

/// What the host looked like before a test, to compare with after.
struct Before {
    cni_netns: BTreeSet<String>,
    absent: Vec<&'static str>,
    root_links: BTreeSet<String>,
}

impl Before {
    fn take() -> Result<Self> {
        Ok(Self {
            cni_netns: cni_netns(),
            absent: absent_dirs(),
            root_links: root_links()?,
        })
    }
}

/// Drops containerd's guard and checks that it left nothing on the host:
/// its dir, the pods' cgroups, `cni-*` namespaces beyond those there before,
/// the directories it created on first use, a link in the root namespace.
fn stop_and_check(ctd: Containerd, before: &Before) -> Result<()> {
    let dir = ctd.dir().to_owned();
    let cgroup_root = ctd.cgroup_root().to_owned();
    let started = Instant::now();
    drop(ctd);
    eprintln!("containerd's guard dropped in {:?}", started.elapsed());
    ensure!(!dir.exists(), "{} left", dir.display());
    let cgroups = cri::cgroup_dirs(&cgroup_root);
    ensure!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    ensure!(
        cni_netns() == before.cni_netns,
        "cni-* namespaces now {:?}, before {:?}",
        cni_netns(),
        before.cni_netns
    );
    for p in &before.absent {
        ensure!(!Path::new(p).exists(), "{p} was created and left");
    }
    let links = root_links()?;
    ensure!(
        links == before.root_links,
        "the root namespace's links changed: {links:?}, before {:?}",
        before.root_links
    );
    Ok(())
}

/// Of the system's containerd directories, those absent now (libcni's
/// `/var/lib/cni` is not among them: podman's scenario, perhaps running at
/// the same time, uses it too; only this run's entries in it are checked).
fn absent_dirs() -> Vec<&'static str> {
    ["/run/containerd", "/var/lib/containerd"]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect()
}

/// One pod, as kubelet runs it: the sandbox leases (its IP is dnsmasq's
/// lease, with the pod's name as hostname; the agent knows the pod by the
/// CNI args), a container in it pings the router and exits 0, the
/// sandbox's hostname is the pod's; `StopPodSandbox` releases the lease and
/// the veth, `RemovePodSandbox` leaves nothing. Then the README's `ctr …
/// images import` line loads the agent's image into this containerd.
#[test]
fn a_pod_leases_pings_and_leaves_nothing() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = Before::take()?;
    let (lab, ctd) = start()?;
    let started = Instant::now();
    let pod = run_pod(&lab, &ctd, "web-0")?;
    eprintln!(
        "RunPodSandbox to a lease in {:?}: {} {}",
        started.elapsed(),
        pod.ip,
        pod.mac
    );
    controls(&lab, &ctd, std::slice::from_ref(&pod))?;

    // A container whose command is the ping, as a pod spec would run it.
    let router = ROUTER.to_string();
    let pinger = start_container(
        &ctd,
        &pod,
        "pinger",
        &["ping", "-c", "3", "-W", "2", &router],
    )?;
    let cri = ctd.cri()?;
    let status = wait_until(
        Duration::from_secs(30),
        "the ping container to exit",
        || {
            let s = cri.container_status(&pinger)?;
            Ok((s.state == v1::ContainerState::ContainerExited as i32).then_some(s))
        },
    )?;
    let log_path = Path::new(&pod.config.log_directory).join("pinger/0.log");
    let log = std::fs::read_to_string(&log_path)
        .with_context(|| format!("the container's log {}", log_path.display()))?;
    ensure!(
        status.exit_code == 0 && log.contains("3 packets received"),
        "the ping container exited {} ({}): {log}",
        status.exit_code,
        status.reason
    );
    // A long-running container: ExecSync in it sees the pod's network and
    // the hostname containerd gave the sandbox.
    let app = start_container(&ctd, &pod, "app", &["sleep", "3600"])?;
    exec_ping(&ctd, &app)?;
    let out = cri.exec_sync(
        &app,
        &["sh", "-c", "hostname; ip -4 -o addr show dev eth0"],
        Duration::from_secs(10),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.lines().next() == Some("web-0") && text.contains(&format!("inet {}/", pod.ip)),
        "inside the pod: {text}"
    );

    remove_pods(&lab, &ctd, std::slice::from_ref(&pod))?;
    import_agent_image(&ctd)?;
    stop_and_check(ctd, &before)
}

/// The README's `ctr -n k8s.io images import` line, run as written on the
/// archive `cargo xtask image` wrote, against this containerd (ctr reads
/// `CONTAINERD_ADDRESS`): the CRI then has the image the DaemonSet runs.
fn import_agent_image(ctd: &Containerd) -> Result<()> {
    let archive_dir = lanlink_lab::workspace_root().join("target/image");
    ensure!(
        archive_dir.join("lanlink.oci.tar").is_file(),
        "{}/lanlink.oci.tar is missing: build it with `cargo xtask image` \
         (`cargo xtask test` builds it before the scenarios)",
        archive_dir.display()
    );
    let manifest =
        std::fs::read_to_string(lanlink_lab::workspace_root().join("deploy/lanlink.yaml"))?;
    let image = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image:"))
        .map(|i| i.trim().trim_matches('"').to_owned())
        .next()
        .context("no image in deploy/lanlink.yaml")?;
    // The check below can fail: the image is not there before.
    ensure!(
        ctd.cri()?.image_status(&image)?.is_none(),
        "{image} is in a fresh containerd"
    );
    let import = lanlink_lab::readme::install_command("ctr -n k8s.io images import")?;
    let socket = ctd.socket();
    let out = lanlink_lab::readme::run_in(
        &import,
        &archive_dir,
        &[(
            "CONTAINERD_ADDRESS",
            socket.to_str().context("a UTF-8 socket path")?,
        )],
        Duration::from_secs(120),
    )?;
    eprintln!("README `{import}`: {}", out.trim());
    ensure!(
        ctd.cri()?.image_status(&image)?.is_some(),
        "after `{import}` the CRI has no {image} (the manifest's image): {out}"
    );
    Ok(())
}

/// 20 sandboxes started at once (concurrent RunPodSandbox calls, as
/// kubelet's pod workers make them): all ready, each with its own lease in
/// the LAN's pool; then all stopped and removed at once, nothing left.
#[test]
fn twenty_sandboxes_at_once_all_lease() -> Result<()> {
    const PODS: u32 = 20;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = Before::take()?;
    let (lab, ctd) = start()?;
    let started = Instant::now();
    let results: Vec<Result<Pod>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PODS)
            .map(|n| {
                let (lab, ctd) = (&lab, &ctd);
                s.spawn(move || run_pod(lab, ctd, &format!("burst-{n}")))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a RunPodSandbox thread panicked")))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut pods = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(p) => pods.push(p),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    ensure!(
        errors.is_empty(),
        "{} of {PODS} sandboxes failed: {errors:#?}\ncontainerd's log:\n{}",
        errors.len(),
        ctd.log_tail(40)
    );
    eprintln!("{PODS} concurrent RunPodSandbox, all leased, in {elapsed:?}");
    let ips: BTreeSet<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    ensure!(ips.len() == pods.len(), "leases not distinct: {ips:?}");
    let (first, last) = lab.lan.options().pool;
    ensure!(
        ips.iter().all(|ip| (first..=last).contains(ip)),
        "leases outside the pool {first}–{last}: {ips:?}"
    );
    let leased: BTreeSet<Ipv4Addr> = lab.lan.leases().iter().map(|l| l.ip).collect();
    ensure!(
        ips.is_subset(&leased),
        "dnsmasq's leases {leased:?} lack some of {ips:?}"
    );
    ensure!(endpoints(&lab.agent)?.len() == pods.len());
    controls(&lab, &ctd, &pods)?;
    // A container in one of them reaches the router.
    let app = start_container(&ctd, &pods[PODS as usize / 2], "app", &["sleep", "3600"])?;
    exec_ping(&ctd, &app)?;

    let started = Instant::now();
    let cri = ctd.cri()?;
    let stopped: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|p| s.spawn(move || cri.stop_pod_sandbox(&p.id)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a StopPodSandbox thread panicked")))
            })
            .collect()
    });
    for r in stopped {
        r?;
    }
    eprintln!(
        "{PODS} concurrent StopPodSandbox in {:?}",
        started.elapsed()
    );
    // `remove_pods` stops each again, as kubelet retries StopPodSandbox (it
    // must be idempotent), before it removes them and checks what is left.
    remove_pods(&lab, &ctd, &pods)?;
    stop_and_check(ctd, &before)
}

/// containerd restarted under running pods, once after SIGTERM and once
/// after SIGKILL (a crash): the pod's sandbox is still listed ready with
/// the same IP, its container still pings the router through `ExecSync`,
/// its lease is unchanged and it sent no new DISCOVER; a pod started after
/// the restarts leases too; then everything is removed, nothing left.
#[test]
fn pods_keep_working_across_containerd_restarts() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = Before::take()?;
    let (lab, mut ctd) = start()?;
    let pod = run_pod(&lab, &ctd, "survivor")?;
    let app = start_container(&ctd, &pod, "app", &["sleep", "3600"])?;
    exec_ping(&ctd, &app)?;
    let discovers = |mac: &str| {
        lab.lan
            .dhcp_log()
            .lines()
            .filter(|l| l.contains("DHCPDISCOVER(br0)") && l.to_ascii_lowercase().contains(mac))
            .count()
    };
    let discovers_before = discovers(&pod.mac);
    ensure!(
        discovers_before >= 1,
        "no DISCOVER of {} seen at all",
        pod.mac
    );
    let lease_before = lab.lan.wait_for_lease(&pod.mac, Duration::from_secs(1))?;

    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let old = ctd.pid();
        let started = Instant::now();
        ctd.restart(signal)?;
        eprintln!(
            "containerd restarted after {signal} in {:?}",
            started.elapsed()
        );
        ensure!(ctd.pid() != old, "containerd's pid did not change");
        let cri = ctd.cri()?;
        let listed = cri.list_pod_sandbox()?;
        ensure!(
            listed
                .iter()
                .any(|s| s.id == pod.id && s.state == v1::PodSandboxState::SandboxReady as i32),
            "after {signal}: the sandbox is not listed ready: {listed:?}"
        );
        let status = cri.pod_sandbox_status(&pod.id, false)?;
        ensure!(
            cri::sandbox_ip(&status)? == pod.ip,
            "after {signal}: the sandbox's IP changed"
        );
        exec_ping(&ctd, &app).with_context(|| format!("after {signal}"))?;
        let lease = lab.lan.wait_for_lease(&pod.mac, Duration::from_secs(1))?;
        ensure!(
            lease.ip == lease_before.ip && lease.hostname == lease_before.hostname,
            "after {signal}: lease {lease:?}, before {lease_before:?}"
        );
        ensure!(
            discovers(&pod.mac) == discovers_before,
            "after {signal}: a new DISCOVER from {}",
            pod.mac
        );
        let eps = endpoints(&lab.agent)?;
        ensure!(
            eps.len() == 1 && eps[0].container_id == pod.id,
            "after {signal}: endpoints {eps:?}"
        );
    }
    // The restarted containerd runs new pods too.
    let late = run_pod(&lab, &ctd, "late")?;
    ensure!(late.ip != pod.ip);
    let pods = [pod, late];
    controls(&lab, &ctd, &pods)?;
    remove_pods(&lab, &ctd, &pods)?;
    stop_and_check(ctd, &before)
}
