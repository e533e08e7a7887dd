//! The website chat channel: signed visitor sessions and the `/ws/chat` WebSocket protocol.
//!
//! The protocol is documented frame by frame in `docs/webchat-protocol.md`. The guarantees that
//! matter: a reconnecting client gets exactly the messages after the `last_seq` it names (replayed from
//! the store, then streamed live, each sent once in `seq` order), and a message resent with the same
//! `client_id` is stored once and acknowledged with its original `seq`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures_util::SinkExt;
use governor::{clock::Clock, DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::signature;
use crate::{
    Author, Channel, DeliveryError, Gateway, InboundMessage, OutboundMessage, QuickReply,
    StoredMessage,
};

/// Settings of the web chat channel.
#[derive(Debug, Clone)]
pub struct WebChatSettings {
    pub name: String,
    pub max_text_bytes: usize,
    pub rate_per_second: u32,
    pub rate_burst: u32,
    pub heartbeat: Duration,
}

/// Something that happened in a conversation, pushed to its open sockets.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    Message(Arc<StoredMessage>),
    Typing { author: Author, typing: bool },
}

/// Per-conversation broadcast of live events to the sockets that watch it, in this process.
#[derive(Default)]
pub struct Hub {
    rooms: Mutex<HashMap<String, broadcast::Sender<LiveEvent>>>,
}

impl Hub {
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<LiveEvent>>> {
        // A panic while holding this lock cannot leave the map half-updated: recover it.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self, conversation_id: &str) -> broadcast::Receiver<LiveEvent> {
        self.rooms()
            .entry(conversation_id.to_string())
            .or_insert_with(|| broadcast::channel(256).0)
            .subscribe()
    }

    pub fn publish(&self, conversation_id: &str, event: LiveEvent) {
        let mut rooms = self.rooms();
        if let Some(tx) = rooms.get(conversation_id) {
            if tx.send(event).is_err() {
                rooms.remove(conversation_id);
            }
        }
    }

    /// Drops the room once its last socket has gone.
    pub fn leave(&self, conversation_id: &str) {
        let mut rooms = self.rooms();
        if rooms
            .get(conversation_id)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            rooms.remove(conversation_id);
        }
    }

    pub fn open_rooms(&self) -> usize {
        self.rooms().len()
    }
}

/// Frames a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Hello {
        token: String,
        #[serde(default)]
        last_seq: i64,
    },
    Message {
        client_id: String,
        text: String,
    },
    Typing {
        state: bool,
    },
    Ping,
}

/// Frames the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Welcome {
        conversation_id: &'a str,
        contact_id: &'a str,
        last_seq: i64,
        heartbeat_ms: u64,
        max_text_bytes: usize,
    },
    Message {
        seq: i64,
        author: Author,
        text: &'a str,
        created_at: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        quick_replies: &'a [QuickReply],
    },
    Ack {
        client_id: &'a str,
        seq: i64,
        duplicate: bool,
    },
    Typing {
        author: Author,
        state: bool,
    },
    Pong,
    Error {
        code: &'a str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        fatal: bool,
    },
}

/// The answer to `POST /api/v1/widget/sessions`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WidgetSession {
    /// Signed visitor token: send it in `hello`.
    pub token: String,
    pub contact_id: String,
    pub conversation_id: String,
}

/// The web chat channel: issues visitor tokens, serves sockets, delivers to open sockets.
pub struct WebChat {
    settings: WebChatSettings,
    secret: Vec<u8>,
    hub: Hub,
}

/// RFC 3339 rendering of a millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl WebChat {
    pub fn new(settings: WebChatSettings, secret: Vec<u8>) -> Self {
        Self {
            settings,
            secret,
            hub: Hub::default(),
        }
    }

    /// A token naming `visitor`, signed with the channel secret.
    pub fn issue_token(&self, visitor: &str, issued_secs: i64) -> String {
        let body = format!("v1.{visitor}.{issued_secs}");
        let mac = signature::hmac_parts(&self.secret, &[body.as_bytes()]);
        format!("{body}.{}", hex::encode(mac))
    }

    /// The visitor id inside a token, if the token is ours and intact.
    pub fn verify_token(&self, token: &str) -> Option<String> {
        let (body, mac_hex) = token.rsplit_once('.')?;
        let mac = hex::decode(mac_hex).ok()?;
        if !signature::verify_parts(&self.secret, &[body.as_bytes()], &mac) {
            return None;
        }
        let mut parts = body.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("v1"), Some(visitor), Some(issued), None)
                if !visitor.is_empty() && issued.parse::<i64>().is_ok() =>
            {
                Some(visitor.to_string())
            }
            _ => None,
        }
    }

    /// Creates an anonymous visitor with its conversation and returns its token.
    pub async fn create_session(
        &self,
        gateway: &dyn Gateway,
        name: Option<&str>,
        email: Option<&str>,
        language: Option<&str>,
    ) -> Result<WidgetSession, crate::GatewayError> {
        let visitor = uuid::Uuid::now_v7().simple().to_string();
        let ack = gateway
            .open_conversation(&self.settings.name, &visitor, name, email, language)
            .await?;
        Ok(WidgetSession {
            token: self.issue_token(&visitor, crate::now_ms() / 1000),
            contact_id: ack.contact_id,
            conversation_id: ack.conversation_id,
        })
    }

    /// Runs one client socket until it closes.
    pub async fn serve_socket(&self, socket: WebSocket, gateway: Arc<dyn Gateway>) {
        let mut session = Session {
            chat: self,
            gateway,
            socket,
            last_sent: 0,
        };
        if let Err(e) = session.run().await {
            tracing::debug!(error = %e, "web chat socket ended");
        }
    }
}

/// Why a socket loop stopped; only logged.
#[derive(Debug, thiserror::Error)]
enum SocketEnd {
    #[error("client closed the socket")]
    Closed,
    #[error("socket error: {0}")]
    Io(#[from] axum::Error),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("no frame for three heartbeat periods")]
    Idle,
    #[error("storage failed: {0}")]
    Storage(String),
}

struct Session<'a> {
    chat: &'a WebChat,
    gateway: Arc<dyn Gateway>,
    socket: WebSocket,
    /// Highest `seq` sent to this client: nothing at or below it is sent again.
    last_sent: i64,
}

impl Session<'_> {
    async fn send(&mut self, frame: &ServerFrame<'_>) -> Result<(), SocketEnd> {
        self.feed(frame).await?;
        self.socket.flush().await?;
        Ok(())
    }

    /// Queues a frame without writing it yet: the caller flushes (one write for several frames).
    async fn feed(&mut self, frame: &ServerFrame<'_>) -> Result<(), SocketEnd> {
        let text = serde_json::to_string(frame).map_err(|_| SocketEnd::Protocol("encode"))?;
        self.socket.feed(WsMessage::Text(text.into())).await?;
        Ok(())
    }

    async fn send_error(
        &mut self,
        code: &str,
        message: String,
        client_id: Option<&str>,
        retry_after_ms: Option<u64>,
        fatal: bool,
    ) -> Result<(), SocketEnd> {
        self.send(&ServerFrame::Error {
            code,
            message,
            client_id,
            retry_after_ms,
            fatal,
        })
        .await
    }

    async fn send_message(&mut self, m: &StoredMessage) -> Result<(), SocketEnd> {
        if m.seq <= self.last_sent {
            return Ok(());
        }
        self.feed_message(m).await?;
        self.socket.flush().await?;
        Ok(())
    }

    /// Queues a message frame (the caller flushes) and counts it as sent.
    async fn feed_message(&mut self, m: &StoredMessage) -> Result<(), SocketEnd> {
        let client_id = m.metadata.get("client_id").and_then(|v| v.as_str());
        self.feed(&ServerFrame::Message {
            seq: m.seq,
            author: m.author,
            text: &m.text,
            created_at: rfc3339(m.created_at_ms),
            client_id,
            quick_replies: &m.quick_replies,
        })
        .await?;
        self.last_sent = m.seq;
        Ok(())
    }

    /// Sends every stored message after `last_sent`, in pages.
    async fn replay(&mut self, conversation_id: &str) -> Result<(), SocketEnd> {
        loop {
            let page = self
                .gateway
                .history(conversation_id, self.last_sent, 500)
                .await
                .map_err(|e| SocketEnd::Storage(e.to_string()))?;
            if page.is_empty() {
                return Ok(());
            }
            let after = self.last_sent;
            for m in page.iter().filter(|m| m.seq > after) {
                self.feed_message(m).await?;
            }
            self.socket.flush().await?;
        }
    }

    async fn next_text(&mut self, deadline: Duration) -> Result<String, SocketEnd> {
        loop {
            let frame = tokio::time::timeout(deadline, self.socket.recv())
                .await
                .map_err(|_| SocketEnd::Idle)?;
            match frame {
                None | Some(Ok(WsMessage::Close(_))) => return Err(SocketEnd::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(WsMessage::Text(t))) => return Ok(t.to_string()),
                Some(Ok(WsMessage::Binary(_))) => {
                    self.send_error(
                        "bad_frame",
                        "binary frames are not part of the protocol; send JSON text frames".into(),
                        None,
                        None,
                        false,
                    )
                    .await?;
                }
                Some(Ok(_)) => {} // ping/pong: handled by the socket
            }
        }
    }

    async fn run(&mut self) -> Result<(), SocketEnd> {
        let heartbeat = self.chat.settings.heartbeat;
        let first = self.next_text(heartbeat * 3).await?;
        let (token, last_seq) = match serde_json::from_str::<ClientFrame>(&first) {
            Ok(ClientFrame::Hello { token, last_seq }) => (token, last_seq.max(0)),
            _ => {
                self.send_error(
                    "hello_required",
                    "the first frame must be {\"type\":\"hello\",\"token\":...,\"last_seq\":N}"
                        .into(),
                    None,
                    None,
                    true,
                )
                .await?;
                return Err(SocketEnd::Protocol("no hello"));
            }
        };
        let Some(visitor) = self.chat.verify_token(&token) else {
            self.send_error("bad_token", "session token is not valid: create a new session with POST /api/v1/widget/sessions".into(), None, None, true).await?;
            return Err(SocketEnd::Protocol("bad token"));
        };
        let channel = self.chat.settings.name.clone();
        let gateway = self.gateway.clone();
        let ack = match gateway.find_conversation(&channel, &visitor).await {
            Ok(Some(ack)) => ack,
            Ok(None) => gateway
                .open_conversation(&channel, &visitor, None, None, None)
                .await
                .map_err(|e| SocketEnd::Storage(e.to_string()))?,
            Err(e) => return Err(SocketEnd::Storage(e.to_string())),
        };
        let conversation_id = ack.conversation_id.clone();
        // Subscribe before reading the store, so nothing stored in between is missed.
        let mut live = self.chat.hub.subscribe(&conversation_id);
        let result = self.converse(&visitor, &ack, last_seq, &mut live).await;
        drop(live);
        self.chat.hub.leave(&conversation_id);
        result
    }

    async fn converse(
        &mut self,
        visitor: &str,
        ack: &crate::Ack,
        last_seq: i64,
        live: &mut broadcast::Receiver<LiveEvent>,
    ) -> Result<(), SocketEnd> {
        let settings = self.chat.settings.clone();
        self.send(&ServerFrame::Welcome {
            conversation_id: &ack.conversation_id,
            contact_id: &ack.contact_id,
            last_seq: ack.seq,
            heartbeat_ms: settings.heartbeat.as_millis() as u64,
            max_text_bytes: settings.max_text_bytes,
        })
        .await?;
        // A client claiming more than exists (its store was reset) must still get new messages.
        self.last_sent = last_seq.min(ack.seq);
        self.replay(&ack.conversation_id).await?;

        let per_second =
            NonZeroU32::new(settings.rate_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.rate_burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter: DefaultDirectRateLimiter =
            RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst));
        let mut ticker = tokio::time::interval(settings.heartbeat);
        ticker.tick().await;
        let mut last_heard = Instant::now();
        let mut customer_typing = false;

        loop {
            tokio::select! {
                frame = self.socket.recv() => {
                    last_heard = Instant::now();
                    let text = match frame {
                        None => break,
                        Some(Ok(WsMessage::Close(_))) => {
                            let _ = self.socket.send(WsMessage::Close(None)).await;
                            break;
                        }
                        Some(Err(e)) => return Err(e.into()),
                        Some(Ok(WsMessage::Text(t))) => t.to_string(),
                        Some(Ok(WsMessage::Binary(_))) => {
                            self.send_error("bad_frame", "binary frames are not part of the protocol; send JSON text frames".into(), None, None, false).await?;
                            continue;
                        }
                        Some(Ok(_)) => continue,
                    };
                    let frame = match serde_json::from_str::<ClientFrame>(&text) {
                        Ok(f) => f,
                        Err(e) => {
                            self.send_error("bad_frame", format!("frame not understood: {e}"), None, None, false).await?;
                            continue;
                        }
                    };
                    match frame {
                        ClientFrame::Ping => self.send(&ServerFrame::Pong).await?,
                        ClientFrame::Hello { .. } => {
                            self.send_error("bad_frame", "hello was already received on this socket".into(), None, None, false).await?;
                        }
                        ClientFrame::Typing { state } => {
                            if state != customer_typing {
                                customer_typing = state;
                                self.gateway.customer_typing(&ack.conversation_id, state);
                            }
                        }
                        ClientFrame::Message { client_id, text } => {
                            self.on_message(visitor, &client_id, text, &limiter).await?;
                            if customer_typing {
                                customer_typing = false;
                                self.gateway.customer_typing(&ack.conversation_id, false);
                            }
                        }
                    }
                }
                event = live.recv() => match event {
                    // Sequence numbers are contiguous: a jump means an event this socket did not
                    // get (published out of order, or dropped); the store fills the gap.
                    Ok(LiveEvent::Message(m)) if m.seq > self.last_sent + 1 => {
                        self.replay(&ack.conversation_id).await?;
                    }
                    Ok(LiveEvent::Message(m)) => self.send_message(&m).await?,
                    Ok(LiveEvent::Typing { author, typing }) => {
                        self.send(&ServerFrame::Typing { author, state: typing }).await?;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.replay(&ack.conversation_id).await?,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = ticker.tick() => {
                    if last_heard.elapsed() > settings.heartbeat * 3 {
                        return Err(SocketEnd::Idle);
                    }
                    self.socket.send(WsMessage::Ping(Vec::new().into())).await?;
                }
            }
        }
        if customer_typing {
            self.gateway.customer_typing(&ack.conversation_id, false);
        }
        Ok(())
    }

    async fn on_message(
        &mut self,
        visitor: &str,
        client_id: &str,
        text: String,
        limiter: &DefaultDirectRateLimiter,
    ) -> Result<(), SocketEnd> {
        let settings = &self.chat.settings;
        if client_id.is_empty() || client_id.len() > 64 {
            let msg = "client_id must be 1 to 64 characters".to_string();
            return self.send_error("bad_frame", msg, None, None, false).await;
        }
        if text.trim().is_empty() {
            let msg = "message text is empty".to_string();
            return self
                .send_error("empty_message", msg, Some(client_id), None, false)
                .await;
        }
        if text.len() > settings.max_text_bytes {
            let msg = format!(
                "message is {} bytes, more than the limit of {} bytes",
                text.len(),
                settings.max_text_bytes
            );
            return self
                .send_error("too_large", msg, Some(client_id), None, false)
                .await;
        }
        if let Err(not_until) = limiter.check() {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            let retry_ms = (wait.as_millis() as u64).max(1);
            tracing::info!(
                visitor,
                client_id,
                retry_ms,
                "web chat message refused: rate limit"
            );
            let msg = format!(
                "too many messages: at most {} per second (bursts of {}); nothing was stored, resend after {retry_ms} ms",
                settings.rate_per_second, settings.rate_burst
            );
            return self
                .send_error("rate_limited", msg, Some(client_id), Some(retry_ms), false)
                .await;
        }
        let inbound_text = text.clone();
        let inbound = InboundMessage {
            channel: settings.name.clone(),
            contact_external_id: visitor.to_string(),
            external_message_id: format!("{visitor}:{client_id}"),
            text,
            contact_name: None,
            contact_email: None,
            metadata: serde_json::json!({ "client_id": client_id }),
        };
        match self.gateway.ingest(inbound).await {
            Ok(ack) => {
                let ack_frame = ServerFrame::Ack {
                    client_id,
                    seq: ack.seq,
                    duplicate: ack.duplicate,
                };
                if ack.duplicate {
                    return self.send(&ack_frame).await;
                }
                let stored = Arc::new(StoredMessage {
                    conversation_id: ack.conversation_id.clone(),
                    seq: ack.seq,
                    author: Author::Customer,
                    text: inbound_text,
                    created_at_ms: crate::now_ms(),
                    metadata: serde_json::json!({ "client_id": client_id }),
                    quick_replies: Vec::new(),
                });
                // This socket's own copy goes out with the ack, in one write, when it is the next
                // message this socket is due; otherwise an earlier one is still on its way, and
                // the copy comes from the stream below, in order.
                if ack.seq == self.last_sent + 1 {
                    self.feed(&ack_frame).await?;
                    self.feed_message(&stored).await?;
                    self.socket.flush().await?;
                } else {
                    self.send(&ack_frame).await?;
                }
                // Other tabs of the same visitor see it in the stream (and this one, when it was
                // not sent above).
                self.chat
                    .hub
                    .publish(&ack.conversation_id, LiveEvent::Message(stored));
                Ok(())
            }
            Err(e) => {
                tracing::error!(visitor, client_id, error = %e, "web chat message not stored");
                let msg = "the message could not be stored; resend it".to_string();
                self.send_error("internal", msg, Some(client_id), Some(1000), false)
                    .await
            }
        }
    }
}

#[async_trait]
impl Channel for WebChat {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> &'static str {
        "webchat"
    }

    /// A widget asks for what it missed after its `last_seq` when it reconnects, and reads the
    /// gap from the store when a live message skips a `seq`.
    fn replays_from_store(&self) -> bool {
        true
    }

    /// Pushes the message to the sockets of its conversation open in this process. A visitor who is
    /// offline gets it from the store when the widget reconnects, so there is nothing to retry.
    async fn deliver(&self, message: &OutboundMessage) -> Result<(), DeliveryError> {
        let stored = StoredMessage {
            conversation_id: message.conversation_id.clone(),
            seq: message.seq,
            author: message.author,
            text: message.text.clone(),
            created_at_ms: message.created_at_ms,
            metadata: serde_json::Value::Null,
            quick_replies: message.quick_replies.clone(),
        };
        self.hub.publish(
            &message.conversation_id,
            LiveEvent::Message(Arc::new(stored)),
        );
        Ok(())
    }

    async fn typing(&self, conversation_id: &str, _contact: &str, typing: bool, author: Author) {
        self.hub
            .publish(conversation_id, LiveEvent::Typing { author, typing });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(secret: &[u8]) -> WebChat {
        WebChat::new(
            WebChatSettings {
                name: "webchat".into(),
                max_text_bytes: 100,
                rate_per_second: 5,
                rate_burst: 10,
                heartbeat: Duration::from_secs(25),
            },
            secret.to_vec(),
        )
    }

    #[test]
    fn tokens_verify_only_with_the_same_secret_and_intact() {
        let a = chat(b"one");
        let token = a.issue_token("visitor42", 1_700_000_000);
        assert_eq!(a.verify_token(&token).as_deref(), Some("visitor42"));
        assert_eq!(chat(b"two").verify_token(&token), None);
        let forged = token.replacen("visitor42", "visitor43", 1);
        assert_eq!(a.verify_token(&forged), None);
        assert_eq!(a.verify_token("garbage"), None);
        assert_eq!(a.verify_token(""), None);
    }

    #[test]
    fn rfc3339_renders_milliseconds() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[tokio::test]
    async fn hub_forgets_rooms_without_sockets() {
        let hub = Hub::default();
        let rx = hub.subscribe("c1");
        assert_eq!(hub.open_rooms(), 1);
        drop(rx);
        hub.leave("c1");
        assert_eq!(hub.open_rooms(), 0);
    }
}
