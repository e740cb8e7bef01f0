"""Repetition and boilerplate filters for `mlmctl clean`: Gopher's repetition rules and FineWeb's line rules.

Two opt-in steps, registered in `mlmctl.cleaning.STEPS` (same shape as the steps there):

- `gopher_repetition` - Rae et al. 2021, "Scaling Language Models: Methods, Analysis &
  Insights from Training Gopher", Table A1 (https://arxiv.org/abs/2112.11446), as implemented
  by datatrove's `GopherRepetitionFilter`: duplicate lines and paragraphs (share of elements
  and of characters), the character share of the most frequent 2-, 3- and 4-gram, and of all
  duplicated 5- to 10-grams.
- `fineweb_quality` - Penedo et al. 2024, "The FineWeb Datasets"
  (https://arxiv.org/abs/2406.17557), datatrove's `FineWebQualityFilter`: share of lines ending
  in punctuation, share of short lines, characters in duplicated lines, newlines per word.

Every threshold is the published default and can be switched off with null; every rule has its
own drop reason. Script-aware through `mlmctl.scripts` (the one mechanism every clean filter
uses): words are space-separated runs; in a document mostly in a script written without spaces
(Chinese, Japanese, Thai) every such character is a word, so n-grams become character n-grams
rather than one "word" per paragraph; Thai documents skip the line-punctuation rule (Thai ends
a sentence with a space, not a stop).

The definitions are datatrove's (docs/clean.md, "Definitions, exactly", lists them and every
deliberate difference: whitespace words instead of nltk tokens, a top n-gram must repeat and is
measured without its inner spaces, FineWeb's lines are the non-empty ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from mlmctl.config import check
from mlmctl.scripts import profile, units

_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")
# Line-ending punctuation (FineWeb's terminal punctuation, with the CJK and Devanagari stops).
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "\u201d", "\u2019", "\u2026", ")", "\u3002", "\uff01", "\uff1f",
                        "\uff0e", "\u300d", "\u300f", "\u0964", "\u0965", "\u061f", "\u06d4")


def _duplicates(elements: list[str]) -> tuple[int, int]:
    """(elements that repeat an earlier one, their characters)."""
    seen: set[str] = set()
    count = chars = 0
    for e in elements:
        if e in seen:
            count += 1
            chars += len(e)
        else:
            seen.add(e)
    return count, chars


class _NGrams:
    """Exact n-gram identities of one document's words, as integer arrays (numpy).

    Word ids come from a dict; the id of an n-gram is the rank of the pair (its (n-1)-gram's id,
    its last word's id) among all such pairs, so equal ids mean equal word tuples - no hashing,
    no collisions - and each size costs one `np.unique` over the document instead of a
    Counter of word tuples (4-5x faster on ordinary documents, and ~40 bytes per word rather
    than a tuple per position on a 50 MB one). Sizes must be asked for in increasing order.
    """

    def __init__(self, words: list[str]) -> None:
        import numpy as np

        index: dict[str, int] = {}
        self.ids = np.fromiter((index.setdefault(w, len(index)) for w in words), dtype=np.int64, count=len(words))
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        self.ends = np.concatenate(([0], np.cumsum(lengths)))  # chars of words[i:j] = ends[j] - ends[i]
        self.n, self.gram = 1, self.ids
        self.distinct = False  # True once every self.n-gram occurs once: no longer one repeats either

    def size(self, n: int):
        """(ids of the n-grams at every position, their word characters), or None when there are
        too few words or no n-gram repeats (both measures are 0 then)."""
        import numpy as np

        count = len(self.ids) - n + 1
        if count < 1:
            return None
        while self.n < n and not self.distinct:
            self.n += 1
            pairs = self.gram[:len(self.ids) - self.n + 1] * (len(self.ids) + 1) + self.ids[self.n - 1:]
            self.gram = np.unique(pairs, return_inverse=True)[1].reshape(-1)
            self.distinct = int(self.gram.max()) + 1 == len(self.gram)
        if self.distinct:
            return None
        return self.gram, self.ends[n:n + count] - self.ends[:count]


def _top_ngram_chars(grams: _NGrams, n: int) -> int:
    """Characters (of its words) of all occurrences of the most frequent n-gram, when it repeats.
    Ties go to the n-gram seen first, as `Counter.most_common` (datatrove) breaks them."""
    import numpy as np

    got = grams.size(n)
    if got is None:
        return 0
    gram, chars = got
    _, first, counts = np.unique(gram, return_index=True, return_counts=True)
    top = counts.max()
    if top < 2:
        return 0
    return int(chars[first[counts == top].min()]) * int(top)


def _duplicated_ngram_chars(grams: _NGrams, n: int) -> int:
    """Characters in n-grams that repeat an earlier n-gram; a repeat's words are counted once
    (the scan jumps past it), as datatrove's `find_all_duplicate`.

    Only positions whose n-gram occurs more than once in the document can ever be a repeat, so
    the sequential scan visits just those (none, in most clean text): a position the scan steps
    on in between adds an n-gram that never comes back."""
    import numpy as np

    got = grams.size(n)
    if got is None:
        return 0
    gram, chars = got
    counts = np.bincount(gram)
    candidates = np.nonzero(counts[gram] > 1)[0]
    seen: set[int] = set()
    total = nxt = 0
    keys, sizes = gram[candidates].tolist(), chars[candidates].tolist()
    for pos, key, size in zip(candidates.tolist(), keys, sizes):
        if pos < nxt:
            continue  # inside a repeat the scan jumped over
        if key in seen:
            total += size
            nxt = pos + n
        else:
            seen.add(key)
            nxt = pos + 1
    return total


@dataclass
class GopherRepetitionConfig:
    """Settings of the `gopher_repetition` step (Gopher Table A1 defaults; null turns a rule off)."""

    max_duplicate_line_fraction: float | None = 0.3
    """Drop when more than this share of the lines repeat an earlier line (`duplicate_lines`)."""
    max_duplicate_paragraph_fraction: float | None = 0.3
    """Drop when more than this share of the paragraphs (blank-line separated) repeat an earlier one (`duplicate_paragraphs`)."""
    max_duplicate_line_char_fraction: float | None = 0.2
    """Drop when repeated lines hold more than this share of the characters (`duplicate_line_chars`)."""
    max_duplicate_paragraph_char_fraction: float | None = 0.2
    """Drop when repeated paragraphs hold more than this share of the characters (`duplicate_paragraph_chars`)."""
    max_top_ngram_char_fractions: list[float] = field(default_factory=lambda: [0.2, 0.18, 0.16])
    """For n = 2, 3, 4: drop when the most frequent n-gram covers more than this share of the characters (`top_2_gram` ...); [] turns it off."""
    max_duplicate_ngram_char_fractions: list[float] = field(default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10])
    """For n = 5 ... 10: drop when duplicated n-grams cover more than this share of the characters (`duplicate_5_grams` ...); [] turns it off."""

    def __post_init__(self) -> None:
        for key in ("max_duplicate_line_fraction", "max_duplicate_paragraph_fraction",
                    "max_duplicate_line_char_fraction", "max_duplicate_paragraph_char_fraction"):
            v = getattr(self, key)
            check(v is None or 0.0 <= v <= 1.0, key, f"must be between 0 and 1 or null, got {v}")
        for key, most in (("max_top_ngram_char_fractions", 3), ("max_duplicate_ngram_char_fractions", 6)):
            v = getattr(self, key)
            check(len(v) <= most, key, f"has {len(v)} entries; at most {most} (one per n-gram size)")
            check(all(0.0 <= x <= 1.0 for x in v), key, f"entries must be between 0 and 1, got {v}")


class GopherRepetition:
    """Gopher repetition rules: repeated lines, paragraphs and n-grams (Rae et al. 2021, Table A1)."""

    name: ClassVar[str] = "gopher_repetition"
    Config: ClassVar[type] = GopherRepetitionConfig

    def __init__(self, cfg=None) -> None:
        self.cfg = cfg if cfg is not None else GopherRepetitionConfig()

    def process(self, text: str) -> tuple[str, str | None]:
        return text, self.reason(text)

    def reason(self, text: str) -> str | None:
        c = self.cfg
        total = len(text)
        if not total:
            return None
        for parts, frac, char_frac, what in (
            (_PARAGRAPHS.split(text.strip()), c.max_duplicate_paragraph_fraction,
             c.max_duplicate_paragraph_char_fraction, "paragraph"),
            (_LINES.split(text), c.max_duplicate_line_fraction, c.max_duplicate_line_char_fraction, "line"),
        ):
            count, chars = _duplicates(parts)
            if frac is not None and count / len(parts) > frac:
                return f"duplicate_{what}s"
            if char_frac is not None and chars / total > char_frac:
                return f"duplicate_{what}_chars"
        if not (c.max_top_ngram_char_fractions or c.max_duplicate_ngram_char_fractions):
            return None
        grams = _NGrams(units(text))
        for n, frac in enumerate(c.max_top_ngram_char_fractions, start=2):
            if _top_ngram_chars(grams, n) / total > frac:
                return f"top_{n}_gram"
        for n, frac in enumerate(c.max_duplicate_ngram_char_fractions, start=5):
            if _duplicated_ngram_chars(grams, n) / total > frac:
                return f"duplicate_{n}_grams"
        return None


@dataclass
class FineWebQualityConfig:
    """Settings of the `fineweb_quality` step (FineWeb defaults; null turns a rule off)."""

    min_punctuated_line_fraction: float | None = 0.12
    """Drop when at most this share of the non-empty lines end in terminal punctuation (`line_punct_ratio`); not applied to Thai documents (no sentence stop)."""
    max_short_line_fraction: float | None = 0.67
    """Drop when at least this share of the non-empty lines are short (`short_line_ratio`)."""
    short_line_chars: int = 30
    """A line this many characters long or shorter is short."""
    max_duplicate_line_char_fraction: float | None = 0.01
    """Drop when repeated lines hold at least this share of the non-newline characters (`char_dup_ratio`)."""
    max_newlines_per_word: float | None = 0.3
    """Drop when there are more newlines than this per word - lists, menus (`list_ratio`)."""

    def __post_init__(self) -> None:
        for key in ("min_punctuated_line_fraction", "max_short_line_fraction", "max_duplicate_line_char_fraction"):
            v = getattr(self, key)
            check(v is None or 0.0 <= v <= 1.0, key, f"must be between 0 and 1 or null, got {v}")
        check(self.short_line_chars >= 0, "short_line_chars", f"must be >= 0, got {self.short_line_chars}")
        v = self.max_newlines_per_word
        check(v is None or v >= 0, "max_newlines_per_word", f"must be >= 0 or null, got {v}")


class FineWebQuality:
    """FineWeb's line-level rules: punctuated lines, short lines, duplicated line characters, list-likeness."""

    name: ClassVar[str] = "fineweb_quality"
    Config: ClassVar[type] = FineWebQualityConfig

    def __init__(self, cfg=None) -> None:
        self.cfg = cfg if cfg is not None else FineWebQualityConfig()

    def process(self, text: str) -> tuple[str, str | None]:
        return text, self.reason(text)

    def reason(self, text: str) -> str | None:
        c = self.cfg
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if not lines:
            return None  # the `empty` pseudo-step drops it
        if c.min_punctuated_line_fraction is not None and (text.isascii() or profile(text).line_punct):
            punct = sum(1 for ln in lines if ln.rstrip().endswith(TERMINAL_PUNCTUATION)) / len(lines)
            if punct <= c.min_punctuated_line_fraction:
                return "line_punct_ratio"
        if c.max_short_line_fraction is not None:
            short = sum(1 for ln in lines if len(ln) <= c.short_line_chars) / len(lines)
            if short >= c.max_short_line_fraction:
                return "short_line_ratio"
        if c.max_duplicate_line_char_fraction is not None:
            body = len(text) - text.count("\n")
            if body and _duplicates(lines)[1] / body >= c.max_duplicate_line_char_fraction:
                return "char_dup_ratio"
        if c.max_newlines_per_word is not None:
            words = units(text)
            if words and text.count("\n") / len(words) > c.max_newlines_per_word:
                return "list_ratio"
        return None
