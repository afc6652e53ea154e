//! `/_auth/*`: the gateway's own endpoints, answered on every app host:
//! sign-in page, login start, callback, handoff to an app host, sign-out,
//! forward auth, userinfo.

use std::sync::Arc;

use bytes::Bytes;

use super::ctx::{Ctx, Outcome};
use super::exchange::{BodyError, Exchange};
use super::rescue::{self, LogoutRefusal, Rejection, SignInRefusal};
use super::{pages, AccessAsked, State};
use crate::audit::{Kind, Reason};
use crate::config::SourceKind;
use crate::identity::signin::Settlement;
use crate::identity::{NewSession, SessionRecord, User};
use crate::redirect::{safe_rd_for, target, Target};
use crate::session::cookie::{self, Lookup, Purpose};
use crate::session::handoff::{self, HandoffError, HandoffRecord};
use crate::session::service::StoreUnavailable;
use crate::session::{LoginState, SessionClaims};
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
    /// `/_auth/handoff`: an app host trades a one-time code for its own session cookie.
    Handoff,
    /// `/_auth/backchannel_logout/{slug}`: OIDC Back-Channel Logout 1.0.
    BackchannelLogout(String),
    /// `/_auth/check`: forward auth.
    Check,
    /// `/_auth/userinfo`: the current identity as JSON.
    Userinfo,
    /// `/_auth/jwks.json`: the keys that verify the identity assertion; public.
    Jwks,
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
            "handoff" => AuthRoute::Handoff,
            "check" => AuthRoute::Check,
            "userinfo" => AuthRoute::Userinfo,
            "jwks.json" => AuthRoute::Jwks,
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

fn query_param(session: &Exchange, name: &str) -> Option<String> {
    let q = session.req_header().uri.query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn method_is(session: &Exchange, m: &http::Method) -> bool {
    session.req_header().method == *m
}

/// The request's `rd`, kept when it is a relative path or an absolute URL on
/// the sign-in host or an app host, else `/`.
fn rd_param(state: &State, session: &Exchange) -> String {
    safe_rd_for(query_param(session, "rd").as_deref(), &state.origins)
}

/// Answers an `/_auth/*` request; always writes a response.
pub async fn handle(
    state: &Arc<State>,
    session: &mut Exchange,
    ctx: &mut Ctx,
    route: AuthRoute,
) -> Result<(), BodyError> {
    ctx.outcome = Some(Outcome::AuthEndpoint);
    let get_or_post = method_is(session, &http::Method::GET)
        || method_is(session, &http::Method::POST)
        || method_is(session, &http::Method::HEAD);
    if !get_or_post {
        let allow = match route {
            AuthRoute::BackchannelLogout(_) => "POST",
            AuthRoute::Jwks => "GET, HEAD",
            _ => "GET, HEAD, POST",
        };
        rescue::respond(session, ctx, Rejection::MethodNotAllowed { allow });
        return Ok(());
    }
    let host = ctx.host.clone().unwrap_or_default();
    if let AuthRoute::Login(slug) | AuthRoute::Link(slug) = &route {
        // Providers send callbacks to the sign-in host only: a flow starts there.
        if !state.origins.is_sign_in_host(&host) {
            let kind = if matches!(route, AuthRoute::Link(_)) {
                "link"
            } else {
                "login"
            };
            // A third party's initiation is judged here too (OIDC-34).
            if state
                .sources
                .get(slug)
                .is_some_and(|rt| foreign_initiation(session, &rt))
            {
                return refuse_foreign_initiation(session, ctx).await;
            }
            let rd = login_rd(state, session);
            let (mut location, headers) = to_sign_in_host(state, session, &host, kind, slug, &rd);
            if kind == "link" {
                match link_started_here(state, session, &host).await {
                    Ok(Some(tag)) => {
                        location.push_str("&session=");
                        location.push_str(&tag);
                    }
                    Ok(None) => {}
                    Err(refusal) => {
                        rescue::respond(session, ctx, refusal);
                        return Ok(());
                    }
                }
            }
            return redirect(session, ctx, location, headers).await;
        }
    }
    let source = match &route {
        AuthRoute::Login(s)
        | AuthRoute::Link(s)
        | AuthRoute::Callback(s)
        | AuthRoute::BackchannelLogout(s) => Some(s.clone()),
        _ => None,
    };
    let answered = answer(state, session, ctx, route, &host).await;
    // Every refusal of these endpoints is recorded in `ctx` where it is
    // decided and written here, once, with the request's facts.
    if let Some(reason) = ctx.refused.take() {
        state.audit.emit(&crate::audit::Event {
            reason: Some(reason),
            source: source.as_deref(),
            status: ctx.status,
            ..super::audit_facts(state, ctx, Kind::Refusal)
        });
    }
    answered
}

/// Dispatches an `/_auth/*` request to its endpoint on the host it may be answered on.
async fn answer(
    state: &Arc<State>,
    session: &mut Exchange,
    ctx: &mut Ctx,
    route: AuthRoute,
    host: &str,
) -> Result<(), BodyError> {
    match route {
        AuthRoute::SignIn => sign_in(state, session, ctx).await,
        AuthRoute::Login(slug) => login(state, session, ctx, &slug, None).await,
        AuthRoute::Handoff => take_handoff(state, session, ctx, host).await,
        AuthRoute::Link(slug) => link(state, session, ctx, &slug, host).await,
        AuthRoute::Callback(slug) => callback(state, session, ctx, &slug).await,
        AuthRoute::SignOut => sign_out(state, session, ctx).await,
        AuthRoute::BackchannelLogout(slug) => backchannel_logout(state, session, ctx, &slug).await,
        AuthRoute::Check => check(state, session, ctx).await,
        AuthRoute::Userinfo => userinfo(state, session, ctx).await,
        AuthRoute::Jwks => {
            jwks(state, session, ctx);
            Ok(())
        }
        AuthRoute::Unknown => {
            rescue::respond(session, ctx, Rejection::UnknownAuthEndpoint);
            Ok(())
        }
    }
}

/// A link asked for on app host `host`: the tag of the session signed in
/// here, which the sign-in host must hold to link (`None` where the session
/// cookie is shared with the sign-in host: it is the same cookie there).
/// Refused when no session is signed in here.
async fn link_started_here(
    state: &State,
    session: &Exchange,
    host: &str,
) -> Result<Option<String>, Rejection> {
    // On a host no app names no session is ever set (its logins land on
    // the sign-in host): nothing to bind to.
    if state.sessions.shares_cookie(host) || !state.origins.is_app_host(host) {
        return Ok(None);
    }
    match current_session(state, session, host, state.clock.now_unix()).await {
        Ok(Some((claims, _))) => Ok(Some(handoff::session_tag(&claims.sid))),
        Ok(None) => Err(Rejection::Unauthenticated {
            rd: rd_param(state, session),
        }),
        Err(_) => Err(Rejection::SessionUnavailable),
    }
}

/// `/_auth/link/{slug}`: a login flow bound to this very session (its id
/// goes into the login state); only for a browser signed in on `host`. A
/// link begun on an app host names its session (`session=`): the sign-in
/// host's own must be that one, else the session of whoever signed in
/// there since (another tab, another person at this browser) would get the
/// identity. (A link opened on the sign-in host itself carries no tag: it
/// binds to that host's session, as DESIGN's step 2 says.)
async fn link(
    state: &Arc<State>,
    session: &mut Exchange,
    ctx: &mut Ctx,
    slug: &str,
    host: &str,
) -> Result<(), BodyError> {
    let current = current_session(state, session, host, state.clock.now_unix()).await;
    let Ok(current) = current else {
        // Whether this browser is signed in cannot be told: not "signed out".
        // No audit line: this refusal has never had one (the reason it once
        // set was dropped before the audit point).
        rescue::respond(session, ctx, Rejection::SessionUnavailable);
        return Ok(());
    };
    let Some((claims, _)) = current else {
        let rd = rd_param(state, session);
        rescue::respond(session, ctx, Rejection::Unauthenticated { rd });
        return Ok(());
    };
    let started_by = query_param(session, "session");
    if started_by.is_some_and(|tag| tag != handoff::session_tag(&claims.sid)) {
        ctx.refused = Some(Reason::LinkSessionMismatch);
        let refusal = Rejection::WrongHost {
            reason: "This link was started by another session than the one signed in here.".into(),
            fix: "Sign in again on the app you started from, then link once more.".into(),
        };
        rescue::respond(session, ctx, refusal);
        return Ok(());
    }
    login(state, session, ctx, slug, Some(claims.sid.clone())).await
}

/// The path part of a relative `rd` (its query and fragment cut off),
/// canonical as a request's path is: what routing and access rules see.
fn rd_path(rd: &str) -> Result<crate::config::path::CanonicalPath, crate::config::path::PathError> {
    let raw = rd.split(['?', '#']).next().unwrap_or("/");
    crate::config::path::canonicalize_into(raw, String::new())
}

/// The app a sign-in is for: the one serving `rd` (on this host, or on the
/// host an absolute `rd` names), else that host's most specific app
/// (several apps may share a host by path prefix).
fn app_for_rd<'a>(state: &'a State, ctx: &Ctx, rd: &str) -> Option<&'a crate::config::App> {
    // Routed as a request to `rd` would be: on its canonical path (PRX-06).
    let path_of = |p: &str| {
        rd_path(p).map_or_else(
            |_| p.split(['?', '#']).next().unwrap_or("/").to_string(),
            |c| c.decision().to_string(),
        )
    };
    let index = match target(rd) {
        Target::Path(p) => state
            .router
            .route(ctx.host.as_deref(), &path_of(p))
            .or(ctx.app),
        Target::Absolute { host, path } => state
            .router
            .route(Some(&host), &path_of(&path))
            .or_else(|| state.router.route_host(Some(&host))),
    };
    index.and_then(|i| state.config.apps.get(i))
}

/// The cookie, on an app host, holding the nonce its handoff codes are bound
/// to; in the login cookies' namespace, so it never reaches an upstream and
/// sign-out clears it.
fn handoff_cookie_name(state: &State) -> String {
    cookie::flow_cookie_name(&state.sessions.login_cookie_name, "handoff")
}

/// Where a login (or link) asked for on `host`, which is not the sign-in
/// host, continues: the same endpoint on the sign-in host. On an app host,
/// `rd` is made absolute on `host` (so the browser is handed back there) and
/// the handoff is bound to this browser: a nonce cookie on `host` (kept if
/// one is there, so logins in several tabs share it), its hash sent along as
/// `handoff`; an absolute `rd` on another host is bound there instead (the
/// sign-in host sends the browser through that host's own login). On a host
/// no app names (served by a host-less app) an absolute `rd` would not be
/// accepted: the person lands on the sign-in host.
fn to_sign_in_host(
    state: &State,
    session: &Exchange,
    host: &str,
    kind: &str,
    slug: &str,
    rd: &str,
) -> (String, Vec<(&'static str, String)>) {
    let origins = &state.origins;
    let sign_in = origins.origin_of(&origins.sign_in_host);
    let encode =
        |v: &str| -> String { url::form_urlencoded::byte_serialize(v.as_bytes()).collect() };
    if !origins.is_app_host(host) {
        let rd = match target(rd) {
            Target::Path(path) => path.to_string(),
            Target::Absolute { .. } => rd.to_string(),
        };
        return (
            format!("{sign_in}/_auth/{kind}/{slug}?rd={}", encode(&rd)),
            Vec::new(),
        );
    }
    let (rd, elsewhere) = match target(rd) {
        Target::Path(path) => (format!("{}{path}", origins.origin_of(host)), false),
        Target::Absolute { host: rd_host, .. } => (rd.to_string(), rd_host != host),
    };
    if elsewhere || state.sessions.shares_cookie(host) {
        // The shared cookie reaches this host: no handoff, nothing to bind.
        // An `rd` on another host is handed back there through that host's
        // own login, which binds the handoff to its own cookie: a binding
        // made here could never be shown there.
        return (
            format!("{sign_in}/_auth/{kind}/{slug}?rd={}", encode(&rd)),
            Vec::new(),
        );
    }
    let name = handoff_cookie_name(state);
    let held = {
        let headers = session.req_header().headers.get_all(http::header::COOKIE);
        match cookie::find(headers.iter().filter_map(|v| v.to_str().ok()), &name) {
            Lookup::One(v) if handoff::well_formed(v) => Some(v.to_string()),
            _ => None,
        }
    };
    let Some(nonce) = held.or_else(|| flow::random_token().ok()) else {
        // No randomness: no binding; the sign-in host sends the browser back here to retry.
        return (
            format!("{sign_in}/_auth/{kind}/{slug}?rd={}", encode(&rd)),
            Vec::new(),
        );
    };
    let set = cookie::set_cookie(
        &name,
        &nonce,
        flow::LOGIN_STATE_SECS as i64,
        state.sessions.secure,
        false,
    );
    let location = format!(
        "{sign_in}/_auth/{kind}/{slug}?rd={}&handoff={}",
        encode(&rd),
        handoff::binding_of(&nonce)
    );
    (location, vec![("set-cookie", set)])
}

/// Where the browser goes once the sign-in host holds session `sid`: `rd`
/// itself when it is on the sign-in host or under the shared cookie domain,
/// else the handoff URL on `rd`'s host with a fresh one-time code bound to
/// `binding`. Without a binding (a login not started on that host) the
/// browser is sent to that host's own login for `slug` first, which comes
/// back here with one.
async fn hand_back(
    state: &State,
    sid: &str,
    rd: &str,
    binding: Option<&str>,
    slug: &str,
    now: u64,
) -> Result<String, Refused> {
    let (host, path) = match target(rd) {
        Target::Absolute { host, path }
            if !state.origins.is_sign_in_host(&host) && !state.sessions.shares_cookie(&host) =>
        {
            (host, path)
        }
        _ => return Ok(rd.to_string()),
    };
    let Some(binding) = binding else {
        let path: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
        return Ok(format!(
            "{}/_auth/login/{slug}?rd={path}",
            state.origins.origin_of(&host)
        ));
    };
    let code = flow::random_token().map_err(|e| (SignInRefusal::Internal, e.to_string()))?;
    let record = HandoffRecord {
        session_id: sid.to_string(),
        host: host.clone(),
        rd: rd.to_string(),
        binding: binding.to_string(),
        expires_at: i64::try_from(now + handoff::HANDOFF_SECS).unwrap_or(i64::MAX),
    };
    state
        .sessions
        .store()
        .create_handoff(&handoff::code_key(&code), &record, now as i64)
        .await
        .map_err(|e| (SignInRefusal::StoreUnavailable, e.to_string()))?;
    Ok(handoff::url(&state.origins.origin_of(&host), &code))
}

/// `GET /_auth/handoff?code=…` on an app host: takes the code from the
/// store (once, on whichever replica asks first), checks its host and age,
/// sets this host's cookie for the code's session and redirects to the
/// code's `rd` (never a query parameter's).
async fn take_handoff(
    state: &Arc<State>,
    session: &mut Exchange,
    ctx: &mut Ctx,
    host: &str,
) -> Result<(), BodyError> {
    let now = state.clock.now_unix();
    let refused = SignInRefusal::HandoffRefused;
    let Some(code) = query_param(session, "code").filter(|c| !c.is_empty()) else {
        return refuse(session, ctx, refused, &HandoffError::Unknown, Vec::new()).await;
    };
    let store = state.sessions.store();
    let record = match store.take_handoff(&handoff::code_key(&code)).await {
        Ok(Some(r)) => r,
        Ok(None) => return refuse(session, ctx, refused, &HandoffError::Unknown, Vec::new()).await,
        Err(e) => {
            let refusal = SignInRefusal::StoreUnavailable;
            return refuse(session, ctx, refusal, &e, Vec::new()).await;
        }
    };
    let nonce = {
        let headers = session.req_header().headers.get_all(http::header::COOKIE);
        let name = handoff_cookie_name(state);
        match cookie::find(headers.iter().filter_map(|v| v.to_str().ok()), &name) {
            Lookup::One(v) => Some(v.to_string()),
            _ => None,
        }
    };
    match handoff::check(&record, host, nonce.as_deref(), now) {
        Ok(()) => {}
        Err(e @ HandoffError::ForeignHost { .. }) => {
            ctx.span.in_scope(
                || tracing::warn!(request_id = %ctx.request_id, auth.error = %e, "handoff refused"),
            );
            let rejection = Rejection::WrongHost {
                reason: format!(
                    "This sign-in link was made for {}, but it was opened on {host}.",
                    record.host
                ),
                fix: format!(
                    "Open the application at {} and sign in again. Operator: make the proxy in front pass the Host header unchanged, so each app host receives its own handoff.",
                    state.origins.origin_of(&record.host)
                ),
            };
            ctx.refused = Some(Reason::WrongHost);
            rescue::respond(session, ctx, rejection);
            return Ok(());
        }
        Err(e) => return refuse(session, ctx, refused, &e, Vec::new()).await,
    }
    // The same session record: a sign-out or revocation anywhere ends this cookie too.
    let live = match store.session(&record.session_id).await {
        Ok(Some((r, user))) => {
            (!r.revoked && !user.disabled && r.expires_at > now as i64 && r.user_id == user.id)
                .then_some((r, user))
        }
        Ok(None) => None,
        Err(e) => {
            let refusal = SignInRefusal::StoreUnavailable;
            return refuse(session, ctx, refusal, &e, Vec::new()).await;
        }
    };
    let Some((r, user)) = live else {
        let detail = "the handoff's session has ended";
        return refuse(session, ctx, refused, &detail, Vec::new()).await;
    };
    let exp = u64::try_from(r.expires_at).unwrap_or_default();
    let set = match state.sessions.cookie_on(&r.id, &user.id, host, exp, now) {
        Ok(s) => s,
        Err(e) => return refuse(session, ctx, SignInRefusal::Internal, &e, Vec::new()).await,
    };
    ctx.span
        .in_scope(|| tracing::info!(user = %user.username, host, "session handed to an app host"));
    redirect(session, ctx, record.rd, vec![("set-cookie", set)]).await
}

async fn sign_in(
    state: &Arc<State>,
    session: &mut Exchange,
    ctx: &mut Ctx,
) -> Result<(), BodyError> {
    let rd = rd_param(state, session);
    let Some(app) = app_for_rd(state, ctx, &rd) else {
        rescue::respond(session, ctx, Rejection::NoApp);
        return Ok(());
    };
    let refused = refused_while_signed_in(state, session, ctx, &rd).await;
    let offered: Vec<pages::Offer> = app
        .sources
        .iter()
        .filter_map(|slug| state.config.source(slug))
        .map(|s| pages::Offer {
            slug: s.slug.clone(),
            name: s.name.clone(),
            kind: s.kind,
        })
        .collect();
    // A session that ended early says why (fixed wording per code, never reflected text).
    let notice = query_param(session, "reason")
        .as_deref()
        .and_then(crate::session::ended::EndReason::from_code)
        .map(|reason| {
            let provider = query_param(session, "source")
                .as_deref()
                .and_then(|slug| state.config.source(slug))
                .map_or_else(|| "the identity provider".to_string(), |s| s.name.clone());
            reason.wording(&provider)
        });
    let (status, html) = match refused {
        Some((reason, who)) => {
            let html = pages::sign_in_refused(&app.name, &offered, &rd, &who.user, &reason);
            // The access line names who was refused, and says so.
            ctx.principal = Some(who);
            ctx.outcome = Some(Outcome::Forbidden);
            (403, html)
        }
        None => (
            200,
            pages::sign_in_after(&app.name, &offered, &rd, notice.as_deref()),
        ),
    };
    rescue::write(
        session,
        ctx,
        status,
        &[],
        "text/html; charset=utf-8",
        Bytes::from(html),
    );
    Ok(())
}

/// Why the app serving `rd` on this host refuses the person this browser is
/// signed in as, if it does: forward auth answers 401 to a refused principal
/// as to an absent one (docs/design.md), and a proxy in front sends both
/// here (every recipe maps 401 to this page); signing in as the same person
/// again would only come back refused, so the page says why (403) beside
/// its buttons. Only for a page the browser navigates to (a script's or an
/// image's request on a sibling site learns nothing from its status), and
/// never for a public path.
async fn refused_while_signed_in(
    state: &State,
    session: &Exchange,
    ctx: &Ctx,
    rd: &str,
) -> Option<(String, Arc<crate::principal::Principal>)> {
    let host = ctx.host.as_deref()?;
    let navigates = session
        .req_header()
        .headers
        .get("sec-fetch-mode")
        .is_none_or(|m| m.as_bytes() == b"navigate");
    if !navigates {
        return None;
    }
    // A relative `rd`, or an absolute one on this host (Traefik's recipe
    // sends the whole URL): the cookie here is this host's.
    let rd = match target(rd) {
        Target::Path(p) => p.to_string(),
        Target::Absolute { host: h, path } if h == host => path,
        Target::Absolute { .. } => return None,
    };
    let path = rd_path(&rd).ok()?;
    if is_public_path(state, Some(host), Some(path.decision())) {
        return None;
    }
    let app = state.router.route(Some(host), path.decision())?;
    let now = state.clock.now_unix();
    let (_, who) = current_session(state, session, host, now).await.ok()??;
    if !super::app_takes(state, Some(app), &who) {
        return None;
    }
    let reason = state
        .access(app, &who, path.decision(), "GET", host)
        .err()?;
    Some((reason, who))
}

/// The session this browser carries on `host`, if it is valid and not
/// revoked: its claims (for the session id) and its principal. `Err`: a
/// session cookie whose record the store could not be asked for.
async fn current_session(
    state: &State,
    session: &Exchange,
    host: &str,
    now: u64,
) -> Result<Option<(Arc<SessionClaims>, Arc<crate::principal::Principal>)>, StoreUnavailable> {
    let read = {
        let headers = session.req_header().headers.get_all(http::header::COOKIE);
        state.sessions.read(
            || headers.iter().map(http::HeaderValue::as_bytes),
            host,
            now,
        )
    };
    let Some((claims, _)) = read else {
        return Ok(None);
    };
    let principal = state.sessions.principal(&claims, now).await?;
    Ok(principal.map(|p| (claims, p)))
}

/// Starts a flow through `slug`. `link` is the id of the session that
/// started a `/_auth/link` flow, `None` for an ordinary login.
async fn login(
    state: &Arc<State>,
    session: &mut Exchange,
    ctx: &mut Ctx,
    slug: &str,
    link: Option<String>,
) -> Result<(), BodyError> {
    let rd = login_rd(state, session);
    // Sent by an app host's login: the hash of that browser's handoff nonce.
    let binding = query_param(session, "handoff").filter(|b| handoff::well_formed(b));
    let app = app_for_rd(state, ctx, &rd);
    let offered = app.is_some_and(|a| a.sources.iter().any(|s| s == slug));
    let Some(rt) = state.sources.get(slug).filter(|_| offered) else {
        rescue::respond(session, ctx, Rejection::UnknownAuthEndpoint);
        return Ok(());
    };
    if foreign_initiation(session, &rt) {
        return refuse_foreign_initiation(session, ctx).await;
    }
    if link.is_none() && matches!(target(&rd), Target::Absolute { .. }) {
        let signed_in = already_signed_in(state, session, ctx, app, &rd, binding.as_deref(), slug);
        match signed_in.await {
            Some(Ok(location)) => return redirect(session, ctx, location, Vec::new()).await,
            Some(Err((refusal, detail))) => {
                return refuse(session, ctx, refusal, &detail, Vec::new()).await
            }
            None => {}
        }
    }
    let Some(endpoints) = rt.endpoints() else {
        return source_not_ready(session, ctx);
    };
    let redirect_uri = callback_url(&state.config.server.public_url, slug);
    if rt.config.kind == SourceKind::OAuth1 {
        // OAuth 1.0a: the provider is called before the browser goes there.
        let started = start_oauth1(state, &rt, slug, &redirect_uri, rd, link, binding).await;
        let start = match started {
            Ok(start) => start,
            Err(SourceError::NotReady) => return source_not_ready(session, ctx),
            Err(e) => {
                // Any refusal before the browser went anywhere is the provider failing us.
                let refusal = match e {
                    SourceError::Timeout(_) => SignInRefusal::ProviderTimeout,
                    _ => SignInRefusal::ProviderFailed,
                };
                return refuse(session, ctx, refusal, &e, Vec::new()).await;
            }
        };
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
            state.clock.now_unix(),
        )
    });
    let mut start = match started {
        Ok(s) => s,
        Err(FlowError::NotReady) => return source_not_ready(session, ctx),
        Err(e) => return refuse(session, ctx, (&e).into(), &e, Vec::new()).await,
    };
    start.state.handoff = binding;
    let cross_site = posts_back_cross_site(&rt.config);
    send_to_provider(state, session, ctx, slug, start, cross_site).await
}

/// The `rd` of a login: its `rd`, else the `target_link_uri` of a
/// third-party-initiated login (OIDC Core §4), under the same rules (OA2-13).
fn login_rd(state: &State, session: &Exchange) -> String {
    let raw = query_param(session, "rd").or_else(|| query_param(session, "target_link_uri"));
    safe_rd_for(raw.as_deref(), &state.origins)
}

/// A third-party-initiated login (OIDC Core §4) names its issuer in `iss`:
/// one that is not this source's is refused before anything is fetched
/// (SECURITY.md OIDC-34); a source whose issuer is not known knows none.
/// A source not ready yet judges nothing: the login answers 503 first.
fn foreign_initiation(session: &Exchange, rt: &crate::source::Runtime) -> bool {
    let Some(endpoints) = rt.endpoints() else {
        return false;
    };
    query_param(session, "iss").is_some_and(|iss| endpoints.issuer.as_deref() != Some(&*iss))
}

/// The 400 page for a third-party-initiated login naming another issuer.
async fn refuse_foreign_initiation(session: &mut Exchange, ctx: &mut Ctx) -> Result<(), BodyError> {
    let detail = "a third-party-initiated login named another issuer";
    let refusal = SignInRefusal::ForeignInitiation;
    refuse(session, ctx, refusal, &detail, Vec::new()).await
}

/// Whether the source's callback is a cross-site form POST (Apple, or any
/// source asking for `response_mode=form_post` in `authorize_params`): its
/// login cookie must be `SameSite=None` to travel with it, and is cleared
/// with the same attributes.
fn posts_back_cross_site(source: &crate::config::Source) -> bool {
    source.preset.is_some_and(|p| p.quirks.form_post)
        || source
            .authorize_params
            .get("response_mode")
            .is_some_and(|m| m == "form_post")
}

/// Answers a request through a source that is not ready yet (discovery pending).
fn source_not_ready(session: &mut Exchange, ctx: &mut Ctx) -> Result<(), BodyError> {
    ctx.refused = Some(Reason::SourceNotReady);
    rescue::respond(session, ctx, Rejection::SourceNotReady);
    Ok(())
}

/// One sign-in is one session: a login for another host while this browser
/// is signed in here (through a source `app` offers) is handed back at once,
/// without a round trip to the provider. `None`: not signed in here (or a
/// store that cannot be asked): sign in through the provider as usual.
async fn already_signed_in(
    state: &State,
    session: &Exchange,
    ctx: &Ctx,
    app: Option<&crate::config::App>,
    rd: &str,
    binding: Option<&str>,
    slug: &str,
) -> Option<Result<String, Refused>> {
    let host = ctx.host.clone().unwrap_or_default();
    let Ok(Some((claims, p))) =
        current_session(state, session, &host, state.clock.now_unix()).await
    else {
        return None;
    };
    if !app.is_some_and(|a| a.sources.contains(&p.source)) {
        return None;
    }
    Some(
        hand_back(
            state,
            &claims.sid,
            rd,
            binding,
            slug,
            state.clock.now_unix(),
        )
        .await,
    )
}

/// An OAuth 1.0a flow's start: the request token fetched from the provider
/// (before the browser goes there), the login state keyed by it.
async fn start_oauth1(
    state: &State,
    rt: &crate::source::Runtime,
    slug: &str,
    redirect_uri: &str,
    rd: String,
    link: Option<String>,
    binding: Option<String>,
) -> Result<flow::Start, SourceError> {
    let (url, pending) = state.sources.start_oauth1(rt, redirect_uri).await?;
    let login = LoginState {
        source: slug.to_string(),
        // The request token is this flow's one-time key.
        state: pending.token.clone(),
        nonce: None,
        pkce_verifier: None,
        rd,
        link,
        exp: state.clock.now_unix() + flow::LOGIN_STATE_SECS,
        oauth1: Some(pending),
        handoff: binding,
    };
    Ok(flow::Start { url, state: login })
}

/// Seals the flow's login state into its own cookie, named after its state
/// so that logins in several tabs do not overwrite each other (OA2-23),
/// drops the oldest when this browser already runs the most allowed, and
/// redirects to the provider.
async fn send_to_provider(
    state: &Arc<State>,
    session: &mut Exchange,
    ctx: &mut Ctx,
    slug: &str,
    start: flow::Start,
    cross_site: bool,
) -> Result<(), BodyError> {
    let sessions = &state.sessions;
    let name = cookie::flow_cookie_name(&sessions.login_cookie_name, &start.state.state);
    let sealed = match sessions
        .sealer
        .seal(&name, Purpose::LoginState, &start.state)
    {
        Ok(s) => s,
        Err(e) => return refuse(session, ctx, SignInRefusal::Internal, &e, Vec::new()).await,
    };
    let stale = {
        let headers = session.req_header().headers.get_all(http::header::COOKIE);
        let flows: Vec<(&str, Option<u64>)> = cookie::login_cookies(
            headers.iter().filter_map(|v| v.to_str().ok()),
            &sessions.login_cookie_name,
        )
        .into_iter()
        .map(|(n, v)| {
            let exp = sessions
                .sealer
                .open::<LoginState>(n, Purpose::LoginState, v)
                .ok()
                .map(|o| o.value.exp);
            (n, exp)
        })
        .collect();
        cookie::flows_to_drop(&flows, state.clock.now_unix())
    };
    let dropped = login_cookies_cleared(state, session, |n| {
        n != name && stale.iter().any(|s| s == n)
    });
    let mut headers = vec![
        ("location", start.url.to_string()),
        (
            "set-cookie",
            cookie::set_cookie(
                &name,
                &sealed,
                flow::LOGIN_STATE_SECS as i64,
                sessions.secure,
                cross_site,
            ),
        ),
    ];
    headers.extend(dropped.into_iter().map(|c| ("set-cookie", c)));
    ctx.span
        .in_scope(|| tracing::info!(auth.source = slug, "sign-in started"));
    {
        rescue::write(
            session,
            ctx,
            302,
            &headers,
            "text/plain; charset=utf-8",
            Bytes::new(),
        );
        Ok(())
    }
}

/// Reads a request body up to [`MAX_BODY`]; `None` when it is larger. The
/// whole body must arrive within `within` (`server.request_header_timeout`):
/// these bodies are small forms, and a request under way holds its
/// connection's slot, which no idle timeout reclaims.
async fn read_body(
    session: &mut Exchange,
    within: std::time::Duration,
) -> Result<Option<Vec<u8>>, BodyError> {
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            if body.len() + chunk.len() > MAX_BODY {
                return Ok(None);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or(Err(BodyError::TooSlow))
}

/// The key a callback names its flow by: `state`, or for OAuth 1.0a the
/// request token (`oauth_token`, or `denied` when the person refused).
fn flow_key(params: &str, oauth1: bool) -> Option<String> {
    let names: &[&str] = if oauth1 {
        &["oauth_token", "denied"]
    } else {
        &["state"]
    };
    names.iter().find_map(|want| {
        url::form_urlencoded::parse(params.as_bytes())
            .find(|(k, v)| k == want && !v.is_empty())
            .map(|(_, v)| v.into_owned())
    })
}

/// `/_auth/callback/{slug}`: the provider's answer to a flow started here.
/// The flow's login state is checked and used once, the identity proven and
/// settled in the directory, then the session cookie set and the browser
/// sent back to where it started.
async fn callback(
    state: &Arc<State>,
    session: &mut Exchange,
    ctx: &mut Ctx,
    slug: &str,
) -> Result<(), BodyError> {
    let Some(params) = callback_params(session, state.config.server.request_header_timeout).await?
    else {
        rescue::respond(session, ctx, Rejection::TooLarge);
        return Ok(());
    };
    let Some(rt) = state.sources.get(slug) else {
        rescue::respond(session, ctx, Rejection::UnknownAuthEndpoint);
        return Ok(());
    };
    let here = ctx.host.clone().unwrap_or_default();
    if !state.origins.is_sign_in_host(&here) {
        ctx.refused = Some(Reason::WrongHost);
        rescue::respond(session, ctx, callback_off_sign_in_host(state, &here, slug));
        return Ok(());
    }
    let oauth1 = rt.config.kind == SourceKind::OAuth1;
    // This flow's own cookie, found by the state the provider sends back;
    // other tabs' flows are left alone (OA2-23).
    let name = flow_key(&params, oauth1)
        .map(|key| cookie::flow_cookie_name(&state.sessions.login_cookie_name, &key));
    let login = name
        .as_deref()
        .and_then(|name| sealed_login_state(state, session, name));
    // The login state is one-time: every answer from here clears it
    // (docs/security.md, "Refused sign-in"), with the attributes it was set with.
    let cross_site = posts_back_cross_site(&rt.config);
    let clear_login = login_cookies_to_clear(state, session, name.as_deref(), cross_site);
    let now = state.clock.now_unix();
    let answered = if oauth1 {
        oauth1_callback(state, &rt, slug, &params, login, now).await
    } else {
        let cb = Callback::parse(&params);
        code_callback(state, &rt, slug, &cb, &params, login, now).await
    };
    let (login, proven) = match answered {
        Ok(done) => done,
        Err((refusal, detail)) => {
            return refuse(session, ctx, refusal, &detail, clear_login).await;
        }
    };
    let host = here;
    let signed_in = settle_sign_in(state, session, &rt, slug, &login, &proven, &host, now).await;
    let (record, user, settlement, note) = match signed_in {
        Ok(done) => done,
        Err((refusal, detail)) => {
            return refuse(session, ctx, refusal, &detail, clear_login).await;
        }
    };
    let set = match state.sessions.cookie_for(&record, &user, &host, now) {
        Ok(s) => s,
        Err(e) => return refuse(session, ctx, SignInRefusal::Internal, &e, clear_login).await,
    };
    let mut headers = clear_login;
    headers.push(("set-cookie", set));
    let signed = SignedInAs {
        user: &user,
        settlement,
        note,
    };
    send_back_signed_in(
        state, session, ctx, slug, &login, &record.id, signed, headers, now,
    )
    .await
}

/// The `Set-Cookie` lines that end a callback's login state, whatever its
/// answer: the cookie its `state` names, with the attributes it was set with.
/// No state names no flow (OA2-01): the answer belongs to none of this
/// browser's flows, and every one of them is cleared (REJECT-LOGIN). A state
/// that names no live flow clears only its own name, so a late callback of a
/// tab whose flow was evicted does not end the others (OA2-23).
fn login_cookies_to_clear(
    state: &State,
    session: &Exchange,
    name: Option<&str>,
    cross_site: bool,
) -> Vec<(&'static str, String)> {
    let secure = state.sessions.secure;
    let cleared = match name {
        Some(n) => vec![cookie::clear_cookie(n, secure, cross_site)],
        None => login_cookies_cleared(state, session, |_| true),
    };
    cleared.into_iter().map(|c| ("set-cookie", c)).collect()
}

/// `Set-Cookie` lines deleting the login cookies this browser sent that
/// `which` picks, each with the attributes it was set with (SES-16,
/// REJECT-LOGIN): `SameSite=None` for a flow whose source posts its answer
/// back cross-site, as it was set; the default for one that does not open.
fn login_cookies_cleared(
    state: &State,
    session: &Exchange,
    which: impl Fn(&str) -> bool,
) -> Vec<String> {
    let sessions = &state.sessions;
    let sent = session.req_header().headers.get_all(http::header::COOKIE);
    cookie::login_cookies(
        sent.iter().filter_map(|v| v.to_str().ok()),
        &sessions.login_cookie_name,
    )
    .into_iter()
    .filter(|(n, _)| which(n))
    .map(|(n, v)| {
        let cross_site = sessions
            .sealer
            .open::<LoginState>(n, Purpose::LoginState, v)
            .ok()
            .and_then(|o| state.config.source(&o.value.source))
            .is_some_and(posts_back_cross_site);
        cookie::clear_cookie(n, sessions.secure, cross_site)
    })
    .collect()
}

/// A callback's parameters: the form of a POST (`form_post`), else the
/// query. `None`: a form larger than [`MAX_BODY`].
async fn callback_params(
    session: &mut Exchange,
    within: std::time::Duration,
) -> Result<Option<String>, BodyError> {
    if method_is(session, &http::Method::POST) {
        return Ok(read_body(session, within)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()));
    }
    Ok(Some(
        session
            .req_header()
            .uri
            .query()
            .unwrap_or_default()
            .to_string(),
    ))
}

/// The refusal of a callback that reached `here`, not the sign-in host. The
/// login state lives on the sign-in host: here it could only fail as "not
/// started in this browser", which hides the real problem.
fn callback_off_sign_in_host(state: &State, here: &str, slug: &str) -> Rejection {
    let callback = callback_url(&state.config.server.public_url, slug);
    Rejection::WrongHost {
        reason: format!(
            "The provider sent this sign-in back to {here}, but sign-ins finish on {} (server.public_url).",
            state.origins.sign_in_host
        ),
        fix: format!(
            "Operator: register {callback} as the redirect URI at the provider (`portcullis check` prints it), or set server.public_url to the address people sign in at. Then sign in again."
        ),
    }
}

/// The login state sealed in this browser's cookie `name`, if there is
/// exactly one such cookie and it opens.
fn sealed_login_state(state: &State, session: &Exchange, name: &str) -> Option<LoginState> {
    let headers = session.req_header().headers.get_all(http::header::COOKIE);
    match cookie::find(headers.iter().filter_map(|v| v.to_str().ok()), name) {
        Lookup::One(v) => state
            .sessions
            .sealer
            .open::<LoginState>(name, Purpose::LoginState, v)
            .ok()
            .map(|o| o.value),
        _ => None,
    }
}

/// A settled sign-in: the new session's record, its user, how the identity
/// was settled, and a note to show first (an enrollment that needs explaining).
type SignedIn = (NewSession, User, Settlement, Option<&'static str>);

/// A proven identity made a session: the link target (for a link flow),
/// a new session record, and the directory's settlement.
#[allow(clippy::too_many_arguments)]
async fn settle_sign_in(
    state: &Arc<State>,
    session: &Exchange,
    rt: &crate::source::Runtime,
    slug: &str,
    login: &LoginState,
    proven: &crate::source::Proven,
    host: &str,
    now: u64,
) -> Result<SignedIn, Refused> {
    let link_to = link_target(state, session, login, host, now).await?;
    let sessions = &state.sessions;
    let record = sessions
        .new_record(
            slug,
            now,
            proven.id_token.clone(),
            proven.oidc_sid.clone(),
            &proven.claims,
            // Kept only where an app passes them upstream: a token nobody needs
            // is a token that cannot leak.
            proven.tokens.as_ref().filter(|_| {
                state
                    .config
                    .apps
                    .iter()
                    .any(|a| a.pass_access_token && a.sources.iter().any(|s| s == slug))
            }),
        )
        .map_err(|e| (SignInRefusal::Internal, e.to_string()))?;
    let settled = crate::identity::signin::settle(
        sessions.store(),
        &rt.config,
        &rt.policies,
        &proven.identity,
        &proven.claims,
        link_to.as_ref(),
        &record,
        now as i64,
    )
    .await;
    let (user, settlement, note) = settled.map_err(|e| {
        let detail = e.to_string();
        (e.into(), detail)
    })?;
    Ok((record, user, settlement, note))
}

/// The user a flow links to. Only a flow started by /_auth/link links, and
/// only while the session that started it is still this browser's. An
/// ordinary login ignores any session the browser carries: a planted one
/// must not capture this identity (SES-08); the new session cookie replaces it.
async fn link_target(
    state: &State,
    session: &Exchange,
    login: &LoginState,
    host: &str,
    now: u64,
) -> Result<Option<User>, Refused> {
    let Some(sid) = &login.link else {
        return Ok(None);
    };
    let user = match current_session(state, session, host, now).await {
        Ok(Some((claims, p))) if claims.sid == *sid => p.user_id.clone(),
        Ok(_) => None,
        Err(StoreUnavailable) => {
            let detail = "the linking session could not be read: the store is unavailable";
            return Err((SignInRefusal::StoreUnavailable, detail.to_string()));
        }
    };
    // DESIGN step 2 links only while "that session is still the browser's";
    // otherwise the callback goes on as an ordinary sign-in (step 3).
    let Some(user_id) = user else {
        tracing::info!(
            "the session that started the link flow is gone or changed: an ordinary sign-in"
        );
        return Ok(None);
    };
    match state.sessions.store().user(&user_id).await {
        Ok(Some(u)) => Ok(Some(u)),
        Ok(None) => {
            tracing::info!("the linking session's user is gone: an ordinary sign-in");
            Ok(None)
        }
        Err(e) => Err((SignInRefusal::StoreUnavailable, e.to_string())),
    }
}

/// The audit line of a finished sign-in, naming the app the person is
/// signing in to (not only the host's).
fn audit_sign_in(
    state: &State,
    ctx: &Ctx,
    slug: &str,
    login: &LoginState,
    user: &User,
    settlement: Settlement,
) {
    let kind = match settlement {
        Settlement::Authenticated => Kind::SignIn,
        Settlement::Linked => Kind::Link,
        Settlement::Enrolled => Kind::Enroll,
    };
    let facts = super::audit_facts(state, ctx, kind);
    state.audit.emit(&crate::audit::Event {
        app: app_for_rd(state, ctx, &login.rd)
            .map(|a| a.name.as_str())
            .or(facts.app),
        source: Some(slug),
        user_id: Some(&user.id),
        username: Some(&user.username),
        ..facts
    });
}

/// Who a settled sign-in signed in, what it did to the directory, and the
/// note of an enrollment that needs explaining.
struct SignedInAs<'a> {
    user: &'a User,
    settlement: Settlement,
    note: Option<&'static str>,
}

/// Sends a browser the sign-in host now holds session `sid` for to where
/// it started. The sign-in host has its cookie now; another app host gets
/// its own by a handoff. Audited once the browser is sent on; a handoff the
/// store could not keep is a refusal, the session is revoked again (best
/// effort: the store just failed), and only what the sign-in wrote to the
/// directory (an enrollment, a link), which stands, is audited beside it.
/// An enrollment that needs explaining logs its note: the callback's answer
/// is always an immediate redirect (SECURITY.md OA2-15). `headers` set the
/// session cookie; a refusal here sets none.
#[allow(clippy::too_many_arguments)]
async fn send_back_signed_in(
    state: &State,
    session: &mut Exchange,
    ctx: &mut Ctx,
    slug: &str,
    login: &LoginState,
    sid: &str,
    signed: SignedInAs<'_>,
    headers: Vec<(&'static str, String)>,
    now: u64,
) -> Result<(), BodyError> {
    let SignedInAs {
        user,
        settlement,
        note,
    } = signed;
    let handed = hand_back(state, sid, &login.rd, login.handoff.as_deref(), slug, now);
    let location = match handed.await {
        Ok(l) => l,
        Err((refusal, detail)) => {
            if settlement != Settlement::Authenticated {
                audit_sign_in(state, ctx, slug, login, user, settlement);
            }
            // A failure is logged by `revoke`; the refusal stands either way.
            let _revoked = state.sessions.revoke(sid).await;
            // Every refusal sets no session: only the login cookie's clearing goes.
            let session_cookie = format!("{}=", state.sessions.cookie_name);
            let clearing = headers
                .into_iter()
                .filter(|(_, v)| !v.starts_with(&session_cookie))
                .collect();
            return refuse(session, ctx, refusal, &detail, clearing).await;
        }
    };
    audit_sign_in(state, ctx, slug, login, user, settlement);
    ctx.span
        .in_scope(|| tracing::info!(auth.source = slug, user = %user.username, "signed in"));
    if let Some(note) = note {
        ctx.span
            .in_scope(|| tracing::info!(auth.source = slug, note, "enrolled"));
    }
    redirect(session, ctx, location, headers).await
}

/// A redirect to `location`; 303 when answering a POST so the browser follows
/// with GET (PRX-27), else 302.
async fn redirect(
    session: &mut Exchange,
    ctx: &mut Ctx,
    location: String,
    mut headers: Vec<(&'static str, String)>,
) -> Result<(), BodyError> {
    let status = if method_is(session, &http::Method::POST) {
        303
    } else {
        302
    };
    headers.insert(0, ("location", location));
    {
        rescue::write(
            session,
            ctx,
            status,
            &headers,
            "text/plain; charset=utf-8",
            Bytes::new(),
        );
        Ok(())
    }
}

/// A refusal's kind, and its detail for the log only.
type Refused = (SignInRefusal, String);

fn flow_refused(e: FlowError) -> Refused {
    ((&e).into(), e.to_string())
}

fn source_refused(e: SourceError) -> Refused {
    ((&e).into(), e.to_string())
}

/// An OAuth 2.0 / OpenID Connect callback: `state` (and `iss`) checked
/// against this browser's login state, the state used once (OIDC-11), then
/// the code exchanged and the identity proven.
async fn code_callback(
    state: &Arc<State>,
    rt: &crate::source::Runtime,
    slug: &str,
    cb: &Callback,
    params: &str,
    login: Option<LoginState>,
    now: u64,
) -> Result<(LoginState, crate::source::Proven), Refused> {
    let endpoints = rt.endpoints();
    let issuer = endpoints.as_ref().and_then(|e| e.issuer.clone());
    let iss_required = endpoints.as_ref().is_some_and(|e| e.iss_in_response);
    // A source whose issuer is not known cannot compare an `iss`; one that
    // names another source's issuer is refused as a mix-up (OA2-09).
    let foreign = |iss: &str| state.sources.is_issuer_of_another(slug, iss);
    if issuer.is_none() && cb.iss.as_deref().is_some_and(foreign) {
        return Err(flow_refused(FlowError::Issuer));
    }
    let code = flow::check_callback(
        cb,
        login.as_ref(),
        slug,
        issuer.as_deref(),
        iss_required,
        now,
    )
    .map_err(flow_refused)?;
    let login = login.ok_or_else(|| flow_refused(FlowError::NoLoginState))?;
    use_login_state(state, &login, now).await?;
    // Apple's form_post carries the person's name once, as `user`.
    let user_field = url::form_urlencoded::parse(params.as_bytes())
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.into_owned());
    let redirect_uri = callback_url(&state.config.server.public_url, slug);
    let proven = state
        .sources
        .finish(rt, &code, &login, &redirect_uri, user_field.as_deref(), now)
        .await
        .map_err(source_refused)?;
    Ok((login, proven))
}

/// Spends `login`'s state, once across every replica (OA2-03, OA1-04): a
/// replay is refused as a flow this browser did not start.
async fn use_login_state(state: &State, login: &LoginState, now: u64) -> Result<(), Refused> {
    match state
        .sessions
        .use_once(&format!("state:{}:{}", login.source, login.state), now)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(flow_refused(FlowError::NoLoginState)),
        Err(StoreUnavailable) => Err((
            SignInRefusal::StoreUnavailable,
            "the store could not record the login state's use".to_string(),
        )),
    }
}

/// An OAuth 1.0a callback: this browser's login state must name the source
/// and the very request token the provider sends back (OA1-02); the state is
/// used once, so a verifier is never traded twice (OA1-04).
async fn oauth1_callback(
    state: &Arc<State>,
    rt: &crate::source::Runtime,
    slug: &str,
    params: &str,
    login: Option<LoginState>,
    now: u64,
) -> Result<(LoginState, crate::source::Proven), Refused> {
    let no_state = || flow_refused(FlowError::NoLoginState);
    let login = login
        .filter(|l| l.source == slug && l.exp >= now)
        .ok_or_else(no_state)?;
    let pending = login.oauth1.clone().ok_or_else(no_state)?;
    let cb = crate::source::oauth1::Callback::parse(params).map_err(|e| {
        let refusal = if matches!(e, crate::source::oauth1::CallbackError::Denied) {
            SignInRefusal::ProviderDenied
        } else {
            SignInRefusal::Malformed
        };
        (refusal, e.to_string())
    })?;
    cb.check_token(&pending.token)
        .map_err(|e| (SignInRefusal::ForeignResponse, e.to_string()))?;
    use_login_state(state, &login, now).await?;
    let proven = state
        .sources
        .finish_oauth1(rt, &pending, &cb.verifier)
        .await
        .map_err(source_refused)?;
    Ok((login, proven))
}

/// Answers a refused sign-in: the fixed wording on the page, the detail in
/// the log under the request id the page shows.
async fn refuse(
    session: &mut Exchange,
    ctx: &mut Ctx,
    refusal: SignInRefusal,
    detail: &(dyn std::fmt::Display + Sync),
    extra: Vec<(&'static str, String)>,
) -> Result<(), BodyError> {
    let status = refusal.status();
    ctx.refused = Some(refusal.reason());
    ctx.span.in_scope(|| {
        tracing::warn!(
            request_id = %ctx.request_id,
            auth.refusal = ?refusal,
            http.status = status,
            auth.error = %detail,
            "sign-in refused"
        )
    });
    {
        rescue::respond_with(session, ctx, Rejection::SignIn(refusal), extra);
        Ok(())
    }
}

/// GET: a page whose one button POSTs here. POST: only from one of our own
/// origins (SES-16) — revoke the session, clear the session and login
/// cookies, then RP-initiated logout where the source has an
/// `end_session_endpoint`, else 303 to `rd`.
async fn sign_out(
    state: &Arc<State>,
    session: &mut Exchange,
    ctx: &mut Ctx,
) -> Result<(), BodyError> {
    let rd = rd_param(state, session);
    if !method_is(session, &http::Method::POST) {
        // A link, an image or a prefetch from anywhere lands here: sign nobody out.
        let html = pages::sign_out(&rd);
        let csp = rescue::page_csp(&sign_out_form_targets(state));
        rescue::write(
            session,
            ctx,
            200,
            &[("content-security-policy", csp)],
            "text/html; charset=utf-8",
            Bytes::from(html),
        );
        return Ok(());
    }
    if let Err(why) = sign_out_same_origin(state, session) {
        ctx.span
            .in_scope(|| tracing::info!(reason = %why, "cross-origin sign-out refused"));
        ctx.refused = Some(Reason::CrossOrigin);
        rescue::respond(session, ctx, Rejection::CrossOriginSignOut);
        return Ok(());
    }
    let sessions = state.sessions.clone();
    let host = ctx.host.clone().unwrap_or_default();
    let claims = {
        let headers = session.req_header().headers.get_all(http::header::COOKIE);
        sessions.read(
            || headers.iter().map(http::HeaderValue::as_bytes),
            &host,
            state.clock.now_unix(),
        )
    };
    let mut location = rd.clone();
    if let Some((c, _)) = claims {
        let record = sessions.record(&c.sid).await;
        let who = sessions
            .principal(&c, state.clock.now_unix())
            .await
            .ok()
            .flatten();
        if sessions.revoke(&c.sid).await.is_err() {
            // Not ended in the store: clearing the cookie would claim a
            // sign-out that a copy of the cookie outlives.
            ctx.refused = Some(Reason::StoreUnavailable);
            rescue::respond(session, ctx, Rejection::SessionUnavailable);
            return Ok(());
        }
        state.audit.emit(&crate::audit::Event {
            user_id: Some(&c.uid),
            username: who.as_ref().map(|p| p.user.as_str()),
            source: record.as_ref().map(|r| r.source.as_str()),
            ..super::audit_facts(state, ctx, Kind::SignOut)
        });
        if let Some(url) = record.and_then(|r| provider_logout(state, &r, &rd)) {
            location = url;
        }
    }
    // Login cookies too: a flow started before signing out must not finish after it.
    let mut headers = vec![("set-cookie", sessions.clear(&host))];
    {
        let cleared = login_cookies_cleared(state, session, |_| true);
        headers.extend(cleared.into_iter().map(|c| ("set-cookie", c)));
    }
    redirect(session, ctx, location, headers).await
}

/// Whether a sign-out POST comes from one of our own origins (SES-16): the
/// sign-in host or a host an app is served on.
fn sign_out_same_origin(
    state: &State,
    session: &Exchange,
) -> Result<(), crate::same_origin::CrossOrigin> {
    let req = session.req_header();
    let authority = req.uri.authority().map(|a| a.as_str()).or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
    });
    // The browser's scheme: https also behind a proxy that ends TLS in front
    // of a plain listener, which an https `public_url` says (its cookies are
    // then `Secure`: a browser sends them over https only).
    let scheme = if state.origins.scheme == "https" {
        "https"
    } else {
        state.scheme
    };
    // Only hosts the config names are ours (docs/design.md, "Several hosts").
    crate::same_origin::check(&req.headers, scheme, authority, |host| {
        state.origins.names_bare_host(host)
    })
}

/// RP-initiated logout: the provider's `end_session_endpoint` for the
/// source of session `r`, with the hint, the client and the way back to
/// `rd`, so the provider ends its own session too. `None`: the source has none.
fn provider_logout(state: &State, r: &SessionRecord, rd: &str) -> Option<String> {
    let rt = state.sources.get(&r.source)?;
    let mut url = rt.endpoints()?.end_session.clone()?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(t) = &r.id_token {
            q.append_pair("id_token_hint", t);
        }
        if let Some(id) = &rt.config.consumer_key {
            q.append_pair("client_id", id);
        }
        let back = match target(rd) {
            Target::Absolute { .. } => rd.to_string(),
            Target::Path(path) => format!(
                "{}{path}",
                state
                    .config
                    .server
                    .public_url
                    .origin()
                    .ascii_serialization()
            ),
        };
        q.append_pair("post_logout_redirect_uri", &back);
    }
    Some(url.to_string())
}

/// Where the sign-out form's answer may lead (browsers check `form-action`
/// on the redirects after a submission too): an absolute `rd` is the sign-in
/// host's or an app host's, and the provider's logout sends the browser back
/// to `public_url`, so every origin of ours (besides the page's own), then
/// the origins of the sources' `end_session_endpoint`s.
fn sign_out_form_targets(state: &State) -> Vec<String> {
    let mut providers: Vec<String> = state
        .config
        .sources
        .iter()
        .filter_map(|s| state.sources.get(&s.slug)?.endpoints()?.end_session.clone())
        .map(|u| u.origin())
        .filter(|o| o.is_tuple())
        .map(|o| o.ascii_serialization())
        .collect();
    providers.sort();
    let mut targets = state.origins.all();
    for p in providers {
        if !targets.contains(&p) {
            targets.push(p);
        }
    }
    targets
}

/// OIDC Back-Channel Logout 1.0: verify the `logout_token`, then revoke the
/// sessions of that `sid`/`sub` (other replicas within identity_cache_ttl).
async fn backchannel_logout(
    state: &Arc<State>,
    session: &mut Exchange,
    ctx: &mut Ctx,
    slug: &str,
) -> Result<(), BodyError> {
    let answered = logout_by_token(state, session, ctx, slug).await?;
    ctx.outcome = Some(Outcome::AuthEndpoint);
    match answered {
        Ok(()) => rescue::write(
            session,
            ctx,
            200,
            &[],
            "text/plain; charset=utf-8",
            Bytes::new(),
        ),
        Err(refusal) => rescue::refuse_logout(session, ctx, refusal),
    }
    Ok(())
}

/// The steps of a back-channel logout: a POSTed form naming a known
/// source, a `logout_token` that verifies and was not used before, then the
/// sessions it names revoked.
async fn logout_by_token(
    state: &Arc<State>,
    session: &mut Exchange,
    ctx: &mut Ctx,
    slug: &str,
) -> Result<Result<(), LogoutRefusal>, BodyError> {
    if !method_is(session, &http::Method::POST) {
        return Ok(Err(LogoutRefusal::NotPost));
    }
    let Some(rt) = state.sources.get(slug) else {
        return Ok(Err(LogoutRefusal::UnknownSource));
    };
    let Some(form) = read_body(session, state.config.server.request_header_timeout).await? else {
        return Ok(Err(LogoutRefusal::TooLarge));
    };
    let token = url::form_urlencoded::parse(&form)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned());
    let Some(token) = token else {
        return Ok(Err(LogoutRefusal::NoToken));
    };
    let request = match state
        .sources
        .verify_logout(&rt, &token, state.clock.now_unix())
        .await
    {
        Ok(r) => r,
        Err(e) => {
            // The detail (which check failed, a key fetch's URL) is for the log only.
            ctx.span.in_scope(|| tracing::info!(auth.source = slug, request_id = %ctx.request_id, auth.error = %e, "back-channel logout token refused"));
            return Ok(Err(LogoutRefusal::InvalidToken));
        }
    };
    // A logout token is one-time too (its `jti`): spent together with the
    // revocation, in one transaction, so a failure leaves the retry heard.
    let used = format!("jti:{slug}:{}", request.jti);
    let (sid, sub) = (request.sid.as_deref(), request.sub.as_deref());
    let now = state.clock.now_unix();
    match state.sessions.logout_once(&used, slug, sid, sub, now).await {
        Ok(Some(n)) => {
            state.sessions.forget_all();
            ctx.span.in_scope(|| {
                tracing::info!(auth.source = slug, revoked = n, "back-channel logout")
            });
            state.audit.emit(&crate::audit::Event {
                source: Some(slug),
                sessions: Some(n),
                ..super::audit_facts(state, ctx, Kind::BackchannelLogout)
            });
            Ok(Ok(()))
        }
        Ok(None) => Ok(Err(LogoutRefusal::Replayed)),
        Err(StoreUnavailable) => {
            ctx.span.in_scope(|| tracing::error!(request_id = %ctx.request_id, "store failed during back-channel logout"));
            Ok(Err(LogoutRefusal::StoreUnavailable))
        }
    }
}

/// The original request a forward-auth call is about: from `X-Original-URL`
/// and/or `X-Forwarded-Host`/`-Uri` (or `X-Original-URI`; a path without a
/// host is on the check's own host), believed only from trusted proxies, its
/// path canonicalised as a proxied request's is (PRX-06). `None` path: the
/// caller did not (or may not) say which path it asks about. `Err`: the path
/// it names is one the gateway would refuse, or two names of the target
/// differ, or one is sent twice, so the answer is a refusal, never "public".
fn forwarded_target(
    session: &Exchange,
    ctx: &Ctx,
) -> Result<(Option<String>, Option<String>), Rejection> {
    if !session.peer.trusted {
        return Ok((ctx.host.clone(), None));
    }
    let Named {
        hosts,
        paths,
        query_token,
    } = forwarded_names(&session.req_header().headers)?;
    // JWT-26 for the request asked about: a bearer header beside an
    // `access_token` in its query is ambiguous (an app may read the other).
    if query_token && super::bearer_token(session)?.is_some() {
        return Err(super::two_bearer_tokens());
    }
    if hosts.windows(2).any(|w| w.first() != w.last())
        || paths.windows(2).any(|w| w.first() != w.last())
    {
        return Err(ambiguous(
            "the forwarded request is named twice, differently (X-Original-URL, X-Forwarded-Uri, X-Original-URI, X-Forwarded-Host)",
        ));
    }
    // A path without a host is about the host the check was sent with:
    // deciding on `/` instead would pass a path-scoped rule by. A host
    // without a path asks about its `/`.
    Ok(match (hosts.into_iter().next(), paths.into_iter().next()) {
        (None, path) => (ctx.host.clone(), path.flatten()),
        (Some(host), Some(path)) => (host, path),
        (Some(host), None) => (host, decision_path("/")?),
    })
}

/// A forward-auth target the gateway will not decide on.
fn ambiguous(why: &'static str) -> Rejection {
    Rejection::Framing(super::framing::FramingError::AmbiguousPath(why))
}

/// The path the gateway decides on for a forwarded `raw` path; `Err` for
/// one it would refuse.
fn decision_path(raw: &str) -> Result<Option<String>, Rejection> {
    super::framing::check_path(raw)
        .map(|c| Some(c.decision().to_string()))
        .map_err(Rejection::Framing)
}

/// The hosts and the paths the forwarding names of a check give (as
/// `routing::request_host` and [`decision_path`] read them), in the order
/// the names are read.
struct Named {
    hosts: Vec<Option<String>>,
    paths: Vec<Option<String>>,
    /// A forwarded query carries an `access_token` parameter.
    query_token: bool,
}

/// What each forwarding name present says of the target: the hosts
/// (`X-Original-URL`, `X-Forwarded-Host`) and the paths (`X-Original-URL`,
/// `X-Forwarded-Uri`, nginx's customary `X-Original-URI`). Several may come
/// together (Authelia's nginx snippets send `X-Original-URL` beside
/// `X-Forwarded-Host` and `X-Forwarded-Uri`); the caller believes them only
/// when they agree.
fn forwarded_names(headers: &http::HeaderMap) -> Result<Named, Rejection> {
    // A front proxy passes its client's headers on beside its own (nginx's
    // `auth_request`, Caddy's `forward_auth`): one name twice may be the
    // client's copy beside the proxy's, so it is refused rather than one of
    // them believed.
    let names = [
        "x-original-url",
        "x-forwarded-uri",
        "x-original-uri",
        "x-forwarded-host",
        "x-forwarded-method",
    ];
    if names
        .into_iter()
        .any(|n| headers.get_all(n).iter().count() > 1)
    {
        return Err(ambiguous(
            "the forwarded request is named more than once (X-Original-URL, X-Forwarded-Uri, X-Original-URI, X-Forwarded-Host, X-Forwarded-Method)",
        ));
    }
    // Two copies an earlier hop joined into one line (`/public/x, /private`,
    // `a.example, b.example`) are named twice too: a request target holds no
    // blank and a host no comma.
    let joined =
        |n: &str, s: &str| s.contains([' ', '\t']) || (n == "x-forwarded-host" && s.contains(','));
    let header = |n: &str| match headers.get(n) {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) if joined(n, s) => Err(ambiguous(
                "a forwarded header holds two values joined into one",
            )),
            Ok(s) => Ok(Some(s)),
            Err(_) => Err(ambiguous("a forwarded header is not visible ASCII")),
        },
    };
    let (mut hosts, mut paths) = (Vec::new(), Vec::new());
    let mut query_token = false;
    if let Some(u) = header("x-original-url")? {
        no_fragment(u)?;
        // Read as sent: a URL parser would resolve `..` and `%2e` before we could refuse them.
        let uri = u
            .parse::<http::Uri>()
            .map_err(|_| ambiguous("X-Original-URL is not a URL"))?;
        match uri.authority() {
            Some(authority) => hosts.push(
                crate::routing::request_host(Some(authority.as_str()), None)
                    .map_err(|_| ambiguous("X-Original-URL names no valid host"))?,
            ),
            // A path alone (IIS's spelling) names no host.
            None if u.starts_with('/') => {}
            None => return Err(ambiguous("X-Original-URL has no host")),
        }
        query_token |= super::has_access_token(uri.query());
        paths.push(decision_path(uri.path())?);
    }
    for n in ["x-forwarded-uri", "x-original-uri"] {
        if let Some(u) = header(n)? {
            no_fragment(u)?;
            let (path, query) = u.split_once('?').unwrap_or((u, ""));
            query_token |= super::has_access_token(Some(query));
            paths.push(decision_path(path)?);
        }
    }
    if let Some(h) = header("x-forwarded-host")? {
        hosts.push(
            crate::routing::request_host(None, Some(h))
                .map_err(|_| ambiguous("X-Forwarded-Host is not a valid host"))?,
        );
    }
    Ok(Named {
        hosts,
        paths,
        query_token,
    })
}

/// No request target holds a fragment (RFC 9112 §3.2): one after a public
/// path could hide `/../admin`, or an `access_token`, from forward auth
/// while an app that keeps it reads it.
fn no_fragment(target: &str) -> Result<(), Rejection> {
    match target.contains('#') {
        true => Err(ambiguous("a forwarded request target holds a fragment (#)")),
        false => Ok(()),
    }
}

/// `/_auth/check`: forward auth. 200 for a public path of the app asked
/// about, or for a principal that app admits (with its identity headers for
/// the proxy in front to copy); else 401, also for a principal the app
/// refuses (forward auth answers 200 or 401), or 400 for a target it
/// cannot read.
async fn check(state: &Arc<State>, session: &mut Exchange, ctx: &mut Ctx) -> Result<(), BodyError> {
    let (host, path) = match forwarded_target(session, ctx) {
        Ok(target) => target,
        Err(refusal) => {
            rescue::respond(session, ctx, refusal);
            return Ok(());
        }
    };
    // A public path of the app asked about needs no identity.
    if is_public_path(state, host.as_deref(), path.as_deref()) {
        rescue::write(
            session,
            ctx,
            200,
            &[],
            "text/plain; charset=utf-8",
            Bytes::new(),
        );
        return Ok(());
    }
    let target = host
        .as_deref()
        .and_then(|h| state.router.route(Some(h), path.as_deref().unwrap_or("/")));
    let principal = match &host {
        Some(h) => super::identify(state, session, ctx, h, target).await,
        // No host: no cookie applies, only a bearer token.
        None => super::authenticate_bearer(state, session, target)
            .await
            .transpose(),
    };
    let principal = match principal {
        Ok(p) => p,
        Err(refusal) => {
            rescue::respond(session, ctx, refusal);
            return Ok(());
        }
    };
    // A target no app serves has no access rules, so it admits nobody
    // (every app states who may access it); proxied, it would be a 404.
    if let (Some(p), None) = (&principal, target) {
        let reason = "No app is configured for this address.".to_string();
        super::refuse_access(state, session, ctx, p, reason, AccessAsked::ForwardAuth);
        return Ok(());
    }
    // The target app's access rules apply to forward auth as to proxying.
    if let (Some(p), Some(app)) = (&principal, target) {
        // The method asked about: believed only from a trusted proxy, like
        // the host and URI; anyone else's check is about its own request.
        let head = session.req_header();
        let method = head
            .headers
            .get("x-forwarded-method")
            .filter(|_| session.peer.trusted)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(if session.peer.trusted {
                "GET"
            } else {
                head.method.as_str()
            })
            .to_string();
        let h = host.clone().unwrap_or_default();
        if let Err(reason) = state.access(app, p, path.as_deref().unwrap_or("/"), &method, &h) {
            super::refuse_access(state, session, ctx, p, reason, AccessAsked::ForwardAuth);
            return Ok(());
        }
    }
    match principal {
        Some(p) => check_admits(state, session, ctx, &p, target),
        None => check_refuses(state, session, ctx),
    }
    Ok(())
}

/// Whether `path` (when the caller named one) is a public path of the app
/// `host` and `path` route to.
fn is_public_path(state: &State, host: Option<&str>, path: Option<&str>) -> bool {
    let Some(path) = path else {
        return false;
    };
    let app = state.router.route(host, path);
    app.and_then(|i| state.config.apps.get(i)).is_some_and(|a| {
        a.public_paths
            .iter()
            .any(|p| crate::config::path_has_prefix(path, p))
    })
}

/// Forward auth's 200 for principal `p`: its identity headers, and the
/// target app's claim headers under their own names, for the proxy in front
/// to copy (nginx `auth_request_set`, Traefik `authResponseHeaders`).
fn check_admits(
    state: &State,
    session: &mut Exchange,
    ctx: &mut Ctx,
    p: &crate::principal::Principal,
    target: Option<usize>,
) {
    ctx.outcome = Some(Outcome::Authenticated);
    let headers = p.headers(true);
    rescue::write(
        session,
        ctx,
        200,
        &headers,
        "text/plain; charset=utf-8",
        Bytes::new(),
    );
    // The access token never to a page's script (SES-17): a browser's fetch
    // of `/_auth/check` on an app host carries `Sec-Fetch-Site`, and could
    // read the answer's headers. A trusted proxy's check may pass its
    // client's fetch metadata on; other clients send none (Node's fetch
    // sends `Sec-Fetch-Mode` alone, which is why that one does not count).
    let to_script =
        !session.peer.trusted && session.req_header().headers.contains_key("sec-fetch-site");
    let app = target.and_then(|i| state.config.apps.get(i));
    if let (Some(app), Some(resp)) = (app, session.response.as_mut()) {
        for (name, value) in super::upstream::claim_headers(&app.claim_headers, &p.claims) {
            resp.headers_mut().insert(name, value);
        }
        if let Some(v) = ctx
            .access_token
            .as_deref()
            .filter(|_| !to_script)
            .and_then(|t| http::HeaderValue::from_str(t).ok())
        {
            resp.headers_mut()
                .insert(super::upstream::AUTH_REQUEST_ACCESS_TOKEN, v);
        }
    }
}

/// Forward auth's 401 (the proxy in front decides what a browser sees); a
/// session just ended says why, RFC 6750 style.
fn check_refuses(state: &State, session: &mut Exchange, ctx: &mut Ctx) {
    let ended = ctx.session_ended.take();
    let sign_in = check_sign_in(state, session, |rd| match ended.clone() {
        Some(e) => super::session_ended(state, rd, e),
        None => Rejection::Unauthenticated { rd },
    });
    let ended = ended.map(|e| super::session_ended(state, String::new(), e));
    let (json, challenge) = match ended {
        Some(Rejection::SessionEnded { description, .. }) => (
            serde_json::json!({"error": "invalid_token", "error_description": description, "request_id": ctx.request_id.as_str()}),
            format!(
                "Bearer realm=\"portcullis\", error=\"invalid_token\", error_description=\"{}\"",
                rescue::quoted_string(&description)
            ),
        ),
        _ => (
            serde_json::json!({"error": "unauthorized", "error_description": "no valid session or token", "request_id": ctx.request_id.as_str()}),
            "Bearer realm=\"portcullis\"".to_string(),
        ),
    };
    let mut headers = vec![("www-authenticate", challenge)];
    headers.extend(sign_in.map(|url| (rescue::CHECK_REDIRECT, url)));
    ctx.outcome = Some(Outcome::Unauthorized);
    rescue::write(
        session,
        ctx,
        401,
        &headers,
        "application/json",
        Bytes::from(json.to_string()),
    );
}

/// For a forward-auth 401 about a browser's request (asked by a trusted
/// proxy, `Accept: text/html`, no bearer token: what proxying would
/// redirect), the sign-in URL `refusal` (given the target's path and query
/// as `rd`) sends it to; `None` otherwise (an API client keeps the 401).
pub(crate) fn check_sign_in(
    state: &State,
    session: &Exchange,
    refusal: impl FnOnce(String) -> Rejection,
) -> Option<String> {
    let browser = session.peer.trusted
        && rescue::wants_html(session)
        && matches!(super::bearer_token(session), Ok(None));
    if !browser {
        return None;
    }
    let headers = &session.req_header().headers;
    let named = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    // The target as the browser sent it, query included (already checked
    // by `forwarded_target`): a relative one is kept, anything else is `/`.
    let raw: Option<String> = named("x-forwarded-uri")
        .or_else(|| named("x-original-uri"))
        .map(str::to_string)
        .or_else(|| {
            let url = named("x-original-url")?.parse::<http::Uri>().ok()?;
            url.path_and_query().map(|pq| pq.as_str().to_string())
        });
    let rd = match raw {
        Some(r) if r.starts_with('/') => safe_rd_for(Some(&r), &state.origins),
        _ => "/".to_string(),
    };
    rescue::sign_in_redirect(&refusal(rd))
}

/// `GET /_auth/jwks.json`: public, cacheable for a few minutes (a verifier
/// refetches on an unknown `kid` anyway, so a rotation is seen at once).
fn jwks(state: &State, session: &mut Exchange, ctx: &mut Ctx) {
    if method_is(session, &http::Method::POST) {
        let allow = "GET, HEAD";
        rescue::respond(session, ctx, Rejection::MethodNotAllowed { allow });
        return;
    }
    let cache = [("cache-control", "public, max-age=300".to_string())];
    rescue::write(
        session,
        ctx,
        200,
        &cache,
        "application/json",
        state.assertions.keys().jwks(),
    );
}

async fn userinfo(
    state: &Arc<State>,
    session: &mut Exchange,
    ctx: &mut Ctx,
) -> Result<(), BodyError> {
    let host = ctx.host.clone().unwrap_or_default();
    let bearer = super::authenticate_bearer_on_host(state, session, ctx.host.as_deref()).await;
    let principal = match bearer {
        Some(Ok(p)) => Some(p),
        Some(Err(refusal)) => {
            rescue::respond(session, ctx, refusal);
            return Ok(());
        }
        None => match super::authenticate(state, session, ctx, &host, false).await {
            Ok(found) => found,
            Err(_) => {
                rescue::respond(session, ctx, Rejection::SessionUnavailable);
                return Ok(());
            }
        },
    };
    match principal {
        Some(p) => {
            let body = serde_json::to_vec(&*p).unwrap_or_default();
            // A cookie sealed with a previous secret comes back sealed with
            // the current one, as on a proxied answer (SES-05).
            let reseal: Vec<(&'static str, String)> = ctx
                .reseal
                .take()
                .map(|c| ("set-cookie", c))
                .into_iter()
                .collect();
            rescue::write(
                session,
                ctx,
                200,
                &reseal,
                "application/json",
                Bytes::from(body),
            );
            Ok(())
        }
        None => {
            rescue::respond(session, ctx, Rejection::NoIdentity);
            Ok(())
        }
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
        assert_eq!(classify("/_auth/handoff"), AuthRoute::Handoff);
        assert_eq!(classify("/_auth/login/Corp"), AuthRoute::Unknown);
        assert_eq!(classify("/_auth/login/"), AuthRoute::Unknown);
        assert_eq!(classify("/_auth/login/a/b"), AuthRoute::Unknown);
        assert_eq!(classify("/_auth/nope"), AuthRoute::Unknown);
        assert_eq!(classify("/_auth/jwks.json"), AuthRoute::Jwks);
    }
}
