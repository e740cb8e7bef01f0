"""Shard files and atomic writes: what every stage uses to put bytes on disk.

A shard is `shard-00000<suffix>` inside a split folder (`train/`, `validation/`). Every file is
written under a hidden temporary name, fsynced and renamed into place, so a killed stage leaves
either a complete file or a `.*.tmp-*` leftover that nothing reads. gzip members (`GzipMember`, the
one gzip writer of clean and tokenize) are written with mtime 0 and no file name so that the same
records always give the same bytes.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import zlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from mlmctl.errors import InputError, MlmctlError

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
        # rename() does nothing when both names already are links to one file (`dst` placed by
        # an earlier run that was killed before its manifest): the temporary name would stay.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
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


# gzip's OS byte: Python's gzip module writes 255 (unknown), zlib's own gzip wrapper 3 (Unix).
# tokenize wrote its shards with the former, clean with the latter; each keeps its byte so that
# existing outputs (and the sha256s their manifests record) stay what they were.
GZIP_OS_UNKNOWN, GZIP_OS_UNIX = 255, 3


class GzipMember:
    """Writes one gzip member onto an open binary file, which stays open (members concatenated on
    one file read as one stream). mtime 0 and no file name, so the bytes depend on the data, the
    level and `os_code` only; the data is compressed in ~1 MB batches. `close()` writes the trailer."""

    def __init__(self, raw: IO[bytes], level: int, os_code: int = GZIP_OS_UNKNOWN) -> None:


        self.raw = raw
        # Raw deflate with gzip's defaults (memLevel 8, default strategy), framed below as the
        # gzip module frames it: magic, deflate, no flags, mtime 0, XFL from the level, OS.
        self.comp = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        raw.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, os_code]))
        self.crc = 0
        self.size = 0
        self.buf: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.buf.append(data)
        self.buffered += len(data)
        if self.buffered >= 1 << 20:
            self._compress()

    def _compress(self) -> None:


        data = b"".join(self.buf)
        self.buf.clear()
        self.buffered = 0
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self.raw.write(self.comp.compress(data))

    def close(self) -> None:
        self._compress()
        self.raw.write(self.comp.flush() + self.crc.to_bytes(4, "little") + (self.size & 0xFFFFFFFF).to_bytes(4, "little"))


@contextlib.contextmanager
def atomic_gzip(path: str | Path, level: int, os_code: int = GZIP_OS_UNKNOWN) -> Iterator[GzipMember]:
    """`atomic_write` of one gzip member: the file appears complete, or not at all."""
    with atomic_write(path) as raw:
        gz = GzipMember(raw, level, os_code)
        yield gz
        gz.close()


def open_shard_lines(path: str | Path) -> Iterator[str]:
    """Lines (without the newline) of a plain or gzipped UTF-8 shard written by a stage."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="\n") as f:
            for line in f:
                yield line[:-1] if line.endswith("\n") else line
    except (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError) as e:  # zlib.error: a flipped byte
        raise InputError(f"{path} is damaged ({e}); rerun the stage that wrote it with --force") from None


# ----------------------------------------------------------------------------------------------
# Fan-out
