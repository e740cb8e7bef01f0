"""Input discovery and readers: formats, boundaries, encodings, damaged data, python-docs."""

from __future__ import annotations

import codecs
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlmctl import sources
from mlmctl.errors import InputError
from mlmctl.sources import BuiltinUnit, FileUnit, ReadOptions, discover, read_unit

INCLUDE = ["*.txt", "*.txt.gz", "*.jsonl", "*.jsonl.gz"]


def read(path, fmt="text", **opts):
    """Documents and skips of one file: ([(text, line)], [(reason, line)], reader stats)."""
    skips, stats = [], {}
    docs = [
        (d.text, d.line)
        for d in read_unit(FileUnit(str(path), fmt), ReadOptions(**opts), lambda r, f, ln: skips.append((r, ln)), stats)
    ]
    return docs, skips, stats


# --------------------------------------------------------------------------- discovery


def test_discover_files_dirs_globs_in_order_without_repeats(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for rel in ["d/b.txt", "d/a.jsonl", "d/sub/c.txt.gz", "d/skip.csv", "d/.hidden.txt", "e.txt", "f.txt"]:
        (tmp_path / rel).write_bytes(b"x")
    units = discover([str(tmp_path / "f.txt"), str(tmp_path / "d"), str(tmp_path / "*.txt")], INCLUDE, "auto", 4)
    names = [Path(u.name).relative_to(tmp_path).as_posix() for u in units]
    assert names == ["f.txt", "d/a.jsonl", "d/b.txt", "d/sub/c.txt.gz", "e.txt"]
    assert [u.fmt for u in units] == ["text", "jsonl", "text", "text", "text"]
    assert discover([str(tmp_path / "d" / "a.jsonl")], INCLUDE, "text", 4)[0].fmt == "text"


def test_discover_builtin_units():
    units = discover(["builtin:python-docs"], INCLUDE, "auto", 3)
    assert units == [BuiltinUnit("python-docs", i, 3) for i in range(3)]
    with pytest.raises(InputError, match="unknown built-in source 'builtin:nope'.*builtin:python-docs"):
        discover(["builtin:nope"], INCLUDE, "auto", 3)


def test_missing_path_and_empty_glob_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover([str(tmp_path / "missing.txt")], INCLUDE, "auto", 1)
    with pytest.raises(InputError, match="matches nothing"):
        discover([str(tmp_path / "*.nothing")], INCLUDE, "auto", 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no file matching"):
        discover([str(tmp_path / "empty")], INCLUDE, "auto", 1)


def test_directory_named_like_a_file_is_walked(tmp_path):
    (tmp_path / "x.txt").mkdir()
    (tmp_path / "x.txt" / "inner.txt").write_text("hello")
    units = discover([str(tmp_path / "x.txt")], INCLUDE, "auto", 1)
    assert [Path(u.name).name for u in units] == ["inner.txt"]
    # ... also when a glob matches it.
    units = discover([str(tmp_path / "*.txt")], INCLUDE, "auto", 1)
    assert [Path(u.name).name for u in units] == ["inner.txt"]


def test_symlink_loops_terminate(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("a")
    (d / "loop").symlink_to(d, target_is_directory=True)  # d/loop -> d
    (d / "self.txt").symlink_to(d / "self.txt")  # a link to itself: ELOOP
    (d / "dangling.txt").symlink_to(tmp_path / "nowhere")
    units = discover([str(d)], INCLUDE, "auto", 1)
    assert [Path(u.name).name for u in units] == ["a.txt"]
    with pytest.raises(InputError, match="cannot open input .*self.txt"):
        discover([str(d / "self.txt")], INCLUDE, "auto", 1)
    with pytest.raises(InputError, match="broken symbolic link"):
        discover([str(d / "dangling.txt")], INCLUDE, "auto", 1)


def test_fifo_is_refused_not_opened(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(InputError, match="not a regular file"):
        discover([str(fifo)], INCLUDE, "auto", 1)
    (tmp_path / "a.txt").write_text("a")
    assert [Path(u.name).name for u in discover([str(tmp_path)], INCLUDE, "auto", 1)] == ["a.txt"]


def test_unreadable_file_is_a_one_line_error(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("x")
    path.chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(InputError, match=r"cannot read input .*secret.txt .*Permission denied"):
            discover([str(path)], INCLUDE, "auto", 1)
    # Root reads anything; simulate the permission error where files are opened.
    def deny(p):
        raise PermissionError(13, "Permission denied", p)

    monkeypatch.setattr(sources, "open_binary", deny)
    with pytest.raises(InputError, match=r"cannot read input '.*secret.txt' \(Permission denied\)"):
        discover([str(path)], INCLUDE, "auto", 1)


# --------------------------------------------------------------------------- text files


def test_text_boundaries_and_line_numbers(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("para one\nstill one\n\n  \t\npara two\n\n\nlast line\n")
    assert read(p, boundary="blank_line")[0] == [
        ("para one\nstill one\n", 1), ("para two\n", 5), ("last line\n", 8),
    ]
    assert read(p, boundary="line")[0] == [
        ("para one", 1), ("still one", 2), ("para two", 5), ("last line", 8),
    ]
    assert read(p, boundary="file")[0] == [(p.read_text(), 1)]


def test_crlf_and_lone_cr_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"one\r\ntwo\r\n\r\nthree\rfour")
    # The reader keeps line endings inside a document; the whitespace step repairs them.
    assert read(p)[0] == [("one\r\ntwo\r\n", 1), ("three\rfour", 4)]
    assert read(p, boundary="line")[0] == [("one", 1), ("two", 2), ("three", 4), ("four", 5)]


def test_empty_and_whitespace_only_files(tmp_path):
    (tmp_path / "e.txt").write_bytes(b"")
    (tmp_path / "w.txt").write_bytes(b"  \n\t\n\n   ")
    for boundary in ("blank_line", "line"):
        assert read(tmp_path / "e.txt", boundary=boundary)[0] == []
        assert read(tmp_path / "w.txt", boundary=boundary)[0] == []
    # Per-file boundary: the whitespace document is read; the pipeline drops it as empty.
    assert read(tmp_path / "w.txt", boundary="file")[0] == [("  \n\t\n\n   ", 1)]


def test_invalid_utf8_and_nul_survive_reading_for_the_decode_step(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"caf\xe9 \x00 ok\n")
    [(text, _)] = read(p)[0]
    assert text == "caf\udce9 \x00 ok\n"  # surrogateescape: no byte is lost or guessed


def test_utf8_bom_kept_for_the_step_utf16_utf32_decoded(tmp_path):
    (tmp_path / "bom8.txt").write_bytes(codecs.BOM_UTF8 + "héllo\n".encode())
    assert read(tmp_path / "bom8.txt")[0] == [("\ufeffhéllo\n", 1)]
    for enc, name in (("utf-16", "utf-16"), ("utf-16-be", "utf-16"), ("utf-32", "utf-32")):
        bom = {"utf-16-be": codecs.BOM_UTF16_BE}.get(enc, b"")
        (tmp_path / "u.txt").write_bytes(bom + "héllo wörld\n\nzwei\n".encode(enc))
        docs, skips, stats = read(tmp_path / "u.txt")
        assert docs == [("héllo wörld\n", 1), ("zwei\n", 3)], enc
        assert stats[f"files_{name}"] == 1


def test_gzip_detected_by_content(tmp_path):
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"one\n\ntwo\n"))
    (tmp_path / "b.txt").write_bytes(gzip.compress(b"three\n"))  # misnamed: still gzip
    assert read(tmp_path / "a.txt.gz")[0] == [("one\n", 1), ("two\n", 3)]
    assert read(tmp_path / "b.txt")[0] == [("three\n", 1)]


def test_truncated_gzip_keeps_what_was_intact_and_reports_the_rest(tmp_path):
    body = "".join(f"paragraph {i} " * 20 + "\n\n" for i in range(2000)).encode()
    data = gzip.compress(body)
    p = tmp_path / "cut.txt.gz"
    p.write_bytes(data[: len(data) // 2])
    docs, skips, _ = read(p)
    assert 0 < len(docs) < 2000
    assert [d[0] for d in docs] == [f"paragraph {i} " * 20 + "\n" for i in range(len(docs))]
    assert skips == [("corrupt_gzip", skips[0][1])] and skips[0][1] > docs[-1][1]
    # Line and file boundaries and JSON lines do the same.
    assert read(p, boundary="line")[1][0][0] == "corrupt_gzip"
    assert read(p, boundary="file") == ([], [("corrupt_gzip", 1)], {"files": 1})
    (tmp_path / "garbage.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 50)
    assert read(tmp_path / "garbage.gz")[1][0][0] == "corrupt_gzip"


def test_long_lines_and_documents_are_skipped_with_bounded_memory(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("short one\n\n" + "x" * 5000 + "\nmore of the same paragraph\n\nafter\n")
    docs, skips, _ = read(p, max_document_chars=1000)
    assert docs == [("short one\n", 1), ("after\n", 6)]
    assert skips == [("document_too_long", 3)]
    docs, skips, _ = read(p, boundary="line", max_document_chars=1000)
    assert [d[1] for d in docs] == [1, 4, 6] and skips == [("document_too_long", 3)]
    p.write_text("a\n" * 600 + "\nend\n")  # a paragraph of many short lines over the cap
    docs, skips, _ = read(p, max_document_chars=1000)
    assert docs == [("end\n", 602)] and skips == [("document_too_long", 1)]
    assert read(p, boundary="file", max_document_chars=1000)[1] == [("document_too_long", 1)]


def test_a_20mb_line_is_read_as_one_document(tmp_path):
    p = tmp_path / "big.txt"
    p.write_bytes(b"word " * (4 * 1024 * 1024) + b"\n")
    docs, skips, _ = read(p, boundary="line")
    assert skips == [] and len(docs) == 1 and len(docs[0][0]) == 20 * 1024 * 1024


# --------------------------------------------------------------------------- JSON lines


def test_jsonl_fields_and_bad_records(tmp_path):
    p = tmp_path / "a.jsonl"
    lines = [
        json.dumps({"body": "first", "site": "s1"}),
        "{not json",
        json.dumps({"other": "no body"}),
        json.dumps({"body": 42}),
        "",
        json.dumps(["a", "list"]),
        json.dumps({"body": "second \ud800 lone"}),
        json.dumps({"body": "third"})[:-1],  # cut short
        json.dumps({"body": "last", "site": 7}),
    ]
    p.write_bytes(codecs.BOM_UTF8 + "\n".join(lines).encode())
    docs, skips, _ = read(p, "jsonl", text_field="body", source_field="site")
    assert docs == [("first", 1), ("second \ud800 lone", 7), ("last", 9)]
    assert skips == [
        ("malformed_json", 2), ("missing_text_field", 3), ("text_field_not_string", 4),
        ("not_an_object", 6), ("malformed_json", 8),
    ]
    skips_src = []
    got = list(read_unit(FileUnit(str(p), "jsonl"), ReadOptions(text_field="body", source_field="site"),
                         lambda *a: skips_src.append(a), {}))
    assert [d.source for d in got] == ["s1", str(p), str(p)]  # non-string source: the file


def test_jsonl_gz_with_invalid_utf8(tmp_path):
    p = tmp_path / "a.jsonl.gz"
    p.write_bytes(gzip.compress(b'{"text": "caf\xe9"}\n{"text": "ok"}\n'))
    docs, skips, _ = read(p, "jsonl")
    assert docs == [("caf\udce9", 1), ("ok", 2)] and skips == []


# --------------------------------------------------------------------------- python-docs


def test_python_docs_modules_are_deterministic_and_interleaved():
    opts = ReadOptions()
    mods = sources.python_docs_modules(opts)
    assert mods == sources.python_docs_modules(opts)
    names = [m for m, _ in mods]
    assert "json" in names and "json.decoder" in names and "pydoc_data.topics" in names
    assert not any(part in ("test", "tests", "_vendor") for m in names for part in m.split("."))
    # Interleaved: the first modules come from different top-level packages.
    head = [m.split(".")[0] for m in names[:50]]
    assert len(set(head)) == 50
    only = sources.python_docs_modules(ReadOptions(docs_packages=("json",)))
    assert {m.split(".")[0] for m, _ in only} == {"json"}


def test_python_docs_units_partition_and_cap():
    opts = ReadOptions(docs_packages=("json", "email", "pydoc_data"), docs_max_documents=10_000)
    skips = []
    every = [list(sources.read_python_docs(i, 3, opts, lambda *a: skips.append(a))) for i in range(3)]
    flat = [d for part in every for d in part]
    assert skips == [] and len(flat) > 100
    assert all(d.source.startswith("python-docs:") for d in flat)
    assert {d.source for d in flat} >= {"python-docs:json", "python-docs:email.message", "python-docs:pydoc_data.topics"}
    assert all(len(d.text) >= opts.docs_min_chars for d in flat)
    assert any("assignment statement" in d.text.lower() for d in flat)  # a pydoc topic
    capped = ReadOptions(docs_packages=("json", "email", "pydoc_data"), docs_max_documents=30)
    assert [len(list(sources.read_python_docs(i, 3, capped, print))) for i in range(3)] == [10, 10, 10]


def test_python_docs_imports_and_prints_nothing():
    code = (
        "import sys\n"
        "from mlmctl.sources import ReadOptions, read_python_docs\n"
        "before = set(sys.modules)\n"
        "n = sum(1 for _ in read_python_docs(0, 1, ReadOptions(docs_packages=('torch', 'numpy', 'json'), "
        "docs_max_documents=400), print))\n"
        "new = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('torch', 'numpy', 'transformers'))\n"
        "sys.stderr.write(f'{n} {new}')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    n, new = r.stderr.split(" ", 1)
    assert int(n) == 400 and new == "[]"


# --------------------------------------------------------------------------- hostile input (issue 8)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8


def test_hostile_json_lines_are_skipped_with_their_reason(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text("[" * 100_000 + "]" * 100_000 + "\n"
                 + '{"text": "big", "n": ' + "9" * 5000 + "}\n"
                 + '{"text": ' + "[" * 100 + "]" * 100 + "}\n"
                 + json.dumps({"text": "fine"}) + "\n")
    docs, skips, _ = read(p, "jsonl")
    assert docs == [("fine", 4)]
    assert skips == [("too_deep", 1), ("number_too_large", 2), ("too_deep", 3)]


def test_binary_file_named_txt_is_skipped_not_read(tmp_path):
    (tmp_path / "image.txt").write_bytes(PNG)
    (tmp_path / "image.txt.gz").write_bytes(gzip.compress(PNG))
    (tmp_path / "latin1.txt").write_bytes("Crème brûlée, café, déjà vu: Latin-1 prose.\n".encode("latin-1"))
    for name in ("image.txt", "image.txt.gz"):
        assert read(tmp_path / name)[:2] == ([], [("binary_file", 1)])
    docs, skips, _ = read(tmp_path / "latin1.txt")  # a few bad bytes: left to the decode step
    assert len(docs) == 1 and skips == []


def test_html_file_is_read_as_html(tmp_path):
    p = tmp_path / "page.htm"
    p.write_text("<html><head><style>body{color:red}</style><script>steal()</script></head>\n\n"
                 "<body><p>The visible text.</p><p>More &amp; more.</p></body></html>\n")
    [u] = discover([str(p)], INCLUDE, "auto", 1)
    assert u.fmt == "html"
    docs = [d.text for d in read_unit(u, ReadOptions(), lambda *a: None, {})]
    assert len(docs) == 1
    assert "The visible text." in docs[0] and "More & more." in docs[0]
    assert "steal" not in docs[0] and "color" not in docs[0] and "<" not in docs[0]


def test_plain_text_named_gz_is_read_as_text_and_counted(tmp_path):
    p = tmp_path / "notgz.txt.gz"
    p.write_text("Plain text under a gzip name.\n")
    docs, skips, stats = read(p)
    assert docs == [("Plain text under a gzip name.\n", 1)] and skips == []
    assert stats["files_named_gz_not_gzip"] == 1


def test_directory_walk_reports_what_it_leaves_out(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "ok.txt").write_text("x")
    (d / "notes.csv").write_text("x")
    (d / ".hidden.txt").write_text("x")
    (d / "dangling.txt").symlink_to(tmp_path / "missing")
    (d / "self.txt").symlink_to(d / "self.txt")
    (d / "again").symlink_to(d, target_is_directory=True)
    os.mkfifo(d / "pipe.txt")
    seen = []
    units = discover([str(d)], INCLUDE, "auto", 1, on_skip=lambda r, p: seen.append((r, Path(p).name)))
    assert [Path(u.name).name for u in units] == ["ok.txt"]
    assert sorted(seen) == sorted([("not_included", "notes.csv"), ("hidden", ".hidden.txt"),
                                   ("broken_link", "dangling.txt"), ("link_loop", "self.txt"),
                                   ("directory_loop", "again"), ("not_regular_file", "pipe.txt")])
