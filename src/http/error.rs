//! The API's one error shape, `{"error":{"code","message"}}`, and a JSON body extractor whose
//! refusals say exactly what was wrong (size, encoding, syntax, field) in that shape.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::metrics as m;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `bad_signature`.
    pub code: String,
    /// What was wrong, for a person.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Logs the refusal and counts it (`frontdesk_rejected_total`).
    pub fn record(&self) {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), code = self.code, message = %self.message, "request failed");
        } else {
            tracing::warn!(status = self.status.as_u16(), code = self.code, message = %self.message, "request refused");
        }
        metrics::counter!(m::REJECTED, "code" => self.code).increment(1);
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.record();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The refusal for a body that could not be read (too large, or the connection broke).
pub fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "body_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    } else {
        ApiError::new(status, "unreadable_body", rejection.body_text())
    }
}

/// Checks that a body is UTF-8 JSON of type `T`, naming the problem otherwise.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad_request(
            "invalid_utf8",
            format!(
                "body is not valid UTF-8 (first invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    serde_json::from_str(text).map_err(|e| {
        let code = if e.is_data() {
            "invalid_field"
        } else {
            "malformed_json"
        };
        ApiError::bad_request(code, format!("body is not the expected JSON: {e}"))
    })
}

/// Largest body the API accepts; read from the request extensions (set by the app).
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body, refused with [`ApiError`] (never axum's plain-text rejections). An empty body is
/// read as `{}`.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(0);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| body_error(r, limit))?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse_json(bytes).map(JsonBody)
    }
}
