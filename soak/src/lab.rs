//! The soak's lab: the lab crate's LAN (dnsmasq), one node and the real
//! agent, with what the faults need on top: a dnsmasq the soak can stop,
//! restart and reconfigure, the agent's state dir on a size-limited tmpfs
//! of the soak's own mount namespace, and the node as it was before the
//! first pod (the baseline the leak checks compare with).

use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lanlink_lab::cmd::BgProcess;
use lanlink_lab::netns::in_netns;
use lanlink_lab::{Agent, AgentOptions, Lan, LanOptions, Node, PodNet, ROUTER, wait_until};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// The node's address on the LAN.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

/// First and last address of the DHCP pool: small, so that exhausting it
/// takes a few dozen ADDs, yet room for 4 workers' pods, 5 residents and
/// the leases that stay on the server until they expire (120 s) after a
/// NAK or a release lost in an outage (40 addresses).
pub const POOL: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(198, 18, 0, 100),
    Ipv4Addr::new(198, 18, 0, 139),
);

/// The lease time dnsmasq grants: its minimum (it raises anything lower to
/// 120 s), so resident pods renew every 60 s (T1).
pub const LEASE_SECS: u32 = 120;

/// A static address outside the pool that the NAK fault gives a resident's
/// MAC, so that dnsmasq refuses the renewal of its current address.
pub const NAK_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 230);

/// Size of the agent's state dir (tmpfs): room for the state file of a few
/// dozen endpoints and the deletion queue, and quick to fill.
pub const STATE_TMPFS_SIZE: &str = "512k";

/// The agent's `--flow-timeout` in seconds: short, so flows a lost DEL
/// left behind expire within a checkpoint's patience.
pub const FLOW_TIMEOUT_SECS: u64 = 10;

/// The state dir's tmpfs, for [`unmount_state`].
static STATE_MOUNT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Lazily unmounts the agent's state tmpfs (from a signal handler, or when
/// the lab drops): the agent's temp dir can then be removed.
pub fn unmount_state() {
    if let Some(path) = STATE_MOUNT.get()
        && let Err(e) = nix::mount::umount2(path, MntFlags::MNT_DETACH)
        && e != nix::errno::Errno::EINVAL
    {
        eprintln!("soak: cannot unmount {}: {e}", path.display());
    }
}

/// Windows in which the DHCP server cannot hear the node (dnsmasq stopped
/// or restarting, the uplink down): a DHCPRELEASE sent then is lost (DHCP
/// has no acknowledgement for it), and the lease stays in the server's
/// file until it expires.
#[derive(Debug, Default)]
pub struct Outage {
    generation: AtomicU64,
    active: AtomicU32,
}

impl Outage {
    fn begin(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let _ = self
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// A mark to compare with [`Outage::since`] after a call.
    pub fn mark(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether an outage overlapped the span since `mark`.
    pub fn since(&self, mark: u64) -> bool {
        self.active.load(Ordering::SeqCst) > 0 || self.generation.load(Ordering::SeqCst) != mark
    }
}

/// dnsmasq run by the soak itself in the LAN's namespace (the lab's own
/// instance is stopped at start; `Lan` has no stop/start), with the lab's
/// arguments, the lab's lease file and a log of its own.
#[derive(Debug)]
pub struct Dhcp {
    ns_path: PathBuf,
    base_args: Vec<String>,
    log: PathBuf,
    stderr: PathBuf,
    proc: Mutex<Option<BgProcess>>,
    /// When the server could not be reached.
    pub outage: Outage,
    stopped: std::sync::atomic::AtomicBool,
}

impl Dhcp {
    /// The arguments `lanlink_lab::Lan::new` gives dnsmasq, with this log.
    fn new(lan: &Lan) -> Self {
        let log = lan.dir().join("soak-dnsmasq.log");
        let base_args = lanlink_lab::lan::dnsmasq_args(lan.options(), &lan.lease_file(), &log);
        Self {
            ns_path: lan.ns().path().to_owned(),
            base_args,
            log,
            stderr: lan.dir().join("soak-dnsmasq.stderr"),
            proc: Mutex::new(None),
            outage: Outage::default(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn starts_logged(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("DHCP, IP range")
            .count()
    }

    /// Starts dnsmasq with `extra` arguments (stopping a running one first)
    /// and waits (≤ 10 s) until it logs that it serves.
    pub fn start(&self, extra: &[String]) -> Result<()> {
        self.outage.begin();
        let r = self.start_inner(extra);
        // Ends the stop's outage too (a stopped server counts as one).
        self.outage.end();
        if self.stopped.swap(false, Ordering::SeqCst) {
            self.outage.end();
        }
        r
    }

    fn start_inner(&self, extra: &[String]) -> Result<()> {
        let mut guard = self.proc.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut p) = guard.take() {
            p.stop().context("stopping dnsmasq")?;
        }
        let before = self.starts_logged();
        let mut c = in_netns(&self.ns_path);
        c.args(&self.base_args).args(extra);
        let mut proc = BgProcess::spawn_logged(&mut c, "dnsmasq", &self.stderr)?;
        wait_until(Duration::from_secs(10), "dnsmasq to serve DHCP", || {
            if self.starts_logged() > before {
                return Ok(Some(()));
            }
            if let Some(status) = proc.try_wait()? {
                bail!(
                    "dnsmasq exited ({status}): {}",
                    fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            Ok(None)
        })?;
        *guard = Some(proc);
        Ok(())
    }

    /// Stops dnsmasq (SIGTERM; its lease file stays).
    pub fn stop(&self) -> Result<()> {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            self.outage.begin();
        }
        let mut guard = self.proc.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut p) = guard.take() {
            p.stop().context("stopping dnsmasq")?;
        }
        Ok(())
    }

    /// Its log (`--log-dhcp`).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What the node looked like with the agent running and no pod attached.
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    /// `ip -o -4 route show table all` lines.
    pub routes: Vec<String>,
    /// `ip -o addr show` lines.
    pub addrs: Vec<String>,
    /// `HOST_ROUTES` prefixes.
    pub host_routes: Vec<String>,
}

/// The soak's lab. Field order is drop order: the agent stops before its
/// node goes, dnsmasq before the LAN.
#[derive(Debug)]
pub struct SoakLab {
    /// `lanlinkd` (killed and restarted by the faults).
    pub agent: Mutex<Agent>,
    /// The agent's pid (updated at each restart; 0 while it is down).
    pub agent_pid: AtomicU32,
    /// The node.
    pub node: Node,
    /// dnsmasq.
    pub dhcp: Dhcp,
    /// The LAN.
    pub lan: Lan,
    /// Where `lanlinkd` and `lanlink` are.
    pub bin_dir: PathBuf,
    /// The agent's socket.
    pub socket: PathBuf,
    /// The agent's state dir (a tmpfs mounted by the soak).
    pub state_dir: PathBuf,
    /// The agent's pin dir.
    pub pin_dir: PathBuf,
    /// The agent's log file.
    pub agent_log: PathBuf,
    /// The netconf of the soak's pods (arpProbeMs set per pod).
    pub netconf: Value,
    /// The node before the first pod.
    pub baseline: Baseline,
}

impl SoakLab {
    /// Builds the lab: LAN with a 16-address pool and 120 s leases, the
    /// node, the agent with its state dir moved onto a tmpfs of
    /// [`STATE_TMPFS_SIZE`] (the soak must already run in a private mount
    /// namespace, see [`crate::private_mount_ns`]).
    pub fn start(bin_dir: &Path) -> Result<Self> {
        let lan = Lan::new(LanOptions {
            lease_secs: LEASE_SECS,
            pool: POOL,
            ..LanOptions::default()
        })?;
        // The lab's dnsmasq cannot be stopped and started from outside:
        // the soak runs its own with the same arguments and lease file.
        let dhcp = Dhcp::new(&lan);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(lan.dnsmasq_pid() as i32),
            Signal::SIGTERM,
        )
        .context("cannot stop the lab's dnsmasq")?;
        wait_until(Duration::from_secs(5), "the lab's dnsmasq to exit", || {
            Ok((!lanlink_lab::cmd::pid_alive(lan.dnsmasq_pid() as i32)).then_some(()))
        })?;
        dhcp.start(&[])?;
        let node = Node::new(&lan, "node", NODE_IP)?;
        let mut agent = Agent::start(
            &node,
            AgentOptions {
                bin_dir: bin_dir.to_owned(),
                extra_args: vec!["--flow-timeout".into(), FLOW_TIMEOUT_SECS.to_string()],
                ..AgentOptions::default()
            },
        )?;
        // The state dir onto a size-limited tmpfs: stop the agent, mount,
        // start it again (no pod exists yet, so there is nothing to carry).
        agent.kill(Signal::SIGTERM)?;
        let state_dir = agent.state_dir();
        nix::mount::mount(
            Some("lanlink-soak-state"),
            &state_dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={STATE_TMPFS_SIZE},mode=0700").as_str()),
        )
        .with_context(|| format!("cannot mount a tmpfs on {}", state_dir.display()))?;
        let _ = STATE_MOUNT.set(state_dir.clone());
        agent.restart()?;
        let netconf = PodNet::primary().dhcp_timeout_ms(2000).netconf(&agent);
        let lab = Self {
            agent_pid: AtomicU32::new(agent.pid().unwrap_or(0)),
            socket: agent.socket(),
            pin_dir: agent.pin_dir().to_owned(),
            agent_log: agent.log_path(),
            state_dir,
            agent: Mutex::new(agent),
            node,
            dhcp,
            lan,
            bin_dir: bin_dir.to_owned(),
            netconf,
            baseline: Baseline::default(),
        };
        Ok(lab)
    }

    /// Records the node as it is now (call with no pod attached).
    pub fn take_baseline(&mut self) -> Result<()> {
        self.baseline = Baseline {
            routes: self.node_routes()?,
            addrs: self.node_addrs()?,
            host_routes: lanlink_lab::pods::host_routes(&self.pin_dir)?,
        };
        Ok(())
    }

    /// `ip -o -4 route show table all` in the node.
    pub fn node_routes(&self) -> Result<Vec<String>> {
        Ok(self
            .node
            .ns()
            .ip(&["-o", "-4", "route", "show", "table", "all"])?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// `ip -o addr show` in the node (both families).
    pub fn node_addrs(&self) -> Result<Vec<String>> {
        Ok(self
            .node
            .ns()
            .ip(&["-o", "addr", "show"])?
            .lines()
            // Lifetimes change between two reads.
            .map(|l| l.split("\\").next().unwrap_or(l).trim().to_owned())
            .collect())
    }

    /// The netconf of a pod whose ADD ARP-probes for `probe_ms`.
    pub fn netconf_with_probe(&self, probe_ms: u32) -> Value {
        let mut conf = self.netconf.clone();
        conf["ipam"]["arpProbeMs"] = json!(probe_ms);
        conf
    }

    /// SIGKILLs the agent (pins and state stay).
    pub fn kill_agent(&self) -> Result<()> {
        let mut agent = self.agent.lock().unwrap_or_else(|p| p.into_inner());
        self.agent_pid.store(0, Ordering::Relaxed);
        agent.kill(Signal::SIGKILL).map(drop)
    }

    /// Starts the agent again (same socket, state dir, pin dir), as a
    /// DaemonSet restarts its pod; waits until it serves.
    pub fn restart_agent(&self) -> Result<()> {
        let mut agent = self.agent.lock().unwrap_or_else(|p| p.into_inner());
        agent.restart()?;
        self.agent_pid
            .store(agent.pid().unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    /// The agent's log so far (the tail of `max` bytes).
    pub fn agent_log_tail(&self, max: usize) -> String {
        let log = fs::read_to_string(&self.agent_log).unwrap_or_default();
        let start = log.len().saturating_sub(max);
        let start = (start..log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(log.len());
        log[start..].to_owned()
    }

    /// Takes the node's uplink down.
    pub fn uplink_down(&self) -> Result<()> {
        self.dhcp.outage.begin();
        self.node
            .ns()
            .ip(&["link", "set", "eth0", "down"])
            .map(drop)
    }

    /// Brings the uplink up and puts the default route back, as the node's
    /// own network manager would (the kernel drops it with the link).
    pub fn uplink_up(&self) -> Result<()> {
        let r = self.node.ns().ip(&["link", "set", "eth0", "up"]);
        self.dhcp.outage.end();
        r?;
        self.node
            .ns()
            .ip(&[
                "route",
                "replace",
                "default",
                "via",
                &ROUTER.to_string(),
                "dev",
                "eth0",
            ])
            .map(drop)
    }

    /// Remounts the state dir read-only (`true`) or read-write.
    pub fn state_read_only(&self, ro: bool) -> Result<()> {
        let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if ro {
            flags |= MsFlags::MS_RDONLY;
        }
        nix::mount::mount(
            None::<&str>,
            &self.state_dir,
            None::<&str>,
            flags,
            Some(format!("size={STATE_TMPFS_SIZE},mode=0700").as_str()),
        )
        .with_context(|| format!("cannot remount {} (ro={ro})", self.state_dir.display()))
    }

    fn filler(&self) -> PathBuf {
        self.state_dir.join(".soak-filler")
    }

    /// Fills the state dir's tmpfs until a write fails with ENOSPC.
    pub fn fill_state(&self) -> Result<()> {
        let mut f = fs::File::create(self.filler()).context("cannot create the filler")?;
        let block = vec![0u8; 4096];
        // Bounded: the tmpfs is STATE_TMPFS_SIZE.
        for _ in 0..100_000 {
            match f.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc_enospc()) => return Ok(()),
                Err(e) => return Err(e).context("filling the state dir"),
            }
        }
        bail!("the state dir did not fill up")
    }

    /// Frees what [`SoakLab::fill_state`] took.
    pub fn unfill_state(&self) -> Result<()> {
        match fs::remove_file(self.filler()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).context("cannot remove the filler")
            }
            _ => Ok(()),
        }
    }
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

impl Drop for SoakLab {
    fn drop(&mut self) {
        // The tmpfs must go before the agent's temp dir is removed (a
        // mount point cannot be); a lazy unmount is enough, the mount
        // namespace dies with the process anyway.
        let _ = self.unfill_state();
        unmount_state();
        let _ = self.dhcp.stop();
    }
}
