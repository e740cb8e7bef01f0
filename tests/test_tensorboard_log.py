"""TensorBoard sink: tags for metrics.jsonl keys, events read back with TensorBoard's own reader,
and a SIGKILLed run resumed from its checkpoint step leaves one value per step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mlmctl.errors import MlmctlError
from mlmctl.tensorboard_log import TENSORBOARD_DIR, require, scalars, tag_for

# Pretrain and finetune rows as the stages write them (metrics.jsonl).
PRETRAIN_ROW = {"step": 4, "tokens": 2048, "loss": 6.7, "lr": 0.002, "grad_norm": 1.6, "tokens_per_s": 1588,
                "train_s": 1.29, "time": 1796148663.195, "elapsed_s": 7.5, "val_loss": 6.5, "val_ppl": 665.1,
                "mlm_accuracy": 0.05, "nsp_loss": 0.69, "nsp_accuracy": 0.5}
FINETUNE_DEV_ROW = {"step": 12, "epoch": 0, "dev_accuracy": 0.33, "dev_macro_f1": 0.17, "best": True}


def test_tags_follow_metrics_keys():
    assert scalars(PRETRAIN_ROW) == {
        "train/loss": 6.7, "train/tokens_seen": 2048.0, "lr": 0.002, "grad_norm": 1.6, "tokens_per_s": 1588.0,
        "val/loss": 6.5, "val/ppl": 665.1, "train/mlm_accuracy": 0.05, "train/nsp_loss": 0.69,
        "train/nsp_accuracy": 0.5}
    assert scalars(FINETUNE_DEV_ROW) == {"train/epoch": 0.0, "dev/accuracy": 0.33, "dev/macro_f1": 0.17}
    assert tag_for("val_mlm_accuracy") == "val/mlm_accuracy" and tag_for("time") is None
    assert scalars({"step": 1, "loss": float("nan"), "note": "x"}) == {}  # no curve from NaN or text


def test_missing_package_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(MlmctlError, match=r'pip install "mlmctl\[tensorboard\]"'):
        require()


def _read(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _steps(acc, tag):
    return [e.step for e in acc.Scalars(tag)]


def test_scalars_and_config_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from mlmctl.tensorboard_log import TensorBoardSink

    with TensorBoardSink(tmp_path) as tb:
        tb.log_config({"train": {"lr": 1e-3, "batch_size": 8}, "model": {"preset": "tiny"}, "seed": None})
        for step in (2, 4, 6):
            tb.log({**PRETRAIN_ROW, "step": step, "loss": 7.0 - step / 10})
        tb.log(FINETUNE_DEV_ROW)
    acc = _read(tmp_path)
    assert _steps(acc, "train/loss") == [2, 4, 6]
    assert [round(e.value, 5) for e in acc.Scalars("train/loss")] == [6.8, 6.6, 6.4]
    assert _steps(acc, "dev/macro_f1") == [12]
    assert {"val/ppl", "lr", "grad_norm", "tokens_per_s", "train/mlm_accuracy"} <= set(acc.Tags()["scalars"])
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "lr: 0.001" in text and "preset: tiny" in text


# A training loop in a child process: logs steps 1..KILL_AT flushing as the sink does, then is
# SIGKILLed (no close, no atexit), as a real kill would leave it.
_CHILD = textwrap.dedent("""
    import os, signal, sys
    from mlmctl.tensorboard_log import TensorBoardSink
    tb = TensorBoardSink(sys.argv[1], keep_through_step=-1)
    tb.log_config({"lr": 0.001})
    for step in range(1, int(sys.argv[2]) + 1):
        tb.log({"step": step, "loss": 10.0 - step})
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_kill_then_resume_has_no_gaps_or_duplicates(tmp_path):
    pytest.importorskip("tensorboard")
    from mlmctl.tensorboard_log import TensorBoardSink

    killed = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path), "7"], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert _steps(_read(tmp_path), "train/loss") == list(range(1, 8))  # what the killed run left
    # Event files are named by the second they were opened; TensorBoard reads them in name order,
    # so the resumed run's file must sort after the killed one's, as it does in real life.
    time.sleep(1.05 - time.time() % 1)
    # Resume from the checkpoint at step 4: steps 5..7 of the killed run must not show twice.
    with TensorBoardSink(tmp_path, keep_through_step=4) as tb:
        tb.log_config({"lr": 0.001})  # a resumed run does not log its config again
        for step in range(5, 11):
            tb.log({"step": step, "loss": 100.0 + step})
    assert len(os.listdir(tmp_path / TENSORBOARD_DIR)) == 2
    acc = _read(tmp_path)
    assert _steps(acc, "train/loss") == list(range(1, 11))
    values = [e.value for e in acc.Scalars("train/loss")]
    assert values == [10.0 - s for s in range(1, 5)] + [100.0 + s for s in range(5, 11)]
    assert len(acc.Tensors("config/text_summary")) == 1


def test_fresh_restart_drops_a_killed_attempt(tmp_path):
    pytest.importorskip("tensorboard")
    from mlmctl.tensorboard_log import TensorBoardSink

    with TensorBoardSink(tmp_path) as tb:
        for step in range(0, 6):
            tb.log({"step": step, "loss": 1.0})
    time.sleep(1.05 - time.time() % 1)
    with TensorBoardSink(tmp_path, keep_through_step=-1) as tb:  # no checkpoint: start over
        for step in range(0, 3):
            tb.log({"step": step, "loss": 2.0})
    assert [(e.step, e.value) for e in _read(tmp_path).Scalars("train/loss")] == [(0, 2.0), (1, 2.0), (2, 2.0)]
