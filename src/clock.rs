//! The wall clock: the one place the product reads the time of day. Pure
//! code takes `now` as a parameter; the edges that start a request or a
//! background task ask here. A leaf: it imports nothing from the crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; 0 if the system clock is set before 1970
/// (every expiry then looks far in the future of nothing, never negative).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_reads_a_time_after_this_code_was_written() {
        // 2026-01-01T00:00:00Z: a clock at 0 or in the past would fail here.
        assert!(now_unix() > 1_767_225_600);
    }
}
