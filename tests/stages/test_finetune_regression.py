"""finetune `task: regression`: one float label, MSE, Pearson/Spearman/MSE on dev; the output is a
transformers sequence classifier with num_labels 1 and problem_type regression (bert and modernbert,
same outputs); a label that is not a number, or a metric of another task, is one line."""

from __future__ import annotations

import json
import random

import pytest

from test_finetune import CLASSES, FILLER
from test_labelled import make_tiny_model_dir


def regression_rows(n, seed):
    """Texts with 0-3 fruit words; the score is their count plus a little noise (an STS-like 0-3 scale)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randrange(4)
        words = [rng.choice(FILLER) for _ in range(rng.randrange(4, 9))]
        for _ in range(k):
            words.insert(rng.randrange(len(words) + 1), rng.choice(CLASSES["fruit"]))
        rows.append((" ".join(words), round(k + rng.uniform(-0.2, 0.2), 3)))
    return rows


def write_tsv(path, rows, header="text\tscore"):
    path.write_text(header + "\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return path


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg")
    train, dev, test = regression_rows(200, 1), regression_rows(60, 2), regression_rows(80, 3)
    return {"root": root, "model": make_tiny_model_dir(root, [t for t, _ in train]),
            "train": write_tsv(root / "train.tsv", train), "dev": write_tsv(root / "dev.tsv", dev),
            "test": write_tsv(root / "test.tsv", test), "test_rows": test}


def reg_args(reg, out, *more, model=None):
    return ["finetune", "--input", model or reg["model"], "--output", out, "--set", "task=regression",
            "--set", f"train_file={reg['train']}", "--set", f"dev_file={reg['dev']}", "--set", "label_field=score",
            "--set", "lr=0.003", "--set", "batch_size=16", "--set", "threads=1", "--set", "max_seq_len=32", *more]


def _modernbert_dir(reg, root):
    import torch

    from mlmctl.model_dir import save_model_dir
    from mlmctl.modernbert import ModernBertConfig, ModernBertForMaskedLM

    vocab_size = json.loads((reg["model"] / "config.json").read_text())["vocab_size"]
    cfg = ModernBertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=48, max_position_embeddings=64, local_attention=8, pad_token_id=0,
                           cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    return save_model_dir(ModernBertForMaskedLM(cfg), root / "modern", tokenizer_dir=reg["model"],
                          architectures=["ModernBertForMaskedLM"])


@pytest.fixture(scope="module")
def reg_run(reg):
    """The bert regressor: 60 steps, dev every 15, test scored."""
    from mlmctl.cli import main

    out = reg["root"] / "run"
    args = reg_args(reg, out, "--set", "max_steps=60", "--set", "eval_every=15", "--set", f"test_file={reg['test']}")
    assert main([str(a) for a in args]) == 0
    return out


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_regression_learns_and_loads_in_transformers(reg, reg_run, tmp_path, run_cli, arch):
    transformers = pytest.importorskip("transformers")
    import torch

    from mlmctl.labelled import LabelledData
    from mlmctl.model_dir import architecture, load_model_dir
    from mlmctl.text_encoder import TextEncoder, pad_batch

    steps = 60 if arch == "bert" else 10  # modernbert: only the transformers round trip is checked
    if arch == "bert":
        out = reg_run
    else:
        out = tmp_path / "run"
        model = _modernbert_dir(reg, tmp_path)
        code, stdout, err = run_cli(*reg_args(reg, out, "--set", f"max_steps={steps}", "--set", "eval_every=5",
                                              "--set", f"test_file={reg['test']}", model=model))
        assert code == 0, err
        assert "test pearson" in stdout
    extra = json.loads((out / "manifest.json").read_text())["extra"]
    assert extra["task"] == "regression" and extra["metric"] == "pearson"
    assert set(extra["dev"]) >= {"pearson", "spearman", "mse", "n"} and extra["dev"]["n"] == 60
    if arch == "bert":  # the count of fruit words is learnable in 60 steps
        assert extra["test"]["pearson"] > 0.5, extra["test"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "dev_pearson" in r] == ([15, 30, 45, 60] if arch == "bert" else [5, 10])

    best = out / "best"
    cfg = json.loads((best / "config.json").read_text())
    assert cfg["problem_type"] == "regression" and cfg["id2label"] == {"0": "LABEL_0"}
    ft = cfg["mlmctl_finetune"]
    assert ft["task"] == "regression" and ft["train_file"] == str(reg["train"])
    train_mean = sum(y for _, y in regression_rows(200, 1)) / 200
    assert ft["train_label_mean"] == pytest.approx(train_mean)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(best).eval()
    assert hf.config.num_labels == 1 and hf.config.problem_type == "regression"
    ours, _, _ = load_model_dir(best, architecture(arch).classifier, num_labels=1)
    enc = TextEncoder(best, 32, "test").encode(LabelledData("x", [t for t, _ in reg["test_rows"][:8]], None, []),
                                               None)
    ids, mask, types = pad_batch(enc, list(range(8)), 0)
    kw = {"token_type_ids": types} if arch == "bert" else {}
    with torch.no_grad():
        a, _ = ours.eval()(ids, attention_mask=mask, **kw)
        b = hf(input_ids=ids, attention_mask=mask, **kw).logits
    assert a.shape == (8, 1) and torch.allclose(a, b, atol=1e-4)
    # transformers' own loss for this problem_type is the MSE we trained with
    y = torch.tensor([v for _, v in reg["test_rows"][:8]])
    with torch.no_grad():
        hf_loss = hf(input_ids=ids, attention_mask=mask, labels=y, **kw).loss
    assert hf_loss.item() == pytest.approx(torch.nn.functional.mse_loss(a[:, 0], y).item(), rel=1e-4)


def test_regression_label_that_is_not_a_number_names_file_and_line(reg, tmp_path, run_cli):
    bad = write_tsv(tmp_path / "bad.tsv", [("w1 apple", "2.5"), ("w2 pear", "high")])
    code, _, err = run_cli(*reg_args(reg, tmp_path / "r", "--set", f"train_file={bad}"))
    assert code == 1 and f"{bad}:3: label 'high' in `score` is not a number" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r" / "manifest.json").exists()
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"text": "w1", "score": 1.5}\n{"text": "w2", "score": NaN}\n')
    code, _, err = run_cli(*reg_args(reg, tmp_path / "r", "--set", f"train_file={jl}"))
    assert code == 1 and "bad.jsonl:2:" in err, err


@pytest.mark.parametrize("sets, match", [
    (["task=classification", "metric=pearson"], "`metric`: `pearson` is not a classification metric"),
    (["task=regression", "metric=macro_f1"], "`metric`: `macro_f1` is not a regression metric"),
    (["task=regression", "class_weights=balanced"], "`class_weights`: is for classification"),
    (["metric=f1", "labels=[a, b, c]"], "F1 of the positive class of a binary task"),
])
def test_metric_must_fit_the_task(tmp_path, run_cli, sets, match):
    args = ["finetune", "--output", tmp_path / "r"]
    for s in sets:
        args += ["--set", s]
    code, _, err = run_cli(*args)
    assert code == 1 and match in err, err
    assert err.count("\n") == 1


def test_auto_metric_per_task():
    from mlmctl.stages.finetune import FinetuneConfig

    assert FinetuneConfig().selection_metric == "macro_f1"
    assert FinetuneConfig(task="regression").selection_metric == "pearson"
    assert FinetuneConfig(task="regression", metric="spearman").selection_metric == "spearman"


def test_regression_eval_with_intervals_and_both_baselines(reg, reg_run, tmp_path, run_cli):
    from mlmctl.metrics import mean_squared_error, pearson, spearman

    out = tmp_path / "ev"
    code, stdout, err = run_cli("eval", "--input", reg_run, "--output", out, "--set", f"test_file={reg['test']}",
                                "--set", "bootstrap_resamples=200")
    assert code == 0, err
    ev = json.loads((out / "eval.json").read_text())
    assert ev["mode"] == "classifier" and ev["task"] == "regression" and ev["n"] == 80
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    gold = [y for _, y in reg["test_rows"]]
    assert [p["label"] for p in preds] == gold and all(isinstance(p["prediction"], float) for p in preds)
    pred = [p["prediction"] for p in preds]
    assert ev["pearson"] == pytest.approx(pearson(gold, pred), abs=1e-5)
    assert ev["spearman"] == pytest.approx(spearman(gold, pred), abs=1e-5)
    assert ev["mse"] == pytest.approx(mean_squared_error(gold, pred), abs=1e-5)
    for key in ("pearson", "spearman", "mse"):
        lo, hi = ev[f"{key}_ci"]
        assert lo <= ev[key] <= hi, key
    # The train-mean predictor, and ridge on tf-idf of the same train file.
    mean = sum(y for _, y in regression_rows(200, 1)) / 200
    assert ev["mean_baseline"]["train_mean"] == pytest.approx(mean)
    assert ev["mean_baseline"]["mse"] == pytest.approx(mean_squared_error(gold, [mean] * 80))
    assert ev["mse"] < ev["mean_baseline"]["mse"]
    bl = ev["baseline"]
    assert bl["kind"] == "tfidf-ridge" and bl["pearson"] > 0.5 and "pearson_ci" in bl
    assert [p["baseline_prediction"] for p in preds][:1] and "train-mean baseline" in stdout


def test_regression_model_on_string_labels_is_one_line(reg, reg_run, tmp_path, run_cli):
    bad = write_tsv(tmp_path / "test.tsv", [("w1 apple", "1.0"), ("w2 pear", "fruit")])
    code, _, err = run_cli("eval", "--input", reg_run, "--output", tmp_path / "ev", "--set", f"test_file={bad}")
    assert code == 1 and "is a regression model, so labels must be numbers" in err
    assert f"{bad}:3: label 'fruit'" in err and err.count("mlmctl: error") == 1 and "Traceback" not in err
    assert not (tmp_path / "ev" / "eval.json").exists() and not (tmp_path / "ev" / "manifest.json").exists()


def test_labelled_file_errors_carry_the_stage_prefix(reg, reg_run, tmp_path, run_cli):
    """labelled.py names the file but not the stage; every such error still reads `STAGE: ...`."""
    conll = tmp_path / "test.conll"
    conll.write_text("w1 O\nw2 O\n\n")
    code, _, err = run_cli("eval", "--input", reg_run, "--output", tmp_path / "ev", "--set", f"test_file={conll}")
    assert code == 1 and f"mlmctl: error: eval: {conll}: cannot tell the format" in err, err
    assert err.count("mlmctl: error") == 1 and not (tmp_path / "ev" / "manifest.json").exists()
    code, _, err = run_cli(*reg_args(reg, tmp_path / "ft", "--set", f"train_file={conll}"))
    assert code == 1 and f"mlmctl: error: finetune: {conll}: cannot tell the format" in err, err
