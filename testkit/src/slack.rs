//! A fake of "Sign in with Slack" for tests, written from Slack's
//! documentation and deliberately not from the `slack` preset (it reads no
//! preset table: a preset that got Slack wrong fails against it).
//!
//! Documented behaviour it reproduces:
//! * `GET /openid/connect/authorize`: `response_type=code`, `client_id`,
//!   `scope` with `openid`, `redirect_uri`, `state`, optional `nonce`
//!   (https://docs.slack.dev/authentication/sign-in-with-slack/);
//!   approves the demo person at once.
//! * `POST /api/openid.connect.token`: form arguments `client_id`,
//!   `client_secret`, `code`, `redirect_uri` (required when it was sent to
//!   authorize), `grant_type`; HTTP Basic is accepted too (the discovery
//!   document lists `client_secret_basic`). Answers `{"ok":true,
//!   "access_token","token_type":"Bearer","id_token"}`, and every failure
//!   as HTTP 200 `{"ok":false,"error":…}`
//!   (https://docs.slack.dev/reference/methods/openid.connect.token).
//! * `GET|POST /api/openid.connect.userInfo` with the token as a bearer (or
//!   the `token` form argument): the documented example answer, with the
//!   workspace as `https://slack.com/team_id`
//!   (https://docs.slack.dev/reference/methods/openid.connect.userInfo).
//! * `GET /openid/connect/keys`: the RS256 key set; ID tokens say
//!   `iss = https://slack.com` (https://slack.com/.well-known/openid-configuration).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, LOCATION};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rand::RngCore;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

use crate::server::{respond, spawn_server};

/// The client id the fake knows (the shape of Slack's example).
pub const CLIENT_ID: &str = "2141029472.691202649728";
/// The client secret the fake checks.
pub const CLIENT_SECRET: &str = "e1b9e11dfcd19c1982d5de12921e17e8c";
/// Slack's issuer, as its discovery document and ID tokens state it.
pub const ISSUER: &str = "https://slack.com";
/// The demo person's user id (`sub`), from the documented example.
pub const USER_ID: &str = "U0R7JM";
/// The demo person's workspace (`https://slack.com/team_id`).
pub const TEAM_ID: &str = "T0R7GR";
/// The demo person's address.
pub const EMAIL: &str = "krane@slack-corp.com";
/// The demo person's `name`.
pub const NAME: &str = "krane";

type Resp = Response<Full<Bytes>>;

struct Grant {
    redirect_uri: String,
    nonce: Option<String>,
}

#[derive(Default)]
struct State {
    codes: HashMap<String, Grant>,
    tokens: Vec<String>,
    userinfo_error: Option<&'static str>,
}

struct Shared {
    state: Mutex<State>,
    rsa: RsaKeyPair,
    kid: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running Slack fake.
pub struct SlackFake {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

/// Why the fake could not start.
#[derive(Debug, thiserror::Error)]
#[error("the Slack fake could not start: {0}")]
pub struct StartError(String);

impl SlackFake {
    /// Starts the fake on `listener`.
    pub fn start(listener: TcpListener) -> Result<SlackFake, StartError> {
        let addr = listener
            .local_addr()
            .map_err(|e| StartError(e.to_string()))?;
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| StartError(e.to_string()))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            rsa,
            kid: format!("slack-{}", random_token(6)),
        });
        let handler_shared = shared.clone();
        let stop = spawn_server(listener, move |req| handle(handler_shared.clone(), req));
        Ok(SlackFake { addr, shared, stop })
    }

    /// The URL of one of Slack's paths on the fake (`/api/openid.connect.token`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Makes `openid.connect.userInfo` fail with `{"ok":false,"error":…}`
    /// (`None`: answer normally).
    pub fn set_userinfo_error(&self, error: Option<&'static str>) {
        self.shared.lock().userinfo_error = error;
    }
}

impl Drop for SlackFake {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    match (path.as_str(), req.method().clone()) {
        ("/openid/connect/authorize", Method::GET) => authorize(&shared, &query),
        ("/api/openid.connect.token", Method::POST) => token(&shared, req).await,
        ("/api/openid.connect.userInfo", Method::GET | Method::POST) => {
            userinfo(&shared, req).await
        }
        ("/openid/connect/keys", Method::GET) => json(&jwks(&shared)),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn pairs(raw: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

fn authorize(shared: &Shared, query: &str) -> Resp {
    let q = pairs(query);
    let get = |k: &str| q.get(k).map(String::as_str);
    let scopes: Vec<&str> = get("scope").unwrap_or("").split(' ').collect();
    if get("response_type") != Some("code")
        || get("client_id") != Some(CLIENT_ID)
        || !scopes.contains(&"openid")
    {
        // Slack shows an error page to the person, not a redirect.
        return respond(StatusCode::BAD_REQUEST, "text/plain", "invalid request\n");
    }
    let Some(redirect) = get("redirect_uri").and_then(|r| Url::parse(r).ok()) else {
        return respond(StatusCode::BAD_REQUEST, "text/plain", "bad redirect_uri\n");
    };
    let code = random_token(24);
    shared.lock().codes.insert(
        code.clone(),
        Grant {
            redirect_uri: redirect.to_string(),
            nonce: get("nonce").map(str::to_string),
        },
    );
    let mut target = redirect;
    target.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = get("state") {
        target.query_pairs_mut().append_pair("state", state);
    }
    let mut resp = respond(StatusCode::FOUND, "text/plain", "");
    if let Ok(v) = HeaderValue::from_str(target.as_str()) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

async fn read_form(req: Request<Incoming>) -> (Option<String>, HashMap<String, String>) {
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (auth, pairs(&String::from_utf8_lossy(&body)))
}

fn failed(error: &str) -> Resp {
    // Slack answers failures with HTTP 200 and "ok": false.
    json(&json!({"ok": false, "error": error}))
}

async fn token(shared: &Shared, req: Request<Incoming>) -> Resp {
    let (auth, form) = read_form(req).await;
    let get = |k: &str| form.get(k).map(String::as_str);
    let basic = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let (id, secret) = match basic.as_deref().and_then(|b| b.split_once(':')) {
        Some((i, s)) => (Some(i.to_string()), Some(s.to_string())),
        None => (
            get("client_id").map(str::to_string),
            get("client_secret").map(str::to_string),
        ),
    };
    if id.as_deref() != Some(CLIENT_ID) {
        return failed("invalid_client_id");
    }
    if secret.as_deref() != Some(CLIENT_SECRET) {
        return failed("bad_client_secret");
    }
    if get("grant_type").is_some_and(|g| g != "authorization_code") {
        return failed("invalid_grant_type");
    }
    let Some(grant) = get("code").and_then(|c| shared.lock().codes.remove(c)) else {
        return failed("invalid_code");
    };
    if get("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return failed("bad_redirect_uri");
    }
    let access = format!("xoxp-{}", random_token(16));
    shared.lock().tokens.push(access.clone());
    let now = unix_now();
    let mut claims = json!({
        "iss": ISSUER,
        "sub": USER_ID,
        "aud": CLIENT_ID,
        "exp": now + 300,
        "iat": now,
        "auth_time": now,
        "https://slack.com/user_id": USER_ID,
        "https://slack.com/team_id": TEAM_ID,
        "email": EMAIL,
        "email_verified": true,
        "date_email_verified": 1_622_128_723,
        "locale": "en-US",
        "name": NAME,
        "given_name": "Bront",
        "family_name": "Labradoodle",
        "https://slack.com/team_name": "kraneflannel",
        "https://slack.com/team_domain": "kraneflannel",
    });
    if let (Some(nonce), Some(obj)) = (grant.nonce, claims.as_object_mut()) {
        obj.insert("nonce".into(), Value::String(nonce));
    }
    let Some(id_token) = sign(shared, &claims) else {
        return failed("internal_error");
    };
    json(&json!({
        "ok": true,
        "access_token": access,
        "token_type": "Bearer",
        "id_token": id_token,
    }))
}

async fn userinfo(shared: &Shared, req: Request<Incoming>) -> Resp {
    let (auth, form) = read_form(req).await;
    let token = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| form.get("token").cloned());
    let state = shared.lock();
    if let Some(error) = state.userinfo_error {
        return failed(error);
    }
    if !token.is_some_and(|t| state.tokens.contains(&t)) {
        return failed("invalid_auth");
    }
    json(&json!({
        "ok": true,
        "sub": USER_ID,
        "https://slack.com/user_id": USER_ID,
        "https://slack.com/team_id": TEAM_ID,
        "email": EMAIL,
        "email_verified": true,
        "date_email_verified": 1_622_128_723,
        "name": NAME,
        "given_name": "Bront",
        "family_name": "Labradoodle",
        "locale": "en-US",
        "https://slack.com/team_name": "kraneflannel",
        "https://slack.com/team_domain": "kraneflannel",
    }))
}

fn jwks(shared: &Shared) -> Value {
    let public = shared.rsa.public_key();
    let n = public.modulus().big_endian_without_leading_zero().to_vec();
    let e = public.exponent().big_endian_without_leading_zero().to_vec();
    json!({"keys": [{
        "kty": "RSA", "alg": "RS256", "use": "sig", "kid": shared.kid,
        "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
    }]})
}

fn sign(shared: &Shared, claims: &Value) -> Option<String> {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": shared.kid});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0u8; shared.rsa.public_modulus_len()];
    shared
        .rsa
        .sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut signature,
        )
        .ok()?;
    Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

fn json(v: &Value) -> Resp {
    respond(
        StatusCode::OK,
        "application/json; charset=utf-8",
        v.to_string(),
    )
}

fn random_token(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
