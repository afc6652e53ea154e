//! GitLab (gitlab.com or a self-managed instance): OpenID Connect through
//! discovery at `{base_url}`.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// GitLab's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Gitlab,
    name: "GitLab",
    protocol: Protocol::OpenIdConnect,
    // "For GitLab Self-Managed, use https://<your-gitlab-instance>/.well-known/openid-configuration":
    // https://docs.gitlab.com/integration/openid_connect_provider/#settings-discovery
    oidc_well_known_url: Some("{base_url}/.well-known/openid-configuration"),
    authorization_url: None,
    access_token_url: None,
    profile_url: None,
    oidc_jwks_url: None,
    issuer: None,
    // `profile` and `email` release the username, email and groups claims.
    scopes: &["openid", "profile", "email"],
    // https://docs.gitlab.com/api/oauth2/#authorization-code-with-proof-key-for-code-exchange-pkce
    pkce: Pkce::S256,
    pkce_forced: false,
    token_auth_method: TokenAuthMethod::ClientSecretBasic,
    // The identifier is `sub` (the numeric user id as a string), not `id` as
    // in GitLab's REST API: this is the OIDC view. `nickname` is the GitLab
    // username; `groups` (full paths of the user's groups) and the username
    // come from userinfo only, not the ID token:
    // https://docs.gitlab.com/integration/openid_connect_provider/#shared-information
    claims: &[
        ("identifier", "sub"),
        ("username", "nickname"),
        ("groups", "groups"),
    ],
    authorize_params: &[],
    requires: &[],
    // Without a base_url the source is gitlab.com.
    default_base_url: Some("https://gitlab.com"),
    profile_headers: &[],
    // `email_verified` is in userinfo.
    email_trust: EmailTrust::Flag,
    quirks: Quirks::NONE,
};
