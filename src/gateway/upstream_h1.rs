//! Requests without a body to HTTP/1.1 upstreams, written and answered on a
//! connection the pool holds itself, on the request's own task.
//!
//! hyper's client gives every connection a task of its own and passes each
//! request and answer through channels to it: about 13 500 instructions a
//! request (README, "Performance"), a third of what a public path costs.
//! A request without a body needs none of that: its head is written in one
//! call and the answer read where it is awaited. A request with a body, or
//! one that may become a tunnel, still goes through hyper's client, which
//! sends the body while it reads the answer.
//!
//! The answer is read by RFC 9112: informational answers skipped, the
//! body's length from `Transfer-Encoding: chunked`, `Content-Length` or the
//! connection's end (§6.3), no body after a HEAD, 204 or 304. An answer
//! whose length could be read two ways is refused, and a connection goes
//! back to the pool only when its answer was read to the end and nothing
//! followed it.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::{Frame, SizeHint};

use super::upstream::Beside;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

/// The most an answer's head may take (hyper's client allowed about 400 KiB).
const MAX_HEAD: usize = 256 * 1024;

/// The most fields an answer's head may have (as hyper's client).
const MAX_FIELDS: usize = 100;

/// The most a chunk's size line, extensions included, may take.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// The most all of a chunked body's chunk extensions may take together (as
/// hyper's client): an upstream cannot make the gateway parse an extension
/// per byte of data without end.
const MAX_EXTENSIONS: usize = 16 * 1024;

/// The most a chunked body's trailer section may take.
const MAX_TRAILERS: usize = 16 * 1024;

/// Room made in the read buffer before each read.
const READ_SIZE: usize = 16 * 1024;

/// The most a buffer of an idle connection keeps; a larger one is dropped.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The most informational answers (100, 103) before a final one.
const MAX_INFORMATIONAL: usize = 16;

/// Why an exchange or its answer's body failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The request's head could not be written.
    #[error("writing the request to the upstream failed: {0}")]
    Write(#[source] io::Error),
    /// Reading the answer failed.
    #[error("reading the upstream's answer failed: {0}")]
    Read(#[source] io::Error),
    /// The upstream closed the connection before any answer.
    #[error("the upstream closed the connection without answering")]
    Closed,
    /// The upstream closed the connection inside the answer's head or body.
    #[error("the upstream closed the connection in the middle of its answer")]
    Cut,
    /// The answer's head is not HTTP/1.x.
    #[error("the upstream's answer is not valid HTTP/1.1: {0}")]
    Head(httparse::Error),
    /// The answer's head is over [`MAX_HEAD`].
    #[error("the upstream's answer head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// A field of the answer's head is not a valid HTTP field.
    #[error("the upstream's answer has an invalid field")]
    Field,
    /// The answer's length could be read two ways (PRX-23).
    #[error("the upstream's answer length is ambiguous: {0}")]
    AmbiguousLength(&'static str),
    /// The answer's head frames it in a way HTTP/1.1 does not allow.
    #[error("the upstream's answer framing is invalid: {0}")]
    Framing(&'static str),
    /// A 101 to a request that asked for no upgrade.
    #[error("the upstream switched protocols unasked")]
    UnaskedSwitch,
    /// A chunked body that breaks its own grammar.
    #[error("the upstream's chunked body is invalid: {0}")]
    Chunk(&'static str),
}

/// A failed exchange, and whether no byte of an answer arrived (a reused
/// connection the upstream had closed: the request may go on another).
#[derive(Debug)]
pub struct Failed {
    /// What failed.
    pub error: ExchangeError,
    /// No byte of an answer arrived before the failure.
    pub unanswered: bool,
}

/// A connection's byte stream: plain TCP or TLS over it.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (ALPN chose HTTP/1.1).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// An in-memory pipe, for the fuzz target `upstream_answer` (built with
    /// `--cfg fuzzing` only): it cuts an answer into reads of a chosen size.
    #[cfg(fuzzing)]
    Memory(tokio::io::DuplexStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(fuzzing)]
            Stream::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(fuzzing)]
            Stream::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(fuzzing)]
            Stream::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(fuzzing)]
            Stream::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// An HTTP/1.1 connection to an upstream, with the buffers it reuses.
pub struct Conn {
    io: Stream,
    /// What was read and not yet taken; empty between exchanges.
    buf: BytesMut,
    /// The request head being written.
    head: Vec<u8>,
    /// Where the fields of the answer head being read lie in `buf`: kept
    /// here, not on the stack, so no answer moves or clears a table of them.
    fields: Vec<Field>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl Conn {
    /// A connection over `io`, before its first request.
    pub fn new(io: Stream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Whether an idle connection may take a request: nothing arrived on it
    /// while it was idle, neither its end (the upstream closed it) nor
    /// stray bytes. Never waits; costs no system call unless the socket
    /// became readable.
    pub fn is_quiet(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut one = [0u8; 1];
        let mut read = ReadBuf::new(&mut one);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut read)
            .is_pending()
    }

    /// Sends a request without a body (`target` in origin form, `headers`
    /// as the upstream gets them but for framing, then the fields `beside`
    /// them, whose names `headers` does not hold) and reads its answer's
    /// head; the body follows as the answer's frames. Once an answer's head
    /// is read, `headers` is emptied and holds the answer's fields: a map
    /// that already grew to a request's size is not made again for its
    /// answer (hyper's server then keeps it for the next request).
    pub async fn exchange(
        mut self,
        method: &Method,
        target: &str,
        headers: &mut HeaderMap,
        beside: &Beside<'_>,
    ) -> Result<http::Response<AnswerBody>, Failed> {
        write_head(&mut self.head, method, target, headers, beside);
        let sent = async {
            self.io.write_all(&self.head).await?;
            self.io.flush().await
        };
        if let Err(e) = sent.await {
            return Err(Failed {
                error: ExchangeError::Write(e),
                unanswered: true,
            });
        }
        let mut answered = false;
        let mut heads = Heads::default();
        loop {
            answered |= !self.buf.is_empty();
            let head = self.final_head(&mut heads).map_err(|error| Failed {
                error,
                unanswered: false,
            })?;
            if let Some(head) = head {
                let map = std::mem::take(headers);
                return self.answer(head, method == Method::HEAD, map);
            }
            self.buf.reserve(READ_SIZE);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => {
                    let error = if answered {
                        ExchangeError::Cut
                    } else {
                        ExchangeError::Closed
                    };
                    return Err(Failed {
                        error,
                        unanswered: !answered,
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(Failed {
                        error: ExchangeError::Read(e),
                        unanswered: !answered,
                    })
                }
            }
        }
    }

    /// The final answer's head, once `buf` holds it; informational answers
    /// before it are dropped (at most [`MAX_INFORMATIONAL`]).
    fn final_head(&mut self, heads: &mut Heads) -> Result<Option<Head>, ExchangeError> {
        while heads.gate.ready(&mut self.buf) {
            let Some(head) = parse_head(&self.buf, &mut self.fields)? else {
                heads.gate.partial(self.buf.len());
                break;
            };
            if head.len > MAX_HEAD {
                return Err(ExchangeError::HeadTooLarge);
            }
            if !(100..200).contains(&head.status) || head.status == 101 {
                return Ok(Some(head));
            }
            // Informational: its final answer follows, after a few.
            heads.informational += 1;
            if heads.informational > MAX_INFORMATIONAL {
                return Err(ExchangeError::Framing("too many informational answers"));
            }
            self.buf.advance(head.len);
            heads.gate = HeadGate::default();
        }
        if self.buf.len() >= MAX_HEAD {
            return Err(ExchangeError::HeadTooLarge);
        }
        Ok(None)
    }

    /// The response of a parsed final head.
    fn answer(
        mut self,
        head: Head,
        head_request: bool,
        map: HeaderMap,
    ) -> Result<http::Response<AnswerBody>, Failed> {
        let failed = |error| Failed {
            error,
            unanswered: false,
        };
        if head.status == 101 {
            return Err(failed(ExchangeError::UnaskedSwitch));
        }
        let bytes = self.buf.split_to(head.len).freeze();
        if head.len > KEEP_CAPACITY {
            // What follows moves to a buffer of its own: the rest of this
            // one would otherwise keep the large head's allocation alive
            // for as long as the connection idles in the pool.
            self.buf = BytesMut::from(&self.buf[..]);
        }
        let (headers, present) = fields(&self.fields, &bytes, map).map_err(failed)?;
        let status = StatusCode::from_u16(head.status)
            .map_err(|_| failed(ExchangeError::Framing("an invalid status code")))?;
        if head.version == Version::HTTP_10 && present.transfer_encoding {
            // RFC 9112 §6.1: an HTTP/1.0 message's transfer coding is faulty framing.
            return Err(failed(ExchangeError::Framing(
                "Transfer-Encoding in an HTTP/1.0 answer",
            )));
        }
        let framing = body_framing(head_request, head.status, &headers, present).map_err(failed)?;
        let announced_unsent = bodiless(head_request, head.status)
            && (present.transfer_encoding || present.content_length)
            && announces_body(&headers);
        let close_asked = present.close;
        // Not after a HEAD either: an upstream that answers HEAD like GET may
        // send the body in a later write, where no check before reuse sees
        // it yet; HEAD is rare enough for a new connection each.
        let keep = head.version == Version::HTTP_11
            && !matches!(framing, Framing::UntilClose)
            && !close_asked
            && !announced_unsent
            && !head_request;
        let reason = bytes
            .get(head.reason[0]..head.reason[1])
            .unwrap_or_default();
        let standard = status
            .canonical_reason()
            .is_some_and(|r| r.as_bytes() == reason);
        let mut response = http::Response::new(AnswerBody {
            conn: Some(self),
            framing,
            keep,
        });
        *response.status_mut() = status;
        *response.version_mut() = head.version;
        *response.headers_mut() = headers;
        if !standard {
            // Passed on as hyper's client did: hyper's server writes it.
            if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.to_vec()) {
                response.extensions_mut().insert(phrase);
            }
        }
        Ok(response)
    }
}

/// Writes a bodiless request's head into `out`: the request line, the
/// fields but for framing, and `Content-Length: 0` where the method
/// defines a body or the client sent one.
fn write_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    beside: &Beside<'_>,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut had_length = false;
    for (name, value) in headers {
        // The framing is this connection's to state (the body is empty).
        if name == CONTENT_LENGTH {
            had_length = true;
            continue;
        }
        if name == TRANSFER_ENCODING {
            continue;
        }
        write_field(out, name, value);
    }
    // Written here rather than inserted into `headers`: inserting grew the
    // map on every request (about 1 100 instructions for the forwarding
    // fields, 1 500 more for a signed-in request's identity).
    for (name, value) in beside.fields() {
        write_field(out, name, value);
    }
    if had_length || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// One `name: value` line.
fn write_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// What reading an answer's heads has seen so far.
#[derive(Default)]
struct Heads {
    gate: HeadGate,
    /// Informational answers skipped.
    informational: usize,
}

/// When an answer head is parsed: at once, then, if it was not all there,
/// again only once an empty line has arrived. A head that can be complete
/// ends with one, and parsing from the start each time a byte arrives
/// would cost an upstream that drips its head the square of the head's
/// size (a 256 KiB head, about 32 GiB of bytes looked at).
#[derive(Default)]
struct HeadGate {
    /// How much of the buffer the last parse saw; 0 before the first.
    seen: usize,
}

impl HeadGate {
    /// Whether `buf` is worth parsing now. Once a parse found the head not
    /// all there, empty lines before its status line (which httparse skips)
    /// are dropped here, so each empty line found later ends a head.
    fn ready(&mut self, buf: &mut BytesMut) -> bool {
        if buf.is_empty() {
            return false;
        }
        if self.seen == 0 {
            return true;
        }
        let mut dropped = 0;
        loop {
            let skip = if buf.starts_with(b"\r\n") {
                2
            } else if buf.starts_with(b"\n") {
                1
            } else {
                break;
            };
            buf.advance(skip);
            dropped += skip;
        }
        // The empty line may have begun in the two bytes before the new ones.
        let from = self.seen.saturating_sub(dropped).saturating_sub(2);
        let ready = empty_line_in(buf.get(from..).unwrap_or_default());
        self.seen = buf.len().max(1);
        ready
    }

    /// The parse of a buffer of `len` bytes found the head not all there.
    fn partial(&mut self, len: usize) {
        self.seen = len.max(1);
    }
}

/// Whether `bytes` hold a line feed followed by an empty line (`LF LF` or
/// `LF CR LF`).
fn empty_line_in(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|at| {
        let rest = bytes.get(at + 1..).unwrap_or_default();
        rest.starts_with(b"\n") || rest.starts_with(b"\r\n")
    })
}

/// A parsed answer head.
struct Head {
    /// The head's length, blank line included.
    len: usize,
    status: u16,
    version: Version,
    /// Where the reason phrase lies in the head.
    reason: [usize; 2],
}

/// Where a field lies in the bytes of its head: name start and end, value
/// start and end.
type Field = [usize; 4];

/// The head at the start of `buf`, `None` if it is not all there yet; its
/// fields' places go to `fields`.
fn parse_head(buf: &[u8], fields: &mut Vec<Field>) -> Result<Option<Head>, ExchangeError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ExchangeError::Head(e)),
    };
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    fields.clear();
    // Places, not slices: the bytes are frozen once this borrow ends, and
    // each value then shares them instead of being copied.
    for f in response.headers.iter() {
        // httparse's slices lie in `buf`; were one not to, it is refused.
        let place = |p: *const u8| (p as usize).checked_sub(base).ok_or(ExchangeError::Field);
        let (name, value) = (place(f.name.as_ptr())?, place(f.value.as_ptr())?);
        fields.push([name, name + f.name.len(), value, value + f.value.len()]);
    }
    let reason = response.reason.unwrap_or_default();
    let reason_at = (reason.as_ptr() as usize).saturating_sub(base);
    Ok(Some(Head {
        len,
        status: response.code.unwrap_or(0),
        version,
        reason: [reason_at, reason_at + reason.len()],
    }))
}

/// Which of the fields that frame an answer its head carries, and whether
/// it asks to close, noted while its map is built: they are then not looked
/// up in the map again (those it lacks, or `Connection` to be read).
#[derive(Debug, Default, Clone, Copy)]
struct Present {
    transfer_encoding: bool,
    content_length: bool,
    /// The length every `Content-Length` line gives, when they are all the
    /// same digits (at most 18 of them); `None` if any is not (or none is there).
    length: Option<u64>,
    /// A `Connection` line says `close`: the connection is not reused.
    close: bool,
}

/// The fields at `places` in `bytes` (a head), their values sharing it, in
/// `map` (emptied first).
fn fields(
    places: &[Field],
    bytes: &Bytes,
    mut map: HeaderMap,
) -> Result<(HeaderMap, Present), ExchangeError> {
    map.clear();
    map.reserve(places.len());
    let mut present = Present::default();
    let mut lengths = crate::gateway::upstream::Lengths::default();
    for &[n0, n1, v0, v1] in places {
        let name = bytes
            .get(n0..n1)
            .and_then(|n| HeaderName::from_bytes(n).ok())
            .ok_or(ExchangeError::Field)?;
        if v1 > bytes.len() || v0 > v1 {
            return Err(ExchangeError::Field);
        }
        present.transfer_encoding |= name == TRANSFER_ENCODING;
        if name == CONTENT_LENGTH {
            present.content_length = true;
            lengths.see(bytes.get(v0..v1).unwrap_or_default());
        }
        let value = HeaderValue::from_maybe_shared(bytes.slice(v0..v1))
            .map_err(|_| ExchangeError::Field)?;
        // Read here, value in hand, not looked up in the map again.
        present.close |= name == CONNECTION && says_close(value.as_bytes());
        map.append(name, value);
    }
    present.length = lengths.length();
    Ok((map, present))
}

/// How an answer's body ends (RFC 9112 §6.3).
#[derive(Debug)]
enum Framing {
    /// After this many more bytes.
    Length(u64),
    /// With its last chunk and trailer section; the extension bytes read so far.
    Chunked(Chunk, usize),
    /// When the upstream closes the connection.
    UntilClose,
    /// It has ended (or there was none).
    Ended,
}

/// Where a chunked body is.
#[derive(Debug)]
enum Chunk {
    /// Before a chunk's size line.
    Size,
    /// Inside a chunk, this many bytes to go.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, before the trailer section's end.
    Trailers(TrailerGate),
}

/// The framing of an answer to a request (a HEAD if `head_request`) with
/// `status` and `headers` (which carry the `present` framing fields); an
/// error for a length that reads two ways.
fn body_framing(
    head_request: bool,
    status: u16,
    headers: &HeaderMap,
    present: Present,
) -> Result<Framing, ExchangeError> {
    if bodiless(head_request, status) || (100..200).contains(&status) {
        return Ok(Framing::Ended);
    }
    if present.transfer_encoding {
        if present.content_length {
            return Err(ExchangeError::AmbiguousLength(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        // Chunked alone: another coding (`gzip, chunked`, `chunked, gzip`)
        // would reach the client as content, undecoded and unlabelled, once
        // the field is dropped for the client's own framing; nginx refuses
        // it alike.
        if !crate::gateway::upstream::only_chunked(headers) {
            return Err(ExchangeError::Framing(
                "a transfer coding other than chunked",
            ));
        }
        return Ok(Framing::Chunked(Chunk::Size, 0));
    }
    if !present.content_length {
        return Ok(Framing::UntilClose);
    }
    // Read as the map was built: the same digits on every line, or refused.
    let Some(length) = present.length else {
        return Err(ExchangeError::AmbiguousLength("an invalid Content-Length"));
    };
    Ok(if length == 0 {
        Framing::Ended
    } else {
        Framing::Length(length)
    })
}

/// Whether an answer has no body whatever its head says: one to a HEAD,
/// a 204 or a 304 (RFC 9112 §6.3; 1xx are skipped before).
fn bodiless(head_request: bool, status: u16) -> bool {
    head_request || status == 204 || status == 304
}

/// Whether a head announces a body. On a [`bodiless`] answer that is
/// allowed (a HEAD's answer says the GET's length), but an upstream that
/// sent the body anyway, in a later write, would have it read as the next
/// request's answer: such a connection is not reused (nor, in `answer`,
/// any connection that answered a HEAD).
fn announces_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get_all(CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0")
}

/// Whether a `Connection` value says `close`.
fn says_close(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// An answer's body, read from its connection as it is polled.
#[derive(Debug)]
pub struct AnswerBody {
    /// `None` once a read failed: the connection is closed.
    conn: Option<Conn>,
    framing: Framing,
    /// The upstream may take another request on the connection.
    keep: bool,
}

impl AnswerBody {
    /// The connection, if the answer was read to its end, nothing followed
    /// it, and the upstream keeps it open: it may take another request.
    pub fn take_reusable(&mut self) -> Option<Conn> {
        let reusable = self.keep
            && matches!(self.framing, Framing::Ended)
            && self.conn.as_ref().is_some_and(|c| c.buf.is_empty());
        if !reusable {
            return None;
        }
        let mut conn = self.conn.take()?;
        // A request of a rare size does not stay pinned to an idle
        // connection (up to 1 024 of them per upstream and worker); nor does
        // an answer's, whose head `answer` already let go of.
        if conn.head.capacity() > KEEP_CAPACITY {
            conn.head = Vec::new();
        }
        Some(conn)
    }
}

/// Reads more of the connection into its buffer; `Ok(0)` at its end.
fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    conn.buf.reserve(READ_SIZE);
    tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf)
}

/// Up to `rest` buffered bytes, taken.
fn take_data(conn: &mut Conn, rest: &mut u64) -> Bytes {
    let n = usize::try_from(*rest)
        .unwrap_or(usize::MAX)
        .min(conn.buf.len());
    *rest -= n as u64;
    conn.buf.split_to(n).freeze()
}

/// One step of a chunked body: `Some` frame (or error) to hand out, or
/// `None` to go on (the state moved, or more bytes were read).
fn chunk_step(
    conn: &mut Conn,
    state: &mut Chunk,
    extensions: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Frame<Bytes>>, ExchangeError>> {
    match state {
        Chunk::Size => {
            // At least one hex digit: httparse takes an empty size as 0.
            if conn.buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                return Poll::Ready(Err(ExchangeError::Chunk("a size line without a size")));
            }
            match httparse::parse_chunk_size(&conn.buf) {
                Ok(httparse::Status::Complete((used, _))) if used > MAX_CHUNK_LINE => {
                    Poll::Ready(Err(ExchangeError::Chunk("a size line too long")))
                }
                Ok(httparse::Status::Complete((used, size))) => {
                    let line = conn.buf.get(..used.saturating_sub(2)).unwrap_or_default();
                    // httparse lets any byte through an extension; a bare LF
                    // or another control byte there could end the line for
                    // a more lenient reader, which would frame it otherwise.
                    if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                        return Poll::Ready(Err(ExchangeError::Chunk(
                            "a control byte in a size line",
                        )));
                    }
                    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                    *extensions += line.len() - digits;
                    if *extensions > MAX_EXTENSIONS {
                        return Poll::Ready(Err(ExchangeError::Chunk("too many chunk extensions")));
                    }
                    conn.buf.advance(used);
                    *state = if size == 0 {
                        Chunk::Trailers(TrailerGate::default())
                    } else {
                        Chunk::Data(size)
                    };
                    Poll::Ready(Ok(None))
                }
                Ok(httparse::Status::Partial) if conn.buf.len() > MAX_CHUNK_LINE => {
                    Poll::Ready(Err(ExchangeError::Chunk("a size line too long")))
                }
                Ok(httparse::Status::Partial) => fill_or_cut(conn, cx),
                Err(_) => Poll::Ready(Err(ExchangeError::Chunk("an invalid size line"))),
            }
        }
        Chunk::Data(rest) => {
            if conn.buf.is_empty() {
                return fill_or_cut(conn, cx);
            }
            let data = take_data(conn, rest);
            if *rest == 0 {
                *state = Chunk::DataEnd;
            }
            Poll::Ready(Ok(Some(Frame::data(data))))
        }
        Chunk::DataEnd => match conn.buf.get(..2) {
            Some(b"\r\n") => {
                conn.buf.advance(2);
                *state = Chunk::Size;
                Poll::Ready(Ok(None))
            }
            Some(_) => Poll::Ready(Err(ExchangeError::Chunk("no CRLF after a chunk"))),
            None if conn.buf.first().is_some_and(|&b| b != b'\r') => {
                Poll::Ready(Err(ExchangeError::Chunk("no CRLF after a chunk")))
            }
            None => fill_or_cut(conn, cx),
        },
        Chunk::Trailers(gate) => trailers_step(conn, gate, cx),
    }
}

/// The trailer section after the last chunk: a trailers frame (empty when
/// the section was) once it was all read. Parsed at once, then again only
/// once it can be complete ([`TrailerGate`]), as answer heads are.
fn trailers_step(
    conn: &mut Conn,
    gate: &mut TrailerGate,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Frame<Bytes>>, ExchangeError>> {
    if !gate.ready(&conn.buf) {
        if conn.buf.len() > MAX_TRAILERS {
            return Poll::Ready(Err(ExchangeError::Chunk("a trailer section too long")));
        }
        return fill_or_cut(conn, cx);
    }
    let mut slots = [httparse::EMPTY_HEADER; 32];
    match httparse::parse_headers(&conn.buf, &mut slots) {
        Ok(httparse::Status::Complete((used, _))) if used > MAX_TRAILERS => {
            Poll::Ready(Err(ExchangeError::Chunk("a trailer section too long")))
        }
        Ok(httparse::Status::Complete((used, fields))) => {
            // httparse ends lines at a bare LF too; a stricter reader would not.
            let section = conn.buf.get(..used).unwrap_or_default();
            let bare_lf = section
                .iter()
                .enumerate()
                .any(|(i, &b)| b == b'\n' && (i == 0 || section.get(i - 1) != Some(&b'\r')));
            if bare_lf {
                return Poll::Ready(Err(ExchangeError::Chunk(
                    "a bare LF in the trailer section",
                )));
            }
            let mut trailers = HeaderMap::new();
            for f in fields.iter() {
                let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(f.name.as_bytes()),
                    HeaderValue::from_bytes(f.value),
                ) else {
                    return Poll::Ready(Err(ExchangeError::Chunk("an invalid trailer field")));
                };
                trailers.append(name, value);
            }
            conn.buf.advance(used);
            Poll::Ready(Ok(Some(Frame::trailers(trailers))))
        }
        Ok(httparse::Status::Partial) if conn.buf.len() > MAX_TRAILERS => {
            Poll::Ready(Err(ExchangeError::Chunk("a trailer section too long")))
        }
        Ok(httparse::Status::Partial) => {
            gate.partial(conn.buf.len());
            fill_or_cut(conn, cx)
        }
        Err(_) => Poll::Ready(Err(ExchangeError::Chunk("an invalid trailer section"))),
    }
}

/// When a trailer section is parsed: at once, then, if it was not all
/// there, again only once it can be complete (it starts with its empty
/// line, or an empty line follows a line feed). Parsing it from the start
/// at every read would cost an upstream that drips it the square of its
/// size; each byte is looked at here about once.
#[derive(Debug, Default)]
struct TrailerGate {
    /// How much of the buffer was looked at; 0 before the first parse.
    seen: usize,
}

impl TrailerGate {
    /// Whether the section in `buf` is worth parsing now.
    fn ready(&mut self, buf: &[u8]) -> bool {
        if buf.is_empty() {
            return false;
        }
        if self.seen == 0 {
            return true;
        }
        // The empty line may have begun in the two bytes before the new ones.
        let from = self.seen.saturating_sub(2);
        let ready = buf.starts_with(b"\r\n")
            || buf.starts_with(b"\n")
            || empty_line_in(buf.get(from..).unwrap_or_default());
        self.seen = buf.len();
        ready
    }

    /// A parse of a buffer of `len` bytes found the section not all there.
    fn partial(&mut self, len: usize) {
        self.seen = len.max(1);
    }
}

/// Reads more; the connection's end inside a body is an error.
fn fill_or_cut<T>(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<Option<T>, ExchangeError>> {
    match ready!(poll_fill(conn, cx)) {
        Ok(0) => Poll::Ready(Err(ExchangeError::Cut)),
        Ok(_) => Poll::Ready(Ok(None)),
        Err(e) => Poll::Ready(Err(ExchangeError::Read(e))),
    }
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = loop {
            let step = match &mut this.framing {
                Framing::Ended => return Poll::Ready(None),
                Framing::Length(rest) => {
                    if conn.buf.is_empty() {
                        fill_or_cut(conn, cx)
                    } else {
                        let data = take_data(conn, rest);
                        if *rest == 0 {
                            this.framing = Framing::Ended;
                        }
                        Poll::Ready(Ok(Some(Frame::data(data))))
                    }
                }
                Framing::UntilClose => {
                    if conn.buf.is_empty() {
                        match ready!(poll_fill(conn, cx)) {
                            Ok(0) => {
                                this.framing = Framing::Ended;
                                return Poll::Ready(None);
                            }
                            Ok(_) => Poll::Ready(Ok(None)),
                            Err(e) => Poll::Ready(Err(ExchangeError::Read(e))),
                        }
                    } else {
                        let all = conn.buf.split().freeze();
                        Poll::Ready(Ok(Some(Frame::data(all))))
                    }
                }
                Framing::Chunked(state, extensions) => {
                    let trailers = matches!(state, Chunk::Trailers(_));
                    let step = chunk_step(conn, state, extensions, cx);
                    if trailers {
                        if let Poll::Ready(Ok(Some(_))) = &step {
                            this.framing = Framing::Ended;
                        }
                    }
                    step
                }
            };
            match step {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(None)) => continue,
                Poll::Ready(Ok(Some(frame))) => break Ok(frame),
                Poll::Ready(Err(e)) => break Err(e),
            }
        };
        match polled {
            // No trailer fields: the body simply ends.
            Ok(frame) if frame.trailers_ref().is_some_and(HeaderMap::is_empty) => Poll::Ready(None),
            Ok(frame) => Poll::Ready(Some(Ok(frame))),
            Err(e) => {
                // The rest of this answer cannot be found: never reused.
                this.conn = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Ended)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(rest) => SizeHint::with_exact(rest),
            Framing::Ended => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use std::net::SocketAddr;
    use std::time::Duration;

    /// An upstream that, on one connection, reads a request head and writes
    /// the next answer, piece by piece with a pause between pieces, for each
    /// answer in turn; then closes the connection. Its handle returns the
    /// request heads it read.
    async fn upstream(
        answers: Vec<Vec<&'static [u8]>>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut heads = Vec::new();
            for pieces in answers {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if s.read(&mut byte).await.unwrap() == 0 {
                        return heads;
                    }
                    head.push(byte[0]);
                }
                heads.push(String::from_utf8(head).unwrap());
                for piece in pieces {
                    s.write_all(piece).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            heads
        });
        (addr, task)
    }

    async fn conn(addr: SocketAddr) -> Conn {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Conn::new(Stream::Plain(tcp))
    }

    fn host() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, HeaderValue::from_static("app.example"));
        h
    }

    async fn get(conn: Conn, method: Method) -> Result<http::Response<AnswerBody>, Failed> {
        conn.exchange(&method, "/p?q=1", &mut host(), &Beside::default())
            .await
    }

    #[tokio::test]
    async fn the_forwarding_and_identity_fields_follow_the_request_s_and_the_answer_holds_the_upstream_s_alone(
    ) {
        let (addr, up) = upstream(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-From-Upstream: 1\r\n\r\nok",
        ]])
        .await;
        let mut headers = host();
        headers.insert("x-from-client", HeaderValue::from_static("secret"));
        let identity = [(
            HeaderName::from_static("x-forwarded-user"),
            HeaderValue::from_static("ada"),
        )];
        let forwarding = [(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("https"),
        )];
        let beside = Beside {
            forwarding: &forwarding,
            identity: &identity,
        };
        let response = conn(addr)
            .await
            .exchange(&Method::GET, "/", &mut headers, &beside)
            .await
            .unwrap();
        // The map the request went out with now holds the answer's fields, and only those.
        let names: Vec<&str> = response.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-length", "x-from-upstream"]);
        assert!(headers.is_empty());
        drop(response);
        let heads = up.await.unwrap();
        assert_eq!(
            heads[0],
            "GET / HTTP/1.1\r\nhost: app.example\r\nx-from-client: secret\r\nx-forwarded-proto: https\r\nx-forwarded-user: ada\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_chunked_answer_in_pieces_is_read_whole_with_its_trailers_and_its_connection_reused()
    {
        let (addr, up) = upstream(vec![
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5;ext=\"a b\"\r\nhel",
                b"lo\r",
                b"\n0",
                b"6\r\n, worl\r\n",
                b"0\r\nx-sum: 11\r\n",
                b"\r\n",
            ],
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
        ])
        .await;
        let response = get(conn(addr).await, Method::GET).await.unwrap();
        let mut body = response.into_body();
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            if let Some(d) = frame.data_ref() {
                data.extend_from_slice(d);
            } else {
                trailers = frame.into_trailers().ok();
            }
        }
        assert_eq!(data, b"hello, worl");
        assert_eq!(trailers.unwrap()["x-sum"], "11");
        let again = body.take_reusable().expect("the connection is reusable");
        let second = get(again, Method::GET).await.unwrap();
        let bytes = second.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"ok");
        let heads = up.await.unwrap();
        assert_eq!(heads.len(), 2);
        assert_eq!(heads[0], "GET /p?q=1 HTTP/1.1\r\nhost: app.example\r\n\r\n");
    }

    /// Feeds `bytes` one at a time to a gate and the head parser, as the
    /// exchange does; returns the parsed status and how many parses it took.
    fn drip(bytes: &[u8]) -> (Option<u16>, usize) {
        let (mut buf, mut gate, mut fields, mut parses) =
            (BytesMut::new(), HeadGate::default(), Vec::new(), 0);
        for byte in bytes {
            buf.extend_from_slice(&[*byte]);
            if gate.ready(&mut buf) {
                parses += 1;
                match parse_head(&buf, &mut fields).unwrap() {
                    Some(head) => return (Some(head.status), parses),
                    None => gate.partial(buf.len()),
                }
            }
        }
        (None, parses)
    }

    #[test]
    fn a_head_dripped_a_byte_at_a_time_is_parsed_twice_at_most() {
        let mut head = b"HTTP/1.1 203 Fine\r\nX-Pad: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 20_000));
        head.extend_from_slice(b"\r\nX-Other: 1\nContent-Length: 0\r\n\r\n");
        assert_eq!(drip(&head), (Some(203), 2));
        // Empty lines before the status line (httparse skips them) do not
        // each make the head worth parsing again.
        let mut late = b"\r\n\n".repeat(5_000);
        late.extend_from_slice(&head);
        assert_eq!(drip(&late), (Some(203), 2));
        // A head ending in bare line feeds is found too.
        assert_eq!(drip(b"HTTP/1.1 204 No Content\nX: 1\n\n"), (Some(204), 2));
        assert_eq!(drip(b"HTTP/1.1 200 OK\r\nX: 1\r\n"), (None, 1));
    }

    /// Feeds a trailer section one byte at a time to the gate and the
    /// parser, as `trailers_step` does; returns how many fields it held
    /// once complete and how many parses it took.
    fn drip_trailers(bytes: &[u8]) -> (Option<usize>, usize) {
        let (mut buf, mut gate, mut parses) = (Vec::new(), TrailerGate::default(), 0);
        for byte in bytes {
            buf.push(*byte);
            if gate.ready(&buf) {
                parses += 1;
                let mut slots = [httparse::EMPTY_HEADER; 32];
                match httparse::parse_headers(&buf, &mut slots).unwrap() {
                    httparse::Status::Complete((_, fields)) => return (Some(fields.len()), parses),
                    httparse::Status::Partial => gate.partial(buf.len()),
                }
            }
        }
        (None, parses)
    }

    #[test]
    fn a_trailer_section_dripped_a_byte_at_a_time_is_parsed_twice_at_most() {
        let mut section = b"X-Pad: ".to_vec();
        section.extend(std::iter::repeat_n(b'a', 15_000));
        section.extend_from_slice(b"\r\nX-Sum: 11\r\n\r\n");
        assert_eq!(drip_trailers(&section), (Some(2), 2));
        assert_eq!(drip_trailers(b"\r\n"), (Some(0), 2));
        assert_eq!(drip_trailers(b"\n"), (Some(0), 1));
        assert_eq!(drip_trailers(b"X: 1\n\n"), (Some(1), 2));
        assert_eq!(drip_trailers(b"X: 1\r\nY: 2\r\n"), (None, 1));
    }

    #[tokio::test]
    async fn trailers_dripped_a_byte_at_a_time_reach_the_client_whole() {
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 11\r\nX-Two: 2\r\n\r\n";
        let head_end = 47;
        let mut pieces: Vec<&'static [u8]> = vec![&ANSWER[..head_end]];
        pieces.extend(ANSWER[head_end..].chunks(1));
        let (addr, _up) = upstream(vec![pieces]).await;
        let response = get(conn(addr).await, Method::GET).await.unwrap();
        let collected =
            tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
                .await
                .expect("the trailer section was never found complete")
                .unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(trailers["x-sum"], "11");
        assert_eq!(trailers["x-two"], "2");
        assert_eq!(&collected.to_bytes()[..], b"ok");
    }

    #[tokio::test]
    async fn an_answer_head_dripped_in_pieces_after_empty_lines_and_an_informational_one_is_read() {
        let (addr, _up) = upstream(vec![vec![
            b"\r\n",
            b"HTTP/1.1 100 Continue\r",
            b"\n\r\nHTTP/1.1 2",
            b"00 OK\r\nContent-Le",
            b"ngth: 2\r\n\r",
            b"\nok",
        ]])
        .await;
        let response = get(conn(addr).await, Method::GET).await.unwrap();
        assert_eq!(response.status(), 200);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"ok");
    }

    #[tokio::test]
    async fn an_answer_with_both_content_length_and_transfer_encoding_is_refused() {
        let (addr, _up) = upstream(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]])
        .await;
        let failed = get(conn(addr).await, Method::GET).await.unwrap_err();
        assert!(
            matches!(failed.error, ExchangeError::AmbiguousLength(_)),
            "{:?}",
            failed.error
        );
        assert!(!failed.unanswered);
    }

    #[tokio::test]
    async fn one_length_repeated_frames_the_answer() {
        let (addr, _up) = upstream(vec![vec![
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\nContent-Length: 3\r\n\r\nabcdef"[..],
        ]])
        .await;
        let response = get(conn(addr).await, Method::GET).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"abc");
    }

    #[tokio::test]
    async fn lengths_that_disagree_or_are_not_numbers_are_refused() {
        for (head, ambiguous) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"[..],
                true,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc", true),
            // The same number in other digits is another value.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 03\r\n\r\nabc",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000000000\r\n\r\nabc",
                true,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc", true),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
                false,
            ),
            // Any coding but chunked alone (it would reach the client undecoded).
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nall of it",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                false,
            ),
        ] {
            let (addr, _up) = upstream(vec![vec![head]]).await;
            let failed = get(conn(addr).await, Method::GET).await.unwrap_err();
            let what = format!("{}: {:?}", String::from_utf8_lossy(head), failed.error);
            if ambiguous {
                assert!(
                    matches!(failed.error, ExchangeError::AmbiguousLength(_)),
                    "{what}"
                );
            } else {
                assert!(matches!(failed.error, ExchangeError::Framing(_)), "{what}");
            }
            // Only a length that reads two ways is named so on the access line.
            let named = super::super::pool::Error::Exchange(failed.error).is_ambiguous_framing();
            assert_eq!(named, ambiguous, "{what}");
        }
    }

    #[tokio::test]
    async fn a_broken_chunked_body_is_an_error_and_its_connection_is_never_reused() {
        for broken in [
            &b"zz\r\nab\r\n0\r\n\r\n"[..],
            b"\r\n",
            b";x\r\n",
            b"2\r\nabXY0\r\n\r\n",
            b"2\nab\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5;a\nHTTP/1.1 200 OK\r\nhello\r\n0\r\n\r\n",
            b"1;\x01\r\na\r\n0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nx-a: 1\nx-b: 2\r\n\r\n",
            many_extensions(),
            long_extension(),
        ] {
            let (addr, _up) = upstream(vec![vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                broken,
            ]])
            .await;
            let response = get(conn(addr).await, Method::GET).await.unwrap();
            let mut body = response.into_body();
            let mut failed = false;
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    failed = true;
                    break;
                }
            }
            assert!(
                failed,
                "{} was read as a body",
                String::from_utf8_lossy(broken)
            );
            assert!(body.take_reusable().is_none());
        }
    }

    /// Chunks of one byte, each with an extension of 1 KiB: past the body's
    /// extension budget after 16.
    fn many_extensions() -> &'static [u8] {
        let one = [&b"1;x="[..], &[b'e'; 1024][..], b"\r\na\r\n"].concat();
        let all: Vec<u8> = std::iter::repeat_n(one, 20)
            .flatten()
            .chain(*b"0\r\n\r\n")
            .collect();
        Box::leak(all.into_boxed_slice())
    }

    #[tokio::test]
    async fn a_reason_phrase_of_its_own_is_kept_and_a_standard_one_costs_nothing() {
        let (addr, _up) = upstream(vec![vec![
            b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n",
        ]])
        .await;
        let response = get(conn(addr).await, Method::GET).await.unwrap();
        let phrase = response.extensions().get::<hyper::ext::ReasonPhrase>();
        assert_eq!(
            phrase.map(hyper::ext::ReasonPhrase::as_bytes),
            Some(&b"Fine Thanks"[..])
        );

        let (addr, _up) = upstream(vec![vec![
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        ]])
        .await;
        let response = get(conn(addr).await, Method::GET).await.unwrap();
        assert!(response.extensions().is_empty());
    }

    /// One size line of 5 KiB, past the limit of one line, under the
    /// budget of a body.
    fn long_extension() -> &'static [u8] {
        let line = [&b"1;x="[..], &[b'e'; 5 * 1024][..], b"\r\na\r\n0\r\n\r\n"].concat();
        Box::leak(line.into_boxed_slice())
    }

    #[tokio::test]
    async fn an_answer_cut_short_is_an_error_and_its_connection_is_never_reused() {
        let (addr, _up) = upstream(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        ]])
        .await;
        let response = get(conn(addr).await, Method::GET).await.unwrap();
        let mut body = response.into_body();
        let mut seen = Vec::new();
        let mut error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => seen.extend_from_slice(f.data_ref().unwrap()),
                Err(e) => error = Some(e),
            }
        }
        assert_eq!(seen, b"hello");
        assert!(matches!(error, Some(ExchangeError::Cut)), "{error:?}");
        assert!(body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn bytes_after_an_answer_keep_its_connection_from_reuse() {
        let (addr, _up) = upstream(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
        ]])
        .await;
        let response = get(conn(addr).await, Method::GET).await.unwrap();
        let mut body = response.into_body();
        assert_eq!(&(&mut body).collect().await.unwrap().to_bytes()[..], b"ok");
        assert!(body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn informational_answers_are_skipped_and_an_unasked_switch_refused() {
        let (addr, _up) = upstream(vec![vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nx",
        ]])
        .await;
        let response = get(conn(addr).await, Method::GET).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(!response.headers().contains_key("link"));

        let (addr, _up) = upstream(vec![vec![
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        ]])
        .await;
        let failed = get(conn(addr).await, Method::GET).await.unwrap_err();
        assert!(matches!(failed.error, ExchangeError::UnaskedSwitch));
    }

    fn leak(bytes: Vec<u8>) -> &'static [u8] {
        Box::leak(bytes.into_boxed_slice())
    }

    #[tokio::test]
    async fn informational_answers_past_sixteen_are_refused() {
        for (count, refused) in [(MAX_INFORMATIONAL, false), (MAX_INFORMATIONAL + 1, true)] {
            let mut answer = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(count);
            answer.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            let (addr, _up) = upstream(vec![vec![leak(answer)]]).await;
            let result = get(conn(addr).await, Method::GET).await;
            match result {
                Ok(response) => {
                    assert!(!refused, "{count} informational answers passed");
                    assert_eq!(response.status(), 200);
                }
                Err(failed) => {
                    assert!(refused, "{count}: {:?}", failed.error);
                    assert!(matches!(failed.error, ExchangeError::Framing(_)));
                }
            }
        }
    }

    #[tokio::test]
    async fn an_idle_connection_keeps_no_buffer_a_large_answer_grew() {
        let mut large = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        large.extend(std::iter::repeat_n(b'a', 200_000));
        large.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
        let (addr, _up) = upstream(vec![
            vec![leak(large)],
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
        ])
        .await;
        let (parts, mut body) = get(conn(addr).await, Method::GET)
            .await
            .unwrap()
            .into_parts();
        let bytes = (&mut body).collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"ok");
        let again = body.take_reusable().expect("the connection is reusable");
        // The field's value shares the head's allocation, alive while
        // `parts` is: the idle buffer must not point into it. (A view of
        // the same allocation would start right after the head and body.)
        let pad = parts.headers["x-pad"].as_bytes().as_ptr() as usize;
        let idle = again.buf.as_ptr() as usize;
        assert!(
            !(pad..pad + 200_100).contains(&idle),
            "the idle connection's buffer lies in the large head's allocation"
        );
        // And it still serves the next answer.
        let second = get(again, Method::GET).await.unwrap();
        let bytes = second.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"ok");
    }

    #[tokio::test]
    async fn head_204_and_304_answers_have_no_body_and_reuse_their_connection_unless_they_announce_one(
    ) {
        for (method, head, reused) in [
            (
                Method::HEAD,
                &b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"[..],
                false,
            ),
            (
                Method::GET,
                b"HTTP/1.1 204 No Content\r\nContent-Length: 50\r\n\r\n",
                false,
            ),
            (
                Method::GET,
                b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
            ),
            // A HEAD's connection is never reused: a body sent later would
            // be the next request's answer.
            (
                Method::HEAD,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
            (Method::HEAD, b"HTTP/1.1 200 OK\r\n\r\n", false),
            (Method::GET, b"HTTP/1.1 204 No Content\r\n\r\n", true),
            (
                Method::GET,
                b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n",
                true,
            ),
        ] {
            let (addr, _up) = upstream(vec![vec![head]]).await;
            let response = get(conn(addr).await, method).await.unwrap();
            let mut body = response.into_body();
            assert!(http_body::Body::is_end_stream(&body));
            assert!((&mut body).collect().await.unwrap().to_bytes().is_empty());
            assert_eq!(
                body.take_reusable().is_some(),
                reused,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[tokio::test]
    async fn an_answer_without_a_length_runs_to_the_close_and_its_connection_is_not_reused() {
        for head in [
            &b"HTTP/1.1 200 OK\r\n\r\nall of it"[..],
            b"HTTP/1.0 200 OK\r\n\r\nall of it",
        ] {
            let (addr, _up) = upstream(vec![vec![head]]).await;
            let response = get(conn(addr).await, Method::GET).await.unwrap();
            let mut body = response.into_body();
            let bytes = (&mut body).collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], b"all of it");
            assert!(body.take_reusable().is_none());
        }
    }

    #[tokio::test]
    async fn an_answer_asking_to_close_or_from_http_1_0_leaves_its_connection_unreused() {
        for head in [
            &b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok"[..],
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ] {
            let (addr, _up) = upstream(vec![vec![head]]).await;
            let response = get(conn(addr).await, Method::GET).await.unwrap();
            let mut body = response.into_body();
            assert_eq!(&(&mut body).collect().await.unwrap().to_bytes()[..], b"ok");
            assert!(body.take_reusable().is_none());
        }
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_not_quiet() {
        let (addr, up) = upstream(vec![vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]])
        .await;
        let response = get(conn(addr).await, Method::GET).await.unwrap();
        let mut body = response.into_body();
        (&mut body).collect().await.unwrap();
        let mut idle = body.take_reusable().unwrap();
        assert!(idle.is_quiet(), "an open idle connection counts as closed");
        // The upstream closes it after its one answer.
        up.await.unwrap();
        let mut quiet = true;
        for _ in 0..100 {
            // The reactor notices the close on its next turn.
            tokio::time::sleep(Duration::from_millis(10)).await;
            quiet = idle.is_quiet();
            if !quiet {
                break;
            }
        }
        assert!(!quiet, "a closed idle connection still counts as open");
        let failed = get(idle, Method::GET).await.unwrap_err();
        assert!(failed.unanswered, "{:?}", failed.error);
    }

    #[tokio::test]
    async fn a_bodiless_post_says_content_length_0_and_the_clients_framing_never_passes() {
        let (addr, up) =
            upstream(vec![vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]]).await;
        let mut headers = host();
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("x-a", HeaderValue::from_static("1"));
        let response = conn(addr)
            .await
            .exchange(&Method::POST, "/form", &mut headers, &Beside::default())
            .await
            .unwrap();
        assert!(http_body::Body::is_end_stream(response.body()));
        drop(response);
        let heads = up.await.unwrap();
        assert_eq!(
            heads[0],
            "POST /form HTTP/1.1\r\nhost: app.example\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn an_answer_head_over_the_limit_is_refused() {
        let big: &'static [u8] = Box::leak(
            [
                &b"HTTP/1.1 200 OK\r\nx-big: "[..],
                &vec![b'a'; MAX_HEAD + 10][..],
                b"\r\n\r\n",
            ]
            .concat()
            .into_boxed_slice(),
        );
        let (addr, _up) = upstream(vec![vec![big]]).await;
        let failed = get(conn(addr).await, Method::GET).await.unwrap_err();
        assert!(
            matches!(failed.error, ExchangeError::HeadTooLarge),
            "{:?}",
            failed.error
        );
    }
}
