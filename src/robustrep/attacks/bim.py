"""Basic iterative method / I-FGSM and the iterative least-likely class attack (Kurakin et al. 2017).

Distance: ||x_adv - x||_inf <= eps (or ||.||_2 with norm "l2"); x_adv in [0, 1].
Shapes: x [B, ...] in [0, 1], y [B] int64 -> x_adv [B, ...].

BIM repeats FGSM with a small step alpha and clips to the eps-ball after every step (MATH.md 5): it
is PGD started at x itself, with one restart. Kurakin et al. take alpha = 1/255 for
min(255 eps + 4, 1.25 * 255 eps) steps, i.e. a total path of about 1.25 eps; the default alpha here is
1.25 eps / steps, the same budget for any number of steps.

IterativeLeastLikely steps *down* the loss of the least likely class on clean input,
`y_LL = argmin_k p(k | x)`: a targeted BIM towards y_LL. It succeeds (for accuracy) when the label
changes; per-example early stop fires once the prediction reaches y_LL.

    >>> x_adv = BIM(classifier, eps=0.1, steps=10)(x, y)
    >>> x_adv = IterativeLeastLikely(classifier, eps=0.1, steps=10)(x, y)
"""

from __future__ import annotations

import torch
from torch import nn

from .pgd import PGD


class BIM(PGD):
    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.1,
        steps: int = 10,
        alpha: float | None = None,
        norm: str = "linf",
        loss: str = "ce",
        early_stop: bool = True,
    ):
        alpha = 1.25 * eps / max(int(steps), 1) if alpha is None else alpha
        super().__init__(
            model,
            eps=eps,
            steps=steps,
            restarts=1,
            norm=norm,
            alpha=alpha,
            loss=loss,
            random_start=False,
            early_stop=early_stop,
        )


class IterativeLeastLikely(BIM):
    supports_targeted = False

    def run(self, x, y, target=None):
        with torch.no_grad():
            logits = self.model(x)
        least_likely = logits.argmin(1)
        x_adv = super().run(x, y, target=least_likely)
        # a point already misclassified on clean input is left as it is (the untargeted contract)
        wrong = logits.argmax(1) != y
        x_adv[wrong] = x[wrong]
        return x_adv
