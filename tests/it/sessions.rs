//! Sessions through the live gateway: sign-out only by a same-origin POST
//! (SES-16) with the old cookie dead afterwards (SES-07), and idle expiry
//! (SES-06) across the cache and across replicas sharing one store.

use std::time::Duration;

use crate::signin::{Jar, Setup};
use crate::support::{free_port, Gateway};

/// The `Set-Cookie` lines of a response.
fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The `Set-Cookie` line for cookie `name`.
fn set_cookie_for<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name} in {lines:?}"))
}

/// A cookie's attributes, lower-cased and sorted, without `Max-Age`/`Expires`
/// (those are what a deletion changes).
fn attributes(line: &str) -> Vec<String> {
    let mut attrs: Vec<String> = line
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.starts_with("max-age") && !a.starts_with("expires"))
        .collect();
    attrs.sort();
    attrs
}

/// `GET path` with the jar's cookies, as a browser or as an API client.
async fn get(s: &Setup, gw: &Gateway, path: &str, jar: &Jar, html: bool) -> reqwest::Response {
    s.client
        .get(gw.url(path))
        .header("cookie", jar.header())
        .header(
            "accept",
            if html {
                "text/html"
            } else {
                "application/json"
            },
        )
        .send()
        .await
        .unwrap()
}

/// `POST /_auth/sign_out?rd=/bye` with the jar's cookies and `headers`.
async fn post_sign_out(s: &Setup, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = s
        .client
        .post(s.gw.url("/_auth/sign_out?rd=/bye"))
        .header("cookie", s.jar.header())
        .header("accept", "text/html");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// The origin of the gateway as a browser on it would send it.
fn gateway_origin(s: &Setup) -> String {
    format!("http://{}", s.gw.addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn ses16_a_cross_site_get_shows_a_sign_out_page_and_signs_nobody_out() {
    let mut s = Setup::start().await;
    assert_eq!(s.sign_in().await.status(), 302);
    // What an <img src> or a link on another site makes a browser send.
    let r = s
        .client
        .get(s.gw.url("/_auth/sign_out?rd=/bye"))
        .header("cookie", s.jar.header())
        .header("accept", "text/html")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(set_cookies(&r).is_empty(), "{:?}", set_cookies(&r));
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    // The form may lead to our own origins (an absolute `rd`, the provider's
    // way back) and the provider's end_session_endpoint (browsers apply
    // form-action to the redirects after the POST), and nowhere else.
    let provider = url::Url::parse(&s.provider.issuer()).unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.ends_with(&format!(
            "form-action 'self' {} {}",
            gateway_origin(&s),
            provider.origin().ascii_serialization()
        )),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(
        page.contains(r#"<form method="post" action="/_auth/sign_out?rd=%2Fbye">"#),
        "{page}"
    );
    assert_eq!(page.matches("<button").count(), 1, "{page}");
    assert!(!page.contains("<script"), "{page}");
    // The session still works.
    let r = get(&s, &s.gw, "/private", &s.jar, false).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn ses16_a_sign_out_post_not_proven_same_origin_is_refused_and_changes_nothing() {
    let mut s = Setup::start().await;
    assert_eq!(s.sign_in().await.status(), 302);
    let ours = gateway_origin(&s);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("neither header", vec![]),
        ("foreign Origin", vec![("origin", "http://evil.example")]),
        (
            "Origin of another port",
            vec![("origin", "http://127.0.0.1:1")],
        ),
        ("opaque Origin", vec![("origin", "null")]),
        (
            "Sec-Fetch-Site: cross-site",
            vec![("sec-fetch-site", "cross-site")],
        ),
        (
            "Sec-Fetch-Site: same-site",
            vec![("sec-fetch-site", "same-site")],
        ),
        (
            "cross-site beside our Origin",
            vec![("sec-fetch-site", "cross-site"), ("origin", &ours)],
        ),
        // The app has no `host`: it serves any, but names none as ours.
        (
            "Origin and Host of a host no config names",
            vec![
                ("host", "other.example"),
                ("origin", "http://other.example"),
            ],
        ),
    ];
    for (what, headers) in cases {
        let r = post_sign_out(&s, &headers).await;
        assert_eq!(r.status(), 403, "{what}");
        assert!(set_cookies(&r).is_empty(), "{what}: {:?}", set_cookies(&r));
        assert!(r.headers().get("location").is_none(), "{what}");
        let page = r.text().await.unwrap();
        assert!(page.contains("Sign-out refused"), "{what}: {page}");
    }
    // Nothing changed: the session still works, and the store has it live.
    let r = get(&s, &s.gw, "/private", &s.jar, false).await;
    assert_eq!(r.status(), 200);
    let store = portcullis::identity::store::open(&s.db).await.unwrap();
    let (user, _) = store.list_users().await.unwrap().remove(0);
    let sessions = store.user_sessions(&user.id).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert!(!sessions[0].revoked);
}

/// The sign-in host of an IPv6 `public_url` is its address without the
/// brackets, as the request's `Host` is read: a sign-out from that origin
/// (a browser that sends `Origin` only) is same-origin, one from another
/// origin is not.
#[tokio::test(flavor = "multi_thread")]
async fn ses16_a_sign_out_from_an_ipv6_sign_in_host_is_same_origin() {
    let up = crate::support::Upstream::start("app").await;
    let config = crate::support::base_config()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"[::1]:0\"")
        .replace("http://127.0.0.1:8080", "http://[::1]:8080");
    let gw = Gateway::start_full(&format!(
        "{config}\n[[app]]\nname = \"app\"\nupstream = \"{}\"\npublic_paths = [\"/\"]\n",
        up.url()
    ));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("http://{}/_auth/sign_out?rd=/bye", gw.addr);
    let ours = format!("http://{}", gw.addr);
    for (origin, status) in [(ours.as_str(), 303), ("http://evil.example", 403)] {
        let r = client
            .post(&url)
            .header("origin", origin)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{origin}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ses07_ses16_a_same_origin_sign_out_revokes_the_session_and_clears_its_cookies() {
    let mut s = Setup::start().await;
    let signed_in = s.sign_in().await;
    assert_eq!(signed_in.status(), 302);
    let session_set = set_cookies(&signed_in);
    let old = s.jar.header();
    // A login started meanwhile leaves its login-state cookie in the browser.
    let start = s.get(&s.gw.url("/_auth/login/demo?rd=/")).await;
    assert_eq!(start.status(), 302);
    let login_set = set_cookies(&start);
    // Named by its flow or not, every login cookie starts with this.
    let login_names: Vec<String> = login_set
        .iter()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n.to_string()))
        .filter(|n| n.starts_with("portcullis_login"))
        .collect();
    assert_eq!(login_names.len(), 1, "{login_set:?}");
    assert!(s.jar.get(&login_names[0]).is_some());

    let r = post_sign_out(&s, &[("origin", &gateway_origin(&s))]).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    // RP-initiated logout at the provider, coming back to rd.
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with(&format!("{}/end_session?", s.provider.issuer())),
        "{loc}"
    );
    let end = url::Url::parse(&loc).unwrap();
    let q: std::collections::BTreeMap<String, String> = end.query_pairs().into_owned().collect();
    assert!(q.contains_key("id_token_hint"), "{loc}");
    assert_eq!(
        q.get("post_logout_redirect_uri").map(String::as_str),
        Some(format!("{}/bye", s.gw.url("").trim_end_matches('/')).as_str())
    );
    // The session and login cookies deleted with the attributes they were set with.
    let cleared = set_cookies(&r);
    let mut set_with: Vec<(&str, &Vec<String>)> = vec![("portcullis", &session_set)];
    set_with.extend(login_names.iter().map(|n| (n.as_str(), &login_set)));
    for (name, set) in set_with {
        let deletion = set_cookie_for(&cleared, name);
        assert!(
            deletion.starts_with(&format!("{name}=;")),
            "{name} not emptied: {deletion}"
        );
        assert!(deletion.contains("Max-Age=0"), "{deletion}");
        assert_eq!(
            attributes(deletion),
            attributes(set_cookie_for(set, name)),
            "{name}: {deletion}"
        );
    }
    // SES-07: the old cookie, replayed, no longer works, and the store says revoked.
    let replay = Jar(vec![(
        "portcullis".into(),
        old.split_once('=').unwrap().1.to_string(),
    )]);
    let r = get(&s, &s.gw, "/private", &replay, false).await;
    assert_eq!(r.status(), 401);
    let r = get(&s, &s.gw, "/private", &replay, true).await;
    assert_eq!(r.status(), 302);
    let store = portcullis::identity::store::open(&s.db).await.unwrap();
    let (user, _) = store.list_users().await.unwrap().remove(0);
    let sessions = store.user_sessions(&user.id).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].revoked);
}

#[tokio::test(flavor = "multi_thread")]
async fn ses16_sign_out_from_sec_fetch_site_same_origin_without_end_session_goes_to_rd() {
    // URLs set by hand: no end_session_endpoint, so back to rd.
    let mut s = Setup::start_with(
        r#"type = "oauth2"
authorization_url = "ISSUER/authorize"
access_token_url = "ISSUER/token"
profile_url = "ISSUER/userinfo"
scopes = ["profile", "email"]"#,
        |_| {},
    )
    .await;
    assert_eq!(s.sign_in().await.status(), 302);
    let old = s.jar.clone();
    let r = post_sign_out(&s, &[("sec-fetch-site", "same-origin")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/bye");
    let cleared = set_cookies(&r);
    assert!(set_cookie_for(&cleared, "portcullis").contains("Max-Age=0"));
    let r = get(&s, &s.gw, "/private", &old, false).await;
    assert_eq!(r.status(), 401);
}

/// Another gateway on the same store, with `idle_timeout` set.
fn idle_replica(s: &Setup, idle: &str) -> Gateway {
    let config = s
        .config
        .replace(
            "[session]\n",
            &format!("[session]\nidle_timeout = \"{idle}\"\n"),
        )
        .replace(
            &s.gw.addr.to_string(),
            &format!("127.0.0.1:{}", free_port()),
        );
    assert!(config.contains("idle_timeout"));
    Gateway::start_full_on(&config, s.clock.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn ses06_a_session_used_regularly_stays_and_one_left_idle_is_refused() {
    let mut s = Setup::start_on_manual_clock("", "", |_| {}).await;
    assert_eq!(s.sign_in().await.status(), 302);
    // Two replicas with a 6 s idle timeout; identity_cache_ttl stays 30 s.
    let busy = idle_replica(&s, "6s");
    let other = idle_replica(&s, "6s");
    // Used every second for longer than the timeout: it stays.
    for second in 0..10 {
        let r = get(&s, &busy, "/private", &s.jar, false).await;
        assert_eq!(r.status(), 200, "after {second} s");
        s.advance(Duration::from_secs(1));
    }
    // The uses were written in the background: the store moved, and a replica
    // that never saw this session accepts it.
    let store = portcullis::identity::store::open(&s.db).await.unwrap();
    let (user, _) = store.list_users().await.unwrap().remove(0);
    let mut record = store.user_sessions(&user.id).await.unwrap().remove(0);
    // The background writes take real time; wait for them, not for the clock.
    for _ in 0..50 {
        if record.last_used_at >= record.created_at + 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        record = store.user_sessions(&user.id).await.unwrap().remove(0);
    }
    assert!(
        record.last_used_at >= record.created_at + 6,
        "{} vs {}",
        record.last_used_at,
        record.created_at
    );
    let r = get(&s, &other, "/private", &s.jar, false).await;
    assert_eq!(r.status(), 200);
    // Left idle past the timeout: refused, though the replicas' caches still
    // hold it (30 s); a browser is sent to sign in, an API client gets 401.
    s.advance(Duration::from_secs(10));
    let r = get(&s, &busy, "/private", &s.jar, false).await;
    assert_eq!(r.status(), 401);
    let r = get(&s, &other, "/private", &s.jar, true).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/_auth/sign_in?rd=/private");
    // Off by default: the gateway without idle_timeout still accepts it
    // (lifetime stays absolute, 12 h).
    let r = get(&s, &s.gw, "/private", &s.jar, false).await;
    assert_eq!(r.status(), 200);
}

/// The config error text for `body` (the file's path replaced by `FILE`).
fn config_problems(body: &str) -> String {
    let file = crate::support::config_file(body);
    match portcullis::config::load_with_env(&file.path, Vec::new()) {
        Ok(_) => panic!("config was accepted:\n{body}"),
        Err(e) => e
            .to_string()
            .replace(&file.path.display().to_string(), "FILE"),
    }
}

/// `base_config()` with `lines` added to `[session]`, and one app.
fn with_session(lines: &str) -> String {
    crate::support::base_config().replace("[session]\n", &format!("[session]\n{lines}\n"))
        + "\n[[app]]\nname = \"wiki\"\nupstream = \"http://127.0.0.1:3000\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n"
}

#[test]
fn ses06_an_idle_timeout_that_could_never_act_is_a_config_error() {
    let msg = config_problems(&with_session("lifetime = \"2h\"\nidle_timeout = \"2h\""));
    assert!(
        msg.contains("session.idle_timeout: 2h is not shorter than session.lifetime (2h)"),
        "{msg}"
    );
    assert!(
        msg.contains("FILE") && msg.contains("PORTCULLIS_SESSION__IDLE_TIMEOUT"),
        "{msg}"
    );
    let msg = config_problems(&with_session("idle_timeout = \"13h\""));
    assert!(
        msg.contains("session.idle_timeout: 13h is not shorter than session.lifetime (12h)"),
        "{msg}"
    );
    let msg = config_problems(&with_session("idle_timeout = \"0s\""));
    assert!(msg.contains("session.idle_timeout: `0s` is zero"), "{msg}");
    let msg = config_problems(&with_session("idle_timeout = \"a while\""));
    assert!(
        msg.contains("session.idle_timeout: `a while` is not a duration"),
        "{msg}"
    );
}

#[test]
fn ses06_check_prints_the_idle_timeout_and_it_is_off_by_default() {
    let check = |body: &str| {
        let file = crate::support::config_file(body);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check", "--config"])
            .arg(&file.path)
            .env_remove("PORTCULLIS_CONFIG")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = check(&with_session("idle_timeout = \"90m\""));
    assert!(text.contains("idle_timeout = \"1h 30m\""), "{text}");
    // Off by default: the session table has no idle_timeout (the server's
    // connection `idle_timeout`, printed in its own table, is another).
    let text = check(&with_session(""));
    let session = text
        .split("\n[session]\n")
        .nth(1)
        .and_then(|t| t.split("\n[").next())
        .unwrap_or_else(|| panic!("no [session] table in:\n{text}"));
    assert!(!session.contains("idle_timeout"), "{text}");
    let config = portcullis::config::load_with_env(
        &crate::support::config_file(&with_session("")).path,
        Vec::new(),
    )
    .unwrap();
    assert_eq!(config.session.idle_timeout, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_cookie_beside_a_pair_with_a_byte_outside_visible_ascii_is_still_read() {
    let mut s = Setup::start().await;
    assert_eq!(s.sign_in().await.status(), 302);
    // Read as it should be first: each worker that answers may remember it.
    for _ in 0..4 {
        assert_eq!(
            get(&s, &s.gw, "/private", &s.jar, false).await.status(),
            200
        );
    }
    // The same cookie beside a Latin-1 byte and a UTF-8 `café` (an app's
    // own cookies): those pairs are skipped, the session still read (SES-13;
    // before, the whole line was dropped and the user signed out). Before
    // the cookie is known to a worker, and once it is.
    let mut line = s.jar.header().into_bytes();
    line.extend_from_slice(b"; note=caf\xe9; other=caf\xc3\xa9");
    let mut fresh = s.jar.header().into_bytes();
    fresh.extend_from_slice(b"; note=caf\xe9");
    let gw2 = crate::support::Gateway::start_full(&s.config.replace(
        &s.gw.addr.to_string(),
        &format!("127.0.0.1:{}", crate::support::free_port()),
    ));
    let r = s
        .client
        .get(gw2.url("/private"))
        .header("cookie", http::HeaderValue::from_bytes(&fresh).unwrap())
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for _ in 0..4 {
        let r = s
            .client
            .get(s.gw.url("/private"))
            .header("cookie", http::HeaderValue::from_bytes(&line).unwrap())
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A pair of the session's own name that is not visible ASCII is
    // malformed, so skipped too (a well-formed second one would be doubt).
    let mut twice = s.jar.header().into_bytes();
    twice.extend_from_slice(b"; portcullis=caf\xe9");
    let r = s
        .client
        .get(s.gw.url("/private"))
        .header("cookie", http::HeaderValue::from_bytes(&twice).unwrap())
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a non-visible pair is skipped, not counted"
    );
    // A second, well-formed session pair on another line beside a pair that
    // is not visible: doubt, no session, whichever way the lines are read
    // (the worker remembers the first value; it must not decide alone).
    let r = s
        .client
        .get(s.gw.url("/private"))
        .header("cookie", s.jar.header())
        .header(
            "cookie",
            http::HeaderValue::from_bytes(b"portcullis=other; note=caf\xe9").unwrap(),
        )
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// SES-16 behind a proxy that ends TLS (`public_url` https in front of a
/// plain listener): the browser's origin is https, so a sign-out whose
/// `Origin` is `https://{Host}` (no `Sec-Fetch-Site`, as older browsers
/// send) is same-origin, and `http://{Host}` is not.
#[tokio::test(flavor = "multi_thread")]
async fn ses16_behind_a_proxy_ending_tls_a_sign_out_from_the_https_origin_is_same_origin() {
    let up = crate::support::Upstream::start("app").await;
    let gw = crate::support::Gateway::start_full(&format!(
        "{}\n[[app]]\nname = \"app\"\nupstream = \"{}\"\npublic_paths = [\"/\"]\n",
        crate::support::base_config().replace(
            "public_url = \"http://127.0.0.1:8080\"",
            "public_url = \"https://127.0.0.1:8080\""
        ),
        up.url()
    ));
    let post = |origin: String| {
        crate::support::client()
            .post(gw.url("/_auth/sign_out?rd=/bye"))
            .header("accept", "text/html")
            .header("origin", origin)
            .send()
    };
    let r = post(format!("https://{}", gw.addr)).await.unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let r = post(format!("http://{}", gw.addr)).await.unwrap();
    assert_eq!(r.status(), 403);
}
