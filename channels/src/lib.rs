//! Channel adapters for Frontdesk.
//!
//! Every platform a customer writes from (the website widget, a webhook-speaking system, Telegram,
//! Discord) gets one module here. An adapter only translates: platform events become
//! an [`InboundMessage`] handed to the [`Gateway`] (the conversation router), and the router's
//! [`OutboundMessage`]s become platform calls in [`Channel::deliver`]. No routing, storage or
//! answering logic lives in this crate, so every channel behaves the same way downstream.

pub mod discord;
pub mod quick;
pub mod signature;
pub mod telegram;
pub mod webchat;
pub mod webhook;

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Author {
    Customer,
    Bot,
    Agent,
    System,
}

impl Author {
    pub fn as_str(self) -> &'static str {
        match self {
            Author::Customer => "customer",
            Author::Bot => "bot",
            Author::Agent => "agent",
            Author::System => "system",
        }
    }
}

impl fmt::Display for Author {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Author {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "customer" => Ok(Author::Customer),
            "bot" => Ok(Author::Bot),
            "agent" => Ok(Author::Agent),
            "system" => Ok(Author::System),
            other => Err(format!("unknown author '{other}'")),
        }
    }
}

/// A button offered under a message; pressing it sends `payload` as the customer's next message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuickReply {
    pub title: String,
    pub payload: String,
}

/// A customer message as every channel normalizes it before handing it to the router.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// Name of the configured channel instance (`webchat`, `crm`, ...).
    pub channel: String,
    /// The customer's id on that channel (widget visitor id, webhook contact id, chat id).
    pub contact_external_id: String,
    /// The channel's id for this message: the key a retried delivery is recognized by.
    pub external_message_id: String,
    pub text: String,
    pub contact_name: Option<String>,
    pub contact_email: Option<String>,
    /// Channel-specific extras, stored with the message as JSON.
    pub metadata: serde_json::Value,
}

/// The router's answer to an inbound message: where it was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ack {
    pub conversation_id: String,
    pub contact_id: String,
    /// The message's sequence number within its conversation.
    pub seq: i64,
    /// True when this message had been stored before (a retried delivery); `seq` is the original one.
    pub duplicate: bool,
}

/// A stored message of a conversation, as channels replay it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub conversation_id: String,
    pub seq: i64,
    pub author: Author,
    pub text: String,
    pub created_at_ms: i64,
    pub metadata: serde_json::Value,
    pub quick_replies: Vec<QuickReply>,
}

/// A message the router wants a channel to deliver to a customer (from the outbox).
#[derive(Debug, Clone, Serialize)]
pub struct OutboundMessage {
    /// The outbox row; channels pass it on so receivers can de-duplicate redeliveries.
    pub delivery_id: String,
    pub channel: String,
    pub conversation_id: String,
    pub contact_id: String,
    /// The customer's id on the channel (whom to send to).
    pub contact_external_id: String,
    pub seq: i64,
    pub author: Author,
    pub text: String,
    pub quick_replies: Vec<QuickReply>,
    pub created_at_ms: i64,
}

/// Why a delivery failed; decides whether the outbox tries again.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Network trouble, timeouts, 5xx, 429: worth another attempt later.
    #[error("{0}")]
    Retryable(String),
    /// The receiver refused the message for good (e.g. 4xx): retrying will not help.
    #[error("{0}")]
    Permanent(String),
    /// The platform asked us to slow down (HTTP 429): try again, but not before `retry_after`.
    #[error("{message} (retry after {retry_after:?})")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
}

/// Failures of the router as a channel sees them.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("unknown conversation {0}")]
    UnknownConversation(String),
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("storage failed: {0}")]
    Storage(String),
}

/// The conversation router, as the channels use it. Implemented by the gateway crate.
#[async_trait]
pub trait Gateway: Send + Sync + 'static {
    /// Stores a customer message (once, whatever the number of retries) and schedules the bot's turn.
    async fn ingest(&self, message: InboundMessage) -> Result<Ack, GatewayError>;

    /// Creates (or finds) the contact and its conversation on a channel before its first message.
    async fn open_conversation(
        &self,
        channel: &str,
        contact_external_id: &str,
        name: Option<&str>,
        email: Option<&str>,
        language: Option<&str>,
    ) -> Result<Ack, GatewayError>;

    /// The conversation of a contact on a channel, with its newest sequence number.
    async fn find_conversation(
        &self,
        channel: &str,
        contact_external_id: &str,
    ) -> Result<Option<Ack>, GatewayError>;

    /// Messages of a conversation with a sequence number above `after_seq`, oldest first.
    async fn history(
        &self,
        conversation_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, GatewayError>;

    /// The customer started or stopped typing (shown to the agent who owns the conversation).
    fn customer_typing(&self, conversation_id: &str, typing: bool);
}

/// Small values a channel keeps across restarts (Telegram's long-polling offset), stored by the
/// gateway in its database.
#[async_trait]
pub trait ChannelState: Send + Sync + 'static {
    async fn load(&self, key: &str) -> Result<Option<String>, GatewayError>;
    async fn save(&self, key: &str, value: &str) -> Result<(), GatewayError>;
}

/// One configured channel instance, as the router's outbox sees it.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// The configured name (`webchat`, `crm`, ...), unique in a gateway.
    fn name(&self) -> &str;
    /// The platform (`webchat`, `webhook`, ...).
    fn kind(&self) -> &'static str;
    /// Sends one bot or agent message to the customer.
    async fn deliver(&self, message: &OutboundMessage) -> Result<(), DeliveryError>;
    /// True when the channel's clients read every message they missed from the conversation's
    /// stored transcript (the web chat: on reconnect, and on a gap in `seq`), so its messages
    /// need no outbox row: the gateway publishes each once after the commit, and a message
    /// nobody saw live is replayed from the store. False for channels that push to another
    /// system (a webhook, Telegram, Discord): they need the outbox's retries.
    fn replays_from_store(&self) -> bool {
        false
    }
    /// Shows or hides "<author> is typing" (the bot, or an agent) where the platform can; a no-op
    /// elsewhere.
    async fn typing(
        &self,
        _conversation_id: &str,
        _contact_external_id: &str,
        _typing: bool,
        _author: Author,
    ) {
    }
}

/// Milliseconds since the Unix epoch: the one time representation stored and sent everywhere.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
