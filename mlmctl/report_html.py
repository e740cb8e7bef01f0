"""`mlmctl report --html FILE`: the chain summary as one self-contained HTML page.

    mlmctl report --data data/demo --runs runs/demo --html runs/demo/report.html

The page holds the summary tables of `mlmctl report`, the pretraining (and fine-tuning) curves of
`mlmctl plot`, the majority / random-init / pretrained comparison as a bar chart, and for each
classifier its confusion matrix as a heat map with per-class precision, recall and F1; when the
chain has them, its taggers (entity F1 and token accuracy with intervals, per entity type, beside
the every-token-O baseline and whether each beats it, pretrained vs random init as a paired
bootstrap, and a bar chart) and its regression models (Pearson, Spearman, MSE beside the
train-mean and tf-idf baselines). Images are inline PNGs (`data:image/png;base64`), there are no
scripts and no links to fetch: the file opens in a browser without network access and can be
mailed or attached to CI as it is.

`write_images(DIR, data, runs)` saves the same figures as PNG files (`make docs-images` uses it).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from mlmctl import plot, safe_json
from mlmctl.errors import MlmctlError
from mlmctl.report import EVAL_JSON, LABELS, eval_label, find_evals, find_pretrain
from mlmctl.report_tagging import LABELS as TAGGER_LABELS

# A report table cell: "0.787" or "0.787 [0.745, 0.826]" (a figure with its 95% interval).
_CELL = re.compile(r"^\s*(-?[\d.]+)(?:\s*\[(-?[\d.]+),\s*(-?[\d.]+)\])?")
# The columns of report's test-set table.
HEADER = ["model", "accuracy", "macro-F1"]
# Heat-map cells are annotated with their counts up to this many classes (beyond, unreadable).
MAX_ANNOTATED_CLASSES = 20

require = plot.require


def write(path: Path, rows: list[tuple[str, str]], table: list[tuple], data: Path | None, runs: Path | None,
          evals: list[Path] | None) -> Path:
    """Write the page to `path` (atomically) from report's rows and test-set table (one row per
    model: name, accuracy, macro-F1); `evals` None means every eval directory under `runs`."""
    from mlmctl import __version__
    from mlmctl.shards import atomic_write_text

    evals = evals if evals is not None else (find_evals(runs) if runs is not None else [])
    where = ", ".join(str(p) for p in (data, runs) if p is not None) or ", ".join(map(str, evals))
    parts = [f"<h1>mlmctl chain report</h1>\n<p>{_e(where)} &middot; mlmctl {_e(__version__)}</p>",
             "<h2 id='summary'>Chain summary</h2>", _table(None, rows), _table(HEADER, table)]
    parts += _curves_section("pretraining", _pretrain_dirs(runs), "pretraining curves")
    parts += _curves_section("finetuning", _finetune_dirs(runs), "fine-tuning curves")
    bars = comparison_figure(HEADER, table)
    parts.append("<h2 id='comparison'>Downstream comparison</h2>")
    parts.append(_img(bars, "accuracy and macro-F1 per model") if bars else "<p>no classifier scores to compare</p>")
    parts.append("<h2 id='classifiers'>Classifiers</h2>")
    classifiers = [(d, ev) for d in evals if "accuracy" in (ev := _load(d / EVAL_JSON))]
    if not classifiers:
        parts.append("<p>no classifier eval.json found</p>")
    for d, ev in classifiers:
        name = LABELS.get(d.name) or eval_label(d, runs)
        parts.append(f"<h3>{_e(name)}</h3><p>{_e(str(d / EVAL_JSON))}: {ev.get('n', '?')} test examples, "
                     f"accuracy {ev['accuracy']:.3f}, macro-F1 {ev.get('macro_f1', 0):.3f}</p>")
        parts.append(_img(confusion_figure(ev, name), f"confusion matrix of {name}"))
        parts.append(_table(["class", "precision", "recall", "F1", "support"], _per_class_rows(ev)))
    parts += _tagger_section(evals, runs) + _regression_section(evals, runs)
    atomic_write_text(path, _page("mlmctl chain report", "\n".join(parts)))
    return Path(path)


def write_images(out_dir: str | Path, data: str | Path | None, runs: str | Path) -> list[Path]:
    """The report's figures as PNG files in `out_dir` (for docs/img; `make docs-images`)."""
    from mlmctl.report import summary_rows
    from mlmctl.shards import atomic_write_bytes

    require()
    runs, out_dir = Path(runs), Path(out_dir)
    data = Path(data) if data is not None else None
    _, table = summary_rows(data, runs)
    figures = {"pretrain-curves": _curves(_pretrain_dirs(runs)), "finetune-curves": _curves(_finetune_dirs(runs)),
               "comparison": comparison_figure(HEADER, table)}
    for d in find_evals(runs):
        ev = _load(d / EVAL_JSON)
        if "accuracy" in ev:
            figures[f"confusion-{d.name}"] = confusion_figure(ev, LABELS.get(d.name) or d.name)
    written = []
    for name, fig in figures.items():
        if fig is not None:
            atomic_write_bytes(out_dir / f"{name}.png", plot.figure_bytes(fig, "png"))
            written.append(out_dir / f"{name}.png")
    return written


# ----------------------------------------------------------------------------------------------
# figures


def comparison_figure(header: list[str], table: list[tuple],
                      title: str = "downstream task: majority class vs random init vs pretrained"):
    """Grouped bars, one group per model (majority class, random init, pretrained, ...), one bar
    per score column, with the 95% interval as an error bar when the table gives one."""
    width = len(header) - 1  # a short row is padded, extra columns are not charted
    scored = [(row[0], ([_cell(c) for c in row[1:len(header)]] + [None] * width)[:width]) for row in table]
    scored = [(name, cells) for name, cells in scored if any(c is not None for c in cells)]
    if not scored:
        return None
    from matplotlib.figure import Figure

    metrics = list(header[1:])
    fig = Figure(figsize=(8, 0.5 + 0.55 * len(scored) * len(metrics) + 0.8), dpi=100, layout="constrained")
    ax = fig.subplots()
    height = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        ys = [i + (j - (len(metrics) - 1) / 2) * height for i in range(len(scored))]
        vals = [(cells[j] or (0.0, None))[0] for _, cells in scored]
        cis = [cells[j][1] if cells[j] else None for _, cells in scored]
        err = None
        if any(cis):  # asymmetric: (value - low, high - value)
            err = [[v - c[0] if c else 0 for v, c in zip(vals, cis)], [c[1] - v if c else 0 for v, c in zip(vals, cis)]]
        bars = ax.barh(ys, vals, height=height * 0.9, xerr=err, capsize=3, color=f"C{j}", label=metric)
        texts = [f"{cells[j][0]:.3f}" if cells[j] else "missing" for _, cells in scored]
        ax.bar_label(bars, labels=texts, padding=4, fontsize=8)
    ax.set_yticks(range(len(scored)), [name for name, _ in scored])
    ax.invert_yaxis()  # the table's order, top to bottom
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("score on the test set (error bars: 95% bootstrap interval, when computed)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    return fig


def confusion_figure(ev: dict, name: str):
    """Heat map of eval.json's confusion matrix (rows gold, columns predicted), coloured by the
    share of each gold class (so a small class reads as clearly as a large one), annotated with
    counts."""
    from matplotlib.figure import Figure

    labels, cm = ev.get("labels") or [], ev.get("confusion_matrix") or []
    k = len(labels)
    side = min(3 + 0.45 * k, 12)
    fig = Figure(figsize=(side + 1.5, side), dpi=100, layout="constrained")
    ax = fig.subplots()
    shares = [[c / max(sum(row), 1) for c in row] for row in cm]
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="share of the gold class")
    ax.set_xticks(range(k), labels, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"confusion matrix: {name}")
    if k <= MAX_ANNOTATED_CLASSES:
        for i, row in enumerate(cm):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                        color="white" if shares[i][j] > 0.6 else "black")
    return fig


def _curves(run_dirs: list[Path]):
    runs = []
    for d in run_dirs:
        try:
            runs.append(plot.load_run(d))
        except MlmctlError:
            continue  # a run that logged nothing yet: the page says the curves are missing
    if not runs:
        return None
    return plot.render(plot.panels_for(runs), f"{runs[0].kind}: " + ", ".join(r.name for r in runs))


def _curves_section(anchor: str, run_dirs: list[Path], what: str) -> list[str]:
    fig = _curves(run_dirs)
    title = what[0].upper() + what[1:]
    body = _img(fig, what) if fig is not None else f"<p>missing: no run with readable {plot.METRICS} found</p>"
    return [f"<h2 id='{anchor}'>{title}</h2>", body]


def _pretrain_dirs(runs: Path | None) -> list[Path]:
    if runs is None:
        return []
    d = find_pretrain(Path(runs))
    return [d] if (d / plot.METRICS).is_file() else []


def _finetune_dirs(runs: Path | None) -> list[Path]:
    """Finetune runs under `runs`: a manifest saying so, or (still running) rows with epochs."""
    if runs is None:
        return []
    found = []
    for m in sorted(Path(runs).rglob(plot.METRICS)):
        try:
            if plot.load_run(m.parent).kind == "finetune":
                found.append(m.parent)
        except MlmctlError:
            continue
    return found


# ----------------------------------------------------------------------------------------------
# tagging and regression: what the text report's lines say, per model, with a chart for taggers

TAGGER_HEADER = ["model", "entity F1", "token accuracy"]


def _tagger_section(evals: list[Path], runs: Path | None) -> list[str]:
    """Each tagger eval (entity F1 and token accuracy with intervals, per entity type, paired
    against every token O), the constant baselines, pretrained vs random init (paired), and the
    figures as bars. Nothing when the chain has no tagger, as the text report then prints no
    tagging line."""
    from mlmctl.report import with_ci
    from mlmctl.report_tagging import PRETRAINED, RANDOM, all_o_effect, is_tagging_eval, paired_effect

    taggers = [(d, ev) for d in evals if is_tagging_eval(ev := _load(d / EVAL_JSON)) and "token_accuracy" in ev]
    if not taggers:
        return []
    parts = ["<h2 id='taggers'>Taggers</h2>"]
    chart = []
    for d, ev in taggers:
        name = TAGGER_LABELS.get(d.name) or eval_label(d, runs)
        f1 = with_ci(ev, "entity_f1") if "entity_f1" in ev else "n/a (tag_scheme none)"
        chart.append((name, f1, with_ci(ev, "token_accuracy")))
        parts.append(f"<h3>{_e(name)}</h3><p>{_e(str(d / EVAL_JSON))}: {ev.get('n_sentences', '?')} test sentences, "
                     f"entity F1 {_e(f1)}, token accuracy {_e(with_ci(ev, 'token_accuracy'))}</p>")
        if "all_O" in (ev.get("baseline") or {}):
            parts.append(f"<p>{_e(all_o_effect(d))}</p>")
        per_type = ev.get("per_type") or {}
        if per_type:
            parts.append(_table(["entity type", "precision", "recall", "F1", "support"],
                                [(k, *(_num(v.get(m)) for m in ("precision", "recall", "f1")), v.get("support", "?"))
                                 for k, v in per_type.items()]))
    for b in (taggers[0][1].get("baseline") or {}).values():
        chart.append((f"every token {b.get('tag', '?')}", _num(b.get("entity_f1")), _num(b.get("token_accuracy"))))
    by_name = {d.name: d for d, _ in taggers}
    if PRETRAINED in by_name and RANDOM in by_name:
        parts.append(f"<p>pretraining effect: {_e(paired_effect(by_name[PRETRAINED], by_name[RANDOM]))}</p>")
    parts.append(_table(TAGGER_HEADER, chart))
    fig = comparison_figure(TAGGER_HEADER, chart, "tagging: pretrained vs random init vs constant baselines")
    if fig is not None:
        parts.append(_img(fig, "entity F1 and token accuracy per tagger"))
    return parts


def _regression_section(evals: list[Path], runs: Path | None) -> list[str]:
    """Each regression eval: Pearson, Spearman and MSE with intervals beside the train-mean and
    tf-idf + ridge baselines (the text report's regression line, as a table)."""
    from mlmctl.report import regression_baseline_effect, with_ci

    regressors = [(d, ev) for d in evals if "pearson" in (ev := _load(d / EVAL_JSON)) and "accuracy" not in ev]
    if not regressors:
        return []
    parts = ["<h2 id='regression'>Regression</h2>"]
    for d, ev in regressors:
        name = LABELS.get(d.name) or eval_label(d, runs)
        rows = [(name, *(with_ci(ev, k) for k in ("pearson", "spearman", "mse")))]
        mean = ev.get("mean_baseline") or {}
        if "mse" in mean:
            rows.append(("train-mean predictor", "", "", _num(mean["mse"])))
        bl = ev.get("baseline") or {}
        if "pearson" in bl:
            rows.append(("tf-idf + ridge baseline", *(with_ci(bl, k) if k in bl else "" for k in
                                                     ("pearson", "spearman", "mse"))))
        parts.append(f"<h3>{_e(name)}</h3><p>{_e(str(d / EVAL_JSON))}</p>")
        parts.append(_table(["model", "pearson", "spearman", "MSE"], rows))
        if "pearson" in bl:
            parts.append(f"<p>vs baseline: {_e(regression_baseline_effect(d))}</p>")
    return parts


def _num(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "missing"


# ----------------------------------------------------------------------------------------------
# HTML


def _page(title: str, body: str) -> str:
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;"
             "text-align:left}th{background:#f3f3f3}img{max-width:100%;height:auto}")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{style}</style></head>\n<body>\n{body}\n</body></html>\n")


def _table(header: list[str] | None, rows: list[tuple]) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _img(fig, alt: str) -> str:
    data = base64.b64encode(plot.figure_bytes(fig, "png")).decode("ascii")
    return f"<p><img alt='{_e(alt)}' src='data:image/png;base64,{data}'></p>"


def _per_class_rows(ev: dict) -> list[tuple]:
    rows = []
    for label in ev.get("labels") or []:
        pc = (ev.get("per_class") or {}).get(label, {})
        rows.append((label, *(f"{pc[k]:.3f}" if isinstance(pc.get(k), (int, float)) else "missing"
                              for k in ("precision", "recall", "f1")), pc.get("support", "missing")))
    return rows


def _cell(text) -> tuple[float, tuple[float, float] | None] | None:
    m = _CELL.match(str(text))
    if not m:
        return None
    try:
        ci = (float(m[2]), float(m[3])) if m[2] else None
        return float(m[1]), ci
    except ValueError:
        return None


def _load(path: Path) -> dict:
    try:
        value = safe_json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _e(value) -> str:
    return html.escape(str(value), quote=True)
