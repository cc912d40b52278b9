"""Small shared helpers: seeding, devices, input checks."""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import validate
from .errors import UserError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer in [0, 2**63 - 1]."""
    seed = validate.seed(seed, "seed")
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


# The input checks live in robustrep.validate (one validation layer); these names stay for the callers.
check_images = validate.images
check_labels = validate.labels


def is_main_process() -> bool:
    """False only in a torchrun process other than rank 0 (without importing torch.distributed needlessly)."""
    dist = sys.modules.get("torch.distributed")
    return dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0


# Test hook for the kill test (tests/test_kill_resume.py): ROBUSTREP_KILL_AT_WRITE="N:before|after" makes the
# process die with os._exit (no cleanup, like kill -9) at the N-th atomic write of this process, either with
# the temp file written but not yet renamed, or just after the rename.
_writes = {"count": 0}


def _kill_point(moment: str) -> None:
    spec = os.environ.get("ROBUSTREP_KILL_AT_WRITE")
    if not spec:
        return
    if moment == "before":
        _writes["count"] += 1
    n, when = spec.split(":")
    if _writes["count"] == int(n) and when == moment:
        os._exit(137)


def atomic_write(path, write) -> None:
    """Write through `write(file_object)` to a temp file in the same folder, fsync, then rename, so
    a killed write never leaves a partial file under `path`. A write the system refuses (a full disk,
    a read-only folder, a folder where the file should be) is a UserError naming the file; the old
    file, if any, is left as it was."""
    path = Path(path)
    if not is_main_process():
        return  # under torchrun only rank 0 writes files; the other ranks compute the same
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _kill_point("before")
        os.replace(tmp, path)
        _kill_point("after")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err} (free space, or write elsewhere)") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
