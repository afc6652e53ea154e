//! GitHub (github.com; GitHub Enterprise Server by overriding the three URLs).
//! Plain OAuth 2.0: no ID token; the identity is the REST API's `/user`.

use serde_json::Value;
use url::Url;

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
    scopes: &["read:user", "user:email"],
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

/// `/user/emails` next to the profile URL: `https://api.github.com/user`
/// gives `https://api.github.com/user/emails`, and a GitHub Enterprise
/// `https://HOST/api/v3/user` gives `https://HOST/api/v3/user/emails`.
pub fn emails_url(profile_url: &Url) -> Url {
    let mut url = profile_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    let path = format!("{}/emails", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// The primary address of a `/user/emails` answer, if GitHub has verified
/// it. An unverified primary is not replaced by another verified address:
/// the person chose that one, and taking another would surprise them.
pub fn primary_verified_email(emails: &Value) -> Option<String> {
    emails
        .as_array()?
        .iter()
        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
        .filter(|e| e.get("verified").and_then(Value::as_bool) == Some(true))
        .and_then(|e| e.get("email"))
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emails_url_sits_next_to_the_profile_on_github_and_enterprise() {
        let u = |s: &str| emails_url(&Url::parse(s).unwrap()).to_string();
        assert_eq!(
            u("https://api.github.com/user"),
            "https://api.github.com/user/emails"
        );
        assert_eq!(
            u("https://ghe.corp.example/api/v3/user/"),
            "https://ghe.corp.example/api/v3/user/emails"
        );
    }

    #[test]
    fn only_a_verified_primary_address_is_taken() {
        let list = json!([
            {"email": "old@example.com", "primary": false, "verified": true, "visibility": null},
            {"email": "octo@example.com", "primary": true, "verified": true, "visibility": "private"}
        ]);
        assert_eq!(
            primary_verified_email(&list).as_deref(),
            Some("octo@example.com")
        );
        let unverified = json!([
            {"email": "octo@example.com", "primary": true, "verified": false},
            {"email": "other@example.com", "primary": false, "verified": true}
        ]);
        assert_eq!(primary_verified_email(&unverified), None);
        assert_eq!(
            primary_verified_email(&json!({"message": "Not Found"})),
            None
        );
    }
}
