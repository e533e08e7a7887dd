//! The vector store behaviour suite: one async fn per behaviour, each taking an
//! `Arc<dyn VectorStore>`, run against every backend:
//!
//! - `edge::*`: Qdrant Edge in a temporary directory;
//! - `fake_server::*`: the real `qdrant-client` code (`QdrantServerStore`) against the test-only
//!   gRPC fake Qdrant in `tests/support/qdrant_fake.rs` on 127.0.0.1;
//! - `real_qdrant_server_suite`: a real Qdrant server when `FRONTDESK_TEST_QDRANT_URL` is set
//!   (e.g. `http://127.0.0.1:6334`, plus `FRONTDESK_TEST_QDRANT_API_KEY` if it needs one); skipped
//!   with a visible `SKIPPED:` line otherwise.
//!
//! Then the backend-specific behaviours: Edge reopen and locking, server collection checks.

mod support {
    pub mod qdrant_fake;
}

use std::any::Any;
use std::io::Write as _;
use std::sync::Arc;

use frontdesk::vectors::{
    self, EdgeStore, Match, Point, QdrantServerStore, ScoredPoint, VectorConfig, VectorError,
    VectorStore,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use support::qdrant_fake::FakeQdrant;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Helpers

fn payload(article: &str, namespace: &str, extra: Value) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("article_id".into(), json!(article));
    map.insert("namespace".into(), json!(namespace));
    map.insert("extra".into(), extra);
    map
}

fn point(id: Uuid, vector: Vec<f32>, article: &str, namespace: &str) -> Point {
    Point {
        id,
        vector,
        payload: payload(
            article,
            namespace,
            json!({ "title": format!("about {article}") }),
        ),
    }
}

/// Unit vector along axis `i` plus a little of axis `i + 1`: distinct, predictable neighbours.
fn axis(dims: usize, i: usize) -> Vec<f32> {
    let mut v = vec![0.0; dims];
    v[i % dims] = 1.0;
    v[(i + 1) % dims] = 0.1;
    v
}

fn random_vector(rng: &mut StdRng, dims: usize) -> Vec<f32> {
    (0..dims).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// `n` random points; `labels(i)` gives the i-th point's article and namespace.
fn random_points(
    rng: &mut StdRng,
    n: usize,
    dims: usize,
    labels: impl Fn(usize) -> (String, String),
) -> Vec<Point> {
    (0..n)
        .map(|i| {
            let v = random_vector(rng, dims);
            let (article, namespace) = labels(i);
            point(Uuid::from_u128(rng.random()), v, &article, &namespace)
        })
        .collect()
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | n)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn ids(found: &[ScoredPoint]) -> Vec<Uuid> {
    found.iter().map(|p| p.id).collect()
}

fn assert_descending(found: &[ScoredPoint]) {
    for pair in found.windows(2) {
        assert!(
            pair[0].score >= pair[1].score,
            "scores not in descending order: {found:?}"
        );
    }
}

/// Writes past libtest's output capture, so the line shows in a normal `cargo test` run.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Behaviours (every backend)

/// Upsert, then search finds the nearest with its payload, scores in descending order.
async fn nearest_with_payload(store: Arc<dyn VectorStore>) {
    let dims = store.dimensions();
    assert_eq!(dims, 8);
    let points: Vec<Point> = (0..dims)
        .map(|i| point(id(i as u128), axis(dims, i), &format!("a{i}"), "ns"))
        .collect();
    store.upsert(points.clone()).await.unwrap();
    assert_eq!(store.count(None).await.unwrap(), dims as u64);

    for (i, target) in points.iter().enumerate() {
        let found = store.search(&axis(dims, i), 3, None).await.unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].id, target.id, "query {i}: {found:?}");
        assert_eq!(found[0].payload, target.payload);
        assert!((found[0].score - 1.0).abs() < 1e-4, "{found:?}");
        assert_descending(&found);
        // The scores are cosine similarities.
        for hit in &found {
            let stored = points.iter().find(|p| p.id == hit.id).unwrap();
            let expected = cosine(&axis(dims, i), &stored.vector);
            assert!((hit.score - expected).abs() < 1e-4, "{hit:?} vs {expected}");
        }
    }

    // Scale does not matter (cosine), and limit caps the results.
    let scaled: Vec<f32> = axis(dims, 2).iter().map(|x| x * 7.5).collect();
    let found = store.search(&scaled, 1, None).await.unwrap();
    assert_eq!(ids(&found), vec![points[2].id]);
    let all = store.search(&axis(dims, 0), 100, None).await.unwrap();
    assert_eq!(all.len(), dims);
    assert_descending(&all);
}

/// A realistic set: 2,000 random 384-dimensional points; the top 10 match brute force.
async fn random_384(store: Arc<dyn VectorStore>) {
    let dims = store.dimensions();
    assert_eq!(dims, 384);
    let mut rng = StdRng::seed_from_u64(42);
    let points = random_points(&mut rng, 2_000, dims, |i| {
        (format!("article-{}", i / 4), format!("ns-{}", i % 3))
    });
    for chunk in points.chunks(500) {
        store.upsert(chunk.to_vec()).await.unwrap();
    }
    assert_eq!(store.count(None).await.unwrap(), 2_000);
    assert_eq!(
        store
            .count(Some(Match::new("namespace", "ns-1")))
            .await
            .unwrap(),
        points
            .iter()
            .filter(|p| p.payload["namespace"] == "ns-1")
            .count() as u64
    );

    for q in 0..20 {
        // A stored point plus noise: it must come first.
        let target = &points[q * 97];
        let query: Vec<f32> = target
            .vector
            .iter()
            .map(|x| x + rng.random_range(-0.05f32..0.05))
            .collect();
        let found = store.search(&query, 10, None).await.unwrap();
        assert_eq!(found.len(), 10);
        assert_eq!(found[0].id, target.id);
        assert_eq!(found[0].payload, target.payload);
        assert_descending(&found);

        let mut brute: Vec<(f32, Uuid)> = points
            .iter()
            .map(|p| (cosine(&query, &p.vector), p.id))
            .collect();
        brute.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (hit, (score, id)) in found.iter().zip(&brute) {
            assert_eq!(hit.id, *id, "query {q}: {found:?}");
            assert!((hit.score - score).abs() < 1e-3, "{} vs {score}", hit.score);
        }
    }
}

/// Upserting an existing id replaces its vector and payload.
async fn upsert_replaces(store: Arc<dyn VectorStore>) {
    let dims = store.dimensions();
    let pid = id(1);
    store
        .upsert(vec![
            point(pid, axis(dims, 0), "old", "ns"),
            point(id(2), axis(dims, 4), "other", "ns"),
        ])
        .await
        .unwrap();
    store
        .upsert(vec![point(pid, axis(dims, 3), "new", "ns")])
        .await
        .unwrap();
    assert_eq!(store.count(None).await.unwrap(), 2);
    assert_eq!(
        store
            .count(Some(Match::new("article_id", "old")))
            .await
            .unwrap(),
        0
    );

    let found = store.search(&axis(dims, 3), 1, None).await.unwrap();
    assert_eq!(found[0].id, pid);
    assert_eq!(found[0].payload["article_id"], "new");
    assert!((found[0].score - 1.0).abs() < 1e-4);
    // The old vector is gone: the best match for it is no longer a perfect one.
    let found = store.search(&axis(dims, 0), 2, None).await.unwrap();
    assert!(found.iter().all(|p| p.score < 0.99), "{found:?}");
}

/// Deleting by `article_id` removes exactly that article's points.
async fn delete_by_article(store: Arc<dyn VectorStore>) {
    let dims = store.dimensions();
    let mut points = Vec::new();
    for i in 0..3 {
        points.push(point(id(10 + i), axis(dims, i as usize), "doomed", "ns-a"));
    }
    for i in 0..2 {
        points.push(point(
            id(20 + i),
            axis(dims, 3 + i as usize),
            "kept",
            "ns-a",
        ));
    }
    points.push(point(id(30), axis(dims, 6), "other", "ns-b"));
    store.upsert(points).await.unwrap();
    assert_eq!(store.count(None).await.unwrap(), 6);

    store
        .delete(Match::new("article_id", "doomed"))
        .await
        .unwrap();
    assert_eq!(store.count(None).await.unwrap(), 3);
    assert_eq!(
        store
            .count(Some(Match::new("article_id", "doomed")))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .count(Some(Match::new("article_id", "kept")))
            .await
            .unwrap(),
        2
    );
    let found = store.search(&axis(dims, 0), 10, None).await.unwrap();
    let mut remaining = ids(&found);
    remaining.sort();
    assert_eq!(remaining, vec![id(20), id(21), id(30)]);

    // Deleting what is not there is fine.
    store
        .delete(Match::new("article_id", "doomed"))
        .await
        .unwrap();
    store
        .delete(Match::new("article_id", "never"))
        .await
        .unwrap();
    assert_eq!(store.count(None).await.unwrap(), 3);
}

/// A `namespace` filter restricts search and count, even when other points are closer.
async fn namespace_filter(store: Arc<dyn VectorStore>) {
    let dims = store.dimensions();
    let mut points = Vec::new();
    for i in 0..4 {
        points.push(point(
            id(100 + i),
            axis(dims, i as usize),
            &format!("a{i}"),
            "billing",
        ));
    }
    for i in 0..3 {
        points.push(point(
            id(200 + i),
            axis(dims, 4 + i as usize),
            &format!("b{i}"),
            "tech",
        ));
    }
    store.upsert(points).await.unwrap();

    let billing = || Some(Match::new("namespace", "billing"));
    let tech = || Some(Match::new("namespace", "tech"));
    assert_eq!(store.count(billing()).await.unwrap(), 4);
    assert_eq!(store.count(tech()).await.unwrap(), 3);
    assert_eq!(
        store
            .count(Some(Match::new("namespace", "none")))
            .await
            .unwrap(),
        0
    );

    // The nearest overall is a tech point; filtered on billing, only billing points come back.
    let query = axis(dims, 5);
    let unfiltered = store.search(&query, 1, None).await.unwrap();
    assert_eq!(unfiltered[0].id, id(201));
    let found = store.search(&query, 10, billing()).await.unwrap();
    assert_eq!(found.len(), 4);
    assert!(
        found.iter().all(|p| p.payload["namespace"] == "billing"),
        "{found:?}"
    );
    assert_descending(&found);
    let found = store.search(&query, 10, tech()).await.unwrap();
    assert_eq!(found.len(), 3);
    assert_eq!(found[0].id, id(201));
    assert!(store
        .search(&query, 10, Some(Match::new("namespace", "none")))
        .await
        .unwrap()
        .is_empty());
}

/// Wrong dimensions are an error (not a panic) and leave the store usable.
async fn dimension_mismatch(store: Arc<dyn VectorStore>) {
    let dims = store.dimensions();
    store
        .upsert(vec![point(id(1), axis(dims, 0), "a", "ns")])
        .await
        .unwrap();

    let short = vec![1.0; dims - 1];
    let err = store
        .upsert(vec![
            point(id(2), axis(dims, 1), "b", "ns"),
            point(id(3), short.clone(), "c", "ns"),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, VectorError::Dimension { expected, got } if expected == dims && got == dims - 1),
        "{err:?}"
    );
    let err = store
        .search(&vec![1.0; dims + 3], 5, None)
        .await
        .unwrap_err();
    assert!(matches!(err, VectorError::Dimension { .. }), "{err:?}");
    let err = store.search(&[], 5, None).await.unwrap_err();
    assert!(matches!(err, VectorError::Dimension { .. }), "{err:?}");

    // Nothing of the rejected batch was written, and the store still works.
    assert_eq!(store.count(None).await.unwrap(), 1);
    let found = store.search(&axis(dims, 0), 5, None).await.unwrap();
    assert_eq!(ids(&found), vec![id(1)]);
    // A search with limit 0 and an empty upsert are no-ops.
    assert!(store
        .search(&axis(dims, 0), 0, None)
        .await
        .unwrap()
        .is_empty());
    store.upsert(Vec::new()).await.unwrap();
}

/// `optimize()` keeps every point and the same results.
async fn optimize_keeps_results(store: Arc<dyn VectorStore>) {
    let dims = store.dimensions();
    let points: Vec<Point> = (0..dims)
        .map(|i| point(id(i as u128), axis(dims, i), &format!("a{i}"), "ns"))
        .collect();
    store.upsert(points).await.unwrap();
    let before = store.search(&axis(dims, 2), 5, None).await.unwrap();
    store.optimize().await.unwrap();
    assert_eq!(store.count(None).await.unwrap(), dims as u64);
    let after = store.search(&axis(dims, 2), 5, None).await.unwrap();
    assert_eq!(ids(&before), ids(&after));
}

// ---------------------------------------------------------------------------------------------
// Backends

/// A store plus whatever must live as long as it (temp dir, fake server).
struct Fixture {
    store: Arc<dyn VectorStore>,
    _guard: Box<dyn Any + Send>,
}

async fn edge_fixture(dims: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EdgeStore::open(dir.path().join("vectors"), dims)
        .await
        .unwrap();
    Fixture {
        store: Arc::new(store),
        _guard: Box::new(dir),
    }
}

async fn fake_server_fixture(dims: usize) -> Fixture {
    let fake = FakeQdrant::start(None).await;
    let store = QdrantServerStore::connect(&fake.url, "frontdesk_kb", None, dims)
        .await
        .unwrap();
    Fixture {
        store: Arc::new(store),
        _guard: Box::new(fake),
    }
}

const REAL_URL: &str = "FRONTDESK_TEST_QDRANT_URL";

async fn real_server_store(
    url: &str,
    dims: usize,
    behaviour: &str,
) -> (Arc<dyn VectorStore>, String) {
    let key = std::env::var("FRONTDESK_TEST_QDRANT_API_KEY").ok();
    let collection = format!("frontdesk_test_{behaviour}_{}", Uuid::now_v7().simple());
    let store = QdrantServerStore::connect(url, &collection, key.as_deref(), dims)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    (Arc::new(store), collection)
}

async fn drop_real_collection(url: &str, collection: &str) {
    let key = std::env::var("FRONTDESK_TEST_QDRANT_API_KEY").ok();
    if let Ok(client) = qdrant_client::Qdrant::from_url(url)
        .api_key(key)
        .skip_compatibility_check()
        .build()
    {
        let _ = client.delete_collection(collection).await;
    }
}

/// Generates one test per behaviour for Edge and for the fake server, and one sequential test for
/// a real server.
macro_rules! suite {
    ($($behaviour:ident: $dims:expr;)*) => {
        mod edge {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let fixture = super::edge_fixture($dims).await;
                    super::$behaviour(fixture.store.clone()).await;
                }
            )*
        }

        mod fake_server {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let fixture = super::fake_server_fixture($dims).await;
                    super::$behaviour(fixture.store.clone()).await;
                }
            )*
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn real_qdrant_server_suite() {
            let Ok(url) = std::env::var(REAL_URL) else {
                say(&format!("SKIPPED: real Qdrant server suite ({REAL_URL} not set)"));
                return;
            };
            $(
                let (store, collection) =
                    real_server_store(&url, $dims, stringify!($behaviour)).await;
                $behaviour(store).await;
                drop_real_collection(&url, &collection).await;
                say(&format!("real Qdrant server at {url}: {} ok", stringify!($behaviour)));
            )*
        }
    };
}

suite! {
    nearest_with_payload: 8;
    random_384: 384;
    upsert_replaces: 8;
    delete_by_article: 8;
    namespace_filter: 8;
    dimension_mismatch: 8;
    optimize_keeps_results: 8;
}

// ---------------------------------------------------------------------------------------------
// Qdrant Edge only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vectors");
    let dims = 384;
    let mut rng = StdRng::seed_from_u64(7);
    let points = random_points(&mut rng, 600, dims, |i| {
        (format!("a{}", i / 3), format!("ns-{}", i % 2))
    });
    let queries: Vec<Vec<f32>> = (0..10).map(|_| random_vector(&mut rng, dims)).collect();

    async fn results(store: &EdgeStore, queries: &[Vec<f32>]) -> Vec<Vec<ScoredPoint>> {
        let mut all = Vec::new();
        for q in queries {
            all.push(store.search(q, 10, None).await.unwrap());
            all.push(
                store
                    .search(q, 5, Some(Match::new("namespace", "ns-1")))
                    .await
                    .unwrap(),
            );
        }
        all
    }

    // 1. Written, not optimized, closed: reopened from the WAL/segments.
    let store = EdgeStore::open(&path, dims).await.unwrap();
    store.upsert(points[..400].to_vec()).await.unwrap();
    store.delete(Match::new("article_id", "a0")).await.unwrap();
    let before = results(&store, &queries).await;
    store.close().await.unwrap();

    let store = EdgeStore::open(&path, dims).await.unwrap();
    assert_eq!(store.count(None).await.unwrap(), 397);
    assert_eq!(results(&store, &queries).await, before);

    // 2. More points, optimized, dropped without close (flushes on drop).
    store.upsert(points[400..].to_vec()).await.unwrap();
    store.optimize().await.unwrap();
    let before = results(&store, &queries).await;
    drop(store);

    let store = EdgeStore::open(&path, dims).await.unwrap();
    assert_eq!(store.count(None).await.unwrap(), 597);
    assert_eq!(results(&store, &queries).await, before);
    assert_eq!(
        store
            .count(Some(Match::new("namespace", "ns-0")))
            .await
            .unwrap(),
        points
            .iter()
            .skip(3)
            .filter(|p| p.payload["namespace"] == "ns-0")
            .count() as u64
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vectors");
    let first = EdgeStore::open(&path, 8).await.unwrap();
    first
        .upsert(vec![point(id(1), axis(8, 0), "a", "ns")])
        .await
        .unwrap();

    let err = EdgeStore::open(&path, 8).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, VectorError::Unavailable(_)), "{err:?}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("already open"), "{message}");

    // The first store is unaffected; once it is closed, the directory opens again.
    assert_eq!(first.count(None).await.unwrap(), 1);
    first.close().await.unwrap();
    let again = EdgeStore::open(&path, 8).await.unwrap();
    assert_eq!(again.count(None).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_reopen_with_other_dimensions_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vectors");
    let store = EdgeStore::open(&path, 8).await.unwrap();
    store
        .upsert(vec![point(id(1), axis(8, 0), "a", "ns")])
        .await
        .unwrap();
    store.close().await.unwrap();

    let err = EdgeStore::open(&path, 16).await.unwrap_err();
    assert!(
        matches!(
            err,
            VectorError::Dimension {
                expected: 8,
                got: 16
            }
        ),
        "{err:?}"
    );
    // The refused open released the lock.
    EdgeStore::open(&path, 8).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Server backend only (against the fake)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_creates_collection_and_indexes_once() {
    let fake = FakeQdrant::start(None).await;
    let store = QdrantServerStore::connect(&fake.url, "kb", None, 8)
        .await
        .unwrap();
    store
        .upsert(vec![point(id(1), axis(8, 0), "a", "ns")])
        .await
        .unwrap();
    let calls = fake.calls();
    assert_eq!(
        calls,
        vec![
            "Qdrant/HealthCheck",
            "Collections/CollectionExists",
            "Collections/Create",
            "Collections/Get",
            "Points/CreateFieldIndex",
            "Points/CreateFieldIndex",
            "Points/Upsert",
        ]
    );
    drop(store);

    // Reconnecting finds the collection and its indexes: nothing is created again.
    let store = QdrantServerStore::connect(&fake.url, "kb", None, 8)
        .await
        .unwrap();
    assert_eq!(store.count(None).await.unwrap(), 1);
    let calls = fake.calls();
    assert_eq!(
        &calls[7..],
        &[
            "Qdrant/HealthCheck",
            "Collections/CollectionExists",
            "Collections/Get",
            "Points/Count",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_existing_collection_with_other_dimensions_is_an_error() {
    let fake = FakeQdrant::start(None).await;
    fake.create_collection("kb", 384);
    let err = QdrantServerStore::connect(&fake.url, "kb", None, 8)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VectorError::Dimension {
                expected: 384,
                got: 8
            }
        ),
        "{err:?}"
    );
    QdrantServerStore::connect(&fake.url, "kb", None, 384)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sends_the_api_key() {
    let fake = FakeQdrant::start(Some("s3cret")).await;
    let store = QdrantServerStore::connect(&fake.url, "kb", Some("s3cret"), 8)
        .await
        .unwrap();
    store
        .upsert(vec![point(id(1), axis(8, 0), "a", "ns")])
        .await
        .unwrap();
    assert_eq!(
        store.search(&axis(8, 0), 1, None).await.unwrap()[0].id,
        id(1)
    );

    let err = QdrantServerStore::connect(&fake.url, "kb", Some("wrong"), 8)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("API key"), "{err}");
    assert!(QdrantServerStore::connect(&fake.url, "kb", None, 8)
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_unreachable_is_unavailable() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = QdrantServerStore::connect(&format!("http://127.0.0.1:{port}"), "kb", None, 8)
        .await
        .unwrap_err();
    assert!(matches!(err, VectorError::Unavailable(_)), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Configuration and backend choice

#[test]
fn vector_config_defaults_and_rejects_unknown_keys() {
    use figment::providers::{Format, Toml};
    use figment::Figment;

    let config: VectorConfig = Figment::from(Toml::string("")).extract().unwrap();
    assert_eq!(config, VectorConfig::default());
    assert_eq!(config.collection, "frontdesk_kb");
    assert!(config.url.is_none());

    let config: VectorConfig = Figment::from(Toml::string(
        "url = \"http://qdrant:6334\"\napi_key = \"k\"",
    ))
    .extract()
    .unwrap();
    assert_eq!(config.url.as_deref(), Some("http://qdrant:6334"));
    assert_eq!(config.collection, "frontdesk_kb");
    assert_eq!(config.api_key.as_deref(), Some("k"));

    assert!(Figment::from(Toml::string("urll = \"x\""))
        .extract::<VectorConfig>()
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_chooses_the_backend() {
    let data_dir = tempfile::tempdir().unwrap();
    let store = vectors::open(&VectorConfig::default(), data_dir.path(), 8)
        .await
        .unwrap();
    store
        .upsert(vec![point(id(1), axis(8, 0), "a", "ns")])
        .await
        .unwrap();
    assert!(data_dir
        .path()
        .join("vectors")
        .join("frontdesk.lock")
        .exists());
    drop(store);

    let fake = FakeQdrant::start(None).await;
    let config = VectorConfig {
        url: Some(fake.url.clone()),
        collection: "custom".into(),
        api_key: None,
    };
    let store = vectors::open(&config, data_dir.path(), 8).await.unwrap();
    assert_eq!(store.count(None).await.unwrap(), 0);
    assert!(fake.calls().contains(&"Collections/Create".to_string()));
}
