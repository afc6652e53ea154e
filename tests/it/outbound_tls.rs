//! Outbound TLS to a provider on a private CA (DESIGN "Safe defaults and
//! deployment"): the source's `ca_file` is trusted besides the system roots;
//! without it the provider is unreachable and the reason names the certificate.

use std::net::SocketAddr;
use std::process::Command;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bearer::{bearer_status, claims, jwks_of, provider};
use crate::engine::{fixture, localhost_tls};
use crate::support::{base_config, client, config_file, Gateway, Upstream};

/// An identity provider served over TLS with the `localhost` leaf the test CA
/// signed: its discovery document and the JWKS of `keys`. Returns its issuer.
async fn private_ca_provider(jwks: String) -> (SocketAddr, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = format!("https://127.0.0.1:{}", addr.port());
    let document = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    })
    .to_string();
    let tls = localhost_tls();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, document, jwks) = (tls.clone(), document.clone(), jwks.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake here.
                let Ok(mut conn) = tls.accept(tcp).await else {
                    return;
                };
                let mut got = Vec::new();
                let mut buf = [0u8; 2048];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got);
                let path = head.split(' ').nth(1).unwrap_or_default();
                let (status, body) = match path {
                    "/.well-known/openid-configuration" => ("200 OK", document),
                    "/jwks" => ("200 OK", jwks),
                    _ => ("404 Not Found", String::new()),
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (addr, issuer)
}

fn source(issuer: &str, ca_file: Option<&str>) -> String {
    let ca = ca_file.map_or(String::new(), |f| format!("ca_file = \"{f}\"\n"));
    format!(
        "[[source]]\nslug = \"corp\"\ntype = \"openidconnect\"\n\
         oidc_well_known_url = \"{issuer}/.well-known/openid-configuration\"\n{ca}"
    )
}

fn app(upstream: &Upstream) -> String {
    format!(
        "[[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"corp\"]\njwt_audiences = [\"api\"]\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        upstream.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_on_a_private_ca_is_reached_when_the_source_names_the_ca_file() {
    let keys = provider().await;
    let (_, issuer) = private_ca_provider(jwks_of(&keys).await).await;
    let upstream = Upstream::start("api").await;
    let ca = fixture("test-ca.pem").display().to_string();
    let gw = Gateway::start(&format!("{}{}", source(&issuer, Some(&ca)), app(&upstream)));
    gw.ready().await;
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let token = keys
        .sign(&claims(&issuer, |c| {
            c.insert("aud".into(), json!("api"));
        }))
        .unwrap();
    assert_eq!(bearer_status(&gw, &token).await, 200);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_ca_file_the_private_ca_provider_is_unreachable_and_the_reason_names_the_certificate(
) {
    let keys = provider().await;
    let (_, issuer) = private_ca_provider(jwks_of(&keys).await).await;
    let upstream = Upstream::start("api").await;
    let body = format!("{}{}", source(&issuer, None), app(&upstream));
    let gw = Gateway::start(&body);
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["sources_not_ready"], json!(["corp"]), "{ready}");
    let token = keys
        .sign(&claims(&issuer, |c| {
            c.insert("aud".into(), json!("api"));
        }))
        .unwrap();
    assert_eq!(bearer_status(&gw, &token).await, 401);
    assert_eq!(upstream.requests().len(), 0);

    // `check` runs the same discovery and prints why the source is not ready.
    let file = config_file(&format!("{}{body}", base_config()));
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&file.path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("source corp: NOT READY"))
        .unwrap_or_else(|| panic!("no NOT READY line:\n{stdout}"));
    assert!(line.contains("certificate"), "{line}");
}
