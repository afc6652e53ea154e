//! The wall clock: the one place the product reads the time of day. Pure
//! code takes `now` as a parameter; the edges that start a request or a
//! background task ask the [`Clock`] the gateway state carries. Tests start
//! a gateway on a [`ManualClock`] and advance it instead of sleeping. A
//! leaf: it imports nothing from the crate.
//!
//! Real I/O timeouts (`Instant`, `tokio::time`) do not go through here:
//! this clock decides expiry, idle time and token `iat`/`exp`/`nbf` only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time of day as the product sees it: the system clock, or a manual
/// clock a test moves. Cheap to clone; clones share one time.
#[derive(Clone, Debug, Default)]
pub struct Clock(Source);

#[derive(Clone, Debug, Default)]
enum Source {
    #[default]
    System,
    Manual(ManualClock),
}

impl Clock {
    /// The operating system's wall clock.
    pub fn system() -> Self {
        Clock(Source::System)
    }

    /// The time of day now.
    pub fn now(&self) -> SystemTime {
        match &self.0 {
            Source::System => SystemTime::now(),
            Source::Manual(m) => m.now(),
        }
    }

    /// Seconds since the Unix epoch; 0 if the clock is set before 1970
    /// (every expiry then looks far in the future of nothing, never negative).
    pub fn now_unix(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Self {
        Clock(Source::Manual(manual))
    }
}

/// A clock that moves only when told: tests advance it past an expiry
/// instead of sleeping. Clones share one time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A manual clock showing the system's time of day now (so tokens and
    /// certificates made by real clocks around it still look current).
    pub fn starting_now() -> Self {
        let m = ManualClock::default();
        m.set(SystemTime::now());
        m
    }

    /// A manual clock showing `unix` seconds since the epoch.
    pub fn at_unix(unix: u64) -> Self {
        let m = ManualClock::default();
        m.set(UNIX_EPOCH + Duration::from_secs(unix));
        m
    }

    /// The [`Clock`] that reads this manual clock.
    pub fn clock(&self) -> Clock {
        Clock::from(self.clone())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let micros = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        // fetch_update's closure never returns None: the result is always Ok.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(micros))
            });
    }

    /// Sets the clock to `at` (before 1970 reads as the epoch).
    pub fn set(&self, at: SystemTime) {
        let micros = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.0.store(micros, Ordering::Release);
    }

    /// The time this clock shows.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.0.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_a_time_after_this_code_was_written() {
        // 2026-01-01T00:00:00Z: a clock at 0 or in the past would fail here.
        assert!(Clock::system().now_unix() > 1_767_225_600);
    }

    #[test]
    fn a_manual_clock_stands_still_until_advanced_and_its_clones_follow() {
        let manual = ManualClock::at_unix(1_000);
        let clock = manual.clock();
        let copy = clock.clone();
        assert_eq!(clock.now_unix(), 1_000);
        manual.advance(Duration::from_secs(90));
        assert_eq!(clock.now_unix(), 1_090);
        assert_eq!(copy.now_unix(), 1_090);
        manual.set(UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(copy.now_unix(), 5);
    }

    #[test]
    fn a_manual_clock_keeps_microseconds() {
        let manual = ManualClock::at_unix(7);
        manual.advance(Duration::from_micros(250));
        assert_eq!(
            manual.clock().now(),
            UNIX_EPOCH + Duration::from_secs(7) + Duration::from_micros(250)
        );
    }
}
