//! Reload on SIGHUP through the real binary (DESIGN "Operations"): a new
//! config is served within 2 s, a request under way finishes on its own, a
//! refused config leaves the running one serving, a session outlives a
//! reload that does not touch it, a renewed certificate is served.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::support::{base_config, client, config_file, free_port, Upstream, SECRET};

/// The binary serving a config file, its log lines on a channel.
struct Bin {
    child: Child,
    logs: mpsc::Receiver<String>,
    listen: String,
    admin: String,
}

impl Bin {
    fn start(config: &Path) -> Bin {
        let (child, logs) = Bin::spawn(config);
        Bin::serving(child, logs)
    }

    /// The binary started on `config`, its log lines on a channel.
    fn spawn(config: &Path) -> (Child, mpsc::Receiver<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("PORTCULLIS_SERVER__LOG_FORMAT")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, logs) = mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (child, logs)
    }

    /// Waits (at most 15 s between lines) until the binary says it is serving.
    fn serving(mut child: Child, logs: mpsc::Receiver<String>) -> Bin {
        while let Ok(line) = logs.recv_timeout(Duration::from_secs(15)) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "portcullis is serving" {
                let listen = v["fields"]["listen"].as_str().unwrap().to_string();
                let admin = v["fields"]["admin"].as_str().unwrap();
                let admin = admin.trim_start_matches("Some(").trim_end_matches(')');
                return Bin {
                    admin: admin.to_string(),
                    child,
                    logs,
                    listen,
                };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the binary did not start");
    }

    fn hup(&self) {
        hup(&self.child);
    }

    /// GET `path` on the proxy listener with `token` as a bearer credential.
    async fn get_with_token(&self, path: &str, token: &str) -> reqwest::Result<reqwest::Response> {
        client()
            .get(format!("http://{}{path}", self.listen))
            .bearer_auth(token)
            .send()
            .await
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    async fn readyz(&self) -> serde_json::Value {
        client()
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The value of one exact series of `/metrics`.
    async fn metric(&self, series: &str) -> f64 {
        let text = client()
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

    /// Waits (at most 2 s) until `/readyz` shows config generation `n`.
    async fn wait_generation(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if self.readyz().await["config_generation"] == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "generation {n} not reached in 2 s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every log line so far.
    /// The log lines so far, waiting (at most 5 s) until they contain every
    /// one of `wanted`: the log thread writes lines in batches.
    fn logs_containing(&self, wanted: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut logs = String::new();
        while !wanted.iter().all(|w| logs.contains(w)) && std::time::Instant::now() < deadline {
            if let Ok(line) = self.logs.recv_timeout(Duration::from_millis(50)) {
                logs.push_str(&line);
                logs.push('\n');
            }
        }
        logs
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hup(child: &Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
}

fn app(name: &str, prefix: &str, upstream: &str, public: &str) -> String {
    format!(
        "\n[[app]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\npublic_paths = [{public}]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_serves_a_new_app_and_public_path_while_a_request_under_way_finishes() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let first = format!(
        "{}{}",
        base_config(),
        app("one", "/", &one.url(), "\"/slow\"")
    );
    let file = config_file(&first);
    let bin = Bin::start(&file.path);
    let c = client();
    let base = format!("http://{}", bin.listen);
    assert_eq!(
        c.get(format!("{base}/two/x"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(format!("{base}/open")).send().await.unwrap().status(),
        401
    );
    assert_eq!(bin.readyz().await["config_generation"], 1);

    // A slow request (700 ms upstream) on the old config, then the new config.
    let slow = tokio::spawn({
        let url = format!("{base}/slow");
        async move { c.get(url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = format!(
        "{}{}{}",
        base_config(),
        app("two", "/two", &two.url(), "\"/two/x\""),
        app("one", "/", &one.url(), "\"/slow\", \"/open\"")
    );
    std::fs::write(&file.path, second).unwrap();
    bin.hup();
    bin.wait_generation(2).await;

    let c = client();
    let r = c.get(format!("{base}/two/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "two");
    assert_eq!(
        c.get(format!("{base}/open")).send().await.unwrap().status(),
        200
    );
    let slow = slow
        .await
        .unwrap()
        .expect("the request under way was dropped");
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.text().await.unwrap(), "hello from one");
    assert_eq!(
        bin.metric("portcullis_config_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );
    assert!(bin.readyz().await["config_loaded_at"].is_string());
}

/// A config with `server_line` in `[server]` and one app, public under `/`,
/// in front of `upstream`.
fn open_app_with(server_line: &str, upstream: &str) -> String {
    format!(
        "{}{}",
        base_config().replace("threads = 1", &format!("threads = 1\n{server_line}")),
        app("app", "/", upstream, "\"/\"")
    )
}

/// One keep-alive request on `s` claiming to come from 203.0.113.7 through
/// `s`'s peer; waits for the whole answer (`hello from {upstream}`).
async fn get_claiming_a_client(s: &mut tokio::net::TcpStream, path: &str, upstream: &str) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let want = format!("hello from {upstream}");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).ends_with(&want) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no answer in 5 s")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

/// DESIGN "Operations": the next request on an open connection gets the new
/// config, and with it the new `trusted_proxies`: a proxy taken off the
/// list is no longer believed on the connections it already holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_removed_from_trusted_proxies_by_sighup_is_not_believed_on_its_open_connection() {
    let up = Upstream::start("app").await;
    let with_trust =
        |trusted: &str| open_app_with(&format!("trusted_proxies = [{trusted}]"), &up.url());
    let file = config_file(&with_trust("\"127.0.0.1/32\""));
    let bin = Bin::start(&file.path);
    let mut conn = tokio::net::TcpStream::connect(&bin.listen).await.unwrap();
    get_claiming_a_client(&mut conn, "/before", "app").await;

    std::fs::write(&file.path, with_trust("")).unwrap();
    bin.hup();
    bin.wait_generation(2).await;
    get_claiming_a_client(&mut conn, "/after", "app").await;

    let seen = up.requests();
    let xff = |path: &str| {
        seen.iter()
            .find(|r| r.uri == path)
            .and_then(|r| r.header("x-forwarded-for"))
            .map(str::to_string)
    };
    assert_eq!(xff("/before").as_deref(), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(xff("/after").as_deref(), Some("127.0.0.1"));
}

/// The connection timeouts are read when a connection is accepted: after a
/// SIGHUP that shortens `idle_timeout`, a new connection left idle is
/// closed after the new one (not the 60 s it started with).
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_timeout_shortened_by_sighup_closes_the_connections_that_follow() {
    use tokio::io::AsyncReadExt as _;
    let up = Upstream::start("app").await;
    let with_idle = |idle: &str| open_app_with(&format!("idle_timeout = \"{idle}\""), &up.url());
    let file = config_file(&with_idle("60s"));
    let bin = Bin::start(&file.path);
    std::fs::write(&file.path, with_idle("1s")).unwrap();
    bin.hup();
    bin.wait_generation(2).await;
    let mut conn = tokio::net::TcpStream::connect(&bin.listen).await.unwrap();
    get_claiming_a_client(&mut conn, "/idle", "app").await;
    let idle_since = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("the connection was still open 10 s after its last answer")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(5),
        "{idle:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_with_an_error_is_refused_on_sighup_and_the_running_one_keeps_serving() {
    let one = Upstream::start("one").await;
    let good = format!(
        "{}{}",
        base_config(),
        app("one", "/", &one.url(), "\"/open\"")
    );
    let file = config_file(&good);
    let mut bin = Bin::start(&file.path);
    let base = format!("http://{}", bin.listen);
    // A keep-alive connection open across the reload.
    let c = client();
    assert_eq!(
        c.get(format!("{base}/open")).send().await.unwrap().status(),
        200
    );

    let bad = format!(
        "{}{}",
        base_config(),
        app("one", "/", "ftp://nowhere", "\"/open\", \"/also\"")
    );
    std::fs::write(&file.path, bad).unwrap();
    bin.hup();
    let deadline = Instant::now() + Duration::from_secs(2);
    while bin
        .metric("portcullis_config_reloads_total{result=\"error\"}")
        .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the refusal was not counted in 2 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(bin.alive(), "the process died on a bad config");
    assert_eq!(
        c.get(format!("{base}/open")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(format!("{base}/also")).send().await.unwrap().status(),
        401
    );
    assert_eq!(bin.readyz().await["config_generation"], 1);
    assert_eq!(
        bin.metric("portcullis_config_reloads_total{result=\"ok\"}")
            .await,
        0.0
    );
    let logs = bin.logs_containing(&["app[one].upstream", "config reload refused"]);
    assert!(
        logs.contains("app[one].upstream"),
        "the problem was not logged:\n{logs}"
    );
    assert!(logs.contains("config reload refused"), "{logs}");
    // Under the target the README names, so `RUST_LOG=portcullis::reload=…` finds them.
    for wanted in ["app[one].upstream", "config reload refused"] {
        let line = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(wanted))
            })
            .unwrap_or_else(|| panic!("no JSON line with {wanted}:\n{logs}"));
        assert_eq!(line["target"], "portcullis::reload", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_in_session_survives_a_reload_that_adds_another_app() {
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let provider_cfg =
        portcullis::demo::ProviderConfig::example(&format!("{public}/_auth/callback/demo"))
            .unwrap();
    let client_reg = provider_cfg.clients.first().cloned().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider = portcullis::demo::provider::start(listener, provider_cfg).await;
    provider.set_faults(|f| f.auto_approve_as = Some("alice".into()));
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let dir = tempfile::tempdir().unwrap();
    let top = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"
public_url = "{public}"
threads = 1
[session]
secrets = ["{SECRET}"]
[store]
url = "sqlite://{db}"
[[source]]
slug = "demo"
name = "Demo"
type = "openidconnect"
consumer_key = "{id}"
consumer_secret = "{secret}"
oidc_well_known_url = "{wk}"
"#,
        db = dir.path().join("p.db").display(),
        id = client_reg.client_id,
        secret = client_reg.client_secret,
        wk = provider.well_known_url(),
    );
    let file = config_file(&format!("{top}{}", app("one", "/", &one.url(), "")));
    let bin = Bin::start(&file.path);
    let c = client();
    let mut jar = crate::signin::Jar::default();
    let start = get_with(
        &c,
        &mut jar,
        &format!("{public}/_auth/login/demo?rd=/private"),
    )
    .await;
    assert_eq!(start.status(), 302);
    let authorize = start.headers()["location"].to_str().unwrap().to_string();
    let back = get_with(&c, &mut jar, &authorize).await;
    assert_eq!(back.status(), 302, "{authorize}: {:?}", back.text().await);
    let callback = back.headers()["location"].to_str().unwrap().to_string();
    let done = get_with(&c, &mut jar, &callback).await;
    assert_eq!(done.status(), 302, "{:?}", done.text().await);
    let private = format!("{public}/private");
    assert_eq!(get_with(&c, &mut jar, &private).await.status(), 200);

    std::fs::write(
        &file.path,
        format!(
            "{top}{}{}",
            app("two", "/two", &two.url(), ""),
            app("one", "/", &one.url(), "")
        ),
    )
    .unwrap();
    bin.hup();
    bin.wait_generation(2).await;
    let r = get_with(&c, &mut jar, &private).await;
    assert_eq!(r.status(), 200, "the session did not survive the reload");
    assert_eq!(r.headers()["x-upstream"], "one");
    let r = get_with(&c, &mut jar, &format!("{public}/two/y")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "two");
    drop(provider);
}

/// Without `public_url` the gateway's origin is its `listen`: a reload that
/// changes `listen` (restart-only) keeps the running listener, and sign-in
/// keeps naming that listener's address as its callback, not the new one
/// nothing serves yet.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_changes_listen_without_public_url_keeps_callbacks_on_the_running_listener() {
    let (port, other) = (free_port(), free_port());
    let config = |port: u16| {
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"
threads = 1
[session]
secrets = ["{SECRET}"]
[store]
url = "sqlite::memory:"
[[source]]
slug = "corp"
type = "openidconnect"
consumer_key = "gw"
consumer_secret = "s"
authorization_url = "https://idp.example/auth"
access_token_url = "https://idp.example/token"
profile_url = "https://idp.example/userinfo"
issuer = "https://idp.example"
oidc_jwks = '{{"keys":[]}}'
{}"#,
            app("wiki", "/", "http://127.0.0.1:9", "")
        )
    };
    let file = config_file(&config(port));
    let bin = Bin::start(&file.path);
    let callback = |body: &str| {
        format!("redirect_uri=http%3A%2F%2F127.0.0.1%3A{body}%2F_auth%2Fcallback%2Fcorp")
    };
    let login = || async {
        let r = client()
            .get(format!("http://127.0.0.1:{port}/_auth/login/corp"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        r.headers()["location"].to_str().unwrap().to_string()
    };
    assert!(login().await.contains(&callback(&port.to_string())));

    std::fs::write(&file.path, config(other)).unwrap();
    bin.hup();
    bin.wait_generation(2).await;
    let logs = bin.logs_containing(&["server.listen"]);
    assert!(logs.contains("restart"), "{logs}");
    let to = login().await;
    assert!(to.contains(&callback(&port.to_string())), "{to}");
    assert!(!to.contains(&other.to_string()), "{to}");
}

/// A GET carrying and absorbing the jar's cookies.
async fn get_with(
    c: &reqwest::Client,
    jar: &mut crate::signin::Jar,
    url: &str,
) -> reqwest::Response {
    let r = c
        .get(url)
        .header("accept", "text/html")
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    jar.absorb(&r);
    r
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(name)
}

/// Accepts any certificate and remembers it: the test reads which one was served.
#[derive(Debug)]
struct AnyCert;

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        _: &[tokio_rustls::rustls::pki_types::CertificateDer<'_>],
        _: &tokio_rustls::rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        _: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        Ok(tokio_rustls::rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        _: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        Ok(tokio_rustls::rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        tokio_rustls::rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An HTTP/1.1 TLS connection to `addr`; the certificate it was served.
async fn tls_connect(
    addr: &str,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
) {
    use tokio_rustls::rustls;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, served)
}

/// One GET on an open connection; the status line.
async fn get_on(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /open HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    // The upstream answers "hello from one" (14 bytes) with a length.
    while !String::from_utf8_lossy(&got).contains("hello from one") {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection was closed");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap()
        .to_string()
}

fn der(pem_file: &str) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    tokio_rustls::rustls::pki_types::CertificateDer::pem_file_iter(fixture(pem_file))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_certificate_is_served_after_sighup_and_an_open_connection_carries_on() {
    let one = Upstream::start("one").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(fixture("localhost-cert.pem"), &cert).unwrap();
    std::fs::copy(fixture("localhost-key.pem"), &key).unwrap();
    let body = format!(
        "{}{}",
        base_config().replacen(
            "threads = 1",
            &format!(
                "threads = 1\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}",
                cert.display(),
                key.display()
            ),
            1
        ),
        app("one", "/", &one.url(), "\"/open\"")
    );
    let file = config_file(&body);
    let bin = Bin::start(&file.path);
    let (mut open, served) = tls_connect(&bin.listen).await;
    assert_eq!(served, der("localhost-cert.pem"));
    assert!(get_on(&mut open).await.contains("200"));

    std::fs::copy(fixture("selfsigned-cert.pem"), &cert).unwrap();
    std::fs::copy(fixture("selfsigned-key.pem"), &key).unwrap();
    bin.hup();
    bin.wait_generation(2).await;
    let (mut fresh, served) = tls_connect(&bin.listen).await;
    assert_eq!(
        served,
        der("selfsigned-cert.pem"),
        "the renewed certificate was not served"
    );
    assert!(get_on(&mut fresh).await.contains("200"));
    assert!(
        get_on(&mut open).await.contains("200"),
        "the connection open before the reload was dropped"
    );
}

/// How many times `p`'s JWKS was fetched, once it has been at least `at_least` times (at most 5 s).
async fn jwks_fetches(p: &portcullis::demo::Provider, at_least: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = p.calls(portcullis::demo::Endpoint::Jwks);
        if n >= at_least || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_changes_one_source_keeps_the_other_sources_keys() {
    let ci = crate::bearer::provider().await;
    let corp = crate::bearer::provider().await;
    let api = Upstream::start("api").await;
    let config = |corp_name: &str| {
        format!(
            "{}[[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\n\
             [[source]]\nslug = \"corp\"\nname = \"{corp_name}\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\n\
             [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n\
             [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
            base_config(),
            ci.well_known_url(),
            corp.well_known_url(),
            api.url()
        )
    };
    let file = config_file(&config("Corp"));
    let bin = Bin::start(&file.path);
    let ci_before = jwks_fetches(&ci, 1).await;
    let corp_before = jwks_fetches(&corp, 1).await;
    assert!(
        ci_before >= 1 && corp_before >= 1,
        "keys were not fetched at start"
    );
    let token = ci
        .sign(&crate::bearer::claims(&ci.issuer(), |_| {}))
        .unwrap();
    let call = || bin.get_with_token("/x", &token);
    assert_eq!(call().await.unwrap().status(), 200);

    // Only corp changes (its display name): its keys are fetched again, ci's are not.
    std::fs::write(&file.path, config("Corp SSO")).unwrap();
    bin.hup();
    bin.wait_generation(2).await;
    assert!(
        jwks_fetches(&corp, corp_before + 1).await > corp_before,
        "the changed source's keys were not fetched again"
    );
    let r = call().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(
        ci.calls(portcullis::demo::Endpoint::Jwks),
        ci_before,
        "the unchanged source's keys were fetched again"
    );
}

/// DESIGN "Operations" (last good kept): a reload that changes one source
/// while another's provider is down keeps the other's discovered endpoints,
/// so it stays ready and its machines' tokens still pass.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_while_a_provider_is_down_keeps_its_source_ready_on_the_last_good_endpoints() {
    let ci = crate::bearer::provider().await;
    let corp = crate::bearer::provider().await;
    let api = Upstream::start("api").await;
    let config = |ci_name: &str| {
        format!(
            "{}[[source]]\nslug = \"ci\"\nname = \"{ci_name}\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\n\
             [[source]]\nslug = \"corp\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\n\
             [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"ci\", \"corp\"]\njwt_audiences = [\"api\"]\n\
             [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
            base_config(),
            ci.well_known_url(),
            corp.well_known_url(),
            api.url()
        )
    };
    let file = config_file(&config("CI"));
    let bin = Bin::start(&file.path);
    assert!(
        jwks_fetches(&corp, 1).await >= 1,
        "corp's keys were not fetched at start"
    );
    let token = corp
        .sign(&crate::bearer::claims(&corp.issuer(), |_| {}))
        .unwrap();
    let call = || bin.get_with_token("/x", &token);
    assert_eq!(call().await.unwrap().status(), 200);

    corp.set_faults(|f| f.down = true);
    let discovery_before = corp.calls(portcullis::demo::Endpoint::Discovery);
    std::fs::write(&file.path, config("CI runners")).unwrap();
    bin.hup();
    bin.wait_generation(2).await;
    assert!(
        corp.calls(portcullis::demo::Endpoint::Discovery) > discovery_before,
        "the reload did not ask corp's provider again"
    );
    let ready = client()
        .get(format!("http://{}/readyz", bin.admin))
        .send()
        .await
        .unwrap();
    let status = ready.status();
    let body = ready.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let r = call().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let logs = bin.logs_containing(&["keeps its last good endpoints"]);
    assert!(logs.contains("keeps its last good endpoints"), "{logs}");
}

/// A SIGHUP that comes while the gateway is still starting (its listener
/// bound, a provider slow to answer discovery) does not end the process
/// (SIGHUP's default): once serving, it is a reload.
#[tokio::test(flavor = "multi_thread")]
async fn a_sighup_during_start_up_is_a_reload_once_serving_never_the_end_of_the_process() {
    // A provider that holds each connection 2 s, then closes it unanswered.
    let slow = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let slow_addr = slow.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in slow.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(2));
                drop(c);
            });
        }
    });
    let api = Upstream::start("api").await;
    let port = crate::support::free_port();
    let config = format!(
        "{}[[source]]\nslug = \"slow\"\ntype = \"openidconnect\"\n\
         oidc_well_known_url = \"http://{slow_addr}/.well-known/openid-configuration\"\n\
         [[app]]\nname = \"api\"\nupstream = \"{}\"\njwt_sources = [\"slow\"]\njwt_audiences = [\"api\"]\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        base_config().replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1
        ),
        api.url()
    );
    let file = config_file(&config);
    let (child, logs) = Bin::spawn(&file.path);
    // The listener is bound before the sources load: once it takes a
    // connection, the gateway is starting and not serving yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the listener was never bound");
        std::thread::sleep(Duration::from_millis(10));
    }
    hup(&child);
    let mut bin = Bin::serving(child, logs);
    assert!(bin.alive());
    bin.wait_generation(2).await;
    assert!(bin.alive());
}
