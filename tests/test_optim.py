"""The warmup-stable-decay learning-rate schedule (`lr_at(decay="wsd")`)."""

from __future__ import annotations

import math

import pytest

from mlmctl.optim import lr_at

KW = dict(lr=1.0, warmup_steps=10, total_steps=110, decay="wsd", min_lr_ratio=0.1)


@pytest.mark.parametrize("shape", ["1-sqrt", "linear"])
def test_wsd_warms_up_holds_then_decays_to_the_floor(shape):
    lrs = [lr_at(s, decay_shape=shape, decay_fraction=0.2, **KW) for s in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(x == 1.0 for x in lrs[10:88])  # stable until the last 20% of 110 steps (22)
    assert lrs[88] == 1.0 and lrs[89] < 1.0
    assert all(a >= b for a, b in zip(lrs[88:], lrs[89:]))  # monotone decay
    assert lrs[110] == pytest.approx(0.1)


def test_wsd_shapes():
    mid = 88 + 11  # half-way through the decay
    assert lr_at(mid, decay_shape="linear", **KW) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(mid, decay_shape="1-sqrt", **KW) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(0.5)))


def test_wsd_decay_never_eats_the_warmup():
    kw = {**KW, "total_steps": 12}
    assert lr_at(9, decay_fraction=1.0, **kw) == pytest.approx(1.0)  # still warming up
    assert lr_at(10, decay_fraction=1.0, **kw) == pytest.approx(1.0)  # decay starts after warm-up
    assert lr_at(12, decay_fraction=1.0, **kw) == pytest.approx(0.1)


@pytest.mark.parametrize("kw, match", [({"decay_shape": "cosine"}, "decay_shape"),
                                       ({"decay_fraction": 0.0}, "decay_fraction"),
                                       ({"decay_fraction": 1.5}, "decay_fraction")])
def test_wsd_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        lr_at(50, **KW, **kw)
