//! Claim mapping: the source's `claims` table of dotted paths, read from the
//! profile JSON first and the ID token's claims second. Pure.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::claim_path::parse_path;

/// The person as the source describes them, before any matching.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapped {
    /// The stable identifier at the source (never empty).
    pub identifier: String,
    /// Preferred username.
    pub username: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Whether the source says the email is verified.
    pub email_verified: bool,
    /// Display name.
    pub name: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
}

/// Why a profile could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The identifier claim is missing, empty or too long: fix `claims.identifier` or the provider.
    #[error("the profile has no usable identifier at `{0}`")]
    NoIdentifier(String),
}

/// Reads a dotted path (`data.attributes.email`); array elements by index
/// (`emails.0`); a quoted segment may hold dots (`"kubernetes.io".namespace`).
/// A path that does not parse finds nothing (config validation refuses it).
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    // One plain segment (`groups`, `email`: most paths) is what `parse_path`
    // would return whole; read it without building the list.
    if !path.is_empty() && !path.contains(['.', '"']) {
        return step(v, path);
    }
    parse_path(path).ok()?.into_iter().try_fold(v, step)
}

/// One segment down: an object's member, an array's element by index.
fn step<'a>(cur: &'a Value, seg: &str) -> Option<&'a Value> {
    match cur {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    }
}

/// A scalar as text: strings as they are, numbers and booleans printed.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Maps a profile using `claims`, falling back to `id_token` claims per field.
pub fn map(
    claims: &BTreeMap<String, String>,
    profile: &Value,
    id_token: Option<&Value>,
) -> Result<Mapped, MapError> {
    let get = |field: &str| -> Option<&Value> {
        let path = claims.get(field)?;
        lookup(profile, path).filter(|v| !v.is_null()).or_else(|| {
            id_token
                .and_then(|t| lookup(t, path))
                .filter(|v| !v.is_null())
        })
    };
    let id_path = claims
        .get("identifier")
        .cloned()
        .unwrap_or_else(|| "sub".into());
    let identifier = get("identifier")
        .and_then(text)
        .filter(|s| s.len() <= 255)
        .ok_or(MapError::NoIdentifier(id_path))?;
    let email_verified = match get("email_verified") {
        Some(Value::Bool(b)) => *b,
        // Some providers send "true" as a string.
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    let groups = match get("groups") {
        Some(Value::Array(items)) => items.iter().filter_map(text).collect(),
        Some(v) => text(v)
            .map(|s| {
                s.split(',')
                    .map(|g| g.trim().to_string())
                    .filter(|g| !g.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(Mapped {
        identifier,
        username: get("username").and_then(text),
        email: get("email").and_then(text).map(|e| e.to_ascii_lowercase()),
        email_verified,
        name: get("name").and_then(text),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dotted_paths_numbers_and_fallback_to_the_id_token() {
        let claims = table(&[
            ("identifier", "data.id"),
            ("username", "data.attributes.vanity"),
            ("email", "email"),
            ("name", "name"),
            ("groups", "roles"),
        ]);
        let profile =
            json!({"data": {"id": 12345, "attributes": {"vanity": "ada"}}, "roles": ["a", "b"]});
        let token = json!({"email": "Ada@Example.com", "name": "Ada"});
        let m = map(&claims, &profile, Some(&token)).unwrap();
        assert_eq!(m.identifier, "12345");
        assert_eq!(m.username.as_deref(), Some("ada"));
        assert_eq!(m.email.as_deref(), Some("ada@example.com"));
        assert_eq!(m.name.as_deref(), Some("Ada"));
        assert_eq!(m.groups, vec!["a", "b"]);
        assert!(!m.email_verified);
    }

    #[test]
    fn oidc04_a_missing_or_overlong_identifier_is_refused() {
        let claims = table(&[("identifier", "sub")]);
        assert!(map(&claims, &json!({}), None).is_err());
        assert!(map(&claims, &json!({"sub": ""}), None).is_err());
        assert!(map(&claims, &json!({"sub": "x".repeat(256)}), None).is_err());
        assert!(map(&claims, &json!({"sub": {"nested": 1}}), None).is_err());
    }

    #[test]
    fn array_index_and_string_groups() {
        let claims = table(&[
            ("identifier", "sub"),
            ("email", "emails.0"),
            ("groups", "g"),
        ]);
        let m = map(
            &claims,
            &json!({"sub": "s", "emails": ["x@y"], "g": "a, b"}),
            None,
        )
        .unwrap();
        assert_eq!(m.email.as_deref(), Some("x@y"));
        assert_eq!(m.groups, vec!["a", "b"]);
    }

    #[test]
    fn a_one_segment_path_reads_what_the_parsed_path_reads() {
        let object = json!({"groups": ["a"], "0": "zero", "": "empty"});
        let array = json!(["first", "second"]);
        for path in [
            "groups",
            "0",
            "1",
            "+1",
            " ",
            "é",
            "missing",
            "",
            "\"groups\"",
            "groups.0",
        ] {
            for v in [&object, &array, &json!("text")] {
                let parsed = parse_path(path)
                    .ok()
                    .and_then(|segs| segs.into_iter().try_fold(v, step));
                assert_eq!(lookup(v, path), parsed, "{path} in {v}");
            }
        }
        assert_eq!(lookup(&object, "groups"), Some(&json!(["a"])));
        assert_eq!(lookup(&array, "1"), Some(&json!("second")));
        assert_eq!(lookup(&object, ""), None);
    }

    #[test]
    fn a_quoted_claim_name_with_dots_is_read_from_a_kubernetes_token() {
        let token = json!({
            "sub": "system:serviceaccount:ci:deployer",
            "kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "deployer"}},
            "kubernetes": {"io": {"namespace": "wrong"}}
        });
        assert_eq!(
            lookup(&token, "\"kubernetes.io\".namespace"),
            Some(&json!("ci"))
        );
        assert_eq!(
            lookup(&token, "\"kubernetes.io\".serviceaccount.name"),
            Some(&json!("deployer"))
        );
        // Unquoted, the dots still separate segments.
        assert_eq!(
            lookup(&token, "kubernetes.io.namespace"),
            Some(&json!("wrong"))
        );
        assert_eq!(lookup(&token, "\"kubernetes.io.namespace"), None);
    }
}
