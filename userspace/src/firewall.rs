//! The netfilter rules the agent owns on the node (F2, F4, F5, F6).
//!
//! Pod↔LAN and pod↔pod frames never meet netfilter: the dataplane redirects
//! them in TC. Host-routed pod traffic does cross the node's FORWARD chain:
//! a ClusterIP DNATed to another local pod (`ll+` → `ll+`), LoadBalancer and
//! NodePort traffic DNATed to a pod (uplink → `ll+`) and its replies, which
//! the conntrack-bypass fix steers back through the node (`ll+` → uplink),
//! and a ClusterIP DNATed to a pod on another node (`ll+` → uplink). With the
//! FORWARD policy DROP (Ubuntu, Docker), those need accept rules.
//!
//! The agent keeps its rules in chains of its own, each jumped to from the
//! first rule of a built-in chain:
//!
//! ```text
//! filter  FORWARD     -j LANLINK-FORWARD
//!         LANLINK-FORWARD      ctstate INVALID        RETURN   (the node's own INVALID policy applies)
//!                              -i ll+ -o ll+          ACCEPT
//!                              -i ll+ -o <uplink>     ACCEPT
//!                              -i <uplink> -o ll+     ACCEPT
//! nat     POSTROUTING -j LANLINK-POSTROUTING
//!         LANLINK-POSTROUTING  -s <uplink subnet> -o <uplink>, source not local   MASQUERADE
//! ```
//!
//! Why the masquerade: a packet the node forwards from a pod back onto the
//! LAN (a ClusterIP DNATed to a pod on another node, a `hostRoutes` CIDR on
//! the LAN) reaches a host that sees the pod's address as on-link, so it
//! would answer the pod directly on L2: the reply would bypass this node's
//! conntrack (no reverse DNAT, and the node sees the flow half-open and
//! INVALID). With the node's address as source, the reply comes back
//! through the node. Only new connections are NATed, so the replies of LAN
//! clients' flows (LoadBalancer, NodePort) that leave through the uplink
//! keep their reverse DNAT untouched.
//!
//! The agent installs the rules at start, before re-adopting pods, and
//! again whenever the uplink's subnets change (checked on every ADD and DEL).
//! They stay while the agent is stopped or restarting, like the dataplane.
//! Installing is idempotent: the chains are rewritten in one
//! `iptables-restore --noflush` transaction (no window without rules), and a
//! jump is inserted only when `iptables -C` does not find it. Uninstalling
//! removes every jump to the chains, then the chains. The `iptables` binary
//! is run as a process (its `-restore` sibling for the transaction), so the
//! legacy and nft backends both work.

use std::{
    io,
    net::Ipv4Addr,
    process::{Command, Output, Stdio},
};

/// The agent's filter chain, jumped to from `FORWARD`.
pub const FORWARD_CHAIN: &str = "LANLINK-FORWARD";
/// The agent's nat chain, jumped to from `POSTROUTING`.
pub const NAT_CHAIN: &str = "LANLINK-POSTROUTING";
/// iptables' interface wildcard for every host-side veth the agent creates
/// (`agent::host_veth_name`: `ll` + 12 hex digits).
pub const VETH_MATCH: &str = "ll+";
/// Comment on the jumps, so an operator reading `iptables-save` knows who
/// added them.
const JUMP_COMMENT: &str = "lanlink: host-routed pod traffic";
/// Seconds `iptables` waits for the xtables lock (legacy backend).
const LOCK_WAIT_SECS: &str = "5";

/// The (table, built-in chain, own chain) triples the agent installs.
const JUMPS: [(&str, &str, &str); 2] = [
    ("filter", "FORWARD", FORWARD_CHAIN),
    ("nat", "POSTROUTING", NAT_CHAIN),
];

/// Errors of firewall work.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The binary could not be started.
    #[error(
        "cannot run {program} (install iptables, point --iptables at it, or run the agent with --no-firewall and accept host-routed pod traffic in FORWARD yourself)"
    )]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// The agent's rules for one uplink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firewall {
    iptables: String,
    uplink: String,
    subnets: Vec<(Ipv4Addr, u8)>,
}

/// The network address of `ip`/`len`.
pub fn network(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(u32::from(ip) & mask)
}

impl Firewall {
    /// Rules for `uplink`, whose IPv4 addresses are `addresses` (with prefix
    /// lengths), run with the `iptables` binary (e.g. `iptables`,
    /// `iptables-legacy`, or a path).
    pub fn new(iptables: &str, uplink: &str, addresses: &[(Ipv4Addr, u8)]) -> Self {
        let mut subnets: Vec<(Ipv4Addr, u8)> = addresses
            .iter()
            // A /32 (a LoadBalancer address on the uplink) holds only a local
            // address, which the rule excludes anyway.
            .filter(|(_, len)| *len < 32)
            .map(|(ip, len)| (network(*ip, *len), *len))
            .collect();
        subnets.sort();
        subnets.dedup();
        Self {
            iptables: iptables.to_string(),
            uplink: uplink.to_string(),
            subnets,
        }
    }

    /// The `iptables-restore --noflush` input that (re)writes both chains.
    /// Declaring a chain that exists flushes it, so this is idempotent.
    pub fn restore_input(&self) -> String {
        let up = &self.uplink;
        let mut s = String::new();
        s.push_str("*filter\n");
        s.push_str(&format!(":{FORWARD_CHAIN} - [0:0]\n"));
        s.push_str(&format!(
            "-A {FORWARD_CHAIN} -m conntrack --ctstate INVALID -m comment --comment \"lanlink: leave INVALID to the node's policy\" -j RETURN\n"
        ));
        for (inp, out, why) in [
            (VETH_MATCH, VETH_MATCH, "pod to pod through the node"),
            (VETH_MATCH, up.as_str(), "pod to the LAN through the node"),
            (up.as_str(), VETH_MATCH, "LAN to pod through the node"),
        ] {
            s.push_str(&format!(
                "-A {FORWARD_CHAIN} -i {inp} -o {out} -m comment --comment \"lanlink: {why}\" -j ACCEPT\n"
            ));
        }
        s.push_str("COMMIT\n");
        s.push_str("*nat\n");
        s.push_str(&format!(":{NAT_CHAIN} - [0:0]\n"));
        for (net, len) in &self.subnets {
            s.push_str(&format!(
                "-A {NAT_CHAIN} -s {net}/{len} -o {up} -m addrtype ! --src-type LOCAL -m comment --comment \"lanlink: replies to host-routed pod traffic come back through this node\" -j MASQUERADE\n"
            ));
        }
        s.push_str("COMMIT\n");
        s
    }

    /// Writes both chains and makes sure each is jumped to. Idempotent.
    pub fn install(&self) -> Result<(), FirewallError> {
        let restore = format!("{}-restore", self.iptables);
        run(
            &restore,
            &["-w", LOCK_WAIT_SECS, "--noflush"],
            Some(self.restore_input().as_bytes()),
        )?;
        for (table, parent, chain) in JUMPS {
            let spec = jump_spec(parent, chain);
            let mut check = vec!["-w", LOCK_WAIT_SECS, "-t", table, "-C"];
            check.extend(spec.iter().map(String::as_str));
            if run(&self.iptables, &check, None).is_ok() {
                continue;
            }
            let mut insert = vec!["-w", LOCK_WAIT_SECS, "-t", table, "-I", parent, "1"];
            insert.extend(spec[1..].iter().map(String::as_str));
            run(&self.iptables, &insert, None)?;
        }
        Ok(())
    }
}

/// `<parent> -m comment --comment … -j <chain>`, as `-C`/`-D` take it.
fn jump_spec(parent: &str, chain: &str) -> Vec<String> {
    [
        parent,
        "-m",
        "comment",
        "--comment",
        JUMP_COMMENT,
        "-j",
        chain,
    ]
    .map(String::from)
    .to_vec()
}

/// Removes every jump to the agent's chains and the chains themselves, with
/// the `iptables` binary. Succeeds when nothing is installed. Returns what
/// it removed, as `table: rule` lines.
pub fn uninstall(iptables: &str) -> Result<Vec<String>, FirewallError> {
    let mut removed = Vec::new();
    for (table, parent, chain) in JUMPS {
        // Every jump, whatever its position or match (an older agent's too).
        let rules = run(
            iptables,
            &["-w", LOCK_WAIT_SECS, "-t", table, "-S", parent],
            None,
        )?;
        for line in String::from_utf8_lossy(&rules.stdout).lines() {
            let args = split_rule(line);
            let jumps_to_ours = args
                .windows(2)
                .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1] == chain);
            if args.first().map(String::as_str) != Some("-A") || !jumps_to_ours {
                continue;
            }
            let mut del = vec!["-w", LOCK_WAIT_SECS, "-t", table, "-D"];
            del.extend(args[1..].iter().map(String::as_str));
            run(iptables, &del, None)?;
            removed.push(format!("{table}: {line}"));
        }
        let exists = run(
            iptables,
            &["-w", LOCK_WAIT_SECS, "-t", table, "-S", chain],
            None,
        )
        .is_ok();
        if exists {
            run(
                iptables,
                &["-w", LOCK_WAIT_SECS, "-t", table, "-F", chain],
                None,
            )?;
            run(
                iptables,
                &["-w", LOCK_WAIT_SECS, "-t", table, "-X", chain],
                None,
            )?;
            removed.push(format!("{table}: chain {chain}"));
        }
    }
    Ok(removed)
}

/// Splits a line of `iptables -S` into arguments: words, with
/// double-quoted strings (comments) as one argument and `\"` unescaped.
pub fn split_rule(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    args.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        args.push(cur);
    }
    args
}

/// Runs `program args`, feeding `stdin`; fails unless it exits 0.
fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<Output, FirewallError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_err = |source| FirewallError::Spawn {
        program: program.to_string(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use io::Write as _;
        // iptables-restore reads all of its input before doing anything, and
        // the input is a few hundred bytes: no deadlock with its output.
        pipe.write_all(input).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(FirewallError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_iptables_s_lines() {
        let line = r#"-A FORWARD -m comment --comment "lanlink: host-routed pod traffic" -j LANLINK-FORWARD"#;
        assert_eq!(
            split_rule(line),
            [
                "-A",
                "FORWARD",
                "-m",
                "comment",
                "--comment",
                "lanlink: host-routed pod traffic",
                "-j",
                "LANLINK-FORWARD"
            ]
        );
        assert_eq!(split_rule(r#"-A X --comment "a \"b\"" "#)[3], r#"a "b""#);
        assert!(split_rule("").is_empty());
    }

    #[test]
    fn rules_are_scoped_to_the_veths_and_the_uplink() {
        let fw = Firewall::new(
            "iptables",
            "eth0",
            &[
                (Ipv4Addr::new(198, 18, 0, 10), 24),
                (Ipv4Addr::new(198, 18, 0, 200), 32),
                (Ipv4Addr::new(198, 18, 0, 11), 24),
            ],
        );
        let input = fw.restore_input();
        let accepts: Vec<&str> = input.lines().filter(|l| l.ends_with("-j ACCEPT")).collect();
        assert_eq!(accepts.len(), 3);
        for a in &accepts {
            assert!(a.contains("-i ll+") || a.contains("-o ll+"), "{a}");
        }
        // One masquerade rule per subnet; the /32 adds none.
        let masq: Vec<&str> = input.lines().filter(|l| l.contains("MASQUERADE")).collect();
        assert_eq!(masq.len(), 1, "{input}");
        assert!(masq[0].contains("-s 198.18.0.0/24 -o eth0"));
        assert!(input.starts_with("*filter\n:LANLINK-FORWARD - [0:0]\n"));
        assert_eq!(input.matches("COMMIT\n").count(), 2);
    }

    #[test]
    fn network_masks_host_bits() {
        assert_eq!(
            network(Ipv4Addr::new(198, 18, 0, 77), 24),
            Ipv4Addr::new(198, 18, 0, 0)
        );
        assert_eq!(
            network(Ipv4Addr::new(198, 18, 0, 77), 0),
            Ipv4Addr::UNSPECIFIED
        );
        assert_eq!(
            network(Ipv4Addr::new(198, 18, 0, 77), 32),
            Ipv4Addr::new(198, 18, 0, 77)
        );
    }
}
