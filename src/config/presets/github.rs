//! GitHub (github.com; GitHub Enterprise Server by overriding the three URLs).
//! Plain OAuth 2.0: no ID token; the identity is the REST API's `/user`.
//! With `read:org`, organisation and team memberships become groups
//! (`acme`, `acme/platform`) from `/user/orgs` and `/user/teams`, paged.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// GitHub's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Github,
    name: "GitHub",
    protocol: Protocol::OAuth2,
    oidc_well_known_url: None,
    // The web application flow:
    // https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps#web-application-flow
    // GitHub Enterprise Server: https://HOST/login/oauth/authorize,
    // https://HOST/login/oauth/access_token and https://HOST/api/v3/user
    // set as authorization_url / access_token_url / profile_url.
    authorization_url: Some("https://github.com/login/oauth/authorize"),
    access_token_url: Some("https://github.com/login/oauth/access_token"),
    // https://docs.github.com/en/rest/users/users#get-the-authenticated-user
    profile_url: Some("https://api.github.com/user"),
    oidc_jwks_url: None,
    issuer: None,
    // `read:user` for the profile, `user:email` for `/user/emails` (a
    // private primary address is otherwise invisible):
    // https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/scopes-for-oauth-apps
    // `read:org` for `/user/orgs` and `/user/teams` (groups):
    // https://docs.github.com/en/rest/orgs/orgs#list-organizations-for-the-authenticated-user
    scopes: &["read:user", "user:email", "read:org"],
    // PKCE is accepted (S256 only) since July 2025:
    // https://github.blog/changelog/2025-07-14-pkce-support-for-oauth-and-github-app-authentication
    // GitHub Enterprise Server versions older than that may refuse it; set
    // pkce = "none" there.
    pkce: Pkce::S256,
    pkce_forced: false,
    // The documented token request carries client_id and client_secret as
    // parameters; HTTP Basic is not documented for this endpoint.
    token_auth_method: TokenAuthMethod::ClientSecretPost,
    // `id` is the numeric, permanent account id; `login` can be renamed by
    // its owner, so it is only the username. `email` is the public email and
    // null when the user keeps it private (hence `github_emails`).
    claims: &[
        ("identifier", "id"),
        ("username", "login"),
        ("name", "name"),
        ("email", "email"),
        ("groups", "groups"),
    ],
    authorize_params: &[],
    requires: &[],
    default_base_url: None,
    // The REST API's recommended media type and a pinned API version, so a
    // future default version cannot change the `/user` shape under us:
    // https://docs.github.com/en/rest/about-the-rest-api/api-versions
    profile_headers: &[
        ("accept", "application/vnd.github+json"),
        ("x-github-api-version", "2022-11-28"),
    ],
    // The profile's `email` carries no verified flag; `/user/emails` does,
    // and only a primary *verified* address is taken from it.
    email_trust: EmailTrust::Flag,
    quirks: Quirks {
        // https://docs.github.com/en/rest/users/emails#list-email-addresses-for-the-authenticated-user
        github_emails: true,
        github_memberships: true,
        // Without `Accept: application/json` the token endpoint answers
        // `access_token=...&scope=...` form-encoded:
        // https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps#2-users-are-redirected-back-to-your-site-by-github
        token_accept_json: true,
        // "All API requests must include a valid User-Agent header":
        // https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api#user-agent
        user_agent_required: true,
        ..Quirks::NONE
    },
};
