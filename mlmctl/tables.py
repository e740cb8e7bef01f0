"""Table-shaped inputs for `mlmctl clean`: CSV/TSV, Parquet and Arrow IPC, one document per row.

The text is the column named by `text_field` (and `source_field`, when set, becomes `source`).
Every reader streams: CSV record by record, Parquet one row group (in batches) at a time,
Arrow IPC (the files `datasets.save_to_disk` writes) one record batch at a time from a memory
map, so memory stays bounded by a batch, never by the file.

    for doc in read_parquet("corpus.parquet", ReadOptions(text_field="content"), on_skip): ...

Rows are numbered from 1 (CSV: the file line where the record starts), so a skipped row can
be found. A missing column, a column that is not text, or a file that is not Parquet/Arrow at
all is one `InputError` naming the file; `check_columns` finds it at discovery, before any work
starts. Damage found while reading (a truncated Parquet page, a CSV quote left open) is reported
through `on_skip(reason, file, row)`; the rows read before it are kept.

Parquet and Arrow need pyarrow, `.zst` needs zstandard: the `formats` extra
(`pip install 'mlmctl[formats]'`); `require` says so in one line.
"""

from __future__ import annotations

import csv
import io
import sys
from typing import TYPE_CHECKING, Callable, Iterator

from mlmctl.errors import InputError

if TYPE_CHECKING:
    from mlmctl.sources import RawDoc, ReadOptions

SkipFn = Callable[[str, str, int], None]
TABLE_FORMATS = ("csv", "tsv", "parquet", "arrow")
ARROW_FORMATS = ("parquet", "arrow")
# Rows converted to Python at a time: bounds memory for tables of short and long documents alike.
_BATCH_ROWS = 1024


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

    # The csv module's field limit is per process; the document cap is the natural bound.
    csv.field_size_limit(min(opts.max_document_chars, sys.maxsize))
    # strict: a quote left open at the end of the file is an error, not a silently swallowed tail.
    reader = csv.reader(text, delimiter="\t" if fmt == "tsv" else ",", strict=True)
    try:
        header = next(reader, None)
    except csv.Error:
        header = None
    if not header:
        raise InputError(f"clean: {name}: no header row; a {fmt.upper()} input needs one naming its columns")
    header[0] = header[0].lstrip("\ufeff")
    col = _column_index(header, opts.text_field, name)
    src = header.index(opts.source_field) if opts.source_field in header else None
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            # The parser cannot tell where a damaged record ends: keep what came before, stop here.
            on_skip("document_too_long" if "field limit" in str(e) else "malformed_csv", name, start)
            return
        line, start = start, reader.line_num + 1
        if not row:
            continue  # a blank line
        if col >= len(row):
            on_skip("missing_text_field", name, line)
            continue
        source = row[src] if src is not None and src < len(row) else name
        yield RawDoc(row[col], source, name, line)


def _column_index(header: list[str], column: str, name: str) -> int:
    if column not in header:
        shown = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
        raise InputError(f"clean: {name} has no column {column!r} (columns: {shown}); set `text_field`")
    return header.index(column)


# --------------------------------------------------------------------------- Parquet / Arrow


def check_columns(name: str, fmt: str, opts: ReadOptions) -> None:
    """Open a Parquet or Arrow file's schema only and check the text column (one line if not)."""
    if fmt == "parquet":
        with _parquet(name) as pf:
            _check_schema(pf.schema_arrow, name, opts)
    else:
        with _arrow(name) as (schema, _):
            _check_schema(schema, name, opts)


def read_parquet(name: str, opts: ReadOptions, on_skip: SkipFn) -> Iterator[RawDoc]:
    """Rows of a Parquet file, one row group at a time (only the needed columns are read)."""
    with _parquet(name) as pf:
        cols = _check_schema(pf.schema_arrow, name, opts)
        yield from _rows(pf.iter_batches(batch_size=_BATCH_ROWS, columns=cols), name, cols, on_skip, "corrupt_parquet")


def read_arrow(name: str, opts: ReadOptions, on_skip: SkipFn) -> Iterator[RawDoc]:
    """Rows of an Arrow IPC file (stream format, as `datasets.save_to_disk` writes, or file format)."""
    with _arrow(name) as (schema, batches):
        cols = _check_schema(schema, name, opts)
        yield from _rows(batches, name, cols, on_skip, "corrupt_arrow")


class _parquet:
    """`pyarrow.parquet.ParquetFile`, with a damaged or foreign file turned into one line."""

    def __init__(self, name: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            self.pf = pq.ParquetFile(name, memory_map=True)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise InputError(f"clean: {name} is not a readable Parquet file ({_short(e)}); check the file") from None

    def __enter__(self):
        return self.pf

    def __exit__(self, *exc) -> None:
        self.pf.close()


class _arrow:
    """(schema, record batches) of an Arrow IPC stream or file, memory-mapped."""

    def __init__(self, name: str) -> None:
        import pyarrow as pa

        self.source = pa.memory_map(name)
        try:
            reader = pa.ipc.open_stream(self.source)
            self.batches = iter(reader)
        except pa.ArrowInvalid:
            try:
                self.source.seek(0)
                reader = pa.ipc.open_file(self.source)
                self.batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            except (pa.ArrowException, OSError) as e:
                self.source.close()
                raise InputError(f"clean: {name} is not a readable Arrow IPC file ({_short(e)}); check the file") from None
        self.schema = reader.schema

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
            f"clean: {name}: column {field!r} holds {schema.field(field).type}, not text; set `text_field` to a string column"
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


def _rows(batches, name: str, cols: list[str], on_skip: SkipFn, corrupt: str) -> Iterator[RawDoc]:
    import pyarrow as pa

    from mlmctl.sources import RawDoc

    row = 0
    try:
        for batch in batches:
            texts = _strings(batch.column(cols[0]))
            sources = _strings(batch.column(cols[1])) if len(cols) > 1 else None
            for i, text in enumerate(texts):
                row += 1
                if text is None:
                    on_skip("missing_text_field", name, row)
                    continue
                source = sources[i] if sources is not None and sources[i] is not None else name
                yield RawDoc(text, source, name, row)
    except (pa.ArrowException, OSError) as e:
        del e  # reported as a skip: the rows read before the damage are kept
        on_skip(corrupt, name, row + 1)


def _strings(col) -> list:
    """A string column as Python strings. Through binary, so invalid UTF-8 becomes lone surrogates
    for the `decode` step (as in text files) instead of an exception."""
    import pyarrow as pa

    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    binary = col.cast(pa.large_binary())
    return [None if b is None else b.decode("utf-8", "surrogateescape") for b in binary.to_pylist()]


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
