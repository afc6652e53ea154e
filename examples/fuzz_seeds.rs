//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/`) with
//! the product's own code: JWS signed and JWKS served by the demo provider,
//! cookies sealed by `Sealer`, OAuth 1.0a answers of the demo OAuth 1.0a
//! provider to requests `Signer` signed, and request heads, configs and claims
//! as clients, operators and providers write them.
//!
//! Usage: `cargo run --example fuzz_seeds [OUT_DIR]` (default `fuzz/corpus`).
//! Sealed values carry a random nonce, so each run writes new bytes: commit a
//! run only when a target's seeds need to change.
// A seed writer that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use portcullis::config::Secret;
use portcullis::demo::{Faults, KidFault, ProviderConfig, SignAlg};
use portcullis::session::cookie::{self, Purpose, Sealer};
use portcullis::session::{LoginState, Oauth1Pending, SessionClaims};
use portcullis::source::oauth1::{Signer, Stamp, TokenCredentials};
use portcullis_testkit::oauth1_provider::Oauth1Endpoint;
use serde_json::{json, Map, Value};

/// The session secrets the cookie target opens with (fuzz/fuzz_targets/cookie_open.rs):
/// the first seals, the second is a retired one that still opens.
const FUZZ_SECRETS: [&[u8; 32]; 2] = [
    b"portcullis fuzz secret, current!",
    b"portcullis fuzz secret, retired!",
];

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let out = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("fuzz/corpus"), PathBuf::from);
    request_heads(&out.join("request_head"));
    request_streams(&out.join("request_stream"));
    jws_and_jwks(&out.join("jws"), &out.join("jwks")).await;
    cookies(&out.join("cookie_open"));
    configs(&out.join("config_load"));
    oauth1(&out.join("oauth1")).await;
    claims_policy(&out.join("claims_policy"));
    redirects(&out.join("redirect"));
    upstream_answers(&out.join("upstream_answer"));
    println!("seeds written under {}", out.display());
}

/// Heads as browsers, curl and smuggling probes send them; the first byte is
/// how the target cuts the stream into reads.
fn request_heads(dir: &Path) {
    for (i, (name, head)) in REQUEST_STREAMS.iter().enumerate() {
        let mut bytes = vec![u8::try_from(i * 5).unwrap()];
        bytes.extend_from_slice(head.as_bytes());
        write(dir, name, bytes);
    }
}

/// The same streams for the tap-against-hyper target, each twice: read in
/// pieces of up to 63 bytes (the first byte's low six bits) and a byte at a
/// time (0x40, where the target checks each head byte for byte); in every
/// other stream the service answers without reading bodies (0x80).
fn request_streams(dir: &Path) {
    for (i, (name, head)) in REQUEST_STREAMS.iter().enumerate() {
        let unread = if i % 2 == 1 { 0x80 } else { 0 };
        let pieces = u8::try_from(i * 3 + 1).unwrap() & 0x3f;
        for (suffix, control) in [("", pieces | unread), ("_bytewise", 0x40 | unread)] {
            let mut bytes = vec![control];
            bytes.extend_from_slice(head.as_bytes());
            write(dir, &format!("{name}{suffix}"), bytes);
        }
    }
}

/// Client byte streams: heads as browsers and curl send them, pipelined
/// requests with bodies, and smuggling probes.
const REQUEST_STREAMS: [(&str, &str); 16] = [
        ("browser_get", "GET /wiki/Main_Page?action=view HTTP/1.1\r\nHost: wiki.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/html,application/xhtml+xml\r\nAccept-Language: en-GB,en;q=0.5\r\nCookie: __Host-portcullis=AQIabc; theme=dark\r\nConnection: keep-alive\r\n\r\n"),
        ("curl_bearer", "GET /api/v4/projects/group%2Fproject HTTP/1.1\r\nHost: gitlab.example\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nAuthorization: Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln\r\n\r\n"),
        ("post_form", "POST /_auth/sign_out HTTP/1.1\r\nHost: sso.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\nOrigin: https://sso.example\r\n\r\nrd=%2Fhome%2F"),
        ("chunked_trailer", "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: v\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("pipelined", "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyzGET /c HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("cl_te_smuggle", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("duplicate_cl", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("http10", "GET /legacy HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("websocket", "GET /socket HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n\r\n"),
        ("dot_segments", "GET /public/..%2Fadmin;x/%2e%2e/%5c/%00 HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("folded_bare_cr", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\nX-B: d\re\r\n\r\n"),
        ("forward_auth", "GET /_auth/check HTTP/1.1\r\nHost: gw.example\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example\r\nX-Forwarded-Uri: /private/../x\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"),
        ("expect_continue", "PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nabcdGET /n HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("chunked_odd", "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n000A ; a=\"b\"\r\n0123456789\r\n0\r\n\r\nHEAD /n HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("connect", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nGET /n HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("absolute_form", "GET http://a/x?y HTTP/1.1\r\nHost: a\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /z#f HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
];

/// Answers as upstreams send them (nginx, Node, a chunked app with trailers,
/// informational answers first) and as broken ones do; the first byte is the
/// read size (low 6 bits) and whether the request was a HEAD (0x40).
fn upstream_answers(dir: &Path) {
    let answers: [(&str, u8, &str); 10] = [
        ("nginx_static", 0x3f, "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 08:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 12\r\nLast-Modified: Sat, 05 Dec 2026 10:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"6751\"\r\nAccept-Ranges: bytes\r\n\r\n<p>hello</p>"),
        ("node_chunked", 7, "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nb\r\n{\"ok\":true}\r\n0\r\n\r\n"),
        ("chunked_trailers", 3, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5;ext=\"a b\"\r\nhello\r\n6\r\n, worl\r\n0\r\nx-sum: 11\r\nSet-Cookie: a=b\r\n\r\n"),
        ("continue_hints", 11, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"),
        ("head_with_length", 0x40 | 5, "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"),
        ("no_content_body", 1, "HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\nbody"),
        ("until_close_http10", 13, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it until the close"),
        ("cl_te", 17, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("gzip_chunked", 9, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        ("bare_lf_reason", 2, "\r\n\nHTTP/1.1 299 Fine by us\nX-A: b\nContent-Length: 2\n\nok"),
    ];
    for (name, control, answer) in answers {
        let mut bytes = vec![control];
        bytes.extend_from_slice(answer.as_bytes());
        write(dir, name, bytes);
    }
}

/// Tokens signed by the demo provider (every algorithm it has, and its
/// faults), hostile claims, and the key sets it serves.
async fn jws_and_jwks(jws_dir: &Path, jwks_dir: &Path) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider = portcullis::demo::provider::start(
        listener,
        ProviderConfig::example("http://127.0.0.1:1/cb").unwrap(),
    )
    .await;
    let jwks_url = format!("{}/jwks", provider.issuer());
    let fetch = || async { reqwest::get(&jwks_url).await.unwrap().text().await.unwrap() };
    write(jwks_dir, "demo_rsa_ec", fetch().await);
    provider.set_faults(|f| {
        f.jwks_extra_keys = 2;
        f.jwks_unparseable_key = true;
    });
    write(jwks_dir, "extra_and_unknown_keys", fetch().await);
    provider.set_faults(|f| *f = Faults::default());
    for (name, doc) in [
        (
            "private_members",
            json!({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}]}),
        ),
        (
            "enc_use",
            json!({"keys": [{"kty": "EC", "crv": "P-256", "use": "enc", "x": "AA", "y": "AA"}]}),
        ),
        (
            "okp_ed25519",
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": URL_SAFE_NO_PAD.encode([7u8; 32])}]}),
        ),
        (
            "symmetric",
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}]}),
        ),
        ("not_keys", json!({"keys": {"kty": "RSA"}})),
    ] {
        write(jwks_dir, name, doc.to_string());
    }

    let now = 1_767_000_000u64;
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(provider.issuer()));
    claims.insert("sub".into(), json!("alice"));
    claims.insert("aud".into(), json!("portcullis-demo"));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + 3600));
    claims.insert("groups".into(), json!(["admins", "staff"]));
    let mut hostile = claims.clone();
    hostile.insert("sub".into(), json!("admin\u{0}\u{202e}"));
    hostile.insert(
        "deep".into(),
        serde_json::from_str(&format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap(),
    );
    hostile.insert("exp".into(), json!(u64::MAX));
    hostile.insert("nbf".into(), json!(-1.5e308));
    hostile.insert("kubernetes.io".into(), json!({"namespace": "kube-system"}));
    for (name, alg, kid, bad, claims) in [
        ("rs256", SignAlg::RS256, KidFault::Normal, false, &claims),
        ("es256", SignAlg::ES256, KidFault::Normal, false, &claims),
        ("hs256", SignAlg::HS256, KidFault::Normal, false, &claims),
        ("none", SignAlg::None, KidFault::Normal, false, &claims),
        (
            "rs256_no_kid",
            SignAlg::RS256,
            KidFault::Omit,
            false,
            &claims,
        ),
        (
            "es256_bad_signature",
            SignAlg::ES256,
            KidFault::Normal,
            true,
            &claims,
        ),
        (
            "rs256_hostile_claims",
            SignAlg::RS256,
            KidFault::Normal,
            false,
            &hostile,
        ),
    ] {
        provider.set_faults(|f| {
            *f = Faults {
                alg,
                kid,
                bad_signature: bad,
                ..Faults::default()
            }
        });
        write(jws_dir, name, provider.sign(claims).unwrap());
    }
    // The demo client's secret keys its HS256 tokens: the JWS target checks them with it.
    let secret = &provider.config().clients[0].client_secret;
    write(jws_dir, "hs256_secret.txt", secret);
    let seg = |v: &str| URL_SAFE_NO_PAD.encode(v);
    let payload = seg(&Value::Object(claims).to_string());
    for (name, header) in [
        ("crit", r#"{"alg":"RS256","crit":["exp"],"exp":1}"#),
        ("duplicate_alg", r#"{"alg":"RS256","alg":"none"}"#),
        ("nested_cty", r#"{"alg":"ES256","cty":"JWT","kid":"k"}"#),
        (
            "embedded_jwk",
            r#"{"alg":"RS256","jwk":{"kty":"RSA","n":"AQAB","e":"AQAB"},"jku":"https://evil.example/jwks"}"#,
        ),
    ] {
        write(jws_dir, name, format!("{}.{payload}.c2ln", seg(header)));
    }
    provider.shutdown();
}

/// Cookies sealed with the fuzz secrets, as a browser sends them in one
/// `Cookie` header, and a session's sealed token record.
fn cookies(dir: &Path) {
    let secrets: Vec<Secret<Vec<u8>>> = FUZZ_SECRETS
        .iter()
        .map(|s| Secret::new(s.to_vec()))
        .collect();
    let sealer = Sealer::new(&secrets);
    let retired = Sealer::new(&secrets[1..]);
    let session = cookie::cookie_name("portcullis", true);
    let login = cookie::login_cookie_name("portcullis", true);
    let claims = SessionClaims {
        sid: "c2Vzc2lvbi1pZC0xMjM0".into(),
        uid: "1".into(),
        host: "wiki.example".into(),
        iat: 1_767_000_000,
        exp: 1_767_043_200,
    };
    let state = LoginState {
        source: "corp".into(),
        state: "c3RhdGUtdmFsdWU".into(),
        nonce: Some("bm9uY2U".into()),
        pkce_verifier: Some("dmVyaWZpZXItdmVyaWZpZXItdmVyaWZpZXItdmVyaWZpZXI".into()),
        rd: "https://wiki.example/page?x=1".into(),
        link: None,
        exp: 1_767_000_600,
        oauth1: Some(Oauth1Pending {
            token: "request-token".into(),
            secret: "request-secret".into(),
        }),
        handoff: None,
    };
    let flow = cookie::flow_cookie_name(&login, &state.state);
    let sealed_session = sealer.seal(&session, Purpose::Session, &claims).unwrap();
    let sealed_old = retired.seal(&session, Purpose::Session, &claims).unwrap();
    let sealed_login = sealer.seal(&flow, Purpose::LoginState, &state).unwrap();
    let tokens = json!({"access_token": "gho_16C7e42F292c6912E7710c838347Ae178B4a", "refresh_token": null, "issued_at": 1_767_000_000, "expires_at": 1_767_003_600});
    let sealed_tokens = sealer
        .seal_stored(&claims.sid, Purpose::Tokens, &tokens)
        .unwrap();
    // The authentic values, one per line: `name purpose value`; the target
    // accepts an open only for one of these.
    write(
        dir,
        "authentic.txt",
        format!(
            "{session} session {sealed_session}\n{session} session {sealed_old}\n{flow} login {sealed_login}\n{} tokens {sealed_tokens}\n",
            claims.sid
        ),
    );
    write(dir, "session", format!("{session}={sealed_session}"));
    write(
        dir,
        "session_retired_key",
        format!("{session}={sealed_old}"),
    );
    write(
        dir,
        "browser_header",
        format!("_ga=GA1.2.1; {session}={sealed_session}; {flow}={sealed_login}; theme=dark"),
    );
    write(
        dir,
        "tossed_twice",
        format!("{session}=AQI; {session}={sealed_session}"),
    );
    write(
        dir,
        "tokens_record",
        format!("{}={sealed_tokens}", claims.sid),
    );
    // Flip mode: `!`, which authentic value, then (offset, xor mask) pairs.
    write(dir, "flip_session", b"!\x00\x00\x05\x01\x00\x30\x80");
    write(dir, "flip_login_tag", b"!\x02\xff\xff\x01");
}

/// The shipped config, and variants a deployer writes, with env overrides
/// after a `#--env--` line.
fn configs(dir: &Path) {
    let shipped = std::fs::read_to_string("config/portcullis.toml").unwrap();
    write(dir, "shipped", &shipped);
    write(
        dir,
        "shipped_with_env",
        format!("{shipped}\n#--env--\nPORTCULLIS_SESSION__SECRET=aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29ybGQ\nPORTCULLIS_SOURCE__CORP__CONSUMER_SECRET=123\nPORTCULLIS_APP__0__UPSTREAM=http://127.0.0.1:1\nPORTCULLIS_SERVER__TRUSTED_PROXIES=[\"10.0.0.0/8\"]\n"),
    );
    write(
        dir,
        "oauth1_and_bearer",
        r#"[server]
listen = "0.0.0.0:443"
public_url = "https://sso.example"
[server.tls]
cert_file = "/nonexistent/cert.pem"
key_file = "/nonexistent/key.pem"
[session]
secrets = ["aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29ybGQ", "short"]
lifetime = "99999999999h"
cookie_domain = ".example"
[store]
url = "postgres://portcullis@db.internal/portcullis"
[[source]]
slug = "twitter"
name = "Twitter"
type = "oauth1"
consumer_key = "ck"
consumer_secret = "cs"
request_token_url = "https://api.twitter.com/oauth/request_token"
authorization_url = "https://api.twitter.com/oauth/authenticate"
access_token_url = "https://api.twitter.com/oauth/access_token"
profile_url = "https://api.twitter.com/1.1/account/verify_credentials.json"
claims = { identifier = "id_str", username = "screen_name", email = "\"kubernetes.io\".email" }
[[source.policy]]
on = ["authenticate", "access"]
effect = "allow"
expression = '"staff" in claims.groups && request.path.startsWith("/admin")'
[[app]]
name = "wiki"
host = "wiki.example"
upstream = "http://10.0.0.5:8080"
public_paths = ["/static/", "/../x"]
claim_headers = { "X-Forwarded-User" = "sub" }
[[app.policy]]
on = ["access"]
effect = "deny"
path_prefix = "/admin"
groups = ["contractors"]
"#,
    );
    write(dir, "not_a_table", "= 1\n[[server]]\nlisten = 5\n[server\n");
    // The operator's guide's recipes, as deployers copy them.
    for entry in std::fs::read_dir("docs/recipes").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_stem().unwrap().to_string_lossy();
            write(
                dir,
                &format!("recipe_{name}"),
                std::fs::read(&path).unwrap(),
            );
        }
    }
}

/// A real OAuth 1.0a exchange with the demo provider: the answers it gives,
/// the callback it redirects to, and the `Authorization` headers signed for it.
async fn oauth1(dir: &Path) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = "http://127.0.0.1:1/_auth/callback/twitter";
    let config = portcullis_testkit::oauth1_provider::Oauth1ProviderConfig::example(callback);
    let provider = portcullis_testkit::oauth1_provider::start(listener, config.clone());
    let signer = Signer::new(
        &config.consumer_key,
        Secret::new(config.consumer_secret.clone()),
    )
    .with_realm("portcullis-demo")
    .with_version();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = url::Url::parse(&provider.url(Oauth1Endpoint::RequestToken)).unwrap();
    let signed = signer
        .request_token(&url, callback, &Stamp::new("bm9uY2Utb25l", 1_767_000_000))
        .unwrap();
    // Selector bytes: 0 temporary credentials, 1 token credentials, 2 callback
    // query, 3 Authorization header (see fuzz_targets/oauth1.rs).
    write(
        dir,
        "header_request_token",
        format!("\x03{}", signed.authorization),
    );
    let signed = signer
        .request_token(&url, callback, &Stamp::now().unwrap())
        .unwrap();
    let answer = client
        .post(url.as_str())
        .header("authorization", &signed.authorization)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    write(dir, "answer_temporary", format!("\x00{answer}"));
    let temporary =
        portcullis::source::oauth1::parse_temporary_credentials(answer.as_bytes()).unwrap();
    let authorize = format!(
        "{}?oauth_token={}",
        provider.url(Oauth1Endpoint::Authorize),
        temporary.credentials.token
    );
    let redirect = client.get(&authorize).send().await.unwrap();
    let location = redirect.headers()["location"].to_str().unwrap().to_string();
    let query = location.split_once('?').unwrap().1.to_string();
    write(dir, "callback", format!("\x02{query}"));
    write(
        dir,
        "callback_denied",
        "\x02denied=abc&oauth_token=abc&oauth_verifier=x",
    );
    let verifier =
        portcullis::source::oauth1::check_callback(&query, &temporary.credentials.token).unwrap();
    let access_url = url::Url::parse(&provider.url(Oauth1Endpoint::AccessToken)).unwrap();
    let signed = signer
        .access_token(
            &access_url,
            &TokenCredentials::new(
                temporary.credentials.token.clone(),
                temporary.credentials.secret.expose().clone(),
            ),
            &verifier,
            &Stamp::now().unwrap(),
        )
        .unwrap();
    write(
        dir,
        "header_access_token",
        format!("\x03{}", signed.authorization),
    );
    let answer = client
        .post(access_url.as_str())
        .header("authorization", &signed.authorization)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    write(dir, "answer_token", format!("\x01{answer}"));
    write(
        dir,
        "answer_json_error",
        "\x01{\"errors\":[{\"code\":89,\"message\":\"Invalid or expired token.\"}]}",
    );
    write(
        dir,
        "answer_repeated",
        "\x00oauth_token=a&oauth_token=b&oauth_token_secret=s&oauth_callback_confirmed=true",
    );
    // Sign-then-verify mode: `\x04`, then method, URL, token secret and realm
    // separated by newlines.
    write(dir, "roundtrip", "\x04GET\nhttps://api.example/1.1/users/show.json?screen_name=a%20b&x=%E2%9C%93\ntoken-secret\nPhotos");
    provider.shutdown();
}

/// A claim path, a CEL expression and hostile claims, on three parts
/// separated by newlines (see fuzz_targets/claims_policy.rs).
fn claims_policy(dir: &Path) {
    let deep = format!("{}1{}", "{\"a\":".repeat(60), "}".repeat(60));
    for (name, path, expression, claims) in [
        ("readme_ci", "repository", r#"claims.repository == "acme/deploy" && claims.ref == "refs/heads/main""#, r#"{"repository":"acme/deploy","ref":"refs/heads/main","sub":"repo:acme/deploy:ref:refs/heads/main"}"#.to_string()),
        ("readme_groups", "groups.0", r#""platform" in claims.groups && claims.email_verified == true"#, r#"{"groups":["platform","staff"],"email_verified":"true"}"#.to_string()),
        ("quoted_path", "\"kubernetes.io\".namespace", r#"claims["kubernetes.io"].namespace == "kube-system""#, r#"{"kubernetes.io":{"namespace":"kube-system","serviceaccount":{"name":"default"}}}"#.to_string()),
        ("numbers", "data.attributes.id", "claims.exp > 1000 && int(claims.n) == 3", r#"{"exp":1.8446744073709552e19,"n":-9223372036854775808,"data":{"attributes":{"id":12345}}}"#.to_string()),
        ("deep", "a.a.a.a.a.a", "has(claims.a.a) || size(claims) > 0", deep),
        ("user_request", "sub", r#"user.username == "alice" && request.path.startsWith("/admin") && source == "corp""#, r#"{"sub":"alice\u0000","email":"ALICE@EXAMPLE.COM"}"#.to_string()),
        ("not_bool", "x", "claims.x + 1", r#"{"x":9223372036854775807}"#.to_string()),
    ] {
        write(dir, name, format!("{path}\n{expression}\n{claims}"));
    }
}

/// `rd` values: ours, and the open-redirect bypass classes (OA2-13).
fn redirects(dir: &Path) {
    for (name, rd) in [
        ("path", "/wiki/Main_Page?action=edit#top"),
        ("app_host", "https://wiki.example:8443/page?x=1"),
        ("protocol_relative", "//evil.example/"),
        ("backslash", "/\\evil.example"),
        ("encoded_slashes", "/%2F%2Fevil.example"),
        ("double_encoded", "/%252F%252Fevil.example"),
        ("userinfo", "https://wiki.example:8443@evil.example/"),
        ("tab", "/\t/evil.example"),
        ("javascript", "javascript:alert(document.domain)"),
        ("other_port", "https://sso.example:444/"),
        ("mixed_case_scheme", "HtTpS://WIKI.example:8443/x"),
        ("dot_host", "https://wiki.example.:8443/"),
    ] {
        write(dir, name, rd);
    }
}
