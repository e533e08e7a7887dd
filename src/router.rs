//! The conversation router: the one place every channel hands customer messages to.
//!
//! `ingest` stores a message (once) and returns its sequence number right away; the bot's turn then
//! runs in a per-conversation worker, so one conversation's messages are handled strictly in order
//! while different conversations proceed concurrently. A turn's reply, annotations and status change
//! are committed together with the conversation's `processed_seq`, so after a crash the router
//! resumes exactly at the first message no turn has finished for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use frontdesk_channels::{Ack, Author, Gateway, GatewayError, InboundMessage, StoredMessage};
use tokio::sync::Notify;

use crate::live::Live;
use crate::metrics as m;
use crate::outbox::Outbox;
use crate::ownership::Action;
use crate::pipeline::Pipeline;
use crate::registry::Registry;
use crate::store::{Committed, Conversation, Ingested, Store, StoreError};

pub struct Router {
    store: Store,
    channels: Arc<Registry>,
    pipeline: Pipeline,
    /// Delivers the bot's replies (at once, or by its worker).
    outbox: Arc<Outbox>,
    /// Wakes the queue when a turn handed a conversation to a person.
    queue_wakeup: Arc<Notify>,
    /// The agent console's feed: every stored message and turn is news there.
    live: Arc<Live>,
    /// Conversations with a running worker; `true` = more work arrived while it ran.
    active: Mutex<HashMap<String, bool>>,
    me: Weak<Router>,
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        GatewayError::Storage(e.to_string())
    }
}

impl Router {
    pub fn new(
        store: Store,
        channels: Arc<Registry>,
        pipeline: Pipeline,
        outbox: Arc<Outbox>,
        queue_wakeup: Arc<Notify>,
        live: Arc<Live>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Router {
            store,
            channels,
            pipeline,
            outbox,
            queue_wakeup,
            live,
            active: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// Makes the outbox look for due deliveries now.
    pub fn wake_outbox(&self) {
        self.outbox.wake();
    }

    /// The outbox the router's replies go through.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Shows or hides "the agent is typing" to the customer of a conversation.
    pub async fn agent_typing(&self, conversation: &Conversation, typing: bool) {
        if let Some(ch) = self.channels.get(&conversation.channel) {
            ch.typing(
                &conversation.id,
                &conversation.contact_external_id,
                typing,
                Author::Agent,
            )
            .await;
        }
    }

    pub fn channel_names(&self) -> Vec<String> {
        self.channels.names()
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure a worker will look at the conversation's unprocessed messages.
    pub fn schedule(&self, conversation_id: &str) {
        let mut active = self.active();
        if let Some(more) = active.get_mut(conversation_id) {
            *more = true;
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        active.insert(conversation_id.to_string(), false);
        let id = conversation_id.to_string();
        tokio::spawn(async move { me.worker(id).await });
    }

    /// Schedules every conversation left with unprocessed messages (after a crash or restart).
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let ids = self.store.conversations_with_unprocessed().await?;
        for id in &ids {
            self.schedule(id);
        }
        if !ids.is_empty() {
            tracing::info!(
                conversations = ids.len(),
                "resuming unprocessed conversations"
            );
        }
        Ok(ids.len())
    }

    async fn worker(self: Arc<Self>, conversation_id: String) {
        let mut failures = 0u32;
        loop {
            match self.process(&conversation_id).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::error!(conversation = %conversation_id, error = %e, failures, "bot turn failed; will retry");
                    if failures < 5 {
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                        continue;
                    }
                    // The messages stay unprocessed in the store; `recover` picks them up at start.
                }
            }
            let mut active = self.active();
            match active.get_mut(&conversation_id) {
                Some(more) if *more => *more = false,
                _ => {
                    active.remove(&conversation_id);
                    return;
                }
            }
        }
    }

    /// Runs bot turns for the conversation's unprocessed messages, oldest first.
    async fn process(&self, conversation_id: &str) -> Result<(), StoreError> {
        loop {
            let Some((conversation, pending)) = self.store.pending_turn(conversation_id).await?
            else {
                return Ok(());
            };
            let Some(message) = pending.first() else {
                return Ok(());
            };
            let started = Instant::now();
            let channel = self.channels.get(&conversation.channel);
            let bot_turn = conversation.status == "bot" || conversation.status == "resolved";
            if let (Some(ch), true) = (&channel, bot_turn) {
                ch.typing(
                    &conversation.id,
                    &conversation.contact_external_id,
                    true,
                    Author::Bot,
                )
                .await;
            }
            let mut outcome = self.pipeline.run(&conversation, message).await;
            outcome.channel_replays_from_store =
                channel.as_ref().is_some_and(|ch| ch.replays_from_store());
            let lease_until = frontdesk_channels::now_ms() + self.outbox.lease_ms();
            let committed = match self.store.commit_turn(&outcome, lease_until).await? {
                Committed::AlreadyHandled => false,
                Committed::Stored(direct) => {
                    if !direct.is_empty() {
                        self.outbox.deliver_now(direct).await;
                    }
                    true
                }
            };
            if let (Some(ch), true) = (&channel, bot_turn) {
                ch.typing(
                    &conversation.id,
                    &conversation.contact_external_id,
                    false,
                    Author::Bot,
                )
                .await;
            }
            if committed {
                metrics::histogram!(m::PIPELINE_SECONDS).record(started.elapsed().as_secs_f64());
                if let Some(change) = &outcome.status_change {
                    if change.action == Action::HandOff {
                        let rule = change.details["rule"]
                            .as_str()
                            .unwrap_or("other")
                            .to_string();
                        metrics::counter!(m::HANDOFFS, "rule" => rule).increment(1);
                        self.queue_wakeup.notify_one();
                    }
                }
                self.live.turn_done(conversation_id, outcome.message_seq);
                if pending.len() == 1 {
                    // That was the last one: a message stored since then has called `schedule`,
                    // which runs this again. Reading again now would find nothing.
                    return Ok(());
                }
            }
        }
    }
}

#[async_trait]
impl Gateway for Router {
    async fn ingest(&self, message: InboundMessage) -> Result<Ack, GatewayError> {
        if self.channels.get(&message.channel).is_none() {
            return Err(GatewayError::Invalid(format!(
                "unknown channel '{}'",
                message.channel
            )));
        }
        let ingested = self.store.ingest(&message).await?;
        let settled = ingested.settled();
        let Ingested { ack, stored } = ingested;
        let channel = message.channel;
        if ack.duplicate {
            metrics::counter!(m::MESSAGES_DUPLICATE, "channel" => channel).increment(1);
            tracing::info!(conversation = %ack.conversation_id, seq = ack.seq, "duplicate message acknowledged with its original seq");
        } else {
            metrics::counter!(m::MESSAGES_IN, "channel" => channel).increment(1);
            // A settled message (a person owns the conversation) was handled as it was stored.
            if !settled {
                self.schedule(&ack.conversation_id);
            }
            // The turn, if any, touches the conversation again with what it changed.
            match stored {
                Some(stored) => self.live.message_stored(*stored),
                None => self.live.messages_added(&ack.conversation_id),
            }
        }
        Ok(ack)
    }

    async fn open_conversation(
        &self,
        channel: &str,
        contact_external_id: &str,
        name: Option<&str>,
        email: Option<&str>,
        language: Option<&str>,
    ) -> Result<Ack, GatewayError> {
        Ok(self
            .store
            .open_conversation(channel, contact_external_id, name, email, language)
            .await?)
    }

    async fn find_conversation(
        &self,
        channel: &str,
        contact_external_id: &str,
    ) -> Result<Option<Ack>, GatewayError> {
        Ok(self
            .store
            .find_conversation(channel, contact_external_id)
            .await?)
    }

    async fn history(
        &self,
        conversation_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, GatewayError> {
        Ok(self
            .store
            .history(conversation_id, after_seq, limit)
            .await?)
    }

    fn customer_typing(&self, conversation_id: &str, typing: bool) {
        self.live.customer_typing(conversation_id, typing);
    }
}
