"""The metrics `metric:` can choose and eval reports: MCC and positive-class F1 in the classifier
report and in the vectorised bootstrap, regression intervals equal to recomputing each resample,
and `metric: auto` / task checks."""

from __future__ import annotations

import numpy as np
import pytest

from mlmctl import bootstrap
from mlmctl.metrics import (binary_f1, classification_report, matthews_corrcoef, metric_for, pearson,
                            spearman)


def test_report_has_mcc_and_positive_class_f1_for_binary():
    # Hand-computed: tp=2 (b), tn=3, fp=1, fn=1 -> MCC = (2*3 - 1*1) / sqrt(3*3*4*4) = 5/12.
    gold, pred = [1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0, 0]
    rep = classification_report(gold, pred, ["a", "b"])
    assert rep["mcc"] == pytest.approx(5 / 12)
    assert rep["f1"] == pytest.approx(2 / 3) == binary_f1(gold, pred) and rep["positive_label"] == "b"
    three = classification_report([0, 1, 2], [0, 1, 1], ["a", "b", "c"])
    assert "f1" not in three and three["mcc"] == pytest.approx(matthews_corrcoef([0, 1, 2], [0, 1, 1], 3))


@pytest.mark.parametrize("k", [2, 3])
def test_vectorised_mcc_and_f1_equal_the_report(k):
    rng = np.random.default_rng(k)
    gold = rng.integers(0, k, size=80)
    pred = np.where(rng.random(80) < 0.6, gold, rng.integers(0, k, size=80))
    want = classification_report(gold.tolist(), pred.tolist(), list("abc"[:k]))
    got = bootstrap.metrics_from_counts(*bootstrap._class_counts(np.ones((1, 80)), gold, pred, k))
    assert got["mcc"][0] == pytest.approx(want["mcc"], abs=1e-12)
    assert ("f1" in got) == (k == 2) and (k == 3 or got["f1"][0] == pytest.approx(want["f1"]))


def test_regression_resamples_equal_recomputing_them():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 40).astype(float)  # many ties: the ranks must average them per resample
    y = x + rng.normal(size=40)
    w = bootstrap.resample_counts(40, 6, seed=1).astype(float)
    r = bootstrap._weighted_pearson(w, x, y)
    s = bootstrap._weighted_pearson(w, bootstrap._weighted_ranks(w, x), bootstrap._weighted_ranks(w, y))
    for i in range(6):
        idx = np.repeat(np.arange(40), w[i].astype(int))
        assert r[i] == pytest.approx(pearson(x[idx].tolist(), y[idx].tolist()), abs=1e-12)
        assert s[i] == pytest.approx(spearman(x[idx].tolist(), y[idx].tolist()), abs=1e-12)
    cis = bootstrap.regression_intervals(x, y, 500, seed=0)
    assert cis == bootstrap.regression_intervals(x, y, 500, seed=0)
    assert cis["pearson"][0] < pearson(x.tolist(), y.tolist()) < cis["pearson"][1]
    assert cis["spearman"][0] < spearman(x.tolist(), y.tolist()) < cis["spearman"][1]
    # A constant prediction: correlation undefined in every resample, MSE still has its interval.
    flat = bootstrap.regression_intervals(x, np.full(40, 2.0), 200, seed=0)
    assert np.isnan(flat["pearson"][0]) and flat["mse"][0] < flat["mse"][1]


def test_metric_for_the_task():
    assert metric_for("classification", "auto") == "macro_f1"
    assert metric_for("regression", "auto") == "pearson"
    assert metric_for("token-classification", "auto") == "entity_f1"
    assert metric_for("classification", "mcc") == "mcc"
    with pytest.raises(ValueError, match="`pearson` is not a classification metric"):
        metric_for("classification", "pearson")
