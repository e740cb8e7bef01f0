"""Rule-based sentence splitter for English-like and CJK text (no NLTK, no download).

`split_sentences(text)` returns the sentences of one document, each stripped of
surrounding whitespace, in order, never empty. Rules, in the spirit of the Moses
and pySBD splitters but kept to what one regex pass and a few checks can do fast:

- A blank line (paragraph break) always ends a sentence; a single newline is a
  line wrap unless `newline_is_boundary=True`.
- Latin terminators `.` `!` `?` `…` (and runs like `?!`, `...`), optionally followed
  by closing quotes or brackets (`"`, `'`, `”`, `’`, `»`, `)`, `]`, `}`), end a
  sentence when whitespace (or a CJK character) follows and the next word does not
  start with a lower-case letter ("Wow!" she said. / e.g. the).
- A single `.` does not end a sentence after a known abbreviation (`Dr.`, `e.g.`,
  `vs.`, `Fig.`, ...), after a single letter (initials: `J. R. R. Tolkien`) or
  after a dotted acronym (`U.S.`, `a.m.`). Decimals (`3.14`) never split because
  no whitespace follows the dot.
- CJK terminators `。！？；` and the half/full-width forms `｡．！？；` end a
  sentence wherever they stand (no space is used between CJK sentences), together
  with any closing quotes or brackets after them (`」』”’）】》〉`).

Known limits (accepted for speed): an abbreviation-like word that really ends a
sentence ("... in the U.S. The next") does not split; Latin text that starts a
sentence in lower case is not split.
"""

from __future__ import annotations

import re

__all__ = ["split_sentences", "ABBREVIATIONS"]

# Lower-cased, without the final dot. Titles and Latin-ish shorthands that are
# almost never sentence-final; "etc." is deliberately absent (it often ends one).
ABBREVIATIONS = frozenset(
    """
    mr mrs ms mx dr prof sr jr st mt ft rev hon gen col lt capt sgt cmdr adm gov sen rep pres
    vs v e.g i.e cf viz al approx ca fig figs eq eqs no nos vol vols ch sec pp p ed eds
    jan feb mar apr jun jul aug sep sept oct nov dec inc ltd corp co dept univ est
    """.split()
)

_CLOSERS_LATIN = "\"'\u201d\u2019\u00bb)\\]}"
_CLOSERS_CJK = "\u300d\u300f\u201d\u2019\"'\uff09)\u3011\u300b\u3009\u3015\uff3d"
_CJK_TERMS = "\u3002\uff01\uff1f\uff1b\uff61\uff0e"  # 。！？；｡．
# CJK ideographs, kana, hangul and CJK punctuation: text that may follow a Latin
# terminator with no space in between ("你好!我很好").
_CJK_RANGE = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"

_LATIN_TERMS = ".!?\u2026"
# A candidate end: a run of CJK terminators (+ closers), or a run of Latin ones (+ closers) that
# whitespace or CJK text follows. The pattern starts with one character class so that the regex
# engine skips ahead to the next terminator in C (a leading alternation is tried at every
# position: twice the cost). The empty group `cjk` marks the CJK branch.
_CANDIDATE = re.compile(
    f"[{_CJK_TERMS}{_LATIN_TERMS}]"
    f"(?:(?<=[{_CJK_TERMS}])(?P<cjk>)[{_CJK_TERMS}]*[{_CLOSERS_CJK}]*"
    f"|[{_LATIN_TERMS}]*[{_CLOSERS_LATIN}]*(?=\\s|[{_CJK_RANGE}]))"
)
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n\s*")
_NEXT_WORD = re.compile(r"\s*(\S)")
_OPENERS = "\"'([{\u201c\u2018\u00ab"


def split_sentences(text: str, newline_is_boundary: bool = False) -> list[str]:
    """Split one document into stripped, non-empty sentences."""
    out: list[str] = []
    blocks = text.splitlines() if newline_is_boundary else _PARAGRAPH.split(text)
    for block in blocks:
        _split_block(block, out)
    return out


def _split_block(block: str, out: list[str]) -> None:
    start = 0
    for m in _CANDIDATE.finditer(block):
        end = m.end()
        if m.group("cjk") is None and not _latin_boundary(block, m):
            continue
        piece = block[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    piece = block[start:].strip()
    if piece:
        out.append(piece)


def _latin_boundary(block: str, m: re.Match) -> bool:
    nxt = _NEXT_WORD.match(block, m.end())
    if nxt is None:  # only whitespace follows: the block's end closes it anyway
        return False
    if nxt.group(1).islower():
        return False
    term = m.group().rstrip(_CLOSERS_LATIN)
    if term != ".":  # "!", "?", "...", "?!" followed by a capital or digit
        return True
    # The word before the dot; scanning back is bounded by that word's length,
    # so the whole pass stays linear in the text length.
    i = j = m.start()
    while j > 0 and not block[j - 1].isspace() and block[j - 1] not in _OPENERS:
        j -= 1
    word = block[j:i]
    if not word:
        return True
    low = word.lower()
    if low in ABBREVIATIONS:
        return False
    if len(word) == 1 and word.isalpha():  # an initial: "J. Smith"
        return False
    if "." in word and word[-1] != "." and not word.replace(".", "").isdigit():
        return False  # dotted acronym "U.S." / "a.m." (the candidate dot is the last one)
    return True
