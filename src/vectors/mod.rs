//! Vector storage behind one trait: Qdrant Edge in process (the default, on disk under
//! `<data_dir>/vectors`) or a Qdrant server over gRPC when `qdrant.url` is configured.
//!
//! The knowledge base stores several vectors per article (title, each example question, body
//! chunks), each with a payload naming its article; search returns the nearest points with their
//! payloads and the caller groups them. Both backends must behave the same: the same test suite
//! runs against each.

use async_trait::async_trait;
use serde_json::{Map, Value};

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
