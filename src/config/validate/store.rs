//! `[store]`: where users and sessions are kept.

use super::Check;
use crate::config::error::KeyPath;
use crate::config::model::*;
use crate::config::raw::*;

pub(super) fn store(c: &mut Check<'_>, raw: RawStore) -> Store {
    let url = raw
        .url
        .unwrap_or_else(|| "sqlite://portcullis.db".to_string());
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if !known.iter().any(|p| url.starts_with(p)) {
        c.fail(
            KeyPath::root("store").key("url"),
            format!(
                "`{}` is not a supported store; use sqlite://FILE or postgres://USER@HOST/DB",
                redact_url_password(&url)
            ),
        );
    }
    Store {
        url: Secret::new(url),
    }
}
