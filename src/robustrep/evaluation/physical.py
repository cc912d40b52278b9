"""Judging physical-world attacks across transformations (Athalye et al. 2018, section 3; Eykholt et
al. 2018, Table 5), always on fresh draws: the evaluation's generator is seeded apart from the one the
attack used, so no draw that shaped x_adv is ever used to score it.

    >>> rr.evaluation.transformation_robustness(classifier, x_adv, y, t, dist, draws=200)
    {'success_plain': 0.98, 'success_eot': 0.71, 'accuracy_eot': 0.12, 'draws': 200, 'n': 100}
    >>> rr.evaluation.viewpoint_table(classifier, x_adv, y, t, angles=(-30, 0, 30), scales=(0.8, 1, 1.2))
"""

from __future__ import annotations

import torch
from torch import nn

from .. import validate
from ..attacks.base import eval_mode
from ..errors import UserError
from ..transforms import Distribution, viewpoint
from ..utils import check_images, check_labels

# The evaluation draws from distribution.seed + this offset (a large odd constant, the golden ratio's
# 64-bit fraction), so the same Distribution(seed=s) given to the attack and here never shares a draw.
FRESH_OFFSET = 0x9E3779B97F4A7C15


def _check(x, y, target):
    check_images(x, "x_adv")
    check_labels(y, len(x), "y")
    if target is not None:
        check_labels(target, len(x), "target")


def _predict_draws(classifier, x, distribution, draws, batch_size):
    """Predicted labels [draws, B] of classifier on `draws` fresh draws of every image."""
    per = max(1, batch_size // max(len(x), 1))
    preds = []
    with torch.inference_mode(), eval_mode(classifier):
        for start in range(0, draws, per):
            k = min(per, draws - start)
            xs = x.repeat(k, *[1] * (x.dim() - 1))
            preds.append(classifier(distribution.sample(len(xs), x.shape[1:])(xs)).argmax(1).view(k, len(x)))
    return torch.cat(preds)


def transformation_robustness(
    classifier: nn.Module,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    distribution: Distribution,
    draws: int = 200,
    batch_size: int = 4096,
    seed: int | None = None,
) -> dict:
    """How x_adv fares across `draws` fresh draws of `distribution` per image.

    success_plain: share of x_adv read as the target (untargeted: not as y) with no transformation.
    success_eot: Athalye's "adversarialness": per image the share of draws read as the target
    (untargeted: not as y), averaged over the images. accuracy_eot: the same with the true label.
    The draws come from `distribution.fresh(seed)`, seed defaulting to the distribution's own plus
    FRESH_OFFSET (mod 2^63)."""
    _check(x_adv, y, target)
    if not isinstance(distribution, Distribution):
        raise UserError(f"distribution must be an rr.transforms.Distribution, got {type(distribution).__name__}")
    draws = validate.positive(draws, "draws", integer=True, high=10**6)
    if seed is None:
        seed = (distribution.seed + FRESH_OFFSET) % 2**63
    fresh = distribution.fresh(validate.seed(seed, "seed"))
    n = len(x_adv)
    if n == 0:
        return {"success_plain": 0.0, "success_eot": 0.0, "accuracy_eot": 0.0, "draws": draws, "n": 0}
    with torch.inference_mode(), eval_mode(classifier):
        plain = classifier(x_adv).argmax(1)
    preds = _predict_draws(classifier, x_adv, fresh, draws, batch_size)
    goal_plain = plain == target if target is not None else plain != y
    goal = preds == target if target is not None else preds != y
    correct = (preds == y).float().mean(0)
    per_image = goal.float().mean(0)
    return {
        "success_plain": float(goal_plain.float().mean()),
        "success_eot": float(per_image.mean()),
        "accuracy_eot": float(correct.mean()),
        "draws": draws,
        "n": n,
        "targeted": target is not None,
    }


def viewpoint_table(
    classifier: nn.Module,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    angles=(-30, -15, 0, 15, 30),
    scales=(0.8, 1.0, 1.2),
    example: int = 0,
) -> dict:
    """Seed 003's Table 5 on a grid of fixed views (rotation in degrees x scale).

    "success": per cell ("angle,scale"), the share of the examples read as the target (untargeted: not
    as y). "accuracy": the share read as y. "example": for x_adv[example], per cell the top two
    classes with their softmax confidences, [[class, confidence], [class, confidence]]."""
    _check(x_adv, y, target)
    angles = [validate.number(a, "angle") for a in angles]
    scales = [validate.positive(s, "scale") for s in scales]
    if not angles or not scales:
        raise UserError("viewpoint_table needs at least one angle and one scale")
    if len(x_adv) == 0:
        raise UserError("viewpoint_table needs at least one example")
    example = validate.number(example, "example", low=0, high=len(x_adv) - 1, integer=True)
    success, accuracy, top2 = {}, {}, {}
    with torch.inference_mode(), eval_mode(classifier):
        for a in angles:
            for s in scales:
                key = f"{a:g},{s:g}"
                logits = classifier(viewpoint(a, s)(x_adv))
                pred = logits.argmax(1)
                hit = pred == target if target is not None else pred != y
                success[key] = float(hit.float().mean())
                accuracy[key] = float((pred == y).float().mean())
                conf, cls = logits[example].softmax(0).topk(2)
                top2[key] = [[int(c), round(float(p), 4)] for c, p in zip(cls, conf)]
    return {
        "angles": angles,
        "scales": scales,
        "success": success,
        "accuracy": accuracy,
        "example": {
            "index": example,
            "label": int(y[example]),
            "target": None if target is None else int(target[example]),
            "top2": top2,
        },
    }
