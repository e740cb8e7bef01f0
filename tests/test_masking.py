"""Dynamic masking: counts, 80/10/10, specials untouched, whole words, purity in (seed, epoch, index)."""

import numpy as np
import pytest

from mlmctl.layout import MASK_ID
from mlmctl.masking import (
    IGNORE_INDEX,
    NUM_SPECIAL,
    STREAM_VAL_MASK,
    Masking,
    mask_batch,
    mask_tokens,
    sequence_rng,
)

V = 1000


def seq(T=128, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(NUM_SPECIAL, V, T)
    ids[0], ids[T // 2], ids[-1] = 2, 3, 3  # [CLS] ... [SEP] ... [SEP]
    return ids


def test_count_specials_and_labels():
    ids = seq()
    spec = Masking()
    inp, lab = mask_tokens(ids, spec, V, sequence_rng(1, 0, 7))
    chosen = lab != IGNORE_INDEX
    n_cand = int((ids >= NUM_SPECIAL).sum())
    assert chosen.sum() == round(n_cand * 0.15)
    assert np.array_equal(lab[chosen], ids[chosen])
    assert not chosen[ids < NUM_SPECIAL].any()
    assert np.array_equal(inp[~chosen], ids[~chosen])  # nothing changes outside the chosen positions
    assert inp.dtype == np.int64 and lab.dtype == np.int64


def test_80_10_10_proportions():
    spec = Masking()
    ids = seq(512)
    n_mask = n_rand = n_keep = 0
    for i in range(400):
        inp, lab = mask_tokens(ids, spec, V, sequence_rng(0, 0, i))
        c = lab != IGNORE_INDEX
        n_mask += int((inp[c] == MASK_ID).sum())
        same = inp[c] == ids[c]
        n_keep += int(same.sum())
        n_rand += int((~same & (inp[c] != MASK_ID)).sum())
        assert (inp[c][inp[c] != MASK_ID] >= NUM_SPECIAL).all()  # random tokens are never special
    total = n_mask + n_rand + n_keep
    assert abs(n_mask / total - 0.8) < 0.01
    # a random replacement equal to the original counts as "kept": 1/995 of 10%, within tolerance
    assert abs(n_rand / total - 0.1) < 0.01 and abs(n_keep / total - 0.1) < 0.01


def test_pure_function_of_seed_epoch_index():
    ids = seq()
    spec = Masking()
    a = mask_tokens(ids, spec, V, sequence_rng(3, 1, 42))
    b = mask_tokens(ids, spec, V, sequence_rng(3, 1, 42))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    for other in (sequence_rng(3, 2, 42), sequence_rng(3, 1, 43), sequence_rng(4, 1, 42),
                  sequence_rng(3, 1, 42, STREAM_VAL_MASK)):
        c = mask_tokens(ids, spec, V, other)
        assert not np.array_equal(a[1], c[1])
    # Batching does not matter: the mask of index 42 is the same alone or in any batch position.
    inps, labs = mask_batch([seq(seed=9), ids], [5, 42], epoch=1, seed=3, spec=spec, vocab_size=V)
    assert np.array_equal(labs[1], a[1]) and np.array_equal(inps[1], a[0])


def test_max_predictions_and_short_sequences():
    spec = Masking(max_predictions=5)
    _, lab = mask_tokens(seq(128), spec, V, sequence_rng(0, 0, 0))
    assert (lab != IGNORE_INDEX).sum() == 5
    # A 3-token sentence still gets one prediction; an all-special one gets none.
    _, lab = mask_tokens(np.array([2, 10, 11, 12, 3]), Masking(), V, sequence_rng(0, 0, 0))
    assert (lab != IGNORE_INDEX).sum() == 1
    inp, lab = mask_tokens(np.array([2, 3, 0, 0]), Masking(), V, sequence_rng(0, 0, 0))
    assert (lab == IGNORE_INDEX).all() and np.array_equal(inp, [2, 3, 0, 0])


@pytest.mark.parametrize("index", range(20))
def test_whole_word_masking_masks_whole_words(index):
    rng = np.random.default_rng(index)
    T = 64
    ids = rng.integers(NUM_SPECIAL, V, T)
    ids[0], ids[-1] = 2, 3
    starts = rng.random(T) < 0.4
    starts[0] = starts[1] = True
    spec = Masking(whole_word=True)
    _, lab = mask_tokens(ids, spec, V, sequence_rng(0, 0, index), word_starts=starts)
    chosen = lab != IGNORE_INDEX
    n_target = round(62 * 0.15)
    assert 1 <= chosen.sum() <= n_target
    # every word (run from a start to the next start, inside 1..T-2) is all-in or all-out
    word_id = np.cumsum(starts[1:T - 1])
    for w in np.unique(word_id):
        member = chosen[1:T - 1][word_id == w]
        assert member.all() or not member.any()


def test_whole_word_masks_whole_chinese_words_at_the_configured_rate():
    # A segmented Chinese sequence: words of 1-4 characters, each character its own token.
    rng = np.random.default_rng(0)
    sizes = rng.choice([1, 2, 2, 2, 3, 4], size=400)
    n = int(sizes.sum())
    ids = rng.integers(NUM_SPECIAL, 3000, size=n)
    starts = np.zeros(n, dtype=bool)
    starts[np.cumsum(sizes) - sizes] = True
    word_of = np.cumsum(starts) - 1
    spec = Masking(mask_prob=0.15, whole_word=True)
    total = 0
    for index in range(20):
        inp, lab = mask_tokens(ids, spec, 3000, sequence_rng(7, 0, index), starts)
        masked = np.flatnonzero(lab != IGNORE_INDEX)
        for w in np.unique(word_of[masked]):  # every masked character's whole word is masked
            assert np.all(lab[word_of == w] != IGNORE_INDEX)
        assert len(masked) == round(n * 0.15)  # the configured share, exactly
        again, _ = mask_tokens(ids, spec, 3000, sequence_rng(7, 0, index), starts)
        assert np.array_equal(inp, again)  # a pure function of (seed, epoch, index)
        total += len(masked)
    assert total == 20 * round(n * 0.15)
