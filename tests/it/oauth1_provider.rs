//! The fake OAuth 1.0a provider (`portcullis_testkit::oauth1_provider`)
//! against portcullis's OAuth 1.0a client functions: the three legs, and each
//! fault knob as the client sees it.

use portcullis::config::Secret;
use portcullis::source::oauth1::{
    check_callback, parse_temporary_credentials, parse_token_credentials, Callback, CallbackError,
    ResponseError, Signer, Stamp, TokenCredentials, TokenResponse,
};
use portcullis_testkit::oauth1_provider::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use reqwest::redirect::Policy;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use url::Url;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const CALLBACK: &str = "http://127.0.0.1:9/_auth/callback/twitter?x=1";

fn config() -> Oauth1ProviderConfig {
    let mut config = Oauth1ProviderConfig::example(CALLBACK);
    // Characters that must be encoded in the HMAC key.
    config.consumer_secret = "s3cret&with+odd chars".to_string();
    config
}

async fn provider() -> (Oauth1Provider, Signer) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = start(listener, config());
    let signer = Signer::new(
        p.config().consumer_key.clone(),
        Secret::new(p.config().consumer_secret.clone()),
    )
    .with_realm("demo");
    (p, signer)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn url(p: &Oauth1Provider, endpoint: Oauth1Endpoint) -> Url {
    Url::parse(&p.url(endpoint)).unwrap()
}

fn stamp() -> Stamp {
    Stamp::now().unwrap()
}

/// POSTs with this Authorization header; status and body.
async fn post(url: &Url, authorization: &str) -> (u16, String) {
    let response = http()
        .post(url.as_str())
        .header(AUTHORIZATION, authorization)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// GETs with this Authorization header; status and body.
async fn get(url: &Url, authorization: &str) -> (u16, String) {
    let response = http()
        .get(url.as_str())
        .header(AUTHORIZATION, authorization)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn oauth_problem(body: &str) -> String {
    url::form_urlencoded::parse(body.as_bytes())
        .find(|(n, _)| n == "oauth_problem")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn request_token_raw(p: &Oauth1Provider, signer: &Signer) -> (u16, String) {
    let target = url(p, Oauth1Endpoint::RequestToken);
    let signed = signer.request_token(&target, CALLBACK, &stamp()).unwrap();
    post(&target, &signed.authorization).await
}

async fn request_token(p: &Oauth1Provider, signer: &Signer) -> TokenResponse {
    let (status, body) = request_token_raw(p, signer).await;
    assert_eq!(status, 200, "{body}");
    parse_temporary_credentials(body.as_bytes()).unwrap()
}

/// Follows authorization; the callback's query.
async fn authorize_query(p: &Oauth1Provider, token: &str) -> String {
    let response = http()
        .get(p.url(Oauth1Endpoint::Authorize))
        .query(&[("oauth_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let location = Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap();
    assert!(location
        .as_str()
        .starts_with("http://127.0.0.1:9/_auth/callback/twitter?x=1&"));
    location.query().unwrap().to_string()
}

async fn access_token_raw(
    p: &Oauth1Provider,
    signer: &Signer,
    temporary: &TokenCredentials,
    verifier: &str,
) -> (u16, String) {
    let target = url(p, Oauth1Endpoint::AccessToken);
    let signed = signer
        .access_token(&target, temporary, verifier, &stamp())
        .unwrap();
    post(&target, &signed.authorization).await
}

fn profile_url(p: &Oauth1Provider) -> Url {
    let mut target = url(p, Oauth1Endpoint::VerifyCredentials);
    target
        .query_pairs_mut()
        .append_pair("include_email", "true")
        .append_pair("skip_status", "true");
    target
}

/// The whole dance up to the access token; (temporary, verifier, access).
async fn sign_in(p: &Oauth1Provider, signer: &Signer) -> (TokenCredentials, String, TokenResponse) {
    let temporary = request_token(p, signer).await;
    let query = authorize_query(p, &temporary.credentials.token).await;
    let verifier = check_callback(&query, &temporary.credentials.token).unwrap();
    let (status, body) = access_token_raw(p, signer, &temporary.credentials, &verifier).await;
    assert_eq!(status, 200, "{body}");
    let access = parse_token_credentials(body.as_bytes()).unwrap();
    (temporary.credentials, verifier, access)
}

#[tokio::test]
async fn three_legged_exchange_signs_in_as_the_demo_user() {
    let (p, signer) = provider().await;
    let (_, verifier, access) = sign_in(&p, &signer).await;
    assert_eq!(p.last_verifier(), Some(verifier));
    assert_eq!(access.extra["user_id"], "783214");
    assert_eq!(access.extra["screen_name"], "alice");
    assert!(access.credentials.token.starts_with("783214-"));

    // The profile call signs its query (OA1-06): include_email is honoured.
    let target = profile_url(&p);
    let signed = signer
        .resource("GET", &target, None, &access.credentials, &stamp())
        .unwrap();
    let (status, body) = get(&target, &signed.authorization).await;
    assert_eq!(status, 200, "{body}");
    let profile: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        profile,
        json!({
            "id_str": "783214", "screen_name": "alice",
            "name": "Alice Example", "email": "alice@example.com"
        })
    );
    for endpoint in Oauth1Endpoint::ALL {
        assert_eq!(p.calls(endpoint), 1, "{endpoint:?}");
    }
    p.reset_calls();
    assert_eq!(p.calls(Oauth1Endpoint::AccessToken), 0);
}

#[tokio::test]
async fn oa1_04_a_replayed_verifier_is_refused() {
    let (p, signer) = provider().await;
    let (temporary, verifier, _) = sign_in(&p, &signer).await;
    assert_eq!(p.last_verifier().as_deref(), Some(verifier.as_str()));
    // Fresh nonce, same request token and verifier: the token is spent.
    let (status, body) = access_token_raw(&p, &signer, &temporary, &verifier).await;
    assert_eq!(status, 401);
    assert_eq!(oauth_problem(&body), "token_rejected");
    // And authorizing it again is refused too.
    let response = http()
        .get(p.url(Oauth1Endpoint::Authorize))
        .query(&[("oauth_token", temporary.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_wrong_verifier_spends_the_request_token() {
    let (p, signer) = provider().await;
    let temporary = request_token(&p, &signer).await.credentials;
    let query = authorize_query(&p, &temporary.token).await;
    let verifier = check_callback(&query, &temporary.token).unwrap();
    let (status, body) = access_token_raw(&p, &signer, &temporary, "not-the-verifier").await;
    assert_eq!(
        (status, oauth_problem(&body).as_str()),
        (401, "verifier_invalid")
    );
    let (status, _) = access_token_raw(&p, &signer, &temporary, &verifier).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn wrong_signatures_are_refused_at_every_endpoint() {
    let (p, signer) = provider().await;
    let forger = Signer::new(
        p.config().consumer_key.clone(),
        Secret::new("not the secret".to_string()),
    );
    let (status, body) = request_token_raw(&p, &forger).await;
    assert_eq!(
        (status, oauth_problem(&body).as_str()),
        (401, "signature_invalid")
    );
    assert!(p.last_request_token().is_none());

    // Right consumer secret, wrong request token secret: refused, and the
    // request token is not spent by the forgery.
    let temporary = request_token(&p, &signer).await.credentials;
    let query = authorize_query(&p, &temporary.token).await;
    let verifier = check_callback(&query, &temporary.token).unwrap();
    let forged = TokenCredentials::new(temporary.token.clone(), "guessed");
    let (status, body) = access_token_raw(&p, &signer, &forged, &verifier).await;
    assert_eq!(
        (status, oauth_problem(&body).as_str()),
        (401, "signature_invalid")
    );
    let (status, body) = access_token_raw(&p, &signer, &temporary, &verifier).await;
    assert_eq!(status, 200, "{body}");
    let access = parse_token_credentials(body.as_bytes())
        .unwrap()
        .credentials;

    // Profile: wrong access secret, then a query changed after signing.
    let target = profile_url(&p);
    let forged = TokenCredentials::new(access.token.clone(), "guessed");
    let signed = signer
        .resource("GET", &target, None, &forged, &stamp())
        .unwrap();
    assert_eq!(get(&target, &signed.authorization).await.0, 401);
    let signed = signer
        .resource("GET", &target, None, &access, &stamp())
        .unwrap();
    let tampered = url(&p, Oauth1Endpoint::VerifyCredentials);
    let (status, body) = get(&tampered, &signed.authorization).await;
    assert_eq!(
        (status, oauth_problem(&body).as_str()),
        (401, "signature_invalid")
    );
    // A refused request records no nonce: the untampered one still goes
    // through, once.
    assert_eq!(get(&target, &signed.authorization).await.0, 200);
    let (status, body) = get(&target, &signed.authorization).await;
    assert_eq!((status, oauth_problem(&body).as_str()), (401, "nonce_used"));
    // No header at all.
    let response = http().get(target.as_str()).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        "OAuth realm=\"portcullis-demo\""
    );
}

#[tokio::test]
async fn request_token_needs_a_registered_callback_and_a_fresh_timestamp() {
    let (p, signer) = provider().await;
    let target = url(&p, Oauth1Endpoint::RequestToken);
    let no_callback = signer
        .sign("POST", &target, None, None, &[], &stamp())
        .unwrap();
    let (status, body) = post(&target, &no_callback.authorization).await;
    assert_eq!(
        (status, oauth_problem(&body).as_str()),
        (400, "parameter_absent")
    );
    let foreign = signer
        .request_token(&target, "https://evil.example/cb", &stamp())
        .unwrap();
    let (status, body) = post(&target, &foreign.authorization).await;
    assert_eq!(
        (status, oauth_problem(&body).as_str()),
        (400, "parameter_rejected")
    );
    let old = Stamp::new("n", unix_now() - 3600);
    let stale = signer.request_token(&target, CALLBACK, &old).unwrap();
    let (status, body) = post(&target, &stale.authorization).await;
    assert_eq!(
        (status, oauth_problem(&body).as_str()),
        (401, "timestamp_refused")
    );
    let unknown = Signer::new("someone-else", Secret::new("x".into()))
        .request_token(&target, CALLBACK, &stamp())
        .unwrap();
    let (status, body) = post(&target, &unknown.authorization).await;
    assert_eq!(
        (status, oauth_problem(&body).as_str()),
        (401, "consumer_key_unknown")
    );
}

#[tokio::test]
async fn fault_callback_confirmed_false_or_omitted_is_refused_by_the_client_oa1_01() {
    let (p, signer) = provider().await;
    for fault in [CallbackConfirmed::False, CallbackConfirmed::Omit] {
        p.set_faults(|f| f.callback_confirmed = fault);
        let (status, body) = request_token_raw(&p, &signer).await;
        assert_eq!(status, 200);
        assert_eq!(
            parse_temporary_credentials(body.as_bytes()),
            Err(ResponseError::CallbackNotConfirmed),
            "{fault:?}"
        );
    }
}

#[tokio::test]
async fn fault_statuses_and_broken_bodies_reach_the_client_oa1_10() {
    let (p, signer) = provider().await;
    p.set_faults(|f| f.request_token_status = Some(401));
    let (status, body) = request_token_raw(&p, &signer).await;
    assert_eq!((status, oauth_problem(&body).as_str()), (401, "injected"));
    assert!(p.last_request_token().is_none());
    assert_eq!(p.calls(Oauth1Endpoint::RequestToken), 1);

    p.set_faults(|f| {
        *f = Oauth1Faults {
            malformed_body: true,
            ..Default::default()
        }
    });
    let (status, body) = request_token_raw(&p, &signer).await;
    assert_eq!(status, 200);
    assert!(matches!(
        parse_temporary_credentials(body.as_bytes()),
        Err(ResponseError::Malformed(_))
    ));

    p.set_faults(|f| {
        *f = Oauth1Faults {
            omit_token_secret: true,
            ..Default::default()
        }
    });
    let (_, body) = request_token_raw(&p, &signer).await;
    assert_eq!(
        parse_temporary_credentials(body.as_bytes()),
        Err(ResponseError::Missing("oauth_token_secret"))
    );

    // Access token faults: an error status keeps the request token usable.
    p.set_faults(|f| *f = Oauth1Faults::default());
    let temporary = request_token(&p, &signer).await.credentials;
    let query = authorize_query(&p, &temporary.token).await;
    let verifier = check_callback(&query, &temporary.token).unwrap();
    p.set_faults(|f| f.access_token_status = Some(500));
    assert_eq!(
        access_token_raw(&p, &signer, &temporary, &verifier).await.0,
        500
    );
    p.set_faults(|f| {
        *f = Oauth1Faults {
            omit_token_secret: true,
            ..Default::default()
        }
    });
    let (status, body) = access_token_raw(&p, &signer, &temporary, &verifier).await;
    assert_eq!(status, 200);
    assert_eq!(
        parse_token_credentials(body.as_bytes()),
        Err(ResponseError::Missing("oauth_token_secret"))
    );

    p.set_faults(|f| *f = Oauth1Faults::default());
    let (_, _, access) = sign_in(&p, &signer).await;
    p.set_faults(|f| f.profile_status = Some(401));
    let target = profile_url(&p);
    let signed = signer
        .resource("GET", &target, None, &access.credentials, &stamp())
        .unwrap();
    assert_eq!(get(&target, &signed.authorization).await.0, 401);
}

#[tokio::test]
async fn fault_deny_and_foreign_callback_token_are_refused_by_the_client() {
    let (p, signer) = provider().await;
    p.set_faults(|f| f.deny = true);
    let temporary = request_token(&p, &signer).await.credentials;
    let query = authorize_query(&p, &temporary.token).await;
    assert_eq!(Callback::parse(&query), Err(CallbackError::Denied));
    assert!(p.last_verifier().is_none());

    // OA1-02: the callback names another request token than ours.
    p.set_faults(|f| {
        f.deny = false;
        f.callback_token = Some("someone-elses-token".into());
    });
    let temporary = request_token(&p, &signer).await.credentials;
    let query = authorize_query(&p, &temporary.token).await;
    assert_eq!(
        check_callback(&query, &temporary.token),
        Err(CallbackError::TokenMismatch)
    );
}

#[tokio::test]
async fn fault_down_answers_503_and_counts() {
    let (p, signer) = provider().await;
    p.set_faults(|f| f.down = true);
    assert_eq!(request_token_raw(&p, &signer).await.0, 503);
    assert_eq!(p.calls(Oauth1Endpoint::RequestToken), 1);
    p.set_faults(|f| f.down = false);
    assert_eq!(request_token_raw(&p, &signer).await.0, 200);
}

#[tokio::test]
async fn wrong_methods_and_paths_are_refused() {
    let (p, _) = provider().await;
    let response = http()
        .get(p.url(Oauth1Endpoint::RequestToken))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()[http::header::ALLOW], "POST");
    let response = http()
        .get(format!("{}/nope", p.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    p.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(http()
        .get(p.url(Oauth1Endpoint::Authorize))
        .send()
        .await
        .is_err());
}
