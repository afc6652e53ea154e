//! Response and request bodies on the data path: one body type for
//! everything the service answers (an enum, not a box: no allocation per
//! response), and the adapters that bound an upstream body's idle time and
//! notice a client body whose framing breaks.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of requests sent upstream: the client's, watched.
pub type UpstreamBody = Watched<ClientBody>;

/// Longest pause between two chunks of a chunked request body while the
/// gateway reads it ahead; after it, the request goes upstream with what
/// arrived and the rest follows as it comes.
pub const READ_AHEAD_PAUSE: Duration = Duration::from_millis(50);
/// Most bytes of a chunked request body read ahead before it goes upstream
/// (checked between chunks: a last chunk may take it past).
pub const READ_AHEAD_BYTES: usize = 64 * 1024;
/// Longest a chunked request body is read ahead in all: a client dripping
/// small chunks just within the pause does not keep the request from its
/// upstream (and the upstream's own timers) longer.
pub const READ_AHEAD_TIME: Duration = Duration::from_secs(1);

/// A client's request body on its way upstream.
#[derive(Debug)]
pub enum ClientBody {
    /// As it arrives.
    Streamed(Incoming),
    /// Read ahead: these bytes (`None` once sent), then the rest as it
    /// arrives (`None`: the body ended within them). Boxed: only chunked
    /// bodies are read ahead, and every request's future holds this body.
    ReadAhead(Option<Bytes>, Option<Box<Incoming>>),
}

impl ClientBody {
    /// `read`, then `rest`; no empty frame.
    fn ahead(read: bytes::BytesMut, rest: Option<Incoming>) -> Self {
        let read = (!read.is_empty()).then(|| read.freeze());
        ClientBody::ReadAhead(read, rest.map(Box::new))
    }
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match this {
            ClientBody::Streamed(b) => Pin::new(b).poll_frame(cx),
            ClientBody::ReadAhead(read, rest) => {
                if let Some(bytes) = read.take() {
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                match rest.take() {
                    Some(b) => {
                        *this = ClientBody::Streamed(*b);
                        Pin::new(this).poll_frame(cx)
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Streamed(b) => b.is_end_stream(),
            ClientBody::ReadAhead(read, rest) => {
                read.is_none() && rest.as_deref().is_none_or(HttpBody::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        let (read, rest) = match self {
            ClientBody::Streamed(b) => return b.size_hint(),
            ClientBody::ReadAhead(read, rest) => {
                (read.as_ref().map_or(0, |b| b.len() as u64), rest)
            }
        };
        match rest {
            // More to come, of a length not known yet.
            Some(rest) => {
                let mut hint = SizeHint::new();
                hint.set_lower(rest.size_hint().lower().saturating_add(read));
                hint
            }
            None => SizeHint::with_exact(read),
        }
    }
}

/// Reads a chunked request body ahead, before anything goes upstream: up to
/// [`READ_AHEAD_BYTES`] and [`READ_AHEAD_TIME`], for as long as its chunks
/// follow each other within [`READ_AHEAD_PAUSE`]. A body whose framing breaks within that is refused
/// with nothing sent (PRX-12: "forwards zero bytes upstream"); one that ends
/// within it goes upstream whole, with its length. A stream that pauses (a
/// client waiting for the answer's start) is held for one pause at most.
pub async fn read_ahead(mut body: Incoming) -> Result<ClientBody, hyper::Error> {
    let mut read = bytes::BytesMut::new();
    let until = tokio::time::Instant::now() + READ_AHEAD_TIME;
    while read.len() < READ_AHEAD_BYTES {
        let wait = until
            .saturating_duration_since(tokio::time::Instant::now())
            .min(READ_AHEAD_PAUSE);
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_paused) => break,
            Ok(None) => return Ok(ClientBody::ahead(read, None)),
            Ok(Some(frame)) => frame?,
        };
        match frame.into_data() {
            Ok(data) => read.extend_from_slice(&data),
            // Trailer fields end the body here, unsent (see `Watched`).
            Err(_trailers) => return Ok(ClientBody::ahead(read, None)),
        }
    }
    Ok(ClientBody::ahead(read, Some(body)))
}

/// The body of every response the gateway sends.
#[derive(Debug)]
pub enum Body {
    /// These bytes, then the end (`None` once sent).
    Full(Option<Bytes>),
    /// An upstream's body, passed on as it arrives.
    Upstream(Upstream),
}

/// An upstream's body and, for an HTTP/1.1 upstream, its connection, which
/// goes back to the pool once the body has been passed on to its end.
#[derive(Debug)]
pub struct Upstream {
    body: IdleTimeout<Answer>,
    checkin: Option<super::pool::Checkin>,
    ended: bool,
    /// The request body's progress, told while this answer flows (see
    /// [`Watched`]).
    upload: Option<Arc<Progress>>,
}

impl Upstream {
    /// `body` of the connection `checkin` returns, answering a request whose
    /// body reports to `upload`.
    pub fn new(
        body: IdleTimeout<Answer>,
        checkin: Option<super::pool::Checkin>,
        upload: Option<Arc<Progress>>,
    ) -> Self {
        if let Some(p) = &upload {
            p.answer.store(ANSWER_FLOWING, Ordering::Release);
        }
        Upstream {
            body,
            checkin,
            ended: false,
            upload,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(p) = &self.upload {
            p.answer.store(ANSWER_OVER, Ordering::Release);
        }
        // A body dropped before its end leaves the rest of it on the
        // connection: that connection is closed, not reused.
        if self.ended || self.body.is_end_stream() {
            if let Some(c) = self.checkin.take() {
                c.put_back(&mut self.body.inner);
            }
        }
    }
}

/// An upstream's answer body: from hyper's client (HTTP/2, requests with a
/// body, upgrades) or read by the gateway's own HTTP/1.1 exchange.
#[derive(Debug)]
pub enum Answer {
    /// Read by hyper.
    Hyper(Incoming),
    /// Read by [`super::upstream_h1`].
    Own(super::upstream_h1::AnswerBody),
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Answer::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Answer::Own(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Answer::Hyper(b) => b.is_end_stream(),
            Answer::Own(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Answer::Hyper(b) => b.size_hint(),
            Answer::Own(b) => b.size_hint(),
        }
    }
}

/// Fields an upstream's trailer section may not carry to the client: the
/// response head's filters (hop-by-hop fields, the gateway's cookies,
/// PRX-23) never saw them, and none of these means anything after a body
/// (RFC 9110 §6.5.1), so they go whatever their values. HTTP/2 clients get
/// trailers (gRPC's status among them); HTTP/1.1 clients never do (the
/// `Trailer` field is removed as hop-by-hop, so hyper sends none).
static NOT_IN_TRAILERS: [http::HeaderName; 10] = [
    http::header::SET_COOKIE,
    http::header::CONNECTION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::CONTENT_LENGTH,
    http::header::HOST,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
];

/// An upstream's trailer fields as the client may get them.
fn answer_trailers(trailers: &mut http::HeaderMap) {
    for name in &NOT_IN_TRAILERS {
        trailers.remove(name);
    }
}

/// A body of these bytes.
pub fn full(bytes: Bytes) -> Body {
    Body::Full((!bytes.is_empty()).then_some(bytes))
}

/// A body with no bytes.
pub fn empty() -> Body {
    Body::Full(None)
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Upstream(up) => {
                let mut polled = Pin::new(&mut up.body).poll_frame(cx);
                match &mut polled {
                    Poll::Ready(None) => up.ended = true,
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(trailers) = frame.trailers_mut() {
                            answer_trailers(trailers);
                        }
                    }
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Upstream(up) => up.ended || up.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Upstream(up) => up.body.size_hint(),
        }
    }
}

/// A limit on one wait of a body for its next frame, timed from when the
/// wait begins (the first `Pending` after a frame), not from the last
/// frame: time the reader spent elsewhere (a client slow to take an
/// answer, an upstream slow to take a body) is not the writer's silence.
/// The timer is made the first time a wait begins: a body read whole at
/// once never pays for one.
#[derive(Debug)]
struct WaitLimit {
    /// In ms (at most about 49 days): every answer's body holds one, and a
    /// `Duration` made `Body::Upstream` too large beside `Body::Full`.
    limit_ms: u32,
    /// A wait is under way (its timer armed).
    waiting: bool,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WaitLimit {
    fn new(limit: Duration) -> Self {
        WaitLimit {
            limit_ms: u32::try_from(limit.as_millis()).unwrap_or(u32::MAX),
            waiting: false,
            timer: None,
        }
    }

    /// The limit.
    fn limit(&self) -> Duration {
        Duration::from_millis(u64::from(self.limit_ms))
    }

    /// A frame (or the end) came: the wait, if any, is over.
    fn moved(&mut self) {
        self.waiting = false;
    }

    /// The body is pending: whether this wait has now lasted the limit.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.waiting {
            self.waiting = true;
            let at = tokio::time::Instant::now() + self.limit();
            match self.timer.as_mut() {
                Some(timer) => timer.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        self.timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
    }
}

/// An upstream body that fails when the upstream sends no frame for `idle`
/// (`server.upstream_read_timeout`, the time allowed between bytes) while
/// the gateway waits for one.
#[derive(Debug)]
pub struct IdleTimeout<B> {
    inner: B,
    wait: WaitLimit,
}

/// The error of a body that stalled.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?}")]
pub struct Stalled(Duration);

/// The error of a client's request body that stopped coming while the
/// upstream waited for it.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no more of its body for {0:?}")]
pub struct ClientStalled(Duration);

impl<B> IdleTimeout<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            wait: WaitLimit::new(idle),
        }
    }
}

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.wait.moved();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending if this.wait.expired(cx) => {
                Poll::Ready(Some(Err(Box::new(Stalled(this.wait.limit())))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// No answer yet to the request whose body a [`Progress`] reports on.
const ANSWER_NONE: u8 = 0;
/// Its answer is being passed to the client.
const ANSWER_FLOWING: u8 = 1;
/// Its answer went to its end (or was dropped).
const ANSWER_OVER: u8 = 2;

/// What a forwarded request body did: whether it failed, so that a
/// forwarding failure caused by the client's own broken framing is answered
/// 400, not 502 (PRX-12); and when it last moved, so that a slow upload is
/// not taken for a silent upstream.
#[derive(Debug)]
pub struct Progress {
    failed: AtomicBool,
    /// The client stopped sending its body while the upstream waited for it.
    stalled: AtomicBool,
    /// The upstream asked for more of the body and the client has not sent it yet.
    awaiting_client: AtomicBool,
    /// Whether the answer has not begun, flows, or is over (`ANSWER_*`).
    answer: AtomicU8,
    /// ms after `since` of the last frame.
    last: AtomicU64,
    since: Instant,
}

impl Progress {
    /// Nothing happened yet.
    pub fn new() -> Self {
        Progress {
            failed: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            awaiting_client: AtomicBool::new(false),
            answer: AtomicU8::new(ANSWER_NONE),
            last: AtomicU64::new(0),
            since: Instant::now(),
        }
    }

    /// Whether the body ended with an error.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Whether the client stopped sending its body (answered 408).
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// Whether the body waits on the client (which [`Watched`] times), not
    /// on the upstream to take more.
    pub fn awaiting_client(&self) -> bool {
        self.awaiting_client.load(Ordering::Acquire)
    }

    /// When the last frame was read.
    pub fn last_frame(&self) -> Instant {
        self.since + Duration::from_millis(self.last.load(Ordering::Acquire))
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// A client's request body on its way upstream, reporting its [`Progress`];
/// it fails once the client, with its body unfinished, sends nothing for
/// `silence` while the upstream waits for more. That holds after an early
/// answer too, when no other timer watches the connection: an upstream that
/// answers before reading the body (and goes on reading it, as Node does)
/// would otherwise keep the client's connection and its own for as long as
/// the client stays silent.
pub struct Watched<B> {
    inner: Option<B>,
    progress: Option<Arc<Progress>>,
    /// Only for a body that can still wait on the client (with `progress`);
    /// boxed, as every request's future holds this body (see
    /// `gateway::future_size`).
    wait: Option<Box<WaitLimit>>,
}

impl<B> Watched<B> {
    /// Wraps `inner` (none: an empty body), reporting to `progress`; with
    /// `progress`, the client may leave the body silent for `silence`.
    pub fn new(inner: Option<B>, progress: Option<Arc<Progress>>, silence: Duration) -> Self {
        let wait = progress
            .is_some()
            .then(|| Box::new(WaitLimit::new(silence)));
        Watched {
            inner,
            progress,
            wait,
        }
    }
}

impl<B> HttpBody for Watched<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let (Some(p), Some(wait)) = (&this.progress, this.wait.as_mut()) {
            p.awaiting_client
                .store(polled.is_pending(), Ordering::Release);
            if polled.is_ready() {
                wait.moved();
            } else if wait.expired(cx) {
                if p.answer.load(Ordering::Acquire) == ANSWER_FLOWING {
                    // A stream both ways (a gRPC call): the client may be
                    // silent while its answer flows. Timed again, so that
                    // silence after the answer's end still ends it.
                    wait.moved();
                    let _ = wait.expired(cx);
                } else {
                    p.stalled.store(true, Ordering::Release);
                    this.inner = None;
                    return Poll::Ready(Some(Err(Box::new(ClientStalled(wait.limit())))));
                }
            }
        }
        match polled {
            Poll::Ready(Some(Err(e))) => {
                if let Some(p) = &this.progress {
                    p.failed.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(p) = &this.progress {
                    let ms = p.since.elapsed().as_millis() as u64;
                    p.last.store(ms, Ordering::Release);
                }
                if frame.is_trailers() {
                    // A client's trailer fields end the body here, unsent:
                    // the header filter never saw their names (an identity
                    // header sent as a trailer would reach an HTTP/2
                    // upstream), and HTTP/1.1 upstreams never get them anyway.
                    this.inner = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other.map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body fed frame by frame from a channel.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl HttpBody for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
        }
    }

    fn fed() -> (tokio::sync::mpsc::Sender<Bytes>, Fed) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (tx, Fed(rx))
    }

    /// Sends `bytes` after `delay`, on its own task.
    fn send_after(tx: &tokio::sync::mpsc::Sender<Bytes>, delay: Duration, bytes: &'static [u8]) {
        let tx = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Bytes::from_static(bytes)).await;
        });
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_body_s_wait_is_timed_from_when_it_begins_not_from_its_last_frame() {
        let (tx, inner) = fed();
        let mut body = IdleTimeout::new(inner, Duration::from_secs(1));
        // The first frame comes after a wait, so a timer exists when it does.
        send_after(&tx, Duration::from_millis(500), b"one");
        assert!(body.frame().await.unwrap().is_ok());
        // The client took two seconds to want more: not the upstream's silence.
        tokio::time::sleep(Duration::from_secs(2)).await;
        send_after(&tx, Duration::from_millis(500), b"two");
        let two = body.frame().await.unwrap().unwrap();
        assert_eq!(two.into_data().unwrap(), "two");
        // A wait of its own over the limit fails.
        let stalled = body.frame().await.unwrap().unwrap_err();
        assert!(stalled.is::<Stalled>(), "{stalled}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_body_the_client_stops_sending_fails_after_the_limit_and_says_so() {
        let (tx, inner) = fed();
        let progress = Arc::new(Progress::new());
        let mut body = Watched::new(Some(inner), Some(progress.clone()), Duration::from_secs(1));
        tx.send(Bytes::from_static(b"one")).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        // Time the upstream spent not asking for more does not count.
        tokio::time::sleep(Duration::from_secs(5)).await;
        send_after(&tx, Duration::from_millis(900), b"two");
        assert!(body.frame().await.unwrap().is_ok());
        assert!(!progress.stalled());
        let started = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<ClientStalled>(), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(progress.stalled() && !progress.failed());
        // The client's body is let go: nothing more comes from it.
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_request_body_is_left_alone_while_its_answer_flows_and_ended_after() {
        let (_tx, inner) = fed();
        let progress = Arc::new(Progress::new());
        let mut body = Watched::new(Some(inner), Some(progress.clone()), Duration::from_secs(1));
        progress.answer.store(ANSWER_FLOWING, Ordering::Release);
        let flowing = tokio::time::timeout(Duration::from_secs(10), body.frame()).await;
        assert!(flowing.is_err(), "the body failed while its answer flowed");
        progress.answer.store(ANSWER_OVER, Ordering::Release);
        let started = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<ClientStalled>(), "{err}");
        assert!(started.elapsed() <= Duration::from_secs(1));
    }

    #[test]
    fn an_upstream_s_trailers_lose_cookies_and_hop_by_hop_fields_and_keep_the_rest() {
        let mut t = http::HeaderMap::new();
        for (k, v) in [
            ("set-cookie", "portcullis=evil; Path=/"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-length", "0"),
            ("grpc-status", "0"),
            ("x-checksum", "42"),
        ] {
            t.append(k, http::HeaderValue::from_static(v));
        }
        answer_trailers(&mut t);
        let mut kept: Vec<&str> = t.keys().map(http::HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["grpc-status", "x-checksum"]);
    }

    #[tokio::test]
    async fn a_client_s_trailer_fields_never_go_upstream_and_its_data_does() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-forwarded-user", http::HeaderValue::from_static("admin"));
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
            Ok(Frame::trailers(trailers)),
        ];
        let client_body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let progress = Arc::new(Progress::new());
        let sent = Watched::new(
            Some(client_body),
            Some(progress.clone()),
            Duration::from_secs(60),
        )
        .collect()
        .await
        .unwrap();
        assert!(sent.trailers().is_none());
        assert_eq!(sent.to_bytes(), Bytes::from_static(b"abcd"));
        assert!(!progress.failed());
    }
}
