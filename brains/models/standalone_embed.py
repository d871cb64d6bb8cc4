"""Brains that take sentence embeddings (from the `text-embedding` brain, all-MiniLM-L6-v2,
L2-normalised, 384-d) as their input. Their graphs are fixed computations; what is
learned is one or two numbers each, chosen on hand-written labelled data:

  dedup               similarity = E E^T; duplicate_of[i] = the first j < i with
                      similarity >= tau, else -1. tau is chosen on labelled pairs.
  extractive-summary  scores[i] = cos(E_i, mean of E) + w / (1 + i). w (the lead bonus) is
                      chosen on documents whose key sentences were marked by hand.

At build time the texts are embedded with the built text-embedding model (ONNX Runtime,
the reference session settings); the embeddings are rounded to 4 decimals before any
choice is made, so a last-bit difference in a CPU's kernels cannot change the choice.
"""

from __future__ import annotations

import numpy as np

from standalone_common import DATA, FLOAT, INT64, Graph, read_blocks, vi

DIM = 384


class Embedder:
    def __init__(self, models):
        import common  # the repo's reference tokenisation rules (brains/models/common.py)

        self.sess = common.session(models / "text-embedding.onnx")
        self.tok = common.tokenizer(models)
        self.common = common
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        for s in range(0, len(todo), 32):
            batch = todo[s : s + 32]
            emb = self.common.embed(self.sess, self.tok, batch)
            for t, e in zip(batch, emb):
                self.cache[t] = np.round(e.astype(np.float64), 4)
        return np.array([self.cache[t] for t in texts])


# --- dedup ------------------------------------------------------------------------------


def load_pairs():
    rows = []
    for line in (DATA / "dedup" / "pairs.tsv").read_text(encoding="utf-8").split("\n"):
        if not line.strip() or line.startswith("#"):
            continue
        split, label, a, b = line.split("\t")
        assert split in ("train", "heldout") and label in ("dup", "diff")
        rows.append((split, label == "dup", a, b))
    return rows


def pair_sims(embed: Embedder, rows) -> np.ndarray:
    A = embed([a for _, _, a, _ in rows])
    B = embed([b for _, _, _, b in rows])
    return np.sum(A * B, axis=1)


def choose_threshold(sims: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold on a 0.01 grid with the best accuracy on these pairs; ties: the middle
    of the best run of thresholds. Returns (tau, accuracy)."""
    grid = np.round(np.arange(0.50, 1.0, 0.01), 2)
    acc = np.array([np.mean((sims >= t) == labels) for t in grid])
    best = acc.max()
    idx = np.flatnonzero(acc == best)
    # the longest run of consecutive best thresholds, then its middle
    runs, start = [], idx[0]
    for a, b in zip(idx, idx[1:].tolist() + [None]):
        if b is None or b != a + 1:
            runs.append((start, a))
            if b is not None:
                start = b
    lo, hi = max(runs, key=lambda r: (r[1] - r[0], -r[0]))
    return float(grid[(lo + hi) // 2]), float(best)


def prf(pred: np.ndarray, labels: np.ndarray) -> tuple[float, float, float, float]:
    tp = int(np.sum(pred & labels))
    fp = int(np.sum(pred & ~labels))
    fn = int(np.sum(~pred & labels))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f, float(np.mean(pred == labels))


def dedup_graph(tau: float, props: dict, doc: str):
    g = Graph()
    et = g.op("Transpose", ["embeddings"], "similarity", perm=[1, 0])
    sim = g.op("MatMul", ["embeddings", et], "similarity", out="similarity")  # [N, N]
    hit = g.op("GreaterOrEqual", [sim, g.init("threshold", np.array(tau, dtype=np.float32))], "duplicates")
    hit = g.op("Cast", [hit], "duplicates", to=6)  # INT32
    earlier = g.op("Trilu", [hit, g.const(-1, np.int64)], "duplicates", upper=0)  # keep j < i
    first = g.op("ArgMax", [earlier], "duplicates", axis=1, keepdims=0, select_last_index=0)  # INT64 [N]
    anyhit = g.op("ReduceMax", [earlier], "duplicates", axes=[1], keepdims=0)  # INT32 [N]
    isdup = g.op("Greater", [anyhit, g.const(0, np.int32)], "duplicates")
    g.op("Where", [isdup, first, g.const(-1, np.int64)], "duplicates", out="duplicate_of")
    return g.model(
        "dedup",
        [vi("embeddings", FLOAT, ["n", DIM])],
        [vi("similarity", FLOAT, ["n", "n"]), vi("duplicate_of", INT64, ["n"])],
        doc,
        props,
    )


def duplicate_of_np(E: np.ndarray, tau: float) -> np.ndarray:
    S = E @ E.T
    out = np.full(len(E), -1, dtype=np.int64)
    for i in range(len(E)):
        for j in range(i):
            if S[i, j] >= tau:
                out[i] = j
                break
    return out


# --- extractive-summary -------------------------------------------------------------------


def load_documents():
    docs = []
    for block in read_blocks(DATA / "summary" / "documents.txt"):
        lines = block.split("\n")
        head = lines[0].strip()
        assert head.startswith("split: "), head
        split = head.split(": ", 1)[1]
        assert split in ("train", "heldout")
        sents, keys = [], []
        for l in lines[1:]:
            if not l.strip():
                continue
            keys.append(l.startswith("* "))
            sents.append(l[2:] if l.startswith("* ") else l)
        docs.append((split, sents, np.array(keys)))
    return docs


def summary_scores(E: np.ndarray, w: float) -> np.ndarray:
    c = E.mean(axis=0)
    c = c / np.sqrt(np.sum(c * c) + 1e-12)
    pos = np.arange(len(E))
    return E @ c + w / (1.0 + pos)


def agreement(scores: np.ndarray, keys: np.ndarray) -> float:
    """Share of the hand-picked key sentences among the top-k scored (k = number of keys);
    ties broken by position (earlier first), as a stable sort does."""
    k = int(keys.sum())
    top = np.argsort(-scores, kind="stable")[:k]
    return float(keys[top].sum() / k)


def choose_lead_weight(doc_embs, docs) -> tuple[float, float]:
    grid = np.round(np.arange(-0.30, 0.51, 0.01), 2)
    vals = [np.mean([agreement(summary_scores(E, w), k) for E, (_, _, k) in zip(doc_embs, docs)]) for w in grid]
    best = max(vals)
    idx = [i for i, v in enumerate(vals) if v == best]
    # the middle of the first run of best values
    run = [idx[0]]
    for i in idx[1:]:
        if i == run[-1] + 1:
            run.append(i)
        else:
            break
    return float(grid[run[len(run) // 2]]), float(best)


def summary_graph(w: float, props: dict, doc: str):
    g = Graph()
    E = "sentence_embeddings"
    c = g.op("ReduceMean", [E], "centroid", axes=[0], keepdims=1)  # [1, 384]
    norm = g.op("Sqrt", [g.op("Add", [g.op("ReduceSumSquare", [c], "centroid", axes=[1], keepdims=1), g.const(1e-12, np.float32)], "centroid")], "centroid")
    c = g.op("Div", [c, norm], "centroid")
    sim = g.op("MatMul", [E, g.op("Transpose", [c], "centroid", perm=[1, 0])], "centrality")  # [N, 1]
    sim = g.op("Squeeze", [sim, g.const([1], np.int64)], "centrality")  # [N]
    n = g.op("Slice", [g.op("Shape", [E], "position"), g.const([0], np.int64), g.const([1], np.int64)], "position")
    ones = g.op("ConstantOfShape", [n], "position", value=__import__("onnx").helper.make_tensor("one", 1, [1], [1.0]))
    pos1 = g.op("CumSum", [ones, g.const(0, np.int64)], "position")  # 1, 2, ..., N
    bonus = g.op("Div", [g.init("lead_weight", np.array(w, dtype=np.float32)), pos1], "position")
    g.op("Add", [sim, bonus], "score", out="scores")
    return g.model(
        "extractive-summary",
        [vi("sentence_embeddings", FLOAT, ["n", DIM])],
        [vi("scores", FLOAT, ["n"])],
        doc,
        props,
    )
