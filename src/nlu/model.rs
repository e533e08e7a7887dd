//! The trained understanding model as one JSON file: the intent head with its out-of-scope
//! threshold, the sentiment and emotion heads, and what it was trained from (so a gateway can
//! tell that its cached model is stale, or was made for another embedding model).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::intent::IntentModel;
use super::linear::SoftmaxHead;

/// Bumped whenever the file layout or the training procedure changes: old caches retrain.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NluModel {
    pub format: u32,
    /// The embedding model the heads were trained on (`<model>-<variant>`).
    pub embedding: String,
    /// SHA-256 over the training inputs and settings.
    pub data_hash: String,
    pub seed: u64,
    pub intents: IntentModel,
    /// The agent team of each intent (from the intent files; empty for CSV data).
    #[serde(default)]
    pub teams: BTreeMap<String, String>,
    pub sentiment: Option<SoftmaxHead>,
    pub emotion: Option<SoftmaxHead>,
    /// Per emotion that can hand a customer over (angry, anxious): the probability at or above
    /// which it counts, tuned on held-out data to catch 90 % of them.
    #[serde(default)]
    pub emotion_thresholds: BTreeMap<String, f32>,
    /// Figures measured on held-out data while training.
    #[serde(default)]
    pub validation: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read the NLU model {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write the NLU model {path}: {message}")]
    Write { path: String, message: String },
    #[error("the NLU model {path} was trained on embeddings of {found}, but this gateway uses {expected}: retrain it with `frontdesk nlu train`")]
    WrongEmbedding {
        path: String,
        found: String,
        expected: String,
    },
}

impl NluModel {
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let err = |message: String| ModelError::Read {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let model: NluModel = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        if model.format != FORMAT {
            return Err(err(format!(
                "file format {} (this version reads {FORMAT})",
                model.format
            )));
        }
        Ok(model)
    }

    /// Refuses a model trained on another embedding model (its weights would be noise).
    pub fn check_embedding(&self, path: &Path, expected: &str) -> Result<(), ModelError> {
        if self.embedding != expected {
            return Err(ModelError::WrongEmbedding {
                path: path.display().to_string(),
                found: self.embedding.clone(),
                expected: expected.to_string(),
            });
        }
        Ok(())
    }

    /// Writes atomically (temporary file, then rename), creating the folder.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let err = |e: std::io::Error| ModelError::Write {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec(self).map_err(|e| err(std::io::Error::other(e)))?;
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// A stable hash of everything training depends on.
pub fn data_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT.to_le_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}
