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

Shingles: the document is lower-cased and split into word runs (`\\w+`, punctuation dropped);
a document mostly in a script written without spaces (Chinese, `mlmctl.scripts`) uses
character n-grams of its non-space characters instead. A document with fewer units than
`ngram` is one shingle. Hashes are seeded and pure functions of the text (CRC-32 per word,
a polynomial over the n-gram, splitmix64, multiply-shift MinHash), so signatures are the same
on every machine and in every process.

Memory: the read phase holds one batch (about 1 MB of text); the merge holds ~40 bytes per
document of the corpus for one band at a time plus the links found - bounded by the number of
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


def unit_hashes(text: str):
    """One uint64 per shingle unit: a word (CRC-32 of its UTF-8), or for Chinese a character."""
    import numpy as np

    low = text.lower()
    if not text.isascii() and script_stats(text).is_unspaced:
        chars = _SPACE.sub("", low)
        return np.frombuffer(chars.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    words = _WORD.findall(low)
    if not words:  # only punctuation: its characters are the units
        chars = _SPACE.sub("", low)
        return np.frombuffer(chars.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    data = [w.encode("utf-8", "surrogatepass") for w in words]
    return np.fromiter(map(zlib.crc32, data), dtype=np.uint64, count=len(data))


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


class MinHasher:
    """Band hashes of documents, computed in batches: `add(text)` each, then `write(f)`."""

    def __init__(self, cfg: NearDedupConfig) -> None:
        import numpy as np

        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        shape = (cfg.bands, cfg.rows_per_band)
        # Multiply-shift hashing (odd multiplier, top 32 bits): a universal family on uint64.
        self.a = rng.integers(1, 2**63, size=shape, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.integers(0, 2**63, size=shape, dtype=np.uint64)
        self.pending: list = []

    def add(self, text: str) -> None:
        self.pending.append(shingle_hashes(unit_hashes(text), self.cfg.ngram))

    def band_hashes(self):
        """(documents, bands) uint64 for the pending documents; clears them."""
        import numpy as np

        docs, self.pending = self.pending, []
        out = np.empty((len(docs), self.cfg.bands), dtype=np.uint64)
        if not docs:
            return out
        h = np.concatenate(docs)
        starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
        with np.errstate(over="ignore"):
            for b in range(self.cfg.bands):
                perm = (h[:, None] * self.a[b] + self.b[b]) >> np.uint64(32)  # (shingles, rows)
                mins = np.minimum.reduceat(perm, starts, axis=0)  # (documents, rows)
                z = np.full(len(docs), np.uint64(b + 1), dtype=np.uint64)
                for r in range(self.cfg.rows_per_band):
                    z = _mix(z * np.uint64(0x9E3779B97F4A7C15) + mins[:, r])
                out[:, b] = z
        return out

    def write(self, f) -> None:
        f.write(self.band_hashes().tobytes())


# --------------------------------------------------------------------------- merge


def near_duplicates(paths: list, counts: list[int], bands: int):
    """Boolean array over all documents (canonical order): True for each document whose cluster
    holds an earlier one. `paths[i]` holds unit i's (counts[i], bands) band hashes."""
    import numpy as np

    total = sum(counts)
    us, vs = [], []
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
        idx = np.arange(total)
        first = np.maximum.accumulate(np.where(starts, idx, 0))
        members = ~starts
        # Link every later member of a bucket to its first (earliest) member.
        us.append(order[members])
        vs.append(order[first[members]])
        del order, s, starts, idx, first, members
    u = np.concatenate(us) if us else np.zeros(0, dtype=np.int64)
    v = np.concatenate(vs) if vs else np.zeros(0, dtype=np.int64)
    return _components(total, u, v) != np.arange(total)


def _components(total: int, u, v):
    """Each document's cluster label: the smallest document index it is linked to, transitively
    (min-label propagation with pointer jumping; a few rounds for the clusters LSH finds)."""
    import numpy as np

    label = np.arange(total)
    while True:
        before = label.copy()
        np.minimum.at(label, u, label[v])
        np.minimum.at(label, v, label[u])
        label = label[label]
        if np.array_equal(label, before):
            return label
