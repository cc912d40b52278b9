"""A small U-Net with a scalar conditioning embedding (the diffusion timestep, or a noise level), for
DDPM's noise predictor and the noise-conditional score network. Three resolutions (one residual block
each, GroupNorm and SiLU, the embedding added inside every block), no attention: CPU-sized."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer position encoding of the (float) values `t`, as in Ho et al. 2020."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], 1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """x [N, C, H, W] (H, W divisible by 4) and a conditioning value per example -> a tensor like x."""

    def __init__(self, channels: int, width: int = 32, mults=(1, 2, 2)):
        super().__init__()
        self.width = width
        emb_dim = 4 * width
        self.embed = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        widths = [width * m for m in mults]
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = width
        for i, w in enumerate(widths):
            self.down.append(ResBlock(prev, w, emb_dim))
            self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1) if i < len(widths) - 1 else nn.Identity())
            prev = w
        self.mid = ResBlock(prev, prev, emb_dim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            self.up.append(ResBlock(prev + w, w, emb_dim))
            self.upsample.append(nn.Conv2d(w, w, 3, padding=1) if i > 0 else nn.Identity())
            prev = w
        self.out = nn.Sequential(_norm(prev), nn.SiLU(), nn.Conv2d(prev, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        emb = self.embed(sinusoidal_embedding(cond, self.width))
        h = self.inp(x)
        skips = []
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid(h, emb)
        for block, up in zip(self.up, self.upsample):
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], 1), emb)
            if not isinstance(up, nn.Identity):
                h = up(h)
        return self.out(h)
