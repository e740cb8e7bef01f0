"""Clean steps for `mlmctl clean`: one small class per step, plus a name -> class registry.

Every step has a typed config dataclass (`Step.Config`) and a `process(text)` that
returns `(text, None)` to keep the (possibly changed) document or `(text, reason)` to
drop it - the datatrove `filter() -> (keep, reason)` idea, extended to transforms so one
loop runs both. `Pipeline` runs the configured steps in order and counts, per step,
how many documents it changed and how many documents and characters it dropped for
each reason.

Speed: each step works on whole documents with compiled regexes; most steps first run a
cheap test (`in`, `isascii()`, one regex search) and return the same string object when
there is nothing to do, so clean text costs little. No per-character Python loops.
Character removal and replacement use a regex character class with `sub` rather than
`str.translate`: CPython's translate looks every character up in a dict (about 20 MB/s),
while a character-class `sub` scans at several hundred MB/s and only touches the hits.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from typing import ClassVar, Literal

from mlmctl.config import check
from mlmctl.errors import MlmctlError
from mlmctl.scripts import PROFILES, han_chars, script_stats, syllabic_chars, units

# --------------------------------------------------------------------------- base


class Step:
    """A clean step. Subclasses set `name`, `Config` and implement `process`."""

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, cfg=None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()

    def process(self, text: str) -> tuple[str, str | None]:
        raise NotImplementedError


class Filter(Step):
    """A step that only keeps or drops: implement `filter(text) -> (keep, reason)`."""

    def filter(self, text: str) -> tuple[bool, str]:
        raise NotImplementedError

    def process(self, text: str) -> tuple[str, str | None]:
        keep, reason = self.filter(text)
        return text, None if keep else reason


# --------------------------------------------------------------------------- decode

# Invalid UTF-8 bytes arrive as lone surrogates (the readers decode with
# `surrogateescape`); a JSON `\ud800` escape gives one too. Neither can be written as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogates(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def replace_surrogates(text: str) -> str:
    """`text` as valid Unicode: every lone surrogate becomes U+FFFD."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


@dataclass
class DecodeConfig:
    """Settings of the `decode` step."""

    on_invalid: Literal["replace", "drop"] = "replace"
    """What to do with a document holding invalid UTF-8 (or lone surrogates): `replace` each bad byte with U+FFFD, or `drop` the document."""


class Decode(Step):
    """Make the text valid Unicode: replace or drop invalid UTF-8."""

    name = "decode"
    Config = DecodeConfig

    def process(self, text: str) -> tuple[str, str | None]:
        if not has_surrogates(text):
            return text, None
        if self.cfg.on_invalid == "drop":
            return text, "invalid_utf8"
        return replace_surrogates(text), None


# --------------------------------------------------------------------------- BOM


@dataclass
class RemoveBomConfig:
    """Settings of the `remove_bom` step."""

    leading_only: bool = False
    """Remove only a byte-order mark at the start of the document (default: every U+FEFF, e.g. from concatenated files)."""


class RemoveBom(Step):
    """Remove byte-order marks (U+FEFF)."""

    name = "remove_bom"
    Config = RemoveBomConfig

    def process(self, text: str) -> tuple[str, str | None]:
        if self.cfg.leading_only:
            return (text[1:] if text.startswith("\ufeff") else text), None
        return (text.replace("\ufeff", "") if "\ufeff" in text else text), None


# --------------------------------------------------------------------------- normalize


@dataclass
class NormalizeConfig:
    """Settings of the `normalize` step."""

    form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFC"
    """Unicode normalisation form: NFC composes accents (e + U+0301 -> é); NFKC also folds compatibility characters (ﬁ -> fi, full-width -> ASCII)."""


class Normalize(Step):
    """Unicode normalisation."""

    name = "normalize"
    Config = NormalizeConfig

    def process(self, text: str) -> tuple[str, str | None]:
        # is_normalized is a fast quick-check; it makes ASCII text nearly free.
        if unicodedata.is_normalized(self.cfg.form, text):
            return text, None
        return unicodedata.normalize(self.cfg.form, text), None


# --------------------------------------------------------------------------- characters

# C0/C1 controls except tab, newline and carriage return (whitespace repairs those).
_CONTROL = [c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)] + [0x7F] + list(range(0x80, 0xA0))
# Line-breaking controls and separators become newlines rather than vanishing.
_LINE_BREAKS = {0x0B: "\n", 0x0C: "\n", 0x85: "\n", 0x2028: "\n", 0x2029: "\n"}
# Invisible characters with no meaning in running text: zero-width space, word joiner,
# invisible math operators, Mongolian vowel separator, soft hyphen, BOM.
_ZERO_WIDTH = [0x200B, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0x180E, 0x00AD, 0xFEFF]
# Zero-width (non-)joiners carry meaning in Persian, Indic scripts and emoji sequences.
_JOINERS = [0x200C, 0x200D]
# Bidirectional marks, embeddings, overrides and isolates (also the "Trojan Source" set).
_BIDI = [0x200E, 0x200F, 0x061C] + list(range(0x202A, 0x202F)) + list(range(0x2066, 0x206A))


def _char_class(codes: list[int]) -> str:
    return "[" + "".join(re.escape(chr(c)) for c in sorted(codes)) + "]"


@dataclass
class RemoveCharsConfig:
    """Settings of the `remove_chars` step."""

    control: bool = True
    """Remove C0/C1 control characters (NUL included) except tab, newline and CR; vertical tab, form feed, NEL and U+2028/9 become newlines."""
    zero_width: bool = True
    """Remove zero-width and invisible characters: U+200B, U+2060-2064, U+180E, soft hyphen U+00AD, U+FEFF."""
    joiners: bool = False
    """Also remove the zero-width non-joiner and joiner (U+200C, U+200D); off because Persian, Indic scripts and emoji need them."""
    bidi: bool = True
    """Remove bidirectional control characters (U+200E/F, U+061C, U+202A-202E, U+2066-2069)."""


class RemoveChars(Step):
    """Remove control, zero-width and bidi characters; line-breaking controls become newlines."""

    name = "remove_chars"
    Config = RemoveCharsConfig

    def __init__(self, cfg=None) -> None:
        super().__init__(cfg)
        c = self.cfg
        remove: list[int] = []
        if c.control:
            remove += _CONTROL
        for on, codes in ((c.zero_width, _ZERO_WIDTH), (c.joiners, _JOINERS), (c.bidi, _BIDI)):
            if on:
                remove += codes
        remove = [code for code in remove if code not in _LINE_BREAKS]
        self._remove = re.compile(_char_class(remove)) if remove else None
        self._breaks = re.compile(_char_class(list(_LINE_BREAKS))) if c.control else None
        self._ascii = re.compile(_char_class([x for x in remove + list(_LINE_BREAKS) if x < 0x80] or [0]))

    def process(self, text: str) -> tuple[str, str | None]:
        if text.isascii() and (not self.cfg.control or self._ascii.search(text) is None):
            return text, None
        if self._remove is not None:
            text = self._remove.sub("", text)
        if self._breaks is not None:
            text = self._breaks.sub("\n", text)
        return text, None


# --------------------------------------------------------------------------- markup

_HTML_HINT = re.compile(
    r"<(?:/?(?:html|head|body|div|p|br|span|a|script|style|table|tr|td|th|li|ul|ol|h[1-6]|"
    r"title|meta|link|img|b|i|em|strong|pre|code|section|article|nav|header|footer|form|input)"
    r"\b[^<>]*|!--|!DOCTYPE\b)",
    re.IGNORECASE,
)
# `(?:</x\s*>|\Z)`: an unclosed <script> runs to the end, and the match stays linear.
_SCRIPT_STYLE = re.compile(
    r"<(script|style|noscript|template)\b[^>]*>.*?(?:</\1\s*>|\Z)", re.IGNORECASE | re.DOTALL
)
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)|<!\[CDATA\[.*?(?:\]\]>|\Z)|<![^>]*>|<\?[^>]*>", re.DOTALL)
_BLOCK_TAG = re.compile(
    r"</?(?:p|div|br|li|ul|ol|tr|table|h[1-6]|section|article|header|footer|nav|blockquote|pre|"
    r"hr|title|dt|dd|dl|figure|figcaption|main|aside|form|body|html|head)\b[^<>]*>",
    re.IGNORECASE,
)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>")


@dataclass
class StripMarkupConfig:
    """Settings of the `strip_markup` step."""

    only_if_html: bool = True
    """Touch a document only when it contains an HTML tag, comment or doctype, so text like `a <b and c> d` elsewhere survives."""
    drop_script_style: bool = True
    """Drop the content of <script>, <style>, <noscript> and <template> elements, not just their tags."""
    unescape_entities: bool = True
    """Turn character references (&amp; &lt; &#233;) into the characters they stand for."""


class StripMarkup(Step):
    """Strip HTML/XML markup: drop script/style content and comments, tags to text."""

    name = "strip_markup"
    Config = StripMarkupConfig

    def process(self, text: str) -> tuple[str, str | None]:
        c = self.cfg
        if "<" not in text or (c.only_if_html and _HTML_HINT.search(text) is None):
            return text, None
        if c.drop_script_style:
            text = _SCRIPT_STYLE.sub(" ", text)
        text = _COMMENT.sub(" ", text)
        text = _BLOCK_TAG.sub("\n", text)
        text = _TAG.sub("", text)
        if c.unescape_entities and "&" in text:
            text = html.unescape(text)
        return text, None


# --------------------------------------------------------------------------- URLs, e-mail

_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"'()\[\]{}]*[^\s<>\"'()\[\]{}.,;:!?]", re.IGNORECASE)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")


@dataclass
class UrlsConfig:
    """Settings of the `urls` step."""

    urls: Literal["keep", "mask", "remove"] = "mask"
    """URLs (http://, https://, ftp://, www.): keep them, replace each with `url_mask`, or remove them."""
    emails: Literal["keep", "mask", "remove"] = "mask"
    """E-mail addresses: keep them, replace each with `email_mask`, or remove them."""
    url_mask: str = "[URL]"
    """Replacement text for a masked URL."""
    email_mask: str = "[EMAIL]"
    """Replacement text for a masked e-mail address."""


class Urls(Step):
    """Mask or remove URLs and e-mail addresses."""

    name = "urls"
    Config = UrlsConfig

    def process(self, text: str) -> tuple[str, str | None]:
        c = self.cfg
        # The substring tests keep URL-free and address-free text off the regex engine.
        if c.urls != "keep" and ("://" in text or "www." in text or "WWW." in text):
            text = _URL.sub(c.url_mask if c.urls == "mask" else "", text)
        if c.emails != "keep" and "@" in text:
            text = _EMAIL.sub(c.email_mask if c.emails == "mask" else "", text)
        return text, None


# --------------------------------------------------------------------------- whitespace

# Unicode space separators (category Zs) other than the ASCII space.
_UNICODE_SPACE_RE = re.compile(_char_class([0xA0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000]))
_RUN_INNER = re.compile(r"(?<=\S)(?:\t|[ \t]{2,})")  # runs after a visible char: keeps indentation
_RUN_ANY = re.compile(r"\t|[ \t]{2,}")
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)
_SPACE_ONLY_LINE = re.compile(r"\n[ \t]+(?=\n)")


@dataclass
class WhitespaceConfig:
    """Settings of the `whitespace` step."""

    unicode_spaces: bool = True
    """Turn Unicode spaces (no-break space U+00A0, U+2000-200A, U+3000, ...) into ASCII spaces."""
    collapse_spaces: bool = True
    """Turn each run of spaces and tabs into one space."""
    keep_indentation: bool = True
    """With `collapse_spaces`, leave the spaces at the start of a line alone (code examples keep their shape)."""
    strip_trailing: bool = True
    """Remove spaces and tabs at the end of every line."""
    max_blank_lines: int = 1
    """Most consecutive empty lines kept (0 joins paragraphs into one block of lines)."""

    def __post_init__(self) -> None:
        check(self.max_blank_lines >= 0, "max_blank_lines", f"must be >= 0, got {self.max_blank_lines}")


class Whitespace(Step):
    """Repair whitespace: CRLF/CR to LF, space runs, trailing spaces, blank-line runs, ends."""

    name = "whitespace"
    Config = WhitespaceConfig

    def __init__(self, cfg=None) -> None:
        super().__init__(cfg)
        n = self.cfg.max_blank_lines
        self._blank_runs = re.compile("\n{%d,}" % (n + 2))
        self._blank_repl = "\n" * (n + 1)

    def process(self, text: str) -> tuple[str, str | None]:
        c = self.cfg
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if c.unicode_spaces and not text.isascii():
            text = _UNICODE_SPACE_RE.sub(" ", text)
        # The substring tests skip the regex for text that has no runs or trailing spaces.
        if c.collapse_spaces and ("  " in text or "\t" in text):
            text = (_RUN_INNER if c.keep_indentation else _RUN_ANY).sub(" ", text)
        if c.strip_trailing:
            if " \n" in text or "\t\n" in text:
                text = _TRAILING.sub("", text)
        elif "\n " in text or "\n\t" in text:
            # Lines holding only spaces are blank lines even without strip_trailing.
            text = _SPACE_ONLY_LINE.sub("\n", text)
        if "\n\n" in text:
            text = self._blank_runs.sub(self._blank_repl, text)
        return text.strip(), None


# --------------------------------------------------------------------------- filters


@dataclass
class LengthFilterConfig:
    """Settings of the `length_filter` step (words are runs of non-space characters).

    A document mostly in a script written without spaces - Chinese, Japanese, Thai
    (`mlmctl.scripts`: at least 30% of its letters) - is measured in characters:
    `min_chars_unspaced` replaces `min_chars` and `min_words`, and `max_words` counts each such
    character as a word (as BERT-Chinese's vocabulary does for Han).
    """

    min_chars: int | None = 20
    """Drop documents shorter than this many characters (null: no minimum)."""
    max_chars: int | None = 10_000_000
    """Drop documents longer than this many characters (null: no maximum)."""
    min_words: int | None = 5
    """Drop documents with fewer words (null: no minimum); not applied to unspaced-script documents (see `min_chars_unspaced`)."""
    max_words: int | None = None
    """Drop documents with more words (null: no maximum); in unspaced-script documents (Chinese, Japanese, Thai) each character counts as a word."""
    min_chars_unspaced: int | None = 2
    """Unspaced-script documents (Chinese, Japanese, Thai): drop those with fewer non-space characters than this (2 keeps UI strings like 确定; null: no minimum)."""

    def __post_init__(self) -> None:
        for key in ("min_chars", "max_chars", "min_words", "max_words", "min_chars_unspaced"):
            v = getattr(self, key)
            check(v is None or v >= 0, key, f"must be >= 0 or null, got {v}")


class LengthFilter(Filter):
    """Minimum and maximum length in characters and words (unspaced scripts: in characters)."""

    name = "length_filter"
    Config = LengthFilterConfig

    def filter(self, text: str) -> tuple[bool, str]:
        c = self.cfg
        n = len(text)
        if c.max_chars is not None and n > c.max_chars:
            return False, "too_many_chars"
        if not text.isascii() and script_stats(text).is_unspaced:
            return self._unspaced(text)
        if c.min_chars is not None and n < c.min_chars:
            return False, "too_few_chars"
        if c.min_words is not None or c.max_words is not None:
            words = len(split_words(text))
            if c.min_words is not None and words < c.min_words:
                return False, "too_few_words"
            if c.max_words is not None and words > c.max_words:
                return False, "too_many_words"
        return True, ""

    def _unspaced(self, text: str) -> tuple[bool, str]:
        c = self.cfg
        if c.min_chars_unspaced is not None and sum(map(len, split_words(text))) < c.min_chars_unspaced:
            return False, "too_few_chars"
        if c.max_words is not None and len(units(text)) > c.max_words:
            return False, "too_many_words"
        return True, ""


_ASCII_LETTERS = bytes(range(65, 91)) + bytes(range(97, 123))
_LETTERS_RE: re.Pattern | None = None


def _letters_re() -> re.Pattern:
    """Runs of letters and combining marks in any script (marks: Hindi vowel signs, accents)."""
    global _LETTERS_RE
    if _LETTERS_RE is None:
        _LETTERS_RE = re.compile(r"(?:[^\W\d_]|" + mark_class() + ")+")
    return _LETTERS_RE


_MARK_CLASS: str | None = None


def mark_class() -> str:
    """A regex character class of every combining mark (Unicode category M).

    `re` has no \\p{M}; the class is built from unicodedata once per process (~0.1 s), and only
    when a non-ASCII document needs it.
    """
    global _MARK_CLASS
    if _MARK_CLASS is None:
        _MARK_CLASS = _char_class([c for c in range(0x300, 0x110000) if unicodedata.category(chr(c))[0] == "M"])
    return _MARK_CLASS


def count_letters(text: str) -> int:
    """Letters (and combining marks) in text; ASCII text takes a fast bytes path."""
    if text.isascii():
        data = text.encode("ascii")
        return len(data) - len(data.translate(None, _ASCII_LETTERS))
    return sum(map(len, _letters_re().findall(text)))


_last_split: tuple[str, list[str]] = ("", [])


def split_words(text: str) -> list[str]:
    """`text.split()`, remembered for the last text: consecutive filters share one split."""
    global _last_split
    if _last_split[0] is not text:
        _last_split = (text, text.split())
    return _last_split[1]


# UTF-8 read as Latin-1/cp1252 ("ä½ å¥½" for 你好, "Ã©" for é): a lead byte (U+00C2-U+00EF)
# followed by a continuation byte (0x80-0xBF, or the character cp1252 puts there).
_CP1252_HIGH = "\u20ac\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u017d" \
               "\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u017e\u0178"
_MOJIBAKE_PAIR = re.compile(f"[\u00c2-\u00ef][\u0080-\u00bf{_CP1252_HIGH}]")
_LATIN1_HIGH = re.compile("[\u0080-\u00ff]")


def mojibake_fraction(text: str, non_space: int) -> float:
    """Share of the non-space characters that look like mis-decoded text.

    Counts U+FFFD and UTF-8-as-cp1252 pairs; a text that is mostly U+0080-U+00FF (GBK or Big5
    read as Latin-1: "ÄãºÃÊÀ½ç") counts whole. Real French, German or Portuguese stays far
    below 0.1: accented letters are rarely followed by a character in U+0080-U+00BF.
    """
    if text.isascii() or not non_space:
        return 0.0
    high = len(_LATIN1_HIGH.findall(text))
    if high >= 0.5 * non_space:
        return high / non_space
    return (text.count("\ufffd") + 2 * len(_MOJIBAKE_PAIR.findall(text))) / non_space


@dataclass
class QualityFilterConfig:
    """Settings of the `quality_filter` step: C4 / Gopher heuristics; null turns a check off.

    Script-aware (`mlmctl.scripts.PROFILES`, by the document's dominant script): a document
    in an unspaced script (Chinese, Japanese, Thai; see `length_filter`) skips the
    mean-word-length checks (it has no spaces to count words by) and measures `max_word_chars`
    on its other runs; Korean and Hindi skip `min_mean_word_chars` (short syllabic words). In
    `max_non_letter_fraction` each Han or kana character counts as two letters (it is a word
    or a syllable; UI strings such as 保存(&S)... stay).
    """

    max_non_letter_fraction: float | None = 0.5
    """Drop documents where more than this fraction of the non-space characters are not letters (tables of numbers, code dumps, symbol spam)."""
    max_line_chars: int | None = 100_000
    """Drop documents with a line longer than this many characters (minified or binary data)."""
    max_word_chars: int | None = 1000
    """Drop documents with a word longer than this many characters (base64, hashes glued together)."""
    min_mean_word_chars: float | None = 3.0
    """Drop documents whose mean word length is below this (Gopher: 3); not applied to Chinese, Japanese, Thai, Korean and Hindi documents."""
    max_mean_word_chars: float | None = 12.0
    """Drop documents whose mean word length is above this (Gopher uses 10; 12 leaves room for identifiers and German); not applied to Chinese, Japanese and Thai documents."""
    max_repeated_line_fraction: float | None = 0.3
    """Drop documents where more than this fraction of the non-empty lines repeat an earlier line (Gopher: 0.3)."""
    max_char_run: int | None = 16
    """Drop documents with a letter repeated this many times in a row (啊啊啊..., aaaa...; null: no check)."""
    max_mojibake_fraction: float | None = 0.1
    """Drop documents where more than this share of the non-space characters look mis-decoded (U+FFFD, UTF-8 read as Latin-1: 'ä½ å¥½')."""

    def __post_init__(self) -> None:
        for key in ("max_non_letter_fraction", "max_repeated_line_fraction", "max_mojibake_fraction"):
            v = getattr(self, key)
            check(v is None or 0.0 <= v <= 1.0, key, f"must be between 0 and 1, got {v}")
        for key in ("max_line_chars", "max_word_chars", "min_mean_word_chars", "max_mean_word_chars"):
            v = getattr(self, key)
            check(v is None or v >= 0, key, f"must be >= 0 or null, got {v}")
        lo, hi = self.min_mean_word_chars, self.max_mean_word_chars
        check(lo is None or hi is None or lo <= hi, "min_mean_word_chars", "is larger than `max_mean_word_chars`")
        check(self.max_char_run is None or self.max_char_run >= 2, "max_char_run",
              f"must be >= 2 or null, got {self.max_char_run}")


class QualityFilter(Filter):
    """Gopher/C4-style quality heuristics over characters, words and lines (script-aware)."""

    name = "quality_filter"
    Config = QualityFilterConfig

    def __init__(self, cfg=None) -> None:
        super().__init__(cfg)
        n = self.cfg.max_char_run
        self._run = re.compile(r"([^\W\d_])\1{%d,}" % (n - 1)) if n is not None else None

    def filter(self, text: str) -> tuple[bool, str]:
        c = self.cfg
        if c.max_line_chars is not None and len(text) > c.max_line_chars:
            # Only a document this long can hold a line this long; skip the split otherwise.
            if max(map(len, text.split("\n"))) > c.max_line_chars:
                return False, "line_too_long"
        words = split_words(text)
        if not words:
            return True, ""
        word_chars = sum(map(len, words))  # = non-space characters
        script = "latin" if text.isascii() else script_stats(text).dominant
        unspaced = PROFILES[script].unit == "char"
        ok, reason = (self._unspaced_words(text, words, word_chars) if unspaced
                      else self._words(script, words, word_chars))
        if not ok:
            return ok, reason
        if c.max_non_letter_fraction is not None:
            letters = count_letters(text) + (syllabic_chars(text) if unspaced else 0)
            if 1.0 - min(letters, word_chars) / word_chars > c.max_non_letter_fraction:
                return False, "non_letter_fraction"
        if self._run is not None and self._run.search(text) is not None:
            return False, "long_char_run"
        if c.max_mojibake_fraction is not None and mojibake_fraction(text, word_chars) > c.max_mojibake_fraction:
            return False, "mojibake"
        if c.max_repeated_line_fraction is not None and "\n" in text:
            lines = [ln for ln in text.split("\n") if ln.strip()]
            if lines and 1.0 - len(set(lines)) / len(lines) > c.max_repeated_line_fraction:
                return False, "repeated_lines"
        return True, ""

    def _words(self, script: str, words: list[str], word_chars: int) -> tuple[bool, str]:
        c, prof = self.cfg, PROFILES[script]
        # Only a document longer than the limit can hold such a word; most are shorter.
        if c.max_word_chars is not None and word_chars > c.max_word_chars and max(map(len, words)) > c.max_word_chars:
            return False, "word_too_long"
        mean = word_chars / len(words)
        if c.min_mean_word_chars is not None and prof.min_mean_word and mean < c.min_mean_word_chars:
            return False, "mean_word_too_short"
        if c.max_mean_word_chars is not None and prof.max_mean_word and mean > c.max_mean_word_chars:
            return False, "mean_word_too_long"
        return True, ""

    def _unspaced_words(self, text: str, words: list[str], word_chars: int) -> tuple[bool, str]:
        # Han, kana and Thai characters are words of their own here: a paragraph without spaces is not one long word.
        c = self.cfg
        if c.max_word_chars is not None and word_chars > c.max_word_chars:
            if max(map(len, units(text))) > c.max_word_chars:
                return False, "word_too_long"
        return True, ""


# --------------------------------------------------------------------------- Chinese script


@dataclass
class ZhConvertConfig:
    """Settings of the `zh_convert` step (needs the `zh` extra: pip install 'mlmctl[zh]')."""

    conversion: Literal["t2s", "s2t", "tw2s", "hk2s", "s2tw", "s2hk"] = "t2s"
    """OpenCC conversion: `t2s` traditional -> simplified (default), `s2t` the reverse, `tw2s`/`hk2s` from Taiwan/Hong Kong usage, `s2tw`/`s2hk` to it."""


class ZhConvert(Step):
    """Convert between traditional and simplified Chinese with OpenCC (phrase-level, not char by char)."""

    name = "zh_convert"
    Config = ZhConvertConfig

    def __init__(self, cfg=None) -> None:
        super().__init__(cfg)
        self._cc = opencc_converter(self.cfg.conversion)

    def process(self, text: str) -> tuple[str, str | None]:
        # Only text with Han characters can change; skip the converter for the rest.
        if text.isascii() or not han_chars(text):
            return text, None
        return self._cc.convert(text), None


def opencc_converter(conversion: str):
    """An OpenCC converter, or a one-line error naming what to install."""
    try:
        import opencc
    except ImportError:
        raise MlmctlError("clean: step `zh_convert` needs OpenCC; install it with "
                          "`pip install 'mlmctl[zh]'` (or `pip install opencc`)") from None
    return opencc.OpenCC(f"{conversion}.json")


def drop_warning(documents_in: int, documents_out: int, dropped: dict) -> str | None:
    """A warning line when a run dropped more than half of its documents, with the top reasons."""
    if documents_in == 0 or documents_out * 2 >= documents_in:
        return None
    reasons = [(v["documents"], f"{step}.{reason}") for step, rs in dropped.items() for reason, v in rs.items()]
    top = ", ".join(f"{name} {n:,}" for n, name in sorted(reasons, key=lambda r: (-r[0], r[1]))[:3])
    return (f"warning: kept only {documents_out:,} of {documents_in:,} documents; top drop reasons: {top} "
            f"(docs/clean.md lists the settings of each filter)")


# --------------------------------------------------------------------------- registry

# Steps kept in modules of their own (same shape: name, Config, process).
from mlmctl.near_dedup import NearDedup  # noqa: E402
from mlmctl.repetition import FineWebQuality, GopherRepetition  # noqa: E402

STEPS: dict[str, type[Step]] = {
    cls.name: cls
    for cls in (Decode, RemoveBom, Normalize, RemoveChars, StripMarkup, Urls, Whitespace, ZhConvert, LengthFilter,
                QualityFilter, GopherRepetition, FineWebQuality, NearDedup)
}
"""Step name (as written in `steps:`) -> step class. The clean config has one section per name."""

DEFAULT_STEPS = ["decode", "remove_bom", "normalize", "remove_chars", "urls", "whitespace", "length_filter", "quality_filter"]
"""The default order: strip_markup is opt-in (plain text with `<` in it must survive), zh_convert too."""

_ASCII_LETTER = re.compile("[A-Za-z]")

EMPTY = "empty"
"""Pseudo-step that drops documents left empty after all steps (always on)."""


class Pipeline:
    """The configured steps in order, with counters.

    `changed[step]`: documents the step modified; `dropped[step][reason]`:
    [documents, characters] it dropped (characters counted as the step saw them).
    Per dominant script (`mlmctl.scripts`, of the text as the last step saw it):
    `scripts[script]` = [documents, characters] in, and `script_dropped[script][step][reason]`
    as `dropped`. `last_script` is the script of the document `run` saw last.
    """

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.changed: dict[str, int] = {s.name: 0 for s in steps}
        self.dropped: dict[str, dict[str, list[int]]] = {}
        self.scripts: dict[str, list[int]] = {}
        self.script_dropped: dict[str, dict[str, dict[str, list[int]]]] = {}
        self.last_script = "none"

    def run(self, text: str) -> tuple[str, str | None, str | None]:
        """Clean one document: (text, None, None) if kept, else (text, step, reason)."""
        chars_in = len(text)
        for step in self.steps:
            new, reason = step.process(text)
            if reason is not None:
                self._drop(step.name, reason, text, chars_in)
                return text, step.name, reason
            if new is not text and new != text:
                self.changed[step.name] += 1
            text = new
        if not text.strip():
            self._drop(EMPTY, "empty", text, chars_in)
            return text, EMPTY, "empty"
        self._count(text, chars_in)
        return text, None, None

    def _count(self, text: str, chars_in: int) -> str:
        # ASCII: Latin if it holds a letter (found within the first characters, typically);
        # else script_stats, which remembers the last text, usually just measured by a filter.
        if text.isascii():
            script = "latin" if _ASCII_LETTER.search(text) is not None else "none"
        else:
            script = script_stats(text).dominant
        self.last_script = script
        slot = self.scripts.setdefault(script, [0, 0])
        slot[0] += 1
        slot[1] += chars_in
        return script

    def _drop(self, step: str, reason: str, text: str, chars_in: int) -> None:
        script = self._count(text, chars_in)
        for table in (self.dropped, self.script_dropped.setdefault(script, {})):
            slot = table.setdefault(step, {}).setdefault(reason, [0, 0])
            slot[0] += 1
            slot[1] += len(text)


def build_pipeline(names: list[str], configs: dict[str, object]) -> Pipeline:
    """Instantiate the steps named in `names` with their config sections."""
    return Pipeline([STEPS[n](configs.get(n)) for n in names])
