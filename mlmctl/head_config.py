"""What a fine-tuned model's config.json says about its head, read defensively: the label names
(`id2label`), the architectures and the `problem_type`. Any config.json may have been edited or
written by another tool, so each reader returns clean values or raises one `InputError` line
naming the file and what to fix, never a TypeError from a list where a dict belongs.

    labels = head_labels(raw, model_dir, "eval")      # ["O", "B-PER", ...]: id i = position i
    archs = architectures(raw, model_dir, "eval")     # ["BertForTokenClassification"]
    kind = problem_type(raw, model_dir, "eval")       # "regression" | "single_label_classification" | None
"""

from __future__ import annotations

from pathlib import Path

from mlmctl.errors import InputError

PROBLEM_TYPES = ("regression", "single_label_classification")
"""The `problem_type` values mlmctl scores (HF's third, multi_label_classification, it does not)."""


def head_labels(raw: dict, model_dir: Path, reader: str) -> list[str]:
    """`id2label` as a list (position = id): a JSON object with keys "0".."K-1" and distinct
    string values, as transformers writes it; [] when the key is missing or empty."""
    id2label = raw.get("id2label") or {}
    where = f"{reader}: {Path(model_dir) / 'config.json'}"
    if not isinstance(id2label, dict):
        raise InputError(f"{where}: id2label is a {type(id2label).__name__}, expected an object "
                         '{"0": "LABEL", ...}; fix config.json or fine-tune again')
    try:
        labels = [id2label[str(i)] for i in range(len(id2label))]
    except KeyError:
        raise InputError(f"{where}: malformed id2label (ids must be 0..K-1, got {sorted(id2label)[:5]}); "
                         "fix config.json or fine-tune again") from None
    if not all(isinstance(x, str) and x for x in labels):
        raise InputError(f"{where}: id2label holds a label that is not a non-empty string; fix config.json")
    if len(set(labels)) != len(labels):
        twice = sorted({x for x in labels if labels.count(x) > 1})
        raise InputError(f"{where}: id2label names {', '.join(map(repr, twice[:5]))} more than once; "
                         "each id needs its own label")
    return labels


def architectures(raw: dict, model_dir: Path, reader: str) -> list[str]:
    """`architectures` (a list of class names; [] when missing)."""
    archs = raw.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise InputError(f"{reader}: {Path(model_dir) / 'config.json'}: architectures must be a list of class "
                         f'names (e.g. ["BertForTokenClassification"]), got {archs!r:.60}; fix config.json')
    return archs


def problem_type(raw: dict, model_dir: Path, reader: str) -> str | None:
    """`problem_type`: one mlmctl can score, or None when unset."""
    kind = raw.get("problem_type")
    if kind is not None and kind not in PROBLEM_TYPES:
        raise InputError(f"{reader}: {Path(model_dir) / 'config.json'}: problem_type {kind!r:.60} is not supported "
                         f"(mlmctl scores {' and '.join(PROBLEM_TYPES)})")
    return kind
