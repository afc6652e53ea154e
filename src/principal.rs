//! Who a request is from once authenticated, and the identity headers that
//! say so to the upstream. Pure.

use serde::Serialize;

/// An authenticated person (session) or machine (bearer token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// `X-Forwarded-User`: the local username, or a machine token's `sub`.
    pub user: String,
    /// Local user id (people only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// `X-Forwarded-Preferred-Username`.
    pub preferred_username: Option<String>,
    /// The source that authenticated this request.
    pub source: String,
    /// How: `session` or `bearer`.
    pub kind: &'static str,
    /// A machine token's `iss` and `sub` joined by `#` (an issuer has no
    /// fragment, so the first `#` splits them): its `sub` in the identity assertion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_subject: Option<String>,
}

/// A header value that is safe to emit: visible ASCII and spaces only; anything
/// else (CR, LF, NUL, non-ASCII) makes the value be dropped (PRX-07).
pub fn header_safe(v: &str) -> Option<&str> {
    let v = v.trim();
    (!v.is_empty() && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic())).then_some(v)
}

impl Principal {
    /// The identity headers for the upstream, with `prefix` `X-Forwarded-` or
    /// `X-Auth-Request-` (forward auth). Unsafe values are left out.
    pub fn headers(&self, forward_auth: bool) -> Vec<(&'static str, String)> {
        let [user, email, groups, preferred] = if forward_auth {
            [
                "x-auth-request-user",
                "x-auth-request-email",
                "x-auth-request-groups",
                "x-auth-request-preferred-username",
            ]
        } else {
            [
                "x-forwarded-user",
                "x-forwarded-email",
                "x-forwarded-groups",
                "x-forwarded-preferred-username",
            ]
        };
        let mut out = Vec::with_capacity(4);
        let mut push = |name: &'static str, value: Option<&str>| {
            if let Some(v) = value.and_then(header_safe) {
                out.push((name, v.to_string()));
            }
        };
        push(user, Some(&self.user));
        push(email, self.email.as_deref());
        // A group containing a comma would split into two: leave it out.
        let safe: Vec<&str> = self
            .groups
            .iter()
            .filter_map(|g| header_safe(g))
            .filter(|g| !g.contains(','))
            .collect();
        push(
            groups,
            (!safe.is_empty()).then(|| safe.join(",")).as_deref(),
        );
        push(preferred, self.preferred_username.as_deref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prx07_unsafe_claim_values_are_never_emitted() {
        let p = Principal {
            user: "ada".into(),
            user_id: Some("u1".into()),
            email: Some("ada@example.com\r\nX-Forwarded-User: root".into()),
            name: None,
            groups: vec![
                "staff".into(),
                "bad\ngroup".into(),
                "a,b".into(),
                "ops".into(),
            ],
            preferred_username: Some("Ädä".into()),
            source: "corp".into(),
            kind: "session",
            token_subject: None,
        };
        let h = p.headers(false);
        assert_eq!(
            h,
            vec![
                ("x-forwarded-user", "ada".to_string()),
                ("x-forwarded-groups", "staff,ops".to_string())
            ]
        );
        assert_eq!(p.headers(true)[0].0, "x-auth-request-user");
    }
}
