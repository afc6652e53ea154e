//! Machine tokens (DESIGN "Machine tokens"): a JWT signed by a key of a
//! trusted source's JWKS authenticates; every hostile variant is refused with
//! RFC 6750 `invalid_token` and nothing reaches the upstream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use portcullis::demo::{Endpoint, Faults, Provider, SignAlg};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{base_config, client, Gateway, Upstream};

/// How a [`JwksServer`] sends its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    /// The set body with its Content-Length.
    Whole,
    /// 64 KiB chunks of a chunked body, forever (until the client hangs up).
    Endless,
    /// A Content-Length of 100 000 and then one byte a second (JWKS-06).
    Drip,
}

/// A JWKS endpoint whose answer the test sets (status, body, Cache-Control,
/// Content-Type, how it is streamed) and which counts what it was asked; one
/// request per connection.
#[derive(Clone)]
pub(crate) struct JwksServer {
    pub(crate) addr: SocketAddr,
    answer: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    stream: Arc<Mutex<Stream>>,
    content_type: Arc<Mutex<String>>,
    /// The most bytes written on one connection.
    most_sent: Arc<AtomicUsize>,
    /// Endless streams whose reader hung up (the write failed).
    abandoned: Arc<AtomicUsize>,
}

impl JwksServer {
    pub(crate) async fn start(body: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = JwksServer {
            addr: listener.local_addr().unwrap(),
            answer: Arc::new(Mutex::new((200, body))),
            hits: Arc::new(AtomicUsize::new(0)),
            stream: Arc::new(Mutex::new(Stream::Whole)),
            content_type: Arc::new(Mutex::new("application/json".into())),
            most_sent: Arc::new(AtomicUsize::new(0)),
            abandoned: Arc::new(AtomicUsize::new(0)),
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    let (status, mut body) = s.answer.lock().unwrap().clone();
                    // For a redirect the set body is the Location, and the body is empty.
                    let location = if (300..400).contains(&status) {
                        format!("location: {}\r\n", std::mem::take(&mut body))
                    } else {
                        String::new()
                    };
                    let content_type = s.content_type.lock().unwrap().clone();
                    let stream = *s.stream.lock().unwrap();
                    let framing = match stream {
                        Stream::Whole => format!("content-length: {}", body.len()),
                        Stream::Endless => "transfer-encoding: chunked".to_string(),
                        Stream::Drip => "content-length: 100000".to_string(),
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncache-control: max-age=1\r\n{location}{framing}\r\nconnection: close\r\n\r\n"
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let mut sent = 0usize;
                    match stream {
                        Stream::Whole => {
                            let _ = conn.write_all(body.as_bytes()).await;
                        }
                        Stream::Endless => {
                            let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                            while conn.write_all(chunk.as_bytes()).await.is_ok() {
                                sent += 0x10000;
                                s.most_sent.fetch_max(sent, Ordering::SeqCst);
                            }
                            s.abandoned.fetch_add(1, Ordering::SeqCst);
                        }
                        Stream::Drip => {
                            while conn.write_all(b"{").await.is_ok() {
                                sent += 1;
                                s.most_sent.fetch_max(sent, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                });
            }
        });
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    pub(crate) fn set(&self, status: u16, body: String) {
        *self.answer.lock().unwrap() = (status, body);
    }

    pub(crate) fn stream(&self, how: Stream) {
        *self.stream.lock().unwrap() = how;
    }

    pub(crate) fn content_type(&self, value: &str) {
        *self.content_type.lock().unwrap() = value.to_string();
    }

    pub(crate) fn most_sent(&self) -> usize {
        self.most_sent.load(Ordering::SeqCst)
    }

    pub(crate) fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::SeqCst)
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub(crate) async fn jwks_of(p: &Provider) -> String {
    reqwest::get(format!("{}/jwks", p.issuer()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The status the gateway answers `GET /x` with this bearer token.
pub(crate) async fn bearer_status(gw: &Gateway, token: &str) -> u16 {
    client()
        .get(gw.url("/x"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `check` every 100 ms for up to `secs` seconds.
pub(crate) async fn eventually(secs: u64, mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..secs * 10 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

struct Machines {
    trusted: Provider,
    other: Provider,
    gw: Gateway,
    upstream: Upstream,
}

pub(crate) async fn provider() -> Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    portcullis::demo::provider::start(
        listener,
        portcullis::demo::ProviderConfig::example("http://127.0.0.1:1/cb").unwrap(),
    )
    .await
}

async fn machines() -> Machines {
    let trusted = provider().await;
    let other = provider().await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\n\
         [[source]]\nslug = \"untrusted\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        trusted.well_known_url(),
        other.well_known_url(),
        upstream.url()
    ));
    gw.ready().await;
    Machines {
        trusted,
        other,
        gw,
        upstream,
    }
}

pub(crate) fn claims(
    iss: &str,
    change: impl FnOnce(&mut Map<String, Value>),
) -> Map<String, Value> {
    let now = jsonwebtoken::get_current_timestamp();
    let mut c = Map::new();
    c.insert("iss".into(), json!(iss));
    c.insert("sub".into(), json!("ci-job-7"));
    c.insert("aud".into(), json!(["api"]));
    c.insert("iat".into(), json!(now));
    c.insert("exp".into(), json!(now + 300));
    c.insert("email".into(), json!("ci@example.com"));
    c.insert("groups".into(), json!(["deployers"]));
    change(&mut c);
    c
}

impl Machines {
    fn token(&self, change: impl FnOnce(&mut Map<String, Value>)) -> String {
        self.trusted
            .sign(&claims(&self.trusted.issuer(), change))
            .unwrap()
    }

    async fn call(&self, token: &str) -> reqwest::Response {
        client()
            .get(self.gw.url("/deploy"))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap()
    }

    async fn refused(&self, name: &str, token: &str) {
        let before = self.upstream.requests().len();
        let r = self.call(token).await;
        assert_eq!(r.status(), 401, "{name} was not refused");
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        // JWT-29: the same words whatever failed, so a prober learns nothing
        // of which check its forgery passed.
        assert!(
            challenge.ends_with("error_description=\"the access token is not valid\""),
            "{name}: {challenge}"
        );
        let body = r.text().await.unwrap();
        assert!(
            token.len() < 16 || !body.contains(token),
            "{name}: the token was echoed"
        );
        assert_eq!(
            self.upstream.requests().len(),
            before,
            "{name} reached the upstream"
        );
    }
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// DESIGN: `X-Forwarded-User` is the token's `sub` for a machine, even when
/// the token also names a person (`preferred_username`): that name goes to
/// `X-Forwarded-Preferred-Username` only.
#[tokio::test(flavor = "multi_thread")]
async fn a_machine_is_its_sub_to_the_app_whatever_username_its_token_names() {
    let m = machines().await;
    let token = m.token(|c| {
        c.insert("preferred_username".into(), json!("alice"));
    });
    assert_eq!(m.call(&token).await.status(), 200);
    let seen = m.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-forwarded-user"), Some("ci-job-7"));
    assert_eq!(
        seen[0].header("x-forwarded-preferred-username"),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_signed_by_a_trusted_source_authenticates_and_is_cached() {
    let m = machines().await;
    let token = m.token(|_| {});
    for _ in 0..3 {
        let r = m.call(&token).await;
        assert_eq!(r.status(), 200);
    }
    let seen = m.upstream.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].header("x-forwarded-user"), Some("ci-job-7"));
    assert_eq!(seen[0].header("x-forwarded-email"), Some("ci@example.com"));
    assert_eq!(seen[0].header("x-forwarded-groups"), Some("deployers"));
    assert!(
        seen[0].header("authorization").is_none(),
        "JWT-27: the verified token stays at the gateway by default"
    );
    // userinfo and forward auth accept the token too.
    let r = client()
        .get(m.gw.url("/_auth/userinfo"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["user"], "ci-job-7");
    assert_eq!(info["kind"], "bearer");
    let r = client()
        .get(m.gw.url("/_auth/check"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-request-user"], "ci-job-7");
}

/// `/_auth/userinfo` lies under no app's path: on a host shared by several
/// apps, a token is answered for by whichever of them takes it, not by the
/// most specific app of the host (here `docs`, which takes no tokens).
#[tokio::test(flavor = "multi_thread")]
async fn userinfo_answers_a_token_taken_by_any_app_of_the_host() {
    let trusted = provider().await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\n\
         [[app]]\nname = \"api\"\nupstream = \"{up}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n\
         [[app]]\nname = \"docs\"\npath_prefix = \"/docs\"\nupstream = \"{up}\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        trusted.well_known_url(),
        up = upstream.url()
    ));
    gw.ready().await;
    let userinfo = |token: String| {
        client()
            .get(gw.url("/_auth/userinfo"))
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    let token = trusted.sign(&claims(&trusted.issuer(), |_| {})).unwrap();
    let r = userinfo(token).await.unwrap();
    assert_eq!(r.status(), 200);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["user"], "ci-job-7");
    assert_eq!(info["kind"], "bearer");
    // A token no app of the host takes is still refused as RFC 6750 says.
    let foreign = trusted
        .sign(&claims(&trusted.issuer(), |c| {
            c.insert("aud".into(), json!(["docs"]));
        }))
        .unwrap();
    let r = userinfo(foreign).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"invalid_token\""));
}

/// `bearer_cache_entries = 0`: no verdict is kept, and each token still
/// reaches the app as its own machine, its identity not shared with another's.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_verdict_cache_none_is_kept_and_each_token_reaches_the_app_as_its_machine() {
    let trusted = provider().await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start_full(&format!(
        "{}\n[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        base_config().replace("threads = 1", "threads = 1\nbearer_cache_entries = 0"),
        trusted.well_known_url(),
        upstream.url()
    ));
    gw.ready().await;
    let iss = trusted.issuer();
    let first = trusted.sign(&claims(&iss, |_| {})).unwrap();
    let second = trusted
        .sign(&claims(&iss, |c| {
            c.insert("sub".into(), json!("ci-job-8"));
            c.insert("groups".into(), json!(["readers"]));
        }))
        .unwrap();
    for token in [&first, &second, &first, &second] {
        let r = client()
            .get(gw.url("/deploy"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let seen = upstream.requests();
    let users: Vec<_> = seen.iter().map(|r| r.header("x-forwarded-user")).collect();
    assert_eq!(
        users,
        [
            Some("ci-job-7"),
            Some("ci-job-8"),
            Some("ci-job-7"),
            Some("ci-job-8")
        ]
    );
    let groups: Vec<_> = seen
        .iter()
        .map(|r| r.header("x-forwarded-groups"))
        .collect();
    assert_eq!(
        groups,
        [
            Some("deployers"),
            Some("readers"),
            Some("deployers"),
            Some("readers")
        ]
    );
    assert_eq!(seen[2].header("x-forwarded-email"), Some("ci@example.com"));
    assert_eq!(cached_verdicts(&gw).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hostile_token_is_refused_with_invalid_token() {
    let m = machines().await;
    let now = jsonwebtoken::get_current_timestamp();
    let good = m.token(|_| {});
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let mut forged_payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    forged_payload["sub"] = json!("admin");
    let mut forged_head: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .unwrap(),
    )
    .unwrap();
    forged_head["kid"] = json!("other-kid");
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            m.token(|c| {
                c.insert("exp".into(), json!(now - 3600));
            }),
        ),
        (
            "no exp",
            m.token(|c| {
                c.remove("exp");
            }),
        ),
        (
            "nbf in the future",
            m.token(|c| {
                c.insert("nbf".into(), json!(now + 3600));
            }),
        ),
        (
            "wrong iss",
            m.token(|c| {
                c.insert("iss".into(), json!("https://evil.example"));
            }),
        ),
        (
            "iss of a source this app does not trust",
            m.other.sign(&claims(&m.other.issuer(), |_| {})).unwrap(),
        ),
        (
            "key of another source with this source's iss",
            m.other.sign(&claims(&m.trusted.issuer(), |_| {})).unwrap(),
        ),
        (
            "wrong aud",
            m.token(|c| {
                c.insert("aud".into(), json!("other-app"));
            }),
        ),
        (
            "tampered payload",
            format!("{head}.{}.{sig}", b64(&forged_payload)),
        ),
        (
            "tampered header",
            format!("{}.{payload}.{sig}", b64(&forged_head)),
        ),
        ("truncated", good[..good.len() - 10].to_string()),
        ("not base64", "!!!.###.$$$".to_string()),
        (
            "crit header",
            format!(
                "{}.{payload}.{sig}",
                b64(&json!({"alg": "RS256", "crit": ["exp"]}))
            ),
        ),
        (
            "json bomb",
            format!(
                "{}.{}.{sig}",
                b64(&json!({"alg": "RS256"})),
                "W".repeat(7000)
            ),
        ),
        (
            "oversized",
            format!("{head}.{}.{sig}", "A".repeat(9 * 1024)),
        ),
        (
            "alg none",
            format!("{}.{payload}.", b64(&json!({"alg": "none"}))),
        ),
    ];
    for (name, token) in &cases {
        m.refused(name, token).await;
    }
    // HS256 signed with a secret, and alg none, from the provider itself.
    m.trusted.set_faults(|f| {
        *f = Faults {
            alg: SignAlg::HS256,
            ..Faults::default()
        }
    });
    m.refused("HS256", &m.token(|_| {})).await;
    m.trusted.set_faults(|f| {
        *f = Faults {
            alg: SignAlg::None,
            ..Faults::default()
        }
    });
    m.refused("alg none from the provider", &m.token(|_| {}))
        .await;
    m.trusted.set_faults(|f| *f = Faults::default());
    assert_eq!(
        m.call(&m.token(|_| {})).await.status(),
        200,
        "a good token still works"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_published_after_start_is_accepted_after_one_refetch() {
    let m = machines().await;
    assert_eq!(m.call(&m.token(|_| {})).await.status(), 200);
    let jwks_before = m.trusted.calls(portcullis::demo::Endpoint::Jwks);
    m.trusted.set_faults(|f| f.rotate_signing_key = true);
    assert!(m.trusted.rotate_keys().await);
    assert_eq!(m.call(&m.token(|_| {})).await.status(), 200);
    assert_eq!(
        m.trusted.calls(portcullis::demo::Endpoint::Jwks),
        jwks_before + 1
    );
    // A flood of unknown kids within the cooldown causes no further fetch.
    for i in 0..20 {
        let mut c = claims(&m.trusted.issuer(), |_| {});
        c.insert("jti".into(), json!(i));
        let t = m.trusted.sign(&c).unwrap();
        let (h, rest) = t.split_once('.').unwrap();
        let mut head: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap();
        head["kid"] = json!(format!("random-{i}"));
        m.refused("random kid", &format!("{}.{rest}", b64(&head)))
            .await;
    }
    // The rotation refetch started the cooldown: the flood fetches nothing more.
    assert_eq!(
        m.trusted.calls(portcullis::demo::Endpoint::Jwks),
        jwks_before + 1,
        "a refetch inside the cooldown"
    );
}

/// The hostile cases of docs/security.md's JWT group that need a running gateway;
/// the parser-level ones (JWT-12…JWT-17) are table tests in `src/jws.rs`.
#[tokio::test(flavor = "multi_thread")]
async fn security_md_jwt_cases_are_refused_with_nothing_upstream() {
    let m = machines().await;
    let now = jsonwebtoken::get_current_timestamp();
    let good = m.token(|_| {});
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let head_json: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .unwrap(),
    )
    .unwrap();
    let with_head = |change: &dyn Fn(&mut Value)| {
        let mut h = head_json.clone();
        change(&mut h);
        format!("{}.{payload}.{sig}", b64(&h))
    };
    // JWT-10: a listener the token points at; it must never be contacted.
    let bait = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bait_url = format!("http://{}/keys", bait.local_addr().unwrap());
    let bait_hits = Arc::new(AtomicUsize::new(0));
    {
        let hits = bait_hits.clone();
        tokio::spawn(async move {
            while bait.accept().await.is_ok() {
                hits.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    // JWT-02: HMAC keyed with the issuer's public key, in the forms an attacker would try.
    let public_jwks = jwks_of(&m.trusted).await;
    let public_jwk: Value = serde_json::from_str::<Value>(&public_jwks).unwrap()["keys"][0].clone();
    let hs_with = |secret: &[u8]| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = public_jwk["kid"].as_str().map(str::to_string);
        jsonwebtoken::encode(
            &h,
            &claims(&m.trusted.issuer(), |_| {}),
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let n_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(public_jwk["n"].as_str().unwrap())
        .unwrap();
    let jwks_before = m.trusted.calls(Endpoint::Jwks);
    // Every source's keys are fetched in the background; requests never add to the untrusted one's.
    let untrusted_before = m.other.calls(Endpoint::Jwks);
    // JWT-11 and JWT-20 first: refused before any key lookup, so no fetch at all.
    m.refused(
        "JWT-11 kid too long",
        &with_head(&|h| h["kid"] = json!("k".repeat(300))),
    )
    .await;
    m.refused("JWT-11 kid a number", &with_head(&|h| h["kid"] = json!(7)))
        .await;
    m.refused(
        "JWT-20 unknown iss",
        &m.token(|c| {
            c.insert("iss".into(), json!("https://unknown.example"));
        }),
    )
    .await;
    assert_eq!(
        m.trusted.calls(Endpoint::Jwks),
        jwks_before,
        "JWT-11/JWT-20 caused a JWKS fetch"
    );
    let cases: Vec<(&str, String)> = vec![
        (
            "JWT-01 None",
            format!("{}.{payload}.{sig}", b64(&json!({"alg": "None"}))),
        ),
        (
            "JWT-01 NONE",
            format!("{}.{payload}.", b64(&json!({"alg": "NONE"}))),
        ),
        (
            "JWT-01 nOnE",
            format!("{}.{payload}.{sig}", b64(&json!({"alg": "nOnE"}))),
        ),
        (
            "JWT-02 HS256 over the JWK JSON",
            hs_with(public_jwk.to_string().as_bytes()),
        ),
        ("JWT-02 HS256 over n", hs_with(&n_bytes)),
        (
            "JWT-02 HS256 over the JWKS",
            hs_with(public_jwks.as_bytes()),
        ),
        (
            "JWT-03 alg with a space",
            with_head(&|h| h["alg"] = json!("RS256 ")),
        ),
        ("JWT-03 alg empty", with_head(&|h| h["alg"] = json!(""))),
        (
            "JWT-03 alg not a string",
            with_head(&|h| h["alg"] = json!(256)),
        ),
        (
            "JWT-03 PS256 header over an RS256 signature",
            with_head(&|h| h["alg"] = json!("PS256")),
        ),
        (
            "JWT-04 RS512 header over an RS256 signature",
            with_head(&|h| h["alg"] = json!("RS512")),
        ),
        (
            "JWT-09 embedded jwk",
            with_head(&|h| {
                h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"});
                h["kid"] = json!("attacker");
            }),
        ),
        (
            "JWT-10 jku and x5u",
            with_head(&|h| {
                h["jku"] = json!(bait_url);
                h["x5u"] = json!(bait_url);
                h["kid"] = json!("from-jku");
            }),
        ),
        ("JWT-13 nested JWT", with_head(&|h| h["cty"] = json!("JWT"))),
        ("JWT-14 padding", format!("{good}==")),
        ("JWT-14 five segments", format!("{good}.a.b")),
        (
            "JWT-15 duplicate alg",
            format!(
                "{}.{payload}.{sig}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(r#"{"alg":"RS256","alg":"none"}"#)
            ),
        ),
        (
            "JWT-22 no iss",
            m.token(|c| {
                c.remove("iss");
            }),
        ),
        (
            "JWT-23 no aud",
            m.token(|c| {
                c.remove("aud");
            }),
        ),
        (
            "JWT-19 exp far beyond year 9999",
            m.token(|c| {
                c.insert("exp".into(), json!(i64::MAX));
            }),
        ),
        (
            "JWT-18 exp just past the leeway",
            m.token(|c| {
                c.insert("exp".into(), json!(now - 62));
            }),
        ),
        (
            "JWT-24 an ID token of the login flow",
            m.token(|c| {
                c.insert("aud".into(), json!("portcullis"));
                c.insert("azp".into(), json!("portcullis"));
                c.insert("nonce".into(), json!("n-1"));
            }),
        ),
        (
            "JWT-24 a back-channel logout token",
            m.token(|c| {
                c.insert(
                    "events".into(),
                    json!({"http://schemas.openid.net/event/backchannel-logout": {}}),
                );
            }),
        ),
    ];
    for (name, token) in &cases {
        m.refused(name, token).await;
    }
    // The unknown kids of JWT-09/JWT-10 may cause one refetch, never more (cooldown).
    assert!(
        m.trusted.calls(Endpoint::Jwks) <= jwks_before + 1,
        "more than one refetch within the cooldown"
    );
    assert_eq!(
        m.other.calls(Endpoint::Jwks),
        untrusted_before,
        "the untrusted source was asked because of a request"
    );
    assert_eq!(
        bait_hits.load(Ordering::SeqCst),
        0,
        "JWT-10: jku/x5u were followed"
    );

    // JWT-05 / JWT-06 need an EC key: the provider signs ES256 from here on.
    m.trusted.set_faults(|f| f.alg = SignAlg::ES256);
    let es = m.token(|_| {});
    assert_eq!(m.call(&es).await.status(), 200, "a good ES256 token");
    let (es_input, es_sig) = es.rsplit_once('.').unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(es_sig)
        .unwrap();
    assert_eq!(raw.len(), 64);
    let enc = |bytes: &[u8]| {
        format!(
            "{es_input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    };
    let der = {
        // SEQUENCE { INTEGER r, INTEGER s }, each with a leading 0 so it stays positive.
        let int = |v: &[u8]| [&[0x02, 33, 0][..], v].concat();
        let body = [int(&raw[..32]), int(&raw[32..])].concat();
        [&[0x30, body.len() as u8][..], &body].concat()
    };
    let n = hex(P256_ORDER);
    for (name, token) in [
        ("JWT-05 r = s = 0", enc(&[0u8; 64])),
        (
            "JWT-05 r = n",
            enc(&[n.clone(), raw[32..].to_vec()].concat()),
        ),
        ("JWT-06 DER-encoded signature", enc(&der)),
        ("JWT-06 63 bytes", enc(&raw[..63])),
        ("JWT-06 65 bytes", enc(&[raw.clone(), vec![0]].concat())),
    ] {
        m.refused(name, &token).await;
    }
}

/// The order n of P-256.
const P256_ORDER: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";

/// The high-S twin of an ES256 token: the same R, S replaced by n − S.
fn high_s_twin(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    assert_eq!(raw.len(), 64);
    let n = hex(P256_ORDER);
    let s = &raw[32..];
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = n[i] as i16 - s[i] as i16 - borrow;
        borrow = i16::from(d < 0);
        out[i] = (d + if d < 0 { 256 } else { 0 }) as u8;
    }
    let twin = [&raw[..32], &out[..]].concat();
    format!(
        "{input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(twin)
    )
}

/// The `bearer_cache_entries` gauge.
async fn cached_verdicts(gw: &Gateway) -> u64 {
    let text = gw.metrics().await;
    text.lines()
        .find(|l| l.starts_with("portcullis_bearer_cache_entries "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// JWT-07: ECDSA has no low-S rule in JWS (RFC 7518 §3.4) and aws-lc verifies
/// the high-S twin (s → n − s) of a valid ES256 token: the gateway accepts
/// it, as the same machine. The twin is another token: it gets a verdict of
/// its own (the cache is keyed by the whole token), and once the issuer drops
/// the key both the original and the twin are refused — malleation cannot
/// keep a revoked signature alive through the verdict cache.
#[tokio::test(flavor = "multi_thread")]
async fn jwt07_the_es256_high_s_twin_is_verified_on_its_own_and_revoked_with_its_key() {
    let a = provider().await;
    let b = provider().await;
    a.set_faults(|f| f.alg = SignAlg::ES256);
    let issuer = "https://ci.example";
    let server = JwksServer::start(jwks_of(&a).await).await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\nissuer = \"{issuer}\"\noidc_jwks_url = \"{}\"\njwks_cache_ttl = \"1s\"\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        server.url(),
        upstream.url()
    ));
    let original = a.sign(&claims(issuer, |_| {})).unwrap();
    let twin = high_s_twin(&original);
    assert_ne!(twin, original);
    assert_eq!(bearer_status(&gw, &original).await, 200);
    let held = cached_verdicts(&gw).await;
    assert_eq!(
        bearer_status(&gw, &twin).await,
        200,
        "aws-lc verifies high-S"
    );
    assert_eq!(
        cached_verdicts(&gw).await,
        held + 1,
        "the twin was served from the original's verdict"
    );
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("x-forwarded-user"), Some("ci-job-7"));
    // The issuer drops the key: neither spelling of the signature lives on.
    server.set(200, jwks_of(&b).await);
    assert!(
        eventually(6, async || bearer_status(&gw, &original).await == 401).await,
        "the original outlived its key"
    );
    let seen = upstream.requests().len();
    assert_eq!(
        bearer_status(&gw, &twin).await,
        401,
        "the twin outlived its key"
    );
    assert_eq!(upstream.requests().len(), seen);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// JWT-25/26/27 and RFC 6750's `insufficient_scope`: where a token may come
/// from, where it goes, and what a policy refusal looks like to a machine.
#[tokio::test(flavor = "multi_thread")]
async fn token_transport_forwarding_and_policy_refusals() {
    let trusted = provider().await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{wk}\"\n\
         [[app]]\nname = \"api\"\nhost = \"api.test\"\nupstream = \"{up}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"deny\"\ngroups = [\"interns\"]\nmessage = \"Interns may not deploy\"\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n\
         [[app]]\nname = \"passthrough\"\nhost = \"pass.test\"\nupstream = \"{up}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\nforward_bearer_token = true\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        wk = trusted.well_known_url(),
        up = upstream.url()
    ));
    gw.ready().await;
    let token = trusted.sign(&claims(&trusted.issuer(), |_| {})).unwrap();
    let call = |host: &'static str, path: &'static str, auth: Vec<String>| {
        let mut req = client()
            .get(gw.url(path))
            .header("host", host)
            .header("accept", "application/json");
        for a in auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    // JWT-25: a token in the query is not read.
    let r = call("api.test", "/x", vec![]).await.unwrap();
    assert_eq!(r.status(), 401);
    let q: &'static str = Box::leak(format!("/x?access_token={token}").into_boxed_str());
    let r = call("api.test", q, vec![]).await.unwrap();
    assert_eq!(r.status(), 401, "JWT-25: query token accepted");
    assert_eq!(upstream.requests().len(), 0);
    // JWT-26: two credentials.
    for (name, path, auth) in [
        (
            "two Authorization lines",
            "/x",
            vec![format!("Bearer {token}"), format!("Bearer {token}")],
        ),
        (
            "bearer beside Basic",
            "/x",
            vec![format!("Bearer {token}"), "Basic YTpi".into()],
        ),
        ("header and query", q, vec![format!("Bearer {token}")]),
    ] {
        let r = call("api.test", path, auth).await.unwrap();
        assert_eq!(r.status(), 400, "JWT-26 {name}");
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            challenge.contains("error=\"invalid_request\""),
            "{name}: {challenge}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
    assert_eq!(upstream.requests().len(), 0);
    // JWT-27: removed by default, passed on where the app opts in.
    assert_eq!(
        call("api.test", "/x", vec![format!("Bearer {token}")])
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call("pass.test", "/x", vec![format!("Bearer {token}")])
            .await
            .unwrap()
            .status(),
        200
    );
    let seen = upstream.requests();
    assert_eq!(seen[0].header("authorization"), None);
    assert_eq!(
        seen[1].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    // A policy refusal of a machine: 403 insufficient_scope, nothing upstream.
    let intern = trusted
        .sign(&claims(&trusted.issuer(), |c| {
            c.insert("groups".into(), json!(["interns"]));
        }))
        .unwrap();
    let r = call("api.test", "/x", vec![format!("Bearer {intern}")])
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("Interns may not deploy"), "{challenge}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    // The same refusal through forward auth, which answers 200 or 401.
    let r = client()
        .get(gw.url("/_auth/check"))
        .header("host", "api.test")
        .header("authorization", format!("Bearer {intern}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Still `insufficient_scope` (RFC 6750 §3.1): the token is valid, and
    // its client must not take the 401 for an expired one.
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("Interns may not deploy"),
        "{challenge}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(body["error_description"], "Interns may not deploy");
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .starts_with("The token is valid"),
        "{body}"
    );
    assert_eq!(upstream.requests().len(), 2);
}

/// JWKS-03: many requests with the same new kid at once cause one fetch.
#[tokio::test(flavor = "multi_thread")]
async fn jwks03_concurrent_misses_share_one_fetch() {
    let m = machines().await;
    assert_eq!(m.call(&m.token(|_| {})).await.status(), 200);
    let before = m.trusted.calls(Endpoint::Jwks);
    m.trusted.set_faults(|f| f.rotate_signing_key = true);
    assert!(m.trusted.rotate_keys().await);
    let tokens: Vec<String> = (0..50)
        .map(|i| {
            m.token(|c| {
                c.insert("jti".into(), json!(i));
            })
        })
        .collect();
    let calls = tokens.iter().map(|t| m.call(t));
    let statuses: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(m.trusted.calls(Endpoint::Jwks), before + 1);
}

/// JWKS-04/05/12/19 and JWT-28: keys fetched at start and refreshed in the
/// background; the endpoint going down keeps the last good keys (up to the
/// max stale age, then fail closed), a key the issuer drops stops working
/// at the next refresh, cached verdicts included; recovery needs no restart.
#[tokio::test(flavor = "multi_thread")]
async fn jwks_refresh_keep_last_good_revocation_and_max_stale() {
    let a = provider().await;
    let b = provider().await;
    let issuer = "https://ci.example";
    let server = JwksServer::start(jwks_of(&a).await).await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\nissuer = \"{issuer}\"\noidc_jwks_url = \"{}\"\n\
         jwks_cache_ttl = \"1s\"\njwks_max_stale = \"4s\"\njwks_cooldown = \"30s\"\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        server.url(),
        upstream.url()
    ));
    assert!(server.hits() >= 1, "keys are fetched at start");
    let call = async |t: String| bearer_status(&gw, &t).await;
    let by_a = |jti: u64| {
        a.sign(&claims(issuer, |c| {
            c.insert("jti".into(), json!(jti));
        }))
        .unwrap()
    };
    let ta = by_a(1);
    assert_eq!(call(ta.clone()).await, 200);
    // JWKS-12: `max-age=1` (within the 1 s floor this source allows) drives refreshes.
    let hits = server.hits();
    assert!(
        eventually(5, async || server.hits() >= hits + 2).await,
        "no background refresh"
    );

    // JWKS-04: the endpoint fails; known keys keep working, new tokens too.
    server.set(500, "oops".into());
    let failing_from = server.hits();
    assert!(eventually(5, async || server.hits() >= failing_from + 2).await);
    assert_eq!(
        call(ta.clone()).await,
        200,
        "cached verdict lost while JWKS is down"
    );
    assert_eq!(
        call(by_a(2)).await,
        200,
        "known key lost while JWKS is down"
    );
    let metrics = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("portcullis_jwks_fetches_total{result=\"failed\",source=\"ci\"}"),
        "failed fetches are counted"
    );

    // JWKS-19 / JWT-28: the issuer drops A's key for B's.
    server.set(200, jwks_of(&b).await);
    let tb = b.sign(&claims(issuer, |_| {})).unwrap();
    assert!(
        eventually(5, async || call(tb.clone()).await == 200).await,
        "the new key was not picked up by the background refresh"
    );
    assert_eq!(
        call(ta.clone()).await,
        401,
        "a cached verdict outlived its key"
    );
    assert_eq!(call(by_a(3)).await, 401, "a dropped key still verifies");

    // Max stale: the endpoint stays down past jwks_max_stale → fail closed.
    server.set(503, "down".into());
    assert!(
        eventually(8, async || call(tb.clone()).await == 401).await,
        "keys served past their max stale age"
    );
    let seen = upstream.requests().len();
    assert_eq!(call(b.sign(&claims(issuer, |_| {})).unwrap()).await, 401);
    assert_eq!(upstream.requests().len(), seen);

    // JWKS-05: it recovers without a restart.
    server.set(200, jwks_of(&b).await);
    assert!(
        eventually(5, async || call(tb.clone()).await == 200).await,
        "keys not picked up after the endpoint recovered"
    );
}

/// JWKS-05: unreachable at start → the gateway starts, bearer requests fail
/// closed, and the keys arrive when the endpoint does.
#[tokio::test(flavor = "multi_thread")]
async fn jwks05_unreachable_at_start_fails_closed_then_recovers() {
    let a = provider().await;
    let issuer = "https://ci.example";
    let server = JwksServer::start(String::new()).await;
    server.set(503, "starting".into());
    let upstream = Upstream::start("api").await;
    let gw = gateway_on(&server, &upstream, "jwks_cache_ttl = \"1s\"");
    let token = a.sign(&claims(issuer, |_| {})).unwrap();
    let call = async || bearer_status(&gw, &token).await;
    assert_eq!(call().await, 401);
    assert_eq!(upstream.requests().len(), 0);
    server.set(200, jwks_of(&a).await);
    assert!(eventually(5, async || call().await == 200).await);
}

/// With no key set held (the endpoint was down at start), a token naming
/// a key the provider does not publish costs one fetch, not two: the keys
/// fetched for it are already the provider's latest.
#[tokio::test(flavor = "multi_thread")]
async fn jwks02_an_unknown_kid_with_no_keys_held_causes_one_fetch() {
    let a = provider().await;
    let issuer = "https://ci.example";
    let server = JwksServer::start(String::new()).await;
    server.set(503, "starting".into());
    let upstream = Upstream::start("api").await;
    let gw = gateway_on(&server, &upstream, "jwks_cooldown = \"100ms\"");
    // The start-up fetch and the background's retries 1, 2 and 4 s later
    // fail; the next is 4 s after the last, so the fetches counted below
    // are the token's alone.
    assert!(eventually(10, async || server.hits() >= 4).await);
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.set(200, jwks_of(&a).await);
    let before = server.hits();
    let good = a.sign(&claims(issuer, |_| {})).unwrap();
    let (h, rest) = good.split_once('.').unwrap();
    let mut head: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h)
            .unwrap(),
    )
    .unwrap();
    head["kid"] = json!("never-published");
    let unknown = format!("{}.{rest}", b64(&head));
    assert_eq!(bearer_status(&gw, &unknown).await, 401);
    assert_eq!(server.hits(), before + 1, "fetches for one unknown kid");
    // The keys it fetched serve the provider's real tokens at once.
    assert_eq!(bearer_status(&gw, &good).await, 200);
    assert_eq!(server.hits(), before + 1);
}

/// JWKS-09/14/16: a JWKS endpoint answering an HTML page with 200, or a
/// redirect, is a failed fetch (counted; the last good keys stay); and one
/// source's broken endpoint never touches another source's tokens.
#[tokio::test(flavor = "multi_thread")]
async fn jwks_garbage_and_redirects_keep_the_last_good_keys_and_sources_stay_isolated() {
    let a = provider().await;
    let b = provider().await;
    let server_a = JwksServer::start(jwks_of(&a).await).await;
    let server_b = JwksServer::start(jwks_of(&b).await).await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"a\"\ntype = \"openidconnect\"\nissuer = \"https://a.example\"\noidc_jwks_url = \"{}\"\njwks_cache_ttl = \"1s\"\n\
         [[source]]\nslug = \"b\"\ntype = \"openidconnect\"\nissuer = \"https://b.example\"\noidc_jwks_url = \"{}\"\njwks_cache_ttl = \"1s\"\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"a\", \"b\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        server_a.url(),
        server_b.url(),
        upstream.url()
    ));
    let call = async |t: String| bearer_status(&gw, &t).await;
    let by_a = |jti: u64| {
        a.sign(&claims("https://a.example", |c| {
            c.insert("jti".into(), json!(jti));
        }))
        .unwrap()
    };
    let by_b = || b.sign(&claims("https://b.example", |_| {})).unwrap();
    assert_eq!(call(by_a(1)).await, 200);
    assert_eq!(call(by_b()).await, 200);
    let failed = async || {
        let m = client()
            .get(gw.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.lines()
            .find(|l| {
                l.starts_with("portcullis_jwks_fetches_total{result=\"failed\",source=\"a\"}")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    for (name, status, body) in [
        (
            "JWKS-09 an HTML page with 200",
            200,
            "<html>maintenance</html>",
        ),
        ("JWKS-09 keys not a list", 200, r#"{"keys":"x"}"#),
        // To a good JWKS (B's): followed, it would replace A's keys.
        ("JWKS-14 a redirect", 302, server_b.url().as_str()),
    ] {
        let before = failed().await;
        server_a.set(status, body.to_string());
        assert!(
            eventually(6, async || failed().await > before).await,
            "{name}: the fetch was not counted as failed"
        );
        // Keys of A still verify A's new tokens; B is untouched (JWKS-16).
        assert_eq!(
            call(by_a(2)).await,
            200,
            "{name}: the last good keys were lost"
        );
        assert_eq!(
            call(by_b()).await,
            200,
            "{name}: another source was affected"
        );
    }
    // A's keys never verify B's issuer: a token with B's iss signed by A's key.
    let forged = a.sign(&claims("https://b.example", |_| {})).unwrap();
    assert_eq!(call(forged).await, 401);
}

/// The ID token a real sign-in at `p` hands its client (`alice`, auto-approved):
/// the authorization request, then the code redeemed at the token endpoint.
async fn login_id_token(p: &Provider, client_id: &str, secret: &str, redirect: &str) -> String {
    p.set_faults(|f| f.auto_approve_as = Some("alice".into()));
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(format!("{}/authorize", p.issuer()))
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect),
            ("scope", "openid email profile"),
            ("state", "st-1"),
            ("nonce", "n-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .to_string();
    let tokens: Value = no_redirects
        .post(format!("{}/token", p.issuer()))
        .basic_auth(client_id, Some(secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    p.set_faults(|f| *f = Faults::default());
    tokens["id_token"].as_str().unwrap().to_string()
}

/// JWT-23/JWT-24 at the gateway: `aud` must name one of the app's
/// `jwt_audiences` — missing or foreign is refused with nothing upstream, an
/// array with one allowed value is accepted; the ID token a user's sign-in at
/// the same provider produces (aud = the gateway's client id), and a token
/// minted for another service, are refused although the issuer signed them.
#[tokio::test(flavor = "multi_thread")]
async fn jwt23_jwt24_aud_decides_and_login_id_tokens_are_refused() {
    const CLIENT: &str = "portcullis-demo";
    const SECRET: &str = "demo-client-secret-for-jwt24";
    const REDIRECT: &str = "http://127.0.0.1:1/cb";
    let mut config = portcullis::demo::ProviderConfig::example(REDIRECT).unwrap();
    config.clients[0].client_secret = SECRET.into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trusted = portcullis::demo::provider::start(listener, config).await;
    let upstream = Upstream::start("api").await;
    // One provider, both the users' sign-in source and the machines' issuer.
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"corp\"\ntype = \"openidconnect\"\nconsumer_key = \"{CLIENT}\"\nconsumer_secret = \"{SECRET}\"\noidc_well_known_url = \"{}\"\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"corp\"]\njwt_audiences = [\"api\", \"api-v2\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        trusted.well_known_url(),
        upstream.url()
    ));
    gw.ready().await;
    let m = Machines {
        other: provider().await,
        trusted,
        gw,
        upstream,
    };
    let id_token = login_id_token(&m.trusted, CLIENT, SECRET, REDIRECT).await;
    let id_claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(id_claims["aud"], json!(CLIENT), "{id_claims}");
    assert_eq!(id_claims["iss"], json!(m.trusted.issuer()));
    for (name, token) in [
        ("JWT-24 the ID token of a sign-in", id_token),
        (
            "JWT-23 no aud",
            m.token(|c| {
                c.remove("aud");
            }),
        ),
        (
            "JWT-23 aud null",
            m.token(|c| {
                c.insert("aud".into(), Value::Null);
            }),
        ),
        (
            "JWT-23 aud empty array",
            m.token(|c| {
                c.insert("aud".into(), json!([]));
            }),
        ),
        (
            "JWT-24 minted for another service",
            m.token(|c| {
                c.insert("aud".into(), json!("billing"));
            }),
        ),
        (
            "JWT-23 an array of other audiences",
            m.token(|c| {
                c.insert("aud".into(), json!(["billing", "API", CLIENT]));
            }),
        ),
    ] {
        m.refused(name, &token).await;
    }
    assert_eq!(m.upstream.requests().len(), 0);
    for (name, aud) in [
        ("a string", json!("api-v2")),
        ("an array with one allowed value", json!(["billing", "api"])),
    ] {
        let t = m.token(|c| {
            c.insert("aud".into(), aud);
        });
        assert_eq!(m.call(&t).await.status(), 200, "JWT-23 aud {name}");
    }
    assert_eq!(m.upstream.requests().len(), 2);
}

/// OIDC-16/OIDC-17 for machine tokens: a token without `kid` is accepted
/// while exactly one key of its issuer fits its `alg`; once the issuer
/// publishes several, it is refused (never tried against each), while a
/// token naming its `kid` still works.
#[tokio::test(flavor = "multi_thread")]
async fn oidc16_oidc17_a_kid_less_machine_token_needs_exactly_one_fitting_key() {
    let p = provider().await;
    let issuer = "https://ci.example";
    // The provider's own JWKS: one RSA key and one EC key.
    let server = JwksServer::start(jwks_of(&p).await).await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\nissuer = \"{issuer}\"\noidc_jwks_url = \"{}\"\njwks_cache_ttl = \"1s\"\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        server.url(),
        upstream.url()
    ));
    let kid_less = |jti: u64| {
        p.set_faults(|f| f.kid = portcullis::demo::KidFault::Omit);
        let t = p
            .sign(&claims(issuer, |c| {
                c.insert("jti".into(), json!(jti));
            }))
            .unwrap();
        let head: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(head.get("kid").is_none(), "{head}");
        t
    };
    assert_eq!(bearer_status(&gw, &kid_less(1)).await, 200, "OIDC-16");
    // The issuer now lists two more RSA keys (before the real one).
    p.set_faults(|f| f.jwks_extra_keys = 2);
    let three = jwks_of(&p).await;
    let rsa_keys = serde_json::from_str::<Value>(&three).unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kty"] == "RSA")
        .count();
    assert_eq!(rsa_keys, 3);
    let served_from = server.hits();
    server.set(200, three);
    assert!(
        eventually(6, async || server.hits() >= served_from + 2).await,
        "no refresh"
    );
    let before = upstream.requests().len();
    assert_eq!(bearer_status(&gw, &kid_less(2)).await, 401, "OIDC-17");
    assert_eq!(upstream.requests().len(), before);
    // The same key, named by its kid, still verifies.
    p.set_faults(|f| {
        *f = Faults {
            jwks_extra_keys: 2,
            ..Faults::default()
        }
    });
    let named = p
        .sign(&claims(issuer, |c| {
            c.insert("jti".into(), json!(3));
        }))
        .unwrap();
    assert_eq!(bearer_status(&gw, &named).await, 200);
}

/// A counter or gauge of the admin `/metrics`, by its full series name.
async fn metric(gw: &Gateway, series: &str) -> u64 {
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(series) && l.as_bytes().get(series.len()) == Some(&b' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

const CI_FAILED: &str = "portcullis_jwks_fetches_total{result=\"failed\",source=\"ci\"}";

/// A gateway trusting source `ci` (issuer `https://ci.example`) whose JWKS is `server`'s.
fn gateway_on(server: &JwksServer, upstream: &Upstream, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\nissuer = \"https://ci.example\"\noidc_jwks_url = \"{}\"\n{extra}\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        server.url(),
        upstream.url()
    ))
}

/// JWKS-06: a JWKS endpoint that accepts and then drips one byte a second
/// is cut at the JWKS fetch's total timeout (5 s): the request that
/// needed the keys is answered 401 within that bound (plus slack for a
/// loaded machine), not held for as long as the endpoint keeps dripping.
#[tokio::test(flavor = "multi_thread")]
async fn jwks06_a_dripping_jwks_endpoint_is_cut_at_the_fetch_timeout() {
    let a = provider().await;
    let server = JwksServer::start(jwks_of(&a).await).await;
    server.stream(Stream::Drip);
    let upstream = Upstream::start("api").await;
    let gw = tokio::task::block_in_place(|| gateway_on(&server, &upstream, ""));
    let token = a.sign(&claims("https://ci.example", |_| {})).unwrap();
    let started = std::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(40), bearer_status(&gw, &token))
        .await
        .expect("the request was held past 40 s");
    assert_eq!(status, 401);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(9), "answered after {took:?}");
    assert_eq!(upstream.requests().len(), 0);
    assert!(metric(&gw, CI_FAILED).await >= 1);
    // No connection was read for much longer than the timeout.
    assert!(
        server.most_sent() <= 8,
        "{} bytes dripped",
        server.most_sent()
    );
}

/// JWKS-07: a 10 MiB body (announced by Content-Length) and an endless
/// chunked stream are each cut at the 512 KiB cap — a failed fetch, counted,
/// that keeps the last good keys; the endless stream is abandoned, not read on.
#[tokio::test(flavor = "multi_thread")]
async fn jwks07_a_huge_or_endless_jwks_is_cut_at_the_cap_and_the_last_good_keys_stay() {
    let a = provider().await;
    let good = jwks_of(&a).await;
    let server = JwksServer::start(good.clone()).await;
    let upstream = Upstream::start("api").await;
    let gw = gateway_on(&server, &upstream, "jwks_cache_ttl = \"1s\"");
    let token = |jti: u64| {
        a.sign(&claims("https://ci.example", |c| {
            c.insert("jti".into(), json!(jti));
        }))
        .unwrap()
    };
    assert_eq!(bearer_status(&gw, &token(1)).await, 200);
    for (jti, name, how, body) in [
        (2, "10 MiB body", Stream::Whole, "x".repeat(10 << 20)),
        (3, "endless chunked body", Stream::Endless, good.clone()),
    ] {
        let before = metric(&gw, CI_FAILED).await;
        server.stream(how);
        server.set(200, body);
        assert!(
            eventually(20, async || metric(&gw, CI_FAILED).await > before).await,
            "{name}: not a failed fetch"
        );
        assert_eq!(
            bearer_status(&gw, &token(jti)).await,
            200,
            "{name}: the last good keys were lost"
        );
    }
    // Abandoned: the gateway hung up on the endless stream (the server's
    // write failed) instead of reading on.
    assert!(
        eventually(20, async || server.abandoned() > 0).await,
        "the endless stream was never hung up on"
    );
    // What the server managed to write is the cap plus whatever the kernel
    // buffered on both sides of the loopback connection before the hang-up
    // (tcp_rmem may grow a receive buffer to 32 MiB): a bound far below what
    // an endless read would take, not a measure of the cap.
    assert!(
        server.most_sent() < 64 << 20,
        "{} bytes of the endless stream were taken",
        server.most_sent()
    );
}

/// JWKS-13: a refresh swaps the set whole. While the endpoint alternates
/// between two documents that both hold the signing key (another key beside
/// it, in another order), refreshing every second, every one of many
/// concurrent fresh tokens verifies: no reader sees an empty or partial set.
#[tokio::test(flavor = "multi_thread")]
async fn jwks13_requests_during_refreshes_see_a_whole_set() {
    let a = provider().await;
    let b = provider().await;
    let doc_a = jwks_of(&a).await;
    let mut keys: Vec<Value> = serde_json::from_str::<Value>(&jwks_of(&b).await).unwrap()["keys"]
        .as_array()
        .unwrap()
        .clone();
    keys.extend(
        serde_json::from_str::<Value>(&doc_a).unwrap()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .cloned(),
    );
    let doc_ba = json!({ "keys": keys }).to_string();
    let server = JwksServer::start(doc_a.clone()).await;
    let upstream = Upstream::start("api").await;
    let gw = gateway_on(&server, &upstream, "jwks_cache_ttl = \"1s\"");
    let start_hits = server.hits();
    let mut statuses = Vec::new();
    for round in 0..12u64 {
        server.set(
            200,
            if round % 2 == 0 {
                doc_ba.clone()
            } else {
                doc_a.clone()
            },
        );
        let batch = (0..10).map(|i| {
            let t = a
                .sign(&claims("https://ci.example", |c| {
                    c.insert("jti".into(), json!(round * 100 + i));
                }))
                .unwrap();
            let gw = &gw;
            async move { bearer_status(gw, &t).await }
        });
        statuses.extend(futures_util::future::join_all(batch).await);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(server.hits() >= start_hits + 3, "too few refreshes to tell");
}

/// JWKS-17 (Envoy CVE-2025-64527): requests carrying two tokens while the
/// JWKS fetch fails are answered — 400 `invalid_request` (JWT-26) — never a
/// crash; each token alone is 401; the gateway keeps serving and picks up the
/// keys when the endpoint recovers.
#[tokio::test(flavor = "multi_thread")]
async fn jwks17_two_tokens_while_the_jwks_fetch_fails_are_answered_without_a_crash() {
    let a = provider().await;
    let server = JwksServer::start(String::new()).await;
    server.set(503, "down".into());
    let upstream = Upstream::start("api").await;
    let gw = gateway_on(&server, &upstream, "jwks_cache_ttl = \"1s\"");
    let t1 = a.sign(&claims("https://ci.example", |_| {})).unwrap();
    let t2 = a
        .sign(&claims("https://ci.example", |c| {
            c.insert("jti".into(), json!("second"));
        }))
        .unwrap();
    let two = |t1: String, t2: String| {
        client()
            .get(gw.url("/x"))
            .header("authorization", format!("Bearer {t1}"))
            .header("authorization", format!("Bearer {t2}"))
            .send()
    };
    let mut calls = Vec::new();
    for _ in 0..10 {
        calls.push(two(t1.clone(), t2.clone()));
    }
    for r in futures_util::future::join_all(calls).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 400);
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.contains("invalid_request"), "{challenge}");
    }
    let alone =
        futures_util::future::join_all([&t1, &t2, &t1].map(|t| bearer_status(&gw, t))).await;
    assert_eq!(alone, vec![401, 401, 401]);
    assert_eq!(upstream.requests().len(), 0);
    server.set(200, jwks_of(&a).await);
    assert!(
        eventually(6, async || bearer_status(&gw, &t1).await == 200).await,
        "the gateway did not recover"
    );
}

/// JWKS-15: a JWKS endpoint whose certificate nobody vouches for (self-signed)
/// is a failed fetch, with no insecure fallback: its keys are never used
/// (401, counted failed), although the very same URL serves the issuer's JWKS
/// to a client that skips verification.
#[tokio::test(flavor = "multi_thread")]
async fn jwks15_a_jwks_endpoint_with_an_untrusted_certificate_is_a_failed_fetch() {
    let a = provider().await;
    let keys = JwksServer::start(jwks_of(&a).await).await;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures");
    // A gateway serving TLS with a self-signed certificate, passing /jwks on to `keys`.
    let tls = Gateway::start_full(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
public_url = "https://127.0.0.1:8443"
threads = 1
shutdown_timeout = "2s"
tls = {{ cert_file = "{}", key_file = "{}" }}

[session]
secrets = ["{}"]

[store]
url = "sqlite::memory:"

[[app]]
name = "keys"
upstream = "http://{}"
public_paths = ["/jwks"]
"#,
        fixtures.join("selfsigned-cert.pem").display(),
        fixtures.join("selfsigned-key.pem").display(),
        crate::support::SECRET,
        keys.addr,
    ));
    let url = format!("https://127.0.0.1:{}/jwks", tls.addr.port());
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\nissuer = \"https://ci.example\"\noidc_jwks_url = \"{url}\"\njwks_cache_ttl = \"1s\"\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        upstream.url()
    ));
    let token = a.sign(&claims("https://ci.example", |_| {})).unwrap();
    assert_eq!(bearer_status(&gw, &token).await, 401);
    assert!(
        eventually(5, async || metric(&gw, CI_FAILED).await >= 2).await,
        "the fetches were not counted as failed"
    );
    assert_eq!(keys.hits(), 0, "a fetch got through the untrusted TLS");
    // The endpoint itself works: it serves the issuer's keys to a careless client.
    let careless = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let served: Value = careless
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(served["keys"].as_array().is_some_and(|k| !k.is_empty()));
    assert_eq!(keys.hits(), 1);
    assert_eq!(bearer_status(&gw, &token).await, 401);
    assert_eq!(upstream.requests().len(), 0);
}

/// A worker remembers the verdict keys of tokens it saw (`memo.rs`): a
/// token good for one app's audience stays refused by an app with another,
/// however often the two are asked in turn.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_for_one_apps_audience_stays_refused_by_another_app_asked_in_turn() {
    let trusted = provider().await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{wk}\"\n\
         [[app]]\nname = \"api\"\nhost = \"api.test\"\nupstream = \"{up}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n\
         [[app]]\nname = \"billing\"\nhost = \"billing.test\"\nupstream = \"{up}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"billing\"]\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        wk = trusted.well_known_url(),
        up = upstream.url()
    ));
    gw.ready().await;
    let token = trusted.sign(&claims(&trusted.issuer(), |_| {})).unwrap();
    let c = client();
    for round in 0..4 {
        for (host, status) in [("api.test", 200), ("billing.test", 401)] {
            let r = c
                .get(gw.url("/x"))
                .header("host", host)
                .header("accept", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), status, "round {round}, {host}");
        }
    }
    assert_eq!(
        upstream.requests().len(),
        4,
        "only api's requests went upstream"
    );
}

/// JWT-18 over time: a token verified while its `iat` was young enough is
/// refused once `iat` is older than `jwt_max_age`, although its `exp` has not
/// come: the verdict cache does not outlive the age limit a fresh check applies.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_admitted_while_young_is_refused_once_its_iat_is_older_than_jwt_max_age() {
    let s = crate::signin::Setup::start_on_manual_clock(
        "jwt_max_age = \"5m\"\n",
        "jwt_sources = [\"demo\"]\njwt_audiences = [\"api\"]\n",
        |_| {},
    )
    .await;
    let now = s.clock.now_unix();
    let token = s
        .provider
        .sign(&claims(&s.provider.issuer(), |c| {
            c.insert("iat".into(), json!(now - 290));
            c.insert("exp".into(), json!(now + 300));
        }))
        .unwrap();
    let call = || {
        client()
            .get(s.gw.url("/private"))
            .bearer_auth(&token)
            .send()
    };
    let r = call().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    s.advance(std::time::Duration::from_secs(5));
    assert_eq!(call().await.unwrap().status(), 200, "still young enough");
    s.advance(std::time::Duration::from_secs(10));
    let r = call().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

/// JWT-03/JWT-04 with a token that verifies: `jwt_algorithms` decides which
/// algorithms a source's machine tokens may use, whatever key of the
/// source would verify them (the relabelled-signature cases above fail the
/// signature anyway, so they cannot tell whether the allow-list holds).
#[tokio::test(flavor = "multi_thread")]
async fn jwt03_a_valid_token_in_an_algorithm_the_source_does_not_allow_is_refused() {
    let trusted = provider().await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\njwt_algorithms = [\"ES256\"]\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        trusted.well_known_url(),
        upstream.url()
    ));
    gw.ready().await;
    let call = |token: String| {
        client()
            .get(gw.url("/deploy"))
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    let rs256 = trusted.sign(&claims(&trusted.issuer(), |_| {})).unwrap();
    let r = call(rs256).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    assert!(upstream.requests().is_empty());
    trusted.set_faults(|f| f.alg = SignAlg::ES256);
    let es256 = trusted.sign(&claims(&trusted.issuer(), |_| {})).unwrap();
    assert_eq!(call(es256).await.unwrap().status(), 200);
    assert_eq!(upstream.requests().len(), 1);
}
