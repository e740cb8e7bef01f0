"""Per-document script statistics: which writing systems a text uses, and how to measure it.

Word-based heuristics (C4, Gopher) assume words separated by spaces. Chinese has none: a
whole paragraph is one "word". `script_stats(text)` counts letters per script once per
document, and the clean filters measure a document whose letters are mostly from a script
written without spaces (`UNSPACED`) in characters instead of words.

To add a script (Japanese kana, Thai, Hangul, Cyrillic, ...): add its ranges to `SCRIPTS`
and, when it is written without spaces, its name to `UNSPACED`. Everything else (filters,
`units`, the docs' table) follows from these two tables.

    st = script_stats("我用 Python 写代码")
    st.counts["han"] -> 5, st.letters -> 11, st.unspaced_share -> 0.45, st.is_unspaced -> True

Also here: `join_unspaced(text)`, which removes the spaces a WordPiece decoder puts between
Han characters ("访 问 被 拒 绝" -> "访问被拒绝") and keeps those between Latin words.
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
}
"""Script name -> code-point ranges (inclusive). Letters outside every range count as `other`."""

UNSPACED = frozenset({"han"})
"""Scripts written without spaces between words: measured in characters, not words."""

UNSPACED_SHARE = 0.3
"""A document whose letters are at least this share from `UNSPACED` scripts is measured in
characters. 0.3 keeps mixed text such as "使用 Python 3.12 的 asyncio 模块" (45% Han) on the
character side and English with a Chinese name in it on the word side."""

# CJK punctuation and full-width forms: like Han, written without spaces around them.
_CJK_PUNCT_RANGES = ((0x3000, 0x303F), (0xFF00, 0xFFEF))


def _class(ranges) -> str:
    return "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


_SCRIPT_RE = {name: re.compile(f"[{_class(r)}]+") for name, r in SCRIPTS.items()}
_UNSPACED_RE = re.compile(f"[{_class(r for s in sorted(UNSPACED) for r in SCRIPTS[s])}]")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
_TIGHT = _class(tuple(r for s in sorted(UNSPACED) for r in SCRIPTS[s]) + _CJK_PUNCT_RANGES)
# A space with an unspaced-script character or CJK punctuation on both sides, or on one side
# with ASCII punctuation on the other ("觉得 , 十分" -> "觉得,十分"; "用 python 写" keeps its spaces).
_PUNCT = re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u201c\u201d\u2018\u2019")
_JOINABLE_SPACE = re.compile(f"(?<=[{_TIGHT}]) +(?=[{_TIGHT}{_PUNCT}])|(?<=[{_PUNCT}]) +(?=[{_TIGHT}])")


@dataclass(frozen=True)
class ScriptStats:
    """Letter counts of one document, per script in `SCRIPTS`."""

    letters: int
    """Letters in any script (`str.isalpha` runs; combining marks not included)."""
    counts: dict[str, int] = field(default_factory=dict)
    """Script name -> letters of that script."""

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
        st = ScriptStats(sum(map(len, _LETTER_RUN.findall(text))),
                         {name: sum(map(len, rx.findall(text))) for name, rx in _SCRIPT_RE.items()})
    _last = (text, st)
    return st


def unspaced_chars(text: str) -> int:
    """Characters of unspaced scripts (Han) in text."""
    return 0 if text.isascii() else len(_UNSPACED_RE.findall(text))


def units(text: str) -> list[str]:
    """Word-like units: each unspaced-script character is one, other text splits on spaces.

    "我用 Python 写代码" -> ["我", "用", "Python", "写", "代", "码"]: the units BERT-Chinese
    gives its model, and the ones length limits count for a character-measured document.
    """
    if text.isascii():
        return text.split()
    return _UNSPACED_RE.sub(lambda m: f" {m.group()} ", text).split()


def join_unspaced(text: str) -> str:
    """Remove spaces between Han characters (and CJK punctuation); keep them between Latin words."""
    if text.isascii():
        return text
    return _JOINABLE_SPACE.sub("", text)
