//! The Telegram channel: one bot per configured instance, through `teloxide`'s Bot API client.
//!
//! Inbound, updates arrive by long polling (the default; the offset is persisted after every
//! update, see [`polling`]) or, when a public URL is configured, by webhook on the gateway's own
//! HTTP server (the `X-Telegram-Bot-Api-Secret-Token` header is checked). Each update is translated
//! by [`inbound`] and handed to the router; button presses (callback queries) are answered and
//! ingested as the button's payload. Outbound, [`Channel::deliver`] sends `sendMessage` with an
//! inline keyboard for quick replies; a 429 becomes [`DeliveryError::RateLimited`] with Telegram's
//! `retry_after`, which the outbox honours while keeping the conversation's order.

pub mod inbound;
pub mod polling;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use teloxide::payloads::SendMessageSetters;
use teloxide::prelude::Requester;
use teloxide::types::{
    CallbackQuery, ChatAction, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, Update,
    UpdateKind,
};
use teloxide::{ApiError, Bot, RequestError};
use tokio_util::sync::CancellationToken;

use crate::{
    quick, Author, Channel, ChannelState, DeliveryError, Gateway, GatewayError, InboundMessage,
    OutboundMessage,
};

/// Longest message Telegram accepts, in characters.
const MAX_TEXT_CHARS: usize = 4096;

/// How updates reach the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `getUpdates` long polling; works behind NAT, no public URL needed.
    Polling,
    /// Telegram POSTs updates to `url` (the gateway's `/api/v1/telegram/{name}/webhook`), with
    /// `secret_token` in the `X-Telegram-Bot-Api-Secret-Token` header.
    Webhook { url: String, secret_token: String },
}

/// Settings of one Telegram bot.
#[derive(Clone)]
pub struct TelegramSettings {
    pub name: String,
    pub token: String,
    /// Bot API base URL; `None` is `https://api.telegram.org` (tests point it at a fake).
    pub api_url: Option<String>,
    pub mode: Mode,
    /// Handle messages from group chats too (each group is one conversation).
    pub allow_groups: bool,
    /// Long-polling timeout Telegram holds a `getUpdates` open for.
    pub poll_timeout: Duration,
}

impl std::fmt::Debug for TelegramSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramSettings")
            .field("name", &self.name)
            .field("token", &"***")
            .field("api_url", &self.api_url)
            .field(
                "mode",
                &match &self.mode {
                    Mode::Polling => "polling".to_string(),
                    Mode::Webhook { url, .. } => format!("webhook {url}"),
                },
            )
            .field("allow_groups", &self.allow_groups)
            .finish()
    }
}

/// Problems setting a bot up or handling an update.
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    #[error("invalid Telegram API URL '{0}'")]
    ApiUrl(String),
    #[error("invalid webhook URL '{0}'")]
    WebhookUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The router could not store the update: it must be delivered again.
    #[error("the gateway failed: {0}")]
    Gateway(#[from] GatewayError),
    #[error("Telegram API: {0}")]
    Api(#[from] RequestError),
}

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("this bot does not receive updates by webhook (it polls)")]
    NotWebhook,
    #[error("missing or wrong X-Telegram-Bot-Api-Secret-Token")]
    BadSecret,
    #[error("the update could not be stored; Telegram will send it again: {0}")]
    Unavailable(String),
}

/// One configured Telegram bot.
pub struct TelegramChannel {
    settings: TelegramSettings,
    bot: Bot,
    /// Parts of a long message already sent per delivery, so a retry after a failure in the
    /// middle does not send the first parts twice.
    sent_parts: Mutex<HashMap<String, usize>>,
}

impl TelegramChannel {
    pub fn new(settings: TelegramSettings) -> Result<Self, TelegramError> {
        // The client must wait longer than Telegram holds a long poll open.
        let client = teloxide::net::default_reqwest_settings()
            .timeout(settings.poll_timeout + Duration::from_secs(10))
            .build()
            .map_err(|e| TelegramError::Client(e.to_string()))?;
        let mut bot = Bot::with_client(settings.token.clone(), client);
        if let Some(url) = &settings.api_url {
            let parsed = reqwest::Url::parse(url.trim_end_matches('/'))
                .map_err(|_| TelegramError::ApiUrl(url.clone()))?;
            bot = bot.set_api_url(parsed);
        }
        Ok(Self {
            settings,
            bot,
            sent_parts: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &TelegramSettings {
        &self.settings
    }

    fn sent_parts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.sent_parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the inbound side until `shutdown`: long polling, or registering the webhook.
    pub async fn run(
        self: Arc<Self>,
        gateway: Arc<dyn Gateway>,
        state: Arc<dyn ChannelState>,
        shutdown: CancellationToken,
    ) {
        match &self.settings.mode {
            Mode::Polling => polling::run(self.clone(), gateway, state, shutdown).await,
            Mode::Webhook { url, secret_token } => {
                let mut delay = Duration::from_secs(1);
                loop {
                    match self.register_webhook(url, secret_token).await {
                        Ok(()) => {
                            tracing::info!(channel = %self.settings.name, %url, "Telegram webhook registered");
                            return;
                        }
                        Err(e) => {
                            tracing::error!(channel = %self.settings.name, error = %e, "cannot register the Telegram webhook; will retry");
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {},
                    }
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    async fn register_webhook(&self, url: &str, secret: &str) -> Result<(), TelegramError> {
        use teloxide::payloads::SetWebhookSetters;
        let parsed = reqwest::Url::parse(url).map_err(|_| TelegramError::WebhookUrl(url.into()))?;
        self.bot
            .set_webhook(parsed)
            .secret_token(secret)
            .allowed_updates(polling::allowed_updates())
            .await?;
        Ok(())
    }

    /// Handles one webhook request: checks the secret header, then the update.
    pub async fn accept_webhook(
        &self,
        gateway: &dyn Gateway,
        secret_header: Option<&str>,
        body: &[u8],
    ) -> Result<(), WebhookError> {
        let Mode::Webhook { secret_token, .. } = &self.settings.mode else {
            return Err(WebhookError::NotWebhook);
        };
        let given = secret_header.unwrap_or_default();
        if !crate::signature::verify_parts(
            b"telegram",
            &[given.as_bytes()],
            &crate::signature::hmac_parts(b"telegram", &[secret_token.as_bytes()]),
        ) {
            return Err(WebhookError::BadSecret);
        }
        let update: Update = match serde_json::from_slice(body) {
            Ok(u) => u,
            Err(e) => {
                // Answering an error would make Telegram send it again and again: log and skip.
                tracing::warn!(channel = %self.settings.name, error = %e, "malformed Telegram update skipped");
                return Ok(());
            }
        };
        match self.handle_update(gateway, update).await {
            Err(TelegramError::Gateway(e)) => Err(WebhookError::Unavailable(e.to_string())),
            _ => Ok(()),
        }
    }

    /// Translates one update and hands it to the router. `Err` only when the update must be
    /// handled again (the router could not store it); everything else is logged and skipped.
    pub async fn handle_update(
        &self,
        gateway: &dyn Gateway,
        update: Update,
    ) -> Result<(), TelegramError> {
        let name = &self.settings.name;
        let id = update.id.0;
        match update.kind {
            UpdateKind::Message(m) => self.on_message(gateway, id, &m, false).await,
            UpdateKind::EditedMessage(m) => self.on_message(gateway, id, &m, true).await,
            UpdateKind::CallbackQuery(q) => self.on_callback(gateway, q).await,
            UpdateKind::Error(raw) => {
                let shown: String = raw.to_string().chars().take(300).collect();
                tracing::warn!(channel = %name, update_id = id, raw = %shown, "malformed Telegram update skipped");
                Ok(())
            }
            _ => {
                tracing::debug!(channel = %name, update_id = id, "Telegram update of a kind the gateway does not handle");
                Ok(())
            }
        }
    }

    async fn on_message(
        &self,
        gateway: &dyn Gateway,
        update_id: u32,
        m: &teloxide::types::Message,
        edited: bool,
    ) -> Result<(), TelegramError> {
        let name = &self.settings.name;
        let t = match inbound::translate(name, m, edited, self.settings.allow_groups) {
            Ok(t) => t,
            Err(skip) => {
                tracing::debug!(channel = %name, update_id, reason = %skip, "Telegram message skipped");
                return Ok(());
            }
        };
        if t.start {
            gateway
                .open_conversation(
                    name,
                    &t.message.contact_external_id,
                    t.message.contact_name.as_deref(),
                    None,
                    t.language.as_deref(),
                )
                .await?;
        }
        self.ingest(gateway, t.message).await
    }

    async fn ingest(
        &self,
        gateway: &dyn Gateway,
        message: InboundMessage,
    ) -> Result<(), TelegramError> {
        match gateway.ingest(message).await {
            Ok(_) => Ok(()),
            Err(e @ GatewayError::Storage(_)) => Err(e.into()),
            Err(e) => {
                tracing::warn!(channel = %self.settings.name, error = %e, "Telegram message refused by the router; skipped");
                Ok(())
            }
        }
    }

    /// A pressed inline button: its payload becomes the customer's message, and the press is
    /// answered so the client stops showing a spinner.
    async fn on_callback(
        &self,
        gateway: &dyn Gateway,
        q: CallbackQuery,
    ) -> Result<(), TelegramError> {
        let name = &self.settings.name;
        let chat = q.message.as_ref().map(|m| m.chat().id.0);
        let data = q.data.clone().unwrap_or_default();
        let resolved = match chat {
            Some(chat) => quick::resolve(gateway, name, &chat.to_string(), &data).await?,
            None => None,
        };
        let result = match (chat, resolved) {
            (Some(chat), Some(reply)) => {
                let message = InboundMessage {
                    channel: name.clone(),
                    contact_external_id: chat.to_string(),
                    // Each press has its own query id: a redelivered update is stored once.
                    external_message_id: format!("cb:{}", q.id.0),
                    text: reply.payload.clone(),
                    contact_name: None,
                    contact_email: None,
                    metadata: json!({
                        "telegram": {"chat_id": chat, "user_id": q.from.id.0, "callback_query_id": q.id.0},
                        "quick_reply": {"title": reply.title, "token": data},
                    }),
                };
                self.ingest(gateway, message).await
            }
            _ => {
                tracing::warn!(channel = %name, data = %data, "button press for an unknown quick reply skipped");
                Ok(())
            }
        };
        if result.is_ok() {
            if let Err(e) = self.bot.answer_callback_query(q.id).await {
                tracing::warn!(channel = %name, error = %e, "cannot answer a Telegram callback query");
            }
        }
        result
    }

    fn keyboard(message: &OutboundMessage) -> InlineKeyboardMarkup {
        InlineKeyboardMarkup::new(message.quick_replies.iter().enumerate().map(|(i, r)| {
            let title: String = r.title.chars().take(64).collect();
            vec![InlineKeyboardButton::callback(
                title,
                quick::token(message.seq, i),
            )]
        }))
    }
}

/// Maps a Bot API failure to what the outbox should do with the delivery.
pub fn delivery_error(e: RequestError) -> DeliveryError {
    match e {
        RequestError::RetryAfter(s) => DeliveryError::RateLimited {
            message: "Telegram answered 429 Too Many Requests".into(),
            retry_after: s.duration(),
        },
        RequestError::Network(e) => DeliveryError::Retryable(format!("Telegram unreachable: {e}")),
        RequestError::Io(e) => DeliveryError::Retryable(format!("I/O error: {e}")),
        RequestError::InvalidJson { source, .. } => {
            DeliveryError::Retryable(format!("unreadable answer from Telegram: {source}"))
        }
        RequestError::MigrateToChatId(id) => {
            DeliveryError::Permanent(format!("the group moved to chat {id}"))
        }
        RequestError::Api(ApiError::Unknown(text)) => {
            // Telegram's own 5xx and unexpected errors: worth another try unless clearly a refusal.
            let refused = ["Bad Request", "Forbidden", "Unauthorized", "Not Found"]
                .iter()
                .any(|p| text.starts_with(p));
            if refused {
                DeliveryError::Permanent(format!("Telegram refused the message: {text}"))
            } else {
                DeliveryError::Retryable(format!("Telegram failed: {text}"))
            }
        }
        RequestError::Api(e) => {
            DeliveryError::Permanent(format!("Telegram refused the message: {e}"))
        }
    }
}

#[async_trait]
impl Channel for TelegramChannel {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> &'static str {
        "telegram"
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<(), DeliveryError> {
        let chat: i64 = message.contact_external_id.parse().map_err(|_| {
            DeliveryError::Permanent(format!(
                "'{}' is not a Telegram chat id",
                message.contact_external_id
            ))
        })?;
        let parts = quick::split_text(&message.text, MAX_TEXT_CHARS);
        let done = self
            .sent_parts()
            .get(&message.delivery_id)
            .copied()
            .unwrap_or(0);
        let last = parts.len() - 1;
        for (i, part) in parts.iter().enumerate().skip(done) {
            let mut request = self.bot.send_message(ChatId(chat), part.clone());
            if i == last && !message.quick_replies.is_empty() {
                request = request.reply_markup(Self::keyboard(message));
            }
            if let Err(e) = request.await {
                return Err(delivery_error(e));
            }
            if i < last {
                self.sent_parts().insert(message.delivery_id.clone(), i + 1);
            }
        }
        self.sent_parts().remove(&message.delivery_id);
        Ok(())
    }

    async fn typing(
        &self,
        _conversation_id: &str,
        contact_external_id: &str,
        typing: bool,
        _author: Author,
    ) {
        // Telegram shows "typing..." for 5 s or until the next message: nothing to stop.
        let Ok(chat) = contact_external_id.parse::<i64>() else {
            return;
        };
        if typing {
            if let Err(e) = self
                .bot
                .send_chat_action(ChatId(chat), ChatAction::Typing)
                .await
            {
                tracing::debug!(channel = %self.settings.name, error = %e, "sendChatAction failed");
            }
        }
    }
}
