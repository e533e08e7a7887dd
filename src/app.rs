//! Builds a gateway from its configuration and runs it: store, channels, router, outbox, HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use frontdesk_channels::webchat::{WebChat, WebChatSettings};
use frontdesk_channels::{Channel, ChannelState, Gateway};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::desk::{read_canned, Desk};
use crate::embed::Embedder;
use crate::http::{self, AppState};
use crate::knowledge::{Centering, KnowledgeBase};
use crate::live::Live;
use crate::nlu::Nlu;
use crate::outbox::Outbox;
use crate::pipeline::Pipeline;
use crate::queue::Queue;
use crate::registry::{Manager, Registry};
use crate::replies::Replies;
use crate::router::Router;
use crate::store::Store;

/// A gateway ready to serve.
pub struct App {
    pub state: AppState,
    pub outbox: Arc<Outbox>,
    pub queue: Arc<Queue>,
    /// Turns conversation changes into console frames (runs while serving).
    live_task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl App {
    /// Opens the store (applying migrations) and wires the channels, router and outbox.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        let url = config.database_url();
        let store = Store::open(&url, config.database.max_connections)
            .await
            .with_context(|| format!("cannot open the database {}", redact(&url)))?;
        let metrics = crate::metrics::install()?;
        // One embedding service for the knowledge base and understanding.
        let embedding = if config.knowledge.enabled || config.nlu.enabled {
            Some(load_embedder(&config).await?)
        } else {
            None
        };
        let knowledge = match &embedding {
            Some(e) if config.knowledge.enabled => {
                Some(Arc::new(open_knowledge(&config, store.clone(), e).await?))
            }
            _ => None,
        };
        let nlu = match &embedding {
            Some(e) if config.nlu.enabled => Some(open_nlu(&config, e).await?),
            _ => None,
        };

        let webchat = if config.webchat.enabled {
            let secret = match &config.webchat.secret {
                Some(s) => s.clone(),
                None => {
                    store
                        .setting_or_init("webchat_secret", || {
                            hex::encode(rand::random::<[u8; 32]>())
                        })
                        .await?
                }
            };
            Some(Arc::new(WebChat::new(
                WebChatSettings {
                    name: config.webchat_name(),
                    max_text_bytes: config.webchat.max_text_bytes,
                    rate_per_second: config.webchat.rate_per_second,
                    rate_burst: config.webchat.rate_burst,
                    heartbeat: Duration::from_millis(config.webchat.heartbeat_ms.max(100)),
                },
                secret.into_bytes(),
            )))
        } else {
            None
        };
        // The configured channels, then the ones added through the admin API before.
        let registry = Arc::new(Registry::new(
            webchat.clone().map(|c| c as Arc<dyn Channel>),
            &config.webchat_name(),
            config.webchat.max_text_bytes,
        ));
        registry.load_config(&config).await?;
        registry.load_saved(&store, &config).await?;

        let wakeup = Arc::new(Notify::new());
        let queue_wakeup = Arc::new(Notify::new());
        let (live, live_task) = Live::new(store.clone(), registry.clone());
        let outbox = Outbox::new(
            store.clone(),
            registry.clone(),
            config.outbox.clone(),
            wakeup,
        );
        let router = Router::new(
            store.clone(),
            registry.clone(),
            Pipeline::new(
                &config.languages,
                knowledge.clone(),
                nlu.clone(),
                config.handoff.clone(),
            )?,
            outbox.clone(),
            queue_wakeup.clone(),
            live.clone(),
        );
        let teams = match &nlu {
            Some(n) => n.teams(),
            None => Vec::new(),
        };
        let desk = Arc::new(Desk {
            store: store.clone(),
            router: router.clone(),
            live: live.clone(),
            queue_wakeup,
            knowledge: knowledge.clone(),
            canned: read_canned(&config.console.canned)?,
            teams,
            replies: Replies::start(store.clone(), outbox.clone(), config.outbox.lease_ms),
        });
        let idle = config.handoff.idle_resolve_secs;
        let queue = Queue::new(
            desk.clone(),
            config.handoff.hours.clone(),
            (idle > 0).then(|| Duration::from_secs(idle)),
        );
        let state_logins_per_minute = config.console.logins_per_minute;
        let config = Arc::new(config);
        let config_for_manager = config.clone();
        let state = AppState {
            config,
            store: store.clone(),
            router,
            webchat,
            channels: registry.clone(),
            channel_manager: Arc::new(Manager::new(
                registry.clone(),
                store.clone(),
                config_for_manager,
            )),
            knowledge,
            nlu,
            metrics,
            desk,
            live,
            logins: Arc::new(crate::http::auth::LoginLimiter::new(
                state_logins_per_minute,
            )),
            sessions: Arc::default(),
        };
        Ok(App {
            state,
            outbox,
            queue,
            live_task: Box::pin(live_task),
        })
    }

    /// Serves on `listener` until `shutdown` is cancelled.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let outbox_task = tokio::spawn(self.outbox.clone().run(shutdown.clone()));
        let live_task = tokio::spawn(self.live_task);
        let queue_task = tokio::spawn(self.queue.clone().run(shutdown.clone()));
        let recovered = self.state.router.recover().await?;
        tracing::info!(
            channels = ?self.state.router.channel_names(),
            recovered,
            backend = ?self.state.store.backend(),
            "gateway started"
        );
        // The messenger bots start receiving once the router is ready for their messages.
        let gateway: Arc<dyn Gateway> = self.state.router.clone();
        let channel_state: Arc<dyn ChannelState> = Arc::new(self.state.store.clone());
        let manager = self.state.channel_manager.clone();
        manager
            .start(gateway, channel_state, shutdown.clone())
            .await;
        let store = self.state.store.clone();
        let routes = http::routes(self.state);
        let stop = shutdown.clone();
        axum::serve(listener, routes)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .context("HTTP server failed")?;
        shutdown.cancel();
        manager.stopped().await;
        let _ = outbox_task.await;
        let _ = queue_task.await;
        live_task.abort();
        store.close().await;
        Ok(())
    }
}

/// The embedding service and the name of its model (`<model>-<variant>`).
#[derive(Clone)]
pub struct Embedding {
    pub embedder: Embedder,
    pub model: String,
}

/// Loads the embedding model, building it first when it is missing and `auto_fetch` is on.
pub async fn load_embedder(config: &Config) -> anyhow::Result<Embedding> {
    let model_dir = config.embedding.resolve_model_dir(&config.data_dir);
    if config.embedding.auto_fetch {
        let dir = model_dir.clone();
        tokio::task::spawn_blocking(move || crate::models::ensure(&dir)).await??;
    }
    let manifest = crate::embed::check_model_dir(&model_dir)?;
    let embed_config = config.embedding.clone();
    let dir = model_dir.clone();
    let embedder =
        tokio::task::spawn_blocking(move || Embedder::load(&dir, &embed_config)).await??;
    Ok(Embedding {
        embedder,
        model: format!("{}-{}", manifest.model, manifest.variant),
    })
}

/// The understanding service: the configured model, or one trained from the intent and emotion
/// files (cached in the data folder until they change).
pub async fn open_nlu(config: &Config, embedding: &Embedding) -> anyhow::Result<Nlu> {
    let model = crate::nlu::load_or_train(
        &config.nlu,
        &config.data_dir,
        &embedding.embedder,
        &embedding.model,
    )
    .await
    .context("cannot prepare the intent and emotion model ([nlu] in the configuration)")?;
    Nlu::new(embedding.embedder.clone(), model, &config.languages)
}

/// Opens the vector store and, on a fresh install, imports the configured folder of articles (the
/// demo's sample knowledge base).
pub async fn open_knowledge(
    config: &Config,
    store: Store,
    embedding: &Embedding,
) -> anyhow::Result<KnowledgeBase> {
    let vectors = crate::vectors::open(
        &config.qdrant,
        &config.data_dir,
        embedding.embedder.dimensions(),
    )
    .await?;
    let kb = KnowledgeBase::new(
        store,
        vectors,
        embedding.embedder.clone(),
        config.knowledge.clone(),
        embedding.model.clone(),
    )
    .with_centering(
        Centering::build(&embedding.embedder, &config.languages)
            .await?
            .map(Arc::new),
    );
    if kb.is_empty().await? {
        match &config.knowledge.import_dir {
            Some(dir) if dir.is_dir() => {
                let summary = kb.import_dir(dir, false).await?;
                tracing::info!(dir = %dir.display(), %summary, "knowledge base imported");
            }
            Some(dir) => {
                tracing::warn!(dir = %dir.display(), "the knowledge base is empty and its import folder does not exist")
            }
            None => tracing::info!("the knowledge base is empty"),
        }
    }
    Ok(kb)
}

/// Hides a password in a database URL before it is logged.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// `frontdesk serve`: binds, prints the address on stdout (test harnesses read it), serves until
/// Ctrl-C or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen: SocketAddr = config.listen;
    let app = App::build(config).await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!("frontdesk listening on http://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    app.serve(listener, shutdown).await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_hidden_in_logged_urls() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
