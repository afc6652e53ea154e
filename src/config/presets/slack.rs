//! Slack: "Sign in with Slack", OpenID Connect on top of Slack's OAuth v2.
//! The URLs are fixed (no discovery fetch at start-up), the ID token is
//! validated against Slack's JWKS and issuer, and the profile is
//! `openid.connect.userInfo`, a Slack Web API method.
//! Guide: https://docs.slack.dev/authentication/sign-in-with-slack/
//! Discovery document (the source of the URLs below):
//! https://slack.com/.well-known/openid-configuration

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Slack's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Slack,
    name: "Slack",
    protocol: Protocol::OpenIdConnect,
    // The URLs are Slack's published ones and have not moved since Sign in
    // with Slack became OIDC; fixing them spares a start-up fetch and keeps a
    // Slack outage from making the source "not ready" at start.
    oidc_well_known_url: None,
    // `/openid/connect/authorize`, not `/oauth/v2/authorize` (the guide's
    // "key differences" list).
    authorization_url: Some("https://slack.com/openid/connect/authorize"),
    // https://docs.slack.dev/reference/methods/openid.connect.token
    access_token_url: Some("https://slack.com/api/openid.connect.token"),
    // https://docs.slack.dev/reference/methods/openid.connect.userInfo
    // The method lists POST as its access, but like every Web API method it
    // takes the token in the Authorization header, which a GET carries.
    profile_url: Some("https://slack.com/api/openid.connect.userInfo"),
    // `jwks_uri` and `issuer` of the discovery document.
    oidc_jwks_url: Some("https://slack.com/openid/connect/keys"),
    issuer: Some("https://slack.com"),
    // The three scopes Sign in with Slack knows (`scopes_supported`).
    scopes: &["openid", "email", "profile"],
    // The discovery document advertises no `code_challenge_methods_supported`.
    pkce: Pkce::None,
    pkce_forced: false,
    // The method documents `client_id` and `client_secret` as arguments
    // (Basic is also listed in `token_endpoint_auth_methods_supported`).
    token_auth_method: TokenAuthMethod::ClientSecretPost,
    // `sub` is the user id (`https://slack.com/user_id`), unique within the
    // Slack deployment, and the default identifier. Slack has no handle a
    // person keeps across workspaces, so the username is the address, as
    // for Google. `name` is the display name. The workspace is the claim
    // `https://slack.com/team_id` (ID token and userinfo): policies read it
    // as `claims["https://slack.com/team_id"]`; `authorize_params = { team
    // = "T…" }` preselects that workspace on Slack's page.
    claims: &[("username", "email")],
    authorize_params: &[],
    requires: &[],
    default_base_url: None,
    profile_headers: &[],
    // userinfo and the ID token carry `email_verified`.
    email_trust: EmailTrust::Flag,
    quirks: Quirks {
        // "ok": false with an "error" string in an HTTP 200 is how every
        // Slack Web API method fails (invalid_code, invalid_auth, …):
        // https://docs.slack.dev/apis/web-api/#responses
        ok_field: true,
        ..Quirks::NONE
    },
};
