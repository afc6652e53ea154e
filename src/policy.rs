//! Policies: allow/deny rules per source (authenticate, enroll, link) and per
//! app (access). Pure: facts in, verdict out. Deny wins; where any allow rule
//! applies to an action, one of those with the longest path prefix must match.

use serde_json::{json, Value};

use crate::config::{path_has_prefix, Effect, Policy, PolicyAction};

/// Who a rule is evaluated for.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// Local username (or a machine token's `sub`).
    pub username: &'a str,
    /// Email address.
    pub email: Option<&'a str>,
    /// Whether a source vouches for `email` (`email_verified` or `trust_email`):
    /// only then do `email_domains` and email entries of `users` match it.
    pub email_verified: bool,
    /// Display name.
    pub name: Option<&'a str>,
    /// Groups.
    pub groups: &'a [String],
    /// The source's claims (profile and ID token), `{}` when none.
    pub claims: &'a Value,
    /// The source slug.
    pub source: &'a str,
}

/// The request an access rule is evaluated for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The decision path (see [`crate::config::path`]): canonical, without query or `;params`.
    pub path: &'a str,
    /// Method.
    pub method: &'a str,
    /// Host, lower-case, without port.
    pub host: &'a str,
}

/// One rule; its expression was compiled once, by config validation.
pub struct Rule {
    /// The rule as configured.
    pub policy: Policy,
}

/// The rules of one source or app.
#[derive(Default)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// The rules of these policies (validated: their expressions are compiled).
    pub fn new(policies: &[Policy]) -> Rules {
        Rules(
            policies
                .iter()
                .map(|p| Rule { policy: p.clone() })
                .collect(),
        )
    }

    /// Whether the rules allow `action`; `Err` carries the message to show.
    pub fn check(
        &self,
        action: PolicyAction,
        who: &Subject<'_>,
        request: Option<Request<'_>>,
    ) -> Result<(), String> {
        let applies = |r: &&Rule| {
            r.policy.on.contains(&action)
                && match (&r.policy.path_prefix, request) {
                    (Some(prefix), Some(req)) => path_has_prefix(req.path, prefix),
                    (Some(_), None) => false,
                    (None, _) => true,
                }
        };
        let refusal = |r: &Rule| {
            r.policy
                .message
                .clone()
                .unwrap_or_else(|| format!("A policy does not allow you to {}.", verb(action)))
        };
        // Iterated, never collected: this runs on every protected request.
        let rules = || self.0.iter().filter(applies);
        for r in rules().filter(|r| r.policy.effect == Effect::Deny) {
            // An expression that cannot be evaluated counts as a match: fail closed.
            if r.matches(who, request).unwrap_or(true) {
                return Err(refusal(r));
            }
        }
        // Among the applicable allows only the most specific path decides, so
        // "allow everyone" beside "allow admins on /admin" restricts /admin.
        let reach = |r: &Rule| r.policy.path_prefix.as_deref().unwrap_or("/").len();
        let allows = || rules().filter(|r| r.policy.effect == Effect::Allow);
        let longest = allows().map(reach).max().unwrap_or(0);
        let mut deciding = allows().filter(|r| reach(r) == longest);
        match deciding.next() {
            // Access is never open by default: a path no allow rule covers
            // (only "allow admins on /admin", or only denies) admits nobody.
            // Sign-in actions stay open unless a rule says otherwise.
            None if action == PolicyAction::Access => Err(format!(
                "No access rule admits anyone to this path, so you may not {}.",
                verb(action)
            )),
            None => Ok(()),
            Some(first)
                if !std::iter::once(first)
                    .chain(deciding)
                    .any(|r| r.matches(who, request).unwrap_or(false)) =>
            {
                Err(refusal(first))
            }
            Some(_) => Ok(()),
        }
    }
}

fn verb(action: PolicyAction) -> &'static str {
    match action {
        PolicyAction::Authenticate => "sign in through this provider",
        PolicyAction::Enroll => "create an account through this provider",
        PolicyAction::Link => "link this account",
        PolicyAction::Access => "open this application",
    }
}

impl Rule {
    /// Whether every matcher the rule has matches (a rule without matchers
    /// matches everyone); `None` when the expression could not be evaluated.
    fn matches(&self, who: &Subject<'_>, request: Option<Request<'_>>) -> Option<bool> {
        let p = &self.policy;
        // An email nobody vouches for proves nothing about who holds it.
        let vouched = who.email.filter(|_| who.email_verified);
        if !p.email_domains.is_empty() {
            let domain = vouched
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase());
            if !domain.is_some_and(|d| p.email_domains.contains(&d)) {
                return Some(false);
            }
        }
        if !p.groups.is_empty() && !who.groups.iter().any(|g| p.groups.contains(g)) {
            return Some(false);
        }
        // An entry with `@` names an email (vouched only), never a username.
        let named = |u: &String| match u.contains('@') {
            true => vouched.is_some_and(|e| e.eq_ignore_ascii_case(u)),
            false => u == who.username,
        };
        if !p.users.is_empty() && !p.users.iter().any(named) {
            return Some(false);
        }
        match &p.expression {
            None => Some(true),
            Some(expression) => evaluate(expression.program(), who, request),
        }
    }
}

/// Runs an expression over `{user, claims, source, request}`; `None` unless it yields a boolean.
fn evaluate(
    program: &cel::Program,
    who: &Subject<'_>,
    request: Option<Request<'_>>,
) -> Option<bool> {
    let mut ctx = cel::Context::default();
    let user = json!({"username": who.username, "email": who.email, "email_verified": who.email_verified, "name": who.name, "groups": who.groups});
    let req = request.map_or(
        json!({}),
        |r| json!({"path": r.path, "method": r.method, "host": r.host}),
    );
    ctx.add_variable("user", cel::to_value(&user).ok()?).ok()?;
    ctx.add_variable("claims", cel::to_value(who.claims).ok()?)
        .ok()?;
    ctx.add_variable("source", who.source.to_string()).ok()?;
    ctx.add_variable("request", cel::to_value(&req).ok()?)
        .ok()?;
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::expression::Expression;

    fn rule(on: PolicyAction, effect: Effect) -> Policy {
        Policy {
            on: vec![on],
            effect,
            email_domains: vec![],
            groups: vec![],
            users: vec![],
            expression: None,
            message: None,
            path_prefix: None,
        }
    }

    fn subject<'a>(groups: &'a [String], claims: &'a Value, email: &'a str) -> Subject<'a> {
        Subject {
            username: "ada",
            email: Some(email),
            email_verified: true,
            name: None,
            groups,
            claims,
            source: "corp",
        }
    }

    #[test]
    fn deny_wins_allow_must_match_and_no_rule_allows() {
        let staff = vec!["staff".to_string()];
        let none: Vec<String> = vec![];
        let claims = json!({"hd": "example.com", "amr": ["mfa"]});
        let s_staff = subject(&staff, &claims, "ada@example.com");
        let s_guest = subject(&none, &claims, "ada@contractor.example");

        assert!(Rules::default()
            .check(PolicyAction::Link, &s_guest, None)
            .is_ok());

        let deny_contractors = Policy {
            email_domains: vec!["contractor.example".into()],
            message: Some("Contractor accounts cannot be linked".into()),
            ..rule(PolicyAction::Link, Effect::Deny)
        };
        let rules = Rules::new(&[deny_contractors]);
        assert_eq!(
            rules.check(PolicyAction::Link, &s_guest, None),
            Err("Contractor accounts cannot be linked".into())
        );
        assert!(rules.check(PolicyAction::Link, &s_staff, None).is_ok());
        assert!(
            rules.check(PolicyAction::Enroll, &s_guest, None).is_ok(),
            "rule is only for link"
        );

        let allow_staff = Policy {
            groups: vec!["staff".into()],
            ..rule(PolicyAction::Access, Effect::Allow)
        };
        let deny_ada = Policy {
            users: vec!["ada".into()],
            ..rule(PolicyAction::Access, Effect::Deny)
        };
        let rules = Rules::new(std::slice::from_ref(&allow_staff));
        assert!(rules.check(PolicyAction::Access, &s_staff, None).is_ok());
        assert!(rules.check(PolicyAction::Access, &s_guest, None).is_err());
        let rules = Rules::new(&[allow_staff, deny_ada]);
        assert!(
            rules.check(PolicyAction::Access, &s_staff, None).is_err(),
            "deny wins over allow"
        );
    }

    #[test]
    fn email_domains_and_email_entries_match_only_a_vouched_email() {
        let none: Vec<String> = vec![];
        let claims = json!({});
        let vouched = subject(&none, &claims, "Ada@Example.com");
        let unvouched = Subject {
            email_verified: false,
            ..vouched.clone()
        };
        let by_domain = Policy {
            email_domains: vec!["example.com".into()],
            ..rule(PolicyAction::Access, Effect::Allow)
        };
        let by_email = Policy {
            users: vec!["ada@example.com".into()],
            ..rule(PolicyAction::Access, Effect::Allow)
        };
        for p in [by_domain, by_email] {
            let rules = Rules::new(std::slice::from_ref(&p));
            assert!(
                rules.check(PolicyAction::Access, &vouched, None).is_ok(),
                "{p:?}"
            );
            assert!(
                rules.check(PolicyAction::Access, &unvouched, None).is_err(),
                "{p:?}"
            );
        }
        // A username that looks like the email does not satisfy an email entry.
        let lookalike = Subject {
            username: "ada@example.com",
            ..unvouched.clone()
        };
        let by_email = Policy {
            users: vec!["ada@example.com".into()],
            ..rule(PolicyAction::Access, Effect::Allow)
        };
        assert!(Rules::new(&[by_email])
            .check(PolicyAction::Access, &lookalike, None)
            .is_err());
        // A deny on a domain does not fire for an unvouched address either:
        // nothing says the person holds it.
        let deny = Policy {
            email_domains: vec!["example.com".into()],
            ..rule(PolicyAction::Access, Effect::Deny)
        };
        let everyone = rule(PolicyAction::Access, Effect::Allow);
        let rules = Rules::new(&[deny, everyone]);
        assert!(rules.check(PolicyAction::Access, &unvouched, None).is_ok());
        assert!(rules.check(PolicyAction::Access, &vouched, None).is_err());
    }

    #[test]
    fn expressions_see_user_claims_source_and_request() {
        let staff = vec!["staff".to_string()];
        let claims = json!({"hd": "example.com", "amr": ["mfa"]});
        let s = subject(&staff, &claims, "ada@example.com");
        let allow = |expr: &str| Policy {
            expression: Some(Expression::compile(expr).unwrap()),
            ..rule(PolicyAction::Access, Effect::Allow)
        };
        let req = Request {
            path: "/admin/x",
            method: "GET",
            host: "wiki.example",
        };
        for (expr, want) in [
            ("claims.hd == 'example.com'", true),
            ("'mfa' in claims.amr", true),
            ("'admins' in user.groups", false),
            (
                "source == 'corp' && request.path.startsWith('/admin')",
                true,
            ),
            ("request.method == 'POST'", false),
            ("claims.missing == 1", false), // an evaluation error never allows
            ("1 + 1", false),               // not a boolean never allows
        ] {
            let rules = Rules::new(&[allow(expr)]);
            assert_eq!(
                rules.check(PolicyAction::Access, &s, Some(req)).is_ok(),
                want,
                "{expr}"
            );
        }
        // A deny rule whose expression fails to evaluate denies (fail closed).
        let deny = Policy {
            expression: Some(Expression::compile("claims.missing == 1").unwrap()),
            ..rule(PolicyAction::Access, Effect::Deny)
        };
        assert!(Rules::new(&[deny])
            .check(PolicyAction::Access, &s, Some(req))
            .is_err());
    }

    #[test]
    fn path_scoped_app_rules_apply_only_under_their_prefix() {
        let none: Vec<String> = vec![];
        let claims = json!({});
        let s = subject(&none, &claims, "ada@example.com");
        let admins_only = Policy {
            groups: vec!["admins".into()],
            path_prefix: Some("/admin".into()),
            ..rule(PolicyAction::Access, Effect::Allow)
        };
        let rules = Rules::new(&[admins_only]);
        let at = |path| {
            Some(Request {
                path,
                method: "GET",
                host: "h",
            })
        };
        assert!(rules
            .check(PolicyAction::Access, &s, at("/admin/users"))
            .is_err());
        // Outside the prefix no rule admits anyone: access is never open by default.
        assert!(rules.check(PolicyAction::Access, &s, at("/wiki")).is_err());
        assert!(rules
            .check(PolicyAction::Access, &s, at("/administrator"))
            .is_err());
        // With "allow everyone" beside it, only /admin is restricted.
        let open = Rules::new(&[
            rule(PolicyAction::Access, Effect::Allow),
            Policy {
                groups: vec!["admins".into()],
                path_prefix: Some("/admin".into()),
                ..rule(PolicyAction::Access, Effect::Allow)
            },
        ]);
        assert!(open.check(PolicyAction::Access, &s, at("/wiki")).is_ok());
        assert!(open
            .check(PolicyAction::Access, &s, at("/administrator"))
            .is_ok());
        assert!(open
            .check(PolicyAction::Access, &s, at("/admin/users"))
            .is_err());
    }

    /// DESIGN "Access rules and paths", as a table: which rules, which path,
    /// who gets in.
    #[test]
    fn any_applicable_deny_wins_and_only_the_longest_allow_prefix_decides() {
        let admins = vec!["admins".to_string()];
        let staff = vec!["staff".to_string()];
        let claims = json!({});
        let admin = subject(&admins, &claims, "ada@example.com");
        let member = subject(&staff, &claims, "bob@example.com");
        let on = |effect, groups: &[&str], prefix: Option<&str>| Policy {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            path_prefix: prefix.map(str::to_string),
            ..rule(PolicyAction::Access, effect)
        };
        use Effect::{Allow, Deny};
        // (rules, path, admin gets in, staff member gets in)
        let table: Vec<(Vec<Policy>, &str, bool, bool)> = vec![
            // No prefix covers `/`: it ties with a `/` rule, and either may match.
            (
                vec![on(Allow, &[], None), on(Allow, &["admins"], Some("/"))],
                "/x",
                true,
                true,
            ),
            // The longer prefix decides below it, the shorter one elsewhere.
            (
                vec![on(Allow, &[], None), on(Allow, &["admins"], Some("/admin"))],
                "/admin/x",
                true,
                false,
            ),
            (
                vec![on(Allow, &[], None), on(Allow, &["admins"], Some("/admin"))],
                "/adminx",
                true,
                true,
            ),
            (
                vec![
                    on(Allow, &["staff"], None),
                    on(Allow, &["admins"], Some("/admin")),
                ],
                "/wiki",
                false,
                true,
            ),
            // Several allows on the same longest prefix: one of them must match.
            (
                vec![
                    on(Allow, &[], None),
                    on(Allow, &["admins"], Some("/ops")),
                    on(Allow, &["staff"], Some("/ops")),
                ],
                "/ops/deploy",
                true,
                true,
            ),
            // `/admin/` is longer than `/admin`, so it decides for what is below it.
            (
                vec![
                    on(Allow, &["staff"], Some("/admin")),
                    on(Allow, &["admins"], Some("/admin/")),
                ],
                "/admin/x",
                true,
                false,
            ),
            (
                vec![
                    on(Allow, &["staff"], Some("/admin")),
                    on(Allow, &["admins"], Some("/admin/")),
                ],
                "/admin",
                false,
                true,
            ),
            // A deny wins whatever its prefix, even against a longer allow ...
            (
                vec![on(Deny, &["staff"], None), on(Allow, &[], Some("/wiki"))],
                "/wiki/x",
                true,
                false,
            ),
            // ... but only where it applies.
            (
                vec![on(Allow, &[], None), on(Deny, &["staff"], Some("/admin"))],
                "/wiki",
                true,
                true,
            ),
            (
                vec![on(Allow, &[], None), on(Deny, &["staff"], Some("/admin"))],
                "/admin",
                true,
                false,
            ),
            // Where no allow applies, nobody passes: access is never open by default.
            (
                vec![on(Allow, &["admins"], Some("/admin"))],
                "/wiki",
                false,
                false,
            ),
            // Denies alone admit nobody either.
            (vec![on(Deny, &["staff"], None)], "/wiki", false, false),
        ];
        for (i, (policies, path, admin_ok, member_ok)) in table.into_iter().enumerate() {
            let rules = Rules::new(&policies);
            let req = Some(Request {
                path,
                method: "GET",
                host: "h",
            });
            let ok = |who| rules.check(PolicyAction::Access, who, req).is_ok();
            assert_eq!(ok(&admin), admin_ok, "row {i}: admin on {path}");
            assert_eq!(ok(&member), member_ok, "row {i}: staff member on {path}");
        }
    }

    #[test]
    fn the_longest_allowed_prefix_decides_so_allow_everyone_does_not_open_admin() {
        let admins = vec!["admins".to_string()];
        let none: Vec<String> = vec![];
        let claims = json!({});
        let admin = subject(&admins, &claims, "ada@example.com");
        let guest = subject(&none, &claims, "bob@example.com");
        let everyone = rule(PolicyAction::Access, Effect::Allow);
        let admins_on_admin = Policy {
            groups: vec!["admins".into()],
            path_prefix: Some("/admin".into()),
            ..rule(PolicyAction::Access, Effect::Allow)
        };
        let rules = Rules::new(&[everyone, admins_on_admin]);
        let at = |path| {
            Some(Request {
                path,
                method: "GET",
                host: "h",
            })
        };
        for (path, admin_ok, guest_ok) in [
            ("/admin", true, false),
            ("/admin/users", true, false),
            ("/administrator", true, true),
            ("/wiki", true, true),
            ("/", true, true),
        ] {
            let check = |who| rules.check(PolicyAction::Access, who, at(path)).is_ok();
            assert_eq!(check(&admin), admin_ok, "admin on {path}");
            assert_eq!(check(&guest), guest_ok, "guest on {path}");
        }
    }
}
