"""The GLUE table of a `mlmctl glue` run: per-seed dev figures in, `glue.json` and the table out.

    report = build(results, skipped, seeds=[0, 1, 2], meta={"model": ..., "hyperparameters": ...})
    text = render(report, markdown=False)     # glue.txt; markdown=True gives glue.md

`results` maps a task name to what the harness measured:

    {"MNLI": {"runs": [{"seed": 0, "run": "MNLI/seed-0", "dev": {"dev_matched.tsv": {"accuracy": 0.61}, ...}}],
              "baselines": {"bow": {"dev_matched.tsv": {...}}, "majority": {...}},   # or {} without
              "examples": {"train.tsv": 392702, "dev_matched.tsv": 9815, ...}}}

A table row is one (task, dev file): MNLI gives two rows, `MNLI-m` (matched) and `MNLI-mm`
(mismatched), as papers print them. A row's score is the mean of the task's official metrics
(glue_tasks.task_score); with several seeds every figure is reported as mean and sample
standard deviation over seeds (`std` is null for one seed). The average follows
glue_tasks.glue_average (MNLI counted once); its std is the spread of the per-seed averages.
A baseline's entry says whether the model's mean score beats it (`model_beats_it`), and the
table names the tasks where it does not. Scores stay in [0, 1] in glue.json; the table prints
them times 100, as papers do.
"""

from __future__ import annotations

import statistics

from mlmctl.glue_tasks import TASKS, GlueTask, glue_average, task_score

BASELINES = ("bow", "majority")
_ROW_NAMES = {("MNLI", "dev_matched.tsv"): "MNLI-m", ("MNLI", "dev_mismatched.tsv"): "MNLI-mm"}
_SHORT = {"accuracy": "acc"}


def row_name(task: GlueTask, dev_file: str) -> str:
    return _ROW_NAMES.get((task.name, dev_file), task.name)


def spread(values: list[float]) -> dict:
    """Mean and sample standard deviation (null for a single value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def build(results: dict[str, dict], skipped: dict[str, str], seeds: list[int], meta: dict) -> dict:
    """glue.json: per-row figures per seed with mean ± std, the baselines, the averages, the skips."""
    rows: dict[str, dict] = {}
    for name, res in results.items():
        task = TASKS[name]
        for dev_file in task.dev_files:
            rows[row_name(task, dev_file)] = _row(task, dev_file, res)
    report = {**meta, "seeds": seeds, "tasks": rows, "skipped": dict(skipped)}
    if rows:
        report["average"] = _average(rows, seeds)
        if "WNLI" in rows and len({r["task"] for r in rows.values()}) > 1:
            # BERT's table leaves WNLI out (adversarial dev set): give the comparable figure too.
            report["average_without_wnli"] = _average({k: v for k, v in rows.items() if k != "WNLI"}, seeds)
    return report


def _row(task: GlueTask, dev_file: str, res: dict) -> dict:
    per_seed = [{"seed": r["seed"], "run": r["run"], "figures": r["dev"][dev_file],
                 "score": task_score(r["dev"][dev_file])} for r in res["runs"]]
    row = {"task": task.name, "dev_file": dev_file, "metrics": list(task.metrics),
           "examples": {"train": res["examples"][task.train_file], "dev": res["examples"][dev_file]},
           "runs": per_seed,
           "figures": {m: spread([s["figures"][m] for s in per_seed]) for m in task.metrics},
           "score": spread([s["score"] for s in per_seed])}
    for kind in BASELINES:
        figures = res.get("baselines", {}).get(kind, {}).get(dev_file)
        if figures is not None:
            score = task_score(figures)
            row[kind] = {"figures": figures, "score": score, "model_beats_it": row["score"]["mean"] > score}
    return row


def _average(rows: dict[str, dict], seeds: list[int]) -> dict:
    per_seed = [glue_average({k: r["runs"][i]["score"] for k, r in rows.items()}) for i in range(len(seeds))]
    out = {"model": spread(per_seed), "per_seed": per_seed, "rows": list(rows)}
    for kind in BASELINES:
        if all(kind in r for r in rows.values()):
            out[kind] = glue_average({k: r[kind]["score"] for k, r in rows.items()})
    return out


# ----------------------------------------------------------------------------------------------
# The table

HEADER = ["task", "metric", "model", "figures", "bag-of-words", "majority"]


def table_rows(report: dict) -> list[list[str]]:
    """The table's cells: one row per task row, then the average(s); scores times 100."""
    out = []
    for name, row in report["tasks"].items():
        metric = "/".join(_SHORT.get(m, m) for m in row["metrics"])
        figures = " / ".join(_pm(row["figures"][m]) for m in row["metrics"]) if len(row["metrics"]) > 1 else ""
        out.append([name, metric, _pm(row["score"]), figures,
                    *(_pct(row[k]["score"]) if k in row else "-" for k in BASELINES)])
    for key, label in (("average", "average"), ("average_without_wnli", "average w/o WNLI")):
        if key in report:
            avg = report[key]
            out.append([label, "", _pm(avg["model"]), "", *(_pct(avg[k]) if k in avg else "-" for k in BASELINES)])
    return out


def title(report: dict) -> str:
    n = len(report["seeds"])
    seeds = f"{n} seeds, mean ± std" if n > 1 else f"seed {report['seeds'][0]}"
    return f"GLUE dev scores × 100 of {report['model']} ({seeds})"


def footer(report: dict) -> list[str]:
    lines = []
    if "average" in report:
        rows = report["average"]["rows"]
        once = " (MNLI-m and MNLI-mm count as one task)" if "MNLI-m" in rows else ""
        lines.append(f"average over: {', '.join(rows)}{once}")
    for kind, what in (("bow", "the bag-of-words baseline"), ("majority", "the majority class")):
        behind = [k for k, r in report["tasks"].items() if kind in r and not r[kind]["model_beats_it"]]
        if behind:  # say it where it is true: pretraining has not paid off on these tasks
            lines.append(f"the model does not beat {what} on: {', '.join(behind)}")
    if report["skipped"]:
        lines.append("skipped: " + "; ".join(f"{k} ({v})" for k, v in report["skipped"].items()))
    return lines


def render(report: dict, markdown: bool) -> str:
    """The whole table as Markdown (glue.md) or aligned plain text (glue.txt)."""
    rows = table_rows(report)
    if markdown:
        lines = [f"**{title(report)}**", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines + [""] + [f"- {x}" for x in footer(report)]) + "\n"
    table = [HEADER, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    lines = [title(report)]
    for j, r in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + footer(report)) + "\n"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _pm(s: dict) -> str:
    return _pct(s["mean"]) + (f" ± {100 * s['std']:.1f}" if s["std"] is not None else "")
