//! The SQLite write thread: one OS thread owning a plain (rusqlite) connection to the database
//! file, on which the relay's hot write batches run, each as one transaction.
//!
//! Why it exists: on SQLite the relay is as fast as its one writer. Through sqlx's `Any` driver
//! every statement of a batch crossed from a tokio task to sqlx's connection thread and back, its
//! arguments converted on the way. Measured (session 10): the batching writers were 90-100% busy
//! while sqlx's connection thread worked 23% of the time, and the `Any` layer and the hand-overs
//! cost more than SQLite's own work. Here a whole batch crosses once: its closure runs every
//! statement on this thread, on cached prepared statements, so a statement per row is cheap.
//!
//! SQLite has one writer at a time. The sqlx write pool (one connection) keeps the other writes;
//! both take the same fair [`WriteGate`] before writing, so a write waits in the process for its
//! turn instead of sleeping in SQLite's busy handler (or failing on a stale read snapshot).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{mpsc, Arc};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use crate::store::StoreError;

/// The turn to write on SQLite: held by the write thread for each transaction and by the sqlx
/// write pool's users for theirs. A tokio mutex, so waiters are served in order.
pub(crate) type WriteGate = Arc<tokio::sync::Mutex<()>>;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Prepared statements kept per connection: the hot paths use about a dozen.
const STATEMENT_CACHE: usize = 64;

/// The handle of the write thread; the thread ends when every handle is dropped.
pub(crate) struct SqliteWriter {
    jobs: mpsc::Sender<Job>,
    gate: WriteGate,
}

/// Turns a rusqlite error into the store's, naming what was being done.
pub(crate) fn lite(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Sqlite(what, e)
}

impl SqliteWriter {
    /// Opens `path` (created and migrated already by the sqlx pool) and starts the thread.
    pub(crate) fn open(path: &Path, gate: WriteGate) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(lite("opening the SQLite write thread"))?;
        // The same settings as the sqlx connections (`store::sqlite_pragmas`).
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
        )
        .map_err(lite("setting up the SQLite write thread"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self { jobs, gate })
    }

    /// Runs `work` in one immediate transaction on the write thread, committed when it returns
    /// `Ok` and rolled back otherwise.
    pub(crate) async fn transaction<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let gate = self.gate.clone();
        let job: Job = Box::new(move |conn| {
            let _turn = gate.blocking_lock();
            // A panic is a bug, but it must fail this batch only, not every write after it.
            let result = catch_unwind(AssertUnwindSafe(|| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(lite("starting a transaction"))?;
                let out = work(&tx)?;
                tx.commit().map_err(lite("committing"))?;
                Ok(out)
            }))
            .unwrap_or_else(|_| {
                tracing::error!("a batch panicked on the SQLite write thread; rolled back");
                Err(StoreError::Corrupt("a write batch panicked".into()))
            });
            let _ = answer.send(result);
        });
        let stopped = || StoreError::Corrupt("the SQLite write thread stopped".into());
        self.jobs.send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}
