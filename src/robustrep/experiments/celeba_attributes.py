"""Reproduce Cemgil et al. 2020, Table 1: CelebA, conv VAE against a conv smooth encoder selected at
radius 0.1, a linear probe per attribute on each frozen mean (the 17 attributes of Table 1 by default),
nominal and adversarial accuracy under the paper's l_inf PGD at radius 0.1 (100 steps, 10 restarts).
Writes results.json, table1.png and report.html; a killed run continues with the same --out.

CelebA cannot be downloaded here: it reads a local copy of the official release (img_align_celeba/,
list_attr_celeba.txt, list_eval_partition.txt) from --celeba-dir or $ROBUSTREP_CELEBA_DIR, decodes it
once to 64x64 (cached), and has not been run on the real data in this project; its test runs it end to
end on a tiny synthetic folder in the same format. The conv SE's gamma is se_figures.CONV_SE's, calibrated
on Color-MNIST (28x28), not on CelebA (64x64); v is the MNIST budget's.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..data import celeba  # noqa: E402
from ..errors import UserError  # noqa: E402
from ..plots import save_figure  # noqa: E402
from . import se_figures as sf  # noqa: E402

NAME = "celeba-attributes"
HELP = "CelebA, 17 attributes: VAE vs SE probes (Cemgil et al. 2020, Table 1; needs a local CelebA copy)"
# Table 1's tasks as the paper names them -> CelebA's attribute names
TABLE1 = {"Bald": "Bald", "Mustache": "Mustache", "Necklace": "Wearing_Necklace", "Straight Hair": "Straight_Hair",
          "Wearing Hat": "Wearing_Hat", "Earrings": "Wearing_Earrings", "Blond Hair": "Blond_Hair",
          "Necktie": "Wearing_Necktie", "Brown Hair": "Brown_Hair", "Eyeglasses": "Eyeglasses",
          "Black Hair": "Black_Hair", "Bangs": "Bangs", "No Beard": "No_Beard", "Wavy Hair": "Wavy_Hair",
          "Smiling": "Smiling", "Gender": "Male", "Lipstick": "Wearing_Lipstick"}  # fmt: skip
BUDGETS = sf.budgets(quick=dict(epochs=3, subset=20000, n_eval=500, select_eps=0.1, **sf.CONV_SE),
                     full=dict(select_eps=0.1, **sf.CONV_SE))  # fmt: skip


def add_arguments(p) -> None:
    p.add_argument(
        "--celeba-dir",
        default=None,
        help=f"the local CelebA folder (default ${celeba.ENV}); CelebA is not downloadable here",
    )
    p.add_argument(
        "--attributes",
        default=",".join(TABLE1.values()),
        help="CelebA attributes to probe, comma-separated (default: Table 1's 17)",
    )
    sf.add_arguments(p, BUDGETS, datasets=("celeba",), arch=False, radii=(0.1,))


def settings_from(args) -> dict:
    root = str(celeba.find_root(args.celeba_dir).resolve())  # a missing copy is refused before any work
    attributes = [a.strip() for a in str(args.attributes).split(",") if a.strip()]
    unknown = [a for a in attributes if a not in celeba.ATTRIBUTES]
    if not attributes or unknown or len(set(attributes)) != len(attributes):
        raise UserError(
            f"--attributes takes distinct CelebA attribute names (e.g. Smiling,Bald), got {args.attributes!r}"
        )
    s = sf.settings_from(args, BUDGETS, tasks=tuple(attributes), arch="conv")
    s.update(root=root)
    return s


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    out = Path(out)
    shape = sf.input_shape(s)
    variants = {"vae": sf.variant("vae", s, shape), "se": sf.variant("se", s, shape)}
    results = sf.run_variants(s, variants, out, device, progress)
    if results is None:  # another torchrun rank: rank 0 writes the results
        return {}
    results["table"] = "1"
    sf.write_results(out, results)
    eps = str(0.1 if 0.1 in s["radii"] else s["radii"][0])
    figure = _bars(results, eps, out / "table1.png")
    sf.write_report(
        out,
        f"Table 1: CelebA attributes, VAE vs SE (sel. eps {s['select_eps']}, attack eps {eps})",
        "Conv encoders trained once without labels; one linear probe per attribute.",
        results,
        [figure],
    )
    return results


def _bars(results: dict, eps: str, path: Path) -> Path:
    tasks = list(results["tasks"])
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(tasks) + 2), 4))
    width = 0.2
    for i, (label, kind, hatch) in enumerate(
        [("vae", "nominal", ""), ("vae", "adv", "//"), ("se", "nominal", ""), ("se", "adv", "//")]
    ):
        values = [
            100
            * (
                results["tasks"][t][label]["nominal"]
                if kind == "nominal"
                else results["tasks"][t][label]["adversarial"][eps]
            )
            for t in tasks
        ]
        ax.bar(
            [x + (i - 1.5) * width for x in range(len(tasks))],
            values,
            width,
            hatch=hatch,
            color="tab:blue" if label == "vae" else "tab:red",
            alpha=0.5 if kind == "nominal" else 1.0,
            label=f"{label.upper()} {'nominal' if kind == 'nominal' else f'adversarial (eps {eps})'}",
        )
    ax.set_xticks(range(len(tasks)), [t.replace("_", " ") for t in tasks], rotation=60, ha="right", fontsize=8)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title="CelebA attributes: linear probes on the frozen mean")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
