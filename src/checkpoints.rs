//! SQLite's WAL checkpoints, run in the background on a connection of their own.
//!
//! Why it exists: by default SQLite copies its write-ahead log back into the database file inside
//! the commit that takes the log past 1,000 pages, and syncs both files there. That commit is on the
//! single writer's thread, in customers' and agents' latency. The gateway's group commits dirty
//! hundreds of pages each, so it happened every few commits: in a profile of the relay benchmark's
//! customer phase, a sixth of the writer thread's time. Here no connection checkpoints on commit
//! (`wal_autocheckpoint = 0`). A task checkpoints once a second instead, in PASSIVE mode: it never
//! waits for or blocks the writer or a reader. A page written many times in that second is copied
//! back once.
//!
//! Durability does not change: a commit is in the log (synchronous = NORMAL) whether or not it
//! was copied back yet, and SQLite checkpoints when the last connection closes.

use std::time::Duration;

use sqlx::{AnyPool, Row};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often the log is copied back.
const PERIOD: Duration = Duration::from_secs(1);

/// Settings for every connection: no checkpoint on commit, and a log file cut back to 64 MiB
/// when it restarts (after a burst it would otherwise keep its largest size).
pub(crate) const PRAGMAS: &str =
    "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;";

/// Checkpoints until dropped (kept by the store; its clones share it).
pub(crate) struct Checkpoints {
    _stop: DropGuard,
}

impl Checkpoints {
    /// Starts checkpointing through `pool` (one connection of its own, so it never takes the
    /// writer's or a reader's).
    pub(crate) fn start(pool: AnyPool) -> Self {
        let stop = CancellationToken::new();
        tokio::spawn(run(pool, stop.clone()));
        Self {
            _stop: stop.drop_guard(),
        }
    }
}

async fn run(pool: AnyPool, stop: CancellationToken) {
    let mut every = tokio::time::interval(PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = every.tick() => {}
        }
        match checkpoint(&pool).await {
            // Frames in the log, and how many of them are in the database file now. Fewer when a
            // reader still reads older frames: the next round copies them.
            Ok((log, copied)) if log > 0 => {
                tracing::trace!(log, copied, "WAL checkpoint")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; trying again in a second"),
        }
    }
    pool.close().await;
}

/// One PASSIVE checkpoint: the log's frames, and those copied back.
async fn checkpoint(pool: &AnyPool) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    Ok((row.try_get(1)?, row.try_get(2)?))
}
