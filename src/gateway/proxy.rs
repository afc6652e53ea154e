//! Forwarding: the request the upstream receives (canonical path, filtered
//! headers, identity headers, HTTP/1.1 framing decided by hyper), the
//! response the client receives (hop-by-hop fields and gateway cookies
//! removed), WebSocket tunnels, and the upstream clients (pooled keep-alive,
//! HTTP/1.1 and HTTP/2 by ALPN, rustls).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};

use super::body::{self, ClientBody, IdleTimeout, Progress, Watched};
use super::ctx::{Ctx, Outcome};
use super::exchange::Exchange;
use super::framing::FramingError;
use super::pool::{self, Checkin, Pool};
use super::rescue::{self, Rejection};
use super::server::Conn;
use super::{upstream, State};
use crate::config::App;
use crate::principal::PrincipalKind;

static UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");
static WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");
static CLOSE: HeaderValue = HeaderValue::from_static("close");

/// How long an upstream connection may sit idle in the pool.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// One app's upstream: the connections that take its requests.
pub struct Target {
    pool: Pool,
    read_timeout: Duration,
}

/// Why an upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The upstream's address does not make a request target.
    #[error("`{0}` is not a valid upstream authority")]
    Authority(String),
    /// The TLS set-up (CA file) failed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The upstream's name is not one a certificate can carry.
    #[error(transparent)]
    Name(#[from] pool::Error),
}

impl Target {
    /// The upstream of `app`, with connections kept for `workers` workers. A
    /// plain `http://` upstream is reached at `addr` (resolved once at
    /// start); an `https://` one by its name, which its certificate must carry.
    pub fn new(
        app: &App,
        addr: SocketAddr,
        roots: &rustls::RootCertStore,
        timeouts: (Duration, Duration),
        workers: usize,
    ) -> Result<Target, TargetError> {
        let (connect_timeout, read_timeout) = timeouts;
        let up = &app.upstream;
        let (scheme, authority, address, tls) = if up.tls {
            let host = if up.host.contains(':') {
                format!("[{}]:{}", up.host, up.port)
            } else {
                format!("{}:{}", up.host, up.port)
            };
            let tls = crate::tls::client_config(roots.clone(), app.upstream_ca_file.as_deref())?;
            let address = pool::Address::Name(up.host.clone(), up.port);
            (Scheme::HTTPS, host, address, Some(Arc::new(tls)))
        } else {
            let address = pool::Address::Socket(addr);
            (Scheme::HTTP, addr.to_string(), address, None)
        };
        let authority = Authority::try_from(authority.as_str())
            .map_err(|_| TargetError::Authority(authority.clone()))?;
        let dial = pool::Dial {
            address,
            tls,
            connect_timeout,
            scheme,
            authority,
            idle_for: POOL_IDLE,
        };
        Ok(Target {
            pool: Pool::new(dial, workers)?,
            read_timeout,
        })
    }
}

/// Whether `e` (or what caused it) is a timeout.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// Forwards the request to its app's upstream and sets the response the
/// client gets; `Err` names what failed, for the access line.
pub async fn forward(
    state: &Arc<State>,
    conn: &Arc<Conn>,
    ex: &mut Exchange,
    ctx: &mut Ctx,
) -> Result<(), &'static str> {
    let Some(target) = ctx.app.and_then(|i| state.upstreams.get(i)) else {
        rescue::respond(ex, ctx, Rejection::NoApp);
        return Ok(());
    };
    let head = &mut ex.head;
    let websocket = head.version == http::Version::HTTP_11 && super::asks_websocket(&head.headers);
    let on_upgrade = if websocket {
        head.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let uri = upstream_uri(head, ctx)?;
    let app = ctx.app.and_then(|i| state.config.apps.get(i));
    let tunnel = on_upgrade.is_some();
    let body = client_body(ex, ctx, tunnel).await?;
    // Into the connection's lent buffer: allocated once, not per request.
    let mut headers = client_headers(state, conn, ex, tunnel, ctx);
    add_identity(state, ctx, app, &mut headers);

    let (request, progress) = upstream_request(ex, body, uri, headers, target.read_timeout);
    // Rendered once per principal, kept with it in its cache; client copies
    // of these names went with the client's headers.
    let principal = ctx.principal.clone();
    let beside = upstream::Beside {
        forwarding: ctx.spare.forwarding.fields(),
        identity: principal
            .as_deref()
            .map_or(&[][..], |p| p.upstream_headers()),
    };
    let sent = answer_within(
        || target.pool.send(request, tunnel, &beside),
        target.read_timeout,
        progress.as_deref(),
    )
    .await;
    let (response, checkin) = match sent {
        Err(_) => {
            // Dropping the request closes that upstream connection (PRX-24).
            ctx.span
                .in_scope(|| tracing::warn!(request_id = %ctx.request_id, "the upstream did not answer in time"));
            rescue::respond(ex, ctx, Rejection::UpstreamTimeout);
            return Err("ReadTimedout");
        }
        Ok(Err(e)) => return Err(upstream_failed(ex, ctx, &e, progress.as_deref())),
        Ok(Ok(r)) => r,
    };
    let fields = upstream::answer_fields(response.headers(), response.status().as_u16());
    if let Some((why, error)) = refused_answer(response.status(), &fields, on_upgrade.is_some()) {
        ctx.span
            .in_scope(|| tracing::warn!(request_id = %ctx.request_id, reason = why, "upstream response refused"));
        ex.close |= on_upgrade.is_some(); // as after a declined upgrade (PRX-16)
        rescue::respond(ex, ctx, Rejection::UpstreamFailed);
        return Err(error);
    }
    let tunnel = Tunnel { down: on_upgrade };
    ex.response = Some(client_response(
        state,
        conn,
        ex,
        ctx,
        target,
        (response, fields, checkin, progress),
        tunnel,
    ));
    Ok(())
}

/// The client's body as it goes upstream: an HTTP/1.1 chunked one (the only
/// framing that can break) read ahead (`body::read_ahead`), so that framing
/// broken early is refused before the upstream is contacted (PRX-12); any
/// other as it arrives. A tunnel's request is never held back. `Err`: the
/// framing broke and the client was answered (for the access line).
async fn client_body(
    ex: &mut Exchange,
    ctx: &mut Ctx,
    tunnel: bool,
) -> Result<Option<ClientBody>, &'static str> {
    let Some(body) = ex.body.take() else {
        return Ok(None);
    };
    // Most requests have no body, or one of a known length: decided on the
    // body alone, without a header lookup.
    let length_known = http_body::Body::is_end_stream(&body)
        || http_body::Body::size_hint(&body).exact().is_some();
    let chunked = !length_known
        && ex.head.version == http::Version::HTTP_11
        && ex
            .head
            .headers
            .contains_key(http::header::TRANSFER_ENCODING);
    if tunnel || !chunked {
        return Ok(Some(ClientBody::Streamed(body)));
    }
    // Boxed: only chunked bodies pay for the timer in the request's future.
    match Box::pin(body::read_ahead(body)).await {
        Ok(body) => Ok(Some(body)),
        Err(_) => Err(broken_body(ex, ctx)),
    }
}

/// Answers a request whose body's chunked framing broke (PRX-12: 400 and
/// close); returns what failed, for the access line.
fn broken_body(ex: &mut Exchange, ctx: &mut Ctx) -> &'static str {
    let refusal = Rejection::Framing(FramingError::BadFraming("invalid request body framing"));
    rescue::respond(ex, ctx, refusal);
    ctx.outcome = Some(Outcome::Error);
    "InvalidChunk"
}

/// The request the upstream gets: the client's method and `body`, `uri`,
/// HTTP/1.1, `headers`; and the body's progress when it can fail (a body
/// that cannot, as a GET's, pays nothing for watching).
fn upstream_request(
    ex: &mut Exchange,
    body: Option<ClientBody>,
    uri: http::Uri,
    headers: http::HeaderMap,
    read_timeout: Duration,
) -> (http::Request<body::UpstreamBody>, Option<Arc<Progress>>) {
    let progress = body
        .as_ref()
        .filter(|b| !http_body::Body::is_end_stream(*b))
        .map(|_| Arc::new(Progress::new()));
    let mut request = http::Request::new(Watched::new(body, progress.clone(), read_timeout));
    *request.method_mut() = ex.head.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_11;
    *request.headers_mut() = headers;
    (request, progress)
}

/// Why an upstream's answer goes no further (a 502), and the access line's
/// error: a length that could be read two ways (PRX-23), or a switch to
/// another protocol than the WebSocket the client asked for, which would
/// carry the client past the gateway (PRX-17).
fn refused_answer(
    status: http::StatusCode,
    fields: &upstream::AnswerFields,
    upgrade_asked: bool,
) -> Option<(&'static str, &'static str)> {
    if let Err(why) = fields.framing {
        return Some((why, "InvalidUpstreamFraming"));
    }
    let switched = status == http::StatusCode::SWITCHING_PROTOCOLS;
    if switched && !(upgrade_asked && fields.websocket) {
        return Some((
            "the upstream switched to a protocol other than the WebSocket asked for",
            "UnexpectedUpgrade",
        ));
    }
    None
}

/// The request target the upstream receives, in origin form: the path the
/// gateway decided on (PRX-06). The pool adds the scheme and authority
/// where HTTP/2 needs them.
fn upstream_uri(head: &http::request::Parts, ctx: &Ctx) -> Result<http::Uri, &'static str> {
    let rewritten = ctx
        .path
        .as_ref()
        .and_then(|c| upstream::rewritten_target(&head.uri, c.forward()));
    let path_and_query = match rewritten {
        Some(t) => PathAndQuery::try_from(t).map_err(|_| "InvalidPath")?,
        None => head
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    Ok(http::Uri::from(path_and_query))
}

/// The gateway's own cookies, which never reach an upstream and which an
/// upstream may not set.
fn gateway_cookies(state: &State) -> [&str; 2] {
    [
        state.sessions.cookie_name.as_str(),
        state.sessions.login_cookie_name.as_str(),
    ]
}

/// The client's request headers as the upstream may see them, moved out of
/// the request: filtered before the gateway adds its own (PRX-04), the
/// upgrade kept for a tunnel, the gateway's cookies and every app's claim
/// header names gone; and the forwarding headers, in `ctx`'s spare list,
/// which go beside it.
fn client_headers(
    state: &State,
    conn: &Conn,
    ex: &mut Exchange,
    tunnel: bool,
    ctx: &mut Ctx,
) -> http::HeaderMap {
    let (client_ip, forwarding) = (ctx.client_ip, &mut ctx.spare.forwarding);
    let head = &mut ex.head;
    // The request's authority (absolute-form, or HTTP/2's :authority) is
    // what the app was routed and decided on, so it is the Host the upstream
    // gets, whatever Host line came beside it (RFC 9112 §3.2.2): an upstream
    // serving several names must not see another one.
    let authority_host = head
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let h2_client = head.version == http::Version::HTTP_2;
    let mut headers = std::mem::take(&mut head.headers);
    {
        // X-Forwarded-Host is the Host the client sent, port included (as
        // nginx's $http_host): the authority, else the Host line.
        let sent_host = match head.uri.authority() {
            Some(_) => authority_host.clone(),
            None => headers
                .get(header::HOST)
                .filter(|v| v.to_str().is_ok())
                .cloned(),
        };
        // Behind a trusted proxy the client is another address, rendered
        // for this request alone; from anyone else it is the connection's.
        let behind = client_ip
            .filter(|ip| ex.peer.trusted && *ip != conn.client.ip())
            .and_then(upstream::ip_value);
        let peer = upstream::Peer {
            client: conn.client_value.as_ref(),
            real_ip: behind.as_ref().or(conn.client_value.as_ref()),
            trusted: ex.peer.trusted,
            scheme: if state.scheme == "https" {
                &upstream::HTTPS
            } else {
                &upstream::HTTP
            },
            host: sent_host.as_ref(),
        };
        upstream::filter_request_headers(&mut headers, &peer, forwarding);
    }
    if tunnel {
        // WebSocket alone, whatever else the client listed (`h2c, websocket`):
        // a tunnel to another protocol would bypass the gateway (PRX-17).
        headers.insert(header::CONNECTION, UPGRADE_TOKEN.clone());
        headers.insert(header::UPGRADE, WEBSOCKET.clone());
    }
    if let Some(host) = authority_host {
        headers.insert(header::HOST, host);
    }
    if h2_client {
        join_cookies(&mut headers);
    }
    upstream::strip_gateway_cookies(&mut headers, &gateway_cookies(state));
    // Claim header names are the gateway's on every request, public paths
    // too, and whichever app names them: two apps may share an upstream.
    upstream::strip_claim_headers(&mut headers, &state.claim_header_names);
    headers
}

/// Adds what the upstream learns of the request's principal: its identity
/// headers, `app`'s claim headers, the access token and identity assertion
/// where `app` asks for them; a verified bearer token is removed unless
/// `app` forwards it (JWT-27).
fn add_identity(state: &State, ctx: &Ctx, app: Option<&App>, headers: &mut http::HeaderMap) {
    let Some(p) = &ctx.principal else {
        return;
    };
    // The identity headers go to the pool beside the map (`forward`).
    if let Some(app) = app {
        for (name, value) in upstream::claim_headers(&app.claim_headers, &p.claims) {
            headers.insert(name, value);
        }
    }
    // Set only for an app with pass_access_token (client copies are gone).
    if let Some(v) = ctx
        .access_token
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
    {
        headers.insert(upstream::FORWARDED_ACCESS_TOKEN, v);
    }
    if let Some(app) = app.filter(|a| a.identity_assertion) {
        // Client copies went with every other X-Portcullis-* header above.
        match state
            .assertions
            .header(&app.name, p, state.clock.now_unix())
        {
            Ok(v) => {
                headers.insert(HeaderName::from_static(crate::assertion::HEADER), v);
            }
            Err(e) => ctx
                .span
                .in_scope(|| tracing::error!(error = %e, "no identity assertion for this request")),
        }
    }
    let forward = app.is_some_and(|a| a.forward_bearer_token);
    if p.kind == PrincipalKind::Bearer && !forward {
        headers.remove(header::AUTHORIZATION);
    }
}

/// Answers a request the upstream did not take; returns what failed, for
/// the access line.
fn upstream_failed(
    ex: &mut Exchange,
    ctx: &mut Ctx,
    e: &pool::Error,
    upload: Option<&Progress>,
) -> &'static str {
    if upload.is_some_and(|p| p.stalled()) {
        // The client stopped sending its body while the upstream waited.
        rescue::respond(ex, ctx, Rejection::Framing(FramingError::BodyTooSlow));
        ctx.outcome = Some(Outcome::Error);
        return "ClientBodyTimedout";
    }
    if upload.is_some_and(|p| p.failed()) {
        // The client's own body framing broke, not the upstream (PRX-12).
        return broken_body(ex, ctx);
    }
    ctx.span.in_scope(
        || tracing::warn!(request_id = %ctx.request_id, error = %e, error.detail = ?e, "upstream request failed"),
    );
    if timed_out(e) {
        rescue::respond(ex, ctx, Rejection::UpstreamTimeout);
        return "ConnectTimedout";
    }
    rescue::respond(ex, ctx, Rejection::UpstreamFailed);
    if e.is_connect() {
        "ConnectError"
    } else if e.is_ambiguous_framing() {
        // As `refused_answer` names it for an answer hyper read.
        "InvalidUpstreamFraming"
    } else {
        "UpstreamError"
    }
}

/// The client's side of the connection when it asked for a WebSocket
/// upgrade on one that can become a tunnel.
struct Tunnel {
    down: Option<hyper::upgrade::OnUpgrade>,
}

/// The upstream's response as the client gets it: hop-by-hop fields and
/// the gateway's cookies removed (PRX-23; both found in the one pass of
/// `fields`), a resealed session cookie added; a 101 to an upgrade becomes
/// a tunnel between the two connections.
fn client_response(
    state: &State,
    conn: &Arc<Conn>,
    ex: &Exchange,
    ctx: &mut Ctx,
    target: &Target,
    (mut response, fields, checkin, upload): (
        http::Response<body::Answer>,
        upstream::AnswerFields,
        Option<Checkin>,
        Upload,
    ),
    tunnel: Tunnel,
) -> http::Response<body::Body> {
    let status = response.status();
    let asked = tunnel.down.is_some();
    let tunnel_ends = match tunnel.down {
        Some(down) if status == http::StatusCode::SWITCHING_PROTOCOLS => {
            Some((down, hyper::upgrade::on(&mut response)))
        }
        _ => None,
    };
    let (mut parts, incoming) = response.into_parts();
    // The gateway's own version, whatever the upstream spoke (RFC 9110 §2.5):
    // an HTTP/1.0 answer does not make the client's connection HTTP/1.0.
    parts.version = http::Version::HTTP_11;
    let hop = fields.hop;
    for name in &hop.names {
        parts.headers.remove(name);
    }
    if tunnel_ends.is_none() {
        // hyper frames the response itself; the client's connection is ours.
        if hop.connection {
            parts.headers.remove(header::CONNECTION);
        }
        if hop.transfer_encoding {
            parts.headers.remove(header::TRANSFER_ENCODING);
        }
    }
    // The upstream may not set the gateway's own cookies (PRX-23).
    if fields.set_cookie {
        upstream::drop_gateway_set_cookies(&mut parts.headers, &gateway_cookies(state));
    }
    if let Some(set) = ctx.reseal.take() {
        if let Ok(v) = HeaderValue::from_str(&set) {
            parts.headers.append(header::SET_COOKIE, v);
        }
    }
    // An upgrade the upstream declined (no 101) leaves an HTTP connection:
    // the bytes after it are read as the next request, checked like any
    // other (PRX-16); none was tunnelled. Not from a trusted proxy: one in
    // front that tunnels on the request alone (Varnish's pipe) would pass
    // the client's own bytes, forwarding fields and all, as its own.
    if ex.close || (asked && tunnel_ends.is_none() && ex.peer.trusted) {
        parts.headers.insert(header::CONNECTION, CLOSE.clone());
    }
    let body = match tunnel_ends {
        Some((down, up)) => {
            super::tunnel::open(conn, down, up);
            body::empty()
        }
        None => body::Body::Upstream(body::Upstream::new(
            IdleTimeout::new(incoming, target.read_timeout),
            checkin,
            upload,
        )),
    };
    http::Response::from_parts(parts, body)
}

/// The request body's [`Progress`], when it could still wait on the client.
type Upload = Option<Arc<Progress>>;

/// Awaits the upstream's answer while something moves: the request body is
/// still being sent, or less than `idle` has passed since it last moved.
/// While the upstream waits for more of the body, the client's silence is
/// [`Watched`]'s to time (408), not the upstream's (504); for one `idle`
/// more at most, so that a body no one polls any longer (an HTTP/2
/// upstream that gives no window) still ends in a 504.
/// The answer's future is made here, in place: made by the caller it would
/// be held twice in the request's future, which every request copies.
async fn answer_within<F: std::future::Future>(
    answer: impl FnOnce() -> F,
    idle: Duration,
    upload: Option<&Progress>,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut answer = std::pin::pin!(answer());
    loop {
        match tokio::time::timeout(idle, answer.as_mut()).await {
            Ok(out) => return Ok(out),
            Err(elapsed) => {
                let moving = upload.is_some_and(|p| {
                    let since = p.last_frame().elapsed();
                    since < idle || (p.awaiting_client() && since < idle.saturating_mul(2))
                });
                if !moving {
                    return Err(elapsed);
                }
            }
        }
    }
}

/// HTTP/2 sends each cookie as its own field; an HTTP/1.1 upstream expects
/// one `Cookie` line (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body::Body as _;
    use http_body_util::BodyExt as _;
    use std::time::Instant;

    /// A client's request body that never sends anything.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    /// A client's request body fed frame by frame from a channel.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|bytes| bytes.map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    /// An answer that never comes.
    fn never() -> std::future::Pending<()> {
        std::future::pending()
    }

    /// How long `answer_within` took to give up on `never`, with `idle`.
    async fn gave_up_after(idle: Duration, upload: Option<&Progress>, since: Instant) -> Duration {
        let waited =
            tokio::time::timeout(Duration::from_secs(10), answer_within(never, idle, upload)).await;
        assert!(
            matches!(waited, Ok(Err(_))),
            "still waiting for the upstream after 10 s"
        );
        since.elapsed()
    }

    #[tokio::test]
    async fn an_upstream_that_does_not_answer_a_request_without_a_body_times_out_after_its_read_timeout(
    ) {
        let t = Instant::now();
        let took = gave_up_after(Duration::from_millis(500), None, t).await;
        // Not deferred (that would take twice the read timeout).
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_millis(1000),
            "{took:?}"
        );
    }

    /// The client's silence while the upstream waits for its body is the
    /// body's own timer's to answer (408); but once nothing polls the body
    /// any more (an HTTP/2 upstream that grants no window), that timer never
    /// runs, and the upstream's read timeout ends the wait after twice its
    /// length at most.
    #[tokio::test]
    async fn an_upstream_that_stops_taking_a_waiting_body_times_out_within_twice_its_read_timeout()
    {
        let progress = Arc::new(Progress::new());
        let t = Instant::now();
        let mut body = Watched::new(
            Some(Silent),
            Some(Arc::clone(&progress)),
            Duration::from_secs(60),
        );
        // Polled once by the upstream: it now waits on the client, and no one polls it again.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(std::pin::Pin::new(&mut body)
            .poll_frame(&mut cx)
            .is_pending());
        assert!(progress.awaiting_client());
        let took = gave_up_after(Duration::from_millis(300), Some(&progress), t).await;
        assert!(
            took >= Duration::from_millis(590) && took < Duration::from_millis(1200),
            "{took:?}"
        );
    }

    /// An upload that keeps moving defers the upstream's read timeout for as
    /// long as it moves: an upstream that takes a piece of the body every
    /// 100 ms (the client has sent it all) and answers after four of its
    /// read timeouts is waited for.
    #[tokio::test]
    async fn an_upstream_answer_that_comes_while_the_upstream_keeps_taking_the_upload_is_taken() {
        let progress = Arc::new(Progress::new());
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        for _ in 0..16 {
            tx.try_send(Bytes::from_static(b"x")).unwrap();
        }
        drop(tx);
        let mut body = Watched::new(
            Some(Fed(rx)),
            Some(Arc::clone(&progress)),
            Duration::from_secs(60),
        );
        // The upstream takes one piece every 100 ms.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if !matches!(body.frame().await, Some(Ok(_))) {
                    return;
                }
            }
        });
        let idle = Duration::from_millis(300);
        let answer = || async {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            "answered"
        };
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            answer_within(answer, idle, Some(&progress)),
        )
        .await;
        assert!(matches!(got, Ok(Ok("answered"))), "{got:?}");
    }
}
