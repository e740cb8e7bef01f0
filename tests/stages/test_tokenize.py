"""tokenize stage: format, sentence/pre-token invariants, workers, resume, bad input."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("tokenizers")

from mlmctl.manifest import Manifest, manifest_hash, read_manifest, write_manifest  # noqa: E402
from clean_fixture import write_clean_shard  # noqa: E402

WORDS = (
    "the of and to in is was for on that with as by at from his her it an are were which "
    "model data text token sentence corpus learning language pretraining vocabulary "
    "Dr. Smith e.g. U.S. 3.14 naïve café résumé Zürich"
).split()
CJK = "北京大学的学生在图书馆里学习中文和数学我们今天很高兴"
EXTRA = ["🙂", "ÅÉÎ", "\u00a0", "—", "(", ")", '"', "'", "\t", "x\u200by"]


def sample_docs(n: int, seed: int = 0, cjk: bool = True) -> list[str]:
    """Generated documents: English-like sentences, some Chinese, some odd characters."""
    rng = random.Random(seed)
    docs = []
    for d in range(n):
        sents = []
        for _ in range(rng.randint(1, 6)):
            if cjk and rng.random() < 0.2:
                sents.append("".join(rng.choice(CJK) for _ in range(rng.randint(3, 15))) + rng.choice("。！？；"))
                continue
            words = [rng.choice(WORDS) for _ in range(rng.randint(2, 14))]
            if rng.random() < 0.2:
                words.insert(rng.randint(0, len(words)), rng.choice(EXTRA))
            s = " ".join(words)
            sents.append(s[0].upper() + s[1:] + rng.choice([".", "!", "?", "...", '."']))
        sep = "\n\n" if rng.random() < 0.2 else rng.choice([" ", "\n"])
        docs.append(sep.join(sents))
    return docs


def make_clean_dir(out: Path, docs: list[str], shards: int = 2, validation: list[str] | None = None) -> Path:
    """A finished `clean` directory holding `docs` (train) and `validation` docs."""
    out.mkdir(parents=True, exist_ok=True)
    infos = []
    for split, items in (("train", docs), ("validation", validation if validation is not None else docs[:3])):
        per = max(1, -(-len(items) // shards))
        for k in range(0, max(len(items), 1), per):
            chunk = items[k:k + per]
            if not chunk:
                continue
            lines = [json.dumps({"id": f"{split}-{k + i}", "text": text, "source": "test"})
                     for i, text in enumerate(chunk)]
            infos.append(write_clean_shard(out, split, k // per, lines))
    write_manifest(out, Manifest(stage="clean", config={}, config_hash="test", input_hash=None, shards=infos))
    return out


def run_tokenize(run_cli, clean: Path, out: Path, *args: str):
    code, stdout, err = run_cli("tokenize", "--input", clean, "--output", out, *args)
    assert code == 0, err
    return stdout, err


def expected_docs(docs: list[str], pipeline: dict, newline_is_boundary: bool = False) -> list[list[list[str]]]:
    """What tokenize must write: per non-empty document, per non-empty sentence, the pre-tokens."""
    from mlmctl.pretokenize import Pretokenizer
    from mlmctl.sentences import split_sentences

    pre = Pretokenizer(pipeline)
    out = []
    for text in docs:
        sents = [w for w in (pre.words(s) for s in split_sentences(text, newline_is_boundary)) if w]
        if sents:
            out.append(sents)
    return out


def read_documents(path: Path):
    """The documents of a tokenized shard as lists of sentences (lists of pre-tokens); word
    joiners (Chinese segmentation) read as spaces, as build-vocab reads them."""
    from mlmctl.pretokenize import WORD_JOINER

    doc: list[list[str]] = []
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").split("\n"):
        if line:
            doc.append(line.replace(WORD_JOINER, " ").split(" "))
        elif doc:
            yield doc
            doc = []
    if doc:
        yield doc


def written_docs(tok_dir: Path, split: str) -> list[list[list[str]]]:
    docs = []
    for path in sorted((tok_dir / split).glob("shard-*.txt.gz")):
        docs += list(read_documents(path))
    return docs


@pytest.mark.parametrize("kind", ["bert", "byte-level", "metaspace"])
def test_output_is_sentences_of_pretokens(tmp_path, run_cli, kind):
    docs = sample_docs(60, seed=3) + ["   ", "\n\n", "Tab\tand\u00a0nbsp,\nnew line.\r\nCR too. 🙂 done"]
    clean = make_clean_dir(tmp_path / "clean", docs, shards=3)
    out = tmp_path / "tok"
    run_tokenize(run_cli, clean, out, "--set", f"pretokenizer.kind={kind}")
    pipeline = json.loads((out / "pretokenizer.json").read_text())
    assert pipeline["kind"] == kind
    assert written_docs(out, "train") == expected_docs(docs, pipeline)
    m = read_manifest(out, "tokenize")
    assert m.records("docs", "train") == len(expected_docs(docs, pipeline))
    assert m.records("empty_docs", "train") == 2
    # The line format itself: single spaces, one blank line after each document, no CR.
    raw = gzip.decompress((out / "train/shard-00000.txt.gz").read_bytes()).decode("utf-8")
    assert "  " not in raw and "\r" not in raw and "\n\n\n" not in raw and raw.endswith("\n\n")
    for line in raw.split("\n"):
        assert line == line.strip(" ")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["train"]["words"] == sum(len(s) for d in expected_docs(docs, pipeline) for s in d)


def test_word_counts_sidecar(tmp_path, run_cli):
    docs = sample_docs(40, seed=4)
    clean = make_clean_dir(tmp_path / "clean", docs, shards=2)
    out = tmp_path / "tok"
    run_tokenize(run_cli, clean, out)
    pipeline = json.loads((out / "pretokenizer.json").read_text())
    from collections import Counter

    want = Counter(w for d in expected_docs(docs[:20], pipeline) for s in d for w in s)
    rows = gzip.decompress((out / "train/shard-00000.counts.tsv.gz").read_bytes()).decode().splitlines()
    got = {w: int(c) for w, c in (r.split("\t") for r in rows)}
    assert got == dict(want)
    counts = [int(r.split("\t")[1]) for r in rows]
    assert counts == sorted(counts, reverse=True)
    m = read_manifest(out, "tokenize")
    assert any(f.name == "train/shard-00000.counts.tsv.gz" for f in m.files)


def test_cjk_chars_become_single_pretokens():
    from mlmctl.pretokenize import Pretokenizer, PretokenizerConfig, pipeline_json

    pre = Pretokenizer(pipeline_json(PretokenizerConfig()))
    assert pre.words("北京大学很好。") == ["北", "京", "大", "学", "很", "好", "。"]
    assert pre.words("Héllo, World!") == ["hello", ",", "world", "!"]
    cased = Pretokenizer(pipeline_json(PretokenizerConfig(lowercase=False)))
    assert cased.words("Héllo") == ["Héllo"]


ODD = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(list("\n\r\t\x0b\x0c\x85\u2028\u2029\u3000\u00a0\u200b\ufeff 。！？.")),
    max_size=60,
)


@pytest.mark.parametrize("kind", ["bert", "byte-level", "metaspace"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=ODD)
def test_any_unicode_survives_the_line_format(kind, text):
    """Whatever the text, every sentence's pre-tokens go through one line and come back exactly."""
    from mlmctl.pretokenize import Pretokenizer, PretokenizerConfig, pipeline_json
    from mlmctl.sentences import split_sentences

    pre = _pre_cache.setdefault(kind, Pretokenizer(pipeline_json(PretokenizerConfig(kind=kind))))
    for sentence in split_sentences(text):
        words = pre.words(sentence)
        if words:
            line = " ".join(words)
            assert line.split(" ") == words
            assert line.splitlines() == [line]  # no \n, \r, \x1c-\x1e, \x85, \u2028 ...


_pre_cache: dict = {}


def test_workers_and_tasks_give_identical_bytes(tmp_path, run_cli):
    clean = make_clean_dir(tmp_path / "clean", sample_docs(120, seed=5), shards=4)
    run_tokenize(run_cli, clean, tmp_path / "w1", "--workers", "1")
    run_tokenize(run_cli, clean, tmp_path / "w2", "--workers", "2")
    for t in ("0/3", "2/3", "1/3"):
        run_tokenize(run_cli, clean, tmp_path / "t3", "--task", t)
    assert not (tmp_path / "t3/manifest.json").exists()
    run_tokenize(run_cli, clean, tmp_path / "t3")
    ref = {s.name: s.sha256 for s in read_manifest(tmp_path / "w1", "tokenize").shards}
    assert len(ref) == 4 + 3  # train shards + validation shards
    for other in ("w2", "t3"):
        m = read_manifest(tmp_path / other, "tokenize")
        assert {s.name: s.sha256 for s in m.shards} == ref
    assert manifest_hash(tmp_path / "w1") == manifest_hash(tmp_path / "w2")


def test_killed_run_leaves_nothing_finished_and_resumes(tmp_path, run_cli, monkeypatch):
    from mlmctl.stages import tokenize as stage

    clean = make_clean_dir(tmp_path / "clean", sample_docs(80, seed=6), shards=4)
    real = stage._tokenize_shard
    calls = []

    def dies_on_third(unit, part):
        calls.append(unit.index)
        if len(calls) == 3:
            # Half a file, as a kill would leave it, then the kill.
            (part / f"shard-{unit.index:05d}.txt.gz").write_bytes(b"\x1f\x8b partial")
            raise KeyboardInterrupt
        return real(unit, part)

    monkeypatch.setattr(stage, "_tokenize_shard", dies_on_third)
    out = tmp_path / "tok"
    code, _, _ = run_cli("tokenize", "--input", clean, "--output", out)
    assert code == 130  # the CLI's Ctrl-C exit
    assert not (out / "manifest.json").exists()
    assert not list(out.glob("*/shard-*"))  # nothing outside .work looks like output
    monkeypatch.setattr(stage, "_tokenize_shard", real)
    _, err = run_tokenize(run_cli, clean, out)
    assert "reusing 2 completed" in err
    run_tokenize(run_cli, clean, tmp_path / "ref")
    assert manifest_hash(out) == manifest_hash(tmp_path / "ref")
    _, err = run_tokenize(run_cli, clean, out)
    assert "up to date" in err


def test_empty_corpus_is_a_clear_error(tmp_path, run_cli):
    clean = make_clean_dir(tmp_path / "clean", [], validation=[])
    code, _, err = run_cli("tokenize", "--input", clean, "--output", tmp_path / "tok")
    assert code == 1 and "empty corpus" in err and "Traceback" not in err
    clean2 = make_clean_dir(tmp_path / "clean2", ["   ", "\t\n"], validation=[])
    code, _, err = run_cli("tokenize", "--input", clean2, "--output", tmp_path / "tok2")
    assert code == 1 and "no words" in err
    assert [line for line in err.splitlines() if "[tokenize] " not in line] == [err.splitlines()[-1]]


def test_bad_record_is_a_clear_error(tmp_path, run_cli):
    out = tmp_path / "clean"
    good = json.dumps({"id": "a", "text": "Fine text.", "source": "x"})
    info = write_clean_shard(out, "train", 0, [good, "{not json"])
    write_manifest(out, Manifest(stage="clean", config={}, config_hash="t", input_hash=None, shards=[info]))
    code, _, err = run_cli("tokenize", "--input", out, "--output", tmp_path / "tok")
    assert code == 1 and "shard-00000.jsonl.gz:2" in err and "Traceback" not in err


def test_lone_surrogates_are_repaired_and_counted(tmp_path, run_cli):
    clean = tmp_path / "clean"
    info = write_clean_shard(clean, "train", 0, ['{"id": "a", "text": "Bad \\ud800 char here. Fine.", "source": "x"}'])
    write_manifest(clean, Manifest(stage="clean", config={}, config_hash="t", input_hash=None, shards=[info]))
    out = tmp_path / "tok"
    run_tokenize(run_cli, clean, out)
    assert read_manifest(out, "tokenize").records("repaired_docs") == 1
    # The surrogate became U+FFFD, which BERT's clean_text then drops.
    assert written_docs(out, "train") == [[["bad", "char", "here", "."], ["fine", "."]]]


def test_config_changes_need_force(tmp_path, run_cli):
    clean = make_clean_dir(tmp_path / "clean", sample_docs(10, seed=7))
    out = tmp_path / "tok"
    run_tokenize(run_cli, clean, out)
    code, _, err = run_cli("tokenize", "--input", clean, "--output", out, "--set", "pretokenizer.lowercase=false")
    assert code == 1 and "--force" in err and "pretokenizer.lowercase" in err
    run_tokenize(run_cli, clean, out, "--set", "pretokenizer.lowercase=false", "--force")
    assert read_manifest(out, "tokenize").config["pretokenizer"]["lowercase"] is False


@pytest.mark.parametrize("kind, prefix", [("bert", True), ("byte-level", True), ("metaspace", True), ("metaspace", False)])
@settings(max_examples=150, deadline=None)
@given(text=ODD)
def test_batched_sentence_words_equal_one_by_one(kind, prefix, text):
    """tokenize's per-document fast path gives exactly the per-sentence pre-tokens."""
    from mlmctl.pretokenize import Pretokenizer, PretokenizerConfig, pipeline_json
    from mlmctl.sentences import split_sentences

    key = (kind, prefix)
    if key not in _pre_cache:
        _pre_cache[key] = Pretokenizer(pipeline_json(PretokenizerConfig(kind=kind, add_prefix_space=prefix)))
    pre = _pre_cache[key]
    sentences = split_sentences(text + " Next one. 再来。Last")
    assert pre.sentence_words(sentences) == [pre.words(s) for s in sentences]


FAST_TEXT = st.text(
    alphabet=st.characters(max_codepoint=0x7F)
    | st.sampled_from(list("ÀÉÎõøÿßÆ–—‘’“”、。「」『』北京大学的学生éü\u00a0\u0301×«ǅΣς€")),
    max_size=80,
)


@pytest.mark.parametrize("lowercase, strip_accents, normalization, split_cjk", [
    (True, None, "none", True), (False, None, "none", True), (True, False, "nfc", True),
    (False, True, "nfkc", False), (True, None, "nfkc", False),
])
@settings(max_examples=300, deadline=None)
@given(text=FAST_TEXT)
def test_fast_bert_path_equals_the_library(lowercase, strip_accents, normalization, split_cjk, text):
    """The C-speed path of the BERT pipeline gives the `tokenizers` normalizer + pre-tokenizer's words,
    and leaves every sentence with a character it does not cover to the library."""
    from mlmctl.pretokenize import Pretokenizer, PretokenizerConfig, pipeline_json

    key = ("fast", lowercase, strip_accents, normalization, split_cjk)
    if key not in _pre_cache:
        cfg = PretokenizerConfig(lowercase=lowercase, strip_accents=strip_accents,
                                 unicode_normalization=normalization, split_cjk=split_cjk)
        _pre_cache[key] = Pretokenizer(pipeline_json(cfg))
    pre = _pre_cache[key]
    fast = pre.fast.words(text)
    assert fast is None or fast == pre.words(text)
    if text.isascii() or (split_cjk and all(c in "ÀÉÎõøÿßÆ–—‘’“”、。「」『』北京大学的学生" or c.isascii() for c in text)):
        assert fast is not None  # the characters it claims to cover do take the fast path
    assert pre.sentence_words([text, "Zürich ǅ €.", text]) == [pre.words(text), pre.words("Zürich ǅ €."), pre.words(text)]


def test_fast_bert_path_only_for_bert_pipelines():
    from mlmctl.pretokenize import Pretokenizer, PretokenizerConfig, pipeline_json

    assert Pretokenizer(pipeline_json(PretokenizerConfig())).fast is not None
    for kind in ("byte-level", "metaspace"):
        assert Pretokenizer(pipeline_json(PretokenizerConfig(kind=kind))).fast is None
