//! Background purge of store rows that can never be used again (expired and
//! revoked sessions), in bounded batches so no statement holds locks for
//! long; every replica runs it, and a row two replicas pick is deleted once.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts};

use crate::identity::store::{Purge, StoreError, UserStore};

/// Rows deleted per statement.
pub const BATCH: u32 = 500;
/// Time between two purges (fixed; replicas add up to a minute of jitter).
pub const INTERVAL: Duration = Duration::from_secs(600);
/// Statements per table and purge: a backlog larger than this many batches
/// is finished by the next purges instead of one long run.
const MAX_BATCHES: u32 = 1000;

/// Beyond `session.idle_timeout`, how long a session must have gone unused
/// before it is purged: a use is written to the store up to a minute late
/// (`session::idle::MAX_TOUCH_INTERVAL`), and replicas' clocks differ a little.
pub const IDLE_MARGIN: Duration = Duration::from_secs(120);

/// The `session.idle_timeout` in force now (a reload may change it).
pub type IdleTimeout = Box<dyn Fn() -> Option<Duration> + Send + Sync>;

/// The purge job and its metric.
pub struct Housekeeping {
    store: Arc<dyn UserStore>,
    purged: IntCounterVec,
    /// The wall clock: rows expired before its `now` go.
    clock: crate::clock::Clock,
    /// Sessions unused longer than this (plus [`IDLE_MARGIN`]) go too.
    idle_timeout: IdleTimeout,
}

impl Housekeeping {
    /// A purge job over `store`, counting into `portcullis_store_purged_rows_total{table}`.
    pub fn new(
        store: Arc<dyn UserStore>,
        clock: crate::clock::Clock,
    ) -> Result<Self, prometheus::Error> {
        let purged = IntCounterVec::new(
            Opts::new(
                "store_purged_rows_total",
                "Rows deleted by the background purge, by table",
            ),
            &["table"],
        )?;
        for t in Purge::ALL {
            // Present at 0 from the start, so a dashboard sees the series.
            purged.with_label_values(&[t.table()]);
        }
        Ok(Housekeeping {
            store,
            purged,
            clock,
            idle_timeout: Box::new(|| None),
        })
    }

    /// Also purges sessions unused for longer than `idle_timeout` says.
    pub fn with_idle_timeout(mut self, idle_timeout: IdleTimeout) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// The metric, for the gateway's registry.
    pub fn collector(&self) -> Box<dyn prometheus::core::Collector> {
        Box::new(self.purged.clone())
    }

    /// Purges every table once: batches of `batch` rows until one deletes
    /// fewer (or `MAX_BATCHES` ran). Returns the rows deleted.
    pub async fn purge_once(&self, now: i64, batch: u32) -> Result<u64, StoreError> {
        let mut total = 0;
        for table in Purge::ALL {
            total += self.purge(table, now, batch).await?;
        }
        if let Some(timeout) = (self.idle_timeout)() {
            let unused = timeout.saturating_add(IDLE_MARGIN).as_secs();
            let unused_since = now.saturating_sub(i64::try_from(unused).unwrap_or(i64::MAX));
            total += self
                .purge(Purge::IdleSessions { unused_since }, now, batch)
                .await?;
        }
        Ok(total)
    }

    /// Batches of `batch` rows of `table` until one deletes fewer (or
    /// `MAX_BATCHES` ran).
    async fn purge(&self, table: Purge, now: i64, batch: u32) -> Result<u64, StoreError> {
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            let n = self.store.purge_batch(table, now, batch).await?;
            self.purged.with_label_values(&[table.table()]).inc_by(n);
            total += n;
            if n < u64::from(batch) {
                break;
            }
        }
        Ok(total)
    }

    /// Purges every `INTERVAL` (the first run a jittered minute after start)
    /// until the runtime stops; failures are logged and retried next time.
    pub async fn run(self) {
        // The jitter only spreads replicas' purges apart: without random
        // values they purge on the minute, which is still correct.
        let jitter = Duration::from_millis(crate::random::u64().unwrap_or(0) % 60_000);
        tokio::time::sleep(Duration::from_secs(60) + jitter).await;
        loop {
            let now = i64::try_from(self.clock.now_unix()).unwrap_or(i64::MAX);
            match self.purge_once(now, BATCH).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "purged expired and revoked rows"),
                Err(e) => tracing::warn!(error = %e, "store purge failed; retried later"),
            }
            tokio::time::sleep(INTERVAL + jitter).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::identity::{Identity, NewSession};

    const NOW: i64 = 1_700_000_000;

    fn identity() -> Identity {
        Identity {
            source: "corp".into(),
            identifier: "1".into(),
            username: Some("ada".into()),
            email: None,
            email_verified: false,
            name: None,
            groups: Vec::new(),
        }
    }

    fn session(id: &str) -> NewSession {
        NewSession {
            id: id.into(),
            source: "corp".into(),
            expires_at: NOW + 86_400,
            oidc_sid: None,
            id_token: None,
            claims: None,
            tokens: None,
        }
    }

    #[tokio::test]
    async fn a_session_unused_past_idle_timeout_and_its_margin_is_purged_and_only_then() {
        let store = crate::identity::store::open("sqlite::memory:")
            .await
            .unwrap();
        let user = store.enroll(&identity(), &session("s"), NOW).await.unwrap();
        // The idle timeout in force, as a reload would change it (0: none).
        let timeout = Arc::new(AtomicU64::new(0));
        let read = timeout.clone();
        let job = Housekeeping::new(store.clone(), crate::clock::Clock::system())
            .unwrap()
            .with_idle_timeout(Box::new(move || {
                Some(read.load(Ordering::Relaxed))
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs)
            }));
        let left = || async { store.user_sessions(&user.id).await.unwrap().len() };
        // No idle timeout: a session unused for a day stays until it expires.
        assert_eq!(job.purge_once(NOW + 86_000, 500).await.unwrap(), 0);
        timeout.store(3600, Ordering::Relaxed);
        let margin = IDLE_MARGIN.as_secs() as i64;
        // Idle, but a use may not be written yet: kept within the margin.
        assert_eq!(job.purge_once(NOW + 3600 + margin, 500).await.unwrap(), 0);
        assert_eq!(left().await, 1);
        assert_eq!(
            job.purge_once(NOW + 3600 + margin + 1, 500).await.unwrap(),
            1
        );
        assert_eq!(left().await, 0);
    }
}
