"""The l_inf and l_2 balls, a leaf module: what the gradient-ascent family (FGSM, BIM, PGD) and the smooth
encoder's selection need of a norm.

Each ball supplies `random_start` (uniform in the ball), `step` (the steepest-ascent direction for
a unit step) and `project` (onto the ball). foolbox's gradient_descent_base has the same split.
"""

from __future__ import annotations

import torch

from .errors import UserError


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


class LinfBall:
    name = "linf"

    @staticmethod
    def random_start(x: torch.Tensor, eps: float) -> torch.Tensor:
        return torch.empty_like(x).uniform_(-eps, eps)

    @staticmethod
    def step(grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    @staticmethod
    def project(delta: torch.Tensor, eps: float) -> torch.Tensor:
        return delta.clamp(-eps, eps)

    @staticmethod
    def size(delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().amax(1)


class L2Ball:
    name = "l2"

    @staticmethod
    def random_start(x: torch.Tensor, eps: float) -> torch.Tensor:
        # uniform in the ball: a Gaussian direction, radius eps * U^(1/D)
        direction = torch.randn_like(x)
        direction = direction / _flat_norm(direction).clamp_min(1e-12)
        dim = x[0].numel()
        radius = eps * torch.rand(len(x), device=x.device, dtype=x.dtype) ** (1.0 / dim)
        return direction * radius.view(-1, *([1] * (x.dim() - 1)))

    @staticmethod
    def step(grad: torch.Tensor) -> torch.Tensor:
        return grad / _flat_norm(grad).clamp_min(1e-12)

    @staticmethod
    def project(delta: torch.Tensor, eps: float) -> torch.Tensor:
        scale = (eps / _flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        return delta * scale

    @staticmethod
    def size(delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).norm(dim=1)


BALLS = {"linf": LinfBall, "l2": L2Ball}


def get_ball(norm: str):
    try:
        return BALLS[norm]
    except KeyError:
        raise UserError(f"unknown norm {norm!r}: use one of {', '.join(BALLS)}") from None
