"""The stage contract through a toy stage: up to date, --force, resume, workers, task fan-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import toy_stage

from mlmctl.errors import MlmctlError
from mlmctl.manifest import read_manifest
from mlmctl.stage import RunOptions, run_stage


def _run(inp, out, sets=(), **opts):
    return run_stage(toy_stage, None, [f"input={inp}", f"output={out}", *sets], opts=RunOptions(**opts))


def _manifest_bytes(out: Path) -> bytes:
    return (out / "manifest.json").read_bytes()


def test_fresh_run_writes_verified_manifest(toy_input, tmp_path):
    out = tmp_path / "out"
    assert _run(toy_input, out) == 0
    m = read_manifest(out, "toy")
    assert m.extra["lines"] == 35
    assert m.records("lines") == 35
    assert len(m.shards) > 5  # the 64-byte bound split every file's output
    assert not (out / ".work").exists()
    names = [s.name for s in m.shards]
    assert names == [f"train/shard-{i:05d}.txt.gz" for i in range(len(names))]


def test_rerun_is_up_to_date_and_does_nothing(toy_input, tmp_path, capsys):
    out = tmp_path / "out"
    _run(toy_input, out)
    before = _manifest_bytes(out)
    mtime = (out / "manifest.json").stat().st_mtime_ns
    capsys.readouterr()
    assert _run(toy_input, out) == 0
    assert "up to date" in capsys.readouterr().err
    assert (out / "manifest.json").stat().st_mtime_ns == mtime
    assert _manifest_bytes(out) == before


def test_changed_config_needs_force(toy_input, tmp_path):
    out = tmp_path / "out"
    _run(toy_input, out)
    with pytest.raises(MlmctlError, match=r"different config \(changed: suffix\).*--force"):
        _run(toy_input, out, ["suffix=+"])
    assert _run(toy_input, out, ["suffix=+"], force=True) == 0
    assert read_manifest(out, "toy").config["suffix"] == "+"


def test_changed_input_needs_force(toy_input, tmp_path):
    out = tmp_path / "out"
    _run(toy_input, out)
    (toy_input / "f9.txt").write_text("new\n")
    with pytest.raises(MlmctlError, match="different input"):
        _run(toy_input, out)


def test_moving_the_output_keeps_it_up_to_date(toy_input, tmp_path, capsys):
    out = tmp_path / "out"
    _run(toy_input, out)
    moved = tmp_path / "elsewhere"
    out.rename(moved)
    capsys.readouterr()
    assert _run(toy_input, moved) == 0
    assert "up to date" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_give_identical_output(toy_input, tmp_path, workers):
    ref = tmp_path / "ref"
    _run(toy_input, ref)
    out = tmp_path / f"w{workers}"
    _run(toy_input, out, workers=workers)
    assert _manifest_bytes(out) == _manifest_bytes(ref)


def test_task_fanout_then_assemble(toy_input, tmp_path):
    ref = tmp_path / "ref"
    _run(toy_input, ref)
    out = tmp_path / "fan"
    for i in range(3):
        assert _run(toy_input, out, task=(i, 3)) == 0
        assert not (out / "manifest.json").exists()
    assert _run(toy_input, out) == 0
    assert _manifest_bytes(out) == _manifest_bytes(ref)


def test_crash_leaves_no_manifest_and_rerun_resumes(toy_input, tmp_path, monkeypatch, capsys):
    ref = tmp_path / "ref"
    _run(toy_input, ref)
    out = tmp_path / "out"
    monkeypatch.setenv("TOY_CRASH_AT", "f3.txt")
    with pytest.raises(RuntimeError):
        _run(toy_input, out)
    assert not (out / "manifest.json").exists()
    with pytest.raises(MlmctlError, match="did not finish"):
        read_manifest(out, "toy")
    monkeypatch.delenv("TOY_CRASH_AT")
    capsys.readouterr()
    assert _run(toy_input, out) == 0
    assert "reusing 3 completed" in capsys.readouterr().err
    assert _manifest_bytes(out) == _manifest_bytes(ref)


def test_damaged_unit_is_redone(toy_input, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("TOY_CRASH_AT", "f4.txt")
    with pytest.raises(RuntimeError):
        _run(toy_input, out)
    monkeypatch.delenv("TOY_CRASH_AT")
    victim = next((out / ".work" / "units" / "unit-00001").rglob("*.gz"))
    victim.write_bytes(b"garbage")
    ref = tmp_path / "ref"
    _run(toy_input, ref)
    _run(toy_input, out)
    assert _manifest_bytes(out) == _manifest_bytes(ref)


def test_unfinished_run_of_other_config_needs_force(toy_input, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("TOY_CRASH_AT", "f2.txt")
    with pytest.raises(RuntimeError):
        _run(toy_input, out)
    monkeypatch.delenv("TOY_CRASH_AT")
    with pytest.raises(MlmctlError, match="unfinished run of a different config"):
        _run(toy_input, out, ["suffix=+"])
    assert _run(toy_input, out, ["suffix=+"], force=True) == 0


def test_refuses_foreign_output_dir(toy_input, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(MlmctlError, match="not an mlmctl stage directory"):
        _run(toy_input, out)
    with pytest.raises(MlmctlError, match="not an mlmctl stage directory"):
        _run(toy_input, out, force=True)
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_tampered_output_is_detected(toy_input, tmp_path):
    out = tmp_path / "out"
    _run(toy_input, out)
    shard = out / "train" / "shard-00000.txt.gz"
    original = shard.read_bytes()
    data = bytearray(original)
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(MlmctlError, match="sha256 differs"):
        read_manifest(out, "toy")
    shard.write_bytes(original)
    read_manifest(out, "toy")
    (out / "train" / "shard-00001.txt.gz").unlink()
    with pytest.raises(MlmctlError, match="missing"):
        read_manifest(out, "toy")


def test_manifest_is_plain_json_with_contract_fields(toy_input, tmp_path):
    out = tmp_path / "out"
    _run(toy_input, out)
    data = json.loads((out / "manifest.json").read_text())
    for key in ("stage", "version", "config", "config_hash", "input_hash", "shards"):
        assert key in data
    shard = data["shards"][0]
    assert set(shard) >= {"name", "records", "bytes", "sha256"}


def test_run_that_wrote_nothing_does_not_block_a_new_config(toy_input, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("TOY_CRASH_AT", "f0.txt")  # fails on the first unit: nothing written
    with pytest.raises(RuntimeError):
        _run(toy_input, out)
    monkeypatch.delenv("TOY_CRASH_AT")
    assert _run(toy_input, out, ["suffix=+"]) == 0
