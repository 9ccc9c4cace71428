//! `lanlinkd doctor`: the node's prerequisites, checked in the calling
//! network namespace without an agent running, one line each
//! (`ok|wrong|info  <name>  <detail>`), with the command that fixes
//! what is wrong.
//!
//! Doctor never changes anything: the agent fixes at start what the
//! reference CNI plugins fix (IPv4 forwarding; bpffs on its pin directory's
//! parent), and only reports the rest. The checks are pure functions over
//! [`Facts`], which [`Facts::read`] gathers from the system, so they are unit
//! tested with made-up values.

use std::{
    io::Read as _,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::dataplane::{self, AttachMode, BpffsPlan};

/// `net.ipv4.ip_forward` of the caller's network namespace (`/proc/sys/net`
/// shows the namespace of the process reading it).
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// How long one external command (`iptables-save`, `iptables --version`)
/// may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The verdict on one prerequisite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As lanlink needs it.
    Ok,
    /// Not as lanlink needs it: `fix` says what to run.
    Wrong,
    /// For the operator's information; nothing to do.
    Info,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Wrong => "wrong",
            Status::Info => "info",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The verdict.
    pub status: Status,
    /// What is checked (`ip_forward`, `rp_filter`, `bpffs`, …).
    pub name: &'static str,
    /// What was found.
    pub detail: String,
    /// The command that fixes it, when wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(status: Status, name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            name,
            detail: detail.into(),
            fix: None,
        }
    }

    fn wrong(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            fix: Some(fix.into()),
            ..Self::new(Status::Wrong, name, detail)
        }
    }

    /// The line printed for it: `<status>  <name>  <detail>[; fix: <command>]`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{:<6} {:<10}  {}",
            self.status.as_str(),
            self.name,
            self.detail
        );
        if let Some(fix) = &self.fix {
            line.push_str("; fix: ");
            line.push_str(fix);
        }
        line
    }
}

/// What doctor checks against: the agent's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The agent's `--uplink`.
    pub uplink: String,
    /// The agent's `--pin-dir`.
    pub pin_dir: PathBuf,
    /// The agent's `--iptables`.
    pub iptables: String,
}

/// An iptables backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-legacy` (x_tables).
    Legacy,
    /// `iptables-nft` (nf_tables).
    Nft,
}

impl Backend {
    fn binary(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy",
            Backend::Nft => "iptables-nft",
        }
    }
}

/// The uplink as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Operationally up, carrier and all (`IFF_RUNNING`).
    pub running: bool,
    /// Its MTU.
    pub mtu: u32,
}

/// Everything the checks look at, read once (see [`Facts::read`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// `net.ipv4.ip_forward` (None: unreadable).
    pub ip_forward: Option<String>,
    /// `net.ipv4.conf.all.rp_filter`.
    pub rp_filter_all: Option<String>,
    /// `net.ipv4.conf.<uplink>.rp_filter`.
    pub rp_filter_uplink: Option<String>,
    /// What the agent would do about bpffs at its pin directory.
    pub bpffs: BpffsPlan,
    /// The kernel release (`uname -r`).
    pub kernel_release: String,
    /// Why the kernel is too old for the dataplane, if it is.
    pub kernel_too_old: Option<String>,
    /// The uplink (None: no such interface in this namespace).
    pub uplink: Option<Link>,
    /// The backend of the agent's `--iptables` (None: not found or unknown).
    pub agent_backend: Option<Backend>,
    /// Whether `iptables-legacy-save -t nat` shows a `KUBE-SERVICES` chain
    /// (None: the tool is missing or failed).
    pub kube_legacy: Option<bool>,
    /// The same for `iptables-nft-save`.
    pub kube_nft: Option<bool>,
    /// `net.ipv6.conf.<uplink>.disable_ipv6` (None: no IPv6 in the kernel,
    /// or no such interface).
    pub uplink_disable_ipv6: Option<String>,
}

impl Facts {
    /// Reads the facts of the calling process's network namespace.
    pub fn read(opts: &Options) -> Self {
        let sysctl = |path: String| {
            std::fs::read_to_string(path)
                .ok()
                .map(|v| v.trim().to_owned())
        };
        let kube = |tool: &str| {
            run_bounded(Command::new(tool).args(["-t", "nat"]))
                .map(|out| out.lines().any(|l| l.starts_with(":KUBE-SERVICES ")))
        };
        Self {
            ip_forward: sysctl(IP_FORWARD.to_owned()),
            rp_filter_all: sysctl("/proc/sys/net/ipv4/conf/all/rp_filter".to_owned()),
            rp_filter_uplink: sysctl(format!("/proc/sys/net/ipv4/conf/{}/rp_filter", opts.uplink)),
            bpffs: dataplane::plan_bpffs(&opts.pin_dir, &dataplane::bpffs_facts(&opts.pin_dir)),
            kernel_release: sysctl("/proc/sys/kernel/osrelease".to_owned())
                .unwrap_or_else(|| "unknown".to_owned()),
            kernel_too_old: dataplane::check_kernel(AttachMode::Tc)
                .err()
                .map(|e| e.to_string()),
            uplink: read_link(&opts.uplink),
            agent_backend: run_bounded(Command::new(&opts.iptables).arg("--version"))
                .and_then(|v| backend_of_version(&v)),
            kube_legacy: kube("iptables-legacy-save"),
            kube_nft: kube("iptables-nft-save"),
            uplink_disable_ipv6: sysctl(format!(
                "/proc/sys/net/ipv6/conf/{}/disable_ipv6",
                opts.uplink
            )),
        }
    }
}

/// Every check, in the order printed.
pub fn checks(opts: &Options, facts: &Facts) -> Vec<Check> {
    let mut out = vec![
        check_ip_forward(facts.ip_forward.as_deref()),
        check_rp_filter(
            &opts.uplink,
            facts.rp_filter_all.as_deref(),
            facts.rp_filter_uplink.as_deref(),
        ),
        check_bpffs(&opts.pin_dir, &facts.bpffs),
        check_kernel(&facts.kernel_release, facts.kernel_too_old.as_deref()),
        check_uplink(&opts.uplink, facts.uplink),
    ];
    if let Some(link) = facts.uplink {
        out.push(Check::new(
            Status::Info,
            "mtu",
            format!("{} has MTU {}", opts.uplink, link.mtu),
        ));
    }
    out.push(check_iptables(
        &opts.iptables,
        facts.agent_backend,
        facts.kube_legacy,
        facts.kube_nft,
    ));
    out.push(check_ipv6(
        &opts.uplink,
        facts.uplink_disable_ipv6.as_deref(),
    ));
    out
}

/// IPv6 on the uplink: the agent hears the LAN's router advertisements
/// there, and speaks DHCPv6 for the pods. Off is not wrong (an IPv4-only
/// LAN), but pods then get IPv4 only whatever their netconf's `ipv6`.
pub fn check_ipv6(uplink: &str, disable_ipv6: Option<&str>) -> Check {
    match disable_ipv6 {
        Some("0") => Check::new(
            Status::Ok,
            "ipv6",
            format!("IPv6 is on on {uplink}: pods get IPv6 where the LAN's routers advertise"),
        ),
        Some(v) => Check::new(
            Status::Info,
            "ipv6",
            format!(
                "net.ipv6.conf.{uplink}.disable_ipv6={v}: pods get IPv4 only \
                 (sysctl -w net.ipv6.conf.{uplink}.disable_ipv6=0 for IPv6)"
            ),
        ),
        None => Check::new(
            Status::Info,
            "ipv6",
            format!("no IPv6 on {uplink} (or in the kernel): pods get IPv4 only"),
        ),
    }
}

/// Whether any check is wrong (doctor then exits 1).
pub fn any_wrong(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Wrong)
}

/// IPv4 forwarding: pods' traffic the node routes (ClusterIP, NodePort,
/// the node's own services) is dropped without it.
pub fn check_ip_forward(value: Option<&str>) -> Check {
    const FIX: &str = "sysctl -w net.ipv4.ip_forward=1";
    match value {
        Some("1") => Check::new(Status::Ok, "ip_forward", "net.ipv4.ip_forward=1"),
        Some(v) => Check::wrong(
            "ip_forward",
            format!(
                "net.ipv4.ip_forward={v}: the node does not route pods' service traffic \
                 (lanlinkd turns it on when it starts)"
            ),
            FIX,
        ),
        None => Check::wrong("ip_forward", format!("cannot read {IP_FORWARD}"), FIX),
    }
}

/// Reverse-path filtering on the uplink (the kernel applies the higher of
/// `all` and the interface's value). Strict mode does not hurt lanlink: pods
/// reach the node through their host veth, which holds the route back to
/// them, and the flow fix sends the replies of flows the node routed back
/// through that veth too, so every path the node sees is symmetric (the
/// scenario tests run every node with strict mode). Without the flow fix
/// (`--no-flow-fix`) replies leave on L2 and loose mode is the safer choice.
pub fn check_rp_filter(uplink: &str, all: Option<&str>, iface: Option<&str>) -> Check {
    let parse = |v: Option<&str>| v.and_then(|v| v.parse::<u8>().ok());
    let (Some(a), Some(i)) = (parse(all), parse(iface)) else {
        return Check::new(
            Status::Info,
            "rp_filter",
            format!("cannot read net.ipv4.conf.{{all,{uplink}}}.rp_filter"),
        );
    };
    let effective = a.max(i);
    let detail = format!("{effective} on {uplink} (all={a}, {uplink}={i})");
    match effective {
        1 => Check::new(
            Status::Info,
            "rp_filter",
            format!(
                "{detail}: strict, fine with the flow fix; with --no-flow-fix use loose mode: \
                 sysctl -w net.ipv4.conf.{uplink}.rp_filter=2 net.ipv4.conf.all.rp_filter=2"
            ),
        ),
        _ => Check::new(Status::Ok, "rp_filter", detail),
    }
}

/// bpffs at the pin directory, or what the agent will do about it.
pub fn check_bpffs(pin_dir: &Path, plan: &BpffsPlan) -> Check {
    match plan {
        BpffsPlan::Ready => Check::new(
            Status::Ok,
            "bpffs",
            format!("{} is on a bpf filesystem", pin_dir.display()),
        ),
        BpffsPlan::Mount(dir) => Check::new(
            Status::Info,
            "bpffs",
            format!(
                "{} is not on a bpf filesystem; lanlinkd mounts bpffs on {} when it starts",
                pin_dir.display(),
                dir.display()
            ),
        ),
        BpffsPlan::Refuse { dir, why } => Check::wrong(
            "bpffs",
            format!(
                "{} is not on a bpf filesystem and lanlinkd will not mount one on {}: {why}",
                pin_dir.display(),
                dir.display()
            ),
            format!("mkdir -p {0} && mount -t bpf bpf {0}", dir.display()),
        ),
    }
}

/// The kernel release against what the dataplane needs.
pub fn check_kernel(release: &str, too_old: Option<&str>) -> Check {
    match too_old {
        None => Check::new(Status::Ok, "kernel", format!("Linux {release}")),
        Some(why) => Check::wrong("kernel", why, "boot a newer kernel"),
    }
}

/// The uplink exists in this namespace and is up.
pub fn check_uplink(uplink: &str, link: Option<Link>) -> Check {
    match link {
        None => Check::wrong(
            "uplink",
            format!("no interface {uplink} in this network namespace"),
            "pass --uplink <the node's LAN interface> (see `ip -br link`)",
        ),
        Some(l) if !l.up => Check::wrong(
            "uplink",
            format!("{uplink} is down"),
            format!("ip link set dev {uplink} up"),
        ),
        Some(l) if !l.running => Check::wrong(
            "uplink",
            format!("{uplink} is up but has no carrier"),
            format!("connect {uplink} to the LAN (ip link show dev {uplink})"),
        ),
        Some(_) => Check::new(Status::Ok, "uplink", format!("{uplink} is up")),
    }
}

/// The backend kube-proxy writes (the one with `KUBE-SERVICES` chains)
/// against the one of the agent's `--iptables`: the agent's FORWARD accepts
/// and masquerade must be in the tables the packets traverse alongside
/// kube-proxy's.
pub fn check_iptables(
    iptables: &str,
    agent: Option<Backend>,
    kube_legacy: Option<bool>,
    kube_nft: Option<bool>,
) -> Check {
    let Some(agent) = agent else {
        return Check::wrong(
            "iptables",
            format!("`{iptables} --version` fails or names no known backend"),
            "install iptables, or pass --iptables iptables-nft (or iptables-legacy)",
        );
    };
    let kube: Vec<Backend> = [(Backend::Legacy, kube_legacy), (Backend::Nft, kube_nft)]
        .into_iter()
        .filter_map(|(b, has)| (has == Some(true)).then_some(b))
        .collect();
    let mine = format!("{iptables} writes with {}", agent.binary());
    match kube.as_slice() {
        [] => Check::new(
            Status::Info,
            "iptables",
            format!(
                "{mine}; no KUBE-SERVICES chain in either backend (no kube-proxy in iptables mode here)"
            ),
        ),
        kube if kube.contains(&agent) => Check::new(
            Status::Ok,
            "iptables",
            format!("{mine}, as kube-proxy does"),
        ),
        [k, ..] => Check::wrong(
            "iptables",
            format!(
                "{mine}, but kube-proxy's KUBE-SERVICES chains are in {}",
                k.binary()
            ),
            format!("run lanlinkd with --iptables {}", k.binary()),
        ),
    }
}

/// The backend `iptables --version` names: `iptables v1.8.9 (nf_tables)` or
/// `(legacy)`.
pub fn backend_of_version(version: &str) -> Option<Backend> {
    if version.contains("nf_tables") {
        Some(Backend::Nft)
    } else if version.contains("legacy") {
        Some(Backend::Legacy)
    } else {
        None
    }
}

/// Runs `cmd` for at most [`COMMAND_TIMEOUT`]; its stdout when it exits 0.
fn run_bounded(cmd: &mut Command) -> Option<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    // Read on a thread: a full pipe would block the child before it exits.
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = reader.join().ok()?.ok()?;
    status.filter(|s| s.success()).map(|_| out)
}

/// The uplink's flags and MTU, through `SIOCGIFFLAGS` and `SIOCGIFMTU` on a
/// socket of the calling thread's namespace (not `/sys/class/net`, which
/// shows the namespace that mounted `/sys`: `nsenter --net` keeps the
/// host's).
fn read_link(name: &str) -> Option<Link> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return None;
    }
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let request = || {
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req
    };
    let mut flags = request();
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes
    // `ifru_flags` of the ifreq it is given, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut flags) } != 0 {
        return None;
    }
    let mut mtu = request();
    // SAFETY: as above, writing `ifru_mtu`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut mtu) } != 0 {
        return None;
    }
    // SAFETY: the union members the two ioctls wrote.
    let (flags, mtu) = unsafe { (flags.ifr_ifru.ifru_flags, mtu.ifr_ifru.ifru_mtu) };
    let flags = i32::from(flags);
    Some(Link {
        up: flags & libc::IFF_UP != 0,
        running: flags & libc::IFF_RUNNING != 0,
        mtu: u32::try_from(mtu).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            uplink: "eth0".into(),
            pin_dir: PathBuf::from("/sys/fs/bpf/lanlink"),
            iptables: "iptables".into(),
        }
    }

    /// A node as lanlink wants it.
    fn good() -> Facts {
        Facts {
            ip_forward: Some("1".into()),
            rp_filter_all: Some("0".into()),
            rp_filter_uplink: Some("2".into()),
            bpffs: BpffsPlan::Ready,
            kernel_release: "6.8.0".into(),
            kernel_too_old: None,
            uplink: Some(Link {
                up: true,
                running: true,
                mtu: 1500,
            }),
            agent_backend: Some(Backend::Nft),
            kube_legacy: Some(false),
            kube_nft: Some(true),
            uplink_disable_ipv6: Some("0".into()),
        }
    }

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn a_good_node_has_nothing_wrong() {
        let c = checks(&opts(), &good());
        assert!(!any_wrong(&c), "{c:#?}");
        let names: Vec<_> = c.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "ip_forward",
                "rp_filter",
                "bpffs",
                "kernel",
                "uplink",
                "mtu",
                "iptables",
                "ipv6"
            ]
        );
        assert_eq!(find(&c, "ipv6").status, Status::Ok);
        let off = checks(
            &opts(),
            &Facts {
                uplink_disable_ipv6: Some("1".into()),
                ..good()
            },
        );
        assert!(!any_wrong(&off), "IPv4-only is not wrong");
        assert!(find(&off, "ipv6").detail.contains("IPv4 only"));
        assert_eq!(find(&c, "mtu").status, Status::Info);
        assert!(find(&c, "mtu").detail.contains("1500"));
    }

    #[test]
    fn forwarding_off_is_wrong_with_the_sysctl_that_fixes_it() {
        let c = checks(
            &opts(),
            &Facts {
                ip_forward: Some("0".into()),
                ..good()
            },
        );
        assert!(any_wrong(&c));
        let f = find(&c, "ip_forward");
        assert_eq!(f.status, Status::Wrong);
        assert_eq!(f.fix.as_deref(), Some("sysctl -w net.ipv4.ip_forward=1"));
        assert!(
            f.line().starts_with("wrong  ip_forward  net"),
            "{}",
            f.line()
        );
        assert!(f.line().ends_with("fix: sysctl -w net.ipv4.ip_forward=1"));
        assert_eq!(check_ip_forward(None).status, Status::Wrong);
    }

    #[test]
    fn strict_rp_filter_is_reported_not_wrong() {
        // The higher of all and the interface applies.
        let c = check_rp_filter("eth0", Some("1"), Some("0"));
        assert_eq!(c.status, Status::Info);
        assert!(c.detail.contains("net.ipv4.conf.eth0.rp_filter=2"), "{c:?}");
        assert_eq!(
            check_rp_filter("eth0", Some("0"), Some("1")).status,
            Status::Info
        );
        assert_eq!(
            check_rp_filter("eth0", Some("2"), Some("1")).status,
            Status::Ok
        );
        assert_eq!(
            check_rp_filter("eth0", Some("0"), Some("0")).status,
            Status::Ok
        );
        assert_eq!(
            check_rp_filter("eth0", None, Some("0")).status,
            Status::Info
        );
    }

    #[test]
    fn bpffs_is_wrong_only_where_the_agent_would_not_mount_it() {
        let pin = Path::new("/srv/pins/lanlink");
        assert_eq!(check_bpffs(pin, &BpffsPlan::Ready).status, Status::Ok);
        let m = check_bpffs(pin, &BpffsPlan::Mount("/srv/pins".into()));
        assert_eq!(m.status, Status::Info);
        let r = check_bpffs(
            pin,
            &BpffsPlan::Refuse {
                dir: "/srv/pins".into(),
                why: "that directory is not empty",
            },
        );
        assert_eq!(r.status, Status::Wrong);
        assert_eq!(
            r.fix.as_deref(),
            Some("mkdir -p /srv/pins && mount -t bpf bpf /srv/pins")
        );
    }

    #[test]
    fn kernel_and_uplink() {
        assert_eq!(check_kernel("6.1.0", None).status, Status::Ok);
        assert_eq!(check_kernel("5.4.0", Some("too old")).status, Status::Wrong);
        assert_eq!(check_uplink("eth0", None).status, Status::Wrong);
        let down = Link {
            up: false,
            running: false,
            mtu: 1500,
        };
        let c = check_uplink("eth0", Some(down));
        assert_eq!(c.fix.as_deref(), Some("ip link set dev eth0 up"));
        let no_carrier = Link { up: true, ..down };
        assert_eq!(check_uplink("eth0", Some(no_carrier)).status, Status::Wrong);
        // No MTU line without an uplink.
        let c = checks(
            &opts(),
            &Facts {
                uplink: None,
                ..good()
            },
        );
        assert!(c.iter().all(|c| c.name != "mtu"));
    }

    #[test]
    fn the_agent_writes_where_kube_proxy_does() {
        let ok = check_iptables("iptables", Some(Backend::Nft), Some(false), Some(true));
        assert_eq!(ok.status, Status::Ok);
        let wrong = check_iptables("iptables", Some(Backend::Nft), Some(true), Some(false));
        assert_eq!(wrong.status, Status::Wrong);
        assert_eq!(
            wrong.fix.as_deref(),
            Some("run lanlinkd with --iptables iptables-legacy")
        );
        // Leftovers in both: one of them is the agent's, fine.
        let both = check_iptables("iptables", Some(Backend::Legacy), Some(true), Some(true));
        assert_eq!(both.status, Status::Ok);
        let none = check_iptables("iptables", Some(Backend::Legacy), None, Some(false));
        assert_eq!(none.status, Status::Info);
        let missing = check_iptables("iptables", None, None, None);
        assert_eq!(missing.status, Status::Wrong);
    }

    #[test]
    fn iptables_versions_name_their_backend() {
        assert_eq!(
            backend_of_version("iptables v1.8.9 (nf_tables)"),
            Some(Backend::Nft)
        );
        assert_eq!(
            backend_of_version("iptables v1.8.9 (legacy)"),
            Some(Backend::Legacy)
        );
        assert_eq!(backend_of_version("iptables v1.4.21"), None);
    }

    #[test]
    fn json_has_status_name_detail_and_fix_only_when_wrong() {
        let c = checks(
            &opts(),
            &Facts {
                ip_forward: Some("0".into()),
                ..good()
            },
        );
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v[0]["status"], "wrong");
        assert_eq!(v[0]["name"], "ip_forward");
        assert_eq!(v[0]["fix"], "sysctl -w net.ipv4.ip_forward=1");
        assert!(v[1].get("fix").is_none(), "{v}");
    }

    #[test]
    fn the_loopback_reads_as_a_link() {
        // `lo` exists in every namespace; it may be down in a fresh one.
        let lo = read_link("lo").unwrap();
        assert_eq!(lo.mtu, 65536);
        assert_eq!(read_link("ll-no-such-if0"), None);
    }
}
