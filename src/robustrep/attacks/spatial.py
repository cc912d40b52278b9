"""Spatial attack: grid search over rotations and translations (Engstrom et al. 2019).

Distance: none in pixel space; the transform is bounded instead: |angle| <= max_angle degrees,
|shift| <= max_shift of the image's width/height in each direction. Pixels moved in from outside the
image are black (the paper's "black canvas"). x_adv in [0, 1].
Shapes: x [B, C, H, W] in [0, 1], y [B] int64 -> x_adv [B, C, H, W].

The loss over (angle, dx, dy) is far from concave (the paper's Figure 3), so first-order methods do
poorly; an exhaustive grid (31 angles x 5 x 5 shifts by default) is the paper's strongest attack.
Every grid point is one batched forward pass under `torch.no_grad`; per example the worst case is
kept: a grid point that fools the model if there is one (the first with `early_stop`, else the
one of largest loss among those that fool it), otherwise the one with the largest loss. `search` also
returns the chosen (angle in degrees, dx, dy in fractions of the image).

    >>> atk = Spatial(classifier, max_angle=30, max_shift=0.1)
    >>> x_adv, params = atk.search(x, y)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import validate
from ..errors import UserError
from ..utils import check_images, check_labels
from .base import Attack, classification_loss, eval_mode, is_success


def transform(x: torch.Tensor, angle: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, C, H, W] by `angle` degrees about its centre and shift it by
    dx, dy fractions of its width/height (positive: right/down); zeros fill in. angle, dx, dy: [B]."""
    a = angle * math.pi / 180
    cos, sin = torch.cos(a), torch.sin(a)
    # affine_grid maps output coordinates to input coordinates (normalised to [-1, 1], y pointing down):
    # input = R(-a) (output - 2 shift), so the content turns by +a and moves by +shift.
    theta = torch.stack(
        [
            torch.stack([cos, -sin, -(cos * 2 * dx - sin * 2 * dy)], 1),
            torch.stack([sin, cos, -(sin * 2 * dx + cos * 2 * dy)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Spatial(Attack):
    uses_gradient = False

    def __init__(
        self,
        model: nn.Module,
        max_angle: float = 30.0,
        max_shift: float = 0.1,
        angles: int = 31,
        shifts: int = 5,
        loss: str = "ce",
        early_stop: bool = False,
    ):
        super().__init__(model)
        # a NaN angle gave NaN images and a meaningless accuracy: refuse it here
        self.max_angle = validate.number(max_angle, "Spatial max_angle", low=0, high=180)
        self.max_shift = validate.number(max_shift, "Spatial max_shift", low=0, high=1)
        self.angles = validate.positive(angles, "Spatial angles", integer=True, high=10**4)
        self.shifts = validate.positive(shifts, "Spatial shifts", integer=True, high=10**3)
        self.loss = validate.choice(loss, "Spatial loss", ("ce", "margin"))
        self.early_stop = bool(early_stop)

    def grid(self) -> torch.Tensor:
        """All (angle, dx, dy) tried, [G, 3], the identity first."""
        a = torch.linspace(-self.max_angle, self.max_angle, self.angles)
        s = torch.linspace(-self.max_shift, self.max_shift, self.shifts)
        g = torch.cartesian_prod(a, s, s)
        order = g.abs().sum(1).argsort(stable=True)
        return g[order]

    def search(self, x: torch.Tensor, y: torch.Tensor):
        """(x_adv [B, C, H, W], params [B, 3]): the worst transform found for each example."""
        check_images(x, "x")
        check_labels(y, len(x), "y")
        if x.dim() != 4:
            raise UserError(f"Spatial needs images [B, C, H, W], got shape {tuple(x.shape)}")
        n = len(x)
        params = torch.zeros(n, 3, device=x.device)
        best_loss = torch.full((n,), float("-inf"), device=x.device)
        best_won = torch.zeros(n, dtype=torch.bool, device=x.device)
        x_adv = x.clone()
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        with eval_mode(self.model), torch.no_grad():
            for g in self.grid().to(x.device):
                todo = (~done).nonzero().squeeze(1) if self.early_stop else torch.arange(n, device=x.device)
                if todo.numel() == 0:
                    break
                k = len(todo)
                xt = transform(x[todo], g[0].expand(k), g[1].expand(k), g[2].expand(k)).clamp(0, 1)
                logits = self.model(xt)
                loss = classification_loss(logits, y[todo], self.loss)
                won = is_success(logits, y[todo])
                if self.early_stop:
                    done[todo[won]] = True
                # a transform that fools the model beats one that does not, whatever their losses
                # (a correctly classified point can have the larger cross-entropy); then the larger loss
                better = (won & ~best_won[todo]) | ((won == best_won[todo]) & (loss > best_loss[todo]))
                idx = todo[better]
                best_loss[idx], best_won[idx], x_adv[idx], params[idx] = loss[better], won[better], xt[better], g
        return x_adv, params

    def run(self, x, y, target=None):
        return self.search(x, y)[0]
