"""Small shared helpers: seeding, devices, input checks."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import UserError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` takes CUDA when present, else CPU; anything else is passed to torch.device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UserError(f"unknown device {device!r}: use auto, cpu or cuda[:N]") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but CUDA is not available: use --device cpu")
    return dev


def check_images(x: torch.Tensor, name: str = "x", shape: tuple[int, ...] | None = None,
                 unit_range: bool = True) -> None:
    """Validate a batch of images handed to the API: a float tensor [B, C, H, W] (or [B, ...shape]),
    finite, and inside [0, 1] when `unit_range`. Raises UserError naming what was wrong."""
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise UserError(f"{name} must be a float tensor, got {x.dtype}")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise UserError(f"{name} has shape {tuple(x.shape)}; expected [batch, {', '.join(map(str, shape))}]")
    if not torch.isfinite(x).all():
        raise UserError(f"{name} contains NaN or infinite values")
    if unit_range and x.numel() and (x.min() < 0 or x.max() > 1):
        raise UserError(f"{name} must lie in [0, 1] (got min {x.min().item():.3g}, max {x.max().item():.3g})")


def check_labels(y: torch.Tensor, batch: int, name: str = "y") -> None:
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32):
        raise UserError(f"{name} must be an integer tensor of labels")
    if y.shape != (batch,):
        raise UserError(f"{name} has shape {tuple(y.shape)}; expected [{batch}]")


def atomic_write(path, write) -> None:
    """Write through `write(file_object)` to a temp file in the same folder, fsync, then rename, so
    a killed write never leaves a partial file under `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
