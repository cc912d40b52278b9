"""A dSprites-style data set made by code (Matthey et al. 2017; never downloaded): binary images of one
shape (square, ellipse, heart) with known generative factors

    shape 3, scale 6 (0.5 .. 1), orientation 40 (0 .. 2 pi), x 32, y 32     on 64x64 pixels,

every image a pure function of its factor indices, so the disentanglement metrics can draw images with
any factor held fixed (`render`). The full grid holds 737,280 images; `ShapesGrid.small()` (32x32 pixels,
orientation 10, x 12, y 12: 25,920 images) is what `rr.data.load("shapes")` serves on a CPU.

    grid = ShapesGrid()                       # the full dSprites grid
    f = grid.sample_factors(16, generator=g)  # [16, 5] factor indices
    x = grid.render(f)                        # [16, 1, 64, 64] float32 in {0, 1}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import validate
from ..errors import UserError

FACTORS = ("shape", "scale", "orientation", "x", "y")
SHAPES = ("square", "ellipse", "heart")


@dataclass(frozen=True)
class ShapesGrid:
    """The factor grid and image size; each count is the number of values a factor takes."""

    size: int = 64
    scales: int = 6
    orientations: int = 40
    positions_x: int = 32
    positions_y: int = 32

    def __post_init__(self):
        validate.number(self.size, "size", low=8, high=1024, integer=True)
        for name in ("scales", "orientations", "positions_x", "positions_y"):
            validate.number(getattr(self, name), name, low=1, high=1024, integer=True)

    @classmethod
    def small(cls) -> ShapesGrid:
        return cls(size=32, scales=6, orientations=10, positions_x=12, positions_y=12)

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return (len(SHAPES), self.scales, self.orientations, self.positions_x, self.positions_y)

    def __len__(self) -> int:
        return math.prod(self.factor_sizes)

    def all_factors(self) -> torch.Tensor:
        """Every factor combination [len, 5] (int64), in row-major order."""
        axes = [torch.arange(n) for n in self.factor_sizes]
        return torch.cartesian_prod(*axes)

    def sample_factors(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n factor vectors drawn uniformly and independently [n, 5] (int64)."""
        cols = [torch.randint(k, (n,), generator=generator) for k in self.factor_sizes]
        return torch.stack(cols, 1)

    def values(self, factors: torch.Tensor) -> dict[str, torch.Tensor]:
        """The factors' real values: scale in [0.5, 1], angle in [0, 2 pi), centres in [0.2, 0.8] of the image."""
        f = factors.long()
        scale = 0.5 + 0.5 * f[:, 1] / max(1, self.scales - 1)
        angle = 2 * math.pi * f[:, 2] / self.orientations
        cx = 0.2 + 0.6 * f[:, 3] / max(1, self.positions_x - 1)
        cy = 0.2 + 0.6 * f[:, 4] / max(1, self.positions_y - 1)
        return {"shape": f[:, 0], "scale": scale, "angle": angle, "x": cx, "y": cy}

    def render(self, factors: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Images [N, 1, size, size] float32 in {0, 1} for factor indices [N, 5]."""
        if not isinstance(factors, torch.Tensor) or factors.dim() != 2 or factors.shape[1] != len(FACTORS):
            raise UserError(f"factors must be an [N, {len(FACTORS)}] integer tensor")
        sizes = torch.tensor(self.factor_sizes)
        if len(factors) and ((factors < 0).any() or (factors >= sizes).any()):
            raise UserError(f"factor indices must lie in [0, n) for the counts {self.factor_sizes}")
        out = [self._render(factors[i : i + batch_size]) for i in range(0, len(factors), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 1, self.size, self.size)

    def _render(self, factors: torch.Tensor) -> torch.Tensor:
        v = self.values(factors.cpu())
        px = (torch.arange(self.size, dtype=torch.float32) + 0.5) / self.size
        gy, gx = torch.meshgrid(px, px, indexing="ij")  # row = y, column = x
        dx = gx[None] - v["x"][:, None, None]
        dy = gy[None] - v["y"][:, None, None]
        c, s = v["angle"].cos()[:, None, None], v["angle"].sin()[:, None, None]
        u, w = c * dx + s * dy, -s * dx + c * dy  # the pixel in the shape's own rotated frame
        r = 0.12 * v["scale"][:, None, None]  # half-width of the largest shape: 12% of the image
        un, wn = u / r, w / r
        square = (un.abs() <= 1) & (wn.abs() <= 1)
        ellipse = (un / 1.2) ** 2 + (wn / 0.6) ** 2 <= 1
        hx, hy = un * 0.95, -wn * 0.95 + 0.15  # the heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3, pointing down
        heart = (hx**2 + hy**2 - 1) ** 3 <= hx**2 * hy**3
        shape = v["shape"][:, None, None]
        mask = torch.where(shape == 0, square, torch.where(shape == 1, ellipse, heart))
        return mask.to(torch.float32)[:, None]


def load_split(split: str, task: str, grid: ShapesGrid | None = None, test_fraction: float = 0.1, seed: int = 0):
    """(X, y) of the small grid: a fixed random 90/10 split of every combination; y is the task's factor index."""
    grid = grid or ShapesGrid.small()
    factors = grid.all_factors()
    order = torch.randperm(len(factors), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(factors)))
    pick = order[:n_test] if split == "test" else order[n_test:]
    f = factors[pick.sort().values]
    return grid.render(f), f[:, FACTORS.index(task)].clone()


TASKS = dict(zip(FACTORS, ShapesGrid.small().factor_sizes))
