//! Long polling with a persisted offset.
//!
//! Updates are handled one at a time, in order (so a chat's messages reach the router in the order
//! they were written), and the offset after each handled update is saved through
//! [`ChannelState`] before the next one. After a restart polling resumes at the saved offset, which
//! also confirms the handled updates to Telegram: none is processed twice. (Should the process die
//! between storing a message and saving the offset, the redelivered update is recognized by its
//! external id and not stored again.) Malformed updates are logged and skipped; a batch Telegram
//! sends that does not parse at all is salvaged update by update.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use teloxide::payloads::GetUpdatesSetters;
use teloxide::prelude::Requester;
use teloxide::types::{AllowedUpdate, Update};
use teloxide::RequestError;
use tokio_util::sync::CancellationToken;

use super::{TelegramChannel, TelegramError};
use crate::{ChannelState, Gateway};

/// The update kinds the gateway handles (Telegram remembers the list per bot).
pub fn allowed_updates() -> Vec<AllowedUpdate> {
    vec![
        AllowedUpdate::Message,
        AllowedUpdate::EditedMessage,
        AllowedUpdate::CallbackQuery,
    ]
}

fn offset_key(channel: &str) -> String {
    format!("telegram.{channel}.offset")
}

/// One `getUpdates` answer: parsed updates, and the highest update id seen (parsed or not).
struct Batch {
    updates: Vec<Update>,
    max_id: Option<i64>,
}

/// A `getUpdates` body teloxide could not parse as a whole (an update without a readable
/// `update_id`): parse what can be parsed, and skip past the rest.
fn salvage(channel: &str, raw: &str) -> Option<Batch> {
    let v: Value = serde_json::from_str(raw).ok()?;
    let items = v.get("result")?.as_array()?;
    let mut batch = Batch {
        updates: Vec::new(),
        max_id: None,
    };
    for item in items {
        if let Some(id) = item.get("update_id").and_then(Value::as_i64) {
            batch.max_id = Some(batch.max_id.map_or(id, |m| m.max(id)));
        }
        match serde_json::from_value::<Update>(item.clone()) {
            Ok(u) => batch.updates.push(u),
            Err(e) => {
                let shown: String = item.to_string().chars().take(300).collect();
                tracing::warn!(channel, error = %e, raw = %shown, "malformed Telegram update skipped");
            }
        }
    }
    Some(batch)
}

async fn sleep_or_stop(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Startup: check the token (`getMe`) and remove a webhook left from webhook mode, which would
/// make `getUpdates` fail.
async fn prepare(ch: &TelegramChannel) -> Result<(), TelegramError> {
    let me = ch.bot.get_me().await?;
    let info = ch.bot.get_webhook_info().await?;
    if info.url.is_some() {
        ch.bot.delete_webhook().await?;
        tracing::info!(channel = %ch.settings.name, "removed the bot's webhook to poll instead");
    }
    tracing::info!(channel = %ch.settings.name, bot = %me.username(), "Telegram long polling started");
    Ok(())
}

pub async fn run(
    ch: Arc<TelegramChannel>,
    gateway: Arc<dyn Gateway>,
    state: Arc<dyn ChannelState>,
    shutdown: CancellationToken,
) {
    let name = ch.settings.name.clone();
    let key = offset_key(&name);
    let mut failures = 0u32;
    let backoff = |failures: u32| {
        Duration::from_millis(500 * 2u64.pow(failures.min(6))).min(Duration::from_secs(30))
    };
    loop {
        match prepare(&ch).await {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(channel = %name, error = %e, "Telegram bot cannot start; will retry");
                failures += 1;
                if !sleep_or_stop(&shutdown, backoff(failures)).await {
                    return;
                }
            }
        }
    }
    let mut offset: i64 = loop {
        match state.load(&key).await {
            Ok(v) => break v.and_then(|s| s.parse().ok()).unwrap_or(0),
            Err(e) => {
                tracing::error!(channel = %name, error = %e, "cannot read the saved polling offset; will retry");
                if !sleep_or_stop(&shutdown, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    };
    failures = 0;
    let timeout = ch.settings.poll_timeout.as_secs().min(u64::from(u32::MAX)) as u32;
    while !shutdown.is_cancelled() {
        let request = ch
            .bot
            .get_updates()
            .offset(i32::try_from(offset).unwrap_or(i32::MAX))
            .timeout(timeout)
            .allowed_updates(allowed_updates());
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = request => a,
        };
        let batch = match answer {
            Ok(updates) => Batch {
                max_id: updates.iter().map(|u| i64::from(u.id.0)).max(),
                updates,
            },
            Err(RequestError::InvalidJson { raw, source }) => match salvage(&name, &raw) {
                Some(b) => b,
                None => {
                    tracing::warn!(channel = %name, error = %source, "unreadable getUpdates answer");
                    failures += 1;
                    if !sleep_or_stop(&shutdown, backoff(failures)).await {
                        return;
                    }
                    continue;
                }
            },
            Err(RequestError::RetryAfter(s)) => {
                tracing::warn!(channel = %name, retry_after = ?s.duration(), "getUpdates rate limited");
                if !sleep_or_stop(&shutdown, s.duration()).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(channel = %name, error = %e, failures, "getUpdates failed; will retry");
                if !sleep_or_stop(&shutdown, backoff(failures)).await {
                    return;
                }
                continue;
            }
        };
        failures = 0;
        let mut stalled = false;
        for update in batch.updates {
            let id = i64::from(update.id.0);
            if id < offset {
                continue;
            }
            if let Err(e) = ch.handle_update(gateway.as_ref(), update).await {
                // Not stored: leave the offset here so Telegram sends it (and what follows) again.
                tracing::error!(channel = %name, update_id = id, error = %e, "Telegram update not handled; will retry");
                stalled = true;
                break;
            }
            offset = id + 1;
            save(&*state, &key, offset, &shutdown).await;
        }
        if !stalled {
            if let Some(max) = batch.max_id {
                if max + 1 > offset {
                    // Updates that did not parse: skip past them.
                    offset = max + 1;
                    save(&*state, &key, offset, &shutdown).await;
                }
            }
        } else if !sleep_or_stop(&shutdown, Duration::from_secs(1)).await {
            return;
        }
    }
}

/// Saves the offset, retrying until it sticks (or shutdown): an offset not saved would make a
/// restart hand the same update to the router again.
async fn save(state: &dyn ChannelState, key: &str, offset: i64, shutdown: &CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        match state.save(key, &offset.to_string()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(key, error = %e, "cannot save the Telegram polling offset; retrying");
                if !sleep_or_stop(shutdown, delay).await {
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unparseable_batch_is_salvaged_update_by_update() {
        let raw = r#"{"ok":true,"result":[
            {"update_id":5,"message":{"message_id":1,"date":1700000000,"chat":{"id":42,"type":"private","first_name":"A"},"text":"hi"}},
            {"update_id":"six"},
            {"update_id":7,"message":{"message_id":2,"date":1700000000,"chat":{"id":42,"type":"private","first_name":"A"},"text":"again"}}
        ]}"#;
        let batch = salvage("tg", raw).expect("salvaged");
        assert_eq!(batch.updates.len(), 2);
        assert_eq!(batch.max_id, Some(7));
        assert!(salvage("tg", "not json").is_none());
    }
}
