//! [`Lan`]: the LAN a lab's nodes sit on — a namespace with a bridge, the
//! router address and a real DHCP server (dnsmasq).

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cleanup::LabDir;
use crate::cmd::BgProcess;
use crate::netns::NetNs;
use crate::wait::wait_until;
use crate::{LAN_PREFIX_LEN, ROUTER, check_lab_addr, names};

/// How the LAN's DHCP server is set up.
#[derive(Clone, Debug)]
pub struct LanOptions {
    /// Lease time in seconds (dnsmasq raises anything under 120 to 120).
    pub lease_secs: u32,
    /// First and last address of the DHCP pool (inside 198.18.0.0/24).
    pub pool: (Ipv4Addr, Ipv4Addr),
    /// Let dnsmasq ping an address before offering it, as it does by default
    /// on a real LAN. Off by default: the check delays every first OFFER by
    /// about 3 s, and the lab's addresses are only ever handed out by dnsmasq.
    pub ping_check: bool,
    /// More dnsmasq arguments, e.g. `--dhcp-host=02:00:00:00:00:01,198.18.0.150`.
    pub extra_args: Vec<String>,
    /// Prefix length of the LAN (default [`LAN_PREFIX_LEN`], a /24): the
    /// router's address on `br0`, the netmask dnsmasq hands out, and the
    /// addresses of nodes and hosts. At least 15, so the LAN stays inside
    /// 198.18.0.0/15; e.g. 22 for a pool of more than 250 pods.
    pub prefix_len: u8,
}

impl Default for LanOptions {
    fn default() -> Self {
        Self {
            lease_secs: 3600,
            pool: (
                Ipv4Addr::new(198, 18, 0, 100),
                Ipv4Addr::new(198, 18, 0, 199),
            ),
            ping_check: false,
            extra_args: Vec::new(),
            prefix_len: LAN_PREFIX_LEN,
        }
    }
}

impl LanOptions {
    /// The LAN's netmask, dotted (`255.255.255.0` for a /24).
    pub fn netmask(&self) -> Ipv4Addr {
        let host_bits = 32u32.saturating_sub(u32::from(self.prefix_len));
        Ipv4Addr::from(u32::MAX.checked_shl(host_bits).unwrap_or(0))
    }
}

/// One line of dnsmasq's lease file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsmasqLease {
    /// Unix time the lease expires (0: never).
    pub expiry: u64,
    /// Client MAC, lower case.
    pub mac: String,
    /// Leased address.
    pub ip: Ipv4Addr,
    /// Hostname the client sent (option 12), if any.
    pub hostname: Option<String>,
    /// Client identifier (option 61) as dnsmasq prints it, if any.
    pub client_id: Option<String>,
}

/// Parses dnsmasq's lease file: `<expiry> <mac> <ip> <hostname|*> <client-id|*>`
/// per line; DHCPv6 lines (`duid …` and IPv6 leases) and malformed lines are
/// skipped.
pub fn parse_leases(text: &str) -> Vec<DnsmasqLease> {
    let opt = |s: &str| (s != "*").then(|| s.to_owned());
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[0] == "duid" {
                return None;
            }
            Some(DnsmasqLease {
                expiry: f[0].parse().ok()?,
                mac: f[1].to_ascii_lowercase(),
                ip: f[2].parse().ok()?,
                hostname: opt(f[3]),
                client_id: f.get(4).and_then(|c| opt(c)),
            })
        })
        .collect()
}

/// The lab LAN: a namespace `ll-<pid>-<n>-lan` with bridge `br0` carrying
/// 198.18.0.1/24 (it is the LAN's router too) and dnsmasq serving DHCP on it.
/// Other namespaces plug into `br0` through veths ([`Lan::connect`]).
///
/// Dropping it stops dnsmasq and deletes the namespace (taking every LAN-side
/// veth, and so the far ends in nodes, with it) and its temp dir.
#[derive(Debug)]
pub struct Lan {
    // Field order is drop order: dnsmasq, then the namespace, then the files.
    dnsmasq: BgProcess,
    ns: NetNs,
    dir: LabDir,
    opts: LanOptions,
}

/// The command line of the LAN's dnsmasq for `opts`, with its lease file
/// and log (also used by the soak, which stops and starts its own).
pub fn dnsmasq_args(opts: &LanOptions, lease_file: &Path, log_file: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "dnsmasq".into(),
        "--no-daemon".into(),
        "--conf-file=/dev/null".into(),
        "--interface=br0".into(),
        "--bind-interfaces".into(),
        format!(
            "--dhcp-range={},{},{},{}",
            opts.pool.0,
            opts.pool.1,
            opts.netmask(),
            opts.lease_secs
        ),
        format!("--dhcp-option=option:router,{ROUTER}"),
        format!("--dhcp-leasefile={}", lease_file.display()),
        "--log-dhcp".into(),
        format!("--log-facility={}", log_file.display()),
        "--pid-file=".into(),
        "--port=0".into(),
        "--dhcp-authoritative".into(),
    ];
    if !opts.ping_check {
        args.push("--no-ping".into());
    }
    args.extend(opts.extra_args.iter().cloned());
    args
}

impl Lan {
    /// Creates the LAN and waits (≤ 10 s) until dnsmasq serves DHCP.
    pub fn new(opts: LanOptions) -> Result<Self> {
        check_lab_addr(opts.pool.0)?;
        check_lab_addr(opts.pool.1)?;
        if !(15..=30).contains(&opts.prefix_len) {
            bail!(
                "LAN prefix length {} must be 15..=30 (inside 198.18.0.0/15)",
                opts.prefix_len
            );
        }
        let ns = NetNs::new("lan")?;
        let dir = LabDir::new("lan")?;
        ns.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{ROUTER}/{}", opts.prefix_len),
            "dev",
            "br0",
        ])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;

        let lease_file = dir.path().join("leases");
        let log_file = dir.path().join("dnsmasq.log");
        let args = dnsmasq_args(&opts, &lease_file, &log_file);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        // With --no-daemon dnsmasq also logs to stderr: keep that apart.
        let mut dnsmasq = ns.spawn_logged(&argv, &dir.path().join("dnsmasq.stderr"))?;

        let log = || fs::read_to_string(&log_file).unwrap_or_default();
        wait_until(Duration::from_secs(10), "dnsmasq to serve DHCP", || {
            let log = log();
            if log.contains("DHCP, sockets bound") || log.contains("DHCP, IP range") {
                return Ok(Some(()));
            }
            if let Some(status) = dnsmasq.try_wait()? {
                let stderr =
                    fs::read_to_string(dir.path().join("dnsmasq.stderr")).unwrap_or_default();
                bail!("dnsmasq exited ({status}) at start: {}", stderr.trim());
            }
            Ok(None)
        })
        .with_context(|| format!("dnsmasq's log:\n{}", log()))?;
        Ok(Self {
            dnsmasq,
            ns,
            dir,
            opts,
        })
    }

    /// The LAN's namespace (the router and DHCP server live here).
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The options it was made with.
    pub fn options(&self) -> &LanOptions {
        &self.opts
    }

    /// The LAN's temp dir (lease file, dnsmasq logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// dnsmasq's lease file.
    pub fn lease_file(&self) -> PathBuf {
        self.dir.path().join("leases")
    }

    /// The leases dnsmasq holds now (empty before the first one).
    pub fn leases(&self) -> Vec<DnsmasqLease> {
        parse_leases(&fs::read_to_string(self.lease_file()).unwrap_or_default())
    }

    /// Waits (polling, bounded) until the lease file holds a lease for `mac`.
    pub fn wait_for_lease(&self, mac: &str, timeout: Duration) -> Result<DnsmasqLease> {
        let mac = mac.to_ascii_lowercase();
        wait_until(timeout, &format!("a lease for {mac}"), || {
            Ok(self.leases().into_iter().find(|l| l.mac == mac))
        })
        .with_context(|| {
            format!(
                "leases in {}: {:?}",
                self.lease_file().display(),
                self.leases()
            )
        })
    }

    /// Waits (bounded) until the lease file holds no lease for `mac` (e.g.
    /// after a DHCPRELEASE).
    pub fn wait_for_no_lease(&self, mac: &str, timeout: Duration) -> Result<()> {
        let mac = mac.to_ascii_lowercase();
        wait_until(
            timeout,
            &format!("the lease of {mac} to leave the lease file"),
            || Ok((!self.leases().iter().any(|l| l.mac == mac)).then_some(())),
        )
    }

    /// dnsmasq's log (`--log-dhcp`: every DISCOVER/OFFER/REQUEST/ACK/RELEASE).
    pub fn dhcp_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// Plugs `ns` into the LAN: a veth whose LAN end is a port of `br0` and
    /// whose other end is `ifname` in `ns`, both up. Created from inside the
    /// LAN namespace, so nothing ever appears in the root namespace. Returns
    /// the LAN-side name.
    pub fn connect(&self, ns: &NetNs, ifname: &str) -> Result<String> {
        let port = format!("p{}", names::next_id());
        self.ns
            .ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                ifname,
                "netns",
                ns.name(),
            ])
            .with_context(|| format!("cannot connect {} to the LAN", ns.name()))?;
        self.ns.ip(&["link", "set", &port, "master", "br0", "up"])?;
        ns.ip(&["link", "set", ifname, "up"])?;
        Ok(port)
    }

    /// A plain host on the LAN (a traffic peer for tests): a namespace whose
    /// `eth0` has `ip`/24, default route via the router.
    pub fn add_host(&self, role: &str, ip: Ipv4Addr) -> Result<LanHost> {
        check_lab_addr(ip)?;
        let ns = NetNs::new(role)?;
        self.connect(&ns, "eth0")?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{ip}/{}", self.opts.prefix_len),
            "dev",
            "eth0",
        ])?;
        ns.ip(&["route", "add", "default", "via", &ROUTER.to_string()])?;
        let mac = ns.mac("eth0")?;
        Ok(LanHost { ns, ip, mac })
    }

    /// dnsmasq's process id.
    pub fn dnsmasq_pid(&self) -> u32 {
        self.dnsmasq.pid()
    }
}

/// A host on the LAN with a static address (see [`Lan::add_host`]).
#[derive(Debug)]
pub struct LanHost {
    ns: NetNs,
    ip: Ipv4Addr,
    mac: String,
}

impl LanHost {
    /// Its namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// Its address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The MAC of its `eth0`.
    pub fn mac(&self) -> &str {
        &self.mac
    }

    /// Its namespace, address and MAC (a [`crate::Node`] starts as a host).
    pub(crate) fn into_parts(self) -> (NetNs, Ipv4Addr, String) {
        (self.ns, self.ip, self.mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dnsmasq_lease_lines() {
        let text = "\
1795425121 46:39:DA:a3:51:95 198.18.0.152 foo 01:46:39:da:a3:51:95
0 02:00:00:00:00:01 198.18.0.150 * *
duid 00:01:00:01:2c:6d:3e:11:52:54:00:12:34:56
1795425121 1234 2001:db8::5 host6 00:01:00:01
garbage
";
        let leases = parse_leases(text);
        assert_eq!(
            leases,
            vec![
                DnsmasqLease {
                    expiry: 1_795_425_121,
                    mac: "46:39:da:a3:51:95".into(),
                    ip: Ipv4Addr::new(198, 18, 0, 152),
                    hostname: Some("foo".into()),
                    client_id: Some("01:46:39:da:a3:51:95".into()),
                },
                DnsmasqLease {
                    expiry: 0,
                    mac: "02:00:00:00:00:01".into(),
                    ip: Ipv4Addr::new(198, 18, 0, 150),
                    hostname: None,
                    client_id: None,
                },
            ]
        );
    }

    #[test]
    fn empty_lease_file_has_no_leases() {
        assert!(parse_leases("").is_empty());
    }

    #[test]
    fn netmask_follows_the_prefix_length() {
        let mut o = LanOptions::default();
        assert_eq!(o.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        o.prefix_len = 22;
        assert_eq!(o.netmask(), Ipv4Addr::new(255, 255, 252, 0));
    }

    #[test]
    fn default_pool_is_in_the_lab_range() {
        let o = LanOptions::default();
        assert!(check_lab_addr(o.pool.0).is_ok() && check_lab_addr(o.pool.1).is_ok());
    }
}
