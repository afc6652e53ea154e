//! Turns the raw tables into the typed model, collecting every problem with its key.

use super::header_names;
use crate::config::presets::PresetError;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use figment::value::{Dict, Value};
use ipnet::IpNet;
use url::Url;

use super::error::{KeyPath, Problem};
use super::expression::{Expression, ExpressionError};
use super::load::table;
use super::model::*;
use super::raw::*;

/// The shortest session secret accepted, in decoded bytes.
pub const MIN_SECRET_BYTES: usize = 32;

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
    let top: RawTop = table(
        Some(&Value::from(known)),
        &KeyPath::default(),
        &mut c.problems,
    )
    .unwrap_or_default();

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

    let server = server(&mut c, server_raw);
    let session = session(&mut c, session_raw);
    let store = store(&mut c, store_raw);

    let mut sources = Vec::new();
    let mut slugs = BTreeSet::new();
    for (i, v) in top.source.iter().enumerate() {
        let label = label_of(v, "slug");
        let at = KeyPath::root("source").item(i, label.as_deref());
        let Some(raw) = table::<RawSource>(Some(v), &at, &mut c.problems) else {
            continue;
        };
        if let Some(s) = source(&mut c, &at, raw) {
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

    let mut apps = Vec::new();
    let mut names = BTreeSet::new();
    let mut routes = BTreeSet::new();
    for (i, v) in top.app.iter().enumerate() {
        let label = label_of(v, "name");
        let at = KeyPath::root("app").item(i, label.as_deref());
        let Some(raw) = table::<RawApp>(Some(v), &at, &mut c.problems) else {
            continue;
        };
        if let Some(a) = app(&mut c, &at, raw, &sources) {
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
    if top.app.is_empty() {
        c.fail(
            KeyPath::root("app"),
            "no [[app]] is defined; add at least one with a name and an upstream",
        );
    }

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    if let (Some(server), Some(session)) = (&server, &session) {
        check_cookie_domain(&mut c, server, session);
    }
    if !c.problems.is_empty() {
        return Err(c.problems);
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

fn server(c: &mut Check<'_>, raw: RawServer) -> Option<Server> {
    let at = KeyPath::root("server");
    let listen = match raw.listen.as_deref() {
        Some(s) => c.socket_addr(at.key("listen"), s),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
    };
    let admin_listen = match raw.admin_listen.as_deref() {
        Some(s) => c.socket_addr(at.key("admin_listen"), s),
        None => None,
    };
    let tls = raw.tls.map(|t| Tls {
        cert_file: c.resolve(&t.cert_file),
        key_file: c.resolve(&t.key_file),
    });
    let public_url = match raw.public_url.as_deref() {
        Some(s) => {
            let u = c.http_url(at.key("public_url"), Some(s));
            if let Some(u) = &u {
                // SES-02: without https the session cookie cannot be Secure/__Host-.
                if u.scheme() == "http" && !is_loopback(u) {
                    c.fail(
                        at.key("public_url"),
                        format!("`{s}` is plain http on a non-loopback host: session cookies would travel unprotected; use https:// (terminate TLS here with server.tls or in front)"),
                    );
                }
                if (u.path() != "/" && !u.path().is_empty()) || u.query().is_some() {
                    c.fail(
                        at.key("public_url"),
                        format!("`{s}` must be an origin only (scheme, host, port), without path or query"),
                    );
                }
            }
            u
        }
        None => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let u = listen.and_then(|l| Url::parse(&format!("{scheme}://{l}")).ok());
            // SES-02 holds for the default too: `listen = "0.0.0.0:8080"` alone
            // would serve cookies without Secure on a public interface.
            if let Some(u) = u
                .as_ref()
                .filter(|u| u.scheme() == "http" && !is_loopback(u))
            {
                c.fail(
                    at.key("public_url"),
                    format!(
                        "not set, so it defaults to `{}` (from server.listen), plain http on a non-loopback address: \
                         session cookies would travel unprotected; set public_url to the https:// origin your users open \
                         (TLS here with server.tls, or at a load balancer in front), or listen on 127.0.0.1",
                        u.origin().ascii_serialization()
                    ),
                );
            }
            u
        }
    };
    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.unwrap_or_default().iter().enumerate() {
        let parsed = p
            .parse::<IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => c.fail(
                at.key("trusted_proxies").item(i, None),
                format!("`{p}` is not an IP address or CIDR range, e.g. 10.0.0.0/8"),
            ),
        }
    }
    let threads = raw.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        c.fail(at.key("threads"), "must be at least 1");
    }
    let shutdown_timeout = c.duration(
        at.key("shutdown_timeout"),
        raw.shutdown_timeout.as_deref(),
        Duration::from_secs(30),
    );
    let upstream_connect_timeout = c.duration(
        at.key("upstream_connect_timeout"),
        raw.upstream_connect_timeout.as_deref(),
        Duration::from_secs(5),
    );
    let upstream_read_timeout = c.duration(
        at.key("upstream_read_timeout"),
        raw.upstream_read_timeout.as_deref(),
        Duration::from_secs(60),
    );
    let request_header_timeout = c.duration(
        at.key("request_header_timeout"),
        raw.request_header_timeout.as_deref(),
        Duration::from_secs(10),
    );
    let idle_timeout = c.duration(
        at.key("idle_timeout"),
        raw.idle_timeout.as_deref(),
        super::model::DEFAULT_CONNECTION_IDLE,
    );
    let log_format = raw.log_format.as_deref().map(|f| {
        c.one_of(
            at.key("log_format"),
            Some(f),
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        )
    });
    let max_connections = raw.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        c.fail(at.key("max_connections"), "must be at least 1");
    }
    Some(Server {
        listen: listen?,
        admin_listen,
        public_url: public_url?,
        trusted_proxies,
        tls,
        threads: threads.max(1),
        shutdown_timeout,
        upstream_connect_timeout,
        upstream_read_timeout,
        bearer_cache_entries: raw
            .bearer_cache_entries
            .unwrap_or(super::defaults::BEARER_CACHE_ENTRIES),
        request_header_timeout,
        idle_timeout,
        max_connections: max_connections.max(1),
        log_format,
    })
}

/// Decodes a session secret written in standard or URL-safe base64, padded or not.
pub fn decode_secret(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let s = s.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

fn session(c: &mut Check<'_>, raw: RawSession) -> Option<Session> {
    let at = KeyPath::root("session");
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
    if let Some(s) = raw.secret {
        written.push((at.key("secret"), s));
    }
    if let Some(list) = raw.secrets {
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
            Some(bytes) if super::example_secrets::is_example_secret(&bytes) => c.fail(
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
    let cookie_domain = raw.cookie_domain.and_then(|d| {
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
    });
    Some(Session {
        secrets,
        cookie_name,
        lifetime,
        idle_timeout,
        cookie_domain,
        identity_cache_ttl,
    })
}

fn store(c: &mut Check<'_>, raw: RawStore) -> Store {
    let url = raw
        .url
        .unwrap_or_else(|| "sqlite://portcullis.db".to_string());
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if !known.iter().any(|p| url.starts_with(p)) {
        c.fail(
            KeyPath::root("store").key("url"),
            format!(
                "`{}` is not a supported store; use sqlite://FILE or postgres://USER@HOST/DB",
                redact_url_password(&url)
            ),
        );
    }
    Store {
        url: Secret::new(url),
    }
}

const PKCE: &[(&str, Pkce)] = &[
    ("none", Pkce::None),
    ("plain", Pkce::Plain),
    ("S256", Pkce::S256),
];
const TOKEN_AUTH: &[(&str, TokenAuthMethod)] = &[
    ("client_secret_basic", TokenAuthMethod::ClientSecretBasic),
    ("client_secret_post", TokenAuthMethod::ClientSecretPost),
];
const MATCHING: &[(&str, UserMatchingMode)] = &[
    ("identifier", UserMatchingMode::Identifier),
    ("email_link", UserMatchingMode::EmailLink),
    ("email_deny", UserMatchingMode::EmailDeny),
    ("username_link", UserMatchingMode::UsernameLink),
    ("username_deny", UserMatchingMode::UsernameDeny),
];
/// Algorithms a machine token may use: asymmetric only (RFC 8725 §3.1).
pub const JWT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn source(c: &mut Check<'_>, at: &KeyPath, raw: RawSource) -> Option<Source> {
    let slug = match raw.slug {
        Some(s) if valid_slug(&s) => Some(s),
        Some(s) => {
            c.fail(at.key("slug"), format!("`{s}` must match [a-z0-9-]+"));
            None
        }
        None => {
            c.fail(
                at.key("slug"),
                "missing: every source needs a slug, e.g. slug = \"corp\"",
            );
            None
        }
    };
    let kind = match raw.kind.as_deref() {
        Some(k) => match SourceKind::ALL.iter().find(|(n, _)| *n == k) {
            Some((_, kind)) => Some(*kind),
            None => {
                let names: Vec<&str> = SourceKind::ALL.iter().map(|(n, _)| *n).collect();
                c.fail(
                    at.key("type"),
                    format!(
                        "`{k}` is not a source type; use one of: {}",
                        names.join(", ")
                    ),
                );
                None
            }
        },
        None => {
            c.fail(at.key("type"), "missing: e.g. type = \"openidconnect\"");
            None
        }
    };
    let consumer_secret = match (raw.consumer_secret, raw.consumer_secret_file.as_deref()) {
        (Some(_), Some(_)) => {
            c.fail(
                at.key("consumer_secret_file"),
                "set consumer_secret or consumer_secret_file, not both",
            );
            None
        }
        (Some(s), None) => Some(Secret::new(s)),
        (None, Some(f)) => c
            .read_file(at.key("consumer_secret_file"), f)
            .map(Secret::new),
        (None, None) => None,
    };
    // A vendor preset fills every key the config leaves unset (its URLs with
    // `base_url`/`tenant` put in); a key set in the config always wins.
    let preset = kind.and_then(crate::config::presets::preset);
    let mut reported: Option<&'static str> = None;
    let expanded = match preset.map(|p| p.urls(raw.base_url.as_deref(), raw.tenant.as_deref())) {
        None => crate::config::presets::ExpandedUrls::default(),
        Some(Ok(u)) => u,
        Some(Err(e)) => {
            let key = match &e {
                PresetError::Missing(k) | PresetError::Invalid { key: k, .. } => *k,
                _ => "type",
            };
            reported = Some(key);
            c.fail(
                at.key(key),
                format!("{e} (type `{}`)", raw.kind.as_deref().unwrap_or_default()),
            );
            crate::config::presets::ExpandedUrls::default()
        }
    };
    let oidc_well_known_url = c.provider_url(
        at.key("oidc_well_known_url"),
        raw.oidc_well_known_url
            .as_deref()
            .or(expanded.oidc_well_known_url.as_deref()),
    );
    let authorization_url = c.provider_url(
        at.key("authorization_url"),
        raw.authorization_url
            .as_deref()
            .or(expanded.authorization_url.as_deref()),
    );
    let access_token_url = c.provider_url(
        at.key("access_token_url"),
        raw.access_token_url
            .as_deref()
            .or(expanded.access_token_url.as_deref()),
    );
    let profile_url = c.provider_url(
        at.key("profile_url"),
        raw.profile_url
            .as_deref()
            .or(expanded.profile_url.as_deref()),
    );
    let request_token_url = c.provider_url(
        at.key("request_token_url"),
        raw.request_token_url.as_deref(),
    );
    let oidc_jwks_url = c.provider_url(
        at.key("oidc_jwks_url"),
        raw.oidc_jwks_url
            .as_deref()
            .or(expanded.oidc_jwks_url.as_deref()),
    );
    let issuer = raw.issuer.clone().or(expanded.issuer.clone());
    if let Some(jwks) = raw.oidc_jwks.as_deref() {
        let ok = serde_json::from_str::<serde_json::Value>(jwks)
            .ok()
            .and_then(|v| v.get("keys").map(serde_json::Value::is_array))
            .unwrap_or(false);
        if !ok {
            c.fail(
                at.key("oidc_jwks"),
                "must be a JWKS document: {\"keys\": [...]}",
            );
        }
    }
    if let Some(e) = issuer.as_deref().and_then(issuer_problem) {
        c.fail(at.key("issuer"), e);
    }
    let configured_pkce = raw
        .pkce
        .as_deref()
        .map(|p| c.one_of(at.key("pkce"), Some(p), PKCE, Pkce::S256));
    let pkce = match preset.map(|p| p.pkce_for(configured_pkce)) {
        None => configured_pkce.unwrap_or(Pkce::S256),
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            c.fail(at.key("pkce"), e.to_string());
            Pkce::S256
        }
    };
    let token_auth_method = c.one_of(
        at.key("token_auth_method"),
        raw.token_auth_method.as_deref(),
        TOKEN_AUTH,
        preset.map_or(TokenAuthMethod::ClientSecretBasic, |p| p.token_auth_method),
    );
    // Keys a vendor cannot work without (URL placeholders are checked above).
    if let Some(p) = preset {
        for key in p.requires {
            let present = match *key {
                "base_url" => raw.base_url.is_some() || p.default_base_url.is_some(),
                "tenant" => raw.tenant.is_some(),
                "team_id" => raw.team_id.is_some(),
                "key_id" => raw.key_id.is_some(),
                "private_key_file" => raw.private_key_file.is_some(),
                _ => true,
            };
            if !present && raw.consumer_key.is_some() && reported != Some(*key) {
                c.fail(
                    at.key(key),
                    format!(
                        "missing: a source of type `{}` needs it",
                        raw.kind.as_deref().unwrap_or_default()
                    ),
                );
            }
        }
    }
    let private_key = raw
        .private_key_file
        .as_deref()
        .and_then(|f| c.read_file(at.key("private_key_file"), f))
        .map(Secret::new);
    let user_matching_mode = c.one_of(
        at.key("user_matching_mode"),
        raw.user_matching_mode.as_deref(),
        MATCHING,
        UserMatchingMode::Identifier,
    );
    let mut jwt_algorithms = Vec::new();
    for (i, a) in raw
        .jwt_algorithms
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        // Only names on the list are parsed, so HMAC and `none` never get in.
        let parsed = JWT_ALGORITHMS
            .contains(&a.as_str())
            .then(|| a.parse::<jsonwebtoken::Algorithm>().ok())
            .flatten();
        if let Some(alg) = parsed {
            jwt_algorithms.push(alg);
        } else {
            c.fail(
                at.key("jwt_algorithms").item(i, None),
                format!(
                    "`{a}` is not allowed for machine tokens (never none or HMAC); use one of: {}",
                    JWT_ALGORITHMS.join(", ")
                ),
            );
        }
    }
    let jwt_max_age = c.opt_duration(at.key("jwt_max_age"), raw.jwt_max_age.as_deref());
    let ca_file = raw.ca_file.as_deref().and_then(|f| {
        let path = c.resolve(f);
        match super::pem::read_certificates(&path) {
            Ok(_) => Some(path),
            Err(e) => {
                c.fail(at.key("ca_file"), e.to_string());
                None
            }
        }
    });
    let jwks_cache_ttl = c
        .opt_duration(at.key("jwks_cache_ttl"), raw.jwks_cache_ttl.as_deref())
        .unwrap_or(super::jwks_freshness::DEFAULT_TTL);
    let jwks_max_stale = c
        .opt_duration(at.key("jwks_max_stale"), raw.jwks_max_stale.as_deref())
        .unwrap_or(super::jwks_freshness::DEFAULT_MAX_STALE);
    let jwks_cooldown = c
        .opt_duration(at.key("jwks_cooldown"), raw.jwks_cooldown.as_deref())
        .unwrap_or(super::jwks_freshness::UNKNOWN_KID_COOLDOWN);
    for (key, d) in [
        ("jwks_cache_ttl", jwks_cache_ttl),
        ("jwks_cooldown", jwks_cooldown),
    ] {
        if d.is_zero() {
            c.fail(at.key(key), "must be longer than 0s, e.g. \"30s\"");
        }
    }
    if jwks_max_stale < jwks_cache_ttl {
        c.fail(
            at.key("jwks_max_stale"),
            "must be at least jwks_cache_ttl: keys would go stale before their first refresh",
        );
    }

    let has_jwks =
        oidc_jwks_url.is_some() || raw.oidc_jwks.is_some() || oidc_well_known_url.is_some();
    let kind = kind?;
    let machine_only = preset.is_some_and(|p| p.quirks.machine_only);
    if machine_only && raw.consumer_key.is_some() {
        c.fail(
            at.key("consumer_key"),
            format!(
                "a source of type `{}` is machine-only: nobody signs in through it; remove consumer_key and list the source in an app's jwt_sources",
                raw.kind.as_deref().unwrap_or_default()
            ),
        );
    } else if raw.consumer_key.is_some() {
        if consumer_secret.is_none() && kind != SourceKind::Apple {
            c.fail(
                at.key("consumer_secret"),
                "missing: a source with a consumer_key needs consumer_secret or consumer_secret_file",
            );
        }
        let need: &[(&str, bool)] = match kind {
            SourceKind::OAuth2 => &[
                ("authorization_url", authorization_url.is_some()),
                ("access_token_url", access_token_url.is_some()),
                ("profile_url", profile_url.is_some()),
            ],
            SourceKind::OAuth1 => &[
                ("request_token_url", request_token_url.is_some()),
                ("authorization_url", authorization_url.is_some()),
                ("access_token_url", access_token_url.is_some()),
                ("profile_url", profile_url.is_some()),
            ],
            SourceKind::OpenIdConnect if oidc_well_known_url.is_none() => &[
                ("authorization_url", authorization_url.is_some()),
                ("access_token_url", access_token_url.is_some()),
                ("issuer", issuer.is_some()),
            ],
            _ => &[],
        };
        for (key, present) in need {
            if !present {
                c.fail(
                    at.key(key),
                    format!(
                        "missing: a source of type `{}` needs it",
                        raw.kind.as_deref().unwrap_or("")
                    ),
                );
            }
        }
    } else if !has_jwks {
        c.fail(
            at.key("consumer_key"),
            "missing: a source needs consumer_key (for sign-in) or a JWKS (oidc_jwks_url, oidc_jwks or oidc_well_known_url, for machine tokens)",
        );
    }

    let mut claims: BTreeMap<String, String> = [
        ("identifier", "sub"),
        ("username", "preferred_username"),
        ("email", "email"),
        ("email_verified", "email_verified"),
        ("name", "name"),
        ("groups", "groups"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(p) = preset {
        p.apply_claims(&mut claims);
    }
    const CLAIM_KEYS: &[&str] = &[
        "identifier",
        "username",
        "email",
        "email_verified",
        "name",
        "groups",
    ];
    for (k, v) in raw.claims.unwrap_or_default() {
        if !CLAIM_KEYS.contains(&k.as_str()) {
            c.fail(
                at.key("claims").key(&k),
                format!(
                    "unknown claim mapping; expected one of: {}",
                    CLAIM_KEYS.join(", ")
                ),
            );
        } else if let Err(e) = super::claim_path::parse_path(&v) {
            c.fail(at.key("claims").key(&k), format!("`{v}`: {e}"));
        } else {
            claims.insert(k, v);
        }
    }
    let scopes = raw.scopes.unwrap_or_else(|| match (kind, preset) {
        (_, Some(p)) => p.default_scopes(),
        (SourceKind::OpenIdConnect, None) => {
            vec!["openid".into(), "email".into(), "profile".into()]
        }
        _ => Vec::new(),
    });
    let mut authorize_params: BTreeMap<String, String> = preset
        .map(|p| {
            p.authorize_params
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        })
        .unwrap_or_default();
    authorize_params.extend(raw.authorize_params.unwrap_or_default());
    let policies = policies(
        c,
        at,
        &raw.policy,
        &[
            ("authenticate", PolicyAction::Authenticate),
            ("enroll", PolicyAction::Enroll),
            ("link", PolicyAction::Link),
        ],
    );
    let slug = slug?;
    Some(Source {
        name: raw
            .name
            .or_else(|| preset.map(|p| p.name.to_string()))
            .unwrap_or_else(|| slug.clone()),
        slug,
        kind,
        consumer_key: raw.consumer_key,
        consumer_secret,
        oidc_well_known_url,
        authorization_url,
        access_token_url,
        profile_url,
        request_token_url,
        oidc_jwks_url,
        oidc_jwks: raw.oidc_jwks,
        scopes,
        pkce,
        token_auth_method,
        user_matching_mode,
        enroll: raw.enroll.unwrap_or(true),
        trust_email: raw.trust_email.unwrap_or(false),
        claims,
        authorize_params,
        issuer,
        jwt_algorithms,
        jwt_max_age,
        ca_file,
        jwks_cache_ttl,
        jwks_max_stale,
        jwks_cooldown,
        base_url: raw.base_url,
        tenant: raw.tenant,
        team_id: raw.team_id,
        key_id: raw.key_id,
        private_key,
        preset,
        policies,
    })
}

fn policies(
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
        let on_raw = p.on.map(StringOrList::into_vec).unwrap_or_default();
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
            canonical_prefix(c, at.key("path_prefix"), pp);
        }
        out.push(Policy {
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
        });
    }
    out
}

/// Checks a rule's `path_prefix`: rules are matched against the canonical
/// decision path (`crate::config::path`), so a prefix in any other spelling would
/// silently never match; refuse it and name the spelling to write.
fn canonical_prefix(c: &mut Check<'_>, key: KeyPath, p: &str) {
    match super::path::canonicalize(p) {
        Ok(canon) if canon.decision == p => {}
        Ok(canon) => c.fail(
            key,
            format!(
                "`{p}` is not how requests are matched (their canonical path); write `{}`",
                canon.decision
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

/// Checks a path prefix: absolute, no dot segments, no empty segments.
fn check_prefix(c: &mut Check<'_>, key: KeyPath, p: &str) -> bool {
    let bad = !p.starts_with('/')
        || p.contains("//")
        || p.contains('\\')
        || p.contains('?')
        || p.contains('#')
        || p.split('/').any(|s| s == "." || s == "..");
    if bad {
        c.fail(
            key,
            format!("`{p}` must be an absolute path such as /static/, without //, . or .. segments, ? or #"),
        );
    }
    !bad
}

/// An app's accepted audiences: required with `jwt_sources` (JWT-23, JWT-24),
/// else any token its issuers signed would do — users' ID tokens, tokens for
/// other services.
fn jwt_audiences(
    c: &mut Check<'_>,
    at: &KeyPath,
    name: Option<&str>,
    jwt_sources: &[String],
    raw: Option<Vec<String>>,
) -> Vec<String> {
    let audiences = raw.unwrap_or_default();
    if !jwt_sources.is_empty() && audiences.is_empty() {
        let example = name.filter(|n| !n.trim().is_empty()).unwrap_or("api");
        c.fail(
            at.key("jwt_audiences"),
            format!("required with jwt_sources: list the audience(s) your tokens carry, e.g. jwt_audiences = [\"{example}\"]"),
        );
    }
    for (i, a) in audiences.iter().enumerate() {
        if a.trim().is_empty() {
            c.fail(
                at.key("jwt_audiences").item(i, None),
                "empty: an audience is the `aud` value your tokens carry, e.g. \"api\"",
            );
        }
    }
    audiences
}

fn app(c: &mut Check<'_>, at: &KeyPath, raw: RawApp, sources: &[Source]) -> Option<App> {
    let name = match raw.name {
        Some(n) if !n.trim().is_empty() => Some(n),
        _ => {
            c.fail(at.key("name"), "missing: every app needs a unique name");
            None
        }
    };
    let host = raw.host.map(|h| h.to_ascii_lowercase());
    if let Some(h) = &host {
        let ok = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !h.starts_with('.')
            && !h.ends_with('.');
        if !ok {
            c.fail(
                at.key("host"),
                format!(
                    "`{h}` must be a host name without scheme, port or path, e.g. wiki.example"
                ),
            );
        }
    }
    let path_prefix = raw.path_prefix.unwrap_or_else(|| "/".to_string());
    check_prefix(c, at.key("path_prefix"), &path_prefix);
    let upstream = match raw.upstream.as_deref() {
        None => {
            c.fail(
                at.key("upstream"),
                "missing: e.g. upstream = \"http://127.0.0.1:3000\"",
            );
            None
        }
        Some(u) => match parse_http_url(u) {
            Err(e) => {
                c.fail(at.key("upstream"), e);
                None
            }
            Ok(url) => {
                if (url.path() != "/" && !url.path().is_empty())
                    || url.query().is_some()
                    || !url.username().is_empty()
                {
                    c.fail(
                        at.key("upstream"),
                        format!("`{u}` must be an origin only (scheme, host, port), without path, query or user"),
                    );
                    None
                } else {
                    let tls = url.scheme() == "https";
                    let host = match url.host() {
                        Some(url::Host::Ipv6(a)) => a.to_string(),
                        Some(h) => h.to_string(),
                        None => String::new(),
                    };
                    let port = url
                        .port_or_known_default()
                        .unwrap_or(if tls { 443 } else { 80 });
                    Some(Upstream {
                        url,
                        host,
                        port,
                        tls,
                    })
                }
            }
        },
    };
    let login_sources: Vec<String> = sources
        .iter()
        .filter(|s| s.is_login())
        .map(|s| s.slug.clone())
        .collect();
    let app_sources = match raw.sources {
        None => login_sources,
        Some(list) => {
            for (i, s) in list.iter().enumerate() {
                match sources.iter().find(|x| &x.slug == s) {
                    None => c.fail(
                        at.key("sources").item(i, None),
                        format!("`{s}` is not a defined source; define a [[source]] with slug = \"{s}\" or remove it"),
                    ),
                    Some(x) if x.preset.is_some_and(|p| p.quirks.machine_only) => c.fail(
                        at.key("sources").item(i, None),
                        format!("`{s}` is a machine-only source (type `{}`): nobody signs in through it; list it in jwt_sources instead", x.preset.map_or("", |p| p.type_name())),
                    ),
                    Some(x) if !x.is_login() => c.fail(
                        at.key("sources").item(i, None),
                        format!("`{s}` has no consumer_key, so nobody can sign in through it; list it in jwt_sources instead"),
                    ),
                    Some(_) => {}
                }
            }
            list
        }
    };
    let jwt_sources = raw.jwt_sources.unwrap_or_default();
    for (i, s) in jwt_sources.iter().enumerate() {
        match sources.iter().find(|x| &x.slug == s) {
            None => c.fail(
                at.key("jwt_sources").item(i, None),
                format!("`{s}` is not a defined source; define a [[source]] with slug = \"{s}\" or remove it"),
            ),
            Some(x) if x.issuer.is_none() && x.oidc_well_known_url.is_none() => c.fail(
                at.key("jwt_sources").item(i, None),
                format!("source `{s}` has no issuer; set its `issuer` (or oidc_well_known_url) so tokens can be matched to it"),
            ),
            Some(x) if x.oidc_jwks_url.is_none() && x.oidc_jwks.is_none() && x.oidc_well_known_url.is_none() => c.fail(
                at.key("jwt_sources").item(i, None),
                format!("source `{s}` has no keys; set its oidc_jwks_url, oidc_jwks or oidc_well_known_url"),
            ),
            Some(_) => {}
        }
    }
    let jwt_audiences = jwt_audiences(c, at, name.as_deref(), &jwt_sources, raw.jwt_audiences);
    let mut public_paths = Vec::new();
    for (i, p) in raw.public_paths.unwrap_or_default().into_iter().enumerate() {
        if check_prefix(c, at.key("public_paths").item(i, None), &p) {
            public_paths.push(p);
        }
    }
    let policies = policies(c, at, &raw.policy, &[("access", PolicyAction::Access)]);
    access_is_stated(c, at, &app_sources, &jwt_sources, &public_paths, &policies);
    public_issuer_is_narrowed(c, at, sources, &jwt_sources, &policies);
    let claim_headers = claim_headers(c, at, raw.claim_headers.unwrap_or_default());
    let upstream_ca_file = raw.upstream_ca_file.as_deref().and_then(|f| {
        let key = at.key("upstream_ca_file");
        if upstream.as_ref().is_some_and(|u| !u.tls) {
            c.fail(
                key.clone(),
                "set only for an https:// upstream: a plain http upstream has no certificate to check",
            );
        }
        let path = c.resolve(f);
        match super::pem::read_certificates(&path) {
            Ok(_) => Some(path),
            Err(e) => {
                c.fail(key, e.to_string());
                None
            }
        }
    });
    Some(App {
        name: name?,
        host,
        path_prefix,
        upstream: upstream?,
        sources: app_sources,
        jwt_sources,
        jwt_audiences,
        forward_bearer_token: raw.forward_bearer_token.unwrap_or(false),
        identity_assertion: raw.identity_assertion.unwrap_or(false),
        pass_access_token: raw.pass_access_token.unwrap_or(false),
        upstream_ca_file,
        public_paths,
        claim_headers,
        policies,
    })
}

/// GitHub Actions mints a token with any audience any workflow on GitHub asks
/// for (DESIGN "Safe defaults"): an app trusting it must not "allow everyone"
/// — an access allow rule without a matcher would admit every repository.
fn public_issuer_is_narrowed(
    c: &mut Check<'_>,
    at: &KeyPath,
    sources: &[Source],
    jwt_sources: &[String],
    policies: &[Policy],
) {
    let public = jwt_sources.iter().find(|s| {
        sources
            .iter()
            .any(|x| &x.slug == *s && x.kind == SourceKind::GithubActions)
    });
    let Some(public) = public else { return };
    for (i, p) in policies.iter().enumerate() {
        let everyone = p.effect == Effect::Allow
            && p.on.contains(&PolicyAction::Access)
            && p.groups.is_empty()
            && p.users.is_empty()
            && p.email_domains.is_empty()
            && p.expression.is_none();
        if everyone {
            c.fail(
                at.key("policy").item(i, None),
                format!(
                    "allows everyone, and `{public}` is GitHub Actions: any workflow on GitHub can get a token with your audience. \
                     Narrow it, e.g. expression = 'claims.repository == \"acme/deploy\" && claims.ref == \"refs/heads/main\"'"
                ),
            );
        }
    }
}

/// Access must be stated (DESIGN "Safe defaults"): an app that anyone can
/// authenticate to — a sign-in source (the default is every source with a
/// `consumer_key`) or a `jwt_sources` entry — needs at least one `access`
/// rule, allow or deny. An app with nothing to authenticate through, or whose
/// every path is public (`public_paths` has `/`), makes no access decision.
fn access_is_stated(
    c: &mut Check<'_>,
    at: &KeyPath,
    sources: &[String],
    jwt_sources: &[String],
    public_paths: &[String],
    policies: &[Policy],
) {
    let decides = !sources.is_empty() || !jwt_sources.is_empty();
    let all_public = public_paths.iter().any(|p| p == "/");
    let stated = policies
        .iter()
        .any(|p| p.on.contains(&PolicyAction::Access));
    if !decides || all_public || stated {
        return;
    }
    let mut through = Vec::new();
    if !sources.is_empty() {
        through.push(format!("signs people in through {}", sources.join(", ")));
    }
    if !jwt_sources.is_empty() {
        through.push(format!("accepts tokens from {}", jwt_sources.join(", ")));
    }
    c.fail(
        at.key("policy"),
        format!(
            "missing: no access rule says who may use this app (it {}); access is never open by default. \
             Add a rule under this [[app]]; to admit everyone who signs in, say so:\n      \
             [[app.policy]]\n      on = [\"access\"]\n      effect = \"allow\"\n    \
             and narrow it with groups = [\"staff\"], users = [\"ada\"], email_domains = [\"corp.example\"] or expression = '...'; \
             from the environment: {}='[{{on = [\"access\"], effect = \"allow\"}}]'",
            through.join(" and "),
            at.key("policy").env_var(),
        ),
    );
}

/// Header names `claim_headers` may not use besides the gateway's own and the
/// forwarding headers (`header_names`): hop-by-hop and framing fields,
/// `Host`, credentials (all compared lower-case with `_` read as `-`).
const RESERVED_CLAIM_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "cookie",
    "set-cookie",
    "authorization",
];

/// `claim_headers = { "X-Team" = "org.team" }`: valid header names that are
/// not reserved, not given twice (in any case or `_` spelling), and non-empty paths.
fn claim_headers(
    c: &mut Check<'_>,
    at: &KeyPath,
    raw: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, path) in raw {
        let key = at.key("claim_headers").key(&name);
        let lower = name.to_ascii_lowercase();
        let canonical = lower.replace('_', "-");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() || name.contains('_') {
            c.fail(
                key,
                format!("`{name}` is not a header name for an upstream: use letters, digits and `-` (e.g. X-Team)"),
            );
            continue;
        }
        if RESERVED_CLAIM_HEADERS.contains(&canonical.as_str())
            || header_names::IDENTITY_HEADERS.contains(&canonical.as_str())
            || header_names::FORWARDING_HEADERS.contains(&canonical.as_str())
            || header_names::GATEWAY_PREFIXES
                .iter()
                .any(|p| canonical.starts_with(p))
        {
            c.fail(
                key,
                format!("`{name}` is reserved (hop-by-hop, Host, Cookie, Authorization, or a header the gateway sets itself); choose another name such as X-Claim-Team"),
            );
            continue;
        }
        if path.trim().is_empty() {
            c.fail(key, "empty claim path: name a claim, e.g. \"org.team\"");
            continue;
        }
        if out.insert(canonical, path).is_some() {
            c.fail(
                key,
                format!("`{name}` is given twice (header names ignore case)"),
            );
        }
    }
    out
}
