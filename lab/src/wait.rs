//! [`wait_until`]: the lab's one way of waiting for something to happen —
//! a daemon to be ready, a lease to appear, a counter to grow.
//!
//! Bounded always (a deadline or a timeout), polled every 20 ms, and the
//! timeout error names what was awaited, so a failing test says what it
//! waited for rather than "timed out".

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often [`wait_until`] asks again.
pub const POLL: Duration = Duration::from_millis(20);

/// When a wait ends: a [`Duration`] from now, or an [`Instant`].
pub trait Until {
    /// The deadline, and the whole wait for messages.
    fn deadline(self) -> (Instant, Duration);
}

impl Until for Duration {
    fn deadline(self) -> (Instant, Duration) {
        (Instant::now() + self, self)
    }
}

impl Until for Instant {
    fn deadline(self) -> (Instant, Duration) {
        (self, self.saturating_duration_since(Instant::now()))
    }
}

/// Calls `f` every [`POLL`] until it returns `Ok(Some(v))`, and returns `v`.
///
/// An error from `f` ends the wait at once (e.g. the process being waited
/// for exited). When `until` passes first, fails with "timed out after …
/// waiting for `what`"; callers add their evidence (a log) as context. `f`
/// is always called at least once, also with a deadline already past.
pub fn wait_until<T>(
    until: impl Until,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let (deadline, total) = until.deadline();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out after {total:?} waiting for {what}");
        }
        std::thread::sleep(left.min(POLL));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_there() {
        let mut calls = 0;
        let v = wait_until(Duration::from_secs(5), "three calls", || {
            calls += 1;
            Ok((calls == 3).then_some(calls))
        })
        .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn timeout_names_what_was_awaited() {
        let started = Instant::now();
        let err = wait_until(Duration::from_millis(100), "the moon to turn blue", || {
            Ok(None::<()>)
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("waiting for the moon to turn blue"),
            "{err}"
        );
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_secs(2));
    }

    #[test]
    fn an_error_ends_the_wait_at_once() {
        let started = Instant::now();
        let err = wait_until(
            Duration::from_secs(10),
            "nothing",
            || -> Result<Option<()>> { bail!("the daemon exited") },
        )
        .unwrap_err();
        assert!(err.to_string().contains("the daemon exited"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_past_deadline_still_asks_once() {
        let past = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(wait_until(past, "x", || Ok(Some(7))).unwrap(), 7);
    }
}
