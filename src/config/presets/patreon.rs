//! Patreon: plain OAuth 2.0; the identity is API v2's `/identity`, a JSON:API
//! document with the user under `data` and its fields under `data.attributes`.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Patreon's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Patreon,
    name: "Patreon",
    protocol: Protocol::OAuth2,
    oidc_well_known_url: None,
    // https://docs.patreon.com/#oauth
    authorization_url: Some("https://www.patreon.com/oauth2/authorize"),
    access_token_url: Some("https://www.patreon.com/api/oauth2/token"),
    // API v2 returns no attributes unless they are named with
    // `fields[user]` (brackets percent-encoded, or Patreon answers 400):
    // https://docs.patreon.com/#get-api-oauth2-v2-identity
    profile_url: Some(
        "https://www.patreon.com/api/oauth2/v2/identity?fields%5Buser%5D=email,full_name,is_email_verified,vanity",
    ),
    oidc_jwks_url: None,
    issuer: None,
    // `identity` for the user, `identity[email]` for its address:
    // https://docs.patreon.com/#scopes
    scopes: &["identity", "identity[email]"],
    // Patreon documents no PKCE.
    pkce: Pkce::None,
    pkce_forced: false,
    // The documented token request sends client_id and client_secret in the
    // form body.
    token_auth_method: TokenAuthMethod::ClientSecretPost,
    // `data.id` is the user id (a numeric string). `vanity` is the profile
    // URL's handle and may be null, in which case the username falls back
    // to the identifier.
    claims: &[
        ("identifier", "data.id"),
        ("username", "data.attributes.vanity"),
        ("name", "data.attributes.full_name"),
        ("email", "data.attributes.email"),
        ("email_verified", "data.attributes.is_email_verified"),
    ],
    authorize_params: &[],
    requires: &[],
    default_base_url: None,
    profile_headers: &[],
    email_trust: EmailTrust::Flag,
    quirks: Quirks::NONE,
};
