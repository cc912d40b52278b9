"""Training-time attacks (seed 004): label flipping and a backdoor trigger, their success rates, and a
simple detection (spectral signatures).

    >>> y_bad, idx = flip_labels(y, 0.05, num_classes=10, generator=g)                  # random flips
    >>> y_bad, idx = flip_labels(y, 0.05, num_classes=10, source=7, target=1)          # targeted: 7 -> 1
    >>> X_bad, y_bad, idx = backdoor(X, y, 0.05, target=0, generator=g)                 # BadNets patch
    >>> attack_success_rate(model, Xt, yt, target=0)                                    # triggered -> 0
    >>> scores = spectral_scores(features)                                              # per class

- Random flipping: a fraction of the training labels, each replaced by a class drawn uniformly from the
  *other* classes. Its harm is to clean accuracy.
- Targeted flipping: training points of class `source` relabelled `target` (a fraction of the whole
  training set, at most all of the source class). Success: the fraction of clean test points of
  `source` that the model classifies as `target`.
- Backdoor (Gu, Dolan-Gavitt & Garg 2017, "BadNets"): a small bright square in one corner of a fraction
  of the training images, each relabelled `target`. Success: the fraction of test points of other
  classes that the model sends to `target` once the trigger is stamped on them. Clean accuracy should
  hardly move: that is what makes it a backdoor.
- Spectral signatures (Tran, Li & Madry 2018): within one label, the poisoned points shift the
  penultimate features along one direction; the squared projection of each centred feature vector on
  the top right-singular vector of the class's feature matrix scores it, and the top 1.5 x epsilon of the
  scores are flagged, epsilon being the poisoned fraction of that class (known to the defender, as in
  Tran et al.).

Images are NCHW float32 in [0, 1]; every poisoned image stays in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import validate
from .errors import UserError

CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


def _count(fraction: float, n: int) -> int:
    return int(round(validate.probability(fraction, "fraction") * n))


def _class(value, name: str, num_classes: int) -> int:
    return validate.number(value, name, low=0, high=num_classes - 1, integer=True)


def flip_labels(
    y: torch.Tensor,
    fraction: float,
    num_classes: int,
    source: int | None = None,
    target: int | None = None,
    generator: torch.Generator | None = None,
):
    """Flip round(fraction * len(y)) labels. Random (source and target None): each to a uniformly drawn other
    class. Targeted (both given): points of class `source` to `target` (at most all of them).
    Returns (new labels, indices of the flipped points)."""
    num_classes = validate.positive(num_classes, "num_classes", integer=True)
    y = validate.labels(y, len(y), "y", num_classes=num_classes)
    k = _count(fraction, len(y))
    if (source is None) != (target is None):
        raise UserError("targeted label flipping needs both source and target (random flipping: neither)")
    y_new = y.clone()
    if source is None:
        if num_classes < 2:
            raise UserError("label flipping needs at least 2 classes")
        idx = torch.randperm(len(y), generator=generator)[:k].to(y.device)
        shift = torch.randint(1, num_classes, (len(idx),), generator=generator).to(y.device)
        y_new[idx] = (y[idx] + shift) % num_classes  # uniform over the other classes
        return y_new, idx.sort().values
    source, target = _class(source, "source", num_classes), _class(target, "target", num_classes)
    if source == target:
        raise UserError(f"source and target must differ, got {source} and {target}")
    pool = (y == source).nonzero().flatten()
    idx = pool[torch.randperm(len(pool), generator=generator)[:k].to(pool.device)]
    y_new[idx] = target
    return y_new, idx.sort().values


def add_trigger(
    x: torch.Tensor, size: int = 3, value: float = 1.0, corner: str = "bottom-right", margin: int = 1
) -> torch.Tensor:
    """A copy of the images x [B, C, H, W] with a size x size square of `value` (every channel) stamped
    `margin` pixels from one corner: the BadNets trigger."""
    x = validate.images(x, "x")
    size = validate.positive(size, "size", integer=True)
    margin = validate.nonnegative(margin, "margin", integer=True)
    value = validate.probability(value, "value")
    validate.choice(corner, "corner", CORNERS)
    h, w = x.shape[-2:]
    if size + margin > min(h, w):
        raise UserError(f"a trigger of size {size} with margin {margin} does not fit {h}x{w} images")
    top = margin if corner.startswith("top") else h - margin - size
    left = margin if corner.endswith("left") else w - margin - size
    out = x.clone()
    out[..., top : top + size, left : left + size] = value
    return out


def backdoor(
    X: torch.Tensor,
    y: torch.Tensor,
    fraction: float,
    target: int,
    num_classes: int = 10,
    generator: torch.Generator | None = None,
    **trigger,
):
    """Stamp the trigger on round(fraction * N) training images drawn from classes other than `target` and
    relabel them `target`. Returns (images, labels, indices of the poisoned points)."""
    target = _class(target, "target", validate.positive(num_classes, "num_classes", integer=True))
    X = validate.images(X, "X")
    y = validate.labels(y, len(X), "y", num_classes=num_classes)
    k = _count(fraction, len(X))
    pool = (y != target).nonzero().flatten()
    idx = pool[torch.randperm(len(pool), generator=generator)[:k].to(pool.device)].sort().values
    X_new, y_new = X.clone(), y.clone()
    if len(idx):
        X_new[idx] = add_trigger(X[idx], **trigger)
    y_new[idx] = target
    return X_new, y_new, idx


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def attack_success_rate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: int,
    source: int | None = None,
    trigger: dict | None = None,
) -> float:
    """Backdoor (trigger given, {} for the defaults): the fraction of points with y != target classified as
    `target` once triggered. Targeted flipping (source given, no trigger): the fraction of points of class
    `source` classified as `target`. A float in [0, 1]."""
    if (source is None) == (trigger is None):
        raise UserError("give either source (targeted flipping) or trigger (backdoor)")
    was = model.training
    model.eval()
    try:
        keep = (y != target) if trigger is not None else (y == source)
        if not keep.any():
            raise UserError("no test point to measure the attack on (every label is the target, or none the source)")
        xs = x[keep]
        if trigger is not None:
            xs = add_trigger(xs, **trigger)
        return float((_predict(model, xs) == target).float().mean())
    finally:
        model.train(was)


@torch.no_grad()
def penultimate_features(net: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The input of the last layer of an nn.Sequential (or a model whose .net is one): [B, D]."""
    seq = net if isinstance(net, nn.Sequential) else getattr(net, "net", None)
    if not isinstance(seq, nn.Sequential) or len(seq) < 2:
        raise UserError("penultimate features need an nn.Sequential (or a model whose .net is one)")
    body = seq[:-1]
    return torch.cat([body(x[i : i + batch_size]).flatten(1) for i in range(0, len(x), batch_size)])


def spectral_scores(features: torch.Tensor) -> torch.Tensor:
    """Tran et al. (2018): the squared projection of each centred row of `features` [N, D] on the top right
    singular vector of the centred matrix. [N]."""
    if features.dim() != 2 or len(features) < 2:
        raise UserError(f"features must be [N >= 2, D], got {tuple(features.shape)}")
    centred = features.double() - features.double().mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[0]).pow(2)


def spectral_detect(
    features: torch.Tensor, labels: torch.Tensor, fraction: float, multiplier: float = 1.5, classes=None
) -> torch.Tensor:
    """Flag, within every label (or only those in `classes`), the top ceil(multiplier * fraction * n_label)
    spectral scores. `fraction` is the poisoned fraction *within a label* that the defender expects (Tran et
    al.'s epsilon). Returns a boolean mask [N] (True: flagged as poisoned)."""
    fraction = validate.probability(fraction, "fraction")
    multiplier = validate.positive(multiplier, "multiplier")
    flagged = torch.zeros(len(features), dtype=torch.bool)
    for c in labels.unique() if classes is None else torch.as_tensor(list(classes)):
        members = (labels == c).nonzero().flatten()
        k = min(len(members), math.ceil(multiplier * fraction * len(members) - 1e-9))  # 1.5 * 0.05 * 200 = 15.000...02
        if k == 0 or len(members) < 2:
            continue
        scores = spectral_scores(features[members])
        flagged[members[scores.topk(k).indices]] = True
    return flagged


def detection_rates(flagged: torch.Tensor, poisoned_idx: torch.Tensor) -> dict:
    """Recall (poisoned points flagged / poisoned points) and precision (poisoned among flagged)."""
    truth = torch.zeros_like(flagged)
    truth[poisoned_idx] = True
    hits = int((flagged & truth).sum())
    return {
        "recall": hits / max(int(truth.sum()), 1),
        "precision": hits / max(int(flagged.sum()), 1),
        "flagged": int(flagged.sum()),
        "poisoned": int(truth.sum()),
    }
