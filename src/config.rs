//! The one typed configuration of a gateway: defaults, then `frontdesk.toml` (or `--config`), then
//! `FRONTDESK_*` environment variables (nested keys joined with `__`, e.g.
//! `FRONTDESK_DATABASE__URL`), then command-line flags. Every field has a default, so
//! `frontdesk serve` with nothing configured runs the demo.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Where the SQLite file (and later the models and vectors) live.
    pub data_dir: PathBuf,
    /// Languages customers write in (two-letter codes); detection chooses among these.
    pub languages: Vec<String>,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub admin: AdminConfig,
    pub webchat: WebChatConfig,
    pub outbox: OutboxConfig,
    pub log: LogConfig,
    pub embedding: crate::embed::EmbedConfig,
    pub knowledge: crate::knowledge::KnowledgeConfig,
    /// Vector store: Qdrant Edge under `<data_dir>/vectors` unless `qdrant.url` names a server.
    pub qdrant: crate::vectors::VectorConfig,
    /// Intents, sentiment and emotion.
    pub nlu: crate::nlu::NluConfig,
    /// When the bot hands a conversation to a person.
    pub handoff: crate::handoff::HandoffConfig,
    /// Webhook channels by name: `[channels.crm]`.
    pub channels: BTreeMap<String, WebhookChannelConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            languages: ["en", "ru", "vi", "zh"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            database: DatabaseConfig::default(),
            http: HttpConfig::default(),
            admin: AdminConfig::default(),
            webchat: WebChatConfig::default(),
            outbox: OutboxConfig::default(),
            log: LogConfig::default(),
            embedding: Default::default(),
            knowledge: Default::default(),
            qdrant: Default::default(),
            nlu: Default::default(),
            handoff: Default::default(),
            channels: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` or `postgres://...`; unset means `sqlite://<data_dir>/frontdesk.db`.
    pub url: Option<String>,
    /// Connections for PostgreSQL (SQLite uses one writer and a few readers).
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token for the admin API (`/api/v1/deliveries`). Unset: the admin API is closed.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebChatConfig {
    pub enabled: bool,
    /// Signs visitor tokens. Unset: a random secret is made once and kept in the database, which
    /// every gateway process sharing that database then uses.
    pub secret: Option<String>,
    pub max_text_bytes: usize,
    pub rate_per_second: u32,
    pub rate_burst: u32,
    pub heartbeat_ms: u64,
}

impl Default for WebChatConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            secret: None,
            max_text_bytes: 4096,
            rate_per_second: 5,
            rate_burst: 10,
            heartbeat_ms: 25_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Attempts before a delivery is marked dead.
    pub max_attempts: i64,
    /// First retry delay; doubles each attempt, with jitter, up to `max_delay_ms`.
    pub base_delay_ms: i64,
    pub max_delay_ms: i64,
    /// How often the outbox looks for due deliveries when nothing woke it.
    pub poll_ms: u64,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// How long a claimed delivery is reserved before another worker may retry it.
    pub lease_ms: i64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay_ms: 1000,
            max_delay_ms: 300_000,
            poll_ms: 500,
            concurrency: 32,
            lease_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter, e.g. `info,frontdesk=debug`. `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannelConfig {
    /// Shared secret for HMAC-SHA256 signatures in both directions.
    pub secret: String,
    /// Where bot and agent messages are POSTed; unset: they are dead-lettered with that reason.
    #[serde(default)]
    pub outbound_url: Option<String>,
    #[serde(default = "default_max_skew")]
    pub max_skew_secs: i64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_max_skew() -> i64 {
    300
}

fn default_timeout() -> u64 {
    10_000
}

/// The top-level keys, which environment variables may set.
const TOP_LEVEL_KEYS: [&str; 15] = [
    "listen",
    "data_dir",
    "languages",
    "database",
    "http",
    "admin",
    "webchat",
    "outbox",
    "log",
    "embedding",
    "knowledge",
    "qdrant",
    "nlu",
    "handoff",
    "channels",
];

/// Values given on the command line; they win over file and environment.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads defaults, then the file (if given, or `frontdesk.toml` if present), then the environment.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                anyhow::ensure!(
                    path.exists(),
                    "config file {} does not exist",
                    path.display()
                );
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("frontdesk.toml")),
        }
        figment = figment
            .merge(
                Env::prefixed("FRONTDESK_")
                    // Only keys of this struct: FRONTDESK_CONFIG and test variables are not config.
                    .filter(|key| {
                        let top = key.as_str().split("__").next().unwrap_or_default();
                        TOP_LEVEL_KEYS.iter().any(|k| top.eq_ignore_ascii_case(k))
                    })
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides));
        let config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (name, ch) in &self.channels {
            anyhow::ensure!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "channel name '{name}' may only hold letters, digits, '-' and '_'"
            );
            anyhow::ensure!(
                name != &self.webchat_name(),
                "channel name '{name}' is taken by the web chat"
            );
            anyhow::ensure!(
                ch.secret.len() >= 16,
                "channels.{name}.secret must be at least 16 characters"
            );
        }
        anyhow::ensure!(
            self.outbox.max_attempts >= 1,
            "outbox.max_attempts must be >= 1"
        );
        anyhow::ensure!(
            self.webchat.max_text_bytes >= 1,
            "webchat.max_text_bytes must be >= 1"
        );
        Ok(())
    }

    /// The channel name under which web chat conversations are stored.
    pub fn webchat_name(&self) -> String {
        "webchat".to_string()
    }

    /// The database URL, defaulting to the SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("frontdesk.db").display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_the_demo_on_localhost_with_sqlite_in_data() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url(), "sqlite://data/frontdesk.db?mode=rwc");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                r#"
                listen = "127.0.0.1:9000"
                [webchat]
                rate_burst = 3
                [channels.crm]
                secret = "0123456789abcdef"
                outbound_url = "http://127.0.0.1:1/hook"
                "#,
            )?;
            jail.set_env("FRONTDESK_DATA_DIR", "/tmp/fd");
            jail.set_env("FRONTDESK_DATABASE__URL", "postgres://u@h/db");
            let c = Config::load(
                Some(Path::new("custom.toml")),
                Overrides {
                    listen: Some("127.0.0.1:9100".parse().expect("addr")),
                    data_dir: None,
                },
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(c.listen.to_string(), "127.0.0.1:9100");
            assert_eq!(c.data_dir, PathBuf::from("/tmp/fd"));
            assert_eq!(c.database_url(), "postgres://u@h/db");
            assert_eq!(c.webchat.rate_burst, 3);
            assert_eq!(c.channels["crm"].max_skew_secs, 300);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn unknown_keys_and_weak_secrets_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("a.toml", "lisen = \"127.0.0.1:1\"")?;
            let err = Config::load(Some(Path::new("a.toml")), Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("lisen"), "{err}");
            jail.create_file("b.toml", "[channels.crm]\nsecret = \"short\"")?;
            let err = Config::load(Some(Path::new("b.toml")), Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("at least 16"), "{err}");
            Ok(())
        });
    }
}
