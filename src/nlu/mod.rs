//! Understanding a customer message: language, intent (with "none of these"), sentiment and
//! emotion, all from one embedding of the message.
//!
//! The heads are trained from the plain files in `knowledge/` (intent examples and labelled
//! emotions) in seconds, cached in the data folder keyed by a hash of what they were trained on,
//! and retrained when those files change. `frontdesk nlu train|eval` expose the same machinery for
//! benchmarks such as CLINC150.

pub mod data;
pub mod eval;
pub mod intent;
pub mod language;
pub mod linear;
pub mod model;
pub mod train;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::embed::{Embedder, Kind};
use intent::{IntentPrediction, Objective, RankedIntent};
use language::LanguageDetector;
use linear::{argmax, SoftmaxHead, TrainSettings};
use model::NluModel;

/// `[nlu]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NluConfig {
    pub enabled: bool,
    /// Intent examples: a folder of YAML files or a CSV file.
    pub intents: PathBuf,
    /// Labelled sentiment/emotion CSV; none = no sentiment and emotion.
    pub emotions: Option<PathBuf>,
    /// A model trained by `frontdesk nlu train`; none = train from `intents`/`emotions` and cache
    /// it in `<data_dir>/nlu/model.json`.
    pub model: Option<PathBuf>,
    pub seed: u64,
    /// Out-of-scope threshold objective: none = balanced; a fraction = keep at least that
    /// held-out in-scope accuracy and maximise out-of-scope recall.
    pub min_in_scope_accuracy: Option<f32>,
    /// Longest text the parse endpoint accepts, in characters.
    pub max_text_chars: usize,
}

impl Default for NluConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            intents: PathBuf::from("knowledge/intents"),
            emotions: Some(PathBuf::from("knowledge/emotions/train.csv")),
            model: None,
            seed: 42,
            min_in_scope_accuracy: None,
            max_text_chars: 2000,
        }
    }
}

impl NluConfig {
    pub fn objective(&self) -> Objective {
        match self.min_in_scope_accuracy {
            Some(min) => Objective::MinInScopeAccuracy(min),
            None => Objective::Balanced,
        }
    }
}

/// A label with its calibrated probability.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// Everything understood about one message (the shape of Rasa's parse answer).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Parse {
    /// Two-letter code, when the text says enough.
    pub language: Option<String>,
    pub intent: RankedIntent,
    pub ranking: Vec<RankedIntent>,
    pub out_of_scope: bool,
    /// The out-of-scope score and the threshold it was compared to.
    pub intent_score: f32,
    pub intent_threshold: f32,
    /// The agent team of the intent, when the intent files name one.
    pub team: Option<String>,
    pub sentiment: Option<LabelScore>,
    pub emotion: Option<LabelScore>,
    /// Every emotion's probability (the handoff rules look at angry and anxious even when
    /// another emotion is the most likely).
    pub emotions: BTreeMap<String, f32>,
}

/// The understanding service: shared, cheap to clone.
#[derive(Clone)]
pub struct Nlu {
    embedder: Embedder,
    model: Arc<NluModel>,
    language: Arc<LanguageDetector>,
}

fn best(head: &SoftmaxHead, v: &[f32]) -> LabelScore {
    let (i, p) = argmax(&head.probabilities(v));
    LabelScore {
        label: head.labels[i].clone(),
        score: p,
    }
}

impl Nlu {
    pub fn new(embedder: Embedder, model: NluModel, languages: &[String]) -> anyhow::Result<Self> {
        Ok(Self {
            embedder,
            model: Arc::new(model),
            language: Arc::new(LanguageDetector::new(languages)?),
        })
    }

    pub fn model(&self) -> &NluModel {
        &self.model
    }

    /// Intent, sentiment and emotion of a message, without its language (the pipeline detects
    /// that itself, against the conversation's language).
    pub async fn understand(&self, text: &str) -> Result<Understanding, crate::embed::EmbedError> {
        let v = self.embedder.embed(Kind::Query, text).await?;
        let m = &self.model;
        Ok(Understanding {
            intent: m.intents.predict(&v),
            sentiment: m.sentiment.as_ref().map(|h| best(h, &v)),
            emotion: m.emotion.as_ref().map(|h| best(h, &v)),
            emotions: match &m.emotion {
                Some(h) => h.labels.iter().cloned().zip(h.probabilities(&v)).collect(),
                None => BTreeMap::new(),
            },
        })
    }

    /// Everything understood about a message, language included (the parse endpoint's answer).
    pub async fn parse(&self, text: &str) -> Result<Parse, crate::embed::EmbedError> {
        let u = self.understand(text).await?;
        Ok(Parse {
            language: self.language.detect(text).map(|d| d.code.to_string()),
            team: self.team(&u.intent.name).map(str::to_string),
            intent: RankedIntent {
                name: u.intent.name,
                confidence: u.intent.confidence,
            },
            ranking: u.intent.ranking,
            out_of_scope: u.intent.out_of_scope,
            intent_score: u.intent.score,
            intent_threshold: self.model.intents.threshold,
            sentiment: u.sentiment,
            emotion: u.emotion,
            emotions: u.emotions,
        })
    }

    /// The agent team of an intent, when the intent files name one.
    pub fn team(&self, intent: &str) -> Option<&str> {
        self.model.teams.get(intent).map(String::as_str)
    }

    /// Every team some intent belongs to, sorted.
    pub fn teams(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<&String> = self.model.teams.values().collect();
        set.into_iter().cloned().collect()
    }
}

/// The heads' answers for one message.
#[derive(Debug, Clone)]
pub struct Understanding {
    pub intent: IntentPrediction,
    pub sentiment: Option<LabelScore>,
    pub emotion: Option<LabelScore>,
    /// Every emotion's probability.
    pub emotions: BTreeMap<String, f32>,
}

/// Reads the training files named by the configuration and hashes them with the settings.
struct Sources {
    input: train::TrainInput,
}

fn read_sources(config: &NluConfig, embedding: &str) -> anyhow::Result<Sources> {
    let intents = data::read_intents(&config.intents)?;
    let teams = data::read_teams(&config.intents)?;
    let affect = match &config.emotions {
        Some(p) => Some(data::read_affect_csv(p)?),
        None => None,
    };
    let mut parts: Vec<Vec<u8>> = vec![
        embedding.as_bytes().to_vec(),
        config.seed.to_le_bytes().to_vec(),
    ];
    parts.push(format!("{:?}", config.objective()).into_bytes());
    for e in &intents {
        parts.push(format!("{}\t{}\t{:?}", e.label, e.text, e.lang).into_bytes());
    }
    for (k, v) in &teams {
        parts.push(format!("team\t{k}\t{v}").into_bytes());
    }
    for e in affect.iter().flatten() {
        parts.push(format!("{}\t{}\t{}", e.sentiment, e.emotion, e.text).into_bytes());
    }
    let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
    Ok(Sources {
        input: train::TrainInput {
            intents,
            validation: None,
            affect,
            teams,
            seed: config.seed,
            objective: config.objective(),
            settings: TrainSettings::default(),
            embedding: embedding.to_string(),
            data_hash: model::data_hash(&refs),
            progress: false,
        },
    })
}

/// Where a gateway caches the model it trains from its configured files.
pub fn cache_path(data_dir: &Path) -> PathBuf {
    data_dir.join("nlu").join("model.json")
}

/// The model a gateway runs with: the configured file, or the cached one when it matches the
/// training files, or a fresh one trained now (and cached).
pub async fn load_or_train(
    config: &NluConfig,
    data_dir: &Path,
    embedder: &Embedder,
    embedding: &str,
) -> anyhow::Result<NluModel> {
    if let Some(path) = &config.model {
        let model = NluModel::load(path)?;
        model.check_embedding(path, embedding)?;
        return Ok(model);
    }
    let sources = read_sources(config, embedding)?;
    let cache = cache_path(data_dir);
    if let Ok(model) = NluModel::load(&cache) {
        if model.data_hash == sources.input.data_hash && model.embedding == embedding {
            tracing::info!(path = %cache.display(), "NLU model loaded from cache");
            return Ok(model);
        }
        tracing::info!("the intent or emotion files changed: retraining the NLU model");
    }
    let started = Instant::now();
    let model = train::train(embedder, sources.input).await?;
    model.save(&cache)?;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        intents = model.intents.intents().count(),
        validation = %model.validation,
        "NLU model trained"
    );
    Ok(model)
}

/// Retrains into the cache unconditionally (`frontdesk nlu train` without `--data`).
pub async fn train_cache(
    config: &NluConfig,
    data_dir: &Path,
    embedder: &Embedder,
    embedding: &str,
    progress: bool,
) -> anyhow::Result<(NluModel, PathBuf)> {
    let mut sources = read_sources(config, embedding)?;
    sources.input.progress = progress;
    let model = train::train(embedder, sources.input).await?;
    let path = cache_path(data_dir);
    model.save(&path)?;
    Ok((model, path))
}
