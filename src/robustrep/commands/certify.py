"""`robustrep certify RUN`: clean, FGSM, PGD and certified accuracy of a run's classifier at given radii."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import data, preflight, validate
from ..attacks import FGSM, PGD
from ..attacks.pgd import MAX_RESTARTS, MAX_STEPS
from ..certify import METHODS, certified_accuracy
from ..certify.inputs import check_input_bounds
from ..certify.layers import as_sequential, parse
from ..errors import UserError
from ..evaluation import adversarial_accuracy, clean_accuracy
from ..options import parse_radii
from ..runs import load_classifier, read_yaml
from ..utils import atomic_write, resolve_device, seed_everything


def register(sub) -> None:
    from ..options import add_common_options

    p = sub.add_parser(
        "certify",
        help="certified accuracy (dual network, CROWN, IBP) next to clean/FGSM/PGD",
        description="Certify a trained classifier (an nn.Sequential of Linear, Conv2d, ReLU, Flatten, "
        "e.g. `robustrep train classifier`) on its test set at each l_inf radius: clean, FGSM, PGD and "
        "certified accuracy per method, with times. Writes RUN/certify.json.",
    )
    p.add_argument("run", help="a run folder of a classifier")
    p.add_argument("--eps", default="0.1", help="comma-separated l_inf radii (default 0.1)")
    p.add_argument(
        "--method", default="dual,ibp", help=f"comma-separated, from {', '.join(METHODS)} (default dual,ibp)"
    )
    p.add_argument("--n", type=int, default=1000, help="test points (default 1000; 0 for all)")
    p.add_argument("--steps", type=int, default=40, help="PGD iterations (default 40)")
    p.add_argument("--restarts", type=int, default=1, help="PGD random restarts (default 1)")
    p.add_argument("--batch-size", type=int, default=100, help="points bounded at once (default 100)")
    p.add_argument(
        "--input-bounds",
        default=None,
        metavar="LO,HI",
        help="clip the l_inf ball to this pixel range before bounding, e.g. 0,1 (default: the whole "
        "ball, as Wong & Kolter)",
    )
    add_common_options(p)
    p.set_defaults(func=certify)


def parse_input_bounds(text):
    """None, or "LO,HI" as a checked pair of floats (robustrep.certify's input_bounds)."""
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise UserError(f"--input-bounds takes LO,HI, e.g. 0,1; got {text!r}") from None
    return check_input_bounds((lo, hi))


def certify_table(classifier, X, y, eps_list, methods, steps=40, restarts=1, batch_size=100, input_bounds=None) -> dict:
    """Accuracies (fractions) and seconds per radius: {"clean", "eps": {e: {"fgsm", "pgd", "certified": {m}}}}."""
    out = {"n": len(X), "clean": clean_accuracy(classifier, X, y), "eps": {}}
    for eps in eps_list:
        row: dict = {"certified": {}, "seconds": {}}
        t0 = time.perf_counter()
        row["fgsm"] = adversarial_accuracy(classifier, X, y, FGSM(classifier, eps=eps), batch_size=batch_size)
        t1 = time.perf_counter()
        row["pgd"] = adversarial_accuracy(
            classifier,
            X,
            y,
            PGD(classifier, eps=eps, steps=steps, restarts=restarts),
            batch_size=batch_size,
            progress=True,
        )
        t2 = time.perf_counter()
        row["seconds"].update(fgsm=round(t1 - t0, 2), pgd=round(t2 - t1, 2))
        for m in methods:
            t = time.perf_counter()
            row["certified"][m] = certified_accuracy(
                classifier, X, y, eps, m, batch_size=batch_size, progress=True, input_bounds=input_bounds
            )
            row["seconds"][m] = round(time.perf_counter() - t, 2)
        out["eps"][str(eps)] = row
    return out


def format_table(result: dict, methods) -> str:
    head = f"{'eps':>6}  {'clean':>6}  {'FGSM':>6}  {'PGD':>6}  " + "  ".join(f"{'cert-' + m:>12}" for m in methods)
    lines = [head + "  seconds (pgd" + "".join(f", {m}" for m in methods) + ")"]
    for eps, row in result["eps"].items():
        cells = "  ".join(f"{row['certified'][m]:12.4f}" for m in methods)
        secs = ", ".join(f"{row['seconds'][k]:.1f}" for k in ["pgd", *methods])
        lines.append(f"{float(eps):6g}  {result['clean']:6.4f}  {row['fgsm']:6.4f}  {row['pgd']:6.4f}  {cells}  {secs}")
    return "\n".join(lines)


def certify(args) -> int:
    # every value and path checked before any work (a negative --n used to mean "all")
    validate.count(args.n, "--n")
    validate.positive(args.batch_size, "--batch-size", integer=True)
    validate.nonnegative(args.steps, "--steps", integer=True, high=MAX_STEPS)
    validate.positive(args.restarts, "--restarts", integer=True, high=MAX_RESTARTS)
    config = preflight.run_config(args.run)
    if preflight.is_encoder(config):
        raise UserError(
            f"{args.run} holds an encoder ({config['model']}): certify needs a classifier run "
            "(`robustrep train classifier`)"
        )
    preflight.writable(Path(args.run) / "certify.json")
    seed_everything(args.seed)
    device = resolve_device(args.device)
    eps_list = parse_radii(args.eps, "--eps")
    input_bounds = parse_input_bounds(args.input_bounds)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise UserError(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
    if args.batch_size < 1 or args.steps < 0 or args.restarts < 1:
        raise UserError("need --batch-size >= 1, --steps >= 0 and --restarts >= 1")
    classifier = load_classifier(args.run, device)
    settings = read_yaml(Path(args.run) / "config.yaml")["training"]
    X, y = data.load(settings["dataset"], "test", task=settings.get("task"))
    n = len(X) if args.n <= 0 else min(args.n, len(X))
    X, y = X[torch.arange(n)].to(device), y[:n].to(device)
    check_input_bounds(input_bounds, X)  # every pixel inside, before the attacks
    if any(m in ("dual", "crown", "ibp") for m in methods):
        parse(as_sequential(classifier), X[:1])  # an uncertifiable model fails now, not after the attacks
    result = certify_table(
        classifier, X, y, eps_list, methods, args.steps, args.restarts, args.batch_size, input_bounds
    )
    result["attack"] = {"pgd_steps": args.steps, "restarts": args.restarts}
    result["input_bounds"] = input_bounds
    print(format_table(result, methods))
    atomic_write(Path(args.run) / "certify.json", lambda f: f.write(json.dumps(result, indent=2).encode()))
    return 0
