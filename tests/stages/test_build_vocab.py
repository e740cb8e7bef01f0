"""build-vocab stage: trained tokenizer, the ids == tokenizer.json(text) invariant, index layout, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

pytest.importorskip("tokenizers")

from test_tokenize import ODD, make_clean_dir, sample_docs  # noqa: E402  (tests/stages is on sys.path)

from mlmctl.manifest import Manifest, manifest_hash, read_manifest, write_manifest  # noqa: E402
from mlmctl.pretokenize import Pretokenizer  # noqa: E402
from mlmctl.shards import ShardInfo  # noqa: E402
from mlmctl.sentences import split_sentences  # noqa: E402
from mlmctl.token_ids import open_vocab_dir  # noqa: E402

KINDS = ["bert", "byte-level", "metaspace"]
MODELS = ["wordpiece", "bpe", "unigram"]
VOCAB = {"bert": 500, "byte-level": 700, "metaspace": 500}  # byte-level: 256 bytes + 256 "##" bytes
NASTY = [
    "Ünïcödé àccents and ÇÃSE. Ｆｕｌｌ－ｗｉｄｔｈ ｔｅｘｔ！ 🙂🙃 emoji, 👩‍👩‍👧 family.",
    "Control\x07chars\x1bhere.\x00Null too? Tab\there; soft\u00adhyphen. Zero\u200bwidth\ufeffBOM.",
    "日本語のテキスト。한국어 문장입니다. 中文句子，没有空格！Ελληνικά κείμενα. Русский текст.",
    "Line\u2028separator\u2029paragraph\x85next\x1cfile\x1egroup. Vertical\x0btab\x0cfeed.",
    "a" * 150 + " very long word. Numbers 3.14159 and 1,000,000.",
]


def build(run_cli, tmp: Path, docs: list[str], *, kind="bert", model="wordpiece", shards=3, vocab_size=None,
          sets=(), tok_sets=(), validation=None) -> Path:
    clean = make_clean_dir(tmp / "clean", docs, shards=shards, validation=validation)
    code, _, err = run_cli("tokenize", "--input", clean, "--output", tmp / "tok",
                           "--set", f"pretokenizer.kind={kind}", *tok_sets)
    assert code == 0, err
    vs = vocab_size or VOCAB[kind]
    code, _, err = run_cli("build-vocab", "--input", tmp / "tok", "--output", tmp / "vocab",
                           "--set", f"model={model}", "--set", f"vocab_size={vs}", "--set", "min_frequency=1", *sets)
    assert code == 0, err
    return tmp / "vocab"


def nonempty_docs(docs: list[str], pipeline: dict) -> list[list[str]]:
    """Sentences per document, as tokenize keeps them (sentences and documents with words)."""
    pre = Pretokenizer(pipeline)
    out = []
    for text in docs:
        sents = [s for s in split_sentences(text) if pre.words(s)]
        if sents:
            out.append(sents)
    return out


CORPUS = sample_docs(80, seed=11) + NASTY


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", KINDS)
def test_ids_equal_tokenizer_json_on_clean_text(tmp_path, run_cli, kind, model):
    vocab = build(run_cli, tmp_path, CORPUS, kind=kind, model=model)
    vd = open_vocab_dir(vocab)
    from tokenizers import Tokenizer

    full = Tokenizer.from_file(str(vd.tokenizer_file))
    pipeline = json.loads((tmp_path / "tok/pretokenizer.json").read_text())
    tr = vd.split("train")
    expected = nonempty_docs(CORPUS, pipeline)
    assert tr.n_docs == len(expected)
    assert tr.n_sentences == sum(len(d) for d in expected)
    for d, sents in enumerate(expected):
        stored = tr.document(d)
        assert len(stored) == len(sents)
        for sentence, ids in zip(sents, stored):
            enc = full.encode(sentence, add_special_tokens=False)
            assert ids.tolist() == enc.ids, sentence
    # Word starts agree with the full tokenizer's word ids.
    start, stop = tr.document_span(len(expected) - 1)
    flags = tr.word_starts(start, stop)
    want = []
    for sentence in expected[-1]:
        words = full.encode(sentence, add_special_tokens=False).word_ids
        want += [i == 0 or words[i] != words[i - 1] for i in range(len(words))]
    assert flags.tolist() == want
    assert vd.tokenizer_sha256 == read_manifest(vocab, "build-vocab").extra["tokenizer_sha256"]
    # The post-processor adds [CLS] A [SEP] B [SEP].
    pair = full.encode("a b", "c")
    assert pair.ids[0] == 2 and pair.ids[-1] == 3 and pair.ids.count(3) == 2 and pair.type_ids[-1] == 1


@pytest.mark.parametrize("kind, model, tok_sets", [
    ("bert", "wordpiece", ()),
    ("bert", "wordpiece", ("--set", "pretokenizer.lowercase=false")),
    ("byte-level", "bpe", ()),
    ("metaspace", "unigram", ()),
])
def test_transformers_autotokenizer_gives_the_same_ids(tmp_path, run_cli, kind, model, tok_sets):
    transformers = pytest.importorskip("transformers")
    vocab = build(run_cli, tmp_path, CORPUS, kind=kind, model=model, tok_sets=tok_sets)
    hf = transformers.AutoTokenizer.from_pretrained(str(vocab))
    assert hf.is_fast
    assert (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == (0, 1, 2, 3, 4)
    if model == "wordpiece":
        assert "Bert" in type(hf).__name__
    tr = open_vocab_dir(vocab).split("train")
    pipeline = json.loads((tmp_path / "tok/pretokenizer.json").read_text())
    for d, sents in enumerate(nonempty_docs(CORPUS, pipeline)):
        for sentence, ids in zip(sents, tr.document(d)):
            assert hf(sentence, add_special_tokens=False)["input_ids"] == ids.tolist(), sentence
    # With specials: [CLS] ... [SEP], as BertTokenizer does.
    assert hf("the model")["input_ids"][0] == 2 and hf("the model")["input_ids"][-1] == 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small vocabulary per pre-tokenizer kind (wordpiece), built through the stage functions."""
    from mlmctl.cli import main

    out = {}
    for kind in KINDS:
        tmp = tmp_path_factory.mktemp(kind)
        clean = make_clean_dir(tmp / "clean", CORPUS)
        assert main(["tokenize", "--input", str(clean), "--output", str(tmp / "tok"),
                     "--set", f"pretokenizer.kind={kind}"]) == 0
        assert main(["build-vocab", "--input", str(tmp / "tok"), "--output", str(tmp / "vocab"),
                     "--set", f"vocab_size={VOCAB[kind]}", "--set", "min_frequency=1"]) == 0
        out[kind] = tmp
    return out


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=ODD)
def test_indexing_path_equals_full_tokenizer_on_any_unicode(trained, kind, text):
    """The index path (pre-tokens -> model alone) equals tokenizer.json on the sentence, for any text."""
    from tokenizers import Tokenizer

    from mlmctl.indexing import WordIds as _WordIds, model_only as _model_only

    tmp = trained[kind]
    vocab = tmp / "vocab"
    full = _full_cache.setdefault(kind, Tokenizer.from_file(str(vocab / "tokenizer.json")))
    pre = _pre_cache.setdefault(kind, Pretokenizer(json.loads((tmp / "tok/pretokenizer.json").read_text())))
    model = _model_only(str(vocab / "tokenizer.json"), f"{kind}-test")
    for sentence in split_sentences(text):
        if any(t in sentence for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")):
            continue  # literal special tokens are text in the index (see docs/build-vocab.md)
        words = pre.words(sentence)
        want = full.encode(sentence, add_special_tokens=False)
        got = model.encode(words, is_pretokenized=True, add_special_tokens=False).ids if words else []
        assert got == want.ids
        # indexing's word table (ids per distinct pre-token, gathered): the same ids and word starts,
        # with one table kept across examples as across a shard's blocks (known and new words mixed)
        table = _table_cache.setdefault(kind, _WordIds(model))
        ids, starts, _ = table.encode(words * 2)
        assert ids.tolist() == want.ids * 2
        word_ids = want.word_ids * 2
        assert starts.tolist() == [i == 0 or word_ids[i] != word_ids[i - 1] or i == len(want.ids)
                                   for i in range(len(ids))]


_full_cache: dict = {}
_pre_cache: dict = {}
_table_cache: dict = {}


def cjk_docs(n: int, seed: int) -> list[str]:
    """Chinese-like text: 3000 distinct ideographs with a Zipf(1) distribution, as real text has."""
    rng = random.Random(seed)
    chars = [chr(0x4E00 + 7 * i) for i in range(3000)]
    weights = [1 / (i + 1) for i in range(len(chars))]
    docs = []
    for _ in range(n):
        sents = ["".join(rng.choices(chars, weights, k=rng.randint(5, 40))) + rng.choice("。！？；")
                 for _ in range(rng.randint(1, 5))]
        docs.append("".join(sents))
    return docs


def test_chinese_chars_are_single_tokens_and_rarely_unknown(tmp_path, run_cli):
    docs = cjk_docs(2500, seed=1)
    clean = make_clean_dir(tmp_path / "clean", docs, validation=cjk_docs(100, seed=2))
    assert run_cli("tokenize", "--input", clean, "--output", tmp_path / "tok")[0] == 0
    code, _, err = run_cli("build-vocab", "--input", tmp_path / "tok", "--output", tmp_path / "vocab")
    assert code == 0, err  # the default config
    stats = json.loads((tmp_path / "vocab/stats.json").read_text())
    assert stats["train"]["unk_rate"] < 0.01 and stats["validation"]["unk_rate"] < 0.01, stats
    assert stats["train"]["subwords_per_word"] == 1.0
    vd = open_vocab_dir(tmp_path / "vocab")
    tok = vd.tokenizer()
    assert not any(t.startswith("##") and "\u4e00" <= t[2:3] <= "\u9fff" for t in tok.get_vocab())  # no "##中"
    va = vd.split("validation")
    for d, text in enumerate(cjk_docs(100, seed=2)[:20]):
        for sentence, ids in zip(split_sentences(text), va.document(d), strict=True):
            tokens = [tok.id_to_token(int(i)) for i in ids]
            assert len(tokens) == len(sentence)  # one token per character (terminator included)
            assert all(t in (c, "[UNK]") for t, c in zip(tokens, sentence))
    assert va.word_starts(0, va.n_tokens).all()


def test_workers_tasks_and_resume_give_identical_bytes(tmp_path, run_cli, monkeypatch):
    from mlmctl.stages import build_vocab as stage

    clean = make_clean_dir(tmp_path / "clean", sample_docs(150, seed=12), shards=4)
    assert run_cli("tokenize", "--input", clean, "--output", tmp_path / "tok")[0] == 0

    def bv(out, *args):
        code, _, err = run_cli("build-vocab", "--input", tmp_path / "tok", "--output", tmp_path / out,
                               "--set", "vocab_size=300", *args)
        return code, err

    assert bv("w1", "--workers", "1")[0] == 0
    assert bv("w2", "--workers", "2")[0] == 0
    code, err = bv("t3", "--task", "1/3")
    assert code == 1 and "run task 0 first" in err
    for t in ("0/3", "1/3", "2/3"):
        assert bv("t3", "--task", t)[0] == 0
    assert not (tmp_path / "t3/manifest.json").exists()
    assert bv("t3")[0] == 0

    # A run killed during indexing leaves no manifest and resumes, reusing the trained vocabulary.
    real = stage._index_shard
    calls = []

    def dies_on_third(unit, part):
        calls.append(unit)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(unit, part)

    monkeypatch.setattr(stage, "_index_shard", dies_on_third)
    code, err = bv("killed")
    assert code == 130
    assert not (tmp_path / "killed/manifest.json").exists()
    assert not (tmp_path / "killed/tokenizer.json").exists()
    monkeypatch.setattr(stage, "_index_shard", real)
    code, err = bv("killed")
    assert code == 0 and "reusing 2 completed" in err and "training" not in err

    ref = manifest_hash(tmp_path / "w1")
    for other in ("w2", "t3", "killed"):
        assert manifest_hash(tmp_path / other) == ref, other
    code, err = bv("w1")
    assert code == 0 and "up to date" in err


def test_index_layout_is_raw_little_endian(tmp_path, run_cli):
    vocab = build(run_cli, tmp_path, sample_docs(30, seed=13), shards=2)
    m = read_manifest(vocab, "build-vocab")
    assert m.extra["dtype"] == "uint16" and m.extra["special_ids"] == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    shard = vocab / "train/shard-00000.ids.bin"
    info = next(s for s in m.shards if s.name == "train/shard-00000.ids.bin")
    assert shard.stat().st_size == 2 * info.records["tokens"]
    raw = np.fromfile(shard, dtype="<u2")
    vd = open_vocab_dir(vocab)
    tr = vd.split("train")
    assert np.array_equal(tr.tokens(0, len(raw)), raw)
    assert np.fromfile(vocab / "train/sent_offsets.bin", "<i8")[-1] == tr.n_tokens
    assert (vocab / "vocab.txt").read_text().splitlines()[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len((vocab / "vocab.txt").read_text().splitlines()) == vd.vocab_size
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "stats.json"):
        assert any(f.name == name for f in m.files)
    stats = json.loads((vocab / "stats.json").read_text())
    assert {"unk_rate", "subwords_per_word", "word_coverage", "tokens"} <= set(stats["train"])
    assert 0 < stats["vocab_used_by_train"] <= 1


def test_sample_fraction_trains_on_part_and_indexes_all(tmp_path, run_cli):
    vocab = build(run_cli, tmp_path, sample_docs(200, seed=14), sets=("--set", "sample_fraction=0.3"))
    vd = open_vocab_dir(vocab)
    assert vd.split("train").n_docs == 200


def test_vocab_size_below_alphabet_is_a_clear_error(tmp_path, run_cli):
    clean = make_clean_dir(tmp_path / "clean", CORPUS)
    assert run_cli("tokenize", "--input", clean, "--output", tmp_path / "tok")[0] == 0
    for model in ("wordpiece", "bpe", "unigram"):
        code, _, err = run_cli("build-vocab", "--input", tmp_path / "tok", "--output", tmp_path / f"v-{model}",
                               "--set", "vocab_size=20", "--set", f"model={model}")
        assert code == 1 and "vocab_size" in err and "Traceback" not in err, (model, err)
    code, _, err = run_cli("build-vocab", "--input", tmp_path / "tok", "--output", tmp_path / "v", "--set", "vocab_size=3")
    assert code == 1 and "`vocab_size`" in err


def test_from_tokenizer_reuses_a_vocabulary_and_refuses_bad_files(tmp_path, run_cli):
    docs = sample_docs(60, seed=15)
    first = build(run_cli, tmp_path / "a", docs)
    # Same vocabulary, new data: no training, same tokenizer bytes, correct ids.
    clean = make_clean_dir(tmp_path / "b/clean", sample_docs(30, seed=16))
    assert run_cli("tokenize", "--input", clean, "--output", tmp_path / "b/tok")[0] == 0

    def bv(src, out="vocab", *args):
        return run_cli("build-vocab", "--input", tmp_path / "b/tok", "--output", tmp_path / "b" / out,
                       "--set", f"from={src}", *args)

    code, _, err = bv(first / "tokenizer.json")
    assert code == 0 and "training" not in err, err
    vd = open_vocab_dir(tmp_path / "b/vocab")
    assert vd.tokenizer_sha256 == open_vocab_dir(first).tokenizer_sha256
    tok = vd.tokenizer()
    sents = split_sentences(sample_docs(30, seed=16)[0])
    assert [s.tolist() for s in vd.split("train").document(0)] == [tok.encode(s, add_special_tokens=False).ids for s in sents]

    (tmp_path / "junk.json").write_text('{"hello": 1}')
    (tmp_path / "text.txt").write_text("not json at all")
    for bad in (tmp_path / "junk.json", tmp_path / "text.txt", tmp_path / "missing.json", tmp_path):
        code, _, err = bv(bad, "bad")
        assert code == 1 and "`from`" in err and "Traceback" not in err, err
    # A tokenizer built with other pre-tokenization settings would not match the stored pre-tokens.
    other = build(run_cli, tmp_path / "c", docs, kind="metaspace")
    code, _, err = bv(other / "tokenizer.json", "bad2")
    assert code == 1 and "different" in err


def _wordlevel_tokenizer(path: Path, pipeline: dict, words: list[str], filler: int) -> None:
    """A WordLevel tokenizer whose corpus words sit above id `filler`."""
    from tokenizers import Tokenizer

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    for i in range(filler):
        vocab[f"<fill{i}>"] = len(vocab)
    for w in words:
        vocab.setdefault(w, len(vocab))
    doc = json.loads(Tokenizer.from_str(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": None, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}})).to_str())
    doc["normalizer"], doc["pre_tokenizer"] = pipeline["normalizer"], pipeline["pre_tokenizer"]
    path.write_text(json.dumps(doc))


def test_ids_beyond_uint16(tmp_path, run_cli):
    docs = sample_docs(20, seed=17, cjk=False)
    clean = make_clean_dir(tmp_path / "clean", docs)
    assert run_cli("tokenize", "--input", clean, "--output", tmp_path / "tok")[0] == 0
    pipeline = json.loads((tmp_path / "tok/pretokenizer.json").read_text())
    pre = Pretokenizer(pipeline)
    words = sorted({w for d in docs for s in split_sentences(d) for w in pre.words(s)})
    big = tmp_path / "big.json"
    _wordlevel_tokenizer(big, pipeline, words, filler=70_000)
    code, _, err = run_cli("build-vocab", "--input", tmp_path / "tok", "--output", tmp_path / "v16",
                           "--set", f"from={big}", "--set", "dtype=uint16")
    assert code == 1 and "uint16" in err and "uint32" in err and "Traceback" not in err
    code, _, err = run_cli("build-vocab", "--input", tmp_path / "tok", "--output", tmp_path / "v32",
                           "--set", f"from={big}")
    assert code == 0, err
    vd = open_vocab_dir(tmp_path / "v32")
    assert vd.dtype_name == "uint32" and vd.vocab_size > 70_000
    tr = vd.split("train")
    ids = tr.tokens(0, tr.n_tokens)
    assert ids.dtype == np.dtype("<u4") and ids.min() >= 70_005 - 0 and ids.max() < vd.vocab_size
    from tokenizers import Tokenizer

    full = Tokenizer.from_file(str(big))
    assert tr.sentence(0).tolist() == full.encode(split_sentences(docs[0])[0], add_special_tokens=False).ids


def test_empty_or_unfinished_input_is_refused(tmp_path, run_cli):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "pretokenizer.json").write_text("{}")
    code, _, err = run_cli("build-vocab", "--input", tok, "--output", tmp_path / "v")
    assert code == 1 and "manifest.json" in err
    write_manifest(tok, Manifest(stage="tokenize", config={}, config_hash="t", input_hash=None))
    code, _, err = run_cli("build-vocab", "--input", tok, "--output", tmp_path / "v")
    assert code == 1 and "empty corpus" in err and "Traceback" not in err
    (tok / "train").mkdir()
    (tok / "train/shard-00000.txt.gz").write_bytes(b"")
    info = ShardInfo.of_file(tok, "pretokenizer.json")
    shard = ShardInfo.of_file(tok, "train/shard-00000.txt.gz", "train", {"words": 3})
    write_manifest(tok, Manifest(stage="tokenize", config={}, config_hash="t", input_hash=None, files=[info],
                                 shards=[shard]))
    code, _, err = run_cli("build-vocab", "--input", tok, "--output", tmp_path / "v2")
    assert code == 1 and "pretokenizer.json is missing or damaged" in err


@pytest.mark.slow
@pytest.mark.parametrize("kind, model, size", [("bert", "wordpiece", 160), ("byte-level", "bpe", 640),
                                               ("metaspace", "wordpiece", 440)])
def test_training_is_reproducible_across_processes(tmp_path, kind, model, size):
    """Two fresh processes (different hash seeds) train byte-identical tokenizers (tokenizers#1794)."""
    import subprocess
    import sys

    clean = make_clean_dir(tmp_path / "clean", sample_docs(400, seed=31), shards=2)

    def mlmctl(*args):
        proc = subprocess.run([sys.executable, "-m", "mlmctl", *map(str, args)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr

    mlmctl("tokenize", "--input", clean, "--output", tmp_path / "tok", "--set", f"pretokenizer.kind={kind}")
    for run in ("a", "b"):
        # A vocabulary smaller than the corpus supports, so merges with tied counts do get cut.
        mlmctl("build-vocab", "--input", tmp_path / "tok", "--output", tmp_path / run, "--set", f"model={model}",
               "--set", f"vocab_size={size}", "--set", "min_frequency=1")
    assert json.loads((tmp_path / "a/stats.json").read_text())["vocab_size"] == size  # the cut happened
    assert (tmp_path / "a/tokenizer.json").read_bytes() == (tmp_path / "b/tokenizer.json").read_bytes()
    assert manifest_hash(tmp_path / "a") == manifest_hash(tmp_path / "b")


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_resumes_both_stages(tmp_path):
    """A real kill -9 in the middle of tokenize and of build-vocab; the reruns finish the same output."""
    import os
    import signal
    import subprocess
    import sys

    clean = make_clean_dir(tmp_path / "clean", sample_docs(3000, seed=41), shards=30)

    def killed_mid_run(stage, *args):
        """Run it under MLMCTL_TEST_KILL: SIGKILLed, workers and all, once its first unit is done."""
        proc = subprocess.run([sys.executable, "-m", "mlmctl", stage, *map(str, args)], capture_output=True,
                              text=True, start_new_session=True, env={**os.environ, "MLMCTL_TEST_KILL": f"{stage}:1"})
        return proc.returncode == -signal.SIGKILL

    def finish(*args):
        proc = subprocess.run([sys.executable, "-m", "mlmctl", *map(str, args)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    tok_args = ("tokenize", "--input", clean, "--output", tmp_path / "tok")
    assert killed_mid_run(*tok_args)
    assert list((tmp_path / "tok/.work/tokenize").glob("unit-*/done.json"))
    assert not (tmp_path / "tok/manifest.json").exists()
    assert "reusing" in finish(*tok_args)
    finish("tokenize", "--input", clean, "--output", tmp_path / "tok-ref")
    assert manifest_hash(tmp_path / "tok") == manifest_hash(tmp_path / "tok-ref")

    bv_args = ("build-vocab", "--input", tmp_path / "tok", "--output", tmp_path / "vocab", "--set", "vocab_size=500")
    assert killed_mid_run(*bv_args)
    assert list((tmp_path / "vocab/.work/index").glob("unit-*/done.json"))
    assert not (tmp_path / "vocab/manifest.json").exists()
    assert not (tmp_path / "vocab/tokenizer.json").exists()
    err = finish(*bv_args)
    assert "reusing" in err and "training" not in err
    finish("build-vocab", "--input", tmp_path / "tok", "--output", tmp_path / "vocab-ref", "--set", "vocab_size=500")
    assert manifest_hash(tmp_path / "vocab") == manifest_hash(tmp_path / "vocab-ref")
    vd = open_vocab_dir(tmp_path / "vocab")
    assert vd.split("train").n_docs == 3000
