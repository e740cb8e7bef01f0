"""The command line: fast help, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from pathlib import Path

import pytest

from mlmctl.stages import REGISTRY
from mlmctl.stages import module as stage_module

STAGES = [s.command for s in REGISTRY]
ROOT = Path(__file__).resolve().parents[1]


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


def test_every_registered_stage_is_a_command_and_nothing_else_is(run_cli):
    import typer

    from mlmctl.cli import app

    commands = set(typer.main.get_command(app).commands)
    assert set(STAGES) <= commands
    assert commands - set(STAGES) == {"fill-mask", "inspect", "report", "plot"}
    code, out, _ = run_cli("--help")
    assert code == 0 and all(f"  {stage} " in out for stage in STAGES)


@pytest.mark.parametrize("stage", STAGES)
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


@pytest.mark.parametrize("stage", STAGES)
def test_help_has_a_runnable_example_and_a_valid_set_example(run_cli, stage, tmp_path):
    import re
    import shlex

    code, out, _ = run_cli(stage, "-h")
    assert code == 0 and "Examples:" in out
    example = next(line.strip() for line in out.splitlines() if line.strip().startswith(f"mlmctl {stage} -c configs/"))
    argv = shlex.split(example)[1:]
    config = argv[argv.index("-c") + 1]
    assert (ROOT / config).is_file()
    sets = set(re.findall(r"--set ([a-z_.]+=\S+)", out))
    assert len(sets) == 1  # the option help and the epilog show the same example
    code, _, err = run_cli(stage, "-c", ROOT / config, "--set", sets.pop(), "--print-config")
    assert code == 0, err


@pytest.mark.parametrize("spec", REGISTRY, ids=STAGES)
def test_a_stage_offers_only_the_options_it_honours(run_cli, spec):
    code, out, _ = run_cli(spec.command, "--help")
    offers = spec.fans_out
    assert ("--workers" in out) == offers and ("--task" in out) == offers
    assert ("--resume" in out) == spec.trains and ("--resume-from" in out) == spec.resume_from
    if not offers:
        assert run_cli(spec.command, "--task", "0/2")[0] == 2


def test_the_fanning_out_stages_are_the_data_stages():
    assert [s.command for s in REGISTRY if s.fans_out] == ["clean", "tokenize", "build-vocab"]
    assert [s.command for s in REGISTRY if s.trains] == ["pretrain", "finetune"]


@pytest.mark.parametrize("stage", STAGES)
def test_print_config_without_c_is_a_starter_that_loads_back(run_cli, stage, tmp_path):
    from mlmctl.config import config_to_dict, load_config

    code, out, err = run_cli(stage, "--print-config")
    assert code == 0, err
    starter = tmp_path / "starter.yaml"
    starter.write_text(out)
    code, again, err = run_cli(stage, "-c", starter, "--print-config")
    assert code == 0, err
    module = stage_module(next(s for s in REGISTRY if s.command == stage))
    cfg = load_config(module.CONFIG, starter, ["output=elsewhere"])
    assert config_to_dict(cfg)["output"] == "elsewhere"
    values = lambda text: [x for x in text.splitlines() if not x.lstrip().startswith("#")]  # noqa: E731
    assert values(again) == values(out)


def test_logs_off_a_terminal_are_timestamped_unpadded_and_ignore_columns(tmp_path):
    import os
    import re

    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(4):
        (raw / f"f{i}.txt").write_text("".join(f"This is paragraph {j} of the file number {i}, written as plain "
                                               f"prose with enough words to pass the filters.\n\n" for j in range(6)))

    outs = []
    for i, columns in enumerate((None, "40")):
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        env["MLMCTL_LOG_EVERY"] = "0"  # a progress line for every update
        if columns:
            env["COLUMNS"] = columns
        r = subprocess.run([sys.executable, "-m", "mlmctl", "clean", "--input", str(raw), "--output",
                            str(tmp_path / f"c{i}")], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        for line in (r.stdout + r.stderr).splitlines():
            assert line == line.rstrip(), repr(line)
        for line in r.stderr.splitlines():
            assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[clean\] ", line), line
        assert re.search(r"\d+/\d+ inputs \(\d+%\), [\d.]+ inputs/s, elapsed \d\d:\d\d, ETA \d\d:\d\d", r.stderr)
        table = r.stdout.splitlines()
        assert table[0] == "mlmctl clean" and all(re.fullmatch(r"\| [^|]+ \| [^|]* \|", x) for x in table[1:])
        outs.append([x for x in table if not x.startswith(("| time ", "| output "))])
    assert outs[0] == outs[1]
