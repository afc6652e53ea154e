//! Microsoft Entra ID: the vendor behaviour beyond URLs and mapping, pure
//! helpers the sign-in adapter calls; the preset itself (URLs, scopes,
//! quirk flags and why) is `config::presets::entraid`.

use serde_json::Value;
use url::Url;

/// `/me/memberOf` next to the profile URL (query dropped), so a national
/// cloud's Graph host set in `profile_url` is used for groups too. Only
/// `displayName` is selected: it is all the mapping uses.
pub fn member_of_url(profile_url: &Url) -> Url {
    let mut url = profile_url.clone();
    url.set_fragment(None);
    let path = format!("{}/memberOf", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(Some("$select=displayName"));
    url
}

/// The names of the groups in one `memberOf` page. Directory roles and
/// administrative units are listed there too and are skipped; so are groups
/// whose name the app may not read (Graph then sends only `id`, `@odata.type`
/// and nulls).
pub fn group_names(page: &Value) -> Vec<String> {
    page.get("value")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter(|i| {
                    i.get("@odata.type").and_then(Value::as_str) == Some("#microsoft.graph.group")
                })
                .filter_map(|i| i.get("displayName").and_then(Value::as_str))
                .filter(|n| !n.trim().is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The next page of a Graph collection (`@odata.nextLink`), if any. The
/// caller must check it points at the same Graph host before following it.
pub fn next_link(page: &Value) -> Option<&str> {
    page.get("@odata.nextLink").and_then(Value::as_str)
}

/// `mail`, else the first non-empty of `otherMails`.
pub fn fallback_email(profile: &Value) -> Option<String> {
    let usable = |v: &Value| {
        v.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    profile.get("mail").and_then(usable).or_else(|| {
        profile
            .get("otherMails")
            .and_then(Value::as_array)
            .and_then(|all| all.iter().find_map(usable))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn member_of_sits_next_to_me_on_any_graph_host() {
        let me = Url::parse(
            "https://graph.microsoft.us/v1.0/me?$select=id,displayName,userPrincipalName,mail,otherMails",
        )
        .unwrap();
        assert_eq!(
            member_of_url(&me).as_str(),
            "https://graph.microsoft.us/v1.0/me/memberOf?$select=displayName"
        );
    }

    #[test]
    fn only_readable_groups_are_named() {
        let page = json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects",
            "@odata.nextLink": "https://graph.microsoft.com/v1.0/me/memberOf?$skiptoken=x",
            "value": [
                {"@odata.type": "#microsoft.graph.group", "id": "1", "displayName": "Engineering"},
                {"@odata.type": "#microsoft.graph.directoryRole", "id": "2", "displayName": "Global Reader"},
                {"@odata.type": "#microsoft.graph.group", "id": "3", "displayName": null},
                {"@odata.type": "#microsoft.graph.group", "id": "4", "displayName": "Staff"}
            ]
        });
        assert_eq!(group_names(&page), vec!["Engineering", "Staff"]);
        assert!(next_link(&page).unwrap().contains("skiptoken"));
        assert!(group_names(&json!({"error": {}})).is_empty());
    }

    #[test]
    fn email_falls_back_to_the_first_other_mail() {
        assert_eq!(
            fallback_email(&json!({"mail": "a@corp.example", "otherMails": ["b@x"]})).as_deref(),
            Some("a@corp.example")
        );
        assert_eq!(
            fallback_email(&json!({"mail": null, "otherMails": ["", "b@x", "c@x"]})).as_deref(),
            Some("b@x")
        );
        assert_eq!(
            fallback_email(&json!({"mail": null, "otherMails": []})),
            None
        );
    }
}
