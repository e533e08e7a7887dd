//! The agent console's live feed: every change to a conversation (a message, a status change, a
//! note, a rating) and to an agent becomes a numbered frame. Consoles subscribe over `/ws/console`;
//! a console that reconnects says which frame it saw last and gets exactly the ones it missed
//! from a ring buffer, or a `reset` (reload the lists) when they are gone. So an agent never
//! misses a customer's reply across a reconnect.
//!
//! Producers only say *which* conversation changed (`touch`), or that it only got new messages
//! (`messages_added`); one task turns that into frames by reading the store, so the hot paths
//! (ingest, bot turns, agent replies) never wait for it. A burst of changes is read in three
//! statements whatever the number of conversations, and changes to one conversation collapse into
//! one read. New messages alone are one statement and no summary: a message frame carries what a
//! list shows of it (the last message, its time, a customer's emotion), so the console updates the
//! conversation's row from it. A message nothing will change after it is stored (an agent's reply,
//! a customer's message while a person owns the conversation) comes with the touch
//! (`message_stored`) and is not read back at all, unless the feed is missing one before it. A
//! bot turn (`turn_done`) annotated a message consoles already have: it is read and sent again,
//! with every message after it, and consoles redraw it in place.
//!
//! The feed is per gateway process. Several processes behind a load balancer would need a shared
//! bus (PostgreSQL LISTEN/NOTIFY); not built yet.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::agents::Agent;
use crate::batch::recv_batch;
use crate::desk;
use crate::registry::Registry;
use crate::store::{Store, TranscriptMessage};

/// Frames kept for resuming consoles.
const RING: usize = 8192;

/// Most conversations the feed reads in one go (three statements for all of them).
const BATCH: usize = 100;

/// With no console connected for this long, changes are not turned into frames.
const UNWATCHED_MS: i64 = 10 * 60 * 1000;

/// Who may see a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    Everyone,
    /// A conversation's frame: visible to agents who may see it now, and to the agent who owned
    /// it until now (so its "mine" list drops it).
    Conversation {
        team: Option<String>,
        assignee: Option<String>,
        previous_assignee: Option<String>,
        /// The team it belonged to until now (its agents' lists drop it).
        previous_team: Option<Option<String>>,
    },
}

#[derive(Debug)]
pub struct Frame {
    /// 0 for frames that are not replayed (typing).
    pub seq: u64,
    pub scope: Scope,
    /// The frame as sent, shared by every console socket that sends it (a clone copies nothing).
    pub json: Utf8Bytes,
}

impl Frame {
    pub fn visible_to(&self, agent: Option<&Agent>) -> bool {
        let Some(agent) = agent else {
            return true; // the admin token
        };
        match &self.scope {
            Scope::Everyone => true,
            Scope::Conversation {
                team,
                assignee,
                previous_assignee,
                previous_team,
            } => {
                previous_assignee.as_deref() == Some(agent.id.as_str())
                    || desk::may_see(agent, team.as_deref(), assignee.as_deref())
                    || previous_team
                        .as_ref()
                        .is_some_and(|t| desk::may_see(agent, t.as_deref(), None))
            }
        }
    }
}

/// What the feed already sent about a conversation.
#[derive(Debug, Default, Clone)]
struct Sent {
    last_seq: i64,
    events: usize,
    team: Option<String>,
    assignee: Option<String>,
}

impl Sent {
    /// Who may see a frame about the conversation that changes neither its team nor its assignee
    /// (a message, typing): whoever saw its last summary.
    fn scope(&self) -> Scope {
        Scope::Conversation {
            team: self.team.clone(),
            assignee: self.assignee.clone(),
            previous_assignee: None,
            previous_team: None,
        }
    }
}

struct Ring {
    next_seq: u64,
    frames: VecDeque<Arc<Frame>>,
    /// The newest seq skipped because no console was connected: a console resuming from before
    /// it cannot be replayed and gets a reset.
    hole: u64,
}

pub struct Live {
    store: Store,
    channels: Arc<Registry>,
    tx: broadcast::Sender<Arc<Frame>>,
    ring: Mutex<Ring>,
    sent: Mutex<HashMap<String, Sent>>,
    touched: mpsc::UnboundedSender<(String, Change)>,
    /// When the last console disconnected (ms).
    last_watched: AtomicI64,
}

/// What changed about a conversation, as its producer knows it.
#[derive(Debug)]
enum Change {
    /// This new message, as stored, and nothing else: nothing will change it, so the feed sends
    /// it as it is.
    Stored(Box<TranscriptMessage>),
    /// Only new messages (a customer's, or an agent's reply): nothing in its summary but what the
    /// message frames carry.
    Messages,
    /// Anything: status, assignment, events, rating.
    Any,
    /// A bot turn: anything, and the message at this seq got its annotations (intent, emotion),
    /// so it is sent again even if consoles had it (they replace it, badges and all).
    Turn(i64),
}

/// A `message` frame as consoles get it.
#[derive(serde::Serialize)]
struct MessageFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    conversation_id: &'a str,
    message: &'a TranscriptMessage,
    seq: u64,
}

/// A conversation that only got new messages, as a batch of touches says it.
#[derive(Debug, Default)]
struct NewMessages {
    /// The messages that came with their touch, in seq order.
    stored: Vec<TranscriptMessage>,
    /// A touch came without its message: the store must be read.
    unknown: bool,
}

/// A conversation to read whole: its id, and the seq of the first message to send again (an
/// annotated one consoles already have).
type Changed = (String, Option<i64>);

/// A batch of touches sorted: conversations to read whole, and those that only got messages.
#[derive(Debug, Default)]
struct Sorted {
    changed: Vec<Changed>,
    messages_only: Vec<(String, NewMessages)>,
}

/// What a console resuming after frame `after` gets.
pub enum Resume {
    /// These frames, then the live stream.
    Replay(Vec<Arc<Frame>>),
    /// Too old (or from before a restart): reload everything, continue after `seq`.
    Reset(u64),
}

/// A batch of touches sorted, each conversation once, in the order first touched: those to read
/// whole, and those with only new messages. A conversation this process has not sent yet is read
/// whole (its first frame is its summary).
fn sort_touches(touches: Vec<(String, Change)>, sent: &HashMap<String, Sent>) -> Sorted {
    let mut order = Vec::new();
    // Read whole, with the first seq to send again.
    let mut whole: HashMap<String, Option<i64>> = HashMap::new();
    let mut messages: HashMap<String, NewMessages> = HashMap::new();
    for (id, change) in touches {
        if !whole.contains_key(&id) && !messages.contains_key(&id) {
            order.push(id.clone());
        }
        let resend = match change {
            Change::Turn(seq) => Some(Some(seq)),
            Change::Any => Some(None),
            _ if !sent.contains_key(&id) => Some(None),
            _ => None,
        };
        if let Some(resend) = resend {
            messages.remove(&id);
            let from = whole.entry(id).or_insert(resend);
            *from = match (*from, resend) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            continue;
        }
        if whole.contains_key(&id) {
            continue;
        }
        let new = messages.entry(id).or_default();
        match change {
            Change::Stored(m) => new.stored.push(*m),
            Change::Messages | Change::Any | Change::Turn(_) => new.unknown = true,
        }
    }
    let mut sorted = Sorted::default();
    for id in order {
        if let Some(mut new) = messages.remove(&id) {
            new.stored.sort_by_key(|m| m.message.seq);
            sorted.messages_only.push((id, new));
        } else {
            let resend = whole.get(&id).copied().flatten();
            sorted.changed.push((id, resend));
        }
    }
    sorted
}

impl Live {
    /// The feed and the task that turns touches into frames (run it with `tokio::spawn`).
    pub fn new(
        store: Store,
        channels: Arc<Registry>,
    ) -> (Arc<Self>, impl std::future::Future<Output = ()>) {
        let (tx, _) = broadcast::channel(4096);
        let (touched, mut rx) = mpsc::unbounded_channel::<(String, Change)>();
        let live = Arc::new(Self {
            store,
            channels,
            tx,
            ring: Mutex::new(Ring {
                next_seq: 1,
                frames: VecDeque::new(),
                hole: 0,
            }),
            sent: Mutex::new(HashMap::new()),
            touched,
            last_watched: AtomicI64::new(0),
        });
        let weak = Arc::downgrade(&live);
        let task = async move {
            while let Some(touches) = recv_batch(&mut rx, usize::MAX).await {
                let Some(live) = weak.upgrade() else { return };
                let Sorted {
                    changed,
                    messages_only,
                } = sort_touches(touches, &live.sent());
                let _timer = crate::batch::BatchTimer::start(
                    "console_feed",
                    changed.len() + messages_only.len(),
                );
                if live.unwatched() {
                    continue;
                }
                for chunk in changed.chunks(BATCH) {
                    if let Err(e) = live.publish_conversations(chunk).await {
                        tracing::warn!(conversations = chunk.len(), error = %e, "console feed could not read conversations");
                    }
                }
                let to_read = live.publish_stored(messages_only);
                for chunk in to_read.chunks(BATCH) {
                    if let Err(e) = live.publish_messages(chunk).await {
                        tracing::warn!(conversations = chunk.len(), error = %e, "console feed could not read new messages");
                    }
                }
            }
        };
        (live, task)
    }

    /// The conversation changed: consoles will get its new state, messages and events.
    pub fn touch(&self, conversation_id: &str) {
        let _ = self
            .touched
            .send((conversation_id.to_string(), Change::Any));
    }

    /// A bot turn changed the conversation and annotated its message at `annotated_seq`:
    /// consoles get that message again with its intent and emotion, as well as what `touch`
    /// sends. (The customer's message reached them when it was stored, before the turn.)
    pub fn turn_done(&self, conversation_id: &str, annotated_seq: i64) {
        let _ = self
            .touched
            .send((conversation_id.to_string(), Change::Turn(annotated_seq)));
    }

    /// The conversation only got new messages: consoles will get them. Its summary is not read
    /// again, so the caller must not have changed anything else (status, assignment, events,
    /// another message's annotations); then it calls `touch`.
    pub fn messages_added(&self, conversation_id: &str) {
        let _ = self
            .touched
            .send((conversation_id.to_string(), Change::Messages));
    }

    /// The conversation got this message and nothing else, and nothing will change the message
    /// (its annotations are final): consoles get it without the feed reading it back.
    pub fn message_stored(&self, message: TranscriptMessage) {
        let _ = self.touched.send((
            message.message.conversation_id.clone(),
            Change::Stored(Box::new(message)),
        ));
    }

    /// Nobody has watched for a while (a bot-only deployment, or every agent went home): changes
    /// are not read, and a hole is left so a console resuming from before it reloads instead. A
    /// console that just dropped (a reconnect) still gets an exact replay.
    fn unwatched(&self) -> bool {
        let quiet_ms = frontdesk_channels::now_ms() - self.last_watched.load(Ordering::Relaxed);
        if self.tx.receiver_count() == 0 && quiet_ms > UNWATCHED_MS {
            let mut ring = self.ring();
            ring.hole = ring.next_seq;
            ring.next_seq += 1;
            return true;
        }
        false
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Frame>> {
        self.tx.subscribe()
    }

    /// A console disconnected: keep producing frames for a while, for its reconnect.
    pub fn console_left(&self) {
        self.last_watched
            .store(frontdesk_channels::now_ms(), Ordering::Relaxed);
    }

    pub fn kind_of(&self, channel: &str) -> &'static str {
        self.channels.kind_of(channel)
    }

    /// The newest frame's seq.
    pub fn seq(&self) -> u64 {
        self.ring().next_seq - 1
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sent(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sent>> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Frames after `after`, for a console that saw frame `after` last (0 = a fresh console).
    pub fn resume(&self, after: u64) -> Resume {
        let ring = self.ring();
        let newest = ring.next_seq - 1;
        if after == 0 || after > newest {
            return if after == 0 {
                Resume::Replay(Vec::new())
            } else {
                Resume::Reset(newest)
            };
        }
        let oldest = ring.frames.front().map_or(ring.next_seq, |f| f.seq);
        if after + 1 < oldest || after < ring.hole {
            return Resume::Reset(newest);
        }
        Resume::Replay(
            ring.frames
                .iter()
                .filter(|f| f.seq > after)
                .cloned()
                .collect(),
        )
    }

    /// Numbers a frame, keeps it for resuming, and sends it to every console.
    fn publish(&self, scope: Scope, body: serde_json::Value) {
        self.publish_as(scope, |seq| {
            let mut body = body;
            body["seq"] = json!(seq);
            body.to_string()
        });
    }

    /// Numbers a frame written by `json` (given its seq), keeps it, and sends it to every console.
    fn publish_as(&self, scope: Scope, json: impl FnOnce(u64) -> String) {
        let mut ring = self.ring();
        let seq = ring.next_seq;
        ring.next_seq += 1;
        let frame = Arc::new(Frame {
            seq,
            scope,
            json: json(seq).into(),
        });
        ring.frames.push_back(frame.clone());
        while ring.frames.len() > RING {
            ring.frames.pop_front();
        }
        // Sent under the lock so frames reach subscribers in seq order.
        let _ = self.tx.send(frame);
    }

    /// An agent's status or load changed.
    pub fn agent_changed(&self, agent: &Agent) {
        self.publish(Scope::Everyone, json!({ "type": "agent", "agent": agent }));
    }

    /// The customer started or stopped typing (not replayed: it is stale by then).
    pub fn customer_typing(&self, conversation_id: &str, typing: bool) {
        let scope = self
            .sent()
            .get(conversation_id)
            .map_or_else(|| Sent::default().scope(), Sent::scope);
        let frame = Arc::new(Frame {
            seq: 0,
            scope,
            json: json!({ "type": "typing", "conversation_id": conversation_id, "typing": typing })
                .to_string()
                .into(),
        });
        let _ = self.tx.send(frame);
    }

    /// Turns changed conversations into frames: their summaries, new messages and event counts
    /// are read once for the whole batch (the changes of a busy gateway come in bursts).
    async fn publish_conversations(&self, changed: &[Changed]) -> anyhow::Result<()> {
        let ids: Vec<String> = changed.iter().map(|(id, _)| id.clone()).collect();
        let resend: HashMap<&str, i64> = changed
            .iter()
            .filter_map(|(id, from)| from.map(|f| (id.as_str(), f)))
            .collect();
        let summaries = self.store.summaries_of(&ids, |c| self.kind_of(c)).await?;
        let previous: HashMap<String, Sent> = {
            let sent = self.sent();
            ids.iter()
                .filter_map(|id| sent.get(id).map(|p| (id.clone(), p.clone())))
                .collect()
        };
        // First time this process sees a conversation: only its newest message and event are news.
        // An annotated message is news again.
        let after: Vec<(String, i64)> = summaries
            .iter()
            .map(|s| {
                let seq = previous.get(&s.id).map_or(s.last_seq - 1, |p| p.last_seq);
                let seq = resend
                    .get(s.id.as_str())
                    .map_or(seq, |&from| seq.min(from - 1));
                (s.id.clone(), seq)
            })
            .collect();
        let mut messages = self.store.transcripts_after(&after).await?;
        // Only the events not sent yet (a long conversation has many).
        let events_sent: Vec<(String, Option<usize>)> = summaries
            .iter()
            .map(|s| (s.id.clone(), previous.get(&s.id).map(|p| p.events)))
            .collect();
        let mut new_events = self.store.new_events(&events_sent).await?;
        for (summary, (id, after_seq)) in summaries.into_iter().zip(after) {
            let previous = previous.get(&id);
            let (events, events_total) = match new_events.remove(&id) {
                Some(new) => (new.events, new.total),
                None => (Vec::new(), previous.map_or(0, |p| p.events)),
            };
            let messages = messages.remove(&id).unwrap_or_default();
            let assignee = summary.assignee.as_ref().map(|a| a.id.clone());
            let scope = Scope::Conversation {
                team: summary.team.clone(),
                assignee: assignee.clone(),
                previous_assignee: previous
                    .and_then(|p| p.assignee.clone())
                    .filter(|p| Some(p) != assignee.as_ref()),
                previous_team: previous
                    .map(|p| p.team.clone())
                    .filter(|t| *t != summary.team),
            };
            let last_seq = messages
                .last()
                .map_or(after_seq, |m| m.message.seq)
                .max(after_seq)
                .max(previous.map_or(0, |p| p.last_seq));
            self.sent().insert(
                id.clone(),
                Sent {
                    last_seq,
                    events: events_total,
                    team: summary.team.clone(),
                    assignee,
                },
            );
            self.publish_message_frames(&scope, &id, &messages);
            for e in events {
                self.publish(
                    scope.clone(),
                    json!({ "type": "event", "conversation_id": id, "event": e }),
                );
            }
            self.publish(
                scope,
                json!({ "type": "conversation", "conversation": summary }),
            );
        }
        Ok(())
    }

    /// Sends the messages that came with their touches, where they follow the last one sent;
    /// returns the conversations whose new messages must be read (a touch without its message, or
    /// a gap: a message stored before it, whose touch comes later).
    ///
    /// Why: reading back each message just stored was a sixth of the gateway's work on the relay
    /// path (`bench relay`), on the feed's task and the readers' threads.
    fn publish_stored(&self, conversations: Vec<(String, NewMessages)>) -> Vec<String> {
        let mut to_read = Vec::new();
        for (id, new) in conversations {
            let (scope, fresh) = {
                let mut sent = self.sent();
                let Some(s) = sent.get_mut(&id) else {
                    continue;
                };
                let fresh: Vec<TranscriptMessage> = new
                    .stored
                    .into_iter()
                    .filter(|m| m.message.seq > s.last_seq)
                    .collect();
                let follows = fresh
                    .iter()
                    .zip(s.last_seq + 1..)
                    .all(|(m, seq)| m.message.seq == seq);
                if new.unknown || !follows {
                    to_read.push(id);
                    continue;
                }
                let Some(last) = fresh.last() else { continue };
                s.last_seq = last.message.seq;
                (s.scope(), fresh)
            };
            self.publish_message_frames(&scope, &id, &fresh);
        }
        to_read
    }

    /// Turns conversations that only got new messages into message frames: one read for the
    /// batch, seen by whoever saw the conversation's last summary.
    ///
    /// Why: reading each conversation's summary and event count again for every message was most
    /// of the feed's work on the relay path, and a summary frame for each message doubled what
    /// every console had to receive.
    async fn publish_messages(&self, ids: &[String]) -> anyhow::Result<()> {
        let after: Vec<(String, i64)> = {
            let sent = self.sent();
            ids.iter()
                .filter_map(|id| sent.get(id).map(|s| (id.clone(), s.last_seq)))
                .collect()
        };
        let mut messages = self.store.transcripts_after(&after).await?;
        for (id, _) in after {
            let Some(new) = messages.remove(&id) else {
                continue;
            };
            let scope = {
                let mut sent = self.sent();
                let Some(s) = sent.get_mut(&id) else { continue };
                if let Some(last) = new.last() {
                    s.last_seq = s.last_seq.max(last.message.seq);
                }
                s.scope()
            };
            self.publish_message_frames(&scope, &id, &new);
        }
        Ok(())
    }

    /// A frame for each of a conversation's new messages, in order.
    ///
    /// Written straight from the message: building a `serde_json::Value` first (a map for the
    /// frame and one for the message) was half the feed's cost per message on the relay path.
    fn publish_message_frames(&self, scope: &Scope, id: &str, messages: &[TranscriptMessage]) {
        for message in messages {
            self.publish_as(scope.clone(), |seq| {
                let frame = MessageFrame {
                    kind: "message",
                    conversation_id: id,
                    message,
                    seq,
                };
                // Strings, numbers and JSON values only: writing it cannot fail.
                serde_json::to_string(&frame).unwrap_or_default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frontdesk_channels::{Author, StoredMessage};

    fn message(conversation_id: &str, seq: i64) -> TranscriptMessage {
        TranscriptMessage {
            message: StoredMessage {
                conversation_id: conversation_id.into(),
                seq,
                author: Author::Agent,
                text: format!("reply {seq}"),
                created_at_ms: seq,
                metadata: json!({}),
                quick_replies: Vec::new(),
            },
            annotations: json!({}),
        }
    }

    fn stored(conversation_id: &str, seq: i64) -> (String, Change) {
        (
            conversation_id.into(),
            Change::Stored(Box::new(message(conversation_id, seq))),
        )
    }

    fn seqs(new: &NewMessages) -> Vec<i64> {
        new.stored.iter().map(|m| m.message.seq).collect()
    }

    #[test]
    fn touches_sort_into_whole_reads_and_messages_each_conversation_once() {
        let sent: HashMap<String, Sent> = ["a", "b", "c", "d", "e"]
            .into_iter()
            .map(|id| (id.to_string(), Sent::default()))
            .collect();
        let sorted = sort_touches(
            vec![
                stored("a", 7),
                stored("b", 3),
                stored("a", 6),
                ("c".into(), Change::Messages),
                stored("c", 9),
                stored("d", 2),
                ("d".into(), Change::Any),
                stored("d", 3),
                stored("new", 1),
                stored("b", 4),
                ("b".into(), Change::Turn(4)),
                ("b".into(), Change::Turn(3)),
                ("b".into(), Change::Any),
                ("e".into(), Change::Any),
                ("e".into(), Change::Turn(8)),
            ],
            &sent,
        );
        // Anything else changed, or never sent before: read whole. A turn's annotated message is
        // sent again, from the oldest one.
        assert_eq!(
            sorted.changed,
            vec![
                ("b".to_string(), Some(3)),
                ("d".to_string(), None),
                ("new".to_string(), None),
                ("e".to_string(), Some(8)),
            ]
        );
        let only: Vec<(&str, Vec<i64>, bool)> = sorted
            .messages_only
            .iter()
            .map(|(id, new)| (id.as_str(), seqs(new), new.unknown))
            .collect();
        assert_eq!(only, vec![("a", vec![6, 7], false), ("c", vec![9], true),]);
    }

    #[tokio::test]
    async fn stored_messages_are_sent_when_they_follow_the_last_one_and_read_otherwise() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("live.db").display());
        let store = Store::open(&url, 2).await.expect("open");
        let (live, _task) = Live::new(store, Arc::new(Registry::new(None, "webchat", 4096)));
        let mut frames = live.subscribe();
        live.sent().insert(
            "a".into(),
            Sent {
                last_seq: 3,
                ..Sent::default()
            },
        );
        let new = |seqs: &[i64], unknown: bool| NewMessages {
            stored: seqs.iter().map(|&s| message("a", s)).collect(),
            unknown,
        };

        // Seq 4 is missing (its touch is still on the way): read the store instead.
        assert_eq!(
            live.publish_stored(vec![("a".into(), new(&[5], false))]),
            ["a"]
        );
        // A touch without its message: read the store.
        assert_eq!(
            live.publish_stored(vec![("a".into(), new(&[4], true))]),
            ["a"]
        );
        assert!(frames.try_recv().is_err(), "nothing sent on a read");
        assert_eq!(live.sent()["a"].last_seq, 3);

        // 4 and 5 follow 3: sent as they are, in order, and not read.
        assert!(live
            .publish_stored(vec![("a".into(), new(&[4, 5], false))])
            .is_empty());
        for seq in [4, 5] {
            let frame = frames.try_recv().expect("a message frame");
            let body: serde_json::Value = serde_json::from_str(frame.json.as_str()).expect("json");
            assert_eq!(body["type"], "message");
            assert_eq!(body["message"]["seq"], seq);
            assert_eq!(body["message"]["text"], format!("reply {seq}"));
        }
        assert_eq!(live.sent()["a"].last_seq, 5);

        // Already sent (the read got there first): dropped.
        assert!(live
            .publish_stored(vec![("a".into(), new(&[5], false))])
            .is_empty());
        assert!(frames.try_recv().is_err(), "nothing sent twice");
    }

    /// The bug this guards against: a console with the conversation open got the customer's
    /// message when it was stored, before the bot turn annotated it, and never saw its intent
    /// and emotion badges.
    #[tokio::test]
    async fn a_bot_turn_sends_its_annotated_message_again_and_the_rest_once() {
        use crate::store::{Committed, NewMessage, TurnOutcome};
        use frontdesk_channels::InboundMessage;

        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("live.db").display());
        let store = Store::open(&url, 2).await.expect("open");
        let (live, _task) = Live::new(
            store.clone(),
            Arc::new(Registry::new(None, "webchat", 4096)),
        );
        let mut frames = live.subscribe();
        let mut next = || -> serde_json::Value {
            let frame = frames.try_recv().expect("a frame");
            serde_json::from_str(frame.json.as_str()).expect("json")
        };
        let ack = store
            .ingest(&InboundMessage {
                channel: "webchat".into(),
                contact_external_id: "visitor".into(),
                external_message_id: "m1".into(),
                text: "this is the third time I ask!".into(),
                contact_name: None,
                contact_email: None,
                metadata: json!({}),
            })
            .await
            .expect("ingest")
            .ack;
        let id = ack.conversation_id.clone();

        // Stored: consoles get it without annotations.
        live.publish_conversations(&[(id.clone(), None)])
            .await
            .expect("publish");
        let first = next();
        assert_eq!(first["type"], "message");
        assert_eq!(first["message"]["seq"], 1);
        assert_eq!(first["message"]["annotations"], json!({}));
        assert_eq!(next()["type"], "conversation");

        // The bot's turn annotates it and replies.
        let annotations = json!({ "emotion": { "label": "angry", "score": 0.93 } });
        let turn = TurnOutcome {
            conversation_id: id.clone(),
            contact_id: String::new(),
            channel: "webchat".into(),
            target: String::new(),
            expected_processed_seq: 0,
            started_status: "bot".into(),
            rating: None,
            message_seq: ack.seq,
            message_annotations: annotations.clone(),
            language: None,
            status_change: None,
            unanswered: None,
            replies: vec![NewMessage::text(Author::Bot, "Sorry about that.")],
            channel_replays_from_store: true,
        };
        let committed = store.commit_turn(&turn, 0).await.expect("commit");
        assert!(matches!(committed, Committed::Stored(_)));
        let sorted = sort_touches(vec![(id.clone(), Change::Turn(ack.seq))], &live.sent());
        live.publish_conversations(&sorted.changed)
            .await
            .expect("publish");

        // The customer's message again, with its badges; then the reply; each once.
        let again = next();
        assert_eq!(again["message"]["seq"], 1);
        assert_eq!(again["message"]["annotations"], annotations);
        let reply = next();
        assert_eq!(reply["message"]["seq"], 2);
        assert_eq!(reply["message"]["author"], "bot");
        assert_eq!(next()["type"], "conversation");
        assert_eq!(live.sent()[&id].last_seq, 2);

        // A plain touch afterwards sends neither again.
        live.publish_conversations(&[(id.clone(), None)])
            .await
            .expect("publish");
        assert_eq!(next()["type"], "conversation");
        assert!(frames.try_recv().is_err(), "no message sent twice");
    }
}
