"""Fast gradient sign method (Goodfellow et al. 2015): one step of size eps along the gradient sign.

Distance: ||x_adv - x||_inf <= eps (norm "linf"), or ||x_adv - x||_2 <= eps (norm "l2": the fast
gradient method, a step along grad / ||grad||_2); x_adv in [0, 1].
Shapes: x [B, ...] in [0, 1], y [B] int64 -> x_adv [B, ...].

`x_adv = clip_[0,1](x + eps * sign(grad_x J(x, y)))` (MATH.md 5). FGSM is PGD with one step of size
eps, no random start and one restart, so it runs on PGD's loop (foolbox's gradient_descent_base
split): the ball supplies the step and the projection.

    >>> atk = FGSM(classifier, eps=0.1)
    >>> x_adv = atk(x, y)
"""

from __future__ import annotations

from torch import nn

from .pgd import PGD


class FGSM(PGD):
    def __init__(
        self, model: nn.Module, eps: float = 0.1, norm: str = "linf", loss: str = "ce", early_stop: bool = True
    ):
        super().__init__(
            model,
            eps=eps,
            steps=1,
            restarts=1,
            norm=norm,
            alpha=eps,
            loss=loss,
            random_start=False,
            early_stop=early_stop,
        )
