"""The shared base of every attack: checks inputs once, runs the attack in eval mode, clamps to [0, 1].

Subclasses implement only `run(x, y, target)` (foolbox's pattern); `__call__` is the one return
contract: `x_adv` of the same shape as `x`, detached, inside [0, 1].
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..utils import check_images, check_labels


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Put `model` in eval mode for the duration, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Arg-max labels of `model` on `x`, without gradients, in batches."""
    with torch.inference_mode(), eval_mode(model):
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def classification_loss(logits: torch.Tensor, y: torch.Tensor, kind: str = "ce",
                        targeted: bool = False) -> torch.Tensor:
    """Per-example loss that an attack *ascends*.

    kind "ce": cross-entropy of the true class (untargeted) or minus that of the target (targeted).
    kind "margin": the Carlini-Wagner margin, max_{j != y} z_j - z_y (untargeted) or
    z_t - max_{j != t} z_j (targeted); positive exactly when the attack has succeeded.
    """
    if kind == "ce":
        ce = F.cross_entropy(logits, y, reduction="none")
        return -ce if targeted else ce
    if kind == "margin":
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        return z_y - others if targeted else others - z_y
    raise UserError(f"unknown attack loss {kind!r}: use 'ce' or 'margin'")


def input_gradient(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gradient of value.sum() with respect to x; zeros where value does not depend on x at all
    (a constant or detached model), where autograd itself would raise."""
    if not value.requires_grad:
        return torch.zeros_like(x)
    grad, = torch.autograd.grad(value.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def is_success(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Boolean [B]: misclassified (untargeted) or classified as the target (targeted)."""
    pred = logits.argmax(1)
    return pred == y if targeted else pred != y


class Attack:
    """Base class. `atk(x, y)` returns adversarial examples; `atk(x, y, target=t)` a targeted attack
    where the subclass supports one (`supports_targeted`)."""

    supports_targeted = False

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise UserError(f"an attack needs an nn.Module classifier, got {type(model).__name__}")
        self.model = model

    def __call__(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        check_images(x, "x")
        check_labels(y, len(x), "y")
        if target is not None:
            if not self.supports_targeted:
                raise UserError(f"{type(self).__name__} has no targeted mode")
            check_labels(target, len(x), "target")
        with eval_mode(self.model):
            x_adv = self.run(x.detach(), y, target)
        return x_adv.detach().clamp_(0.0, 1.0)

    def run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        # settings only: not the model, the norm-ball helper, or results kept from the last call
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items()
                           if k not in ("model", "ball") and not k.startswith("_")
                           and not isinstance(v, (torch.Tensor, nn.Module)) and v is not None)
        return f"{type(self).__name__}({fields})"
