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
        return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def classification_loss(
    logits: torch.Tensor, y: torch.Tensor, kind: str = "ce", targeted: bool = False
) -> torch.Tensor:
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
    """Gradient of value.sum() with respect to x.

    A model whose output has no path back to its input (its forward detaches x, runs under no_grad,
    or ignores x) has no input gradient at all: zeros here would make every gradient attack fail and
    the model look perfectly robust, so this raises instead. (A path whose gradient is zero, such as
    rounding, is a masked gradient and is returned as it is.)"""
    grad = None
    if value.requires_grad:
        (grad,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
    if grad is None:
        raise UserError(NO_INPUT_GRADIENT)
    return grad


NO_INPUT_GRADIENT = (
    "the model's output does not depend on its input through autograd (does its forward detach x "
    "or run under no_grad?): a gradient attack cannot run on it; use a black-box attack (square, "
    "onepixel, spatial) or fix the model"
)


def is_success(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Boolean [B]: misclassified (untargeted) or classified as the target (targeted)."""
    pred = logits.argmax(1)
    return pred == y if targeted else pred != y


class Attack:
    """Base class. `atk(x, y)` returns adversarial examples; `atk(x, y, target=t)` a targeted attack
    where the subclass supports one (`supports_targeted`)."""

    supports_targeted = False
    uses_gradient = True  # black-box attacks set False: they never ask for an input gradient

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise UserError(f"an attack needs an nn.Module classifier, got {type(model).__name__}")
        self.model = model

    def __call__(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        check_images(x, "x")
        check_labels(y, len(x), "y")
        if target is not None and not self.supports_targeted:
            raise UserError(f"{type(self).__name__} has no targeted mode")
        if len(x) == 0:
            return x.detach().clone()
        # one forward (and backward) pass on one example, before the work: a label the model cannot output
        # would count as "broken" from the start, and a model whose logits have no path back to the
        # input would look perfectly robust to a gradient attack (CW's distance term alone has one)
        probe = x[:1].detach().clone().requires_grad_(self.uses_gradient)
        with torch.set_grad_enabled(self.uses_gradient), eval_mode(self.model):
            logits = self.model(probe)
        classes = logits.shape[-1]
        if self.uses_gradient:
            input_gradient(logits, probe)
        check_labels(y, len(x), "y", num_classes=classes)
        if target is not None:
            check_labels(target, len(x), "target", num_classes=classes)
        with eval_mode(self.model):
            x_adv = self.run(x.detach(), y, target)
        return x_adv.detach().clamp_(0.0, 1.0)

    def run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def objective(
        self, x: torch.Tensor, goal: torch.Tensor, kind: str = "ce", targeted: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss [B] that the attack ascends, logits [B, C]) at x: the one place the gradient attacks
        meet the model, so that a wrapper (attacks.EOT) can put an expectation over transformations here."""
        expected = getattr(self.model, "expected_objective", None)
        if expected is not None:
            return expected(x, goal, kind, targeted)
        logits = self.model(x)
        return classification_loss(logits, goal, kind, targeted), logits

    def __repr__(self) -> str:
        # settings only: not the model, the norm-ball helper, or results kept from the last call
        fields = ", ".join(
            f"{k}={v}"
            for k, v in vars(self).items()
            if k not in ("model", "ball")
            and not k.startswith("_")
            and not isinstance(v, (torch.Tensor, nn.Module))
            and v is not None
        )
        return f"{type(self).__name__}({fields})"
