//! Turns the raw tables into the typed model, collecting every problem with
//! its key. One file per concern: `server`, `session`, `store`, `source`,
//! `policy` (the rules of sources and apps), `app`.

mod app;
mod policy;
mod server;
mod session;
mod source;
mod store;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::value::{Dict, Value};
use url::Url;

use super::error::{KeyPath, Problem, Segment};
use super::load::table;
use super::raw::*;
use crate::config::model::*;

pub use session::{decode_secret, MIN_SECRET_BYTES};
pub use source::JWT_ALGORITHMS;

/// Collects problems while building the model.
struct Check<'a> {
    problems: Vec<Problem>,
    /// Directory of the config file, for relative `*_file` paths.
    base_dir: &'a Path,
}

impl Check<'_> {
    fn fail(&mut self, key: KeyPath, message: impl Into<String>) {
        self.problems.push(Problem::new(key, message));
    }

    fn duration(&mut self, key: KeyPath, raw: Option<&str>, default: Duration) -> Duration {
        match raw {
            None => default,
            Some(s) => match parse_duration(s) {
                Ok(d) => d,
                Err(e) => {
                    self.fail(key, e);
                    default
                }
            },
        }
    }

    /// As [`Self::duration`], for a key where zero means something (no wait).
    fn duration_or_zero(&mut self, key: KeyPath, raw: Option<&str>, default: Duration) -> Duration {
        match raw {
            Some(s) if humantime::parse_duration(s.trim()).is_ok_and(|d| d.is_zero()) => {
                Duration::ZERO
            }
            raw => self.duration(key, raw, default),
        }
    }

    fn opt_duration(&mut self, key: KeyPath, raw: Option<&str>) -> Option<Duration> {
        let s = raw?;
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.fail(key, e);
                None
            }
        }
    }

    fn socket_addr(&mut self, key: KeyPath, raw: &str) -> Option<SocketAddr> {
        match raw.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.fail(
                    key,
                    format!("`{raw}` is not an address; write IP:PORT, e.g. 127.0.0.1:8080"),
                );
                None
            }
        }
    }

    /// An absolute http(s) URL.
    fn http_url(&mut self, key: KeyPath, raw: Option<&str>) -> Option<Url> {
        let raw = raw?;
        match parse_http_url(raw) {
            Ok(u) => Some(u),
            Err(e) => {
                self.fail(key, e);
                None
            }
        }
    }

    /// A provider URL: https, or http on loopback only (tokens and keys must not travel in clear).
    fn provider_url(&mut self, key: KeyPath, raw: Option<&str>) -> Option<Url> {
        let url = self.http_url(key.clone(), raw)?;
        if !provider_url_allowed(&url) {
            self.fail(
                key,
                format!("`{url}` must be https:// (plain http is allowed only on loopback)"),
            );
            return None;
        }
        Some(url)
    }

    fn read_file(&mut self, key: KeyPath, raw: &str) -> Option<String> {
        let path = self.resolve(raw);
        match std::fs::read_to_string(&path) {
            Ok(s) => Some(s.trim().to_string()),
            Err(e) => {
                self.fail(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    fn resolve(&self, raw: &str) -> PathBuf {
        let p = PathBuf::from(raw);
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }

    fn one_of<T: Copy>(
        &mut self,
        key: KeyPath,
        raw: Option<&str>,
        choices: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(raw) = raw else { return default };
        match choices.iter().find(|(name, _)| *name == raw) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                self.fail(
                    key,
                    format!("`{raw}` is not allowed; use one of: {}", names.join(", ")),
                );
                default
            }
        }
    }
}

/// Parses `30s`, `12h`, `1h 30m`; zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s.trim()) {
        Ok(d) if d.is_zero() => Err(format!("`{s}` is zero; give a positive duration")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "`{s}` is not a duration ({e}); write e.g. 30s, 10m, 12h"
        )),
    }
}

/// Whether a browser reaches `url` on the loopback interface (where a plain
/// http `public_url` is acceptable): [`is_loopback`], or a name under
/// `localhost` (`auth.localhost`: RFC 6761 §6.3 reserves them for loopback,
/// and browsers and curl resolve them there without asking DNS). Not for
/// the gateway's own outbound calls: its resolver may ask DNS for them.
pub fn browser_loopback(url: &Url) -> bool {
    let under_localhost = url.host_str().is_some_and(|d| {
        let d = d.strip_suffix('.').unwrap_or(d);
        let tail = d
            .len()
            .checked_sub(".localhost".len())
            .and_then(|i| d.get(i..));
        tail.is_some_and(|t| t.eq_ignore_ascii_case(".localhost"))
    });
    under_localhost || is_loopback(url)
}

/// Whether a URL's host is the loopback interface (where plain http is acceptable).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// Whether a provider may be reached at `url`: https, or plain http on
/// loopback only (tokens and keys must not travel in clear). The same rule
/// holds for configured and discovered URLs (DESIGN "Operations").
pub fn provider_url_allowed(url: &Url) -> bool {
    url.scheme() == "https" || (url.scheme() == "http" && is_loopback(url))
}

/// What is wrong with an issuer identifier, if anything: it must be an https
/// URL (http on loopback only) without query or fragment (OpenID Connect
/// Discovery §3, RFC 9700 §2.6).
pub fn issuer_problem(issuer: &str) -> Option<String> {
    let url = match parse_http_url(issuer) {
        Ok(u) => u,
        Err(e) => return Some(e),
    };
    if !provider_url_allowed(&url) {
        return Some(format!(
            "`{issuer}` must be https:// (plain http is allowed only on loopback)"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || issuer.contains(['?', '#']) {
        return Some(format!(
            "`{issuer}` must not have a query or fragment (OpenID Connect Discovery §3)"
        ));
    }
    None
}

/// Parses an absolute `http` or `https` URL with a host.
pub fn parse_http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL ({e})"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("`{raw}` must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{raw}` has no host"));
    }
    Ok(url)
}

/// The top-level tables of a config file.
const TOP_KEYS: &[&str] = &["server", "session", "store", "source", "app"];

/// Builds the model from the merged document.
pub fn build(file: &Path, root: &Dict) -> Result<Config, Vec<Problem>> {
    let base_dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut c = Check {
        problems: Vec::new(),
        base_dir: &base_dir,
    };
    let top = top_tables(&mut c, root);
    let server_raw: RawServer = table(
        top.server.as_ref(),
        &KeyPath::root("server"),
        &mut c.problems,
    )
    .unwrap_or_default();
    let session_raw: RawSession = table(
        top.session.as_ref(),
        &KeyPath::root("session"),
        &mut c.problems,
    )
    .unwrap_or_default();
    let store_raw: RawStore =
        table(top.store.as_ref(), &KeyPath::root("store"), &mut c.problems).unwrap_or_default();

    let server = server::server(&mut c, server_raw);
    let session = session::session(&mut c, session_raw);
    let store = store::store(&mut c, store_raw);
    let sources = sources(&mut c, &top.source);
    let apps = apps(&mut c, &top.app, &sources);

    if !c.problems.is_empty() {
        return Err(without_echoes(c.problems));
    }
    if let (Some(server), Some(session)) = (&server, &session) {
        check_cookie_domain(&mut c, server, session);
    }
    if !c.problems.is_empty() {
        return Err(without_echoes(c.problems));
    }
    match (server, session) {
        (Some(server), Some(session)) => Ok(Config {
            file: file.to_path_buf(),
            server,
            session,
            store,
            sources,
            apps,
        }),
        // Both return None only after recording a problem, handled above.
        _ => Err(vec![Problem::new(KeyPath::default(), "invalid config")]),
    }
}

/// `problems` without those about a key that could not be read (or a key
/// inside it), after the problem that says so: such a key is checked as
/// if it were not given, and "missing" about it would only repeat that
/// problem, wrongly.
fn without_echoes(problems: Vec<Problem>) -> Vec<Problem> {
    // A bad list element took its list out with it; a missing key, its table.
    let unreadable: Vec<KeyPath> = problems
        .iter()
        .filter(|p| p.unreadable)
        .map(|p| match p.key.0.split_last() {
            Some((Segment::Item(..), list)) => KeyPath(list.to_vec()),
            _ => p.key.clone(),
        })
        .collect();
    problems
        .into_iter()
        .filter(|p| p.unreadable || !unreadable.iter().any(|k| k.covers(&p.key)))
        .collect()
}

/// The top-level tables, each unknown key refused.
fn top_tables(c: &mut Check<'_>, root: &Dict) -> RawTop {
    let mut known = Dict::new();
    for (k, v) in root {
        if TOP_KEYS.contains(&k.as_str()) {
            known.insert(k.clone(), v.clone());
        } else {
            c.fail(
                KeyPath::root(k),
                format!("unknown key; expected one of: {}", TOP_KEYS.join(", ")),
            );
        }
    }
    table(
        Some(&Value::from(known)),
        &KeyPath::default(),
        &mut c.problems,
    )
    .unwrap_or_default()
}

/// Every `[[source]]`, each slug used once.
fn sources(c: &mut Check<'_>, raw: &[Value]) -> Vec<Source> {
    let mut sources = Vec::new();
    let mut slugs = BTreeSet::new();
    for (i, v) in raw.iter().enumerate() {
        let label = label_of(v, "slug");
        let at = KeyPath::root("source").item(i, label.as_deref());
        let Some(raw) = table::<RawSource>(Some(v), &at, &mut c.problems) else {
            continue;
        };
        if let Some(s) = source::source(c, &at, raw) {
            if !slugs.insert(s.slug.clone()) {
                c.fail(
                    at.key("slug"),
                    format!(
                        "`{}` is used by another source; slugs must be unique",
                        s.slug
                    ),
                );
            }
            sources.push(s);
        }
    }
    sources
}

/// Every `[[app]]`, at least one, each with its own name and its own host
/// and path prefix.
fn apps(c: &mut Check<'_>, raw: &[Value], sources: &[Source]) -> Vec<App> {
    let mut apps = Vec::new();
    let mut names = BTreeSet::new();
    let mut routes = BTreeSet::new();
    for (i, v) in raw.iter().enumerate() {
        let label = label_of(v, "name");
        let at = KeyPath::root("app").item(i, label.as_deref());
        let Some(raw) = table::<RawApp>(Some(v), &at, &mut c.problems) else {
            continue;
        };
        if let Some(a) = app::app(c, &at, raw, sources) {
            if !names.insert(a.name.clone()) {
                c.fail(
                    at.key("name"),
                    format!("`{}` is used by another app; names must be unique", a.name),
                );
            }
            if !routes.insert((a.host.clone(), a.path_prefix.clone())) {
                c.fail(
                    at.key("path_prefix"),
                    format!(
                        "another app already serves host {} with path_prefix `{}`; give each app its own host or prefix",
                        a.host.as_deref().unwrap_or("(any)"),
                        a.path_prefix
                    ),
                );
            }
            apps.push(a);
        }
    }
    if raw.is_empty() {
        c.fail(
            KeyPath::root("app"),
            "no [[app]] is defined; add at least one with a name and an upstream",
        );
    }
    apps
}

/// `session.cookie_domain` must cover the sign-in host: the callback sets
/// the shared cookie there, and a browser refuses a `Domain` its host is not under.
fn check_cookie_domain(c: &mut Check<'_>, server: &Server, session: &Session) {
    let Some(domain) = &session.cookie_domain else {
        return;
    };
    let host = server
        .public_url
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !crate::config::host_under(&host, domain) {
        c.fail(
            KeyPath::root("session").key("cookie_domain"),
            format!("`{domain}` does not cover the sign-in host `{host}` (server.public_url); use a domain that `{host}` ends with, or remove cookie_domain to hand sessions to each host instead"),
        );
    }
}

fn label_of(v: &Value, key: &str) -> Option<String> {
    v.as_dict()?.get(key)?.as_str().map(str::to_string)
}
