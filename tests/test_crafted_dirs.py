"""Crafted stage directories: a shard's bytes are checked against its manifest, but a manifest can
be rewritten to match, so every reader of a stage's output checks what it reads. Every JSON
mlmctl reads back goes through mlmctl.safe_json (nested 100,000 deep, a 5,000-digit number, not
an object: one line or recomputed, never a RecursionError traceback); tokenize's word counts and
pre-tokenizer are checked row by row (hypothesis crafts them)."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent / "stages"))
from test_tokenize import make_clean_dir, sample_docs  # noqa: E402

HOSTILE_LINES = {
    "deep": b'{"text": "a b c", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "huge number": b'{"text": "a b c", "id": ' + b"9" * 5000 + b"}",
    "not an object": b'["a", "b"]',
    "not JSON": b'{"text": "a b c"',
}


def test_no_json_parsing_outside_safe_json():
    """The one home: `json.loads`/`json.load` appear in mlmctl/safe_json.py only."""
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "mlmctl").rglob("*.py")) if p.name != "safe_json.py"
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"(?<![\w.])json\.loads?\(", line)]
    assert not offenders, f"parse untrusted JSON with mlmctl.safe_json: {offenders}"


def _rewrite(stage_dir: Path, name: str, body: bytes) -> None:
    """Replace one listed file of a finished stage directory, and its manifest entry to match."""
    path = stage_dir / name
    path.write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    entry = next(s for s in manifest["shards"] + manifest["files"] if s["name"] == name)
    entry.update(bytes=path.stat().st_size, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    (stage_dir / "manifest.json").write_text(json.dumps(manifest))


def _crafted_clean(tmp_path: Path, line: bytes) -> Path:
    """A finished clean directory whose first train shard starts with `line`."""
    clean = make_clean_dir(tmp_path / "clean", sample_docs(30, seed=3), shards=1)
    name = "train/shard-00000.jsonl.gz"
    _rewrite(clean, name, line + b"\n" + gzip.decompress((clean / name).read_bytes()))
    return clean


@pytest.mark.parametrize("kind", list(HOSTILE_LINES))
@pytest.mark.parametrize("stage", ["tokenize", "demo-task"])
def test_a_crafted_clean_shard_line_is_one_line_naming_it(tmp_path, run_cli, stage, kind):
    clean = _crafted_clean(tmp_path, HOSTILE_LINES[kind])
    code, _, err = run_cli(stage, "--input", clean, "--output", tmp_path / "out")
    assert code == 1, err
    assert err.strip().splitlines()[-1].startswith(f"mlmctl: error: {stage}: ") and "shard-00000" in err and ":1" in err, err
    assert "Traceback" not in err and not (tmp_path / "out" / "manifest.json").exists()


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    from mlmctl.cli import main

    tmp = tmp_path_factory.mktemp("crafted")
    clean = make_clean_dir(tmp / "clean", sample_docs(60, seed=5), shards=1)
    assert main(["tokenize", "--input", str(clean), "--output", str(tmp / "tok")]) == 0
    return tmp / "tok"


COUNT_ROWS = st.one_of(
    st.tuples(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r"), max_size=6),
              st.sampled_from(["\t", " ", "\t\t", ""]),
              st.sampled_from(["1", "7", "0", "-3", "x", "", "9" * 30, "\u0663", " 4"])).map("".join),
    st.sampled_from(["abc\t5", "word\t12"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(COUNT_ROWS, min_size=1, max_size=6))
def test_crafted_word_counts_train_or_fail_in_one_line(tokenized, tmp_path_factory, rows):
    from mlmctl.cli import main

    tmp = tmp_path_factory.mktemp("counts")
    tok = tmp / "tok"
    import shutil

    shutil.copytree(tokenized, tok)
    _rewrite(tok, "train/shard-00000.counts.tsv.gz", "".join(r + "\n" for r in rows).encode())
    code = main(["build-vocab", "--input", str(tok), "--output", str(tmp / "vocab"), "--set", "vocab_size=200"])
    valid = all(r == "" or (r.count("\t") == 1 and r.split("\t")[0] and r.split("\t")[1].isascii()
                            and r.split("\t")[1].isdigit() and 0 < int(r.split("\t")[1]) < 10**18) for r in rows)
    assert code == (0 if valid else 1)


def test_a_crafted_pretokenizer_is_one_line(tokenized, tmp_path, run_cli):
    import shutil

    shutil.copytree(tokenized, tmp_path / "tok")
    _rewrite(tmp_path / "tok", "pretokenizer.json", b'{"normalizer": 5, "pre_tokenizer": "x", "kind": "bert"}')
    code, _, err = run_cli("build-vocab", "--input", tmp_path / "tok", "--output", tmp_path / "vocab")
    assert code == 1 and "pretokenizer.json is missing or damaged" in err and "Traceback" not in err, err


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["mode", "step", "loss", "labels", "n", "accuracy", "model_type", "shape", "dtype", "stage",
                         "id2label", "architectures", "hidden_size", "files", "shards", "config"]), inner, max_size=5),
    max_leaves=12)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["eval.json", "config.json", "metrics.jsonl", "manifest.json", "model.safetensors"]),
       value=JSON_VALUES)
def test_inspect_and_report_show_any_crafted_file_without_a_traceback(tmp_path_factory, which, value):
    """inspect shows what is there (a mangled file is a row saying so); report leaves out what it
    cannot use; neither ends in anything but its output or one error line."""
    import struct

    from mlmctl import inspect_dir, report
    from mlmctl.errors import MlmctlError

    d = tmp_path_factory.mktemp("crafted")
    body = json.dumps(value).encode()
    if which == "model.safetensors":
        (d / "config.json").write_text('{"model_type": "bert"}')
        body = struct.pack("<Q", len(body)) + body
    elif which == "metrics.jsonl":
        body = body + b"\n" + json.dumps({"step": 1, "loss": 2.0}).encode() + b"\n" + body + b"\n"
    (d / which).write_bytes(body)
    for show in (lambda: inspect_dir.describe(d), lambda: report.run([d], None, None)):
        try:
            show()
        except MlmctlError as e:  # one line, like "holds no eval.json"
            assert "\n" not in str(e)
