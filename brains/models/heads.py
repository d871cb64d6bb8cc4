"""Shared by train_heads.py, evaluate_heads.py and head_manifests.py: the head spec
(heads.toml), the labelled data (data/train, data/heldout) with its checks, and sentence
embeddings of the data computed with the built text-embedding model (cached in build/).

Embedding rules are those of every other caller of the text-embedding model (common.py,
IO.md): tokenizer.json with truncation 256, right padding to the longest text of the
batch, special tokens added; the model's `sentence_embedding` output, L2-normalised.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

SPEC_FILE = HERE / "heads.toml"
DATA_DIR = HERE / "data"
EMBEDDING_MODEL = "text-embedding.onnx"
EMBEDDING_DIM = 384
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
LABEL_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
ROUTER = "router"


# --- spec -----------------------------------------------------------------------------


@dataclass
class Head:
    name: str
    kind: str  # "domain" or "operational"
    task: str
    sensitivity: str
    about: str
    not_for: str
    labels: list[str]
    accuracy_floor: float  # setup fails if held-out accuracy is below it; cards state it
    label_meanings: dict[str, str] = field(default_factory=dict)


@dataclass
class Spec:
    training: dict
    heads: list[Head]  # domain heads in file order (alphabetical), then the router

    @property
    def domains(self) -> list[Head]:
        return [h for h in self.heads if h.kind == "domain"]

    def head(self, name: str) -> Head:
        for h in self.heads:
            if h.name == name:
                return h
        raise KeyError(name)


def load_spec(path: Path = SPEC_FILE) -> Spec:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    heads: list[Head] = []
    for entry in raw["head"]:
        kind = entry.get("kind", "domain")
        if entry["name"] == ROUTER:
            if kind != "operational" or "labels" in entry:
                raise SystemExit("heads.toml: the router is operational and its labels are the domain names")
            labels, meanings = [], {}
        else:
            if kind != "domain":
                raise SystemExit(f"heads.toml: {entry['name']}: only the router may be operational")
            labels = [pair[0] for pair in entry["labels"]]
            meanings = {pair[0]: pair[1] for pair in entry["labels"]}
        floor = float(entry["accuracy_floor"])
        if not raw["training"]["accuracy_floor"] <= floor <= 1.0:
            raise SystemExit(f"heads.toml: {entry['name']}: accuracy_floor below the global floor")
        heads.append(Head(entry["name"], kind, entry["task"], entry["sensitivity"], entry["about"],
                          entry["not_for"], labels, floor, meanings))
    domains = [h for h in heads if h.kind == "domain"]
    routers = [h for h in heads if h.name == ROUTER]
    if len(routers) != 1 or heads[-1].name != ROUTER:
        raise SystemExit("heads.toml: exactly one router, listed last")
    names = [h.name for h in domains]
    if names != sorted(names) or len(set(names)) != len(names):
        raise SystemExit("heads.toml: domain heads must be listed once each, in alphabetical order")
    for h in heads:
        if not NAME_RE.match(h.name):
            raise SystemExit(f"heads.toml: bad brain name {h.name!r}")
        if h.sensitivity not in ("high", "medium", "low"):
            raise SystemExit(f"heads.toml: {h.name}: sensitivity must be high, medium or low")
    for h in domains:
        if not 4 <= len(h.labels) <= 8 or len(set(h.labels)) != len(h.labels):
            raise SystemExit(f"heads.toml: {h.name}: 4-8 distinct labels needed")
        for label in h.labels:
            if not LABEL_RE.match(label):
                raise SystemExit(f"heads.toml: {h.name}: bad label {label!r}")
    routers[0].labels = names  # router output order: the domain brains, alphabetically
    routers[0].label_meanings = {h.name: h.task for h in domains}
    return Spec(raw["training"], heads)


# --- data -----------------------------------------------------------------------------


@dataclass
class Example:
    text: str
    label: str


def normalise(text: str) -> str:
    """What counts as 'the same text' for the overlap checks: case-folded, whitespace collapsed."""
    return " ".join(text.casefold().split())


def read_jsonl(path: Path, labels: list[str]) -> list[Example]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        if set(obj) != {"text", "label"} or not isinstance(obj["text"], str) or not obj["text"].strip():
            raise SystemExit(f"{path}:{n}: want exactly {{\"text\": non-empty string, \"label\": ...}}")
        if obj["label"] not in labels:
            raise SystemExit(f"{path}:{n}: label {obj['label']!r} is not one of {labels}")
        out.append(Example(obj["text"], obj["label"]))
    return out


@dataclass
class Dataset:
    train: dict[str, list[Example]]  # per head name (router included)
    heldout: dict[str, list[Example]]


def load_data(spec: Spec, data_dir: Path = DATA_DIR) -> Dataset:
    """Reads and checks every domain's train and held-out files, and derives the router's.

    Checks (any failure stops the build):
      - every label of the head has at least min_train_per_label / min_heldout_per_label
        examples, and no other labels occur;
      - no text occurs twice in one file;
      - no held-out text of ANY head occurs in ANY head's training data (so neither the
        domain heads nor the router, trained on all domains, have seen a held-out text);
      - no text occurs in two domains' training data (it would carry two router labels).
    """
    t = spec.training
    train: dict[str, list[Example]] = {}
    heldout: dict[str, list[Example]] = {}
    # Other builds (operational_heads.toml) keep their data in the same folders; only the
    # files of the heads declared in heads.toml are read here.
    train_owner: dict[str, str] = {}
    for h in spec.domains:
        for part, store, minimum in (("train", train, t["min_train_per_label"]),
                                     ("heldout", heldout, t["min_heldout_per_label"])):
            path = data_dir / part / f"{h.name}.jsonl"
            if not path.is_file():
                raise SystemExit(f"{path} is missing")
            ex = read_jsonl(path, h.labels)
            seen: set[str] = set()
            for e in ex:
                k = normalise(e.text)
                if k in seen:
                    raise SystemExit(f"{path}: duplicate text {e.text!r}")
                seen.add(k)
            for label in h.labels:
                c = sum(e.label == label for e in ex)
                if c < minimum:
                    raise SystemExit(f"{path}: label {label} has {c} examples, at least {minimum} needed")
            store[h.name] = ex
        for e in train[h.name]:
            k = normalise(e.text)
            if k in train_owner:
                raise SystemExit(f"text in the training data of both {train_owner[k]} and {h.name}: {e.text!r}")
            train_owner[k] = h.name
    for h in spec.domains:
        for e in heldout[h.name]:
            k = normalise(e.text)
            if k in train_owner:
                raise SystemExit(f"held-out text of {h.name} is in the training data of {train_owner[k]}: {e.text!r}")
    train[ROUTER] = [Example(e.text, h.name) for h in spec.domains for e in train[h.name]]
    heldout[ROUTER] = [Example(e.text, h.name) for h in spec.domains for e in heldout[h.name]]
    return Dataset(train, heldout)


# --- embeddings -----------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def embedding_session(models: Path, threads: int):
    """Same settings as common.session() except the number of intra-op threads: ONNX Runtime
    partitions this model's work by rows and columns, not along reductions, so 1 and 2
    threads give bit-identical embeddings (checked when this was written)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(models / EMBEDDING_MODEL), so, providers=["CPUExecutionProvider"])


def embed_all(texts: list[str], models: Path, cache: Path | None, batch: int = 32, quiet: bool = False) -> dict[str, np.ndarray]:
    """float32 sentence embeddings of `texts` (as the text-embedding brain returns them),
    keyed by text. Cached in `cache` (an .npz) under the model's and tokenizer's sha256:
    only texts not in the cache are embedded; the cache keeps exactly the texts asked for."""
    import common

    key = sha256_file(models / EMBEDDING_MODEL) + sha256_file(models / common.TOKENIZER_FILE)
    wanted = sorted(set(texts))
    have: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) == key:
                have = dict(zip(z["texts"].tolist(), z["emb"]))
    missing = [t for t in wanted if t not in have]
    if missing:
        if not quiet:
            print(f"  embedding {len(missing)} texts with {EMBEDDING_MODEL} ({len(wanted) - len(missing)} cached)")
        sess = embedding_session(models, threads=min(2, os.cpu_count() or 1))
        tok = common.tokenizer(models)
        # Batch texts of similar token length together (less padding); order is fixed.
        lengths = {t: sum(e.attention_mask) for t, e in zip(missing, tok.encode_batch(missing))}
        missing.sort(key=lambda t: (lengths[t], t))
        for i in range(0, len(missing), batch):
            chunk = missing[i : i + batch]
            for t, v in zip(chunk, common.embed(sess, tok, chunk)):
                have[t] = v.astype(np.float32)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.name + ".tmp.npz")
            np.savez(tmp, key=np.array(key), texts=np.array(wanted), emb=np.stack([have[t] for t in wanted]))
            tmp.replace(cache)
    elif not quiet:
        print(f"  {len(wanted)} embeddings from the cache {cache}")
    return {t: have[t] for t in wanted}


def matrix(examples: list[Example], emb: dict[str, np.ndarray], labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [n, 384] embeddings, int labels) in example order."""
    index = {label: i for i, label in enumerate(labels)}
    x = np.stack([emb[e.text] for e in examples]).astype(np.float32)
    y = np.array([index[e.label] for e in examples], dtype=np.int64)
    return x, y
