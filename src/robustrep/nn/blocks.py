"""Encoders and decoders. Shapes come from the data (no hard-coded image size).

MLP (Cemgil et al. 2020, C.1): 4 layers of 200 ReLU units in the encoder and in the decoder.
Conv: two stride-2 4x4 convolutions (32, 64 channels) and a 200-unit layer, mirrored in the decoder;
needs H and W divisible by 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

ARCHS = ("mlp", "conv")


def _mlp(sizes: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return layers


class GaussianHead(nn.Module):
    """Features -> (mu, var) of a diagonal Gaussian. var = softplus(s) + var_min keeps the variance
    positive and bounded away from 0, so log var and 1/var stay finite."""

    def __init__(self, in_features: int, latent_dim: int, var_min: float = 1e-4):
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * latent_dim)
        self.var_min = var_min

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, s = self.linear(h).chunk(2, dim=-1)
        return mu, F.softplus(s) + self.var_min


def _check(arch: str, input_shape) -> None:
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHS)}")
    if arch == "conv" and (input_shape[1] % 4 or input_shape[2] % 4):
        raise UserError(f"the conv architecture needs height and width divisible by 4, got {tuple(input_shape)}")


def build_encoder(arch: str, input_shape, hidden: int = 200, layers: int = 4) -> tuple[nn.Module, int]:
    """The feature extractor of an encoder and its output width (the Gaussian head goes on top)."""
    _check(arch, input_shape)
    c, h, w = input_shape
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), *_mlp([c * h * w] + [hidden] * layers)), hidden
    body = nn.Sequential(
        nn.Conv2d(c, 32, 4, 2, 1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, 2, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * (h // 4) * (w // 4), hidden),
        nn.ReLU(),
    )
    return body, hidden


def build_decoder(arch: str, latent_dim: int, output_shape, hidden: int = 200, layers: int = 4) -> nn.Module:
    """z -> mean of p(x|z) in [0, 1] (a sigmoid output), shaped like the data."""
    _check(arch, output_shape)
    c, h, w = output_shape
    if arch == "mlp":
        return nn.Sequential(
            *_mlp([latent_dim] + [hidden] * layers),
            nn.Linear(hidden, c * h * w),
            nn.Sigmoid(),
            nn.Unflatten(1, (c, h, w)),
        )
    return nn.Sequential(
        nn.Linear(latent_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 64 * (h // 4) * (w // 4)),
        nn.ReLU(),
        nn.Unflatten(1, (64, h // 4, w // 4)),
        nn.ConvTranspose2d(64, 32, 4, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(32, c, 4, 2, 1),
        nn.Sigmoid(),
    )
