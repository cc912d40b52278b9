"""The input set of a certificate: the l_inf ball around x, optionally intersected with the pixel box.

MATH.md 6: with pixels in [lo, hi] the set {x' : ||x' - x||_inf <= eps, lo <= x' <= hi} is the box
[max(x - eps, lo), min(x + eps, hi)], of centre c and radius r (per coordinate). Every bound here only
needs two things of it: the box itself (for interval images) and the dual norm term of Theorem 1,

    max_{x' in set} -x'^T nuhat_1 = -c^T nuhat_1 + r^T |nuhat_1|,

which for the plain ball (c = x, r = eps) is Wong & Kolter's `- x^T nuhat_1 + eps ||nuhat_1||_1`.
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError


def check_input_bounds(input_bounds, x: torch.Tensor | None = None):
    """None, or a pair (lo, hi) of finite numbers with lo < hi that contains every entry of x."""
    if input_bounds is None:
        return None
    if not isinstance(input_bounds, (tuple, list)) or len(input_bounds) != 2:
        raise UserError(f"input_bounds must be None or a pair (lo, hi), e.g. (0.0, 1.0); got {input_bounds!r}")
    lo, hi = input_bounds
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"input_bounds must hold two finite numbers, e.g. (0.0, 1.0); got {input_bounds!r}")
    if not lo < hi:
        raise UserError(f"input_bounds needs lo < hi, got {input_bounds!r}")
    if x is not None and (x.min() < lo or x.max() > hi):
        raise UserError(
            f"x has values outside input_bounds {tuple(input_bounds)}: the set to certify would "
            f"not contain x; rescale x or widen the bounds"
        )
    return float(lo), float(hi)


class InputSet:
    """Centre [B, *S] and radius of the input set. The radius is a float or a column [B, 1] (the plain
    ball: the same for every coordinate) or a tensor [B, *S] (the ball clipped to the box)."""

    def __init__(self, x: torch.Tensor, eps, input_bounds=None):
        self.batch = len(x)
        if input_bounds is None:
            self.centre = x
            self.radius = eps.to(x).reshape(-1, 1) if isinstance(eps, torch.Tensor) else float(eps)
            self.uniform = True
            return
        e = eps.to(x).reshape(-1, *([1] * (x.dim() - 1))) if isinstance(eps, torch.Tensor) else eps
        lo = (x - e).clamp(min=input_bounds[0])
        hi = (x + e).clamp(max=input_bounds[1])
        self.centre = (hi + lo) / 2
        self.radius = (hi - lo) / 2
        self.uniform = False

    def box(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The set as a box [lo, hi], each [B, *S]."""
        r = self.radius
        if self.uniform and isinstance(r, torch.Tensor):
            r = r.reshape(-1, *([1] * (self.centre.dim() - 1)))
        return self.centre - r, self.centre + r

    def norm(self, nu: torch.Tensor) -> torch.Tensor:
        """r^T |nu| for dual variables nu [B or 1, K, *S] -> [B or 1, K] (eps ||nu||_1 for the plain ball)."""
        flat = nu.flatten(2).abs()
        if self.uniform:
            return self.radius * flat.sum(2)
        return flat.matmul(self.radius.flatten(1).unsqueeze(-1)).squeeze(-1)

    def scaled(self, R: torch.Tensor) -> torch.Tensor:
        """diag(r) R for random directions R [B or 1, k, *S]: r^T |nu| = ||diag(r) nu||_1 is what the
        projections estimate (the radius folded into the Cauchy vectors, as convex_adversarial does)."""
        if self.uniform:
            r = self.radius
            return R * (r.reshape(-1, 1, *([1] * (R.dim() - 2))) if isinstance(r, torch.Tensor) else r)
        return R * self.radius.unsqueeze(1)
