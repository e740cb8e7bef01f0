"""Shared fixtures: a toy stage input and a helper to run the CLI in-process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


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
