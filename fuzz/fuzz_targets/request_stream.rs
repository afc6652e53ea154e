//! The head tap held to hyper itself: a client's byte stream (pipelined
//! requests with bodies, smuggling probes), cut into reads of a size the input
//! chooses, is served by hyper with the gateway's own HTTP/1 settings over a
//! tapped in-memory connection, as `gateway::server` serves a client. For
//! every request hyper hands to the service, the tap must hold a head, and it
//! must be that request's own: the same method, target, version and header
//! fields as hyper parsed (after hyper's repairs), and, when the stream is read
//! a byte at a time, exactly the bytes that end where hyper's parse of it
//! ended (which also covers heads hyper repairs and heads the raw-head check
//! refuses). A refused head is answered, as the gateway does, with 400 and a
//! close, after which hyper must serve no more. A tap that framed a body
//! otherwise than hyper would give a request another's head: its framing
//! checks would read the wrong bytes.
#![no_main]

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use libfuzzer_sys::fuzz_target;
use portcullis::gateway::head_tap::{self, RawHead};
use portcullis::gateway::server::Builders;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    // First byte: whether the service answers without reading the request's
    // body (0x80), as the gateway does when an upstream answers early; reads
    // of one byte (0x40), else of at most the low six bits (at least 1).
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let read_body = control & 0x80 == 0;
    let read_size = if control & 0x40 != 0 {
        1
    } else {
        usize::from(control & 0x3f).max(1)
    };
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        let rt = slot.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime")
        });
        rt.block_on(serve(stream.to_vec(), read_size, read_body));
    });
});

/// The server's end of the pipe, counting the bytes read from it.
struct Counted {
    io: tokio::io::DuplexStream,
    read: Arc<AtomicUsize>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        self.read
            .fetch_add(buf.filled().len() - before, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn serve(stream: Vec<u8>, read_size: usize, read_body: bool) {
    // A pipe that holds `read_size` bytes: each of hyper's reads gets at most that many.
    let (client, server) = tokio::io::duplex(read_size);
    let read = Arc::new(AtomicUsize::new(0));
    let (io, heads) = head_tap::tap(Counted {
        io: server,
        read: Arc::clone(&read),
    });
    let sent = Rc::new(stream.clone());
    let (mut answers, mut requests) = tokio::io::split(client);
    let send = async move {
        let _ = requests.write_all(&stream).await;
        let _ = requests.shutdown().await;
    };
    let drain = async move {
        let mut sink = [0u8; 512];
        while matches!(answers.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let refused = Rc::new(Cell::new(false));
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        assert!(
            !refused.get(),
            "hyper served a request after an answer that closes the connection"
        );
        let raw = heads
            .pop()
            .expect("hyper served a request the tap has no head for");
        if read_size == 1 && !raw.too_large() {
            // hyper parsed the head as its last byte came in, and called us.
            let parsed_to = read.load(Ordering::Relaxed);
            assert!(
                sent.get(..parsed_to)
                    .is_some_and(|before| before.ends_with(raw.bytes())),
                "the tap's head is not the bytes hyper parsed, which end at {parsed_to}: {:?}",
                String::from_utf8_lossy(raw.bytes())
            );
        }
        let refuse = raw.check().is_err();
        if refuse {
            refused.set(true);
        } else {
            same_request(&raw, &req);
        }
        async move {
            if read_body && !refuse {
                let _ = req.into_body().collect().await;
            }
            let mut answer = hyper::Response::new(Empty::<Bytes>::new());
            if refuse {
                *answer.status_mut() = hyper::StatusCode::BAD_REQUEST;
                answer.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(answer)
        }
    });
    let builders = Builders::new();
    let conn = builders
        .http1()
        .serve_connection(io, service)
        .with_upgrades();
    let _ = tokio::join!(conn, send, drain);
}

/// Panics unless `raw` is the head of `req`, as hyper parsed it.
fn same_request(raw: &RawHead, req: &hyper::Request<Incoming>) {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut fields);
    let status = parsed.parse(raw.bytes());
    assert!(
        matches!(status, Ok(httparse::Status::Complete(n)) if n == raw.bytes().len()),
        "the tap's head for a request hyper served is not one head: {status:?}"
    );
    assert_eq!(
        parsed.method.map(str::as_bytes),
        Some(req.method().as_str().as_bytes()),
        "the tap's head is another request's (method)"
    );
    assert_eq!(
        raw.http10(),
        req.version() == hyper::Version::HTTP_10,
        "the tap's head is another request's (version)"
    );
    let target = parsed.path.unwrap_or_default();
    if target.starts_with('/') {
        // http's URI drops a fragment; everything else stays as sent.
        let sent = target.split('#').next().unwrap_or_default();
        assert_eq!(
            req.uri().path_and_query().map(|p| p.as_str()),
            Some(sent),
            "the tap's head is another request's (target)"
        );
    }
    // hyper keeps one of identical Content-Length lines (they collapse, PRX-09).
    let lengths = parsed
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("content-length"))
        .count();
    assert_eq!(
        parsed.headers.len() - lengths.saturating_sub(1),
        req.headers().len(),
        "the tap's head is another request's (number of fields)"
    );
    for field in parsed.headers.iter() {
        assert!(
            req.headers()
                .get_all(field.name)
                .iter()
                .any(|v| v.as_bytes() == field.value),
            "the tap's head is another request's (field {})",
            field.name
        );
    }
}
