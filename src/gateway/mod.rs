//! The proxy: the only code that names pingora types. Each phase copies facts
//! out of the request, calls the pure checks below, and acts on the answer.

pub mod ctx;
pub mod framing;
pub mod head_tap;
pub mod pages;
pub mod rescue;
pub mod routes;
pub mod upstream;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::config::{path_has_prefix, Config};
use crate::metrics::Metrics;
use crate::principal::Principal;
use crate::routing::{request_host, Router};
use crate::session::service::Sessions;
use crate::source::Sources;
use ctx::{Ctx, Outcome};
use framing::FramingError;
use rescue::Rejection;

/// Everything the request path reads, built once at start.
pub struct State {
    /// The validated config.
    pub config: Config,
    /// App routing table.
    pub router: Router,
    /// One prepared peer per app, in config order.
    pub peers: Vec<HttpPeer>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// `https` when the listener has TLS.
    pub scheme: &'static str,
    /// Requests being handled right now (for draining on shutdown).
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// The identity providers.
    pub sources: Arc<Sources>,
    /// Session cookies, cache and store.
    pub sessions: Arc<Sessions>,
    /// Each app's `[[app.policy]]` rules, compiled, in config order.
    pub app_rules: Vec<crate::policy::Rules>,
    /// Machine-token verification and its cache.
    pub bearer: crate::bearer::Bearer,
}

/// The token of `Authorization: Bearer …`, if the request has one. Two
/// `Authorization` lines with a bearer among them, or a bearer header beside
/// an `access_token` query parameter, are ambiguous: refused (JWT-26). A token
/// only in the query or a form is never read (JWT-25).
pub(crate) fn bearer_token(session: &Session) -> Result<Option<&str>, Rejection> {
    let req = session.req_header();
    fn bearer(v: &http::HeaderValue) -> Option<&str> {
        let (scheme, token) = v.to_str().ok()?.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
    let mut lines = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(first) = lines.next() else {
        return Ok(None);
    };
    let mut rest = lines.peekable();
    let token = bearer(first);
    let ambiguous = if rest.peek().is_none() {
        token.is_some()
            && req.uri.query().is_some_and(|q| {
                url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token")
            })
    } else {
        token.is_some() || rest.any(|v| bearer(v).is_some())
    };
    if ambiguous {
        return Err(Rejection::InvalidRequest {
            description: "send exactly one bearer token, in one Authorization header".into(),
        });
    }
    Ok(token)
}

/// The principal of the request's bearer token for app `app`; a token decides
/// alone (PRX-29): `Err` is the RFC 6750 refusal.
pub async fn authenticate_bearer(
    state: &State,
    session: &Session,
    app: Option<usize>,
) -> Option<Result<Arc<Principal>, Rejection>> {
    let token = match bearer_token(session) {
        Ok(t) => t?,
        Err(refusal) => return Some(Err(refusal)),
    };
    let Some((index, app)) = app.and_then(|i| state.config.apps.get(i).map(|a| (i, a))) else {
        return Some(Err(Rejection::InvalidToken {
            description: "no application here accepts bearer tokens".into(),
        }));
    };
    Some(
        state
            .bearer
            .verify(index, app, token, routes::now())
            .await
            .map_err(|e| Rejection::InvalidToken {
                description: e.to_string(),
            }),
    )
}

/// The refusal for a principal an app's policy does not admit: RFC 6750
/// `insufficient_scope` for a machine, the access-denied page for a person.
pub(crate) fn refused_by_policy(p: &Principal, reason: String) -> Rejection {
    if p.kind == "bearer" {
        Rejection::InsufficientScope { reason }
    } else {
        Rejection::Forbidden { reason }
    }
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
        let no_claims = serde_json::Value::Object(Default::default());
        let subject = crate::policy::Subject {
            username: &who.user,
            email: who.email.as_deref(),
            name: who.name.as_deref(),
            groups: &who.groups,
            claims: &no_claims,
            source: &who.source,
        };
        let request = crate::policy::Request { path, method, host };
        rules.check(crate::config::PolicyAction::Access, &subject, Some(request))
    }
}

/// The principal of the request's session cookie on `host`, if any; a cookie
/// sealed with an older secret gets a re-sealed copy queued in `ctx`.
pub async fn authenticate(
    state: &State,
    session: &Session,
    ctx: &mut Ctx,
    host: &str,
) -> Option<Arc<Principal>> {
    let now = routes::now();
    let (claims, stale) = {
        let headers = session.req_header().headers.get_all(http::header::COOKIE);
        state
            .sessions
            .read(headers.iter().filter_map(|v| v.to_str().ok()), host, now)?
    };
    let principal = state.sessions.principal(&claims, now).await?;
    if stale {
        ctx.reseal = state.sessions.reseal(&claims, now);
    }
    Some(principal)
}

/// The pingora proxy application.
pub struct Gateway {
    state: Arc<State>,
}

impl Gateway {
    /// A gateway over shared state.
    pub fn new(state: Arc<State>) -> Self {
        Gateway { state }
    }
}

/// What to do with a request once its head has been read.
enum Decision {
    /// Forward it to the routed app's upstream without authentication.
    Public,
    /// Authenticate it, then forward it; `rd` is where to come back after signing in.
    Protected {
        /// The original path and query.
        rd: String,
    },
    /// A gateway endpoint.
    Auth(routes::AuthRoute),
    /// Answer it with this refusal.
    Reject(Rejection),
}

impl Gateway {
    fn decide(&self, session: &Session, ctx: &mut Ctx) -> Decision {
        let req = session.req_header();
        if let Err(e) = check_head(session) {
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
        let canonical = match framing::check_path(req.uri.path()) {
            Ok(c) => c,
            Err(e) => return Decision::Reject(Rejection::Framing(e)),
        };
        let path = ctx.path.insert(canonical).decision.as_str();
        let host_header = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok());
        ctx.host = request_host(req.uri.authority().map(|a| a.as_str()), host_header);
        let host = ctx.host.as_deref();
        if routes::is_auth_path(path) {
            ctx.app = self.state.router.route_host(host);
            if ctx.app.is_none() {
                return Decision::Reject(Rejection::NoApp);
            }
            return Decision::Auth(routes::classify(path));
        }
        let Some(index) = self.state.router.route(host, path) else {
            return Decision::Reject(Rejection::NoApp);
        };
        let Some(app) = self.state.config.apps.get(index) else {
            return Decision::Reject(Rejection::NoApp);
        };
        if app.public_paths.iter().any(|p| path_has_prefix(path, p)) {
            ctx.app = Some(index);
            return Decision::Public;
        }
        ctx.app = Some(index);
        let rd = req
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string());
        Decision::Protected { rd }
    }
}

/// The status a failed proxy attempt is answered with (0: none, the client
/// is gone): an upstream that does not connect or answer in time is a 504
/// (PRX-24), any other upstream failure a 502, a request body whose framing
/// is broken a 400 (PRX-12).
fn failure_status(etype: &pingora::ErrorType, source: &pingora::ErrorSource) -> u16 {
    use pingora::{ErrorSource, ErrorType};
    match (etype, source) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (ErrorType::ConnectTimedout | ErrorType::ReadTimedout, ErrorSource::Upstream) => 504,
        (_, ErrorSource::Upstream) => 502,
        (ErrorType::InvalidHTTPHeader, ErrorSource::Downstream) => 400,
        (other, ErrorSource::Downstream) if other.as_str() == "InvalidChunk" => 400,
        (_, ErrorSource::Downstream) => 0,
        _ => 500,
    }
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
    let websocket = headers
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"));
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return false;
    };
    if !websocket {
        return false;
    }
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
    let same_host = sent_host.is_some_and(|h| h.eq_ignore_ascii_case(&authority));
    !(same_host || is_ours(&host))
}

impl Gateway {
    /// [`foreign_websocket_origin`] for this request and this config's hosts.
    fn foreign_websocket(&self, req: &RequestHeader) -> bool {
        let config = &self.state.config;
        let sent_host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok());
        foreign_websocket_origin(&req.headers, sent_host, |host| {
            config.server.public_url.host_str() == Some(host)
                || config.apps.iter().any(|a| a.host.as_deref() == Some(host))
        })
    }
}

/// Framing checks on the raw head for HTTP/1, header limits for HTTP/2.
fn check_head(session: &Session) -> Result<(), FramingError> {
    match session.as_downstream() {
        ServerSession::H1(h1) => {
            let http10 = h1.req_header().version == http::Version::HTTP_10;
            framing::check_raw_head(&h1.get_headers_raw_bytes(), http10)
        }
        other => {
            let h = &other.req_header().headers;
            let bytes: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
            if h.len() > framing::MAX_HEADER_FIELDS || bytes > framing::MAX_HEADER_BYTES {
                Err(FramingError::HeadersTooLarge)
            } else {
                Ok(())
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(&self.state.in_flight)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        let req = session.req_header();
        ctx.span = tracing::info_span!(
            "request",
            http.method = %req.method,
            url.path = %req.uri.path(),
            app.name = tracing::field::Empty,
            request_id = %ctx.request_id,
        );
        let decision = self.decide(session, ctx);
        if let Some(app) = ctx.app.and_then(|i| self.state.config.apps.get(i)) {
            ctx.span.record("app.name", app.name.as_str());
        }
        match decision {
            Decision::Public => {
                ctx.outcome = Some(Outcome::Public);
                Ok(false)
            }
            Decision::Protected { rd } => {
                let host = ctx.host.clone().unwrap_or_default();
                // A bearer token decides alone, never falling back to the cookie (PRX-29).
                let principal = match authenticate_bearer(&self.state, session, ctx.app).await {
                    Some(Ok(p)) => Some(p),
                    Some(Err(refusal)) => {
                        rescue::respond(session, ctx, refusal).await?;
                        return Ok(true);
                    }
                    None => authenticate(&self.state, session, ctx, &host).await,
                };
                match principal {
                    Some(p) => {
                        let req = session.req_header();
                        let path = ctx.path.as_ref().map_or("/", |c| c.decision.as_str());
                        let allowed = match ctx.app {
                            Some(app) => {
                                self.state.access(app, &p, path, req.method.as_str(), &host)
                            }
                            None => Ok(()),
                        };
                        if let Err(reason) = allowed {
                            ctx.span.in_scope(|| tracing::info!(authz.decision = "deny", user = %p.user, "access refused by policy"));
                            rescue::respond(session, ctx, refused_by_policy(&p, reason)).await?;
                            return Ok(true);
                        }
                        if p.kind != "bearer" && self.foreign_websocket(session.req_header()) {
                            let reason = "This WebSocket was opened from another site.".to_string();
                            ctx.span.in_scope(|| tracing::info!(authz.decision = "deny", user = %p.user, "cross-site WebSocket refused"));
                            rescue::respond(session, ctx, Rejection::Forbidden { reason }).await?;
                            return Ok(true);
                        }
                        ctx.principal = Some(p);
                        ctx.outcome = Some(Outcome::Authenticated);
                        Ok(false)
                    }
                    None => {
                        rescue::respond(session, ctx, Rejection::Unauthenticated { rd }).await?;
                        Ok(true)
                    }
                }
            }
            Decision::Auth(route) => {
                routes::handle(&self.state, session, ctx, route).await?;
                Ok(true)
            }
            Decision::Reject(rejection) => {
                rescue::respond(session, ctx, rejection).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        match ctx.app.and_then(|i| self.state.peers.get(i)) {
            Some(peer) => Ok(Box::new(peer.clone())),
            // request_filter only lets routed requests through; this is unreachable in practice.
            None => Err(pingora::Error::explain(
                pingora::ErrorType::HTTPStatus(404),
                "no app routed",
            )),
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        // The upstream receives the path the gateway decided on (PRX-06).
        if let Some(target) = ctx
            .path
            .as_ref()
            .and_then(|c| upstream::rewritten_target(&upstream_request.uri, &c.forward))
        {
            upstream_request.set_raw_path(target.as_bytes())?;
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // X-Forwarded-Host is the Host the client sent, port included (as nginx's $http_host).
        let req = session.req_header();
        let sent_host = req.uri.authority().map(|a| a.as_str()).or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        });
        let peer = upstream::Peer {
            client,
            trusted: client.is_some_and(|ip| self.state.config.server.is_trusted_proxy(ip)),
            scheme: self.state.scheme,
            host: sent_host,
        };
        // Client headers are filtered before the gateway adds its own (PRX-04).
        upstream::filter_request_headers(upstream_request, &peer)?;
        upstream::strip_gateway_cookies(
            upstream_request,
            &[
                &self.state.sessions.cookie_name,
                &self.state.sessions.login_cookie_name,
            ],
        )?;
        if let Some(p) = &ctx.principal {
            for (name, value) in p.headers(false) {
                upstream_request.insert_header(name, value)?;
            }
            // The verified token stays at the gateway unless the app asks for it (JWT-27).
            let forward = ctx
                .app
                .and_then(|i| self.state.config.apps.get(i))
                .is_some_and(|a| a.forward_bearer_token);
            if p.kind == "bearer" && !forward {
                upstream_request.remove_header(&http::header::AUTHORIZATION);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        // A response whose length could be read two ways goes no further (PRX-23).
        if let Err(why) = upstream::check_response_framing(&upstream_response.headers) {
            return Err(pingora::Error::explain(
                pingora::ErrorType::HTTPStatus(502),
                why,
            ));
        }
        for name in upstream::response_hop_by_hop(
            &upstream_response.headers,
            upstream_response.status.as_u16(),
        ) {
            upstream_response.remove_header(&name);
        }
        // The upstream may not set the gateway's own cookies (PRX-23).
        upstream::drop_gateway_set_cookies(
            upstream_response,
            &[
                &self.state.sessions.cookie_name,
                &self.state.sessions.login_cookie_name,
            ],
        )?;
        if let Some(set) = ctx.reseal.take() {
            upstream_response.append_header("set-cookie", set)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        let code = failure_status(e.etype(), e.esource());
        ctx.outcome = Some(if code == 502 || code == 504 {
            Outcome::UpstreamError
        } else {
            Outcome::Error
        });
        if code == 400 && session.response_written().is_none() {
            let refusal =
                Rejection::Framing(FramingError::BadFraming("invalid request body framing"));
            if let Err(err) = rescue::respond(session, ctx, refusal).await {
                ctx.span
                    .in_scope(|| tracing::debug!(error = %err, "could not write the 400 page"));
            }
        } else if code == 502 && session.response_written().is_none() {
            if let Err(err) = rescue::respond(session, ctx, Rejection::UpstreamFailed).await {
                ctx.span
                    .in_scope(|| tracing::debug!(error = %err, "could not write the 502 page"));
            }
            ctx.outcome = Some(Outcome::UpstreamError);
        } else if code > 0 && session.response_written().is_none() {
            let _ = session.respond_error(code).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&pingora::Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.status)
            .unwrap_or(0);
        let outcome = match (ctx.outcome, e) {
            (Some(o), None) => o,
            (Some(Outcome::UpstreamError), Some(_)) => Outcome::UpstreamError,
            (_, Some(_)) => Outcome::Error,
            (None, None) => Outcome::Error,
        };
        let elapsed = ctx.started.elapsed();
        self.state
            .metrics
            .observe(ctx.app, outcome, elapsed.as_secs_f64());
        let app = ctx
            .app
            .and_then(|i| self.state.config.apps.get(i))
            .map_or(crate::metrics::NO_APP, |a| a.name.as_str());
        let req = session.req_header();
        ctx.span.in_scope(|| {
            tracing::info!(
                target: "portcullis::access",
                method = %req.method,
                host = ctx.host.as_deref().unwrap_or("-"),
                path = %req.uri.path(),
                app,
                status,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                outcome = outcome.label(),
                error = e.map(|e| e.etype().as_str()),
                request_id = %ctx.request_id,
                "request"
            )
        });
    }
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
}
