"""Classification metrics against values computed by hand."""

from fractions import Fraction as F

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlmctl.metrics import classification_report, confusion_matrix, majority_baseline

LABELS = ["a", "b", "c", "d", "e"]
# c is never predicted; d is predicted once but has no gold example; e occurs nowhere.
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 0]
Y_PRED = [0, 0, 1, 1, 0, 1, 1, 3]


def approx(x):
    return pytest.approx(float(x), abs=1e-12)


def test_confusion_matrix_rows_are_gold():
    assert confusion_matrix(Y_TRUE, Y_PRED, 5) == [
        [2, 1, 0, 1, 0],
        [1, 1, 0, 0, 0],
        [0, 2, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]


def test_report_by_hand():
    r = classification_report(Y_TRUE, Y_PRED, LABELS)
    assert r["n"] == 8
    assert r["accuracy"] == approx(F(3, 8))
    pc = r["per_class"]
    assert pc["a"]["precision"] == approx(F(2, 3))
    assert pc["a"]["recall"] == approx(F(1, 2))
    assert pc["a"]["f1"] == approx(F(4, 7))
    assert pc["b"]["precision"] == approx(F(1, 4))
    assert pc["b"]["recall"] == approx(F(1, 2))
    assert pc["b"]["f1"] == approx(F(1, 3))
    # Never predicted: precision 0 by convention, recall 0 because nothing was right.
    assert (pc["c"]["precision"], pc["c"]["recall"], pc["c"]["f1"]) == (0.0, 0.0, 0.0)
    assert pc["c"]["support"] == 2 and pc["c"]["predicted"] == 0 and pc["c"]["present"]
    # Absent from the gold labels but predicted: counts in the macro average (a real mistake).
    assert (pc["d"]["precision"], pc["d"]["recall"], pc["d"]["support"]) == (0.0, 0.0, 0)
    assert pc["d"]["present"]
    # Absent everywhere: reported, excluded from the macro average.
    assert pc["e"]["support"] == 0 and not pc["e"]["present"]

    assert r["macro_precision"] == approx(F(11, 48))
    assert r["macro_recall"] == approx(F(1, 4))
    assert r["macro_f1"] == approx(F(19, 84))
    assert r["weighted_precision"] == approx(F(19, 48))
    assert r["weighted_recall"] == approx(F(3, 8))
    assert r["weighted_f1"] == approx(F(31, 84))
    assert r["micro_precision"] == r["micro_recall"] == r["micro_f1"] == approx(F(3, 8))
    assert r["labels"] == LABELS


def test_perfect_and_empty():
    r = classification_report([0, 1, 1], [0, 1, 1], ["x", "y"])
    assert r["accuracy"] == r["macro_f1"] == r["weighted_f1"] == 1.0
    e = classification_report([], [], ["x", "y"])
    assert e["accuracy"] == 0.0 and e["macro_f1"] == 0.0 and e["n"] == 0


def test_majority_baseline_uses_train_counts():
    # Train majority is "y" even though the test set is mostly "x".
    r = majority_baseline([1, 1, 0], [0, 0, 0, 1], ["x", "y"])
    assert r["accuracy"] == approx(F(1, 4))
    assert r["per_class"]["y"]["predicted"] == 4
    assert r["macro_f1"] == approx(F(1, 2) * F(2 * F(1, 4), F(5, 4)))


def test_mismatched_lengths_and_bad_ids():
    with pytest.raises(ValueError):
        confusion_matrix([0], [0, 1], 2)
    with pytest.raises(ValueError):
        confusion_matrix([0], [2], 2)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 6).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60))))
def test_identities_hold_for_any_predictions(case):
    k, pairs = case
    y_true, y_pred = [t for t, _ in pairs], [p for _, p in pairs]
    r = classification_report(y_true, y_pred, [f"l{i}" for i in range(k)])
    assert sum(map(sum, r["confusion_matrix"])) == len(pairs)
    assert sum(pc["support"] for pc in r["per_class"].values()) == len(pairs)
    # Single-label: micro-F1 and support-weighted recall are both exactly the accuracy.
    assert r["micro_f1"] == pytest.approx(r["accuracy"])
    assert r["weighted_recall"] == pytest.approx(r["accuracy"])
    present = [pc["f1"] for pc in r["per_class"].values() if pc["present"]]
    assert min(present) - 1e-12 <= r["macro_f1"] <= max(present) + 1e-12
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall"):
        assert 0.0 <= r[key] <= 1.0
