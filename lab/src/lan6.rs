//! IPv6 on the lab LAN (issue 16): the LAN's `br0` gets the router's
//! addresses ([`ROUTER6_LL`], [`ROUTER6`] in [`PREFIX6`]) and one of three
//! real IPv6 services runs on it:
//!
//! - [`Dnsmasq6`]: a second dnsmasq of its own (the [`Lan`]'s one keeps
//!   DHCPv4) sending router advertisements (`--enable-ra`) and serving
//!   DHCPv6 (`--dhcp-range=…::100,…::1ff,64,…`), or SLAAC only
//!   ([`Dnsmasq6Mode::Slaac`]);
//! - [`Radvd`]: radvd advertising the prefix for SLAAC, or with the M flag
//!   for a DHCPv6 server elsewhere;
//! - [`Kea6`]: `kea-dhcp6` on a LAN host of its own, plus a [`Radvd`] with
//!   the M and O flags on the router.
//!
//! Every address comes from 2001:2::/48 ([`check_lab_addr6`]). Each service
//! is an RAII guard: dropping it stops the daemon (the process is also in a
//! lab namespace, so the cleanup registry's sweep finds it) and removes its
//! temp dir (registered [`LabDir`]). Logs and lease files stay readable
//! while the guard lives.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::cleanup::LabDir;
use crate::cmd::BgProcess;
use crate::lan::{Lan, LanHost};
use crate::netns::NetNs;
use crate::wait::wait_until;

/// The LAN's IPv6 prefix (a /64 of 2001:2::/48).
pub const PREFIX6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0);

/// Length of [`PREFIX6`].
pub const PREFIX6_LEN: u8 = 64;

/// The router's global address on `br0`.
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);

/// The router's link-local address on `br0`: fixed (the kernel's own EUI-64
/// one is removed) so tests know which source the RAs must have.
pub const ROUTER6_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// The DNS server the RAs (RDNSS) and DHCPv6 (option 23) announce. Nothing
/// answers there: tests only check that it is announced.
pub const DNS6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x53);

/// First and last address of the DHCPv6 pools.
pub const POOL6: (Ipv6Addr, Ipv6Addr) = (
    Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x100),
    Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x1ff),
);

/// Kea6's host addresses on the LAN.
pub const KEA6_IP: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 2);
/// Kea6's host IPv4 address (a [`LanHost`] always has one).
pub const KEA6_IP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

/// Refuses any IPv6 address outside 2001:2::/48, the only IPv6 range the lab
/// may use (link-local fe80::/10 is allowed: it never leaves the link).
pub fn check_lab_addr6(ip: Ipv6Addr) -> Result<()> {
    let s = ip.segments();
    if (s[0] == 0x2001 && s[1] == 2 && s[2] == 0) || (s[0] & 0xffc0) == 0xfe80 {
        Ok(())
    } else {
        bail!("{ip} is outside 2001:2::/48, the only IPv6 range the lab may use")
    }
}

/// Turns IPv6 on in the LAN namespace: `br0` gets [`ROUTER6_LL`] (in place
/// of the kernel's EUI-64 link-local) and [`ROUTER6`]/64, without duplicate
/// address detection, and the namespace forwards IPv6 (it is the LAN's
/// router; radvd wants forwarding on). Idempotent.
pub fn enable_ipv6(lan: &Lan) -> Result<()> {
    let ns = lan.ns();
    ns.sysctl("net.ipv6.conf.br0.disable_ipv6", "0")?;
    ns.sysctl("net.ipv6.conf.br0.accept_dad", "0")?;
    ns.sysctl("net.ipv6.conf.br0.addr_gen_mode", "1")?;
    ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
    let have = ns.ip(&["-6", "addr", "show", "dev", "br0"])?;
    if have.contains(&format!("{ROUTER6}/{PREFIX6_LEN}")) {
        return Ok(());
    }
    ns.ip(&["-6", "addr", "flush", "dev", "br0", "scope", "link"])?;
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{ROUTER6_LL}/64"),
        "dev",
        "br0",
        "nodad",
    ])?;
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{ROUTER6}/{PREFIX6_LEN}"),
        "dev",
        "br0",
        "nodad",
    ])?;
    Ok(())
}

/// Waits (≤ 5 s) until `ifname` in `ns` has a link-local address that is
/// no longer tentative (daemons cannot bind to a tentative one).
pub fn wait_link_local(ns: &NetNs, ifname: &str) -> Result<()> {
    wait_until(
        Duration::from_secs(5),
        &format!("a usable link-local address on {ifname} in {}", ns.name()),
        || {
            let out = ns.ip(&["-6", "addr", "show", "dev", ifname, "scope", "link"])?;
            Ok((out.contains("inet6 fe80") && !out.contains("tentative")).then_some(()))
        },
    )
}

/// Waits (≤ 10 s) until `log_path` holds `needle`, failing early with
/// `stderr_path`'s text if `proc` exits.
fn wait_started(
    proc: &mut BgProcess,
    what: &str,
    log_path: &std::path::Path,
    needle: &str,
    stderr_path: &std::path::Path,
) -> Result<()> {
    wait_until(Duration::from_secs(10), &format!("{what} to start"), || {
        if fs::read_to_string(log_path)
            .unwrap_or_default()
            .contains(needle)
        {
            return Ok(Some(()));
        }
        if let Some(status) = proc.try_wait()? {
            bail!(
                "{what} exited ({status}) at start: {}",
                fs::read_to_string(stderr_path).unwrap_or_default().trim()
            );
        }
        Ok(None)
    })
    .with_context(|| {
        format!(
            "{what}'s log:\n{}\nstderr:\n{}",
            fs::read_to_string(log_path).unwrap_or_default(),
            fs::read_to_string(stderr_path).unwrap_or_default()
        )
    })
}

/// What the second dnsmasq advertises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dnsmasq6Mode {
    /// RA with the M and O flags, the prefix on-link but not autonomous, and
    /// DHCPv6 IA_NA leases from [`POOL6`].
    Stateful,
    /// RA only: the prefix on-link and autonomous (SLAAC), no DHCPv6.
    Slaac,
}

/// One IPv6 lease line of dnsmasq's lease file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dnsmasq6Lease {
    /// Unix time the lease expires.
    pub expiry: u64,
    /// The IAID the client sent.
    pub iaid: u32,
    /// Leased address.
    pub ip: Ipv6Addr,
    /// Hostname (from the client's FQDN option), if any.
    pub hostname: Option<String>,
    /// The client's DUID as dnsmasq prints it (`00:04:…`, lower case).
    pub duid: String,
}

/// Parses the IPv6 lines of a dnsmasq lease file (`<expiry> <iaid> <ipv6>
/// <hostname|*> <duid>`, after the `duid <server-duid>` line); IPv4 lines
/// and malformed ones are skipped.
pub fn parse_dnsmasq6_leases(text: &str) -> Vec<Dnsmasq6Lease> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 || f[0] == "duid" {
                return None;
            }
            Some(Dnsmasq6Lease {
                expiry: f[0].parse().ok()?,
                iaid: f[1].parse().ok()?,
                ip: f[2].parse().ok()?,
                hostname: (f[3] != "*").then(|| f[3].to_owned()),
                duid: f[4].to_ascii_lowercase(),
            })
        })
        .collect()
}

/// A second dnsmasq on the LAN's `br0` doing IPv6 only: RAs, and DHCPv6 in
/// [`Dnsmasq6Mode::Stateful`]. Dropping it stops it and removes its files.
#[derive(Debug)]
pub struct Dnsmasq6 {
    // Field order is drop order: the process, then its files.
    proc: BgProcess,
    dir: LabDir,
    mode: Dnsmasq6Mode,
}

impl Dnsmasq6 {
    /// Enables IPv6 on `lan` ([`enable_ipv6`]) and starts dnsmasq; waits
    /// (≤ 10 s) until it logs that it serves. `lease_secs` ≥ 120 (dnsmasq
    /// raises shorter ones); RAs every 10 s at most, router lifetime 600 s.
    pub fn start(lan: &Lan, mode: Dnsmasq6Mode, lease_secs: u32) -> Result<Self> {
        enable_ipv6(lan)?;
        let dir = LabDir::new("dnsmasq6")?;
        let log = dir.path().join("dnsmasq6.log");
        let stderr = dir.path().join("dnsmasq6.stderr");
        let range = match mode {
            Dnsmasq6Mode::Stateful => {
                format!("--dhcp-range={},{},64,{lease_secs}", POOL6.0, POOL6.1)
            }
            Dnsmasq6Mode::Slaac => format!("--dhcp-range={PREFIX6},ra-only,64,{lease_secs}"),
        };
        let args: Vec<String> = vec![
            "dnsmasq".into(),
            "--no-daemon".into(),
            "--conf-file=/dev/null".into(),
            "--interface=br0".into(),
            "--bind-interfaces".into(),
            "--port=0".into(),
            "--pid-file=".into(),
            "--enable-ra".into(),
            "--ra-param=br0,10,600".into(),
            range,
            format!("--dhcp-option=option6:dns-server,[{DNS6}]"),
            format!("--dhcp-leasefile={}", dir.path().join("leases6").display()),
            "--log-dhcp".into(),
            format!("--log-facility={}", log.display()),
            "--dhcp-authoritative".into(),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut proc = lan.ns().spawn_logged(&argv, &stderr)?;
        // dnsmasq logs "router advertisement on 2001:2:0:1::" once RA runs.
        wait_started(
            &mut proc,
            "dnsmasq (IPv6)",
            &log,
            "router advertisement on",
            &stderr,
        )?;
        Ok(Self { proc, dir, mode })
    }

    /// The mode it runs in.
    pub fn mode(&self) -> Dnsmasq6Mode {
        self.mode
    }

    /// Its lease file.
    pub fn lease_file(&self) -> PathBuf {
        self.dir.path().join("leases6")
    }

    /// The IPv6 leases it holds now.
    pub fn leases(&self) -> Vec<Dnsmasq6Lease> {
        parse_dnsmasq6_leases(&fs::read_to_string(self.lease_file()).unwrap_or_default())
    }

    /// Its log (`--log-dhcp`: SOLICIT/ADVERTISE/REQUEST/REPLY/RENEW/RELEASE,
    /// and the RAs).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dnsmasq6.log")).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// What [`Radvd`] advertises.
#[derive(Clone, Debug)]
pub struct RadvdOptions {
    /// The M flag (addresses from DHCPv6).
    pub managed: bool,
    /// The O flag (other configuration from DHCPv6).
    pub other: bool,
    /// The prefix's A flag (SLAAC).
    pub autonomous: bool,
    /// The prefix's valid lifetime, seconds.
    pub valid_lifetime: u32,
    /// The prefix's preferred lifetime, seconds.
    pub preferred_lifetime: u32,
    /// The router lifetime, seconds (0: not a default router).
    pub router_lifetime: u16,
    /// RDNSS servers (RFC 8106) to announce.
    pub rdnss: Vec<Ipv6Addr>,
}

impl Default for RadvdOptions {
    /// SLAAC only: A set, M and O clear, [`DNS6`] as RDNSS.
    fn default() -> Self {
        Self {
            managed: false,
            other: false,
            autonomous: true,
            valid_lifetime: 3600,
            preferred_lifetime: 1800,
            router_lifetime: 600,
            rdnss: vec![DNS6],
        }
    }
}

/// radvd on the LAN's `br0`. Dropping it stops it and removes its files.
#[derive(Debug)]
pub struct Radvd {
    proc: BgProcess,
    dir: LabDir,
    opts: RadvdOptions,
}

impl Radvd {
    /// Enables IPv6 on `lan` ([`enable_ipv6`]) and starts radvd (RAs every
    /// 3–10 s and in answer to solicitations); waits (≤ 10 s) until it
    /// logs that it started.
    pub fn start(lan: &Lan, opts: RadvdOptions) -> Result<Self> {
        for ip in &opts.rdnss {
            check_lab_addr6(*ip)?;
        }
        enable_ipv6(lan)?;
        let dir = LabDir::new("radvd")?;
        let conf = dir.path().join("radvd.conf");
        fs::write(&conf, Self::config(&opts))
            .with_context(|| format!("cannot write {}", conf.display()))?;
        let log = dir.path().join("radvd.log");
        let stderr = dir.path().join("radvd.stderr");
        let pid = dir.path().join("radvd.pid");
        let (conf_s, log_s, pid_s) = (
            conf.display().to_string(),
            log.display().to_string(),
            pid.display().to_string(),
        );
        let mut proc = lan.ns().spawn_logged(
            &[
                "radvd",
                "--nodaemon",
                "--config",
                &conf_s,
                "--pidfile",
                &pid_s,
                "--logmethod",
                "logfile",
                "--logfile",
                &log_s,
                "--debug",
                "1",
            ],
            &stderr,
        )?;
        wait_started(&mut proc, "radvd", &log, "version", &stderr)?;
        Ok(Self { proc, dir, opts })
    }

    /// radvd's configuration for `o`.
    pub fn config(o: &RadvdOptions) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        let rdnss = if o.rdnss.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = o.rdnss.iter().map(ToString::to_string).collect();
            format!(
                "    RDNSS {} {{ AdvRDNSSLifetime 600; }};\n",
                list.join(" ")
            )
        };
        format!(
            "interface br0 {{\n    AdvSendAdvert on;\n    MinRtrAdvInterval 3;\n    \
             MaxRtrAdvInterval 10;\n    AdvManagedFlag {};\n    AdvOtherConfigFlag {};\n    \
             AdvDefaultLifetime {};\n    prefix {PREFIX6}/{PREFIX6_LEN} {{\n        \
             AdvOnLink on;\n        AdvAutonomous {};\n        AdvValidLifetime {};\n        \
             AdvPreferredLifetime {};\n    }};\n{rdnss}}};\n",
            on(o.managed),
            on(o.other),
            o.router_lifetime,
            on(o.autonomous),
            o.valid_lifetime,
            o.preferred_lifetime,
        )
    }

    /// The options it runs with.
    pub fn options(&self) -> &RadvdOptions {
        &self.opts
    }

    /// Its log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("radvd.log")).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// One row of Kea's DHCPv6 memfile lease file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kea6Lease {
    /// Leased address.
    pub ip: Ipv6Addr,
    /// Client DUID as Kea prints it (`00:04:…`, lower case).
    pub duid: String,
    /// IAID.
    pub iaid: u32,
    /// Valid lifetime in seconds; 0 for a released lease.
    pub valid_lifetime: u64,
    /// Unix time the lease expires.
    pub expire: u64,
    /// Hostname (from the client's FQDN option), empty if none.
    pub hostname: String,
    /// Kea's lease state: 0 default, 1 declined, 2 expired-reclaimed.
    pub state: u32,
}

/// Parses Kea's DHCPv6 memfile CSV (columns found by name from the header).
pub fn parse_kea6_leases(text: &str) -> Vec<Kea6Lease> {
    crate::kea::memfile_rows(text)
        .iter()
        .filter_map(|r| {
            Some(Kea6Lease {
                ip: r.get("address")?.parse().ok()?,
                duid: r.get("duid")?.to_ascii_lowercase(),
                iaid: r.get("iaid")?.parse().ok()?,
                valid_lifetime: r.get("valid_lifetime")?.parse().ok()?,
                expire: r.get("expire")?.parse().ok()?,
                hostname: r.get("hostname").map(|s| s.to_string()).unwrap_or_default(),
                state: r.get("state").and_then(|s| s.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// How [`Kea6`] serves.
#[derive(Clone, Debug)]
pub struct Kea6Options {
    /// Valid lifetime of leases, seconds.
    pub valid_lifetime: u32,
    /// Preferred lifetime, seconds.
    pub preferred_lifetime: u32,
    /// T1 (renew timer), seconds.
    pub renew_timer: u32,
    /// T2 (rebind timer), seconds.
    pub rebind_timer: u32,
    /// Host reservations: (DUID as Kea prints it, `00:04:…`; address).
    pub reservations: Vec<(String, Ipv6Addr)>,
}

impl Default for Kea6Options {
    fn default() -> Self {
        Self {
            valid_lifetime: 3600,
            preferred_lifetime: 1800,
            renew_timer: 900,
            rebind_timer: 1440,
            reservations: Vec::new(),
        }
    }
}

/// `kea-dhcp6` on a LAN host of its own ([`KEA6_IP`], `eth0`), with radvd on
/// the router sending RAs with the M and O flags and the prefix not
/// autonomous. Dropping it stops Kea and radvd and removes the host.
#[derive(Debug)]
pub struct Kea6 {
    // Field order is drop order.
    proc: BgProcess,
    radvd: Radvd,
    host: LanHost,
    dir: LabDir,
}

impl Kea6 {
    /// Starts radvd (M, O) and Kea; waits (≤ 10 s each) until they serve.
    pub fn start(lan: &Lan, opts: Kea6Options) -> Result<Self> {
        let radvd = Radvd::start(
            lan,
            RadvdOptions {
                managed: true,
                other: true,
                autonomous: false,
                ..RadvdOptions::default()
            },
        )?;
        let host = lan.add_host("kea6", KEA6_IP4)?;
        host.ns().sysctl("net.ipv6.conf.eth0.accept_dad", "0")?;
        host.ns().ip(&[
            "-6",
            "addr",
            "add",
            &format!("{KEA6_IP}/{PREFIX6_LEN}"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        wait_link_local(host.ns(), "eth0")?;
        for (_, ip) in &opts.reservations {
            check_lab_addr6(*ip)?;
        }
        let reservations: Vec<serde_json::Value> = opts
            .reservations
            .iter()
            .map(|(duid, ip)| json!({"duid": duid, "ip-addresses": [ip.to_string()]}))
            .collect();
        let dir = LabDir::new("kea6")?;
        let conf = dir.path().join("kea-dhcp6.conf");
        let log = dir.path().join("kea6.log");
        let stderr = dir.path().join("kea6.stderr");
        let config = json!({ "Dhcp6": {
            "interfaces-config": {"interfaces": ["eth0"]},
            // Not /var/lib/kea: nothing of the lab is written outside its dirs.
            "server-id": {"type": "LLT", "persist": false},
            "lease-database": {
                "type": "memfile",
                "persist": true,
                "name": dir.path().join("kea-leases6.csv"),
                "lfc-interval": 0,
            },
            "valid-lifetime": opts.valid_lifetime,
            "preferred-lifetime": opts.preferred_lifetime,
            "renew-timer": opts.renew_timer,
            "rebind-timer": opts.rebind_timer,
            "subnet6": [{
                "id": 1,
                "subnet": format!("{PREFIX6}/{PREFIX6_LEN}"),
                // Clients reach Kea from link-local addresses: the subnet is
                // chosen by the interface the Solicit came in on.
                "interface": "eth0",
                "pools": [{"pool": format!("{} - {}", POOL6.0, POOL6.1)}],
                "option-data": [{"name": "dns-servers", "data": DNS6.to_string()}],
                "reservations": reservations,
            }],
            "loggers": [{
                "name": "kea-dhcp6",
                "output_options": [{"output": log, "flush": true}],
                "severity": "INFO",
            }],
        }});
        fs::write(&conf, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("cannot write {}", conf.display()))?;
        let mut cmd = host.ns().command(&["kea-dhcp6", "-c"]);
        cmd.arg(&conf)
            .env("KEA_PIDFILE_DIR", dir.path())
            .env("KEA_LOCKFILE_DIR", dir.path());
        let mut proc = BgProcess::spawn_logged(&mut cmd, "kea-dhcp6", &stderr)?;
        wait_started(&mut proc, "kea-dhcp6", &log, "DHCP6_STARTED", &stderr)?;
        Ok(Self {
            proc,
            radvd,
            host,
            dir,
        })
    }

    /// The radvd sending the RAs for it.
    pub fn radvd(&self) -> &Radvd {
        &self.radvd
    }

    /// The namespace of Kea's host.
    pub fn ns(&self) -> &NetNs {
        self.host.ns()
    }

    /// The memfile lease file.
    pub fn lease_file(&self) -> PathBuf {
        self.dir.path().join("kea-leases6.csv")
    }

    /// Every row of the lease file, oldest first (a change appends a row: a
    /// release has `valid_lifetime` 0).
    pub fn leases(&self) -> Vec<Kea6Lease> {
        parse_kea6_leases(&fs::read_to_string(self.lease_file()).unwrap_or_default())
    }

    /// Kea's log (`DHCP6_LEASE_ALLOC`, `DHCP6_RELEASE_NA`, …).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("kea6.log")).unwrap_or_default()
    }

    /// Kea's process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_range_v6_is_enforced() {
        for ok in [
            PREFIX6, ROUTER6, ROUTER6_LL, DNS6, POOL6.0, POOL6.1, KEA6_IP,
        ] {
            assert!(check_lab_addr6(ok).is_ok(), "{ok}");
        }
        for bad in ["2001:db8::1", "2001:3::1", "2001:2:1::1", "fd00::1"] {
            assert!(check_lab_addr6(bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_dnsmasq6_lease_lines() {
        let text = "\
1795425121 02:00:00:00:00:01 198.18.0.150 * *
duid 00:01:00:01:2c:6d:3e:11:52:54:00:12:34:56
1795425121 305419896 2001:2:0:1::1a3 web-0 00:04:AB:cd
garbage
";
        let l = parse_dnsmasq6_leases(text);
        assert_eq!(
            l,
            vec![Dnsmasq6Lease {
                expiry: 1_795_425_121,
                iaid: 305_419_896,
                ip: "2001:2:0:1::1a3".parse().unwrap(),
                hostname: Some("web-0".into()),
                duid: "00:04:ab:cd".into(),
            }]
        );
    }

    #[test]
    fn parses_kea6_rows_by_column_name() {
        let text = "\
address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source
2001:2:0:1::100,00:04:aa,60,1795425121,1,30,0,7,128,0,0,web-0,,0,,,
2001:2:0:1::100,00:04:aa,0,1795425125,1,0,0,7,128,0,0,web-0,,0,,,
";
        let l = parse_kea6_leases(text);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].ip, POOL6.0);
        assert_eq!(
            (l[0].iaid, l[0].valid_lifetime, l[1].valid_lifetime),
            (7, 60, 0)
        );
        assert_eq!(l[0].hostname, "web-0");
        assert!(parse_kea6_leases("").is_empty());
    }

    #[test]
    fn radvd_config_carries_the_flags() {
        let c = Radvd::config(&RadvdOptions {
            managed: true,
            ..RadvdOptions::default()
        });
        assert!(c.contains("AdvManagedFlag on;"), "{c}");
        assert!(c.contains("AdvOtherConfigFlag off;"), "{c}");
        assert!(c.contains("prefix 2001:2:0:1::/64"), "{c}");
        assert!(c.contains("RDNSS 2001:2:0:1::53"), "{c}");
    }
}
