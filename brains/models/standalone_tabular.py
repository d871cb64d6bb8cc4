"""Models fitted on real tabular data taken from pinned PyPI wheels (read as zip files,
each member checked against the wheel's RECORD; the wheels are never installed):

  anomaly-detect  robust Gaussian (MCD-style C-steps + shrinkage) on log-scaled features of
                  the Wisconsin Diagnostic Breast Cancer benign records (scikit-learn's
                  bundled breast_cancer.csv); Mahalanobis distance in the graph.
  forecast        a pooled, scale-free seasonal-difference AR(6) for monthly series, fitted by
                  least squares on three statsmodels datasets (Mauna Loa CO2, El Niño sea
                  temperature, Euro-area electrical-equipment turnover); the 12-step
                  recursion is unrolled in the graph.
  digit-reader    an MLP 64-32-10 on scikit-learn's bundled 8x8 digits (UCI optdigits).
"""

from __future__ import annotations

import csv
import gzip
import io
import math

import numpy as np

from standalone_common import (
    BOOL,
    FLOAT,
    SKLEARN_WHEEL,
    STATSMODELS_WHEEL,
    Adam,
    Graph,
    rounded,
    softmax,
    vi,
    wheel_member,
)

# --- anomaly-detect --------------------------------------------------------------------

# scikit-learn names them "mean radius", "radius error", "worst radius": the same order.
BC_FEATURES = [
    (f"mean {n}" if s == "mean" else f"{n} error" if s == "error" else f"worst {n}")
    for s in ("mean", "error", "worst")
    for n in (
        "radius",
        "texture",
        "perimeter",
        "area",
        "smoothness",
        "compactness",
        "concavity",
        "concave points",
        "symmetry",
        "fractal dimension",
    )
]


def load_breast_cancer(wheels) -> tuple[np.ndarray, np.ndarray]:
    """X [569, 30] float64, y [569] (0 malignant, 1 benign), as in sklearn's load_breast_cancer."""
    text = wheel_member(wheels, SKLEARN_WHEEL, "sklearn/datasets/data/breast_cancer.csv").decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    n, d = int(rows[0][0]), int(rows[0][1])
    data = np.array([[float(v) for v in r] for r in rows[1 : n + 1]], dtype=np.float64)
    assert data.shape == (n, d + 1) and d == 30
    return data[:, :d], data[:, d].astype(np.int64)


def chi2_quantile(p: float, k: int) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (good to ~1% for k >= 10)."""
    # inverse normal CDF by bisection on erf (no scipy)
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    z = (lo + hi) / 2
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def robust_gaussian(Z: np.ndarray, h_frac: float = 0.75, shrink: float = 0.1, iters: int = 100):
    """Mean and covariance of Z: deterministic MCD-style fit (start: the h points nearest the
    coordinate-wise median in MAD units; C-steps until the subset stops changing; then one
    reweighting step keeping points with d^2 <= chi2_0.975), then shrunk towards the diagonal."""
    n, d = Z.shape
    h = int(math.ceil(h_frac * n))
    med = np.median(Z, axis=0)
    mad = np.median(np.abs(Z - med), axis=0) * 1.4826 + 1e-12
    start = np.argsort(np.sum(((Z - med) / mad) ** 2, axis=1), kind="stable")[:h]
    subset = np.sort(start)
    for _ in range(iters):
        mu = Z[subset].mean(axis=0)
        cov = np.cov(Z[subset], rowvar=False)
        d2 = np.sum((Z - mu) @ np.linalg.inv(cov) * (Z - mu), axis=1)
        new = np.sort(np.argsort(d2, kind="stable")[:h])
        if np.array_equal(new, subset):
            break
        subset = new
    # consistency factor for the h-subset covariance, then reweight
    cov = cov * (np.median(d2) / chi2_quantile(0.5, d))
    d2 = np.sum((Z - mu) @ np.linalg.inv(cov) * (Z - mu), axis=1)
    keep = d2 <= chi2_quantile(0.975, d)
    mu = Z[keep].mean(axis=0)
    cov = np.cov(Z[keep], rowvar=False)
    cov = (1 - shrink) * cov + shrink * np.diag(np.diag(cov))
    return mu, cov, int(keep.sum())


class AnomalyModel:
    """score = sqrt(|((log1p(max(x,0)/scale) - mu) @ L)|^2 / D), L L^T = inverse covariance."""

    def __init__(self, scale, mu, whiten, threshold):
        self.scale, self.mu, self.whiten, self.threshold = scale, mu, whiten, threshold

    def score(self, X: np.ndarray) -> np.ndarray:
        z = np.log1p(np.maximum(X, 0) / self.scale.astype(np.float64)) - self.mu.astype(np.float64)
        w = z @ self.whiten.astype(np.float64)
        return np.sqrt(np.sum(w * w, axis=1) / X.shape[1])


def fit_anomaly(X_train: np.ndarray, decimals: int = 5):
    scale = np.median(X_train, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    scale32 = rounded(scale, 6)
    Z = np.log1p(X_train / scale32.astype(np.float64))
    mu, cov, kept = robust_gaussian(Z)
    prec = np.linalg.inv(cov)
    L = np.linalg.cholesky(prec)  # prec = L L^T ; d^2 = |(z - mu) L|^2
    return scale32, rounded(mu, decimals), rounded(L, decimals), kept


def anomaly_graph(m: AnomalyModel, props: dict, doc: str):
    g = Graph()
    D = len(m.mu)
    x = g.op("Max", ["features", g.const(0.0, np.float32)], "log")
    x = g.op("Div", [x, g.init("scale", m.scale)], "log")
    x = g.op("Log", [g.op("Add", [x, g.const(1.0, np.float32)], "log")], "log")
    z = g.op("Sub", [x, g.init("mean", m.mu)], "whiten")
    w = g.op("MatMul", [z, g.init("whiten", m.whiten)], "whiten")
    d2 = g.op("ReduceSum", [g.op("Mul", [w, w], "distance"), g.const([1], np.int64)], "distance", keepdims=1)
    s = g.op("Sqrt", [g.op("Div", [d2, g.const(float(D), np.float32)], "distance")], "distance", out="score")
    g.op("Greater", [s, g.init("threshold", np.array([m.threshold], dtype=np.float32))], "decide", out="is_anomaly")
    return g.model(
        "anomaly-detect",
        [vi("features", FLOAT, ["batch", D])],
        [vi("score", FLOAT, ["batch", 1]), vi("is_anomaly", BOOL, ["batch", 1])],
        doc,
        props,
    )


def inject_errors(X: np.ndarray, seed: int) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """One corrupted copy per record: one field multiplied by 5 or by 0.2 (a data-entry or
    unit error), field and direction chosen by a seeded RNG."""
    rng = np.random.default_rng(seed)
    out = X.copy()
    what = []
    for i in range(len(X)):
        j = int(rng.integers(X.shape[1]))
        f = 5.0 if rng.random() < 0.5 else 0.2
        out[i, j] *= f
        what.append((j, f))
    return out, what


# --- forecast ----------------------------------------------------------------------------

P_HIST, H_OUT = 24, 12


def load_monthly_series(wheels) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (monthly values float64, first month 'YYYY-MM')."""
    out = {}
    # Mauna Loa CO2, weekly (YYYYMMDD, ppm, some weeks blank) -> monthly means; months with
    # no reading are linearly interpolated.
    text = wheel_member(wheels, STATSMODELS_WHEEL, "statsmodels/datasets/co2/co2.csv").decode("utf-8")
    sums: dict[tuple[int, int], list[float]] = {}
    for row in list(csv.reader(io.StringIO(text)))[1:]:
        if row[1].strip():
            sums.setdefault((int(row[0][:4]), int(row[0][4:6])), []).append(float(row[1]))
    keys = sorted(sums)
    (y0, m0), (y1, m1) = keys[0], keys[-1]
    months = [(y, m) for y in range(y0, y1 + 1) for m in range(1, 13) if (y0, m0) <= (y, m) <= (y1, m1)]
    vals = np.array([math.fsum(sums[k]) / len(sums[k]) if k in sums else np.nan for k in months])
    idx = np.arange(len(vals))
    gaps = np.isnan(vals)
    vals[gaps] = np.interp(idx[gaps], idx[~gaps], vals[~gaps])
    out["co2"] = (vals, f"{y0}-{m0:02d}", int(gaps.sum()))
    # El Nino (Nino 1+2 sea surface temperature), a year per row, 12 month columns.
    text = wheel_member(wheels, STATSMODELS_WHEEL, "statsmodels/datasets/elnino/elnino.csv").decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))[1:]
    vals = np.array([float(v) for r in rows for v in r[1:13]])
    out["elnino"] = (vals, f"{int(float(rows[0][0]))}-01", 0)
    # Euro-area turnover index, manufacture of electrical equipment (Eurostat), monthly.
    text = wheel_member(wheels, STATSMODELS_WHEEL, "statsmodels/datasets/elec_equip/elec_equip.csv").decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))[1:]
    vals = np.array([float(r[1]) for r in rows])
    mon = {m: i + 1 for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())}
    first = rows[0][0].split("-")
    out["elec_equip"] = (vals, f"{first[2]}-{mon[first[0]]:02d}", 0)
    return out


HELDOUT_MONTHS = 60  # the last five years of every series are never used for fitting
AR_LAGS = 6  # seasonal differences fed to the AR (chosen on a validation split, see the card)


def seasonal_scale(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 seasonal differences d = h[12:24] - h[0:12] of a 24-month history and their
    root mean square (+ 1e-6): the model works on d / s, so it is scale- and level-free."""
    d = hist[:, 12:] - hist[:, :12]
    s = np.sqrt(np.mean(d * d, axis=1, keepdims=True)) + 1e-6
    return d, s


def fit_forecast(series: dict, ridge: float = 1.0, decimals: int = 6):
    """Least squares (ridge 1.0, intercept free) of the next seasonal difference on the last
    AR_LAGS ones, all divided by the history's s, pooled over every 24+1-month window of
    every series' fitting part."""
    F, T = [], []
    for vals, _, _ in series.values():
        train = vals[: len(vals) - HELDOUT_MONTHS]
        H = np.array([train[t - P_HIST : t] for t in range(P_HIST, len(train))])
        y = train[P_HIST:]
        d, s = seasonal_scale(H)
        F.append(np.concatenate([d[:, -AR_LAGS:] / s, np.ones((len(H), 1))], axis=1))
        T.append((y - H[:, 12]) / s[:, 0])
    F, T = np.concatenate(F), np.concatenate(T)
    reg = ridge * np.diag([1.0] * AR_LAGS + [0.0])
    coef = np.linalg.solve(F.T @ F + reg, F.T @ T)
    return rounded(coef[:AR_LAGS], decimals), rounded(coef[AR_LAGS:], decimals), len(F)


def forecast_np(phi: np.ndarray, c: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """The graph's computation in float64: z = d / s; 12 times z_next = z[-6:] . phi + c;
    forecast[k] = hist[12 + k] + s * z_next[k] (the same month a year earlier plus the
    predicted seasonal difference)."""
    d, s = seasonal_scale(hist)
    z = d / s
    p64, c64 = phi.astype(np.float64), float(c[0])
    outs = []
    for _ in range(H_OUT):
        nxt = z[:, -AR_LAGS:] @ p64[:, None] + c64
        outs.append(nxt)
        z = np.concatenate([z[:, 1:], nxt], axis=1)
    return hist[:, 12:] + np.concatenate(outs, axis=1) * s


def forecast_graph(phi: np.ndarray, c: np.ndarray, props: dict, doc: str):
    g = Graph()
    ax1 = g.const([1], np.int64)

    def cols(t, a, b, scope):
        return g.op("Slice", [t, g.const([a], np.int64), g.const([b], np.int64), ax1], scope)

    last_year = cols("history", 12, 24, "seasonal")
    d = g.op("Sub", [last_year, cols("history", 0, 12, "seasonal")], "seasonal")  # [B, 12]
    ms = g.op("ReduceMean", [g.op("Mul", [d, d], "seasonal")], "seasonal", axes=[1], keepdims=1)
    s = g.op("Add", [g.op("Sqrt", [ms], "seasonal"), g.const(1e-6, np.float32)], "seasonal")  # [B, 1]
    z = g.op("Div", [d, s], "seasonal")
    coef = g.init("ar_coef", phi.reshape(AR_LAGS, 1))
    icpt = g.init("ar_intercept", c.reshape(1))
    outs = []
    for k in range(H_OUT):
        sc = f"step{k + 1}"
        nxt = g.op("Add", [g.op("MatMul", [cols(z, 12 - AR_LAGS, 12, sc), coef], sc), icpt], sc)  # [B, 1]
        outs.append(nxt)
        z = g.op("Concat", [cols(z, 1, 12, sc), nxt], sc, axis=1)
    f = g.op("Concat", outs, "output", axis=1)  # [B, 12]
    g.op("Add", [last_year, g.op("Mul", [f, s], "output")], "output", out="forecast")
    return g.model(
        "forecast",
        [vi("history", FLOAT, ["batch", P_HIST])],
        [vi("forecast", FLOAT, ["batch", H_OUT])],
        doc,
        props,
    )


def evaluate_forecast(phi, c, series: dict, predict=None) -> dict:
    """Every forecast origin whose 12 months all fall in the held-out last 60 months."""
    predict = predict or (lambda h: forecast_np(phi, c, h))
    res = {}
    for name, (vals, _, _) in series.items():
        T = len(vals)
        origins = range(T - HELDOUT_MONTHS, T - H_OUT + 1)
        hist = np.array([vals[t - P_HIST : t] for t in origins])
        truth = np.array([vals[t : t + H_OUT] for t in origins])
        pred = predict(hist)
        naive = np.repeat(hist[:, -1:], H_OUT, axis=1)
        snaive = hist[:, -12:]
        row = {"origins": len(hist)}
        for k, p in (("model", pred), ("naive", naive), ("seasonal_naive", snaive)):
            row[k] = {
                "mae": float(np.mean(np.abs(p - truth))),
                "mape": float(np.mean(np.abs(p - truth) / np.abs(truth))),
                "mae_h1": float(np.mean(np.abs(p[:, 0] - truth[:, 0]))),
                "mae_h12": float(np.mean(np.abs(p[:, -1] - truth[:, -1]))),
            }
        res[name] = row
    return res


# --- digit-reader --------------------------------------------------------------------------

DIGIT_HIDDEN = 32


def load_digits(wheels) -> tuple[np.ndarray, np.ndarray]:
    raw = wheel_member(wheels, SKLEARN_WHEEL, "sklearn/datasets/data/digits.csv.gz")
    data = np.loadtxt(io.StringIO(gzip.decompress(raw).decode("utf-8")), delimiter=",")
    return data[:, :64], data[:, 64].astype(np.int64)


def stratified_split(y: np.ndarray, frac_test: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        test.extend(idx[: int(round(frac_test * len(idx)))].tolist())
    test = np.array(sorted(test))
    train = np.setdiff1d(np.arange(len(y)), test)
    return train, test


def train_digits(X: np.ndarray, y: np.ndarray, seed: int, iters: int = 600, lr: float = 0.01, l2: float = 1e-3, log=print):
    """Full-batch Adam on cross-entropy + l2/2 |W|^2, float64, seeded He initialisation."""
    rng = np.random.default_rng(seed)
    p = {
        "W1": rng.standard_normal((64, DIGIT_HIDDEN)) * np.sqrt(2 / 64),
        "b1": np.zeros(DIGIT_HIDDEN),
        "W2": rng.standard_normal((DIGIT_HIDDEN, 10)) * np.sqrt(1 / DIGIT_HIDDEN),
        "b2": np.zeros(10),
    }
    Xs = X / 16.0
    Y = np.eye(10)[y]
    opt = Adam(p, lr=lr)
    n = len(X)
    for it in range(iters):
        pre = Xs @ p["W1"] + p["b1"]
        h = np.maximum(pre, 0)
        P = softmax(h @ p["W2"] + p["b2"])
        G = (P - Y) / n
        gW2 = h.T @ G + l2 * p["W2"]
        dh = (G @ p["W2"].T) * (pre > 0)
        gW1 = Xs.T @ dh + l2 * p["W1"]
        opt.step({"W1": gW1, "b1": dh.sum(0), "W2": gW2, "b2": G.sum(0)})
        if it % 200 == 0 or it == iters - 1:
            loss = -np.mean(np.log(P[np.arange(n), y] + 1e-300))
            log(f"    iter {it:4d}  loss {loss:.4f}  train acc {np.mean(P.argmax(1) == y):.4f}")
    return p


def digits_predict(p, X: np.ndarray) -> np.ndarray:
    q = {k: v.astype(np.float64) for k, v in p.items()}
    h = np.maximum((X / 16.0) @ q["W1"] + q["b1"], 0)
    return softmax(h @ q["W2"] + q["b2"])


def digits_graph(p32, props: dict, doc: str):
    g = Graph()
    x = g.op("Mul", ["pixels", g.const(1.0 / 16.0, np.float32)], "scale")
    h = g.op("Add", [g.op("MatMul", [x, g.init("fc1.weight", p32["W1"])], "fc1"), g.init("fc1.bias", p32["b1"])], "fc1")
    h = g.op("Relu", [h], "fc1")
    o = g.op("Add", [g.op("MatMul", [h, g.init("fc2.weight", p32["W2"])], "fc2"), g.init("fc2.bias", p32["b2"])], "fc2")
    g.op("Softmax", [o], "fc2", out="probabilities", axis=-1)
    return g.model(
        "digit-reader",
        [vi("pixels", FLOAT, ["batch", 64])],
        [vi("probabilities", FLOAT, ["batch", 10])],
        doc,
        props,
    )

