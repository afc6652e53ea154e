//! Wiring: builds the shared state from a validated config, once, and runs
//! the proxy and admin listeners on pingora until a shutdown signal.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use pingora::upstreams::peer::HttpPeer;

use crate::admin::{Admin, Readiness};
use crate::config::Config;
use crate::gateway::{Gateway, State};
use crate::metrics::Metrics;
use crate::outbound::Http;
use crate::routing::Router;
use crate::session::cookie::Sealer;
use crate::session::service::Sessions;
use crate::source::{LoadError, LoadReport, Sources};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An upstream host name did not resolve: fix `app[..].upstream` or DNS.
    #[error("app[{app}].upstream: cannot resolve {host}:{port}: {reason}")]
    Resolve {
        /// The app.
        app: String,
        /// The upstream host.
        host: String,
        /// The upstream port.
        port: u16,
        /// Resolver message.
        reason: String,
    },
    /// A listen address is taken or not allowed: pick another `server.listen`/`server.admin_listen`.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// OS message.
        reason: String,
    },
    /// TLS files could not be loaded: check `server.tls`.
    #[error("server.tls: {0}")]
    Tls(String),
    /// Metrics registry failure (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The server thread did not come up.
    #[error("the gateway did not start listening on {0} within 10 s")]
    NotListening(SocketAddr),
    /// A source was refused at load (its discovery document names another issuer): fix the source.
    #[error("{0}")]
    Source(#[from] LoadError),
    /// The user store could not be opened: check `store.url` and that the database is reachable.
    #[error("store.url: {0}")]
    Store(#[from] crate::identity::store::StoreError),
    /// The outbound HTTP client or the background runtime could not be built.
    #[error("cannot set up outbound I/O: {0}")]
    Io(String),
}

/// Timeouts for calls to identity providers (SECURITY.md: 5 s).
const PROVIDER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PROVIDER_TOTAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The outbound client every provider call goes through.
fn provider_http() -> Result<Http, StartError> {
    Http::new(PROVIDER_CONNECT_TIMEOUT, PROVIDER_TOTAL_TIMEOUT)
        .map_err(|e| StartError::Io(e.to_string()))
}

/// A small runtime for provider and store I/O begun outside requests
/// (discovery at load and its retries). It lives as long as the gateway, so
/// connections opened on it keep working when requests reuse them.
fn background_runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("portcullis-bg")
        .enable_all()
        .build()
        .map_err(|e| StartError::Io(e.to_string()))
}

/// Runs discovery for `check`: every source's effective endpoints, or the
/// source that is refused.
pub fn check_sources(config: &Config) -> Result<LoadReport, StartError> {
    let rt = background_runtime()?;
    let http = provider_http()?;
    let readiness = Arc::new(Readiness::new(
        config.sources.iter().map(|s| s.slug.as_str()),
        false,
    ));
    let (_, report) = rt.block_on(Sources::load(config, http, readiness))?;
    Ok(report)
}

/// What needs async set-up before the listeners start.
struct Prepared {
    background: tokio::runtime::Runtime,
    sources: Arc<Sources>,
    sessions: Arc<Sessions>,
    readiness: Arc<Readiness>,
}

fn prepare(config: &Config) -> Result<Prepared, StartError> {
    let background = background_runtime()?;
    let http = provider_http()?;
    let readiness = Arc::new(Readiness::new(
        config.sources.iter().map(|s| s.slug.as_str()),
        false,
    ));
    let (sources, report) = background.block_on(Sources::load(config, http, readiness.clone()))?;
    for (slug, reason) in &report.pending {
        tracing::warn!(source = %slug, reason = %reason, "source not ready; discovery will be retried");
    }
    for (slug, key, discovered, configured) in &report.overridden {
        tracing::info!(source = %slug, key, discovered = %discovered, configured = %configured, "a URL set in the config replaces the discovered one");
    }
    let store = background.block_on(crate::identity::store::open(config.store.url.expose()))?;
    let secure = config.server.public_url.scheme() == "https";
    let sessions = Arc::new(Sessions::new(
        Sealer::new(&config.session.secrets),
        store,
        &config.session.cookie_name,
        secure,
        config.session.lifetime,
        config.session.idle_timeout,
        config.session.identity_cache_ttl,
    ));
    let sources = Arc::new(sources);
    // Every source's keys are hot before the first request; keys and
    // discovery documents are kept fresh after (DESIGN "Operations").
    for (slug, next) in background.block_on(sources.fetch_all_keys()) {
        background.spawn(sources.clone().keep_keys_fresh(slug, next));
    }
    for slug in sources.discovered() {
        background.spawn(sources.clone().keep_discovery_fresh(slug));
    }
    Ok(Prepared {
        background,
        sources,
        sessions,
        readiness,
    })
}

/// The addresses the gateway actually listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener, if configured.
    pub admin: Option<SocketAddr>,
}

/// SIGTERM and SIGINT both drain in-flight requests before exiting; the flag
/// tells the drain watcher that shutdown has begun.
struct GracefulOnSignals(Arc<AtomicBool>);

#[async_trait]
impl ShutdownSignalWatch for GracefulOnSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            // Without signal handlers the process can still be killed; wait forever.
            std::future::pending::<()>().await;
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
            _ = int.recv() => tracing::info!("SIGINT: finishing in-flight requests"),
        }
        self.0.store(true, Ordering::Release);
        ShutdownSignal::GracefulTerminate
    }
}

/// Shuts down when notified; used by tests and embedders.
struct NotifiedShutdown(Arc<tokio::sync::Notify>);

#[async_trait]
impl ShutdownSignalWatch for NotifiedShutdown {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::GracefulTerminate
    }
}

/// A gateway running on its own thread.
pub struct Running {
    /// Where it listens.
    pub bound: Bound,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts a graceful shutdown and waits for the server to finish.
    pub fn shutdown(mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Starts a graceful shutdown without waiting.
    pub fn begin_shutdown(&self) {
        self.stop.notify_one();
    }
}

/// Runs the gateway until SIGTERM or SIGINT. Blocks. `before_exit` runs just
/// before the process ends (flush logs there).
pub fn serve(config: Config, before_exit: Box<dyn FnOnce() + Send>) -> Result<(), StartError> {
    let (server, bound, in_flight, _background) = build(config)?;
    tracing::info!(listen = %bound.listen, admin = ?bound.admin, "portcullis is serving");
    let signalled = Arc::new(AtomicBool::new(false));
    watch_drain(signalled.clone(), in_flight, before_exit);
    server.run(RunArgs {
        shutdown_signal: Box::new(GracefulOnSignals(signalled)),
    });
    Ok(())
}

/// `serve --dev`: a demo OpenID provider and an echo app on loopback, the
/// gateway in front of the echo app, a temporary SQLite store and a random
/// secret. Blocks like [`serve`].
pub fn serve_dev(
    port: u16,
    upstream: Option<String>,
    before_exit: Box<dyn FnOnce() + Send>,
) -> Result<(), StartError> {
    let demo_rt = background_runtime()?;
    let listen = concrete(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let public = format!("http://{listen}");
    let provider_cfg =
        crate::demo::ProviderConfig::example(&format!("{public}/_auth/callback/demo"));
    let client = provider_cfg
        .clients
        .first()
        .cloned()
        .ok_or_else(|| StartError::Io("demo provider has no client".into()))?;
    let (provider, echo) = demo_rt
        .block_on(async {
            let p = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let e = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            Ok::<_, std::io::Error>((
                crate::demo::provider::start(p, provider_cfg).await,
                crate::demo::echo::start(e).await,
            ))
        })
        .map_err(|e| StartError::Io(e.to_string()))?;
    let dir = std::env::temp_dir().join(format!("portcullis-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| StartError::Io(e.to_string()))?;
    let secret = {
        use base64::Engine as _;
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| StartError::Io("no random source".into()))?;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let toml = format!(
        r#"[server]
listen = "{listen}"
public_url = "{public}"
[session]
secrets = ["{secret}"]
[store]
url = "sqlite://{db}"
[[source]]
slug = "demo"
name = "the demo provider"
type = "openidconnect"
consumer_key = "{id}"
consumer_secret = "{client_secret}"
oidc_well_known_url = "{wk}"
scopes = ["openid", "email", "profile", "groups"]
[[app]]
name = "demo"
upstream = "{upstream}"
"#,
        upstream = upstream.unwrap_or_else(|| format!("http://{}", echo.addr)),
        db = dir.join("portcullis.db").display(),
        id = client.client_id,
        client_secret = client.client_secret,
        wk = provider.well_known_url(),
    );
    let file = dir.join("portcullis.toml");
    std::fs::write(&file, toml).map_err(|e| StartError::Io(e.to_string()))?;
    let config = crate::config::load_with_env(&file, Vec::<(String, String)>::new())
        .map_err(|e| StartError::Io(e.to_string()))?;
    let warning = "DEMO MODE: a built-in provider that signs anyone in, a random secret and a throw-away store. NOT FOR PRODUCTION.";
    eprintln!("\n!!! {warning}\n");
    tracing::warn!("{warning}");
    println!(
        "portcullis demo: open {public}/ in a browser (provider {}, echo app http://{})",
        provider.issuer(),
        echo.addr
    );
    let result = serve(config, before_exit);
    // The provider and the echo app live until the gateway stops.
    drop((provider, echo));
    drop(demo_rt);
    result
}

/// pingora waits its whole grace period before stopping, busy or not; this
/// ends the process as soon as no request is left in flight after a signal.
fn watch_drain(
    signalled: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    before_exit: Box<dyn FnOnce() + Send>,
) {
    std::thread::spawn(move || {
        let mut idle_checks = 0;
        loop {
            std::thread::sleep(Duration::from_millis(50));
            if !signalled.load(Ordering::Acquire) {
                continue;
            }
            if in_flight.load(Ordering::Acquire) == 0 {
                idle_checks += 1;
            } else {
                idle_checks = 0;
            }
            // Two idle checks in a row: listeners are closed and nothing is being served.
            if idle_checks >= 2 {
                tracing::info!("drained; exiting");
                before_exit();
                std::process::exit(0);
            }
        }
    });
}

/// Runs the gateway on a thread and returns once its listener accepts
/// connections. Safe to call from async code: all set-up happens on that thread.
pub fn spawn(config: Config) -> Result<Running, StartError> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let watch = NotifiedShutdown(stop.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let (server, bound, _in_flight, background) = match build(config) {
            Ok(built) => built,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let _ = tx.send(Ok(bound));
        server.run(RunArgs {
            shutdown_signal: Box::new(watch),
        });
        // Dropped here, on a plain thread: never inside another runtime.
        drop(background);
    });
    let bound = rx
        .recv()
        .map_err(|_| StartError::Io("the gateway thread ended during set-up".into()))??;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(bound.listen).is_err() {
        if Instant::now() > deadline {
            return Err(StartError::NotListening(bound.listen));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Running {
        bound,
        stop,
        thread: Some(thread),
    })
}

/// A concrete address for `addr`: port 0 is replaced by a port free right now.
fn concrete(addr: SocketAddr) -> Result<SocketAddr, StartError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let l = TcpListener::bind(addr).map_err(|e| StartError::Listen {
        addr,
        reason: e.to_string(),
    })?;
    l.local_addr().map_err(|e| StartError::Listen {
        addr,
        reason: e.to_string(),
    })
}

/// One prepared peer per app; host names are resolved here, once.
fn peers(config: &Config) -> Result<Vec<HttpPeer>, StartError> {
    let mut out = Vec::new();
    for app in &config.apps {
        let up = &app.upstream;
        let addr = (up.host.as_str(), up.port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
            .map_err(|reason| StartError::Resolve {
                app: app.name.clone(),
                host: up.host.clone(),
                port: up.port,
                reason,
            })?;
        let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
        peer.options.connection_timeout = Some(config.server.upstream_connect_timeout);
        peer.options.read_timeout = Some(config.server.upstream_read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        out.push(peer);
    }
    Ok(out)
}

fn build(
    mut config: Config,
) -> Result<(Server, Bound, Arc<AtomicUsize>, tokio::runtime::Runtime), StartError> {
    config.server.listen = concrete(config.server.listen)?;
    if let Some(a) = config.server.admin_listen {
        config.server.admin_listen = Some(concrete(a)?);
    }
    let bound = Bound {
        listen: config.server.listen,
        admin: config.server.admin_listen,
    };
    let conf = ServerConf {
        threads: config.server.threads,
        // In-flight requests may finish during the grace period; then runtimes stop.
        grace_period_seconds: Some(config.server.shutdown_timeout.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let prepared = prepare(&config)?;
    let readiness = prepared.readiness.clone();
    let app_names: Vec<String> = config.apps.iter().map(|a| a.name.clone()).collect();
    let metrics = Metrics::new(&app_names)?;
    for c in prepared.sources.collectors() {
        metrics.register(c)?;
    }
    let bearer = crate::bearer::Bearer::new(
        prepared.sources.clone(),
        &config.sources,
        config.server.bearer_cache_entries,
    );
    if let Some(c) = bearer.collector() {
        metrics.register(c)?;
    }
    let metrics = Arc::new(metrics);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut app_rules = Vec::new();
    for app in &config.apps {
        app_rules.push(
            crate::policy::Rules::new(&app.policies)
                .map_err(|e| StartError::Io(format!("app[{}].policy: {e}", app.name)))?,
        );
    }
    let state = Arc::new(State {
        bearer,
        app_rules,
        sources: prepared.sources.clone(),
        sessions: prepared.sessions.clone(),
        in_flight: in_flight.clone(),
        router: Router::new(&config.apps),
        peers: peers(&config)?,
        metrics: metrics.clone(),
        scheme: if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        },
        config,
    });

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(state.clone()),
        "portcullis proxy",
    );
    let listen = bound.listen.to_string();
    match &state.config.server.tls {
        None => proxy.add_tcp(&listen),
        Some(tls) => {
            let cert = tls.cert_file.to_string_lossy();
            let key = tls.key_file.to_string_lossy();
            let mut settings = pingora::listeners::tls::TlsSettings::intermediate(&cert, &key)
                .map_err(|e| StartError::Tls(e.to_string()))?;
            settings.enable_h2();
            proxy.add_tls_with_settings(&listen, None, settings);
        }
    }
    server.add_service(proxy);

    if let Some(admin_addr) = bound.admin {
        let mut admin = Service::new(
            "portcullis admin".to_string(),
            Admin::new(metrics, readiness),
        );
        admin.add_tcp(&admin_addr.to_string());
        server.add_service(admin);
    }
    Ok((server, bound, in_flight, prepared.background))
}
