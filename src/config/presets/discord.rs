//! Discord: plain OAuth 2.0; the identity is `GET /users/@me`.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Discord's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Discord,
    name: "Discord",
    protocol: Protocol::OAuth2,
    oidc_well_known_url: None,
    // "OAuth2 URLs": https://discord.com/developers/docs/topics/oauth2#shared-resources-oauth2-urls
    authorization_url: Some("https://discord.com/oauth2/authorize"),
    access_token_url: Some("https://discord.com/api/oauth2/token"),
    // https://discord.com/developers/docs/resources/user#get-current-user
    profile_url: Some("https://discord.com/api/users/@me"),
    oidc_jwks_url: None,
    issuer: None,
    // `identify` for /users/@me without email, `email` adds email and
    // verified: https://discord.com/developers/docs/topics/oauth2#shared-resources-oauth2-scopes
    scopes: &["identify", "email"],
    // Discord's authorization server metadata
    // (https://discord.com/.well-known/oauth-authorization-server) lists
    // code_challenge_methods_supported ["S256"] and both basic and post.
    pkce: Pkce::S256,
    pkce_forced: false,
    token_auth_method: TokenAuthMethod::ClientSecretBasic,
    // `id` is the snowflake (a string); `username` the unique handle since
    // the 2023 username migration; `global_name` the display name (null when
    // unset); `verified` whether the email is verified:
    // https://discord.com/developers/docs/resources/user#user-object
    claims: &[
        ("identifier", "id"),
        ("username", "username"),
        ("name", "global_name"),
        ("email", "email"),
        ("email_verified", "verified"),
    ],
    authorize_params: &[],
    requires: &[],
    default_base_url: None,
    profile_headers: &[],
    email_trust: EmailTrust::Flag,
    quirks: Quirks::NONE,
};
