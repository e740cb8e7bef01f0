"""`mlmctl plot`: the series handed to matplotlib equal the metrics, the image is a real PNG/SVG,
and bad input is one clear line."""

from __future__ import annotations

import json
import struct

import pytest

from mlmctl import plot
from mlmctl.errors import MlmctlError


def _pretrain_rows(steps=10, scale=1.0):
    """Rows as pretrain writes them: a step-0 validation, a train row every 2 steps, validation
    merged into the train row every 4 steps."""
    rows = [{"step": 0, "tokens": 0, "val_loss": 6.9, "val_ppl": 1000.0 * scale, "time": 1.0, "elapsed_s": 6.0}]
    for s in range(2, steps + 1, 2):
        row = {"step": s, "tokens": 512 * s, "loss": 7.0 - 0.1 * s * scale, "lr": 1e-3 * (1 - s / (steps + 1)),
               "grad_norm": 1.5, "tokens_per_s": 1500 + s, "train_s": 0.3 * s, "time": 1.0 + s, "elapsed_s": 6.0 + s}
        if s % 4 == 0:
            row.update(val_loss=6.5 - 0.1 * s, val_ppl=600.0 * scale - 10 * s)
        rows.append(row)
    return rows


def _finetune_rows():
    """Two epochs, two evaluations in the first (eval_every half an epoch), one in the second."""
    dev = {"dev_micro_f1": 0.5, "dev_weighted_f1": 0.5, "dev_macro_precision": 0.5, "dev_macro_recall": 0.5}
    return [
        {"step": 6, "epoch": 0, "dev_accuracy": 0.40, "dev_macro_f1": 0.20, **dev, "best": True},
        {"step": 10, "epoch": 0, "loss": 1.10, "lr": 5e-4, "grad_norm": 0.3},
        {"step": 12, "epoch": 0, "dev_accuracy": 0.50, "dev_macro_f1": 0.30, **dev, "best": True},
        {"step": 20, "epoch": 1, "loss": 0.90, "lr": 2e-4, "grad_norm": 0.3},
        {"step": 24, "epoch": 1, "dev_accuracy": 0.45, "dev_macro_f1": 0.35, **dev, "best": False},
    ]


def _run_dir(path, rows, stage=None, tail=""):
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    if stage:
        (path / "manifest.json").write_text(json.dumps({"stage": stage}))
    return path


def _series(panel):
    return [(s.label, s.x, s.y, s.faint) for s in panel.series]


# ---------------------------------------------------------------------------------------------- rows


def test_live_run_truncated_last_line_is_skipped(tmp_path):
    rows = _pretrain_rows()
    d = _run_dir(tmp_path / "live", rows, tail='\n{"step": 12, "tokens": 61')  # blank line + a half-written row
    run = plot.load_run(d)
    assert run.rows == rows and run.skipped == 1 and run.kind == "pretrain"


def test_kind_from_manifest_else_rows(tmp_path):
    assert plot.load_run(_run_dir(tmp_path / "ft", _finetune_rows())).kind == "finetune"
    assert plot.load_run(_run_dir(tmp_path / "m", _finetune_rows(), stage="finetune")).kind == "finetune"


# -------------------------------------------------------------------------------------------- series


def test_pretrain_series_equal_the_metrics(tmp_path):
    rows = _pretrain_rows()
    run = plot.load_run(_run_dir(tmp_path / "a", rows))
    loss, ppl, lr, speed = plot.pretrain_panels([run], smoothing=0.5)
    train = [r for r in rows if "loss" in r]
    assert loss.xlabel == "tokens seen" and loss.xunit == "tokens"
    raw, smooth = loss.series
    assert (raw.x, raw.y, raw.faint) == ([r["tokens"] for r in train], [r["loss"] for r in train], True)
    assert smooth.x == raw.x and smooth.y == plot.ema(raw.y, 0.5) and not smooth.faint
    assert _series(ppl) == [("a", [r["tokens"] for r in rows if "val_ppl" in r], [r["val_ppl"] for r in rows
                                                                                 if "val_ppl" in r], False)]
    assert ppl.series[0].x[0] == 0  # the step-0 validation is the start of the curve
    assert _series(lr) == [("a", raw.x, [r["lr"] for r in train], False)]
    assert _series(speed) == [("a", raw.x, [r["tokens_per_s"] for r in train], False)]


def test_runs_without_token_counts_fall_back_to_steps_and_say_so(tmp_path):
    old = [{k: v for k, v in r.items() if k != "tokens"} for r in _pretrain_rows()]
    runs = [plot.load_run(_run_dir(tmp_path / "old", old)), plot.load_run(_run_dir(tmp_path / "new", _pretrain_rows()))]
    loss = plot.pretrain_panels(runs)[0]
    assert "step" in loss.xlabel and loss.xunit == ""
    assert loss.series[0].x == [r["step"] for r in old if "loss" in r]
    assert [s.label for s in loss.series] == ["old", "old", "new", "new"]


def test_finetune_dev_metrics_per_epoch(tmp_path):
    rows = _finetune_rows()
    run = plot.load_run(_run_dir(tmp_path / "ft", rows))
    loss, lr, acc, f1 = plot.finetune_panels([run], smoothing=0.0)
    assert _series(acc) == [("ft", [0.5, 1.0, 2.0], [0.40, 0.50, 0.45], False)]
    assert _series(f1) == [("ft", [0.5, 1.0, 2.0], [0.20, 0.30, 0.35], False)]
    assert loss.series[0].x == [10, 20] and loss.series[1].y == [1.10, 0.90]  # smoothing 0: raw
    assert _series(lr) == [("ft", [10, 20], [5e-4, 2e-4], False)]


def test_ema_by_hand():
    assert plot.ema([1.0, 3.0], 0.0) == [1.0, 3.0]
    assert plot.ema([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # debiased: no pull to 0
    # weight 0.5: acc 0.5, then 0.25 + 1.5 = 1.75; debiased by 1 - 0.25 -> 7/3
    assert plot.ema([1.0, 3.0], 0.5) == pytest.approx([1.0, 7 / 3])


def test_same_named_runs_get_told_apart(tmp_path):
    a = _run_dir(tmp_path / "exp1" / "pretrain", _pretrain_rows())
    b = _run_dir(tmp_path / "exp2" / "pretrain", _pretrain_rows(scale=2))
    assert [r.name for r in plot.load_runs([a, b])] == ["exp1/pretrain", "exp2/pretrain"]


# ----------------------------------------------------------------------------------- files and CLI


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_two_runs_make_a_png_and_an_svg(tmp_path, run_cli):
    pytest.importorskip("matplotlib")
    a = _run_dir(tmp_path / "small-lr", _pretrain_rows(), stage="pretrain")
    b = _run_dir(tmp_path / "big-lr", _pretrain_rows(scale=2))  # still running: no manifest
    code, out, err = run_cli("plot", a, b, "--output", tmp_path / "cmp.png")
    assert code == 0, err
    width, height = _png_size(tmp_path / "cmp.png")
    assert 800 <= width <= 2000 and 500 <= height <= 1500
    assert 10_000 < (tmp_path / "cmp.png").stat().st_size < 400_000
    code, _, err = run_cli("plot", a, b, "-o", tmp_path / "cmp.svg", "--format", "svg")
    assert code == 0, err
    svg = (tmp_path / "cmp.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "small-lr" in svg and "big-lr" in svg  # the legend (text is kept as text in the SVG)


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("no-metrics", "has no metrics.jsonl"),
    ("other-stage", "holds `eval` output"),
    ("unreadable", "no readable rows"),
    ("mixed", "pretrain and finetune runs"),
])
def test_bad_input_is_one_line(tmp_path, run_cli, case, message):
    pytest.importorskip("matplotlib")
    good = _run_dir(tmp_path / "good", _pretrain_rows())
    bad = tmp_path / case
    if case == "no-metrics":
        bad.mkdir()
    elif case == "other-stage":
        _run_dir(bad, [{"step": 1}], stage="eval")
    elif case == "unreadable":
        _run_dir(bad, [], tail='not json\n["a list"]\n{"step": "x"}\n{"ste')
    elif case == "mixed":
        _run_dir(bad, _finetune_rows())
    code, out, err = run_cli("plot", good, bad, "-o", tmp_path / "out.png")
    assert code == 1 and err.count("\n") == 1 and err.startswith("mlmctl: error: plot: ") and message in err, err
    assert not (tmp_path / "out.png").exists()


def test_format_and_suffix_must_agree(tmp_path, run_cli):
    pytest.importorskip("matplotlib")
    good = _run_dir(tmp_path / "good", _pretrain_rows())
    code, _, err = run_cli("plot", good, "-o", tmp_path / "x.png", "--format", "svg")
    assert code == 1 and "does not end in .svg" in err
    code, _, err = run_cli("plot", good, "-o", tmp_path / "x.jpg")
    assert code == 1 and "use --format png or --format svg" in err


def test_missing_matplotlib_is_one_line_before_any_work(tmp_path, run_cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    # The run directory does not even exist: the missing library is reported first.
    code, _, err = run_cli("plot", tmp_path / "nope", "-o", tmp_path / "x.png")
    assert code == 1 and err.strip() == ('mlmctl: error: plots need matplotlib, in the `plot` extra; install it '
                                         'with `pip install "mlmctl[plot]"` (or `pip install matplotlib`)')
    with pytest.raises(MlmctlError):
        plot.require()


def test_docs_images_exist_and_stay_small():
    """docs/monitoring.md's pictures (regenerated by `make docs-images`) are there and small."""
    import re
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    images = re.findall(r"!\[[^]]*\]\((img/[^)]+\.png)\)", (docs / "monitoring.md").read_text())
    assert len(images) >= 4
    for name in images:
        assert _png_size(docs / name) and (docs / name).stat().st_size < 150_000, name
