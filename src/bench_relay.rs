//! `frontdesk bench relay`: the path between a customer and the agent who owns the conversation,
//! with no understanding on it. A gateway runs in this process on a temporary data directory (or
//! the PostgreSQL given); `--conversations` widget customers each get their conversation taken by
//! one of `--agents` logged-in agents. Then, per conversation in a closed loop:
//! - agent → customer: `POST /api/v1/conversations/{id}/messages` until the customer's widget
//!   socket shows the message (store, outbox, delivery to the socket);
//! - customer → agent: a widget message until the agent's console socket shows it (ingest, the
//!   router's ownership stage, the console feed).
//!
//! Prints messages/s and latency percentiles for each direction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Barrier};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::agents::{NewAgent, Role};
use crate::app::App;
use crate::bench::latency_ms;
use crate::config::Config;

#[derive(clap::Args)]
pub struct RelayArgs {
    /// Open conversations, each owned by an agent.
    #[arg(long, default_value_t = 1000)]
    pub conversations: usize,
    /// Agents sharing them (each gets conversations / agents).
    #[arg(long, default_value_t = 10)]
    pub agents: usize,
    /// Messages per conversation and direction.
    #[arg(long, default_value_t = 10)]
    pub messages: usize,
    /// Store in this PostgreSQL database instead of a temporary SQLite file.
    #[arg(long)]
    pub database_url: Option<String>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const PASSWORD: &str = "bench-password-1";

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let frame = ws.next().await.context("socket closed")??;
        if let Message::Text(t) = frame {
            return Ok(serde_json::from_str(&t)?);
        }
    }
}

pub async fn relay(args: RelayArgs, mut config: Config) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = tempfile::tempdir()?;
    config.data_dir = dir.path().to_path_buf();
    config.database.url = args.database_url.clone();
    config.webchat.rate_per_second = 1_000_000;
    config.webchat.rate_burst = 1_000_000;
    config.knowledge.enabled = false;
    config.nlu.enabled = false;
    config.console.logins_per_minute = 1_000_000;
    let backend = if args.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let app = App::build(config).await?;
    let store = app.state.store.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.serve(listener, shutdown.clone()));
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");

    // Agents, logged in (a bearer token each), with room for their share of conversations.
    let per_agent = args.conversations.div_ceil(args.agents.max(1)) as i64;
    let mut agents = Vec::new();
    for i in 0..args.agents.max(1) {
        let email = format!("agent{i}@bench.example");
        store
            .create_agent(&NewAgent {
                email: email.clone(),
                name: format!("Agent {i}"),
                password: PASSWORD.into(),
                role: Role::Agent,
                languages: vec![],
                teams: vec![],
                capacity: per_agent,
            })
            .await?;
        let v: Value = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({ "email": email, "password": PASSWORD }))
            .send()
            .await?
            .json()
            .await?;
        agents.push(v["token"].as_str().context("login token")?.to_string());
    }

    // Customers: a widget session and socket each, one message to open the conversation, then the
    // conversation is taken by its agent.
    eprintln!("opening {} conversations", args.conversations);
    let mut customers = Vec::new();
    for i in 0..args.conversations {
        let v: Value = http
            .post(format!("{base}/api/v1/widget/sessions"))
            .json(&json!({}))
            .send()
            .await?
            .json()
            .await?;
        let token = v["token"].as_str().context("widget token")?.to_string();
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/chat")).await?;
        ws.send(Message::text(
            json!({"type":"hello","token":token,"last_seq":0}).to_string(),
        ))
        .await?;
        let welcome = loop {
            let v = next_json(&mut ws).await?;
            if v["type"] == "welcome" {
                break v;
            }
        };
        let id = welcome["conversation_id"]
            .as_str()
            .context("conversation id")?
            .to_string();
        let agent = agents[i % agents.len()].clone();
        let resp = http
            .post(format!("{base}/api/v1/conversations/{id}/take"))
            .bearer_auth(&agent)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "take: {}", resp.status());
        customers.push((id, agent, ws));
    }

    // Each agent's console socket; frames are routed to the conversation's task.
    let mut routes: HashMap<String, mpsc::UnboundedSender<Value>> = HashMap::new();
    let mut inboxes = Vec::new();
    for (id, _, _) in &customers {
        let (tx, rx) = mpsc::unbounded_channel();
        routes.insert(id.clone(), tx);
        inboxes.push(rx);
    }
    let routes = Arc::new(routes);
    for token in &agents {
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws/console?token={token}"))
                .await?;
        ws.send(Message::text(json!({"type":"hello","after":0}).to_string()))
            .await?;
        let routes = routes.clone();
        tokio::spawn(async move {
            while let Ok(v) = next_json(&mut ws).await {
                if v["type"] == "message" {
                    if let Some(tx) = v["conversation_id"].as_str().and_then(|c| routes.get(c)) {
                        let _ = tx.send(v);
                    }
                }
            }
        });
    }
    // Let the takes' notices drain before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Start, end of the agent phase (= start of the customer phase), end.
    let barrier = Arc::new(Barrier::new(customers.len() + 1));
    let mut tasks = Vec::new();
    for ((id, agent, ws), inbox) in customers.into_iter().zip(inboxes) {
        let barrier = barrier.clone();
        let http = http.clone();
        let base = base.clone();
        let messages = args.messages;
        tasks.push(tokio::spawn(async move {
            conversation(id, agent, ws, inbox, http, base, messages, barrier).await
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    barrier.wait().await;
    let agent_phase = started.elapsed();
    barrier.wait().await;
    let customer_phase = started.elapsed() - agent_phase;
    let mut stored = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut to_customer = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut to_agent = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failures = 0;
    for t in tasks {
        match t.await? {
            Ok((s, a, b)) => {
                stored.add(s)?;
                to_customer.add(a)?;
                to_agent.add(b)?;
            }
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("conversation failed: {e:#}");
                }
            }
        }
    }
    println!(
        "bench relay: backend {backend}, {} open conversations, {} agents, {} messages per conversation each way ({failures} conversations failed)",
        args.conversations, args.agents, args.messages
    );
    println!(
        "  agent -> customer (REST reply until the widget socket shows it): {} messages, {:.0} messages/s; latency {}",
        to_customer.len(),
        to_customer.len() as f64 / agent_phase.as_secs_f64().max(1e-9),
        latency_ms(&to_customer)
    );
    println!(
        "    of which stored and queued (the REST answer, 201): {}",
        latency_ms(&stored)
    );
    println!(
        "  customer -> agent (widget message until the agent's console shows it): {} messages, {:.0} messages/s (phase {:.1} s); latency {}",
        to_agent.len(),
        to_agent.len() as f64 / customer_phase.as_secs_f64().max(1e-9),
        customer_phase.as_secs_f64(),
        latency_ms(&to_agent)
    );
    println!(
        "  machine: {} cores; clients and gateway in one process",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    Ok(())
}

/// One conversation: first the agent's messages, then (after every conversation finished that
/// phase) the customer's. Returns the latencies: reply stored (201), reply shown to the customer,
/// customer message shown to the agent.
#[allow(clippy::too_many_arguments)]
async fn conversation(
    id: String,
    agent: String,
    mut ws: Ws,
    mut inbox: mpsc::UnboundedReceiver<Value>,
    http: reqwest::Client,
    base: String,
    messages: usize,
    barrier: Arc<Barrier>,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>, Histogram<u64>)> {
    let mut stored = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut to_customer = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut to_agent = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    barrier.wait().await;
    let url = format!("{base}/api/v1/conversations/{id}/messages");
    for n in 0..messages {
        let text = format!("agent reply {n}");
        let sent = Instant::now();
        let resp = http
            .post(&url)
            .bearer_auth(&agent)
            .json(&json!({ "text": text }))
            .send()
            .await?;
        anyhow::ensure!(resp.status().as_u16() == 201, "reply: {}", resp.status());
        stored.record(sent.elapsed().as_micros() as u64)?;
        loop {
            let v = next_json(&mut ws).await?;
            if v["type"] == "message" && v["text"] == text.as_str() {
                break;
            }
        }
        to_customer.record(sent.elapsed().as_micros() as u64)?;
    }
    barrier.wait().await;
    while inbox.try_recv().is_ok() {}
    for n in 0..messages {
        let text = format!("customer message {n}");
        let sent = Instant::now();
        ws.send(Message::text(
            json!({"type":"message","client_id":format!("{id}-{n}"),"text":text}).to_string(),
        ))
        .await?;
        loop {
            let v = tokio::time::timeout(Duration::from_secs(60), inbox.recv())
                .await
                .context("no console frame in 60 s")?
                .context("console gone")?;
            if v["message"]["text"] == text.as_str() {
                break;
            }
        }
        to_agent.record(sent.elapsed().as_micros() as u64)?;
    }
    barrier.wait().await;
    let _ = ws.close(None).await;
    Ok((stored, to_customer, to_agent))
}
