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
    pub console: ConsoleConfig,
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
    /// Telegram bots by channel name: `[telegram.support-bot]`.
    pub telegram: BTreeMap<String, TelegramConfig>,
    /// Discord bots by channel name: `[discord.support]`.
    pub discord: BTreeMap<String, DiscordConfig>,
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
            console: ConsoleConfig::default(),
            webchat: WebChatConfig::default(),
            outbox: OutboxConfig::default(),
            log: LogConfig::default(),
            embedding: Default::default(),
            knowledge: Default::default(),
            qdrant: Default::default(),
            nlu: Default::default(),
            handoff: Default::default(),
            channels: BTreeMap::new(),
            telegram: BTreeMap::new(),
            discord: BTreeMap::new(),
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

/// `[console]`: the agent console and agents' login sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// How long a login lasts.
    pub session_hours: i64,
    /// Mark the session cookie `Secure` (serve the console over HTTPS, e.g. behind a proxy).
    pub secure_cookie: bool,
    /// Canned responses agents insert with one click (a YAML list of {id, title, text, language}).
    pub canned: PathBuf,
    /// Logins allowed per e-mail address per minute (a password-guessing brake).
    pub logins_per_minute: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            session_hours: 12,
            secure_cookie: false,
            canned: PathBuf::from("knowledge/canned.yaml"),
            logins_per_minute: 10,
        }
    }
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

/// A token or secret: shown as `***` by `Debug`, so a logged config never leaks it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// How a Telegram bot receives updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TelegramMode {
    Polling,
    Webhook,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot token from @BotFather (`123456789:AA...`).
    pub token: Secret,
    /// `polling` or `webhook`; unset: `webhook` when `webhook_url` is set, else `polling`.
    #[serde(default)]
    pub mode: Option<TelegramMode>,
    /// Public HTTPS URL Telegram POSTs updates to: this gateway's
    /// `/api/v1/telegram/<name>/webhook` as seen from the Internet.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Sent by Telegram in `X-Telegram-Bot-Api-Secret-Token` (webhook mode; 16-256 characters
    /// of A-Z, a-z, 0-9, `_` and `-`).
    #[serde(default)]
    pub secret_token: Option<Secret>,
    /// Answer in group chats too (each group is one conversation).
    #[serde(default)]
    pub allow_groups: bool,
    /// Bot API server; unset: `https://api.telegram.org` (tests point it at a fake).
    #[serde(default)]
    pub api_url: Option<String>,
    /// How long one `getUpdates` long poll waits for updates.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_secs: u64,
}

impl TelegramConfig {
    pub fn effective_mode(&self) -> TelegramMode {
        self.mode.unwrap_or(if self.webhook_url.is_some() {
            TelegramMode::Webhook
        } else {
            TelegramMode::Polling
        })
    }
}

fn default_poll_timeout() -> u64 {
    25
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The bot token from the Discord developer portal (Bot > Token).
    pub token: Secret,
    /// A guild text channel where each new message opens a support thread; unset: DMs only.
    #[serde(default)]
    pub support_channel_id: Option<u64>,
    /// REST base instead of `https://discord.com` (tests point it at a fake; turns serenity's
    /// rate limiter off, which cannot follow it).
    #[serde(default)]
    pub api_url: Option<String>,
}

fn default_max_skew() -> i64 {
    300
}

fn default_timeout() -> u64 {
    10_000
}

/// The top-level keys, which environment variables may set.
const TOP_LEVEL_KEYS: [&str; 18] = [
    "listen",
    "data_dir",
    "languages",
    "database",
    "http",
    "admin",
    "console",
    "webchat",
    "outbox",
    "log",
    "embedding",
    "knowledge",
    "qdrant",
    "nlu",
    "handoff",
    "channels",
    "telegram",
    "discord",
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

    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::BTreeMap::new();
        let names = self
            .channels
            .keys()
            .map(|n| (n, "channels"))
            .chain(self.telegram.keys().map(|n| (n, "telegram")))
            .chain(self.discord.keys().map(|n| (n, "discord")));
        for (name, section) in names {
            anyhow::ensure!(
                !name.is_empty()
                    && name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "channel name '{name}' may only hold letters, digits, '-' and '_' (at most 64)"
            );
            anyhow::ensure!(
                name != &self.webchat_name(),
                "channel name '{name}' is taken by the web chat"
            );
            if let Some(other) = seen.insert(name.clone(), section) {
                anyhow::bail!(
                    "channel name '{name}' is used by both [{other}.{name}] and [{section}.{name}]"
                );
            }
        }
        for (name, tg) in &self.telegram {
            validate_telegram(name, tg)?;
        }
        for (name, dc) in &self.discord {
            let token = dc.token.expose();
            anyhow::ensure!(
                token.len() >= 50 && !token.chars().any(char::is_whitespace),
                "discord.{name}.token does not look like a Discord bot token (at least 50 characters, no spaces)"
            );
            anyhow::ensure!(
                dc.support_channel_id != Some(0),
                "discord.{name}.support_channel_id must be a channel id, not 0"
            );
            if let Some(url) = &dc.api_url {
                check_url(&format!("discord.{name}.api_url"), url)?;
            }
        }
        anyhow::ensure!(
            self.console.session_hours >= 1,
            "console.session_hours must be at least 1"
        );
        if let Some(hours) = &self.handoff.hours {
            hours
                .validate()
                .map_err(|e| anyhow::anyhow!("handoff.hours: {e}"))?;
        }
        for (name, ch) in &self.channels {
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

    /// Every configured channel name with its platform, sorted by name.
    pub fn channel_kinds(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<(String, &'static str)> = Vec::new();
        if self.webchat.enabled {
            out.push((self.webchat_name(), "webchat"));
        }
        out.extend(self.channels.keys().map(|n| (n.clone(), "webhook")));
        out.extend(self.telegram.keys().map(|n| (n.clone(), "telegram")));
        out.extend(self.discord.keys().map(|n| (n.clone(), "discord")));
        out.sort();
        out
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

fn check_url(field: &str, url: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        (url.starts_with("https://") || url.starts_with("http://")) && url.len() > 8,
        "{field} must be an http(s) URL"
    );
    Ok(())
}

fn validate_telegram(name: &str, tg: &TelegramConfig) -> anyhow::Result<()> {
    // `<bot id>:<secret>`, the secret being 35 characters today.
    let token = tg.token.expose();
    let well_formed = token.split_once(':').is_some_and(|(id, secret)| {
        !id.is_empty()
            && id.chars().all(|c| c.is_ascii_digit())
            && secret.len() >= 30
            && secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    anyhow::ensure!(
        well_formed,
        "telegram.{name}.token does not look like a bot token from @BotFather (<digits>:<at least 30 characters>)"
    );
    if let Some(url) = &tg.api_url {
        check_url(&format!("telegram.{name}.api_url"), url)?;
    }
    anyhow::ensure!(
        (1..=50).contains(&tg.poll_timeout_secs),
        "telegram.{name}.poll_timeout_secs must be between 1 and 50"
    );
    if tg.effective_mode() == TelegramMode::Webhook {
        let Some(url) = &tg.webhook_url else {
            anyhow::bail!(
                "telegram.{name}.mode is webhook but telegram.{name}.webhook_url is not set"
            );
        };
        check_url(&format!("telegram.{name}.webhook_url"), url)?;
        let Some(secret) = &tg.secret_token else {
            anyhow::bail!(
                "telegram.{name}.secret_token is required in webhook mode (16-256 characters)"
            );
        };
        let secret = secret.expose();
        anyhow::ensure!(
            (16..=256).contains(&secret.len())
                && secret
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "telegram.{name}.secret_token must be 16-256 characters of A-Z, a-z, 0-9, '_' and '-'"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_can_be_set_from_the_environment() {
        // The environment filter lists the sections by hand; `console` was once missing, so
        // FRONTDESK_CONSOLE__* was silently ignored.
        let value = serde_json::to_value(Config::default()).expect("serializable");
        let mut sections: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut listed = TOP_LEVEL_KEYS.to_vec();
        sections.sort_unstable();
        listed.sort_unstable();
        assert_eq!(sections, listed);
    }

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

    #[test]
    #[allow(clippy::result_large_err)]
    fn a_bot_token_can_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("env.toml", "[discord.support]\nsupport_channel_id = 42\n")?;
            jail.set_env("FRONTDESK_DISCORD__SUPPORT__TOKEN", "y".repeat(60));
            jail.set_env(
                "FRONTDESK_TELEGRAM__SALES__TOKEN",
                "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
            );
            let c = Config::load(Some(Path::new("env.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(c.discord["support"].token.expose(), "y".repeat(60));
            assert_eq!(c.discord["support"].support_channel_id, Some(42));
            assert_eq!(c.telegram["sales"].effective_mode(), TelegramMode::Polling);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn messenger_sections_are_checked_and_their_tokens_never_printed() {
        const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ok.toml",
                &format!(
                    "[telegram.tg]\ntoken = \"{TOKEN}\"\n\n[telegram.hooked]\ntoken = \"{TOKEN}\"\n\
                     webhook_url = \"https://support.example.com/api/v1/telegram/hooked/webhook\"\n\
                     secret_token = \"s3cr3t-token-0123456789\"\n\n[discord.dc]\ntoken = \"{}\"\n\
                     support_channel_id = 1234\n",
                    "x".repeat(70)
                ),
            )?;
            let c = Config::load(Some(Path::new("ok.toml")), Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(c.telegram["tg"].effective_mode(), TelegramMode::Polling);
            assert_eq!(c.telegram["hooked"].effective_mode(), TelegramMode::Webhook);
            assert_eq!(c.discord["dc"].support_channel_id, Some(1234));
            let shown = format!("{c:?}");
            assert!(
                !shown.contains(TOKEN) && !shown.contains("s3cr3t") && !shown.contains("xxxxx"),
                "{shown}"
            );

            for (file, bad, expect) in [
                ("t1.toml", "[telegram.tg]\ntoken = \"nonsense\"\n", "does not look like a bot token"),
                ("t2.toml", &format!("[telegram.tg]\ntoken = \"{TOKEN}\"\nmode = \"webhook\"\n"), "webhook_url is not set"),
                ("t3.toml", &format!("[telegram.tg]\ntoken = \"{TOKEN}\"\nwebhook_url = \"https://x.example/h\"\nsecret_token = \"short\"\n"), "secret_token must be"),
                ("t4.toml", "[discord.dc]\ntoken = \"abc\"\n", "does not look like a Discord bot token"),
                ("t5.toml", &format!("[telegram.crm]\ntoken = \"{TOKEN}\"\n[channels.crm]\nsecret = \"0123456789abcdef\"\n"), "used by both"),
            ] {
                jail.create_file(file, bad)?;
                let err = Config::load(Some(Path::new(file)), Overrides::default()).unwrap_err();
                assert!(err.to_string().contains(expect), "{file}: {err}");
            }
            Ok(())
        });
    }
}
