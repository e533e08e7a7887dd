//! Training the understanding heads from labelled examples, deterministically for a seed.
//!
//! With a validation set (CLINC150's protocol) the heads train on the training set only and the
//! temperature and out-of-scope threshold are tuned on validation. Without one (the demo's intent
//! files), a seeded, stratified fifth of the examples is held out for that tuning and the heads are
//! then refitted on everything with the tuned settings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;

use super::data::{AffectExample, Example, EMOTIONS, OOS, SENTIMENTS};
use super::intent::{rates, IntentModel, Objective, Scored};
use super::linear::{argmax, SoftmaxHead, TrainError, TrainSettings};
use super::model::{NluModel, FORMAT};
use crate::embed::{Embedder, Kind};

/// What to train from.
pub struct TrainInput {
    pub intents: Vec<Example>,
    pub validation: Option<Vec<Example>>,
    pub affect: Option<Vec<AffectExample>>,
    pub teams: BTreeMap<String, String>,
    pub seed: u64,
    pub objective: Objective,
    pub settings: TrainSettings,
    pub embedding: String,
    pub data_hash: String,
    /// Show a progress bar while embedding (interactive commands).
    pub progress: bool,
}

/// Embeds texts as queries, concurrently so the embedding service batches them.
pub async fn embed_all(
    embedder: &Embedder,
    texts: &[&str],
    progress: bool,
) -> anyhow::Result<Vec<Arc<[f32]>>> {
    let bar = if progress && texts.len() > 200 {
        indicatif::ProgressBar::new(texts.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message("embedding");
    let out: Vec<_> = futures_util::stream::iter(texts.iter().map(|t| {
        let bar = bar.clone();
        async move {
            let v = embedder.embed(Kind::Query, t).await;
            bar.inc(1);
            v
        }
    }))
    .buffered(64)
    .collect()
    .await;
    bar.finish_and_clear();
    Ok(out.into_iter().collect::<Result<Vec<_>, _>>()?)
}

/// Seeded stratified split: about a fifth of each label (none of a label with fewer than three
/// examples) goes to the held-out part. Returns (train, held-out) indices.
pub fn stratified_split(labels: &[&str], seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        by_label.entry(l).or_default().push(i);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (_, mut idx) in by_label {
        idx.shuffle(&mut rng);
        let n_held = if idx.len() >= 3 {
            (idx.len() / 5).max(1)
        } else {
            0
        };
        held.extend_from_slice(&idx[..n_held]);
        train.extend_from_slice(&idx[n_held..]);
    }
    train.sort_unstable();
    held.sort_unstable();
    (train, held)
}

fn label_index(labels: &[String]) -> BTreeMap<&str, usize> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect()
}

/// A head trained on `train` rows, calibrated on `held` rows; refitted on all rows when `refit`.
fn fit_head(
    vectors: &[Arc<[f32]>],
    targets: &[usize],
    labels: &[String],
    (train, held): (&[usize], &[usize]),
    refit: bool,
    settings: TrainSettings,
) -> Result<(SoftmaxHead, SoftmaxHead), TrainError> {
    let pick = |idx: &[usize]| -> (Vec<&[f32]>, Vec<usize>) {
        idx.iter().map(|&i| (&vectors[i][..], targets[i])).unzip()
    };
    let (xs, ys) = pick(train);
    let mut head = SoftmaxHead::train(&xs, &ys, labels, settings)?;
    let held_pairs: Vec<(&[f32], usize)> = held
        .iter()
        .map(|&i| (&vectors[i][..], targets[i]))
        .collect();
    head.calibrate(&held_pairs);
    let tuned = head.clone();
    if refit {
        let all: Vec<usize> = (0..vectors.len()).collect();
        let (xs, ys) = pick(&all);
        let temperature = head.temperature;
        head = SoftmaxHead::train(&xs, &ys, labels, settings)?;
        head.temperature = temperature;
    }
    Ok((head, tuned))
}

/// Trains every head. Returns the model with the held-out figures in `validation`.
pub async fn train(embedder: &Embedder, input: TrainInput) -> anyhow::Result<NluModel> {
    let started = Instant::now();
    anyhow::ensure!(!input.intents.is_empty(), "no intent examples to train on");
    let mut labels: Vec<String> = input.intents.iter().map(|e| e.label.clone()).collect();
    if let Some(v) = &input.validation {
        labels.extend(v.iter().map(|e| e.label.clone()));
    }
    labels.sort();
    labels.dedup();
    let index = label_index(&labels);

    // One embedding pass over training and validation texts.
    let n_train = input.intents.len();
    let mut texts: Vec<&str> = input.intents.iter().map(|e| e.text.as_str()).collect();
    if let Some(v) = &input.validation {
        texts.extend(v.iter().map(|e| e.text.as_str()));
    }
    let vectors = embed_all(embedder, &texts, input.progress).await?;
    let embed_secs = started.elapsed().as_secs_f64();
    let gold: Vec<&str> = input
        .intents
        .iter()
        .chain(input.validation.iter().flatten())
        .map(|e| e.label.as_str())
        .collect();
    let targets: Vec<usize> = gold.iter().map(|l| index[l]).collect();

    let (train_idx, held_idx, refit) = match &input.validation {
        Some(v) if !v.is_empty() => (
            (0..n_train).collect(),
            (n_train..vectors.len()).collect(),
            false,
        ),
        _ => {
            let (t, h) = stratified_split(&gold[..n_train], input.seed);
            (t, h, true)
        }
    };
    // Out-of-scope rows calibrate the temperature only when they are a class of their own.
    let has_oos_class = train_idx.iter().any(|&i| gold[i] == OOS);
    let calibration_rows: Vec<usize> = held_idx
        .iter()
        .copied()
        .filter(|&i| has_oos_class || gold[i] != OOS)
        .collect();
    // Fitting takes seconds to minutes: off the async threads.
    let (head, tuned_head) = {
        let (v, t, l) = (vectors.clone(), targets.clone(), labels.clone());
        let (tr, cr) = (train_idx.clone(), calibration_rows);
        let settings = input.settings;
        tokio::task::spawn_blocking(move || fit_head(&v, &t, &l, (&tr, &cr), refit, settings))
            .await??
    };
    // The threshold is tuned with the head that did not see the held-out rows.
    let mut tuned = IntentModel::new(tuned_head, input.objective);
    let scored: Vec<Scored> = held_idx
        .iter()
        .map(|&i| tuned.score(&vectors[i], gold[i]))
        .collect();
    tuned.tune_threshold(&scored);
    let (acc, recall) = rates(&scored, tuned.threshold);
    let mut intents = IntentModel::new(head, input.objective);
    intents.threshold = tuned.threshold;
    let mut validation = json!({
        "intents": {
            "train_examples": train_idx.len(),
            "held_out_examples": held_idx.len(),
            "held_out_out_of_scope": held_idx.iter().filter(|&&i| gold[i] == OOS).count(),
            "in_scope_accuracy": acc,
            "oos_recall": recall,
            "threshold": tuned.threshold,
            "temperature": intents.head.temperature,
            "refitted_on_all": refit,
        },
        "embed_seconds": embed_secs,
    });

    let (sentiment, emotion, emotion_thresholds) = match &input.affect {
        Some(rows) if !rows.is_empty() => {
            let (s, e, thresholds, figures) =
                train_affect(embedder, rows, input.seed, input.settings, input.progress).await?;
            validation["affect"] = figures;
            (Some(s), Some(e), thresholds)
        }
        _ => (None, None, BTreeMap::new()),
    };
    validation["seconds"] = json!(started.elapsed().as_secs_f64());
    Ok(NluModel {
        format: FORMAT,
        embedding: input.embedding,
        data_hash: input.data_hash,
        seed: input.seed,
        intents,
        teams: input.teams,
        sentiment,
        emotion,
        emotion_thresholds,
        validation,
    })
}

/// The emotions that hand a customer over, and the share of them the tuned threshold must catch
/// on held-out data (the goal for angry; higher targets flagged a third of the plain
/// questions in tests/data/kb-eval.jsonl).
pub const HANDOFF_EMOTIONS: [&str; 2] = ["angry", "anxious"];
const HANDOFF_RECALL: f32 = 0.90;

/// The highest threshold on p(emotion) that still catches `recall` of the held-out rows of it.
fn recall_threshold(scores_of_gold: &mut [f32], recall: f32) -> f32 {
    scores_of_gold.sort_by(f32::total_cmp);
    let miss = ((1.0 - recall) * scores_of_gold.len() as f32).floor() as usize;
    scores_of_gold.get(miss).copied().unwrap_or(0.5)
}

/// Sentiment and emotion heads on the same embeddings, calibrated on a held-out fifth and then
/// refitted on everything.
async fn train_affect(
    embedder: &Embedder,
    rows: &[AffectExample],
    seed: u64,
    settings: TrainSettings,
    progress: bool,
) -> anyhow::Result<(
    SoftmaxHead,
    SoftmaxHead,
    BTreeMap<String, f32>,
    serde_json::Value,
)> {
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let vectors = embed_all(embedder, &texts, progress).await?;
    let emotion_gold: Vec<&str> = rows.iter().map(|r| r.emotion.as_str()).collect();
    let (train_idx, held_idx) = stratified_split(&emotion_gold, seed);
    let heads =
        |names: &[&str], gold: Vec<&str>| -> anyhow::Result<(SoftmaxHead, SoftmaxHead, f32)> {
            let labels: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let index = label_index(&labels);
            let targets: Vec<usize> = gold.iter().map(|g| index[g]).collect();
            let (head, tuned) = fit_head(
                &vectors,
                &targets,
                &labels,
                (&train_idx, &held_idx),
                true,
                settings,
            )?;
            let correct = held_idx
                .iter()
                .filter(|&&i| argmax(&tuned.probabilities(&vectors[i])).0 == targets[i])
                .count();
            Ok((head, tuned, correct as f32 / held_idx.len().max(1) as f32))
        };
    let (sentiment, _, s_acc) = heads(
        &SENTIMENTS,
        rows.iter().map(|r| r.sentiment.as_str()).collect(),
    )?;
    let (emotion, tuned_emotion, e_acc) = heads(&EMOTIONS, emotion_gold.clone())?;
    let mut thresholds = BTreeMap::new();
    for name in HANDOFF_EMOTIONS {
        let Some(col) = tuned_emotion.labels.iter().position(|l| l == name) else {
            continue;
        };
        let mut scores: Vec<f32> = held_idx
            .iter()
            .filter(|&&i| emotion_gold[i] == name)
            .map(|&i| tuned_emotion.probabilities(&vectors[i])[col])
            .collect();
        if !scores.is_empty() {
            thresholds.insert(
                name.to_string(),
                recall_threshold(&mut scores, HANDOFF_RECALL),
            );
        }
    }
    let figures = json!({
        "examples": rows.len(),
        "held_out_examples": held_idx.len(),
        "sentiment_accuracy": s_acc,
        "emotion_accuracy": e_acc,
        "sentiment_temperature": sentiment.temperature,
        "emotion_temperature": emotion.temperature,
        "handoff_thresholds": thresholds,
    });
    Ok((sentiment, emotion, thresholds, figures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_stratified_and_seeded() {
        let labels: Vec<&str> = (0..50)
            .map(|i| if i % 5 == 0 { "b" } else { "a" })
            .chain(["c", "c"])
            .collect();
        let (t1, h1) = stratified_split(&labels, 7);
        let (t2, h2) = stratified_split(&labels, 7);
        assert_eq!((&t1, &h1), (&t2, &h2));
        assert_eq!(h1.iter().filter(|&&i| labels[i] == "a").count(), 8);
        assert_eq!(h1.iter().filter(|&&i| labels[i] == "b").count(), 2);
        assert!(
            h1.iter().all(|&i| labels[i] != "c"),
            "too few c to hold any out"
        );
        assert_eq!(t1.len() + h1.len(), labels.len());
        let (_, h3) = stratified_split(&labels, 8);
        assert_ne!(h1, h3);
    }
}
