//! Claim mapping: the source's `claims` table of dotted paths, read from the
//! profile JSON first and the ID token's claims second. Pure.

use std::collections::BTreeMap;

use serde_json::Value;

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

/// Why a claim path cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing between two dots, or at either end.
    #[error("empty segment; write a dotted path such as \"data.id\" (quote a name with dots: \"kubernetes.io\".namespace)")]
    EmptySegment,
    /// A quoted segment has no closing quote.
    #[error("a quoted segment has no closing quote")]
    Unclosed,
    /// A quote in the middle of a segment, or text right after a closing quote.
    #[error("a quote may only open and close a whole segment: \"a.b\".c")]
    StrayQuote,
}

/// Splits a claim path into its segments: dots separate them, and a segment
/// written in double quotes is taken whole, dots included
/// (`"kubernetes.io".namespace`). No escapes: a claim name with a quote in it
/// cannot be addressed (none is known).
pub fn parse_path(path: &str) -> Result<Vec<&str>, PathError> {
    let mut segments = Vec::new();
    let mut rest = path;
    loop {
        let (segment, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or(PathError::Unclosed)?;
            let (name, tail) = quoted.split_at(end);
            // `tail` starts with the closing quote.
            (name, tail.get(1..).unwrap_or_default())
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            let (name, tail) = rest.split_at(end);
            if name.contains('"') {
                return Err(PathError::StrayQuote);
            }
            (name, tail)
        };
        if segment.is_empty() {
            return Err(PathError::EmptySegment);
        }
        segments.push(segment);
        if after.is_empty() {
            return Ok(segments);
        }
        rest = after.strip_prefix('.').ok_or(PathError::StrayQuote)?;
    }
}

/// Reads a dotted path (`data.attributes.email`); array elements by index
/// (`emails.0`); a quoted segment may hold dots (`"kubernetes.io".namespace`).
/// A path that does not parse finds nothing (config validation refuses it).
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    parse_path(path)
        .ok()?
        .into_iter()
        .try_fold(v, |cur, seg| match cur {
            Value::Object(map) => map.get(seg),
            Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
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
    fn claim_paths_split_on_dots_and_keep_quoted_segments_whole() {
        let ok: &[(&str, &[&str])] = &[
            ("sub", &["sub"]),
            ("data.attributes.email", &["data", "attributes", "email"]),
            ("emails.0", &["emails", "0"]),
            (
                "\"kubernetes.io\".namespace",
                &["kubernetes.io", "namespace"],
            ),
            (
                "\"kubernetes.io\".serviceaccount.name",
                &["kubernetes.io", "serviceaccount", "name"],
            ),
            ("a.\"b.c\"", &["a", "b.c"]),
            ("\"a.b\"", &["a.b"]),
            ("\"plain\"", &["plain"]),
        ];
        for (path, want) in ok {
            assert_eq!(parse_path(path).as_deref(), Ok(*want), "{path}");
        }
        let bad: &[(&str, PathError)] = &[
            ("", PathError::EmptySegment),
            ("a..b", PathError::EmptySegment),
            (".a", PathError::EmptySegment),
            ("a.", PathError::EmptySegment),
            ("\"\".a", PathError::EmptySegment),
            ("\"kubernetes.io.namespace", PathError::Unclosed),
            ("\"a\"b", PathError::StrayQuote),
            ("a\"b\".c", PathError::StrayQuote),
        ];
        for (path, want) in bad {
            assert_eq!(parse_path(path).as_ref(), Err(want), "{path}");
        }
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
