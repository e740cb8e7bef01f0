"""The stage contract, implemented once: config, input check, rerun rules, work units, manifest.

A stage module (`mlmctl/stages/<name>.py`) defines

    CONFIG = TokenizeConfig         # dataclass with `input` and `output` fields
    STAGE = "tokenize"
    INPUT_STAGE = "clean"           # upstream stage(s) whose manifest `input` must hold, or None
    def input_fingerprint(cfg) -> str | dict   # only when INPUT_STAGE is None: identity of the input
                                               # (a dict: manifest.fingerprint_parts, kept in the manifest)
    INPUT_FILES = ("segment.user_dict",)  # optional: config attributes naming files the stage reads
    def run(ctx: StageContext) -> dict | None   # summary rows; None after a `--task` run

and `run_stage` does the rest:

- the output directory is locked (`outdir.DirLock`: one run at a time) and checked before any
  work: a finished one with the same config hash and input hash is "up to date" (exit 0, nothing
  done); a finished one built differently needs `--rebuild` (built beside it in `.NAME.rebuild/`,
  swapped in when complete) or `--force` (cleared first); an unfinished one of the same config and
  input is resumed; only files mlmctl can prove it wrote are ever deleted (`outdir.survey`);
- `ctx.run_units` runs work units over `--workers` processes and `--task I/N` fan-out; a unit's
  files land in `.work/<phase>/unit-NNNNN/` and count only once its `done.json` (written last,
  with every file's sha256) exists and still verifies, which is what lets a killed run resume;
- `ctx.finish` links the final files into place and writes `manifest.json` last, then removes
  `.work/`.

The input hash is the input stage's manifest hash (or `input_fingerprint(cfg)`) with the content of
every file or directory named by an INPUT_FILES key folded in (`mlmctl.input_files`): the config
hash sees only such a key's path string, so without this a tokenizer rewritten in place would leave
the output "up to date" with stale ids. Each is hashed before any work (a missing one is one line),
recorded in the manifest's `input_files`, and named when it changed ("a different input (`from`
tok.json changed since the last run)"); rewriting the same bytes changes nothing. With none set the
hash is the input's alone, as before.

Every InputError a stage raises reads "STAGE: ...": readers of data files (mlmctl.labelled, ...)
name the file and line, and `run_stage` adds the stage when they did not.

Under torchrun only rank 0 touches the output directory (env `RANK`).

`MLMCTL_TEST_KILL=STAGE[/PHASE]:N` (tests only) SIGKILLs the stage's process group once N of its work
units (of that phase) are done in this run: a kill mid-run at a known point, where polling for a `done.json` from
outside races a fast machine (a stage of two units can finish between two polls).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from types import ModuleType
from typing import Any

from mlmctl import __version__, safe_json
from mlmctl.config import config_hash, config_to_dict, diff_keys, format_config, load_config, same_config
from mlmctl.errors import InputError, MlmctlError
from mlmctl.input_files import combine, describe_change, input_paths, read_input_files
from mlmctl.layout import DONE_FILE, MANIFEST, unit_dir_name
from mlmctl.manifest import Manifest, manifest_hash, parts_digest, read_manifest, verify_files, write_manifest
from mlmctl.outdir import (
    LOCK_FILE, RUN_FILE, WORK, DirLock, delete_ours, exchange, finish_cleanup, is_empty, old_dir, read_marker,
    rebuild_dir, recover_rebuild, remove_temporaries, serialised, survey,
)
from mlmctl.progress import log, print_summary, progress
from mlmctl.shards import DiskFullError, ShardInfo, atomic_link, atomic_write_json, disk_error, file_sha256, fsync_dir, inside



@dataclass
class RunOptions:
    """Command-line switches shared by every stage (not part of the config hash)."""

    workers: int = 1
    task: tuple[int, int] | None = None
    force: bool = False
    resume: bool = False
    resume_from: str | None = None
    rebuild: bool = False
    """Replace an output built from another config or input, once the new one is complete."""


def parse_task(text: str | None) -> tuple[int, int] | None:
    """`--task I/N` -> (I, N), 0 <= I < N; e.g. a Slurm array's `$SLURM_ARRAY_TASK_ID/$N`."""
    if text is None:
        return None
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise MlmctlError(f"--task {text!r}: expected I/N, e.g. --task 0/4 (I counts from 0)") from None
    if n < 1 or not 0 <= i < n:
        raise MlmctlError(f"--task {text}: need 0 <= I < N (I counts from 0)")
    return i, n


@dataclass
class UnitResult:
    index: int
    dir: Path
    result: Any
    files: list[dict] = field(default_factory=list)


@dataclass
class StageContext:
    stage: str
    cfg: Any
    input_dir: Path | None
    output_dir: Path
    input_manifest: Manifest | None
    input_hash: str | None
    config_hash: str
    opts: RunOptions
    rank: int = 0
    world_size: int = 1
    started: float = field(default_factory=time.monotonic)
    input_files: dict[str, dict] = field(default_factory=dict)
    """The config-named files read (mlmctl.input_files), recorded in the manifest."""
    input_parts: dict[str, dict] = field(default_factory=dict)
    """What a stage without an input stage read, file by file (manifest.fingerprint_parts)."""

    @property
    def work_dir(self) -> Path:
        return self.output_dir / WORK

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def log(self, message: str) -> None:
        if self.is_main:
            log(self.stage, message)

    # ------------------------------------------------------------------------------------------
    def run_units(
        self,
        fn: Callable[[Any, Path], Any],
        units: Sequence[Any],
        *,
        phase: str = "units",
        desc: str | None = None,
        unit_name: str = "units",
    ) -> list[UnitResult] | None:
        """Run `fn(unit, part_dir)` for every unit not already done; results in unit order.

        `fn` must be a module-level (picklable) function that writes its files into `part_dir`
        and returns something JSON-serialisable. In a `--task I/N` run only units I, I+N, ... are
        run and None is returned: the stage should then return None too.
        """
        phase_dir = self.work_dir / phase
        phase_dir.mkdir(parents=True, exist_ok=True)
        keys = [_unit_key(u) for u in units]
        mine = range(len(units))
        if self.opts.task is not None:
            i, n = self.opts.task
            mine = range(i, len(units), n)
        todo, records = _pending_units(phase_dir, keys, mine)
        if records:
            self.log(f"{phase}: reusing {len(records)} completed {unit_name} from an earlier run")
        jobs = [(units[j], phase_dir / unit_dir_name(j), keys[j]) for j in todo]
        with progress(len(todo), f"{self.stage}", unit_name, enabled=self.is_main) as bar:
            bar = _KillPoint(self.stage, phase, bar)
            if min(self.opts.workers, len(todo)) <= 1:
                for unit, part, key in jobs:
                    _run_unit(fn, unit, part, key)
                    bar.update(1)
            else:
                self._run_pool(fn, jobs, min(self.opts.workers, len(todo)), bar)
        if self.opts.task is not None:
            i, n = self.opts.task
            self.log(
                f"task {i}/{n}: {len(mine)} of {len(units)} {unit_name} done; "
                f"run again without --task to assemble the output"
            )
            return None
        results = []
        for j in range(len(units)):
            part = phase_dir / unit_dir_name(j)
            # Units verified before the run keep that verification; the ones just run are read back.
            record = records.get(j) or _unit_done(part, keys[j])
            if record is None:
                raise MlmctlError(
                    f"{self.stage}: unit {j} of phase '{phase}' is missing; "
                    f"did every `--task I/N` run finish? rerun to complete it"
                )
            results.append(UnitResult(j, part, record["result"], record["files"]))
        return results

    def _run_pool(self, fn: Callable, jobs: list[tuple[Any, Path, str]], workers: int, bar) -> None:
        """Run `_run_unit(fn, *job)` for every job over `workers` spawned processes that die with us."""
        import multiprocessing
        from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        # spawn, not fork: a forked child inherits the parent's tokenizers/torch threads.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            pending = {pool.submit(_run_unit, fn, *job) for job in jobs}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in finished:
                    try:
                        fut.result()  # re-raises a worker's error here
                    except BrokenProcessPool:
                        raise MlmctlError(
                            f"{self.stage}: a worker process died (out of memory?); rerun to "
                            f"resume, with fewer --workers if memory is short"
                        ) from None
                    bar.update(1)

    # ------------------------------------------------------------------------------------------
    def place(self, src: str | Path, name: str, split: str | None = None, records: dict | None = None,
              sha256: str | None = None) -> ShardInfo:
        """Put a finished file at `OUTPUT/name` (hard link from the work dir) and describe it."""
        dst = self.output_dir / name
        atomic_link(src, dst)
        size = dst.stat().st_size
        return ShardInfo(name, split, size, sha256 or file_sha256(dst), dict(records or {}))

    def describe(self, name: str, split: str | None = None, records: dict | None = None) -> ShardInfo:
        """ShardInfo of a file the stage already wrote (atomically) into the output directory."""
        return ShardInfo.of_file(self.output_dir, name, split, records)

    def finish(self, shards: list[ShardInfo], files: list[ShardInfo] = (), extra: dict | None = None) -> Manifest:
        """Write manifest.json (last), then drop the work directory."""
        manifest = Manifest(
            stage=self.stage,
            # `output` is left out: it is wherever the manifest lies, and keeping it out makes
            # the same work written to two places byte-identical.
            config={k: v for k, v in config_to_dict(self.cfg).items() if k != "output"},
            config_hash=self.config_hash,
            input_hash=self.input_hash,
            shards=list(shards),
            files=list(files),
            extra=dict(extra or {}),
            input_files=dict(self.input_files),
            input_parts=dict(self.input_parts),
        )
        if self.is_main:
            write_manifest(self.output_dir, manifest)
            finish_cleanup(self.output_dir)
        return manifest


class _KillPoint:
    """The progress bar, passed through; under `MLMCTL_TEST_KILL=STAGE[/PHASE]:N` it kills the process
    group (the stage, its workers and whatever started them in that group) once N units are done."""

    _done: dict[str, int] = {}  # per target, over the phases it names, in this process

    def __init__(self, stage: str, phase: str, bar) -> None:
        self.bar = bar
        self.target, _, count = os.environ.get("MLMCTL_TEST_KILL", "").partition(":")
        hit = self.target in (stage, f"{stage}/{phase}") and count.isdigit()
        self.after = int(count) if hit else None

    def update(self, n: int) -> None:
        self.bar.update(n)
        if self.after is None:
            return
        done = self._done[self.target] = self._done.get(self.target, 0) + n
        if done >= self.after:
            os.killpg(os.getpgrp(), signal.SIGKILL)


def _pending_units(phase_dir: Path, keys: list[str], mine: range) -> tuple[list[int], dict[int, dict]]:
    """(units still to run, {unit: done record} of the ones an earlier run completed and that still
    verify); a unit folder that does not verify is removed, so its unit runs from scratch."""
    todo, records = [], {}
    for j in mine:
        part = phase_dir / unit_dir_name(j)
        record = _unit_done(part, keys[j])
        if record is not None:
            records[j] = record
        else:
            if part.exists():
                shutil.rmtree(part)
            todo.append(j)
    return todo, records


def _unit_key(unit: Any) -> str:
    return hashlib.sha256(repr(unit).encode()).hexdigest()[:16]


def _unit_done(part: Path, key: str) -> dict | None:
    """The unit's done record if it exists, is for this unit, and its files still verify."""
    done = part / DONE_FILE
    if not done.exists():
        return None
    try:
        record = safe_json.loads(done.read_text())
        if record.get("key") != key:
            return None
        for f in record["files"]:
            path = inside(part, f["name"], where=str(done))
            if path.stat().st_size != f["bytes"] or file_sha256(path) != f["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError, MlmctlError):
        return None
    return record


def _die_with_parent(parent: int) -> None:
    """Worker initializer: a SIGKILLed runner must not leave its workers (and, through them, the
    multiprocessing resource tracker, which exits when its last client does) running on."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            armed = ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL)) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the signal was armed
    if not armed:  # elsewhere: watch the parent's pid
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="mlmctl-parent-watch").start()


def _run_unit(fn: Callable, unit: Any, part: Path, key: str) -> None:
    part.mkdir(parents=True, exist_ok=True)
    result = fn(unit, part)
    files = []
    for path in sorted(p for p in part.rglob("*") if p.is_file() and p.name != DONE_FILE):
        if path.name.startswith("."):
            continue  # a temporary left by an interrupted write
        files.append(
            {"name": path.relative_to(part).as_posix(), "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        )
    atomic_write_json(part / DONE_FILE, {"key": key, "result": result, "files": files})


# ----------------------------------------------------------------------------------------------
# The runner

# What a stage may write outside `.work/` besides the files its manifest names (fnmatch globs,
# `*` crosses folders): with the directory's proof of ownership these are "ours", and --force or
# --rebuild may delete them (outdir.survey). A stage module may set `WRITES` to replace its entry.
_SHARDS = ("train/shard-*", "validation/shard-*")
STAGE_WRITES = {
    "clean": (*_SHARDS, "stats.json"),
    "tokenize": (*_SHARDS, "pretokenizer.json"),
    "build-vocab": (*_SHARDS, "train/*_offsets.bin", "validation/*_offsets.bin", "tokenizer.json", "vocab.txt",
                    "tokenizer_config.json", "special_tokens_map.json", "stats.json"),
    "pretrain": ("checkpoints/*", "final/*", "metrics.jsonl", "tensorboard/*"),
    "finetune": ("checkpoints/*", "best/*", "metrics.jsonl", "tensorboard/*"),
    "eval": ("eval.json", "predictions.jsonl"),
    "demo-task": ("train.tsv", "dev.tsv", "test.tsv"),
}
# Stages whose replaced output is moved aside (`RUN.replaced-<UTC time>/`), never deleted: it cost
# hours of compute, and a Makefile's --rebuild must not silently throw it away.
KEEP_REPLACED = {"pretrain"}


def run_stage(
    module: ModuleType,
    config_path: str | Path | None,
    sets: list[str] | None = None,
    *,
    inputs: list[str] | None = None,
    output: str | None = None,
    opts: RunOptions | None = None,
    print_config: bool = False,
) -> int:
    try:
        return _run_stage(module, config_path, sets, inputs=inputs, output=output, opts=opts,
                          print_config=print_config)
    except InputError as e:
        # Readers of data files (labelled.py, tagging.py, ...) name the file and line, not the stage
        # that read it: prefix here, once for every stage, so each such line reads "STAGE: ...".
        if not str(e).startswith(f"{module.STAGE}:"):
            e.args = (f"{module.STAGE}: {e}",)
        raise


def _run_stage(
    module: ModuleType,
    config_path: str | Path | None,
    sets: list[str] | None,
    *,
    inputs: list[str] | None,
    output: str | None,
    opts: RunOptions | None,
    print_config: bool,
) -> int:
    opts = opts or RunOptions()
    stage = module.STAGE
    sets = list(sets or [])
    if inputs:
        sets.append(_input_set(module.CONFIG, inputs, stage))
    if output:
        sets.append(f"output={json.dumps(str(output))}")
    cfg = load_config(module.CONFIG, config_path, sets)
    if print_config:
        print(format_config(cfg), end="")
        return 0
    if opts.workers < 1:
        raise MlmctlError(f"{stage}: --workers must be at least 1, got {opts.workers}")
    if opts.force and opts.rebuild:
        raise MlmctlError(f"{stage}: --force and --rebuild exclude each other; --rebuild keeps the old output "
                          f"until the new one is finished, --force deletes it first")

    input_dir, input_manifest = None, None
    if module.INPUT_STAGE:
        input_dir = Path(cfg.input)
        input_manifest = read_manifest(input_dir, module.INPUT_STAGE, reader=stage)
        input_hash = manifest_hash(input_dir)
    else:
        input_hash = module.input_fingerprint(cfg)
    parts = {}
    if isinstance(input_hash, dict):  # what was read, file by file: a rerun can name the changed one
        parts, input_hash = input_hash, parts_digest(input_hash)
    files = read_input_files(module, cfg)
    job = _Job(module, stage, cfg, Path(cfg.output), config_hash(cfg), combine(input_hash, files), opts,
               getattr(module, "WRITES", STAGE_WRITES.get(stage, _SHARDS)), input_files=files, base_hash=input_hash,
               input_parts=parts)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if rank != 0:
        # Rank 0 alone inspects, locks and prepares the output; the others only need to know
        # whether there is nothing to do, and where rank 0 builds.
        target = job.follower_target()
        return 0 if target is None else job.execute(target, input_dir, input_manifest, rank, world)
    try:
        recover_rebuild(job.out)
        with contextlib.ExitStack() as held:
            fanout = opts.task is not None  # other tasks may be writing next to us: share, keep theirs
            lock = held.enter_context(DirLock(job.out, stage, shared=fanout))
            if not fanout:
                remove_temporaries(job.out)
            # --task runs that start together decide what the directory holds, and mark it, one at
            # a time: else two of different configs could both find it fresh and both write.
            with serialised(job.out) if fanout else contextlib.nullcontext():
                state = _output_state(job, job.out, lock)
                job.tidy_siblings(state)
                if state == "up-to-date":
                    finish_cleanup(job.out)  # a kill during the last cleanup may have left .work/
                    _touch_if_older(job.out, config_path, cfg, input_paths(files))
                    log(stage, f"{job.out} is up to date (same config and input); nothing to do")
                    return 0
                target = job.out
                if state == "replace":
                    target = rebuild_dir(job.out)
                    lock = held.enter_context(DirLock(target, stage, shared=fanout))
                    if not fanout:
                        remove_temporaries(target)
                    state = _output_state(job, target, lock)
                    state = "rebuild" if state == "replace" else state  # a damaged replacement: start it over
                if state != "up-to-date":  # up to date here: a finished replacement whose swap was cut short
                    _prepare_output(job, target, state)
            if state != "up-to-date":
                if state == "resume":
                    log(stage, f"resuming the unfinished run in {target}")
                    job.opts = dc_replace(job.opts, resume=True) if opts.rebuild else job.opts
                job.execute(target, input_dir, input_manifest, rank, world)
            if target != job.out and (target / MANIFEST).exists():
                job.swap_in(target)
    except DiskFullError as e:
        if str(e).startswith(f"{stage}:"):
            raise
        raise DiskFullError(f"{stage}: {e}") from None
    return 0


@dataclass
class _Job:
    """One stage run's fixed facts, and the steps that need several of them."""

    module: ModuleType
    stage: str
    cfg: Any
    out: Path
    config_hash: str
    input_hash: str | None
    opts: RunOptions
    writes: tuple[str, ...]
    input_files: dict[str, dict] = field(default_factory=dict)
    base_hash: str | None = None
    """The input hash before the config-named files were folded in."""
    input_parts: dict[str, dict] = field(default_factory=dict)

    def matches(self, m: Manifest | dict | None) -> bool:
        if isinstance(m, Manifest):
            same = m.config_hash == self.config_hash or same_config(m.config, self.cfg)
            return same and m.input_hash == self.input_hash
        return bool(m) and m.get("config_hash") == self.config_hash and m.get("input_hash") == self.input_hash

    def finished(self, directory: Path) -> Manifest | None:
        try:
            return read_manifest(directory, self.stage, reader=self.stage, verify=False)
        except MlmctlError:
            return None

    def follower_target(self) -> Path | None:
        old = None if self.opts.force else self.finished(self.out)
        if old is not None and self.matches(old):
            return None
        return rebuild_dir(self.out) if old is not None and self.opts.rebuild else self.out

    def execute(self, target: Path, input_dir, input_manifest, rank: int, world: int) -> int:
        ctx = StageContext(
            stage=self.stage, cfg=self.cfg, input_dir=input_dir, output_dir=target, input_manifest=input_manifest,
            input_hash=self.input_hash, config_hash=self.config_hash, opts=self.opts, rank=rank, world_size=world,
            input_files=self.input_files, input_parts=self.input_parts,
        )
        try:
            summary = self.module.run(ctx)
        except Exception as e:
            if rank == 0 and self.opts.task is None:  # an exclusive lock: every temporary is a dead one
                remove_temporaries(target)
            if not isinstance(e, MlmctlError) and (err := disk_error(e, target)) is not None:
                raise DiskFullError(f"{self.stage}: {err}") from None
            raise
        if summary is not None and rank == 0:
            # A --rebuild runs in a hidden sibling swapped in afterwards: name where things will be.
            rows = {k: str(v).replace(str(target), str(self.out)) if target != self.out else v
                    for k, v in summary.items()}
            rows.setdefault("time", f"{time.monotonic() - ctx.started:.1f} s")
            rows.setdefault("output", str(self.out))
            print_summary(f"mlmctl {self.stage}", rows)
        return 0

    def swap_in(self, target: Path) -> None:
        """Exchange the finished replacement with the old output, then drop (or keep) the old."""
        exchange(self.out, target)
        fsync_dir(self.out.parent)
        self.dispose(target)

    def tidy_siblings(self, state: str) -> None:
        """Old outputs left beside `out` by a swap cut short: drop (or keep) them."""
        for sibling in (rebuild_dir(self.out), old_dir(self.out)):
            old = self.finished(sibling) if sibling.is_dir() else None
            if old is not None and (not self.matches(old) or state == "up-to-date"):
                self.dispose(sibling)

    def dispose(self, old: Path) -> None:
        if self.stage in KEEP_REPLACED:
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            kept = self.out.with_name(f"{self.out.name}.replaced-{stamp}")
            os.rename(old, kept)
            (kept / LOCK_FILE).unlink(missing_ok=True)  # ours, held by this run: not part of the run
            log(self.stage, f"the previous run, built from another config or input, was moved to {kept}")
            return
        found = survey(old, self.stage, self.writes)
        delete_ours(old, found)
        if found.foreign:
            log(self.stage, f"left {old} in place: it holds files mlmctl did not write ({', '.join(found.foreign[:3])})")
        else:
            (old / LOCK_FILE).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                old.rmdir()


def _input_set(cls: type, inputs: list[str], stage: str) -> str:
    import typing

    tp = typing.get_type_hints(cls).get("input")
    if tp is None:
        raise MlmctlError(f"{stage}: this stage takes no --input")
    if typing.get_origin(tp) is list:
        return f"input={json.dumps(list(inputs))}"
    if len(inputs) != 1:
        raise MlmctlError(f"{stage}: --input takes one directory here, got {len(inputs)}")
    return f"input={json.dumps(inputs[0])}"


def _output_state(job: _Job, out: Path, lock: DirLock) -> str:
    """'fresh', 'resume', 'rebuild' (clear ours, then run), 'replace' (build beside, then swap) or
    'up-to-date'; raises when the directory must not be touched."""
    stage, opts = job.stage, job.opts
    if is_empty(out):
        return "fresh"
    if (out / MANIFEST).exists():
        return _finished_state(job, out)
    marker = read_marker(out)
    if marker is None:
        survey(out, stage, job.writes).refuse(stage, out)  # names what is there
        return "fresh"  # only temporaries of ours were there: nothing to keep
    if job.matches(marker):
        # Under --task the same config's work is the sibling tasks': --force never discards it.
        return "rebuild" if opts.force and opts.task is None else "resume"
    if opts.task is not None and not lock.alone():
        raise MlmctlError(
            f"{stage}: another --task run of a different config or input is writing to {out}; give every "
            f"task the same config and input (or let it end, then rerun with --rebuild)"
        )
    if opts.force or opts.rebuild or not _holds_work(out):
        return "rebuild"  # (without work: an earlier run stopped, a config error say, before writing)
    raise MlmctlError(
        f"{stage}: {out} holds an unfinished run of a different config or input; "
        f"rerun with --rebuild (or --force) to discard it"
    )


def _finished_state(job: _Job, out: Path) -> str:
    stage, opts = job.stage, job.opts
    try:
        old = read_manifest(out, reader=stage, verify=False)
    except MlmctlError:
        old = None
    if old is not None and old.stage != stage:
        raise MlmctlError(f"{stage}: output {out} holds the output of stage '{old.stage}'; choose another --output")
    if old is None:
        raise MlmctlError(
            f"{stage}: {out / MANIFEST} is not an mlmctl manifest (or is damaged), so mlmctl will not touch "
            f"{out}, even with --force: choose another --output, or remove it yourself"
        )
    if opts.force:
        return "rebuild"
    if job.matches(old):
        try:
            verify_files(out, old, reader=stage, full=False)
        except MlmctlError as e:
            if opts.rebuild:
                return "replace"
            raise MlmctlError(f"{e} (output of an earlier run)") from None
        return "up-to-date"
    if opts.rebuild:
        survey(out, stage, job.writes).refuse(stage, out)  # the old output must be ours to replace
        return "replace"
    why = []
    if old.config_hash != job.config_hash:
        changed = diff_keys(old.config, config_to_dict(job.cfg))
        why.append("a different config" + (f" (changed: {', '.join(changed[:6])})" if changed else ""))
    if old.input_hash != job.input_hash:
        why.append(describe_change(old, job.base_hash, job.input_files, job.input_parts))
    raise MlmctlError(
        f"{stage}: {out} was built from {' and '.join(why)}; rerun with --rebuild to replace it "
        f"once the new output is complete (or --force to delete it first)"
    )


def _holds_work(out: Path) -> bool:
    """Whether an unfinished output directory holds any file besides the run marker and lock."""
    skip = {out / WORK / RUN_FILE, out / LOCK_FILE}
    return any(p.is_file() and p not in skip for p in out.rglob("*"))


def _prepare_output(job: _Job, out: Path, state: str) -> None:
    if state == "rebuild":
        found = survey(out, job.stage, job.writes)
        found.refuse(job.stage, out)  # before anything is written or deleted
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    # Mark the directory as ours (and say for which config) before anything is removed, so that a
    # run killed while clearing it is still recognised, and resumed or cleared, next time.
    atomic_write_json(work / RUN_FILE, {"stage": job.stage, "config_hash": job.config_hash,
                                        "input_hash": job.input_hash, "version": __version__})
    if state == "rebuild":
        found.ours = [p for p in found.ours if p != work / RUN_FILE]
        delete_ours(out, found)


def _touch_if_older(out: Path, config_path: str | Path | None, cfg: Any, named: Sequence[Path] = ()) -> None:
    """Bump manifest.json's mtime when a file it was made from is newer (a comment edited in the
    config, a config-named file rewritten with the same bytes, say), so that make, which compares
    mtimes, stops rerunning this up-to-date recipe."""
    manifest = out / MANIFEST
    sources = ([Path(config_path)] if config_path else []) + list(named)
    inp = getattr(cfg, "input", None)
    if isinstance(inp, str) and inp:
        # The input's manifest: a stage directory, or a model directory inside a run.
        sources += [Path(inp) / MANIFEST, Path(inp).parent / MANIFEST]
    try:
        mtime = manifest.stat().st_mtime
        if any(p.is_file() and p.stat().st_mtime > mtime for p in sources):
            os.utime(manifest)
    except OSError:
        pass  # a read-only output stays as it is; make will ask again, harmlessly
