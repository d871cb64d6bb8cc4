"""Helpers shared by check_models.py and make_fixtures.py.

These implement the pre-processing rules the Rust brains must reproduce exactly; each
rule is stated where it is implemented, and again in IO.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tokenizers

# --- ONNX Runtime ---------------------------------------------------------------------


def session(path: Path) -> ort.InferenceSession:
    """The session settings every reference output is computed with."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# --- text-embedding -------------------------------------------------------------------

# The tokenizer.json shipped with the model carries its own truncation (128) and padding
# (Fixed 128) settings. sentence-transformers overrides them (max_seq_length 256, pad to
# the longest sequence of the batch), and so must every caller: these are the rules.
TOKENIZER_FILE = "text-embedding.tokenizer.json"
MAX_TOKENS = 256
PAD_ID = 0
PAD_TOKEN = "[PAD]"


def tokenizer(models: Path) -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer.from_file(str(models / TOKENIZER_FILE))
    tok.enable_truncation(max_length=MAX_TOKENS)  # longest-first, stride 0
    tok.enable_padding(direction="right", pad_id=PAD_ID, pad_type_id=0, pad_token=PAD_TOKEN)  # to longest
    return tok


def tokenize(tok: tokenizers.Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """input_ids / attention_mask / token_type_ids, INT64 [batch, longest]."""
    enc = tok.encode_batch(texts, add_special_tokens=True)
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


def embed(sess: ort.InferenceSession, tok: tokenizers.Tokenizer, texts: list[str]) -> np.ndarray:
    return sess.run(["sentence_embedding"], tokenize(tok, texts))[0]


# --- file-type (magika standard_v3_3) -------------------------------------------------


def magika_config(models: Path) -> dict:
    return json.loads((models / "file-type.config.json").read_bytes())


def magika_features(content: bytes, cfg: dict) -> list[int]:
    """Model input for one file: `beg_size` + `end_size` ints (magika's features v2).

    - read at most `block_size` bytes from the start, strip leading ASCII whitespace
      (b" \\t\\n\\r\\x0b\\x0c", Python bytes.lstrip), keep the first `beg_size` bytes and
      pad at the END with `padding_token` (256);
    - read at most `block_size` bytes from the end, strip trailing ASCII whitespace,
      keep the last `end_size` bytes and pad at the START with `padding_token`;
    - concatenate beg then end.
    magika itself does not run the model for files shorter than `min_file_size_for_dl`
    bytes, nor when feature beg[min_file_size_for_dl - 1] is padding (too few bytes
    after stripping); it answers "txt" if the bytes are UTF-8, else "unknown".
    """
    beg_size, end_size = cfg["beg_size"], cfg["end_size"]
    block, pad = cfg["block_size"], cfg["padding_token"]
    if cfg["mid_size"] != 0 or cfg["use_inputs_at_offsets"] or not (0 < beg_size < block and 0 < end_size < block):
        raise ValueError("unsupported magika feature config")
    n = min(block, len(content))
    beg = list(content[:n].lstrip()[:beg_size])
    beg += [pad] * (beg_size - len(beg))
    end = content[len(content) - n :].rstrip()
    end = list(end[max(0, len(end) - end_size) :])
    end = [pad] * (end_size - len(end)) + end
    return beg + end


def magika_needs_model(content: bytes, cfg: dict) -> bool:
    if len(content) < cfg["min_file_size_for_dl"]:
        return False
    return magika_features(content, cfg)[cfg["min_file_size_for_dl"] - 1] != cfg["padding_token"]


def magika_label(scores: np.ndarray, cfg: dict) -> tuple[str, float]:
    """Raw model label (argmax over target_labels_space) and its score."""
    idx = int(np.argmax(scores))
    return cfg["target_labels_space"][idx], float(scores[idx])


# --- voice-activity (silero-vad) ------------------------------------------------------

VAD_RATE = 16000
VAD_CHUNK = 512  # new samples per call at 16 kHz (256 at 8 kHz)
VAD_CONTEXT = 64  # last samples of the previous input prepended to each chunk (32 at 8 kHz)


def vad_probabilities(sess: ort.InferenceSession, audio: np.ndarray) -> np.ndarray:
    """Run silero-vad over mono float32 16 kHz audio the way silero_vad's OnnxWrapper does:
    input = [context(64) | chunk(512)] as FP32 [1, 576], state FP32 [2, 1, 128] starting at
    zero and fed back from `stateN`, sr INT64 scalar 16000. A trailing partial chunk is
    dropped. Returns one speech probability per 32 ms chunk."""
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, VAD_CONTEXT), dtype=np.float32)
    sr = np.array(VAD_RATE, dtype=np.int64)
    probs = []
    for start in range(0, len(audio) - VAD_CHUNK + 1, VAD_CHUNK):
        x = np.concatenate([context, audio[None, start : start + VAD_CHUNK].astype(np.float32)], axis=1)
        out, state = sess.run(["output", "stateN"], {"input": x, "state": state, "sr": sr})
        context = x[:, -VAD_CONTEXT:]
        probs.append(float(out[0, 0]))
    return np.array(probs)


def synthetic_voiced(n: int, rate: int = VAD_RATE) -> np.ndarray:
    """A deterministic vowel-like test signal: 140 Hz harmonics under a slow envelope.
    Computed with math.sin so it does not depend on numpy's SIMD code paths."""
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        t = i / rate
        env = 0.5 - 0.5 * math.cos(2 * math.pi * 3.0 * t)
        v = sum(math.sin(2 * math.pi * 140.0 * h * t) / h for h in range(1, 9))
        out[i] = 0.25 * env * v
    return out
