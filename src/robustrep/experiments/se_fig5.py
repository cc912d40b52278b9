"""Reproduce Cemgil et al. 2020, Figure 5 with both architectures and several selection radii: for each
architecture in --archs (MLP and conv) the VAE and a smooth encoder per selection radius in
--select-radii, with the paper's selection budget L = 50 (full budget; --quick uses 10), one seed and
training budget; a linear probe on each frozen mean attacked end to end with the paper's l_inf PGD.
Writes results.json, radii.png (one panel per architecture) and report.html; a killed run continues with
the same --out.

Each architecture has its own gamma: --gamma is the MLP SE's (300), --conv-gamma the conv SE's (default
se_figures.CONV_SE, calibrated on Color-MNIST: with the MLP's 300 the conv SE collapses to a constant
encoder, docs/results.md), which the SE's collapse watch reports while it trains and the results mark.
"""

from __future__ import annotations

from pathlib import Path

from .. import validate
from ..errors import UserError
from . import se_figures as sf

NAME = "se-fig5"
HELP = "VAE vs SE at several selection radii, MLP and conv, L = 50 (Cemgil et al. 2020, Fig. 5)"
BUDGETS = sf.budgets(quick=dict(epochs=5, n_eval=500, select_steps=10), full=dict(select_steps=50))
ARCHS = ("mlp", "conv")


def add_arguments(p) -> None:
    sf.add_arguments(p, BUDGETS, arch=False)
    p.add_argument("--archs", default="mlp,conv", help="architectures, comma-separated (default mlp,conv)")
    p.add_argument(
        "--select-radii",
        default="0.1,0.2,0.3",
        help="selection radii to train an SE with (default 0.1,0.2,0.3; replaces --select-eps)",
    )
    p.add_argument(
        "--conv-gamma",
        type=float,
        default=None,
        help=f"the conv SE's gamma (default {sf.CONV_SE['gamma']:g}, its calibration; --gamma sets the MLP SE's)",
    )


def settings_from(args) -> dict:
    s = sf.settings_from(args, BUDGETS)
    archs = [a.strip() for a in str(args.archs).split(",") if a.strip()]
    if not archs or any(a not in ARCHS for a in archs) or len(set(archs)) != len(archs):
        raise UserError(f"--archs takes distinct names from {', '.join(ARCHS)}, got {args.archs!r}")
    s.pop("arch")
    s.update(archs=archs, select_radii=sf.radius_list(args.select_radii, "--select-radii"))
    if "conv" in archs:
        conv_gamma = sf.CONV_SE["gamma"] if args.conv_gamma is None else args.conv_gamma
        s["conv_gamma"] = validate.positive(conv_gamma, "--conv-gamma", high=1e12)
    return s


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    out = Path(out)
    shape = sf.input_shape(s)
    variants = {}
    for arch in s["archs"]:
        variants[f"vae-{arch}"] = sf.variant("vae", dict(s, arch=arch), shape)
        own = {"gamma": s["conv_gamma"]} if arch == "conv" else {}  # each architecture's own calibration
        for r in s["select_radii"]:
            variants[f"se-{arch}-{r}"] = sf.variant("se", dict(s, arch=arch, **own), shape, select_eps=r)
    results = sf.run_variants(s, variants, out, device, progress)
    if results is None:  # another torchrun rank: rank 0 writes the results
        return {}
    results["figure"] = "5"
    sf.write_results(out, results)
    by_label = results["tasks"][s["task"]]
    panels = {
        arch.upper(): {
            k.removesuffix(f"-{arch}").replace(f"-{arch}-", " sel. eps "): v
            for k, v in by_label.items()
            if f"-{arch}" in k
        }
        for arch in s["archs"]
    }
    gammas = ", ".join(f"{a} gamma {s['conv_gamma'] if a == 'conv' else s['gamma']:g}" for a in s["archs"])
    title = f"{s['dataset']}: VAE vs SE per selection radius (L={s['select_steps']}; {gammas})"
    figure = sf.curves(panels, out / "radii.png", title)
    sf.write_report(out, f"Figure 5: {title}", "VAE and SE per architecture and selection radius.", results, [figure])
    return results
