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

/// The purge job and its metric.
pub struct Housekeeping {
    store: Arc<dyn UserStore>,
    purged: IntCounterVec,
    /// The wall clock: rows expired before its `now` go.
    clock: crate::clock::Clock,
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
        })
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
            for _ in 0..MAX_BATCHES {
                let n = self.store.purge_batch(table, now, batch).await?;
                self.purged.with_label_values(&[table.table()]).inc_by(n);
                total += n;
                if n < u64::from(batch) {
                    break;
                }
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
                Ok(n) => tracing::info!(rows = n, "purged expired and revoked sessions"),
                Err(e) => tracing::warn!(error = %e, "store purge failed; retried later"),
            }
            tokio::time::sleep(INTERVAL + jitter).await;
        }
    }
}
