//! People signing in through an OAuth 1.0a source (RFC 5849, HMAC-SHA1): the
//! three legs through the gateway against the in-process OAuth 1.0a provider,
//! and the refusals of docs/security.md's OAuth 1.0a group, each asserting no
//! session cookie and no user written.

use portcullis_testkit::oauth1_provider::{
    start, CallbackConfirmed, Oauth1Endpoint, Oauth1Faults, Oauth1Provider, Oauth1ProviderConfig,
};

use crate::signin::{session_cookies_set, Jar};
use crate::support::{client, free_port, Gateway, Upstream, SECRET};

struct Setup {
    provider: Oauth1Provider,
    gw: Gateway,
    upstream: Upstream,
    db: String,
    jar: Jar,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let port = free_port();
        let public = format!("http://127.0.0.1:{port}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = Oauth1ProviderConfig::example(&format!("{public}/_auth/callback/tw"));
        let (key, secret) = (cfg.consumer_key.clone(), cfg.consumer_secret.clone());
        let provider = start(listener, cfg);
        let upstream = Upstream::start("app").await;
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/portcullis.db", dir.path().display());
        let base = provider.base_url();
        let gw = Gateway::start_full(&format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"
public_url = "{public}"
threads = 1

[session]
secrets = ["{SECRET}"]

[store]
url = "{db}"

[[source]]
slug = "tw"
name = "Twitter 1.0a"
type = "oauth1"
consumer_key = "{key}"
consumer_secret = "{secret}"
request_token_url = "{base}/oauth/request_token"
authorization_url = "{base}/oauth/authorize"
access_token_url = "{base}/oauth/access_token"
profile_url = "{base}/account/verify_credentials.json?include_email=true"
claims = {{ identifier = "id_str", username = "screen_name", email = "email", name = "name" }}

[[app]]
name = "app"
upstream = "{up}"
[[app.policy]]
on = ["access"]
effect = "allow"
"#,
            up = upstream.url()
        ));
        Setup {
            provider,
            gw,
            upstream,
            db,
            jar: Jar::default(),
            _dir: dir,
        }
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        let resp = client()
            .get(url)
            .header("accept", "text/html")
            .header("cookie", self.jar.header())
            .send()
            .await
            .unwrap();
        self.jar.absorb(&resp);
        resp
    }

    /// Login start → provider (auto-approve); returns the callback URL.
    async fn reach_callback(&mut self) -> String {
        let start = self.get(&self.gw.url("/_auth/login/tw?rd=/home")).await;
        assert_eq!(
            start.status(),
            302,
            "login start: {}",
            start.text().await.unwrap_or_default()
        );
        let authorize = start.headers()["location"].to_str().unwrap().to_string();
        assert!(
            authorize.starts_with(&self.provider.base_url()),
            "{authorize}"
        );
        assert!(authorize.contains("oauth_token="), "{authorize}");
        let back = self.get(&authorize).await;
        assert_eq!(back.status(), 302, "provider authorize");
        back.headers()["location"].to_str().unwrap().to_string()
    }

    async fn users(&self) -> u64 {
        let store = portcullis::identity::store::open(&self.db).await.unwrap();
        store.counts().await.unwrap().users
    }

    /// A refused callback: the status, no session cookie, no user.
    async fn refused(&mut self, name: &str, r: reqwest::Response, status: u16) {
        assert_eq!(r.status(), status, "{name}");
        assert!(
            session_cookies_set(&r).is_empty(),
            "{name}: a session was set"
        );
        assert_eq!(self.users().await, 0, "{name}: a user was written");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth1_full_sign_in_enrolls_with_the_mapped_profile() {
    let mut s = Setup::start().await;
    // OA1-11: identity hints an attacker appends to the callback are never read.
    let callback = format!(
        "{}&user_id=1&screen_name=mallory&id_str=1",
        s.reach_callback().await
    );
    let r = s.get(&callback).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.headers()["location"], "/home");
    assert_eq!(session_cookies_set(&r).len(), 1);
    assert_eq!(s.users().await, 1);
    for e in [
        Oauth1Endpoint::RequestToken,
        Oauth1Endpoint::Authorize,
        Oauth1Endpoint::AccessToken,
        Oauth1Endpoint::VerifyCredentials,
    ] {
        assert_eq!(s.provider.calls(e), 1, "{e:?}");
    }
    let r = client()
        .get(s.gw.url("/home"))
        .header("cookie", s.jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.upstream.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.header("x-forwarded-user"), Some("alice"));
    assert_eq!(last.header("x-forwarded-email"), Some("alice@example.com"));
    let store = portcullis::identity::store::open(&s.db).await.unwrap();
    let users = store.list_users().await.unwrap();
    let (user, connections) = &users[0];
    assert_eq!(connections[0].identifier, "783214");
    assert_eq!(connections[0].source, "tw");
    assert_eq!(user.name.as_deref(), Some("Alice Example"));
}

/// OA1-02: a callback whose `oauth_token` is not the one this browser was
/// sent off with is refused before the verifier is traded.
#[tokio::test(flavor = "multi_thread")]
async fn oa1_02_a_swapped_oauth_token_is_refused() {
    let mut s = Setup::start().await;
    let callback = s.reach_callback().await;
    // Each attempt below presents this browser's own, unused login state.
    let saved = s.jar.clone();
    let mine = s.provider.last_request_token().unwrap();
    let swapped = callback.replace(&format!("oauth_token={mine}"), "oauth_token=someone-elses");
    assert_ne!(swapped, callback);
    let r = s.get(&swapped).await;
    s.refused("swapped oauth_token", r, 400).await;
    assert_eq!(s.provider.calls(Oauth1Endpoint::AccessToken), 0);
    // OA1-03: no verifier, or the token twice.
    let (base, query) = callback.split_once('?').unwrap();
    let token_only: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("oauth_verifier="))
        .collect();
    s.jar = saved.clone();
    let r = s.get(&format!("{base}?{}", token_only.join("&"))).await;
    s.refused("no oauth_verifier", r, 400).await;
    s.jar = saved.clone();
    let r = s.get(&format!("{callback}&oauth_token={mine}")).await;
    s.refused("oauth_token twice", r, 400).await;
    assert_eq!(s.provider.calls(Oauth1Endpoint::AccessToken), 0);
    // Another browser's token: a second flow's callback presented with the first's cookie.
    s.jar = Jar::default();
    let theirs = s.reach_callback().await;
    s.jar = saved.clone();
    let r = s.get(&theirs).await;
    s.refused("another browser's callback", r, 400).await;
    assert_eq!(s.provider.calls(Oauth1Endpoint::AccessToken), 0);
}

/// OA1-04: a verifier is used once: replaying the callback (with the same
/// login cookie) is refused and never reaches the access-token endpoint again.
#[tokio::test(flavor = "multi_thread")]
async fn oa1_04_a_replayed_verifier_is_refused() {
    let mut s = Setup::start().await;
    let callback = s.reach_callback().await;
    let saved = s.jar.clone();
    let r = s.get(&callback).await;
    assert_eq!(r.status(), 302);
    assert_eq!(s.users().await, 1);
    s.jar = saved;
    let r = s.get(&callback).await;
    assert_eq!(r.status(), 400, "replayed verifier");
    assert!(session_cookies_set(&r).is_empty());
    assert_eq!(s.provider.calls(Oauth1Endpoint::AccessToken), 1);
}

/// OA1-01 / OA1-10: provider errors end in a refusal page with nothing written.
#[tokio::test(flavor = "multi_thread")]
async fn oauth1_provider_errors_are_refused_with_nothing_written() {
    let cases: Vec<(&str, Oauth1Faults, bool, u16)> = vec![
        (
            "oauth_callback_confirmed false",
            Oauth1Faults {
                callback_confirmed: CallbackConfirmed::False,
                ..Oauth1Faults::default()
            },
            true,
            502,
        ),
        (
            "oauth_callback_confirmed missing",
            Oauth1Faults {
                callback_confirmed: CallbackConfirmed::Omit,
                ..Oauth1Faults::default()
            },
            true,
            502,
        ),
        (
            "request token 401",
            Oauth1Faults {
                request_token_status: Some(401),
                ..Oauth1Faults::default()
            },
            true,
            502,
        ),
        (
            "malformed request token body",
            Oauth1Faults {
                malformed_body: true,
                ..Oauth1Faults::default()
            },
            true,
            502,
        ),
        (
            "access token 401",
            Oauth1Faults {
                access_token_status: Some(401),
                ..Oauth1Faults::default()
            },
            false,
            400,
        ),
        (
            // A provider failing is a provider error, not a refused verifier.
            "access token 500",
            Oauth1Faults {
                access_token_status: Some(500),
                ..Oauth1Faults::default()
            },
            false,
            502,
        ),
        (
            "no token secret",
            Oauth1Faults {
                omit_token_secret: true,
                ..Oauth1Faults::default()
            },
            true,
            502,
        ),
        (
            "profile 401",
            Oauth1Faults {
                profile_status: Some(401),
                ..Oauth1Faults::default()
            },
            false,
            502,
        ),
        (
            "user denied",
            Oauth1Faults {
                deny: true,
                ..Oauth1Faults::default()
            },
            false,
            // OA1-03: REJECT-LOGIN (400).
            400,
        ),
    ];
    for (name, faults, at_start, status) in cases {
        let mut s = Setup::start().await;
        s.provider.set_faults(|f| *f = faults);
        if at_start {
            let r = s.get(&s.gw.url("/_auth/login/tw?rd=/home")).await;
            s.refused(name, r, status).await;
            continue;
        }
        let callback = s.reach_callback().await;
        let r = s.get(&callback).await;
        s.refused(name, r, status).await;
    }
}
