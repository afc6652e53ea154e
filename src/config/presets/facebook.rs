//! Facebook Login: plain OAuth 2.0 against a versioned Graph API; the
//! identity is `/me?fields=id,name,email`.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Facebook's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Facebook,
    name: "Facebook",
    protocol: Protocol::OAuth2,
    oidc_well_known_url: None,
    // "Manually Build a Login Flow":
    // https://developers.facebook.com/docs/facebook-login/guides/advanced/manual-flow
    // Every Graph URL names its version; an unversioned call uses the app's
    // oldest available version, so the version is pinned here. v25.0 was
    // current when this was written (https://developers.facebook.com/docs/graph-api/);
    // a version is served for at least two years, and an operator can move
    // to a newer one by overriding the three URLs.
    authorization_url: Some("https://www.facebook.com/v25.0/dialog/oauth"),
    access_token_url: Some("https://graph.facebook.com/v25.0/oauth/access_token"),
    // Graph returns only `id` and `name` unless fields are named:
    // https://developers.facebook.com/docs/graph-api/reference/user/
    profile_url: Some("https://graph.facebook.com/v25.0/me?fields=id,name,email"),
    oidc_jwks_url: None,
    issuer: None,
    // Facebook separates scopes with commas in its docs but also accepts
    // spaces; `email` is needed for the address, `public_profile` is implied.
    scopes: &["public_profile", "email"],
    // PKCE is not documented for the manual web flow (not confirmed), so
    // none is sent.
    pkce: Pkce::None,
    pkce_forced: false,
    // The documented code exchange passes client_id and client_secret as
    // parameters.
    token_auth_method: TokenAuthMethod::ClientSecretPost,
    // `id` is app-scoped (stable for this app, differs between apps).
    // Facebook has had no usernames in the API since Graph v2.0; the
    // username falls back to the identifier. `email` is absent when the
    // person has no confirmed address or declined the permission.
    claims: &[("identifier", "id"), ("name", "name"), ("email", "email")],
    authorize_params: &[],
    requires: &[],
    default_base_url: None,
    profile_headers: &[],
    // No verified flag is returned; Facebook does not document that the
    // address was verified (not confirmed), so it is not trusted by default.
    email_trust: EmailTrust::Unknown,
    quirks: Quirks::NONE,
};
