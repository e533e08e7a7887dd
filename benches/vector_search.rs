//! Qdrant Edge search benchmark (not a test): `cargo bench --bench vector_search`.
//!
//! 100,000 random 384-dimensional points by default; override with
//! `FRONTDESK_BENCH_POINTS`, `FRONTDESK_BENCH_DIMS`, `FRONTDESK_BENCH_QUERIES`. Reports upsert
//! throughput, top-10 search latency p50/p99 before and after `optimize()`, and the time to reopen
//! the shard from disk (checking that reopened results are identical).

use std::time::Instant;

use frontdesk::vectors::bench::{measure_search, query_set, search_benchmark, snapshot_results};
use frontdesk::vectors::{EdgeStore, VectorStore};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing to parse.
    let points = env_usize("FRONTDESK_BENCH_POINTS", 100_000);
    let dims = env_usize("FRONTDESK_BENCH_DIMS", 384);
    let queries = env_usize("FRONTDESK_BENCH_QUERIES", 1_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("vectors");
    println!(
        "vector_search: Qdrant Edge, {points} points x {dims} dims, {queries} queries, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let store = EdgeStore::open(&path, dims).await?;
    let report = search_benchmark(&store, points, dims, queries).await?;
    println!("{report}");

    let check = query_set(dims, 50);
    let before = snapshot_results(&store, &check).await?;
    store.close().await?;

    let started = Instant::now();
    let store = EdgeStore::open(&path, dims).await?;
    let reopen = started.elapsed();
    let count = store.count(None).await?;
    let after = snapshot_results(&store, &check).await?;
    println!(
        "reopen: {:.3} s, {count} points, results {}",
        reopen.as_secs_f64(),
        if before == after {
            "identical"
        } else {
            "DIFFERENT"
        }
    );
    let queries = query_set(dims, queries);
    println!(
        "search top-10 after reopen:              {}",
        measure_search(&store, &queries, None).await?
    );
    store.close().await?;
    Ok(())
}
