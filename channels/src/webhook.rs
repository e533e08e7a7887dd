//! The webhook ("API") channel: any system that can send and receive signed HTTP requests.
//!
//! Inbound: `POST /api/v1/channels/{name}/messages` with a [`WebhookInbound`] JSON body, signed as
//! described in [`crate::signature`]. Outbound: bot and agent messages are POSTed as
//! [`WebhookOutbound`] to the channel's `outbound_url`, signed the same way with the same secret, by
//! the gateway's outbox (which retries).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::signature::{self, SignatureError};
use crate::{Author, Channel, DeliveryError, InboundMessage, OutboundMessage, QuickReply};

/// Settings of one webhook channel instance.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub name: String,
    pub secret: String,
    pub outbound_url: Option<String>,
    /// How far the sender's clock may be from ours before a request counts as stale.
    pub max_skew_secs: i64,
    pub timeout: Duration,
    pub max_text_bytes: usize,
}

/// Body of an inbound webhook message.
#[derive(Debug, Deserialize, ToSchema)]
pub struct WebhookInbound {
    /// The sender's id for the customer; one conversation per contact and channel.
    pub contact_id: String,
    /// The sender's id for this message: a retry with the same id is stored once.
    pub message_id: String,
    pub text: String,
    /// Anything else; stored with the message.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub contact_name: Option<String>,
    #[serde(default)]
    pub contact_email: Option<String>,
}

/// Body POSTed to a channel's `outbound_url` for every bot or agent message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookOutbound {
    /// Always `message.created`.
    pub event: String,
    /// Stable across redeliveries of the same message: de-duplicate on it.
    pub delivery_id: String,
    pub channel: String,
    pub conversation_id: String,
    /// The contact id the sender used inbound.
    pub contact_id: String,
    pub seq: i64,
    pub author: Author,
    pub text: String,
    pub quick_replies: Vec<QuickReply>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// Why an inbound request was refused; each becomes a 4xx with this text.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("body is not valid UTF-8 (first invalid byte at offset {0})")]
    NotUtf8(usize),
    #[error("body is not the expected JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Invalid(String),
    #[error("text is {0} bytes, more than the channel's limit of {1}")]
    TooLarge(usize, usize),
}

/// One configured webhook channel.
pub struct WebhookChannel {
    settings: WebhookSettings,
    client: reqwest::Client,
}

impl WebhookChannel {
    pub fn new(settings: WebhookSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("frontdesk/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { settings, client })
    }

    /// Verifies and normalizes one inbound request. Signature first: an unsigned body is never parsed.
    pub fn accept(
        &self,
        timestamp: Option<&str>,
        signature_header: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<InboundMessage, InboundError> {
        signature::verify(
            self.settings.secret.as_bytes(),
            timestamp,
            signature_header,
            body,
            now_secs,
            self.settings.max_skew_secs,
        )?;
        let text = std::str::from_utf8(body).map_err(|e| InboundError::NotUtf8(e.valid_up_to()))?;
        let parsed: WebhookInbound =
            serde_json::from_str(text).map_err(|e| InboundError::Json(e.to_string()))?;
        for (field, value) in [
            ("contact_id", &parsed.contact_id),
            ("message_id", &parsed.message_id),
        ] {
            if value.trim().is_empty() {
                return Err(InboundError::Invalid(format!(
                    "field '{field}' must not be empty"
                )));
            }
            if value.len() > 256 {
                return Err(InboundError::Invalid(format!(
                    "field '{field}' is longer than 256 bytes"
                )));
            }
        }
        if parsed.text.trim().is_empty() {
            return Err(InboundError::Invalid(
                "field 'text' must not be empty".into(),
            ));
        }
        if parsed.text.len() > self.settings.max_text_bytes {
            return Err(InboundError::TooLarge(
                parsed.text.len(),
                self.settings.max_text_bytes,
            ));
        }
        Ok(InboundMessage {
            channel: self.settings.name.clone(),
            contact_external_id: parsed.contact_id,
            external_message_id: parsed.message_id,
            text: parsed.text,
            contact_name: parsed.contact_name,
            contact_email: parsed.contact_email,
            metadata: parsed.metadata.unwrap_or(serde_json::Value::Null),
        })
    }
}

#[async_trait]
impl Channel for WebhookChannel {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<(), DeliveryError> {
        let Some(url) = &self.settings.outbound_url else {
            return Err(DeliveryError::Permanent(format!(
                "channel '{}' has no outbound_url configured",
                self.settings.name
            )));
        };
        let payload = WebhookOutbound {
            event: "message.created".into(),
            delivery_id: message.delivery_id.clone(),
            channel: message.channel.clone(),
            conversation_id: message.conversation_id.clone(),
            contact_id: message.contact_external_id.clone(),
            seq: message.seq,
            author: message.author,
            text: message.text.clone(),
            quick_replies: message.quick_replies.clone(),
            created_at_ms: message.created_at_ms,
        };
        let body = serde_json::to_vec(&payload)
            .map_err(|e| DeliveryError::Permanent(format!("cannot encode message: {e}")))?;
        let now = crate::now_ms() / 1000;
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(signature::TIMESTAMP_HEADER, now.to_string())
            .header(
                signature::SIGNATURE_HEADER,
                signature::sign(self.settings.secret.as_bytes(), now, &body),
            )
            .header("x-frontdesk-delivery", &message.delivery_id)
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::Retryable(format!("POST {url} failed: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let detail: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        let msg = format!("POST {url} answered {status}: {detail}");
        if status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429) {
            Err(DeliveryError::Retryable(msg))
        } else {
            Err(DeliveryError::Permanent(msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> WebhookChannel {
        WebhookChannel::new(WebhookSettings {
            name: "crm".into(),
            secret: "k".into(),
            outbound_url: None,
            max_skew_secs: 300,
            timeout: Duration::from_secs(1),
            max_text_bytes: 10,
        })
        .expect("client builds")
    }

    fn signed(body: &[u8]) -> (String, String) {
        ("1000".into(), signature::sign(b"k", 1000, body))
    }

    #[test]
    fn accepts_a_signed_message_and_names_what_is_wrong_otherwise() {
        let ch = channel();
        let body = br#"{"contact_id":"c1","message_id":"m1","text":"hi"}"#;
        let (ts, sig) = signed(body);
        let msg = ch.accept(Some(&ts), Some(&sig), body, 1000).expect("valid");
        assert_eq!(
            (
                msg.channel.as_str(),
                msg.contact_external_id.as_str(),
                msg.text.as_str()
            ),
            ("crm", "c1", "hi")
        );

        let bad_utf8 = b"{\"text\":\"\xff\"}";
        let (ts, sig) = signed(bad_utf8);
        assert!(matches!(
            ch.accept(Some(&ts), Some(&sig), bad_utf8, 1000),
            Err(InboundError::NotUtf8(9))
        ));

        let not_json = b"{\"contact_id\":";
        let (ts, sig) = signed(not_json);
        let err = ch
            .accept(Some(&ts), Some(&sig), not_json, 1000)
            .unwrap_err();
        assert!(err.to_string().contains("EOF"), "{err}");

        let long = br#"{"contact_id":"c1","message_id":"m1","text":"0123456789x"}"#;
        let (ts, sig) = signed(long);
        assert!(matches!(
            ch.accept(Some(&ts), Some(&sig), long, 1000),
            Err(InboundError::TooLarge(11, 10))
        ));

        let empty = br#"{"contact_id":" ","message_id":"m1","text":"x"}"#;
        let (ts, sig) = signed(empty);
        assert!(ch
            .accept(Some(&ts), Some(&sig), empty, 1000)
            .unwrap_err()
            .to_string()
            .contains("contact_id"));
    }
}
