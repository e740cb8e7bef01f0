"""Training sequences from token ids: full-sentence packing (RoBERTa) and sentence pairs (BERT NSP).

The corpus is one or more parts (one per build-vocab shard), each a flat token-id array (a
memmap), sentence offsets into it and document offsets into the sentences. Both layouts are
computed once as small index arrays, after which sequence `i` is materialised in O(length)
straight from the memmap, so any order, any rank split and any resume point cost nothing.

`full-sentences`: the documents, in order, form one stream in which every document is followed
by `[SEP]`; sequence i is `[CLS]` + the i-th run of `max_seq_len - 1` stream tokens. Sentences
are kept whole and in order and are cut only at a sequence boundary (the rest of the sentence
starts the next sequence), so every sequence is exactly `max_seq_len` long (no padding) and no
token is dropped; only the very last sequence may be shorter.

`sentence-pair`: instances built as Google BERT's `create_pretraining_data.py` does: per
document a target length (`max_seq_len - 3`, or with probability `short_seq_prob` a random
length in [2, max]), chunks of consecutive sentences split at a random point into A and B,
B replaced with probability 0.5 (or always, for a one-sentence chunk) by consecutive sentences
of another random document (is_random_next = 1), the unused sentences put back, and the pair
truncated to fit by removing tokens from the front or the back (at random) of the longer one.
Sequence = `[CLS] A [SEP] B [SEP]`, token types 0 for `[CLS] A [SEP]` and 1 for `B [SEP]`.

`documents` (ModernBERT's unpadded batches, for `model.arch: modernbert`): every document becomes
`[CLS] doc [SEP]` (one longer than a row is cut into pieces of `max_seq_len - 2` tokens, each
wrapped alike), and rows are filled with whole pieces in corpus order, each with its own id in
`doc_ids`, so that attention never crosses a document and positions restart at each. What a row
leaves unfilled is padding: `efficiency` (real tokens / slots) says how much.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from mlmctl.layout import CLS_ID, PAD_ID, SEP_ID

STREAM_ORDER = 0x4F524452  # "ORDR": the data-order stream of masking.sequence_rng's seeding


@dataclass
class CorpusPart:
    """One corpus part's token ids and offsets. The offsets are numpy arrays; `ids` and
    `word_starts` need only support slicing (`x[a:b]` -> numpy array): a memmap, or pretrain's
    view of a whole build-vocab split across its shards (`token_ids.TokenSplit` behind a slicer)."""

    ids: np.ndarray
    """Flat token ids (uint16/uint32), sentences back to back; only ever sliced."""
    sent_offsets: np.ndarray
    """int64, n_sent + 1: sentence s is ids[sent_offsets[s]:sent_offsets[s+1]]."""
    doc_sent_offsets: np.ndarray
    """int64, n_doc + 1: document d is sentences doc_sent_offsets[d]:doc_sent_offsets[d+1]."""
    word_starts: np.ndarray | None = None
    """bool/uint8 per token: 1 where a word begins (for whole-word masking); None if unknown;
    only ever sliced."""


@dataclass
class Example:
    """One materialised sequence, before masking."""

    ids: np.ndarray  # int64 (T,)
    word_starts: np.ndarray | None  # bool (T,) or None
    token_types: np.ndarray | None  # int64 (T,) or None (all zero)
    next_sentence_label: int | None  # 1 = B is a random segment, 0 = B follows A; None without NSP
    doc_ids: np.ndarray | None = None  # int64 (T,): which document each token is of (`documents` packing)


def _doc_token_ranges(parts: list[CorpusPart]):
    """Per non-empty document: (part, first token, end token)."""
    part_idx, starts, ends = [], [], []
    for p, part in enumerate(parts):
        so = np.asarray(part.sent_offsets, dtype=np.int64)
        ds = np.asarray(part.doc_sent_offsets, dtype=np.int64)
        tok_start, tok_end = so[ds[:-1]], so[ds[1:]]
        keep = tok_end > tok_start
        part_idx.append(np.full(int(keep.sum()), p, dtype=np.int64))
        starts.append(tok_start[keep])
        ends.append(tok_end[keep])
    if not part_idx:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(part_idx), np.concatenate(starts), np.concatenate(ends)


class FullSentences:
    """`full-sentences` packing over the parts; `len()` sequences, `get(i)` materialises one."""

    def __init__(self, parts: list[CorpusPart], max_seq_len: int):
        if max_seq_len < 3:
            raise ValueError("max_seq_len must be at least 3")
        self.parts = parts
        self.max_seq_len = max_seq_len
        self.doc_part, self.doc_start, self.doc_end = _doc_token_ranges(parts)
        # Stream position where each document begins; each contributes its tokens + one [SEP].
        lengths = self.doc_end - self.doc_start + 1
        self.stream_start = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.stream_len = int(self.stream_start[-1])
        self.content = max_seq_len - 1  # stream tokens per sequence, after [CLS]
        self.n = -(-self.stream_len // self.content)
        self.has_word_starts = bool(parts) and all(p.word_starts is not None for p in parts)

    def __len__(self) -> int:
        return self.n

    @property
    def num_tokens(self) -> int:
        """Tokens over all sequences, [CLS] included."""
        return self.stream_len + self.n

    def get(self, i: int) -> Example:
        if not 0 <= i < self.n:
            raise IndexError(i)
        lo = i * self.content
        hi = min(lo + self.content, self.stream_len)
        ids = np.empty(hi - lo + 1, dtype=np.int64)
        ws = np.ones(hi - lo + 1, dtype=bool) if self.has_word_starts else None
        ids[0] = CLS_ID
        out = 1
        d = int(np.searchsorted(self.stream_start, lo, side="right")) - 1
        pos = lo
        while pos < hi:
            doc_off = pos - int(self.stream_start[d])  # offset inside document d's stream piece
            n_doc = int(self.doc_end[d] - self.doc_start[d])
            part = self.parts[int(self.doc_part[d])]
            if doc_off < n_doc:
                take = min(n_doc - doc_off, hi - pos)
                a = int(self.doc_start[d]) + doc_off
                ids[out:out + take] = part.ids[a:a + take]
                if ws is not None:
                    ws[out:out + take] = part.word_starts[a:a + take]
                out += take
                pos += take
            else:  # the [SEP] closing document d
                ids[out] = SEP_ID
                out += 1
                pos += 1
                d += 1
        return Example(ids, ws, None, None)


class Documents:
    """`documents` packing over the parts; `len()` rows, `get(i)` materialises one with `doc_ids`."""

    def __init__(self, parts: list[CorpusPart], max_seq_len: int):
        if max_seq_len < 3:
            raise ValueError("max_seq_len must be at least 3")
        self.parts = parts
        self.max_seq_len = max_seq_len
        self.has_word_starts = bool(parts) and all(p.word_starts is not None for p in parts)
        doc_part, doc_start, doc_end = _doc_token_ranges(parts)
        # Pieces of at most `room` tokens: a long document is cut, never dropped.
        room = max_seq_len - 2
        n_pieces = -(-(doc_end - doc_start) // room)
        first = np.repeat(doc_start, n_pieces) + room * (np.arange(int(n_pieces.sum())) -
                                                         np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces))
        self.piece_part = np.repeat(doc_part, n_pieces)
        self.piece_start = first
        self.piece_end = np.minimum(first + room, np.repeat(doc_end, n_pieces))
        self.row_start = _greedy_rows(self.piece_end - self.piece_start + 2, max_seq_len)
        self.n = len(self.row_start) - 1

    def __len__(self) -> int:
        return self.n

    @property
    def num_tokens(self) -> int:
        """Real tokens over all rows ([CLS] and [SEP] included, padding not)."""
        return int((self.piece_end - self.piece_start + 2).sum())

    @property
    def efficiency(self) -> float:
        """Real tokens / slots (rows x max_seq_len): 1.0 means no padding at all."""
        return self.num_tokens / max(1, self.n * self.max_seq_len)

    def get(self, i: int) -> Example:
        if not 0 <= i < self.n:
            raise IndexError(i)
        ids, ws, docs = [], [], []
        for k in range(int(self.row_start[i]), int(self.row_start[i + 1])):
            part = self.parts[int(self.piece_part[k])]
            a, b = int(self.piece_start[k]), int(self.piece_end[k])
            ids.append(np.concatenate([[CLS_ID], np.asarray(part.ids[a:b], dtype=np.int64), [SEP_ID]]))
            if self.has_word_starts:
                ws.append(np.concatenate([[True], np.asarray(part.word_starts[a:b], dtype=bool), [True]]))
            docs.append(np.full(b - a + 2, len(docs), dtype=np.int64))
        return Example(np.concatenate(ids), np.concatenate(ws) if ws else None, None, None, np.concatenate(docs))


def _greedy_rows(lengths: np.ndarray, max_seq_len: int) -> np.ndarray:
    """Row boundaries (indices into `lengths`, n_rows + 1) packing pieces in order, each row taking
    pieces while they fit: the order stays the corpus' own, so rows are a pure function of it."""
    starts, used = [0], 0
    for k, n in enumerate(lengths.tolist()):
        if used + n > max_seq_len:
            starts.append(k)
            used = 0
        used += n
    if len(lengths):
        starts.append(len(lengths))
    return np.asarray(starts if len(lengths) else [0], dtype=np.int64)


def pad_doc_ids(doc_ids: list[np.ndarray], T: int) -> np.ndarray:
    """(B, T) document ids, padding taking -1 (no real token's document)."""
    out = np.full((len(doc_ids), T), -1, dtype=np.int64)
    for j, d in enumerate(doc_ids):
        out[j, :len(d)] = d
    return out


class SentencePairs:
    """BERT NSP instances; built once from `seed` (cheap: seven int64s per instance)."""

    def __init__(self, parts: list[CorpusPart], max_seq_len: int, short_seq_prob: float, seed: int):
        if max_seq_len < 5:
            raise ValueError("max_seq_len must be at least 5 for sentence pairs")
        self.parts = parts
        self.max_seq_len = max_seq_len
        self.has_word_starts = bool(parts) and all(p.word_starts is not None for p in parts)
        docs = []  # per document: (part, list of (start, end) token ranges of its sentences)
        for p, part in enumerate(parts):
            so = np.asarray(part.sent_offsets, dtype=np.int64)
            ds = np.asarray(part.doc_sent_offsets, dtype=np.int64)
            for d in range(len(ds) - 1):
                sents = [(int(so[s]), int(so[s + 1])) for s in range(ds[d], ds[d + 1]) if so[s + 1] > so[s]]
                if sents:
                    docs.append((p, sents))
        self.num_docs = len(docs)
        rows = []
        if len(docs) >= 2:
            rng = random.Random(seed)
            for di in range(len(docs)):
                rows.extend(_pairs_of_document(docs, di, max_seq_len, short_seq_prob, rng))
        # (part_a, a_start, a_end, part_b, b_start, b_end, is_random_next)
        self.table = np.array(rows, dtype=np.int64).reshape(-1, 7)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def num_tokens(self) -> int:
        t = self.table
        return int(((t[:, 2] - t[:, 1]) + (t[:, 5] - t[:, 4]) + 3).sum()) if len(t) else 0

    def get(self, i: int) -> Example:
        pa, a0, a1, pb, b0, b1, rnd = (int(x) for x in self.table[i])
        la, lb = a1 - a0, b1 - b0
        ids = np.empty(la + lb + 3, dtype=np.int64)
        ids[0] = CLS_ID
        ids[1:1 + la] = self.parts[pa].ids[a0:a1]
        ids[1 + la] = SEP_ID
        ids[2 + la:2 + la + lb] = self.parts[pb].ids[b0:b1]
        ids[-1] = SEP_ID
        tt = np.zeros(ids.size, dtype=np.int64)
        tt[2 + la:] = 1
        ws = None
        if self.has_word_starts:
            ws = np.ones(ids.size, dtype=bool)
            ws[1:1 + la] = self.parts[pa].word_starts[a0:a1]
            ws[2 + la:2 + la + lb] = self.parts[pb].word_starts[b0:b1]
        return Example(ids, ws, tt, rnd)


def _pairs_of_document(docs, di, max_seq_len, short_seq_prob, rng: random.Random):
    """BERT's create_instances_from_document, over token ranges instead of token lists."""
    part, document = docs[di]
    max_num_tokens = max_seq_len - 3
    target = max_num_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_num_tokens)
    out = []
    chunk, chunk_len, i = [], 0, 0
    while i < len(document):
        seg = document[i]
        chunk.append(seg)
        chunk_len += seg[1] - seg[0]
        if i == len(document) - 1 or chunk_len >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a = (chunk[0][0], chunk[a_end - 1][1])  # consecutive sentences are contiguous tokens
            a_len = a[1] - a[0]
            if len(chunk) == 1 or rng.random() < 0.5:
                is_random = 1
                target_b = max(1, target - a_len)
                for _ in range(10):
                    rdi = rng.randint(0, len(docs) - 1)
                    if rdi != di:
                        break
                if rdi == di:  # BERT's 10 tries failed; take the next document deterministically
                    rdi = (di + 1) % len(docs)
                bpart, rdoc = docs[rdi]
                start = rng.randint(0, len(rdoc) - 1)
                end, b_len = start, 0
                while end < len(rdoc) and b_len < target_b:
                    b_len += rdoc[end][1] - rdoc[end][0]
                    end += 1
                b = (rdoc[start][0], rdoc[end - 1][1])
                i -= len(chunk) - a_end  # put the unused sentences back
            else:
                is_random = 0
                bpart = part
                b = (chunk[a_end][0], chunk[-1][1])
            a, b = _truncate_pair(list(a), list(b), max_num_tokens, rng)
            if a[1] > a[0] and b[1] > b[0]:
                out.append((part, a[0], a[1], bpart, b[0], b[1], is_random))
            chunk, chunk_len = [], 0
        i += 1
    return out


def _truncate_pair(a: list, b: list, max_num_tokens: int, rng: random.Random):
    # Remove one token at a time from the longer segment, from its front or back at random.
    while (a[1] - a[0]) + (b[1] - b[0]) > max_num_tokens:
        seg = a if (a[1] - a[0]) > (b[1] - b[0]) else b
        if rng.random() < 0.5:
            seg[0] += 1
        else:
            seg[1] -= 1
    return a, b


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of n sequences in one epoch: a pure function of (seed, epoch)."""
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, STREAM_ORDER, epoch])))
    return rng.permutation(n)


@dataclass(frozen=True)
class BatchSchedule:
    """The global batch of every optimizer step, as a pure function of the step (so resuming
    needs only the step number), with an optional batch-size warm-up (ModernBERT, arXiv
    2412.13663: the batch grows from 768 to 4,608 sequences early in training).

    The data is one stream of positions: position p is sequence `epoch_order(n, seed, e)[p % E]`
    of epoch e = p // E, where E = `epoch_len` (the full batches of an epoch; the incomplete last
    one is skipped). Step s takes positions [offset(s), offset(s) + size(s)); a step may straddle
    two epochs, each of its sequences masked with its own epoch. Without warm-up, step s is
    exactly batch s % (E / full) of epoch s // (E / full).

        sched = BatchSchedule(full=32, epoch_len=3200, start=8, warmup_steps=100, granule=8)
        sched.size(0), sched.size(50), sched.size(100)   # 8, 16, 32
        epochs, within = sched.positions(7)             # per sequence of step 7's global batch
    """

    full: int
    """The global batch after warm-up (`train.batch_size`)."""
    epoch_len: int
    """Stream positions per epoch: steps_per_epoch x full."""
    start: int | None = None
    """The first step's batch; None (or warmup_steps 0): no warm-up."""
    warmup_steps: int = 0
    """Steps over which the batch grows linearly from `start` to `full`."""
    granule: int = 1
    """Every warm-up batch is a multiple of this (pretrain: `start`, a multiple of the world size,
    so that the schedule does not depend on the number of processes)."""

    def size(self, step: int) -> int:
        if self.start is None or step >= self.warmup_steps:
            return self.full
        b = self.start + (self.full - self.start) * step // self.warmup_steps
        return max(self.granule, b - b % self.granule)

    @cached_property
    def _warm_offsets(self) -> np.ndarray:
        """offset(s) for s in 0..warmup_steps (int64)."""
        n = self.warmup_steps if self.start is not None else 0
        sizes = np.array([self.size(s) for s in range(n)], dtype=np.int64)
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def offset(self, step: int) -> int:
        """Stream positions consumed by the steps before `step`."""
        warm = self._warm_offsets
        w = min(step, len(warm) - 1)
        return int(warm[w]) + (step - w) * self.full

    def steps_for(self, positions: int) -> int:
        """The fewest steps whose batches reach `positions` stream positions."""
        warm = self._warm_offsets
        if positions <= warm[-1]:
            return int(np.searchsorted(warm, positions, side="left"))
        return len(warm) - 1 + -(-(positions - int(warm[-1])) // self.full)

    def positions(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(epoch, index within the epoch's order) of each sequence of step `step`'s global batch."""
        p = np.arange(self.offset(step), self.offset(step) + self.size(step), dtype=np.int64)
        return p // self.epoch_len, p % self.epoch_len


def rank_slice(global_batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The part of a global batch (sequence indices) that `rank` trains on: disjoint, contiguous."""
    per = len(global_batch) // world_size
    return global_batch[rank * per:(rank + 1) * per]


def collate(inputs: list[np.ndarray], labels: list[np.ndarray], token_types: list | None = None,
            max_len: int | None = None):
    """Stack masked sequences into int64 arrays, padding on the right when lengths differ.
    Returns (input_ids, labels, attention_mask or None, token_type_ids or None); the attention
    mask is None when no sequence is padded, which lets attention skip masking entirely."""
    T = max_len or max(len(x) for x in inputs)
    B = len(inputs)
    padded = any(len(x) != T for x in inputs)
    ids = np.full((B, T), PAD_ID, dtype=np.int64)
    lab = np.full((B, T), -100, dtype=np.int64)
    mask = np.zeros((B, T), dtype=np.int64) if padded else None
    tt = np.zeros((B, T), dtype=np.int64) if token_types is not None else None
    for j, (x, y) in enumerate(zip(inputs, labels)):
        ids[j, :len(x)] = x
        lab[j, :len(y)] = y
        if mask is not None:
            mask[j, :len(x)] = 1
        if tt is not None and token_types[j] is not None:
            tt[j, :len(x)] = token_types[j]
    return ids, lab, mask, tt
