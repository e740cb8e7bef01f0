"""SIGKILL a data stage (`--workers 2`) at seeded random moments, rerun: byte-identical output to an
uninterrupted run, no process left behind, no temporary file left over. The index_with route
(tokenize indexing in its pass, build-vocab adopting) is killed the same way."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MLMCTL = Path(sys.executable).parent / "mlmctl"
VOCAB = "{ref}/build-vocab/tokenizer.json"  # the reference vocabulary, for the index_with route
STAGES = [  # (name, stage, config in configs/smoke, input made by an earlier entry, extra arguments)
    ("clean", "clean", "clean.yaml", None, ()),
    ("tokenize", "tokenize", "tokenize.yaml", "clean", ()),
    ("build-vocab", "build-vocab", "build-vocab.yaml", "tokenize", ()),
    # Ids in tokenize's pass, then adopted by build-vocab (docs/tokenize.md, index_with).
    ("tokenize-indexed", "tokenize", "tokenize.yaml", "clean", ("--set", f"index_with={VOCAB}")),
    ("build-vocab-adopting", "build-vocab", "build-vocab.yaml", "tokenize-indexed", ("--set", f"from={VOCAB}")),
]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _args(tmp: Path, stage: str, config: str, upstream: str | None, extra, out: Path) -> list[str]:
    args = [str(MLMCTL), stage, "-c", str(tmp / config), "--output", str(out), "--workers", "2"]
    args += [a.format(ref=tmp / "ref") for a in extra]
    return args + (["--input", str(tmp / "ref" / upstream)] if upstream else [])


def _session_alive(sid: int) -> list[int]:
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _shards(out: Path) -> list[tuple[str, str]]:
    m = json.loads((out / "manifest.json").read_text())
    return [(s["name"], s["sha256"]) for s in m["shards"] + m["files"]]


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """Configs (a smaller clean) and uninterrupted reference outputs with their run times."""
    tmp = tmp_path_factory.mktemp("kill")
    for name in {entry[2] for entry in STAGES}:
        cfg = yaml.safe_load((ROOT / "configs" / "smoke" / name).read_text())
        if name == "clean.yaml":
            cfg["python_docs"]["max_documents"] = 400
        (tmp / name).write_text(yaml.safe_dump(cfg))
    seconds = {}
    for name, stage, config, upstream, extra in STAGES:
        start = time.monotonic()
        subprocess.run(_args(tmp, stage, config, upstream, extra, tmp / "ref" / name), check=True, capture_output=True)
        seconds[name] = time.monotonic() - start
    return tmp, seconds


@pytest.mark.parametrize("name,stage,config,upstream,extra", STAGES, ids=[s[0] for s in STAGES])
def test_kill_anywhere_then_rerun(refs, name, stage, config, upstream, extra):
    tmp, seconds = refs
    out = tmp / f"killed-{name}"
    rng = random.Random(f"kill-{name}")
    for _ in range(3):
        proc = subprocess.Popen(_args(tmp, stage, config, upstream, extra, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.3, seconds[name]))
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it finished first: the rerun must then say up to date
        assert proc.wait() in (0, -signal.SIGKILL), f"exit {proc.returncode}: neither finished nor killed"
        if proc.returncode == 0 or (out / "manifest.json").exists():  # finished (maybe killed just after)
            assert _shards(out) == _shards(tmp / "ref" / name)
        # SIGKILLed processes go at once; the bound is for a loaded machine reaping them, not a guess
        # at how long they need (a survivor would outlive any bound).
        deadline = time.monotonic() + 120
        while _session_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _session_alive(proc.pid), "a process of the killed run survived"
    subprocess.run(_args(tmp, stage, config, upstream, extra, out), check=True, capture_output=True)
    assert _shards(out) == _shards(tmp / "ref" / name)
    assert (out / "manifest.json").read_bytes() == (tmp / "ref" / name / "manifest.json").read_bytes()
    assert not (out / ".work").exists()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_both_routes_to_ids_agree(refs):
    """build-vocab adopting tokenize's ids writes what build-vocab indexing the text wrote."""
    tmp, _ = refs
    assert _shards(tmp / "ref" / "build-vocab-adopting") == _shards(tmp / "ref" / "build-vocab")
