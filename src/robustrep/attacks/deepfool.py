"""DeepFool (Moosavi-Dezfooli et al. 2016), multi-class, Algorithm 2 of the paper (seed 003).

Distance: minimal l_2 (norm "l2") or l_inf (norm "linf") perturbation, no budget; x_adv in [0, 1].
Shapes: x [B, ...] in [0, 1], y [B] int64 -> x_adv [B, ...].

At each iterate x_i the classifier is linearised around x_i; for every candidate class k != y,
`w'_k = grad f_k - grad f_y` and `f'_k = f_k - f_y`; the step goes to the nearest linearised
boundary, `l = argmin_k |f'_k| / ||w'_k||_q` (q the dual norm), `r_i = |f'_l| / ||w'_l||_2^2 w'_l`
(l_2) or `|f'_l| / ||w'_l||_1 sign(w'_l)` (l_inf). The answer is `x + (1 + overshoot) sum_i r_i`,
clipped to [0, 1]. For an affine classifier the first step is exact: it is the closest point of the
boundary of the class's polyhedron.

Work is batched over examples and classes: the gradients of all candidate logits come from one
forward and one backward pass on the batch repeated once per candidate class (a batched Jacobian),
and only points not yet flipped are iterated on. Candidates are the `candidates` classes with the
largest clean logits (foolbox's default of 10 covers MNIST's classes).

After each call the object holds the last run's per-example results: `norms` (||x_adv - x||_2, or
l_inf), `success` (a correctly classified point whose label the attack flipped) and `rho`
(`||r||_2 / ||x||_2` whatever the norm); `rho_adv` is the mean of rho over the successes,
`rho_adv = |D|^-1 sum ||r(x)||_2 / ||x||_2` (the paper's Table 1).

    >>> atk = DeepFool(classifier, steps=50, overshoot=0.02)
    >>> x_adv = atk(x, y)
    >>> atk.rho_adv
"""

from __future__ import annotations

import torch
from torch import nn

from .. import validate
from .base import Attack, input_gradient
from .pgd import MAX_STEPS


class DeepFool(Attack):
    def __init__(
        self, model: nn.Module, steps: int = 50, overshoot: float = 0.02, candidates: int = 10, norm: str = "l2"
    ):
        super().__init__(model)
        self.steps = validate.positive(steps, "DeepFool steps", integer=True, high=MAX_STEPS)
        self.overshoot = validate.nonnegative(overshoot, "DeepFool overshoot", high=1e3)
        self.candidates = validate.number(candidates, "DeepFool candidates", low=2, high=10**5, integer=True)
        self.norm = validate.choice(norm, "DeepFool norm", ("l2", "linf"))
        self.norms = self.success = self.rho = None

    @property
    def rho_adv(self) -> float:
        """Mean ||r||_2 / ||x||_2 over the points the last call flipped (nan when none)."""
        if self.rho is None or not self.success.any():
            return float("nan")
        return float(self.rho[self.success].mean())

    def run(self, x, y, target=None):
        with torch.no_grad():
            logits = self.model(x)
        n_classes = logits.shape[1]
        k = min(self.candidates, n_classes)
        # candidate classes: the label first, then the most likely others
        others = logits.scatter(1, y[:, None], float("-inf")).topk(k - 1, dim=1).indices
        cand = torch.cat([y[:, None], others], 1)  # [B, k]
        r_tot = torch.zeros_like(x)
        x_adv = x.clone()
        clean_ok = logits.argmax(1) == y
        active = clean_ok.nonzero().squeeze(1)  # misclassified points are done
        for _ in range(self.steps):
            if active.numel() == 0:
                break
            f, grads = self._candidate_gradients(x_adv[active], cand[active])  # [n, k], [n, k, D]
            still = f[:, 1:].amax(1) < f[:, 0] if k == n_classes else self._keeps_label(x_adv[active], y[active])
            active, f, grads = active[still], f[still], grads[still]
            if active.numel() == 0:
                break
            w = grads[:, 1:] - grads[:, :1]  # w'_k, [n, k-1, D]
            fd = (f[:, 1:] - f[:, :1]).abs()  # |f'_k|, [n, k-1]
            if self.norm == "l2":
                wn = w.norm(dim=2)
                dist = fd / (wn + 1e-8)
                l = dist.argmin(1)
                pick = torch.arange(len(l), device=x.device)
                # + 1e-4 as in foolbox and the reference code: land just past the boundary
                step = (dist[pick, l] + 1e-4)[:, None] * w[pick, l] / (wn[pick, l][:, None] + 1e-8)
            else:
                dist = fd / (w.abs().sum(2) + 1e-8)
                l = dist.argmin(1)
                pick = torch.arange(len(l), device=x.device)
                step = (dist[pick, l] + 1e-4)[:, None] * w[pick, l].sign()
            r_tot[active] += step.view(-1, *x.shape[1:])
            x_adv[active] = (x[active] + (1 + self.overshoot) * r_tot[active]).clamp(0, 1)
        with torch.no_grad():
            self.success = clean_ok & (self.model(x_adv).argmax(1) != y)
        delta = (x_adv - x).flatten(1)
        self.norms = delta.norm(dim=1) if self.norm == "l2" else delta.abs().amax(1)
        self.rho = delta.norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)  # l_2 in both norms
        return x_adv

    def _candidate_gradients(self, x, cand):
        """Logits f_k(x) and gradients grad_x f_k(x) for the candidate classes: [n, k], [n, k, D].

        The batch is repeated k times so that row (i, j) carries class cand[i, j]; the sum of the
        selected logits has, as its gradient with respect to each row, that class's gradient."""
        n, k = cand.shape
        xr = x.detach().repeat_interleave(k, 0).requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(xr)
            sel = logits.gather(1, cand.reshape(-1, 1))
            grad = input_gradient(sel, xr)
        return sel.detach().view(n, k), grad.view(n, k, -1)

    def _keeps_label(self, x, y):
        # with fewer candidates than classes, a non-candidate class may have taken over
        with torch.no_grad():
            return self.model(x).argmax(1) == y
