"""Research: the weight of the lexical score (character n-gram TF-IDF, src/knowledge/lexical.rs)
added to the semantic score, chosen on kb-tune.jsonl; kb-eval.jsonl is scored once, with --eval,
at the chosen weight. The semantic score is the gateway's (see kb_finetune.py), on the stock
encoder. scikit-learn's TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4),
sublinear_tf=True) is the formula the gateway implements.
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.feature_extraction.text import TfidfVectorizer

from kb_finetune import E5Encoder, Index, embed, lang_ref, load_articles, load_queries

WEIGHTS = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3]


def semantic(model, index, articles, queries, temperature=0.02):
    """Every article's pooled score for every query (all of its vectors, soft maximum)."""
    q = embed(model, [x["text"] for x in queries], "query")
    q = torch.stack([F.normalize(q[i] - index.means[x["lang"]], dim=0) for i, x in enumerate(queries)])
    s = (q @ index.V.T).numpy()
    owner = np.array(index.ids)
    out = np.zeros((len(queries), len(articles)))
    for j, a in enumerate(articles):
        part = s[:, owner == a["id"]]
        top = part.max(1, keepdims=True)
        out[:, j] = top[:, 0] + temperature * np.log(np.exp((part - top) / temperature).sum(1))
    return out


def lexical(articles):
    texts = [(j, t) for j, a in enumerate(articles) for _, t in a["items"]]
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
    x = vec.fit_transform([t for _, t in texts])
    owner = np.array([j for j, _ in texts])

    def score(queries):
        s = (vec.transform([q["text"] for q in queries]) @ x.T).toarray()
        return np.stack([s[:, owner == j].max(1) for j in range(len(articles))], 1)

    return score


def top1(articles, queries, scores):
    by = {}
    for q, s in zip(queries, scores):
        if q["expect"] != "none":
            by.setdefault(q["lang"], []).append(articles[int(np.argmax(s))]["id"] == q["expect"])
    every = [x for v in by.values() for x in v]
    return 100 * np.mean(every), {k: round(100 * np.mean(v), 1) for k, v in sorted(by.items())}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval", action="store_true", help="score kb-eval.jsonl at the chosen weight")
    a = ap.parse_args()
    articles = load_articles()
    model = E5Encoder.from_e5s1()
    index = Index(model, articles, lang_ref())
    lex = lexical(articles)
    tune = load_queries("kb-tune.jsonl")
    sem, lx = semantic(model, index, articles, tune), lex(tune)
    results = [(w, top1(articles, tune, sem + w * lx)) for w in WEIGHTS]
    for w, (total, per) in results:
        print(f"tune  weight {w:<4}  top-1 {total:.1f}%  {per}")
    best = max(results, key=lambda r: r[1][0])[0]
    print(f"chosen weight: {best}")
    if a.eval:
        ev = load_queries("kb-eval.jsonl")
        sem_e, lx_e = semantic(model, index, articles, ev), lex(ev)
        for w in (0.0, best):
            total, per = top1(articles, ev, sem_e + w * lx_e)
            print(f"eval  weight {w:<4}  top-1 {total:.1f}%  {per}")
