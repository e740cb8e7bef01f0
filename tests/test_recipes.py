"""The recipes of docs/recipes.md, extracted from the doc itself so that doc and test cannot drift:
the chain Makefile (make, make again, a real edit, a no-op edit, a kill), the Slurm array script and
the GitHub Actions job."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "recipes.md"
MLMCTL = Path(sys.executable).parent / "mlmctl"


def recipe(name: str) -> str:
    """The fenced block that follows `<!-- recipe: NAME ... -->` in docs/recipes.md."""
    m = re.search(rf"<!-- recipe: {name}\b.*?-->\s*```\w*\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert m, f"docs/recipes.md has no `<!-- recipe: {name} -->` block"
    return m.group(1)


def test_recipe_shapes():
    for script in (recipe("slurm"), (ROOT / "scripts" / "chain.sh").read_text()):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    job = yaml.safe_load(recipe("actions"))
    steps = job["jobs"]["smoke"]["steps"]
    runs = [s["run"] for s in steps if "run" in s]
    assert "make smoke" in runs
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    for run in runs:
        assert run.split()[0] == "make" and set(run.split()[1:]) <= targets, run
    makefile = recipe("makefile")
    assert "\t" in makefile  # recipes need real tabs
    from mlmctl.stages import REGISTRY

    for stage in (s.command for s in REGISTRY):
        assert re.search(rf"\$\(STAGE\) {stage} .*--rebuild", makefile.replace("\\\n", " ")), stage


def _clean_config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "smoke" / "clean.yaml").read_text())
    cfg["python_docs"]["max_documents"] = 300
    cfg["output"] = str(tmp_path / "clean")
    path = tmp_path / "clean.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_slurm_array_then_final_run_equals_a_direct_run(tmp_path):
    config = _clean_config(tmp_path)
    script = tmp_path / "clean-array.sh"
    script.write_text(recipe("slurm"))
    n = 3
    env = {**os.environ, "MLMCTL": str(MLMCTL), "CONFIG": str(config), "SLURM_ARRAY_TASK_COUNT": str(n)}
    for i in range(n):
        subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": str(i)}, check=True,
                       capture_output=True)
        assert not (tmp_path / "clean" / "manifest.json").exists()
    # The job the array's afterok dependency runs: the command in the script's header.
    final = re.search(r"--wrap '(mlmctl clean .*?)'", recipe("slurm")).group(1).split()
    final = [str(MLMCTL), *final[1:]]
    final[final.index("clean.yaml")] = str(config)
    done = subprocess.run(final, capture_output=True, text=True, check=True)
    assert f"reusing {4} completed" in done.stderr
    direct = subprocess.run([str(MLMCTL), "clean", "-c", str(config), "--output", str(tmp_path / "direct")],
                            capture_output=True, text=True, check=True)
    assert direct.returncode == 0
    assert (tmp_path / "clean" / "manifest.json").read_bytes() == (tmp_path / "direct" / "manifest.json").read_bytes()


# ----------------------------------------------------------------------------------------------
# The chain Makefile


def _make(cwd: Path, *targets: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    args = ["make", "-f", "chain.mk", f"MLMCTL={MLMCTL}", "CONFIGS=configs", "DATA=data", "RUNS=runs", "WORKERS=2"]
    return subprocess.run([*args, *targets], cwd=cwd, capture_output=True, text=True, check=check, **kw)


def _state(cwd: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.parent.relative_to(cwd)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(cwd.glob("*/*/manifest.json"))}


def _set_lowercase(cfg: Path, value: bool) -> None:
    text = cfg.read_text()
    text = re.sub(r"lowercase: \w+", f"lowercase: {'true' if value else 'false'}", text)
    cfg.write_text(text)
    _newer_than_every_output(cfg)


def _newer_than_every_output(cfg: Path) -> None:
    """Make rebuilds a target older than `cfg` by mtime, and a filesystem stamps files with a clock
    that ticks coarsely (a jiffy; a second on some), so an edit right after a build can tie with its
    outputs and look old. Touch `cfg` until it is strictly newer than every file of the chain: a wait
    for the clock to tick, not a sleep that guesses how long a tick is."""
    root = cfg.parent.parent
    newest = max(p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p != cfg)
    while cfg.stat().st_mtime_ns <= newest:
        time.sleep(0.001)
        os.utime(cfg, None)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_chain_makefile_from_the_doc(tmp_path):
    shutil.copytree(ROOT / "configs" / "smoke", tmp_path / "configs")
    (tmp_path / "chain.mk").write_text(recipe("makefile"))
    tok_cfg = tmp_path / "configs" / "tokenize.yaml"
    assert re.search(r"lowercase: true", tok_cfg.read_text())

    # 1. the whole chain
    _make(tmp_path, "all")
    first = _state(tmp_path)
    assert {"data/clean", "data/tokens", "data/vocab", "runs/pretrain", "runs/eval-mlm", "data/task",
            "runs/finetune-pretrained", "runs/finetune-random", "runs/eval-pretrained", "runs/eval-random"} <= set(first)

    # 2. again: nothing to be done
    again = _make(tmp_path, "all")
    assert "Nothing to be done" in again.stdout and "mlmctl" not in again.stdout
    assert _state(tmp_path) == first

    # 3. a real tokenize edit: tokenize and everything after it rebuild, clean does not
    _set_lowercase(tok_cfg, False)
    planned = _make(tmp_path, "-n", "all").stdout
    assert " tokenize " in planned and " pretrain " in planned and " finetune " in planned
    assert " clean " not in planned and " demo-task " not in planned
    _make(tmp_path, "vocab")
    edited = _state(tmp_path)
    assert edited["data/clean"] == first["data/clean"]
    for stage in ("data/tokens", "data/vocab"):
        assert edited[stage][0] != first[stage][0]
    assert not list(tmp_path.glob("data/.*"))  # no rebuild sibling left behind

    # 4. a no-op edit (a comment): nothing rebuilt, and make converges
    tok_cfg.write_text("# only a comment\n" + tok_cfg.read_text())
    _newer_than_every_output(tok_cfg)
    noop = _make(tmp_path, "vocab")
    assert noop.stderr.count("up to date") == 2  # tokenize and build-vocab ran, found nothing to do
    after = _state(tmp_path)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in edited.items()}
    assert _make(tmp_path, "-q", "vocab", check=False).returncode == 0

    # 5. killed mid-rebuild: the old output stays finished, the next make continues
    _set_lowercase(tok_cfg, True)
    killed = subprocess.run(  # SIGKILLed (make and mlmctl: one process group) once a tokenize unit is done
        ["make", "-f", "chain.mk", f"MLMCTL={MLMCTL}", "CONFIGS=configs", "DATA=data", "RUNS=runs", "vocab"],
        cwd=tmp_path, capture_output=True, start_new_session=True,
        env={**os.environ, "MLMCTL_TEST_KILL": "tokenize:1"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list(tmp_path.glob("data/.tokens.rebuild/.work/*/unit-*/done.json"))
    assert (tmp_path / "data/tokens/manifest.json").read_bytes() == edited["data/tokens"][0]
    resumed = _make(tmp_path, "vocab")
    assert "resuming the unfinished run" in resumed.stderr
    final = _state(tmp_path)
    # back to the first config and the same input: byte-identical to the first build
    assert final["data/tokens"][0] == first["data/tokens"][0]
    assert final["data/vocab"][0] == first["data/vocab"][0]
    assert not list(tmp_path.glob("data/.*"))
