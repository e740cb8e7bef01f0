"""Per-document script statistics: which writing systems a text uses, and how to measure it.

Word-based heuristics (C4, Gopher, FineWeb) assume English: words separated by spaces, 3-10
letters long, sentences ending in `.`. Chinese, Japanese and Thai have no spaces (a whole
paragraph is one "word"); Korean and Hindi words are short syllable clusters; Thai ends
sentences with a space, not a stop. `script_stats(text)` counts letters per script once per
document and names its **dominant script**; `PROFILES` says, per dominant script, which unit
the filters count in and which English-tuned rules do not apply. One mechanism for every
script: the clean filters (`mlmctl.cleaning`, `mlmctl.repetition`) and near-dedup's shingles
(`mlmctl.near_dedup`) ask `script_stats(text)` / `profile(text)` and nothing else.

    st = script_stats("我用 Python 写代码")
    st.counts["han"] -> 5, st.letters -> 11, st.unspaced_share -> 0.45, st.is_unspaced -> True
    st.dominant -> "han";  script_stats("Привет, мир").dominant -> "cyrillic"
    profile("สวัสดีครับ") -> Profile(unit="char", min_mean_word=False, ..., line_punct=False)

To add a script: add its ranges to `SCRIPTS`; if it is written without spaces, its name to
`UNSPACED`; give its dominant name a row in `PROFILES` (and in docs/clean.md's table).

Also here: `join_unspaced(text)`, which removes the spaces a WordPiece decoder puts between
Han (and kana) characters ("访 问 被 拒 绝" -> "访问被拒绝") and keeps those between Latin words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Han ideographs exactly as BERT's `_is_chinese_char` (and `tokenizers`' BertNormalizer with
# `handle_chinese_chars`) defines them: each of these becomes its own pre-token.
HAN_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)

SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "han": HAN_RANGES,
    "latin": ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F)),
    # Kana blocks, the half-width katakana, and 々 (the kanji repetition mark).
    "hiragana": ((0x3040, 0x309F),),
    "katakana": ((0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9D), (0x3005, 0x3005)),
    "hangul": ((0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F)),
    "thai": ((0x0E01, 0x0E4E),),
    "cyrillic": ((0x0400, 0x052F),),
    "greek": ((0x0370, 0x03FF), (0x1F00, 0x1FFF)),
    "arabic": ((0x0620, 0x065F), (0x066E, 0x06D3), (0x06D5, 0x06EF), (0x06FA, 0x06FF), (0x0750, 0x077F),
               (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "devanagari": ((0x0900, 0x0963), (0x0970, 0x097F), (0xA8E0, 0xA8FF)),
}
"""Script name -> code-point ranges (inclusive; combining marks of the script included, its
punctuation not). Letters outside every range count as `other`."""

UNSPACED = frozenset({"han", "hiragana", "katakana", "thai"})
"""Scripts written without spaces between words: measured in characters, not words."""

UNSPACED_SHARE = 0.3
"""A document whose letters are at least this share from `UNSPACED` scripts is measured in
characters. 0.3 keeps mixed text such as "使用 Python 3.12 的 asyncio 模块" (45% Han) on the
character side and English with a Chinese name in it on the word side."""

KANA_SHARE = 0.1
"""An unspaced document is Japanese (`japanese`) when at least this share of its Han + kana
letters are kana; Chinese text has none, Japanese prose 40-70%."""


@dataclass(frozen=True)
class Profile:
    """How the clean filters measure a document of one dominant script."""

    unit: str
    """`word`: space-separated runs; `char`: every letter of an unspaced script is a unit (a
    Thai letter with its vowel and tone marks is one), other text splits on spaces."""
    min_mean_word: bool = True
    """Whether `quality_filter.min_mean_word_chars` (Gopher: 3, English) applies."""
    max_mean_word: bool = True
    """Whether `quality_filter.max_mean_word_chars` applies."""
    line_punct: bool = True
    """Whether `fineweb_quality.min_punctuated_line_fraction` applies (the script ends sentences with a stop)."""
    why: str = ""
    """Why rules are skipped (docs/clean.md's table repeats it)."""


_SPACED = Profile("word")
_UNSPACED_PROFILE = Profile("char", min_mean_word=False, max_mean_word=False,
                            why="no spaces between words: a paragraph would be one long word")
PROFILES: dict[str, Profile] = {
    "latin": _SPACED,
    "cyrillic": _SPACED,
    "greek": _SPACED,
    "arabic": _SPACED,
    "devanagari": Profile("word", min_mean_word=False,
                          why="short syllabic words (है, का, में: 2 code points) pull the mean below 3"),
    "hangul": Profile("word", min_mean_word=False,
                      why="a word (eojeol) is 2-4 syllable blocks, each one character: the mean sits near 3"),
    "han": _UNSPACED_PROFILE,
    "japanese": _UNSPACED_PROFILE,
    "thai": Profile("char", min_mean_word=False, max_mean_word=False, line_punct=False,
                    why="no spaces between words, and a sentence ends with a space, not a stop"),
    "other": _SPACED,
    "none": _SPACED,
}
"""Dominant script -> Profile. `other`: letters of none of `SCRIPTS` dominate (Hebrew, Tamil,
...: measured like English); `none`: no letters at all."""

DOMINANT = tuple(PROFILES)
"""Every dominant-script name, in a fixed order (their index is stored per document by clean)."""

# CJK punctuation and full-width forms: like Han, written without spaces around them.
_CJK_PUNCT_RANGES = ((0x3000, 0x303F), (0xFF00, 0xFFEF))
# Thai vowel signs and tone marks above/below a consonant: part of the consonant's unit.
_THAI_MARKS = ((0x0E31, 0x0E31), (0x0E34, 0x0E3A), (0x0E47, 0x0E4E))
_JOINED = ("han", "hiragana", "katakana")  # scripts whose WordPiece spaces join_unspaced removes


def _class(ranges) -> str:
    return "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


def _ranges(names) -> tuple[tuple[int, int], ...]:
    return tuple(r for s in sorted(names) for r in SCRIPTS[s])


_NAMES = tuple(SCRIPTS)
# Every range of SCRIPTS as [start, end + 1) edges, sorted (the ranges do not overlap): a code
# point's `searchsorted` position is odd inside range (position - 1) // 2, even outside all.
_SORTED = sorted((a, b, _NAMES.index(name)) for name, rs in SCRIPTS.items() for a, b in rs)
_EDGES = [x for a, b, _ in _SORTED for x in (a, b + 1)]
_RANGE_SCRIPT = [i for _, _, i in _SORTED]
assert all(x <= y for x, y in zip(_EDGES, _EDGES[1:])), "SCRIPTS ranges must not overlap"  # adjacent is fine
_UNSPACED_RE = re.compile(f"[{_class(_ranges(UNSPACED))}][{_class(_THAI_MARKS)}]*")
_HAN_RE = re.compile(f"[{_class(HAN_RANGES)}]")
_SYLLABIC_RE = re.compile(f"[{_class(_ranges(_JOINED))}]")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
_TIGHT = _class(_ranges(_JOINED) + _CJK_PUNCT_RANGES)
# A space with a Han/kana character or CJK punctuation on both sides, or on one side
# with ASCII punctuation on the other ("觉得 , 十分" -> "觉得,十分"; "用 python 写" keeps its spaces).
_PUNCT = re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u201c\u201d\u2018\u2019")
_JOINABLE_SPACE = re.compile(f"(?<=[{_TIGHT}]) +(?=[{_TIGHT}{_PUNCT}])|(?<=[{_PUNCT}]) +(?=[{_TIGHT}])")


@dataclass(frozen=True)
class ScriptStats:
    """Letter counts of one document, per script in `SCRIPTS`."""

    letters: int
    """Letters in any script (`str.isalpha` runs; combining marks not included)."""
    counts: dict[str, int] = field(default_factory=dict)
    """Script name -> characters of that script (its combining marks included)."""

    @property
    def unspaced(self) -> int:
        return sum(self.counts.get(s, 0) for s in UNSPACED)

    @property
    def unspaced_share(self) -> float:
        return self.unspaced / self.letters if self.letters else 0.0

    @property
    def is_unspaced(self) -> bool:
        """Whether the document is measured in characters (see `UNSPACED_SHARE`)."""
        return self.letters > 0 and self.unspaced_share >= UNSPACED_SHARE

    @property
    def dominant(self) -> str:
        """The document's script for the filters: a name in `PROFILES`.

        Unspaced documents (`is_unspaced`) are `japanese` (with kana, see `KANA_SHARE`), `thai`
        or `han`, whatever else they mix in; the others take the spaced script with the most
        letters, `other` when those are under half the letters, `none` without letters.
        """
        c = self.counts
        if not self.letters:
            return "none"
        if self.is_unspaced:
            kana = c.get("hiragana", 0) + c.get("katakana", 0)
            if kana and kana >= KANA_SHARE * (kana + c.get("han", 0)):
                return "japanese"
            return "thai" if c.get("thai", 0) > c.get("han", 0) else "han"
        spaced = [(n, s) for s, n in c.items() if s not in UNSPACED and n]
        if not spaced:
            return "other"
        n, name = max(spaced)
        return name if 2 * n >= self.letters else "other"


_ASCII_LETTERS = bytes(range(65, 91)) + bytes(range(97, 123))
_last: tuple[str, ScriptStats | None] = ("", None)


def script_stats(text: str) -> ScriptStats:
    """Letter counts per script, remembered for the last text (consecutive filters share it)."""
    global _last
    if _last[0] is text and _last[1] is not None:
        return _last[1]
    if text.isascii():
        data = text.encode("ascii")
        n = len(data) - len(data.translate(None, _ASCII_LETTERS))
        st = ScriptStats(n, {"latin": n})
    else:
        st = ScriptStats(sum(map(len, _LETTER_RUN.findall(text))), _script_counts(text))
    _last = (text, st)
    return st


def _script_counts(text: str) -> dict[str, int]:
    """Characters per script in one pass: a table lookup of every code point (numpy), ~10x
    faster than one regex scan per script on short documents."""
    import numpy as np

    global _EDGES, _RANGE_SCRIPT
    if isinstance(_EDGES, list):  # numpy only once a non-ASCII text needs it
        _EDGES = np.array(_EDGES, dtype=np.uint32)
        _RANGE_SCRIPT = np.array(_RANGE_SCRIPT, dtype=np.intp)
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    pos = np.searchsorted(_EDGES, cps, side="right")
    per_range = np.bincount(pos[pos & 1 == 1] >> 1, minlength=len(_RANGE_SCRIPT))
    per_script = np.bincount(_RANGE_SCRIPT, weights=per_range, minlength=len(_NAMES))
    return {name: int(n) for name, n in zip(_NAMES, per_script)}


def profile(text: str) -> Profile:
    """How the filters measure text: the `PROFILES` row of its dominant script."""
    return PROFILES[script_stats(text).dominant]


def han_chars(text: str) -> int:
    """Han characters in text."""
    return 0 if text.isascii() else len(_HAN_RE.findall(text))


def syllabic_chars(text: str) -> int:
    """Han and kana characters in text: each one a word or a syllable, not a letter of a word."""
    return 0 if text.isascii() else len(_SYLLABIC_RE.findall(text))


def units(text: str) -> list[str]:
    """Word-like units: each unspaced-script character is one, other text splits on spaces.

    "我用 Python 写代码" -> ["我", "用", "Python", "写", "代", "码"]: the units BERT-Chinese
    gives its model, and the ones length limits and n-gram rules count for a
    character-measured document. A Thai consonant keeps its vowel and tone marks ("ที่" is one).
    """
    if text.isascii():
        return text.split()
    return _UNSPACED_RE.sub(lambda m: f" {m.group()} ", text).split()


def join_unspaced(text: str) -> str:
    """Remove spaces between Han/kana characters (and CJK punctuation); keep them between Latin words."""
    if text.isascii():
        return text
    return _JOINABLE_SPACE.sub("", text)
