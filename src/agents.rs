//! Human agents: who they are, what they can handle (languages, teams, capacity), whether they are
//! online, and their login sessions. Passwords are argon2id hashes; session tokens are random and
//! only their SHA-256 is stored, so a leaked database does not log anyone in.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use frontdesk_channels::now_ms;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;
use utoipa::ToSchema;

use crate::store::{db, new_id, Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Agent,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

/// An agent as the API shows it (never with its password hash).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Agent {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// Languages it answers in; empty = any.
    pub languages: Vec<String>,
    /// Teams it belongs to (tied to intents); empty = every team.
    pub teams: Vec<String>,
    /// Conversations it handles at once.
    pub capacity: i64,
    /// `online`, `away` or `offline`; only online agents get conversations assigned.
    pub status: String,
    /// Conversations assigned to it now.
    pub load: i64,
}

impl Agent {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn speaks(&self, language: Option<&str>) -> bool {
        match language {
            Some(l) => self.languages.is_empty() || self.languages.iter().any(|x| x == l),
            None => true,
        }
    }

    pub fn in_team(&self, team: Option<&str>) -> bool {
        match team {
            Some(t) => self.teams.is_empty() || self.teams.iter().any(|x| x == t),
            None => true,
        }
    }
}

/// What `frontdesk agent add` creates.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub email: String,
    pub name: String,
    pub password: String,
    pub role: Role,
    pub languages: Vec<String>,
    pub teams: Vec<String>,
    pub capacity: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("an agent with e-mail {0} exists already")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("hashing the password failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Splits `--skills en,ru,billing` into languages (the configured language codes) and teams
/// (anything else).
pub fn split_skills(skills: &[String], languages: &[String]) -> (Vec<String>, Vec<String>) {
    let mut langs = Vec::new();
    let mut teams = Vec::new();
    for s in skills.iter().map(|s| s.trim().to_lowercase()) {
        if s.is_empty() {
            continue;
        }
        if languages.contains(&s) {
            langs.push(s);
        } else {
            teams.push(s);
        }
    }
    (langs, teams)
}

pub fn hash_password(password: &str) -> std::result::Result<String, AgentError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AgentError::Hash(e.to_string()))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A stored hash no password matches: a login with an unknown e-mail takes as long as one with
/// a wrong password, so responses do not reveal which e-mails exist.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no password matches this one").unwrap_or_default())
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

const AGENT_COLUMNS: &str = "a.id, a.email, a.name, a.role, a.languages, a.teams, a.capacity, a.status, \
     (SELECT COUNT(*) FROM conversations c WHERE c.assignee = a.id AND c.status = 'assigned') AS load";

fn agent_from_row(r: &AnyRow) -> Result<Agent> {
    let get = |e| StoreError::Db("reading an agent", e);
    let role: String = r.try_get("role").map_err(get)?;
    let languages: String = r.try_get("languages").map_err(get)?;
    let teams: String = r.try_get("teams").map_err(get)?;
    Ok(Agent {
        id: r.try_get("id").map_err(get)?,
        email: r.try_get("email").map_err(get)?,
        name: r.try_get("name").map_err(get)?,
        role: if role == "admin" {
            Role::Admin
        } else {
            Role::Agent
        },
        languages: serde_json::from_str(&languages).unwrap_or_default(),
        teams: serde_json::from_str(&teams).unwrap_or_default(),
        capacity: r.try_get("capacity").map_err(get)?,
        status: r.try_get("status").map_err(get)?,
        load: r.try_get("load").map_err(get)?,
    })
}

impl Store {
    pub async fn create_agent(&self, new: &NewAgent) -> std::result::Result<Agent, AgentError> {
        let email = new.email.trim().to_lowercase();
        if !email.contains('@') || email.len() > 254 {
            return Err(AgentError::Invalid(format!(
                "'{}' is not an e-mail address",
                new.email
            )));
        }
        if new.name.trim().is_empty() {
            return Err(AgentError::Invalid("the name is empty".into()));
        }
        if new.password.chars().count() < 8 {
            return Err(AgentError::Invalid(
                "the password needs at least 8 characters".into(),
            ));
        }
        if new.capacity < 1 {
            return Err(AgentError::Invalid(
                "the capacity must be at least 1".into(),
            ));
        }
        if self.agent_by_email(&email).await?.is_some() {
            return Err(AgentError::Exists(email));
        }
        let hash = hash_password(&new.password)?;
        let id = new_id();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO agents (id, email, name, password_hash, role, languages, teams, capacity, \
             status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'offline', $9, $9)",
        )
        .bind(&id)
        .bind(&email)
        .bind(new.name.trim())
        .bind(hash)
        .bind(new.role.as_str())
        .bind(serde_json::to_string(&new.languages).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&new.teams).unwrap_or_else(|_| "[]".into()))
        .bind(new.capacity)
        .bind(now)
        .execute(&self.write)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                AgentError::Exists(email.clone())
            }
            e => AgentError::Store(StoreError::Db("adding an agent", e)),
        })?;
        self.agent(&id)
            .await?
            .ok_or_else(|| AgentError::Store(StoreError::Corrupt("agent vanished".into())))
    }

    pub async fn agent(&self, id: &str) -> Result<Option<Agent>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents a WHERE a.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db("reading an agent"))?;
        row.as_ref().map(agent_from_row).transpose()
    }

    pub async fn agent_by_email(&self, email: &str) -> Result<Option<Agent>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents a WHERE a.email = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(email.trim().to_lowercase())
            .fetch_optional(&self.read)
            .await
            .map_err(db("reading an agent"))?;
        row.as_ref().map(agent_from_row).transpose()
    }

    /// Every agent, by name.
    pub async fn agents(&self) -> Result<Vec<Agent>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents a ORDER BY a.name, a.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.read)
            .await
            .map_err(db("listing agents"))?;
        rows.iter().map(agent_from_row).collect()
    }

    /// Online agents with a free slot, least loaded first.
    pub async fn available_agents(&self) -> Result<Vec<Agent>> {
        let sql =
            format!("SELECT {AGENT_COLUMNS} FROM agents a WHERE a.status = 'online' ORDER BY a.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.write)
            .await
            .map_err(db("listing online agents"))?;
        let mut agents: Vec<Agent> = rows
            .iter()
            .map(agent_from_row)
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|a| a.load < a.capacity)
            .collect();
        agents.sort_by_key(|a| a.load);
        Ok(agents)
    }

    pub async fn set_agent_status(&self, id: &str, status: &str) -> Result<()> {
        sqlx::query("UPDATE agents SET status = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(status)
            .bind(now_ms())
            .execute(&self.write)
            .await
            .map_err(db("changing an agent's status"))?;
        Ok(())
    }

    /// Checks an e-mail and password; the agent when they match.
    pub async fn check_login(&self, email: &str, password: &str) -> Result<Option<Agent>> {
        let row = sqlx::query("SELECT id, password_hash FROM agents WHERE email = $1")
            .bind(email.trim().to_lowercase())
            .fetch_optional(&self.read)
            .await
            .map_err(db("checking a login"))?;
        let (id, hash) = match &row {
            Some(r) => (
                Some(
                    r.try_get::<String, _>("id")
                        .map_err(db("checking a login"))?,
                ),
                r.try_get::<String, _>("password_hash")
                    .map_err(db("checking a login"))?,
            ),
            None => (None, dummy_hash().to_string()),
        };
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        match (ok, id) {
            (true, Some(id)) => self.agent(&id).await,
            _ => Ok(None),
        }
    }

    /// Starts a session; returns its token (shown once, stored only as a hash).
    pub async fn create_session(&self, agent_id: &str, ttl_ms: i64) -> Result<String> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        let now = now_ms();
        sqlx::query(
            "INSERT INTO agent_sessions (token_hash, agent_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash(&token))
        .bind(agent_id)
        .bind(now)
        .bind(now + ttl_ms)
        .execute(&self.write)
        .await
        .map_err(db("starting a session"))?;
        Ok(token)
    }

    /// The agent a session belongs to, by the hash of its token (`token_hash`), and when the
    /// session expires (ms), unless it expired. Requests check sessions through
    /// [`crate::sessions::Sessions`], which has hashed the token already.
    pub async fn session_agent(&self, hash: &str) -> Result<Option<(Agent, i64)>> {
        // One read, not two.
        let sql = format!(
            "SELECT {AGENT_COLUMNS}, s.expires_at FROM agent_sessions s \
             JOIN agents a ON a.id = s.agent_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(hash)
            .bind(now_ms())
            .fetch_optional(&self.read)
            .await
            .map_err(db("reading a session"))?;
        let Some(row) = row else { return Ok(None) };
        let expires_at: i64 = row.try_get("expires_at").map_err(db("reading a session"))?;
        Ok(Some((agent_from_row(&row)?, expires_at)))
    }

    pub async fn delete_session(&self, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM agent_sessions WHERE token_hash = $1 OR expires_at < $2")
            .bind(token_hash(token))
            .bind(now_ms())
            .execute(&self.write)
            .await
            .map_err(db("ending a session"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct hors", &hash));
        assert!(dummy_hash().starts_with("$argon2id$"));
        assert!(!verify_password("correct horse", dummy_hash()));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn skills_split_into_languages_and_teams() {
        let langs: Vec<String> = ["en", "ru", "vi", "zh"].map(String::from).to_vec();
        let skills: Vec<String> = ["EN", " billing", "ru", "", "support"]
            .map(String::from)
            .to_vec();
        let (l, t) = split_skills(&skills, &langs);
        assert_eq!(l, ["en", "ru"]);
        assert_eq!(t, ["billing", "support"]);
    }

    #[test]
    fn skills_match_languages_and_teams_with_empty_meaning_any() {
        let agent = Agent {
            id: "a".into(),
            email: "a@x".into(),
            name: "A".into(),
            role: Role::Agent,
            languages: vec!["ru".into()],
            teams: vec![],
            capacity: 1,
            status: "online".into(),
            load: 0,
        };
        assert!(agent.speaks(Some("ru")) && agent.speaks(None) && !agent.speaks(Some("en")));
        assert!(agent.in_team(Some("billing")) && agent.in_team(None));
    }
}
