//! The knowledge base: articles answered by embedding search, honest about when it does not know.
//!
//! Each article is indexed as several vectors (its title, each example question, chunks of its
//! body), all pointing back to it. The query is first centred on its language (see
//! [`centering`]); an article's score then pools the similarities of its vectors with a soft
//! maximum, so an article several of whose questions match beats one that matches once by chance.
//! e5's scores sit in a narrow band, so the two thresholds that turn a score into a decision
//! (answer / suggest / nothing) are calibrated on a labelled set (`frontdesk eval kb
//! --calibrate`), not guessed.

pub mod article;
pub mod centering;
pub mod eval;
pub mod lexical;
mod repo;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

pub use article::{Article, ArticleError, Part};
pub use centering::Centering;
pub use lexical::LexicalIndex;
pub use repo::{KbRevision, StoredArticle};

use crate::embed::{Embedder, Kind};
use crate::store::{Store, StoreError};
use crate::vectors::{Match, Point, VectorError, VectorStore};

/// Payload value that marks knowledge base points in a shared vector store.
const NAMESPACE: &str = "kb";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnowledgeConfig {
    pub enabled: bool,
    /// Folder of articles imported at start when the knowledge base is empty (the demo's).
    pub import_dir: Option<PathBuf>,
    /// At or above, on the confidence (score and lead over the second article): the bot answers
    /// with the best article.
    pub answer_threshold: f32,
    /// At or above, on the score: the bot answers even when a second article is close.
    pub answer_score_threshold: f32,
    /// At or above (and below the answer threshold): the bot offers up to `max_suggestions`.
    pub suggest_threshold: f32,
    pub max_suggestions: usize,
    /// Body chunk size in characters.
    pub chunk_chars: usize,
    /// Weight of the lexical similarity (shared character n-grams, see [`lexical`]) added to
    /// the semantic score; 0 turns it off. Tuned on `kb-tune.jsonl`.
    pub lexical_weight: f32,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            import_dir: Some(PathBuf::from("knowledge/articles")),
            answer_threshold: DEFAULT_ANSWER_THRESHOLD,
            answer_score_threshold: DEFAULT_ANSWER_SCORE_THRESHOLD,
            suggest_threshold: DEFAULT_SUGGEST_THRESHOLD,
            max_suggestions: 3,
            chunk_chars: 600,
            lexical_weight: DEFAULT_LEXICAL_WEIGHT,
        }
    }
}

/// Calibrated with `frontdesk eval kb --calibrate` on `tests/data/kb-tune.jsonl` (see README).
pub const DEFAULT_ANSWER_THRESHOLD: f32 = 0.493;
pub const DEFAULT_ANSWER_SCORE_THRESHOLD: f32 = 0.306;
pub const DEFAULT_SUGGEST_THRESHOLD: f32 = 0.186;
/// Chosen on `kb-tune.jsonl` among 0.02 to 0.3 (README, "Knowledge base answers").
pub const DEFAULT_LEXICAL_WEIGHT: f32 = 0.1;

/// The three boundaries that turn a search into a decision (see [`decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// Answer at or above this confidence.
    pub answer: f32,
    /// Answer at or above this score, whatever the lead.
    pub answer_score: f32,
    /// Below this score, no article at all.
    pub suggest: f32,
}

impl std::fmt::Display for Thresholds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "thresholds: answer at confidence >= {:.4} or score >= {:.4}; suggest at score >= {:.4}",
            self.answer, self.answer_score, self.suggest
        )
    }
}

impl KnowledgeConfig {
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            answer: self.answer_threshold,
            answer_score: self.answer_score_threshold,
            suggest: self.suggest_threshold,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vectors(#[from] VectorError),
    #[error(transparent)]
    Embedding(#[from] crate::embed::EmbedError),
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// What the bot would do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Answer,
    Suggest,
    None,
}

/// One article found for a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Hit {
    pub article_id: String,
    pub title: String,
    /// Relevance: `semantic + lexical_weight × lexical`. Compare it with the thresholds, not
    /// with 1.
    pub score: f32,
    /// The cosine similarities of the article's vectors to the (language-centred) query, pooled
    /// by a soft maximum.
    #[serde(default)]
    pub semantic: f32,
    /// The best TF-IDF cosine between the message and one of the article's texts, on shared
    /// character n-grams (0 to 1).
    #[serde(default)]
    pub lexical: f32,
    /// The text of that vector (title, example question or body chunk).
    pub matched: String,
    pub part: Part,
    pub lang: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchResult {
    pub decision: Decision,
    /// How sure the bot is of the best article: its score plus three times its lead over the
    /// second (see [`confidence`]); none without any article. `answer_threshold` applies to it.
    pub confidence: Option<f32>,
    pub hits: Vec<Hit>,
}

/// Weight of the best article's lead over the second in [`confidence`]. Chosen on
/// `kb-tune.jsonl`: it let the most queries be answered at 97% precision (0 to 6 were tried).
const LEAD_WEIGHT: f32 = 3.0;

/// The answer confidence for the best and second-best article scores. A clear winner is a safer
/// answer than a high score that two articles share (a question between two topics).
pub fn confidence(best: f32, second: Option<f32>) -> f32 {
    best + LEAD_WEIGHT * (best - second.unwrap_or(best))
}

/// What the bot does: nothing below the suggestion threshold (on the score: is any article about
/// this at all?); an answer when confident enough, or when the score alone is high enough (a
/// message that is nearly one of the article's questions, even if a neighbouring article is
/// close); otherwise suggestions.
pub fn decide(score: Option<f32>, confidence: Option<f32>, t: Thresholds) -> Decision {
    let Some(s) = score.filter(|s| *s >= t.suggest) else {
        return Decision::None;
    };
    if s >= t.answer_score || confidence.is_some_and(|c| c >= t.answer) {
        Decision::Answer
    } else {
        Decision::Suggest
    }
}

/// What `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PutOutcome {
    Created,
    Updated,
    Unchanged,
}

/// A file the import could not use.
#[derive(Debug, Clone, Serialize)]
pub struct ImportFailure {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub failed: Vec<ImportFailure>,
    pub vectors: usize,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} created, {} updated, {} unchanged, {} removed, {} failed; {} vectors in the knowledge base",
            self.created,
            self.updated,
            self.unchanged,
            self.removed,
            self.failed.len(),
            self.vectors
        )?;
        for fail in &self.failed {
            write!(
                f,
                "\n  {}:{}: {}",
                fail.file.display(),
                fail.line,
                fail.message
            )?;
        }
        Ok(())
    }
}

pub struct KnowledgeBase {
    store: Store,
    vectors: Arc<dyn VectorStore>,
    embedder: Embedder,
    config: KnowledgeConfig,
    /// Identifies the embedding model in content hashes (another model = re-embed everything).
    model_id: String,
    centering: Option<Arc<Centering>>,
    lexical: Mutex<LexicalState>,
    /// Counts this process's changes to the articles: an index built while one happened is not
    /// trusted without a fresh revision check.
    lexical_changes: AtomicU64,
}

/// The lexical index and the store revision it was built from. Another gateway process may
/// change the articles, so the revision is checked again after [`LEXICAL_RECHECK`].
#[derive(Default)]
struct LexicalState {
    index: Arc<LexicalIndex>,
    built_from: Option<KbRevision>,
    checked_at: Option<Instant>,
}

/// How long a search trusts the lexical index without asking the store whether the articles
/// changed (a change made by this process is seen at once).
const LEXICAL_RECHECK: Duration = Duration::from_secs(2);

/// Temperature of the soft maximum that pools an article's vector scores: at 0.02 a vector
/// 0.05 below the best adds under a tenth of the best's weight. Tuned on `kb-tune.jsonl`
/// (0.01 and 0.05 were worse).
const POOL_TEMPERATURE: f32 = 0.02;

/// `max + t * ln(sum(exp((s - max) / t)))` over one article's vector scores, best first.
fn pooled(scores: &[f32]) -> f32 {
    let Some(&best) = scores.first() else {
        return f32::NEG_INFINITY;
    };
    let sum: f32 = scores
        .iter()
        .map(|s| ((s - best) / POOL_TEMPERATURE).exp())
        .sum();
    best + POOL_TEMPERATURE * sum.ln()
}

/// A stable point id for the `index`-th vector of an article.
fn point_id(article_id: &str, index: usize) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("frontdesk:kb:{article_id}:{index}").as_bytes(),
    )
}

impl KnowledgeBase {
    pub fn new(
        store: Store,
        vectors: Arc<dyn VectorStore>,
        embedder: Embedder,
        config: KnowledgeConfig,
        model_id: String,
    ) -> Self {
        Self {
            store,
            vectors,
            embedder,
            config,
            model_id,
            centering: None,
            lexical: Mutex::default(),
            lexical_changes: AtomicU64::new(0),
        }
    }

    /// Centres queries on their language before searching (see [`centering`]).
    pub fn with_centering(mut self, centering: Option<Arc<Centering>>) -> Self {
        self.centering = centering;
        self
    }

    pub fn config(&self) -> &KnowledgeConfig {
        &self.config
    }

    /// The `k` best articles for a customer message, with what the bot would do.
    pub async fn search(&self, text: &str, k: usize) -> Result<SearchResult, KnowledgeError> {
        let query = self.embedder.embed(Kind::Query, text).await?;
        let query = match &self.centering {
            Some(c) => c.center(text, &query),
            None => query.to_vec(),
        };
        let lexical = if self.config.lexical_weight > 0.0 {
            Some(self.lexical_index().await?)
        } else {
            None
        };
        let lexical_scores = lexical.as_ref().map(|index| index.scores(text));
        self.rank(&query, lexical_scores.as_ref(), k).await
    }

    /// The lexical index, rebuilt from the stored articles when they changed.
    async fn lexical_index(&self) -> Result<Arc<LexicalIndex>, KnowledgeError> {
        {
            let state = self.lexical_state();
            if state
                .checked_at
                .is_some_and(|at| at.elapsed() < LEXICAL_RECHECK)
            {
                return Ok(state.index.clone());
            }
        }
        let changes = self.lexical_changes.load(Ordering::Acquire);
        let revision = self.store.kb_revision().await?;
        {
            let mut state = self.lexical_state();
            if state.built_from == Some(revision) {
                state.checked_at = Some(Instant::now());
                return Ok(state.index.clone());
            }
        }
        let articles = self.store.kb_list().await?;
        let texts: Vec<(String, String)> = articles
            .iter()
            .flat_map(|a| {
                a.article
                    .index_texts(self.config.chunk_chars)
                    .into_iter()
                    .map(|(_, text)| (a.article.id.clone(), text))
            })
            .collect();
        let index = Arc::new(LexicalIndex::build(
            texts.iter().map(|(a, t)| (a.as_str(), t.as_str())),
        ));
        tracing::debug!(
            articles = articles.len(),
            texts = texts.len(),
            "lexical index rebuilt"
        );
        // Compared under the lock that `lexical_changed` counts under: a change is either seen
        // here, or it clears `checked_at` after this store.
        let mut state = self.lexical_state();
        let unchanged = self.lexical_changes.load(Ordering::Acquire) == changes;
        *state = LexicalState {
            index: index.clone(),
            built_from: Some(revision),
            checked_at: unchanged.then(Instant::now),
        };
        Ok(index)
    }

    fn lexical_state(&self) -> std::sync::MutexGuard<'_, LexicalState> {
        // The state is replaced whole, never left half-written: a poisoned lock is still usable.
        self.lexical
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// After a change by this process: the next search checks the revision at once.
    fn lexical_changed(&self) {
        let mut state = self.lexical_state();
        self.lexical_changes.fetch_add(1, Ordering::AcqRel);
        state.checked_at = None;
    }

    /// Ranks articles for an embedded (and centred) query, adding the lexical scores of the
    /// candidates the vector search found. An article the vector search did not return is not
    /// ranked, whatever its lexical score: the lexical score only reorders semantic candidates.
    async fn rank(
        &self,
        query: &[f32],
        lexical: Option<&HashMap<&str, f32>>,
        k: usize,
    ) -> Result<SearchResult, KnowledgeError> {
        let k = k.clamp(1, 50);
        // Several vectors per article: fetch enough to fill k distinct articles.
        let points = self
            .vectors
            .search(
                query,
                (k * 8).max(40),
                Some(Match::new("namespace", NAMESPACE)),
            )
            .await?;
        // Results come best first: an article's first point is its best and gives the hit's
        // text; the scores of all its points returned are pooled.
        let mut best: Vec<Hit> = Vec::new();
        let mut scores: HashMap<String, Vec<f32>> = HashMap::new();
        for p in points {
            let article_id = p
                .payload
                .get("article_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if article_id.is_empty() {
                continue;
            }
            let seen = scores.contains_key(article_id);
            scores
                .entry(article_id.to_string())
                .or_default()
                .push(p.score);
            if seen {
                continue;
            }
            let text = |key: &str| {
                p.payload
                    .get(key)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            best.push(Hit {
                article_id: article_id.to_string(),
                title: text("title").unwrap_or_default(),
                score: p.score,
                semantic: p.score,
                lexical: 0.0,
                matched: text("text").unwrap_or_default(),
                part: match text("part").as_deref() {
                    Some("title") => Part::Title,
                    Some("question") => Part::Question,
                    _ => Part::Chunk,
                },
                lang: text("lang"),
            });
        }
        for hit in &mut best {
            hit.semantic = pooled(&scores[&hit.article_id]);
            hit.lexical = lexical
                .and_then(|l| l.get(hit.article_id.as_str()).copied())
                .unwrap_or(0.0);
            hit.score = hit.semantic + self.config.lexical_weight * hit.lexical;
        }
        best.sort_by(|a, b| b.score.total_cmp(&a.score));
        let score = best.first().map(|h| h.score);
        let confidence = score.map(|s| confidence(s, best.get(1).map(|h| h.score)));
        let decision = decide(score, confidence, self.config.thresholds());
        best.truncate(k);
        Ok(SearchResult {
            decision,
            confidence,
            hits: best,
        })
    }

    /// Stores an article and (re-)embeds it unless nothing embedded has changed.
    pub async fn put(
        &self,
        article: &Article,
        source: Option<&str>,
    ) -> Result<PutOutcome, KnowledgeError> {
        article.validate().map_err(KnowledgeError::Invalid)?;
        let hash = article.content_hash(&self.model_id, self.config.chunk_chars);
        let existing = self.store.kb_get(&article.id).await?;
        if let Some(e) = &existing {
            if e.content_hash == hash && &e.article == article {
                if e.source.as_deref() != source {
                    self.store
                        .kb_upsert(article, source, &hash, e.vectors)
                        .await?;
                }
                return Ok(PutOutcome::Unchanged);
            }
        }
        let texts = article.index_texts(self.config.chunk_chars);
        let mut points = Vec::with_capacity(texts.len());
        // Example questions are customer phrasings: embedded like customer messages.
        let embedded = futures_util::future::try_join_all(texts.iter().map(|(part, text)| {
            let kind = if *part == Part::Question {
                Kind::Query
            } else {
                Kind::Passage
            };
            self.embedder.embed(kind, text)
        }))
        .await?;
        for (i, ((part, text), vector)) in texts.iter().zip(embedded).enumerate() {
            let mut payload = Map::new();
            payload.insert("namespace".into(), json!(NAMESPACE));
            payload.insert("article_id".into(), json!(article.id));
            payload.insert("title".into(), json!(article.title));
            payload.insert("part".into(), json!(part.as_str()));
            payload.insert("text".into(), json!(text));
            payload.insert("lang".into(), json!(article.lang));
            points.push(Point {
                id: point_id(&article.id, i),
                vector: vector.to_vec(),
                payload,
            });
        }
        let count = points.len();
        self.vectors
            .delete(Match::new("article_id", article.id.clone()))
            .await?;
        self.vectors.upsert(points).await?;
        self.store
            .kb_upsert(article, source, &hash, count as i64)
            .await?;
        self.lexical_changed();
        Ok(if existing.is_some() {
            PutOutcome::Updated
        } else {
            PutOutcome::Created
        })
    }

    /// Removes an article and its vectors. False if there was no such article.
    pub async fn delete(&self, id: &str) -> Result<bool, KnowledgeError> {
        self.vectors.delete(Match::new("article_id", id)).await?;
        let deleted = self.store.kb_delete(id).await?;
        self.lexical_changed();
        Ok(deleted)
    }

    pub async fn list(&self) -> Result<Vec<StoredArticle>, KnowledgeError> {
        Ok(self.store.kb_list().await?)
    }

    pub async fn get(&self, id: &str) -> Result<Option<StoredArticle>, KnowledgeError> {
        Ok(self.store.kb_get(id).await?)
    }

    pub async fn is_empty(&self) -> Result<bool, KnowledgeError> {
        Ok(self.store.kb_count().await? == 0)
    }

    /// Imports every `*.md` of `dir`: new and changed articles are embedded, unchanged ones are
    /// skipped, articles imported from this folder whose file is gone are removed. A broken file
    /// is reported with its name and line and does not stop the others.
    pub async fn import_dir(
        &self,
        dir: &Path,
        progress: bool,
    ) -> Result<ImportSummary, KnowledgeError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| KnowledgeError::Io(dir.to_path_buf(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "md") && p.is_file())
            .collect();
        files.sort();
        let source_prefix = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let bar = if progress {
            let bar = indicatif::ProgressBar::new(files.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut summary = ImportSummary::default();
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        for file in &files {
            bar.set_message(
                file.file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_default(),
            );
            let fail = |line: usize, message: String| ImportFailure {
                file: file.clone(),
                line,
                message,
            };
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => {
                    summary.failed.push(fail(0, format!("cannot read: {e}")));
                    bar.inc(1);
                    continue;
                }
            };
            let article = match Article::parse(&text) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(file = %file.display(), line = e.line, error = %e.message, "article skipped");
                    summary.failed.push(fail(e.line, e.message));
                    bar.inc(1);
                    continue;
                }
            };
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            if stem != article.id {
                summary.failed.push(fail(
                    2,
                    format!("id '{}' differs from the file name '{stem}.md'", article.id),
                ));
                bar.inc(1);
                continue;
            }
            if let Some(first) = seen.get(&article.id) {
                summary.failed.push(fail(
                    2,
                    format!("id '{}' is already used by {}", article.id, first.display()),
                ));
                bar.inc(1);
                continue;
            }
            seen.insert(article.id.clone(), file.clone());
            let source = file.canonicalize().unwrap_or_else(|_| file.clone());
            match self.put(&article, Some(&source.to_string_lossy())).await {
                Ok(PutOutcome::Created) => summary.created += 1,
                Ok(PutOutcome::Updated) => summary.updated += 1,
                Ok(PutOutcome::Unchanged) => summary.unchanged += 1,
                Err(KnowledgeError::Invalid(m)) => summary.failed.push(fail(2, m)),
                Err(e) => return Err(e),
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        for stored in self.store.kb_list().await? {
            let from_here = stored
                .source
                .as_deref()
                .is_some_and(|s| Path::new(s).starts_with(&source_prefix));
            if from_here && !seen.contains_key(&stored.article.id) {
                self.delete(&stored.article.id).await?;
                summary.removed += 1;
            } else {
                summary.vectors += stored.vectors as usize;
            }
        }
        if summary.created + summary.updated + summary.removed > 0 {
            self.vectors.optimize().await?;
        }
        Ok(summary)
    }
}
