"""Reproduce the lecture's autoencoder numbers on MNIST: PCA, the linear AE, Hinton & Salakhutdinov's deep
autoencoder (2006, Fig. 2B: 30-D PCA 13.87, deep AE 3.00), the k-sparse autoencoder's linear-probe error
(Makhzani & Frey 2013, Table 1: k = 25 1.35%, raw pixels 7.20%), Langevin samples from a denoising AE,
and the manifold of a 2-D VAE.

`reconstruction` is Hinton's metric: the squared error summed over the 784 pixels, averaged over the 10000
test images. `probe_error` is the test error of a linear classifier (multinomial logistic regression,
L-BFGS) on frozen codes. Writes results.json, codes2d.png (Hinton's Fig. 3: 2-D codes of PCA and the
deep AE by digit), reconstructions.png, vae_manifold.png, dae_langevin.png and report.html. Killed runs
continue where they stopped when run again with the same --out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import data, models, plots, report, validate
from ..evaluation.probe import encode_means, fit_linear
from ..models.linear import principal_angles, squared_error
from ..runs import read_metrics
from ..training import fit_or_reuse
from ..utils import atomic_write, resolve_device, seed_everything
from .budgets import add_budget_arguments, budget_settings

NAME = "autoencoders"
HELP = "PCA, linear/deep/sparse/denoising AEs on MNIST: Hinton's reconstruction error, k-sparse probe error"

# quick: minutes on 2 CPU cores (few epochs; the numbers are far from the papers'). full: 2385 s on one
# CPU thread (docs/results/autoencoders-full), set by the measured curves: the deep AE-30 passes Hinton's
# 3.00 at epoch 32 of a 60-epoch cosine run (docs/results/autoencoders-ae30-long), the k-sparse probe was
# best at 12 epochs (2.32%, against 2.77% at 25: docs/results/autoencoders-ksparse*), the linear AE is at
# 0.008 rad by 20.
BUDGETS = {
    "quick": dict(
        ae_epochs=2,
        ae2_epochs=2,
        linear_epochs=10,
        ksparse_epochs=2,
        dae_epochs=2,
        vae_epochs=3,
        probe_train=10000,
        langevin_steps=100,
    ),
    "full": dict(
        ae_epochs=40,
        ae2_epochs=30,
        linear_epochs=20,
        ksparse_epochs=12,
        dae_epochs=20,
        vae_epochs=30,
        probe_train=0,
        langevin_steps=500,
    ),
}
KS = (25, 40)
# Each model's optimiser settings (Adam). The linear AE needs a larger rate decayed to 0: its trailing
# directions turn into PCA's at a speed set by the eigen-gaps (0.017 between MNIST's 30th and 31st), so
# lr 1e-3 constant left a principal angle of 0.86 rad after 4 epochs; 1e-2 with a cosine decay on
# centred data (LinearAE's m) reaches 0.015 rad in 10 epochs and 0.008 in 20.
# The deep AE: Adam 1e-3 decayed to 0 by a cosine over the run, batch 128, the paper's cross-entropy, ELU
# units (in a 3-epoch screen on MNIST at constant lr ELU led clearly; then SiLU, ReLU, ReLU with the
# squared error, and ReLU at batch 256 with lr 2e-3).
RECIPES = {
    "linear-ae": dict(lr=1e-2, lr_schedule="cosine"),
    "ae": dict(lr=1e-3, lr_schedule="cosine"),
}
DEFAULT_RECIPE = dict(lr=1e-3, lr_schedule="constant")


def add_arguments(p) -> None:
    add_budget_arguments(p, BUDGETS)
    p.add_argument(
        "--ae-activation",
        default="elu",
        choices=("sigmoid", "relu", "elu"),
        help="hidden units of the deep AE: elu (default; without Hinton's RBM pre-training it trained "
        "fastest of elu, silu and relu), relu, or sigmoid (the paper's logistic units, slow to train by "
        "gradient alone)",
    )
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    p.add_argument("--dae-sigma", type=float, default=0.3, help="the DAE's Gaussian noise std (default 0.3)")
    p.add_argument(
        "--probe-l2",
        type=float,
        default=None,
        help="l2 penalty of the linear probes, l2/2 ||W||^2 on the mean cross-entropy (default 1/n for n probe "
        "training images: scikit-learn's default logistic regression, C = 1; 0: unregularised)",
    )


def settings_from(args) -> dict:
    s = budget_settings(args, BUDGETS)
    epochs = ("ae_epochs", "ae2_epochs", "linear_epochs", "ksparse_epochs", "dae_epochs", "vae_epochs")
    for key in (*epochs, "probe_train"):
        validate.nonnegative(s[key], f"--{key.replace('_', '-')}", integer=True, high=100_000)
    validate.positive(s["langevin_steps"], "--langevin-steps", integer=True, high=100_000)
    s.update(
        ae_activation=validate.choice(args.ae_activation, "--ae-activation", ("sigmoid", "relu", "elu")),
        batch_size=validate.positive(args.batch_size, "--batch-size", integer=True, high=100_000),
        dae_sigma=validate.positive(args.dae_sigma, "--dae-sigma", high=10.0),
        probe_l2=None if args.probe_l2 is None else validate.nonnegative(args.probe_l2, "--probe-l2", high=1e3),
        seed=validate.seed(args.seed),
    )
    return s


def _models(s: dict) -> dict[str, tuple[str, dict, int]]:
    """run folder -> (registered model, hyper-parameters, epochs)."""
    act = s["ae_activation"]
    table = {
        "linear-ae-30": ("linear-ae", dict(latent_dim=30), s["linear_epochs"]),
        "ae-30": ("ae", dict(latent_dim=30, activation=act), s["ae_epochs"]),
        "ae-2": ("ae", dict(latent_dim=2, activation=act), s["ae2_epochs"]),
        "dae": ("dae", dict(latent_dim=64, sigma=s["dae_sigma"]), s["dae_epochs"]),
        "vae-2": ("vae", dict(latent_dim=2, obs_var=0.05), s["vae_epochs"]),
    }
    for k in KS:
        table[f"k-sparse-ae-{k}"] = (
            "k-sparse-ae",
            dict(latent_dim=1000, k=k, k_start=100, alpha=3.0),
            s["ksparse_epochs"],
        )
    return table


def _train(folder: Path, name: str, hparams: dict, epochs: int, X, s: dict, device, progress, X_test=None):
    """Train (or continue, or reuse) one model; a folder trained with other settings is refused. With
    X_test, every epoch's metrics hold the test set's Hinton error ("test_squared_error", the curve)."""
    seed_everything(s["seed"])
    hparams = dict(hparams, input_shape=list(X.shape[1:]))
    model = models.build(name, **hparams)
    if X_test is not None:
        model.on_epoch_end = lambda epoch, epochs: {"test_squared_error": hinton_error(model.eval(), X_test)}
    recipe = RECIPES.get(name, DEFAULT_RECIPE)
    config = {
        "model": name,
        "hparams": hparams,
        "training": {
            "dataset": "mnist",
            "epochs": epochs,
            "batch_size": s["batch_size"],
            **recipe,
            "seed": s["seed"],
        },
    }
    return fit_or_reuse(
        model,
        X,
        run_dir=folder,
        config=config,
        device=device,
        epochs=epochs,
        batch_size=s["batch_size"],
        **recipe,
        seed=s["seed"],
        progress=progress,
    )


@torch.no_grad()
def hinton_error(model, X, batch_size: int = 2000) -> float:
    """Mean over images of the squared error summed over pixels (Hinton & Salakhutdinov 2006)."""
    total = 0.0
    for i in range(0, len(X), batch_size):
        x = X[i : i + batch_size]
        total += float(squared_error(x.double(), model.reconstruct(x).double()).sum())
    return total / len(X)


def default_probe_l2(n: int) -> float:
    """scikit-learn's LogisticRegression (C = 1) minimises 1/2 ||W||^2 + sum_i loss_i over n examples, i.e.
    the mean loss plus ||W||^2 / (2n): our probe's l2 = 1/n."""
    return 1.0 / n


def probe_error(
    features: torch.Tensor, features_test: torch.Tensor, *, yp: torch.Tensor, y_test: torch.Tensor, l2: float = 0.0
) -> float:
    """Test error of multinomial logistic regression fitted on frozen features (L-BFGS, as rr's probe), with
    l2/2 ||W||^2 added to the mean cross-entropy."""
    probe = fit_linear(features, yp, 10, l2=l2)
    with torch.no_grad():
        return float((probe(features_test).argmax(1) != y_test).float().mean())


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    t_start = time.perf_counter()
    device = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    X, y = data.load("mnist", "train", device=device)
    Xt, yt = data.load("mnist", "test", device=device)
    Xp, yp = data.random_subset(X, y, s["probe_train"], s["seed"])  # the probes' training images

    seed_everything(s["seed"])
    pca = {d: models.build("pca", latent_dim=d).fit(X).to(device).eval() for d in (30, 2)}
    trained, seconds, reused = {}, {}, 0.0
    for folder, (name, hparams, epochs) in _models(s).items():
        done_before = (out / folder / "model.safetensors").exists()
        curve = Xt if folder == "ae-30" else None
        trained[folder], seconds[folder] = _train(
            out / folder, name, hparams, epochs, X, s, device, progress, X_test=curve
        )
        reused += seconds[folder] if done_before else 0.0  # trained by an earlier run into this --out

    recon = {
        "pca": {str(d): hinton_error(p, Xt) for d, p in pca.items()},
        "linear-ae": {"30": hinton_error(trained["linear-ae-30"], Xt)},
        "ae": {"30": hinton_error(trained["ae-30"], Xt), "2": hinton_error(trained["ae-2"], Xt)},
        "k-sparse-ae": {str(k): hinton_error(trained[f"k-sparse-ae-{k}"], Xt) for k in KS},
        "dae": {"64": hinton_error(trained["dae"], Xt)},
    }
    angles = principal_angles(trained["linear-ae-30"].subspace().cpu(), pca[30].components.cpu())
    # the eigen-gap that sets how fast the linear AE's last direction turns into PCA's
    spectrum = models.build("pca", latent_dim=31).fit(X).eigenvalues.cpu()

    def codes(model):
        return encode_means(model, Xp), encode_means(model, Xt)

    l2 = default_probe_l2(len(Xp)) if s.get("probe_l2") is None else s["probe_l2"]
    probes = {
        "pixels": probe_error(Xp.flatten(1), Xt.flatten(1), yp=yp, y_test=yt, l2=l2),
        "pca": {"30": probe_error(*codes(pca[30]), yp=yp, y_test=yt, l2=l2)},
        "ae": {"30": probe_error(*codes(trained["ae-30"]), yp=yp, y_test=yt, l2=l2)},
        "k-sparse-ae": {str(k): probe_error(*codes(trained[f"k-sparse-ae-{k}"]), yp=yp, y_test=yt, l2=l2) for k in KS},
    }

    figures = [out / "codes2d.png", out / "reconstructions.png", out / "vae_manifold.png", out / "dae_langevin.png"]
    _codes_figure(pca[2], trained["ae-2"], Xt[:5000], yt[:5000], figures[0])
    _reconstructions_figure(
        {
            "PCA-30": pca[30],
            "linear AE-30": trained["linear-ae-30"],
            "AE-30": trained["ae-30"],
            "k-sparse k=25": trained["k-sparse-ae-25"],
            "DAE": trained["dae"],
        },
        Xt[:12],
        figures[1],
    )
    _manifold_figure(trained["vae-2"], figures[2])
    g = torch.Generator().manual_seed(s["seed"])
    samples = trained["dae"].sample(36, generator=g, steps=s["langevin_steps"])
    plots.image_grid(
        samples,
        figures[3],
        title=f"Langevin samples from the DAE score (sigma {s['dae_sigma']}, {s['langevin_steps']} steps)",
        columns=6,
    )

    results = {
        "reconstruction": recon,
        "probe_error": probes,
        "linear_ae_principal_angles": {"max": float(angles.max()), "mean": float(angles.mean())},
        "pca_eigenvalues_30_31": [float(spectrum[29]), float(spectrum[30])],
        # Hinton's metric after each epoch of the deep AE-30: on the test set and (running mean over the
        # epoch's batches, in training) on the training set
        "ae_30_curve": [
            {
                "epoch": r["epoch"],
                "test": r.get("test_squared_error"),
                "train": r.get("squared_error"),
                "seconds": r["seconds"],
            }
            for r in read_metrics(out / "ae-30")
        ],
        "anchors": {
            "hinton_2006": {"pca_30": 13.87, "ae_30": 3.00},
            "makhzani_2013": {"k_sparse_25": 0.0135, "pixels": 0.0720},
        },
        "train_seconds": seconds,
        "n_test": len(Xt),
        "n_probe_train": len(Xp),
        "probe_l2": l2,
        "settings": s,
        "seconds": round(time.perf_counter() - t_start, 1),
        # a rerun into the same --out reuses the trained models: their training time counts too
        "total_seconds": round(time.perf_counter() - t_start + reused, 1),
    }
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    rows = [
        ["PCA", "30", f"{recon['pca']['30']:.2f}", f"{100 * probes['pca']['30']:.2f}%", ""],
        ["PCA", "2", f"{recon['pca']['2']:.2f}", "", ""],
        [
            "linear AE",
            "30",
            f"{recon['linear-ae']['30']:.2f}",
            "",
            f"max principal angle to PCA {results['linear_ae_principal_angles']['max']:.3f} rad",
        ],
        ["deep AE", "30", f"{recon['ae']['30']:.2f}", f"{100 * probes['ae']['30']:.2f}%", f"{seconds['ae-30']:.0f} s"],
        ["deep AE", "2", f"{recon['ae']['2']:.2f}", "", f"{seconds['ae-2']:.0f} s"],
    ]
    rows += [
        [
            "k-sparse AE",
            f"k={k}",
            f"{recon['k-sparse-ae'][str(k)]:.2f}",
            f"{100 * probes['k-sparse-ae'][str(k)]:.2f}%",
            f"{seconds[f'k-sparse-ae-{k}']:.0f} s",
        ]
        for k in KS
    ]
    rows += [["raw pixels", "784", "", f"{100 * probes['pixels']:.2f}%", ""]]
    report.write_html(
        out / "report.html",
        "The autoencoder zoo on MNIST",
        f"Hinton's reconstruction error (squared error summed over pixels, mean over {len(Xt)} test "
        f"images; anchors: PCA-30 13.87, deep AE-30 3.00) and the test error of a linear probe on "
        f"frozen codes (anchors: k-sparse k=25 1.35%, pixels 7.20%). "
        f"Wall time {results['total_seconds']:.0f} s (training included).",
        ["model", "code", "reconstruction", "probe error", "note"],
        rows,
        figures,
        s,
    )
    for row in rows:
        print("  ".join(f"{c:>14}" for c in row))
    print(f"wall time {results['total_seconds']:.0f} s (training included)")
    return results


def _codes_figure(pca2, ae2, X, y, path: Path, central: float = 0.98) -> None:
    """Hinton's Fig. 3. Each panel's axes span the central `central` share of its codes on each axis (plus a
    margin): the deep AE's linear code units have long tails, which would squeeze the clusters to a dot."""
    fig, axes = plots.plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, (title, model) in zip(axes, [("PCA, 2 components", pca2), ("deep autoencoder 784-1000-500-250-2", ae2)]):
        z = encode_means(model, X).cpu()
        sc = ax.scatter(z[:, 0], z[:, 1], c=y.cpu(), cmap="tab10", s=2, vmin=-0.5, vmax=9.5)
        tails = torch.tensor([(1 - central) / 2, (1 + central) / 2])
        for axis, set_lim in ((0, ax.set_xlim), (1, ax.set_ylim)):
            low, high = torch.quantile(z[:, axis].float(), tails).tolist()
            margin = 0.05 * (high - low)
            set_lim(low - margin, high + margin)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(sc, ax=axes, ticks=range(10), label="digit")
    fig.suptitle(
        f"2-D codes of {len(X)} MNIST test images (Hinton & Salakhutdinov 2006, Fig. 3); "
        f"axes span the central {central:.0%} of codes on each axis",
        fontsize=10,
    )
    plots.save_figure(fig, path)


@torch.no_grad()
def _reconstructions_figure(named: dict, x, path: Path) -> None:
    rows = [x] + [m.reconstruct(x).clamp(0, 1) for m in named.values()]
    fig, axes = plots.plt.subplots(len(rows), 1, figsize=(len(x) * 0.8, len(rows) * 0.95))
    for ax, title, imgs in zip(axes, ["test images", *named], rows):
        ax.imshow(torch.cat(list(imgs[:, 0].cpu()), 1), cmap="gray", vmin=0, vmax=1)
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    plots.save_figure(fig, path)


@torch.no_grad()
def _manifold_figure(vae, path: Path, n: int = 15) -> None:
    """The decoder over an inverse-CDF grid of the 2-D prior (Kingma & Welling 2014, Fig. 4)."""
    p = torch.linspace(0.5 / n, 1 - 0.5 / n, n)
    q = torch.distributions.Normal(0.0, 1.0).icdf(p)
    z = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).reshape(-1, 2)
    imgs = vae.decode(z.to(next(vae.parameters()).device))
    plots.image_grid(imgs, path, title="2-D VAE: decoder mean over an inverse-CDF grid of the prior", columns=n)
