//! The source's tokens a session keeps for apps with `pass_access_token`:
//! what is kept, how it is sealed for the store (AES-256-GCM with the session
//! keys, bound to the session id), and when it is due for a refresh. Pure:
//! the time is a parameter; the refresh itself is in `service`.

use serde::{Deserialize, Serialize};

use crate::session::cookie::{Purpose, Sealer, SessionError};
use crate::source::TokenSet;

/// Longest sealed token record opened (access and refresh tokens are rarely
/// over a few KiB; anything this size is not ours).
pub const MAX_SEALED_BYTES: usize = 64 * 1024;

/// Refresh once the remaining lifetime is under this (or half the lifetime, if less).
pub const REFRESH_MARGIN_SECS: i64 = 30;

/// The lifetime assumed for a refreshable access token whose token response
/// gave no `expires_in` (OA2-16): short, as Keycloak's default.
pub const DEFAULT_LIFETIME_SECS: i64 = 300;

/// The tokens of one session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTokens {
    /// The access token sent upstream as `X-Forwarded-Access-Token`.
    pub access_token: String,
    /// The refresh token; `None` when the provider gave none.
    pub refresh_token: Option<String>,
    /// When the access token was issued (unix seconds).
    pub issued_at: i64,
    /// When it expires (unix seconds); `None` when the provider did not say.
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTokens")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

fn secs(now: u64) -> i64 {
    i64::try_from(now).unwrap_or(i64::MAX)
}

impl SessionTokens {
    /// The tokens of a token endpoint answer received at `now`.
    pub fn issued(set: &TokenSet, now: u64) -> SessionTokens {
        SessionTokens::with_refresh_token(set, set.refresh_token.clone(), now)
    }

    /// After a refresh: the new tokens; the old refresh token stays where the
    /// provider did not rotate it (RFC 6749 §6 lets it keep the old one).
    pub fn refreshed(&self, set: &TokenSet, now: u64) -> SessionTokens {
        let refresh = set
            .refresh_token
            .clone()
            .or_else(|| self.refresh_token.clone());
        SessionTokens::with_refresh_token(set, refresh, now)
    }

    /// `set`'s access token with `refresh_token`. Without `expires_in`, a
    /// token that can be refreshed is given [`DEFAULT_LIFETIME_SECS`]
    /// (OA2-16: a conservative default, not "never expires"); one that cannot
    /// is passed as it is (a GitHub OAuth app's token has no lifetime at all,
    /// and ending its session would gain nothing).
    fn with_refresh_token(set: &TokenSet, refresh_token: Option<String>, now: u64) -> Self {
        let now = secs(now);
        let lifetime = match set.expires_in {
            Some(e) => Some(i64::try_from(e).unwrap_or(i64::MAX)),
            None => refresh_token.is_some().then_some(DEFAULT_LIFETIME_SECS),
        };
        SessionTokens {
            access_token: set.access_token.clone(),
            refresh_token,
            issued_at: now,
            expires_at: lifetime.map(|l| now.saturating_add(l)),
        }
    }

    /// Whether the access token's remaining lifetime at `now` is under
    /// min(30 s, half its lifetime). A token of unknown lifetime never is.
    pub fn refresh_due(&self, now: u64) -> bool {
        let Some(exp) = self.expires_at else {
            return false;
        };
        let lifetime = exp.saturating_sub(self.issued_at).max(0);
        let margin = REFRESH_MARGIN_SECS.min(lifetime / 2);
        exp.saturating_sub(secs(now)) < margin
    }

    /// Whether the access token has expired at `now`.
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|exp| secs(now) >= exp)
    }

    /// Sealed for session `sid`'s record: opens only for that session.
    pub fn seal(&self, sealer: &Sealer, sid: &str) -> Result<String, SessionError> {
        sealer.seal_stored(sid, Purpose::Tokens, self)
    }

    /// Opens what [`SessionTokens::seal`] made for session `sid`; `None` when
    /// it does not open (another session's, a retired secret).
    pub fn open(sealer: &Sealer, sid: &str, sealed: &str) -> Option<SessionTokens> {
        sealer
            .open_stored(sid, Purpose::Tokens, sealed, MAX_SEALED_BYTES)
            .ok()
            .map(|o| o.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn set(access: &str, refresh: Option<&str>, expires_in: Option<u64>) -> TokenSet {
        TokenSet {
            access_token: access.into(),
            refresh_token: refresh.map(Into::into),
            expires_in,
        }
    }

    #[test]
    fn a_token_is_due_under_thirty_seconds_or_half_its_lifetime() {
        // One hour: due 30 s before expiry.
        let t = SessionTokens::issued(&set("a", Some("r"), Some(3600)), 1000);
        assert!(!t.refresh_due(1000 + 3600 - 30));
        assert!(t.refresh_due(1000 + 3600 - 29));
        // Ten seconds: due at half time.
        let t = SessionTokens::issued(&set("a", None, Some(10)), 1000);
        assert!(!t.refresh_due(1005));
        assert!(t.refresh_due(1006));
        assert!(!t.expired(1009));
        assert!(t.expired(1010));
        // No lifetime given and no refresh token: nothing to renew it with,
        // never due, never expired.
        let t = SessionTokens::issued(&set("a", None, None), 1000);
        assert!(!t.refresh_due(u64::MAX / 2));
        assert!(!t.expired(u64::MAX / 2));
    }

    #[test]
    fn oa2_16_a_refreshable_token_without_expires_in_is_renewed_after_five_minutes() {
        let t = SessionTokens::issued(&set("a", Some("r"), None), 1000);
        assert!(!t.refresh_due(1000 + 300 - 30));
        assert!(t.refresh_due(1000 + 300 - 29));
        // A refresh that again says nothing of the lifetime, and keeps the
        // old refresh token: the same default from the refresh on.
        let next = t.refreshed(&set("b", None, None), 1280);
        assert_eq!(next.refresh_token.as_deref(), Some("r"));
        assert_eq!(next.expires_at, Some(1280 + 300));
    }

    #[test]
    fn a_refresh_without_a_new_refresh_token_keeps_the_old_one_and_a_rotated_one_replaces_it() {
        let t = SessionTokens::issued(&set("a1", Some("r1"), Some(60)), 0);
        let kept = t.refreshed(&set("a2", None, Some(60)), 50);
        assert_eq!(kept.access_token, "a2");
        assert_eq!(kept.refresh_token.as_deref(), Some("r1"));
        assert_eq!(kept.expires_at, Some(110));
        let rotated = t.refreshed(&set("a3", Some("r2"), Some(60)), 50);
        assert_eq!(rotated.refresh_token.as_deref(), Some("r2"));
    }

    #[test]
    fn sealed_tokens_hide_the_token_and_open_only_for_their_own_session() {
        let sealer = Sealer::new(&[Secret::new(vec![7u8; 32])]);
        let t = SessionTokens::issued(&set("access-XYZ", Some("refresh-XYZ"), Some(60)), 0);
        let sealed = t.seal(&sealer, "sid-1").unwrap();
        assert!(!sealed.contains("XYZ"));
        assert_eq!(
            SessionTokens::open(&sealer, "sid-1", &sealed),
            Some(t.clone())
        );
        assert_eq!(SessionTokens::open(&sealer, "sid-2", &sealed), None);
        let debug = format!("{t:?}");
        assert!(!debug.contains("XYZ"), "{debug}");
    }
}
