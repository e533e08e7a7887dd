//! Agents' replies sent over the console socket (`{"type":"reply"}` in `docs/console-api.md`).
//!
//! Why it exists: an agent's reply as a REST request cost the gateway a request to parse and route
//! and an answer to write, each a system call, for every message. On the socket the console
//! already holds, a reply is a frame, and the answers of the replies stored in one commit go out in
//! one write. An agent answering many conversations must not wait for one reply before sending
//! the next, so replies to different conversations are stored side by side. Replies to one
//! conversation are stored one after another, in the order sent, as a client awaiting each REST
//! answer would.
//!
//! Each reply runs as a task of its own: when the socket drops, the replies already sent still
//! finish (stored, delivered, shown in the consoles) instead of stopping half-way.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};

use crate::desk::{Caller, Desk, DeskError, DeskResult};
use crate::store::StoreError;

/// Most replies of one socket sent and not answered yet; the socket reads no more frames until
/// one is answered.
pub const MAX_WAITING: usize = 256;

/// A reply as the agent sent it.
pub struct Reply {
    pub caller: Caller,
    pub reference: String,
    pub conversation_id: String,
    pub text: String,
}

/// A reply's outcome, for its answer frame.
pub struct Answered {
    pub reference: String,
    pub conversation_id: String,
    pub result: DeskResult<i64>,
}

/// One socket's replies: running (at most one per conversation) and waiting behind them.
pub struct SocketReplies {
    desk: Arc<Desk>,
    running: FuturesUnordered<BoxFuture<'static, Answered>>,
    /// Conversations with a reply running, each with the replies waiting behind it, in order.
    queued: HashMap<String, VecDeque<Reply>>,
    waiting: usize,
}

impl SocketReplies {
    pub fn new(desk: Arc<Desk>) -> Self {
        Self {
            desk,
            running: FuturesUnordered::new(),
            queued: HashMap::new(),
            waiting: 0,
        }
    }

    /// No more replies may be taken until one is answered.
    pub fn is_full(&self) -> bool {
        self.waiting >= MAX_WAITING
    }

    pub fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    /// Starts the reply, or queues it behind its conversation's reply still running.
    pub fn push(&mut self, reply: Reply) {
        self.waiting += 1;
        match self.queued.get_mut(&reply.conversation_id) {
            Some(behind) => behind.push_back(reply),
            None => {
                self.queued
                    .insert(reply.conversation_id.clone(), VecDeque::new());
                self.start(reply);
            }
        }
    }

    fn start(&mut self, reply: Reply) {
        let desk = self.desk.clone();
        let Reply {
            caller,
            reference,
            conversation_id,
            text,
        } = reply;
        let id = conversation_id.clone();
        let task = tokio::spawn(async move { desk.reply(&caller, &id, &text).await });
        self.running.push(
            async move {
                let result = task.await.unwrap_or_else(|e| {
                    Err(DeskError::Store(StoreError::Corrupt(format!(
                        "the reply's task failed: {e}"
                    ))))
                });
                Answered {
                    reference,
                    conversation_id,
                    result,
                }
            }
            .boxed(),
        );
    }

    /// The next reply answered, and its conversation's next reply started; waits forever when
    /// none is running (for `select!`: guard it with `is_empty`). Cancel-safe.
    pub async fn next(&mut self) -> Option<Answered> {
        let answered = self.running.next().await?;
        Some(self.finish(answered))
    }

    /// A reply answered already, if any, without waiting.
    pub fn ready(&mut self) -> Option<Answered> {
        let answered = self.running.next().now_or_never().flatten()?;
        Some(self.finish(answered))
    }

    fn finish(&mut self, answered: Answered) -> Answered {
        self.waiting -= 1;
        let next = self
            .queued
            .get_mut(&answered.conversation_id)
            .and_then(VecDeque::pop_front);
        match next {
            Some(reply) => self.start(reply),
            None => {
                self.queued.remove(&answered.conversation_id);
            }
        }
        answered
    }
}
