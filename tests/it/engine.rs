//! The data-path engine end to end (issue 11): HTTP/2 over TLS by ALPN to an
//! HTTP/1.1 upstream, its stream bound and flood protection, an `https://`
//! upstream trusted through a test CA (and refused without it), WebSockets
//! (public, over TLS, over a session), upstream connection reuse, and the
//! connection limits of DESIGN "Connection limits" (PRX-19).
//!
//! TLS uses the fixtures `test-ca.pem` and the `localhost` leaf it signed.
//! Timing bounds are generous: the machine may be loaded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    base_config, client, config_file, raw_exchange, websocket_echo, Gateway, Upstream,
};

pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(name)
}

/// The test CA, PEM.
pub(crate) fn test_ca() -> Vec<u8> {
    std::fs::read(fixture("test-ca.pem")).unwrap()
}

/// A TLS acceptor serving the `localhost` leaf signed by the test CA, HTTP/1.1 only.
pub(crate) fn localhost_tls() -> tokio_rustls::TlsAcceptor {
    localhost_tls_offering(&[b"http/1.1"])
}

/// The `localhost` leaf of the test CA, offering these ALPN protocols.
pub(crate) fn localhost_tls_offering(alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(fixture("localhost-cert.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("localhost-key.pem")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A client that trusts only the test CA and finds `localhost` at `addr`;
/// it offers h2 and http/1.1 by ALPN unless `http1_only`.
fn tls_client(addr: SocketAddr, http1_only: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&test_ca()).unwrap())
        .resolve("localhost", addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    let b = if http1_only { b.http1_only() } else { b };
    b.build().unwrap()
}

/// `base_config()` with `server_extra` added to `[server]`.
fn config_with_server(server_extra: &str) -> String {
    base_config().replace("[session]", &format!("{server_extra}\n\n[session]"))
}

/// A gateway with `server_extra` in `[server]` and one app, public under
/// `/`, in front of `up`.
fn open_gateway(server_extra: &str, up: &Upstream) -> Gateway {
    Gateway::start_full(&format!(
        "{}\n[[app]]\nname = \"open\"\nupstream = \"{}\"\npublic_paths = [\"/\"]\n",
        config_with_server(server_extra),
        up.url()
    ))
}

/// [`open_gateway`] in front of an upstream at `up` (a raw one, say).
fn open_gateway_at(up: SocketAddr, server_extra: &str) -> Gateway {
    Gateway::start_full(&format!(
        "{}\n[[app]]\nname = \"open\"\nupstream = \"http://{up}\"\npublic_paths = [\"/\"]\n",
        config_with_server(server_extra)
    ))
}

/// Starts a POST to `path` announcing 100 000 bytes of body and sending ten:
/// the client then stays silent. Reads time out after 20 s.
fn silent_upload(gw: &Gateway, path: &str) -> TcpStream {
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(b"ten bytes.").unwrap();
    conn
}

/// What arrives on `conn` until the gateway closes (or resets) it, and
/// whether it did so before a read timed out.
fn read_until_closed(conn: &mut TcpStream) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match conn.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                use std::io::ErrorKind::{TimedOut, WouldBlock};
                break !matches!(e.kind(), TimedOut | WouldBlock);
            }
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// Answers `200` chunked with `chunks` one-byte chunks (`x`), one every
/// `every`, then the last chunk: a long answer that keeps streaming.
fn stream_chunks(s: &mut TcpStream, chunks: usize, every: Duration) {
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..chunks {
        std::thread::sleep(every);
        let _ = s.write_all(b"1\r\nx\r\n");
    }
    let _ = s.write_all(b"0\r\n\r\n");
}

/// Reads from `conn` into `got` until `done` holds for what arrived;
/// panics with what came if the connection ends or a read fails first.
fn read_until(conn: &mut TcpStream, got: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    let mut buf = [0u8; 1024];
    while !done(got) {
        match conn.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!("{other:?} after {}", String::from_utf8_lossy(got)),
        }
    }
}

/// A gateway serving TLS with the `localhost` leaf; app `h2` on host
/// `localhost`, public under `/public/`, in front of `upstream` (a URL).
fn tls_gateway(upstream: &str) -> Gateway {
    tls_gateway_with(upstream, "")
}

/// [`tls_gateway`] with `server_extra` added to `[server]`.
fn tls_gateway_with(upstream: &str, server_extra: &str) -> Gateway {
    Gateway::start_full(&format!(
        "{}\n[[app]]\nname = \"h2\"\nhost = \"localhost\"\nupstream = \"{}\"\npublic_paths = [\"/public/\"]\n",
        config_with_server(&format!(
            "tls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n{server_extra}",
            fixture("localhost-cert.pem").display(),
            fixture("localhost-key.pem").display()
        )),
        upstream
    ))
}

// ---------------------------------------------------------------- HTTP/2

#[tokio::test(flavor = "multi_thread")]
async fn http2_over_tls_is_negotiated_by_alpn_and_proxied_to_an_http1_upstream() {
    let up = Upstream::start("h2").await;
    let gw = tls_gateway(&up.url());
    let port = gw.addr.port();
    let origin = format!("https://localhost:{port}");
    let c = tls_client(gw.addr, false);

    // A public path: the app is found by `:authority` (an h2 request has no
    // Host header), spoofed identity headers never reach the upstream.
    let r = c
        .get(format!("{origin}/public/x?q=1&r=%2F"))
        .header("x-forwarded-user", "admin")
        .header("x-forwarded-email", "boss@example.com")
        .header("x-auth-request-user", "admin")
        .header("x-portcullis-assertion", "forged")
        .header("x-kept", "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "h2");
    assert_eq!(r.text().await.unwrap(), "hello from h2");
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "GET");
    assert_eq!(s.uri, "/public/x?q=1&r=%2F");
    let hosts: Vec<_> = s.headers.iter().filter(|(k, _)| k == "host").collect();
    assert_eq!(hosts.len(), 1, "{:?}", s.headers);
    assert_eq!(s.header("host"), Some(format!("localhost:{port}").as_str()));
    assert_eq!(s.header("x-kept"), Some("yes"));
    for (name, _) in &s.headers {
        assert!(
            !(name.starts_with("x-forwarded-user")
                || name.starts_with("x-forwarded-email")
                || name.starts_with("x-auth-request-")
                || name.starts_with("x-portcullis-")),
            "spoofed header {name} reached the upstream"
        );
    }

    // A request body travels as DATA frames and reaches the HTTP/1.1 upstream whole.
    let body = vec![b'z'; 100_000];
    let r = c
        .post(format!("{origin}/public/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].body.as_ref(), body.as_slice());

    // A protected path: an API client gets 401 over HTTP/2, nothing goes upstream.
    let r = c
        .get(format!("{origin}/private"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"portcullis\""
    );
    assert_eq!(
        up.requests().len(),
        2,
        "a protected request reached the upstream"
    );

    // The same listener still serves a client that only speaks HTTP/1.1.
    let r = tls_client(gw.addr, true)
        .get(format!("{origin}/public/h1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests().len(), 3);
}

/// A TLS connection to the gateway at `addr` that negotiated h2 by ALPN.
async fn h2_tls(addr: SocketAddr) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tls = tls_to(addr, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// A TLS connection to `localhost` at `addr`, trusting the test CA, offering
/// only `alpn`.
async fn tls_to(
    addr: SocketAddr,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_to_after(addr, alpn, Duration::ZERO).await
}

/// [`tls_to`], its handshake begun `delay` after the TCP connection opened.
async fn tls_to_after(
    addr: SocketAddr,
    alpn: &[u8],
    delay: Duration,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&test_ca()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(delay).await;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// An HTTP/2 client that grants its streams no flow-control window (and
/// answers pings, so the connection looks alive) holds its connection and
/// its slot of `max_connections` only until an answer has waited
/// `send_timeout` for it; a new request every 300 ms, each answered in full
/// (HEAD: no body), so that the connection is never idle, does not help it.
#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_that_grants_no_window_gives_its_slot_up_after_the_send_timeout() {
    let up = Upstream::start("h2").await;
    let gw = tls_gateway_with(&up.url(), "max_connections = 1\nsend_timeout = \"1s\"");
    // Its body is never read, and no window is ever granted for it.
    let (h2, driven, _held) = h2_answer_held_with_window(gw.addr, 0).await;
    let port = gw.addr.port();
    // Every 300 ms a HEAD, answered in full (no body needs a window): answers
    // that end without data are not progress of the stalled one.
    let busy = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let Ok(mut ready) = h2.clone().ready().await else {
                return;
            };
            let req = http::Request::head(format!("https://localhost:{port}/public/more"))
                .body(())
                .unwrap();
            let Ok((resp, _)) = ready.send_request(req, true) else {
                return;
            };
            if resp.await.is_err() {
                return;
            }
        }
    });
    next_client_served_and_the_stalled_one_closed(gw.addr, driven).await;
    busy.abort();
}

/// An HTTP/2 connection to `addr` whose streams get `window` bytes of
/// flow-control window (no more unless the caller releases capacity), one
/// GET answered on it (its body returned, unread), and the task driving the
/// connection (it answers pings).
async fn h2_answer_held_with_window(
    addr: SocketAddr,
    window: u32,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
    h2::RecvStream,
) {
    let tls = h2_tls(addr).await;
    let (h2, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake::<_, bytes::Bytes>(tls)
        .await
        .unwrap();
    let driven = tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let req = http::Request::get(format!("https://localhost:{}/public/s", addr.port()))
        .body(())
        .unwrap();
    let (resp, _) = h2.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    (h2, driven, resp.into_body())
}

/// With one slot held by a stalled HTTP/2 connection (`driven`): the next
/// client at `addr` is served within 8 s, and the stalled connection was
/// closed by the gateway.
async fn next_client_served_and_the_stalled_one_closed(
    addr: SocketAddr,
    driven: tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let t = Instant::now();
    let next = tls_client(addr, true)
        .get(format!("https://localhost:{}/public/next", addr.port()))
        .send()
        .await
        .expect("the next client was not served in 10 s");
    assert_eq!(next.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let ended = tokio::time::timeout(Duration::from_secs(5), driven).await;
    assert!(ended.is_ok(), "the stalled HTTP/2 connection is still open");
}

/// An HTTP/2 client that lets one byte of each answer through and no
/// more: the body is handed over whole and dropped, the rest waits in
/// HTTP/2's buffers. Once the connection has been idle for `idle_timeout`
/// and asked to close, that rest must go out within `send_timeout`, or the
/// connection is cut and its slot goes to the next client.
#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_that_lets_one_byte_through_loses_its_connection_once_idle() {
    let up = Upstream::start("h2").await;
    let gw = tls_gateway_with(
        &up.url(),
        "max_connections = 1\nidle_timeout = \"1s\"\nsend_timeout = \"1s\"",
    );
    let (_h2, driven, _held) = h2_answer_held_with_window(gw.addr, 1).await;
    next_client_served_and_the_stalled_one_closed(gw.addr, driven).await;
}

/// Over HTTP/2, one answer the client has paused (it grants that stream no
/// more window) does not end the connection while the client's other
/// answers keep moving: as with nginx, the send timeout times the
/// connection's progress, not each stream's.
#[tokio::test(flavor = "multi_thread")]
async fn an_http2_stream_paused_by_the_client_does_not_cut_its_moving_neighbours() {
    let up = big_answer_upstream();
    let gw = tls_gateway_with(&format!("http://{up}"), "send_timeout = \"3s\"");
    let (mut h2, driven) = h2_wide_window(gw.addr).await;
    let port = gw.addr.port();
    let get = |path: &str| public_get(port, path);
    // A big answer, never read: its window runs out and stays shut.
    let (paused, _) = h2.send_request(get("/big"), true).unwrap();
    let _paused = tokio::time::timeout(Duration::from_secs(10), paused)
        .await
        .unwrap()
        .unwrap();
    // Small answers, one every 300 ms for 6 s (twice the send timeout), each
    // read to its end.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(h2_read_whole(&h2, get("/small")).await, b"small");
    }
    assert!(!driven.is_finished(), "the connection was closed");
}

/// Over HTTP/2, an answer the client has paused for `send_timeout` while
/// its other answers keep moving is let go, as nginx resets such a stream:
/// its (HTTP/1.1) upstream connection is closed, the client's connection and its
/// other streams go on, and once the client opens the paused stream's
/// window again, that stream ends in a reset, never as if it were whole.
#[tokio::test(flavor = "multi_thread")]
async fn an_http2_stream_paused_by_the_client_for_the_send_timeout_lets_its_upstream_go() {
    const BIG: usize = 64 << 20;
    let (closed_tx, closed) = mpsc::channel::<()>();
    let up = raw_upstream(move |head, s| {
        if !head.starts_with(b"GET /public/big ") {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nsmall",
            );
            return;
        }
        // Chunked: with no length to check, only a reset tells the client
        // that the answer is not whole.
        let mut chunk = b"10000\r\n".to_vec();
        chunk.extend(std::iter::repeat_n(b'x', 1 << 16));
        chunk.extend_from_slice(b"\r\n");
        let mut out = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..BIG >> 16 {
            out = out.and_then(|()| s.write_all(&chunk));
        }
        if out.and_then(|()| s.write_all(b"0\r\n\r\n")).is_err() {
            let _ = closed_tx.send(());
        }
    });
    let gw = tls_gateway_with(&format!("http://{up}"), "send_timeout = \"2s\"");
    let (mut h2, driven) = h2_wide_window(gw.addr).await;
    let port = gw.addr.port();
    let get = |path: &str| public_get(port, path);
    let (paused, _) = h2.send_request(get("/big"), true).unwrap();
    let mut paused = tokio::time::timeout(Duration::from_secs(10), paused)
        .await
        .unwrap()
        .unwrap()
        .into_body();
    // Small answers, one every 300 ms for 5 s, each read to its end; the
    // paused answer's upstream connection must close meanwhile (after them,
    // with nothing moving, the whole connection would be cut).
    let paused_at = Instant::now();
    let mut let_go = None;
    for _ in 0..17 {
        if let_go.is_none() && closed.try_recv().is_ok() {
            let_go = Some(paused_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(h2_read_whole(&h2, get("/small")).await, b"small");
    }
    let let_go =
        let_go.expect("the paused answer's upstream connection is still open 5 s after it paused");
    assert!(
        let_go >= Duration::from_millis(1900),
        "let go after {let_go:?}"
    );
    assert!(!driven.is_finished(), "the connection was closed");
    // The client reads the paused answer again: what was handed over before
    // the pause comes, then the reset.
    let mut taken = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = paused.data().await {
            let chunk = chunk?;
            taken += chunk.len();
            let _ = paused.flow_control().release_capacity(chunk.len());
        }
        Ok::<(), h2::Error>(())
    })
    .await
    .expect("the paused answer neither went on nor ended");
    assert!(
        ended.is_err(),
        "the paused answer ended as if whole after {taken} bytes"
    );
    assert!(taken < BIG, "{taken}");
}

/// An HTTP/2 connection to `addr` with, as browsers give, a connection
/// window far larger than a stream's (one stream's unread data does not
/// stop the others), and the task driving it.
async fn h2_wide_window(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let (h2, connection) = h2::client::Builder::new()
        .initial_connection_window_size(16 << 20)
        .handshake::<_, bytes::Bytes>(h2_tls(addr).await)
        .await
        .unwrap();
    let driven = tokio::spawn(connection);
    (h2.ready().await.unwrap(), driven)
}

/// A GET of `/public{path}` at the gateway on `port`.
fn public_get(port: u16, path: &str) -> http::Request<()> {
    http::Request::get(format!("https://localhost:{port}/public{path}"))
        .body(())
        .unwrap()
}

/// Sends `req` on the HTTP/2 connection `h2` and reads its answer whole,
/// giving the window back as it goes; panics if the connection was cut.
async fn h2_read_whole(
    h2: &h2::client::SendRequest<bytes::Bytes>,
    req: http::Request<()>,
) -> Vec<u8> {
    let mut ready = h2.clone().ready().await.expect("the connection was cut");
    let (resp, _) = ready.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .unwrap()
        .expect("the connection was cut");
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the answer was cut");
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    got
}

/// The send timeout is not a timeout on the upstream: over HTTP/2, an
/// answer that waits longer than `send_timeout` for its upstream's next
/// bytes (a stream of events) is not cut, nor is its connection idle under
/// it past `idle_timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn an_http2_answer_waiting_on_a_quiet_upstream_is_not_cut_by_the_send_timeout() {
    let up = pausing_upstream(Duration::from_millis(3500));
    let gw = tls_gateway_with(
        &format!("http://{up}"),
        "idle_timeout = \"1s\"\nsend_timeout = \"1s\"",
    );
    let t = Instant::now();
    let r = tls_client(gw.addr, false)
        .get(format!(
            "https://localhost:{}/public/events",
            gw.addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().await.unwrap(), "first;second;");
    assert!(
        t.elapsed() >= Duration::from_millis(3500),
        "{:?}",
        t.elapsed()
    );
}

/// An HTTP/2 answer still being sent keeps its connection from being idle:
/// a stream of events longer than `idle_timeout` is not followed by the
/// connection being asked to close, so the client's next request goes on
/// the same connection; once the last answer has ended, the idle timeout
/// runs from then and closes it.
#[tokio::test(flavor = "multi_thread")]
async fn an_http2_connection_streaming_an_answer_longer_than_idle_timeout_stays_open_for_the_next_request(
) {
    let up = pausing_upstream(Duration::from_millis(2500));
    let gw = tls_gateway_with(&format!("http://{up}"), "idle_timeout = \"1s\"");
    let port = gw.addr.port();
    let (h2, driven) = h2_wide_window(gw.addr).await;
    assert_eq!(
        h2_read_whole(&h2, public_get(port, "/events")).await,
        b"first;second;"
    );
    // At once, on the same connection: it was never idle for a second.
    assert_eq!(
        h2_read_whole(&h2, public_get(port, "/events")).await,
        b"first;second;"
    );
    assert!(
        !driven.is_finished(),
        "the connection ended under the answer"
    );
    let closed = tokio::time::timeout(Duration::from_secs(4), driven).await;
    assert!(closed.is_ok(), "the idle connection was not closed");
}

/// An upstream on a plain socket that answers every request with a chunked
/// body: `first;`, then after `pause`, `second;` and the end.
fn pausing_upstream(pause: Duration) -> SocketAddr {
    raw_upstream(move |_, s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\nfirst;\r\n",
        );
        std::thread::sleep(pause);
        let _ = s.write_all(b"7\r\nsecond;\r\n0\r\n\r\n");
    })
}

/// An upstream on a plain socket: a thread per connection reads one request
/// head, then `answer` writes to the socket what it likes, given the head.
fn raw_upstream<F>(answer: F) -> SocketAddr
where
    F: Fn(&[u8], &mut TcpStream) + Clone + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                answer(&head, &mut s);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn prx22_http2_advertises_a_bounded_number_of_concurrent_streams() {
    let up = Upstream::start("h2").await;
    let gw = tls_gateway(&up.url());
    // One exchange (HTTP/2's default window), so the server's SETTINGS have
    // been applied.
    let (h2, _driven, mut body) = h2_answer_held_with_window(gw.addr, 65_535).await;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let streams = h2.current_max_send_streams();
    assert!(
        streams <= 1000,
        "the gateway lets one connection open {streams} concurrent streams"
    );
    assert!(streams >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn prx22_http2_a_rapid_reset_flood_is_cut_off_and_others_are_still_served() {
    let up = Upstream::start("h2").await;
    let gw = tls_gateway(&up.url());
    let (mut h2, connection) = h2::client::handshake(h2_tls(gw.addr).await).await.unwrap();
    let connection = tokio::spawn(connection);
    // CVE-2023-44487: open a stream and reset it at once, again and again.
    let flood = 20_000;
    let mut sent = 0;
    for _ in 0..flood {
        h2 = match h2.ready().await {
            Ok(h2) => h2,
            Err(_) => break,
        };
        let req = http::Request::get(format!("https://localhost:{}/public/r", gw.addr.port()))
            .body(())
            .unwrap();
        match h2.send_request(req, false) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => break,
        }
        sent += 1;
    }
    // The gateway ended that connection (GOAWAY or close) before the flood did.
    assert!(sent < flood, "all {flood} reset streams were accepted");
    let _ = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .unwrap();
    assert!(
        up.requests().len() < flood / 10,
        "{} of {sent} reset streams reached the upstream",
        up.requests().len()
    );
    // Everyone else is served.
    let t = Instant::now();
    let r = tls_client(gw.addr, false)
        .get(format!("https://localhost:{}/public/after", gw.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

/// One HTTP/2 frame: length, type, flags, stream, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// PRX-19 over HTTP/2: a head after the first, a `HEADERS` frame and a
/// `CONTINUATION` frame dripped a byte every 200 ms, is cut at
/// `request_header_timeout` from its first byte, as an HTTP/1 head is; an
/// idle timeout far off does not keep it open.
#[tokio::test(flavor = "multi_thread")]
async fn prx19_an_http2_head_dripped_after_the_first_request_is_cut_at_request_header_timeout() {
    let up = Upstream::start("h2").await;
    let (after, _) = h2_head_dripped_after_a_first_request(&up.url(), b"hello from h2").await;
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(4),
        "closed {after:?} after the head began, expected about 1 s"
    );
    assert_eq!(
        up.requests().len(),
        1,
        "the dripped head reached the upstream"
    );
}

/// The same while the first request's answer is still coming (its upstream
/// pauses 10 s in the middle of it): a stream in flight does not shelter a
/// head dripped beside it.
#[tokio::test(flavor = "multi_thread")]
async fn prx19_an_http2_head_dripped_beside_a_stream_in_flight_is_cut_at_request_header_timeout() {
    let up = pausing_upstream(Duration::from_secs(10));
    let (after, got) =
        h2_head_dripped_after_a_first_request(&format!("http://{up}"), b"first;").await;
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(4),
        "closed {after:?} after the head began, expected about 1 s"
    );
    assert!(
        !got.windows(7).any(|w| w == b"second;"),
        "the first answer had ended before the cut"
    );
}

/// Over an HTTP/2 connection to a gateway in front of `upstream`
/// (`request_header_timeout` 1 s, `idle_timeout` 30 s): a first request
/// (`GET /public/first`); once `marker` of its answer has come, a head for
/// stream 3 begun and dripped a byte every 200 ms for 8 s. How long after
/// that head began the gateway closed the connection, and every byte it sent.
async fn h2_head_dripped_after_a_first_request(
    upstream: &str,
    marker: &'static [u8],
) -> (Duration, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = tls_gateway_with(
        upstream,
        "request_header_timeout = \"1s\"\nidle_timeout = \"30s\"",
    );
    let (mut rd, mut wr) = tokio::io::split(h2_tls(gw.addr).await);
    // GET https://localhost:PORT/public/first, whole (HPACK: indexed
    // :method GET and :scheme https, literal :path and :authority).
    let authority = format!("localhost:{}", gw.addr.port());
    let mut block = vec![0x82, 0x87, 0x44, 13];
    block.extend_from_slice(b"/public/first");
    block.extend([0x41, authority.len() as u8]);
    block.extend_from_slice(authority.as_bytes());
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(h2_frame(0x4, 0, 0, &[]));
    bytes.extend(h2_frame(0x1, 0x4 | 0x1, 1, &block));
    wr.write_all(&bytes).await.unwrap();
    let (answered, mut seen) = tokio::sync::watch::channel(false);
    let closed = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut got = Vec::new();
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return (Instant::now(), got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.windows(marker.len()).any(|w| w == marker) {
                let _ = answered.send(true);
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), seen.wait_for(|a| *a))
        .await
        .expect("the first answer did not come")
        .unwrap();
    // The next head, begun; the block goes on in a CONTINUATION frame whose
    // 40 bytes come one every 200 ms (more frames would meet h2's limit on
    // CONTINUATION frames, a flood defence, before the timeout).
    let began = Instant::now();
    let _ = wr.write_all(&h2_frame(0x1, 0x1, 3, &[0x82])).await;
    let continuation = h2_frame(0x9, 0x4, 3, &[0x87; 40]);
    let drip = tokio::spawn(async move {
        let (header, payload) = continuation.split_at(9);
        let _ = wr.write_all(header).await;
        for b in payload {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });
    let (at, got) = tokio::time::timeout(Duration::from_secs(8), closed)
        .await
        .expect("the connection dripping a head was still open after 8 s")
        .unwrap();
    drip.abort();
    (at - began, got)
}

#[tokio::test(flavor = "multi_thread")]
async fn prx22_http2_a_settings_flood_does_not_keep_others_from_being_served() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start("h2").await;
    let gw = tls_gateway(&up.url());
    let mut tls = h2_tls(gw.addr).await;
    // The preface, then empty SETTINGS frames (each needs an ACK), never
    // reading the ACKs.
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let frame = [0u8, 0, 0, 0x4, 0, 0, 0, 0, 0];
    for _ in 0..100_000 {
        bytes.extend_from_slice(&frame);
    }
    let flood = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.write_all(&bytes)).await;
        tls
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let r = tls_client(gw.addr, false)
        .get(format!("https://localhost:{}/public/after", gw.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(flood.await.unwrap());
}

// ---------------------------------------------------------------- https upstream

#[tokio::test(flavor = "multi_thread")]
async fn an_https_upstream_signed_by_the_configured_ca_is_proxied() {
    let up = Upstream::start_tls("secure", localhost_tls()).await;
    let gw = Gateway::start(&format!(
        "[[app]]\nname = \"secure\"\nupstream = \"https://localhost:{}\"\nupstream_ca_file = \"{}\"\npublic_paths = [\"/\"]\n",
        up.addr.port(),
        fixture("test-ca.pem").display()
    ));
    let r = client()
        .get(gw.url("/over/tls?x=1"))
        .header("x-kept", "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from secure");
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/over/tls?x=1");
    assert_eq!(seen[0].header("x-kept"), Some("yes"));
    // Pooled like a plain upstream: more requests, one TLS connection.
    for _ in 0..5 {
        let r = client().get(gw.url("/again")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(up.requests().len(), 6);
    assert!(
        up.connections() <= 2,
        "{} TLS connections for 6 requests",
        up.connections()
    );
}

/// `portcullis serve` with JSON logs; killed when dropped.
struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
    listen: String,
    _config: crate::support::ConfigFile,
}

impl Served {
    fn start(config: &str) -> Served {
        let file = config_file(config);
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&file.path)
            .env_remove("RUST_LOG")
            .env_remove("PORTCULLIS_CONFIG")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut listen = None;
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "portcullis is serving" {
                listen = v["fields"]["listen"].as_str().map(str::to_string);
                break;
            }
        }
        let listen = listen.unwrap_or_else(|| panic!("no start-up line"));
        Served {
            child,
            lines,
            listen,
            _config: file,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_upstream_with_an_untrusted_certificate_is_a_502_and_the_log_says_why() {
    let up = Upstream::start_tls("secure", localhost_tls()).await;
    // No `upstream_ca_file`: the test CA is in no trust store the gateway uses.
    // (By IP, which the leaf also names: `localhost` may resolve to ::1 first.)
    let served = Served::start(&format!(
        "{}\n[[app]]\nname = \"secure\"\nupstream = \"https://127.0.0.1:{}\"\npublic_paths = [\"/\"]\n",
        base_config(),
        up.addr.port()
    ));
    let c = client();
    let mut status = None;
    for _ in 0..100 {
        if let Ok(r) = c
            .get(format!("http://{}/over/tls", served.listen))
            .send()
            .await
        {
            status = Some(r.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, Some(reqwest::StatusCode::BAD_GATEWAY));
    assert!(
        up.requests().is_empty(),
        "a request went over a TLS connection the gateway should not trust"
    );
    // The TLS handshake was attempted (and refused), not skipped.
    assert!(up.connections() >= 1);
    // The upstream itself is sound: a client that trusts the test CA is served.
    let r = tls_client(up.addr, true)
        .get(format!("https://localhost:{}/direct", up.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.requests().len(), 1);
    // Some line the request caused names the certificate problem (the
    // error's whole source chain: "invalid peer certificate: UnknownIssuer").
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let says_why = |l: &str| {
        let l = l.to_ascii_lowercase();
        l.contains("certificate") || l.contains("unknownissuer")
    };
    while Instant::now() < deadline {
        match served.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let found = says_why(&line);
                log.push(line);
                if found {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    assert!(
        log.iter().any(|l| says_why(l)),
        "no log line says why the upstream failed:\n{}",
        log.join("\n")
    );
}

// ---------------------------------------------------------------- WebSocket

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_carries_text_and_binary_both_ways_and_closes_cleanly() {
    let ws = websocket_echo().await;
    let gw = Gateway::start(&format!(
        "[[app]]\nname = \"ws\"\nupstream = \"http://{ws}\"\npublic_paths = [\"/ws\"]\n"
    ));
    let (mut socket, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    let mut sent = Vec::new();
    for i in 0..20u8 {
        let msg = if i % 2 == 0 {
            Message::text(format!("text message {i}"))
        } else {
            Message::binary(vec![i, 0, 0xff, b'\r', b'\n', i])
        };
        sent.push(msg);
    }
    // A message larger than any socket buffer, to see the tunnel stream.
    sent.push(Message::binary(
        (0..300_000u32).map(|n| (n % 251) as u8).collect::<Vec<_>>(),
    ));
    // All sent before any is read: both directions are in flight at once.
    for msg in &sent {
        socket.send(msg.clone()).await.unwrap();
    }
    for msg in &sent {
        let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&echoed, msg);
    }
    // The close handshake goes through the tunnel and back.
    socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        })))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap();
    match reply {
        Some(Ok(Message::Close(frame))) => {
            assert_eq!(frame.map(|f| f.code), Some(CloseCode::Normal));
        }
        other => panic!("expected the close reply, got {other:?}"),
    }
    let end = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap();
    assert!(
        !matches!(end, Some(Ok(_))),
        "a message after the close: {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_over_tls_on_the_http1_alpn_is_proxied() {
    let ws = websocket_echo().await;
    let gw = tls_gateway(&format!("http://{ws}"));
    let tls = tls_to(gw.addr, b"http/1.1").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let url = format!("wss://localhost:{}/public/ws", gw.addr.port());
    let (mut socket, resp) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    for msg in [
        Message::text("over tls"),
        Message::binary(vec![9u8; 70_000]),
    ] {
        socket.send(msg.clone()).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, msg);
    }
    socket.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_on_a_protected_path_is_proxied_for_a_session_and_refused_without() {
    let ws = websocket_echo().await;
    let mut s = crate::signin::Setup::start_with_apps(
        "",
        &format!("[[app]]\nname = \"live\"\npath_prefix = \"/live\"\nupstream = \"http://{ws}\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n"),
        |_| {},
    )
    .await;
    let url = format!("ws://{}/live/feed", s.gw.addr);
    let origin = format!("http://{}", s.gw.addr);

    // Without a session the upgrade is refused before the upstream.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", HeaderValue::from_str(&origin).unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        other => panic!("an anonymous upgrade was not refused: {other:?}"),
    }

    assert_eq!(s.sign_in().await.status(), 302);
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", HeaderValue::from_str(&origin).unwrap());
    req.headers_mut()
        .insert("cookie", HeaderValue::from_str(&s.jar.header()).unwrap());
    let (mut socket, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    for msg in [
        Message::text("hello over a session"),
        Message::binary(vec![1u8, 2, 3]),
    ] {
        socket.send(msg.clone()).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, msg);
    }
    socket.close(None).await.unwrap();
}

// ---------------------------------------------------------------- connection reuse

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_reused_across_many_requests() {
    let up = Upstream::start("pooled").await;
    let gw = open_gateway("", &up);
    // 200 sequential requests on one client connection.
    let c = client();
    for i in 0..200 {
        let r = c.get(gw.url(&format!("/seq/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        r.bytes().await.unwrap();
    }
    assert_eq!(up.requests().len(), 200);
    let sequential = up.connections();
    assert!(
        sequential <= 10,
        "{sequential} upstream connections for 200 sequential requests"
    );

    // 4 rounds of 50 concurrent requests: the pool keeps what a round opened.
    for round in 0..4 {
        let all = (0..50).map(|i| {
            let c = c.clone();
            let url = gw.url(&format!("/par/{round}/{i}"));
            async move { c.get(url).send().await.map(|r| r.status()) }
        });
        for status in futures_util::future::join_all(all).await {
            assert_eq!(status.unwrap(), 200);
        }
    }
    assert_eq!(up.requests().len(), 400);
    let concurrent = up.connections() - sequential;
    // One connection per request in flight, kept between rounds (pingora:
    // 49); some slack for a loaded machine, none for a pool that keeps
    // fewer idle connections than the concurrency.
    assert!(
        concurrent <= 75,
        "{concurrent} upstream connections for 200 requests, 50 at a time"
    );
}

// ---------------------------------------------------------------- connection limits

/// Reads until the peer closes (EOF or reset); `None` if still open at `limit`.
/// Writes `bytes` into `s` one at a time, `every` apart, on a thread of its
/// own, until they are all out or the connection refuses one.
fn drip(s: &TcpStream, bytes: Vec<u8>, every: Duration) {
    let mut w = s.try_clone().unwrap();
    std::thread::spawn(move || {
        for b in bytes {
            if w.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(every);
        }
    });
}

fn time_until_closed(s: &mut TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if since.elapsed() > limit {
                    return None;
                }
            }
            Err(_) => return Some(since.elapsed()),
        }
    }
}

/// Sends one keep-alive GET and reads its response (the echo upstream's body).
fn keep_alive_get(s: &mut TcpStream, path: &str, body: &str, within: Duration) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    answer_ending_with(s, body, within)
}

/// The answer read from `s` up to `body` at its end, within `within`; a 200.
fn answer_ending_with(s: &mut TcpStream, body: &str, within: Duration) -> String {
    s.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).ends_with(body) {
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "closed before the response: {}",
                String::from_utf8_lossy(&out)
            ),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "no response within {within:?} ({e}): {}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    let resp = String::from_utf8_lossy(&out).into_owned();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp
}

/// Drips a request head that never ends, one byte every 500 ms, into `addr`,
/// while a normal client asks for `/fast` there: that client's latency, and
/// how long after connecting the dripping one was closed (`None`: never).
async fn drip_while_another_is_served(addr: SocketAddr) -> (Duration, Option<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_drip = stop.clone();
    let slow = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        let mut w = s.try_clone().unwrap();
        // One byte every 500 ms of a head that never ends.
        std::thread::spawn(move || {
            let head = format!(
                "GET /drip HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}",
                "a".repeat(200)
            );
            for b in head.bytes() {
                if stop_drip.load(Ordering::SeqCst) || w.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        time_until_closed(&mut s, started, Duration::from_secs(15))
    });
    // Meanwhile another client is served at once.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t = Instant::now();
    let r = client()
        .get(format!("http://{addr}/fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let latency = t.elapsed();
    let closed = slow.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    (latency, closed)
}

/// Two keep-alive requests 1.2 s apart on one connection to `addr`, then
/// how long after the second response the connection was closed (`None`: never).
fn idle_after_two_requests(addr: SocketAddr, body: &str) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).unwrap();
    let first = keep_alive_get(&mut s, "/one", body, Duration::from_secs(5));
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );
    // Idle for less than the timeout: the connection still serves, and
    // the idle time starts again after this response.
    std::thread::sleep(Duration::from_millis(1200));
    keep_alive_get(&mut s, "/two", body, Duration::from_secs(5));
    let since = Instant::now();
    time_until_closed(&mut s, since, Duration::from_secs(15))
}

/// With room for two connections at `addr`: two keep-alive connections are
/// served, a third waits (neither served nor refused) until one of them
/// closes, and then it is served; a fourth is served afterwards.
fn a_third_connection_waits_for_a_slot(addr: SocketAddr, body: &str) {
    let mut a = TcpStream::connect(addr).unwrap();
    keep_alive_get(&mut a, "/a", body, Duration::from_secs(5));
    let mut b = TcpStream::connect(addr).unwrap();
    keep_alive_get(&mut b, "/b", body, Duration::from_secs(5));
    // The third is accepted by the kernel, not served, and not refused.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /c HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 1024];
    match c.read(&mut buf) {
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut => {}
        Ok(0) => panic!("the third connection was closed instead of waiting"),
        Ok(n) => panic!(
            "the third connection was served beyond max_connections: {}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("the third connection was refused: {e}"),
    }
    // One of the first two leaves: the waiting one is served.
    drop(a);
    let t = Instant::now();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).ends_with(body) {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => panic!(
                "the waiting connection was not served: {}",
                String::from_utf8_lossy(&out)
            ),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "served {:?} after a slot freed",
        t.elapsed()
    );
    // The process stays up and keeps serving.
    drop(b);
    drop(c);
    let mut d = TcpStream::connect(addr).unwrap();
    keep_alive_get(&mut d, "/d", body, Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn prx19_a_client_dripping_its_head_is_closed_at_request_header_timeout_while_others_are_served(
) {
    let up = Upstream::start("limits").await;
    let gw = open_gateway("request_header_timeout = \"2s\"", &up);
    let (latency, closed) = drip_while_another_is_served(gw.addr).await;
    assert!(
        latency < Duration::from_millis(1500),
        "a client was kept waiting {latency:?} by a slow one"
    );
    let closed = closed.unwrap_or_else(|| panic!("the dripping client was never closed"));
    assert!(
        closed >= Duration::from_millis(1500) && closed < Duration::from_secs(6),
        "the dripping client was closed after {closed:?}, expected ~2s"
    );
    assert!(
        up.requests().iter().all(|s| s.uri != "/drip"),
        "the dripped request reached the upstream"
    );
}

/// A connection's first head must be whole `request_header_timeout` after
/// the connection opened, however late its first byte came: a client that
/// waits, then drips, is closed when one that dripped at once would be.
#[tokio::test(flavor = "multi_thread")]
async fn prx19_a_first_head_begun_late_must_be_whole_within_request_header_timeout_of_connecting() {
    let up = Upstream::start("limits").await;
    let gw = open_gateway("request_header_timeout = \"3s\"", &up);
    let addr = gw.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(2500));
        let head = format!(
            "GET /late HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}",
            "a".repeat(100)
        );
        drip(&s, head.into_bytes(), Duration::from_millis(100));
        time_until_closed(&mut s, started, Duration::from_secs(15))
    })
    .await
    .unwrap();
    let closed = closed.unwrap_or_else(|| panic!("the late, dripping client was never closed"));
    assert!(
        closed >= Duration::from_millis(2800) && closed < Duration::from_millis(4800),
        "closed {closed:?} after connecting, expected ~3s"
    );
    assert!(
        up.requests().iter().all(|s| s.uri != "/late"),
        "the dripped request reached the upstream"
    );
}

/// Over TLS the handshake counts toward the first head's time: a client
/// that waits before its handshake, then drips its head, is closed
/// `request_header_timeout` after connecting, not that long after the
/// handshake.
#[tokio::test(flavor = "multi_thread")]
async fn prx19_a_tls_handshake_begun_late_leaves_the_first_head_only_the_rest_of_request_header_timeout(
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let up = Upstream::start("limits").await;
    let gw = tls_gateway_with(&up.url(), "request_header_timeout = \"3s\"");
    let started = Instant::now();
    let mut tls = tls_to_after(gw.addr, b"http/1.1", Duration::from_millis(2000)).await;
    let head = format!(
        "GET /public/late HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}",
        "a".repeat(200)
    );
    let mut closed = None;
    for byte in head.bytes() {
        if tls.write_all(&[byte]).await.is_err() || tls.flush().await.is_err() {
            closed = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), tls.read(&mut buf)).await {
            Err(_) => {}
            Ok(_) => {
                closed = Some(started.elapsed());
                break;
            }
        }
    }
    let closed = closed.unwrap_or_else(|| panic!("the late, dripping client was never closed"));
    assert!(
        closed >= Duration::from_millis(2800) && closed < Duration::from_millis(4500),
        "closed {closed:?} after connecting, expected ~3s"
    );
    assert!(
        up.requests().iter().all(|s| s.uri != "/public/late"),
        "the dripped request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prx19_an_idle_keep_alive_connection_is_closed_at_idle_timeout() {
    let up = Upstream::start("idle").await;
    let gw = open_gateway(
        "idle_timeout = \"2s\"\nrequest_header_timeout = \"30s\"",
        &up,
    );
    let addr = gw.addr;
    let closed =
        tokio::task::spawn_blocking(move || idle_after_two_requests(addr, "hello from idle"))
            .await
            .unwrap();
    let closed = closed.unwrap_or_else(|| panic!("the idle connection was never closed"));
    assert!(
        closed >= Duration::from_millis(1500) && closed < Duration::from_secs(6),
        "the idle connection was closed {closed:?} after its last response, expected ~2s"
    );
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn prx19_the_head_timer_starts_at_the_first_byte_so_keep_alive_outlives_it() {
    // request_header_timeout times the head; the wait before it is idle_timeout's.
    let up = Upstream::start("alive").await;
    let gw = open_gateway(
        "request_header_timeout = \"1s\"\nidle_timeout = \"4s\"",
        &up,
    );
    let addr = gw.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let body = "hello from alive";
        let mut s = TcpStream::connect(addr).unwrap();
        keep_alive_get(&mut s, "/one", body, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(2500));
        keep_alive_get(&mut s, "/two", body, Duration::from_secs(5));
        let since = Instant::now();
        time_until_closed(&mut s, since, Duration::from_secs(15))
    })
    .await
    .unwrap();
    let closed = closed.unwrap_or_else(|| panic!("the idle connection was never closed"));
    assert!(
        closed >= Duration::from_secs(3) && closed < Duration::from_secs(8),
        "the idle connection was closed {closed:?} after its last response, expected ~4s"
    );
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn prx19_a_head_begun_long_after_the_last_response_is_cut_at_its_own_deadline() {
    // The watchdog arms its timer at most a head timeout ahead and is not
    // woken when a head begins: the head still gets exactly its own deadline,
    // not the idle one (10 s after the response) nor a later timer.
    let up = Upstream::start("late").await;
    let gw = open_gateway(
        "request_header_timeout = \"2s\"\nidle_timeout = \"10s\"",
        &up,
    );
    let addr = gw.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        keep_alive_get(&mut s, "/one", "hello from late", Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(2500));
        // A head that never ends, begun 2.5 s after the response (the
        // watchdog's timer is then armed for 4 s after the connection began).
        s.write_all(b"GET /late HTTP/1.1\r\n").unwrap();
        let since = Instant::now();
        drip(&s, vec![b'X'; 40], Duration::from_millis(250));
        time_until_closed(&mut s, since, Duration::from_secs(15))
    })
    .await
    .unwrap();
    let closed = closed.unwrap_or_else(|| panic!("the slow head was never cut"));
    assert!(
        closed >= Duration::from_millis(1500) && closed < Duration::from_millis(3000),
        "the slow head was cut {closed:?} after its first byte, expected ~2s"
    );
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn prx19_beyond_max_connections_a_new_connection_waits_and_is_then_served() {
    let up = Upstream::start("capped").await;
    let gw = open_gateway("max_connections = 2", &up);
    let addr = gw.addr;
    tokio::task::spawn_blocking(move || {
        a_third_connection_waits_for_a_slot(addr, "hello from capped")
    })
    .await
    .unwrap();
    let uris: Vec<_> = up.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/a", "/b", "/c", "/d"]);
}

/// PRX-19, connection caps per client: with `max_connections_per_ip = 2`,
/// a third connection from the same address is closed at once, unanswered,
/// and the address gets a connection again once one of its two closed.
#[tokio::test(flavor = "multi_thread")]
async fn prx19_a_client_over_max_connections_per_ip_is_closed_at_once_until_one_of_its_own_closes()
{
    let up = Upstream::start("per ip").await;
    let gw = open_gateway("max_connections_per_ip = 2", &up);
    let addr = gw.addr;
    tokio::task::spawn_blocking(move || {
        let within = Duration::from_secs(10);
        let mut first = TcpStream::connect(addr).unwrap();
        keep_alive_get(&mut first, "/a", "hello from per ip", within);
        let mut second = TcpStream::connect(addr).unwrap();
        keep_alive_get(&mut second, "/b", "hello from per ip", within);
        let mut third = TcpStream::connect(addr).unwrap();
        let _ = third.write_all(b"GET /c HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let closed = time_until_closed(&mut third, Instant::now(), within);
        assert!(closed.is_some(), "the third connection was kept open");
        drop(first);
        // The count is given back when the gateway sees the close.
        let deadline = Instant::now() + within;
        loop {
            let mut next = TcpStream::connect(addr).unwrap();
            let _ = next.write_all(b"GET /d HTTP/1.1\r\nHost: localhost\r\n\r\n");
            next.set_read_timeout(Some(within)).unwrap();
            let mut buf = [0u8; 4096];
            match next.read(&mut buf) {
                Ok(n) if n > 0 => {
                    assert!(buf.starts_with(b"HTTP/1.1 200"));
                    break;
                }
                _ => assert!(Instant::now() < deadline, "no connection after one closed"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(second);
    })
    .await
    .unwrap();
    let uris: Vec<_> = up.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/a", "/b", "/d"]);
}

/// A trusted proxy carries every client behind it on its own address: it is
/// not held to `max_connections_per_ip`.
#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_is_not_held_to_max_connections_per_ip() {
    let up = Upstream::start("via proxy").await;
    let gw = open_gateway(
        "max_connections_per_ip = 1\ntrusted_proxies = [\"127.0.0.1/32\"]",
        &up,
    );
    let addr = gw.addr;
    tokio::task::spawn_blocking(move || {
        let within = Duration::from_secs(10);
        let mut open: Vec<TcpStream> = Vec::new();
        for path in ["/a", "/b", "/c"] {
            let mut s = TcpStream::connect(addr).unwrap();
            keep_alive_get(&mut s, path, "hello from via proxy", within);
            open.push(s);
        }
    })
    .await
    .unwrap();
    assert_eq!(up.requests().len(), 3);
}

/// Every client connection has TCP keep-alive on, so that an idle
/// WebSocket tunnel whose client vanished (no FIN, no RST) does not hold its
/// slot for ever: the kernel shows the gateway's side of an idle connection
/// with its keep-alive timer running (`/proc/net/tcp`, timer 02).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_client_connection_runs_the_kernel_s_keep_alive_timer() {
    let up = Upstream::start("probed").await;
    let gw = open_gateway("", &up);
    let addr = gw.addr;
    let line = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        keep_alive_get(&mut s, "/", "hello from probed", Duration::from_secs(10));
        // The answer's ACK goes out; the connection is idle after it.
        std::thread::sleep(Duration::from_millis(300));
        // The address as the kernel's integer in this machine's byte order.
        let loopback = u32::from_ne_bytes([127, 0, 0, 1]);
        let local = format!("{loopback:08X}:{:04X}", addr.port());
        let remote = format!("{loopback:08X}:{:04X}", s.local_addr().unwrap().port());
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        table
            .lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(1) == Some(&local.as_str()) && f.get(2) == Some(&remote.as_str())
            })
            .map(str::to_owned)
            .expect("the gateway's side of the connection is not in /proc/net/tcp")
    })
    .await
    .unwrap();
    let timer = line.split_whitespace().nth(5).unwrap_or_default();
    assert!(timer.starts_with("02:"), "no keep-alive timer: {line}");
}

/// PRX-19 with two workers, each accepting on a listener of its own
/// (`SO_REUSEPORT`): the one free slot serves the next connection whichever
/// worker's queue the kernel put it in (a worker holding the slot while
/// waiting on its own empty queue left about half of them hanging).
#[tokio::test(flavor = "multi_thread")]
async fn prx19_with_one_slot_and_two_workers_every_connection_in_turn_is_served() {
    let up = Upstream::start("one slot").await;
    let gw = Gateway::start_full(&format!(
        "{}\n[[app]]\nname = \"open\"\nupstream = \"{}\"\npublic_paths = [\"/\"]\n",
        config_with_server("max_connections = 1").replace("threads = 1", "threads = 2"),
        up.url()
    ));
    let addr = gw.addr;
    tokio::task::spawn_blocking(move || {
        // Each connection lands in one of the two queues by its port: twelve
        // in turn all found the worker holding the slot 1 time in 4096.
        for i in 0..12 {
            let mut s = TcpStream::connect(addr).unwrap();
            keep_alive_get(
                &mut s,
                &format!("/{i}"),
                "hello from one slot",
                Duration::from_secs(5),
            );
        }
    })
    .await
    .unwrap();
    assert_eq!(up.requests().len(), 12);
}

/// An IPv4 proxy reaching a dual-stack listener (`[::]`) is the peer
/// `::ffff:127.0.0.1`; `trusted_proxies = ["127.0.0.1/32"]` names it still,
/// and the app sees the IPv4 address it is.
#[tokio::test(flavor = "multi_thread")]
async fn an_ipv4_proxy_on_a_dual_stack_listener_is_trusted_as_its_ipv4_address() {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("skipped: this host has no IPv6");
        return;
    }
    let up = Upstream::start("dual").await;
    let gw = Gateway::start_full(&format!(
        "{}\n[[app]]\nname = \"open\"\nupstream = \"{}\"\npublic_paths = [\"/\"]\n",
        config_with_server("trusted_proxies = [\"127.0.0.1/32\"]")
            .replace("\nlisten = \"127.0.0.1:0\"", "\nlisten = \"[::]:0\""),
        up.url()
    ));
    assert!(gw.addr.is_ipv6(), "{}", gw.addr);
    let v4 = SocketAddr::from(([127, 0, 0, 1], gw.addr.port()));
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(v4).unwrap();
        s.write_all(
            b"GET /dual HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n",
        )
        .unwrap();
        answer_ending_with(&mut s, "hello from dual", Duration::from_secs(5));
    })
    .await
    .unwrap();
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
}

/// A form sent to a gateway endpoint must arrive within
/// `request_header_timeout`: a client that announces one and sends almost
/// nothing gets 408 and the connection is closed (a request under way holds
/// a slot of `max_connections` that no idle timeout reclaims).
#[tokio::test(flavor = "multi_thread")]
async fn a_form_to_a_gateway_endpoint_that_never_arrives_is_answered_408_and_closed() {
    let up = Upstream::start("app").await;
    let gw = open_gateway("request_header_timeout = \"1s\"", &up);
    let addr = gw.addr;
    let (answer, waited) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        // The sign-in host (public_url), where callbacks are read.
        s.write_all(
            b"POST /_auth/callback/x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nstate=",
        )
        .unwrap();
        let t = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "still open after 10 s ({e}): {}",
                    String::from_utf8_lossy(&got)
                ),
            }
        }
        (String::from_utf8_lossy(&got).into_owned(), t.elapsed())
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(up.requests().is_empty());
}

/// An upstream on a plain socket: a GET of a path ending in `/big` answers
/// `BIG` bytes (more than the sockets on the way can hold), one ending in
/// `/ws` switches to a WebSocket and sends as many, anything else a 5-byte
/// `small`.
fn big_answer_upstream() -> SocketAddr {
    const BIG: usize = 64 << 20;
    raw_upstream(|head, s| {
        let path = String::from_utf8_lossy(head)
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let start: &[u8] = if path.ends_with("/big") {
            &format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes()
        } else if path.ends_with("/ws") {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        } else {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nsmall",
            );
            return;
        };
        let chunk = vec![b'x'; 1 << 16];
        let mut out = s.write_all(start);
        for _ in 0..BIG / chunk.len() {
            out = out.and_then(|()| s.write_all(&chunk));
        }
    })
}

/// A client that stops reading an answer holds its connection (and its slot
/// of `max_connections`) only for `send_timeout` of no progress: with one
/// slot, the next client is served once that has passed (the idle timeout
/// is the default 60 s: it plays no part).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_an_answer_is_cut_after_the_send_timeout() {
    let (small, waited, taken) =
        next_client_after_one_that_stops_reading(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
    assert!(small.starts_with("HTTP/1.1 200"), "{small}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    assert!(taken < 64 << 20, "the whole answer arrived: {taken} bytes");
}

/// The same for a WebSocket tunnel: a client that takes none of what the
/// upstream sends through it loses the tunnel after `send_timeout`, and its
/// slot goes to the next client.
#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_client_that_stops_reading_loses_its_tunnel_after_the_send_timeout() {
    let (small, waited, taken) = next_client_after_one_that_stops_reading(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(small.starts_with("HTTP/1.1 200"), "{small}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    assert!(taken < 64 << 20, "the whole stream arrived: {taken} bytes");
}

/// With one slot and `send_timeout = 1s`: one client sends `request` to
/// `big_answer_upstream` and reads nothing; then the next client asks for
/// `/small`. Returns what the next client got, how long it waited, and how
/// many bytes the first could read after that.
async fn next_client_after_one_that_stops_reading(
    request: &'static [u8],
) -> (String, Duration, usize) {
    let up = big_answer_upstream();
    let gw = open_gateway_at(up, "max_connections = 1\nsend_timeout = \"1s\"");
    let addr = gw.addr;
    tokio::task::spawn_blocking(move || {
        let mut reader = TcpStream::connect(addr).unwrap();
        reader.write_all(request).unwrap();
        // It reads nothing; the next client waits for the one slot.
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let mut next = TcpStream::connect(addr).unwrap();
        next.write_all(b"GET /small HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        next.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).ends_with("small") {
            match next.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("the next client was not served in 10 s: {e}"),
            }
        }
        let waited = t.elapsed();
        // The reader's answer was cut short.
        reader
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut taken = 0usize;
        let mut big = vec![0u8; 1 << 16];
        while let Ok(n @ 1..) = reader.read(&mut big) {
            taken += n;
        }
        (String::from_utf8_lossy(&got).into_owned(), waited, taken)
    })
    .await
    .unwrap()
}

/// PRX-24 without false alarms: `upstream_read_timeout` bounds a silent
/// upstream, but time the client spends uploading its body does not count.
#[tokio::test(flavor = "multi_thread")]
async fn prx24_a_slow_upload_is_not_taken_for_a_silent_upstream() {
    let up = Upstream::start("app").await;
    let gw = open_gateway("upstream_read_timeout = \"1s\"", &up);
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    // Eight chunks 400 ms apart: 3.2 s of upload, each gap well under 1 s.
    for _ in 0..8 {
        conn.write_all(b"5\r\nabcde\r\n").unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    conn.write_all(b"0\r\n\r\n").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with("hello from app") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), 40);
}

/// An upstream that keeps every byte it is sent, on any connection, and
/// answers nothing.
fn listening_upstream() -> (SocketAddr, Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = heard.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    kept.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (addr, heard)
}

/// PRX-12 to the letter of 400-CLOSE ("forwards zero bytes upstream"): a
/// chunked body whose framing breaks, at its first chunk or after good
/// ones, sent in one piece or in several, is answered 400 and closed before
/// the upstream hears anything of the request, not even its head.
#[tokio::test(flavor = "multi_thread")]
async fn prx12_a_broken_chunked_body_reaches_no_upstream_not_even_its_head() {
    let (up, heard) = listening_upstream();
    let gw = open_gateway_at(up, "");
    let head = "POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    // One byte over the 4 KiB a chunk extension may take (hyper takes 16).
    let long_extension = format!("3;{}\r\nabc\r\n0\r\n\r\n", "a".repeat(4096));
    for pieces in [
        vec![head, "zz\r\nabc\r\n0\r\n\r\n"],
        vec![
            head,
            "3\r\nabc\r\n4\r\nwxyz\r\nfffffffffffffffffff1\r\nabc\r\n",
        ],
        vec![head, "3\r\nabc\r\n", "3;a\rb\r\nabc\r\n0\r\n\r\n"],
        vec![head, "3\nabc\n0\n\n"],
        vec![head, &long_extension],
    ] {
        let mut conn = TcpStream::connect(gw.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        for piece in &pieces {
            conn.write_all(piece.as_bytes()).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let body: String = pieces[1..].concat().chars().take(60).collect();
        let (answer, closed) = read_until_closed(&mut conn);
        assert!(answer.starts_with("HTTP/1.1 400"), "{body:?}: {answer}");
        assert!(closed, "{body:?}: the connection stayed open");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heard = heard.lock().unwrap();
    assert!(
        heard.is_empty(),
        "the upstream heard {:?}",
        String::from_utf8_lossy(&heard)
    );
}

/// A chunked body that arrives whole within the read-ahead goes upstream
/// whole, framed by its length; one whose client waits for the answer
/// before sending more is not held for its end (a stream both ways over
/// HTTP/1.1): the upstream gets the head and the first chunk and answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_goes_upstream_whole_when_it_arrives_whole_and_streams_when_it_waits() {
    let (heads_tx, heads_rx) = mpsc::channel::<String>();
    let up = raw_upstream(move |head, s| {
        let mut got = head.to_vec();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("abc") {
            match s.read(&mut buf) {
                Ok(n @ 1..) => got.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let _ = heads_tx.send(String::from_utf8_lossy(&got).into_owned());
        let _ =
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ngot it");
    });
    let gw = open_gateway_at(up, "");
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
    )
    .unwrap();
    let (answer, _) = read_until_closed(&mut conn);
    assert!(answer.ends_with("got it"), "{answer}");
    let sent = heads_rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .to_ascii_lowercase();
    assert!(sent.contains("content-length: 6\r\n"), "{sent}");
    assert!(!sent.contains("transfer-encoding"), "{sent}");
    assert!(sent.ends_with("\r\n\r\nabcdef"), "{sent}");

    // The client sends one chunk and waits for the answer before the rest.
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with("got it") {
        let n = conn
            .read(&mut buf)
            .expect("no answer while the body stayed open");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let sent = heads_rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .to_ascii_lowercase();
    assert!(sent.contains("transfer-encoding: chunked\r\n"), "{sent}");
}

/// A long line after a WebSocket handshake, in the same write, is the
/// tunnel's first bytes, not a request line to cut at 8 KiB (PRX-20's cut):
/// the upstream gets every byte as sent and nothing the gateway made up,
/// and the tunnel ends when the client leaves.
#[tokio::test(flavor = "multi_thread")]
async fn bytes_after_a_websocket_handshake_reach_the_tunnel_whole_however_long_their_first_line() {
    let (heard_tx, heard_rx) = mpsc::channel::<Vec<u8>>();
    let up = raw_upstream(move |head, s| {
        let _ = s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        );
        // What came after the head in the same reads, then the rest, until the client leaves.
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut got = head[end..].to_vec();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        let _ = heard_tx.send(got);
    });
    let gw = open_gateway_at(up, "");
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A padded handshake makes the tap's reads long enough to hold the whole line.
    let pad = "x".repeat(30 * 1024);
    let line = vec![b'A'; 20 * 1024];
    let mut sent = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Pad: {pad}\r\n\r\n"
    )
    .into_bytes();
    sent.extend_from_slice(&line);
    conn.write_all(&sent).unwrap();
    let mut answer = [0u8; 12];
    conn.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 101");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(conn);
    let heard = heard_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the tunnel did not end when the client left");
    assert_eq!(
        heard.len(),
        line.len(),
        "{:?}",
        String::from_utf8_lossy(&heard[heard.len().saturating_sub(40)..])
    );
    assert!(heard.iter().all(|b| *b == b'A'));
}

/// The read-ahead of a chunked body is bounded in time as well as in
/// bytes: a client dripping one-byte chunks just within the pause still has
/// its request at the upstream about a second on, its body streaming after.
#[tokio::test(flavor = "multi_thread")]
async fn a_dripping_chunked_body_reaches_its_upstream_after_a_second_not_at_its_end() {
    let (at_tx, at_rx) = mpsc::channel::<Instant>();
    let up = raw_upstream(move |_, s| {
        let _ = at_tx.send(Instant::now());
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = s.read(&mut buf) {
            if buf[..n].ends_with(b"0\r\n\r\n") {
                break;
            }
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    });
    let gw = open_gateway_at(up, "");
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    conn.write_all(
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    // 3 s of one-byte chunks, 30 ms apart (the pause is 50 ms).
    while start.elapsed() < Duration::from_secs(3) {
        conn.write_all(b"1\r\nx\r\n").unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    conn.write_all(b"0\r\n\r\n").unwrap();
    let reached = at_rx.recv_timeout(Duration::from_secs(10)).unwrap() - start;
    assert!(
        reached < Duration::from_millis(2500),
        "the upstream was contacted {reached:?} after the request began"
    );
    let (answer, _) = read_until_closed(&mut conn);
    assert!(answer.ends_with("ok"), "{answer}");
}

/// PRX-19 for request bodies: a client that stops sending its body while
/// the upstream waits for it loses the request after
/// `upstream_read_timeout`, also when the upstream answered before reading
/// the body (and goes on reading it, as Node does): both connections close,
/// neither is held for as long as the client stays silent.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_sending_its_body_loses_both_connections_even_after_an_early_answer() {
    let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
    let up = raw_upstream(move |_, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly");
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    let gw = open_gateway_at(up, "upstream_read_timeout = \"1s\"");
    let (answer, closed) = read_until_closed(&mut silent_upload(&gw, "/upload"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("early"), "{answer}");
    assert!(closed, "the client's connection is still open 20 s on");
    assert!(
        closed_rx.recv_timeout(Duration::from_secs(20)).is_ok(),
        "the upstream connection is still open"
    );

    // Before any answer, the client's silence is a 408, not the upstream's 504.
    let quiet = raw_upstream(|_, s| {
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let gw = open_gateway_at(quiet, "upstream_read_timeout = \"1s\"");
    let (answer, closed) = read_until_closed(&mut silent_upload(&gw, "/upload"));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(closed, "not closed 20 s on: {answer}");
}

/// A request body left open and silent while its answer streams (a gRPC
/// bidirectional call, a duplex fetch) is not cut by the body's timer: the
/// answer arrives whole, however long it takes beyond `upstream_read_timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_request_body_does_not_cut_an_answer_that_keeps_streaming() {
    let up = raw_upstream(|_, s| {
        stream_chunks(s, 10, Duration::from_millis(300));
    });
    let gw = open_gateway_at(up, "upstream_read_timeout = \"1s\"");
    let mut conn = silent_upload(&gw, "/stream");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"0\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!("{other:?} after {}", String::from_utf8_lossy(&got)),
        }
    }
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches("\r\nx\r\n").count(), 10, "{answer}");
}

/// An upload that goes on after its answer began (an upstream that streams
/// back what it reads, as an echo or a transcoder does) is a body, not the
/// next request's head: its bytes do not start `request_header_timeout`, and
/// the answer arrives whole however long the upload takes beyond it.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_goes_on_after_its_answer_began_is_not_cut_by_the_head_timeout() {
    let up = raw_upstream(|head, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut seen = head.len() - end;
        let mut buf = [0u8; 64];
        while seen < 50 {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => {
                    seen += n;
                    let _ = s.write_all(format!("{n:x}\r\n").as_bytes());
                    let _ = s.write_all(&buf[..n]);
                    let _ = s.write_all(b"\r\n");
                }
                _ => return,
            }
        }
        let _ = s.write_all(b"0\r\n\r\n");
    });
    let gw = open_gateway_at(up, "request_header_timeout = \"1s\"");
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    for piece in 0..10 {
        // Five bytes every 400 ms: the upload lasts 4 s, four head timeouts.
        std::thread::sleep(Duration::from_millis(400));
        let part = format!("part{piece}");
        assert!(
            conn.write_all(part.as_bytes()).is_ok(),
            "the upload was cut after {piece} pieces: {}",
            String::from_utf8_lossy(&got)
        );
        read_until(&mut conn, &mut got, |g| {
            String::from_utf8_lossy(g).contains(&part)
        });
    }
    read_until(&mut conn, &mut got, |g| g.ends_with(b"0\r\n\r\n"));
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("part9"), "{answer}");
}

/// An upload that goes on after its answer has ended (an upstream that
/// answers at once and reads the body after) is a body, not a head: its
/// bytes start no `request_header_timeout`, and the connection serves the
/// next request once the body is in.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_goes_on_after_its_answer_ended_is_not_cut_by_the_head_timeout() {
    let up = raw_upstream(|head, s| {
        if head.starts_with(b"GET /next ") {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext");
            return;
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut seen = head.len() - end;
        let mut buf = [0u8; 64];
        while seen < 50 {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => seen += n,
                _ => return,
            }
        }
    });
    let gw = open_gateway_at(up, "request_header_timeout = \"1s\"");
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut conn, &mut got, |g| g.ends_with(b"ok"));
    for piece in 0..10 {
        // Five bytes every 400 ms after the answer: 4 s, four head timeouts.
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            conn.write_all(format!("part{piece}").as_bytes()).is_ok(),
            "the upload was cut after {piece} pieces"
        );
    }
    conn.write_all(b"GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    read_until(&mut conn, &mut got, |g| g.ends_with(b"next"));
    let answers = String::from_utf8_lossy(&got);
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 2, "{answers}");
}

/// A request pipelined while a long answer streams waits its turn: its head
/// does not start `request_header_timeout` before that answer is over, so
/// neither answer is cut.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_pipelined_during_a_long_answer_waits_its_turn_and_both_are_answered() {
    let up = raw_upstream(|head, s| {
        if !head.starts_with(b"GET /slow ") {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext");
            return;
        }
        stream_chunks(s, 10, Duration::from_millis(300));
    });
    let gw = open_gateway_at(up, "request_header_timeout = \"1s\"");
    let (mut conn, mut got) = slow_answer_streaming(gw.addr);
    // Sent once the answer is streaming, not while its request is served.
    conn.write_all(b"GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    read_until(&mut conn, &mut got, |g| g.ends_with(b"next"));
    let answers = String::from_utf8_lossy(&got);
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 2, "{answers}");
    assert_eq!(answers.matches("\r\nx\r\n").count(), 10, "{answers}");
}

/// A connection to the gateway at `addr` that asked for `GET /slow`, and
/// what it has read once the answer's first chunk (`x`) arrived.
fn slow_answer_streaming(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    read_until(&mut conn, &mut got, |g| {
        String::from_utf8_lossy(g).contains("\r\nx\r\n")
    });
    (conn, got)
}

/// PRX-19: half a head pipelined while a long answer streams, then silence:
/// the answer arrives whole, and the connection is closed about
/// `request_header_timeout` after it, not left open for `idle_timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn prx19_half_a_head_pipelined_during_an_answer_is_closed_at_the_head_timeout_after_it() {
    let up = raw_upstream(|_, s| {
        stream_chunks(s, 8, Duration::from_millis(250));
    });
    let gw = open_gateway_at(
        up,
        "request_header_timeout = \"1s\"\nidle_timeout = \"60s\"",
    );
    let (mut conn, got) = slow_answer_streaming(gw.addr);
    conn.write_all(b"GET /next HTTP/1.1\r\nHost: loc").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let (rest, closed) = read_until_closed(&mut conn);
    let answer = String::from_utf8_lossy(&got).into_owned() + &rest;
    assert!(
        answer.ends_with("0\r\n\r\n"),
        "the answer was cut: {answer}"
    );
    assert_eq!(answer.matches("\r\nx\r\n").count(), 8, "{answer}");
    assert!(
        closed,
        "still open {:?} after the half head",
        started.elapsed()
    );
}

/// PRX-17: the only protocol a connection is switched to is the WebSocket
/// the client asked for. An upstream answering a WebSocket upgrade with a
/// switch to anything else (h2c here) gets the client a 502, never a tunnel
/// to that protocol past the gateway; a 101 with `Upgrade: websocket` still
/// opens one.
#[tokio::test(flavor = "multi_thread")]
async fn prx17_an_upstream_switching_to_another_protocol_than_websocket_gets_a_502() {
    let up = raw_upstream(|head, s| {
        let head = String::from_utf8_lossy(head);
        let upgrade = if head.contains("/h2c") {
            "h2c"
        } else if head.contains("/both") {
            "h2c, websocket"
        } else {
            "websocket"
        };
        let _ = s.write_all(
            format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: {upgrade}\r\nConnection: Upgrade\r\n\r\n")
                .as_bytes(),
        );
        std::thread::sleep(Duration::from_secs(2));
    });
    let gw = open_gateway_at(up, "");
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let answer = |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{ws}");
        raw_exchange(gw.addr, request.as_bytes()).0
    };
    for path in ["/h2c", "/both"] {
        let refused = answer(path);
        assert!(refused.starts_with("HTTP/1.1 502"), "{path}: {refused}");
        // Refused like an upgrade the upstream declined: the connection closes.
        assert!(
            refused.to_ascii_lowercase().contains("connection: close"),
            "{path}: {refused}"
        );
    }
    let switched = answer("/chat");
    assert!(switched.starts_with("HTTP/1.1 101"), "{switched}");
    assert!(
        switched.to_ascii_lowercase().contains("upgrade: websocket"),
        "{switched}"
    );
}

/// One connection, one request over HTTP/2 with `host` fields `hosts`
/// beside `:authority` (`localhost:PORT`): the status the gateway answered.
async fn h2_status_with_hosts(addr: SocketAddr, hosts: &[&str]) -> u16 {
    let uri = format!("https://localhost:{}/public/x", addr.port());
    h2_status(addr, &uri, hosts).await
}

/// The status of an HTTP/2 GET of `uri` with these `host` fields; a `uri`
/// without an authority goes out without `:authority` (h2 sends such a
/// request, with `:scheme` http, for an HTTP/1.1 request it forwards).
async fn h2_status(addr: SocketAddr, uri: &str, hosts: &[&str]) -> u16 {
    let (h2, connection) = h2::client::handshake(h2_tls(addr).await).await.unwrap();
    tokio::spawn(connection);
    let mut req = http::Request::get(uri);
    for h in hosts {
        req = req.header("host", *h);
    }
    let mut ready = h2.ready().await.unwrap();
    let (resp, _) = ready.send_request(req.body(()).unwrap(), true).unwrap();
    resp.await.unwrap().status().as_u16()
}

/// PRX-14 over HTTP/2: a `host` field beside `:authority` must name the same
/// host (RFC 9113 §8.3.1) and only one may come, as on HTTP/1; otherwise 400
/// and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn prx14_an_http2_request_naming_two_hosts_is_refused() {
    let up = Upstream::start("h2").await;
    let gw = tls_gateway(&up.url());
    let own = format!("localhost:{}", gw.addr.port());
    assert_eq!(h2_status_with_hosts(gw.addr, &[]).await, 200);
    assert_eq!(h2_status_with_hosts(gw.addr, &[&own]).await, 200);
    // The same authority spelled otherwise (RFC 9113 §8.3.1 normalises).
    let spelled = format!("LocalHost.:{}", gw.addr.port());
    assert_eq!(h2_status_with_hosts(gw.addr, &[&spelled]).await, 200);
    assert_eq!(up.requests().len(), 3);
    assert_eq!(h2_status_with_hosts(gw.addr, &["admin.example"]).await, 400);
    // Without a port `host` means 443, not the gateway's port.
    assert_eq!(h2_status_with_hosts(gw.addr, &["localhost"]).await, 400);
    assert_eq!(h2_status_with_hosts(gw.addr, &[&own, &own]).await, 400);
    assert_eq!(
        h2_status_with_hosts(gw.addr, &[&own, "admin.example"]).await,
        400
    );
    assert_eq!(
        up.requests().len(),
        3,
        "a refused request reached the upstream"
    );
}

/// PRX-14 over HTTP/2 without `:authority`: the `host` field names the host
/// (RFC 9113 §8.3.1); a request naming no host at all is a 400 that never
/// reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn prx14_an_http2_request_without_authority_is_routed_by_its_host_or_refused_without_one() {
    let up = Upstream::start("h2").await;
    let gw = tls_gateway(&up.url());
    let own = format!("localhost:{}", gw.addr.port());
    assert_eq!(h2_status(gw.addr, "/public/by-host", &[&own]).await, 200);
    assert_eq!(up.requests().len(), 1);
    assert_eq!(h2_status(gw.addr, "/public/no-host", &[]).await, 400);
    assert_eq!(h2_status(gw.addr, "/public/junk", &["ad min"]).await, 400);
    assert_eq!(
        up.requests().len(),
        1,
        "a request naming no host reached the upstream"
    );
}

/// PRX-23 for trailers: an upstream's trailer fields reach an HTTP/2 client
/// without the gateway's cookies or hop-by-hop fields (the response head's
/// filters never saw them); other trailer fields pass.
#[tokio::test(flavor = "multi_thread")]
async fn prx23_an_upstream_s_trailers_reach_an_http2_client_without_cookies_or_hop_by_hop_fields() {
    let up = raw_upstream(|_, s| {
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum, set-cookie\r\n\r\n\
              2\r\nok\r\n0\r\nx-checksum: 42\r\nSet-Cookie: portcullis=evil; Path=/\r\nKeep-Alive: timeout=5\r\n\r\n",
        );
    });
    let gw = tls_gateway(&format!("http://{up}"));
    let (h2, connection) = h2::client::handshake(h2_tls(gw.addr).await).await.unwrap();
    tokio::spawn(connection);
    let req = http::Request::get(format!("https://localhost:{}/public/t", gw.addr.port()))
        .body(())
        .unwrap();
    let mut ready = h2.ready().await.unwrap();
    let (resp, _) = ready.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    assert_eq!(data, b"ok");
    let trailers = body.trailers().await.unwrap().expect("trailers");
    assert_eq!(
        trailers.get("x-checksum").map(|v| v.as_bytes()),
        Some(&b"42"[..])
    );
    assert!(trailers.get("set-cookie").is_none(), "{trailers:?}");
    assert!(trailers.get("keep-alive").is_none(), "{trailers:?}");
}

/// An HTTP/1.0 upstream's answer reaches an HTTP/1.1 client as the gateway's
/// own HTTP/1.1 (RFC 9110 §2.5: an intermediary sends its own version).
#[tokio::test(flavor = "multi_thread")]
async fn an_http1_0_upstream_s_answer_reaches_the_client_as_http1_1() {
    let up = raw_upstream(|_, s| {
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
    });
    let gw = open_gateway_at(up, "");
    let (answer, _) = raw_exchange(
        gw.addr,
        b"GET /old HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
}
