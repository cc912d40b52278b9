"""Reproduce Cemgil et al. 2020, Figure 7a: how the smooth encoder's fictive point is selected. Three
encoders with one seed, architecture and budget: the VAE, the SE with a uniform random draw from the
selection ball (select=random, the paper's ablation) and the SE with PGD selection (L steps of ascent
on W2 between the two posteriors). A linear probe on each frozen mean is attacked end to end with the
paper's l_inf PGD (100 steps, 10 restarts). Writes results.json, selection.png and report.html; a killed
run continues with the same --out.
"""

from __future__ import annotations

from pathlib import Path

from . import se_figures as sf

NAME = "se-fig7a"
HELP = "random vs PGD selection of the smooth encoder's fictive point (Cemgil et al. 2020, Fig. 7a)"
BUDGETS = sf.budgets(quick=dict(n_eval=500))


def add_arguments(p) -> None:
    sf.add_arguments(p, BUDGETS)


def settings_from(args) -> dict:
    return sf.settings_from(args, BUDGETS)


def run(s: dict, out, device="auto", progress: bool = True) -> dict:
    out = Path(out)
    shape = sf.input_shape(s)
    variants = {
        "vae": sf.variant("vae", s, shape),
        "se-random": sf.variant("se", s, shape, select="random"),
        "se-pgd": sf.variant("se", s, shape, select="pgd"),
    }
    results = sf.run_variants(s, variants, out, device, progress)
    if results is None:  # another torchrun rank: rank 0 writes the results
        return {}
    results["figure"] = "7a"
    sf.write_results(out, results)
    title = f"{s['dataset']} ({s['arch']}): selection of x' (L={s['select_steps']}, sel. eps {s['select_eps']})"
    figure = sf.curves({"random vs PGD selection": results["tasks"][s["task"]]}, out / "selection.png", title)
    sf.write_report(out, f"Figure 7a: {title}", "VAE vs SE with random and with PGD selection.", results, [figure])
    return results
