"""Unit dissection of a generator (after Bau et al. 2019, "GAN Dissection"), with our MNIST classifier as
the segmenter: which units of one generator layer predict the class of the generated digit, and what
removing them does.

    units = class_units(acts, classes)             # per class, the units ranked by how well they predict it
    with ablated(layer, units[3][:8]):              # those units forced to 0 at every position
        images = model.generate(z)

Three rankings of a layer's units for class c:
- `specific`: the causal effect below on c minus its mean effect on the other classes (each on its own
  samples): a unit whose removal unmakes every digit (a generic unit) ranks low. Without this, the top
  causal units of most classes were the same few generic units, and removing them turned digits of
  every class into one other class;
- `contrast`: a unit's activation is its mean over positions, its score the standardised difference of
  its mean activation on samples the classifier reads as c and on the others (a t-like statistic);
- `causal`: the drop of the classifier's log-probability of c, averaged over the samples read as c, when
  that unit alone is ablated (Bau et al. 2019, Sec. 3.2, rank units by their causal effect; one pass per
  unit). A unit can correlate with a class without making it: contrast ranking found units whose
  removal barely moved any class.
Ablation replaces the units' outputs by 0 (Bau et al.'s removal) or by their mean map over samples
(`values`), through a forward hook on the layer.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .errors import UserError


def generator_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The dissectable layers (outputs [N, C, H, W] after a non-linearity) of a DCGAN- or ProGAN-style model."""
    g = model.generator
    if hasattr(g, "project") and hasattr(g, "blocks") and isinstance(g.blocks, nn.Sequential):  # DCGAN
        return {"project": g.project, "block1": g.blocks[2]}
    if hasattr(g, "blocks") and isinstance(g.blocks, nn.ModuleList):  # ProGAN
        return {f"block{i}": b for i, b in enumerate(g.blocks)}
    raise UserError(f"{type(model).__name__} has no convolutional generator layers to dissect (use dcgan or progan)")


def _spatial(out: torch.Tensor, model: nn.Module, layer: nn.Module) -> torch.Tensor:
    g = model.generator
    if getattr(g, "project", None) is layer and out.dim() == 2:  # DCGAN's projection: reshape to [N, C, h, w]
        out = out.view(len(out), *g.base)
    return out


@torch.no_grad()
def unit_activations(model: nn.Module, layer: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean activation of every unit of `layer` [N, U], the generated images [N, C, H, W] in [0, 1])."""
    seen = []

    def hook(module, inputs, out):
        seen.append(_spatial(out, model, layer).mean(dim=(2, 3)))

    handle = layer.register_forward_hook(hook)
    try:
        images = model.generate(z)
    finally:
        handle.remove()
    return seen[0], images


def class_units(acts: torch.Tensor, classes: torch.Tensor, num_classes: int = 10) -> dict[int, torch.Tensor]:
    """Class -> all units, best predictor of that class first (standardised mean difference, in vs out)."""
    acts = acts.double()
    ranking = {}
    for c in range(num_classes):
        inside = classes == c
        if inside.sum() < 2 or (~inside).sum() < 2:
            continue
        a, b = acts[inside], acts[~inside]
        pooled = ((a.var(0) + b.var(0)) / 2).sqrt() + 1e-8
        ranking[c] = torch.argsort((a.mean(0) - b.mean(0)) / pooled, descending=True)
    return ranking


RANKINGS = ("specific", "causal", "contrast")
ABLATIONS = ("zero", "mean")


@contextmanager
def ablated(model: nn.Module, layer: nn.Module, units, values: torch.Tensor | None = None):
    """Within the block, `layer`'s output at `units` is 0 everywhere, or `values[units]` (a map [U, h, w]
    of every unit of the layer, e.g. its mean over samples, from `mean_maps`) when given."""
    units = torch.as_tensor(list(units), dtype=torch.long)

    def hook(module, inputs, out):
        shaped = _spatial(out, model, layer).clone()
        index = units.to(shaped.device)
        shaped[:, index] = 0 if values is None else values.to(shaped.device, shaped.dtype)[index]
        return shaped.view_as(out)

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def mean_maps(model: nn.Module, layer: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Every unit's activation map averaged over the samples of `z`: [U, h, w]."""
    seen = []
    handle = layer.register_forward_hook(lambda m, i, out: seen.append(_spatial(out, model, layer).mean(0)))
    try:
        model.generate(z)
    finally:
        handle.remove()
    return seen[0]


@torch.no_grad()
def causal_units(
    model: nn.Module,
    layer: nn.Module,
    z: torch.Tensor,
    classifier,
    num_classes: int = 10,
    values: torch.Tensor | None = None,
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """(class -> all units, the largest causal effect first; the effects [U, num_classes]). A unit's effect
    on class c: the mean over samples read as c of log p(c | G(z)) - log p(c | G(z) with the unit ablated)."""
    _, logits = classifier.features_and_logits(model.generate(z))
    logp = logits.log_softmax(1)
    classes = logp.argmax(1)
    units = _spatial(_layer_output(model, layer, z[:1]), model, layer).shape[1]
    effect = torch.zeros(units, num_classes, dtype=torch.float64)
    for u in range(units):
        with ablated(model, layer, [u], values):
            _, cut = classifier.features_and_logits(model.generate(z))
        drop = (logp - cut.log_softmax(1)).gather(1, classes[:, None]).squeeze(1).double().cpu()
        effect[u] = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, classes.cpu(), drop)
    counts = torch.bincount(classes.cpu(), minlength=num_classes)
    effect /= counts.clamp(min=1)
    ranking = {c: torch.argsort(effect[:, c], descending=True) for c in range(num_classes) if counts[c] >= 2}
    return ranking, effect


def specific_ranking(effect: torch.Tensor, present) -> dict[int, torch.Tensor]:
    """Class -> all units, most specific first: effect on c minus the mean effect on the other classes
    present (those with samples), from the [U, num_classes] effects of `causal_units`."""
    present = [int(c) for c in present]
    ranking = {}
    for c in present:
        others = [o for o in present if o != c]
        score = effect[:, c] - (effect[:, others].mean(1) if others else 0)
        ranking[c] = torch.argsort(score, descending=True)
    return ranking


def _layer_output(model: nn.Module, layer: nn.Module, z: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = layer.register_forward_hook(lambda m, i, out: seen.append(out))
    try:
        model.generate(z)
    finally:
        handle.remove()
    return seen[0]


def _read(classifier, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return classifier.features_and_logits(images)[1].argmax(1).cpu()


def class_shares(classifier, images: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    with torch.no_grad():
        _, logits = classifier.features_and_logits(images)
    return torch.bincount(logits.argmax(1), minlength=num_classes).double() / len(images)


@torch.no_grad()
def dissect(
    model: nn.Module,
    classifier,
    layer_name: str,
    n: int,
    units: int,
    seed: int = 0,
    num_classes: int = 10,
    ranking: str = "specific",
    ablation: str = "zero",
    also_units=(),
    cache: dict | None = None,
) -> dict:
    """For every class: its top `units` units in the layer, its share before and after ablating them, and
    the largest change of any other class's share. Units are ranked on `n` samples of one noise draw
    (seed) and judged on `n` samples of another (seed + 1), so that a causal ranking is not judged on the
    samples it was chosen on; the mean maps of `ablation="mean"` come from the ranking draw. `also_units`:
    other counts judged with the same ranking (result["more_units"][str(k)], each like "classes"). `cache`:
    a dict that keeps the causal effects between calls on the same model, layer, ablation, n and seed."""
    from . import validate

    validate.choice(ranking, "ranking", RANKINGS)
    validate.choice(ablation, "ablation", ABLATIONS)
    model.eval()
    layers = generator_layers(model)
    if layer_name not in layers:
        raise UserError(f"layer must be one of {', '.join(layers)}, got {layer_name!r}")
    layer = layers[layer_name]
    device = next(model.parameters()).device
    z_rank = model.noise(n, torch.Generator(device=device).manual_seed(seed))
    z = model.noise(n, torch.Generator(device=device).manual_seed(seed + 1))
    acts, images = unit_activations(model, layer, z_rank)
    for k in (units, *also_units):
        if not 1 <= k < acts.shape[1]:
            raise UserError(f"units must be between 1 and {acts.shape[1] - 1} (the layer has {acts.shape[1]}), got {k}")
    values = mean_maps(model, layer, z_rank) if ablation == "mean" else None
    if ranking in ("causal", "specific"):
        key = (id(model), layer_name, ablation, n, seed)
        if cache is not None and key in cache:
            order, effect = cache[key]
        else:
            order, effect = causal_units(model, layer, z_rank, classifier, num_classes, values)
            if cache is not None:
                cache[key] = (order, effect)
        if ranking == "specific":
            order = specific_ranking(effect, order)
    else:
        _, logits = classifier.features_and_logits(images)
        order = class_units(acts.cpu(), logits.argmax(1).cpu(), num_classes)
    read_before = _read(classifier, model.generate(z))
    before = torch.bincount(read_before, minlength=num_classes).double() / n

    def judged(k: int) -> dict:
        out = {}
        for c, ranked in order.items():
            top = ranked[:k].tolist()
            with ablated(model, layer, top, values):
                read_after = _read(classifier, model.generate(z))
            after = torch.bincount(read_after, minlength=num_classes).double() / n
            others = [i for i in range(num_classes) if i != c]
            rest = read_before != c
            out[c] = {
                "units": top,
                "share_before": round(float(before[c]), 4),
                "share_after": round(float(after[c]), 4),
                "others_max_change": round(float((after[others] - before[others]).abs().max()), 4),
                "others_mean_change": round(float((after[others] - before[others]).abs().mean()), 4),
                # the samples of the other classes that the ablation turned into another class
                "others_switched": round(float((read_after[rest] != read_before[rest]).double().mean()), 4),
            }
        return out

    out = judged(units)
    more = {str(k): judged(k) for k in also_units}
    return {
        "layer": layer_name,
        "units_in_layer": int(acts.shape[1]),
        "n": n,
        "ablated_per_class": units,
        "ranking": ranking,
        "ablation": ablation,
        "shares_before": [round(float(s), 4) for s in before],
        "classes": out,
        **({"more_units": more} if more else {}),
    }


def verdict(result: dict) -> dict:
    """The issue's test on a `dissect` result: the classes whose share at least halved, those for which
    every other class moved less than the ablated one fell, and those that pass both."""
    classes = result["classes"]
    halved = [str(c) for c, r in classes.items() if r["share_after"] <= r["share_before"] / 2]
    less = [str(c) for c, r in classes.items() if r["others_max_change"] < r["share_before"] - r["share_after"]]
    return {
        "classes_halved": halved,
        "classes_others_moved_less": less,
        "classes_passing": [c for c in halved if c in less],
        "of": len(classes),
    }
