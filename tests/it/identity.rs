//! What the upstream can rely on (issue 12): a username and email that no
//! linked source changes, vouched emails in policies, and the claims of the
//! session or the token in policies and `claim_headers`.

use portcullis::demo::{DemoUser, Provider, ProviderConfig};
use portcullis_testkit::oauth1_provider::{self, Oauth1ProviderConfig, Oauth1User};
use serde_json::{json, Value};

use crate::signin::{users_cli, Jar, Setup};
use crate::support::{client, config_file, free_port, Gateway, Upstream, SECRET};

/// An OpenID provider whose only user is `user`, returning to `{public}/_auth/callback/{slug}`.
async fn oidc_provider(public: &str, slug: &str, user: DemoUser) -> Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = ProviderConfig::example(&format!("{public}/_auth/callback/{slug}")).unwrap();
    let sub = user.sub.clone();
    cfg.users = vec![user];
    let p = portcullis::demo::provider::start(listener, cfg).await;
    p.set_faults(|f| f.auto_approve_as = Some(sub));
    p
}

fn demo_user(sub: &str, username: &str, email: &str, name: &str) -> DemoUser {
    DemoUser {
        sub: sub.into(),
        preferred_username: username.into(),
        email: email.into(),
        email_verified: true,
        name: name.into(),
        groups: vec!["staff".into()],
    }
}

/// A browser: a cookie jar against one gateway.
struct Browser<'a> {
    gw: &'a Gateway,
    jar: Jar,
}

impl Browser<'_> {
    async fn get(&mut self, url: &str) -> reqwest::Response {
        let r = client()
            .get(url)
            .header("accept", "text/html")
            .header("cookie", self.jar.header())
            .send()
            .await
            .unwrap();
        self.jar.absorb(&r);
        r
    }

    /// Starts `path` (a login or link), follows the provider back; the callback's answer.
    async fn flow(&mut self, path: &str) -> reqwest::Response {
        let start = self.get(&self.gw.url(path)).await;
        assert_eq!(start.status(), 302, "{path}");
        let provider = start.headers()["location"].to_str().unwrap().to_string();
        let back = self.get(&provider).await;
        assert_eq!(back.status(), 302, "{path}: provider");
        let callback = back.headers()["location"].to_str().unwrap().to_string();
        self.get(&callback).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn linking_an_oauth1_and_an_email_link_source_keeps_the_username_and_email() {
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let corp = oidc_provider(
        &public,
        "corp",
        demo_user("lou-1", "lou", "lou@corp.example", "Lou Corp"),
    )
    .await;
    // The email_link source knows lou by the same (verified) email, under another name.
    let hr = oidc_provider(
        &public,
        "hr",
        demo_user("hr-9", "lou.hr", "lou@corp.example", "L. from HR"),
    )
    .await;
    let mut tw_cfg = Oauth1ProviderConfig::example(&format!("{public}/_auth/callback/tw"));
    tw_cfg.user = Oauth1User {
        user_id: "783214".into(),
        screen_name: "tw_lou".into(),
        name: "Lou on Twitter".into(),
        email: "lou@tw.example".into(),
    };
    let (tw_key, tw_secret) = (tw_cfg.consumer_key.clone(), tw_cfg.consumer_secret.clone());
    let tw = oauth1_provider::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tw_cfg,
    );
    let upstream = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/portcullis.db", dir.path().display());
    let oidc = |slug: &str, p: &Provider, extra: &str| {
        let c = &p.config().clients[0];
        format!(
            "[[source]]\nslug = \"{slug}\"\ntype = \"openidconnect\"\nconsumer_key = \"{}\"\nconsumer_secret = \"{}\"\noidc_well_known_url = \"{}\"\n{extra}\n",
            c.client_id,
            c.client_secret,
            p.well_known_url()
        )
    };
    let base = tw.base_url();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"{public}\"\nthreads = 1\nshutdown_timeout = \"2s\"\n\
         [session]\nsecrets = [\"{SECRET}\"]\n[store]\nurl = \"{db}\"\n{corp}{hr}\
         [[source]]\nslug = \"tw\"\ntype = \"oauth1\"\nconsumer_key = \"{tw_key}\"\nconsumer_secret = \"{tw_secret}\"\n\
         request_token_url = \"{base}/oauth/request_token\"\nauthorization_url = \"{base}/oauth/authorize\"\n\
         access_token_url = \"{base}/oauth/access_token\"\nprofile_url = \"{base}/account/verify_credentials.json?include_email=true\"\n\
         claims = {{ identifier = \"id_str\", username = \"screen_name\", email = \"email\", name = \"name\" }}\n\
         trust_email = true\n\
         [[app]]\nname = \"app\"\nupstream = \"{up}\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        corp = oidc("corp", &corp, ""),
        hr = oidc("hr", &hr, "user_matching_mode = \"email_link\""),
        up = upstream.url(),
    );
    let gw = Gateway::start_full(&config);
    gw.ready().await;
    let mut b = Browser {
        gw: &gw,
        jar: Jar::default(),
    };
    let who = |b: &mut Browser<'_>| {
        let url = b.gw.url("/private");
        let cookie = b.jar.header();
        let upstream = &upstream;
        async move {
            let r = client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let seen = upstream.requests().pop().unwrap();
            (
                seen.header("x-forwarded-user").unwrap_or("-").to_string(),
                seen.header("x-forwarded-email").unwrap_or("-").to_string(),
            )
        }
    };
    let lou = ("lou".to_string(), "lou@corp.example".to_string());

    assert_eq!(b.flow("/_auth/login/corp").await.status(), 302);
    assert_eq!(who(&mut b).await, lou);
    // Link the OAuth 1.0a source (its email is even trusted): nothing changes upstream.
    let r = b.flow("/_auth/link/tw").await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert_eq!(who(&mut b).await, lou);
    // A fresh browser through the email_link source links by the verified email.
    b.jar = Jar::default();
    assert_eq!(b.flow("/_auth/login/hr").await.status(), 302);
    assert_eq!(who(&mut b).await, lou);

    let file = config_file(&config);
    let (code, out, err) = users_cli(&file.path, &["show", "lou", "--json"]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["username"], "lou");
    assert_eq!(shown["email"], "lou@corp.example");
    assert_eq!(shown["name"], "Lou Corp");
    assert_eq!(shown["home_source"], "corp");
    let sources: Vec<&str> = shown["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["corp", "hr", "tw"]);
    let (_, text, _) = users_cli(&file.path, &["show", "lou"]);
    assert!(text.contains("tw:783214"), "{text}");
    assert!(text.contains("hr:hr-9"), "{text}");

    // Later sign-ins through either linked source: the same user, the same name.
    for slug in ["tw", "hr", "corp"] {
        b.jar = Jar::default();
        assert_eq!(
            b.flow(&format!("/_auth/login/{slug}")).await.status(),
            302,
            "{slug}"
        );
        assert_eq!(who(&mut b).await, lou, "after signing in through {slug}");
    }
    let store = portcullis::identity::store::open(&db).await.unwrap();
    assert_eq!(store.counts().await.unwrap().users, 1);
}

/// The harness's app, admitting everyone who signs in.
const ALLOW_ALL: &str = "[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n";

/// What the upstream saw as `X-Forwarded-User` on a request with the setup's cookies.
async fn forwarded_user(s: &Setup) -> String {
    let r = s
        .client
        .get(s.gw.url("/private"))
        .header("cookie", s.jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.upstream.requests().pop().unwrap();
    seen.header("x-forwarded-user").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_changes_the_username_upstream_and_refuses_a_taken_one() {
    let mut s = Setup::start_with_apps("", ALLOW_ALL, |_| {}).await;
    assert_eq!(s.sign_in().await.status(), 302);
    assert_eq!(forwarded_user(&s).await, "alice");
    s.provider
        .set_faults(|f| f.auto_approve_as = Some("bob".into()));
    s.jar = Jar::default();
    assert_eq!(s.sign_in().await.status(), 302);
    let file = config_file(&s.config);

    let (code, _, err) = users_cli(&file.path, &["rename", "alice", "BOB"]);
    assert_eq!(code, 1);
    assert!(err.contains("the username `BOB` is taken"), "{err}");
    let (code, _, err) = users_cli(&file.path, &["rename", "alice", "no spaces"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot be a username"), "{err}");
    let (code, out, err) = users_cli(&file.path, &["rename", "alice", "alicia"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice is now alicia"), "{out}");
    let audit = err
        .lines()
        .find(|l| l.contains("portcullis::audit"))
        .unwrap_or_else(|| panic!("no audit line in {err}"));
    assert!(
        audit.contains("user.rename") && audit.contains("alicia"),
        "{audit}"
    );

    // Signing in again through the same source keeps the new name.
    s.provider
        .set_faults(|f| f.auto_approve_as = Some("alice".into()));
    s.jar = Jar::default();
    assert_eq!(s.sign_in().await.status(), 302);
    assert_eq!(forwarded_user(&s).await, "alicia");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unverified_email_does_not_satisfy_email_domains() {
    let domain_rule = "[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\nemail_domains = [\"example.com\"]\n";
    // bob's provider does not verify his email (bob@example.com).
    let mut s = Setup::start_with_apps("", domain_rule, |f| {
        f.auto_approve_as = Some("bob".into());
    })
    .await;
    assert_eq!(s.sign_in().await.status(), 302);
    let r = s
        .client
        .get(s.gw.url("/private"))
        .header("cookie", s.jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // alice's is verified: the same rule admits her.
    s.provider
        .set_faults(|f| f.auto_approve_as = Some("alice".into()));
    s.jar = Jar::default();
    assert_eq!(s.sign_in().await.status(), 302);
    assert_eq!(forwarded_user(&s).await, "alice");
    assert!(s
        .upstream
        .requests()
        .iter()
        .all(|r| r.header("x-forwarded-user") == Some("alice")));
}

#[tokio::test(flavor = "multi_thread")]
async fn session_claims_feed_app_policies_and_claim_headers() {
    let team = Upstream::start("team").await;
    let apps = format!(
        "claim_headers = {{ \"X-Display\" = \"name\", \"X-Roles\" = \"groups\", \"X-Absent\" = \"no.such\" }}\n{ALLOW_ALL}\
         [[app]]\nname = \"team\"\npath_prefix = \"/team\"\nupstream = \"{up}\"\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\nexpression = \"'admins' in claims.groups && claims.email_verified == true\"\n\
         [[app]]\nname = \"bobs\"\npath_prefix = \"/bobs\"\nupstream = \"{up}\"\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\nexpression = \"claims.preferred_username == 'bob'\"\n",
        up = team.url()
    );
    let mut s = Setup::start_with_apps("", &apps, |_| {}).await;
    // Before signing in: client copies of the claim headers never pass, public path or not.
    let r = s
        .client
        .get(s.gw.url("/public/x"))
        .header("x-display", "spoofed")
        .header("x_roles", "spoofed")
        .header("X-Absent", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.upstream.requests().pop().unwrap();
    for name in ["x-display", "x_roles", "x-absent"] {
        assert_eq!(seen.header(name), None, "{name} reached the upstream");
    }
    assert_eq!(s.sign_in().await.status(), 302);
    let get = |path: &str| {
        s.client
            .get(s.gw.url(path))
            .header("cookie", s.jar.header())
            .header("x-display", "spoofed")
            .header("X_Absent", "spoofed")
            .send()
    };
    let r = get("/private").await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.upstream.requests().pop().unwrap();
    assert_eq!(seen.header("x-display"), Some("Alice Example"));
    assert_eq!(seen.header("x-roles"), Some("admins,staff"));
    assert_eq!(seen.header("x-absent"), None);
    assert_eq!(seen.header("x_absent"), None);
    assert_eq!(
        seen.headers
            .iter()
            .filter(|(k, _)| k == "x-display")
            .count(),
        1
    );
    // The session's claims decide: alice is in admins with a verified email, and is not bob.
    assert_eq!(get("/team/x").await.unwrap().status(), 200);
    assert_eq!(get("/bobs/x").await.unwrap().status(), 403);
    assert_eq!(team.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_claims_feed_app_policies_and_claim_headers() {
    let ci = crate::bearer::provider().await;
    let upstream = Upstream::start("api").await;
    let gw = Gateway::start(&format!(
        "[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{wk}\"\n\
         [[app]]\nname = \"deploy\"\nhost = \"deploy.test\"\nupstream = \"{up}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n\
         claim_headers = {{ \"X-Repo\" = \"repository\", \"X-Ref\" = \"ref\" }}\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n\
         expression = 'claims.repository == \"acme/deploy\" && claims.ref == \"refs/heads/main\"'\n\
         [[app]]\nname = \"open\"\nhost = \"open.test\"\nupstream = \"{up}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n\
         claim_headers = {{ \"X-Repo\" = \"repository\" }}\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        wk = ci.well_known_url(),
        up = upstream.url()
    ));
    gw.ready().await;
    let token = |repository: Option<&str>, git_ref: &str| {
        let mut c = crate::bearer::claims(&ci.issuer(), |_| {});
        if let Some(r) = repository {
            c.insert("repository".into(), json!(r));
        }
        c.insert("ref".into(), json!(git_ref));
        ci.sign(&c).unwrap()
    };
    let call = |host: &'static str, token: String| {
        client()
            .get(gw.url("/deploy"))
            .header("host", host)
            .header("authorization", format!("Bearer {token}"))
            .header("x-repo", "spoofed/repo")
            .header("x_ref", "refs/heads/spoofed")
            .send()
    };
    let r = call("deploy.test", token(Some("acme/deploy"), "refs/heads/main"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.header("x-repo"), Some("acme/deploy"));
    assert_eq!(seen.header("x-ref"), Some("refs/heads/main"));
    assert_eq!(seen.header("x_ref"), None);
    // Forward auth answers the same claim headers for the proxy in front to copy.
    let r = client()
        .get(gw.url("/_auth/check"))
        .header("host", "deploy.test")
        .header(
            "authorization",
            format!("Bearer {}", token(Some("acme/deploy"), "refs/heads/main")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-repo"], "acme/deploy");
    assert_eq!(r.headers()["x-ref"], "refs/heads/main");
    // Another branch of the same repository: 403 insufficient_scope, nothing upstream.
    let r = call("deploy.test", token(Some("acme/deploy"), "refs/heads/dev"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert_eq!(upstream.requests().len(), 1);
    // A token without the claim: the header is absent, never the client's copy.
    let r = call("open.test", token(None, "refs/heads/main"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.header("x-repo"), None);
    // `X-Ref` is the deploy app's claim header, not this app's; the two share
    // an upstream, so a client's copy goes on this app's requests too.
    assert_eq!(seen.header("x_ref"), None);
    assert_eq!(seen.header("x-ref"), None);
}
