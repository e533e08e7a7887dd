//! Quick replies on messenger buttons.
//!
//! Telegram allows 64 bytes of callback data and Discord 100 bytes of custom id, while a quick
//! reply's payload (an article title, in any script) may be longer. So a button carries only a
//! token naming the stored message and the button's index, `q:<seq>:<index>`, and a press is
//! resolved against the conversation's history: nothing to keep in memory, and a press on an old
//! message still sends that message's payload.

use crate::{Gateway, GatewayError, QuickReply};

/// The token a button carries for quick reply `index` of the message numbered `seq`.
pub fn token(seq: i64, index: usize) -> String {
    format!("q:{seq}:{index}")
}

/// The `(seq, index)` a token names; `None` for anything else (data we did not send).
pub fn parse(token: &str) -> Option<(i64, usize)> {
    let rest = token.strip_prefix("q:")?;
    let (seq, index) = rest.split_once(':')?;
    let seq: i64 = seq.parse().ok()?;
    let index: usize = index.parse().ok()?;
    (seq > 0).then_some((seq, index))
}

/// The quick reply a pressed button stands for, looked up in the contact's conversation.
pub async fn resolve(
    gateway: &dyn Gateway,
    channel: &str,
    contact_external_id: &str,
    token: &str,
) -> Result<Option<QuickReply>, GatewayError> {
    let Some((seq, index)) = parse(token) else {
        return Ok(None);
    };
    let Some(conversation) = gateway
        .find_conversation(channel, contact_external_id)
        .await?
    else {
        return Ok(None);
    };
    let messages = gateway
        .history(&conversation.conversation_id, seq - 1, 1)
        .await?;
    Ok(messages
        .into_iter()
        .find(|m| m.seq == seq)
        .and_then(|m| m.quick_replies.into_iter().nth(index)))
}

/// Splits a text into pieces of at most `max_chars` characters, preferring line breaks, so a long
/// article fits a platform's message limit (Telegram 4096, Discord 2000).
pub fn split_text(text: &str, max_chars: usize) -> Vec<String> {
    let max_chars = max_chars.max(1);
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.chars().count() > max_chars {
        let cut = rest
            .char_indices()
            .nth(max_chars)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let head = &rest[..cut];
        let at = head
            .rfind('\n')
            .filter(|&i| i > cut / 2)
            .map(|i| i + 1)
            .unwrap_or(cut);
        parts.push(rest[..at].trim_end().to_string());
        rest = &rest[at..];
    }
    if !rest.trim().is_empty() || parts.is_empty() {
        parts.push(rest.to_string());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_data_is_refused() {
        assert_eq!(parse(&token(12, 2)), Some((12, 2)));
        assert!(token(9_999_999_999, 24).len() <= 64);
        for bad in [
            "", "q:", "q:1", "q:x:1", "q:0:1", "q:-3:1", "hello", "q:1:-1",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn long_texts_are_split_at_line_breaks_within_the_limit() {
        let text = format!("{}\n{}", "a".repeat(8), "b".repeat(8));
        assert_eq!(split_text(&text, 10), vec!["a".repeat(8), "b".repeat(8)]);
        let parts = split_text(&"я".repeat(25), 10);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= 10));
        assert_eq!(split_text("short", 10), vec!["short".to_string()]);
    }
}
