"""Per-point robustness: which points survive an attack, which are certified. Accuracies are means of
these masks, so numbers from different attacks and certificates can be compared point by point (a
certified point that some attack breaks is a bug in one of them)."""

from __future__ import annotations

import torch
from torch import nn

from ..attacks.base import Attack, predict
from ..certify import certified, margin_bounds
from ..utils import check_images, check_labels


def survivors(
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    among: torch.Tensor | None = None,
    batch_size: int = 500,
) -> torch.Tensor:
    """Boolean [N]: classified correctly on clean input and still after `attack` (the strict count of
    `adversarial_accuracy`). With `among` (a boolean [N]), only those points are attacked and the others
    count as broken: the points left by an earlier attack, so that the result survives both."""
    check_images(x, "x")
    check_labels(y, len(x), "y")
    alive = predict(classifier, x, batch_size) == y
    if among is not None:
        alive &= among.to(alive.device)
    idx = alive.nonzero().squeeze(1)
    for i in range(0, len(idx), batch_size):
        part = idx[i : i + batch_size]
        x_adv = attack(x[part], y[part])
        alive[part] = predict(classifier, x_adv) == y[part]
    return alive


def certified_points(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    method: str = "dual",
    batch_size: int = 100,
    input_bounds=(0.0, 1.0),
) -> torch.Tensor:
    """Boolean [N]: points whose label provably stays y for every x' with ||x' - x||_inf <= eps inside
    `input_bounds` (the image box [0, 1] that every attack clamps to; None for the whole ball): every
    margin bound z_y - z_j > 0 by `rr.certify.margin_bounds` with `method` ("dual", "crown" or "ibp")."""
    out = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            out[i : i + batch_size] = certified(margin_bounds(net, xb, yb, eps, method, input_bounds=input_bounds), yb)
    return out
