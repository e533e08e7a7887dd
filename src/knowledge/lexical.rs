//! Lexical similarity: character n-gram TF-IDF over the knowledge base's texts.
//!
//! Why: the small e5 encoder misses words a customer shares with an article ("data cap on home
//! broadband" → the internet plans article, which says "no data cap"), and ranks near-ties
//! between two articles by chance. A customer's own words are good evidence when the article
//! uses them. Character n-grams (2 to 4 characters within a word, as scikit-learn's `char_wb`)
//! need no tokenizer or stemmer per language: they match Russian word forms and Chinese text
//! alike. Added to the semantic score with a small weight (`lexical_weight`), this lifted top-1 on
//! `kb-tune.jsonl` from 86.9% to 89.1% (README, "Knowledge base answers").
//!
//! It is the textbook formula (smoothed IDF, sublinear TF, unit-length vectors, cosine), written
//! here because it is the one the weight was tuned with; the BM25 crates score differently.
//! The index holds one sparse vector per indexed text (a 600-character chunk has a few hundred
//! n-grams), in memory, and is rebuilt from the stored articles when they change.

use std::collections::{BTreeMap, HashMap};

/// Shortest and longest n-gram, in characters (a word is padded with a space on each side).
const MIN_N: usize = 2;
const MAX_N: usize = 4;

/// The TF-IDF vectors of every indexed text, as postings per n-gram.
#[derive(Debug, Default)]
pub struct LexicalIndex {
    /// n-gram → its inverse document frequency and the texts that contain it (text, weight).
    postings: HashMap<String, (f32, Vec<(u32, f32)>)>,
    /// Which article each text belongs to (an index into `articles`).
    owner: Vec<u32>,
    articles: Vec<String>,
}

impl LexicalIndex {
    /// Indexes `(article id, text)` pairs; an article usually has many texts.
    pub fn build<'a>(texts: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut articles: Vec<String> = Vec::new();
        let mut article_index: HashMap<&str, u32> = HashMap::new();
        let mut owner = Vec::new();
        let mut counts: Vec<BTreeMap<String, u32>> = Vec::new();
        for (article, text) in texts {
            let next = articles.len() as u32;
            let a = *article_index.entry(article).or_insert_with(|| {
                articles.push(article.to_string());
                next
            });
            owner.push(a);
            counts.push(ngram_counts(text));
        }
        let docs = counts.len() as f32;
        let mut df: HashMap<&str, u32> = HashMap::new();
        for c in &counts {
            for g in c.keys() {
                *df.entry(g.as_str()).or_default() += 1;
            }
        }
        let idf: HashMap<&str, f32> = df
            .iter()
            .map(|(g, n)| (*g, ((1.0 + docs) / (1.0 + *n as f32)).ln() + 1.0))
            .collect();
        let mut postings: HashMap<String, (f32, Vec<(u32, f32)>)> = HashMap::new();
        for (doc, c) in counts.iter().enumerate() {
            let weights = unit(
                c.iter()
                    .map(|(g, n)| (g.as_str(), tf(*n) * idf[g.as_str()])),
            );
            for (g, w) in weights {
                postings
                    .entry(g.to_string())
                    .or_insert_with(|| (idf[g], Vec::new()))
                    .1
                    .push((doc as u32, w));
            }
        }
        Self {
            postings,
            owner,
            articles,
        }
    }

    /// Each article's best cosine similarity between `query` and one of its texts, for the
    /// articles that share at least one n-gram with it. N-grams no text has are ignored.
    pub fn scores(&self, query: &str) -> HashMap<&str, f32> {
        let counts = ngram_counts(query);
        let known = counts.iter().filter_map(|(g, n)| {
            self.postings
                .get(g)
                .map(|(idf, _)| (g.as_str(), tf(*n) * idf))
        });
        let mut per_text: HashMap<u32, f32> = HashMap::new();
        for (g, w) in unit(known) {
            for (doc, dw) in &self.postings[g].1 {
                *per_text.entry(*doc).or_default() += w * dw;
            }
        }
        let mut per_article: HashMap<&str, f32> = HashMap::new();
        for (doc, s) in per_text {
            let article = self.articles[self.owner[doc as usize] as usize].as_str();
            let best = per_article.entry(article).or_default();
            *best = best.max(s);
        }
        per_article
    }
}

/// Sublinear term frequency: a word said three times is not three times the evidence.
fn tf(count: u32) -> f32 {
    1.0 + (count as f32).ln()
}

/// Scales weights to unit length (so that dot products are cosines).
fn unit<'a>(weights: impl Iterator<Item = (&'a str, f32)>) -> Vec<(&'a str, f32)> {
    let weights: Vec<(&str, f32)> = weights.collect();
    let norm = weights.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
    if norm == 0.0 {
        return Vec::new();
    }
    weights.into_iter().map(|(g, w)| (g, w / norm)).collect()
}

/// Lower-cased character n-grams of each word padded with spaces (scikit-learn's `char_wb`):
/// " ab", "abc", "bc " … A word shorter than n gives its whole padded form once. Sorted, so that
/// sums of floats run in one order and a search scores the same in every process.
fn ngram_counts(text: &str) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for word in text.split_whitespace() {
        let padded: Vec<char> = std::iter::once(' ')
            .chain(word.chars().flat_map(char::to_lowercase))
            .chain(std::iter::once(' '))
            .collect();
        for n in MIN_N..=MAX_N {
            if padded.len() <= n {
                *counts.entry(padded.iter().collect()).or_default() += 1;
                break;
            }
            for gram in padded.windows(n) {
                *counts.entry(gram.iter().collect()).or_default() += 1;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngrams_are_taken_within_padded_words() {
        let counts = ngram_counts("Ab");
        let mut grams: Vec<&str> = counts.keys().map(String::as_str).collect();
        grams.sort();
        // " ab " gives " a", "ab", "b " (n = 2), " ab", "ab " (n = 3), then " ab " once (n = 4).
        assert_eq!(grams, vec![" a", " ab", " ab ", "ab", "ab ", "b "]);
        assert_eq!(ngram_counts("no no")["no"], 2);
    }

    #[test]
    fn the_article_sharing_the_customers_words_scores_highest() {
        let index = LexicalIndex::build([
            ("plans", "Home internet plans: no data cap"),
            ("plans", "Fibre 500 and 1000"),
            ("roaming", "Using your phone abroad"),
            ("wifi", "Change the Wi-Fi password"),
        ]);
        let scores = index.scores("is there a data cap on home internet?");
        assert!(scores["plans"] > 0.3, "{scores:?}");
        assert!(scores["plans"] > 2.0 * scores.get("roaming").copied().unwrap_or(0.0));
        // The best text counts, not the sum: identical text is a cosine of 1.
        let same = index.scores("Using your phone abroad");
        assert!((same["roaming"] - 1.0).abs() < 1e-5, "{same:?}");
        // Nothing in common, nothing returned.
        assert!(index.scores("完全不同").is_empty());
    }
}
