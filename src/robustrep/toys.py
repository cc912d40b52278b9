"""The 2-D mode-collapse toys: 8 Gaussians on a ring and 25 on a grid, and how many modes a sample covers.

    X, centres, std = rr.toys.ring(n)      # radius 2, std 0.02 (Metz et al. 2017; Srivastava et al. 2017)
    X, centres, std = rr.toys.grid(n)      # centres {-4, -2, 0, 2, 4}^2, std 0.05
    modes, share = rr.toys.mode_quality(points, centres, std)

A sample point is of high quality when it lies within 3 std of its nearest centre; a mode is covered when at
least `min_count` high-quality points (20 of 2500, VEEGAN's rule) are nearest to it. The models see the
points as [N, 2, 1, 1] "images" mapped into [0, 1] by `to_unit` (x / scale + 1/2) and back by `from_unit`,
with each toy's own scale (`SCALES`): as tight as the toy allows, since the generators' tanh output must
hit modes 3 std wide, and a wider scale shrinks that target in the networks' units (at scale 12 a ring
mode's 3 std are 0.01 of tanh's range; GANs trained there covered none of the 8).
"""

from __future__ import annotations

import math

import torch

from . import validate

SCALE = 12.0  # the default: holds both toys
SCALES = {"ring": 5.0, "grid": 10.0}  # the ring within +-2.1 maps into [0.08, 0.92], the grid's +-4.2 likewise


def ring(n: int, modes: int = 8, radius: float = 2.0, std: float = 0.02, seed: int = 0):
    validate.positive(n, "n", integer=True)
    angle = 2 * math.pi * torch.arange(modes) / modes
    centres = radius * torch.stack([angle.cos(), angle.sin()], 1)
    return _mixture(n, centres, std, seed), centres, std


def grid(n: int, std: float = 0.05, seed: int = 0):
    validate.positive(n, "n", integer=True)
    axis = torch.arange(-4.0, 5.0, 2.0)
    centres = torch.cartesian_prod(axis, axis)
    return _mixture(n, centres, std, seed), centres, std


def _mixture(n: int, centres: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(len(centres), (n,), generator=g)
    return centres[k] + std * torch.randn(n, 2, generator=g)


def to_unit(points: torch.Tensor, scale: float = SCALE) -> torch.Tensor:
    """[N, 2] points -> [N, 2, 1, 1] in [0, 1]: x / scale + 1/2, clamped (points beyond +-scale/2 are cut)."""
    validate.positive(scale, "scale")
    return (points / scale + 0.5).clamp(0, 1).view(-1, 2, 1, 1)


def from_unit(x: torch.Tensor, scale: float = SCALE) -> torch.Tensor:
    validate.positive(scale, "scale")
    return (x.reshape(-1, 2) - 0.5) * scale


def mode_quality(points: torch.Tensor, centres: torch.Tensor, std: float, min_count: int | None = None):
    """(modes covered, share of high-quality points); min_count defaults to 20 per 2500 points."""
    if min_count is None:
        min_count = max(1, round(20 * len(points) / 2500))
    d = torch.cdist(points.double(), centres.double())
    nearest = d.min(1)
    good = nearest.values <= 3 * std
    counts = torch.bincount(nearest.indices[good], minlength=len(centres))
    return int((counts >= min_count).sum()), float(good.double().mean())
