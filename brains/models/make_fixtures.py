#!/usr/bin/env python3
"""Reference fixtures for the Rust brains, computed with Python ONNX Runtime 1.32.0.

For each brain, writes <out>/<brain>.json: a KServe v2 / Open Inference Protocol
request and the response ONNX Runtime gave for it, with the session settings
intra_op_num_threads=1, inter_op_num_threads=1, graph_optimization_level=ORT_ENABLE_ALL,
CPUExecutionProvider.

  text-embedding  the request carries raw text (BYTES). The tensors are made with the
                  `tokenizers` package from text-embedding.tokenizer.json with these
                  rules, which the Rust brain applies identically with the `tokenizers`
                  crate (the file's own truncation 128 / padding Fixed(128) settings are
                  overridden, as sentence-transformers does):
                    - add special tokens ([CLS] ... [SEP]);
                    - truncation: max_length 256, longest-first, stride 0;
                    - padding: right, to the longest sequence of the batch, pad id 0
                      ("[PAD]"), attention_mask 0 and token_type_ids 0 at pads;
                    - token_type_ids all 0.
                  The tensors are also recorded under "preprocess" so the tokenisation
                  can be checked on its own.
  file-type       the request is the model's raw INT32 "bytes" tensor: magika's feature
                  extraction (see common.magika_features) of two small real files, whose
                  bytes are recorded (base64) under "preprocess".
  voice-activity  the request is the model's raw input tensors: one 16 kHz chunk
                  (64 context samples, zero on a first call, + 512 new samples of a
                  deterministic synthetic signal), zero state, sr = 16000 (INT64, shape []).

Numbers: FP32 values are written as the shortest decimal that reads back, as an f64, to
exactly the float32's value, so `value as f32` in Rust gives the very same f32. INT32 and
INT64 as JSON integers, BYTES as UTF-8 strings.

Also prints every model's input/output table and writes it to IO.md (next to this file
unless --io-doc says otherwise): the specs the brain manifests are written from.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
}
ORT_TYPES = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(int32)": "INT32"}

TEXTS = [
    "Hello world",
    "The weather is lovely today, so we are going for a walk along the river.",
    "Crème brûlée à l'ÉCOLE NORMALE: naïve café-owners' RÉSUMÉ — déjà vu?! (Zürich, 2024)",
]

SMALL_SCRIPT = b"""

  #!/bin/sh
# greet: print a greeting for each name given
for name in "$@"; do
    printf 'Hello, %s!\\n' "$name"
done

\t \n"""


def tensor(name: str, arr: np.ndarray) -> dict:
    arr = np.asarray(arr)
    dt = DATATYPES[arr.dtype]
    flat = arr.reshape(-1)
    if dt == "FP32":
        if not np.isfinite(flat).all():
            raise ValueError(f"{name}: non-finite value")
        data = [float(v) for v in flat.tolist()]  # exact f32 values as doubles -> shortest repr
    else:
        data = [int(v) for v in flat.tolist()]
    return {"name": name, "datatype": dt, "shape": list(arr.shape), "data": data}


def run_all(sess: ort.InferenceSession, feed: dict[str, np.ndarray]) -> list[dict]:
    names = [o.name for o in sess.get_outputs()]
    return [tensor(n, v) for n, v in zip(names, sess.run(names, feed))]


def dumps(obj, indent: int = 0) -> str:
    """JSON with nesting indented but every list of scalars kept on one line."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}" if items else "{}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + dumps(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ") if isinstance(obj, list) and len(obj) < 8 else (",", ":"))


SESSION = {
    "onnxruntime": ort.__version__,
    "intra_op_num_threads": 1,
    "inter_op_num_threads": 1,
    "graph_optimization_level": "ORT_ENABLE_ALL",
    "execution_provider": "CPUExecutionProvider",
}


def fixture_text_embedding(models: Path) -> dict:
    sess = common.session(models / "text-embedding.onnx")
    tok = common.tokenizer(models)
    feed = common.tokenize(tok, TEXTS)
    return {
        "brain": "text-embedding",
        "request": {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}]},
        "response": {"model_name": "text-embedding", "outputs": run_all(sess, feed)},
        "preprocess": {
            "tokenizer": common.TOKENIZER_FILE,
            "truncation": common.MAX_TOKENS,
            "padding": "longest",
            "pad_id": common.PAD_ID,
            "token_type_ids": 0,
            "tensors": [tensor(n, feed[n]) for n in ("input_ids", "attention_mask", "token_type_ids")],
        },
        "session": SESSION,
    }


def fixture_file_type(models: Path) -> dict:
    cfg = common.magika_config(models)
    sess = common.session(models / "file-type.onnx")
    files = [
        ("file-type.config.json", (models / "file-type.config.json").read_bytes()),
        ("greet.sh", SMALL_SCRIPT),
    ]
    feats = np.array([common.magika_features(c, cfg) for _, c in files], dtype=np.int32)
    outputs = run_all(sess, {"bytes": feats})
    scores = np.array(outputs[0]["data"], dtype=np.float32).reshape(outputs[0]["shape"])
    described = []
    for (name, content), row in zip(files, scores):
        label, score = common.magika_label(row, cfg)
        described.append(
            {"file": name, "size": len(content), "base64": base64.b64encode(content).decode(), "label": label, "score": score}
        )
    return {
        "brain": "file-type",
        "request": {"inputs": [tensor("bytes", feats)]},
        "response": {"model_name": "file-type", "outputs": outputs},
        "preprocess": {
            "config": "file-type.config.json",
            "features": "beg_size bytes from the lstripped start, padded at the end with padding_token; "
            "end_size bytes from the rstripped end, padded at the start; at most block_size bytes read each side",
            "files": described,
        },
        "session": SESSION,
    }


def fixture_voice_activity(models: Path) -> dict:
    sess = common.session(models / "voice-activity.onnx")
    start = 2560  # 160 ms into the signal, near the top of its envelope
    chunk = common.synthetic_voiced(start + common.VAD_CHUNK)[start:]
    x = np.concatenate([np.zeros(common.VAD_CONTEXT, dtype=np.float32), chunk])[None, :]
    feed = {
        "input": x.astype(np.float32),
        "state": np.zeros((2, 1, 128), dtype=np.float32),
        "sr": np.array(common.VAD_RATE, dtype=np.int64),
    }
    return {
        "brain": "voice-activity",
        "request": {"inputs": [tensor(n, feed[n]) for n in ("input", "state", "sr")]},
        "response": {"model_name": "voice-activity", "outputs": run_all(sess, feed)},
        "preprocess": {
            "sample_rate": common.VAD_RATE,
            "chunk": common.VAD_CHUNK,
            "context": common.VAD_CONTEXT,
            "signal": "64 zero context samples, then samples 2560..3072 of common.synthetic_voiced (140 Hz harmonics)",
        },
        "session": SESSION,
    }


# --- IO.md ----------------------------------------------------------------------------

NOTES = {
    "text-embedding": """\
- Brain request: text as BYTES `[batch]`; the brain tokenises with `text-embedding.tokenizer.json`:
  special tokens added, truncation to 256 tokens (longest-first), right padding to the longest
  sequence in the batch with id 0, attention_mask 0 and token_type_ids 0 at pads. The file's own
  settings (truncation 128, padding Fixed 128) must be overridden.
- `sentence_embedding` rows are L2-normalised: cosine similarity is a dot product.
- `sequence` is at most 512 (position table size); with truncation it is at most 256.""",
    "file-type": """\
- `bytes`: for each file, 1024 ints from the start then 1024 from the end, each 0..255 or 256
  (padding). Start: read at most 4096 bytes, strip leading ASCII whitespace, keep the first 1024,
  pad at the end. End: read the last at most 4096 bytes, strip trailing ASCII whitespace, keep the
  last 1024, pad at the start. (`file-type.config.json`: beg_size, end_size, block_size, padding_token.)
- Files shorter than `min_file_size_for_dl` (8) bytes, or whose 8th start feature is padding, are
  not given to the model: magika answers `txt` if they are valid UTF-8, else `unknown`; an empty
  file is `empty`.
- `target_label` is a probability per label of `target_labels_space` (214, in order). magika takes
  the argmax, applies `overwrite_map` (randombytes → unknown, randomtxt → txt) and, in its default
  high-confidence mode, falls back to `txt`/`unknown` when the score is below `thresholds[label]`
  or else `medium_confidence_threshold` (0.5).""",
    "voice-activity": """\
- One call per chunk: `input` is `[batch, 64 + 512]` at 16 kHz (`[batch, 32 + 256]` at 8 kHz): the
  last 64 samples of the previous call's input (zeros on the first call) followed by 512 new
  mono float samples in [-1, 1].
- `state` starts as zeros `[2, batch, 128]` and is replaced by `stateN` after every call.
- `sr` is an INT64 scalar (shape `[]`): 16000 or 8000.
- `output` `[batch, 1]` is the speech probability of the chunk (32 ms at 16 kHz); `stateN` is
  `[2, batch, 128]` although the model declares its shape as unknown.""",
}


def io_table(name: str, sess: ort.InferenceSession) -> str:
    def shape(s):
        return "[" + ", ".join("?" if d is None else str(d) for d in s) + "]"

    lines = [f"### {name} (`{name}.onnx`)", "", "| | name | datatype | shape |", "|---|---|---|---|"]
    for kind, args in (("input", sess.get_inputs()), ("output", sess.get_outputs())):
        for a in args:
            lines.append(f"| {kind} | `{a.name}` | {ORT_TYPES[a.type]} | `{shape(a.shape)}` |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=Path("build/models"))
    ap.add_argument("--out", type=Path, default=Path("build/fixtures"))
    ap.add_argument("--io-doc", type=Path, default=Path(__file__).resolve().parent / "IO.md")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    for make in (fixture_text_embedding, fixture_file_type, fixture_voice_activity):
        fx = make(args.models)
        path = args.out / f"{fx['brain']}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(dumps(fx) + "\n", encoding="utf-8")
        tmp.replace(path)
        shapes = ", ".join(f"{o['name']} {o['datatype']} {o['shape']}" for o in fx["response"]["outputs"])
        print(f"  wrote {path} ({shapes})")

    doc = [
        "# Model inputs and outputs",
        "",
        "Generated by `make_fixtures.py` from the built models (ONNX Runtime "
        f"{ort.__version__} session metadata); do not edit by hand. Symbolic dimensions are",
        "named as the model declares them (`?` = unnamed). Reference request/response pairs for",
        "each model are written to `build/fixtures/<brain>.json` by deploy/setup.sh.",
    ]
    for name in ("text-embedding", "file-type", "voice-activity"):
        table = io_table(name, common.session(args.models / f"{name}.onnx"))
        print(table)
        doc += ["", table, "", NOTES[name]]
    args.io_doc.write_text("\n".join(doc) + "\n", encoding="utf-8")
    print(f"  wrote {args.io_doc}")


if __name__ == "__main__":
    main()
