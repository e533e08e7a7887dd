//! A test-only fake of Discord's REST API and gateway on 127.0.0.1, so the gateway's real serenity
//! client runs against it.
//!
//! REST (`/api/v10/...`, reached through serenity's proxy setting): `GET /gateway` names the fake's
//! WebSocket; `POST /channels/{id}/messages`, `POST /channels/{id}/messages/{id}/threads`,
//! interaction callbacks and typing are recorded and answered like Discord does; any other call is
//! recorded and answered 404. The gateway sends Hello, waits for Identify, dispatches READY, answers
//! heartbeats, then dispatches whatever the test queues (MESSAGE_CREATE, INTERACTION_CREATE).
//! Scriptable: answer the next message POST with 429 once. Every call is recorded.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::Notify;

pub const BOT_USER_ID: &str = "900000000000000001";
pub const APPLICATION_ID: &str = "900000000000000002";

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    /// Gateway events waiting to be dispatched: (event name, data).
    events: VecDeque<(String, Value)>,
    next_id: u64,
    rate_limit_next_message: bool,
    identified: usize,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
    base: Mutex<String>,
}

#[derive(Clone)]
pub struct FakeDiscord {
    /// `http://127.0.0.1:<port>`, serenity's proxy address.
    pub url: String,
    shared: Arc<Shared>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    shared.inner.lock().unwrap_or_else(|e| e.into_inner())
}

fn user(id: &str, name: &str, bot: bool) -> Value {
    json!({"id": id, "username": name, "discriminator": "0", "global_name": name, "avatar": null, "bot": bot})
}

/// A message object as Discord sends it.
pub fn message_json(
    id: &str,
    channel_id: &str,
    author: Value,
    content: &str,
    guild_id: Option<&str>,
) -> Value {
    let mut m = json!({
        "id": id, "channel_id": channel_id, "author": author, "content": content,
        "timestamp": "2026-01-01T00:00:00.000000+00:00", "edited_timestamp": null, "tts": false,
        "mention_everyone": false, "mentions": [], "mention_roles": [], "attachments": [],
        "embeds": [], "pinned": false, "type": 0,
    });
    if let Some(g) = guild_id {
        m["guild_id"] = json!(g);
    }
    m
}

async fn rest(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path().trim_start_matches("/api/v10").to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (status, answer) = {
        let mut inner = lock(&shared);
        inner.next_id += 1;
        let new_id = format!("{}", 800_000_000_000_000_000u64 + inner.next_id);
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["gateway"]) | ("GET", ["gateway", "bot"]) => {
                let base = shared
                    .base
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                (
                    200,
                    json!({"url": base.replace("http://", "ws://") + "/gateway", "shards": 1,
                    "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}}),
                )
            }
            ("POST", ["channels", channel, "messages"]) => {
                if std::mem::take(&mut inner.rate_limit_next_message) {
                    (
                        429,
                        json!({"message": "You are being rate limited.", "retry_after": 1.0, "global": false}),
                    )
                } else {
                    let mut m = message_json(
                        &new_id,
                        channel,
                        user(BOT_USER_ID, "support-bot", true),
                        body["content"].as_str().unwrap_or_default(),
                        None,
                    );
                    m["components"] = body.get("components").cloned().unwrap_or(json!([]));
                    (200, m)
                }
            }
            ("POST", ["channels", channel, "messages", _, "threads"]) => (
                201,
                json!({
                    "id": new_id, "type": 11, "guild_id": "700000000000000001", "parent_id": channel,
                    "name": body["name"], "owner_id": BOT_USER_ID,
                }),
            ),
            ("POST", ["interactions", _, _, "callback"]) => (204, Value::Null),
            ("POST", ["channels", _, "typing"]) => (204, Value::Null),
            _ => (404, json!({"message": "404: Not Found", "code": 0})),
        }
    };
    lock(&shared).calls.push(Call {
        method: method.to_string(),
        path,
        body,
        status,
        at: Instant::now(),
    });
    shared.changed.notify_waiters();
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if answer.is_null() {
        code.into_response()
    } else {
        (code, Json(answer)).into_response()
    }
}

async fn gateway(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| session(shared, socket))
}

async fn session(shared: Arc<Shared>, mut socket: WebSocket) {
    let send = |v: Value| WsMessage::Text(v.to_string().into());
    if socket
        .send(send(json!({"op": 10, "d": {"heartbeat_interval": 41250}})))
        .await
        .is_err()
    {
        return;
    }
    let mut seq = 0u64;
    let mut ready = false;
    loop {
        let notified = shared.changed.notified();
        if ready {
            let next = lock(&shared).events.pop_front();
            if let Some((name, data)) = next {
                seq += 1;
                if socket
                    .send(send(json!({"op": 0, "t": name, "s": seq, "d": data})))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        }
        tokio::select! {
            _ = notified => {},
            _ = tokio::time::sleep(Duration::from_millis(200)) => {},
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { return };
                let WsMessage::Text(text) = frame else { continue };
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                match v["op"].as_i64() {
                    Some(1) if socket.send(send(json!({"op": 11}))).await.is_err() => return,
                    Some(2) => {
                        lock(&shared).identified += 1;
                        seq += 1;
                        let ready_event = json!({"op": 0, "t": "READY", "s": seq, "d": {
                            "v": 10, "user": user(BOT_USER_ID, "support-bot", true), "guilds": [],
                            "session_id": "session-1", "resume_gateway_url": "ws://127.0.0.1:1",
                            "application": {"id": APPLICATION_ID, "flags": 0},
                        }});
                        if socket.send(send(ready_event)).await.is_err() {
                            return;
                        }
                        ready = true;
                    }
                    _ => {}
                }
            }
        }
    }
}

impl FakeDiscord {
    pub async fn start() -> FakeDiscord {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/gateway", axum::routing::get(gateway))
            .fallback(rest)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let url = format!("http://{addr}");
        *shared.base.lock().expect("lock") = url.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeDiscord { url, shared }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared)
    }

    /// Queues any gateway event.
    pub fn dispatch(&self, name: &str, data: Value) {
        self.lock().events.push_back((name.to_string(), data));
        self.shared.changed.notify_waiters();
    }

    /// A customer's direct message in DM channel `channel_id`.
    pub fn send_dm(&self, message_id: &str, channel_id: &str, user_id: &str, content: &str) {
        self.dispatch(
            "MESSAGE_CREATE",
            message_json(
                message_id,
                channel_id,
                user(user_id, "alice", false),
                content,
                None,
            ),
        );
    }

    /// A customer's message in a guild channel (the support channel or a thread).
    pub fn send_guild(&self, message_id: &str, channel_id: &str, user_id: &str, content: &str) {
        self.dispatch(
            "MESSAGE_CREATE",
            message_json(
                message_id,
                channel_id,
                user(user_id, "bob", false),
                content,
                Some("700000000000000001"),
            ),
        );
    }

    /// A press on the button with `custom_id` under a bot message in `channel_id`.
    pub fn press_button(
        &self,
        interaction_id: &str,
        channel_id: &str,
        user_id: &str,
        custom_id: &str,
    ) {
        let under = message_json(
            "810000000000000001",
            channel_id,
            user(BOT_USER_ID, "support-bot", true),
            "Did you mean one of these?",
            None,
        );
        self.dispatch(
            "INTERACTION_CREATE",
            json!({
                "id": interaction_id, "application_id": APPLICATION_ID, "type": 3,
                "data": {"custom_id": custom_id, "component_type": 2},
                "channel_id": channel_id, "user": user(user_id, "alice", false),
                "token": "interaction-token", "version": 1, "message": under, "locale": "en-US",
                "entitlements": [], "attachment_size_limit": 8_388_608,
            }),
        );
    }

    /// Answers the next message POST with 429 (body `retry_after: 1.0`).
    pub fn rate_limit_next_message(&self) {
        self.lock().rate_limit_next_message = true;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls whose method and path match, e.g. `("POST", "/channels/5/messages")`.
    pub fn calls_to(&self, method: &str, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.path == path)
            .collect()
    }

    /// Messages posted (successfully) to `channel_id`.
    pub fn posted(&self, channel_id: &str) -> Vec<Value> {
        self.calls_to("POST", &format!("/channels/{channel_id}/messages"))
            .into_iter()
            .filter(|c| c.status == 200)
            .map(|c| c.body)
            .collect()
    }

    pub async fn wait_until(&self, what: &str, pred: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let calls = self.calls();
            if pred(&calls) {
                return calls;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} never happened; calls: {calls:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for `n` messages posted to `channel_id`.
    pub async fn wait_posted(&self, channel_id: &str, n: usize) -> Vec<Value> {
        let path = format!("/channels/{channel_id}/messages");
        self.wait_until(&format!("{n} messages in {channel_id}"), |calls| {
            calls
                .iter()
                .filter(|c| c.method == "POST" && c.path == path && c.status == 200)
                .count()
                >= n
        })
        .await;
        self.posted(channel_id)
    }

    /// Waits until the bot identified on the gateway (it is then ready for events).
    pub async fn wait_identified(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.lock().identified == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bot never identified; calls: {:#?}",
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
