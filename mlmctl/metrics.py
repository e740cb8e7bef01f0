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

# The metric names a config may pick for "best checkpoint" / early stopping.
METRIC_NAMES = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall")


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
    `weighted_recall`, `weighted_f1`, `per_class` (label -> precision, recall,
    f1, support, predicted, present), `labels`, `confusion_matrix`.
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
