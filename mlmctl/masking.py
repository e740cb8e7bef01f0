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

`Masking` is also the config type of these settings (pretrain's `masking:` group, eval's
`mask_prob`/`mask_token_prob`), so numpy is imported inside the functions: loading a config
must not pull it in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlmctl.config import check
from mlmctl.layout import MASK_ID, SPECIAL_TOKENS

if TYPE_CHECKING:
    import numpy as np

NUM_SPECIAL = len(SPECIAL_TOKENS)
IGNORE_INDEX = -100

# Distinct stream tags so that training masks, validation masks and data order never share a stream.
STREAM_TRAIN_MASK = 0x4D41534B  # "MASK"
STREAM_VAL_MASK = 0x56414C4D  # "VALM"


@dataclass(frozen=True)
class Masking:
    """Dynamic masking (new masks every epoch, reproducible from the seed)."""

    mask_prob: float = 0.15
    """Fraction of the non-special tokens of a sequence chosen for prediction."""
    mask_token_prob: float = 0.8
    """Of the chosen tokens, the fraction replaced by [MASK]."""
    random_token_prob: float = 0.1
    """Of the chosen tokens, the fraction replaced by a random token (the rest stay unchanged)."""
    whole_word: bool = False
    """Choose whole words (all sub-word pieces of a word together)."""
    max_predictions: int | None = None
    """Upper bound on chosen tokens per sequence (BERT's max_predictions_per_seq); null = no bound."""

    def __post_init__(self) -> None:
        check(0.0 < self.mask_prob < 1.0, "mask_prob", f"must be in (0, 1), got {self.mask_prob}")
        check(0.0 <= self.mask_token_prob <= 1.0, "mask_token_prob", "must be in [0, 1]")
        check(0.0 <= self.random_token_prob <= 1.0 - self.mask_token_prob, "random_token_prob",
              f"must be in [0, 1 - mask_token_prob] = [0, {1.0 - self.mask_token_prob:g}]")
        check(self.max_predictions is None or self.max_predictions >= 1, "max_predictions", "must be >= 1 or null")


def sequence_rng(seed: int, epoch: int, index: int, stream: int = STREAM_TRAIN_MASK) -> np.random.Generator:
    """The generator of one sequence: a pure function of its arguments (Philox, counter-based)."""
    import numpy as np

    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, stream, epoch, index])))


def mask_tokens(ids: np.ndarray, spec: Masking, vocab_size: int, rng: np.random.Generator,
                word_starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mask one sequence (random tokens are drawn from the non-special ids below vocab_size).
    Returns (input_ids int64, labels int64), both of len(ids)."""
    import numpy as np

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
        inputs[to_random] = rng.integers(NUM_SPECIAL, vocab_size, size=to_random.size)
    return inputs, labels


def _choose_words(cand: np.ndarray, word_starts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    import numpy as np

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


def mask_batch(seqs: list[np.ndarray], indices: list[int], epoch: int, seed: int, spec: Masking, vocab_size: int,
               word_starts: list[np.ndarray] | None = None, stream: int = STREAM_TRAIN_MASK):
    """Mask each sequence with its own generator (seed, epoch, index). Returns lists of arrays."""
    out_inputs, out_labels = [], []
    for j, (seq, idx) in enumerate(zip(seqs, indices)):
        ws = word_starts[j] if word_starts is not None else None
        inp, lab = mask_tokens(seq, spec, vocab_size, sequence_rng(seed, epoch, idx, stream), ws)
        out_inputs.append(inp)
        out_labels.append(lab)
    return out_inputs, out_labels
