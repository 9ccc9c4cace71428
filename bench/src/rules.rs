//! The iptables rule sets of the `bridge` and `lanlink` variants: N rules
//! that never match the benchmark's traffic, in a chain of the benchmark's
//! own that the node's `filter FORWARD` jumps to first, so every forwarded
//! packet is compared against all of them, as on a node whose kube-proxy
//! (iptables mode) has N service rules. The rest of the table (lanlinkd's
//! `LANLINK-FORWARD` and its jump) is left as it is.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use lanlink_lab::NetNs;
use lanlink_lab::cmd;

/// The rule counts every run measures.
pub const COUNTS: [usize; 3] = [0, 1_000, 10_000];

/// The benchmark's chain, jumped to from the top of FORWARD.
pub const CHAIN: &str = "LL-BENCH-FWD";

/// How one rule reads (documented in the results).
pub const RULE_TEMPLATE: &str =
    "-A LL-BENCH-FWD -d 198.19.<i/256>.<i%256>/32 -p tcp -m tcp --dport 8080 -j ACCEPT";

/// Short label of a rule count: `0`, `1k`, `10k`.
pub fn label(count: usize) -> String {
    if count >= 1000 && count.is_multiple_of(1000) {
        format!("{}k", count / 1000)
    } else {
        count.to_string()
    }
}

/// The destination of rule `i`: 198.19.0.0/16, in the lab's range and never
/// used by the benchmark's traffic (which stays in 198.18.0.0/22).
fn rule_dst(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (i / 256) as u8, (i % 256) as u8)
}

/// An `iptables-restore --noflush` input for the filter table: [`CHAIN`]
/// (created or emptied) with `count` rules.
pub fn ruleset(count: usize) -> String {
    let mut s = format!("*filter\n:{CHAIN} - [0:0]\n");
    for i in 0..count {
        let _ = writeln!(
            s,
            "-A {CHAIN} -d {}/32 -p tcp -m tcp --dport 8080 -j ACCEPT",
            rule_dst(i)
        );
    }
    s.push_str("COMMIT\n");
    s
}

/// Loads `count` rules into [`CHAIN`] in `ns` with one `iptables-restore`,
/// makes sure FORWARD (policy ACCEPT) jumps to it first, and checks that the
/// chain then holds exactly that many.
pub fn load(ns: &NetNs, count: usize) -> Result<()> {
    ensure!(count <= 65_536, "at most 65,536 distinct rule destinations");
    let input = ruleset(count);
    let out = cmd::run_with_stdin(
        &mut ns.command(&["iptables-restore", "--noflush"]),
        Some(input.as_bytes()),
        Duration::from_secs(120),
    )
    .with_context(|| format!("iptables-restore in {}", ns.name()))?;
    cmd::check("iptables-restore", &out)?;
    ns.run_ok(&["iptables", "-P", "FORWARD", "ACCEPT"])?;
    if !ns
        .run(&["iptables", "-C", "FORWARD", "-j", CHAIN])?
        .status
        .success()
    {
        ns.run_ok(&["iptables", "-I", "FORWARD", "1", "-j", CHAIN])?;
    }
    let listed = ns
        .run_timeout(&["iptables", "-S", CHAIN], Duration::from_secs(60))?
        .stdout;
    let prefix = format!("-A {CHAIN} ");
    let rules = String::from_utf8_lossy(&listed)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .count();
    if rules != count {
        bail!(
            "{} holds {rules} {CHAIN} rules after loading {count}",
            ns.name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_has_count_rules_in_the_lab_range() {
        let s = ruleset(300);
        assert_eq!(
            s.lines()
                .filter(|l| l.starts_with("-A LL-BENCH-FWD "))
                .count(),
            300
        );
        assert!(s.contains("-d 198.19.1.43/32 "), "rule 299");
        assert!(s.starts_with("*filter\n:LL-BENCH-FWD - [0:0]\n") && s.ends_with("COMMIT\n"));
        assert!(
            !s.contains("FORWARD"),
            "the rest of the table is not touched"
        );
        for i in [0, 9_999, 65_535] {
            lanlink_lab::check_lab_addr(rule_dst(i)).unwrap();
        }
    }

    #[test]
    fn labels() {
        assert_eq!(label(0), "0");
        assert_eq!(label(1_000), "1k");
        assert_eq!(label(10_000), "10k");
        assert_eq!(label(1_500), "1500");
    }
}
