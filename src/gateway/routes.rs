//! `/_auth/*`: the gateway's own endpoints, answered on every app host:
//! sign-in page, login start, callback, sign-out, forward auth, userinfo.

use std::sync::Arc;

use bytes::Bytes;
use pingora::proxy::Session;

use super::ctx::{Ctx, Outcome};
use super::rescue::{self, Rejection};
use super::{pages, State};
use crate::config::SourceKind;
use crate::identity::signin::SignInError;
use crate::redirect::safe_rd;
use crate::session::cookie::{self, Lookup, Purpose};
use crate::session::LoginState;
use crate::source::flow::{self, Callback, FlowError};
use crate::source::{callback_url, SourceError};

/// Largest body accepted by a gateway endpoint (PRX-21).
pub const MAX_BODY: usize = 64 * 1024;

/// What an `/_auth/...` request resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRoute {
    /// `/_auth/sign_in`
    SignIn,
    /// `/_auth/login/{slug}`
    Login(String),
    /// `/_auth/link/{slug}`: a signed-in user connects another source.
    Link(String),
    /// `/_auth/callback/{slug}`
    Callback(String),
    /// `/_auth/sign_out`
    SignOut,
    /// `/_auth/backchannel_logout/{slug}`: OIDC Back-Channel Logout 1.0.
    BackchannelLogout(String),
    /// `/_auth/check`: forward auth.
    Check,
    /// `/_auth/userinfo`: the current identity as JSON.
    Userinfo,
    /// Anything else under `/_auth/`.
    Unknown,
}

/// Maps an `/_auth/...` path to its endpoint.
pub fn classify(path: &str) -> AuthRoute {
    let rest = path.strip_prefix("/_auth/").unwrap_or_default();
    let slug = |s: &str| {
        (!s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        .then(|| s.to_string())
    };
    match rest.split_once('/') {
        None => match rest {
            "sign_in" => AuthRoute::SignIn,
            "sign_out" => AuthRoute::SignOut,
            "check" => AuthRoute::Check,
            "userinfo" => AuthRoute::Userinfo,
            _ => AuthRoute::Unknown,
        },
        Some(("login", s)) => slug(s).map_or(AuthRoute::Unknown, AuthRoute::Login),
        Some(("link", s)) => slug(s).map_or(AuthRoute::Unknown, AuthRoute::Link),
        Some(("backchannel_logout", s)) => {
            slug(s).map_or(AuthRoute::Unknown, AuthRoute::BackchannelLogout)
        }
        Some(("callback", s)) => slug(s).map_or(AuthRoute::Unknown, AuthRoute::Callback),
        Some(_) => AuthRoute::Unknown,
    }
}

/// Whether `path` is in the gateway's reserved space.
pub fn is_auth_path(path: &str) -> bool {
    path == "/_auth" || path.starts_with("/_auth/")
}

/// Unix time now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn query_param(session: &Session, name: &str) -> Option<String> {
    let q = session.req_header().uri.query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn method_is(session: &Session, m: &http::Method) -> bool {
    session.req_header().method == *m
}

/// Answers an `/_auth/*` request; always writes a response.
pub async fn handle(
    state: &Arc<State>,
    session: &mut Session,
    ctx: &mut Ctx,
    route: AuthRoute,
) -> pingora::Result<()> {
    ctx.outcome = Some(Outcome::AuthEndpoint);
    let get_or_post = method_is(session, &http::Method::GET)
        || method_is(session, &http::Method::POST)
        || method_is(session, &http::Method::HEAD);
    if !get_or_post {
        return rescue::respond(session, ctx, Rejection::MethodNotAllowed).await;
    }
    match route {
        AuthRoute::SignIn => sign_in(state, session, ctx).await,
        AuthRoute::Login(slug) => login(state, session, ctx, &slug, false).await,
        AuthRoute::Link(slug) => {
            let host = ctx.host.clone().unwrap_or_default();
            if super::authenticate(state, session, ctx, &host)
                .await
                .is_none()
            {
                let rd = safe_rd(query_param(session, "rd").as_deref());
                return rescue::respond(session, ctx, Rejection::Unauthenticated { rd }).await;
            }
            login(state, session, ctx, &slug, true).await
        }
        AuthRoute::Callback(slug) => callback(state, session, ctx, &slug).await,
        AuthRoute::SignOut => sign_out(state, session, ctx).await,
        AuthRoute::BackchannelLogout(slug) => backchannel_logout(state, session, ctx, &slug).await,
        AuthRoute::Check => check(state, session, ctx).await,
        AuthRoute::Userinfo => userinfo(state, session, ctx).await,
        AuthRoute::Unknown => rescue::respond(session, ctx, Rejection::UnknownAuthEndpoint).await,
    }
}

/// The app a sign-in is for: the one serving `rd` on this host, else the
/// host's most specific app (several apps may share a host by path prefix).
fn app_for_rd<'a>(state: &'a State, ctx: &Ctx, rd: &str) -> Option<&'a crate::config::App> {
    let path = rd.split(['?', '#']).next().unwrap_or("/");
    state
        .router
        .route(ctx.host.as_deref(), path)
        .or(ctx.app)
        .and_then(|i| state.config.apps.get(i))
}

async fn sign_in(state: &Arc<State>, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
    let rd = safe_rd(query_param(session, "rd").as_deref());
    let Some(app) = app_for_rd(state, ctx, &rd) else {
        return rescue::respond(session, ctx, Rejection::NoApp).await;
    };
    let offered: Vec<(String, String)> = app
        .sources
        .iter()
        .filter_map(|slug| state.config.source(slug))
        .map(|s| (s.slug.clone(), s.name.clone()))
        .collect();
    let html = pages::sign_in(&app.name, &offered, &rd);
    rescue::write(
        session,
        ctx,
        200,
        &[],
        "text/html; charset=utf-8",
        Bytes::from(html),
    )
    .await
}

async fn login(
    state: &Arc<State>,
    session: &mut Session,
    ctx: &mut Ctx,
    slug: &str,
    link: bool,
) -> pingora::Result<()> {
    let rd = safe_rd(query_param(session, "rd").as_deref());
    let offered = app_for_rd(state, ctx, &rd).is_some_and(|a| a.sources.iter().any(|s| s == slug));
    let Some(rt) = state.sources.get(slug).filter(|_| offered) else {
        return rescue::respond(session, ctx, Rejection::UnknownAuthEndpoint).await;
    };
    let Some(endpoints) = rt.endpoints() else {
        return rescue::respond(session, ctx, Rejection::SourceNotReady).await;
    };
    let redirect_uri = callback_url(&state.config.server.public_url, slug);
    if rt.config.kind == SourceKind::OAuth1 {
        // OAuth 1.0a: the provider is called before the browser goes there.
        let (url, pending) = match state.sources.start_oauth1(&rt, &redirect_uri).await {
            Ok(started) => started,
            Err(SourceError::NotReady) => {
                return rescue::respond(session, ctx, Rejection::SourceNotReady).await
            }
            Err(e) => {
                ctx.span.in_scope(
                    || tracing::warn!(auth.source = slug, auth.error = %e, "sign-in could not start"),
                );
                return refuse(session, ctx, 502, e.to_string(), Vec::new()).await;
            }
        };
        let login = LoginState {
            source: slug.to_string(),
            // The request token is this flow's one-time key.
            state: pending.token.clone(),
            nonce: None,
            pkce_verifier: None,
            rd,
            link,
            exp: now() + flow::LOGIN_STATE_SECS,
            oauth1: Some(pending),
        };
        let start = flow::Start { url, state: login };
        return send_to_provider(state, session, ctx, slug, start, false).await;
    }
    let started = flow::Fresh::generate().and_then(|fresh| {
        flow::start(
            &rt.config,
            &endpoints,
            &redirect_uri,
            &rd,
            link,
            fresh,
            now(),
        )
    });
    let start = match started {
        Ok(s) => s,
        Err(FlowError::NotReady) => {
            return rescue::respond(session, ctx, Rejection::SourceNotReady).await
        }
        Err(e) => return refuse(session, ctx, 500, e.to_string(), Vec::new()).await,
    };
    // A form_post callback (Apple) is a cross-site POST: the login cookie must travel with it.
    let cross_site = rt.config.preset.is_some_and(|p| p.quirks.form_post);
    send_to_provider(state, session, ctx, slug, start, cross_site).await
}

/// Seals the flow's login state into this browser's cookie and redirects it
/// to the provider.
async fn send_to_provider(
    state: &Arc<State>,
    session: &mut Session,
    ctx: &mut Ctx,
    slug: &str,
    start: flow::Start,
    cross_site: bool,
) -> pingora::Result<()> {
    let sessions = &state.sessions;
    let sealed = match sessions.sealer.seal(
        &sessions.login_cookie_name,
        Purpose::LoginState,
        &start.state,
    ) {
        Ok(s) => s,
        Err(e) => return refuse(session, ctx, 500, e.to_string(), Vec::new()).await,
    };
    let set = cookie::set_cookie(
        &sessions.login_cookie_name,
        &sealed,
        flow::LOGIN_STATE_SECS as i64,
        sessions.secure,
        cross_site,
    );
    ctx.span
        .in_scope(|| tracing::info!(auth.source = slug, "sign-in started"));
    let headers = [("location", start.url.to_string()), ("set-cookie", set)];
    rescue::write(
        session,
        ctx,
        302,
        &headers,
        "text/plain; charset=utf-8",
        Bytes::new(),
    )
    .await
}

/// Reads a request body up to [`MAX_BODY`]; `None` when it is larger.
async fn read_body(session: &mut Session) -> pingora::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

async fn callback(
    state: &Arc<State>,
    session: &mut Session,
    ctx: &mut Ctx,
    slug: &str,
) -> pingora::Result<()> {
    let sessions = state.sessions.clone();
    // The login state is one-time: every answer from here clears it (SECURITY.md REJECT-LOGIN).
    let clear_login = (
        "set-cookie",
        cookie::clear_cookie(&sessions.login_cookie_name, sessions.secure, false),
    );
    let post = method_is(session, &http::Method::POST);
    let params = if post {
        match read_body(session).await? {
            Some(b) => String::from_utf8_lossy(&b).into_owned(),
            None => {
                return rescue::respond_with(session, ctx, Rejection::TooLarge, vec![clear_login])
                    .await
            }
        }
    } else {
        session
            .req_header()
            .uri
            .query()
            .unwrap_or_default()
            .to_string()
    };
    let cb = Callback::parse(&params);
    let login: Option<LoginState> = {
        let headers = session.req_header().headers.get_all(http::header::COOKIE);
        match cookie::find(
            headers.iter().filter_map(|v| v.to_str().ok()),
            &sessions.login_cookie_name,
        ) {
            Lookup::One(v) => sessions
                .sealer
                .open::<LoginState>(&sessions.login_cookie_name, Purpose::LoginState, v)
                .ok()
                .map(|o| o.value),
            _ => None,
        }
    };
    let Some(rt) = state.sources.get(slug) else {
        return rescue::respond_with(
            session,
            ctx,
            Rejection::UnknownAuthEndpoint,
            vec![clear_login],
        )
        .await;
    };
    let now = now();
    let answered = if rt.config.kind == SourceKind::OAuth1 {
        oauth1_callback(state, &rt, slug, &params, login, now).await
    } else {
        code_callback(state, &rt, slug, &cb, &params, login, now).await
    };
    let (login, proven) = match answered {
        Ok(done) => done,
        Err((status, reason)) => {
            ctx.span.in_scope(
                || tracing::warn!(auth.source = slug, auth.error = %reason, "sign-in refused"),
            );
            return refuse(session, ctx, status, reason, vec![clear_login]).await;
        }
    };
    let host = ctx.host.clone().unwrap_or_default();
    let record =
        match sessions.new_record(slug, now, proven.id_token.clone(), proven.oidc_sid.clone()) {
            Ok(r) => r,
            Err(e) => return refuse(session, ctx, 500, e.to_string(), vec![clear_login]).await,
        };
    // The user signed in in this browser, if any: a new identity is linked to them.
    let signed_in = match super::authenticate(state, session, ctx, &host).await {
        Some(p) => match p.user_id.as_deref() {
            Some(id) => sessions.store().user(id).await.ok().flatten(),
            None => None,
        },
        None => None,
    };
    if login.link && signed_in.is_none() {
        let msg = "Sign in first, then link another account.".to_string();
        return refuse(session, ctx, 403, msg, vec![clear_login]).await;
    }
    let settled = crate::identity::signin::settle(
        sessions.store(),
        &rt.config,
        &rt.policies,
        &proven.identity,
        &proven.claims,
        signed_in.as_ref(),
        &record,
        now as i64,
    )
    .await;
    let (user, note) = match settled {
        Ok(s) => s,
        Err(SignInError::Policy(msg)) => {
            ctx.span.in_scope(|| tracing::info!(auth.source = slug, authz.decision = "deny", reason = %msg, "sign-in refused by policy"));
            return refuse(session, ctx, 403, msg, vec![clear_login]).await;
        }
        Err(SignInError::Refused(r)) => {
            ctx.span.in_scope(|| tracing::info!(auth.source = slug, authz.decision = "refuse", reason = %r, "sign-in refused"));
            return refuse(session, ctx, 403, r.to_string(), vec![clear_login]).await;
        }
        Err(SignInError::Store(e)) => {
            ctx.span
                .in_scope(|| tracing::error!(error = %e, "store failed during sign-in"));
            let msg = "The user directory is unavailable; try again.".to_string();
            return refuse(session, ctx, 503, msg, vec![clear_login]).await;
        }
    };
    let set = match sessions.cookie_for(&record, &user, &host, now) {
        Ok(s) => s,
        Err(e) => return refuse(session, ctx, 500, e.to_string(), vec![clear_login]).await,
    };
    ctx.span
        .in_scope(|| tracing::info!(auth.source = slug, user = %user.username, "signed in"));
    if let Some(note) = note {
        // An enrollment that needs explaining: say why, then continue.
        let html = pages::notice("Account created", note, &login.rd);
        let headers = [clear_login, ("set-cookie", set)];
        return rescue::write(
            session,
            ctx,
            200,
            &headers,
            "text/html; charset=utf-8",
            Bytes::from(html),
        )
        .await;
    }
    redirect(
        session,
        ctx,
        login.rd.clone(),
        vec![clear_login, ("set-cookie", set)],
    )
    .await
}

/// A redirect to `location`; 303 when answering a POST so the browser follows
/// with GET (PRX-27), else 302.
async fn redirect(
    session: &mut Session,
    ctx: &mut Ctx,
    location: String,
    mut headers: Vec<(&'static str, String)>,
) -> pingora::Result<()> {
    let status = if method_is(session, &http::Method::POST) {
        303
    } else {
        302
    };
    headers.insert(0, ("location", location));
    rescue::write(
        session,
        ctx,
        status,
        &headers,
        "text/plain; charset=utf-8",
        Bytes::new(),
    )
    .await
}

/// The status of a sign-in refused after the callback was accepted.
fn refusal_status(e: &SourceError) -> u16 {
    match e {
        SourceError::IdToken(_) | SourceError::SubjectMismatch => 401,
        SourceError::TokenRefused(_) => 400,
        SourceError::NotReady => 503,
        SourceError::Provider(_) | SourceError::Mapping(_) => 502,
    }
}

/// An OAuth 2.0 / OpenID Connect callback: `state` (and `iss`) checked
/// against this browser's login state, the state used once (OIDC-11), then
/// the code exchanged and the identity proven. `Err` is the refusal's status
/// and reason.
async fn code_callback(
    state: &Arc<State>,
    rt: &crate::source::Runtime,
    slug: &str,
    cb: &Callback,
    params: &str,
    login: Option<LoginState>,
    now: u64,
) -> Result<(LoginState, crate::source::Proven), (u16, String)> {
    let issuer = rt.endpoints().and_then(|e| e.issuer.clone());
    let code =
        flow::check_callback(cb, login.as_ref(), slug, issuer.as_deref(), now).map_err(|e| {
            let status = if matches!(e, FlowError::Provider(_)) {
                403
            } else {
                400
            };
            (status, e.to_string())
        })?;
    let no_state = || (400, FlowError::NoLoginState.to_string());
    let login = login.ok_or_else(no_state)?;
    if !state.sessions.consume_state(&login.state) {
        return Err(no_state());
    }
    // Apple's form_post carries the person's name once, as `user`.
    let user_field = url::form_urlencoded::parse(params.as_bytes())
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.into_owned());
    let redirect_uri = callback_url(&state.config.server.public_url, slug);
    let proven = state
        .sources
        .finish(rt, &code, &login, &redirect_uri, user_field.as_deref(), now)
        .await
        .map_err(|e| (refusal_status(&e), e.to_string()))?;
    Ok((login, proven))
}

/// An OAuth 1.0a callback: this browser's login state must name the source
/// and the very request token the provider sends back (OA1-02); the state is
/// used once, so a verifier is never traded twice (OA1-04). `Err` is the
/// refusal's status and reason.
async fn oauth1_callback(
    state: &Arc<State>,
    rt: &crate::source::Runtime,
    slug: &str,
    params: &str,
    login: Option<LoginState>,
    now: u64,
) -> Result<(LoginState, crate::source::Proven), (u16, String)> {
    let no_state = || (400, FlowError::NoLoginState.to_string());
    let login = login
        .filter(|l| l.source == slug && l.exp >= now)
        .ok_or_else(no_state)?;
    let pending = login.oauth1.clone().ok_or_else(no_state)?;
    let cb = crate::source::oauth1::Callback::parse(params).map_err(|e| {
        let status = if matches!(e, crate::source::oauth1::CallbackError::Denied) {
            403
        } else {
            400
        };
        (status, e.to_string())
    })?;
    cb.check_token(&pending.token)
        .map_err(|e| (400, e.to_string()))?;
    if !state.sessions.consume_state(&login.state) {
        return Err(no_state());
    }
    let proven = state
        .sources
        .finish_oauth1(rt, &pending, &cb.verifier)
        .await
        .map_err(|e| (refusal_status(&e), e.to_string()))?;
    Ok((login, proven))
}

async fn refuse(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    reason: String,
    extra: Vec<(&'static str, String)>,
) -> pingora::Result<()> {
    rescue::respond_with(
        session,
        ctx,
        Rejection::SignInRefused { status, reason },
        extra,
    )
    .await
}

async fn sign_out(state: &Arc<State>, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
    let rd = safe_rd(query_param(session, "rd").as_deref());
    let sessions = state.sessions.clone();
    let host = ctx.host.clone().unwrap_or_default();
    let claims = {
        let headers = session.req_header().headers.get_all(http::header::COOKIE);
        sessions.read(headers.iter().filter_map(|v| v.to_str().ok()), &host, now())
    };
    let mut location = rd.clone();
    if let Some((c, _)) = claims {
        let record = sessions.record(&c.sid).await;
        sessions.revoke(&c.sid).await;
        // RP-initiated logout: the provider ends its own session too.
        if let Some(r) = record {
            let rt = state.sources.get(&r.source);
            if let (Some(rt), Some(end)) = (
                rt.as_ref(),
                rt.as_ref()
                    .and_then(|rt| rt.endpoints())
                    .and_then(|e| e.end_session.clone()),
            ) {
                let mut url = end;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(t) = &r.id_token {
                        q.append_pair("id_token_hint", t);
                    }
                    if let Some(id) = &rt.config.consumer_key {
                        q.append_pair("client_id", id);
                    }
                    let back = format!(
                        "{}{rd}",
                        state
                            .config
                            .server
                            .public_url
                            .origin()
                            .ascii_serialization()
                    );
                    q.append_pair("post_logout_redirect_uri", &back);
                }
                location = url.to_string();
            }
        }
    }
    redirect(
        session,
        ctx,
        location,
        vec![("set-cookie", sessions.clear())],
    )
    .await
}

/// OIDC Back-Channel Logout 1.0: verify the `logout_token`, then revoke the
/// sessions of that `sid`/`sub` (other replicas within identity_cache_ttl).
async fn backchannel_logout(
    state: &Arc<State>,
    session: &mut Session,
    ctx: &mut Ctx,
    slug: &str,
) -> pingora::Result<()> {
    let answer = |status: u16, error: &str, description: String| {
        let body = if status == 200 {
            String::new()
        } else {
            serde_json::json!({"error": error, "error_description": description}).to_string()
        };
        (status, body)
    };
    let (status, body) = 'outcome: {
        if !method_is(session, &http::Method::POST) {
            break 'outcome answer(405, "invalid_request", "use POST".into());
        }
        let Some(rt) = state.sources.get(slug) else {
            break 'outcome answer(404, "invalid_request", "no such source".into());
        };
        let form = match read_body(session).await? {
            Some(b) => b,
            None => break 'outcome answer(413, "invalid_request", "body too large".into()),
        };
        let token = url::form_urlencoded::parse(&form)
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned());
        let Some(token) = token else {
            break 'outcome answer(400, "invalid_request", "no logout_token".into());
        };
        let request = match state.sources.verify_logout(&rt, &token, now()).await {
            Ok(r) => r,
            Err(e) => break 'outcome answer(400, "invalid_request", e.to_string()),
        };
        // A logout token is one-time too (its `jti`).
        if let Some(jti) = &request.jti {
            if !state.sessions.consume_state(&format!("jti:{slug}:{jti}")) {
                break 'outcome answer(400, "invalid_request", "logout token replayed".into());
            }
        }
        let store = state.sessions.store();
        match store
            .revoke_sessions_by_oidc(slug, request.sid.as_deref(), request.sub.as_deref())
            .await
        {
            Ok(n) => {
                state.sessions.forget_all();
                ctx.span.in_scope(|| {
                    tracing::info!(auth.source = slug, revoked = n, "back-channel logout")
                });
                answer(200, "", String::new())
            }
            Err(e) => answer(503, "temporarily_unavailable", e.to_string()),
        }
    };
    ctx.outcome = Some(Outcome::AuthEndpoint);
    let content_type = if body.is_empty() {
        "text/plain; charset=utf-8"
    } else {
        "application/json"
    };
    rescue::write(session, ctx, status, &[], content_type, Bytes::from(body)).await
}

/// The original request a forward-auth call is about: from `X-Original-URL`
/// or `X-Forwarded-Host`/`-Uri`, believed only from trusted proxies, its path
/// canonicalised as a proxied request's is (PRX-06). `None` path: the caller
/// did not (or may not) say which path it asks about. `Err`: the path it names
/// is one the gateway would refuse, so the answer is a refusal, never "public".
fn forwarded_target(
    state: &State,
    session: &Session,
    ctx: &Ctx,
) -> Result<(Option<String>, Option<String>), Rejection> {
    let req = session.req_header();
    let trusted = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .is_some_and(|a| state.config.server.is_trusted_proxy(a.ip()));
    let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
    let refuse =
        |why: &'static str| Rejection::Framing(super::framing::FramingError::AmbiguousPath(why));
    let decision_path = |raw: &str| {
        super::framing::check_path(raw)
            .map(|c| Some(c.decision))
            .map_err(Rejection::Framing)
    };
    if !trusted {
        return Ok((ctx.host.clone(), None));
    }
    if let Some(u) = header("x-original-url") {
        // Read as sent: a URL parser would resolve `..` and `%2e` before we could refuse them.
        let uri = u
            .parse::<http::Uri>()
            .map_err(|_| refuse("X-Original-URL is not a URL"))?;
        let Some(host) = uri.host() else {
            return Err(refuse("X-Original-URL has no host"));
        };
        let host = crate::routing::request_host(Some(host), None);
        return Ok((host, decision_path(uri.path())?));
    }
    if let Some(h) = header("x-forwarded-host") {
        let uri = header("x-forwarded-uri").unwrap_or("/");
        let path = uri.split('?').next().unwrap_or_default();
        return Ok((
            crate::routing::request_host(None, Some(h)),
            decision_path(path)?,
        ));
    }
    Ok((ctx.host.clone(), None))
}

async fn check(state: &Arc<State>, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
    let (host, path) = match forwarded_target(state, session, ctx) {
        Ok(target) => target,
        Err(refusal) => return rescue::respond(session, ctx, refusal).await,
    };
    // A public path of the app asked about needs no identity.
    if let Some(path) = &path {
        let app = state.router.route(host.as_deref(), path);
        if let Some(a) = app.and_then(|i| state.config.apps.get(i)) {
            if a.public_paths
                .iter()
                .any(|p| crate::config::path_has_prefix(path, p))
            {
                return rescue::write(
                    session,
                    ctx,
                    200,
                    &[],
                    "text/plain; charset=utf-8",
                    Bytes::new(),
                )
                .await;
            }
        }
    }
    let target = host
        .as_deref()
        .and_then(|h| state.router.route(Some(h), path.as_deref().unwrap_or("/")));
    let principal = match super::authenticate_bearer(state, session, target).await {
        Some(Ok(p)) => Some(p),
        Some(Err(refusal)) => return rescue::respond(session, ctx, refusal).await,
        None => match &host {
            Some(h) => super::authenticate(state, session, ctx, h).await,
            None => None,
        },
    };
    // The target app's access rules apply to forward auth as to proxying.
    let target_app = host
        .as_deref()
        .and_then(|h| state.router.route(Some(h), path.as_deref().unwrap_or("/")));
    if let (Some(p), Some(app)) = (&principal, target_app) {
        let method = session
            .req_header()
            .headers
            .get("x-forwarded-method")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("GET")
            .to_string();
        let h = host.clone().unwrap_or_default();
        if let Err(reason) = state.access(app, p, path.as_deref().unwrap_or("/"), &method, &h) {
            return rescue::respond(session, ctx, super::refused_by_policy(p, reason)).await;
        }
    }
    match principal {
        Some(p) => {
            ctx.outcome = Some(Outcome::Authenticated);
            let headers = p.headers(true);
            rescue::write(
                session,
                ctx,
                200,
                &headers,
                "text/plain; charset=utf-8",
                Bytes::new(),
            )
            .await
        }
        None => {
            let json = serde_json::json!({"error": "unauthorized", "error_description": "no valid session or token"});
            let headers = [(
                "www-authenticate",
                "Bearer realm=\"portcullis\"".to_string(),
            )];
            ctx.outcome = Some(Outcome::Unauthorized);
            rescue::write(
                session,
                ctx,
                401,
                &headers,
                "application/json",
                Bytes::from(json.to_string()),
            )
            .await
        }
    }
}

async fn userinfo(state: &Arc<State>, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<()> {
    let host = ctx.host.clone().unwrap_or_default();
    let principal = match super::authenticate_bearer(state, session, ctx.app).await {
        Some(Ok(p)) => Some(p),
        Some(Err(refusal)) => return rescue::respond(session, ctx, refusal).await,
        None => super::authenticate(state, session, ctx, &host).await,
    };
    match principal {
        Some(p) => {
            let body = serde_json::to_vec(&*p).unwrap_or_default();
            rescue::write(
                session,
                ctx,
                200,
                &[],
                "application/json",
                Bytes::from(body),
            )
            .await
        }
        None => rescue::respond(session, ctx, Rejection::Unauthenticated { rd: "/".into() }).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_paths_map_to_endpoints() {
        assert_eq!(classify("/_auth/sign_in"), AuthRoute::SignIn);
        assert_eq!(
            classify("/_auth/login/corp"),
            AuthRoute::Login("corp".into())
        );
        assert_eq!(
            classify("/_auth/callback/corp-2"),
            AuthRoute::Callback("corp-2".into())
        );
        assert_eq!(classify("/_auth/login/Corp"), AuthRoute::Unknown);
        assert_eq!(classify("/_auth/login/"), AuthRoute::Unknown);
        assert_eq!(classify("/_auth/login/a/b"), AuthRoute::Unknown);
        assert_eq!(classify("/_auth/nope"), AuthRoute::Unknown);
    }
}
