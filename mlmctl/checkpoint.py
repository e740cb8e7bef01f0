"""Training checkpoints: save atomically, keep the last K, find the latest valid one, resume.

A checkpoint is `RUN/checkpoints/step-NNNNNN/`: a complete model directory (`save_model_dir`:
config.json, model.safetensors, tokenizer files, loadable by `transformers` as it stands) plus
- `trainer_state.pt`: optimizer state, step, tokens seen, the data position (epoch and step
  inside it), the RNG states of every rank; plain tensors and containers, read back with
  `torch.load(weights_only=True)` (no pickled code);
- `checkpoint.json` (written last): step, the model and data settings the run depends on, and
  each file's size, so that a resume can refuse a checkpoint of a different model or data.
The whole directory is built under a temporary name and renamed into place, so a killed save
leaves either the previous checkpoint set or the new one, never a half-written `step-*`.

pretrain and finetune share the rest of the machinery here: `StopSignals` turns SIGINT/SIGTERM
into "checkpoint at the next step boundary, then exit 130/143", `capture_rng`/`restore_rng` carry
every rank's RNG, `find_resume` picks the checkpoint a rerun of the same command continues from,
and `trim_metrics` drops metric lines a resumed run will write again.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
from pathlib import Path

from mlmctl import safe_json
from mlmctl.errors import Interrupted, MlmctlError
from mlmctl.layout import CHECKPOINTS, step_dir_name

STATE_FILE = "trainer_state.pt"
META_FILE = "checkpoint.json"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


def save_checkpoint(run_dir: Path, step: int, model, state: dict, meta: dict, *, tokenizer_dir,
                    architectures, keep_last: int, extra_config: dict | None = None) -> Path:
    """Write checkpoint `step` (model dir + trainer state + meta), then drop all but the last
    `keep_last` checkpoints. Returns its path."""
    import torch

    from mlmctl.model_dir import save_model_dir
    from mlmctl.shards import atomic_write_json, disk_error, fsync_dir

    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    # Temporaries of saves killed earlier (any pid): only one run writes here (the output lock).
    for stale in root.glob(".step-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    try:
        save_model_dir(model, tmp, tokenizer_dir=tokenizer_dir, architectures=architectures,
                       extra_config=extra_config)
        with open(tmp / STATE_FILE, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        atomic_write_json(tmp / META_FILE, {**meta, "step": step, "files": files})
        fsync_dir(tmp)
        if final.exists():  # a rerun of the same step (e.g. after --force): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        # torch and safetensors report a full disk in their own exception types.
        if isinstance(e, Exception) and (err := disk_error(e, tmp)) is not None:
            raise type(err)(f"checkpoint at step {step}: {err}") from None
        raise
    fsync_dir(root)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (temporaries excluded)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def read_meta(ckpt: Path) -> dict | None:
    """The checkpoint's meta if it is complete (meta present, every listed file at its size)."""
    try:
        meta = safe_json.loads((Path(ckpt) / META_FILE).read_text())
        for name, size in meta["files"].items():
            if (Path(ckpt) / name).stat().st_size != size:
                return None
        return meta
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def latest_valid(run_dir: Path) -> Path | None:
    for ckpt in reversed(list_checkpoints(run_dir)):
        if read_meta(ckpt) is not None:
            return ckpt
    return None


def load_trainer_state(ckpt: Path, stage: str = "pretrain") -> dict:
    import pickle

    import torch

    try:
        return torch.load(Path(ckpt) / STATE_FILE, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as e:
        raise MlmctlError(f"{stage}: cannot read {Path(ckpt) / STATE_FILE} ({e}); delete {ckpt} to continue "
                          f"from the checkpoint before it") from None


@contextlib.contextmanager
def resuming(ckpt: Path, stage: str):
    """`with resuming(ckpt, stage):` around applying a checkpoint to this run. A training state that
    does not fit (a key missing, an optimizer of other shapes, a step that is not a count: a
    damaged or crafted checkpoint) is one line naming it, not a traceback."""
    try:
        yield
    except MlmctlError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        detail = (str(e).strip().splitlines() or [""])[0][:200]
        raise MlmctlError(f"{stage}: checkpoint {ckpt} cannot be resumed: its training state does not fit this run "
                          f"({type(e).__name__}: {detail}); delete {ckpt} to continue from the checkpoint before it, "
                          f"or start over with --force") from None


def count(value, what: str) -> int:
    """A saved step or token count: an integer >= 0 (a ValueError under `resuming` otherwise)."""
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        n = None
    if n is None or n < 0 or n != value:
        raise ValueError(f"{what} {value!r} is not a count")
    return n


def check_compatible(meta: dict, expect: dict, ckpt: Path, stage: str = "pretrain") -> None:
    """Refuse a checkpoint whose model or data settings differ from this run's."""
    diffs = []
    for section in ("model", "data"):
        old, new = meta.get(section, {}), expect.get(section, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                diffs.append(f"{section}.{key}: checkpoint {old.get(key)!r}, config {new.get(key)!r}")
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise MlmctlError(
            f"{stage}: checkpoint {ckpt} was trained with different settings ({shown}); "
            f"use the matching config, or start over with --force"
        )


# ----------------------------------------------------------------------------------------------
# Resuming: which checkpoint, RNG, metric lines


def find_resume(stage: str, run_dir: Path, opts, log) -> Path | None:
    """The checkpoint this run continues from, or None for a start at step 0.

    The stage runner lets a run reach here with checkpoints present only when the unfinished
    run was of the same config and input (else it asks for --force), so rerunning the same
    command continues from the newest valid checkpoint; `--resume` is an accepted alias of
    that and `--resume-from DIR` picks a checkpoint (of any run) explicitly."""
    if getattr(opts, "resume_from", None):
        p = Path(opts.resume_from)
        if read_meta(p) is None:
            raise MlmctlError(f"{stage}: --resume-from {p} is not a complete checkpoint directory "
                              f"(expected RUN/checkpoints/step-NNNNNN with {META_FILE})")
        return p
    latest = latest_valid(run_dir)
    if latest is None and list_checkpoints(run_dir):
        log(f"no complete checkpoint in {run_dir / CHECKPOINTS} (the last save was cut short); starting from step 0")
    elif latest is None and getattr(opts, "resume", False):
        log(f"--resume: no checkpoint in {run_dir}; starting from step 0")
    return latest


def capture_rng(device) -> dict:
    """This process's torch RNG state (CPU, and CUDA when training there)."""
    import torch

    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def gather_rng(device, world: int) -> list[dict]:
    """Every rank's RNG state, in rank order (a collective under torchrun: all ranks call it)."""
    state = capture_rng(device)
    if world == 1:
        return [state]
    import torch.distributed as dist

    states = [None] * world
    dist.all_gather_object(states, state)
    return states


def restore_rng(states: list, rank: int, world: int, device, reseed: int, log) -> None:
    """Continue this rank's dropout stream; with another world size, reseed deterministically."""
    import torch

    if len(states) == world:
        torch.set_rng_state(states[rank]["cpu"])
        if device.type == "cuda" and states[rank].get("cuda") is not None:
            torch.cuda.set_rng_state(states[rank]["cuda"], device)
    else:
        torch.manual_seed(reseed + rank)
        log(f"the checkpoint was written by {len(states)} processes, this run has {world}: dropout reseeded")


def trim_metrics(path: Path, step: int) -> None:
    """Keep the metric lines up to `step` (-1: none); the resumed run writes the rest again."""
    from mlmctl.shards import atomic_write_text

    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if safe_json.loads(line)["step"] <= step:
                keep.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a kill
    atomic_write_text(path, "".join(keep))


# ----------------------------------------------------------------------------------------------
# Stopping on request


class StopSignals:
    """`with StopSignals() as stop:` ... `if stop.requested: save; raise stop.interrupted(...)`.

    SIGINT (Ctrl-C) and SIGTERM (what Slurm, Kubernetes and CI runners send before a kill) only
    set a flag, so the training loop stops at the next step boundary with a checkpoint rather
    than dying mid-step. A second Ctrl-C stops at once (KeyboardInterrupt; the previous
    checkpoint stays valid). Handlers can only be installed from the main thread; elsewhere
    (a test calling `run` in a thread) this is a no-op."""

    NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.NAMES:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def interrupted(self, stage: str, step: int, ckpt: Path | None) -> Interrupted:
        """The exception that ends the run: one line saying what happened and what to run."""
        signum = self.signum or signal.SIGINT
        where = f"saved checkpoint {ckpt}" if ckpt is not None else "no checkpoint to save yet"
        return Interrupted(f"{stage} stopped by {self.NAMES.get(signum, signum)} after step {step} ({where}); "
                           f"rerun the same command to continue from there", 128 + int(signum))
