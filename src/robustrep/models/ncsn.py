"""Noise-conditional score network (Song & Ermon 2019), sampled by annealed Langevin dynamics.

A noise-conditional score network (Song & Ermon 2019) sampled by annealed Langevin dynamics.

s_theta(x, sigma) estimates the score of the data blurred with N(0, sigma^2 I) at every sigma of a geometric
sequence sigma_1 > ... > sigma_L. Training is denoising score matching with lambda(sigma) = sigma^2 (their
eqs. 5-6): with x~ = x + sigma z,

    l(theta; sigma) = 1/2 E || sigma s_theta(x~, sigma) + z ||^2,     sigma uniform over the L levels,

and the network's output is divided by sigma (s = net(x, sigma) / sigma, Song & Ermon 2020), so the net
itself predicts -z at every level. `sample` runs `robustrep.sampling.annealed_langevin` from uniform noise
(20 steps per level by default, for CPU time; Song & Ermon used 100).

    robustrep train ncsn --epochs 20 --out runs/ncsn && robustrep sample runs/ncsn
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import validate
from ..errors import UserError
from ..nn.unet import UNet
from ..sampling import annealed_langevin, geometric_sigmas
from .registry import register


@register("ncsn")
class NCSN(nn.Module):
    HPARAM_HELP = {
        "width": "U-Net channels at full resolution",
        "sigma_max": "largest noise level",
        "sigma_min": "smallest noise level",
        "levels": "noise levels L (geometric)",
        "steps_per_level": "Langevin steps at each level when sampling",
        "step_lr": "Langevin step size eps (alpha_i = eps sigma_i^2 / sigma_L^2)",
    }
    monitor = "loss"

    def __init__(
        self,
        input_shape=(1, 28, 28),
        width: int = 32,
        sigma_max: float = 1.0,
        sigma_min: float = 0.01,
        levels: int = 10,
        steps_per_level: int = 20,
        step_lr: float = 2e-5,
    ):
        super().__init__()
        self.input_shape = validate.image_shape(input_shape, "input_shape")
        width = validate.width(width, "width")
        # images live in [0, 1]: a noise level above 1000 drowns them and makes the Langevin steps overflow
        validate.positive(sigma_max, "sigma_max", high=1000)
        self.register_buffer("sigmas", geometric_sigmas(sigma_max, sigma_min, levels))
        self.steps_per_level = validate.positive(steps_per_level, "steps_per_level", integer=True, high=100_000)
        self.step_lr = validate.positive(step_lr, "step_lr", high=1.0)
        if self.input_shape[1] % 4 or self.input_shape[2] % 4:
            raise UserError(f"ncsn needs image sides divisible by 4, got input shape {list(self.input_shape)}")
        self.net = UNet(self.input_shape[0], width)
        self._log_max, self._log_min, self._levels = math.log(sigma_max), math.log(sigma_min), levels

    def _position(self, sigma: torch.Tensor) -> torch.Tensor:
        """The noise level as a continuous index 0 .. L-1 (the embedding's input), so any sigma can be asked."""
        if self._levels == 1:
            return torch.zeros_like(sigma)
        return (self._log_max - sigma.log()) / (self._log_max - self._log_min) * (self._levels - 1)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """grad_x log p_sigma(x), estimated; sigma a float or one value per example."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(len(x)).contiguous()
        return self.net(x, self._position(sigma)) / sigma.view(-1, 1, 1, 1)

    def loss(self, x, y=None):
        idx = torch.randint(len(self.sigmas), (len(x),), device=x.device)
        sigma = self.sigmas[idx].view(-1, 1, 1, 1)
        z = torch.randn_like(x)
        predicted = self.score(x + sigma * z, sigma.flatten())
        # 1/2 || sigma s + z ||^2 summed over pixels, averaged over the batch (eq. 6 with lambda = sigma^2)
        return {"loss": 0.5 * (sigma * predicted + z).pow(2).flatten(1).sum(1).mean()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, steps_per_level: int | None = None):
        validate.positive(n, "n", integer=True)
        device = self.sigmas.device
        x0 = torch.rand(n, *self.input_shape, generator=generator, device=device)
        x = annealed_langevin(
            self.score,
            x0,
            self.sigmas,
            steps=steps_per_level or self.steps_per_level,
            eps=self.step_lr,
            denoise=True,
            generator=generator,
        )
        return x.clamp(0, 1)
