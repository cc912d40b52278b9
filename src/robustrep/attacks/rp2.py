"""Robust Physical Perturbations, RP2 (Eykholt et al. 2018, "Robust physical-world attacks on deep
learning visual classification", eqs. 3-4): sticker-like perturbations that survive viewpoints.

Distance: none inside the mask (any value in [0, 1]); no change outside it. The mask covers at most
`mask_share` of the pixels of each image.
Shapes: x [B, C, H, W] in [0, 1], y [B] int64, target [B] (targeted; untargeted without) -> x_adv.

Per image, minimise over the pixels p inside the mask M (x' = (1 - M) x + M p, p = (tanh w + 1) / 2):

    lam ||M (p - x)||_2^2 + nps_weight NPS(p) + tv_weight TV(M (p - x)) + E_{t ~ T} CE(f(t(x')), target)

(the expectation over `samples` draws of `distribution`, as attacks.EOT computes it). The
non-printability score NPS (Sharif et al. 2016) is, per masked pixel, the product over the palette's
colours of the distance to that colour: zero on printable colours. TV is the total variation.
The mask, when not given, comes from their two-stage refinement: `l1_steps` of the same objective
over the whole image with an l1 penalty `l1_lam` ||p - x||_1 (sparse: it changes only the pixels that
matter), then the `mask_share` of the pixels with the largest |p - x| (ties: the expected gradient's
saliency, which alone decides with l1_steps = 0); the second stage optimises inside that mask.

    >>> atk = RP2(classifier, dist, mask_share=0.15, steps=300, samples=16)
    >>> x_adv = atk(x, y, target=t); atk.mask         # [B, 1, H, W] in {0, 1}
"""

from __future__ import annotations

import torch
from torch import nn

from .. import validate
from ..errors import UserError
from ..transforms import Distribution
from .base import Attack
from .eot import Expectation, check_target


def nps(p: torch.Tensor, mask: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Non-printability score per image [B]: mean over masked pixels of prod_c ||p - c||_2
    (palette [P, C])."""
    d = (p.unsqueeze(1) - palette.view(1, *palette.shape, 1, 1)).pow(2).sum(2).add(1e-12).sqrt()  # [B, P, H, W]
    score = d.prod(1, keepdim=True) * mask
    return score.flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def total_variation(d: torch.Tensor) -> torch.Tensor:
    """Isotropic total variation per image [B] (a small floor keeps its gradient finite at 0)."""
    dx = d[..., :-1, 1:] - d[..., :-1, :-1]
    dy = d[..., 1:, :-1] - d[..., :-1, :-1]
    return (dx.pow(2) + dy.pow(2) + 1e-8).sqrt().flatten(1).sum(1)


class RP2(Attack):
    supports_targeted = True

    def __init__(
        self,
        model: nn.Module,
        distribution: Distribution,
        mask_share: float = 0.15,
        mask: torch.Tensor | None = None,
        steps: int = 300,
        l1_steps: int = 100,
        lr: float = 0.1,
        samples: int = 16,
        lam: float = 0.002,
        l1_lam: float = 0.01,
        nps_weight: float = 0.05,
        tv_weight: float = 0.002,
        palette=None,
        chunk: int | None = None,
    ):
        super().__init__(model)
        if not isinstance(distribution, Distribution):
            raise UserError(f"RP2 needs an rr.transforms.Distribution, got {type(distribution).__name__}")
        self.distribution = distribution
        self.mask_share = validate.number(mask_share, "mask share", low=0, low_open=True, high=1)
        if mask is not None:
            validate.images(mask, "mask")
        self.given_mask = mask
        self.steps = validate.positive(steps, "RP2 steps", integer=True, high=10**6)
        self.l1_steps = validate.nonnegative(l1_steps, "RP2 l1_steps", integer=True, high=10**6)
        self.lr = validate.positive(lr, "RP2 lr", high=1e3)
        self.samples = validate.positive(samples, "RP2 samples", integer=True, high=10**6)
        self.chunk = None if chunk is None else validate.positive(chunk, "RP2 chunk", integer=True, high=10**6)
        self.lam = validate.nonnegative(lam, "RP2 lam", high=1e6)
        self.l1_lam = validate.nonnegative(l1_lam, "RP2 l1_lam", high=1e6)
        self.nps_weight = validate.nonnegative(nps_weight, "RP2 nps_weight", high=1e6)
        self.tv_weight = validate.nonnegative(tv_weight, "RP2 tv_weight", high=1e6)
        self.palette = None if palette is None else torch.as_tensor(palette, dtype=torch.float32)
        self.mask: torch.Tensor | None = None

    def __call__(self, x, y, target=None):
        check_target(y, target)
        return super().__call__(x, y, target)

    def _palette(self, c: int, device) -> torch.Tensor:
        # default: what a sticker can be, black and white tape (grey images) or the RGB cube's corners
        if self.palette is not None:
            if self.palette.dim() != 2 or self.palette.shape[1] != c:
                raise UserError(f"RP2 palette must be [P, {c}] colours, got {tuple(self.palette.shape)}")
            return self.palette.to(device)
        if c == 1:
            return torch.tensor([[0.0], [1.0]], device=device)
        corners = torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * c)
        return corners.to(device)

    def _optimise(self, x, goal, targeted, mask, steps, expect, palette, l1: bool):
        w = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.lr)
        for _ in range(steps):
            p = (torch.tanh(w) + 1) / 2
            x_new = (1 - mask) * x + mask * p
            ascend, _ = expect.expected_objective(x_new, goal, "ce", targeted)
            d = mask * (p - x)
            penalty = self.l1_lam * d.abs().flatten(1).sum(1) if l1 else self.lam * d.pow(2).flatten(1).sum(1)
            loss = -ascend + penalty + self.nps_weight * nps(p, mask, palette) + self.tv_weight * total_variation(d)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            p = (torch.tanh(w) + 1) / 2
            return (1 - mask) * x + mask * p

    def _choose_mask(self, x, goal, targeted, expect, palette):
        b, c, h, w = x.shape
        k = max(1, int(round(self.mask_share * h * w)))
        xg = x.clone().requires_grad_(True)
        ascend, _ = expect.expected_objective(xg, goal, "ce", targeted)
        (grad,) = torch.autograd.grad(ascend.sum(), xg)
        saliency = grad.abs().sum(1).flatten(1)  # [B, H W]
        score = saliency / saliency.amax(1, keepdim=True).clamp_min(1e-12)
        if self.l1_steps:
            full = torch.ones(b, 1, h, w, device=x.device)
            x_l1 = self._optimise(x, goal, targeted, full, self.l1_steps, expect, palette, l1=True)
            # |p - x| orders the pixels; the saliency (< 1) only breaks ties among equal changes
            score = (x_l1 - x).abs().sum(1).flatten(1) * 1e3 + score
        top = score.topk(k, dim=1).indices
        return torch.zeros(b, h * w, device=x.device).scatter_(1, top, 1.0).view(b, 1, h, w)

    def run(self, x, y, target=None):
        if x.dim() != 4:
            raise UserError(f"RP2 needs images [B, C, H, W], got shape {tuple(x.shape)}")
        targeted = target is not None
        goal = target if targeted else y
        expect = Expectation(self.model, self.distribution, self.samples, self.chunk)
        palette = self._palette(x.shape[1], x.device)
        if self.given_mask is not None:
            m = self.given_mask.to(x.device)
            if m.shape[-2:] != x.shape[-2:] or m.shape[0] not in (1, len(x)):
                raise UserError(f"RP2 mask must be [1 or B, 1, H, W] matching x, got {tuple(m.shape)}")
            mask = (m[:, :1] > 0.5).float().expand(len(x), 1, *x.shape[-2:])
        else:
            mask = self._choose_mask(x, goal, targeted, expect, palette)
        self.mask = mask.detach()
        return self._optimise(x, goal, targeted, mask, self.steps, expect, palette, l1=False)
