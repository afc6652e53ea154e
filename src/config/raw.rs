//! The file format: serde structs that mirror the TOML keys one for one.
//! Nothing here is validated beyond its shape; `model` turns it into typed values.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The top level of a config file; each section is deserialized on its own so
/// that one bad table does not hide the problems of the others.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTop {
    #[serde(default)]
    pub server: Option<figment::value::Value>,
    #[serde(default)]
    pub session: Option<figment::value::Value>,
    #[serde(default)]
    pub store: Option<figment::value::Value>,
    #[serde(default)]
    pub source: Vec<figment::value::Value>,
    #[serde(default)]
    pub app: Vec<figment::value::Value>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub public_url: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub tls: Option<RawTls>,
    pub threads: Option<usize>,
    pub shutdown_timeout: Option<String>,
    pub upstream_connect_timeout: Option<String>,
    pub upstream_read_timeout: Option<String>,
    pub bearer_cache_entries: Option<u64>,
    pub request_header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub log_format: Option<String>,
}

/// `[server.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: String,
    pub key_file: String,
}

/// `[session]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub secrets: Option<StringOrList>,
    /// A single secret, the natural way to inject one from the environment
    /// (`PORTCULLIS_SESSION__SECRET`); only one of `secrets`, `secret`,
    /// `secrets_file` may be set.
    pub secret: Option<String>,
    pub secrets_file: Option<String>,
    pub cookie_name: Option<String>,
    pub lifetime: Option<String>,
    pub idle_timeout: Option<String>,
    pub cookie_domain: Option<String>,
    pub identity_cache_ttl: Option<String>,
}

/// A value that may be written as one string or as a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    /// The values in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

/// `[store]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub url: Option<String>,
}

/// One `[[source]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub slug: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub consumer_key: Option<String>,
    pub consumer_secret: Option<String>,
    pub consumer_secret_file: Option<String>,
    pub oidc_well_known_url: Option<String>,
    pub authorization_url: Option<String>,
    pub access_token_url: Option<String>,
    pub profile_url: Option<String>,
    pub request_token_url: Option<String>,
    pub oidc_jwks_url: Option<String>,
    pub oidc_jwks: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub pkce: Option<String>,
    pub token_auth_method: Option<String>,
    pub user_matching_mode: Option<String>,
    pub enroll: Option<bool>,
    pub trust_email: Option<bool>,
    pub claims: Option<BTreeMap<String, String>>,
    pub authorize_params: Option<BTreeMap<String, String>>,
    pub issuer: Option<String>,
    pub jwt_algorithms: Option<Vec<String>>,
    pub jwt_max_age: Option<String>,
    pub ca_file: Option<String>,
    pub jwks_cache_ttl: Option<String>,
    pub jwks_max_stale: Option<String>,
    pub jwks_cooldown: Option<String>,
    pub base_url: Option<String>,
    pub tenant: Option<String>,
    pub team_id: Option<String>,
    pub key_id: Option<String>,
    pub private_key_file: Option<String>,
    #[serde(default)]
    pub policy: Vec<figment::value::Value>,
}

/// One `[[source.policy]]` or `[[app.policy]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub on: Option<StringOrList>,
    pub effect: Option<String>,
    pub email_domains: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub users: Option<Vec<String>>,
    pub expression: Option<String>,
    pub message: Option<String>,
    pub path_prefix: Option<String>,
}

/// One `[[app]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub upstream: Option<String>,
    pub sources: Option<Vec<String>>,
    pub jwt_sources: Option<Vec<String>>,
    pub jwt_audiences: Option<Vec<String>>,
    pub forward_bearer_token: Option<bool>,
    pub identity_assertion: Option<bool>,
    pub pass_access_token: Option<bool>,
    pub upstream_ca_file: Option<String>,
    pub public_paths: Option<Vec<String>>,
    pub claim_headers: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub policy: Vec<figment::value::Value>,
}
