"""Bootstrap confidence intervals for eval's figures, vectorised with numpy.

Every figure mlmctl reports is a ratio of sums over independent units: perplexity is
exp(sum of per-document NLL / sum of per-document token counts), accuracy is correct / n, a
class's precision is tp / predicted. So one resample is a vector of multiplicities `w` (how
often each unit was drawn, summing to n) and the resampled figure is a ratio of `w @ x`. A block
of resamples is a (R, n) integer matrix and a whole bootstrap is a few matrix products:

    w = resample_counts(n=400, resamples=1000, seed=0)     # (1000, 400), rows sum to 400
    ppl = np.exp(w @ nll_sums / (w @ token_counts))        # 1000 resampled perplexities
    lo, hi = percentile_interval(ppl)                      # the 95% percentile interval

Units: documents for perplexities (tokens of one document are not independent), examples for
classifier metrics. Intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13), seeded,
so a rerun gives the same bounds. `paired_*` draws one set of resamples for two systems scored on
the same units, so the interval of their difference leaves out the (shared) difficulty of the
test set: Koehn (2004), "Statistical significance tests for machine translation evaluation".
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

LEVEL = 0.95
DEFAULT_RESAMPLES = 1000
# Cap on the (resamples x units) matrix built at once: 4M int32 counts = 16 MB.
_CELLS_PER_BLOCK = 1 << 22


def resample_blocks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """(r, n) int32 blocks of multiplicities, `resamples` rows in all; a pure function of the args.

    Blocks bound the memory for large n; the draws do not depend on the block size.
    """
    if n < 1:
        raise ValueError("bootstrap needs at least one unit")
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, 0xB007, n])))
    per_block = max(1, _CELLS_PER_BLOCK // n)
    done = 0
    while done < resamples:
        r = min(per_block, resamples - done)
        idx = rng.integers(0, n, size=(r, n))
        # Row j's draws are offset by j * n, so one bincount counts every row at once.
        counts = np.bincount((idx + (np.arange(r) * n)[:, None]).ravel(), minlength=r * n)
        yield counts.reshape(r, n).astype(np.int32)
        done += r


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """All resamples as one (resamples, n) matrix (small n only; see `resample_blocks`)."""
    return np.concatenate(list(resample_blocks(n, resamples, seed)))


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` interval of resampled values (NaN resamples dropped)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(values, [a, 1 - a])
    return float(lo), float(hi)


def ratio_intervals(nums: dict[str, np.ndarray], den: np.ndarray, resamples: int, seed: int,
                    transform: dict[str, str] | None = None) -> dict[str, tuple[float, float]]:
    """Intervals of sum(num) / sum(den) for several numerators over the same units.

    `transform[name] == "exp"` reports exp(ratio) (a perplexity from summed NLL). All numerators
    share the resamples, so their intervals are consistent with each other.
    """
    transform = transform or {}
    names = list(nums)
    x = np.stack([np.asarray(nums[k], dtype=np.float64) for k in names], axis=1)  # (n, m)
    den = np.asarray(den, dtype=np.float64)
    stats = []
    for w in resample_blocks(len(den), resamples, seed):
        with np.errstate(divide="ignore", invalid="ignore"):
            stats.append((w @ x) / (w @ den)[:, None])  # (r, m)
    s = np.concatenate(stats)
    out = {}
    for j, k in enumerate(names):
        v = np.exp(s[:, j]) if transform.get(k) == "exp" else s[:, j]
        out[k] = percentile_interval(v)
    return out


# ----------------------------------------------------------------------------------------------
# Classification: every metric of mlmctl.metrics, for many resamples at once


def _class_counts(w: np.ndarray, gold: np.ndarray, pred: np.ndarray, k: int):
    """tp, support (gold) and predicted counts per class: three (r, k) float arrays."""
    eye = np.eye(k, dtype=np.float64)
    g, p = eye[gold], eye[pred]  # (n, k) one-hot
    return w @ (g * p), w @ g, w @ p


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # mlmctl.metrics' convention: x / 0 = 0 (a class never predicted has precision 0).
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def metrics_from_counts(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """mlmctl.metrics.classification_report's scalar figures, one per row of (r, k) counts.

    Same conventions: macro over the classes present in gold or predictions, weighted by
    support, micro = accuracy for single-label classification; `mcc` is Gorodkin's multi-class
    Matthews correlation (0 when undefined), and two classes also give `f1`, the F1 of class 1.
    """
    n = support.sum(axis=1)
    prec, rec = _div(tp, predicted), _div(tp, support)
    f1 = _div(2 * prec * rec, prec + rec)
    present = (support > 0) | (predicted > 0)
    n_present = present.sum(axis=1)
    out = {"accuracy": _div(tp.sum(axis=1), n)}
    for name, v in (("precision", prec), ("recall", rec), ("f1", f1)):
        out[f"macro_{name}"] = _div((v * present).sum(axis=1), n_present)
        out[f"weighted_{name}"] = _div((v * support).sum(axis=1), n)
        out[f"micro_{name}"] = out["accuracy"]
        out[f"per_class_{name}"] = v  # (r, k)
    # MCC from the same counts: c correct of s, t gold and p predicted per class.
    s, c = n.astype(np.float64), tp.sum(axis=1)
    cov_tp = c * s - (predicted * support).sum(axis=1)
    den = np.sqrt((s * s - (predicted**2).sum(axis=1)) * (s * s - (support**2).sum(axis=1)))
    out["mcc"] = _div(cov_tp, den)
    if tp.shape[1] == 2:
        out["f1"] = f1[:, 1]
    return out


def classification_intervals(gold, pred, num_labels: int, resamples: int, seed: int) -> dict:
    """Intervals of every classifier figure, resampling examples.

    Returns {"accuracy": (lo, hi), "macro_f1": ..., ..., "per_class": [{"precision": (lo, hi),
    "recall": ..., "f1": ...}, ...]} with per_class in label-id order.
    """
    gold, pred = np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    parts: dict[str, list[np.ndarray]] = {}
    for w in resample_blocks(len(gold), resamples, seed):
        for key, v in metrics_from_counts(*_class_counts(w, gold, pred, num_labels)).items():
            parts.setdefault(key, []).append(v)
    stats = {k: np.concatenate(v) for k, v in parts.items()}
    out: dict = {k: percentile_interval(v) for k, v in stats.items() if not k.startswith("per_class_")}
    out["per_class"] = [
        {m: percentile_interval(stats[f"per_class_{m}"][:, c]) for m in ("precision", "recall", "f1")}
        for c in range(num_labels)
    ]
    return out


def paired_classification_difference(gold, pred_a, pred_b, num_labels: int, resamples: int, seed: int,
                                     metrics: tuple[str, ...] = ("accuracy", "macro_f1")) -> dict:
    """Metric(a) - metric(b) on the same test examples: {metric: {"diff", "ci", "p_not_better"}}.

    `p_not_better` is the share of resamples where a does not beat b (a one-sided bootstrap
    p-value, for information); "significant" means the interval excludes 0.
    """
    gold = np.asarray(gold, dtype=np.int64)
    pa, pb = np.asarray(pred_a, dtype=np.int64), np.asarray(pred_b, dtype=np.int64)
    if not (len(gold) == len(pa) == len(pb)):
        raise ValueError("paired bootstrap needs both systems scored on the same examples")
    ones = np.ones((1, len(gold)), dtype=np.int32)
    point_a = metrics_from_counts(*_class_counts(ones, gold, pa, num_labels))
    point_b = metrics_from_counts(*_class_counts(ones, gold, pb, num_labels))
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for w in resample_blocks(len(gold), resamples, seed):
        ma = metrics_from_counts(*_class_counts(w, gold, pa, num_labels))
        mb = metrics_from_counts(*_class_counts(w, gold, pb, num_labels))
        for m in metrics:
            diffs[m].append(ma[m] - mb[m])
    out = {}
    for m in metrics:
        d = np.concatenate(diffs[m])
        lo, hi = percentile_interval(d)
        out[m] = {"a": float(point_a[m][0]), "b": float(point_b[m][0]), "diff": float(point_a[m][0] - point_b[m][0]),
                  "ci": (lo, hi), "significant": bool(lo > 0 or hi < 0), "p_not_better": float((d <= 0).mean())}
    return out


# ----------------------------------------------------------------------------------------------
# Regression: Pearson, Spearman and MSE for many resamples at once


def _weighted_pearson(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of x and y ((n,) or one row per resample, (r, n)) under each row of
    multiplicities w (r, n); NaN where one of them is constant in the resample."""
    n = w.sum(axis=1)
    mx, my = (w * x).sum(axis=1) / n, (w * y).sum(axis=1) / n
    sxy = (w * x * y).sum(axis=1) - n * mx * my
    sxx, syy = (w * x * x).sum(axis=1) - n * mx * mx, (w * y * y).sum(axis=1) - n * my * my
    with np.errstate(divide="ignore", invalid="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    # A constant side leaves only rounding noise in its sum of squares.
    r[~(sxx > 1e-12 * (w * x * x).sum(axis=1)) | ~(syy > 1e-12 * (w * y * y).sum(axis=1))] = np.nan
    return np.clip(r, -1.0, 1.0)


def _weighted_ranks(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Average ranks (scipy's 'average', as metrics.average_ranks) of each unit within each resample:
    a value drawn m times takes m places; tied values share the mean of the places they span."""
    values, group = np.unique(x, return_inverse=True)  # groups of tied values, in value order
    g = np.zeros((w.shape[0], len(values)), dtype=np.float64)
    np.add.at(g.T, group, w.T)  # (r, groups): how many draws each group of tied values got
    before = np.cumsum(g, axis=1) - g
    return (before + (g + 1) / 2)[:, group]  # (r, n)


def regression_intervals(gold, pred, resamples: int, seed: int) -> dict[str, tuple[float, float]]:
    """Intervals of `pearson`, `spearman` and `mse`, resampling examples. Resamples where a
    correlation is undefined (a constant side) are left out of its interval."""
    gold, pred = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    # Centred: the sums of squares of the one-pass formula lose no precision to a large mean.
    xc, yc = gold - gold.mean(), pred - pred.mean()
    parts: dict[str, list[np.ndarray]] = {"pearson": [], "spearman": [], "mse": []}
    for w in resample_blocks(len(gold), resamples, seed):
        w = w.astype(np.float64)
        parts["pearson"].append(_weighted_pearson(w, xc, yc))
        rx, ry = _weighted_ranks(w, gold), _weighted_ranks(w, pred)
        parts["spearman"].append(_weighted_pearson(w, rx, ry))
        parts["mse"].append((w @ (gold - pred) ** 2) / w.sum(axis=1))
    return {k: percentile_interval(np.concatenate(v)) for k, v in parts.items()}


def paired_regression_difference(gold, pred_a, pred_b, resamples: int, seed: int) -> dict[str, dict]:
    """Pearson and MSE of predictions a minus those of b on the same examples, with a paired
    percentile interval (each resample scores both on the same draw): {metric: {"diff", "ci",
    "better"}}, `better` True when the interval says a is better (Pearson higher, MSE lower)."""
    gold, a, b = (np.asarray(v, dtype=np.float64) for v in (gold, pred_a, pred_b))
    xc, ac, bc = gold - gold.mean(), a - a.mean(), b - b.mean()
    one = np.ones((1, len(gold)))
    diffs: dict[str, list[np.ndarray]] = {"pearson": [], "mse": []}
    for w in resample_blocks(len(gold), resamples, seed):
        w = w.astype(np.float64)
        diffs["pearson"].append(_weighted_pearson(w, xc, ac) - _weighted_pearson(w, xc, bc))
        diffs["mse"].append((w @ ((gold - a) ** 2 - (gold - b) ** 2)) / w.sum(axis=1))
    point = {"pearson": float(_weighted_pearson(one, xc, ac)[0] - _weighted_pearson(one, xc, bc)[0]),
             "mse": float(np.mean((gold - a) ** 2) - np.mean((gold - b) ** 2))}
    out = {}
    for m, parts in diffs.items():
        lo, hi = percentile_interval(np.concatenate(parts))
        out[m] = {"diff": point[m], "ci": (lo, hi), "better": lo > 0 if m == "pearson" else hi < 0,
                  "worse": hi < 0 if m == "pearson" else lo > 0}
    return out
