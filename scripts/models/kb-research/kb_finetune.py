"""Research: does fine-tuning e5 on a knowledge base's own texts lift search top-1?

Each example question of an article is paired with another text of the same article (a question,
the title or a body chunk); in-batch negatives, symmetric InfoNCE, word embeddings frozen. The
retrieval mirrors the gateway's (src/knowledge): language-centred query, soft maximum over an
article's vectors at T = 0.02. Top-1 is printed on kb-tune.jsonl after every epoch; kb-eval.jsonl
only with --eval. Results: README, "Knowledge base answers".
"""
import sys, json, re, math, random, time, argparse
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F, yaml

REPO = Path(__file__).resolve().parents[3]  # scripts/models/kb-research/ -> the repository
sys.path.insert(0, str(REPO / "scripts/models/clinc-finetune"))
from e5_torch import E5Encoder, mean_pool, make_tokenizer, encode  # noqa: E402

torch.set_num_threads(2)

def split_sentences(p):
    return [s for s in re.split(r"(?<=[.!?。！？])\s+", p) if s]

def chunks(body, max_chars=600):
    out, cur = [], ""
    for para in [p.strip() for p in body.split("\n\n") if p.strip()]:
        if cur and len(cur) + len(para) > max_chars:
            out.append(cur); cur = ""
        if len(para) > max_chars:
            for s in split_sentences(para):
                if cur and len(cur) + len(s) > max_chars:
                    out.append(cur); cur = ""
                cur = (cur + " " + s) if cur else s
        else:
            cur = (cur + "\n\n" + para) if cur else para
    if cur.strip(): out.append(cur)
    return out

def load_articles():
    arts = []
    for f in sorted((REPO / "knowledge/articles").glob("*.md")):
        t = f.read_text()
        _, fm, body = t.split("---", 2)
        m = yaml.safe_load(fm)
        items = [("passage", m["title"])] + [("query", q) for q in m["questions"]] + [("passage", c) for c in chunks(body.strip())]
        arts.append(dict(id=m["id"], items=items))
    return arts

def load_queries(name):
    return [json.loads(l) for l in open(REPO / "tests/data" / name)]

def lang_ref():
    return yaml.safe_load(open(REPO / "src/knowledge/language_reference.yaml"))

TOK = make_tokenizer(max_length=512)

def embed(model, texts, prefix, bs=32, grad=False):
    outs = []
    for i in range(0, len(texts), bs):
        ids, mask = encode(TOK, texts[i:i+bs], prefix + ": ")
        if grad:
            outs.append(mean_pool(model(ids, mask), mask))
        else:
            with torch.no_grad():
                outs.append(mean_pool(model(ids, mask), mask))
    return torch.cat(outs)

class Index:
    def __init__(self, model, arts, refs):
        model.eval()
        self.ids = []; vecs = []
        for a in arts:
            for kind, text in a["items"]:
                self.ids.append(a["id"])
        q = [(i, t) for i, (k, t) in enumerate((k, t) for a in arts for k, t in a["items"]) if k == "query"]
        p = [(i, t) for i, (k, t) in enumerate((k, t) for a in arts for k, t in a["items"]) if k == "passage"]
        V = torch.zeros(len(self.ids), 384)
        V[[i for i, _ in q]] = embed(model, [t for _, t in q], "query")
        V[[i for i, _ in p]] = embed(model, [t for _, t in p], "passage")
        self.V = V
        self.means = {l: embed(model, ts, "query").mean(0) for l, ts in refs.items()}

    def rank(self, model, queries, T=0.02, top=40, center=True):
        Q = embed(model, [q["text"] for q in queries], "query")
        if center:
            Q = torch.stack([F.normalize(Q[i] - self.means[q["lang"]], dim=0) for i, q in enumerate(queries)])
        S = Q @ self.V.T
        res = []
        for i in range(len(queries)):
            s, idx = S[i].topk(top)
            per = {}
            for sc, j in zip(s.tolist(), idx.tolist()):
                per.setdefault(self.ids[j], []).append(sc)
            pooled = {a: v[0] + T * math.log(sum(math.exp((x - v[0]) / T) for x in v)) for a, v in per.items()}
            res.append(sorted(pooled.items(), key=lambda kv: -kv[1]))
        return res

def report(model, arts, refs, sets, tag):
    idx = Index(model, arts, refs)
    out = {}
    for name, qs in sets.items():
        r = idx.rank(model, qs)
        by = {}
        for q, ranked in zip(qs, r):
            if q["expect"] == "none": continue
            by.setdefault(q["lang"], []).append(ranked[0][0] == q["expect"])
        allv = [x for v in by.values() for x in v]
        # unanswerable: AUROC of best score
        pos = [ranked[0][1] for q, ranked in zip(qs, r) if q["expect"] != "none"]
        neg = [ranked[0][1] for q, ranked in zip(qs, r) if q["expect"] == "none"]
        auc = np.mean([[1.0 if p > n else 0.5 if p == n else 0.0 for n in neg] for p in pos])
        out[name] = (100*np.mean(allv), {l: round(100*np.mean(v), 1) for l, v in sorted(by.items())}, round(auc, 3))
        print(f"[{tag}] {name}: top1 {100*np.mean(allv):.1f}% {out[name][1]} auroc {auc:.3f}", flush=True)
    return out

def train(model, arts, epochs, lr, bs, scale, seed, eval_fn, oos=None):
    random.seed(seed); torch.manual_seed(seed)
    for p in model.parameters(): p.requires_grad = True
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    anchors = [(ai, t) for ai, a in enumerate(arts) for k, t in a["items"] if k == "query"]
    steps_per = math.ceil(len(anchors) / bs); total = steps_per * epochs; step = 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s+1) / max(1, int(0.1*total))) * max(0.0, (total - s) / total))
    for ep in range(epochs):
        model.train(); random.shuffle(anchors); t0 = time.time(); tot = 0
        for b in range(0, len(anchors), bs):
            batch = anchors[b:b+bs]
            pos = []
            for ai, t in batch:
                cands = [(k, x) for k, x in arts[ai]["items"] if x != t]
                pos.append(random.choice(cands))
            qa = embed(model, [t for _, t in batch], "query", bs=len(batch), grad=True)
            # positives: embed queries and passages with their own prefix
            pq = [i for i, (k, _) in enumerate(pos) if k == "query"]
            pp = [i for i, (k, _) in enumerate(pos) if k == "passage"]
            P = torch.zeros(len(pos), 384)
            if pq: P = P.index_copy(0, torch.tensor(pq), embed(model, [pos[i][1] for i in pq], "query", bs=64, grad=True))
            if pp: P = P.index_copy(0, torch.tensor(pp), embed(model, [pos[i][1] for i in pp], "passage", bs=64, grad=True))
            lab = torch.tensor([ai for ai, _ in batch])
            S = qa @ P.T * scale
            same = (lab[:, None] == lab[None, :]) & ~torch.eye(len(batch), dtype=torch.bool)
            S = S.masked_fill(same, -1e4)
            loss = F.cross_entropy(S, torch.arange(len(batch)))
            # symmetric
            loss = 0.5 * (loss + F.cross_entropy(S.T, torch.arange(len(batch))))
            opt.zero_grad(); loss.backward(); opt.step(); sched.step(); step += 1; tot += loss.item()
        print(f"epoch {ep+1}: loss {tot/steps_per:.3f} ({time.time()-t0:.0f}s)", flush=True)
        eval_fn(f"ep{ep+1}")

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4); ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--bs", type=int, default=32); ap.add_argument("--scale", type=float, default=20)
    ap.add_argument("--seed", type=int, default=13); ap.add_argument("--eval", action="store_true")
    ap.add_argument("--save")
    a = ap.parse_args()
    arts = load_articles(); refs = lang_ref()
    sets = {"tune": load_queries("kb-tune.jsonl")}
    if a.eval: sets["eval"] = load_queries("kb-eval.jsonl")
    model = E5Encoder.from_e5s1()
    print("articles", len(arts), "items", sum(len(x["items"]) for x in arts))
    report(model, arts, refs, sets, "base")
    if a.epochs:
        train(model, arts, a.epochs, a.lr, a.bs, a.scale, a.seed, lambda tag: report(model, arts, refs, sets, tag))
    if a.save: torch.save(model.state_dict(), a.save)
