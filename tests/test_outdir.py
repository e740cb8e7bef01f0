"""Nothing lost, nobody in: --force and --rebuild delete only mlmctl's files, paths stay inside,
one run per output directory, workers die with the runner, a full disk is one line."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import toy_stage

from mlmctl import stage as stage_mod
from mlmctl.errors import MlmctlError
from mlmctl.manifest import read_manifest
from mlmctl.outdir import LOCK_FILE, DirLock
from mlmctl.stage import RunOptions, run_stage

TESTS = Path(__file__).parent


def _run(inp, out, sets=(), **opts):
    return run_stage(toy_stage, None, [f"input={inp}", f"output={out}", *sets], opts=RunOptions(**opts))


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _temporaries(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if ".tmp-" in p.name]


# -- 1. --force deletes only what mlmctl can prove it wrote -----------------------------------


@pytest.mark.parametrize("flag", ["force", "rebuild"])
def test_foreign_manifest_and_user_files_are_never_deleted(toy_input, tmp_path, flag):
    out = tmp_path / "mine"
    (out / "notes").mkdir(parents=True)
    (out / "manifest.json").write_text('{"name": "x"}')
    (out / "thesis.tex").write_text("precious")
    (out / "notes" / "a.txt").write_text("also precious")
    before = _tree(out)
    with pytest.raises(MlmctlError, match="not an mlmctl manifest.*even with --force"):
        _run(toy_input, out)
    with pytest.raises(MlmctlError, match="not an mlmctl manifest"):
        _run(toy_input, out, **{flag: True})
    assert _tree(out) == before


def test_force_refuses_a_finished_dir_with_user_files_naming_them(toy_input, tmp_path):
    out = tmp_path / "out"
    _run(toy_input, out)
    (out / "train" / "my-notes.txt").write_text("mine")
    before = _tree(out)
    with pytest.raises(MlmctlError, match=r"did not write \(train/my-notes.txt\); nothing was deleted"):
        _run(toy_input, out, ["suffix=+"], force=True)
    assert _tree(out) == before
    (out / "train" / "my-notes.txt").unlink()
    assert _run(toy_input, out, ["suffix=+"], force=True) == 0
    assert read_manifest(out, "toy").config["suffix"] == "+"


def test_force_clears_an_unfinished_run_but_not_a_user_file_added_to_it(toy_input, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("TOY_CRASH_AT", "f2.txt")
    with pytest.raises(RuntimeError):
        _run(toy_input, out)
    monkeypatch.delenv("TOY_CRASH_AT")
    (out / "results.csv").write_text("1,2\n")
    with pytest.raises(MlmctlError, match="results.csv"):
        _run(toy_input, out, ["suffix=+"], force=True)
    assert (out / ".work" / "units" / "unit-00000" / "done.json").exists()
    (out / "results.csv").unlink()
    assert _run(toy_input, out, ["suffix=+"], force=True) == 0


# -- 2. paths that escape ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../outside/x.txt.gz", "/etc/passwd", "train/../../x", "link/x.txt.gz", ""])
def test_manifest_names_must_stay_inside(toy_input, tmp_path, name):
    out = tmp_path / "out"
    _run(toy_input, out)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt.gz").write_bytes(b"x")
    (out / "link").symlink_to(outside)
    data = json.loads((out / "manifest.json").read_text())
    data["shards"][0]["name"] = name
    (out / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(MlmctlError, match="not a file inside"):
        read_manifest(out, "toy")
    with pytest.raises(MlmctlError, match="not a file inside"):
        read_manifest(out, "toy", verify=False)


# -- 3. one run per output directory ----------------------------------------------------------


def test_second_run_is_refused_naming_the_holder(toy_input, tmp_path):
    out = tmp_path / "out"
    _run(toy_input, out)
    before = _tree(out)
    with DirLock(out, "toy"):
        for extra in ({}, {"force": True}, {"rebuild": True}):
            with pytest.raises(MlmctlError, match=rf"another mlmctl run \(PID {os.getpid()}\) is writing to"):
                _run(toy_input, out, ["suffix=+"], **extra)
    assert _tree(out) == before
    assert _run(toy_input, out, ["suffix=+"], force=True) == 0  # released


@pytest.mark.parametrize("where", ["a file", "under a file", "a device"])
def test_an_output_that_cannot_be_a_directory_is_one_line_naming_it(toy_input, tmp_path, where, run_cli):
    (tmp_path / "f").write_text("mine\n")
    out = {"a file": tmp_path / "f", "under a file": tmp_path / "f" / "out", "a device": Path("/dev/null")}[where]
    with pytest.raises(MlmctlError, match=rf"^toy: (output {out} exists and is not a directory|cannot create output "
                                          rf"directory {out} \(Not a directory)"):
        _run(toy_input, out)
    assert (tmp_path / "f").read_text() == "mine\n"
    code, _, err = run_cli("clean", "--input", toy_input, "--output", out)  # through the CLI: the stage names it
    assert code == 1 and err.strip().splitlines()[-1].startswith("mlmctl: error: clean: ") and str(out) in err, err


def test_lock_file_is_not_output(toy_input, tmp_path):
    out = tmp_path / "out"
    with DirLock(out, "toy"):
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())
    _run(toy_input, out)
    assert not (out / LOCK_FILE).exists()  # removed by a run that ends normally
    names = {s.name for s in read_manifest(out, "toy").shards + read_manifest(out, "toy").files}
    assert LOCK_FILE not in names
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / LOCK_FILE).write_text("123\n")  # a killed run's lock file alone: an empty directory
    assert _run(toy_input, fresh) == 0


def test_lock_held_by_another_process_is_released_when_it_dies(toy_input, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        # Holds the lock until its stdin closes (when it is killed below), however long the run takes.
        [sys.executable, "-c", f"from mlmctl.outdir import DirLock; DirLock({str(out)!r}, 'x').acquire(); "
                               f"print('locked', flush=True); import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MlmctlError, match=rf"PID {holder.pid}\b"):
            _run(toy_input, out)
    finally:
        holder.kill()
        holder.wait()
    assert _run(toy_input, out) == 0


# -- 4. workers die with their parent ---------------------------------------------------------


def _children_of(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_and_resource_tracker_die_with_a_killed_runner(toy_input, tmp_path):
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(TESTS)!r})
        import toy_stage
        from mlmctl.stage import RunOptions, run_stage
        run_stage(toy_stage, None, ["input={toy_input}", "output={out}"], opts=RunOptions(workers=2))
    """)
    marks = tmp_path / "sleeping"
    marks.mkdir()
    env = {**os.environ, "TOY_SLEEP": "600", "TOY_SLEEP_MARK": str(marks)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    try:
        # Both workers inside a (600 s) unit, past their initializer: then the runner dies. Waits end
        # on these events; the bounds only stop a broken run from hanging the suite.
        deadline = time.monotonic() + 300
        while len(list(marks.iterdir())) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        kids = _children_of(proc.pid)
        assert len(list(marks.iterdir())) == 2 and len(kids) >= 3, kids  # 2 workers + the resource tracker
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.05)
        assert not [k for k in kids if _alive(k)]
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


# -- 5. a kill during final cleanup; stale temporaries ----------------------------------------


def test_leftover_work_and_temporaries_are_cleaned_by_an_up_to_date_run(toy_input, tmp_path, capsys):
    out = tmp_path / "out"
    _run(toy_input, out)
    ref = _tree(out)
    # What a kill during finish() leaves: .work/ with its marker and some units.
    (out / ".work" / "units" / "unit-00003").mkdir(parents=True)
    (out / ".work" / "units" / "unit-00003" / "done.json").write_text("{}")
    (out / ".work" / "run.json").write_text('{"config_hash": "x", "input_hash": null}')
    (out / "train" / ".shard-00009.txt.gz.tmp-4242-deadbeef").write_bytes(b"half")
    (out / "checkpoints" / ".step-000010.tmp-4242").mkdir(parents=True)
    capsys.readouterr()
    assert _run(toy_input, out) == 0
    assert "up to date" in capsys.readouterr().err
    assert not (out / ".work").exists()
    assert not _temporaries(out)
    assert _tree(out) == ref


# -- 6. a full disk ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_full_disk_is_one_line_and_leaves_no_temporaries(toy_input, tmp_path, monkeypatch, code):
    out = tmp_path / "out"
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] > 3:  # let a few files land first
            raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(MlmctlError, match=r"toy: cannot write .*out.*: the (disk|file system)") as e:
        _run(toy_input, out)
    assert "\n" not in str(e.value)
    assert not _temporaries(out)
    assert not (out / "manifest.json").exists()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert _run(toy_input, out) == 0  # and a rerun resumes


def test_full_disk_through_the_cli_is_one_line(tmp_path, monkeypatch, run_cli):
    raw = tmp_path / "a.txt"
    raw.write_text("A sentence long enough to be kept by the filters of clean.\n\n" * 50)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, _out, err = run_cli("clean", "--input", raw, "--output", tmp_path / "clean")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("mlmctl: error: clean: cannot write ")
    assert "disk is full" in err and "Traceback" not in err
    assert not _temporaries(tmp_path / "clean")


def test_checkpoint_write_on_a_full_disk(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from mlmctl import checkpoint as ck
    from mlmctl.model import BertForPreTraining, ModelConfig

    model = BertForPreTraining(ModelConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=16, max_position_embeddings=16))
    (tmp_path / "checkpoints" / ".step-000001.tmp-99999").mkdir(parents=True)  # from a killed save

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(MlmctlError, match="checkpoint at step 2: cannot write .*disk"):
        ck.save_checkpoint(tmp_path, 2, model, {"step": 2}, {}, tokenizer_dir=None,
                           architectures="BertForMaskedLM", keep_last=2)
    assert not _temporaries(tmp_path)
    assert ck.list_checkpoints(tmp_path) == []


# -- 7. make semantics: --rebuild -------------------------------------------------------------


def test_rebuild_does_nothing_when_unchanged_and_touches_for_make(toy_input, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(f"input: {toy_input}\noutput: {out}\nsuffix: '!'\n")
    assert run_stage(toy_stage, cfg, opts=RunOptions(rebuild=True)) == 0
    manifest = out / "manifest.json"
    before = manifest.read_bytes()
    old = manifest.stat().st_mtime - 100
    os.utime(manifest, (old, old))
    cfg.write_text(f"# a comment\nsuffix: '!'\noutput: {out}\ninput: {toy_input}\n")  # no-op edit
    capsys.readouterr()
    assert run_stage(toy_stage, cfg, opts=RunOptions(rebuild=True)) == 0
    assert "up to date" in capsys.readouterr().err
    assert manifest.read_bytes() == before
    assert manifest.stat().st_mtime >= cfg.stat().st_mtime  # make converges


def test_rebuild_keeps_the_old_output_until_the_new_one_is_complete(toy_input, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    _run(toy_input, out)
    old = _tree(out)
    monkeypatch.setenv("TOY_CRASH_AT", "f3.txt")
    with pytest.raises(RuntimeError):
        _run(toy_input, out, ["suffix=+"], rebuild=True)
    assert _tree(out) == old  # a kill mid-rebuild: the finished old output, untouched
    read_manifest(out, "toy")
    monkeypatch.delenv("TOY_CRASH_AT")
    capsys.readouterr()
    assert _run(toy_input, out, ["suffix=+"], rebuild=True) == 0
    assert "reusing 3 completed" in capsys.readouterr().err
    ref = tmp_path / "ref"
    _run(toy_input, ref, ["suffix=+"])
    assert (out / "manifest.json").read_bytes() == (ref / "manifest.json").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw", "ref"]  # no sibling left


def test_rebuild_swap_cut_short_is_finished_next_time(toy_input, tmp_path):
    out = tmp_path / "out"
    _run(toy_input, out)
    # A kill right after the replacement finished, before the exchange.
    _run(toy_input, tmp_path / ".out.rebuild", ["suffix=+"])
    assert _run(toy_input, out, ["suffix=+"], rebuild=True) == 0
    assert read_manifest(out, "toy").config["suffix"] == "+"
    assert not (tmp_path / ".out.rebuild").exists()
    # A kill after the exchange, before the old output was dropped.
    _run(toy_input, tmp_path / ".out.rebuild", ["suffix='!'"])
    assert _run(toy_input, out, ["suffix=+"], rebuild=True) == 0
    assert not (tmp_path / ".out.rebuild").exists()


def test_rebuild_of_an_expensive_stage_moves_the_old_run_aside(toy_input, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(stage_mod, "KEEP_REPLACED", {"toy"})
    out = tmp_path / "out"
    _run(toy_input, out)
    old = _tree(out)
    capsys.readouterr()
    assert _run(toy_input, out, ["suffix=+"], rebuild=True) == 0
    assert "moved to" in capsys.readouterr().err
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.replaced-")]
    assert len(kept) == 1 and _tree(kept[0]) == old


def test_force_and_rebuild_exclude_each_other(toy_input, tmp_path):
    with pytest.raises(MlmctlError, match="exclude each other"):
        _run(toy_input, tmp_path / "out", force=True, rebuild=True)


def test_task_runs_share_the_lock_and_exclude_a_full_run(toy_input, tmp_path):
    out = tmp_path / "out"
    with DirLock(out, "toy", shared=True):  # another --task run in flight
        assert _run(toy_input, out, task=(0, 2)) == 0
        with pytest.raises(MlmctlError, match="another mlmctl run"):
            _run(toy_input, out)
    assert _run(toy_input, out, task=(1, 2)) == 0
    assert _run(toy_input, out) == 0
    read_manifest(out, "toy")


def _units(out: Path) -> list[str]:
    return sorted(p.parent.name for p in out.glob(".work/*/unit-*/done.json"))


def test_task_runs_with_force_keep_their_siblings_work(toy_input, tmp_path):
    """A Slurm array whose every task says --force (or --rebuild) redoes an old output once, never
    the work another task of the same config has done."""
    out = tmp_path / "out"
    assert _run(toy_input, out, ["suffix=+"]) == 0  # a finished output of another config
    assert _run(toy_input, out, task=(0, 2), force=True) == 0
    assert _units(out) == ["unit-00000", "unit-00002", "unit-00004"]
    for flag in ("force", "rebuild"):
        assert _run(toy_input, out, task=(1, 2), **{flag: True}) == 0
        assert _units(out) == [f"unit-0000{i}" for i in range(5)]
    assert _run(toy_input, out) == 0
    fresh = tmp_path / "fresh"
    assert _run(toy_input, fresh) == 0
    assert (out / "manifest.json").read_bytes() == (fresh / "manifest.json").read_bytes()


def test_a_task_run_of_another_config_never_discards_a_live_siblings_work(toy_input, tmp_path):
    out = tmp_path / "out"
    assert _run(toy_input, out, task=(0, 2)) == 0
    with DirLock(out, "toy", shared=True):  # task 0 still in flight, say
        for flags in ({}, {"rebuild": True}, {"force": True}):
            with pytest.raises(MlmctlError, match=r"another --task run of a different config or input is writing"):
                _run(toy_input, out, ["suffix=+"], task=(1, 2), **flags)
    assert _units(out) == ["unit-00000", "unit-00002", "unit-00004"]
    # Nobody else in it: an unfinished run of another config is refused, or discarded when asked.
    with pytest.raises(MlmctlError, match="holds an unfinished run of a different config"):
        _run(toy_input, out, ["suffix=+"], task=(1, 2))
    assert _run(toy_input, out, ["suffix=+"], task=(1, 2), rebuild=True) == 0
    assert _units(out) == ["unit-00001", "unit-00003"]


def test_units_of_another_config_in_the_work_dir_are_rerun_not_assembled(toy_input, tmp_path):
    """What tasks on two nodes of a network filesystem could leave (the directory flock orders one
    machine only): units of config A beside a run marked for config B. The final run reruns them."""
    import shutil

    a, out = tmp_path / "a", tmp_path / "out"
    assert _run(toy_input, a, task=(0, 2)) == 0
    assert _run(toy_input, out, ["suffix=+"], task=(1, 2)) == 0
    for unit in (a / ".work").glob("*/unit-*"):
        shutil.copytree(unit, out / ".work" / unit.parent.name / unit.name)
    assert _units(out) == [f"unit-0000{i}" for i in range(5)]
    assert _run(toy_input, out, ["suffix=+"]) == 0
    fresh = tmp_path / "fresh"
    assert _run(toy_input, fresh, ["suffix=+"]) == 0
    assert _tree(out) == _tree(fresh)


def test_task_runs_of_two_configs_started_together_one_is_refused(toy_input, tmp_path):
    """Real processes, started at once: they mark the directory one at a time, so whatever the
    order exactly one runs and the other is refused (before, both could find it fresh)."""
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(TESTS)!r})
        import toy_stage
        from mlmctl.errors import MlmctlError
        from mlmctl.stage import RunOptions, run_stage
        task, suffix = int(sys.argv[1]), sys.argv[2]
        try:
            run_stage(toy_stage, None, ["input={toy_input}", "output={out}", "suffix=" + suffix],
                      opts=RunOptions(task=(task, 2), rebuild=True))
        except MlmctlError as e:
            sys.exit(f"mlmctl: error: {{e}}")
    """)
    for attempt in range(3):
        # Whoever wins waits, once past the output checks, until the test has seen the other one
        # refused: the two runs overlap however the machine schedules them. (Before, the second could
        # start after the first had ended - on a loaded machine, or at once when the first only had
        # units of an earlier attempt to reuse - and both ran.)
        marks, release = tmp_path / f"running-{attempt}", tmp_path / f"release-{attempt}"
        marks.mkdir()
        env = {**os.environ, "TOY_HOLD_MARK": str(marks), "TOY_RELEASE": str(release)}
        procs = [subprocess.Popen([sys.executable, "-c", code, str(i), s], stderr=subprocess.PIPE, text=True,
                                  env=env) for i, s in ((0, "x"), (1, "y"))]
        try:
            deadline = time.monotonic() + 300  # only a bound on a broken run: each wait ends on an event
            while all(p.poll() is None for p in procs) and len(list(marks.iterdir())) < 2 and \
                    time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(list(marks.iterdir())) < 2, "both configs run in the directory at once"
            release.touch()
            errs = [p.communicate(timeout=300)[1] for p in procs]
            results = [(p.returncode, err) for p, err in zip(procs, errs)]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert sorted(rc for rc, _ in results) == [0, 1], results
        refused = next(err for rc, err in results if rc == 1)
        assert re.search(r"another --task run of a different config|holds an unfinished run of a different", refused)
        _run(toy_input, out, force=True)


def test_a_rebuild_summary_names_the_final_output_not_its_hidden_sibling(toy_input, tmp_path, capsys):
    out = tmp_path / "out"
    _run(toy_input, out)
    capsys.readouterr()
    assert _run(toy_input, out, ["suffix=+"], rebuild=True) == 0
    printed = capsys.readouterr().out
    assert f"{out}/train/shard-00000.txt.gz" in printed and ".rebuild" not in printed, printed


def test_a_key_added_by_a_later_mlmctl_does_not_unfinish_a_stage(toy_input, tmp_path, capsys):
    """An output written before `suffix` existed (its manifest lacks the key) stays up to date while
    the config leaves `suffix` at its default, and needs --rebuild, naming it, once it does not."""
    import json

    out = tmp_path / "out"
    assert _run(toy_input, out) == 0
    manifest = out / "manifest.json"
    doc = json.loads(manifest.read_text())
    del doc["config"]["suffix"]
    doc["config_hash"] = "0" * 64  # what an older mlmctl hashed: not this version's hash
    manifest.write_text(json.dumps(doc))
    capsys.readouterr()
    assert _run(toy_input, out) == 0
    assert "up to date" in capsys.readouterr().err
    with pytest.raises(MlmctlError, match=r"changed: suffix"):
        _run(toy_input, out, ["suffix=+"])
    doc["config"]["max_shard_bytes"] = 1  # a key the old run did record, with another value
    manifest.write_text(json.dumps(doc))
    with pytest.raises(MlmctlError, match=r"changed: max_shard_bytes"):
        _run(toy_input, out)
