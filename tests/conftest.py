"""Shared fixtures: a toy stage input and a helper to run the CLI in-process; and what keeps every
test's outcome independent of the machine's speed and of the tests that ran before it in the
same (xdist) worker process."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

TESTS = Path(__file__).parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

# Hypothesis times each example (`deadline`, 200 ms) and the generation (`too_slow`): on a loaded
# CI machine both fail tests that are correct. Failures print the blob that replays them.
# Loaded here, before any test module builds its own `@settings`, which inherit from it.
settings.register_profile("mlmctl", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mlmctl")

# Off a terminal, a run prints a progress line every MLMCTL_LOG_EVERY seconds: how many lines its
# stderr holds would depend on the machine's speed. Tests of those lines set it (tests/test_cli.py).
os.environ["MLMCTL_LOG_EVERY"] = "1000000"


@pytest.fixture(scope="session")
def _torch_threads() -> int | None:
    """torch's thread count before any test changed it (known when collection imported torch, as a
    full run's does; a run of a few files that imports torch later restores each test's own start)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


@pytest.fixture(autouse=True)
def _fresh_process_state(_torch_threads):
    """Each test starts from what a fresh `mlmctl` process has, whatever ran before it here: seeded
    global RNGs, torch's thread count (in-process runs with `threads: N` set it for the process),
    no word table kept by mlmctl.indexing from another test's corpus; and it leaves environment
    variables and the working directory as it found them."""
    env, cwd = dict(os.environ), os.getcwd()
    torch = sys.modules.get("torch")
    threads = _torch_threads or (torch.get_num_threads() if torch is not None else None)
    random.seed(0)
    if torch is not None:
        torch.manual_seed(0)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(0)
    indexing = sys.modules.get("mlmctl.indexing")
    if indexing is not None:
        indexing._TABLES.clear()
    yield
    if os.getcwd() != cwd:
        os.chdir(cwd)
    if dict(os.environ) != env:
        os.environ.clear()
        os.environ.update(env)
    torch = sys.modules.get("torch")
    if torch is not None and threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture
def run_cli(capsys):
    """Run `mlmctl ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from mlmctl.cli import main

    def _run(*args: str):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def toy_input(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(5):
        (raw / f"f{i}.txt").write_text("".join(f"line {i}-{j} of file {i}\n" for j in range(7)))
    return raw
