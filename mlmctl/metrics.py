"""Classification metrics for finetune and eval: accuracy, per-class precision /
recall / F1, macro / micro / weighted averages and the confusion matrix.

Pure Python (no numpy, no sklearn) so the numbers are easy to check by hand.
Conventions, chosen to match scikit-learn's `precision_recall_fscore_support`
with `zero_division=0` and no explicit `labels=` argument:

- A class that is never predicted has precision 0 (not NaN); a class with no
  gold example has recall 0. F1 is 0 whenever precision + recall is 0.
- Macro averages run over the classes that occur in the gold labels *or* the
  predictions. A class of the label set that occurs in neither (e.g. a train
  label missing from a small test file and never predicted) is reported in
  `per_class` with `support: 0` and `present: false` and left out of the macro
  average, so it cannot drag macro-F1 down for something nobody asked about.
- Weighted averages weight each class by its gold support.
- Micro averages pool all decisions; for single-label classification micro
  precision = micro recall = micro F1 = accuracy.
- `confusion_matrix[i][j]` counts examples whose gold label is `labels[i]`
  and whose prediction is `labels[j]` (rows = gold, columns = predicted).
"""

from __future__ import annotations

from collections.abc import Sequence

# The dev metrics a finetune config may pick (`metric:`) for "best checkpoint" / early stopping,
# per task; every one is "higher is better". `f1` is the F1 of the positive class of a binary task
# (the second label in label order, GLUE's F1 of class "1" for MRPC and QQP). `entity_f1` is the
# token-classification metric (mlmctl.seq_metrics).
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall",
                          "mcc", "f1")
REGRESSION_METRICS = ("pearson", "spearman")
TASK_METRICS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS,
                "token-classification": ("entity_f1", "token_accuracy")}
DEFAULT_METRIC = {"classification": "macro_f1", "regression": "pearson", "token-classification": "entity_f1"}
METRIC_NAMES = tuple(dict.fromkeys(m for names in TASK_METRICS.values() for m in names))
"""Every name `metric:` accepts besides `auto`."""


def metric_for(task: str, metric: str) -> str:
    """The metric `metric` stands for (`auto` = the task's default); `ValueError` with a one-line
    reason when it does not fit the task."""
    if metric == "auto":
        return DEFAULT_METRIC[task]
    if metric not in TASK_METRICS[task]:
        raise ValueError(f"`{metric}` is not a {task} metric; use auto or one of {', '.join(TASK_METRICS[task])}")
    return metric


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> list[list[int]]:
    """Rows are gold labels, columns predictions; ids must lie in [0, num_labels)."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    cm = [[0] * num_labels for _ in range(num_labels)]
    for t, p in zip(y_true, y_pred):
        if not (0 <= t < num_labels and 0 <= p < num_labels):
            raise ValueError(f"label id out of range: gold {t}, predicted {p}, num_labels {num_labels}")
        cm[t][p] += 1
    return cm


def _safe_div(num: float, den: float) -> float:
    return num / den if den else 0.0


def _f1(p: float, r: float) -> float:
    return _safe_div(2 * p * r, p + r)


def classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict:
    """All classifier metrics as one JSON-ready dict (the `eval.json` classifier schema).

    Keys: `n`, `accuracy`, `macro_precision`, `macro_recall`, `macro_f1`,
    `micro_precision`, `micro_recall`, `micro_f1`, `weighted_precision`,
    `weighted_recall`, `weighted_f1`, `mcc` (Matthews correlation), `per_class`
    (label -> precision, recall, f1, support, predicted, present), `labels`,
    `confusion_matrix`; for two labels also `f1` and `positive_label` (the F1 of
    the second label, GLUE's F1 of class "1").
    """
    k = len(labels)
    cm = confusion_matrix(y_true, y_pred, k)
    n = len(y_true)
    support = [sum(cm[i]) for i in range(k)]
    predicted = [sum(cm[i][j] for i in range(k)) for j in range(k)]
    correct = sum(cm[i][i] for i in range(k))

    per_class: dict[str, dict] = {}
    present: list[int] = []
    for i, name in enumerate(labels):
        p = _safe_div(cm[i][i], predicted[i])
        r = _safe_div(cm[i][i], support[i])
        is_present = support[i] > 0 or predicted[i] > 0
        if is_present:
            present.append(i)
        per_class[name] = {
            "precision": p,
            "recall": r,
            "f1": _f1(p, r),
            "support": support[i],
            "predicted": predicted[i],
            "present": is_present,
        }

    def macro(key: str) -> float:
        return _safe_div(sum(per_class[labels[i]][key] for i in present), len(present))

    def weighted(key: str) -> float:
        return _safe_div(sum(per_class[labels[i]][key] * support[i] for i in range(k)), n)

    # Micro: pooled TP / FP / FN. In single-label classification every wrong
    # prediction is one FP (for the predicted class) and one FN (for the gold
    # class), so all three equal accuracy; computed explicitly anyway.
    tp, fp, fn = correct, n - correct, n - correct
    micro_p, micro_r = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    binary = {"f1": per_class[labels[1]]["f1"], "positive_label": labels[1]} if k == 2 else {}
    return {
        "n": n,
        "accuracy": _safe_div(correct, n),
        "macro_precision": macro("precision"),
        "macro_recall": macro("recall"),
        "macro_f1": macro("f1"),
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "micro_f1": _f1(micro_p, micro_r),
        "weighted_precision": weighted("precision"),
        "weighted_recall": weighted("recall"),
        "weighted_f1": weighted("f1"),
        "mcc": matthews_corrcoef(y_true, y_pred, k),
        **binary,
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": cm,
    }


def majority_baseline(train_labels: Sequence[int], test_labels: Sequence[int], labels: Sequence[str]) -> dict:
    """The report of always predicting the most frequent train label (lowest id on ties)."""
    counts = [0] * len(labels)
    for t in train_labels:
        counts[t] += 1
    top = max(range(len(labels)), key=lambda i: (counts[i], -i))
    return classification_report(test_labels, [top] * len(test_labels), labels)


# ----------------------------------------------------------------------------------------------
# Official metrics of the GLUE tasks beyond accuracy / F1: Matthews correlation (CoLA), Pearson
# and Spearman correlation and MSE (STS-B and any `task: regression`).
#
# Undefined cases, decided once: MCC is 0 when a row or column sum of the confusion matrix makes
# its denominator 0 (every gold label, or every prediction, the same class), as scikit-learn's
# `matthews_corrcoef` returns. A correlation with a constant input is undefined: `pearson` and
# `spearman` return NaN (as scipy does), and `regression_report` (the JSON-facing dict) reports
# it as 0.0 and names it in `undefined`, because NaN is not valid JSON and a model that predicts
# one value for everything has shown no correlation.


def matthews_corrcoef(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> float:
    """Matthews correlation coefficient, multi-class form (Gorodkin's R_K; for two classes the
    textbook (TP*TN - FP*FN) / sqrt(...)). In [-1, 1]; 0 when undefined (see above)."""
    cm = confusion_matrix(y_true, y_pred, num_labels)
    s = len(y_true)
    c = sum(cm[k][k] for k in range(num_labels))
    t = [sum(cm[k]) for k in range(num_labels)]  # gold counts
    p = [sum(cm[i][k] for i in range(num_labels)) for k in range(num_labels)]  # predicted counts
    cov_tp = c * s - sum(pk * tk for pk, tk in zip(p, t))
    cov_pp = s * s - sum(pk * pk for pk in p)
    cov_tt = s * s - sum(tk * tk for tk in t)
    den = cov_pp * cov_tt
    return cov_tp / den**0.5 if den else 0.0


def _check_pairs(x: Sequence[float], y: Sequence[float]) -> None:
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} items but y has {len(y)}")


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either input is constant or has fewer than 2 items."""
    _check_pairs(x, y)
    n = len(x)
    if n < 2:
        return float("nan")
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    # A constant input's mean need not be exactly its value in floating point ([2.7] * 3), so its
    # spread can come out a hair above 0: test constancy itself.
    if sxx == 0 or syy == 0 or min(x) == max(x) or min(y) == max(y):
        return float("nan")
    # Rounding can push |r| a hair above 1 for perfectly (anti-)correlated data.
    return max(-1.0, min(1.0, sxy / (sxx * syy) ** 0.5))


def average_ranks(x: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span (scipy's 'average')."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # mean of ranks i+1 .. j+1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson of the average ranks (exact with ties)."""
    _check_pairs(x, y)
    return pearson(average_ranks(x), average_ranks(y))


def mean_squared_error(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    _check_pairs(y_true, y_pred)
    if not y_true:
        raise ValueError("mean_squared_error of no items")
    return sum((a - b) ** 2 for a, b in zip(y_true, y_pred)) / len(y_true)


def regression_report(y_true: Sequence[float], y_pred: Sequence[float]) -> dict:
    """Regression metrics as one JSON-ready dict: `n`, `pearson`, `spearman`, `mse`, and
    `undefined` (the correlations that were NaN and are reported as 0.0; empty when none)."""
    out: dict = {"n": len(y_true), "mse": mean_squared_error(y_true, y_pred), "undefined": []}
    for name, fn in (("pearson", pearson), ("spearman", spearman)):
        value = fn(y_true, y_pred)
        if value != value:  # NaN
            out["undefined"].append(name)
            value = 0.0
        out[name] = value
    return out


def binary_f1(y_true: Sequence[int], y_pred: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (MRPC and QQP's official F1); 0 when there is no true positive."""
    _check_pairs(y_true, y_pred)
    tp = sum(1 for t, p in zip(y_true, y_pred) if t == p == positive)
    fp = sum(1 for t, p in zip(y_true, y_pred) if p == positive and t != positive)
    fn = sum(1 for t, p in zip(y_true, y_pred) if t == positive and p != positive)
    return _safe_div(2 * tp, 2 * tp + fp + fn)
