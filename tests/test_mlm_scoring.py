"""MLM scoring: a model that copies its input looks good under 80/10/10 and is exposed by the
leak-free headline; pseudo-perplexity batches copies of several sequences without changing them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlmctl.layout import MASK_ID
from mlmctl.masking import Masking
from mlmctl.mlm_scoring import KIND_KEEP, KIND_MASK, KIND_RANDOM, pseudo_nll, score_masked
from mlmctl.model import BertForPreTraining, ModelConfig

V = 300


class CopyModel(torch.nn.Module):
    """Knows nothing but its input: logit `a` for the token it is shown (uniform at [MASK]).
    Same interface as BertForPreTraining: with labels, logits at the labelled positions only."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.a * F.one_hot(input_ids, V).float()  # (B, T, V)
        logits[input_ids == MASK_ID] = 0.0  # nothing to copy: chance
        return (logits if labels is None else logits[labels != -100]), None


def _seqs(n=60, T=64, seed=0):
    rng = np.random.default_rng(seed)
    return [np.concatenate([[2], rng.integers(5, V, size=T - 2), [3]]).astype(np.int64) for _ in range(n)]


def _score(model, seqs):
    return score_masked(model, seqs, Masking(), V, seed=0, pad_id=0, batch_size=16, device="cpu")


def test_a_copying_model_is_exposed_by_the_leak_free_figure():
    sc = _score(CopyModel(a=30.0), _seqs())
    kind = sc.kind_801010
    assert (kind == KIND_KEEP).sum() > 30 and (kind == KIND_RANDOM).sum() > 30 and (kind == KIND_MASK).sum() > 350
    # 80/10/10 "keep" positions show the answer: a near-zero loss there.
    assert sc.nll_801010[kind == KIND_KEEP].max() < 1e-6
    # [MASK] positions: no better than chance, in both variants.
    assert sc.nll_801010[kind == KIND_MASK] == pytest.approx(math.log(V), rel=1e-5)
    # The headline (every chosen position [MASK]) says it plainly: chance perplexity, 0% top-1
    # beyond luck.
    assert math.exp(sc.nll.mean()) == pytest.approx(V, rel=1e-4)
    assert sc.top1.mean() < 0.02


def test_the_801010_figure_flatters_a_copying_model():
    # Copying with p(input) = 1/2 is the best a copier can do on the keep + random positions.
    sc = _score(CopyModel(a=math.log(V - 1)), _seqs())
    leak_free, leaky = math.exp(sc.nll.mean()), math.exp(sc.nll_801010.mean())
    assert leak_free == pytest.approx(V, rel=1e-4)
    assert leaky < 0.75 * V  # looks like it learnt something; it did not


def test_same_positions_and_targets_in_both_variants():
    seqs = _seqs(10)
    sc = _score(CopyModel(a=5.0), seqs)
    for i, s in enumerate(seqs):
        t = sc.target[sc.seq == i]
        assert len(t) == round((len(s) - 2) * 0.15) and set(t) <= set(s[1:-1])


def test_pseudo_nll_batches_copies_without_changing_the_numbers():
    torch.manual_seed(0)
    model = BertForPreTraining(ModelConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=64, max_position_embeddings=64)).eval()
    seqs = [s[:n] for s, n in zip(_seqs(5, 40, seed=1), (40, 7, 23, 3, 31))]
    for s in seqs:
        s[-1] = 3
    nll_a, cnt = pseudo_nll(model, seqs, MASK_ID, 0, batch_size=64, device="cpu")  # rows of 3-4 sequences mixed
    nll_b, _ = pseudo_nll(model, seqs, MASK_ID, 0, batch_size=1, device="cpu")  # one row at a time
    assert cnt.tolist() == [38, 5, 21, 1, 29]
    assert np.allclose(nll_a, nll_b, rtol=1e-4)
    # By hand for one sequence: mask each position in turn, one forward pass each.
    s = torch.from_numpy(seqs[1])
    by_hand = 0.0
    for p in range(1, len(s) - 1):
        ids = s.clone()
        ids[p] = MASK_ID
        with torch.no_grad():
            logits, _ = model(ids[None])  # (1, T, V)
        by_hand -= float(F.log_softmax(logits[0, p], -1)[s[p]])
    assert nll_a[1] == pytest.approx(by_hand, rel=1e-4)
