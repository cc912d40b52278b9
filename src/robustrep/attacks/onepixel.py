"""Single-pixel attack by differential evolution (Su et al. 2019). Black-box: logits only.

Distance: at most `pixels` pixel positions changed (an l_0 budget over positions, all channels of a
pixel may change); x_adv in [0, 1].
Shapes: x [B, C, H, W] in [0, 1], y [B] int64 (target [B] for a targeted attack) -> x_adv [B, C, H, W].

Each candidate is `pixels` tuples (row, column, value per channel). A population of `popsize`
candidates per example evolves by DE/rand/1 without crossover (the paper's choice):
`trial = a + F (b - c)` for three random members, kept when it lowers the fitness, the true class's
probability (untargeted) or minus the target's (targeted). All candidates of all examples are scored in
one batched forward pass per generation, under `torch.no_grad`; an example leaves the search as soon
as one of its candidates fools the model.

    >>> atk = OnePixel(classifier, pixels=1, steps=75, popsize=400)
    >>> x_adv = atk(x, y)
"""

from __future__ import annotations

import torch
from torch import nn

from .. import validate
from ..errors import UserError
from .base import Attack, is_success
from .pgd import MAX_STEPS


class OnePixel(Attack):
    uses_gradient = False
    supports_targeted = True

    def __init__(
        self,
        model: nn.Module,
        pixels: int = 1,
        steps: int = 75,
        popsize: int = 400,
        mutation: float = 0.5,
        batch_size: int = 8192,
    ):
        super().__init__(model)
        self.pixels = validate.positive(pixels, "OnePixel pixels", integer=True, high=10**6)
        self.steps = validate.nonnegative(steps, "OnePixel steps", integer=True, high=MAX_STEPS)
        self.popsize = validate.number(popsize, "OnePixel popsize", low=4, high=10**6, integer=True)
        self.mutation = validate.number(mutation, "OnePixel mutation", low=0, high=2, low_open=True)
        self.batch_size = validate.positive(batch_size, "OnePixel batch_size", integer=True)

    @torch.no_grad()
    def run(self, x, y, target=None):
        if x.dim() != 4:
            raise UserError(f"OnePixel needs images [B, C, H, W], got shape {tuple(x.shape)}")
        targeted = target is not None
        goal = target if targeted else y
        n, (ch, h, w), p = len(x), x.shape[1:], self.popsize
        scale = torch.tensor([h, w] + [1.0] * ch, device=x.device, dtype=x.dtype)
        x_adv = x.clone()
        pop = torch.rand(n, p, self.pixels, 2 + ch, device=x.device, dtype=x.dtype) * scale
        fit, won = self._fitness(x, goal, pop, targeted)
        everyone = torch.arange(n, device=x.device)
        done = self._record(x_adv, x, everyone, pop, won, torch.zeros(n, dtype=torch.bool, device=x.device))
        upper = torch.where(scale > 1, scale - 1e-4, scale)
        for _ in range(self.steps):
            active = (~done).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            pa = pop[active]
            r = torch.randint(p, (len(active), p, 3), device=x.device)
            ar = torch.arange(len(active), device=x.device)[:, None]
            trial = pa[ar, r[..., 0]] + self.mutation * (pa[ar, r[..., 1]] - pa[ar, r[..., 2]])
            trial = torch.minimum(trial.clamp_min(0), upper)
            trial_fit, trial_won = self._fitness(x[active], goal[active], trial, targeted)
            keep = trial_fit < fit[active]
            pop[active] = torch.where(keep[..., None, None], trial, pa)
            fit[active] = torch.where(keep, trial_fit, fit[active])
            done[active] = self._record(x_adv, x, active, trial, trial_won, done[active])
        # points not broken get their best candidate (the lowest fitness)
        rest = (~done).nonzero().squeeze(1)
        if rest.numel():
            best = fit[rest].argmin(1)
            x_adv[rest] = self._apply(x[rest], pop[rest, best][:, None]).squeeze(1)
        return x_adv

    def _apply(self, x, cand):
        """Images [n, P, C, H, W] with each candidate's pixels written into x; cand [n, P, pixels, 2 + C]."""
        n, p = cand.shape[:2]
        ch, h, w = x.shape[1:]
        out = x[:, None].expand(n, p, ch, h, w).clone()
        rows = cand[..., 0].long().clamp(0, h - 1)
        cols = cand[..., 1].long().clamp(0, w - 1)
        flat = out.view(n, p, ch, h * w)
        pos = (rows * w + cols)[:, :, None, :].expand(n, p, ch, self.pixels)  # [n, P, C, pixels]
        flat.scatter_(3, pos, cand[..., 2:].clamp(0, 1).transpose(2, 3))
        return out

    def _fitness(self, x, goal, cand, targeted):
        """(fitness [n, P], success [n, P]) of every candidate, lower fitness is better."""
        n, p = cand.shape[:2]
        images = self._apply(x, cand).flatten(0, 1)
        logits = torch.cat(
            [self.model(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        )
        goal_rep = goal.repeat_interleave(p)
        prob = logits.softmax(1).gather(1, goal_rep[:, None]).squeeze(1)
        won = is_success(logits, goal_rep, targeted)
        return (-prob if targeted else prob).view(n, p), won.view(n, p)

    def _record(self, x_adv, x, index, cand, won, done):
        """For rows `index` of the batch, write the first winning candidate of each example not yet
        done into x_adv; returns the new done mask of those rows."""
        new = won.any(1) & ~done
        if new.any():
            rows = new.nonzero().squeeze(1)
            first = won[rows].float().argmax(1)
            x_adv[index[rows]] = self._apply(x[index[rows]], cand[rows, first][:, None]).squeeze(1)
        return done | new
