//! `frontdesk eval kb`: how well the knowledge base answers a labelled set of customer queries,
//! and the calibration of its two thresholds on such a set.
//!
//! A query file has one JSON object per line: `{"text", "expect": "<article id>" | "none",
//! "lang"}`. Thresholds are tuned on one file (`tests/data/kb-tune.jsonl`) and reported on another
//! (`tests/data/kb-eval.jsonl`), so the figures are not measured on what they were fitted to.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{decide, Decision, KnowledgeBase, KnowledgeError, Thresholds};

#[derive(Debug, Clone, Deserialize)]
pub struct LabelledQuery {
    pub text: String,
    pub expect: String,
    #[serde(default)]
    pub lang: Option<String>,
}

/// Reads a JSON Lines query file; a bad line is an error naming it.
pub fn read_queries(path: &Path) -> anyhow::Result<Vec<LabelledQuery>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// What the knowledge base did with one query.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub text: String,
    pub lang: String,
    pub expect: Option<String>,
    /// Best articles, best first, with scores.
    pub top: Vec<(String, f32)>,
    /// The answer confidence (best score and lead); none without any article.
    pub confidence: Option<f32>,
    pub latency_ms: f64,
}

impl Outcome {
    fn score(&self) -> f32 {
        self.top.first().map(|t| t.1).unwrap_or(f32::MIN)
    }
    fn decision(&self, t: Thresholds) -> Decision {
        decide(self.top.first().map(|t| t.1), self.confidence, t)
    }
    fn top1_correct(&self) -> bool {
        matches!((&self.expect, self.top.first()), (Some(e), Some((id, _))) if e == id)
    }
}

/// Runs every query (one at a time, as the bot does) and times embedding + search.
pub async fn run(
    kb: &KnowledgeBase,
    queries: &[LabelledQuery],
) -> Result<Vec<Outcome>, KnowledgeError> {
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let started = Instant::now();
        let result = kb.search(&q.text, 3).await?;
        out.push(Outcome {
            text: q.text.clone(),
            lang: q.lang.clone().unwrap_or_else(|| "?".into()),
            expect: (q.expect != "none").then(|| q.expect.clone()),
            top: result
                .hits
                .iter()
                .map(|h| (h.article_id.clone(), h.score))
                .collect(),
            confidence: result.confidence,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
    }
    Ok(out)
}

/// Figures for one language (or all).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub queries: usize,
    pub answerable: usize,
    pub unanswerable: usize,
    /// Answerable queries whose best article is the expected one (retrieval quality).
    pub top1_accuracy: f64,
    /// Answerable queries answered with the expected article (decision `answer`).
    pub answered_correctly: f64,
    /// Answerable queries whose expected article was among the suggestions (decision `suggest`).
    pub suggested_correctly: f64,
    /// Queries answered with a wrong article (including unanswerable ones answered).
    pub wrong_answers: usize,
    /// Of the unanswerable queries, the share that got no article (decision `none`).
    pub no_answer_recall: f64,
    /// Of the queries that got no article, the share that were really unanswerable.
    pub no_answer_precision: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub thresholds: Thresholds,
    pub all: Figures,
    pub by_language: BTreeMap<String, Figures>,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

fn figures(outcomes: &[&Outcome], t: Thresholds) -> Figures {
    let answerable: Vec<&&Outcome> = outcomes.iter().filter(|o| o.expect.is_some()).collect();
    let unanswerable = outcomes.len() - answerable.len();
    let mut f = Figures {
        queries: outcomes.len(),
        answerable: answerable.len(),
        unanswerable,
        ..Figures::default()
    };
    let (mut top1, mut answered, mut suggested, mut none_ok, mut none_total) = (0, 0, 0, 0, 0);
    for o in outcomes {
        let d = o.decision(t);
        if d == Decision::None {
            none_total += 1;
            if o.expect.is_none() {
                none_ok += 1;
            }
        }
        if d == Decision::Answer && !o.top1_correct() {
            f.wrong_answers += 1;
        }
        if let Some(e) = &o.expect {
            if o.top1_correct() {
                top1 += 1;
            }
            if d == Decision::Answer && o.top1_correct() {
                answered += 1;
            }
            if d == Decision::Suggest && o.top.iter().any(|(id, _)| id == e) {
                suggested += 1;
            }
        }
    }
    f.top1_accuracy = ratio(top1, answerable.len());
    f.answered_correctly = ratio(answered, answerable.len());
    f.suggested_correctly = ratio(suggested, answerable.len());
    f.no_answer_recall = ratio(none_ok, unanswerable);
    f.no_answer_precision = ratio(none_ok, none_total);
    f
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Answerable queries whose best article is not the expected one, and unanswerable ones that got
/// an article: for knowledge base authors.
pub fn misses(outcomes: &[Outcome], suggest: f32) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| match &o.expect {
            Some(_) => !o.top1_correct(),
            None => o.score() >= suggest,
        })
        .map(|o| {
            let got: Vec<String> = o.top.iter().map(|(id, s)| format!("{id} {s:.3}")).collect();
            format!(
                "[{}] {:?} expected {} got {}",
                o.lang,
                o.text,
                o.expect.as_deref().unwrap_or("none"),
                got.join(", ")
            )
        })
        .collect()
}

pub fn report(outcomes: &[Outcome], t: Thresholds) -> Report {
    let all: Vec<&Outcome> = outcomes.iter().collect();
    let mut langs: BTreeMap<String, Vec<&Outcome>> = BTreeMap::new();
    for o in outcomes {
        langs.entry(o.lang.clone()).or_default().push(o);
    }
    let mut lat: Vec<f64> = outcomes.iter().map(|o| o.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    Report {
        thresholds: t,
        all: figures(&all, t),
        by_language: langs
            .into_iter()
            .map(|(l, os)| (l, figures(&os, t)))
            .collect(),
        latency_ms_p50: percentile(&lat, 0.5),
        latency_ms_p99: percentile(&lat, 0.99),
    }
}

/// Picks the thresholds from labelled outcomes.
///
/// The "nothing" boundary (`suggest`) maximizes correct no-answers plus answerable queries kept
/// above it with the right best article, with no-answer recall given twice the weight (saying
/// "I don't know" wrongly costs less than a confident wrong answer). Each answer threshold, on
/// the confidence (score and lead over the second article) and on the score alone, is the lowest
/// value at which, among the queries above that boundary, best articles are right at least 97 %
/// of the time; below both the bot only suggests.
pub fn calibrate(outcomes: &[Outcome]) -> Thresholds {
    let mut candidates: Vec<f32> = outcomes
        .iter()
        .map(Outcome::score)
        .filter(|s| s.is_finite())
        .collect();
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    let answerable = outcomes
        .iter()
        .filter(|o| o.expect.is_some())
        .count()
        .max(1) as f64;
    let unanswerable = outcomes
        .iter()
        .filter(|o| o.expect.is_none())
        .count()
        .max(1) as f64;
    let mut best = (f64::MIN, 0.0f32);
    for &t in &candidates {
        let kept_right = outcomes
            .iter()
            .filter(|o| o.top1_correct() && o.score() >= t)
            .count() as f64;
        let refused_right = outcomes
            .iter()
            .filter(|o| o.expect.is_none() && o.score() < t)
            .count() as f64;
        let objective = kept_right / answerable + 2.0 * refused_right / unanswerable;
        if objective > best.0 {
            best = (objective, t);
        }
    }
    let suggest = best.1;
    let kept: Vec<&Outcome> = outcomes.iter().filter(|o| o.score() >= suggest).collect();
    Thresholds {
        answer: precise_from(&kept, |o| o.confidence),
        answer_score: precise_from(&kept, |o| Some(o.score())),
        suggest,
    }
}

/// The lowest value of `key` above which best articles are right at least 97 % of the time.
fn precise_from(kept: &[&Outcome], key: impl Fn(&Outcome) -> Option<f32>) -> f32 {
    let mut values: Vec<f32> = kept.iter().filter_map(|o| key(o)).collect();
    values.sort_by(f32::total_cmp);
    values.dedup();
    for &a in &values {
        let above: Vec<&&Outcome> = kept
            .iter()
            .filter(|o| key(o).is_some_and(|v| v >= a))
            .collect();
        let right = above.iter().filter(|o| o.top1_correct()).count() as f64;
        if !above.is_empty() && right / above.len() as f64 >= 0.97 {
            return a;
        }
    }
    f32::INFINITY
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.thresholds)?;
        writeln!(
            f,
            "{:<6} {:>7} {:>8} {:>9} {:>9} {:>7} {:>10} {:>10}",
            "lang", "queries", "top-1", "answered", "suggested", "wrong", "none-rec", "none-prec"
        )?;
        let pct = |x: f64| format!("{:.1}%", x * 100.0);
        let mut row = |name: &str, x: &Figures| {
            writeln!(
                f,
                "{:<6} {:>7} {:>8} {:>9} {:>9} {:>7} {:>10} {:>10}",
                name,
                x.queries,
                pct(x.top1_accuracy),
                pct(x.answered_correctly),
                pct(x.suggested_correctly),
                x.wrong_answers,
                pct(x.no_answer_recall),
                pct(x.no_answer_precision)
            )
        };
        for (lang, x) in &self.by_language {
            row(lang, x)?;
        }
        row("all", &self.all)?;
        write!(
            f,
            "latency per query (embedding + search): p50 {:.2} ms, p99 {:.2} ms",
            self.latency_ms_p50, self.latency_ms_p99
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(expect: Option<&str>, top: &str, score: f32) -> Outcome {
        Outcome {
            text: "q".into(),
            lang: "en".into(),
            expect: expect.map(str::to_string),
            top: vec![(top.to_string(), score)],
            confidence: Some(score),
            latency_ms: 1.0,
        }
    }

    #[test]
    fn a_clear_lead_or_a_high_score_is_answered_and_a_tie_only_suggested() {
        use crate::knowledge::confidence;
        let t = Thresholds {
            answer: 0.40,
            answer_score: 0.30,
            suggest: 0.18,
        };
        // The same best score: alone at the top, or shared with another article.
        let clear = Some(confidence(0.25, Some(0.17)));
        let tie = Some(confidence(0.25, Some(0.249)));
        assert_eq!(decide(Some(0.25), clear, t), Decision::Answer);
        assert_eq!(decide(Some(0.25), tie, t), Decision::Suggest);
        // A score high enough is answered even in a tie.
        let high_tie = Some(confidence(0.31, Some(0.305)));
        assert_eq!(decide(Some(0.31), high_tie, t), Decision::Answer);
        // Below the suggestion boundary nothing is offered, however clear the lead.
        let low = Some(confidence(0.17, Some(0.0)));
        assert!(low >= Some(t.answer));
        assert_eq!(decide(Some(0.17), low, t), Decision::None);
        assert_eq!(decide(None, None, t), Decision::None);
    }

    #[test]
    fn figures_and_calibration_separate_answerable_from_unanswerable() {
        let outcomes = vec![
            o(Some("a"), "a", 0.92),
            o(Some("b"), "b", 0.90),
            o(Some("c"), "x", 0.85),
            o(None, "a", 0.80),
            o(None, "b", 0.79),
        ];
        let t = calibrate(&outcomes);
        assert!(t.suggest > 0.80 && t.suggest <= 0.85, "{t:?}");
        assert!((t.answer - 0.90).abs() < 1e-6, "{t:?}");
        assert!((t.answer_score - 0.90).abs() < 1e-6, "{t:?}");
        let r = report(&outcomes, t);
        assert!((r.all.top1_accuracy - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.all.answered_correctly - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.all.no_answer_recall, 1.0);
        assert_eq!(r.all.wrong_answers, 0);
        assert_eq!(r.all.no_answer_precision, 1.0);
    }
}
