"""An ensemble of attacks in AutoAttack's manner (Croce & Hein 2020): each attack runs only on the
points that every earlier one left standing, so the ensemble is at least as strong as its strongest
member on every point, and the cheap attacks clear the way for the expensive ones.

Distance: ||x_adv - x||_p <= eps, p in {inf, 2}; x_adv in [0, 1].
Shapes: x [B, ...] in [0, 1], y [B] int64 -> x_adv [B, ...].

The default sequence is AutoAttack's "standard" version without FAB-T:
  1. APGD-CE (cross-entropy, `restarts` runs of `steps` steps);
  2. APGD-T (targeted DLR towards each of the `targets` most likely other classes, `steps` steps each);
  3. Square (score-based black box, `queries` queries, p_init 0.8), l_inf only: it catches points
     whose gradients are masked, where both gradient attacks fail.
Any other sequence can be given as `attacks=[(name, attack), ...]`, e.g. with the package's PGD first.
After a call, `atk.broken_by` holds how many points each attack broke (points the model gets wrong on
clean input are not attacked and counted under "clean"), and `atk.seconds` each attack's wall time.

    >>> atk = Ensemble(classifier, eps=0.1)
    >>> x_adv = atk(x, y)
    >>> atk.broken_by            # {"clean": 3, "apgd-ce": 40, "apgd-t": 2, "square": 0}
"""

from __future__ import annotations

import time

import torch
from torch import nn

from .. import validate
from ..errors import UserError
from .apgd import APGD
from .base import Attack, predict
from .square import Square


def default_attacks(
    model: nn.Module,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    targets: int = 9,
    queries: int = 5000,
) -> list[tuple[str, Attack]]:
    """AutoAttack's standard sequence (without FAB-T): APGD-CE, APGD-T, then Square (l_inf only)."""
    seq = [
        ("apgd-ce", APGD(model, eps=eps, loss="ce", steps=steps, restarts=restarts, norm=norm)),
        ("apgd-t", APGD(model, eps=eps, loss="dlr", targeted=True, targets=targets, steps=steps, norm=norm)),
    ]
    if norm == "linf" and queries > 0:
        seq.append(("square", Square(model, eps=eps, queries=queries, p_init=0.8)))
    return seq


class Ensemble(Attack):
    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.1,
        norm: str = "linf",
        steps: int = 100,
        restarts: int = 1,
        targets: int = 9,
        queries: int = 5000,
        attacks: list[tuple[str, Attack]] | None = None,
    ):
        super().__init__(model)
        self.eps = validate.nonnegative(eps, "eps")
        self.norm, self.steps, self.restarts, self.targets = norm, steps, restarts, targets
        self.queries = validate.nonnegative(queries, "queries", integer=True)
        if attacks is None:
            attacks = default_attacks(model, self.eps, norm, steps, restarts, targets, self.queries)
        if not attacks or not all(isinstance(a, tuple) and len(a) == 2 and isinstance(a[1], Attack) for a in attacks):
            raise UserError("attacks must be a non-empty list of (name, attack) pairs")
        self.attacks = list(attacks)
        self.broken_by: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def run(self, x, y, target=None):
        if len(x) == 0:
            self.broken_by, self.seconds = {"clean": 0, **{name: 0 for name, _ in self.attacks}}, {}
            return x.clone()
        left = predict(self.model, x) == y  # points still standing
        broken_by, seconds = {"clean": int((~left).sum())}, {}
        x_adv = x.clone()
        first = True
        for name, atk in self.attacks:
            idx = left.nonzero().squeeze(1)
            if idx.numel() == 0:
                broken_by[name], seconds[name] = 0, 0.0
                continue
            t0 = time.perf_counter()
            xa = atk(x[idx], y[idx])
            fooled = predict(self.model, xa) != y[idx]
            # broken points keep the first attack's success; the others the first attack's output
            take = torch.ones_like(fooled) if first else fooled
            x_adv[idx[take]] = xa[take]
            left[idx[fooled]] = False
            broken_by[name], seconds[name] = int(fooled.sum()), time.perf_counter() - t0
            first = False
        self.broken_by, self.seconds = broken_by, seconds
        return x_adv

    def __repr__(self) -> str:
        return f"Ensemble(eps={self.eps}, attacks=[{', '.join(name for name, _ in self.attacks)}])"
