//! Conversations for agents, admins and integrations: lists (waiting, mine, open), one
//! conversation with its transcript (annotations included: intent, emotion, knowledge hits, the
//! decision) and its events (every status change with who and why), and what an agent does with
//! it. Thin handlers over [`crate::desk::Desk`]; who may do what is decided there.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::authenticate;
use super::error::{ApiError, JsonBody};
use super::AppState;
use crate::agents::Agent;
use crate::desk::{Caller, Canned, DeskError, ListFilter, Suggestion, Summary, View};
use crate::store::{ConversationEvent, TranscriptMessage};

pub fn desk_error(e: DeskError) -> ApiError {
    match e {
        DeskError::NotFound(id) => {
            ApiError::not_found("unknown_conversation", format!("no conversation {id}"))
        }
        DeskError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
        DeskError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        DeskError::Invalid(m) => ApiError::bad_request("invalid_request", m),
        DeskError::Store(s) => ApiError::internal(s.to_string()),
    }
}

async fn caller(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    Ok(authenticate(state, method, headers, None).await?.0)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationView {
    pub conversation: Summary,
    pub messages: Vec<TranscriptMessage>,
    pub events: Vec<ConversationEvent>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationList {
    pub conversations: Vec<Summary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationAnswer {
    pub conversation: Summary,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// waiting | mine | open (default) | all
    pub view: Option<View>,
    pub status: Option<String>,
    pub channel: Option<String>,
    /// An agent id (`me` = the caller).
    pub assignee: Option<String>,
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations", params(ListQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = ConversationList),
        (status = 401, body = super::error::ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<ConversationList>, ApiError> {
    let caller = caller(&state, &method, &headers).await?;
    if let Some(s) = &q.status {
        s.parse::<crate::ownership::Status>()
            .map_err(|e| ApiError::bad_request("invalid_status", e))?;
    }
    let assignee = match q.assignee.as_deref() {
        Some("me") => caller.agent.as_ref().map(|a| a.id.clone()),
        other => other.map(String::from),
    };
    let filter = ListFilter {
        view: q.view.unwrap_or_default(),
        status: q.status,
        channel: q.channel,
        assignee,
        limit: q.limit.unwrap_or(100),
    };
    let conversations = state
        .desk
        .list(&caller, &filter)
        .await
        .map_err(desk_error)?;
    Ok(Json(ConversationList { conversations }))
}

#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, description = "conversation id")),
    security(("admin_token" = [])),
    responses(
        (status = 200, body = ConversationView),
        (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody, description = "another team's conversation"),
        (status = 404, body = super::error::ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ConversationView>, ApiError> {
    let caller = caller(&state, &method, &headers).await?;
    let (conversation, messages, events) =
        state.desk.open(&caller, &id).await.map_err(desk_error)?;
    Ok(Json(ConversationView {
        conversation,
        messages,
        events,
    }))
}

macro_rules! action {
    ($name:ident, $path:literal, $doc:literal, $call:ident) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "conversations",
            params(("id" = String, Path, description = "conversation id")),
            security(("admin_token" = [])),
            responses(
                (status = 200, body = ConversationAnswer),
                (status = 401, body = super::error::ErrorBody),
                (status = 403, body = super::error::ErrorBody),
                (status = 404, body = super::error::ErrorBody),
                (status = 409, body = super::error::ErrorBody, description = "not allowed in its current status, or someone else was first"),
            ))]
        pub async fn $name(
            State(state): State<AppState>,
            method: Method,
            headers: HeaderMap,
            Path(id): Path<String>,
        ) -> Result<Json<ConversationAnswer>, ApiError> {
            let caller = caller(&state, &method, &headers).await?;
            let conversation = state.desk.$call(&caller, &id).await.map_err(desk_error)?;
            Ok(Json(ConversationAnswer { conversation }))
        }
    };
}

action!(
    take,
    "/api/v1/conversations/{id}/take",
    "The caller (an agent) takes the conversation from the queue or from the bot.",
    take
);
action!(
    resolve,
    "/api/v1/conversations/{id}/resolve",
    "Resolves the conversation; the customer is asked for a 1-5 rating.",
    resolve
);
action!(
    hand_back,
    "/api/v1/conversations/{id}/handback",
    "Hands the conversation back to the bot.",
    hand_back
);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub agent_id: Option<String>,
    pub team: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/conversations/{id}/transfer", tag = "conversations",
    params(("id" = String, Path, description = "conversation id")),
    request_body = TransferRequest,
    security(("admin_token" = [])),
    responses(
        (status = 200, body = ConversationAnswer),
        (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody),
    ))]
pub async fn transfer(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<TransferRequest>,
) -> Result<Json<ConversationAnswer>, ApiError> {
    let caller = caller(&state, &method, &headers).await?;
    let conversation = state
        .desk
        .transfer(&caller, &id, req.agent_id.as_deref(), req.team.as_deref())
        .await
        .map_err(desk_error)?;
    Ok(Json(ConversationAnswer { conversation }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextRequest {
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Posted {
    pub seq: i64,
}

/// Longest agent reply or note, in characters (messengers cap messages at a few thousand).
const MAX_TEXT_CHARS: usize = 4000;

pub(crate) fn check_text(text: &str) -> Result<(), ApiError> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text_too_long",
            format!("the text has more than {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "conversations",
    params(("id" = String, Path, description = "conversation id")),
    request_body = TextRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, body = Posted, description = "queued for delivery through the customer's channel"),
        (status = 400, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody, description = "not assigned to the caller"),
        (status = 413, body = super::error::ErrorBody),
    ))]
pub async fn reply(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<TextRequest>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &method, &headers).await?;
    check_text(&req.text)?;
    let seq = state
        .desk
        .reply(&caller, &id, &req.text)
        .await
        .map_err(desk_error)?;
    Ok((StatusCode::CREATED, Json(Posted { seq })).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NoteAnswer {
    pub event: ConversationEvent,
}

#[utoipa::path(post, path = "/api/v1/conversations/{id}/notes", tag = "conversations",
    params(("id" = String, Path, description = "conversation id")),
    request_body = TextRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, body = NoteAnswer, description = "an internal note, never sent to the customer"),
        (status = 400, body = super::error::ErrorBody),
    ))]
pub async fn note(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<TextRequest>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &method, &headers).await?;
    check_text(&req.text)?;
    let event = state
        .desk
        .note(&caller, &id, &req.text)
        .await
        .map_err(desk_error)?;
    Ok((StatusCode::CREATED, Json(NoteAnswer { event })).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TypingRequest {
    pub typing: bool,
}

#[utoipa::path(post, path = "/api/v1/conversations/{id}/typing", tag = "conversations",
    params(("id" = String, Path, description = "conversation id")),
    request_body = TypingRequest,
    responses((status = 204, description = "the customer sees the agent typing")))]
pub async fn typing(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<TypingRequest>,
) -> Result<StatusCode, ApiError> {
    let caller = caller(&state, &method, &headers).await?;
    state
        .desk
        .typing(&caller, &id, req.typing)
        .await
        .map_err(desk_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Suggestions {
    pub suggestions: Vec<Suggestion>,
}

#[utoipa::path(get, path = "/api/v1/conversations/{id}/suggestions", tag = "conversations",
    params(("id" = String, Path, description = "conversation id")),
    responses((status = 200, body = Suggestions, description = "knowledge-base answers for the latest customer message, best first")))]
pub async fn suggestions(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Suggestions>, ApiError> {
    let caller = caller(&state, &method, &headers).await?;
    let suggestions = state
        .desk
        .suggestions(&caller, &id)
        .await
        .map_err(desk_error)?;
    Ok(Json(Suggestions { suggestions }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<Agent>,
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    responses((status = 200, body = AgentList)))]
pub async fn agents(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<AgentList>, ApiError> {
    caller(&state, &method, &headers).await?;
    let agents = state
        .store
        .agents()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(AgentList { agents }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// online | away
    pub status: String,
}

#[utoipa::path(put, path = "/api/v1/agents/me/status", tag = "agents", request_body = StatusRequest,
    responses((status = 200, body = Agent), (status = 400, body = super::error::ErrorBody)))]
pub async fn set_status(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    JsonBody(req): JsonBody<StatusRequest>,
) -> Result<Json<Agent>, ApiError> {
    let caller = caller(&state, &method, &headers).await?;
    let agent = caller.agent.ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the admin token is not an agent",
        )
    })?;
    if req.status != "online" && req.status != "away" {
        return Err(ApiError::bad_request(
            "invalid_status",
            format!("unknown status '{}': use online or away", req.status),
        ));
    }
    let agent = state
        .desk
        .set_status(&agent, &req.status)
        .await
        .map_err(desk_error)?;
    Ok(Json(agent))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamList {
    pub teams: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/teams", tag = "agents",
    responses((status = 200, body = TeamList)))]
pub async fn teams(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<TeamList>, ApiError> {
    caller(&state, &method, &headers).await?;
    Ok(Json(TeamList {
        teams: state.desk.teams.clone(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CannedList {
    pub canned: Vec<Canned>,
}

#[utoipa::path(get, path = "/api/v1/canned", tag = "agents",
    responses((status = 200, body = CannedList)))]
pub async fn canned(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<CannedList>, ApiError> {
    caller(&state, &method, &headers).await?;
    Ok(Json(CannedList {
        canned: state.desk.canned.clone(),
    }))
}
