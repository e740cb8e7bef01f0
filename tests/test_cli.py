"""The command line: fast help, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_help_imports_no_heavy_modules():
    code = (
        "import sys; from mlmctl.cli import main\n"
        "for argv in (['--help'], ['clean', '--help'], ['pretrain', '--help']):\n"
        "    try: main(argv)\n"
        "    except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'tokenizers', 'numpy', 'transformers') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "mlmctl", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("mlmctl ")


@pytest.mark.parametrize("stage", ["clean", "tokenize", "build-vocab", "pretrain", "finetune", "eval"])
def test_every_stage_has_help(run_cli, stage):
    code, out, _ = run_cli(stage, "--help")
    assert code == 0 and "--config" in out and "--set" in out


def test_missing_config_is_one_line_error(run_cli, tmp_path):
    code, out, err = run_cli("clean", "-c", tmp_path / "missing.yaml")
    assert code == 1
    assert err.strip().count("\n") == 0
    assert err.startswith("mlmctl: error: ") and "does not exist" in err
    assert "Traceback" not in err


def test_unknown_option_is_usage_error(run_cli):
    code, _, err = run_cli("clean", "--no-such-flag")
    assert code == 2


def test_bad_task_is_one_line_error(run_cli):
    code, _, err = run_cli("clean", "--task", "5/2")
    assert code == 1 and "--task" in err


def test_unfinished_input_is_refused_in_one_line(run_cli, tmp_path):
    (tmp_path / "clean").mkdir()
    code, _, err = run_cli("tokenize", "--input", tmp_path / "clean", "--output", tmp_path / "tok")
    assert code == 1
    assert "has no manifest.json" in err and "mlmctl clean" in err
    assert not (tmp_path / "tok").exists()


def test_debug_shows_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mlmctl", "clean", "-c", str(tmp_path / "nope.yaml"), "--debug"],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr
