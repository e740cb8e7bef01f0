"""Shard files and atomic writes: what every stage uses to put bytes on disk.

A shard is `shard-00000<suffix>` inside a split folder (`train/`, `validation/`). Every file is
written under a hidden temporary name, fsynced and renamed into place, so a killed stage leaves
either a complete file or a `.*.tmp-*` leftover that nothing reads. gzip members are written with
mtime 0 and no file name so that the same records always give the same bytes.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from mlmctl.errors import InputError, MlmctlError

DEFAULT_MAX_SHARD_BYTES = 64 * 1024 * 1024  # uncompressed bytes per shard


# ----------------------------------------------------------------------------------------------
# A full disk

# ENOSPC, EDQUOT, EROFS, EFBIG: the user's to fix (free space, raise a quota, remount); torch and
# safetensors wrap the same failure in their own exceptions, recognisable only by their text.
_DISK = {
    errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only", errno.EFBIG: "the file is larger than the file system allows",
}
_DISK_TEXT = {
    "No space left on device": "the disk is full", "StorageFull": "the disk is full",
    "file write failed": "the disk is probably full", "Disk quota exceeded": "the disk quota is used up",
    "Read-only file system": "the file system is read-only",
}


class DiskFullError(MlmctlError):
    """A write failed because of the disk (full, quota, read-only); the runner adds the stage name."""


def disk_error(exc: BaseException, path: str | Path) -> DiskFullError | None:
    """A failed write because of the disk, as one line naming `path`; None for any other error."""
    what = _DISK.get(getattr(exc, "errno", None))
    if what is None:
        text = str(exc)
        what = next((v for k, v in _DISK_TEXT.items() if k in text), None)
    if what is None:
        return None
    where = getattr(exc, "filename", None) or path
    return DiskFullError(f"cannot write {where}: {what}; free some space and rerun (finished work is kept)")


# ----------------------------------------------------------------------------------------------
# Atomic writes


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[IO[bytes]]:
    """Open `path` for binary writing; it appears under its name only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if (err := disk_error(e, path)) is not None:
            raise err from None
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    text = json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_text(path, text)


def atomic_link(src: str | Path, dst: str | Path) -> None:
    """Put `src`'s bytes at `dst` atomically: a hard link when possible (free), else a copy."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(dst)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            import shutil

            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dst)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if (err := disk_error(e, dst)) is not None:
            raise err from None
        raise


def inside(directory: str | Path, name: object, *, where: str) -> Path:
    """`directory / name` for a relative name read from a file (`where`) that must stay inside
    `directory`: absolute names, `..` and symbolic links that lead out are refused."""
    directory = Path(directory)
    bad = (not isinstance(name, str) or not name or "\\" in name or "\0" in name
           or PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts)
    if not bad:
        path = directory / name
        root = directory.resolve()
        real = path.resolve()
        bad = real == root or root not in real.parents
    if bad:
        raise InputError(
            f"{where} names {name!r}, which is not a file inside {directory}; the directory was "
            f"changed by hand or not written by mlmctl: rebuild it"
        )
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Shard records


@dataclass
class ShardInfo:
    """One file of a stage directory, as the manifest records it."""

    name: str
    """Path relative to the stage directory, with forward slashes (`train/shard-00000.jsonl.gz`)."""
    split: str | None
    """Data split (`train`, `validation`), or None for files that belong to no split."""
    bytes: int
    """Size on disk."""
    sha256: str
    """Hex sha256 of the bytes on disk."""
    records: dict[str, int] = field(default_factory=dict)
    """Stage-specific counts (documents, sentences, tokens, ...)."""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "split": self.split,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "records": dict(self.records),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ShardInfo:
        return cls(d["name"], d.get("split"), int(d["bytes"]), d["sha256"], dict(d.get("records", {})))

    @classmethod
    def of_file(cls, root: Path, name: str, split: str | None = None, records: dict | None = None) -> ShardInfo:
        path = Path(root) / name
        return cls(name, split, path.stat().st_size, file_sha256(path), dict(records or {}))


class _HashingWriter(io.RawIOBase):
    """Pass-through writer that counts and hashes the bytes going to disk."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.nbytes = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.nbytes += len(b)
        return self.raw.write(b)


class ShardWriter:
    """Writes records into numbered, size-bounded shards `DIR/shard-NNNNN<suffix>`.

    Records are bytes or str (a line, say); the caller adds its own newlines. A shard closes once
    it holds at least `max_bytes` uncompressed bytes, so a record never straddles two shards.
    Each shard is written under a temporary name and renamed into place when complete.
    `close()` returns a `ShardInfo` per shard, named relative to `root`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None,
        suffix: str,
        *,
        max_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        compresslevel: int | None = None,
        start_index: int = 0,
        name_prefix: str = "shard-",
    ):
        self.root = Path(root)
        self.split = split
        self.dir = self.root / split if split else self.root
        self.suffix = suffix
        self.max_bytes = max_bytes
        self.gzip = suffix.endswith(".gz")
        self.compresslevel = 6 if compresslevel is None else compresslevel
        self.index = start_index
        self.name_prefix = name_prefix
        self.infos: list[ShardInfo] = []
        self._file = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._written = 0
        self._counts: dict[str, int] = {}

    def write(self, record: bytes | str, **counts: int) -> None:
        try:
            self._write(record, counts)
        except OSError as e:
            self._fail(e)

    def _fail(self, e: OSError) -> None:
        path = getattr(self, "_path", self.dir)
        self.abort()
        if (err := disk_error(e, path)) is not None:
            raise err from None
        raise e

    def _write(self, record: bytes | str, counts: dict) -> None:
        if isinstance(record, str):
            record = record.encode("utf-8")
        if self._file is None:
            self._open()
        self._buffer.append(record)
        self._buffered += len(record)
        self._written += len(record)
        for key, n in counts.items():
            self._counts[key] = self._counts.get(key, 0) + n
        if self._buffered >= 1 << 20:
            self._flush()
        if self._written >= self.max_bytes:
            self._close_shard()

    def _open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._name = f"{self.name_prefix}{self.index:05d}{self.suffix}"
        self._path = self.dir / self._name
        self._tmp = _tmp_path(self._path)
        self._raw = open(self._tmp, "wb")
        self._hasher = _HashingWriter(self._raw)
        if self.gzip:
            self._file = gzip.GzipFile(
                filename="", fileobj=self._hasher, mode="wb", compresslevel=self.compresslevel, mtime=0
            )
        else:
            self._file = self._hasher
        self._written = 0
        self._counts = {}

    def _flush(self) -> None:
        if self._buffer:
            self._file.write(b"".join(self._buffer))
            self._buffer.clear()
            self._buffered = 0

    def _close_shard(self) -> None:
        self._flush()
        if self.gzip:
            self._file.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self._tmp, self._path)
        rel = self._path.relative_to(self.root).as_posix()
        self.infos.append(
            ShardInfo(rel, self.split, self._hasher.nbytes, self._hasher.sha.hexdigest(), self._counts)
        )
        self._file = None
        self.index += 1

    def close(self) -> list[ShardInfo]:
        if self._file is not None:
            try:
                self._close_shard()
            except OSError as e:
                self._fail(e)
        if self.dir.exists():
            fsync_dir(self.dir)
        return self.infos

    def abort(self) -> None:
        """Drop the shard being written (its temporary file) without renaming it into place."""
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._raw.close()
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            self._file = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def open_shard_lines(path: str | Path) -> Iterator[str]:
    """Lines (without the newline) of a plain or gzipped UTF-8 shard written by a stage."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="\n") as f:
            for line in f:
                yield line[:-1] if line.endswith("\n") else line
    except (EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
        raise InputError(f"{path} is damaged ({e}); rerun the stage that wrote it with --force") from None


# ----------------------------------------------------------------------------------------------
# Fan-out
