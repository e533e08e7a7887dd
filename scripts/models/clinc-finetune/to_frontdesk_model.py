#!/usr/bin/env python3
"""Write a fine-tuned head into a Frontdesk NLU model file, so `frontdesk nlu eval` scores it.

Why: `frontdesk nlu train` fits its own logistic regression on the (fine-tuned) embeddings, which
does worse than the head trained jointly with the encoder. The head is linear on the normalised
mean-pooled embedding, exactly the shape of the gateway's softmax head (logits = v.W + b, divided
by a temperature; out of scope when p(best intent) - p(oos) < threshold), so it converts as is.

The temperature and threshold come from evaluate_clinc.py's val results (never from test).

    venv/bin/python to_frontdesk_model.py --ckpt runs/A/best.pt --base clinc-lr.json \\
        --temperature 2 --threshold 0.12983 --out clinc-ft-head.json

`--base` is any model file `frontdesk nlu train --data train.csv` wrote for the same encoder: its
labels, embedding name and other fields are kept; only the intent head is replaced.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

p = argparse.ArgumentParser()
p.add_argument("--ckpt", type=Path, required=True)
p.add_argument("--base", type=Path, required=True)
p.add_argument("--temperature", type=float, required=True)
p.add_argument("--threshold", type=float, required=True)
p.add_argument("--out", type=Path, required=True)
args = p.parse_args()

blob = torch.load(args.ckpt, map_location="cpu", weights_only=False)
state = blob["state_dict"]
scale = blob["args"].get("feat_scale", 1.0)
weight = (state["head.weight"] * scale).numpy()  # [classes, dims]
bias = state["head.bias"].numpy()
classes = blob["classes"] if "classes" in blob else None

model = json.loads(args.base.read_text())
head = model["intents"]["head"]
labels = head["labels"]
if classes is None:  # finetune_clinc.py's order: intents sorted by name, then oos
    classes = sorted(l for l in labels if l != "oos") + ["oos"]
index = {c: i for i, c in enumerate(classes)}
assert set(index) == set(labels), "the base model's labels differ from the checkpoint's"
dims = head["dims"]
assert weight.shape == (len(labels), dims), weight.shape
# Frontdesk stores weights row-major [dims][labels], in its own label order.
head["weights"] = [float(weight[index[l], d]) for d in range(dims) for l in labels]
head["bias"] = [float(bias[index[l]]) for l in labels]
head["temperature"] = args.temperature
model["intents"]["threshold"] = args.threshold
model["intents"]["objective"] = {"MinInScopeAccuracy": 0.968}
args.out.write_text(json.dumps(model))
print(f"wrote {args.out}: {len(labels)} labels, temperature {args.temperature}, threshold {args.threshold}")
