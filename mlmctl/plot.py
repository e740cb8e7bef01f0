"""`mlmctl plot`: training curves of one or more runs, from their `metrics.jsonl` alone.

    mlmctl plot runs/demo/pretrain --output curves.png
    mlmctl plot runs/a/pretrain runs/b/pretrain --output compare.svg          # same axes, one legend
    mlmctl plot runs/demo/finetune-pretrained runs/demo/finetune-random -o ft.png

A pretrain run gives four panels against tokens seen: training loss (smoothed, raw faint),
validation perplexity, learning rate and tokens/s. A finetune run gives training loss and
learning rate against steps, and its dev accuracy and macro-F1 per epoch. A run still being
written plots too: a line cut short by the writer (the last one) is skipped.

The code goes rows -> series -> figure: `read_rows` and `*_panels` are pure and tested against
the metrics themselves; only `render` touches matplotlib (Agg, headless).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from mlmctl import safe_json
from mlmctl.errors import InputError, MlmctlError
from mlmctl.manifest import MANIFEST
from mlmctl.layout import METRICS_FILE as METRICS

FORMATS = ("png", "svg")
KINDS = ("pretrain", "finetune")
# TensorBoard's default weight is 0.6; metrics.jsonl rows are sparser than a TensorBoard stream
# (one per log_every steps), so a little more smoothing reads better at the same cost.
DEFAULT_SMOOTHING = 0.8
# The dev metrics a finetune run's plot shows (metrics.jsonl keys `dev_<name>`).
DEV_METRICS = {"accuracy": "dev accuracy", "macro_f1": "dev macro-F1"}


@dataclass
class Run:
    """One run's readable metrics rows; `kind` is "pretrain" or "finetune"."""

    name: str
    kind: str
    rows: list[dict]
    skipped: int = 0
    """Lines that were not JSON objects (a line cut short by a kill or a live writer)."""


@dataclass
class Series:
    """One line on one panel: what matplotlib is handed."""

    label: str
    x: list[float]
    y: list[float]
    faint: bool = False
    """Raw values drawn faint behind their smoothed line."""


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    xunit: str = ""
    """Unit for engineering tick labels (10k, 1.2M) on the x axis; "" for plain numbers."""
    logy: bool = False
    ylim: tuple[float, float] | None = None
    """Fixed y range (scores in [0, 1]: a flat line at 0.33 should not fill the panel)."""


def require() -> None:
    """Fail with one line naming the extra when matplotlib is missing (before any work)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise MlmctlError('plots need matplotlib, in the `plot` extra; install it with '
                          '`pip install "mlmctl[plot]"` (or `pip install matplotlib`)')


# ----------------------------------------------------------------------------------------------
# rows


def read_rows(path: Path) -> tuple[list[dict], int]:
    """(the JSON-object lines of a metrics.jsonl, how many lines were skipped). A live run's
    last line may be half written; a line of another shape is skipped and counted too."""
    rows, skipped = [], 0
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise InputError(f"plot: cannot read {path}: {e.strerror or e}") from None
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = safe_json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
        else:
            skipped += 1
    return rows, skipped


def load_run(run_dir: Path, name: str | None = None) -> Run:
    """A pretrain or finetune run directory, finished or still running."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"plot: {run_dir} does not exist; give a pretrain or finetune run directory")
    stage = _manifest_stage(run_dir)
    if stage is not None and stage not in KINDS:
        raise InputError(f"plot: {run_dir} holds `{stage}` output; plot takes pretrain or finetune run "
                         f"directories (the ones holding {METRICS})")
    path = run_dir / METRICS
    if not path.is_file():
        raise InputError(f"plot: {run_dir} has no {METRICS}; give a pretrain or finetune run directory "
                         f"(it appears once the run has logged its first step)")
    rows, skipped = read_rows(path)
    if not rows:
        raise InputError(f"plot: {path} holds no readable rows yet ({skipped} unreadable line(s)); "
                         f"wait for the run to log a step, or check that it is a metrics file")
    kind = stage or ("finetune" if any("epoch" in r for r in rows) else "pretrain")
    return Run(name or run_dir.name, kind, rows, skipped)


def load_runs(run_dirs: list[Path]) -> list[Run]:
    """Load every run; legend names are the directory names, made longer where two collide."""
    names = _legend_names([Path(d) for d in run_dirs])
    runs = [load_run(d, n) for d, n in zip(run_dirs, names)]
    kinds = {r.kind for r in runs}
    if len(kinds) > 1:
        which = ", ".join(f"{d} ({r.kind})" for d, r in zip(run_dirs, runs))
        raise InputError(f"plot: pretrain and finetune runs have different axes: {which}; plot each kind "
                         f"with its own `mlmctl plot` command")
    return runs


def _manifest_stage(run_dir: Path) -> str | None:
    try:
        stage = safe_json.loads((run_dir / MANIFEST).read_text()).get("stage")
    except (OSError, ValueError, AttributeError):
        return None  # a running run has no manifest yet
    return stage if isinstance(stage, str) else None


def _legend_names(dirs: list[Path]) -> list[str]:
    short = [d.resolve().name for d in dirs]
    # runs/a/pretrain and runs/b/pretrain -> a/pretrain, b/pretrain
    return [n if short.count(n) == 1 else "/".join(d.resolve().parts[-2:]) for n, d in zip(short, dirs)]


# ----------------------------------------------------------------------------------------------
# series (pure)


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average, debiased at the start as TensorBoard's smoothing is (so the
    first points are not pulled towards 0)."""
    out, acc = [], 0.0
    for i, v in enumerate(values, 1):
        acc = weight * acc + (1 - weight) * v
        out.append(acc / (1 - weight ** i))
    return out


def _num(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _xy(rows: list[dict], xkey: str, ykey: str) -> tuple[list[float], list[float]]:
    pts = [(_num(r.get(xkey)), _num(r.get(ykey))) for r in rows]
    pts = [(x, y) for x, y in pts if x is not None and y is not None]
    return [x for x, _ in pts], [y for _, y in pts]


def pretrain_panels(runs: list[Run], smoothing: float = DEFAULT_SMOOTHING) -> list[Panel]:
    """Loss, validation perplexity, learning rate and tokens/s against tokens seen (or against
    steps, labelled so, when a run's rows carry no token count)."""
    by_tokens = all(any("tokens" in r for r in run.rows) for run in runs)
    xkey = "tokens" if by_tokens else "step"
    xlabel, xunit = ("tokens seen", "tokens") if by_tokens else ("optimizer step (no token counts logged)", "")
    loss = Panel("training loss", xlabel, "MLM loss (nats per masked token)", xunit=xunit)
    ppl = Panel("validation perplexity", xlabel, "perplexity (log scale)", xunit=xunit, logy=True)
    lr = Panel("learning rate", xlabel, "learning rate", xunit=xunit)
    speed = Panel("throughput", xlabel, "tokens/s", xunit=xunit)
    for run in runs:
        x, y = _xy(run.rows, xkey, "loss")
        if y:
            loss.series.append(Series(run.name, x, y, faint=True))
            loss.series.append(Series(run.name, x, ema(y, smoothing)))
        for panel, key in ((ppl, "val_ppl"), (lr, "lr"), (speed, "tokens_per_s")):
            x, y = _xy(run.rows, xkey, key)
            if y:
                panel.series.append(Series(run.name, x, y))
    return [loss, ppl, lr, speed]


def finetune_panels(runs: list[Run], smoothing: float = DEFAULT_SMOOTHING) -> list[Panel]:
    """Training loss and learning rate per step; the dev metrics per epoch."""
    loss = Panel("training loss", "optimizer step", "cross-entropy loss (mean since last log)")
    lr = Panel("learning rate", "optimizer step", "learning rate")
    devs = {k: Panel(t, "epoch (evaluations spread evenly within an epoch)", t.replace("dev ", ""), ylim=(0, 1.02))
            for k, t in DEV_METRICS.items()}
    for run in runs:
        x, y = _xy(run.rows, "step", "loss")
        if y:
            loss.series.append(Series(run.name, x, y, faint=True))
            loss.series.append(Series(run.name, x, ema(y, smoothing)))
        x, y = _xy(run.rows, "step", "lr")
        if y:
            lr.series.append(Series(run.name, x, y))
        dev_rows = [r for r in run.rows if any(f"dev_{k}" in r for k in DEV_METRICS)]
        xs = dev_epochs(dev_rows)
        for key, panel in devs.items():
            pts = [(x, _num(r.get(f"dev_{key}"))) for x, r in zip(xs, dev_rows)]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                panel.series.append(Series(run.name, [p[0] for p in pts], [p[1] for p in pts]))
    return [loss, lr, *devs.values()]


def dev_epochs(dev_rows: list[dict]) -> list[float]:
    """The epoch position of each evaluation: 1.0 = the end of the first epoch. Rows carry the
    0-based epoch they were written in; with several evaluations in one epoch they are placed
    evenly within it (the last at its end), as `eval_every` spaces them."""
    per_epoch: dict[int, int] = {}
    for r in dev_rows:
        per_epoch[r.get("epoch", 0)] = per_epoch.get(r.get("epoch", 0), 0) + 1
    seen: dict[int, int] = {}
    out = []
    for r in dev_rows:
        e = r.get("epoch", 0)
        seen[e] = seen.get(e, 0) + 1
        out.append(e + seen[e] / per_epoch[e])
    return out


def panels_for(runs: list[Run], smoothing: float = DEFAULT_SMOOTHING) -> list[Panel]:
    return (finetune_panels if runs[0].kind == "finetune" else pretrain_panels)(runs, smoothing)


# ----------------------------------------------------------------------------------------------
# figure


def render(panels: list[Panel], title: str):
    """A matplotlib Figure (Agg canvas, no display needed) with one subplot per panel."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, MaxNLocator

    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(11, 3.6 * rows + 0.6), dpi=100, layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    names = list(dict.fromkeys(s.label for p in panels for s in p.series))
    colour = {n: f"C{i % 10}" for i, n in enumerate(names)}
    for ax, panel in zip(axes, panels):
        for s in panel.series:
            marker = "o" if len(s.x) < 30 and not s.faint else None
            ax.plot(s.x, s.y, color=colour[s.label], alpha=0.25 if s.faint else 1.0, lw=1 if s.faint else 1.8,
                    marker=marker, ms=3, label=None if s.faint else s.label)
        ax.set_title(panel.title)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if panel.xunit:
            ax.xaxis.set_major_formatter(EngFormatter(sep=" "))
        else:  # steps and epochs are whole numbers
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if panel.logy and panel.series:
            ax.set_yscale("log")
        if panel.ylim:
            ax.set_ylim(*panel.ylim)
        if not panel.series:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if names:
        # One legend for the figure: the same colour is the same run on every panel.
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colour[n], lw=1.8, label=n) for n in names]
        faint = any(s.faint for p in panels for s in p.series)
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(names), 4),
                   title="run" + (" (raw loss drawn faint behind the smoothed line)" if faint else ""))
    return fig


def figure_bytes(fig, fmt: str = "png") -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, metadata=_reproducible(fmt))
    if fmt != "png":
        return buf.getvalue()
    # Line art has few colours: a 256-colour palette looks the same and is about 3x smaller (docs
    # images stay well under 150 KB, HTML reports small). Pillow comes with matplotlib.
    from PIL import Image

    buf.seek(0)
    image = Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="png", optimize=True)
    return out.getvalue()


def _reproducible(fmt: str) -> dict:
    # No creation date or software version in the file: regenerated docs images only change
    # when the picture does.
    return {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}


def run(run_dirs: list[Path], output: Path, fmt: str | None, smoothing: float = DEFAULT_SMOOTHING) -> Path:
    """Write the plot of `run_dirs` to `output`; returns the path written."""
    require()
    output = Path(output)
    fmt = _format(output, fmt)
    if not 0 <= smoothing < 1:
        raise MlmctlError(f"plot: --smoothing {smoothing} must be in [0, 1) (0: none; TensorBoard's default is 0.6)")
    runs = load_runs(run_dirs)
    title = f"{runs[0].kind}: " + ", ".join(r.name for r in runs)
    data = figure_bytes(render(panels_for(runs, smoothing), title), fmt)
    from mlmctl.shards import atomic_write_bytes

    atomic_write_bytes(output, data)
    skipped = sum(r.skipped for r in runs)
    note = f" ({skipped} unreadable line(s) skipped)" if skipped else ""
    print(f"wrote {output}{note}")
    return output


def _format(output: Path, fmt: str | None) -> str:
    suffix = output.suffix.lower().lstrip(".")
    fmt = (fmt or suffix or "png").lower()
    if fmt not in FORMATS:
        raise MlmctlError(f"plot: format `{fmt}` is not supported; use --format png or --format svg")
    if suffix != fmt:
        raise MlmctlError(f"plot: --output {output} does not end in .{fmt}; name the file {output.stem}.{fmt} "
                          f"or pass --format {suffix or 'png'}")
    return fmt
