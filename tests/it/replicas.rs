//! Two gateway processes on one PostgreSQL store (DESIGN "Scale"): a session from one
//! is accepted by the other, `users disable` reaches both within
//! `identity_cache_ttl`, and concurrent first sign-ins of one identity through
//! both create one user. Skipped (with a notice) without PORTCULLIS_TEST_POSTGRES_URL.

use std::time::Duration;

use sqlx::Connection as _;

use crate::signin::{session_cookies_set, Jar};
use crate::support::{client, config_file, free_port, Upstream, SECRET};

/// A `portcullis serve` process, killed when dropped.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One replica: a gateway process with its config, and a browser's cookie jar.
pub(crate) struct Replica {
    _process: Process,
    _config: crate::support::ConfigFile,
    port: u16,
    jar: Jar,
}

impl Replica {
    /// Starts `portcullis serve` and waits (bounded) until it answers.
    pub(crate) async fn start(config: &str, port: u16) -> Replica {
        let file = config_file(config);
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--config"])
            .arg(&file.path)
            .env_remove("PORTCULLIS_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let replica = Replica {
            _process: Process(child),
            _config: file,
            port,
            jar: Jar::default(),
        };
        let c = client();
        for _ in 0..200 {
            if c.get(replica.url("/_auth/sign_in")).send().await.is_ok() {
                return replica;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("replica on port {port} did not start");
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Replica {
    /// Login → provider (auto-approve) → callback, through this replica.
    async fn sign_in(&mut self, c: &reqwest::Client) -> reqwest::Response {
        let get = |url: String, jar: &Jar| {
            let c = c.clone();
            let cookie = jar.header();
            async move { c.get(url).header("cookie", cookie).send().await.unwrap() }
        };
        let r = get(self.url("/_auth/login/demo"), &self.jar).await;
        self.jar.absorb(&r);
        let authorize = r.headers()["location"].to_str().unwrap().to_string();
        let r = get(authorize, &self.jar).await;
        let callback = r.headers()["location"].to_str().unwrap().to_string();
        let r = get(callback, &self.jar).await;
        self.jar.absorb(&r);
        r
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_sessions_revocation_and_enrollment_on_postgresql() {
    let Ok(base) = std::env::var("PORTCULLIS_TEST_POSTGRES_URL") else {
        eprintln!("notice: PORTCULLIS_TEST_POSTGRES_URL is unset; the replica test is skipped");
        return;
    };
    let schema = format!("pc_it_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let db = format!("{base}{sep}options[search_path]={schema}");

    let ports = [free_port(), free_port()];
    let mut cfg = portcullis::demo::ProviderConfig::example(&format!(
        "http://127.0.0.1:{}/_auth/callback/demo",
        ports[0]
    ))
    .unwrap();
    cfg.clients[0]
        .redirect_uris
        .push(format!("http://127.0.0.1:{}/_auth/callback/demo", ports[1]));
    let (id, secret) = (
        cfg.clients[0].client_id.clone(),
        cfg.clients[0].client_secret.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider = portcullis::demo::provider::start(listener, cfg).await;
    provider.set_faults(|f| f.auto_approve_as = Some("alice".into()));
    let upstream = Upstream::start("app").await;
    let config = |port: u16| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:{port}\"\nthreads = 1\nshutdown_timeout = \"2s\"\n\
             [session]\nsecrets = [\"{SECRET}\"]\nidentity_cache_ttl = \"1s\"\n[store]\nurl = \"{db}\"\n\
             [[source]]\nslug = \"demo\"\ntype = \"openidconnect\"\nconsumer_key = \"{id}\"\nconsumer_secret = \"{secret}\"\noidc_well_known_url = \"{}\"\n\
             [[app]]\nname = \"app\"\nupstream = \"{}\"\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
            provider.well_known_url(),
            upstream.url()
        )
    };
    // Two gateway processes on one PostgreSQL store.
    let mut a = Replica::start(&config(ports[0]), ports[0]).await;
    let mut b = Replica::start(&config(ports[1]), ports[1]).await;
    let c = client();

    // A session created through A is accepted by B.
    let r = a.sign_in(&c).await;
    assert_eq!(r.status(), 302);
    assert_eq!(session_cookies_set(&r).len(), 1);
    let cookie = a.jar.header();
    let status = |url: String| {
        let c = c.clone();
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
    assert_eq!(status(b.url("/private")).await, 200);

    // `users disable` against the store: both replicas refuse within identity_cache_ttl.
    let file = config_file(&config(ports[0]));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["users", "disable", "alice", "--config"])
        .arg(&file.path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(status(a.url("/private")).await, 401);
    assert_eq!(status(b.url("/private")).await, 401);

    // Concurrent first sign-ins of bob through A and B: one user.
    provider.set_faults(|f| f.auto_approve_as = Some("bob".into()));
    a.jar = Jar::default();
    b.jar = Jar::default();
    let (ra, rb) = tokio::join!(a.sign_in(&c), b.sign_in(&c));
    assert_eq!(
        (ra.status(), rb.status()),
        (reqwest::StatusCode::FOUND, reqwest::StatusCode::FOUND)
    );
    let store = portcullis::identity::store::open(&db).await.unwrap();
    let bobs = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .filter(|(u, _)| u.username.starts_with("bob"))
        .count();
    assert_eq!(bobs, 1, "two users were enrolled for one identity");

    drop((a, b));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await
        .unwrap();
}
