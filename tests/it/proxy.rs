//! The proxy path: routing, public paths byte-for-byte, 302 vs 401, header
//! stripping, WebSocket, smuggling refused, admin endpoints, graceful shutdown.

use std::time::Duration;

use crate::support::{client, raw_exchange, websocket_echo, Gateway, Upstream};

async fn two_apps() -> (Gateway, Upstream, Upstream, Upstream) {
    let wiki = Upstream::start("wiki").await;
    let api = Upstream::start("wiki-api").await;
    let other = Upstream::start("default").await;
    let gw = Gateway::start(&format!(
        r#"
[[app]]
name = "wiki"
host = "wiki.example"
upstream = "{}"
public_paths = ["/", "/static/"]

[[app]]
name = "wiki-api"
host = "wiki.example"
path_prefix = "/api"
upstream = "{}"
public_paths = ["/api/open"]

[[app]]
name = "default"
path_prefix = "/pub"
upstream = "{}"
public_paths = ["/pub"]
"#,
        wiki.url(),
        api.url(),
        other.url()
    ));
    (gw, wiki, api, other)
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_host_then_longest_prefix() {
    let (gw, wiki, api, other) = two_apps().await;
    let c = client();
    let get = |host: &'static str, path: &'static str| {
        let c = c.clone();
        let url = gw.url(path);
        async move { c.get(url).header("host", host).send().await.unwrap() }
    };
    let r = get("wiki.example", "/page").await;
    assert_eq!(r.headers()["x-upstream"], "wiki");
    let r = get("WIKI.example:8080", "/api/open/x").await;
    assert_eq!(r.headers()["x-upstream"], "wiki-api");
    // `/apix` is not under `/api`: the host's catch-all serves it.
    let r = get("wiki.example", "/apix").await;
    assert_eq!(r.headers()["x-upstream"], "wiki");
    let r = get("other.example", "/pub/x").await;
    assert_eq!(r.headers()["x-upstream"], "default");
    // No app for this host and path: a 404 from the gateway, never a default upstream.
    let r = c
        .get(gw.url("/elsewhere"))
        .header("host", "other.example")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("No application is served at this address"));
    assert_eq!(wiki.requests().len(), 2);
    assert_eq!(api.requests().len(), 1);
    assert_eq!(other.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn public_path_reaches_upstream_byte_for_byte() {
    let (gw, wiki, _api, _other) = two_apps().await;
    let body = b"\x00binary\xffbody with bytes".to_vec();
    let r = client()
        .put(gw.url("/static/a%20b/file.txt?x=1&y=%2F&x=2"))
        .header("host", "wiki.example")
        .header("x-custom", "Value With Case")
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from wiki");
    let seen = wiki.requests();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "PUT");
    assert_eq!(s.uri, "/static/a%20b/file.txt?x=1&y=%2F&x=2");
    assert_eq!(s.body.as_ref(), body.as_slice());
    assert_eq!(s.header("x-custom"), Some("Value With Case"));
    assert_eq!(s.header("host"), Some("wiki.example"));
    assert_eq!(s.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        s.header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn protected_path_redirects_browsers_and_refuses_others() {
    let (gw, _wiki, api, _other) = two_apps().await;
    let c = client();
    let r = c
        .get(gw.url("/api/private?q=1"))
        .header("host", "wiki.example")
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "/_auth/sign_in?rd=/api/private%3Fq%3D1"
    );
    let r = c
        .get(gw.url("/api/private"))
        .header("host", "wiki.example")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"portcullis\""
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["error"], "unauthorized");
    assert!(
        api.requests().is_empty(),
        "a protected request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prx01_prx02_prx03_identity_headers_are_stripped_in_every_spelling() {
    let (gw, wiki, _api, _other) = two_apps().await;
    let (resp, _) = raw_exchange(
        gw.addr,
        b"GET /static/x HTTP/1.1\r\nHost: wiki.example\r\nX-Forwarded-User: admin\r\nx-forwarded-user: root\r\n\
X_Forwarded_Email: boss@example.com\r\nX-FORWARDED-GROUPS: admins\r\nX-Forwarded-Preferred_Username: admin\r\n\
X-Auth-Request-User: admin\r\nx_auth_request_email: a@b\r\nRemote_User: admin\r\nRemote-User: root\r\n\
X-Kept: yes\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = wiki.requests();
    assert_eq!(seen.len(), 1);
    for (name, _) in &seen[0].headers {
        let n = name.to_ascii_lowercase().replace('_', "-");
        assert!(
            !(n.starts_with("x-forwarded-user")
                || n.starts_with("x-forwarded-email")
                || n.starts_with("x-forwarded-groups")
                || n.starts_with("x-forwarded-preferred-username")
                || n.starts_with("x-auth-request-")
                || n == "remote-user"),
            "spoofed header {name} reached the upstream"
        );
    }
    assert_eq!(seen[0].header("x-kept"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn prx08_content_length_with_transfer_encoding_is_refused_and_closed() {
    let (gw, wiki, _api, _other) = two_apps().await;
    let (resp, closed) = raw_exchange(
        gw.addr,
        b"POST /static/x HTTP/1.1\r\nHost: wiki.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
0\r\n\r\nGET /static/smuggled HTTP/1.1\r\nHost: wiki.example\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        closed,
        "the connection stayed open after a smuggling attempt"
    );
    assert_eq!(resp.matches("HTTP/1.1").count(), 1, "{resp}");
    assert!(wiki.requests().is_empty(), "bytes reached the upstream");
}

/// PRX-11: HTTP/1.0 has no chunked body, and a body without a length runs
/// to the close: both are refused and closed, nothing forwarded.
#[tokio::test(flavor = "multi_thread")]
async fn prx11_http10_chunked_or_unmeasured_bodies_are_refused_and_closed() {
    let (gw, wiki, _api, _other) = two_apps().await;
    for req in [
        "POST /static/x HTTP/1.0\r\nHost: wiki.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "POST /static/x HTTP/1.0\r\nHost: wiki.example\r\nConnection: keep-alive\r\n\r\nhello",
        "PUT /static/x HTTP/1.0\r\nHost: wiki.example\r\nConnection: keep-alive\r\n\r\nGET /static/smuggled HTTP/1.1\r\nHost: wiki.example\r\n\r\n",
    ] {
        let (resp, closed) = raw_exchange(gw.addr, req.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 400") || resp.starts_with("HTTP/1.0 400"), "{req:?}: {resp}");
        assert!(closed, "{req:?}: connection left open");
        assert!(wiki.requests().is_empty(), "{req:?}: bytes reached the upstream");
    }
    // With its length (0 too), an HTTP/1.0 body is served.
    for req in [
        "POST /static/x HTTP/1.0\r\nHost: wiki.example\r\nContent-Length: 5\r\n\r\nhello",
        "POST /static/x HTTP/1.0\r\nHost: wiki.example\r\nContent-Length: 0\r\n\r\n",
    ] {
        let (resp, _) = raw_exchange(gw.addr, req.as_bytes());
        assert!(
            resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"),
            "{resp}"
        );
    }
    assert_eq!(wiki.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn prx09_differing_content_lengths_are_refused_and_identical_ones_collapse() {
    let (gw, wiki, _api, _other) = two_apps().await;
    for head in [
        "Content-Length: 3\r\nContent-Length: 30\r\n",
        "Content-Length: 3, 3\r\n",
        "Content-Length: 3\r\nContent-Length: 03\r\n",
    ] {
        let req = format!("POST /static/x HTTP/1.1\r\nHost: wiki.example\r\n{head}\r\nabc");
        let (resp, closed) = raw_exchange(gw.addr, req.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 400"), "{head:?}: {resp}");
        assert!(closed, "{head:?}: connection left open");
    }
    assert!(wiki.requests().is_empty(), "bytes reached the upstream");
    // The same length twice is one length: forwarded once, with the body.
    let req = "POST /static/x HTTP/1.1\r\nHost: wiki.example\r\nContent-Length: 3\r\ncontent-length: 3\r\nConnection: close\r\n\r\nabc";
    let (resp, _) = raw_exchange(gw.addr, req.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = wiki.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body.as_ref(), b"abc");
    let lengths: Vec<&str> = seen[0]
        .headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(lengths, ["3"], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prx20_too_many_headers_get_431() {
    let (gw, wiki, _api, _other) = two_apps().await;
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /static/x HTTP/1.1\r\nHost: wiki.example\r\n{many}\r\n");
    let (resp, closed) = raw_exchange(gw.addr, req.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    // hyper answers this itself (a bare 431, before the service runs: its
    // header array stays on the stack at 100 fields); the gateway's own answer,
    // not the upstream's, since nothing reaches the upstream (asserted below).
    assert!(closed, "connection left open after 431");
    let big = format!(
        "GET /static/x HTTP/1.1\r\nHost: wiki.example\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let (resp, _) = raw_exchange(gw.addr, big.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    // A request line over 8 KiB is 414, also one longer than hyper's 60 KiB
    // limit on a whole head (which hyper alone answers 431), in a target or
    // in a method, sent whole or in pieces, with more requests behind it.
    for (method, target) in [
        ("GET", "a".repeat(9 * 1024)),
        ("GET", "a".repeat(70 * 1024)),
        ("GET", "a".repeat(300 * 1024)),
        (&*"A".repeat(70 * 1024), String::new()),
    ] {
        let req = format!(
            "{method} /static/{target} HTTP/1.1\r\nHost: wiki.example\r\n\r\nGET /static/x HTTP/1.1\r\nHost: wiki.example\r\n\r\n"
        );
        let (resp, closed) = raw_exchange(gw.addr, req.as_bytes());
        let what = format!(
            "method {} bytes, target {} bytes",
            method.len(),
            target.len()
        );
        assert!(resp.starts_with("HTTP/1.1 414"), "{what}: {resp}");
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{what}: {resp}");
        assert!(closed, "{what}: connection left open after 414");
    }
    assert!(wiki.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn prx06_dot_segments_under_a_public_path_are_refused() {
    let (gw, wiki, api, _other) = two_apps().await;
    for path in [
        "/static/../api/private",
        "/static/%2e%2e/api/private",
        "/static/..;/api/private",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: wiki.example\r\nConnection: close\r\n\r\n");
        let (resp, _) = raw_exchange(gw.addr, req.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 400"), "{path}: {resp}");
    }
    assert!(wiki.requests().is_empty() && api.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_passes_through() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ws = websocket_echo().await;
    let gw = Gateway::start(&format!(
        "[[app]]\nname = \"ws\"\nupstream = \"http://{ws}\"\npublic_paths = [\"/ws\"]\n"
    ));
    let (mut socket, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    socket
        .send(Message::text("ping through the gate"))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        echoed.into_text().unwrap().as_str(),
        "ping through the gate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_report_health_readiness_and_metrics() {
    let (gw, _wiki, _api, _other) = two_apps().await;
    let c = client();
    let r = c.get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["ready"], true);
    // Traffic of three outcomes, then the counters must show them.
    c.get(gw.url("/static/x"))
        .header("host", "wiki.example")
        .send()
        .await
        .unwrap();
    c.get(gw.url("/api/private"))
        .header("host", "wiki.example")
        .send()
        .await
        .unwrap();
    c.get(gw.url("/nothing"))
        .header("host", "nowhere.example")
        .send()
        .await
        .unwrap();
    // Metrics are recorded in the logging phase, just after the response is
    // sent: wait (bounded) until the last request has been counted.
    let wanted = [
        r#"portcullis_requests_total{app="wiki",outcome="public"} 1"#,
        r#"portcullis_requests_total{app="wiki-api",outcome="unauthorized"} 1"#,
        r#"portcullis_requests_total{app="-",outcome="not_found"} 1"#,
    ];
    let mut text = String::new();
    for _ in 0..100 {
        text = c
            .get(gw.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if wanted.iter().all(|w| text.contains(w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        text.contains(r#"portcullis_requests_total{app="wiki",outcome="public"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_requests_total{app="wiki-api",outcome="unauthorized"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_requests_total{app="-",outcome="not_found"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("portcullis_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_endpoints_answer_anonymous_clients() {
    let (gw, wiki, _api, _other) = two_apps().await;
    let c = client();
    let r = c
        .get(gw.url("/_auth/check"))
        .header("host", "wiki.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(gw.url("/_auth/nope"))
        .header("host", "wiki.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(wiki.requests().is_empty(), "/_auth must never be proxied");
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let up = Upstream::start("slow").await;
    let mut gw = Gateway::start(&format!(
        "[[app]]\nname = \"slow\"\nupstream = \"{}\"\npublic_paths = [\"/\"]\n",
        up.url()
    ));
    let url = gw.url("/slow");
    let pending = tokio::spawn(async move { client().get(url).send().await });
    // Wait until the upstream has the request, then ask the gateway to stop.
    for _ in 0..100 {
        if !up.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.requests().len(), 1);
    let running = gw.running.take().unwrap();
    let stopper = std::thread::spawn(move || running.shutdown());
    let resp = pending
        .await
        .unwrap()
        .expect("the in-flight request was cut off");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello from slow");
    stopper.join().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn prx18_body_of_a_refused_request_is_never_parsed_as_a_request() {
    let (gw, wiki, api, _other) = two_apps().await;
    // The body of a refused POST is itself a request for a public path.
    let inner = "GET /static/smuggled HTTP/1.1\r\nHost: wiki.example\r\n\r\n";
    let req = format!(
        "POST /api/private HTTP/1.1\r\nHost: wiki.example\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    );
    let (resp, closed) = raw_exchange(gw.addr, req.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{resp}");
    assert!(closed);
    assert!(wiki.requests().is_empty() && api.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_page_offers_the_sources_of_the_app_serving_rd() {
    let up = Upstream::start("x").await;
    let source = |slug: &str, name: &str| {
        format!(
            "[[source]]\nslug = \"{slug}\"\nname = \"{name}\"\ntype = \"oauth2\"\nconsumer_key = \"k\"\nconsumer_secret = \"s\"\n\
             authorization_url = \"https://idp.example/a\"\naccess_token_url = \"https://idp.example/t\"\nprofile_url = \"https://idp.example/p\"\n"
        )
    };
    let gw = Gateway::start(&format!(
        "{}{}\n[[app]]\nname = \"a\"\nupstream = \"{u}\"\nsources = [\"one\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n\n[[app]]\nname = \"b\"\npath_prefix = \"/b\"\nupstream = \"{u}\"\nsources = [\"two\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        source("one", "First <IdP>"),
        source("two", "Second IdP"),
        u = up.url()
    ));
    let c = client();
    let page = |rd: &'static str| {
        let c = c.clone();
        let url = gw.url(&format!("/_auth/sign_in?rd={rd}"));
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let a = page("/x").await;
    assert!(
        a.contains("Sign in with First &lt;IdP&gt;") && !a.contains("Second IdP"),
        "{a}"
    );
    let b = page("/b/x").await;
    assert!(
        b.contains("Sign in with Second IdP") && !b.contains("First"),
        "{b}"
    );
    // `rd` is routed as a request to it would be: canonical, `;parameters`
    // and unreserved escapes read as the path (`%2562` is `%62` once the
    // query is decoded, `b`).
    for rd in ["/b;v=1/x", "/%2562/x"] {
        let b = page(rd).await;
        assert!(
            b.contains("Sign in with Second IdP") && !b.contains("First"),
            "{rd}: {b}"
        );
    }
    // A browser sent to sign in comes back to the canonical path: `//b/x`
    // is `/b/x` (as `//b/x`, `rd` would be refused for `/`).
    let r = c
        .get(gw.url("//b/x?y=1"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/_auth/sign_in?rd=/b/x%3Fy%3D1");
    // An open redirect in rd falls back to /.
    let evil = page("//evil.example").await;
    assert!(
        evil.contains("rd=%2F\"") && !evil.contains("evil.example"),
        "{evil}"
    );
    // Starting a flow with a source the app does not offer is refused.
    let r = c
        .get(gw.url("/_auth/login/two?rd=/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(gw.url("/_auth/login/two?rd=/b/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("https://idp.example/a?"));
}

#[tokio::test(flavor = "multi_thread")]
async fn prx29_a_bearer_token_is_answered_by_rfc6750_never_redirected() {
    let (gw, _wiki, api, _other) = two_apps().await;
    let r = client()
        .get(gw.url("/api/private"))
        .header("host", "wiki.example")
        .header("accept", "text/html")
        .header("authorization", "Bearer abc.def.ghi")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "a browser with a bearer token was redirected"
    );
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Bearer realm=\"portcullis\", error=\"invalid_token\""),
        "{challenge}"
    );
    assert!(!challenge.contains("abc.def.ghi"));
    let r = client()
        .get(gw.url("/api/private"))
        .header("host", "wiki.example")
        .header("authorization", "Bearer abc.def.ghi")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert!(
        !body.to_string().contains("abc.def.ghi"),
        "the token was echoed"
    );
    assert!(api.requests().is_empty());
}

/// A demo OpenID provider whose tokens the path tests use as machine identities.
pub(crate) async fn token_provider() -> portcullis::demo::Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    portcullis::demo::provider::start(
        listener,
        portcullis::demo::ProviderConfig::example("http://127.0.0.1:1/cb").unwrap(),
    )
    .await
}

/// A bearer token for app `guarded` with these groups.
pub(crate) fn token_with_groups(
    p: &portcullis::demo::Provider,
    sub: &str,
    groups: &[&str],
) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "iss": p.issuer(), "sub": sub, "aud": ["guarded"],
        "iat": now, "exp": now + 600, "groups": groups,
    });
    p.sign(claims.as_object().unwrap()).unwrap()
}

/// An app where everyone signed in may go anywhere except `/admin`, which only
/// group `admins` may open, with a public `/public/` (DESIGN "Access rules and paths").
async fn guarded_app(server_extra: &str) -> (Gateway, Upstream, portcullis::demo::Provider) {
    guarded_app_with(server_extra, "").await
}

/// [`guarded_app`] with `app_extra` added to the app's table.
async fn guarded_app_with(
    server_extra: &str,
    app_extra: &str,
) -> (Gateway, Upstream, portcullis::demo::Provider) {
    let provider = token_provider().await;
    let up = Upstream::start("guarded").await;
    let gw = Gateway::start_full(&format!(
        "{}\n[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\n\
         [[app]]\nname = \"guarded\"\n{app_extra}\nupstream = \"{}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"guarded\"]\n\
         public_paths = [\"/public/\"]\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\ngroups = [\"admins\"]\npath_prefix = \"/admin\"\n",
        crate::support::base_config().replace("[session]", &format!("{server_extra}\n[session]")),
        provider.well_known_url(),
        up.url()
    ));
    gw.ready().await;
    (gw, up, provider)
}

/// Sends one raw request line (the target exactly as written) and returns the status.
fn raw_status(gw: &Gateway, target: &str, headers: &str) -> (u16, String) {
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: guarded.example\r\n{headers}Connection: close\r\n\r\n"
    );
    let (resp, _) = raw_exchange(gw.addr, req.as_bytes());
    let status = resp
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{target}: no status in {resp:?}"));
    (status, resp)
}

#[tokio::test(flavor = "multi_thread")]
async fn prx06_hostile_path_spellings_are_decided_on_and_forwarded_as_one_canonical_path() {
    let (gw, up, provider) = guarded_app("").await;
    let guest = format!(
        "Authorization: Bearer {}\r\n",
        token_with_groups(&provider, "guest", &["staff"])
    );
    let admin = format!(
        "Authorization: Bearer {}\r\n",
        token_with_groups(&provider, "root", &["admins"])
    );
    // (target as sent; status for anonymous, a non-admin, an admin; the exact
    // target the upstream receives whenever it is forwarded)
    let cases: &[(&str, u16, u16, u16, Option<&str>)] = &[
        ("/admin", 401, 403, 200, Some("/admin")),
        ("//admin", 401, 403, 200, Some("/admin")),
        (
            "///admin//users?q=1",
            401,
            403,
            200,
            Some("/admin/users?q=1"),
        ),
        ("/admin;x", 401, 403, 200, Some("/admin;x")),
        (
            "/admin;jsessionid=1/users",
            401,
            403,
            200,
            Some("/admin;jsessionid=1/users"),
        ),
        ("/%61dmin", 401, 403, 200, Some("/admin")),
        ("/%61%64%6d%69%6e/x", 401, 403, 200, Some("/admin/x")),
        ("/admin%2Fx", 401, 403, 200, Some("/admin%2Fx")),
        ("/admin%2f", 401, 403, 200, Some("/admin%2F")),
        ("/%2Fadmin", 401, 403, 200, Some("/%2Fadmin")),
        ("/admin%3bx", 401, 403, 200, Some("/admin%3Bx")),
        ("/;x/admin", 401, 403, 200, Some("/;x/admin")),
        // Case-sensitive, segment-bounded: these are not /admin.
        ("/ADMIN", 401, 200, 200, Some("/ADMIN")),
        ("/administrator", 401, 200, 200, Some("/administrator")),
        // Dot segments, NUL, backslashes, however spelled: 400, nothing forwarded.
        ("/public/../admin", 400, 400, 400, None),
        ("/%2e%2e/admin", 400, 400, 400, None),
        ("/public/..%2Fadmin", 400, 400, 400, None),
        ("/public/%2e%2e/admin", 400, 400, 400, None),
        ("/public/.%2E/admin", 400, 400, 400, None),
        ("/./admin", 400, 400, 400, None),
        ("/public/..;/admin", 400, 400, 400, None),
        ("/public;x/../admin", 400, 400, 400, None),
        ("/admin%00", 400, 400, 400, None),
        ("/public/%5c..%5cadmin", 400, 400, 400, None),
        ("/public/%zz", 400, 400, 400, None),
        // Public paths, however spelled, and only below /public/.
        ("/public/x", 200, 200, 200, Some("/public/x")),
        ("//public//x", 200, 200, 200, Some("/public/x")),
        ("/%70ublic/x", 200, 200, 200, Some("/public/x")),
        ("/public;v=1/x", 200, 200, 200, Some("/public;v=1/x")),
        ("/public", 401, 200, 200, Some("/public")),
        ("/publicity", 401, 200, 200, Some("/publicity")),
    ];
    for &(target, anonymous, non_admin, root, forwarded) in cases {
        for (who, headers, want) in [
            ("anonymous", "", anonymous),
            ("non-admin", guest.as_str(), non_admin),
            ("admin", admin.as_str(), root),
        ] {
            let before = up.requests().len();
            let (status, resp) = raw_status(&gw, target, headers);
            assert_eq!(status, want, "{who} {target}: {resp}");
            let seen = up.requests();
            if want == 200 {
                assert_eq!(
                    seen.len(),
                    before + 1,
                    "{who} {target} was not forwarded once"
                );
                assert_eq!(
                    Some(seen[before].uri.as_str()),
                    forwarded,
                    "{who} {target}: the upstream received another path"
                );
            } else {
                assert_eq!(seen.len(), before, "{who} {target} reached the upstream");
            }
        }
    }
}

/// Traefik's `forwardAuth` (and nginx without `proxy_set_header Host`)
/// sends the check with the gateway's own address as `Host` and names the
/// request asked about in `X-Forwarded-Host`: the check answers for that
/// target, though its own `Host` is neither an app host nor the sign-in
/// host. Other gateway endpoints on such a host stay 404.
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_sent_to_the_gateway_s_own_address_decides_on_the_forwarded_host() {
    let (gw, up, provider) = guarded_app_with(
        "trusted_proxies = [\"127.0.0.1/32\"]\n",
        "host = \"guarded.example\"",
    )
    .await;
    let token = |user: &str, groups: &[&str]| {
        format!(
            "Authorization: Bearer {}\r\n",
            token_with_groups(&provider, user, groups)
        )
    };
    let check = |headers: &str| {
        let req = format!(
            "GET /_auth/check HTTP/1.1\r\nHost: portcullis:4180\r\n{headers}Connection: close\r\n\r\n"
        );
        let (resp, _) = raw_exchange(gw.addr, req.as_bytes());
        (resp.get(9..12).unwrap().parse::<u16>().unwrap(), resp)
    };
    let admin_path = "X-Forwarded-Proto: https\r\nX-Forwarded-Host: guarded.example\r\nX-Forwarded-Uri: /admin\r\n";
    let (status, resp) = check(admin_path);
    assert_eq!(status, 401, "{resp}");
    let (status, resp) = check(&format!("{admin_path}{}", token("guest", &["staff"])));
    // Known and refused: forward auth answers 200 or 401 (docs/design.md).
    assert_eq!(forward_auth_verdict(status, &resp), DENIED, "{resp}");
    let (status, resp) = check(&format!("{admin_path}{}", token("root", &["admins"])));
    assert_eq!(status, 200, "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("x-auth-request-user: root"),
        "{resp}"
    );
    // A target no app serves admits nobody, whatever the check's own host.
    let (status, resp) = check(&format!(
        "X-Forwarded-Host: elsewhere.example\r\nX-Forwarded-Uri: /\r\n{}",
        token("root", &["admins"])
    ));
    assert_eq!(status, 401, "{resp}");
    assert!(
        resp.contains("no application here accepts bearer tokens"),
        "{resp}"
    );
    // Only the check answers on a host that is no app's and not the sign-in host.
    let req = "GET /_auth/sign_in HTTP/1.1\r\nHost: portcullis:4180\r\nConnection: close\r\n\r\n";
    let (resp, _) = raw_exchange(gw.addr, req.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    assert!(up.requests().is_empty());
}

/// A forward-auth answer refusing a known principal: 401, as `/_auth/check`
/// answers 200 or 401 only (docs/design.md), told apart from "sign in" by
/// its body: `access_denied` for a person, `insufficient_scope` for a token.
const DENIED: u16 = 0;

/// `status`, or [`DENIED`] for a 401 whose body says the principal is refused.
fn forward_auth_verdict(status: u16, resp: &str) -> u16 {
    let refused = resp.contains("\"error\":\"access_denied\"")
        || resp.contains("\"error\":\"insufficient_scope\"");
    match (status, refused) {
        (401, true) => DENIED,
        (_, false) => status,
        (_, true) => panic!("access_denied with status {status}: {resp}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prx06_forward_auth_canonicalises_the_forwarded_uri_before_deciding() {
    let (gw, up, provider) = guarded_app("trusted_proxies = [\"127.0.0.1/32\"]\n").await;
    let guest = format!(
        "Authorization: Bearer {}\r\n",
        token_with_groups(&provider, "guest", &["staff"])
    );
    let check = |forwarded: &str, auth: &str| {
        let (status, resp) = raw_status(&gw, "/_auth/check", &format!("{forwarded}{auth}"));
        (status, resp)
    };
    let by_uri =
        |uri: &str| format!("X-Forwarded-Host: guarded.example\r\nX-Forwarded-Uri: {uri}\r\n");
    let by_url = |path: &str| format!("X-Original-URL: http://guarded.example{path}\r\n");
    for (forwarded, anonymous, non_admin) in [
        (by_uri("/admin"), 401, DENIED),
        (by_uri("//admin"), 401, DENIED),
        (by_uri("/admin;x?y=1"), 401, DENIED),
        (by_uri("/%61dmin"), 401, DENIED),
        (by_uri("/admin%2Fx"), 401, DENIED),
        (by_url("//admin"), 401, DENIED),
        (by_url("/%61dmin;x"), 401, DENIED),
        // No request target holds a fragment: `/admin#x` was decided as
        // `/admin%23x` (no admin path) while an app reads `/admin`, and one
        // after a public path could hide `/../admin`.
        (by_uri("/admin#x"), 400, 400),
        (by_uri("/public/x#/../../admin"), 400, 400),
        (by_url("/admin#x"), 400, 400),
        (by_uri("/wiki"), 401, 200),
        (by_uri("/public/x"), 200, 200),
        (by_uri("//public/x"), 200, 200),
        (by_uri("/%70ublic/x"), 200, 200),
        (by_url("/public;v=1/x"), 200, 200),
        // A path the proxy would refuse is refused here too, never "public".
        (by_uri("/public/../admin"), 400, 400),
        (by_uri("/public/%2e%2e/admin"), 400, 400),
        (by_uri("/public/..%2Fadmin"), 400, 400),
        (by_url("/public/../admin"), 400, 400),
        (by_url("/public/%2e%2e/admin"), 400, 400),
        (by_url("/public/x%00"), 400, 400),
    ] {
        let (status, resp) = check(&forwarded, "");
        let verdict = forward_auth_verdict(status, &resp);
        assert_eq!(verdict, anonymous, "anonymous {forwarded:?}: {resp}");
        let (status, resp) = check(&forwarded, &guest);
        let verdict = forward_auth_verdict(status, &resp);
        assert_eq!(verdict, non_admin, "non-admin {forwarded:?}: {resp}");
    }
    // JWT-26 for the request asked about: a bearer header beside an
    // `access_token` in the forwarded query is ambiguous, 400.
    for forwarded in [
        by_uri("/wiki?access_token=junk"),
        by_uri("/wiki?a=1&access_token=junk"),
        by_url("/wiki?access_token=junk"),
    ] {
        let (status, resp) = check(&forwarded, &guest);
        assert_eq!(status, 400, "{forwarded:?}: {resp}");
        assert!(resp.contains("invalid_request"), "{resp}");
    }
    let (status, resp) = check(&by_uri("/wiki?token=x"), &guest);
    assert_eq!(status, 200, "{resp}");
    assert!(up.requests().is_empty(), "forward auth proxied a request");
}

/// Forward auth: a trusted proxy that names the target by several headers
/// at once (Authelia's nginx snippets send `X-Original-URL` beside
/// `X-Forwarded-Host` and `X-Forwarded-Uri`) is believed when they agree
/// (after canonicalisation) and refused when any two differ; a path-only
/// `X-Original-URL` (IIS's spelling) is a path on the check's own host.
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_believes_a_target_named_by_several_agreeing_headers_and_refuses_two_that_differ(
) {
    let (gw, up, provider) = guarded_app("trusted_proxies = [\"127.0.0.1/32\"]\n").await;
    let guest = format!(
        "Authorization: Bearer {}\r\n",
        token_with_groups(&provider, "guest", &["staff"])
    );
    let all = |url_path: &str, host: &str, uri: &str| {
        format!(
            "X-Original-URL: http://guarded.example{url_path}\r\nX-Forwarded-Host: {host}\r\n\
             X-Forwarded-Uri: {uri}\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Method: GET\r\n"
        )
    };
    for (forwarded, anonymous, non_admin) in [
        (all("/admin", "guarded.example", "/admin?x=1"), 401, DENIED),
        (all("/wiki", "guarded.example", "/wiki"), 401, 200),
        (
            all("/public/x", "guarded.example", "//%70ublic/x"),
            200,
            200,
        ),
        // Two that differ: the client's copy beside the proxy's.
        (all("/public/x", "guarded.example", "/admin"), 400, 400),
        (all("/admin", "guarded.example", "/public/x"), 400, 400),
        (all("/public/x", "elsewhere.example", "/public/x"), 400, 400),
        (
            "X-Forwarded-Uri: /public/x\r\nX-Original-URI: /admin\r\n".into(),
            400,
            400,
        ),
        ("X-Original-URL: /admin\r\n".into(), 401, DENIED),
        ("X-Original-URL: /public/x\r\n".into(), 200, 200),
        // A scheme-relative value names no host: a path on the check's own.
        (
            "X-Original-URL: //elsewhere.example/public/x\r\n".into(),
            401,
            200,
        ),
        (
            "X-Original-URL: /public/x\r\nX-Forwarded-Uri: /admin\r\n".into(),
            400,
            400,
        ),
    ] {
        let (status, resp) = raw_status(&gw, "/_auth/check", &forwarded);
        let verdict = forward_auth_verdict(status, &resp);
        assert_eq!(verdict, anonymous, "anonymous {forwarded:?}: {resp}");
        let (status, resp) = raw_status(&gw, "/_auth/check", &format!("{forwarded}{guest}"));
        let verdict = forward_auth_verdict(status, &resp);
        assert_eq!(verdict, non_admin, "non-admin {forwarded:?}: {resp}");
    }
    assert!(up.requests().is_empty(), "forward auth proxied a request");
}

/// PRX-14 in forward auth: a trusted proxy's `X-Forwarded-Host` or
/// `X-Original-URL` naming a host the gateway would refuse (userinfo) is a
/// 400, never decided on part of it; the same target well formed is public.
#[tokio::test(flavor = "multi_thread")]
async fn prx14_forward_auth_refuses_a_forwarded_host_with_userinfo() {
    let (gw, up, _provider) = guarded_app("trusted_proxies = [\"127.0.0.1/32\"]\n").await;
    for forwarded in [
        "X-Forwarded-Host: guarded.example:@evil.com\r\nX-Forwarded-Uri: /public/x\r\n",
        "X-Original-URL: http://guarded.example:@evil.com/public/x\r\n",
        "X-Original-URL: http://admin@guarded.example/public/x\r\n",
    ] {
        let (status, resp) = raw_status(&gw, "/_auth/check", forwarded);
        assert_eq!(status, 400, "{forwarded:?}: {resp}");
    }
    let (status, resp) = raw_status(
        &gw,
        "/_auth/check",
        "X-Forwarded-Host: guarded.example\r\nX-Forwarded-Uri: /public/x\r\n",
    );
    assert_eq!(status, 200, "{resp}");
    assert!(up.requests().is_empty(), "forward auth proxied a request");
}

/// Every forwarding header a client might forge, in several spellings.
const FORGED_FORWARDING: &str = "X-Forwarded-For: 6.6.6.6\r\nX_Forwarded_For: 7.7.7.7\r\n\
X-Forwarded-Proto: https\r\nX-Forwarded-Host: admin.example\r\nX-Forwarded-Port: 8443\r\n\
X-Forwarded-Uri: /admin\r\nx_forwarded_uri: /admin\r\nX-Forwarded-Prefix: /admin\r\nX-FORWARDED-METHOD: DELETE\r\n\
X-Original-URL: http://admin.example/admin\r\nX-Original-URI: /admin\r\nX-Real-IP: 1.2.3.4\r\nX_Real_IP: 1.2.3.4\r\n\
Forwarded: for=1.2.3.4;proto=https\r\nX-Portcullis-Assertion: forged\r\nx_portcullis_user: root\r\n\
X-Forwarded-Access-Token: forged\r\nX_Forwarded_Access_Token: forged\r\nX-Kept: yes\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn prx05_forwarding_headers_of_an_untrusted_client_are_removed_or_replaced() {
    let (gw, up, _provider) = guarded_app("").await;
    let (status, resp) = raw_status(&gw, "/public/x", FORGED_FORWARDING);
    assert_eq!(status, 200, "{resp}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    let mut names: Vec<&str> = seen[0].headers.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "host",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-kept",
            "x-real-ip"
        ],
        "{:?}",
        seen[0].headers
    );
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen[0].header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen[0].header("x-forwarded-host"), Some("guarded.example"));
}

#[tokio::test(flavor = "multi_thread")]
async fn prx05_a_trusted_proxy_keeps_its_forwarding_headers_but_never_gateway_ones() {
    let (gw, up, _provider) = guarded_app("trusted_proxies = [\"127.0.0.1/32\"]\n").await;
    let (status, resp) = raw_status(&gw, "/public/x", FORGED_FORWARDING);
    assert_eq!(status, 200, "{resp}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.header("x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(s.header("x-forwarded-proto"), Some("https"));
    assert_eq!(s.header("x-forwarded-host"), Some("admin.example"));
    assert_eq!(s.header("x-forwarded-port"), Some("8443"));
    assert_eq!(s.header("x-forwarded-uri"), Some("/admin"));
    assert_eq!(s.header("x-forwarded-prefix"), Some("/admin"));
    assert_eq!(s.header("x-forwarded-method"), Some("DELETE"));
    assert_eq!(
        s.header("x-original-url"),
        Some("http://admin.example/admin")
    );
    assert_eq!(s.header("x-original-uri"), Some("/admin"));
    assert_eq!(s.header("x-real-ip"), Some("1.2.3.4"));
    assert_eq!(s.header("forwarded"), Some("for=1.2.3.4;proto=https"));
    for (name, _) in &s.headers {
        assert!(
            !name.contains('_')
                && !name.starts_with("x-portcullis-")
                && name != "x-forwarded-access-token",
            "{name} reached the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_that_sends_no_x_real_ip_the_upstream_gets_the_client_s_address() {
    let (gw, up, _provider) = guarded_app("trusted_proxies = [\"127.0.0.1/32\"]\n").await;
    let (status, resp) = raw_status(&gw, "/public/x", "X-Forwarded-For: 203.0.113.9\r\n");
    assert_eq!(status, 200, "{resp}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-real-ip"), Some("203.0.113.9"));
    assert_eq!(
        seen[0].header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prx04_fields_a_client_nominates_go_before_the_gateway_adds_its_own() {
    let (gw, up, provider) = guarded_app("").await;
    let admin = token_with_groups(&provider, "root", &["admins"]);
    let body = "hello";
    let req = format!(
        "POST /admin/x HTTP/1.1\r\nHost: guarded.example\r\nAuthorization: Bearer {admin}\r\n\
X-Forwarded-User: mallory\r\nX-Secret: s\r\nX-Kept: k\r\nContent-Length: {}\r\n\
Connection: close, X-Forwarded-User, X-Real-IP, X-Secret\r\n\r\n{body}",
        body.len()
    );
    let (resp, _) = raw_exchange(gw.addr, req.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    // Nominated, yet the gateway's own values arrive; the client's are gone.
    assert_eq!(s.header("x-forwarded-user"), Some("root"));
    assert_eq!(s.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(s.header("x-secret"), None);
    assert_eq!(s.header("x-kept"), Some("k"));
    assert_eq!(s.body.as_ref(), body.as_bytes());

    // Nominated forwarding fields: the client's copies go, the gateway's
    // own still reach the upstream.
    let (status, resp) = raw_status(
        &gw,
        "/public/x",
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\n\
         Connection: keep-alive, X-Forwarded-For, x-forwarded-proto, X-Forwarded-Host\r\n",
    );
    assert_eq!(status, 200, "{resp}");
    let seen = up.requests();
    let s = seen.last().unwrap();
    assert_eq!(s.header("x-forwarded-for"), Some("127.0.0.1"), "{s:?}");
    assert_eq!(s.header("x-forwarded-proto"), Some("http"), "{s:?}");
    assert_eq!(
        s.header("x-forwarded-host"),
        Some("guarded.example"),
        "{s:?}"
    );

    // A request that nominates what it cannot lose is refused, not forwarded half.
    for nominated in ["Host", "Content-Length", "\"Host\""] {
        let (status, resp) = raw_status(
            &gw,
            "/public/x",
            &format!("Connection: keep-alive, {nominated}\r\n"),
        );
        assert_eq!(status, 400, "{nominated}: {resp}");
    }
    assert_eq!(
        up.requests().len(),
        2,
        "a refused request reached the upstream"
    );
}

/// An upstream that answers every request with the same raw bytes (or, with
/// `None`, reads the request and never answers), and counts the connections
/// that its peer closed.
struct RawUpstream {
    addr: std::net::SocketAddr,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    closed_by_peer: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RawUpstream {
    async fn start(answer: Option<&'static [u8]>) -> RawUpstream {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = RawUpstream {
            addr: listener.local_addr().unwrap(),
            requests: Default::default(),
            closed_by_peer: Default::default(),
        };
        let (requests, closed) = (up.requests.clone(), up.closed_by_peer.clone());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (requests, closed) = (requests.clone(), closed.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => {
                                closed.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        if got.windows(4).any(|w| w == b"\r\n\r\n") {
                            got.clear();
                            requests.fetch_add(1, Ordering::SeqCst);
                            if let Some(answer) = answer {
                                let _ = conn.write_all(answer).await;
                            }
                        }
                    }
                });
            }
        });
        up
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn closed_by_peer(&self) -> usize {
        self.closed_by_peer
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A gateway in front of `up` with everything public and these `[server]` lines.
fn open_gateway(up: &str, server_extra: &str) -> Gateway {
    Gateway::start_full(&format!(
        "{}[[app]]\nname = \"open\"\nupstream = \"{up}\"\npublic_paths = [\"/\"]\n",
        crate::support::base_config().replace("[session]", &format!("{server_extra}\n[session]"))
    ))
}

/// The status line's code of a raw answer.
fn status_of(resp: &str) -> u16 {
    resp.get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {resp:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn prx12_broken_chunked_bodies_are_answered_400_and_closed() {
    let (gw, up, _provider) = guarded_app("").await;
    for body in [
        "zz\r\nabc\r\n0\r\n\r\n",
        "fffffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
        "3;a\rb\r\nabc\r\n0\r\n\r\n",
        "3\nabc\n0\n\n",
    ] {
        let req = format!(
            "POST /public/x HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n{body}GET /public/next HTTP/1.1\r\nHost: g\r\n\r\n"
        );
        let (resp, closed) = raw_exchange(gw.addr, req.as_bytes());
        assert_eq!(status_of(&resp), 400, "{body:?}: {resp}");
        assert!(closed, "{body:?}: the connection stayed open");
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{body:?}: {resp}");
    }
    // Refused before the upstream was contacted (400-CLOSE).
    let seen = up.requests();
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prx13_malformed_header_lines_are_refused_and_closed() {
    let (gw, up, _provider) = guarded_app("").await;
    for head in [
        "Host: g\r\nContent-Length : 0\r\n",
        " Host: g\r\nHost: g\r\n",
        "Host: g\r\nX-A: b\r\n c\r\n",
        "Host: g\r\nX-A: b\rc\r\n",
        "Host: g\r\nX-A: b\0c\r\n",
        "Host: g\r\nX(A): b\r\n",
        "Host: g\r\nX A: b\r\n",
    ] {
        let req = format!("GET /public/x HTTP/1.1\r\n{head}\r\n");
        let (resp, closed) = raw_exchange(gw.addr, req.as_bytes());
        assert_eq!(status_of(&resp), 400, "{head:?}: {resp}");
        assert!(closed, "{head:?}: the connection stayed open");
    }
    assert!(
        up.requests().is_empty(),
        "a malformed request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn prx16_an_upgrade_answered_200_never_tunnels_the_pipelined_bytes_and_checks_them_as_a_request(
) {
    let (gw, up, _provider) = guarded_app("").await;
    let pipelined: &[u8] =
        b"GET /public/x HTTP/1.1\r\nHost: g\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\
GET /admin HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n";
    let (resp, _) = raw_exchange(gw.addr, pipelined);
    // The echo upstream answers 200, not 101: no tunnel, and the bytes after
    // the request are never handed to the upstream as part of one.
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(!resp.contains("HTTP/1.1 101"), "{resp}");
    // They are the next request, checked like any other (SECURITY: "parsed
    // as a new HTTP request (and auth-checked)"): `/admin` without a
    // session is 401 and never reaches the upstream.
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 2, "{resp}");
    let second = &resp[resp.rfind("HTTP/1.1 ").unwrap()..];
    assert!(second.starts_with("HTTP/1.1 401"), "{resp}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri, "/public/x");
    assert!(seen[0].body.is_empty());

    // From a trusted proxy the connection closes instead: a proxy in front
    // that tunnels on the request alone would pass the client's own bytes,
    // forwarding fields and all, as its own.
    let (gw, up, _provider) = guarded_app("trusted_proxies = [\"127.0.0.1/32\"]").await;
    let (resp, closed) = raw_exchange(gw.addr, pipelined);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{resp}");
    assert!(closed, "{resp}");
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn prx17_a_websocket_upgrade_without_a_session_is_refused_and_h2c_is_stripped() {
    let (gw, up, _provider) = guarded_app("").await;
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let (status, resp) = raw_status(&gw, "/admin", ws);
    assert_eq!(status, 401, "{resp}");
    assert!(
        resp.contains("www-authenticate: Bearer realm=\"portcullis\""),
        "{resp}"
    );
    let (status, resp) = raw_status(&gw, "/chat", &format!("{ws}Accept: text/html\r\n"));
    assert_eq!(status, 302, "{resp}");
    assert!(resp.contains("location: /_auth/sign_in?rd=/chat"), "{resp}");
    assert!(
        up.requests().is_empty(),
        "an upgrade without a session reached the upstream"
    );

    // A client's h2c upgrade is not passed on: the upstream sees a plain request.
    let (status, resp) = raw_status(
        &gw,
        "/public/x",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
    );
    assert_eq!(status, 200, "{resp}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    for name in ["upgrade", "http2-settings", "connection"] {
        assert_eq!(seen[0].header(name), None, "{name} reached the upstream");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prx21_oversized_bodies_to_gateway_endpoints_get_413() {
    let (gw, up, _provider) = guarded_app("").await;
    let big = "a".repeat(70 * 1024);
    for path in ["/_auth/callback/ci", "/_auth/backchannel_logout/ci"] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: g\r\nContent-Type: application/x-www-form-urlencoded\r\n\
Content-Length: {}\r\nConnection: close\r\n\r\n{big}",
            big.len()
        );
        let (resp, _) = raw_exchange(gw.addr, req.as_bytes());
        assert_eq!(status_of(&resp), 413, "{path}: {resp}");
        assert!(!resp.contains("set-cookie: portcullis="), "{path}: {resp}");
    }
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn prx23_upstream_framing_hop_by_hop_fields_and_gateway_cookies_are_policed() {
    for (answer, want) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
            502,
        ),
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"[..],
            502,
        ),
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello"[..],
            502,
        ),
    ] {
        let up = RawUpstream::start(Some(answer)).await;
        let gw = open_gateway(&up.url(), "");
        let (resp, _) = raw_exchange(
            gw.addr,
            b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status_of(&resp), want, "{resp}");
        assert!(!resp.contains("hello"), "{resp}");
    }
    // Both lengths: a request without a body gets a 502 (the gateway's own
    // exchange reads the answer); one with a body, whose answer hyper's
    // client reads, is given one framing only, never both.
    for (request, want_502) in [
        (
            &b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
            true,
        ),
        (
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
            true,
        ),
    ] {
        let up = RawUpstream::start(Some(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ))
        .await;
        let gw = open_gateway(&up.url(), "");
        let (resp, _) = raw_exchange(gw.addr, request);
        if want_502 {
            assert_eq!(status_of(&resp), 502, "{resp}");
        }
        let head = resp.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(
            !(head.contains("content-length:") && head.contains("transfer-encoding:")),
            "{resp}"
        );
    }

    let up = RawUpstream::start(Some(
        b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\n\
Upgrade: h2c\r\nSet-Cookie: portcullis=evil; Path=/\r\nSet-Cookie: other=1\r\nSet-Cookie: portcullis_login=x\r\n\
X-Kept: k\r\nContent-Length: 5\r\n\r\nhello",
    ))
    .await;
    let gw = open_gateway(&up.url(), "");
    let (resp, _) = raw_exchange(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let head = resp.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    for gone in [
        "x-hop:",
        "keep-alive:",
        "proxy-connection:",
        "upgrade:",
        "set-cookie: portcullis",
    ] {
        assert!(!head.contains(gone), "{gone} reached the client: {resp}");
    }
    assert!(head.contains("set-cookie: other=1"), "{resp}");
    assert!(head.contains("x-kept: k"), "{resp}");
    assert!(resp.ends_with("hello"), "{resp}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prx24_an_upstream_that_never_answers_gets_504_and_a_client_that_leaves_cancels_it() {
    let up = RawUpstream::start(None).await;
    let gw = open_gateway(&up.url(), "upstream_read_timeout = \"1s\"");
    let started = std::time::Instant::now();
    let (resp, closed) = raw_exchange(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&resp), 504, "{resp}");
    assert!(closed);
    // 1 s timeout; generous bound for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(up.requests(), 1);

    // A client that hangs up while the upstream thinks: the upstream request is dropped.
    let up = RawUpstream::start(None).await;
    let gw = open_gateway(&up.url(), "upstream_read_timeout = \"60s\"");
    let mut conn = std::net::TcpStream::connect(gw.addr).unwrap();
    std::io::Write::write_all(&mut conn, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    for _ in 0..200 {
        if up.requests() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(up.requests(), 1);
    drop(conn);
    for _ in 0..200 {
        if up.closed_by_peer() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        up.closed_by_peer(),
        1,
        "the upstream request outlived its client"
    );
    // Still one access line (and count) for it: status 499, outcome error.
    let counted = "portcullis_requests_total{app=\"open\",outcome=\"error\"} 1\n";
    let mut text = String::new();
    for _ in 0..100 {
        text = gw.metrics().await;
        if text.contains(counted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(text.contains(counted), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prx04_a_get_without_a_body_carries_exactly_one_of_each_identity_header_the_gateways() {
    // A request without a body goes on the gateway's own upstream
    // connections, which write the identity headers beside the client's.
    let (gw, up, provider) = guarded_app("").await;
    let token = token_with_groups(&provider, "root", &["admins", "staff"]);
    let (status, resp) = raw_status(
        &gw,
        "/admin/x",
        &format!(
            "Authorization: Bearer {token}\r\nX-Forwarded-User: mallory\r\n\
x-forwarded-user: eve\r\nX-Forwarded-Groups: admins\r\nX_Forwarded_Email: m@example.com\r\n"
        ),
    );
    assert_eq!(status, 200, "{resp}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    let named = |n: &str| -> Vec<&str> {
        seen[0]
            .headers
            .iter()
            .filter(|(k, _)| k.replace('_', "-") == n)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(named("x-forwarded-user"), ["root"]);
    assert_eq!(named("x-forwarded-groups"), ["admins,staff"]);
    assert_eq!(named("x-forwarded-email"), Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn prx25_a_verified_bearer_token_stays_at_the_gateway_and_other_schemes_pass() {
    let (gw, up, provider) = guarded_app("").await;
    let token = token_with_groups(&provider, "root", &["admins"]);
    let (status, resp) = raw_status(
        &gw,
        "/admin/x",
        &format!("Authorization: Bearer {token}\r\nX-Forwarded-Access-Token: forged\r\n"),
    );
    assert_eq!(status, 200, "{resp}");
    let (status, resp) = raw_status(&gw, "/public/x", "Authorization: Basic dXNlcjpwdw==\r\n");
    assert_eq!(status, 200, "{resp}");
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("authorization"), None);
    assert_eq!(seen[0].header("x-forwarded-access-token"), None);
    assert_eq!(seen[0].header("x-forwarded-user"), Some("root"));
    assert_eq!(seen[1].header("authorization"), Some("Basic dXNlcjpwdw=="));
}

#[tokio::test(flavor = "multi_thread")]
async fn prx26_every_gateway_answer_forbids_caching_framing_and_referrers() {
    let (gw, _up, _provider) = guarded_app("").await;
    for (target, headers, status) in [
        ("/admin", "Accept: text/html\r\n", 302),
        ("/admin", "", 401),
        (
            "/admin",
            "Authorization: Bearer not.a.jwt\r\nAccept: text/html\r\n",
            401,
        ),
        ("/%2e%2e/admin", "Accept: text/html\r\n", 400),
        ("/_auth/sign_in?rd=/%3Cscript%3E", "", 200),
        ("/_auth/nope", "Accept: text/html\r\n", 404),
    ] {
        let (got, resp) = raw_status(&gw, target, headers);
        assert_eq!(got, status, "{target}: {resp}");
        let head = resp.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        for want in [
            "cache-control: no-store",
            "referrer-policy: no-referrer",
            "x-frame-options: deny",
            "frame-ancestors 'none'",
        ] {
            assert!(head.contains(want), "{target}: {want} missing: {resp}");
        }
        assert!(!resp.contains("<script>"), "{target}: {resp}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prx28_preflight_on_a_protected_path_is_not_exempted_and_trace_is_refused() {
    let (gw, up, _provider) = guarded_app("").await;
    let preflight = "Origin: http://app.example\r\nAccess-Control-Request-Method: DELETE\r\n";
    let req = format!("OPTIONS /admin HTTP/1.1\r\nHost: g\r\n{preflight}Connection: close\r\n\r\n");
    let (resp, _) = raw_exchange(gw.addr, req.as_bytes());
    assert_eq!(status_of(&resp), 401, "{resp}");
    assert!(
        up.requests().is_empty(),
        "a preflight reached the upstream unauthenticated"
    );
    // On a public path the preflight is the upstream's to answer.
    let req =
        format!("OPTIONS /public/x HTTP/1.1\r\nHost: g\r\n{preflight}Connection: close\r\n\r\n");
    let (resp, _) = raw_exchange(gw.addr, req.as_bytes());
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(up.requests().len(), 1);
    assert_eq!(up.requests()[0].method, "OPTIONS");
    for target in ["/public/x", "/admin"] {
        let req = format!("TRACE {target} HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n");
        let (resp, _) = raw_exchange(gw.addr, req.as_bytes());
        assert_eq!(status_of(&resp), 400, "{target}: {resp}");
    }
    assert_eq!(up.requests().len(), 1, "TRACE reached the upstream");
}

/// A raw request with the signed-in browser's cookie to the sign-in test gateway.
fn with_session(s: &crate::signin::Setup, target: &str, headers: &str) -> (u16, String) {
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\n{headers}Connection: close\r\n\r\n",
        s.gw.addr,
        s.jar.header()
    );
    let (resp, _) = raw_exchange(s.gw.addr, req.as_bytes());
    (status_of(&resp), resp)
}

#[tokio::test(flavor = "multi_thread")]
async fn prx17_a_signed_in_websocket_from_a_foreign_origin_is_refused() {
    let mut s = crate::signin::Setup::start().await;
    assert_eq!(s.sign_in().await.status(), 302);
    let before = s.upstream.requests().len();
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    for origin in ["http://evil.example", "null"] {
        let (status, resp) = with_session(&s, "/chat", &format!("{ws}Origin: {origin}\r\n"));
        assert_eq!(status, 403, "{origin}: {resp}");
        assert!(resp.contains("another site"), "{resp}");
    }
    assert_eq!(
        s.upstream.requests().len(),
        before,
        "a cross-site upgrade reached the upstream"
    );
    // The same upgrade from the gateway's own origin is passed on (the echo
    // upstream answers 200, not 101), as is a plain request with a foreign Origin.
    let own = format!("http://{}", s.gw.addr);
    let (status, resp) = with_session(&s, "/chat", &format!("{ws}Origin: {own}\r\n"));
    assert_eq!(status, 200, "{resp}");
    let (status, resp) = with_session(&s, "/chat", "Origin: http://evil.example\r\n");
    assert_eq!(status, 200, "{resp}");
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), before + 2);
    assert_eq!(seen[before].header("upgrade"), Some("websocket"));
}

#[tokio::test(flavor = "multi_thread")]
async fn prx29_a_valid_session_never_rescues_an_invalid_bearer_token() {
    let mut s = crate::signin::Setup::start().await;
    assert_eq!(s.sign_in().await.status(), 302);
    let (status, resp) = with_session(&s, "/private", "");
    assert_eq!(status, 200, "{resp}");
    let before = s.upstream.requests().len();
    // A tab after the scheme too: an upstream splitting on any blank would
    // read that token, so the gateway reads it as one and checks it.
    // And a byte no ASCII client sends (a no-break space, which an upstream
    // reading Latin-1 splits at): still a bearer credential, refused. The
    // scheme with no token at all (blank or not) is a bad token too.
    let values = [
        "Bearer not.a.token",
        "Bearer\tnot.a.token",
        "Bearer\u{a0}not.a.token",
        "Bearer",
        "bearer ",
    ];
    for value in values {
        for accept in ["", "Accept: text/html\r\n"] {
            let (status, resp) = with_session(
                &s,
                "/private",
                &format!("{accept}Authorization: {value}\r\n"),
            );
            assert_eq!(status, 401, "{value:?} {accept:?}: {resp}");
            assert!(resp.contains("error=\"invalid_token\""), "{resp}");
        }
    }
    assert_eq!(
        s.upstream.requests().len(),
        before,
        "the cookie let a bad token through"
    );
}

/// SES-17: an endpoint under `/_auth/` is named exactly. `/_auth/check;x`
/// (which a proxy blocking `/_auth/check` to browsers passes on) names no
/// endpoint: 404, no identity answered, nothing proxied.
#[tokio::test(flavor = "multi_thread")]
async fn ses17_an_auth_endpoint_spelled_with_parameters_names_no_endpoint() {
    let mut s = crate::signin::Setup::start().await;
    assert_eq!(s.sign_in().await.status(), 302);
    let (status, resp) = with_session(&s, "/_auth/check", "");
    assert_eq!(status, 200, "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("x-auth-request-user:"),
        "{resp}"
    );
    let before = s.upstream.requests().len();
    for target in [
        "/_auth/check;x",
        "/_auth/check%3Bx",
        "/_auth/check;",
        "/_auth;x/check",
        "/_auth/userinfo;x",
        "/_auth%2Fcheck",
        "/_auth//check",
        "/_auth/%63heck",
    ] {
        let (status, resp) = with_session(&s, target, "");
        assert_eq!(status, 404, "{target}: {resp}");
        assert!(
            !resp.to_ascii_lowercase().contains("x-auth-request-user"),
            "{target}: {resp}"
        );
    }
    assert_eq!(s.upstream.requests().len(), before);
}

/// PRX-14: a host an upstream could read as another (userinfo before the
/// host, a bracket or comma trick) is refused with 400, never routed on one
/// part of it while the upstream gets the whole.
#[tokio::test(flavor = "multi_thread")]
async fn prx14_a_host_with_userinfo_or_junk_is_refused_not_routed_on_part_of_it() {
    let (gw, wiki, api, other) = two_apps().await;
    for req in [
        "GET /static/x HTTP/1.1\r\nHost: wiki.example:@evil.com\r\nConnection: close\r\n\r\n",
        "GET http://wiki.example:@evil.com/static/x HTTP/1.1\r\nHost: wiki.example\r\nConnection: close\r\n\r\n",
        "GET http://admin@wiki.example/static/x HTTP/1.1\r\nHost: wiki.example\r\nConnection: close\r\n\r\n",
        "GET /static/x HTTP/1.1\r\nHost: [wiki.example].evil.com\r\nConnection: close\r\n\r\n",
        "GET /static/x HTTP/1.1\r\nHost: wiki.example,evil.com\r\nConnection: close\r\n\r\n",
        "GET /static/x HTTP/1.1\r\nHost: wiki.example:80:81\r\nConnection: close\r\n\r\n",
        // Beside an absolute-form target, which decides, a Host must still be one.
        "GET http://wiki.example/static/x HTTP/1.1\r\nHost: wiki.example:@evil.com\r\nConnection: close\r\n\r\n",
        // PRX-15: an absolute-form target for a host no app serves asks for a
        // forward proxy: 400, not the 404 of a Host no app serves.
        "GET http://evil.example/static/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    ] {
        let (resp, _) = raw_exchange(gw.addr, req.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 400"), "{req:?}: {resp}");
    }
    // Origin-form, a Host no app serves: 404.
    let (resp, _) = raw_exchange(
        gw.addr,
        b"GET /static/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    // Not visible ASCII: refused, not read as a request without a Host.
    let (resp, _) = raw_exchange(
        gw.addr,
        b"GET /static/x HTTP/1.1\r\nHost: wiki.example\xe9\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // The same host, well formed, is served.
    let (resp, _) = raw_exchange(
        gw.addr,
        b"GET /static/x HTTP/1.1\r\nHost: Wiki.Example:80\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(wiki.requests().len(), 1);
    assert!(api.requests().is_empty() && other.requests().is_empty());
}

/// PRX-17: an upgrade listing WebSocket beside another protocol reaches the
/// upstream as a WebSocket upgrade alone, without h2c's settings.
#[tokio::test(flavor = "multi_thread")]
async fn prx17_only_the_websocket_upgrade_reaches_the_upstream() {
    let (gw, up, _provider) = guarded_app("").await;
    for upgrade in [
        "Upgrade: h2c, websocket\r\n",
        "Upgrade: h2c\r\nUpgrade: websocket\r\n",
    ] {
        let before = up.requests().len();
        let (_, resp) = raw_status(
            &gw,
            "/public/x",
            &format!(
                "Connection: Upgrade\r\n{upgrade}HTTP2-Settings: AAMAAABkAAQAAP__\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            ),
        );
        let seen = up.requests();
        assert_eq!(seen.len(), before + 1, "{upgrade:?}: {resp}");
        let last = &seen[before];
        assert_eq!(last.header("upgrade"), Some("websocket"), "{upgrade:?}");
        assert_eq!(last.header("http2-settings"), None, "{upgrade:?}");
    }
}

/// PRX-06: an absolute-form target without a path (`http://host?query`) is
/// decided on as `/`, and the upstream gets `/?query`, never the bare
/// `?query` (not a valid origin-form target, which each upstream would read
/// its own way).
#[tokio::test(flavor = "multi_thread")]
async fn prx06_an_absolute_target_without_a_path_reaches_the_upstream_as_slash_and_its_query() {
    let (gw, wiki, _api, _other) = two_apps().await;
    let (resp, _) = raw_exchange(
        gw.addr,
        b"GET http://wiki.example?x=1 HTTP/1.1\r\nHost: wiki.example\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = wiki.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/?x=1");
}

/// PRX-14: an absolute-form target overrides `Host`: the request is routed
/// and decided on its authority, and the upstream gets that authority as
/// `Host`, never the other name the client put beside it.
#[tokio::test(flavor = "multi_thread")]
async fn prx14_the_upstream_gets_the_host_the_request_was_decided_on() {
    let (gw, wiki, _api, other) = two_apps().await;
    let (resp, _) = raw_exchange(
        gw.addr,
        b"GET http://wiki.example/static/x HTTP/1.1\r\nHost: admin.example\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = wiki.requests();
    assert_eq!(seen.len(), 1);
    let hosts: Vec<&str> = seen[0]
        .headers
        .iter()
        .filter(|(k, _)| k == "host")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(hosts, vec!["wiki.example"]);
    assert!(other.requests().is_empty());
}
