//! The Discord channel: one bot per configured instance, through `serenity`.
//!
//! Inbound comes over Discord's gateway (a WebSocket serenity keeps open): direct messages, and,
//! when a support channel is configured, messages posted there. A message in the support channel
//! opens a thread of its own and the conversation lives in that thread (its later messages go
//! there). Button presses (component interactions) are acknowledged and ingested as the button's
//! payload. Outbound is REST (`POST /channels/{id}/messages`), quick replies as buttons.
//!
//! What maps to what: the contact is the Discord channel the conversation happens in (the DM
//! channel, or the conversation's thread), so a reply is one REST call; the external message id is
//! Discord's message id (`ix:<interaction id>` for a button press); attachments become
//! `metadata.attachments`. Rate limits: in production serenity's rate limiter paces requests per
//! route and waits out 429s itself; a 429 that still surfaces (or, against a test fake where the
//! limiter is off, any 429) becomes [`DeliveryError::RateLimited`] for the outbox.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use serenity::all::{
    ButtonStyle, ChannelId, ClientBuilder, ComponentInteraction, Context, CreateActionRow,
    CreateButton, CreateInteractionResponse, CreateMessage, CreateThread, EventHandler,
    GatewayIntents, HttpBuilder, Interaction, Message, Ready,
};
use serenity::http::{Http, HttpError};
use tokio_util::sync::CancellationToken;

use crate::{
    quick, Author, Channel, DeliveryError, Gateway, GatewayError, InboundMessage, OutboundMessage,
};

/// Longest message Discord accepts, in characters.
const MAX_TEXT_CHARS: usize = 2000;
/// Discord allows 5 rows of 5 buttons.
const MAX_BUTTONS: usize = 25;

/// Settings of one Discord bot.
#[derive(Clone)]
pub struct DiscordSettings {
    pub name: String,
    pub token: String,
    /// Where REST calls go instead of `https://discord.com` (tests point it at a fake). Serenity's
    /// rate limiter ignores this address, so it is off when one is set.
    pub api_url: Option<String>,
    /// A guild text channel where each new message opens a support thread.
    pub support_channel_id: Option<u64>,
}

impl std::fmt::Debug for DiscordSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordSettings")
            .field("name", &self.name)
            .field("token", &"***")
            .field("api_url", &self.api_url)
            .field("support_channel_id", &self.support_channel_id)
            .finish()
    }
}

/// One configured Discord bot.
pub struct DiscordChannel {
    settings: DiscordSettings,
    http: Arc<Http>,
    /// Parts of a long message already sent per delivery (see the Telegram channel).
    sent_parts: Mutex<HashMap<String, usize>>,
}

fn build_http(settings: &DiscordSettings) -> Http {
    let mut builder = HttpBuilder::new(&settings.token);
    if let Some(url) = &settings.api_url {
        builder = builder
            .proxy(url.trim_end_matches('/'))
            .ratelimiter_disabled(true);
    }
    builder.build()
}

fn channel_id(raw: &str) -> Option<ChannelId> {
    raw.parse::<NonZeroU64>()
        .ok()
        .map(|n| ChannelId::new(n.get()))
}

impl DiscordChannel {
    pub fn new(settings: DiscordSettings) -> Self {
        let http = Arc::new(build_http(&settings));
        Self {
            settings,
            http,
            sent_parts: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &DiscordSettings {
        &self.settings
    }

    fn sent_parts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.sent_parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects to Discord's gateway and handles events until `shutdown`, reconnecting with a
    /// growing delay when the connection ends.
    pub async fn run(self: Arc<Self>, gateway: Arc<dyn Gateway>, shutdown: CancellationToken) {
        let name = self.settings.name.clone();
        let intents = GatewayIntents::DIRECT_MESSAGES
            | GatewayIntents::GUILD_MESSAGES
            | GatewayIntents::MESSAGE_CONTENT;
        let mut delay = Duration::from_secs(1);
        while !shutdown.is_cancelled() {
            let handler = Handler {
                channel: self.clone(),
                gateway: gateway.clone(),
            };
            let client = ClientBuilder::new_with_http(build_http(&self.settings), intents)
                .event_handler(handler)
                .await;
            let mut client = match client {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(channel = %name, error = %e, "cannot create the Discord client");
                    return;
                }
            };
            let manager = client.shard_manager.clone();
            let ended = tokio::select! {
                _ = shutdown.cancelled() => {
                    manager.shutdown_all().await;
                    return;
                }
                r = client.start() => r,
            };
            match ended {
                Ok(()) => {
                    tracing::warn!(channel = %name, "Discord gateway connection ended; reconnecting")
                }
                Err(e) => {
                    tracing::error!(channel = %name, error = %e, "Discord gateway failed; reconnecting")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {},
            }
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }

    /// Hands a message to the router, retrying storage failures a few times (Discord does not
    /// deliver gateway events again).
    async fn ingest(&self, gateway: &dyn Gateway, message: InboundMessage) {
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=4 {
            match gateway.ingest(message.clone()).await {
                Ok(_) => return,
                Err(GatewayError::Storage(e)) if attempt < 4 => {
                    tracing::warn!(channel = %self.settings.name, error = %e, attempt, "storing a Discord message failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::error!(channel = %self.settings.name, error = %e, "Discord message not stored");
                    return;
                }
            }
        }
    }

    /// Where a guild or direct message belongs: the contact (channel id) and the kind of place,
    /// or `None` for messages the gateway does not handle.
    async fn place(
        &self,
        gateway: &dyn Gateway,
        msg: &Message,
    ) -> Result<Option<(ChannelId, &'static str)>, String> {
        if msg.guild_id.is_none() {
            return Ok(Some((msg.channel_id, "dm")));
        }
        if Some(msg.channel_id.get()) == self.settings.support_channel_id {
            let who = msg
                .author
                .global_name
                .as_deref()
                .unwrap_or(&msg.author.name);
            let title: String = format!("Support: {who}").chars().take(100).collect();
            let thread = msg
                .channel_id
                .create_thread_from_message(&*self.http, msg.id, CreateThread::new(title))
                .await
                .map_err(|e| format!("cannot open a support thread: {e}"))?;
            return Ok(Some((thread.id, "thread")));
        }
        // A message in one of our threads continues its conversation.
        match gateway
            .find_conversation(&self.settings.name, &msg.channel_id.to_string())
            .await
        {
            Ok(Some(_)) => Ok(Some((msg.channel_id, "thread"))),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn on_message(&self, gateway: &dyn Gateway, msg: Message) {
        if msg.author.bot {
            return;
        }
        let (place, kind) = match self.place(gateway, &msg).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(channel = %self.settings.name, error = %e, "Discord message not handled");
                return;
            }
        };
        let attachments: Vec<serde_json::Value> = msg
            .attachments
            .iter()
            .map(|a| {
                json!({
                    "type": a.content_type.as_deref().map(|t| t.split('/').next().unwrap_or(t)).unwrap_or("file"),
                    "id": a.id.to_string(),
                    "file_name": a.filename,
                    "mime_type": a.content_type,
                    "size": a.size,
                    "url": a.url,
                })
            })
            .collect();
        let text = if !msg.content.trim().is_empty() {
            msg.content.clone()
        } else if let Some(first) = attachments.first() {
            format!("[{}]", first["type"].as_str().unwrap_or("file"))
        } else {
            tracing::debug!(channel = %self.settings.name, "Discord message without text or files skipped");
            return;
        };
        let mut metadata = json!({
            "discord": {
                "kind": kind,
                "channel_id": place.to_string(),
                "message_id": msg.id.to_string(),
                "user_id": msg.author.id.to_string(),
                "username": msg.author.name,
                "guild_id": msg.guild_id.map(|g| g.to_string()),
            }
        });
        if !attachments.is_empty() {
            metadata["attachments"] = json!(attachments);
        }
        let message = InboundMessage {
            channel: self.settings.name.clone(),
            contact_external_id: place.to_string(),
            external_message_id: msg.id.to_string(),
            text,
            contact_name: Some(
                msg.author
                    .global_name
                    .clone()
                    .unwrap_or(msg.author.name.clone()),
            ),
            contact_email: None,
            metadata,
        };
        self.ingest(gateway, message).await;
    }

    /// A pressed button: acknowledged right away (Discord wants an answer within 3 s), then its
    /// quick reply's payload is ingested as the customer's message.
    async fn on_button(&self, gateway: &dyn Gateway, ci: ComponentInteraction) {
        let name = &self.settings.name;
        if let Err(e) = ci
            .create_response(&*self.http, CreateInteractionResponse::Acknowledge)
            .await
        {
            tracing::warn!(channel = %name, error = %e, "cannot acknowledge a Discord button press");
        }
        let contact = ci.channel_id.to_string();
        let reply = match quick::resolve(gateway, name, &contact, &ci.data.custom_id).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::warn!(channel = %name, custom_id = %ci.data.custom_id, "button press for an unknown quick reply skipped");
                return;
            }
            Err(e) => {
                tracing::error!(channel = %name, error = %e, "cannot resolve a Discord button press");
                return;
            }
        };
        let message = InboundMessage {
            channel: name.clone(),
            contact_external_id: contact,
            external_message_id: format!("ix:{}", ci.id),
            text: reply.payload,
            contact_name: None,
            contact_email: None,
            metadata: json!({
                "discord": {"channel_id": ci.channel_id.to_string(), "user_id": ci.user.id.to_string(), "interaction_id": ci.id.to_string()},
                "quick_reply": {"title": reply.title, "token": ci.data.custom_id},
            }),
        };
        self.ingest(gateway, message).await;
    }

    fn buttons(message: &OutboundMessage) -> Vec<CreateActionRow> {
        let buttons: Vec<CreateButton> = message
            .quick_replies
            .iter()
            .take(MAX_BUTTONS)
            .enumerate()
            .map(|(i, r)| {
                let label: String = r.title.chars().take(80).collect();
                CreateButton::new(quick::token(message.seq, i))
                    .label(label)
                    .style(ButtonStyle::Primary)
            })
            .collect();
        buttons
            .chunks(5)
            .map(|row| CreateActionRow::Buttons(row.to_vec()))
            .collect()
    }
}

/// Maps a serenity failure to what the outbox should do with the delivery.
pub fn delivery_error(e: serenity::Error) -> DeliveryError {
    match e {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => {
            let msg = format!("Discord answered {}: {}", r.status_code, r.error.message);
            match r.status_code.as_u16() {
                429 => DeliveryError::RateLimited {
                    message: msg,
                    retry_after: Duration::from_secs(1),
                },
                s if s >= 500 || s == 408 => DeliveryError::Retryable(msg),
                _ => DeliveryError::Permanent(msg),
            }
        }
        serenity::Error::Http(HttpError::Request(e)) => {
            DeliveryError::Retryable(format!("Discord unreachable: {e}"))
        }
        serenity::Error::Io(e) => DeliveryError::Retryable(format!("I/O error: {e}")),
        other => DeliveryError::Permanent(format!("cannot send to Discord: {other}")),
    }
}

struct Handler {
    channel: Arc<DiscordChannel>,
    gateway: Arc<dyn Gateway>,
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        tracing::info!(channel = %self.channel.settings.name, bot = %ready.user.name, "Discord bot connected");
    }

    async fn message(&self, _ctx: Context, msg: Message) {
        self.channel.on_message(self.gateway.as_ref(), msg).await;
    }

    async fn interaction_create(&self, _ctx: Context, interaction: Interaction) {
        if let Interaction::Component(ci) = interaction {
            self.channel.on_button(self.gateway.as_ref(), ci).await;
        }
    }
}

#[async_trait]
impl Channel for DiscordChannel {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> &'static str {
        "discord"
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<(), DeliveryError> {
        let target = channel_id(&message.contact_external_id).ok_or_else(|| {
            DeliveryError::Permanent(format!(
                "'{}' is not a Discord channel id",
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
            let mut builder = CreateMessage::new().content(part.clone());
            if i == last && !message.quick_replies.is_empty() {
                builder = builder.components(Self::buttons(message));
            }
            target
                .send_message(&*self.http, builder)
                .await
                .map_err(delivery_error)?;
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
        let Some(target) = channel_id(contact_external_id) else {
            return;
        };
        if typing {
            if let Err(e) = self.http.broadcast_typing(target).await {
                tracing::debug!(channel = %self.settings.name, error = %e, "Discord typing failed");
            }
        }
    }
}
