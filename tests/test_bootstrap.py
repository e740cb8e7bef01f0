"""Bootstrap intervals: reproducible, cover a known value at about the nominal rate, shrink as
the sample grows, and agree with mlmctl.metrics on the point figures."""

from __future__ import annotations

import numpy as np
import pytest

from mlmctl import bootstrap
from mlmctl.bootstrap import (
    classification_intervals,
    metrics_from_counts,
    paired_classification_difference,
    ratio_intervals,
    resample_counts,
)
from mlmctl.metrics import classification_report


def test_resamples_are_seeded_and_independent_of_the_block_size(monkeypatch):
    a = resample_counts(50, 300, seed=7)
    assert a.shape == (300, 50) and (a.sum(axis=1) == 50).all()
    assert np.array_equal(a, resample_counts(50, 300, seed=7))
    assert not np.array_equal(a, resample_counts(50, 300, seed=8))
    monkeypatch.setattr(bootstrap, "_CELLS_PER_BLOCK", 50 * 7)  # blocks of 7 resamples
    assert np.array_equal(a, resample_counts(50, 300, seed=7))


def test_intervals_cover_the_true_value_at_about_the_nominal_rate():
    # 400 synthetic samples of 150 Bernoulli(0.3) draws: the 95% interval of the mean should
    # contain 0.3 in about 95% of them (percentile intervals run a little short at small n).
    rng = np.random.default_rng(0)
    hits = 0
    trials = 400
    for t in range(trials):
        x = (rng.random(150) < 0.3).astype(float)
        lo, hi = ratio_intervals({"acc": x}, np.ones_like(x), resamples=1000, seed=t)["acc"]
        hits += lo <= 0.3 <= hi
    assert 0.91 <= hits / trials <= 0.98, hits / trials


def test_perplexity_interval_covers_the_true_value():
    # Documents of varying length whose tokens have NLL ~ Exp(mean 5): true ppl = e^5.
    rng = np.random.default_rng(1)
    hits = 0
    for t in range(200):
        lengths = rng.integers(5, 60, size=80)
        sums = np.array([rng.exponential(5.0, n).sum() for n in lengths])
        lo, hi = ratio_intervals({"nll": sums}, lengths, resamples=1000, seed=t, transform={"nll": "exp"})["nll"]
        hits += lo <= np.exp(5.0) <= hi
    assert 0.90 <= hits / 200 <= 0.99, hits / 200


def test_intervals_shrink_as_the_sample_grows():
    rng = np.random.default_rng(2)
    widths = []
    for n in (100, 400, 1600):
        x = (rng.random(n) < 0.6).astype(float)
        lo, hi = ratio_intervals({"acc": x}, np.ones(n), resamples=2000, seed=0)["acc"]
        widths.append(hi - lo)
    # Width ~ 1 / sqrt(n): each 4x more data about halves it.
    assert 1.6 < widths[0] / widths[1] < 2.5 and 1.6 < widths[1] / widths[2] < 2.5, widths


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_metrics_equal_classification_report(seed):
    rng = np.random.default_rng(seed)
    k = 4
    gold = rng.integers(0, k - 1, size=60)  # label 3 is never gold: only sometimes predicted
    pred = np.where(rng.random(60) < 0.6, gold, rng.integers(0, k, size=60))
    want = classification_report(gold.tolist(), pred.tolist(), list("abcd"))
    got = metrics_from_counts(*bootstrap._class_counts(np.ones((1, 60)), gold, pred, k))
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "micro_f1", "weighted_precision",
                "weighted_recall", "weighted_f1"):
        assert got[key][0] == pytest.approx(want[key], abs=1e-12), key
    assert got["per_class_f1"][0].tolist() == pytest.approx([want["per_class"][c]["f1"] for c in "abcd"])


def test_classification_intervals_bracket_the_point_figures():
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 3, size=300)
    pred = np.where(rng.random(300) < 0.7, gold, rng.integers(0, 3, size=300))
    rep = classification_report(gold.tolist(), pred.tolist(), ["x", "y", "z"])
    cis = classification_intervals(gold, pred, 3, resamples=1000, seed=0)
    assert cis == classification_intervals(gold, pred, 3, resamples=1000, seed=0)
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall"):
        lo, hi = cis[key]
        assert lo < rep[key] < hi and hi - lo < 0.2, key
    lo, hi = cis["per_class"][1]["f1"]
    assert lo < rep["per_class"]["y"]["f1"] < hi


def test_paired_difference():
    rng = np.random.default_rng(4)
    gold = rng.integers(0, 2, size=400)
    good = np.where(rng.random(400) < 0.9, gold, 1 - gold)
    bad = np.where(rng.random(400) < 0.7, gold, 1 - gold)
    same = paired_classification_difference(gold, good, good, 2, resamples=1000, seed=0)["accuracy"]
    assert same["diff"] == 0 and same["ci"] == (0.0, 0.0) and not same["significant"]
    d = paired_classification_difference(gold, good, bad, 2, resamples=1000, seed=0)
    acc = d["accuracy"]
    assert acc["diff"] == pytest.approx(np.mean(good == gold) - np.mean(bad == gold))
    assert acc["significant"] and 0 < acc["ci"][0] < acc["diff"] < acc["ci"][1]
    assert d["macro_f1"]["significant"] and acc["p_not_better"] < 0.01
    # One flipped prediction is well inside the noise.
    near = good.copy()
    near[0] = 1 - near[0]
    assert not paired_classification_difference(gold, good, near, 2, 1000, 0)["accuracy"]["significant"]
