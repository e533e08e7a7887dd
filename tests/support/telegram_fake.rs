//! A test-only fake of the Telegram Bot API on 127.0.0.1, so the gateway's real teloxide code runs.
//!
//! It speaks the wire protocol teloxide uses (`POST /bot<TOKEN>/<Method>`, method names matched
//! case-insensitively, JSON or multipart bodies, the `{"ok":...}` envelope), serves several bots at
//! once (told apart by token) and records every call. Long polling behaves like Telegram's: an
//! update stays queued until a `getUpdates` with a higher `offset` confirms it, and a poll with
//! nothing to return is held (at most 1 s here). Tests script it: queue updates (well-formed or
//! not), make a method fail once (e.g. 429 with `retry_after`). It never answers HTTP 5xx, on which
//! teloxide would wait 10 s.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// One recorded API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub token: String,
    /// Lower-case method name (`sendmessage`).
    pub method: String,
    /// The JSON body (multipart bodies: `{"_raw": text}`).
    pub body: Value,
    /// What the fake answered.
    pub ok: bool,
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    /// Queued, unconfirmed updates per token.
    updates: HashMap<String, VecDeque<Value>>,
    next_update_id: i64,
    next_message_id: i64,
    calls: Vec<Call>,
    /// Scripted answers per lower-case method, used once each.
    failures: HashMap<String, VecDeque<Value>>,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
}

/// The running fake; its server stops with the test's runtime.
#[derive(Clone)]
pub struct FakeTelegram {
    /// Base URL for teloxide's `set_api_url` (no trailing slash).
    pub url: String,
    shared: Arc<Shared>,
}

async fn api(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let token = bot.strip_prefix("bot").unwrap_or(&bot).to_string();
    let method = method.to_ascii_lowercase();
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let body: Value = if json_body {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    } else {
        json!({ "_raw": String::from_utf8_lossy(&body) })
    };
    let scripted = {
        let mut inner = lock(&shared);
        inner
            .failures
            .get_mut(&method)
            .and_then(VecDeque::pop_front)
    };
    if let Some(answer) = scripted {
        lock(&shared).calls.push(Call {
            token,
            method,
            body,
            ok: false,
            at: std::time::Instant::now(),
        });
        return Json(answer);
    }
    let result = match method.as_str() {
        "getme" => json!({
            "id": token.split(':').next().and_then(|id| id.parse::<i64>().ok()).unwrap_or(1),
            "is_bot": true, "first_name": "Support", "username": "frontdesk_test_bot",
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "has_main_web_app": false,
        }),
        "getwebhookinfo" => {
            json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0})
        }
        "getupdates" => {
            lock(&shared).calls.push(Call {
                token: token.clone(),
                method: method.clone(),
                body: body.clone(),
                ok: true,
                at: std::time::Instant::now(),
            });
            let offset = body["offset"].as_i64().unwrap_or(0);
            let hold = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0).min(1));
            return Json(json!({"ok": true, "result": poll(&shared, &token, offset, hold).await}));
        }
        "sendmessage" => {
            let mut inner = lock(&shared);
            inner.next_message_id += 1;
            let chat = body["chat_id"].as_i64().unwrap_or(0);
            json!({
                "message_id": 1000 + inner.next_message_id, "date": 1_700_000_000,
                "chat": {"id": chat, "type": "private", "first_name": "Customer"},
                "from": {"id": 1, "is_bot": true, "first_name": "Support"},
                "text": body["text"],
                "reply_markup": body.get("reply_markup").cloned().unwrap_or(Value::Null),
            })
        }
        _ => json!(true),
    };
    lock(&shared).calls.push(Call {
        token,
        method,
        body,
        ok: true,
        at: std::time::Instant::now(),
    });
    shared.changed.notify_waiters();
    Json(json!({"ok": true, "result": result}))
}

/// Confirms updates below `offset`, then returns what is queued, waiting up to `hold` for some.
async fn poll(shared: &Shared, token: &str, offset: i64, hold: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        let notified = shared.changed.notified();
        {
            let mut inner = lock(shared);
            let queue = inner.updates.entry(token.to_string()).or_default();
            if offset > 0 {
                queue.retain(|u| u["update_id"].as_i64().is_none_or(|id| id >= offset));
            }
            if !queue.is_empty() {
                return Value::Array(queue.iter().cloned().collect());
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return json!([]);
        }
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    shared.inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeTelegram {
    pub async fn start() -> FakeTelegram {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/{bot}/{method}", axum::routing::post(api))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTelegram {
            url: format!("http://{addr}"),
            shared,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared)
    }

    /// Queues an update for the bot with `token`; `update_id` is added when missing. Returns it.
    pub fn push_update(&self, token: &str, mut update: Value) -> i64 {
        let id = {
            let mut inner = self.lock();
            inner.next_update_id += 1;
            let id = update["update_id"].as_i64().unwrap_or(inner.next_update_id);
            inner.next_update_id = inner.next_update_id.max(id);
            update["update_id"] = json!(id);
            inner
                .updates
                .entry(token.to_string())
                .or_default()
                .push_back(update);
            id
        };
        self.shared.changed.notify_waiters();
        id
    }

    /// Queues a private text message from `chat` (the user has the same id) and returns the
    /// update id.
    pub fn push_text(&self, token: &str, chat: i64, message_id: i64, text: &str) -> i64 {
        self.push_update(token, message(chat, message_id, json!({"text": text})))
    }

    /// Queues a press on an inline button with `data`, under message `message_id` of `chat`.
    pub fn push_callback(
        &self,
        token: &str,
        chat: i64,
        query_id: &str,
        message_id: i64,
        data: &str,
    ) -> i64 {
        self.push_update(
            token,
            json!({"callback_query": {
                "id": query_id, "chat_instance": "ci-1", "data": data,
                "from": {"id": chat, "is_bot": false, "first_name": "Alice", "language_code": "en"},
                "message": {"message_id": message_id, "date": 1_700_000_000,
                            "chat": {"id": chat, "type": "private", "first_name": "Alice"},
                            "from": {"id": 1, "is_bot": true, "first_name": "Support"},
                            "text": "Did you mean one of these?"},
            }}),
        )
    }

    /// Makes the next call of `method` (any case) answer `{"ok":false,...}` with this code; a
    /// `retry_after` becomes `parameters.retry_after`, as Telegram sends it with 429.
    pub fn fail_once(&self, method: &str, code: i64, description: &str, retry_after: Option<u64>) {
        let mut answer = json!({"ok": false, "error_code": code, "description": description});
        if let Some(secs) = retry_after {
            answer["parameters"] = json!({ "retry_after": secs });
        }
        self.lock()
            .failures
            .entry(method.to_ascii_lowercase())
            .or_default()
            .push_back(answer);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Calls of `method` (any case) by the bot with `token`.
    pub fn calls_of(&self, token: &str, method: &str) -> Vec<Call> {
        let method = method.to_ascii_lowercase();
        self.lock()
            .calls
            .iter()
            .filter(|c| c.token == token && c.method == method)
            .cloned()
            .collect()
    }

    /// The `sendMessage` calls that succeeded, for `token`.
    pub fn sent(&self, token: &str) -> Vec<Value> {
        self.calls_of(token, "sendMessage")
            .into_iter()
            .filter(|c| c.ok)
            .map(|c| c.body)
            .collect()
    }

    /// Waits until `n` messages were sent successfully by the bot with `token` (20 s at most).
    pub async fn wait_sent(&self, token: &str, n: usize) -> Vec<Value> {
        self.wait_calls(token, "sendMessage", n, true).await
    }

    /// Waits until `method` was called `n` times (only successful calls when `ok_only`).
    pub async fn wait_calls(
        &self,
        token: &str,
        method: &str,
        n: usize,
        ok_only: bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got: Vec<Value> = self
                .calls_of(token, method)
                .into_iter()
                .filter(|c| c.ok || !ok_only)
                .map(|c| c.body)
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{method}: {} of {n} calls; all calls: {:#?}",
                got.len(),
                self.calls()
                    .iter()
                    .map(|c| (&c.method, &c.body))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Updates still queued (not confirmed by an offset) for `token`.
    pub fn pending(&self, token: &str) -> usize {
        self.lock().updates.get(token).map_or(0, VecDeque::len)
    }
}

/// A private-chat message from user `chat` with the given extra fields (`text`, `photo`...).
pub fn message(chat: i64, message_id: i64, extra: Value) -> Value {
    let mut m = json!({
        "message_id": message_id, "date": 1_700_000_000,
        "chat": {"id": chat, "type": "private", "first_name": "Alice"},
        "from": {"id": chat, "is_bot": false, "first_name": "Alice", "language_code": "en"},
    });
    if let (Some(o), Value::Object(e)) = (m.as_object_mut(), extra) {
        o.extend(e);
    }
    json!({ "message": m })
}
