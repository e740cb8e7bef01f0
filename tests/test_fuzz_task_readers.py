"""Property-based fuzzing of issue 14's readers, as tests/test_fuzz_readers.py does for the others:
tagged files (CoNLL and JSONL, through `TagSpec.read`), GLUE release files (`read_split`,
`discover`) and regression label files (`read_labelled(regression=True)`). Damaged or truncated
gzip, binary junk, BOMs, CRLF, huge lines, deep JSON and non-finite numbers end in a clean result
or one `InputError` line naming the file, never another exception. Seeded (`derandomize`)."""

from __future__ import annotations

import gzip
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlmctl.errors import InputError, MlmctlError
from test_fuzz_readers import FUZZ, HOSTILE_JSON, _mutate

# Lines that break naive readers: a huge line, a NUL, a lone surrogate, a CR, tags at the edge
# of the scheme, non-finite and huge numbers.
HOSTILE_LINE = HOSTILE_JSON | st.sampled_from([
    "x" * 200_000, "a\tb\t" + "y" * 140_000, "\x00\t\x00", "\ud800 O", "tok\r", "\r\n", "\ufeffEU B-ORG",
    "tok E-PER", "tok B-", "tok I-", "tok -", "tok\t", "NaN", "inf", "-Infinity", "1e999", "1_000", "0x10",
    '{"tokens": ["a"], "tags": ["O", "O"]}', '{"tokens": [""], "tags": ["O"]}', '{"tokens": "a", "tags": "O"}',
    '{"tokens": [1], "tags": ["O"]}', '{"text": "a", "label": NaN}', '{"text": "a", "label": 1e999}',
    '{"text": "a", "label": "inf"}', '{"text": "a", "label": [1]}', '{"text": "a", "label": true}',
])
LINES = st.lists(st.text(max_size=30) | HOSTILE_LINE, max_size=5)
NEWLINE = st.sampled_from(["\n", "\r\n"])


def _file(tmp: str, name: str, head: str, rows: list[str], nl: str, cut: int | None, junk: bytes, gz: bool | str,
          bom: bool) -> Path:
    text = ("\ufeff" if bom else "") + nl.join([head, *rows]) + nl
    # cut None keeps the whole text (huge lines reach the reader), else truncate and add junk
    data = text.encode("utf-8", "surrogatepass")
    data = data + junk if cut is None else _mutate(data, cut, junk)
    path = Path(tmp) / name
    if gz:
        data = gzip.compress(data)
        if gz == "damaged":  # a truncated download: the stream ends early, or a byte flipped mid-way
            k = len(data) // 2
            data = data[:k] if len(data) % 2 else data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1:]
    path.write_bytes(data)
    return path


def _one_line(e: MlmctlError) -> None:
    problems = getattr(e, "problems", None) or [str(e)]
    assert problems and all(p and "\n" not in p for p in problems), problems


FILE_KNOBS = dict(rows=LINES, nl=NEWLINE, cut=st.none() | st.integers(0, 300), junk=st.binary(max_size=40),
                  gz=st.sampled_from([False, True, "damaged"]), bom=st.booleans())


# --------------------------------------------------------------------------- tagged files


@settings(FUZZ, max_examples=60)
@given(name=st.sampled_from(["t.conll", "t.txt.gz", "t.jsonl", "t.jsonl.gz"]),
       scheme=st.sampled_from(["iob1", "iob2", "iobes", "none"]), ill=st.sampled_from(["repair", "error"]),
       **FILE_KNOBS)
def test_tagged_files_read_or_fail_with_one_input_error(name, scheme, ill, rows, nl, cut, junk, gz, bom):
    from mlmctl.token_data import TagSpec

    head = '{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}' if "jsonl" in name else "EU NNP B-ORG"
    with tempfile.TemporaryDirectory() as tmp:
        # gz on a plain name: gzip bytes where text belongs; off on a .gz name: text where gzip belongs
        p = _file(tmp, name, head, rows, nl, cut, junk, gz, bom)
        try:
            data = TagSpec(scheme=scheme, ill_formed=ill).read(p, "finetune")
        except InputError as e:
            _one_line(e)
            assert str(e).startswith("finetune: ")
        else:
            assert len(data.tokens) == len(data.tags) == len(data.lines) >= 1
            for toks, tags in zip(data.tokens, data.tags):
                assert len(toks) == len(tags) >= 1 and all(t.strip() for t in tags)
                assert all(t.strip() and "\r" not in t for t in toks)


# --------------------------------------------------------------------------- GLUE release files


@settings(FUZZ, max_examples=60)
@given(task=st.sampled_from(["CoLA", "MRPC", "STS-B", "MNLI"]), **FILE_KNOBS)
def test_glue_files_read_or_fail_with_one_input_error(task, rows, nl, cut, junk, gz, bom):
    from mlmctl.glue_tasks import TASKS, read_split

    heads = {"CoLA": "gj04\t1\t\tThe cat sat.",
             "MRPC": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA cat.\tThe cat.",
             "STS-B": "index\tsentence1\tsentence2\tscore\n0\tA cat.\tThe cat.\t4.2",
             "MNLI": "index\tsentence1\tsentence2\tgold_label\n0\tA cat.\tThe cat.\tentailment"}
    with tempfile.TemporaryDirectory() as tmp:
        p = _file(tmp, "train.tsv", heads[task], rows, nl, cut, junk, False, bom)
        if gz:  # the release is never gzipped: a .tsv holding gzip bytes must be refused cleanly
            p.write_bytes(gzip.compress(p.read_bytes()))
        try:
            data = read_split(TASKS[task], p)
        except InputError as e:
            _one_line(e)
            assert str(p) in str(e)
        else:
            assert len(data.texts) == len(data.labels) >= 1
            if task == "STS-B":
                assert all(isinstance(y, float) and math.isfinite(y) for y in data.labels)
            else:
                assert set(data.labels) <= set(TASKS[task].labels)


@settings(FUZZ, max_examples=25)
@given(layout=st.dictionaries(st.sampled_from(["CoLA", "SST-2", "MNLI", "junk"]),
                              st.lists(st.sampled_from(["train.tsv", "dev.tsv", "dev_matched.tsv",
                                                        "dev_mismatched.tsv", "dev.tsv/"]), max_size=4, unique=True),
                              max_size=3),
       as_file=st.booleans())
def test_glue_discover_finds_tasks_or_names_the_missing_file(layout, as_file):
    from mlmctl.glue_tasks import discover

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "GLUE"
        root.mkdir()
        for task, names in layout.items():
            if as_file and task == "CoLA":
                (root / task).write_text("not a directory")  # a file where a task folder belongs
                continue
            (root / task).mkdir()
            for n in names:
                if (root / task / n).exists():
                    continue
                if n.endswith("/"):  # a folder where a file belongs
                    (root / task / n).mkdir()
                else:
                    (root / task / n).write_text("x\n")
        try:
            present, skipped = discover(root)
        except InputError as e:
            _one_line(e)
        else:
            assert present and {t.name for t in present}.isdisjoint(skipped)


# --------------------------------------------------------------------------- regression labels


@settings(FUZZ, max_examples=60)
@given(ext=st.sampled_from(["tsv", "csv", "jsonl", "tsv.gz", "jsonl.gz"]), **FILE_KNOBS)
def test_regression_labels_are_finite_floats_or_one_input_error(ext, rows, nl, cut, junk, gz, bom):
    from mlmctl.labelled import read_labelled

    head = '{"text": "a", "label": 2.5}' if "jsonl" in ext else "text\tlabel" if "tsv" in ext else "text,label"
    with tempfile.TemporaryDirectory() as tmp:
        p = _file(tmp, f"f.{ext}", head, rows, nl, cut, junk, gz, bom)
        try:
            data = read_labelled(p, regression=True)
        except InputError as e:
            _one_line(e)
        else:
            assert len(data.texts) == len(data.labels) >= 1
            assert all(isinstance(y, float) and math.isfinite(y) for y in data.labels)


@pytest.mark.parametrize("label", ["nan", "NaN", "inf", "-inf", "1e999", "Infinity", "abc", ""])
def test_a_non_finite_regression_label_names_file_and_line(tmp_path, label):
    from mlmctl.glue_tasks import TASKS, read_split
    from mlmctl.labelled import read_labelled

    p = tmp_path / "train.tsv"
    p.write_text("text\tlabel\nfine\t1.5\nbad\t" + label + "\n")
    with pytest.raises(InputError, match=rf"{p}:3: "):
        read_labelled(p, regression=True)
    g = tmp_path / "stsb.tsv"
    g.write_text("index\tsentence1\tsentence2\tscore\n0\ta\tb\t1.5\n1\ta\tb\t" + label + "\n")
    with pytest.raises(InputError, match=rf"{g}:3: "):
        read_split(TASKS["STS-B"], g)


@pytest.mark.parametrize("reader", ["glue", "labelled", "conll", "jsonl"])
def test_a_huge_line_is_read_or_refused_in_one_line(tmp_path, reader):
    """Past the csv module's 131,072-character default: read (the text is real) or one line."""
    from mlmctl.glue_tasks import TASKS, read_split
    from mlmctl.labelled import read_labelled
    from mlmctl.token_data import TagSpec

    huge = "word " * 40_000
    files = {"glue": ("train.tsv", f"index\tsentence1\tsentence2\tscore\n0\ta\t{huge}\t2.5\n"),
             "labelled": ("r.tsv", f"text\tlabel\n{huge}\t2.5\n"),
             "conll": ("t.conll", f"{'x' * 200_000} B-PER\n"),
             "jsonl": ("t.jsonl", '{"tokens": ["%s"], "tags": ["O"]}\n' % ("x" * 200_000))}
    name, text = files[reader]
    (tmp_path / name).write_text(text)
    read = {"glue": lambda p: read_split(TASKS["STS-B"], p), "labelled": lambda p: read_labelled(p, regression=True),
            "conll": lambda p: TagSpec().read(p, "eval"), "jsonl": lambda p: TagSpec().read(p, "eval")}[reader]
    assert len(read(tmp_path / name)) == 1


def test_python_only_number_spellings_are_not_regression_labels(tmp_path):
    """float() reads "1_5" as 15.0: a silent wrong label. Only numbers a data file means are read."""
    from mlmctl.glue_tasks import TASKS, read_split
    from mlmctl.labelled import read_labelled

    p = tmp_path / "r.tsv"
    p.write_text("text\tlabel\na\t1_5\n")
    with pytest.raises(InputError, match=rf"{p}:2: label '1_5'"):
        read_labelled(p, regression=True)
    g = tmp_path / "train.tsv"
    g.write_text("index\tsentence1\tsentence2\tscore\n0\ta\tb\t4_0\n")
    with pytest.raises(InputError, match=rf"{g}:2: STS-B score '4_0' is not a number"):
        read_split(TASKS["STS-B"], g)
    j = tmp_path / "r.jsonl"
    j.write_text('{"text": "a", "label": 99999999999999999999999999999999999999999999999999' + "9" * 400 + "}\n")
    with pytest.raises(InputError, match=rf"{j}:1: "):
        read_labelled(j, regression=True)


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85", "\x1c", "\x0b", "\x0c"])
def test_unicode_line_separators_inside_a_record_are_text_not_line_breaks(tmp_path, sep):
    """JSON allows U+2028 and friends raw inside strings, and `glue` writes its JSONL with
    ensure_ascii=False: a text holding one must read back whole, and CoNLL line numbers must be
    the editor's (str.splitlines() breaks at all of these)."""
    import json

    from mlmctl.labelled import read_labelled
    from mlmctl.token_data import TagSpec

    p = tmp_path / "f.jsonl"
    p.write_text(json.dumps({"text": f"a{sep}b", "label": "1"}, ensure_ascii=False) + "\n"
                 + json.dumps({"text": "c", "label": "0"}) + "\n", encoding="utf-8")
    assert read_labelled(p).texts == [f"a{sep}b", "c"]
    t = tmp_path / "t.jsonl"
    t.write_text(json.dumps({"tokens": [f"a{sep}b", "c"], "tags": ["O", "O"]}, ensure_ascii=False) + "\n",
                 encoding="utf-8")
    assert TagSpec().read(t, "eval").tokens == [[f"a{sep}b", "c"]]
    c = tmp_path / "t.conll"
    c.write_text(f"EU B-ORG\nsays O{sep}\nbad E-PER\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"{c}:3: "):  # the bad line, counted as an editor does
        TagSpec().read(c, "eval")


@pytest.mark.parametrize("damage", ["truncated", "flipped", "no trailer"])
@pytest.mark.parametrize("reader", ["labelled", "tagged"])
def test_damaged_gzip_is_one_input_error(tmp_path, damage, reader):
    """A flipped byte inside the deflate stream raises zlib.error, which is neither an OSError nor
    a ValueError: it must still be the one-line `damaged gzip data` error naming the file."""
    from mlmctl.labelled import read_labelled
    from mlmctl.token_data import TagSpec

    body = b"text\tlabel\n" + b"a b c\t1\n" * 200 if reader == "labelled" else b"EU B-ORG\nsays O\n\n" * 200
    data = gzip.compress(body)
    k = len(data) // 2
    data = {"truncated": data[:k], "flipped": data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1:],
            "no trailer": data[:-4]}[damage]
    p = tmp_path / ("f.tsv.gz" if reader == "labelled" else "f.conll.gz")
    p.write_bytes(data)
    read = (lambda: read_labelled(p)) if reader == "labelled" else (lambda: TagSpec().read(p, "eval"))
    with pytest.raises(InputError, match="damaged gzip data") as e:
        read()
    _one_line(e.value)
