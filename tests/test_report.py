"""The chain summary: baselines computed right, missing parts shown as missing, any layout found."""

from __future__ import annotations

import json

import pytest

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


def _with_baseline(path, gold, base, test_file="test.tsv"):
    """Add eval's tf-idf baseline (figures and per-example predictions) to an _eval_dir."""
    ev = json.loads((path / "eval.json").read_text())
    acc = sum(g == b for g, b in zip(gold, base)) / len(gold)
    ev.update(test_file=test_file, baseline={"kind": "tfidf-logreg", "train_sha256": "x", "accuracy": acc,
                                             "macro_f1": acc, "accuracy_ci": [acc - 0.05, acc + 0.05]})
    (path / "eval.json").write_text(json.dumps(ev))
    lines = [json.loads(x) for x in (path / "predictions.jsonl").read_text().splitlines()]
    (path / "predictions.jsonl").write_text("".join(json.dumps({**x, "baseline_prediction": b}) + "\n"
                                                    for x, b in zip(lines, base)))


def test_baseline_row_and_whether_the_model_beats_it(tmp_path):
    import random

    rng = random.Random(1)
    gold = [rng.choice("ab") for _ in range(300)]
    good = [g if rng.random() < 0.9 else rng.choice("ab") for g in gold]
    poor = [g if rng.random() < 0.4 else rng.choice("ab") for g in gold]
    near = list(good)
    near[:2] = ["b" if g == "a" else "a" for g in gold[:2]]
    cases = (("beats", good, poor, "beats the tf-idf baseline: accuracy +0."),
             ("worse", poor, good, "does not beat the baseline; the baseline is better: accuracy -0."),
             ("same", good, near, "does not beat the baseline (the 95% intervals include 0)"))
    for name, model, base, want in cases:
        runs = tmp_path / name
        for d in ("eval-pretrained", "eval-random"):
            _eval_dir(runs / d, gold, model)
            _with_baseline(runs / d, gold, base)
        rows, table = summary_rows(tmp_path / "data", runs)
        assert dict(rows)["pretrained + finetune vs baseline"].startswith(want), dict(rows)
        names = [r[0] for r in table]
        assert names.count("tf-idf + logreg baseline") == 1  # the same baseline for both evals, shown once
        acc = sum(g == b for g, b in zip(gold, base)) / 300
        assert dict((r[0], r[1]) for r in table)["tf-idf + logreg baseline"].startswith(f"{acc:.3f} [")
    # A skipped baseline: no row, no sentence.
    runs = tmp_path / "skipped"
    _eval_dir(runs / "eval-pretrained", gold, good)
    ev = json.loads((runs / "eval-pretrained" / "eval.json").read_text())
    (runs / "eval-pretrained" / "eval.json").write_text(json.dumps({**ev, "baseline": {"skipped": "gone"}}))
    rows, table = summary_rows(tmp_path / "data", runs)
    assert "pretrained + finetune vs baseline" not in dict(rows)
    assert all("baseline" not in r[0] for r in table)


def test_regression_eval_gets_its_line(tmp_path):
    runs = tmp_path / "runs"
    _eval(runs / "sts" / "eval", pearson=0.8, spearman=0.75, mse=0.5, mean_baseline={"mse": 1.2},
          baseline={"pearson": 0.6, "mse": 0.9})
    rows = dict(summary_rows(None, runs)[0])
    assert rows["sts/eval (regression)"] == ("pearson 0.800, spearman 0.750, mse 0.500; train-mean predictor mse "
                                             "1.200; tf-idf + ridge baseline pearson 0.600, mse 0.900")


@pytest.mark.parametrize("mse, says", [(0.5, ""), (1.3, "; no better than predicting the train mean (mse)")])
def test_regression_line_says_when_the_model_is_no_better_than_the_train_mean(tmp_path, mse, says):
    runs = tmp_path / "runs"
    _eval(runs / "sts" / "eval", pearson=0.7, spearman=0.5, mse=mse, mean_baseline={"mse": 1.2},
          baseline={"pearson": 0.6, "mse": 0.9})
    line = dict(summary_rows(None, runs)[0])["sts/eval (regression)"]
    assert line.endswith("mse 0.900" + says), line


@pytest.mark.parametrize("noise, want", [(0.1, "beats the tf-idf baseline: pearson +"),
                                         (3.0, "does not beat the baseline; the baseline is better: pearson -")])
def test_regression_vs_baseline_is_a_paired_comparison(tmp_path, noise, want):
    """Model minus baseline Pearson and MSE over the same test examples, from predictions.jsonl."""
    import random

    from mlmctl.bootstrap import paired_regression_difference
    from mlmctl.metrics import regression_report

    rng = random.Random(0)
    gold = [rng.uniform(0, 5) for _ in range(120)]
    model = [g + rng.gauss(0, noise) for g in gold]
    base = [g + rng.gauss(0, 1.0) for g in gold]
    runs = tmp_path / "runs"
    d = _eval(runs / "sts", pearson=0.5, spearman=0.5, mse=1.0, baseline={"pearson": 0.5, "mse": 1.0},
              intervals={"resamples": 400, "seed": 0})
    (d / "predictions.jsonl").write_text("".join(json.dumps({"index": i, "label": g, "prediction": m,
                                                             "baseline_prediction": b}) + "\n"
                                                 for i, (g, m, b) in enumerate(zip(gold, model, base))))
    line = dict(summary_rows(None, runs)[0])["sts vs baseline"]
    assert line.startswith(want) and "(paired bootstrap, 120 test examples)" in line, line
    diff = paired_regression_difference(gold, model, base, 400, 0)
    a, b = regression_report(gold, model), regression_report(gold, base)
    assert diff["pearson"]["diff"] == pytest.approx(a["pearson"] - b["pearson"])
    assert diff["mse"]["diff"] == pytest.approx(a["mse"] - b["mse"])
    lo, hi = diff["pearson"]["ci"]
    assert lo <= diff["pearson"]["diff"] <= hi


def test_hand_edited_eval_jsons_are_shown_as_missing_never_a_crash(tmp_path, run_cli):
    """eval.json files are the user's to edit: a figure of the wrong type, a broken interval, a
    baseline without its keys give "missing"/"unreadable" cells, exit 0."""
    runs = tmp_path / "runs"
    crafted = {
        "eval-tagger-pretrained": {"task": "token-classification", "entity_f1": "high", "token_accuracy_ci": [1],
                                   "baseline": {"all_o": {"token_accuracy": 0.5}, "x": "y"}},
        "eval-tagger-random": {"task": "token-classification", "baseline": []},
        "eval-pretrained": {"accuracy": 0.5, "accuracy_ci": ["a", None], "macro_f1": None},
    }
    for name, ev in crafted.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "eval.json").write_text(json.dumps(ev))
    code, out, err = run_cli("report", "--runs", runs)
    assert code == 0 and "Traceback" not in err, err
    assert "unreadable" in out and "missing" in out
