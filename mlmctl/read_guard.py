"""What a failure while reading one input file of `mlmctl clean` becomes: one rule for every format.

The readers (`mlmctl.sources`, `mlmctl.tables`) call into gzip, zstandard, csv, json and pyarrow,
each with its own exceptions. `guarded` wraps a reader's document stream and sorts whatever
escapes it into three classes, so that no library exception reaches the user as a traceback:

- **damaged data** (a truncated gzip/zstd stream, an invalid Parquet page, a garbled Arrow
  batch): the documents read before the damage are kept, the file ends there, and the damage is
  counted as `read/corrupt_<kind>` (`corrupt_gzip`, `corrupt_zstd`, `corrupt_parquet`,
  `corrupt_arrow`) with the file and the row where reading stopped;
- **the system failing** (the file vanished, a disk error, permissions changed mid-run): one
  `InputError` line, `clean: FILE: cannot read (No such file or directory); ...`;
- **anything else** a library raises: one `InputError` line naming the file and the row,
  `clean: FILE:ROW: cannot read it (ValueError: ...)`, chained to the original for `--debug`.

    cursor = Cursor("a.parquet", "corrupt_parquet")
    for doc in guarded(read_parquet("a.parquet", opts, cursor.track(on_skip)), cursor, on_skip): ...

Memory errors, interrupts and our own errors pass through unchanged.
"""

from __future__ import annotations

import csv
import sys
import zlib
from typing import Callable, Iterator

from mlmctl.errors import InputError, MlmctlError

SkipFn = Callable[[str, str, int], None]
# Library exceptions that mean "these bytes are damaged" (gzip raises EOFError on truncation and
# BadGzipFile, an OSError without errno, on a bad header; ZstdDamaged is an EOFError).
_DAMAGE = (EOFError, zlib.error, csv.Error)


class Cursor:
    """Where a reader is in its file (the last row yielded or reported) and the reason that
    damaged data gets; the reader updates `corrupt` once it knows the compression."""

    def __init__(self, name: str, corrupt: str) -> None:
        self.name = name
        self.corrupt = corrupt
        self.row = 0

    def track(self, on_skip: SkipFn) -> SkipFn:
        """`on_skip`, also moving the cursor past each reported row."""

        def report(reason: str, file: str, row: int) -> None:
            self.row = max(self.row, row)
            on_skip(reason, file, row)

        return report


def guarded(docs: Iterator, cursor: Cursor, on_skip: SkipFn) -> Iterator:
    """`docs`, with every failure turned into a counted skip or one `InputError` (see above)."""
    try:
        for doc in docs:
            cursor.row = max(cursor.row, doc.line)
            yield doc
    except (MlmctlError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - sorted into the three classes here, nothing is lost
        if _is_damage(e):
            on_skip(cursor.corrupt, cursor.name, cursor.row + 1)
            return
        if isinstance(e, OSError) and e.errno is not None:
            raise InputError(
                f"clean: {shown(cursor.name)}: cannot read ({e.strerror or e}); it changed or became unreadable "
                "since the run started - fix it and rerun"
            ) from None
        raise InputError(
            f"clean: {shown(cursor.name)}:{cursor.row + 1}: cannot read it ({type(e).__name__}: {first_line(e)}); "
            "the file is damaged or not in the format its name says - fix or remove it (--debug shows where)"
        ) from e


def _is_damage(e: Exception) -> bool:
    if isinstance(e, _DAMAGE):
        return True
    if isinstance(e, OSError) and e.errno is None:  # gzip.BadGzipFile, pyarrow's ArrowIOError
        return True
    pa = sys.modules.get("pyarrow")  # only loaded when a Parquet/Arrow input is read
    # A feature this pyarrow lacks (a compression codec, a type) is not damage: it is an error.
    return pa is not None and isinstance(e, pa.ArrowException) and not isinstance(e, pa.ArrowNotImplementedError)


def shown(name: str) -> str:
    """A file name fit for a one-line message: line breaks, other control characters and the
    undecodable bytes of a non-UTF-8 name are escaped (`evil\\nname.csv`, `bad\\udcff.txt`)."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def first_line(e: BaseException) -> str:
    """The first line of a library's message, control characters escaped (a damaged Parquet
    footer's message quotes the byte it choked on)."""
    text = str(e).strip()
    return shown(text.splitlines()[0][:200]) if text else type(e).__name__
