//! Google (Google accounts and Workspace): OpenID Connect through discovery.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Google's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Google,
    name: "Google",
    protocol: Protocol::OpenIdConnect,
    // https://developers.google.com/identity/openid-connect/openid-connect#discovery
    oidc_well_known_url: Some("https://accounts.google.com/.well-known/openid-configuration"),
    authorization_url: None,
    access_token_url: None,
    profile_url: None,
    oidc_jwks_url: None,
    issuer: None,
    scopes: &["openid", "email", "profile"],
    // Google supports S256 for web server apps too:
    // https://developers.google.com/identity/protocols/oauth2/web-server
    pkce: Pkce::S256,
    pkce_forced: false,
    // Its discovery document lists client_secret_post and _basic; the
    // documented code exchange puts the secret in the body.
    token_auth_method: TokenAuthMethod::ClientSecretPost,
    // Google has no username: the address is the only human handle. `sub` is
    // the stable id (an address can be renamed in Workspace):
    // https://developers.google.com/identity/openid-connect/openid-connect#an-id-tokens-payload
    // Groups need the Admin SDK, which a sign-in gateway should not ask for.
    claims: &[("username", "email")],
    authorize_params: &[],
    requires: &[],
    default_base_url: None,
    profile_headers: &[],
    // `email_verified` is in the ID token and userinfo.
    email_trust: EmailTrust::Flag,
    quirks: Quirks::NONE,
};
