//! GitHub: the vendor behaviour beyond URLs and mapping, pure
//! helpers the sign-in adapter calls; the preset itself (URLs, scopes,
//! quirk flags and why) is `config::presets::github`.

use serde_json::Value;
use url::Url;

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

/// The scope that lets `/user/orgs` and `/user/teams` answer.
pub const MEMBERSHIP_SCOPE: &str = "read:org";

/// Whether `scope` grants reading memberships: `read:org`, or the wider
/// `write:org` and `admin:org` that include it (GitHub's scope docs).
/// An entry may hold several scopes, space-separated (they are joined so).
pub fn reads_memberships(scope: &str) -> bool {
    scope
        .split_whitespace()
        .any(|s| matches!(s, MEMBERSHIP_SCOPE | "write:org" | "admin:org"))
}
/// Entries per page asked for (GitHub's maximum).
pub const PER_PAGE: u32 = 100;
/// Pages read per list at most: 1000 organisations or teams; more are cut
/// off (logged by the caller) rather than slowing every sign-in.
pub const MAX_PAGES: usize = 10;

/// `/user/{what}?per_page=100` next to the profile URL (`orgs`, `teams`).
pub fn memberships_url(profile_url: &Url, what: &str) -> Url {
    let mut url = emails_url(profile_url);
    let path = format!("{}/{what}", url.path().trim_end_matches("/emails"));
    url.set_path(&path);
    url.set_query(Some(&format!("per_page={PER_PAGE}")));
    url
}

/// The organisation logins of one `/user/orgs` page: `[{"login": "acme", ...}]`.
pub fn org_groups(page: &Value) -> Vec<String> {
    page.as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("login").and_then(Value::as_str))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `org/team-slug` for each team of one `/user/teams` page:
/// `[{"slug": "platform", "organization": {"login": "acme"}, ...}]`.
pub fn team_groups(page: &Value) -> Vec<String> {
    page.as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let slug = t.get("slug").and_then(Value::as_str)?;
            let org = t
                .get("organization")?
                .get("login")
                .and_then(Value::as_str)?;
            (!slug.is_empty() && !org.is_empty()).then(|| format!("{org}/{slug}"))
        })
        .collect()
}

/// The `rel="next"` URL of a `Link` header (RFC 8288, as GitHub pages:
/// `<https://api.github.com/user/orgs?page=2>; rel="next", <...>; rel="last"`),
/// only when it stays on `base`'s scheme and host: a page cannot send the
/// access token elsewhere.
pub fn next_page(link: Option<&str>, base: &Url) -> Option<Url> {
    link?.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .map(|r| r.trim_matches('"').split_whitespace().any(|r| r == "next"))
                .unwrap_or(false)
        });
        if !is_next {
            return None;
        }
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        Url::parse(target).ok().filter(|u| {
            u.scheme() == base.scheme()
                && u.host_str() == base.host_str()
                && u.port_or_known_default() == base.port_or_known_default()
        })
    })
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
    #[test]
    fn read_org_and_the_scopes_that_include_it_read_memberships() {
        for scope in ["read:org", "write:org", "admin:org", "read:user read:org"] {
            assert!(reads_memberships(scope), "{scope}");
        }
        for scope in [
            "read:user",
            "user:email",
            "org",
            "READ:ORG",
            "admin:org_hook",
        ] {
            assert!(!reads_memberships(scope), "{scope}");
        }
    }

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
    fn membership_lists_sit_next_to_the_profile_with_100_per_page() {
        let u = |s: &str, w: &str| memberships_url(&Url::parse(s).unwrap(), w).to_string();
        assert_eq!(
            u("https://api.github.com/user", "orgs"),
            "https://api.github.com/user/orgs?per_page=100"
        );
        assert_eq!(
            u("https://ghe.corp.example/api/v3/user", "teams"),
            "https://ghe.corp.example/api/v3/user/teams?per_page=100"
        );
    }

    #[test]
    fn orgs_and_teams_from_the_documented_shapes_become_groups() {
        // Shapes from docs.github.com/en/rest/orgs/orgs#list-organizations-for-the-authenticated-user
        // and /en/rest/teams/teams#list-teams-for-the-authenticated-user.
        let orgs = json!([
            {"login": "acme", "id": 1, "node_id": "MDEyOk9yZ2FuaXphdGlvbjE=", "url": "https://api.github.com/orgs/acme", "description": "A"},
            {"login": "widgets", "id": 2}
        ]);
        assert_eq!(org_groups(&orgs), vec!["acme", "widgets"]);
        let teams = json!([
            {"id": 1, "name": "Platform Team", "slug": "platform", "privacy": "closed",
             "organization": {"login": "acme", "id": 1}},
            {"id": 2, "name": "No org", "slug": "lost"}
        ]);
        assert_eq!(team_groups(&teams), vec!["acme/platform"]);
        assert!(org_groups(&json!({"message": "Bad credentials"})).is_empty());
    }

    #[test]
    fn the_next_page_is_read_from_the_link_header_on_the_same_host_only() {
        let base = Url::parse("https://api.github.com/user/orgs?per_page=100").unwrap();
        let link = r#"<https://api.github.com/user/orgs?per_page=100&page=2>; rel="next", <https://api.github.com/user/orgs?per_page=100&page=5>; rel="last""#;
        assert_eq!(
            next_page(Some(link), &base)
                .map(|u| u.to_string())
                .as_deref(),
            Some("https://api.github.com/user/orgs?per_page=100&page=2")
        );
        let last = r#"<https://api.github.com/user/orgs?page=1>; rel="prev", <https://api.github.com/user/orgs?page=1>; rel="first""#;
        assert_eq!(next_page(Some(last), &base), None);
        assert_eq!(next_page(None, &base), None);
        let elsewhere = r#"<https://evil.example/user/orgs?page=2>; rel="next""#;
        assert_eq!(next_page(Some(elsewhere), &base), None);
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
