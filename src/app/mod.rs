//! Wiring: builds the shared state from a validated config, once, and runs
//! the proxy listener on one current-thread runtime per worker (the admin
//! listener on its own) until a shutdown signal, then drains.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admin::Admin;
use crate::config::Config;
use crate::gateway::access::Sink as AccessSink;
use crate::gateway::proxy::Target;
use crate::gateway::{server, State};
use crate::metrics::Metrics;
use crate::outbound::Http;
use crate::readiness::Readiness;
use crate::routing::Router;
use crate::session::cookie::Sealer;
use crate::session::service::Sessions;
use crate::source::{LoadError, LoadReport, Sources};

pub mod reload;

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
    #[error("{key}: cannot listen on {addr}: {reason}")]
    Listen {
        /// The key that names the address: `server.listen` or `server.admin_listen`.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// OS message.
        reason: String,
    },
    /// TLS files could not be loaded: check `server.tls`.
    #[error("server.tls: {0}")]
    Tls(String),
    /// An app's upstream client could not be set up: check `app[..].upstream` and `upstream_ca_file`.
    #[error("app[{app}]: {reason}")]
    Upstream {
        /// The app.
        app: String,
        /// What failed.
        reason: String,
    },
    /// Metrics registry failure (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The server thread did not come up.
    #[error("the gateway did not start listening on {0} within 10 s")]
    NotListening(SocketAddr),
    /// A source was refused at load (its discovery document names another issuer): fix the source.
    #[error(transparent)]
    Source(#[from] LoadError),
    /// The user store could not be opened: check `store.url` and that the database is reachable.
    #[error("store.url: {0}")]
    Store(#[from] crate::identity::store::StoreError),
    /// The outbound HTTP client or the background runtime could not be built.
    #[error("cannot set up outbound I/O: {0}")]
    Io(String),
    /// The identity assertion key could not be derived from `session.secrets`.
    #[error("session.secrets: {0}")]
    Assertion(#[from] crate::assertion::AssertionError),
}

impl StartError {
    /// The environment variable that sets the config value this error is
    /// about (entries addressed by slug or name, as the loader accepts), for
    /// the message to name beside the file; `None` when no value is at fault.
    pub fn env_var(&self) -> Option<String> {
        let entry = |table: &str, name: &str, key: &str| {
            format!("PORTCULLIS_{table}__{}__{key}", name.to_ascii_uppercase())
        };
        match self {
            StartError::Resolve { app, .. } => Some(entry("APP", app, "UPSTREAM")),
            StartError::Upstream { app, .. } => Some(format!(
                "{} or {}",
                entry("APP", app, "UPSTREAM"),
                entry("APP", app, "UPSTREAM_CA_FILE")
            )),
            StartError::Tls(_) => {
                Some("PORTCULLIS_SERVER__TLS__CERT_FILE or PORTCULLIS_SERVER__TLS__KEY_FILE".into())
            }
            StartError::Source(e) => Some(entry("SOURCE", &e.slug, &e.key.to_ascii_uppercase())),
            StartError::Store(_) => Some("PORTCULLIS_STORE__URL".into()),
            StartError::Assertion(_) => Some("PORTCULLIS_SESSION__SECRETS".into()),
            StartError::Listen { key, .. } => Some(if *key == ADMIN_LISTEN {
                "PORTCULLIS_SERVER__ADMIN_LISTEN".into()
            } else {
                "PORTCULLIS_SERVER__LISTEN".into()
            }),
            StartError::Metrics(_) | StartError::NotListening(_) | StartError::Io(_) => None,
        }
    }
}

/// Timeouts for calls to identity providers (docs/security.md: 5 s).
const PROVIDER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PROVIDER_TOTAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The outbound client every provider call goes through.
fn provider_http(config: &Config) -> Result<Http, StartError> {
    Http::for_sources(
        PROVIDER_CONNECT_TIMEOUT,
        PROVIDER_TOTAL_TIMEOUT,
        &config.sources,
    )
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
    let http = provider_http(config)?;
    let readiness = Arc::new(Readiness::new(
        config.sources.iter().map(|s| s.slug.as_str()),
        false,
    ));
    let clock = crate::clock::Clock::system();
    let (_, report) = rt.block_on(Sources::load(config, http, readiness, clock))?;
    Ok(report)
}

/// What every config generation shares: the runtime for provider and
/// store I/O, the store, the metrics registry and the access sink.
pub(crate) struct Io {
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) store: Arc<dyn crate::identity::store::UserStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) access: AccessSink,
    pub(crate) audit: crate::audit::Audit,
    /// The wall clock every generation's state reads.
    pub(crate) clock: crate::clock::Clock,
}

/// A config's request-path state, and whether its sources are new (their
/// refresh tasks and metrics still to be started) or the previous ones.
pub(crate) struct Assembled {
    pub(crate) state: Arc<State>,
    pub(crate) readiness: Arc<Readiness>,
    pub(crate) fresh_sources: bool,
    pub(crate) fresh_bearer: bool,
}

/// Builds the state of `config`. With `prev` (a reload), the parts the
/// change does not touch are kept with their caches: the sources (JWKS and
/// discovery) when no `[[source]]` changed, the sessions (their cache) when
/// `[session]` did not, the bearer verdict cache when neither sources nor
/// apps did. Nothing here is visible to requests until the caller swaps it in.
pub(crate) fn assemble(
    config: Config,
    io: &Io,
    prev: Option<(&State, &Arc<Readiness>)>,
) -> Result<Assembled, StartError> {
    use reload::{same_apps, same_session, same_sources};
    let kept_sources = prev.filter(|(old, _)| same_sources(&old.config, &config));
    let (sources, readiness) = match kept_sources {
        Some((old, readiness)) => (old.sources.clone(), readiness.clone()),
        None => load_sources(&config, io, prev.map(|(old, _)| old))?,
    };
    let fresh_sources = kept_sources.is_none();
    let sessions = match prev.filter(|(old, _)| same_session(&old.config, &config)) {
        Some((old, _)) => old.sessions.clone(),
        None => new_sessions(&config, io),
    };
    // Verdicts are keyed by app index and checked against the app's
    // audiences: kept only when neither the apps nor the sources changed.
    let kept_bearer = prev.filter(|(old, _)| {
        !fresh_sources
            && same_apps(&old.config, &config)
            && old.config.server.bearer_cache_entries == config.server.bearer_cache_entries
    });
    let bearer = match kept_bearer {
        Some((old, _)) => old.bearer.clone(),
        None => Arc::new(crate::bearer::Bearer::new(
            sources.clone(),
            &config.sources,
            config.server.bearer_cache_entries,
        )),
    };
    let app_names: Vec<String> = config.apps.iter().map(|a| a.name.clone()).collect();
    let metrics = if prev.is_some() {
        Arc::new(io.metrics.for_apps(&app_names)?)
    } else {
        io.metrics.clone()
    };
    let app_rules: Vec<_> = config
        .apps
        .iter()
        .map(|app| crate::policy::Rules::new(&app.policies))
        .collect();
    let assertions = crate::assertion::Assertions::new(
        &config.session.secrets,
        config.server.public_url.origin().ascii_serialization(),
    )?;
    let state = Arc::new(State {
        claim_header_names: claim_header_names(&config),
        assertions,
        access: io.access.clone(),
        audit: io.audit.clone(),
        clock: io.clock.clone(),
        bearer,
        app_rules,
        sources,
        sessions,
        router: Router::new(&config.apps),
        origins: crate::redirect::Origins::new(
            &config.server.public_url,
            config.apps.iter().filter_map(|a| a.host.clone()),
        ),
        upstreams: upstreams(&config)?,
        metrics,
        scheme: if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        },
        config,
    });
    Ok(Assembled {
        state,
        readiness,
        fresh_sources,
        fresh_bearer: kept_bearer.is_none(),
    })
}

/// Every app's `claim_headers` names, once each.
fn claim_header_names(config: &Config) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = config
        .apps
        .iter()
        .flat_map(|a| a.claim_headers.keys())
        .collect();
    names.into_iter().cloned().collect()
}

/// The sessions of `config`, with an empty cache.
fn new_sessions(config: &Config, io: &Io) -> Arc<Sessions> {
    let secure = config.server.public_url.scheme() == "https";
    Arc::new(Sessions::new(
        Sealer::new(&config.session.secrets),
        io.store.clone(),
        &config.session.cookie_name,
        config.session.cookie_domain.clone(),
        secure,
        config.session.lifetime,
        config.session.idle_timeout,
        config.session.identity_cache_ttl,
    ))
}

/// Loads the sources of `config` afresh (discovery, keys), logging the ones
/// not ready yet; on a reload (`prev`), a source that did not change keeps
/// the keys it fetched.
fn load_sources(
    config: &Config,
    io: &Io,
    prev: Option<&State>,
) -> Result<(Arc<Sources>, Arc<Readiness>), StartError> {
    let http = provider_http(config)?;
    let readiness = Arc::new(Readiness::new(
        config.sources.iter().map(|s| s.slug.as_str()),
        false,
    ));
    let (mut sources, report) = io.handle.block_on(Sources::load(
        config,
        http,
        readiness.clone(),
        io.clock.clone(),
    ))?;
    // A source the reload left as it was keeps its fetched keys (the
    // others' changes are no reason to fetch them again) and, when its
    // provider cannot be reached now, its last good endpoints.
    let mut kept = Vec::new();
    if let Some(old) = prev {
        for s in &config.sources {
            if !old.config.sources.iter().any(|o| reload::same_source(o, s)) {
                continue;
            }
            if sources.jwks.carry_over(&old.sources.jwks, &s.slug) {
                tracing::debug!(source = %s.slug, "reload keeps the source's keys");
            }
            if sources.carry_over_endpoints(&old.sources, &s.slug) {
                kept.push(s.slug.as_str());
            }
        }
    }
    for (slug, reason) in &report.pending {
        if kept.contains(&slug.as_str()) {
            tracing::warn!(source = %slug, reason = %reason, "discovery failed on reload; the source keeps its last good endpoints and discovery will be retried");
        } else {
            tracing::warn!(source = %slug, reason = %reason, "source not ready; discovery will be retried");
        }
    }
    for (slug, key, discovered, configured) in &report.overridden {
        tracing::info!(source = %slug, key, discovered = %discovered, configured = %configured, "a URL set in the config replaces the discovered one");
    }
    Ok((Arc::new(sources), readiness))
}

/// Starts keeping `sources`' keys and discovery documents fresh (DESIGN
/// "Operations"), after fetching every key set once; the handles stop them
/// when a reload replaces the sources.
pub(crate) fn start_refreshing(
    sources: &Arc<Sources>,
    handle: &tokio::runtime::Handle,
) -> Vec<tokio::task::AbortHandle> {
    let mut tasks = Vec::new();
    for (slug, next) in handle.block_on(sources.fetch_all_keys()) {
        tasks.push(
            handle
                .spawn(sources.clone().keep_keys_fresh(slug, next))
                .abort_handle(),
        );
    }
    for slug in sources.discovered() {
        tasks.push(
            handle
                .spawn(sources.clone().keep_discovery_fresh(slug))
                .abort_handle(),
        );
    }
    tasks
}

/// The addresses the gateway actually listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener, if configured.
    pub admin: Option<SocketAddr>,
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

/// Runs the gateway until SIGTERM or SIGINT, access lines to `access`.
/// Blocks. `before_exit` runs just before the process ends (flush logs there).
pub fn serve(
    config: Config,
    access: AccessSink,
    before_exit: Box<dyn FnOnce() + Send>,
) -> Result<(), StartError> {
    let control = control_runtime()?;
    // Caught before the listeners are bound, while the sources may still take
    // seconds to load: from then on a SIGHUP is a reload (one that comes
    // early is applied once serving starts), never SIGHUP's default end of
    // the process.
    let hangup = control.block_on(async { reload::hangup_signal() });
    let built = build(config, access, crate::clock::Clock::system())?;
    tracing::info!(listen = %built.bound.listen, admin = ?built.bound.admin, "portcullis is serving");
    let result = run(built, control, signalled(), hangup);
    before_exit();
    result
}

/// Resolves on SIGTERM or SIGINT; both drain in-flight requests before exiting.
async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can still be killed; wait forever.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
        _ = int.recv() => tracing::info!("SIGINT: finishing in-flight requests"),
    }
}

/// `serve --dev`: a demo OpenID provider and an echo app on loopback, the
/// gateway in front of the echo app, a temporary SQLite store and a random
/// secret. Blocks like [`serve`].
pub fn serve_dev(
    port: u16,
    upstream: Option<String>,
    access: AccessSink,
    before_exit: Box<dyn FnOnce() + Send>,
) -> Result<(), StartError> {
    let demo_rt = background_runtime()?;
    let listen = concrete(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let public = format!("http://{listen}");
    let provider_cfg =
        crate::demo::ProviderConfig::example(&format!("{public}/_auth/callback/demo"))
            .map_err(|e| StartError::Io(e.to_string()))?;
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
        crate::random::fill(&mut bytes).map_err(|e| StartError::Io(e.to_string()))?;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let config = dev_config(
        &dir,
        &listen,
        &public,
        &secret,
        upstream.unwrap_or_else(|| format!("http://{}", echo.addr)),
        &client,
        &provider.well_known_url(),
    )?;
    let warning = "DEMO MODE: a built-in provider that signs anyone in, a random secret and a throw-away store. NOT FOR PRODUCTION.";
    eprintln!("\n!!! {warning}\n");
    tracing::warn!("{warning}");
    println!(
        "portcullis demo: open {public}/ in a browser (provider {}, echo app http://{})",
        provider.issuer(),
        echo.addr
    );
    let result = serve(config, access, before_exit);
    // The provider and the echo app live until the gateway stops.
    drop((provider, echo));
    drop(demo_rt);
    result
}

/// The config of `serve --dev`, written into `dir` and loaded: the demo
/// provider as the one source, `upstream` as the one app, open to everyone
/// who signs in.
fn dev_config(
    dir: &std::path::Path,
    listen: &SocketAddr,
    public: &str,
    secret: &str,
    upstream: String,
    client: &crate::demo::provider::DemoClient,
    well_known_url: &str,
) -> Result<Config, StartError> {
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
[[app.policy]]
on = ["access"]
effect = "allow"
"#,
        db = dir.join("portcullis.db").display(),
        id = client.client_id,
        client_secret = client.client_secret,
        wk = well_known_url,
    );
    let file = dir.join("portcullis.toml");
    std::fs::write(&file, toml).map_err(|e| StartError::Io(e.to_string()))?;
    crate::config::load_with_env(&file, Vec::<(String, String)>::new())
        .map_err(|e| StartError::Io(e.to_string()))
}

/// Runs the gateway on a thread and returns once its listener accepts
/// connections; access lines are `tracing` events. Safe to call from async
/// code: all set-up happens on that thread.
pub fn spawn(config: Config) -> Result<Running, StartError> {
    spawn_with_clock(config, crate::clock::Clock::system())
}

/// [`spawn`] on `clock`: tests pass a [`crate::clock::ManualClock`]'s clock
/// and advance it past an expiry instead of sleeping.
pub fn spawn_with_clock(config: Config, clock: crate::clock::Clock) -> Result<Running, StartError> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_rx = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let built = match build(config, AccessSink::Tracing, clock) {
            Ok(built) => built,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let _ = tx.send(Ok(built.bound));
        let outcome = control_runtime().and_then(|control| {
            run(
                built,
                control,
                async move { stop_rx.notified().await },
                None,
            )
        });
        if let Err(e) = outcome {
            tracing::error!(error = %e, "the gateway stopped");
        }
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
    let l = TcpListener::bind(addr).map_err(|e| listen_error(LISTEN, addr, &e))?;
    l.local_addr().map_err(|e| listen_error(LISTEN, addr, &e))
}

/// Why `addr`, named by `key`, could not be listened on.
fn listen_error(key: &'static str, addr: SocketAddr, e: &std::io::Error) -> StartError {
    StartError::Listen {
        key,
        addr,
        reason: e.to_string(),
    }
}

/// The keys naming the two listen addresses, for errors.
const LISTEN: &str = "server.listen";
const ADMIN_LISTEN: &str = "server.admin_listen";

/// Binds the admin listener for the runtime to take over.
fn bind_admin(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let fail = |e: std::io::Error| listen_error(ADMIN_LISTEN, addr, &e);
    let l = TcpListener::bind(addr).map_err(fail)?;
    l.set_nonblocking(true).map_err(fail)?;
    Ok(l)
}

/// Binds the proxy listener with `SO_REUSEPORT`, so that each worker can
/// bind its own socket to the same address and the kernel spreads new
/// connections over them. Another process already listening there (a
/// second portcullis included) is still an error, as without the option:
/// the address is first bound without it, and that must succeed.
fn bind_first(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let fail = |e: std::io::Error| listen_error(LISTEN, addr, &e);
    let probe = socket(addr).map_err(fail)?;
    probe.bind(&addr.into()).map_err(fail)?;
    // Port 0 became a concrete port: the workers' sockets join that one.
    let concrete = probe
        .local_addr()
        .map_err(fail)?
        .as_socket()
        .unwrap_or(addr);
    drop(probe);
    bind_shared(concrete)
}

/// A further `SO_REUSEPORT` socket on the (concrete) proxy address.
fn bind_shared(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let fail = |e: std::io::Error| listen_error(LISTEN, addr, &e);
    let socket = socket(addr).map_err(fail)?;
    socket.set_reuse_port(true).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    // Accepted connections inherit it: no system calls per connection.
    crate::gateway::keepalive::probe_silent_peers(&socket);
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)?;
    Ok(socket.into())
}

/// A TCP socket for `addr` with `SO_REUSEADDR` (as std's `bind` sets it:
/// a restart does not wait for the old connections' TIME_WAIT).
fn socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// The accept queue of each listening socket (std's `bind` uses 128; a
/// burst of clients should wait in the kernel, not be refused).
const LISTEN_BACKLOG: i32 = 1024;

/// One upstream client per app; host names are resolved here, once.
fn upstreams(config: &Config) -> Result<Vec<Target>, StartError> {
    let roots = crate::tls::base_roots();
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
        let target = Target::new(
            app,
            addr,
            &roots,
            (
                config.server.upstream_connect_timeout,
                config.server.upstream_read_timeout,
            ),
            config.server.threads,
        )
        .map_err(|e| StartError::Upstream {
            app: app.name.clone(),
            reason: e.to_string(),
        })?;
        out.push(target);
    }
    Ok(out)
}

/// Everything built before the runtime starts.
struct Built {
    state: Arc<arc_swap::ArcSwap<State>>,
    /// Applies SIGHUP reloads.
    reloader: reload::Reloader,
    bound: Bound,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    admin: Option<(TcpListener, Arc<Admin>)>,
    /// Discovery and key refreshes run here; dropped after the gateway stops.
    background: tokio::runtime::Runtime,
}

/// Binds the gateway's listener and the admin one, if configured, and
/// says where they listen (port 0 becomes the port given).
fn listeners(config: &Config) -> Result<(TcpListener, Option<TcpListener>, Bound), StartError> {
    let listener = bind_first(config.server.listen)?;
    let admin_listener = config.server.admin_listen.map(bind_admin).transpose()?;
    let local = |l: &TcpListener, addr: SocketAddr, key: &'static str| {
        l.local_addr().map_err(|e| listen_error(key, addr, &e))
    };
    let bound = Bound {
        listen: local(&listener, config.server.listen, LISTEN)?,
        admin: match (&admin_listener, config.server.admin_listen) {
            (Some(l), Some(a)) => Some(local(l, a, ADMIN_LISTEN)?),
            _ => None,
        },
    };
    Ok((listener, admin_listener, bound))
}

/// The server certificate and the TLS acceptor using it, when the gateway
/// terminates TLS itself.
#[allow(clippy::type_complexity)]
fn tls_acceptor(
    config: &Config,
) -> Result<
    (
        Option<Arc<crate::tls::Certificate>>,
        Option<tokio_rustls::TlsAcceptor>,
    ),
    StartError,
> {
    let certificate = match &config.server.tls {
        None => None,
        Some(t) => Some(Arc::new(
            crate::tls::Certificate::load(&t.cert_file, &t.key_file)
                .map_err(|e| StartError::Tls(e.to_string()))?,
        )),
    };
    let tls = match &certificate {
        None => None,
        Some(c) => {
            let c =
                crate::tls::server_config(c.clone()).map_err(|e| StartError::Tls(e.to_string()))?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(c)))
        }
    };
    Ok((certificate, tls))
}

fn build(
    config: Config,
    access: AccessSink,
    clock: crate::clock::Clock,
) -> Result<Built, StartError> {
    let (listener, admin_listener, bound) = listeners(&config)?;
    let (certificate, tls) = tls_acceptor(&config)?;

    let background = background_runtime()?;
    let store = background.block_on(crate::identity::store::open(config.store.url.expose()))?;
    let app_names: Vec<String> = config.apps.iter().map(|a| a.name.clone()).collect();
    let metrics = Arc::new(Metrics::new(&app_names)?);
    let reloads = reload::reloads_counter()?;
    metrics.register(Box::new(reloads.clone()))?;
    let mut audit = crate::audit::Audit::new(access.format(), clock.clone())?;
    if let Some(writer) = access.writer() {
        audit = audit.writing_to(writer.clone());
    }
    metrics.register(audit.collector())?;
    let io = Io {
        handle: background.handle().clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        access,
        audit,
        clock: clock.clone(),
    };
    let assembled = assemble(config, &io, None)?;
    for c in assembled.state.sources.collectors() {
        metrics.register(c)?;
    }
    if let Some(c) = assembled.state.bearer.collector() {
        metrics.register(c)?;
    }
    let refreshers = start_refreshing(&assembled.state.sources, &io.handle);
    let loaded = Arc::new(arc_swap::ArcSwap::from_pointee(crate::admin::Loaded {
        generation: 1,
        loaded_at: clock.now(),
        readiness: assembled.readiness.clone(),
    }));
    let state = Arc::new(arc_swap::ArcSwap::new(assembled.state));
    let live = state.clone();
    let housekeeping = crate::housekeeping::Housekeeping::new(store.clone(), clock.clone())?
        .with_idle_timeout(Box::new(move || live.load().config.session.idle_timeout));
    metrics.register(housekeeping.collector())?;
    background.spawn(housekeeping.run());
    let admin = admin_listener.map(|l| (l, Arc::new(Admin::new(metrics, loaded.clone(), store))));
    let reloader = reload::Reloader::new(
        io,
        state.clone(),
        loaded,
        assembled.readiness,
        refreshers,
        certificate,
        reloads,
    );
    Ok(Built {
        state,
        bound,
        listener,
        tls,
        admin,
        background,
        reloader,
    })
}

/// What every worker thread shares.
#[derive(Clone)]
struct WorkerShared {
    state: Arc<arc_swap::ArcSwap<State>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builders: Arc<server::Builders>,
    permits: Arc<tokio::sync::Semaphore>,
    /// Connections open per client address (`max_connections_per_ip`).
    per_ip: Arc<server::PerIp>,
    /// Says stop accepting.
    rx: tokio::sync::watch::Receiver<bool>,
    /// Says the drain is over.
    done: tokio::sync::watch::Receiver<bool>,
}

/// Starts a worker thread per listener; if one cannot be started, stops
/// those already running.
fn spawn_workers(
    listeners: Vec<TcpListener>,
    shared: &WorkerShared,
    tx: &tokio::sync::watch::Sender<bool>,
    done_tx: &tokio::sync::watch::Sender<bool>,
) -> Result<Vec<std::thread::JoinHandle<()>>, StartError> {
    let mut workers = Vec::new();
    // Workers already started are stopped if a later one cannot be.
    let abandon = |workers: Vec<std::thread::JoinHandle<()>>| {
        let _ = tx.send(true);
        let _ = done_tx.send(true);
        for w in workers {
            let _ = w.join();
        }
    };
    for (i, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("portcullis-{i}"))
            .spawn(move || worker(i, listener, shared));
        match spawned {
            Ok(w) => workers.push(w),
            Err(e) => {
                abandon(workers);
                return Err(StartError::Io(e.to_string()));
            }
        }
    }
    Ok(workers)
}

/// Starts the admin listener on the current runtime, until `rx` says stop.
fn start_admin(
    (listener, admin): (TcpListener, Arc<Admin>),
    rx: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|e| StartError::Io(e.to_string()))?;
    Ok(tokio::spawn(crate::admin::serve(admin, listener, rx)))
}

/// One worker thread: its own runtime serving the connections its
/// listener accepts until `rx` says stop, then until `done` says the drain
/// is over.
fn worker(i: usize, listener: std::net::TcpListener, shared: WorkerShared) {
    // Its upstream connections are its own (no wake-ups across threads).
    crate::gateway::pool::set_worker(i);
    let WorkerShared {
        state,
        tls,
        builders,
        permits,
        per_ip,
        rx,
        mut done,
    } = shared;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "a worker runtime could not be built");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "a worker could not listen");
                return;
            }
        };
        // The accept loop ends and drops the listener: no new connections.
        server::run(state, listener, tls, builders, permits, per_ip, rx).await;
        // This runtime's connections keep being served until the drain ends.
        let _ = done.wait_for(|d| *d).await;
    });
    // Whatever is left (tunnels, stragglers) is cut off here.
    runtime.shutdown_timeout(Duration::from_millis(100));
}

/// Waits until every connection is closed (all `max` permits back), at
/// most `grace`.
async fn drain(permits: &tokio::sync::Semaphore, max: usize, grace: Duration) {
    let drained = tokio::time::timeout(grace, async {
        while permits.available_permits() < max {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("drained; exiting"),
        Err(_) => tracing::warn!(
            open = max - permits.available_permits(),
            "shutdown_timeout passed with connections still open; closing them"
        ),
    }
}

/// The runtime of the thread that runs the admin listener, the signals and
/// the drain.
fn control_runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Io(e.to_string()))
}

/// Serves until `stop` resolves, then stops accepting, lets every
/// connection finish its requests (at most `shutdown_timeout`), and returns.
///
/// Each of `server.threads` workers is a thread with its own current-thread
/// runtime and its own `SO_REUSEPORT` socket on the listen address: a
/// connection lives on the worker that accepted it, with no hand-over
/// between threads (measured against one work-stealing runtime: README,
/// "Performance"). Every request still loads the config current when it
/// arrives (SIGHUP swaps it for all workers at once). This thread runs the
/// admin listener, the signals and the drain.
fn run(
    built: Built,
    control: tokio::runtime::Runtime,
    stop: impl Future<Output = ()> + Send + 'static,
    hangup: Option<tokio::signal::unix::Signal>,
) -> Result<(), StartError> {
    let Built {
        state,
        listener,
        tls,
        admin,
        background,
        reloader,
        bound,
    } = built;
    let first = state.load_full();
    let (threads, max) = (
        first.config.server.threads,
        first.config.server.max_connections,
    );
    let builders = Arc::new(server::Builders::new());
    drop(first);
    // `shutdown_timeout` as the config current when the stop comes says.
    let at_stop = state.clone();
    let (tx, rx) = tokio::sync::watch::channel(false);
    // Set once the drain is over: workers stop driving their connections.
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let permits = Arc::new(tokio::sync::Semaphore::new(max));
    let mut listeners = vec![listener];
    for _ in 1..threads {
        listeners.push(bind_shared(bound.listen)?);
    }
    let shared = WorkerShared {
        state,
        tls,
        builders,
        permits: permits.clone(),
        per_ip: Arc::default(),
        rx: rx.clone(),
        done: done_rx,
    };
    let workers = spawn_workers(listeners, &shared, &tx, &done_tx)?;
    let outcome = control.block_on(async move {
        if let Some(hup) = hangup {
            reload::on_hangup(reloader, hup);
        }
        let admin = admin.map(|a| start_admin(a, rx.clone())).transpose()?;
        stop.await;
        let _ = tx.send(true);
        let grace = at_stop.load().config.server.shutdown_timeout;
        drain(&permits, max, grace).await;
        if let Some(a) = admin {
            a.abort();
        }
        Ok::<(), StartError>(())
    });
    let _ = done_tx.send(true);
    for w in workers {
        let _ = w.join();
    }
    control.shutdown_timeout(Duration::from_millis(100));
    // Dropped here, on a plain thread: never inside another runtime.
    drop(background);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_gateway_on_a_taken_listen_address_is_refused_despite_reuseport() {
        let first = bind_first("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        // The first gateway's own workers join it...
        let worker = bind_shared(addr).unwrap();
        assert_eq!(worker.local_addr().unwrap(), addr);
        // ...but another process starting on the same address is told it is taken.
        let err = bind_first(addr).unwrap_err();
        assert!(
            matches!(err, StartError::Listen { addr: a, .. } if a == addr),
            "{err}"
        );
    }

    #[test]
    fn every_worker_socket_accepts_connections_to_the_one_address() {
        let first = bind_first("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_shared(addr).unwrap();
        // The kernel spreads connections over both; together they take all.
        let clients: Vec<_> = (0..16)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let mut accepted = 0;
        for l in [&first, &second] {
            while l.accept().is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, clients.len());
    }
}
