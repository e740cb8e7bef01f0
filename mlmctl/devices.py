"""Choosing the torch device from a config's `device: auto | cpu | cuda` (imports torch: stages only)."""

from __future__ import annotations

import torch

from mlmctl.errors import MlmctlError


def pick_device(choice: str, stage: str, key: str = "device") -> torch.device:
    """`auto` takes CUDA when there is one; asking for CUDA without one is a one-line error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise MlmctlError(f"{stage}: `{key}: cuda` but no CUDA device is available; use auto or cpu")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)
