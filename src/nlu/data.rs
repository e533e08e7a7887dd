//! Labelled training and test data for the understanding heads, read from the repository's plain
//! files: a folder of intent YAML files (`knowledge/intents/`), CSV files with `text,label` (the
//! CLINC150 layout; `category` is accepted for `label`), and the sentiment/emotion CSV
//! (`text,lang,sentiment,emotion`). Every error names the file and the line.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The label of "none of the known intents", as in CLINC150.
pub const OOS: &str = "oos";

/// One labelled message.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: String,
    pub lang: Option<String>,
}

/// One message labelled with how the customer feels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AffectExample {
    pub text: String,
    #[serde(default)]
    pub lang: Option<String>,
    pub sentiment: String,
    pub emotion: String,
}

/// An intent file: `name`, `team`, `examples` per language.
#[derive(Debug, Clone, Deserialize)]
pub struct IntentFile {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    pub examples: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Invalid {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Intent examples from a folder of YAML files or from one CSV file.
pub fn read_intents(path: &Path) -> Result<Vec<Example>, DataError> {
    if path.is_dir() {
        Ok(read_intent_dir(path)?
            .into_iter()
            .flat_map(|f| {
                let label = f.name;
                f.examples.into_iter().flat_map(move |(lang, texts)| {
                    let label = label.clone();
                    texts.into_iter().map(move |text| Example {
                        text,
                        label: label.clone(),
                        lang: Some(lang.clone()),
                    })
                })
            })
            .collect())
    } else {
        read_intent_csv(path)
    }
}

/// The intent files of a folder, sorted by name; the name must equal the file name.
pub fn read_intent_dir(dir: &Path) -> Result<Vec<IntentFile>, DataError> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| read_error(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("yaml") || x.eq_ignore_ascii_case("yml"))
        })
        .collect();
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| read_error(&path, e))?;
        let file: IntentFile = serde_norway::from_str(&text).map_err(|e| match e.location() {
            Some(l) => invalid(&path, format!("line {}: {e}", l.line())),
            None => invalid(&path, e.to_string()),
        })?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        // `oos.clinc150.yaml` adds examples to `oos`: several files may feed one label.
        if file.name != stem && !stem.starts_with(&format!("{}.", file.name)) {
            return Err(invalid(
                &path,
                format!("name '{}' differs from the file name '{stem}'", file.name),
            ));
        }
        if file.examples.values().all(|v| v.is_empty()) {
            return Err(invalid(&path, "no examples"));
        }
        files.push(file);
    }
    if files.is_empty() {
        return Err(invalid(dir, "no intent files (*.yaml)"));
    }
    Ok(files)
}

/// The agent team of each intent: from a folder's intent files; none for a CSV file.
pub fn read_teams(path: &Path) -> Result<BTreeMap<String, String>, DataError> {
    if !path.is_dir() {
        return Ok(BTreeMap::new());
    }
    Ok(read_intent_dir(path)?
        .into_iter()
        .filter_map(|f| f.team.map(|t| (f.name, t)))
        .collect())
}

/// A CSV file with a header naming `text` and `label` (or `category`), optionally `lang`.
pub fn read_intent_csv(path: &Path) -> Result<Vec<Example>, DataError> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| read_error(path, e))?;
    let headers = reader.headers().map_err(|e| invalid(path, e.to_string()))?;
    let column = |names: &[&str]| headers.iter().position(|h| names.contains(&h.trim()));
    let text_col =
        column(&["text"]).ok_or_else(|| invalid(path, "the header has no 'text' column"))?;
    let label_col = column(&["label", "category", "intent"])
        .ok_or_else(|| invalid(path, "the header has no 'label' (or 'category') column"))?;
    let lang_col = column(&["lang", "language"]);
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| invalid(path, format!("line {line}: {e}")))?;
        let field = |c: usize| record.get(c).map(str::trim).unwrap_or("");
        let (text, label) = (field(text_col), field(label_col));
        if text.is_empty() || label.is_empty() {
            return Err(invalid(path, format!("line {line}: empty text or label")));
        }
        out.push(Example {
            text: text.to_string(),
            label: label.to_string(),
            lang: lang_col
                .map(|c| field(c).to_string())
                .filter(|l| !l.is_empty()),
        });
    }
    if out.is_empty() {
        return Err(invalid(path, "no rows"));
    }
    Ok(out)
}

/// True when a CSV file's header has an `emotion` column (a sentiment/emotion file).
pub fn is_affect_csv(path: &Path) -> Result<bool, DataError> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| read_error(path, e))?;
    let headers = reader.headers().map_err(|e| invalid(path, e.to_string()))?;
    Ok(headers.iter().any(|h| h.trim() == "emotion"))
}

pub const SENTIMENTS: [&str; 3] = ["negative", "neutral", "positive"];
pub const EMOTIONS: [&str; 5] = ["angry", "anxious", "disappointed", "satisfied", "neutral"];

/// The sentiment/emotion CSV (`text,lang,sentiment,emotion`); unknown labels are refused.
pub fn read_affect_csv(path: &Path) -> Result<Vec<AffectExample>, DataError> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| read_error(path, e))?;
    let mut out = Vec::new();
    for (i, row) in reader.deserialize::<AffectExample>().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| invalid(path, format!("line {line}: {e}")))?;
        if !SENTIMENTS.contains(&row.sentiment.as_str()) {
            return Err(invalid(
                path,
                format!("line {line}: unknown sentiment '{}'", row.sentiment),
            ));
        }
        if !EMOTIONS.contains(&row.emotion.as_str()) {
            return Err(invalid(
                path,
                format!("line {line}: unknown emotion '{}'", row.emotion),
            ));
        }
        out.push(row);
    }
    if out.is_empty() {
        return Err(invalid(path, "no rows"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_accepts_category_as_the_label_and_names_bad_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.csv");
        std::fs::write(
            &path,
            "text,category\n\"hi, there\",greeting\nbye,goodbye\n",
        )
        .expect("w");
        let rows = read_intents(&path).expect("read");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].text, "hi, there");
        assert_eq!(rows[0].label, "greeting");
        std::fs::write(&path, "text,label\nhello,greeting\n,oos\n").expect("w");
        let err = read_intents(&path).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        std::fs::write(&path, "words,label\nhello,greeting\n").expect("w");
        let err = read_intents(&path).unwrap_err().to_string();
        assert!(err.contains("no 'text' column"), "{err}");
    }

    #[test]
    fn the_repository_intents_and_emotions_read_cleanly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let intents = read_intents(&root.join("knowledge/intents")).expect("intents");
        let labels: std::collections::BTreeSet<_> = intents.iter().map(|e| &e.label).collect();
        assert!(labels.len() >= 20, "{labels:?}");
        for lang in ["en", "ru", "vi", "zh"] {
            assert!(intents.iter().any(|e| e.lang.as_deref() == Some(lang)));
        }
        let affect = read_affect_csv(&root.join("knowledge/emotions/train.csv")).expect("affect");
        assert_eq!(affect.len(), 1000);
    }
}
