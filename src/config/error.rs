//! Config errors: every problem names the key, the file, and the environment
//! variable that could set it, and all problems are reported together.

use std::fmt;
use std::path::PathBuf;

/// One step of a key path: a table key or an element of an array of tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A table key, e.g. `server`.
    Key(String),
    /// An array element: its index, and its slug or name when it has one.
    Item(usize, Option<String>),
}

/// A dotted key such as `source[corp].consumer_secret`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    /// The path of a top-level key.
    pub fn root(key: &str) -> Self {
        KeyPath(vec![Segment::Key(key.to_string())])
    }

    /// This path extended by a table key.
    pub fn key(&self, key: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Key(key.to_string()));
        KeyPath(v)
    }

    /// Whether `other` is this key or a key inside it (array elements
    /// compared by index, whatever their labels).
    pub fn covers(&self, other: &KeyPath) -> bool {
        self.0.len() <= other.0.len()
            && self.0.iter().zip(&other.0).all(|pair| match pair {
                (Segment::Key(a), Segment::Key(b)) => a == b,
                (Segment::Item(a, _), Segment::Item(b, _)) => a == b,
                _ => false,
            })
    }

    /// This path extended by an array element.
    pub fn item(&self, index: usize, label: Option<&str>) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Item(index, label.map(str::to_string)));
        KeyPath(v)
    }

    /// The environment variable that sets this key, e.g. `PORTCULLIS_SOURCE__0__CONSUMER_SECRET`.
    /// An element of a list of values (`session.secrets[0]`) is set with its
    /// whole list (`PORTCULLIS_SESSION__SECRETS`): only tables in a list
    /// (`[[source]]`) are addressed by index.
    pub fn env_var(&self) -> String {
        let named = self
            .0
            .iter()
            .rposition(|s| matches!(s, Segment::Key(_)))
            .map_or(0, |i| i + 1);
        let mut out = String::from("PORTCULLIS");
        for seg in self.0.iter().take(named) {
            out.push_str(if out.len() == "PORTCULLIS".len() {
                "_"
            } else {
                "__"
            });
            match seg {
                Segment::Key(k) => out.push_str(&k.to_ascii_uppercase()),
                Segment::Item(i, _) => out.push_str(&i.to_string()),
            }
        }
        out
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Segment::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Item(_, Some(label)) => write!(f, "[{label}]")?,
                Segment::Item(i, None) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// One thing wrong with the config, at one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the problem is.
    pub key: KeyPath,
    /// What is wrong and what to do about it.
    pub message: String,
    /// The environment variable the offending value came from, if it came from one.
    pub from_env: Option<String>,
    /// The value could not be read at all (an unknown key, a wrong type):
    /// the checks after it saw the key as not given.
    pub unreadable: bool,
}

impl Problem {
    /// A problem at `key`.
    pub fn new(key: KeyPath, message: impl Into<String>) -> Self {
        Problem {
            key,
            message: message.into(),
            from_env: None,
            unreadable: false,
        }
    }

    /// Renders the problem with the file it belongs to.
    pub fn render(&self, file: &std::path::Path) -> String {
        match &self.from_env {
            Some(var) => format!(
                "{}: {} (the value came from {var}; fix it there or in {})",
                self.key,
                self.message,
                file.display()
            ),
            None => format!(
                "{}: {} (set it in {} or {})",
                self.key,
                self.message,
                file.display(),
                self.key.env_var()
            ),
        }
    }
}

/// Why a config could not be loaded. The caller prints it and exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or is not valid TOML: fix the file named.
    #[error("{file}: cannot read the config: {reason}")]
    Unreadable {
        /// The config file.
        file: PathBuf,
        /// What went wrong, from the reader or the TOML parser.
        reason: String,
    },
    /// The file was read but some values are wrong: fix each key listed.
    #[error("{}", render_problems(.file, .problems))]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

fn render_problems(file: &std::path::Path, problems: &[Problem]) -> String {
    let mut out = format!(
        "{}: {} problem{} in the config:",
        file.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("\n  - ");
        out.push_str(&p.render(file));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_renders_slug_and_env_uses_index() {
        let k = KeyPath::root("source")
            .item(0, Some("corp"))
            .key("consumer_secret");
        assert_eq!(k.to_string(), "source[corp].consumer_secret");
        assert_eq!(k.env_var(), "PORTCULLIS_SOURCE__0__CONSUMER_SECRET");
        assert_eq!(
            KeyPath::root("session").key("secrets").env_var(),
            "PORTCULLIS_SESSION__SECRETS"
        );
    }
}
