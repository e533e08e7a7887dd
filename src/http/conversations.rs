//! Conversations for agents, admins and integrations: one conversation with its transcript
//! (annotations included: intent, emotion, knowledge hits, the decision) and its events (every
//! status change with who and why).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::handlers::require_admin;
use super::AppState;
use crate::store::{Conversation, ConversationEvent, TranscriptMessage};

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationView {
    pub conversation: Conversation,
    pub messages: Vec<TranscriptMessage>,
    pub events: Vec<ConversationEvent>,
}

#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, description = "conversation id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = ConversationView),
        (status = 401, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ConversationView>, ApiError> {
    require_admin(&state, &headers)?;
    let store = &state.store;
    let conversation = store
        .conversation(&id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| {
            ApiError::not_found("unknown_conversation", format!("no conversation {id}"))
        })?;
    let messages = store
        .transcript(&id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let events = store
        .events(&id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(ConversationView {
        conversation,
        messages,
        events,
    }))
}
