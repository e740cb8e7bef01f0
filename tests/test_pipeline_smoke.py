"""The whole chain through the CLI on the smoke configs: what `make smoke` runs, checked for real outcomes."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mlmctl() -> str:
    exe = Path(sys.executable).parent / "mlmctl"
    return str(exe) if exe.exists() else shutil.which("mlmctl")


@pytest.mark.slow
def test_smoke_chain_end_to_end(tmp_path):
    env = dict(os.environ, MLMCTL=_mlmctl(), CONFIGS=str(ROOT / "configs" / "smoke"), WORKERS="2")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "chain.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)  # 64 s idle, 222 s under load
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, runs = tmp_path / "data" / "smoke", tmp_path / "runs" / "smoke"

    from mlmctl.layout import MANIFEST, WORK
    from mlmctl.manifest import read_manifest

    # Every stage finished: a manifest whose every file is present with its recorded sha256.
    for d in [data / x for x in ("clean", "tokens", "vocab", "task")] + [
            runs / x for x in ("pretrain", "eval-mlm", "finetune-pretrained", "finetune-random", "eval-pretrained",
                               "eval-random")]:
        assert (d / MANIFEST).exists(), d
        assert read_manifest(d, verify=True).shards + read_manifest(d).files, d
        assert not (d / WORK).exists()

    # Pretraining learned something: finite loss, lower at the end than at the start.
    lines = [json.loads(line) for line in (runs / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in lines if "loss" in r]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3

    pre = read_manifest(runs / "pretrain").extra
    assert pre["steps"] == 30 and math.isfinite(pre["final_loss"]) and pre["final_loss"] < losses[0]

    mlm = json.loads((runs / "eval-mlm" / "eval.json").read_text())
    vocab_size = read_manifest(data / "vocab").extra["vocab_size"]
    # Better than a uniform guess over the vocabulary, and the 15% masking of the config.
    assert math.isfinite(mlm["mlm_ppl"]) and 1 < mlm["mlm_ppl"] < vocab_size and mlm["unigram_ppl"] > 1
    assert mlm["mask_prob"] == 0.15 and 0 < mlm["masked_tokens"] < mlm["tokens"]
    assert 0 <= mlm["mlm_acc"] <= mlm["mlm_top5_acc"] <= 1
    for init in ("pretrained", "random"):
        ev = json.loads((runs / f"eval-{init}" / "eval.json").read_text())
        for key in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "per_class", "confusion_matrix", "labels"):
            assert key in ev, key
        cm = ev["confusion_matrix"]
        assert len(cm) == len(ev["labels"]) >= 2 and sum(map(sum, cm)) == ev["n"] > 0
        assert ev["accuracy"] == pytest.approx(sum(cm[i][i] for i in range(len(cm))) / ev["n"])
        assert 0 <= ev["macro_f1"] <= 1 and ev["accuracy_ci"][0] <= ev["accuracy"] <= ev["accuracy_ci"][1]
    # The second task: a tagger per init, entity F1 with its interval, compared in the summary.
    for init in ("pretrained", "random"):
        assert (runs / f"tagger-{init}" / MANIFEST).exists()
        ev = json.loads((runs / f"eval-tagging-{init}" / "eval.json").read_text())
        assert ev["mode"] == "tagger" and ev["entity_f1_ci"][0] <= ev["entity_f1"] <= ev["entity_f1_ci"][1]
        assert ev["n_sentences"] == read_manifest(data / "tagging").extra["counts"]["test"]
    assert "tagging: pretraining effect" in proc.stdout
    assert "pretrained" in proc.stdout and "random" in proc.stdout  # the closing summary
    assert mlm["mlm_ppl_ci"][0] <= mlm["mlm_ppl"] <= mlm["mlm_ppl_ci"][1]
    assert "pretraining effect" in proc.stdout and "paired bootstrap" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1] == "wrote runs/smoke/report.html"  # the page, last
    assert (runs / "report.html").read_text().count("data:image/png;base64,") >= 4

    # A second run finds every stage up to date and does no work.
    again = subprocess.run(["bash", str(ROOT / "scripts" / "chain.sh")], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("up to date") >= 10
