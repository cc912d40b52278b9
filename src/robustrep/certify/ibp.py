"""Interval bound propagation (MATH.md 6; Gowal et al. 2018): push the box [x - eps, x + eps] (or the
ball clipped to the pixel range, `inputs.InputSet`) through each affine map (centre W c + b, radius
|W| r) and each ReLU (monotone: clamp both ends).

The last affine group is not pushed through on its own: for the margin objectives c = e_y - e_j it is
folded into c first (Gowal et al.'s "elision"), so the bound is on (A^T c)^T zhat + c^T b over the box
of zhat, which is never looser than l_y - u_j and costs nothing more.
"""

from __future__ import annotations

import torch

from .inputs import InputSet
from .layers import Chain, group_backward, group_interval


def layer_bounds(chain: Chain, inp: InputSet) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Interval bounds (l, u) of the input of every ReLU layer, in order."""
    lo, hi = inp.box()
    out = []
    for group in chain.groups[:-1]:
        lo, hi = group_interval(group, lo, hi)
        out.append((lo, hi))
        lo, hi = lo.clamp(min=0), hi.clamp(min=0)
    return out


def ibp_bounds(chain: Chain, inp: InputSet, c: torch.Tensor) -> torch.Tensor:
    """Lower bounds on c^T z_k for the objectives c [B, K, *out_shape] -> [B, K]."""
    lo, hi = inp.box()
    for group in chain.groups[:-1]:
        lo, hi = group_interval(group, lo, hi)
        lo, hi = lo.clamp(min=0), hi.clamp(min=0)
    lam, const = group_backward(chain.groups[-1], c, c.new_zeros(c.shape[:2]))  # lam = A^T c
    lam = lam.flatten(2)
    lo, hi = lo.flatten(1).unsqueeze(-1), hi.flatten(1).unsqueeze(-1)
    return const + lam.clamp(min=0).matmul(lo).squeeze(-1) + lam.clamp(max=0).matmul(hi).squeeze(-1)
