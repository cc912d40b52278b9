"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) for any score function.

    x = rr.sampling.annealed_langevin(score, x0, sigmas, steps=100, eps=2e-5)

`score(x, sigma)` estimates grad_x log p_sigma(x), the score of the data blurred with N(0, sigma^2 I);
`sigmas` is decreasing (a geometric sequence, `geometric_sigmas`). At each level i the step is
alpha_i = eps * sigma_i^2 / sigma_L^2 (the "signal-to-noise" of each step kept constant across levels),
and each of the `steps` updates is

    x <- x + alpha_i / 2 * score(x, sigma_i) + sqrt(alpha_i) * z,     z ~ N(0, I).

`denoise=True` ends with one step of Tweedie's formula, x + sigma_L^2 * score(x, sigma_L) (the expected
clean image given x; Song & Ermon 2020, Jolicoeur-Martineau et al. 2021), which removes the last level's
noise. A noise-conditional score network (`robustrep train ncsn`) and a denoising autoencoder's score both
plug in here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import validate
from .errors import UserError

Score = Callable[[torch.Tensor, float], torch.Tensor]


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> torch.Tensor:
    """`levels` noise levels from `sigma_max` down to `sigma_min`, equally spaced in log scale."""
    validate.positive(sigma_max, "sigma_max")
    validate.positive(sigma_min, "sigma_min")
    validate.positive(levels, "levels", integer=True, high=100_000)
    if sigma_min > sigma_max:
        raise UserError(f"sigma_min ({sigma_min}) must not exceed sigma_max ({sigma_max})")
    if levels == 1:
        return torch.tensor([float(sigma_min)])
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), levels, dtype=torch.float64).float()


def _check_sigmas(sigmas) -> list[float]:
    values = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    if not values:
        raise UserError("sigmas must hold at least one noise level")
    for s in values:
        validate.positive(s, "each sigma")
    if any(a < b for a, b in zip(values, values[1:])):
        raise UserError("sigmas must be non-increasing (from the largest noise level to the smallest)")
    return values


@torch.no_grad()
def annealed_langevin(
    score: Score,
    x0: torch.Tensor,
    sigmas,
    *,
    steps: int = 100,
    eps: float = 2e-5,
    denoise: bool = True,
    clamp: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run annealed Langevin dynamics from `x0` through the levels `sigmas`; returns the last iterate
    (denoised with Tweedie's formula when `denoise`, clamped to [0, 1] when `clamp`)."""
    levels = _check_sigmas(sigmas)
    validate.positive(steps, "steps", integer=True, high=10**6)
    validate.positive(eps, "eps")
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point() or not torch.isfinite(x0).all():
        raise UserError("x0 must be a floating-point tensor of finite values")
    x = x0.clone()
    last = levels[-1]
    for sigma in levels:
        alpha = eps * (sigma / last) ** 2
        for _ in range(steps):
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + 0.5 * alpha * score(x, sigma) + math.sqrt(alpha) * z
    if denoise:
        x = x + last**2 * score(x, last)
    return x.clamp(0, 1) if clamp else x


def stationary_variance(data_variance: float, alpha: float) -> float:
    """The exact variance that Langevin steps of size `alpha` settle at on N(mu, v) with the exact score
    -(x - mu) / v: the chain x' - mu = (1 - alpha / (2v)) (x - mu) + sqrt(alpha) z is AR(1), so
    V = alpha / (1 - (1 - alpha / (2v))^2) = v / (1 - alpha / (4v)). (The discretisation bias: V -> v as
    alpha -> 0.)"""
    return data_variance / (1 - alpha / (4 * data_variance))
