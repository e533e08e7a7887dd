//! A softmax (multinomial logistic regression) head over sentence embeddings: the one model shape
//! every understanding task here uses (intents, sentiment, emotion).
//!
//! Training is linfa-logistic's L-BFGS (deterministic: it starts from zero weights); prediction is
//! a plain dot product over the stored weights, so scoring a message costs microseconds and needs
//! no ndarray at run time. A temperature fitted on held-out data makes the probabilities honest
//! (calibrated), which is what thresholds and the confidence shown to agents rely on.

use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// Fitted weights, the labels they predict, and the calibration temperature.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SoftmaxHead {
    pub labels: Vec<String>,
    pub dims: usize,
    /// Row-major `[dims][labels]`.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    /// Logits are divided by it before the softmax (1 = uncalibrated).
    pub temperature: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no training data")]
    Empty,
    #[error("need at least two labels to train, got {0}")]
    OneLabel(usize),
    #[error("training failed: {0}")]
    Solver(String),
}

/// Training settings.
#[derive(Debug, Clone, Copy)]
pub struct TrainSettings {
    /// L2 penalty on the summed log-loss (1/C in scikit-learn's terms).
    pub alpha: f64,
    pub max_iterations: u64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        // C = 64 was the best of 16/64/256 on CLINC150's validation split
        // (scripts/models/CLINC150-RESEARCH.md); it also suits the small demo sets.
        Self {
            alpha: 1.0 / 64.0,
            max_iterations: 300,
        }
    }
}

impl SoftmaxHead {
    /// Fits a head on `vectors` (all of one dimension) labelled with `targets` (indices into
    /// `labels`).
    pub fn train(
        vectors: &[&[f32]],
        targets: &[usize],
        labels: &[String],
        settings: TrainSettings,
    ) -> Result<Self, TrainError> {
        let dims = vectors.first().map(|v| v.len()).ok_or(TrainError::Empty)?;
        let present: std::collections::BTreeSet<usize> = targets.iter().copied().collect();
        if present.len() < 2 {
            return Err(TrainError::OneLabel(present.len()));
        }
        let mut x = Array2::<f64>::zeros((vectors.len(), dims));
        for (mut row, v) in x.rows_mut().into_iter().zip(vectors) {
            for (cell, value) in row.iter_mut().zip(v.iter()) {
                *cell = f64::from(*value);
            }
        }
        let y = Array1::from_iter(targets.iter().copied());
        let dataset = Dataset::new(x, y);
        let fitted = MultiLogisticRegression::default()
            .alpha(settings.alpha)
            .max_iterations(settings.max_iterations)
            .fit(&dataset)
            .map_err(|e| TrainError::Solver(e.to_string()))?;
        // linfa orders its columns by the sorted distinct targets; map them back to `labels`.
        let classes = fitted.classes();
        let mut weights = vec![0f32; dims * labels.len()];
        // A label with no training row can never win: a very low bias.
        let mut bias = vec![-1e4f32; labels.len()];
        for (col, &class) in classes.iter().enumerate() {
            for d in 0..dims {
                weights[d * labels.len() + class] = fitted.params()[[d, col]] as f32;
            }
            bias[class] = fitted.intercept()[col] as f32;
        }
        Ok(Self {
            labels: labels.to_vec(),
            dims,
            weights,
            bias,
            temperature: 1.0,
        })
    }

    /// Raw scores, one per label.
    pub fn logits(&self, v: &[f32]) -> Vec<f32> {
        let n = self.labels.len();
        let mut out = self.bias.clone();
        for (d, x) in v.iter().enumerate().take(self.dims) {
            let row = &self.weights[d * n..(d + 1) * n];
            for (o, w) in out.iter_mut().zip(row) {
                *o += x * w;
            }
        }
        out
    }

    /// Calibrated probabilities, one per label.
    pub fn probabilities(&self, v: &[f32]) -> Vec<f32> {
        softmax(&self.logits(v), self.temperature)
    }

    /// Fits the temperature that minimises the log-loss of `held_out` (vector, true label index):
    /// a golden-section search over log T. Keeps 1 when there is nothing to fit on.
    pub fn calibrate(&mut self, held_out: &[(&[f32], usize)]) {
        if held_out.is_empty() {
            return;
        }
        let logits: Vec<(Vec<f32>, usize)> =
            held_out.iter().map(|(v, y)| (self.logits(v), *y)).collect();
        let nll = |log_t: f64| -> f64 {
            let t = log_t.exp() as f32;
            logits
                .iter()
                .map(|(l, y)| -f64::from(softmax(l, t)[*y].max(1e-12)).ln())
                .sum::<f64>()
        };
        let (mut a, mut b) = ((0.05f64).ln(), (20f64).ln());
        let g = (5f64.sqrt() - 1.0) / 2.0;
        for _ in 0..60 {
            let c = b - g * (b - a);
            let d = a + g * (b - a);
            if nll(c) < nll(d) {
                b = d;
            } else {
                a = c;
            }
        }
        self.temperature = ((a + b) / 2.0).exp() as f32;
    }
}

/// Softmax of `logits / temperature`, numerically stable.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| ((l - max) / t).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// Index and value of the largest element.
pub fn argmax(values: &[f32]) -> (usize, f32) {
    values
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Vec<Vec<f32>>, Vec<usize>, Vec<String>) {
        // Three clusters on the axes of a 3-d space, with a little deterministic jitter.
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..60 {
            let class = i % 3;
            let j = (i as f32 * 0.37).sin() * 0.2;
            let mut v = vec![j, -j, j * 0.5];
            v[class] += 1.0;
            xs.push(v);
            ys.push(class);
        }
        (xs, ys, vec!["a".into(), "b".into(), "c".into()])
    }

    #[test]
    fn learns_separable_classes_and_is_deterministic() {
        let (xs, ys, labels) = toy();
        let refs: Vec<&[f32]> = xs.iter().map(|v| v.as_slice()).collect();
        let head = SoftmaxHead::train(&refs, &ys, &labels, TrainSettings::default()).expect("fit");
        for (v, y) in xs.iter().zip(&ys) {
            assert_eq!(argmax(&head.probabilities(v)).0, *y);
        }
        let again = SoftmaxHead::train(&refs, &ys, &labels, TrainSettings::default()).expect("fit");
        assert_eq!(head, again, "same data, same weights");
    }

    #[test]
    fn a_label_without_rows_never_wins() {
        let (xs, ys, mut labels) = toy();
        labels.push("never".into());
        let refs: Vec<&[f32]> = xs.iter().map(|v| v.as_slice()).collect();
        let head = SoftmaxHead::train(&refs, &ys, &labels, TrainSettings::default()).expect("fit");
        assert!(head.probabilities(&[0.0, 0.0, 0.0])[3] < 1e-6);
    }

    #[test]
    fn calibration_lowers_overconfidence_on_noisy_held_out_data() {
        let (xs, ys, labels) = toy();
        let refs: Vec<&[f32]> = xs.iter().map(|v| v.as_slice()).collect();
        let mut head =
            SoftmaxHead::train(&refs, &ys, &labels, TrainSettings::default()).expect("fit");
        // Held-out points half-way between two clusters, labelled with one of them.
        let held: Vec<(Vec<f32>, usize)> = (0..30)
            .map(|i| {
                let (a, b) = (i % 3, (i + 1) % 3);
                let mut v = vec![0.0; 3];
                v[a] = 0.55;
                v[b] = 0.45;
                (v, if i % 2 == 0 { a } else { b })
            })
            .collect();
        let pairs: Vec<(&[f32], usize)> = held.iter().map(|(v, y)| (v.as_slice(), *y)).collect();
        let before = argmax(&head.probabilities(&held[0].0)).1;
        head.calibrate(&pairs);
        let after = argmax(&head.probabilities(&held[0].0)).1;
        assert!(head.temperature > 1.0, "{}", head.temperature);
        assert!(after < before, "{after} < {before}");
    }

    #[test]
    fn one_label_is_refused() {
        let v = [1.0f32, 0.0];
        let err = SoftmaxHead::train(&[&v], &[0], &["a".into()], TrainSettings::default());
        assert!(matches!(err, Err(TrainError::OneLabel(1))));
    }
}
