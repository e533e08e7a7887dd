//! `POST /api/v1/nlu/parse`: what the bot understands of a message (language, intent with its
//! ranking and out-of-scope flag, sentiment, emotion), in the shape of Rasa's parse endpoint.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, JsonBody};
use super::AppState;
use crate::nlu::Parse;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParseRequest {
    /// The message, 1 to `nlu.max_text_chars` characters (2,000 by default).
    pub text: String,
}

#[utoipa::path(post, path = "/api/v1/nlu/parse", tag = "understanding",
    request_body = ParseRequest,
    responses(
        (status = 200, body = Parse),
        (status = 400, description = "malformed JSON or empty text", body = super::error::ErrorBody),
        (status = 404, description = "understanding is disabled", body = super::error::ErrorBody),
        (status = 413, description = "text too long", body = super::error::ErrorBody),
    ))]
pub async fn parse(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<ParseRequest>,
) -> Result<Json<Parse>, ApiError> {
    let nlu = state.nlu.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "nlu_disabled",
            "understanding is disabled (nlu.enabled = false)",
        )
    })?;
    if req.text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "empty_text",
            "text must not be empty",
        ));
    }
    let max = state.config.nlu.max_text_chars;
    let chars = req.text.chars().count();
    if chars > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text_too_long",
            format!("text is {chars} characters, more than {max}"),
        ));
    }
    nlu.parse(&req.text)
        .await
        .map(Json)
        .map_err(|e| ApiError::internal(e.to_string()))
}
