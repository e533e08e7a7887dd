//! The queue: hands waiting conversations to agents. A queued conversation goes to the
//! least-loaded online agent who speaks its language and is in its team, highest priority first,
//! then the longest waiting. It runs whenever something could change the answer (a hand-off, an
//! agent going online, a freed slot) and every few seconds as a safety net.
//!
//! Assignment is a conditional update that also checks the agent's load, so two gateway processes
//! (or an agent taking a conversation by hand at the same moment) cannot both win it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use frontdesk_channels::{now_ms, Author};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::agents::Agent;
use crate::desk::Desk;
use crate::handoff::WorkingHours;
use crate::i18n::{self, Phrase};
use crate::metrics as m;
use crate::ownership::Action;
use crate::store::{ChangeError, Conversation, NewMessage, StatusChange};

/// How the queue picks: the least-loaded agent with the skills (not the one who just passed it on
/// to a team), ties by id (deterministic).
pub fn pick<'a>(conversation: &Conversation, agents: &'a [Agent]) -> Option<&'a Agent> {
    agents
        .iter()
        .filter(|a| a.load < a.capacity)
        .filter(|a| conversation.declined_by.as_deref() != Some(a.id.as_str()))
        .filter(|a| a.speaks(conversation.language.as_deref()))
        .filter(|a| a.in_team(conversation.team.as_deref()))
        .min_by(|a, b| a.load.cmp(&b.load).then_with(|| a.id.cmp(&b.id)))
}

pub struct Queue {
    desk: Arc<Desk>,
    wakeup: Arc<Notify>,
    hours: Option<WorkingHours>,
    /// Resolve conversations a person holds after this long without a message.
    idle: Option<Duration>,
    /// Conversations already told their place in the queue (told once per stay).
    told: std::sync::Mutex<HashSet<String>>,
}

impl Queue {
    pub fn new(desk: Arc<Desk>, hours: Option<WorkingHours>, idle: Option<Duration>) -> Arc<Self> {
        Arc::new(Self {
            wakeup: desk.queue_wakeup.clone(),
            desk,
            hours,
            idle,
            told: std::sync::Mutex::new(HashSet::new()),
        })
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.resolve_idle().await {
                tracing::error!(error = %e, "the queue could not resolve idle conversations");
            }
            if let Err(e) = self.assign_waiting().await {
                tracing::error!(error = %e, "the queue could not assign conversations");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wakeup.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    /// One pass: assigns what can be assigned, tells the others their place. Returns how many
    /// were assigned.
    pub async fn assign_waiting(&self) -> anyhow::Result<usize> {
        let store = &self.desk.store;
        let queued = store.queued().await?;
        metrics::gauge!(m::QUEUED).set(queued.len() as f64);
        let mut agents = store.available_agents().await?;
        metrics::gauge!(m::AGENTS_ONLINE).set(agents.len() as f64);
        let mut assigned = 0;
        let mut waiting = Vec::new();
        for c in queued {
            let Some(agent) = pick(&c, &agents).cloned() else {
                waiting.push(c);
                continue;
            };
            let mut change = StatusChange::new(
                Action::Assign,
                "queue",
                format!(
                    "assigned to {}, the least-loaded online agent with the skills",
                    agent.name
                ),
            );
            change.assignee = Some(agent.id.clone());
            change.capacity = Some(agent.capacity);
            change.details = serde_json::json!({ "by": "queue", "load": agent.load });
            match store.apply_change(&c.id, &change).await {
                Ok(_) => {
                    assigned += 1;
                    metrics::counter!(m::ASSIGNMENTS, "way" => "queue").increment(1);
                    self.forget(&c.id);
                    crate::desk::record_wait(&c);
                    self.desk.agent_joined(&c, &agent.name).await?;
                    self.desk.live.touch(&c.id);
                    if let Some(a) = agents.iter_mut().find(|a| a.id == agent.id) {
                        a.load += 1;
                        if let Ok(Some(fresh)) = store.agent(&a.id).await {
                            self.desk.live.agent_changed(&fresh);
                        }
                    }
                    tracing::info!(conversation = %c.id, agent = %agent.name, "queue assigned a conversation");
                }
                Err(ChangeError::Conflict(_)) | Err(ChangeError::Refused(_)) => {
                    // Someone else moved it (or filled the agent's last slot); the next pass sees.
                    if let Ok(Some(a)) = store.agent(&agent.id).await {
                        if let Some(slot) = agents.iter_mut().find(|x| x.id == a.id) {
                            *slot = a;
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.tell_places(&waiting).await?;
        Ok(assigned)
    }

    /// Resolves queued and assigned conversations without a message for the idle time: a
    /// forgotten chat must not hold an agent's slot forever.
    pub async fn resolve_idle(&self) -> anyhow::Result<usize> {
        let Some(idle) = self.idle else {
            return Ok(0);
        };
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let ids = self
            .desk
            .store
            .idle_human_conversations(now_ms().saturating_sub(idle_ms))
            .await?;
        let mut resolved = 0;
        for id in ids {
            let mut change = StatusChange::new(
                Action::Resolve,
                "timeout",
                format!("no message for {} s", idle.as_secs()),
            );
            change.details = serde_json::json!({ "idle_secs": idle.as_secs() });
            match self.desk.store.apply_change(&id, &change).await {
                Ok(_) => {
                    resolved += 1;
                    self.forget(&id);
                    self.desk.live.touch(&id);
                    tracing::info!(conversation = %id, "resolved after being idle");
                }
                // A message or an agent got there first.
                Err(ChangeError::Conflict(_)) | Err(ChangeError::Refused(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(resolved)
    }

    fn forget(&self, id: &str) {
        self.told
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Tells each newly waiting customer their place (or, outside working hours, when someone
    /// will answer).
    async fn tell_places(&self, waiting: &[Conversation]) -> anyhow::Result<()> {
        let still: HashSet<&str> = waiting.iter().map(|c| c.id.as_str()).collect();
        let fresh: Vec<(usize, &Conversation)> = {
            let mut told = self.told.lock().unwrap_or_else(|e| e.into_inner());
            told.retain(|id| still.contains(id.as_str()));
            waiting
                .iter()
                .enumerate()
                .filter(|(_, c)| told.insert(c.id.clone()))
                .collect()
        };
        let now = now_ms();
        for (index, c) in fresh {
            let lang = c.language.clone().unwrap_or_else(|| "en".into());
            let text = match self.hours.as_ref().and_then(|h| h.closed_until(now)) {
                Some(when) => i18n::fill(Phrase::OutsideHours, &lang, &[("when", &when)]),
                None => i18n::fill(
                    Phrase::QueuePosition,
                    &lang,
                    &[("n", &(index + 1).to_string())],
                ),
            };
            self.desk
                .notify_customer(c, NewMessage::text(Author::System, text))
                .await?;
            self.desk.live.touch(&c.id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::Role;

    fn agent(id: &str, load: i64, capacity: i64, languages: &[&str], teams: &[&str]) -> Agent {
        Agent {
            id: id.into(),
            email: format!("{id}@example.com"),
            name: id.into(),
            role: Role::Agent,
            languages: languages.iter().map(|s| s.to_string()).collect(),
            teams: teams.iter().map(|s| s.to_string()).collect(),
            capacity,
            status: "online".into(),
            load,
        }
    }

    fn conversation(language: Option<&str>, team: Option<&str>) -> Conversation {
        Conversation {
            id: "c".into(),
            channel: "webchat".into(),
            contact_id: "k".into(),
            contact_external_id: "v".into(),
            status: "queued".into(),
            language: language.map(String::from),
            priority: 0,
            last_seq: 1,
            processed_seq: 1,
            unanswered: 0,
            assignee: None,
            team: team.map(String::from),
            queued_at: None,
            rating_requested_at: None,
            rating: None,
            declined_by: None,
        }
    }

    #[test]
    fn least_loaded_agent_with_the_skills_and_a_free_slot() {
        let agents = [
            agent("a", 0, 2, &["en"], &["billing"]),
            agent("b", 1, 2, &["ru"], &["billing"]),
            agent("c", 0, 2, &["ru"], &["support"]),
            agent("d", 2, 2, &["ru"], &[]),
            agent("e", 1, 3, &[], &[]),
        ];
        let pick_id = |lang, team| pick(&conversation(lang, team), &agents).map(|a| a.id.clone());
        // ru + billing: b (load 1) and e (load 1, any skills); d is full; ties by id.
        assert_eq!(pick_id(Some("ru"), Some("billing")).as_deref(), Some("b"));
        // en + billing: a is free.
        assert_eq!(pick_id(Some("en"), Some("billing")).as_deref(), Some("a"));
        // vi: only the generalist e.
        assert_eq!(pick_id(Some("vi"), Some("support")).as_deref(), Some("e"));
        // Nobody free for ru + retention except e.
        assert_eq!(pick_id(Some("ru"), Some("retention")).as_deref(), Some("e"));
        let mut passed_on = conversation(Some("ru"), Some("billing"));
        passed_on.declined_by = Some("b".into());
        assert_eq!(pick(&passed_on, &agents).map(|a| a.id.as_str()), Some("e"));
        let full = [agent("x", 1, 1, &[], &[])];
        assert!(pick(&conversation(None, None), &full).is_none());
    }
}
