//! The `portcullis` command: serve, check, keygen.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use clap::{Parser, Subcommand, ValueEnum};
use portcullis::config;
use portcullis::gateway::access::Sink as AccessSink;
use portcullis::logging::LogGuard;

/// An authentication gateway: a reverse proxy that signs people in through
/// OAuth/OpenID Connect sources and verifies machine JWTs.
#[derive(Parser)]
#[command(name = "portcullis", version, about)]
struct Cli {
    /// Log format (default: `server.log_format` of the config, else text).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl From<LogFormat> for config::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => config::LogFormat::Text,
            LogFormat::Json => config::LogFormat::Json,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (default: $PORTCULLIS_CONFIG, else config/portcullis.toml).
        #[arg(long, short, conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Demo mode, no config: a built-in provider and echo app on loopback. Not for production.
        #[arg(long)]
        dev: bool,
        /// Port of the gateway in demo mode (0: any free port).
        #[arg(long, default_value_t = 8080, requires = "dev")]
        port: u16,
        /// In demo mode, put this app behind the gateway instead of the built-in echo app.
        #[arg(long, requires = "dev")]
        upstream: Option<String>,
    },
    /// Validate the config and print it resolved, secrets redacted.
    Check {
        /// Config file (default: $PORTCULLIS_CONFIG, else config/portcullis.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a fresh random session secret (32 bytes, base64).
    Keygen,
    /// The user directory: list, show, disable, enable, unlink, rename.
    Users {
        /// Config file (default: $PORTCULLIS_CONFIG, else config/portcullis.toml).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: UsersAction,
    },
}

#[derive(Subcommand)]
enum UsersAction {
    /// Every user with connections and groups.
    List,
    /// One user (username, id or email), with sessions.
    Show {
        /// Username, user id or email.
        user: String,
    },
    /// Disable a user: their sessions are revoked on every replica within identity_cache_ttl.
    Disable {
        /// Username, user id or email.
        user: String,
    },
    /// Enable a disabled user.
    Enable {
        /// Username, user id or email.
        user: String,
    },
    /// Remove a user's connection to a source (with its groups and sessions).
    Unlink {
        /// Username, user id or email.
        user: String,
        /// Source slug.
        source: String,
    },
    /// Give a user a new username (unique regardless of case); upstreams see it
    /// as X-Forwarded-User within identity_cache_ttl.
    Rename {
        /// Username, user id or email.
        user: String,
        /// The new username.
        new: String,
    },
}

// mimalloc measured +22% throughput over the system allocator on the load
// benchmark (README, Performance); the data path still allocates per request.
// Built without transparent huge pages (`no_thp` in Cargo.toml): the soak's
// RSS moved in 2 MiB steps with them, whatever the heap did.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a config that cannot be used.
const EXIT_CONFIG: u8 = 2;

/// The log format of `serve --dev`, which reads no config file: the flag,
/// else `PORTCULLIS_SERVER__LOG_FORMAT` (DESIGN: the variable sets the
/// format without a flag), else text.
fn dev_log_format(flag: Option<config::LogFormat>) -> Result<Option<config::LogFormat>, ExitCode> {
    const VAR: &str = "PORTCULLIS_SERVER__LOG_FORMAT";
    if flag.is_some() {
        return Ok(flag);
    }
    let Some(value) = std::env::var_os(VAR) else {
        return Ok(None);
    };
    match value.to_str().map(|v| LogFormat::from_str(v, false)) {
        Some(Ok(f)) => Ok(Some(f.into())),
        _ => {
            eprintln!(
                "server.log_format: {value:?} is not a log format (\"text\" or \"json\"); set by the environment variable {VAR}"
            );
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The flag wins over `server.log_format`; with neither, text.
    let flag = cli.log_format.map(config::LogFormat::from);
    match cli.command {
        Command::Keygen => match keygen() {
            Ok(secret) => {
                println!("{secret}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis keygen: {e}; no secret printed");
                ExitCode::FAILURE
            }
        },
        Command::Users {
            config,
            json,
            action,
        } => match load(config) {
            Ok(c) => match init_logging(flag.or(c.server.log_format)) {
                // The guard stays until the command is done: its audit line is written out.
                Ok((sink, _guard)) => users(&c, &sink, json, action),
                Err(code) => code,
            },
            Err(code) => code,
        },
        Command::Check { config } => {
            let path = config.unwrap_or_else(config::default_path);
            match config::load(&path) {
                Ok(c) => match init_logging(flag.or(c.server.log_format)) {
                    Ok(_log) => check(&path, &c),
                    Err(code) => code,
                },
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Serve {
            dev: true,
            port,
            upstream,
            ..
        } => match dev_log_format(flag).and_then(init_logging) {
            Ok((access, guard)) => started(
                portcullis::app::serve_dev(port, upstream, access, flusher(guard)),
                None,
            ),
            Err(code) => code,
        },
        Command::Serve { config, .. } => match load(config) {
            Ok(c) => match init_logging(flag.or(c.server.log_format)) {
                Ok((access, guard)) => {
                    let file = c.file.clone();
                    started(
                        portcullis::app::serve(c, access, flusher(guard)),
                        Some(&file),
                    )
                }
                Err(code) => code,
            },
            Err(code) => code,
        },
    }
}

/// Loads the config at `path` (or the default), printing every problem and
/// giving the exit code when it is unusable.
fn load(path: Option<PathBuf>) -> Result<config::Config, ExitCode> {
    let path = path.unwrap_or_else(config::default_path);
    config::load(&path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// The log guard, held by `main` and by the gateway's exit hook.
type SharedGuard = Arc<Mutex<Option<LogGuard>>>;

/// Drops the log guard (writing out buffered lines) when called; the gateway
/// calls it just before the process ends.
fn flusher(guard: SharedGuard) -> Box<dyn FnOnce() + Send> {
    Box::new(move || {
        if let Ok(mut g) = guard.lock() {
            g.take();
        }
    })
}

/// The exit code of a gateway run from the config `file`. A value of the
/// config found wrong only as the gateway starts (an upstream that does not
/// resolve, TLS files, a source's discovery document) is a config error like
/// those found at load: it names the key, the file and the variable, and
/// exits with the same code. A store that cannot be opened names them too
/// but exits 1: the database may only be down for now.
fn started(result: Result<(), portcullis::app::StartError>, file: Option<&Path>) -> ExitCode {
    use portcullis::app::StartError;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let of_config = matches!(
                e,
                StartError::Resolve { .. }
                    | StartError::Tls(_)
                    | StartError::Upstream { .. }
                    | StartError::Source(_)
            );
            let var = e.env_var();
            let message = format!("{:#}", anyhow::Error::from(e));
            // Like a load error: the key (the message starts with it), the
            // file and the variable that set it.
            let message = match (file, var) {
                (Some(file), Some(var)) => format!(
                    "{}: {message} (set it in {} or {var})",
                    file.display(),
                    file.display()
                ),
                (Some(file), None) => format!("{}: {message}", file.display()),
                (None, _) => message,
            };
            eprintln!("portcullis: {message}");
            match file.is_some() && of_config {
                true => ExitCode::from(EXIT_CONFIG),
                false => ExitCode::FAILURE,
            }
        }
    }
}

/// Runs a `users` command against the configured store.
fn users(c: &config::Config, log: &AccessSink, json: bool, action: UsersAction) -> ExitCode {
    use portcullis::users::Command as C;
    let cmd = match action {
        UsersAction::List => C::List,
        UsersAction::Show { user } => C::Show(user),
        UsersAction::Disable { user } => C::Disable(user),
        UsersAction::Enable { user } => C::Enable(user),
        UsersAction::Unlink { user, source } => C::Unlink(user, source),
        UsersAction::Rename { user, new } => C::Rename(user, new),
    };
    let clock = portcullis::clock::Clock::system();
    let audit = match portcullis::audit::Audit::new(log.format(), clock.clone()) {
        Ok(a) => match log.writer() {
            Some(w) => a.writing_to(w.clone()),
            None => a,
        },
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = i64::try_from(clock.now_unix()).unwrap_or(i64::MAX);
    let result = rt.block_on(async {
        let store = portcullis::identity::store::open(c.store.url.expose())
            .await
            .map_err(portcullis::users::UsersError::from)?;
        portcullis::users::run(&store, &audit, cmd, json, now).await
    });
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis users: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the resolved config and what discovery found for each source.
fn check(path: &std::path::Path, c: &config::Config) -> ExitCode {
    let report = match portcullis::app::check_sources(c) {
        Ok(r) => r,
        Err(e) => {
            let var = e.env_var();
            match var {
                Some(var) => eprintln!(
                    "{}: {e} (set it in {} or {var})",
                    path.display(),
                    path.display()
                ),
                None => eprintln!("{}: {e}", path.display()),
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    println!("# {}: valid\n", path.display());
    for (slug, endpoints) in &report.endpoints {
        let show = |u: &Option<url::Url>| u.as_ref().map_or("-".to_string(), |u| u.to_string());
        println!(
            "# source {slug}: authorization {}, token {}, profile {}, jwks {}, issuer {}",
            show(&endpoints.authorization),
            show(&endpoints.token),
            show(&endpoints.profile),
            show(&endpoints.jwks),
            endpoints.issuer.as_deref().unwrap_or("-")
        );
    }
    // What to register at each sign-in provider (machine-only sources have no client).
    for s in c.sources.iter().filter(|s| s.consumer_key.is_some()) {
        for (what, url) in portcullis::source::registration_urls(&c.server.public_url, &s.slug) {
            println!(
                "# source {}: register at the provider: {what} {url}",
                s.slug
            );
        }
    }
    for (slug, key, discovered, configured) in &report.overridden {
        println!("# source {slug}: {key} = {configured} (set in the config; discovery said {discovered})");
    }
    for (slug, reason) in &report.pending {
        println!("# source {slug}: NOT READY: {reason} (serve will start and retry discovery)");
    }
    println!();
    print!("{}", config::render(c));
    ExitCode::SUCCESS
}

fn keygen() -> Result<String, portcullis::random::NoRandom> {
    let mut bytes = [0u8; 32];
    portcullis::random::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Installs the log (`format`, text if none) on a background writer so the
/// request path never blocks on stderr; returns where the gateway writes its
/// access lines and the guard that flushes the log when dropped.
fn init_logging(format: Option<config::LogFormat>) -> Result<(AccessSink, SharedGuard), ExitCode> {
    let format = format.unwrap_or(config::LogFormat::Text);
    match portcullis::logging::init(format) {
        Ok((writer, guard)) => Ok((
            AccessSink::direct(format, writer),
            Arc::new(Mutex::new(Some(guard))),
        )),
        Err(e) => {
            eprintln!("portcullis: cannot start the log writer: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}
