//! A small OpenID provider (authorization code flow, PKCE, client_secret_basic
//! and _post, userinfo, JWKS, end-session) whose misbehaviour is plain data:
//! [`Faults::default()`] is a correct provider; each field breaks one thing.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use crate::clock::Clock;
use crate::random::NoRandom;

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

use super::respond;

/// How long an authorization code can be redeemed.
const CODE_TTL: Duration = Duration::from_secs(60);
/// `expires_in` of access tokens.
const ACCESS_TOKEN_TTL_SECS: u64 = 3600;
/// ID tokens expire this long after they are issued.
const ID_TOKEN_TTL_SECS: i64 = 300;
/// Largest form body read (authorize POST, token, end-session POST).
const MAX_FORM_BYTES: usize = 64 * 1024;

type Resp = Response<Full<Bytes>>;

// ---------------------------------------------------------------------------
// Configuration and fault knobs
// ---------------------------------------------------------------------------

/// Who may use the provider: registered clients and the users one can sign in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Registered relying parties.
    pub clients: Vec<DemoClient>,
    /// Users offered on the sign-in page (no passwords).
    pub users: Vec<DemoUser>,
}

impl ProviderConfig {
    /// One client, `portcullis-demo` with a fresh random secret, allowed to
    /// return to `redirect_uri`; users `alice` (groups admins, staff) and
    /// `bob` (staff; his email is not verified). Fails only without a
    /// secure random source for the secret.
    pub fn example(redirect_uri: &str) -> Result<Self, NoRandom> {
        Ok(ProviderConfig {
            clients: vec![DemoClient {
                client_id: "portcullis-demo".to_string(),
                client_secret: random_token(24)?,
                redirect_uris: vec![redirect_uri.to_string()],
            }],
            users: vec![
                DemoUser {
                    sub: "alice".to_string(),
                    preferred_username: "alice".to_string(),
                    email: "alice@example.com".to_string(),
                    email_verified: true,
                    name: "Alice Example".to_string(),
                    groups: vec!["admins".to_string(), "staff".to_string()],
                },
                DemoUser {
                    sub: "bob".to_string(),
                    preferred_username: "bob".to_string(),
                    email: "bob@example.com".to_string(),
                    email_verified: false,
                    name: "Bob Example".to_string(),
                    groups: vec!["staff".to_string()],
                },
            ],
        })
    }
}

/// A registered relying party.
#[derive(Clone, PartialEq, Eq)]
pub struct DemoClient {
    /// `client_id`; also the ID token's `aud` and `azp`.
    pub client_id: String,
    /// Checked by client_secret_basic / _post; the HS256 key.
    pub client_secret: String,
    /// Allowed `redirect_uri` values, compared byte for byte.
    pub redirect_uris: Vec<String>,
}

impl fmt::Debug for DemoClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("redirect_uris", &self.redirect_uris)
            .finish()
    }
}

/// A user one can sign in as; its fields become ID token and userinfo claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoUser {
    /// `sub` claim, and the value of the `user` field on the sign-in form.
    pub sub: String,
    /// `preferred_username` claim.
    pub preferred_username: String,
    /// `email` claim.
    pub email: String,
    /// `email_verified` claim.
    pub email_verified: bool,
    /// `name` claim.
    pub name: String,
    /// `groups` claim.
    pub groups: Vec<String>,
}

/// How the ID token is signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignAlg {
    /// RSA-2048, PKCS#1 v1.5 with SHA-256 (the default).
    #[default]
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// HMAC-SHA-256 keyed with the client secret's UTF-8 bytes (no `kid`).
    HS256,
    /// `alg: none` and an empty signature (no `kid`).
    None,
}

/// What the ID token says about the `nonce` of the authorization request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NonceFault {
    /// The nonce that was sent, if any (correct).
    #[default]
    Echo,
    /// No `nonce` claim at all.
    Omit,
    /// A nonce other than the one sent (also when none was sent).
    Wrong,
}

/// Whether the ID token header names its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KidFault {
    /// `kid` of the signing key (correct).
    #[default]
    Normal,
    /// No `kid` header.
    Omit,
}

/// Misbehaviour on demand. `Faults::default()` is a correct provider; each
/// field changes only the thing it names, so a test breaks exactly one thing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// ID token signing algorithm.
    pub alg: SignAlg,
    /// Flip one bit of the ID token's signature.
    pub bad_signature: bool,
    /// ID token `iss` instead of the issuer.
    pub iss: Option<String>,
    /// ID token `aud` instead of the client_id: a string, an array, or
    /// `Value::Null` for no `aud` at all.
    pub aud: Option<Value>,
    /// ID token `azp`: `None` = the client_id, `Some(None)` = no `azp`,
    /// `Some(Some(x))` = `x`.
    pub azp: Option<Option<String>>,
    /// No `iat` in the ID token.
    pub omit_iat: bool,
    /// No `exp` in the ID token.
    pub omit_exp: bool,
    /// No `auth_time` in the ID token.
    pub omit_auth_time: bool,
    /// Added to the ID token's `exp` (negative = in the past).
    pub exp_offset_secs: i64,
    /// Added to the ID token's `iat`.
    pub iat_offset_secs: i64,
    /// The ID token's `nonce`.
    pub nonce: NonceFault,
    /// No `sub` in the ID token.
    pub omit_sub: bool,
    /// The ID token header's `kid`.
    pub kid: KidFault,
    /// This many more keys of the signing key's type (EC for ES256, RSA
    /// otherwise) in the JWKS, listed before the real one.
    pub jwks_extra_keys: usize,
    /// Add a key of unknown type (`"kty":"AKP"`) to the JWKS.
    pub jwks_unparseable_key: bool,
    /// Sign with a new key whose `kid` no JWKS served before this was set
    /// listed; every JWKS served from then on lists it (beside the old keys).
    pub rotate_signing_key: bool,
    /// Userinfo `sub` instead of the user's.
    pub userinfo_sub: Option<String>,
    /// `issuer` of the discovery document instead of the real one (the
    /// endpoint URLs stay right).
    pub discovery_issuer: Option<String>,
    /// Authorization answers by redirecting back with `error=<this>&state=…`
    /// instead of a code (or the sign-in page).
    pub authorize_error: Option<String>,
    /// Every endpoint answers 503 (calls are still counted).
    pub down: bool,
    /// `GET /authorize` signs in as this `sub` at once, no page (tests).
    pub auto_approve_as: Option<String>,
    /// The token endpoint answers with this status and a `server_error` body
    /// (the code is not consumed).
    pub token_status: Option<u16>,
    /// The token endpoint gives this broken answer instead of tokens (the code
    /// is not consumed).
    pub token_answer: Option<Broken>,
    /// The token response's `token_type` instead of `Bearer`.
    pub token_type: Option<String>,
    /// The userinfo endpoint gives this broken answer instead of the profile.
    pub userinfo_answer: Option<Broken>,
    /// Authorization responses carry no `iss`, although the discovery
    /// document promises it (`authorization_response_iss_parameter_supported`).
    pub omit_response_iss: bool,
    /// `id_token_signing_alg_values_supported` of the discovery document
    /// instead of every algorithm the provider can sign with.
    pub advertised_algs: Option<Vec<String>>,
    /// Access tokens live this long (`expires_in`) instead of an hour.
    pub access_token_ttl_secs: Option<u64>,
    /// The token endpoint issues refresh tokens and accepts the
    /// `refresh_token` grant, rotating the refresh token on each use.
    pub refresh_tokens: bool,
    /// The `refresh_token` grant answers with an ID token too (OIDC Core
    /// §12.2), built as a sign-in's: the ID token faults above shape it.
    pub refresh_id_token: bool,
    /// ID token `sub` instead of the user's.
    pub id_token_sub: Option<String>,
}

/// A broken answer an endpoint gives instead of its real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// 200 with `{"error":"server_error"}`.
    ErrorIn200,
    /// 200 with an HTML page.
    Html,
    /// 200 with a JSON string just over 1 MiB.
    Oversize,
    /// This status with a JSON `server_error` body.
    Status(u16),
    /// No answer for [`HANG`] (past the gateway's 10 s outbound timeout).
    Hang,
}

/// How long a [`Broken::Hang`] endpoint keeps the caller waiting.
pub const HANG: Duration = Duration::from_secs(15);

/// The response of a [`Broken`] endpoint.
async fn broken(answer: Broken) -> Resp {
    match answer {
        Broken::ErrorIn200 => oauth_error(StatusCode::OK, "server_error", "injected in a 200"),
        Broken::Html => html_error(StatusCode::OK, "Maintenance", "Back soon."),
        Broken::Oversize => json_response(
            StatusCode::OK,
            &json!({ "padding": "x".repeat(1024 * 1024 + 1) }),
        ),
        Broken::Status(status) => oauth_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "server_error",
            "injected by Broken::Status",
        ),
        Broken::Hang => {
            tokio::time::sleep(HANG).await;
            oauth_error(StatusCode::OK, "server_error", "answered too late")
        }
    }
}

/// An endpoint of the provider, for the call counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// `GET /.well-known/openid-configuration`
    Discovery,
    /// `GET /authorize` and `POST /authorize` (the sign-in form).
    Authorize,
    /// `POST /token`
    Token,
    /// `GET`/`POST /userinfo`
    Userinfo,
    /// `GET /jwks`
    Jwks,
    /// `GET`/`POST /end_session`
    EndSession,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::Discovery,
        Endpoint::Authorize,
        Endpoint::Token,
        Endpoint::Userinfo,
        Endpoint::Jwks,
        Endpoint::EndSession,
    ];

    /// Its path on the provider.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Discovery => "/.well-known/openid-configuration",
            Endpoint::Authorize => "/authorize",
            Endpoint::Token => "/token",
            Endpoint::Userinfo => "/userinfo",
            Endpoint::Jwks => "/jwks",
            Endpoint::EndSession => "/end_session",
        }
    }

    fn from_path(path: &str) -> Option<Self> {
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }

    fn allowed_methods(self) -> &'static str {
        match self {
            Endpoint::Discovery | Endpoint::Jwks => "GET",
            Endpoint::Token => "POST",
            Endpoint::Authorize | Endpoint::Userinfo | Endpoint::EndSession => "GET, POST",
        }
    }
}

/// What the last token request carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequestSeen {
    /// The form fields (a repeated field keeps its last value).
    pub form: BTreeMap<String, String>,
    /// Whether the client sent `Authorization: Basic …` (client_secret_basic).
    pub basic_auth: bool,
}

// ---------------------------------------------------------------------------
// The running provider
// ---------------------------------------------------------------------------

/// A running provider. Dropping it (or [`Provider::shutdown`]) stops it.
pub struct Provider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.shared.issuer)
            .finish_non_exhaustive()
    }
}

/// Serves the provider on `listener` (the caller binds it, e.g. to
/// 127.0.0.1:0). Generates the signing keys first (RSA-2048 and P-256).
pub async fn start(listener: TcpListener, config: ProviderConfig) -> Provider {
    start_with_clock(listener, config, Clock::system()).await
}

/// [`start`] on `clock`: grants expire and tokens are stamped by it, so a
/// test that advances the gateway's manual clock moves the provider's too.
pub async fn start_with_clock(
    listener: TcpListener,
    config: ProviderConfig,
    clock: Clock,
) -> Provider {
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => {
            tracing::error!(%error, "demo provider: listener has no local address");
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let keys = generate_key_set().await;
    if keys.is_none() {
        // Never a panic: token and JWKS requests answer 500 instead.
        tracing::error!("demo provider: signing key generation failed");
    }
    let shared = Arc::new(Shared {
        issuer: format!("http://{addr}"),
        config,
        keys,
        state: Mutex::new(State::default()),
        clock,
    });
    let handler_state = Arc::clone(&shared);
    let stop = super::spawn_server(listener, move |req| handle(Arc::clone(&handler_state), req));
    Provider { addr, shared, stop }
}

impl Provider {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn well_known_url(&self) -> String {
        format!("{}{}", self.shared.issuer, Endpoint::Discovery.path())
    }

    /// The clients and users it was started with.
    pub fn config(&self) -> &ProviderConfig {
        &self.shared.config
    }

    /// Changes the faults; applies to every request from now on.
    pub fn set_faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.shared.lock().faults);
    }

    /// Signs `claims` as the provider signs ID tokens (same key, algorithm
    /// and faults), e.g. a back-channel logout token; `None` without keys.
    /// With `rotate_signing_key`, the rotated key is used once it exists (see [`Provider::rotate_keys`]).
    pub fn sign(&self, claims: &Map<String, Value>) -> Option<String> {
        let faults = self.faults();
        let rotated = self.shared.lock().rotated.clone();
        let keys = match rotated {
            Some(r) if faults.rotate_signing_key => r,
            _ => self.shared.keys.clone()?,
        };
        let secret = self
            .shared
            .config
            .clients
            .first()
            .map(|c| c.client_secret.clone())
            .unwrap_or_default();
        sign_id_token(claims, &faults, &keys, &secret).ok()
    }

    /// Makes the rotated signing key now (it is otherwise made on first use),
    /// so [`Provider::sign`] can sign with it.
    pub async fn rotate_keys(&self) -> bool {
        ensure_rotated(&self.shared).await.is_ok()
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Requests `endpoint` has received (also while `down`).
    pub fn calls(&self, endpoint: Endpoint) -> usize {
        self.shared
            .lock()
            .calls
            .get(&endpoint)
            .copied()
            .unwrap_or(0)
    }

    /// `refresh_token` grants that were answered with new tokens.
    pub fn refreshes(&self) -> usize {
        self.shared.lock().refreshes
    }

    /// Revokes every refresh token issued so far (the next refresh is refused).
    pub fn revoke_refresh_tokens(&self) {
        self.shared.lock().refresh_tokens.clear();
    }

    /// The refresh tokens issued and not yet used or revoked.
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        self.shared.lock().refresh_tokens.keys().cloned().collect()
    }

    /// Whether `access_token` is one this provider issued and has not expired.
    pub fn access_token_valid(&self, access_token: &str) -> bool {
        self.shared
            .lock()
            .access_tokens
            .get(access_token)
            .is_some_and(|g| g.expires > self.shared.clock.now())
    }

    /// Sets every call counter back to zero.
    pub fn reset_calls(&self) {
        self.shared.lock().calls.clear();
    }

    /// Query parameters of the last `GET /authorize`.
    pub fn last_authorize_query(&self) -> Option<BTreeMap<String, String>> {
        self.shared.lock().last_authorize_query.clone()
    }

    /// The last token request.
    pub fn last_token_request(&self) -> Option<TokenRequestSeen> {
        self.shared.lock().last_token_request.clone()
    }

    /// Parameters of the last end-session request (`id_token_hint`,
    /// `post_logout_redirect_uri`, `state`, …).
    pub fn last_end_session_query(&self) -> Option<BTreeMap<String, String>> {
        self.shared.lock().last_end_session_query.clone()
    }

    /// Stops accepting and closes every open connection.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Shared {
    issuer: String,
    config: ProviderConfig,
    /// `None` only if key generation failed at start.
    keys: Option<KeySet>,
    state: Mutex<State>,
    /// Grant expiry and token times.
    clock: Clock,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panicked holder
        // (a test) must not take the provider down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn client(&self, client_id: &str) -> Option<&DemoClient> {
        self.config
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
    }

    fn user(&self, sub: &str) -> Option<&DemoUser> {
        self.config.users.iter().find(|u| u.sub == sub)
    }
}

#[derive(Default)]
struct State {
    faults: Faults,
    calls: HashMap<Endpoint, usize>,
    codes: HashMap<String, CodeGrant>,
    access_tokens: HashMap<String, AccessGrant>,
    /// Live refresh tokens (one-time: each use rotates it).
    refresh_tokens: HashMap<String, RefreshGrant>,
    /// `refresh_token` grants answered with new tokens.
    refreshes: usize,
    last_authorize_query: Option<BTreeMap<String, String>>,
    last_token_request: Option<TokenRequestSeen>,
    last_end_session_query: Option<BTreeMap<String, String>>,
    /// The keys `rotate_signing_key` signs with, made the first time needed.
    rotated: Option<KeySet>,
    extra_rsa: Vec<RsaKey>,
    extra_ec: Vec<EcKey>,
}

/// What an authorization code stands for.
struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    sub: String,
    nonce: Option<String>,
    scope: String,
    pkce: Option<Pkce>,
    auth_time: i64,
    sid: String,
    expires: SystemTime,
}

struct AccessGrant {
    sub: String,
    expires: SystemTime,
}

/// What a refresh token stands for.
struct RefreshGrant {
    client_id: String,
    sub: String,
    scope: String,
    /// Of the sign-in the first refresh token came from.
    auth_time: i64,
    sid: String,
}

#[derive(Clone)]
struct Pkce {
    challenge: String,
    method: PkceMethod,
}

#[derive(Clone, Copy)]
enum PkceMethod {
    S256,
    Plain,
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct RsaKey {
    kid: String,
    /// RFC 8017 `RSAPrivateKey`: what jsonwebtoken's aws-lc backend parses
    /// (`RsaKeyPair::from_der`), unlike the EC signer, which takes PKCS#8.
    pkcs1_der: Vec<u8>,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl RsaKey {
    fn generate() -> Option<Self> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).ok()?;
        let pkcs8: Pkcs8V1Der<'static> = pair.as_der().ok()?;
        let pkcs1_der = pkcs8_private_key(pkcs8.as_ref())?.to_vec();
        RsaKeyPair::from_der(&pkcs1_der).ok()?;
        let public = pair.public_key();
        Some(RsaKey {
            kid: format!("rsa-{}", random_token(9).ok()?),
            pkcs1_der,
            n: public.modulus().big_endian_without_leading_zero().to_vec(),
            e: public.exponent().big_endian_without_leading_zero().to_vec(),
        })
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }
}

#[derive(Clone)]
struct EcKey {
    kid: String,
    pkcs8_der: Vec<u8>,
    x: Vec<u8>,
    y: Vec<u8>,
}

impl EcKey {
    fn generate() -> Option<Self> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).ok()?;
        let pkcs8 = pair.to_pkcs8v1().ok()?;
        // The public key is the uncompressed point 04 || X || Y.
        let point = pair.public_key().as_ref();
        let (x, y) = point.strip_prefix(&[0x04])?.split_at_checked(32)?;
        if y.len() != 32 {
            return None;
        }
        Some(EcKey {
            kid: format!("ec-{}", random_token(9).ok()?),
            pkcs8_der: pkcs8.as_ref().to_vec(),
            x: x.to_vec(),
            y: y.to_vec(),
        })
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "EC",
            "use": "sig",
            "alg": "ES256",
            "crv": "P-256",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&self.x),
            "y": URL_SAFE_NO_PAD.encode(&self.y),
        })
    }
}

#[derive(Clone)]
struct KeySet {
    rsa: RsaKey,
    ec: EcKey,
}

impl KeySet {
    fn generate() -> Option<Self> {
        Some(KeySet {
            rsa: RsaKey::generate()?,
            ec: EcKey::generate()?,
        })
    }
}

/// RSA key generation takes a while: keep it off the async workers.
async fn generate_key_set() -> Option<KeySet> {
    tokio::task::spawn_blocking(KeySet::generate)
        .await
        .ok()
        .flatten()
}

/// Splits one DER element off `input`: (tag, contents, rest).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let width = usize::from(first & 0x7f);
        if width == 0 || width > 4 {
            return None;
        }
        let (len_bytes, rest) = rest.split_at_checked(width)?;
        let len = len_bytes
            .iter()
            .fold(0usize, |len, byte| (len << 8) | usize::from(*byte));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo` (RFC 5208):
/// for RSA, the PKCS#1 `RSAPrivateKey`.
fn pkcs8_private_key(pkcs8: &[u8]) -> Option<&[u8]> {
    let (0x30, info, _) = der_element(pkcs8)? else {
        return None;
    };
    let (0x02, _version, info) = der_element(info)? else {
        return None;
    };
    let (0x30, _algorithm, info) = der_element(info)? else {
        return None;
    };
    let (0x04, key, _) = der_element(info)? else {
        return None;
    };
    Some(key)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    Ec,
}

impl KeyFamily {
    fn of(alg: SignAlg) -> Self {
        match alg {
            SignAlg::ES256 => KeyFamily::Ec,
            SignAlg::RS256 | SignAlg::HS256 | SignAlg::None => KeyFamily::Rsa,
        }
    }
}

/// Makes the rotated key set if it does not exist yet.
async fn ensure_rotated(shared: &Shared) -> Result<(), KeyGenFailed> {
    if shared.lock().rotated.is_some() {
        return Ok(());
    }
    let fresh = generate_key_set().await.ok_or(KeyGenFailed)?;
    let mut state = shared.lock();
    if state.rotated.is_none() {
        state.rotated = Some(fresh);
    }
    Ok(())
}

/// Makes extra JWKS keys of `family` until there are `count`.
async fn ensure_extra_keys(
    shared: &Shared,
    family: KeyFamily,
    count: usize,
) -> Result<(), KeyGenFailed> {
    let have = {
        let state = shared.lock();
        match family {
            KeyFamily::Rsa => state.extra_rsa.len(),
            KeyFamily::Ec => state.extra_ec.len(),
        }
    };
    let missing = count.saturating_sub(have);
    if missing == 0 {
        return Ok(());
    }
    match family {
        KeyFamily::Rsa => {
            let keys = tokio::task::spawn_blocking(move || {
                (0..missing)
                    .map(|_| RsaKey::generate())
                    .collect::<Option<Vec<_>>>()
            })
            .await
            .ok()
            .flatten()
            .ok_or(KeyGenFailed)?;
            shared.lock().extra_rsa.extend(keys);
        }
        KeyFamily::Ec => {
            let keys = (0..missing)
                .map(|_| EcKey::generate())
                .collect::<Option<Vec<_>>>()
                .ok_or(KeyGenFailed)?;
            shared.lock().extra_ec.extend(keys);
        }
    }
    Ok(())
}

struct KeyGenFailed;

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let endpoint = Endpoint::from_path(req.uri().path());
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
            "the demo provider is down (Faults.down)\n",
        );
    }
    let Some(endpoint) = endpoint else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let method = req.method().clone();
    match (endpoint, method) {
        (Endpoint::Discovery, Method::GET) => discovery(&shared),
        (Endpoint::Authorize, Method::GET) => authorize_get(&shared, req.uri().query()),
        (Endpoint::Authorize, Method::POST) => match read_body(req).await {
            Ok(form) => authorize_post(&shared, &form),
            Err(response) => response,
        },
        (Endpoint::Token, Method::POST) => token(&shared, req).await,
        (Endpoint::Userinfo, Method::GET | Method::POST) => {
            let answer = shared.lock().faults.userinfo_answer;
            match answer {
                Some(answer) => broken(answer).await,
                None => userinfo(&shared, req.headers()),
            }
        }
        (Endpoint::Jwks, Method::GET) => jwks(&shared).await,
        (Endpoint::EndSession, Method::GET) => {
            end_session(&shared, req.uri().query().unwrap_or("").as_bytes())
        }
        (Endpoint::EndSession, Method::POST) => match read_body(req).await {
            Ok(form) => end_session(&shared, &form),
            Err(response) => response,
        },
        (endpoint, _) => {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response.headers_mut().insert(
                http::header::ALLOW,
                HeaderValue::from_static(endpoint.allowed_methods()),
            );
            response
        }
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Resp> {
    match Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large or unreadable\n",
        )),
    }
}

/// Form or query parameters, and the first name sent more than once (RFC
/// 6749 §3.1: parameters must not repeat). A repeated name keeps its last value.
fn parse_params(raw: &[u8]) -> (BTreeMap<String, String>, Option<String>) {
    let mut params = BTreeMap::new();
    let mut repeated = None;
    for (name, value) in url::form_urlencoded::parse(raw).into_owned() {
        if params.insert(name.clone(), value).is_some() && repeated.is_none() {
            repeated = Some(name);
        }
    }
    (params, repeated)
}

// ---------------------------------------------------------------------------
// Discovery and JWKS
// ---------------------------------------------------------------------------

fn discovery(shared: &Shared) -> Resp {
    let issuer = &shared.issuer;
    let (advertised, algs) = {
        let faults = &shared.lock().faults;
        (
            faults
                .discovery_issuer
                .clone()
                .unwrap_or_else(|| issuer.clone()),
            faults
                .advertised_algs
                .clone()
                .unwrap_or_else(|| ["RS256", "ES256", "HS256"].map(String::from).to_vec()),
        )
    };
    let url = |endpoint: Endpoint| format!("{issuer}{}", endpoint.path());
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": advertised,
            "authorization_endpoint": url(Endpoint::Authorize),
            "token_endpoint": url(Endpoint::Token),
            "userinfo_endpoint": url(Endpoint::Userinfo),
            "jwks_uri": url(Endpoint::Jwks),
            "end_session_endpoint": url(Endpoint::EndSession),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "code_challenge_methods_supported": ["S256", "plain"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "profile", "email", "groups"],
            "claims_supported": [
                "iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce", "at_hash", "sid",
                "name", "preferred_username", "email", "email_verified", "groups"
            ],
            "authorization_response_iss_parameter_supported": true,
        }),
    )
}

async fn jwks(shared: &Shared) -> Resp {
    let faults = shared.lock().faults.clone();
    let Some(keys) = shared.keys.as_ref() else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "no signing keys\n");
    };
    let family = KeyFamily::of(faults.alg);
    if faults.rotate_signing_key && ensure_rotated(shared).await.is_err()
        || ensure_extra_keys(shared, family, faults.jwks_extra_keys)
            .await
            .is_err()
    {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "key generation failed\n");
    }
    let mut list: Vec<Value> = Vec::new();
    {
        let state = shared.lock();
        // Extras first: a client that takes "the first RSA key" when the
        // token has no kid gets caught.
        match family {
            KeyFamily::Rsa => list.extend(
                state
                    .extra_rsa
                    .iter()
                    .take(faults.jwks_extra_keys)
                    .map(RsaKey::jwk),
            ),
            KeyFamily::Ec => list.extend(
                state
                    .extra_ec
                    .iter()
                    .take(faults.jwks_extra_keys)
                    .map(EcKey::jwk),
            ),
        }
        list.push(keys.rsa.jwk());
        list.push(keys.ec.jwk());
        if let Some(rotated) = &state.rotated {
            list.push(rotated.rsa.jwk());
            list.push(rotated.ec.jwk());
        }
    }
    if faults.jwks_unparseable_key {
        // Any 64 bytes do: no reader of this set knows the key type.
        list.push(json!({
            "kty": "AKP",
            "alg": "ML-DSA-44",
            "use": "sig",
            "kid": "unparseable-akp",
            "pub": URL_SAFE_NO_PAD.encode([7u8; 64]),
        }));
    }
    json_response(StatusCode::OK, &json!({ "keys": list }))
}

// ---------------------------------------------------------------------------
// Authorization
// ---------------------------------------------------------------------------

/// A checked authorization request.
struct AuthorizeRequest {
    client_id: String,
    redirect_uri: String,
    redirect_url: Url,
    state: Option<String>,
    nonce: Option<String>,
    scope: String,
    pkce: Option<Pkce>,
    /// Everything the client sent, carried through the sign-in form.
    params: BTreeMap<String, String>,
}

/// Checks `params`. Without a known client and its exact redirect_uri the
/// answer is a page (never a redirect to an unchecked URI); after that,
/// errors go back to the client (RFC 6749 §4.1.2.1).
#[allow(clippy::result_large_err)] // the error is the response to send
fn validate_authorize(
    shared: &Shared,
    params: BTreeMap<String, String>,
    repeated: Option<String>,
) -> Result<AuthorizeRequest, Resp> {
    let get = |name: &str| params.get(name).cloned();
    let Some(client) = get("client_id").and_then(|id| shared.client(&id).cloned()) else {
        return Err(html_error(
            StatusCode::BAD_REQUEST,
            "Unknown client",
            "No client is registered under this client_id.",
        ));
    };
    let (redirect_uri, redirect_url) = registered_redirect(&client, get("redirect_uri"))?;
    let state = get("state");
    let back = |error: &str, description: &str| {
        error_redirect(
            &redirect_url,
            error,
            Some(description),
            state.as_deref(),
            &shared.issuer,
        )
    };
    if let Some(name) = repeated {
        return Err(back(
            "invalid_request",
            &format!("parameter {name} sent more than once"),
        ));
    }
    if get("response_type").as_deref() != Some("code") {
        return Err(back(
            "unsupported_response_type",
            "only response_type=code is supported",
        ));
    }
    let pkce = pkce_of(
        get("code_challenge"),
        get("code_challenge_method").as_deref(),
    )
    .map_err(|description| back("invalid_request", description))?;
    Ok(AuthorizeRequest {
        client_id: client.client_id,
        redirect_uri,
        redirect_url,
        nonce: get("nonce"),
        scope: get("scope").unwrap_or_default(),
        state,
        pkce,
        params,
    })
}

/// The client's redirect_uri when it is registered for it, and parsed.
#[allow(clippy::result_large_err)] // the error is the response to send
fn registered_redirect(client: &DemoClient, sent: Option<String>) -> Result<(String, Url), Resp> {
    let redirect_uri = match sent {
        Some(uri) if client.redirect_uris.contains(&uri) => uri,
        _ => {
            return Err(html_error(
                StatusCode::BAD_REQUEST,
                "Unregistered redirect_uri",
                "The redirect_uri is missing or not registered for this client.",
            ))
        }
    };
    let Ok(redirect_url) = Url::parse(&redirect_uri) else {
        return Err(html_error(
            StatusCode::BAD_REQUEST,
            "Bad redirect_uri",
            "The registered redirect_uri is not an absolute URL.",
        ));
    };
    Ok((redirect_uri, redirect_url))
}

/// The PKCE challenge of an authorization request (RFC 7636 §4.3: the
/// method defaults to plain), or why it is refused.
fn pkce_of(challenge: Option<String>, method: Option<&str>) -> Result<Option<Pkce>, &'static str> {
    match (challenge, method) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err("code_challenge_method without code_challenge"),
        (Some(challenge), None | Some("plain")) => Ok(Some(Pkce {
            challenge,
            method: PkceMethod::Plain,
        })),
        (Some(challenge), Some("S256")) => Ok(Some(Pkce {
            challenge,
            method: PkceMethod::S256,
        })),
        (Some(_), Some(_)) => Err("code_challenge_method must be S256 or plain"),
    }
}

fn authorize_get(shared: &Shared, query: Option<&str>) -> Resp {
    let (params, repeated) = parse_params(query.unwrap_or("").as_bytes());
    let faults = {
        let mut state = shared.lock();
        state.last_authorize_query = Some(params.clone());
        state.faults.clone()
    };
    let request = match validate_authorize(shared, params, repeated) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if let Some(error) = faults.authorize_error {
        return error_redirect(
            &request.redirect_url,
            &error,
            None,
            request.state.as_deref(),
            &shared.issuer,
        );
    }
    match faults.auto_approve_as {
        Some(sub) => approve(shared, &request, &sub),
        None => sign_in_page(&request, &shared.config.users),
    }
}

fn authorize_post(shared: &Shared, form: &[u8]) -> Resp {
    let (mut params, repeated) = parse_params(form);
    let user = params.remove("user");
    // The hidden fields came back from the browser: check them all again.
    let request = match validate_authorize(shared, params, repeated) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if let Some(error) = shared.lock().faults.authorize_error.clone() {
        return error_redirect(
            &request.redirect_url,
            &error,
            None,
            request.state.as_deref(),
            &shared.issuer,
        );
    }
    match user {
        Some(sub) => approve(shared, &request, &sub),
        None => html_error(
            StatusCode::BAD_REQUEST,
            "No user chosen",
            "Choose a user to sign in as.",
        ),
    }
}

/// Signs `sub` in: a one-time code, and back to the client.
fn approve(shared: &Shared, request: &AuthorizeRequest, sub: &str) -> Resp {
    if shared.user(sub).is_none() {
        return html_error(
            StatusCode::BAD_REQUEST,
            "Unknown user",
            "There is no demo user with this identifier.",
        );
    }
    let (Ok(code), Ok(sid)) = (random_token(32), random_token(16)) else {
        tracing::error!("demo provider: no random values for a code");
        return html_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No random values",
            "The demo provider could not make a one-time code; try again.",
        );
    };
    let grant = CodeGrant {
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        sub: sub.to_string(),
        nonce: request.nonce.clone(),
        scope: request.scope.clone(),
        pkce: request.pkce.clone(),
        auth_time: unix_now(&shared.clock),
        sid,
        expires: shared.clock.now() + CODE_TTL,
    };
    {
        let mut state = shared.lock();
        let now = shared.clock.now();
        state.codes.retain(|_, grant| grant.expires > now);
        state.codes.insert(code.clone(), grant);
    }
    let mut location = request.redirect_url.clone();
    {
        let mut query = location.query_pairs_mut();
        query.append_pair("code", &code);
        if let Some(state) = &request.state {
            query.append_pair("state", state);
        }
        if !shared.lock().faults.omit_response_iss {
            query.append_pair("iss", &shared.issuer);
        }
    }
    redirect(&location)
}

fn error_redirect(
    redirect_url: &Url,
    error: &str,
    description: Option<&str>,
    state: Option<&str>,
    issuer: &str,
) -> Resp {
    let mut location = redirect_url.clone();
    {
        let mut query = location.query_pairs_mut();
        query.append_pair("error", error);
        if let Some(description) = description {
            query.append_pair("error_description", description);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", issuer);
    }
    redirect(&location)
}

fn sign_in_page(request: &AuthorizeRequest, users: &[DemoUser]) -> Resp {
    use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
    let hidden: String = request
        .params
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                attr(name),
                attr(value)
            )
        })
        .collect();
    let buttons: String = if users.is_empty() {
        "<p>No demo users are configured.</p>\n".to_string()
    } else {
        users
            .iter()
            .map(|user| {
                format!(
                    "<button type=\"submit\" name=\"user\" value=\"{}\">Sign in as <strong>{}</strong> \
                     <span class=\"detail\">{} · {}</span></button>\n",
                    attr(&user.sub),
                    text(&user.name),
                    text(&user.preferred_username),
                    text(&user.email),
                )
            })
            .collect()
    };
    let body = format!(
        "<h1>Sign in</h1>\n\
         <p><strong>{client}</strong> asks who you are.</p>\n\
         <p class=\"detail\">This is the built-in demo provider of portcullis: pick a user, no password needed.</p>\n\
         <form method=\"post\" action=\"/authorize\">\n{hidden}\
         <fieldset>\n<legend>Choose a user</legend>\n{buttons}</fieldset>\n</form>\n",
        client = text(&request.client_id),
    );
    html_page(StatusCode::OK, "Sign in — demo provider", &body)
}

// ---------------------------------------------------------------------------
// Token
// ---------------------------------------------------------------------------

async fn token(shared: &Shared, req: Request<Incoming>) -> Resp {
    let basic = basic_credentials(req.headers());
    let body = match read_body(req).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let (form, repeated) = parse_params(&body);
    let faults = {
        let mut state = shared.lock();
        state.last_token_request = Some(TokenRequestSeen {
            form: form.clone(),
            basic_auth: basic.is_some(),
        });
        state.faults.clone()
    };
    if let Some(injected) = injected_token_answer(&faults).await {
        return injected;
    }
    if let Some(name) = repeated {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("parameter {name} sent more than once"),
        );
    }
    let client = match authenticate_client(shared, basic, &form) {
        Ok(client) => client,
        Err(response) => return response,
    };
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {}
        Some("refresh_token") if faults.refresh_tokens => {
            return refresh_grant(shared, client, &form, &faults).await;
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only authorization_code (and refresh_token, when enabled) is supported",
            )
        }
    }
    let (grant, user) = match redeem_code(shared, &client.client_id, &form) {
        Ok(redeemed) => redeemed,
        Err(response) => return response,
    };
    let mut answer = match issue_tokens(
        shared,
        &client.client_id,
        (&user.sub, &grant.scope),
        (grant.auth_time, &grant.sid),
        &faults,
    ) {
        Ok(answer) => answer,
        Err(error) => return no_random(error),
    };
    if asks_openid(&grant.scope) {
        if let Err(response) = add_id_token(
            shared,
            &mut answer,
            &grant,
            user,
            &faults,
            &client.client_secret,
        )
        .await
        {
            return response;
        }
    }
    let mut response = json_response(StatusCode::OK, &Value::Object(answer));
    response
        .headers_mut()
        .insert("pragma", HeaderValue::from_static("no-cache"));
    response
}

/// The token endpoint's answer that `Faults.token_status` or
/// `Faults.token_answer` injects, if any.
async fn injected_token_answer(faults: &Faults) -> Option<Resp> {
    if let Some(status) = faults.token_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Some(oauth_error(
            status,
            "server_error",
            "injected by Faults.token_status",
        ));
    }
    match faults.token_answer {
        Some(answer) => Some(broken(answer).await),
        None => None,
    }
}

/// Redeems the authorization code of a token request (RFC 6749 §4.1.3):
/// one-time, unexpired, issued to this client for this redirect_uri, and
/// the PKCE verifier when a challenge was sent; the grant and its user.
#[allow(clippy::result_large_err)] // the error is the response to send
fn redeem_code<'a>(
    shared: &'a Shared,
    client_id: &str,
    form: &BTreeMap<String, String>,
) -> Result<(CodeGrant, &'a DemoUser), Resp> {
    let Some(code) = form.get("code") else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code missing",
        ));
    };
    // One-time: the code is gone whatever happens next.
    let grant = shared.lock().codes.remove(code);
    let invalid_grant = |why: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
    let Some(grant) = grant else {
        return Err(invalid_grant("unknown or already used code"));
    };
    if grant.expires <= shared.clock.now() {
        return Err(invalid_grant("code expired"));
    }
    if grant.client_id != client_id {
        return Err(invalid_grant("code was issued to another client"));
    }
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return Err(invalid_grant(
            "redirect_uri differs from the authorization request",
        ));
    }
    if let Err(why) = check_pkce(grant.pkce.as_ref(), form.get("code_verifier")) {
        return Err(invalid_grant(why));
    }
    let Some(user) = shared.user(&grant.sub) else {
        return Err(oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "user gone",
        ));
    };
    Ok((grant, user))
}

/// Whether a grant's `scope` includes `openid` (an ID token goes with its tokens).
fn asks_openid(scope: &str) -> bool {
    scope.split(' ').any(|s| s == "openid")
}

/// Adds the signed ID token of `grant` to a token `answer` (which holds
/// its access token, for `at_hash`).
async fn add_id_token(
    shared: &Shared,
    answer: &mut Map<String, Value>,
    grant: &CodeGrant,
    user: &DemoUser,
    faults: &Faults,
    client_secret: &str,
) -> Result<(), Resp> {
    let access_token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let token = id_token(shared, grant, user, &access_token, faults, client_secret).await?;
    answer.insert("id_token".into(), json!(token));
    Ok(())
}

/// The signed ID token of a token answer, with the rotated key when
/// `Faults.rotate_signing_key` says so.
async fn id_token(
    shared: &Shared,
    grant: &CodeGrant,
    user: &DemoUser,
    access_token: &str,
    faults: &Faults,
    client_secret: &str,
) -> Result<String, Resp> {
    let server_error =
        |why: &str| oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", why);
    let keys = if faults.rotate_signing_key {
        if ensure_rotated(shared).await.is_err() {
            return Err(server_error("key generation failed"));
        }
        shared.lock().rotated.clone()
    } else {
        shared.keys.clone()
    };
    let Some(keys) = keys else {
        return Err(server_error("no signing keys"));
    };
    let claims = id_token_claims(
        &shared.issuer,
        grant,
        user,
        access_token,
        faults,
        unix_now(&shared.clock),
    );
    sign_id_token(&claims, faults, &keys, client_secret).map_err(|error| {
        tracing::error!(%error, "demo provider: signing the ID token failed");
        server_error("signing failed")
    })
}

/// A fresh access token (and, with `Faults.refresh_tokens`, a refresh token)
/// for `sub`: the token answer without its ID token.
fn issue_tokens(
    shared: &Shared,
    client_id: &str,
    (sub, scope): (&str, &str),
    (auth_time, sid): (i64, &str),
    faults: &Faults,
) -> Result<Map<String, Value>, NoRandom> {
    let ttl = faults
        .access_token_ttl_secs
        .unwrap_or(ACCESS_TOKEN_TTL_SECS);
    let access_token = random_token(32)?;
    let refresh_token = match faults.refresh_tokens {
        true => Some(random_token(32)?),
        false => None,
    };
    {
        let mut state = shared.lock();
        let now = shared.clock.now();
        state.access_tokens.retain(|_, grant| grant.expires > now);
        state.access_tokens.insert(
            access_token.clone(),
            AccessGrant {
                sub: sub.to_string(),
                expires: now + Duration::from_secs(ttl),
            },
        );
        if let Some(r) = &refresh_token {
            state.refresh_tokens.insert(
                r.clone(),
                RefreshGrant {
                    client_id: client_id.to_string(),
                    sub: sub.to_string(),
                    scope: scope.to_string(),
                    auth_time,
                    sid: sid.to_string(),
                },
            );
        }
    }
    let mut answer = Map::new();
    answer.insert("access_token".into(), json!(access_token));
    answer.insert(
        "token_type".into(),
        json!(faults.token_type.as_deref().unwrap_or("Bearer")),
    );
    answer.insert("expires_in".into(), json!(ttl));
    answer.insert("scope".into(), json!(scope));
    if let Some(r) = refresh_token {
        answer.insert("refresh_token".into(), json!(r));
    }
    Ok(answer)
}

/// The `refresh_token` grant (RFC 6749 §6): the refresh token is one-time
/// (rotation), bound to the client it was issued to.
async fn refresh_grant(
    shared: &Shared,
    client: &DemoClient,
    form: &BTreeMap<String, String>,
    faults: &Faults,
) -> Resp {
    let Some(token) = form.get("refresh_token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token missing",
        );
    };
    let grant = shared.lock().refresh_tokens.remove(token);
    let Some(grant) = grant.filter(|g| g.client_id == client.client_id) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown, revoked or already used refresh token",
        );
    };
    let mut answer = match issue_tokens(
        shared,
        &grant.client_id,
        (&grant.sub, &grant.scope),
        (grant.auth_time, &grant.sid),
        faults,
    ) {
        Ok(answer) => answer,
        Err(error) => return no_random(error),
    };
    if faults.refresh_id_token && asks_openid(&grant.scope) {
        let Some(user) = shared.user(&grant.sub) else {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "user gone",
            );
        };
        // As a sign-in's, without a nonce (OIDC Core §12.2).
        let signed_in = CodeGrant {
            client_id: grant.client_id.clone(),
            redirect_uri: String::new(),
            sub: grant.sub.clone(),
            nonce: None,
            scope: grant.scope.clone(),
            pkce: None,
            auth_time: grant.auth_time,
            sid: grant.sid.clone(),
            expires: shared.clock.now(),
        };
        if let Err(response) = add_id_token(
            shared,
            &mut answer,
            &signed_in,
            user,
            faults,
            &client.client_secret,
        )
        .await
        {
            return response;
        }
    }
    shared.lock().refreshes += 1;
    let mut response = json_response(StatusCode::OK, &Value::Object(answer));
    response
        .headers_mut()
        .insert("pragma", HeaderValue::from_static("no-cache"));
    response
}

/// `None`: no Basic credentials; `Some(None)`: malformed ones;
/// `Some(Some((id, secret)))` otherwise (RFC 6749 §2.3.1: each part
/// form-urlencoded before base64).
#[allow(clippy::option_option)]
fn basic_credentials(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    let value = headers.get(AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(None);
    };
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decode = || {
        let raw = STANDARD.decode(encoded.trim()).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (id, secret) = raw.split_once(':')?;
        Some((form_unescape(id)?, form_unescape(secret)?))
    };
    Some(decode())
}

fn form_unescape(part: &str) -> Option<String> {
    percent_encoding::percent_decode_str(&part.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

#[allow(clippy::option_option, clippy::result_large_err)] // the error is the response to send
fn authenticate_client<'a>(
    shared: &'a Shared,
    basic: Option<Option<(String, String)>>,
    form: &BTreeMap<String, String>,
) -> Result<&'a DemoClient, Resp> {
    let (client_id, secret) = match (basic, form.get("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "more than one client authentication method",
            ))
        }
        (Some(None), None) => return Err(invalid_client("malformed Basic credentials")),
        (Some(Some((id, secret))), None) => {
            if form.get("client_id").is_some_and(|form_id| *form_id != id) {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id differs from the Basic credentials",
                ));
            }
            (id, secret)
        }
        (None, Some(secret)) => match form.get("client_id") {
            Some(id) => (id.clone(), secret.clone()),
            None => return Err(invalid_client("client_id missing")),
        },
        (None, None) => return Err(invalid_client("no client authentication")),
    };
    match shared.client(&client_id) {
        Some(client)
            if aws_lc_rs::constant_time::verify_slices_are_equal(
                client.client_secret.as_bytes(),
                secret.as_bytes(),
            )
            .is_ok() =>
        {
            Ok(client)
        }
        _ => Err(invalid_client("unknown client or wrong secret")),
    }
}

fn invalid_client(why: &str) -> Resp {
    let mut response = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"portcullis-demo\""),
    );
    response
}

/// RFC 7636 §4.6; and a verifier without a challenge is refused (RFC 9700
/// §2.1.1), which catches a PKCE downgrade.
fn check_pkce(pkce: Option<&Pkce>, verifier: Option<&String>) -> Result<(), &'static str> {
    match (pkce, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => {
            Err("code_verifier sent, but the authorization request had no code_challenge")
        }
        (Some(_), None) => Err("code_verifier missing"),
        (Some(pkce), Some(verifier)) => {
            let well_formed = (43..=128).contains(&verifier.len())
                && verifier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !well_formed {
                return Err("code_verifier must be 43 to 128 unreserved characters");
            }
            let derived = match pkce.method {
                PkceMethod::S256 => URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes())),
                PkceMethod::Plain => verifier.clone(),
            };
            if derived == pkce.challenge {
                Ok(())
            } else {
                Err("code_verifier does not match code_challenge")
            }
        }
    }
}

fn id_token_claims(
    issuer: &str,
    grant: &CodeGrant,
    user: &DemoUser,
    access_token: &str,
    faults: &Faults,
    now: i64,
) -> Map<String, Value> {
    let mut claims = profile_claims(user);
    if let Some(sub) = &faults.id_token_sub {
        claims.insert("sub".into(), json!(sub));
    }
    claims.insert("iss".into(), json!(faults.iss.as_deref().unwrap_or(issuer)));
    if faults.omit_sub {
        claims.remove("sub");
    }
    match &faults.aud {
        None => {
            claims.insert("aud".into(), json!(grant.client_id));
        }
        Some(Value::Null) => {}
        Some(aud) => {
            claims.insert("aud".into(), aud.clone());
        }
    }
    match &faults.azp {
        None => {
            claims.insert("azp".into(), json!(grant.client_id));
        }
        Some(None) => {}
        Some(Some(azp)) => {
            claims.insert("azp".into(), json!(azp));
        }
    }
    if !faults.omit_exp {
        let exp = now
            .saturating_add(ID_TOKEN_TTL_SECS)
            .saturating_add(faults.exp_offset_secs);
        claims.insert("exp".into(), json!(exp));
    }
    if !faults.omit_iat {
        claims.insert(
            "iat".into(),
            json!(now.saturating_add(faults.iat_offset_secs)),
        );
    }
    if !faults.omit_auth_time {
        claims.insert("auth_time".into(), json!(grant.auth_time));
    }
    match (faults.nonce, &grant.nonce) {
        (NonceFault::Echo, Some(nonce)) => {
            claims.insert("nonce".into(), json!(nonce));
        }
        (NonceFault::Wrong, _) => {
            // Any value other than the one sent: the prefix alone makes it differ.
            let tail = random_token(12).unwrap_or_default();
            claims.insert("nonce".into(), json!(format!("wrong-{tail}")));
        }
        (NonceFault::Echo, None) | (NonceFault::Omit, _) => {}
    }
    // at_hash: left half of SHA-256 of the access token (every alg here is *256).
    let hash = digest(&SHA256, access_token.as_bytes());
    if let Some(left) = hash.as_ref().get(..16) {
        claims.insert("at_hash".into(), json!(URL_SAFE_NO_PAD.encode(left)));
    }
    claims.insert("sid".into(), json!(grant.sid));
    claims
}

/// The user's claims, as userinfo answers them.
fn profile_claims(user: &DemoUser) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user.sub));
    claims.insert("preferred_username".into(), json!(user.preferred_username));
    claims.insert("email".into(), json!(user.email));
    claims.insert("email_verified".into(), json!(user.email_verified));
    claims.insert("name".into(), json!(user.name));
    claims.insert("groups".into(), json!(user.groups));
    claims
}

fn sign_id_token(
    claims: &Map<String, Value>,
    faults: &Faults,
    keys: &KeySet,
    client_secret: &str,
) -> Result<String, jsonwebtoken::errors::Error> {
    let kid = |kid: &str| match faults.kid {
        KidFault::Normal => Some(kid.to_string()),
        KidFault::Omit => None,
    };
    let token = match faults.alg {
        SignAlg::RS256 => {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = kid(&keys.rsa.kid);
            jsonwebtoken::encode(
                &header,
                claims,
                &EncodingKey::from_rsa_der(&keys.rsa.pkcs1_der),
            )?
        }
        SignAlg::ES256 => {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = kid(&keys.ec.kid);
            jsonwebtoken::encode(
                &header,
                claims,
                &EncodingKey::from_ec_der(&keys.ec.pkcs8_der),
            )?
        }
        SignAlg::HS256 => jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(client_secret.as_bytes()),
        )?,
        SignAlg::None => {
            // jsonwebtoken cannot make one, by design.
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?);
            format!("{header}.{payload}.")
        }
    };
    Ok(if faults.bad_signature {
        flip_signature_bit(&token)
    } else {
        token
    })
}

/// The same token with one bit of its signature flipped (an empty signature
/// stays empty).
fn flip_signature_bit(token: &str) -> String {
    let Some((signed, signature)) = token.rsplit_once('.') else {
        return token.to_string();
    };
    let Ok(mut raw) = URL_SAFE_NO_PAD.decode(signature) else {
        return token.to_string();
    };
    match raw.first_mut() {
        Some(byte) => *byte ^= 0x01,
        None => return token.to_string(),
    }
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(raw))
}

// ---------------------------------------------------------------------------
// Userinfo and end-session
// ---------------------------------------------------------------------------

fn userinfo(shared: &Shared, headers: &HeaderMap) -> Resp {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return bearer_challenge("Bearer realm=\"portcullis-demo\"");
    };
    let (sub, faults) = {
        let state = shared.lock();
        let sub = state
            .access_tokens
            .get(token)
            .filter(|grant| grant.expires > shared.clock.now())
            .map(|grant| grant.sub.clone());
        (sub, state.faults.clone())
    };
    let Some(user) = sub.and_then(|sub| shared.user(&sub)) else {
        return bearer_challenge("Bearer realm=\"portcullis-demo\", error=\"invalid_token\"");
    };
    let mut claims = profile_claims(user);
    if let Some(sub) = faults.userinfo_sub {
        claims.insert("sub".into(), json!(sub));
    }
    json_response(StatusCode::OK, &Value::Object(claims))
}

fn bearer_challenge(challenge: &'static str) -> Resp {
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({ "error": "invalid_token" }),
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

/// RP-initiated logout: records the request; redirects only to a URI on the
/// origin of one of the client's redirect_uris (never an open redirect).
fn end_session(shared: &Shared, raw: &[u8]) -> Resp {
    let (params, _repeated) = parse_params(raw);
    shared.lock().last_end_session_query = Some(params.clone());
    let Some(target) = params.get("post_logout_redirect_uri") else {
        return html_page(
            StatusCode::OK,
            "Signed out — demo provider",
            "<h1>Signed out</h1>\n<p>You are signed out of the demo provider.</p>\n",
        );
    };
    let Ok(mut target) = Url::parse(target) else {
        return html_error(
            StatusCode::BAD_REQUEST,
            "Bad post_logout_redirect_uri",
            "The post_logout_redirect_uri is not an absolute URL.",
        );
    };
    let client_id = params.get("client_id");
    let allowed = shared
        .config
        .clients
        .iter()
        .filter(|client| client_id.is_none_or(|id| *id == client.client_id))
        .flat_map(|client| client.redirect_uris.iter())
        .filter_map(|uri| Url::parse(uri).ok())
        .any(|uri| uri.origin() == target.origin());
    if !allowed {
        return html_error(
            StatusCode::BAD_REQUEST,
            "Unregistered post_logout_redirect_uri",
            "The post_logout_redirect_uri is not on the origin of a registered redirect_uri.",
        );
    }
    if let Some(state) = params.get("state") {
        target.query_pairs_mut().append_pair("state", state);
    }
    redirect(&target)
}

// ---------------------------------------------------------------------------
// Responses and small helpers
// ---------------------------------------------------------------------------

fn plain(status: StatusCode, message: &'static str) -> Resp {
    respond(status, "text/plain; charset=utf-8", message)
}

fn json_response(status: StatusCode, value: &Value) -> Resp {
    respond(status, "application/json", value.to_string())
}

/// An RFC 6749 §5.2 error body.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Resp {
    json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

fn redirect(location: &Url) -> Resp {
    let Ok(value) = HeaderValue::from_str(location.as_str()) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect target\n");
    };
    let mut response = respond(StatusCode::FOUND, "text/plain; charset=utf-8", "");
    response.headers_mut().insert(LOCATION, value);
    response
}

fn html_error(status: StatusCode, title: &str, message: &str) -> Resp {
    use html_escape::encode_text as text;
    let body = format!("<h1>{}</h1>\n<p>{}</p>\n", text(title), text(message));
    html_page(status, title, &body)
}

/// A self-contained page: no script, no external assets.
fn html_page(status: StatusCode, title: &str, body_html: &str) -> Resp {
    let page = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>
:root {{ color-scheme: light dark; }}
body {{ margin: 0; min-height: 100vh; display: grid; place-items: center;
       font: 16px/1.5 system-ui, sans-serif; background: Canvas; color: CanvasText; }}
main {{ width: min(28rem, 100% - 2rem); padding: 1.5rem; border-radius: 10px;
       border: 1px solid color-mix(in srgb, CanvasText 20%, transparent); }}
h1 {{ font-size: 1.3rem; margin: 0 0 1rem; }}
fieldset {{ border: 0; padding: 0; margin: 0; }}
legend {{ font-weight: 600; margin-bottom: .5rem; }}
button {{ display: block; width: 100%; margin: .5rem 0; padding: .75rem 1rem; border-radius: 8px;
         border: 0; background: #1f4fbf; color: #fff; font: inherit; text-align: left; cursor: pointer; }}
button:focus-visible {{ outline: 3px solid #f0b400; outline-offset: 2px; }}
.detail {{ display: block; opacity: .8; font-size: .9rem; }}
</style>
</head>
<body>
<main>
{body_html}</main>
</body>
</html>
"#,
        title = html_escape::encode_text(title),
    );
    let mut response = respond(status, "text/html; charset=utf-8", page);
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

/// `len` random bytes; without a secure source, none (never a weaker value).
fn random_bytes(len: usize) -> Result<Vec<u8>, NoRandom> {
    let mut bytes = vec![0u8; len];
    crate::random::fill(&mut bytes)?;
    Ok(bytes)
}

/// `len` random bytes, base64url.
fn random_token(len: usize) -> Result<String, NoRandom> {
    random_bytes(len).map(|b| URL_SAFE_NO_PAD.encode(b))
}

/// The token endpoint's answer when no random values could be made.
fn no_random(error: NoRandom) -> Resp {
    tracing::error!(%error, "demo provider: no random values");
    oauth_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "no random values available",
    )
}

fn unix_now(clock: &Clock) -> i64 {
    i64::try_from(clock.now_unix()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CONTENT_TYPE;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{decode, DecodingKey, Validation};
    use reqwest::redirect::Policy;

    const CLIENT: &str = "app";
    const SECRET: &str = "s3cret:with+odd&chars";
    const REDIRECT: &str = "http://127.0.0.1:9/_auth/callback/demo";
    const VERIFIER: &str = "0123456789abcdefghijklmnopqrstuvwxyz-._~ABCDEFG";
    const NONCE: &str = "n-0S6_WzA2Mj";

    fn config() -> ProviderConfig {
        let mut config = ProviderConfig::example(REDIRECT).unwrap();
        config.clients = vec![
            DemoClient {
                client_id: CLIENT.into(),
                client_secret: SECRET.into(),
                redirect_uris: vec![REDIRECT.into()],
            },
            DemoClient {
                client_id: "other".into(),
                client_secret: "other-secret".into(),
                redirect_uris: vec![REDIRECT.into()],
            },
        ];
        config
    }

    async fn provider() -> Provider {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        start(listener, config()).await
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap()
    }

    fn s256(verifier: &str) -> String {
        URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()))
    }

    fn authorize_params() -> BTreeMap<String, String> {
        [
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", REDIRECT),
            ("scope", "openid email profile"),
            ("state", "st-123"),
            ("nonce", NONCE),
            ("code_challenge_method", "S256"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("code_challenge".to_string(), s256(VERIFIER))])
        .collect()
    }

    async fn get_authorize(p: &Provider, params: &BTreeMap<String, String>) -> reqwest::Response {
        http()
            .get(format!("{}/authorize", p.issuer()))
            .query(params)
            .send()
            .await
            .unwrap()
    }

    /// Query parameters of a redirect's Location.
    fn location_query(response: &reqwest::Response) -> BTreeMap<String, String> {
        let location = response.headers()[LOCATION].to_str().unwrap();
        Url::parse(location)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    }

    /// Signs in as alice (auto-approve) with the default request; the code.
    async fn code(p: &Provider) -> String {
        p.set_faults(|f| f.auto_approve_as = Some("alice".into()));
        let response = get_authorize(p, &authorize_params()).await;
        assert_eq!(response.status(), 302);
        location_query(&response)["code"].clone()
    }

    fn token_form(code: &str) -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.into()),
            ("redirect_uri", REDIRECT.into()),
            ("code_verifier", VERIFIER.into()),
        ]
    }

    fn basic_header(id: &str, secret: &str) -> String {
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", encode(id), encode(secret)))
        )
    }

    async fn exchange(p: &Provider, form: &[(&str, String)]) -> (StatusCode, Value) {
        let response = http()
            .post(format!("{}/token", p.issuer()))
            .header(AUTHORIZATION, basic_header(CLIENT, SECRET))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Signs in as alice and redeems the code; the token response.
    async fn tokens(p: &Provider) -> Value {
        let code = code(p).await;
        let (status, body) = exchange(p, &token_form(&code)).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn id_token(p: &Provider) -> String {
        tokens(p).await["id_token"].as_str().unwrap().to_string()
    }

    async fn jwks_keys(p: &Provider) -> Vec<Value> {
        let body: Value = http()
            .get(format!("{}/jwks", p.issuer()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["keys"].as_array().unwrap().clone()
    }

    fn kids(keys: &[Value]) -> Vec<String> {
        keys.iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    }

    /// Header, claims and raw signature, without verifying anything.
    fn parts(token: &str) -> (Value, Value, Vec<u8>) {
        let mut it = token.split('.');
        let header = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
        let claims = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
        let signature = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
        assert!(it.next().is_none());
        (
            serde_json::from_slice(&header).unwrap(),
            serde_json::from_slice(&claims).unwrap(),
            signature,
        )
    }

    fn validation(p: &Provider, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.set_audience(&[CLIENT]);
        validation.set_issuer(&[p.issuer()]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation
    }

    /// Verifies with the JWKS key named by the token's kid.
    fn verify(
        p: &Provider,
        token: &str,
        keys: &[Value],
    ) -> Result<Value, jsonwebtoken::errors::Error> {
        let header = jsonwebtoken::decode_header(token)?;
        let kid = header.kid.expect("token names its key");
        let jwk = keys
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .expect("kid in JWKS");
        let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let key = DecodingKey::from_jwk(&jwk)?;
        decode::<Value>(token, &key, &validation(p, header.alg)).map(|data| data.claims)
    }

    #[test]
    fn pkcs8_parsing_finds_the_private_key_and_rejects_garbage() {
        // SEQUENCE { INTEGER 0, SEQUENCE { NULL }, OCTET STRING { 01 02 } }
        let der = [
            0x30, 0x0b, 0x02, 0x01, 0x00, 0x30, 0x02, 0x05, 0x00, 0x04, 0x02, 0x01, 0x02,
        ];
        assert_eq!(pkcs8_private_key(&der), Some(&[0x01, 0x02][..]));
        assert_eq!(pkcs8_private_key(&der[..12]), None);
        assert_eq!(
            pkcs8_private_key(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(pkcs8_private_key(&[]), None);
        let long = [&[0x04, 0x81, 0x80][..], &[7u8; 0x80]].concat();
        assert_eq!(
            der_element(&long).map(|(tag, c, _)| (tag, c.len())),
            Some((0x04, 0x80))
        );
    }

    #[tokio::test]
    async fn discovery_document_lists_endpoints_and_capabilities() {
        let p = provider().await;
        assert!(p.issuer().starts_with("http://127.0.0.1:") && !p.issuer().ends_with('/'));
        let doc: Value = http()
            .get(p.well_known_url())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let issuer = p.issuer();
        assert_eq!(doc["issuer"], issuer.as_str());
        assert_eq!(doc["authorization_endpoint"], format!("{issuer}/authorize"));
        assert_eq!(doc["token_endpoint"], format!("{issuer}/token"));
        assert_eq!(doc["userinfo_endpoint"], format!("{issuer}/userinfo"));
        assert_eq!(doc["jwks_uri"], format!("{issuer}/jwks"));
        assert_eq!(doc["end_session_endpoint"], format!("{issuer}/end_session"));
        assert_eq!(doc["response_types_supported"], json!(["code"]));
        assert_eq!(
            doc["code_challenge_methods_supported"],
            json!(["S256", "plain"])
        );
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            json!(["client_secret_basic", "client_secret_post"])
        );
        assert!(doc["id_token_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("RS256")));
        for field in [
            "subject_types_supported",
            "scopes_supported",
            "claims_supported",
        ] {
            assert!(!doc[field].as_array().unwrap().is_empty(), "{field}");
        }
    }

    #[tokio::test]
    async fn discovery_issuer_fault_changes_only_the_advertised_issuer() {
        let p = provider().await;
        p.set_faults(|f| f.discovery_issuer = Some("https://evil.example".into()));
        let doc: Value = http()
            .get(p.well_known_url())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["issuer"], "https://evil.example");
        assert_eq!(doc["token_endpoint"], format!("{}/token", p.issuer()));
        // The ID token still carries the real issuer.
        let keys = jwks_keys(&p).await;
        assert_eq!(
            verify(&p, &id_token(&p).await, &keys).unwrap()["iss"],
            p.issuer().as_str()
        );
    }

    #[tokio::test]
    async fn auto_approved_authorize_redirects_with_code_state_and_iss() {
        let p = provider().await;
        p.set_faults(|f| f.auto_approve_as = Some("alice".into()));
        let response = get_authorize(&p, &authorize_params()).await;
        assert_eq!(response.status(), 302);
        let location = response.headers()[LOCATION].to_str().unwrap();
        assert!(location.starts_with(&format!("{REDIRECT}?")), "{location}");
        let query = location_query(&response);
        assert!(query["code"].len() >= 32);
        assert_eq!(query["state"], "st-123");
        assert_eq!(query["iss"], p.issuer());
        let seen = p.last_authorize_query().unwrap();
        assert_eq!(seen["nonce"], NONCE);
        assert_eq!(seen["code_challenge"], s256(VERIFIER));
        assert_eq!(seen["code_challenge_method"], "S256");
        assert_eq!(seen["scope"], "openid email profile");
    }

    #[tokio::test]
    async fn authorize_answers_a_page_not_a_redirect_for_unknown_client_or_redirect_uri() {
        let p = provider().await;
        p.set_faults(|f| f.auto_approve_as = Some("alice".into()));
        let mut unknown_client = authorize_params();
        unknown_client.insert("client_id".into(), "nobody".into());
        let mut foreign_redirect = authorize_params();
        foreign_redirect.insert(
            "redirect_uri".into(),
            "http://127.0.0.1:9/_auth/callback/demo/".into(),
        );
        for params in [unknown_client, foreign_redirect] {
            let response = get_authorize(&p, &params).await;
            assert_eq!(response.status(), 400);
            assert!(response.headers().get(LOCATION).is_none());
        }
    }

    #[tokio::test]
    async fn authorize_sends_protocol_errors_back_with_state() {
        let p = provider().await;
        p.set_faults(|f| f.auto_approve_as = Some("alice".into()));
        let mut implicit = authorize_params();
        implicit.insert("response_type".into(), "id_token".into());
        let response = get_authorize(&p, &implicit).await;
        assert_eq!(response.status(), 302);
        let query = location_query(&response);
        assert_eq!(query["error"], "unsupported_response_type");
        assert_eq!(query["state"], "st-123");
        assert!(!query.contains_key("code"));

        let mut bad_method = authorize_params();
        bad_method.insert("code_challenge_method".into(), "S512".into());
        let query = location_query(&get_authorize(&p, &bad_method).await);
        assert_eq!(query["error"], "invalid_request");
    }

    #[tokio::test]
    async fn sign_in_page_offers_one_button_per_user_and_escapes_the_hidden_fields() {
        let p = provider().await;
        let mut params = authorize_params();
        params.insert("state".into(), "\"><script>alert(1)</script>".into());
        let response = get_authorize(&p, &params).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let page = response.text().await.unwrap();
        assert!(page.contains("<form method=\"post\" action=\"/authorize\">"));
        assert_eq!(page.matches("name=\"user\"").count(), 2);
        assert!(page.contains("value=\"alice\"") && page.contains("value=\"bob\""));
        assert!(page.contains("Sign in as <strong>Alice Example</strong>"));
        assert!(!page.contains("<script>"));
        assert!(page
            .contains("name=\"state\" value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));
        assert!(page.contains(&format!("name=\"nonce\" value=\"{NONCE}\"")));
    }

    #[tokio::test]
    async fn posting_the_sign_in_form_issues_a_code_for_the_chosen_user() {
        let p = provider().await;
        let mut form = authorize_params();
        form.insert("user".into(), "bob".into());
        let response = http()
            .post(format!("{}/authorize", p.issuer()))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 302);
        let query = location_query(&response);
        assert_eq!(query["state"], "st-123");
        let (status, body) = exchange(&p, &token_form(&query["code"])).await;
        assert_eq!(status, 200);
        let keys = jwks_keys(&p).await;
        let claims = verify(&p, body["id_token"].as_str().unwrap(), &keys).unwrap();
        assert_eq!(claims["sub"], "bob");
        assert_eq!(claims["email_verified"], false);

        form.insert("user".into(), "mallory".into());
        let response = http()
            .post(format!("{}/authorize", p.issuer()))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }

    #[tokio::test]
    async fn token_with_client_secret_basic_returns_an_id_token_that_verifies_with_the_jwks() {
        let p = provider().await;
        let body = tokens(&p).await;
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["scope"], "openid email profile");
        let token = body["id_token"].as_str().unwrap();
        let (header, _, _) = parts(token);
        assert_eq!(header["alg"], "RS256");
        let keys = jwks_keys(&p).await;
        let claims = verify(&p, token, &keys).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["aud"], CLIENT);
        assert_eq!(claims["azp"], CLIENT);
        assert_eq!(claims["nonce"], NONCE);
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(claims["email_verified"], true);
        assert_eq!(claims["name"], "Alice Example");
        assert_eq!(claims["preferred_username"], "alice");
        assert_eq!(claims["groups"], json!(["admins", "staff"]));
        assert!(claims["sid"].as_str().is_some_and(|sid| !sid.is_empty()));
        assert!(claims["auth_time"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());
        let at = digest(&SHA256, body["access_token"].as_str().unwrap().as_bytes());
        assert_eq!(
            claims["at_hash"],
            URL_SAFE_NO_PAD.encode(&at.as_ref()[..16])
        );
        let seen = p.last_token_request().unwrap();
        assert!(seen.basic_auth);
        assert_eq!(seen.form["grant_type"], "authorization_code");
        assert!(!seen.form.contains_key("client_secret"));
    }

    #[tokio::test]
    async fn token_with_client_secret_post_works_and_is_recorded() {
        let p = provider().await;
        let code = code(&p).await;
        let mut form = token_form(&code);
        form.push(("client_id", CLIENT.into()));
        form.push(("client_secret", SECRET.into()));
        let response = http()
            .post(format!("{}/token", p.issuer()))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let keys = jwks_keys(&p).await;
        assert_eq!(
            verify(&p, body["id_token"].as_str().unwrap(), &keys).unwrap()["nonce"],
            NONCE
        );
        let seen = p.last_token_request().unwrap();
        assert!(!seen.basic_auth);
        assert_eq!(seen.form["client_id"], CLIENT);
    }

    #[tokio::test]
    async fn token_refuses_bad_client_authentication() {
        let p = provider().await;
        let code = code(&p).await;
        let post = |auth: Option<String>, extra: Vec<(&'static str, String)>| {
            let mut form = token_form(&code);
            form.extend(extra);
            let mut request = http().post(format!("{}/token", p.issuer())).form(&form);
            if let Some(auth) = auth {
                request = request.header(AUTHORIZATION, auth);
            }
            request.send()
        };
        let wrong_basic = post(Some(basic_header(CLIENT, "nope")), vec![])
            .await
            .unwrap();
        assert_eq!(wrong_basic.status(), 401);
        assert!(wrong_basic.headers().contains_key(WWW_AUTHENTICATE));
        assert_eq!(
            wrong_basic.json::<Value>().await.unwrap()["error"],
            "invalid_client"
        );
        let wrong_post = post(
            None,
            vec![
                ("client_id", CLIENT.into()),
                ("client_secret", "nope".into()),
            ],
        )
        .await
        .unwrap();
        assert_eq!(wrong_post.status(), 401);
        let none = post(None, vec![("client_id", CLIENT.into())])
            .await
            .unwrap();
        assert_eq!(
            none.json::<Value>().await.unwrap()["error"],
            "invalid_client"
        );
        let both = post(
            Some(basic_header(CLIENT, SECRET)),
            vec![("client_secret", SECRET.into())],
        )
        .await
        .unwrap();
        assert_eq!(both.status(), 400);
        assert_eq!(
            both.json::<Value>().await.unwrap()["error"],
            "invalid_request"
        );
        // None of these consumed the code.
        assert_eq!(exchange(&p, &token_form(&code)).await.0, 200);
    }

    #[tokio::test]
    async fn pkce_mismatch_is_invalid_grant() {
        let p = provider().await;
        let code = code(&p).await;
        let mut form = token_form(&code);
        form.retain(|(k, _)| *k != "code_verifier");
        form.push(("code_verifier", "X".repeat(43)));
        let (status, body) = exchange(&p, &form).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");
    }

    #[tokio::test]
    async fn missing_verifier_and_verifier_without_challenge_are_invalid_grant() {
        let p = provider().await;
        let code = code(&p).await;
        let mut form = token_form(&code);
        form.retain(|(k, _)| *k != "code_verifier");
        assert_eq!(exchange(&p, &form).await.1["error"], "invalid_grant");

        let mut no_challenge = authorize_params();
        no_challenge.remove("code_challenge");
        no_challenge.remove("code_challenge_method");
        let code = location_query(&get_authorize(&p, &no_challenge).await)["code"].clone();
        assert_eq!(
            exchange(&p, &token_form(&code)).await.1["error"],
            "invalid_grant"
        );
        let code = location_query(&get_authorize(&p, &no_challenge).await)["code"].clone();
        let mut form = token_form(&code);
        form.retain(|(k, _)| *k != "code_verifier");
        assert_eq!(exchange(&p, &form).await.0, 200);
    }

    #[tokio::test]
    async fn plain_pkce_is_verified() {
        let p = provider().await;
        p.set_faults(|f| f.auto_approve_as = Some("alice".into()));
        let mut params = authorize_params();
        params.insert("code_challenge".into(), VERIFIER.into());
        params.insert("code_challenge_method".into(), "plain".into());
        let code = location_query(&get_authorize(&p, &params).await)["code"].clone();
        let mut form = token_form(&code);
        form.retain(|(k, _)| *k != "code_verifier");
        form.push(("code_verifier", s256(VERIFIER)));
        assert_eq!(exchange(&p, &form).await.1["error"], "invalid_grant");
        let code = location_query(&get_authorize(&p, &params).await)["code"].clone();
        assert_eq!(exchange(&p, &token_form(&code)).await.0, 200);
    }

    #[tokio::test]
    async fn code_replay_is_invalid_grant() {
        let p = provider().await;
        let code = code(&p).await;
        assert_eq!(exchange(&p, &token_form(&code)).await.0, 200);
        let (status, body) = exchange(&p, &token_form(&code)).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");
    }

    #[tokio::test]
    async fn code_is_bound_to_its_redirect_uri() {
        let p = provider().await;
        let code = code(&p).await;
        let mut form = token_form(&code);
        form.retain(|(k, _)| *k != "redirect_uri");
        form.push(("redirect_uri", "http://127.0.0.1:9/other".into()));
        assert_eq!(exchange(&p, &form).await.1["error"], "invalid_grant");
    }

    #[tokio::test]
    async fn code_is_bound_to_its_client() {
        let p = provider().await;
        let code = code(&p).await;
        let response = http()
            .post(format!("{}/token", p.issuer()))
            .header(AUTHORIZATION, basic_header("other", "other-secret"))
            .form(&token_form(&code))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            "invalid_grant"
        );
    }

    #[tokio::test]
    async fn userinfo_returns_the_users_claims_for_its_access_token_only() {
        let p = provider().await;
        let access_token = tokens(&p).await["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let url = format!("{}/userinfo", p.issuer());
        let claims: Value = http()
            .get(&url)
            .bearer_auth(&access_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            claims,
            json!({
                "sub": "alice", "preferred_username": "alice", "email": "alice@example.com",
                "email_verified": true, "name": "Alice Example", "groups": ["admins", "staff"]
            })
        );
        let forged = http().get(&url).bearer_auth("forged").send().await.unwrap();
        assert_eq!(forged.status(), 401);
        assert!(forged.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
        assert_eq!(http().get(&url).send().await.unwrap().status(), 401);
    }

    #[tokio::test]
    async fn fault_userinfo_sub_changes_only_userinfo() {
        let p = provider().await;
        p.set_faults(|f| f.userinfo_sub = Some("someone-else".into()));
        let body = tokens(&p).await;
        let keys = jwks_keys(&p).await;
        assert_eq!(
            verify(&p, body["id_token"].as_str().unwrap(), &keys).unwrap()["sub"],
            "alice"
        );
        let claims: Value = http()
            .get(format!("{}/userinfo", p.issuer()))
            .bearer_auth(body["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(claims["sub"], "someone-else");
        assert_eq!(claims["email"], "alice@example.com");
    }

    #[tokio::test]
    async fn fault_alg_none_yields_an_unsigned_token_that_does_not_verify() {
        let p = provider().await;
        p.set_faults(|f| f.alg = SignAlg::None);
        let token = id_token(&p).await;
        assert!(token.ends_with('.'));
        let (header, claims, signature) = parts(&token);
        assert_eq!(header["alg"], "none");
        assert!(header.get("kid").is_none());
        assert!(signature.is_empty());
        assert_eq!(claims["nonce"], NONCE);
        let keys = jwks_keys(&p).await;
        let jwk: Jwk = serde_json::from_value(keys[0].clone()).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        assert!(decode::<Value>(&token, &key, &validation(&p, Algorithm::RS256)).is_err());
    }

    #[tokio::test]
    async fn fault_alg_es256_and_hs256_sign_with_the_named_key() {
        let p = provider().await;
        p.set_faults(|f| f.alg = SignAlg::ES256);
        let token = id_token(&p).await;
        let keys = jwks_keys(&p).await;
        assert_eq!(parts(&token).0["alg"], "ES256");
        assert_eq!(verify(&p, &token, &keys).unwrap()["nonce"], NONCE);

        p.set_faults(|f| f.alg = SignAlg::HS256);
        let token = id_token(&p).await;
        let (header, _, _) = parts(&token);
        assert_eq!(header["alg"], "HS256");
        assert!(header.get("kid").is_none());
        let key = DecodingKey::from_secret(SECRET.as_bytes());
        let claims = decode::<Value>(&token, &key, &validation(&p, Algorithm::HS256))
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], "alice");
        let wrong = DecodingKey::from_secret(b"another secret");
        assert!(decode::<Value>(&token, &wrong, &validation(&p, Algorithm::HS256)).is_err());
    }

    #[tokio::test]
    async fn fault_bad_signature_breaks_only_the_signature() {
        for alg in [SignAlg::RS256, SignAlg::ES256] {
            let p = provider().await;
            p.set_faults(|f| {
                f.alg = alg;
                f.bad_signature = true;
            });
            let token = id_token(&p).await;
            let keys = jwks_keys(&p).await;
            let error = verify(&p, &token, &keys).unwrap_err();
            assert_eq!(
                *error.kind(),
                jsonwebtoken::errors::ErrorKind::InvalidSignature,
                "{alg:?}"
            );
            // Flipping the bit back gives a token that verifies: only the signature was touched.
            let repaired = flip_signature_bit(&token);
            assert_eq!(
                verify(&p, &repaired, &keys).unwrap()["nonce"],
                NONCE,
                "{alg:?}"
            );
        }
    }

    #[tokio::test]
    async fn fault_rotate_signing_key_signs_with_a_kid_absent_from_the_earlier_jwks() {
        let p = provider().await;
        let before = kids(&jwks_keys(&p).await);
        assert_eq!(before.len(), 2);
        p.set_faults(|f| f.rotate_signing_key = true);
        let token = id_token(&p).await;
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        assert!(!before.contains(&kid));
        let after = jwks_keys(&p).await;
        assert!(kids(&after).contains(&kid));
        assert!(before.iter().all(|old| kids(&after).contains(old)));
        assert_eq!(verify(&p, &token, &after).unwrap()["sub"], "alice");
        assert!(verify(&p, &token, &jwks_keys(&p).await).is_ok());
    }

    #[tokio::test]
    async fn fault_kid_omit_and_jwks_key_faults() {
        let p = provider().await;
        p.set_faults(|f| {
            f.kid = KidFault::Omit;
            f.jwks_extra_keys = 2;
            f.jwks_unparseable_key = true;
        });
        let token = id_token(&p).await;
        assert!(jsonwebtoken::decode_header(&token).unwrap().kid.is_none());
        let keys = jwks_keys(&p).await;
        let rsa: Vec<&Value> = keys.iter().filter(|k| k["kty"] == "RSA").collect();
        assert_eq!(rsa.len(), 3);
        assert_eq!(keys.iter().filter(|k| k["kty"] == "AKP").count(), 1);
        // Exactly one of the RSA keys verifies the token.
        let verifying = rsa
            .iter()
            .filter(|jwk| {
                let jwk: Jwk = serde_json::from_value((**jwk).clone()).unwrap();
                let key = DecodingKey::from_jwk(&jwk).unwrap();
                decode::<Value>(&token, &key, &validation(&p, Algorithm::RS256)).is_ok()
            })
            .count();
        assert_eq!(verifying, 1);

        p.set_faults(|f| *f = Faults::default());
        let keys = jwks_keys(&p).await;
        assert_eq!(keys.len(), 2);
        assert!(jsonwebtoken::decode_header(&id_token(&p).await)
            .unwrap()
            .kid
            .is_some());
    }

    #[tokio::test]
    async fn fault_claims_change_only_what_they_name() {
        let p = provider().await;
        let keys = jwks_keys(&p).await;
        let baseline = parts(&id_token(&p).await).1;
        // (the fault, what must hold of the claims, the claims it may change)
        type Case = (
            Box<dyn Fn(&mut Faults)>,
            Box<dyn Fn(&Value) -> bool>,
            &'static [&'static str],
        );
        let cases: Vec<Case> = vec![
            (
                Box::new(|f| f.iss = Some("https://other".into())),
                Box::new(|c| c["iss"] == "https://other"),
                &["iss"],
            ),
            (
                Box::new(|f| f.aud = Some(Value::Null)),
                Box::new(|c| c.get("aud").is_none()),
                &["aud"],
            ),
            (
                Box::new(|f| f.aud = Some(json!([CLIENT, "untrusted"]))),
                Box::new(|c| c["aud"] == json!([CLIENT, "untrusted"])),
                &["aud"],
            ),
            (
                Box::new(|f| f.azp = Some(None)),
                Box::new(|c| c.get("azp").is_none()),
                &["azp"],
            ),
            (
                Box::new(|f| f.azp = Some(Some("x".into()))),
                Box::new(|c| c["azp"] == "x"),
                &["azp"],
            ),
            (
                Box::new(|f| f.omit_iat = true),
                Box::new(|c| c.get("iat").is_none()),
                &["iat"],
            ),
            (
                Box::new(|f| f.omit_exp = true),
                Box::new(|c| c.get("exp").is_none()),
                &["exp"],
            ),
            (
                Box::new(|f| f.exp_offset_secs = -3600),
                Box::new(|c| c["exp"].as_i64().unwrap() < c["iat"].as_i64().unwrap()),
                &["exp"],
            ),
            (
                Box::new(|f| f.iat_offset_secs = -7 * 86400),
                Box::new(|c| c["iat"].as_i64().unwrap() < c["auth_time"].as_i64().unwrap() - 86400),
                &["iat"],
            ),
            (
                Box::new(|f| f.nonce = NonceFault::Omit),
                Box::new(|c| c.get("nonce").is_none()),
                &["nonce"],
            ),
            (
                Box::new(|f| f.nonce = NonceFault::Wrong),
                Box::new(|c| c["nonce"].as_str().is_some_and(|n| n != NONCE)),
                &["nonce"],
            ),
            (
                Box::new(|f| f.omit_sub = true),
                Box::new(|c| c.get("sub").is_none()),
                &["sub"],
            ),
        ];
        // Claims that differ between any two sign-ins anyway.
        let volatile = ["exp", "iat", "auth_time", "at_hash", "sid"];
        for (fault, holds, changed) in cases {
            p.set_faults(|f| {
                *f = Faults::default();
                fault(f);
            });
            let token = id_token(&p).await;
            let claims = parts(&token).1;
            assert!(holds(&claims), "{claims}");
            for (name, value) in baseline.as_object().unwrap() {
                if !changed.contains(&name.as_str()) && !volatile.contains(&name.as_str()) {
                    assert_eq!(
                        claims.get(name),
                        Some(value),
                        "{name} changed by a fault for {changed:?}"
                    );
                }
            }
            // The signature is still good: only the claim changed.
            let header = jsonwebtoken::decode_header(&token).unwrap();
            let jwk = keys
                .iter()
                .find(|k| k["kid"] == header.kid.as_deref().unwrap())
                .unwrap();
            let key = DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).unwrap()).unwrap();
            let mut lax = Validation::new(Algorithm::RS256);
            lax.required_spec_claims.clear();
            lax.validate_exp = false;
            lax.validate_aud = false;
            assert!(decode::<Value>(&token, &key, &lax).is_ok(), "{changed:?}");
        }
    }

    #[tokio::test]
    async fn fault_authorize_error_redirects_with_error_and_state() {
        let p = provider().await;
        p.set_faults(|f| {
            f.auto_approve_as = Some("alice".into());
            f.authorize_error = Some("access_denied".into());
        });
        let response = get_authorize(&p, &authorize_params()).await;
        assert_eq!(response.status(), 302);
        let query = location_query(&response);
        assert_eq!(query["error"], "access_denied");
        assert_eq!(query["state"], "st-123");
        assert!(!query.contains_key("code"));
    }

    #[tokio::test]
    async fn fault_token_status_answers_with_that_status_and_keeps_the_code() {
        let p = provider().await;
        let code = code(&p).await;
        p.set_faults(|f| f.token_status = Some(502));
        let (status, body) = exchange(&p, &token_form(&code)).await;
        assert_eq!(status, 502);
        assert_eq!(body["error"], "server_error");
        p.set_faults(|f| f.token_status = None);
        assert_eq!(exchange(&p, &token_form(&code)).await.0, 200);
    }

    #[tokio::test]
    async fn fault_down_answers_503_everywhere_and_still_counts() {
        let p = provider().await;
        p.set_faults(|f| f.down = true);
        for endpoint in Endpoint::ALL {
            let url = format!("{}{}", p.issuer(), endpoint.path());
            let status = if endpoint == Endpoint::Token {
                http().post(url).send().await.unwrap().status()
            } else {
                http().get(url).send().await.unwrap().status()
            };
            assert_eq!(status, 503, "{endpoint:?}");
            assert_eq!(p.calls(endpoint), 1, "{endpoint:?}");
        }
        p.set_faults(|f| f.down = false);
        let response = http().get(p.well_known_url()).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn counters_count_each_endpoint() {
        let p = provider().await;
        for endpoint in Endpoint::ALL {
            assert_eq!(p.calls(endpoint), 0);
        }
        http().get(p.well_known_url()).send().await.unwrap();
        let body = tokens(&p).await;
        jwks_keys(&p).await;
        jwks_keys(&p).await;
        http()
            .get(format!("{}/userinfo", p.issuer()))
            .bearer_auth(body["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(p.calls(Endpoint::Discovery), 1);
        assert_eq!(p.calls(Endpoint::Authorize), 1);
        assert_eq!(p.calls(Endpoint::Token), 1);
        assert_eq!(p.calls(Endpoint::Jwks), 2);
        assert_eq!(p.calls(Endpoint::Userinfo), 1);
        assert_eq!(p.calls(Endpoint::EndSession), 0);
        p.reset_calls();
        assert_eq!(p.calls(Endpoint::Jwks), 0);
    }

    #[tokio::test]
    async fn end_session_records_the_hint_and_redirects_only_to_a_registered_origin() {
        let p = provider().await;
        let url = format!("{}/end_session", p.issuer());
        let response = http()
            .get(&url)
            .query(&[
                ("id_token_hint", "the.hint.token"),
                ("post_logout_redirect_uri", "http://127.0.0.1:9/signed-out"),
                ("state", "s1"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 302);
        assert_eq!(
            response.headers()[LOCATION],
            "http://127.0.0.1:9/signed-out?state=s1"
        );
        let seen = p.last_end_session_query().unwrap();
        assert_eq!(seen["id_token_hint"], "the.hint.token");
        assert_eq!(
            seen["post_logout_redirect_uri"],
            "http://127.0.0.1:9/signed-out"
        );

        let foreign = http()
            .get(&url)
            .query(&[("post_logout_redirect_uri", "https://evil.example/")])
            .send()
            .await
            .unwrap();
        assert_eq!(foreign.status(), 400);
        assert!(foreign.headers().get(LOCATION).is_none());

        let page = http().get(&url).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("signed out"));
        assert_eq!(p.calls(Endpoint::EndSession), 3);
    }

    #[tokio::test]
    async fn provider_stops_when_shut_down() {
        let p = provider().await;
        let url = p.well_known_url();
        assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
        p.shutdown();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(reqwest::get(&url).await.is_err());
    }
}
