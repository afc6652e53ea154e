//! `[[app]]`: an upstream, who may reach it, and what it is told.

use std::collections::BTreeMap;

use super::parse_http_url;
use super::policy::policies;
use super::Check;
use crate::config::error::KeyPath;
use crate::config::header_names;
use crate::config::model::*;
use crate::config::raw::*;

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

pub(super) fn app(c: &mut Check<'_>, at: &KeyPath, raw: RawApp, sources: &[Source]) -> Option<App> {
    let name = match raw.name {
        Some(n) if !n.trim().is_empty() => Some(n),
        _ => {
            c.fail(at.key("name"), "missing: every app needs a unique name");
            None
        }
    };
    let host = raw.host.map(|h| h.to_ascii_lowercase());
    if let Some(h) = &host {
        check_host(c, at, h);
    }
    let path_prefix = raw.path_prefix.unwrap_or_else(|| "/".to_string());
    check_prefix(c, at.key("path_prefix"), &path_prefix);
    let upstream = upstream(c, at, raw.upstream.as_deref());
    let app_sources = sign_in_sources(c, at, raw.sources, sources);
    let jwt_sources = raw.jwt_sources.unwrap_or_default();
    check_jwt_sources(c, at, &jwt_sources, sources);
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
    let upstream_ca_file = raw
        .upstream_ca_file
        .as_deref()
        .and_then(|f| upstream_ca_file(c, at, f, upstream.as_ref()));
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

/// `host`: a host name alone, without scheme, port or path.
fn check_host(c: &mut Check<'_>, at: &KeyPath, h: &str) {
    let ok = !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !h.starts_with('.')
        && !h.ends_with('.');
    if !ok {
        c.fail(
            at.key("host"),
            format!("`{h}` must be a host name without scheme, port or path, e.g. wiki.example"),
        );
    }
}

/// `upstream`: an http(s) origin, without path, query or user.
fn upstream(c: &mut Check<'_>, at: &KeyPath, raw: Option<&str>) -> Option<Upstream> {
    let Some(u) = raw else {
        c.fail(
            at.key("upstream"),
            "missing: e.g. upstream = \"http://127.0.0.1:3000\"",
        );
        return None;
    };
    let url = match parse_http_url(u) {
        Err(e) => {
            c.fail(at.key("upstream"), e);
            return None;
        }
        Ok(url) => url,
    };
    if (url.path() != "/" && !url.path().is_empty())
        || url.query().is_some()
        || !url.username().is_empty()
    {
        c.fail(
            at.key("upstream"),
            format!(
                "`{u}` must be an origin only (scheme, host, port), without path, query or user"
            ),
        );
        return None;
    }
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

/// `sources`: the sign-in sources people may use for this app, each defined
/// and one somebody can sign in through; by default every such source.
fn sign_in_sources(
    c: &mut Check<'_>,
    at: &KeyPath,
    raw: Option<Vec<String>>,
    sources: &[Source],
) -> Vec<String> {
    let Some(list) = raw else {
        return sources
            .iter()
            .filter(|s| s.is_login())
            .map(|s| s.slug.clone())
            .collect();
    };
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

/// `jwt_sources`: each a defined source with an issuer and keys.
fn check_jwt_sources(c: &mut Check<'_>, at: &KeyPath, jwt_sources: &[String], sources: &[Source]) {
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
}

/// `upstream_ca_file`: for an https upstream only, a PEM file of certificates.
fn upstream_ca_file(
    c: &mut Check<'_>,
    at: &KeyPath,
    f: &str,
    upstream: Option<&Upstream>,
) -> Option<std::path::PathBuf> {
    let key = at.key("upstream_ca_file");
    if upstream.is_some_and(|u| !u.tls) {
        c.fail(
            key.clone(),
            "set only for an https:// upstream: a plain http upstream has no certificate to check",
        );
    }
    let path = c.resolve(f);
    match crate::config::pem::read_certificates(&path) {
        Ok(_) => Some(path),
        Err(e) => {
            c.fail(key, e.to_string());
            None
        }
    }
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
/// `Host`, credentials, and the fields browsers and clients send that apps
/// read (every app's claim header names are stripped from every request:
/// one app's `Origin` or `Range` would take it from all the others; all
/// compared lower-case with `_` read as `-`).
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
    "origin",
    "referer",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "accept-charset",
    "last-event-id",
    "priority",
    "upgrade-insecure-requests",
    "dnt",
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "cache-control",
    "pragma",
    "x-requested-with",
];

/// Prefixes of browser-controlled fields (`Sec-Fetch-*`,
/// `Sec-WebSocket-*`, `Sec-CH-*`, CORS preflight's
/// `Access-Control-Request-*`) `claim_headers` may not use either.
const RESERVED_CLAIM_PREFIXES: &[&str] = &["sec-", "access-control-"];

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
                .chain(RESERVED_CLAIM_PREFIXES)
                .any(|p| canonical.starts_with(p))
        {
            c.fail(
                key,
                format!("`{name}` is reserved (hop-by-hop, Host, Cookie, Authorization, a field browsers send such as Origin or Sec-*, or a header the gateway sets itself); choose another name such as X-Claim-Team"),
            );
            continue;
        }
        if path.trim().is_empty() {
            c.fail(key, "empty claim path: name a claim, e.g. \"org.team\"");
            continue;
        }
        // As a source's `claims`: a path that does not parse would find nothing.
        if let Err(e) = crate::config::claim_path::parse_path(&path) {
            c.fail(key, format!("`{path}`: {e}"));
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
