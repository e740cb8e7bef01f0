"""`mlmctl glue` under SIGKILL (issue 14), as tests/test_kill_anywhere.py does for the data stages:
killed at seeded random moments (while converting, fine-tuning a task, scoring, fitting the
baseline), nothing looks finished, and a rerun ends with the glue.json of an uninterrupted run.
A second run on the same output while one is running is refused, naming the holder's PID."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlmctl.manifest import read_manifest

from test_glue_harness import model  # noqa: F401  (the module fixture: a tiny model directory)
from test_glue_harness import write_glue

MLMCTL = Path(sys.executable).parent / "mlmctl"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")]


def _cmd(glue: Path, model_dir: Path, out: Path) -> list[str]:
    sets = ["epochs=2", "lr=0.003", "batch_size=8", "max_seq_len=32", "threads=1", "device=cpu"]
    return [str(MLMCTL), "glue", "--glue-dir", str(glue), "--input", str(model_dir), "--output", str(out),
            *sum((["--set", s] for s in sets), [])]


def _report(out: Path) -> dict:
    """glue.json without what may differ between two honest runs (none today; kept for timing
    fields a later version may add)."""
    report = json.loads((out / "glue.json").read_text())
    report.pop("seconds", None)
    return report


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model):  # noqa: F811
    tmp = tmp_path_factory.mktemp("kill-glue")
    glue = write_glue(tmp / "GLUE", tasks=("CoLA", "STS-B"), n_train=32, n_dev=16)
    start = time.monotonic()
    subprocess.run(_cmd(glue, model, tmp / "ref"), check=True, capture_output=True)
    return tmp, glue, time.monotonic() - start


def test_glue_killed_anywhere_then_rerun_gives_the_same_table(reference, model):  # noqa: F811
    tmp, glue, seconds = reference
    out = tmp / "killed"
    rng = random.Random("kill-glue")
    for _ in range(3):
        proc = subprocess.Popen(_cmd(glue, model, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(rng.uniform(0.5, seconds))
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it finished first: then it is complete, and the rerun must say up to date
        assert proc.wait() in (0, -signal.SIGKILL), f"exit {proc.returncode}: neither finished nor killed"
        if proc.returncode == 0 or (out / "manifest.json").exists():
            # Finished before the kill, or killed after its manifest (while printing the summary):
            # the run is complete.
            read_manifest(out, "glue", verify=True)
            assert _report(out) == _report(tmp / "ref")
        else:
            # Nothing that looks finished: no manifest, and a table already written sits beside the
            # run marker that says the directory is unfinished.
            assert not (out / "glue.json").exists() or (out / ".work" / "run.json").exists()
            for sub in out.glob("*/seed-*/manifest.json"):  # a sub-run with a manifest is complete
                read_manifest(sub.parent, "finetune", verify=True)  # (.work may linger: the rerun drops it)
    done = subprocess.run(_cmd(glue, model, out), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _report(out) == _report(tmp / "ref")
    assert (out / "glue.md").read_text() == (tmp / "ref" / "glue.md").read_text()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_a_second_glue_run_on_the_same_output_is_refused(reference, model):  # noqa: F811
    tmp, glue, _ = reference
    out = tmp / "twice"
    # Four seeds: the first run holds the lock far longer than the second needs to start.
    first = subprocess.Popen(_cmd(glue, model, out) + ["--seeds", "4"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 600  # only a bound on a broken run: the wait ends on the lock
        lock = out / ".mlmctl.lock"
        # The holder writes its PID just after taking the lock: wait for it, not only the file.
        while not (lock.exists() and lock.read_text().strip()) and first.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.exists() and lock.read_text().strip() == str(first.pid), f"no lock (exit {first.poll()})"
        # Frozen while it holds the lock, so the second run meets it however loaded the machine is
        # (a stopped process keeps its flock).
        os.killpg(first.pid, signal.SIGSTOP)
        second = subprocess.run(_cmd(glue, model, out) + ["--seeds", "4"], capture_output=True, text=True)
        assert first.poll() is None, "the first run ended before the second tried: the test proved nothing"
        assert second.returncode == 1, second.stderr
        lines = [ln for ln in second.stderr.splitlines() if "error" in ln]
        assert len(lines) == 1 and re.search(rf"another mlmctl run \(PID {first.pid}\) is writing to {out}", lines[0])
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)  # SIGKILL ends a stopped process too
        except ProcessLookupError:
            pass
        first.wait()
