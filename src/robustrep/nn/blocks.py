"""Encoders and decoders. Shapes come from the data (no hard-coded image size).

MLP (Cemgil et al. 2020, C.1): 4 layers of 200 ReLU units in the encoder and in the decoder.
Conv: two stride-2 4x4 convolutions (32, 64 channels) and a 200-unit layer, mirrored in the decoder;
needs H and W divisible by 4.
Conv4: the dSprites network of the beta-VAE papers (Higgins et al. 2017; Burgess et al. 2018; Locatello
et al. 2019, Table 1): four stride-2 4x4 convolutions (32, 32, 64, 64 channels) and a `hidden`-unit layer
(256 there), mirrored in the decoder; needs H and W divisible by 16. On a 64x64 image an encoding and
decoding costs 16 million multiply-adds, against 24 million for `conv` (hidden 200), whose decoder
upsamples from a wide 16x16 map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

ARCHS = ("mlp", "conv", "conv4")
# each conv architecture: its channels, one stride-2 4x4 convolution each (the decoder mirrors them)
CONV_CHANNELS = {"conv": (32, 64), "conv4": (32, 32, 64, 64)}


def _downsampling(arch: str) -> int:
    """How much a conv architecture shrinks height and width: 2 per stride-2 convolution."""
    return 2 ** len(CONV_CHANNELS[arch])


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
    if arch in CONV_CHANNELS:
        k = _downsampling(arch)
        if input_shape[1] % k or input_shape[2] % k:
            raise UserError(
                f"the {arch} architecture needs height and width divisible by {k}, got {tuple(input_shape)}"
            )


def build_encoder(arch: str, input_shape, hidden: int = 200, layers: int = 4) -> tuple[nn.Module, int]:
    """The feature extractor of an encoder and its output width (the Gaussian head goes on top)."""
    _check(arch, input_shape)
    c, h, w = input_shape
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), *_mlp([c * h * w] + [hidden] * layers)), hidden
    channels, k = CONV_CHANNELS[arch], _downsampling(arch)
    layers: list[nn.Module] = []
    for a, b in zip((c, *channels[:-1]), channels):
        layers += [nn.Conv2d(a, b, 4, 2, 1), nn.ReLU()]
    body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels[-1] * (h // k) * (w // k), hidden), nn.ReLU())
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
    channels, k = CONV_CHANNELS[arch][::-1], _downsampling(arch)
    layers: list[nn.Module] = [
        nn.Linear(latent_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, channels[0] * (h // k) * (w // k)),
        nn.ReLU(),
        nn.Unflatten(1, (channels[0], h // k, w // k)),
    ]
    for a, b in zip(channels, (*channels[1:], c)):
        layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.ReLU()]
    return nn.Sequential(*layers[:-1], nn.Sigmoid())
