//! Audit events (DESIGN "Operations", issue 13) through the real binary:
//! each event writes one `portcullis::audit` line with its facts (request id,
//! app, source, user, client IP after `trusted_proxies`, a reason code for a
//! refusal), in the JSON log and as a JSON payload in the text log, is
//! counted in `portcullis_auth_events_total`, and no secret, code, state,
//! token or cookie of the run ever reaches the log (SECURITY REJECT-LOGIN:
//! "one audit log line with a reason code and no token material").

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis::demo::Provider;
use serde_json::{json, Value};

use crate::signin::Jar;
use crate::support::{client, free_port, Upstream, SECRET};

/// The client every request claims to be, through the trusted proxy (the
/// test itself, on 127.0.0.1).
const CLIENT_IP: &str = "203.0.113.7";

/// The binary serving two sources (`demo`, `second`) in front of one app
/// with `pass_access_token`, and everything the run saw that must stay out
/// of its log.
struct Run {
    child: Child,
    /// Every line the serve process and the `users` commands wrote, stdout and stderr.
    lines: Arc<Mutex<Vec<String>>>,
    config_path: std::path::PathBuf,
    config: String,
    public: String,
    admin: String,
    db: String,
    demo: Provider,
    second: Provider,
    upstream: Upstream,
    jar: Jar,
    client: reqwest::Client,
    /// Codes, states, tokens, cookies and secrets of this run.
    secrets: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Copies every line of `from` into `to`.
fn collect(from: impl Read + Send + 'static, to: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            to.lock().unwrap().push(line);
        }
    });
}

/// The audit event a log line carries (DESIGN: one JSON line each): the
/// `fields` of the JSON log's line, or the text log's audit line itself,
/// which is one JSON object with nothing in front. A line naming the
/// audit target that is not JSON fails the test.
fn audit_of(line: &str) -> Option<Value> {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        assert!(
            !line.contains("portcullis::audit"),
            "an audit line that is not JSON: {line}"
        );
        return None;
    };
    if v["target"] != "portcullis::audit" {
        return None;
    }
    Some(match v.get("fields") {
        Some(fields) => {
            // The JSON log's line has the facts at its top as well.
            for key in ["event", "reason", "request_id", "user_id", "status"] {
                assert_eq!(v[key], fields[key], "{key}: {line}");
            }
            fields.clone()
        }
        None => {
            assert_eq!(v["level"], "INFO", "{line}");
            v
        }
    })
}

impl Run {
    async fn start(format: &str, faults: impl Fn(&mut portcullis::demo::Faults)) -> Run {
        Self::start_with(format, faults, "", "").await
    }

    /// As `start`, with `demo_extra` and `second_extra` ending each source's table.
    async fn start_with(
        format: &str,
        faults: impl Fn(&mut portcullis::demo::Faults),
        demo_extra: &str,
        second_extra: &str,
    ) -> Run {
        let port = free_port();
        let public = format!("http://127.0.0.1:{port}");
        let mut providers = Vec::new();
        for slug in ["demo", "second"] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let cfg = portcullis::demo::ProviderConfig::example(&format!(
                "{public}/_auth/callback/{slug}"
            ))
            .unwrap();
            let p = portcullis::demo::provider::start(listener, cfg).await;
            p.set_faults(|f| {
                f.auto_approve_as = Some("alice".into());
                faults(f);
            });
            providers.push(p);
        }
        let second = providers.pop().unwrap();
        let demo = providers.pop().unwrap();
        let upstream = Upstream::start("app").await;
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/portcullis.db", dir.path().display());
        let source = |slug: &str, p: &Provider, extra: &str| {
            let c = &p.config().clients[0];
            format!(
                "[[source]]\nslug = \"{slug}\"\ntype = \"openidconnect\"\nconsumer_key = \"{}\"\nconsumer_secret = \"{}\"\noidc_well_known_url = \"{}\"\n{extra}\n",
                c.client_id,
                c.client_secret,
                p.well_known_url()
            )
        };
        let admin = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"{admin}\"\npublic_url = \"{public}\"\nthreads = 1\nshutdown_timeout = \"2s\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
             [session]\nsecrets = [\"{SECRET}\"]\n[store]\nurl = \"{db}\"\n{}{}\
             [[app]]\nname = \"app\"\nupstream = \"{}\"\npass_access_token = true\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n\
             [[app.policy]]\non = [\"access\"]\neffect = \"deny\"\npath_prefix = \"/forbidden\"\n",
            source("demo", &demo, demo_extra),
            source("second", &second, second_extra),
            upstream.url()
        );
        let config_path = dir.path().join("portcullis.toml");
        std::fs::write(&config_path, &config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--log-format", format, "--config"])
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env_remove("PORTCULLIS_SERVER__LOG_FORMAT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), lines.clone());
        collect(child.stderr.take().unwrap(), lines.clone());
        let secrets = vec![
            SECRET.to_string(),
            demo.config().clients[0].client_secret.clone(),
            second.config().clients[0].client_secret.clone(),
        ];
        let run = Run {
            child,
            lines,
            config_path,
            config,
            public,
            admin,
            db,
            demo,
            second,
            upstream,
            jar: Jar::default(),
            client: client(),
            secrets,
            _dir: dir,
        };
        run.ready().await;
        run
    }

    /// Waits (up to 15 s) until `/readyz` says every source is ready.
    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let ok = self
                .client
                .get(format!("http://{}/readyz", self.admin))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the binary did not become ready:\n{}", self.log());
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public)
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Keeps what a response sets in the jar, and every cookie value as a secret.
    fn absorb(&mut self, resp: &reqwest::Response) {
        self.jar.absorb(resp);
        for (_, v) in &self.jar.0 {
            if v.len() >= 8 && !self.secrets.contains(v) {
                self.secrets.push(v.clone());
            }
        }
    }

    /// A browser request, through the trusted proxy on behalf of [`CLIENT_IP`].
    async fn get(&mut self, url: &str) -> reqwest::Response {
        let resp = self
            .client
            .get(url)
            .header("accept", "text/html")
            .header("x-forwarded-for", CLIENT_IP)
            .header("cookie", self.jar.header())
            .send()
            .await
            .unwrap();
        self.absorb(&resp);
        resp
    }

    /// Login (or link) start → provider → callback URL, whose code and
    /// state become secrets of the run.
    async fn reach_callback(&mut self, path: &str) -> String {
        let start = self.get(&self.url(path)).await;
        assert_eq!(start.status(), 302, "{path}");
        let authorize = start.headers()["location"].to_str().unwrap().to_string();
        let back = self.get(&authorize).await;
        assert_eq!(back.status(), 302, "provider authorize");
        let callback = back.headers()["location"].to_str().unwrap().to_string();
        let query = callback.split_once('?').unwrap().1;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k == "code" || k == "state" {
                self.secrets.push(v.into_owned());
            }
        }
        callback
    }

    async fn flow(&mut self, path: &str) -> reqwest::Response {
        let callback = self.reach_callback(path).await;
        self.get(&callback).await
    }

    /// `POST /_auth/sign_out` from `origin`.
    async fn sign_out(&mut self, origin: &str) -> reqwest::Response {
        let resp = self
            .client
            .post(self.url("/_auth/sign_out"))
            .header("origin", origin)
            .header("x-forwarded-for", CLIENT_IP)
            .header("cookie", self.jar.header())
            .send()
            .await
            .unwrap();
        self.absorb(&resp);
        resp
    }

    /// `GET /private` as an API client; the access token the upstream got is a secret.
    async fn private(&mut self) -> u16 {
        let resp = self
            .client
            .get(self.url("/private"))
            .header("x-forwarded-for", CLIENT_IP)
            .header("cookie", self.jar.header())
            .send()
            .await
            .unwrap();
        if let Some(t) = self
            .upstream
            .requests()
            .last()
            .and_then(|r| r.header("x-forwarded-access-token"))
        {
            if !self.secrets.iter().any(|s| s == t) {
                self.secrets.push(t.to_string());
            }
        }
        resp.status().as_u16()
    }

    /// Every audit event so far.
    fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| audit_of(l))
            .collect()
    }

    /// Waits (up to 5 s: the log is written by a background thread) for the
    /// `n`th audit line of `event` (and `reason`), and returns it.
    async fn nth(&self, event: &str, reason: &str, n: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found: Vec<Value> = self
                .events()
                .into_iter()
                .filter(|e| e["event"] == event && e["reason"] == reason)
                .collect();
            if let Some(e) = found.get(n - 1) {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no audit line #{n} of {event}/{reason} in:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The access line of the request with this id. Waits (up to 5 s): it
    /// is written after the response, so it may come after the audit line.
    async fn access_line(&self, request_id: &Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| {
                    v["target"] == "portcullis::access" && v["fields"]["request_id"] == *request_id
                })
                .map(|v| v["fields"].clone());
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no access line with request id {request_id} in:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of one exact series of `/metrics`.
    async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// Runs `portcullis users ARGS` on this run's config (text log, the
    /// default); its output joins the run's lines. Returns its audit events.
    fn users(&self, args: &[&str]) -> Vec<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("users")
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("RUST_LOG")
            .env_remove("PORTCULLIS_SERVER__LOG_FORMAT")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "users {args:?}: {stdout}{stderr}");
        let mut lines = self.lines.lock().unwrap();
        lines.extend(stdout.lines().map(str::to_string));
        lines.extend(stderr.lines().map(str::to_string));
        stderr.lines().filter_map(audit_of).collect()
    }

    fn hup(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    }

    /// No secret of the run anywhere in its log.
    fn assert_no_secrets(&self) {
        // Lines still in the log thread's buffer get a moment to arrive.
        std::thread::sleep(Duration::from_millis(300));
        let log = self.log();
        assert!(
            self.secrets.len() >= 5,
            "too few secrets seen: {:?}",
            self.secrets
        );
        for s in &self.secrets {
            assert!(!log.contains(s.as_str()), "{s} is in the log:\n{log}");
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The facts every event of a request carries: its time, request id, app and client.
fn assert_request_facts(e: &Value) {
    let time = e["time"]
        .as_str()
        .unwrap_or_else(|| panic!("no time in {e}"));
    assert!(humantime::parse_rfc3339(time).is_ok(), "{e}");
    assert_eq!(e["request_id"].as_str().map(str::len), Some(12), "{e}");
    assert_eq!(e["app"], "app", "{e}");
    assert_eq!(e["client_ip"], CLIENT_IP, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn enroll_link_sign_out_sign_in_and_refusals_each_write_one_audit_line_without_secrets() {
    let mut run = Run::start("json", |_| {}).await;

    // The first sign-in creates the user: `enroll`, with the callback's request id and client.
    let r = run.flow("/_auth/login/demo?rd=/private").await;
    assert_eq!(r.status(), 302);
    let enroll = run.nth("enroll", "none", 1).await;
    assert_request_facts(&enroll);
    assert_eq!(enroll["source"], "demo");
    assert_eq!(enroll["username"], "alice");
    let user_id = enroll["user_id"].as_str().unwrap().to_string();
    assert!(!user_id.is_empty());
    // The same request as the callback's access line, the same client.
    let access = run.access_line(&enroll["request_id"]).await;
    assert!(
        access["path"]
            .as_str()
            .unwrap()
            .starts_with("/_auth/callback/demo"),
        "{access}"
    );
    assert_eq!(enroll["client_ip"], access["client_ip"]);
    assert_eq!(run.private().await, 200);

    // The app's access rules refuse a path: `refusal` / `access_denied`,
    // proxied and asked through forward auth alike.
    let seen = run.upstream.requests().len();
    let r = run.get(&run.url("/forbidden/x")).await;
    assert_eq!(r.status(), 403);
    let denied = run.nth("refusal", "access_denied", 1).await;
    assert_request_facts(&denied);
    assert_eq!(denied["status"], 403, "{denied}");
    assert_eq!(denied["user_id"], user_id.as_str());
    assert_eq!(denied["username"], "alice");
    assert_eq!(run.access_line(&denied["request_id"]).await["status"], 403);
    let check = run.url("/_auth/check");
    let host = run.public.trim_start_matches("http://").to_string();
    let r = run
        .client
        .get(check)
        .header("x-forwarded-for", CLIENT_IP)
        .header("x-forwarded-host", host)
        .header("x-forwarded-uri", "/forbidden/y")
        .header("cookie", run.jar.header())
        .send()
        .await
        .unwrap();
    // Forward auth answers 200 or 401 (docs/design.md): refused, 401.
    assert_eq!(r.status(), 401);
    let denied = run.nth("refusal", "access_denied", 2).await;
    assert_eq!(denied["username"], "alice", "{denied}");
    assert_eq!(denied["status"], 401, "{denied}");
    assert_eq!(
        run.upstream.requests().len(),
        seen,
        "a refused request reached the app"
    );

    // Linking the second source to the same user: `link`.
    let r = run.flow("/_auth/link/second?rd=/private").await;
    assert_eq!(r.status(), 302);
    let link = run.nth("link", "none", 1).await;
    assert_request_facts(&link);
    assert_eq!(link["source"], "second");
    assert_eq!(link["user_id"], user_id.as_str());
    assert_eq!(link["username"], "alice");

    // Signing out: `sign_out`; the provider's end-session URL carries the ID token.
    let r = run.sign_out(&run.public.clone()).await;
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let hint = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "id_token_hint")
        .map(|(_, v)| v.into_owned());
    if let Some(id_token) = hint {
        run.secrets.push(id_token);
    }
    let out = run.nth("sign_out", "none", 1).await;
    assert_request_facts(&out);
    assert_eq!(out["user_id"], user_id.as_str());
    assert_eq!(out["username"], "alice");
    assert_eq!(out["source"], "second");

    // Signing in again as the connected user: `sign_in`.
    let callback = run.reach_callback("/_auth/login/demo?rd=/private").await;
    let r = run.get(&callback).await;
    assert_eq!(r.status(), 302);
    let signed_in = run.nth("sign_in", "none", 1).await;
    assert_request_facts(&signed_in);
    assert_eq!(signed_in["source"], "demo");
    assert_eq!(signed_in["user_id"], user_id.as_str());

    // The same callback replayed: refused as `state_invalid` (SECURITY OIDC-11).
    let r = run.get(&callback).await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    let replay = run.nth("refusal", "state_invalid", 1).await;
    assert_request_facts(&replay);
    assert_eq!(replay["source"], "demo");
    assert_eq!(replay["status"], 400);
    // The request id the refusal page shows, and the access line's.
    assert!(
        page.contains(replay["request_id"].as_str().unwrap()),
        "{replay} {page}"
    );
    let access = run.access_line(&replay["request_id"]).await;
    assert_eq!(access["status"], 400);
    assert_eq!(access["client_ip"], CLIENT_IP);

    // An ID token with a bad signature: `id_token_invalid`, 401.
    run.demo.set_faults(|f| f.bad_signature = true);
    let r = run.flow("/_auth/login/demo?rd=/private").await;
    assert_eq!(r.status(), 401);
    run.demo.set_faults(|f| f.bad_signature = false);
    let bad = run.nth("refusal", "id_token_invalid", 1).await;
    assert_request_facts(&bad);
    assert_eq!(bad["source"], "demo");
    assert_eq!(bad["status"], 401);

    // A sign-out posted from another site: `cross_origin`, 403, nobody signed out.
    let r = run.sign_out("https://evil.example").await;
    assert_eq!(r.status(), 403);
    let foreign = run.nth("refusal", "cross_origin", 1).await;
    assert_request_facts(&foreign);
    assert_eq!(run.private().await, 200);

    // Each event counted once, under its reason ("none" for what refused nothing).
    for (series, n) in [
        (
            r#"portcullis_auth_events_total{event="enroll",reason="none"}"#,
            1.0,
        ),
        (
            r#"portcullis_auth_events_total{event="link",reason="none"}"#,
            1.0,
        ),
        (
            r#"portcullis_auth_events_total{event="sign_in",reason="none"}"#,
            1.0,
        ),
        (
            r#"portcullis_auth_events_total{event="sign_out",reason="none"}"#,
            1.0,
        ),
        (
            r#"portcullis_auth_events_total{event="refusal",reason="state_invalid"}"#,
            1.0,
        ),
        (
            r#"portcullis_auth_events_total{event="refusal",reason="id_token_invalid"}"#,
            1.0,
        ),
        (
            r#"portcullis_auth_events_total{event="refusal",reason="policy_denied"}"#,
            0.0,
        ),
    ] {
        assert_eq!(run.metric(series).await, n, "{series}");
    }
    run.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn back_channel_logout_and_a_session_the_gateway_ends_write_their_audit_lines() {
    let mut run = Run::start("json", |f| {
        f.access_token_ttl_secs = Some(4);
        f.refresh_tokens = true;
    })
    .await;
    assert_eq!(
        run.flow("/_auth/login/demo?rd=/private").await.status(),
        302
    );
    let user_id = run.nth("enroll", "none", 1).await["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let store = portcullis::identity::store::open(&run.db).await.unwrap();
    let sid = store.user_sessions(&user_id).await.unwrap()[0]
        .oidc_sid
        .clone()
        .expect("the provider's sid was not recorded");
    let (http, logout_url) = (
        run.client.clone(),
        run.url("/_auth/backchannel_logout/demo"),
    );
    let post = |token: String| {
        let c = http.clone();
        let url = logout_url.clone();
        async move {
            c.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-forwarded-for", CLIENT_IP)
                .body(format!("logout_token={token}"))
                .send()
                .await
                .unwrap()
        }
    };
    // A token that does not verify: refused, `logout_token_invalid`; the
    // JSON answer names the request as the audit line does.
    let answer = post("not.a.jwt".into()).await;
    assert_eq!(answer.status(), 400);
    let answer: Value = answer.json().await.unwrap();
    let refused = run.nth("refusal", "logout_token_invalid", 1).await;
    assert_eq!(answer["request_id"], refused["request_id"], "{answer}");
    assert_eq!(refused["source"], "demo");
    assert_eq!(refused["status"], 400);
    assert_eq!(refused["client_ip"], CLIENT_IP);

    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), json!(run.demo.issuer()));
    claims.insert(
        "aud".into(),
        json!(run.demo.config().clients[0].client_id.clone()),
    );
    claims.insert("iat".into(), json!(jsonwebtoken::get_current_timestamp()));
    claims.insert("jti".into(), json!("audit-jti-1"));
    claims.insert("sid".into(), json!(sid));
    claims.insert(
        "events".into(),
        json!({"http://schemas.openid.net/event/backchannel-logout": {}}),
    );
    let token = run.demo.sign(&claims).unwrap();
    run.secrets.push(token.clone());
    assert_eq!(post(token.clone()).await.status(), 200);
    let logout = run.nth("backchannel_logout", "none", 1).await;
    assert_eq!(logout["source"], "demo");
    assert_eq!(logout["sessions"], 1);
    assert_eq!(logout["client_ip"], CLIENT_IP);
    assert_eq!(logout["request_id"].as_str().map(str::len), Some(12));
    // The same token again: `logout_token_replayed`.
    assert_eq!(post(token).await.status(), 400);
    run.nth("refusal", "logout_token_replayed", 1).await;

    // A session whose access token cannot be renewed is ended by the gateway: `revocation`.
    assert_eq!(
        run.flow("/_auth/login/demo?rd=/private").await.status(),
        302
    );
    assert_eq!(run.private().await, 200);
    run.demo.revoke_refresh_tokens();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(run.private().await, 401);
    let ended = run.nth("revocation", "none", 1).await;
    assert_request_facts(&ended);
    assert_eq!(ended["user_id"], user_id.as_str());
    assert_eq!(ended["username"], "alice");
    assert_eq!(ended["source"], "demo");
    assert_eq!(ended["cause"], "access_token_not_renewed");
    run.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn users_commands_and_config_reloads_write_audit_lines_also_in_the_text_log() {
    // The text log: each audit line is the event as one JSON object.
    let mut run = Run::start("text", |_| {}).await;
    assert_eq!(
        run.flow("/_auth/login/demo?rd=/private").await.status(),
        302
    );
    let user_id = run.nth("enroll", "none", 1).await["user_id"]
        .as_str()
        .unwrap()
        .to_string();

    let only = |events: Vec<Value>, event: &str| -> Value {
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["event"], event, "{events:?}");
        assert_eq!(events[0]["reason"], "none", "{events:?}");
        assert!(events[0]["time"].is_string(), "{events:?}");
        events[0].clone()
    };
    let renamed = only(run.users(&["rename", "alice", "alicia"]), "user.rename");
    assert_eq!(renamed["user_id"], user_id.as_str());
    assert_eq!(renamed["username"], "alice");
    assert_eq!(renamed["new_username"], "alicia");

    let disabled = only(run.users(&["disable", "alicia"]), "user.disable");
    assert_eq!(disabled["user_id"], user_id.as_str());
    assert_eq!(disabled["username"], "alicia");
    // A disabled user is refused: `user_disabled`, in the serve process's text log.
    run.jar.0.clear();
    assert_eq!(
        run.flow("/_auth/login/demo?rd=/private").await.status(),
        403
    );
    let refused = run.nth("refusal", "user_disabled", 1).await;
    assert_request_facts(&refused);
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["source"], "demo");

    let enabled = only(run.users(&["enable", "alicia"]), "user.enable");
    assert_eq!(enabled["user_id"], user_id.as_str());
    let unlinked = only(run.users(&["unlink", "alicia", "demo"]), "user.unlink");
    assert_eq!(unlinked["user_id"], user_id.as_str());
    assert_eq!(unlinked["source"], "demo");

    // A reload that applies, then one that is refused.
    run.hup();
    let ok = run.nth("config.reload", "none", 1).await;
    assert_eq!(ok["generation"], 2);
    assert_eq!(ok["result"], "ok");
    assert!(ok.get("request_id").is_none(), "{ok}");
    std::fs::write(
        &run.config_path,
        run.config.replace("[[app]]", "[[app]]\nno_such_key = 1"),
    )
    .unwrap();
    run.hup();
    let refused = run.nth("config.reload", "config_invalid", 1).await;
    assert_eq!(refused["generation"], 2);
    assert_eq!(refused["result"], "error");
    assert_eq!(
        run.metric(
            r#"portcullis_auth_events_total{event="config.reload",reason="config_invalid"}"#
        )
        .await,
        1.0
    );
    run.assert_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_identity_taken_and_closed_enrollment_refusals_carry_their_reason_codes() {
    // demo: enrolls, but a policy refuses signing in again; second: email_deny, no enrollment.
    let mut run = Run::start_with(
        "json",
        |_| {},
        "[[source.policy]]\non = [\"authenticate\"]\neffect = \"deny\"\nemail_domains = [\"example.com\"]\nmessage = \"Ask an administrator\"",
        "user_matching_mode = \"email_deny\"\nenroll = false",
    )
    .await;
    assert_eq!(
        run.flow("/_auth/login/demo?rd=/private").await.status(),
        302
    );
    run.nth("enroll", "none", 1).await;

    // The source policy refuses alice's next sign-in: `policy_denied`.
    run.jar.0.clear();
    assert_eq!(
        run.flow("/_auth/login/demo?rd=/private").await.status(),
        403
    );
    let denied = run.nth("refusal", "policy_denied", 1).await;
    assert_request_facts(&denied);
    assert_eq!(denied["source"], "demo");
    assert_eq!(denied["status"], 403);

    // email_deny finds alice's email on an existing user: `identity_taken`.
    run.jar.0.clear();
    assert_eq!(
        run.flow("/_auth/login/second?rd=/private").await.status(),
        403
    );
    let taken = run.nth("refusal", "identity_taken", 1).await;
    assert_request_facts(&taken);
    assert_eq!(taken["source"], "second");

    // bob is nobody yet, and second does not enroll: `enroll_closed`.
    run.second
        .set_faults(|f| f.auto_approve_as = Some("bob".into()));
    run.jar.0.clear();
    assert_eq!(
        run.flow("/_auth/login/second?rd=/private").await.status(),
        403
    );
    let closed = run.nth("refusal", "enroll_closed", 1).await;
    assert_request_facts(&closed);
    assert_eq!(closed["source"], "second");
    assert!(closed.get("user_id").is_none(), "{closed}");
    run.assert_no_secrets();
}
