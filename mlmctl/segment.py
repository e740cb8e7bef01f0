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
_HAN_CHAR = re.compile(f"[{_HAN}]")
_HAN_END = max(hi for _, hi in HAN_RANGES)
_HAN_TABLE = None  # numpy bool per code point up to _HAN_END (+1 for everything above), built on first use


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

    def mark(self, sentence: str, words: list[str]) -> str:
        """One sentence's output line: `mark_lines` for a single sentence."""
        return self.mark_lines([sentence], [words])[0]

    def mark_lines(self, sentences: list[str], words: list[list[str]]) -> list[str]:
        """Output lines for many sentences at once (a batch of documents): pre-tokens joined by
        spaces, or by WORD_JOINER between the Han characters of one word.

        One rjieba call for the whole batch and numpy on UTF-32 code points: a Python step per
        sentence, word or character cost 3-5x what rjieba itself takes (docs/benchmarks.md).
        """
        import numpy as np

        lines = [" ".join(w) for w in words]
        n = len(sentences)
        # Sentences joined by line breaks: jieba's Han blocks stop at a line break, so the batch
        # is cut exactly as each sentence alone (tests/test_zh_tokenize.py checks it).
        text = "\n".join(sentences)
        sent_sid = np.repeat(np.arange(n), [len(x) + 1 for x in sentences])
        sent_han = _is_han(_codepoints(text + "\n"))
        per_sentence = np.bincount(sent_sid[sent_han], minlength=n)
        if not per_sentence.any():
            return lines
        words_cut = self._jieba.cut(text, self._hmm)
        # NUL between words: a Han character continues a word exactly when the one before is Han.
        cut = _codepoints("\0".join(words_cut))
        assert len(cut) - len(words_cut) + 1 == len(text), "rjieba's words do not give the text back"
        cut_han = _is_han(cut)
        flags = (cut_han & np.concatenate(([False], cut_han[:-1])))[cut_han]  # one per Han character

        line = _codepoints("\n".join(lines) + "\n")  # lines never hold a line break (pretokenize)
        line_sid = np.repeat(np.arange(n), [len(x) + 1 for x in lines])
        line_han = _is_han(line)
        # The k-th Han character of a sentence is its line's k-th (one pre-token per Han character,
        # order kept); a sentence where the counts differ is written without joins and counted.
        active = per_sentence > 0
        aligned = active & (per_sentence == np.bincount(line_sid[line_han], minlength=n))
        self.unaligned += int(np.count_nonzero(active & ~aligned))
        flags = flags[aligned[sent_sid[sent_han]]]
        pos = np.flatnonzero(line_han & aligned[line_sid])
        # A continuation is joined only to the Han pre-token right before it (one space between).
        join = pos[1:][flags[1:] & (np.diff(pos) == 2)] - 1
        if not len(join):
            return lines
        line = line.copy()
        line[join] = ord(WORD_JOINER)
        return line[:-1].tobytes().decode("utf-32-le").split("\n")


def _codepoints(text: str):
    import numpy as np

    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _is_han(cps):
    """Boolean mask of the Han code points (scripts.HAN_RANGES, BERT's CJK ranges): one table lookup."""
    import numpy as np

    global _HAN_TABLE
    if _HAN_TABLE is None:
        table = np.zeros(_HAN_END + 2, dtype=bool)
        for lo, hi in HAN_RANGES:
            table[lo:hi + 1] = True
        _HAN_TABLE = table
    return _HAN_TABLE[np.minimum(cps, _HAN_END + 1)]


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
