"""AdamW with BERT's parameter groups, and the learning-rate schedule as a pure function of the step."""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (linear and embedding weights) only; none on biases and LayerNorm
    parameters, as in BERT and HF `run_mlm.py`. Frozen parameters are left out."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float,
               device_type: str) -> torch.optim.AdamW:
    # fused is the fastest kernel on CUDA; foreach (one kernel per group of tensors) elsewhere.
    kw = {}
    params = inspect.signature(torch.optim.AdamW).parameters
    if device_type == "cuda" and "fused" in params:
        kw["fused"] = True
    elif "foreach" in params:
        kw["foreach"] = True
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, **kw)


DECAY_SHAPES = ("1-sqrt", "linear")  # of the final phase of `decay: wsd`


def lr_at(step: int, *, lr: float, warmup_steps: int, total_steps: int, decay: str, min_lr_ratio: float,
          decay_shape: str = "1-sqrt", decay_fraction: float = 0.2) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up from ~0 to `lr` over
    `warmup_steps`, then `decay` ("linear", "cosine", "constant" or "wsd") down to
    `lr * min_lr_ratio` at `total_steps`. Pure, so resuming needs only the step number.

    "wsd" (warmup-stable-decay) holds `lr` and decays only over the last `decay_fraction` of
    `total_steps` (at most the steps after warm-up), with `decay_shape` "1-sqrt" (lr scaled by
    1 - sqrt(progress); Hägele et al. 2024, arXiv 2405.18392, found it beats linear) or
    "linear". The stable phase does not depend on the run's length, so a run can be extended,
    or decayed from any checkpoint of it; ModernBERT trained this way (arXiv 2412.13663)."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if decay == "constant" or total_steps <= warmup_steps:
        return lr
    if decay == "wsd":
        return _wsd(step, lr=lr, warmup_steps=warmup_steps, total_steps=total_steps, floor=lr * min_lr_ratio,
                    shape=decay_shape, fraction=decay_fraction)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    floor = lr * min_lr_ratio
    if decay == "linear":
        return floor + (lr - floor) * (1.0 - progress)
    if decay == "cosine":
        return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown decay {decay!r}")


def _wsd(step: int, *, lr: float, warmup_steps: int, total_steps: int, floor: float, shape: str,
         fraction: float) -> float:
    if shape not in DECAY_SHAPES:
        raise ValueError(f"unknown decay_shape {shape!r}; use one of {', '.join(DECAY_SHAPES)}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"decay_fraction must be in (0, 1], got {fraction!r}")
    decay_steps = max(1, min(round(fraction * total_steps), total_steps - warmup_steps))
    start = total_steps - decay_steps
    if step < start:
        return lr
    progress = min(1.0, (step - start) / decay_steps)
    scale = 1.0 - math.sqrt(progress) if shape == "1-sqrt" else 1.0 - progress
    return floor + (lr - floor) * scale


def set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = value
