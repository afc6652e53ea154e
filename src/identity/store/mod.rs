//! The user store: a narrow trait over the user directory, chosen once at
//! startup by `open` (SQLite or PostgreSQL); every multi-statement write is one
//! transaction, so a failure leaves nothing half-written.

mod sql;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;

use crate::identity::HandoffRecord;
use crate::identity::{Connection, Identity, NewSession, SessionRecord, User};

/// Why a store call failed; each variant says what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The identity (or another identity of the same source, for this user) is
    /// already connected; nothing was written. On enroll: a concurrent sign-in
    /// won the race, so look the connection up again and sign in as that user.
    #[error("this identity is already connected to a user")]
    AlreadyConnected,
    /// The user is disabled; nothing was written. Refuse the sign-in (403).
    #[error("the user is disabled")]
    Disabled,
    /// The user, or the connection signed in with, is gone (deleted or
    /// unlinked meanwhile); nothing was written. Restart the sign-in.
    #[error("no such user or connection")]
    NotFound,
    /// Another user has this username (in any case); nothing was written.
    /// Choose another name.
    #[error("another user has this username")]
    UsernameTaken,
    /// More than one user has this email. Refuse to match by it.
    #[error("more than one user has this email")]
    Ambiguous,
    /// Concurrent writes kept colliding; nothing was written. Retry the request.
    #[error("a concurrent write collided; retry")]
    Conflict,
    /// `store.url` names no supported database. Fix the configuration
    /// (`sqlite://FILE`, `sqlite::memory:`, `postgres://...`).
    #[error("unsupported store URL scheme {0:?} (expected sqlite: or postgres:)")]
    UnsupportedUrl(String),
    /// The schema migrations failed at open. Check the database; a schema
    /// migrated by a newer portcullis is refused.
    #[error("migrating the store failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The database failed or is unreachable. Retry later (503); log it.
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    /// No secure random values for a new user id; nothing was written. Retry later.
    #[error("no secure random values for a new user id")]
    NoRandom,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            // A unique violation that escaped the explicit conflict handling is a
            // race with a concurrent writer (or a reused session id): retrying helps.
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Database(e),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

/// Row counts, for the CLI and for tests asserting that nothing was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreCounts {
    /// Users.
    pub users: u64,
    /// Source connections.
    pub connections: u64,
    /// Group memberships (one per user, source and group).
    pub groups: u64,
    /// Session records, revoked and expired ones included.
    pub sessions: u64,
}

/// The user directory.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// The user connected to `identifier` at `source`, if any.
    async fn user_by_connection(
        &self,
        source: &str,
        identifier: &str,
    ) -> Result<Option<User>, StoreError>;

    /// Creates the user, its connection, its groups and `session` in one
    /// transaction; `AlreadyConnected` if the identity is connected already.
    async fn enroll(
        &self,
        identity: &Identity,
        session: &NewSession,
        now: i64,
    ) -> Result<User, StoreError>;

    /// Refreshes the connected user from `identity` (email and name only
    /// through the home source, never the username; the source's groups) and
    /// creates `session` in one transaction; `Disabled` (nothing written) for a disabled user.
    async fn sign_in(
        &self,
        user_id: &str,
        identity: &Identity,
        session: &NewSession,
        now: i64,
    ) -> Result<User, StoreError>;

    /// Connects `identity` to an existing user, takes its groups and creates
    /// `session` in one transaction (the linked source is not the home: email,
    /// name and username stay); `AlreadyConnected` or `Disabled` write nothing.
    async fn link(
        &self,
        user_id: &str,
        identity: &Identity,
        session: &NewSession,
        now: i64,
    ) -> Result<User, StoreError>;

    /// The user with this id.
    async fn user(&self, id: &str) -> Result<Option<User>, StoreError>;

    /// The user with this email (case-insensitive); `Ambiguous` if several have it.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;

    /// The user whose email is this one and vouched for (case-insensitive);
    /// `Ambiguous` if several. What `email_link` picks when several users
    /// hold an address: the one whose source vouched for it.
    async fn user_by_vouched_email(&self, email: &str) -> Result<Option<User>, StoreError>;

    /// The user with this username (case-insensitive).
    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError>;

    /// A session record and its user, whatever their state (the caller checks
    /// `revoked`, `expires_at` and `disabled`).
    async fn session(&self, sid: &str) -> Result<Option<(SessionRecord, User)>, StoreError>;

    /// Records that the session was used at `now` (idle expiry), unless a use
    /// less than `min_interval` seconds before `now` is recorded already, or the
    /// session is revoked or gone; `true` if the record changed.
    async fn touch_session(
        &self,
        sid: &str,
        now: i64,
        min_interval: i64,
    ) -> Result<bool, StoreError>;

    /// Claims the token-refresh lease of a live session until `until` (unix
    /// seconds), if no other replica holds it at `now`; `true` if claimed.
    async fn claim_token_refresh(
        &self,
        sid: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError>;

    /// Frees the refresh lease, storing the refreshed (sealed) tokens if any.
    async fn finish_token_refresh(&self, sid: &str, tokens: Option<&str>)
        -> Result<(), StoreError>;

    /// Revokes one session (no error if it does not exist).
    async fn revoke_session(&self, sid: &str) -> Result<(), StoreError>;

    /// Revokes every live session of a user; returns how many.
    async fn revoke_user_sessions(&self, user_id: &str) -> Result<u64, StoreError>;

    /// Revokes the live sessions of `source` matching the provider's `sid`
    /// and/or the connected `identifier` (OIDC back-channel logout); neither
    /// given revokes nothing. Returns how many.
    async fn revoke_sessions_by_oidc(
        &self,
        source: &str,
        oidc_sid: Option<&str>,
        user_identifier: Option<&str>,
    ) -> Result<u64, StoreError>;

    /// Disables (revoking every session, in the same transaction) or enables a
    /// user; `false` if there is no such user.
    async fn set_disabled(&self, user_id: &str, disabled: bool) -> Result<bool, StoreError>;

    /// Every user with its connections, by username.
    async fn list_users(&self) -> Result<Vec<(User, Vec<Connection>)>, StoreError>;

    /// Removes the user's connection to `source`, the groups it brought and
    /// the sessions signed in through it; `false` if there was no connection.
    async fn unlink(&self, user_id: &str, source: &str) -> Result<bool, StoreError>;

    /// How many rows each table holds.
    async fn counts(&self) -> Result<StoreCounts, StoreError>;

    /// Gives the user a new username, unique case-insensitively; `false` if
    /// there is no such user, `UsernameTaken` (nothing written) if another has it.
    async fn rename_user(&self, user_id: &str, username: &str) -> Result<bool, StoreError>;

    /// The user's sessions, newest first (revoked and expired ones included).
    async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError>;

    /// Stores a handoff code under `code_key` (its hash) for an existing session.
    async fn create_handoff(
        &self,
        code_key: &str,
        handoff: &HandoffRecord,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Removes the handoff code `code_key` and returns it: `Some` exactly once
    /// across every replica, expired or not (the caller checks expiry and host).
    async fn take_handoff(&self, code_key: &str) -> Result<Option<HandoffRecord>, StoreError>;

    /// Records `key_hash` as used until `expires_at`: `true` the first time
    /// across every replica (or once an earlier use has expired at `now`),
    /// `false` for a replay.
    async fn use_once(&self, key_hash: &str, expires_at: i64, now: i64)
        -> Result<bool, StoreError>;

    /// A back-channel logout, once: in one transaction, spends `key_hash`
    /// (the logout token's id) as [`UserStore::use_once`] does and revokes
    /// the sessions [`UserStore::revoke_sessions_by_oidc`] would. `None`
    /// for a replay (nothing written); a failure writes neither, so the
    /// provider's retry is heard.
    async fn logout_once(
        &self,
        key_hash: &str,
        expires_at: i64,
        now: i64,
        source: &str,
        oidc_sid: Option<&str>,
        user_identifier: Option<&str>,
    ) -> Result<Option<u64>, StoreError>;

    /// Deletes at most `batch` rows of `table` that are of no use at `now`
    /// (see [`Purge`]); returns how many. Safe to run on several replicas at once.
    async fn purge_batch(&self, table: Purge, now: i64, batch: u32) -> Result<u64, StoreError>;

    /// One small query proving the database answers and holds the schema (`/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The tables housekeeping purges, and what it removes from each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Sessions past `expires_at`, and revoked ones (a revoked session is
    /// refused exactly like a missing one).
    Sessions,
    /// Handoff codes past `expires_at` (used ones are deleted when traded,
    /// and a purged session takes its codes with it).
    HandoffCodes,
    /// Used login states and logout token ids past `expires_at`.
    UsedOnce,
    /// Sessions whose last recorded use is before `unused_since`: with
    /// `session.idle_timeout`, ended for good (housekeeping leaves a margin
    /// for uses not yet written).
    IdleSessions {
        /// Unix seconds; `now` is not read.
        unused_since: i64,
    },
}

impl Purge {
    /// Every purged table.
    pub const ALL: [Purge; 3] = [Purge::Sessions, Purge::HandoffCodes, Purge::UsedOnce];

    /// The table name, as the metric's `table` label.
    pub fn table(self) -> &'static str {
        match self {
            Purge::Sessions | Purge::IdleSessions { .. } => "sessions",
            Purge::HandoffCodes => "handoff_codes",
            Purge::UsedOnce => "used_once",
        }
    }
}

/// Opens the store named by `url` (`sqlite://FILE`, created if missing;
/// `sqlite::memory:`; `postgres://...` or `postgresql://...`) and runs that
/// dialect's embedded migrations.
pub async fn open(url: &str) -> Result<Arc<dyn UserStore>, StoreError> {
    // Only the scheme is ever echoed back: the rest may hold a password.
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" => Ok(Arc::new(sql::open_sqlite(url).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(sql::open_postgres(url).await?)),
        _ => Err(StoreError::UnsupportedUrl(
            scheme.chars().take(32).collect(),
        )),
    }
}

/// A fresh user id: 128 random bits, base64url without padding.
fn new_user_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    crate::random::fill(&mut bytes).map_err(|_| StoreError::NoRandom)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The username an enrolling identity asks for: the source's username, else
/// the email's local part, else `{source}-{identifier}`, else `{source}-user`;
/// each only if it is a valid username (`users rename`'s rule: it goes in
/// `X-Forwarded-User` as it is) with room for a `-N` suffix: a name the
/// header would drop would leave the user's requests without one.
fn wanted_username(identity: &Identity) -> String {
    let fits = |u: &str| u.len() <= 120 && crate::principal::valid_username(u);
    let given = identity
        .username
        .as_deref()
        .map(str::trim)
        .filter(|u| fits(u));
    let from_email = || {
        let email = identity.email.as_deref()?.trim();
        let (local, _) = email.rsplit_once('@')?;
        Some(local).filter(|l| fits(l))
    };
    let from_identifier =
        || Some(format!("{}-{}", identity.source, identity.identifier)).filter(|u| fits(u));
    given
        .or_else(from_email)
        .map(str::to_string)
        .or_else(from_identifier)
        .unwrap_or_else(|| format!("{}-user", identity.source))
}

/// The first of `base`, `base-2`, `base-3`, ... not in `taken` (compared
/// case-insensitively, as the unique index does), so the suffix is deterministic.
fn first_free_username(base: &str, taken: &[String]) -> String {
    let taken: BTreeSet<String> = taken.iter().map(|t| t.to_lowercase()).collect();
    if !taken.contains(&base.to_lowercase()) {
        return base.to_string();
    }
    // At most `taken.len()` candidates can be taken, so this ends within that many steps.
    (2u64..)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| !taken.contains(&candidate.to_lowercase()))
        // Unreachable (the range is endless, `taken` is not); a name the
        // unique index would refuse rather than a panic.
        .unwrap_or_else(|| base.to_string())
}

/// A `LIKE` pattern matching `base-` followed by anything, with `base`'s own
/// wildcards escaped (escape character `\`).
fn suffix_pattern(base: &str) -> String {
    let mut pattern = String::with_capacity(base.len() + 3);
    for c in base.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str("-%");
    pattern
}

/// The groups to store for a source: trimmed, non-empty, without duplicates.
fn clean_groups(groups: &[String]) -> Vec<String> {
    let set: BTreeSet<&str> = groups
        .iter()
        .map(|g| g.trim())
        .filter(|g| !g.is_empty())
        .collect();
    set.into_iter().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(username: Option<&str>, email: Option<&str>) -> Identity {
        Identity {
            source: "corp".into(),
            identifier: "1234".into(),
            username: username.map(Into::into),
            email: email.map(Into::into),
            email_verified: true,
            name: None,
            groups: vec![],
        }
    }

    #[test]
    fn username_comes_from_the_source_then_the_email_then_the_identifier() {
        assert_eq!(
            wanted_username(&identity(Some(" ada "), Some("x@y"))),
            "ada"
        );
        assert_eq!(
            wanted_username(&identity(Some(""), Some("ada.l@example.com"))),
            "ada.l"
        );
        assert_eq!(
            wanted_username(&identity(None, Some("@example.com"))),
            "corp-1234"
        );
        assert_eq!(
            wanted_username(&identity(None, Some("no-at-sign"))),
            "corp-1234"
        );
        assert_eq!(wanted_username(&identity(None, None)), "corp-1234");
    }

    #[test]
    fn a_username_the_identity_header_could_not_carry_is_never_chosen() {
        // Non-ASCII, control bytes, too long: the next candidate instead.
        assert_eq!(
            wanted_username(&identity(Some("josé"), Some("jose@example.com"))),
            "jose"
        );
        assert_eq!(
            wanted_username(&identity(Some("a\tb"), Some("zoë@example.com"))),
            "corp-1234"
        );
        let long = "a".repeat(121);
        assert_eq!(wanted_username(&identity(Some(&long), None)), "corp-1234");
        let mut odd = identity(Some("ö"), None);
        odd.identifier = "ü".into();
        assert_eq!(wanted_username(&odd), "corp-user");
        // A space or a comma (a list would split on it) neither.
        assert_eq!(
            wanted_username(&identity(Some("Ada Lovelace"), Some("ada@example.com"))),
            "ada"
        );
        assert_eq!(
            wanted_username(&identity(Some("bob,admin"), None)),
            "corp-1234"
        );
    }

    #[test]
    fn first_free_username_picks_the_lowest_free_suffix() {
        let taken = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(first_free_username("ada", &taken(&[])), "ada");
        assert_eq!(first_free_username("ada", &taken(&["ADA"])), "ada-2");
        assert_eq!(
            first_free_username("ada", &taken(&["ada", "ada-2", "ada-4"])),
            "ada-3"
        );
        assert_eq!(first_free_username("ada", &taken(&["ada-2"])), "ada");
    }

    #[test]
    fn suffix_pattern_escapes_like_wildcards() {
        assert_eq!(suffix_pattern("a_b%c\\d"), "a\\_b\\%c\\\\d-%");
    }

    #[test]
    fn groups_are_trimmed_deduplicated_and_sorted() {
        let groups = vec![" b ".to_string(), "a".into(), "b".into(), "".into()];
        assert_eq!(clean_groups(&groups), vec!["a".to_string(), "b".into()]);
    }

    #[test]
    fn user_ids_are_128_bit_base64url() {
        let id = new_user_id().unwrap();
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(id, new_user_id().unwrap());
    }

    #[tokio::test]
    async fn open_refuses_an_unknown_scheme_without_echoing_the_url() {
        match open("mysql://root:hunter2@db/portcullis").await {
            Err(StoreError::UnsupportedUrl(scheme)) => assert_eq!(scheme, "mysql"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a mysql URL was accepted"),
        }
    }
}
