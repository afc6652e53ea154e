//! Reads the TOML file with figment, lays `PORTCULLIS_` environment overrides
//! over it, and deserializes each table on its own so every problem is found.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use serde::de::DeserializeOwned;

use super::error::{ConfigError, KeyPath, Problem, Segment};

/// The prefix of every environment override.
pub const ENV_PREFIX: &str = "PORTCULLIS_";

/// Top-level tables an environment variable may reach; any other
/// `PORTCULLIS_*` variable (`PORTCULLIS_CONFIG`, …) is not a config key.
const SECTIONS: &[&str] = &["server", "session", "store", "source", "app"];

/// The merged document plus where each overridden key came from.
pub struct Merged {
    /// File values with environment overrides applied.
    pub root: Dict,
    /// Canonical env var name (index form) -> the variable actually set.
    pub env_origin: BTreeMap<String, String>,
    /// Problems met while applying the environment.
    pub problems: Vec<Problem>,
}

/// Reads `file` and applies the overrides found in `env`.
pub fn read_merged(
    file: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Merged, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Unreadable {
        file: file.to_path_buf(),
        reason: format!("{e} (pass --config FILE or set PORTCULLIS_CONFIG)"),
    })?;
    let value: Value =
        Figment::from(Toml::string(&text))
            .extract()
            .map_err(|e| ConfigError::Unreadable {
                file: file.to_path_buf(),
                reason: e.to_string(),
            })?;
    let Value::Dict(_, mut root) = value else {
        return Err(ConfigError::Unreadable {
            file: file.to_path_buf(),
            reason: "the top level is not a table".into(),
        });
    };
    let mut env_origin = BTreeMap::new();
    let mut problems = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    // Apply in a stable order so that the result never depends on the process's env order.
    vars.sort();
    for (name, raw) in vars {
        let rest = &name[ENV_PREFIX.len()..];
        let segments: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let Some(first) = segments.first() else {
            continue;
        };
        // Not config keys: names without `__` (`PORTCULLIS_CONFIG`), unless
        // they look like a key with one `_` where `__` was meant.
        if segments.len() < 2 {
            if let Some(section) = SECTIONS
                .iter()
                .find(|s| first.strip_prefix(*s).is_some_and(|r| r.starts_with('_')))
            {
                problems.push(env_problem(
                    &segments,
                    &name,
                    format!(
                        "not a config key: tables and keys are joined by `__` \
                         (PORTCULLIS_{}__{})",
                        section.to_ascii_uppercase(),
                        rest.get(section.len() + 1..).unwrap_or_default()
                    ),
                ));
            }
            continue;
        }
        if !SECTIONS.contains(&first.as_str()) {
            problems.push(env_problem(
                &segments,
                &name,
                format!("unknown table; expected one of: {}", SECTIONS.join(", ")),
            ));
            continue;
        }
        match apply_env(&mut root, &segments, &raw) {
            Ok(canonical) => {
                env_origin.insert(canonical.env_var(), name.clone());
            }
            Err(message) => problems.push(env_problem(&segments, &name, message)),
        }
    }
    replace_file_secrets(&mut root, &env_origin);
    Ok(Merged {
        root,
        env_origin,
        problems,
    })
}

/// A problem with the environment variable `name`, at the key its `segments` spell.
fn env_problem(segments: &[String], name: &str, message: String) -> Problem {
    Problem {
        key: KeyPath(segments.iter().map(|s| Segment::Key(s.clone())).collect()),
        message,
        from_env: Some(name.to_string()),
        unreadable: false,
    }
}

/// The keys that give session secrets; one place sets them (README "Session secrets").
pub const SECRET_KEYS: &[&str] = &["secrets", "secret", "secrets_file"];

/// A session secret given in the environment replaces every secret the file
/// gives: an operator who injects a secret must not find the file's one
/// (perhaps a published example) still opening cookies.
fn replace_file_secrets(root: &mut Dict, env_origin: &BTreeMap<String, String>) {
    let from_env =
        |key: &str| env_origin.contains_key(&KeyPath::root("session").key(key).env_var());
    if !SECRET_KEYS.iter().any(|k| from_env(k)) {
        return;
    }
    if let Some(Value::Dict(_, session)) = root.get_mut("session") {
        for key in SECRET_KEYS.iter().filter(|k| !from_env(k)) {
            session.remove(*key);
        }
    }
}

/// Sets one overridden value; returns the canonical path (indices for array items).
fn apply_env(root: &mut Dict, segments: &[String], raw: &str) -> Result<KeyPath, String> {
    let (last, parents) = segments
        .split_last()
        .ok_or_else(|| "empty variable name".to_string())?;
    let mut path = KeyPath::default();
    let mut node: &mut Value = root_entry(root, parents, &mut path)?;
    for seg in parents.iter().skip(1) {
        node = step(node, seg, &mut path)?;
    }
    let Value::Dict(_, dict) = node else {
        return Err(format!("{path} is not a table"));
    };
    let parsed = parse_env_value(raw, last, dict.get(last.as_str()));
    dict.insert(last.clone(), parsed);
    path.0.push(Segment::Key(last.clone()));
    Ok(path)
}

fn root_entry<'a>(
    root: &'a mut Dict,
    parents: &[String],
    path: &mut KeyPath,
) -> Result<&'a mut Value, String> {
    let first = parents
        .first()
        .ok_or_else(|| "name a key inside a table, e.g. PORTCULLIS_SERVER__LISTEN".to_string())?;
    path.0.push(Segment::Key(first.clone()));
    let is_array = first == "source" || first == "app";
    Ok(root.entry(first.clone()).or_insert_with(|| {
        if is_array {
            Value::from(Vec::<Value>::new())
        } else {
            Value::from(Dict::new())
        }
    }))
}

/// Descends one segment: a table key, or an array element by index or by its slug/name.
fn step<'a>(node: &'a mut Value, seg: &str, path: &mut KeyPath) -> Result<&'a mut Value, String> {
    match node {
        Value::Dict(_, dict) => {
            path.0.push(Segment::Key(seg.to_string()));
            Ok(dict
                .entry(seg.to_string())
                .or_insert_with(|| Value::from(Dict::new())))
        }
        Value::Array(_, items) => {
            let index = match seg.parse::<usize>() {
                Ok(i) => Some(i),
                Err(_) => items
                    .iter()
                    .position(|item| item_label(item).as_deref() == Some(seg)),
            };
            let len = items.len();
            let index = index.filter(|i| *i < len).ok_or_else(|| {
                format!("{path} has no entry `{seg}` ({len} defined in the file)")
            })?;
            path.0.push(Segment::Item(index, None));
            items
                .get_mut(index)
                .ok_or_else(|| format!("{path} has no entry `{seg}`"))
        }
        _ => Err(format!("{path} is not a table")),
    }
}

/// The slug of a source or the name of an app, lower-cased, to address it from the env.
fn item_label(item: &Value) -> Option<String> {
    let dict = item.as_dict()?;
    dict.get("slug")
        .or_else(|| dict.get("name"))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
}

/// Keys whose value is always text: a number-like value from the environment
/// stays text for them even where the file does not set the key (a Discord
/// client id is all digits).
const TEXT_KEYS: &[&str] = &[
    "consumer_key",
    "consumer_secret",
    "slug",
    "name",
    "issuer",
    "host",
    "path_prefix",
    "cookie_name",
    "cookie_domain",
    "message",
    "expression",
    "secret",
    "url",
    "upstream",
    "public_url",
];

/// Parses an env value like figment does (`true`, `42`, `["a","b"]`), but keeps
/// it a string where the file has a string, or the key `key` is always text,
/// so `CONSUMER_KEY=123` stays text.
fn parse_env_value(raw: &str, key: &str, existing: Option<&Value>) -> Value {
    let parsed = Value::from_str(raw).unwrap_or_else(|never| match never {});
    let text = matches!(existing, Some(Value::String(..)))
        || (existing.is_none() && TEXT_KEYS.contains(&key.to_ascii_lowercase().as_str()));
    match &parsed {
        Value::Num(..) | Value::Bool(..) if text => Value::from(raw.to_string()),
        _ => parsed,
    }
}

/// The most problems one table reports; past them the rest of it is not read.
const MAX_PROBLEMS_PER_TABLE: usize = 32;

/// Deserializes one table into its raw struct, turning a serde error into a
/// problem at its key. serde stops at the first bad key, so that key is
/// taken out and the table read again, until it reads: every bad key of
/// the table is reported, and the rest of it is still checked (instead of
/// the defaults, whose own problems, a missing secret say, would be false).
/// `None` only when a bad key cannot be taken out (a missing one).
pub fn table<T: DeserializeOwned + Default>(
    value: Option<&Value>,
    at: &KeyPath,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let Some(value) = value else {
        return Some(T::default());
    };
    let mut error = match value.deserialize::<T>() {
        Ok(t) => return Some(t),
        Err(e) => e,
    };
    let mut value = value.clone();
    for _ in 0..MAX_PROBLEMS_PER_TABLE {
        let mut problem = figment_problem(error, at);
        problem.unreadable = true;
        let inside = problem.key.0.get(at.0.len()..).unwrap_or_default();
        let removed = match inside.split_last() {
            // A bad element goes with its whole list: taking it alone out
            // would move the others' indices under later problems.
            Some((Segment::Item(..), list)) => remove_key(&mut value, list),
            // A key that is missing cannot be taken out: its table can (a
            // `[server.tls]` without `key_file`), unless it is this one.
            Some((_, parent)) if !parent.is_empty() => {
                remove_key(&mut value, inside) || remove_key(&mut value, parent)
            }
            _ => remove_key(&mut value, inside),
        };
        problems.push(problem);
        if !removed {
            return None;
        }
        error = match value.deserialize::<T>() {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
    }
    None
}

/// Takes the key at `path` (inside `value`) out; whether there was one.
fn remove_key(value: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for step in parents {
        let next = match (step, at) {
            (Segment::Key(k), Value::Dict(_, d)) => d.get_mut(k),
            (Segment::Item(i, _), Value::Array(_, a)) => a.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else {
            return false;
        };
        at = next;
    }
    match (last, at) {
        (Segment::Key(k), Value::Dict(_, d)) => d.remove(k).is_some(),
        (Segment::Item(i, _), Value::Array(_, a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

fn figment_problem(e: figment::Error, at: &KeyPath) -> Problem {
    use figment::error::Kind;
    let mut key = at.clone();
    for p in &e.path {
        match p.parse::<usize>() {
            Ok(i) => key.0.push(Segment::Item(i, None)),
            Err(_) => key.0.push(Segment::Key(p.clone())),
        }
    }
    let message = match &e.kind {
        Kind::UnknownField(name, expected) => {
            // figment usually ends the path with the field already; add it only when not.
            if key.0.last() != Some(&Segment::Key(name.clone())) {
                key.0.push(Segment::Key(name.clone()));
            }
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(name) => {
            if key.0.last() != Some(&Segment::Key(name.to_string())) {
                key.0.push(Segment::Key(name.to_string()));
            }
            "missing".to_string()
        }
        Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
        // serde's words for the one untagged type (`raw::StringOrList`).
        Kind::Message(m) if m.contains("untagged enum StringOrList") => {
            "expected a string or a list of strings".to_string()
        }
        other => other.to_string(),
    };
    Problem::new(key, message)
}
