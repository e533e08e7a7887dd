//! Telegram updates to normalized messages: a pure translation, unit-tested without a network.
//!
//! What maps to what:
//! - contact: the chat id (a private chat's id is the user's id), so replies go back to that chat;
//! - external message id: `<chat id>:<message id>` (Telegram numbers messages per chat), so a
//!   redelivered update is stored once; an edit gets `<chat id>:<message id>:edit:<edit date>` and
//!   `metadata.edited_of`;
//! - photos, documents and other files become `metadata.attachments` entries (type, file id,
//!   caption...); the text is the caption, or a short placeholder such as `[photo]`;
//! - `/start` is kept as text and marked `metadata.command = "start"`; the sender's
//!   `language_code` travels in `metadata.telegram.language_code` (the adapter also passes it to
//!   the router when opening the conversation, so the greeting is in the user's language).

use serde_json::{json, Map, Value};
use teloxide::types::{ChatKind, Message, PublicChatKind};

use crate::InboundMessage;

/// A customer message read from a Telegram message, with what the adapter needs besides.
#[derive(Debug, Clone)]
pub struct Translated {
    pub message: InboundMessage,
    /// The message is the `/start` command (a new chat): open the conversation with `language`.
    pub start: bool,
    /// The sender's interface language as a two-letter code.
    pub language: Option<String>,
}

/// Why a message is not handed to the router.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("group chats are not enabled for this bot (allow_groups = false)")]
    Group,
    #[error("the message was sent by a bot")]
    FromBot,
    #[error("the message holds nothing the gateway records ({0})")]
    Unsupported(String),
}

/// `ru-RU`, `pt-br`, `en` -> `ru`, `pt`, `en`.
pub fn two_letter(code: &str) -> Option<String> {
    let primary = code.split(['-', '_']).next()?.to_ascii_lowercase();
    (primary.len() == 2 && primary.chars().all(|c| c.is_ascii_alphabetic())).then_some(primary)
}

fn chat_type(m: &Message) -> &'static str {
    match &m.chat.kind {
        ChatKind::Private(_) => "private",
        ChatKind::Public(p) => match p.kind {
            PublicChatKind::Group => "group",
            PublicChatKind::Supergroup(_) => "supergroup",
            PublicChatKind::Channel(_) => "channel",
        },
    }
}

/// The attachments of a message, as stored in `metadata.attachments`.
fn attachments(m: &Message) -> Vec<Value> {
    let caption = m.caption();
    let mut out = Vec::new();
    if let Some(sizes) = m.photo() {
        // Telegram sends several sizes of one photo; the largest is the one worth keeping.
        if let Some(p) = sizes.iter().max_by_key(|p| p.width * p.height) {
            out.push(json!({
                "type": "photo",
                "file_id": p.file.id.to_string(),
                "file_unique_id": p.file.unique_id.to_string(),
                "width": p.width,
                "height": p.height,
                "size": p.file.size,
                "caption": caption,
            }));
        }
    }
    if let Some(d) = m.document() {
        out.push(json!({
            "type": "document",
            "file_id": d.file.id.to_string(),
            "file_unique_id": d.file.unique_id.to_string(),
            "file_name": d.file_name,
            "mime_type": d.mime_type.as_ref().map(|m| m.to_string()),
            "size": d.file.size,
            "caption": caption,
        }));
    }
    let others = [
        ("voice", m.voice().map(|v| &v.file)),
        ("audio", m.audio().map(|a| &a.file)),
        ("video", m.video().map(|v| &v.file)),
    ];
    for (kind, file) in others {
        if let Some(f) = file {
            out.push(json!({
                "type": kind,
                "file_id": f.id.to_string(),
                "file_unique_id": f.unique_id.to_string(),
                "size": f.size,
                "caption": caption,
            }));
        }
    }
    out
}

/// Translates a message (or, with `edited`, an edited message) of chat update.
pub fn translate(
    channel: &str,
    m: &Message,
    edited: bool,
    allow_groups: bool,
) -> Result<Translated, Skip> {
    let private = matches!(m.chat.kind, ChatKind::Private(_));
    if !private && !allow_groups {
        return Err(Skip::Group);
    }
    if m.from.as_ref().is_some_and(|u| u.is_bot) {
        return Err(Skip::FromBot);
    }
    let files = attachments(m);
    let text = match (m.text(), m.caption(), files.first()) {
        (Some(t), _, _) if !t.trim().is_empty() => t.to_string(),
        (_, Some(c), _) if !c.trim().is_empty() => c.to_string(),
        (_, _, Some(first)) => format!("[{}]", first["type"].as_str().unwrap_or("file")),
        _ => {
            let kind = if m.sticker().is_some() {
                "sticker"
            } else {
                "no text or file"
            };
            return Err(Skip::Unsupported(kind.to_string()));
        }
    };
    let chat_id = m.chat.id.0;
    let message_id = m.id.0;
    let base_id = format!("{chat_id}:{message_id}");
    let from = m.from.as_ref();
    let language = from
        .and_then(|u| u.language_code.as_deref())
        .and_then(two_letter);
    let start = !edited
        && text
            .split_whitespace()
            .next()
            .is_some_and(|w| w == "/start" || w.starts_with("/start@"));

    let mut telegram = Map::new();
    telegram.insert("chat_id".into(), json!(chat_id));
    telegram.insert("message_id".into(), json!(message_id));
    telegram.insert("chat_type".into(), json!(chat_type(m)));
    telegram.insert("date".into(), json!(m.date.timestamp()));
    if let Some(u) = from {
        telegram.insert("user_id".into(), json!(u.id.0));
        if let Some(name) = &u.username {
            telegram.insert("username".into(), json!(name));
        }
        if let Some(code) = &u.language_code {
            telegram.insert("language_code".into(), json!(code));
        }
    }
    let mut metadata = Map::new();
    metadata.insert("telegram".into(), Value::Object(telegram));
    if !files.is_empty() {
        metadata.insert("attachments".into(), Value::Array(files));
    }
    if start {
        metadata.insert("command".into(), json!("start"));
    }
    let external_message_id = if edited {
        let at = m.edit_date().map(|d| d.timestamp()).unwrap_or_default();
        metadata.insert("edited_of".into(), json!(base_id));
        metadata.insert("edited_at".into(), json!(at));
        format!("{base_id}:edit:{at}")
    } else {
        base_id
    };
    let contact_name = if private {
        from.map(|u| match &u.last_name {
            Some(last) => format!("{} {last}", u.first_name),
            None => u.first_name.clone(),
        })
    } else {
        m.chat.title().map(str::to_string)
    };
    Ok(Translated {
        message: InboundMessage {
            channel: channel.to_string(),
            contact_external_id: chat_id.to_string(),
            external_message_id,
            text,
            contact_name,
            contact_email: None,
            metadata: Value::Object(metadata),
        },
        start,
        language,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(extra: Value) -> Message {
        let mut v = json!({
            "message_id": 7, "date": 1_700_000_000,
            "chat": {"id": 42, "type": "private", "first_name": "Alice"},
            "from": {"id": 42, "is_bot": false, "first_name": "Alice", "last_name": "Liddell",
                     "username": "alice", "language_code": "ru-RU"},
        });
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        serde_json::from_value(v).expect("a valid message")
    }

    #[test]
    fn text_and_start_map_to_contact_message_id_and_language() {
        let t = translate("tg", &message(json!({"text": "/start"})), false, false).expect("kept");
        assert!(t.start);
        assert_eq!(t.language.as_deref(), Some("ru"));
        assert_eq!(t.message.contact_external_id, "42");
        assert_eq!(t.message.external_message_id, "42:7");
        assert_eq!(t.message.contact_name.as_deref(), Some("Alice Liddell"));
        assert_eq!(t.message.metadata["command"], "start");
        assert_eq!(t.message.metadata["telegram"]["username"], "alice");
        let plain =
            translate("tg", &message(json!({"text": "hi /start"})), false, false).expect("kept");
        assert!(!plain.start);
    }

    #[test]
    fn photos_keep_the_largest_size_and_the_caption_becomes_the_text() {
        let m = message(json!({
            "caption": "my router",
            "photo": [
                {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 60, "file_size": 10},
                {"file_id": "big", "file_unique_id": "b", "width": 1280, "height": 853, "file_size": 999},
            ],
        }));
        let t = translate("tg", &m, false, false).expect("kept");
        assert_eq!(t.message.text, "my router");
        let a = &t.message.metadata["attachments"][0];
        assert_eq!(
            (a["type"].as_str(), a["file_id"].as_str()),
            (Some("photo"), Some("big"))
        );
        assert_eq!(a["caption"], "my router");

        let doc = message(json!({"document": {"file_id": "d1", "file_unique_id": "u1",
            "file_name": "invoice.pdf", "mime_type": "application/pdf"}}));
        let t = translate("tg", &doc, false, false).expect("kept");
        assert_eq!(t.message.text, "[document]");
        assert_eq!(
            t.message.metadata["attachments"][0]["file_name"],
            "invoice.pdf"
        );
        assert_eq!(
            t.message.metadata["attachments"][0]["mime_type"],
            "application/pdf"
        );
    }

    #[test]
    fn an_edit_is_a_new_message_pointing_at_the_original() {
        let m = message(json!({"text": "fixed typo", "edit_date": 1_700_000_100}));
        let t = translate("tg", &m, true, false).expect("kept");
        assert_eq!(t.message.external_message_id, "42:7:edit:1700000100");
        assert_eq!(t.message.metadata["edited_of"], "42:7");
    }

    #[test]
    fn groups_are_skipped_unless_allowed_and_bots_always() {
        let group: Message = serde_json::from_value(json!({
            "message_id": 1, "date": 1_700_000_000, "text": "hello",
            "chat": {"id": -100, "type": "group", "title": "Team"},
            "from": {"id": 5, "is_bot": false, "first_name": "Bob"},
        }))
        .expect("group message");
        assert_eq!(
            translate("tg", &group, false, false).unwrap_err(),
            Skip::Group
        );
        let t = translate("tg", &group, false, true).expect("allowed");
        assert_eq!(
            (
                t.message.contact_external_id.as_str(),
                t.message.contact_name.as_deref()
            ),
            ("-100", Some("Team"))
        );
        let bot =
            message(json!({"text": "x", "from": {"id": 9, "is_bot": true, "first_name": "B"}}));
        assert_eq!(
            translate("tg", &bot, false, false).unwrap_err(),
            Skip::FromBot
        );
    }
}
