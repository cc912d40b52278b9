"""Wong & Kolter (2018) dual network bounds for ReLU networks over the l_inf ball (MATH.md 6).

For objective vectors c (rows of C), nu_k = -c, and walking the network backwards
(nuhat_i = W_i^T nu_{i+1}; nu_i = D_i nuhat_i for i >= 2), Theorem 1 gives the lower bound

    J(x, nu) = - sum_{i=1}^{k-1} nu_{i+1}^T b_i - x^T nuhat_1 - eps ||nuhat_1||_1
               + sum_{i=2}^{k-1} sum_{j in I_i} l_ij [nu_ij]_+          <=  min_{||x'-x||_inf <= eps} c^T z_k.

The pre-activation bounds l_i, u_i that define D_i come from the same formula with c = +-e_j for every
unit j of layer i, layer after layer (Algorithm 1, "all units at once"). Algorithm 1 propagates the
identity *forwards* from the input; here each layer's identity is walked *backwards* to the input.
Both compute the same products W_1^T D_2 W_2^T ... (their transposes), so the bounds are the same
numbers; the backward order touches n_i x n_{i-1} matrices instead of n_in x n_i ones and needs no
per-ReLU side terms, which is cheaper when the layers narrow with depth (as classifiers do).

The input set is the l_inf ball, or the ball intersected with a pixel box (`inputs.InputSet`): the
input term becomes -c^T nuhat_1 - r^T |nuhat_1| for the box of centre c and radius r. Without the box
(the paper's and convex_adversarial's default) the bound holds on the whole ball.

CROWN (Zhang et al. 2018) is the same backward walk with each unstable ReLU's lower line chosen per
unit (`ReLUBounds(adaptive=True)`); its walk is no longer linear in nu, so the upper bounds of a layer
take a second walk with +c.
"""

from __future__ import annotations

import math

import torch

from .inputs import InputSet
from .layers import Chain, ReLUBounds, ReshapeOp, group_backward, group_interval

MAX_ELEMENTS = 2**26  # per tensor when bounding without gradients (256 MB in float32)


def _first_linear(chain: Chain, x: torch.Tensor) -> torch.Tensor:
    """A_1 x: the first group's linear part (no bias) applied to x, so that x^T nuhat_1 = (A_1 x)^T nu_2
    is read off the (narrower) output of the first layer instead of the input."""
    for op in chain.groups[0]:
        x = op.linear(x)
    return x


def _backward(chain: Chain, relus: list[ReLUBounds], top: int, nu: torch.Tensor, inp: InputSet, wc: torch.Tensor):
    """Walk nu = nu_{top+1} (the dual variable at the output of groups[top-1]) back to the input.

    Returns (lin, norm, pos, neg), each [B, K], where, with nu_{top+1} = -c and the input set's centre
    c0 and radius r (wc = A_1 c0),
        lin = - sum nu_{i+1}^T b_i - c0^T nuhat_1,   norm = r^T |nuhat_1|,
        pos = sum_I l [nu]_+,                        neg = sum_I l [-nu]_+,
    so that the lower bound on c^T z is lin - norm + pos and, for a linear walk (fixed slopes), the upper
    bound on c^T z (the same walk for -c) is lin + norm - neg.
    """
    acc = nu.new_zeros(nu.shape[:2])
    pos = neg = 0.0
    for i in reversed(range(top)):
        if i == 0:  # c0^T nuhat_1 = (A_1 c0)^T nu_2
            c_dot = nu.flatten(2).matmul(wc.flatten(1).unsqueeze(-1)).squeeze(-1)
        nu, acc = group_backward(chain.groups[i], nu, acc)  # nuhat_{i+1}
        if i > 0:
            nu, p, n = relus[i - 1].backward(nu)  # nu_{i+1} from nuhat_{i+1}
            pos, neg = pos + p, neg + n
    lin = -acc - c_dot  # broadcast over B
    norm = inp.norm(nu).expand_as(lin)  # r^T |nuhat_1|
    return lin, norm, torch.zeros_like(lin) + pos, torch.zeros_like(lin) + neg  # pos, neg may still be 0.0


def layer_bounds(
    chain: Chain, inp: InputSet, adaptive: bool = False, wc: torch.Tensor | None = None
) -> list[ReLUBounds]:
    """Pre-activation bounds of every ReLU layer (Algorithm 1; CROWN's when `adaptive`), in order."""
    x = inp.centre
    wc = _first_linear(chain, x) if wc is None else wc
    batch = len(x)
    relus: list[ReLUBounds] = []
    for top in range(1, len(chain.groups)):
        shape = chain.shapes[top - 1]
        if top == 1 and sum(not isinstance(op, ReshapeOp) for op in chain.groups[0]) <= 1:
            # One affine map from the input: Algorithm 1's initialisation, x^T W^T + b^T -+ eps ||W^T||_{1,:},
            # is the interval image of the box (centre W x + b, radius eps |W| 1); no identity to transpose.
            relus.append(ReLUBounds(*group_interval(chain.groups[0], *inp.box()), adaptive=adaptive))
            continue
        n = math.prod(shape)
        eye = -torch.eye(n, dtype=x.dtype, device=x.device).reshape(1, n, *shape)  # nu = -c, c = e_j
        if adaptive:  # the walk is not linear in nu: +c (for the upper bounds) walks too
            eye = torch.cat([eye, -eye], 1)
        # Without a graph to keep, walk the units in blocks so that no [B, rows, width] tensor exceeds
        # MAX_ELEMENTS (the Wong-Kolter conv net at batch 100 would otherwise need several GB).
        widest = max(math.prod(s) for s in [chain.input_shape, *chain.shapes[:top]])
        rows = len(eye[0]) if torch.is_grad_enabled() else max(1, MAX_ELEMENTS // (batch * widest))
        parts = [_backward(chain, relus, top, eye[:, i : i + rows], inp, wc) for i in range(0, len(eye[0]), rows)]
        lin, norm, pos, neg = (torch.cat([p[k] for p in parts], 1) for k in range(4))
        if adaptive:  # upper bound on z_j = -(lower bound on -z_j)
            lower = (lin - norm + pos)[:, :n]
            upper = -(lin - norm + pos)[:, n:]
        else:
            lower = lin - norm + pos
            upper = lin + norm - neg
        relus.append(ReLUBounds(lower.reshape(batch, *shape), upper.reshape(batch, *shape), adaptive=adaptive))
    return relus


def dual_bounds(
    chain: Chain, inp: InputSet, c: torch.Tensor, relus: list[ReLUBounds] | None = None, adaptive: bool = False
) -> torch.Tensor:
    """Lower bounds J(x, nu) (Theorem 1) on c^T z_k for the objectives c [B, K, *out_shape] -> [B, K]."""
    wc = _first_linear(chain, inp.centre)
    if relus is None:
        relus = layer_bounds(chain, inp, adaptive, wc)
    lin, norm, pos, _ = _backward(chain, relus, len(chain.groups), -c, inp, wc)
    return lin - norm + pos
