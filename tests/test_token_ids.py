"""mlmctl.token_ids: the memory-mapped reader of build-vocab output."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tokenizers")

sys.path.insert(0, str(Path(__file__).parent / "stages"))
from test_tokenize import make_clean_dir, sample_docs  # noqa: E402

from mlmctl.errors import InputError  # noqa: E402
from mlmctl.token_ids import open_vocab_dir  # noqa: E402


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory) -> Path:
    from mlmctl.cli import main

    tmp = tmp_path_factory.mktemp("tid")
    clean = make_clean_dir(tmp / "clean", sample_docs(90, seed=21), shards=4)
    assert main(["tokenize", "--input", str(clean), "--output", str(tmp / "tok")]) == 0
    assert main(["build-vocab", "--input", str(tmp / "tok"), "--output", str(tmp / "vocab"),
                 "--set", "vocab_size=400", "--set", "min_frequency=1"]) == 0
    return tmp / "vocab"


def test_vocab_dir_fields(vocab_dir):
    vd = open_vocab_dir(vocab_dir)
    assert vd.special_ids == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    assert (vd.pad_id, vd.unk_id, vd.cls_id, vd.sep_id, vd.mask_id) == (0, 1, 2, 3, 4)
    assert vd.tokenizer_file.is_file() and vd.tokenizer().get_vocab_size() == vd.vocab_size
    assert vd.dtype == np.dtype("<u2")
    assert len(vd.tokenizer_sha256) == 64


def test_structure_is_consistent(vocab_dir):
    tr = open_vocab_dir(vocab_dir).split("train")
    assert tr.n_docs == 90
    so, do = np.asarray(tr.sent_offsets), np.asarray(tr.doc_sent_offsets)
    assert isinstance(tr.sent_offsets, np.memmap) and tr.sent_offsets.dtype == np.dtype("<i8")
    assert so[0] == 0 and so[-1] == tr.n_tokens and np.all(np.diff(so) > 0)  # no empty sentence
    assert do[0] == 0 and do[-1] == tr.n_sentences and np.all(np.diff(do) > 0)  # no empty document
    starts = tr.word_starts(0, tr.n_tokens)
    assert starts[so[:-1]].all()  # every sentence starts a word
    total = sum(len(s) for d in range(tr.n_docs) for s in tr.document(d))
    assert total == tr.n_tokens
    a, b = tr.document_span(3)
    assert np.array_equal(tr.tokens(a, b), np.concatenate(tr.document(3)))


def test_tokens_cross_shard_boundaries(vocab_dir):
    tr = open_vocab_dir(vocab_dir).split("train")
    raw = np.concatenate([np.fromfile(p, dtype="<u2") for p in sorted((vocab_dir / "train").glob("shard-*.ids.bin"))])
    ws = np.concatenate([np.fromfile(p, dtype=np.uint8) for p in sorted((vocab_dir / "train").glob("shard-*.wstart.bin"))])
    assert len(raw) == tr.n_tokens and len(tr.shard_offsets) == 5
    rng = np.random.default_rng(0)
    edges = [int(x) for x in tr.shard_offsets]
    ranges = [(e - 3, e + 3) for e in edges[1:-1]] + [(0, tr.n_tokens), (5, 5)]
    ranges += [tuple(sorted(rng.integers(0, tr.n_tokens + 1, 2).tolist())) for _ in range(50)]
    for a, b in ranges:
        got = tr.tokens(a, b)
        assert not isinstance(got, np.memmap)
        assert np.array_equal(got, raw[a:b]) and got.dtype == np.dtype("<u2")
        assert np.array_equal(tr.word_starts(a, b), ws[a:b].astype(bool))
    for k in (0, tr.n_sentences - 1):
        assert np.array_equal(tr.sentence(k), raw[tr.sent_offsets[k]:tr.sent_offsets[k + 1]])
    with pytest.raises(IndexError):
        tr.tokens(0, tr.n_tokens + 1)


def test_refuses_tampered_unfinished_or_wrong_dirs(vocab_dir, tmp_path):
    import shutil

    copy = tmp_path / "vocab"
    shutil.copytree(vocab_dir, copy)
    shard = copy / "train/shard-00001.ids.bin"
    data = bytearray(shard.read_bytes())
    data[0] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 differs"):
        open_vocab_dir(copy)
    open_vocab_dir(copy, full_verify=False)  # same size: only the full check sees it
    (copy / "manifest.json").unlink()
    with pytest.raises(InputError, match="did not finish"):
        open_vocab_dir(copy)
    with pytest.raises(InputError, match="expected 'build-vocab'"):
        open_vocab_dir(vocab_dir.parent / "tok")
    with pytest.raises(InputError, match="no split 'test'"):
        open_vocab_dir(vocab_dir).split("test")


def test_validation_split_and_empty_shards(vocab_dir):
    va = open_vocab_dir(vocab_dir).split("validation")
    assert va.n_docs == 3 and va.n_tokens == int(va.sent_offsets[-1])
