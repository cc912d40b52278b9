"""The Gaussian noise schedule of denoising diffusion (Ho et al. 2020) as one small object, and its samplers.

Forward process (t = 0 .. T-1 here for the paper's 1 .. T):
    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),         abar_t = prod_{s <= t} (1 - beta_s)
Posterior (Ho et al. eqs. 6-7):
    q(x_{t-1} | x_t, x_0) = N(mu~, beta~_t I),
    mu~ = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
    beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t.
A reverse step puts the model's x_0 estimate, x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), into the
posterior (this is eq. 11's mean) with the posterior variance beta~_t ("the correct posterior variance").
The strided sampler is DDIM (Song, Meng & Ermon 2021, eq. 12) on a subsequence of the T steps; eta = 0 is
deterministic, eta = 1 has the ancestral step's variance.

    schedule = NoiseSchedule.linear(1000, 1e-4, 0.02)
    x_t = schedule.add_noise(x_0, t, noise)
    x = sample_strided(eps_model, (64, 1, 32, 32), schedule, steps=50)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import validate
from .errors import UserError

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t as int64 [N]) -> predicted noise


class NoiseSchedule:
    """betas_t and every quantity derived from them (kept in float64 and cast at use)."""

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or len(betas) == 0 or not torch.isfinite(betas).all():
            raise UserError("betas must be a non-empty 1-d sequence of finite numbers")
        if (betas <= 0).any() or (betas >= 1).any():
            raise UserError("every beta must lie in (0, 1)")
        self.betas = betas
        self.alphas = 1 - betas
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        self.posterior_variance = betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)

    @classmethod
    def linear(cls, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """Ho et al.'s schedule: betas linear from beta_start to beta_end over `timesteps` steps."""
        validate.positive(timesteps, "timesteps", integer=True, high=100_000)
        validate.probability(beta_start, "beta_start", open_low=True, open_high=True)
        validate.probability(beta_end, "beta_end", open_low=True, open_high=True)
        if beta_end < beta_start:
            raise UserError(f"beta_end ({beta_end}) must be >= beta_start ({beta_start})")
        return cls(torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64))

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    def _at(self, values: torch.Tensor, t, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped to broadcast over a batch like `like` ([N, ...]); t an int or int64 [N]."""
        t = torch.as_tensor(t, device=values.device)
        v = values[t].to(device=like.device, dtype=like.dtype)
        return v.view(-1, *([1] * (like.dim() - 1))) if v.dim() else v

    def add_noise(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """A draw of q(x_t | x_0) with the given standard normal `noise`."""
        return self._at(self.alpha_bar.sqrt(), t, x0) * x0 + self._at((1 - self.alpha_bar).sqrt(), t, x0) * noise

    def predict_x0(self, xt: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        return (xt - self._at((1 - self.alpha_bar).sqrt(), t, xt) * eps) / self._at(self.alpha_bar.sqrt(), t, xt)

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0)."""
        ab, ab_prev = self.alpha_bar, self.alpha_bar_prev
        c0 = self._at(ab_prev.sqrt() * self.betas / (1 - ab), t, xt)
        ct = self._at(self.alphas.sqrt() * (1 - ab_prev) / (1 - ab), t, xt)
        return c0 * x0 + ct * xt, self._at(self.posterior_variance, t, xt)

    def step_distribution(self, eps: torch.Tensor, t: int, xt: torch.Tensor, clip: bool = False):
        """Mean and variance of the reverse step p(x_{t-1} | x_t) given the predicted noise `eps`."""
        x0 = self.predict_x0(xt, t, eps)
        if clip:  # data live in [-1, 1]; clipping the estimate keeps early steps from overshooting
            x0 = x0.clamp(-1, 1)
        return self.posterior(x0, xt, t)

    def step(self, eps, t: int, xt, generator: torch.Generator | None = None, clip: bool = False) -> torch.Tensor:
        """One ancestral step x_t -> x_{t-1} (no noise added at t = 0, whose posterior variance is 0)."""
        mean, var = self.step_distribution(eps, t, xt, clip)
        if t == 0:
            return mean
        return mean + var.sqrt() * torch.randn(xt.shape, generator=generator, device=xt.device, dtype=xt.dtype)

    def ddim_step(self, eps, t: int, t_prev: int, xt, eta: float = 0.0, generator=None, clip: bool = False):
        """x_t -> x_{t_prev} (t_prev < t; -1 means the data) by DDIM's eq. 12."""
        ab_t = float(self.alpha_bar[t])
        ab_prev = float(self.alpha_bar[t_prev]) if t_prev >= 0 else 1.0
        x0 = self.predict_x0(xt, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (xt - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)  # the noise consistent with the clipped x0
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
        x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * torch.randn(xt.shape, generator=generator, device=xt.device, dtype=xt.dtype)
        return x


def _start(shape, generator, device) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator, device=device)


@torch.no_grad()
def sample_ancestral(
    eps_model: EpsModel,
    shape,
    schedule: NoiseSchedule,
    generator=None,
    device="cpu",
    clip: bool = True,
    x_T: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ho et al.'s Algorithm 2: T reverse steps from x_T ~ N(0, I)."""
    x = _start(shape, generator, device) if x_T is None else x_T
    for t in reversed(range(schedule.timesteps)):
        eps = eps_model(x, torch.full((len(x),), t, dtype=torch.long, device=x.device))
        x = schedule.step(eps, t, x, generator, clip)
    return x


def strided_timesteps(timesteps: int, steps: int) -> list[int]:
    """`steps` timesteps from T-1 down to 0, evenly spaced."""
    validate.positive(steps, "steps", integer=True, high=timesteps)
    return sorted({round(i * (timesteps - 1) / max(steps - 1, 1)) for i in range(steps)}, reverse=True)


@torch.no_grad()
def sample_strided(
    eps_model: EpsModel,
    shape,
    schedule: NoiseSchedule,
    steps: int = 50,
    eta: float = 0.0,
    generator=None,
    device="cpu",
    clip: bool = True,
    x_T: torch.Tensor | None = None,
) -> torch.Tensor:
    """DDIM on `steps` of the T timesteps (eta 0: deterministic given x_T)."""
    validate.nonnegative(eta, "eta", high=1)
    ts = strided_timesteps(schedule.timesteps, steps)
    x = _start(shape, generator, device) if x_T is None else x_T
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        eps = eps_model(x, torch.full((len(x),), t, dtype=torch.long, device=x.device))
        x = schedule.ddim_step(eps, t, t_prev, x, eta, generator, clip)
    return x
