//! Claim-path lookup and CEL policies on hostile claims. Input: a claim path,
//! a CEL expression and the claims JSON, on three parts separated by newlines.
//! Never a panic; a path finds something only if it parses, and finds what
//! walking its segments by hand finds; claims kept for a session fit their
//! bound and are the original's members; and policies fail closed: a rule
//! whose expression is not exactly `true` never admits, one whose expression is
//! not exactly `false` always refuses as a deny.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use portcullis::config::claim_path::parse_path;
use portcullis::config::expression::Expression;
use portcullis::config::{Effect, Policy, PolicyAction};
use portcullis::identity::claims::for_session;
use portcullis::policy::{Request, Rules, Subject};
use portcullis::source::claims::{lookup, map};
use serde_json::Value;

fn rule(effect: Effect, expression: Option<&Expression>) -> Policy {
    Policy {
        on: vec![PolicyAction::Access, PolicyAction::Authenticate],
        effect,
        email_domains: vec![],
        groups: vec![],
        users: vec![],
        expression: expression.cloned(),
        message: None,
        path_prefix: None,
    }
}

fn paths(path: &str, claims: &Value) {
    let found = lookup(claims, path);
    match parse_path(path) {
        Err(_) => assert!(
            found.is_none(),
            "a path that does not parse found something"
        ),
        Ok(segments) => {
            assert!(segments.iter().all(|s| !s.is_empty()));
            let mut cur = Some(claims);
            for seg in &segments {
                cur = cur.and_then(|v| match v {
                    Value::Object(m) => m.get(*seg),
                    Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                });
            }
            assert_eq!(found, cur);
        }
    }
    let table: BTreeMap<String, String> = [
        "identifier",
        "username",
        "email",
        "name",
        "groups",
        "email_verified",
    ]
    .iter()
    .map(|f| (f.to_string(), path.to_string()))
    .collect();
    if let Ok(m) = map(&table, claims, Some(claims)) {
        assert!(!m.identifier.is_empty() && m.identifier.len() <= 255);
        assert!(m.groups.iter().all(|g| !g.is_empty()));
    }
}

fn session_claims(claims: &Value) {
    for max in [2, 64, 16 * 1024] {
        let (text, dropped) = for_session(claims, max);
        assert!(
            text.len() <= max || text == "{}",
            "{} bytes kept for {max}",
            text.len()
        );
        let kept = portcullis::identity::claims::parse(Some(&text));
        let Value::Object(kept) = kept else {
            panic!("kept claims are not an object");
        };
        if let Value::Object(all) = claims {
            for (k, v) in &kept {
                assert_eq!(all.get(k), Some(v), "claim {k} changed");
                assert!(!dropped.contains(k));
            }
            assert_eq!(kept.len() + dropped.len(), all.len());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let (Some(path), Some(expression), Some(json)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let Ok(claims) = serde_json::from_str::<Value>(json) else {
        return;
    };
    paths(path, &claims);
    session_claims(&claims);

    let Ok(expression) = Expression::compile(expression) else {
        return;
    };
    let expression = &expression;
    let groups: Vec<String> = lookup(&claims, "groups")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let who = Subject {
        username: lookup(&claims, "sub")
            .and_then(Value::as_str)
            .unwrap_or("alice"),
        email: lookup(&claims, "email").and_then(Value::as_str),
        email_verified: true,
        name: lookup(&claims, "name").and_then(Value::as_str),
        groups: &groups,
        claims: &claims,
        source: "corp",
    };
    let request = Request {
        path: path,
        method: "GET",
        host: "wiki.example",
    };
    let allow = Rules::new(&[rule(Effect::Allow, Some(expression))]);
    let deny = Rules::new(&[
        rule(Effect::Deny, Some(expression)),
        rule(Effect::Allow, None),
    ]);
    for action in [PolicyAction::Access, PolicyAction::Authenticate] {
        let admitted = allow.check(action, &who, Some(request)).is_ok();
        let not_denied = deny.check(action, &who, Some(request)).is_ok();
        // `true` admits and is denied; `false` is refused and not denied; anything else is refused by both.
        assert!(
            !(admitted && not_denied),
            "{expression:?} both admits and does not deny"
        );
        assert_eq!(
            admitted,
            allow.check(action, &who, Some(request)).is_ok(),
            "not deterministic"
        );
    }
});
