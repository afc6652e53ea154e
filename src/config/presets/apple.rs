//! Sign in with Apple on the web: OpenID Connect without discovery, a
//! `form_post` callback, and a client secret that is an ES256 JWT the client
//! signs itself.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Apple's issuer, and the `aud` of the client secret JWT.
pub const ISSUER: &str = "https://appleid.apple.com";

/// Apple's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Apple,
    name: "Apple",
    protocol: Protocol::OpenIdConnect,
    // The endpoints are fixed and documented, so no discovery fetch:
    // https://developer.apple.com/documentation/signinwithapplerestapi
    oidc_well_known_url: None,
    // https://developer.apple.com/documentation/signinwithapplejs/incorporating-sign-in-with-apple-into-other-platforms
    authorization_url: Some("https://appleid.apple.com/auth/authorize"),
    // https://developer.apple.com/documentation/signinwithapplerestapi/generate-and-validate-tokens
    access_token_url: Some("https://appleid.apple.com/auth/token"),
    // Apple has no userinfo endpoint (`no_profile_endpoint`).
    profile_url: None,
    // https://developer.apple.com/documentation/signinwithapplerestapi/fetch-apple's-public-key-for-verifying-token-signature
    oidc_jwks_url: Some("https://appleid.apple.com/auth/keys"),
    issuer: Some(ISSUER),
    // `name` and `email` are Apple's only scopes; `openid` is how this
    // gateway knows to validate the ID token and send a nonce, and Apple
    // accepts it. Requesting any scope makes form_post mandatory.
    scopes: &["openid", "name", "email"],
    // Apple's web flow documents no code_challenge (not confirmed either
    // way); none is sent. The nonce still binds the ID token to the flow.
    pkce: Pkce::None,
    pkce_forced: false,
    // The generated client secret goes in the form body with client_id.
    token_auth_method: TokenAuthMethod::ClientSecretPost,
    // `sub` is stable per developer team. `email` may be a private relay
    // address; `email_verified` is sometimes the string "true". The name is
    // not in the ID token at all (`no_profile_endpoint`).
    claims: &[],
    // "If you requested any scopes, the value must be form_post":
    // https://developer.apple.com/documentation/signinwithapplejs/incorporating-sign-in-with-apple-into-other-platforms
    authorize_params: &[("response_mode", "form_post")],
    // The client secret is made from these (see `client_secret`); the
    // Services ID is the source's `consumer_key`, since Apple's `client_id`
    // and the secret's `sub` must be that same value. There is no
    // `consumer_secret`.
    requires: &["team_id", "key_id", "private_key_file"],
    default_base_url: None,
    profile_headers: &[],
    email_trust: EmailTrust::Flag,
    quirks: Quirks {
        // The callback arrives as a cross-site POST from appleid.apple.com;
        // a SameSite=Lax login-state cookie would not come with it.
        form_post: true,
        apple_client_secret: true,
        // The name is sent once, as the `user` form field of the first
        // callback ({"name":{"firstName","lastName"},"email"}); it is
        // unsigned, so it is used for the display name only.
        no_profile_endpoint: true,
        ..Quirks::NONE
    },
};
