"""Adversarial patch (Brown et al. 2017): one universal sticker per target class that turns any image
it is stuck on into that class, wherever it sits, however it is turned and scaled.

Distance: none inside the patch (any value in [0, 1]); the rest of the image is unchanged.
Shapes: `fit(x, target)` with x [N, C, H, W] -> patch [C, size, size]; `atk(x, y, target=t)` pastes
the patch of each image's target at a random place, angle and scale -> x_adv [B, C, H, W].

Training maximises E_{x ~ X, l, r, s ~ placements, t ~ T} log Pr(target | t(A(p, x, l, r, s))) (Brown et
al.'s eq. 1, with the image distribution T of attacks.EOT on top) by Adam on p = (tanh w + 1) / 2, one
random mini-batch of training images (those not of the target class) per step. A placement: the patch
rotated by up to `max_angle` degrees, scaled by a factor in `scale`, its centre anywhere the scaled
patch still fits inside the image. Placements come from the attack's own generator (`seed`).

    >>> atk = AdversarialPatch(classifier, size=14, distribution=dist).fit(x_train, target=3)
    >>> x_adv = atk(x_test, y_test, target=torch.full_like(y_test, 3))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import validate
from ..errors import UserError
from ..transforms import Distribution, warp
from .base import Attack, eval_mode
from .eot import check_target


class AdversarialPatch(Attack):
    supports_targeted = True

    def __init__(
        self,
        model: nn.Module,
        size: int = 14,
        distribution: Distribution | None = None,
        max_angle: float = 30.0,
        scale=(0.8, 1.2),
        steps: int = 500,
        batch_size: int = 64,
        lr: float = 0.05,
        seed: int = 0,
    ):
        super().__init__(model)
        self.size = validate.positive(size, "patch size", integer=True, high=10**4)
        if distribution is not None and not isinstance(distribution, Distribution):
            raise UserError(f"distribution must be an rr.transforms.Distribution, got {type(distribution).__name__}")
        self.distribution = distribution or Distribution()
        self.max_angle = validate.nonnegative(max_angle, "patch max_angle", high=180)
        if not (isinstance(scale, (tuple, list)) and len(scale) == 2):
            raise UserError(f"patch scale must be a (low, high) pair, got {scale!r}")
        lo = validate.positive(scale[0], "patch scale low", high=100)
        hi = validate.positive(scale[1], "patch scale high", high=100)
        if lo > hi:
            raise UserError(f"patch scale range is inverted ({lo:g} > {hi:g}): give (low, high)")
        self.scale = (lo, hi)
        self.steps = validate.positive(steps, "patch steps", integer=True, high=10**6)
        self.batch_size = validate.positive(batch_size, "patch batch_size", integer=True, high=10**6)
        self.lr = validate.positive(lr, "patch lr", high=1e3)
        self.generator = torch.Generator().manual_seed(validate.seed(seed, "seed"))
        self.patches: dict[int, torch.Tensor] = {}

    def _check_size(self, x):
        h, w = x.shape[-2:]
        if self.size * self.scale[1] > min(h, w):
            raise UserError(
                f"a patch of side {self.size} (scaled up to {self.scale[1]:g}x) is larger than the "
                f"{h}x{w} image: choose a smaller size"
            )

    def paste(self, x: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """x with `patch` ([C, s, s] or [B, C, s, s]) pasted at a fresh random placement per image;
        differentiable in the patch."""
        n, c, h, w = x.shape
        s = patch.shape[-1]
        canvas = torch.zeros(n, c, h, w, device=x.device, dtype=x.dtype)
        top, left = (h - s) // 2, (w - s) // 2
        canvas[..., top : top + s, left : left + s] = patch
        ones = torch.zeros(n, 1, h, w, device=x.device, dtype=x.dtype)
        ones[..., top : top + s, left : left + s] = 1
        g = self.generator
        angle = (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1) * self.max_angle * math.pi / 180
        factor = self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(n, generator=g, dtype=torch.float64)
        # the rotated, scaled square's half-extent; its centre goes anywhere it still fits
        half = factor * s / 2 * (angle.cos().abs() + angle.sin().abs())
        room_x, room_y = (w / 2 - half).clamp_min(0), (h / 2 - half).clamp_min(0)
        cx = (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1) * room_x
        cy = (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1) * room_y
        # centre offset of the canvas square (even/odd sides) before moving it
        ox, oy = left + s / 2 - w / 2, top + s / 2 - h / 2
        m = torch.zeros(n, 3, 3, dtype=torch.float64)
        m[:, 0, 0], m[:, 0, 1] = factor * angle.cos(), -factor * angle.sin()
        m[:, 1, 0], m[:, 1, 1] = factor * angle.sin(), factor * angle.cos()
        m[:, 0, 2] = cx - (m[:, 0, 0] * ox + m[:, 0, 1] * oy)
        m[:, 1, 2] = cy - (m[:, 1, 0] * ox + m[:, 1, 1] * oy)
        m[:, 2, 2] = 1
        m = m.to(x.device)
        placed, where = warp(canvas, m), warp(ones, m)
        return (1 - where) * x + where * placed

    def fit(self, x: torch.Tensor, target: int, y: torch.Tensor | None = None) -> AdversarialPatch:
        """Train the patch of class `target` on images x (those with y == target left out when y is given)."""
        validate.images(x, "x", allow_empty=False)
        if x.dim() != 4:
            raise UserError(f"a patch needs images [N, C, H, W], got shape {tuple(x.shape)}")
        self._check_size(x)
        target = validate.number(target, "patch target", low=0, integer=True)
        if y is not None:
            validate.labels(y, len(x), "y")
            x = x[y != target]
            if len(x) == 0:
                raise UserError(f"every training image is of the target class {target}: give images of other classes")
        c = x.shape[1]
        w = torch.zeros(c, self.size, self.size, device=x.device).uniform_(-1, 1, generator=None)
        w.requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.lr)
        with eval_mode(self.model):
            for _ in range(self.steps):
                idx = torch.randint(len(x), (min(self.batch_size, len(x)),), generator=self.generator)
                xb = x[idx.to(x.device)]
                p = (torch.tanh(w) + 1) / 2
                x_new = self.distribution(self.paste(xb, p))
                goal = torch.full((len(xb),), target, dtype=torch.long, device=x.device)
                loss = F.cross_entropy(self.model(x_new), goal)
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.patches[target] = ((torch.tanh(w) + 1) / 2).detach()
        return self

    def __call__(self, x, y, target=None):
        check_target(y, target)
        if torch.is_tensor(x) and x.dim() == 4:
            self._check_size(x)
        return super().__call__(x, y, target)

    def run(self, x, y, target=None):
        if target is None:
            raise UserError("AdversarialPatch is targeted: give target= (one patch per target class)")
        self._check_size(x)
        out = x.clone()
        for t in target.unique().tolist():
            if t not in self.patches:
                self.fit(x, t, y)
            sel = (target == t).nonzero().squeeze(1)
            with torch.no_grad():
                out[sel] = self.paste(x[sel], self.patches[t].to(x.device))
        return out
