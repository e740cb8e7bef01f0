"""demo-task: build a labelled classification task (or, `kind: tagging`, a tagging task) from a clean directory.

The task: given the opening words of a docstring, which library family does it come from?
(For Chinese text, e.g. configs/zh's generated corpus, words are Han characters: `scripts.units`.)
The family is the top-level package of the record's `source` (`python-docs:numpy.linalg`
-> `numpy`; a source without `:` is used whole). Only the clean TRAIN split is read, so
the task never contains text of the pretraining validation split.

Reads `INPUT/train/shard-*.jsonl.gz` (`{"id", "text", "source"}` per line) and writes
`OUTPUT/train.tsv`, `dev.tsv`, `test.tsv` (header `text<TAB>label`, one example a line,
whitespace inside a text collapsed to single spaces so tabs and newlines never occur)
and `manifest.json`.

    mlmctl demo-task -c configs/demo/demo-task.yaml --input data/clean --output data/task

Selection is deterministic: each document gets a rank from sha256(seed, id); per family the
lowest-ranked examples go to test, then dev, then train (up to `max_train_per_class`), so
train/dev/test are disjoint (also by text: duplicates after truncation are dropped) and the
same for any shard layout of the input.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlmctl import safe_json
from mlmctl.config import check
from mlmctl.errors import InputError
from mlmctl.scripts import join_unspaced, script_stats, units
from mlmctl.shards import atomic_write_text, open_shard_lines


@dataclass
class DemoTaskConfig:
    """Build the demo classification task (docstring -> library family)."""

    input: str = "data/clean"
    """Clean stage directory to read (its train split only)."""
    output: str = "data/task"
    """Directory for train.tsv, dev.tsv, test.tsv and manifest.json."""
    num_classes: int = 4
    """Keep the K families with the most usable docstrings (after the filters below)."""
    families: list[str] = field(default_factory=list)
    """Explicit family list instead of the K largest (empty = choose by size)."""
    exclude_families: list[str] = field(default_factory=list)
    """Families never used (e.g. a package that is mostly generated text)."""
    min_words: int = 8
    """Drop docstrings with fewer words than this (too little to classify)."""
    max_words: int = 32
    """Keep only the first N words of each docstring: short texts keep the task hard."""
    test_per_class: int = 60
    """Test examples per family."""
    dev_per_class: int = 40
    """Dev examples per family."""
    max_train_per_class: int = 300
    """At most this many training examples per family (the largest families are capped, so
    classes are balanced-ish)."""
    min_train_per_class: int = 20
    """A family needs at least this many training examples on top of dev and test to be used."""
    seed: int = 0
    """Seed of the deterministic selection."""
    kind: Literal["classification", "tagging"] = "classification"
    """classification: docstring -> library family (train/dev/test.tsv); tagging: tag the words that were code
    in docstrings whose code markup was removed (train/dev/test.conll, B-CODE/I-CODE; mlmctl/demo_tagging.py).
    tagging reads min_words, max_words, seed and the *_sentences keys."""
    train_sentences: int = 300
    """tagging: at most this many training sentences."""
    dev_sentences: int = 60
    """tagging: dev sentences."""
    test_sentences: int = 150
    """tagging: test sentences."""
    min_train_sentences: int = 50
    """tagging: fewer training sentences than this (after dev and test) is an error."""

    def __post_init__(self):
        check(self.num_classes >= 2 or len(self.families) >= 2, "num_classes", "need at least 2 classes")
        check(self.min_words >= 1, "min_words", "must be at least 1")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        check(self.max_words >= self.min_words, "max_words", "must be at least `min_words`")
        check(self.test_per_class >= 1, "test_per_class", "must be at least 1")
        check(self.dev_per_class >= 1, "dev_per_class", "must be at least 1")
        check(self.min_train_per_class >= 1, "min_train_per_class", "must be at least 1")
        check(self.max_train_per_class >= self.min_train_per_class, "max_train_per_class",
              "must be at least `min_train_per_class`")
        for key in ("train_sentences", "dev_sentences", "test_sentences", "min_train_sentences"):
            check(getattr(self, key) >= 1, key, "must be at least 1")
        check(self.train_sentences >= self.min_train_sentences, "train_sentences",
              "must be at least `min_train_sentences`")


CONFIG = DemoTaskConfig
STAGE = "demo-task"
INPUT_STAGE = "clean"

SPLITS = ("train", "dev", "test")


def _records(input_dir: Path, names: list[str]):
    """The clean documents of the shards, each a JSON object, or one line naming the shard and line
    (a shard's bytes are checked against its manifest, but a manifest can be rewritten to match)."""
    for name in names:
        for lineno, line in enumerate(open_shard_lines(input_dir / name), 1):
            if not line:
                continue
            try:
                rec = safe_json.loads(line)
                why = "" if isinstance(rec, dict) else f"a JSON {type(rec).__name__}, not an object"
            except safe_json.JSONError as e:
                why = str(e)
            if why:
                raise InputError(f"demo-task: {input_dir / name}:{lineno} is not a document record ({why}); "
                                 f"rerun `mlmctl clean --force`")
            yield rec


def run(ctx) -> dict:
    cfg: DemoTaskConfig = ctx.cfg
    names = [s.name for s in ctx.input_manifest.shards_of("train")]
    if not names:
        raise InputError(f"demo-task: {ctx.input_dir} has no train split; rerun `mlmctl clean`")
    records = _records(ctx.input_dir, names)
    if cfg.kind == "tagging":
        return _run_tagging(ctx, records)
    splits, stats = build_task(records, cfg)
    ctx.log(f"families: {', '.join(stats['labels'])}")

    shards = []
    for split in SPLITS:
        rows = splits[split]
        lines = ["text\tlabel"] + [f"{text}\t{label}" for text, label in rows]
        atomic_write_text(ctx.output_dir / f"{split}.tsv", "\n".join(lines) + "\n")
        shards.append(ctx.describe(f"{split}.tsv", split, {"examples": len(rows)}))
    ctx.finish(shards, extra=stats)
    summary = {"labels": ", ".join(stats["labels"])}
    for split in SPLITS:
        summary[f"{split} examples"] = len(splits[split])
    summary["majority (test)"] = f"{stats['majority_test_accuracy']:.3f}"
    return summary


def _run_tagging(ctx, records) -> dict:
    from mlmctl.demo_tagging import build_tagging_task, conll_text

    sents, stats = build_tagging_task(records, ctx.cfg)
    shards = []
    for split in SPLITS:
        atomic_write_text(ctx.output_dir / f"{split}.conll", conll_text(sents[split]))
        shards.append(ctx.describe(f"{split}.conll", split, {"sentences": len(sents[split])}))
    ctx.finish(shards, extra=stats)
    summary = {"tags": ", ".join(stats["labels"])}
    for split in SPLITS:
        summary[f"{split} sentences"] = len(sents[split])
    summary["every token O (test)"] = f"token accuracy {stats['all_O_test_token_accuracy']:.3f}, entity F1 0"
    return summary


def family_of(source: str) -> str:
    """`python-docs:numpy.linalg` -> `numpy`; a plain source is its own family."""
    name = source.split(":", 1)[1] if ":" in source else source
    return name.split(".", 1)[0]


_WS = re.compile(r"\s+")


def _words(text: str) -> list[str]:
    """Words to count and truncate by; Chinese text counts each Han character as one (`scripts.units`)."""
    if not text.isascii() and script_stats(text).is_unspaced:
        return units(text)
    return _WS.sub(" ", text).strip().split(" ")


def build_task(records, cfg: DemoTaskConfig) -> tuple[dict[str, list[tuple[str, str]]], dict]:
    """Pure: clean records -> {split: [(text, label)]} and the statistics for the manifest."""
    by_family: dict[str, list[tuple[str, str]]] = {}
    dropped = Counter()
    seen_text: set[str] = set()
    candidates = []
    for rec in records:
        words = _words(str(rec.get("text", "")))
        if len(words) < cfg.min_words:
            dropped["too_short"] += 1
            continue
        fam = family_of(str(rec.get("source", "")))
        if not fam or fam in cfg.exclude_families or (cfg.families and fam not in cfg.families):
            dropped["family_not_used"] += 1
            continue
        text = join_unspaced(" ".join(words[: cfg.max_words]))
        rank = hashlib.sha256(f"{cfg.seed}\0{rec.get('id')}\0{text}".encode()).hexdigest()
        candidates.append((rank, fam, text))
    # Sort by rank first so which copy of a duplicate survives does not depend on shard order.
    candidates.sort()
    for rank, fam, text in candidates:
        if text in seen_text:
            dropped["duplicate_text"] += 1
            continue
        seen_text.add(text)
        by_family.setdefault(fam, []).append((rank, text))

    need = cfg.test_per_class + cfg.dev_per_class + cfg.min_train_per_class
    sizes = {f: len(v) for f, v in by_family.items()}
    if cfg.families:
        small = [f for f in cfg.families if sizes.get(f, 0) < need]
        if small:
            have = ", ".join(f"{f}: {sizes.get(f, 0)}" for f in small)
            raise InputError(
                f"demo-task: families with fewer than {need} usable docstrings ({have}); "
                "lower test_per_class/dev_per_class/min_train_per_class or pick other families"
            )
        chosen = list(cfg.families)
    else:
        big = sorted((f for f in sizes if sizes[f] >= need), key=lambda f: (-sizes[f], f))
        if len(big) < cfg.num_classes:
            top = ", ".join(f"{f}: {n}" for f, n in sorted(sizes.items(), key=lambda x: -x[1])[:8])
            raise InputError(
                f"demo-task: only {len(big)} families have at least {need} usable docstrings, need "
                f"num_classes={cfg.num_classes} (largest: {top or 'none'}); use a bigger clean corpus "
                "or lower num_classes / the per-class sizes"
            )
        chosen = big[: cfg.num_classes]
    labels = sorted(chosen)

    splits: dict[str, list[tuple[str, str, str]]] = {s: [] for s in SPLITS}
    for fam in labels:
        items = by_family[fam]  # already in rank order
        t, d = cfg.test_per_class, cfg.dev_per_class
        splits["test"] += [(r, x, fam) for r, x in items[:t]]
        splits["dev"] += [(r, x, fam) for r, x in items[t:t + d]]
        splits["train"] += [(r, x, fam) for r, x in items[t + d:t + d + cfg.max_train_per_class]]
    out = {}
    for s in SPLITS:
        # Interleave the classes in a seeded order (rank), so no file is sorted by label.
        out[s] = [(x, fam) for _, x, fam in sorted(splits[s])]
    counts = {s: dict(sorted(Counter(fam for _, fam in out[s]).items())) for s in SPLITS}
    train_top = max(counts["train"].items(), key=lambda kv: (kv[1], kv[0]))[0]
    majority = counts["test"].get(train_top, 0) / max(1, len(out["test"]))
    stats = {
        "labels": labels,
        "counts": counts,
        "family_sizes": {f: sizes[f] for f in labels},
        "dropped": dict(sorted(dropped.items())),
        "majority_label": train_top,
        "majority_test_accuracy": majority,
    }
    return out, stats
