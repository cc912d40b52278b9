"""One validation layer for the command line and the Python API alike.

Each function checks one value and returns it (converted where that is the point, e.g. a `Path`),
or raises `UserError` with one plain line that names the value (`name`: a flag such as "--lr" or an
argument such as "lr") and says what it must be. Call them before any work starts, so that a bad value
costs nothing. The CLI prints the message as it is; the API raises the same message.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from .errors import UserError

# widths of layers and codes: 2**16 units already make a 4-layer MLP of 17 billion weights
MAX_WIDTH = 2**16
# torch.manual_seed takes at most 64 bits; numpy takes the seed modulo 2**32 (utils.seed_everything)
SEED_MAX = 2**63 - 1


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def number(
    value, name: str, *, low=None, high=None, low_open: bool = False, high_open: bool = False, integer: bool = False
):
    """A finite real number (an int when `integer`) inside [low, high] (open ends when `*_open`).
    Booleans and strings are refused; a 0-d tensor or NumPy scalar is taken as its Python value."""
    what = "an integer" if integer else "a number"
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dim() == 0:
        value = value.item()
    elif hasattr(value, "item") and type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        value = value.item()
    rng = _interval(low, high, low_open, high_open)
    must = f"{name} must be {what}" + (f" {rng}" if rng else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{must}, got {value!r}")
    if integer and not isinstance(value, numbers.Integral):
        raise UserError(f"{must}, got {value!r}")
    if not integer and not math.isfinite(value):
        raise UserError(f"{must}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise UserError(f"{must}, got {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        raise UserError(f"{must}, got {value!r}")
    return int(value) if integer else float(value)


def positive(value, name: str, *, integer: bool = False, high=None):
    """A finite number > 0 (an int >= 1 when `integer`), at most `high` when given."""
    if integer:
        return number(value, name, low=1, high=high, integer=True)
    return number(value, name, low=0, low_open=True, high=high)


def nonnegative(value, name: str, *, integer: bool = False, high=None):
    """A finite number >= 0 (an int when `integer`), at most `high` when given."""
    return number(value, name, low=0, high=high, integer=integer)


def probability(value, name: str, *, open_low: bool = False, open_high: bool = False) -> float:
    """A number in [0, 1] (ends excluded when asked)."""
    return number(value, name, low=0, high=1, low_open=open_low, high_open=open_high)


def seed(value, name: str = "--seed") -> int:
    """A seed torch and NumPy both accept: an integer in [0, 2**63 - 1]."""
    return number(value, name, low=0, high=SEED_MAX, integer=True)


def count(value, name: str) -> int:
    """How many points to use, where 0 means all of them: an integer >= 0."""
    return number(value, name, low=0, integer=True)


def image_shape(value, name: str = "input_shape") -> tuple[int, int, int]:
    """The shape of one image, [channels, height, width], each an integer >= 1."""
    try:
        shape = tuple(value)
    except TypeError:
        raise UserError(f"{name} must be [channels, height, width], got {value!r}") from None
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise UserError(f"{name} must be [channels, height, width] of integers >= 1, got {value!r}")
    return tuple(int(s) for s in shape)


def width(value, name: str) -> int:
    """A layer or code width: an integer in [1, MAX_WIDTH]."""
    return positive(value, name, integer=True, high=MAX_WIDTH)


def choice(value, name: str, options: Iterable[str]):
    """One of `options` (compared as given)."""
    options = list(options)
    if value not in options:
        raise UserError(f"{name} must be one of {', '.join(map(str, options))}, got {value!r}")
    return value


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable(folder: Path) -> bool:
    # os.access answers for the real user; root passes it even on a read-only folder, so a folder
    # that refuses writes anyway is caught when it is written (utils.atomic_write turns it into a UserError)
    return os.access(folder, os.W_OK | os.X_OK)


def existing_dir(path, name: str) -> Path:
    """A folder that exists and can be read."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{name}: {p} does not exist")
    if not p.is_dir():
        raise UserError(f"{name}: {p} is not a folder")
    if not os.access(p, os.R_OK | os.X_OK):
        raise UserError(f"{name}: {p} cannot be read (permissions)")
    return p


def readable_file(path, name: str) -> Path:
    """A file that exists and can be read."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{name}: {p} does not exist")
    if not p.is_file():
        raise UserError(f"{name}: {p} is not a file")
    if not os.access(p, os.R_OK):
        raise UserError(f"{name}: {p} cannot be read (permissions)")
    return p


def output_dir(path, name: str) -> Path:
    """A folder to write into: either an existing writable folder, or a path that is not a file and
    whose nearest existing parent is a writable folder (it is created when written)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{name}: {p} is an existing file, not a folder: choose another path")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise UserError(f"{name}: {p} cannot be created, {base} is a file")
    if not _writable(base):
        raise UserError(f"{name}: cannot write to {base} (permissions): choose another folder")
    return p


def output_file(path, name: str) -> Path:
    """A file to write: not an existing folder, with a parent that is (or can be made) a writable folder."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{name}: {p} is a folder, not a file: choose another path")
    if p.exists() and not os.access(p, os.W_OK):
        raise UserError(f"{name}: cannot write {p} (permissions): choose another folder")
    output_dir(p.parent, name)
    return p


# Tensors handed to the API


def images(
    x, name: str = "x", shape: tuple[int, ...] | None = None, unit_range: bool = True, allow_empty: bool = True
) -> torch.Tensor:
    """A batch of images: a float tensor [B, C, H, W] (or [B, *shape] when `shape` is given), finite,
    inside [0, 1] when `unit_range`; float64 and float16 are refused rather than silently cast."""
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise UserError(f"{name} must be a float32 tensor, got {x.dtype}: convert it with .float()")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise UserError(f"{name} has shape {tuple(x.shape)}; expected [batch, {', '.join(map(str, shape))}]")
    if shape is None and x.dim() < 2:
        raise UserError(f"{name} has shape {tuple(x.shape)}; expected a batch [batch, channels, height, width]")
    if not allow_empty and len(x) == 0:
        raise UserError(f"{name} is an empty batch")
    if x.numel():
        # one pass (a tenth of the time of isfinite().all() on a CPU batch): min and max propagate a NaN,
        # and every value is finite when both ends are
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise UserError(f"{name} contains NaN or infinite values")
        if unit_range and (lo < 0 or hi > 1):
            raise UserError(f"{name} must lie in [0, 1] (got min {lo:.3g}, max {hi:.3g})")
    return x


def labels(y, batch: int, name: str = "y", num_classes: int | None = None) -> torch.Tensor:
    """Integer class labels [batch], each in [0, num_classes) when `num_classes` is given."""
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32):
        got = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
        raise UserError(f"{name} must be an integer tensor of labels (torch.int64), got {got}")
    if y.shape != (batch,):
        raise UserError(f"{name} has shape {tuple(y.shape)}; expected [{batch}]")
    if num_classes is not None and y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise UserError(
            f"{name} holds labels in [{int(y.min())}, {int(y.max())}]; the model has "
            f"{num_classes} classes (labels 0..{num_classes - 1})"
        )
    return y
