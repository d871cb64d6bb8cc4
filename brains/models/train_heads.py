#!/usr/bin/env python3
"""Trains the classifier heads (25 domain specialists + the router) and writes them as
ONNX models: build/models/<head>.onnx.

Each head is multinomial logistic regression (a softmax layer) over the 384-d sentence
embedding of the `text-embedding` brain (all-MiniLM-L6-v2, L2-normalised):

    probabilities = Softmax(embedding · W + b)        W: [384, K], b: [K]

Inputs: heads.toml (heads, label order, hyper-parameters) and the hand-written data in
data/train/<head>.jsonl (the router: the union of all domains' training data, labelled
by domain). Held-out data is never read for training; heads.load_data refuses a build
where a held-out text also occurs in any training set.

Reproducibility. Same inputs → same bytes, on any x86-64 machine:
  - the texts are embedded with the built text-embedding.onnx (ONNX Runtime, tokenizer
    rules of IO.md) and ROUNDED to `embedding_decimals` (3) before training, so that
    last-bit differences between CPUs' float32 kernels cannot reach the optimiser;
  - training is float64, full-batch, a fixed number of accelerated gradient (FISTA)
    steps from zero, on one BLAS thread, with no randomness at all (the problem is convex:
    a unique optimum, no seed, no shuffling);
  - the features are standardised for the optimiser (training mean and standard
    deviation), and the standardisation is folded back into W and b, which are then
    ROUNDED to `weight_decimals` (4) and stored as float32;
  - the ONNX graph is written node by node with fixed names, opset 17, IR 8, no
    timestamps. Two runs give identical files; SHA256SUMS pins them and deploy/setup.sh
    refuses a build that differs.

Options: --write-sums PATH merges the heads' digests into that SHA256SUMS file
(maintainers, after an intended change). --cv runs 5-fold cross-validation on the
TRAINING data over a grid of L2 strengths and prints it (how `l2`/`router_l2` in
heads.toml were chosen); it writes nothing.
"""

from __future__ import annotations

import os

# One BLAS thread: the float64 results must not depend on how work is split among threads.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heads  # noqa: E402

OPSET = 17
IR_VERSION = 8
PRODUCER = "sios brains/models/train_heads.py"


# --- training -------------------------------------------------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _top_eigenvalue(a: np.ndarray, iters: int = 100) -> float:
    """Largest eigenvalue of a symmetric PSD matrix by power iteration from a fixed start."""
    v = np.ones(a.shape[0]) / np.sqrt(a.shape[0])
    lam = 0.0
    for _ in range(iters):
        w = a @ v
        lam = float(np.linalg.norm(w))
        if lam == 0.0:
            return 0.0
        v = w / lam
    return lam


def fit_softmax(x: np.ndarray, y: np.ndarray, k: int, l2: float, iters: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Multinomial logistic regression, L2 on W (not b), by FISTA on standardised features.

    x: float64 [n, d] (already rounded); y: int [n] in 0..k-1.
    Returns W [d, k] and b [k] for the ORIGINAL features (standardisation folded in), and
    a few facts about the run."""
    n, d = x.shape
    mu = x.mean(axis=0)
    sd = np.maximum(x.std(axis=0), 1e-3)
    z = np.hstack([(x - mu) / sd, np.ones((n, 1))])  # last column: the bias
    y1 = np.zeros((n, k))
    y1[np.arange(n), y] = 1.0
    reg = np.full((d + 1, 1), l2)
    reg[-1] = 0.0
    # Gradient Lipschitz constant: the softmax Hessian block is at most 1/2 (in operator norm).
    lip = 0.5 * _top_eigenvalue(z.T @ z / n) + l2
    step = 1.0 / lip

    def grad(w: np.ndarray) -> np.ndarray:
        return z.T @ (_softmax(z @ w) - y1) / n + reg * w

    w = np.zeros((d + 1, k))
    v = w.copy()
    t = 1.0
    for _ in range(iters):
        w_next = v - step * grad(v)
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        v = w_next + ((t - 1.0) / t_next) * (w_next - w)
        w, t = w_next, t_next
    p = _softmax(z @ w)
    loss = float(-np.log(p[np.arange(n), y] + 1e-300).mean() + 0.5 * l2 * (w[:-1] ** 2).sum())
    gnorm = float(np.linalg.norm(grad(w)))
    wz, bz = w[:-1], w[-1]
    w_orig = wz / sd[:, None]
    b_orig = bz - (mu / sd) @ wz
    return w_orig, b_orig, {"loss": loss, "grad_norm": gnorm, "step": step}


def prepare(x32: np.ndarray, decimals: int) -> np.ndarray:
    """The training features: float32 embeddings rounded to `decimals`, as float64."""
    return np.round(x32.astype(np.float64), decimals)


def round_weights(w: np.ndarray, b: np.ndarray, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    w = np.round(w, decimals)
    b = np.round(b, decimals)
    w[w == 0] = 0.0  # no negative zeros in the file
    b[b == 0] = 0.0
    return w.astype(np.float32), b.astype(np.float32)


def predict(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.argmax(x @ w.astype(np.float64) + b.astype(np.float64), axis=1)


# --- the ONNX graph -------------------------------------------------------------------


def build_onnx(head: heads.Head, w: np.ndarray, b: np.ndarray, facts: dict) -> onnx.ModelProto:
    k = len(head.labels)
    assert w.shape == (heads.EMBEDDING_DIM, k) and b.shape == (k,) and w.dtype == b.dtype == np.float32
    nodes = [
        helper.make_node("MatMul", ["embedding", "weights"], ["scores"], name="head/MatMul"),
        helper.make_node("Add", ["scores", "bias"], ["logits"], name="head/Add"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="head/Softmax", axis=-1),
    ]
    what = "domain specialist" if head.kind == "domain" else "router (arbiter)"
    graph = helper.make_graph(
        nodes,
        f"sios-{head.name}",
        inputs=[helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", heads.EMBEDDING_DIM])],
        outputs=[helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", k])],
        initializer=[numpy_helper.from_array(w, "weights"), numpy_helper.from_array(b, "bias")],
        doc_string=f"softmax(embedding . weights + bias): {k} label probabilities",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
        producer_version="1",
        doc_string=(
            f"sios brain '{head.name}', {what}: {head.task}. Input: an all-MiniLM-L6-v2 sentence "
            f"embedding (text-embedding brain, L2-normalised) FP32 [batch, 384]. Output: probabilities "
            f"FP32 [batch, {k}] over the labels, in this order: {', '.join(head.labels)}. Logistic "
            f"regression trained by brains/models/train_heads.py on data written for the sios project. "
            f"Licence: Apache-2.0."
        ),
    )
    helper.set_model_props(
        model,
        {
            "sios.brain": head.name,
            "sios.kind": head.kind,
            "sios.task": head.task,
            "sios.labels": json.dumps(head.labels),
            "sios.embedding_model": heads.EMBEDDING_MODEL,
            "sios.training": json.dumps(facts, sort_keys=True),
            "license": "Apache-2.0",
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


# --- cross-validation (development tool) ----------------------------------------------


def stratified_folds(y: np.ndarray, folds: int) -> list[np.ndarray]:
    """Deterministic stratified folds: the i-th example of each label goes to fold i % folds."""
    assign = np.empty(len(y), dtype=np.int64)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        assign[idx] = np.arange(len(idx)) % folds
    return [np.flatnonzero(assign == f) for f in range(folds)]


def cross_validate(spec: heads.Spec, data: heads.Dataset, emb: dict, grid: list[float], iters: int, only: set[str]) -> None:
    dec = spec.training["embedding_decimals"]
    print(f"5-fold CV on training data, accuracy per L2 strength ({iters} iterations)")
    print(f"{'head':22s} " + " ".join(f"{g:>8g}" for g in grid))
    totals = np.zeros(len(grid))
    for head in spec.heads:
        if only and head.name not in only:
            continue
        x32, y = heads.matrix(data.train[head.name], emb, head.labels)
        x = prepare(x32, dec)
        accs = []
        for l2 in grid:
            correct = 0
            for fold in stratified_folds(y, 5):
                mask = np.ones(len(y), dtype=bool)
                mask[fold] = False
                w, b, _ = fit_softmax(x[mask], y[mask], len(head.labels), l2, iters)
                correct += int((predict(x[fold], w, b) == y[fold]).sum())
            accs.append(correct / len(y))
        if head.name != heads.ROUTER:
            totals += np.array(accs)
        print(f"{head.name:22s} " + " ".join(f"{a:8.4f}" for a in accs), flush=True)
    print(f"{'mean (domains)':22s} " + " ".join(f"{a:8.4f}" for a in totals / max(1, len(spec.domains))))


# --- main -----------------------------------------------------------------------------


def merge_sums(path: Path, ours: dict[str, str]) -> None:
    """Rewrite SHA256SUMS: our files' lines replaced or added, every other line kept; sorted."""
    lines: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                lines[name.lstrip("*")] = digest
    lines.update(ours)
    path.write_text("".join(f"{lines[n]}  {n}\n" for n in sorted(lines)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=Path("build/models"), help="holds text-embedding.onnx; heads are written here")
    ap.add_argument("--cache", default="build/heads/embeddings.npz", help="embedding cache ('' for none)")
    ap.add_argument("--write-sums", type=Path, help="(maintainers) merge the heads' digests into this SHA256SUMS")
    ap.add_argument("--only", nargs="*", default=[], help="(development) train only these heads; with --cv, only CV these")
    ap.add_argument("--cv", action="store_true", help="(development) cross-validate the L2 strength on training data; write nothing")
    args = ap.parse_args()
    t0 = time.time()
    spec = heads.load_spec()
    data = heads.load_data(spec)
    cache = Path(args.cache) if args.cache else None
    texts = [e.text for h in spec.domains for part in (data.train, data.heldout) for e in part[h.name]]
    emb = heads.embed_all(texts, args.models, cache)
    t_embed = time.time() - t0
    tr = spec.training
    only = set(args.only)

    if args.cv:
        cross_validate(spec, data, emb, [0.01, 0.03, 0.1, 0.3, 1.0], tr["iterations"], only)
        return

    digests: dict[str, str] = {}
    for head in spec.heads:
        if only and head.name not in only:
            continue
        t1 = time.time()
        l2 = tr["router_l2"] if head.name == heads.ROUTER else tr["l2"]
        x32, y = heads.matrix(data.train[head.name], emb, head.labels)
        x = prepare(x32, tr["embedding_decimals"])
        w, b, info = fit_softmax(x, y, len(head.labels), l2, tr["iterations"])
        w32, b32 = round_weights(w, b, tr["weight_decimals"])
        train_acc = float((predict(x, w32, b32) == y).mean())
        facts = {
            "method": "multinomial logistic regression, FISTA, standardised features folded into the weights",
            "l2": l2,
            "iterations": tr["iterations"],
            "embedding_decimals": tr["embedding_decimals"],
            "weight_decimals": tr["weight_decimals"],
            "train_examples": int(len(y)),
        }
        model = build_onnx(head, w32, b32, facts)
        out = args.models / f"{head.name}.onnx"
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(model.SerializeToString())
        tmp.replace(out)
        digests[out.name] = heads.sha256_file(out)
        print(
            f"  wrote {out.name:26s} K={len(head.labels):2d} n={len(y):4d} train acc {train_acc:.4f} "
            f"loss {info['loss']:.4f} |grad| {info['grad_norm']:.1e} ({time.time() - t1:.1f} s)",
            flush=True,
        )
    if args.write_sums:
        merge_sums(args.write_sums, digests)
        print(f"  digests merged into {args.write_sums}")
    for name in sorted(digests):
        print(f"{digests[name]}  {name}")
    print(f"  heads trained in {time.time() - t0:.1f} s (embeddings {t_embed:.1f} s)")


if __name__ == "__main__":
    main()
