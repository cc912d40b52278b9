"""Universal adversarial perturbation (Moosavi-Dezfooli et al. 2017, Algorithm 1).

Distance: one perturbation v for a whole data set with ||v||_p <= eps (p in {inf, 2});
x_adv = clip_[0,1](x + v).
Shapes: `fit(x)` with x [N, ...] in [0, 1] -> v [1, ...]; `atk(x, y)` -> x_adv [B, ...].

Passes over the data in random order; at every point that x_i + v does not fool yet, DeepFool finds
the smallest extra perturbation dv that sends x_i + v across the boundary, and v <- Proj_eps(v + dv).
It stops when the fooling rate `mean(f(x + v) != f(x))` reaches `target_fooling` or after
`max_epochs` passes. Fooled points are found a chunk at a time (one batched forward pass); DeepFool
re-checks each one against the current v, so the result is the paper's sequential algorithm.

`fit` returns v and keeps it (with its fooling rate on the fitting set) in `perturbation` and
`fooling_rate`; calling the attack before `fit` fits it on the batch it is given.

    >>> uap = UniversalPerturbation(classifier, eps=0.2, norm="linf").fit(x_train[:2000])
    >>> x_adv = uap(x_test, y_test); uap.fooling_rate
"""

from __future__ import annotations

import torch
from torch import nn

from .. import validate
from ..balls import get_ball
from ..utils import check_images
from .base import Attack, eval_mode, predict
from .deepfool import DeepFool
from .pgd import MAX_EPS, MAX_STEPS


class UniversalPerturbation(Attack):
    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.2,
        norm: str = "linf",
        max_epochs: int = 5,
        target_fooling: float = 0.8,
        overshoot: float = 0.02,
        deepfool_steps: int = 20,
        chunk: int = 64,
    ):
        super().__init__(model)
        self.eps = validate.positive(eps, "UniversalPerturbation eps", high=MAX_EPS)
        self.norm, self.ball = norm, get_ball(norm)
        self.max_epochs = validate.positive(max_epochs, "UniversalPerturbation max_epochs", integer=True, high=10**4)
        self.target_fooling = validate.number(
            target_fooling, "UniversalPerturbation target_fooling", low=0, high=1, low_open=True
        )
        self.overshoot = validate.nonnegative(overshoot, "UniversalPerturbation overshoot", high=1e3)
        self.deepfool_steps = validate.positive(
            deepfool_steps, "UniversalPerturbation deepfool_steps", integer=True, high=MAX_STEPS
        )
        self.chunk = validate.positive(chunk, "UniversalPerturbation chunk", integer=True)
        self.perturbation: torch.Tensor | None = None
        self.fooling_rate: float | None = None

    def fit(self, x: torch.Tensor, y: torch.Tensor | None = None) -> UniversalPerturbation:
        """Find v on `x` (labels are not needed: fooling is measured against the clean prediction)."""
        check_images(x, "x")
        deepfool = DeepFool(
            self.model, steps=self.deepfool_steps, overshoot=self.overshoot, norm="l2" if self.norm == "l2" else "linf"
        )
        clean = predict(self.model, x)
        v = torch.zeros_like(x[:1])
        with eval_mode(self.model):
            for _ in range(self.max_epochs):
                order = torch.randperm(len(x), device=x.device)
                for start in range(0, len(x), self.chunk):
                    idx = order[start : start + self.chunk]
                    with torch.no_grad():
                        fooled = self.model((x[idx] + v).clamp(0, 1)).argmax(1) != clean[idx]
                    for i in idx[~fooled].tolist():
                        xi = (x[i : i + 1] + v).clamp(0, 1)
                        xi_adv = deepfool.run(xi, clean[i : i + 1])
                        if deepfool.success.all():
                            v = self.ball.project(v + (xi_adv - xi), self.eps)
                rate = self._fooling(x, v, clean)
                if rate >= self.target_fooling:
                    break
        self.perturbation, self.fooling_rate = v.detach(), rate
        return self

    def _fooling(self, x, v, clean):
        return float((predict(self.model, (x + v).clamp(0, 1)) != clean).float().mean())

    def run(self, x, y, target=None):
        if self.perturbation is None:
            self.fit(x)
        return (x + self.perturbation.to(x.device)).clamp(0, 1)
