"""Packing: full-sentence sequences lose/duplicate nothing; BERT sentence pairs are well formed."""

import numpy as np
import pytest

from mlmctl.layout import CLS_ID, SEP_ID
from mlmctl.packing import CorpusPart, FullSentences, SentencePairs, collate, epoch_order, rank_slice


def make_part(rng, n_docs, first_id=5, word_starts=True):
    """Documents of random sentences; token ids count up so positions can be traced."""
    sent_lens, doc_sents = [], [0]
    for _ in range(n_docs):
        k = int(rng.integers(0, 6))  # empty documents happen
        sent_lens += list(rng.integers(1, 30, k))
        doc_sents.append(doc_sents[-1] + k)
    so = np.concatenate([[0], np.cumsum(sent_lens)]).astype(np.int64)
    n = int(so[-1])
    ids = (np.arange(n) % 60000 + first_id).astype(np.uint16)
    ws = (rng.random(n) < 0.6) if word_starts else None
    return CorpusPart(ids, so, np.array(doc_sents, dtype=np.int64), ws)


def docs_of(part):
    so, ds = part.sent_offsets, part.doc_sent_offsets
    return [part.ids[so[ds[d]]:so[ds[d + 1]]].astype(np.int64) for d in range(len(ds) - 1)]


@pytest.mark.parametrize("T", [8, 16, 128])
def test_full_sentences_is_the_document_stream_cut_into_sequences(T):
    rng = np.random.default_rng(T)
    parts = [make_part(rng, 30), make_part(rng, 20, first_id=40000)]
    fs = FullSentences(parts, T)
    expect = np.concatenate([np.append(d, SEP_ID) for p in parts for d in docs_of(p) if len(d)])
    got, total = [], 0
    for i in range(len(fs)):
        ex = fs.get(i)
        assert ex.ids[0] == CLS_ID
        assert len(ex.ids) == T or i == len(fs) - 1  # only the last one may be short
        assert ex.word_starts is not None and len(ex.word_starts) == len(ex.ids)
        got.append(ex.ids[1:])
        total += len(ex.ids)
    assert np.array_equal(np.concatenate(got), expect)
    assert total == fs.num_tokens
    # word starts travel with their tokens
    ws_expect = np.concatenate([np.append(p.word_starts[p.sent_offsets[p.doc_sent_offsets[d]]:
                                                        p.sent_offsets[p.doc_sent_offsets[d + 1]]], True)
                                for p in parts for d in range(len(p.doc_sent_offsets) - 1)
                                if p.sent_offsets[p.doc_sent_offsets[d + 1]] > p.sent_offsets[p.doc_sent_offsets[d]]])
    assert np.array_equal(np.concatenate([fs.get(i).word_starts[1:] for i in range(len(fs))]), ws_expect)


def test_sentence_pairs_follow_bert():
    rng = np.random.default_rng(0)
    part = make_part(rng, 200)
    T = 32
    sp = SentencePairs([part], T, short_seq_prob=0.1, seed=1)
    assert len(sp) > 50
    so = part.sent_offsets
    doc_of_token = np.repeat(np.arange(len(part.doc_sent_offsets) - 1),
                             np.diff(so[part.doc_sent_offsets]))
    n_random = 0
    for i in range(len(sp)):
        ex = sp.get(i)
        ids, tt = ex.ids, ex.token_types
        seps = np.flatnonzero(ids == SEP_ID)
        assert ids[0] == CLS_ID and len(seps) == 2 and seps[1] == len(ids) - 1 and len(ids) <= T
        assert (tt[:seps[0] + 1] == 0).all() and (tt[seps[0] + 1:] == 1).all()
        pa, a0, a1, pb, b0, b1, rnd = sp.table[i]
        assert a1 > a0 and b1 > b0
        same_doc = doc_of_token[a0] == doc_of_token[b0]
        n_random += rnd
        if rnd:
            assert not same_doc
        else:
            # B follows A in the same document (only truncation may remove tokens between them)
            assert same_doc and a1 <= b0 and b0 - a1 < T
        assert (b1 - b0) + (a1 - a0) <= T - 3
    assert 0.3 < n_random / len(sp) < 0.7
    # Deterministic for a seed, different for another.
    assert np.array_equal(SentencePairs([part], T, 0.1, 1).table, sp.table)
    assert not np.array_equal(SentencePairs([part], T, 0.1, 2).table, sp.table)


def test_sentence_pairs_need_two_documents():
    part = CorpusPart(np.arange(5, 25, dtype=np.uint16), np.array([0, 10, 20]), np.array([0, 2]))
    assert len(SentencePairs([part], 16, 0.1, 0)) == 0


def test_epoch_order_and_rank_slices():
    a, b = epoch_order(100, 0, 0), epoch_order(100, 0, 1)
    assert sorted(a) == list(range(100)) and not np.array_equal(a, b)
    assert np.array_equal(a, epoch_order(100, 0, 0))
    g = a[:8]
    r0, r1 = rank_slice(g, 0, 2), rank_slice(g, 1, 2)
    assert np.array_equal(np.concatenate([r0, r1]), g)


def test_collate_pads_only_when_needed():
    ids, lab, mask, tt = collate([np.array([2, 9, 3]), np.array([2, 8, 7])], [np.full(3, -100)] * 2)
    assert mask is None and tt is None and ids.shape == (2, 3)
    ids, lab, mask, tt = collate([np.array([2, 9, 3]), np.array([2, 3])], [np.full(3, -100), np.array([-100, 3])],
                                 token_types=[np.array([0, 0, 1]), np.array([0, 1])])
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert ids[1].tolist() == [2, 3, 0] and lab[1].tolist() == [-100, 3, -100] and tt[1].tolist() == [0, 1, 0]


@pytest.mark.parametrize("T", [6, 16, 64])
def test_documents_packing_keeps_every_document_whole_and_apart(T):
    from mlmctl.packing import Documents, pad_doc_ids

    part = make_part(np.random.default_rng(3), 30)
    ds = Documents([part], T)
    pieces, tokens = [], 0
    for i in range(len(ds)):
        ex = ds.get(i)
        assert 0 < len(ex.ids) <= T and len(ex.doc_ids) == len(ex.ids) and len(ex.word_starts) == len(ex.ids)
        tokens += len(ex.ids)
        for d in np.unique(ex.doc_ids):  # each document id is one contiguous [CLS] ... [SEP] run
            run = ex.ids[ex.doc_ids == d]
            assert run[0] == CLS_ID and run[-1] == SEP_ID and not np.isin(run[1:-1], [CLS_ID, SEP_ID]).any()
            pieces.append(run[1:-1])
    # In corpus order, every token once: long documents are cut into pieces, never dropped.
    assert np.array_equal(np.concatenate(pieces), np.concatenate(docs_of(part)))
    assert tokens == ds.num_tokens and ds.efficiency == pytest.approx(tokens / (len(ds) * T))
    assert pad_doc_ids([np.array([0, 0, 1])], 5).tolist() == [[0, 0, 1, -1, -1]]


@pytest.mark.parametrize("start, warmup, granule", [(None, 0, 1), (8, 100, 2), (1, 7, 1), (3, 50, 4)])
def test_batch_schedule_walks_the_stream_without_gap_or_overlap(start, warmup, granule):
    from mlmctl.packing import BatchSchedule

    s = BatchSchedule(full=32, epoch_len=32 * 5, start=start, warmup_steps=warmup, granule=granule)
    seen = []
    for step in range(warmup + 20):
        b = s.size(step)
        assert b % granule == 0 and granule <= b <= 32
        assert b == 32 or step < warmup
        assert s.size(step) >= s.size(step - 1) if step else True  # the batch only grows
        epochs, within = s.positions(step)
        assert len(epochs) == b and s.offset(step + 1) == s.offset(step) + b
        seen += (epochs * s.epoch_len + within).tolist()
        assert s.steps_for(s.offset(step + 1)) == step + 1 and s.steps_for(s.offset(step) + 1) == step + 1
    assert seen == list(range(len(seen)))  # every stream position once, in order, across epochs
    if start is None:  # no warm-up: step s is batch s % 5 of epoch s // 5, as before warm-up existed
        epochs, within = s.positions(12)
        assert (epochs == 2).all() and within.tolist() == list(range(64, 96))


def test_batch_schedule_ramps_linearly_and_straddles_epochs():
    from mlmctl.packing import BatchSchedule

    s = BatchSchedule(full=12, epoch_len=24, start=3, warmup_steps=3)
    assert [s.size(i) for i in range(5)] == [3, 6, 9, 12, 12]
    epochs, within = s.positions(3)  # positions 18..29: the end of epoch 0, the start of epoch 1
    assert epochs.tolist() == [0] * 6 + [1] * 6 and within.tolist() == [18, 19, 20, 21, 22, 23, 0, 1, 2, 3, 4, 5]
