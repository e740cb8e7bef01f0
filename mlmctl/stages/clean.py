"""clean: raw text -> cleaned, de-duplicated, split document shards.

Reads `.txt` / `.jsonl` / `.csv` / `.tsv` files (gzip- or zstandard-compressed or not), Parquet and Arrow IPC files, directories (walked), globs and the built-in
`builtin:python-docs` source (see `mlmctl.sources`), runs the configured clean steps
(`mlmctl.cleaning`) on every document, removes exact duplicates across the whole corpus and
splits the rest into train and validation by document hash. Writes:

    {train,validation}/shard-NNNNN.jsonl.gz   {"id", "text", "source"} per line, UTF-8
    stats.json                                documents and characters in, out, and dropped
                                              per step and reason; where skipped records were
    manifest.json                             written last

How the work is cut so that output bytes never depend on `--workers` or `--task`:

1. `read` phase, one unit per input file (the built-in source in a fixed number of parts):
   read, clean, hash; write the kept documents as JSON lines plus their hashes, line sizes
   and character counts (`.work/read/unit-NNNNN/`). This is the phase `--task I/N` fans out.
2. plan, in the final run: global first-occurrence de-duplication over all hashes in
   canonical (unit, document) order, the train/validation split, and shard numbers from
   the running byte offset of each split, so shard boundaries are global.
3. `write` phase, one unit per input unit: each unit's surviving lines, gzip-compressed as
   one gzip member per (split, shard) piece it contributes.
4. assemble: a shard is the byte concatenation of its pieces in unit order (a multi-member
   gzip file, which every gzip reader reads as one stream); then stats.json, manifest.json.

Memory stays flat in corpus size except for the de-duplication table: 8 bytes per
document (16 while it is sorted).

Example:
    mlmctl clean -c configs/demo/clean.yaml --workers 2
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlmctl.cleaning import (
    DEFAULT_STEPS,
    build_pipeline,
    STEPS,
    DecodeConfig,
    LengthFilterConfig,
    NormalizeConfig,
    QualityFilterConfig,
    RemoveBomConfig,
    RemoveCharsConfig,
    StripMarkupConfig,
    UrlsConfig,
    WhitespaceConfig,
    ZhConvertConfig,
    drop_warning,
)
from mlmctl.near_dedup import MINHASH_FILE, NearDedupConfig
from mlmctl.repetition import FineWebQualityConfig, GopherRepetitionConfig
from mlmctl.config import check
from mlmctl.errors import MlmctlError
from mlmctl.layout import SPLITS, STATS_FILE, shard_name
from mlmctl.shards import ShardInfo, atomic_write, atomic_write_json

STAGE = "clean"
INPUT_STAGE = None

SUFFIX = ".jsonl.gz"
_DOCS, _HASHES, _SIZES, _CHARS = "docs.jsonl", "hashes.u64", "sizes.u64", "chars.u64"
_SCRIPTS = "scripts.u8"  # each kept document's dominant script: its index in scripts.DOMINANT


@dataclass
class PythonDocsConfig:
    """Settings of the built-in `builtin:python-docs` source."""

    packages: list[str] = field(default_factory=list)
    """Top-level packages/modules to read (e.g. [json, numpy]); empty: the whole standard library and every installed package."""
    exclude: list[str] = field(default_factory=lambda: ["test", "tests", "testing", "_vendor", "idlelib"])
    """Module or package names skipped wherever they occur in a dotted module path."""
    min_chars: int = 40
    """Docstrings shorter than this many characters are not read (one-liners like "Return self.")."""
    max_documents: int = 20_000
    """Most docstrings read (spread over `units`; modules are interleaved across packages so a cap still samples all of them)."""
    max_file_kb: int = 1024
    """Source files larger than this are skipped (generated tables, not documentation)."""
    units: int = 8
    """Work units the source is split into (fixed, so output does not depend on --workers)."""

    def __post_init__(self) -> None:
        check(self.units >= 1, "units", f"must be >= 1, got {self.units}")
        check(self.max_documents >= 1, "max_documents", f"must be >= 1, got {self.max_documents}")
        check(self.max_file_kb >= 1, "max_file_kb", f"must be >= 1, got {self.max_file_kb}")
        check(self.min_chars >= 0, "min_chars", f"must be >= 0, got {self.min_chars}")


@dataclass
class CleanConfig:
    """Raw text to cleaned, de-duplicated train/validation document shards."""

    input: list[str] = field(default_factory=lambda: ["builtin:python-docs"])
    """Files, directories (walked recursively), globs, or `builtin:python-docs`; read in this order."""
    output: str = "data/clean"
    """Directory to write the shards, stats.json and manifest.json to."""
    format: Literal["auto", "text", "jsonl", "html", "csv", "tsv", "parquet", "arrow"] = "auto"
    """Input file format: `auto` takes .jsonl/.ndjson/.json (optionally .gz/.zst) as JSON lines, .html/.htm as HTML (one document per file, markup, scripts and styles removed), .csv/.tsv as tables with a header row, .parquet and .arrow (Arrow IPC, as datasets.save_to_disk writes) as one document per row, and everything else as text."""
    text_field: str = "text"
    """JSON lines: the field holding the document text; CSV/TSV, Parquet, Arrow: the column holding it."""
    source_field: str | None = None
    """JSON lines (field) and tables (column): copied into each record's `source` when a string (null: the file path)."""
    boundary: Literal["file", "blank_line", "line"] = "blank_line"
    """Text files: where a document ends - at the end of the file, at a blank line, or at every line."""
    include: list[str] = field(default_factory=lambda: ["*.txt", "*.txt.gz", "*.jsonl", "*.jsonl.gz", "*.ndjson", "*.ndjson.gz", "*.md", "*.txt.zst", "*.jsonl.zst", "*.parquet", "*.arrow"])
    """File-name patterns read when walking a directory (files named directly or by a glob are always read)."""
    max_document_chars: int = 50_000_000
    """Documents longer than this are skipped while reading (bounds memory); see also length_filter.max_chars."""
    python_docs: PythonDocsConfig = field(default_factory=PythonDocsConfig)
    """The built-in source."""
    steps: list[str] = field(default_factory=lambda: list(DEFAULT_STEPS))
    """Clean steps in order (decode first); each step's settings are in the section of the same name."""
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    """Step `decode`."""
    remove_bom: RemoveBomConfig = field(default_factory=RemoveBomConfig)
    """Step `remove_bom`."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    """Step `normalize`."""
    remove_chars: RemoveCharsConfig = field(default_factory=RemoveCharsConfig)
    """Step `remove_chars`."""
    strip_markup: StripMarkupConfig = field(default_factory=StripMarkupConfig)
    """Step `strip_markup` (not in the default steps)."""
    urls: UrlsConfig = field(default_factory=UrlsConfig)
    """Step `urls`."""
    whitespace: WhitespaceConfig = field(default_factory=WhitespaceConfig)
    """Step `whitespace`."""
    zh_convert: ZhConvertConfig = field(default_factory=ZhConvertConfig)
    """Step `zh_convert` (not in the default steps; needs the `zh` extra)."""
    length_filter: LengthFilterConfig = field(default_factory=LengthFilterConfig)
    """Step `length_filter`."""
    quality_filter: QualityFilterConfig = field(default_factory=QualityFilterConfig)
    """Step `quality_filter`."""
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    """Step `gopher_repetition` (not in the default steps): Gopher's repeated line, paragraph and n-gram rules."""
    fineweb_quality: FineWebQualityConfig = field(default_factory=FineWebQualityConfig)
    """Step `fineweb_quality` (not in the default steps): FineWeb's punctuated-line, short-line, duplicate-line and list rules."""
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    """Step `near_dedup` (not in the default steps; must be the last step): MinHash LSH near-duplicate removal."""
    dedup: bool = True
    """Drop exact duplicates (same text after all steps) across the whole corpus, keeping the first in input order."""
    validation_fraction: float = 0.01
    """Share of documents sent to validation, chosen by a hash of the text (deterministic, independent of order)."""
    split_seed: int = 0
    """Changes which documents the hash sends to validation."""
    max_shard_mb: float = 64.0
    """Uncompressed JSON lines per shard, in MiB (a shard may exceed it by its last document)."""
    compresslevel: int = 6
    """gzip level of the shards (1 fastest ... 9 smallest)."""
    max_listed_skips: int = 1000
    """Most skipped or dropped records listed with file and line in stats.json (all are counted)."""

    def __post_init__(self) -> None:
        check(len(self.input) > 0, "input", "name at least one file, directory, glob or builtin:python-docs")
        check(len(self.steps) > 0 and self.steps[0] == "decode", "steps",
              "must start with `decode` (it makes the text valid Unicode for the steps after it)")
        for i, name in enumerate(self.steps):
            if name not in STEPS:
                import difflib

                close = difflib.get_close_matches(name, list(STEPS), n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else f" (steps: {', '.join(STEPS)})"
                check(False, f"steps[{i}]", f"unknown step {name!r}{hint}")
        dup = sorted({n for n in self.steps if self.steps.count(n) > 1})
        check(not dup, "steps", f"lists {', '.join(dup)} more than once")
        check("near_dedup" not in self.steps or self.steps[-1] == "near_dedup", "steps",
              "`near_dedup` must be the last step (it compares the final text of the documents kept)")
        check(0.0 <= self.validation_fraction < 1.0, "validation_fraction",
              f"must be in [0, 1), got {self.validation_fraction}")
        check(1 <= self.compresslevel <= 9, "compresslevel", f"must be 1..9, got {self.compresslevel}")
        check(self.max_shard_mb > 0, "max_shard_mb", f"must be > 0, got {self.max_shard_mb}")
        check(self.max_document_chars >= 1, "max_document_chars", f"must be >= 1, got {self.max_document_chars}")
        check(self.max_listed_skips >= 0, "max_listed_skips", f"must be >= 0, got {self.max_listed_skips}")
        check(bool(self.text_field), "text_field", "must not be empty")
        check(self.split_seed >= 0, "split_seed", f"must be >= 0, got {self.split_seed}")


CONFIG = CleanConfig


# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class _ReadUnit:
    """Read + clean + hash one input unit (picklable; its repr is the resume key)."""

    unit: object  # sources.FileUnit | sources.BuiltinUnit
    read: object  # sources.ReadOptions
    steps: tuple[str, ...]
    step_configs: tuple
    max_listed: int


@dataclass(frozen=True)
class _WriteUnit:
    """Compress one unit's surviving lines into (split, shard) pieces."""

    read_dir: str
    plan: str
    plan_sha256: str
    compresslevel: int


def input_fingerprint(cfg: CleanConfig) -> str:
    """Identity of the raw inputs: every file's path, size and mtime; the Python and its
    packages for the built-in source. Also fails early, with one line, on a bad `input`."""
    from mlmctl.sources import BuiltinUnit

    parts = []
    for u in _discover(cfg):
        if isinstance(u, BuiltinUnit):
            if u.index == 0:
                parts += [u.key, sys.version]
            for name, path in u.modules:
                st = os.stat(path)
                parts.append(f"{name}\t{st.st_size}\t{st.st_mtime_ns}")
        else:
            st = os.stat(u.name)
            parts.append(f"{u.key}\t{st.st_size}\t{st.st_mtime_ns}")
    h = hashlib.sha256()
    for part in parts:
        # surrogateescape: file names need not be UTF-8 (mlmctl.manifest.digest would fail)
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def _discover(cfg: CleanConfig, on_skip=None):
    from mlmctl.sources import discover

    return discover(list(cfg.input), list(cfg.include), cfg.format, cfg.python_docs.units, _read_options(cfg),
                    skip_dir=cfg.output, on_skip=on_skip)


def _read_options(cfg: CleanConfig):
    from mlmctl.sources import ReadOptions

    d = cfg.python_docs
    return ReadOptions(
        boundary=cfg.boundary, text_field=cfg.text_field, source_field=cfg.source_field,
        max_document_chars=cfg.max_document_chars, docs_packages=tuple(d.packages),
        docs_exclude=tuple(d.exclude), docs_min_chars=d.min_chars, docs_max_documents=d.max_documents,
        docs_max_file_kb=d.max_file_kb,
    )


# --------------------------------------------------------------------------- run


def run(ctx) -> dict | None:
    cfg: CleanConfig = ctx.cfg
    walk_skips: list[tuple[str, str]] = []  # (reason, path) of entries a directory walk left out
    units = _discover(cfg, on_skip=lambda reason, path: walk_skips.append((reason, path)))
    read_opts = _read_options(cfg)
    step_cfgs = tuple(getattr(cfg, name) for name in cfg.steps)
    build_pipeline(cfg.steps, dict(zip(cfg.steps, step_cfgs)))  # a missing optional library fails here, once
    read_units = [_ReadUnit(u, read_opts, tuple(cfg.steps), step_cfgs, cfg.max_listed_skips) for u in units]
    ctx.log(f"{len(units)} input units; steps: {', '.join(cfg.steps)}")

    read = ctx.run_units(_read_unit, read_units, phase="read", unit_name="inputs")
    if read is None:
        return None

    plan_dir = ctx.work_dir / "plan"
    plan = _plan(cfg, [r.dir for r in read], plan_dir)
    write_units = [
        _WriteUnit(str(r.dir), str(p), sha, cfg.compresslevel) for r, (p, sha) in zip(read, plan["files"])
    ]
    if plan["shards"][0] == 0:
        # Nothing to write: leave the counts for diagnosis, but no manifest.
        stats = _stats(cfg, units, read, plan, [], walk_skips)
        atomic_write_json(ctx.output_dir / STATS_FILE, stats)
        raise MlmctlError(
            f"clean: no document survived cleaning ({stats['documents_in']:,} read; see "
            f"{ctx.output_dir / STATS_FILE} for what dropped them); check `input` and the filters"
        )
    written = ctx.run_units(_write_unit, write_units, phase="write", unit_name="inputs")
    assert written is not None, "the write phase runs only in the final (non --task) run"

    shards = _assemble(ctx, written)
    stats = _stats(cfg, units, read, plan, shards, walk_skips)
    atomic_write_json(ctx.output_dir / STATS_FILE, stats)
    files = [ctx.describe(STATS_FILE)]
    out = stats["documents_out"]
    if "read" in stats["dropped"]:
        what = ", ".join(f"{r} {v['documents']:,}" for r, v in stats["dropped"]["read"].items())
        ctx.log(f"warning: records skipped while reading ({what}); files and lines are in {STATS_FILE}")
    if (warning := drop_warning(stats["documents_in"], out["total"], stats["dropped"])) is not None:
        ctx.log(warning)
    if cfg.validation_fraction > 0 and out["validation"] == 0:
        ctx.log(f"warning: the validation split is empty ({out['total']:,} documents); raise validation_fraction")
    ctx.finish(shards, files, extra={"documents": out, "characters": stats["characters_out"]})

    rows = {
        "documents in": f"{stats['documents_in']:,} ({_mb(stats['characters_in'])} M chars)",
        "train": f"{out['train']:,} documents, {sum(1 for s in shards if s.split == 'train')} shards",
        "validation": f"{out['validation']:,} documents, {sum(1 for s in shards if s.split == 'validation')} shards",
    }
    for step, reasons in stats["dropped"].items():
        rows[f"dropped: {step}"] = ", ".join(f"{r} {v['documents']:,}" for r, v in reasons.items())
    return rows


def _mb(chars: int) -> str:
    return f"{chars / 1e6:.1f}"


# --------------------------------------------------------------------------- read phase


# One document's line of the read phase. Its id, the text hash in 16 hex digits, ends at byte
# `_ID_END` (the template before it is ASCII), where the write phase inserts "-N" for a repeat.
_DOC_LINE = '{"id": "%016x", "text": %s, "source": %s}\n'
_ID_END = _DOC_LINE.index("%016x") + 16


def _read_unit(u: _ReadUnit, part: Path) -> dict:
    """Read, clean and hash one unit; keep its documents as JSON lines for the write phase."""
    from array import array

    from mlmctl.scripts import DOMINANT
    from mlmctl.sources import read_unit

    pipeline = build_pipeline(u.steps, dict(zip(u.steps, u.step_configs)))
    skips = _Skips(u.max_listed)
    hashes, sizes, chars, scripts = array("Q"), array("Q"), array("Q"), array("B")
    script_code = {name: i for i, name in enumerate(DOMINANT)}
    minhash = _minhasher(u)
    kept = docs_in = chars_in = 0
    read_stats: dict = {}
    blake = hashlib.blake2b
    # What json.dumps(..., ensure_ascii=False) does for a str, minus its per-call set-up.
    encode = json.encoder.encode_basestring
    source, source_json = None, ""
    buf: list[bytes] = []
    buffered = 0
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(atomic_write(part / _DOCS))
        arrays = [(arr, stack.enter_context(atomic_write(part / name)))
                  for arr, name in ((hashes, _HASHES), (sizes, _SIZES), (chars, _CHARS), (scripts, _SCRIPTS))]
        sig_file = stack.enter_context(atomic_write(part / MINHASH_FILE)) if minhash is not None else None

        def flush() -> None:
            # Written in batches, so memory does not grow with the size of the input file.
            out.write(b"".join(buf))
            buf.clear()
            for arr, f in arrays:
                arr.tofile(f)
                del arr[:]
            if minhash is not None:
                minhash.write(sig_file)

        for doc in _guarded(read_unit(u.unit, u.read, skips.read_skip, read_stats), u.unit):
            docs_in += 1
            chars_in += len(doc.text)
            text, step, reason = pipeline.run(doc.text)
            if step is not None:
                skips.add(doc.file, doc.line, step, reason)
                continue
            data = text.encode("utf-8")
            h = int.from_bytes(blake(data, digest_size=8).digest(), "big")
            # The id is the text hash; the write phase appends "-N" to repeats when dedup is off.
            if doc.source is not source:
                source, source_json = doc.source, encode(_valid(doc.source))
            line = (_DOC_LINE % (h, encode(text), source_json)).encode("utf-8")
            hashes.append(h)
            sizes.append(len(line))
            chars.append(len(text))
            scripts.append(script_code[pipeline.last_script])
            if minhash is not None:
                minhash.add(text)
            kept += 1
            buf.append(line)
            buffered += len(line)
            if buffered >= 1 << 20 or len(hashes) >= 1 << 16:
                flush()
                buffered = 0
        flush()
    dropped = {"read": skips.read} if skips.read else {}
    dropped.update(pipeline.dropped)
    return {
        "documents_in": docs_in + sum(v[0] for v in skips.read.values()),
        "characters_in": chars_in,
        "kept": kept,
        "changed": pipeline.changed,
        "dropped": dropped,
        "skipped": skips.listed,
        "skipped_total": skips.total,
        "read": read_stats,
        "scripts": pipeline.scripts,
        "script_dropped": pipeline.script_dropped,
    }


class _Skips:
    """The documents a unit left out: counted by reason, and the first `max_listed` named with
    file and line (stats.json's `skipped`)."""

    def __init__(self, max_listed: int):
        self.max_listed = max_listed
        self.listed: list[list] = []
        self.total = 0
        self.read: dict[str, list[int]] = {}  # reason -> [documents, characters] for the read step

    def add(self, file: str, line: int, step: str, reason: str) -> None:
        self.total += 1
        if len(self.listed) < self.max_listed:
            self.listed.append([_valid(file), line, step, reason])

    def read_skip(self, reason: str, file: str, line: int) -> None:
        """The readers' `on_skip`: a record or file the reader itself could not use."""
        self.read.setdefault(reason, [0, 0])[0] += 1
        self.add(file, line, "read", reason)


def _minhasher(u: _ReadUnit):
    """The near-duplicate signer when `near_dedup` is a step (see mlmctl.near_dedup), else None."""
    if "near_dedup" not in u.steps:
        return None
    from mlmctl.near_dedup import MinHasher

    return MinHasher(u.step_configs[u.steps.index("near_dedup")])


def _valid(name: str) -> str:
    """A file name or JSON value as valid Unicode: undecodable bytes in file names (kept by
    os.listdir as surrogates) and lone surrogates from JSON escapes become U+FFFD."""
    from mlmctl.cleaning import replace_surrogates

    return replace_surrogates(name)


def _guarded(docs, unit):
    """Turn an OS error while reading (permissions changed, disk error) into one clear line."""
    try:
        yield from docs
    except OSError as e:
        raise MlmctlError(f"clean: cannot read {unit.key} ({e.strerror or e}); fix the file and rerun") from None


# --------------------------------------------------------------------------- plan


def _plan(cfg: CleanConfig, read_dirs: list[Path], plan_dir: Path) -> dict:
    """Global dedup, split and shard numbers; one plan file per unit.

    A unit's plan is an int64 per kept document: -1 to drop it as a duplicate, else
    `split << 40 | shard << 20 | repeat`, where repeat (dedup off only) numbers the copies of
    a text so that ids stay unique. Returns the files (path, sha256) and dedup counts.
    """
    import numpy as np

    from mlmctl.shards import file_sha256

    def load(d: Path, name: str):
        return np.fromfile(d / name, dtype=np.uint64)

    counts = [int((d / _HASHES).stat().st_size // 8) for d in read_dirs]
    hashes, repeated = _repeated_hashes(read_dirs, counts)
    seen = np.zeros(len(repeated), dtype=np.int64)  # copies of each repeated value so far
    near = None
    if "near_dedup" in cfg.steps:
        from mlmctl.near_dedup import near_duplicates

        near = near_duplicates([d / MINHASH_FILE for d in read_dirs], counts, cfg.near_dedup.bands)
    near_docs = near_chars = 0

    threshold = np.uint64(min(int(cfg.validation_fraction * 2.0**64), 2**64 - 1))
    numbers = _ShardNumbers(int(cfg.max_shard_mb * 1024 * 1024))
    plan_dir.mkdir(parents=True, exist_ok=True)
    files = []
    dup_docs = dup_chars = 0
    by_script: dict = {}  # (step, reason) -> [documents, characters] per script code
    pos = 0
    for j, (d, n) in enumerate(zip(read_dirs, counts)):
        h = hashes[pos:pos + n]
        pos += n
        dest = np.zeros(n, dtype=np.int64)
        keep = np.ones(n, dtype=bool)
        if len(repeated):
            idx = np.minimum(np.searchsorted(repeated, h), len(repeated) - 1)
            is_rep = repeated[idx] == h
            rows = np.nonzero(is_rep)[0]
            copy = _copy_numbers(idx[rows], seen)
            if cfg.dedup:
                keep[rows[copy > 0]] = False
                chars = load(d, _CHARS)
                dup_docs += int((~keep).sum())
                dup_chars += int(chars[~keep].sum())
                _script_drops(by_script, d, ~keep, ("dedup", "duplicate"))
            else:
                dest[rows] = np.minimum(copy, (1 << 20) - 1)
        if near is not None:
            # After exact dedup: a near-duplicate drop is one that exact dedup left in.
            gone = near[pos - n:pos] & keep
            keep &= ~gone
            near_docs += int(gone.sum())
            near_chars += int(load(d, _CHARS)[gone].sum())
            _script_drops(by_script, d, gone, ("near_dedup", "near_duplicate"))
        split = _split_of(h, cfg.split_seed, threshold)
        sizes = load(d, _SIZES)
        for s in (0, 1):
            rows = np.nonzero(keep & (split == s))[0]
            if len(rows):
                shard = numbers.assign(s, sizes[rows].astype(np.int64))
                dest[rows] |= (np.int64(s) << 40) | (shard.astype(np.int64) << 20)
        dest[~keep] = -1
        path = plan_dir / f"unit-{j:05d}.i64"
        with atomic_write(path) as f:
            f.write(dest.tobytes())
        files.append((path, file_sha256(path)))
    return {"files": files, "duplicates": dup_docs, "duplicate_chars": dup_chars,
            "near_duplicates": near_docs, "near_duplicate_chars": near_chars, "script_drops": by_script,
            "shards": [numbers.dense[0] + 1, numbers.dense[1] + 1]}


def _script_drops(table: dict, d: Path, mask, key: tuple[str, str]) -> None:
    """Add the documents `mask` drops from unit `d` to `table[key]`, per dominant script."""
    import numpy as np

    from mlmctl.scripts import DOMINANT

    if not mask.any():
        return
    codes = _script_codes(d)[mask]
    chars = np.fromfile(d / _CHARS, dtype=np.uint64)[mask].astype(np.float64)
    docs_chars = table.setdefault(key, np.zeros((2, len(DOMINANT)), dtype=np.int64))
    docs_chars[0] += np.bincount(codes, minlength=len(DOMINANT))
    docs_chars[1] += np.bincount(codes, weights=chars, minlength=len(DOMINANT)).astype(np.int64)


def _script_codes(d: Path):
    """A read unit's per-document script codes (uint8, index in scripts.DOMINANT)."""
    import numpy as np

    if not (d / _SCRIPTS).is_file():  # a unit finished by an mlmctl from before per-script stats
        raise MlmctlError(f"clean: {d} was written by an older mlmctl (it has no {_SCRIPTS}); "
                          f"rerun with --force")
    return np.fromfile(d / _SCRIPTS, dtype=np.uint8)


def _repeated_hashes(read_dirs: list[Path], counts: list[int]):
    """(every kept document's text hash in unit order, the sorted hash values that occur more than
    once): the dedup table, 8 bytes per document."""
    import numpy as np

    hashes = np.empty(sum(counts), dtype=np.uint64)
    pos = 0
    for d, n in zip(read_dirs, counts):
        hashes[pos:pos + n] = np.fromfile(d / _HASHES, dtype=np.uint64)
        pos += n
    srt = np.sort(hashes)
    return hashes, np.unique(srt[1:][srt[1:] == srt[:-1]])


class _ShardNumbers:
    """Output shard numbers per split: documents fill shards of `max_bytes` (uncompressed) in
    order, and the numbers are dense (a document larger than a shard skips no number)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.offset = [0, 0]  # running uncompressed bytes per split
        self.raw_last = [-1, -1]  # last raw shard number used per split
        self.dense = [-1, -1]  # its dense (output) number

    def assign(self, s: int, sz):
        """Shard numbers of the next documents of split `s`, whose line sizes are `sz` (int64)."""
        import numpy as np

        start = self.offset[s] + np.cumsum(sz) - sz  # each document's byte offset in its split
        self.offset[s] += int(sz.sum())
        raw = start // self.max_bytes
        new = np.concatenate(([raw[0] != self.raw_last[s]], raw[1:] != raw[:-1]))
        shard = self.dense[s] + np.cumsum(new)
        self.dense[s] = int(shard[-1])
        self.raw_last[s] = int(raw[-1])
        return shard


def _copy_numbers(groups, seen):
    """For rows of repeated texts (`groups`: index of each row's text), the copy number of
    each row - 0 for the first copy in the corpus - given `seen` copies in earlier units;
    updates `seen`. Vectorised: a stable sort puts each text's rows together, in order."""
    import numpy as np

    order = np.argsort(groups, kind="stable")
    g = groups[order]
    pos = np.arange(len(g))
    starts = np.concatenate(([True], g[1:] != g[:-1])) if len(g) else np.zeros(0, dtype=bool)
    rank_sorted = pos - np.maximum.accumulate(np.where(starts, pos, 0))
    rank = np.empty_like(rank_sorted)
    rank[order] = rank_sorted
    copy = seen[groups] + rank
    np.add.at(seen, groups, 1)
    return copy


def _split_of(h, seed: int, threshold):
    """1 for validation, 0 for train: splitmix64(hash ^ seed) below the threshold."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = h ^ np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z < threshold).astype(np.int64)


# --------------------------------------------------------------------------- write phase


def _write_unit(u: _WriteUnit, part: Path) -> dict:
    """Compress this unit's kept lines into one gzip member per (split, shard) piece."""
    from mlmctl.shards import file_sha256

    if file_sha256(u.plan) != u.plan_sha256:
        raise MlmctlError(f"clean: plan file {u.plan} changed during the run; rerun `mlmctl clean`")
    dest = _plan_entries(u.plan)
    pieces: dict[str, dict] = {}
    # One open piece per split: documents of both splits interleave, and within a split
    # shard numbers only grow, so a split's piece is finished when its shard number changes.
    open_pieces: dict[int, _Piece] = {}
    with open(Path(u.read_dir) / _DOCS, "rb") as docs:
        for d, line in zip(dest, docs):
            if d < 0:
                continue
            split, shard = d >> 40, (d >> 20) & 0xFFFFF
            piece = open_pieces.get(split)
            if piece is None or piece.shard != shard:
                if piece is not None:
                    piece.close()
                name = f"{SPLITS[split]}-{shard:05d}.gz"
                piece = open_pieces[split] = _Piece(part / name, shard, u.compresslevel)
                pieces[name] = {"documents": 0}
                piece.name = name
            if d & 0xFFFFF:
                line = line[:_ID_END] + b"-%d" % ((d & 0xFFFFF) + 1) + line[_ID_END:]
            piece.write(line)
            pieces[piece.name]["documents"] += 1
    for piece in open_pieces.values():
        piece.close()
    return {"pieces": pieces}


def _plan_entries(path: str):
    """A unit's plan entries, read in batches (memory does not grow with the unit)."""
    from array import array

    with open(path, "rb") as f:
        while chunk := f.read(8 << 16):
            batch = array("q")
            batch.frombytes(chunk)
            yield from batch


class _Piece:
    """One (split, shard) piece being written: a gzip member on its own file."""

    def __init__(self, path: Path, shard: int, level: int) -> None:
        from mlmctl.shards import GZIP_OS_UNIX, GzipMember

        self.shard = shard
        self.name = path.name
        self.file = open(path, "wb")
        self.gz = GzipMember(self.file, level, GZIP_OS_UNIX)
        self.write = self.gz.write

    def close(self) -> None:
        self.gz.close()
        self.file.close()


# --------------------------------------------------------------------------- assemble


def _assemble(ctx, written) -> list[ShardInfo]:
    """Concatenate every shard's pieces, in unit order, into the output directory."""
    by_shard: dict[tuple[str, int], list[Path]] = {}
    counts: dict[tuple[str, int], int] = {}
    for res in written:
        for name, rec in res.result["pieces"].items():
            split, num = name[:-3].rsplit("-", 1)
            key = (split, int(num))
            by_shard.setdefault(key, []).append(res.dir / name)
            counts[key] = counts.get(key, 0) + rec["documents"]
    shards = []
    for split, num in sorted(by_shard, key=lambda k: (SPLITS.index(k[0]), k[1])):
        rel = f"{split}/{shard_name(num, SUFFIX)}"
        sha = hashlib.sha256()
        size = 0
        with atomic_write(ctx.output_dir / rel) as out:
            for piece in by_shard[(split, num)]:
                with open(piece, "rb") as f:
                    while chunk := f.read(1 << 20):
                        sha.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
        shards.append(ShardInfo(rel, split, size, sha.hexdigest(), {"documents": counts[(split, num)]}))
    return shards


# --------------------------------------------------------------------------- stats


def _stats(cfg: CleanConfig, units, read, plan: dict, shards: list[ShardInfo], walk_skips=()) -> dict:
    docs_in = chars_in = 0
    changed: dict[str, int] = {name: 0 for name in cfg.steps}
    dropped: dict[str, dict[str, dict[str, int]]] = {}
    skipped: list[dict] = []
    skipped_total = 0
    read_stats: dict[str, int] = {}
    for r in read:
        res = r.result
        docs_in += res["documents_in"]
        chars_in += res["characters_in"]
        for k, v in res["changed"].items():
            changed[k] = changed.get(k, 0) + v
        for step, reasons in res["dropped"].items():
            for reason, (n, c) in reasons.items():
                slot = dropped.setdefault(step, {}).setdefault(reason, {"documents": 0, "characters": 0})
                slot["documents"] += n
                slot["characters"] += c
        for file, line, step, reason in res["skipped"]:
            if len(skipped) < cfg.max_listed_skips:
                skipped.append({"file": file, "line": line, "step": step, "reason": reason})
        skipped_total += res["skipped_total"]
        for k, v in res["read"].items():
            read_stats[k] = read_stats.get(k, 0) + v
    if plan["duplicates"]:
        dropped["dedup"] = {"duplicate": {"documents": plan["duplicates"], "characters": plan["duplicate_chars"]}}
    if plan.get("near_duplicates"):
        dropped["near_dedup"] = {"near_duplicate": {"documents": plan["near_duplicates"],
                                                    "characters": plan["near_duplicate_chars"]}}
    # Order the drop table as the pipeline runs: read, the steps, empty, dedup.
    order = ["read", *(s for s in cfg.steps if s != "near_dedup"), "empty", "dedup", "near_dedup"]
    dropped = {k: dict(sorted(dropped[k].items())) for k in order if k in dropped}
    skipped_files = _walk_skips(cfg, walk_skips, skipped)
    skipped_total += sum(n for r, n in skipped_files.items() if r not in ("hidden", "not_included"))
    docs_out = {s: sum(sh.records["documents"] for sh in shards if sh.split == s) for s in SPLITS}
    kept_chars = _chars_out(read, plan)
    return {
        "scripts": _per_script(read, plan),
        "documents_in": docs_in,
        "characters_in": chars_in,
        "documents_out": {**docs_out, "total": sum(docs_out.values())},
        "characters_out": {**kept_chars, "total": sum(kept_chars.values())},
        "changed": changed,
        "dropped": dropped,
        "read": {"input_units": len(units), **dict(sorted(read_stats.items())), "skipped_files": skipped_files},
        "skipped_total": skipped_total,
        "skipped_listed": len(skipped),
        "skipped": skipped,
    }


def _walk_skips(cfg: CleanConfig, walk_skips, skipped: list[dict]) -> dict[str, int]:
    """Count the entries directory walks left out, by reason; list the unexpected ones (broken
    links, loops, unreadable entries) in `skipped` with step "discover" (line 0: a whole file)."""
    from mlmctl.sources import SKIP_REASONS

    counts: dict[str, int] = {}
    for reason, path in walk_skips:
        counts[reason] = counts.get(reason, 0) + 1
        if reason not in ("hidden", "not_included") and len(skipped) < cfg.max_listed_skips:
            skipped.append({"file": _valid(path), "line": 0, "step": "discover", "reason": reason})
    return {r: counts[r] for r in SKIP_REASONS if r in counts}


def _per_script(read, plan: dict) -> dict[str, dict]:
    """stats.json's `scripts`: per dominant script, documents and characters in and out, and
    what dropped them (`{step: {reason: {documents, characters}}}`, as `dropped`)."""
    import numpy as np

    from mlmctl.scripts import DOMINANT

    table: dict[str, dict] = {}

    def entry(script: str) -> dict:
        return table.setdefault(script, {"documents_in": 0, "characters_in": 0, "documents_out": 0,
                                         "characters_out": 0, "dropped": {}})

    def drop(script: str, step: str, reason: str, n: int, c: int) -> None:
        slot = entry(script)["dropped"].setdefault(step, {}).setdefault(reason, {"documents": 0, "characters": 0})
        slot["documents"] += n
        slot["characters"] += c

    for r, (path, _) in zip(read, plan["files"]):
        for script, (n, c) in r.result["scripts"].items():
            entry(script)["documents_in"] += n
            entry(script)["characters_in"] += c
        for script, steps in r.result["script_dropped"].items():
            for step, reasons in steps.items():
                for reason, (n, c) in reasons.items():
                    drop(script, step, reason, n, c)
        kept = np.fromfile(path, dtype=np.int64) >= 0
        codes = _script_codes(r.dir)[kept]
        chars = np.fromfile(r.dir / _CHARS, dtype=np.uint64)[kept].astype(np.float64)
        docs_out = np.bincount(codes, minlength=len(DOMINANT))
        chars_out = np.bincount(codes, weights=chars, minlength=len(DOMINANT))
        for i in np.nonzero(docs_out)[0]:
            entry(DOMINANT[i])["documents_out"] += int(docs_out[i])
            entry(DOMINANT[i])["characters_out"] += int(chars_out[i])
    for (step, reason), arr in plan["script_drops"].items():
        for i in np.nonzero(arr[0])[0]:
            drop(DOMINANT[i], step, reason, int(arr[0][i]), int(arr[1][i]))
    return {s: table[s] for s in DOMINANT if s in table}


def _chars_out(read, plan: dict) -> dict[str, int]:
    import numpy as np

    out = {s: 0 for s in SPLITS}
    for r, (path, _) in zip(read, plan["files"]):
        dest = np.fromfile(path, dtype=np.int64)
        chars = np.fromfile(r.dir / _CHARS, dtype=np.uint64)
        kept = dest >= 0
        val = (dest >> 40) == 1
        out["train"] += int(chars[kept & ~val].sum())
        out["validation"] += int(chars[kept & val].sum())
    return out
