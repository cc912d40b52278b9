"""beta-VAE on dSprites-style shapes (Higgins et al. 2017): train the same conv VAE at several beta on the
shapes made by code (data/shapes.py: shape 3, scale 6, orientation, x, y), and score each encoder mean with
the beta-VAE metric (Higgins et al. 2017), the FactorVAE metric (Kim & Mnih 2018) and MIG (Chen et al.
2018). Writes results.json, metrics.png (each metric against beta), curves.png (the beta-VAE metric and MIG
after each epoch, a line per beta), traversals_beta{B}.png (each latent
dimension swept over [-2.5, 2.5] from one image's code) and report.html. With --seeds K each beta is
trained from K seeds and every metric gets its mean and spread over them (`over_seeds`).

The VAE is the one of the beta-VAE papers on dSprites (Higgins et al. 2017; Locatello et al. 2019,
Table 1): `--arch conv4` (four stride-2 convolutions, a 256-unit layer) with a Bernoulli decoder.
`--arch conv --hidden 200 --likelihood gaussian` is the network the earlier results files used; with it
beta = 4 scored below beta = 1 on every metric (docs/autoencoders.md). Anchor: Higgins et al.
report a beta-VAE metric of 99.2% for beta-VAE against about 62% for a VAE-like baseline on dSprites.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import models, plots, report, validate
from ..data.shapes import FACTORS, ShapesGrid, load_split
from ..divergences import kl_standard_normal_per_dim
from ..errors import UserError
from ..evaluation import disentanglement as dm
from ..evaluation.probe import encode_means
from ..models.linear import squared_error
from ..models.vae import LIKELIHOODS
from ..nn.blocks import CONV_CHANNELS
from ..runs import read_metrics
from ..training import fit_or_reuse
from ..utils import atomic_write, resolve_device, seed_everything
from .budgets import add_budget_arguments, budget_settings

NAME = "disentanglement"
HELP = "beta-VAE on dSprites-style shapes: beta-VAE metric, FactorVAE metric and MIG for several beta"

BUDGETS = {
    "quick": dict(
        epochs=10,
        latent_dim=10,
        obs_var=0.1,
        votes=1000,
        pairs=32,
        mig_samples=10000,
        grid="small",
        likelihood="bernoulli",
        arch="conv4",
        hidden=256,
        lr=1e-3,
    ),
    "full": dict(
        epochs=30,
        latent_dim=10,
        obs_var=0.1,
        votes=5000,
        pairs=64,
        mig_samples=10000,
        grid="small",
        likelihood="bernoulli",
        arch="conv4",
        hidden=256,
        lr=1e-3,
    ),
}
GRIDS = {
    "small": ShapesGrid.small,
    "medium": lambda: ShapesGrid(size=64, orientations=20, positions_x=16, positions_y=16),
}


SETTING_HELP = {
    "epochs": "training epochs per beta and seed",
    "latent_dim": "latent dimensions",
    "obs_var": "variance v of the Gaussian decoder (unused by bernoulli)",
    "grid": f"shapes grid: {', '.join(GRIDS)} (small: 32x32 pixels, 25,920 images; medium: 64x64, 92,160)",
    "likelihood": "decoder p(x|z): bernoulli (Higgins et al.) or gaussian (variance --obs-var)",
    "arch": "conv4 (the beta-VAE papers' dSprites network: four stride-2 convolutions) or conv (two)",
    "hidden": "units of the fully connected layer of encoder and decoder",
    "lr": "Adam learning rate",
    "votes": "beta-VAE and FactorVAE metric votes",
    "pairs": "image pairs per beta-VAE vote (the batch of a FactorVAE vote)",
    "mig_samples": "images MIG is estimated on",
}


def add_arguments(p) -> None:
    add_budget_arguments(p, BUDGETS, SETTING_HELP)
    p.add_argument("--betas", default="1,4", help="comma-separated KL weights to train (default 1,4)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train each beta from this many seeds (--seed, --seed + 1, ...) and report each metric's mean "
        "and spread over them; the curve and traversals are the first seed's (default 1)",
    )


def parse_betas(text: str) -> list[float]:
    try:
        betas = [float(b) for b in str(text).split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--betas must be comma-separated numbers such as 1,4, got {text!r}") from None
    if not betas:
        raise UserError("--betas must name at least one beta")
    return [validate.nonnegative(b, "each of --betas", high=1e4) for b in betas]


def settings_from(args) -> dict:
    s = budget_settings(args, BUDGETS)
    validate.nonnegative(s["epochs"], "--epochs", integer=True, high=100_000)
    validate.width(s["latent_dim"], "--latent-dim")
    validate.positive(s["obs_var"], "--obs-var", high=1e6)
    validate.number(s["votes"], "--votes", low=10, high=10**7, integer=True)
    validate.number(s["pairs"], "--pairs", low=2, high=10**5, integer=True)
    validate.number(s["mig_samples"], "--mig-samples", low=100, high=10**7, integer=True)
    validate.choice(s["grid"], "--grid", tuple(GRIDS))
    validate.choice(s["likelihood"], "--likelihood", LIKELIHOODS)
    validate.choice(s["arch"], "--arch", tuple(CONV_CHANNELS))
    validate.width(s["hidden"], "--hidden")
    validate.positive(s["lr"], "--lr", high=10.0)
    s.update(
        betas=parse_betas(args.betas),
        seed=validate.seed(args.seed),
        batch_size=validate.positive(args.batch_size, "--batch-size", integer=True, high=100_000),
        seeds=validate.positive(getattr(args, "seeds", 1), "--seeds", integer=True, high=1000),
    )
    return s


SPREAD_KEYS = ("beta_vae_metric", "factor_vae_metric", "mig", "dims_used")
SEED_KEYS = (*SPREAD_KEYS, "test_squared_error", "train_seconds")


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation, min and max of one metric over seeds."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    std = float(t.std()) if len(t) > 1 else 0.0
    return {"mean": float(t.mean()), "std": std, "min": float(t.min()), "max": float(t.max())}


def _score(model, grid, Xt, s: dict, device) -> dict:
    """The three metrics of a trained model on the encoder mean, MIG per factor, the KL of each latent
    dimension on test images and the test squared error. The metrics draw their factors from the
    settings' seed whatever seed trained the model: every model is scored on the same votes and samples."""

    def represent(f):
        return encode_means(model, grid.render(f).to(device))

    with torch.no_grad():
        x = Xt[:2000].to(device)
        mu, var = model.encode(x)  # once, for both the reconstruction g(mu(x)) and the KL of each dimension
        recon_err = float(squared_error(x, model.decode(mu)).mean())
        kl_per_dim = kl_standard_normal_per_dim(mu, var).mean(0)  # over images
    per_factor = dm.mig_per_factor(represent, grid.factor_sizes, n=s["mig_samples"], seed=s["seed"])
    return {
        "beta_vae_metric": dm.beta_vae_metric(
            represent,
            grid.factor_sizes,
            n_train=s["votes"],
            n_test=max(100, s["votes"] // 2),
            pairs=s["pairs"],
            seed=s["seed"],
        ),
        "factor_vae_metric": dm.factor_vae_metric(
            represent, grid.factor_sizes, n_votes=s["votes"], batch=s["pairs"], seed=s["seed"]
        ),
        "mig": sum(row["gap"] for row in per_factor) / len(per_factor),  # = dm.mig
        # which code dimensions carry each factor, and the mean KL of each dimension on test images
        # (a dimension near 0 nats is unused)
        "mig_per_factor": {FACTORS[row["factor"]]: {k: row[k] for k in ("dims", "info", "gap")} for row in per_factor},
        "kl_per_dim": [round(float(v), 4) for v in kl_per_dim],
        "dims_used": int((kl_per_dim > DIM_USED_NATS).sum()),
        "test_squared_error": recon_err,
    }


# a latent dimension whose mean KL on test images exceeds this carries information (docs: "dimensions used")
DIM_USED_NATS = 0.5


def _curve_metrics(model, grid, s: dict) -> dict:
    """The beta-VAE metric and MIG after an epoch, on a fifth of the votes and half the MIG samples of the
    final scores (the same seed): the trend over training, at a few seconds an epoch."""
    device = next(model.parameters()).device

    def represent(f):
        return encode_means(model, grid.render(f).to(device))

    votes = max(50, s["votes"] // 5)
    return {
        "beta_vae_metric": dm.beta_vae_metric(
            represent, grid.factor_sizes, n_train=votes, n_test=max(50, votes // 2), pairs=s["pairs"], seed=s["seed"]
        ),
        "mig": dm.mig(represent, grid.factor_sizes, n=max(100, s["mig_samples"] // 2), seed=s["seed"]),
    }


def _train(folder: Path, beta: float, X, s: dict, device, progress, grid=None, seed: int | None = None):
    """Train (or continue, or reuse) the VAE at one beta from `seed` (default the settings' seed); with
    `grid`, each epoch's metrics hold the disentanglement metrics (_curve_metrics)."""
    seed = s["seed"] if seed is None else seed
    seed_everything(seed)
    hparams = dict(
        input_shape=list(X.shape[1:]),
        latent_dim=s["latent_dim"],
        arch=s["arch"],
        hidden=s["hidden"],
        obs_var=s["obs_var"],
        beta=beta,
        likelihood=s["likelihood"],  # bernoulli: obs_var unused
    )
    model = models.build("vae", **hparams)
    if grid is not None:
        model.on_epoch_end = lambda epoch, epochs: _curve_metrics(model.eval(), grid, s)
    config = {
        "model": "vae",
        "hparams": hparams,
        "training": {
            "dataset": f"shapes-{s['grid']}",
            "epochs": s["epochs"],
            "batch_size": s["batch_size"],
            "lr": s["lr"],
            "seed": seed,
        },
    }
    return fit_or_reuse(
        model,
        X,
        run_dir=folder,
        config=config,
        device=device,
        epochs=s["epochs"],
        batch_size=s["batch_size"],
        lr=s["lr"],
        seed=seed,
        progress=progress,
    )


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    t_start = time.perf_counter()
    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid = GRIDS[s["grid"]]()
    X, _ = load_split("train", "shape", grid=grid)
    Xt, _ = load_split("test", "shape", grid=grid)
    results = {"grid": dict(zip(FACTORS, grid.factor_sizes)) | {"pixels": grid.size}, "models": {}, "settings": s}
    figures = [out / "metrics.png", out / "curves.png"]
    seeds = [s["seed"] + i for i in range(s.get("seeds", 1))]
    for beta in s["betas"]:
        # the first seed in beta-B/ with the per-epoch curve; further seeds in beta-B-seed-S/, without it
        model, seconds = _train(out / f"beta-{beta:g}", beta, X, s, device, progress, grid=grid)
        r = _score(model, grid, Xt, s, device) | {
            "train_seconds": seconds,
            # after each epoch (fewer votes and samples than the scores above): does training length matter?
            "curve": [
                {k: row[k] for k in ("epoch", "beta_vae_metric", "mig", "kl", "recon") if k in row}
                for row in read_metrics(out / f"beta-{beta:g}")
            ],
        }
        if len(seeds) > 1:
            per_seed = [{"seed": seeds[0]} | {k: r[k] for k in SEED_KEYS}]
            for seed in seeds[1:]:
                other, sec = _train(out / f"beta-{beta:g}-seed-{seed}", beta, X, s, device, progress, seed=seed)
                scores = _score(other, grid, Xt, s, device)
                per_seed.append({"seed": seed} | {k: scores[k] for k in SEED_KEYS[:-1]} | {"train_seconds": sec})
            r["seeds"] = per_seed
            r["over_seeds"] = {k: spread([row[k] for row in per_seed]) for k in SPREAD_KEYS}
        results["models"][f"{beta:g}"] = r
        print(
            f"beta {beta:g}: beta-VAE metric {_shown(r, 'beta_vae_metric')}, FactorVAE metric "
            f"{_shown(r, 'factor_vae_metric')}, MIG {_shown(r, 'mig')}, recon {r['test_squared_error']:.1f} "
            f"({seconds:.0f} s)"
        )
        path = out / f"traversals_beta{beta:g}.png"
        _traversal(model, Xt[:1].to(device), path, beta)
        figures.append(path)
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    _metrics_figure(results, figures[0])
    _curves_figure(results, figures[1])
    rows = [
        [
            b,
            _shown(r, "beta_vae_metric"),
            _shown(r, "factor_vae_metric"),
            _shown(r, "mig"),
            f"{r['test_squared_error']:.1f}",
            f"{r['train_seconds']:.0f}",
        ]
        for b, r in results["models"].items()
    ]
    report.write_html(
        out / "report.html",
        "beta-VAE disentanglement on dSprites-style shapes",
        f"VAE ({s['arch']} network, {s['likelihood']} decoder) with {s['latent_dim']} latent dimensions on "
        f"{len(X)} shapes images "
        f"({grid.size}x{grid.size}); metrics on the encoder mean. Wall time {results['seconds']:.0f} s.",
        ["beta", "beta-VAE metric", "FactorVAE metric", "MIG", "test squared error", "train s"],
        rows,
        figures,
        s,
    )
    return results


def _shown(r: dict, key: str) -> str:
    """One metric for the report: the value, or with several seeds their mean +- standard deviation."""
    if "over_seeds" not in r:
        return f"{r[key]:.3f}"
    m = r["over_seeds"][key]
    return f"{m['mean']:.3f} +- {m['std']:.3f} ({len(r['seeds'])} seeds)"


@torch.no_grad()
def _traversal(model, x, path: Path, beta: float, steps: int = 9) -> None:
    """Row j: the decoder with latent dimension j swept over [-2.5, 2.5], the others at x's code."""
    mu = model.encode(x)[0][0]
    values = torch.linspace(-2.5, 2.5, steps, device=mu.device)
    z = mu.repeat(len(mu) * steps, 1)
    for j in range(len(mu)):
        z[j * steps : (j + 1) * steps, j] = values
    plots.image_grid(
        model.decode(z), path, title=f"beta = {beta:g}: latent traversals (row = dimension)", columns=steps
    )


METRIC_LABELS = {"beta_vae_metric": "beta-VAE metric", "factor_vae_metric": "FactorVAE metric", "mig": "MIG"}


def _metrics_figure(results: dict, path: Path) -> None:
    betas = [float(b) for b in results["models"]]
    fig, ax = plots.plt.subplots(figsize=(5.5, 3.8))
    for key, label in METRIC_LABELS.items():
        rows = list(results["models"].values())
        if all("over_seeds" in r for r in rows):  # several seeds: their mean, bars at +- one std
            means = [r["over_seeds"][key]["mean"] for r in rows]
            ax.errorbar(
                betas, means, yerr=[r["over_seeds"][key]["std"] for r in rows], fmt="o-", capsize=3, label=label
            )
        else:
            ax.plot(betas, [r[key] for r in rows], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("beta")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Disentanglement of the encoder mean against beta", fontsize=10)
    fig.tight_layout()
    plots.save_figure(fig, path)


def _curves_figure(results: dict, path: Path) -> None:
    """The beta-VAE metric and MIG after each epoch, one line per beta (the `curve` of results.json): how
    fast each beta turns its code onto the factors."""
    fig, axes = plots.plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key in zip(axes, ("beta_vae_metric", "mig")):  # the two metrics the curve holds
        label = METRIC_LABELS[key]
        for beta, r in results["models"].items():
            curve = r["curve"]
            ax.plot([c["epoch"] for c in curve], [c[key] for c in curve], "o-", markersize=3, label=f"beta {beta}")
        ax.set_xlabel("epoch")
        ax.set_title(f"{label} after each epoch (a fifth of the votes)", fontsize=9)
        ax.set_ylim(0, 1)
    axes[1].legend()
    fig.tight_layout()
    plots.save_figure(fig, path)
