"""The GAN claims that need no long training (issue 10), measured as curves against training steps:

- on the 2-D toys (8 Gaussians on a ring, 25 on a grid), the modes covered and the share of high-quality
  samples of the GAN (non-saturating generator loss), the GAN with the saturating loss and WGAN-GP, every
  few hundred steps, for several seeds;
- on MNIST, the Frechet distance (on our classifier's features) and the classes covered of the MLP GAN
  with each generator loss after every epoch, from the same initialisation, noise and batches.

Goodfellow et al. (2014, Sec. 3) advise the non-saturating loss because early in training, when the
discriminator rejects every sample, log(1 - D(G(z))) saturates and gives the generator almost no gradient.

Writes results.json, curves.png (modes against steps on each toy; Frechet distance against steps on MNIST),
toys.png (the last samples of the first seed) and report.html. Training is in memory and takes minutes;
a killed run is simply run again.
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
from ..evaluation.sample_metrics import class_statistics, frechet_distance
from ..training import fit
from ..utils import atomic_write, resolve_device, seed_everything
from .budgets import add_budget_arguments, budget_settings

NAME = "gan-toys"
HELP = "modes covered on the 2-D toys (GAN, saturating GAN, WGAN-GP) and the two generator losses early on MNIST"

BUDGETS = {
    "quick": dict(
        toys="ring",
        toy_steps=30000,
        every=2500,
        seeds=1,
        mnist_epochs=20,
        subset=6000,
        n_eval=1000,
        hidden=256,
        mnist_lr=1e-3,
    ),
    "full": dict(
        toys="ring,grid",
        toy_steps=30000,
        every=2500,
        seeds=3,
        mnist_epochs=20,
        subset=6000,
        n_eval=2000,
        hidden=256,
        mnist_lr=1e-3,
    ),
}
TOY_MODELS = ("gan", "gan-saturating", "wgan-gp")
TOYS = {"ring": toys.ring, "grid": toys.grid}
TOY_BATCH = 256
TOY_POINTS = 20_000
TOY_SAMPLES = 2500  # VEEGAN's count: a mode is covered by 20 of 2500 high-quality points
MNIST_BATCH = 64
# the GAN's networks without the generator's batch norm and the discriminator's dropout (both on by default):
# these curves isolate the generator loss, on the networks they were first measured with
PLAIN_MLP = dict(batch_norm=False, dropout=0.0)


def toy_spec(entry: str) -> tuple[str, dict]:
    """Registered name and hyper-parameters of each toy model: MLPs of 128 units, 16-d noise, Adam 1e-3 (a
    larger step than the image models'), decayed linearly to 0 by the run (`TOY_SCHEDULE`) so that the last
    samples are not blurred by the optimiser's own jitter; WGAN-GP with lambda 0.1, the value of Gulrajani
    et al.'s 2-D toy code ("smaller lambda seems to help for toy tasks"). The GANs are the plain MLPs
    (`PLAIN_MLP`)."""
    common = dict(input_shape=[2, 1, 1], noise_dim=16, d_lr=1e-3, g_lr=1e-3)
    return {
        "gan": ("gan", dict(common, **PLAIN_MLP, hidden=128)),
        "gan-saturating": ("gan", dict(common, **PLAIN_MLP, hidden=128, generator_loss="saturating")),
        "wgan-gp": ("wgan-gp", dict(common, arch="mlp", width=16, penalty=0.1)),
    }[entry]


TOY_SCHEDULE = "linear"


def add_arguments(p) -> None:
    add_budget_arguments(p, BUDGETS)
    p.add_argument(
        "--models", default=",".join(TOY_MODELS), help=f"comma-separated subset of {', '.join(TOY_MODELS)} (toys)"
    )


def _subset(value, name: str, options) -> list[str]:
    chosen = [m.strip() for m in str(value).split(",") if m.strip()]
    if not chosen or any(m not in options for m in chosen) or len(set(chosen)) != len(chosen):
        raise UserError(f"{name} takes a comma-separated subset of {', '.join(options)}, got {value!r}")
    return chosen


def settings_from(args) -> dict:
    s = budget_settings(args, BUDGETS)
    validate.positive(s["toy_steps"], "--toy-steps", integer=True, high=10**7)
    validate.positive(s["every"], "--every", integer=True, high=10**7)
    validate.positive(s["seeds"], "--seeds", integer=True, high=100)
    validate.nonnegative(s["mnist_epochs"], "--mnist-epochs", integer=True, high=10_000)
    validate.count(s["subset"], "--subset")
    validate.positive(s["n_eval"], "--n-eval", integer=True, high=10_000)
    if s["n_eval"] < 10:
        raise UserError(f"--n-eval must be at least 10 (a Frechet distance needs samples), got {s['n_eval']}")
    validate.width(s["hidden"], "--hidden")
    validate.positive(s["mnist_lr"], "--mnist-lr", high=10)
    s.update(
        models=_subset(args.models, "--models", TOY_MODELS),
        toys=_subset(s["toys"], "--toys", tuple(TOYS)),
        seed=validate.seed(args.seed),
    )
    return s


def _epochs_per(steps: int, n: int, batch: int) -> int:
    return max(1, math.ceil(steps / math.ceil(n / batch)))


def train_with_probes(model, X, epochs: int, batch: int, seed: int, device, probe, every: int, schedule="constant"):
    """`fit` the model, calling `probe(step)` before every `every`-th epoch and after the last. The probe
    draws its own seeded noise, so it does not change the training (the global random stream is reseeded
    at each epoch by `fit`, and a probe consumes none of it)."""
    steps_per_epoch = math.ceil(len(X) / batch)
    points = []

    def on_epoch_start(epoch, total):
        if epoch and epoch % every == 0:
            with torch.no_grad():
                points.append(probe(epoch * steps_per_epoch))

    model.on_epoch_start = on_epoch_start  # fit calls it at the start of each epoch
    try:
        fit(model, X, epochs=epochs, batch_size=batch, seed=seed, device=device, progress=False, lr_schedule=schedule)
    finally:
        del model.on_epoch_start
    with torch.no_grad():
        points.append(probe(epochs * steps_per_epoch))
    return points


def train_toy(entry: str, toy: str, steps: int, every: int, seed: int, device="cpu"):
    """One toy model trained on one toy for about `steps` steps; (curve [[step, modes, high-quality share]],
    the final 2500 samples in the toy's coordinates)."""
    X, centres, std = TOYS[toy](TOY_POINTS, seed=seed)
    registered, hparams = toy_spec(entry)
    seed_everything(seed)
    model = models.build(registered, **hparams)
    scale = toys.SCALES[toy]
    last = {}

    def probe(step):
        g = torch.Generator(device=device).manual_seed(seed + 1)
        p = toys.from_unit(model.sample(TOY_SAMPLES, generator=g).cpu(), scale)
        last["points"] = p
        modes, quality = toys.mode_quality(p, centres, std)
        return [step, modes, round(quality, 4)]

    curve = train_with_probes(
        model,
        toys.to_unit(X, scale),
        _epochs_per(steps, TOY_POINTS, TOY_BATCH),
        TOY_BATCH,
        seed,
        device,
        probe,
        max(1, every // math.ceil(TOY_POINTS / TOY_BATCH)),
        TOY_SCHEDULE,
    )
    return curve, last["points"]


def mnist_curves(s: dict, device, fc) -> dict:
    """Frechet distance and classes covered after every epoch for the MLP GAN with each generator loss,
    from the same initialisation, batches and probe noise."""
    Xall, yall = data.load("mnist", "train")
    X, _ = data.random_subset(Xall, yall, s["subset"], s["seed"])
    Xt, _ = data.load("mnist", "test")
    ref, _ = data.random_subset(Xt, None, s["n_eval"], s["seed"])
    ref_feats, _ = fc.features_and_logits(ref)
    curves = {}
    for loss in ("non-saturating", "saturating"):
        seed_everything(s["seed"])
        model = models.build(
            "gan",
            input_shape=[1, 28, 28],
            hidden=s["hidden"],
            generator_loss=loss,
            **PLAIN_MLP,
            d_lr=s["mnist_lr"],
            g_lr=s["mnist_lr"],
        )

        def probe(step, model=model):
            g = torch.Generator(device=device).manual_seed(s["seed"] + 1)
            samples = torch.cat(
                [model.sample(min(500, s["n_eval"] - i), generator=g) for i in range(0, s["n_eval"], 500)]
            )
            feats, logits = fc.features_and_logits(samples)
            classes = class_statistics(logits)["classes_covered"]
            return [step, round(frechet_distance(ref_feats, feats), 2), classes]

        t0 = time.perf_counter()
        curve = [probe(0)] if s["mnist_epochs"] else []
        curve += train_with_probes(model, X, s["mnist_epochs"], MNIST_BATCH, s["seed"], device, probe, 1)
        curves[loss] = {"curve": curve, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"mnist {loss}: " + ", ".join(f"{c[0]}:{c[1]:.0f}" for c in curve), file=sys.stderr)
    return {
        "images": len(X),
        "n_eval": s["n_eval"],
        "hidden": s["hidden"],
        "batch": MNIST_BATCH,
        "lr": s["mnist_lr"],
        **curves,
    }


def summarise(runs: dict) -> dict:
    """Per toy and model: modes covered at the end (each seed, the mean, the least) and the mean modes over
    seeds at every probe step."""
    out = {}
    for toy, by_model in runs.items():
        for entry, by_seed in by_model.items():
            curves = [r["curve"] for r in by_seed.values()]
            final = [c[-1][1] for c in curves]
            out.setdefault(toy, {})[entry] = {
                "of": by_seed[next(iter(by_seed))]["of"],
                "final_modes": final,
                "final_modes_mean": round(sum(final) / len(final), 2),
                "final_modes_min": min(final),
                "final_high_quality_mean": round(sum(c[-1][2] for c in curves) / len(curves), 4),
                "steps": [p[0] for p in curves[0]],
                "mean_modes": [round(sum(c[i][1] for c in curves) / len(curves), 2) for i in range(len(curves[0]))],
            }
    return out


def _figure(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    toys_run = result["toys"]
    cols = len(toys_run) + (1 if result.get("mnist") else 0)
    fig, axes = plt.subplots(1, cols, figsize=(4.6 * cols, 3.8), squeeze=False)
    colours = {"gan": "C0", "gan-saturating": "C3", "wgan-gp": "C2", "non-saturating": "C0", "saturating": "C3"}
    for ax, (toy, by_model) in zip(axes[0], toys_run.items()):
        for entry, by_seed in by_model.items():
            for r in by_seed.values():
                c = r["curve"]
                ax.plot([p[0] for p in c], [p[1] for p in c], color=colours[entry], alpha=0.35, lw=0.8)
            summary = result["summary"][toy][entry]
            ax.plot(summary["steps"], summary["mean_modes"], color=colours[entry], lw=2, label=f"{entry} (mean)")
            of = summary["of"]
        ax.axhline(of, color="grey", ls=":", lw=0.8)
        ax.set_title(f"{toy}: modes covered of {of} ({len(by_seed)} seeds, thin lines)", fontsize=9)
        ax.set_xlabel("training steps (each a batch of one phase)")
        ax.set_ylabel("modes covered")
        ax.legend(fontsize=7)
    if result.get("mnist"):
        ax = axes[0][-1]
        for loss in ("non-saturating", "saturating"):
            c = result["mnist"][loss]["curve"]
            ax.plot([p[0] for p in c], [p[1] for p in c], color=colours[loss], marker=".", label=loss)
        ax.set_yscale("log")
        ax.set_xlabel("training steps")
        ax.set_ylabel("Frechet distance (our classifier's features)")
        ax.set_title(f"MNIST MLP GAN, {result['mnist']['n_eval']} samples; not Inception-FID", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    plots.save_figure(fig, path)


def _samples_figure(points: dict, result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = list(points)
    cols = max(len(v) for v in points.values())
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.6 * cols, 2.6 * len(rows)), squeeze=False)
    for r, toy in enumerate(rows):
        lim = toys.SCALES[toy] / 2
        for c, (entry, p) in enumerate(points[toy].items()):
            ax = axes[r, c]
            ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.4)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_xticks([])
            ax.set_yticks([])
            final = result["toys"][toy][entry][str(result["settings"]["seed"])]["curve"][-1]
            ax.set_title(f"{toy} {entry}: {final[1]} modes, {final[2]:.0%} hq", fontsize=8)
    fig.tight_layout()
    plots.save_figure(fig, path)


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    t_start = time.perf_counter()
    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs, points = {}, {}
    for toy in s["toys"]:
        for entry in s["models"]:
            for seed in range(s["seed"], s["seed"] + s["seeds"]):
                t0 = time.perf_counter()
                curve, p = train_toy(entry, toy, s["toy_steps"], s["every"], seed, device)
                runs.setdefault(toy, {}).setdefault(entry, {})[str(seed)] = {
                    "curve": curve,
                    "of": len(TOYS[toy](1)[1]),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                if seed == s["seed"]:
                    points.setdefault(toy, {})[entry] = p
                print(f"{toy} {entry} seed {seed}: " + " ".join(f"{c[0]}:{c[1]}" for c in curve), file=sys.stderr)
    mnist = None
    fc = None
    if s["mnist_epochs"]:
        fc = load_feature_classifier(device, progress=progress)
        mnist = mnist_curves(s, device, fc)
    seconds = time.perf_counter() - t_start
    results = {
        "note": "curves: [step, modes covered, high-quality share] per probe; mnist curves: [step, Frechet "
        "distance on our classifier's features (not comparable with Inception-FID), classes covered]",
        "toys": runs,
        "summary": summarise(runs),
        "mnist": mnist,
        "classifier": None if fc is None else {k: fc.info[k] for k in ("test_accuracy", "sha256")},
        "settings": s,
        "toy_setup": {
            "points": TOY_POINTS,
            "batch": TOY_BATCH,
            "samples": TOY_SAMPLES,
            "schedule": TOY_SCHEDULE,
            "scales": {t: toys.SCALES[t] for t in s["toys"]},
            "models": {e: toy_spec(e) for e in s["models"]},
        },
        "threads": torch.get_num_threads(),
        "device": str(device),
        "seconds": round(seconds, 1),
    }
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    _figure(results, out / "curves.png")
    _samples_figure(points, results, out / "toys.png")
    rows = []
    for toy, by_model in results["summary"].items():
        for entry, r in by_model.items():
            rows.append(
                [
                    toy,
                    entry,
                    f"{r['final_modes_mean']} of {r['of']}",
                    " ".join(map(str, r["final_modes"])),
                    f"{r['final_high_quality_mean']:.2f}",
                    " ".join(f"{s_}:{m}" for s_, m in zip(r["steps"], r["mean_modes"])),
                ]
            )
    if mnist:
        for loss in ("non-saturating", "saturating"):
            c = mnist[loss]["curve"]
            rows.append(
                [
                    "mnist",
                    f"gan {loss}",
                    f"Frechet {c[-1][1]}",
                    f"{c[-1][2]} classes",
                    "",
                    " ".join(f"{p[0]}:{p[1]:.0f}" for p in c),
                ]
            )
    report.write_html(
        out / "report.html",
        "GAN, saturating GAN and WGAN-GP on the 2-D toys; the two generator losses on MNIST",
        f"{s['toy_steps']} toy steps (batch {TOY_BATCH}), {s['seeds']} seeds, probes every {s['every']} steps "
        f"on {TOY_SAMPLES} samples; MNIST: {s['mnist_epochs']} epochs of the MLP GAN on "
        f"{mnist['images'] if mnist else 0} images, Frechet distance of {s['n_eval']} samples on our "
        f"classifier's features (not Inception-FID). Wall time {seconds:.0f} s.",
        ["data", "model", "modes at the end (mean)", "each seed", "high-quality share", "mean modes at each step"],
        rows,
        [out / "curves.png", out / "toys.png"],
        s,
    )
    return results
