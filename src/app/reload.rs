//! Reload on SIGHUP (DESIGN "Operations"): the file and the environment are
//! read again and validated whole, discovery included, on a thread of its
//! own (requests never wait for it), then the new state is swapped in
//! atomically. A request keeps the state it started with; the next one, on
//! any connection, gets the new. A refused config changes nothing.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::IntCounterVec;

use super::{assemble, start_refreshing, Io};
use crate::admin::Loaded;
use crate::audit::{Event, Kind, Reason};
use crate::config::{Config, Source};
use crate::gateway::State;
use crate::readiness::Readiness;
use crate::tls::Certificate;

/// The log target of reload lines (README, "Reload (SIGHUP)").
const LOG_TARGET: &str = "portcullis::reload";

/// `portcullis_config_reloads_total{result="ok"|"error"}`, both at 0 from the start.
pub fn reloads_counter() -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(
        prometheus::Opts::new(
            "config_reloads_total",
            "Config reloads (SIGHUP), by result: ok (applied) or error (refused, the running config kept)",
        ),
        &["result"],
    )?;
    c.with_label_values(&["ok"]);
    c.with_label_values(&["error"]);
    Ok(c)
}

/// A value compared across configs with its secrets included (the serialized
/// form redacts them, and a rotated secret is a change).
fn fingerprint<T: serde::Serialize>(value: &T, secrets: &[&[u8]]) -> (String, Vec<Vec<u8>>) {
    (
        serde_json::to_string(value).unwrap_or_default(),
        secrets.iter().map(|s| s.to_vec()).collect(),
    )
}

/// Whether the `[[source]]` lists are the same, secrets included.
pub fn same_sources(old: &Config, new: &Config) -> bool {
    old.sources.len() == new.sources.len()
        && old
            .sources
            .iter()
            .zip(&new.sources)
            .all(|(o, n)| same_source(o, n))
}

/// Whether one `[[source]]` is the same in both configs, secrets included
/// (its outbound TLS and provider timeouts come from it too).
pub fn same_source(old: &Source, new: &Source) -> bool {
    let secrets = |s: &Source| -> Vec<Vec<u8>> {
        [
            s.consumer_secret.as_ref().map(|x| x.expose().as_bytes()),
            s.private_key.as_ref().map(|x| x.expose().as_bytes()),
        ]
        .into_iter()
        .map(|x| x.unwrap_or_default().to_vec())
        .collect()
    };
    old.slug == new.slug
        && fingerprint(old, &[]) == fingerprint(new, &[])
        && secrets(old) == secrets(new)
}

/// Whether `[session]` and the public origin (cookie `Secure`, `__Host-`) are the same.
pub fn same_session(old: &Config, new: &Config) -> bool {
    let key = |c: &Config| {
        let secrets: Vec<&[u8]> = c
            .session
            .secrets
            .iter()
            .map(|s| s.expose().as_slice())
            .collect();
        (
            fingerprint(&c.session, &secrets),
            c.server.public_url.scheme().to_string(),
        )
    };
    key(old) == key(new)
}

/// Whether the `[[app]]` lists are the same.
pub fn same_apps(old: &Config, new: &Config) -> bool {
    fingerprint(&old.apps, &[]) == fingerprint(&new.apps, &[])
}

/// Settings read only at start: a new value is logged as needing a restart
/// and the running value is kept. Returns the keys that changed.
pub fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($key:literal, $($field:tt)+) => {
            if old.$($field)+ != new.$($field)+ {
                changed.push($key);
                new.$($field)+ = old.$($field)+.clone();
            }
        };
    }
    keep!("server.listen", server.listen);
    keep!("server.admin_listen", server.admin_listen);
    keep!("server.threads", server.threads);
    keep!("server.max_connections", server.max_connections);
    keep!("server.log_format", server.log_format);
    keep!("store.url", store.url);
    keep!("session.cookie_name", session.cookie_name);
    if old.server.tls.is_some() != new.server.tls.is_some() {
        changed.push("server.tls");
        new.server.tls = old.server.tls.clone();
    }
    // An unset public_url follows the listener that actually serves: one
    // derived from a `listen` or `tls` not applied would send callbacks and
    // cookies to a port or scheme nobody serves.
    if new.server.public_url_derived {
        let origin =
            crate::config::model::listener_origin(new.server.listen, new.server.tls.is_some());
        if let Some(url) = origin {
            new.server.public_url = url;
        }
    }
    changed
}

/// Applies reloads: owns what outlives one config (the I/O runtime, the
/// refresh tasks of the sources in use, the listener's certificate).
pub struct Reloader {
    io: Io,
    live: Arc<ArcSwap<State>>,
    loaded: Arc<ArcSwap<Loaded>>,
    readiness: Arc<Readiness>,
    refreshers: Vec<tokio::task::AbortHandle>,
    certificate: Option<Arc<Certificate>>,
    reloads: IntCounterVec,
    generation: u64,
}

/// Why a reload was refused: every problem, in the words `check` uses.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file or the environment holds problems.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// A source, an upstream, a policy or the TLS files cannot be used.
    #[error("{0}")]
    Start(#[from] super::StartError),
    /// `public_url` is unset and the listener kept running (restart-only
    /// `listen`/`tls`) makes it plain http off loopback (SES-02).
    #[error("server.public_url: not set, so it follows the running listener: `{0}` is plain http on a non-loopback address, and session cookies would travel unprotected; set public_url, or restart to apply server.listen / server.tls")]
    PlainPublicUrl(String),
}

/// The SES-02 check again on a `public_url` derived anew from the running
/// listener by [`keep_restart_only`] (validation saw the file's own `listen`
/// and `tls`).
pub fn derived_public_url_problem(config: &Config) -> Option<ReloadError> {
    let url = &config.server.public_url;
    (config.server.public_url_derived && url.scheme() == "http" && !crate::config::is_loopback(url))
        .then(|| ReloadError::PlainPublicUrl(url.origin().ascii_serialization()))
}

impl Reloader {
    /// A reloader for the state in `live`, generation 1.
    pub(crate) fn new(
        io: Io,
        live: Arc<ArcSwap<State>>,
        loaded: Arc<ArcSwap<Loaded>>,
        readiness: Arc<Readiness>,
        refreshers: Vec<tokio::task::AbortHandle>,
        certificate: Option<Arc<Certificate>>,
        reloads: IntCounterVec,
    ) -> Self {
        Reloader {
            io,
            live,
            loaded,
            readiness,
            refreshers,
            certificate,
            reloads,
            generation: 1,
        }
    }

    /// Reads, validates and applies the config file again; a refusal is
    /// logged with every problem and counted, and the running config stays.
    pub fn reload(&mut self) {
        match self.try_reload() {
            Ok(()) => {
                self.reloads.with_label_values(&["ok"]).inc();
                tracing::info!(
                    target: LOG_TARGET,
                    generation = self.generation,
                    "config reloaded; new requests use it"
                );
                self.io.audit.emit(&Event {
                    generation: Some(self.generation),
                    result: Some("ok"),
                    ..Event::new(Kind::ConfigReload)
                });
            }
            Err(e) => {
                self.reloads.with_label_values(&["error"]).inc();
                for line in e.to_string().lines() {
                    tracing::error!(target: LOG_TARGET, "{line}");
                }
                tracing::error!(
                    target: LOG_TARGET,
                    generation = self.generation,
                    "config reload refused; the running config keeps serving"
                );
                // The problems are on the lines above; the audit line says a reload was refused.
                self.io.audit.emit(&Event {
                    reason: Some(Reason::ConfigInvalid),
                    generation: Some(self.generation),
                    result: Some("error"),
                    ..Event::new(Kind::ConfigReload)
                });
            }
        }
    }

    fn try_reload(&mut self) -> Result<(), ReloadError> {
        let old = self.live.load_full();
        let mut config = crate::config::load(&old.config.file)?;
        for key in keep_restart_only(&old.config, &mut config) {
            tracing::warn!(
                target: LOG_TARGET,
                key,
                "{key} changed: it takes effect only after a restart; the running value is kept"
            );
        }
        if let Some(problem) = derived_public_url_problem(&config) {
            return Err(problem);
        }
        let renewed = match (&config.server.tls, &self.certificate) {
            (Some(t), Some(_)) => Some(
                crate::tls::certified_key(&t.cert_file, &t.key_file)
                    .map_err(|e| super::StartError::Tls(e.to_string()))?,
            ),
            _ => None,
        };
        let next = assemble(config, &self.io, Some((&old, &self.readiness)))?;
        // Accepted: from here on nothing can refuse it.
        if next.fresh_sources {
            for c in old.sources.collectors() {
                self.io.metrics.unregister(c);
            }
            for c in next.state.sources.collectors() {
                if let Err(e) = self.io.metrics.register(c) {
                    tracing::warn!(error = %e, "a source metric could not be registered");
                }
            }
            for task in self.refreshers.drain(..) {
                task.abort();
            }
            self.refreshers = start_refreshing(&next.state.sources, &self.io.handle);
        }
        if next.fresh_bearer {
            if let Some(c) = old.bearer.collector() {
                self.io.metrics.unregister(c);
            }
            if let Some(c) = next.state.bearer.collector() {
                if let Err(e) = self.io.metrics.register(c) {
                    tracing::warn!(error = %e, "the bearer cache metric could not be registered");
                }
            }
        }
        if let (Some(key), Some(cert)) = (renewed, &self.certificate) {
            cert.set(key);
        }
        self.generation += 1;
        self.readiness = next.readiness.clone();
        self.live.store(next.state);
        self.loaded.store(Arc::new(Loaded {
            generation: self.generation,
            loaded_at: self.io.clock.now(),
            readiness: next.readiness,
        }));
        Ok(())
    }
}

/// SIGHUP caught from now on (its default would end the process); `None`,
/// logged, where no handler can be set. Call inside the runtime that will
/// run [`on_hangup`]: a signal that arrives before then waits for it.
pub fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(hup) => Some(hup),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: reload needs a restart");
            None
        }
    }
}

/// Reloads on every SIGHUP `hup` reports, on a thread of its own: discovery
/// and upstream name lookups never hold a request. Signals that arrive
/// during a reload are coalesced into one more. Call inside the runtime
/// `hup` was made in.
pub fn on_hangup(mut reloader: Reloader, mut hup: tokio::signal::unix::Signal) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    let spawned = std::thread::Builder::new()
        .name("portcullis-reload".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                tracing::info!(target: LOG_TARGET, "SIGHUP: reloading the config");
                reloader.reload();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no reload thread: reload needs a restart");
        return;
    }
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // Full: a reload is already queued and will read the file anew.
            let _ = tx.try_send(());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_A: &str = "feeQnjJyhqAI92I28IgVDanqRnYHerVyw+5HfOJDMK8=";
    const SECRET_B: &str = "Qm9vdHN0cmFwIHNlY3JldCBmb3IgdGVzdHMgb25seSE=";

    fn config(listen: &str, secret: &str, cookie: &str, client_secret: &str) -> Config {
        let public = "public_url = \"http://127.0.0.1:8080\"";
        config_with(listen, public, secret, cookie, client_secret)
    }

    fn config_with(
        listen: &str,
        public: &str,
        secret: &str,
        cookie: &str,
        client_secret: &str,
    ) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            format!(
                r#"[server]
listen = "{listen}"
{public}
[session]
secrets = ["{secret}"]
cookie_name = "{cookie}"
[store]
url = "sqlite::memory:"
[[source]]
slug = "corp"
type = "openidconnect"
consumer_key = "gw"
consumer_secret = "{client_secret}"
authorization_url = "https://idp.example/auth"
access_token_url = "https://idp.example/token"
profile_url = "https://idp.example/userinfo"
issuer = "https://idp.example"
oidc_jwks = "{{\"keys\":[]}}"
[[app]]
name = "wiki"
upstream = "http://127.0.0.1:9"
[[app.policy]]
on = ["access"]
effect = "allow"
"#
            ),
        )
        .unwrap();
        crate::config::load_with_env(&file, Vec::<(String, String)>::new()).unwrap()
    }

    #[test]
    fn a_rotated_client_secret_or_session_secret_counts_as_a_change() {
        let base = config("127.0.0.1:8080", SECRET_A, "pc", "one");
        assert!(same_sources(&base, &base.clone()));
        assert!(same_session(&base, &base.clone()));
        assert!(same_apps(&base, &base.clone()));
        let rotated = config("127.0.0.1:8080", SECRET_A, "pc", "two");
        assert!(!same_sources(&base, &rotated));
        assert!(same_session(&base, &rotated));
        let resealed = config("127.0.0.1:8080", SECRET_B, "pc", "one");
        assert!(!same_session(&base, &resealed));
        assert!(same_sources(&base, &resealed));
    }

    #[test]
    fn listen_and_cookie_name_changes_are_named_and_the_running_values_kept() {
        let old = config("127.0.0.1:8080", SECRET_A, "pc", "one");
        let mut new = config("127.0.0.1:8181", SECRET_A, "other", "one");
        let changed = keep_restart_only(&old, &mut new);
        assert_eq!(changed, ["server.listen", "session.cookie_name"]);
        assert_eq!(new.server.listen, old.server.listen);
        assert_eq!(new.session.cookie_name, "pc");
        assert!(keep_restart_only(&old, &mut old.clone()).is_empty());
    }

    #[test]
    fn an_unset_public_url_follows_the_listen_that_is_kept() {
        let old = config_with("127.0.0.1:8080", "", SECRET_A, "pc", "one");
        let mut new = config_with("127.0.0.1:8181", "", SECRET_A, "pc", "one");
        assert_eq!(new.server.public_url.as_str(), "http://127.0.0.1:8181/");
        assert_eq!(keep_restart_only(&old, &mut new), ["server.listen"]);
        assert_eq!(new.server.public_url.as_str(), "http://127.0.0.1:8080/");
        // One set by hand is the operator's, whatever the listener.
        let set = "public_url = \"http://127.0.0.1:9000\"";
        let mut new = config_with("127.0.0.1:8181", set, SECRET_A, "pc", "one");
        keep_restart_only(&old, &mut new);
        assert_eq!(new.server.public_url.as_str(), "http://127.0.0.1:9000/");
    }

    /// Behind a TLS-terminating balancer, `listen = "0.0.0.0:8080"` with an
    /// https `public_url`; a reload that adds `[server.tls]` (restart-only)
    /// and drops `public_url` would follow the plain listener kept running:
    /// refused, as validation refuses such a config at start (SES-02).
    #[test]
    fn a_derived_public_url_on_the_kept_plain_listener_off_loopback_is_refused() {
        let set = "public_url = \"https://gw.example\"";
        let old = config_with("0.0.0.0:8080", set, SECRET_A, "pc", "one");
        assert!(derived_public_url_problem(&old).is_none());
        // As loaded from the new file: its own `tls` made the default https.
        let mut new = old.clone();
        new.server.public_url = url::Url::parse("https://0.0.0.0:8080").unwrap();
        new.server.public_url_derived = true;
        new.server.tls = Some(crate::config::Tls {
            cert_file: "c.pem".into(),
            key_file: "k.pem".into(),
        });
        assert_eq!(keep_restart_only(&old, &mut new), ["server.tls"]);
        assert_eq!(new.server.public_url.as_str(), "http://0.0.0.0:8080/");
        let problem = derived_public_url_problem(&new).unwrap().to_string();
        assert!(problem.contains("server.public_url"), "{problem}");
        assert!(
            problem.contains("`http://0.0.0.0:8080` is plain http"),
            "{problem}"
        );
    }
}
