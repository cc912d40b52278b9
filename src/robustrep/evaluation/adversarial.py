"""Accuracy under attack, counted the strict way (MATH.md 3, evaluation protocol)."""

from __future__ import annotations

import torch
from torch import nn

from ..attacks.base import Attack, predict
from ..utils import check_images, check_labels


def adversarial_accuracy(
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    batch_size: int = 1000,
    progress: bool = False,
) -> float:
    """Fraction of points that are classified correctly on clean input *and* still after `attack`
    (which, for PGD with restarts, means surviving every restart). Returns a float in [0, 1]."""
    check_images(x, "x")
    check_labels(y, len(x), "y")
    correct = 0
    starts = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"attack {type(attack).__name__}", unit="batch", leave=False)
    for i in starts:
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        clean_ok = predict(classifier, xb) == yb
        survived = torch.zeros_like(clean_ok)
        if clean_ok.any():
            x_adv = attack(xb[clean_ok], yb[clean_ok])
            survived[clean_ok] = predict(classifier, x_adv) == yb[clean_ok]
        correct += int((clean_ok & survived).sum())
    return correct / max(len(x), 1)


def clean_accuracy(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(classifier, x) == y).float().mean()) if len(x) else 0.0
