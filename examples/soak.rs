//! The load driver of `benches/soak.sh`: starts the demo OpenID provider, the
//! echo app and a WebSocket echo in this process, runs the gateway binary in
//! front of them, sends mixed traffic at a bounded rate and samples the
//! gateway's RSS, open fds and p99 latency into a CSV.
//!
//! Every class of traffic states the answer it intends (a refusal is intended
//! where the class is a refusal); anything else is counted as unintended and
//! described in `errors.txt`. The pass criteria are checked by the script.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use portcullis::demo::provider::Provider;
use portcullis::demo::ProviderConfig;
use rand::RngCore as _;
use serde_json::{json, Map};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// Mixed traffic against a release gateway; see benches/soak.sh.
#[derive(Parser)]
struct Args {
    /// The gateway binary.
    #[arg(long)]
    bin: PathBuf,
    /// Working directory: config, store, gateway log, samples.csv, summary.txt, errors.txt.
    #[arg(long)]
    dir: PathBuf,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 10)]
    sample: u64,
    /// Multiplies the rate of every class (1.0: about 150 requests/s in all).
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// Lifetime of the fresh bearer tokens, in seconds (the verdict cache keeps them this long).
    #[arg(long, default_value_t = 60)]
    token_ttl: u64,
    /// Run the gateway under `taskset -c LIST`.
    #[arg(long)]
    gateway_cpus: Option<String>,
    /// Operations in flight at most; a tick that finds none free is counted as skipped.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Seconds to wait after the traffic (clients dropped) before the last reading:
    /// past the gateway's 60 s idle timeouts (client connections, upstream pool) lets
    /// the reading show whether everything the traffic opened was closed.
    #[arg(long, default_value_t = 130)]
    quiesce: u64,
    /// Run only these classes (comma-separated names, e.g. `sign_in,websocket`):
    /// to find which kind of traffic makes a figure move. Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

impl Args {
    /// Whether `class` runs in this soak (`--only`).
    fn runs(&self, class: Class) -> bool {
        self.only.is_empty() || self.only.iter().any(|n| n == class.name())
    }
}

/// One kind of traffic: its name, its rate (operations per second at scale
/// 1) and what one operation does and expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// A signed-in session (cookie) on a protected path: 200 with the user's identity.
    Session,
    /// One bearer token over and over (verdict cache hit): 200.
    BearerHit,
    /// A freshly minted bearer token each time (signature verified): 200.
    BearerFresh,
    /// A public path without credentials: 200.
    Public,
    /// A full sign-in: login start, the provider's page and form, callback,
    /// the app; the callback replayed (400); every other one signs out (then 401).
    SignIn,
    /// A WebSocket through the gateway with a session: 101, five echoes, close.
    WebSocket,
    /// Refused on purpose: a bad bearer token (bit-flipped, expired, foreign audience): 401 invalid_token.
    BadToken,
    /// Refused on purpose: a session without the group an `/admin` rule needs: 403.
    Forbidden,
    /// Refused on purpose: a browser without a session: 302 to the sign-in page.
    AnonBrowser,
    /// Refused on purpose: an API client without credentials: 401 with `WWW-Authenticate`.
    AnonApi,
    /// Refused on purpose: an encoded backslash or NUL in the path: 400.
    BadPath,
    /// Refused on purpose: a WebSocket upgrade without a session: 401.
    WebSocketAnon,
}

impl Class {
    const ALL: [Class; 12] = [
        Class::Session,
        Class::BearerHit,
        Class::BearerFresh,
        Class::Public,
        Class::SignIn,
        Class::WebSocket,
        Class::BadToken,
        Class::Forbidden,
        Class::AnonBrowser,
        Class::AnonApi,
        Class::BadPath,
        Class::WebSocketAnon,
    ];

    fn name(self) -> &'static str {
        match self {
            Class::Session => "session",
            Class::BearerHit => "bearer_hit",
            Class::BearerFresh => "bearer_fresh",
            Class::Public => "public",
            Class::SignIn => "sign_in",
            Class::WebSocket => "websocket",
            Class::BadToken => "refused_bad_token",
            Class::Forbidden => "refused_forbidden",
            Class::AnonBrowser => "refused_anon_browser",
            Class::AnonApi => "refused_anon_api",
            Class::BadPath => "refused_bad_path",
            Class::WebSocketAnon => "refused_websocket_anon",
        }
    }

    /// Operations per second at rate scale 1 (about 150 gateway requests/s in all).
    fn rate(self) -> f64 {
        match self {
            Class::Session => 60.0,
            Class::BearerHit => 30.0,
            Class::BearerFresh => 10.0,
            Class::Public => 20.0,
            Class::SignIn => 1.0,
            Class::WebSocket => 1.0,
            Class::BadToken => 6.0,
            Class::Forbidden => 4.0,
            Class::AnonBrowser => 3.0,
            Class::AnonApi => 3.0,
            Class::BadPath => 2.0,
            Class::WebSocketAnon => 0.5,
        }
    }
}

/// Counts of one class.
#[derive(Default)]
struct Tally {
    ops: u64,
    intended: u64,
    unintended: u64,
    skipped: u64,
    /// Status of every gateway response (0: no response: a transport error or timeout).
    statuses: BTreeMap<u16, u64>,
}

/// What the traffic did: per class, and the current sampling window.
struct Stats {
    started: Instant,
    tallies: Mutex<BTreeMap<Class, Tally>>,
    /// Latencies (ms) of the gateway requests since the last sample.
    window: Mutex<Vec<f64>>,
    window_unintended: AtomicU64,
    window_skipped: AtomicU64,
    /// The first unintended outcomes, described.
    errors: Mutex<Vec<String>>,
}

/// Unintended outcomes described in errors.txt at most (all are counted).
const MAX_ERRORS_KEPT: usize = 200;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stats {
    fn new() -> Self {
        Stats {
            started: Instant::now(),
            tallies: Mutex::new(BTreeMap::new()),
            window: Mutex::new(Vec::new()),
            window_unintended: AtomicU64::new(0),
            window_skipped: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
        }
    }

    fn response(&self, class: Class, status: u16, latency: Duration) {
        *lock(&self.tallies)
            .entry(class)
            .or_default()
            .statuses
            .entry(status)
            .or_default() += 1;
        lock(&self.window).push(latency.as_secs_f64() * 1000.0);
    }

    fn outcome(&self, class: Class, outcome: &Result<(), String>) {
        {
            let mut tallies = lock(&self.tallies);
            let tally = tallies.entry(class).or_default();
            tally.ops += 1;
            match outcome {
                Ok(()) => tally.intended += 1,
                Err(_) => tally.unintended += 1,
            }
        }
        if let Err(detail) = outcome {
            self.window_unintended.fetch_add(1, Ordering::Relaxed);
            let mut errors = lock(&self.errors);
            if errors.len() < MAX_ERRORS_KEPT {
                errors.push(format!(
                    "t={:.1}s {}: {detail}",
                    self.started.elapsed().as_secs_f64(),
                    class.name()
                ));
            }
        }
    }

    fn skipped(&self, class: Class) {
        lock(&self.tallies).entry(class).or_default().skipped += 1;
        self.window_skipped.fetch_add(1, Ordering::Relaxed);
    }
}

/// A gateway answer, body read.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// `name=value` of every cookie this answer sets (not the ones it clears).
    fn cookies_set(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !v.to_ascii_lowercase().contains("max-age=0"))
            .filter_map(|v| v.split(';').next())
            .map(str::to_string)
            .collect()
    }

    /// `expected` status, else the step's failure described.
    fn expect(&self, step: &str, expected: &[u16]) -> Result<(), String> {
        if expected.contains(&self.status) {
            Ok(())
        } else {
            let body: String = self.body.chars().take(200).collect();
            Err(format!(
                "{step}: status {} (intended {expected:?}); body: {body}",
                self.status
            ))
        }
    }
}

/// What every operation shares.
struct Ctx {
    base: String,
    origin: String,
    ws_base: String,
    client: reqwest::Client,
    provider: Provider,
    issuer: String,
    alice: Vec<String>,
    bob: Vec<String>,
    hit_token: String,
    token_ttl: u64,
    counter: AtomicU64,
    stats: Arc<Stats>,
}

const AUDIENCE: &str = "soak";

fn no_redirect_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .context("building an HTTP client")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Ctx {
    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// One gateway request, timed and counted under `class`.
    async fn call(&self, class: Class, request: reqwest::RequestBuilder) -> Result<Answer, String> {
        let t = Instant::now();
        let sent = request.send().await;
        let answer = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                match resp.text().await {
                    Ok(body) => Ok(Answer {
                        status,
                        headers,
                        body,
                    }),
                    Err(e) => Err(format!("reading the body of a {status}: {e}")),
                }
            }
            Err(e) => Err(format!("no answer: {e}")),
        };
        let status = answer.as_ref().map_or(0, |a| a.status);
        self.stats.response(class, status, t.elapsed());
        answer
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn pick<'a>(&self, pool: &'a [String], n: u64) -> &'a str {
        let len = pool.len().max(1) as u64;
        usize::try_from(n % len)
            .ok()
            .and_then(|i| pool.get(i))
            .map_or("", String::as_str)
    }

    /// A token of the provider's signing key; `exp_offset` from now, `aud` as given.
    fn mint(&self, sub: &str, aud: &str, exp_offset: i64) -> Result<String, String> {
        let now = unix_now();
        let exp = now.saturating_add_signed(exp_offset);
        let mut c = Map::new();
        c.insert("iss".into(), json!(self.issuer));
        c.insert("sub".into(), json!(sub));
        c.insert("aud".into(), json!(aud));
        c.insert("iat".into(), json!(now));
        c.insert("exp".into(), json!(exp));
        c.insert("jti".into(), json!(self.next()));
        self.provider
            .sign(&c)
            .ok_or_else(|| "the provider could not sign a token".to_string())
    }

    async fn run(&self, class: Class) -> Result<(), String> {
        let n = self.next();
        match class {
            Class::Session => {
                let a = self
                    .call(
                        class,
                        self.client
                            .get(self.url(&format!("/app/item/{n}?q={n}")))
                            .header("accept", "application/json")
                            .header("cookie", self.pick(&self.alice, n)),
                    )
                    .await?;
                a.expect("session", &[200])?;
                if !a.body.contains("alice@example.com") {
                    return Err("session: the app did not see alice's identity".into());
                }
                Ok(())
            }
            Class::BearerHit => {
                let a = self
                    .call(
                        class,
                        self.client
                            .get(self.url(&format!("/api/hit/{n}")))
                            .bearer_auth(&self.hit_token),
                    )
                    .await?;
                a.expect("bearer hit", &[200])
            }
            Class::BearerFresh => {
                let token = self.mint(&format!("machine-{n}"), AUDIENCE, self.ttl())?;
                let a = self
                    .call(
                        class,
                        self.client
                            .get(self.url(&format!("/api/fresh/{n}")))
                            .bearer_auth(token),
                    )
                    .await?;
                a.expect("fresh bearer", &[200])
            }
            Class::Public => {
                let a = self
                    .call(class, self.client.get(self.url(&format!("/public/{n}"))))
                    .await?;
                a.expect("public", &[200])
            }
            Class::SignIn => self.sign_in(class, n).await,
            Class::WebSocket => self.websocket(n).await,
            Class::BadToken => {
                let token = match n % 3 {
                    0 => flip_signature(&self.mint("machine-bad", AUDIENCE, self.ttl())?),
                    1 => self.mint("machine-expired", AUDIENCE, -600)?,
                    _ => self.mint("machine-foreign", "someone-else", self.ttl())?,
                };
                let a = self
                    .call(
                        class,
                        self.client
                            .get(self.url(&format!("/api/bad/{n}")))
                            .bearer_auth(token),
                    )
                    .await?;
                a.expect("bad token", &[401])?;
                if !a.header("www-authenticate").contains("invalid_token") {
                    return Err(format!(
                        "bad token: WWW-Authenticate without invalid_token: {:?}",
                        a.header("www-authenticate")
                    ));
                }
                Ok(())
            }
            Class::Forbidden => {
                let a = self
                    .call(
                        class,
                        self.client
                            .get(self.url(&format!("/admin/{n}")))
                            .header("accept", "application/json")
                            .header("cookie", self.pick(&self.bob, n)),
                    )
                    .await?;
                a.expect("forbidden", &[403])
            }
            Class::AnonBrowser => {
                let a = self
                    .call(
                        class,
                        self.client
                            .get(self.url(&format!("/private/{n}")))
                            .header("accept", "text/html"),
                    )
                    .await?;
                a.expect("anonymous browser", &[302])?;
                if !a.header("location").starts_with("/_auth/sign_in?rd=") {
                    return Err(format!(
                        "anonymous browser: sent to {:?}",
                        a.header("location")
                    ));
                }
                Ok(())
            }
            Class::AnonApi => {
                let a = self
                    .call(
                        class,
                        self.client
                            .get(self.url(&format!("/api/anon/{n}")))
                            .header("accept", "application/json"),
                    )
                    .await?;
                a.expect("anonymous API", &[401])?;
                if !a.header("www-authenticate").starts_with("Bearer") {
                    return Err("anonymous API: no Bearer challenge".into());
                }
                Ok(())
            }
            Class::BadPath => {
                let path = if n % 2 == 0 {
                    format!("/public/a%5C{n}")
                } else {
                    format!("/public/a%00{n}")
                };
                let a = self.call(class, self.client.get(self.url(&path))).await?;
                a.expect("bad path", &[400])
            }
            Class::WebSocketAnon => {
                let t = Instant::now();
                let url = format!("{}/live/feed/{n}", self.ws_base);
                let mut req = url
                    .into_client_request()
                    .map_err(|e| format!("websocket request: {e}"))?;
                req.headers_mut()
                    .insert("origin", header_value(&self.origin)?);
                let result = tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio_tungstenite::connect_async(req),
                )
                .await;
                match result {
                    Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                        let status = resp.status().as_u16();
                        self.stats.response(class, status, t.elapsed());
                        if status == 401 {
                            Ok(())
                        } else {
                            Err(format!("anonymous upgrade: status {status} (intended 401)"))
                        }
                    }
                    Ok(Ok((_socket, resp))) => {
                        self.stats
                            .response(class, resp.status().as_u16(), t.elapsed());
                        Err("anonymous upgrade was let through".into())
                    }
                    Ok(Err(e)) => {
                        self.stats.response(class, 0, t.elapsed());
                        Err(format!("anonymous upgrade: {e}"))
                    }
                    Err(_) => {
                        self.stats.response(class, 0, t.elapsed());
                        Err("anonymous upgrade: no answer in 10 s".into())
                    }
                }
            }
        }
    }

    fn ttl(&self) -> i64 {
        i64::try_from(self.token_ttl).unwrap_or(i64::MAX)
    }

    /// A browser's sign-in from scratch (its own client: new connections).
    async fn sign_in(&self, class: Class, n: u64) -> Result<(), String> {
        let user = if n % 4 == 3 { "bob" } else { "alice" };
        let (session, _) = self.sign_in_as(class, user, n, true).await?;
        if n % 2 == 0 {
            // Sign out (same-origin POST), then the old cookie is refused.
            let browser = no_redirect_client().map_err(|e| e.to_string())?;
            let out = self
                .call(
                    class,
                    browser
                        .post(self.url("/_auth/sign_out?rd=/"))
                        .header("origin", &self.origin)
                        .header("cookie", &session),
                )
                .await?;
            out.expect("sign out", &[302, 303])?;
            let after = self
                .call(
                    class,
                    browser
                        .get(self.url(&format!("/app/after-sign-out/{n}")))
                        .header("accept", "application/json")
                        .header("cookie", &session),
                )
                .await?;
            after.expect("the cookie after sign-out", &[401])?;
        }
        Ok(())
    }

    /// Login start → the provider's page → its form → callback → the app.
    /// With `replay`, the callback is sent again with its login cookie (400).
    /// Returns the session cookie (`portcullis=…`) and the user it belongs to.
    async fn sign_in_as(
        &self,
        class: Class,
        user: &str,
        n: u64,
        replay: bool,
    ) -> Result<(String, String), String> {
        let browser = no_redirect_client().map_err(|e| e.to_string())?;
        let rd = format!("/signed-in/{n}");
        let start = self
            .call(
                class,
                browser
                    .get(self.url(&format!("/_auth/login/demo?rd={rd}")))
                    .header("accept", "text/html"),
            )
            .await?;
        start.expect("login start", &[302])?;
        let login_cookie = start.cookies_set().join("; ");
        let authorize = start.header("location").to_string();
        if !authorize.starts_with(&self.issuer) {
            return Err(format!("login start: sent to {authorize:?}"));
        }
        // The provider (not the gateway: not counted).
        let page = browser
            .get(&authorize)
            .send()
            .await
            .map_err(|e| format!("provider page: {e}"))?;
        if page.status() != 200 {
            return Err(format!("provider page: status {}", page.status()));
        }
        let _ = page.text().await;
        let mut form: Vec<(String, String)> = url::Url::parse(&authorize)
            .map_err(|e| format!("authorize URL: {e}"))?
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        form.push(("user".into(), user.into()));
        let approved = browser
            .post(format!("{}/authorize", self.issuer))
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("provider form: {e}"))?;
        if approved.status() != 302 {
            return Err(format!("provider form: status {}", approved.status()));
        }
        let callback = approved
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let done = self
            .call(
                class,
                browser
                    .get(&callback)
                    .header("accept", "text/html")
                    .header("cookie", &login_cookie),
            )
            .await?;
        done.expect("callback", &[302])?;
        if done.header("location") != rd {
            return Err(format!("callback: sent to {:?}", done.header("location")));
        }
        let Some(session) = done
            .cookies_set()
            .into_iter()
            .find(|c| c.starts_with("portcullis="))
        else {
            return Err("callback: no session cookie".into());
        };
        let app = self
            .call(
                class,
                browser
                    .get(self.url(&rd))
                    .header("accept", "application/json")
                    .header("cookie", &session),
            )
            .await?;
        app.expect("the app after sign-in", &[200])?;
        if !app.body.contains(&format!("{user}@example.com")) {
            return Err(format!("the app after sign-in did not see {user}"));
        }
        if replay {
            let again = self
                .call(
                    class,
                    browser
                        .get(&callback)
                        .header("accept", "text/html")
                        .header("cookie", &login_cookie),
                )
                .await?;
            again.expect("the callback replayed", &[400])?;
        }
        Ok((session, user.to_string()))
    }

    /// A WebSocket through the gateway: five echoes, then a clean close.
    async fn websocket(&self, n: u64) -> Result<(), String> {
        let class = Class::WebSocket;
        let t = Instant::now();
        let url = format!("{}/live/feed/{n}", self.ws_base);
        let mut req = url
            .into_client_request()
            .map_err(|e| format!("websocket request: {e}"))?;
        req.headers_mut()
            .insert("origin", header_value(&self.origin)?);
        req.headers_mut()
            .insert("cookie", header_value(self.pick(&self.alice, n))?);
        let connected = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(req),
        )
        .await;
        let mut socket = match connected {
            Ok(Ok((socket, resp))) => {
                self.stats
                    .response(class, resp.status().as_u16(), t.elapsed());
                socket
            }
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                self.stats.response(class, status, t.elapsed());
                return Err(format!("upgrade: status {status} (intended 101)"));
            }
            Ok(Err(e)) => {
                self.stats.response(class, 0, t.elapsed());
                return Err(format!("upgrade: {e}"));
            }
            Err(_) => {
                self.stats.response(class, 0, t.elapsed());
                return Err("upgrade: no answer in 10 s".into());
            }
        };
        let exchange = async {
            for i in 0..5 {
                let msg = Message::text(format!("soak {n} message {i}"));
                socket
                    .send(msg.clone())
                    .await
                    .map_err(|e| format!("send {i}: {e}"))?;
                match socket.next().await {
                    Some(Ok(echoed)) if echoed == msg => {}
                    other => return Err(format!("echo {i}: {other:?}")),
                }
            }
            socket
                .close(None)
                .await
                .map_err(|e| format!("close: {e}"))?;
            // Drain until the close is answered.
            while let Some(frame) = socket.next().await {
                if frame.is_err() {
                    break;
                }
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| "websocket exchange: not done in 10 s".to_string())?
    }
}

fn header_value(v: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(v).map_err(|e| format!("header value: {e}"))
}

/// The token with one bit of its signature changed.
fn flip_signature(token: &str) -> String {
    let Some((head, sig)) = token.rsplit_once('.') else {
        return format!("{token}x");
    };
    let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap_or_default();
    if let Some(b) = bytes.first_mut() {
        *b ^= 0x01;
    }
    format!(
        "{head}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A WebSocket echo upstream (text and binary messages sent back).
async fn websocket_echo() -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// The gateway's resident set (KiB), open fds and threads, from /proc.
fn reading(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (has the gateway exited?)"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))
    };
    let rss = field("VmRSS:")?;
    let threads = field("Threads:")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .count() as u64;
    Ok((rss, fds, threads))
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

const CSV_HEADER: &str =
    "elapsed_s,phase,rss_kib,fds,threads,requests,p50_ms,p99_ms,unintended,skipped";

/// One CSV row: a /proc reading and the window's latencies.
fn sample_row(pid: u32, elapsed: u64, phase: &str, stats: &Stats) -> anyhow::Result<String> {
    let (rss, fds, threads) = reading(pid)?;
    let mut lat = std::mem::take(&mut *lock(&stats.window));
    lat.sort_by(f64::total_cmp);
    let fmt = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.3}"));
    Ok(format!(
        "{elapsed},{phase},{rss},{fds},{threads},{},{},{},{},{}",
        lat.len(),
        fmt(percentile(&lat, 0.50)),
        fmt(percentile(&lat, 0.99)),
        stats.window_unintended.swap(0, Ordering::Relaxed),
        stats.window_skipped.swap(0, Ordering::Relaxed),
    ))
}

/// The gateway as a child process; stopped (SIGTERM, then SIGKILL) on drop.
struct Gateway {
    child: Child,
}

impl Gateway {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, up to 10 s for a clean exit, then SIGKILL. The exit status, if any.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_config(
    dir: &Path,
    port: u16,
    admin: u16,
    provider: &Provider,
    echo: &str,
    ws: &str,
) -> anyhow::Result<PathBuf> {
    let client = provider
        .config()
        .clients
        .first()
        .ok_or_else(|| anyhow!("the demo provider has no client"))?;
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let secret = base64::engine::general_purpose::STANDARD.encode(secret);
    let config = format!(
        r#"# Written by examples/soak.rs for one soak run.
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
public_url = "http://127.0.0.1:{port}"
shutdown_timeout = "5s"

[session]
secrets = ["{secret}"]

[store]
url = "sqlite://{db}"

[[source]]
slug = "demo"
name = "Demo IdP"
type = "openidconnect"
consumer_key = "{client_id}"
consumer_secret = "{client_secret}"
oidc_well_known_url = "{well_known}"

# Sessions, bearer tokens of the same provider, public paths; /admin for admins only.
[[app]]
name = "soak"
upstream = "{echo}"
sources = ["demo"]
jwt_sources = ["demo"]
jwt_audiences = ["{AUDIENCE}"]
public_paths = ["/public/"]

[[app.policy]]
on = ["access"]
effect = "allow"

[[app.policy]]
on = ["access"]
effect = "allow"
path_prefix = "/admin"
groups = ["admins"]

# WebSockets.
[[app]]
name = "live"
path_prefix = "/live"
upstream = "http://{ws}"
sources = ["demo"]

[[app.policy]]
on = ["access"]
effect = "allow"
"#,
        db = dir.join("soak.db").display(),
        client_id = client.client_id,
        client_secret = client.client_secret,
        well_known = provider.well_known_url(),
    );
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn spawn_gateway(args: &Args, config: &Path) -> anyhow::Result<Gateway> {
    let log_path = args.dir.join("gateway.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let log2 = log.try_clone()?;
    let mut cmd = match &args.gateway_cpus {
        Some(cpus) => {
            // taskset execs the gateway: the child's pid is the gateway's.
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(&args.bin);
            c
        }
        None => Command::new(&args.bin),
    };
    // PORTCULLIS_* variables would override the generated config.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PORTCULLIS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(["--log-format", "json"])
        .current_dir(&args.dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", args.bin.display()))?;
    let gateway = Gateway { child };
    std::fs::write(args.dir.join("gateway.pid"), gateway.pid().to_string())?;
    Ok(gateway)
}

async fn wait_ready(gateway: &mut Gateway, admin: u16) -> anyhow::Result<()> {
    let client = no_redirect_client()?;
    let url = format!("http://127.0.0.1:{admin}/readyz");
    for _ in 0..300 {
        if let Ok(Some(status)) = gateway.child.try_wait() {
            bail!("the gateway exited before it was ready ({status}); see gateway.log");
        }
        if client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the gateway was not ready within 30 s ({url}); see gateway.log")
}

/// One `class=… planned=… ops=…` line per class (the script reads them).
fn summary(stats: &Stats, args: &Args) -> String {
    let tallies = lock(&stats.tallies);
    let empty = Tally::default();
    let mut out = String::new();
    for class in Class::ALL {
        let t = tallies.get(&class).unwrap_or(&empty);
        let rate = if args.runs(class) { class.rate() } else { 0.0 };
        let planned = (rate * args.rate_scale * args.duration as f64).floor();
        let responses: Vec<String> = t.statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
        let _ = writeln!(
            out,
            "class={} planned={planned} ops={} intended={} unintended={} skipped={} responses={}",
            class.name(),
            t.ops,
            t.intended,
            t.unintended,
            t.skipped,
            responses.join(",")
        );
    }
    out
}

/// `0`, `1`, … for an exit code, `signal-15` for a signal, `killed` when it had to be.
fn exit_word(exit: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match exit {
        None => "killed".to_string(),
        Some(s) => s.code().map_or_else(
            || format!("signal-{}", s.signal().unwrap_or(0)),
            |c| c.to_string(),
        ),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.duration == 0 || args.sample == 0 {
        bail!("--duration and --sample must be at least 1 second");
    }
    if let Some(unknown) = args
        .only
        .iter()
        .find(|n| !Class::ALL.iter().any(|c| c.name() == n.as_str()))
    {
        let names: Vec<&str> = Class::ALL.iter().map(|c| c.name()).collect();
        bail!(
            "--only: no class named '{unknown}' (classes: {})",
            names.join(", ")
        );
    }
    if !(args.rate_scale > 0.0 && args.rate_scale.is_finite()) {
        bail!("--rate-scale must be a positive number");
    }
    std::fs::create_dir_all(&args.dir)?;
    let port = free_port()?;
    let admin = free_port()?;
    let base = format!("http://127.0.0.1:{port}");

    let provider = portcullis::demo::provider::start(
        TcpListener::bind("127.0.0.1:0").await?,
        ProviderConfig::example(&format!("{base}/_auth/callback/demo"))?,
    )
    .await;
    let echo = portcullis::demo::echo::start(TcpListener::bind("127.0.0.1:0").await?).await;
    let ws = websocket_echo().await?;
    let config = write_config(
        &args.dir,
        port,
        admin,
        &provider,
        &echo.url(),
        &ws.to_string(),
    )?;
    let mut gateway = spawn_gateway(&args, &config)?;
    wait_ready(&mut gateway, admin).await?;
    let pid = gateway.pid();
    eprintln!("[soak] gateway pid {pid} ready on {base}");

    let stats = Arc::new(Stats::new());
    let mut ctx = Ctx {
        base: base.clone(),
        origin: base.clone(),
        ws_base: format!("ws://127.0.0.1:{port}"),
        client: no_redirect_client()?,
        issuer: provider.issuer(),
        provider,
        alice: Vec::new(),
        bob: Vec::new(),
        hit_token: String::new(),
        token_ttl: args.token_ttl,
        counter: AtomicU64::new(0),
        stats: Arc::clone(&stats),
    };
    // The sessions the traffic uses: 16 of alice's, 4 of bob's.
    for i in 0..20 {
        let user = if i % 5 == 4 { "bob" } else { "alice" };
        let (cookie, _) = ctx
            .sign_in_as(Class::SignIn, user, 1_000_000 + i, false)
            .await
            .map_err(|e| anyhow!("signing in {user} before the soak: {e}"))?;
        if user == "bob" {
            ctx.bob.push(cookie);
        } else {
            ctx.alice.push(cookie);
        }
    }
    ctx.hit_token = ctx
        .mint("machine-hit", AUDIENCE, 4 * 3600)
        .map_err(|e| anyhow!("minting the repeated token: {e}"))?;
    // The setup's requests are not part of the soak's figures.
    *lock(&stats.tallies) = BTreeMap::new();
    lock(&stats.window).clear();
    lock(&stats.errors).clear();

    // The setup's browsers are gone; let the gateway see their connections close.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let csv_path = args.dir.join("samples.csv");
    let mut csv = std::fs::File::create(&csv_path)
        .with_context(|| format!("creating {}", csv_path.display()))?;
    writeln!(csv, "{CSV_HEADER}")?;
    writeln!(csv, "{}", sample_row(pid, 0, "before", &stats)?)?;
    let (rss_before, fds_before, _) = reading(pid)?;

    let ctx = Arc::new(ctx);
    let in_flight = Arc::new(Semaphore::new(args.max_in_flight));
    let started = tokio::time::Instant::now();
    let end = started + Duration::from_secs(args.duration);
    let mut drivers = Vec::new();
    for class in Class::ALL.into_iter().filter(|c| args.runs(*c)) {
        let rate = class.rate() * args.rate_scale;
        let ctx = Arc::clone(&ctx);
        let in_flight = Arc::clone(&in_flight);
        drivers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            // Burst: a late tick is made up at once (so the planned rate is kept),
            // and what the in-flight bound refuses is counted as skipped.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(end) => break,
                    _ = tick.tick() => {}
                }
                match Arc::clone(&in_flight).try_acquire_owned() {
                    Ok(permit) => {
                        let ctx = Arc::clone(&ctx);
                        tokio::spawn(async move {
                            let outcome = ctx.run(class).await;
                            ctx.stats.outcome(class, &outcome);
                            drop(permit);
                        });
                    }
                    Err(_) => ctx.stats.skipped(class),
                }
            }
        }));
    }

    let mut sampler = tokio::time::interval_at(
        started + Duration::from_secs(args.sample),
        Duration::from_secs(args.sample),
    );
    let mut gateway_died = None;
    while tokio::time::Instant::now() + Duration::from_millis(100) < end {
        sampler.tick().await;
        if let Ok(Some(status)) = gateway.child.try_wait() {
            gateway_died = Some(status);
            break;
        }
        let elapsed = started.elapsed().as_secs();
        let row = sample_row(pid, elapsed, "load", &stats)?;
        writeln!(csv, "{row}")?;
        csv.flush()?;
        eprintln!("[soak] {row}");
    }
    for d in drivers {
        let _ = d.await;
    }
    if let Some(status) = gateway_died {
        let _ = std::fs::write(args.dir.join("summary.txt"), summary(&stats, &args));
        bail!("the gateway exited during the soak ({status}); see gateway.log");
    }
    // Let the operations in flight finish (each is bounded by its timeouts).
    let all = u32::try_from(args.max_in_flight).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(Duration::from_secs(30), in_flight.acquire_many(all))
        .await
        .is_ok();
    // The reading after the clients are gone (its window holds the stragglers).
    let ctx = Arc::into_inner(ctx);
    let provider = ctx.map(|c| c.provider);
    tokio::time::sleep(Duration::from_secs(args.quiesce)).await;
    let row = sample_row(pid, started.elapsed().as_secs(), "after", &stats)?;
    writeln!(csv, "{row}")?;
    let (rss_after, fds_after, _) = reading(pid)?;
    drop(provider);

    let exit = gateway.stop();
    let mut text = summary(&stats, &args);
    let _ = writeln!(text, "drained={drained}");
    let _ = writeln!(text, "rss_before_kib={rss_before} fds_before={fds_before}");
    let _ = writeln!(text, "rss_after_kib={rss_after} fds_after={fds_after}");
    let _ = writeln!(text, "gateway_exit={}", exit_word(exit));
    std::fs::write(args.dir.join("summary.txt"), &text)?;
    let errors = lock(&stats.errors).join("\n");
    std::fs::write(args.dir.join("errors.txt"), errors + "\n")?;
    eprint!("{text}");
    Ok(())
}
