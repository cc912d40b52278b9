"""Carlini-Wagner L2 attack (Carlini & Wagner 2017).

Distance: minimal l_2 perturbation, no budget; x_adv in [0, 1] by construction.
Shapes: x [B, ...] in [0, 1], y [B] int64 (target [B] for a targeted attack) -> x_adv [B, ...].

Change of variables `x' = (tanh(w) + 1) / 2` keeps x' in the box; Adam minimises, per example,
`||x' - x||_2^2 + c * max(Z_y - max_{i != y} Z_i, -kappa)` (untargeted; targeted:
`max(max_{i != t} Z_i - Z_t, -kappa)`), MATH.md 5. A binary search over c (per example) follows:
c is halved towards the last failure after a success and multiplied by 10 while no success is known.
Among all iterates that succeed with margin kappa, the one with the smallest l_2 distance is kept;
points never broken are returned unchanged. With `abort_early`, an example leaves a search step
when its loss has not fallen by 0.01% over a tenth of the steps (the reference implementation's
rule, per example), so converged points stop costing forward passes.

    >>> atk = CW(classifier, c=1.0, kappa=0.0, steps=100, lr=0.01, binary_search_steps=5)
    >>> x_adv = atk(x, y)
"""

from __future__ import annotations

import torch
from torch import nn

from .. import validate
from .base import Attack, input_gradient
from .pgd import MAX_STEPS


class CW(Attack):
    supports_targeted = True

    def __init__(
        self,
        model: nn.Module,
        c: float = 1.0,
        kappa: float = 0.0,
        steps: int = 100,
        lr: float = 0.01,
        binary_search_steps: int = 5,
        abort_early: bool = True,
    ):
        super().__init__(model)
        # a NaN c made every loss NaN and the model look perfectly robust: refuse it here
        self.c = validate.positive(c, "CW c", high=1e10)
        self.kappa = validate.nonnegative(kappa, "CW kappa", high=1e10)
        self.steps = validate.positive(steps, "CW steps", integer=True, high=MAX_STEPS)
        self.lr = validate.positive(lr, "CW lr", high=1e6)
        self.binary_search_steps = validate.positive(
            binary_search_steps, "CW binary_search_steps", integer=True, high=64
        )
        self.abort_early = bool(abort_early)

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
        """One Adam run at fixed c; updates best / best_l2 in place, returns who succeeded [B].

        Adam is written out (elementwise, as torch.optim.Adam with default betas) so that an example
        can leave the batch: with `abort_early`, an example whose loss has not fallen by 0.01% over
        a tenth of the steps stops (the reference rule, applied per example rather than per batch)."""
        n = len(x)
        won = torch.zeros(n, dtype=torch.bool, device=x.device)
        alive = torch.arange(n, device=x.device)
        w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
        xa, ga, ca = x, goal, c
        previous = torch.full((n,), float("inf"), device=x.device)
        check_every = max(self.steps // 10, 1)
        beta1, beta2 = 0.9, 0.999
        for step in range(self.steps):
            w.requires_grad_(True)
            x_new = (torch.tanh(w) + 1) / 2
            l2 = (x_new - xa).flatten(1).pow(2).sum(1)
            # the CW margin, positive once the attack succeeds: f = max(-margin, -kappa)
            margin, _ = self.objective(x_new, ga, "margin", targeted)
            loss = l2 + ca * (-margin).clamp(min=-self.kappa)
            grad = input_gradient(loss, w)
            with torch.no_grad():
                w = w.detach()
                ok = margin >= self.kappa if self.kappa > 0 else margin > 0
                better = ok & (l2 < best_l2[alive])
                best_l2[alive[better]] = l2[better]
                best[alive[better]] = x_new[better]
                won[alive[ok]] = True
                t = step + 1
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step_size = self.lr / (1 - beta1**t)
                w.addcdiv_(m, (v / (1 - beta2**t)).sqrt_().add_(1e-8), value=-step_size)
                if self.abort_early and t % check_every == 0:
                    loss = loss.detach()
                    stalled = loss > previous[alive] - 1e-4 * previous[alive].abs()
                    previous[alive] = loss
                    if stalled.any():
                        keep = ~stalled
                        alive, w, m, v, xa, ga, ca = (
                            alive[keep],
                            w[keep],
                            m[keep],
                            v[keep],
                            xa[keep],
                            ga[keep],
                            ca[keep],
                        )
                        if alive.numel() == 0:
                            break
        return won
