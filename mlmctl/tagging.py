"""Token-classification data (NER, POS): reading tagged files, aligning word tags to sub-words,
windows for long sentences, and merging window predictions back to words.

Two file layouts, optionally gzipped:

    CoNLL (.conll, .txt, .tsv ...)         JSONL (.jsonl)
    -DOCSTART- -X- O O                     {"tokens": ["EU", "rejects", "German"], "tags": ["B-ORG", "O", "B-MISC"]}
                                           {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]}
    EU NNP B-NP B-ORG
    rejects VBZ B-VP O
    German JJ B-NP B-MISC

    Peter NNP B-NP B-PER
    Blackburn NNP I-NP I-PER

    data = read_tagged("train.conll", scheme="iob2")          # tag_column=-1: the last column
    wins = make_windows(tokenizer, data.tokens, tag_ids, max_subwords=126)
    ids, labels = model_input(wins[0], cls_id, sep_id)       # labels: -100 except first sub-words
    words = merge_windows(wins, per_window_predictions, [len(s) for s in data.tokens])

CoNLL: columns split on whitespace, one token per line, a blank line between sentences; lines
starting `-DOCSTART-` are skipped (they also end a sentence). Every token line of a file must
have the same number of columns (the first one sets it). JSONL: one object per line, field
names configurable, `tokens` and `tags` lists of equal length.

Bad input is an `InputError` naming file and line: a tag outside the scheme (`E-PER` in IOB2),
an empty tag, a line with the wrong number of columns, unequal token and tag lists. A tag
sequence that is legal tag by tag but ill-formed as a sequence (`I-PER` after `O` in IOB2) is
kept as it is, counted in `TaggedData.ill_formed` with its first line, and starts no entity
under strict evaluation (see `mlmctl.seq_metrics`); `iob1_to_iob2` converts IOB1 files.

Sub-word alignment: the sentence's words go through the model's `tokenizers` Tokenizer as
pre-tokenized input (`is_pretokenized=True`, no special tokens); `Encoding.word_ids` says which
word each sub-word came from. The word's tag goes on its first sub-word and -100 (ignored by
the loss) on the others, as in HF's token-classification examples. A word that yields no
sub-word at all (a control character the normalizer removes) becomes `[UNK]`, so no tag is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlmctl.errors import InputError
from mlmctl.labelled import jsonl_objects, read_text_file
from mlmctl.seq_metrics import SCHEMES, split_tag

if TYPE_CHECKING:
    from tokenizers import Tokenizer

IGNORE = -100
"""The label of positions the loss ignores (PyTorch's cross-entropy default `ignore_index`)."""
DOCSTART = "-DOCSTART-"


@dataclass
class TaggedData:
    """The sentences of one tagged file, in file order."""

    path: str
    tokens: list[list[str]]
    tags: list[list[str]]
    lines: list[int]  # line of each sentence's first token (for messages)
    ill_formed: dict = field(default_factory=dict)  # {"count": n, "first": "file:line"} when any

    def __len__(self) -> int:
        return len(self.tokens)


def read_tagged(
    path: str | Path,
    *,
    scheme: str = "iob2",
    fmt: str = "auto",
    tag_column: int = -1,
    tokens_field: str = "tokens",
    tags_field: str = "tags",
) -> TaggedData:
    """Read a CoNLL or JSONL tagged file (`fmt` auto: .jsonl/.json is JSONL, anything else CoNLL).
    `scheme` is "iob2", "iobes" or "none" (any non-empty tag, e.g. POS tags; no entity checks)."""
    path = Path(path)
    if scheme not in (*SCHEMES, "none"):
        raise InputError(f"{path}: unknown tag scheme {scheme!r}; choose iob2, iobes or none")
    if not path.is_file():
        raise InputError(f"{path}: tagged file not found")
    name = path.name.lower().removesuffix(".gz")
    if fmt == "auto":
        fmt = "jsonl" if name.endswith((".jsonl", ".json")) else "conll"
    text = read_text_file(path)
    out = TaggedData(str(path), [], [], [])
    rows = _jsonl(path, text, tokens_field, tags_field) if fmt == "jsonl" else _conll(path, text, tag_column)
    for line_no, toks, tags in rows:
        for k, tag in enumerate(tags):
            _check_tag(path, line_no + (k if fmt == "conll" else 0), tag, scheme)
        if scheme != "none" and _ill_formed(tags, scheme):
            out.ill_formed.setdefault("first", f"{path}:{line_no}")
            out.ill_formed["count"] = out.ill_formed.get("count", 0) + 1
        out.tokens.append(toks)
        out.tags.append(tags)
        out.lines.append(line_no)
    if not out.tokens:
        raise InputError(f"{path}: no tagged sentences (empty file?)")
    return out


def _check_tag(path: Path, line_no: int, tag: str, scheme: str) -> None:
    if not tag.strip():
        raise InputError(f"{path}:{line_no}: empty tag; every token needs a tag (O for none)")
    if scheme != "none":
        try:
            split_tag(tag, scheme)
        except ValueError as e:
            raise InputError(f"{path}:{line_no}: {e}; fix the tag or set the scheme") from None


def _ill_formed(tags: list[str], scheme: str) -> bool:
    """True when an I-/E- tag continues nothing (strict evaluation gives it no entity)."""
    prev = ("O", "")
    for tag in tags:
        prefix, kind = split_tag(tag, scheme)
        if prefix in "IE" and not (prev[0] in "BI" and prev[1] == kind):
            return True
        prev = (prefix, kind)
    return False


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """IOB1 (an I-X starts an entity unless it follows X; B-X only between two X entities) to IOB2."""
    out = []
    for i, tag in enumerate(tags):
        if tag.startswith("I-"):
            prev = tags[i - 1] if i else "O"
            if prev == "O" or prev[2:] != tag[2:]:
                tag = "B-" + tag[2:]
        out.append(tag)
    return out


def _conll(path: Path, text: str, tag_column: int):
    width = 0
    toks: list[str] = []
    tags: list[str] = []
    start = 0
    # Lines at "\n" only, so line numbers match an editor's (splitlines() also breaks at U+2028,
    # U+0085, ...); a "\r" of CRLF is whitespace to split().
    for line_no, line in enumerate(text.split("\n"), 1):
        cols = line.split()
        if not cols or cols[0] == DOCSTART:
            if toks:
                yield start, toks, tags
            toks, tags = [], []
            continue
        width = width or len(cols)
        if len(cols) != width:
            raise InputError(
                f"{path}:{line_no}: {len(cols)} columns but the file's first token line has {width} "
                "(a missing tag, or a space inside a token?)"
            )
        if width < 2 or not -width <= tag_column < width or tag_column in (0, -width):
            raise InputError(
                f"{path}:{line_no}: tag_column {tag_column} is not a tag column of a {width}-column line "
                "(column 0 is the token); set `tag_column`"
            )
        if not toks:
            start = line_no
        toks.append(cols[0])
        tags.append(cols[tag_column])
    if toks:
        yield start, toks, tags


def _jsonl(path: Path, text: str, tokens_field: str, tags_field: str):
    expect = f"an object with `{tokens_field}` and `{tags_field}` lists"
    for line_no, obj in jsonl_objects(path, text, expect):
        if tokens_field not in obj or tags_field not in obj:
            raise InputError(f"{path}:{line_no}: expected {expect}")
        toks, tags = obj[tokens_field], obj[tags_field]
        for name, xs in ((tokens_field, toks), (tags_field, tags)):
            if not isinstance(xs, list) or not all(isinstance(x, str) for x in xs):
                raise InputError(f"{path}:{line_no}: `{name}` must be a list of strings")
        if len(toks) != len(tags):
            raise InputError(f"{path}:{line_no}: {len(toks)} tokens but {len(tags)} tags")
        if any(not t.strip() for t in toks):
            raise InputError(f"{path}:{line_no}: an empty token in `{tokens_field}`")
        if toks:
            yield line_no, toks, tags


def tag_list(tags: list[list[str]], explicit: list[str] | None = None) -> list[str]:
    """Tag order (id i = position i): `explicit` if given, else `O` first, then by type and prefix
    (B-LOC, I-LOC, B-PER, ...), so ids do not depend on file order."""
    seen = {t for sent in tags for t in sent}
    if explicit:
        missing = sorted(seen - set(explicit))
        if missing:
            raise InputError(f"tags {missing[:5]} occur in the training file but not in the configured `labels`")
        return list(explicit)
    return sorted(seen, key=lambda t: (t != "O", t.partition("-")[2], t))


# ----------------------------------------------------------------------------------------------
# Sub-word alignment and windows


@dataclass(frozen=True)
class Window:
    """Up to `max_subwords` sub-words of one sentence, never cutting a word in two."""

    sentence: int
    first_word: int  # index in the sentence of the window's first word
    ids: list[int]  # sub-word ids, no special tokens
    word_ids: list[int]  # word index (in the sentence) of each sub-word
    labels: list[int]  # tag id on each word's first sub-word, IGNORE elsewhere

    @property
    def n_words(self) -> int:
        return self.word_ids[-1] - self.first_word + 1 if self.word_ids else 0


def word_pieces(tok: Tokenizer, sentences: list[list[str]]) -> list[list[list[int]]]:
    """Per sentence, per word, its sub-word ids (`[UNK]` for a word that yields none)."""
    unk = tok.token_to_id("[UNK]")
    out = []
    for words, enc in zip(sentences, tok.encode_batch(sentences, is_pretokenized=True, add_special_tokens=False)):
        pieces: list[list[int]] = [[] for _ in words]
        for i, w in zip(enc.ids, enc.word_ids):
            if w is not None:
                pieces[w].append(i)
        for p in pieces:
            if not p:
                p.append(unk if unk is not None else 0)
        out.append(pieces)
    return out


def align_labels(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """Label of each sub-word: its word's label on the first sub-word of the word, IGNORE on
    the others and on special tokens (word id None)."""
    out, prev = [], None
    for w in word_ids:
        out.append(IGNORE if w is None or w == prev else word_labels[w])
        prev = w
    return out


def make_windows(
    tok: Tokenizer, sentences: list[list[str]], tag_ids: list[list[int]] | None, max_subwords: int
) -> list[Window]:
    """Cut each sentence into windows of at most `max_subwords` sub-words at word boundaries
    (for a model input of max_seq_len, max_subwords = max_seq_len - 2). A single word longer
    than that keeps only its first `max_subwords` pieces: its tag sits on the first, so every
    word keeps exactly one labelled position. `tag_ids` None (prediction) labels nothing."""
    if max_subwords < 1:
        raise ValueError(f"max_subwords must be >= 1, got {max_subwords}")
    out = []
    for s, pieces in enumerate(word_pieces(tok, sentences)):
        labels = tag_ids[s] if tag_ids is not None else [IGNORE] * len(pieces)
        ids: list[int] = []
        wids: list[int] = []
        first = 0
        for w, p in enumerate(pieces):
            p = p[:max_subwords]
            if ids and len(ids) + len(p) > max_subwords:
                out.append(_window(s, first, ids, wids, labels))
                ids, wids, first = [], [], w
            ids += p
            wids += [w] * len(p)
        if ids:
            out.append(_window(s, first, ids, wids, labels))
    return out


def _window(s: int, first: int, ids: list[int], wids: list[int], labels: list[int]) -> Window:
    return Window(s, first, ids, wids, align_labels(wids, labels))


def model_input(win: Window, cls_id: int, sep_id: int) -> tuple[list[int], list[int]]:
    """`[CLS] window [SEP]` ids and their labels (IGNORE on the special tokens)."""
    return [cls_id, *win.ids, sep_id], [IGNORE, *win.labels, IGNORE]


def merge_windows(windows: list[Window], predictions: list[list[int]], sentence_lengths: list[int]) -> list[list[int]]:
    """Word-level predictions per sentence from per-window predictions (one per sub-word of
    `window.ids`, special tokens excluded): each word takes its first sub-word's prediction.
    Windows do not overlap, so every word is predicted exactly once."""
    out: list[list[int | None]] = [[None] * n for n in sentence_lengths]
    for win, pred in zip(windows, predictions, strict=True):
        if len(pred) != len(win.ids):
            raise ValueError(f"window of sentence {win.sentence}: {len(win.ids)} sub-words, {len(pred)} predictions")
        prev = None
        for w, p in zip(win.word_ids, pred):
            if w != prev:
                out[win.sentence][w] = p
            prev = w
    for s, words in enumerate(out):
        if any(p is None for p in words):
            raise ValueError(f"sentence {s}: some words have no prediction (windows missing?)")
    return out  # type: ignore[return-value]
