//! How a source's key set is kept fresh: the defaults of `jwks_cache_ttl`,
//! `jwks_max_stale` and `jwks_cooldown`, which validation fills in, and the
//! refresh interval a JWKS response's `Cache-Control` asks for (JWKS-12).

use std::time::Duration;

/// Least time between two refetches caused by unknown `kid`s (JWKS-02).
pub const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);

/// How a source's keys are kept: refresh interval, how long a set may outlive
/// failed refreshes, and the least time between unknown-`kid` refetches.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// Refresh interval when the JWKS response has no `Cache-Control: max-age`.
    pub ttl: Duration,
    /// How long the last good set is served after its fetch when refreshes fail.
    pub max_stale: Duration,
    /// Least time between two fetches caused by requests (unknown `kid`, no keys).
    pub cooldown: Duration,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            ttl: DEFAULT_TTL,
            max_stale: DEFAULT_MAX_STALE,
            cooldown: UNKNOWN_KID_COOLDOWN,
        }
    }
}

impl Freshness {
    /// The refresh interval for a response's `Cache-Control`: its `max-age`
    /// clamped to [min(ttl, 5 min), 24 h] (JWKS-12), else `ttl`.
    pub fn interval(&self, cache_control: Option<&str>) -> Duration {
        let floor = self.ttl.min(MIN_TTL);
        match cache_control.and_then(max_age) {
            Some(secs) => Duration::from_secs(secs).clamp(floor, MAX_TTL),
            None => self.ttl,
        }
    }
}

/// The `max-age` of a `Cache-Control` value; `no-store`/`no-cache` count as 0.
fn max_age(cache_control: &str) -> Option<u64> {
    let mut age = None;
    for directive in cache_control.split(',') {
        let d = directive.trim();
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            return Some(0);
        }
        if let Some((name, value)) = d.split_once('=') {
            if name.trim().eq_ignore_ascii_case("max-age") {
                age = value.trim().trim_matches('"').parse::<u64>().ok();
            }
        }
    }
    age
}

/// Refresh interval without `max-age` (docs/security.md JWKS-12 default).
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// How long a set outlives failed refreshes (KEEP-LAST-GOOD bound).
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// Shortest interval a `max-age` can ask for (unless the configured ttl is shorter).
pub const MIN_TTL: Duration = Duration::from_secs(300);
/// Longest interval a `max-age` can ask for.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks12_max_age_is_honoured_within_bounds() {
        let f = Freshness::default();
        assert_eq!(f.interval(None), DEFAULT_TTL);
        assert_eq!(
            f.interval(Some("public, max-age=3600")),
            Duration::from_secs(3600)
        );
        assert_eq!(f.interval(Some("max-age=5")), MIN_TTL);
        assert_eq!(f.interval(Some("no-store")), MIN_TTL);
        assert_eq!(f.interval(Some("max-age=9999999")), MAX_TTL);
        assert_eq!(f.interval(Some("max-age=junk")), DEFAULT_TTL);
        let short = Freshness {
            ttl: Duration::from_secs(2),
            ..Freshness::default()
        };
        assert_eq!(short.interval(Some("max-age=1")), Duration::from_secs(2));
        assert_eq!(short.interval(Some("max-age=7")), Duration::from_secs(7));
    }
}
