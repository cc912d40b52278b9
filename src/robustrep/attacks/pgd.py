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

from .. import validate
from ..balls import get_ball
from .base import Attack, input_gradient, is_success

# Upper limits that refuse absurd settings before any work: images live in [0, 1], so a radius beyond
# MAX_EPS means nothing more (and its float32 square would overflow); beyond the step limits a run
# would not end in any useful time.
MAX_EPS = 1e6
MAX_STEPS = 10**6
MAX_RESTARTS = 10**4


class PGD(Attack):
    supports_targeted = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.3,
        steps: int = 40,
        restarts: int = 1,
        norm: str = "linf",
        alpha: float | None = None,
        loss: str = "ce",
        random_start: bool = True,
        early_stop: bool = True,
    ):
        super().__init__(model)
        name = type(self).__name__
        self.eps = validate.nonnegative(eps, f"{name} eps", high=MAX_EPS)
        self.steps = validate.nonnegative(steps, f"{name} steps", integer=True, high=MAX_STEPS)
        self.restarts = validate.positive(restarts, f"{name} restarts", integer=True, high=MAX_RESTARTS)
        self.norm, self.ball = norm, get_ball(norm)
        # Madry et al.'s rule of thumb: 2.5 eps / steps lets a walk from anywhere in the ball reach its edge.
        self.alpha = (
            validate.nonnegative(alpha, f"{name} alpha", high=MAX_EPS)
            if alpha is not None
            else 2.5 * self.eps / max(self.steps, 1)
        )
        self.loss = validate.choice(loss, f"{name} loss", ("ce", "margin"))
        self.random_start, self.early_stop = bool(random_start), bool(early_stop)

    def run(self, x, y, target=None):
        targeted = target is not None
        goal = target if targeted else y
        x_adv = x.clone()
        with torch.no_grad():
            done = (
                is_success(self.model(x), goal, targeted) if self.early_stop else torch.zeros_like(y, dtype=torch.bool)
            )
        best_loss = torch.full((len(x),), float("-inf"), device=x.device)
        broken = torch.zeros_like(done)  # an earlier restart already fooled the model here
        for _ in range(self.restarts):
            todo = (~done).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            x_r, success, loss = self._one_run(x[todo], goal[todo], targeted)
            # the first success per example is kept (docs/attacks.md); until one, the highest loss
            # (a later failed restart with a higher loss must not replace a success: early_stop=False)
            new = ~broken[todo]
            better = new & (success | (loss > best_loss[todo]))
            x_adv[todo[better]] = x_r[better]
            best_loss[todo[better]] = loss[better]
            broken[todo[new & success]] = True
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
        alive = torch.arange(len(x), device=x.device)  # indices still being attacked
        xa, ga = x, goal
        x_try = (x + delta).clamp(0, 1).detach()
        for step in range(self.steps + 1):
            x_try.requires_grad_(True)
            loss, logits = self.objective(x_try, ga, self.loss, targeted)
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
