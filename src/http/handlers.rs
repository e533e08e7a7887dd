//! Request handlers: each parses, calls one thing, and maps the result to a response.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use frontdesk_channels::webhook::InboundError;
use frontdesk_channels::{now_ms, Gateway, GatewayError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::error::{body_error, ApiError, JsonBody};
use super::{ApiDoc, AppState};
use crate::metrics as m;
use crate::store::Delivery;

const DEMO_PAGE: &str = include_str!("../../web-widget/demo.html");
const WIDGET_JS: &str = include_str!("../../web-widget/widget.js");
/// Largest WebSocket frame a widget may send (a message's text limit is separate and smaller).
const MAX_FRAME_BYTES: usize = 64 * 1024;

pub async fn demo_page() -> Html<&'static str> {
    Html(DEMO_PAGE)
}

pub async fn widget_script() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        WIDGET_JS,
    )
        .into_response()
}

/// Optional details a visitor gives when opening the widget.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub name: Option<String>,
    pub email: Option<String>,
    /// Browser language, e.g. `ru-RU`.
    pub locale: Option<String>,
}

fn gateway_error(e: GatewayError) -> ApiError {
    match e {
        GatewayError::Invalid(msg) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_message", msg)
        }
        GatewayError::UnknownConversation(id) => {
            ApiError::not_found("unknown_conversation", format!("no conversation {id}"))
        }
        GatewayError::Storage(msg) => ApiError::internal(format!("storage failed: {msg}")),
    }
}

/// Starts an anonymous web chat session.
#[utoipa::path(post, path = "/api/v1/widget/sessions", tag = "webchat",
    request_body(content = SessionRequest, description = "Every field optional; an empty body is fine"),
    responses(
        (status = 201, description = "Session created", body = frontdesk_channels::webchat::WidgetSession),
        (status = 400, description = "Malformed body", body = super::error::ErrorBody),
        (status = 404, description = "Web chat disabled", body = super::error::ErrorBody),
    ))]
pub async fn create_widget_session(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<SessionRequest>,
) -> Result<Response, ApiError> {
    let chat = state.webchat.as_ref().ok_or_else(|| {
        ApiError::not_found("webchat_disabled", "the web chat channel is disabled")
    })?;
    if req.name.as_ref().is_some_and(|n| n.len() > 200) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "name is longer than 200 bytes",
        ));
    }
    if let Some(email) = &req.email {
        if email.len() > 320 || !email.contains('@') {
            return Err(ApiError::bad_request(
                "invalid_field",
                "email is not an e-mail address",
            ));
        }
    }
    // "ru-RU" -> "ru": the bot greets in the browser's language until the customer writes.
    let language = req
        .locale
        .as_deref()
        .and_then(|l| l.split(['-', '_']).next())
        .map(str::to_ascii_lowercase)
        .filter(|l| crate::i18n::SUPPORTED.contains(&l.as_str()));
    let gateway: &dyn Gateway = state.router.as_ref();
    let session = chat
        .create_session(
            gateway,
            req.name.as_deref(),
            req.email.as_deref(),
            language.as_deref(),
        )
        .await
        .map_err(gateway_error)?;
    Ok((StatusCode::CREATED, Json(session)).into_response())
}

/// The web chat WebSocket; the protocol is in `docs/webchat-protocol.md`.
#[utoipa::path(get, path = "/ws/chat", tag = "webchat",
    responses((status = 101, description = "Switching to the web chat protocol")))]
pub async fn chat_socket(
    State(state): State<AppState>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let chat = state.webchat.clone().ok_or_else(|| {
        ApiError::not_found("webchat_disabled", "the web chat channel is disabled")
    })?;
    let gateway: Arc<dyn Gateway> = state.router.clone();
    Ok(ws
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(super::SOCKET_READ_BUFFER)
        .on_upgrade(move |socket| async move {
            metrics::gauge!(m::OPEN_SOCKETS).increment(1.0);
            chat.serve_socket(socket, gateway).await;
            metrics::gauge!(m::OPEN_SOCKETS).decrement(1.0);
        }))
}

/// Where a webhook message was stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookAccepted {
    pub conversation_id: String,
    pub contact_id: String,
    pub seq: i64,
    /// True when `message_id` had been received before: nothing was stored, `seq` is the original.
    pub duplicate: bool,
}

fn inbound_error(e: InboundError) -> ApiError {
    use frontdesk_channels::signature::SignatureError;
    match e {
        InboundError::Signature(SignatureError::Stale(..)) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "stale_timestamp", e.to_string())
        }
        InboundError::Signature(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string())
        }
        InboundError::NotUtf8(_) => ApiError::bad_request("invalid_utf8", e.to_string()),
        InboundError::Json(_) => ApiError::bad_request("malformed_json", e.to_string()),
        InboundError::Invalid(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_message",
            e.to_string(),
        ),
        InboundError::TooLarge(..) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
            e.to_string(),
        ),
    }
}

/// Receives a customer message from a webhook channel.
#[utoipa::path(post, path = "/api/v1/channels/{name}/messages", tag = "webhook",
    params(
        ("name" = String, Path, description = "Configured webhook channel"),
        ("X-Frontdesk-Timestamp" = String, Header, description = "Unix time in seconds"),
        ("X-Frontdesk-Signature" = String, Header, description = "sha256=<hex of HMAC-SHA256(secret, timestamp + body)>"),
    ),
    request_body = frontdesk_channels::webhook::WebhookInbound,
    responses(
        (status = 202, description = "Stored (or recognized as a retry: `duplicate` is true)", body = WebhookAccepted),
        (status = 400, description = "Malformed JSON or invalid UTF-8", body = super::error::ErrorBody),
        (status = 401, description = "Missing, wrong or stale signature", body = super::error::ErrorBody),
        (status = 404, description = "No such webhook channel", body = super::error::ErrorBody),
        (status = 413, description = "Body or text too large", body = super::error::ErrorBody),
        (status = 422, description = "A required field is empty", body = super::error::ErrorBody),
    ))]
pub async fn webhook_message(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let set = state.channels.current();
    let channel = set.webhooks.get(&name).ok_or_else(|| {
        let mut known: Vec<&str> = set.webhooks.keys().map(String::as_str).collect();
        known.sort_unstable();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        ApiError::not_found(
            "unknown_channel",
            format!("no webhook channel named '{name}' (configured: {known})"),
        )
    })?;
    let body = body.map_err(|r| body_error(r, state.config.http.max_body_bytes))?;
    let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let inbound = channel
        .accept(
            header(frontdesk_channels::signature::TIMESTAMP_HEADER),
            header(frontdesk_channels::signature::SIGNATURE_HEADER),
            &body,
            now_ms() / 1000,
        )
        .map_err(inbound_error)?;
    let ack = state.router.ingest(inbound).await.map_err(gateway_error)?;
    let accepted = WebhookAccepted {
        conversation_id: ack.conversation_id,
        contact_id: ack.contact_id,
        seq: ack.seq,
        duplicate: ack.duplicate,
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// Checks the admin bearer token.
pub(super) fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.config.admin.token.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is closed: set admin.token (FRONTDESK_ADMIN__TOKEN) to open it",
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing 'Authorization: Bearer <admin token>'",
            )
        })?;
    if super::auth::is_admin_token(state, given) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong admin token",
        ))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `dead`; all when absent.
    pub status: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}

/// Lists outbox deliveries (admin): messages to channels that push to another system (webhook,
/// Telegram, Discord), and the widget's system notices. The widget's bot and agent replies have
/// no outbox row: the widget reads whatever it missed from the transcript.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "admin", params(DeliveryQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = DeliveryList),
        (status = 400, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody),
    ))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    require_admin(&state, &headers)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if let Some(s) = q.status.as_deref() {
        if !matches!(s, "pending" | "delivered" | "dead") {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("status must be pending, delivered or dead, not '{s}'"),
            ));
        }
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let deliveries = state
        .store
        .list_deliveries(q.status.as_deref(), limit)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(DeliveryList { deliveries }))
}

/// Puts a dead delivery back in the queue (admin).
#[utoipa::path(post, path = "/api/v1/deliveries/{id}/retry", tag = "admin",
    params(("id" = String, Path, description = "Delivery id")),
    security(("admin_token" = [])),
    responses(
        (status = 202, description = "Queued again", body = Delivery),
        (status = 404, body = super::error::ErrorBody),
        (status = 409, description = "Not dead", body = super::error::ErrorBody),
    ))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let internal = |e: crate::store::StoreError| ApiError::internal(e.to_string());
    let Some(current) = state.store.delivery_by_id(&id).await.map_err(internal)? else {
        return Err(ApiError::not_found(
            "unknown_delivery",
            format!("no delivery {id}"),
        ));
    };
    if !state.store.retry_delivery(&id).await.map_err(internal)? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_dead",
            format!(
                "delivery {id} is {}; only dead deliveries can be retried",
                current.status
            ),
        ));
    }
    state.router.wake_outbox();
    let updated = state.store.delivery_by_id(&id).await.map_err(internal)?;
    Ok((StatusCode::ACCEPTED, Json(updated)).into_response())
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "Ready"), (status = 503, body = super::error::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e.to_string()))?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found("not_found", format!("no route for {method} {}", uri.path()))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
