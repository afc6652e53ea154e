//! PostgreSQL the tests start themselves (never the shared server): over TLS
//! with the `localhost` leaf of the test CA, `sslmode` in `store.url`
//! honoured; and `/readyz` turning 503 when the store goes away. Skipped with
//! a notice where the PostgreSQL 15 binaries are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::Connection as _;

use crate::engine::fixture;
use crate::support::{base_config, client, free_port, Gateway};

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster of its own in a temp dir, on its own port, with
/// `ssl = on`; stopped (immediately) when dropped.
pub(crate) struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
    stopped: bool,
}

fn as_postgres(program: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--", &format!("{BIN}/{program}")])
        .args(args)
        .output()
        .unwrap()
}

impl OwnPostgres {
    /// Starts it, or `None` (with a notice) where the binaries are missing.
    pub(crate) fn start() -> Option<OwnPostgres> {
        if !Path::new(BIN).join("initdb").exists() {
            eprintln!("NOTICE: {BIN} not found; skipping the test with its own PostgreSQL");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let chown = |p: &Path| {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(p)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown {}", p.display());
        };
        chown(dir.path());
        let out = as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb: {out:?}");
        // TCP only over TLS: a plain connection is refused, so one that works is encrypted.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .unwrap();
        std::fs::copy(fixture("localhost-cert.pem"), data.join("server.crt")).unwrap();
        std::fs::copy(fixture("localhost-key.pem"), data.join("server.key")).unwrap();
        chown(&data);
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let mut pg = OwnPostgres {
            dir,
            port: free_port(),
            stopped: true,
        };
        pg.restart();
        Some(pg)
    }

    /// Starts the stopped cluster again: same data, same port.
    pub(crate) fn restart(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let out = as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {out:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.stopped = false;
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `postgres://postgres@HOST:PORT/postgres?QUERY`.
    pub(crate) fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    /// Stops it at once (`-m immediate`: like a crash or a pulled cable).
    pub(crate) fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let _ = as_postgres(
                "pg_ctl",
                &[
                    "-D",
                    self.data().to_str().unwrap(),
                    "-m",
                    "immediate",
                    "stop",
                ],
            );
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_speaks_tls_to_postgresql_as_sslmode_says_and_refuses_a_wrong_root() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    // The server takes TLS only: without it the store cannot open.
    let plain = pg.url("127.0.0.1", "sslmode=disable");
    assert!(portcullis::identity::store::open(&plain).await.is_err());
    // require: encrypted, certificate not checked (the server's CA is unknown here).
    let require = pg.url("127.0.0.1", "sslmode=require");
    portcullis::identity::store::open(&require)
        .await
        .unwrap_or_else(|e| panic!("sslmode=require: {e}"));
    let mut conn = sqlx::PgConnection::connect(&require).await.unwrap();
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(ssl, "the connection is not encrypted");

    // verify-full with the CA that signed the server's certificate.
    let ca = fixture("test-ca.pem");
    let right = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    portcullis::identity::store::open(&right)
        .await
        .unwrap_or_else(|e| panic!("verify-full with the test CA: {e}"));

    // verify-full with a root that did not sign it: refused, and the gateway
    // does not start, naming store.url and the certificate.
    let wrong_root = fixture("selfsigned-cert.pem");
    let wrong = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", wrong_root.display()),
    );
    let config = format!(
        "{}\n[[app]]\nname = \"wiki\"\nupstream = \"http://127.0.0.1:9\"\npublic_paths = [\"/\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        base_config().replace("sqlite::memory:", &wrong)
    );
    let file = crate::support::config_file(&config);
    let config = portcullis::config::load_with_env(&file.path, Vec::new()).unwrap();
    let message = match portcullis::app::spawn(config) {
        Ok(_) => panic!("the gateway started on an untrusted PostgreSQL certificate"),
        Err(e) => e.to_string(),
    };
    assert!(message.starts_with("store.url:"), "{message}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_turns_503_naming_the_store_when_postgresql_stops() {
    let Some(mut pg) = OwnPostgres::start() else {
        return;
    };
    let url = pg.url("127.0.0.1", "sslmode=require");
    let gw = Gateway::start_full(&format!(
        "{}\n[[app]]\nname = \"wiki\"\nupstream = \"http://127.0.0.1:9\"\npublic_paths = [\"/\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        base_config().replace("sqlite::memory:", &url)
    ));
    let ready = |gw: &Gateway| {
        let url = gw.admin_url("/readyz");
        async move {
            let r = client().get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, body)
        }
    };
    let (status, body) = ready(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["store"], "ok");

    pg.stop();
    let started = std::time::Instant::now();
    let (status, body) = ready(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    let reason = body["store"].as_str().unwrap();
    assert_ne!(reason, "ok");
    assert!(
        reason.starts_with("unreachable") || reason.starts_with("no answer"),
        "{reason}"
    );
    // Bounded: the probe answers within the store timeout (plus slack).
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}
