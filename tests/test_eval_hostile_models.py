"""eval on hostile fine-tuned model directories (issue 14): a tagger or regressor whose config.json
lost or mangled its labels, a regression head that says it has 3 outputs, a model given the other
task's test file. Each is one `mlmctl: error:` line naming the file and the fix, nothing written
that looks finished."""

from __future__ import annotations

import json
import shutil

import pytest

from test_labelled import make_tiny_model_dir
from test_token_classification import tagged_sentences, write_conll


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A two-step tagger and a two-step regressor (weights need not be good, only real)."""
    from mlmctl.cli import main

    root = tmp_path_factory.mktemp("hostile")
    sents = tagged_sentences(24, 1)
    base = make_tiny_model_dir(root, [" ".join(t) for t, _ in sents], hidden=16, layers=1)
    conll = write_conll(root / "train.conll", sents)
    tsv = root / "train.tsv"
    tsv.write_text("text\tlabel\n" + "".join(f"{' '.join(t)}\t{len(t) / 3:.2f}\n" for t, _ in sents))
    common = ["--input", base, "--set", "max_steps=2", "--set", "threads=1", "--set", "max_seq_len=32",
              "--set", "batch_size=8"]
    for out, task, train in (("tagger", "token-classification", conll), ("regressor", "regression", tsv)):
        args = ["finetune", *common, "--output", root / out, "--set", f"task={task}",
                "--set", f"train_file={train}", "--set", f"dev_file={train}"]
        assert main([str(a) for a in args]) == 0
    return {"root": root, "tagger": root / "tagger" / "best", "regressor": root / "regressor" / "best",
            "conll": conll, "tsv": tsv}


def _hostile(models, tmp_path, which, change):
    d = tmp_path / which
    shutil.copytree(models[which], d)
    cfg = json.loads((d / "config.json").read_text())
    change(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def _eval_one_line(run_cli, tmp_path, model, test, *more):
    out = tmp_path / "ev"
    code, _, err = run_cli("eval", "--input", model, "--output", out, "--set", f"test_file={test}",
                           "--set", "threads=1", "--set", "bootstrap_resamples=0", *more)
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]  # the others are [eval] log lines
    assert code == 1 and len(lines) == 1 and lines[0].startswith("mlmctl: error: "), err
    assert "Traceback" not in err and not (out / "eval.json").exists() and not (out / "manifest.json").exists()
    return lines[0]


def _set(key, value):
    return lambda cfg: cfg.__setitem__(key, value)


TAGGER_CASES = {
    "no id2label": (lambda cfg: cfg.pop("id2label"), "no id2label"),
    "id2label a list": (_set("id2label", ["O", "B-PER", "I-PER"]), "id2label"),
    "id2label a string": (_set("id2label", "O B-PER"), "id2label"),
    "id2label gaps": (_set("id2label", {"0": "O", "2": "B-PER"}), "id2label"),
    "id2label not strings": (_set("id2label", {"0": "O", "1": ["B-PER"]}), "id2label"),
    "id2label duplicates": (_set("id2label", {"0": "O", "1": "O"}), "id2label"),
}
AUTO_CASES = {
    "architectures a string": (_set("architectures", "BertForTokenClassification"), "architectures"),
    "architectures of numbers": (_set("architectures", [1, 2]), "architectures"),
    "mlmctl_finetune a list": (_set("mlmctl_finetune", ["regression"]), "mlmctl_finetune"),
}


@pytest.mark.parametrize("case", list(TAGGER_CASES), ids=list(TAGGER_CASES))
def test_tagger_with_mangled_labels_is_one_line(models, tmp_path, run_cli, case):
    change, expect = TAGGER_CASES[case]
    model = _hostile(models, tmp_path, "tagger", change)
    line = _eval_one_line(run_cli, tmp_path, model, models["conll"], "--set", "mode=tagger")
    assert expect in line and "config.json" in line, line


@pytest.mark.parametrize("which", ["tagger", "regressor"])
@pytest.mark.parametrize("case", list(AUTO_CASES), ids=list(AUTO_CASES))
def test_mode_auto_on_a_mangled_config_is_one_line(models, tmp_path, run_cli, which, case):
    change, expect = AUTO_CASES[case]
    model = _hostile(models, tmp_path, which, change)
    line = _eval_one_line(run_cli, tmp_path, model, models["conll" if which == "tagger" else "tsv"])
    assert expect in line and "config.json" in line, line


def test_regression_head_with_three_labels_is_one_line(models, tmp_path, run_cli):
    model = _hostile(models, tmp_path, "regressor",
                     _set("id2label", {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}))
    line = _eval_one_line(run_cli, tmp_path, model, models["tsv"])
    assert "regression" in line and "3" in line and "config.json" in line, line


def test_a_multi_label_model_is_refused_not_scored_as_single_label(models, tmp_path, run_cli):
    model = _hostile(models, tmp_path, "regressor", _set("problem_type", "multi_label_classification"))
    line = _eval_one_line(run_cli, tmp_path, model, models["tsv"])
    assert "problem_type" in line and "multi_label_classification" in line, line


@pytest.mark.parametrize("which,test", [("tagger", "tsv"), ("regressor", "conll")])
def test_the_other_tasks_test_file_is_one_line(models, tmp_path, run_cli, which, test):
    line = _eval_one_line(run_cli, tmp_path, models[which], models[test])
    assert str(models[test]) in line, line


@pytest.mark.parametrize("case", ["id2label a list", "id2label gaps", "architectures a string", "a list"])
def test_inspect_shows_a_mangled_head_instead_of_crashing(models, tmp_path, run_cli, case):
    changes = {**TAGGER_CASES, **AUTO_CASES}
    if case == "a list":
        model = _hostile(models, tmp_path, "tagger", lambda cfg: None)
        (model / "config.json").write_text("[1, 2]")
    else:
        model = _hostile(models, tmp_path, "tagger", changes[case][0])
    code, out, err = run_cli("inspect", model)
    assert code == 0 and "Traceback" not in err, err
    assert "unreadable: " in out and "config.json" in out, out


@pytest.mark.parametrize("which,mode,test", [("tagger", "classifier", "tsv"), ("regressor", "tagger", "conll")])
def test_a_mode_that_contradicts_the_model_is_one_line(models, tmp_path, run_cli, which, mode, test):
    """A token and a sequence head share the `classifier.*` weight names: forcing the other mode
    would load and score nonsense."""
    line = _eval_one_line(run_cli, tmp_path, models[which], models[test], "--set", f"mode={mode}")
    assert "use mode: auto" in line and ("token classifier" if which == "tagger" else "sequence classifier") in line
