#!/usr/bin/env python3
"""Uniform weight average ("model soup") of finetune_clinc.py checkpoints into one checkpoint.

Why: runs from the same start with different settings land in one basin, so their average is a
single encoder (no extra cost per message) that is usually better than each of them.

    venv/bin/python soup.py --out runs/soup_AB/best.pt runs/A/best.pt runs/B/best.pt
"""
import argparse
from pathlib import Path
import torch

p = argparse.ArgumentParser()
p.add_argument("--out", type=Path, required=True)
p.add_argument("ckpts", nargs="+", type=Path)
a = p.parse_args()
blobs = [torch.load(c, map_location="cpu", weights_only=False) for c in a.ckpts]
keys = blobs[0]["state_dict"].keys()
assert all(b["state_dict"].keys() == keys for b in blobs)
assert all(b["classes"] == blobs[0]["classes"] for b in blobs)
fs = [b["args"].get("feat_scale", 1.0) for b in blobs]
state = {}
for k in keys:
    if k == "head.weight":  # average the effective head (weight x feat_scale), store for feat_scale 1
        state[k] = sum(b["state_dict"][k] * f for b, f in zip(blobs, fs)) / len(blobs)
    else:
        state[k] = sum(b["state_dict"][k] for b in blobs) / len(blobs)
args = dict(blobs[0]["args"]); args["feat_scale"] = 1.0; args["soup_of"] = [str(c) for c in a.ckpts]
a.out.parent.mkdir(parents=True, exist_ok=True)
torch.save({"state_dict": state, "classes": blobs[0]["classes"], "args": args,
            "record": {"soup_of": [str(c) for c in a.ckpts]}}, a.out)
print("wrote", a.out)
