//! Who a request is from once authenticated, and the identity headers that
//! say so to the upstream. Pure.

use std::sync::{Arc, OnceLock};

use http::{HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::Value;

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
    /// Whether a source vouches for `email` (`email_verified` or `trust_email`).
    pub email_verified: bool,
    /// Display name.
    pub name: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// `X-Forwarded-Preferred-Username`.
    pub preferred_username: Option<String>,
    /// The source that authenticated this request.
    pub source: String,
    /// How: a person's session or a machine's bearer token.
    pub kind: PrincipalKind,
    /// A machine token's `iss` and `sub` joined by `#` (an issuer has no
    /// fragment, so the first `#` splits them): its `sub` in the identity assertion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_subject: Option<String>,
    /// The claims policies and `claim_headers` see: the session's sign-in
    /// claims or the token's; `{}` when none. Not part of `/_auth/userinfo`.
    #[serde(skip)]
    pub claims: Arc<Value>,
    /// The `X-Forwarded-*` identity headers, rendered on first use. A
    /// principal lives in the session or verdict cache, so they are written
    /// once per principal, not once per request.
    #[serde(skip)]
    pub rendered: Rendered,
}

/// A principal's upstream identity headers once rendered. Not part of who the
/// principal is: equal to any other, and a clone starts empty (a changed copy
/// must never carry the headers of the original).
#[derive(Default)]
pub struct Rendered(OnceLock<Vec<(HeaderName, HeaderValue)>>);

impl Clone for Rendered {
    fn clone(&self) -> Self {
        Rendered::default()
    }
}

impl PartialEq for Rendered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Rendered {}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Rendered"
        } else {
            "Unrendered"
        })
    }
}

/// How a request was authenticated; `/_auth/userinfo` and the identity
/// assertion say it as `session` or `bearer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A person, by the session cookie.
    Session,
    /// A machine, by an `Authorization: Bearer` JWT.
    Bearer,
}

impl PrincipalKind {
    /// The name `/_auth/userinfo` and the identity assertion use.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Session => "session",
            PrincipalKind::Bearer => "bearer",
        }
    }
}

/// An empty claim set.
pub fn no_claims() -> Arc<Value> {
    Arc::new(Value::Object(serde_json::Map::new()))
}

/// Whether `name` can be a username: it travels as `X-Forwarded-User`, so
/// visible ASCII only (no space, and no comma that a list would split on).
pub fn valid_username(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic() && b != b',')
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

    /// [`Principal::headers`] with the `X-Forwarded-` prefix as header
    /// fields, rendered the first time and kept with the principal.
    pub fn upstream_headers(&self) -> &[(HeaderName, HeaderValue)] {
        self.rendered.0.get_or_init(|| {
            self.headers(false)
                .into_iter()
                .filter_map(|(name, value)| {
                    Some((
                        HeaderName::from_bytes(name.as_bytes()).ok()?,
                        HeaderValue::from_str(&value).ok()?,
                    ))
                })
                .collect()
        })
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
            email_verified: true,
            name: None,
            groups: vec![
                "staff".into(),
                "bad\ngroup".into(),
                "a,b".into(),
                "ops".into(),
            ],
            preferred_username: Some("Ädä".into()),
            source: "corp".into(),
            kind: PrincipalKind::Session,
            token_subject: None,
            claims: no_claims(),
            rendered: Rendered::default(),
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
        let fields: Vec<(&str, &[u8])> = p
            .upstream_headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(
            fields,
            [
                ("x-forwarded-user", &b"ada"[..]),
                ("x-forwarded-groups", &b"staff,ops"[..])
            ]
        );
    }

    #[test]
    fn a_changed_copy_of_a_principal_never_sends_the_original_identity() {
        let p = Principal {
            user: "ada".into(),
            user_id: None,
            email: None,
            email_verified: false,
            name: None,
            groups: vec![],
            preferred_username: None,
            source: "corp".into(),
            kind: PrincipalKind::Session,
            token_subject: None,
            claims: no_claims(),
            rendered: Rendered::default(),
        };
        assert_eq!(p.upstream_headers()[0].1, "ada");
        let mut copy = p.clone();
        copy.user = "grace".into();
        assert_eq!(copy.upstream_headers()[0].1, "grace");
    }
}
