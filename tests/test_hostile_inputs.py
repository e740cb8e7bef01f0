"""Crafted inputs against clean's readers (issue 16, "Bad input"): bombs, crafted offsets, huge
lines and records, odd frames and names. Each ends as documents, a counted skip with its reason,
or one `clean: FILE[:ROW]: ...` line - never a traceback, a crash or memory that grows with the
input. The per-format fuzzing is in tests/test_fuzz_readers.py."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

from mlmctl.errors import InputError
from mlmctl.read_guard import Cursor, guarded, shown
from mlmctl.sources import FileUnit, RawDoc, ReadOptions, discover, read_unit

GOOD = "The committee met on Tuesday to discuss the new library budget and the opening hours."


def _read(path, fmt, **opts):
    skips, stats = [], {}
    docs = [(d.text, d.line) for d in read_unit(FileUnit(str(path), fmt), ReadOptions(**opts),
                                                lambda r, f, ln: skips.append((r, ln)), stats)]
    return docs, skips, stats


def _peak_mb(fn) -> float:
    """Peak Python-heap memory (MiB) while `fn` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _rle_zstd(n_blocks: int, byte: bytes = b"a") -> bytes:
    """A zstandard frame of RLE blocks: 4 bytes each for 128 KiB of `byte` - the densest bomb."""
    blocks = b"".join(((128 * 1024) << 3 | 1 << 1 | (k == n_blocks - 1)).to_bytes(3, "little") + byte
                      for k in range(n_blocks))
    return b"\x28\xb5\x2f\xfd\x00\x58" + blocks  # no content size, window descriptor


# --------------------------------------------------------------------------- the guard


def test_guard_sorts_failures_into_skip_or_one_line():
    def reader(exc):
        yield RawDoc("a", "f", "f", 3)
        raise exc

    def run(exc):
        skips = []
        cursor = Cursor("dir/evil\nname.csv", "corrupt_gzip")
        docs = list(guarded(reader(exc), cursor, lambda *a: skips.append(a)))
        return docs, skips

    # Damage: what came before is kept, the rest is one counted skip after the last row read.
    assert run(EOFError("cut"))[1] == [("corrupt_gzip", "dir/evil\nname.csv", 4)]
    assert run(gzip.BadGzipFile("bad header"))[1] == [("corrupt_gzip", "dir/evil\nname.csv", 4)]
    # The system: one line, naming the file with its line break escaped.
    with pytest.raises(InputError, match=r"^clean: dir/evil\\nname\.csv: cannot read \(No such file"):
        run(FileNotFoundError(2, "No such file or directory"))
    # Anything else: one line with file and row, chained to the original for --debug.
    with pytest.raises(InputError, match=r"^clean: dir/evil\\nname\.csv:4: cannot read it \(IndexError: boom\)") as e:
        run(IndexError("boom"))
    assert isinstance(e.value.__cause__, IndexError)
    with pytest.raises(MemoryError):
        run(MemoryError())
    assert shown("bad\udcff\x00.txt") == "bad\\udcff\\x00.txt" and shown("naïve.txt") == "naïve.txt"


def test_file_vanishing_after_discovery_is_one_line(tmp_path):
    p = tmp_path / "gone.jsonl"
    p.write_text(json.dumps({"text": GOOD}) + "\n")
    (unit,) = discover([str(p)], ["*"], "auto", 1, ReadOptions())
    p.unlink()
    with pytest.raises(InputError, match=r"gone\.jsonl: cannot read \(No such file or directory\)"):
        list(read_unit(unit, ReadOptions(), lambda *a: None, {}))


# --------------------------------------------------------------------------- zstandard and gzip


def test_zstd_bomb_streams_with_flat_memory(tmp_path):
    pytest.importorskip("zstandard")
    p = tmp_path / "bomb.txt.zst"
    p.write_bytes(_rle_zstd(2048))  # 8 KiB -> 256 MiB of "a" without a newline
    result = {}
    peak = _peak_mb(lambda: result.update(r=_read(p, "text", max_document_chars=10_000)))
    assert result["r"][:2] == ([], [("document_too_long", 1)])
    assert peak < 40, peak  # 2 KiB slices would hold 64 MiB at once; the document is 256 MiB


def test_zstd_skippable_frames_and_magic(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    skip = struct.pack("<II", 0x184D2A5F, 3) + b"xyz"
    z = zstandard.ZstdCompressor()
    p = tmp_path / "a.jsonl.zst"
    p.write_bytes(skip + z.compress(json.dumps({"text": "one"}).encode() + b"\n") + skip
                  + z.compress(json.dumps({"text": "two"}).encode() + b"\n"))
    docs, skips, stats = _read(p, "jsonl")
    assert docs == [("one", 1), ("two", 2)] and not skips and stats["files_zstd"] == 1
    p.write_bytes(skip[:6])  # a skippable frame cut short
    assert _read(p, "jsonl")[1] == [("corrupt_zstd", 1)]


def test_gzip_multi_member_and_trailing_garbage(tmp_path):
    p = tmp_path / "a.jsonl.gz"
    member = gzip.compress(json.dumps({"text": GOOD}).encode() + b"\n")
    p.write_bytes(member + member)
    assert len(_read(p, "jsonl")[0]) == 2
    p.write_bytes(member + b"not gzip")
    docs, skips, _ = _read(p, "jsonl")
    assert len(docs) == 1 and skips == [("corrupt_gzip", 2)]


# --------------------------------------------------------------------------- CSV


def test_csv_long_line_and_long_record_are_skipped_with_bounded_memory(tmp_path):
    p = tmp_path / "long.csv"
    p.write_text("text\n" + GOOD + "\n" + "a" * 20_000_000 + "\n" + GOOD + "\n")
    result = {}
    peak = _peak_mb(lambda: result.update(r=_read(p, "csv", max_document_chars=100_000)))
    assert result["r"][:2] == ([(GOOD, 2)], [("document_too_long", 3)])
    assert peak < 10, peak  # csv.reader alone asks for the whole 20 MB line
    # Many small quoted fields, each under the field limit, make one record of any size.
    p.write_text("text,n\n" + GOOD + ",1\n" + '"\n",' * 200_000 + "\n" + GOOD + ",2\n")
    assert _read(p, "csv", max_document_chars=100_000)[:2] == ([(GOOD, 2)], [("document_too_long", 3)])


def test_csv_odd_but_valid_shapes(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b"\xef\xbb\xbftext,n\r\n\"two\r\nlines\",1\r\nnul\x00 inside,2\r\nno quote \"mid\" field,3\r\n")
    assert _read(p, "csv")[:2] == ([("two\r\nlines", 2), ("nul\x00 inside", 4), ('no quote "mid" field', 5)], [])
    p.write_text("text\nno delimiter at all\n")  # one column: each line a document
    assert _read(p, "csv")[0] == [("no delimiter at all", 2)]


# --------------------------------------------------------------------------- Parquet and Arrow


def test_parquet_rows_over_the_cap_and_dictionary_bomb(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["x" * 5000, GOOD, "é" * 3000]}), p)
    assert _read(p, "parquet", max_document_chars=2000)[:2] == ([(GOOD, 2)], [("document_too_long", 1),
                                                                             ("document_too_long", 3)])
    # 400 rows repeating one 1 MB value: a few KB on disk, 400 MB if a whole row group were decoded.
    bomb = pa.DictionaryArray.from_arrays(pa.array([0] * 400, pa.int32()), pa.array(["word " * 200_000]))
    pq.write_table(pa.table({"text": bomb}), p, compression="zstd")
    code = ("import pyarrow as pa, sys; from mlmctl.sources import *; "
            f"n = sum(1 for _ in read_unit(FileUnit({str(p)!r}, 'parquet'), ReadOptions(), lambda *a: None, {{}})); "
            "print(n, pa.default_memory_pool().max_memory() // 2**20)")
    n, peak = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout.split())
    assert n == 400 and peak < 100, peak


def test_arrow_with_crafted_offsets_is_counted_not_a_crash(tmp_path):
    pa = pytest.importorskip("pyarrow")
    p = tmp_path / "a.arrow"
    table = pa.table({"text": [GOOD] * 4})
    with pa.OSFile(str(p), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    data = bytearray(p.read_bytes())
    at = data.find(GOOD.encode()) - 12  # the offsets buffer lies just before the text
    data[at:at + 4] = struct.pack("<i", 10**9)  # an offset far past the end of the memory map
    p.write_bytes(bytes(data))
    # In a subprocess: before the batches were validated, this died of SIGBUS.
    code = ("from mlmctl.sources import *; s = []; "
            f"d = list(read_unit(FileUnit({str(p)!r}, 'arrow'), ReadOptions(), lambda *a: s.append(a), {{}})); "
            "print(len(d), s)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "corrupt_arrow" in run.stdout


def test_table_files_that_are_not_tables_are_one_line(tmp_path):
    pa = pytest.importorskip("pyarrow")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([("text", pa.string())])) as w:
        w.write_table(pa.table({"text": [GOOD]}))
    garbled = bytearray(sink.getvalue().to_pybytes())
    garbled[garbled.find(b"text")] = 0x99  # a field name that is not UTF-8: UnicodeDecodeError in pyarrow
    for name, data in [("a.parquet", GOOD.encode()), ("b.parquet", b""), ("c.arrow", b""), ("d.arrow", b"ARROW1\0\0xx"),
                       ("e.arrow", bytes(garbled))]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=rf"^clean: .*{name.replace('.', '[.]')}: not a readable (Parquet|Arrow IPC) file"):
            discover([str(tmp_path / name)], ["*"], "auto", 1, ReadOptions())


# --------------------------------------------------------------------------- names and the file system


def test_upper_case_extensions_are_walked_and_read(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    (tmp_path / "A.JSONL.ZST").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "zst"}\n'))
    (tmp_path / "B.TXT").write_text("plain\n")
    units = discover([str(tmp_path)], ["*.jsonl.zst", "*.txt"], "auto", 1, ReadOptions())
    assert [(Path(u.name).name, u.fmt) for u in units] == [("A.JSONL.ZST", "jsonl"), ("B.TXT", "text")]
    assert _read(units[0].name, "jsonl")[0] == [("zst", 1)]


def test_non_utf8_input_path_is_refused_but_walked_names_are_read(tmp_path):
    bad = os.fsencode(str(tmp_path)) + b"/bad\xff.jsonl"
    with open(bad, "wb") as f:
        f.write(json.dumps({"text": GOOD}).encode() + b"\n")
    with pytest.raises(InputError, match=r"input path .*bad\\udcff\.jsonl is not valid UTF-8"):
        discover([os.fsdecode(bad)], ["*"], "auto", 1, ReadOptions())
    (unit,) = discover([str(tmp_path)], ["*.jsonl"], "auto", 1, ReadOptions())
    assert _read(unit.name, "jsonl")[0] == [(GOOD, 1)]


def test_hostile_names_reach_the_user_as_one_line(run_cli, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(pa.table({"body": ["x"]}), raw / "evil\nname.parquet")
    code, _, err = run_cli("clean", "--input", raw, "--output", tmp_path / "out")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("mlmctl: error: clean: ") and "evil\\nname.parquet: no column 'text'" in err


def test_file_turned_fifo_or_device_after_discovery_neither_hangs_nor_runs_forever(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text(GOOD + "\n")
    (unit,) = discover([str(p)], ["*"], "auto", 1, ReadOptions())
    p.unlink()
    os.mkfifo(p)  # open() would wait for a writer forever

    def unblock():  # if the reader ever blocks again, release it after 10 s: a failure, not a hang
        try:
            os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # no reader waiting: nothing to release

    timer = threading.Timer(10, unblock)
    timer.start()
    try:
        with pytest.raises(InputError, match=r"a\.txt: not a regular file any more"):
            list(read_unit(unit, ReadOptions(), lambda *a: None, {}))
    finally:
        timer.cancel()
    p.unlink()
    p.symlink_to("/dev/zero")  # endless
    with pytest.raises(InputError, match=r"a\.txt: not a regular file any more"):
        list(read_unit(unit, ReadOptions(), lambda *a: None, {}))


def test_a_very_deep_tree_is_walked_without_recursion(tmp_path):
    d = tmp_path / "deep"
    leaf = d.joinpath(*["d"] * 300)
    leaf.mkdir(parents=True)
    (leaf / "a.txt").write_text(GOOD + "\n")
    limit = sys.getrecursionlimit()
    # Deeper than the recursion limit (lowered, so the tree stays small enough for pytest's own
    # recursive clean-up): a recursive walk would end in RecursionError.
    sys.setrecursionlimit(250)
    try:
        (unit,) = discover([str(d)], ["*.txt"], "auto", 1, ReadOptions())
    finally:
        sys.setrecursionlimit(limit)
    assert unit.name == str(leaf / "a.txt")


def test_csv_without_a_usable_header_is_one_line(tmp_path):
    p = tmp_path / "a.csv"
    for data, msg in [(b"", "no header row"), (b'"never closed\n', "no header row"),
                      (b"x" * 5000 + b"\n", "header row is longer than max_document_chars"),
                      (b"body,n\n1,2\n", "no column 'text'")]:
        p.write_bytes(data)
        with pytest.raises(InputError, match=rf"^clean: .*a\.csv(:1)?: .*{msg}"):
            _read(p, "csv", max_document_chars=1000)


def test_parquet_batches_are_sized_by_bytes_whatever_the_column_name(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from mlmctl import tables

    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"my.text": ["x" * 100_000] * 50, "n": list(range(50))}), p, use_dictionary=False)
    row_group = pq.ParquetFile(p).metadata.row_group(0)
    assert tables._batch_rows(row_group, ["my.text"]) == tables._BATCH_BYTES // 100_000  # ~83 rows of 100 KB
    assert tables._batch_rows(row_group, ["n"]) == tables._BATCH_ROWS
    assert len(_read(p, "parquet", text_field="my.text")[0]) == 50
