//! Vendor presets end to end: for every `type = "<vendor>"`, a sign-in
//! through the gateway against that vendor's fake (its documented response
//! shapes) yields the expected identifier, username, email, name and groups.
//! Only the URLs are overridden (to point at the fake): scopes, client
//! authentication, PKCE, mapping and quirks come from the preset.

use portcullis_testkit::vendors::{
    expected, parse_form_post, start, Vendor, VendorFakes, APPLE_KEY_ID, APPLE_SERVICES_ID,
    APPLE_TEAM_ID, CLIENT_ID, CLIENT_SECRET,
};

use crate::signin::{session_cookies_set, Jar};
use crate::support::{client, free_port, Gateway, Upstream, SECRET};

fn source_table(v: Vendor, fakes: &VendorFakes, dir: &std::path::Path) -> String {
    let urls = fakes.urls(v);
    let mut t = format!("slug = \"{}\"\ntype = \"{}\"\n", v.slug(), v.slug());
    let line = |t: &mut String, k: &str, val: &str| t.push_str(&format!("{k} = \"{val}\"\n"));
    match v {
        Vendor::Apple => {
            line(&mut t, "consumer_key", APPLE_SERVICES_ID);
            line(&mut t, "team_id", APPLE_TEAM_ID);
            line(&mut t, "key_id", APPLE_KEY_ID);
            let key = dir.join("apple.p8");
            std::fs::write(&key, fakes.apple_p8_pem().unwrap()).unwrap();
            line(&mut t, "private_key_file", &key.display().to_string());
        }
        _ => {
            line(&mut t, "consumer_key", CLIENT_ID);
            line(&mut t, "consumer_secret", CLIENT_SECRET);
        }
    }
    match v {
        Vendor::Okta | Vendor::Keycloak | Vendor::Gitlab | Vendor::Mailcow => {
            line(&mut t, "base_url", &urls.base_url);
        }
        Vendor::EntraId | Vendor::Google | Vendor::Twitch => {
            line(
                &mut t,
                "oidc_well_known_url",
                urls.oidc_well_known_url.as_deref().unwrap(),
            );
            if v == Vendor::EntraId {
                line(&mut t, "tenant", "demo-tenant");
                line(&mut t, "profile_url", &urls.profile_url);
                t.push_str(
                    "scopes = [\"openid\", \"profile\", \"email\", \"User.Read\", \"GroupMember.Read.All\"]\n",
                );
            }
        }
        _ => {
            line(&mut t, "authorization_url", &urls.authorization_url);
            line(&mut t, "access_token_url", &urls.access_token_url);
            line(&mut t, "profile_url", &urls.profile_url);
            if let Some(jwks) = &urls.oidc_jwks_url {
                line(&mut t, "oidc_jwks_url", jwks);
            }
        }
    }
    if let Some(iss) = &urls.issuer {
        line(&mut t, "issuer", iss);
    }
    t
}

async fn sign_in_through(v: Vendor, fakes: &VendorFakes) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let db = format!("sqlite://{}/portcullis.db", dir.path().display());
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start_full(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"{public}\"\nthreads = 1\n\
         [session]\nsecrets = [\"{SECRET}\"]\n[store]\nurl = \"{db}\"\n\
         [[source]]\n{}\n[[app]]\nname = \"app\"\nupstream = \"{}\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        source_table(v, fakes, dir.path()),
        upstream.url()
    ));
    gw.ready().await;
    let mut jar = Jar::default();
    let get = async |jar: &mut Jar, url: &str| {
        let r = client()
            .get(url)
            .header("accept", "text/html")
            .header("cookie", jar.header())
            .send()
            .await
            .unwrap();
        jar.absorb(&r);
        r
    };
    let start = get(
        &mut jar,
        &gw.url(&format!("/_auth/login/{}?rd=/home", v.slug())),
    )
    .await;
    assert_eq!(
        start.status(),
        302,
        "{v:?} login: {}",
        start.text().await.unwrap_or_default()
    );
    let authorize = start.headers()["location"].to_str().unwrap().to_string();
    let back = get(&mut jar, &authorize).await;
    let done = if v == Vendor::Apple {
        // form_post: the provider's page POSTs the answer back, cross-site.
        assert_eq!(back.status(), 200, "{v:?} authorize");
        let login_cookie = jar.header();
        let (action, fields) = parse_form_post(&back.text().await.unwrap()).unwrap();
        let r = client()
            .post(action)
            .header("accept", "text/html")
            .header("cookie", login_cookie)
            .form(&fields)
            .send()
            .await
            .unwrap();
        jar.absorb(&r);
        r
    } else {
        assert_eq!(back.status(), 302, "{v:?} authorize");
        let callback = back.headers()["location"].to_str().unwrap().to_string();
        get(&mut jar, &callback).await
    };
    let status = done.status();
    let cookies = session_cookies_set(&done);
    // A form_post callback is answered 303 (See Other), a GET one 302.
    assert!(
        status == 302 || status == 303,
        "{v:?} callback {status}: {}",
        done.text().await.unwrap_or_default()
    );
    assert_eq!(cookies.len(), 1, "{v:?}: no session");

    let want = expected(v);
    let store = portcullis::identity::store::open(&db).await.unwrap();
    let users = store.list_users().await.unwrap();
    assert_eq!(users.len(), 1, "{v:?}");
    let (user, connections) = &users[0];
    assert_eq!(
        connections[0].identifier, want.identifier,
        "{v:?} identifier"
    );
    assert_eq!(connections[0].source, v.slug());
    match want.username {
        Some(u) => assert_eq!(user.username, u, "{v:?} username"),
        None => assert!(!user.username.is_empty(), "{v:?} username"),
    }
    assert_eq!(user.email.as_deref(), want.email, "{v:?} email");
    assert_eq!(user.name.as_deref(), want.name, "{v:?} name");
    let mut groups: Vec<&str> = want.groups.to_vec();
    groups.sort_unstable();
    assert_eq!(user.groups, groups, "{v:?} groups");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_vendor_preset_signs_in_with_the_expected_identity() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fakes = start(listener).await;
    for v in Vendor::ALL {
        sign_in_through(v, &fakes).await;
    }
}

// ---------------------------------------------------------------------------
// Slack and WeChat: fakes written from the vendors' documentation
// (`portcullis_testkit::slack`, `portcullis_testkit::wechat`), independent of the presets' tables.
// ---------------------------------------------------------------------------

use portcullis_testkit::slack::{self, SlackFake};
use portcullis_testkit::wechat::{self, WechatFake};

struct VendorGateway {
    gw: Gateway,
    db: String,
    _upstream: Upstream,
    _dir: tempfile::TempDir,
}

impl VendorGateway {
    async fn start(source: &str) -> VendorGateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let db = format!("sqlite://{}/portcullis.db", dir.path().display());
        let upstream = Upstream::start("app").await;
        let gw = Gateway::start_full(&format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:{port}\"\nthreads = 1\n\
             [session]\nsecrets = [\"{SECRET}\"]\n[store]\nurl = \"{db}\"\n\
             [[source]]\n{source}\n[[app]]\nname = \"app\"\nupstream = \"{}\"\n\
             [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
            upstream.url()
        ));
        gw.ready().await;
        VendorGateway {
            gw,
            db,
            _upstream: upstream,
            _dir: dir,
        }
    }

    /// The login redirect of `slug`: where the button sends the browser.
    async fn login_location(&self, slug: &str, jar: &mut Jar) -> String {
        let r = browser_get(jar, &self.gw.url(&format!("/_auth/login/{slug}?rd=/home"))).await;
        assert_eq!(r.status(), 302, "{slug} login");
        r.headers()["location"].to_str().unwrap().to_string()
    }

    /// A whole sign-in: the button, the vendor's page (auto-approved), the
    /// callback; the callback's response.
    async fn sign_in(&self, slug: &str) -> reqwest::Response {
        let mut jar = Jar::default();
        let authorize = self.login_location(slug, &mut jar).await;
        let back = browser_get(&mut jar, &authorize).await;
        assert_eq!(back.status(), 302, "{slug} authorize: {authorize}");
        let callback = back.headers()["location"].to_str().unwrap().to_string();
        browser_get(&mut jar, &callback).await
    }

    async fn users(
        &self,
    ) -> Vec<(
        portcullis::identity::User,
        Vec<portcullis::identity::Connection>,
    )> {
        let store = portcullis::identity::store::open(&self.db).await.unwrap();
        store.list_users().await.unwrap()
    }
}

async fn browser_get(jar: &mut Jar, url: &str) -> reqwest::Response {
    let r = client()
        .get(url)
        .header("accept", "text/html")
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    jar.absorb(&r);
    r
}

fn slack_source(fake: &SlackFake, extra: &str) -> String {
    format!(
        "slug = \"slack\"\ntype = \"slack\"\nconsumer_key = \"{}\"\nconsumer_secret = \"{}\"\n\
         authorization_url = \"{}\"\naccess_token_url = \"{}\"\nprofile_url = \"{}\"\noidc_jwks_url = \"{}\"\n{extra}",
        slack::CLIENT_ID,
        slack::CLIENT_SECRET,
        fake.url("/openid/connect/authorize"),
        fake.url("/api/openid.connect.token"),
        fake.url("/api/openid.connect.userInfo"),
        fake.url("/openid/connect/keys"),
    )
}

fn wechat_source(fake: &WechatFake) -> String {
    format!(
        "slug = \"wechat\"\ntype = \"wechat\"\nconsumer_key = \"{}\"\nconsumer_secret = \"{}\"\n\
         authorization_url = \"{}\"\naccess_token_url = \"{}\"\nprofile_url = \"{}\"\n",
        wechat::APPID,
        wechat::SECRET,
        fake.url("/connect/qrconnect"),
        fake.url("/sns/oauth2/access_token"),
        fake.url("/sns/userinfo"),
    )
}

async fn slack_fake() -> SlackFake {
    SlackFake::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).unwrap()
}

async fn wechat_fake() -> WechatFake {
    WechatFake::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).unwrap()
}

/// Asserts a refusal page: the status, HTML, no session cookie.
async fn assert_refused(done: reqwest::Response, status: u16) {
    assert_eq!(session_cookies_set(&done), Vec::<String>::new());
    assert_eq!(done.status(), status);
    assert!(done.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_signs_in_with_its_user_id_address_and_name_and_a_team_policy_sees_the_workspace() {
    let fake = slack_fake().await;
    // Only the demo person's workspace may sign in: the policy reads Slack's
    // namespaced team claim.
    let policy = format!(
        "[[source.policy]]\non = [\"enroll\", \"authenticate\"]\neffect = \"deny\"\n\
         expression = 'claims[\"https://slack.com/team_id\"] != \"{}\"'\n",
        slack::TEAM_ID
    );
    let g = VendorGateway::start(&slack_source(&fake, &policy)).await;
    let done = g.sign_in("slack").await;
    assert_eq!(session_cookies_set(&done).len(), 1);
    assert_eq!(
        done.status(),
        302,
        "{}",
        done.text().await.unwrap_or_default()
    );
    let users = g.users().await;
    assert_eq!(users.len(), 1);
    let (user, connections) = &users[0];
    assert_eq!(connections[0].identifier, slack::USER_ID);
    assert_eq!(connections[0].source, "slack");
    assert_eq!(user.email.as_deref(), Some(slack::EMAIL));
    assert_eq!(user.name.as_deref(), Some(slack::NAME));
    assert_eq!(user.username, slack::EMAIL);
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_people_of_another_workspace_are_refused_by_a_team_policy() {
    let fake = slack_fake().await;
    let policy = "[[source.policy]]\non = [\"enroll\", \"authenticate\"]\neffect = \"deny\"\n\
         expression = 'claims[\"https://slack.com/team_id\"] != \"T0THER\"'\n";
    let g = VendorGateway::start(&slack_source(&fake, policy)).await;
    assert_refused(g.sign_in("slack").await, 403).await;
    assert!(g.users().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_ok_false_in_a_200_is_a_provider_error_page_and_nothing_is_written() {
    let fake = slack_fake().await;
    fake.set_userinfo_error(Some("invalid_auth"));
    let g = VendorGateway::start(&slack_source(&fake, "")).await;
    assert_refused(g.sign_in("slack").await, 502).await;
    assert!(g.users().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn wechat_signs_in_by_qr_code_with_unionid_as_identifier_and_nickname_as_name() {
    let fake = wechat_fake().await;
    let g = VendorGateway::start(&wechat_source(&fake)).await;
    let done = g.sign_in("wechat").await;
    assert_eq!(
        done.status(),
        302,
        "{}",
        done.text().await.unwrap_or_default()
    );
    let users = g.users().await;
    assert_eq!(users.len(), 1);
    let (user, connections) = &users[0];
    assert_eq!(connections[0].identifier, wechat::UNIONID);
    assert_eq!(user.name.as_deref(), Some(wechat::NICKNAME));
    assert_eq!(user.email, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn wechat_apps_without_an_open_platform_account_sign_in_by_openid() {
    let fake = wechat_fake().await;
    fake.set_unionid(false);
    let g = VendorGateway::start(&wechat_source(&fake)).await;
    let done = g.sign_in("wechat").await;
    assert_eq!(done.status(), 302);
    let users = g.users().await;
    assert_eq!(users[0].1[0].identifier, wechat::OPENID);
}

#[tokio::test(flavor = "multi_thread")]
async fn wechat_errcode_in_a_200_is_a_provider_error_page_and_nothing_is_written() {
    let fake = wechat_fake().await;
    fake.set_token_errcode(Some((40029, "invalid code")));
    let g = VendorGateway::start(&wechat_source(&fake)).await;
    let done = g.sign_in("wechat").await;
    assert_refused(done, 502).await;
    assert!(g.users().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn wechat_errcode_from_the_profile_is_a_provider_error_page_and_nothing_is_written() {
    let fake = wechat_fake().await;
    fake.set_userinfo_errcode(Some((40003, "invalid openid")));
    let g = VendorGateway::start(&wechat_source(&fake)).await;
    assert_refused(g.sign_in("wechat").await, 502).await;
    assert!(g.users().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_and_wechat_buttons_lead_to_the_vendors_documented_sign_in_pages() {
    // No URL overridden: the presets' own URLs, never contacted here.
    let source = format!(
        "slug = \"slack\"\ntype = \"slack\"\nconsumer_key = \"{}\"\nconsumer_secret = \"s\"\n\
         [[source]]\nslug = \"wechat\"\ntype = \"wechat\"\nconsumer_key = \"{}\"\nconsumer_secret = \"s\"\n",
        slack::CLIENT_ID,
        wechat::APPID
    );
    let g = VendorGateway::start(&source).await;
    let mut jar = Jar::default();
    let to_slack = g.login_location("slack", &mut jar).await;
    let slack_url = url::Url::parse(&to_slack).unwrap();
    assert_eq!(
        format!(
            "{}{}",
            slack_url.origin().ascii_serialization(),
            slack_url.path()
        ),
        "https://slack.com/openid/connect/authorize"
    );
    let q: std::collections::HashMap<String, String> =
        slack_url.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], slack::CLIENT_ID);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["scope"], "openid email profile");
    assert!(q.contains_key("nonce"), "OIDC: {to_slack}");

    let to_wechat = g.login_location("wechat", &mut jar).await;
    let redirect =
        url::form_urlencoded::byte_serialize(g.gw.url("/_auth/callback/wechat").as_bytes())
            .collect::<String>();
    let prefix = format!(
        "https://open.weixin.qq.com/connect/qrconnect?appid={}&redirect_uri={redirect}&response_type=code&scope=snsapi_login&state=",
        wechat::APPID
    );
    assert!(to_wechat.starts_with(&prefix), "{to_wechat}");
    assert!(to_wechat.ends_with("#wechat_redirect"), "{to_wechat}");
    assert!(!to_wechat.contains("client_id"), "{to_wechat}");
}
