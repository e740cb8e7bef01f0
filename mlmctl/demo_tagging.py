"""demo-task `kind: tagging`: find the code in a docstring whose code markup was removed.

Docstrings mark identifiers and literals as code: ``json.dumps``, `key`, :func:`open`. The task
keeps the words and drops the markup (backticks and the reST role), then tags the words that were
code `B-CODE` / `I-CODE` and the rest `O`: the model has to tell from the words around them, and
from what identifiers look like, where the code is. Scored with entity-level F1 (IOB2, strict).
Docstrings are uneven about markup (`True` is marked in one, plain in the next), so no tagger can be
perfect: the point is pretrained vs random init on the same words.

Words: runs of word characters, and each other non-space character on its own (`json.dumps()`
is `json . dumps ( )`), so every word survives the model's BERT-style pre-tokenizer whole. A
sentence is a `max_words`-word piece of a docstring with at least one code span in it.

    sents, stats = build_tagging_task(records, cfg)      # {split: [(words, tags)]}, statistics
    write_conll(path, sents["train"])                     # `word<TAB>tag` lines, blank line between
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

from mlmctl.errors import InputError

# ``literal`` (reST), :role:`target` (role dropped), `code` (Markdown / reST default role).
_CODE = re.compile(r"(?::[\w.+-]+:)?``([^`\n]+?)``|(?::[\w.+-]+:)?`([^`\n]+?)`")
_WORD = re.compile(r"\w+|[^\w\s]")
SPLITS = ("train", "dev", "test")


def tag_words(text: str) -> tuple[list[str], list[str]]:
    """The words of `text` without code markup, and their IOB2 tags (B-CODE/I-CODE where code was)."""
    words: list[str] = []
    tags: list[str] = []
    pos = 0
    for m in _CODE.finditer(text):
        plain = _WORD.findall(text[pos:m.start()])
        words += plain
        tags += ["O"] * len(plain)
        code = (m.group(1) or m.group(2)).lstrip("~")
        if code.endswith(">") and " <" in code:  # `text <target>`: the link target is not shown
            code = code[:code.index(" <")]
        code = _WORD.findall(code)
        if code:
            words += code
            tags += ["B-CODE"] + ["I-CODE"] * (len(code) - 1)
        pos = m.end()
    plain = _WORD.findall(text[pos:])
    return words + plain, tags + ["O"] * len(plain)


def build_tagging_task(records, cfg) -> tuple[dict[str, list[tuple[list[str], list[str]]]], dict]:
    """Pure: clean records -> {split: [(words, tags)]} and the statistics for the manifest.

    Each docstring is cut into pieces of `max_words` words; pieces with code are the sentences.
    Deterministic and leak-free: documents are ranked by sha256(seed, id, text) and dealt out
    whole, the lowest to test, then dev, then train, so the pieces of one docstring never land
    in two splits; a piece whose words were seen already is dropped."""
    dropped: Counter = Counter()
    docs = []
    for rec in records:
        text = str(rec.get("text", ""))
        words, tags = tag_words(text)
        pieces = []
        for i in range(0, len(words), cfg.max_words):
            w, t = words[i:i + cfg.max_words], tags[i:i + cfg.max_words]
            if t[0] == "I-CODE":  # the rest of a span the previous piece began: a span of its own
                t = ["B-CODE", *t[1:]]
            if len(w) < cfg.min_words:
                dropped["too_short"] += 1
            elif "B-CODE" not in t:
                dropped["no_code"] += 1
            else:
                pieces.append((w, t))
        if pieces:
            docs.append((hashlib.sha256(f"{cfg.seed}\0{rec.get('id')}\0{text}".encode()).hexdigest(), pieces))
    docs.sort(key=lambda d: d[0])
    seen: set[str] = set()
    out: dict[str, list] = {s: [] for s in SPLITS}
    want = {"test": cfg.test_sentences, "dev": cfg.dev_sentences, "train": cfg.train_sentences}
    order = iter(("test", "dev", "train"))
    split = next(order)
    for _, pieces in docs:
        while split and len(out[split]) >= want[split]:
            split = next(order, None)
        if split is None:
            break
        for w, t in pieces:
            key = " ".join(w)
            if key in seen:
                dropped["duplicate_text"] += 1
                continue
            seen.add(key)
            out[split].append((w, t))
    if len(out["test"]) < cfg.test_sentences or len(out["dev"]) < cfg.dev_sentences or \
            len(out["train"]) < cfg.min_train_sentences:
        have = ", ".join(f"{s} {len(out[s])}" for s in SPLITS)
        raise InputError(f"demo-task: too few {cfg.max_words}-word pieces of docstrings with code markup ({have}); "
                         f"need test_sentences {cfg.test_sentences}, dev_sentences {cfg.dev_sentences} and "
                         f"min_train_sentences {cfg.min_train_sentences}: use a bigger clean corpus or lower them")
    stats = {"kind": "tagging", "labels": ["O", "B-CODE", "I-CODE"], "dropped": dict(sorted(dropped.items())),
             "counts": {s: len(out[s]) for s in SPLITS}}
    for s in SPLITS:
        stats[f"{s}_tags"] = dict(sorted(Counter(x for _, ts in out[s] for x in ts).items()))
    test_tags = stats["test_tags"]
    stats["all_O_test_token_accuracy"] = test_tags.get("O", 0) / max(1, sum(test_tags.values()))
    return out, stats


def conll_text(sents: list[tuple[list[str], list[str]]]) -> str:
    """`word<TAB>tag` per line, a blank line after each sentence."""
    return "".join("".join(f"{w}\t{t}\n" for w, t in zip(words, tags)) + "\n" for words, tags in sents)
