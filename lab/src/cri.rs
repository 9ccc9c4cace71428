//! [`Containerd`] and [`Cri`]: Kubernetes' runtime path — containerd's CRI
//! plugin driven the way kubelet drives it, running pods on a lanlink
//! network from a lab node's namespace.
//!
//! Isolation: containerd (the Debian package) runs through `nsenter
//! --net=<node>` (never `ip netns exec`, which remounts `/sys`) with its
//! root, state dir, gRPC and ttrpc sockets, runc's state root, the CNI
//! configuration and plugin dirs and its log all in one lab temp dir; its
//! `config.toml` (version 2) sets the sandbox image, the snapshotter
//! (`overlayfs`), runc with the cgroupfs driver (`SystemdCgroup = false`:
//! there is no systemd here) and no AppArmor. Nothing is pulled: the one
//! image (a static busybox, used both as the sandbox image and for the
//! containers) is written here as an OCI archive and imported with `ctr
//! images import`; the CRI's `ImageStatus` then finds it, as kubelet's
//! `IfNotPresent` pull policy expects.
//!
//! What containerd 1.6 creates outside the temp dir, and how it goes:
//!
//! - a network namespace per sandbox, `/var/run/netns/cni-<uuid>`, where
//!   containerd keeps it on a real node (`netns_mounts_under_state_dir`
//!   would move it into the state dir, out of reach of the lab's signal
//!   handler, which removes namespaces by name); each one is read from the
//!   sandbox's verbose status, registered with the lab's cleanup (so the
//!   signal handler removes it, killing the pod's processes) and listed in
//!   `netns.list` in the temp dir (so [`sweep`] finds it after a crash);
//! - the pods' cgroups, under a parent named like the lab's namespaces
//!   (`/ll-<pid>-<n>-kubepods/besteffort/pod<uid>`, as kubelet's cgroupfs
//!   driver names them), emptied and removed on drop;
//! - libcni's result cache, `/var/lib/cni/results/<network>-<id>-eth0`
//!   (go-cni has no setting for it): the network is named uniquely per
//!   guard, so only this guard's entries are ever looked at;
//! - the runc shims' sockets, `/run/containerd/s/<sha256>`: 1.6 hard-codes
//!   that directory; the shims remove their sockets when they exit, and the
//!   guard removes those of its sandboxes that a killed shim left.
//!
//! Directories of these that did not exist before the guard are removed
//! when they are empty again.
//!
//! On SIGINT/SIGTERM the lab's handler stops containerd, kills the shims
//! (with the node's namespace) and the pods (with theirs), but cannot
//! unmount the snapshots and shm mounts under the temp dir, so the dir
//! stays; the next run's [`sweep`] unmounts and removes it.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

/// The CRI v1 types (`PodSandboxConfig`, `ContainerConfig`, …), from the
/// `k8s-cri` crate, so scenarios need not depend on it themselves.
pub use k8s_cri::v1;

use crate::cleanup::{self, LabDir, Registration, Resource};
use crate::cmd::{self, BgProcess};
use crate::netns::in_netns;
use crate::node::Node;
use crate::wait::wait_until;
use crate::{CNI_BIN, bin_dir, names};

/// containerd (Debian's `containerd`).
pub const CONTAINERD: &str = "/usr/bin/containerd";
/// containerd's command-line client, used to import the image.
pub const CTR: &str = "/usr/bin/ctr";
/// The runc v2 shim containerd starts per sandbox.
pub const SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
/// runc (Debian's `runc`).
pub const RUNC: &str = "/usr/sbin/runc";
/// The static busybox the image is made of (`busybox-static`).
pub use crate::podman::BUSYBOX;
/// The reference `loopback` plugin: containerd's CRI brings up each
/// sandbox's `lo` with it (`containernetworking-plugins`).
pub const LOOPBACK: &str = "/usr/lib/cni/loopback";

/// The image's name: the sandbox (pause) image and the containers' image.
pub const IMAGE: &str = "localhost/lanlink-lab/busybox:1";

/// The containerd namespace the CRI plugin keeps its objects in.
const NAMESPACE: &str = "k8s.io";
/// The snapshotter of the CRI plugin and of the import.
const SNAPSHOTTER: &str = "overlayfs";
/// Where containerd 1.6's shims put their sockets (hard-coded).
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// Where containerd 1.6 makes the sandboxes' network namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";
/// libcni's result cache.
pub const CNI_RESULTS: &str = "/var/lib/cni/results";
/// Directories outside the temp dir that containerd or its libraries create
/// on first use; children first, each removed on drop if it did not exist
/// before and is empty.
const CREATED_ON_FIRST_USE: &[&str] = &[
    "/run/containerd/s",
    "/run/containerd",
    "/var/lib/cni/results",
    "/var/lib/cni",
];
/// The temp dir's list of the sandboxes' namespace names, for [`sweep`].
const NETNS_LIST: &str = "netns.list";
/// The temp dir's record of the pods' cgroup root, for [`sweep`].
const CGROUP_FILE: &str = "cgroup-root";
/// The cgroup v1 hierarchy (or the v2 mount) runc makes cgroups in.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The role of the temp dir in its name (`ll-<pid>-<n>-containerd.XXXXXX`).
const DIR_ROLE: &str = "containerd";

/// Bound of the CRI calls that do real work (RunPodSandbox waits for the
/// CNI ADD, which waits for a DHCP lease).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound of the CRI calls that only read state.
const QUICK: Duration = Duration::from_secs(15);
/// How long containerd gets to answer `Version` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd gets after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Fails with a clear message unless containerd, ctr, the runc shim, runc,
/// a static busybox and the `loopback` plugin are installed.
pub fn require_tools() -> Result<()> {
    for tool in [CONTAINERD, CTR, SHIM, RUNC, BUSYBOX, LOOPBACK] {
        ensure!(
            Path::new(tool).is_file(),
            "{tool} is missing: install Debian's containerd, runc, busybox-static \
             and containernetworking-plugins (`cargo xtask setup`)"
        );
    }
    Ok(())
}

/// A CRI client (the `RuntimeService` and `ImageService` of CRI v1) on a
/// Unix socket, with blocking calls: each runs on a small runtime of its
/// own, bounded by a timeout. Calls may be made from several threads at
/// once (they share one HTTP/2 connection, as kubelet's do).
#[derive(Debug)]
pub struct Cri {
    channel: Channel,
    // Last: the channel's tasks run on it.
    rt: tokio::runtime::Runtime,
}

impl Cri {
    /// A client of the CRI server at `socket`. Connects lazily: the first
    /// call fails if nothing listens there yet.
    pub fn connect(socket: &Path) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lab-cri")
            .enable_all()
            .build()
            .context("cannot start the CRI client's runtime")?;
        let path = socket.to_owned();
        // The URI is required by tonic but unused: the connector dials the
        // socket.
        let endpoint = Endpoint::try_from("http://[::]:50051")
            .context("the CRI endpoint")?
            .connect_timeout(Duration::from_secs(5));
        let channel = {
            let _in_rt = rt.enter();
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
        };
        Ok(Self { channel, rt })
    }

    fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    /// Runs one call to completion, bounded by `timeout`.
    fn call<T>(
        &self,
        what: &str,
        timeout: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, call).await })
        {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => bail!("CRI {what}: {:?}: {}", status.code(), status.message()),
            Err(_) => bail!("CRI {what}: no answer within {timeout:?}"),
        }
    }

    /// `Version`: the runtime's name and version.
    pub fn version(&self, timeout: Duration) -> Result<v1::VersionResponse> {
        let mut c = self.runtime();
        self.call("Version", timeout, async move {
            c.version(v1::VersionRequest {
                version: "v1".into(),
            })
            .await
        })
    }

    /// `Status`: the runtime's conditions (`RuntimeReady`, `NetworkReady`).
    pub fn status(&self) -> Result<v1::StatusResponse> {
        let mut c = self.runtime();
        self.call("Status", QUICK, async move {
            c.status(v1::StatusRequest { verbose: false }).await
        })
    }

    /// Whether the `NetworkReady` condition holds (the CNI config loaded).
    pub fn network_ready(&self) -> Result<bool> {
        let status = self.status()?;
        Ok(status
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.r#type == "NetworkReady" && c.status))
    }

    /// `ImageStatus`: the image if the runtime has it (`None`: kubelet
    /// would pull it).
    pub fn image_status(&self, image: &str) -> Result<Option<v1::Image>> {
        let mut c = self.images();
        let image = image.to_owned();
        self.call("ImageStatus", QUICK, async move {
            c.image_status(v1::ImageStatusRequest {
                image: Some(v1::ImageSpec {
                    image,
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
        })
        .map(|r| r.image)
    }

    /// `RunPodSandbox`: the sandbox's id.
    pub fn run_pod_sandbox(
        &self,
        config: &v1::PodSandboxConfig,
        timeout: Duration,
    ) -> Result<String> {
        let mut c = self.runtime();
        let config = config.clone();
        self.call("RunPodSandbox", timeout, async move {
            c.run_pod_sandbox(v1::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
        })
        .map(|r| r.pod_sandbox_id)
    }

    /// `PodSandboxStatus` (`verbose` adds containerd's `info`: its runtime
    /// spec, netns path and CNI result).
    pub fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<v1::PodSandboxStatusResponse> {
        let mut c = self.runtime();
        let id = id.to_owned();
        self.call("PodSandboxStatus", QUICK, async move {
            c.pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: id,
                verbose,
            })
            .await
        })
    }

    /// `StopPodSandbox`: its containers stopped, its network torn down
    /// (CNI DEL).
    pub fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut c = self.runtime();
        let id = id.to_owned();
        self.call("StopPodSandbox", CALL_TIMEOUT, async move {
            c.stop_pod_sandbox(v1::StopPodSandboxRequest { pod_sandbox_id: id })
                .await
        })
        .map(drop)
    }

    /// `RemovePodSandbox`: the sandbox and its containers deleted.
    pub fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut c = self.runtime();
        let id = id.to_owned();
        self.call("RemovePodSandbox", CALL_TIMEOUT, async move {
            c.remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
        })
        .map(drop)
    }

    /// `ListPodSandbox`, unfiltered.
    pub fn list_pod_sandbox(&self) -> Result<Vec<v1::PodSandbox>> {
        let mut c = self.runtime();
        self.call("ListPodSandbox", QUICK, async move {
            c.list_pod_sandbox(v1::ListPodSandboxRequest { filter: None })
                .await
        })
        .map(|r| r.items)
    }

    /// `CreateContainer` in a sandbox: the container's id.
    pub fn create_container(
        &self,
        sandbox_id: &str,
        config: &v1::ContainerConfig,
        sandbox_config: &v1::PodSandboxConfig,
    ) -> Result<String> {
        let mut c = self.runtime();
        let req = v1::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox_config.clone()),
        };
        self.call("CreateContainer", CALL_TIMEOUT, async move {
            c.create_container(req).await
        })
        .map(|r| r.container_id)
    }

    /// `StartContainer`.
    pub fn start_container(&self, id: &str) -> Result<()> {
        let mut c = self.runtime();
        let id = id.to_owned();
        self.call("StartContainer", CALL_TIMEOUT, async move {
            c.start_container(v1::StartContainerRequest { container_id: id })
                .await
        })
        .map(drop)
    }

    /// `ContainerStatus`.
    pub fn container_status(&self, id: &str) -> Result<v1::ContainerStatus> {
        let mut c = self.runtime();
        let id = id.to_owned();
        self.call("ContainerStatus", QUICK, async move {
            c.container_status(v1::ContainerStatusRequest {
                container_id: id,
                verbose: false,
            })
            .await
        })?
        .status
        .context("ContainerStatus without a status")
    }

    /// `ListContainers`, unfiltered.
    pub fn list_containers(&self) -> Result<Vec<v1::Container>> {
        let mut c = self.runtime();
        self.call("ListContainers", QUICK, async move {
            c.list_containers(v1::ListContainersRequest { filter: None })
                .await
        })
        .map(|r| r.containers)
    }

    /// `ExecSync`: runs `cmd` in a running container, bounded by `timeout`
    /// (given to the runtime too).
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<v1::ExecSyncResponse> {
        let mut c = self.runtime();
        let req = v1::ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        self.call("ExecSync", timeout + QUICK, async move {
            c.exec_sync(req).await
        })
    }
}

/// containerd with its CRI plugin and one lanlink network, isolated in a
/// lab temp dir and running in a node's namespace (see the module docs).
///
/// Dropping it does what is left of kubelet's work (every sandbox stopped
/// and removed through the CRI, so the CNI DELs release the leases), stops
/// containerd, kills any shim or container left, removes the sandboxes'
/// namespaces, unmounts what is mounted under the temp dir, removes the
/// pods' cgroups and the temp dir.
#[derive(Debug)]
pub struct Containerd {
    cri: Option<Cri>,
    proc: Option<BgProcess>,
    node_netns: PathBuf,
    network: String,
    cgroup_root: String,
    netns: Mutex<Vec<(String, Registration)>>,
    sandboxes: Mutex<BTreeSet<String>>,
    absent_before: Vec<PathBuf>,
    // Last: the files go after everything that uses them.
    dir: LabDir,
}

impl Containerd {
    /// Sets containerd up for `node` with a CNI network whose only plugin is
    /// `plugin` (a lanlink plugin object, e.g. [`crate::PodNet::plugin`]),
    /// starts it, waits until its CRI answers and imports the image.
    pub fn start(node: &Node, plugin: Value) -> Result<Self> {
        require_tools()?;
        let dir = LabDir::new(DIR_ROLE)?;
        let root = dir.path().to_owned();
        for sub in ["cni/net.d", "cni/bin", "pods", "image"] {
            std::fs::create_dir_all(root.join(sub))
                .with_context(|| format!("cannot create {sub} in {}", root.display()))?;
        }
        // Copies, as an install would: the plugin dir holds only these.
        for (from, name) in [
            (bin_dir().join(CNI_BIN), CNI_BIN),
            (PathBuf::from(LOOPBACK), "loopback"),
        ] {
            std::fs::copy(&from, root.join("cni/bin").join(name)).with_context(|| {
                format!(
                    "cannot copy {} into the CNI plugin dir (build lanlink with `cargo xtask build`)",
                    from.display()
                )
            })?;
        }
        let network = names::unique("cri");
        let conflist = json!({
            // containerd 1.6's libcni speaks up to CNI 1.0.0.
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [plugin],
        });
        std::fs::write(
            root.join("cni/net.d/10-lanlink.conflist"),
            serde_json::to_vec_pretty(&conflist)?,
        )
        .context("cannot write the conflist")?;
        let cgroup_root = names::unique("kubepods");
        std::fs::write(root.join(CGROUP_FILE), &cgroup_root)?;
        std::fs::write(root.join(NETNS_LIST), "")?;
        std::fs::write(root.join("config.toml"), config_toml(&root))
            .context("cannot write containerd's config")?;
        let absent_before = CREATED_ON_FIRST_USE
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        let mut ctd = Self {
            cri: None,
            proc: None,
            node_netns: node.path().to_owned(),
            network,
            cgroup_root,
            netns: Mutex::new(Vec::new()),
            sandboxes: Mutex::new(BTreeSet::new()),
            absent_before,
            dir,
        };
        ctd.spawn()?;
        ctd.import_image()?;
        Ok(ctd)
    }

    /// Starts the daemon and waits (bounded) until its CRI answers `Version`.
    fn spawn(&mut self) -> Result<()> {
        let mut c = in_netns(&self.node_netns);
        c.arg(CONTAINERD)
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .args(["--log-level", "debug"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        let proc =
            BgProcess::spawn_logged(&mut c, "containerd", &self.log_path())?.with_grace(STOP_GRACE);
        self.proc = Some(proc);
        let cri = Cri::connect(&self.socket())?;
        wait_until(START_TIMEOUT, "containerd's CRI to answer Version", || {
            if let Some(p) = self.proc.as_mut()
                && let Some(status) = p.try_wait()?
            {
                bail!("containerd exited: {status}");
            }
            if !self.socket().exists() {
                return Ok(None);
            }
            Ok(cri.version(Duration::from_secs(2)).ok())
        })
        .with_context(|| format!("containerd's log:\n{}", self.log_tail(40)))?;
        self.cri = Some(cri);
        Ok(())
    }

    /// Writes the image as an OCI archive and imports it into the CRI's
    /// containerd namespace, then checks that the CRI sees it.
    fn import_image(&self) -> Result<()> {
        let archive = build_image(&self.dir.path().join("image"))?;
        cmd::run_ok(
            Command::new(CTR)
                .arg("--address")
                .arg(self.socket())
                .args([
                    "-n",
                    NAMESPACE,
                    "images",
                    "import",
                    "--snapshotter",
                    SNAPSHOTTER,
                ])
                .arg(&archive),
            Duration::from_secs(60),
        )
        .context("ctr images import")?;
        self.cri()?
            .image_status(IMAGE)?
            .with_context(|| format!("the CRI does not see {IMAGE} after the import"))?;
        Ok(())
    }

    /// The CRI client (fails while containerd is stopped).
    pub fn cri(&self) -> Result<&Cri> {
        self.cri.as_ref().context("containerd is not running")
    }

    /// containerd's process id.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(BgProcess::pid)
    }

    /// Stops containerd with `signal` (SIGKILL after the grace period) and
    /// starts it again with the same config, root and state; waits until its
    /// CRI answers. Shims and containers keep running meanwhile.
    pub fn restart(&mut self, signal: Signal) -> Result<()> {
        self.cri = None;
        if let Some(mut p) = self.proc.take() {
            let status = p.kill_with(signal)?;
            lab_log!("containerd stopped with {signal}: {status}");
        }
        self.spawn()
    }

    /// The CNI network's name (the conflist's `name`).
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The temp dir holding containerd's root, state, sockets and config.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// containerd's log file (`--log-level debug`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The pods' log directory root (kubelet's `/var/log/pods`).
    pub fn pod_log_root(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    /// A sandbox config as kubelet builds one for a pod `namespace/name`
    /// with `uid` (attempt 0): metadata, hostname = the pod's name, kubelet's
    /// labels and annotations, the log directory, cluster DNS, and the Linux
    /// part (cgroup parent of a BestEffort pod under the cgroupfs driver,
    /// network/IPC namespaces of the pod, PID per container, seccomp
    /// unconfined as kubelet's default).
    pub fn sandbox_config(&self, namespace: &str, name: &str, uid: &str) -> v1::PodSandboxConfig {
        let pod_ns = |mode| v1::NamespaceOption {
            network: v1::NamespaceMode::Pod as i32,
            pid: mode as i32,
            ipc: v1::NamespaceMode::Pod as i32,
            ..Default::default()
        };
        v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self
                .pod_log_root()
                .join(format!("{namespace}_{name}_{uid}"))
                .display()
                .to_string(),
            dns_config: Some(v1::DnsConfig {
                servers: vec![crate::ROUTER.to_string()],
                searches: vec![format!("{namespace}.svc.cluster.local")],
                options: vec!["ndots:5".into()],
            }),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".into(), name.into()),
                ("io.kubernetes.pod.namespace".into(), namespace.into()),
                ("io.kubernetes.pod.uid".into(), uid.into()),
                ("app".into(), "lanlink-lab".into()),
            ]),
            annotations: HashMap::from([
                ("kubernetes.io/config.source".into(), "api".into()),
                (
                    "kubernetes.io/config.seen".into(),
                    "2026-01-01T00:00:00Z".into(),
                ),
            ]),
            linux: Some(v1::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/besteffort/pod{uid}", self.cgroup_root),
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(pod_ns(v1::NamespaceMode::Container)),
                    seccomp: Some(v1::SecurityProfile {
                        profile_type: v1::security_profile::ProfileType::Unconfined as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A container config as kubelet builds one: `name` (attempt 0) from the
    /// image running `command`, its log under the sandbox's log directory,
    /// kubelet's labels, BestEffort resources, the pod's namespaces.
    pub fn container_config(
        &self,
        sandbox: &v1::PodSandboxConfig,
        name: &str,
        command: &[&str],
    ) -> v1::ContainerConfig {
        let meta = sandbox.metadata.clone().unwrap_or_default();
        v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(v1::ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            working_dir: "/".into(),
            log_path: format!("{name}/0.log"),
            labels: HashMap::from([
                ("io.kubernetes.container.name".into(), name.into()),
                ("io.kubernetes.pod.name".into(), meta.name),
                ("io.kubernetes.pod.namespace".into(), meta.namespace),
                ("io.kubernetes.pod.uid".into(), meta.uid),
            ]),
            annotations: HashMap::from([(
                "io.kubernetes.container.restartCount".into(),
                "0".into(),
            )]),
            linux: Some(v1::LinuxContainerConfig {
                resources: Some(v1::LinuxContainerResources {
                    cpu_shares: 2,
                    oom_score_adj: 1000,
                    ..Default::default()
                }),
                security_context: Some(v1::LinuxContainerSecurityContext {
                    namespace_options: Some(v1::NamespaceOption {
                        network: v1::NamespaceMode::Pod as i32,
                        pid: v1::NamespaceMode::Container as i32,
                        ipc: v1::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    seccomp: Some(v1::SecurityProfile {
                        profile_type: v1::security_profile::ProfileType::Unconfined as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    /// `RunPodSandbox` with `config`; the sandbox's network namespace is
    /// registered for cleanup. Returns its id.
    pub fn run_pod_sandbox(&self, config: &v1::PodSandboxConfig) -> Result<String> {
        let cri = self.cri()?;
        let id = cri
            .run_pod_sandbox(config, CALL_TIMEOUT)
            .with_context(|| format!("containerd's log:\n{}", self.log_tail(30)))?;
        self.sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        self.sandbox_netns(&id)?;
        Ok(id)
    }

    /// The network namespace of sandbox `id` (from its verbose status:
    /// containerd's runtime spec), registered for cleanup.
    pub fn sandbox_netns(&self, id: &str) -> Result<PathBuf> {
        let status = self.cri()?.pod_sandbox_status(id, true)?;
        let info = status
            .info
            .get("info")
            .context("PodSandboxStatus verbose without `info`")?;
        let info: Value = serde_json::from_str(info).context("sandbox info JSON")?;
        let path = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .map(PathBuf::from)
            .with_context(|| format!("no network namespace in the sandbox's spec: {info}"))?;
        self.track_netns(&path)?;
        Ok(path)
    }

    /// Registers a sandbox namespace (`/var/run/netns/<name>`) for removal
    /// on drop, by the signal handler and by [`sweep`].
    fn track_netns(&self, path: &Path) -> Result<()> {
        let name = path
            .strip_prefix(NETNS_DIR)
            .or_else(|_| path.strip_prefix("/run/netns"))
            .ok()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .with_context(|| {
                format!(
                    "a sandbox namespace outside {NETNS_DIR}: {}",
                    path.display()
                )
            })?;
        let mut tracked = self.netns.lock().unwrap_or_else(|e| e.into_inner());
        if tracked.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        let mut list = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join(NETNS_LIST))
            .context("the netns list")?;
        writeln!(list, "{name}").context("the netns list")?;
        let reg = Registration::new(Resource::Netns {
            name: name.to_owned(),
        });
        tracked.push((name.to_owned(), reg));
        Ok(())
    }

    /// The entries of libcni's result cache that belong to this guard's
    /// network (`<network>-<container id>-<ifname>`).
    pub fn cni_results(&self) -> Vec<PathBuf> {
        results_of(&self.network)
    }

    /// The sandbox namespaces this guard saw that still exist.
    pub fn netns_left(&self) -> Vec<PathBuf> {
        self.netns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, _)| Path::new(NETNS_DIR).join(n))
            .filter(|p| p.exists())
            .collect()
    }

    /// Processes started for this containerd that are not containerd: its
    /// shims (their command line names its socket) and the containers (in
    /// the pods' cgroups).
    pub fn processes(&self) -> Vec<i32> {
        let mut pids = processes_naming(self.dir.path());
        if let Some(p) = self.pid() {
            pids.retain(|&x| x != p as i32);
        }
        pids.extend(cgroup_procs(&self.cgroup_root));
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The name of the pods' cgroup tree (`ll-<pid>-<n>-kubepods`, at the top
    /// of each controller's hierarchy).
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// The pods' cgroup directories that still exist (one per controller).
    pub fn cgroups(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_root)
    }

    /// Mounts under the temp dir (snapshots, shm).
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(self.dir.path())
    }

    /// Shim sockets of this containerd's sandboxes that exist under
    /// `/run/containerd/s`.
    pub fn shim_sockets(&self) -> Vec<PathBuf> {
        let known = self
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        shim_sockets_of(self.dir.path(), known)
    }

    /// What kubelet would do last: every sandbox stopped and removed.
    fn remove_all_sandboxes(&self) -> Result<()> {
        let cri = self.cri()?;
        for sb in cri.list_pod_sandbox()? {
            if let Err(e) = self.sandbox_netns(&sb.id) {
                lab_log!("cannot read the namespace of sandbox {}: {e:#}", sb.id);
            }
            self.sandboxes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(sb.id.clone());
            if let Err(e) = cri.stop_pod_sandbox(&sb.id) {
                lab_log!("cannot stop sandbox {}: {e:#}", sb.id);
            }
            if let Err(e) = cri.remove_pod_sandbox(&sb.id) {
                lab_log!("cannot remove sandbox {}: {e:#}", sb.id);
            }
        }
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let running = self.proc.as_mut().is_some_and(BgProcess::is_running);
        if running && let Err(e) = self.remove_all_sandboxes() {
            lab_log!("cannot remove containerd's sandboxes: {e:#}");
        }
        self.cri = None;
        if let Some(mut p) = self.proc.take()
            && let Err(e) = p.stop()
        {
            lab_log!("cannot stop containerd: {e:#}");
        }
        // Whatever is still running (shims, containers) goes before its
        // namespaces and mounts.
        kill_all(&self.processes());
        for (name, _reg) in self
            .netns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            if Path::new(NETNS_DIR).join(&name).exists() {
                cleanup::remove_netns(&name);
            }
        }
        unmount_all(self.dir.path());
        remove_cgroups(&self.cgroup_root);
        for sock in self.shim_sockets() {
            let _ = std::fs::remove_file(sock);
        }
        for result in self.cni_results() {
            let _ = std::fs::remove_file(result);
        }
        // In order, children first; `remove_dir` refuses a non-empty one.
        for dir in &self.absent_before {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Removes what containerd guards of runs that died without cleaning up
/// (SIGKILL, abort) left: for each temp dir `ll-<pid>-<n>-containerd.*`
/// whose run is gone, kills the processes naming it (containerd, shims) and
/// those in its pods' cgroups, removes the sandbox namespaces it lists, its
/// pods' cgroups, the mounts under it and the dir itself. Returns the dirs
/// removed. Meant to run before [`crate::sweep_leftovers`], which cannot
/// remove a dir with mounts under it.
pub fn sweep() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(cleanup::TMP_ROOT) else {
        return removed;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let base = name.split('.').next().unwrap_or(&name);
        if !base.ends_with(&format!("-{DIR_ROLE}")) {
            continue;
        }
        let dead = names::owner_pid(base)
            .and_then(|p| i32::try_from(p).ok())
            .is_some_and(|p| !cmd::pid_alive(p));
        if !dead {
            continue;
        }
        let dir = entry.path();
        let cgroup_root = std::fs::read_to_string(dir.join(CGROUP_FILE)).unwrap_or_default();
        let cgroup_root = cgroup_root.trim();
        let mut pids = processes_naming(&dir);
        if names::owner_pid(cgroup_root).is_some() {
            pids.extend(cgroup_procs(cgroup_root));
        }
        kill_all(&pids);
        for ns in std::fs::read_to_string(dir.join(NETNS_LIST))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with("cni-") && !n.contains('/'))
        {
            if Path::new(NETNS_DIR).join(ns).exists() {
                cleanup::remove_netns(ns);
            }
        }
        if names::owner_pid(cgroup_root).is_some() {
            remove_cgroups(cgroup_root);
        }
        for sock in shim_sockets_of(&dir, BTreeSet::new()) {
            let _ = std::fs::remove_file(sock);
        }
        unmount_all(&dir);
        cleanup::remove_dir(&dir);
        // Only when empty: a containerd of the host's keeps its sockets there.
        for d in ["/run/containerd/s", "/run/containerd"] {
            let _ = std::fs::remove_dir(d);
        }
        removed.push(name);
    }
    if !removed.is_empty() {
        lab_log!(
            "removed containerd leftovers of dead runs: {}",
            removed.join(" ")
        );
    }
    removed
}

/// containerd's `config.toml` (version 2) with everything under `root`.
fn config_toml(root: &Path) -> String {
    let p = |sub: &str| format!("{:?}", root.join(sub).display().to_string());
    format!(
        r#"version = 2
root = {root}
state = {state}
# Snapshotters that cannot work here only add noise to the log.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[debug]
  address = {debug}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  disable_apparmor = true
  enable_selinux = false
  # Without CAP_SYS_RESOURCE (a machine that is itself a container, as
  # here) no process may lower its OOM score below its parent's: the
  # sandbox's -998 would fail runc's create. Clamp to containerd's own.
  restrict_oom_score_adj = true
  # The streaming server (exec/attach URLs) on the node's loopback only.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{SNAPSHOTTER}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        # No systemd here: runc's cgroupfs driver, as podman's here.
        SystemdCgroup = false
        Root = {runc}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {bin}
    conf_dir = {conf}
    max_conf_num = 1
"#,
        root = p("root"),
        state = p("state"),
        sock = p("containerd.sock"),
        ttrpc = p("containerd.sock.ttrpc"),
        debug = p("debug.sock"),
        opt = p("opt"),
        runc = p("runc"),
        bin = p("cni/bin"),
        conf = p("cni/net.d"),
    )
}

/// Writes the image — a static busybox and links to its applets, entry
/// point `sleep 2147483647` (the sandbox's pause process) — as an OCI
/// image layout in `dir/layout` and archives it as `dir/image.tar`.
/// Returns the archive's path.
fn build_image(dir: &Path) -> Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    crate::podman::build_rootfs(&rootfs)?;
    let layer = dir.join("layer.tar");
    cmd::run_ok(
        Command::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "-C",
            ])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
        cmd::DEFAULT,
    )
    .context("cannot write the image's layer")?;
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256"))?;
    let add_blob = |bytes: &[u8]| -> Result<(String, usize)> {
        let hex = hex(&Sha256::digest(bytes));
        std::fs::write(layout.join("blobs/sha256").join(&hex), bytes)?;
        Ok((format!("sha256:{hex}"), bytes.len()))
    };
    let (layer_digest, layer_size) =
        add_blob(&std::fs::read(&layer).context("cannot read the layer")?)?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/sleep", "2147483647"],
            "Env": ["PATH=/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "lanlink lab: busybox-static"}],
    });
    let (config_digest, config_size) = add_blob(&serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = add_blob(&serde_json::to_vec(&manifest)?)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                // containerd's importer names the image from this one.
                "io.containerd.image.name": IMAGE,
                "org.opencontainers.image.ref.name": "1",
            },
        }],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let archive = dir.join("image.tar");
    cmd::run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .arg("."),
        cmd::DEFAULT,
    )
    .context("cannot write the image archive")?;
    Ok(archive)
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The socket of the shim of sandbox `id` for the containerd at `socket`:
/// containerd 1.6's `shim.SocketAddress`, `/run/containerd/s/` followed by
/// the hex SHA-256 of `<socket>/<namespace>/<id>`.
fn shim_socket(socket: &Path, id: &str) -> PathBuf {
    let key = socket.join(NAMESPACE).join(id);
    Path::new(SHIM_SOCKET_DIR).join(hex(&Sha256::digest(key.as_os_str().as_encoded_bytes())))
}

/// The shim sockets that exist of the containerd whose dir is `dir`: for
/// the ids in `known` and those of the tasks and sandboxes in its state dir
/// (a shim serves one sandbox and its containers; its socket is named after
/// the sandbox's id).
fn shim_sockets_of(dir: &Path, mut known: BTreeSet<String>) -> Vec<PathBuf> {
    for sub in [
        "state/io.containerd.runtime.v2.task/k8s.io",
        "state/io.containerd.grpc.v1.cri/sandboxes",
    ] {
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            known.extend(
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
    }
    let socket = dir.join("containerd.sock");
    known
        .iter()
        .map(|id| shim_socket(&socket, id))
        .filter(|p| p.exists())
        .collect()
}

/// libcni's cached results of network `network`.
fn results_of(network: &str) -> Vec<PathBuf> {
    let prefix = format!("{network}-");
    std::fs::read_dir(CNI_RESULTS)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(&prefix))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Processes (not this one) with an argument naming `dir` or a path in it.
fn processes_naming(dir: &Path) -> Vec<i32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let me = std::process::id() as i32;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && cmd::pid_alive(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .any(|arg| arg.windows(needle.len()).any(|w| w == needle))
            })
        })
        .collect()
}

/// Every directory of the cgroup tree `root` (a name at the top of the
/// hierarchies, as [`Containerd::cgroup_root`] gives it) (one per controller), parents
/// before children.
pub fn cgroup_dirs(root: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        out.push(dir.to_owned());
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.filter_map(|e| e.ok()) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    if root.is_empty() || root.contains('/') {
        return out;
    }
    // cgroup v1: one hierarchy per controller; v2: the root itself.
    let mut bases = vec![PathBuf::from(CGROUP_ROOT)];
    if let Ok(controllers) = std::fs::read_dir(CGROUP_ROOT) {
        bases.extend(controllers.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    for base in bases {
        let top = base.join(root);
        if top.is_dir() {
            walk(&top, &mut out);
        }
    }
    out
}

/// The processes in the cgroup tree `root`.
fn cgroup_procs(root: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = cgroup_dirs(root)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .filter(|&p| cmd::pid_alive(p))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes the cgroup tree `root`, children first (`rmdir` only removes
/// empty cgroups).
fn remove_cgroups(root: &str) {
    let mut dirs = cgroup_dirs(root);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        if let Err(e) = std::fs::remove_dir(&d) {
            lab_log!("cannot remove cgroup {}: {e}", d.display());
        }
    }
}

/// SIGKILLs `pids` and waits (≤ 5 s) until they are gone.
fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let gone = wait_until(Duration::from_secs(5), "killed processes to go", || {
        Ok(pids.iter().all(|&p| !cmd::pid_alive(p)).then_some(()))
    });
    if let Err(e) = gone {
        lab_log!("{e:#}: {pids:?}");
    }
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut ours: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // /proc/self/mounts escapes spaces as \040; lab paths have none.
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    ours.dedup();
    ours
}

/// Detaches every mount under `dir` (a killed shim leaves its containers'
/// rootfs and the sandboxes' shm mounted).
fn unmount_all(dir: &Path) {
    for m in mounts_under(dir) {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            lab_log!("cannot unmount {}: {e}", m.display());
        }
    }
}

/// The IPv4 address in a sandbox's status, if it has one.
pub fn sandbox_ip(status: &v1::PodSandboxStatusResponse) -> Result<Ipv4Addr> {
    let ip = status
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    ip.parse()
        .map_err(|e| anyhow!("the sandbox's IP {ip:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_under_the_root() {
        let toml = config_toml(Path::new("/tmp/ll-1-2-containerd.x"));
        for line in toml.lines().filter(|l| l.contains("= \"/")) {
            assert!(
                line.contains("\"/tmp/ll-1-2-containerd.x/") || line.contains(RUNC),
                "{line}"
            );
        }
        assert!(toml.contains("SystemdCgroup = false"));
    }
}
