"""Latent attacks on encoders (Cemgil et al. 2020, the smooth encoder's selection and Figure 1).

Distance: ||x_adv - x||_p <= eps, p in {inf, 2}; x_adv in [0, 1].
Shapes: x [B, ...] in [0, 1]; `target` codes [B, D] (optional) -> x_adv [B, ...].

The encoder maps x to a diagonal Gaussian posterior (mu, var), each [B, D] (a model with an
`encode` method, e.g. `rr.models.SmoothEncoder`, or a module whose forward returns (mu, var); a
module returning one tensor is treated as a deterministic code, var = 0).
- Untargeted (`atk(x)`): projected gradient *ascent* on a divergence between the posteriors of x
  and x + d: `divergence="w2"`, `W2^2 = ||mu - mu'||^2 + ||sigma - sigma'||^2` (MATH.md 3), or
  "kl", `KL(q(.|x + d) || q(.|x))`. This is the SE paper's adversarial selection.
- Targeted (`atk(x, target=z)`): descent on `||mu(x + d) - z||^2`, moving the code towards z
  (the paper's Figure 1).
It shares PGD's balls (random start, step, projection); the random start matters, since d = 0 is a
minimum of the divergence, where its gradient vanishes. The iterate with the best objective is kept.

    >>> atk = LatentAttack(se, eps=0.1, steps=20, divergence="w2")
    >>> x_adv = atk(x)
    >>> x_adv = atk(x, target=z)
"""

from __future__ import annotations

import torch
from torch import nn

from .. import validate
from ..balls import get_ball
from ..divergences import w2_squared
from ..errors import UserError
from ..utils import check_images
from .base import eval_mode, input_gradient
from .pgd import MAX_EPS, MAX_STEPS


def kl_gaussians(mu_a, var_a, mu_b, var_b):
    """KL(N(mu_a, var_a) || N(mu_b, var_b)) for diagonal Gaussians, summed over the last dim: [B].
    (W2 comes from rr.divergences, which has no Gaussian-to-Gaussian KL.)"""
    var_a, var_b = var_a.clamp_min(1e-12), var_b.clamp_min(1e-12)
    return 0.5 * (var_a / var_b + (mu_b - mu_a).pow(2) / var_b - 1 + var_b.log() - var_a.log()).sum(-1)


DIVERGENCES = {"w2": w2_squared, "kl": kl_gaussians}


class LatentAttack:
    def __init__(
        self,
        encoder: nn.Module,
        eps: float = 0.1,
        steps: int = 20,
        norm: str = "linf",
        alpha: float | None = None,
        divergence: str = "w2",
        random_start: bool = True,
    ):
        if not isinstance(encoder, nn.Module):
            raise UserError(f"LatentAttack needs an nn.Module encoder, got {type(encoder).__name__}")
        self.eps = validate.nonnegative(eps, "LatentAttack eps", high=MAX_EPS)
        self.steps = validate.nonnegative(steps, "LatentAttack steps", integer=True, high=MAX_STEPS)
        validate.choice(divergence, "LatentAttack divergence", DIVERGENCES)
        self.model, self.norm, self.ball = encoder, norm, get_ball(norm)
        self.alpha = (
            validate.nonnegative(alpha, "LatentAttack alpha", high=MAX_EPS)
            if alpha is not None
            else 2.5 * self.eps / max(self.steps, 1)
        )
        self.divergence, self.random_start = divergence, random_start

    def encode(self, x):
        out = self.model.encode(x) if hasattr(self.model, "encode") else self.model(x)
        if isinstance(out, (tuple, list)):
            return out[0].flatten(1), out[1].flatten(1)
        return out.flatten(1), torch.zeros_like(out.flatten(1))

    def objective(self, x_adv, reference):
        """What the attack ascends, per example [B]: the divergence from the clean posterior, or
        minus the squared distance of the code to the target."""
        mu, var = self.encode(x_adv)
        if isinstance(reference, torch.Tensor):
            return -(mu - reference.flatten(1)).pow(2).sum(1)
        return DIVERGENCES[self.divergence](mu, var, *reference)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_images(x, "x")
        if target is not None:
            check_images(target, "target", unit_range=False)
            if len(target) != len(x):
                raise UserError(f"target has {len(target)} codes for {len(x)} images")
        with eval_mode(self.model):
            return self.run(x.detach(), target).detach().clamp_(0, 1)

    def run(self, x, target=None):
        with torch.no_grad():
            reference = target.detach() if target is not None else self.encode(x)
        delta = self.ball.random_start(x, self.eps) if self.random_start else torch.zeros_like(x)
        delta = ((x + delta).clamp(0, 1) - x).detach()
        best, best_obj = x.clone(), torch.full((len(x),), float("-inf"), device=x.device)
        for step in range(self.steps + 1):
            delta.requires_grad_(True)
            obj = self.objective(x + delta, reference)
            with torch.no_grad():
                better = obj > best_obj
                best[better], best_obj[better] = (x + delta)[better], obj[better]
            if step == self.steps:
                break
            grad = input_gradient(obj, delta)
            with torch.no_grad():
                delta = self.ball.project(delta + self.alpha * self.ball.step(grad), self.eps)
                delta = (x + delta).clamp(0, 1) - x
        return best

    def __repr__(self) -> str:
        return (
            f"LatentAttack(eps={self.eps}, steps={self.steps}, norm={self.norm}, alpha={self.alpha}, "
            f"divergence={self.divergence})"
        )
