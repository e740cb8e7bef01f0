"""demo-task `kind: tagging`: find the code in a docstring whose code markup was removed.

Docstrings mark identifiers and literals as code: ``json.dumps``, `key`, :func:`open`. The task
keeps the words and drops the markup (backticks and the reST role), then tags the words that were
code `B-CODE` / `I-CODE` and the rest `O`: the model has to tell from the words around them, and
from what identifiers look like, where the code is. Scored with entity-level F1 (IOB2, strict).

Words: runs of word characters, and each other non-space character on its own (`json.dumps()`
is `json . dumps ( )`), so every word survives the model's BERT-style pre-tokenizer whole. A
sentence is the first `max_words` words of a docstring that has at least one code span there.

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
    Deterministic: docstrings ranked by sha256(seed, id, text); the lowest go to test, then dev,
    then train; duplicates (same words) dropped."""
    dropped: Counter = Counter()
    cands = []
    for rec in records:
        words, tags = tag_words(str(rec.get("text", "")))
        words, tags = words[:cfg.max_words], tags[:cfg.max_words]
        if len(words) < cfg.min_words:
            dropped["too_short"] += 1
            continue
        if "B-CODE" not in tags:
            dropped["no_code"] += 1
            continue
        key = " ".join(words)
        rank = hashlib.sha256(f"{cfg.seed}\0{rec.get('id')}\0{key}".encode()).hexdigest()
        cands.append((rank, key, words, tags))
    cands.sort()
    seen: set[str] = set()
    unique = []
    for _, key, words, tags in cands:
        if key in seen:
            dropped["duplicate_text"] += 1
            continue
        seen.add(key)
        unique.append((words, tags))
    t, d, n = cfg.test_sentences, cfg.dev_sentences, cfg.train_sentences
    if len(unique) < t + d + cfg.min_train_sentences:
        raise InputError(f"demo-task: only {len(unique)} docstrings with code markup in their first {cfg.max_words} "
                         f"words; need test_sentences + dev_sentences + min_train_sentences = "
                         f"{t + d + cfg.min_train_sentences}: use a bigger clean corpus or lower them")
    out = {"test": unique[:t], "dev": unique[t:t + d], "train": unique[t + d:t + d + n]}
    stats = {"kind": "tagging", "labels": ["O", "B-CODE", "I-CODE"], "dropped": dict(sorted(dropped.items())),
             "counts": {s: len(out[s]) for s in SPLITS}}
    for s in SPLITS:
        tags = Counter(x for _, ts in out[s] for x in ts)
        stats[f"{s}_tags"] = dict(sorted(tags.items()))
    test_tags = stats["test_tags"]
    stats["all_O_test_token_accuracy"] = test_tags.get("O", 0) / max(1, sum(test_tags.values()))
    return out, stats


def conll_text(sents: list[tuple[list[str], list[str]]]) -> str:
    """`word<TAB>tag` per line, a blank line after each sentence."""
    return "".join("".join(f"{w}\t{t}\n" for w, t in zip(words, tags)) + "\n" for words, tags in sents)
