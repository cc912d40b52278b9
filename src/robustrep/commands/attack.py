"""`robustrep attack RUN --attack NAME`: run one attack on a trained run's classifier (an encoder run
is attacked end to end through its linear probe), print a table, and save the adversarial examples,
the numbers and a figure."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .. import attacks, data, preflight, validate
from ..attacks.registry import ATTACKS, DEFAULTS, make_attack
from ..errors import UserError
from ..runs import load_classifier, read_yaml
from ..utils import atomic_write, resolve_device, seed_everything


def register(sub) -> None:
    from ..options import add_common_options

    lines = "\n".join(f"  {k:10s} {v.help}" for k, v in ATTACKS.items())
    p = sub.add_parser(
        "attack",
        help="attack a run's classifier; table, adversarial examples, figure",
        description="Attack the classifier of RUN on test images and print accuracy, success\n"
        "rate, mean perturbation norms and time. Writes adversarial.safetensors (x, x_adv,\n"
        "y, predictions), attack.json and attack.png to --out.\n\nattacks:\n" + lines,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="a run folder (an encoder run needs `robustrep probe` first)")
    p.add_argument("--attack", default="pgd", help=f"one of {', '.join(ATTACKS)} (default pgd)")
    p.add_argument(
        "--eps",
        type=float,
        default=0.1,
        help="budget for fgsm, bim, ll, pgd, apgd, apgd-t, ensemble, universal, square (default 0.1)",
    )
    p.add_argument(
        "--norm",
        default=None,
        help="linf or l2 for fgsm, bim, ll, pgd, apgd, apgd-t, ensemble, universal "
        "(default linf) and deepfool (default l2)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="iterations (default: 40 pgd, 100 apgd/apgd-t/ensemble, 10 bim/ll, 100 cw, 50 deepfool, 75 onepixel)",
    )
    p.add_argument("--restarts", type=int, default=1, help="pgd, apgd, apgd-t, ensemble: random restarts (default 1)")
    p.add_argument("--loss", default="ce", help="pgd loss: ce (default) or margin; apgd: ce or dlr")
    p.add_argument("--c", type=float, default=1.0, help="CW: initial trade-off constant (default 1)")
    p.add_argument("--kappa", type=float, default=0.0, help="CW: confidence margin (default 0)")
    p.add_argument("--search-steps", type=int, default=5, help="CW: binary search steps over c (default 5)")
    p.add_argument("--overshoot", type=float, default=0.02, help="DeepFool overshoot (default 0.02)")
    p.add_argument("--pixels", type=int, default=1, help="onepixel: pixels changed (default 1)")
    p.add_argument("--popsize", type=int, default=400, help="onepixel: population per image (default 400)")
    p.add_argument(
        "--queries", type=int, default=None, help="square: queries per image (default 1000; 5000 in the ensemble)"
    )
    p.add_argument("--targets", type=int, default=9, help="apgd-t, ensemble: target classes tried (default 9)")
    p.add_argument("--max-angle", type=float, default=30.0, help="spatial: largest rotation in degrees (default 30)")
    p.add_argument(
        "--max-shift", type=float, default=0.1, help="spatial: largest shift, fraction of the image (default 0.1)"
    )
    p.add_argument("--dataset", default=None, help="data set to attack (default: the run's)")
    p.add_argument("--n", type=int, default=500, help="test points to attack (default 500; 0 for all)")
    p.add_argument("--batch-size", type=int, default=500, help="points attacked at once (default 500)")
    p.add_argument("--out", default=None, help="folder for the outputs (default RUN/attack-NAME)")
    add_common_options(p)
    p.set_defaults(func=attack)


def _dataset(run: Path, name: str | None):
    if name is not None:
        return name, None
    config = read_yaml(run / "config.yaml")
    probe = read_yaml(run / "probe.yaml") if (run / "probe.yaml").exists() else {}
    training = config.get("training", {})
    return probe.get("dataset", training.get("dataset", "mnist")), probe.get("task", training.get("task"))


def _check_attack_flags(args) -> None:
    """Every attack setting, whichever attack uses it: a bad value is refused even where this attack ignores
    it (the attack's own constructor checks its settings again, for the API)."""
    from ..attacks.pgd import MAX_EPS, MAX_RESTARTS, MAX_STEPS

    validate.nonnegative(args.eps, "--eps", high=MAX_EPS)
    if args.steps is not None:
        validate.nonnegative(args.steps, "--steps", integer=True, high=MAX_STEPS)
    validate.positive(args.restarts, "--restarts", integer=True, high=MAX_RESTARTS)
    validate.positive(args.c, "--c", high=1e10)
    validate.nonnegative(args.kappa, "--kappa", high=1e10)
    validate.positive(args.search_steps, "--search-steps", integer=True, high=64)
    validate.nonnegative(args.overshoot, "--overshoot", high=1e3)
    validate.positive(args.pixels, "--pixels", integer=True, high=10**6)
    validate.number(args.popsize, "--popsize", low=4, high=10**6, integer=True)
    if args.queries is not None:
        validate.nonnegative(args.queries, "--queries", integer=True, high=10**7)
    if getattr(args, "targets", None) is not None:
        validate.positive(args.targets, "--targets", integer=True, high=10**4)
    validate.number(args.max_angle, "--max-angle", low=0, high=180)
    validate.number(args.max_shift, "--max-shift", low=0, high=1)
    if args.norm is not None:
        validate.choice(args.norm, "--norm", ("linf", "l2"))
    validate.choice(args.loss, "--loss", ("ce", "margin", "dlr"))


def attack(args) -> int:
    if args.attack not in ATTACKS:
        raise UserError(f"unknown attack {args.attack!r}: choose one of {', '.join(ATTACKS)}")
    # every value and path checked before any work: the attack's settings when it is built (below,
    # before the data are attacked), the run, the data set, and the output folder
    validate.count(args.n, "--n")
    validate.positive(args.batch_size, "--batch-size", integer=True)
    _check_attack_flags(args)
    run = Path(args.run)
    config = preflight.run_config(run)
    preflight.probe_info(run)
    out = Path(args.out) if args.out else run / f"attack-{args.attack}"
    validate.output_dir(out, "--out")
    seed_everything(args.seed)
    device = resolve_device(args.device)
    classifier = load_classifier(run, device)
    dataset, task = _dataset(run, args.dataset)
    X, y = data.load(dataset, "test", task=task)
    preflight.data_fit(X, config, dataset)
    n = len(X) if args.n == 0 else min(args.n, len(X))
    X, y = X[:n].to(device), y[:n].to(device)
    if args.norm is None:
        args.norm = "l2" if args.attack == "deepfool" else "linf"
    atk = make_attack(args.attack, classifier, **{k: getattr(args, k) for k in DEFAULTS})

    extra = {}
    t0 = time.perf_counter()
    if args.attack == "universal":
        X_fit, _ = data.load(dataset, "train", task=task)
        atk.fit(X_fit[: min(2000, len(X_fit))].to(device))
        extra["fooling_rate_fit"] = atk.fooling_rate
    pieces, rho = [], []
    for i in range(0, n, args.batch_size):
        pieces.append(atk(X[i : i + args.batch_size], y[i : i + args.batch_size]))
        if args.attack == "deepfool":
            rho.append(atk.rho[atk.success])
    X_adv = torch.cat(pieces) if pieces else X.clone()
    seconds = time.perf_counter() - t0

    pred = attacks.predict(classifier, X)
    pred_adv = attacks.predict(classifier, X_adv)
    correct = pred == y
    delta = (X_adv - X).flatten(1)
    attacked = correct if correct.any() else torch.ones_like(correct)
    result = {
        "attack": args.attack,
        "settings": repr(atk),
        "dataset": dataset,
        "n": n,
        "clean_accuracy": float(correct.float().mean()),
        "adversarial_accuracy": float((correct & (pred_adv == y)).float().mean()),
        "success_rate": float((pred_adv[correct] != y[correct]).float().mean()) if correct.any() else 0.0,
        "mean_l2": float(delta.norm(dim=1)[attacked].mean()),
        "mean_linf": float(delta.abs().amax(1)[attacked].mean()),
        "seconds": seconds,
        "ms_per_image": 1000 * seconds / max(n, 1),
        **extra,
    }
    if args.attack == "deepfool":
        rho = torch.cat(rho)
        result["rho_adv"] = float(rho.mean()) if len(rho) else float("nan")
    if args.attack == "universal":
        result["fooling_rate"] = float((pred_adv != pred).float().mean())

    from safetensors.torch import save

    tensors = {
        "x": X.cpu().contiguous(),
        "x_adv": X_adv.cpu().contiguous(),
        "y": y.cpu(),
        "pred": pred.cpu(),
        "pred_adv": pred_adv.cpu(),
    }
    atomic_write(out / "adversarial.safetensors", lambda f: f.write(save(tensors)))
    atomic_write(out / "attack.json", lambda f: f.write(json.dumps(result, indent=2).encode()))
    from ..attacks.plots import plot_examples, plot_universal

    title = (
        f"{args.attack} on {run.name}: accuracy {result['clean_accuracy']:.3f} -> {result['adversarial_accuracy']:.3f}"
    )
    show = correct.nonzero().squeeze(1)[:8] if correct.any() else torch.arange(min(8, n))
    try:  # the numbers are saved already; a figure the disk refuses is one line, not a traceback
        plot_examples(X[show], X_adv[show], y[show], pred[show], pred_adv[show], out / "attack.png", title=title)
        if args.attack == "universal":
            plot_universal(
                atk.perturbation,
                X[:6],
                pred[:6],
                pred_adv[:6],
                out / "universal.png",
                title=f"fooling rate {result['fooling_rate']:.3f}",
            )
    except OSError as err:
        raise UserError(
            f"cannot write the figure in {out}: {err.strerror or err} (the numbers are in {out / 'attack.json'})"
        ) from None

    rows = [
        ("attack", args.attack),
        ("points", str(n)),
        ("clean accuracy", f"{result['clean_accuracy']:.4f}"),
        ("adversarial accuracy", f"{result['adversarial_accuracy']:.4f}"),
        ("success rate", f"{result['success_rate']:.4f}"),
        ("mean l2", f"{result['mean_l2']:.4f}"),
        ("mean linf", f"{result['mean_linf']:.4f}"),
        ("seconds", f"{seconds:.2f}"),
    ]
    rows += [(k.replace("_", " "), f"{result[k]:.4f}") for k in ("rho_adv", "fooling_rate") if k in result]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"wrote {out / 'adversarial.safetensors'}, {out / 'attack.json'}, {out / 'attack.png'}")
    return 0
