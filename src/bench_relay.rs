//! `frontdesk bench relay`: the path between a customer and the agent who owns the conversation,
//! with no understanding on it. A gateway runs in this process on a temporary data directory (or
//! the PostgreSQL given); `--conversations` widget customers each get their conversation taken by
//! one of `--agents` logged-in agents. Then, per conversation in a closed loop:
//! - agent → customer: a reply frame on the agent's console socket, as the console sends it (or
//!   with `--replies rest`, `POST /api/v1/conversations/{id}/messages`), until the customer's
//!   widget socket shows the message (store, outbox, delivery to the socket);
//! - customer → agent: a widget message until the agent's console socket shows it (ingest, the
//!   router's ownership stage, the console feed).
//!
//! With `--separate-process`, the gateway runs as a `frontdesk serve` child instead, and the CPU
//! each process used per message is printed apart: the gateway's own cost, without the clients'.
//!
//! Prints messages/s and latency percentiles for each direction. With `--rate`, the messages are
//! sent on a fixed schedule instead (the offered load, spread over the conversations), and each
//! latency counts from the message's scheduled time, so a slow answer that delays the next message
//! is charged to it as well (no coordinated omission).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
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
use crate::bench::{connect, latency_ms, Outgoing, Ws};
use crate::config::Config;
use crate::store::Store;

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
    /// Messages per second offered in each direction, over all conversations (0: closed loop, each
    /// conversation sends its next message as soon as the previous one arrived).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Store in this PostgreSQL database instead of a temporary SQLite file.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Run the gateway as a child process (`frontdesk serve`) instead of in this one, so the CPU
    /// it uses per message is measured apart from the clients'.
    #[arg(long)]
    pub separate_process: bool,
    /// How agents send replies: over their console socket, as the console does, or as REST
    /// requests, as an integration does.
    #[arg(long, value_enum, default_value_t = ReplyPath::Socket)]
    pub replies: ReplyPath,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplyPath {
    Socket,
    Rest,
}

/// What an agent's console socket shows about one conversation.
enum Routed {
    /// A customer's message, by its text.
    Customer(String),
    /// The answer to a reply: stored, or refused with this message.
    Answered(Result<(), String>),
}

const PASSWORD: &str = "bench-password-1";

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let frame = ws.next().await.context("socket closed")??;
        if let Message::Text(t) = frame {
            return Ok(serde_json::from_str(&t)?);
        }
    }
}

/// The few fields of a frame the measured loops look at. Parsed in place instead of into a
/// `Value` (a map per object): the clients share the two cores with the gateway, and building
/// every frame as a tree was most of their own cost.
#[derive(serde::Deserialize)]
struct Seen<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    conversation_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<SeenMessage<'a>>,
    /// A reply's answer (`sent`): the conversation id, '/', the reply's number.
    #[serde(default, borrow, rename = "ref")]
    reference: Option<Cow<'a, str>>,
}

/// A refused reply (its `message` is text, not a message object as in `Seen`).
#[derive(serde::Deserialize)]
struct Refusal {
    #[serde(rename = "ref")]
    reference: String,
    message: String,
}

#[derive(serde::Deserialize)]
struct SeenMessage<'a> {
    #[serde(borrow)]
    author: Cow<'a, str>,
    #[serde(borrow)]
    text: Cow<'a, str>,
}

#[derive(serde::Serialize)]
struct Text<'a> {
    text: &'a str,
}

/// Waits for the widget socket to show a message with this text.
async fn until_text(ws: &mut Ws, text: &str) -> anyhow::Result<()> {
    loop {
        let frame = ws.next().await.context("socket closed")??;
        if let Message::Text(t) = frame {
            let seen: Seen = serde_json::from_str(&t)?;
            if seen.kind == "message" && seen.text.as_deref() == Some(text) {
                return Ok(());
            }
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
    let http = reqwest::Client::new();
    let (gateway, store, addr) = if args.separate_process {
        Gateway::child(&config, &http).await?
    } else {
        Gateway::in_process(config).await?
    };
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
        let mut ws = connect(&format!("ws://{addr}/ws/chat")).await?;
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

    // Each agent's console socket: what it shows about a conversation is routed to the
    // conversation's task, and the tasks' reply frames go out through it.
    let mut routes: HashMap<String, mpsc::UnboundedSender<Routed>> = HashMap::new();
    let mut inboxes = Vec::new();
    for (id, _, _) in &customers {
        let (tx, rx) = mpsc::unbounded_channel();
        routes.insert(id.clone(), tx);
        inboxes.push(rx);
    }
    let routes = Arc::new(routes);
    let mut consoles = HashMap::new();
    for token in &agents {
        let mut ws = connect(&format!("ws://{addr}/ws/console?token={token}")).await?;
        ws.send(Message::text(json!({"type":"hello","after":0}).to_string()))
            .await?;
        let (mut sink, mut stream) = ws.split();
        let (console, mut outgoing) = mpsc::unbounded_channel::<String>();
        consoles.insert(token.clone(), console);
        tokio::spawn(async move {
            // The frames waiting go out in one write.
            while let Some(first) = outgoing.recv().await {
                let mut frame = Some(first);
                while let Some(f) = frame.take() {
                    if sink.feed(Message::text(f)).await.is_err() {
                        return;
                    }
                    frame = outgoing.try_recv().ok();
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        });
        let routes = routes.clone();
        tokio::spawn(async move {
            let route = |reference: &str, answer: Result<(), String>| {
                let id = reference.split_once('/').map_or(reference, |(id, _)| id);
                if let Some(tx) = routes.get(id) {
                    let _ = tx.send(Routed::Answered(answer));
                }
            };
            // Customers' messages and the replies' answers: the console also shows the agent's
            // own replies.
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(t) = frame else { continue };
                let Ok(seen) = serde_json::from_str::<Seen>(&t) else {
                    if let Ok(refusal) = serde_json::from_str::<Refusal>(&t) {
                        route(&refusal.reference, Err(refusal.message));
                    }
                    continue;
                };
                match (seen.kind.as_ref(), seen.conversation_id, seen.message) {
                    ("message", Some(id), Some(message)) if message.author == "customer" => {
                        if let Some(tx) = routes.get(id.as_ref()) {
                            let _ = tx.send(Routed::Customer(message.text.into_owned()));
                        }
                    }
                    ("sent", _, _) => route(seen.reference.as_deref().unwrap_or_default(), Ok(())),
                    _ => {}
                }
            }
        });
    }
    // Let the takes' notices drain before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Start, end of the agent phase (= start of the customer phase), end.
    let barrier = Arc::new(Barrier::new(customers.len() + 1));
    let mut tasks = Vec::new();
    let count = customers.len();
    for (i, ((id, token, ws), inbox)) in customers.into_iter().zip(inboxes).enumerate() {
        let barrier = barrier.clone();
        let agent = AgentLink {
            console: consoles.get(&token).context("agent's console")?.clone(),
            token,
            http: http.clone(),
            base: base.clone(),
            replies: args.replies,
        };
        let plan = Plan {
            messages: args.messages,
            schedule: schedule(args.rate, count, i),
        };
        tasks.push(tokio::spawn(async move {
            conversation(id, agent, ws, inbox, plan, barrier).await
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let cpu_before = gateway.cpu();
    let batches_before = WriterBatches::read(&gateway.metrics(&http, &base).await?);
    eprintln!("measuring: agent -> customer");
    barrier.wait().await;
    let agent_phase = started.elapsed();
    let cpu_between = gateway.cpu();
    let batches_between = WriterBatches::read(&gateway.metrics(&http, &base).await?);
    eprintln!("measuring: customer -> agent");
    barrier.wait().await;
    let customer_phase = started.elapsed() - agent_phase;
    let cpu_after = gateway.cpu();
    let batches_after = WriterBatches::read(&gateway.metrics(&http, &base).await?);
    let mut stored = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut to_customer = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut to_agent = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failures = 0;
    for t in tasks {
        match t.await? {
            Ok(l) => {
                for (hist, micros) in [
                    (&mut stored, l.stored),
                    (&mut to_customer, l.to_customer),
                    (&mut to_agent, l.to_agent),
                ] {
                    for us in micros {
                        hist.record(us)?;
                    }
                }
            }
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("conversation failed: {e:#}");
                }
            }
        }
    }
    let mode = if args.rate > 0.0 {
        format!("open loop, offered {:.0} messages/s each way", args.rate)
    } else {
        "closed loop".to_string()
    };
    println!(
        "bench relay: backend {backend}, {} open conversations, {} agents, {} messages per conversation each way, {mode} ({failures} conversations failed)",
        args.conversations, args.agents, args.messages
    );
    let how = match args.replies {
        ReplyPath::Socket => "reply on the console socket",
        ReplyPath::Rest => "REST reply",
    };
    println!(
        "  agent -> customer ({how} until the widget socket shows it): {} messages, {:.0} messages/s; latency {}",
        to_customer.len(),
        to_customer.len() as f64 / agent_phase.as_secs_f64().max(1e-9),
        latency_ms(&to_customer)
    );
    println!(
        "    of which stored and queued (its answer: `sent`, or 201): {}",
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
        "  writers' batches, agent phase: {}",
        batches_between.since(&batches_before, agent_phase)
    );
    println!(
        "  writers' batches, customer phase: {}",
        batches_after.since(&batches_between, customer_phase)
    );
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for (phase, before, after, messages) in [
        ("agent phase", cpu_before, cpu_between, to_customer.len()),
        ("customer phase", cpu_between, cpu_after, to_agent.len()),
    ] {
        println!(
            "  CPU, {phase}: {}",
            after.since(&before, messages, cores, args.separate_process)
        );
    }
    println!(
        "  machine: {cores} cores; {}",
        if args.separate_process {
            "the gateway in a child process, the clients in this one"
        } else {
            "clients and gateway in one process"
        }
    );
    gateway.stop().await;
    Ok(())
}

/// The gateway under test: in this process, or a `frontdesk serve` child of it.
enum Gateway {
    InProcess {
        server: tokio::task::JoinHandle<anyhow::Result<()>>,
        shutdown: CancellationToken,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    },
    Child(ChildGateway),
}

impl Gateway {
    async fn in_process(config: Config) -> anyhow::Result<(Self, Store, SocketAddr)> {
        let app = App::build(config).await?;
        let store = app.state.store.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.serve(listener, shutdown.clone()));
        let metrics = crate::metrics::install()?;
        Ok((
            Self::InProcess {
                server,
                shutdown,
                metrics,
            },
            store,
            addr,
        ))
    }

    /// Starts `frontdesk serve` (this executable) with the same settings, written to a config file
    /// in the data directory, and waits until it answers `/readyz`.
    async fn child(
        config: &Config,
        http: &reqwest::Client,
    ) -> anyhow::Result<(Self, Store, SocketAddr)> {
        // A free port: the child binds it a moment later.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut settings = config.clone();
        settings.log.filter = "warn".into();
        let file = config.data_dir.join("bench-relay.toml");
        std::fs::write(&file, toml::to_string(&settings)?)?;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command
            .arg("--config")
            .arg(&file)
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .env_remove("RUST_LOG");
        let mut child = ChildGateway(command.spawn().context("starting `frontdesk serve`")?);
        let ready = format!("http://{addr}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.0.try_wait()? {
                anyhow::bail!("`frontdesk serve` exited before it was ready: {status}");
            }
            if http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("`frontdesk serve` was not ready on {addr} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The child applied the migrations; this connection only adds the agents.
        let store = Store::open(&config.database_url(), 2).await?;
        Ok((Self::Child(child), store, addr))
    }

    /// The gateway's Prometheus rendering.
    async fn metrics(&self, http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
        match self {
            Self::InProcess { metrics, .. } => Ok(metrics.render()),
            Self::Child(_) => Ok(http
                .get(format!("{base}/metrics"))
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?),
        }
    }

    /// CPU time used so far by the gateway's process and by this one (the same when in process).
    fn cpu(&self) -> CpuTimes {
        let gateway = match self {
            Self::InProcess { .. } => "self".to_string(),
            Self::Child(child) => child.0.id().to_string(),
        };
        CpuTimes {
            gateway: cpu_seconds(&gateway),
            clients: cpu_seconds("self"),
        }
    }

    async fn stop(self) {
        match self {
            Self::InProcess {
                server, shutdown, ..
            } => {
                shutdown.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
            }
            Self::Child(child) => drop(child),
        }
    }
}

/// The `frontdesk serve` child, stopped when dropped: also when the benchmark fails half-way.
struct ChildGateway(std::process::Child);

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) of the gateway's process and of this one, at one moment.
#[derive(Clone, Copy, Default)]
struct CpuTimes {
    gateway: Option<f64>,
    clients: Option<f64>,
}

impl CpuTimes {
    /// "gateway 212 µs per message, 1.63 of 2 cores; clients ..." between `before` and now.
    fn since(&self, before: &Self, messages: u64, cores: usize, separate: bool) -> String {
        let per_message = |now: Option<f64>, was: Option<f64>| {
            let used = now? - was?;
            Some(used * 1e6 / messages.max(1) as f64)
        };
        let Some(gateway) = per_message(self.gateway, before.gateway) else {
            return "not available (no /proc)".to_string();
        };
        if !separate {
            return format!(
                "{gateway:.0} µs per message, gateway and clients together (at that cost, {cores} cores carry at most {:.0} messages/s)",
                cores as f64 * 1e6 / gateway.max(1e-9)
            );
        }
        let clients = per_message(self.clients, before.clients).unwrap_or(f64::NAN);
        format!(
            "gateway {gateway:.0} µs per message (at that cost, {cores} cores of its own carry at most {:.0} messages/s), clients {clients:.0} µs",
            cores as f64 * 1e6 / gateway.max(1e-9)
        )
    }
}

/// User + system CPU seconds of process `pid` ("self" for this one), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start with the state, field 3;
    // utime and stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// When a conversation sends: every `period`, starting `offset` after its phase began; `None` in a
/// closed loop.
#[derive(Clone, Copy)]
struct Schedule {
    period: Duration,
    offset: Duration,
}

struct Plan {
    messages: usize,
    schedule: Option<Schedule>,
}

/// Conversation `index` of `count` sharing an offered `rate` (messages/s): each sends every
/// `count / rate` seconds, the conversations evenly staggered over that period.
fn schedule(rate: f64, count: usize, index: usize) -> Option<Schedule> {
    (rate > 0.0).then(|| {
        let period = Duration::from_secs_f64(count as f64 / rate);
        Schedule {
            period,
            offset: period.mul_f64(index as f64 / count.max(1) as f64),
        }
    })
}

/// When message `n` counts as sent: now in a closed loop, else its scheduled time (after
/// waiting for it).
async fn send_time(schedule: Option<Schedule>, phase: Instant, n: usize) -> Instant {
    match schedule {
        None => Instant::now(),
        Some(s) => {
            let at = phase + s.offset + s.period * n as u32;
            tokio::time::sleep_until(at.into()).await;
            at
        }
    }
}

/// One conversation's latencies (µs), merged into histograms at the end (a histogram per
/// conversation would zero-fill hundreds of megabytes while the others are measured).
#[derive(Default)]
struct Latencies {
    stored: Vec<u64>,
    to_customer: Vec<u64>,
    to_agent: Vec<u64>,
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// One conversation: first the agent's messages, then (after every conversation finished that
/// phase) the customer's. Returns the latencies: reply stored (201), reply shown to the customer,
/// customer message shown to the agent.
#[allow(clippy::too_many_arguments)]
/// How a conversation's task sends its agent's replies.
struct AgentLink {
    token: String,
    /// Frames for the agent's console socket.
    console: mpsc::UnboundedSender<String>,
    http: reqwest::Client,
    base: String,
    replies: ReplyPath,
}

impl AgentLink {
    /// Sends the reply and waits for its answer (stored and queued for delivery).
    async fn reply(
        &self,
        id: &str,
        n: usize,
        text: &str,
        inbox: &mut mpsc::UnboundedReceiver<Routed>,
    ) -> anyhow::Result<()> {
        if self.replies == ReplyPath::Rest {
            let resp = self
                .http
                .post(format!("{}/api/v1/conversations/{id}/messages", self.base))
                .bearer_auth(&self.token)
                .json(&Text { text })
                .send()
                .await?;
            anyhow::ensure!(resp.status().as_u16() == 201, "reply: {}", resp.status());
            return Ok(());
        }
        let frame = json!({ "type": "reply", "conversation_id": id, "text": text, "ref": format!("{id}/{n}") });
        self.console
            .send(frame.to_string())
            .ok()
            .context("console socket gone")?;
        loop {
            let routed = tokio::time::timeout(Duration::from_secs(60), inbox.recv())
                .await
                .context("no answer to a reply in 60 s")?
                .context("console gone")?;
            if let Routed::Answered(answer) = routed {
                return answer.map_err(|m| anyhow::anyhow!("reply refused: {m}"));
            }
        }
    }
}

async fn conversation(
    id: String,
    agent: AgentLink,
    mut ws: Ws,
    mut inbox: mpsc::UnboundedReceiver<Routed>,
    plan: Plan,
    barrier: Arc<Barrier>,
) -> anyhow::Result<Latencies> {
    let Plan { messages, schedule } = plan;
    let mut l = Latencies::default();
    barrier.wait().await;
    let phase = Instant::now();
    for n in 0..messages {
        let text = format!("agent reply {n}");
        let sent = send_time(schedule, phase, n).await;
        agent.reply(&id, n, &text, &mut inbox).await?;
        l.stored.push(micros(sent));
        until_text(&mut ws, &text).await?;
        l.to_customer.push(micros(sent));
    }
    barrier.wait().await;
    while inbox.try_recv().is_ok() {}
    let phase = Instant::now();
    for n in 0..messages {
        let text = format!("customer message {n}");
        let sent = send_time(schedule, phase, n).await;
        let frame = Outgoing {
            kind: "message",
            client_id: &format!("{id}-{n}"),
            text: &text,
        };
        ws.send(Message::text(serde_json::to_string(&frame)?))
            .await?;
        loop {
            let routed = tokio::time::timeout(Duration::from_secs(60), inbox.recv())
                .await
                .context("no console frame in 60 s")?
                .context("console gone")?;
            if matches!(routed, Routed::Customer(shown) if shown == text) {
                break;
            }
        }
        l.to_agent.push(micros(sent));
    }
    barrier.wait().await;
    let _ = ws.close(None).await;
    Ok(l)
}

/// The writers' batch histograms (`frontdesk_*_batch_size` and `_batch_seconds`), read from the
/// Prometheus rendering: a run shows how much each writer grouped and how busy it was.
#[derive(Default)]
struct WriterBatches(std::collections::BTreeMap<String, Writer>);

/// One writer's totals so far, from its histograms.
#[derive(Default, Clone, Copy)]
struct Writer {
    jobs: f64,
    batches: f64,
    seconds: f64,
}

impl WriterBatches {
    fn read(rendered: &str) -> Self {
        let mut sizes = Self::default();
        for line in rendered.lines() {
            let Some((name, value)) = line.split_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let Some(rest) = name.strip_prefix("frontdesk_") else {
                continue;
            };
            if let Some(writer) = rest.strip_suffix("_batch_size_sum") {
                sizes.0.entry(writer.to_string()).or_default().jobs = value;
            } else if let Some(writer) = rest.strip_suffix("_batch_size_count") {
                sizes.0.entry(writer.to_string()).or_default().batches = value;
            } else if let Some(writer) = rest.strip_suffix("_batch_seconds_sum") {
                sizes.0.entry(writer.to_string()).or_default().seconds = value;
            }
        }
        sizes
    }

    /// "reply 41.2 per batch, 12.3 ms, busy 97% (243 batches), ..." for the writers that ran
    /// since `before`, over a phase of `phase`.
    fn since(&self, before: &Self, phase: Duration) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .filter_map(|(name, now)| {
                let was = before.0.get(name).copied().unwrap_or_default();
                let batches = now.batches - was.batches;
                let seconds = now.seconds - was.seconds;
                (batches > 0.0).then(|| {
                    format!(
                        "{name} {:.1} per batch, {:.1} ms, busy {:.0}% ({batches} batches)",
                        (now.jobs - was.jobs) / batches,
                        seconds * 1000.0 / batches,
                        100.0 * seconds / phase.as_secs_f64().max(1e-9)
                    )
                })
            })
            .collect();
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_figures_are_the_difference_between_two_readings() {
        let before = WriterBatches::read(
            "frontdesk_reply_batch_size_sum 100\nfrontdesk_reply_batch_size_count 10\n\
             frontdesk_reply_batch_seconds_sum 0.5\nfrontdesk_other_metric 3\n",
        );
        let after = WriterBatches::read(
            "# TYPE frontdesk_reply_batch_size summary\nfrontdesk_reply_batch_size_sum 400\n\
             frontdesk_reply_batch_size_count 20\nfrontdesk_reply_batch_seconds_sum 1.5\n\
             frontdesk_ingest_batch_size_sum 8\nfrontdesk_ingest_batch_size_count 2\n\
             frontdesk_ingest_batch_seconds_sum 0.01\n",
        );
        assert_eq!(
            after.since(&before, Duration::from_secs(2)),
            "ingest 4.0 per batch, 5.0 ms, busy 0% (2 batches); \
             reply 30.0 per batch, 100.0 ms, busy 50% (10 batches)"
        );
        assert_eq!(after.since(&after, Duration::from_secs(2)), "none");
    }

    /// The child gateway gets the benchmark's settings through a config file: every field must
    /// survive the trip (a field TOML cannot write would stop the child from starting).
    #[test]
    fn the_childs_config_file_reads_back_as_the_benchmarks_settings() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        config.database.url = Some("postgres://bench@127.0.0.1:5432/relay".into());
        config.webchat.rate_per_second = 1_000_000;
        config.knowledge.enabled = false;
        config.nlu.enabled = false;
        config.console.logins_per_minute = 1_000_000;
        let file = dir.path().join("bench-relay.toml");
        std::fs::write(&file, toml::to_string(&config).expect("to TOML")).expect("write");
        let read = Config::load(Some(&file), Default::default()).expect("load");
        assert_eq!(read.data_dir, config.data_dir);
        assert_eq!(read.database.url, config.database.url);
        assert_eq!(read.webchat.rate_per_second, 1_000_000);
        assert!(!read.knowledge.enabled && !read.nlu.enabled);
        assert_eq!(read.console.logins_per_minute, 1_000_000);
        assert_eq!(
            serde_json::to_value(&read).expect("json"),
            serde_json::to_value(&config).expect("json")
        );
    }

    #[test]
    fn cpu_per_message_is_the_difference_over_the_messages() {
        // This process's own reading works and grows with work done.
        let start = cpu_seconds("self").expect("/proc/self/stat");
        let mut x = 0u64;
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_seconds("self").expect("/proc/self/stat") > start);
        assert_eq!(cpu_seconds("0"), None);

        let before = CpuTimes {
            gateway: Some(10.0),
            clients: Some(4.0),
        };
        let after = CpuTimes {
            gateway: Some(12.0),
            clients: Some(4.5),
        };
        assert_eq!(
            after.since(&before, 10_000, 2, true),
            "gateway 200 µs per message (at that cost, 2 cores of its own carry at most 10000 messages/s), clients 50 µs"
        );
        assert_eq!(
            after.since(&before, 10_000, 2, false),
            "200 µs per message, gateway and clients together (at that cost, 2 cores carry at most 10000 messages/s)"
        );
        assert_eq!(
            after.since(&CpuTimes::default(), 10_000, 2, true),
            "not available (no /proc)"
        );
    }
}
