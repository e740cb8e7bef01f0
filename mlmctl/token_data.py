"""Token classification between files and the model, shared by finetune and eval: reading a
tagged file under the configured settings, repairing ill-formed tag sequences, cutting
sentences into model windows, predicting word tags, and the tagging report.

    spec = TagSpec(scheme="iob2", ill_formed="repair")                # what the config says
    data = spec.read("train.conll", "finetune")                       # tagging.TaggedData, repaired
    ids = [[tag2id[t] for t in s] for s in data.tags]
    enc = encode_tagged(encoder, data.tokens, ids, max_seq_len=128)   # windows as model inputs
    pred = predict_tags(model, enc, batch_size, pad_id, device)       # word tag ids per sentence
    report = tagging_report(data.tags, [[tags[i] for i in s] for s in pred], "iob2")

Ill-formed sequences (an `I-X` that continues nothing, under IOB2/IOBES) are treated as
`ill_formed` says: `repair` (default) rewrites them the way seqeval's default (non-strict) mode
reads them, so `O I-PER I-PER` becomes `O B-PER I-PER`, and counts the sentences repaired;
`error` stops at the first one, naming file and line. Repairing happens before training and
before scoring, so gold and predictions are then read with the same strict rules.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlmctl.errors import InputError
from mlmctl.metrics import TASK_METRICS
from mlmctl.seq_metrics import entity_report, split_tag
from mlmctl.tagging import (IGNORE, TaggedData, iob1_to_iob2, make_windows, merge_windows, model_input, read_tagged,
                            word_pieces)

if TYPE_CHECKING:
    from mlmctl.text_encoder import TextEncoder

TAG_METRICS = TASK_METRICS["token-classification"]
"""The dev metrics a token classifier can be selected by."""


@dataclass(frozen=True)
class TagSpec:
    """How to read a tagged file: finetune's and eval's keys of the same names."""

    scheme: str = "iob2"  # iob1 | iob2 | iobes | none
    ill_formed: str = "repair"  # repair | error
    fmt: str = "auto"  # auto | conll | jsonl
    tag_column: int = -1
    tokens_field: str = "tokens"
    tags_field: str = "tags"

    @property
    def strict_scheme(self) -> str | None:
        """The scheme entities are read with (IOB1 is converted to IOB2); None for `none`."""
        return {"iob1": "iob2", "none": None}.get(self.scheme, self.scheme)

    def read(self, path: str | Path, reader: str) -> TaggedData:
        """The file's sentences, IOB1 converted and ill-formed sequences repaired (counted in
        `ill_formed["repaired"]`) or refused."""
        scheme = self.strict_scheme or "none"
        try:
            data = read_tagged(path, scheme=scheme, fmt=self.fmt, tag_column=self.tag_column,
                               tokens_field=self.tokens_field, tags_field=self.tags_field)
        except InputError as e:
            raise InputError(f"{reader}: {e}") from None
        if self.scheme == "iob1":  # IOB1's I-X after O is well-formed: convert, nothing to count
            data.tags = [iob1_to_iob2(t) for t in data.tags]
            data.ill_formed = {}
        elif data.ill_formed:
            if self.ill_formed == "error":
                raise InputError(
                    f"{reader}: {data.ill_formed['first']}: ill-formed {scheme.upper()} tag sequence (an I-/E- tag "
                    f"that continues no entity; {data.ill_formed['count']} such sentence(s) in the file); fix the "
                    "file, set `tag_scheme: iob1` if it is IOB1, or `ill_formed: repair`")
            data.tags = [repair_tags(t, scheme) for t in data.tags]
            data.ill_formed["repaired"] = data.ill_formed["count"]
        return data


    def check_known(self, data: TaggedData, tag2id: dict[str, int], reader: str, fix: str) -> None:
        """A tag the model has no id for is an error naming file and line (a dev/test file with a
        tag the train file never had)."""
        name = Path(data.path).name.lower().removesuffix(".gz")
        jsonl = self.fmt == "jsonl" or (self.fmt == "auto" and name.endswith((".jsonl", ".json")))
        for sent, tags in enumerate(data.tags):
            for k, tag in enumerate(tags):
                if tag not in tag2id:
                    line = data.lines[sent] + (0 if jsonl else k)  # CoNLL: a line per token
                    known = ", ".join(list(tag2id)[:8]) + (", ..." if len(tag2id) > 8 else "")
                    raise InputError(f"{reader}: {data.path}:{line}: tag {tag!r} is not among the model's tags "
                                     f"({known}); {fix}")


def repair_tags(tags: list[str], scheme: str) -> list[str]:
    """The entities seqeval's default (non-strict) mode reads in `tags`, written back well-formed
    in `scheme` (a well-formed sequence comes back unchanged)."""
    spans = lenient_entities(tags, scheme)
    out = ["O"] * len(tags)
    for start, end, kind in spans:
        if scheme == "iobes" and end - start == 1:
            out[start] = f"S-{kind}"
            continue
        out[start] = f"B-{kind}"
        for i in range(start + 1, end):
            out[i] = f"I-{kind}"
        if scheme == "iobes":
            out[end - 1] = f"E-{kind}"
    return out


def lenient_entities(tags: list[str], scheme: str) -> list[tuple[int, int, str]]:
    """(start, end, type) spans as seqeval's `get_entities` reads them (its start_of_chunk /
    end_of_chunk rules): an I-/E- tag after O or after another type starts an entity."""
    spans = []
    start, prev, prev_kind = None, "O", ""
    for i, tag in enumerate([*tags, "O"]):
        p, kind = split_tag(tag, scheme)
        ends = prev in "ES" or (prev in "BI" and p in "BSO") or (prev != "O" and prev_kind != kind)
        if start is not None and ends:
            spans.append((start, i, prev_kind))
            start = None
        starts = p in "BS" or (p in "IE" and prev in "ESO") or (p != "O" and prev_kind != kind)
        if starts:
            start = i
        prev, prev_kind = p, kind
    return spans


@dataclass
class TaggedEncoded:
    """Windows of a tagged file as model inputs: `ids`, `token_types` and the per-position
    `labels` (IGNORE but on first sub-words) of each window, as `text_encoder.Encoded` has, so
    finetune's batching reads both alike."""

    ids: list[list[int]]
    token_types: list[list[int]]
    labels: list[list[int]]
    windows: list = field(repr=False)
    sentence_lengths: list[int]
    split_sentences: int = 0  # sentences longer than one window
    truncated: int = 0  # words longer than a whole window (only their first pieces are read)


def encode_tagged(encoder: TextEncoder, sentences: list[list[str]], tag_ids: list[list[int]] | None,
                  max_seq_len: int) -> TaggedEncoded:
    room = max_seq_len - 2
    wins = make_windows(encoder.tok, sentences, tag_ids, room)
    ids, labels = [], []
    for w in wins:
        x, y = model_input(w, encoder.cls_id, encoder.sep_id)
        ids.append(x)
        labels.append(y)
    n_windows = Counter(w.sentence for w in wins)
    long_words = sum(len(p) > room for sent in word_pieces(encoder.tok, sentences) for p in sent)
    return TaggedEncoded(ids, [[0] * len(x) for x in ids], labels, wins, [len(s) for s in sentences],
                         split_sentences=sum(n > 1 for n in n_windows.values()), truncated=long_words)


def pad_labels(enc: TaggedEncoded, rows, device):
    """(B, T) labels of `rows`, IGNORE on padding, T the longest row (as `pad_batch` pads ids)."""
    import torch

    T = max(len(enc.ids[r]) for r in rows)
    y = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for j, r in enumerate(rows):
        y[j, :len(enc.labels[r])] = torch.tensor(enc.labels[r])
    return y.to(device)


def predict_tags(model, enc: TaggedEncoded, batch_size: int, pad_id: int, device="cpu") -> list[list[int]]:
    """Tag id of every word of every sentence: argmax on the word's first sub-word, windows merged."""
    import torch

    from mlmctl.text_encoder import pad_batch

    model.eval()
    order = sorted(range(len(enc.ids)), key=lambda r: len(enc.ids[r]))  # little padding per batch
    per_window: list[list[int] | None] = [None] * len(order)
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            ids, mask, types = (t.to(device) for t in pad_batch(enc, rows, pad_id))
            logits, _ = model(ids, attention_mask=mask, token_type_ids=types)
            best = logits.float().argmax(-1).cpu()  # (B, T)
            for j, r in enumerate(rows):
                per_window[r] = best[j, 1:len(enc.ids[r]) - 1].tolist()  # drop [CLS] / [SEP]
    return merge_windows(enc.windows, per_window, enc.sentence_lengths)


def tagging_report(gold: list[list[str]], pred: list[list[str]], scheme: str | None) -> dict:
    """`token_accuracy` always; with a scheme, entity-level figures as seqeval's strict mode:
    `entity_precision|recall|f1` (micro), `macro_f1`, `weighted_f1` and `per_type`."""
    if scheme is None:
        n = sum(len(s) for s in gold)
        ok = sum(a == b for g, p in zip(gold, pred, strict=True) for a, b in zip(g, p, strict=True))
        return {"n_sentences": len(gold), "n_tokens": n, "token_accuracy": ok / n if n else 0.0}
    r = entity_report(gold, pred, scheme)
    return {"n_sentences": r["n_sentences"], "n_tokens": r["n_tokens"], "token_accuracy": r["accuracy"],
            "entity_precision": r["micro_precision"], "entity_recall": r["micro_recall"],
            "entity_f1": r["micro_f1"], "macro_f1": r["macro_f1"], "weighted_f1": r["weighted_f1"],
            "per_type": r["per_type"]}


def tag_baselines(train_tags: list[list[str]], gold: list[list[str]], scheme: str | None) -> dict:
    """What a tagger must beat: every token `O` (no entity found), and every token the most
    frequent tag of the train file (the same thing whenever `O` is the most frequent)."""
    top = Counter(t for s in train_tags for t in s).most_common(1)[0][0]
    out = {}
    # Without a scheme `O` need not be a tag at all (POS): only the most frequent tag then.
    for name, tag in ([] if scheme is None else [("all_O", "O")]) + [("majority_tag", top)]:
        guess = [[tag] * len(s) for s in gold]
        if scheme is not None and tag != "O":
            guess = [repair_tags(g, scheme) for g in guess]  # a constant I-X reads as one long entity
        rep = tagging_report(gold, guess, scheme)
        out[name] = {"tag": tag, **{k: v for k, v in rep.items() if k in ("token_accuracy", "entity_f1")}}
    return out


def sentence_counts(gold: list[list[str]], pred: list[list[str]], scheme: str | None):
    """Per sentence: (correct tokens, tokens, true-positive entities, predicted, gold entities),
    as a (n, 5) float array: every figure of the report is a ratio of their sums."""
    import numpy as np

    from mlmctl.seq_metrics import entities

    rows = []
    for g, p in zip(gold, pred, strict=True):
        ok = sum(a == b for a, b in zip(g, p))
        if scheme is None:
            rows.append((ok, len(g), 0, 0, 0))
            continue
        ge, pe = set(entities(g, scheme)), set(entities(p, scheme))
        rows.append((ok, len(g), len(ge & pe), len(pe), len(ge)))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def tagging_intervals(gold, pred, scheme: str | None, resamples: int, seed: int) -> dict:
    """95% percentile intervals of token accuracy and entity P/R/F1, resampling sentences (the
    tags of one sentence are not independent)."""
    import numpy as np

    from mlmctl.bootstrap import percentile_interval, resample_blocks

    x = sentence_counts(gold, pred, scheme)
    stats = []
    for w in resample_blocks(len(x), resamples, seed):
        s = w @ x  # (r, 5)
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = s[:, 0] / s[:, 1]
            p = np.where(s[:, 3] > 0, s[:, 2] / s[:, 3], 0.0)
            r = np.where(s[:, 4] > 0, s[:, 2] / s[:, 4], 0.0)
            f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
        stats.append(np.stack([acc, p, r, f], axis=1))
    s = np.concatenate(stats)
    names = ["token_accuracy"] + ([] if scheme is None else ["entity_precision", "entity_recall", "entity_f1"])
    return {k: percentile_interval(s[:, j]) for j, k in enumerate(names)}
