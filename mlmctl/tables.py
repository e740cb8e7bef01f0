"""Table-shaped inputs for `mlmctl clean`: CSV/TSV, Parquet and Arrow IPC, one document per row.

The text is the column named by `text_field` (and `source_field`, when set, becomes `source`).
Every reader streams: CSV record by record, Parquet one row group (in batches) at a time,
Arrow IPC (the files `datasets.save_to_disk` writes) one record batch at a time from a memory
map, so memory stays bounded by a batch, never by the file.

    for doc in read_parquet("corpus.parquet", ReadOptions(text_field="content"), on_skip): ...

Rows are numbered from 1 (CSV: the file line where the record starts), so a skipped row can
be found. A missing column, a column that is not text, or a file that is not Parquet/Arrow at
all is one `InputError` naming the file; `check_columns` finds it at discovery, before any work
starts. A CSV quote left open or a record over `max_document_chars` is reported through
`on_skip(reason, file, row)`; damage pyarrow finds while reading (a truncated page, an offset out
of range) propagates, and `read_guard.guarded` (around every reader) counts it. The rows read
before either are kept.

Parquet and Arrow need pyarrow, `.zst` needs zstandard: the `formats` extra
(`pip install 'mlmctl[formats]'`); `require` says so in one line.
"""

from __future__ import annotations

import csv
import io
import itertools
import sys
from typing import TYPE_CHECKING, Callable, Iterator

from mlmctl.errors import InputError, MlmctlError
from mlmctl.read_guard import first_line, shown

if TYPE_CHECKING:
    from mlmctl.sources import RawDoc, ReadOptions

SkipFn = Callable[[str, str, int], None]
TABLE_FORMATS = ("csv", "tsv", "parquet", "arrow")
ARROW_FORMATS = ("parquet", "arrow")
# Rows converted to Python at a time, at most; and the bytes of text a batch should hold, so that
# memory stays bounded for tables of short and of long documents alike.
_BATCH_ROWS = 1024
_BATCH_BYTES = 8 << 20
_DICT_BATCH_ROWS = 16
# Parquet is read through a buffered stream of this size (not a column chunk at a time).
_STREAM_BYTES = 1 << 20
# Stands for a value over max_document_chars (compared by identity).
_TOO_LONG = object()


def require(module: str, what: str) -> None:
    """Fail with one line naming the extra when an optional library is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InputError(
            f"clean: {what} needs `{module}`, in the `formats` extra; install it with "
            f"`pip install 'mlmctl[formats]'` (or `pip install {module}`)"
        )


# --------------------------------------------------------------------------- CSV / TSV


def read_csv(text: io.TextIOBase, name: str, fmt: str, opts: ReadOptions, on_skip: SkipFn) -> Iterator[RawDoc]:
    """Rows of a CSV (RFC 4180 quoting) or TSV file with a header row naming its columns."""
    from mlmctl.sources import RawDoc

    cap = opts.max_document_chars
    # The csv module's field limit is per process; the document cap is the natural bound.
    csv.field_size_limit(min(cap, sys.maxsize))
    feed = _RecordFeed(text, cap)
    # strict: a quote left open at the end of the file is an error, not a silently swallowed tail.
    reader = csv.reader(feed, delimiter="\t" if fmt == "tsv" else ",", strict=True)
    try:
        header = next(reader, None)
    except _RecordTooLong:
        raise InputError(f"clean: {shown(name)}:1: the header row is longer than max_document_chars "
                         f"({cap}); is this a {fmt.upper()} file?") from None
    except csv.Error:
        header = None
    if not header:
        raise InputError(f"clean: {shown(name)}:1: no header row; a {fmt.upper()} input needs one naming its columns")
    header[0] = header[0].lstrip("\ufeff")
    col = _column_index(header, opts.text_field, name)
    src = header.index(opts.source_field) if opts.source_field in header else None
    start = reader.line_num + 1
    while True:
        feed.record_chars = 0
        try:
            row = next(reader)
        except StopIteration:
            return
        except (csv.Error, _RecordTooLong) as e:
            # The parser cannot tell where a damaged record ends: keep what came before, stop here.
            too_long = isinstance(e, _RecordTooLong) or "field limit" in str(e)
            on_skip("document_too_long" if too_long else "malformed_csv", name, start)
            return
        line, start = start, reader.line_num + 1
        if not row:
            continue  # a blank line
        if col >= len(row):
            on_skip("missing_text_field", name, line)
            continue
        source = row[src] if src is not None and src < len(row) else name
        yield RawDoc(row[col], source, name, line)


class _RecordTooLong(Exception):
    """The CSV record being parsed holds more than max_document_chars characters."""


class _RecordFeed:
    """The lines `csv.reader` parses, read at most `cap` characters at a time, so that neither a
    line without a newline nor a record of many quoted lines can grow past the document cap
    (`csv.field_size_limit` bounds one field only, and `csv.reader` asks for whole lines)."""

    def __init__(self, text: io.TextIOBase, cap: int) -> None:
        self.text = text
        self.cap = cap
        self.record_chars = 0  # characters of the record being parsed; reset by the caller

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.text.readline(self.cap - self.record_chars + 1)
        if not line:
            raise StopIteration
        self.record_chars += len(line)
        if self.record_chars > self.cap:
            raise _RecordTooLong
        return line


def _column_index(header: list[str], column: str, name: str) -> int:
    if column not in header:
        shown_cols = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
        raise InputError(f"clean: {shown(name)}: no column {column!r} (columns: {shown(shown_cols)}); set `text_field`")
    return header.index(column)


# --------------------------------------------------------------------------- Parquet / Arrow


def check_columns(name: str, fmt: str, opts: ReadOptions) -> None:
    """Open a Parquet or Arrow file's schema only and check the text column (one line if not).

    Runs at discovery, outside the reader guard (`read_guard.guarded`), so any failure a damaged
    schema causes in pyarrow (invalid UTF-8 in a field name raises UnicodeDecodeError) is one line.
    """
    try:
        if fmt == "parquet":
            with _parquet(name) as pf:
                _check_schema(pf.schema_arrow, name, opts)
        else:
            with _arrow(name) as (schema, _):
                _check_schema(schema, name, opts)
    except MlmctlError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file, whatever pyarrow makes of it
        kind = "Parquet" if fmt == "parquet" else "Arrow IPC"
        raise InputError(f"clean: {shown(name)}: not a readable {kind} file ({type(e).__name__}: {first_line(e)}); "
                         "check the file") from e


def read_parquet(name: str, opts: ReadOptions, on_skip: SkipFn) -> Iterator[RawDoc]:
    """Rows of a Parquet file, one row group at a time (only the needed columns are read), in
    batches sized from the row group's own metadata so that a batch holds about `_BATCH_BYTES`."""
    with _parquet(name) as pf:
        cols = _check_schema(_refused(name, "Parquet", lambda: pf.schema_arrow), name, opts)
        batches = (
            batch
            for rg in range(pf.num_row_groups)
            for batch in pf.iter_batches(batch_size=_batch_rows(pf.metadata.row_group(rg), cols),
                                         row_groups=[rg], columns=cols)
        )
        yield from _rows(batches, name, cols, opts.max_document_chars, on_skip)


def read_arrow(name: str, opts: ReadOptions, on_skip: SkipFn) -> Iterator[RawDoc]:
    """Rows of an Arrow IPC file (stream format, as `datasets.save_to_disk` writes, or file format)."""
    with _arrow(name) as (schema, batches):
        cols = _check_schema(schema, name, opts)
        yield from _rows(batches, name, cols, opts.max_document_chars, on_skip)


def _refused(name: str, kind: str, fn):
    """`fn()`, with any pyarrow or I/O failure turned into one line naming the file."""
    import pyarrow as pa

    try:
        return fn()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise InputError(f"clean: {shown(name)}: not a readable {kind} file ({first_line(e)}); check the file") from None


class _parquet:
    """`pyarrow.parquet.ParquetFile`, with a damaged or foreign file turned into one line.

    Read through a 1 MiB buffered stream: without `buffer_size`, pyarrow reads each column chunk
    of a row group whole, so one huge row group would sit in memory at once."""

    def __init__(self, name: str) -> None:
        import pyarrow.parquet as pq

        self.pf = _refused(name, "Parquet", lambda: pq.ParquetFile(name, buffer_size=_STREAM_BYTES))

    def __enter__(self):
        return self.pf

    def __exit__(self, *exc) -> None:
        self.pf.close()


class _arrow:
    """(schema, record batches) of an Arrow IPC stream or file, memory-mapped."""

    def __init__(self, name: str) -> None:
        import pyarrow as pa

        self.source = _refused(name, "Arrow IPC", lambda: pa.memory_map(name))
        try:
            reader = pa.ipc.open_stream(self.source)
            self.batches = iter(reader)
        except (pa.ArrowException, OSError, ValueError):
            try:
                self.source.seek(0)
                reader = _refused(name, "Arrow IPC", lambda: pa.ipc.open_file(self.source))
                self.batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            except InputError:
                self.source.close()
                raise
        self.schema = _refused(name, "Arrow IPC", lambda: reader.schema)

    def __enter__(self):
        return self.schema, self.batches

    def __exit__(self, *exc) -> None:
        self.source.close()


def _check_schema(schema, name: str, opts: ReadOptions) -> list[str]:
    """The columns to read: the text column (must be a string column) and a string source column."""
    field = opts.text_field
    names = schema.names
    if field not in names:
        _column_index(names, field, name)  # raises
    if not _is_text(schema.field(field).type):
        raise InputError(
            f"clean: {shown(name)}: column {field!r} holds {schema.field(field).type}, not text; "
            "set `text_field` to a string column"
        )
    cols = [field]
    src = opts.source_field
    if src is not None and src != field and src in names and _is_text(schema.field(src).type):
        cols.append(src)
    return cols


def _is_text(t) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t)


def _batch_rows(row_group, cols: list[str]) -> int:
    """Rows per batch for one Parquet row group: about `_BATCH_BYTES` of its (uncompressed) text
    columns, at most `_BATCH_ROWS`, at least 1 (1024 rows of 2 MB documents would be 2 GB).

    A dictionary-encoded column expands when decoded (a file of 600 rows repeating one 2 MB value
    is 2 MB on disk, 1.2 GB in memory), so such a row group is read at most `_DICT_BATCH_ROWS` rows
    at a time: the expansion stays below that many times the largest value.
    """
    chunks = [row_group.column(i) for i in range(row_group.num_columns)
              if any(_in_column(row_group.column(i).path_in_schema, c) for c in cols)]
    per_row = max(sum(c.total_uncompressed_size for c in chunks) // max(row_group.num_rows, 1), 1)
    rows = min(_BATCH_ROWS, max(1, _BATCH_BYTES // per_row))
    if any(c.has_dictionary_page for c in chunks):
        rows = min(rows, _DICT_BATCH_ROWS)
    return int(rows)


def _in_column(path: str, column: str) -> bool:
    # A column name may hold dots itself ("my.text"); nested leaves are "column.sub".
    return path == column or path.startswith(column + ".")


def _rows(batches, name: str, cols: list[str], cap: int, on_skip: SkipFn) -> Iterator[RawDoc]:
    """Documents of a stream of record batches. Damage (an exception of pyarrow) propagates:
    `read_guard.guarded` counts it with the row where reading stopped."""
    from mlmctl.sources import RawDoc

    row = 0
    for batch in batches:
        texts = _strings(batch.column(cols[0]), cap)
        sources = _strings(batch.column(cols[1]), cap) if len(cols) > 1 else itertools.repeat(None)
        for text, source in zip(texts, sources):
            row += 1
            if text is None:
                on_skip("missing_text_field", name, row)
            elif text is _TOO_LONG:
                on_skip("document_too_long", name, row)
            else:
                yield RawDoc(text, source if isinstance(source, str) else name, name, row)


def _strings(col, cap: int) -> Iterator:
    """A string column's values as Python strings (None for a null, `_TOO_LONG` for one over `cap`
    characters), converted `_BATCH_BYTES` at a time.

    Read as binary, so invalid UTF-8 becomes lone surrogates for the `decode` step (as in text files)
    instead of an exception. Checked first (`validate(full=True)`: every offset inside its buffer),
    because a memory-mapped Arrow file with a crafted offset would otherwise be read past its end -
    a crash (SIGBUS), not an exception.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    col.validate()  # buffer sizes, before anything reads the offsets
    if pa.types.is_dictionary(col.type):
        yield from _dictionary_strings(col, cap)
        return
    binary = _as_binary(col)
    binary.validate(full=True)
    sizes = pc.binary_length(binary).to_pylist()
    i = 0
    while i < len(sizes):
        # A run of rows of about _BATCH_BYTES (at least one row), converted at once.
        j, total = i, 0
        while j < len(sizes) and (j == i or total + (sizes[j] or 0) <= _BATCH_BYTES):
            total += sizes[j] or 0
            j += 1
        yield from _values(binary.slice(i, j - i), sizes[i:j], cap)
        i = j


def _as_binary(col):
    """The same bytes typed as binary: a zero-copy view for (large) strings, a cast otherwise."""
    import pyarrow as pa

    if pa.types.is_string(col.type):
        return col.view(pa.binary())
    if pa.types.is_large_string(col.type):
        return col.view(pa.large_binary())
    return col.cast(pa.large_binary())


def _dictionary_strings(col, cap: int) -> Iterator:
    """A dictionary-encoded column, each dictionary value converted once, when first used: decoding
    the column instead would repeat a value as often as rows use it (600 rows x one 2 MB value)."""
    col.validate(full=True)  # every index inside the dictionary
    dictionary = col.dictionary
    seen: dict = {}
    for index in col.indices.to_pylist():
        if index is None:
            yield None
            continue
        if index not in seen:
            seen[index] = next(_strings(dictionary.slice(index, 1), cap))
        yield seen[index]


def _values(chunk, sizes: list, cap: int) -> list:
    # A row of more than 4 * cap bytes is more than cap characters whatever it holds: never decoded.
    if any(s is not None and s > 4 * cap for s in sizes):
        return [_TOO_LONG if s is not None and s > 4 * cap else _value(chunk[k].as_py(), cap)
                for k, s in enumerate(sizes)]
    return [_value(b, cap) for b in chunk.to_pylist()]


def _value(b: bytes | None, cap: int):
    if b is None:
        return None
    text = b.decode("utf-8", "surrogateescape")
    return _TOO_LONG if len(text) > cap else text
