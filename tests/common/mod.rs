//! Test harness: the real `frontdesk` binary on an ephemeral port, with a temporary data directory
//! and SQLite, or a fresh database in the PostgreSQL that `FRONTDESK_TEST_DATABASE_URL` points at;
//! clients speaking the real HTTP and WebSocket protocols; a local webhook receiver.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const CRM_SECRET: &str = "crm-secret-0123456789";
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Which database a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

/// SQLite always; PostgreSQL (a fresh database) when FRONTDESK_TEST_DATABASE_URL is set. With
/// FRONTDESK_REQUIRE_POSTGRES=1 (set by the test script) a missing PostgreSQL fails the test.
pub async fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    match std::env::var("FRONTDESK_TEST_DATABASE_URL") {
        Ok(admin_url) => out.push(Backend::Postgres(fresh_postgres_db(&admin_url).await)),
        Err(_) => {
            assert!(
                std::env::var("FRONTDESK_REQUIRE_POSTGRES").is_err(),
                "FRONTDESK_REQUIRE_POSTGRES is set but FRONTDESK_TEST_DATABASE_URL is not"
            );
            eprintln!("SKIPPED on PostgreSQL: FRONTDESK_TEST_DATABASE_URL is not set (scripts/test sets it)");
        }
    }
    out
}

async fn fresh_postgres_db(admin_url: &str) -> String {
    let name = format!("fd_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::postgres::PgConnection::connect(admin_url)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    format!("{base}/{name}")
}

/// Options of a test server.
#[derive(Debug, Clone)]
pub struct Options {
    pub backend: Backend,
    /// Extra TOML appended to the config file.
    pub extra_toml: String,
    pub crm_outbound_url: Option<String>,
    /// Outbox attempts before a delivery is dead.
    pub max_attempts: i64,
    /// Run with the knowledge base (real model, real Qdrant Edge) and import the sample articles.
    pub knowledge: bool,
}

impl Options {
    pub fn new(backend: &Backend) -> Self {
        Self {
            backend: backend.clone(),
            extra_toml: String::new(),
            crm_outbound_url: None,
            max_attempts: 6,
            knowledge: false,
        }
    }
}

pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub base: String,
    pub dir: tempfile::TempDir,
    opts: Options,
}

impl Server {
    pub async fn start(opts: Options) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Server {
            child: None,
            addr: "127.0.0.1:1".parse().expect("addr"),
            base: String::new(),
            dir,
            opts,
        };
        if s.opts.knowledge {
            copy_dir(&knowledge_template(), s.dir.path());
        }
        s.write_config();
        s.spawn().await;
        s
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("frontdesk.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Everything the server logged so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn write_config(&self) {
        let mut toml = String::from(
            "[admin]\ntoken = \"test-admin-token\"\n\n[webchat]\nheartbeat_ms = 5000\n\n\
             [outbox]\nbase_delay_ms = 50\nmax_delay_ms = 200\npoll_ms = 100\nlease_ms = 5000\n",
        );
        toml.push_str(&format!("max_attempts = {}\n\n", self.opts.max_attempts));
        toml.push_str(&format!(
            "[channels.crm]\nsecret = \"{CRM_SECRET}\"\ntimeout_ms = 2000\n"
        ));
        if let Some(url) = &self.opts.crm_outbound_url {
            toml.push_str(&format!("outbound_url = \"{url}\"\n"));
        }
        toml.push('\n');
        toml.push_str(&format!(
            "[console]\ncanned = \"{}\"\n\n",
            repo().join("knowledge/canned.yaml").display()
        ));
        if self.opts.knowledge && matches!(self.opts.backend, Backend::Postgres(_)) {
            // The knowledge template's articles live in its SQLite database: on PostgreSQL the
            // knowledge base is off, understanding (a model file in the data directory) stays on.
            toml.push_str(&format!("[knowledge]\nenabled = false\n\n{}", nlu_toml()));
        } else if self.opts.knowledge {
            toml.push_str(&format!(
                "[knowledge]\nimport_dir = \"{}\"\n\n{}",
                sample_articles().display(),
                nlu_toml()
            ));
        } else {
            toml.push_str("[knowledge]\nenabled = false\n\n[nlu]\nenabled = false\n\n");
        }
        toml.push_str(&self.opts.extra_toml);
        std::fs::write(self.config_path(), toml).expect("write config");
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_frontdesk"));
        cmd.arg("--config")
            .arg(self.config_path())
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.dir.path())
            .env("RUST_LOG", "info,tower_http=warn,sqlx=warn")
            .env_remove("FRONTDESK_DATABASE__URL")
            .env("FRONTDESK_MODEL_DIR", model_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if let Backend::Postgres(url) = &self.opts.backend {
            cmd.env("FRONTDESK_DATABASE__URL", url);
        }
        let mut child = cmd.spawn().expect("start frontdesk");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("server did not start in 60 s; log:\n{}", self.log()))
            .expect("read stdout")
            .unwrap_or_else(|| panic!("server exited at start; log:\n{}", self.log()));
        let url = line
            .strip_prefix("frontdesk listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        self.base = url.to_string();
        self.addr = url.trim_start_matches("http://").parse().expect("address");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.start_kill().expect("kill");
            let _ = c.wait().await;
        }
    }

    /// Starts the server again on the same data directory and database (a new port).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    pub async fn new_session(&self) -> String {
        let v: Value = reqwest::Client::new()
            .post(self.url("/api/v1/widget/sessions"))
            .json(&json!({}))
            .send()
            .await
            .expect("create session")
            .json()
            .await
            .expect("session json");
        v["token"].as_str().expect("token").to_string()
    }

    /// POSTs a webhook message to channel `crm`, signed now with the right secret.
    pub async fn post_webhook(&self, body: &[u8]) -> reqwest::Response {
        let ts = frontdesk_channels::now_ms() / 1000;
        let sig = frontdesk_channels::signature::sign(CRM_SECRET.as_bytes(), ts, body);
        self.post_webhook_raw("crm", body, &ts.to_string(), &sig)
            .await
    }

    pub async fn post_webhook_raw(
        &self,
        channel: &str,
        body: &[u8],
        ts: &str,
        sig: &str,
    ) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url(&format!("/api/v1/channels/{channel}/messages")))
            .header("content-type", "application/json")
            .header("x-frontdesk-timestamp", ts)
            .header("x-frontdesk-signature", sig)
            .body(body.to_vec())
            .send()
            .await
            .expect("post webhook")
    }

    /// Adds an agent with the real `frontdesk agent add` on this server's database.
    pub async fn add_agent(&self, email: &str, name: &str, skills: &str, capacity: i64) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_frontdesk"));
        cmd.arg("--config")
            .arg(self.config_path())
            .args(["agent", "add", "--email", email, "--name", name])
            .args([
                "--capacity",
                &capacity.to_string(),
                "--password",
                AGENT_PASSWORD,
            ])
            .env("FRONTDESK_DATA_DIR", self.dir.path())
            .env_remove("FRONTDESK_DATABASE__URL")
            .env_remove("FRONTDESK_AGENT_PASSWORD");
        if !skills.is_empty() {
            cmd.args(["--skills", skills]);
        }
        if let Backend::Postgres(url) = &self.opts.backend {
            cmd.env("FRONTDESK_DATABASE__URL", url);
        }
        let out = cmd.output().await.expect("run agent add");
        assert!(
            out.status.success(),
            "agent add failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Logs an agent in; its requests then use the session as a bearer token.
    pub async fn login(&self, email: &str) -> AgentClient {
        let resp = reqwest::Client::new()
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({ "email": email, "password": AGENT_PASSWORD }))
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status(), 200, "login {email}");
        let v: Value = resp.json().await.expect("login json");
        AgentClient {
            base: self.base.clone(),
            addr: self.addr,
            token: v["token"].as_str().expect("token").to_string(),
            agent: v["agent"].clone(),
        }
    }

    /// A request with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        let resp = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin get");
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.expect("json")
    }

    /// Polls the deliveries API until `pred` holds for the list, or panics after TIMEOUT.
    pub async fn wait_deliveries(
        &self,
        query: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let v = self.admin_get(&format!("/api/v1/deliveries{query}")).await;
            let list = v["deliveries"].as_array().cloned().unwrap_or_default();
            if pred(&list) {
                return list;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "deliveries never matched: {list:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A data directory holding the sample knowledge base, imported once per test binary with the
/// real `frontdesk kb import` (real model, real Qdrant Edge); servers start from a copy of it, so
/// each test does not embed the same 28 articles again.
pub fn knowledge_template() -> PathBuf {
    static TEMPLATE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut template = TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = template.as_ref() {
        return dir.clone();
    }
    let dir = tempfile::tempdir().expect("tmp").keep();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frontdesk"))
        .args(["kb", "import"])
        .arg(sample_articles())
        .env("FRONTDESK_DATA_DIR", &dir)
        .env("FRONTDESK_MODEL_DIR", model_root())
        .env_remove("FRONTDESK_DATABASE__URL")
        .output()
        .expect("run frontdesk kb import");
    assert!(
        out.status.success(),
        "importing the sample knowledge base failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The understanding model the servers would otherwise train at start: trained once here,
    // found in the copied data folder (same files, same hash) by every server.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frontdesk"))
        .args(["nlu", "train"])
        .env("FRONTDESK_DATA_DIR", &dir)
        .env("FRONTDESK_MODEL_DIR", model_root())
        .env("FRONTDESK_NLU__INTENTS", repo().join("knowledge/intents"))
        .env(
            "FRONTDESK_NLU__EMOTIONS",
            repo().join("knowledge/emotions/train.csv"),
        )
        .env_remove("FRONTDESK_DATABASE__URL")
        .output()
        .expect("run frontdesk nlu train");
    assert!(
        out.status.success(),
        "training the NLU model failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    *template = Some(dir.clone());
    dir
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `[nlu]` pointing at the repository's intent and emotion files.
pub fn nlu_toml() -> String {
    format!(
        "[nlu]\nintents = \"{}\"\nemotions = \"{}\"\n\n",
        repo().join("knowledge/intents").display(),
        repo().join("knowledge/emotions/train.csv").display()
    )
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read template") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The repository's sample knowledge base.
pub fn sample_articles() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("knowledge/articles")
}

/// Where the embedding model is: FRONTDESK_MODEL_DIR (scripts/test builds it there) or the
/// repository's data/models.
pub fn model_root() -> PathBuf {
    std::env::var("FRONTDESK_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/models"))
}

/// A webhook message body.
pub fn webhook_body(contact: &str, message_id: &str, text: &str) -> Vec<u8> {
    json!({"contact_id": contact, "message_id": message_id, "text": text, "metadata": {"source": "test"}})
        .to_string()
        .into_bytes()
}

/// A widget client on a real WebSocket.
pub struct Chat {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

impl Chat {
    pub async fn connect(server: &Server, token: &str, last_seq: i64) -> Chat {
        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("connect websocket");
        ws.send(Message::text(
            json!({"type":"hello","token":token,"last_seq":last_seq}).to_string(),
        ))
        .await
        .expect("send hello");
        let mut chat = Chat {
            ws,
            welcome: Value::Null,
        };
        let welcome = chat.next().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        chat.welcome = welcome;
        chat
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("send frame");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send frame");
    }

    pub async fn say(&mut self, client_id: &str, text: &str) {
        self.send(json!({"type":"message","client_id":client_id,"text":text}))
            .await;
    }

    /// The next JSON frame (pings skipped), or panics after TIMEOUT.
    pub async fn next(&mut self) -> Value {
        self.try_next(TIMEOUT)
            .await
            .expect("a frame before the timeout")
    }

    /// The next JSON frame within `wait`; None on timeout or close.
    pub async fn try_next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match frame.ok()? {
                Message::Text(t) => return Some(serde_json::from_str(&t).expect("json frame")),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Reads frames until one matches; returns it and the frames skipped before it.
    pub async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            let f = self.next().await;
            if pred(&f) {
                return (f, skipped);
            }
            skipped.push(f);
        }
    }

    /// Sends a message and returns its ack.
    pub async fn say_and_ack(&mut self, client_id: &str, text: &str) -> Value {
        self.say(client_id, text).await;
        let (ack, _) = self
            .until(|f| f["type"] == "ack" || (f["type"] == "error" && f["client_id"] == client_id))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["client_id"], client_id);
        ack
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// What the local webhook receiver does with a request.
#[derive(Debug, Clone, Copy)]
pub enum ReceiverMode {
    Accept,
    /// Answer 503 to this many requests, then accept.
    FailFirst(usize),
    /// Answer 503 to this many messages of this author (bot, agent, system); accept the others.
    FailFirstBy(&'static str, usize),
    AlwaysFail,
}

#[derive(Default)]
struct ReceiverState {
    mode: Option<ReceiverMode>,
    failures_left: usize,
    attempts: Vec<Value>,
    accepted: Vec<Value>,
}

/// A local HTTP server standing in for a system wired in by webhook. It checks every request's
/// signature with the channel secret and records what it got.
#[derive(Clone)]
pub struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    pub url: String,
}

impl Receiver {
    pub async fn start(mode: ReceiverMode) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        Self::serve(listener, mode, format!("http://{addr}/hook"))
    }

    /// A receiver on a fixed address (to bring one up where a server was told to deliver).
    pub async fn start_at(addr: SocketAddr, mode: ReceiverMode) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fixed");
        Self::serve(listener, mode, format!("http://{addr}/hook"))
    }

    fn serve(listener: tokio::net::TcpListener, mode: ReceiverMode, url: String) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let r = Receiver {
            state: state.clone(),
            url,
        };
        r.set_mode(mode);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let state = state.clone();
                    async move {
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string)
                        };
                        let verified = frontdesk_channels::signature::verify(
                            CRM_SECRET.as_bytes(),
                            h("x-frontdesk-timestamp").as_deref(),
                            h("x-frontdesk-signature").as_deref(),
                            &body,
                            frontdesk_channels::now_ms() / 1000,
                            300,
                        );
                        let mut v: Value = serde_json::from_slice(&body).expect("json body");
                        v["_signature_ok"] = json!(verified.is_ok());
                        v["_delivery_header"] = json!(h("x-frontdesk-delivery"));
                        let mut s = state.lock().expect("lock");
                        s.attempts.push(v.clone());
                        let fail = match s.mode {
                            Some(ReceiverMode::AlwaysFail) => true,
                            Some(ReceiverMode::FailFirst(_)) if s.failures_left > 0 => {
                                s.failures_left -= 1;
                                true
                            }
                            Some(ReceiverMode::FailFirstBy(author, _))
                                if s.failures_left > 0 && v["author"] == author =>
                            {
                                s.failures_left -= 1;
                                true
                            }
                            _ => false,
                        };
                        if fail {
                            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "try later")
                        } else {
                            s.accepted.push(v);
                            (axum::http::StatusCode::OK, "ok")
                        }
                    }
                },
            ),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        r
    }

    pub fn set_mode(&self, mode: ReceiverMode) {
        let mut s = self.state.lock().expect("lock");
        s.failures_left = match mode {
            ReceiverMode::FailFirst(n) | ReceiverMode::FailFirstBy(_, n) => n,
            _ => 0,
        };
        s.mode = Some(mode);
    }

    pub fn attempts(&self) -> Vec<Value> {
        self.state.lock().expect("lock").attempts.clone()
    }

    pub fn accepted(&self) -> Vec<Value> {
        self.state.lock().expect("lock").accepted.clone()
    }

    pub async fn wait_accepted(&self, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "receiver got {} of {n}: {:#?}",
                got.len(),
                self.attempts()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub const AGENT_PASSWORD: &str = "agent-password-1";

/// A logged-in agent calling the API with its session as a bearer token.
pub struct AgentClient {
    pub base: String,
    pub addr: SocketAddr,
    pub token: String,
    pub agent: Value,
}

impl AgentClient {
    pub fn id(&self) -> &str {
        self.agent["id"].as_str().expect("agent id")
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// GET → (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("get");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// POST with a JSON body → (status, JSON body).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn set_status(&self, status: &str) {
        let resp = self
            .request(reqwest::Method::PUT, "/api/v1/agents/me/status")
            .json(&json!({ "status": status }))
            .send()
            .await
            .expect("status");
        assert_eq!(resp.status(), 200);
    }

    /// The console's live socket, already past `hello`/`welcome`.
    pub async fn console(&self, after: u64) -> (Console, Value) {
        let url = format!("ws://{}/ws/console?token={}", self.addr, self.token);
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("console socket");
        ws.send(Message::text(
            json!({ "type": "hello", "after": after }).to_string(),
        ))
        .await
        .expect("hello");
        let mut console = Console { ws };
        let welcome = console.next().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (console, welcome)
    }
}

/// An agent console's socket.
pub struct Console {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Console {
    pub async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("console frame in time")
                .expect("console open")
                .expect("console frame");
            if let Message::Text(t) = msg {
                return serde_json::from_str(&t).expect("console json");
            }
        }
    }

    /// Reads frames until one matches; returns it with everything read before it.
    pub async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            let f = self.next().await;
            if pred(&f) {
                return (f, seen);
            }
            seen.push(f);
        }
    }
}
