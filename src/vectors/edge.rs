//! [`EdgeStore`]: Qdrant Edge in process, the default vector store (no server to run).
//!
//! Qdrant Edge is a Qdrant shard as a library: synchronous and blocking, so every call runs in
//! `spawn_blocking` on a shared `Arc`. Its types are Qdrant internals that change between 0.x
//! releases (the version is pinned in Cargo.toml) and stay inside this module. Edge does nothing to
//! stop two processes from opening the same directory, which would corrupt it: [`EdgeStore::open`]
//! holds an exclusive lock on `<dir>/frontdesk.lock` for as long as the store lives.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, Distance, EdgeConfig, EdgeShard, EdgeVectorParams,
    FieldCondition, FieldIndexOperations, Filter, JsonPath, Payload, PayloadFieldSchema,
    PayloadSchemaType, PointId, PointInsertOperations, PointOperations, PointStructPersisted,
    QueryEnum, QueryRequest, ScoringQuery, UpdateOperation, ValueVariants, VectorInternal,
    VectorStructPersisted, WithPayloadInterface, DEFAULT_VECTOR_NAME,
};
use serde_json::Map;

use super::{
    check_dimensions, Match, Point, ScoredPoint, VectorError, VectorStore, INDEXED_FIELDS,
};

/// The lock file inside the shard directory.
const LOCK_FILE: &str = "frontdesk.lock";

/// Qdrant Edge shard in a local directory, cosine distance, one unnamed dense vector per point.
pub struct EdgeStore {
    inner: Arc<Inner>,
    dims: usize,
}

/// Field order matters: the shard is dropped (and flushed) before the lock is released.
struct Inner {
    shard: EdgeShard,
    path: PathBuf,
    _lock: File,
}

impl std::fmt::Debug for EdgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStore")
            .field("path", &self.inner.path)
            .field("dims", &self.dims)
            .finish()
    }
}

impl EdgeStore {
    /// Opens the shard in `path`, creating it (and the directory) when it holds no segments yet.
    ///
    /// Fails with [`VectorError::Unavailable`] naming the directory when another process (or
    /// another store in this process) has it open, and with [`VectorError::Dimension`] when an
    /// existing shard was created with a different number of dimensions.
    pub async fn open(path: impl Into<PathBuf>, dims: usize) -> Result<Self, VectorError> {
        let path = path.into();
        if dims == 0 {
            return Err(VectorError::Backend(
                "vectors need at least 1 dimension".into(),
            ));
        }
        let inner = tokio::task::spawn_blocking(move || open_blocking(path, dims))
            .await
            .map_err(join_error)??;
        Ok(Self {
            inner: Arc::new(inner),
            dims,
        })
    }

    /// The shard directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Flushes to disk and releases the directory (drop does the same, but blocks the dropping
    /// thread). A call still running in the background keeps the shard, and the lock, until it
    /// ends.
    pub async fn close(self) -> Result<(), VectorError> {
        let inner = self.inner;
        tokio::task::spawn_blocking(move || {
            inner.shard.flush().map_err(backend)?;
            drop(inner);
            Ok(())
        })
        .await
        .map_err(join_error)?
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, VectorError>
    where
        T: Send + 'static,
        F: FnOnce(&EdgeShard) -> Result<T, VectorError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner.shard))
            .await
            .map_err(join_error)?
    }
}

fn open_blocking(path: PathBuf, dims: usize) -> Result<Inner, VectorError> {
    std::fs::create_dir_all(&path).map_err(|e| {
        VectorError::Unavailable(format!(
            "cannot create vector directory {}: {e}",
            path.display()
        ))
    })?;
    let lock = lock_dir(&path)?;

    let has_segments = has_segments(&path);
    let shard = if has_segments {
        let shard = EdgeShard::load(&path, None).map_err(|e| {
            VectorError::Backend(format!("cannot load vector store {}: {e}", path.display()))
        })?;
        let existing = shard
            .config()
            .vectors
            .get(DEFAULT_VECTOR_NAME)
            .map(|params| (params.size, params.distance));
        match existing {
            Some((size, Distance::Cosine)) if size == dims => {}
            Some((size, Distance::Cosine)) => {
                return Err(VectorError::Dimension {
                    expected: size,
                    got: dims,
                })
            }
            other => {
                return Err(VectorError::Backend(format!(
                    "vector store {} was not created by Frontdesk (vector config {other:?})",
                    path.display()
                )))
            }
        }
        tracing::info!(path = %path.display(), dims, "opened Qdrant Edge vector store");
        shard
    } else {
        let config = EdgeConfig::builder()
            .vector(
                DEFAULT_VECTOR_NAME,
                EdgeVectorParams::builder(dims, Distance::Cosine).build(),
            )
            .build();
        let shard = EdgeShard::new(&path, config).map_err(|e| {
            VectorError::Backend(format!(
                "cannot create vector store {}: {e}",
                path.display()
            ))
        })?;
        tracing::info!(path = %path.display(), dims, "created Qdrant Edge vector store");
        shard
    };

    let indexed = shard.info().map_err(backend)?.payload_schema;
    for field in INDEXED_FIELDS {
        let key = json_path(field)?;
        if indexed.contains_key(&key) {
            continue;
        }
        shard
            .update(UpdateOperation::FieldIndexOperation(
                FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name: key,
                    field_schema: Some(PayloadFieldSchema::FieldType(PayloadSchemaType::Keyword)),
                }),
            ))
            .map_err(backend)?;
    }

    Ok(Inner {
        shard,
        path,
        _lock: lock,
    })
}

/// Whether the directory already holds a shard (a segment directory): load it, else create one.
fn has_segments(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path.join("segments")) else {
        return false;
    };
    entries
        .flatten()
        .any(|entry| entry.path().is_dir() && !entry.file_name().to_string_lossy().starts_with('.'))
}

/// Takes an exclusive advisory lock on `<dir>/frontdesk.lock`; released when the file is closed
/// (also when the process dies).
fn lock_dir(dir: &Path) -> Result<File, VectorError> {
    let lock_path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            VectorError::Unavailable(format!(
                "cannot open lock file {}: {e}",
                lock_path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(VectorError::Unavailable(format!(
            "vector store {} is already open in another process or store (lock {} is held)",
            dir.display(),
            lock_path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(VectorError::Unavailable(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

fn json_path(field: &str) -> Result<JsonPath, VectorError> {
    field
        .parse()
        .map_err(|_| VectorError::Backend(format!("invalid payload field name {field:?}")))
}

fn to_filter(m: Match) -> Result<Filter, VectorError> {
    Ok(Filter::new_must(Condition::Field(
        FieldCondition::new_match(
            json_path(&m.key)?,
            qdrant_edge::Match::new_value(ValueVariants::String(m.value)),
        ),
    )))
}

fn backend(e: impl std::fmt::Display) -> VectorError {
    VectorError::Backend(e.to_string())
}

fn join_error(e: tokio::task::JoinError) -> VectorError {
    VectorError::Backend(format!("vector store task failed: {e}"))
}

#[async_trait]
impl VectorStore for EdgeStore {
    fn dimensions(&self) -> usize {
        self.dims
    }

    async fn upsert(&self, points: Vec<Point>) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        for p in &points {
            check_dimensions(self.dims, &p.vector)?;
        }
        let points: Vec<PointStructPersisted> = points
            .into_iter()
            .map(|p| PointStructPersisted {
                id: PointId::Uuid(p.id),
                vector: VectorStructPersisted::Single(p.vector),
                payload: Some(Payload(p.payload)),
            })
            .collect();
        self.blocking(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
                ))
                .map_err(backend)
        })
        .await
    }

    async fn delete(&self, filter: Match) -> Result<(), VectorError> {
        let filter = to_filter(filter)?;
        self.blocking(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePointsByFilter(filter),
                ))
                .map_err(backend)
        })
        .await
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
        let mut request = QueryRequest::new(limit);
        request.query = Some(ScoringQuery::Vector(QueryEnum::Nearest(
            qdrant_edge::NamedQuery {
                query: VectorInternal::from(vector.to_vec()),
                using: None,
            },
        )));
        request.filter = filter.map(to_filter).transpose()?;
        request.with_payload = WithPayloadInterface::Bool(true);
        let found = self
            .blocking(move |shard| shard.query(request).map_err(backend))
            .await?;
        found
            .into_iter()
            .map(|p| {
                let id = match p.id {
                    PointId::Uuid(id) => id,
                    PointId::NumId(n) => {
                        return Err(VectorError::Backend(format!(
                            "unexpected numeric point id {n}"
                        )))
                    }
                };
                Ok(ScoredPoint {
                    id,
                    score: p.score,
                    payload: p.payload.map(|p| p.0).unwrap_or_else(Map::new),
                })
            })
            .collect()
    }

    async fn count(&self, filter: Option<Match>) -> Result<u64, VectorError> {
        let mut request = CountRequest::new();
        request.filter = filter.map(to_filter).transpose()?;
        let n = self
            .blocking(move |shard| shard.count(request).map_err(backend))
            .await?;
        Ok(n as u64)
    }

    async fn optimize(&self) -> Result<(), VectorError> {
        self.blocking(|shard| {
            let started = std::time::Instant::now();
            shard.flush().map_err(backend)?;
            let changed = shard.optimize().map_err(backend)?;
            shard.flush().map_err(backend)?;
            tracing::info!(
                changed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "optimized Qdrant Edge vector store"
            );
            Ok(())
        })
        .await
    }
}
