//! [`Kea`]: ISC Kea (`kea-dhcp4`, Debian's `kea-dhcp4-server`) as a second
//! real DHCP server on the lab LAN, for tests that need what dnsmasq cannot
//! do (leases shorter than 120 s) or that must pass against more than one
//! server implementation.
//!
//! Kea runs on a LAN host of its own (`ll-<pid>-<n>-kea`, [`KEA_IP`] by
//! default) plugged into the LAN's bridge. The LAN's dnsmasq keeps running
//! but must be told to answer nobody: start the [`Lan`] with
//! [`Kea::SILENCE_DNSMASQ`] in `LanOptions::extra_args`.
//!
//! Kea uses raw sockets on the host's `eth0`, a memfile lease file (CSV,
//! one row appended per change, [`Kea::leases`]) and logs at INFO to a file
//! ([`Kea::log`]): `DHCP4_LEASE_ALLOC` for leases and renewals,
//! `DHCP4_RELEASE` for releases. Its pid and lock files go to the host's
//! temp dir, so any number of Keas run in parallel.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::cleanup::LabDir;
use crate::cmd::BgProcess;
use crate::lan::{Lan, LanHost};
use crate::netns::NetNs;
use crate::wait::wait_until;
use crate::{LAN_PREFIX_LEN, ROUTER, check_lab_addr};

/// Kea's default address on the LAN.
pub const KEA_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// How Kea serves the LAN.
#[derive(Clone, Debug)]
pub struct KeaOptions {
    /// Kea's own address on the LAN (its server identifier).
    pub ip: Ipv4Addr,
    /// First and last address of the pool.
    pub pool: (Ipv4Addr, Ipv4Addr),
    /// `valid-lifetime`: the lease time, in seconds (Kea has no minimum).
    pub valid_lifetime: u32,
    /// `renew-timer` (T1, option 58); `None` lets the client default it.
    pub renew_timer: Option<u32>,
    /// `rebind-timer` (T2, option 59); `None` lets the client default it.
    pub rebind_timer: Option<u32>,
    /// `authoritative`: NAK requests for addresses Kea will not lease.
    pub authoritative: bool,
}

impl Default for KeaOptions {
    fn default() -> Self {
        Self {
            ip: KEA_IP,
            pool: (
                Ipv4Addr::new(198, 18, 0, 150),
                Ipv4Addr::new(198, 18, 0, 199),
            ),
            valid_lifetime: 3600,
            renew_timer: None,
            rebind_timer: None,
            authoritative: true,
        }
    }
}

/// One row of Kea's memfile lease file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeaLease {
    /// Leased address.
    pub ip: Ipv4Addr,
    /// Client MAC, lower case.
    pub hwaddr: String,
    /// Client identifier as Kea prints it (`ff:13:…`), empty if none.
    pub client_id: String,
    /// Lease time in seconds; 0 for a released lease.
    pub valid_lifetime: u64,
    /// Unix time the lease expires.
    pub expire: u64,
    /// Hostname the client sent, empty if none.
    pub hostname: String,
    /// Kea's lease state: 0 default, 1 declined, 2 expired-reclaimed.
    pub state: u32,
}

/// Parses Kea's memfile CSV (header line first; columns found by name, so
/// versions that add columns parse too). Rows that do not parse are skipped.
pub fn parse_kea_leases(text: &str) -> Vec<KeaLease> {
    memfile_rows(text)
        .iter()
        .filter_map(|r| {
            Some(KeaLease {
                ip: r.get("address")?.parse().ok()?,
                hwaddr: r.get("hwaddr")?.to_ascii_lowercase(),
                client_id: r.get("client_id")?.to_ascii_lowercase(),
                valid_lifetime: r.get("valid_lifetime")?.parse().ok()?,
                expire: r.get("expire")?.parse().ok()?,
                hostname: r.get("hostname").map(|s| s.to_string()).unwrap_or_default(),
                state: r.get("state").and_then(|s| s.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// The rows of a Kea memfile CSV (DHCPv4 or DHCPv6), each as column name →
/// field, the columns named by the header line (so versions that add
/// columns parse too).
pub(crate) fn memfile_rows(text: &str) -> Vec<std::collections::HashMap<&str, &str>> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split(',').collect();
    lines
        .map(|line| cols.iter().copied().zip(line.split(',')).collect())
        .collect()
}

/// `kea-dhcp4` serving the lab LAN from a host of its own. Dropping it stops
/// Kea, then removes the host's namespace and the temp dir.
#[derive(Debug)]
pub struct Kea {
    // Field order is drop order: Kea, then its host, then the files.
    proc: Option<BgProcess>,
    host: LanHost,
    dir: LabDir,
    opts: KeaOptions,
}

impl Kea {
    /// The dnsmasq argument that keeps the LAN's own server quiet (it then
    /// answers only clients it has a `dhcp-host` for: none).
    pub const SILENCE_DNSMASQ: &'static str = "--dhcp-ignore=tag:!known";

    /// Starts Kea on a new host of `lan` and waits (≤ 10 s) until it serves.
    pub fn start(lan: &Lan, opts: KeaOptions) -> Result<Self> {
        for ip in [opts.ip, opts.pool.0, opts.pool.1] {
            check_lab_addr(ip)?;
        }
        if lan
            .options()
            .extra_args
            .iter()
            .all(|a| a != Self::SILENCE_DNSMASQ)
        {
            bail!(
                "the LAN's dnsmasq would answer too: start the Lan with {} in extra_args",
                Self::SILENCE_DNSMASQ
            );
        }
        let host = lan.add_host("kea", opts.ip)?;
        let dir = LabDir::new("kea")?;
        let mut kea = Self {
            proc: None,
            host,
            dir,
            opts,
        };
        kea.spawn()?;
        Ok(kea)
    }

    fn config(&self) -> serde_json::Value {
        let o = &self.opts;
        let mut dhcp4 = json!({
            "interfaces-config": {"interfaces": ["eth0"], "dhcp-socket-type": "raw"},
            "lease-database": {
                "type": "memfile",
                "persist": true,
                "name": self.lease_file(),
                "lfc-interval": 0,
            },
            "valid-lifetime": o.valid_lifetime,
            "authoritative": o.authoritative,
            "subnet4": [{
                "id": 1,
                "subnet": format!("198.18.0.0/{LAN_PREFIX_LEN}"),
                "pools": [{"pool": format!("{} - {}", o.pool.0, o.pool.1)}],
                "option-data": [{"name": "routers", "data": ROUTER.to_string()}],
            }],
            "loggers": [{
                "name": "kea-dhcp4",
                "output_options": [{"output": self.log_path(), "flush": true}],
                "severity": "INFO",
            }],
        });
        if let Some(t1) = o.renew_timer {
            dhcp4["renew-timer"] = t1.into();
        }
        if let Some(t2) = o.rebind_timer {
            dhcp4["rebind-timer"] = t2.into();
        }
        json!({ "Dhcp4": dhcp4 })
    }

    fn spawn(&mut self) -> Result<()> {
        let conf = self.dir.path().join("kea-dhcp4.conf");
        fs::write(&conf, serde_json::to_vec_pretty(&self.config())?)
            .with_context(|| format!("cannot write {}", conf.display()))?;
        let log_start = self.log().len();
        let mut cmd = self.host.ns().command(&["kea-dhcp4", "-c"]);
        cmd.arg(&conf)
            .env("KEA_PIDFILE_DIR", self.dir.path())
            .env("KEA_LOCKFILE_DIR", self.dir.path());
        let mut proc =
            BgProcess::spawn_logged(&mut cmd, "kea-dhcp4", &self.dir.path().join("kea.stderr"))?;
        wait_until(Duration::from_secs(10), "kea-dhcp4 to start", || {
            let log = self.log();
            if log
                .get(log_start..)
                .is_some_and(|l| l.contains("DHCP4_STARTED"))
            {
                return Ok(Some(()));
            }
            if let Some(status) = proc.try_wait()? {
                bail!(
                    "kea-dhcp4 exited ({status}) at start: {}",
                    fs::read_to_string(self.dir.path().join("kea.stderr")).unwrap_or_default(),
                );
            }
            Ok(None)
        })
        .with_context(|| format!("kea's log:\n{}", self.log()))?;
        self.proc = Some(proc);
        Ok(())
    }

    /// Stops Kea (SIGTERM): the LAN then has no DHCP server. The lease
    /// file and log stay.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            proc.stop()?;
        }
        Ok(())
    }

    /// The namespace of Kea's host (for captures on its `eth0`).
    pub fn ns(&self) -> &NetNs {
        self.host.ns()
    }

    /// Kea's address (its server identifier).
    pub fn ip(&self) -> Ipv4Addr {
        self.host.ip()
    }

    /// The memfile lease file.
    pub fn lease_file(&self) -> PathBuf {
        self.dir.path().join("kea-leases4.csv")
    }

    /// Every row of the lease file, oldest first (a lease changes by a new
    /// row: a renewal has a later `expire`, a release `valid_lifetime` 0).
    pub fn leases(&self) -> Vec<KeaLease> {
        parse_kea_leases(&fs::read_to_string(self.lease_file()).unwrap_or_default())
    }

    /// The rows for `mac` (lower case), oldest first.
    pub fn leases_of(&self, mac: &str) -> Vec<KeaLease> {
        let mac = mac.to_ascii_lowercase();
        self.leases()
            .into_iter()
            .filter(|l| l.hwaddr == mac)
            .collect()
    }

    /// Path of Kea's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("kea.log")
    }

    /// Kea's log so far (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_memfile_rows_by_column_name() {
        let text = "\
address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context
198.18.0.150,AA:B2:b5:5b:82:0e,ff:13:0c,10,1795425121,1,0,0,web-0,0,
198.18.0.150,aa:b2:b5:5b:82:0e,ff:13:0c,0,1795425125,1,0,0,web-0,0,
garbage
";
        let l = parse_kea_leases(text);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].ip, Ipv4Addr::new(198, 18, 0, 150));
        assert_eq!(l[0].hwaddr, "aa:b2:b5:5b:82:0e");
        assert_eq!(l[0].hostname, "web-0");
        assert_eq!((l[0].valid_lifetime, l[1].valid_lifetime), (10, 0));
        assert_eq!(l[1].expire, 1_795_425_125);
        assert!(parse_kea_leases("").is_empty());
        assert!(parse_kea_leases("a,b\n1,2\n").is_empty());
    }

    #[test]
    fn default_addresses_are_in_the_lab_range() {
        let o = KeaOptions::default();
        for ip in [o.ip, o.pool.0, o.pool.1] {
            assert!(check_lab_addr(ip).is_ok());
        }
    }
}
