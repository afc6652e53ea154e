//! Twitch: OpenID Connect through discovery, with the `claims` request
//! parameter, without which the ID token and userinfo carry no email or name.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Twitch's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Twitch,
    name: "Twitch",
    protocol: Protocol::OpenIdConnect,
    // https://dev.twitch.tv/docs/authentication/getting-tokens-oidc/#discovering-supported-claims-and-authorization-uris
    oidc_well_known_url: Some("https://id.twitch.tv/oauth2/.well-known/openid-configuration"),
    authorization_url: None,
    access_token_url: None,
    profile_url: None,
    oidc_jwks_url: None,
    issuer: None,
    // `user:read:email` is what releases the email and email_verified claims.
    scopes: &["openid", "user:read:email"],
    // Twitch documents no PKCE for the authorization code flow (not
    // confirmed either way), so none is sent.
    pkce: Pkce::None,
    pkce_forced: false,
    // The documented token request sends client_id and client_secret in the
    // body: https://dev.twitch.tv/docs/authentication/getting-tokens-oidc/#oidc-authorization-code-grant-flow
    token_auth_method: TokenAuthMethod::ClientSecretPost,
    // `sub` is the Twitch user id. Twitch has no separate full name;
    // `preferred_username` is the display name, so it serves as both.
    claims: &[("name", "preferred_username")],
    // "Requesting claims": Twitch only includes email, email_verified and
    // preferred_username when asked through the OIDC `claims` parameter
    // (OpenID Connect Core §5.5), for the ID token and userinfo separately:
    // https://dev.twitch.tv/docs/authentication/getting-tokens-oidc/#requesting-claims
    authorize_params: &[(
        "claims",
        r#"{"id_token":{"email":null,"email_verified":null,"preferred_username":null},"userinfo":{"email":null,"email_verified":null,"preferred_username":null}}"#,
    )],
    requires: &[],
    default_base_url: None,
    profile_headers: &[],
    email_trust: EmailTrust::Flag,
    quirks: Quirks::NONE,
};
