//! Storage of contacts, conversations, messages, events and the outbox, on SQLite or PostgreSQL.
//!
//! One set of SQL serves both backends through sqlx's `Any` driver (`$N` placeholders, TEXT ids,
//! BIGINT millisecond times, JSON as TEXT). On SQLite every write goes through one connection so
//! writers queue in the process instead of failing with "database is locked"; reads use a few
//! more connections (WAL lets them run beside the writer). On PostgreSQL both share one pool, and
//! conditional updates keep several gateway processes from doing the same work twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use frontdesk_channels::{
    now_ms, Ack, Author, InboundMessage, OutboundMessage, QuickReply, StoredMessage,
};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};

use crate::batch::{answer_batches, ask, recv_batch, Question};
use crate::checkpoints::Checkpoints;
use crate::ownership::{self, Action, Refused, Status};
use sqlx::{AnyPool, Executor, Row};
use tokio::sync::{mpsc, oneshot};

/// Storage failures; the messages name the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error while {0}: {1}")]
    Db(&'static str, #[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Db(what, e)
}

/// `(conversation_id = $1 AND seq > $2) OR (conversation_id = $3 AND seq > $4) ...` for `n`
/// conversations: their messages after a seq each, in one statement.
pub(crate) fn messages_after_terms(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "(conversation_id = ${} AND seq > ${})",
                2 * i + 1,
                2 * i + 2
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// `$first, $first+1, ...`: `n` numbered placeholders, for lists and multi-row statements.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, ..., $columns), ($columns+1, ...), ...`: `rows` rows of numbered placeholders, for a
/// `VALUES` list (multi-row inserts, and the `WITH v(...) AS (VALUES ...)` of batched updates).
pub(crate) fn value_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|i| format!("({})", placeholders(1 + i * columns, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A statement built at run time (lists, multi-row inserts), with its parameters made cheap to bind
/// on SQLite.
///
/// Why: SQLite keeps a statement's named parameters (`$1`, `?1`) in a list that it walks to find
/// each one's name, and sqlx asks for every parameter's name when binding. Binding n parameters
/// thus costs O(n²): a batch of 64 replies (some 1,400 parameters) spent more of the writer
/// thread's time there than in SQLite's work itself. Anonymous `?` parameters are not in that
/// list, so a statement whose parameters are `$1, $2, ... $n`, in this order and each once, is
/// rewritten with `?` on SQLite. Any other statement is left as written (and stays correct).
pub(crate) fn dynamic_query(
    backend: Backend,
    sql: String,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(sqlx::AssertSqlSafe(match backend {
        Backend::Sqlite => anonymous_parameters(&sql).unwrap_or(sql),
        Backend::Postgres => sql,
    }))
}

/// `sql` with `$1, $2, ... $n` replaced by `?`, or None when they are not in that order, each
/// once. Quoted text is left alone.
fn anonymous_parameters(sql: &str) -> Option<String> {
    let mut out = String::with_capacity(sql.len());
    let mut next = 1usize;
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c != '$' || quoted {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.next_if(char::is_ascii_digit) {
            digits.push(d);
        }
        if digits.parse::<usize>().ok()? != next {
            return None;
        }
        next += 1;
        out.push('?');
    }
    Some(out)
}

/// Which database a transaction runs on (statements built inside one need it).
pub(crate) fn backend_of(tx: &sqlx::Transaction<'static, sqlx::Any>) -> Backend {
    if tx.backend_name() == "PostgreSQL" {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// A fresh sortable id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(_, sqlx::Error::Database(d)) if d.is_unique_violation())
}

/// Runs a write transaction again when a concurrent one (another task or gateway process on
/// PostgreSQL) created the same row first: the retry then sees that row (the same contact, or the
/// same message, which it answers as a duplicate).
async fn retry_on_conflict<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(e) if is_unique_violation(&e) && tries < 3 => tries += 1,
            other => return other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

const CONVERSATION_SQL: &str = "SELECT c.id, c.channel, c.contact_id, i.external_id, c.status, \
     c.language, c.priority, c.last_seq, c.processed_seq, c.unanswered, c.assignee, c.team, \
     c.queued_at, c.rating_requested_at, c.rating, c.declined_by FROM conversations c \
     JOIN contact_identities i ON i.contact_id = c.contact_id AND i.channel = c.channel";

fn conversation_from_row(r: &AnyRow) -> Result<Conversation> {
    let get = |e| StoreError::Db("reading a conversation", e);
    Ok(Conversation {
        id: r.try_get("id").map_err(get)?,
        channel: r.try_get("channel").map_err(get)?,
        contact_id: r.try_get("contact_id").map_err(get)?,
        contact_external_id: r.try_get("external_id").map_err(get)?,
        status: r.try_get("status").map_err(get)?,
        language: r.try_get("language").map_err(get)?,
        priority: r.try_get("priority").map_err(get)?,
        last_seq: r.try_get("last_seq").map_err(get)?,
        processed_seq: r.try_get("processed_seq").map_err(get)?,
        unanswered: r.try_get("unanswered").map_err(get)?,
        assignee: r.try_get("assignee").map_err(get)?,
        team: r.try_get("team").map_err(get)?,
        queued_at: r.try_get("queued_at").map_err(get)?,
        rating_requested_at: r.try_get("rating_requested_at").map_err(get)?,
        rating: r.try_get("rating").map_err(get)?,
        declined_by: r.try_get("declined_by").map_err(get)?,
    })
}

/// A conversation as the pipeline needs it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Conversation {
    pub id: String,
    pub channel: String,
    pub contact_id: String,
    /// The contact's id on the conversation's channel.
    pub contact_external_id: String,
    pub status: String,
    pub language: Option<String>,
    pub priority: i64,
    pub last_seq: i64,
    pub processed_seq: i64,
    /// Customer messages in a row the bot could not answer.
    pub unanswered: i64,
    /// The agent who owns it (when assigned).
    pub assignee: Option<String>,
    /// The team that should handle it.
    pub team: Option<String>,
    /// When it entered the queue (last time).
    pub queued_at: Option<i64>,
    /// When the customer was asked for a satisfaction rating (after resolving).
    pub rating_requested_at: Option<i64>,
    pub rating: Option<i64>,
    /// The agent who passed it on to a team.
    pub declined_by: Option<String>,
}

/// A message the pipeline wants to add to a conversation.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub author: Author,
    pub text: String,
    pub quick_replies: Vec<QuickReply>,
    pub annotations: serde_json::Value,
    /// Shown with the message (an agent's reply carries `{"agent": {"id", "name"}}`).
    pub metadata: serde_json::Value,
}

impl NewMessage {
    /// A plain message with no buttons, annotations or metadata.
    pub fn text(author: Author, text: impl Into<String>) -> Self {
        Self {
            author,
            text: text.into(),
            quick_replies: Vec::new(),
            annotations: serde_json::json!({}),
            metadata: serde_json::json!({}),
        }
    }
}

/// A stored message with its annotations (intent, emotion, knowledge hits, decision).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TranscriptMessage {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub message: StoredMessage,
    #[schema(value_type = Object)]
    pub annotations: serde_json::Value,
}

impl TranscriptMessage {
    /// `message` as stored in `conversation_id` under `seq` at `created_at_ms`: what reading it
    /// back would give.
    pub fn stored(
        conversation_id: &str,
        seq: i64,
        created_at_ms: i64,
        message: NewMessage,
    ) -> Self {
        Self {
            message: StoredMessage {
                conversation_id: conversation_id.to_string(),
                seq,
                author: message.author,
                text: message.text,
                created_at_ms,
                metadata: message.metadata,
                quick_replies: message.quick_replies,
            },
            annotations: message.annotations,
        }
    }
}

/// Something that happened to a conversation: who changed its status, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationEvent {
    pub kind: String,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub actor: String,
    pub reason: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub created_at_ms: i64,
}

/// A status change with its reason, recorded as a conversation event. Every change goes through
/// [`Store::apply_change`], which checks it against the ownership state machine.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub action: Action,
    /// Who: `bot`, `customer`, `queue`, or an agent's name.
    pub actor: String,
    pub reason: String,
    pub details: serde_json::Value,
    /// Raise the conversation's priority to at least this.
    pub priority: Option<i64>,
    /// The team that should handle it (hand-off, transfer to a team); none = unchanged.
    pub team: Option<String>,
    /// The agent it goes to (assign, transfer to an agent).
    pub assignee: Option<String>,
    /// Assign only while the assignee has fewer assigned conversations than this.
    pub capacity: Option<i64>,
    /// The agent passing it on to a team (the queue skips them for it).
    pub declined_by: Option<String>,
}

impl StatusChange {
    pub fn new(action: Action, actor: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            action,
            actor: actor.into(),
            reason: reason.into(),
            details: serde_json::json!({}),
            priority: None,
            team: None,
            assignee: None,
            capacity: None,
            declined_by: None,
        }
    }
}

/// Why a status change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("no conversation {0}")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Someone else changed the conversation first (two agents taking it at once), or the agent
    /// has no free slot any more.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A status change that happened.
#[derive(Debug, Clone)]
pub struct Applied {
    pub from: Status,
    pub to: Status,
    pub previous_assignee: Option<String>,
}

/// Everything one bot turn (one customer message) changes, committed at once.
#[derive(Debug, Clone)]
pub struct TurnOutcome {
    pub conversation_id: String,
    pub contact_id: String,
    /// Where replies go: the conversation's channel and the customer's id on it.
    pub channel: String,
    pub target: String,
    /// `processed_seq` the turn started from: the commit is refused if another worker moved it.
    pub expected_processed_seq: i64,
    /// The status the turn started from: if a person took the conversation meanwhile, the bot's
    /// replies and status change are dropped (the bot never posts to a conversation a person owns).
    pub started_status: String,
    /// A satisfaction rating (1-5) the customer gave in this message.
    pub rating: Option<i64>,
    /// The customer message this turn handled.
    pub message_seq: i64,
    pub message_annotations: serde_json::Value,
    pub language: Option<String>,
    pub status_change: Option<StatusChange>,
    /// The conversation's new count of unanswered messages in a row (none = unchanged).
    pub unanswered: Option<i64>,
    pub replies: Vec<NewMessage>,
    /// The channel replays missed messages from the transcript
    /// ([`frontdesk_channels::Channel::replays_from_store`]): the replies get no outbox row.
    /// Set by the router, which knows the channels; false is always safe.
    pub channel_replays_from_store: bool,
}

/// What a committed bot turn left to deliver.
#[derive(Debug)]
pub enum Committed {
    /// Another worker had handled the message already; nothing changed.
    AlreadyHandled,
    /// Stored; these replies are reserved for this process to deliver at once.
    Stored(Vec<Direct>),
}

/// A delivery stored already reserved for this process (with the outbox's lease), to be sent at
/// once by `Outbox::deliver_now` without waiting for the worker's poll.
#[derive(Debug)]
pub struct Direct {
    pub delivery: Delivery,
    /// The conversation's deliveries that were pending when this one was stored: it goes only
    /// after them, so only directly when they are all this process's own.
    pub waits_for: Vec<String>,
}

/// An outbox row with what is needed to deliver it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: String,
    pub message_id: String,
    pub conversation_id: String,
    pub contact_id: String,
    pub seq: i64,
    pub channel: String,
    pub target: String,
    pub status: String,
    pub attempts: i64,
    /// Milliseconds since the Unix epoch.
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub author: Author,
    pub text: String,
    #[schema(value_type = Vec<Object>)]
    pub quick_replies: Vec<QuickReply>,
    pub message_created_at: i64,
    /// False when the channel replays missed messages from the transcript
    /// ([`frontdesk_channels::Channel::replays_from_store`]): the message has no outbox row, and
    /// publishing it once after the commit is its whole delivery.
    #[serde(skip)]
    pub outbox_row: bool,
}

impl Delivery {
    /// A new outbound message's row, as it is inserted: `(attempts, next_attempt_at)` is
    /// `(0, now)` for the worker, or `(1, lease end)` when reserved for a direct attempt.
    /// `outbox_row` is false for a channel that replays from the transcript.
    pub(crate) fn new_row(
        (conversation_id, contact_id, channel, target): (&str, &str, &str, &str),
        seq: i64,
        msg: &NewMessage,
        now: i64,
        (attempts, next_attempt_at): (i64, i64),
        outbox_row: bool,
    ) -> Self {
        Delivery {
            id: new_id(),
            message_id: new_id(),
            conversation_id: conversation_id.to_string(),
            contact_id: contact_id.to_string(),
            seq,
            channel: channel.to_string(),
            target: target.to_string(),
            status: "pending".into(),
            attempts,
            next_attempt_at,
            last_error: None,
            created_at: now,
            delivered_at: None,
            author: msg.author,
            text: msg.text.clone(),
            quick_replies: msg.quick_replies.clone(),
            message_created_at: now,
            outbox_row,
        }
    }

    pub fn outbound(&self) -> OutboundMessage {
        OutboundMessage {
            delivery_id: self.id.clone(),
            channel: self.channel.clone(),
            conversation_id: self.conversation_id.clone(),
            contact_id: self.contact_id.clone(),
            contact_external_id: self.target.clone(),
            seq: self.seq,
            author: self.author,
            text: self.text.clone(),
            quick_replies: self.quick_replies.clone(),
            created_at_ms: self.message_created_at,
        }
    }
}

/// Outbox counts for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutboxCounts {
    pub pending: i64,
    pub dead: i64,
}

#[derive(Clone)]
pub struct Store {
    pub(crate) write: AnyPool,
    pub(crate) read: AnyPool,
    backend: Backend,
    ingest_queue: mpsc::UnboundedSender<IngestJob>,
    turn_queue: mpsc::UnboundedSender<TurnJob>,
    pending_queue: mpsc::UnboundedSender<Question<String, PendingTurn, StoreError>>,
    /// SQLite's background checkpoints, while any clone of the store is alive.
    _checkpoints: Option<Arc<Checkpoints>>,
}

/// A conversation with the customer messages no bot turn has handled yet, oldest first.
pub type PendingTurn = (Conversation, Vec<StoredMessage>);

/// Most conversations read in one go for the router (two statements for all of them).
const MAX_PENDING_BATCH: usize = 256;

/// Most unprocessed messages read for one conversation at a time.
const MAX_PENDING_MESSAGES: i64 = 100;

/// A bot turn waiting for the turn writer.
struct TurnJob {
    turn: TurnOutcome,
    lease_until: i64,
    reply: oneshot::Sender<Result<Committed>>,
}

/// Most bot turns committed in one transaction.
const MAX_TURN_BATCH: usize = 512;

/// How many conversations one batched write may change on this backend. SQLite has one writer,
/// so batches never wait on each other. PostgreSQL writes side by side: a batch that locks
/// several conversations' rows can deadlock with the customer-message batch locking them in
/// another order (measured: the ingest benchmark fell from 825 to 372 msg/s, each deadlock
/// costing PostgreSQL's 1 s detection). There, a write locks one conversation at a time, and
/// PostgreSQL's own concurrent commits do the grouping.
pub(crate) fn max_cross_conversation_batch(backend: Backend, sqlite_max: usize) -> usize {
    match backend {
        Backend::Sqlite => sqlite_max,
        Backend::Postgres => 1,
    }
}

/// Answers every job of a batch that was stored and returns None; or, when the batch failed, logs
/// why and gives the jobs back to be stored one by one (so one bad job cannot fail the others).
fn answer_batch<J, T>(
    jobs: Vec<J>,
    stored: Result<Vec<T>>,
    what: &str,
    reply: impl Fn(J) -> oneshot::Sender<Result<T>>,
) -> Option<Vec<J>> {
    match stored {
        Ok(results) => {
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = reply(job).send(Ok(result));
            }
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "a batch of {what} failed; storing each alone");
            Some(jobs)
        }
    }
}

/// A customer message waiting for the ingest writer.
struct IngestJob {
    message: InboundMessage,
    reply: oneshot::Sender<Result<Ingested>>,
}

/// A stored (or recognised) customer message.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub ack: Ack,
    /// The message as stored, when it is settled (see `settled`): nothing will change it, so the
    /// console feed sends it as it is instead of reading it back.
    pub stored: Option<Box<TranscriptMessage>>,
}

impl Ingested {
    /// The message needs no bot turn, and none must run for it: a person owns the conversation
    /// and no earlier message waits for a turn, so the store recorded the silent turn with the
    /// message (`processed_seq` moved to it, annotated as the ownership stage would).
    ///
    /// Why: on a conversation an agent handles, every customer message was written twice (stored,
    /// then marked handled by a turn that only read it) and read once between, on the relay's
    /// busiest path.
    pub fn settled(&self) -> bool {
        self.stored.is_some()
    }

    /// A message stored before under the same channel and external id.
    fn duplicate(ack: Ack) -> Self {
        Self { ack, stored: None }
    }

    /// A message stored now under `ack`, at `now`; settled or left to a bot turn.
    fn new(ack: Ack, settled: bool, msg: &InboundMessage, now: i64) -> Self {
        let stored = settled.then(|| {
            let message = NewMessage {
                author: Author::Customer,
                text: msg.text.clone(),
                quick_replies: Vec::new(),
                annotations: serde_json::Value::Object(crate::pipeline::human_owner_annotations()),
                metadata: msg.metadata.clone(),
            };
            Box::new(TranscriptMessage::stored(
                &ack.conversation_id,
                ack.seq,
                now,
                message,
            ))
        });
        Self { ack, stored }
    }
}

/// Most messages stored in one group commit.
const MAX_INGEST_BATCH: usize = 512;

const DELIVERY_COLUMNS: &str = "o.id, o.message_id, o.conversation_id, c.contact_id, o.seq, o.channel, \
     o.target, o.status, o.attempts, o.next_attempt_at, o.last_error, o.created_at, o.delivered_at, \
     m.author, m.text, m.quick_replies, m.created_at AS message_created_at";

/// Page cache of the writer's connection, in KiB: SQLite's default. What a transaction changes
/// may grow past it (`WRITER_PRAGMAS`).
///
/// Why not more: SQLite empties the pages above the database's end from the cache at every
/// commit, and a commit that split a B-tree page has parked one there for a moment (at the 1 GiB
/// mark), so most commits walk every page the cache holds. With a 64 MiB cache that walk was 7%
/// of the gateway's CPU at 3,000 messages/s offered in `bench relay` (small batches, many
/// commits); with 2 MiB it is under 2%. In the closed loop (batches of hundreds of messages) the
/// small cache cost no more CPU, within the noise: those pages are spread over every
/// conversation's index entries, and the kernel caches them.
const WRITER_CACHE_KIB: u32 = 2 * 1024;

/// Page cache of each reader's connection, in KiB.
const READER_CACHE_KIB: u32 = 16 * 1024;

/// Per-connection SQLite settings: WAL so readers run beside the writer, NORMAL sync (durable
/// across a process crash; a power cut may lose the last commits), a busy timeout, the page
/// cache, and checkpoints left to [`Checkpoints`].
async fn sqlite_settings(
    conn: &mut sqlx::AnyConnection,
    cache_kib: u32,
    extra: &str,
) -> std::result::Result<(), sqlx::Error> {
    conn.execute(sqlx::AssertSqlSafe(format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA cache_size = -{cache_kib}; {} {extra}",
        crate::checkpoints::PRAGMAS
    )))
    .await
    .map(|_| ())
}

/// The writer keeps its statement journals in memory.
///
/// Why: a statement that changes several rows inside a transaction (the group commits' multi-row
/// inserts and updates) first copies each page it changes to a statement journal, so that a
/// failing row can undo the statement alone. By default that journal goes to a temporary file
/// past 64 KiB, and a batch of a few hundred messages changes hundreds of pages: in a profile of
/// the customer phase of `bench relay`, writing that file was a fifth of the writer thread's
/// time. In memory it is a copy. It holds the pages one statement changes, a few MiB at most,
/// and nothing in it is needed after a crash (the transaction is then rolled back whole).
///
/// And it spills changed pages to the log in the middle of a transaction only past 16,384 pages
/// (64 MiB), not when they fill its page cache: a group commit of a few hundred messages changes a
/// page or more per conversation in each of several indexes, more than the cache holds, and
/// spilling them wrote and read them back again.
const WRITER_PRAGMAS: &str = "PRAGMA temp_store = MEMORY; PRAGMA cache_spill = 16384;";

pub(crate) fn sqlite_writer_settings<'c>(
    conn: &'c mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'c, std::result::Result<(), sqlx::Error>> {
    Box::pin(sqlite_settings(conn, WRITER_CACHE_KIB, WRITER_PRAGMAS))
}

pub(crate) fn sqlite_reader_settings<'c>(
    conn: &'c mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'c, std::result::Result<(), sqlx::Error>> {
    Box::pin(sqlite_settings(conn, READER_CACHE_KIB, ""))
}

/// A pool of `connections` to the SQLite file, each set up by `settings`.
///
/// No ping before each use: a SQLite connection lives in this process and cannot drop, and the
/// ping was a round trip to the connection's thread (a thread wake-up) before every statement: in
/// a profile, a third of a point read's cost.
pub(crate) async fn sqlite_pool<F>(url: &str, connections: u32, settings: F) -> Result<AnyPool>
where
    F: for<'c> Fn(
            &'c mut sqlx::AnyConnection,
            sqlx::pool::PoolConnectionMetadata,
        )
            -> futures_util::future::BoxFuture<'c, std::result::Result<(), sqlx::Error>>
        + Send
        + Sync
        + 'static,
{
    AnyPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire(false)
        .after_connect(settings)
        .connect(url)
        .await
        .map_err(db("opening the SQLite database"))
}

impl Store {
    /// Opens the database (creating a SQLite file if needed) and applies the migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let mut checkpoints = None;
        let (write, read) = match backend {
            Backend::Sqlite => {
                let write = sqlite_pool(url, 1, sqlite_writer_settings).await?;
                // Create the schema before readers open the file.
                sqlx::migrate!("./migrations").run(&write).await?;
                let read = sqlite_pool(url, 4, sqlite_reader_settings).await?;
                let checkpointer = sqlite_pool(url, 1, sqlite_reader_settings).await?;
                checkpoints = Some(Arc::new(Checkpoints::start(checkpointer, write.clone())));
                (write, read)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await
                    .map_err(db("connecting to PostgreSQL"))?;
                sqlx::migrate!("./migrations").run(&pool).await?;
                (pool.clone(), pool)
            }
        };
        let (ingest_queue, queue) = mpsc::unbounded_channel();
        tokio::spawn(Self::run_ingest_batches(write.clone(), queue));
        let (turn_queue, turns) = mpsc::unbounded_channel();
        tokio::spawn(Self::run_turn_batches(
            write.clone(),
            turns,
            max_cross_conversation_batch(backend, MAX_TURN_BATCH),
        ));
        let (pending_queue, pending) = mpsc::unbounded_channel();
        let pool = read.clone();
        tokio::spawn(answer_batches(
            pending,
            MAX_PENDING_BATCH,
            "pending_read",
            move |ids: Vec<String>| {
                let pool = pool.clone();
                async move { Self::read_pending(&pool, backend, &ids).await }
            },
        ));
        Ok(Store {
            write,
            read,
            backend,
            ingest_queue,
            turn_queue,
            pending_queue,
            _checkpoints: checkpoints,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map_err(db("checking the database"))?;
        Ok(())
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    /// A setting, created with `make()` the first time (by whichever process comes first).
    pub async fn setting_or_init(
        &self,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(make())
        .execute(&self.write)
        .await
        .map_err(db("writing a setting"))?;
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&self.write)
            .await
            .map_err(db("reading a setting"))?;
        row.try_get("value").map_err(db("reading a setting"))
    }

    /// A setting's value, if set.
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.write)
            .await
            .map_err(db("reading a setting"))?;
        row.map(|r| r.try_get("value").map_err(db("reading a setting")))
            .transpose()
    }

    /// Sets a setting, replacing its value.
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.write)
        .await
        .map_err(db("writing a setting"))?;
        Ok(())
    }

    pub async fn delete_setting(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(key)
            .execute(&self.write)
            .await
            .map_err(db("deleting a setting"))?;
        Ok(())
    }

    /// Settings whose key starts with `prefix` (no `%` or `_` in it), by key.
    pub async fn settings_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT key, value FROM settings WHERE key LIKE $1 ORDER BY key")
            .bind(format!("{prefix}%"))
            .fetch_all(&self.read)
            .await
            .map_err(db("reading settings"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("key").map_err(db("reading settings"))?,
                    r.try_get("value").map_err(db("reading settings"))?,
                ))
            })
            .collect()
    }

    /// The contact's conversation on a channel, created with the contact if missing.
    async fn ensure_conversation(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        channel: &str,
        external_id: &str,
        name: Option<&str>,
        email: Option<&str>,
        now: i64,
    ) -> Result<(String, String, i64)> {
        if let Some(found) = Self::lookup_conversation(&mut **tx, channel, external_id).await? {
            return Ok((found.conversation_id, found.contact_id, found.seq));
        }
        let contact_id = new_id();
        let conversation_id = new_id();
        sqlx::query("INSERT INTO contacts (id, name, email, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&contact_id)
            .bind(name)
            .bind(email)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(db("creating a contact"))?;
        sqlx::query(
            "INSERT INTO contact_identities (channel, external_id, contact_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(channel)
        .bind(external_id)
        .bind(&contact_id)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db("creating a contact identity"))?;
        sqlx::query(
            "INSERT INTO conversations (id, channel, contact_id, status, created_at, updated_at) \
             VALUES ($1, $2, $3, 'bot', $4, $4)",
        )
        .bind(&conversation_id)
        .bind(channel)
        .bind(&contact_id)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db("creating a conversation"))?;
        Ok((conversation_id, contact_id, 0))
    }

    /// Creates (or finds) the contact and its conversation; `seq` is the conversation's newest.
    pub async fn open_conversation(
        &self,
        channel: &str,
        external_id: &str,
        name: Option<&str>,
        email: Option<&str>,
        language: Option<&str>,
    ) -> Result<Ack> {
        retry_on_conflict(|| {
            self.try_open_conversation(channel, external_id, name, email, language)
        })
        .await
    }

    async fn try_open_conversation(
        &self,
        channel: &str,
        external_id: &str,
        name: Option<&str>,
        email: Option<&str>,
        language: Option<&str>,
    ) -> Result<Ack> {
        let mut tx = self
            .write
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let (conversation_id, contact_id, last_seq) =
            Self::ensure_conversation(&mut tx, channel, external_id, name, email, now_ms()).await?;
        if let Some(lang) = language {
            sqlx::query(
                "UPDATE conversations SET language = $2 WHERE id = $1 AND language IS NULL",
            )
            .bind(&conversation_id)
            .bind(lang)
            .execute(&mut *tx)
            .await
            .map_err(db("setting a conversation's language"))?;
        }
        tx.commit()
            .await
            .map_err(db("committing a new conversation"))?;
        Ok(Ack {
            conversation_id,
            contact_id,
            seq: last_seq,
            duplicate: false,
        })
    }

    pub async fn find_conversation(&self, channel: &str, external_id: &str) -> Result<Option<Ack>> {
        Self::lookup_conversation(&self.read, channel, external_id).await
    }

    /// The conversation of a contact known on `channel` as `external_id`, with its newest seq.
    async fn lookup_conversation(
        exec: impl Executor<'_, Database = sqlx::Any>,
        channel: &str,
        external_id: &str,
    ) -> Result<Option<Ack>> {
        let row = sqlx::query(
            "SELECT c.id, c.contact_id, c.last_seq FROM contact_identities i \
             JOIN conversations c ON c.contact_id = i.contact_id AND c.channel = i.channel \
             WHERE i.channel = $1 AND i.external_id = $2",
        )
        .bind(channel)
        .bind(external_id)
        .fetch_optional(exec)
        .await
        .map_err(db("finding a conversation"))?;
        row.map(|r| {
            Ok(Ack {
                conversation_id: r.try_get("id").map_err(db("reading a conversation"))?,
                contact_id: r
                    .try_get("contact_id")
                    .map_err(db("reading a conversation"))?,
                seq: r
                    .try_get("last_seq")
                    .map_err(db("reading a conversation"))?,
                duplicate: false,
            })
        })
        .transpose()
    }

    /// Stores a customer message once: a message already stored under the same channel and
    /// external id is answered with its original sequence number and `duplicate: true`.
    pub async fn ingest(&self, msg: &InboundMessage) -> Result<Ingested> {
        let (reply, answer) = oneshot::channel();
        self.ingest_queue
            .send(IngestJob {
                message: msg.clone(),
                reply,
            })
            .map_err(|_| StoreError::Corrupt("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Corrupt("the store is closed".into()))?
    }

    /// Group commit: the messages waiting when the writer is free are stored in one transaction
    /// (each still deduplicated and numbered on its own). If a batch fails, each of its messages
    /// is tried alone, so one bad message cannot fail the others.
    async fn run_ingest_batches(write: AnyPool, mut queue: mpsc::UnboundedReceiver<IngestJob>) {
        while let Some(jobs) = recv_batch(&mut queue, MAX_INGEST_BATCH).await {
            let _timer = crate::batch::BatchTimer::start("ingest", jobs.len());
            let jobs = if jobs.len() > 1 {
                let stored = Self::ingest_batch(&write, &jobs).await;
                match answer_batch(jobs, stored, "customer messages", |j| j.reply) {
                    Some(left) => left,
                    None => continue,
                }
            } else {
                jobs
            };
            for job in jobs {
                let result = retry_on_conflict(|| Self::ingest_alone(&write, &job.message)).await;
                let _ = job.reply.send(result);
            }
        }
    }

    /// A batch in one transaction. The usual message (a known sender, not seen before) takes
    /// three statements for the whole batch: one looks up every message's duplicate and
    /// conversation, one numbers them (several per conversation in batch order), one inserts them.
    /// The rest (a first message that opens a conversation, a retry of a message earlier in the
    /// same batch) is then stored one by one, as `ingest_alone` does.
    ///
    /// Why: one message at a time cost three statements each, and every statement is a round trip
    /// to SQLite's connection thread; a batch of 300 spent most of its time in those hand-overs.
    async fn ingest_batch(write: &AnyPool, jobs: &[IngestJob]) -> Result<Vec<Ingested>> {
        let now = now_ms();
        let mut tx = write.begin().await.map_err(db("starting a transaction"))?;
        let messages: Vec<&InboundMessage> = jobs.iter().map(|j| &j.message).collect();
        let (duplicates, known) =
            Self::find_duplicates_and_conversations(&mut tx, &messages).await?;

        // Which messages take the set-based path, and how many each conversation gets.
        let mut acks: Vec<Option<Ingested>> = vec![None; messages.len()];
        let mut fast: Vec<usize> = Vec::new();
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        let mut per_conversation: HashMap<&str, i64> = HashMap::new();
        for (i, msg) in messages.iter().enumerate() {
            let first = seen.insert((msg.channel.as_str(), msg.external_message_id.as_str()));
            if let Some(ack) = &duplicates[i] {
                acks[i] = Some(Ingested::duplicate(ack.clone()));
            } else if let (true, Some(conversation)) = (first, &known[i]) {
                *per_conversation
                    .entry(conversation.conversation_id.as_str())
                    .or_default() += 1;
                fast.push(i);
            }
        }

        if !fast.is_empty() {
            let mut next_seq =
                Self::number_customer_messages(&mut tx, &per_conversation, now).await?;

            for &i in &fast {
                let conversation = known[i].as_ref().ok_or_else(|| {
                    StoreError::Corrupt("a batched message lost its conversation".into())
                })?;
                let (seq, settled) =
                    next_seq
                        .get_mut(&conversation.conversation_id)
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "conversation {} vanished while numbering",
                                conversation.conversation_id
                            ))
                        })?;
                acks[i] = Some(Ingested::new(
                    Ack {
                        conversation_id: conversation.conversation_id.clone(),
                        contact_id: conversation.contact_id.clone(),
                        seq: *seq,
                        duplicate: false,
                    },
                    *settled,
                    messages[i],
                    now,
                ));
                *seq += 1;
            }
            let rows: Vec<(&InboundMessage, &Ingested)> = fast
                .iter()
                .filter_map(|&i| acks[i].as_ref().map(|ack| (messages[i], ack)))
                .collect();
            Self::insert_customer_messages(&mut tx, &rows, now).await?;
        }

        // The rest, one by one, in batch order.
        for (i, msg) in messages.iter().enumerate() {
            if acks[i].is_none() {
                acks[i] = Some(Self::ingest_in(&mut tx, msg, now).await?);
            }
        }
        tx.commit().await.map_err(db("committing messages"))?;
        acks.into_iter()
            .map(|a| a.ok_or_else(|| StoreError::Corrupt("a batched message has no answer".into())))
            .collect()
    }

    /// For each message: the message stored before under its channel and external id, and its
    /// sender's conversation. One statement for the batch.
    async fn find_duplicates_and_conversations(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        messages: &[&InboundMessage],
    ) -> Result<(Vec<Option<Ack>>, Vec<Option<Ack>>)> {
        let sql = format!(
            "WITH q(i, channel, external_id, contact_external_id) AS (VALUES {}) \
             SELECT q.i, 'duplicate' AS kind, m.conversation_id AS id, c.contact_id, m.seq AS seq \
             FROM q JOIN messages m ON m.channel = q.channel AND m.external_id = q.external_id \
             JOIN conversations c ON c.id = m.conversation_id \
             UNION ALL \
             SELECT q.i, 'conversation' AS kind, c.id, c.contact_id, c.last_seq AS seq \
             FROM q JOIN contact_identities i \
             ON i.channel = q.channel AND i.external_id = q.contact_external_id \
             JOIN conversations c ON c.contact_id = i.contact_id AND c.channel = i.channel",
            value_rows(messages.len(), 4)
        );
        let mut q = dynamic_query(backend_of(tx), sql);
        for (i, msg) in messages.iter().enumerate() {
            q = q
                .bind(i as i64)
                .bind(&msg.channel)
                .bind(&msg.external_message_id)
                .bind(&msg.contact_external_id);
        }
        let rows = q
            .fetch_all(&mut **tx)
            .await
            .map_err(db("looking for duplicate messages"))?;
        let mut duplicates = vec![None; messages.len()];
        let mut known = vec![None; messages.len()];
        for r in &rows {
            let get = |e| StoreError::Db("reading a message", e);
            let i: i64 = r.try_get(0).map_err(get)?;
            let kind: String = r.try_get("kind").map_err(get)?;
            let ack = Ack {
                conversation_id: r.try_get("id").map_err(get)?,
                contact_id: r.try_get("contact_id").map_err(get)?,
                seq: r.try_get("seq").map_err(get)?,
                duplicate: kind == "duplicate",
            };
            let slot = usize::try_from(i)
                .ok()
                .filter(|&i| i < messages.len())
                .ok_or_else(|| StoreError::Corrupt(format!("a lookup answered for message {i}")))?;
            if ack.duplicate {
                duplicates[slot] = Some(ack);
            } else {
                known[slot] = Some(ack);
            }
        }
        Ok((duplicates, known))
    }

    async fn ingest_alone(write: &AnyPool, msg: &InboundMessage) -> Result<Ingested> {
        let mut tx = write.begin().await.map_err(db("starting a transaction"))?;
        let ack = Self::ingest_in(&mut tx, msg, now_ms()).await?;
        tx.commit().await.map_err(db("committing a message"))?;
        Ok(ack)
    }

    /// Stores one customer message inside `tx`, or finds it stored before.
    async fn ingest_in(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        msg: &InboundMessage,
        now: i64,
    ) -> Result<Ingested> {
        let (duplicates, known) = Self::find_duplicates_and_conversations(tx, &[msg]).await?;
        if let Some(ack) = duplicates.into_iter().next().flatten() {
            return Ok(Ingested::duplicate(ack));
        }
        let (conversation_id, contact_id) = match known.into_iter().next().flatten() {
            Some(found) => (found.conversation_id, found.contact_id),
            None => {
                let (conversation_id, contact_id, _) = Self::ensure_conversation(
                    tx,
                    &msg.channel,
                    &msg.contact_external_id,
                    msg.contact_name.as_deref(),
                    msg.contact_email.as_deref(),
                    now,
                )
                .await?;
                (conversation_id, contact_id)
            }
        };
        let counts = HashMap::from([(conversation_id.as_str(), 1)]);
        let (seq, settled) = Self::number_customer_messages(tx, &counts, now)
            .await?
            .remove(&conversation_id)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "conversation {conversation_id} vanished while numbering"
                ))
            })?;
        let ingested = Ingested::new(
            Ack {
                conversation_id,
                contact_id,
                seq,
                duplicate: false,
            },
            settled,
            msg,
            now,
        );
        Self::insert_customer_messages(tx, &[(msg, &ingested)], now).await?;
        Ok(ingested)
    }

    /// Inserts customer messages, each under the conversation and seq of its ack; a settled one
    /// with the silent turn's annotations.
    async fn insert_customer_messages(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        rows: &[(&InboundMessage, &Ingested)],
        now: i64,
    ) -> Result<()> {
        let sql =
            format!(
            "INSERT INTO messages (id, conversation_id, seq, author, text, channel, external_id, \
             metadata, annotations, created_at) VALUES {}",
            (0..rows.len())
                .map(|k| {
                    let p = 1 + 9 * k;
                    format!("({}, 'customer', {})", placeholders(p, 3), placeholders(p + 3, 6))
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        let silent =
            serde_json::Value::Object(crate::pipeline::human_owner_annotations()).to_string();
        let mut q = dynamic_query(backend_of(tx), sql);
        for (msg, ingested) in rows {
            let ack = &ingested.ack;
            q = q
                .bind(new_id())
                .bind(&ack.conversation_id)
                .bind(ack.seq)
                .bind(&msg.text)
                .bind(&msg.channel)
                .bind(&msg.external_message_id)
                .bind(msg.metadata.to_string())
                .bind(if ingested.settled() {
                    silent.as_str()
                } else {
                    "{}"
                })
                .bind(now);
        }
        q.execute(&mut **tx).await.map_err(db("storing messages"))?;
        Ok(())
    }

    /// Numbers new customer messages, `counts[conversation]` of them per conversation, in one
    /// statement: each conversation's `last_seq` and `last_customer_seq` move by its count, and
    /// its messages take the numbers below the new `last_seq`, in order. Returns each
    /// conversation's first new seq, and whether its new messages are settled: a person owns it
    /// and no earlier customer message waits for a bot turn (`Ingested::settled`), so
    /// `processed_seq` moves past them too.
    async fn number_customer_messages(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        counts: &HashMap<&str, i64>,
        now: i64,
    ) -> Result<HashMap<String, (i64, bool)>> {
        // SQL evaluates every `SET` expression against the row before the update.
        let sql = format!(
            "WITH v(id, n) AS (VALUES {}) UPDATE conversations SET last_seq = last_seq + v.n, \
             last_customer_seq = last_seq + v.n, \
             processed_seq = CASE WHEN conversations.status IN ({}) \
             AND conversations.processed_seq >= conversations.last_customer_seq \
             THEN conversations.last_seq + v.n ELSE conversations.processed_seq END, \
             updated_at = ${}, last_message_at = ${} FROM v WHERE conversations.id = v.id \
             RETURNING conversations.id, conversations.last_seq, conversations.processed_seq",
            value_rows(counts.len(), 2),
            crate::ownership::human_owned_sql(),
            1 + 2 * counts.len(),
            2 + 2 * counts.len(),
        );
        let mut q = dynamic_query(backend_of(tx), sql);
        for (id, n) in counts {
            q = q.bind(*id).bind(*n);
        }
        let rows = q
            .bind(now)
            .bind(now)
            .fetch_all(&mut **tx)
            .await
            .map_err(db("numbering messages"))?;
        let mut first_seq = HashMap::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get(0).map_err(db("numbering messages"))?;
            let last: i64 = r.try_get(1).map_err(db("numbering messages"))?;
            let processed: i64 = r.try_get(2).map_err(db("numbering messages"))?;
            let n = counts.get(id.as_str()).copied().unwrap_or(0);
            first_seq.insert(id, (last - n + 1, processed == last));
        }
        Ok(first_seq)
    }

    async fn next_seq(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        conversation_id: &str,
        now: i64,
    ) -> Result<i64> {
        let row = sqlx::query(
            "UPDATE conversations SET last_seq = last_seq + 1, updated_at = $2, last_message_at = $2 \
             WHERE id = $1 RETURNING last_seq",
        )
        .bind(conversation_id)
        .bind(now)
        .fetch_one(&mut **tx)
        .await
        .map_err(db("numbering a message"))?;
        row.try_get("last_seq").map_err(db("numbering a message"))
    }

    fn stored_message(row: &AnyRow) -> Result<StoredMessage> {
        let author: String = row.try_get("author").map_err(db("reading a message"))?;
        let metadata: String = row.try_get("metadata").map_err(db("reading a message"))?;
        let quick: String = row
            .try_get("quick_replies")
            .map_err(db("reading a message"))?;
        Ok(StoredMessage {
            conversation_id: row
                .try_get("conversation_id")
                .map_err(db("reading a message"))?,
            seq: row.try_get("seq").map_err(db("reading a message"))?,
            author: author.parse().map_err(StoreError::Corrupt)?,
            text: row.try_get("text").map_err(db("reading a message"))?,
            created_at_ms: row.try_get("created_at").map_err(db("reading a message"))?,
            metadata: serde_json::from_str(&metadata).unwrap_or(serde_json::Value::Null),
            quick_replies: serde_json::from_str(&quick).unwrap_or_default(),
        })
    }

    /// Every message of a conversation with what the gateway understood about it, oldest first.
    pub async fn transcript(&self, conversation_id: &str) -> Result<Vec<TranscriptMessage>> {
        Self::transcript_on(&self.read, conversation_id).await
    }

    /// The transcript, read through `on` (the pool, or a transaction whose snapshot other reads
    /// share).
    pub(crate) async fn transcript_on<'e>(
        on: impl sqlx::Executor<'e, Database = sqlx::Any>,
        conversation_id: &str,
    ) -> Result<Vec<TranscriptMessage>> {
        let rows = sqlx::query(
            "SELECT conversation_id, seq, author, text, created_at, metadata, quick_replies, \
             annotations FROM messages WHERE conversation_id = $1 ORDER BY seq",
        )
        .bind(conversation_id)
        .fetch_all(on)
        .await
        .map_err(db("reading a transcript"))?;
        rows.iter().map(Self::transcript_message).collect()
    }

    pub(crate) fn transcript_message(r: &AnyRow) -> Result<TranscriptMessage> {
        let annotations: String = r
            .try_get("annotations")
            .map_err(db("reading a transcript"))?;
        Ok(TranscriptMessage {
            message: Self::stored_message(r)?,
            annotations: serde_json::from_str(&annotations).unwrap_or(serde_json::Value::Null),
        })
    }

    /// A conversation's events (status changes with who and why) after its first `skip`, oldest
    /// first, read through `on` (the pool, or a transaction whose snapshot other reads share).
    pub(crate) async fn events_from_on<'e>(
        on: impl sqlx::Executor<'e, Database = sqlx::Any>,
        conversation_id: &str,
        skip: usize,
    ) -> Result<Vec<ConversationEvent>> {
        let rows = sqlx::query(
            "SELECT kind, from_status, to_status, actor, reason, details, created_at \
             FROM conversation_events WHERE conversation_id = $1 ORDER BY created_at, id \
             LIMIT $2 OFFSET $3",
        )
        .bind(conversation_id)
        .bind(i64::MAX)
        .bind(i64::try_from(skip).unwrap_or(i64::MAX))
        .fetch_all(on)
        .await
        .map_err(db("reading events"))?;
        rows.iter().map(Self::conversation_event).collect()
    }

    /// An event from a row with the `conversation_events` columns.
    pub(crate) fn conversation_event(r: &AnyRow) -> Result<ConversationEvent> {
        let get = |e| StoreError::Db("reading events", e);
        let details: String = r.try_get("details").map_err(get)?;
        Ok(ConversationEvent {
            kind: r.try_get("kind").map_err(get)?,
            from_status: r.try_get("from_status").map_err(get)?,
            to_status: r.try_get("to_status").map_err(get)?,
            actor: r.try_get("actor").map_err(get)?,
            reason: r.try_get("reason").map_err(get)?,
            details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
            created_at_ms: r.try_get("created_at").map_err(get)?,
        })
    }

    /// Messages after `after_seq`, oldest first, at most `limit`.
    pub async fn history(
        &self,
        conversation_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>> {
        let rows = sqlx::query(
            "SELECT conversation_id, seq, author, text, created_at, metadata, quick_replies \
             FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(conversation_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(db("reading the history"))?;
        rows.iter().map(Self::stored_message).collect()
    }

    pub async fn conversation(&self, id: &str) -> Result<Option<Conversation>> {
        let sql = format!("{CONVERSATION_SQL} WHERE c.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db("reading a conversation"))?;
        row.as_ref().map(conversation_from_row).transpose()
    }

    /// Queued and assigned conversations whose last message is older than `before` (ms).
    pub async fn idle_human_conversations(&self, before: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM conversations WHERE status IN ('queued', 'assigned') \
             AND COALESCE(last_message_at, updated_at) < $1 ORDER BY id LIMIT 500",
        )
        .bind(before)
        .fetch_all(&self.write)
        .await
        .map_err(db("looking for idle conversations"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(db("reading a conversation id")))
            .collect()
    }

    /// Conversations waiting for a person: highest priority first, then the longest waiting.
    pub async fn queued(&self) -> Result<Vec<Conversation>> {
        let sql = format!(
            "{CONVERSATION_SQL} WHERE c.status = 'queued' \
             ORDER BY c.priority DESC, c.queued_at ASC, c.id ASC LIMIT 1000"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.write)
            .await
            .map_err(db("reading the queue"))?;
        rows.iter().map(conversation_from_row).collect()
    }

    /// The conversation and its customer messages no bot turn has handled yet (at most 100,
    /// oldest first), for the router's next turn; `None` when the conversation does not exist.
    ///
    /// Why batched: the router asks this once per customer message. One by one it took two
    /// statements each, and every statement and every row is a hand-over between the async side
    /// and a database connection's thread (on SQLite, sqlx runs each connection on its own
    /// thread): those reads were the biggest share of the gateway's CPU on the relay path. The
    /// questions waiting when the reader is free are answered together, in two statements.
    pub async fn pending_turn(&self, conversation_id: &str) -> Result<Option<PendingTurn>> {
        match ask(&self.pending_queue, conversation_id.to_string()).await {
            Some(answer) => answer,
            // The reader is gone: this conversation alone, the same way.
            None => Self::read_pending(
                &self.read,
                self.backend,
                std::slice::from_ref(&conversation_id.to_string()),
            )
            .await
            .map(|mut found| found.remove(conversation_id)),
        }
    }

    /// The conversations among `ids` that exist, each with its unprocessed customer messages:
    /// one statement for the conversations, one for the messages after each one's
    /// `processed_seq` as just read.
    async fn read_pending(
        read: &AnyPool,
        backend: Backend,
        ids: &[String],
    ) -> Result<HashMap<String, PendingTurn>> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "{CONVERSATION_SQL} WHERE c.id IN ({})",
            placeholders(1, ids.len())
        );
        let mut q = dynamic_query(backend, sql);
        for id in ids {
            q = q.bind(id);
        }
        let rows = q
            .fetch_all(read)
            .await
            .map_err(db("reading conversations"))?;
        let conversations = rows
            .iter()
            .map(conversation_from_row)
            .collect::<Result<Vec<_>>>()?;
        if conversations.is_empty() {
            return Ok(out);
        }
        let limit = 2 * conversations.len() + 1;
        let sql = format!(
            "SELECT conversation_id, seq, author, text, created_at, metadata, quick_replies \
             FROM (SELECT conversation_id, seq, author, text, created_at, metadata, quick_replies, \
             ROW_NUMBER() OVER (PARTITION BY conversation_id ORDER BY seq) AS n FROM messages \
             WHERE author = 'customer' AND ({})) p WHERE n <= ${limit} ORDER BY conversation_id, seq",
            messages_after_terms(conversations.len())
        );
        let mut q = dynamic_query(backend, sql);
        for c in &conversations {
            q = q.bind(&c.id).bind(c.processed_seq);
        }
        let rows = q
            .bind(MAX_PENDING_MESSAGES)
            .fetch_all(read)
            .await
            .map_err(db("reading unprocessed messages"))?;
        let mut messages: HashMap<String, Vec<StoredMessage>> = HashMap::new();
        for r in &rows {
            let m = Self::stored_message(r)?;
            messages
                .entry(m.conversation_id.clone())
                .or_default()
                .push(m);
        }
        for c in conversations {
            let pending = messages.remove(&c.id).unwrap_or_default();
            out.insert(c.id.clone(), (c, pending));
        }
        Ok(out)
    }

    /// Conversations with customer messages the pipeline has not handled (after a crash).
    pub async fn conversations_with_unprocessed(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT c.id FROM conversations c WHERE EXISTS (SELECT 1 FROM messages m \
             WHERE m.conversation_id = c.id AND m.author = 'customer' AND m.seq > c.processed_seq)",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db("looking for unprocessed messages"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(db("reading a conversation id")))
            .collect()
    }

    /// Commits one bot turn atomically; its replies are reserved for this process until
    /// `lease_until` (delivered at once, or by the worker after a crash). Changes nothing when
    /// another worker already handled this message.
    ///
    /// Turns waiting when the writer is free share one transaction (group commit); if that
    /// fails, each is committed alone, so one bad turn cannot fail the others.
    pub async fn commit_turn(&self, turn: &TurnOutcome, lease_until: i64) -> Result<Committed> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Corrupt("the store is closed".into());
        self.turn_queue
            .send(TurnJob {
                turn: turn.clone(),
                lease_until,
                reply,
            })
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn run_turn_batches(
        write: AnyPool,
        mut queue: mpsc::UnboundedReceiver<TurnJob>,
        max_batch: usize,
    ) {
        while let Some(jobs) = recv_batch(&mut queue, max_batch).await {
            let _timer = crate::batch::BatchTimer::start("turn", jobs.len());
            let jobs = if jobs.len() > 1 {
                let stored = Self::commit_turns(&write, &jobs).await;
                match answer_batch(jobs, stored, "bot turns", |j| j.reply) {
                    Some(left) => left,
                    None => continue,
                }
            } else {
                jobs
            };
            for job in jobs {
                let result = Self::commit_turns(&write, std::slice::from_ref(&job))
                    .await
                    .and_then(|mut r| {
                        r.pop()
                            .ok_or_else(|| StoreError::Corrupt("a turn left no result".into()))
                    });
                let _ = job.reply.send(result);
            }
        }
    }

    /// A batch of turns in one transaction. Quiet turns (no reply, rating or status change: the
    /// bot only read the message, as it does while a person owns the conversation) of distinct
    /// conversations take two statements for the whole batch; the others are committed one by
    /// one after them, in batch order. Why: each statement is a round trip to SQLite's connection
    /// thread, and two per turn made the turn writer the relay's bottleneck.
    async fn commit_turns(write: &AnyPool, jobs: &[TurnJob]) -> Result<Vec<Committed>> {
        let mut tx = write.begin().await.map_err(db("starting a transaction"))?;
        let mut per_conversation: HashMap<&str, usize> = HashMap::new();
        for job in jobs {
            *per_conversation
                .entry(job.turn.conversation_id.as_str())
                .or_default() += 1;
        }
        let quiet: Vec<usize> = jobs
            .iter()
            .enumerate()
            .filter(|(_, job)| {
                let t = &job.turn;
                t.replies.is_empty()
                    && t.rating.is_none()
                    && t.status_change.is_none()
                    && per_conversation.get(t.conversation_id.as_str()) == Some(&1)
            })
            .map(|(i, _)| i)
            .collect();
        let mut results: Vec<Option<Committed>> = jobs.iter().map(|_| None).collect();
        if quiet.len() > 1 {
            let claimed = Self::commit_quiet_turns(&mut tx, jobs, &quiet).await?;
            for &i in &quiet {
                results[i] = Some(if claimed.contains(jobs[i].turn.conversation_id.as_str()) {
                    Committed::Stored(Vec::new())
                } else {
                    Committed::AlreadyHandled
                });
            }
        }
        for (i, job) in jobs.iter().enumerate() {
            if results[i].is_none() {
                results[i] = Some(Self::commit_turn_in(&mut tx, &job.turn, job.lease_until).await?);
            }
        }
        tx.commit().await.map_err(db("committing bot turns"))?;
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| StoreError::Corrupt("a bot turn has no result".into())))
            .collect()
    }

    /// `commit_turn_in` for quiet turns of distinct conversations, in two statements: the claims
    /// (a conversation still at the turn's expected processed_seq moves to its message), then the
    /// claimed messages' annotations. Returns the claimed conversations.
    async fn commit_quiet_turns(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        jobs: &[TurnJob],
        quiet: &[usize],
    ) -> Result<HashSet<String>> {
        let backend = backend_of(tx);
        let now = now_ms();
        let sql = format!(
            "WITH v(id, expected, seq, language, unanswered) AS (VALUES {}) \
             UPDATE conversations SET processed_seq = v.seq, updated_at = ${}, \
             language = COALESCE(v.language, conversations.language), \
             unanswered = COALESCE(v.unanswered, conversations.unanswered) \
             FROM v WHERE conversations.id = v.id AND conversations.processed_seq = v.expected \
             RETURNING conversations.id",
            value_rows(quiet.len(), 5),
            1 + 5 * quiet.len()
        );
        let mut q = dynamic_query(backend, sql);
        for &i in quiet {
            let t = &jobs[i].turn;
            q = q
                .bind(&t.conversation_id)
                .bind(t.expected_processed_seq)
                .bind(t.message_seq)
                .bind(t.language.as_deref())
                .bind(t.unanswered);
        }
        let rows = q
            .bind(now)
            .fetch_all(&mut **tx)
            .await
            .map_err(db("recording bot turns"))?;
        let mut claimed = HashSet::with_capacity(rows.len());
        for r in &rows {
            claimed.insert(
                r.try_get::<String, _>(0)
                    .map_err(db("recording bot turns"))?,
            );
        }
        let annotate: Vec<&TurnOutcome> = quiet
            .iter()
            .map(|&i| &jobs[i].turn)
            .filter(|t| claimed.contains(&t.conversation_id))
            .collect();
        if !annotate.is_empty() {
            let sql = format!(
                "WITH v(id, seq, annotations) AS (VALUES {}) UPDATE messages \
                 SET annotations = v.annotations FROM v \
                 WHERE messages.conversation_id = v.id AND messages.seq = v.seq",
                value_rows(annotate.len(), 3)
            );
            let mut q = dynamic_query(backend, sql);
            for t in &annotate {
                q = q
                    .bind(&t.conversation_id)
                    .bind(t.message_seq)
                    .bind(t.message_annotations.to_string());
            }
            q.execute(&mut **tx)
                .await
                .map_err(db("annotating messages"))?;
        }
        Ok(claimed)
    }

    /// One bot turn inside `tx`.
    async fn commit_turn_in(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        turn: &TurnOutcome,
        lease_until: i64,
    ) -> Result<Committed> {
        let now = now_ms();
        // The claim locks the row (on PostgreSQL): the status it returns is the one this commit
        // lands on.
        let claimed = sqlx::query(
            "UPDATE conversations SET processed_seq = $3, updated_at = $4, \
             language = COALESCE($5, language), unanswered = COALESCE($6, unanswered) \
             WHERE id = $1 AND processed_seq = $2 RETURNING status",
        )
        .bind(&turn.conversation_id)
        .bind(turn.expected_processed_seq)
        .bind(turn.message_seq)
        .bind(now)
        .bind(turn.language.as_deref())
        .bind(turn.unanswered)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("recording a bot turn"))?;
        let Some(claimed) = claimed else {
            return Ok(Committed::AlreadyHandled);
        };
        let status_now: String = claimed.try_get("status").map_err(db("reading a status"))?;
        sqlx::query("UPDATE messages SET annotations = $3 WHERE conversation_id = $1 AND seq = $2")
            .bind(&turn.conversation_id)
            .bind(turn.message_seq)
            .bind(turn.message_annotations.to_string())
            .execute(&mut **tx)
            .await
            .map_err(db("annotating a message"))?;
        if status_now != turn.started_status {
            // A person took over while the bot was thinking: the bot stays silent.
            tracing::info!(conversation = %turn.conversation_id, from = %turn.started_status, now = %status_now, dropped = turn.replies.len(), "ownership changed during the bot turn; its replies are dropped");
            return Ok(Committed::Stored(Vec::new()));
        }
        if let Some(rating) = turn.rating {
            sqlx::query("UPDATE conversations SET rating = $2 WHERE id = $1")
                .bind(&turn.conversation_id)
                .bind(rating)
                .execute(&mut **tx)
                .await
                .map_err(db("storing a rating"))?;
            Self::insert_event(
                tx,
                &turn.conversation_id,
                ("rating", None, None),
                ("customer", &format!("rated {rating} of 5")),
                &serde_json::json!({ "rating": rating }),
                now,
            )
            .await?;
        }
        if let Some(change) = &turn.status_change {
            match Self::apply_change_in(tx, &turn.conversation_id, change, now).await {
                Ok(_) => {}
                Err(ChangeError::Store(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(conversation = %turn.conversation_id, error = %e, "the bot turn's status change was refused");
                }
            }
        }
        let mut direct = Vec::with_capacity(turn.replies.len());
        if !turn.replies.is_empty() {
            let outbox_row = !turn.channel_replays_from_store;
            let waits_for = if outbox_row {
                Self::pending_deliveries(tx, &[&turn.conversation_id])
                    .await?
                    .remove(&turn.conversation_id)
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            for reply in &turn.replies {
                let delivery = Self::append_outbound(
                    tx,
                    (
                        &turn.conversation_id,
                        &turn.contact_id,
                        &turn.channel,
                        &turn.target,
                    ),
                    reply,
                    now,
                    (1, lease_until),
                    outbox_row,
                )
                .await?;
                direct.push(Direct {
                    delivery,
                    waits_for: waits_for.clone(),
                });
            }
        }
        Ok(Committed::Stored(direct))
    }

    /// The ids of these conversations' deliveries that are not done yet, by conversation: a new
    /// reply is delivered only after them.
    pub(crate) async fn pending_deliveries(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        conversation_ids: &[&str],
    ) -> Result<HashMap<String, Vec<String>>> {
        let mut pending: HashMap<String, Vec<String>> = HashMap::new();
        if conversation_ids.is_empty() {
            return Ok(pending);
        }
        let sql = format!(
            "SELECT id, conversation_id FROM outbox WHERE status = 'pending' \
             AND conversation_id IN ({})",
            placeholders(1, conversation_ids.len())
        );
        let mut q = dynamic_query(backend_of(tx), sql);
        for id in conversation_ids {
            q = q.bind(*id);
        }
        let get = |e| StoreError::Db("reading pending deliveries", e);
        for r in q.fetch_all(&mut **tx).await.map_err(get)? {
            let id: String = r.try_get("id").map_err(get)?;
            let conversation: String = r.try_get("conversation_id").map_err(get)?;
            pending.entry(conversation).or_default().push(id);
        }
        Ok(pending)
    }

    /// Inserts outbound messages and their outbox rows, each described by its delivery: one
    /// statement per table however many there are. A delivery without `outbox_row` (a channel
    /// that replays from the transcript) stores only its message.
    pub(crate) async fn insert_messages_and_deliveries(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        rows: &[(&Delivery, &NewMessage)],
    ) -> Result<()> {
        const MESSAGE_COLUMNS: usize = 10;
        const OUTBOX_COLUMNS: usize = 11;
        let sql = format!(
            "INSERT INTO messages (id, conversation_id, seq, author, text, channel, annotations, \
             quick_replies, created_at, metadata) VALUES {}",
            value_rows(rows.len(), MESSAGE_COLUMNS)
        );
        let backend = backend_of(tx);
        let mut q = dynamic_query(backend, sql);
        for (d, msg) in rows {
            let quick = serde_json::to_string(&msg.quick_replies).unwrap_or_else(|_| "[]".into());
            q = q
                .bind(&d.message_id)
                .bind(&d.conversation_id)
                .bind(d.seq)
                .bind(msg.author.as_str())
                .bind(&msg.text)
                .bind(&d.channel)
                .bind(msg.annotations.to_string())
                .bind(quick)
                .bind(d.created_at)
                .bind(msg.metadata.to_string());
        }
        q.execute(&mut **tx).await.map_err(db("storing a reply"))?;
        let queued: Vec<&Delivery> = rows
            .iter()
            .map(|(d, _)| *d)
            .filter(|d| d.outbox_row)
            .collect();
        if queued.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO outbox (id, message_id, conversation_id, seq, channel, target, status, \
             attempts, next_attempt_at, created_at, updated_at) VALUES {}",
            value_rows(queued.len(), OUTBOX_COLUMNS)
        );
        let mut q = dynamic_query(backend, sql);
        for d in queued {
            q = q
                .bind(&d.id)
                .bind(&d.message_id)
                .bind(&d.conversation_id)
                .bind(d.seq)
                .bind(&d.channel)
                .bind(&d.target)
                .bind(&d.status)
                .bind(d.attempts)
                .bind(d.next_attempt_at)
                .bind(d.created_at)
                .bind(d.created_at);
        }
        q.execute(&mut **tx)
            .await
            .map_err(db("queueing a delivery"))?;
        Ok(())
    }

    /// Changes a conversation's status, checked against the ownership state machine, and records
    /// the event (who and why). The one place statuses change.
    pub async fn apply_change(
        &self,
        conversation_id: &str,
        change: &StatusChange,
    ) -> std::result::Result<Applied, ChangeError> {
        let mut tx = self
            .write
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let applied = Self::apply_change_in(&mut tx, conversation_id, change, now_ms()).await?;
        tx.commit()
            .await
            .map_err(db("committing a status change"))?;
        Ok(applied)
    }

    pub(crate) async fn apply_change_in(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        conversation_id: &str,
        change: &StatusChange,
        now: i64,
    ) -> std::result::Result<Applied, ChangeError> {
        let row = sqlx::query("SELECT status, assignee FROM conversations WHERE id = $1")
            .bind(conversation_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db("reading a status"))?
            .ok_or_else(|| ChangeError::NotFound(conversation_id.to_string()))?;
        let from: String = row.try_get("status").map_err(db("reading a status"))?;
        let assignee: Option<String> = row.try_get("assignee").map_err(db("reading a status"))?;
        let from: Status = from.parse().map_err(StoreError::Corrupt)?;
        let to = ownership::next(from, change.action)?;
        if change.action == Action::TransferToAgent && change.assignee == assignee {
            return Err(ChangeError::Conflict(
                "the conversation is assigned to that agent already".into(),
            ));
        }
        let new_assignee = match to {
            Status::Assigned => Some(
                change
                    .assignee
                    .clone()
                    .ok_or_else(|| ChangeError::Conflict("an assignment needs an agent".into()))?,
            ),
            _ => None,
        };
        // Conditional on what was read: a concurrent change (another agent, another gateway
        // process) makes this update miss, and the loser gets a conflict instead of a silent
        // overwrite. The capacity check counts the agent's assigned conversations in the same
        // statement.
        let updated = sqlx::query(
            "UPDATE conversations SET status = $3, assignee = $4, updated_at = $5, \
             priority = CASE WHEN $6 > priority THEN $6 ELSE priority END, \
             team = COALESCE($7, team), \
             queued_at = CASE WHEN $3 = 'queued' AND status <> 'queued' THEN $5 ELSE queued_at END, \
             unanswered = CASE WHEN $3 = 'bot' THEN 0 ELSE unanswered END, \
             rating_requested_at = CASE WHEN $3 = 'resolved' THEN $5 ELSE rating_requested_at END, \
             rating = CASE WHEN $3 = 'resolved' THEN NULL ELSE rating END, \
             declined_by = CASE WHEN $3 = 'queued' THEN $10 ELSE NULL END \
             WHERE id = $1 AND status = $2 AND COALESCE(assignee, '') = $8 \
             AND ($9 < 0 OR (SELECT COUNT(*) FROM conversations x \
             WHERE x.assignee = $4 AND x.status = 'assigned') < $9)",
        )
        .bind(conversation_id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(new_assignee.as_deref())
        .bind(now)
        .bind(change.priority.unwrap_or(i64::MIN))
        .bind(change.team.as_deref())
        .bind(assignee.as_deref().unwrap_or(""))
        .bind(change.capacity.unwrap_or(-1))
        .bind(change.declined_by.as_deref())
        .execute(&mut **tx)
        .await
        .map_err(db("changing a status"))?;
        if updated.rows_affected() != 1 {
            return Err(ChangeError::Conflict(match change.capacity {
                Some(_) => {
                    "the conversation changed meanwhile, or the agent has no free slot".into()
                }
                None => "the conversation changed meanwhile".into(),
            }));
        }
        let mut details = change.details.clone();
        if !details.is_object() {
            details = serde_json::json!({});
        }
        details["action"] = change.action.as_str().into();
        if let Some(a) = &new_assignee {
            details["assignee"] = a.clone().into();
        }
        if let Some(t) = &change.team {
            details["team"] = t.clone().into();
        }
        Self::insert_event(
            tx,
            conversation_id,
            ("status", Some(from.as_str()), Some(to.as_str())),
            (&change.actor, &change.reason),
            &details,
            now,
        )
        .await?;
        Ok(Applied {
            from,
            to,
            previous_assignee: assignee,
        })
    }

    pub(crate) async fn insert_event(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        conversation_id: &str,
        (kind, from, to): (&str, Option<&str>, Option<&str>),
        (actor, reason): (&str, &str),
        details: &serde_json::Value,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO conversation_events (id, conversation_id, kind, from_status, to_status, \
             actor, reason, details, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(new_id())
        .bind(conversation_id)
        .bind(kind)
        .bind(from)
        .bind(to)
        .bind(actor)
        .bind(reason)
        .bind(details.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db("recording an event"))?;
        Ok(())
    }

    /// Adds a bot or system message and its outbox row, numbered next in its conversation.
    /// `(attempts, next_attempt_at)` is `(0, now)` for the worker, or `(1, lease end)` when
    /// reserved for this process's direct attempt. No outbox row without `outbox_row` (a
    /// channel that replays from the transcript; the caller publishes it).
    pub(crate) async fn append_outbound(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        (conversation_id, contact_id, channel, target): (&str, &str, &str, &str),
        msg: &NewMessage,
        now: i64,
        reservation: (i64, i64),
        outbox_row: bool,
    ) -> Result<Delivery> {
        let seq = Self::next_seq(tx, conversation_id, now).await?;
        let delivery = Delivery::new_row(
            (conversation_id, contact_id, channel, target),
            seq,
            msg,
            now,
            reservation,
            outbox_row,
        );
        Self::insert_messages_and_deliveries(tx, &[(&delivery, msg)]).await?;
        Ok(delivery)
    }

    fn delivery(row: &AnyRow) -> Result<Delivery> {
        let get = |e| StoreError::Db("reading a delivery", e);
        let author: String = row.try_get("author").map_err(get)?;
        let quick: String = row.try_get("quick_replies").map_err(get)?;
        Ok(Delivery {
            id: row.try_get("id").map_err(get)?,
            message_id: row.try_get("message_id").map_err(get)?,
            conversation_id: row.try_get("conversation_id").map_err(get)?,
            contact_id: row.try_get("contact_id").map_err(get)?,
            seq: row.try_get("seq").map_err(get)?,
            channel: row.try_get("channel").map_err(get)?,
            target: row.try_get("target").map_err(get)?,
            status: row.try_get("status").map_err(get)?,
            attempts: row.try_get("attempts").map_err(get)?,
            next_attempt_at: row.try_get("next_attempt_at").map_err(get)?,
            last_error: row.try_get("last_error").map_err(get)?,
            created_at: row.try_get("created_at").map_err(get)?,
            delivered_at: row.try_get("delivered_at").map_err(get)?,
            author: author.parse().map_err(StoreError::Corrupt)?,
            text: row.try_get("text").map_err(get)?,
            quick_replies: serde_json::from_str(&quick).unwrap_or_default(),
            message_created_at: row.try_get("message_created_at").map_err(get)?,
            outbox_row: true,
        })
    }

    /// Pending deliveries that are due, each the oldest pending one of its conversation (so a
    /// conversation's messages arrive in order even when an earlier one is being retried).
    pub async fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM outbox o JOIN messages m ON m.id = o.message_id \
             JOIN conversations c ON c.id = o.conversation_id \
             WHERE o.status = 'pending' AND o.next_attempt_at <= $1 AND NOT EXISTS \
             (SELECT 1 FROM outbox p WHERE p.conversation_id = o.conversation_id \
              AND p.channel = o.channel AND p.status = 'pending' AND p.seq < o.seq) \
             ORDER BY o.next_attempt_at LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .fetch_all(&self.read)
            .await
            .map_err(db("reading due deliveries"))?;
        rows.iter().map(Self::delivery).collect()
    }

    /// Reserves a delivery for one attempt until `lease_until`. False if someone else took it.
    pub async fn claim_delivery(&self, d: &Delivery, lease_until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $3, updated_at = $4 \
             WHERE id = $1 AND status = 'pending' AND attempts = $2",
        )
        .bind(&d.id)
        .bind(d.attempts)
        .bind(lease_until)
        .bind(now_ms())
        .execute(&self.write)
        .await
        .map_err(db("claiming a delivery"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks many deliveries done in one statement.
    pub async fn mark_delivered_many(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE outbox SET status = 'delivered', delivered_at = $1, updated_at = $2, \
             last_error = NULL WHERE id IN ({})",
            placeholders(3, ids.len())
        );
        let now = now_ms();
        let mut q = dynamic_query(self.backend, sql).bind(now).bind(now);
        for id in ids {
            q = q.bind(id);
        }
        q.execute(&self.write)
            .await
            .map_err(db("marking deliveries done"))?;
        Ok(())
    }

    /// Gives deliveries reserved for a direct attempt that was never made back to the worker,
    /// due at `now` (the reservation counted an attempt; it is taken back).
    pub async fn release_deliveries(&self, ids: &[String], now: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE outbox SET attempts = attempts - 1, next_attempt_at = $1, updated_at = $2 \
             WHERE status = 'pending' AND attempts > 0 AND id IN ({})",
            placeholders(3, ids.len())
        );
        let mut q = dynamic_query(self.backend, sql).bind(now).bind(now);
        for id in ids {
            q = q.bind(id);
        }
        q.execute(&self.write)
            .await
            .map_err(db("releasing deliveries"))?;
        Ok(())
    }

    /// Records a failed attempt: retried at `retry_at`, or dead when `retry_at` is None.
    pub async fn mark_failed(&self, id: &str, error: &str, retry_at: Option<i64>) -> Result<()> {
        let now = now_ms();
        let (status, next) = match retry_at {
            Some(at) => ("pending", at),
            None => ("dead", now),
        };
        sqlx::query(
            "UPDATE outbox SET status = $2, next_attempt_at = $3, last_error = $4, updated_at = $5 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(next)
        .bind(error)
        .bind(now)
        .execute(&self.write)
        .await
        .map_err(db("recording a failed delivery"))?;
        Ok(())
    }

    pub async fn list_deliveries(&self, status: Option<&str>, limit: i64) -> Result<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM outbox o JOIN messages m ON m.id = o.message_id \
             JOIN conversations c ON c.id = o.conversation_id \
             WHERE ($1 = '' OR o.status = $1) ORDER BY o.created_at DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.read)
            .await
            .map_err(db("listing deliveries"))?;
        rows.iter().map(Self::delivery).collect()
    }

    pub async fn delivery_by_id(&self, id: &str) -> Result<Option<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM outbox o JOIN messages m ON m.id = o.message_id \
             JOIN conversations c ON c.id = o.conversation_id WHERE o.id = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.write)
            .await
            .map_err(db("reading a delivery"))?;
        row.as_ref().map(Self::delivery).transpose()
    }

    /// Puts a dead delivery back in the queue with a fresh attempt budget. False if it is not dead.
    pub async fn retry_delivery(&self, id: &str) -> Result<bool> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $2, \
             updated_at = $2 WHERE id = $1 AND status = 'dead'",
        )
        .bind(id)
        .bind(now)
        .execute(&self.write)
        .await
        .map_err(db("retrying a delivery"))?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn outbox_counts(&self) -> Result<OutboxCounts> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS pending, \
             COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) AS dead \
             FROM outbox WHERE status <> 'delivered'",
        )
        .fetch_one(&self.read)
        .await
        .map_err(db("counting the outbox"))?;
        Ok(OutboxCounts {
            pending: row.try_get("pending").map_err(db("counting the outbox"))?,
            dead: row.try_get("dead").map_err(db("counting the outbox"))?,
        })
    }
}

/// Channels keep their small durable values (Telegram's polling offset) in the settings table.
#[async_trait::async_trait]
impl frontdesk_channels::ChannelState for Store {
    async fn load(
        &self,
        key: &str,
    ) -> std::result::Result<Option<String>, frontdesk_channels::GatewayError> {
        Ok(self.setting(key).await?)
    }

    async fn save(
        &self,
        key: &str,
        value: &str,
    ) -> std::result::Result<(), frontdesk_channels::GatewayError> {
        Ok(self.put_setting(key, value).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh SQLite file, and a fresh PostgreSQL database when FRONTDESK_TEST_DATABASE_URL is
    /// set (`scripts/test` sets it).
    async fn stores(dir: &std::path::Path) -> Vec<Store> {
        let sqlite = format!("sqlite://{}?mode=rwc", dir.join("store.db").display());
        let mut out = vec![Store::open(&sqlite, 4).await.expect("open SQLite")];
        if let Ok(admin) = std::env::var("FRONTDESK_TEST_DATABASE_URL") {
            use sqlx::Connection;
            let name = format!("fd_unit_{}", uuid::Uuid::now_v7().simple());
            let mut conn = sqlx::postgres::PgConnection::connect(&admin)
                .await
                .expect("connect to PostgreSQL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create a database");
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            let url = format!("{base}/{name}");
            out.push(Store::open(&url, 4).await.expect("open PostgreSQL"));
        }
        out
    }

    /// The bot's turn on a conversation's first customer message (on `crm`), with one reply.
    fn first_turn(conversation_id: &str, reply: &str) -> TurnOutcome {
        TurnOutcome {
            conversation_id: conversation_id.to_string(),
            contact_id: String::new(),
            channel: "crm".into(),
            target: String::new(),
            expected_processed_seq: 0,
            started_status: "bot".into(),
            rating: None,
            message_seq: 1,
            message_annotations: serde_json::json!({}),
            language: None,
            status_change: None,
            unanswered: None,
            replies: vec![NewMessage::text(Author::Bot, reply)],
            channel_replays_from_store: false,
        }
    }

    fn inbound(contact: &str, id: &str) -> InboundMessage {
        InboundMessage {
            channel: "crm".into(),
            contact_external_id: contact.into(),
            external_message_id: id.into(),
            text: format!("text of {id}"),
            contact_name: None,
            contact_email: None,
            metadata: serde_json::json!({ "id": id }),
        }
    }

    /// `messages` stored by the ingest writer's batch path, as one batch (the writer itself falls
    /// back to one by one when a batch fails, which would hide a broken batch).
    async fn ingest_as_one_batch(store: &Store, messages: &[InboundMessage]) -> Vec<Ingested> {
        let jobs: Vec<IngestJob> = messages
            .iter()
            .map(|m| IngestJob {
                message: m.clone(),
                reply: oneshot::channel().0,
            })
            .collect();
        Store::ingest_batch(&store.write, &jobs)
            .await
            .expect("the batch is stored")
    }

    /// The batch path itself (the writer falls back to one by one when it fails, which would hide
    /// a broken batch): known senders, a first message opening a conversation, retries of a stored
    /// message and of one earlier in the batch, all as one by one would store them.
    #[tokio::test]
    async fn a_mixed_batch_of_customer_messages_is_stored_as_one_by_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        for store in stores(dir.path()).await {
            let backend = store.backend();
            let first = store
                .ingest(&inbound("ann", "a0"))
                .await
                .expect("first")
                .ack;
            let ann = first.conversation_id.clone();
            let batch = [
                inbound("ann", "a1"),
                inbound("bob", "b1"), // opens a conversation
                inbound("ann", "a2"),
                inbound("ann", "a1"), // retried within the batch
                inbound("ann", "a0"), // retried after it was stored
                inbound("ann", "a3"),
                inbound("cid", "c1"), // opens a conversation
                inbound("cid", "c2"), // and writes again in the same batch
            ];
            let acks: Vec<(String, i64, bool)> = ingest_as_one_batch(&store, &batch)
                .await
                .into_iter()
                .map(|a| (a.ack.conversation_id, a.ack.seq, a.ack.duplicate))
                .collect();
            assert_eq!(acks[0], (ann.clone(), 2, false), "{backend:?}");
            assert_eq!(acks[2], (ann.clone(), 3, false), "{backend:?}");
            assert_eq!(acks[3], (ann.clone(), 2, true), "{backend:?}");
            assert_eq!(acks[4], (ann.clone(), 1, true), "{backend:?}");
            assert_eq!(acks[5], (ann.clone(), 4, false), "{backend:?}");
            let bob = acks[1].0.clone();
            assert_eq!(acks[1], (bob.clone(), 1, false), "{backend:?}");
            let cid = acks[6].0.clone();
            assert!(cid != ann && cid != bob && bob != ann);
            assert_eq!(acks[6], (cid.clone(), 1, false), "{backend:?}");
            assert_eq!(acks[7], (cid.clone(), 2, false), "{backend:?}");
            for (conversation, ids) in [
                (&ann, vec!["a0", "a1", "a2", "a3"]),
                (&bob, vec!["b1"]),
                (&cid, vec!["c1", "c2"]),
            ] {
                let transcript = store.transcript(conversation).await.expect("transcript");
                let got: Vec<(i64, String)> = transcript
                    .iter()
                    .map(|m| (m.message.seq, m.message.text.clone()))
                    .collect();
                let want: Vec<(i64, String)> = ids
                    .iter()
                    .zip(1..)
                    .map(|(id, seq)| (seq, format!("text of {id}")))
                    .collect();
                assert_eq!(got, want, "{backend:?}");
            }

            // Quiet bot turns on those conversations: two expect a processed_seq their
            // conversation is not at (another worker got there first), two claim their message.
            let turn = |conversation: &str, expected: i64, seq: i64| TurnJob {
                turn: TurnOutcome {
                    conversation_id: conversation.to_string(),
                    contact_id: String::new(),
                    channel: "crm".into(),
                    target: String::new(),
                    expected_processed_seq: expected,
                    started_status: "bot".into(),
                    rating: None,
                    message_seq: seq,
                    message_annotations: serde_json::json!({ "turn": seq }),
                    language: Some("en".into()),
                    status_change: None,
                    unanswered: Some(seq),
                    replies: Vec::new(),
                    channel_replays_from_store: false,
                },
                lease_until: 0,
                reply: oneshot::channel().0,
            };
            let turns = [
                turn(&ann, -1, 4),
                turn(&bob, 0, 1),
                turn(&cid, 5, 2),
                turn(&cid, 0, 2),
            ];
            let results = Store::commit_turns(&store.write, &turns)
                .await
                .expect("turns");
            let outcome: Vec<bool> = results
                .iter()
                .map(|r| matches!(r, Committed::Stored(d) if d.is_empty()))
                .collect();
            // cid appears twice, so both its turns are committed one by one, in order.
            assert_eq!(outcome, [false, true, false, true], "{backend:?}");
            for (conversation, seq) in [(&ann, 0), (&bob, 1), (&cid, 2)] {
                let c = store
                    .conversation(conversation)
                    .await
                    .expect("read")
                    .expect("exists");
                assert_eq!(c.processed_seq, seq, "{backend:?}");
                let language = (seq > 0).then_some("en");
                assert_eq!(c.language.as_deref(), language, "{backend:?}");
                let transcript = store.transcript(conversation).await.expect("transcript");
                let annotated: Vec<i64> = transcript
                    .iter()
                    .filter(|m| m.annotations == serde_json::json!({ "turn": m.message.seq }))
                    .map(|m| m.message.seq)
                    .collect();
                let expected: Vec<i64> = (seq > 0).then_some(seq).into_iter().collect();
                assert_eq!(annotated, expected, "{backend:?}");
            }
            store.close().await;
        }
    }

    /// A customer message into a conversation a person owns, with every earlier message handled,
    /// is settled as it is stored (one by one and in a batch): `processed_seq` moves to it and it
    /// carries the ownership stage's annotations. Not when an earlier message still waits for a
    /// turn, and not when the bot owns the conversation.
    #[tokio::test]
    async fn a_message_to_a_person_owned_conversation_is_settled_as_it_is_stored() {
        let dir = tempfile::tempdir().expect("temp dir");
        for store in stores(dir.path()).await {
            let backend = store.backend();
            let mut ids = HashMap::new();
            for contact in ["dan", "eve", "fay"] {
                let first = store
                    .ingest(&inbound(contact, &format!("{contact}1")))
                    .await
                    .expect("first");
                assert!(
                    !first.settled(),
                    "{backend:?}: the bot owns a new conversation"
                );
                ids.insert(contact, first.ack.conversation_id);
            }
            // dan: queued, its first message handled. eve: queued with it still waiting. fay: the
            // bot's, its first message handled.
            for (contact, status, processed) in [
                ("dan", "queued", 1),
                ("eve", "queued", 0),
                ("fay", "bot", 1),
            ] {
                sqlx::query(
                    "UPDATE conversations SET status = $1, processed_seq = $2 WHERE id = $3",
                )
                .bind(status)
                .bind(processed)
                .bind(&ids[contact])
                .execute(&store.write)
                .await
                .expect("set up");
            }
            // A message to dan from the gateway's side: it waits for no turn, so it changes nothing.
            let dan = store
                .conversation(&ids["dan"])
                .await
                .expect("read")
                .expect("exists");
            store
                .post_message(
                    &dan,
                    &NewMessage::text(Author::System, "an agent joined"),
                    false,
                )
                .await
                .expect("notice");
            let mut settled_alone = Vec::new();
            for contact in ["dan", "eve", "fay"] {
                let got = store
                    .ingest(&inbound(contact, &format!("{contact}2")))
                    .await
                    .expect("ingest");
                settled_alone.push((got.ack.seq, got.settled()));
            }
            assert_eq!(
                settled_alone,
                [(3, true), (2, false), (2, false)],
                "{backend:?}"
            );

            let batch = [
                inbound("dan", "dan3"),
                inbound("eve", "eve3"),
                inbound("dan", "dan4"),
                inbound("fay", "fay3"),
            ];
            let settled_batch: Vec<(i64, bool)> = ingest_as_one_batch(&store, &batch)
                .await
                .into_iter()
                .map(|a| (a.ack.seq, a.settled()))
                .collect();
            assert_eq!(
                settled_batch,
                [(4, true), (3, false), (5, true), (3, false)],
                "{backend:?}"
            );

            let silent = serde_json::Value::Object(crate::pipeline::human_owner_annotations());
            for (contact, processed, last, annotated) in [
                ("dan", 5, 5, vec![3, 4, 5]),
                ("eve", 0, 3, vec![]),
                ("fay", 1, 3, vec![]),
            ] {
                let c = store
                    .conversation(&ids[contact])
                    .await
                    .expect("read")
                    .expect("exists");
                assert_eq!(
                    (c.processed_seq, c.last_seq),
                    (processed, last),
                    "{backend:?} {contact}"
                );
                let transcript = store.transcript(&ids[contact]).await.expect("transcript");
                let got: Vec<i64> = transcript
                    .iter()
                    .filter(|m| m.annotations == silent)
                    .map(|m| m.message.seq)
                    .collect();
                assert_eq!(got, annotated, "{backend:?} {contact}");
            }
            let mut waiting = store
                .conversations_with_unprocessed()
                .await
                .expect("unprocessed");
            waiting.sort();
            let mut want = vec![ids["eve"].clone(), ids["fay"].clone()];
            want.sort();
            assert_eq!(waiting, want, "{backend:?}");
            store.close().await;
        }
    }

    /// What the router read before the batched reader, as the test's independent answer: the
    /// conversation, then its customer messages after `processed_seq`, at most 100.
    async fn pending_turn_one_by_one(store: &Store, id: &str) -> PendingTurn {
        let conversation = store.conversation(id).await.expect("read").expect("exists");
        let rows = sqlx::query(
            "SELECT conversation_id, seq, author, text, created_at, metadata, quick_replies \
             FROM messages WHERE conversation_id = $1 AND seq > $2 AND author = 'customer' \
             ORDER BY seq LIMIT 100",
        )
        .bind(&conversation.id)
        .bind(conversation.processed_seq)
        .fetch_all(&store.read)
        .await
        .expect("unprocessed");
        let pending = rows
            .iter()
            .map(Store::stored_message)
            .collect::<Result<Vec<_>>>()
            .expect("messages");
        (conversation, pending)
    }

    /// A bot reply on a channel whose clients replay from the transcript (the web chat) gets no
    /// outbox row and waits for nothing; on another channel it gets a row, reserved for this
    /// process, behind the conversation's pending notice.
    #[tokio::test]
    async fn a_reply_on_a_transcript_channel_is_stored_without_an_outbox_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        for store in stores(dir.path()).await {
            let backend = store.backend();
            let mut turns = Vec::new();
            for (contact, replays) in [("ann", true), ("bob", false)] {
                let ack = store
                    .ingest(&inbound(contact, &format!("{contact}-1")))
                    .await
                    .expect("ingest")
                    .ack;
                let c = store
                    .conversation(&ack.conversation_id)
                    .await
                    .expect("read")
                    .expect("exists");
                // A system notice queued for the outbox worker: still pending.
                store
                    .post_message(&c, &NewMessage::text(Author::System, "a notice"), true)
                    .await
                    .expect("notice");
                turns.push(TurnJob {
                    turn: TurnOutcome {
                        channel_replays_from_store: replays,
                        ..first_turn(&c.id, "the answer")
                    },
                    lease_until: now_ms() + 60_000,
                    reply: oneshot::channel().0,
                });
            }
            let (ann, bob) = (
                turns[0].turn.conversation_id.clone(),
                turns[1].turn.conversation_id.clone(),
            );
            let committed = Store::commit_turns(&store.write, &turns)
                .await
                .expect("turns");
            let direct: Vec<&Direct> = committed
                .iter()
                .flat_map(|c| match c {
                    Committed::Stored(d) => d.iter().collect(),
                    Committed::AlreadyHandled => Vec::new(),
                })
                .collect();
            assert_eq!(direct.len(), 2, "{backend:?}");
            let rows = store.list_deliveries(None, 100).await.expect("deliveries");
            let rows_of = |id: &str| -> Vec<&Delivery> {
                rows.iter().filter(|d| d.conversation_id == id).collect()
            };
            let notice = |id: &str| -> String {
                rows_of(id)
                    .iter()
                    .find(|d| d.author == Author::System)
                    .expect("the notice's row")
                    .id
                    .clone()
            };

            let to_ann = direct[0];
            assert_eq!(to_ann.delivery.conversation_id, ann);
            assert!(!to_ann.delivery.outbox_row, "{backend:?}");
            assert!(to_ann.waits_for.is_empty(), "{backend:?}");
            assert_eq!(rows_of(&ann).len(), 1, "only the notice: {rows:#?}");
            notice(&ann);

            let to_bob = direct[1];
            assert_eq!(to_bob.delivery.conversation_id, bob);
            assert!(to_bob.delivery.outbox_row, "{backend:?}");
            assert_eq!(to_bob.waits_for, [notice(&bob)], "{backend:?}");
            let bob_reply = rows_of(&bob)
                .into_iter()
                .find(|d| d.author == Author::Bot)
                .expect("bob's reply has a row");
            assert_eq!(
                (bob_reply.status.as_str(), bob_reply.attempts),
                ("pending", 1),
                "reserved for a direct attempt: {backend:?}"
            );

            // Either way the reply is in the transcript, numbered after the notice.
            for id in [&ann, &bob] {
                let transcript = store.transcript(id).await.expect("transcript");
                let last = transcript.last().expect("messages");
                assert_eq!(
                    (
                        last.message.seq,
                        last.message.author,
                        last.message.text.as_str()
                    ),
                    (3, Author::Bot, "the answer"),
                    "{backend:?}"
                );
            }
        }
    }

    /// The router's batched read answers as the two reads one by one would: only customer
    /// messages after the conversation's `processed_seq`, at most 100, oldest first; nothing for a
    /// conversation that does not exist; the same answer to a conversation asked twice at once.
    #[tokio::test]
    async fn pending_turns_read_in_a_batch_match_the_reads_one_by_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        for store in stores(dir.path()).await {
            let backend = store.backend();
            let mut ann = String::new();
            for i in 0..3 {
                ann = store
                    .ingest(&inbound("ann", &format!("a{i}")))
                    .await
                    .expect("ann")
                    .ack
                    .conversation_id;
            }
            let mut bob = String::new();
            for i in 0..105 {
                bob = store
                    .ingest(&inbound("bob", &format!("b{i}")))
                    .await
                    .expect("bob")
                    .ack
                    .conversation_id;
            }
            // A turn handled ann's first message, and its reply is not a customer message.
            let turn = TurnJob {
                turn: first_turn(&ann, "a bot reply"),
                lease_until: 0,
                reply: oneshot::channel().0,
            };
            let committed = Store::commit_turns(&store.write, std::slice::from_ref(&turn))
                .await
                .expect("turn");
            assert!(
                matches!(committed[..], [Committed::Stored(_)]),
                "{backend:?}"
            );

            let ids = [ann.clone(), bob.clone(), "missing".to_string()];
            let batch = Store::read_pending(&store.read, backend, &ids)
                .await
                .expect("batch read");
            assert_eq!(batch.len(), 2, "{backend:?}");
            let seqs = |id: &str| -> Vec<i64> { batch[id].1.iter().map(|m| m.seq).collect() };
            // ann: 1 customer message handled, then the bot's reply (seq 4), 2 and 3 left.
            assert_eq!(seqs(&ann), [2, 3], "{backend:?}");
            assert_eq!(batch[&ann].0.processed_seq, 1, "{backend:?}");
            assert_eq!(seqs(&bob), (1..=100).collect::<Vec<i64>>(), "{backend:?}");
            assert!(batch[&bob].1.iter().all(|m| m.author == Author::Customer));

            // Through the reader, concurrently (one batch), ann asked twice.
            let (a1, a2, b, missing) = tokio::join!(
                store.pending_turn(&ann),
                store.pending_turn(&ann),
                store.pending_turn(&bob),
                store.pending_turn("missing"),
            );
            for (got, id) in [(a1, &ann), (a2, &ann), (b, &bob)] {
                let (conversation, pending) = got.expect("read").expect("exists");
                let (want_c, want_p) = pending_turn_one_by_one(&store, id).await;
                assert_eq!(conversation.id, want_c.id, "{backend:?}");
                assert_eq!(conversation.status, want_c.status, "{backend:?}");
                assert_eq!(
                    conversation.processed_seq, want_c.processed_seq,
                    "{backend:?}"
                );
                let texts = |p: &[StoredMessage]| -> Vec<(i64, String)> {
                    p.iter().map(|m| (m.seq, m.text.clone())).collect()
                };
                assert_eq!(texts(&pending), texts(&want_p), "{backend:?}");
            }
            assert!(missing.expect("read").is_none(), "{backend:?}");
            store.close().await;
        }
    }

    /// The console feed's one read of a batch's new events gives what reading each conversation's
    /// events after the same count gives, with the conversation's total; a conversation not sent
    /// yet gets its newest event only.
    #[tokio::test]
    async fn new_events_read_in_a_batch_match_the_reads_one_by_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        for store in stores(dir.path()).await {
            let backend = store.backend();
            let mut ids = Vec::new();
            for contact in ["ann", "bob", "cy"] {
                let ack = store
                    .ingest(&inbound(contact, &format!("{contact}-1")))
                    .await
                    .expect("ingest")
                    .ack;
                ids.push(ack.conversation_id);
            }
            let (ann, bob, cy) = (&ids[0], &ids[1], &ids[2]);
            // ann: handed off, assigned, resolved; bob: handed off; cy: no events.
            let assign = StatusChange {
                assignee: Some("agent-1".into()),
                ..StatusChange::new(Action::Assign, "queue", "ann-2")
            };
            for (id, change) in [
                (ann, StatusChange::new(Action::HandOff, "bot", "ann-1")),
                (ann, assign),
                (ann, StatusChange::new(Action::Resolve, "agent", "ann-3")),
                (bob, StatusChange::new(Action::HandOff, "bot", "bob-1")),
            ] {
                store.apply_change(id, &change).await.expect("change");
            }

            let reasons = |events: &[ConversationEvent]| -> Vec<String> {
                events.iter().map(|e| e.reason.clone()).collect()
            };
            let new = store
                .new_events(&[
                    (ann.clone(), Some(1)),
                    (bob.clone(), None),
                    (cy.clone(), None),
                ])
                .await
                .expect("batch read");
            assert_eq!(reasons(&new[ann].events), ["ann-2", "ann-3"], "{backend:?}");
            assert_eq!(new[ann].total, 3, "{backend:?}");
            assert_eq!(reasons(&new[bob].events), ["bob-1"], "{backend:?}");
            assert_eq!(new[bob].total, 1, "{backend:?}");
            assert!(!new.contains_key(cy), "{backend:?}");
            let one_by_one = Store::events_from_on(&store.read, ann, 1)
                .await
                .expect("one by one");
            assert_eq!(reasons(&new[ann].events), reasons(&one_by_one));
            let a = &new[ann].events[0];
            let b = &one_by_one[0];
            assert_eq!(
                (
                    &a.kind,
                    &a.from_status,
                    &a.to_status,
                    &a.actor,
                    a.created_at_ms
                ),
                (
                    &b.kind,
                    &b.from_status,
                    &b.to_status,
                    &b.actor,
                    b.created_at_ms
                ),
                "{backend:?}"
            );

            // Sent up to date (and a conversation unknown to the store): nothing.
            let none = store
                .new_events(&[
                    (ann.clone(), Some(3)),
                    (bob.clone(), Some(1)),
                    ("missing".into(), None),
                ])
                .await
                .expect("batch read");
            assert!(none.is_empty(), "{backend:?}: {none:?}");
            // A conversation not sent yet: only its newest event, with the total.
            let newest = store
                .new_events(&[(ann.clone(), None)])
                .await
                .expect("batch read");
            assert_eq!(reasons(&newest[ann].events), ["ann-3"], "{backend:?}");
            assert_eq!(newest[ann].total, 3, "{backend:?}");
            store.close().await;
        }
    }

    #[test]
    fn value_rows_number_their_placeholders_row_after_row() {
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(value_rows(1, 1), "($1)");
        assert_eq!(value_rows(0, 4), "");
    }

    #[test]
    fn only_numbered_parameters_in_order_become_anonymous() {
        assert_eq!(
            anonymous_parameters("SELECT 'a$1' FROM t WHERE x = $1 AND y IN ($2, $3)").as_deref(),
            Some("SELECT 'a$1' FROM t WHERE x = ? AND y IN (?, ?)")
        );
        assert_eq!(anonymous_parameters("SET a = $1, b = $1"), None);
        assert_eq!(anonymous_parameters("WHERE a = $2 AND b = $1"), None);
        assert_eq!(anonymous_parameters("WHERE a = $1 AND b = $3"), None);
        assert_eq!(
            anonymous_parameters("no parameters").as_deref(),
            Some("no parameters")
        );
    }
}
