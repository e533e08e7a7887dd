//! The agents' desk: what agents (and integrations) do with conversations — list them, open one
//! with its transcript and decision trail, take, transfer, resolve, hand back, reply, write an
//! internal note, show typing, get suggested answers. Every status change goes through the
//! ownership state machine ([`crate::ownership`], applied by [`Store::apply_change`]); this module
//! adds who may do what, and what the customer is told.

use std::collections::HashMap;
use std::sync::Arc;

use frontdesk_channels::{now_ms, Author, QuickReply};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;
use tokio::sync::Notify;
use utoipa::ToSchema;

use crate::agents::Agent;
use crate::i18n::{self, Phrase};
use crate::knowledge::KnowledgeBase;
use crate::live::Live;
use crate::metrics as m;
use crate::ownership::{Action, Status};
use crate::replies::Replies;
use crate::router::Router;
use crate::store::{
    db, dynamic_query, messages_after_terms, placeholders, value_rows, Backend, ChangeError,
    Conversation, ConversationEvent, Delivery, Direct, NewMessage, Result, StatusChange, Store,
    StoreError, TranscriptMessage,
};

/// Whether an agent may see a conversation: its own, or one for a team it belongs to. Admins see
/// everything.
pub fn may_see(agent: &Agent, team: Option<&str>, assignee: Option<&str>) -> bool {
    agent.is_admin() || assignee == Some(agent.id.as_str()) || agent.in_team(team)
}

/// Who is asking: an agent (by session or bearer token), or the gateway's admin token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub agent: Option<Agent>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.agent.as_ref().is_none_or(Agent::is_admin)
    }

    fn name(&self) -> String {
        self.agent
            .as_ref()
            .map_or_else(|| "admin".to_string(), |a| a.name.clone())
    }

    fn may_see(&self, c: &Conversation) -> bool {
        match &self.agent {
            Some(a) => may_see(a, c.team.as_deref(), c.assignee.as_deref()),
            None => true,
        }
    }

    fn owns(&self, c: &Conversation) -> bool {
        self.agent
            .as_ref()
            .is_some_and(|a| c.assignee.as_deref() == Some(a.id.as_str()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error("no conversation {0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ChangeError> for DeskError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::NotFound(id) => DeskError::NotFound(id),
            ChangeError::Refused(r) => DeskError::Conflict(r.to_string()),
            ChangeError::Conflict(m) => DeskError::Conflict(m),
            ChangeError::Store(s) => DeskError::Store(s),
        }
    }
}

pub type DeskResult<T> = std::result::Result<T, DeskError>;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct AgentRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ContactRef {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct LastMessage {
    pub seq: i64,
    pub author: String,
    pub text: String,
    pub created_at_ms: i64,
}

/// A conversation as lists show it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Summary {
    pub id: String,
    pub channel: String,
    /// `webchat`, `webhook`, `telegram`, `discord`.
    pub channel_kind: String,
    pub status: String,
    pub assignee: Option<AgentRef>,
    pub team: Option<String>,
    pub language: Option<String>,
    pub priority: i64,
    pub queued_at_ms: Option<i64>,
    pub last_message_at_ms: Option<i64>,
    pub last_seq: i64,
    pub contact: ContactRef,
    pub last_message: Option<LastMessage>,
    /// The latest customer message's emotion.
    #[schema(value_type = Option<Object>)]
    pub emotion: Option<serde_json::Value>,
    /// Why it was last handed to a person ("angry, 0.93").
    pub handoff_reason: Option<String>,
    pub rating: Option<i64>,
}

/// Which conversations a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// Queued, highest priority first, then the longest waiting.
    Waiting,
    /// Assigned to the caller.
    Mine,
    /// Everything not resolved.
    #[default]
    Open,
    All,
}

/// A conversation's events the console feed has not sent, and its count of events.
#[derive(Debug, Default)]
pub struct NewEvents {
    pub events: Vec<ConversationEvent>,
    pub total: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub view: View,
    pub status: Option<String>,
    pub channel: Option<String>,
    pub assignee: Option<String>,
    pub limit: i64,
}

const SUMMARY_SQL: &str = "SELECT c.id, c.channel, c.status, c.assignee, a.name AS assignee_name, \
     c.team, c.language, c.priority, c.queued_at, c.last_message_at, c.last_seq, c.contact_id, \
     ct.name AS contact_name, ct.email AS contact_email, c.rating, \
     lm.author AS lm_author, lm.text AS lm_text, lm.created_at AS lm_created_at, \
     (SELECT m.annotations FROM messages m WHERE m.conversation_id = c.id \
      AND m.author = 'customer' ORDER BY m.seq DESC LIMIT 1) AS customer_annotations, \
     (SELECT e.reason FROM conversation_events e WHERE e.conversation_id = c.id \
      AND e.kind = 'status' AND e.to_status = 'queued' AND e.actor = 'bot' \
      ORDER BY e.created_at DESC, e.id DESC LIMIT 1) AS handoff_reason \
     FROM conversations c JOIN contacts ct ON ct.id = c.contact_id \
     LEFT JOIN agents a ON a.id = c.assignee \
     LEFT JOIN messages lm ON lm.conversation_id = c.id AND lm.seq = c.last_seq";

/// The `WHERE` that `read_summaries` takes to read these conversations (bound in order).
fn ids_filter(ids: &[String]) -> String {
    format!(" WHERE c.id IN ({})", placeholders(1, ids.len()))
}

fn summary_from_row(r: &AnyRow, kind_of: &dyn Fn(&str) -> &'static str) -> Result<Summary> {
    let get = |e| StoreError::Db("reading a conversation summary", e);
    let channel: String = r.try_get("channel").map_err(get)?;
    let assignee: Option<String> = r.try_get("assignee").map_err(get)?;
    let assignee_name: Option<String> = r.try_get("assignee_name").map_err(get)?;
    let last_seq: i64 = r.try_get("last_seq").map_err(get)?;
    let lm_author: Option<String> = r.try_get("lm_author").map_err(get)?;
    let annotations: Option<String> = r.try_get("customer_annotations").map_err(get)?;
    let emotion = annotations
        .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
        .and_then(|a| a.get("emotion").cloned())
        .filter(|e| !e.is_null());
    Ok(Summary {
        id: r.try_get("id").map_err(get)?,
        channel_kind: kind_of(&channel).to_string(),
        channel,
        status: r.try_get("status").map_err(get)?,
        assignee: assignee.map(|id| AgentRef {
            name: assignee_name.unwrap_or_else(|| id.clone()),
            id,
        }),
        team: r.try_get("team").map_err(get)?,
        language: r.try_get("language").map_err(get)?,
        priority: r.try_get("priority").map_err(get)?,
        queued_at_ms: r.try_get("queued_at").map_err(get)?,
        last_message_at_ms: r.try_get("last_message_at").map_err(get)?,
        last_seq,
        contact: ContactRef {
            id: r.try_get("contact_id").map_err(get)?,
            name: r.try_get("contact_name").map_err(get)?,
            email: r.try_get("contact_email").map_err(get)?,
        },
        last_message: match lm_author {
            Some(author) => Some(LastMessage {
                seq: last_seq,
                author,
                text: r.try_get("lm_text").map_err(get)?,
                created_at_ms: r.try_get("lm_created_at").map_err(get)?,
            }),
            None => None,
        },
        emotion,
        handoff_reason: r.try_get("handoff_reason").map_err(get)?,
        rating: r.try_get("rating").map_err(get)?,
    })
}

impl Store {
    pub async fn summary(
        &self,
        id: &str,
        kind_of: impl Fn(&str) -> &'static str,
    ) -> Result<Option<Summary>> {
        Ok(self.summaries_of(&[id.to_string()], kind_of).await?.pop())
    }

    /// Summaries read by `SUMMARY_SQL` followed by `rest` (where, order, limit), which uses
    /// `binds` for its placeholders in order.
    async fn read_summaries(
        &self,
        rest: &str,
        binds: &[String],
        kind_of: impl Fn(&str) -> &'static str,
    ) -> Result<Vec<Summary>> {
        Self::read_summaries_on(&self.read, self.backend(), rest, binds, kind_of).await
    }

    /// `read_summaries`, read through `on` (the pool, or a transaction whose snapshot other reads
    /// share).
    async fn read_summaries_on<'e>(
        on: impl sqlx::Executor<'e, Database = sqlx::Any>,
        backend: Backend,
        rest: &str,
        binds: &[String],
        kind_of: impl Fn(&str) -> &'static str,
    ) -> Result<Vec<Summary>> {
        let sql = format!("{SUMMARY_SQL}{rest}");
        let mut query = dynamic_query(backend, sql);
        for b in binds {
            query = query.bind(b);
        }
        let rows = query
            .fetch_all(on)
            .await
            .map_err(db("reading conversation summaries"))?;
        rows.iter().map(|r| summary_from_row(r, &kind_of)).collect()
    }

    /// One conversation's summary, transcript and events, read from one snapshot. Read as three
    /// separate statements, a change committed between them showed its new message beside the
    /// old status (or a new rating beside a transcript without the thanks for it). SQLite keeps
    /// a read transaction's snapshot from its first read; PostgreSQL needs repeatable read.
    pub async fn conversation_view(
        &self,
        id: &str,
        kind_of: impl Fn(&str) -> &'static str,
    ) -> Result<Option<(Summary, Vec<TranscriptMessage>, Vec<ConversationEvent>)>> {
        let mut tx = self
            .read
            .begin()
            .await
            .map_err(db("reading a conversation"))?;
        if self.backend() == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(db("reading a conversation"))?;
        }
        let ids = [id.to_string()];
        let summary =
            Self::read_summaries_on(&mut *tx, self.backend(), &ids_filter(&ids), &ids, kind_of)
                .await?
                .pop();
        let Some(summary) = summary else {
            return Ok(None);
        };
        let messages = Self::transcript_on(&mut *tx, id).await?;
        let events = Self::events_from_on(&mut *tx, id, 0).await?;
        tx.commit().await.map_err(db("reading a conversation"))?;
        Ok(Some((summary, messages, events)))
    }

    /// Several conversations' summaries in one read (the console feed's batches).
    pub async fn summaries_of(
        &self,
        ids: &[String],
        kind_of: impl Fn(&str) -> &'static str,
    ) -> Result<Vec<Summary>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read_summaries(&ids_filter(ids), ids, kind_of).await
    }

    /// Several conversations' messages after a seq each, in one read, oldest first.
    pub async fn transcripts_after(
        &self,
        after: &[(String, i64)],
    ) -> Result<HashMap<String, Vec<TranscriptMessage>>> {
        let mut out: HashMap<String, Vec<TranscriptMessage>> = HashMap::new();
        if after.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT conversation_id, seq, author, text, created_at, metadata, quick_replies, \
             annotations FROM messages WHERE {} ORDER BY conversation_id, seq",
            messages_after_terms(after.len())
        );
        let mut q = dynamic_query(self.backend(), sql);
        for (id, seq) in after {
            q = q.bind(id).bind(*seq);
        }
        let rows = q
            .fetch_all(&self.read)
            .await
            .map_err(db("reading new messages"))?;
        for r in &rows {
            let m = Self::transcript_message(r)?;
            out.entry(m.message.conversation_id.clone())
                .or_default()
                .push(m);
        }
        Ok(out)
    }

    /// Each conversation's events after the first `sent` of them (None: only its newest, for a
    /// conversation the console feed has not sent yet), oldest first, and how many it has in
    /// all; one read for the batch.
    ///
    /// Why one read: after a burst of takes every conversation of a feed batch has a new event,
    /// and reading them one statement each queued the feed behind the agents' requests on the
    /// read connections for seconds.
    pub async fn new_events(
        &self,
        sent: &[(String, Option<usize>)],
    ) -> Result<HashMap<String, NewEvents>> {
        let mut out: HashMap<String, NewEvents> = HashMap::new();
        if sent.is_empty() {
            return Ok(out);
        }
        // `skip` -1 stands for "all but the newest".
        let sql = format!(
            "WITH s(id, skip) AS (VALUES {}) \
             SELECT conversation_id, kind, from_status, to_status, actor, reason, details, \
             created_at, n, total FROM (SELECT e.conversation_id, e.kind, e.from_status, \
             e.to_status, e.actor, e.reason, e.details, e.created_at, s.skip, \
             ROW_NUMBER() OVER (PARTITION BY e.conversation_id ORDER BY e.created_at, e.id) AS n, \
             COUNT(*) OVER (PARTITION BY e.conversation_id) AS total \
             FROM conversation_events e JOIN s ON e.conversation_id = s.id) x \
             WHERE n > CASE WHEN skip < 0 THEN total - 1 ELSE skip END \
             ORDER BY conversation_id, n",
            value_rows(sent.len(), 2)
        );
        let mut q = dynamic_query(self.backend(), sql);
        for (id, skip) in sent {
            let skip = skip.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
            q = q.bind(id).bind(skip);
        }
        let rows = q
            .fetch_all(&self.read)
            .await
            .map_err(db("reading new events"))?;
        let get = |e| StoreError::Db("reading new events", e);
        for r in &rows {
            let id: String = r.try_get("conversation_id").map_err(get)?;
            let total: i64 = r.try_get("total").map_err(get)?;
            let new = out.entry(id).or_default();
            new.events.push(Self::conversation_event(r)?);
            new.total = usize::try_from(total).unwrap_or(0);
        }
        Ok(out)
    }

    /// Conversations for a list, as `viewer` may see them (none = everything).
    pub async fn summaries(
        &self,
        filter: &ListFilter,
        viewer: Option<&Agent>,
        kind_of: impl Fn(&str) -> &'static str,
    ) -> Result<Vec<Summary>> {
        let mut clauses: Vec<String> = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        let bind = |value: String, binds: &mut Vec<String>| {
            binds.push(value);
            format!("${}", binds.len())
        };
        let order = match filter.view {
            View::Waiting => {
                clauses.push("c.status = 'queued'".into());
                "c.priority DESC, c.queued_at ASC, c.id ASC"
            }
            View::Mine => {
                let me = viewer.map(|a| a.id.clone()).unwrap_or_default();
                clauses.push(format!(
                    "c.status = 'assigned' AND c.assignee = {}",
                    bind(me, &mut binds)
                ));
                "c.last_message_at DESC, c.id DESC"
            }
            View::Open => {
                clauses.push("c.status <> 'resolved'".into());
                "c.priority DESC, c.last_message_at DESC, c.id DESC"
            }
            View::All => "c.updated_at DESC, c.id DESC",
        };
        if let Some(s) = &filter.status {
            clauses.push(format!("c.status = {}", bind(s.clone(), &mut binds)));
        }
        if let Some(ch) = &filter.channel {
            clauses.push(format!("c.channel = {}", bind(ch.clone(), &mut binds)));
        }
        if let Some(a) = &filter.assignee {
            clauses.push(format!("c.assignee = {}", bind(a.clone(), &mut binds)));
        }
        if let Some(agent) = viewer.filter(|a| !a.is_admin() && !a.teams.is_empty()) {
            let me = bind(agent.id.clone(), &mut binds);
            let teams: Vec<String> = agent
                .teams
                .iter()
                .map(|t| bind(t.clone(), &mut binds))
                .collect();
            clauses.push(format!(
                "(c.assignee = {me} OR c.team IS NULL OR c.team IN ({}))",
                teams.join(", ")
            ));
        }
        let where_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        let limit = filter.limit.clamp(1, 500);
        let rest = format!("{where_sql} ORDER BY {order} LIMIT {limit}");
        self.read_summaries(&rest, &binds, kind_of).await
    }

    /// Adds a message from the gateway (a system notice) to a conversation, with an outbox row
    /// for the worker unless `outbox_row` is false (a channel that replays from the
    /// transcript: the caller publishes it). (Agents' replies go through [`Replies`].)
    pub async fn post_message(
        &self,
        conversation: &Conversation,
        message: &NewMessage,
        outbox_row: bool,
    ) -> std::result::Result<Delivery, DeskError> {
        let now = now_ms();
        let mut tx = self
            .write
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let delivery = Self::append_outbound(
            &mut tx,
            (
                &conversation.id,
                &conversation.contact_id,
                &conversation.channel,
                &conversation.contact_external_id,
            ),
            message,
            now,
            (0, now),
            outbox_row,
        )
        .await?;
        tx.commit().await.map_err(db("committing a message"))?;
        Ok(delivery)
    }

    pub async fn add_note(
        &self,
        conversation_id: &str,
        actor: &str,
        text: &str,
        details: &serde_json::Value,
    ) -> Result<ConversationEvent> {
        let now = now_ms();
        let mut tx = self
            .write
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        Self::insert_event(
            &mut tx,
            conversation_id,
            ("note", None, None),
            (actor, text),
            details,
            now,
        )
        .await?;
        tx.commit().await.map_err(db("committing a note"))?;
        Ok(ConversationEvent {
            kind: "note".into(),
            from_status: None,
            to_status: None,
            actor: actor.into(),
            reason: text.into(),
            details: details.clone(),
            created_at_ms: now,
        })
    }
}

/// Records how long a conversation waited in the queue before a person took it.
pub fn record_wait(c: &Conversation) {
    if let Some(q) = c.queued_at {
        let waited = (now_ms() - q).max(0) as f64 / 1000.0;
        metrics::histogram!(m::QUEUE_WAIT_SECONDS).record(waited);
    }
}

/// A canned response agents insert with one click.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Canned {
    pub id: String,
    pub title: String,
    pub text: String,
    #[serde(default)]
    pub language: Option<String>,
}

/// Reads `canned.yaml` (a list of {id, title, text, language}); a missing file is no responses.
pub fn read_canned(path: &std::path::Path) -> anyhow::Result<Vec<Canned>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_norway::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// A knowledge-base answer offered to the agent for the latest customer message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Suggestion {
    pub article_id: String,
    pub title: String,
    /// The article as plain chat text, ready to send.
    pub text: String,
    pub score: f32,
}

/// The desk service: shared by the HTTP handlers and the console socket.
pub struct Desk {
    pub store: Store,
    pub router: Arc<Router>,
    pub live: Arc<Live>,
    pub queue_wakeup: Arc<Notify>,
    pub knowledge: Option<Arc<KnowledgeBase>>,
    pub canned: Vec<Canned>,
    pub teams: Vec<String>,
    /// Agent replies, group-committed and delivered directly.
    pub replies: Replies,
}

impl Desk {
    async fn load(&self, caller: &Caller, id: &str) -> DeskResult<Conversation> {
        let c = self
            .store
            .conversation(id)
            .await?
            .ok_or_else(|| DeskError::NotFound(id.to_string()))?;
        if !caller.may_see(&c) {
            return Err(DeskError::Forbidden(format!(
                "conversation {id} belongs to team '{}', which you are not in",
                c.team.as_deref().unwrap_or("-")
            )));
        }
        Ok(c)
    }

    /// An assigned conversation is managed (transferred, resolved, handed back) by its owner or an
    /// admin; a waiting one by anyone who may see it.
    fn may_manage(caller: &Caller, c: &Conversation, what: &str) -> DeskResult<()> {
        if c.status == "assigned" && !caller.owns(c) && !caller.is_admin() {
            return Err(DeskError::Forbidden(format!(
                "only the agent who owns the conversation (or an admin) may {what}"
            )));
        }
        Ok(())
    }

    fn agent<'a>(&self, caller: &'a Caller, what: &str) -> DeskResult<&'a Agent> {
        caller.agent.as_ref().ok_or_else(|| {
            DeskError::Forbidden(format!(
                "{what} needs an agent: log in as one (the admin token has no name to sign with)"
            ))
        })
    }

    pub async fn summary(&self, id: &str) -> DeskResult<Summary> {
        self.store
            .summary(id, |c| self.live.kind_of(c))
            .await?
            .ok_or_else(|| DeskError::NotFound(id.to_string()))
    }

    pub async fn list(&self, caller: &Caller, filter: &ListFilter) -> DeskResult<Vec<Summary>> {
        Ok(self
            .store
            .summaries(filter, caller.agent.as_ref(), |c| self.live.kind_of(c))
            .await?)
    }

    pub async fn open(
        &self,
        caller: &Caller,
        id: &str,
    ) -> DeskResult<(Summary, Vec<TranscriptMessage>, Vec<ConversationEvent>)> {
        self.load(caller, id).await?;
        self.store
            .conversation_view(id, |c| self.live.kind_of(c))
            .await?
            .ok_or_else(|| DeskError::NotFound(id.to_string()))
    }

    /// Tells the customer something, in their language, through their channel: through the
    /// outbox worker, or published at once where the channel replays from the transcript.
    pub async fn notify_customer(&self, c: &Conversation, message: NewMessage) -> DeskResult<()> {
        let outbox = self.router.outbox();
        let outbox_row = !outbox.replays_from_store(&c.channel);
        let delivery = self.store.post_message(c, &message, outbox_row).await?;
        if outbox_row {
            outbox.wake();
        } else {
            outbox
                .deliver_now(vec![Direct {
                    delivery,
                    waits_for: Vec::new(),
                }])
                .await;
        }
        Ok(())
    }

    fn language(c: &Conversation) -> String {
        c.language.clone().unwrap_or_else(|| "en".into())
    }

    /// After any change: consoles update, the queue looks again, the outbox delivers.
    fn changed(&self, id: &str) {
        self.live.touch(id);
        self.queue_wakeup.notify_one();
    }

    /// The agent takes the conversation (from the queue or from the bot).
    pub async fn take(&self, caller: &Caller, id: &str) -> DeskResult<Summary> {
        let agent = self.agent(caller, "taking a conversation")?;
        let c = self.load(caller, id).await?;
        if caller.owns(&c) {
            return self.summary(id).await;
        }
        if c.status == "assigned" {
            return Err(DeskError::Conflict(format!(
                "conversation {id} is assigned to another agent already"
            )));
        }
        let mut change = StatusChange::new(
            Action::Assign,
            agent.name.clone(),
            format!("{} took the conversation", agent.name),
        );
        change.assignee = Some(agent.id.clone());
        change.details = json!({ "by": "agent" });
        let applied = self.store.apply_change(id, &change).await?;
        metrics::counter!(m::ASSIGNMENTS, "way" => "take").increment(1);
        if applied.from == Status::Queued {
            record_wait(&c);
        }
        self.agent_joined(&c, &agent.name).await?;
        self.changed(id);
        self.summary(id).await
    }

    pub async fn agent_joined(&self, c: &Conversation, name: &str) -> DeskResult<()> {
        let text = i18n::fill(Phrase::AgentJoined, &Self::language(c), &[("name", name)]);
        self.notify_customer(c, NewMessage::text(Author::System, text))
            .await
    }

    /// To another agent (assigned to it at once) or to a team (back to the queue for it).
    pub async fn transfer(
        &self,
        caller: &Caller,
        id: &str,
        to_agent: Option<&str>,
        to_team: Option<&str>,
    ) -> DeskResult<Summary> {
        let c = self.load(caller, id).await?;
        Self::may_manage(caller, &c, "transfer it")?;
        let by = caller.name();
        match (to_agent, to_team) {
            (Some(agent_id), None) => {
                let target = self
                    .store
                    .agent(agent_id)
                    .await?
                    .ok_or_else(|| DeskError::Invalid(format!("no agent {agent_id}")))?;
                let mut change = StatusChange::new(
                    if c.status == "queued" || c.status == "bot" {
                        Action::Assign
                    } else {
                        Action::TransferToAgent
                    },
                    by.clone(),
                    format!("{by} transferred it to {}", target.name),
                );
                change.assignee = Some(target.id.clone());
                change.details = json!({ "by": "transfer", "to_agent": target.id });
                self.store.apply_change(id, &change).await?;
                metrics::counter!(m::ASSIGNMENTS, "way" => "transfer").increment(1);
                self.agent_joined(&c, &target.name).await?;
            }
            (None, Some(team)) => {
                if !self.teams.iter().any(|t| t == team) {
                    return Err(DeskError::Invalid(format!(
                        "unknown team '{team}' (teams: {})",
                        self.teams.join(", ")
                    )));
                }
                let action = if c.status == "bot" {
                    Action::HandOff
                } else {
                    Action::TransferToTeam
                };
                let mut change = StatusChange::new(
                    action,
                    by.clone(),
                    format!("{by} transferred it to team {team}"),
                );
                change.team = Some(team.to_string());
                change.declined_by = caller.agent.as_ref().map(|a| a.id.clone());
                change.details = json!({ "by": "transfer", "to_team": team });
                self.store.apply_change(id, &change).await?;
            }
            _ => {
                return Err(DeskError::Invalid(
                    "say where to: either agent_id or team".into(),
                ))
            }
        }
        self.changed(id);
        self.summary(id).await
    }

    /// Closes the conversation and asks the customer for a rating.
    pub async fn resolve(&self, caller: &Caller, id: &str) -> DeskResult<Summary> {
        let c = self.load(caller, id).await?;
        Self::may_manage(caller, &c, "resolve it")?;
        let by = caller.name();
        let change = StatusChange::new(Action::Resolve, by.clone(), format!("{by} resolved it"));
        self.store.apply_change(id, &change).await?;
        let lang = Self::language(&c);
        let mut ask = NewMessage::text(Author::System, i18n::phrase(Phrase::RatingRequest, &lang));
        ask.quick_replies = (1..=5)
            .map(|n| QuickReply {
                title: format!("{n} ★"),
                payload: n.to_string(),
            })
            .collect();
        self.notify_customer(&c, ask).await?;
        self.changed(id);
        self.summary(id).await
    }

    /// Gives the conversation back to the bot.
    pub async fn hand_back(&self, caller: &Caller, id: &str) -> DeskResult<Summary> {
        let c = self.load(caller, id).await?;
        Self::may_manage(caller, &c, "hand it back")?;
        let by = caller.name();
        let change = StatusChange::new(
            Action::HandBack,
            by.clone(),
            format!("{by} handed it back to the bot"),
        );
        self.store.apply_change(id, &change).await?;
        let text = i18n::phrase(Phrase::BackToBot, &Self::language(&c));
        self.notify_customer(&c, NewMessage::text(Author::System, text))
            .await?;
        self.changed(id);
        self.summary(id).await
    }

    /// The owning agent's reply, delivered through the customer's channel.
    pub async fn reply(&self, caller: &Caller, id: &str, text: &str) -> DeskResult<i64> {
        let agent = self.agent(caller, "replying")?;
        let text = text.trim();
        if text.is_empty() {
            return Err(DeskError::Invalid("the reply is empty".into()));
        }
        let mut message = NewMessage::text(Author::Agent, text);
        message.metadata = json!({ "agent": { "id": agent.id, "name": agent.name } });
        // The store's ownership check comes first: an owner may see its conversation, so on the
        // usual path nothing is read before the write. Refused, the conversation is read to say
        // why (no such conversation, another team's, or not assigned to this agent).
        let Some(stored) = self.replies.post(id, &agent.id, message).await? else {
            self.load(caller, id).await?;
            return Err(DeskError::Conflict(
                "the conversation is not assigned to you: take it first".into(),
            ));
        };
        let seq = stored.message.seq;
        // A reply changes nothing else about the conversation, and nothing changes the reply.
        self.live.message_stored(stored);
        Ok(seq)
    }

    pub async fn note(
        &self,
        caller: &Caller,
        id: &str,
        text: &str,
    ) -> DeskResult<ConversationEvent> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DeskError::Invalid("the note is empty".into()));
        }
        self.load(caller, id).await?;
        let details = match &caller.agent {
            Some(a) => json!({ "agent": { "id": a.id, "name": a.name } }),
            None => json!({}),
        };
        let event = self
            .store
            .add_note(id, &caller.name(), text, &details)
            .await?;
        self.live.touch(id);
        Ok(event)
    }

    /// The owning agent is typing: the customer sees it where the channel can show it.
    pub async fn typing(&self, caller: &Caller, id: &str, typing: bool) -> DeskResult<()> {
        let c = self.load(caller, id).await?;
        if !caller.owns(&c) {
            return Err(DeskError::Conflict(
                "the conversation is not assigned to you".into(),
            ));
        }
        self.router.agent_typing(&c, typing).await;
        Ok(())
    }

    /// Knowledge-base answers for the latest customer message: articles in the customer's language
    /// first (the agent sends the text as it is), then the others, each group best first.
    pub async fn suggestions(&self, caller: &Caller, id: &str) -> DeskResult<Vec<Suggestion>> {
        let c = self.load(caller, id).await?;
        let Some(kb) = &self.knowledge else {
            return Ok(Vec::new());
        };
        let messages = self.store.transcript(id).await?;
        let Some(last) = messages
            .iter()
            .rev()
            .find(|m| m.message.author == Author::Customer)
        else {
            return Ok(Vec::new());
        };
        let found = kb
            .search(&last.message.text, 8)
            .await
            .map_err(|e| DeskError::Invalid(format!("knowledge search failed: {e}")))?;
        let mut hits = found.hits;
        if let Some(lang) = c.language.as_deref() {
            // A stable sort keeps the score order within each group.
            hits.sort_by_key(|h| h.lang.as_deref().is_some_and(|l| l != lang));
        }
        let mut out = Vec::new();
        for hit in hits.into_iter().take(3) {
            if let Ok(Some(article)) = kb.get(&hit.article_id).await {
                out.push(Suggestion {
                    text: crate::pipeline::plain_text(&article.article.body),
                    article_id: hit.article_id,
                    title: hit.title,
                    score: hit.score,
                });
            }
        }
        Ok(out)
    }

    /// An agent goes online or away; going online may assign waiting conversations at once.
    pub async fn set_status(&self, agent: &Agent, status: &str) -> DeskResult<Agent> {
        if !["online", "away", "offline"].contains(&status) {
            return Err(DeskError::Invalid(format!(
                "unknown status '{status}': use online or away"
            )));
        }
        self.store.set_agent_status(&agent.id, status).await?;
        let updated = self
            .store
            .agent(&agent.id)
            .await?
            .ok_or_else(|| DeskError::NotFound(agent.id.clone()))?;
        self.live.agent_changed(&updated);
        self.queue_wakeup.notify_one();
        Ok(updated)
    }
}
