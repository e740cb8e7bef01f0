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
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, runs = tmp_path / "data" / "smoke", tmp_path / "runs" / "smoke"

    for d in ("clean", "tokens", "vocab", "task"):
        assert (data / d / "manifest.json").exists(), d
    for d in ("pretrain", "eval-mlm", "finetune-pretrained", "finetune-random", "eval-pretrained", "eval-random"):
        assert (runs / d / "manifest.json").exists(), d
        assert not (runs / d / ".work").exists()

    # Pretraining learned something: finite loss, lower at the end than at the start.
    lines = [json.loads(line) for line in (runs / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in lines if "loss" in r]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3

    mlm = json.loads((runs / "eval-mlm" / "eval.json").read_text())
    assert math.isfinite(mlm["mlm_ppl"]) and mlm["mlm_ppl"] > 1 and mlm["unigram_ppl"] > 1
    for init in ("pretrained", "random"):
        ev = json.loads((runs / f"eval-{init}" / "eval.json").read_text())
        for key in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "per_class", "confusion_matrix", "labels"):
            assert key in ev, key
        assert 0 <= ev["accuracy"] <= 1
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
