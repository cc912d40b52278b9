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
    progress: bool = False,
) -> torch.Tensor:
    """Boolean [N]: classified correctly on clean input and still after `attack` (the strict count of
    `adversarial_accuracy`, batched the same way, so its mean is the same number for the same seed).
    With `among` (a boolean [N]) only those points are attacked and the others count as broken: pass
    the points an earlier attack left, and the result is the points that survive both."""
    check_images(x, "x")
    check_labels(y, len(x), "y")
    alive = torch.zeros(len(x), dtype=torch.bool, device=y.device)
    starts = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"attack {type(attack).__name__}", unit="batch", leave=False)
    for i in starts:
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        ok = predict(classifier, xb) == yb
        if among is not None:
            ok &= among[i : i + batch_size].to(ok.device)
        if ok.any():
            ok[ok.clone()] = predict(classifier, attack(xb[ok], yb[ok])) == yb[ok]
        alive[i : i + batch_size] = ok
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
