//! Reddit: plain OAuth 2.0; the identity is `/api/v1/me` on the OAuth host.
//! Reddit never releases an email address.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Reddit's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Reddit,
    name: "Reddit",
    protocol: Protocol::OAuth2,
    oidc_well_known_url: None,
    // https://github.com/reddit-archive/reddit/wiki/OAuth2
    authorization_url: Some("https://www.reddit.com/api/v1/authorize"),
    access_token_url: Some("https://www.reddit.com/api/v1/access_token"),
    // API calls with a bearer token go to oauth.reddit.com, not www:
    // https://www.reddit.com/dev/api/#GET_api_v1_me
    profile_url: Some("https://oauth.reddit.com/api/v1/me"),
    oidc_jwks_url: None,
    issuer: None,
    // `identity` is the only scope `/api/v1/me` needs.
    scopes: &["identity"],
    // Reddit documents no PKCE.
    pkce: Pkce::None,
    pkce_forced: false,
    // The token request must use HTTP Basic with the client id and secret
    // (the wiki above, "Retrieving the access token").
    token_auth_method: TokenAuthMethod::ClientSecretBasic,
    // `id` is the base-36 account id (without the `t2_` prefix); `name` the
    // username, which Reddit does not let anyone change, and the only name
    // there is. No email at all.
    claims: &[("identifier", "id"), ("username", "name"), ("name", "name")],
    // `duration=temporary`: no refresh token, sign-in needs none. Reddit
    // requires the parameter on every authorization request.
    authorize_params: &[("duration", "temporary")],
    requires: &[],
    default_base_url: None,
    profile_headers: &[],
    email_trust: EmailTrust::Unknown,
    quirks: Quirks {
        // Reddit's API rules ask for a unique, descriptive User-Agent and
        // throttle generic ones: https://github.com/reddit-archive/reddit/wiki/API
        user_agent_required: true,
        ..Quirks::NONE
    },
};
