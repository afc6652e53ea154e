//! Twitter / X: OAuth 2.0 authorization code with PKCE (mandatory), the
//! identity is API v2's `/2/users/me`, under `data`.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Twitter's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Twitter,
    name: "X",
    protocol: Protocol::OAuth2,
    oidc_well_known_url: None,
    // "OAuth 2.0 Authorization Code Flow with PKCE":
    // https://docs.x.com/fundamentals/authentication/oauth-2-0/user-access-token
    authorization_url: Some("https://x.com/i/oauth2/authorize"),
    access_token_url: Some("https://api.x.com/2/oauth2/token"),
    // https://docs.x.com/x-api/users/get-my-user
    profile_url: Some("https://api.x.com/2/users/me"),
    oidc_jwks_url: None,
    issuer: None,
    // `/2/users/me` needs both `users.read` and `tweet.read`; no
    // `offline.access`, since sign-in needs no refresh token.
    scopes: &["users.read", "tweet.read"],
    // X refuses an authorization request without a code_challenge; S256 is
    // forced so a config cannot downgrade to plain or none.
    pkce: Pkce::S256,
    pkce_forced: true,
    // "If you are working with confidential clients, you will need to use a
    // basic authentication scheme" (the user-access-token page above).
    token_auth_method: TokenAuthMethod::ClientSecretBasic,
    // v2 wraps the user in `data`: `id` (numeric string, permanent),
    // `username` (the @handle, changeable), `name`. No email: X's
    // email-release field and scope were not confirmed from its docs, so
    // none is mapped or requested.
    claims: &[
        ("identifier", "data.id"),
        ("username", "data.username"),
        ("name", "data.name"),
    ],
    authorize_params: &[],
    requires: &[],
    default_base_url: None,
    profile_headers: &[],
    email_trust: EmailTrust::Unknown,
    quirks: Quirks::NONE,
};
