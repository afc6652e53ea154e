//! The data path on hyper: each request runs the same phases (`decide`,
//! bearer or cookie, access rules, `/_auth/*`, forward), each reading facts
//! out of the request, calling the pure checks below, and acting on the answer.

pub mod access;
pub mod body;
pub mod ctx;
pub mod exchange;
pub mod framing;
pub mod h2_heads;
pub mod head_tap;
pub mod keepalive;
mod marks;
pub mod pages;
pub mod pool;
pub mod proxy;
pub mod rescue;
pub mod routes;
pub mod server;
pub mod tunnel;
pub mod upstream;
pub mod upstream_h1;

use std::convert::Infallible;
use std::mem::take;
use std::sync::Arc;

use hyper::body::Incoming;

use crate::config::{path_has_prefix, Config};
use crate::metrics::Metrics;
use crate::principal::{Principal, PrincipalKind};
use crate::routing::{request_host_into, Router};
use crate::session::service::{Sessions, StoreUnavailable};
use crate::source::Sources;
use body::Body;
use ctx::{Ctx, Outcome};
use exchange::Exchange;
use framing::FramingError;
use rescue::Rejection;

/// Everything the request path reads, built at start and again by each
/// accepted reload; a request holds the one it started with.
pub struct State {
    /// The validated config.
    pub config: Config,
    /// App routing table.
    pub router: Router,
    /// The sign-in host and the app hosts: where an absolute `rd` may lead.
    pub origins: crate::redirect::Origins,
    /// One upstream client per app, in config order.
    pub upstreams: Vec<proxy::Target>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// `https` when the listener has TLS.
    pub scheme: &'static str,
    /// The identity providers.
    pub sources: Arc<Sources>,
    /// Session cookies, cache and store.
    pub sessions: Arc<Sessions>,
    /// Each app's `[[app.policy]]` rules, compiled, in config order.
    pub app_rules: Vec<crate::policy::Rules>,
    /// Every app's `claim_headers` names (canonical, once each): client
    /// copies go from every request, whichever app it is for.
    pub claim_header_names: Vec<String>,
    /// Machine-token verification and its cache.
    pub bearer: Arc<crate::bearer::Bearer>,
    /// Identity assertions: keys derived from the session secrets, and the cache.
    pub assertions: crate::assertion::Assertions,
    /// Where the access lines go.
    pub access: access::Sink,
    /// Where audit events go (`portcullis::audit`) and their counter.
    pub audit: crate::audit::Audit,
    /// The wall clock: expiry, idle time and token times are read here.
    pub clock: crate::clock::Clock,
}

/// The token of `Authorization: Bearer …`, if the request has one. Two
/// `Authorization` lines with a bearer among them, or a bearer header beside
/// an `access_token` query parameter, are ambiguous: refused (JWT-26). A token
/// only in the query or a form is never read (JWT-25).
pub(crate) fn bearer_token(session: &Exchange) -> Result<Option<&str>, Rejection> {
    let req = session.req_header();
    fn bearer(v: &http::HeaderValue) -> Option<&str> {
        // A tab after the scheme is no valid credential (RFC 6750 §2.1 has one
        // space), but an upstream splitting on any blank would read a token
        // the gateway never checked: it is a bearer token here, and checked.
        let Ok(value) = v.to_str() else {
            // Not visible ASCII: `Bearer` then a byte no scheme name holds (a
            // no-break space to an upstream reading Latin-1) is a bearer
            // credential still, an unreadable one: the empty token, refused.
            let b = v.as_bytes();
            let tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
            let named = b
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer"));
            return (named && b.get(6).is_some_and(|&c| !tchar(c))).then_some("");
        };
        // `Bearer` alone (HTTP/1 trims the blank after it) names the scheme
        // with an empty token: a bad bearer credential, never none at all,
        // so a session cookie beside it does not decide (PRX-29).
        let (scheme, token) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
    let mut lines = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(first) = lines.next() else {
        return Ok(None);
    };
    let mut rest = lines.peekable();
    let token = bearer(first);
    let ambiguous = if rest.peek().is_none() {
        token.is_some() && has_access_token(req.uri.query())
    } else {
        token.is_some() || rest.any(|v| bearer(v).is_some())
    };
    if ambiguous {
        return Err(two_bearer_tokens());
    }
    Ok(token)
}

/// Whether `query` carries an `access_token` parameter (JWT-26: beside a
/// bearer header, an app may read the other one).
pub(crate) fn has_access_token(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token")
    })
}

/// The refusal of a request carrying more than one bearer token (JWT-26).
pub(crate) fn two_bearer_tokens() -> Rejection {
    Rejection::InvalidRequest {
        description: "send exactly one bearer token, in one Authorization header".into(),
    }
}

/// The principal of the request's bearer token for app `app`; a token decides
/// alone (PRX-29): `Err` is the RFC 6750 refusal.
pub async fn authenticate_bearer(
    state: &State,
    session: &Exchange,
    app: Option<usize>,
) -> Option<Result<Arc<Principal>, Rejection>> {
    let token = match bearer_token(session) {
        Ok(t) => t?,
        Err(refusal) => return Some(Err(refusal)),
    };
    let Some((index, app)) = app.and_then(|i| state.config.apps.get(i).map(|a| (i, a))) else {
        return Some(Err(Rejection::InvalidToken {
            description: NO_BEARER_APP.into(),
        }));
    };
    let verified = verify_logged(state, index, app, token, state.clock.now_unix()).await;
    Some(verified.ok_or_else(|| Rejection::InvalidToken {
        description: INVALID_TOKEN.into(),
    }))
}

/// `token` verified for app `index`; a refusal's reason goes to the log
/// only (JWT-29: one description for every reason, no oracle).
async fn verify_logged(
    state: &State,
    index: usize,
    app: &crate::config::App,
    token: &str,
    now: u64,
) -> Option<Arc<Principal>> {
    match state.bearer.verify(index, app, token, now).await {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::info!(reason = %e, app = %app.name, "bearer token refused");
            None
        }
    }
}

/// The bearer check of `/_auth/userinfo`, which belongs to no app's paths:
/// the token is verified for each app of `host` that takes bearer tokens
/// and is named in its `aud` (unverified, so that the others cost no
/// signature check), most specific first; the first that accepts it
/// answers. `None` without a bearer token.
pub async fn authenticate_bearer_on_host(
    state: &State,
    session: &Exchange,
    host: Option<&str>,
) -> Option<Result<Arc<Principal>, Rejection>> {
    let token = match bearer_token(session) {
        Ok(t) => t?,
        Err(refusal) => return Some(Err(refusal)),
    };
    let now = state.clock.now_unix();
    let claims = crate::bearer::unverified_claims(token);
    let mut description = NO_BEARER_APP;
    for index in state.router.on_host(host) {
        let Some(app) = state.config.apps.get(index) else {
            continue;
        };
        if app.jwt_sources.is_empty() {
            continue;
        }
        description = INVALID_TOKEN;
        let addressed = claims
            .as_ref()
            .is_some_and(|c| crate::bearer::audience_allowed(c, &app.jwt_audiences));
        if !addressed {
            continue;
        }
        if let Some(p) = verify_logged(state, index, app, token, now).await {
            return Some(Ok(p));
        }
    }
    Some(Err(Rejection::InvalidToken {
        description: description.into(),
    }))
}

/// The `error_description` of a bearer token sent where no app takes one.
const NO_BEARER_APP: &str = "no application here accepts bearer tokens";

/// The `error_description` of every refused bearer token, whatever the
/// reason: a description that differed per failure would tell a prober
/// which check its forgery passed (SECURITY JWT-29).
pub const INVALID_TOKEN: &str = "the access token is not valid";

/// The refusal for a principal an app's policy does not admit: RFC 6750
/// `insufficient_scope` for a machine, the access-denied page for a person.
pub(crate) fn refused_by_policy(p: &Principal, reason: String) -> Rejection {
    if p.kind == PrincipalKind::Bearer {
        Rejection::InsufficientScope { reason }
    } else {
        Rejection::Forbidden { reason }
    }
}

/// Where an access refusal is answered: a proxied request gets 403; forward
/// auth answers 200 or 401 only (docs/design.md, `/_auth/check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccessAsked {
    /// A request for the app itself.
    Proxied,
    /// `/_auth/check`, asked by the proxy in front.
    ForwardAuth,
}

/// Answers a request an app's access rules refused `p` (403 proxied, 401 to
/// forward auth, with the rule's `reason`), and writes its `refusal` audit
/// line (`access_denied`).
pub(crate) fn refuse_access(
    state: &State,
    session: &mut Exchange,
    ctx: &mut Ctx,
    p: &Principal,
    reason: String,
    asked: AccessAsked,
) {
    ctx.span.in_scope(|| tracing::info!(authz.decision = "deny", user = %p.user, request_id = %ctx.request_id, "access refused by policy"));
    let rejection = match asked {
        AccessAsked::Proxied => refused_by_policy(p, reason),
        AccessAsked::ForwardAuth => Rejection::CheckDenied {
            reason,
            bearer: p.kind == PrincipalKind::Bearer,
            sign_in: routes::check_sign_in(state, session, |rd| Rejection::Unauthenticated { rd }),
        },
    };
    state.audit.emit(&crate::audit::Event {
        reason: Some(crate::audit::Reason::AccessDenied),
        source: Some(&p.source),
        user_id: p.user_id.as_deref(),
        username: Some(&p.user),
        status: Some(rejection.status()),
        ..audit_facts(state, ctx, crate::audit::Kind::Refusal)
    });
    rescue::respond(session, ctx, rejection);
}

impl State {
    /// Whether app `app`'s access rules let `who` make this request; `Err` has the message.
    pub fn access(
        &self,
        app: usize,
        who: &Principal,
        path: &str,
        method: &str,
        host: &str,
    ) -> Result<(), String> {
        let Some(rules) = self.app_rules.get(app) else {
            return Ok(());
        };
        let subject = crate::policy::Subject {
            username: &who.user,
            email: who.email.as_deref(),
            email_verified: who.email_verified,
            name: who.name.as_deref(),
            groups: &who.groups,
            claims: &who.claims,
            source: &who.source,
        };
        let request = crate::policy::Request { path, method, host };
        rules.check(crate::config::PolicyAction::Access, &subject, Some(request))
    }
}

/// Whether app `app` takes principal `p`: a token was already checked against
/// the app's `jwt_sources`; a session counts only when it was signed in
/// through one of the app's `sources`. A session made for another app that
/// shares the cookie (same host, a path prefix apart, or `cookie_domain`) is
/// no session here, so a source one app offers cannot open another app.
pub fn app_takes(state: &State, app: Option<usize>, p: &Principal) -> bool {
    p.kind == PrincipalKind::Bearer
        || app
            .and_then(|i| state.config.apps.get(i))
            .is_none_or(|a| a.sources.contains(&p.source))
}

/// An audit event of `kind` with the request's facts: its id, app and client IP.
pub(crate) fn audit_facts<'a>(
    state: &'a State,
    ctx: &'a Ctx,
    kind: crate::audit::Kind,
) -> crate::audit::Event<'a> {
    crate::audit::Event {
        request_id: Some(ctx.request_id.as_str()),
        app: ctx
            .app
            .and_then(|i| state.config.apps.get(i))
            .map(|a| a.name.as_str()),
        client_ip: ctx.client_ip,
        ..crate::audit::Event::new(kind)
    }
}

/// The principal of the request's session cookie on `host`, if any; a cookie
/// sealed with an older secret gets a re-sealed copy queued in `ctx`. For an
/// app with `pass_access_token` (`pass_token`), the session's access token
/// goes to `ctx` (refreshed if due); a session whose token cannot be renewed
/// ends here, and the request is treated as signed out. `Err`: a session
/// cookie whose record the store could not be asked for (answer 503).
pub async fn authenticate(
    state: &State,
    session: &Exchange,
    ctx: &mut Ctx,
    host: &str,
    pass_token: bool,
) -> Result<Option<Arc<Principal>>, StoreUnavailable> {
    let now = state.clock.now_unix();
    let read = {
        let headers = session.req_header().headers.get_all(http::header::COOKIE);
        state.sessions.read(
            || headers.iter().map(http::HeaderValue::as_bytes),
            host,
            now,
        )
    };
    let Some((claims, stale)) = read else {
        return Ok(None);
    };
    let Some(principal) = state.sessions.principal(&claims, now).await? else {
        ctx.session_ended = state.sessions.ended(&claims.sid);
        return Ok(None);
    };
    if pass_token {
        use crate::session::service::AccessToken;
        // Boxed: a refresh at the provider is a large future that most
        // requests never run (see `routes::handle` in `handle`).
        match Box::pin(
            state
                .sessions
                .access_token(&claims.sid, &state.sources, now),
        )
        .await
        {
            AccessToken::Token(t) => ctx.access_token = Some(t),
            AccessToken::Absent => {}
            AccessToken::Ended(why) => {
                // `None`: ended by something else (a sign-out, `users disable`)
                // while this request waited; that has its own audit line.
                if why.is_some() {
                    state.audit.emit(&crate::audit::Event {
                        cause: Some("access_token_not_renewed"),
                        user_id: principal.user_id.as_deref(),
                        username: Some(&principal.user),
                        source: Some(&principal.source),
                        ..audit_facts(state, ctx, crate::audit::Kind::Revocation)
                    });
                }
                ctx.session_ended = why;
                return Ok(None);
            }
        }
    }
    if stale {
        ctx.reseal = state.sessions.reseal(&claims, now);
    }
    Ok(Some(principal))
}

/// The refusal for a request whose session this replica just ended (its
/// token could not be renewed): sign in again, told why.
pub(crate) fn session_ended(
    state: &State,
    rd: String,
    ended: crate::session::ended::SessionEnded,
) -> Rejection {
    let provider = state
        .config
        .source(&ended.source)
        .map_or_else(|| "the identity provider".to_string(), |s| s.name.clone());
    Rejection::SessionEnded {
        rd,
        description: ended.reason.wording(&provider),
        ended,
    }
}

/// What to do with a request once its head has been read.
enum Decision {
    /// Forward it to the routed app's upstream without authentication.
    Public,
    /// Authenticate it, then forward it.
    Protected,
    /// A gateway endpoint.
    Auth(routes::AuthRoute),
    /// Answer it with this refusal.
    Reject(Rejection),
}

/// The host the request is routed on (written into `buffer`): its
/// authority (absolute-form, or HTTP/2's), else its `Host`; and whether the
/// target is in HTTP/1.1 absolute form (over HTTP/2 every request has an
/// authority).
fn read_host(
    req: &http::request::Parts,
    buffer: String,
) -> Result<(Option<String>, bool), FramingError> {
    let invalid = || FramingError::BadFraming("invalid Host");
    // A Host that is not visible ASCII is refused, not read as no Host:
    // the upstream would still get it (PRX-14).
    let host_header = match req.headers.get(http::header::HOST).map(|v| v.to_str()) {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => return Err(invalid()),
    };
    let absolute_form = req.version < http::Version::HTTP_2 && req.uri.authority().is_some();
    // The target's host decides, but a Host beside it must still be one
    // (PRX-14: `Host: wiki.example:@evil.com` is refused either way).
    if absolute_form
        && host_header.is_some_and(|h| crate::routing::request_host(None, Some(h)).is_err())
    {
        return Err(invalid());
    }
    let host = request_host_into(req.uri.authority().map(|a| a.as_str()), host_header, buffer)
        .map_err(|_| invalid())?;
    Ok((host, absolute_form))
}

/// The routing decision for a request, from its head alone.
fn decide(
    state: &State,
    session: &Exchange,
    ctx: &mut Ctx,
    raw: Option<RawHeadSeen<'_>>,
) -> Decision {
    let req = session.req_header();
    if let Err(e) = check_head(session, raw) {
        return Decision::Reject(Rejection::Framing(e));
    }
    if let Err(e) = framing::check_connection(&req.headers) {
        return Decision::Reject(Rejection::Framing(e));
    }
    if req.method == http::Method::CONNECT || req.method == http::Method::TRACE {
        return Decision::Reject(Rejection::Framing(FramingError::BadFraming(
            "CONNECT and TRACE are not served",
        )));
    }
    // One canonical path: every decision below reads `decision`, the
    // upstream receives `forward` (PRX-06).
    let canonical = match framing::check_path_into(req.uri.path(), take(&mut ctx.spare.path)) {
        Ok(c) => c,
        Err(e) => return Decision::Reject(Rejection::Framing(e)),
    };
    let plain = canonical.is_plain();
    let path = ctx.path.insert(canonical).decision();
    let absolute_form = match read_host(req, take(&mut ctx.spare.host)) {
        Ok((host, absolute_form)) => {
            ctx.host = host;
            absolute_form
        }
        Err(e) => return Decision::Reject(Rejection::Framing(e)),
    };
    let host = ctx.host.as_deref();
    if routes::is_auth_path(path) {
        ctx.app = state.router.route_host(host);
        // An endpoint is named exactly, as sent: `/_auth/check;x` (or `%3B`,
        // `%2F`, `//`, `%63`) is under `/_auth/`, never an app's, but names
        // no endpoint, so a proxy in front that keeps browsers off
        // `/_auth/check` is not bypassed by a spelling it passes on (SES-17).
        let route = if plain && path == req.uri.path() {
            routes::classify(path)
        } else {
            routes::AuthRoute::Unknown
        };
        // The sign-in host answers /_auth/* (callbacks) even when no app is
        // served there. Forward auth answers on any host: Traefik (and nginx
        // without `proxy_set_header Host`) send the check with its own
        // address as `Host`, and name the request asked about in
        // `X-Forwarded-Host`; `check` decides on that target.
        let sign_in_host = host.is_some_and(|h| state.origins.is_sign_in_host(h));
        if ctx.app.is_none() && !sign_in_host && route != routes::AuthRoute::Check {
            return Decision::Reject(Rejection::NoApp);
        }
        return Decision::Auth(route);
    }
    let Some(index) = state.router.route(host, path) else {
        // PRX-15: an absolute-form target naming a host the config does not
        // name asks for a forward proxy, which this is not: 400, not 404 (a
        // path no app of a named host covers stays a 404).
        let named =
            host.is_some_and(|h| state.origins.is_app_host(h) || state.origins.is_sign_in_host(h));
        if absolute_form && !named {
            return Decision::Reject(Rejection::Framing(FramingError::BadFraming(
                "an absolute-form target names a host no app serves (this is no forward proxy)",
            )));
        }
        return Decision::Reject(Rejection::NoApp);
    };
    let Some(app) = state.config.apps.get(index) else {
        return Decision::Reject(Rejection::NoApp);
    };
    if app.public_paths.iter().any(|p| path_has_prefix(path, p)) {
        ctx.app = Some(index);
        return Decision::Public;
    }
    ctx.app = Some(index);
    Decision::Protected
}

/// Whether a request's `Upgrade` names `websocket` (asks to become a WebSocket).
pub(crate) fn asks_websocket(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Whether a WebSocket upgrade carried by ambient credentials (the session
/// cookie) comes from a page of another site (PRX-17, cross-site WebSocket
/// hijacking): its `Origin` names neither the host the request was sent to
/// nor a host `is_ours` knows (the sign-in host, an app host). Requests that
/// are not WebSocket upgrades, and upgrades without `Origin` (no browser
/// sends those), are not foreign.
pub fn foreign_websocket_origin(
    headers: &http::HeaderMap,
    sent_host: Option<&str>,
    is_ours: impl Fn(&str) -> bool,
) -> bool {
    if !asks_websocket(headers) {
        return false;
    }
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return false;
    };
    let Some(origin) = origin.to_str().ok().and_then(|o| url::Url::parse(o).ok()) else {
        // `null` or garbage: an opaque origin is never ours.
        return true;
    };
    let Some(host) = origin.host_str().map(str::to_ascii_lowercase) else {
        return true;
    };
    let authority = match origin.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    // Compared once normalised (case, one trailing dot): a browser that sent
    // `Host: GW.example.` is on the page it names. A port stays as written
    // on both sides (`Url` drops the scheme's default from `Origin`).
    let same_host = sent_host.is_some_and(|h| crate::routing::same_authority(h, &authority, 0));
    !(same_host || is_ours(&host))
}

/// [`foreign_websocket_origin`] for this request and this config's hosts.
fn foreign_websocket(state: &State, req: &http::request::Parts) -> bool {
    // Most requests are no WebSocket handshake: nothing more is looked up.
    if !asks_websocket(&req.headers) {
        return false;
    }
    let config = &state.config;
    let sent_host = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok());
    foreign_websocket_origin(&req.headers, sent_host, |host| {
        config.server.public_url.host_str() == Some(host)
            || config.apps.iter().any(|a| a.host.as_deref() == Some(host))
    })
}

/// What the connection's head tap holds for a request: `None` on a connection
/// without a tap (HTTP/2), `Some(None)` when the tap has no head for it.
type RawHeadSeen<'a> = Option<&'a head_tap::RawHead>;

/// The framing verdict on the raw head a connection's tap copied for a
/// request. The tap stops only where hyper serves no more requests (garbage,
/// a framing it refuses or that is answered 400 and closed, an upgrade), and
/// the fuzz target `request_stream` holds it to hyper's framing; a request it
/// has no head for means the two disagree on where requests begin, and the
/// head hyper parsed may not be the one the client sent: 400 and close.
fn check_tapped(raw: RawHeadSeen<'_>) -> Result<(), FramingError> {
    match raw {
        Some(head) => head.check(),
        None => {
            // A bug of the tap's (or a hyper that frames otherwise), never the client's.
            tracing::warn!("the head tap has no head for a request hyper parsed; refused");
            Err(FramingError::BadFraming("no raw head for this request"))
        }
    }
}

/// Framing checks for HTTP/1: on the raw head as the client sent it (the
/// connection's tap copies it off the wire, so CL+TE and duplicate
/// Content-Length, which hyper silently repairs, are still refused), else on
/// what hyper parsed; for HTTP/2 the header limits and the host rules.
fn check_head(session: &Exchange, raw: Option<RawHeadSeen<'_>>) -> Result<(), FramingError> {
    let req = session.req_header();
    let http10 = req.version <= http::Version::HTTP_10;
    if req.version <= http::Version::HTTP_11 {
        return match raw {
            Some(raw) => check_tapped(raw),
            None => framing::check_parsed_head(req, http10),
        };
    }
    let h = &req.headers;
    let bytes: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if h.len() > framing::MAX_HEADER_FIELDS || bytes > framing::MAX_HEADER_BYTES {
        return Err(FramingError::HeadersTooLarge);
    }
    // HTTP/2 names the host in `:authority`; a `host` field beside it must
    // name the same one once normalised (RFC 9113 §8.3.1: case, default
    // port), and one host is named, as on HTTP/1 (PRX-14).
    let mut hosts = h.get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(FramingError::BadFraming("more than one Host"));
    }
    let default_port = if req.uri.scheme() == Some(&http::uri::Scheme::HTTP) {
        80
    } else {
        443
    };
    match (req.uri.authority(), host.map(|v| v.to_str())) {
        (None, None) => Err(FramingError::BadFraming("missing :authority and Host")),
        (_, Some(Err(_))) => Err(FramingError::BadFraming("invalid Host")),
        (Some(a), Some(Ok(host)))
            if !crate::routing::same_authority(a.as_str(), host, default_port) =>
        {
            Err(FramingError::BadFraming("Host differs from :authority"))
        }
        _ => Ok(()),
    }
}

/// A request's exchange and context, its span and its client's address
/// (after `trusted_proxies`), before anything is decided: unanswered.
fn begin<'a>(
    state: &'a State,
    conn: &server::Conn,
    request: http::Request<Incoming>,
) -> Unanswered<'a> {
    let mut ctx = Ctx::with_buffers(conn.lend_buffers());
    // Trust follows the config of this request, not the one the connection
    // opened under: a reload that removes a proxy reaches its open connections.
    let peer = exchange::Peer {
        addr: conn.client,
        trusted: state.config.server.is_trusted_proxy(conn.client.ip()),
    };
    let ex = Exchange::new(request, peer);
    // At debug, off by default: a span costs every request its creation and
    // records while nobody reads it. The access line and the warnings of a
    // request carry its request id instead (README, "Performance").
    ctx.span = tracing::debug_span!(
        "request",
        http.method = %ex.head.method,
        url.path = %ex.head.uri.path(),
        app.name = tracing::field::Empty,
        request_id = %ctx.request_id,
    );
    // Read now: forwarding moves the headers into the upstream request.
    let client_ip = access::client_ip(
        peer.addr.ip(),
        peer.trusted,
        || {
            ex.head
                .headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .map(http::HeaderValue::as_bytes)
        },
        |ip| state.config.server.is_trusted_proxy(ip),
    );
    ctx.client_ip = Some(client_ip);
    Unanswered {
        state,
        ex,
        ctx,
        client_ip,
        answered: false,
    }
}

/// Serves one request: the only entry point of the data path. The caller
/// counts it in flight on `conn` (over HTTP/1 until its answer's body is
/// handed over, over HTTP/2 until it answers).
pub async fn serve(
    state: Arc<State>,
    conn: Arc<server::Conn>,
    request: http::Request<Incoming>,
) -> Result<http::Response<Body>, Infallible> {
    // A client that leaves mid-request drops this future (and with it the
    // upstream request, PRX-24): the guard writes its access line then.
    let mut pending = begin(&state, &conn, request);
    let client_ip = pending.client_ip;
    let raw = conn.heads.as_ref().map(|h| h.pop());
    let error = handle(
        &state,
        &conn,
        &mut pending.ex,
        &mut pending.ctx,
        raw.as_ref().map(Option::as_ref),
    )
    .await
    .err();
    pending.answered = true;
    let ex = &mut pending.ex;
    let response = match ex.response.take() {
        Some(r) => r,
        None => {
            // Every path above answers; this only keeps the connection sane if one did not.
            let mut r = http::Response::new(body::empty());
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    };
    log(
        &state,
        &pending.ex,
        &pending.ctx,
        response.status().as_u16(),
        error,
        client_ip,
    );
    conn.take_back(pending.ctx.take_buffers());
    Ok(response)
}

/// A request being handled; dropped before it is answered (the client left
/// and hyper dropped its future), it still writes its one access line:
/// status 499, as nginx logs a client that closed first.
struct Unanswered<'a> {
    state: &'a State,
    ex: Exchange,
    ctx: Ctx,
    client_ip: std::net::IpAddr,
    answered: bool,
}

/// The status of the access line of a request whose client left before the answer (nginx's).
const CLIENT_CLOSED: u16 = 499;

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        // Unwinding from a bug is not the client's doing.
        let (status, error) = if std::thread::panicking() {
            (500, "Panic")
        } else {
            (CLIENT_CLOSED, "ClientClosed")
        };
        // The host is out of `ctx` while authentication runs (`handle`):
        // the request's own names it then.
        if self.ctx.host.is_none() {
            self.ctx.host = read_host(self.ex.req_header(), String::new())
                .ok()
                .and_then(|(host, _)| host);
        }
        let (ex, ctx) = (&self.ex, &self.ctx);
        log(self.state, ex, ctx, status, Some(error), self.client_ip);
    }
}

/// The phases of one request; `Err` names what failed, for the access line.
async fn handle(
    state: &Arc<State>,
    conn: &Arc<server::Conn>,
    session: &mut Exchange,
    ctx: &mut Ctx,
    raw: Option<RawHeadSeen<'_>>,
) -> Result<(), &'static str> {
    let decision = decide(state, session, ctx, raw);
    if let Some(app) = ctx.app.and_then(|i| state.config.apps.get(i)) {
        ctx.span.record("app.name", app.name.as_str());
    }
    match decision {
        Decision::Public => {
            ctx.outcome = Some(Outcome::Public);
        }
        Decision::Protected => {
            // Taken out of `ctx` (which `protected` borrows mutably) and put
            // back for the access line: the host is not copied per request.
            let host = ctx.host.take();
            let admitted =
                protected(state, session, ctx, host.as_deref().unwrap_or_default()).await;
            ctx.host = host;
            if !admitted {
                return Ok(());
            }
            ctx.outcome = Some(Outcome::Authenticated);
        }
        Decision::Auth(route) => {
            // Boxed: the gateway's own endpoints (sign-in, callback) make the
            // largest future, and hyper moves every request's future into place.
            let Err(e) = Box::pin(routes::handle(state, session, ctx, route)).await else {
                return Ok(());
            };
            let (refusal, error) = match e {
                // The body of a request to a gateway endpoint broke off or was malformed.
                exchange::BodyError::Broken(_) => (
                    FramingError::BadFraming("invalid request body framing"),
                    "InvalidChunk",
                ),
                exchange::BodyError::TooSlow => (FramingError::BodyTooSlow, "BodyTimeout"),
            };
            rescue::respond(session, ctx, Rejection::Framing(refusal));
            ctx.outcome = Some(Outcome::Error);
            return Err(error);
        }
        Decision::Reject(rejection) => {
            rescue::respond(session, ctx, rejection);
            return Ok(());
        }
    }
    proxy::forward(state, conn, session, ctx).await
}

/// Whether a request to a protected path on `host` goes on to its upstream:
/// its principal is found and admitted. `false`: the refusal is answered.
async fn protected(state: &State, session: &mut Exchange, ctx: &mut Ctx, host: &str) -> bool {
    // A bearer token decides alone, never falling back to the cookie (PRX-29).
    // Kept inline rather than awaiting `identify`: one future less per request.
    let principal = match authenticate_bearer(state, session, ctx.app).await {
        Some(Ok(p)) => Some(p),
        Some(Err(refusal)) => {
            rescue::respond(session, ctx, refusal);
            return false;
        }
        None => {
            let pass_token = ctx
                .app
                .and_then(|i| state.config.apps.get(i))
                .is_some_and(|a| a.pass_access_token);
            let Ok(found) = authenticate(state, session, ctx, host, pass_token).await else {
                rescue::respond(session, ctx, Rejection::SessionUnavailable);
                return false;
            };
            found.filter(|p| app_takes(state, ctx.app, p))
        }
    };
    let Some(p) = principal else {
        refuse_unauthenticated(state, session, ctx, host);
        return false;
    };
    admits(state, session, ctx, p, host)
}

/// The principal of a request to `app`: a bearer token decides alone, never
/// falling back to the cookie (PRX-29); else the session cookie on `host`,
/// if `app` takes its source. `Err`: the refusal to answer with. Forward
/// auth's; `handle` does the same inline.
pub async fn identify(
    state: &State,
    session: &Exchange,
    ctx: &mut Ctx,
    host: &str,
    app: Option<usize>,
) -> Result<Option<Arc<Principal>>, Rejection> {
    match authenticate_bearer(state, session, app).await {
        Some(found) => found.map(Some),
        None => {
            let pass_token = app
                .and_then(|i| state.config.apps.get(i))
                .is_some_and(|a| a.pass_access_token);
            let Ok(found) = authenticate(state, session, ctx, host, pass_token).await else {
                return Err(Rejection::SessionUnavailable);
            };
            Ok(found.filter(|p| app_takes(state, app, p)))
        }
    }
}

/// Whether principal `p` of a request to a protected path goes on to its
/// upstream: the app's access rules admit it, and it is not a WebSocket
/// opened from another site with the cookie. `false`: the refusal is answered.
fn admits(
    state: &State,
    session: &mut Exchange,
    ctx: &mut Ctx,
    p: Arc<Principal>,
    host: &str,
) -> bool {
    // Known from here, refused or not: the access line names them.
    ctx.principal = Some(p.clone());
    let req = session.req_header();
    let path = ctx.path.as_ref().map_or("/", |c| c.decision());
    let allowed = match ctx.app {
        Some(app) => state.access(app, &p, path, req.method.as_str(), host),
        None => Ok(()),
    };
    if let Err(reason) = allowed {
        refuse_access(state, session, ctx, &p, reason, AccessAsked::Proxied);
        return false;
    }
    if p.kind != PrincipalKind::Bearer && foreign_websocket(state, session.req_header()) {
        let reason = "This WebSocket was opened from another site.".to_string();
        ctx.span.in_scope(|| tracing::info!(authz.decision = "deny", user = %p.user, request_id = %ctx.request_id, "cross-site WebSocket refused"));
        rescue::respond(session, ctx, Rejection::Forbidden { reason });
        return false;
    }
    true
}

/// Answers a protected request without a principal: sent to sign in (a
/// browser) or 401, back to the original path and query afterwards; a
/// session that just ended says why and its cookie goes too (OA2-21).
fn refuse_unauthenticated(state: &State, session: &mut Exchange, ctx: &mut Ctx, host: &str) {
    // Back to the path the request was decided on and would be forwarded
    // as (`//admin` is `/admin`; as written, `rd` would refuse it for `/`).
    let uri = &session.req_header().uri;
    let path = ctx.path.as_ref().map_or(uri.path(), |p| p.forward());
    let rd = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    match ctx.session_ended.take() {
        Some(ended) => {
            let clear = vec![("set-cookie", state.sessions.clear(host))];
            let refusal = session_ended(state, rd, ended);
            rescue::respond_with(session, ctx, refusal, clear);
        }
        None => rescue::respond(session, ctx, Rejection::Unauthenticated { rd }),
    }
}

static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// The one access line of a request, and its metrics.
fn log(
    state: &State,
    ex: &Exchange,
    ctx: &Ctx,
    status: u16,
    error: Option<&'static str>,
    client_ip: std::net::IpAddr,
) {
    let outcome = match (ctx.outcome, error) {
        (Some(o), None) => o,
        (Some(Outcome::UpstreamError), Some(_)) => Outcome::UpstreamError,
        (_, Some(_)) | (None, None) => Outcome::Error,
    };
    let elapsed = ctx.started.elapsed();
    state
        .metrics
        .observe(ctx.app, outcome, elapsed.as_secs_f64());
    let app = ctx
        .app
        .and_then(|i| state.config.apps.get(i))
        .map_or(crate::metrics::NO_APP, |a| a.name.as_str());
    let req = ex.req_header();
    let line = access::Line {
        method: req.method.as_str(),
        host: ctx.host.as_deref().unwrap_or("-"),
        path: req.uri.path(),
        app,
        status,
        elapsed,
        outcome,
        error,
        request_id: &ctx.request_id,
        user: ctx.principal.as_ref().map_or("-", |p| p.user.as_str()),
        client_ip,
    };
    state.access.emit(&line, state.clock.now());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in lines {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_request_the_head_tap_has_no_head_for_is_refused_and_a_tapped_head_is_checked() {
        let (mut tap, queue) = head_tap::HeadTap::new();
        tap.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        tap.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        let clean = queue.pop();
        let doubled = queue.pop();
        assert_eq!(check_tapped(clean.as_ref()), Ok(()));
        assert_eq!(
            check_tapped(doubled.as_ref()).map_err(FramingError::status),
            Err(400)
        );
        assert_eq!(
            check_tapped(None),
            Err(FramingError::BadFraming("no raw head for this request"))
        );
    }

    #[test]
    fn prx17_a_cookie_websocket_from_another_site_is_foreign() {
        let ours = |h: &str| h == "wiki.example" || h == "sso.example";
        let ws = |origin: &'static str| headers(&[("upgrade", "websocket"), ("origin", origin)]);
        for (h, foreign) in [
            (ws("https://evil.example"), true),
            (ws("null"), true),
            (ws("https://gw.example:8443"), false),
            (ws("https://gw.example"), true),
            (ws("https://WIKI.example"), false),
            (ws("https://sso.example:444"), false),
            (headers(&[("upgrade", "websocket")]), false),
            (headers(&[("origin", "https://evil.example")]), false),
        ] {
            assert_eq!(
                foreign_websocket_origin(&h, Some("gw.example:8443"), ours),
                foreign,
                "{h:?}"
            );
        }
    }

    #[test]
    fn prx17_the_host_a_websocket_was_sent_to_is_compared_with_its_origin_once_normalised() {
        let none = |_: &str| false;
        let ws = |origin: &'static str| headers(&[("upgrade", "websocket"), ("origin", origin)]);
        for (origin, sent, foreign) in [
            ("https://gw.example:8443", "GW.Example.:8443", false),
            ("https://gw.example", "gw.example.", false),
            ("http://[::1]:8080", "[::1]:8080", false),
            ("https://gw.example:8443", "gw.example:8444", true),
            ("https://gw.example:8443", "gw.example", true),
            ("https://gw.example", "gw.example:8443", true),
            ("https://gw.example", "gw.example..", true),
            ("https://gw.example", "evil.example", true),
        ] {
            assert_eq!(
                foreign_websocket_origin(&ws(origin), Some(sent), none),
                foreign,
                "{origin} sent to {sent}"
            );
        }
    }
}
#[cfg(test)]
mod future_size {
    //! hyper moves each request's future into place (twice per request):
    //! every byte of it is copied for every request, so rare paths that make
    //! it large (the gateway's own endpoints, a token refresh, a new upstream
    //! connection) are boxed. Sizes are of this (debug) build.

    fn size3<A, B, C, F>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn the_future_of_a_request_stays_small_because_every_request_copies_it() {
        let serve = size3(super::serve);
        // 6 480 bytes before the rare paths were boxed and the upstream's
        // answer was awaited in place; 3 336 after (rustc 1.95); 3 872 with
        // the own upstream exchange awaited in place and hyper's boxed;
        // 3 800 with a turn's upstream writes sent together (`pool::Out`,
        // waited for before a connection is taken: 4 136 when it was
        // waited for in the exchange) and the forwarding fields beside the
        // map (README, "Performance"). The bound leaves room for compilers,
        // not for another inline connect path.
        assert!(serve <= 4_096, "gateway::serve's future is {serve} bytes");
    }
}
