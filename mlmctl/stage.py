"""The stage contract, implemented once: config, input check, rerun rules, work units, manifest.

A stage module (`mlmctl/stages/<name>.py`) defines

    CONFIG = TokenizeConfig         # dataclass with `input` and `output` fields
    STAGE = "tokenize"
    INPUT_STAGE = "clean"           # upstream stage(s) whose manifest `input` must hold, or None
    def input_fingerprint(cfg) -> str   # only when INPUT_STAGE is None: identity of the input
    def run(ctx: StageContext) -> dict | None   # summary rows; None after a `--task` run

and `run_stage` does the rest:

- the output directory is checked before any work: a finished one with the same config hash and
  input hash is "up to date" (exit 0, nothing done); a finished one built differently needs
  `--force`; an unfinished one of the same config and input is resumed; anything else that is not
  an mlmctl directory is refused rather than overwritten;
- `ctx.run_units` runs work units over `--workers` processes and `--task I/N` fan-out; a unit's
  files land in `.work/<phase>/unit-NNNNN/` and count only once its `done.json` (written last,
  with every file's sha256) exists and still verifies, which is what lets a killed run resume;
- `ctx.finish` links the final files into place and writes `manifest.json` last, then removes
  `.work/`.

Under torchrun only rank 0 touches the output directory (env `RANK`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from mlmctl import __version__
from mlmctl.config import config_hash, config_to_dict, diff_keys, format_config, load_config
from mlmctl.errors import MlmctlError
from mlmctl.manifest import MANIFEST, Manifest, manifest_hash, read_manifest, verify_files, write_manifest
from mlmctl.progress import log, print_summary, progress
from mlmctl.shards import ShardInfo, atomic_link, atomic_write_json, file_sha256

WORK = ".work"
RUN_FILE = "run.json"
DONE_FILE = "done.json"


@dataclass
class RunOptions:
    """Command-line switches shared by every stage (not part of the config hash)."""

    workers: int = 1
    task: tuple[int, int] | None = None
    force: bool = False
    debug: bool = False
    resume: bool = False
    resume_from: str | None = None
    quiet: bool = False


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

    @property
    def work_dir(self) -> Path:
        return self.output_dir / WORK

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def log(self, message: str) -> None:
        if self.is_main and not self.opts.quiet:
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
        todo, records = [], {}
        for j in mine:
            part = phase_dir / f"unit-{j:05d}"
            record = _unit_done(part, keys[j])
            if record is not None:
                records[j] = record
            else:
                if part.exists():
                    shutil.rmtree(part)
                todo.append(j)
        if records:
            self.log(f"{phase}: reusing {len(records)} completed {unit_name} from an earlier run")
        workers = max(1, min(self.opts.workers, len(todo)))
        with progress(len(todo), f"{self.stage}", unit_name, enabled=self.is_main and not self.opts.quiet) as bar:
            if workers == 1:
                for j in todo:
                    _run_unit(fn, units[j], phase_dir / f"unit-{j:05d}", keys[j])
                    bar.update(1)
            else:
                import multiprocessing
                from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
                from concurrent.futures.process import BrokenProcessPool

                # spawn, not fork: a forked child inherits the parent's tokenizers/torch threads.
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                    futures = {
                        pool.submit(_run_unit, fn, units[j], phase_dir / f"unit-{j:05d}", keys[j])
                        for j in todo
                    }
                    pending = futures
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
        if self.opts.task is not None:
            i, n = self.opts.task
            self.log(
                f"task {i}/{n}: {len(mine)} of {len(units)} {unit_name} done; "
                f"run again without --task to assemble the output"
            )
            return None
        results = []
        for j in range(len(units)):
            part = phase_dir / f"unit-{j:05d}"
            # Units verified before the run keep that verification; the ones just run are read back.
            record = records.get(j) or _unit_done(part, keys[j])
            if record is None:
                raise MlmctlError(
                    f"{self.stage}: unit {j} of phase '{phase}' is missing; "
                    f"did every `--task I/N` run finish? rerun to complete it"
                )
            results.append(UnitResult(j, part, record["result"], record["files"]))
        return results

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
        )
        if self.is_main:
            write_manifest(self.output_dir, manifest)
            shutil.rmtree(self.work_dir, ignore_errors=True)
        return manifest


def _unit_key(unit: Any) -> str:
    return hashlib.sha256(repr(unit).encode()).hexdigest()[:16]


def _unit_done(part: Path, key: str) -> dict | None:
    """The unit's done record if it exists, is for this unit, and its files still verify."""
    done = part / DONE_FILE
    if not done.exists():
        return None
    try:
        record = json.loads(done.read_text())
        if record.get("key") != key:
            return None
        for f in record["files"]:
            path = part / f["name"]
            if path.stat().st_size != f["bytes"] or file_sha256(path) != f["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


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

    input_dir, input_manifest = None, None
    if module.INPUT_STAGE:
        input_dir = Path(cfg.input)
        input_manifest = read_manifest(input_dir, module.INPUT_STAGE, reader=stage)
        input_hash = manifest_hash(input_dir)
    else:
        input_hash = module.input_fingerprint(cfg)
    chash = config_hash(cfg)
    out = Path(cfg.output)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))

    if rank == 0:
        state = _output_state(stage, out, cfg, chash, input_hash, opts)
    else:
        # Rank 0 alone inspects and prepares the output (it may be creating or clearing it right
        # now); the other ranks only need to know whether there is nothing to do.
        state = "follower"
        if not opts.force and (out / MANIFEST).exists():
            try:
                old = read_manifest(out, reader=stage, verify=False)
                if old.stage == stage and old.config_hash == chash and old.input_hash == input_hash:
                    state = "up-to-date"
            except MlmctlError:
                pass
    if state == "up-to-date":
        if rank == 0:
            log(stage, f"{out} is up to date (same config and input); nothing to do. Use --force to rebuild.")
        return 0
    if rank == 0:
        _prepare_output(out, state, chash, input_hash)
        if state == "resume":
            log(stage, f"resuming the unfinished run in {out}")
    ctx = StageContext(
        stage=stage, cfg=cfg, input_dir=input_dir, output_dir=out, input_manifest=input_manifest,
        input_hash=input_hash, config_hash=chash, opts=opts, rank=rank, world_size=world,
    )
    summary = module.run(ctx)
    if summary is not None and rank == 0 and not opts.quiet:
        elapsed = time.monotonic() - ctx.started
        rows = dict(summary)
        rows.setdefault("time", f"{elapsed:.1f} s")
        rows.setdefault("output", str(out))
        print_summary(f"mlmctl {stage}", rows)
    return 0


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


def _output_state(stage: str, out: Path, cfg: Any, chash: str, ihash: str | None, opts: RunOptions) -> str:
    """'fresh', 'resume', 'rebuild' or 'up-to-date'; raises when the directory must not be touched."""
    if out.exists() and not out.is_dir():
        raise MlmctlError(f"{stage}: output {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return "fresh"
    if (out / MANIFEST).exists():
        try:
            old = read_manifest(out, reader=stage, verify=False)
        except MlmctlError:
            old = None
        if old is not None and old.stage != stage:
            raise MlmctlError(
                f"{stage}: output {out} holds the output of stage '{old.stage}'; choose another --output"
            )
        if opts.force:
            return "rebuild"
        if old is None:
            raise MlmctlError(f"{stage}: {out / MANIFEST} is damaged; rerun with --force to rebuild {out}")
        if old.config_hash == chash and old.input_hash == ihash:
            try:
                verify_files(out, old, reader=stage, full=False)
            except MlmctlError as e:
                raise MlmctlError(f"{e} (output of an earlier run)") from None
            return "up-to-date"
        why = []
        if old.config_hash != chash:
            changed = diff_keys(old.config, config_to_dict(cfg))
            why.append("a different config" + (f" (changed: {', '.join(changed[:6])})" if changed else ""))
        if old.input_hash != ihash:
            why.append("a different input")
        raise MlmctlError(f"{stage}: {out} was built from {' and '.join(why)}; rerun with --force to rebuild it")
    run_file = out / WORK / RUN_FILE
    if run_file.exists() and not _holds_work(out):
        return "rebuild"  # an earlier run stopped (a config error, say) before writing anything
    if run_file.exists():
        try:
            run = json.loads(run_file.read_text())
        except ValueError:
            run = {}
        if run.get("config_hash") == chash and run.get("input_hash") == ihash:
            return "rebuild" if opts.force else "resume"
        if opts.force:
            return "rebuild"
        raise MlmctlError(
            f"{stage}: {out} holds an unfinished run of a different config or input; "
            f"rerun with --force to discard it"
        )
    raise MlmctlError(
        f"{stage}: output {out} is not empty and is not an mlmctl stage directory; "
        f"choose another --output or remove it"
    )


def _holds_work(out: Path) -> bool:
    """Whether an unfinished output directory holds any file besides the run marker."""
    marker = out / WORK / RUN_FILE
    return any(p.is_file() and p != marker for p in out.rglob("*"))


def _prepare_output(out: Path, state: str, chash: str, ihash: str | None) -> None:
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    # Mark the directory as ours (and say for which config) before anything is removed, so that a
    # run killed while clearing it is still recognised, and resumed or cleared, next time.
    atomic_write_json(work / RUN_FILE, {"config_hash": chash, "input_hash": ihash, "version": __version__})
    if state == "rebuild":
        (out / MANIFEST).unlink(missing_ok=True)
        for child in out.iterdir():
            if child.name == WORK:
                for sub in child.iterdir():
                    if sub.name != RUN_FILE:
                        shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
            elif child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

