"""The public face of `rr.certify`: margin bounds, certified accuracy and the robust loss.

    >>> b = margin_bounds(net, x, y, eps=0.1, method="dual")   # [B, C], lower bounds on z_y - z_j
    >>> certified = (b.scatter(1, y[:, None], float("inf")) > 0).all(1)
    >>> loss = robust_loss(net, x, y, eps=0.1)                 # Wong & Kolter eq. 14, differentiable

`net` is an nn.Sequential of Linear, Conv2d, ReLU, Flatten (or a model whose `.net` is one); x a float
batch [B, ...] on the network's device; eps >= 0, a float or a tensor [B]; input_bounds None (the whole
l_inf ball) or (lo, hi), the pixel range the ball is clipped to (e.g. (0, 1)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..utils import check_labels
from . import dual, ibp
from . import projections as proj
from .inputs import InputSet, check_input_bounds
from .layers import as_sequential, parse
from .sparsify import theorem2_bounds

METHODS = ("dual", "crown", "ibp", "theorem2")


def check_projections(projections, method: str = "dual"):
    """None (exact bounds) or a whole number k >= 1 of random projections, for the dual method only."""
    if projections is None:
        return None
    if isinstance(projections, bool) or not isinstance(projections, int) or projections < 1:
        raise UserError(f"projections must be None (exact) or a whole number >= 1, got {projections!r}")
    if method != "dual":
        raise UserError(
            f"random projections estimate the dual network's layer bounds: use method 'dual', not {method!r}"
        )
    return int(projections)


def _check(net, x, y, eps, method, input_bounds=None):
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
    check_input_bounds(input_bounds, x)
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


def margin_bounds(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps,
    method: str = "dual",
    input_bounds=None,
    projections: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Lower bounds on z_y(x') - z_j(x') over ||x' - x||_inf <= eps (and lo <= x' <= hi with
    input_bounds=(lo, hi)): [B, C], exactly 0 at j = y.

    method "dual": Wong & Kolter's dual network (Theorem 1 with Algorithm 1's layer bounds);
    "crown": the same backward bounds with CROWN's adaptive lower slopes (Zhang et al. 2018);
    "ibp": interval bound propagation; "theorem2": margin at x minus twice the Theorem-2 bound on the
    logits' l_inf perturbation (Gopalakrishnan et al.; loose unless the weights are l1-constrained; it
    ignores input_bounds, which only shrink the set, so it stays sound).
    projections=k (dual only): the layer bounds *estimated* with k Cauchy projections (Wong et al. 2018),
    drawn from `generator`; an estimate for training, not a certificate.
    Differentiable in the network's parameters (and in x)."""
    seq = _check(net, x, y, eps, method, input_bounds)
    projections = check_projections(projections, method)
    input_bounds = check_input_bounds(input_bounds)
    chain = parse(seq, x)  # also for "theorem2": a layer outside the frame (a front end) voids it
    if len(chain.shapes[-1]) != 1:
        raise UserError(f"the network must end in logits [batch, classes], got [batch, {chain.shapes[-1]}]")
    num_classes = chain.shapes[-1][0]
    if int(y.max()) >= num_classes or int(y.min()) < 0:
        raise UserError(f"labels must lie in [0, {num_classes}), the network's classes")
    c = margin_objectives(y, num_classes, x.dtype)
    inp = InputSet(x, eps, input_bounds)
    if method == "dual":
        relus = None if projections is None else proj.layer_bounds(chain, inp, projections, generator)
        return dual.dual_bounds(chain, inp, c, relus)
    if method == "crown":
        return dual.dual_bounds(chain, inp, c, adaptive=True)
    if method == "ibp":
        return ibp.ibp_bounds(chain, inp, c)
    if isinstance(eps, torch.Tensor):
        raise UserError("method 'theorem2' takes a single float eps")
    logits = seq(x)
    margin = logits.gather(1, y[:, None]) - logits
    return (margin - 2 * theorem2_bounds(seq, float(eps))[-1]).scatter(1, y[:, None], 0.0)


def layer_bounds(
    net: nn.Module,
    x: torch.Tensor,
    eps,
    method: str = "dual",
    input_bounds=None,
    projections: int | None = None,
    generator: torch.Generator | None = None,
):
    """Pre-activation bounds (l, u), each [B, *S], of every ReLU layer, in order (estimates with
    projections=k)."""
    seq = _check(net, x, torch.zeros(len(x), dtype=torch.long, device=x.device), eps, method, input_bounds)
    projections = check_projections(projections, method)
    chain = parse(seq, x)
    inp = InputSet(x, eps, check_input_bounds(input_bounds))
    if method == "dual" and projections is not None:
        return [(r.lower, r.upper) for r in proj.layer_bounds(chain, inp, projections, generator)]
    if method in ("dual", "crown"):
        return [(r.lower, r.upper) for r in dual.layer_bounds(chain, inp, adaptive=method == "crown")]
    if method == "ibp":
        return ibp.layer_bounds(chain, inp)
    raise UserError("layer_bounds supports methods 'dual', 'crown' and 'ibp'")


def certified(bounds: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean [B]: every margin bound z_y - z_j (j != y) is strictly positive."""
    return (bounds.scatter(1, y[:, None], float("inf")) > 0).all(1)


def certified_accuracy(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps,
    method: str = "dual",
    batch_size: int = 100,
    progress: bool = False,
    input_bounds=None,
) -> float:
    """Fraction of points whose prediction provably cannot change within the eps ball (such a point is
    also classified correctly at x itself). Returns a float in [0, 1]. Always the exact bounds."""
    _check(net, x, y, eps, method, input_bounds)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    starts = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"certify {method}", unit="batch", leave=False)
    total = 0
    with torch.no_grad():
        for i in starts:
            e = eps[i : i + batch_size] if isinstance(eps, torch.Tensor) and eps.dim() else eps
            b = margin_bounds(net, x[i : i + batch_size], y[i : i + batch_size], e, method, input_bounds)
            total += int(certified(b, y[i : i + batch_size]).sum())
    return total / len(x)


def robust_loss(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps,
    method: str = "dual",
    reduction: str = "mean",
    input_bounds=None,
    projections: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Wong & Kolter's robust cross-entropy (2018, eq. 14): CE(-J(x, e_y - e_j)_j, y), where -J_j is an
    upper bound on z_j - z_y over the ball; an upper bound on the worst-case cross-entropy.

    projections=k (method "dual"): the layer bounds estimated with k Cauchy random projections (Wong,
    Schmidt, Metzen & Kolter 2018; the last layer's objective stays exact), much cheaper on wide layers;
    the loss is then an estimate of the exact one. None: exact."""
    if reduction not in ("mean", "sum", "none"):
        raise UserError(f"reduction must be mean, sum or none, got {reduction!r}")
    bounds = margin_bounds(net, x, y, eps, method, input_bounds, projections, generator)
    return F.cross_entropy(-bounds, y, reduction=reduction)


def robust_error_bound(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps,
    method: str = "dual",
    batch_size: int = 100,
    progress: bool = False,
    input_bounds=None,
) -> float:
    """1 - certified accuracy: the paper's "robust error bound" (Table 1)."""
    return 1.0 - certified_accuracy(net, x, y, eps, method, batch_size, progress, input_bounds)
