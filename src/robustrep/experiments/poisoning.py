"""Data poisoning (seed 004): clean accuracy and attack success against the poisoned fraction of the
training set, for random label flipping, targeted label flipping (class `source` relabelled `target`)
and a BadNets backdoor (a small white square in the bottom-right corner, relabelled `target`), with the
spectral-signature detection rate (Tran et al. 2018) on the poisoned training sets: within the target
class, told the poisoned fraction of that class, as in their paper.

Every (attack, fraction) trains its own classifier (MLP 784-100-100-10 by default) with the same seed
and budget; fraction 0 is one clean model shared by all attacks. Success: targeted flipping, the test
points of `source` classified as `target`; backdoor, the test points of other classes sent to `target`
once triggered (at fraction 0: the clean model's natural rate). Writes results.json, poisoning.png and
report.html; a killed run continues from its finished models when run again with the same --out.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from .. import data, models, plots, poisoning, report, validate
from ..errors import UserError
from ..evaluation import clean_accuracy
from ..training import fit_or_reuse
from ..utils import atomic_write, resolve_device, seed_everything
from .budgets import add_budget_arguments, budget_settings

NAME = "poisoning"
HELP = "label flipping and a backdoor trigger: clean accuracy, attack success and detection vs poisoned fraction"

ATTACKS = ("random-flip", "targeted-flip", "backdoor")
BUDGETS = {
    "quick": dict(
        arch="mlp",
        hidden="100,100",
        epochs=4,
        batch_size=64,
        subset=12000,
        n_eval=2000,
        fractions="0,0.005,0.01,0.02,0.05,0.1",
    ),
    "full": dict(
        arch="mlp",
        hidden="100,100",
        epochs=10,
        batch_size=64,
        subset=0,
        n_eval=0,
        fractions="0,0.001,0.002,0.005,0.01,0.02,0.05,0.1",
    ),
}


def add_arguments(p) -> None:
    p.add_argument(
        "--dataset",
        default="mnist",
        choices=("mnist", "digits"),
        help="mnist (default) or digits (sklearn's 8x8, a seconds-long smoke test)",
    )
    add_budget_arguments(p, BUDGETS)
    p.add_argument("--source", type=int, default=7, help="targeted flipping: the class relabelled (default 7)")
    p.add_argument(
        "--target", type=int, default=1, help="targeted flipping and backdoor: the class the attacker wants (default 1)"
    )
    p.add_argument("--trigger-size", type=int, default=3, help="side of the square trigger in pixels (default 3)")


def _fractions(text: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--fractions takes comma-separated numbers in [0, 1], e.g. 0,0.01,0.1; got {text!r}") from None
    if not values:
        raise UserError("--fractions needs at least one value")
    for v in values:
        validate.probability(v, "--fractions (each value)")
    return sorted(set(values))


def settings_from(args) -> dict:
    s = budget_settings(args, BUDGETS)
    s.update(
        dataset=args.dataset,
        seed=args.seed,
        source=args.source,
        target=args.target,
        trigger_size=args.trigger_size,
        budget="quick" if args.quick else "full",
    )
    validate.choice(s["arch"], "--arch", ("mlp", "wk-conv"))
    for key in ("epochs", "batch_size", "trigger_size"):
        validate.positive(s[key], f"--{key.replace('_', '-')}", integer=True, high=10**6)
    for key in ("subset", "n_eval"):
        validate.count(s[key], f"--{key.replace('_', '-')}")
    for key in ("source", "target"):
        validate.number(s[key], f"--{key}", low=0, high=data.num_classes(s["dataset"]) - 1, integer=True)
    if s["source"] == s["target"]:
        raise UserError(f"--source and --target must differ, got {s['source']} for both")
    try:
        widths = [int(h) for h in s["hidden"].split(",") if h.strip()]
    except ValueError:
        widths = []
    if not widths:
        raise UserError(f"--hidden takes comma-separated widths, got {s['hidden']!r}")
    for w in widths:
        validate.width(w, "--hidden (each width)")
    s["fractions"] = ",".join(f"{f:g}" for f in _fractions(s["fractions"]))
    return s


def _train(hparams, X, y, s, run_dir: Path, device, progress):
    """Train (or continue, or reuse) one classifier; returns it and its training seconds."""
    seed_everything(s["seed"])
    model = models.build("classifier", **hparams)
    config = {
        "model": "classifier",
        "hparams": hparams,
        "training": {
            "dataset": s["dataset"],
            "task": None,
            "epochs": s["epochs"],
            "batch_size": s["batch_size"],
            "lr": 1e-3,
            "seed": s["seed"],
            "subset": s["subset"],
            "poisoned": True,
        },
    }
    return fit_or_reuse(
        model,
        X,
        y,
        run_dir=run_dir,
        config=config,
        device=device,
        epochs=s["epochs"],
        batch_size=s["batch_size"],
        lr=1e-3,
        seed=s["seed"],
        progress=progress,
    )


def _poison(attack: str, X, y, fraction: float, s, num_classes: int):
    g = torch.Generator().manual_seed(s["seed"] * 1000 + ATTACKS.index(attack))
    if attack == "random-flip":
        y2, idx = poisoning.flip_labels(y, fraction, num_classes, generator=g)
        return X, y2, idx
    if attack == "targeted-flip":
        y2, idx = poisoning.flip_labels(y, fraction, num_classes, source=s["source"], target=s["target"], generator=g)
        return X, y2, idx
    return poisoning.backdoor(X, y, fraction, s["target"], num_classes, generator=g, size=s["trigger_size"])


def _success(attack: str, model, Xt, yt, s):
    if attack == "targeted-flip":
        return poisoning.attack_success_rate(model, Xt, yt, s["target"], source=s["source"])
    if attack == "backdoor":
        return poisoning.attack_success_rate(model, Xt, yt, s["target"], trigger={"size": s["trigger_size"]})
    return None


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    t0 = time.perf_counter()
    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "settings.json"
    if saved.exists() and json.loads(saved.read_text()) != s:
        raise UserError(f"{out} holds a run with other settings: choose a new --out or delete it")
    atomic_write(saved, lambda f: f.write(json.dumps(s, indent=2).encode()))
    num_classes = data.num_classes(s["dataset"])
    X, y = data.load(s["dataset"], "train")
    X, y = data.random_subset(X, y, s["subset"], s["seed"])
    X = X[:]
    Xt, yt = data.load(s["dataset"], "test")
    Xt, yt = data.random_subset(Xt, yt, s["n_eval"], s["seed"] + 1)
    Xt, yt = Xt[:].to(device), yt.to(device)
    hparams = {"input_shape": list(X.shape[1:]), "num_classes": num_classes, "arch": s["arch"], "hidden": s["hidden"]}
    fractions = _fractions(s["fractions"])
    table: dict = {a: {} for a in ATTACKS}
    clean_model = None
    for attack in ATTACKS:
        for fraction in fractions:
            if fraction == 0:
                if clean_model is None:
                    clean_model, clean_seconds = _train(hparams, X, y, s, out / "clean", device, progress)
                model, seconds, idx, Xp, yp = clean_model, clean_seconds, torch.zeros(0, dtype=torch.long), X, y
            else:
                Xp, yp, idx = _poison(attack, X, y, fraction, s, num_classes)
                model, seconds = _train(hparams, Xp, yp, s, out / f"{attack}-{fraction:g}", device, progress)
            row = {
                "poisoned": len(idx),
                "clean_accuracy": clean_accuracy(model, Xt, yt),
                "attack_success": _success(attack, model, Xt, yt, s),
                "train_seconds": seconds,
            }
            if attack != "random-flip" and fraction > 0:
                # within the target class, where every poisoned label lies, with its true poisoned
                # fraction as epsilon (Tran et al.'s setting: the defender knows an epsilon)
                feats = poisoning.penultimate_features(model, Xp.to(device)).cpu()
                eps_class = len(idx) / int((yp == s["target"]).sum())
                flagged = poisoning.spectral_detect(feats, yp.cpu(), eps_class, classes=[s["target"]])
                row["detection"] = {"class_fraction": eps_class, **poisoning.detection_rates(flagged, idx.cpu())}
            table[attack][f"{fraction:g}"] = row
            print(
                f"{attack} {fraction:g}: clean {row['clean_accuracy']:.4f}"
                + (f", success {row['attack_success']:.4f}" if row["attack_success"] is not None else "")
                + (f", detection recall {row['detection']['recall']:.3f}" if "detection" in row else ""),
                file=sys.stderr,
            )
    results = {
        "settings": s,
        "n_train": len(X),
        "n_eval": len(Xt),
        "attacks": table,
        "seconds": round(time.perf_counter() - t0, 1),
        "provenance": report.provenance(),
    }
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    _plot(results, out / "poisoning.png")
    header, rows = table_rows(results)
    report.write_html(
        out / "report.html",
        "Data poisoning: label flipping and a backdoor",
        f"{s['arch']} classifier on {len(X)} {s['dataset']} training images ({s['epochs']} epochs), "
        f"evaluated on {len(Xt)} test images; targeted flips {s['source']} -> {s['target']}, backdoor "
        f"target {s['target']} with a {s['trigger_size']}x{s['trigger_size']} trigger.",
        header,
        rows,
        [out / "poisoning.png"],
        s,
    )
    print(format_table(results))
    return results


def table_rows(results: dict) -> tuple[list[str], list[list]]:
    header = [
        "attack",
        "poisoned fraction",
        "poisoned points",
        "clean accuracy",
        "attack success",
        "detection recall",
        "detection precision",
    ]
    rows = []
    for attack, by_fraction in results["attacks"].items():
        for fraction, r in by_fraction.items():
            det = r.get("detection")
            rows.append(
                [
                    attack,
                    fraction,
                    r["poisoned"],
                    f"{r['clean_accuracy']:.4f}",
                    "" if r["attack_success"] is None else f"{r['attack_success']:.4f}",
                    "" if det is None else f"{det['recall']:.3f}",
                    "" if det is None else f"{det['precision']:.3f}",
                ]
            )
    return header, rows


def format_table(results: dict) -> str:
    header, rows = table_rows(results)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append(f"total {results['seconds']:.0f} s")
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["settings"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for attack, by_fraction in results["attacks"].items():
        fr = [100 * float(f) for f in by_fraction]
        ax1.plot(fr, [r["clean_accuracy"] for r in by_fraction.values()], "o-", label=attack)
        if attack != "random-flip":
            ax2.plot(fr, [r["attack_success"] for r in by_fraction.values()], "o-", label=f"{attack}: success")
            det = [(100 * float(f), r["detection"]["recall"]) for f, r in by_fraction.items() if "detection" in r]
            if det:
                ax2.plot(*zip(*det), "x:", label=f"{attack}: spectral detection recall")
    ax1.set_xlabel("poisoned training points (%)")
    ax1.set_ylabel("clean test accuracy")
    ax1.set_title("clean accuracy")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("poisoned training points (%)")
    ax2.set_ylabel("rate")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_title(f"attack success (targeted {s['source']}->{s['target']}; backdoor -> {s['target']})")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    plots.save_figure(fig, path, dpi=120)
