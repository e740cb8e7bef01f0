"""The normalizer + pre-tokenizer pipeline shared by `tokenize` and `build-vocab`.

Built from the `tokenizers` library's own objects so that the final `tokenizer.json`
applies exactly what `tokenize` applied. `tokenize` saves the pipeline as
`pretokenizer.json` (`{"normalizer": ..., "pre_tokenizer": ...}`, the same JSON that
`tokenizer.json` holds under those keys) and `build-vocab` splices it into the trained
tokenizer unchanged.

Format guarantee: a pre-token is never empty and never contains U+0020 (space) or a
line break, so `" ".join(words)` is one line that `line.split(" ")` takes back apart
exactly, and no line holds anything `str.splitlines()` would break at. The BERT pre-tokenizer drops whitespace; byte-level maps every byte to a
visible character (space -> `Ġ`, newline -> `Ċ`); metaspace only splits on spaces, so
its normalizer first turns every run of Unicode whitespace (and the separators
U+001C..U+001E) into one space and strips
the ends. `Pretokenizer.words` checks the guarantee on every sentence anyway and
raises rather than write a line that would read back differently.

Speed: for the BERT pipeline, a sentence made only of ASCII, Latin-1 letters, common typographic
punctuation and CJK ideographs is pre-tokenized by `_FastBert` (`str.lower`,
`unicodedata.normalize` and one regex, all in C) instead of the library's normalizer and
pre-tokenizer, whose per-character alignment bookkeeping costs ~0.7 s of CPU per MB. On those
characters the BERT normalizer reduces to "drop control characters, strip accents (NFD, drop the
combining marks), lower-case, space out CJK ideographs" and the pre-tokenizer to "split on
whitespace, isolate punctuation", so the words are the same by construction; a property test
compares the two for every combination of the settings. Every other sentence, and every other
pipeline, goes through `tokenizers`.

With Chinese word segmentation on (`mlmctl.segment`), the pre-tokens of one Chinese word are
joined by `WORD_JOINER` (U+2060) instead of a space; the BERT normaliser removes every
format character, so U+2060 never occurs inside a pre-token and `line.replace(WORD_JOINER, " ")`
gives the plain line back.

(Do not rename this module `tokenizers.py`: it would shadow the library.)
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mlmctl import safe_json
from mlmctl.errors import MlmctlError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["PretokenizerConfig", "pipeline_json", "Pretokenizer", "pipeline_tokenizer", "WORD_JOINER"]

WORD_JOINER = "\u2060"
"""Joins the pre-tokens of one segmented Chinese word in the line format (instead of a space)."""


@dataclass
class PretokenizerConfig:
    """How sentences become pre-tokens (words)."""

    kind: Literal["bert", "byte-level", "metaspace"] = "bert"
    """`bert` (whitespace + punctuation split, CJK characters split), `byte-level` (GPT-2/RoBERTa) or `metaspace` (SentencePiece-style `▁`)."""
    lowercase: bool = True
    """Lower-case the text (BERT "uncased")."""
    strip_accents: bool | None = None
    """Remove accents (NFD + drop combining marks); null follows `lowercase`, as BERT does."""
    split_cjk: bool = True
    """`bert` only: put spaces around every CJK ideograph so each becomes its own pre-token."""
    unicode_normalization: Literal["none", "nfc", "nfkc"] = "none"
    """Unicode normalisation applied first (`clean` usually did it already)."""
    add_prefix_space: bool = True
    """`byte-level` and `metaspace`: treat the sentence start like a word after a space (`Ġthe`, `▁the`)."""


def pipeline_json(cfg: PretokenizerConfig) -> dict:
    """`{"normalizer": ..., "pre_tokenizer": ...}` as `tokenizers` serialises them."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    steps = []
    if cfg.unicode_normalization == "nfc":
        steps.append(normalizers.NFC())
    elif cfg.unicode_normalization == "nfkc":
        steps.append(normalizers.NFKC())
    strip_accents = cfg.lowercase if cfg.strip_accents is None else cfg.strip_accents
    if cfg.kind == "bert":
        steps.append(
            normalizers.BertNormalizer(
                clean_text=True,
                handle_chinese_chars=cfg.split_cjk,
                strip_accents=strip_accents,
                lowercase=cfg.lowercase,
            )
        )
        pre = pre_tokenizers.BertPreTokenizer()
    else:
        # One space between words, none at the ends: metaspace would otherwise keep tabs and
        # newlines inside pre-tokens, and byte-level would turn line wraps into `Ċ` tokens.
        # \x1c-\x1e count as line breaks for Python's str.splitlines() but not as \s here.
        steps += [normalizers.Replace(Regex(r"[\s\x1c-\x1e]+"), " "), normalizers.Strip()]
        if strip_accents:
            steps += [normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC()]
        if cfg.lowercase:
            steps.append(normalizers.Lowercase())
        if cfg.kind == "byte-level":
            pre = pre_tokenizers.ByteLevel(add_prefix_space=cfg.add_prefix_space, use_regex=True)
        else:
            scheme = "always" if cfg.add_prefix_space else "never"
            pre = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=True)
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.normalizer = steps[0] if len(steps) == 1 else normalizers.Sequence(steps)
    tok.pre_tokenizer = pre
    full = safe_json.loads(tok.to_str())
    return {"kind": cfg.kind, "normalizer": full["normalizer"], "pre_tokenizer": full["pre_tokenizer"]}


def pipeline_tokenizer(pipeline: dict, model_json: dict | None = None) -> Tokenizer:
    """A `tokenizers.Tokenizer` with the saved normalizer + pre-tokenizer (and a model, if given)."""
    from tokenizers import Tokenizer

    model = model_json or {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"}
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": pipeline["normalizer"],
        "pre_tokenizer": pipeline["pre_tokenizer"],
        "post_processor": None,
        "decoder": None,
        "model": model,
    }
    try:
        return Tokenizer.from_str(json.dumps(doc))
    except Exception as e:  # tokenizers raises plain Exception subclasses for bad JSON
        raise MlmctlError(f"pretokenizer.json: not a valid normalizer/pre-tokenizer ({e}); rerun `mlmctl tokenize --force`") from None


# The BERT normalizer's clean_text drops NUL and every control character except \t \n \r (which
# become spaces); the BERT pre-tokenizer isolates each punctuation character (Rust
# `is_ascii_punctuation`, the four ASCII ranges below, or Unicode category P) and splits on
# whitespace; with handle_chinese_chars every CJK ideograph is a word of its own.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_PUNCT = r"!-/:-@\[-`{-~"
# Non-ASCII characters the fast path also takes, chosen because the BERT normalizer changes them
# only in ways Python's own str methods repeat exactly: Latin-1 letters (lower-case alike; NFD
# gives a base letter + U+0300..U+036F marks), common typographic punctuation (no decomposition,
# category P: – — ‘ ’ “ ” 、 。 「 」 『 』) and the main CJK ideograph block (no decomposition).
_LATIN1_LETTERS = "\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff"
_WIDE_PUNCT = "\u2013\u2014\u2018\u2019\u201c\u201d\u3001\u3002\u300c-\u300f"
_CJK = "\u4e00-\u9fff"
_COMBINING = re.compile("[\u0300-\u036f]")


class _FastBert:
    """The BERT normalizer + pre-tokenizer for sentences of the characters above, in C-speed str methods.

    `words(sentence)` gives the library's words, or None when the sentence holds any other
    character (then the library does it). Equality with the library is property-tested over
    every combination of the settings.
    """

    def __init__(self, lowercase: bool, strip_accents: bool, cjk: bool):
        self.lowercase, self.strip_accents = lowercase, strip_accents
        punct = _ASCII_PUNCT + _WIDE_PUNCT
        self.other = re.compile(f"[^\\x00-\\x7f{_LATIN1_LETTERS}{_WIDE_PUNCT}{_CJK if cjk else ''}]")
        single = f"[{punct}{_CJK}]" if cjk else f"[{punct}]"
        run = f"[^\\s{punct}{_CJK}]+" if cjk else f"[^\\s{punct}]+"
        self.word = re.compile(f"{run}|{single}")

    def covers(self, sentence: str) -> bool:
        return sentence.isascii() or not self.other.search(sentence)

    def words(self, sentence: str) -> list[str] | None:
        if not self.covers(sentence):
            return None
        return self.word.findall(self._normalize(sentence))

    def _normalize(self, text: str) -> str:
        if not text.isascii() and self.strip_accents:
            text = _COMBINING.sub("", unicodedata.normalize("NFD", text))
        # A regex, not str.translate: translate is fast on one-byte strings only.
        text = _CONTROLS.sub("", text)
        return text.lower() if self.lowercase else text


def _fast_bert(pipeline: dict) -> _FastBert | None:
    """The fast path for a pipeline it reproduces exactly, else None."""
    if pipeline["pre_tokenizer"].get("type") != "BertPreTokenizer":
        return None
    norm = pipeline["normalizer"] or {}
    steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm]
    # NFC/NFKC leave the fast path's characters unchanged; anything else takes the library path.
    if not steps or any(n.get("type") not in ("NFC", "NFKC") for n in steps[:-1]):
        return None
    bert = steps[-1]
    if bert.get("type") != "BertNormalizer" or bert.get("clean_text") is not True:
        return None
    lowercase = bool(bert.get("lowercase"))
    strip = bert.get("strip_accents")
    return _FastBert(lowercase, lowercase if strip is None else bool(strip), bool(bert.get("handle_chinese_chars")))


class Pretokenizer:
    """Applies a saved pipeline to sentences: `words(sentence) -> list[str]`."""

    def __init__(self, pipeline: dict):
        tok = pipeline_tokenizer(pipeline)
        self.normalizer = tok.normalizer
        self.pre_tokenizer = tok.pre_tokenizer
        pre = pipeline["pre_tokenizer"]
        # Whether pre-tokenizing sentences joined by one space gives each sentence's own words:
        # true when a space always separates words and a sentence start already behaves like a
        # word after a space (BERT: whitespace split; byte-level/metaspace: with the prefix space).
        self.joinable = pre.get("type") == "BertPreTokenizer" or (
            pre.get("type") == "ByteLevel" and pre.get("add_prefix_space") is True
        ) or (pre.get("type") == "Metaspace" and pre.get("prepend_scheme") == "always")
        self.fast = _fast_bert(pipeline)

    def words(self, sentence: str) -> list[str]:
        text = self.normalizer.normalize_str(sentence) if self.normalizer is not None else sentence
        words = [w for w, _ in self.pre_tokenizer.pre_tokenize_str(text)]
        _check_line(words, sentence)
        return words

    def sentence_words(self, sentences: list[str]) -> list[list[str]]:
        """`[self.words(s) for s in sentences]`, with one pre-tokenizer call per document.

        Sentences the BERT fast path covers take it (see the module docstring). For
        the others, each sentence is normalized on its own (exactly as `words` does), the results are joined
        by single spaces and pre-tokenized once, and every word goes back to the sentence its
        offsets fall in. Per-call overhead dominates short sentences, so this is ~1.5x faster;
        a word straddling two sentences (impossible for the joinable pipelines) falls back to
        the sentence-by-sentence path rather than be assigned wrongly.
        """
        if self.fast is None:
            return self._library_sentence_words(sentences)
        out = [self.fast.words(s) for s in sentences]
        rest = [i for i, words in enumerate(out) if words is None]
        if rest:
            for i, words in zip(rest, self._library_sentence_words([sentences[i] for i in rest])):
                out[i] = words
        return out

    def _library_sentence_words(self, sentences: list[str]) -> list[list[str]]:
        if not self.joinable or len(sentences) < 2:
            return [self.words(s) for s in sentences]
        norm = self.normalizer
        texts = [norm.normalize_str(s) for s in sentences] if norm is not None else list(sentences)
        keep = [i for i, t in enumerate(texts) if t.strip()]  # an empty one would leave two spaces
        out: list[list[str]] = [[] for _ in sentences]
        if not keep:
            return out
        ends, pos = [], -1
        for i in keep:
            pos += 1 + len(texts[i])
            ends.append(pos)  # offset of the separator after sentence i (one past its end)
        k = 0
        for word, (start, stop) in self.pre_tokenizer.pre_tokenize_str(" ".join(texts[i] for i in keep)):
            while start >= ends[k]:
                k += 1
            if stop > ends[k]:
                return [self.words(s) for s in sentences]
            out[keep[k]].append(word)
        for words, sentence in zip(out, sentences):
            _check_line(words, sentence)
        return out


def _check_line(words: list[str], sentence: str) -> None:
    """The line-format guarantee (see module docstring), checked with one join and two scans."""
    if not words:
        return
    line = " ".join(words)
    if "" in words or line.count(" ") != len(words) - 1 or len(line.splitlines()) != 1:
        raise MlmctlError(
            f"tokenize: the pre-tokenizer produced a word with a space or line break in "
            f"{sentence[:60]!r}; this pipeline cannot be stored one sentence per line"
        )
