//! Agents' sign-in: login sessions in an HttpOnly, SameSite=Strict cookie for the console (with a
//! CSRF token required on every request that changes something), or the same session token as a
//! bearer token for scripts and integrations. The gateway's admin token keeps working as an admin.

use std::num::NonZeroU32;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cookie::{Cookie, SameSite};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::error::{ApiError, JsonBody};
use super::AppState;
use crate::agents::Agent;
use crate::desk::Caller;

pub const SESSION_COOKIE: &str = "frontdesk_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Slows down password guessing: so many logins per e-mail address per minute.
pub struct LoginLimiter(DefaultKeyedRateLimiter<String>);

impl LoginLimiter {
    pub fn new(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Self(RateLimiter::keyed(Quota::per_minute(n)))
    }
}

/// The CSRF token of a session: derived from the session token, which only its owner can read
/// (the cookie is HttpOnly), so another site cannot forge it.
pub fn csrf_token(session_token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("frontdesk-csrf:{session_token}").as_bytes(),
    ))
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| Cookie::parse(c.trim().to_string()).ok())
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Whether `given` is the configured admin token (compared in constant time).
pub(super) fn is_admin_token(state: &AppState, given: &str) -> bool {
    let Some(expected) = state.config.admin.token.as_deref() else {
        return false;
    };
    frontdesk_channels::signature::verify_parts(
        b"admin",
        &[given.as_bytes()],
        &frontdesk_channels::signature::hmac_parts(b"admin", &[expected.as_bytes()]),
    )
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

/// The agent an agent's session token belongs to now (through the session cache); 401
/// `unauthenticated` with `expired` when the session is unknown or over.
pub(super) async fn session_agent(
    state: &AppState,
    token: &str,
    expired: &str,
) -> Result<Agent, ApiError> {
    state
        .sessions
        .agent(&state.store, token)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| unauthenticated(expired))
}

/// Who is calling: a bearer token (an agent's session or the admin token) or the session cookie.
/// Cookie-authenticated requests that change something must carry the CSRF header.
pub async fn authenticate(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(Caller, Option<String>), ApiError> {
    if let Some(token) = bearer(headers).or(query_token) {
        if is_admin_token(state, token) {
            return Ok((Caller { agent: None }, None));
        }
        let agent = session_agent(
            state,
            token,
            "the token is unknown or expired: log in again",
        )
        .await?;
        return Ok((Caller { agent: Some(agent) }, Some(token.to_string())));
    }
    let token = cookie_token(headers)
        .ok_or_else(|| unauthenticated("log in first (no session cookie or bearer token)"))?;
    let agent = session_agent(state, &token, "the session expired: log in again").await?;
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let given = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if given != Some(csrf_token(&token).as_str()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "missing or wrong X-CSRF-Token header (take it from the login answer or /api/v1/auth/me)",
            ));
        }
    }
    Ok((Caller { agent: Some(agent) }, Some(token)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginAnswer {
    pub agent: Agent,
    /// Also usable as `Authorization: Bearer <token>`.
    pub token: String,
    pub csrf_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// None for the admin token.
    pub agent: Option<Agent>,
    pub csrf_token: Option<String>,
}

fn session_cookie(state: &AppState, value: String, max_age_secs: i64) -> String {
    Cookie::build((SESSION_COOKIE, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(state.config.console.secure_cookie)
        .max_age(cookie::time::Duration::seconds(max_age_secs))
        .build()
        .to_string()
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "agents", request_body = LoginRequest,
    responses(
        (status = 200, body = LoginAnswer, description = "logged in; also sets the session cookie"),
        (status = 401, body = super::error::ErrorBody, description = "wrong e-mail or password"),
        (status = 429, body = super::error::ErrorBody, description = "too many attempts"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    let email = req.email.trim().to_lowercase();
    if state.logins.0.check_key(&email).is_err() {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_logins",
            "too many login attempts for this e-mail address: wait a minute",
        ));
    }
    let agent = state
        .store
        .check_login(&email, &req.password)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(agent) = agent else {
        tracing::warn!(email = %email, "failed login");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong e-mail or password",
        ));
    };
    let hours = state.config.console.session_hours;
    let token = state
        .store
        .create_session(&agent.id, hours * 3_600_000)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    // Logging in means being at work: the queue may assign conversations now.
    let agent = state
        .desk
        .set_status(&agent, "online")
        .await
        .map_err(super::conversations::desk_error)?;
    tracing::info!(agent = %agent.name, "agent logged in");
    let cookie = session_cookie(&state, token.clone(), hours * 3600);
    let body = LoginAnswer {
        agent,
        csrf_token: csrf_token(&token),
        token,
    };
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "agents",
    responses((status = 204, description = "logged out; the agent is offline")))]
pub async fn logout(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (caller, token) = authenticate(&state, &method, &headers, None).await?;
    if let Some(token) = token {
        state
            .store
            .delete_session(&token)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        // After the delete, so a check from now on reads the store and finds it gone. (One
        // that read it just before the delete may still trust it for `sessions::TRUST_MS`.)
        state.sessions.forget(&token);
    }
    if let Some(agent) = &caller.agent {
        state
            .desk
            .set_status(agent, "offline")
            .await
            .map_err(super::conversations::desk_error)?;
    }
    let cookie = session_cookie(&state, String::new(), 0);
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

#[utoipa::path(get, path = "/api/v1/auth/me", tag = "agents",
    responses(
        (status = 200, body = Me),
        (status = 401, body = super::error::ErrorBody),
    ))]
pub async fn me(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Json<Me>, ApiError> {
    let (caller, token) = authenticate(&state, &method, &headers, None).await?;
    // Read again: the session's copy may be a moment old, and status and load change often.
    let agent = match caller.agent {
        Some(a) => Some(
            state
                .store
                .agent(&a.id)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .ok_or_else(|| unauthenticated("the agent no longer exists"))?,
        ),
        None => None,
    };
    Ok(Json(Me {
        agent,
        csrf_token: token.as_deref().map(csrf_token),
    }))
}
