"""`mlmctl report --html`: a self-contained page with the expected sections and inline images."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from mlmctl import report_html

LABELS = ["email", "logging", "unittest"]


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)


def _classifier_eval(acc, f1, cm):
    per_class = {x: {"precision": 0.5, "recall": 0.25 * (i + 1), "f1": 0.4, "support": sum(cm[i])}
                 for i, x in enumerate(LABELS)}
    return {"mode": "classifier", "n": sum(map(sum, cm)), "accuracy": acc, "macro_f1": f1, "labels": LABELS,
            "per_class": per_class, "confusion_matrix": cm}


def _chain(tmp_path):
    """The layout scripts/chain.sh leaves, with the files the report reads."""
    data, runs = tmp_path / "data", tmp_path / "runs"
    task = {"labels": LABELS, "counts": {"train": dict.fromkeys(LABELS, 60), "test": dict.fromkeys(LABELS, 15)},
            "majority_test_accuracy": 1 / 3, "majority_label": "email"}
    _write(data / "task" / "manifest.json", {"stage": "demo-task", "extra": task})
    _write(runs / "pretrain" / "manifest.json", {"stage": "pretrain", "extra": {"steps": 8, "tokens": 4096}})
    rows = [{"step": 0, "tokens": 0, "val_loss": 6.9, "val_ppl": 990.0}] + [
        {"step": s, "tokens": 512 * s, "loss": 7 - s / 10, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 900}
        for s in (2, 4, 6, 8)]
    _write(runs / "pretrain" / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _write(runs / "finetune-pretrained" / "metrics.jsonl",
           json.dumps({"step": 4, "epoch": 0, "loss": 1.0, "lr": 1e-4}) + "\n"
           + json.dumps({"step": 4, "epoch": 0, "dev_accuracy": 0.6, "dev_macro_f1": 0.5}) + "\n")
    _write(runs / "eval-pretrained" / "eval.json",
           _classifier_eval(0.8, 0.78, [[12, 2, 1], [1, 13, 1], [2, 2, 11]]))
    _write(runs / "eval-random" / "eval.json", _classifier_eval(0.5, 0.45, [[8, 4, 3], [5, 7, 3], [4, 3, 8]]))
    return data, runs


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.headings, self.imgs, self.links, self.cells, self.scripts = [], [], [], [], 0
        self._tag = None

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        attrs = dict(attrs)
        self.scripts += tag == "script"
        if tag == "img":
            self.imgs.append(attrs)
        self.links += [v for k, v in attrs.items() if k in ("src", "href") and v]

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag in ("h2", "h3"):
            self.headings.append(data)
        elif self._tag == "td":
            self.cells.append(data)


def test_page_is_self_contained_with_every_section(tmp_path, run_cli):
    pytest.importorskip("matplotlib")
    data, runs = _chain(tmp_path)
    out = tmp_path / "report.html"
    code, stdout, err = run_cli("report", "--data", data, "--runs", runs, "--html", out)
    assert code == 0, err
    assert stdout.rstrip().splitlines()[-1] == f"wrote {out}"  # the page's path comes last
    page = _Page()
    page.feed(out.read_text())
    page.close()
    assert page.headings == ["Chain summary", "Pretraining curves", "Fine-tuning curves", "Downstream comparison",
                             "Classifiers", "pretrained + finetune", "random init + finetune"]
    # curves x2, comparison, two confusion matrices: every one an inline PNG
    assert len(page.imgs) == 5 and all(i["src"].startswith("data:image/png;base64,") for i in page.imgs)
    assert not [x for x in page.links if x.startswith(("http://", "https://", "//"))] and page.scripts == 0
    assert {"majority class", "pretrained + finetune", "0.800", "0.780", "unittest"} <= set(page.cells)


def test_missing_parts_are_said_missing(tmp_path, run_cli):
    pytest.importorskip("matplotlib")
    (tmp_path / "runs").mkdir()
    out = tmp_path / "r.html"
    code, _, err = run_cli("report", "--runs", tmp_path / "runs", "--html", out)
    assert code == 0, err
    text = out.read_text()
    assert "missing: no run with readable metrics.jsonl" in text and "no classifier eval.json found" in text
    assert "data:image" not in text


def test_comparison_bars_are_the_table_figures():
    pytest.importorskip("matplotlib")
    table = [("majority class", "0.333", "0.167"), ("pretrained + finetune", "0.787 [0.745, 0.826]", "0.700"),
             ("classifier (no eval.json found)", "missing", "missing"), ("short row", "0.5")]
    fig = report_html.comparison_figure(report_html.HEADER, table)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["majority class", "pretrained + finetune", "short row"]
    widths = sorted(round(p.get_width(), 3) for p in ax.patches)
    assert widths == [0.0, 0.167, 0.333, 0.5, 0.7, 0.787]
    assert "missing" in [t.get_text() for t in ax.texts]  # not a score of 0
    assert report_html._cell("0.787 [0.745, 0.826]") == (0.787, (0.745, 0.826))


def test_confusion_heat_map_holds_the_counts():
    pytest.importorskip("matplotlib")
    cm = [[12, 2, 1], [1, 13, 1], [2, 2, 11]]
    fig = report_html.confusion_figure(_classifier_eval(0.8, 0.78, cm), "x")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == [str(c) for row in cm for c in row]
    assert ax.images[0].get_array()[0][0] == pytest.approx(12 / 15)  # coloured by share of the gold class


def test_missing_matplotlib_fails_before_the_report(tmp_path, run_cli, monkeypatch):
    import importlib.util

    data, runs = _chain(tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    code, out, err = run_cli("report", "--data", data, "--runs", runs, "--html", tmp_path / "r.html")
    assert code == 1 and out == "" and 'pip install "mlmctl[plot]"' in err
    assert not (tmp_path / "r.html").exists()


def _tagger_eval(gold, pred, f1, acc):
    return {"mode": "tagger", "task": "token-classification", "tag_scheme": "iob2", "n_sentences": len(gold),
            "entity_f1": f1, "entity_f1_ci": [f1 - 0.1, f1 + 0.05], "token_accuracy": acc,
            "token_accuracy_ci": [acc - 0.05, acc + 0.02], "intervals": {"resamples": 200, "seed": 0},
            "per_type": {"CODE": {"precision": f1, "recall": f1, "f1": f1, "support": 9}},
            "baseline": {"all_O": {"tag": "O", "entity_f1": 0.0, "token_accuracy": 0.61},
                         "majority_tag": {"tag": "O", "entity_f1": 0.0, "token_accuracy": 0.61}}}


def test_taggers_and_regression_have_their_sections(tmp_path, run_cli):
    """What the text report says of taggers and regressors is on the page too: figures with their
    intervals, per entity type, the baselines, the paired pretraining effect, a bar chart."""
    pytest.importorskip("matplotlib")
    data, runs = _chain(tmp_path)
    gold = [["B-CODE", "O", "O"], ["O", "B-CODE", "I-CODE"]] * 6
    for name, pred, f1, acc in (("eval-tagging-pretrained", gold, 0.9, 0.95),
                                ("eval-tagging-random", [["O"] * 3] * 12, 0.2, 0.7)):
        _write(runs / name / "eval.json", _tagger_eval(gold, pred, f1, acc))
        _write(runs / name / "predictions.jsonl", "".join(
            json.dumps({"index": i, "tokens": ["a"] * 3, "gold": g, "predicted": p}) + "\n"
            for i, (g, p) in enumerate(zip(gold, pred))))
    _write(runs / "eval-sts" / "eval.json", {
        "mode": "classifier", "pearson": 0.81, "pearson_ci": [0.7, 0.88], "spearman": 0.79, "mse": 0.42,
        "mean_baseline": {"mse": 1.25}, "baseline": {"pearson": 0.55, "spearman": 0.5, "mse": 0.9}})
    out = tmp_path / "report.html"
    code, stdout, err = run_cli("report", "--data", data, "--runs", runs, "--html", out)
    assert code == 0, err
    page = _Page()
    page.feed(out.read_text())
    page.close()
    assert page.headings[-5:] == ["Taggers", "pretrained + finetune", "random init + finetune", "Regression",
                                  "eval-sts"], page.headings
    assert "Taggers" not in page.headings[:-5]
    cells = set(page.cells)
    assert {"0.900 [0.800, 0.950]", "0.950 [0.900, 0.970]", "every token O", "CODE", "0.000", "0.610"} <= cells
    assert {"0.810 [0.700, 0.880]", "train-mean predictor", "1.250", "tf-idf + ridge baseline", "0.550"} <= cells
    text = out.read_text()
    assert "pretraining effect: pretraining helps: entity F1 +" in text, text[-3000:]
    assert "<p>beats every token O: token accuracy +" in text  # the pretrained tagger, paired
    assert "<p>does not beat every token O (the 95% interval includes 0): token accuracy +0.000" in text
    assert "vs baseline: not compared (needs predictions.jsonl" in text  # the regression eval wrote none
    # curves x2, comparison, two confusion matrices, and the tagging chart
    assert len(page.imgs) == 6 and all(i["src"].startswith("data:image/png;base64,") for i in page.imgs)
