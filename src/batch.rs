//! Taking what waits in a queue: the writers that group work (customer messages, bot turns,
//! agent replies, delivered marks, the console feed) each take the first job, then everything
//! already waiting behind it, up to a bound. The batched readers (`answer_batches`) do the same
//! with questions asked once per message on the hot paths.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

/// Moves jobs already waiting in `queue` into `into`, until it holds `max`.
pub fn take_waiting<T>(queue: &mut UnboundedReceiver<T>, into: &mut Vec<T>, max: usize) {
    while into.len() < max {
        match queue.try_recv() {
            Ok(job) => into.push(job),
            Err(_) => break,
        }
    }
}

/// Waits for a job, then takes those waiting behind it: at most `max` in all. None when the
/// queue is closed.
pub async fn recv_batch<T>(queue: &mut UnboundedReceiver<T>, max: usize) -> Option<Vec<T>> {
    let first = queue.recv().await?;
    let mut jobs = vec![first];
    take_waiting(queue, &mut jobs, max);
    Some(jobs)
}

/// Records one batch of a writer: its size now, and how long it took when dropped. The relay
/// benchmark reads both (`frontdesk_<writer>_batch_size` and `_batch_seconds`) to show how much
/// each writer grouped, how long its batches took and how much of the run it was busy.
pub struct BatchTimer {
    writer: &'static str,
    started: std::time::Instant,
}

impl BatchTimer {
    /// A batch of `len` jobs for `writer` (as in `frontdesk_{writer}_batch_size`) starts now.
    pub fn start(writer: &'static str, len: usize) -> Self {
        metrics::histogram!(format!("frontdesk_{writer}_batch_size")).record(len as f64);
        Self {
            writer,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for BatchTimer {
    fn drop(&mut self) {
        metrics::histogram!(format!("frontdesk_{}_batch_seconds", self.writer))
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// A question for a batched reader: the key asked about, and where its answer goes.
pub struct Question<K, V, E> {
    key: K,
    reply: oneshot::Sender<Result<Option<V>, E>>,
}

/// Asks a batched reader about `key` and waits for the answer; `None` when the reader is gone
/// (the caller then reads alone).
pub async fn ask<K, V, E>(
    queue: &UnboundedSender<Question<K, V, E>>,
    key: K,
) -> Option<Result<Option<V>, E>> {
    let (reply, answer) = oneshot::channel();
    queue.send(Question { key, reply }).ok()?;
    answer.await.ok()
}

/// A batched reader: answers the questions waiting when it is free with one `read` of all their
/// keys (each key once; `read` leaves out the keys it found nothing for). If that read fails,
/// each question is read alone, so one bad key cannot fail the others.
///
/// Why: a question asked once per message (the router's next turn) cost a statement each, and
/// every statement and row is a hand-over between the async side and a database connection's
/// thread; those hand-overs, not the database's work, took the CPU.
pub async fn answer_batches<K, V, E, F, Fut>(
    mut queue: UnboundedReceiver<Question<K, V, E>>,
    max: usize,
    reader: &'static str,
    read: F,
) where
    K: Eq + Hash + Clone,
    V: Clone,
    E: std::fmt::Display,
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<HashMap<K, V>, E>>,
{
    while let Some(questions) = recv_batch(&mut queue, max).await {
        let _timer = BatchTimer::start(reader, questions.len());
        let mut keys: Vec<K> = Vec::with_capacity(questions.len());
        let mut asked = std::collections::HashSet::with_capacity(questions.len());
        for q in &questions {
            if asked.insert(&q.key) {
                keys.push(q.key.clone());
            }
        }
        let unique = keys.len() == questions.len();
        match read(keys).await {
            Ok(mut found) => {
                for q in questions {
                    // A key asked twice in one batch gets the same answer twice.
                    let answer = if unique {
                        found.remove(&q.key)
                    } else {
                        found.get(&q.key).cloned()
                    };
                    let _ = q.reply.send(Ok(answer));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, questions = questions.len(), "a batched read ({reader}) failed; reading each alone");
                for q in questions {
                    let answer = read(vec![q.key.clone()])
                        .await
                        .map(|mut found| found.remove(&q.key));
                    let _ = q.reply.send(answer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Questions waiting together are read at once, each key once; a failed batch is read key by
    /// key, and only the bad key fails.
    #[tokio::test]
    async fn waiting_questions_are_answered_by_one_read() {
        let (queue, questions) = tokio::sync::mpsc::unbounded_channel();
        let reads = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u32>>::new()));
        let log = reads.clone();
        let reader = tokio::spawn(answer_batches(
            questions,
            64,
            "test_read",
            move |keys: Vec<u32>| {
                log.lock().expect("log").push(keys.clone());
                async move {
                    if keys.contains(&13) {
                        return Err(format!("cannot read {keys:?}"));
                    }
                    Ok(keys
                        .into_iter()
                        .filter(|k| k % 2 == 0)
                        .map(|k| (k, k * 10))
                        .collect::<HashMap<u32, u32>>())
                }
            },
        ));
        // Asked before the reader runs: one batch.
        let answers = futures_util::future::join_all([2, 3, 2, 4].map(|k| ask(&queue, k))).await;
        let answers: Vec<_> = answers
            .into_iter()
            .map(|a| a.expect("reader").expect("read"))
            .collect();
        assert_eq!(answers, [Some(20), None, Some(20), Some(40)]);
        assert_eq!(reads.lock().expect("log").clone(), [vec![2, 3, 4]]);

        reads.lock().expect("log").clear();
        let answers = futures_util::future::join_all([6, 13].map(|k| ask(&queue, k))).await;
        assert_eq!(answers[0].as_ref().expect("reader"), &Ok(Some(60)));
        assert!(answers[1].as_ref().expect("reader").is_err());
        assert_eq!(
            reads.lock().expect("log").clone(),
            [vec![6, 13], vec![6], vec![13]]
        );
        drop(queue);
        reader.await.expect("reader ends when the queue closes");
    }
}
