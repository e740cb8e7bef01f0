"""Masked-LM masking as pure functions of (seed, epoch, sequence index).

Dynamic masking (RoBERTa) without any state: the random generator of a sequence is seeded
from (seed, epoch, index), so the mask is different every epoch, identical on every rerun, the
same whatever the rank or the batch a sequence lands in, and nothing needs saving for resume.

The selection follows Google BERT's `create_pretraining_data.py`:
- candidates are all non-special tokens (ids >= `NUM_SPECIAL`: never [PAD] [UNK] [CLS] [SEP] [MASK]);
- exactly `min(max_predictions, max(1, round(n_candidates * mask_prob)))` tokens are chosen
  (not a Bernoulli draw per token, so short sequences are not left without predictions);
- with whole-word masking, whole words (a word-start token and the continuation tokens after
  it) are chosen in random order, skipping a word that would overflow the count;
- each chosen token becomes [MASK] with probability `mask_token_prob` (0.8), a random
  non-special token with `random_token_prob` (0.1), and stays as it is otherwise; its label is
  the original id. Labels are -100 everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlmctl.layout import MASK_ID, SPECIAL_TOKENS

NUM_SPECIAL = len(SPECIAL_TOKENS)
IGNORE_INDEX = -100

# Distinct stream tags so that training masks, validation masks and data order never share a stream.
STREAM_TRAIN_MASK = 0x4D41534B  # "MASK"
STREAM_VAL_MASK = 0x56414C4D  # "VALM"


@dataclass(frozen=True)
class MaskSpec:
    """How to mask; the pretrain config's `masking` section maps onto it."""

    vocab_size: int
    mask_prob: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    max_predictions: int | None = None
    whole_word: bool = False


def sequence_rng(seed: int, epoch: int, index: int, stream: int = STREAM_TRAIN_MASK) -> np.random.Generator:
    """The generator of one sequence: a pure function of its arguments (Philox, counter-based)."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, stream, epoch, index])))


def mask_tokens(ids: np.ndarray, spec: MaskSpec, rng: np.random.Generator,
                word_starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mask one sequence. Returns (input_ids int64, labels int64), both of len(ids)."""
    ids = np.asarray(ids, dtype=np.int64)
    inputs = ids.copy()
    labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
    cand = np.flatnonzero(ids >= NUM_SPECIAL)
    if cand.size == 0:
        return inputs, labels
    n = max(1, int(round(cand.size * spec.mask_prob)))
    if spec.max_predictions is not None:
        n = min(n, spec.max_predictions)
    if spec.whole_word and word_starts is not None:
        chosen = _choose_words(cand, np.asarray(word_starts, dtype=bool), n, rng)
    else:
        chosen = np.sort(rng.permutation(cand)[:n])
    labels[chosen] = ids[chosen]
    r = rng.random(chosen.size)
    to_mask = chosen[r < spec.mask_token_prob]
    to_random = chosen[(r >= spec.mask_token_prob) & (r < spec.mask_token_prob + spec.random_token_prob)]
    inputs[to_mask] = MASK_ID
    if to_random.size:
        inputs[to_random] = rng.integers(NUM_SPECIAL, spec.vocab_size, size=to_random.size)
    return inputs, labels


def _choose_words(cand: np.ndarray, word_starts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    # Group candidate positions into words: a new word begins at a word-start token or after a
    # gap (a special token between two candidates ends the word too).
    starts = word_starts[cand].copy()
    starts[0] = True
    starts[1:] |= np.diff(cand) != 1
    bounds = np.flatnonzero(starts)
    ends = np.append(bounds[1:], cand.size)
    chosen, total = [], 0
    for w in rng.permutation(bounds.size):
        size = ends[w] - bounds[w]
        if total + size > n:
            continue  # as BERT: skip a word that does not fit, try the (shorter) next ones
        chosen.append(cand[bounds[w]:ends[w]])
        total += size
        if total == n:
            break
    if not chosen:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen))


def mask_batch(seqs: list[np.ndarray], indices: list[int], epoch: int, seed: int, spec: MaskSpec,
               word_starts: list[np.ndarray] | None = None, stream: int = STREAM_TRAIN_MASK):
    """Mask each sequence with its own generator (seed, epoch, index). Returns lists of arrays."""
    out_inputs, out_labels = [], []
    for j, (seq, idx) in enumerate(zip(seqs, indices)):
        ws = word_starts[j] if word_starts is not None else None
        inp, lab = mask_tokens(seq, spec, sequence_rng(seed, epoch, idx, stream), ws)
        out_inputs.append(inp)
        out_labels.append(lab)
    return out_inputs, out_labels
