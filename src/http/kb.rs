//! Knowledge base endpoints: article CRUD (admin) and search with the bot's decision (public:
//! it serves help-center content, bounded in size).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, JsonBody};
use super::handlers::require_admin;
use super::AppState;
use crate::knowledge::{Article, KnowledgeBase, KnowledgeError, PutOutcome, SearchResult};

const MAX_QUERY_BYTES: usize = 2000;

fn kb(state: &AppState) -> Result<&Arc<KnowledgeBase>, ApiError> {
    state.knowledge.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "knowledge_disabled",
            "the knowledge base is disabled (knowledge.enabled = false)",
        )
    })
}

fn kb_error(e: KnowledgeError) -> ApiError {
    match e {
        KnowledgeError::Invalid(m) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_article", m)
        }
        other => ApiError::internal(other.to_string()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchQuery {
    /// The customer's message.
    pub q: String,
    /// Articles to return (1-10, default 3).
    pub k: Option<usize>,
}

/// Finds articles for a message and says what the bot would do with it.
#[utoipa::path(get, path = "/api/v1/kb/search", tag = "knowledge", params(SearchQuery),
    responses(
        (status = 200, body = SearchResult),
        (status = 400, body = super::error::ErrorBody),
    ))]
pub async fn search(
    State(state): State<AppState>,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchResult>, ApiError> {
    let kb = kb(&state)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if q.q.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "q must not be empty",
        ));
    }
    if q.q.len() > MAX_QUERY_BYTES {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("q is {} bytes, more than {MAX_QUERY_BYTES}", q.q.len()),
        ));
    }
    let k = q.k.unwrap_or(3).clamp(1, 10);
    kb.search(&q.q, k).await.map(Json).map_err(kb_error)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArticleView {
    #[serde(flatten)]
    pub article: Article,
    /// File it was imported from, if any.
    pub source: Option<String>,
    /// Vectors it is indexed under.
    pub vectors: i64,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArticleList {
    pub articles: Vec<ArticleView>,
}

fn view(s: crate::knowledge::StoredArticle) -> ArticleView {
    ArticleView {
        article: s.article,
        source: s.source,
        vectors: s.vectors,
        updated_at: s.updated_at,
    }
}

/// Lists the articles (admin).
#[utoipa::path(get, path = "/api/v1/kb/articles", tag = "knowledge", security(("admin_token" = [])),
    responses((status = 200, body = ArticleList), (status = 401, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ArticleList>, ApiError> {
    require_admin(&state, &headers)?;
    let articles = kb(&state)?.list().await.map_err(kb_error)?;
    Ok(Json(ArticleList {
        articles: articles.into_iter().map(view).collect(),
    }))
}

/// One article (admin).
#[utoipa::path(get, path = "/api/v1/kb/articles/{id}", tag = "knowledge", security(("admin_token" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ArticleView), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ArticleView>, ApiError> {
    require_admin(&state, &headers)?;
    kb(&state)?
        .get(&id)
        .await
        .map_err(kb_error)?
        .map(|a| Json(view(a)))
        .ok_or_else(|| ApiError::not_found("unknown_article", format!("no article {id}")))
}

/// Creates an article and indexes it (admin). 409 if the id exists.
#[utoipa::path(post, path = "/api/v1/kb/articles", tag = "knowledge", security(("admin_token" = [])),
    request_body = Article,
    responses((status = 201, body = ArticleView), (status = 409, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(article): JsonBody<Article>,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let kb = kb(&state)?;
    if kb.get(&article.id).await.map_err(kb_error)?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "article_exists",
            format!("article {} exists; use PUT to change it", article.id),
        ));
    }
    kb.put(&article, None).await.map_err(kb_error)?;
    let stored = kb.get(&article.id).await.map_err(kb_error)?;
    Ok((StatusCode::CREATED, Json(stored.map(view))).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PutResult {
    pub outcome: PutOutcome,
    pub article: ArticleView,
}

/// Creates or replaces an article (admin); unchanged content is not re-embedded.
#[utoipa::path(put, path = "/api/v1/kb/articles/{id}", tag = "knowledge", security(("admin_token" = [])),
    params(("id" = String, Path)), request_body = Article,
    responses((status = 200, body = PutResult), (status = 422, body = super::error::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(article): JsonBody<Article>,
) -> Result<Json<PutResult>, ApiError> {
    require_admin(&state, &headers)?;
    if article.id != id {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_article",
            format!(
                "the body's id '{}' differs from the path's '{id}'",
                article.id
            ),
        ));
    }
    let kb = kb(&state)?;
    let outcome = kb.put(&article, None).await.map_err(kb_error)?;
    let stored = kb
        .get(&id)
        .await
        .map_err(kb_error)?
        .ok_or_else(|| ApiError::internal("article vanished after writing it"))?;
    Ok(Json(PutResult {
        outcome,
        article: view(stored),
    }))
}

/// Deletes an article and its vectors (admin).
#[utoipa::path(delete, path = "/api/v1/kb/articles/{id}", tag = "knowledge", security(("admin_token" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers)?;
    if kb(&state)?.delete(&id).await.map_err(kb_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "unknown_article",
            format!("no article {id}"),
        ))
    }
}
