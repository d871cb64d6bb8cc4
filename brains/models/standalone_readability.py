"""readability: US grade level of an English text from six counts the caller makes.

Input `counts` FP32 [batch, 6] = characters, letters, words, sentences, syllables,
long words, counted by the rules of `count_text` below (the caller must count the same
way; the Rust side can port it line for line). The graph forms five ratios
  ASL = words / sentences, ASW = syllables / words, CPW = characters / words,
  LPW = letters / words,   LWP = 100 * long words / words      (each denominator >= 1)
and returns grade = w . ratios + b, clipped to [0, 18]. w and b are a ridge regression
fitted on passages written for this project at a target grade (the Flesch-Kincaid grade,
0.39 ASL + 11.8 ASW - 15.59, is reported beside it as the reference formula).
"""

from __future__ import annotations

import re

import numpy as np

from standalone_common import DATA, FLOAT, Graph, read_blocks, vi

COUNT_NAMES = ["characters", "letters", "words", "sentences", "syllables", "long_words"]
WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")
SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
VOWELS = re.compile(r"[aeiouy]+")


def syllables(word: str) -> int:
    """English syllable estimate: the number of vowel groups (a e i o u y) in the word's
    lower-cased ASCII letters, minus one for a final silent 'e' (not after 'l' in '-le',
    nor in '-ee'/'-ye') when that leaves at least one; at least 1 for every word."""
    w = "".join(c for c in word.lower() if "a" <= c <= "z")
    if not w:
        return 1
    n = len(VOWELS.findall(w))
    if n > 1 and w.endswith("e") and not w.endswith(("le", "ee", "ye")):
        n -= 1
    return max(1, n)


def count_text(text: str) -> list[int]:
    """The six counts, in COUNT_NAMES order:
    characters  non-whitespace characters;
    letters     characters for which str.isalpha() holds (Unicode letters);
    words       matches of [^\\W_]+(?:['’-][^\\W_]+)*  (letters/digits, inner apostrophes and hyphens);
    sentences   runs of . ! ? followed by whitespace or the end; at least 1 if there is a word;
    syllables   sum of syllables(word) over the words;
    long_words  words with more than 6 letters."""
    words = WORD.findall(text)
    chars = sum(1 for c in text if not c.isspace())
    letters = sum(1 for c in text if c.isalpha())
    sents = len(SENTENCE_END.findall(text))
    if words:
        sents = max(1, sents)
    syl = sum(syllables(w) for w in words)
    longw = sum(1 for w in words if sum(1 for c in w if c.isalpha()) > 6)
    return [chars, letters, len(words), sents, syl, longw]


def ratios(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    words = np.maximum(c[:, 2], 1)
    return np.stack(
        [c[:, 2] / np.maximum(c[:, 3], 1), c[:, 4] / words, c[:, 0] / words, c[:, 1] / words, 100 * c[:, 5] / words], axis=1
    )


RATIO_NAMES = ["words/sentence", "syllables/word", "characters/word", "letters/word", "long words per 100 words"]


def flesch_kincaid(counts: np.ndarray) -> np.ndarray:
    r = ratios(counts)
    return 0.39 * r[:, 0] + 11.8 * r[:, 1] - 15.59


def load_passages():
    out = []
    for block in read_blocks(DATA / "readability" / "passages.txt"):
        head, _, text = block.partition("\n")
        m = re.fullmatch(r"grade: (\d+) \| split: (train|heldout)", head.strip())
        assert m, head
        out.append((m.group(2), int(m.group(1)), " ".join(text.split())))
    return out


def fit_ridge(R: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Ridge on standardised ratios (intercept free); returns weights and bias on raw ratios."""
    mu, sd = R.mean(axis=0), R.std(axis=0)
    Z = (R - mu) / sd
    w = np.linalg.solve(Z.T @ Z + lam * np.eye(Z.shape[1]), Z.T @ (y - y.mean()))
    wr = w / sd
    return wr, float(y.mean() - mu @ wr)


def choose_lambda(R: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out on the training passages over a fixed grid."""
    grid = [0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
    best = None
    for lam in grid:
        errs = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            w, b = fit_ridge(R[keep], y[keep], lam)
            errs.append(abs(R[i] @ w + b - y[i]))
        e = float(np.mean(errs))
        if best is None or e < best[1] - 1e-12:
            best = (lam, e)
    return best[0]


def predict(w: np.ndarray, b: float, counts: np.ndarray) -> np.ndarray:
    return np.clip(ratios(counts) @ w.astype(np.float64) + float(b), 0.0, 18.0)


def readability_graph(w: np.ndarray, b: np.ndarray, props: dict, doc: str):
    g = Graph()
    one = g.const(1.0, np.float32)
    cols = {}
    for i, name in enumerate(COUNT_NAMES):
        cols[name] = g.op("Slice", ["counts", g.const([i], np.int64), g.const([i + 1], np.int64), g.const([1], np.int64)], "counts")
    words = g.op("Max", [cols["words"], one], "ratios")
    sents = g.op("Max", [cols["sentences"], one], "ratios")
    r = [
        g.op("Div", [cols["words"], sents], "ratios"),
        g.op("Div", [cols["syllables"], words], "ratios"),
        g.op("Div", [cols["characters"], words], "ratios"),
        g.op("Div", [cols["letters"], words], "ratios"),
        g.op("Div", [g.op("Mul", [cols["long_words"], g.const(100.0, np.float32)], "ratios"), words], "ratios"),
    ]
    feats = g.op("Concat", r, "ratios", axis=1)  # [B, 5]
    y = g.op("Add", [g.op("MatMul", [feats, g.init("weights", w.reshape(-1, 1))], "grade"), g.init("bias", b.reshape(1))], "grade")
    g.op("Clip", [y, g.const(0.0, np.float32), g.const(18.0, np.float32)], "grade", out="grade")
    return g.model(
        "readability",
        [vi("counts", FLOAT, ["batch", 6])],
        [vi("grade", FLOAT, ["batch", 1])],
        doc,
        props,
    )
