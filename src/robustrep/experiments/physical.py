"""Physical-world attacks on MNIST (seed 003, lecture 13): expectation over transformation (Athalye et al.
2018), RP2 stickers (Eykholt et al. 2018), an adversarial patch (Brown et al. 2017), judged on fresh
draws of the transformation distribution and on a grid of fixed viewpoints (seed 003, Table 5), and a
randomised resize-and-pad defence (Xie et al. 2018) under plain PGD and EOT-PGD (Athalye, Carlini &
Wagner 2018).

Trains (or reuses, by a hash of its settings) a small CNN without augmentation, saved as a run folder
(`rr.runs.load_classifier` opens it); attacks the first --n-images test images towards (y + 1) mod 10
under rotation +-30 deg, scale 0.8-1.2, translation +-3 px, brightness +-0.1, contrast 0.8-1.2, blur
sigma 0-1, noise std 0.02. Writes results.json, examples/NAME.safetensors (x, x_adv, y, target) per
attack, viewpoints-NAME.png, patch-curve.png and report.html.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

from .. import data, models, report, validate
from ..attacks import EOT, PGD, RP2, AdversarialPatch, predict
from ..defenses import RandomResizePad
from ..errors import UserError
from ..evaluation import clean_accuracy, transformation_robustness, viewpoint_table
from ..plots import save_figure
from ..runs import load_classifier, load_weights
from ..training import fit
from ..transforms import PHYSICAL, Distribution, viewpoint
from ..utils import atomic_write, resolve_device, seed_everything
from .budgets import add_budget_arguments, budget_settings

NAME = "physical"
HELP = "EOT, RP2 stickers and an adversarial patch across viewpoints; a randomised defence under EOT"

DISTRIBUTION = PHYSICAL
ANGLES = (-30, -15, 0, 15, 30)
SCALES = (0.8, 1.0, 1.2)

BUDGETS = {
    # --quick: about 7 minutes on one CPU thread; full: the settings (200 images, 100 steps, K = 16)
    "quick": dict(
        epochs=2,
        n_images=40,
        steps=50,
        samples=8,
        samples_compare=0,
        draws=100,
        rp2_steps=80,
        rp2_l1_steps=20,
        rp2_samples=8,
        patch_steps=150,
        patch_batch=32,
        patch_eval=100,
        defense_images=50,
        defense_steps=20,
        defense_samples=8,
    ),
    "full": dict(
        epochs=4,
        n_images=200,
        steps=100,
        samples=16,
        samples_compare=4,
        draws=200,
        rp2_steps=200,
        rp2_l1_steps=50,
        rp2_samples=8,
        patch_steps=500,
        patch_batch=64,
        patch_eval=500,
        defense_images=200,
        defense_steps=100,
        defense_samples=16,
    ),
}


def add_arguments(p) -> None:
    p.add_argument("--eps", type=float, default=0.3, help="l_inf radius of PGD and EOT-PGD (default 0.3)")
    p.add_argument("--mask-share", type=float, default=0.15, help="RP2: share of pixels it may change (default 0.15)")
    p.add_argument("--patch-size", type=int, default=14, help="side of the adversarial patch in pixels (default 14)")
    p.add_argument("--patch-sizes", default="8,10,12,14", help="sides for the patch-size curve (default 8,10,12,14)")
    p.add_argument("--patch-target", type=int, default=3, help="class the patch turns images into (default 3)")
    p.add_argument("--defense-eps", type=float, default=0.1, help="l_inf radius against the defence (default 0.1)")
    p.add_argument(
        "--defense-low",
        type=int,
        default=22,
        help="the defence resizes 28x28 images to a side in [low, 28] (default 22)",
    )
    p.add_argument(
        "--probe-runs",
        default=None,
        metavar="DIR",
        help="a `reproduce smooth-encoders` output folder: the same viewpoint table for its probed encoders (vae, se)",
    )
    p.add_argument("--probe-eps", type=float, default=0.1, help="l_inf radius against the probes (default 0.1)")
    add_budget_arguments(p, BUDGETS)


def _probe_runs(folder) -> list[str]:
    """The run folders with a linear probe inside a smooth-encoders output folder."""
    return sorted(p.name for p in folder.iterdir() if (p / "probe.yaml").exists() and (p / "config.yaml").exists())


def settings_from(args) -> dict:
    s = budget_settings(args, BUDGETS)
    s.update(seed=validate.seed(args.seed), budget="quick" if args.quick else "full")
    s["eps"] = validate.number(args.eps, "--eps", low=0, low_open=True, high=1)
    s["defense_eps"] = validate.number(args.defense_eps, "--defense-eps", low=0, low_open=True, high=1)
    s["mask_share"] = validate.number(args.mask_share, "--mask-share", low=0, low_open=True, high=1)
    s["patch_size"] = validate.positive(args.patch_size, "--patch-size", integer=True)
    try:
        sizes = [int(v) for v in str(args.patch_sizes).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--patch-sizes takes comma-separated sides, got {args.patch_sizes!r}") from None
    if not sizes:
        raise UserError("--patch-sizes needs at least one side")
    s["patch_sizes"] = [validate.positive(v, "--patch-sizes", integer=True) for v in sizes]
    for side in [s["patch_size"], *s["patch_sizes"]]:
        if side * 1.2 > 28:  # the placements scale the patch up to 1.2x
            raise UserError(f"a patch of side {side} (placed at up to 1.2x) is larger than the 28x28 image: use <= 23")
    s["patch_target"] = validate.number(args.patch_target, "--patch-target", low=0, high=9, integer=True)
    s["defense_low"] = validate.number(args.defense_low, "--defense-low", low=1, high=28, integer=True)
    s["probe_eps"] = validate.number(args.probe_eps, "--probe-eps", low=0, low_open=True, high=1)
    s["probe_runs"] = None
    if args.probe_runs is not None:
        folder = validate.existing_dir(args.probe_runs, "--probe-runs")
        if not _probe_runs(folder):
            raise UserError(
                f"--probe-runs: {folder} holds no probed run (a folder with probe.yaml): give the --out "
                "of `robustrep reproduce smooth-encoders`"
            )
        s["probe_runs"] = str(folder)
    for key in (
        "epochs",
        "n_images",
        "steps",
        "samples",
        "draws",
        "rp2_steps",
        "rp2_samples",
        "patch_steps",
        "patch_batch",
        "patch_eval",
        "defense_images",
        "defense_steps",
        "defense_samples",
    ):
        s[key] = validate.positive(s[key], f"--{key.replace('_', '-')}", integer=True)
    for key in ("samples_compare", "rp2_l1_steps"):
        s[key] = validate.nonnegative(s[key], f"--{key.replace('_', '-')}", integer=True)
    s["distribution"] = {k: list(v) if isinstance(v, tuple) else v for k, v in DISTRIBUTION.items()}
    return s


def _classifier(s, out: Path, device, progress):
    """Train (or reuse) the CNN in out/classifier-HASH; returns (model, run name)."""
    hparams = {"input_shape": [1, 28, 28], "num_classes": 10, "arch": "cnn"}
    training = {
        "dataset": "mnist",
        "task": None,
        "epochs": s["epochs"],
        "batch_size": 50,
        "lr": 1e-3,
        "seed": s["seed"],
        "subset": 0,
    }
    key = hashlib.sha256(json.dumps({"hparams": hparams, "training": training}, sort_keys=True).encode())
    name = f"classifier-{key.hexdigest()[:8]}"
    run_dir = out / name
    if (run_dir / "model.safetensors").exists():
        return load_classifier(run_dir, device), name
    X, y = data.load("mnist", "train")
    seed_everything(s["seed"])
    model = models.build("classifier", **hparams)
    fit(
        model,
        X,
        y,
        epochs=s["epochs"],
        batch_size=50,
        lr=1e-3,
        run_dir=run_dir,
        seed=s["seed"],
        device=device,
        resume=(run_dir / "checkpoint" / "last.pt").exists(),
        progress=progress,
        config={"model": "classifier", "hparams": hparams, "training": training},
    )
    return load_weights(model, run_dir / "model.safetensors").to(device).eval(), name


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _save_examples(out: Path, name: str, x, x_adv, y, target) -> None:
    tensors = {
        "x": x.float().cpu().contiguous(),
        "x_adv": x_adv.float().cpu().contiguous(),
        "y": y.long().cpu().contiguous(),
        "target": target.long().cpu().contiguous(),
    }
    atomic_write(out / "examples" / f"{name}.safetensors", lambda f: f.write(save_safetensors(tensors)))


def _judge(model, x_adv, y, t, dist, s) -> dict:
    r = transformation_robustness(model, x_adv, y, t, dist, draws=s["draws"])
    table = viewpoint_table(model, x_adv, y, t, ANGLES, SCALES)
    return {
        "success_plain": round(r["success_plain"], 4),
        "success_eot": round(r["success_eot"], 4),
        "accuracy_eot": round(r["accuracy_eot"], 4),
        "viewpoints": {k: round(v, 4) for k, v in table["success"].items()},
        "example_top2": table["example"],
    }


def _viewpoint_figure(model, x_adv, y, t, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(SCALES), len(ANGLES), figsize=(1.6 * len(ANGLES), 1.75 * len(SCALES)))
    for i, sc in enumerate(SCALES):
        for j, a in enumerate(ANGLES):
            v = viewpoint(a, sc)(x_adv[:1])
            p = torch.softmax(model(v), 1)[0]
            k = int(p.argmax())
            ax = axes[i][j]
            ax.imshow(v[0].permute(1, 2, 0).squeeze(-1).cpu(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(
                f"{a}deg x{sc:g}: {k} ({float(p[k]):.2f})", fontsize=7, color="red" if k == int(t[0]) else "black"
            )
            ax.axis("off")
    fig.suptitle(f"{title}: label {int(y[0])}, target {int(t[0])} (red: read as the target)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _curve_figure(curve: dict, patch: torch.Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.5, 3), gridspec_kw={"width_ratios": [2, 1]})
    sides = [int(k) for k in curve]
    a1.plot(sides, [curve[k]["success_eot"] for k in curve], "o-", label="expected targeted success (fresh draws)")
    a1.plot(sides, [curve[k]["success_plain"] for k in curve], "s--", label="no transformation")
    a1.set_xlabel("patch side (pixels)")
    a1.set_ylabel("targeted success")
    a1.set_ylim(0, 1)
    a1.legend(fontsize=7)
    a2.imshow(patch.permute(1, 2, 0).squeeze(-1).cpu(), cmap="gray", vmin=0, vmax=1)
    a2.set_title("the patch", fontsize=8)
    a2.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _probe_tables(s, folder: Path, x, y, t, dist, device, figures, out) -> dict:
    """Beyond any peer: does the l_inf smoothness of a smooth encoder's codes carry over to
    transformations? For each probed encoder: the clean accuracy per viewpoint, and plain PGD and
    EOT-PGD (targeted, --probe-eps) judged on fresh draws and per viewpoint."""
    tables = {}
    for name in _probe_runs(folder):
        clf = load_classifier(folder / name, device)
        for p in clf.parameters():
            p.requires_grad_(False)
        clean = viewpoint_table(clf, x, y, None, ANGLES, SCALES)
        entry = {
            "clean_accuracy": {k: round(v, 4) for k, v in clean["accuracy"].items()},
            "clean_under_draws": round(
                transformation_robustness(clf, x, y, None, dist, draws=s["draws"])["accuracy_eot"], 4
            ),
        }
        pgd = dict(eps=s["probe_eps"], steps=s["steps"], restarts=1, early_stop=False)
        for label, atk in (
            ("pgd", PGD(clf, **pgd)),
            ("eot-pgd", EOT(PGD(clf, **pgd), dist, samples=s["samples"], chunk=max(1, 4096 // len(x)))),
        ):
            seed_everything(s["seed"])
            t0 = time.perf_counter()
            x_adv = atk(x, y, target=t)
            entry[label] = {
                "eps": s["probe_eps"],
                **_judge(clf, x_adv, y, t, dist, s),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        tables[name] = entry
        _log(
            f"probe {name}: clean under draws {entry['clean_under_draws']:.3f}; EOT-PGD expected success "
            f"{entry['eot-pgd']['success_eot']:.3f} vs PGD {entry['pgd']['success_eot']:.3f}"
        )
    return tables


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    out = Path(out)
    device = resolve_device(device)
    t_start = time.perf_counter()
    model, run_name = _classifier(s, out, device, progress)
    Xt, yt = data.load("mnist", "test")
    test_acc = clean_accuracy(model, Xt.to(device), yt.to(device))
    _log(f"classifier {run_name}: test accuracy {test_acc:.4f}")
    for p in model.parameters():
        p.requires_grad_(False)
    dist = Distribution(**DISTRIBUTION, seed=s["seed"])
    n = s["n_images"]
    x, y = Xt[:n].to(device), yt[:n].to(device)
    t = (y + 1) % 10
    chunk = max(1, 4096 // n)
    results = {
        "classifier": {"run": run_name, "arch": "cnn", "test_accuracy": test_acc},
        "distribution": dist.describe(),
        "n_images": n,
        "clean_correct": float((predict(model, x) == y).float().mean()),
        "attacks": {},
    }
    figures = []

    def attack(name, atk, extra, x=x, y=y, t=t):
        seed_everything(s["seed"])
        t0 = time.perf_counter()
        x_adv = atk(x, y, target=t)
        seconds = time.perf_counter() - t0
        entry = {**extra, **_judge(model, x_adv, y, t, dist, s), "seconds": round(seconds, 1)}
        results["attacks"][name] = entry
        _save_examples(out, name, x, x_adv, y, t)
        fig = out / f"viewpoints-{name}.png"
        _viewpoint_figure(model, x_adv, y, t, fig, name)
        figures.append(fig)
        _log(
            f"{name}: success plain {entry['success_plain']:.3f}, expected under fresh draws "
            f"{entry['success_eot']:.3f} ({seconds:.0f} s)"
        )
        return x_adv

    pgd = dict(eps=s["eps"], steps=s["steps"], restarts=1, early_stop=False)
    attack("pgd", PGD(model, **pgd), {"eps": s["eps"], "steps": s["steps"]})
    attack(
        "eot-pgd",
        EOT(PGD(model, **pgd), dist, samples=s["samples"], chunk=chunk),
        {"eps": s["eps"], "steps": s["steps"], "samples": s["samples"]},
    )
    if s["samples_compare"]:
        k = s["samples_compare"]
        attack(
            f"eot-pgd-k{k}",
            EOT(PGD(model, **pgd), dist, samples=k, chunk=chunk),
            {"eps": s["eps"], "steps": s["steps"], "samples": k},
        )
    rp2 = RP2(
        model,
        dist,
        mask_share=s["mask_share"],
        steps=s["rp2_steps"],
        l1_steps=s["rp2_l1_steps"],
        samples=s["rp2_samples"],
        chunk=chunk,
    )
    x_rp2 = attack(
        "rp2",
        rp2,
        {
            "mask_share": s["mask_share"],
            "steps": s["rp2_steps"],
            "l1_steps": s["rp2_l1_steps"],
            "samples": s["rp2_samples"],
        },
    )
    changed = ((x_rp2 - x).abs().amax(1) > 0).flatten(1).float().mean(1)
    results["attacks"]["rp2"]["changed_share_max"] = float(changed.max())

    # the patch: trained on training images, judged on unseen test images of other classes
    X, y_train = data.load("mnist", "train")
    target = s["patch_target"]
    keep = yt != target
    xe, ye = Xt[keep][: s["patch_eval"]].to(device), yt[keep][: s["patch_eval"]].to(device)
    te = torch.full_like(ye, target)
    train = X[:20000][y_train[:20000] != target].to(device)
    curve, patch_main = {}, None
    for side in sorted(set(s["patch_sizes"]) | {s["patch_size"]}):
        seed_everything(s["seed"])
        t0 = time.perf_counter()
        atk = AdversarialPatch(
            model,
            size=side,
            distribution=dist.fresh(s["seed"] + side),
            steps=s["patch_steps"],
            batch_size=s["patch_batch"],
            seed=s["seed"],
        ).fit(train, target)
        fit_seconds = time.perf_counter() - t0
        x_adv = atk(xe, ye, target=te)
        judged = _judge(model, x_adv, ye, te, dist, s)
        curve[str(side)] = {
            "success_plain": judged["success_plain"],
            "success_eot": judged["success_eot"],
            "seconds": round(fit_seconds, 1),
        }
        _log(f"patch {side}x{side}: success plain {judged['success_plain']:.3f}, expected {judged['success_eot']:.3f}")
        if side == s["patch_size"]:
            patch_main = atk.patches[target]
            results["attacks"]["patch"] = {
                "size": side,
                "target": target,
                "n_eval": len(xe),
                "steps": s["patch_steps"],
                **judged,
                "seconds": round(fit_seconds, 1),
            }
            _save_examples(out, "patch", xe, x_adv, ye, te)
            fig = out / "viewpoints-patch.png"
            _viewpoint_figure(model, x_adv, ye, te, fig, "patch")
            figures.append(fig)
    results["attacks"]["patch"]["curve"] = curve
    _curve_figure(curve, patch_main, out / "patch-curve.png")
    figures.append(out / "patch-curve.png")

    # the randomised defence: plain PGD against EOT-PGD at the same budget (untargeted, accuracy)
    nd = s["defense_images"]
    xd, yd = Xt[:nd].to(device), yt[:nd].to(device)
    defended = RandomResizePad(model, low=s["defense_low"], seed=s["seed"])
    identity = Distribution()
    dpgd = dict(eps=s["defense_eps"], steps=s["defense_steps"], restarts=1, early_stop=False)

    passes = max(1, s["draws"] // 4)

    def expected_accuracy(xa):  # the mean over `passes` fresh forward passes of the random model
        r = transformation_robustness(defended, xa, yd, None, identity, draws=passes)
        return round(r["accuracy_eot"], 4)

    seed_everything(s["seed"])
    t0 = time.perf_counter()
    x_plain = PGD(defended, **dpgd)(xd, yd)
    x_eot = EOT(PGD(defended, **dpgd), identity, samples=s["defense_samples"], chunk=max(1, 4096 // nd))(xd, yd)
    x_undefended = PGD(model, **dpgd)(xd, yd)
    results["defense"] = {
        "random-resize-pad": {
            "low": s["defense_low"],
            "eps": s["defense_eps"],
            "steps": s["defense_steps"],
            "samples": s["defense_samples"],
            "n": nd,
            "passes": passes,
            "clean": expected_accuracy(xd),
            "pgd": expected_accuracy(x_plain),
            "eot-pgd": expected_accuracy(x_eot),
            "undefended_clean": clean_accuracy(model, xd, yd),
            "undefended_pgd": clean_accuracy(model, x_undefended, yd),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    }
    d = results["defense"]["random-resize-pad"]
    _log(f"random resize-and-pad: clean {d['clean']:.3f}, plain PGD {d['pgd']:.3f}, EOT-PGD {d['eot-pgd']:.3f}")

    if s["probe_runs"]:
        results["probe_runs"] = _probe_tables(s, Path(s["probe_runs"]), x, y, t, dist, device, figures, out)

    results["settings"] = s
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    rows = [
        [name, a.get("success_plain"), round(a["success_eot"], 3), round(a["accuracy_eot"], 3), a["seconds"]]
        for name, a in results["attacks"].items()
    ]
    report.write_html(
        out / "report.html",
        "Physical-world attacks (EOT, RP2, patch)",
        f"{n} MNIST test images, targets (y + 1) mod 10; success judged on {s['draws']} fresh draws "
        f"per image of {dist.describe()}. Defence: {d}.",
        ["attack", "success, no transformation", "expected success (fresh draws)", "accuracy (draws)", "seconds"],
        rows,
        figures,
        s,
    )
    return results
