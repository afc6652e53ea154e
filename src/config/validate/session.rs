//! `[session]`: the secrets that sign cookies, the cookie, lifetimes.

use std::time::Duration;

use base64::Engine as _;

use super::Check;
use crate::config::error::KeyPath;
use crate::config::model::*;
use crate::config::raw::*;

/// The shortest session secret accepted, in decoded bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Decodes a session secret written in standard or URL-safe base64, padded or not.
pub fn decode_secret(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let s = s.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

pub(super) fn session(c: &mut Check<'_>, mut raw: RawSession) -> Option<Session> {
    let at = KeyPath::root("session");
    let secrets = secrets(c, &at, &mut raw);
    let cookie_name = raw.cookie_name.unwrap_or_else(|| "portcullis".to_string());
    if cookie_name.is_empty()
        || !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        c.fail(
            at.key("cookie_name"),
            format!(
                "`{cookie_name}` is not a valid cookie name; use letters, digits, `-`, `_`, `.`"
            ),
        );
    }
    let lifetime = c.duration(
        at.key("lifetime"),
        raw.lifetime.as_deref(),
        Duration::from_secs(12 * 3600),
    );
    let idle_timeout = c.opt_duration(at.key("idle_timeout"), raw.idle_timeout.as_deref());
    if let Some(idle) = idle_timeout.filter(|idle| *idle >= lifetime) {
        // An error, not a warning: a setting that can never act is a mistake
        // the operator should hear about before relying on it.
        c.fail(
            at.key("idle_timeout"),
            format!(
                "{} is not shorter than session.lifetime ({}), so it would never end a session; make it shorter or remove it",
                humantime::format_duration(idle),
                humantime::format_duration(lifetime)
            ),
        );
    }
    let identity_cache_ttl = c.duration(
        at.key("identity_cache_ttl"),
        raw.identity_cache_ttl.as_deref(),
        Duration::from_secs(30),
    );
    let cookie_domain = raw.cookie_domain.and_then(|d| cookie_domain(c, &at, &d));
    Some(Session {
        secrets,
        cookie_name,
        lifetime,
        idle_timeout,
        cookie_domain,
        identity_cache_ttl,
    })
}

/// The session secrets, given in one place (`secrets`, `secret` or
/// `secrets_file`): base64, long enough, none from the examples.
fn secrets(c: &mut Check<'_>, at: &KeyPath, raw: &mut RawSession) -> Vec<Secret<Vec<u8>>> {
    // One place gives the secrets (an environment variable already replaced
    // the file's, see load.rs): two could leave a forgotten secret valid.
    let given: Vec<&str> = [
        ("secrets", raw.secrets.is_some()),
        ("secret", raw.secret.is_some()),
        ("secrets_file", raw.secrets_file.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if let [first, rest @ ..] = given.as_slice() {
        for key in rest {
            c.fail(
                at.key(key),
                format!(
                    "set beside session.{first}: give the session secrets in one place only \
                     (secrets = [\"<new>\", \"<old>\"] for rotation, secret for one, or secrets_file); \
                     remove one of them"
                ),
            );
        }
    }
    let mut written: Vec<(KeyPath, String)> = Vec::new();
    if let Some(s) = raw.secret.take() {
        written.push((at.key("secret"), s));
    }
    if let Some(list) = raw.secrets.take() {
        for (i, s) in list.into_vec().into_iter().enumerate() {
            written.push((at.key("secrets").item(i, None), s));
        }
    }
    if let Some(f) = raw.secrets_file.as_deref() {
        if let Some(text) = c.read_file(at.key("secrets_file"), f) {
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                written.push((at.key("secrets_file"), line.to_string()));
            }
        }
    }
    let none_written = written.is_empty();
    let mut secrets = Vec::new();
    for (key, s) in written {
        match decode_secret(&s) {
            Some(bytes) if crate::config::example_secrets::is_example_secret(&bytes) => c.fail(
                key,
                "this secret is printed in portcullis's own examples or docs, so anyone can forge session cookies with it; \
                 generate your own with `portcullis keygen` and keep it out of shared files",
            ),
            Some(bytes) if bytes.len() >= MIN_SECRET_BYTES => secrets.push(Secret::new(bytes)),
            Some(bytes) => c.fail(
                key,
                format!(
                    "a session secret must be at least {MIN_SECRET_BYTES} bytes; this one is {} — generate one with `portcullis keygen`",
                    bytes.len()
                ),
            ),
            None => c.fail(
                key,
                "a session secret must be base64 — generate one with `portcullis keygen`",
            ),
        }
    }
    if none_written {
        c.fail(
            at.key("secrets"),
            "missing: no session secret is given; generate one with `portcullis keygen` and set \
             PORTCULLIS_SESSION__SECRET to it, or point session.secrets_file at a file holding it",
        );
    }
    secrets
}

/// `cookie_domain`: a DNS domain (a leading dot allowed), not an IP address.
fn cookie_domain(c: &mut Check<'_>, at: &KeyPath, d: &str) -> Option<String> {
    // A leading dot is how older cookie syntax wrote it; browsers ignore it.
    let d = d.trim_start_matches('.').to_ascii_lowercase();
    let name_like = !d.is_empty()
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !d.ends_with('.')
        && !d.contains("..");
    let ip = d.parse::<std::net::IpAddr>().is_ok();
    if !name_like || ip {
        c.fail(
            at.key("cookie_domain"),
            format!("`{d}` must be a DNS domain that the sign-in host and the app hosts share, e.g. corp.example (not an IP address, no scheme or port)"),
        );
        return None;
    }
    Some(d)
}
