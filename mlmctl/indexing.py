"""Pre-tokens -> token ids: the one indexing core behind both routes from text to ids.

`build-vocab` feeds it the pre-tokens it reads back from tokenize's text shards; `tokenize` with
`index_with: tokenizer.json` feeds it the pre-tokens it has just made, in the same pass, and
`build-vocab` with the same `from:` then adopts those files instead of indexing again. Both
routes hand `ShardIndex.add` the same words in the same blocks' order, so they write the same
bytes by construction (tests/stages/test_build_vocab.py compares them).

Per shard, into a work directory:

    {base}.ids.bin        token ids, uint16 or uint32 little-endian, the shard's sentences back to back
    {base}.wstart.bin     uint8 per token: 1 where a word starts (a pre-token, or a whole segmented
                          Chinese word)
    sent_ends.bin         int64 per sentence: its end, in tokens from the shard's start
    doc_ends.bin          int64 per document: its end, in sentences from the shard's start
    token_counts.bin      int64 per vocabulary id: how often the shard uses it

Also here: the checks a tokenizer.json named by a config (`from`, `index_with`) must pass, so
both stages refuse the same files with the same words.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING

from mlmctl import safe_json
from mlmctl.errors import MlmctlError
from mlmctl.layout import SPECIAL_TOKENS, UNK_ID
from mlmctl.pretokenize import WORD_JOINER
from mlmctl.shards import atomic_write, atomic_write_bytes

if TYPE_CHECKING:
    import numpy as np

__all__ = ["SPECIAL_IDS", "INDEX_FILES", "INDEX_COUNTS", "read_vocabulary", "check_specials", "pick_dtype", "model_only", "word_table",
           "Numbering", "number_words", "WordIds", "ShardIndex", "split_joined"]

SPECIAL_IDS = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
INDEX_FILES = ("sent_ends.bin", "doc_ends.bin", "token_counts.bin")
"""The per-shard structure files beside `{base}.ids.bin` and `{base}.wstart.bin`."""
INDEX_COUNTS = ("docs", "sentences", "tokens", "words", "unk", "single_token_words", "max_id")
"""What `ShardIndex.result` counts, in this order."""


# ----------------------------------------------------------------------------------------------
# A tokenizer.json named by a config


def read_vocabulary(path_text: str, pipeline: dict, *, stage: str, key: str) -> tuple[bytes, int]:
    """(bytes, vocabulary size) of a tokenizer.json that mlmctl can index with: it loads, has
    mlmctl's special ids and the normalizer + pre-tokenizer that `tokenize` uses (`pipeline`)."""
    from tokenizers import Tokenizer

    path = Path(path_text)
    if not path.is_file():
        raise MlmctlError(f"{stage}: `{key}` {path} does not exist or is not a file")
    try:
        raw = path.read_bytes()
        tok = Tokenizer.from_str(raw.decode("utf-8"))
        doc = safe_json.loads(raw)
    except Exception:  # tokenizers raises a bare Exception for any bad file
        raise MlmctlError(f"{stage}: `{key}` {path} is not a tokenizers tokenizer.json") from None
    check_specials(tok, f"`{key}` {path}", stage)
    fix = ("set `pretokenizer` to that tokenizer's settings" if stage == "tokenize"
           else "rerun tokenize with the settings of that tokenizer")
    for part in ("normalizer", "pre_tokenizer"):
        if doc.get(part) != pipeline[part]:
            raise MlmctlError(
                f"{stage}: `{key}` {path} has a different {part} than the one `tokenize` "
                f"uses ({part.replace('_', '-')} settings differ); {fix}"
            )
    return raw, tok.get_vocab_size(with_added_tokens=True)


def check_specials(tok, what: str, stage: str) -> None:
    for token, want in SPECIAL_IDS.items():
        got = tok.token_to_id(token)
        if got != want:
            raise MlmctlError(
                f"{stage}: {what} has {token} at id {got}, but mlmctl needs "
                + ", ".join(f"{t}={i}" for t, i in SPECIAL_IDS.items())
            )


def pick_dtype(choice: str, vocab_size: int, stage: str = "build-vocab") -> str:
    fits16 = vocab_size <= 1 << 16
    if choice == "uint16" and not fits16:
        raise MlmctlError(
            f"{stage}: `dtype` uint16 cannot hold ids up to {vocab_size - 1} (vocabulary of "
            f"{vocab_size:,}); set `dtype: uint32` or `auto`"
        )
    if choice == "auto":
        return "uint16" if fits16 else "uint32"
    return choice


_MODEL_CACHE: dict[str, object] = {}


def model_only(path: str, sha: str):
    """The tokenizer's model alone: it is applied to normalized pre-tokens."""
    from tokenizers import Tokenizer

    if sha not in _MODEL_CACHE:
        doc = safe_json.loads(Path(path).read_text(encoding="utf-8"))
        # No added-token matching either: literal "[MASK]" in the corpus is text, not a control
        # token (the full tokenizer.json with `encode_special_tokens = True` does the same).
        doc.update(normalizer=None, pre_tokenizer=None, post_processor=None, decoder=None, added_tokens=[])
        _MODEL_CACHE.clear()
        _MODEL_CACHE[sha] = Tokenizer.from_str(json.dumps(doc))
    return _MODEL_CACHE[sha]


# ----------------------------------------------------------------------------------------------
# Words -> numbers -> ids

TABLE_LIMIT = 300_000
"""Words a process keeps numbered (and, with a tokenizer, encoded) across shards: ~100 MB at most (measured)."""
_TABLES: dict[str, object] = {}


def word_table(path: str | None = None, sha: str = ""):
    """This process's word table, kept across the shards it handles: a `WordIds` for the tokenizer
    (`path`, `sha`), or a plain `Numbering` without one. A worker indexes shard after shard of one
    corpus, whose words mostly recur, so a word met in an earlier shard is neither numbered nor
    encoded again. A table past TABLE_LIMIT words is cut to the half first met at the next shard,
    so memory stays bounded whatever the corpus while the frequent words (met early: a word of
    frequency p is first met after about 1/p words) stay; outputs never depend on it (counts and
    ids are per word)."""
    table = _TABLES.get(sha)
    if table is None:
        _TABLES.clear()
        table = _TABLES[sha] = WordIds(model_only(path, sha)) if path else Numbering()
    elif len(table.number if path else table) > TABLE_LIMIT:
        table = _TABLES[sha] = table.first_met(TABLE_LIMIT // 2)
    return table


class Numbering(dict):
    """word -> number in order of first appearance; `new` lists the words first seen since it was last cleared."""

    def __init__(self):
        super().__init__()
        self.new: list[str] = []

    def __missing__(self, word: str) -> int:
        self[word] = n = len(self)
        self.new.append(word)
        return n

    def first_met(self, k: int) -> Numbering:
        """A numbering of the k words met first, with their numbers."""
        kept = Numbering()
        kept.update(islice(self.items(), k))
        return kept


def number_words(numbering: Numbering, words: Iterable[str], count: int | None = None) -> np.ndarray:
    """The number of each word: one C-level dict lookup per word; only a word not seen before
    runs Python (`__missing__`). `count`: how many words, when `words` has no len()."""
    import numpy as np

    n = len(words) if count is None else count
    return np.fromiter(map(numbering.__getitem__, words), dtype=np.int64, count=n)


class WordIds:
    """The model's ids for each distinct pre-token, computed once and then gathered with numpy.

    The model splits every pre-token on its own (no context crosses a pre-token), so the ids of
    a sentence are the ids of its pre-tokens back to back. A shard of a Zipf-distributed corpus
    holds few distinct words, so the model runs on a few percent of the words and the rest is one
    dict lookup per word: ~10x faster than `encode_batch(..., is_pretokenized=True)` on the
    sentences, whose per-word cost is building `Encoding` objects and Python lists. A process keeps
    one table across its shards (`word_table`), cut to its first-met half past TABLE_LIMIT words,
    so memory is bounded whatever the corpus.
    """

    def __init__(self, model):
        import numpy as np

        self.model = model
        self.number = Numbering()
        self.flat = np.zeros(0, np.int64)  # ids of every known word, back to back
        self.first = np.zeros(0, np.int64)  # per word number: where its ids start in `flat`
        self.length = np.zeros(0, np.int64)  # per word number: how many ids it has

    def encode(self, words: list[str]):
        """(ids, word-start flags, tokens per word) of the words, concatenated."""
        return self.encode_numbers(number_words(self.number, words))

    def encode_numbers(self, k: np.ndarray):
        """`encode` for words already numbered by `self.number`."""
        import numpy as np

        if self.number.new:
            self._learn(self.number.new)
            self.number.new.clear()
        flat, first = self.flat, self.first
        word_tokens = self.length[k]
        total = int(word_tokens.sum())
        offset = np.cumsum(word_tokens) - word_tokens  # where each word's ids go in the output
        # token j of word i comes from flat[first[k[i]] + j]: repeat each word's (source - target) shift
        ids = flat[np.repeat(first[k] - offset, word_tokens) + np.arange(total)]
        starts = np.zeros(total, dtype=bool)
        starts[offset[word_tokens > 0]] = True
        return ids, starts, word_tokens

    def first_met(self, k: int) -> WordIds:
        """This table cut to the k words met first (numbered 0..k-1, so their ids are a prefix)."""
        kept = WordIds(self.model)
        kept.number = self.number.first_met(min(k, len(self.first)))  # learned words only
        k = len(kept.number)
        kept.first, kept.length = self.first[:k].copy(), self.length[:k].copy()  # copies: the rest is freed
        kept.flat = self.flat[:int(self.first[k - 1] + self.length[k - 1])].copy() if k else self.flat[:0].copy()
        return kept

    def _learn(self, words: list[str]) -> None:
        """Append the new words' ids to the tables (numpy appends: no pass over the known words)."""
        import numpy as np

        encs = self.model.encode_batch([[w] for w in words], is_pretokenized=True, add_special_tokens=False)
        ids = [enc.ids for enc in encs]
        length = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        self.first = np.concatenate([self.first, len(self.flat) + np.cumsum(length) - length])
        self.length = np.concatenate([self.length, length])
        self.flat = np.concatenate([self.flat, np.fromiter(chain.from_iterable(ids), dtype=np.int64)])


def split_joined(line: str):
    """Pre-tokens of a line with word joiners, and per pre-token whether it continues a word."""
    import numpy as np

    words, cont = [], []
    for group in line.split(" "):
        parts = group.split(WORD_JOINER)
        words += parts
        cont += [False] + [True] * (len(parts) - 1)
    return words, np.asarray(cont, dtype=bool)


# ----------------------------------------------------------------------------------------------
# One shard's index files


class ShardIndex:
    """Writes one shard's ids, word starts and sentence/document ends, block by block.

        with ShardIndex(part, "shard-00000", word_table(path, sha), "uint16", stage="build-vocab") as index:
            index.add(words, line_ends, doc_ends)      # once per block of whole sentences
        index.result                                     # counts for the manifest

    A block is the flat list of its sentences' pre-tokens; `line_ends[i]` is one past sentence
    i's last word; `doc_ends` lists, for each document that ends in the block, the number of the
    block's sentences up to its end; `joined` gives (first word, continuation flags) of the
    sentences of segmented Chinese, whose pre-tokens inside a word start no word.
    """

    def __init__(self, part: Path, base: str, words: WordIds, dtype: str, *, stage: str):
        import numpy as np

        self.part, self.base, self.stage = part, base, stage
        self.words = words
        self.vocab_size = words.model.get_vocab_size()
        self.dtype_name, self.dtype = dtype, np.dtype("<u2" if dtype == "uint16" else "<u4")
        self.counts = np.zeros(self.vocab_size, dtype=np.int64)
        self.sent_ends: list[np.ndarray] = []
        self.doc_ends: list[int] = []
        self.n = dict.fromkeys(("tokens", "sentences", "words", "unk", "single_token_words"), 0)
        self.result: dict | None = None

    def __enter__(self) -> ShardIndex:
        self._files = contextlib.ExitStack()
        with self._files as files:
            self.fids = files.enter_context(atomic_write(self.part / f"{self.base}.ids.bin"))
            self.fws = files.enter_context(atomic_write(self.part / f"{self.base}.wstart.bin"))
            self._files = files.pop_all()
        return self

    def __exit__(self, *exc) -> bool:
        # Both files appear only when every block went in; the structure files come after them.
        suppress = self._files.__exit__(*exc)
        if exc[0] is None:
            self.result = self._finish()
        return suppress

    def add(self, words: list[str], line_ends: list[int], doc_ends: list[int], joined=()) -> None:
        self.add_numbers(number_words(self.words.number, words), line_ends, doc_ends, joined)

    def add_numbers(self, k: np.ndarray, line_ends: list[int], doc_ends: list[int], joined=()) -> None:
        """`add` for words already numbered by `self.words.number` (tokenize numbers them to count them)."""
        import numpy as np

        n = self.n
        self.doc_ends += [n["sentences"] + e for e in doc_ends]
        if not line_ends:
            return
        ids, starts, word_tokens = self.words.encode_numbers(k)
        if joined:
            cont = np.zeros(len(k), dtype=bool)
            for first, flags in joined:
                cont[first:first + len(flags)] = flags
            starts[starts] = ~cont[word_tokens > 0]
        if len(ids) and int(ids.max()) > np.iinfo(self.dtype).max:
            raise MlmctlError(f"{self.stage}: id {int(ids.max())} does not fit {self.dtype_name}; set `dtype: uint32`")
        self.fids.write(ids.astype(self.dtype).tobytes())
        self.fws.write(starts.astype(np.uint8).tobytes())
        # A word is one token when the next token starts a word too (or the block ends: blocks
        # end on a sentence end, which is a word end).
        nxt = np.append(starts[1:], True)
        n["single_token_words"] += int(np.count_nonzero(starts & nxt))
        n["words"] += int(np.count_nonzero(starts))
        n["unk"] += int(np.count_nonzero(ids == UNK_ID))
        self.counts += np.bincount(ids, minlength=self.vocab_size)[:self.vocab_size]
        tokens_before = np.concatenate([[0], np.cumsum(word_tokens)])
        self.sent_ends.append(n["tokens"] + tokens_before[line_ends])
        n["tokens"] += len(ids)
        n["sentences"] += len(line_ends)

    def _finish(self) -> dict:
        import numpy as np

        ends = np.concatenate(self.sent_ends) if self.sent_ends else np.zeros(0, dtype=np.int64)
        atomic_write_bytes(self.part / "sent_ends.bin", ends.astype("<i8").tobytes())
        atomic_write_bytes(self.part / "doc_ends.bin", np.asarray(self.doc_ends, dtype="<i8").tobytes())
        atomic_write_bytes(self.part / "token_counts.bin", self.counts.astype("<i8").tobytes())
        # The largest id stored: readers check it against the vocabulary without scanning the shard.
        used = np.flatnonzero(self.counts)
        counts = {**self.n, "docs": len(self.doc_ends), "max_id": int(used[-1]) if len(used) else -1}
        return {k: counts[k] for k in INDEX_COUNTS}
