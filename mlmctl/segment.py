"""Chinese word segmentation (分词) for `tokenize`: which Han characters belong to one word.

The vocabulary stays character-level for Han characters, as in BERT-Chinese: the BERT
pre-tokenizer makes each Han character its own pre-token. The segmenter (rjieba, the Rust port
of jieba; docs/tokenize.md has the comparison) only decides where words start, for
whole-word masking (BERT-wwm). `tokenize` writes a word's characters joined by U+2060 WORD
JOINER instead of a space (`pretokenize.WORD_JOINER`): "北⁠京 是 首⁠都" shows as "北京 是 首都"
in a terminal, the vocabulary trainer splits on both, and build-vocab's word-start flags
(`wstart.bin`) mark only the first character of each word.

    seg = Segmenter(SegmentConfig(kind="jieba"))
    seg.mark("北京是首都", ["北", "京", "是", "首", "都"]) -> "北\u2060京 是 首\u2060都"

A word's Han characters are joined only with each other: in "A股" the `a` and `股` stay
separate words, as in the BERT-wwm reference data (only Chinese characters get `##`).
Alignment: the k-th Han character of the sentence is the k-th single-Han-character pre-token
(BERT's normaliser changes neither their number nor their order); if a normaliser setting ever
breaks that, the sentence is written without joins and counted (`unsegmented_sentences`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlmctl.errors import InputError, MlmctlError
from mlmctl.pretokenize import WORD_JOINER
from mlmctl.scripts import HAN_RANGES

_HAN = "".join(f"{chr(a)}-{chr(b)}" for a, b in HAN_RANGES)
_HAN_RUN = re.compile(f"[{_HAN}]+")
_HAN_CHAR = re.compile(f"[{_HAN}]")


@dataclass
class SegmentConfig:
    """Chinese word segmentation: marks word starts for whole-word masking; the vocabulary stays per character."""

    kind: Literal["none", "jieba"] = "none"
    """`jieba`: segment Han text into words with rjieba (needs the `zh` extra) so whole-word masking masks whole Chinese words; `none`: every Han character is a word."""
    user_dict: str | None = None
    """A jieba user dictionary: one `word [frequency] [tag]` per line (UTF-8), for names and terms the built-in dictionary lacks."""
    hmm: bool = True
    """Let jieba's HMM join characters into words its dictionary does not have (jieba's default)."""


def segmenter_spec(cfg: SegmentConfig) -> dict | None:
    """What a worker needs to rebuild the segmenter (user dictionary read once, here), or None.

    Checks up front that rjieba is installed and the dictionary reads, so a bad setting fails
    before any work starts.
    """
    if cfg.kind == "none":
        return None
    _rjieba()
    words = _read_user_dict(cfg.user_dict) if cfg.user_dict else []
    digest = hashlib.sha256(repr(words).encode()).hexdigest()
    return {"kind": cfg.kind, "hmm": cfg.hmm, "user_words": words, "user_dict_sha256": digest}


class Segmenter:
    """rjieba with the user dictionary loaded; `mark` joins each word's Han characters."""

    def __init__(self, spec: dict) -> None:
        rjieba = _rjieba()
        self._jieba = rjieba.Jieba()  # its own instance: user words never leak between runs
        for word, freq, tag in spec["user_words"]:
            self._jieba.add_word(word, freq, tag)
        self._hmm = bool(spec["hmm"])
        self.unaligned = 0

    def continuations(self, sentence: str) -> list[bool]:
        """One flag per Han character of the sentence: True when it continues the previous one's word."""
        flags: list[bool] = []
        for word in self._jieba.cut(sentence, self._hmm):
            for run in _HAN_RUN.findall(word):
                flags.append(False)
                flags.extend([True] * (len(run) - 1))
        return flags

    def mark(self, sentence: str, words: list[str]) -> str:
        """The sentence's output line: pre-tokens joined by spaces, or WORD_JOINER inside a word."""
        line = " ".join(words)
        if not _HAN_CHAR.search(sentence):
            return line
        flags = self.continuations(sentence)
        # With one pre-token per Han character, the Han characters of the line are those pre-tokens.
        pos = [m.start() for m in _HAN_CHAR.finditer(line)]
        if len(pos) != len(flags):
            self.unaligned += 1
            return line
        chars = None
        for k in range(1, len(pos)):
            # A continuation is joined only to the Han pre-token right before it (one space between).
            if flags[k] and pos[k] - pos[k - 1] == 2:
                if chars is None:
                    chars = list(line)
                chars[pos[k] - 1] = WORD_JOINER
        return line if chars is None else "".join(chars)


def _rjieba():
    try:
        import rjieba
    except ImportError:
        raise MlmctlError("tokenize: `segment.kind: jieba` needs rjieba; install it with "
                          "`pip install 'mlmctl[zh]'` (or `pip install rjieba`)") from None
    return rjieba


def _read_user_dict(path_text: str) -> list[tuple[str, int | None, str | None]]:
    """jieba's user dictionary format: `word [frequency] [tag]`, blank lines and `#` comments skipped."""
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise InputError(f"tokenize: `segment.user_dict` {path} cannot be read ({e.strerror or e}); "
                         f"give an existing UTF-8 file") from None
    except UnicodeDecodeError:
        raise InputError(f"tokenize: `segment.user_dict` {path} is not UTF-8; save it as UTF-8") from None
    words = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        freq = tag = None
        rest = parts[1:]
        if rest and rest[0].isdigit():
            freq = int(rest.pop(0))
        if rest:
            tag = rest.pop(0)
        if rest:
            raise InputError(f"tokenize: {path}:{lineno}: expected `word [frequency] [tag]`, got {line.strip()!r}")
        words.append((parts[0], freq, tag))
    return words
