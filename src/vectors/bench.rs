//! Vector store load generator: upsert throughput and search latency percentiles on random data.
//!
//! Shared by the `vector_search` bench target (`cargo bench --bench vector_search`) and, later,
//! `frontdesk bench`. Like the rest of the benchmarks it asserts nothing: it measures and reports.

use std::fmt;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map};

use super::{Match, Point, ScoredPoint, VectorError, VectorStore};

/// Points per upsert call.
pub const UPSERT_BATCH: usize = 500;
/// Namespaces the random points are spread over (the filtered searches use one of them).
pub const NAMESPACES: usize = 8;
/// Results per search.
pub const TOP_K: usize = 10;
/// Queries compared for recall after `optimize()`.
pub const RECALL_QUERIES: usize = 100;

/// Latency percentiles of one series of sequential searches.
#[derive(Debug, Clone, Copy)]
pub struct LatencyStats {
    pub queries: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl fmt::Display for LatencyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} queries, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, mean {:.3} ms",
            self.queries,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            ms(self.mean)
        )
    }
}

/// What [`search_benchmark`] measured.
#[derive(Debug, Clone)]
pub struct SearchBenchReport {
    pub points: usize,
    pub dims: usize,
    pub upsert: Duration,
    /// Top-10 searches without a filter, before `optimize()` (brute force over appendable
    /// segments).
    pub search_before: LatencyStats,
    /// Same, filtered on one namespace (1/8 of the points).
    pub filtered_before: LatencyStats,
    pub optimize: Duration,
    pub search_after: LatencyStats,
    pub filtered_after: LatencyStats,
    /// Share of the exact top-10 (brute force, before `optimize()`) that the indexed search
    /// still returns afterwards, over the first [`RECALL_QUERIES`] queries.
    pub recall_after: f64,
}

impl SearchBenchReport {
    pub fn upsert_per_sec(&self) -> f64 {
        self.points as f64 / self.upsert.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for SearchBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "upsert: {} points x {} dims in {:.2} s ({:.0} points/s, batches of {UPSERT_BATCH})",
            self.points,
            self.dims,
            self.upsert.as_secs_f64(),
            self.upsert_per_sec()
        )?;
        writeln!(
            f,
            "search top-{TOP_K} before optimize:          {}",
            self.search_before
        )?;
        writeln!(
            f,
            "search top-{TOP_K} before optimize, filtered: {}",
            self.filtered_before
        )?;
        writeln!(f, "optimize: {:.2} s", self.optimize.as_secs_f64())?;
        writeln!(
            f,
            "search top-{TOP_K} after optimize:           {}",
            self.search_after
        )?;
        writeln!(
            f,
            "search top-{TOP_K} after optimize, filtered:  {}",
            self.filtered_after
        )?;
        write!(
            f,
            "recall@{TOP_K} after optimize (vs exact search before): {:.3}",
            self.recall_after
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A random vector with components in [-1, 1].
pub fn random_vector(rng: &mut impl Rng, dims: usize) -> Vec<f32> {
    (0..dims).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Point `i` of the synthetic data set: 4 points per article, articles spread over namespaces.
pub fn random_point(rng: &mut impl Rng, i: usize, dims: usize) -> Point {
    let mut payload = Map::new();
    payload.insert("article_id".into(), json!(format!("article-{}", i / 4)));
    payload.insert(
        "namespace".into(),
        json!(format!("ns-{}", (i / 4) % NAMESPACES)),
    );
    payload.insert("chunk".into(), json!(i % 4));
    Point {
        id: uuid::Uuid::from_u128(rng.random()),
        vector: random_vector(rng, dims),
        payload,
    }
}

/// The fixed query set used for every measurement (same seed, same queries).
pub fn query_set(dims: usize, queries: usize) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    (0..queries)
        .map(|_| random_vector(&mut rng, dims))
        .collect()
}

/// Runs the queries one after another and records each latency.
pub async fn measure_search(
    store: &dyn VectorStore,
    queries: &[Vec<f32>],
    filter: Option<Match>,
) -> Result<LatencyStats, VectorError> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| VectorError::Backend(e.to_string()))?;
    let mut total = Duration::ZERO;
    for q in queries {
        let started = Instant::now();
        let found = store.search(q, TOP_K, filter.clone()).await?;
        let elapsed = started.elapsed();
        std::hint::black_box(found);
        total += elapsed;
        hist.saturating_record(elapsed.as_micros().max(1) as u64);
    }
    let n = queries.len().max(1) as u32;
    Ok(LatencyStats {
        queries: hist.len(),
        p50: Duration::from_micros(hist.value_at_quantile(0.50)),
        p99: Duration::from_micros(hist.value_at_quantile(0.99)),
        max: Duration::from_micros(hist.max()),
        mean: total / n,
    })
}

/// Top-10 results of each query, for comparing two states of a store.
pub async fn snapshot_results(
    store: &dyn VectorStore,
    queries: &[Vec<f32>],
) -> Result<Vec<Vec<ScoredPoint>>, VectorError> {
    let mut all = Vec::with_capacity(queries.len());
    for q in queries {
        all.push(store.search(q, TOP_K, None).await?);
    }
    Ok(all)
}

/// Loads `n_points` random `dims`-dimensional points (seeded, reproducible) into an empty store,
/// then measures `queries` sequential top-10 searches, unfiltered and filtered on one namespace,
/// before and after `optimize()`.
pub async fn search_benchmark(
    store: &dyn VectorStore,
    n_points: usize,
    dims: usize,
    queries: usize,
) -> Result<SearchBenchReport, VectorError> {
    let mut rng = StdRng::seed_from_u64(0x5eed_0000);
    // Only the upsert calls are timed, not generating the random points.
    let mut upsert = Duration::ZERO;
    let mut i = 0;
    while i < n_points {
        let end = (i + UPSERT_BATCH).min(n_points);
        let batch = (i..end).map(|i| random_point(&mut rng, i, dims)).collect();
        let started = Instant::now();
        store.upsert(batch).await?;
        upsert += started.elapsed();
        i = end;
    }

    let queries = query_set(dims, queries);
    let ns = || Some(Match::new("namespace", "ns-3"));
    let search_before = measure_search(store, &queries, None).await?;
    let filtered_before = measure_search(store, &queries, ns()).await?;
    let sample = &queries[..queries.len().min(RECALL_QUERIES)];
    let exact = snapshot_results(store, sample).await?;

    let started = Instant::now();
    store.optimize().await?;
    let optimize = started.elapsed();

    let search_after = measure_search(store, &queries, None).await?;
    let filtered_after = measure_search(store, &queries, ns()).await?;
    let approx = snapshot_results(store, sample).await?;
    let (mut found, mut total) = (0usize, 0usize);
    for (exact, approx) in exact.iter().zip(&approx) {
        total += exact.len();
        found += exact
            .iter()
            .filter(|e| approx.iter().any(|a| a.id == e.id))
            .count();
    }
    let recall_after = found as f64 / total.max(1) as f64;
    Ok(SearchBenchReport {
        points: n_points,
        dims,
        upsert,
        search_before,
        filtered_before,
        optimize,
        search_after,
        filtered_after,
        recall_after,
    })
}
