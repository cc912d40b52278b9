"""Unit dissection of a DCGAN-style generator on MNIST (after Bau et al. 2019): for each digit class, the
units of one generator layer (`--layer block1`, the middle one, by default) ranked by their causal effect
on that class (the drop of our classifier's log-probability of the class when the unit alone is ablated)
less their mean effect on the other classes (`--ranking specific`, the default), by that effect alone
(`causal`), by how well their mean activation predicts the class (`contrast`), or chosen one at a time
for their joint specific effect (`greedy`); then a class's top units are forced to 0 (or to their mean
map, `--ablation mean`) and fresh noise is generated with and without them. A class's share should drop
by at least half while the other classes move less: read three ways (`dissection.verdict`), next to a
control that ablates as many random units.

Besides the chosen setting, results.json holds the same test for every layer x ranking x ablation (not
greedy), for half and twice the units, and for the generator after `--early-epochs` (an undertrained
one): the evidence of what made the test pass or fail.

Trains a DCGAN (or uses `--run`, a dcgan, wgan or wgan-gp run folder; then no early generator), writes
results.json, ablation.png (samples of each class before and after) and report.html.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from .. import data, plots, report, validate
from ..dissection import ABLATIONS, RANKINGS, VARIANT_RANKINGS, ablated, dissect, generator_layers, mean_maps, verdict
from ..errors import UserError
from ..evaluation.feature_classifier import load_feature_classifier
from ..runs import load_model, load_weights, read_metrics, read_yaml
from ..training import train_seconds as _seconds
from ..utils import atomic_write, resolve_device
from .budgets import add_budget_arguments, budget_settings
from .generative import BATCH, train_or_resume

NAME = "dissection"
GENERATORS = ("dcgan", "wgan", "wgan-gp")  # the models with the DCGAN generator (--run)
HELP = "units of a DCGAN generator that make each digit class, and what ablating them does (Bau et al. 2019)"

BUDGETS = {
    "quick": dict(subset=6000, epochs=20, early_epochs=3, width=16, n=1000, units=8),
    "full": dict(subset=0, epochs=20, early_epochs=3, width=32, n=10000, units=16),
}


def add_arguments(p) -> None:
    add_budget_arguments(p, BUDGETS)
    p.add_argument(
        "--layer",
        default="block1",
        help="generator layer: block1 (14x14, the middle layer, where Bau et al. look; default) or project (7x7, "
        "the first layer after the noise)",
    )
    p.add_argument(
        "--run",
        default=None,
        help="dissect the generator of this trained run folder (dcgan, wgan, wgan-gp: `robustrep train` or the "
        "model folders of `reproduce generative`) instead of training a DCGAN",
    )
    p.add_argument(
        "--ranking",
        default="specific",
        help="specific (causal effect on the class minus that on the others), causal (effect of ablating each "
        "unit alone), contrast (activation difference) or greedy (the units chosen one at a time for their joint "
        "specific effect; slow: a pass per candidate and step, so not among the variants)",
    )
    p.add_argument("--ablation", default="zero", help="zero (Bau et al.'s removal) or mean (the unit's mean map)")


def settings_from(args) -> dict:
    s = budget_settings(args, BUDGETS)
    validate.count(s["subset"], "--subset")
    validate.positive(s["epochs"], "--epochs", integer=True, high=10_000)
    validate.nonnegative(s["early_epochs"], "--early-epochs", integer=True, high=10_000)
    if s["early_epochs"] >= s["epochs"]:
        raise UserError(
            f"--early-epochs must be below --epochs ({s['epochs']}), or 0 for none, got {s['early_epochs']}"
        )
    validate.width(s["width"], "--width")
    validate.positive(s["n"], "--n", integer=True, high=100_000)
    if s["n"] < 100:
        raise UserError(f"--n must be at least 100 samples (class shares), got {s['n']}")
    validate.positive(s["units"], "--units", integer=True, high=10_000)
    validate.choice(args.layer, "--layer", ("project", "block1"))
    if args.run is not None:
        validate.existing_dir(args.run, "--run")
        config = Path(args.run) / "config.yaml"
        model = read_yaml(config).get("model") if config.exists() else None
        if model not in GENERATORS:
            raise UserError(
                f"--run must be a run folder of {', '.join(GENERATORS)} (its config.yaml names the model), "
                f"got {args.run} ({model or 'no config.yaml'})"
            )
    validate.choice(args.ranking, "--ranking", RANKINGS)
    validate.choice(args.ablation, "--ablation", ABLATIONS)
    s.update(
        layer=args.layer, run=args.run, ranking=args.ranking, ablation=args.ablation, seed=validate.seed(args.seed)
    )
    return s


def _figure(model, layer, result: dict, z: torch.Tensor, classes: torch.Tensor, path: Path, k: int = 8) -> None:
    """Per ablated class: k samples read as that class, and the same noise with its units removed."""
    values = mean_maps(model, layer, z) if result["ablation"] == "mean" else None
    rows = []
    names = []
    for c, r in result["classes"].items():
        pick = (classes == int(c)).nonzero().flatten()[:k]
        if len(pick) < k:
            continue
        with torch.no_grad():
            before = model.generate(z[pick])
            with ablated(model, layer, r["units"], values):
                after = model.generate(z[pick])
        rows += [before.cpu(), after.cpu()]
        names.append(c)
    if rows:
        plots.image_grid(
            torch.cat(rows),
            path,
            columns=k,
            title=f"rows in pairs: class {', '.join(map(str, names))} before / after ablating its units",
        )


SHORT = (
    "share_before",
    "share_after",
    "others_max_change",
    "others_switched",
    "target_lost",
    "others_lost_max",
    "others_max_rel_change",
)


def _short(result: dict) -> dict:
    """A variant's outcome in a line: the verdict, the random-units control, and per class the values named
    in `columns` (SHORT: share before and after, the largest absolute change of another class's share, the
    share of the other classes' samples whose class changed, the share of the class's own samples lost, the
    largest share of another class's own samples lost, the largest relative change of another class's share)."""
    return {
        **verdict(result),
        "random_units": result.get("random_units"),
        "columns": list(SHORT),
        "shares": {str(c): [r[k] for k in SHORT] for c, r in result["classes"].items()},
    }


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    t0 = time.perf_counter()
    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fc = load_feature_classifier(device, progress=progress)
    train_seconds, early = None, None
    generator = {"model": "dcgan", "run": None}
    if s["run"]:
        model = load_model(s["run"], device)
        generator_layers(model)  # refuses a generator without the convolutional layers (wgan --arch mlp)
        config, history = read_yaml(Path(s["run"]) / "config.yaml"), read_metrics(s["run"])
        train_seconds = _seconds(history)
        generator = {
            "model": config["model"],
            "run": str(Path(s["run"]).resolve()),
            "hparams": config.get("hparams"),
            "training": config.get("training"),
            "epochs_done": len(history),
            "sha256": hashlib.sha256((Path(s["run"]) / "model.safetensors").read_bytes()).hexdigest(),
        }
    else:
        X, y = data.load("mnist", "train")
        X, _ = data.random_subset(X, y, s["subset"], s["seed"])
        hparams = dict(input_shape=[1, 28, 28], width=s["width"], init="dcgan")
        run_dir = out / "dcgan"
        if s["early_epochs"]:
            early, _ = train_or_resume(
                "dcgan", "dcgan", hparams, X, s, s["early_epochs"], run_dir, device, progress, BATCH
            )
            snapshot = run_dir / f"epoch{s['early_epochs']}.safetensors"
            if not snapshot.exists():  # the early generator, kept for a rerun after the full training
                weights = (run_dir / "model.safetensors").read_bytes()
                atomic_write(snapshot, lambda f, b=weights: f.write(b))
            early = load_weights(early, snapshot).to(device).eval()
        model, train_seconds = train_or_resume(
            "dcgan", "dcgan", hparams, X, s, s["epochs"], run_dir, device, progress, BATCH
        )
    model.eval()
    chosen = dict(ranking=s["ranking"], ablation=s["ablation"])
    # half and twice the units, twice capped below the layer's size (block1 of a narrow generator is small)
    halves = sorted({max(1, s["units"] // 2), min(2 * s["units"], _units_in(model, s["layer"]) - 1)} - {s["units"]})
    cache = {}  # the causal effects of each layer and ablation, computed once for both causal rankings
    result = dissect(
        model, fc, s["layer"], s["n"], s["units"], seed=s["seed"], also_units=halves, cache=cache, **chosen
    )
    layers = generator_layers(model)
    variants = {}
    for name in layers:
        for ranking in VARIANT_RANKINGS:
            for ablation in ABLATIONS:
                key = f"{name}/{ranking}/{ablation}"
                if (name, ranking, ablation) == (s["layer"], s["ranking"], s["ablation"]):
                    variants[key] = _short(result)
                    continue
                units = min(s["units"], _units_in(model, name) - 1)
                r = dissect(
                    model, fc, name, s["n"], units, seed=s["seed"], ranking=ranking, ablation=ablation, cache=cache
                )
                variants[key] = _short(r)
                print(f"{key}: {len(variants[key]['classes_passing'])} of {variants[key]['of']} pass", file=sys.stderr)
    more_units = {
        k: _short(dict(result, classes=v, random_units=result["more_units_random"][k]))
        for k, v in result.get("more_units", {}).items()
    }
    early_result = None
    if early is not None:
        early_result = _short(dissect(early, fc, s["layer"], s["n"], s["units"], seed=s["seed"], **chosen))
    layer = layers[s["layer"]]
    z = model.noise(s["n"], torch.Generator(device=device).manual_seed(s["seed"] + 1))
    with torch.no_grad():
        _, logits = fc.features_and_logits(model.generate(z))
    _figure(model, layer, result, z, logits.argmax(1), out / "ablation.png")
    classes = {str(c): r for c, r in result["classes"].items()}
    v = verdict(result)
    results = {
        **{k: val for k, val in result.items() if k not in ("more_units", "more_units_random")},
        "classes": classes,
        **v,
        "more_units": more_units,
        "variants": variants,
        "early": None if early_result is None else {"epochs": s["early_epochs"], **early_result},
        "train_seconds": train_seconds,
        "generator": generator,
        "classifier": {k: fc.info[k] for k in ("test_accuracy", "sha256")},
        "settings": s,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    columns = ("share_before", "share_after", "others_max_change", "others_max_rel_change", "target_lost")
    rows = [
        [
            c,
            *(r[k] for k in columns),
            f"{r['others_lost_max']} ({r['others_lost_class']})",
            " ".join(map(str, r["units"])),
        ]
        for c, r in classes.items()
    ]
    blank = [""] * (len(columns) + 1)

    def passes(x: dict) -> str:
        return "; ".join(f"{t}: {len(x['tests'][t]['passing'])}" for t in x["tests"]) + f" of {x['of']} pass"

    rows.append(["random units", *blank, str(result["random_units"])])
    rows += [[f"variant {k}", *blank, passes(x)] for k, x in variants.items()]
    rows += [[f"{k} units", *blank, passes(x)] for k, x in more_units.items()]
    if early_result:
        rows.append([f"after {s['early_epochs']} epochs", *blank, passes(early_result)])
    report.write_html(
        out / "report.html",
        f"Unit dissection of a {generator['model']} generator",
        f"Layer {s['layer']} ({result['units_in_layer']} units); the top {s['units']} units of each class by "
        f"{s['ranking']} ranking set to {s['ablation']}; units ranked on {s['n']} samples, judged on {s['n']} "
        f"others with the same noise before and after. Classes whose share at least halved while every other "
        f"class lost a smaller share of its own samples: {len(v['classes_passing'])} of {v['of']} "
        f"({passes(v)}, by the three readings of 'the others move less'). Wall time {results['seconds']:.0f} s.",
        [
            "class",
            "share before",
            "share after",
            "largest change of another class's share",
            "largest relative change",
            "own samples lost",
            "largest share of another class's own samples lost (class)",
            "units",
        ],
        rows,
        [out / "ablation.png"],
        s,
    )
    for row in rows:
        print("  ".join(str(x) for x in row), file=sys.stderr)
    return results


def _units_in(model, name: str) -> int:
    """The number of units (channels) of a generator layer."""
    from ..dissection import layer_units

    return layer_units(model, generator_layers(model)[name], model.noise(1))
