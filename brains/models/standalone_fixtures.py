#!/usr/bin/env python3
"""Reference fixtures for the nine standalone operational brains (train_standalone.py).

For each brain, writes <out>/<brain>.json in the form make_fixtures.py uses for the other
brains: a KServe v2 / Open Inference Protocol request of the model's own input tensors and
the response Python ONNX Runtime 1.32.0 gave for it (intra_op_num_threads=1,
inter_op_num_threads=1, ORT_ENABLE_ALL, CPUExecutionProvider), plus a "preprocess" section
saying how the request was made (texts, records) so a Rust test can also check its own
pre-processing. FP32 values are the shortest decimals that read back to the exact float32;
BOOL as JSON booleans; INT32/INT64 as integers.

The dedup and extractive-summary requests are embeddings made by the built text-embedding
model (float32, as that brain returns them), so those fixtures depend on it too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import standalone_embed as emb  # noqa: E402
import standalone_readability as rd  # noqa: E402
import standalone_tabular as tab  # noqa: E402
from standalone_common import codepoints, fixture_tensor, session  # noqa: E402

SESSION = {
    "onnxruntime": None,  # filled in main()
    "intra_op_num_threads": 1,
    "inter_op_num_threads": 1,
    "graph_optimization_level": "ORT_ENABLE_ALL",
    "execution_provider": "CPUExecutionProvider",
}

LANG_TEXTS = ["The weather is lovely today.", "Où est la gare, s'il vous plaît ?", "Wie spät ist es?", "Dziękuję bardzo za pomoc."]
CODE_TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "SELECT name, email FROM users WHERE id = 7;",
    "Please send me the report by Friday, thanks.",
    '{"ok": true, "items": [1, 2, 3]}',
]
PII_TEXTS = [
    "Call me on +44 20 7946 0958 or mail jane.doe@example.com.",
    "IBAN GB82 WEST 1234 5698 7654 32, paid on 12/03/2024 from 192.168.1.20.",
]
DEDUP_TEXTS = [
    "The meeting has been moved to 3 pm.",
    "The printer on the second floor is out of toner.",
    "The meeting was rescheduled to 3pm.",
    "The meeting notes are in the shared folder.",
]


def dumps(obj, indent: int = 0) -> str:
    """JSON with nesting indented but every list of scalars on one line (as make_fixtures.py)."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}" if items else "{}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + dumps(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ") if isinstance(obj, list) and len(obj) < 8 else (",", ":"))


def fixture(models: Path, brain: str, feed: dict[str, np.ndarray], preprocess: dict) -> dict:
    sess = session(models / f"{brain}.onnx")
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, feed)
    return {
        "brain": brain,
        "request": {"inputs": [fixture_tensor(n, feed[n]) for n in [i.name for i in sess.get_inputs()]]},
        "response": {"model_name": brain, "outputs": [fixture_tensor(n, v) for n, v in zip(names, outs)]},
        "preprocess": preprocess,
        "session": SESSION,
    }


CP_RULE = "Unicode code points (Python ord / Rust char as i32) of each text's first 256 characters, 0 after the end"


def all_fixtures(models: Path, wheels: Path) -> list[dict]:
    out = []
    out.append(fixture(models, "language-id", {"codepoints": codepoints(LANG_TEXTS)}, {"texts": LANG_TEXTS, "codepoints": CP_RULE}))
    out.append(fixture(models, "code-detect", {"codepoints": codepoints(CODE_TEXTS)}, {"texts": CODE_TEXTS, "codepoints": CP_RULE}))
    out.append(
        fixture(
            models,
            "pii-tagger",
            {"codepoints": codepoints(PII_TEXTS)},
            {"texts": PII_TEXTS, "codepoints": CP_RULE, "tags": "argmax over the last axis per character; positions past the text are padding"},
        )
    )
    X, y = tab.load_breast_cancer(wheels)
    benign, malignant = int(np.flatnonzero(y == 1)[0]), int(np.flatnonzero(y == 0)[0])
    corrupted = X[benign].copy()
    corrupted[3] *= 5.0  # "mean area" with a unit error
    recs = np.stack([X[benign], X[malignant], corrupted]).astype(np.float32)
    out.append(
        fixture(
            models,
            "anomaly-detect",
            {"features": recs},
            {
                "records": f"breast_cancer.csv rows {benign} (benign), {malignant} (malignant), and row {benign} with feature 3 (mean area) x 5",
                "features": list(tab.BC_FEATURES),
            },
        )
    )
    series = tab.load_monthly_series(wheels)
    hist = np.stack([v[-tab.HELDOUT_MONTHS - tab.P_HIST : -tab.HELDOUT_MONTHS] for v, _, _ in series.values()]).astype(np.float32)
    out.append(
        fixture(
            models,
            "forecast",
            {"history": hist},
            {"series": list(series), "history": "the 24 months before each series' held-out last 60 months (statsmodels co2 monthly means, elnino, elec_equip)"},
        )
    )
    Xd, yd = tab.load_digits(wheels)
    out.append(
        fixture(models, "digit-reader", {"pixels": Xd[:3].astype(np.float32)}, {"images": "digits.csv.gz rows 0, 1, 2", "labels": [int(v) for v in yd[:3]]})
    )
    import common  # brains/models/common.py: the text-embedding reference tokenisation

    esess = common.session(models / "text-embedding.onnx")
    tok = common.tokenizer(models)
    E = common.embed(esess, tok, DEDUP_TEXTS).astype(np.float32)
    out.append(fixture(models, "dedup", {"embeddings": E}, {"texts": DEDUP_TEXTS, "embeddings": "text-embedding outputs for the texts (one batch)"}))
    doc = next(s for split, s, _ in emb.load_documents() if split == "heldout")
    E = common.embed(esess, tok, doc).astype(np.float32)
    out.append(
        fixture(
            models,
            "extractive-summary",
            {"sentence_embeddings": E},
            {"sentences": doc, "embeddings": "text-embedding outputs for the sentences (one batch), in document order"},
        )
    )
    texts = [t for split, _, t in rd.load_passages() if split == "heldout"][:3]
    counts = np.array([rd.count_text(t) for t in texts], dtype=np.float32)
    out.append(fixture(models, "readability", {"counts": counts}, {"texts": texts, "counts": list(rd.COUNT_NAMES), "rules": "standalone_readability.count_text"}))
    return out


def main() -> None:
    import onnxruntime as ort

    SESSION["onnxruntime"] = ort.__version__
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=Path("build/models"))
    ap.add_argument("--wheels", type=Path, default=Path("build/wheels"))
    ap.add_argument("--out", type=Path, default=Path("build/fixtures"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for fx in all_fixtures(args.models, args.wheels):
        path = args.out / f"{fx['brain']}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(dumps(fx) + "\n", encoding="utf-8")
        tmp.replace(path)
        shapes = ", ".join(f"{o['name']} {o['datatype']} {o['shape']}" for o in fx["response"]["outputs"])
        print(f"  wrote {path} ({shapes})")


if __name__ == "__main__":
    main()
