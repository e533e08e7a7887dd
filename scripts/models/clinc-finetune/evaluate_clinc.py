#!/usr/bin/env python3
"""Evaluate a fine-tuned (or the frozen) e5-small encoder on CLINC150.

Methods (all with 151 classes, oos = class 151, score = p(best intent) - p(oos)):

* ``head``   : the fine-tuned classification head (temperature 1);
* ``head_T`` : the same head with a softmax temperature chosen on val from --temperatures;
* ``lr151``  : scikit-learn logistic regression (C chosen on val from --cs) trained on train.csv
               embeddings of the encoder (as the Rust product would use it).

Thresholds are chosen on val only: OP96 / OP96.8 (max val oos recall with val in-scope accuracy
>= 96% / 96.8%), OP80r (lowest threshold with val oos recall >= 80%) and BAL (max of the mean of
val in-scope accuracy and oos recall). Test is embedded and scored only with --test, once, at
the thresholds fixed on val. Embeddings are cached in the run directory.

Example::

    nice -n 19 venv/bin/python evaluate_clinc.py --ckpt runs/X/best.pt --test
    nice -n 19 venv/bin/python evaluate_clinc.py --frozen --out runs/frozen --test
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from clinc_common import (OOS, choose_thresholds, embed, intent_and_score, label_space, load_split,
                          metrics_at, seed_everything, softmax, tokenize)
from e5_torch import E5Encoder, make_tokenizer


def load_encoder(ckpt: Path | None):
    encoder = E5Encoder.from_e5s1()
    head = None
    if ckpt is not None:
        blob = torch.load(ckpt, map_location="cpu", weights_only=False)
        state = blob["state_dict"]
        enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        missing, unexpected = encoder.load_state_dict(enc_state, strict=False)
        assert set(missing) == {"word_codes", "word_scales"} and not unexpected, (missing, unexpected)
        feat_scale = blob["args"].get("feat_scale", 1.0)
        head = (state["head.weight"].numpy() * feat_scale, state["head.bias"].numpy())
    return encoder.eval(), head


def evaluate_point(best, score, y, oos_index, thr):
    return metrics_at(best, score, y, oos_index, thr) if thr is not None else None


def run_method(name, probs_val, yva, probs_test, yte, oos_index, extra=None):
    best_v, score_v = intent_and_score(probs_val, oos_index)
    thrs = choose_thresholds(best_v, score_v, yva, oos_index)
    res = {"method": name, **(extra or {}),
           "val_noreject_in_acc": float(np.mean(best_v[yva != oos_index] == yva[yva != oos_index])),
           "val": {k: evaluate_point(best_v, score_v, yva, oos_index, t) for k, t in thrs.items()}}
    if probs_test is not None:
        best_t, score_t = intent_and_score(probs_test, oos_index)
        res["test_noreject_in_acc"] = float(np.mean(best_t[yte != oos_index] == yte[yte != oos_index]))
        res["test"] = {k: evaluate_point(best_t, score_t, yte, oos_index, t) for k, t in thrs.items()}
    return res


def val_key(probs_val, yva, oos_index):
    """Selection key on val: recall at OP96.8, then at OP96, then no-reject accuracy."""
    best, score = intent_and_score(probs_val, oos_index)
    thrs = choose_thresholds(best, score, yva, oos_index)
    r968 = metrics_at(best, score, yva, oos_index, thrs["OP96.8"])["oos_recall"] if thrs["OP96.8"] is not None else -1
    r96 = metrics_at(best, score, yva, oos_index, thrs["OP96"])["oos_recall"] if thrs["OP96"] is not None else -1
    acc = float(np.mean(best[yva != oos_index] == yva[yva != oos_index]))
    return (r968, r96, acc)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, help="checkpoint from finetune_clinc.py")
    p.add_argument("--frozen", action="store_true", help="evaluate the frozen (not fine-tuned) encoder")
    p.add_argument("--out", type=Path, help="output dir (default: the checkpoint's dir)")
    p.add_argument("--test", action="store_true", help="also score test.csv (do this once per final method)")
    p.add_argument("--methods", default="head,head_T,lr151")
    p.add_argument("--cs", default="16,64,256", help="LR C values tried on val")
    p.add_argument("--temperatures", default="0.5,0.75,1,1.5,2,3")
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--tag", default="", help="suffix of the results file name")
    args = p.parse_args(argv)
    if not args.frozen and args.ckpt is None:
        p.error("give --ckpt or --frozen")
    torch.set_num_threads(2)
    seed_everything(args.seed)
    out = args.out or args.ckpt.parent
    out.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")

    encoder, head = load_encoder(None if args.frozen else args.ckpt)
    tok = make_tokenizer()
    splits = ["train", "val"] + (["test"] if args.test else [])
    data = {s: load_split(s) for s in splits}
    classes, index = label_space(data["train"][1])
    oos_index = index[OOS]
    y = {s: np.array([index[l] for l in data[s][1]]) for s in splits}
    emb = {}
    for s in splits:
        if s == "train" and "lr151" not in methods:
            continue
        cache = out / f"emb_{s}.npy"
        if cache.exists():
            emb[s] = np.load(cache)
        else:
            t0 = time.time()
            emb[s] = embed(encoder, tokenize(tok, data[s][0], args.max_len), batch=128)
            np.save(cache, emb[s])
            print(f"embedded {s}: {len(emb[s])} rows in {time.time() - t0:.0f}s", flush=True)
    yte = y.get("test")
    results = []

    if head is not None and ("head" in methods or "head_T" in methods):
        W, b = head
        lv = emb["val"] @ W.T + b
        lt = emb["test"] @ W.T + b if args.test else None
        if "head" in methods:
            results.append(run_method("head", softmax(lv), y["val"], None if lt is None else softmax(lt),
                                      yte, oos_index, {"temperature": 1.0}))
        if "head_T" in methods:
            temps = [float(t) for t in args.temperatures.split(",")]
            keys = {t: val_key(softmax(lv, t), y["val"], oos_index) for t in temps}
            for t in temps:
                print(f"  head T={t}: val recall@96.8 / recall@96 / acc = {keys[t]}", flush=True)
            t_best = max(temps, key=lambda t: keys[t])
            results.append(run_method("head_T", softmax(lv, t_best), y["val"],
                                      None if lt is None else softmax(lt, t_best), yte, oos_index,
                                      {"temperature": t_best}))

    if "lr151" in methods:
        from sklearn.linear_model import LogisticRegression

        fits = {}
        for c in [float(c) for c in args.cs.split(",")]:
            t0 = time.time()
            clf = LogisticRegression(C=c, max_iter=3000).fit(emb["train"], y["train"])
            fits[c] = (clf, time.time() - t0)
            print(f"  LR C={c:g}: val recall@96.8 / recall@96 / acc = "
                  f"{val_key(clf.predict_proba(emb['val']), y['val'], oos_index)} ({fits[c][1]:.0f}s)",
                  flush=True)
        c_best = max(fits, key=lambda c: val_key(fits[c][0].predict_proba(emb["val"]), y["val"], oos_index))
        clf = fits[c_best][0]
        results.append(run_method("lr151", clf.predict_proba(emb["val"]), y["val"],
                                  clf.predict_proba(emb["test"]) if args.test else None, yte, oos_index,
                                  {"C": c_best, "fit_seconds": round(fits[c_best][1], 1)}))

    name = f"results{'_test' if args.test else '_val'}{args.tag}.json"
    (out / name).write_text(json.dumps({"ckpt": str(args.ckpt), "frozen": args.frozen,
                                        "results": results}, indent=2) + "\n")
    for r in results:
        print_result(r)
    print(f"wrote {out / name}")


def print_result(r):
    extra = {k: v for k, v in r.items() if k in ("temperature", "C")}
    print(f"== {r['method']} {extra}: val no-reject in-acc {r['val_noreject_in_acc'] * 100:.2f}"
          + (f", test no-reject in-acc {r['test_noreject_in_acc'] * 100:.2f}" if "test" in r else ""))
    for k, m in r["val"].items():
        line = f"   {k:7s} val " + (f"in {m['in_acc'] * 100:.2f} rec {m['oos_recall'] * 100:.1f} "
                                    f"prec {m['oos_precision'] * 100:.1f} thr {m['thr']:.4f}" if m else "n/a")
        if "test" in r and r["test"][k]:
            t = r["test"][k]
            line += (f" | TEST in {t['in_acc'] * 100:.2f} rec {t['oos_recall'] * 100:.1f} "
                     f"prec {t['oos_precision'] * 100:.1f}")
        print(line)


if __name__ == "__main__":
    main()
