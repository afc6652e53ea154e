//! `[[source.policy]]` and `[[app.policy]]`: rules compiled once.

use figment::value::Value;

use super::Check;
use crate::config::error::KeyPath;
use crate::config::expression::{Expression, ExpressionError};
use crate::config::load::table;
use crate::config::model::*;
use crate::config::raw::*;

pub(super) fn policies(
    c: &mut Check<'_>,
    at: &KeyPath,
    raw: &[Value],
    actions: &[(&str, PolicyAction)],
) -> Vec<Policy> {
    let mut out = Vec::new();
    for (i, v) in raw.iter().enumerate() {
        let at = at.key("policy").item(i, None);
        let Some(p) = table::<RawPolicy>(Some(v), &at, &mut c.problems) else {
            continue;
        };
        out.push(policy(c, &at, p, actions));
    }
    out
}

/// One rule: the actions it governs, its effect, its matchers, its CEL
/// expression compiled.
fn policy(
    c: &mut Check<'_>,
    at: &KeyPath,
    p: RawPolicy,
    actions: &[(&str, PolicyAction)],
) -> Policy {
    let on = governed_actions(
        c,
        at,
        p.on.map(StringOrList::into_vec).unwrap_or_default(),
        actions,
    );
    let effect = match p.effect.as_deref() {
        None => {
            c.fail(at.key("effect"), "missing: allow or deny");
            Effect::Deny
        }
        e => c.one_of(
            at.key("effect"),
            e,
            &[("allow", Effect::Allow), ("deny", Effect::Deny)],
            Effect::Deny,
        ),
    };
    // Compiled here, once: a typo stops the config, not a sign-in, and the
    // model carries the program every evaluation runs.
    let expression = p
        .expression
        .as_deref()
        .and_then(|expr| match Expression::compile(expr) {
            Ok(compiled) => Some(compiled),
            Err(ExpressionError(e)) => {
                let first = e.lines().next().unwrap_or_default().to_string();
                c.fail(
                    at.key("expression"),
                    format!("the CEL expression does not parse: {first}"),
                );
                None
            }
        });
    if let Some(pp) = p.path_prefix.as_deref() {
        if actions.iter().any(|(_, a)| *a == PolicyAction::Access) {
            canonical_prefix(c, at.key("path_prefix"), pp);
        } else {
            // A sign-in has no request path: the rule would never apply,
            // so an allow would not restrict and a deny would not refuse.
            c.fail(
                at.key("path_prefix"),
                "only access rules ([[app.policy]]) have a path_prefix: a sign-in has no request path",
            );
        }
    }
    Policy {
        on,
        effect,
        email_domains: p
            .email_domains
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        groups: p.groups.unwrap_or_default(),
        users: p.users.unwrap_or_default(),
        expression,
        message: p.message,
        path_prefix: p.path_prefix,
    }
}

/// `on`: at least one action, each one this kind of rule may govern.
fn governed_actions(
    c: &mut Check<'_>,
    at: &KeyPath,
    on_raw: Vec<String>,
    actions: &[(&str, PolicyAction)],
) -> Vec<PolicyAction> {
    if on_raw.is_empty() {
        let names: Vec<&str> = actions.iter().map(|(n, _)| *n).collect();
        c.fail(
            at.key("on"),
            format!(
                "missing: name the actions it governs, any of: {}",
                names.join(", ")
            ),
        );
    }
    let mut on = Vec::new();
    for (j, a) in on_raw.iter().enumerate() {
        let key = at.key("on").item(j, None);
        if actions.iter().any(|(n, _)| n == a) {
            on.push(c.one_of(key, Some(a), actions, PolicyAction::Access));
        } else {
            let names: Vec<&str> = actions.iter().map(|(n, _)| *n).collect();
            c.fail(
                key,
                format!(
                    "`{a}` is not an action here; use any of: {}",
                    names.join(", ")
                ),
            );
        }
    }
    on
}

/// Checks a rule's `path_prefix`: rules are matched against the canonical
/// decision path (`crate::config::path`), so a prefix in any other spelling would
/// silently never match; refuse it and name the spelling to write.
fn canonical_prefix(c: &mut Check<'_>, key: KeyPath, p: &str) {
    match crate::config::path::canonicalize(p) {
        Ok(canon) if canon.decision() == p => {}
        Ok(canon) => c.fail(
            key,
            format!(
                "`{p}` is not how requests are matched (their canonical path); write `{}`",
                canon.decision()
            ),
        ),
        Err(e) => c.fail(
            key,
            format!(
                "`{p}` is not a usable path prefix ({e}); write an absolute path such as /admin"
            ),
        ),
    }
}
