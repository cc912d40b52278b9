"""Carlini-Wagner L2 attack (Carlini & Wagner 2017).

Distance: minimal l_2 perturbation, no budget; x_adv in [0, 1] by construction.
Shapes: x [B, ...] in [0, 1], y [B] int64 (target [B] for a targeted attack) -> x_adv [B, ...].

Change of variables `x' = (tanh(w) + 1) / 2` keeps x' in the box; Adam minimises, per example,
`||x' - x||_2^2 + c * max(Z_y - max_{i != y} Z_i, -kappa)` (untargeted; targeted:
`max(max_{i != t} Z_i - Z_t, -kappa)`), MATH.md 5. A binary search over c (per example) follows:
c is halved towards the last failure after a success and multiplied by 10 while no success is known.
Among all iterates that succeed with margin kappa, the one with the smallest l_2 distance is kept;
points never broken are returned unchanged. With `abort_early`, a search step stops when the loss
has not fallen by 0.01% over a tenth of the steps (the reference implementation's rule).

    >>> atk = CW(classifier, c=1.0, kappa=0.0, steps=100, lr=0.01, binary_search_steps=5)
    >>> x_adv = atk(x, y)
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Attack, classification_loss
from ..errors import UserError


class CW(Attack):
    supports_targeted = True

    def __init__(self, model: nn.Module, c: float = 1.0, kappa: float = 0.0, steps: int = 100,
                 lr: float = 0.01, binary_search_steps: int = 5, abort_early: bool = True):
        super().__init__(model)
        if c <= 0 or kappa < 0 or steps < 1 or lr <= 0 or binary_search_steps < 1:
            raise UserError("CW needs c > 0, kappa >= 0, steps >= 1, lr > 0 and binary_search_steps >= 1")
        self.c, self.kappa, self.steps, self.lr = float(c), float(kappa), int(steps), float(lr)
        self.binary_search_steps, self.abort_early = int(binary_search_steps), abort_early

    def run(self, x, y, target=None):
        targeted = target is not None
        goal = target if targeted else y
        n = len(x)
        c = torch.full((n,), self.c, device=x.device)
        lo = torch.zeros(n, device=x.device)
        hi = torch.full((n,), float("inf"), device=x.device)
        best_l2 = torch.full((n,), float("inf"), device=x.device)
        best = x.clone()
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        for _ in range(self.binary_search_steps):
            won = self._search(x, goal, targeted, w0, c, best, best_l2)
            hi = torch.where(won, torch.minimum(hi, c), hi)
            lo = torch.where(won, lo, torch.maximum(lo, c))
            c = torch.where(hi < float("inf"), (lo + hi) / 2, c * 10)
        return best

    def _search(self, x, goal, targeted, w0, c, best, best_l2):
        """One Adam run at fixed c; updates best / best_l2 in place, returns who succeeded [B]."""
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.lr)
        won = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        check_every, previous = max(self.steps // 10, 1), float("inf")
        for step in range(self.steps):
            x_new = (torch.tanh(w) + 1) / 2
            logits = self.model(x_new)
            l2 = (x_new - x).flatten(1).pow(2).sum(1)
            # the CW margin, positive once the attack succeeds: f = max(-margin, -kappa)
            margin = classification_loss(logits, goal, "margin", targeted)
            loss = l2 + c * (-margin).clamp(min=-self.kappa)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            with torch.no_grad():
                ok = margin >= self.kappa if self.kappa > 0 else margin > 0
                better = ok & (l2 < best_l2)
                best_l2[better] = l2[better]
                best[better] = x_new[better]
                won |= ok
            opt.step()
            if self.abort_early and (step + 1) % check_every == 0:
                total = float(loss.detach().sum())
                if total > previous * 0.9999:
                    break
                previous = total
        return won
