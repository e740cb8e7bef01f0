"""What pretrain and finetune share: optimiser settings, the process and its device, the metrics
writer and one optimizer step.

    proc = Process.setup("pretrain", device="auto", threads=None, precision="auto", key="train.device")
    optim = OptimSettings(lr=5e-4, warmup_steps=100, total_steps=1000, decay="linear")
    optimizer = optim.make_optimizer(model, proc.device)
    metrics = MetricsWriter(run_dir / METRICS_FILE, started, enabled=proc.is_main, resume_step=-1)
    loss, grad_norm = train_step(model, optimizer, micro_batches, loss_fn, lr=optim.lr_at(step),
                                 grad_clip=optim.grad_clip, proc=proc)
    metrics.write({"step": step + 1, "loss": loss, "grad_norm": grad_norm})
    proc.close()

The shape of torchtitan's `Trainer.train_step` and litgpt's `fit`: the stage owns its data and
its loop; this module owns what does not depend on the task. torch is imported inside the
functions, so that the stage configs can use `check_optimiser` without it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlmctl.config import check
from mlmctl.errors import MlmctlError

if TYPE_CHECKING:
    import torch

# ----------------------------------------------------------------------------------------------
# Optimiser and schedule


def check_optimiser(section: Any) -> None:
    """The checks every section holding optimiser knobs (`lr`, `weight_decay`, `grad_clip`) needs."""
    check(section.lr > 0, "lr", f"must be positive, got {section.lr}")
    check(section.weight_decay >= 0, "weight_decay", f"must be >= 0, got {section.weight_decay}")
    check(section.grad_clip >= 0, "grad_clip", "must be >= 0")


@dataclass(frozen=True)
class OptimSettings:
    """AdamW and its learning-rate schedule, as resolved for one run (pretrain's `train.*`,
    finetune's top-level keys)."""

    lr: float
    total_steps: int
    warmup_steps: int = 0
    decay: str = "linear"
    min_lr_ratio: float = 0.0
    decay_shape: str = "1-sqrt"  # decay "wsd" only
    decay_fraction: float = 0.2  # decay "wsd" only
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0

    def make_optimizer(self, model, device: torch.device) -> torch.optim.Optimizer:
        from mlmctl.optim import make_adamw  # imports torch

        return make_adamw(model, self.lr, self.weight_decay, self.betas, self.eps, device.type)

    def lr_at(self, step: int) -> float:
        from mlmctl.optim import lr_at

        return lr_at(step, lr=self.lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                     decay=self.decay, min_lr_ratio=self.min_lr_ratio, decay_shape=self.decay_shape,
                     decay_fraction=self.decay_fraction)


# ----------------------------------------------------------------------------------------------
# The process: device, torchrun, precision


@dataclass
class Process:
    """This process's place in the run: rank, world size, device, precision."""

    rank: int
    world: int
    device: torch.device
    use_bf16: bool = False

    @classmethod
    def setup(cls, stage: str, *, rank: int, world: int, device: str, threads: int | None,
              precision: str | None = None, key: str = "device") -> Process:
        """Pick the device, set the CPU threads, join the torchrun group (gloo on CPU, NCCL on GPU).
        `precision` None: fp32 without TF32 (finetune); else auto | fp32 | bf16 (`train.precision`)."""
        import torch

        from mlmctl.devices import pick_device

        dev = pick_device(device, stage, key)
        if threads:
            torch.set_num_threads(threads)
        if world > 1:
            import torch.distributed as dist

            if dev.type == "cuda":
                dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(dev)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        use_bf16 = precision == "bf16" or (precision == "auto" and dev.type == "cuda")
        if use_bf16 and dev.type != "cuda":
            prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
            raise MlmctlError(f"{stage}: `{prefix}precision: bf16` needs a CUDA device; use fp32 (or auto) on CPU")
        if precision is not None and dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return cls(rank, world, dev, use_bf16)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        """bf16 autocast on CUDA when asked for; nothing otherwise."""
        import torch

        return torch.autocast("cuda", dtype=torch.bfloat16) if self.use_bf16 else contextlib.nullcontext()

    def wrap(self, model):
        """DistributedDataParallel under torchrun, the model itself otherwise."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over all ranks (the values themselves in a single process)."""
        if self.world == 1:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """Whether any rank says yes (every rank must stop at the same step)."""
        return bool(self.all_sum([float(flag)])[0])

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Wait for every rank, then leave the torchrun group."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# One optimizer step


class NonFiniteLoss(MlmctlError):
    """The loss or the gradient norm of a step is inf or NaN; the stage says what to change."""

    def __init__(self, loss: float, grad_norm: float):
        super().__init__(f"the loss became {loss} (grad norm {grad_norm})")
        self.loss, self.grad_norm = loss, grad_norm


def train_step(model, optimizer, micro_batches: Iterable, loss_fn: Callable, *, lr: float, grad_clip: float,
               proc: Process) -> tuple[float, float]:
    """One optimizer step over this rank's micro-batches; returns (loss, grad norm) as floats.

    `loss_fn(model, batch)` returns the loss of one micro-batch already divided so that the sum
    over micro-batches (and the DDP average over ranks) is the step's loss. Gradients are
    synchronised only on the last micro-batch. Raises NonFiniteLoss before the weights change."""
    import torch

    from mlmctl.optim import set_lr

    micro_batches = list(micro_batches)
    set_lr(optimizer, lr)
    step_loss = torch.zeros((), device=proc.device)
    for k, batch in enumerate(micro_batches):
        sync = k == len(micro_batches) - 1
        with (contextlib.nullcontext() if sync or proc.world == 1 else model.no_sync()), proc.autocast():
            loss = loss_fn(model, batch)
        loss.backward()
        step_loss += loss.detach().float()  # stays on the device: no sync per micro-batch
    # The wrappers (DDP, torch.compile) list the wrapped model's parameters, in the same order.
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))  # inf: measure only
    if proc.world > 1:
        torch.distributed.all_reduce(step_loss)
    # One host sync per step, for the log and the non-finite check.
    step_loss, norm = torch.stack([step_loss / proc.world, norm.float()]).tolist()
    if not (math.isfinite(step_loss) and math.isfinite(norm)):
        raise NonFiniteLoss(step_loss, norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss, norm


def run_trainer(ctx, trainer_cls, stage: str) -> dict:
    """A training stage's `run`: the named steps of `trainer_cls` (open_data, build_model, resume,
    fit, finish) in order, with TensorBoard checked before any work and closed after any end."""
    if ctx.cfg.tensorboard:
        from mlmctl.tensorboard_log import require

        require(f"{stage}: `tensorboard: true`")  # before any work, not after the first hour
    trainer = trainer_cls(ctx)
    try:
        trainer.open_data()
        trainer.build_model()
        trainer.resume()
        trainer.fit()
        return trainer.finish()
    finally:
        if getattr(trainer, "metrics", None) is not None:
            trainer.metrics.close()


# ----------------------------------------------------------------------------------------------
# metrics.jsonl


@dataclass
class MetricsWriter:
    """`metrics.jsonl`: one JSON row per logged step, with wall-clock `time` and `elapsed_s`.

    Only the main rank writes. On resume the rows after the resumed step are dropped (the run
    writes them again); a fresh start (`resume_step` -1) drops them all. Other sinks (a
    TensorBoard writer, a plot) attach with `add_sink(fn)` and get every row as written."""

    path: Path
    started: float
    enabled: bool = True
    resume_step: int = -1
    tensorboard_config: dict | None = None
    """The resolved config, when the run asked for TensorBoard: RUN/tensorboard/ gets every row."""
    sinks: list[Callable[[dict], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from mlmctl.checkpoint import trim_metrics

        self._tensorboard = None
        if not self.enabled:
            return
        trim_metrics(self.path, self.resume_step)
        if self.tensorboard_config is not None:
            from mlmctl.tensorboard_log import TensorBoardSink

            # Same cut as metrics.jsonl: events after the resumed step are dropped (purge_step).
            self._tensorboard = TensorBoardSink(self.path.parent, keep_through_step=self.resume_step)
            self._tensorboard.log_config(self.tensorboard_config)
            self.add_sink(self._tensorboard.log)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def add_sink(self, sink: Callable[[dict], None]) -> None:
        self.sinks.append(sink)

    def write(self, row: dict) -> None:
        from mlmctl.progress import timed_row

        if not self.enabled:
            return
        row = timed_row(row, self.started)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        for sink in self.sinks:
            sink(row)
