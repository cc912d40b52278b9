"""Expectation over transformation (EOT; Athalye et al. 2018, "Synthesizing robust adversarial examples",
eq. 2): the wrapped attack ascends E_{t ~ T}[L(f(t(x')), y)] instead of L(f(x'), y), estimated with K
fresh draws per gradient, so that x' fools the model across the distribution T (viewpoints, lighting,
a printer and a camera) or across the random forward passes of a randomised model (Athalye, Carlini &
Wagner 2018, section 4.1).

Distance: that of the wrapped attack (PGD's eps ball, CW's l_2, ...); x_adv in [0, 1].
Shapes: x [B, C, H, W] in [0, 1], y [B] int64 (target [B] for a targeted attack) -> x_adv [B, C, H, W].

EOT wraps any gradient attack of the suite without changing it: it runs a copy of the attack whose
model is `Expectation(model, distribution, K)`. Every per-example loss the attack asks for
(`Attack.objective`: PGD, FGSM, BIM, CW) is the mean over K draws of that loss, and its gradient the
mean of the K gradients, computed `chunk` draws at a time (forward and backward together, so memory
holds one chunk whatever K is). Anything else the attack asks of the model (its logits, as DeepFool and
the universal perturbation do) gets the mean logits over K draws. Each image gets its own K draws.

    >>> dist = rr.transforms.Distribution(rotation=(-30, 30), scale=(0.8, 1.2), translate=3, seed=0)
    >>> eot = EOT(PGD(classifier, eps=0.3, steps=100), dist, samples=16)
    >>> x_adv = eot(x, y, target=t)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import validate
from ..errors import UserError
from ..transforms import Distribution
from .base import Attack, classification_loss


def check_target(y, target) -> None:
    """A targeted attack whose target is the true label has nothing to do: refuse it."""
    if target is not None and torch.is_tensor(target) and torch.is_tensor(y) and target.shape == y.shape:
        same = (target == y).nonzero()
        if len(same):
            i = int(same[0, 0])
            raise UserError(f"target equals the label at index {i} (both {int(y[i])}): pick a target other than y")


class _KnownGradient(torch.autograd.Function):
    """Returns `value` [B] and passes back grad_value[b] * grad[b] to x: the chain rule for a
    per-example loss whose input gradient is already known (computed chunk by chunk)."""

    @staticmethod
    def forward(ctx, x, value, grad):
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return g.view(-1, *[1] * (grad.dim() - 1)) * grad, None, None


class Expectation(nn.Module):
    """A model seen through K random transformations: forward gives the mean logits over K draws per
    image; `expected_objective` the mean loss and its mean gradient (see the module's docstring).
    Works for randomised models too: each of the K passes is a fresh forward pass."""

    def __init__(self, model: nn.Module, distribution: Distribution, samples: int, chunk: int | None = None):
        super().__init__()
        self.model, self.distribution = model, distribution
        self.samples = samples
        self.chunk = min(chunk or samples, samples)

    def _chunks(self, x):
        """(draws in this chunk, x transformed [c B, ...] with draw-major order) for every chunk."""
        b = len(x)
        for start in range(0, self.samples, self.chunk):
            c = min(self.chunk, self.samples - start)
            xs = x.repeat(c, *[1] * (x.dim() - 1))
            yield c, self.distribution.sample(c * b, x.shape[1:])(xs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for c, xt in self._chunks(x):
            z = self.model(xt).view(c, len(x), -1).sum(0)
            total = z if total is None else total + z
        return total / self.samples

    def expected_objective(self, x, goal, kind="ce", targeted=False):
        """(mean over K draws of classification_loss [B], mean logits [B, C]); the loss carries the
        mean input gradient when x requires one."""
        need_grad = x.requires_grad and torch.is_grad_enabled()
        xd = x.detach().requires_grad_(need_grad)
        loss_sum, logit_sum, grad_sum = 0.0, 0.0, torch.zeros_like(x) if need_grad else None
        for start in range(0, self.samples, self.chunk):
            c = min(self.chunk, self.samples - start)
            with torch.set_grad_enabled(need_grad):
                xs = xd.repeat(c, *[1] * (x.dim() - 1))
                logits = self.model(self.distribution.sample(c * len(x), x.shape[1:])(xs))
                loss = classification_loss(logits, goal.repeat(c), kind, targeted).view(c, len(x))
                if need_grad and loss.requires_grad:
                    (g,) = torch.autograd.grad(loss.sum(), xd, allow_unused=True)
                    if g is not None:
                        grad_sum += g
            loss_sum = loss_sum + loss.detach().sum(0)
            logit_sum = logit_sum + logits.detach().view(c, len(x), -1).sum(0)
        loss_mean, logits_mean = loss_sum / self.samples, logit_sum / self.samples
        if need_grad:
            loss_mean = _KnownGradient.apply(x, loss_mean, grad_sum / self.samples)
        return loss_mean, logits_mean


class EOT(Attack):
    """`EOT(attack, distribution, samples=K, chunk=None)`: the attack against the expectation over K
    draws of `distribution` (a `rr.transforms.Distribution`; the identity distribution with a
    randomised model averages K of its forward passes). `chunk` draws are evaluated at once (default:
    all K). Targeted when the wrapped attack is."""

    def __init__(self, attack: Attack, distribution: Distribution, samples: int = 16, chunk: int | None = None):
        if not isinstance(attack, Attack):
            raise UserError(f"EOT wraps an attack of rr.attacks, got {type(attack).__name__}")
        if isinstance(attack, EOT):
            raise UserError("EOT of an EOT attack: wrap the inner attack once with the product of the samples")
        if not isinstance(distribution, Distribution):
            raise UserError(f"EOT needs an rr.transforms.Distribution, got {type(distribution).__name__}")
        super().__init__(attack.model)
        self.attack, self.distribution = attack, distribution
        self.samples = validate.positive(samples, "EOT samples", integer=True, high=10**6)
        self.chunk = None if chunk is None else validate.positive(chunk, "EOT chunk", integer=True, high=10**6)
        self.supports_targeted = attack.supports_targeted

    def __call__(self, x, y, target=None):
        check_target(y, target)
        return super().__call__(x, y, target)

    def run(self, x, y, target=None):
        inner = copy.copy(self.attack)
        inner.model = Expectation(self.model, self.distribution, self.samples, self.chunk)
        return inner.run(x, y, target)

    def __repr__(self) -> str:
        return f"EOT({self.attack!r}, {self.distribution!r}, samples={self.samples})"
