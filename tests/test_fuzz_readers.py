"""Property-based fuzzing of every reader and loader (issue 8): random bytes, truncations, deep
nesting, huge numbers and wrong types end in a clean result or one `mlmctl: error:` line (clean:
cleaned and counted), never a traceback, never a file written outside the output directory,
never a manifest for a failed run. Seeded (`derandomize`) so CI is reproducible."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlmctl.errors import MlmctlError

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Values that break naive parsers: deep nesting, numbers past int limits, wrong types.
HOSTILE_JSON = st.sampled_from([
    "[" * 100_000, "{" * 5000 + "}" * 5000, "[" * 3000 + "]" * 3000, "9" * 5000, "1e999", "-1", "NaN", "null",
    '"x"', "[]", "{}", "true", '"\\ud800"', "\x00",
])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _mutate(data: bytes, cut: int, junk: bytes) -> bytes:
    """A truncation of `data` followed by junk bytes."""
    return data[: cut % (len(data) + 1)] + junk


def _snapshot(root: Path, skip: Path) -> dict:
    out = {}
    for dirpath, _, files in os.walk(root):
        if Path(dirpath).is_relative_to(skip):
            continue
        for f in files:
            p = Path(dirpath) / f
            out[str(p)] = p.stat().st_mtime_ns
    return out


def _one_line(code: int, err: str) -> None:
    assert "Traceback" not in err
    if code:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 1 and len(lines) == 1 and lines[0].startswith("mlmctl: error: "), err


# --------------------------------------------------------------------------- clean's inputs

GOOD = "The committee met on Tuesday to discuss the new library budget and the opening hours.\n"


@settings(FUZZ, max_examples=12)
@given(name=st.sampled_from(["a.txt", "a.jsonl", "a.txt.gz", "a.jsonl.gz", "a.html", "a.md"]),
       body=st.binary(max_size=300) | HOSTILE_JSON.map(str.encode), cut=st.integers(0, 400), gz=st.booleans())
def test_clean_reads_anything_and_counts_what_it_drops(run_cli, name, body, cut, gz):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = root / "raw"
        raw.mkdir()
        (raw / "good.txt").write_text(GOOD)
        data = _mutate(json.dumps({"text": GOOD}).encode() + b"\n" + body, cut, body)
        (raw / name).write_bytes(gzip.compress(data) if gz else data)
        out = root / "out"
        before = _snapshot(root, out)
        code, _, err = run_cli("clean", "--input", raw, "--output", out, "--set", "validation_fraction=0")
        _one_line(code, err)
        assert code == 0  # one good file: the run always finishes, the rest is counted
        stats = json.loads((out / "stats.json").read_text())
        assert stats["documents_out"]["total"] >= 1 and (out / "manifest.json").is_file()
        assert _snapshot(root, out) == before


# --------------------------------------------------------------------------- labelled files


@settings(FUZZ, max_examples=80)
@given(ext=st.sampled_from(["tsv", "csv", "jsonl", "tsv.gz", "jsonl.gz"]),
       rows=st.lists(st.text(max_size=30) | HOSTILE_JSON, max_size=5), junk=st.binary(max_size=40),
       cut=st.integers(0, 300), gz=st.booleans())
def test_labelled_files_load_or_fail_with_one_input_error(ext, rows, junk, cut, gz):
    from mlmctl.labelled import read_labelled

    header = '{"text": "a", "label": 1}' if "jsonl" in ext else "text\tlabel" if "tsv" in ext else "text,label"
    data = _mutate(("\n".join([header, *rows]) + "\n").encode("utf-8", "surrogatepass"), cut, junk)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / f"f.{ext}"
        p.write_bytes(gzip.compress(data) if gz else data)
        try:
            d = read_labelled(p)
        except MlmctlError as e:
            # Several problems of one file come together (config.ConfigProblems), one line each.
            problems = getattr(e, "problems", None) or [str(e)]
            assert problems and all(p and "\n" not in p for p in problems)
        else:
            assert len(d.texts) == len(d.labels) >= 1


# --------------------------------------------------------------------------- manifests


@settings(FUZZ, max_examples=80)
@given(doc=JSON_VALUES | st.fixed_dictionaries(
    {"stage": JSON_VALUES, "config": JSON_VALUES, "config_hash": JSON_VALUES,
     "shards": st.lists(st.fixed_dictionaries({"name": JSON_VALUES, "bytes": JSON_VALUES, "sha256": JSON_VALUES,
                                               "records": JSON_VALUES}), max_size=2)}),
       raw=st.none() | HOSTILE_JSON | st.binary(max_size=50).map(lambda b: b.decode("latin-1")))
def test_read_manifest_accepts_or_refuses_with_one_line(doc, raw):
    from mlmctl.manifest import read_manifest

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "stage"
        d.mkdir()
        text = raw if raw is not None else json.dumps(doc)
        (d / "manifest.json").write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            read_manifest(d, "clean", verify=False)
        except MlmctlError as e:
            # Several problems of one file come together (config.ConfigProblems), one line each.
            problems = getattr(e, "problems", None) or [str(e)]
            assert problems and all(p and "\n" not in p for p in problems)


# --------------------------------------------------------------------------- model directories


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from test_labelled import make_tiny_model_dir

    root = tmp_path_factory.mktemp("fz")
    return make_tiny_model_dir(root, ["the cat sat on the mat", "a dog ran in the park"] * 10, hidden=16, layers=1)


SMALL_OR_BAD = st.sampled_from([-5, 0, 1, 2, 3, 16, 2**40]) | st.text(max_size=3) | st.none() | st.floats()
CONFIG_KEYS = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size", "hidden_dropout_prob", "pad_token_id", "hidden_act",
               "layer_norm_eps", "model_type"]


@settings(FUZZ, max_examples=60)
@given(changes=st.dictionaries(st.sampled_from(CONFIG_KEYS), SMALL_OR_BAD, max_size=3),
       target=st.sampled_from(["config.json", "model.safetensors", "tokenizer.json", "none"]),
       junk=st.binary(max_size=64) | HOSTILE_JSON.map(str.encode), cut=st.integers(0, 10_000))
def test_model_dirs_load_or_fail_with_one_line(run_cli, model_dir, changes, target, junk, cut):
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "m"
        shutil.copytree(model_dir, d)
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, **changes}))
        if target != "none":
            (d / target).write_bytes(_mutate((d / target).read_bytes(), cut, junk))
        before = _snapshot(Path(tmp), d / "nothing")
        code, _, err = run_cli("fill-mask", d, "the [MASK] sat")
        _one_line(code, err)
        assert _snapshot(Path(tmp), d / "nothing") == before


# --------------------------------------------------------------------------- configs


@settings(FUZZ, max_examples=40)
@given(text=st.text(max_size=60) | HOSTILE_JSON | st.builds(
    lambda k, v: f"{k}: {json.dumps(v)}\n", st.sampled_from(["compresslevel", "pretokenizer", "input", "x"]), JSON_VALUES))
def test_yaml_configs_load_or_fail_with_one_config_error(text):
    from mlmctl.config import load_config
    from mlmctl.stages.tokenize import TokenizeConfig

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "c.yaml"
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(TokenizeConfig, p)
        except MlmctlError as e:
            # Several problems of one file come together (config.ConfigProblems), one line each.
            problems = getattr(e, "problems", None) or [str(e)]
            assert problems and all(p and "\n" not in p for p in problems)


@settings(FUZZ, max_examples=80)
@given(name=st.sampled_from(["a.csv", "a.tsv", "a.jsonl.zst", "a.txt.zst", "a.csv.zst", "a.parquet", "a.arrow"]),
       body=st.binary(max_size=200) | HOSTILE_JSON.map(str.encode), cut=st.integers(0, 400))
def test_clean_table_and_zstd_inputs_count_or_refuse_in_one_line(run_cli, name, body, cut):
    """The `formats` extra's readers on damaged files: counted and skipped, or (a file whose
    structure cannot be read at all, e.g. a Parquet footer) one line; never a traceback, never
    a manifest for a failed run, nothing touched outside the output."""
    zstandard = pytest.importorskip("zstandard")
    pytest.importorskip("pyarrow")
    plain = {"csv": b"text,source\n", "tsv": b"text\tsource\n"}
    head = plain.get(name.split(".")[1], b"")
    good = json.dumps({"text": GOOD}).encode() if "jsonl" in name else GOOD.strip().encode()
    data = head + good + b"\n" + body
    if name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    elif name.endswith((".parquet", ".arrow")):
        data = _table_bytes(name) + body
    data = _mutate(data, cut, body)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = root / "raw"
        raw.mkdir()
        (raw / "good.txt").write_text(GOOD)
        (raw / name).write_bytes(data)
        out = root / "out"
        before = _snapshot(root, out)
        code, _, err = run_cli("clean", "--input", raw, "--output", out, "--set", "validation_fraction=0")
        _one_line(code, err)
        assert (out / "manifest.json").is_file() == (code == 0)
        assert _snapshot(root, out) == before


def _table_bytes(name: str) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.ipc
    import pyarrow.parquet

    table = pa.table({"text": [GOOD.strip(), "Another plain sentence about the library hours."]})
    buf = io.BytesIO()
    if name.endswith(".parquet"):
        pyarrow.parquet.write_table(table, buf)
    else:
        with pyarrow.ipc.new_stream(buf, table.schema) as w:
            w.write_table(table)
    return buf.getvalue()


# --------------------------------------------------------------------------- each reader, in-process

# Valid seeds per format; the fuzz cuts them, appends junk and flips bytes.
def _seed(fmt: str) -> bytes:
    rows = [GOOD.strip(), "Zürich, \"quoted\"\nsecond line", "plain"]
    if fmt == "jsonl":
        return "".join(json.dumps({"text": r}) + "\n" for r in rows).encode()
    if fmt in ("csv", "tsv"):
        import csv as csv_mod
        import io

        buf = io.StringIO()
        w = csv_mod.writer(buf, delimiter="," if fmt == "csv" else "\t")
        w.writerow(["text", "n"])
        w.writerows([r, i] for i, r in enumerate(rows))
        return buf.getvalue().encode()
    if fmt in ("parquet", "arrow"):
        return _table_bytes(f"a.{fmt}")
    return "\n\n".join(rows).encode()


def _compress(data: bytes, how: str) -> bytes:
    if how == "gz":
        return gzip.compress(data)
    if how == "zst":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


@settings(FUZZ, max_examples=300)
@given(fmt=st.sampled_from(["text", "jsonl", "csv", "tsv", "html", "parquet", "arrow"]),
       how=st.sampled_from(["", "gz", "zst"]), cut=st.integers(0, 2000), junk=st.binary(max_size=40),
       flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), max_size=3),
       boundary=st.sampled_from(["blank_line", "line", "file"]))
def test_every_reader_yields_text_or_counts_or_raises_one_input_error(fmt, how, cut, junk, flips, boundary):
    """bytes -> reader: only documents with str text and a positive line, counted skips, or one
    InputError line for a file whose structure cannot be read at all (a Parquet footer, an Arrow
    schema). Text-like formats never fail the run: their damage is always counted."""
    pytest.importorskip("zstandard")
    pytest.importorskip("pyarrow")
    from mlmctl.sources import ReadOptions, discover, read_unit

    if fmt in ("parquet", "arrow"):
        how = ""  # read by pyarrow from the file itself
    data = bytearray(_mutate(_compress(_seed(fmt), how), cut, junk))
    for at, x in flips:
        if data:
            data[at % len(data)] ^= x
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / f"f.{fmt}{'.' + how if how else ''}"
        p.write_bytes(bytes(data))
        skips = []
        opts = ReadOptions(boundary=boundary, max_document_chars=300)
        try:
            (unit,) = discover([str(p)], ["*"], fmt, 1, opts)  # Parquet/Arrow: the schema is checked here
            docs = list(read_unit(unit, opts, lambda *a: skips.append(a), {}))
        except MlmctlError as e:
            # CSV/TSV: no header row, or none naming the text column; Parquet/Arrow: not readable at all.
            assert fmt in ("parquet", "arrow") or "no header row" in str(e) or "no column" in str(e), e
            assert isinstance(e, __import__("mlmctl.errors").errors.InputError) and "\n" not in str(e)
            assert str(e).startswith("clean: ") and "f." in str(e)
            return
    for d in docs:
        assert isinstance(d.text, str) and isinstance(d.source, str) and d.line >= 1 and len(d.text) <= 300
    for reason, file, line in skips:
        assert isinstance(reason, str) and file == str(p) and line >= 1
