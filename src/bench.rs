//! `frontdesk bench ...`: load generators that print throughput and latency percentiles.
//!
//! Benchmarks are not tests: nothing here asserts a speed. `bench ingest` starts a gateway in this
//! process (on a temporary data directory, or the PostgreSQL given), opens many widget sessions
//! over real WebSockets on 127.0.0.1 and measures how fast customer messages are acknowledged
//! (stored and numbered), with the bot answering each one as it would in production.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;

/// A benchmark client's WebSocket.
pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a benchmark client's socket with a small read buffer, as the gateway's (tungstenite
/// zero-fills its read buffer on every read; at the default 128 KiB the clients' own reads
/// dominated the profile).
pub(crate) async fn connect(url: &str) -> anyhow::Result<Ws> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(crate::http::SOCKET_READ_BUFFER);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false).await?;
    Ok(ws)
}

/// The fields of a widget frame the ingest client checks, read in place (no `Value` tree).
#[derive(serde::Deserialize)]
struct Reply<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    client_id: Option<std::borrow::Cow<'a, str>>,
}

/// A customer's message frame on `/ws/chat`, as the benchmark clients send it.
#[derive(serde::Serialize)]
pub(crate) struct Outgoing<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) text: &'a str,
}

fn message_frame(client_id: &str, n: usize) -> anyhow::Result<Message> {
    let text = format!("my internet is down, message {n}");
    Ok(Message::text(serde_json::to_string(&Outgoing {
        kind: "message",
        client_id,
        text: &text,
    })?))
}

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Widget sessions sending messages through /ws/chat into storage.
    Ingest(IngestArgs),
    /// Embedding throughput: one at a time and micro-batched, with 1 and 2 threads.
    Embed(EmbedArgs),
    /// The relay path between customers and the agents who own their conversations.
    Relay(crate::bench_relay::RelayArgs),
}

#[derive(clap::Args)]
pub struct EmbedArgs {
    /// Distinct customer messages to embed per run (taken from the evaluation sets).
    #[arg(long, default_value_t = 400)]
    pub messages: usize,
}

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Concurrent widget sessions.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Messages each session sends (each waits for the previous one's ack).
    #[arg(long, default_value_t = 20)]
    pub messages: usize,
    /// Messages per second each session sends without waiting for acks (open loop: the offered
    /// load is sessions x rate). 0: each message waits for the previous one's ack (closed loop:
    /// the maximum throughput).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Store in this PostgreSQL database instead of a temporary SQLite file.
    #[arg(long)]
    pub database_url: Option<String>,
}

pub async fn run(cmd: BenchCommand, config: Config) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest(args) => ingest(args, config).await,
        BenchCommand::Embed(args) => embed(args, config).await,
        BenchCommand::Relay(args) => crate::bench_relay::relay(args, config).await,
    }
}

async fn ingest(args: IngestArgs, mut config: Config) -> anyhow::Result<()> {
    // Each session needs two sockets in this process (client and server side).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = tempfile::tempdir()?;
    config.data_dir = dir.path().to_path_buf();
    config.database.url = args.database_url.clone();
    config.webchat.rate_per_second = 1_000_000;
    config.webchat.rate_burst = 1_000_000;
    // Ingest into storage is what is measured: the bot still answers every message, but without
    // the knowledge base, whose embedding (about 150 messages/s per core) is benchmarked apart.
    config.knowledge.enabled = false;
    let backend = if args.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };

    let app = App::build(config).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, shutdown.clone()));

    let http = reqwest::Client::new();
    let url = format!("http://{addr}/api/v1/widget/sessions");
    let tokens: Vec<String> = futures_util::stream::iter(0..args.sessions)
        .map(|_| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let v: serde_json::Value = http
                    .post(&url)
                    .json(&serde_json::json!({}))
                    .send()
                    .await?
                    .json()
                    .await?;
                v["token"]
                    .as_str()
                    .map(str::to_string)
                    .context("no token in session answer")
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<anyhow::Result<String>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    eprintln!("{} sessions created; connecting sockets", tokens.len());

    let barrier = Arc::new(Barrier::new(args.sessions + 1));
    let mut tasks = Vec::with_capacity(args.sessions);
    for (i, token) in tokens.into_iter().enumerate() {
        let barrier = barrier.clone();
        let ws_url = format!("ws://{addr}/ws/chat");
        let messages = args.messages;
        let rate = args.rate;
        tasks.push(tokio::spawn(async move {
            session(i, ws_url, token, messages, rate, barrier).await
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await?);
    }
    // Latencies are merged after the clock stops, not while other sessions are measured.
    let elapsed = started.elapsed();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failures = 0usize;
    for result in results {
        match result {
            Ok(latencies) => {
                for us in latencies {
                    hist.record(us)?;
                }
            }
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("session failed: {e:#}");
                }
            }
        }
    }
    let acked = hist.len();
    let mode = if args.rate > 0.0 {
        format!(
            "open loop, offered {:.0} messages/s",
            args.rate * args.sessions as f64
        )
    } else {
        "closed loop".to_string()
    };
    println!(
        "bench ingest: backend {backend}, {} sessions x {} messages over /ws/chat, {mode}",
        args.sessions, args.messages
    );
    println!("  acknowledged: {acked} messages in {:.2} s = {:.0} messages/s ({failures} sessions failed)",
        elapsed.as_secs_f64(), acked as f64 / elapsed.as_secs_f64());
    println!("  ack latency: {}", latency_ms(&hist));
    println!(
        "  machine: {} cores; client and server in one process",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Ok(())
}

/// "p50 …, p90 …, p99 …, max … ms" of a histogram recorded in microseconds.
pub(crate) fn latency_ms(hist: &Histogram<u64>) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(hist.value_at_quantile(0.50)),
        ms(hist.value_at_quantile(0.90)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.max())
    )
}

async fn session(
    index: usize,
    url: String,
    token: String,
    messages: usize,
    rate: f64,
    barrier: Arc<Barrier>,
) -> anyhow::Result<Vec<u64>> {
    // Latencies in µs: a histogram per session would zero-fill megabytes while others run.
    let mut latencies = Vec::with_capacity(messages);
    let mut ws = match connect(&url).await {
        Ok(ws) => ws,
        Err(e) => {
            barrier.wait().await;
            return Err(e);
        }
    };
    ws.send(Message::text(
        serde_json::json!({"type":"hello","token":token,"last_seq":0}).to_string(),
    ))
    .await?;
    barrier.wait().await;
    if rate > 0.0 {
        return open_loop(index, ws, messages, rate, latencies).await;
    }
    for n in 0..messages {
        let client_id = format!("{index}-{n}");
        let sent = Instant::now();
        ws.send(message_frame(&client_id, n)?).await?;
        loop {
            let frame = ws.next().await.context("socket closed before the ack")??;
            let Message::Text(text) = frame else { continue };
            let reply: Reply = serde_json::from_str(&text)?;
            match reply.kind.as_ref() {
                "ack" if reply.client_id.as_deref() == Some(client_id.as_str()) => break,
                "error" => anyhow::bail!("server error: {text}"),
                _ => {}
            }
        }
        latencies.push(sent.elapsed().as_micros() as u64);
    }
    let _ = ws.close(None).await;
    Ok(latencies)
}

/// Sends at a fixed pace (first message at a random offset, so sessions do not move in lockstep)
/// and times each message from its send to its ack.
async fn open_loop(
    index: usize,
    ws: Ws,
    messages: usize,
    rate: f64,
    mut latencies: Vec<u64>,
) -> anyhow::Result<Vec<u64>> {
    let (mut sink, mut stream) = ws.split();
    let sent: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let period = Duration::from_secs_f64(1.0 / rate);
    let offset = period.mul_f64(rand::random::<f64>());
    let sent_by_writer = sent.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(offset).await;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for n in 0..messages {
            tick.tick().await;
            let client_id = format!("{index}-{n}");
            let frame = message_frame(&client_id, n)?;
            sent_by_writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(client_id, Instant::now());
            sink.send(frame).await?;
        }
        anyhow::Ok(sink)
    });
    let mut acked = 0;
    while acked < messages {
        let frame = stream
            .next()
            .await
            .context("socket closed before all acks")??;
        let Message::Text(text) = frame else { continue };
        let reply: Reply = serde_json::from_str(&text)?;
        match reply.kind.as_ref() {
            "ack" => {
                let id = reply.client_id.as_deref().unwrap_or_default();
                let started = sent.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
                if let Some(t) = started {
                    latencies.push(t.elapsed().as_micros() as u64);
                    acked += 1;
                }
            }
            "error" => anyhow::bail!("server error: {text}"),
            _ => {}
        }
    }
    let mut sink = writer.await??;
    let _ = sink.close().await;
    Ok(latencies)
}

/// Customer-like texts in four languages from the labelled sets (no cache hits: all distinct).
fn sample_texts(n: usize) -> anyhow::Result<Vec<String>> {
    let mut texts = Vec::new();
    for file in ["tests/data/kb-eval.jsonl", "tests/data/kb-tune.jsonl"] {
        for q in crate::knowledge::eval::read_queries(std::path::Path::new(file))? {
            texts.push(q.text);
        }
    }
    texts.sort();
    texts.dedup();
    anyhow::ensure!(
        !texts.is_empty(),
        "no sample texts found (run from the repository root)"
    );
    let mut out = Vec::with_capacity(n);
    let mut round = 0;
    while out.len() < n {
        for t in &texts {
            if out.len() == n {
                break;
            }
            // Later rounds get a suffix so every text is new to the cache.
            out.push(if round == 0 {
                t.clone()
            } else {
                format!("{t} ({round})")
            });
        }
        round += 1;
    }
    Ok(out)
}

async fn embed(args: EmbedArgs, config: Config) -> anyhow::Result<()> {
    let dir = config.embedding.resolve_model_dir(&config.data_dir);
    crate::models::ensure(&dir)?;
    let texts = sample_texts(args.messages)?;
    println!(
        "bench embed: multilingual-e5-small, {} distinct messages per run",
        texts.len()
    );
    for threads in [1usize, 2] {
        for batched in [false, true] {
            let mut cfg = config.embedding.clone();
            cfg.threads = threads;
            cfg.max_batch = if batched { 32 } else { 1 };
            let embedder = crate::embed::Embedder::load(&dir, &cfg)?;
            // Warm-up outside the measurement.
            embedder.embed(crate::embed::Kind::Query, "warm up").await?;
            let started = Instant::now();
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            if batched {
                // Everyone asks at once: the service forms batches of up to 32.
                let futures = texts.iter().map(|t| {
                    let e = embedder.clone();
                    async move {
                        let t0 = Instant::now();
                        e.embed(crate::embed::Kind::Query, t)
                            .await
                            .map(|_| t0.elapsed())
                    }
                });
                for d in futures_util::future::try_join_all(futures).await? {
                    hist.record(d.as_micros() as u64)?;
                }
            } else {
                for t in &texts {
                    let t0 = Instant::now();
                    embedder.embed(crate::embed::Kind::Query, t).await?;
                    hist.record(t0.elapsed().as_micros() as u64)?;
                }
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "  {} thread(s), {:<13} {:>7.1} messages/s   latency p50 {:>7.2} ms, p99 {:>7.2} ms",
                threads,
                if batched { "batched (32):" } else { "one at a time:" },
                texts.len() as f64 / secs,
                hist.value_at_quantile(0.5) as f64 / 1000.0,
                hist.value_at_quantile(0.99) as f64 / 1000.0
            );
        }
    }
    Ok(())
}
