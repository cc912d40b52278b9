"""Reproduce Cemgil et al. 2020, Figure 8: label efficiency. Once the representation is fixed, how few
labels does a robust probe need? The VAE and the SE (selection radius 0.1, L = 20 in the paper's
figure) are trained once without labels; for each fraction of the training labels in --label-percents
a linear probe is fitted on a seeded random subset of that size, and probe(mu(x)) is attacked end to end
with the paper's l_inf PGD; the probes on all labels give the dotted line. The paper's figure is CelebA
(conv; tasks Mustache and Bald): --dataset celeba with a local copy (--celeba-dir or
$ROBUSTREP_CELEBA_DIR; CelebA cannot be downloaded here). --dataset mnist or digits runs the same on
digits. Writes results.json, label-efficiency.png and report.html; a killed run continues.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .. import data  # noqa: E402
from ..data import celeba  # noqa: E402
from ..errors import UserError  # noqa: E402
from ..evaluation import clean_accuracy  # noqa: E402
from ..evaluation.probe import ProbedEncoder, encode_means, fit_linear  # noqa: E402
from ..plots import save_figure  # noqa: E402
from ..runs import load_model  # noqa: E402
from ..utils import atomic_write, resolve_device  # noqa: E402
from . import se_figures as sf  # noqa: E402

NAME = "se-fig8"
HELP = "label efficiency: probe accuracy against the fraction of labels used (Cemgil et al. 2020, Fig. 8)"
BUDGETS = sf.budgets(
    quick=dict(epochs=3, subset=20000, n_eval=500, select_eps=0.1, select_steps=10),
    full=dict(select_eps=0.1, select_steps=20),
)
PERCENTS = (0.5, 1, 2, 5, 10)


def add_arguments(p) -> None:
    sf.add_arguments(p, BUDGETS, datasets=("celeba", "mnist", "digits"), radii=(0.1,))
    p.add_argument("--celeba-dir", default=None, help=f"the local CelebA folder (default ${celeba.ENV})")
    p.add_argument(
        "--tasks", default=None, help="probe tasks, comma-separated (default: Mustache,Bald on celeba, digit otherwise)"
    )
    p.add_argument(
        "--label-percents",
        default=",".join(map(str, PERCENTS)),
        help="percentages of the training labels a probe sees (default 0.5,1,2,5,10)",
    )


def settings_from(args) -> dict:
    root = str(celeba.find_root(args.celeba_dir).resolve()) if args.dataset == "celeba" else None
    default = "Mustache,Bald" if args.dataset == "celeba" else "digit"
    tasks = tuple(t.strip() for t in str(args.tasks or default).split(",") if t.strip())
    if not tasks or len(set(tasks)) != len(tasks):
        raise UserError(f"--tasks takes distinct task names, got {args.tasks!r}")
    percents = sf.radius_list(args.label_percents, "--label-percents", high=100.0)
    if any(p <= 0 for p in percents):
        raise UserError(f"--label-percents must be > 0, got {args.label_percents!r}")
    s = sf.settings_from(args, BUDGETS, tasks=tasks)
    s.update(root=root, label_percents=percents)
    return s


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    out = Path(out)
    shape = sf.input_shape(s)
    variants = {"vae": sf.variant("vae", s, shape), "se": sf.variant("se", s, shape)}
    results = sf.run_variants(s, variants, out, device, progress)  # the encoders and the all-label probes
    if results is None:  # another torchrun rank: rank 0 writes the results
        return {}
    results["figure"] = "8"
    results["label_efficiency"] = _label_efficiency(s, variants, out, resolve_device(device), progress)
    sf.write_results(out, results)
    eps = str(s["radii"][0])
    figure = _plot(results, eps, out / "label-efficiency.png")
    sf.write_report(
        out,
        f"Figure 8: label efficiency on {s['dataset']} (attack eps {eps})",
        "Probes fitted on a fraction of the training labels; the table is the all-label probes.",
        results,
        [figure],
    )
    return results


def _label_efficiency(s: dict, variants: dict, out: Path, device, progress: bool) -> dict:
    """tasks -> variant -> percent -> {n_labels, nominal, adversarial{eps}}; kept in a partial file per
    finished point, so a killed run continues."""
    partial = out / "label-efficiency.partial.json"
    state = json.loads(partial.read_text()) if partial.exists() else {}
    X, Xl, labels, Xe, ye = sf.load_data(s, device)
    for label in variants:
        model = load_model(out / label, device).eval()
        features = encode_means(model, Xl)  # once per encoder: every probe below is a fit on a subset of these
        for task in s["tasks"]:
            k = data.num_classes(s["dataset"], task)
            y = labels[task].to(features.device)
            for percent in s["label_percents"]:
                key = str(percent)
                done = state.setdefault(task, {}).setdefault(label, {})
                if key in done:
                    continue
                n = max(k, math.ceil(percent / 100 * len(y)))
                pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(s["seed"]))[:n]
                probe = fit_linear(features[pick.to(features.device)], y[pick.to(y.device)], k)
                classifier = ProbedEncoder(model, probe).to(device).eval()
                point = {"n_labels": int(n), "nominal": clean_accuracy(classifier, Xe, ye[task]), "adversarial": {}}
                t0 = time.perf_counter()
                for eps in s["radii"]:
                    point["adversarial"][str(eps)] = sf.attack_chain(classifier, Xe, ye[task], eps, s, point, progress)
                point["attack_seconds"] = round(time.perf_counter() - t0, 1)
                done[key] = point
                atomic_write(partial, lambda f: f.write(json.dumps(state, indent=2).encode()))
    return state


def _plot(results: dict, eps: str, path: Path) -> Path:
    tasks = list(results["label_efficiency"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, (label, by_percent) in enumerate(results["label_efficiency"][task].items()):
            percents = sorted(by_percent, key=float)
            ax.plot(
                [float(p) for p in percents],
                [100 * by_percent[p]["adversarial"][eps] for p in percents],
                "o-",
                color=f"C{i}",
                label=f"{label.upper()} adversarial",
            )
            full = results["tasks"][task][label]["adversarial"][eps]
            ax.axhline(100 * full, ls=":", color=f"C{i}", label=f"{label.upper()}, all labels")
        ax.set(
            xlabel="labels used for the probe (% of the training set)",
            ylabel=f"adversarial accuracy (%), eps {eps}",
            ylim=(0, 100),
            title=f"task: {task}",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
