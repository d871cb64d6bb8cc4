"""Character n-gram classifiers over raw code points (language-id, code-detect).

The model is fastText-style: the text's characters are normalised by a lookup table,
every character 1..4-gram is mapped to a row of a weight table (exactly, or by a hash
when the n-gram space is large), and the class scores are the mean of the rows of the
text's n-grams plus a bias, through a softmax. It is a multinomial logistic regression
on the bag of hashed character n-grams (fastText with the embedding dimension equal to
the number of classes, no hidden layer); the whole feature extraction runs inside the
ONNX graph, so the caller sends only code points:

  codepoints INT32 [batch, 256]: the Unicode code points of the text's first 256
  characters, 0 after the end (0 is padding; a text never contains U+0000 for us).

Graph (all integer arithmetic is exact, int64):
  c   = table[clip(codepoints, 0, T-1)]               normalised char ids, 0 = padding
  c'  = [SPACE] ++ c                                   a word boundary before the text
  z   = where(c' == 0, SPACE, c')                      the end of the text is a boundary
  key_n(i) = sum_k z[i+k] * V^(n-1-k)                  the n-gram starting at i, exactly
  row_n(i) = offset_n + (key_n(i) mod P_n)             (no mod when V^n rows fit: exact)
  valid_n(i) = c'[i + max(n-2, 0)] != 0                every char but the last is text
  logits = sum_{n,i valid} W[row_n(i)] / max(1, #valid) + b ;  probabilities = softmax
"""

from __future__ import annotations

import unicodedata

import numpy as np

from standalone_common import FLOAT, INT32, SEQ, Adam, Graph, rounded, softmax, vi

PAD = 0


class CharTable:
    """Code point -> normalised character id. Code points >= size-1 share the last entry."""

    def __init__(self, table: np.ndarray, vocab: int, space: int, description: str):
        self.table, self.vocab, self.space, self.description = table, vocab, space, description

    def ids(self, cps: np.ndarray) -> np.ndarray:
        return self.table[np.clip(cps.astype(np.int64), 0, len(self.table) - 1)]


def _assign(keys: list) -> dict:
    ids: dict = {}
    for k in keys:
        if k not in ids:
            ids[k] = len(ids)
    return ids


def language_table() -> CharTable:
    """Case-folded letters of the Latin (U+0000-024F), Greek (0370-03FF) and Cyrillic
    (0400-04FF) blocks each get an id; all digits one id; whitespace and punctuation are
    word boundaries (SPACE), except a few marks that are telling on their own
    (¿ ¡ « » „ and the apostrophe ' ’); anything else: one id per rough script class."""
    size = 0x2070  # up to the end of General Punctuation; beyond: the last entry
    keys = ["<pad>", " ", "<digit>", "<other-letter>", "<other>"]
    special = {"¿": "¿", "¡": "¡", "«": "«", "»": "»", "„": "„", "'": "'", "’": "'", "ʼ": "'"}
    per_cp = []
    for cp in range(size):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cp == 0:
            k = "<pad>"
        elif ch in special:
            k = special[ch]
        elif ch.isspace() or cat[0] in "PSZ" or cat == "Cc":
            k = " "
        elif cat == "Nd":
            k = "<digit>"
        elif cat[0] == "L" and (cp <= 0x24F or 0x370 <= cp <= 0x4FF):
            low = ch.lower()
            k = low if len(low) == 1 else ch
        elif cat[0] == "L":
            k = "<other-letter>"
        else:
            k = "<other>"
        per_cp.append(k)
    per_cp.append("<other-letter>")  # every code point >= size (CJK, Arabic, …)
    ids = _assign(keys + per_cp)
    table = np.array([ids[k] for k in per_cp], dtype=np.int64)
    return CharTable(table, len(ids), ids[" "], "case-folded Latin/Greek/Cyrillic letters; digits as one; punctuation as word boundary")


def code_table() -> CharTable:
    """Printable ASCII kept as is (case preserved, every punctuation mark distinct), except
    all digits as one id; space, tab and newline distinct (\\r counts as a space); any
    other letter one id, anything else one id."""
    size = 0x80
    keys = ["<pad>", " ", "\t", "\n", "<digit>", "<other-letter>", "<other>"]
    per_cp = []
    for cp in range(size):
        ch = chr(cp)
        if cp == 0:
            k = "<pad>"
        elif ch in " \r\x0b\x0c":
            k = " "
        elif ch in "\t\n":
            k = ch
        elif ch.isdigit():
            k = "<digit>"
        elif 33 <= cp <= 126:
            k = ch
        else:
            k = "<other>"
        per_cp.append(k)
    per_cp.append("<other-letter>")  # code points >= 0x80 (accents, CJK, emoji …)
    ids = _assign(keys + per_cp)
    table = np.array([ids[k] for k in per_cp], dtype=np.int64)
    return CharTable(table, len(ids), ids[" "], "printable ASCII as is; digits as one; space/tab/newline; other as one")


class NgramSpec:
    """Which n-gram orders, how many rows each (exact when V^n <= `exact_max`)."""

    def __init__(self, chars: CharTable, orders: list[int], hashed_rows: dict[int, int], exact_max: int = 12000):
        self.chars, self.orders = chars, orders
        V = chars.vocab
        self.rows, self.offsets, self.mods = {}, {}, {}
        off = 0
        for n in orders:
            if V**n <= exact_max:
                self.rows[n], self.mods[n] = V**n, None
            else:
                self.rows[n], self.mods[n] = hashed_rows[n], hashed_rows[n]
            self.offsets[n] = off
            off += self.rows[n]
        self.total_rows = off

    def describe(self) -> str:
        parts = []
        for n in self.orders:
            how = "exact" if self.mods[n] is None else f"hashed mod {self.mods[n]}"
            parts.append(f"{n}-grams: {self.rows[n]} rows ({how})")
        return "; ".join(parts)

    def features(self, cps: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per text: the weight-table rows of its valid n-grams, and their weights
        (1/#valid each, summed over repeats). Same integer arithmetic as the graph."""
        c = self.chars.ids(cps)  # [B, 256]
        B = c.shape[0]
        cp_ = np.concatenate([np.full((B, 1), self.chars.space, dtype=np.int64), c], axis=1)
        z = np.where(cp_ == PAD, self.chars.space, cp_)
        nonpad = cp_ != PAD
        V = self.chars.vocab
        L = cp_.shape[1]
        rows_all, valid_all = [], []
        for n in self.orders:
            Lg = L - n + 1
            key = z[:, 0:Lg].copy()
            for k in range(1, n):
                key = key * V + z[:, k : k + Lg]
            if self.mods[n] is not None:
                key = np.mod(key, self.mods[n])
            rows_all.append(key + self.offsets[n])
            s = max(n - 2, 0)
            valid_all.append(nonpad[:, s : s + Lg])
        rows = np.concatenate(rows_all, axis=1)
        valid = np.concatenate(valid_all, axis=1)
        out_rows, out_w = [], []
        for i in range(B):
            r = rows[i][valid[i]]
            cnt = max(1, len(r))
            u, k = np.unique(r, return_counts=True)
            out_rows.append(u)
            out_w.append(k.astype(np.float64) / cnt)
        return out_rows, out_w


class Sparse:
    """Rows of (column, value) as CSR plus its transpose, for X @ W and X^T @ G."""

    def __init__(self, rows: list[np.ndarray], vals: list[np.ndarray], n_cols: int):
        self.n = len(rows)
        self.indptr = np.zeros(self.n + 1, dtype=np.int64)
        self.indptr[1:] = np.cumsum([len(r) for r in rows])
        self.cols = np.concatenate(rows).astype(np.int64)
        self.vals = np.concatenate(vals)
        self.rowid = np.repeat(np.arange(self.n), np.diff(self.indptr))
        order = np.argsort(self.cols, kind="stable")
        self.t_order = order
        self.t_cols, starts = np.unique(self.cols[order], return_index=True)
        self.t_starts = starts
        self.n_cols = n_cols

    def matmul(self, W: np.ndarray) -> np.ndarray:
        return np.add.reduceat(W[self.cols] * self.vals[:, None], self.indptr[:-1], axis=0)

    def t_matmul(self, G: np.ndarray) -> np.ndarray:
        out = np.zeros((self.n_cols, G.shape[1]), dtype=np.float64)
        o = self.t_order
        contrib = G[self.rowid[o]] * self.vals[o][:, None]
        out[self.t_cols] = np.add.reduceat(contrib, self.t_starts, axis=0)
        return out


def class_balanced(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Sample weights (mean 1) that give every class the same total weight."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = (len(y) / (n_classes * counts))[y]
    return w / w.mean()


def train_softmax(X: Sparse, y: np.ndarray, n_classes: int, l2: float, iters: int, lr: float, weights=None, log=print):
    """Full-batch Adam (cosine-decayed step) on the weighted mean cross-entropy
    + l2/2 |W|^2 (bias not penalised), float64, from zeros: no randomness at all."""
    W = np.zeros((X.n_cols, n_classes), dtype=np.float64)
    b = np.zeros(n_classes, dtype=np.float64)
    Y = np.eye(n_classes)[y]
    sw = np.ones(X.n) if weights is None else np.asarray(weights, dtype=np.float64)
    opt = Adam({"W": W, "b": b}, lr=lr)
    for it in range(iters):
        P = softmax(X.matmul(W) + b)
        G = (P - Y) * (sw / X.n)[:, None]
        gW = X.t_matmul(G) + l2 * W
        opt.step({"W": gW, "b": G.sum(axis=0)}, lr=lr * (0.5 * (1 + np.cos(np.pi * it / iters)) * 0.9 + 0.1))
        if it % 250 == 0 or it == iters - 1:
            loss = -np.mean(sw * np.log(P[np.arange(X.n), y] + 1e-300)) + 0.5 * l2 * np.sum(W * W)
            log(f"    iter {it:4d}  loss {loss:.4f}  train acc {np.mean(P.argmax(1) == y):.3f}")
    return W, b


def predict(spec: NgramSpec, W: np.ndarray, b: np.ndarray, cps: np.ndarray) -> np.ndarray:
    rows, vals = spec.features(cps)
    X = Sparse(rows, vals, spec.total_rows)
    return softmax(X.matmul(W.astype(np.float64)) + b.astype(np.float64))


def build_graph(spec: NgramSpec, W32: np.ndarray, b32: np.ndarray, name: str, doc: str, props: dict):
    g = Graph()
    chars = spec.chars
    V, T = chars.vocab, len(chars.table)
    table = g.init("char_table", chars.table.astype(np.int64))
    weights = g.init("ngram_weights", W32.astype(np.float32))
    bias = g.init("bias", b32.astype(np.float32))
    i64 = lambda v: g.const(v, np.int64)  # noqa: E731
    x = g.op("Cast", ["codepoints"], "chars", to=7)  # INT64
    x = g.op("Clip", [x, i64(0), i64(T - 1)], "chars")
    c = g.op("Gather", [table, x], "chars", axis=0)  # [B, 256]
    cp_ = g.op("Pad", [c, g.const([0, 1, 0, 0], np.int64), i64(chars.space)], "chars", mode="constant")  # [B, 257]
    is_pad = g.op("Equal", [cp_, i64(PAD)], "chars")
    z = g.op("Where", [is_pad, i64(chars.space), cp_], "chars")
    nonpad = g.op("Cast", [g.op("Not", [is_pad], "chars")], "chars", to=1)  # FLOAT [B, 257]
    L = SEQ + 1
    axis1 = g.const([1], np.int64)
    rows, masks = [], []
    for n in spec.orders:
        Lg = L - n + 1
        sl = lambda t, s, e: g.op("Slice", [t, g.const([s], np.int64), g.const([e], np.int64), axis1], f"ngram{n}")  # noqa: E731
        key = sl(z, 0, Lg)
        for k in range(1, n):
            key = g.op("Add", [g.op("Mul", [key, i64(V)], f"ngram{n}"), sl(z, k, k + Lg)], f"ngram{n}")
        if spec.mods[n] is not None:
            key = g.op("Mod", [key, i64(spec.mods[n])], f"ngram{n}", fmod=0)
        if spec.offsets[n]:
            key = g.op("Add", [key, i64(spec.offsets[n])], f"ngram{n}")
        rows.append(key)
        s = max(n - 2, 0)
        masks.append(sl(nonpad, s, s + Lg))
    allrows = g.op("Concat", rows, "bag", axis=1)  # [B, R]
    mask = g.op("Concat", masks, "bag", axis=1)  # [B, R]
    picked = g.op("Gather", [weights, allrows], "bag", axis=0)  # [B, R, C]
    m3 = g.op("Unsqueeze", [mask, g.const([2], np.int64)], "bag")
    summed = g.op("ReduceSum", [g.op("Mul", [picked, m3], "bag"), axis1], "bag", keepdims=0)  # [B, C]
    count = g.op("ReduceSum", [mask, axis1], "bag", keepdims=1)  # [B, 1]
    count = g.op("Max", [count, g.const(1.0, np.float32)], "bag")
    logits = g.op("Add", [g.op("Div", [summed, count], "head"), bias], "head")
    g.op("Softmax", [logits], "head", out="probabilities", axis=-1)
    C = W32.shape[1]
    return g.model(
        name,
        [vi("codepoints", INT32, ["batch", SEQ])],
        [vi("probabilities", FLOAT, ["batch", C])],
        doc,
        props,
    )


def finalize(W: np.ndarray, b: np.ndarray, decimals: int = 4):
    return rounded(W, decimals), rounded(b, decimals)
