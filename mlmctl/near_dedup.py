"""Near-duplicate removal for `mlmctl clean`: MinHash signatures, LSH bands, one merge.

The `near_dedup` step (last in `steps`) removes documents that share most of their word
5-grams with an earlier document, the MinHash + LSH scheme of datatrove's `MinhashDedup*`
pipeline, with its defaults: 5-gram shingles, 14 bands of 8 hashes (112 hash functions).
Two documents share a band with probability 1 - (1 - J^8)^14 for Jaccard similarity J of
their shingle sets: 0.5% at J = 0.5, 50% at J ~ 0.72 (the threshold), 92% at 0.8, 99.9% at 0.9.

It fits the stage's two phases, so `--workers` and `--task` never change the result:

1. read phase, per input unit: `MinHasher` turns every kept document into 14 band hashes
   (uint64) and writes them next to the unit's documents (`minhash.u64`, row-major,
   112 bytes per document) - numpy-vectorised over a batch of documents;
2. plan, in the final run: `near_duplicates` reads one band column at a time (8 bytes per
   document), sorts it, links the documents that share a bucket, and joins the links into
   clusters. Every cluster keeps its first document in canonical order (input units in
   order, documents in file order - the rule exact de-duplication uses); the others are
   dropped and counted as `near_dedup/near_duplicate`.

Shingles: the document is lower-cased and split into word runs (`\\w+` with combining marks,
punctuation dropped); a document mostly in a script written without spaces (Chinese, Japanese,
Thai: `mlmctl.scripts`; or any other, by its long whitespace runs) or without any word
character (emoji, symbols) uses character n-grams of its non-space characters instead. A document with fewer units than
`ngram` is one shingle. Hashes are seeded and pure functions of the text (CRC-32 per word,
a polynomial over the n-gram, splitmix64, multiply-shift MinHash), so signatures are the same
on every machine and in every process.

Memory: the read phase hashes at most BATCH_SHINGLES shingles at once and reads a long document
in slices (a 50 MB one-line document needs a few MB beyond its text); the merge holds a few
arrays of one entry per document for one band at a time, clusters merged band by band (at most
~110 bytes per document: 220 MB for 2 M identical documents) - bounded by the number of
documents, not their size.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import ClassVar

from mlmctl.config import check
from mlmctl.scripts import script_stats

MINHASH_FILE = "minhash.u64"
_WORD = re.compile(r"\w+")
_WORD_MARKS: re.Pattern | None = None  # \w plus combining marks, built on first non-ASCII text
LONG_RUN_CHARS = 25
"""A document whose characters per whitespace-separated run average more than this is written
without spaces in a script `mlmctl.scripts` does not know (Lao, Khmer, Myanmar, Tibetan): its
shingles are character n-grams too, not n-grams of whole phrases."""
_SPACE = re.compile(r"\s+")
_M64 = (1 << 64) - 1


@dataclass
class NearDedupConfig:
    """Settings of the `near_dedup` step (MinHash LSH; defaults from datatrove's MinhashConfig)."""

    ngram: int = 5
    """Shingle size: words per n-gram (characters for Chinese documents); datatrove: 5."""
    bands: int = 14
    """LSH bands (buckets); a pair is a candidate when all hashes of one band agree; datatrove: 14."""
    rows_per_band: int = 8
    """MinHash values per band (bands x rows hash functions in all); datatrove: 8."""
    seed: int = 1
    """Seed of the hash functions (changes which near-duplicates are found at the margin, never the keep rule)."""

    def __post_init__(self) -> None:
        check(1 <= self.ngram <= 64, "ngram", f"must be 1..64, got {self.ngram}")
        check(1 <= self.bands <= 64, "bands", f"must be 1..64, got {self.bands}")
        check(1 <= self.rows_per_band <= 64, "rows_per_band", f"must be 1..64, got {self.rows_per_band}")
        check(0 <= self.seed < 2**63, "seed", f"must be >= 0, got {self.seed}")


class NearDedup:
    """Marks where near-duplicate removal runs; the work is in `MinHasher` and `near_duplicates`.

    Its `process` keeps every document unchanged: the stage signs the final text of each kept
    document (hence: last in `steps`) and decides in the plan, over the whole corpus.
    """

    name: ClassVar[str] = "near_dedup"
    Config: ClassVar[type] = NearDedupConfig

    def __init__(self, cfg=None) -> None:
        self.cfg = cfg if cfg is not None else NearDedupConfig()

    def process(self, text: str) -> tuple[str, str | None]:
        return text, None


# --------------------------------------------------------------------------- signatures


def _mix(z):
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    import numpy as np

    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


SLICE_CHARS = 1 << 18
"""A document is turned into unit hashes this many characters at a time (cut after a whitespace,
so no word is split): a 50 MB one-line document costs a few MB of working memory, not GBs."""
BATCH_SHINGLES = 1 << 16
"""Shingles hashed together in one vectorised block: (BATCH_SHINGLES, rows_per_band) uint64
temporaries, about 4 MB each, whatever the size of the documents."""


def _pieces(text: str):
    """`text` in slices of about SLICE_CHARS, each ending just after a whitespace character."""
    pos, end = 0, len(text)
    while end - pos > SLICE_CHARS:
        m = _SPACE.search(text, pos + SLICE_CHARS)
        if m is None:
            break
        yield text[pos:m.end()]
        pos = m.end()
    yield text[pos:]


def unit_hashes(text: str):
    """uint64 arrays, one per slice of `text`, of its shingle units in order: a lower-cased word
    run with its combining marks (CRC-32 of its UTF-8), or each non-space character when the
    document is in an unspaced script (`mlmctl.scripts`), has whitespace runs longer than
    LONG_RUN_CHARS on average (an unspaced script it does not know), or has no word character
    at all (emoji, punctuation)."""
    import numpy as np

    chars = (_WORD.search(text) is None or not text.isascii() and (
        script_stats(text).is_unspaced or len(text) > LONG_RUN_CHARS * (1 + sum(map(text.count, " \n\t")))))
    for piece in _pieces(text):
        low = piece.lower()
        if chars:
            data = _SPACE.sub("", low).encode("utf-32-le", "surrogatepass")
            yield np.frombuffer(data, dtype=np.uint32).astype(np.uint64)
        else:
            # Vowel signs and viramas (Devanagari, Khmer) and NFD accents are marks, not \w: a
            # plain \w+ would split "हिन्दी" into pieces and drop its vowels, so "कम" = "काम".
            words = (_WORD if piece.isascii() else _word_marks()).findall(low)
            data = [w.encode("utf-8", "surrogatepass") for w in words]
            yield np.fromiter(map(zlib.crc32, data), dtype=np.uint64, count=len(data))


def _word_marks() -> re.Pattern:
    """Word runs with their combining marks."""
    global _WORD_MARKS
    if _WORD_MARKS is None:
        from mlmctl.cleaning import mark_class

        _WORD_MARKS = re.compile(r"(?:\w|" + mark_class() + ")+")
    return _WORD_MARKS


def shingle_hashes(units, n: int):
    """uint64 hash of every n consecutive units (one shingle over all units when fewer)."""
    import numpy as np

    k = max(len(units) - n + 1, 1)
    width = min(n, len(units))
    with np.errstate(over="ignore"):
        h = np.zeros(k, dtype=np.uint64)
        for j in range(width):
            h = h * np.uint64(0x100000001B3) + units[j:j + k] + np.uint64(1)
        return _mix(h)


def document_shingles(text: str, n: int):
    """The shingle hashes of one document, as arrays of at most about BATCH_SHINGLES (in order).

    Streams over `unit_hashes`, carrying the last n - 1 units into the next slice so every
    window is hashed exactly once; a document of fewer than n units is one shingle."""
    import numpy as np

    carry = np.zeros(0, dtype=np.uint64)
    seen = 0
    for part in unit_hashes(text):
        seen += len(part)
        units = np.concatenate((carry, part))
        if len(units) < n:
            carry = units
            continue
        for start in range(0, len(units) - n + 1, BATCH_SHINGLES):
            yield shingle_hashes(units[start:start + BATCH_SHINGLES + n - 1], n)
        carry = units[len(units) - (n - 1):] if n > 1 else units[:0]
    if seen < n:
        yield shingle_hashes(carry, n)


class MinHasher:
    """Band hashes of documents, computed in batches: `add(text)` each, then `write(f)`.

    Memory is bounded by BATCH_SHINGLES, not by the size of a document: a batch of small
    documents is hashed together (numpy over all their shingles), a long one in blocks whose
    minima are combined."""

    def __init__(self, cfg: NearDedupConfig) -> None:
        import numpy as np

        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        shape = (cfg.bands, cfg.rows_per_band)
        # Multiply-shift hashing (odd multiplier, top 32 bits): a universal family on uint64.
        self.a = rng.integers(1, 2**63, size=shape, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.integers(0, 2**63, size=shape, dtype=np.uint64)
        self.pending: list = []  # shingle blocks of whole documents not yet hashed
        self.pending_shingles = 0
        self.done: list = []  # (documents, bands) band hashes, in document order

    def add(self, text: str) -> None:
        import numpy as np

        blocks = list(document_shingles(text, self.cfg.ngram)) if len(text) <= SLICE_CHARS else None
        if blocks is not None and len(blocks) == 1:
            self.pending.append(blocks[0])
            self.pending_shingles += len(blocks[0])
            if self.pending_shingles >= BATCH_SHINGLES:
                self._flush_pending()
            return
        self._flush_pending()  # keep document order
        mins = None
        for block in blocks if blocks is not None else document_shingles(text, self.cfg.ngram):
            m = self._minima([block])[0]
            mins = m if mins is None else np.minimum(mins, m)
        self.done.append(self._bands(mins[None]))

    def _flush_pending(self) -> None:
        if self.pending:
            self.done.append(self._bands(self._minima(self.pending)))
            self.pending, self.pending_shingles = [], 0

    def _minima(self, docs):
        """(documents, bands, rows) MinHash values of documents given as shingle arrays."""
        import numpy as np

        h = np.concatenate(docs)
        starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
        out = np.empty((len(docs), self.cfg.bands, self.cfg.rows_per_band), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for b in range(self.cfg.bands):
                perm = (h[:, None] * self.a[b] + self.b[b]) >> np.uint64(32)  # (shingles, rows)
                out[:, b] = np.minimum.reduceat(perm, starts, axis=0)  # (documents, rows)
        return out

    def _bands(self, mins):
        """(documents, bands) uint64: each band's rows mixed into one bucket key."""
        import numpy as np

        out = np.empty(mins.shape[:2], dtype=np.uint64)
        with np.errstate(over="ignore"):
            for b in range(self.cfg.bands):
                z = np.full(len(mins), np.uint64(b + 1), dtype=np.uint64)
                for r in range(self.cfg.rows_per_band):
                    z = _mix(z * np.uint64(0x9E3779B97F4A7C15) + mins[:, b, r])
                out[:, b] = z
        return out

    def band_hashes(self):
        """(documents, bands) uint64 for the documents added since the last call; clears them."""
        import numpy as np

        self._flush_pending()
        done, self.done = self.done, []
        if not done:
            return np.empty((0, self.cfg.bands), dtype=np.uint64)
        return np.concatenate(done)

    def write(self, f) -> None:
        f.write(self.band_hashes().tobytes())


# --------------------------------------------------------------------------- merge


def near_duplicates(paths: list, counts: list[int], bands: int):
    """Boolean array over all documents (canonical order): True for each document whose cluster
    holds an earlier one. `paths[i]` holds unit i's (counts[i], bands) band hashes.

    One band column at a time: sort it, link every later member of a bucket to its first, and
    merge the links into the clusters found so far, so memory stays at a few arrays of one
    entry per document (~70 bytes per document at the peak) even when every band links every
    document (an all-identical corpus)."""
    import numpy as np

    total = sum(counts)
    label = np.arange(total)
    col = np.empty(total, dtype=np.uint64)
    for b in range(bands):
        pos = 0
        for path, n in zip(paths, counts):
            if n:
                m = np.memmap(path, dtype=np.uint64, mode="r", shape=(n, bands))
                col[pos:pos + n] = m[:, b]
                del m
            pos += n
        order = np.argsort(col, kind="stable")  # equal hashes keep canonical order
        s = col[order]
        starts = np.concatenate(([True], s[1:] != s[:-1])) if total else np.zeros(0, dtype=bool)
        del s
        first = np.maximum.accumulate(np.where(starts, np.arange(total), 0))
        members = ~starts
        # Link every later member of a bucket to its first (earliest) member.
        label = _components(total, order[members], order[first[members]], label)
        del order, starts, first, members
    return label != np.arange(total)


def _components(total: int, u, v, parent=None):
    """Each document's cluster label: the smallest document index it is linked to, transitively
    (through the links u[i] - v[i] and, when given, the clusters `parent` already holds: an
    earlier result of this function).

    Hook-and-shortcut connected components (Shiloach-Vishkin style): after full pointer jumping
    every document points at its tree's root; each link between two roots hooks the larger root
    under the smaller. Every root that still has a link merges in a round, so the number of
    trees with links at least halves per round: O(log documents) rounds whatever the order of
    the links. (Plain min-label propagation moves a label one link per round: a chain of
    200,000 edited copies in random order took 270 s; this takes well under a second.)
    """
    import numpy as np

    parent = np.arange(total) if parent is None else parent
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    while len(u):
        pu, pv = parent[u], parent[v]
        lo, hi = np.minimum(pu, pv), np.maximum(pu, pv)
        live = lo != hi
        if not live.any():
            break
        u, v, lo, hi = u[live], v[live], lo[live], hi[live]  # links inside one tree are done
        np.minimum.at(parent, hi, lo)  # hi is a root: it hooks under its smallest linked root
        while True:  # pointer jumping until every document points at a root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent
