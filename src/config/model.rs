//! The validated, typed config: what the rest of portcullis reads.
//! Built once at load from `raw`; every value here has been checked.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Serialize, Serializer};
use url::Url;

/// A secret value: its `Debug` and `Serialize` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Serializes a duration the way it is written in the file (`12h`, `30s`).
pub(crate) fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn ser_opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

fn ser_display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_opt_display<T: fmt::Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

fn ser_display_list<T: fmt::Display, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

/// The whole validated config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file it was loaded from (named in every error).
    #[serde(skip)]
    pub file: PathBuf,
    /// `[server]`
    pub server: Server,
    /// `[session]`
    pub session: Session,
    /// `[store]`
    pub store: Store,
    /// `[[source]]`, in file order.
    #[serde(rename = "source")]
    pub sources: Vec<Source>,
    /// `[[app]]`, in file order.
    #[serde(rename = "app")]
    pub apps: Vec<App>,
}

impl Config {
    /// The source with this slug.
    pub fn source(&self, slug: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.slug == slug)
    }
}

/// The origin `public_url` defaults to: `listen` with `https` when the
/// listener has TLS, else `http`.
pub fn listener_origin(listen: SocketAddr, tls: bool) -> Option<Url> {
    let scheme = if tls { "https" } else { "http" };
    Url::parse(&format!("{scheme}://{listen}")).ok()
}

/// `[server]`
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// Address of the proxy listener.
    #[serde(serialize_with = "ser_display")]
    pub listen: SocketAddr,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`); none disables it.
    #[serde(serialize_with = "ser_opt_display")]
    pub admin_listen: Option<SocketAddr>,
    /// The external origin (scheme, host, port).
    #[serde(serialize_with = "ser_origin")]
    pub public_url: Url,
    /// `public_url` was not set: it is `listen` with the scheme `tls` gives
    /// (a reload that keeps the running `listen` or `tls` derives it again).
    #[serde(skip)]
    pub public_url_derived: bool,
    /// Peers allowed to set `X-Forwarded-*` / `X-Original-URL`.
    #[serde(serialize_with = "ser_display_list")]
    pub trusted_proxies: Vec<IpNet>,
    /// TLS for the proxy listener.
    pub tls: Option<Tls>,
    /// Worker threads of the proxy (default: the number of cores).
    pub threads: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(serialize_with = "ser_duration")]
    pub shutdown_timeout: Duration,
    /// Connect timeout to an upstream.
    #[serde(serialize_with = "ser_duration")]
    pub upstream_connect_timeout: Duration,
    /// Read timeout on an upstream connection (idle time between bytes).
    #[serde(serialize_with = "ser_duration")]
    pub upstream_read_timeout: Duration,
    /// Most verified bearer tokens held per replica (0: verify every request).
    pub bearer_cache_entries: u64,
    /// The whole request head must arrive within this, however slowly it drips.
    #[serde(serialize_with = "ser_duration")]
    pub request_header_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    /// A client that takes no byte of an answer for this long is cut off
    /// (nginx's `send_timeout`; also either side of a WebSocket tunnel, and
    /// HTTP/2 answers waiting on the client's window while none moves).
    #[serde(serialize_with = "ser_duration")]
    pub send_timeout: Duration,
    /// Most client connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Most connections served at once from one client address (IPv6: one
    /// /64), trusted proxies exempt; more are closed at once. 0: no limit.
    pub max_connections_per_ip: usize,
    /// The log format `serve` writes, unless `--log-format` says otherwise;
    /// none: text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// `server.log_format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// The default of `server.idle_timeout`.
pub const DEFAULT_CONNECTION_IDLE: Duration = Duration::from_secs(60);

impl Server {
    /// Whether `ip` may set forwarding headers. An IPv4 peer on a dual-stack
    /// listener (`::ffff:a.b.c.d`) is matched as the IPv4 address it is.
    pub fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

/// `[server.tls]`
#[derive(Debug, Clone, Serialize)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// `[session]`
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// Decoded secrets; the first seals new cookies, all open them.
    pub secrets: Vec<Secret<Vec<u8>>>,
    /// Cookie name on http; `__Host-` is prefixed on https.
    pub cookie_name: String,
    /// Absolute lifetime of a session.
    #[serde(serialize_with = "ser_duration")]
    pub lifetime: Duration,
    /// A session unused this long ends (off when `None`); shorter than `lifetime`.
    #[serde(
        serialize_with = "ser_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Duration>,
    /// `cookie_domain`: the session cookie carries `Domain=` this (lower-case,
    /// no leading dot), so every host under it shares the session without a handoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_domain: Option<String>,
    /// How long a replica may trust a cached session or user record.
    #[serde(serialize_with = "ser_duration")]
    pub identity_cache_ttl: Duration,
}

/// `[store]`
#[derive(Debug, Clone, Serialize)]
pub struct Store {
    /// The database URL; its password is redacted when printed.
    #[serde(serialize_with = "ser_store_url")]
    pub url: Secret<String>,
}

fn ser_store_url<S: Serializer>(url: &Secret<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url_password(url.expose()))
}

/// Query parameters of a database URL that hold a secret (sqlx reads the
/// password from `?password=` too; `sslpassword` unlocks the client key).
const SECRET_URL_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// The URL with any password replaced (in the user part and in the query),
/// for printing.
pub fn redact_url_password(raw: &str) -> String {
    let Ok(mut u) = Url::parse(raw) else {
        return raw.to_string();
    };
    if u.password().is_some() {
        // set_password only fails for URLs that cannot have one, which this has.
        let _ = u.set_password(Some("redacted"));
    }
    let secret = |k: &str| {
        SECRET_URL_PARAMETERS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(k))
    };
    if u.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "redacted".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// The protocol or vendor of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Plain OAuth 2.0 with URLs set by hand.
    OAuth2,
    /// OAuth 1.0a, three-legged, HMAC-SHA1.
    OAuth1,
    /// OpenID Connect, usually through discovery.
    OpenIdConnect,
    /// Vendor presets: a source with URLs and mapping built in.
    Github,
    #[allow(missing_docs)]
    Google,
    #[allow(missing_docs)]
    Gitlab,
    #[allow(missing_docs)]
    Discord,
    #[allow(missing_docs)]
    EntraId,
    #[allow(missing_docs)]
    Okta,
    #[allow(missing_docs)]
    Twitter,
    #[allow(missing_docs)]
    Facebook,
    #[allow(missing_docs)]
    Apple,
    #[allow(missing_docs)]
    Keycloak,
    #[allow(missing_docs)]
    Twitch,
    #[allow(missing_docs)]
    Reddit,
    #[allow(missing_docs)]
    Patreon,
    #[allow(missing_docs)]
    Mailcow,
    /// GitHub Actions OIDC tokens: machine-only, nobody signs in through it.
    #[serde(rename = "github-actions")]
    GithubActions,
    #[allow(missing_docs)]
    Slack,
    #[allow(missing_docs)]
    Wechat,
}

impl SourceKind {
    /// Every kind with the name it has in the file.
    pub const ALL: &'static [(&'static str, SourceKind)] = &[
        ("oauth2", SourceKind::OAuth2),
        ("oauth1", SourceKind::OAuth1),
        ("openidconnect", SourceKind::OpenIdConnect),
        ("github", SourceKind::Github),
        ("google", SourceKind::Google),
        ("gitlab", SourceKind::Gitlab),
        ("discord", SourceKind::Discord),
        ("entraid", SourceKind::EntraId),
        ("okta", SourceKind::Okta),
        ("twitter", SourceKind::Twitter),
        ("facebook", SourceKind::Facebook),
        ("apple", SourceKind::Apple),
        ("keycloak", SourceKind::Keycloak),
        ("twitch", SourceKind::Twitch),
        ("reddit", SourceKind::Reddit),
        ("patreon", SourceKind::Patreon),
        ("mailcow", SourceKind::Mailcow),
        ("github-actions", SourceKind::GithubActions),
        ("slack", SourceKind::Slack),
        ("wechat", SourceKind::Wechat),
    ];
}

/// `pkce`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Pkce {
    /// No PKCE.
    #[serde(rename = "none")]
    None,
    /// `plain` (only for providers that cannot do S256).
    #[serde(rename = "plain")]
    Plain,
    /// `S256`, the default.
    S256,
}

/// `token_auth_method`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    /// HTTP Basic with the client id and secret.
    ClientSecretBasic,
    /// Client id and secret in the form body.
    ClientSecretPost,
}

/// `user_matching_mode`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserMatchingMode {
    /// Match only by the source's identifier; otherwise enroll.
    Identifier,
    /// Link to the user with the same (verified) email, else enroll.
    EmailLink,
    /// Refuse when a user has the same email, else enroll.
    EmailDeny,
    /// Link to the user with the same username, else enroll.
    UsernameLink,
    /// Refuse when a user has the same username, else enroll.
    UsernameDeny,
}

/// One `[[source]]`.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// `[a-z0-9-]+`, unique; names the callback URL.
    pub slug: String,
    /// Shown on the sign-in button.
    pub name: String,
    /// Protocol or vendor.
    #[serde(rename = "type")]
    pub kind: SourceKind,
    /// Client id; a source without one serves machine tokens only.
    pub consumer_key: Option<String>,
    /// Client secret (from `consumer_secret` or `consumer_secret_file`).
    pub consumer_secret: Option<Secret<String>>,
    /// OIDC discovery document URL.
    #[serde(serialize_with = "ser_opt_display")]
    pub oidc_well_known_url: Option<Url>,
    /// Authorization endpoint set by hand (wins over discovery).
    #[serde(serialize_with = "ser_opt_display")]
    pub authorization_url: Option<Url>,
    /// Token endpoint set by hand (wins over discovery).
    #[serde(serialize_with = "ser_opt_display")]
    pub access_token_url: Option<Url>,
    /// Profile / userinfo endpoint set by hand (wins over discovery).
    #[serde(serialize_with = "ser_opt_display")]
    pub profile_url: Option<Url>,
    /// OAuth 1.0a request token endpoint.
    #[serde(serialize_with = "ser_opt_display")]
    pub request_token_url: Option<Url>,
    /// JWKS URL set by hand (wins over discovery).
    #[serde(serialize_with = "ser_opt_display")]
    pub oidc_jwks_url: Option<Url>,
    /// Keys of the URLs above that the vendor preset gave, not the config:
    /// they win over discovery too, but nobody set them by hand.
    #[serde(skip)]
    pub preset_urls: Vec<&'static str>,
    /// Inline JWKS document.
    pub oidc_jwks: Option<String>,
    /// Scopes requested at sign-in.
    pub scopes: Vec<String>,
    /// PKCE method.
    pub pkce: Pkce,
    /// How the token request authenticates.
    pub token_auth_method: TokenAuthMethod,
    /// How a new identity is matched to existing users.
    pub user_matching_mode: UserMatchingMode,
    /// Whether new users may enroll through this source.
    pub enroll: bool,
    /// Treat the source's emails as verified even without `email_verified`.
    pub trust_email: bool,
    /// Claim mapping: local field -> dotted path in the profile JSON.
    pub claims: BTreeMap<String, String>,
    /// Extra query parameters on the authorization URL.
    pub authorize_params: BTreeMap<String, String>,
    /// Expected `iss`; from discovery when unset.
    pub issuer: Option<String>,
    /// Algorithms allowed for machine tokens (empty: the JWK's own), parsed
    /// once by validation: asymmetric only.
    pub jwt_algorithms: Vec<jsonwebtoken::Algorithm>,
    /// Reject machine tokens whose `iat` is older than this.
    #[serde(serialize_with = "ser_opt_duration")]
    pub jwt_max_age: Option<Duration>,
    /// Extra PEM CA trusted for this source's URLs, besides the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Key refresh interval when the JWKS response sets no `max-age`.
    #[serde(serialize_with = "ser_duration")]
    pub jwks_cache_ttl: Duration,
    /// How long the last good keys are served while refreshes fail.
    #[serde(serialize_with = "ser_duration")]
    pub jwks_max_stale: Duration,
    /// Least time between two request-caused JWKS fetches (unknown `kid`).
    #[serde(serialize_with = "ser_duration")]
    pub jwks_cooldown: Duration,
    /// Vendor presets: the vendor's base URL (Okta org or authorization
    /// server, Keycloak realm, Mailcow server, GitLab instance).
    pub base_url: Option<String>,
    /// Entra ID: the tenant id or domain in the URLs.
    pub tenant: Option<String>,
    /// Apple: the Apple Developer team id (`iss` of the client secret).
    pub team_id: Option<String>,
    /// Apple: the id of the Sign in with Apple key (`kid` of the client secret).
    pub key_id: Option<String>,
    /// Apple: the `.p8` private key (PEM) that signs the client secret.
    pub private_key: Option<Secret<String>>,
    /// The vendor preset this source starts from, if any.
    #[serde(skip)]
    pub preset: Option<&'static crate::config::presets::Preset>,
    /// `[[source.policy]]`
    #[serde(rename = "policy")]
    pub policies: Vec<Policy>,
}

impl Source {
    /// Whether sign-in validates an ID token: `openidconnect` and the OIDC vendor presets.
    pub fn is_oidc(&self) -> bool {
        self.kind == SourceKind::OpenIdConnect
            || self
                .preset
                .is_some_and(|p| p.protocol == crate::config::presets::Protocol::OpenIdConnect)
    }

    /// Whether people can sign in through this source (it has a client id).
    pub fn is_login(&self) -> bool {
        self.consumer_key.is_some()
    }

    /// How this source's keys are kept fresh.
    pub fn jwks_freshness(&self) -> super::jwks_freshness::Freshness {
        super::jwks_freshness::Freshness {
            ttl: self.jwks_cache_ttl,
            max_stale: self.jwks_max_stale,
            cooldown: self.jwks_cooldown,
        }
    }
}

/// What a policy rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    /// Signing in with an existing connection.
    Authenticate,
    /// Creating a new user.
    Enroll,
    /// Adding a connection to an existing user.
    Link,
    /// Reaching an app.
    Access,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The rule allows when it matches.
    Allow,
    /// The rule refuses when it matches; deny wins.
    Deny,
}

/// One `[[source.policy]]` or `[[app.policy]]`.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    /// The actions this rule governs.
    pub on: Vec<PolicyAction>,
    /// Allow or deny.
    pub effect: Effect,
    /// Matches users whose email is in one of these domains.
    pub email_domains: Vec<String>,
    /// Matches users in any of these groups.
    pub groups: Vec<String>,
    /// Matches these usernames.
    pub users: Vec<String>,
    /// A CEL expression over `{user, claims, source, request}`, compiled.
    pub expression: Option<super::expression::Expression>,
    /// Shown to the person on refusal.
    pub message: Option<String>,
    /// For app rules: only paths under this prefix.
    pub path_prefix: Option<String>,
}

/// One `[[app]]`.
#[derive(Debug, Clone, Serialize)]
pub struct App {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Lower-case host to match, without port; none matches any host.
    pub host: Option<String>,
    /// Path prefix to match (`/` matches everything).
    pub path_prefix: String,
    /// Where requests are forwarded.
    pub upstream: Upstream,
    /// Sources offered on the sign-in page.
    pub sources: Vec<String>,
    /// Sources whose JWKS authenticate bearer JWTs.
    pub jwt_sources: Vec<String>,
    /// Accepted `aud` values of bearer JWTs (empty: not checked).
    pub jwt_audiences: Vec<String>,
    /// Pass a verified bearer token on to the upstream (default: removed, docs/security.md JWT-27).
    pub forward_bearer_token: bool,
    /// Send `X-Portcullis-Assertion`, a signed JWT of the identity (keys at `/_auth/jwks.json`).
    pub identity_assertion: bool,
    /// Send `X-Forwarded-Access-Token`: the session's access token from its
    /// source, refreshed before it expires (sessions keep the tokens, sealed).
    pub pass_access_token: bool,
    /// Extra PEM CA trusted for this app's `https://` upstream, besides the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Path prefixes served without authentication.
    pub public_paths: Vec<String>,
    /// `claim_headers`: headers to the upstream from claims, by lower-case
    /// header name; every client copy of these names is removed.
    pub claim_headers: BTreeMap<String, String>,
    /// `[[app.policy]]`
    #[serde(rename = "policy")]
    pub policies: Vec<Policy>,
}

/// An app's upstream origin; printed as its URL.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// As written: `http://127.0.0.1:3000`.
    pub url: Url,
    /// Host name or IP literal.
    pub host: String,
    /// Port (the scheme's default when not written).
    pub port: u16,
    /// Whether the upstream speaks TLS.
    pub tls: bool,
}

impl Serialize for Upstream {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.url.origin().ascii_serialization())
    }
}

fn ser_origin<S: Serializer>(u: &Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&u.origin().ascii_serialization())
}

/// Whether `host` is `domain` or a subdomain of it (`wiki.corp.example`
/// under `corp.example`, never `evilcorp.example`); both lower-case.
pub fn host_under(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Whether `path` falls under `prefix`: a prefix ending in `/` covers what is
/// below it; any other prefix covers itself and what is below it, never a
/// longer name (`/healthz` covers `/healthz/x`, not `/healthzx`).
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_match_stops_at_segment_boundaries() {
        assert!(path_has_prefix("/healthz", "/healthz"));
        assert!(path_has_prefix("/healthz/deep", "/healthz"));
        assert!(!path_has_prefix("/healthzx", "/healthz"));
        assert!(path_has_prefix("/static/app.js", "/static/"));
        assert!(!path_has_prefix("/static", "/static/"));
        assert!(path_has_prefix("/anything", "/"));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(
            redact_url_password("postgres://u:pw@db/x"),
            "postgres://u:redacted@db/x"
        );
        // sqlx reads a password from the query too.
        assert_eq!(
            redact_url_password(
                "postgres://u@db/x?sslmode=require&Password=hunter2&sslpassword=k3y"
            ),
            "postgres://u@db/x?sslmode=require&Password=redacted&sslpassword=redacted"
        );
        assert_eq!(redact_url_password("sqlite::memory:"), "sqlite::memory:");
    }
}
