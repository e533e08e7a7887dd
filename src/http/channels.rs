//! Channel endpoints: the admin listing of configured channels (never with their tokens or
//! secrets) and the Telegram webhook receiver, which hands each update to its bot's adapter.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use frontdesk_channels::telegram::WebhookError;
use frontdesk_channels::Gateway;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{body_error, ApiError};
use super::handlers::require_admin;
use super::AppState;
use crate::config::{Config, TelegramMode};

/// The header Telegram sends the configured secret token in.
pub const TELEGRAM_SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// A configured channel as the admin API shows it: its settings without tokens or secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    pub name: String,
    /// `webchat`, `webhook`, `telegram` or `discord`.
    pub kind: String,
    /// How customer messages arrive: `websocket`, `webhook`, `polling` or `gateway` (Discord).
    pub inbound: String,
    /// Telegram in webhook mode: the public URL Telegram posts to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Webhook channels: where bot and agent messages are posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_url: Option<String>,
    /// Telegram: whether group chats are answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_groups: Option<bool>,
    /// Discord: the channel where each conversation gets a thread (a string: ids exceed 2^53).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_channel_id: Option<String>,
    /// Telegram and Discord: a non-default API server (set in tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Whether a token or secret is configured (its value is never shown).
    pub credentials_set: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    pub channels: Vec<ChannelView>,
}

fn view(config: &Config, name: &str, kind: &str) -> ChannelView {
    let mut v = ChannelView {
        name: name.to_string(),
        kind: kind.to_string(),
        inbound: String::new(),
        webhook_url: None,
        outbound_url: None,
        allow_groups: None,
        support_channel_id: None,
        api_url: None,
        credentials_set: false,
    };
    match kind {
        "webchat" => {
            v.inbound = "websocket".into();
            v.credentials_set = true;
        }
        "webhook" => {
            if let Some(c) = config.channels.get(name) {
                v.inbound = "webhook".into();
                v.outbound_url = c.outbound_url.clone();
                v.credentials_set = !c.secret.is_empty();
            }
        }
        "telegram" => {
            if let Some(c) = config.telegram.get(name) {
                v.inbound = match c.effective_mode() {
                    TelegramMode::Polling => "polling".into(),
                    TelegramMode::Webhook => "webhook".into(),
                };
                v.webhook_url = c.webhook_url.clone();
                v.allow_groups = Some(c.allow_groups);
                v.api_url = c.api_url.clone();
                v.credentials_set = !c.token.expose().is_empty();
            }
        }
        "discord" => {
            if let Some(c) = config.discord.get(name) {
                v.inbound = "gateway".into();
                v.support_channel_id = c.support_channel_id.map(|id| id.to_string());
                v.api_url = c.api_url.clone();
                v.credentials_set = !c.token.expose().is_empty();
            }
        }
        _ => {}
    }
    v
}

/// Lists the configured channels (admin).
#[utoipa::path(get, path = "/api/v1/channels", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, body = ChannelList),
        (status = 401, body = super::error::ErrorBody),
    ))]
pub async fn list_channels(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ChannelList>, ApiError> {
    require_admin(&state, &headers)?;
    let channels = state
        .config
        .channel_kinds()
        .into_iter()
        .map(|(name, kind)| view(&state.config, &name, kind))
        .collect();
    Ok(Json(ChannelList { channels }))
}

/// One configured channel (admin).
#[utoipa::path(get, path = "/api/v1/channels/{name}", tag = "admin",
    params(("name" = String, Path, description = "Channel name")),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = ChannelView),
        (status = 401, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody),
    ))]
pub async fn get_channel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<ChannelView>, ApiError> {
    require_admin(&state, &headers)?;
    let kind = state
        .config
        .channel_kinds()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| k)
        .ok_or_else(|| {
            ApiError::not_found("unknown_channel", format!("no channel named '{name}'"))
        })?;
    Ok(Json(view(&state.config, &name, kind)))
}

/// Receives an update for a Telegram bot in webhook mode (called by Telegram).
#[utoipa::path(post, path = "/api/v1/telegram/{name}/webhook", tag = "telegram",
    params(
        ("name" = String, Path, description = "Configured Telegram channel"),
        ("X-Telegram-Bot-Api-Secret-Token" = String, Header, description = "The channel's secret_token"),
    ),
    request_body(content = Object, description = "A Telegram Update"),
    responses(
        (status = 200, description = "Handled, or malformed and skipped"),
        (status = 401, description = "Missing or wrong secret token", body = super::error::ErrorBody),
        (status = 404, description = "No Telegram channel in webhook mode by that name", body = super::error::ErrorBody),
        (status = 503, description = "Not stored; Telegram will send it again", body = super::error::ErrorBody),
    ))]
pub async fn telegram_webhook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::not_found(
            "unknown_channel",
            format!("no Telegram channel '{name}' receiving by webhook"),
        )
    };
    let bot = state.telegram.get(&name).ok_or_else(not_found)?;
    let body = body.map_err(|r| body_error(r, state.config.http.max_body_bytes))?;
    let secret = headers
        .get(TELEGRAM_SECRET_HEADER)
        .and_then(|v| v.to_str().ok());
    let gateway: &dyn Gateway = state.router.as_ref();
    match bot.accept_webhook(gateway, secret, &body).await {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(WebhookError::NotWebhook) => Err(not_found()),
        Err(e @ WebhookError::BadSecret) => {
            tracing::warn!(channel = %name, "Telegram webhook request with a wrong secret token refused");
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_secret_token",
                e.to_string(),
            ))
        }
        Err(e @ WebhookError::Unavailable(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            e.to_string(),
        )),
    }
}
