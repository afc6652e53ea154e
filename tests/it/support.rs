//! Test harness: an echo upstream that records what it receives, a WebSocket
//! echo, config files in temp dirs, and the gateway started on 127.0.0.1:0.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A valid session secret (32 bytes, base64), used only by the tests: never
/// put it in the README, config/ or docs (the example-secret scan would refuse it).
pub const SECRET: &str = "feeQnjJyhqAI92I28IgVDanqRnYHerVyw+5HfOJDMK8=";

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    /// Header names as received (lower-case, hyper normalises), with values.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 upstream that records every request and answers 200 with a
/// body naming itself; `/slow` waits before answering. It also counts the TCP
/// connections it accepted (connection reuse).
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<AtomicUsize>,
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        Self::serve(name, None).await
    }

    /// The same upstream behind TLS (an `https://` upstream).
    pub async fn start_tls(name: &'static str, tls: tokio_rustls::TlsAcceptor) -> Upstream {
        Self::serve(name, Some(tls)).await
    }

    async fn serve(name: &'static str, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let log = seen.clone();
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| record_and_answer(name, log.clone(), req));
                    let h1 = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = h1.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            let _ = h1.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            seen,
            accepted,
        }
    }

    /// How many TCP connections the upstream has accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// The echo upstream's answer: records the request, then 200 naming `name`.
async fn record_and_answer(
    name: &'static str,
    log: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    log.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    });
    if parts.uri.path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let resp = Response::builder()
        .header("x-upstream", name)
        .body(Full::new(Bytes::from(format!("hello from {name}"))))
        .unwrap();
    Ok(resp)
}

/// A WebSocket server that echoes every message.
pub async fn websocket_echo() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    addr
}

/// A config file in its own temp dir.
pub struct ConfigFile {
    pub _dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// Writes `body` as a config file.
pub fn config_file(body: &str) -> ConfigFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, body).unwrap();
    ConfigFile { _dir: dir, path }
}

/// The common top of a test config: ephemeral listeners, a valid secret.
pub fn base_config() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8080"
threads = 1
shutdown_timeout = "2s"

[session]
secrets = ["{SECRET}"]

[store]
url = "sqlite::memory:"
"#
    )
}

/// A gateway running in-process.
pub struct Gateway {
    pub running: Option<portcullis::app::Running>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    _config: ConfigFile,
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    // A port the kernel picks for `:0` comes from ip_local_port_range, the
    // range outgoing connections take theirs from: a test's own connections
    // (to its provider, its upstream) could take it before the gateway
    // binds it ("Address already in use"). Below that range only another
    // pick of this process could, and picks here never repeat.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    const BASE: u32 = 10_000;
    if low > BASE + 1_000 {
        let span = low - BASE;
        let seed = std::process::id();
        for _ in 0..span {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let port = BASE + (seed.wrapping_add(n.wrapping_mul(7_919))) % span;
            if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return port as u16;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Gateway {
    /// Starts the gateway with `base_config()` followed by `rest`.
    pub fn start(rest: &str) -> Gateway {
        Self::start_full(&format!("{}{rest}", base_config()))
    }

    /// Starts the gateway with exactly this config.
    pub fn start_full(body: &str) -> Gateway {
        Self::start_full_on(body, portcullis::clock::Clock::system())
    }

    /// Starts the gateway with exactly this config, reading the time from
    /// `clock` (a test's manual clock, advanced instead of sleeping).
    pub fn start_full_on(body: &str, clock: portcullis::clock::Clock) -> Gateway {
        let file = config_file(body);
        let config = portcullis::config::load_with_env(&file.path, Vec::new())
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let running = portcullis::app::spawn_with_clock(config, clock).unwrap();
        Gateway {
            addr: running.bound.listen,
            admin: running.bound.admin.unwrap(),
            running: Some(running),
            _config: file,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits (up to 10 s) until `/readyz` says every source is ready: on a
    /// loaded machine discovery can miss its first try and be retried.
    pub async fn ready(&self) {
        for _ in 0..100 {
            let ready = client()
                .get(self.admin_url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.begin_shutdown();
        }
    }
}

/// A client that never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Sends raw bytes and returns everything the gateway answers until it closes
/// the connection (or 3 s pass).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}
