"""eval: classifier metrics that match the predictions, reproducible masked-LM perplexity,
mode chosen from the model directory, clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mlmctl.metrics import classification_report
from test_finetune import task_rows, write_tsv
from test_labelled import make_tiny_model_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny MLM model directory and a classifier fine-tuned from it (a few steps)."""
    from mlmctl.cli import main

    root = tmp_path_factory.mktemp("ev")
    train = task_rows(200, 1)
    mlm = make_tiny_model_dir(root, [t for t, _ in train])
    write_tsv(root / "train.tsv", train)
    write_tsv(root / "dev.tsv", task_rows(40, 2))
    write_tsv(root / "test.tsv", task_rows(80, 3))
    code = main(["finetune", "--input", str(mlm), "--output", str(root / "ft"),
                 "--set", f"train_file={root / 'train.tsv'}", "--set", f"dev_file={root / 'dev.tsv'}",
                 "--set", "lr=0.003", "--set", "epochs=3", "--set", "batch_size=16", "--set", "threads=1",
                 "--set", "max_seq_len=32"])
    assert code == 0
    docs = "\n\n".join(t for t, _ in task_rows(60, 9))
    (root / "heldout.txt").write_text(docs + "\n")
    return {"root": root, "mlm": mlm, "clf": root / "ft", "test": root / "test.tsv",
            "heldout": root / "heldout.txt"}


def test_classifier_eval_matches_its_predictions(models, tmp_path, run_cli):
    out = tmp_path / "ev"
    # A finetune run directory is accepted (its best/ is used); fields and max_seq_len come from config.json.
    code, stdout, err = run_cli("eval", "--input", models["clf"], "--output", out,
                                "--set", f"test_file={models['test']}", "--set", "predictions=true")
    assert code == 0, err
    ev = json.loads((out / "eval.json").read_text())
    assert ev["mode"] == "classifier"
    for key in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "per_class", "confusion_matrix", "labels"):
        assert key in ev
    assert ev["labels"] == ["car", "fruit", "sea"] and ev["n"] == 80
    assert sum(map(sum, ev["confusion_matrix"])) == 80
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    ids = {x: i for i, x in enumerate(ev["labels"])}
    again = classification_report([ids[p["label"]] for p in preds], [ids[p["prediction"]] for p in preds],
                                  ev["labels"])
    no_ci = {k: v for k, v in ev.items() if k in again}
    no_ci["per_class"] = {c: {k: v for k, v in pc.items() if not k.endswith("_ci")} for c, pc in ev["per_class"].items()}
    assert again == no_ci
    assert all(p["correct"] == (p["label"] == p["prediction"]) for p in preds)
    # Every figure has its 95% bootstrap interval around it, resampling the 80 examples.
    for key in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall"):
        lo, hi = ev[f"{key}_ci"]
        assert lo <= ev[key] <= hi, key
    assert ev["intervals"] == {"level": 0.95, "method": "percentile bootstrap", "resamples": 1000, "seed": 0,
                               "unit": "examples", "units": 80}
    assert 0 < ev["accuracy_ci"][1] - ev["accuracy_ci"][0] < 0.3
    assert all(len(pc["f1_ci"]) == 2 for pc in ev["per_class"].values())
    assert "accuracy" in stdout and f"[{ev['accuracy_ci'][0]:.4f}, " in stdout
    assert all(abs(sum(p["probs"].values()) - 1) < 1e-4 for p in preds)
    gold = [y for _, y in task_rows(80, 3)]
    assert [p["label"] for p in preds] == gold  # file order kept although batches are length-sorted
    assert "accuracy" in stdout and "confusion matrix" in err
    m = json.loads((out / "manifest.json").read_text())
    assert m["stage"] == "eval" and m["extra"]["accuracy"] == ev["accuracy"]


def test_classifier_eval_errors(models, tmp_path, run_cli):
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\nw1 apple\tfruit\nw2 boat\tboat\n")
    code, _, err = run_cli("eval", "--input", models["clf"], "--output", tmp_path / "a", "--set", f"test_file={bad}")
    assert code == 1 and "'boat' not in the training label set" in err
    code, _, err = run_cli("eval", "--input", models["clf"], "--output", tmp_path / "b")
    assert code == 1 and "needs `test_file`" in err
    # A classifier has no MLM head; an MLM model has no classifier head.
    code, _, err = run_cli("eval", "--input", models["clf"], "--output", tmp_path / "c", "--set", "mode=mlm",
                           "--set", f"text_files=[{models['heldout']}]")
    assert code == 1 and "no masked-LM head" in err
    code, _, err = run_cli("eval", "--input", models["mlm"], "--output", tmp_path / "d", "--set", "mode=classifier",
                           "--set", f"test_file={models['test']}")
    assert code == 1 and "id2label" in err
    assert not any((tmp_path / x / "manifest.json").exists() for x in "abcd")


def _mlm(run_cli, models, out, *more):
    code, stdout, err = run_cli("eval", "--input", models["mlm"], "--output", out, "--set", "threads=1",
                                "--set", f"text_files=[{models['heldout']}]", "--set", "max_seq_len=32", *more)
    assert code == 0, err
    return json.loads((out / "eval.json").read_text())


def test_mlm_perplexity_is_reproducible(models, tmp_path, run_cli):
    a = _mlm(run_cli, models, tmp_path / "a", "--set", "pppl=true", "--set", "pppl_tokens=40")
    b = _mlm(run_cli, models, tmp_path / "b", "--set", "pppl=true", "--set", "pppl_tokens=40")
    c = _mlm(run_cli, models, tmp_path / "c", "--set", "seed=1", "--set", "bootstrap_resamples=0")
    assert a["mode"] == "mlm"
    assert a["mlm_loss"] == b["mlm_loss"] and a["pppl"] == b["pppl"]
    assert a["mlm_loss"] != c["mlm_loss"]  # other masks
    assert a["masked_tokens"] > 50 and a["sequences"] == 60
    # An untrained model is about as good as uniform guessing over the vocabulary; the unigram
    # baseline of the same tokens is far better than uniform.
    V = json.loads((models["mlm"] / "config.json").read_text())["vocab_size"]
    assert math.isfinite(a["mlm_ppl"]) and 0.5 * V < a["mlm_ppl"] < 2 * V
    assert 1 < a["unigram_ppl"] < 0.5 * V
    assert 0.5 * V < a["pppl"] < 2 * V and a["pppl_tokens"] > 0
    assert a["unigram_source"].startswith("held-out")
    # The leak-free headline, the 80/10/10 figure on the same positions, accuracy, and intervals.
    assert a["mlm_ppl"] == pytest.approx(math.exp(a["mlm_loss"]))
    assert a["mlm_ppl_801010"] == pytest.approx(math.exp(a["mlm_loss_801010"]))
    assert 0 <= a["mlm_acc"] <= a["mlm_top5_acc"] <= 1
    assert set(a["mlm_loss_801010_by_kind"]) == {"mask", "random", "keep"}
    for key in ("mlm_ppl", "mlm_ppl_801010", "unigram_ppl", "mlm_acc", "mlm_top5_acc", "pppl"):
        lo, hi = a[f"{key}_ci"]
        assert lo <= a[key] <= hi, key
    assert a["mlm_ppl_ci"] == b["mlm_ppl_ci"] and a["intervals"]["unit"] == "documents"
    assert not any(k.endswith("_ci") for k in c) and c["intervals"] == {"resamples": 0}
    assert a["pppl_tokens"] >= 40 and a["pppl_docs"] < 60  # whole documents up to the token budget


def test_mlm_needs_data(models, tmp_path, run_cli):
    code, _, err = run_cli("eval", "--input", models["mlm"], "--output", tmp_path / "x")
    assert code == 1 and "needs held-out data" in err
    code, _, err = run_cli("eval", "--input", models["mlm"], "--output", tmp_path / "y",
                           "--set", "text_files=[nope.txt]")
    assert code == 1 and "nope.txt does not exist" in err


def test_mlm_on_a_build_vocab_directory(models, tmp_path, run_cli):
    """The real chain on a toy corpus: clean -> tokenize -> build-vocab, a model saved with that
    vocabulary, then eval on the validation split with the train split's unigram counts."""
    import random

    import torch

    from mlmctl.model import BertForPreTraining, ModelConfig
    from mlmctl.model_dir import save_model_dir

    rng = random.Random(0)
    words = [f"word{i}" for i in range(60)] + ["the", "a", "of", "array", "value"]
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in range(4):
        docs = [" ".join(rng.choice(words) for _ in range(rng.randrange(12, 40))) + "." for _ in range(40)]
        (raw / f"f{f}.txt").write_text("\n\n".join(docs) + "\n")
    smoke = Path(__file__).resolve().parents[2] / "configs" / "smoke"
    for stage, inp, out in (("clean", raw, "clean"), ("tokenize", tmp_path / "clean", "tokens"),
                            ("build-vocab", tmp_path / "tokens", "vocab")):
        code, _, err = run_cli(stage, "-c", smoke / f"{stage}.yaml", "--input", inp, "--output", tmp_path / out,
                               "--set", "min_frequency=1" if stage == "build-vocab" else "compresslevel=1")
        assert code == 0, err
    vocab = tmp_path / "vocab"
    V = json.loads((vocab / "manifest.json").read_text())["extra"]["vocab_size"]
    torch.manual_seed(0)
    model_dir = save_model_dir(BertForPreTraining(ModelConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1,
                                                              num_attention_heads=2, intermediate_size=64,
                                                              max_position_embeddings=64)),
                               tmp_path / "model", tokenizer_dir=vocab, architectures=["BertForMaskedLM"])
    args = ("--set", f"data={vocab}", "--set", "max_seq_len=32", "--set", "threads=1")
    a = _run_json(run_cli, "eval", "--input", model_dir, "--output", tmp_path / "a", *args)
    b = _run_json(run_cli, "eval", "--input", model_dir, "--output", tmp_path / "b", *args)
    assert a["mlm_loss"] == b["mlm_loss"] and a["unigram_source"] == "train split counts"
    assert a["data"].endswith(":validation") and a["masked_tokens"] > 0
    assert 1 < a["unigram_ppl"] < V < 3 * a["mlm_ppl"]
    # A model with another tokenizer cannot be scored on these ids.
    code, _, err = run_cli("eval", "--input", models["mlm"], "--output", tmp_path / "c", *args)
    assert code == 1 and "different tokenizer" in err


def _run_json(run_cli, *args):
    code, _, err = run_cli(*args)
    assert code == 0, err
    return json.loads((Path(args[args.index("--output") + 1]) / "eval.json").read_text())


def test_classifier_eval_has_the_tfidf_baseline_of_its_own_train_file(models, tmp_path, run_cli):
    from mlmctl.baseline import baseline_report
    from mlmctl.labelled import read_labelled
    from mlmctl.metrics import matthews_corrcoef

    out = tmp_path / "ev"
    code, stdout, err = run_cli("eval", "--input", models["clf"], "--output", out,
                                "--set", f"test_file={models['test']}", "--set", "bootstrap_resamples=200")
    assert code == 0, err
    ev = json.loads((out / "eval.json").read_text())
    bl = ev["baseline"]
    # The train file finetune recorded, scored like the model and equal to fitting it directly.
    assert bl["kind"] == "tfidf-logreg" and bl["train_file"] == str(models["root"] / "train.tsv")
    assert bl["train_examples"] == 200
    want = baseline_report(read_labelled(models["root"] / "train.tsv"), read_labelled(models["test"]), ev["labels"])
    for key in ("accuracy", "macro_f1", "mcc"):
        assert bl[key] == pytest.approx(want[key]), key
        lo, hi = bl[f"{key}_ci"]
        assert lo <= bl[key] <= hi
    assert bl["accuracy"] > ev["majority_baseline_accuracy"] + 0.2  # keywords: an easy task for tf-idf
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    ids = {x: i for i, x in enumerate(ev["labels"])}
    assert sum(p["baseline_prediction"] == p["label"] for p in preds) / len(preds) == pytest.approx(bl["accuracy"])
    # MCC of the model itself (no f1: three labels) and the summary lines.
    assert ev["mcc"] == pytest.approx(matthews_corrcoef([ids[p["label"]] for p in preds],
                                                        [ids[p["prediction"]] for p in preds], 3))
    assert "f1" not in ev and "mcc_ci" in ev
    assert "tf-idf baseline" in stdout and "mcc" in stdout


def test_baseline_skipped_when_the_train_file_is_gone_or_changed(models, tmp_path, run_cli):
    import shutil

    clf = tmp_path / "clf"
    shutil.copytree(models["clf"] / "best", clf)
    cfg = json.loads((clf / "config.json").read_text())
    train = tmp_path / "train.tsv"
    shutil.copy(models["root"] / "train.tsv", train)
    cfg["mlmctl_finetune"]["train_file"] = str(train)
    (clf / "config.json").write_text(json.dumps(cfg))
    train.write_text(train.read_text() + "w1 apple\tfruit\n")  # changed since fine-tuning
    code, _, err = run_cli("eval", "--input", clf, "--output", tmp_path / "a", "--set", f"test_file={models['test']}")
    assert code == 0, err
    ev = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert "has changed since fine-tuning" in ev["baseline"]["skipped"] and "baseline skipped" in err
    # ... unless asked for explicitly
    code, _, err = run_cli("eval", "--input", clf, "--output", tmp_path / "b", "--set", f"test_file={models['test']}",
                           "--set", f"baseline_train_file={train}", "--set", "bootstrap_resamples=0")
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "eval.json").read_text())["baseline"]["train_examples"] == 201
    train.unlink()
    code, _, err = run_cli("eval", "--input", clf, "--output", tmp_path / "c", "--set", f"test_file={models['test']}")
    assert code == 0, err
    ev = json.loads((tmp_path / "c" / "eval.json").read_text())
    assert ev["baseline"] == {"skipped": f"the train file {train} the model was fine-tuned on is gone; "
                                         "set `baseline_train_file` to score the baseline"}
    assert "accuracy" in ev and (tmp_path / "c" / "manifest.json").exists()
    code, _, err = run_cli("eval", "--input", clf, "--output", tmp_path / "d", "--set", f"test_file={models['test']}",
                           "--set", "baseline=false")
    assert code == 0 and json.loads((tmp_path / "d" / "eval.json").read_text())["baseline"]["skipped"].startswith(
        "turned off")
