"""Shared helpers for the CLINC150 fine-tuning experiment: data, batching, embedding, metrics."""
from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import torch

from e5_torch import E5Encoder, make_tokenizer, mean_pool
import os

REPO = Path(__file__).resolve().parents[3]  # scripts/models/clinc-finetune/ -> the repository

DATA = Path(os.environ.get("CLINC150_DIR", REPO.parent / "shared/datasets/clinc150"))
OOS = "oos"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_split(split: str, data_dir: Path = DATA):
    with open(Path(data_dir) / f"{split}.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def label_space(train_labels):
    """150 intents sorted by name, then ``oos`` as the last class (index 150)."""
    intents = sorted(set(train_labels) - {OOS})
    classes = intents + [OOS]
    return classes, {c: i for i, c in enumerate(classes)}


def tokenize(tok, texts, max_len: int, prefix: str = "query: "):
    """List of token-id lists (with <s> ... </s>), truncated to ``max_len``."""
    tok.no_padding()
    tok.enable_truncation(max_len)
    return [e.ids for e in tok.encode_batch([prefix + t for t in texts])]


def pad(seqs, pad_id: int = 1):
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def length_bucketed_batches(lengths, batch: int, rng: np.random.Generator, pool: int = 50):
    """Shuffle, sort chunks of ``batch * pool`` rows by length, cut batches, shuffle batches."""
    order = rng.permutation(len(lengths))
    batches = []
    chunk = batch * pool
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort([lengths[i] for i in part], kind="stable")]
        batches += [part[i:i + batch] for i in range(0, len(part), batch)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def embed(model: E5Encoder, seqs, batch: int = 128, normalize: bool = True) -> np.ndarray:
    """Mean-pooled (L2-normalised) embeddings of token-id lists, in input order."""
    model.eval()
    order = np.argsort([len(s) for s in seqs], kind="stable")
    out = np.zeros((len(seqs), model.hidden), np.float32)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        ids, mask = pad([seqs[i] for i in idx])
        out[idx] = mean_pool(model(ids, mask), mask, normalize).numpy()
    return out


# ---------------------------------------------------------------------------------------------
# Metrics: score = p(best intent) - p(oos); a row is rejected as oos when score < threshold.
# ---------------------------------------------------------------------------------------------


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def intent_and_score(probs: np.ndarray, oos_index: int):
    """Best in-scope intent and the score p(best intent) - p(oos)."""
    intent_probs = np.delete(probs, oos_index, axis=1)
    best = intent_probs.argmax(1)
    best = np.where(best >= oos_index, best + 1, best)  # map back to class indices
    score = probs[np.arange(len(probs)), best] - probs[:, oos_index]
    return best, score


def metrics_at(best, score, y, oos_index: int, thr: float) -> dict:
    """In-scope accuracy, oos recall and oos precision when rows with score < thr are oos."""
    is_oos = y == oos_index
    pred_oos = score < thr
    in_acc = float(np.mean((best[~is_oos] == y[~is_oos]) & ~pred_oos[~is_oos]))
    recall = float(np.mean(pred_oos[is_oos]))
    precision = float(np.mean(is_oos[pred_oos])) if pred_oos.any() else float("nan")
    return {"in_acc": in_acc, "oos_recall": recall, "oos_precision": precision, "thr": float(thr)}


def sweep(best, score, y, oos_index: int):
    """All distinct operating points: thresholds just above each score (plus -inf)."""
    cand = np.unique(np.concatenate([[-np.inf], np.nextafter(score, np.inf)]))
    is_oos = y == oos_index
    correct = best == y
    # vectorised: sort scores once
    s_in, c_in = score[~is_oos], correct[~is_oos]
    s_oos = np.sort(score[is_oos])
    order = np.argsort(s_in)
    s_in_sorted, c_in_sorted = s_in[order], c_in[order]
    # in-scope rows kept (score >= thr) and correct: suffix sums
    suffix_correct = np.concatenate([np.cumsum(c_in_sorted[::-1])[::-1], [0]])
    first_kept = np.searchsorted(s_in_sorted, cand, side="left")
    in_acc = suffix_correct[first_kept] / max(len(s_in), 1)
    recall = np.searchsorted(s_oos, cand, side="left") / max(len(s_oos), 1)
    return cand, in_acc, recall


def choose_thresholds(best, score, y, oos_index: int, in_targets=(0.96, 0.968), recall_target=0.80):
    """Val-side threshold choice.

    ``OP<t>``: max oos recall subject to in-scope accuracy >= t (largest such threshold);
    ``OP80``: the lowest threshold with oos recall >= recall_target;
    ``BAL``: max of (in-scope accuracy + oos recall) / 2.
    """
    cand, in_acc, recall = sweep(best, score, y, oos_index)
    out = {}
    for t in in_targets:
        ok = np.where(in_acc >= t - 1e-12)[0]
        out[f"OP{t * 100:g}"] = float(cand[ok].max()) if len(ok) else None
    ok = np.where(recall >= recall_target - 1e-12)[0]
    out[f"OP{recall_target * 100:g}r"] = float(cand[ok].min()) if len(ok) else None
    bal = (in_acc + recall) / 2
    out["BAL"] = float(cand[int(np.argmax(bal))])
    return out


def summarize_val(logits: np.ndarray, y: np.ndarray, oos_index: int, temperature: float = 1.0):
    """Epoch-level val summary: argmax metrics, thresholds and metrics at each chosen point."""
    probs = softmax(logits, temperature)
    argmax = probs.argmax(1)
    is_oos = y == oos_index
    res = {
        "argmax_in_acc": float(np.mean(argmax[~is_oos] == y[~is_oos])),
        "argmax_oos_recall": float(np.mean(argmax[is_oos] == oos_index)),
    }
    best, score = intent_and_score(probs, oos_index)
    res["noreject_in_acc"] = float(np.mean(best[~is_oos] == y[~is_oos]))
    for name, thr in choose_thresholds(best, score, y, oos_index).items():
        res[name] = metrics_at(best, score, y, oos_index, thr) if thr is not None else None
    return res
