//! The bot's turn for one customer message, as a short list of stages with one interface.
//!
//! Ownership (a conversation a person owns never gets a bot reply), understanding (language,
//! intent, sentiment, emotion), retrieval (the knowledge base), policy (answer / suggest / clarify /
//! small talk), handoff (the rules that send a conversation to a person) and reply (the words).
//! Each stage
//! reads and extends the [`Turn`]; a stage may stop the turn. Nothing here touches the database:
//! the router commits the finished turn in one transaction.

use async_trait::async_trait;
use frontdesk_channels::{Author, QuickReply, StoredMessage};
use serde_json::json;

use crate::handoff::{Fired, HandoffConfig, Signals};
use crate::i18n::{self, Phrase};
use crate::knowledge::{self, Hit, KnowledgeBase, SearchResult};
use crate::nlu::intent::IntentPrediction;
use crate::nlu::language::LanguageDetector;
use crate::nlu::{LabelScore, Nlu};
use crate::ownership::{Action, Status};
use crate::store::{Conversation, NewMessage, StatusChange, TurnOutcome};

/// What the policy decided to do with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No knowledge base is configured: say so honestly.
    CannotAnswerYet { greet: bool },
    /// Reply with this article (its score is above the answer threshold).
    Answer { greet: bool, hit: Hit },
    /// Offer these articles as quick replies ("Did you mean...").
    Suggest { greet: bool, hits: Vec<Hit> },
    /// Nothing is close enough: no article at all, ask to rephrase.
    Clarify { greet: bool },
    /// A hello, thanks or goodbye that asks nothing: answer in kind.
    SmallTalk { greet: bool, phrase: Phrase },
    /// A person takes over (the rule that fired says why).
    Handoff { greet: bool, fired: Fired },
}

/// What the understanding stage made of the message.
#[derive(Debug, Clone)]
pub struct Understood {
    pub intent: IntentPrediction,
    pub sentiment: Option<LabelScore>,
    pub emotion: Option<LabelScore>,
    pub emotions: std::collections::BTreeMap<String, f32>,
    /// The model's tuned handoff thresholds per emotion.
    pub emotion_thresholds: std::collections::BTreeMap<String, f32>,
}

/// One customer message on its way through the stages.
#[derive(Debug)]
pub struct Turn<'a> {
    pub conversation: &'a Conversation,
    pub message: &'a StoredMessage,
    /// Two-letter language the bot answers in.
    pub language: String,
    /// True when the detection was confident enough to store on the conversation.
    pub language_detected: bool,
    pub annotations: serde_json::Map<String, serde_json::Value>,
    pub status_change: Option<StatusChange>,
    pub decision: Option<Decision>,
    /// Intent and feelings (when understanding is configured).
    pub understood: Option<Understood>,
    /// What the knowledge base found for the message (when one is configured).
    pub knowledge: Option<SearchResult>,
    /// The conversation's count of unanswered messages in a row after this one.
    pub unanswered: Option<i64>,
    pub replies: Vec<NewMessage>,
    /// A satisfaction rating the message gave (1-5).
    pub rating: Option<i64>,
    /// Set by a stage that ends the turn (no later stage runs).
    pub stopped: bool,
}

/// One step of a turn.
#[async_trait]
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;
    async fn run(&self, turn: &mut Turn<'_>) -> anyhow::Result<()>;
}

/// After a person resolved a conversation the customer is asked for a 1-5 rating (as quick
/// replies); the answer is stored instead of reopening the conversation.
pub struct RatingStage;

/// The rating in a reply to the satisfaction question: "5", "5 ★", "★★★★★".
pub fn parse_rating(text: &str) -> Option<i64> {
    let t = text.trim();
    let stars = t.chars().filter(|c| *c == '★' || *c == '⭐').count();
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    let others = t
        .chars()
        .any(|c| !(c.is_ascii_digit() || c.is_whitespace() || c == '★' || c == '⭐' || c == '/'));
    if others {
        return None;
    }
    let n = match (digits.as_str(), stars) {
        ("", n) => i64::try_from(n).ok()?,
        (d, _) => d.parse().ok()?,
    };
    (1..=5).contains(&n).then_some(n)
}

#[async_trait]
impl Stage for RatingStage {
    fn name(&self) -> &'static str {
        "rating"
    }

    async fn run(&self, turn: &mut Turn<'_>) -> anyhow::Result<()> {
        let c = turn.conversation;
        if c.status != "resolved" || c.rating_requested_at.is_none() || c.rating.is_some() {
            return Ok(());
        }
        let Some(rating) = parse_rating(&turn.message.text) else {
            return Ok(());
        };
        metrics::counter!(crate::metrics::SATISFACTION_RATINGS, "rating" => rating.to_string())
            .increment(1);
        turn.rating = Some(rating);
        turn.annotations.insert("rating".into(), json!(rating));
        let lang = c.language.clone().unwrap_or_else(|| "en".into());
        turn.replies.push(NewMessage::text(
            Author::Bot,
            i18n::phrase(Phrase::ThanksForRating, &lang),
        ));
        turn.stopped = true;
        Ok(())
    }
}

/// A person owns queued and assigned conversations: the bot stays silent there. A customer writing
/// into a resolved conversation reopens it to the bot.
///
/// The store applies the silent half itself when a message comes into a conversation a person
/// owns with nothing before it waiting for a turn (`Ingested::settled`): the turn would only
/// write [`human_owner_annotations`], so no turn runs for it.
pub struct OwnershipStage;

/// A silent turn's whole record on its message: a person owned the conversation.
pub fn human_owner_annotations() -> serde_json::Map<String, serde_json::Value> {
    let mut record = serde_json::Map::new();
    record.insert("owner".into(), json!("human"));
    record
}

#[async_trait]
impl Stage for OwnershipStage {
    fn name(&self) -> &'static str {
        "ownership"
    }

    async fn run(&self, turn: &mut Turn<'_>) -> anyhow::Result<()> {
        let status = turn.conversation.status.parse::<Status>();
        match status {
            Ok(s) if s.human_owned() => {
                turn.annotations.extend(human_owner_annotations());
                turn.stopped = true;
            }
            Ok(Status::Resolved) => {
                let mut change =
                    StatusChange::new(Action::Reopen, "customer", "customer wrote again");
                change.details = json!({ "seq": turn.message.seq });
                turn.status_change = Some(change);
                turn.annotations.insert("owner".into(), json!("bot"));
            }
            _ => {
                turn.annotations.insert("owner".into(), json!("bot"));
            }
        }
        Ok(())
    }
}

/// Detects the message's language among the configured ones (short Latin-script texts keep the
/// conversation's language unless the detection is reliable) and, when understanding is
/// configured, its intent, sentiment and emotion.
pub struct UnderstandingStage {
    language: LanguageDetector,
    nlu: Option<Nlu>,
}

impl UnderstandingStage {
    pub fn new(languages: &[String], nlu: Option<Nlu>) -> anyhow::Result<Self> {
        Ok(Self {
            language: LanguageDetector::new(languages)?,
            nlu,
        })
    }
}

#[async_trait]
impl Stage for UnderstandingStage {
    fn name(&self) -> &'static str {
        "understanding"
    }

    async fn run(&self, turn: &mut Turn<'_>) -> anyhow::Result<()> {
        let known = turn.conversation.language.clone();
        match self.language.detect(&turn.message.text) {
            Some(d) => {
                turn.annotations.insert(
                    "language".into(),
                    json!({ "code": d.code, "confidence": d.confidence, "reliable": d.reliable }),
                );
                // Scripts are unambiguous for ru and zh even in short messages (and Vietnamese
                // letters for vi); other Latin-script guesses on a few words are not ("How do I
                // top up my mobile data?" comes out as vi, 0.43), so they only count when
                // reliable. Otherwise the conversation keeps its language, or the default one.
                if d.reliable || d.script_sure {
                    turn.language = d.code.to_string();
                    turn.language_detected = true;
                } else if let Some(k) = known {
                    turn.language = k;
                }
            }
            None => {
                if let Some(k) = known {
                    turn.language = k;
                }
            }
        }
        if let Some(nlu) = &self.nlu {
            let u = nlu.understand(&turn.message.text).await?;
            let intent = u.intent;
            let ranking: Vec<_> = intent.ranking.iter().take(3).collect();
            turn.annotations.insert(
                "intent".into(),
                json!({ "name": intent.name, "confidence": intent.confidence,
                        "out_of_scope": intent.out_of_scope, "score": intent.score,
                        "team": nlu.team(&intent.name), "ranking": ranking }),
            );
            if let Some(s) = &u.sentiment {
                turn.annotations.insert("sentiment".into(), json!(s));
            }
            if let Some(e) = &u.emotion {
                turn.annotations.insert("emotion".into(), json!(e));
            }
            turn.understood = Some(Understood {
                intent,
                sentiment: u.sentiment,
                emotion: u.emotion,
                emotions: u.emotions,
                emotion_thresholds: nlu.model().emotion_thresholds.clone(),
            });
        }
        Ok(())
    }
}

/// Looks the message up in the knowledge base.
pub struct RetrievalStage {
    kb: std::sync::Arc<KnowledgeBase>,
}

#[async_trait]
impl Stage for RetrievalStage {
    fn name(&self) -> &'static str {
        "retrieval"
    }

    async fn run(&self, turn: &mut Turn<'_>) -> anyhow::Result<()> {
        let k = self.kb.config().max_suggestions.max(1);
        let result = self.kb.search(&turn.message.text, k).await?;
        turn.annotations
            .insert("knowledge".into(), knowledge_annotation(&result));
        turn.knowledge = Some(result);
        Ok(())
    }
}

/// The hits as stored with messages: they explain the decision.
fn knowledge_annotation(result: &SearchResult) -> serde_json::Value {
    let hits: Vec<serde_json::Value> = result
        .hits
        .iter()
        .map(|h| json!({ "article_id": h.article_id, "title": h.title, "score": h.score, "part": h.part, "matched": h.matched }))
        .collect();
    json!({ "decision": result.decision, "confidence": result.confidence, "hits": hits })
}

/// Decides what to do: answer from the knowledge base above its answer threshold, suggest
/// articles between the thresholds, otherwise no article at all and a request to rephrase. With
/// no knowledge base configured the honest answer is that the bot cannot answer.
pub struct PolicyStage;

#[async_trait]
impl Stage for PolicyStage {
    fn name(&self) -> &'static str {
        "policy"
    }

    async fn run(&self, turn: &mut Turn<'_>) -> anyhow::Result<()> {
        let greet = turn.conversation.processed_seq == 0;
        let (decision, action, reason) = match &turn.knowledge {
            None => (
                Decision::CannotAnswerYet { greet },
                "cannot_answer_yet",
                "no knowledge base is configured".to_string(),
            ),
            Some(r) => match (r.decision, r.hits.first()) {
                (knowledge::Decision::Answer, Some(hit)) => (
                    Decision::Answer {
                        greet,
                        hit: hit.clone(),
                    },
                    "answer",
                    format!(
                        "best article {} scored {:.3}, confidence {:.3}",
                        hit.article_id,
                        hit.score,
                        r.confidence.unwrap_or(hit.score)
                    ),
                ),
                (knowledge::Decision::Suggest, Some(hit)) => (
                    Decision::Suggest {
                        greet,
                        hits: r.hits.clone(),
                    },
                    "suggest",
                    format!(
                        "best article {} scored {:.3}, confidence {:.3} below the answer threshold",
                        hit.article_id,
                        hit.score,
                        r.confidence.unwrap_or(hit.score)
                    ),
                ),
                (_, best) => (
                    Decision::Clarify { greet },
                    "clarify",
                    match best {
                        Some(h) => format!(
                            "best article scored {:.3}, below the suggestion threshold",
                            h.score
                        ),
                        None => "no article found".to_string(),
                    },
                ),
            },
        };
        // A hello, thanks or goodbye the knowledge base has no article for is small talk; so is
        // a messenger's start command (Telegram's /start).
        let start_command = turn.message.metadata["command"] == "start";
        let small_talk = turn
            .understood
            .as_ref()
            .filter(|u| !u.intent.out_of_scope && u.intent.confidence >= SMALL_TALK_CONFIDENCE)
            .and_then(|u| small_talk_phrase(&u.intent.name).map(|p| (p, u.intent.confidence)));
        let small_talk = if start_command {
            Some((Phrase::HowCanIHelp, 1.0))
        } else {
            small_talk
        };
        let (decision, action, reason) = match (small_talk, &decision) {
            (Some((phrase, confidence)), d) if !matches!(d, Decision::Answer { .. }) => (
                Decision::SmallTalk { greet, phrase },
                "small_talk",
                format!("small talk intent, {confidence:.2}"),
            ),
            _ => (decision, action, reason),
        };
        turn.annotations.insert(
            "decision".into(),
            json!({ "action": action, "reason": reason }),
        );
        turn.decision = Some(decision);
        Ok(())
    }
}

/// Small talk is answered only when the intent is clear.
const SMALL_TALK_CONFIDENCE: f32 = 0.5;

fn small_talk_phrase(intent: &str) -> Option<Phrase> {
    match intent {
        "greeting" => Some(Phrase::HowCanIHelp),
        "thanks" => Some(Phrase::YouAreWelcome),
        "goodbye" => Some(Phrase::Goodbye),
        _ => None,
    }
}

/// Applies the handoff rules ([`crate::handoff`]) after the policy: a rule that fires replaces
/// the decision, queues the conversation for a person (with the rule in the status event) and may
/// raise its priority. Also keeps the count of unanswered messages in a row.
pub struct HandoffStage {
    rules: HandoffConfig,
}

impl HandoffStage {
    /// The team of the message's intent, when it says what the customer needs (not "a person",
    /// not out of scope): the queue offers the conversation to that team's agents.
    fn team_for(&self, turn: &Turn<'_>) -> Option<String> {
        let intent = turn.annotations.get("intent")?;
        if intent["out_of_scope"].as_bool() == Some(true)
            || intent["name"].as_str() == Some(self.rules.human_intent.as_str())
        {
            return None;
        }
        intent["team"].as_str().map(String::from)
    }
}

#[async_trait]
impl Stage for HandoffStage {
    fn name(&self) -> &'static str {
        "handoff"
    }

    async fn run(&self, turn: &mut Turn<'_>) -> anyhow::Result<()> {
        let unanswered = match &turn.decision {
            // Without a knowledge base every message is unanswered by design, not by failure.
            Some(Decision::Clarify { .. }) => turn.conversation.unanswered + 1,
            _ => 0,
        };
        let none = std::collections::BTreeMap::new();
        let fired = self.rules.check(&Signals {
            intent: turn.understood.as_ref().map(|u| &u.intent),
            emotions: turn.understood.as_ref().map_or(&none, |u| &u.emotions),
            tuned: turn
                .understood
                .as_ref()
                .map_or(&none, |u| &u.emotion_thresholds),
            // Articles offered as "Did you mean" count: the customer has something to try.
            answered: matches!(
                turn.decision,
                Some(
                    Decision::Answer { .. } | Decision::Suggest { .. } | Decision::SmallTalk { .. }
                )
            ),
            unanswered,
        });
        let Some(fired) = fired else {
            turn.unanswered = Some(unanswered);
            return Ok(());
        };
        turn.unanswered = Some(0);
        turn.annotations.insert(
            "decision".into(),
            json!({ "action": "handoff", "reason": fired.reason, "rule": fired.rule }),
        );
        let mut change = StatusChange::new(Action::HandOff, "bot", fired.reason.clone());
        change.details = fired.details.clone();
        change.details["seq"] = json!(turn.message.seq);
        change.priority = (fired.priority > 0).then_some(fired.priority);
        change.team = self.team_for(turn);
        turn.status_change = Some(change);
        let greet = turn.conversation.processed_seq == 0;
        turn.decision = Some(Decision::Handoff { greet, fired });
        Ok(())
    }
}

/// Turns the decision into messages in the customer's language.
pub struct ReplyStage {
    kb: Option<std::sync::Arc<KnowledgeBase>>,
}

impl ReplyStage {
    async fn article_body(&self, id: &str) -> anyhow::Result<String> {
        let kb = self
            .kb
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no knowledge base"))?;
        let stored = kb
            .get(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("article {id} was deleted meanwhile"))?;
        Ok(plain_text(&stored.article.body))
    }
}

/// Article Markdown as plain text for chat: messengers and the widget show text, not HTML, so
/// emphasis marks are dropped, list items become bullets and links show their address.
pub fn plain_text(markdown: &str) -> String {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let mut out = String::new();
    let mut link: Option<String> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Text(t) | Event::Code(t) => out.push_str(&t),
            Event::SoftBreak => out.push(' '),
            Event::HardBreak => out.push('\n'),
            Event::Start(Tag::Item) => out.push_str("• "),
            Event::Start(Tag::Link { dest_url, .. }) => link = Some(dest_url.to_string()),
            Event::End(TagEnd::Link) => {
                if let Some(url) = link.take() {
                    out.push_str(&format!(" ({url})"));
                }
            }
            Event::End(TagEnd::Paragraph | TagEnd::Heading(_) | TagEnd::CodeBlock) => {
                out.push_str("\n\n")
            }
            Event::End(TagEnd::Item | TagEnd::TableRow | TagEnd::TableHead) => out.push('\n'),
            Event::End(TagEnd::TableCell) => out.push_str(" | "),
            Event::End(TagEnd::List(_)) => out.push('\n'),
            _ => {}
        }
    }
    let mut text = out.trim().to_string();
    while text.contains("\n\n\n") {
        text = text.replace("\n\n\n", "\n\n");
    }
    text
}

#[async_trait]
impl Stage for ReplyStage {
    fn name(&self) -> &'static str {
        "reply"
    }

    async fn run(&self, turn: &mut Turn<'_>) -> anyhow::Result<()> {
        let lang = turn.language.as_str();
        let lang = if i18n::SUPPORTED.contains(&lang) {
            lang
        } else {
            "en"
        };
        let greeting = |greet: bool| {
            if greet {
                format!("{} ", i18n::phrase(Phrase::Greeting, lang))
            } else {
                String::new()
            }
        };
        let (text, quick_replies, action) = match &turn.decision {
            None => return Ok(()),
            Some(Decision::CannotAnswerYet { greet }) => (
                greeting(*greet) + i18n::phrase(Phrase::CannotAnswerYet, lang),
                Vec::new(),
                "cannot_answer_yet",
            ),
            Some(Decision::Answer { greet, hit }) => {
                let body = self.article_body(&hit.article_id).await?;
                let text = format!("{}{}\n\n{}", greeting(*greet), hit.title, body);
                (text.trim_start().to_string(), Vec::new(), "answer")
            }
            Some(Decision::Suggest { greet, hits }) => (
                greeting(*greet) + i18n::phrase(Phrase::DidYouMean, lang),
                // Pressing one sends the title, which then matches its article best.
                hits.iter()
                    .map(|h| QuickReply {
                        title: h.title.clone(),
                        payload: h.title.clone(),
                    })
                    .collect(),
                "suggest",
            ),
            Some(Decision::Clarify { greet }) => (
                greeting(*greet) + i18n::phrase(Phrase::Rephrase, lang),
                Vec::new(),
                "clarify",
            ),
            Some(Decision::SmallTalk { greet, phrase }) => (
                greeting(*greet) + i18n::phrase(*phrase, lang),
                Vec::new(),
                "small_talk",
            ),
            Some(Decision::Handoff { greet, fired }) => (
                greeting(*greet && !fired.apologise)
                    + i18n::phrase(
                        if fired.apologise {
                            Phrase::HandoffSorry
                        } else {
                            Phrase::Handoff
                        },
                        lang,
                    ),
                Vec::new(),
                "handoff",
            ),
        };
        let mut annotations =
            json!({ "in_reply_to": turn.message.seq, "decision": action, "language": lang });
        // The hits explain the reply: the retrieval stage already rendered them for the message.
        if let Some(k) = turn.annotations.get("knowledge") {
            annotations["knowledge"] = k.clone();
        }
        turn.replies.push(NewMessage {
            author: Author::Bot,
            text,
            quick_replies,
            annotations,
            metadata: json!({}),
        });
        Ok(())
    }
}

/// The stages in order.
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
}

impl Pipeline {
    /// The standard stages, detecting among `languages`, answering from `kb` when there is one.
    pub fn new(
        languages: &[String],
        kb: Option<std::sync::Arc<KnowledgeBase>>,
        nlu: Option<Nlu>,
        handoff: HandoffConfig,
    ) -> anyhow::Result<Self> {
        let mut stages: Vec<Box<dyn Stage>> = vec![
            Box::new(RatingStage),
            Box::new(OwnershipStage),
            Box::new(UnderstandingStage::new(languages, nlu)?),
        ];
        if let Some(kb) = &kb {
            stages.push(Box::new(RetrievalStage { kb: kb.clone() }));
        }
        stages.push(Box::new(PolicyStage));
        stages.push(Box::new(HandoffStage { rules: handoff }));
        stages.push(Box::new(ReplyStage { kb }));
        Ok(Self { stages })
    }

    /// Runs the stages for one message and returns what to commit. A failing stage is recorded in
    /// the annotations and ends the turn without a reply (the message itself is already stored).
    pub async fn run(&self, conversation: &Conversation, message: &StoredMessage) -> TurnOutcome {
        let mut turn = Turn {
            conversation,
            message,
            language: conversation.language.clone().unwrap_or_else(|| "en".into()),
            language_detected: false,
            annotations: serde_json::Map::new(),
            status_change: None,
            decision: None,
            understood: None,
            knowledge: None,
            unanswered: None,
            rating: None,
            replies: Vec::new(),
            stopped: false,
        };
        for stage in &self.stages {
            if turn.stopped {
                break;
            }
            if let Err(e) = stage.run(&mut turn).await {
                tracing::error!(stage = stage.name(), conversation = %conversation.id, seq = message.seq, error = %e, "pipeline stage failed");
                turn.annotations.insert(
                    "error".into(),
                    json!({ "stage": stage.name(), "message": e.to_string() }),
                );
                turn.replies.clear();
                break;
            }
        }
        TurnOutcome {
            conversation_id: conversation.id.clone(),
            contact_id: conversation.contact_id.clone(),
            channel: conversation.channel.clone(),
            target: conversation.contact_external_id.clone(),
            expected_processed_seq: conversation.processed_seq,
            started_status: conversation.status.clone(),
            rating: turn.rating,
            message_seq: message.seq,
            message_annotations: serde_json::Value::Object(turn.annotations),
            language: turn.language_detected.then_some(turn.language),
            status_change: turn.status_change,
            unanswered: turn.unanswered,
            replies: turn.replies,
            channel_replays_from_store: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation(status: &str, processed: i64) -> Conversation {
        Conversation {
            id: "c".into(),
            channel: "webchat".into(),
            contact_id: "p".into(),
            contact_external_id: "v".into(),
            status: status.into(),
            language: None,
            priority: 0,
            last_seq: processed + 1,
            processed_seq: processed,
            unanswered: 0,
            assignee: None,
            team: None,
            queued_at: None,
            rating_requested_at: None,
            rating: None,
            declined_by: None,
        }
    }

    fn message(text: &str, seq: i64) -> StoredMessage {
        StoredMessage {
            conversation_id: "c".into(),
            seq,
            author: Author::Customer,
            text: text.into(),
            created_at_ms: 0,
            metadata: serde_json::Value::Null,
            quick_replies: vec![],
        }
    }

    fn pipeline() -> Pipeline {
        let langs: Vec<String> = ["en", "ru", "vi", "zh"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Pipeline::new(&langs, None, None, HandoffConfig::default()).expect("pipeline")
    }

    #[test]
    fn unknown_languages_are_refused_at_start() {
        let err = Pipeline::new(&["xx".to_string()], None, None, HandoffConfig::default())
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("unsupported language 'xx'"),
            "{err}"
        );
    }

    #[test]
    fn article_markdown_becomes_plain_chat_text() {
        let md = "Roaming is **off** by default.\n\n**How to turn it on**\n\n- Open *My Nimbus*\n- See [the list](https://nimbus.example/roaming)\n";
        assert_eq!(
            plain_text(md),
            "Roaming is off by default.\n\nHow to turn it on\n\n• Open My Nimbus\n• See the list (https://nimbus.example/roaming)"
        );
    }

    #[tokio::test]
    async fn a_conversation_owned_by_a_person_gets_no_bot_reply() {
        let p = pipeline();
        for status in ["queued", "assigned"] {
            let out = p.run(&conversation(status, 3), &message("hello?", 4)).await;
            assert!(out.replies.is_empty(), "{status}");
            assert_eq!(out.message_annotations["owner"], "human");
        }
    }

    #[tokio::test]
    async fn first_message_is_greeted_in_the_customers_language() {
        let p = pipeline();
        let out = p
            .run(
                &conversation("bot", 0),
                &message("Здравствуйте, у меня не работает интернет дома", 1),
            )
            .await;
        assert_eq!(out.language.as_deref(), Some("ru"));
        assert_eq!(out.replies.len(), 1);
        assert!(
            out.replies[0].text.starts_with("Здравствуйте!"),
            "{}",
            out.replies[0].text
        );
        let later = p
            .run(&conversation("bot", 1), &message("我的网络坏了", 3))
            .await;
        assert_eq!(later.language.as_deref(), Some("zh"));
        assert!(
            !later.replies[0].text.contains("您好"),
            "no second greeting"
        );
    }

    #[tokio::test]
    async fn a_start_command_is_answered_with_a_greeting_only() {
        let mut start = message("/start", 1);
        start.metadata = json!({ "command": "start" });
        let mut conv = conversation("bot", 0);
        conv.language = Some("vi".into());
        let out = pipeline().run(&conv, &start).await;
        assert_eq!(
            out.replies[0].text,
            format!(
                "{} {}",
                i18n::phrase(Phrase::Greeting, "vi"),
                i18n::phrase(Phrase::HowCanIHelp, "vi")
            )
        );
        assert_eq!(out.message_annotations["decision"]["action"], "small_talk");
    }

    #[tokio::test]
    async fn writing_into_a_resolved_conversation_reopens_it_to_the_bot() {
        let out = pipeline()
            .run(
                &conversation("resolved", 2),
                &message("one more question", 5),
            )
            .await;
        let change = out.status_change.expect("reopened");
        assert_eq!(
            (change.action, change.reason.as_str()),
            (Action::Reopen, "customer wrote again")
        );
        assert_eq!(out.replies.len(), 1);
    }

    #[tokio::test]
    async fn a_rating_after_resolving_is_stored_and_thanked_without_reopening() {
        let pipeline =
            Pipeline::new(&["en".into()], None, None, HandoffConfig::default()).expect("pipeline");
        let mut asked = conversation("resolved", 2);
        asked.rating_requested_at = Some(1);
        let out = pipeline.run(&asked, &message("4 ★", 5)).await;
        assert_eq!(out.rating, Some(4));
        assert!(out.status_change.is_none(), "stays resolved");
        assert_eq!(out.replies.len(), 1);
        assert!(out.replies[0].text.contains("Thank you"));
        // Not asked (or already rated): a digit is an ordinary message that reopens.
        let out = pipeline
            .run(&conversation("resolved", 2), &message("4", 5))
            .await;
        assert_eq!(out.rating, None);
        assert!(out.status_change.is_some());
    }

    #[tokio::test]
    async fn unsure_latin_guesses_do_not_switch_the_language_but_vietnamese_letters_do() {
        let langs: Vec<String> = ["en", "ru", "vi", "zh"].map(String::from).to_vec();
        let pipeline =
            Pipeline::new(&langs, None, None, HandoffConfig::default()).expect("pipeline");
        let c = conversation("bot", 0);
        let out = pipeline
            .run(&c, &message("How do I top up my mobile data?", 1))
            .await;
        assert_eq!(out.language, None, "{:?}", out.message_annotations);
        assert!(
            out.replies[0].text.starts_with("Hello"),
            "{}",
            out.replies[0].text
        );
        let out = pipeline
            .run(&c, &message("Làm sao để nạp thêm dữ liệu?", 1))
            .await;
        assert_eq!(out.language.as_deref(), Some("vi"));
    }

    #[test]
    fn ratings_are_read_from_digits_or_stars() {
        for (text, rating) in [
            ("5", Some(5)),
            (" 1 ★", Some(1)),
            ("★★★", Some(3)),
            ("4/5", None),
            ("0", None),
            ("6", None),
            ("5 stars", None),
            ("", None),
        ] {
            assert_eq!(parse_rating(text), rating, "{text:?}");
        }
    }
}
