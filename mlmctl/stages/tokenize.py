"""tokenize: cleaned documents -> sentences of pre-tokens, in the classic BERT corpus format.

Reads a `clean` directory (`{train,validation}/shard-*.jsonl.gz`, `{"id","text","source"}` per
line) and writes, per input shard, one output shard with the same number:

    {train,validation}/shard-NNNNN.txt.gz         one sentence per line, pre-tokens joined by
                                                  single spaces, a blank line after each document
    {train,validation}/shard-NNNNN.counts.tsv.gz  `word<TAB>count` lines, most frequent first
    pretokenizer.json                             the exact normalizer + pre-tokenizer used
    stats.json                                    documents, sentences, words per split
    manifest.json                                 written last

With `segment.kind: jieba`, Chinese sentences are segmented into words (`mlmctl.segment`, rjieba)
and the characters of one word are joined by U+2060 instead of a space, so build-vocab's
word-start flags mark whole Chinese words for whole-word masking; the pre-tokens (one per Han
character) and the word counts do not change.

Sentences come from `mlmctl.sentences` (rule-based, English and CJK), pre-tokens from the
`tokenizers` library's own normalizer and pre-tokenizer (`mlmctl.pretokenize`). Documents and
sentences that yield no pre-token are dropped and counted. Work is one unit per input shard
(`--workers`, `--task I/N`); gzip members carry no time stamp, so output bytes do not depend on
the number of workers or on when the run happened.

Example:
    mlmctl tokenize -c configs/demo/tokenize.yaml --workers 2
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from itertools import chain
from dataclasses import dataclass, field
from pathlib import Path

from mlmctl import safe_json
from mlmctl.config import check
from mlmctl.errors import InputError
from mlmctl.pretokenize import PretokenizerConfig
from mlmctl.segment import SegmentConfig
from mlmctl.layout import SPLITS, STATS_FILE, shard_name
from mlmctl.shards import atomic_gzip, atomic_write_json

STAGE = "tokenize"
INPUT_STAGE = "clean"
INPUT_FILES = ("segment.user_dict", "index_with")  # config-named files whose content is input (mlmctl.input_files)

TEXT_SUFFIX = ".txt.gz"
COUNTS_SUFFIX = ".counts.tsv.gz"
PIPELINE_FILE = "pretokenizer.json"
DOCS_PER_BATCH = 256  # documents aligned with their segmentation in one vectorised call


@dataclass
class TokenizeConfig:
    """Sentence splitting and pre-tokenization of a cleaned corpus."""

    input: str = "data/clean"
    """The `clean` stage directory to read."""
    output: str = "data/tokens"
    """Directory to write the tokenized shards to."""
    pretokenizer: PretokenizerConfig = field(default_factory=PretokenizerConfig)
    """Normalizer + pre-tokenizer, built from the `tokenizers` library and saved for build-vocab."""
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    """Chinese word segmentation (分词) for whole-word masking; the vocabulary stays one token per Han character."""
    newline_is_boundary: bool = False
    """Treat every line break as a sentence end (one sentence per line input); a blank line always is one."""
    compresslevel: int = 3
    """gzip level of the output shards (1 fastest ... 9 smallest); intermediate data, so fast by default."""
    index_with: str | None = None
    """A tokenizer.json (same normalizer + pre-tokenizer) to index the corpus with in this same pass; `build-vocab` with this `from:` then adopts the ids instead of indexing again."""

    def __post_init__(self) -> None:
        check(1 <= self.compresslevel <= 9, "compresslevel", f"must be 1..9, got {self.compresslevel}")
        if self.segment.kind != "none":
            check(self.pretokenizer.kind == "bert" and self.pretokenizer.split_cjk, "segment.kind",
                  "needs `pretokenizer.kind: bert` with `split_cjk: true` (one pre-token per Han character)")


CONFIG = TokenizeConfig


@dataclass(frozen=True)
class _Unit:
    """One input shard to tokenize (picklable; its repr is the resume key)."""

    split: str
    src: str
    src_sha256: str
    index: int
    pipeline: str  # pretokenizer.json text
    newline_is_boundary: bool
    compresslevel: int
    segment: str  # JSON of segment.segmenter_spec(), "null" when off
    index_with: str  # the work copy of `index_with`, "" when off
    index_sha256: str
    dtype: str


def run(ctx) -> dict | None:
    from mlmctl.pretokenize import pipeline_json
    from mlmctl.segment import segmenter_spec

    cfg: TokenizeConfig = ctx.cfg
    pipeline = pipeline_json(cfg.pretokenizer)
    spec = segmenter_spec(cfg.segment)  # fails here, before any work, if rjieba or the dictionary is missing
    if spec is not None:
        # build-vocab reads this to know the lines carry word joiners; the digest covers the user dictionary.
        pipeline["segment"] = {k: v for k, v in spec.items() if k != "user_words"}
    pipeline_text = json.dumps(pipeline, sort_keys=True, ensure_ascii=False)
    index = _index_vocabulary(ctx, pipeline)
    units = []
    for split in SPLITS:
        shards = [s for s in ctx.input_manifest.shards_of(split) if s.name.endswith((".jsonl.gz", ".jsonl"))]
        for k, info in enumerate(shards):
            units.append(
                _Unit(split, str(ctx.input_dir / info.name), info.sha256, k, pipeline_text,
                      cfg.newline_is_boundary, cfg.compresslevel, json.dumps(spec, ensure_ascii=False), *index)
            )
    if not any(u.split == "train" for u in units):
        raise InputError(f"tokenize: {ctx.input_dir} has no train shards (empty corpus); check the `clean` stage's input")
    ctx.log(f"{len(units)} shards, pre-tokenizer '{cfg.pretokenizer.kind}'")

    results = ctx.run_units(_tokenize_shard, units, phase="tokenize", unit_name="shards")
    if results is None:
        return None

    shards, files = [], []
    totals = {split: Counter() for split in SPLITS}
    for unit, res in zip(units, results):
        sha = {f["name"]: f["sha256"] for f in res.files}
        ids = res.result.pop("index", None)
        for suffix, target in ((TEXT_SUFFIX, shards), (COUNTS_SUFFIX, files)):
            name = shard_name(unit.index, suffix)
            records = res.result if suffix == TEXT_SUFFIX else {"unique_words": res.result["unique_words"]}
            target.append(ctx.place(res.dir / name, f"{unit.split}/{name}", unit.split, records, sha[name]))
        if ids is not None:
            files += _place_index(ctx, unit, res, ids, sha)
        totals[unit.split].update(res.result)
    if totals["train"]["words"] == 0:
        raise InputError(
            f"tokenize: the train split of {ctx.input_dir} yields no words (empty corpus); "
            f"check the `clean` stage's filters and input"
        )
    atomic_write_json(ctx.output_dir / PIPELINE_FILE, pipeline)
    files.append(ctx.describe(PIPELINE_FILE))
    # Unique words do not add up across shards; the per-shard figures stay in the manifest.
    stats = {split: {k: v for k, v in sorted(totals[split].items()) if k != "unique_words"} for split in SPLITS}
    atomic_write_json(ctx.output_dir / STATS_FILE, stats)
    files.append(ctx.describe(STATS_FILE))
    extra = {"pretokenizer": cfg.pretokenizer.kind, "totals": stats}
    if index[0]:
        extra["index_with"] = {"sha256": index[1], "dtype": index[2]}  # what build-vocab checks to adopt
    ctx.finish(shards, files, extra=extra)
    rows = {}
    for split in SPLITS:
        t = totals[split]
        rows[split] = f"{t['docs']:,} docs, {t['sentences']:,} sentences, {t['words']:,} words"
    dropped = sum(totals[s]["empty_docs"] for s in SPLITS)
    rows["dropped"] = f"{dropped:,} documents without words"
    return rows


def _index_vocabulary(ctx, pipeline: dict) -> tuple[str, str, str]:
    """(work copy, sha256, id dtype) of the checked `index_with` tokenizer, or ("", "", "")."""
    from mlmctl.indexing import pick_dtype, read_vocabulary
    from mlmctl.shards import atomic_write_bytes, file_sha256

    if ctx.cfg.index_with is None:
        return "", "", ""
    raw, size = read_vocabulary(ctx.cfg.index_with, pipeline, stage=STAGE, key="index_with")
    # Workers read a copy named by its digest: the user's file may change during the run (or
    # between the tasks of a fan-out), a unit's tokenizer must not.
    sha = hashlib.sha256(raw).hexdigest()
    path = ctx.work_dir / f"index_with-{sha}.json"
    if not path.is_file() or file_sha256(path) != sha:
        atomic_write_bytes(path, raw)
    return str(path), sha, pick_dtype("auto", size, STAGE)


def _place_index(ctx, unit: _Unit, res, counts: dict, sha: dict) -> list:
    """The shard's index files (see mlmctl.indexing) into the output, named after the shard."""
    from mlmctl.indexing import INDEX_FILES

    base = shard_name(unit.index)
    out = [ctx.place(res.dir / f"{base}.ids.bin", f"{unit.split}/{base}.ids.bin", unit.split, counts,
                     sha[f"{base}.ids.bin"]),
           ctx.place(res.dir / f"{base}.wstart.bin", f"{unit.split}/{base}.wstart.bin", unit.split,
                     {"tokens": counts["tokens"]}, sha[f"{base}.wstart.bin"])]
    for name in INDEX_FILES:
        out.append(ctx.place(res.dir / name, f"{unit.split}/{base}.{name}", unit.split, None, sha[name]))
    return out


def _tokenize_shard(unit: _Unit, part: Path) -> dict:
    """Tokenize one clean shard into `part/shard-NNNNN.txt.gz` + its word counts (+ its ids with `index_with`)."""
    import numpy as np

    from mlmctl.indexing import word_table
    from mlmctl.pretokenize import Pretokenizer
    from mlmctl.segment import Segmenter
    from mlmctl.sentences import split_sentences
    from mlmctl.shards import open_shard_lines

    pre = Pretokenizer(safe_json.loads(unit.pipeline))
    spec = safe_json.loads(unit.segment)
    seg = Segmenter(spec) if spec is not None else None
    stats = Counter(docs_in=0, docs=0, empty_docs=0, sentences=0, empty_sentences=0, words=0,
                    repaired_docs=0)
    name = shard_name(unit.index)
    batch: list[tuple[list[str], list[list[str]]]] = []  # (sentences, their words) per document
    with contextlib.ExitStack() as stack:
        gz = stack.enter_context(atomic_gzip(part / f"{name}{TEXT_SUFFIX}", unit.compresslevel))
        index = stack.enter_context(_open_index(unit, part)) if unit.index_with else None
        counts = _WordCounts(index.words.number if index else word_table())
        for lineno, line in enumerate(open_shard_lines(unit.src), 1):
            if not line:
                continue
            text = _doc_text(line, unit.src, lineno)
            stats["docs_in"] += 1
            try:
                batch.append(_doc_words(text, pre, split_sentences, unit.newline_is_boundary, stats))
            except UnicodeError:
                # Lone surrogates (from a JSON "\ud800" escape) cannot reach the Rust library;
                # replace them and count the document rather than drop it.
                stats["repaired_docs"] += 1
                text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
                batch.append(_doc_words(text, pre, split_sentences, unit.newline_is_boundary, stats))
            if len(batch) >= DOCS_PER_BATCH:
                _write_batch(batch, seg, gz, counts, index, stats)
                batch.clear()
        _write_batch(batch, seg, gz, counts, index, stats)
    with atomic_gzip(part / f"{name}{COUNTS_SUFFIX}", unit.compresslevel) as gz:
        gz.write("".join(f"{w}\t{c}\n" for w, c in counts.ordered()).encode("utf-8"))
    stats["unique_words"] = int(np.count_nonzero(counts.counts))
    if seg is not None:
        stats["unsegmented_sentences"] = seg.unaligned
    return dict(stats) | ({"index": index.result} if index else {})


def _open_index(unit: _Unit, part: Path):
    from mlmctl.indexing import ShardIndex, word_table

    return ShardIndex(part, shard_name(unit.index), word_table(unit.index_with, unit.index_sha256), unit.dtype,
                      stage=STAGE)


class _WordCounts:
    """Occurrences per word in one shard: words numbered (one C-level dict lookup each, in the
    process's word table, shared with the indexing when there is one), then counted with numpy."""

    def __init__(self, numbering):
        import numpy as np

        self.numbering = numbering
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, words: list[list[str]]):
        """The numbers of the sentences' words, flattened; counts them."""
        import numpy as np

        from mlmctl.indexing import number_words

        k = number_words(self.numbering, chain.from_iterable(words), sum(map(len, words)))
        grown = np.bincount(k, minlength=len(self.numbering))
        grown[:len(self.counts)] += self.counts
        self.counts = grown
        return k

    def ordered(self) -> list[tuple[str, int]]:
        """The shard's words, most frequent first, ties by code point: a deterministic file for a
        given shard (the table may also hold words of the worker's earlier shards)."""
        import numpy as np

        words = list(self.numbering)
        seen = np.flatnonzero(self.counts)
        return sorted(zip([words[i] for i in seen.tolist()], self.counts[seen].tolist()), key=lambda kv: (-kv[1], kv[0]))


def _doc_text(line: str, src: str, lineno: int) -> str:
    try:
        rec = safe_json.loads(line)
        text = rec["text"]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"tokenize: {src}:{lineno} is not a {{\"text\": ...}} JSON record; rerun `mlmctl clean --force`") from None
    if not isinstance(text, str):
        raise InputError(f"tokenize: {src}:{lineno}: \"text\" is not a string; rerun `mlmctl clean --force`")
    return text


def _doc_words(text, pre, split_sentences, newline_is_boundary, stats):
    """The document's sentences that have words, and their words."""
    sentences = split_sentences(text, newline_is_boundary)
    words = pre.sentence_words(sentences)
    if not all(words):  # rare: a sentence of characters the normalizer removes
        kept = [i for i, w in enumerate(words) if w]
        stats["empty_sentences"] += len(words) - len(kept)
        sentences, words = [sentences[i] for i in kept], [words[i] for i in kept]
    stats["sentences"] += len(words)
    return sentences, words


def _write_batch(batch, seg, gz, counts: _WordCounts, index, stats) -> None:
    """A batch of documents out: a line per sentence and a blank line after each document; its
    words counted, and indexed when there is an index."""
    import numpy as np

    sentences = [s for doc_sentences, _ in batch for s in doc_sentences]
    words = [w for _, doc_words in batch for w in doc_words]
    k = counts.add(words)
    if index is None:
        counts.numbering.new.clear()  # only the indexing reads it
    stats["words"] += len(k)
    # Segmentation aligns a whole batch at once: its per-call cost is what a per-sentence call paid.
    lines = [" ".join(w) for w in words] if seg is None else seg.mark_lines(sentences, words)
    chunks, doc_ends, at = [], [], 0
    for _, doc_words in batch:
        if not doc_words:
            stats["empty_docs"] += 1
            continue
        stats["docs"] += 1
        chunks.append("\n".join([*lines[at:at + len(doc_words)], "\n"]))
        at += len(doc_words)
        doc_ends.append(at)
    gz.write("".join(chunks).encode("utf-8"))
    if index is not None:
        line_ends = np.cumsum([len(w) for w in words]).tolist()
        index.add_numbers(k, line_ends, doc_ends, _joined(lines, line_ends) if seg is not None else ())


def _joined(lines: list[str], line_ends: list[int]) -> list:
    """(first word, continuation flags) of the lines that join a segmented word's pre-tokens."""
    from mlmctl.indexing import split_joined
    from mlmctl.pretokenize import WORD_JOINER

    return [(end - len(cont), cont) for line, end in zip(lines, line_ends) if WORD_JOINER in line
            for cont in [split_joined(line)[1]]]
