"""Projected gradient descent (Madry et al. 2018), l_inf or l_2, with random restarts.

Distance: ||x_adv - x||_p <= eps, p in {inf, 2}; x_adv in [0, 1].
Shapes: x [B, ...] in [0, 1], y [B] int64 -> x_adv [B, ...].

Each restart starts uniformly in the ball and takes `steps` steps of
`delta <- Proj_ball(delta + alpha * step(grad))` (MATH.md 5). Work is done only on examples not yet
broken: a point misclassified on clean input is not attacked, a point broken by an earlier restart
is not attacked again, and inside a restart a point stops as soon as an iterate fools the model
(the check reuses the logits of the forward pass the gradient needs anyway). For points never
broken, the iterate with the largest loss over all restarts is returned.

    >>> atk = PGD(classifier, eps=0.1, steps=100, restarts=10)
    >>> x_adv = atk(x, y)
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Attack, classification_loss, input_gradient, is_success
from ..balls import get_ball
from ..errors import UserError


class PGD(Attack):
    supports_targeted = True

    def __init__(self, model: nn.Module, eps: float = 0.3, steps: int = 40, restarts: int = 1,
                 norm: str = "linf", alpha: float | None = None, loss: str = "ce",
                 random_start: bool = True, early_stop: bool = True):
        super().__init__(model)
        if eps < 0 or steps < 0 or restarts < 1:
            raise UserError("PGD needs eps >= 0, steps >= 0 and restarts >= 1")
        self.eps, self.steps, self.restarts, self.norm = float(eps), int(steps), int(restarts), norm
        self.ball = get_ball(norm)
        # Madry et al.'s rule of thumb: 2.5 eps / steps lets a walk from anywhere in the ball reach its edge.
        self.alpha = float(alpha) if alpha is not None else 2.5 * self.eps / max(self.steps, 1)
        self.loss, self.random_start, self.early_stop = loss, random_start, early_stop

    def run(self, x, y, target=None):
        targeted = target is not None
        goal = target if targeted else y
        x_adv = x.clone()
        with torch.no_grad():
            done = is_success(self.model(x), goal, targeted) if self.early_stop else torch.zeros_like(y, dtype=torch.bool)
        best_loss = torch.full((len(x),), float("-inf"), device=x.device)
        for _ in range(self.restarts):
            todo = (~done).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            x_r, success, loss = self._one_run(x[todo], goal[todo], targeted)
            better = success | (loss > best_loss[todo])
            x_adv[todo[better]] = x_r[better]
            best_loss[todo[better]] = loss[better]
            if self.early_stop:
                done[todo[success]] = True
        return x_adv

    def _one_run(self, x, goal, targeted):
        """One restart on a sub-batch: returns (x_final, success [B], loss [B]).

        The iterate itself is the leaf the gradient is taken at (its gradient equals that of delta).
        An example's result is written out once, when it leaves: at its first successful iterate
        (early stop) or after the last step; the live batch is re-sliced only when examples leave."""
        delta = self.ball.random_start(x, self.eps) if self.random_start else torch.zeros_like(x)
        x_out = x.clone()
        success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        final_loss = torch.full((len(x),), float("-inf"), device=x.device)
        alive = torch.arange(len(x), device=x.device)        # indices still being attacked
        xa, ga = x, goal
        x_try = (x + delta).clamp(0, 1).detach()
        for step in range(self.steps + 1):
            x_try.requires_grad_(True)
            logits = self.model(x_try)
            loss = classification_loss(logits, ga, self.loss, targeted)
            won = is_success(logits, ga, targeted).detach()
            if step == self.steps:
                x_out[alive], final_loss[alive], success[alive] = x_try.detach(), loss.detach(), won
                break
            grad = input_gradient(loss, x_try)
            with torch.no_grad():
                x_try = x_try.detach()
                if self.early_stop and won.any():
                    done = alive[won]
                    x_out[done], final_loss[done], success[done] = x_try[won], loss[won], True
                    keep = ~won
                    alive, x_try, grad, xa, ga = alive[keep], x_try[keep], grad[keep], xa[keep], ga[keep]
                    if alive.numel() == 0:
                        break
                delta = self.ball.project(x_try - xa + self.alpha * self.ball.step(grad), self.eps)
                x_try = (xa + delta).clamp_(0, 1)
        return x_out, success, final_loss
