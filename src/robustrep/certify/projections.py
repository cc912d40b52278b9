"""Random Cauchy projections for the dual network's layer bounds (Wong, Schmidt, Metzen & Kolter 2018,
"Scaling provable adversarial defenses", Section 3.2; MATH.md 6).

The exact layer bounds of `dual.layer_bounds` walk one dual variable per unit back to the input, a cost
that grows with the width of every layer. For unit j of layer i they are

    l_j, u_j = f_D(c0)_j  -+  ||diag(r) M_j||_1  +  sum over earlier ReLU layers i' of
               (-+ ||diag(l_I d) M'_j||_1 - (M' (l_I d))_j) / 2

where f_D is the network with each ReLU replaced by its slope D, M (M') the linear map from the input
(from ReLU layer i') to layer i, r the input set's radius and l_I the lower bounds on I (zero
elsewhere). The linear terms are exact with one forward pass each; each l1 norm of a row is estimated
with k Cauchy random vectors R pushed *forwards* (one pass of k vectors instead of n_i of them): for
a Cauchy R, (M R)_j is Cauchy with scale ||M_j||_1, so the median of |M R|_j over k draws estimates
it (the median estimator; median |Cauchy(0, 1)| = 1).

The result is an estimate, not a bound: train with it, certify with the exact bounds. Where a layer is
no wider than k, its identity is pushed instead of Cauchy vectors and its l1 terms are exact.
"""

from __future__ import annotations

import math

import torch

from .inputs import InputSet
from .layers import AffineOp, Chain, ReLUBounds, ReshapeOp, group_interval


def _forward(group: list[AffineOp], z: torch.Tensor, bias: bool) -> torch.Tensor:
    """Apply one affine group to z [*lead, *in_shape] (lead: the batch, and the k directions if any)."""
    for op in group:
        lead = z.shape[: z.dim() - len(op.in_shape)]
        flat = z.reshape(-1, *op.in_shape)
        out = op._apply(flat, bias=True) if bias and not isinstance(op, ReshapeOp) else op.linear(flat)
        z = out.reshape(*lead, *op.out_shape)
    return z


class _Path:
    """Directions [B or 1, k, *shape] pushed forwards; `exact`: they are an identity (l1 = sum of |.|)."""

    def __init__(self, directions: torch.Tensor, exact: bool):
        self.directions, self.exact = directions, exact

    def l1(self) -> torch.Tensor:
        a = self.directions.abs()
        return a.sum(1) if self.exact else a.median(1).values


def _directions(scale: torch.Tensor, shape, k: int, generator) -> _Path:
    """diag(scale) R for Cauchy R [1, k, *shape] (or the identity where the layer has <= k units);
    scale [B or 1, *shape]."""
    n = math.prod(shape)
    if n <= k:
        R = torch.eye(n, dtype=scale.dtype, device=scale.device).reshape(1, n, *shape)
        return _Path(R * scale.unsqueeze(1), exact=True)
    # One draw shared by the batch: each example's estimate is still a median of k independent Cauchy
    # variables (scaled by its own l_I d), and drawing B times as many was a quarter of a conv step.
    R = torch.empty(1, k, *shape, dtype=scale.dtype, device=scale.device).cauchy_(generator=generator)
    return _Path(R * scale.unsqueeze(1), exact=False)


def layer_bounds(chain: Chain, inp: InputSet, k: int, generator: torch.Generator | None = None) -> list[ReLUBounds]:
    """Estimated pre-activation bounds of every ReLU layer (the exact ones' shape, `dual.layer_bounds`)."""
    x = inp.centre
    shape = chain.input_shape
    if math.prod(shape) <= k:
        eye = torch.eye(math.prod(shape), dtype=x.dtype, device=x.device).reshape(1, -1, *shape)
        inputs = _Path(inp.scaled(eye), exact=True)
    else:
        R = torch.empty(1, k, *shape, dtype=x.dtype, device=x.device).cauchy_(generator=generator)
        inputs = _Path(inp.scaled(R), exact=False)
    centre = x  # f_D(c0), layer by layer
    relu_paths: list[tuple[_Path, torch.Tensor]] = []  # (directions, M'(l_I d)) per earlier ReLU layer
    relus: list[ReLUBounds] = []
    for top in range(1, len(chain.groups)):
        group = chain.groups[top - 1]
        centre = _forward(group, centre, bias=True)
        inputs.directions = _forward(group, inputs.directions, bias=False)
        for path, _ in relu_paths:
            path.directions = _forward(group, path.directions, bias=False)
        relu_paths = [(path, _forward(group, ones, bias=False)) for path, ones in relu_paths]
        if top == 1 and sum(not isinstance(op, ReshapeOp) for op in group) <= 1:
            lower, upper = group_interval(group, *inp.box())  # exact and cheap, as in dual.py
        else:
            spread = inputs.l1()
            lower, upper = centre - spread, centre + spread
            for path, ones in relu_paths:
                n = path.l1()
                lower = lower + (-n - ones) / 2
                upper = upper + (n - ones) / 2
        relu = ReLUBounds(lower, upper)
        relus.append(relu)
        if top == len(chain.groups) - 1:
            break
        d = relu.d
        centre = d * centre
        inputs.directions = d.unsqueeze(1) * inputs.directions
        for path, _ in relu_paths:
            path.directions = d.unsqueeze(1) * path.directions
        relu_paths = [(path, d * ones) for path, ones in relu_paths]
        ld = torch.where(relu.crossing, relu.lower, torch.zeros_like(relu.lower)) * d  # l_I d, <= 0
        relu_paths.append((_directions(ld, ld.shape[1:], k, generator), ld))
    return relus
