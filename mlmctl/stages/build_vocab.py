"""build-vocab: train a sub-word vocabulary on the tokenized corpus, then index the corpus with it.

Reads a `tokenize` directory (`{train,validation}/shard-NNNNN.txt.gz` + `pretokenizer.json`) and
writes:

    tokenizer.json                  normalizer + pre-tokenizer (exactly tokenize's), the trained
                                    model, BERT post-processor `[CLS] A [SEP] B [SEP]`, decoder
    vocab.txt                       WordPiece only: one token per line, line number = id
    tokenizer_config.json, special_tokens_map.json
                                    so `transformers.AutoTokenizer.from_pretrained(DIR)` loads it
    {train,validation}/shard-NNNNN.ids.bin     token ids, uint16 or uint32, little-endian, raw
    {train,validation}/shard-NNNNN.wstart.bin  uint8 per token: 1 where a word starts (a pre-token;
                                               a whole segmented word for Chinese)
    {train,validation}/sent_offsets.bin        int64 LE, n_sentences+1: sentence k is the tokens
                                               [s[k], s[k+1]) of the split's concatenated shards
    {train,validation}/doc_offsets.bin         int64 LE, n_docs+1: document d is the sentences
                                               [o[d], o[d+1])
    stats.json, manifest.json (last)

Read it with `mlmctl.token_ids.open_vocab_dir`. Special tokens are fixed: [PAD]=0 [UNK]=1
[CLS]=2 [SEP]=3 [MASK]=4. The trainer sees exactly the stored pre-tokens: training runs with no
normalizer and a pre-tokenizer that splits on the single spaces of the line format only, and the
final tokenizer.json gets tokenize's normalizer and pre-tokenizer spliced in as JSON. Indexing
applies the trained model alone to those same pre-tokens (`is_pretokenized`), which is what the
full tokenizer.json does to the cleaned text sentence by sentence.

With `from: path/to/tokenizer.json` no training happens: the file is checked (special
ids, same normalizer + pre-tokenizer as tokenize used) and the corpus is indexed with it.
Indexing is one unit per tokenized shard (`--workers`, `--task I/N`). In a `--task` run, task 0
trains the vocabulary (when there is one to train); start the other tasks once it has.

Example:
    mlmctl build-vocab -c configs/demo/build-vocab.yaml --workers 2
"""

from __future__ import annotations

import gzip
import json
import math
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlmctl import safe_json
from mlmctl.config import check
from mlmctl.errors import InputError, MlmctlError
from mlmctl.layout import (
    CLS, HF_SPECIAL_TOKENS, SEP, SPECIAL_TOKENS, SPLITS, STATS_FILE, TOKENIZER_FILE, UNK, VOCAB_FILE, shard_name,
)
from mlmctl.indexing import (
    INDEX_COUNTS, INDEX_FILES, SPECIAL_IDS, ShardIndex, check_specials, model_only, pick_dtype, read_vocabulary, split_joined,
    word_table,
)
from mlmctl.pretokenize import WORD_JOINER
from mlmctl.shards import atomic_write, atomic_write_json, atomic_write_text, file_sha256
from mlmctl.stages.tokenize import TEXT_SUFFIX

STAGE = "build-vocab"
INPUT_STAGE = "tokenize"
INPUT_FILES = ("from_tokenizer",)  # config-named files whose content is input (mlmctl.input_files)

GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass
class BuildVocabConfig:
    """Sub-word vocabulary training and corpus indexing."""

    input: str = "data/tokens"
    """The `tokenize` stage directory to read."""
    output: str = "data/vocab"
    """Directory to write the tokenizer and the indexed corpus to."""
    model: Literal["wordpiece", "bpe", "unigram"] = "wordpiece"
    """Sub-word model to train (`tokenizers` WordPiece, BPE or Unigram trainer)."""
    vocab_size: int = 30522
    """Target vocabulary size, the 5 special tokens included (BERT-base uses 30522)."""
    min_frequency: int = 2
    """`wordpiece`/`bpe`: a merge must occur at least this often to enter the vocabulary."""
    character_coverage: float = 0.9999
    """`wordpiece`/`bpe`: keep the most frequent characters covering this share of all character occurrences; rarer ones become [UNK]."""
    limit_alphabet: int | None = None
    """`wordpiece`/`bpe`: at most this many characters after `character_coverage`; null: no cap."""
    sample_fraction: float = 1.0
    """Share of train documents the trainer sees (a fixed, evenly spread subset); indexing always covers all."""
    from_tokenizer: str | None = field(default=None, metadata={"key": "from"})
    """A tokenizer.json to reuse instead of training (same normalizer + pre-tokenizer as tokenize used)."""
    dtype: Literal["auto", "uint16", "uint32"] = "auto"
    """Id storage type: `auto` picks uint16 when every id fits (vocabulary <= 65536), else uint32."""
    max_input_chars_per_word: int = 100
    """`wordpiece`: a longer word becomes [UNK] (BERT's rule)."""

    def __post_init__(self) -> None:
        check(self.vocab_size > len(SPECIAL_TOKENS), "vocab_size",
              f"must exceed the {len(SPECIAL_TOKENS)} special tokens, got {self.vocab_size}")
        check(self.min_frequency >= 0, "min_frequency", f"must be >= 0, got {self.min_frequency}")
        check(0 < self.character_coverage <= 1, "character_coverage",
              f"must be in (0, 1], got {self.character_coverage}")
        check(self.limit_alphabet is None or self.limit_alphabet >= 1, "limit_alphabet",
              f"must be >= 1 or null, got {self.limit_alphabet}")
        check(0 < self.sample_fraction <= 1, "sample_fraction", f"must be in (0, 1], got {self.sample_fraction}")
        check(self.max_input_chars_per_word >= 1, "max_input_chars_per_word", "must be >= 1")


CONFIG = BuildVocabConfig


@dataclass(frozen=True)
class _IndexUnit:
    """One tokenized shard to index (picklable; its repr is the resume key)."""

    split: str
    src: str
    src_sha256: str
    index: int
    tokenizer: str
    tokenizer_sha256: str
    dtype: str
    segmented: bool  # the lines join a segmented Chinese word's pre-tokens with WORD_JOINER
    adopt: str  # JSON of the counts of tokenize's own index files for this shard, or "" to index


def run(ctx) -> dict | None:
    import numpy as np

    cfg: BuildVocabConfig = ctx.cfg
    shards = {split: [s for s in ctx.input_manifest.shards_of(split) if s.name.endswith(".txt.gz")] for split in SPLITS}
    if not shards["train"] or ctx.input_manifest.records("words", "train") == 0:
        raise InputError(f"build-vocab: {ctx.input_dir} has no words in its train split (empty corpus); rerun `mlmctl tokenize` on a non-empty corpus")
    pipeline = _read_pipeline(ctx.input_dir)

    tok_path = _ensure_vocabulary(ctx, cfg, shards, pipeline)
    tok_sha = file_sha256(tok_path)
    vocab_size = _vocab_size(tok_path)
    dtype = pick_dtype(cfg.dtype, vocab_size)

    adopt = _indexed_by_tokenize(ctx, tok_sha, dtype)
    units = [
        _IndexUnit(split, str(ctx.input_dir / s.name), s.sha256, k, str(tok_path), tok_sha, dtype,
                   "segment" in pipeline, adopt.get(s.name, ""))
        for split in SPLITS for k, s in enumerate(shards[split])
    ]
    results = ctx.run_units(_index_shard, units, phase="index", unit_name="shards")
    if results is None:
        return None

    out = ctx.output_dir
    shard_infos, files = [], []
    totals = {split: dict.fromkeys(("docs", "sentences", "tokens", "words", "unk", "single_token_words"), 0)
              for split in SPLITS}
    used = np.zeros(vocab_size, dtype=bool)
    for unit, res in zip(units, results):
        base = shard_name(unit.index)
        sha = {f["name"]: f["sha256"] for f in res.files}
        rec = res.result
        shard_infos.append(ctx.place(res.dir / f"{base}.ids.bin", f"{unit.split}/{base}.ids.bin", unit.split,
                                     {**{k: rec[k] for k in ("docs", "sentences", "tokens", "words")},
                                      "max_id": rec.get("max_id", vocab_size - 1)},
                                     sha[f"{base}.ids.bin"]))
        files.append(ctx.place(res.dir / f"{base}.wstart.bin", f"{unit.split}/{base}.wstart.bin", unit.split,
                               {"tokens": rec["tokens"]}, sha[f"{base}.wstart.bin"]))
        for key in totals[unit.split]:
            totals[unit.split][key] += rec[key]
        if unit.split == "train":
            used |= np.fromfile(res.dir / "token_counts.bin", dtype="<i8") > 0
    for split in SPLITS:
        files += _write_offsets(ctx, split, [(u, r) for u, r in zip(units, results) if u.split == split])

    files += _write_tokenizer_files(ctx, tok_path, pipeline, cfg)
    tokenizer_sha = file_sha256(out / TOKENIZER_FILE)
    stats = _stats(vocab_size, dtype, used, totals)
    atomic_write_json(out / STATS_FILE, stats)
    files.append(ctx.describe(STATS_FILE))
    extra = {
        "vocab_size": vocab_size,
        "tokenizer_sha256": tokenizer_sha,
        "dtype": dtype,
        "special_ids": dict(SPECIAL_IDS),
        "model": _model_type(out / TOKENIZER_FILE),
        "pretokenizer": pipeline.get("kind"),
        "splits": {s: {k: totals[s][k] for k in ("docs", "sentences", "tokens")} for s in SPLITS},
    }
    ctx.finish(shard_infos, files, extra)
    rows = {"vocabulary": f"{vocab_size:,} {extra['model']} tokens ({dtype})"}
    for split in SPLITS:
        s = stats[split]
        rows[split] = (f"{s['tokens']:,} tokens, [UNK] {100 * s['unk_rate']:.3f}%, "
                       f"{s['subwords_per_word']:.2f} sub-words/word")
    return rows


def _ensure_vocabulary(ctx, cfg: BuildVocabConfig, shards: dict, pipeline: dict) -> Path:
    """The trained (or adopted, with `from:`) tokenizer.json in .work/vocab/: trained once, by the
    first run or by task 0 of a fan-out, and reused by every later run and task."""
    vocab_dir = ctx.work_dir / "vocab"
    tok_path = vocab_dir / TOKENIZER_FILE
    if _trained(vocab_dir):
        return tok_path
    if ctx.opts.task is not None and ctx.opts.task[0] != 0:
        raise MlmctlError(
            f"build-vocab: the vocabulary is not trained yet; run task 0 first "
            f"(`--task 0/{ctx.opts.task[1]}` trains it), then the other tasks"
        )
    if cfg.from_tokenizer:
        _adopt_tokenizer(cfg.from_tokenizer, pipeline, tok_path)
    else:
        paths = [ctx.input_dir / s.name for s in shards["train"]]
        counts = [ctx.input_dir / f.name for f in ctx.input_manifest.files
                  if f.split == "train" and f.name.endswith(".counts.tsv.gz")]
        ctx.log(f"training a {cfg.model} vocabulary of {cfg.vocab_size:,} on {len(paths)} shards")
        started = time.perf_counter()
        _train(cfg, pipeline, paths, counts, tok_path)
        ctx.log(f"vocabulary trained in {time.perf_counter() - started:.1f} s")
    atomic_write_json(vocab_dir / "trained.json", {"sha256": file_sha256(tok_path)})
    return tok_path


def _indexed_by_tokenize(ctx, tok_sha: str, dtype: str) -> dict[str, str]:
    """{text shard name: JSON of its index counts} when tokenize already indexed the corpus with
    this very tokenizer (`index_with`) and dtype, else {}: those files are adopted, not redone."""
    done = ctx.input_manifest.extra.get("index_with")
    if not isinstance(done, dict) or done.get("sha256") != tok_sha or done.get("dtype") != dtype:
        if isinstance(done, dict):
            ctx.log("the input was indexed with another tokenizer or dtype than this one: indexing again")
        return {}
    adopt = {}
    for info in ctx.input_manifest.files:
        if info.name.endswith(".ids.bin"):
            if set(info.records) != set(INDEX_COUNTS) or not all(type(v) is int for v in info.records.values()):
                return {}  # not what tokenize writes: index again rather than trust it
            adopt[info.name.removesuffix(".ids.bin") + TEXT_SUFFIX] = json.dumps(info.records, sort_keys=True)
    ctx.log("the input holds ids from this tokenizer (tokenize's `index_with`): adopting them")
    return adopt


def _stats(vocab_size: int, dtype: str, used, totals: dict) -> dict:
    """stats.json: per split the totals plus [UNK] rate, sub-words per word and word coverage."""
    stats = {"vocab_size": vocab_size, "dtype": dtype, "vocab_used_by_train": round(float(used.mean()), 6)}
    for split, t in totals.items():
        stats[split] = dict(t) | {
            "unk_rate": round(t["unk"] / max(t["tokens"], 1), 6),
            "subwords_per_word": round(t["tokens"] / max(t["words"], 1), 4),
            "word_coverage": round(t["single_token_words"] / max(t["words"], 1), 6),
        }
    return stats


# ----------------------------------------------------------------------------------------------
# Training


def _read_pipeline(input_dir: Path) -> dict:
    """tokenize's pretokenizer.json, checked by building the pipeline it describes."""
    from mlmctl.pretokenize import pipeline_tokenizer

    path = input_dir / "pretokenizer.json"
    try:
        pipeline = safe_json.loads(path.read_text(encoding="utf-8"))
        pipeline_tokenizer(pipeline)
    except Exception:  # tokenizers raises a bare Exception for a pipeline it cannot build
        raise InputError(f"build-vocab: {path} is missing or damaged; rerun `mlmctl tokenize --force`") from None
    return pipeline


def _trained(vocab_dir: Path) -> bool:
    try:
        record = safe_json.loads((vocab_dir / "trained.json").read_text())
        return record["sha256"] == file_sha256(vocab_dir / TOKENIZER_FILE)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _train(cfg: BuildVocabConfig, pipeline: dict, paths: list[Path], counts: list[Path], tok_path: Path) -> None:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    kind = pipeline.get("kind", "bert")
    # Byte-level must be able to spell every byte, whatever the sample held.
    forced = pre_tokenizers.ByteLevel.alphabet() if kind == "byte-level" else []
    limit = {}
    seeds: list[str] = []
    if cfg.model == "unigram":
        alphabet = forced  # the Unigram trainer keeps every character it sees
    else:
        alphabet, continued = _alphabet(counts, cfg.character_coverage, cfg.limit_alphabet, forced)
        # Handing the trainer the alphabet as `initial_alphabet` with a limit of exactly its size
        # makes the trainer keep precisely these characters.
        limit = {"limit_alphabet": len(alphabet)}
        if cfg.model == "wordpiece" or kind == "bert":
            seeds = [f"##{c}" for c in continued]
        need = len(SPECIAL_TOKENS) + len(alphabet) + len(seeds)
        if need > cfg.vocab_size:
            raise MlmctlError(
                f"build-vocab: `vocab_size` {cfg.vocab_size} is below the corpus alphabet ({need} = "
                f"{len(SPECIAL_TOKENS)} special tokens + {len(alphabet)} characters + {len(seeds)} \"##\" forms); "
                f"raise `vocab_size` or lower `character_coverage`/`limit_alphabet`"
            )
    common = {"vocab_size": cfg.vocab_size, "special_tokens": [*SPECIAL_TOKENS, *seeds], "show_progress": False,
              "initial_alphabet": alphabet}
    if cfg.model == "wordpiece":
        model = models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##",
                                 max_input_chars_per_word=cfg.max_input_chars_per_word)
        trainer = trainers.WordPieceTrainer(min_frequency=cfg.min_frequency, continuing_subword_prefix="##",
                                            **limit, **common)
    elif cfg.model == "bpe":
        # BERT-style words carry no space marker, so continuation pieces get "##" (decodable by
        # the WordPiece decoder); byte-level and metaspace words carry their own marker.
        prefix = {"continuing_subword_prefix": "##"} if kind == "bert" else {}
        model = models.BPE(unk_token="[UNK]", **prefix)
        trainer = trainers.BpeTrainer(min_frequency=cfg.min_frequency, **prefix, **limit, **common)
    else:
        model = models.Unigram()
        trainer = trainers.UnigramTrainer(unk_token="[UNK]", **common)
    tok = Tokenizer(model)
    # The lines hold the pre-tokens already: split on the format's single spaces and nothing else
    # (and on the word joiners of segmented Chinese: a segmented word is still one token per character).
    joiner = WORD_JOINER if "segment" in pipeline else ""
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(f"[ {joiner}]"), behavior="removed")
    try:
        tok.train_from_iterator(_training_batches(paths, cfg.sample_fraction), trainer=trainer)
    except Exception as e:  # the Rust trainers raise plain exceptions (e.g. vocab too small for unigram)
        if isinstance(e, MlmctlError):
            raise
        raise MlmctlError(f"build-vocab: the {cfg.model} trainer failed: {e}; check `vocab_size` and the corpus") from None
    got = tok.get_vocab_size()
    if got > cfg.vocab_size:
        raise MlmctlError(
            f"build-vocab: `vocab_size` {cfg.vocab_size} is below the corpus alphabet ({got} = "
            f"{len(SPECIAL_TOKENS)} special tokens + {got - len(SPECIAL_TOKENS)} characters and pieces); "
            f"raise `vocab_size`"
        )
    check_specials(tok, "the trained vocabulary", STAGE)
    doc = safe_json.loads(tok.to_str())
    # The "##c" seeds stay in the model's vocabulary but are not special tokens.
    doc["added_tokens"] = [t for t in doc["added_tokens"] if t["content"] in SPECIAL_IDS]
    doc = _canonical_ids(doc)
    atomic_write_text(tok_path, json.dumps(_complete(doc, pipeline, cfg.model), ensure_ascii=False, indent=1))


def _alphabet(counts: list[Path], coverage: float, limit: int | None, forced: list[str]) -> tuple[list[str], list[str]]:
    """(alphabet, the alphabet characters that occur inside words), both sorted.

    The alphabet is the smallest set of most frequent characters covering `coverage` of all
    character occurrences (SentencePiece's character_coverage), at most `limit`, plus `forced`.
    The second list gives the "##c" continuations handed to the trainer up front: the
    BPE/WordPiece trainers otherwise create them in hash-map order, and those ids break ties
    between equally frequent merges, so the same corpus could give another vocabulary in the
    next process (huggingface/tokenizers#1794). Characters seen only as whole words (CJK under
    the BERT pre-tokenizer) get no "##" form, as the trainer would do. Read from tokenize's
    per-shard word counts: no pass over the text.
    """
    from collections import Counter, defaultdict

    words: dict[str, int] = Counter()
    for path in counts:
        for _, word, n in _count_rows(path):
            words[word] += n
    # Character counts weighted by word counts, one C-level Counter per distinct count.
    by_count: dict[int, list[str]] = defaultdict(list)
    for word, n in words.items():
        by_count[n].append(word)
    weighted: Counter = Counter()
    for n, group in by_count.items():
        for c, k in Counter("".join(group)).items():
            weighted[c] += k * n
    ranked = sorted(weighted.items(), key=lambda kv: (-kv[1], kv[0]))
    total = sum(weighted.values())
    keep, covered = 0, 0
    for _, k in ranked:
        if covered >= coverage * total:
            break
        covered += k
        keep += 1
    if limit is not None:
        keep = min(keep, limit)
    chars = {c for c, _ in ranked[:keep]}
    inside = set("".join(w[1:] for w in words))
    return sorted(chars | set(forced)), sorted(chars & inside | set(forced) & inside)


def _canonical_ids(doc: dict) -> dict:
    """Renumber the trained vocabulary in a fixed order (specials, then by kind, length, text).

    Unigram pieces come out in score order with ties in no fixed order, and BPE/WordPiece ids
    follow the trainer's internal order; sorting makes the same token set always get the same ids.
    """
    model = doc["model"]
    if model["type"] in ("WordPiece", "BPE"):
        rest = sorted((t for t in model["vocab"] if t not in SPECIAL_IDS),
                      key=lambda t: (t.startswith("##"), len(t), t))
        model["vocab"] = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *rest])}
    elif model["type"] == "Unigram":
        head = [p for p in model["vocab"] if p[0] in SPECIAL_IDS]
        rest = sorted((p for p in model["vocab"] if p[0] not in SPECIAL_IDS), key=lambda p: (-p[1], p[0]))
        model["vocab"] = sorted(head, key=lambda p: SPECIAL_IDS[p[0]]) + rest
        model["unk_id"] = SPECIAL_IDS[UNK]
    return doc


def _training_batches(paths: list[Path], fraction: float) -> Iterator[list[str]]:
    """Sentence lines of the train shards, as batches; with fraction < 1, whole documents are skipped."""
    doc_index = 0
    for path in paths:
        for block in _line_blocks(path):
            if fraction >= 1:
                yield [line for line in block if line]
                continue
            batch = []
            for line in block:
                if not line:
                    doc_index += 1
                elif (doc_index * GOLDEN) % 1.0 < fraction:
                    batch.append(line)
            yield batch


def _complete(doc: dict, pipeline: dict, model: str) -> dict:
    """Splice tokenize's normalizer + pre-tokenizer into a trained tokenizer and add the BERT ends."""
    kind = pipeline.get("kind", "bert")
    doc["normalizer"] = pipeline["normalizer"]
    doc["pre_tokenizer"] = pipeline["pre_tokenizer"]
    doc["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
        "special_tokens": {t: {"id": t, "ids": [SPECIAL_IDS[t]], "tokens": [t]} for t in (CLS, SEP)},
    }
    wordpiece = {"type": "WordPiece", "prefix": "##", "cleanup": True}
    strip_prefix = {"type": "Replace", "pattern": {"Regex": "^##"}, "content": ""}
    if kind == "bert":
        decoder = wordpiece
    elif kind == "byte-level":
        steps = [{"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}]
        decoder = {"type": "Sequence", "decoders": [strip_prefix] + steps} if model == "wordpiece" else steps[0]
    else:
        meta = dict(pipeline["pre_tokenizer"])
        step = {"type": "Metaspace", "replacement": meta.get("replacement", "\u2581"),
                "prepend_scheme": meta.get("prepend_scheme", "always"), "split": meta.get("split", True)}
        decoder = {"type": "Sequence", "decoders": [strip_prefix, step]} if model == "wordpiece" else step
    doc["decoder"] = decoder
    return doc


def _adopt_tokenizer(path_text: str, pipeline: dict, tok_path: Path) -> None:
    """Check a `from` tokenizer file and copy it, byte for byte, as the vocabulary."""
    from mlmctl.shards import atomic_write_bytes

    raw, _ = read_vocabulary(path_text, pipeline, stage=STAGE, key="from")
    tok_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(tok_path, raw)


def _vocab_size(tok_path: Path) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tok_path)).get_vocab_size(with_added_tokens=True)


def _model_type(tok_path: Path) -> str:
    return safe_json.loads(tok_path.read_text(encoding="utf-8"))["model"].get("type", "?").lower()


# ----------------------------------------------------------------------------------------------
# Indexing

def _count_rows(path: Path) -> Iterator[tuple[int, str, int]]:
    """(line number, word, count) of tokenize's `WORD<TAB>COUNT` file; any other row is one line
    naming file and line (the file's bytes match its manifest, but that can be rewritten)."""
    lineno = 0
    for block in _line_blocks(path):
        for row in block:
            lineno += 1
            if not row:
                continue
            word, tab, n = row.rpartition("\t")
            if not (tab and word and "\t" not in word and n.isascii() and n.isdigit() and len(n) <= 18 and int(n) > 0):
                raise InputError(f"build-vocab: {path}:{lineno} is not a `WORD<TAB>COUNT` row (a count of 1 or more); "
                                 f"rerun `mlmctl tokenize --force`")
            yield lineno, word, int(n)


def _line_blocks(path: str | Path, block_bytes: int = 1 << 22) -> Iterator[list[str]]:
    """Lines of a gzipped shard in blocks of about `block_bytes`, never splitting a line."""
    try:
        with gzip.open(path, "rb") as f:
            rest = b""
            while chunk := f.read(block_bytes):
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                if cut:
                    yield data[:cut - 1].decode("utf-8").split("\n")
            if rest:
                yield rest.decode("utf-8").split("\n")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:  # zlib.error: a flipped byte
        raise InputError(f"build-vocab: {path} is damaged ({e}); rerun `mlmctl tokenize --force`") from None


def _index_shard(unit: _IndexUnit, part: Path) -> dict:
    """Token ids, word-start flags and sentence/document ends of one tokenized shard."""
    if unit.adopt:
        return _adopt_shard(unit, part)
    words = word_table(unit.tokenizer, unit.tokenizer_sha256)
    sents_in_doc = 0
    with ShardIndex(part, shard_name(unit.index), words, unit.dtype, stage=STAGE) as index:
        for block in _line_blocks(unit.src, 1 << 20):
            words: list[str] = []
            line_ends: list[int] = []  # per sentence: index one past its last word in `words`
            doc_ends: list[int] = []
            joined = []  # (first word, continuation flags) of lines with word joiners
            for line in block:
                if line:
                    if unit.segmented and WORD_JOINER in line:
                        pieces, cont = split_joined(line)
                        joined.append((len(words), cont))
                        words += pieces
                    else:
                        words += line.split(" ")
                    line_ends.append(len(words))
                    sents_in_doc += 1
                elif sents_in_doc:
                    doc_ends.append(len(line_ends))
                    sents_in_doc = 0
            index.add(words, line_ends, doc_ends, joined)
        if sents_in_doc:  # a shard whose last document lacks the closing blank line
            index.add([], [], [0])
    return index.result


def _adopt_shard(unit: _IndexUnit, part: Path) -> dict:
    """The index files tokenize wrote with this very tokenizer (`index_with`), linked, not redone."""
    from mlmctl.shards import atomic_link

    base = shard_name(unit.index)
    src = Path(unit.src).parent
    for name in (f"{base}.ids.bin", f"{base}.wstart.bin"):
        atomic_link(src / name, part / name)
    for name in INDEX_FILES:
        atomic_link(src / f"{base}.{name}", part / name)
    counts = safe_json.loads(unit.adopt)
    if not _consistent(part, base, counts, unit):
        raise InputError(f"build-vocab: the index files of {src / base} disagree with its manifest counts; "
                         "rerun `mlmctl tokenize --force`")
    return counts


def _consistent(part: Path, base: str, counts: dict, unit: _IndexUnit) -> bool:
    """Whether adopted index files hold what indexing would have written: sizes, offsets that
    rise and end where the ids end, token counts that are the ids' own (a crafted or damaged
    directory whose manifest was rewritten to match is refused here, not in pretraining)."""
    import numpy as np

    def read(name: str, dtype) -> np.ndarray | None:
        """The whole file as `dtype`, or None when it is not a whole number of items."""
        data = (part / name).read_bytes()
        return np.frombuffer(data, dtype=dtype) if len(data) % np.dtype(dtype).itemsize == 0 else None

    try:
        arrays = [read(f"{base}.ids.bin", "<u2" if unit.dtype == "uint16" else "<u4"),
                  read(f"{base}.wstart.bin", np.uint8), read("sent_ends.bin", "<i8"), read("doc_ends.bin", "<i8"),
                  read("token_counts.bin", "<i8")]
    except OSError:
        return False
    if any(a is None for a in arrays):
        return False
    ids, ws, sent, docs, used = arrays
    vocab = model_only(unit.tokenizer, unit.tokenizer_sha256).get_vocab_size()
    sizes = (len(ids), len(ws), len(sent), len(docs), len(used))
    if sizes != (counts["tokens"], counts["tokens"], counts["sentences"], counts["docs"], vocab):
        return False
    if len(ids) and int(ids.max()) >= vocab or not np.array_equal(np.bincount(ids, minlength=vocab), used):
        return False
    if not (_rising_to(sent, len(ids)) and _rising_to(docs, len(sent)) and np.isin(ws, (0, 1)).all()):
        return False
    return not len(sent) or bool(ws[np.concatenate([[0], sent[:-1]])].all())  # a sentence starts a word


def _rising_to(ends, last: int) -> bool:
    """Strictly rising, positive, and ending at `last` (no empty sentence or document)."""
    import numpy as np

    return not len(ends) or (int(ends[0]) > 0 and bool((np.diff(ends) > 0).all()) and int(ends[-1]) == last)


def atomic_write_bytes_np(path: Path, array) -> None:
    from mlmctl.shards import atomic_write_bytes

    atomic_write_bytes(path, array.tobytes())


def _write_offsets(ctx, split: str, done: list) -> list:
    """Global `sent_offsets.bin` / `doc_offsets.bin` of a split, streamed shard by shard."""
    import numpy as np

    names = (f"{split}/sent_offsets.bin", f"{split}/doc_offsets.bin")
    out = ctx.output_dir
    tok_base = sent_base = 0
    with atomic_write(out / names[0]) as fs, atomic_write(out / names[1]) as fd:
        fs.write(np.zeros(1, "<i8").tobytes())
        fd.write(np.zeros(1, "<i8").tobytes())
        for _unit, res in done:
            sent_ends = np.fromfile(res.dir / "sent_ends.bin", dtype="<i8")
            doc_ends = np.fromfile(res.dir / "doc_ends.bin", dtype="<i8")
            fs.write((sent_ends + tok_base).astype("<i8").tobytes())
            fd.write((doc_ends + sent_base).astype("<i8").tobytes())
            tok_base += res.result["tokens"]
            sent_base += res.result["sentences"]
    return [ctx.describe(names[0], split, {"sentences": sent_base}),
            ctx.describe(names[1], split, {"docs": sum(r.result["docs"] for _, r in done)})]


# ----------------------------------------------------------------------------------------------
# Tokenizer files for transformers


def _write_tokenizer_files(ctx, tok_path: Path, pipeline: dict, cfg: BuildVocabConfig) -> list:
    from mlmctl.shards import atomic_link

    out = ctx.output_dir
    atomic_link(tok_path, out / TOKENIZER_FILE)
    names = [TOKENIZER_FILE]
    doc = safe_json.loads(tok_path.read_text(encoding="utf-8"))
    model = doc["model"]
    if model.get("type") == "WordPiece":
        vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
        atomic_write_text(out / VOCAB_FILE, "".join(f"{t}\n" for t, _ in vocab))
        names.append(VOCAB_FILE)
    specials = HF_SPECIAL_TOKENS
    bert = pipeline.get("kind") == "bert" and model.get("type") == "WordPiece"
    tcfg = {
        # transformers loads tokenizer.json as it stands for both classes; BertTokenizerFast also
        # gives BERT's defaults (token_type_ids, [CLS]/[SEP] handling) to older versions.
        "tokenizer_class": "BertTokenizerFast" if bert else "PreTrainedTokenizerFast",
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    if bert:
        norm = pipeline["normalizer"]
        norm = next((n for n in norm.get("normalizers", [norm]) if n.get("type") == "BertNormalizer"), {})
        tcfg |= {"do_lower_case": bool(norm.get("lowercase", True)),
                 "tokenize_chinese_chars": bool(norm.get("handle_chinese_chars", True)),
                 "strip_accents": norm.get("strip_accents")}
    atomic_write_json(out / "tokenizer_config.json", tcfg)
    atomic_write_json(out / "special_tokens_map.json", specials)
    names += ["tokenizer_config.json", "special_tokens_map.json"]
    return [ctx.describe(n) for n in names]
