//! Copies each HTTP/1.x request head off the connection as it is read, so the
//! raw-head framing checks ([`framing::check_raw_head`]) still see the exact
//! bytes: hyper hands the service parsed headers only, and its parser accepts
//! framings the gateway refuses (CL+TE, duplicate Content-Length).
//!
//! [`HeadTap`] is a pure byte-stream state machine (no I/O, no hyper types): it
//! finds each head, copies it, then skips that request's body the way hyper
//! frames it (Content-Length, or chunked with extensions and trailers), so the
//! next head is found with keep-alive and pipelining. [`tap`] wraps a
//! connection so every read feeds the tap, and returns the per-connection
//! [`HeadQueue`] the service pops one head from per request, in request order.
//!
//! The tap never decides anything: hyper still frames the requests. If the two
//! disagreed, a head would be attributed to the wrong request (a false refusal
//! or a missed check), never a smuggled one.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::{self, FramingError, MAX_HEADER_BYTES, MAX_REQUEST_LINE};

/// Most bytes of one head the tap copies; a longer head is handed out cut and
/// marked too large (still long enough for `check_raw_head` to answer 414 or 431).
pub const MAX_TAPPED_HEAD: usize = MAX_HEADER_BYTES + MAX_REQUEST_LINE;

/// Size of the head buffer: most heads fit, so one allocation serves many.
const HEAD_CAPACITY: usize = 4096;
/// Below this much free room a new head first reclaims (or renews) the buffer.
const HEAD_MIN_ROOM: usize = 1024;

/// Longest chunk extension (from its `;`) one chunk-size line may carry
/// (PRX-12: 4 KiB; hyper's own decoder allows 16 KiB over a whole body).
pub const MAX_CHUNK_EXTENSION: u16 = 4096;

/// hyper refuses a Content-Length above this (`DecodedLength::MAX_LEN`).
const MAX_BODY_LENGTH: u64 = u64::MAX - 2;

/// One request head exactly as it came off the wire: the request line through
/// the empty line that ends the head (empty lines before it are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHead {
    bytes: Bytes,
    http10: bool,
    too_large: bool,
}

impl RawHead {
    /// The head's bytes (cut at [`MAX_TAPPED_HEAD`] if it was longer).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the request line says HTTP/1.0.
    pub fn http10(&self) -> bool {
        self.http10
    }

    /// Whether the head was longer than [`MAX_TAPPED_HEAD`] and was cut.
    pub fn too_large(&self) -> bool {
        self.too_large
    }

    /// Runs [`framing::check_raw_head`] on the head.
    pub fn check(&self) -> Result<(), FramingError> {
        match framing::check_raw_head(&self.bytes, self.http10) {
            // A cut head is longer than the limits, whatever the check saw.
            Ok(()) if self.too_large => Err(FramingError::HeadersTooLarge),
            verdict => verdict,
        }
    }
}

/// What the tap and the service share: the captured heads, in request order.
#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<VecDeque<RawHead>>,
    stop: AtomicBool,
    /// A head has begun and is not complete yet.
    partial: AtomicBool,
}

/// The service's end of a tap: pops the raw head of each request, in order.
#[derive(Debug, Clone)]
pub struct HeadQueue {
    shared: Arc<Shared>,
}

impl HeadQueue {
    /// The raw head of the oldest request not yet popped; `None` if the tap
    /// has none (it stopped, or it disagrees with hyper: refuse the request).
    pub fn pop(&self) -> Option<RawHead> {
        self.lock().pop_front()
    }

    /// Whether the bytes read so far end inside a head that has begun: the
    /// connection's head timeout then runs, even if those bytes came while
    /// an answer was still being sent.
    pub fn head_begun(&self) -> bool {
        self.shared.partial.load(Ordering::Acquire)
    }

    /// Tells the tap the connection was upgraded (101, or 2xx to CONNECT): the
    /// bytes that follow are a tunnel, not requests, so it stops reading them.
    pub fn upgraded(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<RawHead>> {
        // The lock is never held while anything can panic; a poisoned queue
        // is still a valid queue.
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where the tap is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests: skipping the empty lines hyper skips too.
    Idle,
    /// Inside a head, copying it.
    Head(HeadScan),
    /// Inside a body with this many bytes left.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// A limit hyper does not hold was broken: hyper gets no byte of the
    /// stream from there on (see [`Cut`]).
    Refused(Cut),
    /// Not HTTP requests any more (upgraded, or a head hyper refuses and
    /// closes the connection after): the bytes only pass.
    Passthrough,
}

/// Where the tap cut the stream hyper reads, and what hyper gets instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A chunk extension over [`MAX_CHUNK_EXTENSION`]: hyper's next read
    /// fails, its body decoder reports the error, and the service answers
    /// 400 and closes.
    Body,
    /// A request line over `MAX_REQUEST_LINE` (PRX-20): hyper gets these
    /// bytes to end the head it has begun (with the cut head handed out too
    /// large, whose check answers 414 and closes), then every read fails.
    /// Without this, a line longer than hyper's 60 KiB limit on a whole head
    /// got hyper's own 431.
    RequestLine(&'static [u8]),
}

/// What the tap has learnt of the head being copied, line by line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct HeadScan {
    /// Offset in the head buffer where the current line starts.
    line_start: usize,
    /// The request line has been read.
    request_line: bool,
    http10: bool,
    /// A Content-Length line was seen.
    cl_seen: bool,
    /// The one length all Content-Length lines agree on.
    cl: Option<u64>,
    /// A Content-Length value hyper refuses (not digits, or two that differ).
    cl_refused: bool,
    /// A Transfer-Encoding line was seen.
    te: bool,
    /// The last Transfer-Encoding line ends in `chunked` (hyper looks at that one).
    te_chunked: bool,
    /// An `Upgrade` field, or `CONNECT`: what follows the request may be
    /// another protocol's bytes.
    upgrade: bool,
}

/// Where a chunked body is, mirroring hyper's chunked decoder byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting the first hex digit of a chunk size.
    Start,
    /// Reading the hex digits of a chunk size.
    Size(u64),
    /// Blanks after the size.
    SizeBlank(u64),
    /// A chunk extension, up to CR, and its length so far.
    Extension(u64, u16),
    /// Expecting the LF that ends the size line.
    SizeLf(u64),
    /// Inside chunk data with this many bytes left.
    Data(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// After the last chunk: an empty line ends the body, else a trailer starts.
    EndCr,
    /// Inside a trailer line.
    Trailer,
    /// Expecting the LF that ends a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
}

/// The byte-stream state machine: feed it the bytes the connection reads, in
/// order; it pushes each request head into its [`HeadQueue`].
#[derive(Debug)]
pub struct HeadTap {
    state: State,
    /// The head being copied; split off when complete, so one allocation is
    /// reused once the service has dropped the previous head.
    buf: BytesMut,
    shared: Arc<Shared>,
    /// The last head asked to switch protocols: until it is answered, the
    /// bytes after it may be a tunnel's, and are never cut.
    after_upgrade: bool,
}

impl HeadTap {
    /// A tap at the start of a connection, and the queue its heads go to.
    pub fn new() -> (HeadTap, HeadQueue) {
        let shared = Arc::new(Shared::default());
        let tap = HeadTap {
            state: State::Idle,
            buf: BytesMut::new(),
            shared: Arc::clone(&shared),
            after_upgrade: false,
        };
        (tap, HeadQueue { shared })
    }

    /// Whether the tap has stopped looking for heads on this connection.
    pub fn is_passthrough(&self) -> bool {
        self.state == State::Passthrough
    }

    /// Feeds the next bytes read from the connection. `Some((at, cut))`: the
    /// bytes from `at` on break a limit; hyper must not get them (see [`Cut`]).
    pub fn feed(&mut self, mut input: &[u8]) -> Option<(usize, Cut)> {
        match self.state {
            State::Passthrough => return None,
            State::Refused(cut) => return Some((0, cut)),
            _ => {}
        }
        if self.shared.stop.load(Ordering::Acquire) {
            self.passthrough();
            return None;
        }
        let total = input.len();
        while !input.is_empty() {
            // Every step consumes at least one byte or changes the state to
            // one that will, so this loop ends.
            let used = match self.state {
                State::Idle => self.idle(input),
                State::Head(scan) => self.head(scan, input),
                State::Length(left) => {
                    let take = left.min(input.len() as u64);
                    let rest = left - take;
                    self.state = if rest == 0 {
                        State::Idle
                    } else {
                        State::Length(rest)
                    };
                    // `take` is at most `input.len()`, so it fits a usize.
                    usize::try_from(take).unwrap_or(input.len())
                }
                State::Chunked(chunk) => self.chunked(chunk, input),
                State::Passthrough => return None,
                State::Refused(cut) => return Some((total - input.len(), cut)),
            };
            input = input.get(used..).unwrap_or_default();
        }
        // A cut at the read's last byte.
        match self.state {
            State::Refused(cut) => Some((total, cut)),
            _ => None,
        }
    }

    fn passthrough(&mut self) {
        self.state = State::Passthrough;
        self.buf = BytesMut::new();
        self.shared.partial.store(false, Ordering::Release);
    }

    /// Skips empty lines before a request line, as httparse does.
    fn idle(&mut self, input: &[u8]) -> usize {
        let skipped = input
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n'))
            .unwrap_or(input.len());
        match input.get(skipped) {
            None => {}
            // A method starts with a token byte; anything else (a TLS record,
            // a WebSocket frame) is not a request and hyper would refuse it.
            Some(&b) if !is_tchar(b) => {
                self.passthrough();
                return input.len();
            }
            Some(_) => {
                // Heads are split off the front, so pipelined heads share one
                // allocation; once it runs low, `reserve` takes it back if the
                // service has dropped every head cut from it.
                self.buf.clear();
                if self.buf.capacity() < HEAD_MIN_ROOM {
                    self.buf.reserve(HEAD_CAPACITY);
                }
                self.state = State::Head(HeadScan::default());
                self.shared.partial.store(true, Ordering::Release);
            }
        }
        skipped
    }

    /// Copies head bytes line by line until the empty line; returns how many
    /// bytes of `input` belonged to the head.
    fn head(&mut self, mut scan: HeadScan, input: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            let nl = memchr::memchr(b'\n', rest);
            if !scan.request_line {
                if let Some(taken) = self.request_line_too_long(&scan, rest, nl) {
                    return used + taken;
                }
            }
            let Some(nl) = nl else {
                if !self.copy(rest, &scan) {
                    return input.len();
                }
                self.state = State::Head(scan);
                return input.len();
            };
            let line = rest.get(..=nl).unwrap_or_default();
            if !self.copy(line, &scan) {
                return input.len();
            }
            used += line.len();
            if !self.end_line(&mut scan) {
                return used;
            }
        }
    }

    /// Appends head bytes; past [`MAX_TAPPED_HEAD`] hands out the cut head and
    /// stops (hyper answers 431 and closes). Returns whether to go on.
    fn copy(&mut self, bytes: &[u8], scan: &HeadScan) -> bool {
        let room = MAX_TAPPED_HEAD.saturating_sub(self.buf.len());
        if bytes.len() <= room {
            self.buf.extend_from_slice(bytes);
            return true;
        }
        self.buf
            .extend_from_slice(bytes.get(..room).unwrap_or_default());
        let head = RawHead {
            bytes: self.buf.split().freeze(),
            http10: scan.request_line && scan.http10,
            too_large: true,
        };
        self.push(head);
        self.passthrough();
        false
    }

    /// Reads the line just copied (it ends the buffer). Returns false once the
    /// head is complete and the state has moved on.
    fn end_line(&mut self, scan: &mut HeadScan) -> bool {
        let line = self.buf.get(scan.line_start..).unwrap_or_default();
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        scan.line_start = self.buf.len();
        if !scan.request_line {
            scan.request_line = true;
            scan.upgrade = line.starts_with(b"CONNECT ");
            if line.ends_with(b" HTTP/1.1") {
                scan.http10 = false;
            } else if line.ends_with(b" HTTP/1.0") {
                scan.http10 = true;
            } else {
                // Not an HTTP/1.x request line: hyper refuses it and closes.
                self.passthrough();
                return false;
            }
            return true;
        }
        if line.is_empty() {
            let next = framing_after(scan);
            self.after_upgrade = scan.upgrade;
            let head = RawHead {
                bytes: self.buf.split().freeze(),
                http10: scan.http10,
                too_large: false,
            };
            self.push(head);
            if next == State::Passthrough {
                self.passthrough();
            } else {
                self.state = next;
            }
            return false;
        }
        read_field(line, scan);
        true
    }

    /// Once the request line being read (its newline at `nl` in `rest`, if
    /// there) goes over `MAX_REQUEST_LINE` within `rest`: copies it up to that
    /// byte, hands the head out too large, cuts the stream there
    /// ([`Cut::RequestLine`]) and returns how much of `rest` it took.
    fn request_line_too_long(
        &mut self,
        scan: &HeadScan,
        rest: &[u8],
        nl: Option<usize>,
    ) -> Option<usize> {
        if self.after_upgrade {
            // Possibly a tunnel's first bytes: never cut. If the upgrade is
            // declined they are the next request, and a line too long for
            // hyper's 60 KiB gets hyper's own 431 (and the close) there.
            return None;
        }
        let so_far = self.buf.len().saturating_sub(scan.line_start);
        // The line may hold MAX_REQUEST_LINE bytes before its newline.
        let room = (MAX_REQUEST_LINE + 1).saturating_sub(so_far);
        if nl.unwrap_or(rest.len()) < room {
            return None;
        }
        let window = rest.get(..room)?;
        self.buf.extend_from_slice(window);
        let line = self.buf.get(scan.line_start..).unwrap_or_default();
        // hyper has the line up to here: end it as a request line it can
        // parse, after the target if the method has ended (a second space
        // would already have been refused).
        let end: &'static [u8] = if memchr::memchr(b' ', line).is_some() {
            b" HTTP/1.1\r\n\r\n"
        } else {
            b" / HTTP/1.1\r\n\r\n"
        };
        let head = RawHead {
            bytes: self.buf.split().freeze(),
            http10: false,
            too_large: true,
        };
        self.push(head);
        self.buf = BytesMut::new();
        self.state = State::Refused(Cut::RequestLine(end));
        Some(room)
    }

    fn push(&self, head: RawHead) {
        self.shared.partial.store(false, Ordering::Release);
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(head);
    }

    /// Follows a chunked body the way hyper's decoder does; whatever hyper
    /// refuses ends the connection, so the tap stops there.
    fn chunked(&mut self, chunk: Chunk, input: &[u8]) -> usize {
        if let Chunk::Data(left) = chunk {
            let take = left.min(input.len() as u64);
            let rest = left - take;
            self.state = State::Chunked(if rest == 0 {
                Chunk::DataCr
            } else {
                Chunk::Data(rest)
            });
            return usize::try_from(take).unwrap_or(input.len());
        }
        let Some(&b) = input.first() else {
            return 0;
        };
        let next = match (chunk, b) {
            (Chunk::Start, _) => hex(b).map(|d| Chunk::Size(u64::from(d))),
            (Chunk::Size(n), b'\t' | b' ') => Some(Chunk::SizeBlank(n)),
            (Chunk::Size(n) | Chunk::SizeBlank(n), b';') => Some(Chunk::Extension(n, 1)),
            (Chunk::Size(n) | Chunk::SizeBlank(n) | Chunk::Extension(n, _), b'\r') => {
                Some(Chunk::SizeLf(n))
            }
            (Chunk::Size(n), _) => hex(b)
                .and_then(|d| n.checked_mul(16)?.checked_add(u64::from(d)))
                .map(Chunk::Size),
            (Chunk::SizeBlank(n), b'\t' | b' ') => Some(Chunk::SizeBlank(n)),
            (Chunk::SizeBlank(_), _) => None,
            (Chunk::Extension(..), b'\n') => None,
            (Chunk::Extension(n, len), _) if len < MAX_CHUNK_EXTENSION => {
                Some(Chunk::Extension(n, len + 1))
            }
            (Chunk::Extension(..), _) => {
                self.state = State::Refused(Cut::Body);
                return 0;
            }
            (Chunk::SizeLf(0), b'\n') => Some(Chunk::EndCr),
            (Chunk::SizeLf(n), b'\n') => Some(Chunk::Data(n)),
            (Chunk::SizeLf(_), _) => None,
            (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
            (Chunk::DataCr, _) => None,
            (Chunk::DataLf, b'\n') => Some(Chunk::Start),
            (Chunk::DataLf, _) => None,
            (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
            (Chunk::Trailer, b'\r') => Some(Chunk::TrailerLf),
            (Chunk::EndCr | Chunk::Trailer, _) => Some(Chunk::Trailer),
            (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
            (Chunk::TrailerLf, _) => None,
            (Chunk::EndLf, b'\n') => {
                self.state = State::Idle;
                return 1;
            }
            (Chunk::EndLf, _) => None,
            (Chunk::Data(_), _) => None,
        };
        match next {
            Some(c) => self.state = State::Chunked(c),
            None => {
                self.passthrough();
                return input.len();
            }
        }
        1
    }
}

/// What follows a complete head, as hyper frames it (hyper `role.rs`,
/// `Server::parse`). Heads hyper refuses, and CL+TE (hyper reads it chunked,
/// then closes), end the tap's work on the connection.
fn framing_after(scan: &HeadScan) -> State {
    if scan.te {
        if scan.http10 || scan.cl_seen || !scan.te_chunked {
            return State::Passthrough;
        }
        return State::Chunked(Chunk::Start);
    }
    if scan.cl_refused {
        return State::Passthrough;
    }
    match scan.cl {
        None | Some(0) => State::Idle,
        Some(n) if n > MAX_BODY_LENGTH => State::Passthrough,
        Some(n) => State::Length(n),
    }
}

/// Notes the header fields that decide the body's framing.
fn read_field(line: &[u8], scan: &mut HeadScan) {
    let Some(colon) = memchr::memchr(b':', line) else {
        return;
    };
    let (name, value) = line.split_at(colon);
    // httparse trims blanks on both sides of a value.
    let value = value.get(1..).unwrap_or_default().trim_ascii();
    if name.eq_ignore_ascii_case(b"content-length") {
        scan.cl_seen = true;
        match (digits(value), scan.cl) {
            (None, _) => scan.cl_refused = true,
            (Some(n), Some(prev)) if n != prev => scan.cl_refused = true,
            (Some(n), _) => scan.cl = Some(n),
        }
    } else if name.eq_ignore_ascii_case(b"upgrade") {
        scan.upgrade = true;
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        scan.te = true;
        // hyper reads the value as visible ASCII and looks at its last coding.
        scan.te_chunked = value
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
            && value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    }
}

/// A Content-Length value as hyper reads it: decimal digits only, no overflow.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 9110 §5.6.2 `tchar`, the bytes a method is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A connection whose reads feed a [`HeadTap`]; writes pass untouched.
#[derive(Debug)]
pub struct TapIo<T> {
    inner: T,
    tap: HeadTap,
    /// Where the tap cut the stream, and how many of the cut's own bytes
    /// hyper has read since.
    cut: Option<(Cut, usize)>,
}

impl<T> TapIo<T> {
    /// The wrapped connection (for TLS facts such as ALPN).
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

/// Wraps a connection (TCP or TLS) for hyper's HTTP/1 server: serve the
/// returned IO, and pop one [`RawHead`] from the queue per request.
pub fn tap<T>(io: T) -> (TokioIo<TapIo<T>>, HeadQueue) {
    let (tap, heads) = HeadTap::new();
    let io = TapIo {
        inner: io,
        tap,
        cut: None,
    };
    (TokioIo::new(io), heads)
}

impl<T: AsyncRead + Unpin> AsyncRead for TapIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some((cut, given)) = &mut this.cut {
            return match read_after_cut(*cut, given, buf) {
                Some(read) => Poll::Ready(read),
                None => discard(&mut this.inner, cx, buf),
            };
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled().get(before..).unwrap_or_default();
            if let Some((at, cut)) = this.tap.feed(read) {
                buf.set_filled(before + at);
                let (cut, given) = this.cut.insert((cut, 0));
                // An empty read would be taken for the client's end.
                if at == 0 {
                    return match read_after_cut(*cut, given, buf) {
                        Some(read) => Poll::Ready(read),
                        None => discard(&mut this.inner, cx, buf),
                    };
                }
            }
        }
        polled
    }
}

/// A read after the tap cut the stream, `given` bytes of the cut's own
/// given already. A body cut ([`Cut::Body`]) fails it: hyper's body decoder
/// reports the error and the service answers 400 and closes, as for framing
/// hyper refuses itself. A head cut gives the rest of its bytes; once they
/// are given, `None`: the client's bytes are read and dropped
/// ([`discard`]).
fn read_after_cut(cut: Cut, given: &mut usize, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
    match cut {
        Cut::Body => Some(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a limit of the request body was broken",
        ))),
        Cut::RequestLine(end) => {
            let rest = end.get(*given..).unwrap_or_default();
            if rest.is_empty() {
                return None;
            }
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            *given += n;
            Some(Ok(()))
        }
    }
}

/// Reads the client's bytes after a head cut and drops them, so hyper gets
/// none of them but still sees the client leave (end of stream, an error):
/// hyper reads on while the service answers the cut head, and a failed read
/// there would end the connection before the 414 is written; the answer
/// closes it. Pending only when the socket is, with its waker registered.
fn discard<T: AsyncRead + Unpin>(
    inner: &mut T,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    let before = buf.filled().len();
    // A bounded number of reads a turn: a client that floods the socket
    // cannot keep the connection's task from answering.
    for _ in 0..16 {
        match Pin::new(&mut *inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => buf.set_filled(before),
            other => return other,
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TapIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the tap handed out for one stream.
    #[derive(Debug, PartialEq)]
    struct Seen {
        heads: Vec<RawHead>,
        passthrough: bool,
    }

    impl Seen {
        fn bytes(&self) -> Vec<&[u8]> {
            self.heads.iter().map(RawHead::bytes).collect()
        }
    }

    /// Feeds `stream` cut before each offset in `cuts` (ascending).
    fn feed_cut(stream: &[u8], cuts: &[usize]) -> Seen {
        let (mut tap, queue) = HeadTap::new();
        let mut at = 0;
        for &cut in cuts.iter().chain([stream.len()].iter()) {
            tap.feed(&stream[at..cut]);
            at = cut;
        }
        let heads = std::iter::from_fn(|| queue.pop()).collect();
        Seen {
            heads,
            passthrough: tap.is_passthrough(),
        }
    }

    /// Feeds `stream` whole, cut once at every offset, and byte by byte, and
    /// checks that every way of reading it gives the same heads.
    fn seen(stream: &[u8]) -> Seen {
        let whole = feed_cut(stream, &[]);
        let step = (stream.len() / 2000).max(1);
        for cut in (0..=stream.len()).step_by(step) {
            assert_eq!(feed_cut(stream, &[cut]), whole, "cut at {cut}");
        }
        let bytewise: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(feed_cut(stream, &bytewise), whole, "byte by byte");
        whole
    }

    const GET: &[u8] =
        b"GET /a?b=c HTTP/1.1\r\nHost: wiki.example\r\nUser-Agent: t\r\nCookie: s=1\r\n\r\n";

    #[test]
    fn a_head_is_begun_from_its_first_byte_until_it_is_complete_and_never_in_a_body() {
        let (mut tap, queue) = HeadTap::new();
        assert!(!queue.head_begun());
        tap.feed(b"\r\n");
        assert!(!queue.head_begun(), "empty lines before a head are no head");
        tap.feed(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5");
        assert!(queue.head_begun());
        tap.feed(b"\r\n\r\nGET /");
        assert!(
            !queue.head_begun(),
            "those five bytes are the body: {:?}",
            tap.state
        );
        tap.feed(b"GET /next HTTP/1.1\r\n");
        assert!(queue.head_begun());
        tap.feed(b"Host: a\r\n\r\n");
        assert!(!queue.head_begun());
        tap.feed(b"\x16\x03\x01");
        assert!(tap.is_passthrough() && !queue.head_begun());
    }

    #[test]
    fn prx12_a_chunk_extension_over_4_kib_is_cut_where_it_goes_over() {
        let head: &[u8] = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        // An extension of `len` bytes, its `;` included.
        let body = |len: usize| format!("3;{}\r\nabc\r\n0\r\n\r\n", "a".repeat(len - 1));
        let at_limit = [head, body(4096).as_bytes(), GET].concat();
        let s = seen(&at_limit);
        assert_eq!(s.bytes(), vec![head, GET]);

        let over = [head, body(4097).as_bytes(), GET].concat();
        // The byte that makes it 4 097 long: after the head, the size digit
        // and 4 096 bytes of extension.
        let cut = head.len() + 1 + 4096;
        let (mut tap, queue) = HeadTap::new();
        assert_eq!(tap.feed(&over), Some((cut, Cut::Body)));
        assert_eq!(tap.feed(GET), Some((0, Cut::Body)));
        let heads: Vec<RawHead> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(heads.len(), 1, "no head is read past the refusal");

        let (mut tap, _queue) = HeadTap::new();
        for (i, b) in over.iter().enumerate().take(cut) {
            assert_eq!(tap.feed(&[*b]), None, "byte {i}");
        }
        assert_eq!(tap.feed(&over[cut..]), Some((0, Cut::Body)));
    }

    #[test]
    fn a_head_split_across_reads_at_every_offset_is_captured_whole() {
        let s = seen(GET);
        assert_eq!(s.bytes(), vec![GET]);
        assert!(!s.heads[0].http10() && !s.heads[0].too_large());
        assert_eq!(s.heads[0].check(), Ok(()));
        assert!(!s.passthrough);
    }

    #[test]
    fn pipelined_requests_with_length_and_chunked_bodies_give_each_head_in_order() {
        let post = b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 34\r\n\r\n";
        // Bodies that look like heads must be skipped, not captured.
        let body = b"GET /fake HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r";
        assert_eq!(body.len(), 34);
        let chunked = b"POST /up HTTP/1.1\r\nHost: a\r\ntransfer-encoding: Chunked\r\n\r\n";
        // 0x1A bytes of data that end like a head, then the last chunk.
        let chunks = b"1A\r\nGET /fake2 HTTP/1.1\r\n\r\nxyz\r\n0\r\n\r\n";
        let last = b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let stream = [GET, post, body, chunked, chunks, last].concat();
        let s = seen(&stream);
        assert_eq!(s.bytes(), vec![GET, post, chunked, last]);
        assert!(s.heads.iter().all(|h| h.check().is_ok()));
        assert!(!s.passthrough);
    }

    #[test]
    fn chunk_extensions_trailers_and_hex_sizes_are_followed_to_the_next_head() {
        let chunked = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let chunks = b"5;name=\"v;x\"\r\nhello\r\na \t;e\r\n0123456789\r\n00;last\r\nX-Sum: 1\r\nX-Other: \r\n\r\n";
        let stream = [chunked, &chunks[..], GET].concat();
        let s = seen(&stream);
        assert_eq!(s.bytes(), vec![&chunked[..], GET]);
        assert!(!s.passthrough);
    }

    #[test]
    fn a_chunked_body_hyper_refuses_stops_the_tap() {
        for bad in [
            &b"5\r\nhelloX\r\n"[..],
            b"5\nhello\r\n",
            b"z\r\n",
            b"5 5\r\n",
            b"5;a\nb\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
            let stream = [chunked, bad, GET].concat();
            let s = seen(&stream);
            assert_eq!(s.bytes(), vec![&chunked[..]], "{bad:?}");
            assert!(s.passthrough, "{bad:?}");
        }
    }

    #[test]
    fn cl_te_and_duplicate_content_length_heads_are_captured_and_checked() {
        let cl_te =
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let s = seen(&[&cl_te[..], b"0\r\n\r\n", GET].concat());
        assert_eq!(s.bytes(), vec![&cl_te[..]]);
        assert_eq!(s.heads[0].check().map_err(FramingError::status), Err(400));
        // hyper reads CL+TE as chunked and closes after it: nothing more to find.
        assert!(s.passthrough);

        // hyper accepts two equal lengths and keeps the connection: follow
        // it; the check lets the repeat collapse (PRX-09).
        let dup = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n";
        let s = seen(&[&dup[..], b"abc", GET].concat());
        assert_eq!(s.bytes(), vec![&dup[..], GET]);
        assert_eq!(s.heads[0].check(), Ok(()));
        assert_eq!(s.heads[1].check(), Ok(()));

        // Lengths hyper refuses: the head is kept, the tap stops.
        for cl in ["3\r\nContent-Length: 4", "+3", "3, 3", ""] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\n");
            let s = seen(&[head.as_bytes(), b"abc", GET].concat());
            assert_eq!(s.bytes(), vec![head.as_bytes()], "{cl}");
            assert!(s.heads[0].check().is_err() && s.passthrough, "{cl}");
        }
    }

    #[test]
    fn http10_heads_are_marked_and_cannot_use_transfer_encoding() {
        let old = b"GET / HTTP/1.0\r\n\r\n";
        let s = seen(&[&old[..], GET].concat());
        assert_eq!(s.bytes(), vec![&old[..], GET]);
        assert!(s.heads[0].http10() && !s.heads[1].http10());
        assert_eq!(s.heads[0].check(), Ok(()));

        let te = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        let s = seen(&[&te[..], b"0\r\n\r\n", GET].concat());
        assert_eq!(s.bytes(), vec![&te[..]]);
        assert!(s.heads[0].check().is_err() && s.passthrough);
    }

    #[test]
    fn empty_lines_between_requests_and_bare_lf_line_ends_are_read_as_hyper_reads_them() {
        let lf = b"GET /lf HTTP/1.1\nHost: a\n\n";
        let stream = [&b"\r\n\n"[..], lf, b"\r\n", GET].concat();
        let s = seen(&stream);
        assert_eq!(s.bytes(), vec![&lf[..], GET]);
        assert_eq!(s.heads[0].check(), Ok(()));
    }

    #[test]
    fn bytes_that_are_not_an_http1_request_stop_the_tap_without_a_head() {
        for garbage in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            b"GET /\r\n\r\n",
            b" GET / HTTP/1.1\r\n\r\n",
        ] {
            let s = seen(&[garbage, GET].concat());
            assert!(s.heads.is_empty() && s.passthrough, "{garbage:?}");
        }
    }

    #[test]
    fn a_head_longer_than_the_limits_is_handed_out_cut_and_refused() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_TAPPED_HEAD)
        );
        let s = seen(&[big.as_bytes(), GET].concat());
        assert_eq!(s.heads.len(), 1);
        assert!(s.heads[0].too_large() && s.passthrough);
        assert_eq!(s.heads[0].bytes(), &big.as_bytes()[..MAX_TAPPED_HEAD]);
        assert_eq!(s.heads[0].check(), Err(FramingError::HeadersTooLarge));

        // A request line longer than the whole cut still answers 414.
        let line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TAPPED_HEAD));
        let s = feed_cut(line.as_bytes(), &[100, 9000]);
        assert_eq!(s.heads[0].check(), Err(FramingError::UriTooLong));

        // A request line of the most bytes allowed is read as any other.
        let longest = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE - "GET / HTTP/1.1\r".len())
        );
        let s = seen(longest.as_bytes());
        assert!(!s.heads[0].too_large());
        assert_eq!(s.heads[0].check(), Ok(()));
    }

    #[test]
    fn prx20_a_request_line_over_the_limit_is_cut_where_it_goes_over_and_its_head_ended() {
        for (line, end) in [
            // In the target: hyper gets the version and the end of the head.
            (
                format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_REQUEST_LINE)),
                &b" HTTP/1.1\r\n\r\n"[..],
            ),
            (
                format!("GET /{}", "a".repeat(MAX_TAPPED_HEAD)),
                b" HTTP/1.1\r\n\r\n",
            ),
            // In the method: a target too.
            (
                format!("{} / HTTP/1.1\r\n", "A".repeat(MAX_REQUEST_LINE + 1)),
                b" / HTTP/1.1\r\n\r\n",
            ),
        ] {
            let stream = [line.as_bytes(), b"Host: a\r\n\r\n", GET].concat();
            let (mut tap, queue) = HeadTap::new();
            let cut = MAX_REQUEST_LINE + 1;
            assert_eq!(tap.feed(&stream), Some((cut, Cut::RequestLine(end))));
            assert_eq!(tap.feed(GET), Some((0, Cut::RequestLine(end))));
            let head = queue.pop().expect("the cut head");
            assert!(head.too_large() && queue.pop().is_none());
            assert_eq!(head.bytes(), &stream[..cut]);
            assert_eq!(head.check(), Err(FramingError::UriTooLong));
            // Read in pieces, the cut is at the same byte.
            let (mut tap, _queue) = HeadTap::new();
            assert_eq!(tap.feed(&stream[..100]), None);
            assert_eq!(
                tap.feed(&stream[100..cut]),
                Some((cut - 100, Cut::RequestLine(end)))
            );
            assert_eq!(tap.feed(&stream[cut..]), Some((0, Cut::RequestLine(end))));
        }
    }

    #[test]
    fn after_an_upgrade_the_tap_stops_and_after_a_refused_upgrade_it_goes_on() {
        let ws =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let (mut tap, queue) = HeadTap::new();
        tap.feed(ws);
        assert_eq!(queue.pop().map(|h| h.bytes().to_vec()), Some(ws.to_vec()));
        queue.upgraded();
        tap.feed(GET);
        assert_eq!(queue.pop(), None);
        assert!(tap.is_passthrough());

        // Answered with something else than 101: the next request is HTTP again.
        let s = seen(&[&ws[..], GET].concat());
        assert_eq!(s.bytes(), vec![&ws[..], GET]);
        // A WebSocket frame after a 101 nobody reported still stops it.
        let s = seen(&[&ws[..], b"\x81\x85\x37\xfa\x21\x3d\x7f", GET].concat());
        assert_eq!(s.bytes(), vec![&ws[..]]);
        assert!(s.passthrough);
    }

    #[test]
    fn heads_of_a_keep_alive_connection_reuse_one_buffer() {
        let (mut tap, queue) = HeadTap::new();
        let mut first = None;
        for _ in 0..1000 {
            tap.feed(GET);
            let head = queue.pop().unwrap();
            assert_eq!(head.bytes(), GET);
            let at = head.bytes().as_ptr() as usize;
            let start = *first.get_or_insert(at);
            // Every head sits in the first allocation: nothing new per request.
            assert!(at >= start && at + GET.len() <= start + HEAD_CAPACITY);
        }
    }

    /// A small deterministic generator, so the table below is the same every run.
    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn any_mix_of_requests_and_garbage_gives_the_same_heads_however_it_is_cut() {
        let pieces: &[&[u8]] = &[
            GET,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n",
            b"abcd",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"4;x\r\nabcd\r\n",
            b"0\r\nT: 1\r\n\r\n",
            b"\r\n",
            b"\n",
            b"\r",
            b"Content-Length: 99999999999999999999999\r\n",
            b"GET / HTTP/1.0\r\n",
            b"\x00\xff\x80",
            b"x: y\r\n",
            b"HTTP/1.1",
            b"0",
            b";",
            b" ",
        ];
        let mut seed = 7;
        for _ in 0..300 {
            let n = 1 + lcg(&mut seed) % 12;
            let stream: Vec<u8> = (0..n)
                .flat_map(|_| pieces[(lcg(&mut seed) as usize) % pieces.len()].to_vec())
                .collect();
            let whole = feed_cut(&stream, &[]);
            for _ in 0..20 {
                let mut cuts: Vec<usize> = (0..1 + lcg(&mut seed) % 5)
                    .map(|_| (lcg(&mut seed) as usize) % (stream.len() + 1))
                    .collect();
                cuts.sort_unstable();
                assert_eq!(
                    feed_cut(&stream, &cuts),
                    whole,
                    "{stream:?} cut at {cuts:?}"
                );
            }
            for head in &whole.heads {
                // Never more than the cap, and a checker verdict for each.
                assert!(head.bytes().len() <= MAX_TAPPED_HEAD);
                let _ = head.check();
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_the_tap() {
        let mut seed = 11;
        for _ in 0..200 {
            let len = (lcg(&mut seed) % 300) as usize;
            let stream: Vec<u8> = (0..len).map(|_| lcg(&mut seed) as u8).collect();
            // Start from a valid head so the body and chunk states see noise too.
            for prefix in [
                &b""[..],
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"POST / HTTP/1.1\r\nContent-Length: 7\r\n\r\n",
                b"GET / HTTP/1.1\r\n",
            ] {
                let s = [prefix, &stream[..]].concat();
                let whole = feed_cut(&s, &[]);
                let bytewise: Vec<usize> = (1..s.len()).collect();
                assert_eq!(feed_cut(&s, &bytewise), whole);
            }
        }
    }

    #[tokio::test]
    async fn a_hyper_service_pops_the_raw_head_of_each_pipelined_request() {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Incoming;
        use hyper::{Request, Response};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let requests: [&[u8]; 6] = [
            GET,
            b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 31\r\n\r\nGET /fake HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
            b"GET /four HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST /five HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        let head_of = |r: &[u8]| {
            let end = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            r[..end].to_vec()
        };

        // A tiny pipe, so hyper's reads cut the heads at odd places.
        let (client, server) = tokio::io::duplex(13);
        let (io, heads) = tap(server);
        let popped = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&popped);
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let head = heads.pop();
            let log = Arc::clone(&log);
            async move {
                let path = req.uri().path().to_string();
                let body = req.into_body().collect().await?.to_bytes();
                let verdict = head.as_ref().map(RawHead::check);
                log.lock()
                    .unwrap()
                    .push((path, head.map(|h| h.bytes().to_vec()), body));
                let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                if verdict != Some(Ok(())) {
                    *resp.status_mut() = hyper::StatusCode::BAD_REQUEST;
                    resp.headers_mut()
                        .insert("connection", http::HeaderValue::from_static("close"));
                }
                Ok::<_, hyper::Error>(resp)
            }
        });
        let conn =
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, svc));

        let (mut rd, mut wr) = tokio::io::split(client);
        let all = requests.concat();
        let writer = tokio::spawn(async move {
            for piece in all.chunks(7) {
                if wr.write_all(piece).await.is_err() {
                    break;
                }
            }
        });
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            rd.read_to_end(&mut answer),
        )
        .await
        .unwrap()
        .unwrap();
        let _ = writer.await;
        let _ = conn.await;

        let popped = popped.lock().unwrap().clone();
        let want: Vec<_> = requests[..5].iter().map(|r| Some(head_of(r))).collect();
        let got: Vec<_> = popped.iter().map(|(_, h, _)| h.clone()).collect();
        assert_eq!(got, want);
        let paths: Vec<_> = popped.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(paths, ["/a", "/two", "/three", "/four", "/five"]);
        assert_eq!(popped[1].2, &b"GET /fake HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        assert_eq!(popped[2].2, &b"abc"[..]);
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 4, "{answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 400 Bad Request").count(),
            1,
            "{answer}"
        );
    }
}
