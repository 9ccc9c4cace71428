//! The benchmark's lab: one LAN (198.18.0.0/22, dnsmasq) with a LAN host
//! running the traffic servers, and the three variants side by side on it,
//! each with a measured pod A (pod → LAN host) and pod B (pod A → pod B):
//!
//! ```text
//!  LAN netns: br0 198.18.0.1/22, dnsmasq 198.18.1.1–198.18.3.254 (--no-ping)
//!   ├── LAN host 198.18.0.2: iperf3 server, lab-rr server, UDP receiver
//!   ├── limit:   pod A 198.18.0.20, pod B .21, veths straight into br0
//!   ├── lanlink: node 198.18.0.10 (lanlinkd on eth0), pods by the lanlink
//!   │            CNI plugin, leases from dnsmasq
//!   └── bridge:  node 198.18.0.11, br0 with eth0 enslaved, br_netfilter on,
//!                pods by the reference `bridge` + `dhcp` plugins
//! ```
//!
//! Every piece is a lab guard, so the whole lab goes on every exit path.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lanlink_lab::cleanup::LabDir;
use lanlink_lab::cmd::{self, BgProcess};
use lanlink_lab::pods::leased_ip;
use lanlink_lab::{
    Agent, AgentOptions, CniCall, CniOutput, Lan, LanHost, LanOptions, NetNs, Node, ROUTER,
    cni_exec, lab_netconf,
};
use serde_json::{Value, json};

use crate::measure::{self, Tools};

/// Prefix length of the benchmark's LAN: room for 250+ pods per node.
pub const PREFIX_LEN: u8 = 22;
/// The LAN host that runs the servers.
pub const LAN_HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The node running lanlinkd.
pub const LANLINK_NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// The node with the Linux bridge.
pub const BRIDGE_NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
/// Static addresses of the `limit` variant's pods A and B.
pub const LIMIT_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 0, 20), Ipv4Addr::new(198, 18, 0, 21)];
/// dnsmasq's pool: 766 addresses, for pods of both nodes.
pub const POOL: (Ipv4Addr, Ipv4Addr) =
    (Ipv4Addr::new(198, 18, 1, 1), Ipv4Addr::new(198, 18, 3, 254));
/// Lease time: longer than any run, so no renewal happens while measuring.
pub const LEASE_SECS: u32 = 4 * 3600;
/// The reference plugins from Debian's containernetworking-plugins.
pub const REFERENCE_BRIDGE: &str = "/usr/lib/cni/bridge";
/// The reference DHCP IPAM plugin (and its daemon).
pub const REFERENCE_DHCP: &str = "/usr/lib/cni/dhcp";

/// The three ways a pod is attached to the LAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    /// The pod's veth straight into the LAN bridge: no forwarding hop.
    Limit,
    /// lanlinkd and the lanlink CNI plugin.
    Lanlink,
    /// A Linux bridge in the node with the uplink enslaved, br_netfilter on.
    Bridge,
}

impl Variant {
    /// Every variant, in the interleaving order.
    pub const ALL: [Variant; 3] = [Variant::Limit, Variant::Lanlink, Variant::Bridge];

    /// Its name in results.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Limit => "limit",
            Variant::Lanlink => "lanlink",
            Variant::Bridge => "bridge",
        }
    }
}

/// A measured pod: its namespace, address, the CNI container id (empty
/// for `limit`) and, for pod B, the iperf3 server it runs.
#[derive(Debug)]
pub struct Pod {
    // Field order is drop order: the server before its namespace.
    /// iperf3 server inside the pod (pod B only).
    pub server: Option<BgProcess>,
    /// Its namespace.
    pub ns: NetNs,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// `CNI_CONTAINERID` of its attachment.
    pub id: String,
}

/// The lanlink node.
#[derive(Debug)]
pub struct LanlinkSide {
    /// Pod A, pod B (until the scale phase removes it).
    pub pods: Vec<Pod>,
    /// Pods added for the scale phase (idle, leased, attached by CNI).
    pub extra: Vec<Pod>,
    /// lanlinkd.
    pub agent: Agent,
    /// The node.
    pub node: Node,
}

/// The bridge node.
#[derive(Debug)]
pub struct BridgeSide {
    /// Pod A, pod B.
    pub pods: Vec<Pod>,
    /// Namespace holding the pod ends of the scale phase's idle veths.
    pub idle_ns: NetNs,
    /// Idle veths attached so far.
    pub idle: usize,
    /// The reference DHCP daemon (`dhcp daemon`), in the node namespace;
    /// held to be stopped on drop.
    _dhcpd: BgProcess,
    /// The node.
    pub node: Node,
    /// Holds the daemon's socket and log.
    pub dir: LabDir,
}

/// The limit variant's pods, on the LAN itself.
#[derive(Debug)]
pub struct LimitSide {
    /// Pod A, pod B.
    pub pods: Vec<Pod>,
    /// Namespace holding the pod ends of the scale phase's idle veths.
    pub idle_ns: NetNs,
    /// Idle veths attached so far.
    pub idle: usize,
}

/// The whole lab.
#[derive(Debug)]
pub struct Topology {
    // Field order is drop order: pods and nodes, then servers, then the LAN.
    /// The lanlink node.
    pub lanlink: LanlinkSide,
    /// The bridge node.
    pub bridge: BridgeSide,
    /// The limit pods.
    pub limit: LimitSide,
    /// Servers in the LAN host, held to be stopped on drop.
    _servers: Vec<BgProcess>,
    /// The LAN host.
    pub host: LanHost,
    /// The LAN.
    pub lan: Lan,
    /// lanlink's binaries.
    pub bin_dir: PathBuf,
    /// The traffic tools.
    pub tools: Tools,
    /// How long any server may live.
    pub budget: Duration,
}

impl Topology {
    /// Builds the lab and checks that every variant's pod A reaches the LAN
    /// host and pod B.
    pub fn new(bin_dir: &Path, tools: Tools, budget: Duration) -> Result<Self> {
        let lan = Lan::new(LanOptions {
            lease_secs: LEASE_SECS,
            pool: POOL,
            ping_check: false,
            prefix_len: PREFIX_LEN,
            ..LanOptions::default()
        })?;
        let host = lan.add_host("lan-host", LAN_HOST_IP)?;
        let servers = vec![
            measure::iperf_server(host.ns(), LAN_HOST_IP, budget)?,
            measure::rr_server(&tools, host.ns(), LAN_HOST_IP, budget)?,
        ];

        // limit: veths straight into the LAN bridge.
        let mut limit_pods = Vec::new();
        for (i, ip) in LIMIT_IPS.into_iter().enumerate() {
            let ns = NetNs::new(&format!("limit-{}", pod_letter(i)))?;
            lan.connect(&ns, "eth0")?;
            ns.ip(&["addr", "add", &format!("{ip}/{PREFIX_LEN}"), "dev", "eth0"])?;
            ns.ip(&["route", "add", "default", "via", &ROUTER.to_string()])?;
            limit_pods.push(Pod {
                server: None,
                ns,
                ip,
                id: String::new(),
            });
        }
        let limit = LimitSide {
            pods: limit_pods,
            idle_ns: NetNs::new("limit-idle")?,
            idle: 0,
        };

        // lanlink: the agent on the node's uplink, pods through the plugin.
        let node = Node::new(&lan, "node-lanlink", LANLINK_NODE_IP)?;
        br_netfilter_on(node.ns())?;
        let agent = Agent::start(&node, AgentOptions::from_bin_dir(bin_dir))?;
        let mut lanlink = LanlinkSide {
            pods: Vec::new(),
            extra: Vec::new(),
            agent,
            node,
        };
        for i in 0..2 {
            let ns = NetNs::new(&format!("lanlink-{}", pod_letter(i)))?;
            let (out, _) = lanlink.add(bin_dir, &ns)?;
            let ip = leased_ip(&out.ok().with_context(|| {
                format!("lanlink ADD failed; agent log:\n{}", lanlink.agent.log())
            })?)?;
            lanlink.pods.push(Pod {
                server: None,
                id: container_id(&ns),
                ns,
                ip,
            });
        }

        // bridge: the reference path.
        let bridge = BridgeSide::new(&lan)?;
        let mut topo = Self {
            lanlink,
            bridge,
            limit,
            _servers: servers,
            host,
            lan,
            bin_dir: bin_dir.to_owned(),
            tools,
            budget,
        };
        for i in 0..2 {
            let ns = NetNs::new(&format!("bridge-{}", pod_letter(i)))?;
            let (out, _) = topo.bridge.add(&ns)?;
            let result = out.ok().with_context(|| {
                format!(
                    "reference bridge+dhcp ADD failed; dhcp daemon log:\n{}",
                    topo.bridge.daemon_log()
                )
            })?;
            topo.bridge.pods.push(Pod {
                server: None,
                id: container_id(&ns),
                ip: leased_ip(&result)?,
                ns,
            });
        }

        // Pod B of each variant serves iperf3 for the pod → pod test.
        for v in Variant::ALL {
            let budget = topo.budget;
            let pod_b = &mut topo.pods_mut(v)[1];
            pod_b.server = Some(measure::iperf_server(&pod_b.ns, pod_b.ip, budget)?);
        }
        topo.check_reachability()?;
        Ok(topo)
    }

    /// Copies the agent's, dnsmasq's and the reference DHCP daemon's logs
    /// into `dir` (they go with the lab otherwise).
    pub fn save_logs(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, text) in [
            ("lanlinkd.log", self.lanlink.agent.log()),
            ("dnsmasq.log", self.lan.dhcp_log()),
            ("reference-dhcp-daemon.log", self.bridge.daemon_log()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// The measured pods of `v` (A, then B while it exists).
    pub fn pods(&self, v: Variant) -> &[Pod] {
        match v {
            Variant::Limit => &self.limit.pods,
            Variant::Lanlink => &self.lanlink.pods,
            Variant::Bridge => &self.bridge.pods,
        }
    }

    fn pods_mut(&mut self, v: Variant) -> &mut Vec<Pod> {
        match v {
            Variant::Limit => &mut self.limit.pods,
            Variant::Lanlink => &mut self.lanlink.pods,
            Variant::Bridge => &mut self.bridge.pods,
        }
    }

    /// Pinging fails fast with a clear message where a measurement would
    /// only time out.
    fn check_reachability(&self) -> Result<()> {
        for v in Variant::ALL {
            let pods = self.pods(v);
            let mut targets = vec![("the LAN host", LAN_HOST_IP)];
            if let Some(b) = pods.get(1) {
                targets.push(("pod B", b.ip));
            }
            for (what, ip) in targets {
                let p = lanlink_lab::ping(&pods[0].ns, ip, 3, Duration::from_secs(5))?;
                ensure!(
                    p.received > 0,
                    "{}: pod A cannot reach {what} ({ip}): {}",
                    v.name(),
                    p.summary
                );
            }
        }
        Ok(())
    }

    /// Removes pod B of every variant (DEL through the plugin where there
    /// is one), so the scale phase starts from one pod per node.
    pub fn remove_pod_b(&mut self) -> Result<()> {
        if let Some(b) = self.lanlink.pods.pop() {
            self.lanlink.del(&self.bin_dir, &b)?;
        }
        if let Some(b) = self.bridge.pods.pop() {
            self.bridge.del(&b)?;
        }
        self.limit.pods.truncate(1);
        Ok(())
    }

    /// How many pods `v` has attached (measured and idle).
    pub fn attached(&self, v: Variant) -> usize {
        match v {
            Variant::Limit => self.limit.pods.len() + self.limit.idle,
            Variant::Lanlink => self.lanlink.pods.len() + self.lanlink.extra.len(),
            Variant::Bridge => self.bridge.pods.len() + self.bridge.idle,
        }
    }

    /// Attaches idle veths until `v` (limit or bridge) has `total` pods:
    /// one port per pod on the bridge that forwards for them, the pod ends
    /// up in one shared namespace (their traffic is not measured, only
    /// their presence). One `ip -batch` per namespace.
    pub fn grow_idle(&mut self, v: Variant, total: usize) -> Result<()> {
        let (bridge_ns, idle_ns, idle, measured) = match v {
            Variant::Limit => (
                self.lan.ns(),
                &self.limit.idle_ns,
                &mut self.limit.idle,
                self.limit.pods.len(),
            ),
            Variant::Bridge => (
                self.bridge.node.ns(),
                &self.bridge.idle_ns,
                &mut self.bridge.idle,
                self.bridge.pods.len(),
            ),
            Variant::Lanlink => bail!("lanlink pods are attached by CNI ADD"),
        };
        let want = total.saturating_sub(measured);
        if want <= *idle {
            return Ok(());
        }
        let mut create = String::new();
        let mut up = String::new();
        for k in *idle..want {
            create.push_str(&format!(
                "link add bi{k} type veth peer name i{k} netns {}\nlink set bi{k} master br0 up\n",
                idle_ns.name()
            ));
            up.push_str(&format!("link set i{k} up\n"));
        }
        ip_batch(bridge_ns, &create)?;
        ip_batch(idle_ns, &up)?;
        *idle = want;
        Ok(())
    }
}

impl LanlinkSide {
    /// CNI ADD of a pod in `ns` through the lanlink plugin, run in the node
    /// namespace; returns the output and the call's wall time.
    pub fn add(&self, bin_dir: &Path, ns: &NetNs) -> Result<(CniOutput, Duration)> {
        self.add_probing(bin_dir, ns, None)
    }

    /// [`add`](Self::add) with `ipam.arpProbeMs` set to `probe_ms` (`None`:
    /// the netconf's default).
    pub fn add_probing(
        &self,
        bin_dir: &Path,
        ns: &NetNs,
        probe_ms: Option<u64>,
    ) -> Result<(CniOutput, Duration)> {
        let mut call = self.call("ADD", ns);
        if let Some(ms) = probe_ms {
            call.netconf["ipam"] = serde_json::json!({"arpProbeMs": ms});
        }
        timed(|| cni_exec(&bin_dir.join(lanlink_lab::CNI_BIN), &call))
    }

    /// CNI DEL of a pod.
    pub fn del(&self, bin_dir: &Path, pod: &Pod) -> Result<()> {
        let call = self.call("DEL", &pod.ns);
        cni_exec(&bin_dir.join(lanlink_lab::CNI_BIN), &call)?
            .ok()
            .map(drop)
            .with_context(|| format!("lanlink DEL of {}", pod.id))
    }

    /// The call a runtime makes for `ns`.
    pub fn call(&self, command: &str, ns: &NetNs) -> CniCall {
        CniCall::new(
            command,
            &container_id(ns),
            Some(ns.path()),
            lab_netconf(&self.agent),
        )
        .with_args(&runtime_args(ns))
        .in_netns(self.node.path())
    }
}

impl BridgeSide {
    /// The bridge node: `br0` with the uplink enslaved and the node's
    /// address moved onto it, `bridge-nf-call-iptables` on, and the
    /// reference DHCP daemon serving its socket.
    fn new(lan: &Lan) -> Result<Self> {
        let node = Node::new(lan, "node-bridge", BRIDGE_NODE_IP)?;
        let ns = node.ns();
        let cidr = format!("{BRIDGE_NODE_IP}/{PREFIX_LEN}");
        // Only ever inside this lab namespace: enslaving an uplink is what
        // drops SSH on a real node (F3).
        ns.ip(&[
            "link",
            "add",
            "br0",
            "address",
            node.mac(),
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ns.ip(&["addr", "del", &cidr, "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "master", "br0"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        ns.ip(&["addr", "add", &cidr, "dev", "br0"])?;
        ns.ip(&[
            "route",
            "replace",
            "default",
            "via",
            &ROUTER.to_string(),
            "dev",
            "br0",
        ])?;
        br_netfilter_on(ns)?;

        let dir = LabDir::new("cni-dhcp")?;
        let socket = dir.path().join("dhcp.sock");
        let socket_arg = socket.display().to_string();
        let dhcpd = ns.spawn_logged(
            &[REFERENCE_DHCP, "daemon", "-socketpath", &socket_arg],
            &dir.path().join("dhcp.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() >= deadline {
                bail!(
                    "the reference dhcp daemon did not create {} within 10 s: {}",
                    socket.display(),
                    std::fs::read_to_string(dir.path().join("dhcp.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            pods: Vec::new(),
            idle_ns: NetNs::new("bridge-idle")?,
            idle: 0,
            _dhcpd: dhcpd,
            node,
            dir,
        })
    }

    /// The reference netconf: `bridge` on `br0` (no gateway, no masquerade:
    /// pods are plain LAN devices) with the `dhcp` IPAM and our daemon.
    pub fn netconf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "bench-reference",
            "type": "bridge",
            "bridge": "br0",
            "isGateway": false,
            "isDefaultGateway": false,
            "ipMasq": false,
            "hairpinMode": false,
            "ipam": {
                "type": "dhcp",
                "daemonSocketPath": self.dir.path().join("dhcp.sock"),
            },
        })
    }

    /// The call a runtime makes for `ns`.
    pub fn call(&self, command: &str, ns: &NetNs) -> CniCall {
        CniCall::new(command, &container_id(ns), Some(ns.path()), self.netconf())
            .with_args(&runtime_args(ns))
            .in_netns(self.node.path())
    }

    /// CNI ADD through the reference plugins; output and wall time.
    pub fn add(&self, ns: &NetNs) -> Result<(CniOutput, Duration)> {
        let call = self.call("ADD", ns);
        timed(|| cni_exec(Path::new(REFERENCE_BRIDGE), &call))
    }

    /// CNI DEL through the reference plugins.
    pub fn del(&self, pod: &Pod) -> Result<()> {
        let call = self.call("DEL", &pod.ns);
        cni_exec(Path::new(REFERENCE_BRIDGE), &call)?
            .ok()
            .map(drop)
            .with_context(|| format!("reference DEL of {}", pod.id))
    }

    /// What the reference DHCP daemon logged.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dhcp.log")).unwrap_or_default()
    }
}

/// `A`, `B`, … for pod names.
fn pod_letter(i: usize) -> char {
    (b'a' + (i % 26) as u8) as char
}

/// `CNI_ARGS` as containerd and CRI-O pass them (the reference plugins
/// reject unknown keys without `IgnoreUnknown`).
fn runtime_args(ns: &NetNs) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={}",
        ns.name()
    )
}

/// A pod's `CNI_CONTAINERID`: its namespace's unique name.
pub fn container_id(ns: &NetNs) -> String {
    ns.name().to_owned()
}

/// br_netfilter's hook on, in this namespace only (the sysctl is per
/// namespace since Linux 5.3), as on a Kubernetes node.
pub(crate) fn br_netfilter_on(ns: &NetNs) -> Result<()> {
    ns.sysctl("net.bridge.bridge-nf-call-iptables", "1")
        .context("br_netfilter must be loaded (`cargo xtask setup` does `modprobe br_netfilter`)")
}

/// Runs `f`, returning its value and how long it took.
pub fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let t0 = Instant::now();
    let v = f()?;
    Ok((v, t0.elapsed()))
}

/// `ip -n <ns> -batch -` with `commands` on stdin.
fn ip_batch(ns: &NetNs, commands: &str) -> Result<()> {
    let mut c = std::process::Command::new("ip");
    c.args(["-n", ns.name(), "-batch", "-"]);
    let out = cmd::run_with_stdin(&mut c, Some(commands.as_bytes()), Duration::from_secs(120))?;
    cmd::check(&format!("ip -n {} -batch", ns.name()), &out)
}
