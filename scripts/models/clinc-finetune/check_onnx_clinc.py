#!/usr/bin/env python3
"""End-to-end check of an exported model dir on CLINC150 val with onnxruntime only.

Embeds val.csv with OUT/model.onnx + OUT/tokenizer.json (query: prefix, mean pooling, L2) and
compares with the torch embeddings cached by evaluate_clinc.py (RUN/emb_val.npy).
"""
import argparse, csv, time
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]  # scripts/models/clinc-finetune/ -> the repository

p = argparse.ArgumentParser()
p.add_argument("--model-dir", default=str(REPO / "data/models-clinc/multilingual-e5-small"))
p.add_argument("--run", required=True, help="run dir with emb_val.npy from evaluate_clinc.py")
a = p.parse_args()
tok = Tokenizer.from_file(f"{a.model_dir}/tokenizer.json")
tok.enable_padding(pad_id=1, pad_token="<pad>"); tok.enable_truncation(128)
o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.inter_op_num_threads = 1; o.log_severity_level = 3
s = ort.InferenceSession(f"{a.model_dir}/model.onnx", o, providers=["CPUExecutionProvider"])
rows = list(csv.DictReader(open(Path(os.environ.get("CLINC150_DIR", REPO.parent / "shared/datasets/clinc150")) / "val.csv")))
texts = ["query: " + r["text"] for r in rows]
order = np.argsort([len(t) for t in texts]); emb = np.zeros((len(texts), 384), np.float32)
t0 = time.time()
for i in range(0, len(texts), 64):
    idx = order[i:i + 64]
    enc = tok.encode_batch([texts[j] for j in idx])
    ids = np.array([e.ids for e in enc], np.int64); m = np.array([e.attention_mask for e in enc], np.int64)
    h = s.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": m})[0]
    mf = m[:, :, None].astype(np.float32); v = (h * mf).sum(1) / mf.sum(1)
    emb[idx] = v / np.linalg.norm(v, axis=1, keepdims=True)
dt = time.time() - t0
ref = np.load(f"{a.run}/emb_val.npy")
cos = (emb * ref).sum(1)
print(f"ORT embedded {len(texts)} val rows in {dt:.1f}s ({len(texts) / dt:.0f}/s); "
      f"cosine to torch embeddings: min {cos.min():.7f} mean {cos.mean():.7f}")
