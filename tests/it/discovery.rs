//! Discovery documents (DESIGN "Operations"): the URLs a document hands over
//! obey the rules for configured URLs, at load and on every refresh; every
//! source's document and keys are refreshed in the background, the last good
//! copy kept when a refresh fails or is refused, hand-set URLs still winning.

use std::process::Command;

use serde_json::json;

use crate::bearer::{bearer_status, claims, eventually, jwks_of, provider, JwksServer};
use crate::support::{base_config, client, config_file, Gateway, Upstream};
use portcullis::demo::{Endpoint, Provider};

/// A discovery document served by `server` (any path answers it), naming this `jwks_uri`.
fn document(server: &JwksServer, issuer: Option<&str>, jwks_uri: &str) -> String {
    let me = format!("http://{}", server.addr);
    json!({
        "issuer": issuer.unwrap_or(&me),
        "authorization_endpoint": format!("{me}/authorize"),
        "token_endpoint": format!("{me}/token"),
        "jwks_uri": jwks_uri,
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    })
    .to_string()
}

fn well_known(server: &JwksServer) -> String {
    format!("http://{}/.well-known/openid-configuration", server.addr)
}

fn issuer(server: &JwksServer) -> String {
    format!("http://{}", server.addr)
}

/// A discovery server whose document names `jwks_uri`.
async fn discovery_server(jwks_uri: &str) -> JwksServer {
    let server = JwksServer::start(String::new()).await;
    server.set(200, document(&server, None, jwks_uri));
    server
}

/// A token of `signer` claiming `iss`, unique by `jti` (no cached verdict).
fn token(signer: &Provider, iss: &str, jti: u64) -> String {
    signer
        .sign(&claims(iss, |c| {
            c.insert("jti".into(), json!(jti));
        }))
        .unwrap()
}

/// The value of `portcullis_discovery_refreshes_total{result, source}`.
async fn refreshes(gw: &Gateway, result: &str, source: &str) -> u64 {
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix =
        format!("portcullis_discovery_refreshes_total{{result=\"{result}\",source=\"{source}\"}}");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `portcullis check` on a config with one machine-token source discovered at `wk`.
fn check(wk: &str, extra: &str) -> (Option<i32>, String, String) {
    let file = config_file(&format!(
        "{}\n[[source]]\nslug = \"corp\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{wk}\"\n{extra}\n\
         [[app]]\nname = \"api\"\nupstream = \"http://127.0.0.1:3000\"\njwt_sources = [\"corp\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        base_config()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&file.path)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `portcullis serve` on the config `check` reads: its exit code and stderr,
/// and the config file's path (the gateway is killed if it is still up
/// after 20 s).
fn serve(wk: &str) -> (Option<i32>, String, String) {
    let file = config_file(&format!(
        "{}\n[[source]]\nslug = \"corp\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{wk}\"\n\
         [[app]]\nname = \"api\"\nupstream = \"http://127.0.0.1:3000\"\njwt_sources = [\"corp\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        base_config()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&file.path)
        .env_remove("PORTCULLIS_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file.path.display().to_string(),
    )
}

/// OIDC-25 / JWKS-14 at load: a document handing over a plain-http
/// `jwks_uri` or token endpoint off loopback refuses the source with a
/// message naming the field; a URL set by hand replaces it and wins.
#[tokio::test(flavor = "multi_thread")]
async fn oidc25_jwks14_a_document_with_plain_http_urls_is_refused_at_load() {
    let server = JwksServer::start(String::new()).await;
    let me = issuer(&server);
    for (field, doc) in [
        (
            "jwks_uri",
            document(&server, None, "http://keys.example/jwks"),
        ),
        (
            "token_endpoint",
            json!({"issuer": me, "token_endpoint": "http://idp.example/token", "jwks_uri": format!("{me}/jwks")})
                .to_string(),
        ),
    ] {
        server.set(200, doc);
        let (code, _, err) = tokio::task::block_in_place(|| check(&well_known(&server), ""));
        assert_eq!(code, Some(2), "{field}: {err}");
        assert!(
            err.contains("source[corp].oidc_well_known_url")
                && err.contains(&format!("the document's `{field}` is refused"))
                && err.contains("must be https://")
                && err.contains("PORTCULLIS_SOURCE__CORP__OIDC_WELL_KNOWN_URL"),
            "{field}: {err}"
        );
        // `serve` refuses it as a config error too: the file, the key, the
        // variable, exit 2.
        let (code, err, file) = tokio::task::block_in_place(|| serve(&well_known(&server)));
        assert_eq!(code, Some(2), "{field}: {err}");
        assert!(
            err.contains(&file)
                && err.contains("source[corp].oidc_well_known_url")
                && err.contains("PORTCULLIS_SOURCE__CORP__OIDC_WELL_KNOWN_URL"),
            "{field}: {err}"
        );
        assert_eq!(err.matches("source[corp]").count(), 1, "said twice: {err}");
    }
    // Set by hand, the operator's URL wins and the discovered one is only reported.
    server.set(200, document(&server, None, "http://keys.example/jwks"));
    let (code, out, err) = tokio::task::block_in_place(|| {
        check(
            &well_known(&server),
            "oidc_jwks_url = \"https://keys.example/jwks\"",
        )
    });
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("oidc_jwks_url = https://keys.example/jwks (set in the config; discovery said http://keys.example/jwks)"),
        "{out}"
    );
}

/// JWKS-18 / OIDC-26: discovery is refetched on its ttl; a refresh that
/// names a new `jwks_uri` moves the keys there (the old issuer key stops
/// working), while a source whose JWKS URL is set by hand keeps it.
#[tokio::test(flavor = "multi_thread")]
async fn jwks18_a_refresh_that_changes_jwks_uri_uses_the_new_uri_and_hand_set_urls_win() {
    let a = provider().await;
    let b = provider().await;
    let keys_a = JwksServer::start(jwks_of(&a).await).await;
    let keys_b = JwksServer::start(jwks_of(&b).await).await;
    let keys_b_for_pinned = JwksServer::start(jwks_of(&b).await).await;
    let d1 = discovery_server(&keys_a.url()).await;
    let d2 = discovery_server(&keys_a.url()).await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\njwks_cache_ttl = \"1s\"\n\
         [[source]]\nslug = \"pinned\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\noidc_jwks_url = \"{}\"\njwks_cache_ttl = \"1s\"\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\", \"pinned\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        well_known(&d1),
        well_known(&d2),
        keys_a.url(),
        upstream.url()
    ));
    gw.ready().await;
    let (iss1, iss2) = (issuer(&d1), issuer(&d2));
    assert_eq!(bearer_status(&gw, &token(&a, &iss1, 1)).await, 200);
    assert_eq!(bearer_status(&gw, &token(&a, &iss2, 2)).await, 200);
    assert_eq!(bearer_status(&gw, &token(&b, &iss1, 3)).await, 401);
    // OIDC-26: the document is refetched in the background.
    let seen = d1.hits();
    assert!(
        eventually(6, async || d1.hits() >= seen + 2).await,
        "discovery was not refreshed"
    );

    d1.set(200, document(&d1, None, &keys_b.url()));
    d2.set(200, document(&d2, None, &keys_b_for_pinned.url()));
    let mut jti = 10;
    assert!(
        eventually(8, async || {
            jti += 1;
            bearer_status(&gw, &token(&b, &iss1, jti)).await == 200
        })
        .await,
        "the new jwks_uri was not used"
    );
    assert!(keys_b.hits() >= 1);
    assert_eq!(
        bearer_status(&gw, &token(&a, &iss1, 100)).await,
        401,
        "keys of the old jwks_uri still verify"
    );
    // The hand-set oidc_jwks_url of `pinned` wins over its document's new jwks_uri.
    let seen = d2.hits();
    assert!(eventually(6, async || d2.hits() >= seen + 2).await);
    assert_eq!(bearer_status(&gw, &token(&b, &iss2, 101)).await, 401);
    assert_eq!(bearer_status(&gw, &token(&a, &iss2, 102)).await, 200);
    assert_eq!(
        keys_b_for_pinned.hits(),
        0,
        "a discovered URL replaced a hand-set one"
    );
}

/// JWKS-18 / OIDC-24 / OIDC-25 / OIDC-26 on refresh: a document naming
/// another issuer, or handing over a plain-http `jwks_uri`, is refused and
/// counted (`refused`), an unreachable one counted as `failed`; each time
/// the last good endpoints and keys keep serving. A good document after
/// that is taken up again.
#[tokio::test(flavor = "multi_thread")]
async fn jwks18_oidc26_a_refused_or_failed_refresh_keeps_the_last_good_endpoints() {
    let a = provider().await;
    let attacker = provider().await;
    let keys_a = JwksServer::start(jwks_of(&a).await).await;
    let keys_attacker = JwksServer::start(jwks_of(&attacker).await).await;
    let d = discovery_server(&keys_a.url()).await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\njwks_cache_ttl = \"1s\"\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        well_known(&d),
        upstream.url()
    ));
    gw.ready().await;
    let iss = issuer(&d);
    assert_eq!(bearer_status(&gw, &token(&a, &iss, 1)).await, 200);
    let mut jti = 10;
    for (name, result, status, doc) in [
        (
            "another issuer",
            "refused",
            200,
            document(&d, Some("http://127.0.0.1:1"), &keys_attacker.url()),
        ),
        (
            "a plain-http jwks_uri",
            "refused",
            200,
            document(&d, None, "http://keys.example/jwks"),
        ),
        ("the provider down", "failed", 503, "down".to_string()),
    ] {
        let before = refreshes(&gw, result, "ci").await;
        d.set(status, doc);
        assert!(
            eventually(6, async || refreshes(&gw, result, "ci").await > before).await,
            "{name}: not counted as {result}"
        );
        jti += 1;
        assert_eq!(
            bearer_status(&gw, &token(&a, &iss, jti)).await,
            200,
            "{name}: the last good endpoints were lost"
        );
        jti += 1;
        assert_eq!(
            bearer_status(&gw, &token(&attacker, &iss, jti)).await,
            401,
            "{name}: the refused document was used"
        );
    }
    assert_eq!(keys_attacker.hits(), 0, "a refused jwks_uri was fetched");
    // A valid document naming the other JWKS is taken up after validation.
    d.set(200, document(&d, None, &keys_attacker.url()));
    assert!(
        eventually(8, async || {
            jti += 1;
            bearer_status(&gw, &token(&attacker, &iss, jti)).await == 200
        })
        .await,
        "a valid document was not taken up after failures"
    );
    assert!(refreshes(&gw, "ok", "ci").await >= 1);
}

/// OIDC-26 for a sign-in-only source (no app trusts it for machine tokens):
/// its keys are fetched before the first sign-in and, like its discovery
/// document, refreshed in the background.
#[tokio::test(flavor = "multi_thread")]
async fn oidc26_a_sign_in_sources_keys_and_document_are_refreshed_in_the_background() {
    let p = provider().await;
    let upstream = Upstream::start("wiki").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"demo\"\ntype = \"openidconnect\"\nconsumer_key = \"portcullis-demo\"\nconsumer_secret = \"s\"\n\
         oidc_well_known_url = \"{}\"\njwks_cache_ttl = \"1s\"\n\
         [[app]]\nname = \"wiki\"\nupstream = \"{}\"\nsources = [\"demo\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        p.well_known_url(),
        upstream.url()
    ));
    gw.ready().await;
    assert!(
        p.calls(Endpoint::Jwks) >= 1,
        "the keys were not fetched before the first sign-in"
    );
    let (jwks, docs) = (p.calls(Endpoint::Jwks), p.calls(Endpoint::Discovery));
    assert!(
        eventually(8, async || {
            p.calls(Endpoint::Jwks) >= jwks + 2 && p.calls(Endpoint::Discovery) >= docs + 2
        })
        .await,
        "not refreshed: jwks {} -> {}, discovery {docs} -> {}",
        jwks,
        p.calls(Endpoint::Jwks),
        p.calls(Endpoint::Discovery)
    );
    assert_eq!(p.calls(Endpoint::Authorize), 0);
}
