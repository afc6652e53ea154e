//! The SQL user store: one implementation, generic over the sqlx database, with
//! each dialect's quirks (how a write transaction begins, pool setup,
//! migrations) in its `Dialect` impl and its own migration folder.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type,
};

use super::{
    clean_groups, first_free_username, new_user_id, suffix_pattern, wanted_username, Purge,
    StoreCounts, StoreError, UserStore,
};
use crate::identity::profile::{self, Profile};
use crate::identity::HandoffRecord;
use crate::identity::{Connection, Identity, NewSession, SessionRecord, User};

/// How long a connection waits for the database before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits for another writer's lock before `SQLITE_BUSY`.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pool bound for SQLite (WAL: many readers, writers queue on the lock).
const SQLITE_MAX_CONNECTIONS: u32 = 8;
/// Pool bound per replica for PostgreSQL (replicas multiply it).
const POSTGRES_MAX_CONNECTIONS: u32 = 10;
/// Username candidates tried in one enroll before giving up with `Conflict`.
const USERNAME_ATTEMPTS: usize = 16;
/// Revokes the live sessions of source `$1` with provider session `$2`
/// and/or of the user connected as `$3` (a NULL matches all).
const REVOKE_BY_OIDC: &str = "UPDATE sessions SET revoked = TRUE WHERE source = $1 AND revoked = FALSE \
     AND ($2 IS NULL OR oidc_sid = $2) \
     AND ($3 IS NULL OR user_id IN (SELECT user_id FROM connections WHERE source = $1 AND identifier = $3))";

/// Group rows per `INSERT` (far below either dialect's bind-parameter limit).
const GROUPS_PER_INSERT: usize = 200;

/// What differs between the SQL dialects, apart from the migrations.
pub(super) trait Dialect: Database {
    /// The statement that opens a transaction that will write.
    const BEGIN_WRITE: &'static str;
    /// Appended to the row selection of a purge batch: PostgreSQL skips rows
    /// another replica is deleting right now instead of waiting for them.
    const SKIP_LOCKED: &'static str;
    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

impl Dialect for Sqlite {
    // A deferred `BEGIN` takes the write lock at the first write; if another
    // connection wrote since this one's first read, SQLite fails at once with
    // SQLITE_BUSY (the busy timeout cannot help). `IMMEDIATE` takes the write
    // lock up front, so concurrent writers queue on the busy timeout instead.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    // One writer at a time anyway: nothing to skip.
    const SKIP_LOCKED: &'static str = "";

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Dialect for Postgres {
    // READ COMMITTED suffices: races are settled by unique indexes with
    // `ON CONFLICT DO NOTHING`, which waits for the concurrent writer's outcome.
    const BEGIN_WRITE: &'static str = "BEGIN";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Whether a connection coming back to the pool may serve again: not while
/// it still counts an open transaction. SQLite ends a transaction itself when
/// its `COMMIT` fails (disk full, an I/O error); sqlx's rollback on drop then
/// fails as well and leaves its counter at one, so every later `BEGIN` on
/// that connection would fail ("non-zero transaction depth") until the pool
/// happened to close it: writes would stay broken after the disk has room again.
fn reusable<DB: Database>(
    conn: &mut DB::Connection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    use sqlx::Connection as _;
    Box::pin(async move {
        // The rollback a dropped transaction queued runs before this ping.
        conn.ping().await?;
        Ok(!conn.is_in_transaction())
    })
}

/// Opens (creating if missing) a SQLite store and migrates it.
pub(super) async fn open_sqlite(url: &str) -> Result<SqlStore<Sqlite>, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable against crashes of the process in WAL mode; only
        // an OS crash can lose the last transactions (sessions, not accounts' integrity).
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    let memory = url.contains(":memory:") || url.contains("mode=memory");
    let pool = if memory {
        // An in-memory database lives as long as one connection to it: keep
        // exactly one, forever.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        // (Not for memory: closing its one connection would drop the database.)
        SqlitePoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .after_release(reusable::<Sqlite>)
    }
    .acquire_timeout(ACQUIRE_TIMEOUT)
    .connect_with(options)
    .await?;
    sqlx::migrate!("migrations/sqlite").run(&pool).await?;
    Ok(SqlStore { pool })
}

/// Opens a PostgreSQL store and migrates it (sqlx holds an advisory lock, so
/// replicas starting together migrate once).
pub(super) async fn open_postgres(url: &str) -> Result<SqlStore<Postgres>, StoreError> {
    let options = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_release(reusable::<Postgres>)
        .connect_with(options)
        .await?;
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    Ok(SqlStore { pool })
}

/// The user store over one sqlx pool.
pub(super) struct SqlStore<DB: Database> {
    pool: Pool<DB>,
}

/// The columns of a user row followed by one of its groups (NULL when it has none);
/// `$cond` completes the statement. Rows of one user are adjacent (ordered by id).
/// The one user an email lookup found, if any; several are `Ambiguous`.
fn at_most_one(mut found: Vec<User>) -> Result<Option<User>, StoreError> {
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(StoreError::Ambiguous),
    }
}

macro_rules! select_users {
    ($cond:literal) => {
        concat!(
            "SELECT u.id, u.username, u.email, u.name, u.disabled, u.created_at, u.email_verified, u.home_source, g.group_name \
             FROM users u LEFT JOIN user_groups g ON g.user_id = u.id ",
            $cond,
            " ORDER BY u.id"
        )
    };
}

/// Number of columns `select_users!` yields per row.
const USER_COLUMNS: usize = 9;

/// Session columns followed by the `select_users!` columns.
const SELECT_SESSION: &str = "SELECT s.id, s.user_id, s.source, s.created_at, s.expires_at, s.revoked, s.oidc_sid, s.id_token, s.last_used_at, s.claims, s.tokens, \
     u.id, u.username, u.email, u.name, u.disabled, u.created_at, u.email_verified, u.home_source, g.group_name \
     FROM sessions s JOIN users u ON u.id = s.user_id LEFT JOIN user_groups g ON g.user_id = u.id \
     WHERE s.id = $1";

/// Number of session columns before the user columns in `SELECT_SESSION`.
const SESSION_COLUMNS: usize = 11;

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> bool: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// The users a `select_users!` statement finds, binding `args` in order.
    async fn users_where(
        conn: &mut DB::Connection,
        sql: &'static str,
        args: &[&str],
    ) -> Result<Vec<User>, StoreError> {
        let mut query = sqlx::query::<DB>(sql);
        for arg in args {
            query = query.bind(*arg);
        }
        let rows = query.fetch_all(&mut *conn).await?;
        let mut users: Vec<User> = Vec::new();
        for row in &rows {
            let id: String = row.try_get(0)?;
            let group: Option<String> = row.try_get(USER_COLUMNS - 1)?;
            match users.last_mut() {
                Some(user) if user.id == id => user.groups.extend(group),
                _ => {
                    let mut user = Self::user_at(row, 0)?;
                    user.groups.extend(group);
                    users.push(user);
                }
            }
        }
        for user in &mut users {
            // Sorted here, not in SQL: collations differ between the dialects.
            user.groups.sort();
            user.groups.dedup();
        }
        Ok(users)
    }

    /// A session record from the eleven columns starting at `at` (`id, user_id,
    /// source, created_at, expires_at, revoked, oidc_sid, id_token, last_used_at, claims, tokens`).
    fn session_at(row: &DB::Row, at: usize) -> Result<SessionRecord, sqlx::Error> {
        Ok(SessionRecord {
            id: row.try_get(at)?,
            user_id: row.try_get(at + 1)?,
            source: row.try_get(at + 2)?,
            created_at: row.try_get(at + 3)?,
            expires_at: row.try_get(at + 4)?,
            revoked: row.try_get(at + 5)?,
            oidc_sid: row.try_get(at + 6)?,
            id_token: row.try_get(at + 7)?,
            last_used_at: row.try_get(at + 8)?,
            claims: row.try_get(at + 9)?,
            tokens: row.try_get(at + 10)?,
        })
    }

    /// The user whose columns start at `at` (groups left empty).
    fn user_at(row: &DB::Row, at: usize) -> Result<User, sqlx::Error> {
        Ok(User {
            id: row.try_get(at)?,
            username: row.try_get(at + 1)?,
            email: row.try_get(at + 2)?,
            name: row.try_get(at + 3)?,
            groups: Vec::new(),
            disabled: row.try_get(at + 4)?,
            created_at: row.try_get(at + 5)?,
            email_verified: row.try_get(at + 6)?,
            home_source: row.try_get(at + 7)?,
        })
    }

    /// The one user a `select_users!` statement finds.
    async fn one_user(
        conn: &mut DB::Connection,
        sql: &'static str,
        args: &[&str],
    ) -> Result<Option<User>, StoreError> {
        Ok(Self::users_where(conn, sql, args).await?.into_iter().next())
    }

    /// Inserts a user under the first free variant of `base`; returns the username used.
    async fn insert_user(
        conn: &mut DB::Connection,
        id: &str,
        base: &str,
        identity: &Identity,
        now: i64,
    ) -> Result<String, StoreError> {
        let pattern = suffix_pattern(base);
        // Names this transaction found taken although the probe did not list
        // them (a concurrent insert, or a case folding that differs from Rust's).
        let mut also_taken: Vec<String> = Vec::new();
        for _ in 0..USERNAME_ATTEMPTS {
            let mut taken: Vec<String> = sqlx::query::<DB>(
                "SELECT username FROM users WHERE lower(username) = lower($1) OR lower(username) LIKE lower($2) ESCAPE '\\'",
            )
            .bind(base)
            .bind(pattern.as_str())
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?;
            taken.extend(also_taken.iter().cloned());
            let username = first_free_username(base, &taken);
            // DO NOTHING (not an error) so a PostgreSQL transaction stays usable;
            // it waits for a concurrent insert of the same name to commit or roll back.
            let inserted = sqlx::query::<DB>(
                "INSERT INTO users (id, username, email, name, disabled, created_at, email_verified, home_source) \
                 VALUES ($1, $2, $3, $4, FALSE, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(username.as_str())
            .bind(identity.email.as_deref())
            .bind(identity.name.as_deref())
            .bind(now)
            .bind(identity.email.is_some() && identity.email_verified)
            .bind(identity.source.as_str())
            .execute(&mut *conn)
            .await?;
            if DB::rows_affected(&inserted) == 1 {
                return Ok(username);
            }
            also_taken.push(username);
        }
        Err(StoreError::Conflict)
    }

    /// Connects `identity` to `user_id`; `AlreadyConnected` if the identity (or
    /// this user's connection to the source) exists, committed or concurrent.
    async fn insert_connection(
        conn: &mut DB::Connection,
        user_id: &str,
        identity: &Identity,
        now: i64,
    ) -> Result<(), StoreError> {
        let inserted = sqlx::query::<DB>(
            "INSERT INTO connections (user_id, source, identifier, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(identity.source.as_str())
        .bind(identity.identifier.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if DB::rows_affected(&inserted) == 1 {
            Ok(())
        } else {
            Err(StoreError::AlreadyConnected)
        }
    }

    /// Replaces the groups `user_id` has from `identity.source` with `identity.groups`.
    async fn replace_groups(
        conn: &mut DB::Connection,
        user_id: &str,
        identity: &Identity,
    ) -> Result<(), StoreError> {
        sqlx::query::<DB>("DELETE FROM user_groups WHERE user_id = $1 AND source = $2")
            .bind(user_id)
            .bind(identity.source.as_str())
            .execute(&mut *conn)
            .await?;
        let groups = clean_groups(&identity.groups);
        for chunk in groups.chunks(GROUPS_PER_INSERT) {
            // Only placeholders are formatted into the text; every value is bound.
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, $2, ${})", i + 3))
                .collect();
            let sql = format!(
                "INSERT INTO user_groups (user_id, source, group_name) VALUES {}",
                values.join(", ")
            );
            let mut query = sqlx::query::<DB>(AssertSqlSafe(sql))
                .bind(user_id)
                .bind(identity.source.as_str());
            for group in chunk {
                query = query.bind(group.as_str());
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Writes a new session record.
    async fn insert_session(
        conn: &mut DB::Connection,
        user_id: &str,
        session: &NewSession,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query::<DB>(
            "INSERT INTO sessions (id, user_id, source, created_at, expires_at, revoked, oidc_sid, id_token, last_used_at, claims, tokens) \
             VALUES ($1, $2, $3, $4, $5, FALSE, $6, $7, $4, $8, $9)",
        )
        .bind(session.id.as_str())
        .bind(user_id)
        .bind(session.source.as_str())
        .bind(now)
        .bind(session.expires_at)
        .bind(session.oidc_sid.as_deref())
        .bind(session.id_token.as_deref())
        .bind(session.claims.as_deref())
        .bind(session.tokens.as_deref())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Refreshes email and name of an enabled user as [`profile::refreshed`]
    /// says (only through the home source; an email replaced only by a vouched
    /// one); `Disabled` or `NotFound` otherwise (nothing written). The username
    /// is never touched: it is chosen at enrollment. On PostgreSQL the update
    /// also locks the row, so a concurrent `set_disabled` waits for this
    /// sign-in and then revokes its session.
    async fn refresh_enabled(
        conn: &mut DB::Connection,
        user_id: &str,
        identity: &Identity,
    ) -> Result<(), StoreError> {
        let row = sqlx::query::<DB>(
            "SELECT email, email_verified, name, home_source, disabled FROM users WHERE id = $1",
        )
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        if row.try_get::<bool, _>(4)? {
            return Err(StoreError::Disabled);
        }
        let current = Profile {
            email: row.try_get(0)?,
            email_verified: row.try_get(1)?,
            name: row.try_get(2)?,
            home_source: row.try_get(3)?,
        };
        let next = profile::refreshed(&current, identity);
        let updated = sqlx::query::<DB>(
            "UPDATE users SET email = $2, email_verified = $3, name = $4, home_source = $5 \
             WHERE id = $1 AND disabled = FALSE",
        )
        .bind(user_id)
        .bind(next.email.as_deref())
        .bind(next.email_verified)
        .bind(next.name.as_deref())
        .bind(next.home_source.as_deref())
        .execute(&mut *conn)
        .await?;
        if DB::rows_affected(&updated) == 1 {
            Ok(())
        } else {
            // Disabled between the read and the write.
            Err(StoreError::Disabled)
        }
    }

    /// The shared tail of sign-in and link, inside their transaction: groups,
    /// session, then the user as it now is.
    async fn finish_sign_in(
        conn: &mut DB::Connection,
        user_id: &str,
        identity: &Identity,
        session: &NewSession,
        now: i64,
    ) -> Result<User, StoreError> {
        Self::replace_groups(conn, user_id, identity).await?;
        Self::insert_session(conn, user_id, session, now).await?;
        Self::one_user(conn, select_users!("WHERE u.id = $1"), &[user_id])
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Spends `key_hash` until `expires_at`: `true` the first time (or once
    /// an earlier use has expired at `now`). One statement: of two replicas
    /// spending one value at once, the primary key lets one insert; the
    /// other's conflict updates nothing while the earlier use is live.
    async fn spend_once(
        conn: &mut DB::Connection,
        key_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query::<DB>(
            "INSERT INTO used_once (key_hash, expires_at) VALUES ($1, $2) \
             ON CONFLICT (key_hash) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE used_once.expires_at < $3",
        )
        .bind(key_hash)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// Revokes the live sessions of `source` with the provider's `oidc_sid`
    /// and/or of the user connected as `user_identifier`; returns how many.
    async fn revoke_by_oidc(
        conn: &mut DB::Connection,
        source: &str,
        oidc_sid: Option<&str>,
        user_identifier: Option<&str>,
    ) -> Result<u64, StoreError> {
        // A logout token names at least one of them; never revoke a whole source.
        if oidc_sid.is_none() && user_identifier.is_none() {
            return Ok(0);
        }
        let done = sqlx::query::<DB>(REVOKE_BY_OIDC)
            .bind(source)
            .bind(oidc_sid)
            .bind(user_identifier)
            .execute(&mut *conn)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    /// Runs one `UPDATE`/`DELETE` on a pooled connection; returns rows changed.
    async fn execute(
        &self,
        query: sqlx::query::Query<'_, DB, DB::Arguments>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let done = query.execute(&mut *conn).await?;
        Ok(DB::rows_affected(&done))
    }
}

#[async_trait]
impl<DB> UserStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> bool: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn user_by_connection(
        &self,
        source: &str,
        identifier: &str,
    ) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::one_user(
            &mut conn,
            select_users!(
                "JOIN connections c ON c.user_id = u.id WHERE c.source = $1 AND c.identifier = $2"
            ),
            &[source, identifier],
        )
        .await
    }

    async fn enroll(
        &self,
        identity: &Identity,
        session: &NewSession,
        now: i64,
    ) -> Result<User, StoreError> {
        // Dropping the transaction on any early return rolls everything back.
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let connected =
            sqlx::query::<DB>("SELECT 1 FROM connections WHERE source = $1 AND identifier = $2")
                .bind(identity.source.as_str())
                .bind(identity.identifier.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if connected.is_some() {
            return Err(StoreError::AlreadyConnected);
        }
        let id = new_user_id()?;
        let username =
            Self::insert_user(&mut tx, &id, &wanted_username(identity), identity, now).await?;
        // The decisive check: on PostgreSQL a concurrent enroll of the same
        // identity may have passed the probe above; the unique key settles it.
        Self::insert_connection(&mut tx, &id, identity, now).await?;
        Self::replace_groups(&mut tx, &id, identity).await?;
        Self::insert_session(&mut tx, &id, session, now).await?;
        tx.commit().await?;
        Ok(User {
            id,
            username,
            email: identity.email.clone(),
            email_verified: identity.email.is_some() && identity.email_verified,
            name: identity.name.clone(),
            home_source: Some(identity.source.clone()),
            groups: clean_groups(&identity.groups),
            disabled: false,
            created_at: now,
        })
    }

    async fn sign_in(
        &self,
        user_id: &str,
        identity: &Identity,
        session: &NewSession,
        now: i64,
    ) -> Result<User, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let owner: Option<String> = sqlx::query::<DB>(
            "SELECT user_id FROM connections WHERE source = $1 AND identifier = $2",
        )
        .bind(identity.source.as_str())
        .bind(identity.identifier.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
        if owner.as_deref() != Some(user_id) {
            // Unlinked (or relinked) since the caller looked it up.
            return Err(StoreError::NotFound);
        }
        Self::refresh_enabled(&mut tx, user_id, identity).await?;
        let user = Self::finish_sign_in(&mut tx, user_id, identity, session, now).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn link(
        &self,
        user_id: &str,
        identity: &Identity,
        session: &NewSession,
        now: i64,
    ) -> Result<User, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        Self::refresh_enabled(&mut tx, user_id, identity).await?;
        Self::insert_connection(&mut tx, user_id, identity, now).await?;
        let user = Self::finish_sign_in(&mut tx, user_id, identity, session, now).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::one_user(&mut conn, select_users!("WHERE u.id = $1"), &[id]).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let found = Self::users_where(
            &mut conn,
            select_users!("WHERE lower(u.email) = lower($1)"),
            &[email],
        )
        .await?;
        at_most_one(found)
    }

    async fn user_by_vouched_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let found = Self::users_where(
            &mut conn,
            select_users!("WHERE lower(u.email) = lower($1) AND u.email_verified = TRUE"),
            &[email],
        )
        .await?;
        at_most_one(found)
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::one_user(
            &mut conn,
            select_users!("WHERE lower(u.username) = lower($1)"),
            &[username],
        )
        .await
    }

    async fn session(&self, sid: &str) -> Result<Option<(SessionRecord, User)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query::<DB>(SELECT_SESSION)
            .bind(sid)
            .fetch_all(&mut *conn)
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let record = Self::session_at(first, 0)?;
        let mut user = Self::user_at(first, SESSION_COLUMNS)?;
        for row in &rows {
            let group: Option<String> = row.try_get(SESSION_COLUMNS + USER_COLUMNS - 1)?;
            user.groups.extend(group);
        }
        user.groups.sort();
        user.groups.dedup();
        Ok(Some((record, user)))
    }

    async fn revoke_session(&self, sid: &str) -> Result<(), StoreError> {
        self.execute(sqlx::query("UPDATE sessions SET revoked = TRUE WHERE id = $1").bind(sid))
            .await?;
        Ok(())
    }

    async fn touch_session(
        &self,
        sid: &str,
        now: i64,
        min_interval: i64,
    ) -> Result<bool, StoreError> {
        // The condition makes the row change at most once per interval however
        // many replicas report a use; `last_used_at` only moves forward.
        let changed = self
            .execute(
                sqlx::query(
                    "UPDATE sessions SET last_used_at = $2 \
                     WHERE id = $1 AND revoked = FALSE AND last_used_at <= $3",
                )
                .bind(sid)
                .bind(now)
                .bind(now.saturating_sub(min_interval.max(0))),
            )
            .await?;
        Ok(changed > 0)
    }

    async fn claim_token_refresh(
        &self,
        sid: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        // One conditional UPDATE: whichever replica changes the row holds the
        // lease; the others see 0 rows and wait for its result.
        let claimed = self
            .execute(
                sqlx::query(
                    "UPDATE sessions SET refreshing_until = $2 \
                     WHERE id = $1 AND revoked = FALSE AND refreshing_until <= $3",
                )
                .bind(sid)
                .bind(until)
                .bind(now),
            )
            .await?;
        Ok(claimed > 0)
    }

    async fn finish_token_refresh(
        &self,
        sid: &str,
        tokens: Option<&str>,
    ) -> Result<(), StoreError> {
        // The new tokens (a rotated refresh token with them) replace the old
        // ones in the same statement that frees the lease.
        match tokens {
            Some(t) => {
                self.execute(
                    sqlx::query(
                        "UPDATE sessions SET tokens = $2, refreshing_until = 0 WHERE id = $1",
                    )
                    .bind(sid)
                    .bind(t),
                )
                .await?
            }
            None => {
                self.execute(
                    sqlx::query("UPDATE sessions SET refreshing_until = 0 WHERE id = $1").bind(sid),
                )
                .await?
            }
        };
        Ok(())
    }

    async fn revoke_user_sessions(&self, user_id: &str) -> Result<u64, StoreError> {
        self.execute(
            sqlx::query(
                "UPDATE sessions SET revoked = TRUE WHERE user_id = $1 AND revoked = FALSE",
            )
            .bind(user_id),
        )
        .await
    }

    async fn revoke_sessions_by_oidc(
        &self,
        source: &str,
        oidc_sid: Option<&str>,
        user_identifier: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::revoke_by_oidc(&mut conn, source, oidc_sid, user_identifier).await
    }

    async fn set_disabled(&self, user_id: &str, disabled: bool) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let updated = sqlx::query::<DB>("UPDATE users SET disabled = $2 WHERE id = $1")
            .bind(user_id)
            .bind(disabled)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&updated) == 0 {
            return Ok(false);
        }
        if disabled {
            sqlx::query::<DB>(
                "UPDATE sessions SET revoked = TRUE WHERE user_id = $1 AND revoked = FALSE",
            )
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn list_users(&self) -> Result<Vec<(User, Vec<Connection>)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let users = Self::users_where(&mut conn, select_users!(""), &[]).await?;
        let rows = sqlx::query::<DB>("SELECT user_id, source, identifier, created_at FROM connections ORDER BY source, identifier")
            .fetch_all(&mut *conn)
            .await?;
        let mut connections: BTreeMap<String, Vec<Connection>> = BTreeMap::new();
        for row in &rows {
            let c = Connection {
                user_id: row.try_get(0)?,
                source: row.try_get(1)?,
                identifier: row.try_get(2)?,
                created_at: row.try_get(3)?,
            };
            connections.entry(c.user_id.clone()).or_default().push(c);
        }
        let mut listed: Vec<(User, Vec<Connection>)> = users
            .into_iter()
            .map(|u| {
                let c = connections.remove(&u.id).unwrap_or_default();
                (u, c)
            })
            .collect();
        listed.sort_by_key(|(u, _)| u.username.to_lowercase());
        Ok(listed)
    }

    async fn unlink(&self, user_id: &str, source: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        let removed =
            sqlx::query::<DB>("DELETE FROM connections WHERE user_id = $1 AND source = $2")
                .bind(user_id)
                .bind(source)
                .execute(&mut *tx)
                .await?;
        if DB::rows_affected(&removed) == 0 {
            return Ok(false);
        }
        sqlx::query::<DB>("DELETE FROM user_groups WHERE user_id = $1 AND source = $2")
            .bind(user_id)
            .bind(source)
            .execute(&mut *tx)
            .await?;
        sqlx::query::<DB>("UPDATE sessions SET revoked = TRUE WHERE user_id = $1 AND source = $2 AND revoked = FALSE")
            .bind(user_id)
            .bind(source)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn rename_user(&self, user_id: &str, username: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        // Case-insensitive uniqueness, as the unique index; the user's own
        // name in another case is not "taken".
        let renamed = sqlx::query::<DB>(
            "UPDATE users SET username = $2 WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM users o WHERE lower(o.username) = lower($2) AND o.id <> $1)",
        )
        .bind(user_id)
        .bind(username)
        .execute(&mut *tx)
        .await;
        match renamed {
            Ok(done) if DB::rows_affected(&done) == 1 => {
                tx.commit().await?;
                Ok(true)
            }
            Ok(_) => {
                let exists = sqlx::query::<DB>("SELECT 1 FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_some() {
                    Err(StoreError::UsernameTaken)
                } else {
                    Ok(false)
                }
            }
            // A concurrent rename or enrollment took the name first.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::UsernameTaken)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query::<DB>(
            "SELECT id, user_id, source, created_at, expires_at, revoked, oidc_sid, id_token, last_used_at, claims, tokens \
             FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id",
        )
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Self::session_at(r, 0))
            .collect::<Result<_, _>>()?)
    }

    async fn purge_batch(&self, table: Purge, now: i64, batch: u32) -> Result<u64, StoreError> {
        // The rows to delete are chosen by key in a bounded sub-select (neither
        // dialect limits a DELETE portably); a row two replicas both pick is
        // deleted once, the other DELETE finds it gone.
        let sql = match table {
            Purge::Sessions => format!(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                 WHERE expires_at < $1 OR revoked = TRUE LIMIT $2{})",
                DB::SKIP_LOCKED
            ),
            Purge::HandoffCodes => format!(
                "DELETE FROM handoff_codes WHERE code_hash IN (SELECT code_hash FROM handoff_codes \
                 WHERE expires_at < $1 LIMIT $2{})",
                DB::SKIP_LOCKED
            ),
            Purge::IdleSessions { .. } => format!(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                 WHERE last_used_at < $1 LIMIT $2{})",
                DB::SKIP_LOCKED
            ),
            Purge::UsedOnce => format!(
                "DELETE FROM used_once WHERE key_hash IN (SELECT key_hash FROM used_once \
                 WHERE expires_at < $1 LIMIT $2{})",
                DB::SKIP_LOCKED
            ),
        };
        let before = match table {
            Purge::IdleSessions { unused_since } => unused_since,
            Purge::Sessions | Purge::HandoffCodes | Purge::UsedOnce => now,
        };
        self.execute(
            sqlx::query::<DB>(AssertSqlSafe(sql))
                .bind(before)
                .bind(i64::from(batch)),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Reads a real table: proves the connection and the migrated schema.
        let mut conn = self.pool.acquire().await?;
        sqlx::query::<DB>("SELECT COUNT(*) FROM (SELECT 1 FROM sessions LIMIT 1) AS one")
            .fetch_one(&mut *conn)
            .await?;
        Ok(())
    }

    async fn create_handoff(
        &self,
        code_key: &str,
        handoff: &HandoffRecord,
        now: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            sqlx::query(
                "INSERT INTO handoff_codes (code_hash, session_id, host, rd, binding, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(code_key)
            .bind(handoff.session_id.as_str())
            .bind(handoff.host.as_str())
            .bind(handoff.rd.as_str())
            .bind(handoff.binding.as_str())
            .bind(now)
            .bind(handoff.expires_at),
        )
        .await?;
        Ok(())
    }

    async fn use_once(
        &self,
        key_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::spend_once(&mut conn, key_hash, expires_at, now).await
    }

    async fn logout_once(
        &self,
        key_hash: &str,
        expires_at: i64,
        now: i64,
        source: &str,
        oidc_sid: Option<&str>,
        user_identifier: Option<&str>,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        if !Self::spend_once(&mut tx, key_hash, expires_at, now).await? {
            return Ok(None);
        }
        let revoked = Self::revoke_by_oidc(&mut tx, source, oidc_sid, user_identifier).await?;
        tx.commit().await?;
        Ok(Some(revoked))
    }

    async fn take_handoff(&self, code_key: &str) -> Result<Option<HandoffRecord>, StoreError> {
        // One statement: of two replicas trading the same code at once, the
        // row lock (PostgreSQL) or the write lock (SQLite) lets one delete it;
        // the other finds nothing.
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query::<DB>(
            "DELETE FROM handoff_codes WHERE code_hash = $1 RETURNING session_id, host, rd, binding, expires_at",
        )
        .bind(code_key)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(HandoffRecord {
            session_id: row.try_get(0)?,
            host: row.try_get(1)?,
            rd: row.try_get(2)?,
            binding: row.try_get(3)?,
            expires_at: row.try_get(4)?,
        }))
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query::<DB>(
            "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM connections), \
             (SELECT COUNT(*) FROM user_groups), (SELECT COUNT(*) FROM sessions)",
        )
        .fetch_one(&mut *conn)
        .await?;
        let count = |i: usize| -> Result<u64, StoreError> {
            Ok(u64::try_from(row.try_get::<i64, _>(i)?).unwrap_or_default())
        };
        Ok(StoreCounts {
            users: count(0)?,
            connections: count(1)?,
            groups: count(2)?,
            sessions: count(3)?,
        })
    }
}

#[cfg(test)]
mod tests {
    //! One test body per behaviour, run against SQLite (a temp file) and, when
    //! `PORTCULLIS_TEST_POSTGRES_URL` is set, PostgreSQL (a fresh schema per test).

    use std::future::Future;
    use std::panic::AssertUnwindSafe;
    use std::sync::Arc;

    use futures_util::FutureExt as _;
    use sqlx::Connection as _;

    use super::super::{open, Purge, StoreCounts, StoreError, UserStore};
    use crate::identity::{Identity, NewSession};

    const NOW: i64 = 1_700_000_000;

    fn identity(
        source: &str,
        identifier: &str,
        username: Option<&str>,
        email: Option<&str>,
        groups: &[&str],
    ) -> Identity {
        Identity {
            source: source.into(),
            identifier: identifier.into(),
            username: username.map(Into::into),
            email: email.map(Into::into),
            email_verified: true,
            name: Some(format!("Name of {identifier}")),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn ada() -> Identity {
        identity(
            "corp",
            "1",
            Some("ada"),
            Some("ada@example.com"),
            &["eng", "ops", "eng"],
        )
    }

    fn session(id: &str, source: &str) -> NewSession {
        NewSession {
            id: id.into(),
            source: source.into(),
            expires_at: NOW + 3600,
            oidc_sid: Some(format!("op-{id}")),
            id_token: Some(format!("token-{id}")),
            claims: Some(format!(r#"{{"sid":"{id}"}}"#)),
            tokens: None,
        }
    }

    async fn counts(store: &Arc<dyn UserStore>) -> StoreCounts {
        store.counts().await.unwrap()
    }

    /// Runs `body` against a fresh SQLite file.
    async fn with_sqlite<F, Fut>(body: F)
    where
        F: FnOnce(Arc<dyn UserStore>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("users.db").display());
        body(open(&url).await.unwrap()).await;
    }

    /// Runs `body` against PostgreSQL in a schema of its own, dropped afterwards;
    /// skips (with a notice) when no server is configured.
    async fn with_postgres<F, Fut>(body: F)
    where
        F: FnOnce(Arc<dyn UserStore>) -> Fut,
        Fut: Future<Output = ()>,
    {
        in_fresh_postgres_schema(|url| async move {
            let store = open(&url).await.unwrap();
            body(store).await;
        })
        .await;
    }

    /// Runs `body` with the URL of a fresh, empty PostgreSQL schema, dropped
    /// afterwards even when `body` panics; skipped with a notice without
    /// `PORTCULLIS_TEST_POSTGRES_URL`.
    async fn in_fresh_postgres_schema<F, Fut>(body: F)
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Ok(base) = std::env::var("PORTCULLIS_TEST_POSTGRES_URL") else {
            eprintln!(
                "notice: PORTCULLIS_TEST_POSTGRES_URL is unset; PostgreSQL store test skipped"
            );
            return;
        };
        let schema = format!("pc_test_{:016x}", crate::random::u64().unwrap());
        let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options[search_path]={schema}");
        let outcome = AssertUnwindSafe(body(url)).catch_unwind().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut admin)
            .await
            .unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    async fn purge_removes_only_expired_and_revoked_sessions_in_bounded_batches(
        store: Arc<dyn UserStore>,
    ) {
        let ending = |id: &str, expires_at: i64| NewSession {
            expires_at,
            ..session(id, "corp")
        };
        let user = store
            .enroll(&ada(), &ending("live", NOW + 3600), NOW)
            .await
            .unwrap();
        // Expires exactly at the purge's `now`: still valid this second.
        let mut kept = vec!["live", "edge"];
        store
            .sign_in(&user.id, &ada(), &ending("edge", NOW + 100), NOW)
            .await
            .unwrap();
        for id in ["old1", "old2", "old3", "old4", "old5"] {
            store
                .sign_in(&user.id, &ada(), &ending(id, NOW + 10), NOW)
                .await
                .unwrap();
        }
        store
            .sign_in(&user.id, &ada(), &ending("revoked", NOW + 3600), NOW)
            .await
            .unwrap();
        store.revoke_session("revoked").await.unwrap();
        store.ping().await.unwrap();

        let mut batches = Vec::new();
        loop {
            let n = store
                .purge_batch(Purge::Sessions, NOW + 100, 2)
                .await
                .unwrap();
            batches.push(n);
            if n < 2 {
                break;
            }
        }
        assert_eq!(batches, vec![2, 2, 2, 0]);
        let mut left: Vec<String> = store
            .user_sessions(&user.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        left.sort();
        kept.sort();
        assert_eq!(left, kept);
        // The user, its connection and groups are untouched.
        assert_eq!(
            store.user(&user.id).await.unwrap().map(|u| u.id),
            Some(user.id.clone())
        );
        assert_eq!(counts(&store).await.connections, 1);
        // Nothing left to purge: a second run (another replica) deletes nothing.
        assert_eq!(
            store
                .purge_batch(Purge::Sessions, NOW + 100, 500)
                .await
                .unwrap(),
            0
        );
    }

    /// Declares each named test body once per backend.
    macro_rules! on_both_backends {
        ($($name:ident),* $(,)?) => {
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        super::with_sqlite(super::$name).await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        super::with_postgres(super::$name).await;
                    }
                )*
            }
        };
    }

    async fn purge_of_idle_sessions_removes_only_those_unused_since_the_cutoff(
        store: Arc<dyn UserStore>,
    ) {
        let long = |id: &str| NewSession {
            expires_at: NOW + 86_400,
            ..session(id, "corp")
        };
        let user = store.enroll(&ada(), &long("unused"), NOW).await.unwrap();
        store
            .sign_in(&user.id, &ada(), &long("used"), NOW)
            .await
            .unwrap();
        assert!(store.touch_session("used", NOW + 500, 1).await.unwrap());
        let idle = Purge::IdleSessions {
            unused_since: NOW + 100,
        };
        assert_eq!(idle.table(), "sessions");
        assert_eq!(store.purge_batch(idle, NOW, 500).await.unwrap(), 1);
        let left: Vec<String> = store
            .user_sessions(&user.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, ["used"]);
        assert_eq!(store.purge_batch(idle, NOW, 500).await.unwrap(), 0);
        // Used exactly at the cutoff: kept.
        let at = Purge::IdleSessions {
            unused_since: NOW + 500,
        };
        assert_eq!(store.purge_batch(at, NOW, 500).await.unwrap(), 0);
    }

    on_both_backends!(
        purge_of_idle_sessions_removes_only_those_unused_since_the_cutoff,
        purge_removes_only_expired_and_revoked_sessions_in_bounded_batches,
        enroll_then_user_by_connection_finds_the_user,
        username_collisions_get_deterministic_suffixes,
        enroll_of_a_connected_identity_is_refused_and_writes_nothing,
        sign_in_refreshes_the_profile_and_replaces_only_that_sources_groups,
        sign_in_with_a_connection_of_another_user_is_refused,
        a_disabled_user_is_refused_and_nothing_is_written,
        sessions_round_trip_and_revoke,
        concurrent_enroll_of_one_identity_creates_one_user,
        link_refuses_a_second_identity_of_the_same_source,
        unlink_removes_the_connection_its_groups_and_its_sessions,
        email_lookup_is_case_insensitive_and_refuses_ambiguity,
        ses06_a_use_is_recorded_at_most_once_per_interval,
        rename_changes_the_username_only_to_a_free_one,
        a_handoff_code_is_taken_once_and_only_by_its_key,
        a_token_refresh_lease_has_one_holder_and_the_new_tokens_free_it,
        purge_removes_only_expired_handoff_codes,
        only_a_vouched_email_is_found_for_email_matching,
        a_value_is_used_once_until_it_expires_and_free_again_once_purged,
    );

    async fn a_value_is_used_once_until_it_expires_and_free_again_once_purged(
        store: Arc<dyn UserStore>,
    ) {
        assert!(store.use_once("k1", NOW + 100, NOW).await.unwrap());
        assert!(!store.use_once("k1", NOW + 100, NOW).await.unwrap());
        assert!(!store.use_once("k1", NOW + 200, NOW + 100).await.unwrap());
        // Past its expiry it is a new use (the purge may not have run yet).
        assert!(store.use_once("k1", NOW + 300, NOW + 101).await.unwrap());
        assert!(store.use_once("k2", NOW + 100, NOW).await.unwrap());
        // The purge removes only the expired (k2 and k3, not k1).
        assert!(store.use_once("k3", NOW + 10, NOW).await.unwrap());
        assert_eq!(
            store
                .purge_batch(Purge::UsedOnce, NOW + 150, 500)
                .await
                .unwrap(),
            2
        );
        assert!(!store.use_once("k1", NOW + 300, NOW + 150).await.unwrap());
        // A purged value is free again.
        assert!(store.use_once("k2", NOW + 300, NOW + 150).await.unwrap());
    }

    async fn only_a_vouched_email_is_found_for_email_matching(store: Arc<dyn UserStore>) {
        // Mallory claims victim@example.com through a source that does not vouch for it.
        let squatter = Identity {
            email_verified: false,
            ..identity(
                "corp",
                "m",
                Some("mallory"),
                Some("victim@example.com"),
                &[],
            )
        };
        store
            .enroll(&squatter, &session("s1", "corp"), NOW)
            .await
            .unwrap();
        assert!(store
            .user_by_email("victim@example.com")
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            store
                .user_by_vouched_email("VICTIM@example.com")
                .await
                .unwrap(),
            None
        );
        let vouched = identity("corp", "v", Some("victim"), Some("victim@example.com"), &[]);
        let victim = store
            .enroll(&vouched, &session("s2", "corp"), NOW)
            .await
            .unwrap();
        assert_eq!(
            store
                .user_by_vouched_email("victim@example.com")
                .await
                .unwrap()
                .map(|u| u.id),
            Some(victim.id)
        );
    }

    async fn purge_removes_only_expired_handoff_codes(store: Arc<dyn UserStore>) {
        use crate::identity::HandoffRecord;
        store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        let code = |expires_at: i64| HandoffRecord {
            session_id: "s1".into(),
            host: "wiki.example".into(),
            rd: "http://wiki.example/".into(),
            binding: "b".into(),
            expires_at,
        };
        store
            .create_handoff("gone", &code(NOW + 10), NOW)
            .await
            .unwrap();
        store
            .create_handoff("edge", &code(NOW + 100), NOW)
            .await
            .unwrap();
        store
            .create_handoff("kept", &code(NOW + 200), NOW)
            .await
            .unwrap();
        assert_eq!(
            store
                .purge_batch(Purge::HandoffCodes, NOW + 100, 10)
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.take_handoff("gone").await.unwrap(), None);
        assert_eq!(
            store.take_handoff("edge").await.unwrap(),
            Some(code(NOW + 100))
        );
        assert_eq!(
            store.take_handoff("kept").await.unwrap(),
            Some(code(NOW + 200))
        );
        // The session itself is no business of this purge.
        assert!(store.session("s1").await.unwrap().is_some());
    }

    async fn a_token_refresh_lease_has_one_holder_and_the_new_tokens_free_it(
        store: Arc<dyn UserStore>,
    ) {
        let first = NewSession {
            tokens: Some("sealed-1".into()),
            ..session("s1", "corp")
        };
        store.enroll(&ada(), &first, NOW).await.unwrap();
        // Eight claimants at once: exactly one holds the lease.
        let mut claims = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            claims.push(tokio::spawn(async move {
                store
                    .claim_token_refresh("s1", NOW, NOW + 30)
                    .await
                    .unwrap()
            }));
        }
        let mut won = 0;
        for c in claims {
            won += usize::from(c.await.unwrap());
        }
        assert_eq!(won, 1);
        // Still held before it runs out; free again once it has.
        assert!(!store
            .claim_token_refresh("s1", NOW + 29, NOW + 59)
            .await
            .unwrap());
        assert!(store
            .claim_token_refresh("s1", NOW + 30, NOW + 60)
            .await
            .unwrap());
        // The new tokens replace the old and free the lease in one update.
        store
            .finish_token_refresh("s1", Some("sealed-2"))
            .await
            .unwrap();
        let (record, _) = store.session("s1").await.unwrap().unwrap();
        assert_eq!(record.tokens.as_deref(), Some("sealed-2"));
        assert!(store
            .claim_token_refresh("s1", NOW + 31, NOW + 61)
            .await
            .unwrap());
        // A freed lease without new tokens keeps the old ones.
        store.finish_token_refresh("s1", None).await.unwrap();
        let (record, _) = store.session("s1").await.unwrap().unwrap();
        assert_eq!(record.tokens.as_deref(), Some("sealed-2"));
        // A revoked session's lease cannot be claimed.
        store.revoke_session("s1").await.unwrap();
        assert!(!store
            .claim_token_refresh("s1", NOW + 31, NOW + 61)
            .await
            .unwrap());
    }

    async fn a_handoff_code_is_taken_once_and_only_by_its_key(store: Arc<dyn UserStore>) {
        use crate::identity::HandoffRecord;
        store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        let handoff = HandoffRecord {
            session_id: "s1".into(),
            host: "wiki.example".into(),
            rd: "http://wiki.example/p".into(),
            binding: "b".into(),
            expires_at: NOW + 60,
        };
        store.create_handoff("key-1", &handoff, NOW).await.unwrap();
        assert_eq!(store.take_handoff("key-2").await.unwrap(), None);
        // Many takers at once: exactly one gets it.
        let takers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.take_handoff("key-1").await.unwrap() })
            })
            .collect();
        let mut got = Vec::new();
        for t in takers {
            got.extend(t.await.unwrap());
        }
        assert_eq!(got, vec![handoff]);
        assert_eq!(store.take_handoff("key-1").await.unwrap(), None);
    }

    async fn enroll_then_user_by_connection_finds_the_user(store: Arc<dyn UserStore>) {
        assert_eq!(counts(&store).await, StoreCounts::default());
        let user = store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        assert_eq!(user.username, "ada");
        assert_eq!(user.email.as_deref(), Some("ada@example.com"));
        assert_eq!(user.name.as_deref(), Some("Name of 1"));
        assert_eq!(user.groups, vec!["eng".to_string(), "ops".into()]);
        assert!(!user.disabled);
        assert_eq!(user.created_at, NOW);

        assert_eq!(
            store.user_by_connection("corp", "1").await.unwrap(),
            Some(user.clone())
        );
        assert_eq!(store.user_by_connection("corp", "2").await.unwrap(), None);
        assert_eq!(store.user_by_connection("other", "1").await.unwrap(), None);
        assert_eq!(store.user(&user.id).await.unwrap(), Some(user.clone()));
        assert_eq!(store.user("missing").await.unwrap(), None);
        assert_eq!(
            store.user_by_username("ADA").await.unwrap(),
            Some(user.clone())
        );
        assert_eq!(store.user_by_username("eve").await.unwrap(), None);
        assert_eq!(
            counts(&store).await,
            StoreCounts {
                users: 1,
                connections: 1,
                groups: 2,
                sessions: 1
            }
        );

        let (record, owner) = store.session("s1").await.unwrap().unwrap();
        assert_eq!(owner, user);
        assert_eq!(record.user_id, user.id);
        assert_eq!(record.created_at, NOW);
    }

    async fn username_collisions_get_deterministic_suffixes(store: Arc<dyn UserStore>) {
        let mut names = Vec::new();
        let wanted = [
            (Some("ada"), None),
            (Some("ada"), None),
            (Some("ada"), None),
            (Some("ADA"), None),
            (None, Some("ada@elsewhere.example")),
            (None, None),
        ];
        for (i, (username, email)) in wanted.into_iter().enumerate() {
            let id = format!("{}", i + 1);
            let who = identity("corp", &id, username, email, &[]);
            names.push(
                store
                    .enroll(&who, &session(&format!("s{id}"), "corp"), NOW)
                    .await
                    .unwrap()
                    .username,
            );
        }
        assert_eq!(names, ["ada", "ada-2", "ada-3", "ADA-4", "ada-5", "corp-6"]);
        // The names hold in the store, not only in the returned values.
        for name in &names {
            assert_eq!(
                store
                    .user_by_username(name)
                    .await
                    .unwrap()
                    .map(|u| u.username),
                Some(name.clone())
            );
        }
    }

    async fn enroll_of_a_connected_identity_is_refused_and_writes_nothing(
        store: Arc<dyn UserStore>,
    ) {
        let first = store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        let before = counts(&store).await;
        let again = identity(
            "corp",
            "1",
            Some("eve"),
            Some("eve@example.com"),
            &["admins"],
        );
        let refused = store.enroll(&again, &session("s2", "corp"), NOW + 1).await;
        assert!(
            matches!(refused, Err(StoreError::AlreadyConnected)),
            "{refused:?}"
        );
        assert_eq!(counts(&store).await, before);
        assert_eq!(store.session("s2").await.unwrap().map(|(r, _)| r.id), None);
        assert_eq!(store.user_by_username("eve").await.unwrap(), None);
        assert_eq!(
            store.user_by_connection("corp", "1").await.unwrap(),
            Some(first)
        );
    }

    async fn sign_in_refreshes_the_profile_and_replaces_only_that_sources_groups(
        store: Arc<dyn UserStore>,
    ) {
        let user = store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        assert_eq!(user.home_source.as_deref(), Some("corp"));
        assert!(user.email_verified);
        let github = identity(
            "gh",
            "gh-77",
            Some("ada-gh"),
            Some("ada@gh.example"),
            &["oss"],
        );
        let linked = store
            .link(&user.id, &github, &session("s2", "gh"), NOW)
            .await
            .unwrap();
        assert_eq!(
            linked.groups,
            vec!["eng".to_string(), "ops".into(), "oss".into()]
        );
        // A linked source renames nobody and never overwrites the home's email or name.
        assert_eq!(linked.username, "ada");
        assert_eq!(linked.email.as_deref(), Some("ada@example.com"));
        assert_eq!(linked.name.as_deref(), Some("Name of 1"));
        assert_eq!(linked.home_source.as_deref(), Some("corp"));
        let again = store
            .sign_in(&user.id, &github, &session("s2b", "gh"), NOW + 1)
            .await
            .unwrap();
        assert_eq!(
            (again.username.as_str(), again.email.as_deref()),
            ("ada", Some("ada@example.com"))
        );

        let bob = store
            .enroll(
                &identity("corp", "2", Some("bob"), None, &[]),
                &session("s3", "corp"),
                NOW,
            )
            .await
            .unwrap();

        let mut now_says = identity(
            "corp",
            "1",
            Some("ada"),
            Some("ada.lovelace@example.com"),
            &["eng", "sre"],
        );
        now_says.name = Some("Ada Lovelace".into());
        let refreshed = store
            .sign_in(&user.id, &now_says, &session("s4", "corp"), NOW + 10)
            .await
            .unwrap();
        assert_eq!(refreshed.email.as_deref(), Some("ada.lovelace@example.com"));
        assert!(refreshed.email_verified);
        assert_eq!(refreshed.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(refreshed.username, "ada");
        assert_eq!(
            refreshed.groups,
            vec!["eng".to_string(), "oss".into(), "sre".into()]
        );
        assert_eq!(refreshed.created_at, NOW);
        assert_eq!(store.user(&user.id).await.unwrap(), Some(refreshed.clone()));

        // Someone else's username is never taken over; a source without email keeps the stored one.
        let mut claims_bob = identity("corp", "1", Some("BOB"), None, &[]);
        claims_bob.name = None;
        let kept = store
            .sign_in(&user.id, &claims_bob, &session("s5", "corp"), NOW + 20)
            .await
            .unwrap();
        assert_eq!(kept.username, "ada");
        assert_eq!(kept.email.as_deref(), Some("ada.lovelace@example.com"));
        assert_eq!(kept.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(kept.groups, vec!["oss".to_string()]);
        // The home source's email that nobody vouches for replaces nothing.
        let mut unvouched = identity("corp", "1", None, Some("mallory@example.com"), &[]);
        unvouched.email_verified = false;
        let kept = store
            .sign_in(&user.id, &unvouched, &session("s6", "corp"), NOW + 30)
            .await
            .unwrap();
        assert_eq!(kept.email.as_deref(), Some("ada.lovelace@example.com"));
        assert!(kept.email_verified);
        assert_eq!(
            store.user(&bob.id).await.unwrap().map(|u| u.username),
            Some("bob".into())
        );
        assert_eq!(
            counts(&store).await,
            StoreCounts {
                users: 2,
                connections: 3,
                groups: 1,
                sessions: 7
            }
        );
    }

    async fn rename_changes_the_username_only_to_a_free_one(store: Arc<dyn UserStore>) {
        let ada_user = store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        store
            .enroll(
                &identity("corp", "2", Some("bob"), None, &[]),
                &session("s2", "corp"),
                NOW,
            )
            .await
            .unwrap();
        let taken = store.rename_user(&ada_user.id, "BOB").await;
        assert!(matches!(taken, Err(StoreError::UsernameTaken)), "{taken:?}");
        assert!(store.rename_user(&ada_user.id, "Ada").await.unwrap());
        assert!(store.rename_user(&ada_user.id, "lovelace").await.unwrap());
        assert!(!store.rename_user("nobody", "x").await.unwrap());
        let renamed = store.user(&ada_user.id).await.unwrap().unwrap();
        assert_eq!(renamed.username, "lovelace");
        // The session now resolves to the new name; a sign-in keeps it.
        assert_eq!(
            store.session("s1").await.unwrap().unwrap().1.username,
            "lovelace"
        );
        let signed = store
            .sign_in(&ada_user.id, &ada(), &session("s3", "corp"), NOW + 1)
            .await
            .unwrap();
        assert_eq!(signed.username, "lovelace");
        // The old name is free again.
        let again = store
            .enroll(
                &identity("gh", "9", Some("ada"), None, &[]),
                &session("s4", "gh"),
                NOW,
            )
            .await
            .unwrap();
        assert_eq!(again.username, "ada");
    }

    async fn sign_in_with_a_connection_of_another_user_is_refused(store: Arc<dyn UserStore>) {
        store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        let bob = store
            .enroll(
                &identity("corp", "2", Some("bob"), None, &[]),
                &session("s2", "corp"),
                NOW,
            )
            .await
            .unwrap();
        let before = counts(&store).await;
        let refused = store
            .sign_in(&bob.id, &ada(), &session("s3", "corp"), NOW)
            .await;
        assert!(matches!(refused, Err(StoreError::NotFound)), "{refused:?}");
        let gone = store
            .sign_in("no-such-user", &ada(), &session("s3", "corp"), NOW)
            .await;
        assert!(matches!(gone, Err(StoreError::NotFound)), "{gone:?}");
        assert_eq!(counts(&store).await, before);
        assert_eq!(store.user(&bob.id).await.unwrap(), Some(bob));
    }

    async fn a_disabled_user_is_refused_and_nothing_is_written(store: Arc<dyn UserStore>) {
        let user = store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        assert!(store.set_disabled(&user.id, true).await.unwrap());
        let (record, disabled) = store.session("s1").await.unwrap().unwrap();
        assert!(record.revoked, "disabling revokes the sessions");
        assert!(disabled.disabled);

        let before = counts(&store).await;
        let changed = identity(
            "corp",
            "1",
            Some("ada2"),
            Some("new@example.com"),
            &["admins"],
        );
        let refused = store
            .sign_in(&user.id, &changed, &session("s2", "corp"), NOW + 5)
            .await;
        assert!(matches!(refused, Err(StoreError::Disabled)), "{refused:?}");
        let link = store
            .link(
                &user.id,
                &identity("gh", "9", None, None, &["oss"]),
                &session("s3", "gh"),
                NOW,
            )
            .await;
        assert!(matches!(link, Err(StoreError::Disabled)), "{link:?}");
        assert_eq!(counts(&store).await, before);
        assert_eq!(store.user(&user.id).await.unwrap(), Some(disabled));
        assert!(store.session("s2").await.unwrap().is_none());

        assert!(store.set_disabled(&user.id, false).await.unwrap());
        let again = store
            .sign_in(&user.id, &changed, &session("s2", "corp"), NOW + 6)
            .await
            .unwrap();
        assert!(!again.disabled);
        assert_eq!(again.groups, vec!["admins".to_string()]);
        assert!(!store.set_disabled("no-such-user", true).await.unwrap());
    }

    async fn sessions_round_trip_and_revoke(store: Arc<dyn UserStore>) {
        let user = store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        store
            .sign_in(&user.id, &ada(), &session("s2", "corp"), NOW + 1)
            .await
            .unwrap();
        let mut bare = session("s3", "corp");
        bare.oidc_sid = None;
        bare.id_token = None;
        store
            .sign_in(&user.id, &ada(), &bare, NOW + 2)
            .await
            .unwrap();

        let (record, owner) = store.session("s1").await.unwrap().unwrap();
        assert_eq!(owner.id, user.id);
        assert_eq!(owner.groups, user.groups);
        assert_eq!(
            (
                record.id.as_str(),
                record.source.as_str(),
                record.created_at,
                record.expires_at,
                record.revoked
            ),
            ("s1", "corp", NOW, NOW + 3600, false)
        );
        assert_eq!(record.oidc_sid.as_deref(), Some("op-s1"));
        assert_eq!(record.claims.as_deref(), Some(r#"{"sid":"s1"}"#));
        assert_eq!(record.id_token.as_deref(), Some("token-s1"));
        let (bare_record, _) = store.session("s3").await.unwrap().unwrap();
        assert_eq!((bare_record.oidc_sid, bare_record.id_token), (None, None));
        assert!(store.session("nope").await.unwrap().is_none());

        let revoked = |sid: &'static str| {
            let store = store.clone();
            async move { store.session(sid).await.unwrap().unwrap().0.revoked }
        };
        store.revoke_session("s1").await.unwrap();
        assert!(revoked("s1").await);
        assert!(!revoked("s2").await);
        store.revoke_session("nope").await.unwrap();

        assert_eq!(store.revoke_user_sessions(&user.id).await.unwrap(), 2);
        assert!(revoked("s2").await && revoked("s3").await);
        assert_eq!(store.revoke_user_sessions(&user.id).await.unwrap(), 0);

        // Back-channel logout: by the provider's sid, by the subject, never by neither.
        store
            .sign_in(&user.id, &ada(), &session("s4", "corp"), NOW + 3)
            .await
            .unwrap();
        store
            .sign_in(&user.id, &ada(), &session("s5", "corp"), NOW + 4)
            .await
            .unwrap();
        assert_eq!(
            store
                .revoke_sessions_by_oidc("corp", None, None)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .revoke_sessions_by_oidc("gh", Some("op-s4"), None)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .revoke_sessions_by_oidc("corp", Some("op-s4"), Some("2"))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .revoke_sessions_by_oidc("corp", Some("op-s4"), None)
                .await
                .unwrap(),
            1
        );
        assert!(revoked("s4").await);
        assert!(!revoked("s5").await);
        assert_eq!(
            store
                .revoke_sessions_by_oidc("corp", None, Some("1"))
                .await
                .unwrap(),
            1
        );
        assert!(revoked("s5").await);
        // Through `logout_once`: the token id is spent with the revocation,
        // once; a replay writes nothing.
        store
            .sign_in(&user.id, &ada(), &session("s6", "corp"), NOW + 5)
            .await
            .unwrap();
        let logout = |jti: &'static str, sid: Option<&'static str>| {
            let store = store.clone();
            async move {
                store
                    .logout_once(jti, NOW + 900, NOW, "corp", sid, None)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(logout("jti-1", Some("op-s6")).await, Some(1));
        assert!(revoked("s6").await);
        assert_eq!(logout("jti-1", Some("op-s6")).await, None);
        assert_eq!(logout("jti-2", None).await, Some(0));
    }

    async fn concurrent_enroll_of_one_identity_creates_one_user(store: Arc<dyn UserStore>) {
        const TASKS: usize = 8;
        const ROUNDS: usize = 3;
        for round in 0..ROUNDS {
            let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
            let mut tasks = Vec::new();
            for task in 0..TASKS {
                let store = store.clone();
                let barrier = barrier.clone();
                tasks.push(tokio::spawn(async move {
                    let who = identity(
                        "corp",
                        &format!("race-{round}"),
                        Some("racer"),
                        None,
                        &["g1", "g2"],
                    );
                    barrier.wait().await;
                    store
                        .enroll(&who, &session(&format!("race-{round}-{task}"), "corp"), NOW)
                        .await
                }));
            }
            let mut won = Vec::new();
            for task in tasks {
                match task.await.unwrap() {
                    Ok(user) => won.push(user),
                    Err(StoreError::AlreadyConnected) => {}
                    Err(e) => panic!("round {round}: unexpected error {e:?}"),
                }
            }
            assert_eq!(won.len(), 1, "round {round}: {won:?}");
            let winner = won.pop().unwrap();
            let expected = if round == 0 {
                "racer".to_string()
            } else {
                format!("racer-{}", round + 1)
            };
            assert_eq!(winner.username, expected);
            assert_eq!(
                store
                    .user_by_connection("corp", &format!("race-{round}"))
                    .await
                    .unwrap(),
                Some(winner)
            );
        }
        let n = ROUNDS as u64;
        assert_eq!(
            counts(&store).await,
            StoreCounts {
                users: n,
                connections: n,
                groups: 2 * n,
                sessions: n
            }
        );
    }

    async fn link_refuses_a_second_identity_of_the_same_source(store: Arc<dyn UserStore>) {
        let ada_user = store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        let bob = store
            .enroll(
                &identity("corp", "2", Some("bob"), None, &[]),
                &session("s2", "corp"),
                NOW,
            )
            .await
            .unwrap();
        let before = counts(&store).await;
        // Bob's identity is taken, and Ada already has a "corp" connection.
        let taken = store
            .link(
                &ada_user.id,
                &identity("corp", "2", None, None, &["x"]),
                &session("s3", "corp"),
                NOW,
            )
            .await;
        assert!(
            matches!(taken, Err(StoreError::AlreadyConnected)),
            "{taken:?}"
        );
        let second = store
            .link(
                &ada_user.id,
                &identity("corp", "3", None, None, &["x"]),
                &session("s3", "corp"),
                NOW,
            )
            .await;
        assert!(
            matches!(second, Err(StoreError::AlreadyConnected)),
            "{second:?}"
        );
        assert_eq!(counts(&store).await, before);
        assert_eq!(
            store.user_by_connection("corp", "2").await.unwrap(),
            Some(bob)
        );
        assert_eq!(store.user(&ada_user.id).await.unwrap(), Some(ada_user));
    }

    async fn unlink_removes_the_connection_its_groups_and_its_sessions(store: Arc<dyn UserStore>) {
        let user = store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        store
            .link(
                &user.id,
                &identity("gh", "77", None, None, &["oss"]),
                &session("s2", "gh"),
                NOW,
            )
            .await
            .unwrap();
        let bob = store
            .enroll(
                &identity("corp", "2", Some("bob"), None, &[]),
                &session("s3", "corp"),
                NOW,
            )
            .await
            .unwrap();

        let listed = store.list_users().await.unwrap();
        let summary: Vec<(String, Vec<String>)> = listed
            .iter()
            .map(|(u, cs)| {
                (
                    u.username.clone(),
                    cs.iter()
                        .map(|c| format!("{}:{}", c.source, c.identifier))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "ada".to_string(),
                    vec!["corp:1".to_string(), "gh:77".into()]
                ),
                ("bob".to_string(), vec!["corp:2".to_string()])
            ]
        );
        assert_eq!(
            listed[0].0.groups,
            vec!["eng".to_string(), "ops".into(), "oss".into()]
        );

        assert!(store.unlink(&user.id, "gh").await.unwrap());
        assert!(!store.unlink(&user.id, "gh").await.unwrap());
        assert!(!store.unlink(&bob.id, "gh").await.unwrap());
        assert_eq!(store.user_by_connection("gh", "77").await.unwrap(), None);
        let after = store.user(&user.id).await.unwrap().unwrap();
        assert_eq!(after.groups, vec!["eng".to_string(), "ops".into()]);
        assert!(store.session("s2").await.unwrap().unwrap().0.revoked);
        assert!(!store.session("s1").await.unwrap().unwrap().0.revoked);
        assert_eq!(
            counts(&store).await,
            StoreCounts {
                users: 2,
                connections: 2,
                groups: 2,
                sessions: 3
            }
        );
    }

    async fn email_lookup_is_case_insensitive_and_refuses_ambiguity(store: Arc<dyn UserStore>) {
        let user = store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        assert_eq!(
            store.user_by_email("ADA@Example.com").await.unwrap(),
            Some(user)
        );
        assert_eq!(store.user_by_email("eve@example.com").await.unwrap(), None);
        store
            .enroll(
                &identity("gh", "5", Some("ada-gh"), Some("Ada@example.COM"), &[]),
                &session("s2", "gh"),
                NOW,
            )
            .await
            .unwrap();
        let two = store.user_by_email("ada@example.com").await;
        assert!(matches!(two, Err(StoreError::Ambiguous)), "{two:?}");
    }

    async fn ses06_a_use_is_recorded_at_most_once_per_interval(store: Arc<dyn UserStore>) {
        let user = store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        let last_used = |sid: &'static str| {
            let store = store.clone();
            async move { store.session(sid).await.unwrap().unwrap().0.last_used_at }
        };
        // A new session counts as used when it is created.
        assert_eq!(last_used("s1").await, NOW);
        // Within the interval of the recorded use: nothing is written.
        assert!(!store.touch_session("s1", NOW + 9, 10).await.unwrap());
        assert_eq!(last_used("s1").await, NOW);
        // Once the interval has passed: the use is recorded.
        assert!(store.touch_session("s1", NOW + 10, 10).await.unwrap());
        assert_eq!(last_used("s1").await, NOW + 10);
        // A late report of an older use never moves it back.
        assert!(!store.touch_session("s1", NOW + 5, 0).await.unwrap());
        assert_eq!(last_used("s1").await, NOW + 10);
        // Only this session moved; a revoked or unknown one is not written.
        store
            .sign_in(&user.id, &ada(), &session("s2", "corp"), NOW + 1)
            .await
            .unwrap();
        assert_eq!(last_used("s2").await, NOW + 1);
        store.revoke_session("s2").await.unwrap();
        assert!(!store.touch_session("s2", NOW + 100, 10).await.unwrap());
        assert_eq!(last_used("s2").await, NOW + 1);
        assert!(!store.touch_session("nope", NOW + 100, 10).await.unwrap());
        let listed = store.user_sessions(&user.id).await.unwrap();
        let by_id: Vec<(&str, i64)> = listed
            .iter()
            .map(|r| (r.id.as_str(), r.last_used_at))
            .collect();
        assert_eq!(by_id, vec![("s2", NOW + 1), ("s1", NOW + 10)]);
    }

    #[tokio::test]
    async fn ses06_sessions_from_before_the_migration_count_as_last_used_when_created() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("users.db").display());
        {
            // The schema as the previous release left it: the first migration only.
            let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
                .await
                .unwrap();
            let mut first = sqlx::migrate!("migrations/sqlite");
            first.migrations = std::borrow::Cow::Owned(first.migrations[..1].to_vec());
            first.run(&pool).await.unwrap();
            sqlx::query(
                "INSERT INTO users (id, username, created_at) VALUES ('u1', 'ada', 1); \
                 INSERT INTO sessions (id, user_id, source, created_at, expires_at) \
                 VALUES ('old', 'u1', 'corp', 1000, 5000)",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let store = open(&url).await.unwrap();
        let (record, _) = store.session("old").await.unwrap().unwrap();
        assert_eq!((record.created_at, record.last_used_at), (1000, 1000));
    }

    #[tokio::test]
    async fn ses06_postgres_sessions_from_before_the_migration_count_as_last_used_when_created() {
        in_fresh_postgres_schema(|url| async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let mut first = sqlx::migrate!("migrations/postgres");
            first.migrations = std::borrow::Cow::Owned(first.migrations[..1].to_vec());
            first.run(&pool).await.unwrap();
            for statement in [
                "INSERT INTO users (id, username, created_at) VALUES ('u1', 'ada', 1)",
                "INSERT INTO sessions (id, user_id, source, created_at, expires_at) \
                 VALUES ('old', 'u1', 'corp', 1000, 5000)",
            ] {
                sqlx::query(statement).execute(&pool).await.unwrap();
            }
            pool.close().await;
            let store = open(&url).await.unwrap();
            let (record, _) = store.session("old").await.unwrap().unwrap();
            assert_eq!((record.created_at, record.last_used_at), (1000, 1000));
        })
        .await;
    }

    /// The rows a store from before stable identity holds: ada enrolled through
    /// corp, then linked gh; a session without claims.
    const BEFORE_STABLE_IDENTITY: [&str; 5] = [
        "INSERT INTO users (id, username, email, created_at) VALUES ('u1', 'ada', 'ada@example.com', 1)",
        "INSERT INTO users (id, username, created_at) VALUES ('u2', 'nobody', 1)",
        "INSERT INTO connections (user_id, source, identifier, created_at) VALUES ('u1', 'gh', '77', 20)",
        "INSERT INTO connections (user_id, source, identifier, created_at) VALUES ('u1', 'corp', '1', 10)",
        "INSERT INTO sessions (id, user_id, source, created_at, expires_at, last_used_at) VALUES ('old', 'u1', 'gh', 1000, 5000, 1000)",
    ];

    /// After the migration: the home is the oldest connection's source, the
    /// email counts as unvouched, the old session has no claims.
    async fn assert_migrated_to_stable_identity(store: Arc<dyn UserStore>) {
        let ada = store.user("u1").await.unwrap().unwrap();
        assert_eq!(ada.home_source.as_deref(), Some("corp"));
        assert!(!ada.email_verified);
        assert_eq!(store.user("u2").await.unwrap().unwrap().home_source, None);
        let (record, _) = store.session("old").await.unwrap().unwrap();
        assert_eq!(record.claims, None);
        // The next sign-in through the home source with a vouched email says so.
        let signed = store
            .sign_in(
                "u1",
                &identity("corp", "1", None, Some("ada@example.com"), &[]),
                &session("new", "corp"),
                NOW,
            )
            .await
            .unwrap();
        assert!(signed.email_verified);
        assert_eq!(signed.username, "ada");
    }

    #[tokio::test]
    async fn a_store_from_before_stable_identity_gets_homes_and_unvouched_emails() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("users.db").display());
        {
            let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
                .await
                .unwrap();
            let mut before = sqlx::migrate!("migrations/sqlite");
            let kept: Vec<_> = before
                .migrations
                .iter()
                .filter(|m| m.version < 3)
                .cloned()
                .collect();
            before.migrations = std::borrow::Cow::Owned(kept);
            before.run(&pool).await.unwrap();
            for statement in BEFORE_STABLE_IDENTITY {
                sqlx::query(statement).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        assert_migrated_to_stable_identity(open(&url).await.unwrap()).await;
    }

    #[tokio::test]
    async fn a_postgres_store_from_before_stable_identity_gets_homes_and_unvouched_emails() {
        in_fresh_postgres_schema(|url| async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let mut before = sqlx::migrate!("migrations/postgres");
            let kept: Vec<_> = before
                .migrations
                .iter()
                .filter(|m| m.version < 3)
                .cloned()
                .collect();
            before.migrations = std::borrow::Cow::Owned(kept);
            before.run(&pool).await.unwrap();
            for statement in BEFORE_STABLE_IDENTITY {
                sqlx::query(statement).execute(&pool).await.unwrap();
            }
            pool.close().await;
            assert_migrated_to_stable_identity(open(&url).await.unwrap()).await;
        })
        .await;
    }

    #[tokio::test]
    async fn sqlite_memory_url_opens_and_keeps_its_data() {
        let store = open("sqlite::memory:").await.unwrap();
        let user = store
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        assert_eq!(store.user(&user.id).await.unwrap(), Some(user));
    }

    #[tokio::test]
    async fn a_reopened_sqlite_file_keeps_its_users() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("users.db").display());
        let user = open(&url)
            .await
            .unwrap()
            .enroll(&ada(), &session("s1", "corp"), NOW)
            .await
            .unwrap();
        let reopened = open(&url).await.unwrap();
        assert_eq!(reopened.user(&user.id).await.unwrap(), Some(user));
    }
}
