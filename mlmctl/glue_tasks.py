"""The GLUE benchmark's public release layout: which files each task has, which columns hold
its texts and label, its official metrics, and a reader for one task directory.

    GLUE/CoLA/train.tsv, dev.tsv                 no header: source, label, original label, sentence
    GLUE/SST-2/train.tsv, dev.tsv                header: sentence, label
    GLUE/MRPC/train.tsv, dev.tsv                 header: Quality, #1 ID, #2 ID, #1 String, #2 String
    GLUE/STS-B/train.tsv, dev.tsv                header: index, genre, ..., sentence1, sentence2, score (float 0-5)
    GLUE/QQP/train.tsv, dev.tsv                  header: id, qid1, qid2, question1, question2, is_duplicate
    GLUE/MNLI/train.tsv, dev_matched.tsv, dev_mismatched.tsv
                                                 header: index, promptID, ..., sentence1, sentence2, label1, ...,
                                                 gold_label (12 columns in train, 16 in dev)
    GLUE/QNLI/train.tsv, dev.tsv                 header: index, question, sentence, label
    GLUE/RTE/train.tsv, dev.tsv                  header: index, sentence1, sentence2, label
    GLUE/WNLI/train.tsv, dev.tsv                 header: index, sentence1, sentence2, label

    present, skipped = discover("GLUE")            # skipped: {"QQP": "no GLUE/QQP directory", ...}
    data = read_split(TASKS["MNLI"], "GLUE/MNLI/dev_matched.tsv")   # LabelledData
    figures = official_metrics(TASKS["CoLA"], gold_labels, predicted_labels)   # {"mcc": ...}

The test files' labels are not public, so only train and dev are read; GLUE papers' dev tables
are what this reproduces. Files are read as the release writes them: tab-separated, no quoting
(MNLI's texts hold stray quote characters), UTF-8 (MRPC's byte-order mark is skipped). A row
with a different number of fields than the header (or than CoLA's 4), a missing column, or a
label outside the task's label set (a float that does not parse, for STS-B) is an `InputError`
naming file and line; a row with an empty text is dropped and counted (`dropped.empty_text`).

Scores: a task's score is the mean of its official metrics (MRPC and QQP: F1 of class "1" and
accuracy; STS-B: Pearson and Spearman), as the GLUE leaderboard computes it; MNLI is scored on
matched and mismatched dev separately. `glue_average` counts MNLI once, as the mean of the two.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from mlmctl import metrics
from mlmctl.errors import InputError
from mlmctl.labelled import MAX_FIELD_CHARS, LabelledData, parse_finite, read_text_file

Column = str | int  # a header name, or a 0-based index for header-less files


@dataclass(frozen=True)
class GlueTask:
    name: str  # also the directory name in the release
    dev_files: tuple[str, ...]
    text: Column
    pair: Column | None
    label: Column
    labels: tuple[str, ...] | None  # the label set; None = regression (float label)
    metrics: tuple[str, ...]  # official metrics, in the order papers print them
    header: bool = True
    columns: int | None = None  # fields per row of a header-less file
    train_file: str = "train.tsv"

    @property
    def is_regression(self) -> bool:
        return self.labels is None


_NLI = ("contradiction", "entailment", "neutral")
_ENT = ("entailment", "not_entailment")
TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("CoLA", ("dev.tsv",), 3, None, 1, ("0", "1"), ("mcc",), header=False, columns=4),
    GlueTask("SST-2", ("dev.tsv",), "sentence", None, "label", ("0", "1"), ("accuracy",)),
    GlueTask("MRPC", ("dev.tsv",), "#1 String", "#2 String", "Quality", ("0", "1"), ("f1", "accuracy")),
    GlueTask("STS-B", ("dev.tsv",), "sentence1", "sentence2", "score", None, ("pearson", "spearman")),
    GlueTask("QQP", ("dev.tsv",), "question1", "question2", "is_duplicate", ("0", "1"), ("f1", "accuracy")),
    GlueTask("MNLI", ("dev_matched.tsv", "dev_mismatched.tsv"), "sentence1", "sentence2", "gold_label", _NLI,
             ("accuracy",)),
    GlueTask("QNLI", ("dev.tsv",), "question", "sentence", "label", _ENT, ("accuracy",)),
    GlueTask("RTE", ("dev.tsv",), "sentence1", "sentence2", "label", _ENT, ("accuracy",)),
    GlueTask("WNLI", ("dev.tsv",), "sentence1", "sentence2", "label", ("0", "1"), ("accuracy",)),
)}


def discover(glue_dir: str | Path) -> tuple[list[GlueTask], dict[str, str]]:
    """The tasks present in a GLUE-layout directory, and why each other task is skipped. A task
    directory that exists but lacks one of its files is an error (a wrong layout, not a skip)."""
    root = Path(glue_dir)
    if not root.is_dir():
        raise InputError(f"{root}: GLUE directory not found; pass the folder holding CoLA/, SST-2/, MNLI/, ...")
    present, skipped = [], {}
    for task in TASKS.values():
        d = root / task.name
        if not d.is_dir():
            skipped[task.name] = f"no {d} directory"
            continue
        for f in (task.train_file, *task.dev_files):
            if not (d / f).is_file():
                have = ", ".join(sorted(p.name for p in d.iterdir())) or "nothing"
                # Files in another layout (an export of the HF `glue` dataset) still fine-tune one by
                # one: say so, rather than leave the user to convert them.
                raise InputError(f"{d}: {task.name} needs {f} (GLUE release layout; it holds {have}); for "
                                 f"files in another layout run `mlmctl finetune` on them (docs/glue.md, \"Other layouts\")")
        present.append(task)
    if not present:
        raise InputError(f"{root}: no GLUE task directory (CoLA/, SST-2/, MRPC/, ... with train.tsv and dev.tsv)")
    return present, skipped


def read_split(task: GlueTask, path: str | Path) -> LabelledData:
    """One train or dev file of `task` as `LabelledData` (labels are strings for classification,
    floats for STS-B)."""
    path = Path(path)
    text = read_text_file(path)
    # The csv module's field limit (131,072 characters) is process-wide: raise it for this file only.
    previous = csv.field_size_limit(MAX_FIELD_CHARS)
    rows = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        return _read_rows(task, path, rows)
    except csv.Error as e:  # a field over the limit, a NUL byte: the line the reader stopped on
        raise InputError(f"{path}:{rows.line_num}: unreadable {task.name} row ({e}); "
                         f"is this the GLUE release's {task.name} file?") from None
    finally:
        csv.field_size_limit(previous)


def _read_rows(task: GlueTask, path: Path, rows) -> LabelledData:
    out = LabelledData(str(path), [], [] if task.pair is not None else None, [])
    index: dict[Column, int] = {}
    width = task.columns
    for row in rows:
        line_no = rows.line_num
        if not row or row == [""]:
            continue
        if task.header and not index:
            index, width = _header(task, path, row), len(row)
            continue
        if len(row) != width:
            raise InputError(f"{path}:{line_no}: {task.name} row has {len(row)} tab-separated fields, expected "
                             f"{width}{'' if task.header else ' (the GLUE file has no header)'}")
        get = (lambda c: row[index[c]]) if task.header else (lambda c: row[c])
        label = _label(task, path, line_no, get(task.label).strip())
        texts = [get(task.text)] + ([get(task.pair)] if task.pair is not None else [])
        out.add(texts, label)
    if not out.texts:
        raise InputError(f"{path}: no {task.name} examples (empty file?)")
    return out


def _header(task: GlueTask, path: Path, row: list[str]) -> dict[Column, int]:
    index = {h.strip(): i for i, h in enumerate(row)}
    wanted = [c for c in (task.text, task.pair, task.label) if c is not None]
    missing = [c for c in wanted if c not in index]
    if missing:
        raise InputError(f"{path}:1: {task.name} header has no column {', '.join(map(repr, missing))} "
                         f"(header: {', '.join(index)}); is this the GLUE release's {task.name} file?")
    return index


def _label(task: GlueTask, path: Path, line_no: int, value: str) -> str | float:
    if task.labels is None:
        score = parse_finite(value)
        if score is None:
            raise InputError(f"{path}:{line_no}: {task.name} score {value!r} is not a number")
        return score
    if value not in task.labels:
        hint = " (a header line? CoLA's files have none)" if not task.header else ""
        raise InputError(f"{path}:{line_no}: {task.name} label {value!r} is not one of "
                         f"{', '.join(task.labels)}{hint}")
    return value


def official_metrics(task: GlueTask, gold: list, predicted: list) -> dict[str, float]:
    """The task's official figures from gold and predicted labels (strings, or floats for STS-B)."""
    if task.is_regression:
        rep = metrics.regression_report(gold, predicted)
        return {m: rep[m] for m in task.metrics}
    ids = {lab: i for i, lab in enumerate(task.labels)}
    t, p = [ids[x] for x in gold], [ids[x] for x in predicted]
    every = {
        "accuracy": sum(a == b for a, b in zip(t, p)) / len(t),
        "f1": metrics.binary_f1(t, p, positive=ids.get("1", 1)),
        "mcc": metrics.matthews_corrcoef(t, p, len(task.labels)),
    }
    return {m: every[m] for m in task.metrics}


def task_score(figures: dict[str, float]) -> float:
    """A task's single score: the mean of its official metrics (GLUE leaderboard rule)."""
    return sum(figures.values()) / len(figures)


def glue_average(scores: dict[str, float]) -> float:
    """Mean over tasks of their scores; keys `MNLI-m` and `MNLI-mm` count as one task, MNLI."""
    merged = {k: v for k, v in scores.items() if not k.startswith("MNLI")}
    mnli = [v for k, v in scores.items() if k.startswith("MNLI")]
    if mnli:
        merged["MNLI"] = sum(mnli) / len(mnli)
    return sum(merged.values()) / len(merged)
