"""tokenize `index_with`: ids written in the pass that makes the words, adopted by build-vocab `from`.

The promise: the two routes from text to ids (tokenize, then build-vocab indexing; or tokenize
with `index_with`, then build-vocab adopting) give byte-identical build-vocab output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("tokenizers")

from test_build_vocab import NASTY, build  # noqa: E402  (tests/stages is on sys.path)
from test_tokenize import make_clean_dir, sample_docs  # noqa: E402

from mlmctl.token_ids import open_vocab_dir  # noqa: E402

DOCS = sample_docs(70, seed=31) + NASTY


def _files(d: Path) -> dict[str, bytes]:
    """Every file of a stage directory but its manifest (whose input hash names the route)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _routes(run_cli, tmp: Path, tokenizer: Path, docs, *, kind="bert", tok_sets=(), workers="2"):
    """(tokens, vocab) of the plain route and of the `index_with` route, on the same clean dir."""
    clean = make_clean_dir(tmp / "clean", docs, shards=3)
    out = {}
    for route, extra in (("plain", ()), ("fused", ("--set", f"index_with={tokenizer}"))):
        code, _, err = run_cli("tokenize", "--input", clean, "--output", tmp / route / "tok", "--workers", workers,
                               "--set", f"pretokenizer.kind={kind}", *tok_sets, *extra)
        assert code == 0, err
        code, _, err = run_cli("build-vocab", "--input", tmp / route / "tok", "--output", tmp / route / "vocab",
                               "--set", f"from={tokenizer}", "--workers", workers)
        assert code == 0, err
        out[route] = (tmp / route / "tok", tmp / route / "vocab", err)
    return out


@pytest.mark.parametrize("kind", ["bert", "metaspace"])
def test_both_routes_give_identical_bytes_and_the_ids_are_adopted(tmp_path, run_cli, kind):
    tokenizer = build(run_cli, tmp_path / "v", DOCS, kind=kind) / "tokenizer.json"
    # U+2060 survives the metaspace normalizer: inside a word it is text, not a word joiner.
    docs = DOCS + ["A word\u2060joiner inside a word, and more text."]
    r = _routes(run_cli, tmp_path, tokenizer, docs, kind=kind)
    (ptok, pvocab, _), (ftok, fvocab, err) = r["plain"], r["fused"]
    assert "adopting" in err, err
    assert _files(pvocab) == _files(fvocab)
    # tokenize's own outputs do not change either; the index files come in addition.
    plain, fused = _files(ptok), _files(ftok)
    assert {k: v for k, v in fused.items() if k in plain} == plain
    extra = sorted(set(fused) - set(plain))
    assert extra and all(k.endswith((".ids.bin", ".wstart.bin", "_ends.bin", ".token_counts.bin")) for k in extra)
    # Adopted means linked, not recomputed.
    assert os.path.samefile(ftok / "train/shard-00000.ids.bin", fvocab / "train/shard-00000.ids.bin")
    vd = open_vocab_dir(fvocab)
    tok = vd.tokenizer()
    enc = tok.encode("A word\u2060joiner inside a word, and more text.", add_special_tokens=False).ids
    stream = vd.split("train").tokens(0, vd.split("train").n_tokens).tolist()
    assert any(stream[i:i + len(enc)] == enc for i in range(len(stream) - len(enc) + 1))


def test_segmented_chinese_word_starts_are_identical(tmp_path, run_cli):
    pytest.importorskip("rjieba")
    from test_build_vocab import cjk_docs

    docs = cjk_docs(60, seed=3) + ["北京是中国的首都。我们在北京大学学习自然语言处理。"] * 3
    tokenizer = build(run_cli, tmp_path / "v", docs, vocab_size=3000) / "tokenizer.json"
    r = _routes(run_cli, tmp_path, tokenizer, docs, tok_sets=("--set", "segment.kind=jieba"))
    assert "adopting" in r["fused"][2]
    assert _files(r["plain"][1]) == _files(r["fused"][1])
    ws = open_vocab_dir(r["fused"][1]).split("train")
    assert not ws.word_starts(0, ws.n_tokens).all()  # some Chinese words span characters


def test_tasks_resume_and_another_vocabulary(tmp_path, run_cli):
    tokenizer = build(run_cli, tmp_path / "v", DOCS) / "tokenizer.json"
    clean = make_clean_dir(tmp_path / "clean", DOCS, shards=4)
    sets = ("--set", f"index_with={tokenizer}")

    def tok(out, *args):
        return run_cli("tokenize", "--input", clean, "--output", tmp_path / out, *sets, *args)

    assert tok("w1", "--workers", "1")[0] == 0
    for t in ("0/2", "1/2"):
        assert tok("t2", "--task", t)[0] == 0
    assert tok("t2")[0] == 0
    assert _files(tmp_path / "w1") == _files(tmp_path / "t2")
    code, _, err = tok("w1")
    assert code == 0 and "up to date" in err

    # build-vocab with another vocabulary indexes the text itself, as if there were no ids.
    other = build(run_cli, tmp_path / "o", sample_docs(40, seed=5), vocab_size=400) / "tokenizer.json"
    plain = make_clean_dir(tmp_path / "clean2", DOCS, shards=4)
    assert run_cli("tokenize", "--input", plain, "--output", tmp_path / "plain")[0] == 0
    for src, out in (("w1", "a"), ("plain", "b")):
        code, _, err = run_cli("build-vocab", "--input", tmp_path / src, "--output", tmp_path / out,
                               "--set", f"from={other}")
        assert code == 0 and "adopting" not in err, err
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_bad_index_with_is_one_line_before_any_work(tmp_path, run_cli):
    clean = make_clean_dir(tmp_path / "clean", DOCS[:10])
    metaspace = build(run_cli, tmp_path / "m", DOCS, kind="metaspace") / "tokenizer.json"
    (tmp_path / "junk.json").write_text('{"hello": 1}')
    cases = {tmp_path / "missing.json": "does not exist", tmp_path / "junk.json": "not a tokenizers",
             metaspace: "set `pretokenizer` to that tokenizer's settings"}
    for path, words in cases.items():
        code, _, err = run_cli("tokenize", "--input", clean, "--output", tmp_path / "out",
                               "--set", f"index_with={path}")
        assert code == 1 and words in err and "`index_with`" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "out/manifest.json").exists()


def test_the_manifest_records_what_build_vocab_checks(tmp_path, run_cli):
    from mlmctl.manifest import read_manifest
    from mlmctl.shards import file_sha256

    tokenizer = build(run_cli, tmp_path / "v", DOCS) / "tokenizer.json"
    clean = make_clean_dir(tmp_path / "clean", DOCS)
    assert run_cli("tokenize", "--input", clean, "--output", tmp_path / "tok",
                   "--set", f"index_with={tokenizer}")[0] == 0
    m = read_manifest(tmp_path / "tok", "tokenize")
    assert m.extra["index_with"] == {"sha256": file_sha256(tokenizer), "dtype": "uint16"}
    ids = [f for f in m.files if f.name.endswith(".ids.bin")]
    assert len(ids) == len(m.shards) and all(f.records["tokens"] * 2 == f.bytes for f in ids)
    assert json.loads((tmp_path / "tok/stats.json").read_text())["train"]["words"] == sum(
        f.records["words"] for f in ids if f.split == "train")
    code, out, _ = run_cli("inspect", tmp_path / "tok")
    assert code == 0 and f"sha256={file_sha256(tokenizer)}" in out


def test_the_documented_recipe_runs(tmp_path, run_cli):
    """The `index-with` block of docs/tokenize.md, run as it stands in a project directory."""
    import re
    import subprocess
    import sys

    doc = (Path(__file__).resolve().parents[2] / "docs" / "tokenize.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- recipe: index-with\b.*?-->\s*```\w*\n(.*?)```", doc, re.S).group(1)
    build(run_cli, tmp_path / "data", DOCS)  # data/vocab, the vocabulary the recipe reuses
    make_clean_dir(tmp_path / "data/clean2", sample_docs(30, seed=8))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    run = subprocess.run(["bash", "-euc", block], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "adopting" in run.stderr
    assert open_vocab_dir(tmp_path / "data/vocab2").split("train").n_tokens > 0


@pytest.mark.parametrize("damage", ["sent_ends", "token_counts", "ids"])
def test_index_files_rewritten_with_a_matching_manifest_are_refused(tmp_path, run_cli, damage):
    """A crafted tokenize directory: an index file altered and the manifest rewritten to match."""
    import numpy as np

    from mlmctl.manifest import read_manifest, write_manifest
    from mlmctl.shards import ShardInfo

    tokenizer = build(run_cli, tmp_path / "v", DOCS) / "tokenizer.json"
    clean = make_clean_dir(tmp_path / "clean", DOCS)
    tok = tmp_path / "tok"
    assert run_cli("tokenize", "--input", clean, "--output", tok, "--set", f"index_with={tokenizer}")[0] == 0
    name = {"sent_ends": "train/shard-00000.sent_ends.bin", "token_counts": "train/shard-00000.token_counts.bin",
            "ids": "train/shard-00000.ids.bin"}[damage]
    path = tok / name
    dtype = "<u2" if damage == "ids" else "<i8"
    a = np.fromfile(path, dtype=dtype)
    if damage == "sent_ends":
        a[[0, 1]] = a[[1, 0]]  # offsets that fall back
    else:
        a[0] += 1  # another token (or a count that the ids do not have)
    path.write_bytes(a.astype(dtype).tobytes())
    m = read_manifest(tok, verify=False)
    m.files = [ShardInfo.of_file(tok, f.name, f.split, f.records) if f.name == name else f for f in m.files]
    write_manifest(tok, m)
    code, _, err = run_cli("build-vocab", "--input", tok, "--output", tmp_path / "vocab", "--set", f"from={tokenizer}")
    assert code == 1 and "disagree" in err and "Traceback" not in err, err
    assert not (tmp_path / "vocab/manifest.json").exists()


def test_a_replaced_index_with_file_is_a_changed_input(tmp_path, run_cli):
    import shutil

    first = build(run_cli, tmp_path / "a", DOCS) / "tokenizer.json"
    second = build(run_cli, tmp_path / "b", DOCS, vocab_size=400) / "tokenizer.json"
    tokenizer = tmp_path / "tokenizer.json"
    shutil.copy(first, tokenizer)
    clean = make_clean_dir(tmp_path / "clean", DOCS[:20])
    args = ("tokenize", "--input", clean, "--output", tmp_path / "tok", "--set", f"index_with={tokenizer}")
    assert run_cli(*args)[0] == 0
    shutil.copy(second, tokenizer)
    code, _, err = run_cli(*args)
    assert code == 1 and "`index_with`" in err and "changed" in err, err


def test_outputs_do_not_depend_on_the_word_table_a_process_keeps(tmp_path, run_cli, monkeypatch):
    """Workers keep one word table across shards (mlmctl.indexing.word_table), cut to its first-met
    half past a size limit: a table full of other shards' words, or one cut at every shard (and then
    grown again by the words it lost), gives the same bytes."""
    import mlmctl.indexing

    tokenizer = build(run_cli, tmp_path / "v", DOCS) / "tokenizer.json"
    clean = make_clean_dir(tmp_path / "clean", DOCS, shards=4)
    outs = []
    for limit in (10**9, 10):
        monkeypatch.setattr(mlmctl.indexing, "TABLE_LIMIT", limit)
        for extra in ((), ("--set", f"index_with={tokenizer}")):
            out = tmp_path / f"tok-{limit}-{len(extra)}"
            assert run_cli("tokenize", "--input", clean, "--output", out, "--workers", "1", *extra)[0] == 0
            outs.append(_files(out))
        out = tmp_path / f"vocab-{limit}"
        assert run_cli("build-vocab", "--input", tmp_path / f"tok-{limit}-0", "--output", out,
                       "--set", f"from={tokenizer}", "--workers", "1")[0] == 0
        outs.append(_files(out))
    assert outs[:3] == outs[3:]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A vocabulary and a tokenize directory indexed with it (built once for the fuzz tests)."""
    from mlmctl.cli import main

    tmp = tmp_path_factory.mktemp("fuzz")
    clean = make_clean_dir(tmp / "clean", DOCS, shards=2)
    for args in (("tokenize", "--input", clean, "--output", tmp / "plain"),
                 ("build-vocab", "--input", tmp / "plain", "--output", tmp / "vocab", "--set", "vocab_size=500",
                  "--set", "min_frequency=1")):
        assert main([str(a) for a in args]) == 0
    tokenizer = tmp / "vocab/tokenizer.json"
    assert main(["tokenize", "--input", str(clean), "--output", str(tmp / "tok"), "--set",
                 f"index_with={tokenizer}"]) == 0
    return tmp, tokenizer


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_crafted_index_files_are_refused_or_harmless(indexed, tmp_path, run_cli, data):
    """Random bytes, truncation or growth in any adopted index file, or junk in the records that
    say what to adopt, with the manifest rewritten to match: build-vocab refuses in one line,
    indexes the text instead, or writes a directory that reads back whole; never a traceback."""
    import shutil
    import tempfile

    from mlmctl.manifest import read_manifest, write_manifest
    from mlmctl.shards import ShardInfo

    src, tokenizer = indexed
    work = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example: tmp_path is shared by all of them
    tok = work / "tok"
    shutil.copytree(src / "tok", tok)
    m = read_manifest(tok, verify=False)
    index_files = [f for f in m.files if f.name.endswith(".bin")]
    target = data.draw(st.sampled_from(index_files))
    path = tok / target.name
    raw = bytearray(path.read_bytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "grow", "records"]))
    records = dict(target.records)
    if how == "flip" and raw:
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        raw = raw[:data.draw(st.integers(0, max(len(raw) - 1, 0)))]
    elif how == "grow":
        raw += bytes(data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=16)))
    elif records:
        key = data.draw(st.sampled_from(sorted(records)))
        records[key] = data.draw(st.one_of(st.integers(-2**63, 2**63), st.none(), st.text(max_size=3)))
    path.write_bytes(bytes(raw))
    m.files = [ShardInfo.of_file(tok, f.name, f.split, records) if f.name == target.name else f for f in m.files]
    write_manifest(tok, m)
    code, _, err = run_cli("build-vocab", "--input", tok, "--output", work / "vocab", "--set", f"from={tokenizer}")
    assert "Traceback" not in err
    if code:
        errors = [line for line in err.splitlines() if "error" in line]
        assert code == 1 and len(errors) == 1 and err.strip().endswith(errors[0]), err
    else:
        split = open_vocab_dir(work / "vocab").split("train")
        split.tokens(0, split.n_tokens)
        for d in range(split.n_docs):
            split.document(d)


def test_a_word_table_cut_keeps_the_words_met_first_with_their_ids(tmp_path, run_cli):
    """WordIds.first_met: numbers 0..k-1 and their ids unchanged, the rest forgotten and learned anew."""
    from mlmctl.indexing import WordIds, model_only

    tokenizer = build(run_cli, tmp_path / "v", DOCS) / "tokenizer.json"
    table = WordIds(model_only(str(tokenizer), "x"))
    words = " ".join(DOCS).split()[:400]
    full_ids, _, full_counts = table.encode(words)
    distinct = len(table.number)
    cut = table.first_met(distinct // 2)
    assert list(cut.number) == list(table.number)[:distinct // 2]
    assert len(cut.first) == len(cut.length) == distinct // 2 and len(cut.flat) == int(cut.length.sum())
    ids, _, counts = cut.encode(words)  # the forgotten words come back with new numbers, same ids
    assert ids.tolist() == full_ids.tolist() and counts.tolist() == full_counts.tolist()
    assert len(cut.number) == distinct
