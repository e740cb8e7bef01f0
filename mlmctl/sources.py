"""Reading raw inputs for `mlmctl clean`: files, directories, globs and built-in sources.

`discover()` turns the configured `input` entries into an ordered list of work units
(one per input file; the built-in `python-docs` source is split into a fixed number of
units), failing with one clear line on a missing path, an unreadable file or a glob
that matches nothing. `read_unit()` then streams one unit's documents as
`RawDoc(text, source, file, line)`:

- `.txt` (any name not recognised otherwise), `.jsonl` / `.ndjson` / `.json` (one JSON
  object per line, text under a configurable field) and `.csv` / `.tsv` (a header row, text in
  the named column; `mlmctl.tables`), gzip- or zstandard-compressed or not (detected by the
  magic bytes, not the name; `.zst` needs the `formats` extra).
- `.parquet` and `.arrow` (Arrow IPC, as `datasets.save_to_disk` writes it): one document per
  row, streamed by row group / record batch (`mlmctl.tables`, the `formats` extra).
- Text is decoded as UTF-8 with `surrogateescape`, so invalid bytes survive as lone
  surrogates that the `decode` clean step replaces or drops (and counts). A UTF-16 or
  UTF-32 byte-order mark switches the file to that encoding.
- Document boundaries: the whole file, blank lines, or every line. Line numbers are
  1-based and point at the first line of a document, so a skipped record can be found.
- A document longer than `max_document_chars` is skipped while it is read (memory stays
  bounded by that limit, not by the file size).

Records that cannot be read (malformed JSON, missing text field, damaged gzip/zstd/Parquet/Arrow
data, oversized documents) are reported through `on_skip(reason, file, line)`, never raised;
`read_guard.guarded` sorts whatever a reader's library raises into such a skip or one
`InputError` line naming file and row.
"""

from __future__ import annotations

import ast
import codecs
import errno
import fnmatch
import functools
import glob
import gzip
import io
import os
import stat
import sysconfig
import warnings
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator

from mlmctl import safe_json
from mlmctl.errors import InputError
from mlmctl.read_guard import Cursor, guarded, shown
from mlmctl.zstd import is_zstd

BUILTIN_PREFIX = "builtin:"
BUILTIN_SOURCES = ("python-docs",)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
# Name endings of the table formats (mlmctl.tables), checked after a .gz/.zst suffix is removed.
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
                  ".arrow": "arrow"}
# Bytes sampled at the start of a file to tell text from binary data.
_SNIFF_BYTES = 8192
# Share of the sample that is U+FFFD (invalid UTF-8) or C0 control characters above which a
# file is binary (an image, an archive) or not UTF-8 at all. Latin-1 prose stays far below it.
_BINARY_SHARE = 0.3
_GZIP_MAGIC = b"\x1f\x8b"
# Reads of this many characters keep Python-level overhead low without holding much.
_CHUNK_CHARS = 1 << 20

SkipFn = Callable[[str, str, int], None]
SkipFileFn = Callable[[str, str], None]
SKIP_REASONS = ("broken_link", "link_loop", "directory_loop", "unreadable", "not_regular_file", "hidden",
                "not_included")
"""Why a directory walk left an entry out; the last two are routine and only counted, not listed."""


@dataclass(frozen=True)
class FileUnit:
    """One input file; `name` is the path as discovered (what `source` and stats show)."""

    name: str
    fmt: str  # "text", "jsonl", "html", "csv", "tsv", "parquet" or "arrow"

    @property
    def key(self) -> str:
        return f"file:{self.name}"


@dataclass(frozen=True)
class BuiltinUnit:
    """Part `index` of `count` of a built-in source (with its modules, listed once by `discover`)."""

    source: str
    index: int
    count: int
    modules: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{BUILTIN_PREFIX}{self.source}/{self.index}-of-{self.count}"


Unit = FileUnit | BuiltinUnit


@dataclass(frozen=True)
class ReadOptions:
    """What `read_unit` needs from the clean config (kept small so it pickles cheaply)."""

    boundary: str = "blank_line"
    text_field: str = "text"
    source_field: str | None = None
    max_document_chars: int = 50_000_000
    docs_packages: tuple[str, ...] = ()
    docs_exclude: tuple[str, ...] = ("test", "tests", "testing", "_vendor", "idlelib")
    docs_min_chars: int = 40
    docs_max_documents: int = 20_000
    docs_max_file_kb: int = 1024


@dataclass(slots=True)
class RawDoc:
    """A document as read, before any clean step."""

    text: str
    source: str
    file: str
    line: int


# --------------------------------------------------------------------------- discovery


def discover(
    inputs: list[str], include: list[str], fmt: str, builtin_units: int, docs: ReadOptions | None = None,
    skip_dir: str | None = None, on_skip: SkipFileFn | None = None,
) -> list[Unit]:
    """Expand the `input` entries into work units, in a deterministic order.

    Order: entries as listed; inside a directory or glob, sorted paths. A file reached
    twice (say, named and inside a listed directory) is read once, at its first place.
    With `docs`, built-in units carry their share of the python-docs module list, so the
    workers need not walk site-packages again. Files under `skip_dir` (the stage's own output
    directory, when it lies inside an input directory) are never read. Entries a directory walk
    leaves out are reported through `on_skip(reason, path)` (see `_walk`), so they can be counted.
    """
    report: SkipFileFn = on_skip or (lambda reason, path: None)
    units: list[Unit] = []
    seen: set[str] = set()
    skip = os.path.realpath(skip_dir) + os.sep if skip_dir else None
    for entry in inputs:
        if entry.startswith(BUILTIN_PREFIX):
            name = entry[len(BUILTIN_PREFIX):]
            if name not in BUILTIN_SOURCES:
                raise InputError(
                    f"clean: unknown built-in source {entry!r} in `input`; "
                    f"available: {', '.join(BUILTIN_PREFIX + s for s in BUILTIN_SOURCES)}"
                )
            if entry in seen:
                continue
            seen.add(entry)
            mods = python_docs_modules(docs) if docs is not None else ()
            units.extend(
                BuiltinUnit(name, i, builtin_units, tuple(mods[i::builtin_units])) for i in range(builtin_units)
            )
            continue
        _check_name(entry)
        for path in _expand(entry, include, report):
            real = os.path.realpath(path)
            if real in seen or (skip and real.startswith(skip)):
                continue
            seen.add(real)
            _check_readable(path)
            units.append(FileUnit(path, _format_of(path, fmt)))
    if not units:
        raise InputError("clean: `input` names no files; give files, directories, globs or builtin:python-docs")
    _check_tables(units, docs)
    return units


def _check_name(entry: str) -> None:
    """An `input` entry is stored in the manifest (JSON, UTF-8): bytes that are not UTF-8 in it
    (kept by Python as lone surrogates) cannot be, so refuse them now rather than after the work.
    Names found inside a listed directory are fine: stats.json shows their bad bytes as U+FFFD."""
    try:
        entry.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            f"clean: input path {shown(entry)} is not valid UTF-8; rename it, or list its directory instead"
        ) from None


def _check_tables(units: list[Unit], opts: ReadOptions | None) -> None:
    """Parquet/Arrow inputs: pyarrow is installed and each file has its text column - checked
    here, before any work starts, from the schemas alone."""
    from mlmctl import tables

    files = [u for u in units if isinstance(u, FileUnit) and u.fmt in tables.ARROW_FORMATS]
    if not files:
        return
    tables.require("pyarrow", f"reading {files[0].fmt.capitalize()} input ({files[0].name!r})")
    if opts is not None:
        for u in files:
            tables.check_columns(u.name, u.fmt, opts)


def _expand(entry: str, include: list[str], on_skip: SkipFileFn) -> list[str]:
    """Files named by one `input` entry: a file, a directory (walked) or a glob."""
    if glob.has_magic(entry):
        matches = sorted(glob.glob(entry, recursive=True))
        if not matches:
            raise InputError(f"clean: input glob {entry!r} matches nothing; check the pattern and the working directory")
        files: list[str] = []
        for m in matches:
            files.extend(_walk(m, include, on_skip) if os.path.isdir(m) else [m])
        return files
    try:
        st = os.stat(entry)
    except FileNotFoundError:
        if os.path.islink(entry):
            raise InputError(f"clean: input {entry!r} is a broken symbolic link; fix or remove it") from None
        raise InputError(f"clean: input {entry!r} does not exist; check the path in `input` or --input") from None
    except OSError as e:  # ELOOP: a symlink loop; EACCES on a parent directory
        raise InputError(f"clean: cannot open input {entry!r} ({e.strerror}); fix the path or its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        files = _walk(entry, include, on_skip)
        if not files:
            raise InputError(
                f"clean: input directory {entry!r} holds no file matching {include}; "
                "set `include` or name the files"
            )
        return files
    return [entry]


def _walk(root: str, include: list[str], on_skip: SkipFileFn) -> list[str]:
    """Files under `root` whose name matches `include` (ignoring case), sorted, hidden entries skipped.

    Symbolic links to directories are followed once: a directory already visited (same
    device and inode) is not entered again, so a link loop cannot recurse forever.
    Entries that cannot be stat'ed (broken links, links pointing at themselves) and
    non-regular files (FIFOs, sockets, devices) are left out: they are not text. Every
    entry left out is reported with its reason (see `SKIP_REASONS`).
    """
    out: list[str] = []
    visited: set[tuple[int, int]] = set()
    # Case-insensitive, as the formats are: `A.JSONL.ZST` is read like `a.jsonl.zst`.
    patterns = [p.lower() for p in include]
    # A stack of the directories being listed, not recursion: a tree 1500 levels deep is legal.
    stack: list[Iterator[str]] = []

    def enter(d: str, st: os.stat_result) -> None:
        if (st.st_dev, st.st_ino) in visited:
            on_skip("directory_loop", d)
            return
        visited.add((st.st_dev, st.st_ino))
        try:
            names = sorted(os.listdir(d))
        except OSError as e:
            raise InputError(f"clean: cannot list directory {d!r} ({e.strerror}); fix its permissions") from None
        stack.append(iter(names))
        dirs.append(d)

    dirs: list[str] = []
    enter(root, os.stat(root))
    while stack:
        name = next(stack[-1], None)
        if name is None:
            stack.pop()
            dirs.pop()
            continue
        p = os.path.join(dirs[-1], name)
        if name.startswith("."):
            on_skip("hidden", p)
            continue
        try:
            st = os.stat(p)
        except OSError as e:
            on_skip(_stat_failure(p, e), p)
            continue
        if stat.S_ISDIR(st.st_mode):
            enter(p, st)
        elif not stat.S_ISREG(st.st_mode):
            on_skip("not_regular_file", p)
        elif any(fnmatch.fnmatchcase(name.lower(), pat) for pat in patterns):
            out.append(p)
        else:
            on_skip("not_included", p)
    return out


def _stat_failure(path: str, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "link_loop"
    if isinstance(e, FileNotFoundError) and os.path.islink(path):
        return "broken_link"
    return "unreadable"


def _check_readable(path: str) -> None:
    """Fail now, with one line, on a file the workers could not read later."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise InputError(f"clean: cannot open input {path!r} ({e.strerror}); fix the path or its permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"clean: input {path!r} is not a regular file (a FIFO, socket or device); name text files only")
    try:
        with open_binary(path) as f:
            head = f.read(4)
    except OSError as e:
        raise InputError(f"clean: cannot read input {path!r} ({e.strerror}); fix its permissions or remove it from `input`") from None
    if is_zstd(head):
        from mlmctl.tables import require

        require("zstandard", f"the zstandard-compressed input {path!r}")


def open_binary(path: str):
    """The one place input files are opened (tests patch it to simulate unreadable files).

    Opened without blocking and checked to be a regular file before anything is read: a name
    that became a FIFO after discovery would otherwise block the run forever in `open`, and one
    that became a link to /dev/zero would never end.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"clean: {shown(path)}: not a regular file any more (a directory, FIFO, socket or device); "
                             "name text files only")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _format_of(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    name = path.lower()
    for comp in (".gz", ".zst"):
        name = name[:-len(comp)] if name.endswith(comp) else name
    table = TABLE_SUFFIXES.get(os.path.splitext(name)[1])
    if table is not None:
        return table
    if name.endswith(HTML_SUFFIXES):
        return "html"
    return "jsonl" if name.endswith(JSONL_SUFFIXES) else "text"


# --------------------------------------------------------------------------- reading


def read_unit(unit: Unit, opts: ReadOptions, on_skip: SkipFn, stats: dict) -> Iterator[RawDoc]:
    """Yield one unit's documents in file order. `stats` collects reader counters.

    Every file reader runs under `read_guard.guarded`: damaged data ends the file as a counted
    `read/corrupt_*` skip, anything else a library raises is one `InputError` naming file and row.
    """
    if isinstance(unit, BuiltinUnit):
        yield from read_python_docs(unit.index, unit.count, opts, on_skip, unit.modules or None)
        return
    stats["files"] = stats.get("files", 0) + 1
    cursor = Cursor(unit.name, f"corrupt_{unit.fmt}")
    yield from guarded(_read_file(unit, opts, cursor.track(on_skip), stats, cursor), cursor, on_skip)


def _read_file(unit: FileUnit, opts: ReadOptions, on_skip: SkipFn, stats: dict, cursor: Cursor) -> Iterator[RawDoc]:
    if unit.fmt in ("parquet", "arrow"):
        from mlmctl import tables

        open_binary(unit.name).close()  # still a regular file (pyarrow opens it by name, blocking)

        yield from (tables.read_parquet if unit.fmt == "parquet" else tables.read_arrow)(unit.name, opts, on_skip)
        return
    raw = open_binary(unit.name)
    try:
        head = raw.read(_SNIFF_BYTES)
        raw.seek(0)
        binary: io.BufferedIOBase = raw
        if head[:2] == _GZIP_MAGIC:
            head = _gunzip_head(raw)
            raw.seek(0)
            binary = gzip.GzipFile(fileobj=raw, mode="rb")
            cursor.corrupt = "corrupt_gzip"
        elif is_zstd(head):
            from mlmctl.zstd import ZstdReader

            binary = io.BufferedReader(ZstdReader(raw))
            head = binary.peek(_SNIFF_BYTES)[:_SNIFF_BYTES] if _zstd_head_ok(binary) else b""
            _count(stats, "files_zstd")
            cursor.corrupt = "corrupt_zstd"
            # Damage shows as "corrupt_zstd" rather than the gzip reason the text readers use.
            on_skip = _renamed(on_skip, "corrupt_gzip", "corrupt_zstd")
        elif unit.name.lower().endswith(".gz"):
            # Named .gz but not compressed: read as it is (the bytes decide), and count it.
            _count(stats, "files_named_gz_not_gzip")
        encoding, bom_len = _sniff_encoding(head)
        if bom_len and encoding != "utf-8":
            _count(stats, f"files_{encoding}")
        if encoding == "utf-8" and _looks_binary(head):
            on_skip("binary_file", unit.name, 1)
            return
        if encoding == "utf-8":
            # Keep the UTF-8 BOM in the text: the `remove_bom` step removes and counts it.
            # JSON lines cannot start with one, so the jsonl reader strips it itself.
            text = io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="")
        else:
            # The codec consumes the BOM. Odd trailing bytes become U+FFFD.
            text = io.TextIOWrapper(binary, encoding=encoding, errors="replace", newline="")
        if unit.fmt == "jsonl":
            yield from _read_jsonl(text, unit.name, opts, on_skip)
        elif unit.fmt in ("csv", "tsv"):
            from mlmctl.tables import read_csv

            yield from read_csv(text, unit.name, unit.fmt, opts, on_skip)
        elif unit.fmt == "html":
            yield from _read_html(text, unit.name, opts, on_skip)
        else:
            yield from _read_text(text, unit.name, opts, on_skip)
    finally:
        raw.close()


def _zstd_head_ok(binary: io.BufferedReader) -> bool:
    try:
        binary.peek(1)
        return True
    except _READ_ERRORS:
        return False


def _renamed(on_skip: SkipFn, old: str, new: str) -> SkipFn:
    return lambda reason, file, line: on_skip(new if reason == old else reason, file, line)


def _gunzip_head(raw) -> bytes:
    """The first decompressed bytes of a gzip file, as far as they can be read: damage later in
    the file is reported by the reader at the line where it shows (what comes before is kept)."""
    d = zlib.decompressobj(wbits=31)
    try:
        return d.decompress(raw.read(1 << 16), _SNIFF_BYTES)
    except zlib.error:
        return b""


def _count(stats: dict, key: str) -> None:
    stats[key] = stats.get(key, 0) + 1


def _looks_binary(sample: bytes) -> bool:
    """A high share of invalid UTF-8 and control characters (NUL included) in the sample.

    A stray NUL or invalid byte in text is left to the `decode` and `remove_chars` steps; an
    image or archive has them everywhere. Only for UTF-8 candidates: UTF-16/32 files (told
    by their byte-order mark) are full of NULs.
    """
    if not sample:
        return False
    text = sample.decode("utf-8", errors="replace")
    if len(sample) == _SNIFF_BYTES:
        text = text[:-1]  # the sample may end inside a multi-byte character
    bad = sum(1 for ch in text if ch == "\ufffd" or (ch < " " and ch not in "\t\n\r\f\v") or ch == "\x7f")
    return bad > _BINARY_SHARE * max(len(text), 1)


def _sniff_encoding(head: bytes) -> tuple[str, int]:
    # UTF-32 first: its little-endian BOM starts with the UTF-16 one.
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32", 4
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", 2
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3
    return "utf-8", 0


# Yielded by `_lines` in place of a line over the size cap (compared by identity).
_TOO_LONG = "<line over max_document_chars>"
# Damaged gzip data shows up as one of these while reading; what was read before stays.
_READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _lines(text: io.TextIOWrapper, name: str, cap: int, on_skip: SkipFn) -> Iterator[tuple[int, str | None]]:
    """(line number, line with its ending) pairs; a line over `cap` chars is skipped.

    Damaged gzip data ends the file with one last `(line number, None)`: the lines
    before the damage are kept, the caller reports the record being read.
    """
    lineno = 0
    try:
        while True:
            line = text.readline(cap + 1)
            if not line:
                return
            lineno += 1
            if len(line) > cap and not line.endswith(("\n", "\r")):
                on_skip("document_too_long", name, lineno)
                while line and not line.endswith(("\n", "\r")):  # drain the rest of it
                    line = text.readline(_CHUNK_CHARS)
                yield lineno, _TOO_LONG
                continue
            yield lineno, line
    except _READ_ERRORS:
        yield lineno + 1, None


def _read_text(text: io.TextIOWrapper, name: str, opts: ReadOptions, on_skip: SkipFn) -> Iterator[RawDoc]:
    cap = opts.max_document_chars
    if opts.boundary == "file":
        try:
            body = text.read(cap + 1)
            if len(body) > cap:
                on_skip("document_too_long", name, 1)
                return
        except _READ_ERRORS:
            on_skip("corrupt_gzip", name, 1)
            return
        yield RawDoc(body, name, name, 1)
    elif opts.boundary == "line":
        for lineno, line in _lines(text, name, cap, on_skip):
            if line is None:
                on_skip("corrupt_gzip", name, lineno)
                return
            if line is _TOO_LONG:
                continue
            line = line.rstrip("\r\n")
            if line.strip():
                yield RawDoc(line, name, name, lineno)
    else:  # blank_line: a paragraph is a run of lines that are not blank
        buf: list[str] = []
        size = 0
        start = 0
        too_long = False
        for lineno, line in _lines(text, name, cap, on_skip):
            if line is None:
                # The paragraph being read may be incomplete: report it, keep none of it.
                on_skip("corrupt_gzip", name, start if buf else lineno)
                return
            if line is _TOO_LONG:  # reported by _lines; drop the whole paragraph
                buf, size, too_long = [], 0, True
                continue
            if line.strip():
                if not buf and not too_long:
                    start = lineno
                if too_long:
                    continue
                size += len(line)
                if size > cap:
                    on_skip("document_too_long", name, start)
                    buf, size, too_long = [], 0, True
                    continue
                buf.append(line)
            else:
                if buf:
                    yield RawDoc("".join(buf), name, name, start)
                buf, size, too_long = [], 0, False
        if buf:
            yield RawDoc("".join(buf), name, name, start)


def _read_html(text: io.TextIOWrapper, name: str, opts: ReadOptions, on_skip: SkipFn) -> Iterator[RawDoc]:
    """An HTML file is one document: its text with the markup, scripts and styles removed.

    Stripped here, whatever the configured steps, because an HTML file read as plain text
    would put its `<script>` and `<style>` code into the corpus.
    """
    from mlmctl.cleaning import StripMarkup, StripMarkupConfig

    cap = opts.max_document_chars
    try:
        body = text.read(cap + 1)
    except _READ_ERRORS:
        on_skip("corrupt_gzip", name, 1)
        return
    if len(body) > cap:
        on_skip("document_too_long", name, 1)
        return
    stripped, _ = StripMarkup(StripMarkupConfig(only_if_html=False, drop_script_style=True)).process(body)
    yield RawDoc(stripped, name, name, 1)


def _read_jsonl(text: io.TextIOWrapper, name: str, opts: ReadOptions, on_skip: SkipFn) -> Iterator[RawDoc]:
    field, src_field = opts.text_field, opts.source_field
    for lineno, line in _lines(text, name, opts.max_document_chars, on_skip):
        if line is None:
            on_skip("corrupt_gzip", name, lineno)
            return
        if line is _TOO_LONG:
            continue
        if lineno == 1 and line.startswith("\ufeff"):
            line = line[1:]
        if not line.strip():
            continue
        try:
            rec = safe_json.loads(line)
        except safe_json.JSONError as e:  # malformed, nested too deep, a number too large
            on_skip(e.reason, name, lineno)
            continue
        if not isinstance(rec, dict):
            on_skip("not_an_object", name, lineno)
            continue
        value = rec.get(field)
        if value is None:
            on_skip("missing_text_field", name, lineno)
            continue
        if not isinstance(value, str):
            on_skip("text_field_not_string", name, lineno)
            continue
        source = name
        if src_field is not None and isinstance(rec.get(src_field), str):
            source = rec[src_field]
        yield RawDoc(value, source, name, lineno)


# --------------------------------------------------------------------------- python-docs


def python_docs_roots() -> list[tuple[str, bool]]:
    """(directory, is_stdlib) pairs to scan: the standard library, then site-packages."""
    paths = sysconfig.get_paths()
    roots: list[tuple[str, bool]] = [(paths["stdlib"], True)]
    for key in ("purelib", "platlib"):
        p = paths.get(key)
        if p and os.path.isdir(p) and all(os.path.realpath(p) != os.path.realpath(r) for r, _ in roots):
            roots.append((p, False))
    return roots


@functools.lru_cache(maxsize=4)
def python_docs_modules(opts: ReadOptions) -> tuple[tuple[str, str], ...]:
    """All (module name, file) pairs the python-docs source reads, in unit-assignment order.

    Cached per process: the input fingerprint and the run both need it (~0.3 s per walk).

    Modules are sorted by name, then interleaved across top-level packages (one module of
    each package in turn), so any prefix of the list - and each unit's every-N-th slice -
    samples all packages rather than only those early in the alphabet.
    """
    mods: dict[str, str] = {}
    exclude = set(opts.docs_exclude)
    packages = set(opts.docs_packages)
    for root, is_stdlib in python_docs_roots():
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            parts = [] if rel == "." else rel.split(os.sep)
            # Only package-like directories: skips site-packages inside the stdlib,
            # *.dist-info, __pycache__, and anything excluded by name.
            dirnames[:] = sorted(
                d for d in dirnames
                if d.isidentifier() and d not in exclude and d != "__pycache__"
                and not (is_stdlib and not parts and d in ("site-packages", "dist-packages"))
            )
            for fn in sorted(filenames):
                if not fn.endswith(".py"):
                    continue
                stem = fn[:-3]
                if not stem.isidentifier() or stem in exclude or stem.startswith("__editable__"):
                    continue  # (pip's editable-install finders are generated code, not docs)
                name_parts = parts + ([] if stem == "__init__" else [stem])
                if not name_parts:
                    continue
                if packages and name_parts[0] not in packages:
                    continue
                mods.setdefault(".".join(name_parts), os.path.join(dirpath, fn))
    by_top: dict[str, list[tuple[str, str]]] = {}
    for name in sorted(mods):
        by_top.setdefault(name.split(".")[0], []).append((name, mods[name]))
    queues = [by_top[t] for t in sorted(by_top)]
    out: list[tuple[str, str]] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return tuple(out)


def read_python_docs(
    index: int, count: int, opts: ReadOptions, on_skip: SkipFn, modules: tuple | None = None
) -> Iterator[RawDoc]:
    """Docstrings (and pydoc topics) of every count-th module, starting at `index`.

    Uses `ast` on the source files: nothing is imported or executed, so no package code
    runs, nothing is printed and the result depends only on the installed files.
    At most ceil(docs_max_documents / count) documents per unit. `modules`: this unit's
    slice of `python_docs_modules(opts)`, when the caller has it already.
    """
    cap = -(-opts.docs_max_documents // count)
    n = 0
    if modules is None:
        modules = python_docs_modules(opts)[index::count]
    for module, path in modules:
        for text, line in _module_docs(path, module, opts):
            if len(text) < opts.docs_min_chars:
                continue
            yield RawDoc(text, f"python-docs:{module}", path, line)
            n += 1
            if n >= cap:
                return


def _module_docs(path: str, module: str, opts: ReadOptions) -> Iterator[tuple[str, int]]:
    try:
        if os.path.getsize(path) > opts.docs_max_file_kb * 1024:
            return
        with open(path, "rb") as f:
            src = f.read()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes: never print
            tree = ast.parse(src, filename=path)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return  # not parseable by this Python: skip the module
    if module == "pydoc_data.topics":
        yield from _pydoc_topics(tree)
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc, getattr(node, "lineno", 1)


def _pydoc_topics(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """The `topics` dict of pydoc_data.topics (the language reference), read as a literal."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "topics" for t in node.targets):
            try:
                topics = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                return
            if isinstance(topics, dict):
                for key in sorted(topics):
                    if isinstance(topics[key], str):
                        yield topics[key], node.lineno
            return

