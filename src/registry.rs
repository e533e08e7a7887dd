//! The channels a gateway runs, changeable while it runs: the ones in the configuration file, plus
//! the ones an admin adds, changes or removes through `/api/v1/channels` (kept in the database, so
//! they come back after a restart). The router, the outbox and the HTTP handlers look channels up
//! here on every use, so a change applies at once; a changed Telegram or Discord bot is stopped and
//! started again with its new settings.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use frontdesk_channels::discord::{DiscordChannel, DiscordSettings};
use frontdesk_channels::telegram::{self, TelegramChannel, TelegramSettings};
use frontdesk_channels::webhook::{WebhookChannel, WebhookSettings};
use frontdesk_channels::{Channel, ChannelState, Gateway};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DiscordConfig, TelegramConfig, TelegramMode, WebhookChannelConfig};
use crate::store::Store;

/// A channel's settings, as the configuration file and the admin API give them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChannelSpec {
    Webhook(WebhookChannelConfig),
    Telegram(TelegramConfig),
    Discord(DiscordConfig),
}

impl ChannelSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelSpec::Webhook(_) => "webhook",
            ChannelSpec::Telegram(_) => "telegram",
            ChannelSpec::Discord(_) => "discord",
        }
    }
}

/// Where a channel's settings come from: only API channels can be changed through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Config,
    Api,
}

/// The channels at one moment: cheap to clone, never changed in place.
#[derive(Default, Clone)]
pub struct ChannelSet {
    pub all: HashMap<String, Arc<dyn Channel>>,
    pub webhooks: HashMap<String, Arc<WebhookChannel>>,
    pub telegram: HashMap<String, Arc<TelegramChannel>>,
    pub discord: HashMap<String, Arc<DiscordChannel>>,
}

struct Running {
    spec: ChannelSpec,
    source: Source,
    /// Stops its Telegram or Discord receiver, and the receiver's task.
    stop: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

pub struct Registry {
    set: RwLock<Arc<ChannelSet>>,
    specs: tokio::sync::Mutex<BTreeMap<String, Running>>,
    webchat_max_text_bytes: usize,
}

/// What the runners need once the gateway is up.
struct Runtime {
    gateway: Arc<dyn Gateway>,
    state: Arc<dyn ChannelState>,
    shutdown: CancellationToken,
}

const SETTING_PREFIX: &str = "channel:";

impl Registry {
    pub fn new(webchat: Option<Arc<dyn Channel>>, webchat_name: &str, max_text: usize) -> Self {
        let mut set = ChannelSet::default();
        if let Some(chat) = webchat {
            set.all.insert(webchat_name.to_string(), chat);
        }
        Self {
            set: RwLock::new(Arc::new(set)),
            specs: tokio::sync::Mutex::new(BTreeMap::new()),
            webchat_max_text_bytes: max_text,
        }
    }

    /// The channels now.
    pub fn current(&self) -> Arc<ChannelSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Channel>> {
        self.current().all.get(name).cloned()
    }

    pub fn kind_of(&self, name: &str) -> &'static str {
        self.get(name).map_or("unknown", |c| c.kind())
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.current().all.keys().cloned().collect();
        names.sort();
        names
    }

    /// Every channel's settings and where they came from (the web chat has none).
    pub async fn specs(&self) -> Vec<(String, ChannelSpec, Source)> {
        self.specs
            .lock()
            .await
            .iter()
            .map(|(n, r)| (n.clone(), r.spec.clone(), r.source))
            .collect()
    }

    fn build(&self, name: &str, spec: &ChannelSpec) -> anyhow::Result<Built> {
        Ok(match spec {
            ChannelSpec::Webhook(ch) => {
                Built::Webhook(Arc::new(WebhookChannel::new(WebhookSettings {
                    name: name.to_string(),
                    secret: ch.secret.clone(),
                    outbound_url: ch.outbound_url.clone(),
                    max_skew_secs: ch.max_skew_secs,
                    timeout: Duration::from_millis(ch.timeout_ms),
                    max_text_bytes: self.webchat_max_text_bytes.max(4096),
                })?))
            }
            ChannelSpec::Telegram(tg) => {
                let mode = match tg.effective_mode() {
                    TelegramMode::Polling => telegram::Mode::Polling,
                    TelegramMode::Webhook => telegram::Mode::Webhook {
                        // Both checked by Config::validate.
                        url: tg.webhook_url.clone().unwrap_or_default(),
                        secret_token: tg
                            .secret_token
                            .as_ref()
                            .map(|s| s.expose().to_string())
                            .unwrap_or_default(),
                    },
                };
                Built::Telegram(Arc::new(
                    TelegramChannel::new(TelegramSettings {
                        name: name.to_string(),
                        token: tg.token.expose().to_string(),
                        api_url: tg.api_url.clone(),
                        mode,
                        allow_groups: tg.allow_groups,
                        poll_timeout: Duration::from_secs(tg.poll_timeout_secs),
                    })
                    .with_context(|| format!("cannot set up Telegram channel '{name}'"))?,
                ))
            }
            ChannelSpec::Discord(dc) => {
                Built::Discord(Arc::new(DiscordChannel::new(DiscordSettings {
                    name: name.to_string(),
                    token: dc.token.expose().to_string(),
                    api_url: dc.api_url.clone(),
                    support_channel_id: dc.support_channel_id,
                })))
            }
        })
    }

    /// Replaces (or removes, with `None`) a channel in the current set.
    fn swap(&self, name: &str, built: Option<&Built>) {
        let mut guard = self.set.write().unwrap_or_else(|e| e.into_inner());
        let mut set = (**guard).clone();
        set.all.remove(name);
        set.webhooks.remove(name);
        set.telegram.remove(name);
        set.discord.remove(name);
        match built {
            Some(Built::Webhook(c)) => {
                set.all.insert(name.to_string(), c.clone());
                set.webhooks.insert(name.to_string(), c.clone());
            }
            Some(Built::Telegram(c)) => {
                set.all.insert(name.to_string(), c.clone());
                set.telegram.insert(name.to_string(), c.clone());
            }
            Some(Built::Discord(c)) => {
                set.all.insert(name.to_string(), c.clone());
                set.discord.insert(name.to_string(), c.clone());
            }
            None => {}
        }
        *guard = Arc::new(set);
    }

    /// Adds the configuration file's channels (at build time, before anything runs).
    pub async fn load_config(&self, config: &Config) -> anyhow::Result<()> {
        let mut specs = self.specs.lock().await;
        let all = config
            .channels
            .iter()
            .map(|(n, c)| (n.clone(), ChannelSpec::Webhook(c.clone())))
            .chain(
                config
                    .telegram
                    .iter()
                    .map(|(n, c)| (n.clone(), ChannelSpec::Telegram(c.clone()))),
            )
            .chain(
                config
                    .discord
                    .iter()
                    .map(|(n, c)| (n.clone(), ChannelSpec::Discord(c.clone()))),
            );
        for (name, spec) in all {
            self.add(&mut specs, name, spec, Source::Config)?;
        }
        Ok(())
    }

    /// Builds a channel and makes it current (its receiver starts with the gateway).
    fn add(
        &self,
        specs: &mut BTreeMap<String, Running>,
        name: String,
        spec: ChannelSpec,
        source: Source,
    ) -> anyhow::Result<()> {
        let built = self.build(&name, &spec)?;
        self.swap(&name, Some(&built));
        specs.insert(
            name,
            Running {
                spec,
                source,
                stop: None,
            },
        );
        Ok(())
    }

    /// Adds the channels created through the API before (kept in the database).
    pub async fn load_saved(&self, store: &Store, config: &Config) -> anyhow::Result<()> {
        let mut specs = self.specs.lock().await;
        for (key, value) in store.settings_with_prefix(SETTING_PREFIX).await? {
            let name = key.trim_start_matches(SETTING_PREFIX).to_string();
            if specs.contains_key(&name) || name == config.webchat_name() {
                tracing::warn!(channel = %name, "a saved channel has the name of a configured one; the configuration file wins");
                continue;
            }
            let spec: ChannelSpec = match serde_json::from_str(&value) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(channel = %name, error = %e, "a saved channel cannot be read; skipped");
                    continue;
                }
            };
            self.add(&mut specs, name, spec, Source::Api)?;
        }
        Ok(())
    }
}

enum Built {
    Webhook(Arc<WebhookChannel>),
    Telegram(Arc<TelegramChannel>),
    Discord(Arc<DiscordChannel>),
}

impl Built {
    fn start(&self, rt: &Runtime) -> Option<(CancellationToken, tokio::task::JoinHandle<()>)> {
        let stop = rt.shutdown.child_token();
        let task = match self {
            Built::Webhook(_) => return None,
            Built::Telegram(bot) => tokio::spawn(bot.clone().run(
                rt.gateway.clone(),
                rt.state.clone(),
                stop.clone(),
            )),
            Built::Discord(bot) => tokio::spawn(bot.clone().run(rt.gateway.clone(), stop.clone())),
        };
        Some((stop, task))
    }
}

/// Stops a bot's receiver and waits for it (a Telegram bot saves its polling offset), so the old
/// and new receiver never poll at the same time.
async fn stop_receiver(old: Running) {
    if let Some((stop, task)) = old.stop {
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
}

/// Why a channel change through the API was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChannelChangeError {
    #[error("{0}")]
    Invalid(String),
    #[error("channel '{0}' exists already")]
    Exists(String),
    #[error("no channel named '{0}'")]
    NotFound(String),
    #[error("channel '{0}' comes from the configuration file: change it there")]
    FromConfig(String),
    #[error("{0}")]
    Internal(String),
}

/// Changes channels while the gateway runs.
pub struct Manager {
    pub registry: Arc<Registry>,
    store: Store,
    config: Arc<Config>,
    runtime: std::sync::OnceLock<Runtime>,
}

impl Manager {
    pub fn new(registry: Arc<Registry>, store: Store, config: Arc<Config>) -> Self {
        Self {
            registry,
            store,
            config,
            runtime: std::sync::OnceLock::new(),
        }
    }

    /// Starts every Telegram and Discord receiver; later changes start theirs at once.
    pub async fn start(
        &self,
        gateway: Arc<dyn Gateway>,
        state: Arc<dyn ChannelState>,
        shutdown: CancellationToken,
    ) {
        let rt = self.runtime.get_or_init(|| Runtime {
            gateway,
            state,
            shutdown,
        });
        let set = self.registry.current();
        let mut specs = self.registry.specs.lock().await;
        for (name, running) in specs.iter_mut() {
            let built = if let Some(b) = set.telegram.get(name) {
                Built::Telegram(b.clone())
            } else if let Some(b) = set.discord.get(name) {
                Built::Discord(b.clone())
            } else {
                continue;
            };
            running.stop = built.start(rt);
        }
    }

    /// After shutdown: waits for every receiver to finish.
    pub async fn stopped(&self) {
        let mut specs = self.registry.specs.lock().await;
        for running in specs.values_mut() {
            if let Some((stop, task)) = running.stop.take() {
                stop.cancel();
                let _ = task.await;
            }
        }
    }

    /// Checks a channel's settings with the same rules as the configuration file.
    fn validate(&self, name: &str, spec: &ChannelSpec) -> Result<(), ChannelChangeError> {
        let mut config = (*self.config).clone();
        config.channels.clear();
        config.telegram.clear();
        config.discord.clear();
        match spec {
            ChannelSpec::Webhook(c) => {
                config.channels.insert(name.to_string(), c.clone());
            }
            ChannelSpec::Telegram(c) => {
                config.telegram.insert(name.to_string(), c.clone());
            }
            ChannelSpec::Discord(c) => {
                config.discord.insert(name.to_string(), c.clone());
            }
        }
        config
            .validate()
            .map_err(|e| ChannelChangeError::Invalid(format!("{e:#}")))
    }

    /// Creates (`create`) or replaces an API channel, saves it and runs it.
    pub async fn put(
        &self,
        name: &str,
        spec: ChannelSpec,
        create: bool,
    ) -> Result<(), ChannelChangeError> {
        self.validate(name, &spec)?;
        if name == self.config.webchat_name() {
            return Err(ChannelChangeError::Exists(name.to_string()));
        }
        let mut specs = self.registry.specs.lock().await;
        match specs.get(name) {
            Some(r) if r.source == Source::Config => {
                return Err(ChannelChangeError::FromConfig(name.to_string()))
            }
            Some(_) if create => return Err(ChannelChangeError::Exists(name.to_string())),
            None if !create => return Err(ChannelChangeError::NotFound(name.to_string())),
            _ => {}
        }
        let built = self
            .registry
            .build(name, &spec)
            .map_err(|e| ChannelChangeError::Invalid(format!("{e:#}")))?;
        let json = serde_json::to_string(&spec)
            .map_err(|e| ChannelChangeError::Internal(e.to_string()))?;
        self.store
            .put_setting(&format!("{SETTING_PREFIX}{name}"), &json)
            .await
            .map_err(|e| ChannelChangeError::Internal(e.to_string()))?;
        if let Some(old) = specs.remove(name) {
            stop_receiver(old).await;
        }
        self.registry.swap(name, Some(&built));
        let stop = self.runtime.get().and_then(|rt| built.start(rt));
        tracing::info!(channel = %name, kind = spec.kind(), "channel {} through the admin API", if create { "added" } else { "changed" });
        specs.insert(
            name.to_string(),
            Running {
                spec,
                source: Source::Api,
                stop,
            },
        );
        Ok(())
    }

    /// Removes an API channel: it stops receiving, and its pending deliveries wait (and are
    /// dead-lettered) until a channel of that name exists again.
    pub async fn delete(&self, name: &str) -> Result<(), ChannelChangeError> {
        let mut specs = self.registry.specs.lock().await;
        match specs.get(name) {
            None => return Err(ChannelChangeError::NotFound(name.to_string())),
            Some(r) if r.source == Source::Config => {
                return Err(ChannelChangeError::FromConfig(name.to_string()))
            }
            Some(_) => {}
        }
        self.store
            .delete_setting(&format!("{SETTING_PREFIX}{name}"))
            .await
            .map_err(|e| ChannelChangeError::Internal(e.to_string()))?;
        if let Some(old) = specs.remove(name) {
            stop_receiver(old).await;
        }
        self.registry.swap(name, None);
        tracing::info!(channel = %name, "channel removed through the admin API");
        Ok(())
    }
}
