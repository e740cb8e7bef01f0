"""Scoring a masked-LM at chosen positions: the leak-free and the 80/10/10 figures, top-k accuracy,
and pseudo-log-likelihoods. Shared by eval and pretrain's validation so that both report the
same numbers the same way.

Why two masked figures. Pretraining replaces 10% of the chosen tokens by a random token and
leaves 10% unchanged, and scores all of them. On an unchanged ("keep") position the input shows
the answer, so a model that copies its input scores a near-zero loss there: the 80/10/10
perplexity mixes prediction with copying. The leak-free figure replaces *every* chosen position
by [MASK] (same positions, same seed: `leak_free(spec)` only changes the replacement, and
`mask_tokens` draws the positions before the replacements), so it measures prediction only.

    spec = Masking()                                          # 80/10/10, as pretraining
    s = score_masked(model, seqs, spec, V, seed=0, pad_id=0, batch_size=64, device="cpu")
    s.nll, s.top1, s.top5        # leak-free, one entry per chosen position (row-major order)
    s.nll_801010, s.kind_801010  # the same positions with 80/10/10; kind 0 mask, 1 random, 2 keep
    s.seq, s.target              # which sequence each position is in, and its true token
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from mlmctl.layout import MASK_ID
from mlmctl.masking import IGNORE_INDEX, STREAM_VAL_MASK, Masking, mask_tokens, sequence_rng

TOP_K = 5
KIND_MASK, KIND_RANDOM, KIND_KEEP = 0, 1, 2


def leak_free(spec: Masking) -> Masking:
    """The same choice of positions, every one replaced by [MASK]."""
    return replace(spec, mask_token_prob=1.0, random_token_prob=0.0)


def position_scores(logits: torch.Tensor, targets: torch.Tensor, k: int = TOP_K):
    """Per position: NLL (nats), target is top-1, target is in the top k. logits (N, V), targets (N,)."""
    logits = logits.float()
    nll = F.cross_entropy(logits, targets, reduction="none")  # (N,)
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices  # (N, k)
    hit = top == targets[:, None]  # (N, k)
    return nll, hit[:, 0], hit.any(dim=-1)


@dataclass
class MaskedScores:
    """One entry per chosen position, in (sequence, position) order."""

    seq: np.ndarray
    target: np.ndarray
    nll: np.ndarray
    top1: np.ndarray
    top5: np.ndarray
    nll_801010: np.ndarray
    kind_801010: np.ndarray


def _batch(rows: list[np.ndarray], pad_id: int):
    """Pad masked rows into (ids, attention_mask) int64 tensors (B, T)."""
    T = max(len(x) for x in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), T), dtype=torch.long)
    for j, x in enumerate(rows):
        ids[j, :len(x)] = torch.from_numpy(x)
        att[j, :len(x)] = 1
    return ids, att


def _forward(model, ids, att, labels, device):
    """The model's MLM logits at the labelled positions, (N, V), row-major."""
    logits, _ = model(ids.to(device), attention_mask=att.to(device), labels=labels.to(device))
    return logits


def score_masked(model, seqs: list[np.ndarray], spec: Masking, vocab_size: int, seed: int, pad_id: int,
                 batch_size: int, device) -> MaskedScores:
    """Mask sequence i with the validation stream of (seed, i) and score the leak-free and the
    80/10/10 variants. Two forward passes per batch: the context differs between the variants."""
    free = leak_free(spec)
    out: dict[str, list] = {k: [] for k in MaskedScores.__dataclass_fields__}
    with torch.no_grad():
        for b in range(0, len(seqs), batch_size):
            batch = seqs[b:b + batch_size]
            leak_in, free_in, labels = [], [], []
            for j, seq in enumerate(batch):
                inp, lab = mask_tokens(seq, spec, vocab_size, sequence_rng(seed, 0, b + j, STREAM_VAL_MASK))
                inp_free, lab_free = mask_tokens(seq, free, vocab_size, sequence_rng(seed, 0, b + j, STREAM_VAL_MASK))
                assert np.array_equal(lab, lab_free), "leak-free masking must choose the same positions"
                leak_in.append(inp)
                free_in.append(inp_free)
                labels.append(lab)
            ids, att = _batch(free_in, pad_id)
            lab_t, _ = _batch(labels, IGNORE_INDEX)
            sel = lab_t.ne(IGNORE_INDEX)
            if not bool(sel.any()):
                continue
            targets = lab_t[sel]
            nll, top1, top5 = position_scores(_forward(model, ids, att, lab_t, device), targets.to(device))
            ids_leak, _ = _batch(leak_in, pad_id)
            nll_leak, _, _ = position_scores(_forward(model, ids_leak, att, lab_t, device), targets.to(device))
            shown = ids_leak[sel]
            kind = torch.where(shown == MASK_ID, KIND_MASK, torch.where(shown == targets, KIND_KEEP, KIND_RANDOM))
            out["seq"].append(b + sel.nonzero()[:, 0].numpy())
            out["target"].append(targets.numpy())
            for key, v in (("nll", nll), ("top1", top1), ("top5", top5), ("nll_801010", nll_leak),
                           ("kind_801010", kind)):
                out[key].append(v.cpu().numpy())
    if not out["seq"]:
        empty = np.empty(0)
        return MaskedScores(*(empty for _ in MaskedScores.__dataclass_fields__))
    return MaskedScores(**{k: np.concatenate(v) for k, v in out.items()})


def pseudo_nll(model, seqs: list[np.ndarray], mask_id: int, pad_id: int, batch_size: int, device):
    """Pseudo-log-likelihood (Salazar et al., 2020): each non-special position of each sequence
    masked in turn, one masked copy per row, `batch_size` rows per forward pass (copies of
    several sequences share a batch). Returns per-sequence (NLL sums, token counts)."""
    lengths = np.array([len(s) for s in seqs])
    padded = np.full((len(seqs), int(lengths.max())), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        padded[i, :len(s)] = s
    # Rows: (sequence, position) for every position but [CLS] (0) and [SEP] (last).
    row_seq = np.concatenate([np.full(n - 2, i) for i, n in enumerate(lengths)]).astype(np.int64)
    row_pos = np.concatenate([np.arange(1, n - 1) for n in lengths]).astype(np.int64)
    nll_sum = np.zeros(len(seqs))
    with torch.no_grad():
        for b in range(0, len(row_seq), batch_size):
            rs, rp = row_seq[b:b + batch_size], row_pos[b:b + batch_size]
            T = int(lengths[rs].max())
            ids = padded[rs, :T].copy()  # (B, T): copy j of sequence rs[j]
            rows = np.arange(len(rs))
            targets = ids[rows, rp].copy()
            ids[rows, rp] = mask_id
            labels = np.full_like(ids, IGNORE_INDEX)
            labels[rows, rp] = targets  # one labelled position per row: logits come back in row order
            att = (np.arange(T)[None, :] < lengths[rs][:, None]).astype(np.int64)
            logits = _forward(model, torch.from_numpy(ids), torch.from_numpy(att), torch.from_numpy(labels), device)
            nll = F.cross_entropy(logits.float(), torch.from_numpy(targets).to(logits.device), reduction="none")
            np.add.at(nll_sum, rs, nll.cpu().double().numpy())
    return nll_sum, lengths - 2
