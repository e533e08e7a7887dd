//! Agents' sessions checked once and trusted for a moment.
//!
//! Why it exists: every request of an agent's console, and of an integration with a bearer token,
//! checks its session. Read from the database each time, that check was most of the gateway's work
//! for an agent's reply request: a round trip to a read connection's thread for a statement that
//! also counts the agent's conversations. A session found valid is trusted for [`TRUST_MS`], never
//! past its own expiry.
//!
//! What that costs: a logout on this process is forgotten here at once; one on another gateway
//! process (several behind a load balancer), an agent's changed role or teams, and a session
//! deleted by hand take effect here within [`TRUST_MS`]. Unknown tokens are not remembered, so a
//! session created on another process works here at once.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use frontdesk_channels::now_ms;
use lru::LruCache;

use crate::agents::{token_hash, Agent};
use crate::store::{Result, Store};

/// How long a checked session is trusted without reading it again (ms).
pub const TRUST_MS: i64 = 2_000;

/// Most sessions remembered; the least recently used go first.
const CAPACITY: usize = 10_000;

struct Checked {
    agent: Agent,
    /// Until when it is trusted: the check plus `TRUST_MS`, or the session's expiry if sooner.
    until_ms: i64,
}

/// Sessions checked recently, by the hash of their token.
pub struct Sessions {
    checked: Mutex<LruCache<String, Checked>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            checked: Mutex::new(LruCache::new(
                NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }
}

impl Sessions {
    /// The agent a session token belongs to, unless it is unknown or expired: from a check less
    /// than [`TRUST_MS`] ago, else from the store.
    pub async fn agent(&self, store: &Store, token: &str) -> Result<Option<Agent>> {
        let key = token_hash(token);
        let now = now_ms();
        {
            let mut checked = self.checked();
            match checked.get(&key) {
                Some(c) if c.until_ms > now => return Ok(Some(c.agent.clone())),
                Some(_) => {
                    checked.pop(&key);
                }
                None => {}
            }
        }
        let Some((agent, expires_at_ms)) = store.session_agent(&key).await? else {
            return Ok(None);
        };
        self.checked().put(
            key,
            Checked {
                agent: agent.clone(),
                until_ms: expires_at_ms.min(now + TRUST_MS),
            },
        );
        Ok(Some(agent))
    }

    /// The session ended (a logout): it is not trusted any more.
    pub fn forget(&self, token: &str) {
        self.checked().pop(&token_hash(token));
    }

    fn checked(&self) -> std::sync::MutexGuard<'_, LruCache<String, Checked>> {
        self.checked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::{NewAgent, Role};

    async fn store_with_agent(dir: &std::path::Path) -> (Store, Agent) {
        let url = format!("sqlite://{}?mode=rwc", dir.join("store.db").display());
        let store = Store::open(&url, 4).await.expect("open");
        let agent = store
            .create_agent(&NewAgent {
                email: "anna@example.com".into(),
                name: "Anna".into(),
                password: "correct horse".into(),
                role: Role::Agent,
                languages: vec![],
                teams: vec![],
                capacity: 3,
            })
            .await
            .expect("agent");
        (store, agent)
    }

    /// A checked session is trusted for a moment without the store (even once deleted there by
    /// another process), a logout here ends it at once, and none outlives its own expiry.
    #[tokio::test]
    async fn a_checked_session_is_trusted_briefly_and_never_past_its_expiry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, anna) = store_with_agent(dir.path()).await;
        let sessions = Sessions::default();
        assert!(sessions
            .agent(&store, "no such token")
            .await
            .expect("check")
            .is_none());

        let token = store
            .create_session(&anna.id, 60_000)
            .await
            .expect("session");
        let seen = sessions.agent(&store, &token).await.expect("check");
        assert_eq!(seen.map(|a| a.id), Some(anna.id.clone()));
        // Deleted in the store (as by a logout on another gateway process): still trusted here
        // until TRUST_MS has passed since the check.
        store.delete_session(&token).await.expect("delete");
        let trusted = sessions.agent(&store, &token).await.expect("check");
        assert_eq!(trusted.map(|a| a.id), Some(anna.id.clone()));
        // A logout on this process: forgotten at once.
        sessions.forget(&token);
        assert!(sessions
            .agent(&store, &token)
            .await
            .expect("check")
            .is_none());

        // A session expiring sooner than TRUST_MS is trusted only until its expiry.
        let short = store.create_session(&anna.id, 300).await.expect("session");
        assert!(sessions
            .agent(&store, &short)
            .await
            .expect("check")
            .is_some());
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert!(sessions
            .agent(&store, &short)
            .await
            .expect("check")
            .is_none());
        store.close().await;
    }
}
