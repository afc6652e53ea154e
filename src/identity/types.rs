//! The identity vocabulary: local users, what a source proved at sign-in, the
//! links between them, and the session records the store keeps.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A local user: enrolled through a source, refreshed by sign-ins through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Random 128-bit id, base64url without padding; never reused.
    pub id: String,
    /// Unique (case-insensitively) local username; `X-Forwarded-User`. Chosen
    /// at enrollment, changed only by `portcullis users rename`.
    pub username: String,
    /// Email as the home source last reported it.
    pub email: Option<String>,
    /// Whether a source vouches for `email` (`email_verified` or `trust_email`).
    pub email_verified: bool,
    /// Display name as the home source last reported it.
    pub name: Option<String>,
    /// The source the user enrolled through: only its sign-ins refresh email
    /// and name. `None` for a user from before homes were kept who has no connection.
    pub home_source: Option<String>,
    /// Group names from every connected source, sorted, without duplicates.
    pub groups: Vec<String>,
    /// A disabled user cannot sign in and its sessions are revoked.
    pub disabled: bool,
    /// Enrollment time, unix seconds.
    pub created_at: i64,
}

/// What a source proved at sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Slug of the source that proved it.
    pub source: String,
    /// The source's stable id for the person (OIDC `sub`, a provider user id).
    pub identifier: String,
    /// Preferred username, if the source gives one.
    pub username: Option<String>,
    /// Email, if the source gives one.
    pub email: Option<String>,
    /// Whether the source vouches for the email (or the source is trusted for it).
    pub email_verified: bool,
    /// Display name, if the source gives one.
    pub name: Option<String>,
    /// Groups the source says the person is in now.
    pub groups: Vec<String>,
}

/// A link from a source identity to a local user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The local user.
    pub user_id: String,
    /// Slug of the source.
    pub source: String,
    /// The source's id for the person.
    pub identifier: String,
    /// When the link was made, unix seconds.
    pub created_at: i64,
}

/// A session to write together with a sign-in.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSession {
    /// Random session id (the cookie carries it, sealed).
    pub id: String,
    /// Slug of the source signed in with.
    pub source: String,
    /// Absolute expiry, unix seconds.
    pub expires_at: i64,
    /// The provider's `sid`, for back-channel logout.
    pub oidc_sid: Option<String>,
    /// The ID token, for RP-initiated logout's `id_token_hint`.
    pub id_token: Option<String>,
    /// The sign-in's claims as JSON text (see [`super::claims::for_session`]).
    pub claims: Option<String>,
    /// The source's tokens, sealed (see [`crate::session::tokens`]); `None`
    /// unless an app passes them upstream.
    pub tokens: Option<String>,
}

/// A stored session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id.
    pub id: String,
    /// The signed-in user.
    pub user_id: String,
    /// Slug of the source signed in with.
    pub source: String,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Absolute expiry, unix seconds.
    pub expires_at: i64,
    /// Last use recorded in the store, unix seconds (idle expiry; written in
    /// the background, so it may lag the true last use a little).
    pub last_used_at: i64,
    /// Revoked by sign-out, `users disable`, unlink or back-channel logout.
    pub revoked: bool,
    /// The provider's `sid`, for back-channel logout.
    pub oidc_sid: Option<String>,
    /// The ID token, for RP-initiated logout's `id_token_hint`.
    pub id_token: Option<String>,
    /// The sign-in's claims as JSON text; `None` for sessions from before they were kept.
    pub claims: Option<String>,
    /// The source's tokens, sealed (see [`crate::session::tokens`]).
    pub tokens: Option<String>,
}

impl SessionRecord {
    /// Whether the session still grants access at `now` (the user's own state aside).
    pub fn is_live(&self, now: i64) -> bool {
        !self.revoked && self.expires_at > now
    }
}

/// How an ID token shows in logs: whether there is one, never its text.
fn redacted(token: &Option<String>) -> &'static str {
    match token {
        Some(_) => "Some(<redacted>)",
        None => "None",
    }
}

impl fmt::Debug for NewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSession")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("expires_at", &self.expires_at)
            .field("oidc_sid", &self.oidc_sid)
            .field("id_token", &format_args!("{}", redacted(&self.id_token)))
            .field("claims", &format_args!("{}", sized(&self.claims)))
            .field("tokens", &format_args!("{}", sized(&self.tokens)))
            .finish()
    }
}

/// How claims show in logs: their size, never their values (they hold personal data).
fn sized(claims: &Option<String>) -> String {
    match claims {
        Some(c) => format!("Some(<{} bytes>)", c.len()),
        None => "None".into(),
    }
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("source", &self.source)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_used_at", &self.last_used_at)
            .field("revoked", &self.revoked)
            .field("oidc_sid", &self.oidc_sid)
            .field("id_token", &format_args!("{}", redacted(&self.id_token)))
            .field("claims", &format_args!("{}", sized(&self.claims)))
            .field("tokens", &format_args!("{}", sized(&self.tokens)))
            .finish()
    }
}

/// A handoff as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffRecord {
    /// The session whose cookie the app host gets.
    pub session_id: String,
    /// The only host (lower-case, no port) that may trade the code.
    pub host: String,
    /// Where the browser goes afterwards (validated when the code was made).
    pub rd: String,
    /// The hash (`session::handoff::binding_of`) of the nonce the asking
    /// browser holds on `host`.
    pub binding: String,
    /// Unix seconds; at or after this the code is refused.
    pub expires_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_debug_never_shows_the_id_token() {
        let s = NewSession {
            id: "sid".into(),
            source: "corp".into(),
            expires_at: 10,
            oidc_sid: None,
            id_token: Some("eyJhbGciOi.secret.sig".into()),
            claims: Some(r#"{"email":"ada@example.com"}"#.into()),
            tokens: None,
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(!shown.contains("ada@"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn a_revoked_or_expired_session_is_not_live() {
        let r = SessionRecord {
            id: "s".into(),
            user_id: "u".into(),
            source: "corp".into(),
            created_at: 0,
            expires_at: 100,
            last_used_at: 0,
            revoked: false,
            oidc_sid: None,
            id_token: None,
            claims: None,
            tokens: None,
        };
        assert!(r.is_live(99));
        assert!(!r.is_live(100));
        assert!(!SessionRecord { revoked: true, ..r }.is_live(0));
    }
}
