"""Divergences between diagonal Gaussians (MATH.md 2 and 3). Inputs are [..., d]; outputs sum over
the last (latent) dimension and keep the rest, e.g. [B, d] -> [B]."""

from __future__ import annotations

import math

import torch


def kl_standard_normal_per_dim(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_k, var_k) || N(0, 1)) = 1/2 (mu_k^2 + var_k - log var_k - 1) of each latent dimension k."""
    return 0.5 * (mu.pow(2) + var - var.log() - 1.0)


def kl_standard_normal(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag var) || N(0, I)) = 1/2 sum_k (mu_k^2 + var_k - log var_k - 1)."""
    return kl_standard_normal_per_dim(mu, var).sum(-1)


def w2_squared(mu_a: torch.Tensor, var_a: torch.Tensor, mu_b: torch.Tensor, var_b: torch.Tensor) -> torch.Tensor:
    """Squared 2-Wasserstein distance: sum_k (ma_k - mb_k)^2 + (sqrt(va_k) - sqrt(vb_k))^2."""
    return ((mu_a - mu_b).pow(2) + (var_a.sqrt() - var_b.sqrt()).pow(2)).sum(-1)


def _u_minus_one(var_a, var_b, gamma):
    """u - 1 with u = sqrt(1 + 4 gamma^2 va vb), written as 4 gamma^2 va vb / (u + 1) (no cancellation)."""
    t = 4.0 * gamma**2 * var_a * var_b
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
    wd = (
        0.5 * gamma * ((mu_a - mu_b).pow(2) + var_a + var_b)
        - 0.5 * u_minus_one
        + 0.5 * torch.log(u_minus_one + 2.0)
        - 0.5 * torch.log(2.0 * var_a * var_b)
        - math.log(2.0 * math.pi)
        - 1.0
    )
    return wd.sum(-1)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, obs_var: float) -> torch.Tensor:
    """-log N(x; mean, v I) per example: ||x - mean||^2 / (2v) + (D/2) log(2 pi v), summed over data dims."""
    dims = x[0].numel()
    sq = (x - mean).pow(2).flatten(1).sum(1)
    return sq / (2.0 * obs_var) + 0.5 * dims * math.log(2.0 * math.pi * obs_var)


def bernoulli_nll(x: torch.Tensor, mean: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """-log prod_i m_i^x_i (1 - m_i)^(1 - x_i) per example: -sum_i [x_i log m_i + (1 - x_i) log(1 - m_i)],
    summed over data dims (the Bernoulli decoder of Kingma & Welling 2014, App. C.1, and of Higgins et
    al. 2017 on dSprites); the mean m is clamped to [eps, 1 - eps] so a saturated sigmoid costs a finite
    amount."""
    m = mean.clamp(eps, 1.0 - eps)
    return -(x * m.log() + (1.0 - x) * (1.0 - m).log()).flatten(1).sum(1)


# Kernels and the maximum mean discrepancy between two samples (InfoVAE, WAE-MMD). Scale C of the
# inverse multiquadratic kernel follows Tolstikhin et al. 2018, Sec. 4: C = 2 d sigma_z^2 for a prior
# N(0, sigma_z^2 I_d), summed over the scales C * s of KERNEL_SCALES ("we used several values of C").
KERNEL_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def kernel_matrix(
    a: torch.Tensor, b: torch.Tensor, kernel: str = "imq", scale: float = 1.0, scales=KERNEL_SCALES
) -> torch.Tensor:
    """[n, m] matrix of k(a_i, b_j), summed over `scales` (multipliers of `scale`, the base C):
    imq  k(x, y) = C / (C + ||x - y||^2)      (inverse multiquadratics, Tolstikhin et al. 2018)
    rbf  k(x, y) = exp(-||x - y||^2 / C)      (Gaussian, Zhao et al. 2019 with C = 2 sigma^2)"""
    d2 = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)  # exact differences, no |a|^2 + |b|^2 - 2ab cancellation
    total = torch.zeros_like(d2)
    for s in scales:
        c = scale * s
        total = total + (c / (c + d2) if kernel == "imq" else torch.exp(-d2 / c))
    return total


def mmd_squared(
    a: torch.Tensor,
    b: torch.Tensor,
    kernel: str = "imq",
    scale: float = 1.0,
    scales=KERNEL_SCALES,
    unbiased: bool = True,
) -> torch.Tensor:
    """MMD_k^2 between samples a [n, d] and b [m, d] (Gretton et al. 2012, eq. 3 unbiased; eq. 5 biased):
        1/(n(n-1)) sum_{i != j} k(a_i, a_j) + 1/(m(m-1)) sum_{i != j} k(b_i, b_j) - 2/(nm) sum_{i,j} k(a_i, b_j)
    The unbiased form is WAE-MMD's penalty (Tolstikhin et al. 2018, Algorithm 2); the biased form
    (diagonals kept, 1/n^2) is never negative."""
    n, m = len(a), len(b)
    kaa = kernel_matrix(a, a, kernel, scale, scales)
    kbb = kernel_matrix(b, b, kernel, scale, scales)
    kab = kernel_matrix(a, b, kernel, scale, scales)
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError("the unbiased MMD needs at least two points in each sample")
        saa = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
        sbb = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    else:
        saa, sbb = kaa.mean(), kbb.mean()
    return saa + sbb - 2.0 * kab.mean()
