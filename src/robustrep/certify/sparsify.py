"""Sparsification defenses (Gopalakrishnan et al. 2018; seed 000, MATH.md 6).

(a) `SparsifyingFrontEnd`: keep the K largest-magnitude coefficients of each image channel in an
    orthonormal 2-D basis (DCT-II or Haar wavelets) and map back; an l_inf attack's energy is
    attenuated by about K/N (their Fig. 1).
(b) Network sparsity: every weight row w_ij of layer j constrained to ||w_ij||_1 <= gamma_j, by Euclidean
    projection onto the l1 ball (Duchi et al. 2008, Fig. 1) -- `project_l1_ball`, `project_weights_l1_`,
    or `L1Rows`, a parametrization that keeps the constraint true at every forward pass.
(c) Theorem 2: for ||e||_inf <= eps at the input, the perturbation at layer j is l_inf-bounded by
    eps * prod_{l <= j} gamma_l (ReLU is 1-Lipschitz per coordinate, Flatten moves nothing).
    `theorem2_bounds` evaluates it with gamma_l read off the weights (the largest row l1 norm; for a
    convolution, the largest kernel l1 norm, which bounds every row of its matrix), so it certifies
    any network, constrained or not.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UserError

BASES = ("dct", "haar")


def dct_matrix(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The orthonormal DCT-II matrix [n, n]: row k is the k-th basis vector."""
    i = torch.arange(n, dtype=torch.float64)
    k = i[:, None]
    m = torch.cos(math.pi * (2 * i[None, :] + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.to(dtype=dtype, device=device)


def haar_matrix(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The orthonormal multi-level Haar matrix [n, n]: averages/differences of pairs, recursively on the
    averages while their number is even (28 -> 14 -> 7: two levels for MNIST)."""
    m = torch.eye(n, dtype=torch.float64)
    size = n
    while size % 2 == 0 and size >= 2:
        half = size // 2
        step = torch.zeros(size, size, dtype=torch.float64)
        idx = torch.arange(half)
        step[idx, 2 * idx] = step[idx, 2 * idx + 1] = 1 / math.sqrt(2)  # averages
        step[half + idx, 2 * idx] = 1 / math.sqrt(2)  # details
        step[half + idx, 2 * idx + 1] = -1 / math.sqrt(2)
        block = torch.eye(n, dtype=torch.float64)
        block[:size, :size] = step
        m = block @ m
        size = half
    return m.to(dtype=dtype, device=device)


class SparsifyingFrontEnd(nn.Module):
    """x -> B^T top_K(B x B'^T) B': project each channel onto its K largest coefficients.

    Shapes: [N, C, H, W] -> [N, C, H, W]. `k` is the number of coefficients kept per channel
    (1 <= k <= H W). Differentiable almost everywhere (the support is piecewise constant), so gradient
    attacks see it as the linear projection onto the chosen support.

        >>> net = nn.Sequential(SparsifyingFrontEnd(k=50, basis="dct"), classifier)
    """

    def __init__(self, k: int, basis: str = "dct"):
        super().__init__()
        if basis not in BASES:
            raise UserError(f"unknown basis {basis!r}: choose one of {', '.join(BASES)}")
        if int(k) < 1:
            raise UserError(f"the front end needs k >= 1 coefficients, got {k}")
        self.k, self.basis = int(k), basis
        self._cache: dict = {}

    def matrices(self, h: int, w: int, dtype, device):
        key = (h, w, dtype, device)
        if key not in self._cache:
            make = dct_matrix if self.basis == "dct" else haar_matrix
            with torch.inference_mode(False):  # a first call under inference_mode must not cache
                self._cache[key] = (make(h, dtype, device), make(w, dtype, device))  # tensors autograd refuses
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise UserError(f"the front end takes images [N, C, H, W], got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if self.k > h * w:
            raise UserError(f"k={self.k} exceeds the {h * w} coefficients of a {h}x{w} image")
        bh, bw = self.matrices(h, w, x.dtype, x.device)
        coef = bh @ x @ bw.T  # analysis
        flat = coef.flatten(-2)
        keep = flat.abs().topk(self.k, dim=-1).indices
        mask = torch.zeros_like(flat).scatter_(-1, keep, 1.0)
        return bh.T @ (flat * mask).view_as(coef) @ bw  # synthesis (B orthonormal)

    def extra_repr(self) -> str:
        return f"k={self.k}, basis={self.basis!r}"


def project_l1_ball(v: torch.Tensor, radius) -> torch.Tensor:
    """Euclidean projection of each row of v [R, n] onto {w : ||w||_1 <= radius} (Duchi et al. 2008).

    Rows already inside are returned unchanged. `radius` is a float or a tensor [R]."""
    if v.dim() != 2:
        raise UserError(f"project_l1_ball takes a matrix [rows, n], got shape {tuple(v.shape)}")
    radius = torch.as_tensor(radius, dtype=v.dtype, device=v.device).expand(v.shape[0])
    if (radius <= 0).any():
        raise UserError("the l1 radius gamma must be positive")
    a = v.abs()
    u = a.sort(dim=1, descending=True).values
    css = u.cumsum(1) - radius[:, None]
    j = torch.arange(1, v.shape[1] + 1, dtype=v.dtype, device=v.device)
    rho = (u - css / j > 0).to(v.dtype).cumsum(1).argmax(1, keepdim=True)  # last index where it holds
    theta = (css.gather(1, rho) / (rho + 1).to(v.dtype)).clamp(min=0)
    inside = a.sum(1, keepdim=True) <= radius[:, None]
    return torch.where(inside, v, v.sign() * (a - theta).clamp(min=0))


def _affine_layers(net: nn.Module):
    return [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _rows(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1)


def _gammas(layers, gamma) -> list[float]:
    if isinstance(gamma, (int, float)):
        return [float(gamma)] * len(layers)
    gamma = [float(g) for g in gamma]
    if len(gamma) != len(layers):
        raise UserError(f"got {len(gamma)} radii gamma for {len(layers)} Linear/Conv2d layers")
    return gamma


@torch.no_grad()
def project_weights_l1_(net: nn.Module, gamma) -> nn.Module:
    """Project, in place, every row of every Linear/Conv2d weight (a conv row: one output channel's
    kernel) onto the l1 ball of radius gamma_j (a float for all layers, or one per layer)."""
    layers = _affine_layers(net)
    for layer, g in zip(layers, _gammas(layers, gamma)):
        layer.weight.copy_(project_l1_ball(_rows(layer.weight), g).view_as(layer.weight))
    return net


class L1Rows(nn.Module):
    """A parametrization W = Proj_{||row||_1 <= gamma}(V): the constraint holds at every forward pass,
    whatever the optimiser does (`torch.nn.utils.parametrize.register_parametrization`)."""

    def __init__(self, gamma: float):
        super().__init__()
        self.gamma = float(gamma)

    def forward(self, weight):
        return project_l1_ball(_rows(weight), self.gamma).view_as(weight)


def constrain_l1_(net: nn.Module, gamma) -> nn.Module:
    """Register `L1Rows(gamma_j)` on the weight of every Linear/Conv2d layer of `net`."""
    from torch.nn.utils import parametrize

    layers = _affine_layers(net)
    for layer, g in zip(layers, _gammas(layers, gamma)):
        parametrize.register_parametrization(layer, "weight", L1Rows(g))
    return net


def row_l1_norms(net: nn.Module) -> list[float]:
    """gamma_l as the weights have it: the largest l1 norm of a row of each Linear/Conv2d layer."""
    with torch.no_grad():
        return [float(_rows(m.weight).abs().sum(1).max()) for m in _affine_layers(net)]


def theorem2_bounds(net: nn.Module, eps: float) -> list[float]:
    """Theorem 2: the l_inf bound eps * prod_{l <= j} gamma_l on the perturbation of the output of each
    Linear/Conv2d layer j (in order), for any input perturbation with ||e||_inf <= eps."""
    if eps < 0:
        raise UserError(f"eps must be >= 0, got {eps}")
    out, prod = [], float(eps)
    for g in row_l1_norms(net):
        prod *= g
        out.append(prod)
    return out
