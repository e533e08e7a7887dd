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

use super::error::{body_error, ApiError, JsonBody};
use super::handlers::require_admin;
use super::AppState;
use crate::config::TelegramMode;
use crate::registry::{ChannelChangeError, ChannelSpec, Source};

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
    /// `config` (the configuration file) or `api` (added through this API; changeable here).
    pub source: String,
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

fn view(name: &str, kind: &str, spec: Option<&ChannelSpec>, source: Option<Source>) -> ChannelView {
    let mut v = ChannelView {
        name: name.to_string(),
        kind: kind.to_string(),
        inbound: String::new(),
        source: source
            .map_or("config", |s| match s {
                Source::Config => "config",
                Source::Api => "api",
            })
            .to_string(),
        webhook_url: None,
        outbound_url: None,
        allow_groups: None,
        support_channel_id: None,
        api_url: None,
        credentials_set: false,
    };
    match spec {
        None => {
            v.inbound = "websocket".into();
            v.credentials_set = true;
        }
        Some(ChannelSpec::Webhook(c)) => {
            v.inbound = "webhook".into();
            v.outbound_url = c.outbound_url.clone();
            v.credentials_set = !c.secret.is_empty();
        }
        Some(ChannelSpec::Telegram(c)) => {
            v.inbound = match c.effective_mode() {
                TelegramMode::Polling => "polling".into(),
                TelegramMode::Webhook => "webhook".into(),
            };
            v.webhook_url = c.webhook_url.clone();
            v.allow_groups = Some(c.allow_groups);
            v.api_url = c.api_url.clone();
            v.credentials_set = !c.token.expose().is_empty();
        }
        Some(ChannelSpec::Discord(c)) => {
            v.inbound = "gateway".into();
            v.support_channel_id = c.support_channel_id.map(|id| id.to_string());
            v.api_url = c.api_url.clone();
            v.credentials_set = !c.token.expose().is_empty();
        }
    }
    v
}

async fn all_views(state: &AppState) -> Vec<ChannelView> {
    let mut out = Vec::new();
    if state.config.webchat.enabled {
        out.push(view(&state.config.webchat_name(), "webchat", None, None));
    }
    for (name, spec, source) in state.channels.specs().await {
        out.push(view(&name, spec.kind(), Some(&spec), Some(source)));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Lists every channel (admin): configured ones and ones added through this API.
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
    Ok(Json(ChannelList {
        channels: all_views(&state).await,
    }))
}

/// One channel (admin).
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
    all_views(&state)
        .await
        .into_iter()
        .find(|v| v.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_channel", format!("no channel named '{name}'")))
}

fn change_error(e: ChannelChangeError) -> ApiError {
    let message = e.to_string();
    tracing::warn!(error = %message, "channel change refused");
    match e {
        ChannelChangeError::Invalid(_) => ApiError::bad_request("invalid_channel", message),
        ChannelChangeError::Exists(_) => {
            ApiError::new(StatusCode::CONFLICT, "channel_exists", message)
        }
        ChannelChangeError::NotFound(_) => ApiError::not_found("unknown_channel", message),
        ChannelChangeError::FromConfig(_) => {
            ApiError::new(StatusCode::CONFLICT, "configured_in_file", message)
        }
        ChannelChangeError::Internal(_) => ApiError::internal(message),
    }
}

/// The settings part of a request: `{"kind": "webhook" | "telegram" | "discord", ...}` with the
/// same keys as the channel's section in the configuration file.
fn parse_spec(body: serde_json::Value) -> Result<ChannelSpec, ApiError> {
    serde_json::from_value(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_channel",
            format!("{e} (expected {{\"kind\": \"webhook\"|\"telegram\"|\"discord\", ...the keys of its config section}})"),
        )
    })
}

/// Adds a channel while the gateway runs (admin): `{"name", "kind", ...settings}`. It is saved in
/// the database and runs at once (a Telegram or Discord bot starts receiving).
#[utoipa::path(post, path = "/api/v1/channels", tag = "admin",
    request_body(content = Object, description = "{\"name\": \"crm2\", \"kind\": \"webhook\", \"secret\": \"...\", \"outbound_url\": \"...\"}"),
    security(("admin_token" = [])),
    responses(
        (status = 201, body = ChannelView),
        (status = 400, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody),
    ))]
pub async fn create_channel(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let name = body
        .as_object_mut()
        .and_then(|o| o.remove("name"))
        .and_then(|n| n.as_str().map(String::from))
        .ok_or_else(|| ApiError::bad_request("invalid_channel", "the channel needs a \"name\""))?;
    let spec = parse_spec(body)?;
    state
        .channel_manager
        .put(&name, spec.clone(), true)
        .await
        .map_err(change_error)?;
    let v = view(&name, spec.kind(), Some(&spec), Some(Source::Api));
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// Replaces a channel added through this API (admin); configured ones are changed in the file.
#[utoipa::path(put, path = "/api/v1/channels/{name}", tag = "admin",
    params(("name" = String, Path, description = "Channel name")),
    request_body(content = Object, description = "{\"kind\": ..., ...settings}"),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = ChannelView),
        (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody),
    ))]
pub async fn put_channel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Json<ChannelView>, ApiError> {
    require_admin(&state, &headers)?;
    let spec = parse_spec(body)?;
    state
        .channel_manager
        .put(&name, spec.clone(), false)
        .await
        .map_err(change_error)?;
    Ok(Json(view(
        &name,
        spec.kind(),
        Some(&spec),
        Some(Source::Api),
    )))
}

/// Removes a channel added through this API (admin).
#[utoipa::path(delete, path = "/api/v1/channels/{name}", tag = "admin",
    params(("name" = String, Path, description = "Channel name")),
    security(("admin_token" = [])),
    responses(
        (status = 204, description = "removed; it stops receiving"),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody),
    ))]
pub async fn delete_channel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers)?;
    state
        .channel_manager
        .delete(&name)
        .await
        .map_err(change_error)?;
    Ok(StatusCode::NO_CONTENT)
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
    let bot = state
        .channels
        .current()
        .telegram
        .get(&name)
        .cloned()
        .ok_or_else(not_found)?;
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
