//! Machine tokens (DESIGN "Machine tokens"): a JWT signed by a key of a
//! trusted source's JWKS authenticates; every hostile variant is refused with
//! RFC 6750 `invalid_token` and nothing reaches the upstream.

use base64::Engine as _;
use portcullis::demo::{Faults, Provider, SignAlg};
use serde_json::{json, Map, Value};

use crate::support::{client, Gateway, Upstream};

struct Machines {
    trusted: Provider,
    other: Provider,
    gw: Gateway,
    upstream: Upstream,
}

async fn provider() -> Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    portcullis::demo::provider::start(
        listener,
        portcullis::demo::ProviderConfig::example("http://127.0.0.1:1/cb"),
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
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n",
        trusted.well_known_url(),
        other.well_known_url(),
        upstream.url()
    ));
    Machines {
        trusted,
        other,
        gw,
        upstream,
    }
}

fn claims(iss: &str, change: impl FnOnce(&mut Map<String, Value>)) -> Map<String, Value> {
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
        seen[0].header("authorization").is_some(),
        "the app may still read its token"
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
