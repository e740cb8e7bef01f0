"""Matthews correlation, Pearson, Spearman, MSE and binary F1 (mlmctl/metrics.py) against
hand-computed values and definitions written out independently here."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlmctl.metrics import (
    average_ranks,
    binary_f1,
    matthews_corrcoef,
    mean_squared_error,
    pearson,
    regression_report,
    spearman,
)


def _mcc_by_covariance(y_true, y_pred, k):
    """MCC from its definition: correlation of the one-hot gold and predicted matrices."""
    n = len(y_true)
    X = [[float(t == c) for c in range(k)] for t in y_true]
    Y = [[float(p == c) for c in range(k)] for p in y_pred]

    def cov(A, B):
        total = 0.0
        for c in range(k):
            ma, mb = sum(r[c] for r in A) / n, sum(r[c] for r in B) / n
            total += sum((a[c] - ma) * (b[c] - mb) for a, b in zip(A, B))
        return total

    den = cov(X, X) * cov(Y, Y)
    return cov(X, Y) / math.sqrt(den) if den else 0.0


def test_mcc_hand_computed():
    # TP=2 TN=2 FP=1 FN=1: (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3
    assert matthews_corrcoef([1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 1], 2) == pytest.approx(1 / 3)
    # scikit-learn's documented example: -0.33...
    assert matthews_corrcoef([1, 1, 1, 0], [1, 0, 1, 1], 2) == pytest.approx(-1 / 3)
    assert matthews_corrcoef([0, 1, 2, 0], [0, 1, 2, 0], 3) == pytest.approx(1.0)
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0], 2) == pytest.approx(-1.0)


def test_mcc_undefined_is_zero():
    assert matthews_corrcoef([0, 1, 0, 1], [1, 1, 1, 1], 2) == 0.0  # constant prediction
    assert matthews_corrcoef([1, 1, 1], [0, 1, 0], 2) == 0.0  # constant gold


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 4).flatmap(
    lambda k: st.tuples(st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1,
                                             max_size=30))))
def test_mcc_equals_definition(case):
    k, pairs = case
    t, p = [a for a, _ in pairs], [b for _, b in pairs]
    assert matthews_corrcoef(t, p, k) == pytest.approx(_mcc_by_covariance(t, p, k), abs=1e-9)


def test_pearson_and_spearman_hand_computed():
    # dx = (-2..2), dy = (-2,0,1,0,1): 6 / sqrt(10 * 6)
    assert pearson([1, 2, 3, 4, 5], [2, 4, 5, 4, 5]) == pytest.approx(6 / math.sqrt(60))
    # ties: ranks x = 1, 2.5, 2.5, 4; y = 1, 3, 2, 4 -> 4.5 / sqrt(4.5 * 5)
    assert average_ranks([1, 2, 2, 3]) == [1, 2.5, 2.5, 4]
    assert average_ranks([5, 5, 5]) == [2, 2, 2]
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # monotone, not linear
    assert pearson([1, 2, 3, 4], [1, 8, 27, 64]) < 0.99


def test_constant_input_is_nan_and_reported_as_zero_with_flag():
    assert math.isnan(pearson([1, 2, 3], [2, 2, 2]))
    assert math.isnan(pearson([1, 2, 3], [2.7] * 3))  # its float mean is 2.7000000000000006
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    rep = regression_report([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert rep["pearson"] == 0.0 and rep["spearman"] == 0.0
    assert rep["undefined"] == ["pearson", "spearman"]
    assert rep["mse"] == pytest.approx(2 / 3)
    ok = regression_report([1.0, 2.0, 3.0], [1.5, 2.0, 3.5])
    assert ok["undefined"] == [] and ok["pearson"] > 0.9 and ok["n"] == 3


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.integers(-5, 5)), min_size=3, max_size=25))
def test_spearman_properties(pairs):
    x, y = [float(a) for a, _ in pairs], [float(b) for _, b in pairs]
    r = spearman(x, y)
    if len(set(x)) < 2 or len(set(y)) < 2:
        assert math.isnan(r)
        return
    assert -1.0 <= r <= 1.0
    # invariant under a strictly increasing transform; flips sign under a decreasing one
    assert spearman([a**3 + 7 for a in x], y) == pytest.approx(r, abs=1e-9)
    assert spearman([-a for a in x], y) == pytest.approx(-r, abs=1e-9)
    assert spearman(x, x) == pytest.approx(1.0)


def test_mse_and_binary_f1():
    assert mean_squared_error([0.0, 1.0, 2.0], [1.0, 1.0, 4.0]) == pytest.approx(5 / 3)
    with pytest.raises(ValueError):
        mean_squared_error([], [])
    # TP=2 FP=1 FN=1 -> 4 / 6
    assert binary_f1([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(2 / 3)
    assert binary_f1([0, 0], [0, 0]) == 0.0
