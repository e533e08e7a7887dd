//! The sqlx pool for writes, which takes the turn to write before each use.
//!
//! Why it exists: on SQLite two connections write, sqlx's (for everything but the hot batches)
//! and the write thread's (`sqlite_writer`). SQLite lets one write at a time; the other would
//! sleep in its busy handler, or fail outright when its transaction had read a snapshot that is
//! no longer the newest. Taking the shared [`WriteGate`] first makes them queue in the process.
//! On PostgreSQL there is no gate: writers run side by side there.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use tokio::sync::OwnedMutexGuard;

use crate::sqlite_writer::WriteGate;
use crate::store::{db, StoreError};

#[derive(Clone)]
pub(crate) struct WritePool {
    pool: AnyPool,
    gate: Option<WriteGate>,
}

/// A write transaction holding the turn to write; rolled back if dropped uncommitted.
pub(crate) struct WriteTx {
    tx: Transaction<'static, Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

/// A write connection holding the turn to write, for a single statement.
pub(crate) struct WriteConn {
    conn: PoolConnection<Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WritePool {
    pub(crate) fn new(pool: AnyPool, gate: Option<WriteGate>) -> Self {
        Self { pool, gate }
    }

    async fn turn(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.gate {
            Some(gate) => Some(gate.clone().lock_owned().await),
            None => None,
        }
    }

    /// Waits for the turn to write, then starts a transaction.
    pub(crate) async fn begin(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = self.turn().await;
        Ok(WriteTx {
            tx: self.pool.begin().await?,
            _turn: turn,
        })
    }

    /// Waits for the turn to write, then takes the connection.
    pub(crate) async fn conn(&self) -> Result<WriteConn, StoreError> {
        let turn = self.turn().await;
        Ok(WriteConn {
            conn: self
                .pool
                .acquire()
                .await
                .map_err(db("waiting for the database"))?,
            _turn: turn,
        })
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Deref for WriteTx {
    type Target = Transaction<'static, Any>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Deref for WriteConn {
    type Target = AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use crate::sqlite_writer::lite;
    use crate::store::Store;

    /// Read-then-write transactions on both SQLite writers at once: each must see the other's
    /// commits and none may fail. Without the shared turn, a sqlx transaction whose read snapshot
    /// went stale fails on its write ("database is locked"), or an increment is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_sqlite_writers_take_turns() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("gate.db").display());
        let store = Store::open(&url, 4).await.expect("open SQLite");
        sqlx::query("CREATE TABLE gate_test (n BIGINT NOT NULL); INSERT INTO gate_test VALUES (0)")
            .execute(&mut *store.write.conn().await.expect("turn"))
            .await
            .expect("scratch table");
        const EACH: i64 = 40;
        let mut tasks = Vec::new();
        for _ in 0..EACH {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = s.write.begin().await.expect("begin");
                let n: i64 = sqlx::query_scalar("SELECT n FROM gate_test")
                    .fetch_one(&mut **tx)
                    .await
                    .expect("read on sqlx");
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                sqlx::query("UPDATE gate_test SET n = $1")
                    .bind(n + 1)
                    .execute(&mut **tx)
                    .await
                    .expect("write on sqlx");
                tx.commit().await.expect("commit on sqlx");
            }));
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let writer = s.sqlite_writer().expect("SQLite has a write thread");
                writer
                    .transaction(|tx| {
                        let n: i64 = tx
                            .query_row("SELECT n FROM gate_test", [], |r| r.get(0))
                            .map_err(lite("reading"))?;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        tx.execute("UPDATE gate_test SET n = ?1", [n + 1])
                            .map_err(lite("writing"))?;
                        Ok(())
                    })
                    .await
                    .expect("write on the thread");
            }));
        }
        for task in tasks {
            task.await.expect("no writer failed");
        }
        let n: i64 = sqlx::query_scalar("SELECT n FROM gate_test")
            .fetch_one(&store.read)
            .await
            .expect("read");
        assert_eq!(n, 2 * EACH, "every increment of both writers is kept");
        store.close().await;
    }
}
