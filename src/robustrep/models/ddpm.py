"""Denoising diffusion (DDPM, Ho et al. 2020) with ancestral and DDIM samplers.

Denoising diffusion probabilistic model (Ho et al. 2020): a U-Net predicts the noise of
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, trained with the simple loss E ||eps - eps_theta(x_t, t)||^2
(their eq. 14) at t uniform; linear betas 1e-4..0.02 over T = 1000; images in [-1, 1] padded to a side
divisible by 8 (28 -> 32). Sampling: the ancestral sampler (Algorithm 2, the posterior variance) or DDIM
on a strided subsequence; keep EMA weights with `--ema-decay 0.9999` and sample with `--ema`.

    robustrep train ddpm --epochs 20 --ema-decay 0.999 --out runs/ddpm && robustrep sample runs/ddpm --ema
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import validate
from ..diffusion import NoiseSchedule, sample_ancestral, sample_strided
from ..nn.unet import UNet
from .registry import register

SAMPLERS = ("ddim", "ancestral")


def padding_for(side: int, multiple: int = 8) -> tuple[int, int]:
    total = -side % multiple
    return total // 2, total - total // 2


@register("ddpm")
class DDPM(nn.Module):
    HPARAM_HELP = {
        "width": "U-Net channels at full resolution (then 2x, 2x)",
        "timesteps": "diffusion steps T",
        "beta_start": "first beta",
        "beta_end": "last beta",
        "sampler": "ddim (strided, fast) or ancestral (all T steps)",
        "sample_steps": "steps of the ddim sampler",
        "eta": "ddim noise (0 deterministic, 1 ancestral-like)",
    }
    monitor = "loss"

    def __init__(
        self,
        input_shape=(1, 28, 28),
        width: int = 32,
        timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        sampler: str = "ddim",
        sample_steps: int = 50,
        eta: float = 0.0,
    ):
        super().__init__()
        self.input_shape = validate.image_shape(input_shape, "input_shape")
        width = validate.width(width, "width")
        self.schedule = NoiseSchedule.linear(timesteps, beta_start, beta_end)
        self.sampler = validate.choice(sampler, "sampler", SAMPLERS)
        self.sample_steps = validate.positive(sample_steps, "sample_steps", integer=True, high=timesteps)
        self.eta = validate.nonnegative(eta, "eta", high=1)
        c, h, w = self.input_shape
        self.pad_h, self.pad_w = padding_for(h), padding_for(w)
        self.net = UNet(c, width)

    def _pad(self, x):  # pad with -1, the background of [-1, 1] images
        return F.pad(x, (*self.pad_w, *self.pad_h), value=-1.0)

    def _crop(self, x):
        h, w = self.input_shape[1:]
        return x[..., self.pad_h[0] : self.pad_h[0] + h, self.pad_w[0] : self.pad_w[0] + w]

    def eps(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise of padded images x_t at integer timesteps t."""
        return self.net(xt, t)

    def loss(self, x, y=None):
        x0 = self._pad(2 * x - 1)
        t = torch.randint(self.schedule.timesteps, (len(x),), device=x.device)
        noise = torch.randn_like(x0)
        return {"loss": F.mse_loss(self.eps(self.schedule.add_noise(x0, t, noise), t), noise)}

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, sampler: str | None = None, steps: int | None = None
    ) -> torch.Tensor:
        validate.positive(n, "n", integer=True)
        sampler = validate.choice(sampler or self.sampler, "sampler", SAMPLERS)
        device = next(self.parameters()).device
        c, h, w = self.input_shape
        shape = (n, c, h + sum(self.pad_h), w + sum(self.pad_w))
        if sampler == "ancestral":
            x = sample_ancestral(self.eps, shape, self.schedule, generator, device)
        else:
            x = sample_strided(self.eps, shape, self.schedule, steps or self.sample_steps, self.eta, generator, device)
        return ((self._crop(x) + 1) / 2).clamp(0, 1)
