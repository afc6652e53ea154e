//! People signing in through an OpenID Connect source: the whole flow through
//! the gateway against the in-process provider, and every way the provider
//! can misbehave (docs/security.md section 1), each asserting no session, no user
//! written, and no provider call after the failure point.

use std::time::Duration;

use portcullis::demo::{Broken, Endpoint, Faults, KidFault, NonceFault, Provider, SignAlg};
use serde_json::json;

use crate::support::{client, free_port, Gateway, Upstream, SECRET};

/// The provider, the gateway in front of an echo upstream, and a cookie jar.
pub struct Setup {
    pub provider: Provider,
    pub gw: Gateway,
    pub upstream: Upstream,
    pub db: String,
    pub jar: Jar,
    pub client: reqwest::Client,
    /// The gateway's config, to start another replica on the same store.
    pub config: String,
    /// The clock the gateway and the provider read: the system's, or a
    /// manual one ([`Setup::start_on_manual_clock`]) the test advances.
    pub clock: portcullis::clock::Clock,
    /// The manual clock behind `clock`, if any.
    pub manual: Option<portcullis::clock::ManualClock>,
    _dir: tempfile::TempDir,
}

/// A minimal cookie jar: name -> value, honouring `Max-Age=0`.
#[derive(Default, Clone, Debug)]
pub struct Jar(pub Vec<(String, String)>);

impl Jar {
    pub fn absorb(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.0.retain(|(n, _)| n != name);
            if !attrs.to_ascii_lowercase().contains("max-age=0") {
                self.0.push((name.to_string(), value.to_string()));
            }
        }
    }
    pub fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub fn session_cookies_set(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .filter(|v| v.starts_with("portcullis=") && !v.contains("Max-Age=0"))
        .collect()
}

impl Setup {
    /// A second gateway on this setup's store and provider that lists
    /// 127.0.0.1 in `trusted_proxies`: its forwarding headers are believed.
    fn replica_trusting_loopback(&self) -> Gateway {
        let port = free_port();
        let trusted = self
            .config
            .replace(
                "threads = 1",
                "threads = 1\ntrusted_proxies = [\"127.0.0.1/32\"]",
            )
            .replace(&self.gw.addr.to_string(), &format!("127.0.0.1:{port}"));
        Gateway::start_full(&trusted)
    }

    pub async fn start() -> Setup {
        Self::start_with("", |_| {}).await
    }

    /// `source_extra` is appended to the `[[source]]` table.
    pub async fn start_with(source_extra: &str, faults: impl FnOnce(&mut Faults)) -> Setup {
        Self::start_with_apps(source_extra, "", faults).await
    }

    /// As `start_with`; `apps_extra` ends the config: keys before its first
    /// table header go to the app "app", its tables (policies of that app,
    /// more `[[app]]`s) follow. The app "app" admits everyone signed in unless
    /// those tables give it access rules of its own.
    pub async fn start_with_apps(
        source_extra: &str,
        apps_extra: &str,
        faults: impl FnOnce(&mut Faults),
    ) -> Setup {
        Self::start_on(source_extra, apps_extra, faults, None).await
    }

    /// As `start_with_apps`, with the gateway and the provider on one manual
    /// clock that starts at the system's time: [`Setup::advance`] moves it.
    pub async fn start_on_manual_clock(
        source_extra: &str,
        apps_extra: &str,
        faults: impl FnOnce(&mut Faults),
    ) -> Setup {
        let manual = portcullis::clock::ManualClock::starting_now();
        Self::start_on(source_extra, apps_extra, faults, Some(manual)).await
    }

    /// Moves the manual clock of a [`Setup::start_on_manual_clock`] setup.
    pub fn advance(&self, by: std::time::Duration) {
        self.manual
            .as_ref()
            .expect("started on the system clock")
            .advance(by);
    }

    async fn start_on(
        source_extra: &str,
        apps_extra: &str,
        faults: impl FnOnce(&mut Faults),
        manual: Option<portcullis::clock::ManualClock>,
    ) -> Setup {
        let clock = manual.as_ref().map_or_else(
            portcullis::clock::Clock::system,
            portcullis::clock::ManualClock::clock,
        );
        let port = free_port();
        let public = format!("http://127.0.0.1:{port}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg =
            portcullis::demo::ProviderConfig::example(&format!("{public}/_auth/callback/demo"))
                .unwrap();
        let client_id = cfg.clients[0].client_id.clone();
        let secret = cfg.clients[0].client_secret.clone();
        let provider =
            portcullis::demo::provider::start_with_clock(listener, cfg, clock.clone()).await;
        provider.set_faults(|f| {
            f.auto_approve_as = Some("alice".into());
            faults(f);
        });
        let upstream = Upstream::start("app").await;
        let source_extra = source_extra.replace("ISSUER", &provider.issuer());
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/portcullis.db", dir.path().display());
        // Keys before the first table header belong to the app "app"; the
        // tables (its further policies, more apps) come after its allow rule.
        let at = if apps_extra.starts_with('[') {
            0
        } else {
            apps_extra.find("\n[").map_or(apps_extra.len(), |i| i + 1)
        };
        let (app_keys, app_tables) = apps_extra.split_at(at);
        // The app "app" admits everyone signed in unless the tables state its
        // own access rules (those before any further `[[app]]`).
        let own_rules = app_tables
            .split("[[app]]")
            .next()
            .is_some_and(|t| t.contains("on = [\"access\"]"));
        let default_rule = if own_rules {
            ""
        } else {
            "[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n"
        };
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"
public_url = "{public}"
threads = 1
shutdown_timeout = "2s"

[session]
secrets = ["{SECRET}"]

[store]
url = "{db}"

[[source]]
slug = "demo"
name = "Demo IdP"
consumer_key = "{client_id}"
consumer_secret = "{secret}"
{protocol}
{source_extra}

[[app]]
name = "app"
upstream = "{up}"
public_paths = ["/public"]
{app_keys}
{default_rule}
{app_tables}
"#,
            protocol = if source_extra.contains("type = ") {
                String::new()
            } else {
                format!(
                    "type = \"openidconnect\"\noidc_well_known_url = \"{}\"",
                    provider.well_known_url()
                )
            },
            up = upstream.url(),
        );
        let gw = Gateway::start_full_on(&config, clock.clone());
        // On a loaded machine discovery can miss its first try; a test that did
        // not ask for a provider that is down starts once the source is ready.
        if !provider.faults().down {
            gw.ready().await;
        }
        Setup {
            config,
            clock,
            manual,
            provider,
            gw,
            upstream,
            db,
            jar: Jar::default(),
            client: client(),
            _dir: dir,
        }
    }

    pub async fn get(&mut self, url: &str) -> reqwest::Response {
        let resp = self
            .client
            .get(url)
            .header("accept", "text/html")
            .header("cookie", self.jar.header())
            .send()
            .await
            .unwrap();
        self.jar.absorb(&resp);
        resp
    }

    /// Login start → provider (auto-approve) → callback; returns the callback's response.
    pub async fn sign_in(&mut self) -> reqwest::Response {
        let start = self
            .get(&self.gw.url("/_auth/login/demo?rd=/private%3Fx%3D1"))
            .await;
        assert_eq!(start.status(), 302, "login start");
        let authorize = start.headers()["location"].to_str().unwrap().to_string();
        assert!(
            authorize.starts_with(&self.provider.issuer()),
            "{authorize}"
        );
        let back = self.get(&authorize).await;
        assert_eq!(back.status(), 302, "provider authorize");
        let callback = back.headers()["location"].to_str().unwrap().to_string();
        self.get(&callback).await
    }

    pub async fn users(&self) -> u64 {
        let store = portcullis::identity::store::open(&self.db).await.unwrap();
        store.counts().await.unwrap().users
    }
}

/// A source that asks for `response_mode=form_post` in `authorize_params`
/// (not only the Apple preset) gets its callback as a cross-site POST: its
/// login cookie is `SameSite=None; Secure`, or the browser would not send it.
#[tokio::test(flavor = "multi_thread")]
async fn a_form_post_source_s_login_cookie_travels_with_the_cross_site_callback() {
    let mut s = Setup::start_with(
        "authorize_params = { response_mode = \"form_post\" }",
        |_| {},
    )
    .await;
    let start = s.get(&s.gw.url("/_auth/login/demo?rd=/private")).await;
    assert_eq!(start.status(), 302);
    let login: Vec<String> = start
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .filter(|c| c.starts_with("portcullis_login"))
        .collect();
    assert_eq!(login.len(), 1, "{login:?}");
    assert!(
        login[0].contains("SameSite=None") && login[0].contains("Secure"),
        "{}",
        login[0]
    );
    let authorize = start.headers()["location"].to_str().unwrap();
    assert!(authorize.contains("response_mode=form_post"), "{authorize}");
}

/// Every way a form_post flow's login cookie is deleted carries the
/// attributes it was set with (`SameSite=None; Secure`), or a browser on
/// plain http keeps it (a `Secure` cookie is not overwritten by one that is
/// not): a callback that names no flow, a sixth login evicting it (OA2-23),
/// and sign-out (SES-16).
#[tokio::test(flavor = "multi_thread")]
async fn a_form_post_flow_s_login_cookie_is_deleted_with_the_attributes_it_was_set_with() {
    let mut s = Setup::start_with(
        "authorize_params = { response_mode = \"form_post\" }",
        |_| {},
    )
    .await;
    let deletions = |r: &reqwest::Response| -> Vec<String> {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .filter(|c| c.starts_with("portcullis_login-") && c.contains("Max-Age=0"))
            .collect()
    };
    let cross_site = |c: &String| c.contains("SameSite=None") && c.contains("Secure");
    for i in 0..5 {
        let r = s
            .get(&s.gw.url(&format!("/_auth/login/demo?rd=/{i}")))
            .await;
        assert_eq!(r.status(), 302);
    }
    let flows = |s: &Setup| -> Vec<String> {
        s.jar
            .0
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| n.starts_with("portcullis_login-"))
            .collect()
    };
    let oldest = flows(&s)[0].clone();
    // A callback without `state` names no flow: every one is deleted.
    let r = s
        .client
        .get(s.gw.url("/_auth/callback/demo?code=x"))
        .header("cookie", s.jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let deleted = deletions(&r);
    assert_eq!(deleted.len(), 5, "{deleted:?}");
    assert!(deleted.iter().all(cross_site), "{deleted:?}");
    // A sixth login evicts the oldest.
    let r = s.get(&s.gw.url("/_auth/login/demo?rd=/5")).await;
    assert_eq!(r.status(), 302);
    let deleted = deletions(&r);
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(deleted[0].starts_with(&format!("{oldest}=")), "{deleted:?}");
    assert!(cross_site(&deleted[0]), "{deleted:?}");
    // Sign-out deletes the rest.
    let r = s
        .client
        .post(s.gw.url("/_auth/sign_out?rd=/bye"))
        .header("sec-fetch-site", "same-origin")
        .header("cookie", s.jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let deleted = deletions(&r);
    assert_eq!(deleted.len(), 5, "{deleted:?}");
    assert!(deleted.iter().all(cross_site), "{deleted:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc01_full_sign_in_enrolls_and_the_app_sees_identity_headers() {
    let mut s = Setup::start().await;
    // A browser is sent to the sign-in page, which offers the source.
    let r = s.get(&s.gw.url("/private?x=1")).await;
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "/_auth/sign_in?rd=/private%3Fx%3D1"
    );
    let page = s
        .get(&s.gw.url("/_auth/sign_in?rd=/private%3Fx%3D1"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sign in with Demo IdP"), "{page}");
    assert!(
        page.contains("/_auth/login/demo?rd=%2Fprivate%3Fx%3D1"),
        "{page}"
    );

    let r = s.sign_in().await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.headers()["location"], "/private?x=1");
    let set = session_cookies_set(&r);
    assert_eq!(set.len(), 1);
    assert!(
        set[0].contains("HttpOnly") && set[0].contains("SameSite=Lax") && set[0].contains("Path=/"),
        "{}",
        set[0]
    );
    assert_eq!(s.users().await, 1);
    // PKCE S256, nonce and state were sent; the token request used client_secret_basic.
    let q = s.provider.last_authorize_query().unwrap();
    assert_eq!(
        q.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert!(q.contains_key("nonce") && q.contains_key("state"));
    assert!(s.provider.last_token_request().unwrap().basic_auth);

    // Cookie-only requests now reach the app with the identity, and spoofed headers are replaced.
    let r = s
        .client
        .get(s.gw.url("/private?x=1"))
        .header("cookie", format!("{}; other=1", s.jar.header()))
        .header("x-forwarded-user", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.upstream.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.header("x-forwarded-user"), Some("alice"));
    assert_eq!(last.header("x-forwarded-email"), Some("alice@example.com"));
    assert_eq!(last.header("x-forwarded-groups"), Some("admins,staff"));
    assert_eq!(last.header("x-forwarded-preferred-username"), Some("alice"));
    assert_eq!(
        last.header("cookie"),
        Some("other=1"),
        "the session cookie reached the upstream"
    );

    // userinfo and forward auth answer for the same session.
    let info: serde_json::Value = s
        .client
        .get(s.gw.url("/_auth/userinfo"))
        .header("cookie", s.jar.header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["user"], "alice");
    assert_eq!(info["groups"], json!(["admins", "staff"]));
    let r = s
        .client
        .get(s.gw.url("/_auth/check"))
        .header("cookie", s.jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-request-user"], "alice");

    // Signing in again reuses the user (authenticate an existing connection).
    s.jar.0.clear();
    let r = s.sign_in().await;
    assert_eq!(r.status(), 302);
    assert_eq!(s.users().await, 1);
}

/// `/_auth/userinfo` is JSON of the current identity: without one it is a
/// 401 for a browser too, never a redirect to the sign-in page.
#[tokio::test(flavor = "multi_thread")]
async fn userinfo_without_an_identity_is_401_for_a_browser_and_an_api_client() {
    let s = Setup::start().await;
    for accept in ["text/html,application/xhtml+xml", "application/json", "*/*"] {
        let r = s
            .client
            .get(s.gw.url("/_auth/userinfo"))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{accept}");
        assert!(r.headers().get("location").is_none(), "{accept}");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer realm=\"portcullis\"",
            "{accept}"
        );
    }
}

/// A method an `/_auth` endpoint does not take is a 405 that says which
/// it takes (`Allow`, RFC 9110 §15.5.6).
#[tokio::test(flavor = "multi_thread")]
async fn an_auth_endpoint_refuses_other_methods_with_405_and_allow() {
    let s = Setup::start().await;
    for (method, path, allow) in [
        ("PUT", "/_auth/sign_in", "GET, HEAD, POST"),
        ("DELETE", "/_auth/sign_out", "GET, HEAD, POST"),
        ("POST", "/_auth/jwks.json", "GET, HEAD"),
        ("PUT", "/_auth/jwks.json", "GET, HEAD"),
        ("GET", "/_auth/backchannel_logout/demo", "POST"),
        ("PUT", "/_auth/backchannel_logout/demo", "POST"),
    ] {
        let r = s
            .client
            .request(method.parse().unwrap(), s.gw.url(path))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
    }
}

/// Runs one sign-in against a misbehaving provider and checks the refusal.
async fn refused(faults: impl FnOnce(&mut Faults), status: u16, userinfo_calls: usize) {
    let mut s = Setup::start_with("", faults).await;
    // A hanging provider holds the gateway for its whole 10 s outbound timeout.
    s.client = patient_client();
    let r = s.sign_in().await;
    let code = r.status().as_u16();
    assert!(session_cookies_set(&r).is_empty(), "a session was set");
    let cleared = r.headers().get_all("set-cookie").iter().any(|v| {
        let v = v.to_str().unwrap();
        v.starts_with("portcullis_login-") && v.contains("Max-Age=0")
    });
    let body = r.text().await.unwrap();
    assert_eq!(code, status, "{body}");
    assert!(cleared, "the login state was not cleared");
    assert_eq!(s.users().await, 0, "a user was written");
    assert_eq!(
        s.provider.calls(Endpoint::Userinfo),
        userinfo_calls,
        "userinfo calls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc12_bad_signatures_are_refused() {
    refused(|f| f.bad_signature = true, 401, 0).await;
    refused(
        |f| {
            f.alg = SignAlg::ES256;
            f.bad_signature = true;
        },
        401,
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc15_alg_none_is_refused() {
    refused(|f| f.alg = SignAlg::None, 401, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc02_oidc05_oidc06_issuer_and_audience_faults_are_refused() {
    refused(|f| f.iss = Some("https://evil.example".into()), 401, 0).await;
    refused(|f| f.aud = Some(json!("someone-else")), 401, 0).await;
    refused(|f| f.aud = Some(serde_json::Value::Null), 401, 0).await;
    refused(
        |f| f.aud = Some(json!(["portcullis-demo", "untrusted"])),
        401,
        0,
    )
    .await;
    refused(|f| f.azp = Some(Some("someone-else".into())), 401, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc07_oidc08_oidc10_time_and_nonce_faults_are_refused() {
    refused(|f| f.omit_iat = true, 401, 0).await;
    refused(|f| f.exp_offset_secs = -3600, 401, 0).await;
    refused(|f| f.nonce = NonceFault::Omit, 401, 0).await;
    refused(|f| f.nonce = NonceFault::Wrong, 401, 0).await;
}

/// OIDC-10 does not hang on how `scopes` is written: `openid` inside one
/// entry still sends a nonce and refuses an ID token without it (before,
/// no nonce was sent nor checked).
#[tokio::test(flavor = "multi_thread")]
async fn oidc10_the_nonce_is_checked_however_scopes_are_written() {
    for scopes in [
        "[\"openid profile email\"]",
        "[\"profile\", \"email openid\"]",
    ] {
        let mut s = Setup::start_with(&format!("scopes = {scopes}"), |f| {
            f.nonce = NonceFault::Omit
        })
        .await;
        let start = s.get(&s.gw.url("/_auth/login/demo")).await;
        let authorize = start.headers()["location"].to_str().unwrap().to_string();
        assert!(authorize.contains("&nonce="), "{scopes}: {authorize}");
        let r = s.sign_in().await;
        assert_eq!(r.status(), 401, "{scopes}");
        assert!(session_cookies_set(&r).is_empty(), "{scopes}");
        assert_eq!(s.users().await, 0, "{scopes}");
    }
}

/// OIDC-31: with `max_age` in `authorize_params`, an ID token without
/// `auth_time` is refused; with it (and recent), the sign-in goes through.
#[tokio::test(flavor = "multi_thread")]
async fn oidc31_max_age_asked_for_needs_an_auth_time() {
    let max_age = "authorize_params = { max_age = \"600\" }";
    let mut s = Setup::start_with(max_age, |f| f.omit_auth_time = true).await;
    let r = s.sign_in().await;
    assert_eq!(r.status(), 401);
    assert!(session_cookies_set(&r).is_empty());
    assert_eq!(s.users().await, 0);
    let mut s = Setup::start_with(max_age, |_| {}).await;
    assert_eq!(s.sign_in().await.status(), 302);
    // Without max_age, auth_time is not needed.
    let mut s = Setup::start_with("", |f| f.omit_auth_time = true).await;
    assert_eq!(s.sign_in().await.status(), 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc20_userinfo_for_another_subject_is_refused() {
    refused(|f| f.userinfo_sub = Some("mallory".into()), 401, 1).await;
}

/// OIDC-21: a signed userinfo answer (`application/jwt`) is read once it
/// verifies with the provider's keys and names the provider as `iss` and
/// this client in `aud`; a bad signature, `alg: none`, another issuer or
/// another audience ends the sign-in (401, no session, nothing stored).
#[tokio::test(flavor = "multi_thread")]
async fn oidc21_a_signed_userinfo_answer_is_verified_and_only_then_read() {
    use base64::Engine as _;
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let userinfo = crate::bearer::JwksServer::start(String::new()).await;
    userinfo.content_type("application/jwt");
    let mut s = Setup::start_with(&format!("profile_url = \"{}\"", userinfo.url()), |_| {}).await;
    let issuer = s.provider.issuer();
    let answer = |change: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        crate::bearer::claims(&issuer, |c| {
            c.insert("sub".into(), json!("alice"));
            c.insert("aud".into(), json!("portcullis-demo"));
            c.insert("email".into(), json!("alice@example.com"));
            c.insert("email_verified".into(), json!(true));
            change(c);
        })
    };
    let good = s.provider.sign(&answer(&|_| {})).unwrap();
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    let cases = [
        (
            "bad signature",
            format!("{head}.{payload}.{}", b64("forged")),
        ),
        (
            "alg none",
            format!("{}.{payload}.", b64(r#"{"alg":"none"}"#)),
        ),
        (
            "another issuer",
            s.provider
                .sign(&answer(&|c| {
                    c.insert("iss".into(), json!("https://evil.example"));
                }))
                .unwrap(),
        ),
        (
            "another audience",
            s.provider
                .sign(&answer(&|c| {
                    c.insert("aud".into(), json!("someone-else"));
                }))
                .unwrap(),
        ),
    ];
    for (name, body) in cases {
        userinfo.set(200, body);
        s.jar = Jar::default();
        let r = s.sign_in().await;
        assert_eq!(r.status(), 401, "{name}");
        assert!(session_cookies_set(&r).is_empty(), "{name}");
        assert_eq!(s.users().await, 0, "{name}");
    }
    userinfo.set(200, good);
    s.jar = Jar::default();
    let r = s.sign_in().await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(s.users().await, 1);
    assert_eq!(s.userinfo().await["email"], "alice@example.com");
    assert_eq!(
        userinfo.hits(),
        5,
        "the userinfo endpoint was not the one asked"
    );
}

/// OIDC-34: a third-party-initiated login (OIDC Core §4) at the source's
/// login URL: an `iss` that is not the source's is a 400 and nothing is
/// fetched from it; the source's own `iss` starts the flow, and its
/// `target_link_uri` is where the person lands, under the `rd` rules.
#[tokio::test(flavor = "multi_thread")]
async fn oidc34_a_third_party_initiated_login_is_refused_for_another_issuer() {
    let evil = crate::bearer::JwksServer::start(String::new()).await;
    let mut s = Setup::start().await;
    let enc = |v: &str| -> String { url::form_urlencoded::byte_serialize(v.as_bytes()).collect() };
    let r = s
        .get(&s.gw.url(&format!(
            "/_auth/login/demo?iss={}&target_link_uri={}",
            enc(&evil.url()),
            enc(&evil.url())
        )))
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    let page = r.text().await.unwrap();
    assert!(page.contains("started for another provider"), "{page}");
    assert_eq!(evil.hits(), 0);
    assert_eq!(s.provider.calls(Endpoint::Authorize), 0);
    let issuer = enc(&s.provider.issuer());
    let r = s
        .flow(&format!(
            "/_auth/login/demo?iss={issuer}&target_link_uri=%2Fprivate%3Fx%3D1"
        ))
        .await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.headers()["location"], "/private?x=1");
    s.jar = Jar::default();
    let off = enc("https://evil.example/x");
    let r = s
        .flow(&format!(
            "/_auth/login/demo?iss={issuer}&target_link_uri={off}"
        ))
        .await;
    assert_eq!(r.headers()["location"], "/");
    assert_eq!(evil.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_error_access_denied_is_refused_before_any_token_call() {
    let mut s = Setup::start_with("", |f| f.authorize_error = Some("access_denied".into())).await;
    let r = s.sign_in().await;
    // REJECT-LOGIN: a 400 page (SECURITY.md OA1-03 for OAuth 1.0a's `denied=`, alike here).
    assert_eq!(r.status(), 400);
    assert!(session_cookies_set(&r).is_empty());
    // OA2-10: fixed wording, nothing the provider (or whoever built the URL) wrote.
    let body = r.text().await.unwrap();
    assert!(
        body.contains("The sign-in was cancelled or refused at the provider."),
        "{body}"
    );
    assert!(!body.contains("access_denied"), "{body}");
    assert_eq!(s.provider.calls(Endpoint::Token), 0);
    assert_eq!(s.users().await, 0);
}

/// A provider that answers that it failed (`server_error`,
/// `temporarily_unavailable`, RFC 6749 §4.1.2.1) is a provider error: 502
/// (docs/design.md), no token call, nothing written; any other code is the
/// request refused: 400.
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_answers_it_failed_is_a_502_any_other_error_a_400() {
    for (code, status) in [
        ("server_error", 502),
        ("temporarily_unavailable", 502),
        ("invalid_scope", 400),
        ("unauthorized_client", 400),
    ] {
        let mut s = Setup::start_with("", |f| f.authorize_error = Some(code.into())).await;
        let r = s.sign_in().await;
        assert_eq!(r.status(), status, "{code}");
        assert!(session_cookies_set(&r).is_empty());
        let body = r.text().await.unwrap();
        assert!(!body.contains(code), "{code}: {body}");
        assert_eq!(s.provider.calls(Endpoint::Token), 0);
        assert_eq!(s.users().await, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc13_oidc16_oidc19_valid_variants_are_accepted() {
    for faults in [
        Faults {
            alg: SignAlg::ES256,
            ..Faults::default()
        },
        Faults {
            alg: SignAlg::HS256,
            ..Faults::default()
        },
        Faults {
            kid: KidFault::Omit,
            ..Faults::default()
        },
        Faults {
            jwks_unparseable_key: true,
            ..Faults::default()
        },
    ] {
        let label = format!("{faults:?}");
        let mut s = Setup::start_with("", move |f| {
            *f = Faults {
                auto_approve_as: f.auto_approve_as.clone(),
                ..faults
            };
        })
        .await;
        let r = s.sign_in().await;
        let status = r.status();
        assert_eq!(
            status,
            302,
            "{label}: {}",
            r.text().await.unwrap_or_default()
        );
        assert_eq!(s.users().await, 1, "{label}");
    }
}

/// OIDC-17: no `kid` while several of the provider's keys fit the ID token's
/// algorithm → refused (never tried one by one), before any userinfo call.
#[tokio::test(flavor = "multi_thread")]
async fn oidc17_a_kid_less_id_token_with_several_fitting_keys_is_refused() {
    refused(
        |f| {
            f.kid = KidFault::Omit;
            f.jwks_extra_keys = 2;
        },
        401,
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc18_key_rotation_is_accepted_after_one_refetch() {
    let mut s = Setup::start().await;
    assert_eq!(s.sign_in().await.status(), 302);
    let jwks_before = s.provider.calls(Endpoint::Jwks);
    s.provider.set_faults(|f| f.rotate_signing_key = true);
    s.jar.0.clear();
    let r = s.sign_in().await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(s.provider.calls(Endpoint::Jwks), jwks_before + 1);
}

/// OIDC-18 against an anonymous client: a back-channel logout token naming
/// a made-up `kid` (anyone may post one) refetches the keys and starts the
/// request cooldown; the provider then rotates its key, and the next
/// sign-in still refetches once and succeeds (before, it was refused with
/// 401 until the scheduled refresh, up to `jwks_cache_ttl`).
#[tokio::test(flavor = "multi_thread")]
async fn oidc18_a_rotation_right_after_made_up_kids_still_signs_in() {
    use base64::Engine as _;
    let mut s = Setup::start().await;
    assert_eq!(s.sign_in().await.status(), 302);
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let before = s.provider.calls(Endpoint::Jwks);
    for n in 0..2 {
        let token = format!(
            "{}.{}.c2ln",
            b64(json!({"alg": "RS256", "kid": format!("made-up-{n}")})),
            b64(json!({}))
        );
        let r = s
            .client
            .post(s.gw.url("/_auth/backchannel_logout/demo"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("logout_token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
    // One refetch for the first made-up kid; the second is cooling down.
    assert_eq!(s.provider.calls(Endpoint::Jwks), before + 1);
    s.provider.set_faults(|f| f.rotate_signing_key = true);
    s.jar.0.clear();
    let r = s.sign_in().await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(s.provider.calls(Endpoint::Jwks), before + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn state_missing_mismatched_or_replayed_is_refused() {
    let mut s = Setup::start().await;
    let start = s.get(&s.gw.url("/_auth/login/demo")).await;
    let authorize = start.headers()["location"].to_str().unwrap().to_string();
    let back = s.get(&authorize).await;
    let callback = back.headers()["location"].to_str().unwrap().to_string();
    let login_cookie = s.jar.header();
    let flow = s
        .jar
        .0
        .iter()
        .map(|(n, _)| n.clone())
        .find(|n| n.starts_with("portcullis_login-"))
        .unwrap();
    // No state (OA2-01): refused before any token request, and the browser's
    // flow cookie cleared with its attributes (REJECT-LOGIN).
    // The callback, as this browser (its login cookie) opens it.
    let open = |url: String| s.client.get(url).header("cookie", &login_cookie).send();
    let r = open(with_state(&callback, None)).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(session_cookies_set(&r).is_empty());
    assert_eq!(cookies_cleared(&r), vec![flow.clone()], "{:?}", r.headers());
    // Mismatched state (OA2-02): the cookie that state names is cleared; the
    // live flow's stays, as a tab whose flow was evicted must not break the
    // others (OA2-23).
    let r = open(with_state(&callback, Some("forged"))).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(session_cookies_set(&r).is_empty());
    let cleared = cookies_cleared(&r);
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert!(cleared[0].starts_with("portcullis_login-") && cleared[0] != flow);
    assert_eq!(s.provider.calls(Endpoint::Token), 0);
    // No login cookie at all (CSRF: the flow was not started in this browser).
    let r = s.client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // The real one succeeds once...
    let r = open(callback.clone()).await.unwrap();
    assert_eq!(r.status(), 302);
    // ...and its replay with the same cookie is refused (OIDC-11).
    let r = open(callback.clone()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(session_cookies_set(&r).is_empty());
    assert_eq!(s.users().await, 1);
    // On another replica of the same store too, before any token request:
    // the state was spent in the store (OA2-03).
    let other = s.replica_trusting_loopback();
    other.ready().await;
    let replayed = callback.replace(&s.gw.addr.to_string(), &other.addr.to_string());
    let r = open(replayed).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(session_cookies_set(&r).is_empty());
    assert_eq!(s.provider.calls(Endpoint::Token), 1);
}

/// Names of the cookies an answer deletes (`Max-Age=0`).
fn cookies_cleared(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .filter(|v| v.contains("Max-Age=0"))
        .filter_map(|v| v.split_once('=').map(|(n, _)| n.to_string()))
        .collect()
}

/// `url` with its `state` parameter replaced by `state`, or removed (`None`).
fn with_state(url: &str, state: Option<&str>) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter_map(|(k, v)| match (k.as_ref(), state) {
            ("state", None) => None,
            ("state", Some(st)) => Some((k.into_owned(), st.to_string())),
            _ => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_can_be_closed() {
    let mut s = Setup::start_with("enroll = false", |_| {}).await;
    let r = s.sign_in().await;
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(page.contains("Enrollment is closed"), "{page}");
    assert!(page.contains("cannot be created"), "{page}");
    assert_eq!(s.users().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_secret_post_is_used_when_configured() {
    let mut s = Setup::start_with("token_auth_method = \"client_secret_post\"", |_| {}).await;
    assert_eq!(s.sign_in().await.status(), 302);
    let t = s.provider.last_token_request().unwrap();
    assert!(!t.basic_auth);
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_down_at_start_then_recovers() {
    let mut s = Setup::start_with("", |f| f.down = true).await;
    let r = s
        .client
        .get(s.gw.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("demo"));
    let r = s.get(&s.gw.url("/_auth/login/demo")).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    // A third party's login naming the source's issuer is not judged
    // foreign while the source's issuer is not known yet (OIDC-34): 503 too.
    let issuer: String =
        url::form_urlencoded::byte_serialize(s.provider.issuer().as_bytes()).collect();
    let r = s
        .get(&s.gw.url(&format!("/_auth/login/demo?iss={issuer}")))
        .await;
    assert_eq!(r.status(), 503);
    s.provider.set_faults(|f| f.down = false);
    let mut ready = false;
    // Discovery retries back off 1 s, 2 s, 4 s…: allow up to 20 s on a loaded machine.
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status = s
            .client
            .get(s.gw.admin_url("/readyz"))
            .send()
            .await
            .map(|r| r.status());
        if status.is_ok_and(|st| st == 200) {
            ready = true;
            break;
        }
    }
    assert!(ready, "the source never became ready");
    assert_eq!(s.sign_in().await.status(), 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_issuer_mismatch_refuses_the_source_at_load() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider = portcullis::demo::provider::start(
        listener,
        portcullis::demo::ProviderConfig::example("http://127.0.0.1:1/cb").unwrap(),
    )
    .await;
    provider.set_faults(|f| f.discovery_issuer = Some("https://elsewhere.example".into()));
    let file = crate::support::config_file(&format!(
        "{}\n[[source]]\nslug = \"demo\"\ntype = \"openidconnect\"\nconsumer_key = \"c\"\nconsumer_secret = \"s\"\noidc_well_known_url = \"{}\"\n[[app]]\nname = \"a\"\nupstream = \"http://127.0.0.1:1\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        crate::support::base_config(),
        provider.well_known_url()
    ));
    let config = portcullis::config::load_with_env(&file.path, Vec::new()).unwrap();
    let err = portcullis::app::spawn(config)
        .err()
        .expect("the gateway started");
    let msg = err.to_string();
    assert!(
        msg.contains("source[demo].oidc_well_known_url") && msg.contains("elsewhere.example"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ses05_a_cookie_sealed_with_a_previous_secret_is_accepted_and_resealed() {
    let mut s = Setup::start().await;
    assert_eq!(s.sign_in().await.status(), 302);
    let old = s.jar.header();
    // A replica whose first secret is new and whose second is the old one.
    let new_secret = "bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQtMzI=";
    let rotated = s.config.replace(
        &format!("secrets = [\"{SECRET}\"]"),
        &format!("secrets = [\"{new_secret}\", \"{SECRET}\"]"),
    );
    let port = free_port();
    let rotated = rotated.replace(&s.gw.addr.to_string(), &format!("127.0.0.1:{port}"));
    let gw2 = Gateway::start_full(&rotated);
    let r = s
        .client
        .get(gw2.url("/private"))
        .header("cookie", &old)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let resealed = session_cookies_set(&r);
    assert_eq!(resealed.len(), 1, "no re-sealed cookie");
    let value = resealed[0].split(';').next().unwrap().to_string();
    assert_ne!(value, old);
    // `/_auth/userinfo` (a page's script asking who is signed in) re-seals it too.
    let r = s
        .client
        .get(gw2.url("/_auth/userinfo"))
        .header("cookie", &old)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(session_cookies_set(&r).len(), 1, "no re-sealed cookie");
    // Only the new secret: the re-sealed cookie works, the old one does not.
    let only_new = rotated.replace(&format!(", \"{SECRET}\""), "").replace(
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{}", free_port()),
    );
    let gw3 = Gateway::start_full(&only_new);
    let r = s
        .client
        .get(gw3.url("/private"))
        .header("cookie", &value)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .get(gw3.url("/private"))
        .header("cookie", &old)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// A forward-auth 401 about a browser's request names the sign-in URL for
/// the proxy in front to send it to, the target's query whole in `rd`; an
/// API client's or a bearer token's 401 names none (it is answered as it
/// is, never redirected).
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_names_a_browser_s_sign_in_url_with_its_whole_target() {
    let s = Setup::start().await;
    let gw = s.replica_trusting_loopback();
    let ask = |headers: Vec<(&'static str, &'static str)>| {
        let c = s.client.clone();
        let url = gw.url("/_auth/check");
        async move {
            let mut req = c
                .get(url)
                .header("x-forwarded-host", "127.0.0.1")
                .header("x-forwarded-uri", "/private/page?a=1&b=x%2Fy");
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.send().await.unwrap()
        }
    };
    let r = ask(vec![("accept", "text/html")]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["x-auth-request-redirect"],
        "/_auth/sign_in?rd=/private/page%3Fa%3D1%26b%3Dx%252Fy"
    );
    for headers in [
        vec![("accept", "application/json")],
        vec![
            ("accept", "text/html"),
            ("authorization", "Bearer not.a.token"),
        ],
    ] {
        let r = ask(headers.clone()).await;
        assert_eq!(r.status(), 401, "{headers:?}");
        assert!(
            r.headers().get("x-auth-request-redirect").is_none(),
            "{headers:?}"
        );
    }
    // From a peer not trusted, there is no target to send anyone back to.
    let r = s
        .client
        .get(s.gw.url("/_auth/check"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("x-auth-request-redirect").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_believes_forwarded_headers_only_from_trusted_proxies() {
    let mut s = Setup::start().await;
    assert_eq!(s.sign_in().await.status(), 302);
    let cookie = s.jar.header();
    let check = |gw_url: String, headers: Vec<(&'static str, &'static str)>| {
        let c = s.client.clone();
        let cookie = cookie.clone();
        async move {
            let mut req = c.get(gw_url).header("cookie", cookie);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.send().await.unwrap()
        }
    };
    // Untrusted peer (no trusted_proxies): its X-Forwarded-Host is ignored.
    let r = check(
        s.gw.url("/_auth/check"),
        vec![("x-forwarded-host", "evil.example")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-request-user"], "alice");
    assert_eq!(r.headers()["x-auth-request-groups"], "admins,staff");

    // A replica that trusts 127.0.0.1: the forwarded host decides.
    let gw2 = s.replica_trusting_loopback();
    // The session was issued for 127.0.0.1, not for evil.example.
    let r = check(
        gw2.url("/_auth/check"),
        vec![("x-forwarded-host", "evil.example")],
    )
    .await;
    assert_eq!(r.status(), 401);
    let r = check(
        gw2.url("/_auth/check"),
        vec![
            ("x-forwarded-host", "127.0.0.1"),
            ("x-forwarded-uri", "/private"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-request-user"], "alice");
    // A public path of the target app needs no session.
    let r = s
        .client
        .get(gw2.url("/_auth/check"))
        .header("x-original-url", "http://127.0.0.1/public/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-auth-request-user").is_none());
    // A path named without a host is about the host the check was sent to:
    // judged at that path, not at `/`.
    for name in ["x-forwarded-uri", "x-original-uri"] {
        let r = s
            .client
            .get(gw2.url("/_auth/check"))
            .header(name, "/public/x?y=1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert!(r.headers().get("x-auth-request-user").is_none());
        let r = s
            .client
            .get(gw2.url("/_auth/check"))
            .header(name, "/private")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{name}");
    }
    // A front proxy passes its client's headers on beside its own: a target
    // named twice is refused, never one of the two believed.
    for pair in [
        [
            ("x-original-url", "http://127.0.0.1/public/x"),
            ("x-forwarded-uri", "/private"),
        ],
        [
            ("x-forwarded-uri", "/private"),
            ("x-original-uri", "/public/x"),
        ],
        [
            ("x-forwarded-uri", "/public/x"),
            ("x-forwarded-uri", "/private"),
        ],
        [
            ("x-forwarded-host", "127.0.0.1"),
            ("x-forwarded-host", "evil.example"),
        ],
        // Two copies an earlier hop joined into one line.
        [
            ("x-forwarded-uri", "/public/x, /private"),
            ("accept", "*/*"),
        ],
        [
            ("x-forwarded-host", "127.0.0.1, evil.example"),
            ("x-forwarded-uri", "/public/x"),
        ],
    ] {
        let mut req = s.client.get(gw2.url("/_auth/check"));
        for (k, v) in pair {
            req = req.header(k, v);
        }
        assert_eq!(req.send().await.unwrap().status(), 400, "{pair:?}");
    }
}

/// Forward auth about a target no app serves admits nobody, though the
/// session is valid on that host: no app there states who may access it
/// (proxied, the same request is a 404).
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_admits_no_session_to_a_path_no_app_serves() {
    let mut s = Setup::start_with_apps("", "path_prefix = \"/private\"\n", |_| {}).await;
    assert_eq!(s.sign_in().await.status(), 302);
    let gw2 = s.replica_trusting_loopback();
    let check = |path: &'static str| {
        s.client
            .get(gw2.url("/_auth/check"))
            .header("cookie", s.jar.header())
            .header("x-forwarded-host", "127.0.0.1")
            .header("x-forwarded-uri", path)
            .send()
    };
    let r = check("/private/x").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-request-user"], "alice");
    let r = check("/elsewhere").await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("x-auth-request-user").is_none());
    let body = r.text().await.unwrap();
    assert!(
        body.contains("No app is configured for this address."),
        "{body}"
    );
    let proxied = s
        .client
        .get(gw2.url("/elsewhere"))
        .header("cookie", s.jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 404);
}

/// `X-Forwarded-Method` names the method a forward-auth check is about only
/// from a trusted proxy: from anyone else the check is about its own
/// request, so a method rule cannot be turned by the caller.
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_believes_the_forwarded_method_only_from_trusted_proxies() {
    let mut s = Setup::start_with_apps(
        "",
        "[[app.policy]]\non = [\"access\"]\neffect = \"deny\"\nexpression = \"request.method == 'DELETE'\"\nmessage = \"no deleting\"\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        |_| {},
    )
    .await;
    assert_eq!(s.sign_in().await.status(), 302);
    let cookie = s.jar.header();
    let check = |url: String, method: Option<&'static str>| {
        let c = s.client.clone();
        let cookie = cookie.clone();
        async move {
            let mut req = c.get(url).header("cookie", cookie);
            if let Some(m) = method {
                req = req.header("x-forwarded-method", m);
            }
            req.send().await.unwrap().status()
        }
    };
    // Untrusted (no trusted_proxies): a GET check stays a GET, whatever it claims.
    assert_eq!(check(s.gw.url("/_auth/check"), None).await, 200);
    assert_eq!(check(s.gw.url("/_auth/check"), Some("DELETE")).await, 200);

    // A replica that trusts 127.0.0.1: the forwarded method decides.
    let gw2 = s.replica_trusting_loopback();
    assert_eq!(check(gw2.url("/_auth/check"), Some("DELETE")).await, 401);
    assert_eq!(check(gw2.url("/_auth/check"), Some("GET")).await, 200);
}

/// Forward auth answers 401 to a person the app refuses as to one not
/// signed in (docs/design.md), and every proxy recipe sends a 401 to the
/// sign-in page: there a signed-in person the app serving `rd` refuses is
/// told why (403, the rule's message, who they are signed in as) beside the
/// buttons to sign in with another account and a sign-out link; on a path
/// it admits them to, a public one, or for a request that is not a
/// navigation (a sibling site's script), the page as usual.
#[tokio::test(flavor = "multi_thread")]
async fn the_sign_in_page_tells_a_signed_in_person_the_app_refuses_why() {
    let mut s = Setup::start_with_apps(
        "",
        "[[app.policy]]\non = [\"access\"]\neffect = \"deny\"\npath_prefix = \"/admin\"\nmessage = \"No one administers here\"\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"deny\"\npath_prefix = \"/public\"\nmessage = \"No one administers here\"\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        |_| {},
    )
    .await;
    let origin = s.gw.url("");
    let page = |s: &Setup, rd: String, cookie: bool, mode: Option<&'static str>| {
        let mut req = s
            .client
            .get(s.gw.url(&format!("/_auth/sign_in?rd={rd}")))
            .header("accept", "text/html");
        if cookie {
            req = req.header("cookie", s.jar.header());
        }
        if let Some(m) = mode {
            req = req.header("sec-fetch-mode", m);
        }
        req.send()
    };
    let usual = |body: &str| body.contains("/_auth/login/demo") && !body.contains("administers");
    // Not signed in: the sign-in page, whatever the path.
    let r = page(&s, "/admin/x".into(), false, None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.sign_in().await.status(), 302);
    for rd in [
        "/admin/x".to_string(),
        // Spelt otherwise.
        "/%2561dmin;x/y".to_string(),
        // Absolute, on this host (Traefik's recipe sends the whole URL).
        url::form_urlencoded::byte_serialize(format!("{origin}/admin/x").as_bytes()).collect(),
    ] {
        let r = page(&s, rd.clone(), true, Some("navigate")).await.unwrap();
        assert_eq!(r.status(), 403, "{rd}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("No one administers here")
                && body.contains("signed in as alice")
                && body.contains("/_auth/login/demo")
                && body.contains("href=\"/_auth/sign_out?rd="),
            "{rd}: {body}"
        );
    }
    // A path it admits them to, a public path, a request no one navigates.
    for (rd, mode) in [
        ("/private", None),
        // Public (`public_paths = ["/public"]`), whatever the rules say.
        ("/public/x", None),
        ("/admin/x", Some("no-cors")),
    ] {
        let r = page(&s, rd.into(), true, mode).await.unwrap();
        assert_eq!(r.status(), 200, "{rd} {mode:?}");
        let body = r.text().await.unwrap();
        assert!(usual(&body), "{rd}: {body}");
    }
}

pub(crate) fn users_cli(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("users")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn users_cli_lists_shows_disables_enables_and_unlinks() {
    let mut s = Setup::start().await;
    assert_eq!(s.sign_in().await.status(), 302);
    let cookie = s.jar.header();
    // A replica that trusts its cache for one second only.
    let port = free_port();
    let short = s
        .config
        .replace("[session]", "[session]\nidentity_cache_ttl = \"1s\"")
        .replace(&s.gw.addr.to_string(), &format!("127.0.0.1:{port}"));
    let gw2 = Gateway::start_full(&short);
    let file = crate::support::config_file(&short);
    let get = |url: String| {
        let c = s.client.clone();
        let cookie = cookie.clone();
        async move {
            c.get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(gw2.url("/private")).await, 200);

    let (code, out, err) = users_cli(&file.path, &["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["username"], "alice");
    assert_eq!(list[0]["groups"], json!(["admins", "staff"]));
    assert_eq!(list[0]["connections"][0]["source"], "demo");
    assert_eq!(list[0]["connections"][0]["identifier"], "alice");

    let (code, out, _) = users_cli(&file.path, &["show", "alice@example.com", "--json"]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["sessions"][0]["live"], true);
    assert_eq!(shown["sessions"][0]["id"].as_str().unwrap().len(), 8);

    let (code, _, err) = users_cli(&file.path, &["show", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no user `nobody`"), "{err}");

    let (code, out, err) = users_cli(&file.path, &["disable", "alice"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice is disabled"), "{out}");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        get(gw2.url("/private")).await,
        401,
        "the disabled user's session still works"
    );
    // Signing in again is refused while disabled.
    s.jar.0.clear();
    let r = s.sign_in().await;
    assert_eq!(r.status(), 403);
    let (code, _, _) = users_cli(&file.path, &["enable", "alice"]);
    assert_eq!(code, 0);
    s.jar.0.clear();
    assert_eq!(s.sign_in().await.status(), 302);

    let (code, out, _) = users_cli(&file.path, &["unlink", "alice", "demo"]);
    assert_eq!(code, 0);
    assert!(out.contains("connection to demo removed"), "{out}");
    let (code, _, err) = users_cli(&file.path, &["unlink", "alice", "demo"]);
    assert_eq!(code, 1);
    assert!(err.contains("no connection to source `demo`"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_oauth2_source_with_urls_set_by_hand() {
    // The provider's endpoints configured by hand: no discovery, no ID token trusted.
    let mut s = Setup::start_with(
        r#"type = "oauth2"
authorization_url = "ISSUER/authorize"
access_token_url = "ISSUER/token"
profile_url = "ISSUER/userinfo"
scopes = ["profile", "email"]
pkce = "plain"
authorize_params = { prompt = "select_account" }"#,
        |_| {},
    )
    .await;
    let r = s.sign_in().await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(s.users().await, 1);
    assert_eq!(s.provider.calls(Endpoint::Discovery), 0);
    assert_eq!(s.provider.calls(Endpoint::Jwks), 0);
    let q = s.provider.last_authorize_query().unwrap();
    assert_eq!(
        q.get("prompt").map(String::as_str),
        Some("select_account"),
        "authorize_params"
    );
    assert_eq!(
        q.get("code_challenge_method").map(String::as_str),
        Some("plain")
    );
    assert!(!q.contains_key("nonce"), "no nonce without openid");
    let r = s
        .client
        .get(s.gw.url("/private"))
        .header("cookie", s.jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.upstream.requests();
    assert_eq!(
        seen.last().unwrap().header("x-forwarded-user"),
        Some("alice")
    );
}

/// Two providers behind one gateway: `first` and `second`, the latter with `second_extra`.
async fn two_sources(second_extra: &str) -> (Setup, Provider) {
    two_sources_with("", second_extra).await
}

/// As [`two_sources`], with `first_extra` ending the first source's table.
async fn two_sources_with(first_extra: &str, second_extra: &str) -> (Setup, Provider) {
    two_sources_where(first_extra, |second| {
        format!(
            "type = \"openidconnect\"\noidc_well_known_url = \"{}\"\n{second_extra}",
            second.well_known_url()
        )
    })
    .await
}

/// As [`two_sources_with`], the second source's type and URLs written by `second`.
async fn two_sources_where(
    first_extra: &str,
    second_rest: impl Fn(&Provider) -> String,
) -> (Setup, Provider) {
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let mut providers = Vec::new();
    for slug in ["first", "second"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg =
            portcullis::demo::ProviderConfig::example(&format!("{public}/_auth/callback/{slug}"))
                .unwrap();
        let p = portcullis::demo::provider::start(listener, cfg).await;
        p.set_faults(|f| f.auto_approve_as = Some("alice".into()));
        providers.push(p);
    }
    let second = providers.pop().unwrap();
    let first = providers.pop().unwrap();
    let upstream = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/portcullis.db", dir.path().display());
    let source = |slug: &str, p: &Provider, rest: &str| {
        let c = &p.config().clients[0];
        format!(
            "[[source]]\nslug = \"{slug}\"\nconsumer_key = \"{}\"\nconsumer_secret = \"{}\"\n{rest}\n",
            c.client_id, c.client_secret,
        )
    };
    let first_rest = format!(
        "type = \"openidconnect\"\noidc_well_known_url = \"{}\"\n{first_extra}",
        first.well_known_url()
    );
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"{public}\"\nthreads = 1\nshutdown_timeout = \"2s\"\n\
         [session]\nsecrets = [\"{SECRET}\"]\n[store]\nurl = \"{db}\"\n{}{}[[app]]\nname = \"app\"\nupstream = \"{}\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        source("first", &first, &first_rest),
        source("second", &second, &second_rest(&second)),
        upstream.url()
    );
    let gw = Gateway::start_full(&config);
    let setup = Setup {
        provider: first,
        gw,
        upstream,
        db,
        jar: Jar::default(),
        client: client(),
        config,
        clock: portcullis::clock::Clock::system(),
        manual: None,
        _dir: dir,
    };
    (setup, second)
}

impl Setup {
    /// Starts `path` (login or link) for `slug` and follows the provider back.
    async fn flow(&mut self, path: &str) -> reqwest::Response {
        let start = self.get(&self.gw.url(path)).await;
        assert_eq!(start.status(), 302, "{path}");
        let authorize = start.headers()["location"].to_str().unwrap().to_string();
        let back = self.get(&authorize).await;
        let callback = back.headers()["location"].to_str().unwrap().to_string();
        self.get(&callback).await
    }

    async fn connections(&self) -> u64 {
        let store = portcullis::identity::store::open(&self.db).await.unwrap();
        store.counts().await.unwrap().connections
    }
}

/// OA2-13 and OA2-15: the callback's redirect is a clean same-origin
/// `Location`: whitespace as written falls back to `/`, a non-ASCII path
/// is percent-encoded (a header carries visible ASCII only; before, the
/// 302 went out with no `Location` at all), an encoded space is kept.
#[tokio::test(flavor = "multi_thread")]
async fn oa2_13_the_callback_lands_on_a_clean_same_origin_location() {
    let mut s = Setup::start().await;
    for (rd, want) in [
        ("/%20/evil", "/"),
        ("%2F%C3%A9%3Fq%3D%C3%A9", "/%C3%A9?q=%C3%A9"),
        ("/docs/my%2520file", "/docs/my%20file"),
        // nginx's `rd=$request_uri`, unencoded: `+` arrives as a space.
        ("/search?q=a+b", "/search?q=a%20b"),
    ] {
        let done = s.flow(&format!("/_auth/login/demo?rd={rd}")).await;
        assert_eq!(done.status(), 302, "{rd}");
        assert_eq!(
            done.headers().get("location").map(|v| v.to_str().unwrap()),
            Some(want),
            "{rd}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_in_user_links_a_second_source_and_signs_in_with_either() {
    let (mut s, _second) = two_sources("").await;
    assert_eq!(s.flow("/_auth/login/first").await.status(), 302);
    assert_eq!((s.users().await, s.connections().await), (1, 1));
    // Linking needs a session: anonymous gets the sign-in redirect.
    let anon = s
        .client
        .get(s.gw.url("/_auth/link/second"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 302);
    assert!(anon.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/_auth/sign_in"));
    let r = s.flow("/_auth/link/second").await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!((s.users().await, s.connections().await), (1, 2));
    // A fresh browser signing in through the second source is the same user.
    s.jar.0.clear();
    assert_eq!(s.flow("/_auth/login/second").await.status(), 302);
    assert_eq!(s.users().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn email_link_links_a_verified_email_and_email_deny_refuses() {
    // alice's email is verified by the demo provider.
    let (mut s, _second) = two_sources("user_matching_mode = \"email_link\"").await;
    assert_eq!(s.flow("/_auth/login/first").await.status(), 302);
    s.jar.0.clear();
    assert_eq!(s.flow("/_auth/login/second").await.status(), 302);
    assert_eq!((s.users().await, s.connections().await), (1, 2));

    let (mut s, _second) = two_sources("user_matching_mode = \"email_deny\"").await;
    assert_eq!(s.flow("/_auth/login/first").await.status(), 302);
    s.jar.0.clear();
    let r = s.flow("/_auth/login/second").await;
    assert_eq!(r.status(), 403);
    assert!(session_cookies_set(&r).is_empty());
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("A user with this email already exists"));
    assert_eq!((s.users().await, s.connections().await), (1, 1));
}

/// `email_link` does not link on an email its source does not vouch for: it
/// enrolls a new user, and the callback still answers with an immediate
/// redirect (SECURITY.md OA2-15), never a page in between.
#[tokio::test(flavor = "multi_thread")]
async fn email_link_with_an_unverified_email_enrolls_and_still_redirects_at_once() {
    // bob's email is unverified at both providers; the first source trusts it.
    let (mut s, second) =
        two_sources_with("trust_email = true", "user_matching_mode = \"email_link\"").await;
    s.provider
        .set_faults(|f| f.auto_approve_as = Some("bob".into()));
    second.set_faults(|f| f.auto_approve_as = Some("bob".into()));
    assert_eq!(s.flow("/_auth/login/first").await.status(), 302);
    s.jar.0.clear();
    let r = s.flow("/_auth/login/second?rd=/private").await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.headers()["location"], "/private");
    assert_eq!(session_cookies_set(&r).len(), 1);
    assert_eq!((s.users().await, s.connections().await), (2, 2));
}

/// Enrolls `name` through `first` straight into the store at `db`, holding
/// `email` unvouched (with a session of its own).
async fn enroll_unvouched(db: &str, name: &str, email: &str) {
    let store = portcullis::identity::store::open(db).await.unwrap();
    let who = portcullis::identity::Identity {
        source: "first".into(),
        identifier: name.into(),
        username: Some(name.into()),
        email: Some(email.into()),
        email_verified: false,
        name: None,
        groups: Vec::new(),
    };
    let session = portcullis::identity::NewSession {
        id: format!("{name}-session"),
        source: "first".into(),
        expires_at: i64::MAX / 2,
        oidc_sid: None,
        id_token: None,
        claims: None,
        tokens: None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    store.enroll(&who, &session, now).await.unwrap();
}

/// `email_link` does not use a match of an email its source does not vouch
/// for, however many users hold it: bob enrolls with the note rather than being
/// refused as "several users have this email".
#[tokio::test(flavor = "multi_thread")]
async fn email_link_with_an_unverified_email_held_by_several_users_enrolls() {
    let (mut s, second) = two_sources_with("", "user_matching_mode = \"email_link\"").await;
    s.provider
        .set_faults(|f| f.auto_approve_as = Some("bob".into()));
    second.set_faults(|f| f.auto_approve_as = Some("bob".into()));
    assert_eq!(s.flow("/_auth/login/first").await.status(), 302);
    // A second holder of bob's address, unvouched as his own.
    enroll_unvouched(&s.db, "robert", "bob@example.com").await;
    s.jar.0.clear();
    let r = s.flow("/_auth/login/second?rd=/private").await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.headers()["location"], "/private");
    assert_eq!((s.users().await, s.connections().await), (3, 3));
}

/// DESIGN: `email_link` links "to the user with that email" when the source
/// signing in vouches for it: also to a user whose own source never did
/// (README: the pre-account takeover this allows, and how to avoid it).
#[tokio::test(flavor = "multi_thread")]
async fn email_link_links_to_the_user_with_that_email_even_one_its_source_did_not_vouch_for() {
    // bob's email is unverified at both providers; only the second source trusts it.
    let (mut s, second) = two_sources_with(
        "",
        "user_matching_mode = \"email_link\"\ntrust_email = true",
    )
    .await;
    s.provider
        .set_faults(|f| f.auto_approve_as = Some("bob".into()));
    second.set_faults(|f| f.auto_approve_as = Some("bob".into()));
    assert_eq!(s.flow("/_auth/login/first").await.status(), 302);
    s.jar.0.clear();
    assert_eq!(s.flow("/_auth/login/second").await.status(), 302);
    assert_eq!((s.users().await, s.connections().await), (1, 2));
}

/// When several users hold the email, `email_link` takes the one whose
/// source vouched for it: a squatter who claimed alice's address unverified
/// does not lock alice out of a new source (the match is not ambiguous).
#[tokio::test(flavor = "multi_thread")]
async fn email_link_prefers_the_holder_whose_email_was_vouched_for_over_a_squatter() {
    // `first` enrolls alice (her email vouched for); `second` links by email.
    let (mut s, _second) = two_sources_with("", "user_matching_mode = \"email_link\"").await;
    assert_eq!(s.flow("/_auth/login/first").await.status(), 302);
    // A squatter, enrolled through `first` with alice's address unvouched.
    enroll_unvouched(&s.db, "mallory", "ALICE@example.com").await;
    assert_eq!(s.users().await, 2);
    // alice through `second` links to alice, not to nobody and not refused.
    s.jar.0.clear();
    let r = s.flow("/_auth/login/second").await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!((s.users().await, s.connections().await), (2, 3));
    assert_eq!(s.userinfo().await["user"], "alice");
}

/// DESIGN: `email_deny` refuses "if one exists": a user holding that email
/// unverified (bob's provider does not vouch for it) counts too.
#[tokio::test(flavor = "multi_thread")]
async fn email_deny_refuses_an_email_an_existing_user_holds_unverified() {
    let (mut s, second) = two_sources("user_matching_mode = \"email_deny\"").await;
    s.provider
        .set_faults(|f| f.auto_approve_as = Some("bob".into()));
    second.set_faults(|f| f.auto_approve_as = Some("bob".into()));
    assert_eq!(s.flow("/_auth/login/first").await.status(), 302);
    s.jar.0.clear();
    let r = s.flow("/_auth/login/second").await;
    assert_eq!(r.status(), 403);
    assert!(session_cookies_set(&r).is_empty());
    assert_eq!((s.users().await, s.connections().await), (1, 1));
}

/// `users` in a source rule names local users, as in access rules: after
/// `users rename`, the rule on the new name refuses her and the provider's
/// name (which may be one its holder chose) no longer matches.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_rule_s_users_names_the_local_user_not_the_provider_s_name() {
    let mut s = Setup::start_with(
        "[[source.policy]]\non = [\"authenticate\"]\neffect = \"deny\"\nusers = [\"lovelace\"]\nmessage = \"lovelace is suspended\"",
        |_| {},
    )
    .await;
    assert_eq!(s.sign_in().await.status(), 302);
    let store = portcullis::identity::store::open(&s.db).await.unwrap();
    let (user, _) = store.list_users().await.unwrap().remove(0);
    assert_eq!(user.username, "alice");
    assert!(store.rename_user(&user.id, "lovelace").await.unwrap());
    s.jar = Jar::default();
    let r = s.sign_in().await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("lovelace is suspended"));
    assert!(session_cookies_set(&s.sign_in().await).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn source_policies_refuse_enrollment_and_app_policies_refuse_access() {
    // A deny rule on enroll for alice's domain: refused, nothing written.
    let mut s = Setup::start_with(
        "[[source.policy]]\non = [\"enroll\"]\neffect = \"deny\"\nemail_domains = [\"example.com\"]\nmessage = \"example.com accounts must be created by an administrator\"",
        |_| {},
    )
    .await;
    let r = s.sign_in().await;
    assert_eq!(r.status(), 403);
    assert!(session_cookies_set(&r).is_empty());
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("example.com accounts must be created by an administrator"));
    assert_eq!(s.users().await, 0);

    // An allow rule with a CEL expression over the claims: alice (verified email) may enroll.
    let mut s = Setup::start_with(
        "[[source.policy]]\non = [\"enroll\", \"authenticate\"]\neffect = \"allow\"\nexpression = \"claims.email_verified == true && 'staff' in claims.groups\"",
        |_| {},
    )
    .await;
    assert_eq!(s.sign_in().await.status(), 302);

    // App access: only the `ops` group under /admin; alice (admins, staff) is refused there.
    let port = free_port();
    let guarded = s.config.replace(&s.gw.addr.to_string(), &format!("127.0.0.1:{port}"))
        + "\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\ngroups = [\"ops\"]\npath_prefix = \"/admin\"\nmessage = \"Only ops may administer\"\n";
    let gw2 = Gateway::start_full(&guarded);
    let cookie = s.jar.header();
    let r = s
        .client
        .get(gw2.url("/admin/users"))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Only ops may administer"));
    let r = s
        .client
        .get(gw2.url("/admin/users"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    let r = s
        .client
        .get(gw2.url("/wiki"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = s
        .upstream
        .requests()
        .iter()
        .filter(|r| r.uri.starts_with("/admin"))
        .count();
    assert_eq!(before, 0, "a refused request reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn backchannel_logout_revokes_the_provider_session_and_refuses_bad_tokens() {
    let mut s = Setup::start().await;
    assert_eq!(s.sign_in().await.status(), 302);
    let cookie = s.jar.header();
    let store = portcullis::identity::store::open(&s.db).await.unwrap();
    let (user, _) = store.list_users().await.unwrap().remove(0);
    let sid = store.user_sessions(&user.id).await.unwrap()[0]
        .oidc_sid
        .clone()
        .expect("the provider's sid was not recorded");
    let client_id = s.provider.config().clients[0].client_id.clone();
    let now = jsonwebtoken::get_current_timestamp();
    let token = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut c = serde_json::Map::new();
        c.insert("iss".into(), json!(s.provider.issuer()));
        c.insert("aud".into(), json!(client_id));
        c.insert("iat".into(), json!(now));
        c.insert("jti".into(), json!(format!("j-{}", rand::random::<u64>())));
        c.insert("sid".into(), json!(sid));
        c.insert(
            "events".into(),
            json!({"http://schemas.openid.net/event/backchannel-logout": {}}),
        );
        f(&mut c);
        s.provider.sign(&c).unwrap()
    };
    let post = |t: String| {
        let c = s.client.clone();
        let url = s.gw.url("/_auth/backchannel_logout/demo");
        async move {
            c.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("logout_token={t}"))
                .send()
                .await
                .unwrap()
        }
    };
    let still_in = || {
        let c = s.client.clone();
        let url = s.gw.url("/private");
        let cookie = cookie.clone();
        async move {
            c.get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                == 200
        }
    };
    // Invalid tokens: 400, nothing revoked.
    for (name, t) in [
        (
            "nonce",
            token(&|c| {
                c.insert("nonce".into(), json!("n"));
            }),
        ),
        (
            "no events",
            token(&|c| {
                c.remove("events");
            }),
        ),
        (
            "no jti",
            token(&|c| {
                c.remove("jti");
            }),
        ),
        (
            "a jti that is no string",
            token(&|c| {
                c.insert("jti".into(), json!(7));
            }),
        ),
        (
            "wrong aud",
            token(&|c| {
                c.insert("aud".into(), json!("other"));
            }),
        ),
        (
            "wrong iss",
            token(&|c| {
                c.insert("iss".into(), json!("https://evil.example"));
            }),
        ),
        (
            "no sid or sub",
            token(&|c| {
                c.remove("sid");
            }),
        ),
    ] {
        let r = post(t).await;
        assert_eq!(r.status(), 400, "{name}");
        assert!(still_in().await, "{name} revoked the session");
    }
    s.provider.set_faults(|f| f.bad_signature = true);
    assert_eq!(post(token(&|_| {})).await.status(), 400, "bad signature");
    s.provider.set_faults(|f| f.bad_signature = false);
    assert!(still_in().await);
    // A valid one while the store cannot write: 503, and its retry is
    // not taken for a replay (nothing was revoked).
    let good = token(&|_| {});
    {
        use sqlx::ConnectOptions as _;
        let mut lock =
            s.db.parse::<sqlx::sqlite::SqliteConnectOptions>()
                .unwrap()
                .connect()
                .await
                .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut lock)
            .await
            .unwrap();
        assert_eq!(post(good.clone()).await.status(), 503, "store locked");
        sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
        // A revocation that fails after the token id was written: neither
        // stays, so the retry is heard (not taken for a replay).
        sqlx::query(
            "CREATE TRIGGER no_revoke BEFORE UPDATE ON sessions \
             BEGIN SELECT RAISE(ABORT, 'no revocation now'); END",
        )
        .execute(&mut lock)
        .await
        .unwrap();
        assert_eq!(post(good.clone()).await.status(), 503, "revocation failed");
        sqlx::query("DROP TRIGGER no_revoke")
            .execute(&mut lock)
            .await
            .unwrap();
    }
    assert!(still_in().await);
    // Then it revokes the session with that sid; its replay is refused.
    assert_eq!(post(good.clone()).await.status(), 200);
    assert!(
        !still_in().await,
        "the session survived the back-channel logout"
    );
    assert_eq!(post(good.clone()).await.status(), 400);
    // On another replica of the same store too: a `jti` is spent everywhere.
    let other = s.replica_trusting_loopback();
    other.ready().await;
    let r = s
        .client
        .post(other.url("/_auth/backchannel_logout/demo"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a replay on another replica was accepted");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error_description"], "logout token replayed");
}

/// A client that waits past the gateway's 10 s outbound timeout.
fn patient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `url` with query parameter `name` set to `value` (or removed).
fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let mut pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some(v) = value {
        pairs.push((name.to_string(), v.to_string()));
    }
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

/// Everything the process logs from the first call on, as JSON lines: the
/// gateway runs in-process, so its events land here.
fn captured_log() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogSink(sink.clone()))
            .finish();
        // Another test binary's subscriber would win; this one only has ours.
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct LogSink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The request id an error page shows.
fn page_request_id(page: &str) -> String {
    let (_, rest) = page
        .split_once("Request id: <code>")
        .unwrap_or_else(|| panic!("no request id on the page: {page}"));
    rest.split_once("</code>").unwrap().0.to_string()
}

impl Setup {
    /// Starts a login (or link) at `path` and follows the provider back;
    /// returns the callback URL without visiting it.
    async fn reach_callback(&mut self, path: &str) -> String {
        let start = self.get(&self.gw.url(path)).await;
        assert_eq!(start.status(), 302, "{path}");
        let authorize = start.headers()["location"].to_str().unwrap().to_string();
        let back = self.get(&authorize).await;
        assert_eq!(back.status(), 302, "provider authorize");
        back.headers()["location"].to_str().unwrap().to_string()
    }

    /// Each user's name and the sources connected to them, by username.
    async fn directory(&self) -> Vec<(String, Vec<String>)> {
        let store = portcullis::identity::store::open(&self.db).await.unwrap();
        store
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|(u, c)| (u.username, c.into_iter().map(|c| c.source).collect()))
            .collect()
    }

    async fn userinfo(&self) -> serde_json::Value {
        self.client
            .get(self.gw.url("/_auth/userinfo"))
            .header("cookie", self.jar.header())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ses08_a_planted_session_does_not_capture_the_victims_identity() {
    let (mut s, second) = two_sources("").await;
    second.set_faults(|f| f.auto_approve_as = Some("bob".into()));
    // The attacker (alice at the first source) signs in and keeps the cookie.
    assert_eq!(s.flow("/_auth/login/first").await.status(), 302);
    let planted = s.jar.get("portcullis").unwrap().to_string();
    // The victim's browser carries the attacker's session; the victim signs
    // in through the second source as bob.
    s.jar = Jar(vec![("portcullis".into(), planted.clone())]);
    let r = s.flow("/_auth/login/second").await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    // bob's identity is his own user's, not linked to alice.
    assert_eq!(
        s.directory().await,
        vec![
            ("alice".to_string(), vec!["first".to_string()]),
            ("bob".to_string(), vec!["second".to_string()]),
        ]
    );
    // The victim's browser now holds a session of their own.
    let mine = s.jar.get("portcullis").unwrap().to_string();
    assert_ne!(mine, planted);
    assert_eq!(s.userinfo().await["user"], "bob");
}

/// DESIGN step 2 links only while the session that started the link flow
/// "is still the browser's"; otherwise the callback is an ordinary sign-in
/// (step 3): the identity is never linked to a session that changed or
/// ended, and signs in as itself.
#[tokio::test(flavor = "multi_thread")]
async fn ses08_a_link_flow_whose_session_changed_or_ended_links_nothing() {
    let (mut s, second) = two_sources("").await;
    second.set_faults(|f| f.auto_approve_as = Some("bob".into()));
    assert_eq!(s.flow("/_auth/login/first").await.status(), 302);
    // Link started, then the browser signs in afresh before the callback:
    // another session than the one the link was bound to.
    let callback = s.reach_callback("/_auth/link/second").await;
    assert_eq!(s.flow("/_auth/login/first").await.status(), 302);
    let r = s.get(&callback).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(session_cookies_set(&r).len(), 1);
    // bob enrolled as himself: two users, alice's account untouched.
    assert_eq!((s.users().await, s.connections().await), (2, 2));
    assert_eq!(s.userinfo().await["user"], "bob");
    // Link started, then the session is gone from the browser: bob signs in as bob.
    assert_eq!(s.flow("/_auth/login/first").await.status(), 302);
    let callback = s.reach_callback("/_auth/link/second").await;
    s.jar.0.retain(|(n, _)| n != "portcullis");
    let r = s.get(&callback).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!((s.users().await, s.connections().await), (2, 2));
    assert_eq!(s.userinfo().await["user"], "bob");
    let directory = s.directory().await;
    assert!(
        directory.iter().all(|(_, sources)| sources.len() == 1),
        "an identity was linked: {directory:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oa2_23_two_tabs_finished_in_reverse_order_both_sign_in() {
    let mut s = Setup::start().await;
    let first = s.reach_callback("/_auth/login/demo?rd=/one").await;
    let second = s.reach_callback("/_auth/login/demo?rd=/two").await;
    let logins = s
        .jar
        .0
        .iter()
        .filter(|(n, _)| n.starts_with("portcullis_login-"))
        .count();
    assert_eq!(logins, 2, "{:?}", s.jar);
    let r = s.get(&second).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.headers()["location"], "/two");
    // The first tab's login cookie is still there, and never reaches the app.
    let r = s
        .client
        .get(s.gw.url("/private"))
        .header("cookie", format!("{}; other=1", s.jar.header()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.upstream.requests().last().unwrap().header("cookie"),
        Some("other=1")
    );
    let r = s.get(&first).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(r.headers()["location"], "/one");
    assert!(
        !s.jar
            .0
            .iter()
            .any(|(n, _)| n.starts_with("portcullis_login")),
        "{:?}",
        s.jar
    );
    assert_eq!(s.users().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn oa2_23_a_sixth_login_drops_the_oldest_and_the_other_five_work() {
    let mut s = Setup::start().await;
    let mut callbacks = Vec::new();
    for i in 0..6 {
        callbacks.push(
            s.reach_callback(&format!("/_auth/login/demo?rd=/{i}"))
                .await,
        );
    }
    let logins = s
        .jar
        .0
        .iter()
        .filter(|(n, _)| n.starts_with("portcullis_login-"))
        .count();
    assert_eq!(logins, 5, "{:?}", s.jar);
    let r = s.get(&callbacks[0]).await;
    assert_eq!(r.status(), 400);
    assert!(session_cookies_set(&r).is_empty());
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("not started in this browser"));
    assert_eq!(s.provider.calls(Endpoint::Token), 0);
    for (i, callback) in callbacks.iter().enumerate().skip(1) {
        let r = s.get(callback).await;
        assert_eq!(r.status(), 302, "tab {i}");
        assert_eq!(r.headers()["location"], format!("/{i}").as_str());
    }
    assert_eq!(s.provider.calls(Endpoint::Token), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_endpoint_transport_error_shows_no_internals_but_a_request_id() {
    let log = captured_log();
    // A token endpoint nobody listens on: connection refused.
    let port = free_port();
    let mut s = Setup::start_with(
        &format!("access_token_url = \"http://127.0.0.1:{port}/token\""),
        |_| {},
    )
    .await;
    let r = s.sign_in().await;
    assert_eq!(r.status(), 502);
    assert!(session_cookies_set(&r).is_empty());
    let page = r.text().await.unwrap();
    for internal in [
        port.to_string().as_str(),
        "127.0.0.1",
        "http://",
        "/token",
        "error sending request",
        "onnect",
        "Connection refused",
    ] {
        assert!(!page.contains(internal), "{internal:?} in {page}");
    }
    assert!(
        page.contains("The provider did not answer properly."),
        "{page}"
    );
    let id = page_request_id(&page);
    assert_eq!(id.len(), 12, "{id}");
    assert_eq!(s.users().await, 0);
    // The detail is in the log, under the id the page shows.
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let refusal = logged
        .lines()
        .find(|l| l.contains("sign-in refused") && l.contains(&id))
        .unwrap_or_else(|| panic!("no log line with request id {id}"));
    assert!(refusal.contains(&format!("127.0.0.1:{port}")), "{refusal}");
    let access = logged
        .lines()
        .find(|l| {
            l.contains("portcullis::access") && l.contains(&format!("\"request_id\":\"{id}\""))
        })
        .unwrap_or_else(|| panic!("no access line with request id {id}"));
    assert!(access.contains("\"status\":502"), "{access}");
    // An API client gets the same in JSON: the id, no internals.
    let callback = s.reach_callback("/_auth/login/demo").await;
    let r = s
        .client
        .get(&callback)
        .header("cookie", s.jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_gateway");
    assert_eq!(
        body["error_description"],
        "The provider did not answer properly."
    );
    let other = body["request_id"].as_str().unwrap();
    assert_eq!(other.len(), 12);
    assert_ne!(other, id);
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oa2_16_oa2_18_token_endpoint_oddities_are_502_and_a_hang_is_504() {
    for broken in [
        Broken::ErrorIn200,
        Broken::Html,
        Broken::Oversize,
        Broken::Status(500),
        Broken::Status(503),
    ] {
        refused(|f| f.token_answer = Some(broken), 502, 0).await;
    }
    refused(|f| f.token_type = Some("mac".into()), 502, 0).await;
    refused(|f| f.token_answer = Some(Broken::Hang), 504, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oa2_16_token_type_bearer_is_accepted_in_any_case() {
    for kind in ["bearer", "BEARER"] {
        let mut s = Setup::start_with("", |f| f.token_type = Some(kind.into())).await;
        assert_eq!(s.sign_in().await.status(), 302, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc22_userinfo_timeout_5xx_non_json_and_oversize_fail_closed() {
    for broken in [Broken::Status(500), Broken::Html, Broken::Oversize] {
        refused(|f| f.userinfo_answer = Some(broken), 502, 1).await;
    }
    refused(|f| f.userinfo_answer = Some(Broken::Hang), 504, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oa2_06_an_injected_code_is_traded_with_the_victims_verifier_and_refused() {
    let mut s = Setup::start().await;
    // The attacker runs a flow of their own and keeps its code.
    let attackers = s.reach_callback("/_auth/login/demo").await;
    let code = url::Url::parse(&attackers)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    // The victim's browser: its own flow, the attacker's code injected.
    s.jar = Jar::default();
    let victims = s.reach_callback("/_auth/login/demo").await;
    let challenge = s.provider.last_authorize_query().unwrap()["code_challenge"].clone();
    let injected = with_param(&victims, "code", Some(&code));
    let r = s.get(&injected).await;
    assert_eq!(r.status(), 400);
    assert!(session_cookies_set(&r).is_empty());
    // One token call, carrying the victim's verifier; no retry without it.
    assert_eq!(s.provider.calls(Endpoint::Token), 1);
    let form = s.provider.last_token_request().unwrap().form;
    assert_eq!(form["code"], code);
    assert_eq!(
        portcullis::source::flow::pkce_s256(&form["code_verifier"]),
        challenge
    );
    assert_eq!(s.users().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn oa2_08_a_response_without_the_promised_iss_is_refused_before_any_token_call() {
    let mut s = Setup::start_with("", |f| f.omit_response_iss = true).await;
    let r = s.sign_in().await;
    assert_eq!(r.status(), 400);
    assert!(session_cookies_set(&r).is_empty());
    assert_eq!(s.provider.calls(Endpoint::Token), 0);
    assert_eq!(s.users().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn oa2_07_oa2_10_oa2_11_foreign_iss_and_ambiguous_responses_are_400_without_a_token_call() {
    let mut s = Setup::start().await;
    let callback = s.reach_callback("/_auth/login/demo").await;
    let saved = s.jar.clone();
    let cases = [
        (
            "OA2-07 foreign iss",
            with_param(&callback, "iss", Some("https://evil.example")),
        ),
        ("OA2-11 code twice", format!("{callback}&code=again")),
        (
            "OA2-11 code and error",
            format!("{callback}&error=access_denied"),
        ),
        ("OA2-11 iss twice", format!("{callback}&iss=x")),
    ];
    for (name, url) in cases {
        s.jar = saved.clone();
        let r = s.get(&url).await;
        assert_eq!(r.status(), 400, "{name}");
        assert!(session_cookies_set(&r).is_empty(), "{name}");
    }
    // OA2-10: an error response with a foreign iss is not attributed to the provider.
    let mut s = Setup::start_with("", |f| f.authorize_error = Some("access_denied".into())).await;
    let callback = s.reach_callback("/_auth/login/demo").await;
    let r = s
        .get(&with_param(&callback, "iss", Some("https://evil.example")))
        .await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(page.contains("does not belong to this sign-in"), "{page}");
    assert!(!page.contains("access_denied"), "{page}");
    assert_eq!(s.provider.calls(Endpoint::Token), 0);
    assert_eq!(s.users().await, 0);
}

/// OA2-09: a plain OAuth 2.0 source knows no issuer to compare an `iss`
/// with, but one naming another configured source's issuer is a mix-up:
/// refused (400) before any token call; without it the sign-in goes on.
#[tokio::test(flavor = "multi_thread")]
async fn oa2_09_an_oauth2_callback_carrying_another_source_s_iss_is_refused() {
    let (mut s, second) = two_sources_where("", |p| {
        let i = p.issuer();
        format!(
            "type = \"oauth2\"\nauthorization_url = \"{i}/authorize\"\n\
             access_token_url = \"{i}/token\"\nprofile_url = \"{i}/userinfo\"\n\
             scopes = [\"openid\", \"email\", \"profile\"]"
        )
    })
    .await;
    let callback = s.reach_callback("/_auth/login/second").await;
    let saved = s.jar.clone();
    let r = s
        .get(&with_param(&callback, "iss", Some(&s.provider.issuer())))
        .await;
    assert_eq!(r.status(), 400);
    assert!(session_cookies_set(&r).is_empty());
    assert_eq!(second.calls(Endpoint::Token), 0);
    s.jar = saved;
    let r = s.get(&callback).await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(second.calls(Endpoint::Token), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn oa2_05_oa2_12_oa2_14_oa2_15_flow_values_redirect_uri_and_the_return_target() {
    let mut s = Setup::start().await;
    // OA2-12: a spoofed forwarded host does not change the redirect_uri.
    let start = s
        .client
        .get(s.gw.url("/_auth/login/demo?rd=/back"))
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    s.jar.absorb(&start);
    let authorize = start.headers()["location"].to_str().unwrap().to_string();
    let q = url::Url::parse(&authorize).unwrap();
    let q: std::collections::HashMap<String, String> = q.query_pairs().into_owned().collect();
    let public = s
        .config
        .split("public_url = \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(q["redirect_uri"], format!("{public}/_auth/callback/demo"));
    // OA2-05: state and verifier carry 256 random bits; the method is S256.
    assert_eq!(q["state"].len(), 43);
    assert_eq!(q["code_challenge_method"], "S256");
    let back = s.get(&authorize).await;
    let callback = back.headers()["location"].to_str().unwrap().to_string();
    // OA2-14: a return target in the callback's query is ignored.
    let r = s
        .get(&format!("{callback}&rd=https%3A%2F%2Fevil.example%2F"))
        .await;
    assert_eq!(r.status(), 302);
    // OA2-15: straight to a clean URL, no referrer.
    assert_eq!(r.headers()["location"], "/back");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let verifier = &s.provider.last_token_request().unwrap().form["code_verifier"];
    assert_eq!(verifier.len(), 43);
    assert_ne!(verifier, &q["state"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc14_an_id_token_signed_with_an_algorithm_the_provider_does_not_list_is_refused() {
    // The provider says it signs with ES256 only; an RS256 token is refused.
    refused(|f| f.advertised_algs = Some(vec!["ES256".into()]), 401, 0).await;
    // The listed algorithm is accepted.
    let mut s = Setup::start_with("", |f| {
        f.advertised_algs = Some(vec!["ES256".into()]);
        f.alg = SignAlg::ES256;
    })
    .await;
    assert_eq!(s.sign_in().await.status(), 302);
}

/// A session counts only for the apps that offer the source it was signed in
/// through: an app beside it on the same host (another path prefix) that
/// offers other sources sends the person to sign in.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_opens_only_apps_that_offer_its_source() {
    let mut s = Setup::start_with_apps(
        "",
        "[[app]]\nname = \"other\"\npath_prefix = \"/other\"\nupstream = \"http://127.0.0.1:9\"\nsources = []\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        |_| {},
    )
    .await;
    assert_eq!(s.sign_in().await.status(), 302);
    let get = async |s: &Setup, path: &str| {
        s.client
            .get(s.gw.url(path))
            .header("cookie", s.jar.header())
            .header("accept", "text/html")
            .send()
            .await
            .unwrap()
    };
    // The app of the sign-in takes the session ...
    assert_eq!(get(&s, "/private").await.status(), 200);
    // ... the app that does not offer `demo` does not: sign in there first.
    let r = get(&s, "/other/page").await;
    assert_eq!(r.status(), 302);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with("/_auth/sign_in?rd="), "{to}");
}

/// Starts a sign-in, lets `at_provider` pass on the clock before the
/// provider answers, and follows it back; the callback's response.
async fn sign_in_taking(s: &mut Setup, at_provider: Duration) -> reqwest::Response {
    let start = s.get(&s.gw.url("/_auth/login/demo?rd=/private")).await;
    assert_eq!(start.status(), 302, "login start");
    let authorize = start.headers()["location"].to_str().unwrap().to_string();
    s.advance(at_provider);
    let back = s.get(&authorize).await;
    assert_eq!(back.status(), 302, "provider authorize");
    let callback = back.headers()["location"].to_str().unwrap().to_string();
    s.get(&callback).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_finished_within_ten_minutes_works_and_one_finished_later_is_refused_as_too_long()
{
    let mut s = Setup::start_on_manual_clock("", "", |_| {}).await;
    let r = sign_in_taking(&mut s, Duration::from_secs(599)).await;
    assert_eq!(r.status(), 302);
    assert_eq!(session_cookies_set(&r).len(), 1);
    assert_eq!(s.users().await, 1);

    s.jar.0.clear();
    let r = sign_in_taking(&mut s, Duration::from_secs(601)).await;
    assert_eq!(r.status(), 400);
    assert!(session_cookies_set(&r).is_empty(), "a session was set");
    let body = r.text().await.unwrap();
    assert!(body.contains("This sign-in took too long."), "{body}");
}
