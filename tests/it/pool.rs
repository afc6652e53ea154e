//! The gateway's upstream connections (`gateway/pool.rs`): HTTP/2 to a TLS
//! upstream that offers it, a connection whose answer was not read to its
//! end never reused, a connection the upstream closed while idle never used.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::engine::{fixture, localhost_tls_offering};
use crate::support::{base_config, client, raw_exchange, Gateway};

/// Bytes of the long answer at `/big`: far more than one read or socket buffer.
const BIG: usize = 4 << 20;

/// How an upstream speaks.
#[derive(Clone, Copy)]
enum Speaks {
    /// HTTP/1.1 in the clear; it closes a keep-alive connection idle for this long.
    Http1 { idle_close: Duration },
    /// TLS offering `h2` by ALPN, then HTTP/2.
    Http2Tls,
}

/// An upstream counting its connections and recording each request's
/// version and path; `/big` answers `BIG` bytes of `b'x'`, `/echo` the
/// request body, `/who` its `X-Forwarded-User` values, `/fwd` its
/// forwarding headers' values, anything else "ok <path>".
struct Counted {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Version, path, and authority (HTTP/2's `:authority`) of each request.
    seen: Arc<Mutex<Vec<Seen>>>,
}

type Seen = (http::Version, String, Option<String>);

impl Counted {
    async fn start(speaks: Speaks) -> Counted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (accepted.clone(), seen.clone());
        let tls = h2_tls();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(log.clone(), req));
                    match speaks {
                        Speaks::Http1 { idle_close } => {
                            let mut h1 = hyper::server::conn::http1::Builder::new();
                            // hyper's head timer also runs between requests:
                            // an idle keep-alive connection is closed by it.
                            h1.timer(TokioTimer::new()).header_read_timeout(idle_close);
                            let _ = h1.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                        Speaks::Http2Tls => {
                            let Ok(tls) = tls.accept(tcp).await else {
                                return;
                            };
                            let h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                            let _ = h2.serve_connection(TokioIo::new(tls), svc).await;
                        }
                    }
                });
            }
        });
        Counted {
            addr,
            accepted,
            seen,
        }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(
    log: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let authority = req.uri().authority().map(|a| a.to_string());
    log.lock()
        .unwrap()
        .push((req.version(), path.clone(), authority));
    let body = if path == "/big" {
        Bytes::from(vec![b'x'; BIG])
    } else if path == "/who" {
        let users: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-user")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        Bytes::from(format!("user {}", users.join(",")))
    } else if path == "/fwd" {
        let values = |name: &str| -> String {
            let all: Vec<&str> = req
                .headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            all.join(",")
        };
        Bytes::from(format!(
            "for {} proto {} real {}",
            values("x-forwarded-for"),
            values("x-forwarded-proto"),
            values("x-real-ip")
        ))
    } else if path == "/echo" {
        use http_body_util::BodyExt;
        req.into_body().collect().await.unwrap().to_bytes()
    } else {
        Bytes::from(format!("ok {path}"))
    };
    Ok(Response::new(Full::new(body)))
}

/// The `localhost` leaf of the test CA, offering `h2` only.
fn h2_tls() -> tokio_rustls::TlsAcceptor {
    localhost_tls_offering(&[b"h2"])
}

/// A gateway with one app, public under `/`, in front of `upstream` (a URL).
fn gateway(upstream: &str, extra: &str) -> Gateway {
    Gateway::start_full(&format!(
        "{}\n[[app]]\nname = \"pooled\"\nupstream = \"{upstream}\"\npublic_paths = [\"/\"]\n{extra}",
        base_config()
    ))
}

/// An `https://` upstream on the test CA speaking HTTP/2 only, and a
/// gateway in front of it.
async fn behind_http2_upstream() -> (Counted, Gateway) {
    let up = Counted::start(Speaks::Http2Tls).await;
    let gw = gateway(
        &format!("https://localhost:{}", up.addr.port()),
        &format!(
            "upstream_ca_file = \"{}\"\n",
            fixture("test-ca.pem").display()
        ),
    );
    (up, gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_upstream_that_offers_http2_gets_the_requests_over_http2_on_few_connections() {
    let (up, gw) = behind_http2_upstream().await;
    let c = client();
    for i in 0..10 {
        let r = c.get(gw.url(&format!("/seq/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), format!("ok /seq/{i}"));
    }
    let all = (0..30).map(|i| {
        let c = c.clone();
        let url = gw.url(&format!("/par/{i}"));
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    });
    let bodies = futures_util::future::join_all(all).await;
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(body, &format!("ok /par/{i}"));
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 40);
    assert!(
        seen.iter().all(|(v, _, _)| *v == http::Version::HTTP_2),
        "not all over HTTP/2: {seen:?}"
    );
    // :authority is the Host the request was decided on, as an HTTP/1.1
    // upstream would get it in its Host line.
    let host = gw.url("/").replace("http://", "");
    let host = host.trim_end_matches('/');
    assert!(
        seen.iter().all(|(_, _, a)| a.as_deref() == Some(host)),
        "{seen:?}"
    );
    // One shared connection per worker, plus those a burst opened before
    // the first one was up: far fewer than the requests.
    assert!(
        up.connections() <= 8,
        "{} HTTP/2 connections for 40 requests",
        up.connections()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_s_identity_reaches_an_http2_upstream_once_with_a_body_or_without() {
    let up = Counted::start(Speaks::Http2Tls).await;
    let provider = crate::proxy::token_provider().await;
    let gw = Gateway::start_full(&format!(
        "{}\n[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\n\
         [[app]]\nname = \"guarded\"\nupstream = \"https://localhost:{}\"\nupstream_ca_file = \"{}\"\n\
         jwt_sources = [\"ci\"]\njwt_audiences = [\"guarded\"]\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        base_config(),
        provider.well_known_url(),
        up.addr.port(),
        fixture("test-ca.pem").display()
    ));
    let token = crate::proxy::token_with_groups(&provider, "root", &["admins"]);
    let c = client();
    // Without a body (the first makes the HTTP/2 connection, the others
    // reuse it), then with one (hyper's client on the same connection).
    for i in 0..3 {
        let r = c
            .get(gw.url("/who"))
            .bearer_auth(&token)
            .header("x-forwarded-user", "mallory")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), "user root", "request {i}");
    }
    let r = c
        .post(gw.url("/who"))
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "user root");
    let seen = up.seen();
    assert_eq!(seen.len(), 4);
    assert!(
        seen.iter().all(|(v, _, _)| *v == http::Version::HTTP_2),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_forwarding_headers_reach_an_http2_upstream_once_with_a_body_or_without() {
    let (up, gw) = behind_http2_upstream().await;
    let c = client();
    let want = "for 127.0.0.1 proto http real 127.0.0.1";
    for i in 0..2 {
        let r = c
            .get(gw.url("/fwd"))
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-real-ip", "6.6.6.6")
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), want, "request {i}");
    }
    let r = c
        .post(gw.url("/fwd"))
        .header("x-forwarded-proto", "https")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), want);
    assert!(up
        .seen()
        .iter()
        .all(|(v, _, _)| *v == http::Version::HTTP_2));
}

/// Sends `GET /big` on a raw connection, reads a little of the answer and
/// leaves: the rest of the body is still on its way.
fn leave_after_a_little(gw: &Gateway) {
    let addr = gw.url("/").replace("http://", "");
    let addr = addr.trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_the_client_did_not_read_to_its_end_never_becomes_the_next_answer() {
    let up = Counted::start(Speaks::Http1 {
        idle_close: Duration::from_secs(60),
    })
    .await;
    let gw = gateway(&format!("http://{}", up.addr), "");
    for round in 0..5 {
        leave_after_a_little(&gw);
        let r = client()
            .get(gw.url(&format!("/after/{round}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        assert_eq!(r.text().await.unwrap(), format!("ok /after/{round}"));
    }
    // Whole answers do leave their connection for the next request.
    let before = up.connections();
    let c = client();
    for i in 0..20 {
        let r = c.get(gw.url(&format!("/whole/{i}"))).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), format!("ok /whole/{i}"));
    }
    assert!(
        up.connections() - before <= 2,
        "{} new connections for 20 sequential requests",
        up.connections() - before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_and_the_request_is_answered() {
    let up = Counted::start(Speaks::Http1 {
        idle_close: Duration::from_millis(150),
    })
    .await;
    let gw = gateway(&format!("http://{}", up.addr), "");
    let c = client();
    for i in 0..4 {
        let r = c.get(gw.url(&format!("/gap/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), format!("ok /gap/{i}"));
        // Longer than the upstream keeps an idle connection.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(up.seen().len(), 4);
    assert!(up.connections() >= 4, "a closed connection was reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_with_userinfo_never_becomes_the_http2_authority() {
    let (up, gw) = behind_http2_upstream().await;
    let (answer, _) = raw_exchange(
        gw.addr,
        b"GET /who HTTP/1.1\r\nHost: attacker@evil.example\r\nConnection: close\r\n\r\n",
    );
    // RFC 9112 §3.2: a Host that is no host name (`@` is not in one) is a
    // 400; before the gateway checked it (PRX-14), this request was
    // answered and only the authority was kept clean.
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let seen = up.seen();
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_of_megabytes_pass_whole_both_ways_and_leave_the_connection_reusable() {
    let up = Counted::start(Speaks::Http1 {
        idle_close: Duration::from_secs(60),
    })
    .await;
    let gw = gateway(&format!("http://{}", up.addr), "");
    let c = client();
    // Not one byte value: a reordered or repeated chunk would show.
    let sent: Vec<u8> = (0..BIG as u32).map(|i| (i % 251) as u8).collect();
    for round in 0..3 {
        let r = c
            .post(gw.url("/echo"))
            .body(sent.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        let back = r.bytes().await.unwrap();
        assert_eq!(back.len(), sent.len(), "round {round}");
        assert!(back[..] == sent[..], "round {round}: the echo differs");
        let big = c.get(gw.url("/big")).send().await.unwrap();
        let big = big.bytes().await.unwrap();
        assert_eq!(big.len(), BIG, "round {round}");
        assert!(big.iter().all(|b| *b == b'x'), "round {round}");
    }
    assert!(
        up.connections() <= 2,
        "{} upstream connections for 6 sequential requests",
        up.connections()
    );
}

/// An upstream that answers every request chunked, asks to close and
/// names a hop-by-hop field, yet keeps the connection open and answers
/// whatever else comes on it; counts its connections.
fn closing_chunked_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let mut s = s.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || loop {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).unwrap_or(0) != 1 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nKeep-Alive: timeout=5\r\n\
Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
                if s.write_all(answer).is_err() {
                    return;
                }
            });
        }
    });
    (addr, accepted)
}

/// Reads one answer of `s` whose body ends with the last chunk; its head and all.
fn read_chunked_answer(s: &mut std::net::TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.ends_with(b"0\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_asks_to_close_leaves_the_client_s_connection_open_and_its_framing_is_the_gateway_s(
) {
    let (addr, accepted) = closing_chunked_upstream();
    let gw = gateway(&format!("http://{addr}"), "");
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for round in 1..=2 {
        s.write_all(b"GET /a HTTP/1.1\r\nHost: pooled.example\r\n\r\n")
            .unwrap();
        let answer = read_chunked_answer(&mut s);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "round {round}: {answer}"
        );
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .to_ascii_lowercase();
        assert!(!head.contains("connection:"), "round {round}: {head}");
        assert!(!head.contains("keep-alive:"), "round {round}: {head}");
        assert_eq!(
            head.matches("transfer-encoding:").count(),
            1,
            "round {round}: {head}"
        );
        assert!(
            answer.contains("\r\n5\r\nhello\r\n0\r\n\r\n"),
            "round {round}: {answer}"
        );
    }
    // The upstream asked to close: its connection, though open, was not reused.
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_upstream_answer_reaches_an_http_1_0_client_unchunked() {
    let (addr, _) = closing_chunked_upstream();
    let gw = gateway(&format!("http://{addr}"), "");
    let (answer, closed) =
        raw_exchange(gw.addr, b"GET /a HTTP/1.0\r\nHost: pooled.example\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert_eq!(body, "hello");
    assert!(closed, "the HTTP/1.0 client's connection stayed open");
}
