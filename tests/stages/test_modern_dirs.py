"""ModernBERT directories through the other commands: `inspect` and `report` describe the
architecture (arch, layers, local window, global layers, packing efficiency), eval mode mlm
scores it (with pseudo-perplexity), finetune's best/ is described as a classifier."""

from __future__ import annotations

import json
import math
import random

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("torch")

from test_pretrain import ADJS, MODERN, NOUNS, metrics, pretrain, vocab_dir  # noqa: E402,F401  (fixture)

from mlmctl.inspect_dir import describe  # noqa: E402


def _rows(sections):
    return {title: dict(rows) for title, rows in sections}


@pytest.fixture(scope="module")
def modern_runs(tmp_path_factory, vocab_dir):  # noqa: F811
    """runs/{pretrain, finetune, eval-mlm, eval} of a tiny ModernBERT, through the CLI."""
    from mlmctl.cli import main

    runs = tmp_path_factory.mktemp("modern-runs")

    class _Capture:  # run_cli is function-scoped; a module fixture calls main() itself
        @staticmethod
        def run(*args):
            return main([str(a) for a in args]), "", ""

    code, _, _ = pretrain(_Capture.run, vocab_dir, runs / "pretrain", *MODERN, "--set", "train.max_steps=8",
                          "--set", "validation.every=8")
    assert code == 0
    # a two-class task in the corpus' own words: which animal or person a sentence is about
    rng = random.Random(0)
    animals, people = NOUNS[:6], NOUNS[6:10]
    rows = []
    for _ in range(120):
        label = rng.choice(["animal", "person"])
        noun = rng.choice(animals if label == "animal" else people)
        rows.append((f"the {ADJS[NOUNS.index(noun) % len(ADJS)]} {noun} sees the river", label))
    for name, part in (("train", rows[:80]), ("dev", rows[80:100]), ("test", rows[100:])):
        (runs / f"{name}.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in part))
    assert main(["finetune", "--input", str(runs / "pretrain"), "--output", str(runs / "finetune"),
                 "--set", f"train_file={runs / 'train.tsv'}", "--set", f"dev_file={runs / 'dev.tsv'}",
                 "--set", "max_steps=4", "--set", "eval_every=2", "--set", "batch_size=16", "--set", "threads=1",
                 "--set", "max_seq_len=32", "--set", "classifier_pooling=mean"]) == 0
    assert main(["eval", "--input", str(runs / "finetune"), "--output", str(runs / "eval"),
                 "--set", f"test_file={runs / 'test.tsv'}"]) == 0
    assert main(["eval", "--input", str(runs / "pretrain"), "--output", str(runs / "eval-mlm"),
                 "--set", "mode=mlm", "--set", f"data={vocab_dir}", "--set", "max_seq_len=32",
                 "--set", "pppl=true", "--set", "pppl_tokens=300", "--set", "bootstrap_resamples=0"]) == 0
    return runs


def test_inspect_describes_the_modernbert_run_and_classifier(modern_runs, run_cli):
    run = modern_runs / "pretrain"
    rows = _rows(describe(run))
    model = rows[f"{run / 'final'} (model)"]
    assert model["architectures"] == "ModernBertForMaskedLM" and model["model_type"] == "modernbert"
    assert model["num_hidden_layers"] == 2 and model["local_attention"] == 8
    assert model["global_attn_every_n_layers"] == 2
    assert model["attention"] == "global at layers 0; local (window 8) at the other 1"
    stage = rows[f"{run} (stage directory)"]
    assert 0.5 < stage["packing_efficiency"] <= 1.0 and stage["architectures"] == "ModernBertForMaskedLM"
    last = [r for r in metrics(run) if "packing_efficiency" in r][-1]
    assert rows[str(run / "metrics.jsonl")]["last packing_efficiency"] == f"{last['packing_efficiency']:.4f}"
    best = modern_runs / "finetune" / "best"
    clf = _rows(describe(best))[f"{best} (model)"]
    assert clf["architectures"] == "ModernBertForSequenceClassification"
    assert clf["classifier_pooling"] == "mean" and clf["labels"] == "animal, person"
    code, out, err = run_cli("inspect", run)
    assert code == 0 and "global at layers 0; local (window 8)" in out, err


def test_eval_mlm_with_pseudo_perplexity_on_modernbert(modern_runs, run_cli):
    ev = json.loads((modern_runs / "eval-mlm" / "eval.json").read_text())
    assert ev["mode"] == "mlm" and ev["masked_tokens"] > 0
    start = [r["val_ppl"] for r in metrics(modern_runs / "pretrain") if "val_ppl" in r][0]
    assert math.isfinite(ev["mlm_ppl"]) and 1 < ev["mlm_ppl"] < start  # below the untrained model's
    assert 0 <= ev["mlm_acc"] <= ev["mlm_top5_acc"] <= 1
    # pseudo-perplexity: every token masked in turn; a trained model is far from uniform over the vocabulary
    vocab_size = json.loads((modern_runs / "pretrain" / "final" / "config.json").read_text())["vocab_size"]
    assert ev["pppl_tokens"] >= 300 and 1 < ev["pppl"] < vocab_size
    rows = _rows(describe(modern_runs / "eval-mlm"))[str(modern_runs / "eval-mlm" / "eval.json")]
    assert rows["mode"] == "mlm" and rows["pppl"] == f"{ev['pppl']:.4f}"


def test_report_names_the_architecture(modern_runs, run_cli):
    code, out, err = run_cli("report", "--runs", modern_runs)
    assert code == 0, err
    assert "modernbert: 2 layers x 32 hidden, 2 heads; global attention every 2 layers, local window 8" in out
    eff = json.loads((modern_runs / "pretrain" / "manifest.json").read_text())["extra"]["packing_efficiency"]
    assert f"{eff:.3f} (real tokens / slots)" in out
    assert "pseudo-perplexity" in out and "held-out MLM ppl" in out
    assert "finetune" in out or "eval" in out  # the classifier's row in the test-set table


def _one_line(err: str) -> bool:
    return err.count("mlmctl: error") == 1 and "Traceback" not in err


def test_sequences_longer_than_the_model_takes_are_one_line(modern_runs, run_cli, tmp_path, vocab_dir):  # noqa: F811
    limit = json.loads((modern_runs / "pretrain" / "final" / "config.json").read_text())["max_position_embeddings"]
    code, _, err = run_cli("finetune", "--input", modern_runs / "pretrain", "--output", tmp_path / "ft",
                           "--set", f"train_file={modern_runs / 'train.tsv'}",
                           "--set", f"dev_file={modern_runs / 'dev.tsv'}", "--set", f"max_seq_len={limit + 1}")
    assert code == 1 and _one_line(err) and "max_position_embeddings" in err, err
    code, _, err = run_cli("eval", "--input", modern_runs / "finetune", "--output", tmp_path / "ev",
                           "--set", f"test_file={modern_runs / 'test.tsv'}", "--set", f"max_seq_len={limit + 1}")
    assert code == 1 and _one_line(err) and "max_position_embeddings" in err, err
    code, _, err = run_cli("eval", "--input", modern_runs / "pretrain", "--output", tmp_path / "ev-mlm",
                           "--set", "mode=mlm", "--set", f"data={vocab_dir}", "--set", f"max_seq_len={limit + 1}")
    assert code == 1 and _one_line(err) and "max_position_embeddings" in err, err
    for out in ("ft", "ev", "ev-mlm"):
        assert not (tmp_path / out / "manifest.json").exists()
