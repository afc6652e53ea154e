//! Idle expiry (`session.idle_timeout`, SES-06): when an unused session ends,
//! and how often a use is worth writing to the store. Pure; times are unix seconds.

use std::time::Duration;

/// The longest a use waits before it is written to the store.
pub const MAX_TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Whether a session last used at `last_used` has been unused for `timeout`
/// or longer at `now` (no timeout: never).
pub fn is_idle(now: u64, last_used: i64, timeout: Option<Duration>) -> bool {
    let Some(timeout) = timeout else {
        return false;
    };
    let idle_for = i128::from(now) - i128::from(last_used);
    idle_for >= i128::from(timeout.as_secs())
}

/// How often one session's use is written: min(timeout / 10, 60 s), in whole
/// seconds and at least one (the store keeps seconds).
pub fn touch_interval(timeout: Duration) -> u64 {
    (timeout / 10).min(MAX_TOUCH_INTERVAL).as_secs().max(1)
}

/// Whether a use at `now` should be written, the last one written (or found
/// in the store) being `written`.
pub fn touch_due(now: u64, written: i64, interval: u64) -> bool {
    i128::from(now) - i128::from(written) >= i128::from(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const T: i64 = NOW as i64;

    #[test]
    fn ses06_a_session_unused_for_the_timeout_is_idle() {
        let two_hours = Some(Duration::from_secs(7200));
        assert!(!is_idle(NOW, T, two_hours), "just used");
        assert!(!is_idle(NOW, T - 7199, two_hours), "one second left");
        assert!(
            is_idle(NOW, T - 7200, two_hours),
            "unused for exactly the timeout"
        );
        assert!(is_idle(NOW, T - 100_000, two_hours));
        assert!(is_idle(NOW, 0, two_hours), "never used since the epoch");
    }

    #[test]
    fn ses06_without_a_timeout_nothing_is_ever_idle() {
        assert!(!is_idle(NOW, 0, None));
        assert!(!is_idle(NOW, i64::MIN, None));
    }

    #[test]
    fn ses06_a_use_recorded_in_the_future_is_not_idle() {
        // Another replica's clock may run a little ahead.
        assert!(!is_idle(NOW, T + 30, Some(Duration::from_secs(60))));
        assert!(!is_idle(NOW, i64::MAX, Some(Duration::from_secs(1))));
    }

    #[test]
    fn ses06_a_use_is_written_every_tenth_of_the_timeout_at_most_every_minute() {
        assert_eq!(touch_interval(Duration::from_secs(7200)), 60);
        assert_eq!(touch_interval(Duration::from_secs(600)), 60);
        assert_eq!(touch_interval(Duration::from_secs(300)), 30);
        assert_eq!(touch_interval(Duration::from_secs(5)), 1);
        assert_eq!(touch_interval(Duration::from_millis(1500)), 1);
    }

    #[test]
    fn ses06_a_use_is_due_once_the_interval_has_passed() {
        assert!(!touch_due(NOW, T, 30));
        assert!(!touch_due(NOW, T - 29, 30));
        assert!(touch_due(NOW, T - 30, 30));
        assert!(touch_due(NOW, 0, 30));
        assert!(!touch_due(NOW, T + 5, 1), "a later use is already written");
    }
}
