"""Data sets. `load(name, split)` is the door in: images as float32 [N, C, H, W] in [0, 1], labels int64.

    X, y = rr.data.load("mnist", split="train")                     # [60000, 1, 28, 28]
    X, y = rr.data.load("color-mnist", split="test", task="color")  # [70000, 3, 28, 28], a lazy view
    X, y = rr.data.load("digits", split="train")                    # sklearn 8x8, for fast tests
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..errors import UserError
from . import color_mnist, digits, mnist
from .color_mnist import ColoredDigits

SPLITS = ("train", "test")
TASKS = {"mnist": ("digit",), "digits": ("digit",), "color-mnist": ("digit", "color")}
NAMES = tuple(TASKS)


@lru_cache(maxsize=4)
def _mnist_uint8(split: str, root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    arrays = mnist.load_arrays(root)
    return torch.from_numpy(np.ascontiguousarray(arrays[f"x_{split}"])), \
        torch.from_numpy(arrays[f"y_{split}"].astype(np.int64))


def load(name: str, split: str = "train", task: str | None = None, root: str | None = None,
         device: str | torch.device | None = None):
    """Return (X, y) for data set `name` and `split` ("train" or "test").

    `task` picks the labels where a data set has several ("digit" or "color" for color-mnist).
    `root` names a folder of standard MNIST IDX files to use instead of the cached copy.
    """
    if name not in TASKS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(NAMES)}")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: use 'train' or 'test'")
    task = task or TASKS[name][0]
    if task not in TASKS[name]:
        raise UserError(f"dataset {name!r} has no task {task!r}: choose one of {', '.join(TASKS[name])}")
    if name == "digits":
        arrays = digits.load_arrays()
        X, y = torch.from_numpy(arrays[f"x_{split}"]), torch.from_numpy(arrays[f"y_{split}"])
    else:
        images, labels = _mnist_uint8(split, None if root is None else str(root))
        if name == "mnist":
            X, y = images[:, None].to(torch.float32).div_(255.0), labels.clone()
        else:
            X, y = color_mnist.colored(images, labels, task)
    if device is not None:
        X, y = X.to(device), y.to(device)
    return X, y


def take(X, index: torch.Tensor):
    """X[index], staying lazy for lazy views (Color-MNIST) instead of making the images."""
    return X.subset(index) if isinstance(X, ColoredDigits) else X[index]


def random_subset(X, y: torch.Tensor | None, n: int, seed: int = 0):
    """A fixed random subset of n items (in their original order), lazy for lazy views; all if n <= 0 or >= len."""
    if n is None or n <= 0 or n >= len(X):
        return X, y
    pick = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return take(X, pick), (None if y is None else y[pick])


def num_classes(name: str, task: str | None = None) -> int:
    return 7 if (name == "color-mnist" and task == "color") else 10


__all__ = ["load", "num_classes", "random_subset", "take", "ColoredDigits", "NAMES", "TASKS"]
