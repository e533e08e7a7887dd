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
//!
//! The log must also start over now and then. SQLite writes from the start of the log again only
//! when a write transaction begins with every frame copied back; under a steady load the writer
//! always begins while the last commit is still being copied, so the log grew without end (190
//! MB within ten seconds of `bench relay`), and each commit appended to it: growing the file was
//! an eighth of the writer thread's time. So once the log holds more than `RESTART_FRAMES`, the
//! checkpointer holds the writer's connection (writes wait) while it copies the frames of the
//! last commit or two, and releases it: the next commit starts the log over, where its pages are
//! still cached. The wait is a copy of a few hundred pages and two syncs, a millisecond or two.

use std::time::Duration;

use sqlx::{AnyPool, Row};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often the log is copied back.
const PERIOD: Duration = Duration::from_secs(1);

/// Past this many frames (16 MiB of 4 KiB pages) the log is made to start over.
const RESTART_FRAMES: i64 = 4096;

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
    /// writer's or a reader's); `writer` is the writers' pool, held while the log starts over.
    pub(crate) fn start(pool: AnyPool, writer: AnyPool) -> Self {
        let stop = CancellationToken::new();
        tokio::spawn(run(pool, writer, stop.clone()));
        Self {
            _stop: stop.drop_guard(),
        }
    }
}

async fn run(pool: AnyPool, writer: AnyPool, stop: CancellationToken) {
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
            Ok((log, copied)) if log > RESTART_FRAMES => {
                tracing::trace!(log, copied, "WAL checkpoint; the log starts over");
                if let Err(e) = start_over(&pool, &writer).await {
                    tracing::warn!(error = %e, "WAL checkpoint failed; trying again in a second");
                }
            }
            Ok((log, copied)) if log > 0 => {
                tracing::trace!(log, copied, "WAL checkpoint")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; trying again in a second"),
        }
    }
    pool.close().await;
}

/// Copies back the frames committed since the last checkpoint while no write runs, so that the
/// next write transaction begins with the whole log copied back and writes from its start. (It
/// does not when a reader still reads older frames: the next round tries again.)
async fn start_over(pool: &AnyPool, writer: &AnyPool) -> Result<(), sqlx::Error> {
    let _no_writes = writer.acquire().await?;
    let held = std::time::Instant::now();
    let (log, copied) = checkpoint(pool).await?;
    // How long writes waited: a stall every message in flight sees.
    tracing::debug!(
        held_ms = held.elapsed().as_secs_f64() * 1000.0,
        log,
        copied,
        "WAL checkpoint holding the writer"
    );
    Ok(())
}

/// One PASSIVE checkpoint: the log's frames, and those copied back.
async fn checkpoint(pool: &AnyPool) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    Ok((row.try_get(1)?, row.try_get(2)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{sqlite_pool, sqlite_reader_settings, sqlite_writer_settings};

    /// The store's writer pool, as `Store::open` makes it, on a new file with a table `t`.
    async fn writer_with_table(path: &std::path::Path) -> (String, AnyPool) {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        sqlx::any::install_default_drivers();
        let writer = sqlite_pool(&url, 1, sqlite_writer_settings)
            .await
            .expect("writer");
        sqlx::query("CREATE TABLE t (x TEXT)")
            .execute(&writer)
            .await
            .expect("table");
        (url, writer)
    }

    /// A write transaction of `rows` rows of `bytes` bytes, begun (its snapshot taken) and left
    /// open.
    async fn writing(
        writer: &AnyPool,
        rows: usize,
        bytes: usize,
    ) -> sqlx::Transaction<'static, sqlx::Any> {
        let mut tx = writer.begin().await.expect("begin");
        for _ in 0..rows {
            sqlx::query("INSERT INTO t (x) VALUES ($1)")
                .bind("x".repeat(bytes))
                .execute(&mut *tx)
                .await
                .expect("insert");
        }
        tx
    }

    /// Frames in the log (copying them back, as every round does).
    async fn log_frames(checkpointer: &AnyPool) -> i64 {
        checkpoint(checkpointer).await.expect("checkpoint").0
    }

    /// Under a steady load the writer begins before the last commit is copied back, so the log
    /// only grows; after `start_over` the next commit writes from the log's start.
    #[tokio::test]
    async fn the_log_starts_over_after_start_over_and_grows_without_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The store's own pools, as `Store::open` makes them.
        let (url, writer) = writer_with_table(&dir.path().join("ckpt.db")).await;
        let checkpointer = sqlite_pool(&url, 1, sqlite_reader_settings)
            .await
            .expect("checkpointer");

        // Each commit begins while the one before is being copied back.
        let mut sizes = Vec::new();
        let mut tx = writing(&writer, 20, 1000).await;
        for _ in 0..3 {
            log_frames(&checkpointer).await;
            tx.commit().await.expect("commit");
            tx = writing(&writer, 20, 1000).await;
            sizes.push(log_frames(&checkpointer).await);
        }
        assert!(
            sizes.windows(2).all(|w| w[1] > w[0]),
            "without starting over the log grows: {sizes:?}"
        );
        let grown = sizes[2];

        // The last commit is not copied back yet when the checkpointer starts the log over.
        log_frames(&checkpointer).await;
        tx.commit().await.expect("commit");
        start_over(&checkpointer, &writer)
            .await
            .expect("start over");
        writing(&writer, 20, 1000)
            .await
            .commit()
            .await
            .expect("commit");
        let after = log_frames(&checkpointer).await;
        assert!(
            after < grown / 2,
            "the commit after start_over writes from the log's start: {after} frames, {grown} before"
        );
    }

    /// The writer's page cache is small, but a transaction that changes far more pages than it
    /// holds keeps them until its commit instead of spilling them to the log as it goes.
    #[tokio::test]
    async fn the_writer_keeps_a_large_transaction_out_of_the_log_until_it_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, writer) = writer_with_table(&dir.path().join("spill.db")).await;
        let wal = || std::fs::metadata(dir.path().join("spill.db-wal")).map_or(0, |m| m.len());
        let before = wal();
        // About 12 MiB: six times the writer's page cache.
        let tx = writing(&writer, 3000, 4000).await;
        let during = wal();
        tx.commit().await.expect("commit");
        let after = wal();
        assert!(
            during - before < 1 << 20,
            "pages spilled to the log before the commit: {before} -> {during} bytes"
        );
        assert!(
            after - before > 10 << 20,
            "the commit wrote the transaction: {before} -> {after} bytes"
        );
    }
}
