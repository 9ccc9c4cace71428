//! Unique, recognisable names for everything a lab run creates.
//!
//! Every namespace, temp dir and pin dir of a run is named
//! `ll-<pid>-<counter>-<role>`: the pid tells [`crate::sweep_leftovers`] whether
//! the run that made it is still alive, the process-wide counter keeps tests
//! of one process apart, and the role makes `ip netns list` readable.

use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of every name the lab gives.
pub const PREFIX: &str = "ll-";

/// Longest role kept in a name; the whole name stays ≤ 40 characters.
const MAX_ROLE_LEN: usize = 16;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The next value of the process-wide counter (also used for interface names
/// inside lab namespaces, which only have to be unique per namespace).
pub fn next_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A fresh name `ll-<pid>-<counter>-<role>` for this process.
pub fn unique(role: &str) -> String {
    make(std::process::id(), next_id(), role)
}

/// Builds `ll-<pid>-<id>-<role>`, with the role reduced to `[a-z0-9-]` and cut
/// to 16 characters (empty becomes `x`).
pub fn make(pid: u32, id: u64, role: &str) -> String {
    let mut clean: String = role
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(MAX_ROLE_LEN)
        .collect();
    if clean.is_empty() {
        clean.push('x');
    }
    format!("{PREFIX}{pid}-{id}-{clean}")
}

/// The pid in a lab name (`ll-<pid>-…`), or `None` if it is not one.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Whether a lab name belongs to this process.
pub fn is_ours(name: &str) -> bool {
    owner_pid(name) == Some(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_pid_counter_and_role() {
        assert_eq!(make(1234, 7, "lan"), "ll-1234-7-lan");
        assert_eq!(make(1, 0, "Pod A_1"), "ll-1-0-pod-a-1");
        assert_eq!(make(1, 0, ""), "ll-1-0-x");
    }

    #[test]
    fn names_stay_short() {
        let name = make(
            4_194_304,
            u64::from(u32::MAX),
            "a-very-long-role-name-indeed",
        );
        assert!(name.len() <= 40, "{name} is {} chars", name.len());
    }

    #[test]
    fn unique_names_differ() {
        let a = unique("node");
        let b = unique("node");
        assert_ne!(a, b);
        assert!(is_ours(&a) && is_ours(&b));
    }

    #[test]
    fn owner_pid_parses_only_lab_names() {
        assert_eq!(owner_pid("ll-1234-7-lan"), Some(1234));
        assert_eq!(owner_pid("ll-1234-7-lan.a8Xz"), Some(1234));
        assert_eq!(owner_pid("ll-abc-7-lan"), None);
        assert_eq!(owner_pid("ll-1234"), None);
        assert_eq!(owner_pid("ll--7-lan"), None);
        assert_eq!(owner_pid("cni-1234-7"), None);
        assert_eq!(owner_pid("ll-99999999999999999999-1-x"), None);
    }
}
