//! Sessions: what the sealed cookies carry, and how they are sealed (`cookie`).
//! `cookie` is pure (the time is a parameter); `service` reads and writes the store.

pub mod cookie;
pub mod ended;
pub mod handoff;
pub mod idle;
pub mod service;
pub mod tokens;

use serde::{Deserialize, Serialize};

/// The session cookie's sealed payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// Session id: the key of the session record in the store (random, 128 bits, base64url).
    pub sid: String,
    /// The local user's id.
    pub uid: String,
    /// The host the session was issued for; a session presented on another host is ignored
    /// (SES-18). `.{domain}` for a cookie shared under `session.cookie_domain`.
    pub host: String,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Absolute expiry, unix seconds.
    pub exp: u64,
}

/// The login-state cookie's sealed payload: one sign-in attempt in one browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// Slug of the source the flow was started with.
    pub source: String,
    /// The `state` sent to the provider.
    pub state: String,
    /// The OIDC `nonce` sent to the provider, if any.
    pub nonce: Option<String>,
    /// The PKCE code verifier, if PKCE is used.
    pub pkce_verifier: Option<String>,
    /// Where to return after signing in (already validated).
    pub rd: String,
    /// A flow started by `/_auth/link/{slug}`: the id of the session that
    /// started it. The callback links only while that session is still this
    /// browser's; `None` is an ordinary login, which never links (SES-08).
    pub link: Option<String>,
    /// Expiry, unix seconds (10 minutes after start).
    pub exp: u64,
    /// OAuth 1.0a: the request token this browser was sent to authorize, and
    /// its secret (sealed with the rest; the callback must name this token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth1: Option<Oauth1Pending>,
    /// A login for another app host: the hash of the handoff nonce that
    /// host's browser holds in a cookie; the handoff code is bound to it, so
    /// only this browser can trade it (a login-CSRF guard, like OA2-04).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
}

/// An OAuth 1.0a request token (temporary credentials, RFC 5849 §2.1).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Oauth1Pending {
    /// `oauth_token`.
    pub token: String,
    /// `oauth_token_secret`: signs the access-token request.
    pub secret: String,
}

impl std::fmt::Debug for Oauth1Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oauth1Pending")
            .field("token", &self.token)
            .field("secret", &"<redacted>")
            .finish()
    }
}
