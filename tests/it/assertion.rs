//! The identity assertion (DESIGN "Headers to the upstream"): the upstream
//! of an app with `identity_assertion = true` receives `X-Portcullis-Assertion`,
//! which verifies with `/_auth/jwks.json` (checked here with the
//! `jsonwebtoken` crate, not the gateway's code), for a session and for a
//! machine token; a forged, expired or tampered one is refused by the
//! verifier, and a client-sent copy never reaches the upstream. Also the
//! `github-actions` machine-only preset.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis::config::load_with_env;
use serde_json::{json, Value};

use crate::bearer::claims;
use crate::signin::Setup;
use crate::support::{base_config, client, config_file, Gateway, Upstream};

const ALLOW_ALL: &str = "[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n";

/// The served JWKS.
async fn jwks(gw: &Gateway) -> Value {
    let r = client()
        .get(gw.url("/_auth/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the JWKS is public");
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

/// The key of `jwks` named by the assertion's `kid`.
fn key_for(jwks: &Value, jwt: &str) -> DecodingKey {
    let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} is not in the JWKS"));
    DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap()).unwrap()
}

/// What an upstream would check: ES256 only, our issuer, its own audience, `exp`.
fn validation(iss: &str, aud: &str) -> Validation {
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[iss]);
    v.set_audience(&[aud]);
    v.leeway = 0;
    v
}

/// Verifies `jwt` against the served keys as an upstream would.
fn verify(jwks: &Value, jwt: &str, iss: &str, aud: &str) -> Result<Value, String> {
    jsonwebtoken::decode::<Value>(jwt, &key_for(jwks, jwt), &validation(iss, aud))
        .map(|d| d.claims)
        .map_err(|e| format!("{:?}", e.kind()))
}

/// Checks the refusals every verifier must make: another key, an assertion
/// past its `exp`, a changed payload.
fn refusals_hold(jwks: &Value, jwt: &str, iss: &str, aud: &str) {
    // Signed by another key: a key of the right shape that is not ours.
    let other = aws_lc_rs::signature::EcdsaKeyPair::generate(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
    )
    .unwrap();
    let point = aws_lc_rs::signature::KeyPair::public_key(&other)
        .as_ref()
        .to_vec();
    let wrong = DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..]),
    )
    .unwrap();
    let err = jsonwebtoken::decode::<Value>(jwt, &wrong, &validation(iss, aud)).unwrap_err();
    assert_eq!(
        format!("{:?}", err.kind()),
        "InvalidSignature",
        "a wrong key"
    );
    // Expired: the assertion lives at most 5 minutes, so a verifier that
    // looks 301 s ahead already finds it expired.
    let mut later = validation(iss, aud);
    later.reject_tokens_expiring_in_less_than = 301;
    let err = jsonwebtoken::decode::<Value>(jwt, &key_for(jwks, jwt), &later).unwrap_err();
    assert_eq!(format!("{:?}", err.kind()), "ExpiredSignature");
    // Tampered: another subject in the payload, the signature kept.
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    assert_eq!(
        verify(jwks, &forged, iss, aud).unwrap_err(),
        "InvalidSignature"
    );
    // Another app's audience.
    assert_eq!(
        verify(jwks, jwt, iss, "another-app").unwrap_err(),
        "InvalidAudience"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_gets_an_assertion_that_verifies_with_the_served_jwks_for_a_session_and_a_token(
) {
    let apps = format!(
        "identity_assertion = true\njwt_sources = [\"demo\"]\njwt_audiences = [\"app\"]\n{ALLOW_ALL}"
    );
    let mut s = Setup::start_with_apps("", &apps, |_| {}).await;
    let iss = s.gw.url("");
    s.sign_in().await;

    // A person, with forged copies in both spellings.
    let r = s
        .client
        .get(s.gw.url("/private"))
        .header("cookie", s.jar.header())
        .header("x-portcullis-assertion", "forged.by.client")
        .header("x_portcullis_assertion", "forged.by.client")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let info: Value = s
        .client
        .get(s.gw.url("/_auth/userinfo"))
        .header("cookie", s.jar.header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen = s.upstream.requests().pop().unwrap();
    let sent: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(k, _)| k.replace('_', "-") == "x-portcullis-assertion")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(sent.len(), 1, "exactly the gateway's own: {sent:?}");
    let jwt = sent[0];
    assert_ne!(jwt, "forged.by.client");
    let keys = jwks(&s.gw).await;
    let said = verify(&keys, jwt, &iss, "app").unwrap();
    assert_eq!(said["sub"], info["user_id"]);
    assert_eq!(said["kind"], "session");
    assert_eq!(said["preferred_username"], info["user"]);
    assert_eq!(said["email"], info["email"]);
    assert_eq!(said["groups"], info["groups"]);
    let lifetime = said["exp"].as_u64().unwrap() - said["iat"].as_u64().unwrap();
    assert!(lifetime <= 300, "{lifetime}");
    refusals_hold(&keys, jwt, &iss, "app");

    // The next request reuses the cached assertion: the hot path does not sign.
    s.get(&s.gw.url("/private")).await;
    let again = s.upstream.requests().pop().unwrap();
    assert_eq!(again.header("x-portcullis-assertion"), Some(jwt));

    // A machine: `sub` is its token's issuer and subject.
    let token = s
        .provider
        .sign(&claims(&s.provider.issuer(), |c| {
            c.insert("aud".into(), json!("app"));
        }))
        .unwrap();
    let r = client()
        .get(s.gw.url("/deploy"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-portcullis-assertion", "forged.by.client")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.upstream.requests().pop().unwrap();
    let jwt = seen.header("x-portcullis-assertion").unwrap();
    assert_ne!(jwt, "forged.by.client");
    let said = verify(&keys, jwt, &iss, "app").unwrap();
    assert_eq!(
        said["sub"],
        format!("{}#ci-job-7", s.provider.issuer()).as_str()
    );
    assert_eq!(said["kind"], "bearer");
    assert_eq!(said["email"], "ci@example.com");
    refusals_hold(&keys, jwt, &iss, "app");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_without_identity_assertion_gets_none_and_a_client_copy_never_passes() {
    let upstream = Upstream::start("plain").await;
    let gw = Gateway::start(&format!(
        "[[app]]\nname = \"plain\"\nupstream = \"{}\"\npublic_paths = [\"/\"]\n{ALLOW_ALL}",
        upstream.url()
    ));
    let r = client()
        .get(gw.url("/x"))
        .header("x-portcullis-assertion", "forged.by.client")
        .header("X_Portcullis_Assertion", "forged.by.client")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.requests().pop().unwrap();
    assert!(
        !seen
            .headers
            .iter()
            .any(|(k, _)| k.replace('_', "-") == "x-portcullis-assertion"),
        "{:?}",
        seen.headers
    );
    // The JWKS is served on every app host anyway, and a second replica
    // with the same secrets serves the same keys.
    let other = Gateway::start(&format!(
        "[[app]]\nname = \"plain\"\nupstream = \"{}\"\npublic_paths = [\"/\"]\n{ALLOW_ALL}",
        upstream.url()
    ));
    let (a, b) = (jwks(&gw).await, jwks(&other).await);
    assert_eq!(a, b);
    assert_eq!(a["keys"].as_array().unwrap().len(), 1);
}

const GHA: &str = "[[source]]\nslug = \"gha\"\ntype = \"github-actions\"\n";

/// The access rule an app trusting GitHub Actions needs: one repository and branch.
const ONE_REPO: &str = "[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\nexpression = 'claims.repository == \"acme/deploy\" && claims.ref == \"refs/heads/main\"'\n";

#[test]
fn the_github_actions_preset_loads_with_its_issuer_and_discovery_url_and_is_machine_only() {
    let ok = format!(
        "{}{GHA}[[app]]\nname = \"deploy\"\nupstream = \"http://127.0.0.1:3000\"\njwt_sources = [\"gha\"]\njwt_audiences = [\"https://github.com/acme\"]\n{ONE_REPO}",
        base_config()
    );
    let file = config_file(&ok);
    let config = load_with_env(&file.path, Vec::new()).unwrap();
    let gha = config.source("gha").unwrap();
    assert_eq!(
        gha.issuer.as_deref(),
        Some("https://token.actions.githubusercontent.com")
    );
    assert_eq!(
        gha.oidc_well_known_url.as_ref().map(|u| u.as_str()),
        Some("https://token.actions.githubusercontent.com/.well-known/openid-configuration")
    );
    assert!(!gha.is_login());
    assert!(
        config.apps[0].sources.is_empty(),
        "never offered for sign-in"
    );

    let refused = |body: String| {
        let file = config_file(&body);
        match load_with_env(&file.path, Vec::new()) {
            Ok(_) => panic!("accepted:\n{body}"),
            Err(e) => e.to_string(),
        }
    };
    // Named for sign-in, or given a client id: config errors naming the key.
    let msg = refused(ok.replace(
        "jwt_sources = [\"gha\"]",
        "sources = [\"gha\"]\njwt_sources = [\"gha\"]",
    ));
    assert!(
        msg.contains(
            "app[deploy].sources[0]: `gha` is a machine-only source (type `github-actions`)"
        ) && msg.contains("or PORTCULLIS_APP__0__SOURCES)"),
        "{msg}"
    );
    let msg = refused(ok.replace(
        GHA,
        &format!("{GHA}consumer_key = \"x\"\nconsumer_secret = \"y\"\n"),
    ));
    assert!(
        msg.contains("source[gha].consumer_key: a source of type `github-actions` is machine-only"),
        "{msg}"
    );
    // jwt_audiences stays required.
    let msg = refused(ok.replace("jwt_audiences = [\"https://github.com/acme\"]\n", ""));
    assert!(msg.contains("app[deploy].jwt_audiences: required"), "{msg}");
    // "Allow everyone" would admit every workflow on GitHub: refused.
    let msg = refused(ok.replace(ONE_REPO, ALLOW_ALL));
    assert!(
        msg.contains("app[deploy].policy[0]: allows everyone, and `gha` is GitHub Actions")
            && msg.contains("or PORTCULLIS_APP__0__POLICY)"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_actions_shaped_token_from_a_fake_issuer_is_verified_through_the_preset() {
    let issuer = crate::bearer::provider().await;
    let upstream = Upstream::start("deploy").await;
    // The preset with its discovery pointed at a loopback fake (a key set in
    // the config wins over the preset's).
    let gw = Gateway::start(&format!(
        "{GHA}oidc_well_known_url = \"{wk}\"\nissuer = \"{iss}\"\n\
         [[app]]\nname = \"deploy\"\nupstream = \"{up}\"\njwt_sources = [\"gha\"]\njwt_audiences = [\"https://github.com/acme\"]\nidentity_assertion = true\n{ONE_REPO}",
        wk = issuer.well_known_url(),
        iss = issuer.issuer(),
        up = upstream.url(),
    ));
    gw.ready().await;
    let sub = "repo:acme/deploy:ref:refs/heads/main";
    let token = issuer
        .sign(&claims(&issuer.issuer(), |c| {
            // The shape of a GitHub Actions token: no email, no username.
            c.remove("email");
            c.remove("groups");
            c.insert("sub".into(), json!(sub));
            c.insert("aud".into(), json!("https://github.com/acme"));
            c.insert("repository".into(), json!("acme/deploy"));
            c.insert("repository_owner".into(), json!("acme"));
            c.insert("ref".into(), json!("refs/heads/main"));
            c.insert("event_name".into(), json!("push"));
            c.insert(
                "job_workflow_ref".into(),
                json!("acme/deploy/.github/workflows/ship.yml@refs/heads/main"),
            );
        }))
        .unwrap();
    let r = client()
        .get(gw.url("/ship"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.header("x-forwarded-user"), Some(sub));
    let jwt = seen.header("x-portcullis-assertion").unwrap();
    // base_config()'s public URL is the issuer.
    let said = verify(&jwks(&gw).await, jwt, "http://127.0.0.1:8080", "deploy").unwrap();
    assert_eq!(said["sub"], format!("{}#{sub}", issuer.issuer()).as_str());
    // Another repository's workflow, same audience: refused by the policy.
    let fork = issuer
        .sign(&claims(&issuer.issuer(), |c| {
            c.insert("aud".into(), json!("https://github.com/acme"));
            c.insert("repository".into(), json!("mallory/deploy"));
            c.insert("ref".into(), json!("refs/heads/main"));
        }))
        .unwrap();
    assert_eq!(crate::bearer::bearer_status(&gw, &fork).await, 403);
    // A token for another audience is refused.
    let other = issuer
        .sign(&crate::bearer::claims(&issuer.issuer(), |c| {
            c.insert("aud".into(), json!("https://github.com/evil"));
        }))
        .unwrap();
    assert_eq!(crate::bearer::bearer_status(&gw, &other).await, 401);
}
