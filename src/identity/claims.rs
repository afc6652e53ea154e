//! The claims a session record keeps: the sign-in's claims (ID token overlaid
//! with the profile) as JSON text of at most 16 KiB. Pure.

use serde_json::{Map, Value};

/// Most bytes of claims a session record keeps (DESIGN "Sessions").
pub const MAX_SESSION_CLAIMS: usize = 16 * 1024;

/// The claims to store, as JSON text, and the names of the top-level claims
/// left out to stay within `max` bytes. Claims are kept smallest first, so a
/// few large ones (an embedded picture, a long group list) make room for the
/// many small ones policies usually test; a non-object keeps nothing.
pub fn for_session(claims: &Value, max: usize) -> (String, Vec<String>) {
    let Value::Object(all) = claims else {
        return ("{}".into(), Vec::new());
    };
    let whole = Value::Object(all.clone()).to_string();
    if whole.len() <= max {
        return (whole, Vec::new());
    }
    // Each member costs its `"name":value` text plus a comma.
    let mut sized: Vec<(usize, &String, &Value)> = all
        .iter()
        .map(|(k, v)| {
            (
                Value::String(k.clone()).to_string().len() + v.to_string().len() + 2,
                k,
                v,
            )
        })
        .collect();
    sized.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    let mut kept = Map::new();
    let mut used = 2; // the braces
    let mut dropped = Vec::new();
    for (cost, name, value) in sized {
        if used + cost <= max {
            used += cost;
            kept.insert(name.clone(), value.clone());
        } else {
            dropped.push(name.clone());
        }
    }
    dropped.sort();
    (Value::Object(kept).to_string(), dropped)
}

/// The claims of a stored session: `{}` for none or unreadable text.
pub fn parse(stored: Option<&str>) -> Value {
    stored
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Map::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn small_claims_are_kept_whole() {
        let c = json!({"sub": "1", "org": {"team": "platform"}});
        let (text, dropped) = for_session(&c, MAX_SESSION_CLAIMS);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), c);
        assert!(dropped.is_empty());
    }

    #[test]
    fn oversized_claims_lose_their_largest_members_and_fit() {
        let c = json!({
            "sub": "1",
            "team": "platform",
            "picture": "x".repeat(20_000),
            "groups": (0..2000).map(|i| format!("group-{i}")).collect::<Vec<_>>(),
        });
        let (text, dropped) = for_session(&c, MAX_SESSION_CLAIMS);
        assert!(text.len() <= MAX_SESSION_CLAIMS, "{}", text.len());
        assert_eq!(dropped, vec!["groups".to_string(), "picture".into()]);
        assert_eq!(parse(Some(&text)), json!({"sub": "1", "team": "platform"}));
    }

    #[test]
    fn the_limit_is_exact() {
        let c = json!({"a": "b"});
        let whole = c.to_string();
        assert_eq!(for_session(&c, whole.len()).1, Vec::<String>::new());
        assert_eq!(
            for_session(&c, whole.len() - 1),
            ("{}".into(), vec!["a".into()])
        );
    }

    #[test]
    fn a_long_decimal_claim_reads_back_as_the_number_stored() {
        // Found by fuzzing (fuzz/fuzz_targets/claims_policy.rs): without
        // serde_json's exact float parsing, the stored text of a claim such as
        // 9223372036.54737903 read back one unit in the last place off, so a
        // policy saw another number than at sign-in.
        for text in [
            r#"{"x":9223372036.54737903}"#,
            r#"{"x":922337223372036.54775801}"#,
            r#"{"x":922.037623354775001}"#,
        ] {
            let claims: Value = serde_json::from_str(text).unwrap();
            let (stored, dropped) = for_session(&claims, MAX_SESSION_CLAIMS);
            assert!(dropped.is_empty());
            assert_eq!(parse(Some(&stored)), claims, "{text} stored as {stored}");
        }
    }

    #[test]
    fn missing_or_broken_stored_claims_read_as_empty() {
        assert_eq!(parse(None), json!({}));
        assert_eq!(parse(Some("not json")), json!({}));
        assert_eq!(parse(Some("[1]")), json!({}));
        assert_eq!(parse(Some(r#"{"a":1}"#)), json!({"a": 1}));
    }
}
