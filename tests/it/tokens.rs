//! `pass_access_token`: the upstream receives the session's access token from
//! its source, refreshed before it expires (once per session across replicas),
//! the session ends when it cannot be renewed, and the store never holds the
//! token in clear. Against the in-process provider with short-lived tokens.

use std::time::Duration;

use crate::signin::{Jar, Setup};
use crate::support::{free_port, Gateway};

/// The provider's access tokens live this long.
const TTL: u64 = 4;

async fn setup(refresh_tokens: bool) -> Setup {
    Setup::start_with_apps("", "pass_access_token = true\n", |f| {
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

/// Another gateway on the same store.
fn replica(s: &Setup) -> Gateway {
    let config = s.config.replace(
        &s.gw.addr.to_string(),
        &format!("127.0.0.1:{}", free_port()),
    );
    Gateway::start_full(&config)
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
    assert_eq!(s.provider.refreshes(), 0);
    // Past half its lifetime: the next request carries a fresh token.
    tokio::time::sleep(Duration::from_secs(TTL / 2 + 1)).await;
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    let second = last_token(&s);
    assert_ne!(second, first);
    assert!(s.provider.access_token_valid(&second));
    assert_eq!(s.provider.refreshes(), 1);
    // Long past the first token's expiry, with the rotated refresh token.
    tokio::time::sleep(Duration::from_secs(TTL)).await;
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
    tokio::time::sleep(Duration::from_secs(TTL + 1)).await;
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
    tokio::time::sleep(Duration::from_secs(TTL / 2 + 1)).await;
    let r = private(&s.gw, &s.jar).await;
    assert_eq!(r.status(), 401);
    assert_eq!(s.provider.refreshes(), 0);
    // Ended in the store too: another replica refuses it.
    let other = replica(&s);
    other.ready().await;
    let r = s.get(&other.url("/private")).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/_auth/sign_in?rd=/private");
    // Signing in again works.
    assert_eq!(s.sign_in().await.status(), 302);
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_refresh_token_the_session_ends_when_the_access_token_expires() {
    let mut s = setup(false).await;
    assert_eq!(s.sign_in().await.status(), 302);
    // Due for a refresh but still valid, with nothing to refresh it: kept.
    tokio::time::sleep(Duration::from_secs(TTL / 2 + 1)).await;
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    tokio::time::sleep(Duration::from_secs(TTL / 2 + 1)).await;
    assert_eq!(private(&s.gw, &s.jar).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_keeps_the_tokens_sealed_never_in_clear() {
    let mut s = setup(true).await;
    assert_eq!(s.sign_in().await.status(), 302);
    assert_eq!(private(&s.gw, &s.jar).await.status(), 200);
    let token = last_token(&s);
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
