//! Configuration: load (figment) -> raw (serde, deny_unknown_fields) -> model (validated, typed).
//! The bottom layer: imports nothing else from the crate (held by
//! tests/it/architecture.rs; see docs/architecture.md).

pub mod claim_path;
pub mod defaults;
mod error;
mod example_secrets;
pub mod expression;
pub mod header_names;
pub mod jwks_freshness;
mod load;
pub mod model;
pub mod path;
pub mod pem;
pub mod presets;
mod raw;
mod validate;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, KeyPath, Problem, Segment};
pub use example_secrets::{is_example_secret, EXAMPLE_SECRETS};
pub use model::*;
pub use validate::{
    decode_secret, is_loopback, issuer_problem, parse_duration, provider_url_allowed,
    JWT_ALGORITHMS, MIN_SECRET_BYTES,
};

/// The default config path: `$PORTCULLIS_CONFIG`, else `config/portcullis.toml`.
pub fn default_path() -> PathBuf {
    std::env::var_os("PORTCULLIS_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("config/portcullis.toml"))
}

/// Loads `file` with the overrides of this process's environment.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    load_with_env(file, std::env::vars())
}

/// Loads `file` with the overrides in `env` (name, value) pairs.
pub fn load_with_env(
    file: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let merged = load::read_merged(file, env)?;
    let mut problems = merged.problems;
    match validate::build(file, &merged.root) {
        Ok(config) if problems.is_empty() => return Ok(config),
        Ok(_) => {}
        Err(more) => problems.extend(more),
    }
    for p in &mut problems {
        if p.from_env.is_none() {
            p.from_env = setting_variable(&merged.env_origin, &p.key.env_var());
        }
    }
    Err(ConfigError::Invalid {
        file: file.to_path_buf(),
        problems,
    })
}

/// The variable that set `var`'s value: `var` itself, or the nearest variable
/// above it that set a whole table or list (`PORTCULLIS_SERVER__TLS='{…}'`
/// sets `PORTCULLIS_SERVER__TLS__CERT_FILE`).
fn setting_variable(
    env_origin: &std::collections::BTreeMap<String, String>,
    var: &str,
) -> Option<String> {
    let mut key = var;
    loop {
        if let Some(name) = env_origin.get(key) {
            return Some(name.clone());
        }
        key = key.get(..key.rfind("__")?)?;
    }
}

/// The resolved config as TOML, secrets redacted, for `portcullis check`.
pub fn render(config: &Config) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}
