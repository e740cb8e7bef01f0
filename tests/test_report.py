"""The chain summary: baselines computed right, missing parts shown as missing, any layout found."""

from __future__ import annotations

import json

from mlmctl.report import _majority_macro_f1, summary_rows


def test_majority_macro_f1_by_hand():
    # Always "a" on 2 a + 2 b: precision 0.5, recall 1 -> F1 2/3 for "a", 0 for "b"; macro 1/3.
    assert abs(_majority_macro_f1({"a": 2, "b": 2}, "a") - 1 / 3) < 1e-12
    assert _majority_macro_f1({}, "a") == 0.0


def test_missing_parts_are_reported_missing(tmp_path):
    rows, table = summary_rows(tmp_path / "data", tmp_path / "runs")
    assert dict(rows)["corpus"].startswith("missing")
    assert dict(rows)["pretraining"].startswith("missing")
    assert dict(rows)["vocabulary"].startswith("missing")
    assert ("classifier (no eval.json found)", "missing", "missing") in table


def _eval(d, **figures):
    d.mkdir(parents=True)
    (d / "eval.json").write_text(json.dumps(figures))
    return d


def test_finds_every_eval_json_under_runs(tmp_path):
    runs = tmp_path / "runs"
    _eval(runs / "eval-pretrained", accuracy=0.75, macro_f1=0.5)
    _eval(runs / "quick" / "eval", accuracy=0.6, macro_f1=0.4)  # the README quick tour's layout
    _eval(runs / "quick" / "eval-mlm", mlm_ppl=20.0, unigram_ppl=80.0)
    rows, table = summary_rows(tmp_path / "data", runs)
    assert ("pretrained + finetune", "0.750", "0.500") in table
    assert ("quick/eval", "0.600", "0.400") in table
    assert dict(rows)["held-out MLM ppl"].startswith("20.0 (unigram baseline 80.0)")


def test_cli_takes_directories_and_refuses_missing_ones(tmp_path, run_cli, monkeypatch):
    a = _eval(tmp_path / "a" / "eval", accuracy=0.5, macro_f1=0.25)
    code, out, err = run_cli("report", a)
    assert code == 0, err
    assert f"| {a} | 0.500 | 0.250 |" in out  # not a terminal: Markdown-style rows
    code, _, err = run_cli("report", "--data", tmp_path / "nope", "--runs", tmp_path / "nope2")
    assert code == 1 and err.startswith("mlmctl: error: report: --data") and "does not exist" in err
    code, _, err = run_cli("report", tmp_path / "missing")
    assert code == 1 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("report", tmp_path / "empty")
    assert code == 1 and "no eval.json" in err
    monkeypatch.chdir(tmp_path)  # no arguments: runs/demo, which is not there
    assert run_cli("report")[0] == 1
