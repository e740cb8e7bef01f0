"""TensorBoard sink: the rows a training run writes to metrics.jsonl, as TensorBoard scalars.

    tb = TensorBoardSink(run_dir, keep_through_step=-1)   # fresh run: RUN/tensorboard/ from scratch
    tb.log_config(resolved_config_dict)                  # text + hparams, once per fresh run
    tb.log({"step": 10, "tokens": 5120, "loss": 6.1, "lr": 1e-3}, step=10)
    tb.close()
    # then: tensorboard --logdir runs/

The metrics writer calls `log` with every row it appends to metrics.jsonl, so the two streams
hold the same numbers; only the main process (rank 0) opens a sink. `require()` is for the stage
to call before training starts, so a config asking for TensorBoard fails at once without it.

Resume: a run resumed from the checkpoint at step S passes `keep_through_step=S`, the same
number it passes to `checkpoint.trim_metrics`. The writer then starts its event file with a
SessionLog.START at step S+1 (SummaryWriter's `purge_step`), and TensorBoard's readers drop the
events at or after S+1 that the killed run wrote, so each step has exactly one value. A fresh
start passes -1: every event of an earlier attempt is dropped the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

from mlmctl.errors import MlmctlError

TENSORBOARD_DIR = "tensorboard"

# metrics.jsonl key -> TensorBoard tag. `val_*` and `dev_*` keys not listed map by prefix
# (val_mlm_accuracy -> val/mlm_accuracy, dev_macro_f1 -> dev/macro_f1); other numbers -> train/<key>.
TAGS = {
    "loss": "train/loss",
    "mlm_accuracy": "train/mlm_accuracy",
    "nsp_loss": "train/nsp_loss",
    "nsp_accuracy": "train/nsp_accuracy",
    "tokens": "train/tokens_seen",
    "epoch": "train/epoch",
    "val_loss": "val/loss",
    "val_ppl": "val/ppl",
    "lr": "lr",
    "grad_norm": "grad_norm",
    "tokens_per_s": "tokens_per_s",
}
PREFIXES = {"val_": "val/", "dev_": "dev/"}
# Bookkeeping, not curves: the step is the x axis; wall-clock times are TensorBoard's own.
SKIP = {"step", "time", "elapsed_s", "train_s", "best"}


def require(what: str = "TensorBoard logging") -> None:
    """Fail with one line naming the extra when the tensorboard package is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise MlmctlError(f'{what} needs the `tensorboard` package, in the `tensorboard` extra; install it with '
                          f'`pip install "mlmctl[tensorboard]"` (or `pip install tensorboard`)')


def tag_for(key: str) -> str | None:
    """The TensorBoard tag of a metrics.jsonl key, or None for bookkeeping keys."""
    if key in SKIP:
        return None
    if key in TAGS:
        return TAGS[key]
    for prefix, group in PREFIXES.items():
        if key.startswith(prefix):
            return group + key[len(prefix):]
    return f"train/{key}"


def scalars(row: dict) -> dict[str, float]:
    """The (tag, value) pairs of one metrics row: finite numbers only (a bool is not a curve)."""
    out = {}
    for key, value in row.items():
        tag = tag_for(key)
        if tag and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[tag] = float(value)
    return out


class TensorBoardSink:
    """Writes `RUN/tensorboard/events.out.tfevents.*` through torch's SummaryWriter."""

    def __init__(self, run_dir: str | Path, keep_through_step: int = -1):
        require()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self.fresh = keep_through_step < 0
        # flush_secs: a live run shows up in TensorBoard within seconds, not the default 2 minutes.
        self._writer = SummaryWriter(str(self.log_dir), purge_step=keep_through_step + 1, flush_secs=10)

    def log(self, row: dict, step: int | None = None) -> None:
        """Log one metrics row at `step` (default: the row's own `step`)."""
        step = row["step"] if step is None else step
        for tag, value in scalars(row).items():
            self._writer.add_scalar(tag, value, global_step=step)
        # Flushed at every row (rows come every log_every steps, so this is cheap): a kill loses
        # nothing that the checkpoint it resumes from already counts as done.
        self._writer.flush()

    def log_config(self, config: dict) -> None:
        """The resolved config as text (YAML) and as hparams (dotted keys). A resumed run keeps
        what its first session logged, so nothing appears twice."""
        if not self.fresh:
            return
        import yaml
        from torch.utils.tensorboard.summary import hparams

        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        # Indented four spaces: TensorBoard's text plugin renders Markdown, this keeps it verbatim.
        self._writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), global_step=0)
        exp, ssi, sei = hparams(_flat(config), {})
        for summary in (exp, ssi, sei):
            self._writer.file_writer.add_summary(summary, global_step=0)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoardSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _flat(config: dict, prefix: str = "") -> dict:
    """hparams take scalars only: nested groups become dotted keys, lists and None become text."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out
