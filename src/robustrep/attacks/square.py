"""Square attack, l_inf (Andriushchenko et al. 2020): a score-based black-box attack.

Distance: ||x_adv - x||_inf <= eps; x_adv in [0, 1].
Shapes: x [B, C, H, W] in [0, 1], y [B] int64 (target [B] for a targeted attack) -> x_adv [B, C, H, W].

Uses only the model's outputs (every query runs under `torch.no_grad`). Starts from vertical stripes
of +-eps; then, per query, a random square window of side about sqrt(p * H * W) (p shrinks on the
paper's schedule from `p_init`) gets a fresh +-eps value per channel, and the change is kept when it
lowers the loss: the CW margin `z_y - max_{j != y} z_j` (untargeted) or cross-entropy of the target
(targeted). Examples leave the batch once they are fooled, so queries go only to points still standing.

    >>> atk = Square(classifier, eps=0.1, queries=1000)
    >>> x_adv = atk(x, y)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import validate
from ..errors import UserError
from .base import Attack, classification_loss
from .pgd import MAX_EPS


def _p_schedule(p_init: float, it: int, queries: int) -> float:
    """The reference implementation's piecewise-constant schedule, rescaled to `queries`."""
    t = int(it / queries * 10000)
    for bound, div in (
        (10, 1),
        (50, 2),
        (200, 4),
        (500, 8),
        (1000, 16),
        (2000, 32),
        (4000, 64),
        (6000, 128),
        (8000, 256),
        (10000, 512),
    ):
        if t <= bound:
            return p_init / div
    return p_init / 512


class Square(Attack):
    uses_gradient = False
    supports_targeted = True

    def __init__(self, model: nn.Module, eps: float = 0.1, queries: int = 1000, p_init: float = 0.3):
        super().__init__(model)
        self.eps = validate.nonnegative(eps, "Square eps", high=MAX_EPS)
        self.queries = validate.nonnegative(queries, "Square queries", integer=True, high=10**7)
        self.p_init = validate.number(p_init, "Square p_init", low=0, high=1, low_open=True)

    def _loss(self, logits, goal, targeted):
        # lower is better for the attacker; negative exactly when it has succeeded (untargeted)
        if targeted:
            return F.cross_entropy(logits, goal, reduction="none")
        return -classification_loss(logits, goal, "margin")

    @torch.no_grad()
    def run(self, x, y, target=None):
        if x.dim() != 4:
            raise UserError(f"Square needs images [B, C, H, W], got shape {tuple(x.shape)}")
        targeted = target is not None
        goal = target if targeted else y
        n, c, h, w = x.shape
        stripes = self.eps * torch.randint(0, 2, (n, c, 1, w), device=x.device).to(x.dtype).mul_(2).sub_(1)
        x_best = (x + stripes).clamp(0, 1)
        logits = self.model(x_best)
        loss = self._loss(logits, goal, targeted)
        won = logits.argmax(1) == goal if targeted else logits.argmax(1) != goal
        rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
        for it in range(self.queries):
            todo = (~won).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            k = len(todo)
            side = max(int(round(math.sqrt(_p_schedule(self.p_init, it, self.queries) * h * w))), 1)
            side = min(side, h - 1, w - 1) if min(h, w) > 1 else 1
            top = torch.randint(0, h - side + 1, (k, 1, 1, 1), device=x.device)
            left = torch.randint(0, w - side + 1, (k, 1, 1, 1), device=x.device)
            window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
            value = self.eps * torch.randint(0, 2, (k, c, 1, 1), device=x.device).to(x.dtype).mul_(2).sub_(1)
            xs = x[todo]
            delta = torch.where(window, value, x_best[todo] - xs)
            x_new = (xs + delta.clamp(-self.eps, self.eps)).clamp(0, 1)
            logits = self.model(x_new)
            new_loss = self._loss(logits, goal[todo], targeted)
            better = new_loss < loss[todo]
            x_best[todo[better]] = x_new[better]
            loss[todo[better]] = new_loss[better]
            pred = logits.argmax(1)
            now = (pred == goal[todo]) if targeted else (pred != goal[todo])
            won[todo[now & better]] = True
        return x_best
