"""The public face of `rr.certify`: margin bounds, certified accuracy and the robust loss.

    >>> b = margin_bounds(net, x, y, eps=0.1, method="dual")   # [B, C], lower bounds on z_y - z_j
    >>> certified = (b.scatter(1, y[:, None], float("inf")) > 0).all(1)
    >>> loss = robust_loss(net, x, y, eps=0.1)                 # Wong & Kolter eq. 14, differentiable

`net` is an nn.Sequential of Linear, Conv2d, ReLU, Flatten (or a model whose `.net` is one); x a float
batch [B, ...] on the network's device; eps >= 0, a float or a tensor [B].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..utils import check_labels
from . import dual, ibp
from .layers import as_sequential, parse
from .sparsify import theorem2_bounds

METHODS = ("dual", "ibp", "theorem2")


def _check(net, x, y, eps, method):
    if method not in METHODS:
        raise UserError(f"unknown certification method {method!r}: choose one of {', '.join(METHODS)}")
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise UserError("x must be a float tensor [batch, ...]")
    if x.dim() < 2 or len(x) == 0:
        raise UserError(f"x must be a non-empty batch [batch, ...], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise UserError("x contains NaN or infinite values")
    check_labels(y, len(x), "y")
    if isinstance(eps, torch.Tensor):
        if eps.shape not in ((), (len(x),)) or not torch.isfinite(eps).all() or (eps < 0).any():
            raise UserError("eps must be a finite, non-negative float or tensor [batch]")
    elif not isinstance(eps, (int, float)) or not eps >= 0 or eps == float("inf"):
        raise UserError(f"eps must be a finite, non-negative number, got {eps!r}")
    seq = as_sequential(net)
    param = next(seq.parameters(), None)
    if param is not None and param.device != x.device:
        raise UserError(f"x is on {x.device} but the network on {param.device}: move one of them")
    if param is not None and param.dtype != x.dtype:
        raise UserError(f"x is {x.dtype} but the network {param.dtype}: convert one of them")
    return seq


def margin_objectives(y: torch.Tensor, num_classes: int, dtype=torch.float32) -> torch.Tensor:
    """c = e_y - e_j for every class j: [B, C, C], with a zero row at j = y."""
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def margin_bounds(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, method: str = "dual") -> torch.Tensor:
    """Lower bounds on z_y(x') - z_j(x') over ||x' - x||_inf <= eps: [B, C], exactly 0 at j = y.

    method "dual": Wong & Kolter's dual network (Theorem 1 with Algorithm 1's layer bounds);
    "ibp": interval bound propagation; "theorem2": margin at x minus twice the Theorem-2 bound on the
    logits' l_inf perturbation (Gopalakrishnan et al.; loose unless the weights are l1-constrained).
    Differentiable in the network's parameters (and in x)."""
    seq = _check(net, x, y, eps, method)
    chain = parse(seq, x)        # also for "theorem2": a layer outside the frame (a front end) voids it
    if len(chain.shapes[-1]) != 1:
        raise UserError(f"the network must end in logits [batch, classes], got [batch, {chain.shapes[-1]}]")
    num_classes = chain.shapes[-1][0]
    if int(y.max()) >= num_classes or int(y.min()) < 0:
        raise UserError(f"labels must lie in [0, {num_classes}), the network's classes")
    c = margin_objectives(y, num_classes, x.dtype)
    if method == "dual":
        return dual.dual_bounds(chain, x, eps, c)
    if method == "ibp":
        return ibp.ibp_bounds(chain, x, eps, c)
    if isinstance(eps, torch.Tensor):
        raise UserError("method 'theorem2' takes a single float eps")
    logits = seq(x)
    margin = logits.gather(1, y[:, None]) - logits
    return (margin - 2 * theorem2_bounds(seq, float(eps))[-1]).scatter(1, y[:, None], 0.0)


def layer_bounds(net: nn.Module, x: torch.Tensor, eps, method: str = "dual"):
    """Pre-activation bounds (l, u), each [B, *S], of every ReLU layer, in order."""
    seq = _check(net, x, torch.zeros(len(x), dtype=torch.long, device=x.device), eps, method)
    chain = parse(seq, x)
    if method == "dual":
        return [(r.lower, r.upper) for r in dual.layer_bounds(chain, x, eps)]
    if method == "ibp":
        return ibp.layer_bounds(chain, x, eps)
    raise UserError("layer_bounds supports methods 'dual' and 'ibp'")


def certified(bounds: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean [B]: every margin bound z_y - z_j (j != y) is strictly positive."""
    return (bounds.scatter(1, y[:, None], float("inf")) > 0).all(1)


def certified_accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, method: str = "dual",
                       batch_size: int = 100, progress: bool = False) -> float:
    """Fraction of points whose prediction provably cannot change within the eps ball (such a point is
    also classified correctly at x itself). Returns a float in [0, 1]."""
    _check(net, x, y, eps, method)
    starts = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f"certify {method}", unit="batch", leave=False)
    total = 0
    with torch.no_grad():
        for i in starts:
            e = eps[i:i + batch_size] if isinstance(eps, torch.Tensor) and eps.dim() else eps
            b = margin_bounds(net, x[i:i + batch_size], y[i:i + batch_size], e, method)
            total += int(certified(b, y[i:i + batch_size]).sum())
    return total / len(x)


def robust_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, method: str = "dual",
                reduction: str = "mean") -> torch.Tensor:
    """Wong & Kolter's robust cross-entropy (2018, eq. 14): CE(-J(x, e_y - e_j)_j, y), where -J_j is an
    upper bound on z_j - z_y over the ball; an upper bound on the worst-case cross-entropy."""
    if reduction not in ("mean", "sum", "none"):
        raise UserError(f"reduction must be mean, sum or none, got {reduction!r}")
    return F.cross_entropy(-margin_bounds(net, x, y, eps, method), y, reduction=reduction)


def robust_error_bound(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps, method: str = "dual",
                       batch_size: int = 100, progress: bool = False) -> float:
    """1 - certified accuracy: the paper's "robust error bound" (Table 1)."""
    return 1.0 - certified_accuracy(net, x, y, eps, method, batch_size, progress)
