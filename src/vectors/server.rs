//! [`QdrantServerStore`]: a Qdrant server over gRPC (`qdrant-client`), for deployments that run
//! one (`[qdrant] url = "http://host:6334"`).
//!
//! Same semantics as the embedded [`super::edge::EdgeStore`]: one unnamed cosine vector per point,
//! UUID ids, JSON payloads, keyword indexes on the filtered fields, exact counts. Writes wait for
//! the server to apply them (`wait = true`) so a search right after an upsert sees it.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::{
    point_id::PointIdOptions, vectors_config, Condition, CountPointsBuilder,
    CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance,
    FieldType, Filter, PointId, PointStruct, Query, QueryPointsBuilder, UpsertPointsBuilder,
    VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde_json::{Map, Value};

use super::{
    check_dimensions, Match, Point, ScoredPoint, VectorError, VectorStore, INDEXED_FIELDS,
};

/// Points per upsert request (keeps each gRPC message well under the default 4 MiB limit at 384
/// dimensions).
const UPSERT_BATCH: usize = 256;

/// A collection on a Qdrant server.
pub struct QdrantServerStore {
    client: Qdrant,
    collection: String,
    dims: usize,
}

impl std::fmt::Debug for QdrantServerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantServerStore")
            .field("url", &self.client.config.uri)
            .field("collection", &self.collection)
            .field("dims", &self.dims)
            .finish()
    }
}

impl QdrantServerStore {
    /// Connects to the server at `url` (gRPC, usually port 6334), creates `collection` (cosine,
    /// `dims`) and the keyword indexes if missing, and checks the dimensions of an existing
    /// collection.
    pub async fn connect(
        url: &str,
        collection: &str,
        api_key: Option<&str>,
        dims: usize,
    ) -> Result<Self, VectorError> {
        if dims == 0 {
            return Err(VectorError::Backend(
                "vectors need at least 1 dimension".into(),
            ));
        }
        let client = Qdrant::from_url(url)
            .api_key(api_key.map(str::to_owned))
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .skip_compatibility_check()
            .build()
            .map_err(|e| VectorError::Unavailable(format!("Qdrant at {url}: {e}")))?;
        client
            .health_check()
            .await
            .map_err(|e| VectorError::Unavailable(format!("Qdrant at {url}: {e}")))?;
        let store = Self {
            client,
            collection: collection.to_owned(),
            dims,
        };
        store.ensure_collection().await?;
        tracing::info!(url, collection, dims, "connected to Qdrant server");
        Ok(store)
    }

    async fn ensure_collection(&self) -> Result<(), VectorError> {
        let name = &self.collection;
        let exists = self
            .client
            .collection_exists(name.as_str())
            .await
            .map_err(error)?;
        if !exists {
            tracing::info!(collection = %name, dims = self.dims, "creating Qdrant collection");
            let created =
                self.client
                    .create_collection(CreateCollectionBuilder::new(name.as_str()).vectors_config(
                        VectorParamsBuilder::new(self.dims as u64, Distance::Cosine),
                    ))
                    .await;
            match created {
                Ok(_) => {}
                // Another instance created it in between: checked below like any existing one.
                Err(QdrantError::ResponseError { status })
                    if status.code() == tonic::Code::AlreadyExists => {}
                Err(e) => return Err(error(e)),
            }
        }

        let info = self
            .client
            .collection_info(name.as_str())
            .await
            .map_err(error)?
            .result
            .ok_or_else(|| VectorError::Backend(format!("no info for collection {name}")))?;
        let params = info
            .config
            .as_ref()
            .and_then(|c| c.params.as_ref())
            .and_then(|p| p.vectors_config.as_ref())
            .and_then(|v| v.config.as_ref());
        match params {
            Some(vectors_config::Config::Params(p)) => {
                if p.size != self.dims as u64 {
                    return Err(VectorError::Dimension {
                        expected: p.size as usize,
                        got: self.dims,
                    });
                }
                if p.distance != Distance::Cosine as i32 {
                    return Err(VectorError::Backend(format!(
                        "collection {name} does not use cosine distance"
                    )));
                }
            }
            _ => {
                return Err(VectorError::Backend(format!(
                    "collection {name} has no single unnamed vector (not created by Frontdesk?)"
                )))
            }
        }

        for &field in INDEXED_FIELDS {
            if info.payload_schema.contains_key(field) {
                continue;
            }
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        name.as_str(),
                        field,
                        FieldType::Keyword,
                    )
                    .wait(true),
                )
                .await
                .map_err(error)?;
        }
        Ok(())
    }
}

fn to_filter(m: Match) -> Filter {
    Filter::must([Condition::matches(m.key, m.value)])
}

/// Unreachable server or overload: [`VectorError::Unavailable`]; anything else: `Backend`.
fn error(e: QdrantError) -> VectorError {
    match &e {
        QdrantError::ResponseError { status }
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) =>
        {
            VectorError::Unavailable(e.to_string())
        }
        QdrantError::ResourceExhaustedError { .. } => VectorError::Unavailable(e.to_string()),
        _ => VectorError::Backend(e.to_string()),
    }
}

fn parse_id(id: Option<PointId>) -> Result<uuid::Uuid, VectorError> {
    match id.and_then(|id| id.point_id_options) {
        Some(PointIdOptions::Uuid(s)) => s
            .parse()
            .map_err(|_| VectorError::Backend(format!("server returned invalid point id {s:?}"))),
        other => Err(VectorError::Backend(format!(
            "server returned a non-UUID point id {other:?}"
        ))),
    }
}

fn payload_to_json(payload: HashMap<String, qdrant_client::qdrant::Value>) -> Map<String, Value> {
    payload
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect()
}

#[async_trait]
impl VectorStore for QdrantServerStore {
    fn dimensions(&self) -> usize {
        self.dims
    }

    async fn upsert(&self, points: Vec<Point>) -> Result<(), VectorError> {
        for p in &points {
            check_dimensions(self.dims, &p.vector)?;
        }
        let mut points = points.into_iter().peekable();
        while points.peek().is_some() {
            let batch: Vec<PointStruct> = points
                .by_ref()
                .take(UPSERT_BATCH)
                .map(|p| PointStruct::new(p.id.to_string(), p.vector, Payload::from(p.payload)))
                .collect();
            self.client
                .upsert_points(UpsertPointsBuilder::new(self.collection.as_str(), batch).wait(true))
                .await
                .map_err(error)?;
        }
        Ok(())
    }

    async fn delete(&self, filter: Match) -> Result<(), VectorError> {
        self.client
            .delete_points(
                DeletePointsBuilder::new(self.collection.as_str())
                    .points(to_filter(filter))
                    .wait(true),
            )
            .await
            .map_err(error)?;
        Ok(())
    }

    async fn search(
        &self,
        vector: &[f32],
        limit: usize,
        filter: Option<Match>,
    ) -> Result<Vec<ScoredPoint>, VectorError> {
        check_dimensions(self.dims, vector)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut request = QueryPointsBuilder::new(self.collection.as_str())
            .query(Query::new_nearest(vector.to_vec()))
            .limit(limit as u64)
            .with_payload(true);
        if let Some(filter) = filter {
            request = request.filter(to_filter(filter));
        }
        let response = self.client.query(request).await.map_err(error)?;
        response
            .result
            .into_iter()
            .map(|p| {
                Ok(ScoredPoint {
                    id: parse_id(p.id)?,
                    score: p.score,
                    payload: payload_to_json(p.payload),
                })
            })
            .collect()
    }

    async fn count(&self, filter: Option<Match>) -> Result<u64, VectorError> {
        let mut request = CountPointsBuilder::new(self.collection.as_str()).exact(true);
        if let Some(filter) = filter {
            request = request.filter(to_filter(filter));
        }
        let response = self.client.count(request).await.map_err(error)?;
        Ok(response.result.map(|r| r.count).unwrap_or(0))
    }

    /// The server flushes and optimizes by itself; this only checks that it is reachable.
    async fn optimize(&self) -> Result<(), VectorError> {
        self.client.health_check().await.map_err(error)?;
        Ok(())
    }
}
