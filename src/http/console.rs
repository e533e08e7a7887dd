//! The agent console: its files (built from `web-console/` by vite and embedded in the binary, so
//! the gateway serves it with no Node.js at run time) and its live socket `/ws/console`
//! (protocol in `docs/console-api.md`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};

use super::auth::{authenticate, session_agent};
use super::conversations::{check_text, desk_error};
use super::error::ApiError;
use super::socket_replies::{Answered, Reply, SocketReplies};
use super::AppState;
use crate::agents::Agent;
use crate::desk::Caller;
use crate::live::{Frame, Live, Resume};

const INDEX: &str = include_str!("../../web-console/dist/index.html");
const SCRIPT: &str = include_str!("../../web-console/dist/console.js");
const STYLE: &str = include_str!("../../web-console/dist/console.css");

pub async fn index() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX)).into_response()
}

pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct SocketQuery {
    pub token: Option<String>,
}

/// A page on another site must not open an agent's socket with the agent's cookie: the Origin,
/// when the browser sends one, must be this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

#[utoipa::path(get, path = "/ws/console", tag = "agents",
    params(("token" = Option<String>, Query, description = "a session token, when no cookie is sent")),
    responses(
        (status = 101, description = "WebSocket: the console's live feed (docs/console-api.md)"),
        (status = 401, body = super::error::ErrorBody),
    ))]
pub async fn socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SocketQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "the console socket only accepts pages from this gateway",
        ));
    }
    let (caller, token) = authenticate(&state, &Method::GET, &headers, q.token.as_deref()).await?;
    Ok(ws
        .max_message_size(64 * 1024)
        .read_buffer_size(super::SOCKET_READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let live = state.live.clone();
            serve(state, caller, token, socket).await;
            live.console_left();
        }))
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientFrame {
    Hello {
        #[serde(default)]
        after: u64,
    },
    Typing {
        conversation_id: String,
        typing: bool,
    },
    /// An agent's reply (see `socket_replies`).
    Reply {
        conversation_id: String,
        text: String,
        #[serde(rename = "ref")]
        reference: String,
    },
    Ping,
}

/// The answer to a stored reply (written without building a `serde_json::Value`: one per reply).
#[derive(serde::Serialize)]
struct SentFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ref")]
    reference: &'a str,
    conversation_id: &'a str,
    seq: i64,
}

/// An `error` frame; `reference` names the reply it answers.
fn error_frame(reference: Option<&str>, e: &ApiError) -> serde_json::Value {
    e.record();
    json!({ "type": "error", "ref": reference, "code": e.code, "status": e.status.as_u16(), "message": e.message })
}

/// A reply frame checked as the REST call checks it: its `ref`, its text's length, and the
/// session (still valid, with the agent as it is now). The refusal frame otherwise, and whether
/// the socket must close (the session ended).
async fn check_reply(
    state: &AppState,
    token: Option<&str>,
    reference: String,
    conversation_id: String,
    text: String,
) -> Result<Reply, (serde_json::Value, bool)> {
    if reference.is_empty() || reference.chars().count() > 64 {
        let e = ApiError::bad_request("bad_frame", "a reply's ref must be 1 to 64 characters");
        return Err((error_frame(None, &e), false));
    }
    if let Err(e) = check_text(&text) {
        return Err((error_frame(Some(&reference), &e), false));
    }
    let agent = match token {
        // The gateway's admin token: nothing to check again.
        None => None,
        Some(token) => match session_agent(state, token, "the session ended: log in again").await {
            Ok(agent) => Some(agent),
            Err(e) => {
                let ended = e.status == StatusCode::UNAUTHORIZED;
                return Err((error_frame(Some(&reference), &e), ended));
            }
        },
    };
    Ok(Reply {
        caller: Caller { agent },
        reference,
        conversation_id,
        text,
    })
}

/// Writes the answer of `first` and of every other reply answered by now, then flushes once:
/// the replies stored in one commit are answered in one write. False when the console is gone.
async fn answer_replies(sink: &mut Sink, replies: &mut SocketReplies, first: Answered) -> bool {
    let mut next = Some(first);
    while let Some(a) = next.take() {
        let frame = match a.result {
            Ok(seq) => serde_json::to_string(&SentFrame {
                kind: "sent",
                reference: &a.reference,
                conversation_id: &a.conversation_id,
                seq,
            })
            // Strings and a number: writing it cannot fail.
            .unwrap_or_default(),
            Err(e) => error_frame(Some(&a.reference), &desk_error(e)).to_string(),
        };
        if sink.feed(Message::Text(frame.into())).await.is_err() {
            return false;
        }
        next = replies.ready();
    }
    sink.flush().await.is_ok()
}

/// Most feed frames written to a console socket before it is flushed.
const MAX_FRAMES_PER_WRITE: usize = 256;

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

async fn send(sink: &mut Sink, text: impl Into<Utf8Bytes>) -> bool {
    sink.send(Message::Text(text.into())).await.is_ok()
}

/// Writes `first` and the feed frames already waiting behind it (up to
/// [`MAX_FRAMES_PER_WRITE`]), then flushes once: a busy gateway publishes frames in bursts, and
/// one write per burst instead of one per frame saves a system call per frame and socket.
/// False when the console is gone (or the feed closed).
async fn send_burst(
    sink: &mut Sink,
    rx: &mut broadcast::Receiver<Arc<Frame>>,
    first: Result<Arc<Frame>, RecvError>,
    agent: Option<&Agent>,
    last_sent: &mut u64,
    live: &Live,
) -> bool {
    let mut next = Some(first);
    let mut fed = 0;
    while let Some(frame) = next.take() {
        let text = match frame {
            Ok(f) if f.seq != 0 && f.seq <= *last_sent => None,
            Ok(f) => {
                if f.seq != 0 {
                    *last_sent = f.seq;
                }
                f.visible_to(agent).then(|| f.json.clone())
            }
            Err(RecvError::Lagged(_)) => {
                // Too slow to keep up: start over from the lists rather than skip frames.
                *last_sent = live.seq();
                Some(
                    json!({ "type": "reset", "seq": *last_sent })
                        .to_string()
                        .into(),
                )
            }
            Err(RecvError::Closed) => {
                let _ = sink.flush().await;
                return false;
            }
        };
        if let Some(text) = text {
            if sink.feed(Message::Text(text)).await.is_err() {
                return false;
            }
            fed += 1;
        }
        if fed < MAX_FRAMES_PER_WRITE {
            next = match rx.try_recv() {
                Ok(f) => Some(Ok(f)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
            };
        }
    }
    fed == 0 || sink.flush().await.is_ok()
}

async fn serve(state: AppState, caller: Caller, token: Option<String>, socket: WebSocket) {
    let live = state.live.clone();
    let (mut sink, mut stream) = socket.split();
    // The first frame says where the console left off.
    let after = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ClientFrame>(&t) {
            Ok(ClientFrame::Hello { after }) => after,
            _ => {
                let _ = send(
                    &mut sink,
                    json!({ "type": "error", "code": "hello_expected",
                    "message": "the first frame must be {\"type\":\"hello\",\"after\":N}" })
                    .to_string(),
                )
                .await;
                return;
            }
        },
        _ => return,
    };
    // Subscribe before reading the ring: nothing published in between is lost (duplicates are
    // skipped by seq below).
    let mut rx = live.subscribe();
    let agent = caller.agent.clone();
    let welcome = json!({ "type": "welcome", "agent": agent, "seq": live.seq() });
    if !send(&mut sink, welcome.to_string()).await {
        return;
    }
    let welcome_seq = welcome["seq"].as_u64().unwrap_or(0);
    let mut last_sent = match live.resume(after) {
        Resume::Replay(frames) => {
            // A fresh console (after = 0) loads its lists over REST and continues from here.
            let mut last = if after == 0 { welcome_seq } else { after };
            for f in frames {
                if f.visible_to(agent.as_ref()) && !send(&mut sink, f.json.clone()).await {
                    return;
                }
                last = f.seq;
            }
            last
        }
        Resume::Reset(seq) => {
            if !send(
                &mut sink,
                json!({ "type": "reset", "seq": seq }).to_string(),
            )
            .await
            {
                return;
            }
            seq
        }
    };
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    ping.tick().await;
    let mut replies = SocketReplies::new(state.desk.clone());
    loop {
        tokio::select! {
            frame = rx.recv() => {
                if !send_burst(&mut sink, &mut rx, frame, agent.as_ref(), &mut last_sent, &live).await {
                    return;
                }
            },
            Some(answered) = replies.next(), if !replies.is_empty() => {
                if !answer_replies(&mut sink, &mut replies, answered).await {
                    return;
                }
            },
            incoming = stream.next(), if !replies.is_full() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    let answer = match serde_json::from_str::<ClientFrame>(&t) {
                        Ok(ClientFrame::Ping) => Some(json!({ "type": "pong" })),
                        Ok(ClientFrame::Typing { conversation_id, typing }) => {
                            match state.desk.typing(&caller, &conversation_id, typing).await {
                                Ok(()) => None,
                                Err(e) => Some(json!({ "type": "error", "code": "typing_refused", "message": e.to_string() })),
                            }
                        }
                        Ok(ClientFrame::Reply { conversation_id, text, reference }) => {
                            match check_reply(&state, token.as_deref(), reference, conversation_id, text).await {
                                Ok(reply) => {
                                    replies.push(reply);
                                    None
                                }
                                Err((refusal, false)) => Some(refusal),
                                Err((refusal, true)) => {
                                    let _ = send(&mut sink, refusal.to_string()).await;
                                    return;
                                }
                            }
                        }
                        Ok(ClientFrame::Hello { .. }) => None,
                        Err(e) => {
                            tracing::debug!(error = %e, "bad console frame");
                            Some(json!({ "type": "error", "code": "bad_frame", "message": e.to_string() }))
                        }
                    };
                    if let Some(a) = answer {
                        if !send(&mut sink, a.to_string()).await {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}
