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
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from mlmctl.errors import MlmctlError

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
META_FILE = "checkpoint.json"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def save_checkpoint(run_dir: Path, step: int, model, state: dict, meta: dict, *, tokenizer_dir,
                    architectures, keep_last: int) -> Path:
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
        save_model_dir(model, tmp, tokenizer_dir=tokenizer_dir, architectures=architectures)
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
        meta = json.loads((Path(ckpt) / META_FILE).read_text())
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


def load_trainer_state(ckpt: Path) -> dict:
    import pickle

    import torch

    try:
        return torch.load(Path(ckpt) / STATE_FILE, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as e:
        raise MlmctlError(f"pretrain: cannot read {Path(ckpt) / STATE_FILE} ({e}); resume from another checkpoint") from None


def check_compatible(meta: dict, expect: dict, ckpt: Path) -> None:
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
            f"pretrain: checkpoint {ckpt} was trained with different settings ({shown}); "
            f"use the matching config, or start a new run without --resume"
        )
