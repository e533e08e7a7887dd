//! Vector storage behind one trait: Qdrant Edge in process (the default, on disk under
//! `<data_dir>/vectors`) or a Qdrant server over gRPC when `qdrant.url` is configured.
//!
//! The knowledge base stores several vectors per article (title, each example question, body
//! chunks), each with a payload naming its article; search returns the nearest points with their
//! payloads and the caller groups them. Both backends must behave the same: the same test suite
//! runs against each.

pub mod bench;
pub mod edge;
pub mod server;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use edge::EdgeStore;
pub use server::QdrantServerStore;

/// Payload fields that filters use; both backends keep a keyword index on each.
pub const INDEXED_FIELDS: &[&str] = &["article_id", "namespace"];

/// `[qdrant]` in the configuration: where the vectors live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VectorConfig {
    /// gRPC URL of a Qdrant server (e.g. `http://qdrant:6334`). Unset: Qdrant Edge in process,
    /// under `<data_dir>/vectors`.
    pub url: Option<String>,
    /// Collection on the server (unused by Qdrant Edge).
    pub collection: String,
    /// API key for the server, if it requires one.
    pub api_key: Option<String>,
}

impl Default for VectorConfig {
    fn default() -> Self {
        Self {
            url: None,
            collection: "frontdesk_kb".to_owned(),
            api_key: None,
        }
    }
}

/// Opens the configured backend: a Qdrant server when `config.url` is set, else Qdrant Edge in
/// `<data_dir>/vectors`.
pub async fn open(
    config: &VectorConfig,
    data_dir: &Path,
    dims: usize,
) -> Result<Arc<dyn VectorStore>, VectorError> {
    match config.url.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() => Ok(Arc::new(
            QdrantServerStore::connect(url, &config.collection, config.api_key.as_deref(), dims)
                .await?,
        )),
        _ => Ok(Arc::new(
            EdgeStore::open(data_dir.join("vectors"), dims).await?,
        )),
    }
}

/// Rejects a vector whose length is not the store's dimensions.
pub(crate) fn check_dimensions(expected: usize, vector: &[f32]) -> Result<(), VectorError> {
    if vector.len() == expected {
        Ok(())
    } else {
        Err(VectorError::Dimension {
            expected,
            got: vector.len(),
        })
    }
}

/// One stored vector with its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// A UUID (both Qdrant backends accept UUID point ids).
    pub id: uuid::Uuid,
    pub vector: Vec<f32>,
    pub payload: Map<String, Value>,
}

/// A search result.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPoint {
    pub id: uuid::Uuid,
    /// Cosine similarity (higher is closer).
    pub score: f32,
    pub payload: Map<String, Value>,
}

/// Keyword equality on a payload field (the fields used in filters are indexed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub key: String,
    pub value: String,
}

impl Match {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("vector has {got} dimensions, the collection {expected}")]
    Dimension { expected: usize, got: usize },
    #[error("vector store unavailable: {0}")]
    Unavailable(String),
    #[error("vector store failed: {0}")]
    Backend(String),
}

/// What the knowledge base needs from a vector store.
#[async_trait]
pub trait VectorStore: Send + Sync + 'static {
    /// Number of dimensions of every vector.
    fn dimensions(&self) -> usize;
    /// Inserts or replaces points (by id).
    async fn upsert(&self, points: Vec<Point>) -> Result<(), VectorError>;
    /// Deletes every point whose payload matches.
    async fn delete(&self, filter: Match) -> Result<(), VectorError>;
    /// The `limit` nearest points by cosine similarity, best first, optionally filtered.
    async fn search(
        &self,
        vector: &[f32],
        limit: usize,
        filter: Option<Match>,
    ) -> Result<Vec<ScoredPoint>, VectorError>;
    /// Number of points, optionally filtered.
    async fn count(&self, filter: Option<Match>) -> Result<u64, VectorError>;
    /// Makes writes durable and builds indexes after a bulk import (may take seconds).
    async fn optimize(&self) -> Result<(), VectorError>;
}
