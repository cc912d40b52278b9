"""Generative models on MNIST judged offline (issue 10): the GAN (non-saturating and saturating generator
loss), DCGAN, WGAN, WGAN-GP, progressive GAN, DDPM and a noise-conditional score network, all trained on
the same budget (the same training images and epochs), then sampled and judged on the features of our own
MNIST classifier: Frechet distance, KID, precision/recall, density/coverage, classes covered and the share
of confident samples, at the same number of samples for every model. Two cheap baselines (Gaussians in a
PCA subspace, one per class or one for all) and real training images give the table its floor and ceiling.
The GANs are also trained on the 2-D toys (8 Gaussians on a ring, 25 on a grid).

The Frechet distances here are computed on our classifier's 100 features, NOT on Inception's: they are
not comparable with the FID numbers of papers.

Writes results.json, a sample grid per model, fid_vs_time.png, toys.png and report.html. A killed run
continues where it stopped when run again with the same --out.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from .. import data, models, plots, report, toys, validate
from ..errors import UserError
from ..evaluation.feature_classifier import load_feature_classifier
from ..evaluation.sample_metrics import frechet_distance, sample_report
from ..runs import load_weights, read_metrics, read_yaml
from ..training import fit, train_seconds
from ..utils import atomic_write, resolve_device, seed_everything
from .budgets import add_budget_arguments, budget_settings

NAME = "generative"
HELP = "GANs, WGAN(-GP), progressive GAN, DDPM and a score network on MNIST, judged on our classifier's features"

BUDGETS = {
    "quick": dict(
        subset=6000, epochs=3, n_eval=1000, width=16, unet_width=16, ddim_steps=25, langevin_steps=5, toy_steps=4000
    ),
    "full": dict(
        subset=0, epochs=20, n_eval=10000, width=32, unet_width=32, ddim_steps=100, langevin_steps=100, toy_steps=20000
    ),
}
MODELS = ("gan", "gan-saturating", "dcgan", "wgan", "wgan-gp", "progan", "ddpm", "ncsn")
EMA = {"ddpm": 0.999, "ncsn": 0.999}  # diffusion and score models are sampled with averaged weights


def ema_decay(decay: float, steps: int) -> float:
    """The EMA decay for a run of `steps` optimiser steps: at most `decay`, and short enough that the
    average spans about the last tenth of the run. (0.999 over the quick budget's 282 steps would keep
    0.999^282 = 75% of the initial weights in the average, judging an untrained model.)"""
    return min(decay, 1.0 - 10.0 / max(steps, 20))


BATCH = 64


def add_arguments(p) -> None:
    add_budget_arguments(p, BUDGETS)  # --toy-steps 0 skips the toys
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")


def settings_from(args) -> dict:
    s = budget_settings(args, BUDGETS)
    validate.count(s["subset"], "--subset")
    validate.positive(s["epochs"], "--epochs", integer=True, high=10_000)
    validate.positive(s["n_eval"], "--n-eval", integer=True, high=10_000)
    if s["n_eval"] < 10:
        raise UserError(f"--n-eval must be at least 10 (k-NN metrics need neighbours), got {s['n_eval']}")
    for key in ("width", "unet_width"):
        validate.width(s[key], f"--{key.replace('_', '-')}")
    validate.positive(s["ddim_steps"], "--ddim-steps", integer=True, high=1000)
    validate.positive(s["langevin_steps"], "--langevin-steps", integer=True, high=10_000)
    validate.nonnegative(s["toy_steps"], "--toy-steps", integer=True, high=10**7)  # 0: no toys
    chosen = [m.strip() for m in str(args.models).split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODELS]
    if not chosen or unknown:
        raise UserError(f"--models takes a comma-separated subset of {', '.join(MODELS)}, got {args.models!r}")
    s.update(models=chosen, seed=validate.seed(args.seed), batch_size=BATCH)
    return s


def model_spec(name: str, s: dict, input_shape) -> tuple[str, dict]:
    """Registered model name and hyper-parameters of each entry of the comparison."""
    shape = list(input_shape)
    w, uw = s["width"], s["unet_width"]
    return {
        "gan": ("gan", dict(input_shape=shape, hidden=8 * w)),
        "gan-saturating": ("gan", dict(input_shape=shape, hidden=8 * w, generator_loss="saturating")),
        # init named so that config.yaml records it: a folder trained from torch's init is not reused
        "dcgan": ("dcgan", dict(input_shape=shape, width=w, init="dcgan")),
        "wgan": ("wgan", dict(input_shape=shape, width=w)),
        "wgan-gp": ("wgan-gp", dict(input_shape=shape, width=w)),
        "progan": ("progan", dict(input_shape=shape, width=w)),
        "ddpm": ("ddpm", dict(input_shape=shape, width=uw, sample_steps=s["ddim_steps"])),
        "ncsn": ("ncsn", dict(input_shape=shape, width=uw, steps_per_level=s["langevin_steps"])),
    }[name]


def train_or_resume(
    entry: str,
    registered: str,
    hparams: dict,
    X,
    s: dict,
    epochs: int,
    run_dir: Path,
    device,
    progress: bool,
    batch_size: int,
    ema: float | None = None,
):
    """Train (or continue, or reuse) one model in `run_dir`; a folder holding other settings is refused."""
    seed_everything(s["seed"])
    model = models.build(registered, **hparams)
    config = {
        "model": registered,
        "hparams": hparams,
        "training": {
            "dataset": s.get("dataset", "mnist"),
            "task": None,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": 1e-3,
            "seed": s["seed"],
            "subset": s.get("subset", 0),
            "lr_schedule": "constant",
            "warmup_steps": 0,
            "grad_clip": None,
            "ema_decay": ema,
        },
    }
    if (run_dir / "config.yaml").exists():
        old = read_yaml(run_dir / "config.yaml")
        if {k: v for k, v in old.items() if k != "training"} != {
            k: v for k, v in config.items() if k != "training"
        } or {k: v for k, v in old["training"].items() if k != "epochs"} != {
            k: v for k, v in config["training"].items() if k != "epochs"
        }:
            raise UserError(f"{run_dir} holds a {entry} trained with other settings: choose a new --out or delete it")
    done = read_metrics(run_dir)
    if (run_dir / "model.safetensors").exists() and len(done) >= epochs:
        weights = run_dir / ("ema.safetensors" if ema else "model.safetensors")
        return load_weights(model, weights).to(device).eval(), train_seconds(done)
    fit(
        model,
        X,
        epochs=epochs,
        batch_size=batch_size,
        lr=1e-3,
        run_dir=run_dir,
        seed=s["seed"],
        device=device,
        resume=(run_dir / "config.yaml").exists(),
        progress=progress,
        config=config,
        ema_decay=ema,
    )
    if ema:
        model = load_weights(model, run_dir / "ema.safetensors").to(device)
    return model.eval(), train_seconds(read_metrics(run_dir))


@torch.no_grad()
def draw(model, n: int, seed: int, chunk: int = 500) -> torch.Tensor:
    """n samples in chunks, from one seeded generator (the same noise for every run with this seed)."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.cat([model.sample(min(chunk, n - i), generator=g).cpu() for i in range(0, n, chunk)])


def pca_gaussian(X: torch.Tensor, n: int, components: int, seed: int) -> torch.Tensor:
    """n draws of the Gaussian fitted to X in its top principal subspace (the mean plus the top components)."""
    flat = X.flatten(1).double()
    mean = flat.mean(0)
    _, svals, vt = torch.linalg.svd(flat - mean, full_matrices=False)
    k = min(components, len(svals))
    std = svals[:k] / math.sqrt(max(len(flat) - 1, 1))
    z = torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (mean + (z * std) @ vt[:k]).float().clamp(0, 1).view(n, *X.shape[1:])


def baselines(X, y, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Samples of the two cheap baselines and of real training images (the ceiling at this sample size)."""
    g = torch.Generator().manual_seed(seed)
    per_class = []
    labels = y[torch.randint(len(y), (n,), generator=g)]  # classes in their training proportions
    for c in range(10):
        count = int((labels == c).sum())
        if count:
            per_class.append(pca_gaussian(X[y == c], count, 50, seed + c))
    real = X[torch.randperm(len(X), generator=g)[:n]]
    return {
        "real-train": real,
        "pca-class-gaussian": torch.cat(per_class),
        "pca-gaussian": pca_gaussian(X, n, 50, seed),
    }


def judge(samples: torch.Tensor, ref_feats, fc) -> dict:
    feats, logits = fc.features_and_logits(samples)
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in sample_report(ref_feats, feats, logits).items()}


def train_toys(s: dict, out: Path, device, progress: bool, only=("ring", "grid")) -> tuple[dict, dict]:
    """Each toy model on each toy with the recipe of `reproduce gan-toys` (one place for it): (modes,
    quality) after `toy_steps` steps and 2500 points for the figure. Trained in memory (seconds to minutes)."""
    from .gan_toys import TOY_MODELS, TOY_POINTS, train_toy

    results, points = {}, {}
    for toy in ("ring", "grid"):
        if toy not in only:
            continue
        of = len((toys.ring if toy == "ring" else toys.grid)(1)[1])
        for entry in TOY_MODELS:
            t0 = time.perf_counter()
            curve, p = train_toy(entry, toy, s["toy_steps"], 10**9, s["seed"], device)
            step, modes, quality = curve[-1]
            results.setdefault(toy, {})[entry] = {
                "modes": modes,
                "of": of,
                "high_quality": quality,
                "train_seconds": round(time.perf_counter() - t0, 1),
                "steps": step,
            }
            points.setdefault(
                toy, {"real": (toys.ring if toy == "ring" else toys.grid)(TOY_POINTS, seed=s["seed"])[0][:2500]}
            )[entry] = p
    return results, points


def _toys_figure(points: dict, results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    cols = list(points["ring"])
    fig, axes = plt.subplots(2, len(cols), figsize=(2.6 * len(cols), 5.2), squeeze=False)
    for r, toy in enumerate(("ring", "grid")):
        for c, name in enumerate(cols):
            ax = axes[r, c]
            p = points[toy][name]
            ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.4)
            lim = toys.SCALES[toy] / 2
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_xticks([])
            ax.set_yticks([])
            q = results[toy].get(name)
            ax.set_title(
                name if q is None else f"{name}: {q['modes']}/{q['of']} modes, {q['high_quality']:.0%} hq", fontsize=8
            )
    fig.tight_layout()
    plots.save_figure(fig, path)


def _fid_figure(results: dict, curves: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, r in results["models"].items():
        ax.scatter(r["train_seconds"], r["fid"], s=25)
        ax.annotate(name, (r["train_seconds"], r["fid"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for name, curve in curves.items():
        ax.plot([c[0] for c in curve], [c[1] for c in curve], lw=1, alpha=0.7, label=f"{name} (per epoch)")
    for name, b in results["baselines"].items():
        ax.axhline(b["fid"], ls=":", lw=0.8, color="grey")
        ax.annotate(name, (0, b["fid"]), fontsize=6, color="grey", xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("Frechet distance (our classifier's features)")
    ax.set_yscale("log")
    if curves:
        ax.legend(fontsize=7)
    ax.set_title(f"{results['n_eval']} samples each; not comparable with Inception-FID", fontsize=9)
    fig.tight_layout()
    plots.save_figure(fig, path)


def _save(path: Path, state: dict) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(state, indent=1).encode()))


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    t_start = time.perf_counter()
    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "results.partial.json"
    state = json.loads(partial.read_text()) if partial.exists() else {}
    if state.get("settings", s) != s:
        raise UserError(f"{out} holds a run with other settings: choose a new --out or delete {partial}")
    state.update(settings=s)
    state.setdefault("models", {})
    state.setdefault("curves", {})
    state.setdefault("seconds_before", 0.0)

    def checkpoint():
        _save(partial, dict(state, seconds_before=state["seconds_before"] + time.perf_counter() - t_start))

    Xall, yall = data.load("mnist", "train")
    X, y = data.random_subset(Xall, yall, s["subset"], s["seed"])

    # 1. train every model (the GANs epoch by epoch, keeping each epoch's weights for the Frechet curve)
    trained = {}
    for entry in s["models"]:
        registered, hparams = model_spec(entry, s, X.shape[1:])
        run_dir = out / entry
        ema = EMA.get(registered)
        if ema is not None:
            ema = ema_decay(ema, s["epochs"] * math.ceil(len(X) / BATCH))
            trained[entry] = train_or_resume(
                entry, registered, hparams, X, s, s["epochs"], run_dir, device, progress, BATCH, ema
            )[0]
            continue
        for epoch in range(1, s["epochs"] + 1):
            snapshot = run_dir / "epochs" / f"epoch{epoch}.safetensors"
            if snapshot.exists():
                continue
            model, _ = train_or_resume(entry, registered, hparams, X, s, epoch, run_dir, device, progress, BATCH)
            data_bytes = (run_dir / "model.safetensors").read_bytes()
            snapshot.parent.mkdir(exist_ok=True)
            atomic_write(snapshot, lambda f, b=data_bytes: f.write(b))
        trained[entry] = train_or_resume(
            entry, registered, hparams, X, s, s["epochs"], run_dir, device, progress, BATCH
        )[0]
    if "toys" not in state and not s["toy_steps"]:
        state["toys"] = {}  # --toy-steps 0: no toys (reproduce gan-toys has them with curves and seeds)
    if "toys" not in state:
        state["toys"], points = train_toys(s, out, device, progress)
        _toys_figure(points, state["toys"], out / "toys.png")
        checkpoint()

    # 2. judge them on the classifier's features
    fc = load_feature_classifier(device, progress=progress)
    Xt, _ = data.load("mnist", "test")
    ref, _ = data.random_subset(Xt, None, s["n_eval"], s["seed"])
    ref_feats, _ = fc.features_and_logits(ref)
    if "baselines" not in state:
        state["baselines"] = {k: judge(v, ref_feats, fc) for k, v in baselines(X, y, s["n_eval"], s["seed"]).items()}
        checkpoint()
    grids = []
    for entry, model in trained.items():
        run_dir = out / entry
        history = read_metrics(run_dir)
        if model_spec(entry, s, X.shape[1:])[0] not in EMA and entry not in state["curves"]:
            registered, hparams = model_spec(entry, s, X.shape[1:])
            probe = models.build(registered, **hparams).to(device)
            curve = []
            for epoch in range(1, s["epochs"] + 1):
                load_weights(probe, run_dir / "epochs" / f"epoch{epoch}.safetensors")
                if hasattr(probe, "on_epoch_start"):  # a growing model samples at the stage it trained in
                    probe.on_epoch_start(epoch - 1, s["epochs"])
                feats, _ = fc.features_and_logits(draw(probe.eval(), s["n_eval"], s["seed"]))
                curve.append([train_seconds(history[:epoch]), round(frechet_distance(ref_feats, feats), 4)])
            state["curves"][entry] = curve
            checkpoint()
        if entry not in state["models"]:
            registered, hparams = model_spec(entry, s, X.shape[1:])
            t0 = time.perf_counter()
            samples = draw(model, s["n_eval"], s["seed"])
            sample_seconds = time.perf_counter() - t0
            r = judge(samples, ref_feats, fc)
            r.update(
                train_seconds=train_seconds(history),
                sample_seconds=round(sample_seconds, 1),
                steps=len(history) * math.ceil(len(X) / BATCH),
                model=registered,
                hparams={k: v for k, v in hparams.items() if k != "input_shape"},
            )
            state["models"][entry] = r
            print(
                f"{entry}: Frechet {r['fid']:.1f}, KID {r['kid']:.3f}, recall {r['recall']:.2f}, "
                f"classes {r['classes_covered']}, {r['train_seconds']:.0f} s",
                file=sys.stderr,
            )
            checkpoint()
        grid = out / f"samples_{entry}.png"
        if not grid.exists():
            plots.image_grid(draw(model, 64, s["seed"]), grid, title=f"{entry} ({s['epochs']} epochs)")
        grids.append(grid)

    for toy, by_model in state["toys"].items():
        for entry, q in by_model.items():
            if entry in state["models"]:
                state["models"][entry][f"{toy}_modes"] = q["modes"]

    seconds = state["seconds_before"] + time.perf_counter() - t_start
    results = {
        "note": "Frechet distance / KID on the 100 penultimate features of our MNIST classifier: not comparable "
        "with Inception-FID numbers in papers",
        "n_eval": s["n_eval"],
        "reference": "random MNIST test images",
        "models": state["models"],
        "baselines": state["baselines"],
        "toys": state["toys"],
        "fid_curves": state["curves"],
        "classifier": {
            "test_accuracy": fc.info["test_accuracy"],
            "sha256": fc.info["sha256"],
            "arch": fc.info["settings"]["arch"],
            "train_seconds": fc.info.get("train_seconds"),
        },
        "settings": s,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "seconds": round(seconds, 1),
    }
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    _fid_figure(results, state["curves"], out / "fid_vs_time.png")
    header = [
        "model",
        "Frechet",
        "KID",
        "precision",
        "recall",
        "density",
        "coverage",
        "classes",
        "confident",
        "train s",
        "ring modes",
    ]
    rows = [
        [
            name,
            f"{r['fid']:.1f}",
            f"{r['kid']:.3f}",
            f"{r['precision']:.2f}",
            f"{r['recall']:.2f}",
            f"{r['density']:.2f}",
            f"{r['coverage']:.2f}",
            r["classes_covered"],
            f"{r['confident_share']:.2f}",
            r.get("train_seconds", ""),
            r.get("ring_modes", ""),
        ]
        for name, r in list(results["models"].items()) + list(results["baselines"].items())
    ]
    report.write_html(
        out / "report.html",
        "Generative models on MNIST, judged on our classifier's features",
        f"{len(X)} training images, {s['epochs']} epochs for every model, {s['n_eval']} samples against "
        f"{s['n_eval']} test images; feature classifier test accuracy "
        f"{fc.info['test_accuracy']:.4f}. Frechet distances are on our classifier's features: not "
        f"comparable with Inception-FID. Wall time {seconds:.0f} s.",
        header,
        rows,
        [out / "fid_vs_time.png", out / "toys.png", *grids],
        s,
    )
    for row in rows:
        print("  ".join(str(c) for c in row), file=sys.stderr)
    return results
