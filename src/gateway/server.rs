//! Connections: accepting within `max_connections` and
//! `max_connections_per_ip`, TLS with ALPN (h2 or http/1.1), one hyper
//! connection per client with the head timeout, the keep-alive idle
//! timeout, the send timeout on an answer the client stops reading (HTTP/1:
//! a write that waits; HTTP/2: answers that wait for the client's
//! flow-control window while none moves), and the HTTP/2 stream and flood
//! limits, and the graceful drain on shutdown.
//!
//! The timeouts and the shutdown are watched by a separate task per
//! connection (`watchdog`), not by a `select!` in the connection's own task:
//! such a select polled its timer, its shutdown watch and its wake-up on
//! every wake-up of the connection, several times per request. The
//! connection task now polls hyper and one atomic (`Conn::order`); requests
//! only store times in `Conn`, and wake the watchdog only in the rare case
//! that they move its deadline earlier than the one it armed.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::task::AtomicWaker;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::ctx::Buffers;
use super::{framing, h2_heads, head_tap, State};

/// HTTP/2 streams one connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 200;
/// Streams a client may reset before they are accepted (Rapid Reset, CVE-2023-44487).
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset for a client's errors (MadeYouReset, CVE-2025-8671).
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// How often an HTTP/2 connection is pinged, and how long the answer may take.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// No head has started (the value of `Conn::head_started`).
const NO_HEAD: u64 = u64::MAX;
/// The watchdog is working its deadline out (the value of `Conn::armed`):
/// any deadline is earlier, so whoever moves one wakes it again.
const UNARMED: u64 = u64::MAX;
/// `Conn::order` bit: finish the requests in flight and close.
const CLOSE: u8 = 1;
/// No write is waiting for the client (the value of `Conn::write_stalled`).
const NOT_STALLED: u64 = u64::MAX;
/// The connection has not been asked to close (the value of `Conn::closing_at`).
const NOT_CLOSING: u64 = u64::MAX;
/// `Conn::order` bit: close now (a head took too long, or the client took
/// no bytes of an answer for `send_timeout`; over HTTP/1 nothing is in
/// flight then, over HTTP/2 the client's other streams end with it).
const CUT: u8 = 2;

/// One client connection, shared by its requests (and its WebSocket tunnel,
/// which keeps its slot of `max_connections` while it lives).
pub struct Conn {
    /// The client's address (an IPv4 client of a dual-stack listener as
    /// IPv4); whether it is a trusted proxy is read per request.
    pub client: SocketAddr,
    /// The client's address as a header value (`X-Forwarded-For`,
    /// `X-Real-IP`), rendered once for all the connection's requests.
    pub client_value: Option<http::HeaderValue>,
    /// The raw request heads of this connection, when a tap provides them.
    pub heads: Option<head_tap::HeadQueue>,
    /// Requests being served right now.
    busy: AtomicUsize,
    /// Whether any request has been served.
    served: AtomicBool,
    /// When the last request ended, in ms after `born`.
    last: AtomicU64,
    /// When the first byte of the next head arrived, in ms after `born`
    /// (over HTTP/2, of the head under way beside the streams in flight).
    head_started: AtomicU64,
    /// Since when a write has waited for the client to take bytes, in ms
    /// after `born` (HTTP/1 only; `NOT_STALLED` while writes go through).
    write_stalled: AtomicU64,
    /// Whether this is an HTTP/2 connection.
    h2: bool,
    /// When the watchdog asked the connection to close, in ms after `born`
    /// (`NOT_CLOSING` before).
    closing_at: AtomicU64,
    /// The answers of an HTTP/2 connection, as its send timeout sees them.
    sends: std::sync::Mutex<Sends>,
    /// The buffers its requests write their host and path into, between
    /// requests (an HTTP/2 stream that finds them lent out makes its own).
    lent: std::sync::Mutex<Buffers>,
    /// When the watchdog's timer fires, in ms after `born` (or `UNARMED`):
    /// a deadline that moves to before it has to wake the watchdog.
    armed: AtomicU64,
    /// Wakes the watchdog when a deadline moved earlier than `armed`.
    moved: tokio::sync::Notify,
    /// What the watchdog asks of the connection task (`CLOSE`, `CUT` bits).
    order: AtomicU8,
    /// Wakes the connection task when `order` changes.
    order_waker: AtomicWaker,
    /// `request_header_timeout` in whole ms (rounded up).
    head_ms: u64,
    /// `idle_timeout` in whole ms (rounded up).
    idle_ms: u64,
    /// `send_timeout` in whole ms (rounded up).
    send_ms: u64,
    born: Instant,
    _slot: Slot,
}

/// A connection's share of the limits: its permit of `max_connections` and,
/// unless off or the client is a trusted proxy, its count for
/// `max_connections_per_ip`. Both are given back when the connection (and
/// its WebSocket tunnel) ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    _ip: Option<IpSlot>,
}

/// Connections open per client address, shared by the workers, for
/// `max_connections_per_ip`. An IPv6 client counts by its /64: one host's
/// usual share, which it could otherwise spread its connections over.
#[derive(Debug, Default)]
pub struct PerIp(std::sync::Mutex<HashMap<IpAddr, usize>>);

/// One connection's count in [`PerIp`], given back on drop.
#[derive(Debug)]
struct IpSlot {
    table: Arc<PerIp>,
    key: IpAddr,
}

impl PerIp {
    /// The address `ip` counts under: IPv4 as itself, IPv6 by its /64.
    fn key(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
            v4 => v4,
        }
    }

    /// A count for `ip` if fewer than `limit` of its connections are open.
    fn take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<IpSlot> {
        let key = Self::key(ip);
        // The lock is held for one map operation; a panic cannot leave the
        // map half-changed, so a poisoned lock is taken as it is.
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= limit {
            if *n == 0 {
                open.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            key,
        })
    }

    /// Connections open from `ip`'s key (for tests).
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        let open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&Self::key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What the watchdog does when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// Keep-alive idle: finish and close.
    Idle,
    /// A head is still arriving: close now, nothing is in flight.
    Head,
    /// The client has taken no bytes of an answer for `send_timeout` (over
    /// HTTP/2: answers have waited that long for the client's flow-control
    /// window and none moved on; or, closing, the last frames it was handed
    /// have not gone out): close now (finishing would wait for it forever).
    Stalled,
}

/// A duration in whole ms, rounded up so that no deadline comes early.
fn ms_up(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

impl Conn {
    fn new(
        client: SocketAddr,
        slot: Slot,
        heads: Option<head_tap::HeadQueue>,
        limits: Limits,
        h2: bool,
    ) -> Self {
        let head_ms = ms_up(limits.head_timeout);
        Conn {
            client_value: super::upstream::ip_value(client.ip()),
            client,
            heads,
            busy: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            last: AtomicU64::new(0),
            head_started: AtomicU64::new(NO_HEAD),
            write_stalled: AtomicU64::new(NOT_STALLED),
            h2,
            closing_at: AtomicU64::new(NOT_CLOSING),
            sends: std::sync::Mutex::default(),
            lent: std::sync::Mutex::default(),
            // The watchdog's first timer: the first head is due then.
            armed: AtomicU64::new(head_ms),
            moved: tokio::sync::Notify::new(),
            order: AtomicU8::new(0),
            order_waker: AtomicWaker::new(),
            head_ms,
            idle_ms: ms_up(limits.idle),
            send_ms: ms_up(limits.send),
            born: limits.opened,
            _slot: slot,
        }
    }

    fn now(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// How long a write may wait for the client (`send_timeout`, from the
    /// config current when the connection was accepted).
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_ms)
    }

    /// The connection's buffers for one request's host and path (empty
    /// ones while another stream has them).
    pub fn lend_buffers(&self) -> Buffers {
        std::mem::take(&mut *self.lent.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Keeps a request's buffers for the connection's next request.
    pub fn take_back(&self, buffers: Buffers) {
        *self.lent.lock().unwrap_or_else(|e| e.into_inner()) = buffers;
    }

    /// A request is in flight: no head is being read for it any more
    /// (over HTTP/2 the frames say when a head ends: another stream's may
    /// have begun in the bytes that ended this one's).
    fn arrive(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
        if !self.h2 {
            self.head_started.store(NO_HEAD, Ordering::Release);
        }
    }

    /// Over HTTP/2: a request head began in the bytes just read (and is
    /// not whole yet); one that ended in them no longer counts. Read only
    /// by a read that ends in the middle of a head, not by one that brings
    /// heads whole.
    fn h2_head_began(&self) {
        let now = self.now();
        self.head_started.store(now, Ordering::SeqCst);
        self.deadline_now(now.saturating_add(self.head_ms));
    }

    /// Over HTTP/2: the head under way is whole, and no other has begun.
    fn h2_head_ended(&self) {
        self.head_started.store(NO_HEAD, Ordering::Release);
    }

    /// A request is over: with none left in flight, the idle timeout runs,
    /// or the head timeout if part of a head came while it was (a pipelined
    /// head the client stopped sending half-way).
    fn leave(&self) {
        let now = self.now();
        self.last.store(now, Ordering::SeqCst);
        if self.busy.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let head_begun = self
            .heads
            .as_ref()
            .is_some_and(head_tap::HeadQueue::head_begun);
        if head_begun
            && self
                .head_started
                .compare_exchange(NO_HEAD, now, Ordering::SeqCst, Ordering::Acquire)
                .is_ok()
        {
            self.deadline_now(now.saturating_add(self.head_ms));
        } else {
            self.deadline_now(now.saturating_add(self.idle_ms));
        }
    }

    /// Bytes arrived: if no request is in flight, they begin the next head.
    fn saw_bytes(&self) {
        // Most reads are within a head already begun or a request: no clock.
        if self.busy.load(Ordering::Acquire) != 0
            || self.head_started.load(Ordering::Acquire) != NO_HEAD
        {
            return;
        }
        // The tap has read these bytes: if they left no head half-read (a
        // body still arriving after its answer ended, or a head that came
        // whole and is served at once), nothing is timed.
        if !self
            .heads
            .as_ref()
            .is_none_or(head_tap::HeadQueue::head_begun)
        {
            return;
        }
        let now = self.now();
        if self
            .head_started
            .compare_exchange(NO_HEAD, now, Ordering::SeqCst, Ordering::Acquire)
            .is_ok()
        {
            self.deadline_now(now.saturating_add(self.head_ms));
        }
    }

    /// The deadline is now `at` (ms after `born`): the watchdog is woken only
    /// if its timer would fire after it. It arms at most a head timeout
    /// ahead, so a head that begins later never needs this; an idle timeout
    /// shorter than the head timeout does.
    ///
    /// The deadline's inputs were stored before this load (`SeqCst`, or
    /// under the HTTP/2 book's lock, released before this call), and the
    /// watchdog stores `armed` around reading them: either it read
    /// them, or this sees what it armed (or `UNARMED`) and compares with it.
    fn deadline_now(&self, at: u64) {
        if at < self.armed.load(Ordering::SeqCst) {
            self.moved.notify_one();
        }
    }

    /// A write could not go out: the client is not reading. The clock is
    /// read only when a stall begins.
    fn write_waits(&self) {
        if self.write_stalled.load(Ordering::Acquire) == NOT_STALLED {
            let now = self.now();
            self.write_stalled.store(now, Ordering::SeqCst);
            self.deadline_now(now.saturating_add(self.send_ms));
        }
    }

    /// A write went out: a stall, if there was one, is over.
    fn write_went(&self) {
        if self.write_stalled.load(Ordering::Acquire) != NOT_STALLED {
            self.write_stalled.store(NOT_STALLED, Ordering::SeqCst);
        }
    }

    /// The HTTP/2 answers' book, taken as it is if a panic poisoned it (no
    /// change to it can panic half-way).
    fn sends(&self) -> std::sync::MutexGuard<'_, Sends> {
        self.sends.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest time an HTTP/2 connection may be cut (ms after `born`):
    /// while answers wait for the client to take what they gave, `send_timeout`
    /// after the later of when they began to wait and when an answer last
    /// moved on (a polled body, or one dropped after its last frame). The
    /// connection as a whole: cutting it for one stream the client paused
    /// would end its other streams too. Each paused stream's body is let go
    /// on its own instead (`Conn::let_go`; hyper cannot reset one stream
    /// from outside, so the stream ends when hyper polls it again, as nginx
    /// resets such a stream). So a client that grants no flow-control
    /// window, and answers pings and sends requests, is cut; one that keeps
    /// any answer moving is not, however slowly. Whether or not requests are
    /// in flight. And, once
    /// the connection is asked to close with nothing in flight and every
    /// answer handed over, `send_timeout` after that (what is left is data of
    /// last frames the client has not let through).
    fn h2_cut(&self, busy: bool) -> Option<u64> {
        let sends = self.sends();
        let waiting =
            (sends.waiting > 0).then(|| sends.since.max(sends.moved).saturating_add(self.send_ms));
        let closing = self.closing_at.load(Ordering::SeqCst);
        let flushing = (!busy && closing != NOT_CLOSING && sends.live == 0)
            .then(|| closing.max(sends.moved).saturating_add(self.send_ms));
        match (waiting, flushing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Lets go of the HTTP/2 answer bodies that have waited on the client
    /// for `send_timeout` at `now` (their upstream requests are abandoned;
    /// each stream is reset when hyper polls it again); the earliest time
    /// another one will have (ms after `born`). Entries of bodies that are
    /// gone are dropped.
    fn let_go(&self, now: u64) -> Option<u64> {
        let mut released = Vec::new();
        // The slots seen, kept until the locks are released: a `Sending`
        // that drops meanwhile leaves its slot's last reference here.
        let mut held = Vec::new();
        let mut next: Option<u64> = None;
        {
            let mut sends = self.sends();
            sends.parked.retain(|entry| {
                let Some(slot) = entry.upgrade() else {
                    return false;
                };
                {
                    let mut parked = lock_parked(&slot);
                    if parked.body.is_some() {
                        let due = parked.since.saturating_add(self.send_ms);
                        if due <= now {
                            released.extend(parked.body.take());
                        } else {
                            next = Some(next.map_or(due, |n| n.min(due)));
                        }
                    }
                }
                held.push(slot);
                true
            });
        }
        if !released.is_empty() {
            tracing::debug!(
                client = %self.client,
                streams = released.len(),
                "HTTP/2 answers the client took none of for send_timeout were let go"
            );
        }
        // The bodies drop here, outside the locks (dropping one abandons its
        // upstream request).
        drop(released);
        drop(held);
        next
    }

    /// The next deadline (ms after `born`) and what happens then; while a
    /// request is in flight, only a stalled answer's.
    fn deadline(&self) -> Option<(u64, Expiry)> {
        // An HTTP/2 answer still being sent (a stream of events, a long
        // download) keeps its connection from being idle, as an HTTP/1
        // answer does: it is not asked to close under it.
        let answering = self.h2 && self.sends().live > 0;
        let busy = self.busy.load(Ordering::SeqCst) > 0 || answering;
        let h2_cut = if self.h2 { self.h2_cut(busy) } else { None };
        let stalled = self.write_stalled.load(Ordering::SeqCst);
        let h1_cut = (stalled != NOT_STALLED).then(|| stalled.saturating_add(self.send_ms));
        let started = self.head_started.load(Ordering::SeqCst);
        if busy {
            // Over HTTP/1 a request is in flight until its answer's body has
            // been handed over whole (`Answering`): a client that stops
            // taking it is cut while it is. Over HTTP/2 another stream's
            // head may be under way beside the streams in flight.
            let cut = h1_cut.or(h2_cut).map(|at| (at, Expiry::Stalled));
            let head = (self.h2 && started != NO_HEAD)
                .then(|| (started.saturating_add(self.head_ms), Expiry::Head));
            return match (head, cut) {
                (Some(h), Some(c)) => Some(if h.0 <= c.0 { h } else { c }),
                (h, c) => h.or(c),
            };
        }
        let due = if !self.served.load(Ordering::SeqCst) {
            // A new connection's first head must be whole within the head
            // timeout of its opening, however late its first byte came
            // (nginx's `client_header_timeout` alike).
            (self.head_ms, Expiry::Head)
        } else if started != NO_HEAD {
            (started.saturating_add(self.head_ms), Expiry::Head)
        } else {
            let last = self.last.load(Ordering::SeqCst);
            (last.saturating_add(self.idle_ms), Expiry::Idle)
        };
        let Some(cut) = h1_cut.or(h2_cut) else {
            return Some(due);
        };
        // An answer is being written (after its request ended) and the
        // client takes none of it: that ends the connection unless a head
        // is due first. Closing gracefully (idle) would wait on the answer.
        Some(match due {
            (at, Expiry::Head) if at < cut => due,
            _ => (cut, Expiry::Stalled),
        })
    }

    /// Asks the connection task to close (`CLOSE`) or to cut (`CUT`).
    fn order(&self, bits: u8) {
        self.order.fetch_or(bits, Ordering::AcqRel);
        self.order_waker.wake();
    }
}

/// A client connection's reads, noticing when a head begins, so that the
/// head timeout runs from its first byte and the idle timeout between
/// requests (over HTTP/2 following the frames, `h2_heads`, so that every
/// head is timed, not only the first); and over HTTP/1 its writes,
/// noticing when the client stops taking bytes of an answer (HTTP/2's send
/// timeout watches the answers, `Sends`, not the socket).
struct Watched<I> {
    io: I,
    conn: Arc<Conn>,
    /// The client's frames, over HTTP/2.
    frames: Option<h2_heads::FrameWatch>,
}

impl<I> Watched<I> {
    fn wrote(&self, pending: bool) {
        if self.frames.is_some() {
            return;
        }
        if pending {
            self.conn.write_waits();
        } else {
            self.conn.write_went();
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().get(before..).unwrap_or_default();
        if read.is_empty() {
            return polled;
        }
        let this = &mut *self;
        let Some(frames) = &mut this.frames else {
            this.conn.saw_bytes();
            return polled;
        };
        let was = frames.under_way();
        match frames.feed(read) {
            h2_heads::Head::Began => this.conn.h2_head_began(),
            h2_heads::Head::None if was => this.conn.h2_head_ended(),
            h2_heads::Head::Continues | h2_heads::Head::None => {}
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.wrote(polled.is_pending());
        polled
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // A TLS close_notify can wait on a client that reads nothing too.
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.wrote(polled.is_pending());
        polled
    }
}

/// What an HTTP/2 connection's send timeout knows of its answers (see
/// `Conn::h2_cut`).
#[derive(Debug, Default)]
struct Sends {
    /// Answer bodies alive.
    live: usize,
    /// Bodies waiting for the client to take the frame they gave.
    waiting: usize,
    /// When the count last rose from 0 (ms after `born`); not moved when the
    /// first waiter leaves without progress (a reset is not progress).
    since: u64,
    /// When a body last stopped waiting or ended (ms after `born`).
    moved: u64,
    /// Every live answer body that has given a data frame with more to
    /// come (each waits on the client from then until hyper polls it
    /// again), where the watchdog finds those that wait now
    /// (`Conn::let_go`); a body's entry dies with it and is dropped at the
    /// watchdog's next pass or when another answer registers.
    parked: Vec<std::sync::Weak<std::sync::Mutex<Parked>>>,
}

/// An HTTP/2 answer's body while it waits for the client to take the frame
/// it gave (hyper does not poll it until the client's window allows), kept
/// where the watchdog can reach it: once it has waited `send_timeout`, the
/// watchdog lets it go, and with it the upstream request it reads from.
/// The stream itself ends when hyper polls it again (a reset: the client
/// has not had the whole answer) or with the connection.
#[derive(Default)]
struct Parked {
    body: Option<super::body::Body>,
    /// Since when it waits (ms after `born`).
    since: u64,
}

/// The lock of a parked body, taken as it is if a panic poisoned it (no
/// change under it can panic half-way).
fn lock_parked(slot: &std::sync::Mutex<Parked>) -> std::sync::MutexGuard<'_, Parked> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// An answer's body on an HTTP/1 connection, which holds its request in
/// flight until hyper drops it (its last frame handed over, or the
/// connection gone). Until then the bytes the client sends are that
/// request's body (an upload the upstream answers as it reads it) or a
/// pipelined request waiting its turn, not a head that began: they do not
/// start `request_header_timeout`, which would cut the answer; and the idle
/// timeout counts from the answer's end. A client that stops taking the
/// answer is cut after `send_timeout` all the same (`Conn::deadline`).
struct Answering {
    body: super::body::Body,
    conn: Arc<Conn>,
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.conn.leave();
    }
}

/// What a served request's answer body becomes on its kind of connection.
trait Answer {
    /// The body hyper is handed.
    type Body;
    /// `body`, the answer of a request of `conn` counted in flight until now.
    fn answer(body: super::body::Body, conn: Arc<Conn>) -> Self::Body;
}

/// HTTP/1: the answer's body keeps the request in flight ([`Answering`]).
struct Http1;

impl Answer for Http1 {
    type Body = Answering;

    fn answer(body: super::body::Body, conn: Arc<Conn>) -> Answering {
        Answering { body, conn }
    }
}

/// HTTP/2: the request is over once answered (no head timeout to keep off,
/// and the connection's other streams go on); its body counts in the
/// connection's send book ([`Sending`]).
struct Http2;

impl Answer for Http2 {
    type Body = Sending;

    fn answer(body: super::body::Body, conn: Arc<Conn>) -> Sending {
        conn.leave();
        Sending::new(body, conn)
    }
}

/// A request's future: `gateway::serve`'s, boxed where it was made, with the
/// request counted in flight on its connection from when it is made until
/// it answers ([`Answer`]), or until this future drops unfinished (the
/// client left, or reset the stream). hyper moves a request's future more
/// than once, and `serve`'s is about 4 KiB: wrapping it in an `async` block
/// to map its answer copied it on its way into the box and again when
/// awaited (about 8 500 instructions an HTTP/1 request, 1 250 to 1 650 an
/// HTTP/2 one; README, "Performance").
struct InFlight<F, P> {
    served: Pin<Box<F>>,
    conn: Option<Arc<Conn>>,
    answer: std::marker::PhantomData<fn() -> P>,
}

impl<F, P> InFlight<F, P> {
    fn new(served: F, conn: &Arc<Conn>) -> Self {
        conn.arrive();
        InFlight {
            served: Box::pin(served),
            conn: Some(Arc::clone(conn)),
            answer: std::marker::PhantomData,
        }
    }
}

impl<F, P> Future for InFlight<F, P>
where
    F: Future<Output = Result<http::Response<super::body::Body>, std::convert::Infallible>>,
    P: Answer,
{
    type Output = Result<http::Response<P::Body>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let response = std::task::ready!(this.served.as_mut().poll(cx))?;
        // `served` panics if polled after it answered, so the count is
        // always here; it passes to the answer.
        let Some(conn) = this.conn.take() else {
            return Poll::Pending;
        };
        Poll::Ready(Ok(response.map(|body| P::answer(body, conn))))
    }
}

impl<F, P> Drop for InFlight<F, P> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.leave();
        }
    }
}

impl hyper::body::Body for Answering {
    type Data = bytes::Bytes;
    type Error = super::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}

/// An answer's body on an HTTP/2 connection. hyper (1.12) holds each data
/// frame it polls until the stream has send capacity, which the client's
/// flow-control window gives, then polls again (or, after the last frame,
/// drops the body): from when the body gives a data frame until it is
/// polled again or dropped, it waits on the client, `Conn::sends` counts
/// it, and, if it has more to give, it is [`Parked`] where the watchdog
/// can let it go after `send_timeout`. A body waiting on its upstream was
/// polled and is not waiting on the client. What a last frame leaves in
/// HTTP/2's buffers once the body is dropped is not seen here (only the
/// closing rule of `h2_cut` bounds it).
struct Sending {
    /// The body; `None` while it waits on the client (then it is in
    /// `parked`), and once the watchdog let it go.
    body: Option<super::body::Body>,
    /// Where it is parked; made the first time it is.
    parked: Option<Arc<std::sync::Mutex<Parked>>>,
    conn: Arc<Conn>,
    /// It waits on the client.
    waiting: bool,
}

impl Sending {
    /// `body`, counted in `conn`'s book.
    fn new(body: super::body::Body, conn: Arc<Conn>) -> Self {
        conn.sends().live += 1;
        Sending {
            body: Some(body),
            parked: None,
            conn,
            waiting: false,
        }
    }

    /// Begins waiting on the client; a body with more to give is parked
    /// where the watchdog can let it go.
    fn wait(&mut self) {
        let now = self.conn.now();
        // A body that gave its last frame has nothing left to let go of: it
        // stays here (an answer of one frame, the most common, is never
        // parked).
        let more = self
            .body
            .as_ref()
            .is_some_and(|body| !hyper::body::Body::is_end_stream(body));
        {
            let mut sends = self.conn.sends();
            if sends.waiting == 0 {
                sends.since = now;
            }
            sends.waiting += 1;
            if more {
                let slot = self.parked.get_or_insert_with(|| {
                    // Each answer registers once; the entries of bodies gone
                    // are dropped here too, not only when the watchdog
                    // wakes, so the list stays near the live count.
                    if sends.parked.len() >= 2 * sends.live + 8 {
                        sends.parked.retain(|entry| entry.strong_count() > 0);
                    }
                    let slot = Arc::new(std::sync::Mutex::new(Parked::default()));
                    sends.parked.push(Arc::downgrade(&slot));
                    slot
                });
                let mut parked = lock_parked(slot);
                parked.body = self.body.take();
                parked.since = now;
            }
        }
        self.waiting = true;
        self.conn
            .deadline_now(now.saturating_add(self.conn.send_ms));
    }

    /// Stops waiting on the client, if it was: the connection moved. The
    /// body comes back from where it was parked, unless the watchdog let it
    /// go meanwhile.
    fn moved(&mut self) {
        if std::mem::take(&mut self.waiting) {
            if let (None, Some(slot)) = (&self.body, &self.parked) {
                self.body = lock_parked(slot).body.take();
            }
            let now = self.conn.now();
            let mut sends = self.conn.sends();
            sends.waiting = sends.waiting.saturating_sub(1);
            sends.moved = sends.moved.max(now);
        }
    }

    /// Whether the body has given its last frame. A body is parked only
    /// while it has more to give (and never ends whole once let go).
    fn ended(&self) -> bool {
        self.body
            .as_ref()
            .is_some_and(hyper::body::Body::is_end_stream)
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        let now = self.conn.now();
        let ended = self.ended();
        let last = {
            let mut sends = self.conn.sends();
            if std::mem::take(&mut self.waiting) {
                sends.waiting = sends.waiting.saturating_sub(1);
                // Dropped after its last frame: hyper got the window for it
                // and handed it over (or the client reset the stream then).
                // A body reset while more was to come, or never polled (no
                // data), moved nothing.
                if ended {
                    sends.moved = sends.moved.max(now);
                }
            }
            sends.live = sends.live.saturating_sub(1);
            if sends.live == 0 {
                // The connection is idle from now: stored before the book
                // is released, so a watchdog that finds no answer live
                // never reads the `last` of before this answer.
                self.conn.last.store(now, Ordering::SeqCst);
            }
            sends.live == 0
        };
        if last {
            // A closing connection's last cut may now come earlier.
            self.conn
                .deadline_now(now.saturating_add(self.conn.send_ms.min(self.conn.idle_ms)));
        }
    }
}

/// The error an HTTP/2 answer's stream ends with once the watchdog let its
/// body go (hyper resets the stream).
#[derive(Debug, thiserror::Error)]
#[error("the client took none of this answer for send_timeout")]
struct LetGo;

impl hyper::body::Body for Sending {
    type Data = bytes::Bytes;
    type Error = super::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.moved();
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(Some(Err(Box::new(LetGo))));
        };
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if frame.is_data() {
                self.wait();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match (&self.body, &self.parked) {
            (Some(body), _) => hyper::body::Body::size_hint(body),
            (None, Some(slot)) => lock_parked(slot)
                .body
                .as_ref()
                .map_or_else(hyper::body::SizeHint::default, hyper::body::Body::size_hint),
            (None, None) => hyper::body::SizeHint::default(),
        }
    }
}

/// The hyper connection settings, built once.
pub struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// A connection's timeouts: from the config current when it was accepted
/// (a reload changes them for the connections that follow), and when that
/// was: its first head is due `head_timeout` after it, a TLS handshake
/// included (DESIGN: the whole head within it, however slowly bytes drip).
#[derive(Debug, Clone, Copy)]
struct Limits {
    head_timeout: Duration,
    idle: Duration,
    send: Duration,
    opened: Instant,
}

/// A connection as it was accepted: its client, its slot of
/// `max_connections`, and the limits (and the instant) it opened with.
struct Accepted {
    peer: SocketAddr,
    slot: Slot,
    limits: Limits,
}

impl Limits {
    fn of(server: &crate::config::Server) -> Self {
        Limits {
            head_timeout: server.request_header_timeout,
            idle: server.idle_timeout,
            send: server.send_timeout,
            opened: Instant::now(),
        }
    }
}

impl Builders {
    /// The HTTP/1 settings every client connection is served with (the fuzz
    /// target `request_stream` serves hyper with them, to hold the head tap
    /// to what this hyper does).
    pub fn http1(&self) -> &http1::Builder {
        &self.h1
    }

    /// The settings every connection shares (the limits of HTTP/2).
    pub fn new() -> Self {
        let mut h1 = http1::Builder::new();
        // The watchdog (`watchdog`) enforces the head and idle timeouts
        // exactly. hyper's own head timer (30 s unless turned off) would only
        // repeat it, at the cost of a timer armed and polled for every
        // request (about 1 000 instructions): off.
        h1.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_header_size(framing::MAX_HEADER_BYTES)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
            // HPACK counts 32 bytes per field on top of name and value.
            .max_header_list_size(
                (framing::MAX_HEADER_BYTES + 32 * framing::MAX_HEADER_FIELDS) as u32,
            )
            .keep_alive_interval(H2_KEEP_ALIVE)
            .keep_alive_timeout(H2_KEEP_ALIVE);
        Builders { h1, h2 }
    }
}

impl Default for Builders {
    fn default() -> Self {
        Builders::new()
    }
}

/// Accepts connections until `shutdown` changes. A connection is served
/// only once one of `permits` is free; while this worker's one accepted
/// connection waits for a permit, the next wait in the kernel's accept queue.
/// A client over `max_connections_per_ip` (counted in `per_ip`) has its new
/// connection closed at once, before it waits for a permit.
pub async fn run(
    live: Arc<ArcSwap<State>>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    builders: Arc<Builders>,
    permits: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            a = listener.accept() => a,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = match ip_slot(&live.load().config.server, &per_ip, addr.ip()) {
            Ok(ip) => ip,
            Err(()) => {
                tracing::debug!(client = %addr.ip().to_canonical(), "connection closed: max_connections_per_ip");
                drop(tcp);
                continue;
            }
        };
        // Accepted first, then a permit: each worker has its own listener
        // (`SO_REUSEPORT`), and a worker that took the last permit before
        // accepting would hold it, idle, while a connection waits in another
        // worker's queue with no permit left for it.
        let permit = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            live.clone(),
            tcp,
            addr,
            tls.clone(),
            builders.clone(),
            Slot {
                _permit: permit,
                _ip: ip,
            },
            shutdown.clone(),
        ));
    }
}

/// The per-address count a new connection from `ip` takes: none when the
/// limit is off or `ip` is a trusted proxy (every client behind it shares
/// its address); `Err` when `ip` is at the limit.
fn ip_slot(
    server: &crate::config::Server,
    per_ip: &Arc<PerIp>,
    ip: IpAddr,
) -> Result<Option<IpSlot>, ()> {
    let limit = server.max_connections_per_ip;
    if limit == 0 || server.is_trusted_proxy(ip) {
        return Ok(None);
    }
    per_ip.take(ip, limit).map(Some).ok_or(())
}

async fn connection(
    live: Arc<ArcSwap<State>>,
    tcp: TcpStream,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    builders: Arc<Builders>,
    slot: Slot,
    shutdown: watch::Receiver<bool>,
) {
    // The connection's own bookkeeping reads the config current when it
    // opened; each request loads the one current when it arrives.
    let state = live.load_full();
    let peer = SocketAddr::new(addr.ip().to_canonical(), addr.port());
    let limits = Limits::of(&state.config.server);
    let Some(acceptor) = tls else {
        let accepted = Accepted { peer, slot, limits };
        return serve_h1(state, live, accepted, tcp, &builders, shutdown).await;
    };
    // hyper has no handshake timeout: the head timeout bounds it too.
    let stream = match tokio::time::timeout(limits.head_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(client = %addr, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        let conn = Arc::new(Conn::new(peer, slot, None, limits, true));
        let service = {
            let (live, conn) = (live.clone(), conn.clone());
            service_fn(move |req| {
                InFlight::<_, Http2>::new(super::serve(live.load_full(), conn.clone(), req), &conn)
            })
        };
        let io = Watched {
            io: stream,
            conn: conn.clone(),
            frames: Some(h2_heads::FrameWatch::default()),
        };
        let c = builders.h2.serve_connection(TokioIo::new(io), service);
        drive(std::pin::pin!(c), &state, &conn, shutdown).await;
    } else {
        let accepted = Accepted { peer, slot, limits };
        serve_h1(state, live, accepted, stream, &builders, shutdown).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_h1<I>(
    state: Arc<State>,
    live: Arc<ArcSwap<State>>,
    accepted: Accepted,
    io: I,
    builders: &Builders,
    shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The tap copies each request head off the wire for the raw-head checks
    // (hyper repairs CL+TE and duplicate Content-Length before the service sees them).
    let (io, heads) = head_tap::tap(io);
    let io = io.into_inner();
    let Accepted { peer, slot, limits } = accepted;
    let conn = Arc::new(Conn::new(peer, slot, Some(heads), limits, false));
    let service = {
        let conn = conn.clone();
        service_fn(move |req| {
            InFlight::<_, Http1>::new(super::serve(live.load_full(), conn.clone(), req), &conn)
        })
    };
    let io = Watched {
        io,
        conn: conn.clone(),
        frames: None,
    };
    let c = builders
        .h1
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    drive(std::pin::pin!(c), &state, &conn, shutdown).await;
}

/// hyper's own refusals (a malformed head: 400, too large: 431 or 414) never
/// reach the service: they are counted and logged here. Other connection
/// errors (head timeout, a client that left) are only debug detail.
fn refused_by_hyper(state: &State, conn: &Conn, e: &hyper::Error) {
    let status: u16 = if e.is_parse_too_large() {
        431
    } else if e.is_parse() {
        400
    } else {
        tracing::debug!(client = %conn.client, error = %e, "connection ended");
        return;
    };
    let outcome = crate::metrics::Outcome::BadRequest;
    state.metrics.observe(None, outcome, 0.0);
    tracing::debug!(client = %conn.client, error = %e, "request refused by the HTTP parser");
    // The same access line as any other request's (DESIGN: user, client IP,
    // request id), with what an unreadable head cannot say left as `-`; the
    // client is the peer, as no forwarding header of the head was read.
    let request_id = super::ctx::RequestId::new();
    let line = super::access::Line {
        method: "-",
        host: "-",
        path: "-",
        app: crate::metrics::NO_APP,
        status,
        elapsed: Duration::ZERO,
        outcome,
        error: Some(if status == 431 {
            "request head too large"
        } else {
            "malformed request head"
        }),
        request_id: &request_id,
        user: "-",
        client_ip: conn.client.ip(),
    };
    state.access.emit(&line, state.clock.now());
}

/// A hyper connection that can be asked to finish its requests and close.
trait Graceful {
    fn begin_close(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn begin_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Graceful for http2::Connection<I, S, E>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn begin_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs a connection to its end: on shutdown, or once it has been idle for
/// `idle_timeout` with no request in flight, it is asked to finish and
/// close; a head still arriving after `request_header_timeout`, or an answer
/// the client has taken nothing of for `send_timeout`, is cut off.
///
/// The timeouts and the shutdown are the watchdog's, a task of its own that
/// ends with this one; here hyper is polled with nothing but one atomic load
/// beside it (see the module doc for why).
async fn drive<C>(c: Pin<&mut C>, state: &State, conn: &Arc<Conn>, shutdown: watch::Receiver<bool>)
where
    C: Future<Output = Result<(), hyper::Error>> + Graceful,
{
    let _watchdog = Watchdog(tokio::spawn(watchdog(conn.clone(), shutdown)));
    let driven = Driven {
        c,
        conn,
        closing: false,
    };
    match driven.await {
        Ended::Done(Ok(())) => {}
        Ended::Done(Err(e)) => refused_by_hyper(state, conn, &e),
        Ended::Cut => {
            tracing::debug!(client = %conn.client, "request head too slow, or an answer not read; closed");
        }
    }
}

/// How `Driven` ended.
enum Ended {
    /// hyper finished the connection.
    Done(Result<(), hyper::Error>),
    /// The watchdog cut it: a head took too long, or the client stopped
    /// taking an answer.
    Cut,
}

/// The hyper connection and the watchdog's orders, polled as one future:
/// the connection first, then `Conn::order`.
struct Driven<'a, C> {
    c: Pin<&'a mut C>,
    conn: &'a Conn,
    /// `begin_close` was called.
    closing: bool,
}

impl<C> Future for Driven<'_, C>
where
    C: Future<Output = Result<(), hyper::Error>> + Graceful,
{
    type Output = Ended;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let this = self.get_mut();
        loop {
            if let Poll::Ready(done) = this.c.as_mut().poll(cx) {
                return Poll::Ready(Ended::Done(done));
            }
            // Registered before the load, so an order given after it wakes us.
            this.conn.order_waker.register(cx.waker());
            let order = this.conn.order.load(Ordering::Acquire);
            if order & CUT != 0 {
                // Still due: no request began, no stalled write went out and
                // no HTTP/2 answer moved since the watchdog decided (on a
                // runtime with more than one thread any of these can happen
                // meanwhile).
                let due = this
                    .conn
                    .deadline()
                    .is_some_and(|(at, why)| why != Expiry::Idle && at <= this.conn.now());
                if due {
                    return Poll::Ready(Ended::Cut);
                }
                // Else it is not cut, and the watchdog works its deadline
                // out again.
                this.conn.order.fetch_and(!CUT, Ordering::AcqRel);
                this.conn.moved.notify_one();
            }
            if order & CLOSE != 0 && !this.closing {
                this.closing = true;
                this.c.as_mut().begin_close();
                // hyper acts on it when polled.
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// Ends the watchdog task with its connection.
struct Watchdog(tokio::task::JoinHandle<()>);

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches one connection's deadlines and the shutdown, and orders its
/// task to close or cut (`Conn::order`).
///
/// The timer is armed lazily: never more than a head timeout ahead, so a
/// head that begins later is due at or after it and needs no wake-up. When
/// it fires, the deadline is worked out again from `Conn`, so it is exact:
/// either it has passed, or the timer is armed again, for it at the latest.
async fn watchdog(conn: Arc<Conn>, mut shutdown: watch::Receiver<bool>) {
    let mut closing = false;
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(tokio::time::Instant::from_std(
        conn.born
    )));
    loop {
        conn.armed.store(UNARMED, Ordering::SeqCst);
        let now = conn.now();
        let release = if conn.h2 { conn.let_go(now) } else { None };
        // Once closing, an idle deadline no longer matters (a head one, or
        // an HTTP/2 answer that does not move, still does).
        let next = match conn.deadline() {
            Some((at, Expiry::Head)) if at <= now => {
                conn.order(CUT);
                // Back only if the connection task turned the cut down.
                conn.moved.notified().await;
                continue;
            }
            Some((at, Expiry::Stalled)) if at <= now => {
                conn.order(CUT);
                conn.moved.notified().await;
                continue;
            }
            Some((at, Expiry::Idle)) if at <= now && !closing => {
                closing = true;
                conn.closing_at.store(now, Ordering::SeqCst);
                conn.order(CLOSE);
                continue;
            }
            Some((at, Expiry::Head | Expiry::Stalled)) => Some(at),
            Some((at, Expiry::Idle)) if !closing => Some(at),
            _ => None,
        };
        let next = match (next, release) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let limit = now.saturating_add(conn.head_ms);
        let at = next.map_or(limit, |at| at.min(limit));
        conn.armed.store(at, Ordering::SeqCst);
        sleep.as_mut().reset(tokio::time::Instant::from_std(
            conn.born + Duration::from_millis(at),
        ));
        tokio::select! {
            biased;
            () = sleep.as_mut() => {}
            // A deadline moved earlier than `at`.
            () = conn.moved.notified() => {}
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.closing_at.store(conn.now(), Ordering::SeqCst);
                conn.order(CLOSE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_at_its_limit_gets_no_more_connections_until_one_closes() {
        let table = Arc::new(PerIp::default());
        let first = table.take(ip("192.0.2.7"), 2).unwrap();
        let _second = table.take(ip("192.0.2.7"), 2).unwrap();
        assert!(table.take(ip("192.0.2.7"), 2).is_none());
        // Another client is counted on its own.
        assert!(table.take(ip("192.0.2.8"), 2).is_some());
        drop(first);
        assert_eq!(table.open(ip("192.0.2.7")), 1);
        assert!(table.take(ip("192.0.2.7"), 2).is_some());
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let table = Arc::new(PerIp::default());
        let _a = table.take(ip("2001:db8:1:2::1"), 2).unwrap();
        let _b = table.take(ip("2001:db8:1:2:ffff::9"), 2).unwrap();
        assert!(table.take(ip("2001:db8:1:2::3"), 2).is_none());
        assert!(table.take(ip("2001:db8:1:3::1"), 2).is_some());
        let _c = table.take(ip("::ffff:192.0.2.7"), 1).unwrap();
        assert!(table.take(ip("192.0.2.7"), 1).is_none());
    }

    #[test]
    fn the_table_forgets_a_client_whose_connections_all_closed() {
        let table = Arc::new(PerIp::default());
        let slots: Vec<_> = (0..3).map(|_| table.take(ip("192.0.2.7"), 3)).collect();
        drop(slots);
        assert!(table.0.lock().unwrap().is_empty());
    }
}
