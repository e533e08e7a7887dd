//! A test-only fake Qdrant server: gRPC on 127.0.0.1, in memory, brute force.
//!
//! No Qdrant server can be installed on the project's machines, so the server backend
//! (`QdrantServerStore`, the real `qdrant-client` code) is tested end to end against this: the
//! tonic server traits that `qdrant-client` ships (`qdrant_server`, `collections_server`,
//! `points_server`), implemented for exactly the calls the backend makes. It checks our client code
//! and the wire format, not every behaviour of a real server (see `tests/vectors.rs` for the
//! optional suite against one).
//!
//! What it enforces like a real server: existing collection for point calls, vector dimensions,
//! UUID/numeric ids, cosine scores on normalised vectors, `must`/`should`/`must_not` keyword
//! matches (also inside arrays), `with_payload`, exact counts, the `api-key` header. Stricter than
//! a default server: a filter on a field without a keyword index is rejected (as Qdrant's strict
//! mode does), and any request it does not understand is `unimplemented` instead of ignored.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use ::qdrant_client::qdrant::{
    collections_server::{Collections, CollectionsServer},
    condition::ConditionOneOf,
    points_selector::PointsSelectorOneOf,
    points_server::{Points, PointsServer},
    qdrant_server::{Qdrant, QdrantServer},
    r#match::MatchValue,
    value::Kind,
    vector, vector_input, vectors, vectors_config,
    with_payload_selector::SelectorOptions,
    *,
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// One running fake server; stops when dropped.
pub struct FakeQdrant {
    /// `http://127.0.0.1:<port>`, for `Qdrant::from_url`.
    pub url: String,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FakeQdrant {
    /// Starts a server on a free port. With `api_key`, requests without that `api-key` header are
    /// refused with `Unauthenticated`, as a real server configured with one does.
    pub async fn start(api_key: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let fake = Fake(Arc::clone(&state));
        let key = api_key.map(str::to_owned);
        let check = move |request: Request<()>| -> Result<Request<()>, Status> {
            match &key {
                None => Ok(request),
                Some(key) => match request.metadata().get("api-key") {
                    Some(got) if got.as_bytes() == key.as_bytes() => Ok(request),
                    _ => Err(Status::unauthenticated("Must provide an API key")),
                },
            }
        };
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(QdrantServer::with_interceptor(fake.clone(), check.clone()))
                .add_service(CollectionsServer::with_interceptor(
                    fake.clone(),
                    check.clone(),
                ))
                .add_service(PointsServer::with_interceptor(fake, check))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = rx.await;
                    },
                )
                .await;
            if let Err(e) = served {
                eprintln!("fake Qdrant server stopped: {e}");
            }
        });
        Self {
            url: format!("http://{addr}"),
            state,
            shutdown: Some(tx),
        }
    }

    /// Names of the RPCs received so far, in order (e.g. `"Points/Upsert"`).
    pub fn calls(&self) -> Vec<String> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Creates a collection directly (e.g. with other dimensions, to test the check on connect).
    pub fn create_collection(&self, name: &str, dims: u64) {
        self.state.collections().insert(
            name.to_owned(),
            Collection {
                dims,
                distance: Distance::Cosine as i32,
                points: BTreeMap::new(),
                indexes: BTreeMap::new(),
            },
        );
    }
}

impl Drop for FakeQdrant {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Default)]
struct State {
    collections: Mutex<HashMap<String, Collection>>,
    calls: Mutex<Vec<String>>,
}

impl State {
    fn collections(&self) -> MutexGuard<'_, HashMap<String, Collection>> {
        self.collections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn call(&self, name: &str) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_owned());
    }
}

struct Collection {
    dims: u64,
    distance: i32,
    /// Keyed by the canonical id text (lowercase hyphenated UUID, or the number).
    points: BTreeMap<String, Stored>,
    /// Field name -> `PayloadSchemaType`.
    indexes: BTreeMap<String, i32>,
}

struct Stored {
    id: PointId,
    /// Normalised (cosine), as Qdrant stores it.
    vector: Vec<f32>,
    payload: HashMap<String, Value>,
}

#[derive(Clone)]
struct Fake(Arc<State>);

fn not_found(name: &str) -> Status {
    Status::not_found(format!("Not found: Collection `{name}` doesn't exist!"))
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > f32::EPSILON {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn canonical_id(id: Option<&PointId>) -> Result<(String, PointId), Status> {
    match id.and_then(|id| id.point_id_options.as_ref()) {
        Some(point_id::PointIdOptions::Num(n)) => Ok((n.to_string(), PointId::from(*n))),
        Some(point_id::PointIdOptions::Uuid(s)) => {
            let uuid: uuid::Uuid = s
                .parse()
                .map_err(|_| Status::invalid_argument(format!("Unable to parse UUID: {s}")))?;
            let text = uuid.to_string();
            Ok((text.clone(), PointId::from(text)))
        }
        None => Err(Status::invalid_argument("point without id")),
    }
}

#[allow(deprecated)]
fn dense(vectors: Option<&Vectors>) -> Result<Vec<f32>, Status> {
    match vectors.and_then(|v| v.vectors_options.as_ref()) {
        Some(vectors::VectorsOptions::Vector(v)) => match &v.vector {
            Some(vector::Vector::Dense(d)) => Ok(d.data.clone()),
            None if !v.data.is_empty() && v.indices.is_none() => Ok(v.data.clone()),
            _ => Err(Status::unimplemented("fake Qdrant: only dense vectors")),
        },
        Some(vectors::VectorsOptions::Vectors(_)) => Err(Status::invalid_argument(
            "Wrong input: Not existing vector name error: named vectors on an unnamed collection",
        )),
        None => Err(Status::invalid_argument("point without vector")),
    }
}

fn check_dims(collection: &Collection, v: &[f32]) -> Result<(), Status> {
    if v.len() as u64 != collection.dims {
        return Err(Status::invalid_argument(format!(
            "Wrong input: Vector dimension error: expected dim: {}, got {}",
            collection.dims,
            v.len()
        )));
    }
    Ok(())
}

/// Whether `value` matches the keyword (a string, or an array containing it).
fn keyword_matches(value: Option<&Value>, keyword: &str) -> bool {
    match value.and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => s == keyword,
        Some(Kind::ListValue(list)) => list
            .values
            .iter()
            .any(|v| keyword_matches(Some(v), keyword)),
        _ => false,
    }
}

fn check_condition(
    collection: &Collection,
    point: &Stored,
    condition: &Condition,
) -> Result<bool, Status> {
    match &condition.condition_one_of {
        Some(ConditionOneOf::Field(field)) => {
            let is_keyword = collection.indexes.get(&field.key).copied()
                == Some(PayloadSchemaType::Keyword as i32);
            if !is_keyword {
                return Err(Status::invalid_argument(format!(
                    "Bad request: Index required but not found for \"{}\" of one of the \
                     following types: [keyword]",
                    field.key
                )));
            }
            match field.r#match.as_ref().and_then(|m| m.match_value.as_ref()) {
                Some(MatchValue::Keyword(k)) => {
                    Ok(keyword_matches(point.payload.get(&field.key), k))
                }
                _ => Err(Status::unimplemented(
                    "fake Qdrant: only keyword match conditions",
                )),
            }
        }
        Some(ConditionOneOf::Filter(filter)) => matches_filter(collection, point, filter),
        _ => Err(Status::unimplemented("fake Qdrant: unsupported condition")),
    }
}

fn matches_filter(
    collection: &Collection,
    point: &Stored,
    filter: &Filter,
) -> Result<bool, Status> {
    if filter.min_should.is_some() {
        return Err(Status::unimplemented("fake Qdrant: min_should"));
    }
    for c in &filter.must {
        if !check_condition(collection, point, c)? {
            return Ok(false);
        }
    }
    for c in &filter.must_not {
        if check_condition(collection, point, c)? {
            return Ok(false);
        }
    }
    if !filter.should.is_empty() {
        let mut any = false;
        for c in &filter.should {
            any |= check_condition(collection, point, c)?;
        }
        return Ok(any);
    }
    Ok(true)
}

fn matching<'a>(
    collection: &'a Collection,
    filter: Option<&'a Filter>,
) -> Result<Vec<&'a Stored>, Status> {
    let mut out = Vec::new();
    for p in collection.points.values() {
        if match filter {
            Some(f) => matches_filter(collection, p, f)?,
            None => true,
        } {
            out.push(p);
        }
    }
    Ok(out)
}

fn done() -> PointsOperationResponse {
    PointsOperationResponse {
        result: Some(UpdateResult {
            operation_id: Some(0),
            status: UpdateStatus::Completed as i32,
        }),
        time: 0.0,
        usage: None,
    }
}

/// Implements the listed RPCs as `unimplemented`, then the given methods, in one
/// `#[tonic::async_trait]` impl (the macro expands before `async_trait` sees the block).
macro_rules! fake_impl {
    (
        unimplemented { $($name:ident($req:ident) -> $resp:ident;)* }
        impl $trait:ident for $ty:ty { $($body:tt)* }
    ) => {
        #[tonic::async_trait]
        impl $trait for $ty {
            $($body)*
            $(
                async fn $name(&self, _request: Request<$req>) -> Result<Response<$resp>, Status> {
                    self.0.call(concat!(stringify!($trait), "/", stringify!($name)));
                    Err(Status::unimplemented(concat!(
                        "fake Qdrant does not implement ",
                        stringify!($trait),
                        "/",
                        stringify!($name)
                    )))
                }
            )*
        }
    };
}

fake_impl! {
    unimplemented {}
    impl Qdrant for Fake {
        async fn health_check(
            &self,
            _request: Request<HealthCheckRequest>,
        ) -> Result<Response<HealthCheckReply>, Status> {
            self.0.call("Qdrant/HealthCheck");
            Ok(Response::new(HealthCheckReply {
                title: "qdrant - vector search engine (Frontdesk test fake)".into(),
                version: "1.16.0".into(),
                commit: None,
            }))
        }
    }
}

fake_impl! {
    unimplemented {
        list(ListCollectionsRequest) -> ListCollectionsResponse;
        update(UpdateCollection) -> CollectionOperationResponse;
        update_aliases(ChangeAliases) -> CollectionOperationResponse;
        list_collection_aliases(ListCollectionAliasesRequest) -> ListAliasesResponse;
        list_aliases(ListAliasesRequest) -> ListAliasesResponse;
        collection_cluster_info(CollectionClusterInfoRequest) -> CollectionClusterInfoResponse;
        update_collection_cluster_setup(UpdateCollectionClusterSetupRequest) -> UpdateCollectionClusterSetupResponse;
        create_shard_key(CreateShardKeyRequest) -> CreateShardKeyResponse;
        delete_shard_key(DeleteShardKeyRequest) -> DeleteShardKeyResponse;
        list_shard_keys(ListShardKeysRequest) -> ListShardKeysResponse;
    }
    impl Collections for Fake {
        async fn collection_exists(
            &self,
            request: Request<CollectionExistsRequest>,
        ) -> Result<Response<CollectionExistsResponse>, Status> {
            self.0.call("Collections/CollectionExists");
            let name = request.into_inner().collection_name;
            let exists = self.0.collections().contains_key(&name);
            Ok(Response::new(CollectionExistsResponse {
                result: Some(CollectionExists { exists }),
                time: 0.0,
            }))
        }

        async fn create(
            &self,
            request: Request<CreateCollection>,
        ) -> Result<Response<CollectionOperationResponse>, Status> {
            self.0.call("Collections/Create");
            let request = request.into_inner();
            if request.sparse_vectors_config.is_some() || request.quantization_config.is_some() {
                return Err(Status::unimplemented("fake Qdrant: sparse vectors, quantization"));
            }
            let params = match request.vectors_config.and_then(|v| v.config) {
                Some(vectors_config::Config::Params(p)) => p,
                _ => return Err(Status::unimplemented("fake Qdrant: only one unnamed vector")),
            };
            if params.size == 0 || params.distance != Distance::Cosine as i32 {
                return Err(Status::invalid_argument("fake Qdrant: size > 0, cosine only"));
            }
            let mut collections = self.0.collections();
            if collections.contains_key(&request.collection_name) {
                return Err(Status::already_exists(format!(
                    "Wrong input: Collection `{}` already exists!",
                    request.collection_name
                )));
            }
            collections.insert(
                request.collection_name,
                Collection {
                    dims: params.size,
                    distance: params.distance,
                    points: BTreeMap::new(),
                    indexes: BTreeMap::new(),
                },
            );
            Ok(Response::new(CollectionOperationResponse { result: true, time: 0.0 }))
        }

        async fn delete(
            &self,
            request: Request<DeleteCollection>,
        ) -> Result<Response<CollectionOperationResponse>, Status> {
            self.0.call("Collections/Delete");
            let name = request.into_inner().collection_name;
            let removed = self.0.collections().remove(&name).is_some();
            Ok(Response::new(CollectionOperationResponse { result: removed, time: 0.0 }))
        }

        async fn get(
            &self,
            request: Request<GetCollectionInfoRequest>,
        ) -> Result<Response<GetCollectionInfoResponse>, Status> {
            self.0.call("Collections/Get");
            let name = request.into_inner().collection_name;
            let collections = self.0.collections();
            let c = collections.get(&name).ok_or_else(|| not_found(&name))?;
            let payload_schema = c
                .indexes
                .iter()
                .map(|(field, data_type)| {
                    let points = c.points.values().filter(|p| p.payload.contains_key(field)).count();
                    (
                        field.clone(),
                        PayloadSchemaInfo {
                            data_type: *data_type,
                            params: None,
                            points: Some(points as u64),
                        },
                    )
                })
                .collect();
            let info = CollectionInfo {
                status: CollectionStatus::Green as i32,
                segments_count: 1,
                config: Some(CollectionConfig {
                    params: Some(CollectionParams {
                        vectors_config: Some(VectorsConfig {
                            config: Some(vectors_config::Config::Params(VectorParams {
                                size: c.dims,
                                distance: c.distance,
                                ..Default::default()
                            })),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                payload_schema,
                points_count: Some(c.points.len() as u64),
                indexed_vectors_count: Some(0),
                ..Default::default()
            };
            Ok(Response::new(GetCollectionInfoResponse { result: Some(info), time: 0.0 }))
        }
    }
}

fake_impl! {
    unimplemented {
        get(GetPoints) -> GetResponse;
        update_vectors(UpdatePointVectors) -> PointsOperationResponse;
        delete_vectors(DeletePointVectors) -> PointsOperationResponse;
        set_payload(SetPayloadPoints) -> PointsOperationResponse;
        overwrite_payload(SetPayloadPoints) -> PointsOperationResponse;
        delete_payload(DeletePayloadPoints) -> PointsOperationResponse;
        clear_payload(ClearPayloadPoints) -> PointsOperationResponse;
        delete_field_index(DeleteFieldIndexCollection) -> PointsOperationResponse;
        create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse;
        delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse;
        search(SearchPoints) -> SearchResponse;
        search_batch(SearchBatchPoints) -> SearchBatchResponse;
        search_groups(SearchPointGroups) -> SearchGroupsResponse;
        scroll(ScrollPoints) -> ScrollResponse;
        recommend(RecommendPoints) -> RecommendResponse;
        recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse;
        recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse;
        discover(DiscoverPoints) -> DiscoverResponse;
        discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse;
        update_batch(UpdateBatchPoints) -> UpdateBatchResponse;
        query_batch(QueryBatchPoints) -> QueryBatchResponse;
        query_groups(QueryPointGroups) -> QueryGroupsResponse;
        facet(FacetCounts) -> FacetResponse;
        search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse;
        search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse;
    }
    impl Points for Fake {
        async fn create_field_index(
            &self,
            request: Request<CreateFieldIndexCollection>,
        ) -> Result<Response<PointsOperationResponse>, Status> {
            self.0.call("Points/CreateFieldIndex");
            let request = request.into_inner();
            if request.field_type != Some(FieldType::Keyword as i32)
                || request.field_index_params.is_some()
            {
                return Err(Status::unimplemented("fake Qdrant: plain keyword indexes only"));
            }
            let mut collections = self.0.collections();
            let c = collections
                .get_mut(&request.collection_name)
                .ok_or_else(|| not_found(&request.collection_name))?;
            c.indexes
                .insert(request.field_name, PayloadSchemaType::Keyword as i32);
            Ok(Response::new(done()))
        }

        async fn upsert(
            &self,
            request: Request<UpsertPoints>,
        ) -> Result<Response<PointsOperationResponse>, Status> {
            self.0.call("Points/Upsert");
            let request = request.into_inner();
            if request.update_filter.is_some() || request.shard_key_selector.is_some() {
                return Err(Status::unimplemented("fake Qdrant: conditional/sharded upsert"));
            }
            let mut collections = self.0.collections();
            let c = collections
                .get_mut(&request.collection_name)
                .ok_or_else(|| not_found(&request.collection_name))?;
            // Validate the whole batch first: a real server rejects it as a whole.
            let mut batch = Vec::with_capacity(request.points.len());
            for p in request.points {
                let (key, id) = canonical_id(p.id.as_ref())?;
                let v = dense(p.vectors.as_ref())?;
                check_dims(c, &v)?;
                batch.push((key, Stored { id, vector: normalise(v), payload: p.payload }));
            }
            c.points.extend(batch);
            Ok(Response::new(done()))
        }

        async fn delete(
            &self,
            request: Request<DeletePoints>,
        ) -> Result<Response<PointsOperationResponse>, Status> {
            self.0.call("Points/Delete");
            let request = request.into_inner();
            let mut collections = self.0.collections();
            let c = collections
                .get_mut(&request.collection_name)
                .ok_or_else(|| not_found(&request.collection_name))?;
            let doomed: Vec<String> = match request.points.and_then(|s| s.points_selector_one_of) {
                Some(PointsSelectorOneOf::Filter(filter)) => matching(c, Some(&filter))?
                    .into_iter()
                    .map(|p| canonical_id(Some(&p.id)).map(|(k, _)| k))
                    .collect::<Result<_, _>>()?,
                Some(PointsSelectorOneOf::Points(list)) => list
                    .ids
                    .iter()
                    .map(|id| canonical_id(Some(id)).map(|(k, _)| k))
                    .collect::<Result<_, _>>()?,
                None => return Err(Status::invalid_argument("delete without selector")),
            };
            for key in doomed {
                c.points.remove(&key);
            }
            Ok(Response::new(done()))
        }

        async fn count(
            &self,
            request: Request<CountPoints>,
        ) -> Result<Response<CountResponse>, Status> {
            self.0.call("Points/Count");
            let request = request.into_inner();
            let collections = self.0.collections();
            let c = collections
                .get(&request.collection_name)
                .ok_or_else(|| not_found(&request.collection_name))?;
            let count = matching(c, request.filter.as_ref())?.len() as u64;
            Ok(Response::new(CountResponse {
                result: Some(CountResult { count }),
                time: 0.0,
                usage: None,
            }))
        }

        async fn query(
            &self,
            request: Request<QueryPoints>,
        ) -> Result<Response<QueryResponse>, Status> {
            self.0.call("Points/Query");
            let request = request.into_inner();
            if !request.prefetch.is_empty()
                || request.using.is_some()
                || request.score_threshold.is_some()
                || request.lookup_from.is_some()
            {
                return Err(Status::unimplemented("fake Qdrant: prefetch/using/threshold/lookup"));
            }
            let q = match request.query.and_then(|q| q.variant) {
                Some(query::Variant::Nearest(VectorInput {
                    variant: Some(vector_input::Variant::Dense(d)),
                })) => d.data,
                _ => return Err(Status::unimplemented("fake Qdrant: dense nearest queries only")),
            };
            let with_payload = match request.with_payload.and_then(|w| w.selector_options) {
                Some(SelectorOptions::Enable(on)) => on,
                None => false,
                Some(_) => return Err(Status::unimplemented("fake Qdrant: payload selectors")),
            };
            let collections = self.0.collections();
            let c = collections
                .get(&request.collection_name)
                .ok_or_else(|| not_found(&request.collection_name))?;
            check_dims(c, &q)?;
            let q = normalise(q);
            let mut scored: Vec<(f32, &Stored)> = matching(c, request.filter.as_ref())?
                .into_iter()
                .map(|p| (p.vector.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>(), p))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            let offset = request.offset.unwrap_or(0) as usize;
            let limit = request.limit.unwrap_or(10) as usize;
            let result = scored
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|(score, p)| ScoredPoint {
                    id: Some(p.id.clone()),
                    payload: if with_payload { p.payload.clone() } else { HashMap::new() },
                    score,
                    version: 0,
                    ..Default::default()
                })
                .collect();
            Ok(Response::new(QueryResponse { result, time: 0.0, usage: None }))
        }
    }
}
