"""The bag-of-words baseline (mlmctl/baseline.py) on generated toy tasks: it learns what is
learnable, beats the majority class, is deterministic, and stops at the optimum of its stated
objective (gradient ~ 0)."""

import random

import pytest

from mlmctl.baseline import BowBaseline, baseline_report
from mlmctl.labelled import LabelledData
from mlmctl.metrics import majority_baseline, spearman

torch = pytest.importorskip("torch")

NOISE = "the a of and to in is it that was for on are with as his they be at one have this from".split()
CUES = {0: ["football", "goal", "match"], 1: ["election", "vote", "party"], 2: ["piano", "concert", "song"]}


def _task(n, seed, weights=(0.5, 0.3, 0.2)):
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        y = rng.choices(range(3), weights)[0]
        words = rng.choices(NOISE, k=8) + [rng.choice(CUES[y])]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(str(y))
    return LabelledData("toy.tsv", texts, None, labels)


def test_beats_majority_and_is_deterministic():
    train, test = _task(150, 0), _task(100, 1)
    labels = ["0", "1", "2"]
    rep = baseline_report(train, test, labels)
    ids = {lab: i for i, lab in enumerate(labels)}
    majority = majority_baseline([ids[x] for x in train.labels], [ids[x] for x in test.labels], labels)
    assert rep["accuracy"] > 0.9 > majority["accuracy"] + 0.3
    again = baseline_report(train, test, labels)
    assert again == rep
    a = BowBaseline().fit(train.texts, [ids[x] for x in train.labels], num_labels=3)
    b = BowBaseline().fit(train.texts, [ids[x] for x in train.labels], num_labels=3)
    assert torch.equal(a.W, b.W)


def test_reaches_the_optimum_of_its_objective():
    train = _task(80, 2)
    bow = BowBaseline().fit(train.texts, [int(x) for x in train.labels], num_labels=3)
    X = bow._matrix(bow._docs(train.texts, None))
    loss = bow._objective(X, torch.tensor([int(x) for x in train.labels]), len(train.texts))
    gw, gb = torch.autograd.grad(loss, [bow.W, bow.b])
    assert gw.abs().max() < 1e-5 and gb.abs().max() < 1e-5


def test_pairs_get_their_own_features_and_regression():
    # label = which cue sits in the *second* text: only pair-aware features can tell
    rng = random.Random(3)
    texts, pairs, ys, scores = [], [], [], []
    for _ in range(120):
        y = rng.randrange(2)
        other = rng.choice(CUES[1 - y])
        texts.append(" ".join(rng.choices(NOISE, k=4) + [other]))
        pairs.append(" ".join(rng.choices(NOISE, k=4) + [rng.choice(CUES[y])]))
        ys.append(y)
        scores.append(float(y) * 4 + 0.5)
    bow = BowBaseline().fit(texts[:80], ys[:80], pairs[:80], num_labels=2)
    pred = bow.predict(texts[80:], pairs[80:])
    assert sum(p == t for p, t in zip(pred, ys[80:])) / 40 > 0.9
    reg = BowBaseline().fit(texts[:80], scores[:80], pairs[:80])
    assert spearman(reg.predict(texts[80:], pairs[80:]), scores[80:]) > 0.8
    with pytest.raises(ValueError):
        BowBaseline().fit(["a"], [0, 1], num_labels=2)
