//! Agent replies on the fast path: group-committed, then handed straight to the outbox's
//! direct delivery.
//!
//! Why it exists: the relay between an agent and a customer is the path people feel most (an
//! agent types, the customer sees it). Storing a reply one transaction at a time cost six
//! statements on the database's single writer, then three more for the outbox worker to find,
//! claim and complete the delivery. Here the replies waiting when the writer is free share one
//! transaction of four statements whatever their number: one conditional update numbers the
//! messages of the conversations the agents still own (the ownership check, which also returns
//! where the reply goes, so a reply needs no read of its own), one looks for
//! older undelivered messages, and one multi-row insert each stores the messages and their outbox
//! rows. The outbox rows are written already reserved for this process (with the usual lease),
//! so the outbox delivers them at once in order, without a poll, and a crash leaves them to the
//! worker when the lease runs out: nothing is lost, nothing is delivered out of order.
//!
//! A reply to the web chat has no outbox row and needs no look for older ones: the widget reads
//! whatever it missed from the transcript (on reconnect, and on a gap in `seq`), so the reply is
//! published once after the commit, and a crash between the two loses nothing.
//!
//! On PostgreSQL each reply is stored by its own request, in its own transaction: writers there
//! run side by side (PostgreSQL groups their commits itself), and a transaction locking several
//! conversations could deadlock with one storing customer messages (see
//! `max_cross_conversation_batch`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use frontdesk_channels::now_ms;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::batch::take_waiting;
use crate::desk::DeskError;
use crate::outbox::Outbox;
use crate::store::{
    db, dynamic_query, max_cross_conversation_batch, placeholders, Delivery, Direct, NewMessage,
    Store, StoreError, TranscriptMessage,
};

/// Most replies stored in one transaction.
const MAX_BATCH: usize = 512;

/// An agent's reply to store.
struct Reply {
    conversation_id: String,
    agent_id: String,
    message: NewMessage,
}

/// Where a reply goes: read by the statement that numbers it.
struct Destination {
    seq: i64,
    contact_id: String,
    channel: String,
    contact_external_id: String,
}

/// One reply waiting for the writer.
struct Job {
    reply: Reply,
    answer: oneshot::Sender<Result<Option<TranscriptMessage>, DeskError>>,
}

/// Stores agents' replies: through the batching writer (SQLite), or each in its request
/// (PostgreSQL).
pub struct Replies {
    store: Store,
    outbox: Arc<Outbox>,
    lease_ms: i64,
    /// The batching writer's queue; none on PostgreSQL.
    queue: Option<mpsc::UnboundedSender<Job>>,
}

impl Replies {
    /// Starts the writer task where batches are used; it runs until `Replies` is dropped.
    pub fn start(store: Store, outbox: Arc<Outbox>, lease_ms: i64) -> Self {
        let max_batch = max_cross_conversation_batch(store.backend(), MAX_BATCH);
        let queue = (max_batch > 1).then(|| {
            let (queue, jobs) = mpsc::unbounded_channel();
            tokio::spawn(run(
                store.clone(),
                outbox.clone(),
                lease_ms,
                max_batch,
                jobs,
            ));
            queue
        });
        Self {
            store,
            outbox,
            lease_ms,
            queue,
        }
    }

    /// Stores an agent's reply while that agent owns the conversation, and queues its delivery.
    /// Returns the message as stored, or `None` when the agent does not own the conversation (or
    /// there is no such conversation): the caller finds out which.
    pub async fn post(
        &self,
        conversation_id: &str,
        agent_id: &str,
        message: NewMessage,
    ) -> Result<Option<TranscriptMessage>, DeskError> {
        let reply = Reply {
            conversation_id: conversation_id.to_string(),
            agent_id: agent_id.to_string(),
            message,
        };
        let Some(queue) = &self.queue else {
            let lease_until = now_ms() + self.lease_ms;
            let posted = match self
                .store
                .post_replies(&[&reply], lease_until, &self.outbox)
                .await
            {
                Ok(mut r) => r.pop().unwrap_or(Posted::NotOwned),
                Err(e) => Posted::Failed(e),
            };
            let (answer, direct) = posted.answer(reply);
            if let Some(d) = direct {
                self.outbox.deliver_now(vec![d]).await;
            }
            return answer;
        };
        let (answer, answered) = oneshot::channel();
        let closed = || DeskError::Store(StoreError::Corrupt("the reply writer stopped".into()));
        queue.send(Job { reply, answer }).map_err(|_| closed())?;
        answered.await.map_err(|_| closed())?
    }
}

async fn run(
    store: Store,
    outbox: Arc<Outbox>,
    lease_ms: i64,
    max_batch: usize,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    // Replies to a conversation already in the batch wait for the next one: each conversation is
    // numbered once per transaction, and its replies keep their order.
    let mut carried: Vec<Job> = Vec::new();
    loop {
        if carried.is_empty() {
            match queue.recv().await {
                Some(job) => carried.push(job),
                None => return,
            }
        }
        take_waiting(&mut queue, &mut carried, max_batch * 4);
        let mut batch = Vec::new();
        let mut later = Vec::new();
        let mut in_batch = HashSet::new();
        for job in carried.drain(..) {
            if batch.len() < max_batch && in_batch.insert(job.reply.conversation_id.clone()) {
                batch.push(job);
            } else {
                later.push(job);
            }
        }
        carried = later;
        let _timer = crate::batch::BatchTimer::start("reply", batch.len());
        let lease_until = now_ms() + lease_ms;
        let replies: Vec<&Reply> = batch.iter().map(|j| &j.reply).collect();
        let results = match store.post_replies(&replies, lease_until, &outbox).await {
            Ok(r) => r,
            Err(e) if batch.len() > 1 => {
                // One bad reply must not fail the others: each alone.
                tracing::warn!(error = %e, replies = batch.len(), "a reply batch failed; storing each alone");
                let mut each = Vec::with_capacity(batch.len());
                for reply in &replies {
                    each.push(
                        match store.post_replies(&[reply], lease_until, &outbox).await {
                            Ok(mut r) => r.pop().unwrap_or(Posted::NotOwned),
                            Err(e) => Posted::Failed(e),
                        },
                    );
                }
                each
            }
            Err(e) => vec![Posted::Failed(e)],
        };
        let mut direct = Vec::new();
        for (job, result) in batch.into_iter().zip(results) {
            let (answer, d) = result.answer(job.reply);
            direct.extend(d);
            let _ = job.answer.send(answer);
        }
        if !direct.is_empty() {
            outbox.deliver_now(direct).await;
        }
    }
}

/// What became of one reply of a batch.
enum Posted {
    Stored {
        seq: i64,
        direct: Box<Direct>,
    },
    /// The agent does not own the conversation (any more).
    NotOwned,
    Failed(StoreError),
}

impl Posted {
    /// What the agent is told (the reply as stored), and what the outbox delivers.
    fn answer(
        self,
        reply: Reply,
    ) -> (Result<Option<TranscriptMessage>, DeskError>, Option<Direct>) {
        match self {
            Posted::Stored { seq, direct } => {
                let stored = TranscriptMessage::stored(
                    &reply.conversation_id,
                    seq,
                    direct.delivery.message_created_at,
                    reply.message,
                );
                (Ok(Some(stored)), Some(*direct))
            }
            Posted::NotOwned => (Ok(None), None),
            Posted::Failed(e) => (Err(DeskError::Store(e)), None),
        }
    }
}

impl Store {
    /// Stores a batch of agent replies (one per conversation) in one transaction. A reply whose
    /// agent no longer owns the conversation is refused, the others are stored. `outbox` says
    /// which channels replay from the transcript: their replies get no outbox row.
    async fn post_replies(
        &self,
        jobs: &[&Reply],
        lease_until: i64,
        outbox: &Outbox,
    ) -> Result<Vec<Posted>, StoreError> {
        let now = now_ms();
        let mut tx = self
            .write
            .begin()
            .await
            .map_err(db("starting a transaction"))?;

        // Number the messages where the agent still owns the conversation, and read where each
        // goes. This locks those rows on PostgreSQL first, so the look for older deliveries below
        // sees every earlier commit.
        // Parameters in order, each once, so that they are cheap to bind (`dynamic_query`).
        let n = jobs.len();
        let cases: String = (0..n)
            .map(|i| format!(" WHEN ${} THEN ${}", 3 + n + 2 * i, 4 + n + 2 * i))
            .collect();
        let sql = format!(
            "UPDATE conversations SET last_seq = last_seq + 1, updated_at = $1, \
             last_message_at = $2 WHERE id IN ({}) AND status = 'assigned' \
             AND assignee = CASE id{cases} END RETURNING id, last_seq, contact_id, channel, \
             (SELECT i.external_id FROM contact_identities i WHERE i.contact_id = \
             conversations.contact_id AND i.channel = conversations.channel) AS contact_external_id",
            placeholders(3, n)
        );
        let mut q = dynamic_query(self.backend(), sql).bind(now).bind(now);
        for job in jobs {
            q = q.bind(&job.conversation_id);
        }
        for job in jobs {
            q = q.bind(&job.conversation_id).bind(&job.agent_id);
        }
        let rows = q
            .fetch_all(&mut *tx)
            .await
            .map_err(db("numbering replies"))?;
        let mut destinations: HashMap<String, Destination> = HashMap::new();
        for r in &rows {
            let get = |column: &str| -> Result<String, StoreError> {
                r.try_get(column).map_err(db("numbering replies"))
            };
            destinations.insert(
                get("id")?,
                Destination {
                    seq: r.try_get("last_seq").map_err(db("numbering replies"))?,
                    contact_id: get("contact_id")?,
                    channel: get("channel")?,
                    contact_external_id: get("contact_external_id")?,
                },
            );
        }
        let owned: Vec<(&&Reply, &Destination)> = jobs
            .iter()
            .filter_map(|j| destinations.get(&j.conversation_id).map(|d| (j, d)))
            .collect();
        if owned.is_empty() {
            tx.commit().await.map_err(db("committing replies"))?;
            return Ok(jobs.iter().map(|_| Posted::NotOwned).collect());
        }

        // Deliveries still pending in these conversations: the new ones must wait for them.
        // (Not for a channel that replays from the transcript: nothing of it waits.)
        let outbox_rows: Vec<bool> = owned
            .iter()
            .map(|(_, to)| !outbox.replays_from_store(&to.channel))
            .collect();
        let ids: Vec<&str> = owned
            .iter()
            .zip(&outbox_rows)
            .filter(|(_, row)| **row)
            .map(|((j, _), _)| j.conversation_id.as_str())
            .collect();
        let mut pending = Store::pending_deliveries(&mut tx, &ids).await?;

        // The messages and their outbox rows, reserved for this process until `lease_until`.
        let deliveries: Vec<Delivery> = owned
            .iter()
            .zip(outbox_rows)
            .map(|((job, to), outbox_row)| {
                Delivery::new_row(
                    (
                        &job.conversation_id,
                        &to.contact_id,
                        &to.channel,
                        &to.contact_external_id,
                    ),
                    to.seq,
                    &job.message,
                    now,
                    (1, lease_until),
                    outbox_row,
                )
            })
            .collect();
        let rows: Vec<(&Delivery, &NewMessage)> = deliveries
            .iter()
            .zip(&owned)
            .map(|(d, (job, _))| (d, &job.message))
            .collect();
        Store::insert_messages_and_deliveries(&mut tx, &rows).await?;
        tx.commit().await.map_err(db("committing replies"))?;

        let mut by_conversation: HashMap<String, Delivery> = deliveries
            .into_iter()
            .map(|d| (d.conversation_id.clone(), d))
            .collect();
        Ok(jobs
            .iter()
            .map(|job| match by_conversation.remove(&job.conversation_id) {
                Some(delivery) => Posted::Stored {
                    seq: delivery.seq,
                    direct: Box::new(Direct {
                        waits_for: pending
                            .remove(&delivery.conversation_id)
                            .unwrap_or_default(),
                        delivery,
                    }),
                },
                None => Posted::NotOwned,
            })
            .collect())
    }
}
