//! `pass_access_token`: the upstream receives the session's access token from
//! its source, refreshed before it expires (once per session across replicas),
//! the session ends when it cannot be renewed, and the store never holds the
//! token in clear. Against the in-process provider with short-lived tokens,
//! the gateway and the provider on one manual clock the tests advance.

use std::time::Duration;

use crate::signin::{Jar, Setup};
use crate::support::{free_port, Gateway};

/// The provider's access tokens live this long.
const TTL: u64 = 4;

async fn setup(refresh_tokens: bool) -> Setup {
    Setup::start_on_manual_clock("", "pass_access_token = true\n", |f| {
        f.access_token_ttl_secs = Some(TTL);
        f.refresh_tokens = refresh_tokens;
    })
    .await
}

/// `GET /private` on `gw` with `jar`'s cookies, as an API client.
async fn private(gw: &Gateway, jar: &Jar) -> reqwest::Response {
    crate::support::client()
        .get(gw.url("/private"))
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap()
}

/// `GET /_auth/check` on `gw` with `jar`'s cookies.
async fn check(gw: &Gateway, jar: &Jar) -> reqwest::Response {
    crate::support::client()
        .get(gw.url("/_auth/check"))
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap()
}

/// The `WWW-Authenticate` of a response, or "".
fn challenge(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The access token the upstream saw on its latest request.
fn last_token(s: &Setup) -> String {
    s.upstream
        .requests()
        .pop()
        .unwrap()
        .header("x-forwarded-access-token")
        .expect("the upstream got no access token")
        .to_string()
}

/// Another gateway on the same store and clock.
fn replica(s: &Setup) -> Gateway {
    let config = s.config.replace(
        &s.gw.addr.to_string(),
        &format!("127.0.0.1:{}", free_port()),
    );
    Gateway::start_full_on(&config, s.clock.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_gets_a_valid_access_token_and_a_fresh_one_before_it_expires() {
    let mut s = setup(true).await;
    assert_eq!(s.sign_in().await.status(), 302);
    let r = private(&s.gw, &s.jar).await;
    assert_eq!(r.status(), 200);
    let first = last_token(&s);
    assert!(s.provider.access_token_valid(&first));
    // Forward auth answers the same token.
    let r = crate::support::client()
        .get(s.gw.url("/_auth/check"))
        .header("cookie", s.jar.header())
        .header("x-forwarded-uri", "/private")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-request-access-token"], first.as_str());
    // A page's script fetching the check (browser fetch metadata, no
    // trusted proxy in between) is answered without the token (SES-17).
    let r = crate::support::client()
        .get(s.gw.url("/_auth/check"))
        .header("cookie", s.jar.header())
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-auth-request-access-token").is_none());
    // Node's fetch sends `Sec-Fetch-Mode: cors` alone: no browser, answered.
    let r = crate::support::client()
        .get(s.gw.url("/_auth/check"))
        .header("cookie", s.jar.header())
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-auth-request-access-token"], first.as_str());
    assert_eq!(s.provider.refreshes(), 0);
    // Past half its lifetime: the next request carries a fresh token.
    s.advance(Duration::from_secs(TTL / 2 + 1));
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    let second = last_token(&s);
    assert_ne!(second, first);
    assert!(s.provider.access_token_valid(&second));
    assert_eq!(s.provider.refreshes(), 1);
    // Long past the first token's expiry, with the rotated refresh token.
    s.advance(Duration::from_secs(TTL));
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    let third = last_token(&s);
    assert!(!s.provider.access_token_valid(&first));
    assert!(s.provider.access_token_valid(&third));
    assert_eq!(s.provider.refreshes(), 2);
    // A client-sent copy never reaches the upstream in place of the real one.
    let r = crate::support::client()
        .get(s.gw.url("/private"))
        .header("cookie", s.jar.header())
        .header("x-forwarded-access-token", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(last_token(&s), third);
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_requests_at_expiry_on_two_replicas_cause_one_refresh() {
    let mut s = setup(true).await;
    assert_eq!(s.sign_in().await.status(), 302);
    let other = replica(&s);
    other.ready().await;
    // Both replicas have the session (and its token) cached.
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    assert_eq!(private(&other, &s.jar).await.status(), 200);
    let first = last_token(&s);
    s.advance(Duration::from_secs(TTL + 1));
    assert!(!s.provider.access_token_valid(&first));
    let mut calls = Vec::new();
    for i in 0..20 {
        let gw = if i % 2 == 0 { &s.gw } else { &other };
        calls.push(private(gw, &s.jar));
    }
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status(), 200);
    }
    assert_eq!(s.provider.refreshes(), 1);
    let seen = s.upstream.requests();
    let fresh: Vec<String> = seen
        .iter()
        .rev()
        .take(20)
        .map(|r| r.header("x-forwarded-access-token").unwrap().to_string())
        .collect();
    assert!(
        fresh.iter().all(|t| *t == fresh[0] && *t != first),
        "{fresh:?}"
    );
    assert!(s.provider.access_token_valid(&fresh[0]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_refresh_token_ends_the_session_and_the_browser_signs_in_again() {
    let mut s = setup(true).await;
    assert_eq!(s.sign_in().await.status(), 302);
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    s.provider.revoke_refresh_tokens();
    s.advance(Duration::from_secs(TTL / 2 + 1));
    let r = private(&s.gw, &s.jar).await;
    assert_eq!(r.status(), 401);
    assert_eq!(s.provider.refreshes(), 0);
    // Ended in the store too: another replica refuses it, and says why.
    let other = replica(&s);
    other.ready().await;
    let r = s.get(&other.url("/private")).await;
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "/_auth/sign_in?rd=/private&reason=refresh_refused&source=demo"
    );
    // Its cookie was cleared with that redirect: the next sign-in page is the plain one.
    let r = s.get(&other.url("/private")).await;
    assert_eq!(r.headers()["location"], "/_auth/sign_in?rd=/private");
    // Signing in again works.
    assert_eq!(s.sign_in().await.status(), 302);
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_refresh_sends_the_browser_to_a_sign_in_page_that_says_why() {
    let mut s = setup(true).await;
    assert_eq!(s.sign_in().await.status(), 302);
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    let forwarded = s.upstream.requests().len();
    s.provider.revoke_refresh_tokens();
    s.advance(Duration::from_secs(TTL / 2 + 1));
    // The browser's request tries the refresh, which the provider refuses.
    let kept = s.jar.clone();
    let r = s.get(&s.gw.url("/private")).await;
    assert_eq!(r.status(), 302);
    let cleared: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("portcullis=;") && c.contains("Max-Age=0")),
        "the ended session's cookie is cleared: {cleared:?}"
    );
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        "/_auth/sign_in?rd=/private&reason=refresh_refused&source=demo"
    );
    let page = s.get(&s.gw.url(&location)).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(
        body.contains("Your session ended because Demo IdP no longer accepts it"),
        "{body}"
    );
    assert!(body.contains("Sign in with Demo IdP"), "{body}");
    assert!(!body.contains("invalid_grant"), "no internal error text");
    // An API client with the same (old) cookie: RFC 6750 invalid_token with the reason.
    let r = private(&s.gw, &kept).await;
    assert_eq!(r.status(), 401);
    let header = challenge(&r);
    assert!(header.contains(r#"error="invalid_token""#), "{header}");
    assert!(
        header.contains(
            "error_description=\"Your session ended because Demo IdP no longer accepts it"
        ),
        "{header}"
    );
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["error"], "invalid_token");
    // Forward auth says it the same way.
    let r = check(&s.gw, &kept).await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains(r#"error="invalid_token""#));
    assert_eq!(
        s.upstream.requests().len(),
        forwarded,
        "nothing reached the app"
    );
    // A made-up reason shows no notice.
    let page = s
        .get(
            &s.gw
                .url("/_auth/sign_in?rd=/private&reason=%3Cb%3Ehi&source=demo"),
        )
        .await;
    let body = page.text().await.unwrap();
    assert!(!body.contains("Your session ended"), "{body}");
    assert!(!body.contains("<b>hi"), "{body}");
}

/// DESIGN: "a refresh that fails ends the session (the next request signs
/// in again)": a provider that cannot be reached when the refresh is due
/// ends it at once, though the old token would last a while yet.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_provider_at_the_refresh_ends_the_session_saying_why() {
    use portcullis::demo::Endpoint;
    let mut s = setup(true).await;
    assert_eq!(s.sign_in().await.status(), 302);
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    // Due for a refresh (half its lifetime left) while the provider is down.
    s.provider.set_faults(|f| f.down = true);
    let tried = s.provider.calls(Endpoint::Token);
    let forwarded = s.upstream.requests().len();
    s.advance(Duration::from_secs(TTL / 2 + 1));
    let r = private(&s.gw, &s.jar).await;
    assert_eq!(r.status(), 401);
    assert!(
        s.provider.calls(Endpoint::Token) > tried,
        "the refresh was tried"
    );
    let header = challenge(&r);
    assert!(
        header.contains("Demo IdP could not be reached to renew it."),
        "{header}"
    );
    let kept = s.jar.clone();
    let r = s.get(&s.gw.url("/private")).await;
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "/_auth/sign_in?rd=/private&reason=provider_unreachable&source=demo"
    );
    assert_eq!(
        s.upstream.requests().len(),
        forwarded,
        "nothing reached the app"
    );
    // Ended in the store: the provider coming back does not revive it, here
    // or on another replica.
    s.provider.set_faults(|f| f.down = false);
    assert_eq!(private(&s.gw, &kept).await.status(), 401);
    let other = replica(&s);
    other.ready().await;
    assert_eq!(private(&other, &kept).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_refresh_token_the_session_ends_when_the_access_token_expires() {
    // Longer than TTL: expiry is kept in whole seconds, so with 4 s a token
    // can be due and expired less than a second apart, too close to hit on
    // a loaded machine. Due after 4 s (half its lifetime left), expired at 8 s.
    const LONG: u64 = 8;
    let mut s = Setup::start_on_manual_clock("", "pass_access_token = true\n", |f| {
        f.access_token_ttl_secs = Some(LONG);
        f.refresh_tokens = false;
    })
    .await;
    assert_eq!(s.sign_in().await.status(), 302);
    // Due for a refresh but still valid, with nothing to refresh it: kept.
    s.advance(Duration::from_secs(LONG / 2 + 1));
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    s.advance(Duration::from_secs(LONG / 2 + 1));
    assert_eq!(private(&s.gw, &s.jar).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_keeps_the_tokens_sealed_never_in_clear() {
    let mut s = setup(true).await;
    assert_eq!(s.sign_in().await.status(), 302);
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    let token = last_token(&s);
    let refresh = s.provider.live_refresh_tokens();
    assert_eq!(refresh.len(), 1, "one refresh token was issued");
    let store = portcullis::identity::store::open(&s.db).await.unwrap();
    let (user, _) = store.list_users().await.unwrap().remove(0);
    let record = store.user_sessions(&user.id).await.unwrap().remove(0);
    let sealed = record.tokens.expect("the session keeps its tokens");
    assert!(!sealed.contains(&token));
    // Every byte of the database (and its write-ahead log) lacks the token.
    let path = s.db.trim_start_matches("sqlite://").to_string();
    let mut bytes = Vec::new();
    for file in [path.clone(), format!("{path}-wal")] {
        bytes.extend(std::fs::read(&file).unwrap_or_default());
    }
    assert!(bytes.len() > 4096);
    assert!(bytes
        .windows(sealed.len().min(32))
        .any(|w| w == &sealed.as_bytes()[..32.min(sealed.len())]));
    assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
    for r in &refresh {
        assert!(!bytes.windows(r.len()).any(|w| w == r.as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_keep_no_tokens_where_no_app_passes_them() {
    let mut s = Setup::start_with("", |f| f.refresh_tokens = true).await;
    assert_eq!(s.sign_in().await.status(), 302);
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    let seen = s.upstream.requests().pop().unwrap();
    assert_eq!(seen.header("x-forwarded-access-token"), None);
    let store = portcullis::identity::store::open(&s.db).await.unwrap();
    let (user, _) = store.list_users().await.unwrap().remove(0);
    let record = store.user_sessions(&user.id).await.unwrap().remove(0);
    assert_eq!(record.tokens, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_answered_with_the_sessions_own_id_token_keeps_the_session() {
    let mut s = setup(true).await;
    assert_eq!(s.sign_in().await.status(), 302);
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    s.provider.set_faults(|f| f.refresh_id_token = true);
    for round in 1..=2 {
        s.advance(Duration::from_secs(TTL / 2 + 1));
        let r = private(&s.gw, &s.jar).await;
        assert_eq!(r.status(), 200, "refresh {round}");
        assert_eq!(s.provider.refreshes(), round);
        assert!(s.provider.access_token_valid(&last_token(&s)));
    }
}

/// OIDC-32 (OIDC Core §12.2): a refresh answer's ID token of another
/// subject, issuer, audience or authorized party ends the session, and the
/// browser is sent to sign in again with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn oidc32_a_refresh_id_token_of_another_sub_iss_aud_or_azp_ends_the_session() {
    type Fault = fn(&mut portcullis::demo::Faults);
    let cases: [(&str, Fault); 4] = [
        ("sub", |f| f.id_token_sub = Some("someone-else".into())),
        ("iss", |f| f.iss = Some("https://elsewhere.example".into())),
        ("aud", |f| f.aud = Some(serde_json::json!("another-client"))),
        ("azp", |f| f.azp = Some(Some("another-client".into()))),
    ];
    for (claim, fault) in cases {
        let mut s = setup(true).await;
        assert_eq!(s.sign_in().await.status(), 302);
        assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
        let forwarded = s.upstream.requests().len();
        let correct = s.provider.faults();
        s.provider.set_faults(|f| {
            f.refresh_id_token = true;
            fault(f);
        });
        s.advance(Duration::from_secs(TTL / 2 + 1));
        let r = private(&s.gw, &s.jar).await;
        assert_eq!(r.status(), 401, "another {claim}");
        let header = challenge(&r);
        assert!(
            header.contains(r#"error="invalid_token""#),
            "{claim}: {header}"
        );
        assert!(
            header.contains("Demo IdP renewed it with an ID token this gateway cannot accept"),
            "{claim}: {header}"
        );
        assert_eq!(
            s.provider.refreshes(),
            1,
            "{claim}: the provider did answer"
        );
        assert_eq!(
            s.upstream.requests().len(),
            forwarded,
            "{claim}: nothing reached the app"
        );
        // The browser is sent to sign in again, told why.
        let r = s.get(&s.gw.url("/private")).await;
        assert_eq!(r.status(), 302, "{claim}");
        assert_eq!(
            r.headers()["location"],
            "/_auth/sign_in?rd=/private&reason=refresh_invalid&source=demo",
            "{claim}"
        );
        // With a correct provider again, signing in works.
        s.provider.set_faults(|f| *f = correct);
        assert_eq!(s.sign_in().await.status(), 302, "{claim}");
        assert_eq!(private(&s.gw, &s.jar).await.status(), 200, "{claim}");
    }
}
