//! `frontdesk nlu eval`: how well a trained model does on a labelled file it never saw, with the
//! figures the issue asks for (fractions from 0 to 1).
//!
//! Intents: in-scope accuracy (right intent and not rejected), out-of-scope recall and precision,
//! macro-F1 over every label with `oos` as a label, expected calibration error of the confidence
//! on in-scope messages (10 equal-width bins), and latency per message at batch 1 (embedding plus
//! head) and of the head alone. Sentiment/emotion: macro-F1 of negative vs not, accuracy, and
//! the recall and precision of every emotion, overall and per language.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::data::{AffectExample, Example, OOS};
use super::linear::argmax;
use super::model::NluModel;
use crate::embed::{Embedder, Kind};

#[derive(Debug, Clone, Serialize)]
pub struct IntentReport {
    pub examples: usize,
    pub in_scope_accuracy: f64,
    pub oos_recall: f64,
    pub oos_precision: f64,
    pub macro_f1: f64,
    pub calibration_error: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub head_us_p50: f64,
    pub head_us_p99: f64,
    pub threshold: f32,
    pub per_language: BTreeMap<String, LanguageFigures>,
    /// Most frequent mistakes: (gold, predicted, count), `oos` included.
    pub confusions: Vec<(String, String, usize)>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct LanguageFigures {
    pub examples: usize,
    pub in_scope_accuracy: f64,
    pub oos_recall: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AffectReport {
    pub examples: usize,
    /// Macro-F1 of the two classes "negative" and "not negative".
    pub negative_macro_f1: f64,
    pub sentiment_accuracy: f64,
    pub emotion_accuracy: f64,
    pub emotion_macro_f1: f64,
    /// Per emotion: (recall, precision).
    pub emotions: BTreeMap<String, (f64, f64)>,
    pub per_language: BTreeMap<String, AffectLanguage>,
    /// The handoff emotions at the model's tuned thresholds on p(emotion):
    /// (threshold, recall, precision). This is what decides a handoff.
    pub handoff: BTreeMap<String, (f32, f64, f64)>,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct AffectLanguage {
    pub examples: usize,
    pub negative_macro_f1: f64,
    pub emotion_accuracy: f64,
    pub angry_recall: f64,
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// F1 of each label over (gold, predicted) pairs, averaged over the labels seen on either side.
pub fn macro_f1<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> f64 {
    let mut labels: Vec<&str> = pairs.clone().flat_map(|(g, p)| [g, p]).collect();
    labels.sort_unstable();
    labels.dedup();
    let f1s: Vec<f64> = labels
        .iter()
        .map(|l| {
            let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
            for (g, p) in pairs.clone() {
                match (g == *l, p == *l) {
                    (true, true) => tp += 1,
                    (false, true) => fp += 1,
                    (true, false) => fn_ += 1,
                    _ => {}
                }
            }
            let (p, r) = (ratio(tp, tp + fp), ratio(tp, tp + fn_));
            if p + r == 0.0 {
                0.0
            } else {
                2.0 * p * r / (p + r)
            }
        })
        .collect();
    f1s.iter().sum::<f64>() / f1s.len().max(1) as f64
}

/// Expected calibration error over (confidence, correct) pairs, 10 equal-width bins.
pub fn calibration_error(points: &[(f32, bool)]) -> f64 {
    let mut bins = [(0f64, 0f64, 0usize); 10];
    for (conf, ok) in points {
        let b = ((conf * 10.0) as usize).min(9);
        bins[b].0 += f64::from(*conf);
        bins[b].1 += f64::from(u8::from(*ok));
        bins[b].2 += 1;
    }
    let n = points.len().max(1) as f64;
    bins.iter()
        .filter(|b| b.2 > 0)
        .map(|(c, a, k)| (*k as f64 / n) * ((c - a) / *k as f64).abs())
        .sum()
}

/// Embeds one message at a time, as the router does, and times it.
async fn embed_timed(
    embedder: &Embedder,
    text: &str,
) -> anyhow::Result<(std::sync::Arc<[f32]>, f64)> {
    let t = Instant::now();
    let v = embedder.embed(Kind::Query, text).await?;
    Ok((v, t.elapsed().as_secs_f64() * 1000.0))
}

pub async fn intents(
    model: &NluModel,
    embedder: &Embedder,
    rows: &[Example],
) -> anyhow::Result<IntentReport> {
    let mut latencies = Vec::with_capacity(rows.len());
    let mut head_us = Vec::with_capacity(rows.len());
    let mut predicted = Vec::with_capacity(rows.len());
    let mut calibration = Vec::new();
    for row in rows {
        let (v, embed_ms) = embed_timed(embedder, &row.text).await?;
        let t = Instant::now();
        let p = model.intents.predict(&v);
        let head = t.elapsed().as_secs_f64();
        head_us.push(head * 1e6);
        latencies.push(embed_ms + head * 1000.0);
        if row.label != OOS {
            calibration.push((p.confidence, p.name == row.label));
        }
        predicted.push(if p.out_of_scope {
            OOS.to_string()
        } else {
            p.name
        });
    }
    latencies.sort_by(f64::total_cmp);
    head_us.sort_by(f64::total_cmp);
    let count = |f: &dyn Fn(&Example, &str) -> bool| {
        rows.iter().zip(&predicted).filter(|(r, p)| f(r, p)).count()
    };
    let in_scope = count(&|r, _| r.label != OOS);
    let correct = count(&|r, p| r.label != OOS && r.label == p);
    let oos = count(&|r, _| r.label == OOS);
    let caught = count(&|r, p| r.label == OOS && p == OOS);
    let flagged = count(&|_, p| p == OOS);

    let mut per_language: BTreeMap<String, (usize, usize, usize, usize, usize)> = BTreeMap::new();
    for (r, p) in rows.iter().zip(&predicted) {
        let e = per_language
            .entry(r.lang.clone().unwrap_or_else(|| "-".into()))
            .or_default();
        e.0 += 1;
        if r.label == OOS {
            e.3 += 1;
            e.4 += usize::from(p == OOS);
        } else {
            e.1 += 1;
            e.2 += usize::from(&r.label == p);
        }
    }
    let mut confusions: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (r, p) in rows.iter().zip(&predicted) {
        if &r.label != p {
            *confusions.entry((r.label.clone(), p.clone())).or_default() += 1;
        }
    }
    let mut confusions: Vec<(String, String, usize)> = confusions
        .into_iter()
        .map(|((g, p), n)| (g, p, n))
        .collect();
    confusions.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.cmp(b)));
    confusions.truncate(10);

    Ok(IntentReport {
        examples: rows.len(),
        in_scope_accuracy: ratio(correct, in_scope),
        oos_recall: ratio(caught, oos),
        oos_precision: ratio(caught, flagged),
        macro_f1: macro_f1(
            rows.iter()
                .zip(&predicted)
                .map(|(r, p)| (r.label.as_str(), p.as_str())),
        ),
        calibration_error: calibration_error(&calibration),
        latency_ms_p50: percentile(&latencies, 0.5),
        latency_ms_p99: percentile(&latencies, 0.99),
        head_us_p50: percentile(&head_us, 0.5),
        head_us_p99: percentile(&head_us, 0.99),
        threshold: model.intents.threshold,
        per_language: per_language
            .into_iter()
            .map(|(l, (n, inside, ok, oos, caught))| {
                (
                    l,
                    LanguageFigures {
                        examples: n,
                        in_scope_accuracy: ratio(ok, inside),
                        oos_recall: ratio(caught, oos),
                    },
                )
            })
            .collect(),
        confusions,
    })
}

pub async fn affect(
    model: &NluModel,
    embedder: &Embedder,
    rows: &[AffectExample],
) -> anyhow::Result<AffectReport> {
    let (sentiment, emotion) = match (&model.sentiment, &model.emotion) {
        (Some(s), Some(e)) => (s, e),
        _ => anyhow::bail!(
            "this model has no sentiment and emotion heads (train it with --emotions)"
        ),
    };
    let mut latencies = Vec::new();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut probs: Vec<Vec<f32>> = Vec::new();
    for row in rows {
        let (v, ms) = embed_timed(embedder, &row.text).await?;
        latencies.push(ms);
        probs.push(emotion.probabilities(&v));
        let s = &sentiment.labels[argmax(&sentiment.probabilities(&v)).0];
        let e = &emotion.labels[argmax(&emotion.probabilities(&v)).0];
        out.push((s.clone(), e.clone()));
    }
    latencies.sort_by(f64::total_cmp);
    let negative = |s: &str| if s == "negative" { "negative" } else { "other" };
    let figures = |idx: &[usize]| {
        let neg = macro_f1(
            idx.iter()
                .map(|&i| (negative(&rows[i].sentiment), negative(&out[i].0))),
        );
        let emo_ok = idx.iter().filter(|&&i| rows[i].emotion == out[i].1).count();
        let angry: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| rows[i].emotion == "angry")
            .collect();
        let angry_ok = angry.iter().filter(|&&i| out[i].1 == "angry").count();
        (neg, ratio(emo_ok, idx.len()), ratio(angry_ok, angry.len()))
    };
    let all: Vec<usize> = (0..rows.len()).collect();
    let mut langs: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        langs
            .entry(r.lang.clone().unwrap_or_else(|| "-".into()))
            .or_default()
            .push(i);
    }
    let (neg, emo_acc, _) = figures(&all);
    let emotions = emotion
        .labels
        .iter()
        .map(|l| {
            let gold = all.iter().filter(|&&i| &rows[i].emotion == l).count();
            let said = all.iter().filter(|&&i| &out[i].1 == l).count();
            let both = all
                .iter()
                .filter(|&&i| &rows[i].emotion == l && &out[i].1 == l)
                .count();
            (l.clone(), (ratio(both, gold), ratio(both, said)))
        })
        .collect();
    let handoff = model
        .emotion_thresholds
        .iter()
        .filter_map(|(name, &t)| {
            let col = emotion.labels.iter().position(|l| l == name)?;
            let gold = rows.iter().filter(|r| &r.emotion == name).count();
            let flagged = probs.iter().filter(|p| p[col] >= t).count();
            let caught = rows
                .iter()
                .zip(&probs)
                .filter(|(r, p)| &r.emotion == name && p[col] >= t)
                .count();
            Some((
                name.clone(),
                (t, ratio(caught, gold), ratio(caught, flagged)),
            ))
        })
        .collect();
    Ok(AffectReport {
        handoff,
        examples: rows.len(),
        negative_macro_f1: neg,
        sentiment_accuracy: ratio(
            all.iter()
                .filter(|&&i| rows[i].sentiment == out[i].0)
                .count(),
            rows.len(),
        ),
        emotion_accuracy: emo_acc,
        emotion_macro_f1: macro_f1(
            rows.iter()
                .zip(&out)
                .map(|(r, o)| (r.emotion.as_str(), o.1.as_str())),
        ),
        emotions,
        per_language: langs
            .into_iter()
            .map(|(l, idx)| {
                let (neg, acc, angry) = figures(&idx);
                (
                    l,
                    AffectLanguage {
                        examples: idx.len(),
                        negative_macro_f1: neg,
                        emotion_accuracy: acc,
                        angry_recall: angry,
                    },
                )
            })
            .collect(),
        latency_ms_p50: percentile(&latencies, 0.5),
        latency_ms_p99: percentile(&latencies, 0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_matches_a_hand_computation() {
        // a: tp 1, fn 1 -> p 1, r .5, f1 .667; b: tp 1, fp 1 -> p .5, r 1, f1 .667
        let pairs = [("a", "a"), ("a", "b"), ("b", "b")];
        assert!((macro_f1(pairs.iter().copied()) - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(macro_f1([("x", "x")].iter().copied()), 1.0);
    }

    #[test]
    fn calibration_error_is_zero_when_confidence_matches_accuracy() {
        let pts: Vec<(f32, bool)> = (0..10).map(|i| (0.8, i < 7 || i == 9)).collect();
        assert!(calibration_error(&pts) < 1e-6);
        let over: Vec<(f32, bool)> = (0..10).map(|_| (0.95, false)).collect();
        assert!((calibration_error(&over) - 0.95).abs() < 1e-6);
    }
}
