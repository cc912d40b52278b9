"""`robustrep evaluate RUN`: accuracy under attack of a run's classifier (its probe for encoders)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import data, preflight, validate
from ..attacks.eot import EOT
from ..attacks.pgd import MAX_RESTARTS, MAX_STEPS
from ..attacks.registry import attack_names, make_attack
from ..defenses import RandomResizePad
from ..errors import UserError
from ..evaluation import adversarial_accuracy, clean_accuracy
from ..options import parse_radii
from ..runs import load_classifier
from ..transforms import Distribution
from ..utils import atomic_write, resolve_device, seed_everything

EPS_ATTACKS = attack_names(with_eps=True)


def register(sub) -> None:
    from ..options import add_common_options

    p = sub.add_parser(
        "evaluate",
        help="accuracy under attack at several radii",
        description="Attack the run's classifier (for an encoder: probe(mu(x)), end to end) on the "
        "test set. A point counts only if it is classified correctly and survives every restart. "
        "Writes RUN/evaluation.json.",
    )
    p.add_argument("run", help="a run folder (an encoder run needs `robustrep probe` first)")
    p.add_argument("--attack", default="pgd", help=f"one of {', '.join(EPS_ATTACKS)} (l_inf; default pgd)")
    p.add_argument("--eps", default="0.01,0.1,0.2,0.3", help="comma-separated l_inf radii (default 0.01,0.1,0.2,0.3)")
    p.add_argument("--steps", type=int, default=100, help="attack iterations, or queries for square (default 100)")
    p.add_argument(
        "--restarts",
        type=int,
        default=10,
        help="random restarts for pgd, apgd, apgd-t and the ensemble's APGD-CE (default 10)",
    )
    p.add_argument("--n", type=int, default=1000, help="test points to attack (default 1000; 0 for all)")
    p.add_argument("--batch-size", type=int, default=500, help="points attacked at once (default 500)")
    p.add_argument(
        "--eot",
        type=int,
        default=None,
        metavar="K",
        help="expectation over transformation: every gradient is the mean over K forward passes, for a "
        "model whose forward pass is random (e.g. with --defense); docs/physical.md",
    )
    p.add_argument(
        "--defense",
        default="none",
        choices=("none", "random-resize-pad"),
        help="put a randomised input defence in front of the classifier (Xie et al. 2018; default none)",
    )
    p.add_argument(
        "--defense-low",
        type=int,
        default=22,
        help="random-resize-pad: resize to a side in [LOW, image side] (default 22)",
    )
    add_common_options(p)
    p.set_defaults(func=evaluate)


def evaluate(args) -> int:
    if args.attack not in EPS_ATTACKS:
        raise UserError(f"unknown attack {args.attack!r}: choose one of {', '.join(EPS_ATTACKS)}")
    # every value and path checked before any work (a negative --n used to mean "all"; a read-only run
    # folder failed after the attack, its work lost)
    validate.count(args.n, "--n")
    validate.positive(args.batch_size, "--batch-size", integer=True)
    validate.nonnegative(args.steps, "--steps", integer=True, high=MAX_STEPS)
    validate.positive(args.restarts, "--restarts", integer=True, high=MAX_RESTARTS)
    parse_radii(args.eps, "--eps")
    config = preflight.run_config(args.run)
    probe_checked = preflight.probe_info(args.run)
    preflight.writable(Path(args.run) / "evaluation.json")
    if args.eot is not None:
        validate.positive(args.eot, "--eot", integer=True, high=10**5)
    validate.positive(args.defense_low, "--defense-low", integer=True, high=10**4)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    eps_list = parse_radii(args.eps, "--eps")
    classifier = load_classifier(args.run, device)
    if args.defense == "random-resize-pad":
        classifier = RandomResizePad(classifier, low=args.defense_low, seed=args.seed)
    settings, probe_info = config["training"], probe_checked
    dataset = probe_info.get("dataset", settings["dataset"])
    X, y = data.load(dataset, "test", task=probe_info.get("task", settings.get("task")))
    preflight.data_fit(X, config, dataset, flag="the probe's dataset")
    n = len(X) if args.n <= 0 else min(args.n, len(X))
    X, y = X[:n].to(device), y[:n].to(device)  # a slice makes real images of a lazy view
    result = {
        "attack": {
            "name": args.attack,
            "steps": args.steps,
            "restarts": args.restarts,
            "eot": args.eot,
            "defense": args.defense,
        },
        "n": n,
        "nominal": clean_accuracy(classifier, X, y),
        "adversarial": {},
    }
    print(f"{'eps':>6}  {'accuracy':>8}  {'seconds':>7}")
    print(f"{'clean':>6}  {result['nominal']:8.4f}")
    for eps in eps_list:
        t0 = time.perf_counter()
        atk = make_attack(
            args.attack,
            classifier,
            eps=eps,
            steps=args.steps,
            restarts=args.restarts,
            queries=args.steps if args.attack == "square" else None,
        )
        if args.eot is not None:
            atk = EOT(atk, Distribution(), samples=args.eot)
        acc = adversarial_accuracy(classifier, X, y, atk, batch_size=args.batch_size, progress=True)
        result["adversarial"][str(eps)] = acc
        print(f"{eps:6g}  {acc:8.4f}  {time.perf_counter() - t0:7.1f}")
    atomic_write(Path(args.run) / "evaluation.json", lambda f: f.write(json.dumps(result, indent=2).encode()))
    return 0
