"""Atomic writes and shard writing: deterministic bytes, size bounds, nothing half-written."""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import textwrap

import pytest

from mlmctl.errors import MlmctlError
from mlmctl.shards import ShardWriter, atomic_write, file_sha256, open_shard_lines
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
        from mlmctl.shards import ShardWriter
        w = ShardWriter({str(tmp_path)!r}, "train", ".jsonl.gz", max_bytes=10**9)
        for i in range(10000):
            w.write("x" * 100 + "\\n")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    visible = [p for p in (tmp_path / "train").iterdir() if not p.name.startswith(".")]
    assert visible == []


def test_shards_are_bounded_and_deterministic(tmp_path):
    def write(root):
        with ShardWriter(root, "train", ".jsonl.gz", max_bytes=300) as w:
            for i in range(100):
                w.write(f'{{"i": {i}}}\n', docs=1)
        return w.infos

    a, b = write(tmp_path / "a"), write(tmp_path / "b")
    assert [x.sha256 for x in a] == [x.sha256 for x in b]
    assert len(a) > 1
    assert sum(x.records["docs"] for x in a) == 100
    for info in a:
        path = tmp_path / "a" / info.name
        assert info.sha256 == file_sha256(path) and info.bytes == path.stat().st_size
        raw = gzip.decompress(path.read_bytes())
        assert len(raw) < 300 + 20  # closes at the first record past the bound
    lines = [line for info in a for line in open_shard_lines(tmp_path / "a" / info.name)]
    assert lines == [f'{{"i": {i}}}' for i in range(100)]


def test_truncated_shard_reads_as_clear_error(tmp_path):
    with ShardWriter(tmp_path, None, ".txt.gz") as w:
        for i in range(5000):
            w.write(f"line {i}\n")
    path = tmp_path / w.infos[0].name
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
