"""Unit dissection of a generator (after Bau et al. 2019, "GAN Dissection"), with our MNIST classifier as
the segmenter: which units of one generator layer predict the class of the generated digit, and what
removing them does.

    units = class_units(acts, classes)             # per class, the units ranked by how well they predict it
    with ablated(layer, units[3][:8]):              # those units forced to 0 at every position
        images = model.generate(z)

A unit's activation is its mean over positions. Its score for class c is the standardised difference of its
mean activation on samples the classifier reads as c and on the others (a t-like statistic). Ablation
replaces the units' outputs by 0 (Bau et al.'s removal) through a forward hook on the layer.
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


@contextmanager
def ablated(model: nn.Module, layer: nn.Module, units):
    """Within the block, `layer`'s output at `units` is 0 everywhere."""
    units = torch.as_tensor(list(units), dtype=torch.long)

    def hook(module, inputs, out):
        shaped = _spatial(out, model, layer).clone()
        shaped[:, units.to(shaped.device)] = 0
        return shaped.view_as(out)

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def class_shares(classifier, images: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    with torch.no_grad():
        _, logits = classifier.features_and_logits(images)
    return torch.bincount(logits.argmax(1), minlength=num_classes).double() / len(images)


@torch.no_grad()
def dissect(
    model: nn.Module, classifier, layer_name: str, n: int, units: int, seed: int = 0, num_classes: int = 10
) -> dict:
    """For every class: its top `units` units in the layer, its share before and after ablating them (same
    noise), and the largest change of any other class's share."""
    model.eval()
    layers = generator_layers(model)
    if layer_name not in layers:
        raise UserError(f"layer must be one of {', '.join(layers)}, got {layer_name!r}")
    layer = layers[layer_name]
    device = next(model.parameters()).device
    z = model.noise(n, torch.Generator(device=device).manual_seed(seed))
    acts, images = unit_activations(model, layer, z)
    if not 1 <= units < acts.shape[1]:
        raise UserError(f"units must be between 1 and {acts.shape[1] - 1} (the layer has {acts.shape[1]}), got {units}")
    _, logits = classifier.features_and_logits(images)
    classes = logits.argmax(1)
    before = torch.bincount(classes, minlength=num_classes).double() / n
    ranking = class_units(acts.cpu(), classes, num_classes)
    out = {}
    for c, order in ranking.items():
        top = order[:units].tolist()
        with ablated(model, layer, top):
            after = class_shares(classifier, model.generate(z), num_classes)
        others = [i for i in range(num_classes) if i != c]
        out[c] = {
            "units": top,
            "share_before": round(float(before[c]), 4),
            "share_after": round(float(after[c]), 4),
            "others_max_change": round(float((after[others] - before[others]).abs().max()), 4),
            "others_mean_change": round(float((after[others] - before[others]).abs().mean()), 4),
        }
    return {
        "layer": layer_name,
        "units_in_layer": int(acts.shape[1]),
        "n": n,
        "ablated_per_class": units,
        "shares_before": [round(float(s), 4) for s in before],
        "classes": out,
    }
