#!/usr/bin/env python3
"""Reproducible build of the nine standalone operational brains' models.

Each model is trained or fitted here, deterministically, from data kept in the repository
(brains/models/data/standalone/, written for this project) or taken from a pinned PyPI
wheel (scikit-learn, statsmodels: downloaded by deploy/setup.sh with `pip download
--no-deps` and read as zip files, never installed), and written as an ONNX graph with the
`onnx` package:

  language-id         char n-gram softmax over code points (10 languages)   standalone_ngram
  code-detect         char n-gram softmax over code points (9 kinds)        standalone_ngram
  pii-tagger          dilated 1-D CNN tagging every character (8 tags)       standalone_pii
  anomaly-detect      robust Gaussian / Mahalanobis distance                 standalone_tabular
  forecast            seasonal-difference AR, 12 steps unrolled              standalone_tabular
  digit-reader        MLP on 8x8 digit images                                standalone_tabular
  dedup               pairwise cosine + calibrated duplicate threshold      standalone_embed
  extractive-summary  centrality + fitted lead bonus                         standalone_embed
  readability         ridge regression on count ratios                      standalone_readability

Determinism: float64 training from fixed seeds, one BLAS thread, final weights rounded
before they become float32 initializers; graphs written node by node with fixed names. Two
builds give byte-identical files (deploy/setup.sh checks them against SHA256SUMS).

Every model is then run with ONNX Runtime (the reference session settings) on its held-out
data; the figures in its model card (--cards) are computed from those outputs, and the
build fails when a figure falls below its floor (FLOORS) or when ONNX Runtime and the
numpy reference of the same computation disagree.

  train_standalone.py --wheels build/wheels --out build/models --cards brains/models/cards
  (maintainers, after an intended change:)
  train_standalone.py ... --write-sums brains/models/SHA256SUMS --manifests brains/catalog-pending

The dedup and extractive-summary choices use the text-embedding model, which must already
be in --out (build_models.py writes it first).
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy: one BLAS thread, the same sums every run
os.environ["OMP_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import standalone_cards as cards  # noqa: E402
import standalone_embed as emb  # noqa: E402
import standalone_ngram as ng  # noqa: E402
import standalone_pii as pii  # noqa: E402
import standalone_readability as rd  # noqa: E402
import standalone_tabular as tab  # noqa: E402
from standalone_common import (  # noqa: E402
    DATA,
    LANG_NAMES,
    SKLEARN_PIN,
    STATSMODELS_PIN,
    codepoints,
    confusion,
    per_class_prf,
    read_blocks,
    read_lines,
    roc_auc,
    rounded,
    session,
    sha256,
)

BRAINS = [
    "language-id",
    "code-detect",
    "pii-tagger",
    "anomaly-detect",
    "forecast",
    "digit-reader",
    "dedup",
    "extractive-summary",
    "readability",
]

LANGS = list(LANG_NAMES)
CODE_LABELS = ["prose", "python", "javascript", "rust", "sql", "shell", "json", "yaml", "c"]

# The build fails when a held-out figure falls below its floor (set a little under what
# was measured when the model was pinned, so a silent regression cannot ship).
FLOORS = {
    "language-id": ("held-out sentence accuracy", 0.95),
    "code-detect": ("held-out snippet accuracy", 0.95),
    "pii-tagger": ("held-out generated micro F1 (characters)", 0.95),
    "anomaly-detect": ("AUC held-out benign vs malignant", 0.85),
    "forecast": ("seasonal-naive MAE / model MAE, mean over series ratio inverted", 1.0),
    "digit-reader": ("held-out accuracy", 0.94),
    "dedup": ("held-out pair accuracy", 0.85),
    "extractive-summary": ("held-out key-sentence agreement", 0.5),
    "readability": ("1 / (1 + held-out MAE in grades)", 0.4),
}


def log(*a):
    print(*a, flush=True)


class Built:
    def __init__(self, name: str, model, metrics: dict, card: str, floor_value: float, check: dict):
        self.name, self.model, self.metrics, self.card = name, model, metrics, card
        self.floor_value, self.check = floor_value, check
        self.bytes = model.SerializeToString()


def n_params(model) -> int:
    return int(sum(np.prod(t.dims) for t in model.graph.initializer))


# --- language-id / code-detect ------------------------------------------------------------


def word_crops(texts, labels, per_text, rng):
    out, ys = [], []
    for s, l in zip(texts, labels):
        w = s.split()
        for _ in range(per_text):
            k = rng.randint(1, min(5, len(w)))
            st = rng.randint(0, len(w) - k)
            out.append(" ".join(w[st : st + k]))
            ys.append(l)
    return out, ys


def line_crops(texts, labels, per_text, rng):
    out, ys = [], []
    for s, l in zip(texts, labels):
        lines = s.split("\n")
        for _ in range(per_text):
            if len(lines) >= 3:
                k = rng.randint(2, len(lines))
                st = rng.randint(0, len(lines) - k)
                out.append("\n".join(lines[st : st + k]))
            else:
                a = rng.randint(0, len(s) // 2)
                b = rng.randint(a + 10, len(s) + 10)
                out.append(s[a:b])
            ys.append(l)
    return out, ys


def lang_data(split):
    X, y = [], []
    for i, l in enumerate(LANGS):
        for s in read_lines(DATA / "langid" / split / f"{l}.txt"):
            X.append(s)
            y.append(i)
    return X, np.array(y)


def code_data(split):
    X, y = [], []
    for i, l in enumerate(CODE_LABELS):
        for s in read_blocks(DATA / "code" / split / f"{l}.txt"):
            X.append(s)
            y.append(i)
    # prose also gets the language-id sentences of the same split, two to a text
    sents = [s for l in LANGS for s in read_lines(DATA / "langid" / split / f"{l}.txt")]
    for j in range(0, len(sents) - 1, 2):
        X.append(sents[j] + " " + sents[j + 1])
        y.append(0)
    return X, np.array(y)


def ort_probs(model, cps: np.ndarray) -> np.ndarray:
    sess = session(model)
    return np.concatenate([sess.run(["probabilities"], {"codepoints": cps[s : s + 64]})[0] for s in range(0, len(cps), 64)])


def build_ngram(name: str, ctx) -> Built:
    is_lang = name == "language-id"
    labels = LANGS if is_lang else CODE_LABELS
    C = len(labels)
    Xtr, ytr = lang_data("train") if is_lang else code_data("train")
    Xte, yte = lang_data("heldout") if is_lang else code_data("heldout")
    rng = random.Random(1234 if is_lang else 4321)
    ax, ay = (word_crops if is_lang else line_crops)(Xtr, ytr, 4 if is_lang else 3, rng)
    texts, ys = Xtr + ax, np.concatenate([ytr, np.array(ay)])
    chars = ng.language_table() if is_lang else ng.code_table()
    spec = ng.NgramSpec(chars, [1, 2, 3], {2: 8191, 3: 16381})
    rows, vals = spec.features(codepoints(texts))
    X = ng.Sparse(rows, vals, spec.total_rows)
    log(f"  {name}: {len(Xtr)} texts + {len(ax)} crops, {spec.describe()}, vocabulary {chars.vocab}")
    weights = ng.class_balanced(ys, C)
    W, b = ng.train_softmax(X, ys, C, l2=1e-6, iters=1000, lr=0.1, weights=weights, log=log)
    W32, b32 = ng.finalize(W, b)
    props = {
        "labels": ",".join(labels),
        "license": "same as the sios repository (model and data written for it)",
        "source": f"trained by brains/models/train_standalone.py on brains/models/data/standalone/{'langid' if is_lang else 'code'}",
    }
    doc = f"{name}: character 1-3-gram softmax over the first 256 code points ({spec.describe()})"
    model = ng.build_graph(spec, W32, b32, name, doc, props)
    # held-out evaluation with ONNX Runtime
    cps = codepoints(Xte)
    P = ort_probs(model, cps)
    ref = ng.predict(spec, W32, b32, cps)
    check = {"max |ORT - numpy|": float(np.max(np.abs(P - ref))), "argmax agreement": float(np.mean(P.argmax(1) == ref.argmax(1)))}
    pred = P.argmax(1)
    acc = float(np.mean(pred == yte))
    prf = per_class_prf(yte, pred, C)
    cm = confusion(yte, pred, C)
    top = P.max(axis=1)
    metrics = {
        "n_train_texts": len(Xtr),
        "n_crops": len(ax),
        "n_heldout": len(Xte),
        "accuracy": acc,
        "per_class": prf,
        "confusion": cm.tolist(),
        "top_prob": {"median when right": float(np.median(top[pred == yte])), "share of right answers with top < 0.5": float(np.mean(top[pred == yte] < 0.5))},
    }
    if is_lang:
        short = {}
        for k in (1, 2, 3):
            t = [" ".join(s.split()[:k]) for s in Xte]
            short[f"first {k} word{'s' if k > 1 else ''}"] = float(np.mean(ort_probs(model, codepoints(t)).argmax(1) == yte))
        t = [s[:20] for s in Xte]
        short["first 20 characters"] = float(np.mean(ort_probs(model, codepoints(t)).argmax(1) == yte))
        metrics["short"] = short
    else:
        code_only = yte != 0
        metrics["accuracy_code_only"] = float(np.mean(pred[code_only] == yte[code_only]))
        metrics["n_heldout_code"] = int(code_only.sum())
        rng2 = random.Random(99)
        cx, cy = line_crops([x for x, l in zip(Xte, yte) if l != 0], [l for l in yte if l != 0], 1, rng2)
        metrics["crops_accuracy"] = float(np.mean(ort_probs(model, codepoints(cx)).argmax(1) == np.array(cy)))
        metrics["n_crops_eval"] = len(cx)
    card = (cards.language_id if is_lang else cards.code_detect)(model, spec, metrics, labels, check)
    return Built(name, model, metrics, card, acc, check)


# --- pii-tagger ------------------------------------------------------------------------------

PII_TRAIN, PII_HELDOUT, PII_EPOCHS = 6000, 800, 8


def build_pii(ctx) -> Built:
    filler_tr = [s for l in LANGS for s in read_lines(DATA / "langid" / "train" / f"{l}.txt")]
    filler_te = [s for l in LANGS for s in read_lines(DATA / "langid" / "heldout" / f"{l}.txt")]
    train = pii.generate(PII_TRAIN, seed=1, heldout=False, filler=filler_tr)
    held = pii.generate(PII_HELDOUT, seed=2, heldout=True, filler=filler_te)
    real = pii.read_annotated(pii.realistic_path())
    table, vocab, table_doc = pii.char_table()
    log(f"  pii-tagger: {len(train)} generated training texts, {PII_EPOCHS} epochs")
    p = pii.train(train, table, vocab, seed=3, epochs=PII_EPOCHS, batch_size=32, lr=3e-3, log=log)
    p32 = pii.finalize(p)
    props = {
        "license": "same as the sios repository (model and data written for it)",
        "source": "trained by brains/models/train_standalone.py on synthetic text (standalone_pii.py)",
        "tags": ",".join(pii.TAGS),
    }
    model = pii.build_graph(p32, table, props, "pii-tagger: dilated 1-D CNN over characters, per-character tag probabilities")
    sess = session(model)

    def ort_tags(samples):
        cps = codepoints([t for t, _ in samples])
        return np.concatenate([sess.run(["tags"], {"codepoints": cps[s : s + 32]})[0] for s in range(0, len(cps), 32)])

    def evaluate(samples):
        probs = ort_tags(samples)
        preds, golds, hits = [], [], {t: [0, 0] for t in pii.TAGS[1:]}
        for (text, spans), pr in zip(samples, probs):
            n = min(len(text), pii.SEQ)
            gold = pii.labels_for(text, spans, pii.SEQ)[:n]
            pred = pr[:n].argmax(axis=1)
            preds.append(pred)
            golds.append(gold)
            for s, e, tag in spans:
                if e <= pii.SEQ:
                    hits[tag][1] += 1
                    hits[tag][0] += int(np.all(pred[s:e] == pii.TAG_ID[tag]))
        pred, gold = np.concatenate(preds), np.concatenate(golds)
        per = pii.char_f1(pred, gold)
        tp = sum(int(np.sum((pred == t) & (gold == t))) for t in range(1, len(pii.TAGS)))
        fp = sum(int(np.sum((pred == t) & (gold != t))) for t in range(1, len(pii.TAGS)))
        fn = sum(int(np.sum((pred != t) & (gold == t))) for t in range(1, len(pii.TAGS)))
        mp = tp / (tp + fp) if tp + fp else 0.0
        mr = tp / (tp + fn) if tp + fn else 0.0
        fa = int(np.sum((gold == 0) & (pred != 0)))
        return {
            "per_tag": per,
            "micro": (mp, mr, 2 * mp * mr / (mp + mr) if mp + mr else 0.0),
            "spans_exact": hits,
            "n_texts": len(samples),
            "n_chars": int(len(gold)),
            "o_chars_flagged": fa,
            "o_chars": int(np.sum(gold == 0)),
            "probs": probs,
        }

    ev_held = evaluate(held)
    ev_real = evaluate(real)
    ref = pii.predict(p32, table, [t for t, _ in held[:64]])
    check = {"max |ORT - numpy|": float(np.max(np.abs(ev_held["probs"][:64] - ref)))}
    for ev in (ev_held, ev_real):
        del ev["probs"]
    metrics = {"n_train": len(train), "heldout": ev_held, "realistic": ev_real, "epochs": PII_EPOCHS, "table_doc": table_doc, "vocab": vocab}
    card = cards.pii_tagger(model, metrics, check)
    return Built("pii-tagger", model, metrics, card, ev_held["micro"][2], check)


# --- anomaly-detect ----------------------------------------------------------------------------


def build_anomaly(ctx) -> Built:
    X, y = tab.load_breast_cancer(ctx.wheels)
    ben, mal = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rng = np.random.default_rng(20)
    perm = ben[rng.permutation(len(ben))]
    ntr = int(0.6 * len(ben))
    tr, te = np.sort(perm[:ntr]), np.sort(perm[ntr:])
    scale, mu, L, kept = tab.fit_anomaly(X[tr])
    m0 = tab.AnomalyModel(scale, mu, L, 0.0)
    thr = float(np.round(np.quantile(m0.score(X[tr]), 0.99), 3))
    m = tab.AnomalyModel(scale, mu, L, thr)
    props = {
        "data": f"Wisconsin Diagnostic Breast Cancer, benign records (sklearn/datasets/data/breast_cancer.csv in PyPI {SKLEARN_PIN})",
        "features": ",".join(tab.BC_FEATURES),
        "license": "fitted parameters: same as the sios repository; data: scikit-learn BSD-3-Clause bundle of the UCI dataset (CC BY 4.0)",
        "source": "fitted by brains/models/train_standalone.py",
    }
    model = tab.anomaly_graph(m, props, "anomaly-detect: robust Gaussian on log-scaled features, Mahalanobis distance")
    sess = session(model)

    def score(A):
        s, flag = sess.run(["score", "is_anomaly"], {"features": A.astype(np.float32)})
        return s[:, 0].astype(np.float64), flag[:, 0]

    s_tr, _ = score(X[tr])
    s_te, f_te = score(X[te])
    s_mal, f_mal = score(X[mal])
    Xi, _ = tab.inject_errors(X[te], seed=5)
    s_inj, f_inj = score(Xi)
    check = {"max |ORT - numpy| (score)": float(np.max(np.abs(s_te - m.score(X[te]))))}
    metrics = {
        "n_train": len(tr),
        "kept": kept,
        "n_heldout_benign": len(te),
        "n_malignant": len(mal),
        "threshold": thr,
        "auc_malignant": roc_auc(s_te, s_mal),
        "auc_injected": roc_auc(s_te, s_inj),
        "fpr_heldout": float(np.mean(f_te)),
        "fpr_train": float(np.mean(s_tr > thr)),
        "tpr_malignant": float(np.mean(f_mal)),
        "tpr_injected": float(np.mean(f_inj)),
        "score_quartiles": {
            "held-out benign": np.quantile(s_te, [0.25, 0.5, 0.75]).tolist(),
            "malignant": np.quantile(s_mal, [0.25, 0.5, 0.75]).tolist(),
            "injected": np.quantile(s_inj, [0.25, 0.5, 0.75]).tolist(),
        },
        "scale": scale.tolist(),
    }
    card = cards.anomaly_detect(model, metrics, check)
    return Built("anomaly-detect", model, metrics, card, metrics["auc_malignant"], check)


# --- forecast ------------------------------------------------------------------------------------


def build_forecast(ctx) -> Built:
    series = tab.load_monthly_series(ctx.wheels)
    phi, c, n = tab.fit_forecast(series)
    props = {
        "data": f"statsmodels datasets co2, elnino, elec_equip (PyPI {STATSMODELS_PIN})",
        "license": "fitted parameters: same as the sios repository; data: statsmodels (BSD-3-Clause) bundles, marked public domain there",
        "source": "fitted by brains/models/train_standalone.py",
    }
    model = tab.forecast_graph(phi, c, props, "forecast: seasonal-difference AR(6) on scale-normalised monthly data, 12 steps unrolled")
    sess = session(model)
    res = tab.evaluate_forecast(phi, c, series, lambda h: sess.run(["forecast"], {"history": h.astype(np.float32)})[0].astype(np.float64))
    hist = np.array([v[-tab.P_HIST :] for v, _, _ in series.values()])
    check = {"max |ORT - numpy| relative": float(np.max(np.abs(sess.run(["forecast"], {"history": hist.astype(np.float32)})[0] - tab.forecast_np(phi, c, hist)) / np.abs(hist).mean()))}
    ratio = float(np.mean([r["model"]["mae"] / r["seasonal_naive"]["mae"] for r in res.values()]))
    metrics = {"n_windows": n, "series": {k: (len(v), start, gaps) for k, (v, start, gaps) in series.items()}, "results": res, "phi": phi.tolist(), "c": float(c[0]), "mae_ratio": ratio}
    card = cards.forecast(model, metrics, check)
    return Built("forecast", model, metrics, card, 1.0 / ratio if ratio > 0 else 0.0, check)


# --- digit-reader --------------------------------------------------------------------------------


def build_digits(ctx) -> Built:
    X, y = tab.load_digits(ctx.wheels)
    tr, te = tab.stratified_split(y, 0.3, seed=0)
    p = tab.train_digits(X[tr], y[tr], seed=1, log=log)
    p32 = {k: rounded(v, 4) for k, v in p.items()}
    props = {
        "data": f"UCI optdigits test set as bundled in scikit-learn (sklearn/datasets/data/digits.csv.gz, PyPI {SKLEARN_PIN})",
        "license": "weights: same as the sios repository; data: scikit-learn BSD-3-Clause bundle of the UCI dataset (CC BY 4.0)",
        "source": "trained by brains/models/train_standalone.py",
    }
    model = tab.digits_graph(p32, props, "digit-reader: MLP 64-32-10 on 8x8 digit images (pixel values 0..16)")
    sess = session(model)
    P = sess.run(["probabilities"], {"pixels": X[te].astype(np.float32)})[0]
    ref = tab.digits_predict(p32, X[te])
    check = {"max |ORT - numpy|": float(np.max(np.abs(P - ref)))}
    pred = P.argmax(1)
    acc = float(np.mean(pred == y[te]))
    Ptr = sess.run(["probabilities"], {"pixels": X[tr].astype(np.float32)})[0]
    metrics = {
        "n_train": len(tr),
        "n_heldout": len(te),
        "accuracy": acc,
        "train_accuracy": float(np.mean(Ptr.argmax(1) == y[tr])),
        "per_class": per_class_prf(y[te], pred, 10),
        "confusion": confusion(y[te], pred, 10).tolist(),
    }
    card = cards.digit_reader(model, metrics, check)
    return Built("digit-reader", model, metrics, card, acc, check)


# --- dedup / extractive-summary -------------------------------------------------------------------


def build_dedup(ctx) -> Built:
    rows = emb.load_pairs()
    sims = emb.pair_sims(ctx.embedder(), rows)
    split = np.array([r[0] for r in rows])
    lab = np.array([r[1] for r in rows])
    trm, tem = split == "train", split == "heldout"
    tau, train_acc = emb.choose_threshold(sims[trm], lab[trm])
    props = {
        "license": "same as the sios repository",
        "source": "threshold chosen by brains/models/train_standalone.py on brains/models/data/standalone/dedup/pairs.tsv",
        "threshold": f"{tau:.2f}",
    }
    model = emb.dedup_graph(tau, props, f"dedup: pairwise cosine similarity; duplicate_of = first earlier row with similarity >= {tau:.2f}")
    sess = session(model)
    # held-out pairs through the model itself: each pair as a 2-row request
    E = ctx.embedder()
    got = []
    for r in np.flatnonzero(tem):
        _, _, a, b = rows[r]
        pair = np.stack([E([a])[0], E([b])[0]]).astype(np.float32)
        sim, dup = sess.run(["similarity", "duplicate_of"], {"embeddings": pair})
        got.append(dup[1] == 0)
    got = np.array(got)
    p, rc, f, acc = emb.prf(got, lab[tem])
    p0, r0, f0, acc0 = emb.prf(sims[tem] >= tau, lab[tem])
    # a whole batch: every held-out sentence in one request, against the numpy reference
    texts = list(dict.fromkeys([rows[r][2] for r in np.flatnonzero(tem)] + [rows[r][3] for r in np.flatnonzero(tem)]))
    Eb = E(texts).astype(np.float32)
    sim_b, dup_b = sess.run(["similarity", "duplicate_of"], {"embeddings": Eb})
    check = {
        "max |ORT - numpy| (similarity)": float(np.max(np.abs(sim_b - Eb.astype(np.float64) @ Eb.astype(np.float64).T))),
        "duplicate_of agreement with numpy": float(np.mean(dup_b == emb.duplicate_of_np(Eb.astype(np.float64), tau))),
    }
    metrics = {
        "tau": tau,
        "train_accuracy": train_acc,
        "n_train": int(trm.sum()),
        "n_heldout": int(tem.sum()),
        "heldout": {"precision": p, "recall": rc, "f1": f, "accuracy": acc},
        "heldout_from_rounded_embeddings": {"precision": p0, "recall": r0, "f1": f0, "accuracy": acc0},
        "sims": {
            "train dup": np.quantile(sims[trm & lab], [0, 0.5, 1]).tolist(),
            "train diff": np.quantile(sims[trm & ~lab], [0, 0.5, 1]).tolist(),
            "heldout dup": np.quantile(sims[tem & lab], [0, 0.5, 1]).tolist(),
            "heldout diff": np.quantile(sims[tem & ~lab], [0, 0.5, 1]).tolist(),
        },
        "errors": [(rows[r][2], rows[r][3], "dup" if rows[r][1] else "diff", float(sims[r])) for r, g in zip(np.flatnonzero(tem), got) if g != rows[r][1]],
    }
    card = cards.dedup(model, metrics, check)
    return Built("dedup", model, metrics, card, acc, check)


def build_summary(ctx) -> Built:
    docs = emb.load_documents()
    E = ctx.embedder()
    embs = [E(s) for _, s, _ in docs]
    tr = [i for i, d in enumerate(docs) if d[0] == "train"]
    te = [i for i, d in enumerate(docs) if d[0] == "heldout"]
    w, train_agree = emb.choose_lead_weight([embs[i] for i in tr], [docs[i] for i in tr])
    props = {
        "lead_weight": f"{w:.2f}",
        "license": "same as the sios repository",
        "source": "lead weight chosen by brains/models/train_standalone.py on brains/models/data/standalone/summary/documents.txt",
    }
    model = emb.summary_graph(w, props, f"extractive-summary: cosine to the document centroid + {w:.2f} / (1 + position)")
    sess = session(model)
    agree, centroid_only, lead, rand = [], [], [], []
    maxdiff = 0.0
    for i in te:
        _, sents, keys = docs[i]
        raw = np.array(E.common.embed(E.sess, E.tok, sents), dtype=np.float32)  # what a caller would send
        s = sess.run(["scores"], {"sentence_embeddings": raw})[0].astype(np.float64)
        maxdiff = max(maxdiff, float(np.max(np.abs(s - emb.summary_scores(raw.astype(np.float64), w)))))
        agree.append(emb.agreement(s, keys))
        centroid_only.append(emb.agreement(emb.summary_scores(embs[i], 0.0), keys))
        k = int(keys.sum())
        lead.append(float(keys[:k].sum() / k))
        rand.append(k / len(keys))
    check = {"max |ORT - numpy|": maxdiff}
    metrics = {
        "w": w,
        "train_agreement": train_agree,
        "n_train": len(tr),
        "n_heldout": len(te),
        "n_sentences_heldout": int(sum(len(docs[i][1]) for i in te)),
        "heldout_agreement": float(np.mean(agree)),
        "heldout_centroid_only": float(np.mean(centroid_only)),
        "heldout_lead": float(np.mean(lead)),
        "heldout_random": float(np.mean(rand)),
        "per_doc": agree,
    }
    card = cards.extractive_summary(model, metrics, check)
    return Built("extractive-summary", model, metrics, card, metrics["heldout_agreement"], check)


# --- readability ---------------------------------------------------------------------------------


def build_readability(ctx) -> Built:
    passages = rd.load_passages()
    counts = np.array([rd.count_text(t) for _, _, t in passages], dtype=np.float64)
    grades = np.array([g for _, g, _ in passages], dtype=np.float64)
    split = np.array([s for s, _, _ in passages])
    trm, tem = split == "train", split == "heldout"
    R = rd.ratios(counts)
    lam = rd.choose_lambda(R[trm], grades[trm])
    w, b = rd.fit_ridge(R[trm], grades[trm], lam)
    w32, b32 = rounded(w, 4), rounded([b], 4)
    props = {
        "counts": ",".join(rd.COUNT_NAMES),
        "license": "same as the sios repository (model and passages written for it)",
        "source": "fitted by brains/models/train_standalone.py on brains/models/data/standalone/readability/passages.txt",
    }
    model = rd.readability_graph(w32, b32, props, "readability: US grade from count ratios (ridge regression), clipped to [0, 18]")
    sess = session(model)
    out = sess.run(["grade"], {"counts": counts.astype(np.float32)})[0][:, 0].astype(np.float64)
    check = {"max |ORT - numpy|": float(np.max(np.abs(out - rd.predict(w32, float(b32[0]), counts))))}
    fk = rd.flesch_kincaid(counts)
    fk_clip = np.clip(fk, 0, 18)

    def stats(pred, m):
        e = pred[m] - grades[m]
        return {"mae": float(np.mean(np.abs(e))), "bias": float(np.mean(e)), "corr": float(np.corrcoef(pred[m], grades[m])[0, 1])}

    metrics = {
        "lambda": lam,
        "n_train": int(trm.sum()),
        "n_heldout": int(tem.sum()),
        "weights": w32.tolist(),
        "bias": float(b32[0]),
        "model_heldout": stats(out, tem),
        "model_train": stats(out, trm),
        "fk_heldout": stats(fk_clip, tem),
        "mean_baseline_heldout_mae": float(np.mean(np.abs(grades[trm].mean() - grades[tem]))),
        "rows": [(int(g), float(o), float(f)) for g, o, f in zip(grades[tem], out[tem], fk_clip[tem])],
    }
    card = cards.readability(model, metrics, check)
    return Built("readability", model, metrics, card, 1.0 / (1.0 + metrics["model_heldout"]["mae"]), check)


# --- driver ------------------------------------------------------------------------------------------


class Ctx:
    def __init__(self, wheels: Path, models: Path):
        self.wheels, self.models = wheels, models
        self._embedder = None

    def embedder(self):
        if self._embedder is None:
            self._embedder = emb.Embedder(self.models)
        return self._embedder


BUILDERS = {
    "language-id": lambda ctx: build_ngram("language-id", ctx),
    "code-detect": lambda ctx: build_ngram("code-detect", ctx),
    "pii-tagger": build_pii,
    "anomaly-detect": build_anomaly,
    "forecast": build_forecast,
    "digit-reader": build_digits,
    "dedup": build_dedup,
    "extractive-summary": build_summary,
    "readability": build_readability,
}


def _build_in_child(name: str, wheels: str, models: str):
    b = BUILDERS[name](Ctx(Path(wheels), Path(models)))
    return b.name, b.bytes, b.metrics, b.card, b.floor_value, b.check


def update_sums(path: Path, sums: dict[str, str]) -> None:
    """Replace or append our lines in SHA256SUMS; every other line is kept as it is."""
    lines = path.read_text().splitlines() if path.exists() else []
    seen = set()
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1] in sums:
            out.append(f"{sums[parts[1]]}  {parts[1]}")
            seen.add(parts[1])
        else:
            out.append(line)
    out += [f"{sums[n]}  {n}" for n in sorted(sums) if n not in seen]
    path.write_text("\n".join(out) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheels", type=Path, default=Path("build/wheels"))
    ap.add_argument("--out", type=Path, required=True, help="output folder (build/models); must hold text-embedding.onnx")
    ap.add_argument("--cards", type=Path, help="write the model cards <brain>.md here")
    ap.add_argument("--only", nargs="*", choices=BRAINS, help="build only these (development)")
    ap.add_argument("--write-sums", type=Path, help="(maintainers) update this SHA256SUMS with our files' digests")
    ap.add_argument("--manifests", type=Path, help="(maintainers) write the brain manifests <brain>.toml here")
    ap.add_argument("--jobs", type=int, default=2, help="train pii-tagger in a second process (default 2 = yes)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.only or BRAINS
    t0 = time.time()
    ctx = Ctx(args.wheels, args.out)
    results: dict[str, Built] = {}
    pool = None
    future = None
    if "pii-tagger" in names and args.jobs > 1:
        import multiprocessing

        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
        future = pool.submit(_build_in_child, "pii-tagger", str(args.wheels), str(args.out))
    for name in names:
        if name == "pii-tagger" and future is not None:
            continue
        t = time.time()
        log(f"building {name}")
        results[name] = BUILDERS[name](ctx)
        log(f"  {name}: {time.time() - t:.1f} s")
    if future is not None:
        log("waiting for pii-tagger (second process)")
        name, data, metrics, card, fv, check = future.result()
        b = Built.__new__(Built)
        b.name, b.bytes, b.metrics, b.card, b.floor_value, b.check = name, data, metrics, card, fv, check
        import onnx

        b.model = onnx.load_from_string(data)
        results[name] = b
        pool.shutdown()
    failures = []
    sums = {}
    for name in names:
        b = results[name]
        path = args.out / f"{name}.onnx"
        tmp = path.with_suffix(".onnx.tmp")
        tmp.write_bytes(b.bytes)
        tmp.replace(path)
        sums[path.name] = sha256(b.bytes)
        what, floor = FLOORS[name]
        ok = b.floor_value >= floor
        log(f"  wrote {path} ({len(b.bytes):,} bytes, sha256 {sums[path.name][:16]}…); {what} {b.floor_value:.4f} (floor {floor})")
        if not ok:
            failures.append(f"{name}: {what} {b.floor_value:.4f} is below its floor {floor}")
        for k, v in b.check.items():
            bad = ("agreement" in k and v < 1.0) or ("agreement" not in k and v > 1e-4)
            if bad:
                failures.append(f"{name}: ONNX Runtime and the numpy reference disagree: {k} = {v}")
        if args.cards:
            args.cards.mkdir(parents=True, exist_ok=True)
            (args.cards / f"{name}.md").write_text(b.card.replace("@SHA256@", sums[path.name]).replace("@BYTES@", f"{len(b.bytes):,}"), encoding="utf-8")
    if args.write_sums:
        update_sums(args.write_sums, sums)
        log(f"  updated {args.write_sums}")
    if args.manifests:
        args.manifests.mkdir(parents=True, exist_ok=True)
        for name in names:
            (args.manifests / f"{name}.toml").write_text(cards.manifest(name, results[name].model, sums[f"{name}.onnx"]), encoding="utf-8")
        log(f"  wrote manifests into {args.manifests}")
    log(f"train_standalone: {len(names)} models in {time.time() - t0:.1f} s")
    if failures:
        sys.exit("train_standalone: FAILED\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    main()
