//! What the login-state cookie carries for one sign-in attempt in one
//! browser: checked by the pure flow (`flow::check_callback`), sealed by
//! `session::cookie`.

use serde::{Deserialize, Serialize};

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
