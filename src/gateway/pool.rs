//! Upstream connections: per app upstream and per worker, HTTP/1.1
//! connections reused one request at a time and one HTTP/2 connection
//! shared by all requests, TLS by rustls with ALPN.
//!
//! hyper-util's pooled client did the same for about 12 000 instructions a
//! request (a SipHash of the pool key and a map under a lock, a race between
//! the checkout and a connect future, a task spawned per response to put the
//! connection back: README, "Performance"). Here a worker's idle HTTP/1.1
//! connections are a list behind a lock only that worker takes, a
//! connection is taken off its end, and it goes back when the response
//! body has been passed on whole ([`Checkin`]). A connection whose body was
//! not read to its end is never reused (its bytes would be the next
//! answer).
//!
//! Two such lists per worker: the gateway's own connections
//! ([`super::upstream_h1`]) for requests without a body, which are
//! written and answered on the request's own task, and hyper's for
//! requests with a body, which hyper sends while it reads the answer.
//!
//! A request on the gateway's own connection is written at once when it is
//! the worker's only one out to its upstream, and otherwise after the
//! tasks the worker has already woken ([`Out`]).

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::body::{Answer, UpstreamBody};
use super::upstream::Beside;
use super::upstream_h1::{self, Conn, Stream};

thread_local! {
    /// The worker this thread is (0 on threads that are not workers).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks this thread as worker `i`: its requests take and keep upstream
/// connections in the `i`th idle lists, which no other worker touches.
pub fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

fn worker() -> usize {
    WORKER.try_with(Cell::get).unwrap_or(0)
}

/// Idle HTTP/1.1 connections one worker keeps per upstream at most.
const MAX_IDLE: usize = 1024;

/// How often an HTTP/2 upstream connection is pinged, and how long the
/// answer may take.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection could not be made (refused, unreachable, timed out).
    #[error("connecting to the upstream failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake failed (an untrusted certificate, a wrong name).
    #[error("the TLS handshake with the upstream failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The HTTP handshake failed (HTTP/2 settings).
    #[error("the HTTP handshake with the upstream failed: {0}")]
    Handshake(#[source] hyper::Error),
    /// A connection for an upgrade came up as HTTP/2 (its TLS offers only
    /// `http/1.1`, so a sound upstream cannot do this).
    #[error("the upstream chose HTTP/2 for a connection that offered only HTTP/1.1")]
    NotHttp1,
    /// The request was sent (at least in part) and the connection failed.
    #[error("the upstream request failed: {0}")]
    Send(#[source] hyper::Error),
    /// A request without a body was sent and its answer could not be read.
    #[error("the upstream request failed: {0}")]
    Exchange(#[source] upstream_h1::ExchangeError),
}

impl Error {
    /// Whether no connection to the upstream could be made.
    pub fn is_connect(&self) -> bool {
        !matches!(self, Error::Send(_) | Error::Exchange(_))
    }

    /// Whether the answer's length could be read two ways (PRX-23).
    pub fn is_ambiguous_framing(&self) -> bool {
        matches!(
            self,
            Error::Exchange(upstream_h1::ExchangeError::AmbiguousLength(_))
        )
    }
}

/// Where an upstream is and how to speak to it.
pub struct Dial {
    /// A plain upstream's address (resolved once at start), or an `https://`
    /// one's name and port (resolved at each connect, checked against its
    /// certificate).
    pub address: Address,
    /// The TLS client set-up of an `https://` upstream.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// How long connecting (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// `http` or `https`, for HTTP/2's request targets.
    pub scheme: Scheme,
    /// The upstream's authority, for HTTP/2's request targets.
    pub authority: Authority,
    /// How long a connection may sit unused before it is not reused.
    pub idle_for: Duration,
}

/// An upstream's address.
pub enum Address {
    /// A resolved socket address.
    Socket(SocketAddr),
    /// A host name (or IP) and port, for TLS.
    Name(String, u16),
}

/// The connections to one upstream.
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    dial: Dial,
    /// TLS with ALPN `h2` and `http/1.1`, and with `http/1.1` only (upgrades).
    tls: Option<(TlsConnector, TlsConnector, ServerName<'static>)>,
    /// One per worker.
    slots: Box<[Mutex<Slot>]>,
    /// For a thread numbered past the workers (none is).
    spare: Mutex<Slot>,
    /// Per worker: its requests out on the gateway's own connections ([`Out`]).
    out: Box<[AtomicUsize]>,
    /// `spare`'s.
    spare_out: AtomicUsize,
    /// Whether the task that sweeps idle connections was started.
    sweeping: AtomicBool,
}

#[derive(Default)]
struct Slot {
    /// hyper's HTTP/1.1 connections, for requests with a body. Oldest
    /// first; each with when it went idle.
    h1: VecDeque<(http1::SendRequest<UpstreamBody>, Instant)>,
    /// The gateway's own HTTP/1.1 connections, for requests without a
    /// body ([`upstream_h1`]). Oldest first, as `h1`.
    own: VecDeque<(Conn, Instant)>,
    h2: Option<http2::SendRequest<UpstreamBody>>,
}

/// One request without a body (the gateway's own connections take them, or
/// an HTTP/2 upstream), counted on its worker from when it is ready to be
/// sent until its answer's head is read.
///
/// A request that finds others of its worker out waits behind the tasks the
/// worker has already woken ([`behind_the_woken`]) before it is written.
/// Requests that became ready together then reach the upstream together,
/// which wakes once for several instead of once for each: with the upstream
/// on the proxy's core (the bench's `wrk -c32`), its wake-ups fell from 0.82
/// to 0.46 a request and the public path went from 0.85× to 0.92× nginx
/// when such a request first waited (then with `yield_now`), and from 0.43
/// to 0.30 with this wait (README, "Performance"). A request alone is
/// written at once: waiting would gain no other request anything. A request
/// still out on a slow upstream (a long poll) makes each later one wait
/// behind the woken tasks once: bounded.
struct Out<'a> {
    count: &'a AtomicUsize,
}

impl<'a> Out<'a> {
    /// Counts a request out, with how many of the worker's were out before it.
    fn count(count: &'a AtomicUsize) -> (Self, usize) {
        let others = count.fetch_add(1, Ordering::Relaxed);
        (Out { count }, others)
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Lets the tasks the worker has already woken run first, once: the task
/// wakes itself and so goes to the back of the worker's run queue. It
/// usually runs again before the worker polls its sockets; tokio polls them
/// anyway after every 61 tasks (its `event_interval`), and what that poll
/// wakes queues behind it. tokio's `yield_now` always waits for that poll
/// and runs the tasks it wakes first; measured, that added to the tail
/// latency and did not batch the writes any better (README, "Performance").
fn behind_the_woken() -> impl std::future::Future<Output = ()> {
    let mut waited = false;
    std::future::poll_fn(move |cx| {
        if waited {
            return std::task::Poll::Ready(());
        }
        waited = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}

/// A new connection before its HTTP handshake.
enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// A connection taken for one request.
enum Taken {
    H1(http1::SendRequest<UpstreamBody>),
    Own(Conn),
    H2(http2::SendRequest<UpstreamBody>),
}

/// An HTTP/1.1 connection whose response is still being passed on: it goes
/// back to its pool by [`Checkin::put_back`] once the body ended, and is
/// closed if dropped before.
pub struct Checkin {
    shared: Arc<Shared>,
    slot: usize,
    kept: Kept,
}

/// What a [`Checkin`] puts back.
enum Kept {
    /// hyper's connection.
    Hyper(http1::SendRequest<UpstreamBody>),
    /// The gateway's own, which its answer's body holds.
    Own,
}

impl std::fmt::Debug for Checkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkin").field("slot", &self.slot).finish()
    }
}

impl Checkin {
    /// The response, `answer`, was passed on whole: the connection may take
    /// another request.
    pub fn put_back(self, answer: &mut Answer) {
        let idle_for = self.shared.dial.idle_for;
        match (self.kept, answer) {
            (Kept::Hyper(tx), _) => {
                // Not ready: the upstream answered before the request body
                // was all sent, and the connection is still busy with it.
                if tx.is_closed() || !tx.is_ready() {
                    return;
                }
                let mut slot = self.shared.lock(self.slot);
                keep_idle(&mut slot.h1, tx, idle_for, |tx| !tx.is_closed());
            }
            (Kept::Own, Answer::Own(body)) => {
                if let Some(conn) = body.take_reusable() {
                    let mut slot = self.shared.lock(self.slot);
                    keep_idle(&mut slot.own, conn, idle_for, Conn::is_quiet);
                }
            }
            (Kept::Own, Answer::Hyper(_)) => {}
        }
    }
}

/// Puts `conn` at the end of an idle list, after dropping those at its start
/// that went stale while this worker was busy elsewhere or that the
/// upstream closed (not `alive`): a list the newest end of which is always
/// reused would otherwise keep its closed oldest until they age out.
fn keep_idle<C>(
    idle: &mut VecDeque<(C, Instant)>,
    conn: C,
    idle_for: Duration,
    mut alive: impl FnMut(&mut C) -> bool,
) {
    let now = Instant::now();
    while idle
        .front_mut()
        .is_some_and(|(c, since)| now.duration_since(*since) > idle_for || !alive(c))
    {
        idle.pop_front();
    }
    if idle.len() < MAX_IDLE {
        idle.push_back((conn, now));
    }
}

impl Shared {
    /// Closes the idle connections that went unused for `idle_for` or
    /// that their upstream closed, in every worker's list, at `now`: a
    /// worker that no longer sends to this upstream would otherwise keep
    /// them open until the upstream closes them.
    fn sweep(&self, now: Instant) {
        let idle_for = self.dial.idle_for;
        for slot in self.slots.iter().chain(std::iter::once(&self.spare)) {
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            // Dropping a connection's `SendRequest` ends its task, which
            // closes the socket.
            slot.h1
                .retain(|(tx, since)| !tx.is_closed() && now.duration_since(*since) <= idle_for);
            // Not polled here: this task may run on another worker's runtime.
            slot.own
                .retain(|(_, since)| now.duration_since(*since) <= idle_for);
            if slot.h2.as_ref().is_some_and(http2::SendRequest::is_closed) {
                slot.h2 = None;
            }
        }
    }

    /// Counts a request without a body out on worker `slot` and, when
    /// others of the worker are out, waits behind the tasks the worker has
    /// already woken ([`Out`]). Before an idle connection is taken: the one
    /// taken is then checked as late as it can be, and a request dropped
    /// while it waits holds none.
    async fn take_turn(&self, slot: usize) -> Out<'_> {
        let (out, others) = Out::count(self.out_of(slot));
        if others > 0 {
            behind_the_woken().await;
        }
        out
    }

    /// Worker `i`'s count of requests out on the gateway's own connections.
    fn out_of(&self, i: usize) -> &AtomicUsize {
        self.out.get(i).unwrap_or(&self.spare_out)
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Slot> {
        // Workers are numbered from 0 to `slots.len()`: `spare` is never taken.
        let slot = self.slots.get(i).unwrap_or(&self.spare);
        // A slot holds no invariant a panic could break half-way.
        slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A live connection of worker `i`, if one is idle: the gateway's own
    /// HTTP/1.1 connection if `own`, else hyper's.
    fn take(&self, i: usize, own: bool) -> Option<Taken> {
        let mut slot = self.lock(i);
        if let Some(h2) = &slot.h2 {
            if !h2.is_closed() {
                return Some(Taken::H2(h2.clone()));
            }
            slot.h2 = None;
        }
        if own {
            while let Some((mut conn, since)) = slot.own.pop_back() {
                if since.elapsed() > self.dial.idle_for {
                    slot.own.clear();
                    return None;
                }
                // One the upstream closed while idle is dropped here, not
                // found out by the request.
                if conn.is_quiet() {
                    return Some(Taken::Own(conn));
                }
            }
            return None;
        }
        while let Some((tx, since)) = slot.h1.pop_back() {
            if since.elapsed() > self.dial.idle_for {
                // The newest is too old, so all are.
                slot.h1.clear();
                return None;
            }
            if !tx.is_closed() {
                return Some(Taken::H1(tx));
            }
        }
        None
    }

    /// A new connection: HTTP/2 when a TLS upstream offers it and `h1_only`
    /// is not asked for (upgrades exist only in HTTP/1.1); else the
    /// gateway's own HTTP/1.1 connection if `own`, or hyper's.
    async fn connect(&self, h1_only: bool, own: bool) -> Result<Taken, Error> {
        let limit = self.dial.connect_timeout;
        // One limit for the TCP connect and the TLS handshake together.
        let io = tokio::time::timeout(limit, self.transport(h1_only))
            .await
            .map_err(|_| {
                Error::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {limit:?}"),
                ))
            })??;
        match io {
            Transport::Plain(tcp) if own => Ok(Taken::Own(Conn::new(Stream::Plain(tcp)))),
            Transport::Plain(tcp) => handshake_h1(TokioIo::new(tcp), h1_only).await,
            Transport::Tls(stream) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
                let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    // A connection that went silent (a dropped NAT entry, a
                    // vanished host) is found and closed, not used until TCP
                    // gives up.
                    .keep_alive_interval(H2_KEEP_ALIVE)
                    .keep_alive_timeout(H2_KEEP_ALIVE)
                    .keep_alive_while_idle(true)
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(Error::Handshake)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                    }
                });
                Ok(Taken::H2(tx))
            }
            Transport::Tls(stream) if own => Ok(Taken::Own(Conn::new(Stream::Tls(stream)))),
            Transport::Tls(stream) => handshake_h1(TokioIo::new(stream), h1_only).await,
        }
    }

    /// Sends a request without a body on the gateway's own connection
    /// `conn` of worker `slot`; `None` when the upstream had closed it (it
    /// was `reused`) as an idempotent request went out, which may then go
    /// on another (RFC 9110 §9.2.2).
    async fn exchange(
        self: &Arc<Self>,
        conn: Conn,
        slot: usize,
        req: &mut http::Request<UpstreamBody>,
        beside: &Beside<'_>,
        reused: bool,
    ) -> Option<Result<(http::Response<Answer>, Option<Checkin>), Error>> {
        origin_form(req);
        with_host(req, &self.dial);
        let mut headers = std::mem::take(req.headers_mut());
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let answered = conn
            .exchange(req.method(), target, &mut headers, beside)
            .await;
        // Unanswered, the request may go again: with its fields.
        *req.headers_mut() = headers;
        match answered {
            Ok(response) => {
                let checkin = Checkin {
                    shared: self.clone(),
                    slot,
                    kept: Kept::Own,
                };
                Some(Ok((response.map(Answer::Own), Some(checkin))))
            }
            Err(f) if reused && f.unanswered && req.method().is_idempotent() => None,
            Err(f) => Some(Err(Error::Exchange(f.error))),
        }
    }

    /// Sends `req`, which asks for an upgrade, on a new HTTP/1.1 connection
    /// that can become a tunnel.
    async fn send_upgrade(
        &self,
        req: http::Request<UpstreamBody>,
    ) -> Result<(http::Response<Answer>, Option<Checkin>), Error> {
        let Taken::H1(mut tx) = Box::pin(self.connect(true, false)).await? else {
            return Err(Error::NotHttp1);
        };
        let response = tx.send_request(req).await.map_err(Error::Send)?;
        Ok((response.map(Answer::Hyper), None))
    }

    /// Sends `req` on the hyper HTTP/1.1 connection `tx` of worker `slot`,
    /// which goes back to the worker's list with the answer's end.
    async fn send_h1(
        self: &Arc<Self>,
        mut tx: http1::SendRequest<UpstreamBody>,
        slot: usize,
        mut req: http::Request<UpstreamBody>,
    ) -> Result<(http::Response<Answer>, Option<Checkin>), TrySendError<http::Request<UpstreamBody>>>
    {
        origin_form(&mut req);
        with_host(&mut req, &self.dial);
        let response = tx.try_send_request(req).await?;
        let checkin = Checkin {
            shared: self.clone(),
            slot,
            kept: Kept::Hyper(tx),
        };
        Ok((response.map(Answer::Hyper), Some(checkin)))
    }

    /// Sends `req` on the HTTP/2 connection `tx` of worker `slot`, which
    /// becomes the worker's if it is new (not `reused`).
    async fn send_h2(
        &self,
        mut tx: http2::SendRequest<UpstreamBody>,
        slot: usize,
        mut req: http::Request<UpstreamBody>,
        reused: bool,
    ) -> Result<http::Response<hyper::body::Incoming>, TrySendError<http::Request<UpstreamBody>>>
    {
        if !reused {
            // Requests that found no connection each made one: the first to
            // finish is kept, the others serve their request and close.
            let mut s = self.lock(slot);
            if s.h2.as_ref().is_none_or(http2::SendRequest::is_closed) {
                s.h2 = Some(tx.clone());
            }
        }
        absolute_form(&mut req, &self.dial);
        let sent = tx.try_send_request(req).await;
        if sent.is_err() && tx.is_closed() {
            self.lock(slot).h2 = None;
        }
        sent
    }

    /// The TCP connection and, for an `https://` upstream, its TLS session.
    async fn transport(&self, h1_only: bool) -> Result<Transport, Error> {
        let tcp = self.tcp().await.map_err(Error::Connect)?;
        let _ = tcp.set_nodelay(true);
        super::keepalive::probe_silent_peers(&tcp);
        let Some((all, h1, name)) = &self.tls else {
            return Ok(Transport::Plain(tcp));
        };
        let connector = if h1_only { h1 } else { all };
        let stream = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(Error::Tls)?;
        Ok(Transport::Tls(Box::new(stream)))
    }

    async fn tcp(&self) -> std::io::Result<TcpStream> {
        match &self.dial.address {
            Address::Socket(addr) => TcpStream::connect(addr).await,
            Address::Name(host, port) => TcpStream::connect((host.as_str(), *port)).await,
        }
    }
}

/// An HTTP/1.1 connection on `io`, served by a task of its own.
async fn handshake_h1<T>(io: T, upgrades: bool) -> Result<Taken, Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (tx, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(Error::Handshake)?;
    tokio::spawn(async move {
        let ended = if upgrades {
            conn.with_upgrades().await
        } else {
            conn.await
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(Taken::H1(tx))
}

/// Starts, once per pool, a task on this worker's runtime that sweeps the
/// pool's idle connections every half `idle_for` until the pool is dropped
/// (a reload replaced it). Called when a connection is made: a pool that
/// never made one has nothing to sweep.
fn sweep_while_alive(shared: &Arc<Shared>) {
    if shared.sweeping.swap(true, Ordering::AcqRel) {
        return;
    }
    let every = (shared.dial.idle_for / 2).max(Duration::from_millis(100));
    let pool = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(shared) = pool.upgrade() else {
                return;
            };
            shared.sweep(Instant::now());
        }
    });
}

/// The TLS connector of `config` offering these ALPN protocols.
fn connector(config: &rustls::ClientConfig, alpn: &[&[u8]]) -> TlsConnector {
    let mut config = config.clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

impl Pool {
    /// Connections to the upstream `dial` describes, kept for `workers` workers.
    pub fn new(dial: Dial, workers: usize) -> Result<Pool, Error> {
        let tls = match (&dial.tls, &dial.address) {
            (None, _) => None,
            (Some(config), address) => {
                let host = match address {
                    Address::Name(host, _) => host.clone(),
                    Address::Socket(addr) => addr.ip().to_string(),
                };
                let name = ServerName::try_from(host).map_err(|e| {
                    Error::Tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                })?;
                Some((
                    connector(config, &[b"h2", b"http/1.1"]),
                    connector(config, &[b"http/1.1"]),
                    name,
                ))
            }
        };
        let slots = (0..workers).map(|_| Mutex::new(Slot::default())).collect();
        let out = (0..workers).map(|_| AtomicUsize::new(0)).collect();
        Ok(Pool {
            shared: Arc::new(Shared {
                dial,
                tls,
                slots,
                spare: Mutex::default(),
                out,
                spare_out: AtomicUsize::new(0),
                sweeping: AtomicBool::new(false),
            }),
        })
    }

    /// Sends `req` (its target in origin form) on an idle connection of this
    /// worker or a new one; `upgrade` takes a new HTTP/1.1 connection that
    /// can become a tunnel. A request refused by a reused connection before
    /// any of it was sent (the upstream closed it meanwhile) is sent again on
    /// another. The [`Checkin`] returns an HTTP/1.1 connection to the pool.
    /// The fields `beside` go with the request's, whose map does not hold their names.
    pub async fn send(
        &self,
        mut req: http::Request<UpstreamBody>,
        upgrade: bool,
        beside: &Beside<'_>,
    ) -> Result<(http::Response<Answer>, Option<Checkin>), Error> {
        let shared = &self.shared;
        let slot = worker();
        if upgrade {
            with_beside(&mut req, beside, &mut false);
            return shared.send_upgrade(req).await;
        }
        // A request without a body goes on the gateway's own connections
        // (or on HTTP/2 where the upstream chose it).
        let own = http_body::Body::is_end_stream(req.body());
        // hyper's client takes the fields `beside` in the map; the gateway's
        // own connections write them after the map's fields, unless an
        // earlier try (on HTTP/2) put them in the map.
        let mut in_map = false;
        // After one retry, only a new connection: a request that made a
        // connection fail never walks the whole idle list (RFC 9110 §9.2.2).
        let mut retried = false;
        // Out until its answer's head is read, it fails or it is dropped.
        let _out = if own {
            Some(shared.take_turn(slot).await)
        } else {
            None
        };
        loop {
            let idle = if retried {
                None
            } else {
                shared.take(slot, own)
            };
            let (taken, reused) = match idle {
                Some(t) => (t, true),
                // Boxed: connecting (TCP, TLS, handshakes) is a large future,
                // and hyper moves every request's future into place; kept
                // inline it cost each request about 8 000 instructions of copying.
                None => {
                    sweep_while_alive(shared);
                    (Box::pin(shared.connect(false, own)).await?, false)
                }
            };
            let failed = match taken {
                Taken::Own(conn) => {
                    let extra = if in_map { &Beside::default() } else { beside };
                    match shared.exchange(conn, slot, &mut req, extra, reused).await {
                        Some(answered) => return answered,
                        None => {
                            retried = true;
                            continue;
                        }
                    }
                }
                // Boxed, both: the request's future holds only the
                // exchange without a body in place.
                Taken::H1(tx) => {
                    with_beside(&mut req, beside, &mut in_map);
                    match Box::pin(shared.send_h1(tx, slot, req)).await {
                        Ok(answered) => return Ok(answered),
                        Err(e) => e,
                    }
                }
                Taken::H2(tx) => {
                    for_http2(&mut req, beside, &mut in_map);
                    match Box::pin(shared.send_h2(tx, slot, req, reused)).await {
                        Ok(response) => return Ok((response.map(Answer::Hyper), None)),
                        Err(e) => e,
                    }
                }
            };
            let mut failed = failed;
            match failed.take_message() {
                // Nothing of it was sent: another connection may take it.
                Some(again) if reused => req = again,
                _ => return Err(Error::Send(failed.into_error())),
            }
        }
    }
}

/// `req` with the fields `beside` its map in the map, unless they already
/// are (`in_map`, which becomes true).
fn with_beside(req: &mut http::Request<UpstreamBody>, beside: &Beside<'_>, in_map: &mut bool) {
    if std::mem::replace(in_map, true) {
        return;
    }
    let headers = req.headers_mut();
    for (name, value) in beside.fields() {
        headers.insert(name.clone(), value.clone());
    }
}

/// Fields that carry credentials, which HPACK must not put in the dynamic
/// table of an HTTP/2 connection every client's requests share: from the
/// size of a later request's encoding, whoever could watch that link and
/// add fields of their own could guess them (CRIME; RFC 7541 §7.1.3).
static CREDENTIALS: [http::HeaderName; 5] = [
    http::header::AUTHORIZATION,
    http::header::COOKIE,
    http::header::PROXY_AUTHORIZATION,
    http::HeaderName::from_static("x-forwarded-access-token"),
    http::HeaderName::from_static("x-portcullis-assertion"),
];

/// `req`'s fields as an HTTP/2 upstream gets them: with the fields
/// `beside` its map (see [`with_beside`]), and the credential fields marked
/// never indexed (h2 then sends them as literals outside the dynamic table).
fn for_http2(req: &mut http::Request<UpstreamBody>, beside: &Beside<'_>, in_map: &mut bool) {
    with_beside(req, beside, in_map);
    for (name, value) in req.headers_mut().iter_mut() {
        if CREDENTIALS.contains(name) {
            value.set_sensitive(true);
        }
    }
}

/// HTTP/1.1 needs a Host line; a client's HTTP/1.0 request may have come
/// without one.
fn with_host(req: &mut http::Request<UpstreamBody>, dial: &Dial) {
    if !req.headers().contains_key(http::header::HOST) {
        if let Ok(v) = http::HeaderValue::from_str(dial.authority.as_str()) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
}

/// HTTP/1.1 takes the path alone (a request tried on HTTP/2 first has the
/// absolute form).
fn origin_form(req: &mut http::Request<UpstreamBody>) {
    if req.uri().scheme().is_some() {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = http::Uri::from(path);
    }
}

/// HTTP/2 needs the scheme and authority in the request target. The
/// authority is the Host the request carries (the one it was decided on,
/// as an HTTP/1.1 upstream gets it) unless it carries userinfo, else the
/// upstream's own: `:authority`
/// and `Host` may not differ (RFC 9113 §8.3.1).
fn absolute_form(req: &mut http::Request<UpstreamBody>, dial: &Dial) {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| Authority::try_from(v.as_bytes()).ok())
        // A client's `user@host` is no authority HTTP/2 may carry (RFC 9113 §8.3.1).
        .filter(|a| !a.as_str().contains('@'));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(dial.scheme.clone());
    parts.authority = Some(host.unwrap_or_else(|| dial.authority.clone()));
    parts.path_and_query = req.uri().path_and_query().cloned();
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// An upstream that answers one request on one connection, then
    /// reports when the gateway closes that connection.
    async fn one_answer_upstream() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed, closed_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            let _ = closed.send(());
        });
        (addr, closed_rx)
    }

    #[test]
    fn credentials_to_an_http2_upstream_are_never_indexed_and_other_fields_are() {
        let mut req = http::Request::new(UpstreamBody::new(None, None, Duration::from_secs(60)));
        for (k, v) in [
            ("authorization", "Bearer t"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-forwarded-access-token", "at"),
        ] {
            req.headers_mut()
                .append(k, http::HeaderValue::from_static(v));
        }
        // The identity fields, which come beside the map, are marked too.
        let identity = [
            (
                http::HeaderName::from_static("x-portcullis-assertion"),
                http::HeaderValue::from_static("jwt"),
            ),
            (
                http::HeaderName::from_static("x-forwarded-user"),
                http::HeaderValue::from_static("ada"),
            ),
        ];
        req.headers_mut()
            .append("accept", http::HeaderValue::from_static("*/*"));
        let beside = Beside {
            forwarding: &[],
            identity: &identity,
        };
        for_http2(&mut req, &beside, &mut false);
        let sensitive: Vec<(&str, bool)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.is_sensitive()))
            .collect();
        assert_eq!(
            sensitive,
            [
                ("authorization", true),
                ("cookie", true),
                ("cookie", true),
                ("x-forwarded-access-token", true),
                ("accept", false),
                ("x-portcullis-assertion", true),
                ("x-forwarded-user", false),
            ]
        );
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_by_the_sweep_once_unused_for_idle_for() {
        let (addr, mut closed) = one_answer_upstream().await;
        let idle_for = Duration::from_secs(3600);
        let pool = Pool::new(
            Dial {
                idle_for,
                ..dial(addr)
            },
            1,
        )
        .unwrap();
        let pool = Arc::new(pool);
        assert_eq!(&fetch(pool.clone(), "/").await[..], b"ok");
        assert_eq!(pool.shared.lock(0).own.len(), 1, "the connection went back");

        // Used just now: a sweep keeps it open.
        pool.shared.sweep(Instant::now());
        assert_eq!(pool.shared.lock(0).own.len(), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            closed.try_recv().is_err(),
            "a fresh idle connection was closed"
        );

        // Unused for longer than idle_for: the sweep closes it.
        pool.shared
            .sweep(Instant::now() + idle_for + Duration::from_secs(1));
        assert_eq!(pool.shared.lock(0).own.len(), 0);
        let seen = tokio::time::timeout(Duration::from_secs(5), closed.recv()).await;
        assert!(
            matches!(seen, Ok(Some(()))),
            "the upstream never saw the connection close"
        );
    }
    /// An upstream that answers each connection's first request and closes
    /// the connection at its second without answering; returns the counts
    /// of connections and requests it saw.
    async fn answers_once_per_connection() -> (
        SocketAddr,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::AtomicUsize;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conns, reqs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, r) = (conns.clone(), reqs.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    for answer in [true, false] {
                        let mut head = Vec::new();
                        while !head.ends_with(b"\r\n\r\n") {
                            let mut byte = [0u8; 1];
                            if s.read(&mut byte).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        r.fetch_add(1, Ordering::SeqCst);
                        if answer {
                            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            s.write_all(ok).await.unwrap();
                        }
                    }
                });
            }
        });
        (addr, conns, reqs)
    }

    fn dial(addr: SocketAddr) -> Dial {
        Dial {
            address: Address::Socket(addr),
            tls: None,
            connect_timeout: Duration::from_secs(5),
            scheme: Scheme::HTTP,
            authority: Authority::try_from(addr.to_string().as_str()).unwrap(),
            idle_for: Duration::from_secs(60),
        }
    }

    fn get(method: http::Method) -> http::Request<UpstreamBody> {
        http::Request::builder()
            .method(method)
            .uri("/")
            .header(http::header::HOST, "app.example")
            .body(UpstreamBody::new(None, None, Duration::from_secs(60)))
            .unwrap()
    }

    /// Leaves `n` idle connections of the gateway's own in worker 0's list:
    /// `n` GETs answered at once (none can reuse another's connection),
    /// then all put back.
    async fn fill_idle(pool: &Pool, n: usize) {
        let mut held = Vec::new();
        for _ in 0..n {
            let (response, checkin) = pool
                .send(get(http::Method::GET), false, &Beside::default())
                .await
                .unwrap();
            let mut answer = response.into_body();
            (&mut answer).collect().await.unwrap();
            held.push((checkin.unwrap(), answer));
        }
        for (checkin, mut answer) in held {
            checkin.put_back(&mut answer);
        }
        assert_eq!(pool.shared.lock(0).own.len(), n);
    }

    #[tokio::test]
    async fn a_request_whose_reused_connection_fails_goes_once_more_on_a_new_one_and_never_again() {
        let (addr, conns, reqs) = answers_once_per_connection().await;
        let pool = Pool::new(dial(addr), 1).unwrap();
        // Three idle connections, each answered once.
        fill_idle(&pool, 3).await;

        // The newest closes at the GET unanswered: it goes once more, on a
        // new connection, which answers; the other idle ones are not tried.
        let (response, _) = pool
            .send(get(http::Method::GET), false, &Beside::default())
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(conns.load(Ordering::SeqCst), 4);
        assert_eq!(reqs.load(Ordering::SeqCst), 5);

        // A POST is never sent twice: its failure is the answer.
        let before = reqs.load(Ordering::SeqCst);
        let failed = pool
            .send(get(http::Method::POST), false, &Beside::default())
            .await;
        assert!(matches!(failed, Err(Error::Exchange(_))), "{failed:?}");
        assert_eq!(reqs.load(Ordering::SeqCst), before + 1);
    }
    /// An upstream that answers every request with `ok` and closes a
    /// connection (by the order it was accepted in) when told to.
    async fn closes_when_told() -> (SocketAddr, tokio::sync::mpsc::UnboundedSender<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tell, mut told) = tokio::sync::mpsc::unbounded_channel::<usize>();
        tokio::spawn(async move {
            let mut stops = Vec::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let (mut s, _) = accepted.unwrap();
                        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
                        stops.push(Some(stop));
                        tokio::spawn(async move {
                            let mut head = Vec::new();
                            loop {
                                let mut byte = [0u8; 1];
                                tokio::select! {
                                    _ = &mut stopped => return,
                                    n = s.read(&mut byte) => if n.unwrap_or(0) == 0 { return },
                                }
                                head.push(byte[0]);
                                if head.ends_with(b"\r\n\r\n") {
                                    head.clear();
                                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                                    s.write_all(ok).await.unwrap();
                                }
                            }
                        });
                    }
                    Some(i) = told.recv() => {
                        if let Some(stop) = stops.get_mut(i).and_then(Option::take) {
                            let _ = stop.send(());
                        }
                    }
                }
            }
        });
        (addr, tell)
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_leaves_the_list_when_another_goes_back() {
        let (addr, tell) = closes_when_told().await;
        let pool = Pool::new(dial(addr), 1).unwrap();
        fill_idle(&pool, 2).await;

        // The oldest is closed by the upstream; the newest serves a request
        // and goes back: the closed one is dropped then, not after idle_for.
        tell.send(0).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (response, checkin) = pool
            .send(get(http::Method::GET), false, &Beside::default())
            .await
            .unwrap();
        let mut answer = response.into_body();
        assert_eq!(
            &(&mut answer).collect().await.unwrap().to_bytes()[..],
            b"ok"
        );
        checkin.unwrap().put_back(&mut answer);
        assert_eq!(pool.shared.lock(0).own.len(), 1);
    }

    /// An upstream on threads of its own, so it goes on while a test blocks
    /// its runtime: notes each request's path as it arrives and answers
    /// `ok`, `/hold` only once `release` is set.
    fn noting_upstream() -> (
        SocketAddr,
        Arc<Mutex<Vec<String>>>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(AtomicBool::new(false));
        let (noted, released) = (seen.clone(), release.clone());
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let (mut s, noted, released) = (s.unwrap(), noted.clone(), released.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut piece = [0u8; 1024];
                    while let Ok(n @ 1..) = s.read(&mut piece) {
                        buf.extend_from_slice(&piece[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                            noted.lock().unwrap().push(path.clone());
                            while path == "/hold" && !released.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if s.write_all(ok).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, seen, release)
    }

    /// GETs `path` through `pool` and puts its connection back.
    async fn fetch(pool: Arc<Pool>, path: &'static str) -> bytes::Bytes {
        let req = http::Request::builder()
            .uri(path)
            .header(http::header::HOST, "app.example")
            .body(UpstreamBody::new(None, None, Duration::from_secs(60)))
            .unwrap();
        let (response, checkin) = pool.send(req, false, &Beside::default()).await.unwrap();
        let mut answer = response.into_body();
        let body = (&mut answer).collect().await.unwrap().to_bytes();
        if let Some(checkin) = checkin {
            checkin.put_back(&mut answer);
        }
        body
    }

    /// Whether the upstream notes `path` within `wait`, the runtime blocked
    /// meanwhile: only what was written before the call can arrive.
    fn noted_while_blocked(seen: &Mutex<Vec<String>>, path: &str, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if seen.lock().unwrap().iter().any(|p| p == path) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// A task, spawned now, that tells whether the upstream notes `path`
    /// within `wait` of when the task runs (it blocks the runtime while it
    /// looks, so only what was written before it ran can arrive).
    fn looks_for_later(
        seen: &Arc<Mutex<Vec<String>>>,
        path: &'static str,
        wait: Duration,
    ) -> tokio::task::JoinHandle<bool> {
        let seen = seen.clone();
        tokio::spawn(async move { noted_while_blocked(&seen, path, wait) })
    }

    /// Whether `path` had been written when a task spawned now ran.
    async fn looks_for(seen: &Arc<Mutex<Vec<String>>>, path: &'static str) -> bool {
        let looked = looks_for_later(seen, path, Duration::from_secs(5));
        looked.await.unwrap()
    }

    #[tokio::test]
    async fn a_request_that_finds_another_out_waits_behind_the_tasks_already_woken_and_no_longer() {
        let (addr, seen, release) = noting_upstream();
        let pool = Arc::new(Pool::new(dial(addr), 1).unwrap());
        fill_idle(&pool, 4).await;

        // Alone: written in the first poll of its task, before a task
        // woken after it runs.
        let held = tokio::spawn(fetch(pool.clone(), "/hold"));
        assert!(
            looks_for(&seen, "/hold").await,
            "a request alone was not written when its task first ran"
        );

        // With /hold out, /b waits behind a task woken after it (which
        // blocks the runtime while it looks), and is written before the
        // worker polls its sockets again: this test's `yield_now` returns
        // only after that poll.
        let b = tokio::spawn(fetch(pool.clone(), "/b"));
        let looked = looks_for_later(&seen, "/b", Duration::from_millis(500));
        tokio::task::yield_now().await;
        let written_by_then = noted_while_blocked(&seen, "/b", Duration::from_secs(5));
        assert!(
            !looked.await.unwrap(),
            "written before the task woken after it had run"
        );
        assert!(
            written_by_then,
            "not written before the worker polled its sockets again"
        );
        assert_eq!(&b.await.unwrap()[..], b"ok");

        // One dropped while it waits is not counted out any more: the task
        // woken after it cancels it.
        let dropped = tokio::spawn(fetch(pool.clone(), "/dropped"));
        let cancel = dropped.abort_handle();
        tokio::spawn(async move { cancel.abort() }).await.unwrap();
        assert!(dropped.await.unwrap_err().is_cancelled());
        let out = || pool.shared.out_of(0).load(Ordering::Relaxed);
        assert_eq!(out(), 1, "only /hold is out");
        release.store(true, Ordering::SeqCst);
        assert_eq!(&held.await.unwrap()[..], b"ok");
        assert_eq!(out(), 0);

        // Alone again: at once.
        let last = tokio::spawn(fetch(pool.clone(), "/last"));
        assert!(
            looks_for(&seen, "/last").await,
            "a request alone waited after the others were answered"
        );
        assert_eq!(&last.await.unwrap()[..], b"ok");
        assert!(!seen.lock().unwrap().iter().any(|p| p == "/dropped"));
    }
}
