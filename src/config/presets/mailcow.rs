//! Mailcow: its built-in OAuth 2.0 server (every mailbox is an account), at
//! the instance's own URL (`base_url`).

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Mailcow's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Mailcow,
    name: "Mailcow",
    protocol: Protocol::OAuth2,
    oidc_well_known_url: None,
    // Mailcow serves `/oauth/authorize`, `/oauth/token` and `/oauth/profile`
    // (data/web/oauth/ in mailcow-dockerized); there is no default host:
    // https://docs.mailcow.email/third_party/nextcloud/third_party-nextcloud/
    authorization_url: Some("{base_url}/oauth/authorize"),
    access_token_url: Some("{base_url}/oauth/token"),
    profile_url: Some("{base_url}/oauth/profile"),
    oidc_jwks_url: None,
    issuer: None,
    // profile.php answers only when the token's scope is exactly `profile`.
    scopes: &["profile"],
    // Not documented for mailcow's OAuth server; none is sent.
    pkce: Pkce::None,
    pkce_forced: false,
    token_auth_method: TokenAuthMethod::ClientSecretPost,
    // profile.php returns `username`, `identifier` (both the mailbox
    // address), `email`, `full_name` and `displayName`; `identifier` is
    // present in every released version, `id` only in some.
    claims: &[
        ("identifier", "identifier"),
        ("username", "username"),
        ("email", "email"),
        ("name", "full_name"),
    ],
    authorize_params: &[],
    requires: &["base_url"],
    default_base_url: None,
    profile_headers: &[],
    // The address is the mailbox on the very server that signs the person
    // in: it exists and they hold it.
    email_trust: EmailTrust::Always,
    quirks: Quirks {
        // The profile call sends the token as `?access_token=`, the way
        // other mailcow clients do (authentik's mailcow source); whether
        // mailcow also honours `Authorization: Bearer` on /oauth/profile
        // depends on the server library and was not confirmed.
        token_in_query: true,
        ..Quirks::NONE
    },
};
