"""Data sets. `load(name, split)` is the door in: images as float32 [N, C, H, W] in [0, 1], labels int64.

X, y = rr.data.load("mnist", split="train")                     # [60000, 1, 28, 28]
X, y = rr.data.load("color-mnist", split="test", task="color")  # [70000, 3, 28, 28], a lazy view
X, y = rr.data.load("digits", split="train")                    # sklearn 8x8, for fast tests
X, y = rr.data.load("celeba", split="test", task="Smiling")     # a user's local copy, 64x64, lazy
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..errors import UserError
from . import celeba, color_mnist, digits, mnist, shapes
from .color_mnist import ColoredDigits

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Dataset:
    """One entry of the table of data sets: how to load a split, and its label tasks with their class counts
    (the first task is the default)."""

    load: Callable[[str, str, str | None], tuple]  # (split, task, root) -> (X, y)
    tasks: dict[str, int]


@lru_cache(maxsize=4)
def _mnist_uint8(split: str, root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    arrays = mnist.load_arrays(root)
    return torch.from_numpy(np.ascontiguousarray(arrays[f"x_{split}"])), torch.from_numpy(
        arrays[f"y_{split}"].astype(np.int64)
    )


def _load_mnist(split, task, root):
    images, labels = _mnist_uint8(split, root)
    return images[:, None].to(torch.float32).div_(255.0), labels.clone()


def _load_color_mnist(split, task, root):
    return color_mnist.colored(*_mnist_uint8(split, root), task)


def _load_digits(split, task, root):
    arrays = digits.load_arrays()
    return torch.from_numpy(arrays[f"x_{split}"]), torch.from_numpy(arrays[f"y_{split}"])


def _load_color_digits(split, task, root):
    arrays = digits.load_arrays()  # uint8 like MNIST's: each grey level within 1/510 of the float's
    gray = torch.from_numpy(np.rint(arrays[f"x_{split}"][:, 0] * 255).astype(np.uint8))
    return color_mnist.colored(gray, torch.from_numpy(arrays[f"y_{split}"]), task)


def _load_celeba(split, task, root):
    return celeba.load(split, task, root)


# name -> Dataset. A new data set is one module with a loader and one entry here (or `register_dataset`).
DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(_load_mnist, {"digit": 10}),
    "color-mnist": Dataset(_load_color_mnist, {"digit": 10, "color": 7}),
    "digits": Dataset(_load_digits, {"digit": 10}),
    "color-digits": Dataset(_load_color_digits, {"digit": 10, "color": 7}),  # Color-MNIST's 7 colours, 8x8
    # a user's copy ($ROBUSTREP_CELEBA_DIR or root=): 40 binary attributes, Smiling the default task
    "celeba": Dataset(_load_celeba, {"Smiling": 2, **{a: 2 for a in celeba.ATTRIBUTES}}),
    # dSprites-style shapes made by code, the small CPU grid (data/shapes.py); a task is one generative factor
    "shapes": Dataset(lambda split, task, root: shapes.load_split(split, task), dict(shapes.TASKS)),
}


def register_dataset(name: str, load: Callable[[str, str, str | None], tuple], tasks: dict[str, int]) -> None:
    DATASETS[name] = Dataset(load, dict(tasks))


def __getattr__(name: str):
    # NAMES and TASKS are views of the table, so data sets registered later are listed too
    if name == "NAMES":
        return tuple(DATASETS)
    if name == "TASKS":
        return {k: tuple(d.tasks) for k, d in DATASETS.items()}
    raise AttributeError(name)


def _entry(name: str, task: str | None) -> tuple[Dataset, str]:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    entry = DATASETS[name]
    task = task or next(iter(entry.tasks))
    if task not in entry.tasks:
        raise UserError(f"dataset {name!r} has no task {task!r}: choose one of {', '.join(entry.tasks)}")
    return entry, task


def load(
    name: str,
    split: str = "train",
    task: str | None = None,
    root: str | None = None,
    device: str | torch.device | None = None,
):
    """Return (X, y) for data set `name` and `split` ("train" or "test").

    `task` picks the labels where a data set has several ("digit" or "color" for color-mnist).
    `root` names a folder of standard MNIST IDX files to use instead of the cached copy, or the
    CelebA folder (else $ROBUSTREP_CELEBA_DIR).
    """
    entry, task = _entry(name, task)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: use 'train' or 'test'")
    X, y = entry.load(split, task, None if root is None else str(root))
    if device is not None:
        X, y = X.to(device), y.to(device)
    return X, y


def take(X, index: torch.Tensor):
    """X[index], staying lazy for lazy views (Color-MNIST, CelebA) instead of making the images."""
    return X.subset(index) if hasattr(X, "subset") else X[index]


def random_subset(X, y: torch.Tensor | None, n: int, seed: int = 0):
    """A fixed random subset of n items (in their original order), lazy for lazy views; all if n <= 0 or >= len."""
    if n is None or n <= 0 or n >= len(X):
        return X, y
    pick = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return take(X, pick), (None if y is None else y[pick])


def num_classes(name: str, task: str | None = None) -> int:
    entry, task = _entry(name, task)
    return entry.tasks[task]


__all__ = ["load", "num_classes", "random_subset", "take", "register_dataset", "ColoredDigits", "DATASETS", "Dataset"]
