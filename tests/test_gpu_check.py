"""benchmarks/gpu_check.py: without CUDA it says so in one line and measures nothing; its code
path (both architectures against the transformers classes, same weights) runs on CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_without_cuda_it_skips_in_one_line():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [proc.stdout.strip()] and "gpu_check: skipped, no CUDA device" in proc.stdout


@pytest.mark.slow
def test_the_code_path_on_cpu_gives_equal_losses():
    pytest.importorskip("transformers")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--preset", "tiny", "--seq-len", "32",
                           "--batch-size", "2", "--steps", "1", "--warmup", "1", "--no-compile", "--vocab", "500"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[0] in ("bert", "modernbert") and "last loss" in line:
            losses[(parts[0], parts[1])] = float(parts[-1])
    assert set(losses) == {(a, w) for a in ("bert", "modernbert") for w in ("mlmctl", "HF")}
    for arch in ("bert", "modernbert"):  # same weights, same batches: the same loss after the steps
        assert losses[(arch, "mlmctl")] == pytest.approx(losses[(arch, "HF")], abs=1e-3)
