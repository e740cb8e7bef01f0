"""The chain summary: baselines computed right, missing parts shown as missing."""

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
    assert ("pretrained + finetune", "missing", "missing") in table


def test_reads_eval_files(tmp_path):
    runs = tmp_path / "runs"
    (runs / "eval-pretrained").mkdir(parents=True)
    (runs / "eval-pretrained" / "eval.json").write_text(json.dumps({"accuracy": 0.75, "macro_f1": 0.5}))
    _, table = summary_rows(tmp_path / "data", runs)
    assert ("pretrained + finetune", "0.750", "0.500") in table
