"""Randomised input defences: a test bench for evaluation hygiene (Athalye, Carlini & Wagner 2018).

`RandomResizePad(model, low)` is Xie et al. (2018)'s randomisation layer in the image's own frame:
every forward pass resizes each image to a random side r in {low, ..., H} (bilinear) and pads it with
zeros at a random offset back to H x W, then calls `model`. Its forward pass is random, so one-draw
gradients are noisy and plain PGD looks weak against it; EOT (`rr.attacks.EOT` with the identity
distribution, or `robustrep evaluate --eot K`) averages K passes and recovers the attack.

    >>> defended = RandomResizePad(classifier, low=22, seed=0)
    >>> rr.attacks.EOT(rr.attacks.PGD(defended, eps=0.3), rr.transforms.Distribution(), samples=16)
"""

from __future__ import annotations

import torch
from torch import nn

from . import validate
from .errors import UserError
from .transforms import warp


class RandomResizePad(nn.Module):
    randomized = True  # `robustrep evaluate` asks for --eot K on models that say so

    def __init__(self, model: nn.Module, low: int = 22, seed: int = 0):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise UserError(f"RandomResizePad wraps an nn.Module classifier, got {type(model).__name__}")
        self.model = model
        self.low = validate.positive(low, "low", integer=True)
        self.generator = torch.Generator().manual_seed(validate.seed(seed, "seed"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.low > min(h, w):
            raise UserError(f"RandomResizePad low={self.low} is larger than the image ({h}x{w})")
        side = torch.randint(self.low, min(h, w) + 1, (n,), generator=self.generator).double()
        # the offset of the resized image's corner inside the canvas, uniform over the places it fits
        off_x = (torch.rand(n, generator=self.generator, dtype=torch.float64) * (w - side + 1)).floor()
        off_y = (torch.rand(n, generator=self.generator, dtype=torch.float64) * (h - side + 1)).floor()
        m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        # content scaled by side/H about the centre, then moved so its corner lands on the offset
        m[:, 0, 0], m[:, 1, 1] = side / w, side / h
        m[:, 0, 2] = off_x + side / 2 - w / 2
        m[:, 1, 2] = off_y + side / 2 - h / 2
        return self.model(warp(x, m.to(x.device)))
