"""Divergences between diagonal Gaussians (MATH.md 2 and 3). Inputs are [..., d]; outputs sum over
the last (latent) dimension and keep the rest, e.g. [B, d] -> [B]."""
from __future__ import annotations

import math

import torch


def kl_standard_normal(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag var) || N(0, I)) = 1/2 sum_k (mu_k^2 + var_k - log var_k - 1)."""
    return 0.5 * (mu.pow(2) + var - var.log() - 1.0).sum(-1)


def w2_squared(mu_a: torch.Tensor, var_a: torch.Tensor, mu_b: torch.Tensor, var_b: torch.Tensor) -> torch.Tensor:
    """Squared 2-Wasserstein distance: sum_k (ma_k - mb_k)^2 + (sqrt(va_k) - sqrt(vb_k))^2."""
    return ((mu_a - mu_b).pow(2) + (var_a.sqrt() - var_b.sqrt()).pow(2)).sum(-1)


def _u_minus_one(var_a, var_b, gamma):
    """u - 1 with u = sqrt(1 + 4 gamma^2 va vb), written as 4 gamma^2 va vb / (u + 1) (no cancellation)."""
    t = 4.0 * gamma ** 2 * var_a * var_b
    return t / ((1.0 + t).sqrt() + 1.0)


def entropic_w2_squared(mu_a, var_a, mu_b, var_b, gamma: float) -> torch.Tensor:
    """E(Za - Zb)^2 under the optimal Gaussian coupling of the entropic problem:
    sum_k (ma - mb)^2 + va + vb - (u - 1)/gamma. Tends to w2_squared as gamma -> infinity."""
    return ((mu_a - mu_b).pow(2) + var_a + var_b - _u_minus_one(var_a, var_b, gamma) / gamma).sum(-1)


def entropic_wasserstein(mu_a, var_a, mu_b, var_b, gamma: float) -> torch.Tensor:
    """WD_{2,gamma}(qa, qb): the minimum over Gaussian couplings of gamma/2 E(Za - Zb)^2 - H[Q(Za, Zb)]
    (Cemgil et al. 2020, eqs. 19-24 and Appendix C; MATH.md 3), summed over latent dimensions:

        WD_k = gamma/2 ((ma - mb)^2 + va + vb) - (u - 1)/2 + 1/2 log(u + 1) - 1/2 log(2 va vb) - log(2 pi) - 1
    """
    if gamma <= 0:
        raise ValueError("gamma must be positive")
    u_minus_one = _u_minus_one(var_a, var_b, gamma)
    wd = (0.5 * gamma * ((mu_a - mu_b).pow(2) + var_a + var_b) - 0.5 * u_minus_one
          + 0.5 * torch.log(u_minus_one + 2.0) - 0.5 * torch.log(2.0 * var_a * var_b)
          - math.log(2.0 * math.pi) - 1.0)
    return wd.sum(-1)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, obs_var: float) -> torch.Tensor:
    """-log N(x; mean, v I) per example: ||x - mean||^2 / (2v) + (D/2) log(2 pi v), summed over data dims."""
    dims = x[0].numel()
    sq = (x - mean).pow(2).flatten(1).sum(1)
    return sq / (2.0 * obs_var) + 0.5 * dims * math.log(2.0 * math.pi * obs_var)
