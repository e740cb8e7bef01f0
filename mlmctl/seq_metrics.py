"""Entity-level metrics for token classification (NER, chunking), with the semantics of
`seqeval`'s strict mode (`classification_report(..., mode="strict", scheme=IOB2 | IOBES)`).

Pure Python, no dependency. An entity is a `(sentence, start, end, type)` span; a predicted
entity counts as correct only when all four match a gold entity exactly.

Tags are `O` or `P-TYPE` (prefix, a hyphen, the entity type; the type may contain hyphens).
Which prefixes a scheme allows and how spans are read, in strict mode:

- **IOB2**: prefixes B, I. An entity is a `B-X` followed by the longest run of `I-X`. An `I-X`
  that does not continue a `B-X`/`I-X` of the same type — after `O`, after another type, or at
  the start of a sentence — **starts no entity**: it is kept, counts in token accuracy, and
  counts in no entity figure (gold or predicted). seqeval's default (non-strict) mode would
  instead read it as the start of an entity (IOB1 style). An IOB1 file (CoNLL-2003's original
  release) should be converted first: `mlmctl.tagging.iob1_to_iob2`.
- **IOBES**: prefixes B, I, E, S. An entity is `S-X`, or `B-X`, any `I-X`, then `E-X`. A `B-X`
  run not closed by `E-X` of the same type, and any stray `I-X`/`E-X`, form no entity.

A tag whose prefix the scheme does not allow (`E-PER` under IOB2, `X-PER`) is a `ValueError`
here; the readers in `mlmctl.tagging` turn that into an `InputError` naming file and line.

Figures, as seqeval computes them (zero division gives 0): per entity type precision, recall,
F1 and support (gold entities); **micro** pools all entities; **macro** averages the per-type
figures over the types that occur in the gold or the predicted entities; **weighted** weights
them by support. `accuracy` is token accuracy (tags equal, `O` included).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

SCHEMES = {"iob2": frozenset("BI"), "iobes": frozenset("BIES")}

Entity = tuple[int, int, int, str]
"""(sentence index, first token, one past the last token, entity type)."""


def split_tag(tag: str, scheme: str) -> tuple[str, str]:
    """`B-PER` -> ("B", "PER"); `O` -> ("O", ""). A prefix outside the scheme is a ValueError."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or not kind or prefix not in SCHEMES[scheme]:
        allowed = ", ".join(f"{p}-TYPE" for p in sorted(SCHEMES[scheme]))
        raise ValueError(f"tag {tag!r} is not in the {scheme.upper()} scheme (O, {allowed})")
    return prefix, kind


def entities(tags: Sequence[str], scheme: str = "iob2", sentence: int = 0) -> list[Entity]:
    """The entities of one sentence's tags, read in strict mode (see the module docstring)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    parsed = [split_tag(t, scheme) for t in tags]
    out: list[Entity] = []
    i, n = 0, len(parsed)
    while i < n:
        prefix, kind = parsed[i]
        if prefix == "S":
            out.append((sentence, i, i + 1, kind))
            i += 1
        elif prefix == "B":
            j = i + 1
            while j < n and parsed[j] == ("I", kind):
                j += 1
            if scheme == "iob2":
                out.append((sentence, i, j, kind))
            elif j < n and parsed[j] == ("E", kind):
                j += 1
                out.append((sentence, i, j, kind))
            i = j
        else:  # O, or an I/E that continues nothing: no entity starts here
            i += 1
    return out


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def entity_report(
    y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]], scheme: str = "iob2"
) -> dict:
    """All tagging metrics as one JSON-ready dict: `n_sentences`, `n_tokens`, `accuracy`,
    `micro_/macro_/weighted_precision|recall|f1`, `per_type` (type -> precision, recall, f1,
    support, predicted)."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} gold sentences but {len(y_pred)} predicted")
    gold: set[Entity] = set()
    pred: set[Entity] = set()
    correct_tokens = n_tokens = 0
    for s, (t, p) in enumerate(zip(y_true, y_pred)):
        if len(t) != len(p):
            raise ValueError(f"sentence {s}: {len(t)} gold tags but {len(p)} predicted")
        gold.update(entities(t, scheme, s))
        pred.update(entities(p, scheme, s))
        correct_tokens += sum(a == b for a, b in zip(t, p))
        n_tokens += len(t)

    n_true, n_pred = Counter(e[3] for e in gold), Counter(e[3] for e in pred)
    tp = Counter(e[3] for e in gold & pred)
    per_type = {}
    for kind in sorted(set(n_true) | set(n_pred)):
        p, r, f = _prf(tp[kind], n_pred[kind], n_true[kind])
        per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": n_true[kind], "predicted": n_pred[kind]}

    out: dict = {"n_sentences": len(y_true), "n_tokens": n_tokens,
                 "accuracy": correct_tokens / n_tokens if n_tokens else 0.0}
    mp, mr, mf = _prf(sum(tp.values()), len(pred), len(gold))
    out.update(micro_precision=mp, micro_recall=mr, micro_f1=mf)
    total = len(gold)
    for key in ("precision", "recall", "f1"):
        vals = [v[key] for v in per_type.values()]
        out[f"macro_{key}"] = sum(vals) / len(vals) if vals else 0.0
        out[f"weighted_{key}"] = (sum(v[key] * v["support"] for v in per_type.values()) / total) if total else 0.0
    out["per_type"] = per_type
    return out
