//! Slack: the vendor behaviour beyond URLs and mapping, pure
//! helpers the sign-in adapter calls; the preset itself (URLs, scopes,
//! quirk flags and why) is `config::presets::slack`.

use serde_json::Value;

/// The error of a Slack Web API answer: `Some(error)` when it says
/// `"ok": false` (whatever its HTTP status), `None` otherwise.
pub fn api_error(body: &Value) -> Option<String> {
    if body.get("ok").and_then(Value::as_bool) != Some(false) {
        return None;
    }
    Some(
        body.get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error code")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ok_false_is_an_error_and_anything_else_is_not() {
        assert_eq!(
            api_error(&json!({"ok": false, "error": "invalid_code"})).as_deref(),
            Some("invalid_code")
        );
        assert_eq!(
            api_error(&json!({"ok": false})).as_deref(),
            Some("no error code")
        );
        assert_eq!(api_error(&json!({"ok": true, "sub": "U1"})), None);
        assert_eq!(api_error(&json!({"sub": "U1"})), None);
    }
}
