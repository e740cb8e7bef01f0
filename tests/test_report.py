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
    assert dict(rows)["held-out MLM ppl"].startswith("20.0 (80/10/10 masking; unigram baseline 80.0)")


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



def _eval_dir(path, gold, pred):
    path.mkdir(parents=True)
    labels = sorted(set(gold))
    acc = sum(g == p for g, p in zip(gold, pred)) / len(gold)
    (path / "eval.json").write_text(json.dumps({"accuracy": acc, "accuracy_ci": [acc - 0.05, acc + 0.05],
                                                "macro_f1": acc, "labels": labels,
                                                "intervals": {"resamples": 1000, "seed": 0}}))
    (path / "predictions.jsonl").write_text("".join(
        json.dumps({"index": i, "label": g, "prediction": p, "correct": g == p}) + "\n"
        for i, (g, p) in enumerate(zip(gold, pred))))


def test_pretraining_effect_is_stated_only_when_significant(tmp_path):
    import random

    rng = random.Random(0)
    gold = [rng.choice("abc") for _ in range(300)]
    good = [g if rng.random() < 0.85 else rng.choice("abc") for g in gold]
    noisy = [g if rng.random() < 0.5 else rng.choice("abc") for g in gold]
    near = list(good)
    near[:3] = [{"a": "b", "b": "c", "c": "a"}[g] for g in gold[:3]]  # 3 more mistakes: noise
    for name, pre, rand in (("helps", good, noisy), ("same", good, near)):
        runs = tmp_path / name
        _eval_dir(runs / "eval-pretrained", gold, pre)
        _eval_dir(runs / "eval-random", gold, rand)
        rows, table = summary_rows(tmp_path / "data", runs)
        effect = dict(rows)["pretraining effect"]
        if name == "helps":
            assert effect.startswith("pretraining helps: accuracy +0.")
        else:
            assert effect.startswith("not significant: accuracy +0.") and "include 0" in effect
        assert "paired bootstrap, 300 test examples" in effect
        acc = json.loads((runs / "eval-pretrained" / "eval.json").read_text())["accuracy"]
        assert {r[0]: r[1] for r in table}["pretrained + finetune"] == f"{acc:.3f} [{acc - 0.05:.3f}, {acc + 0.05:.3f}]"
    # Without predictions there is no paired comparison, and the report says why.
    (tmp_path / "same" / "eval-random" / "predictions.jsonl").unlink()
    effect = dict(summary_rows(tmp_path / "data", tmp_path / "same")[0])["pretraining effect"]
    assert effect.startswith("not compared (needs predictions.jsonl")


def test_mlm_rows_show_the_leak_free_headline_with_intervals(tmp_path):
    runs = tmp_path / "runs"
    (runs / "eval-mlm").mkdir(parents=True)
    ev = {"mlm_ppl": 341.0, "mlm_ppl_ci": [320.0, 362.5], "mlm_ppl_801010": 222.0, "unigram_ppl": 512.0,
          "unigram_ppl_ci": [500.0, 530.0], "mlm_acc": 0.2, "mlm_acc_ci": [0.18, 0.22], "mlm_top5_acc": 0.4,
          "mlm_top5_acc_ci": [0.38, 0.42], "pppl": 332.0, "pppl_ci": [300.0, 360.0], "pppl_tokens": 4012}
    (runs / "eval-mlm" / "eval.json").write_text(json.dumps(ev))
    rows = dict(summary_rows(tmp_path / "data", runs)[0])
    assert rows["held-out MLM ppl"].startswith("341.0 [320.0, 362.5], unigram baseline 512.0 [500.0, 530.0]")
    assert "80/10/10 as in training: 222.0" in rows["held-out MLM ppl"]
    assert rows["held-out MLM acc"] == "top-1 0.200 [0.180, 0.220], top-5 0.400 [0.380, 0.420]"
    assert rows["pseudo-perplexity"] == "332.0 [300.0, 360.0] over 4,012 tokens"
