"""Atomic writes and the gzip shard writer: deterministic bytes, nothing half-written."""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import textwrap

import pytest

from mlmctl.errors import MlmctlError
from mlmctl.shards import GZIP_OS_UNIX, GZIP_OS_UNKNOWN, GzipMember, atomic_gzip, atomic_write, open_shard_lines
from mlmctl.stage import parse_task


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "a.json"
    with pytest.raises(ValueError):
        with atomic_write(target) as f:
            f.write(b"partial")
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_killed_writer_leaves_no_visible_shard(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from mlmctl.shards import atomic_gzip
        with atomic_gzip({str(tmp_path / "train" / "shard-00000.jsonl.gz")!r}, 6) as gz:
            for i in range(30000):
                gz.write(b"x" * 100 + b"\\n")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    visible = [p for p in (tmp_path / "train").iterdir() if not p.name.startswith(".")]
    assert visible == []


@pytest.mark.parametrize("level", [1, 6, 9])
def test_gzip_member_matches_the_gzip_module_and_zlib_byte_for_byte(tmp_path, level):
    import io
    import zlib

    lines = [f'{{"i": {i}, "text": "{"abc" * (i % 50)}"}}\n'.encode() for i in range(40000)]  # > 1 MB: batches
    data = b"".join(lines)

    def ours(os_code):
        buf = io.BytesIO()
        gz = GzipMember(buf, level, os_code)
        for line in lines:
            gz.write(line)
        gz.close()
        return buf.getvalue()

    by_module = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=by_module, mode="wb", compresslevel=level, mtime=0) as f:
        f.write(data)
    by_zlib = zlib.compressobj(level, zlib.DEFLATED, 31)
    assert ours(GZIP_OS_UNKNOWN) == by_module.getvalue()  # what tokenize wrote before
    assert ours(GZIP_OS_UNIX) == by_zlib.compress(data) + by_zlib.flush()  # what clean wrote before
    assert gzip.decompress(ours(GZIP_OS_UNIX) * 2) == data * 2  # members concatenate into one stream


def test_truncated_shard_reads_as_clear_error(tmp_path):
    path = tmp_path / "shard-00000.txt.gz"
    with atomic_gzip(path, 6) as gz:
        for i in range(5000):
            gz.write(f"line {i}\n".encode())
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(MlmctlError, match="damaged"):
        list(open_shard_lines(path))


@pytest.mark.parametrize("text,expected", [("0/1", (0, 1)), ("3/8", (3, 8)), (None, None)])
def test_parse_task(text, expected):
    assert parse_task(text) == expected


@pytest.mark.parametrize("text", ["1/1", "-1/2", "a/b", "2", "0/0"])
def test_parse_task_rejects(text):
    with pytest.raises(MlmctlError, match="--task"):
        parse_task(text)


def test_damaged_gzip_shards_are_one_input_error_whatever_byte_is_flipped(tmp_path):
    """A flipped byte inside the deflate stream raises zlib.error (not BadGzipFile): both shard
    readers must turn every kind of damage into InputError."""
    import gzip

    from mlmctl.errors import InputError
    from mlmctl.shards import open_shard_lines
    from mlmctl.stages.build_vocab import _line_blocks

    good = gzip.compress("".join(f'{{"id": {i}, "words": ["w{i % 97}", "x"]}}\n' for i in range(3000)).encode())
    for pos in range(20, len(good) - 8, max(1, len(good) // 40)):
        bad = bytearray(good)
        bad[pos] ^= 0xFF
        path = tmp_path / f"shard-{pos}.jsonl.gz"
        path.write_bytes(bytes(bad))
        for read in (lambda: list(open_shard_lines(path)), lambda: list(_line_blocks(path))):
            with pytest.raises(InputError, match="damaged"):
                read()


def test_atomic_link_over_a_link_to_the_same_file_leaves_no_temporary(tmp_path):
    """A resumed run places a file that the killed run already linked into place: rename() of two
    links to one inode does nothing, and the temporary name must not stay behind."""
    from mlmctl.shards import atomic_link

    src = tmp_path / "work" / "a.bin"
    src.parent.mkdir()
    src.write_bytes(b"ids")
    dst = tmp_path / "out" / "train" / "a.bin"
    atomic_link(src, dst)
    atomic_link(src, dst)  # again: dst is already a link to src
    assert dst.read_bytes() == b"ids" and sorted(p.name for p in dst.parent.iterdir()) == ["a.bin"]
