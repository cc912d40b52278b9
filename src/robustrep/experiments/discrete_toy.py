"""Cemgil et al. 2020, Section 2.2 and Figure 3: the discrete toy. Draw N observations of X on a circle of
Nx points, fit the tabular VAE (encoder and decoder von-Mises-like tables) by the batch ELBO, and the
same model as a smooth encoder (coupling each observed input's posterior to its most distant neighbour
within --radius). Rows of the VAE encoder for unobserved inputs get no gradient: neighbouring inputs map
to distant posteriors. Writes results.json (encoder roughness, model fit, ELBO), discrete_toy.png (the
paper's Figure 3: Data, Q, P, Model against the target, for the VAE and the SE) and report.html.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import plots, report, validate
from ..discrete_toy import DiscreteVAE, von_mises_target
from ..utils import atomic_write

NAME = "discrete-toy"
HELP = "the discrete toy of Cemgil et al. 2020 (Sec. 2.2, Fig. 3): a VAE's encoder is fragile off the data"


def add_arguments(p) -> None:
    p.add_argument("--nx", type=int, default=40, help="observations on the circle (default 40)")
    p.add_argument("--nz", type=int, default=40, help="latent states (default 40)")
    p.add_argument("--samples", type=int, default=60, help="observations drawn from the target (default 60)")
    p.add_argument("--gamma", type=float, default=1.0, help="coupling strength of the smooth encoder (default 1)")
    p.add_argument("--radius", type=int, default=2, help="selection radius of the smooth encoder (default 2)")
    p.add_argument("--steps", type=int, default=2000, help="Adam steps (default 2000; --quick 600)")


def settings_from(args) -> dict:
    nx = validate.number(args.nx, "--nx", low=4, high=10_000, integer=True)
    return {
        "nx": nx,
        "nz": validate.number(args.nz, "--nz", low=2, high=10_000, integer=True),
        "samples": validate.positive(args.samples, "--samples", integer=True, high=10**7),
        "gamma": validate.positive(args.gamma, "--gamma", high=1e8),
        "radius": validate.positive(args.radius, "--radius", integer=True, high=nx // 2),
        "steps": 600
        if args.quick and args.steps == 2000
        else validate.positive(args.steps, "--steps", integer=True, high=10**7),
        "seed": validate.seed(args.seed),
    }


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s["seed"])
    pi = von_mises_target(s["nx"], spread=0.4)
    counts = torch.distributions.Multinomial(s["samples"], probs=pi).sample().double()
    fitted, results = {}, {"models": {}, "zero_counts": int((counts == 0).sum()), "counts": counts.int().tolist()}
    for name, gamma in (("vae", 0.0), ("se", s["gamma"])):
        model = DiscreteVAE(s["nx"], s["nz"], gamma=gamma, radius=s["radius"], seed=s["seed"])
        model.fit(counts, steps=s["steps"])
        with torch.no_grad():
            p = model.marginal()
            results["models"][name] = {
                "roughness": model.roughness(),
                "roughness_unobserved": model.roughness(counts == 0),
                "kl_target_model": float((pi * (pi / p).log()).sum()),
                "elbo_per_observation": float(model.batch_elbo(counts)) / s["samples"],
            }
        fitted[name] = model
    results["settings"] = s
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=2).encode()))
    _figure(fitted, pi, counts, out / "discrete_toy.png")
    rows = [
        [
            k.upper(),
            f"{r['roughness']:.3f}",
            f"{r['roughness_unobserved']:.3f}",
            f"{r['kl_target_model']:.3f}",
            f"{r['elbo_per_observation']:.3f}",
        ]
        for k, r in results["models"].items()
    ]
    report.write_html(
        out / "report.html",
        "The discrete toy (Cemgil et al. 2020, Fig. 3)",
        f"{s['samples']} draws on {s['nx']} points ({results['zero_counts']} never observed). Roughness: "
        "mean circular jump of the encoder mode between neighbouring inputs.",
        ["model", "roughness", "roughness (unobserved)", "KL(target || model)", "ELBO / N"],
        rows,
        [out / "discrete_toy.png"],
        s,
    )
    for row in rows:
        print("  ".join(f"{c:>12}" for c in row))
    return results


@torch.no_grad()
def _figure(fitted: dict, pi, counts, path: Path) -> None:
    fig, axes = plots.plt.subplots(len(fitted), 4, figsize=(13, 3.2 * len(fitted)))
    for row, (name, model) in zip(axes, fitted.items()):
        row[0].bar(range(len(counts)), counts / counts.sum(), color="gray")
        row[0].set_title("Data (empirical)", fontsize=9)
        row[1].imshow(model.encoder().T, aspect="auto", origin="lower", cmap="Greys")
        row[1].set_title(f"{name.upper()}: Q = q(Z|X)", fontsize=9)
        row[1].set_xlabel("X")
        row[1].set_ylabel("Z")
        row[2].imshow(model.decoder().T, aspect="auto", origin="lower", cmap="Greys")
        row[2].set_title(f"{name.upper()}: P = p(X|Z)", fontsize=9)
        row[2].set_xlabel("X")
        row[3].plot(pi, "k--", label="target")
        row[3].plot(model.marginal(), "r-", label="model")
        row[3].set_title("Model p(X) and target", fontsize=9)
        row[3].legend(fontsize=8)
    fig.tight_layout()
    plots.save_figure(fig, path)
