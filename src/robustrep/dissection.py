"""Unit dissection of a generator (after Bau et al. 2019, "GAN Dissection"), with our MNIST classifier as
the segmenter: which units of one generator layer predict the class of the generated digit, and what
removing them does.

    units = class_units(acts, classes)             # per class, the units ranked by how well they predict it
    with ablated(layer, units[3][:8]):              # those units forced to 0 at every position
        images = model.generate(z)

Four rankings of a layer's units for class c:
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
- `greedy`: the units chosen one at a time, each the one among the specific ranking's top that, ablated
  together with those chosen before, most lowers log p(c) on c's samples less the loss of the other classes'
  own log-probabilities on theirs (`set_score`): the same aim as `specific`, for the set that is ablated.
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


def _layer_maps(model: nn.Module, layer: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(`layer`'s output as unit maps [N, U, h, w], the generated images [N, C, H, W]) for the noise z."""
    seen = []
    handle = layer.register_forward_hook(lambda m, i, out: seen.append(_spatial(out, model, layer)))
    try:
        images = model.generate(z)
    finally:
        handle.remove()
    return seen[0], images


@torch.no_grad()
def layer_units(model: nn.Module, layer: nn.Module, z: torch.Tensor) -> int:
    """The number of units (channels) of `layer`, read from one forward pass on z."""
    return _layer_maps(model, layer, z)[0].shape[1]


@torch.no_grad()
def unit_activations(model: nn.Module, layer: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean activation of every unit of `layer` [N, U], the generated images [N, C, H, W] in [0, 1])."""
    maps, images = _layer_maps(model, layer, z)
    return maps.mean(dim=(2, 3)), images


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


RANKINGS = ("specific", "causal", "contrast", "greedy")
VARIANT_RANKINGS = RANKINGS[:3]  # greedy costs a pass per candidate and step: run only when chosen
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
    return _layer_maps(model, layer, z)[0].mean(0)


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
    units = layer_units(model, layer, z[:1])
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


def set_score(logp: torch.Tensor, cut: torch.Tensor, classes: torch.Tensor, c: int) -> float:
    """How specifically one ablation unmakes class c: the mean drop of log p(c) over the samples read as c,
    less the mean over the other classes present of the mean *loss* of log p(own class) over their samples
    (a rise of another class's own probability earns nothing). `logp`, `cut`: [N, classes] log-probabilities
    before and after; `classes`: the class each sample was read as before."""
    drop = (logp - cut).gather(1, classes[:, None]).squeeze(1).double()
    mine = classes == c
    others = [drop[classes == j].clamp(min=0).mean() for j in classes.unique().tolist() if j != c]
    return float(drop[mine].mean() - (torch.stack(others).mean() if others else 0.0))


@torch.no_grad()
def greedy_ranking(
    model: nn.Module,
    layer: nn.Module,
    z: torch.Tensor,
    classifier,
    start: dict[int, torch.Tensor],
    steps: int,
    pool: int,
    values: torch.Tensor | None = None,
    per_class: int = 20,
) -> dict[int, torch.Tensor]:
    """Class -> all units: the first `steps` chosen one at a time, each the unit among the top `pool` of
    `start[c]` (e.g. the specific ranking) that, ablated together with those already chosen, maximises
    `set_score` (single-unit effects do not add up: two units can each matter alone and not together);
    then the rest of `start[c]`. Judged on the samples of `z` read as c and at most `per_class` samples
    of each other class (the first ones of the draw), to keep a step to one pass per candidate."""
    _, logits = classifier.features_and_logits(model.generate(z))
    logp_all = logits.log_softmax(1)
    read = logp_all.argmax(1)
    ranking = {}
    for c, order in start.items():
        keep = torch.zeros(len(z), dtype=torch.bool, device=read.device)
        for j in read.unique().tolist():
            where = (read == j).nonzero().flatten()
            keep[where if j == c else where[:per_class]] = True
        zc, logp, classes = z[keep], logp_all[keep], read[keep]
        chosen, candidates = [], order[:pool].tolist()
        for _ in range(min(steps, len(candidates))):
            best, best_score = None, -float("inf")
            for u in candidates:
                with ablated(model, layer, chosen + [u], values):
                    cut = classifier.features_and_logits(model.generate(zc))[1].log_softmax(1)
                score = set_score(logp, cut, classes, c)
                if score > best_score:
                    best, best_score = u, score
            chosen.append(best)
            candidates.remove(best)
        rest = [u for u in order.tolist() if u not in chosen]
        ranking[c] = torch.tensor(chosen + rest, dtype=torch.long)
    return ranking


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
    if ranking in ("causal", "specific", "greedy"):
        key = (id(model), layer_name, ablation, n, seed)
        if cache is not None and key in cache:
            order, effect = cache[key]
        else:
            order, effect = causal_units(model, layer, z_rank, classifier, num_classes, values)
            if cache is not None:
                cache[key] = (order, effect)
        if ranking in ("specific", "greedy"):
            order = specific_ranking(effect, order)
        if ranking == "greedy":  # `units` picks among the specific top 1.5 x units; more units: specific's next
            order = greedy_ranking(model, layer, z_rank, classifier, order, units, units + (units + 1) // 2, values)
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
                **own_sample_losses(read_before, read_after, c, num_classes),
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
        "random_units": random_control(model, layer, z, classifier, read_before, units, values, seed, num_classes),
        **({"more_units": more} if more else {}),
        **(
            {
                "more_units_random": {
                    str(k): random_control(model, layer, z, classifier, read_before, k, values, seed, num_classes)
                    for k in also_units
                }
            }
            if more
            else {}
        ),
    }


MIN_SHARE = 0.02  # a class below 2% of the samples (20 of 1000) is too small for its own relative changes


def own_sample_losses(read_before: torch.Tensor, read_after: torch.Tensor, c: int, num_classes: int = 10) -> dict:
    """Per-sample view of one ablation (the same noise before and after): the share of class c's own samples
    no longer read as c (`target_lost`); for the other classes with at least MIN_SHARE of the samples, the
    largest share of a class's own samples read as something else after (`others_lost_max`, that class in
    `others_lost_class`), and the largest relative change of such a class's share (`others_max_rel_change`,
    |after / before - 1|, which counts the samples that c lost to it)."""
    n = len(read_before)
    before = torch.bincount(read_before, minlength=num_classes).double()
    after = torch.bincount(read_after, minlength=num_classes).double()
    mine = read_before == c
    target_lost = float((read_after[mine] != c).double().mean()) if mine.any() else 0.0
    lost, rel = {}, {}
    for j in range(num_classes):
        if j == c or before[j] < MIN_SHARE * n:
            continue
        own = read_before == j
        lost[j] = float((read_after[own] != j).double().mean())
        rel[j] = float((after[j] / before[j] - 1).abs())
    worst = max(lost, key=lost.get) if lost else None
    return {
        "target_lost": round(target_lost, 4),
        "others_lost_max": round(lost[worst], 4) if lost else 0.0,
        "others_lost_class": worst,
        "others_max_rel_change": round(max(rel.values()), 4) if rel else 0.0,
    }


@torch.no_grad()
def random_control(
    model, layer, z, classifier, read_before, units: int, values=None, seed: int = 0, num_classes: int = 10, draws=5
) -> dict:
    """The same number of units ablated at random (`draws` seeded draws): how fragile the layer is to any
    ablation of that size. `switched`: the mean share of all samples whose class changed; `lost_max`: the
    mean over draws of the largest share of a class's own samples (classes of at least MIN_SHARE) lost."""
    count = layer_units(model, layer, z[:2])
    g = torch.Generator().manual_seed(seed + 10_007)
    switched, lost_max = [], []
    for _ in range(draws):
        pick = torch.randperm(count, generator=g)[:units].tolist()
        with ablated(model, layer, pick, values):
            read_after = _read(classifier, model.generate(z))
        switched.append(float((read_after != read_before).double().mean()))
        losses = [
            float((read_after[read_before == j] != j).double().mean())
            for j in range(num_classes)
            if (read_before == j).sum() >= MIN_SHARE * len(read_before)
        ]
        lost_max.append(max(losses) if losses else 0.0)
    return {
        "units": units,
        "draws": draws,
        "switched": round(sum(switched) / draws, 4),
        "lost_max": round(sum(lost_max) / draws, 4),
    }


TESTS = ("own_samples", "relative_share", "absolute_share")


def verdict(result: dict) -> dict:
    """The issue's test on a `dissect` result: the classes whose share at least halved, and, for each reading
    of "the other classes move less", those classes for which it holds and those that pass both:

    - `own_samples` (the headline): every other class (of at least MIN_SHARE) loses a smaller share of its
      own samples than class c loses of its own. It does not count where c's lost samples go: they must be
      read as some class, and if all become one class that class gains exactly what c lost;
    - `relative_share`: every other class's share changes by a smaller fraction of itself than c's falls;
    - `absolute_share`: every other class's share changes by less than c's share falls (the first reading;
      by that same conservation it fails whenever c's lost samples go mostly to one class)."""
    classes = result["classes"]
    halved = [str(c) for c, r in classes.items() if r["share_after"] <= r["share_before"] / 2]

    def fell(r):
        return r["share_before"] - r["share_after"]

    less = {
        "own_samples": [str(c) for c, r in classes.items() if r["others_lost_max"] < r["target_lost"]],
        "relative_share": [
            str(c)
            for c, r in classes.items()
            if r["share_before"] > 0 and r["others_max_rel_change"] < fell(r) / r["share_before"]
        ],
        "absolute_share": [str(c) for c, r in classes.items() if r["others_max_change"] < fell(r)],
    }
    tests = {t: {"others_moved_less": less[t], "passing": [c for c in halved if c in less[t]]} for t in TESTS}
    return {
        "classes_halved": halved,
        "classes_passing": tests["own_samples"]["passing"],
        "tests": tests,
        "of": len(classes),
    }
