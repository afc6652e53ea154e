//! Okta: OpenID Connect through the discovery of an authorization server,
//! whose URL (`base_url`) is per organisation.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Okta's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Okta,
    name: "Okta",
    protocol: Protocol::OpenIdConnect,
    // `base_url` is the authorization server: the org server
    // `https://ORG.okta.com` or a custom one such as
    // `https://ORG.okta.com/oauth2/default`. Each has its own issuer and
    // discovery document beneath it:
    // https://developer.okta.com/docs/concepts/auth-servers/#discovery-endpoints-org-authorization-servers-and-custom-authorization-servers
    oidc_well_known_url: Some("{base_url}/.well-known/openid-configuration"),
    authorization_url: None,
    access_token_url: None,
    profile_url: None,
    oidc_jwks_url: None,
    issuer: None,
    // `groups` is not requested by default: Okta lists it as a scope
    // (https://developer.okta.com/docs/api/oauth2/), but a custom
    // authorization server only has it once an admin adds it, and asking
    // for an undefined scope fails the sign-in. Add "groups" to `scopes`
    // and configure a groups claim to get groups.
    scopes: &["openid", "profile", "email"],
    pkce: Pkce::S256,
    pkce_forced: false,
    // Okta's default for a new web app integration.
    token_auth_method: TokenAuthMethod::ClientSecretBasic,
    // The defaults fit: `sub`, `preferred_username` (the Okta login),
    // `email`, `email_verified`, `name`, `groups`.
    claims: &[],
    authorize_params: &[],
    requires: &["base_url"],
    default_base_url: None,
    profile_headers: &[],
    email_trust: EmailTrust::Flag,
    quirks: Quirks::NONE,
};
