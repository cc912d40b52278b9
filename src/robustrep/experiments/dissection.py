"""Unit dissection of a DCGAN generator on MNIST (after Bau et al. 2019): for each digit class, the units
of one generator layer whose mean activation best predicts that our classifier reads the generated digit
as that class; then those units are forced to 0 and the same noise is generated again. A class's share
should drop by at least half while the other classes change less.

Trains a DCGAN (or uses `--run`, a DCGAN run folder of `robustrep train dcgan`), writes results.json,
ablation.png (samples of the class before and after, for the classes that were ablated) and report.html.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from .. import data, plots, report, validate
from ..dissection import ablated, dissect, generator_layers
from ..errors import UserError
from ..evaluation.feature_classifier import load_feature_classifier
from ..runs import load_model
from ..utils import atomic_write, resolve_device
from .budgets import add_budget_arguments, budget_settings
from .generative import BATCH, train_or_resume

NAME = "dissection"
HELP = "units of a DCGAN generator that make each digit class, and what ablating them does (Bau et al. 2019)"

BUDGETS = {
    "quick": dict(subset=6000, epochs=3, width=16, n=2000, units=8),
    "full": dict(subset=0, epochs=20, width=32, n=10000, units=16),
}


def add_arguments(p) -> None:
    add_budget_arguments(p, BUDGETS)
    p.add_argument("--layer", default="project", help="generator layer: project (7x7) or block1 (14x14)")
    p.add_argument("--run", default=None, help="dissect this trained dcgan run folder instead of training one")


def settings_from(args) -> dict:
    s = budget_settings(args, BUDGETS)
    validate.count(s["subset"], "--subset")
    validate.positive(s["epochs"], "--epochs", integer=True, high=10_000)
    validate.width(s["width"], "--width")
    validate.positive(s["n"], "--n", integer=True, high=100_000)
    if s["n"] < 100:
        raise UserError(f"--n must be at least 100 samples (class shares), got {s['n']}")
    validate.positive(s["units"], "--units", integer=True, high=10_000)
    validate.choice(args.layer, "--layer", ("project", "block1"))
    if args.run is not None:
        validate.existing_dir(args.run, "--run")
    s.update(layer=args.layer, run=args.run, seed=validate.seed(args.seed))
    return s


def _figure(model, layer, result: dict, z: torch.Tensor, classes: torch.Tensor, path: Path, k: int = 8) -> None:
    """Per ablated class: k samples read as that class, and the same noise with its units removed."""
    rows = []
    names = []
    for c, r in result["classes"].items():
        pick = (classes == int(c)).nonzero().flatten()[:k]
        if len(pick) < k:
            continue
        with torch.no_grad():
            before = model.generate(z[pick])
            with ablated(model, layer, r["units"]):
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


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    t0 = time.perf_counter()
    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fc = load_feature_classifier(device, progress=progress)
    train_seconds = None
    if s["run"]:
        model = load_model(s["run"], device)
    else:
        X, y = data.load("mnist", "train")
        X, _ = data.random_subset(X, y, s["subset"], s["seed"])
        hparams = dict(input_shape=[1, 28, 28], width=s["width"])
        model, train_seconds = train_or_resume(
            "dcgan", "dcgan", hparams, X, s, s["epochs"], out / "dcgan", device, progress, BATCH
        )
    model.eval()
    result = dissect(model, fc, s["layer"], s["n"], s["units"], seed=s["seed"])
    layer = generator_layers(model)[s["layer"]]
    z = model.noise(s["n"], torch.Generator(device=device).manual_seed(s["seed"]))
    with torch.no_grad():
        _, logits = fc.features_and_logits(model.generate(z))
    _figure(model, layer, result, z, logits.argmax(1), out / "ablation.png")
    classes = {str(c): r for c, r in result["classes"].items()}
    halved = [c for c, r in classes.items() if r["share_after"] <= r["share_before"] / 2]
    less = [c for c, r in classes.items() if r["others_max_change"] < r["share_before"] - r["share_after"]]
    results = {
        **result,
        "classes": classes,
        "classes_halved": halved,
        "classes_others_moved_less": less,
        "train_seconds": train_seconds,
        "classifier": {k: fc.info[k] for k in ("test_accuracy", "sha256")},
        "settings": s,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    rows = [
        [c, r["share_before"], r["share_after"], r["others_max_change"], " ".join(map(str, r["units"]))]
        for c, r in classes.items()
    ]
    report.write_html(
        out / "report.html",
        "Unit dissection of a DCGAN generator",
        f"Layer {s['layer']} ({result['units_in_layer']} units); the top {s['units']} units of each "
        f"class set to 0; {s['n']} samples with the same noise before and after. Classes whose share at "
        f"least halved: {len(halved)} of {len(classes)}.",
        ["class", "share before", "share after", "largest change of another class", "units"],
        rows,
        [out / "ablation.png"],
        s,
    )
    for row in rows:
        print("  ".join(str(v) for v in row), file=sys.stderr)
    return results
