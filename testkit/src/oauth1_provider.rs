//! A small OAuth 1.0a provider (RFC 5849 three-legged flow, HMAC-SHA1,
//! Twitter-1.1-like endpoints) whose misbehaviour is plain data:
//! [`Oauth1Faults::default()`] is a correct provider; each field breaks one thing.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rand::RngCore;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

use crate::oauth1::{self, Authorization, VerifyError};
use crate::server::respond;

/// How long a request token can be authorized and exchanged (RFC 5849 §2:
/// temporary credentials should have a limited lifetime).
const TEMPORARY_TTL: Duration = Duration::from_secs(600);
/// How far `oauth_timestamp` may be from the provider's clock.
const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// Largest request body read.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// The `realm` of the provider's `WWW-Authenticate` challenges.
const REALM: &str = "portcullis-demo";
/// Content type of the token endpoints' answers (RFC 5849 §2.1, §2.3).
const FORM: &str = "application/x-www-form-urlencoded";

type Resp = Response<Full<Bytes>>;

// ---------------------------------------------------------------------------
// Configuration and fault knobs
// ---------------------------------------------------------------------------

/// The one registered client and the user every authorization approves.
#[derive(Clone, PartialEq, Eq)]
pub struct Oauth1ProviderConfig {
    /// `oauth_consumer_key` of the registered client.
    pub consumer_key: String,
    /// Its shared secret.
    pub consumer_secret: String,
    /// `oauth_callback` values the client may use, compared byte for byte
    /// (`oob` is not accepted: the gateway always has a callback).
    pub callbacks: Vec<String>,
    /// Who `GET /oauth/authorize` signs in, at once, no page.
    pub user: Oauth1User,
}

impl Oauth1ProviderConfig {
    /// Client `portcullis-demo` with a fresh random secret, allowed to come
    /// back to `callback`; the user is `alice`.
    pub fn example(callback: &str) -> Self {
        Oauth1ProviderConfig {
            consumer_key: "portcullis-demo".to_string(),
            consumer_secret: random_token(24),
            callbacks: vec![callback.to_string()],
            user: Oauth1User {
                user_id: "783214".to_string(),
                screen_name: "alice".to_string(),
                name: "Alice Example".to_string(),
                email: "alice@example.com".to_string(),
            },
        }
    }
}

impl fmt::Debug for Oauth1ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oauth1ProviderConfig")
            .field("consumer_key", &self.consumer_key)
            .field("consumer_secret", &"[redacted]")
            .field("callbacks", &self.callbacks)
            .field("user", &self.user)
            .finish()
    }
}

/// The demo user, as the access token answer and the profile present it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oauth1User {
    /// `user_id` in the access token answer; `id_str` in the profile.
    pub user_id: String,
    /// `screen_name` in both.
    pub screen_name: String,
    /// `name` in the profile.
    pub name: String,
    /// `email` in the profile, only when asked with `include_email=true`.
    pub email: String,
}

/// What the request token answer says in `oauth_callback_confirmed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CallbackConfirmed {
    /// `true` (correct, RFC 5849 §2.1).
    #[default]
    True,
    /// `false`.
    False,
    /// The field is left out (an OAuth 1.0 provider without the 1.0a fix).
    Omit,
}

/// Misbehaviour on demand. `Oauth1Faults::default()` is a correct provider;
/// each field changes only the thing it names. There is deliberately no
/// knob to accept a wrong signature: the provider never does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Oauth1Faults {
    /// `oauth_callback_confirmed` of the request token answer.
    pub callback_confirmed: CallbackConfirmed,
    /// The request token endpoint answers with this status and an
    /// `oauth_problem` body, and issues nothing.
    pub request_token_status: Option<u16>,
    /// The access token endpoint answers with this status and an
    /// `oauth_problem` body; the request token and verifier stay usable.
    pub access_token_status: Option<u16>,
    /// Both token endpoints answer 200 with a JSON body instead of a form.
    pub malformed_body: bool,
    /// Both token endpoints leave `oauth_token_secret` out of their answer.
    pub omit_token_secret: bool,
    /// Authorization redirects back with `denied=<token>` instead of a verifier.
    pub deny: bool,
    /// Authorization redirects back with this `oauth_token` instead of the
    /// one it authorized (the verifier is still the real one).
    pub callback_token: Option<String>,
    /// The profile endpoint answers with this status (e.g. 401).
    pub profile_status: Option<u16>,
    /// Every endpoint answers 503 (calls are still counted).
    pub down: bool,
}

/// An endpoint of the provider, for the call counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Oauth1Endpoint {
    /// `POST /oauth/request_token`: temporary credentials (RFC 5849 §2.1).
    RequestToken,
    /// `GET /oauth/authorize?oauth_token=…`: approves at once (§2.2).
    Authorize,
    /// `POST /oauth/access_token`: token credentials (§2.3).
    AccessToken,
    /// `GET /account/verify_credentials.json`: the profile, signed with the
    /// access token; `email` only with `include_email=true` (as Twitter 1.1).
    VerifyCredentials,
}

impl Oauth1Endpoint {
    /// Every endpoint.
    pub const ALL: [Oauth1Endpoint; 4] = [
        Oauth1Endpoint::RequestToken,
        Oauth1Endpoint::Authorize,
        Oauth1Endpoint::AccessToken,
        Oauth1Endpoint::VerifyCredentials,
    ];

    /// Its path on the provider.
    pub fn path(self) -> &'static str {
        match self {
            Oauth1Endpoint::RequestToken => "/oauth/request_token",
            Oauth1Endpoint::Authorize => "/oauth/authorize",
            Oauth1Endpoint::AccessToken => "/oauth/access_token",
            Oauth1Endpoint::VerifyCredentials => "/account/verify_credentials.json",
        }
    }

    fn from_path(path: &str) -> Option<Self> {
        Oauth1Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }

    fn method(self) -> Method {
        match self {
            Oauth1Endpoint::RequestToken | Oauth1Endpoint::AccessToken => Method::POST,
            Oauth1Endpoint::Authorize | Oauth1Endpoint::VerifyCredentials => Method::GET,
        }
    }

    fn allowed_method(self) -> &'static str {
        match self {
            Oauth1Endpoint::RequestToken | Oauth1Endpoint::AccessToken => "POST",
            Oauth1Endpoint::Authorize | Oauth1Endpoint::VerifyCredentials => "GET",
        }
    }
}

// ---------------------------------------------------------------------------
// The running provider
// ---------------------------------------------------------------------------

/// A running provider. Dropping it (or [`Oauth1Provider::shutdown`]) stops it.
pub struct Oauth1Provider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl fmt::Debug for Oauth1Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oauth1Provider")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

/// Serves the provider on `listener` (the caller binds it, e.g. to
/// 127.0.0.1:0). Needs a Tokio runtime.
pub fn start(listener: TcpListener, config: Oauth1ProviderConfig) -> Oauth1Provider {
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => {
            tracing::error!(%error, "demo OAuth 1.0a provider: listener has no local address");
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let shared = Arc::new(Shared {
        base_url: format!("http://{addr}"),
        addr,
        config,
        state: Mutex::new(State::default()),
    });
    let handler_state = Arc::clone(&shared);
    let stop =
        crate::server::spawn_server(listener, move |req| handle(Arc::clone(&handler_state), req));
    Oauth1Provider { addr, shared, stop }
}

impl Oauth1Provider {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The full URL of `endpoint`.
    pub fn url(&self, endpoint: Oauth1Endpoint) -> String {
        format!("{}{}", self.shared.base_url, endpoint.path())
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The client and user it was started with.
    pub fn config(&self) -> &Oauth1ProviderConfig {
        &self.shared.config
    }

    /// Changes the faults; applies to every request from now on.
    pub fn set_faults(&self, change: impl FnOnce(&mut Oauth1Faults)) {
        change(&mut self.shared.lock().faults);
    }

    /// The faults in force.
    pub fn faults(&self) -> Oauth1Faults {
        self.shared.lock().faults.clone()
    }

    /// Requests `endpoint` has received (also while `down`).
    pub fn calls(&self, endpoint: Oauth1Endpoint) -> usize {
        self.shared
            .lock()
            .calls
            .get(&endpoint)
            .copied()
            .unwrap_or(0)
    }

    /// Sets every call counter back to zero.
    pub fn reset_calls(&self) {
        self.shared.lock().calls.clear();
    }

    /// The last `oauth_verifier` issued by authorization (for replay tests).
    pub fn last_verifier(&self) -> Option<String> {
        self.shared.lock().last_verifier.clone()
    }

    /// The last request token issued.
    pub fn last_request_token(&self) -> Option<String> {
        self.shared.lock().last_request_token.clone()
    }

    /// Stops accepting and closes every open connection.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Oauth1Provider {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Shared {
    base_url: String,
    addr: SocketAddr,
    config: Oauth1ProviderConfig,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panicked holder
        // (a test) must not take the provider down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    faults: Oauth1Faults,
    calls: HashMap<Oauth1Endpoint, usize>,
    /// Request tokens not yet exchanged.
    temporary: HashMap<String, TemporaryGrant>,
    /// Access token -> its secret.
    access: HashMap<String, String>,
    /// (token, timestamp, nonce) of every accepted request in the skew
    /// window (RFC 5849 §3.2: a nonce is used once).
    nonces: HashSet<(String, u64, String)>,
    last_verifier: Option<String>,
    last_request_token: Option<String>,
}

struct TemporaryGrant {
    secret: String,
    callback: String,
    /// Set once the user approved.
    verifier: Option<String>,
    expires: Instant,
}

// ---------------------------------------------------------------------------
// Routing and the signature check every endpoint but authorize shares
// ---------------------------------------------------------------------------

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let endpoint = Oauth1Endpoint::from_path(req.uri().path());
    let down = {
        let mut state = shared.lock();
        if let Some(endpoint) = endpoint {
            *state.calls.entry(endpoint).or_insert(0) += 1;
        }
        state.faults.down
    };
    if down {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the demo OAuth 1.0a provider is down (Oauth1Faults.down)\n",
        );
    }
    let Some(endpoint) = endpoint else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    if req.method() != endpoint.method() {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response.headers_mut().insert(
            http::header::ALLOW,
            HeaderValue::from_static(endpoint.allowed_method()),
        );
        return response;
    }
    match endpoint {
        Oauth1Endpoint::RequestToken => request_token(&shared, req).await,
        Oauth1Endpoint::Authorize => authorize(&shared, req.uri().query()),
        Oauth1Endpoint::AccessToken => access_token(&shared, req).await,
        Oauth1Endpoint::VerifyCredentials => verify_credentials(&shared, req).await,
    }
}

/// A request as the signature saw it, its header parsed but not yet verified.
struct SignedCall {
    method: String,
    url: Url,
    /// The body, only when sent as `application/x-www-form-urlencoded`.
    form: Option<Bytes>,
    auth: Authorization,
}

/// Reads the request and its `Authorization: OAuth` header, and checks the
/// consumer key. The signature is checked by [`SignedCall::verify`] once the
/// endpoint knows which token secret applies.
#[allow(clippy::result_large_err)] // the error is the response to send
async fn read_signed(shared: &Shared, req: Request<Incoming>) -> Result<SignedCall, Resp> {
    let (parts, body) = req.into_parts();
    // RFC 5849 §3.4.1.2: the base string URI follows the Host header.
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| shared.addr.to_string(), str::to_string);
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let Ok(url) = Url::parse(&format!("http://{host}{target}")) else {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "parameter_rejected",
            "bad Host or target",
        ));
    };
    let is_form = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with(FORM));
    let body = match Limited::new(body, MAX_FORM_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Err(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or unreadable\n",
            ))
        }
    };
    let Some(header) = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "parameter_absent",
            "no OAuth Authorization header",
        ));
    };
    let auth = Authorization::parse(header).map_err(verify_error)?;
    if auth.consumer_key() != Some(shared.config.consumer_key.as_str()) {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "consumer_key_unknown",
            "unknown consumer key",
        ));
    }
    Ok(SignedCall {
        method: parts.method.as_str().to_string(),
        url,
        form: is_form.then_some(body),
        auth,
    })
}

impl SignedCall {
    /// Checks the signature with `token_secret`, the timestamp window, and
    /// that the nonce is new; records the nonce.
    #[allow(clippy::result_large_err)] // the error is the response to send
    fn verify(&self, shared: &Shared, token_secret: &str) -> Result<(), Resp> {
        oauth1::verify(
            &self.method,
            &self.url,
            self.form.as_deref(),
            &self.auth,
            &shared.config.consumer_secret,
            token_secret,
        )
        .map_err(verify_error)?;
        let now = unix_now();
        let timestamp = self.auth.timestamp().unwrap_or(0);
        if timestamp.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
            return Err(problem(
                StatusCode::UNAUTHORIZED,
                "timestamp_refused",
                "oauth_timestamp is too far from now",
            ));
        }
        let key = (
            self.auth.token().unwrap_or("").to_string(),
            timestamp,
            self.auth.nonce().unwrap_or("").to_string(),
        );
        let mut state = shared.lock();
        state
            .nonces
            .retain(|(_, seen, _)| seen.abs_diff(now) <= MAX_CLOCK_SKEW_SECS);
        if !state.nonces.insert(key) {
            return Err(problem(
                StatusCode::UNAUTHORIZED,
                "nonce_used",
                "this oauth_nonce was used before",
            ));
        }
        Ok(())
    }
}

/// RFC 5849 §3.2: 400 for malformed or missing parameters, 401 for a bad signature.
fn verify_error(error: VerifyError) -> Resp {
    let (status, name) = match &error {
        VerifyError::NotOAuth => (StatusCode::UNAUTHORIZED, "parameter_absent"),
        VerifyError::BadSignature => (StatusCode::UNAUTHORIZED, "signature_invalid"),
        VerifyError::UnsupportedSignatureMethod(_) => {
            (StatusCode::BAD_REQUEST, "signature_method_rejected")
        }
        VerifyError::Version => (StatusCode::BAD_REQUEST, "version_rejected"),
        VerifyError::Missing(_) => (StatusCode::BAD_REQUEST, "parameter_absent"),
        VerifyError::Malformed(_)
        | VerifyError::Duplicate(_)
        | VerifyError::ParameterOutsideHeader(_)
        | VerifyError::Url => (StatusCode::BAD_REQUEST, "parameter_rejected"),
    };
    problem(status, name, &error.to_string())
}

// ---------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------

async fn request_token(shared: &Shared, req: Request<Incoming>) -> Resp {
    let call = match read_signed(shared, req).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let faults = shared.lock().faults.clone();
    if let Some(status) = faults.request_token_status {
        return problem(
            status_code(status),
            "injected",
            "Oauth1Faults.request_token_status",
        );
    }
    // §2.1: signed with the client credentials only; an empty oauth_token may be sent.
    if call.auth.token().is_some_and(|t| !t.is_empty()) {
        return problem(
            StatusCode::BAD_REQUEST,
            "parameter_rejected",
            "no oauth_token expected",
        );
    }
    if let Err(response) = call.verify(shared, "") {
        return response;
    }
    let Some(callback) = call.auth.get("oauth_callback") else {
        return problem(
            StatusCode::BAD_REQUEST,
            "parameter_absent",
            "oauth_callback is required",
        );
    };
    if !shared.config.callbacks.iter().any(|c| c == callback) {
        return problem(
            StatusCode::BAD_REQUEST,
            "parameter_rejected",
            "oauth_callback is not registered",
        );
    }
    let token = random_token(24);
    let secret = random_token(24);
    {
        let mut state = shared.lock();
        let now = Instant::now();
        state.temporary.retain(|_, grant| grant.expires > now);
        state.temporary.insert(
            token.clone(),
            TemporaryGrant {
                secret: secret.clone(),
                callback: callback.to_string(),
                verifier: None,
                expires: now + TEMPORARY_TTL,
            },
        );
        state.last_request_token = Some(token.clone());
    }
    let confirmed = match faults.callback_confirmed {
        CallbackConfirmed::True => Some("true"),
        CallbackConfirmed::False => Some("false"),
        CallbackConfirmed::Omit => None,
    };
    let mut fields = vec![
        ("oauth_token", token.as_str()),
        ("oauth_token_secret", secret.as_str()),
    ];
    if let Some(confirmed) = confirmed {
        fields.push(("oauth_callback_confirmed", confirmed));
    }
    token_answer(&faults, &fields)
}

/// Approves at once as the configured user and sends the browser back with
/// `oauth_token` and a fresh `oauth_verifier` appended to the callback's
/// query (RFC 5849 §2.2).
fn authorize(shared: &Shared, query: Option<&str>) -> Resp {
    let mut token = None;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if name == "oauth_token" {
            if token.is_some() {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "oauth_token given more than once\n",
                );
            }
            token = Some(value.into_owned());
        }
    }
    let Some(token) = token else {
        return plain(StatusCode::BAD_REQUEST, "oauth_token is required\n");
    };
    let faults = shared.lock().faults.clone();
    let verifier = random_token(16);
    let callback = {
        let mut state = shared.lock();
        let now = Instant::now();
        let Some(grant) = state
            .temporary
            .get_mut(&token)
            .filter(|grant| grant.expires > now)
        else {
            return plain(
                StatusCode::BAD_REQUEST,
                "unknown, used or expired oauth_token\n",
            );
        };
        if !faults.deny {
            grant.verifier = Some(verifier.clone());
        }
        let callback = grant.callback.clone();
        if !faults.deny {
            state.last_verifier = Some(verifier.clone());
        }
        callback
    };
    let Ok(mut location) = Url::parse(&callback) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "registered callback is not a URL\n",
        );
    };
    {
        let mut query = location.query_pairs_mut();
        if faults.deny {
            query.append_pair("denied", &token);
        } else {
            query.append_pair(
                "oauth_token",
                faults.callback_token.as_deref().unwrap_or(&token),
            );
            query.append_pair("oauth_verifier", &verifier);
        }
    }
    redirect(&location)
}

async fn access_token(shared: &Shared, req: Request<Incoming>) -> Resp {
    let call = match read_signed(shared, req).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    let faults = shared.lock().faults.clone();
    if let Some(status) = faults.access_token_status {
        return problem(
            status_code(status),
            "injected",
            "Oauth1Faults.access_token_status",
        );
    }
    let Some(token) = call.auth.token().map(str::to_string) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "parameter_absent",
            "oauth_token is required",
        );
    };
    let secret = shared
        .lock()
        .temporary
        .get(&token)
        .map(|g| g.secret.clone());
    let Some(secret) = secret else {
        return problem(
            StatusCode::UNAUTHORIZED,
            "token_rejected",
            "unknown or already used request token",
        );
    };
    if let Err(response) = call.verify(shared, &secret) {
        return response;
    }
    // Signed by the holder of the request token: from here the request
    // token and its verifier are spent, whatever happens next (§2.3).
    let Some(grant) = shared.lock().temporary.remove(&token) else {
        return problem(
            StatusCode::UNAUTHORIZED,
            "token_rejected",
            "unknown or already used request token",
        );
    };
    if grant.expires <= Instant::now() {
        return problem(
            StatusCode::UNAUTHORIZED,
            "token_expired",
            "the request token expired",
        );
    }
    let Some(expected) = grant.verifier else {
        return problem(
            StatusCode::UNAUTHORIZED,
            "permission_unknown",
            "the request token was not authorized",
        );
    };
    let sent = call.auth.get("oauth_verifier").unwrap_or("");
    if aws_lc_rs::constant_time::verify_slices_are_equal(sent.as_bytes(), expected.as_bytes())
        .is_err()
    {
        return problem(
            StatusCode::UNAUTHORIZED,
            "verifier_invalid",
            "wrong oauth_verifier",
        );
    }
    let user = &shared.config.user;
    let access = format!("{}-{}", user.user_id, random_token(24));
    let access_secret = random_token(24);
    shared
        .lock()
        .access
        .insert(access.clone(), access_secret.clone());
    token_answer(
        &faults,
        &[
            ("oauth_token", access.as_str()),
            ("oauth_token_secret", access_secret.as_str()),
            ("user_id", user.user_id.as_str()),
            ("screen_name", user.screen_name.as_str()),
        ],
    )
}

async fn verify_credentials(shared: &Shared, req: Request<Incoming>) -> Resp {
    let call = match read_signed(shared, req).await {
        Ok(call) => call,
        Err(response) => return response,
    };
    if let Some(status) = shared.lock().faults.profile_status {
        return problem(
            status_code(status),
            "injected",
            "Oauth1Faults.profile_status",
        );
    }
    let secret = call
        .auth
        .token()
        .and_then(|token| shared.lock().access.get(token).cloned());
    let Some(secret) = secret else {
        return problem(
            StatusCode::UNAUTHORIZED,
            "token_rejected",
            "unknown access token",
        );
    };
    if let Err(response) = call.verify(shared, &secret) {
        return response;
    }
    let include_email = call
        .url
        .query_pairs()
        .any(|(name, value)| name == "include_email" && value == "true");
    let user = &shared.config.user;
    let mut profile = Map::new();
    profile.insert("id_str".into(), json!(user.user_id));
    profile.insert("screen_name".into(), json!(user.screen_name));
    profile.insert("name".into(), json!(user.name));
    if include_email {
        profile.insert("email".into(), json!(user.email));
    }
    respond(
        StatusCode::OK,
        "application/json",
        Value::Object(profile).to_string(),
    )
}

// ---------------------------------------------------------------------------
// Responses and small helpers
// ---------------------------------------------------------------------------

/// A token endpoint's 200 answer, form-encoded, or broken as the faults say.
fn token_answer(faults: &Oauth1Faults, fields: &[(&str, &str)]) -> Resp {
    let kept = fields
        .iter()
        .filter(|(name, _)| !(faults.omit_token_secret && *name == "oauth_token_secret"));
    if faults.malformed_body {
        let object: Map<String, Value> = kept.map(|(n, v)| ((*n).to_string(), json!(v))).collect();
        return respond(
            StatusCode::OK,
            "application/json",
            Value::Object(object).to_string(),
        );
    }
    let mut body = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in kept {
        body.append_pair(name, value);
    }
    respond(StatusCode::OK, FORM, body.finish())
}

/// An error in the style of the OAuth Problem Reporting extension, which
/// OAuth 1.0a providers commonly use.
fn problem(status: StatusCode, problem: &str, advice: &str) -> Resp {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("oauth_problem", problem)
        .append_pair("oauth_problem_advice", advice)
        .finish();
    let mut response = respond(status, FORM, body);
    if status == StatusCode::UNAUTHORIZED {
        if let Ok(challenge) = HeaderValue::from_str(&format!("OAuth realm=\"{REALM}\"")) {
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
    }
    response
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn plain(status: StatusCode, message: &'static str) -> Resp {
    respond(status, "text/plain; charset=utf-8", message)
}

fn redirect(location: &Url) -> Resp {
    let Ok(value) = HeaderValue::from_str(location.as_str()) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect target\n");
    };
    let mut response = respond(StatusCode::FOUND, "text/plain; charset=utf-8", "");
    response.headers_mut().insert(LOCATION, value);
    response
}

/// `len` random bytes, base64url (so tokens and verifiers need no encoding).
fn random_token(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
